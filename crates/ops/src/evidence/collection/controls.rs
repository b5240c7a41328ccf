//! 10.7.2 (failures of critical security controls): refusals because a record could not be
//! made durable, statements refused by rules or by their approvers, sessions cut short,
//! protocol errors, and the audit control's own failures (`control_failure`, `notify_failed`).

use std::collections::BTreeMap;

use gatehouse_core::audit::{AuditRecord, Outcome};
use serde_json::Value;

use super::values::{bump, masked_opt, masked_str, statement_ref};
use crate::evidence::summary::{Capped, ControlFailures, FailureRef, StatementRef};

/// The SQLSTATE of a statement refused because its audit record could not be made durable.
const FAIL_CLOSED_SQLSTATE: &str = "58000";

#[derive(Default)]
pub(super) struct ControlAcc {
    fail_closed: Capped<FailureRef>,
    blocked: Capped<StatementRef>,
    blocked_by_rule: BTreeMap<String, u64>,
    /// Held statements denied or expired.
    held_refused: u64,
    /// Outcomes of statements cut short by the session ending.
    cut_short: u64,
    protocol_errors: u64,
    session_end_reasons: BTreeMap<String, u64>,
    /// `control_failure` alerts per kind.
    alerts: BTreeMap<String, u64>,
    webhook_failures: u64,
    webhook_by_target: BTreeMap<String, u64>,
}

impl ControlAcc {
    /// What any record of the period can show: a fail-closed refusal, a protocol error.
    pub(super) fn any_record(&mut self, r: &AuditRecord, detail: &Value) {
        let e = &r.event;
        if e.sqlstate.as_deref() == Some(FAIL_CLOSED_SQLSTATE) {
            self.fail_closed.push(FailureRef {
                seq: r.seq,
                time: e.time.clone(),
                kind: e.kind.as_str().to_owned(),
                subject: masked_opt(&e.subject),
                connection: masked_opt(&e.connection),
                sqlstate: e.sqlstate.clone(),
                statement_seq: e.statement_seq,
            });
        }
        if detail.get("protocol_error").is_some() {
            self.protocol_errors += 1;
        }
    }

    pub(super) fn session_end(&mut self, detail: &Value) {
        let reason = masked_str(detail.get("reason")).unwrap_or_else(|| "(none)".to_owned());
        bump(&mut self.session_end_reasons, &reason, 1);
    }

    pub(super) fn statement(&mut self, r: &AuditRecord, detail: &Value) {
        let e = &r.event;
        match e.outcome {
            Some(Outcome::Blocked) => {
                bump(
                    &mut self.blocked_by_rule,
                    e.rule.as_deref().unwrap_or("(none)"),
                    1,
                );
                self.blocked.push(statement_ref(r, detail));
            }
            Some(Outcome::Denied | Outcome::Expired) => self.held_refused += 1,
            _ => {}
        }
    }

    pub(super) fn outcome(&mut self, detail: &Value) {
        if detail.get("session_ended_before_completion") == Some(&Value::Bool(true)) {
            self.cut_short += 1;
        }
    }

    /// A `control_failure` record: `count` alerts of kind `alert`.
    pub(super) fn control_failure(&mut self, detail: &Value) {
        let alert = masked_str(detail.get("alert")).unwrap_or_else(|| "-".to_owned());
        let n = detail.get("count").and_then(Value::as_u64).unwrap_or(1);
        bump(&mut self.alerts, &alert, n);
    }

    /// A `notify_failed` record: one event that never reached its webhook.
    pub(super) fn notify_failed(&mut self, detail: &Value) {
        self.webhook_failures += 1;
        let target = masked_str(detail.get("notify")).unwrap_or_else(|| "-".to_owned());
        bump(&mut self.webhook_by_target, &target, 1);
    }

    pub(super) fn finish(self) -> ControlFailures {
        ControlFailures {
            fail_closed_refusals: self.fail_closed.total,
            fail_closed: self.fail_closed,
            blocked_statements: self.blocked.total,
            blocked_by_rule: self.blocked_by_rule,
            blocked: self.blocked,
            held_statements_refused: self.held_refused,
            statements_cut_short: self.cut_short,
            protocol_errors: self.protocol_errors,
            session_end_reasons: self.session_end_reasons,
            audit_control_alerts: self.alerts,
            webhook_failures: self.webhook_failures,
            webhook_failures_by_target: self.webhook_by_target,
            note: "a failed audit write is refused with SQLSTATE 58000 under audit.fail_closed; \
                   failures of the audit control (failed writes, failed chain verifications, \
                   lagging SIEM sinks) are recorded as control_failure records once the store \
                   takes writes again, and undelivered [[notify]] events as notify_failed \
                   records; the metrics gatehouse_audit_write_failures_total and \
                   gatehouse_notify_failed_total and the gateway log carry them as they happen"
                .to_owned(),
        }
    }
}
