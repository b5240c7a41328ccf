//! The PCI DSS evidence report for a period (`gatehouse evidence`), computed from the audit
//! store.
//!
//! Why this exists: an assessor asks, per requirement, "show me" — who accessed cardholder data
//! (10.2.1.1), what administrators did (10.2.1.2), the failed logins (10.2.1.4), that records
//! carry the required fields (10.2.2), that card numbers are masked (3.4.1) and never stored in
//! clear (3.5.1), who approved access (7.2, 8.6.1), that every identity is individual (8.2.1),
//! that the trail is intact (10.3) and kept (10.5.1), and that control failures are visible
//! (10.7.2). Answering that by hand from a JSONL export is slow and error-prone; this module
//! computes every figure from the records themselves (nothing is hard-coded) and renders one
//! file an auditor can read, print and archive: `json` (all figures, machine-readable), `md`,
//! or `html` (one self-contained file: inline CSS, no scripts, no external resources).
//!
//! How it reads: one streaming pass over the whole store (bounded memory: aggregates, capped
//! lists) that verifies the chain with [`ChainVerifier`] like `audit verify` and aggregates the
//! records whose time lies in the period. It only reads: the gateway may be running, and a
//! second writer would fork the chain. Values taken from the store are PAN-masked again before
//! they are rendered (a report must not become the place a leaked card number is copied to),
//! and every value is escaped for the output format (statement text is attacker-controlled).
//!
//! How it is built: [`build`] walks the store (`collection`: one accumulator per requirement)
//! into a [`Report`] (`summary`: the report's structs, its JSON form), which [`render`] writes
//! as JSON or lays out as a document (`document`) for the HTML and Markdown renderers
//! (`renderers`, one file per format).
//!
//! [`ChainVerifier`]: gatehouse_core::audit::ChainVerifier

mod collection;
mod document;
mod error;
mod period;
mod renderers;
pub mod summary;

use std::path::Path;

pub use collection::build;
pub use error::EvidenceError;
pub use period::Period;
pub use renderers::{Format, render};
pub use summary::{Report, Status};

/// Writes next to the target and renames, so a reader never sees half a report.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), EvidenceError> {
    let name = path
        .file_name()
        .ok_or_else(|| EvidenceError::NotAFileName(path.to_owned()))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".{}.tmp", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    std::fs::write(&tmp, bytes).map_err(|source| EvidenceError::Write {
        path: tmp.clone(),
        source,
    })?;
    std::fs::rename(&tmp, path).map_err(|source| {
        let _ = std::fs::remove_file(&tmp);
        EvidenceError::Write {
            path: path.to_owned(),
            source,
        }
    })
}
