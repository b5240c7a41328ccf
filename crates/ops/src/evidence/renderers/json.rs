//! `--format json`: every figure of the report, machine-readable; the field names are the
//! format's contract.

use crate::evidence::EvidenceError;
use crate::evidence::summary::Report;

/// The report as pretty-printed JSON, with a final newline.
pub(super) fn render_json(report: &Report) -> Result<String, EvidenceError> {
    let mut s = serde_json::to_string_pretty(report).map_err(EvidenceError::Serialize)?;
    s.push('\n');
    Ok(s)
}
