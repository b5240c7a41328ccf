//! Statement (command, request) records: what was asked and how it ended, with the mask counts
//! and the captured (masked) results.
//!
//! Why here: evidence counts refusals, masked values and results per statement from these two
//! records whatever the protocol. The adapter knows *when* a statement starts and ends and
//! what its upstream said; this module decides *what* is recorded, so a MySQL or HTTP
//! adapter writes the same shape as PostgreSQL's.

use std::time::Duration;

use crate::audit::detail::{CapturedResults, Detail, StatementOutcomeDetail, UnmaskedFor};
use crate::audit::{AuditEvent, Outcome, RecordKind};
use crate::masking::{MaskCounts, SessionMasks};
use crate::pan::mask_pans;
use crate::policy::{Action, Decision};

use super::SessionInfo;

/// The protocol's own error codes for what the gateway decides (PostgreSQL: SQLSTATE).
#[derive(Debug, Clone, Copy)]
pub struct OutcomeCodes {
    /// A statement refused by a rule, a denial or an expired approval (`42501`).
    pub refused: &'static str,
    /// The gateway could not carry a statement out (`58000`).
    pub gateway_error: &'static str,
}

/// How a statement ended, as the adapter saw it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum StatementEnd {
    /// Still running, or finished without an error.
    #[default]
    Completed,
    /// The upstream answered with an error (its code).
    Failed(String),
    /// It never ran: an earlier statement of the same batch failed.
    Skipped,
    /// The session ended before the upstream answered.
    SessionEnded,
}

impl StatementEnd {
    /// Keeps the first end seen: an error after an error does not replace it.
    pub fn set(&mut self, end: StatementEnd) {
        if *self == StatementEnd::Completed {
            *self = end;
        }
    }

    pub fn is_error(&self) -> bool {
        *self != StatementEnd::Completed
    }
}

/// A value of a result row, as the capture should see it.
#[derive(Debug, Clone, Copy)]
pub enum CapturedValue<'a> {
    Null,
    /// A value in text form: recorded with card numbers masked.
    Text(&'a [u8]),
    /// A value in a binary encoding of this many bytes: never stored (its bytes could encode
    /// a card number that text masking cannot see).
    Binary(usize),
}

/// Result rows kept for the record (`audit.record_results = "masked"`), up to a byte cap.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ResultCapture {
    columns: Vec<String>,
    rows: Vec<Vec<Option<String>>>,
    bytes: usize,
    truncated: bool,
}

impl ResultCapture {
    pub fn new(columns: Vec<String>) -> Self {
        Self {
            columns,
            ..Self::default()
        }
    }

    /// Whether the cap was reached (later rows are not looked at).
    pub fn is_full(&self) -> bool {
        self.truncated
    }

    /// Adds one row: text values with card numbers masked, columns named in `redacted`
    /// (lower case) as `[redacted]`, binary values as their size. A row past `cap` bytes
    /// marks the capture truncated instead.
    pub fn push_row<'a>(
        &mut self,
        values: impl IntoIterator<Item = CapturedValue<'a>>,
        redacted: &[String],
        cap: usize,
    ) {
        if self.truncated {
            return;
        }
        let row: Vec<Option<String>> = values
            .into_iter()
            .enumerate()
            .map(|(i, v)| {
                let name = self.columns.get(i).map(|c| c.to_ascii_lowercase());
                match v {
                    CapturedValue::Null => None,
                    _ if name.is_some_and(|n| redacted.contains(&n)) => {
                        Some("[redacted]".to_owned())
                    }
                    CapturedValue::Binary(n) => Some(format!("<binary {n} bytes>")),
                    CapturedValue::Text(b) => {
                        Some(mask_pans(&String::from_utf8_lossy(b)).into_owned())
                    }
                }
            })
            .collect();
        let size: usize = row.iter().map(|v| v.as_ref().map_or(4, String::len)).sum();
        if self.bytes + size > cap {
            self.truncated = true;
            return;
        }
        self.bytes += size;
        self.rows.push(row);
    }
}

/// Everything the outcome record of one statement says.
#[derive(Debug, Default)]
pub struct StatementOutcome {
    /// The `seq` of the statement's own record (`None`: it was not recorded, e.g. a Bind).
    pub seq: Option<u64>,
    pub duration: Duration,
    /// The gateway refused it (blocked, denied, expired) or failed to carry it out (error).
    pub refused: Option<Outcome>,
    pub end: StatementEnd,
    /// Rows the upstream reported affected.
    pub rows: u64,
    /// Rows and bytes of results sent to the client.
    pub result_rows: u64,
    pub result_bytes: u64,
    pub masked: MaskCounts,
    pub results: Option<ResultCapture>,
}

impl SessionInfo {
    /// The `statement` record of a judged statement: its text with card numbers masked, the
    /// deciding rule, the adapter's analysis in `detail`, and `blocked` unless allowed (an
    /// approval that follows clears the outcome).
    pub fn statement_record(
        &self,
        text: &str,
        decision: &Decision,
        detail: &serde_json::Value,
        codes: &OutcomeCodes,
    ) -> AuditEvent {
        let mut event = self.event(RecordKind::Statement);
        event.statement = Some(mask_pans(text).into_owned());
        event.rule = decision.rule.clone();
        event.detail = Some(detail.to_string());
        if decision.action != Action::Allow {
            event.outcome = Some(Outcome::Blocked);
            event.sqlstate = Some(codes.refused.to_owned());
        }
        event
    }

    /// The `outcome` record of a statement. `masks` names the rules this identity is exempt
    /// from: a result it saw unmasked is recorded as such.
    pub fn outcome_record(
        &self,
        o: StatementOutcome,
        masks: &SessionMasks,
        codes: &OutcomeCodes,
    ) -> AuditEvent {
        let mut ev = self.event(RecordKind::Outcome);
        ev.statement_seq = o.seq;
        ev.duration_ms = Some(o.duration.as_secs_f64() * 1000.0);
        let outcome = match (o.refused, o.end.is_error()) {
            (Some(r), _) => r,
            (None, true) => Outcome::Error,
            (None, false) => Outcome::Ok,
        };
        ev.outcome = Some(outcome);
        ev.sqlstate = match (outcome, &o.end) {
            (Outcome::Ok, _) => None,
            (Outcome::Blocked | Outcome::Denied | Outcome::Expired, _) => {
                Some(codes.refused.to_owned())
            }
            (Outcome::Error, StatementEnd::Failed(code)) => Some(code.clone()),
            (Outcome::Error, _) if o.refused.is_some() => Some(codes.gateway_error.to_owned()),
            (Outcome::Error, _) => None,
        };
        ev.rows = Some(o.rows.max(o.result_rows));
        let exemptions = masks.exemptions();
        let unmasked_for = (!exemptions.is_empty() && (o.result_rows > 0 || o.result_bytes > 0))
            .then(|| UnmaskedFor {
                subject: self.principal.subject.clone(),
                groups: self.principal.groups.clone(),
                rules: exemptions.iter().map(|e| e.rule).collect(),
            });
        let detail = StatementOutcomeDetail {
            result_rows: o.result_rows,
            result_bytes: o.result_bytes,
            skipped: o.end == StatementEnd::Skipped,
            session_ended_before_completion: o.end == StatementEnd::SessionEnded,
            masked: (!o.masked.is_empty()).then(|| o.masked.to_json()),
            unmasked_for,
            results: o.results.map(|c| CapturedResults {
                columns: c.columns,
                rows: c.rows,
                truncated: c.truncated,
                masked: true,
            }),
        };
        ev.with_detail(detail.to_value())
    }
}
