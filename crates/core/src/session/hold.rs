//! Holding a statement (a command, a request) for approval.
//!
//! The adapter opens a [`Hold`] for an `approve` decision, tells its client
//! [`Hold::notice`], then waits for [`Hold::verdict`] while it watches its client; if the
//! client goes away it calls [`Hold::abandon`], so no approver is asked to release a
//! statement into the void. A `Hold` dropped undecided (the session ended meanwhile) is
//! closed as abandoned in the book and in the record.

use std::time::Duration;

use super::handle::Session;
use crate::approvals::{ApprovalRequest, ApprovalStatus};
use crate::audit::detail::{ApprovalEnded, ApprovalRequested, Detail, DetailEvent};
use crate::audit::{AuditEvent, Outcome, RecordKind};

/// How long a held statement waits for a decision when its rule sets no `timeout`.
pub const DEFAULT_HOLD_TIMEOUT: Duration = Duration::from_secs(300);

/// What is held.
#[derive(Debug, Clone)]
pub struct HoldRequest {
    /// The rule whose `approve` action holds it.
    pub rule: String,
    /// The statement, command or request line, masked, as approvers see it.
    pub statement: String,
    /// The requester's justification (PostgreSQL: `application_name`).
    pub reason: Option<String>,
}

/// The approval request could not be recorded, so it is refused (`audit.fail_closed`).
#[derive(Debug, thiserror::Error)]
#[error("statement refused: Gatehouse could not record the approval request")]
pub struct HoldError;

/// How a hold ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Approved,
    Denied {
        by: String,
        why: String,
    },
    Expired {
        after: Duration,
    },
    /// The client left while the statement was held.
    Abandoned,
}

impl Verdict {
    /// What the client is told when the statement does not run (`None` when approved).
    pub fn refusal_message(&self, rule: &str) -> Option<String> {
        match self {
            Self::Approved => None,
            Self::Denied { by, why } => {
                Some(format!("approval denied by {by}: {why} (rule \"{rule}\")"))
            }
            Self::Expired { after } => Some(format!(
                "approval timed out after {}s (rule \"{rule}\")",
                after.as_secs()
            )),
            Self::Abandoned => Some(format!(
                "approval abandoned: the client disconnected (rule \"{rule}\")"
            )),
        }
    }

    /// The outcome recorded for a statement that did not run because of this verdict.
    pub fn outcome(&self) -> Outcome {
        match self {
            Self::Approved => Outcome::Ok,
            Self::Abandoned => Outcome::Error,
            Self::Denied { .. } | Self::Expired { .. } => Outcome::Denied,
        }
    }
}

/// A pending approval request of one session.
pub struct Hold<'s> {
    session: &'s Session,
    id: String,
    rule: String,
    approvers: Vec<String>,
    timeout: Duration,
    deadline: tokio::time::Instant,
    status: tokio::sync::watch::Receiver<ApprovalStatus>,
    /// The request is closed (decided, expired or abandoned) and its end recorded.
    closed: bool,
}

impl std::fmt::Debug for Hold<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hold")
            .field("id", &self.id)
            .field("rule", &self.rule)
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// Opens an approval request for `req` and records it (`approval`, event `requested`)
    /// before anyone can decide it. Fail closed: a request that cannot be recorded is
    /// withdrawn and the statement refused.
    pub async fn hold(&self, req: HoldRequest) -> Result<Hold<'_>, HoldError> {
        let gate = self.gate();
        let rule = gate.rules.rule(&req.rule);
        let approvers = rule.map(|r| r.approvers.clone()).unwrap_or_default();
        let timeout = rule
            .and_then(|r| r.timeout_duration())
            .unwrap_or(DEFAULT_HOLD_TIMEOUT);
        let min_approvals = rule.and_then(|r| r.min_approvals).unwrap_or(1);
        let info = self.info();
        let id = crate::ids::random_id();
        let request = ApprovalRequest {
            id: id.clone(),
            status: ApprovalStatus::Pending,
            requester: info.principal.subject.clone(),
            requester_groups: info.principal.groups.clone(),
            client_addr: info.client_addr.clone(),
            connection: info.connection.clone(),
            session_id: info.id.clone(),
            statement: req.statement.clone(),
            rule: req.rule.clone(),
            approvers: approvers.clone(),
            reason: req.reason.clone(),
            created_at: String::new(),
            expires_at: String::new(),
            decided_by: None,
            decision_reason: None,
            decided_at: None,
            min_approvals,
            votes: Vec::new(),
        };
        let status = gate.approvals.open(request, timeout);
        let mut rec = self.event(RecordKind::Approval);
        rec.statement = Some(req.statement);
        rec.rule = Some(req.rule.clone());
        let rec = rec.with_detail(
            ApprovalRequested {
                event: DetailEvent::Requested,
                approval_id: id.clone(),
                approvers: approvers.clone(),
                reason: req.reason,
                min_approvals,
            }
            .to_value(),
        );
        if let Err(e) = gate.auditor.record(rec).await
            && gate.auditor.fail_closed()
        {
            gate.approvals.close(&id, ApprovalStatus::Abandoned);
            tracing::error!(error = %e, "approval request could not be audited");
            return Err(HoldError);
        }
        Ok(Hold {
            session: self,
            id,
            rule: req.rule,
            approvers,
            timeout,
            deadline: tokio::time::Instant::now() + timeout,
            status,
            closed: false,
        })
    }
}

impl Hold<'_> {
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn rule(&self) -> &str {
        &self.rule
    }

    /// What the held client is told at once: the request, its approvers, how to decide.
    pub fn notice(&self) -> String {
        let id = &self.id;
        format!(
            "statement held for approval {id} (rule \"{}\"; approvers: {}); decide with \
             `gatehouse approvals approve {id}` or POST {}/api/approvals/{id}/approve; expires in {}s",
            self.rule,
            self.approvers.join(", "),
            self.session.gate().admin_url,
            self.timeout.as_secs()
        )
    }

    /// Waits for the decision or the deadline; an expiry is recorded. Cancel-safe: the
    /// adapter may poll it in a loop beside its reads from the client.
    pub async fn verdict(&mut self) -> Verdict {
        let status = tokio::select! {
            r = self.status.wait_for(|s| *s != ApprovalStatus::Pending) => {
                r.map(|s| *s).unwrap_or(ApprovalStatus::Expired)
            }
            () = tokio::time::sleep_until(self.deadline) => ApprovalStatus::Expired,
        };
        let gate = self.session.gate();
        self.closed = true;
        match status {
            ApprovalStatus::Approved => Verdict::Approved,
            ApprovalStatus::Denied => {
                let request = gate.approvals.get(&self.id);
                let by = request
                    .as_ref()
                    .and_then(|r| r.decided_by.clone())
                    .unwrap_or_default();
                let why = request
                    .and_then(|r| r.decision_reason)
                    .unwrap_or_else(|| "no reason given".to_owned());
                Verdict::Denied { by, why }
            }
            ApprovalStatus::Abandoned => {
                // Closed as abandoned elsewhere (the gateway stopping): already recorded.
                Verdict::Abandoned
            }
            ApprovalStatus::Expired | ApprovalStatus::Pending => {
                gate.approvals.close(&self.id, ApprovalStatus::Expired);
                let mut rec = self.record(Outcome::Expired);
                rec = rec.with_detail(
                    ApprovalEnded {
                        event: DetailEvent::Expired,
                        approval_id: self.id.clone(),
                        why: None,
                    }
                    .to_value(),
                );
                gate.auditor.record_unwaited(rec);
                Verdict::Expired {
                    after: self.timeout,
                }
            }
        }
    }

    /// The client left while held: the request is withdrawn and recorded abandoned.
    pub fn abandon(mut self) -> Verdict {
        self.close_abandoned("the client disconnected while held");
        Verdict::Abandoned
    }

    fn record(&self, outcome: Outcome) -> AuditEvent {
        let mut rec = self.session.event(RecordKind::Approval);
        rec.rule = Some(self.rule.clone());
        rec.outcome = Some(outcome);
        rec
    }

    fn close_abandoned(&mut self, why: &str) {
        if self.closed {
            return;
        }
        self.closed = true;
        let gate = self.session.gate();
        gate.approvals.close(&self.id, ApprovalStatus::Abandoned);
        let rec = self.record(Outcome::Error).with_detail(
            ApprovalEnded {
                event: DetailEvent::Abandoned,
                approval_id: self.id.clone(),
                why: Some(why.to_owned()),
            }
            .to_value(),
        );
        gate.auditor.record_unwaited(rec);
    }
}

impl Drop for Hold<'_> {
    fn drop(&mut self) {
        // The session ended (shutdown, grant end, upstream gone) while the statement was held.
        self.close_abandoned("the session ended while the statement was held");
    }
}
