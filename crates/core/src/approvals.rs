//! Approval requests: a statement held at the gateway until approvers decide.
//!
//! The book is the live state shared by the data path (which holds the statement and waits)
//! and the admin API (which decides). Every request and decision is also an audit record, so
//! the evidence does not depend on this in-memory state. Changes are also published as
//! [`ApprovalEvent`]s for notifiers (webhooks); a slow or absent subscriber never blocks a
//! decision (the channel is bounded and lossy for subscribers, never for the book).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{broadcast, watch};

/// Where a request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalStatus {
    Pending,
    Approved,
    Denied,
    Expired,
    Abandoned,
}

impl ApprovalStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Approved => "approved",
            Self::Denied => "denied",
            Self::Expired => "expired",
            Self::Abandoned => "abandoned",
        }
    }
}

/// One request, as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ApprovalRequest {
    pub id: String,
    pub status: ApprovalStatus,
    pub requester: String,
    pub requester_groups: Vec<String>,
    pub client_addr: String,
    pub connection: String,
    pub session_id: String,
    /// Masked like the audit record.
    pub statement: String,
    pub rule: String,
    pub approvers: Vec<String>,
    pub reason: Option<String>,
    pub created_at: String,
    pub expires_at: String,
    pub decided_by: Option<String>,
    pub decision_reason: Option<String>,
    pub decided_at: Option<String>,
    /// Distinct approvals needed (the rule's `min_approvals`, at least 1).
    pub min_approvals: u32,
    /// Approvals given so far (each by a distinct approver).
    pub votes: Vec<Vote>,
}

/// One approver's approval of a request that needs several.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Vote {
    pub by: String,
    pub reason: Option<String>,
    pub at: String,
}

/// A change of a request, for notifiers.
#[derive(Debug, Clone, Serialize)]
pub struct ApprovalEvent {
    /// `approval.requested` or `approval.decided` (approved, denied, expired, abandoned).
    pub event: &'static str,
    pub request: ApprovalRequest,
}

/// What a decision call did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecideOutcome {
    /// The request is decided (approved or denied).
    Decided,
    /// An approval was counted; more are needed.
    Counted { have: u32, need: u32 },
}

/// Why a decision was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecideError {
    #[error("no such approval request")]
    NotFound,
    #[error("the request is {0}, no longer pending")]
    NotPending(&'static str),
    #[error("the requester cannot decide its own request")]
    SelfApproval,
    #[error("the identity is not in any approver group of rule {0:?}")]
    NotApprover(String),
    #[error("this approver has already approved the request; it needs a different approver")]
    AlreadyApproved,
}

struct Entry {
    request: ApprovalRequest,
    status: watch::Sender<ApprovalStatus>,
}

/// All requests this gateway holds. The lock is never held across an await.
pub struct ApprovalBook {
    entries: Mutex<HashMap<String, Entry>>,
    events: broadcast::Sender<ApprovalEvent>,
}

impl Default for ApprovalBook {
    fn default() -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            events: broadcast::channel(1024).0,
        }
    }
}

impl std::fmt::Debug for ApprovalBook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApprovalBook").finish_non_exhaustive()
    }
}

fn rfc3339_in(d: Duration) -> String {
    let t = time::OffsetDateTime::now_utc() + d;
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Request filters of the API (`None`: any).
#[derive(Debug, Clone, Default)]
pub struct ListFilter<'a> {
    pub status: Option<&'a str>,
    pub connection: Option<&'a str>,
    pub requester: Option<&'a str>,
}

impl ApprovalBook {
    /// Follows every request and decision (for notifiers). Events missed by a lagging
    /// subscriber are dropped for it alone.
    pub fn subscribe(&self) -> broadcast::Receiver<ApprovalEvent> {
        self.events.subscribe()
    }

    fn publish(&self, event: &'static str, request: &ApprovalRequest) {
        // No subscriber is not an error.
        let _ = self.events.send(ApprovalEvent {
            event,
            request: request.clone(),
        });
    }

    /// Opens a request; the receiver follows its status.
    pub fn open(
        &self,
        mut request: ApprovalRequest,
        timeout: Duration,
    ) -> watch::Receiver<ApprovalStatus> {
        request.status = ApprovalStatus::Pending;
        request.created_at = rfc3339_in(Duration::ZERO);
        request.expires_at = rfc3339_in(timeout);
        request.min_approvals = request.min_approvals.max(1);
        request.votes.clear();
        let (tx, rx) = watch::channel(ApprovalStatus::Pending);
        self.publish("approval.requested", &request);
        if let Ok(mut m) = self.entries.lock() {
            m.insert(
                request.id.clone(),
                Entry {
                    request,
                    status: tx,
                },
            );
        }
        rx
    }

    /// Records a decision by `approver` (with its groups): a denial decides at once, an
    /// approval counts towards `min_approvals` distinct approvers.
    pub fn decide(
        &self,
        id: &str,
        approver: &str,
        approver_groups: &[String],
        approve: bool,
        reason: Option<String>,
    ) -> Result<(ApprovalRequest, DecideOutcome), DecideError> {
        let decided = self.decide_locked(id, approver, approver_groups, approve, reason)?;
        if decided.1 == DecideOutcome::Decided {
            self.publish("approval.decided", &decided.0);
        }
        Ok(decided)
    }

    fn decide_locked(
        &self,
        id: &str,
        approver: &str,
        approver_groups: &[String],
        approve: bool,
        reason: Option<String>,
    ) -> Result<(ApprovalRequest, DecideOutcome), DecideError> {
        let mut m = self.entries.lock().map_err(|_| DecideError::NotFound)?;
        let e = m.get_mut(id).ok_or(DecideError::NotFound)?;
        if e.request.status != ApprovalStatus::Pending {
            return Err(DecideError::NotPending(e.request.status.as_str()));
        }
        if e.request.requester == approver {
            return Err(DecideError::SelfApproval);
        }
        if !e
            .request
            .approvers
            .iter()
            .any(|g| approver_groups.contains(g))
        {
            return Err(DecideError::NotApprover(e.request.rule.clone()));
        }
        let now = rfc3339_in(Duration::ZERO);
        if approve {
            if e.request.votes.iter().any(|v| v.by == approver) {
                return Err(DecideError::AlreadyApproved);
            }
            e.request.votes.push(Vote {
                by: approver.to_owned(),
                reason: reason.clone(),
                at: now.clone(),
            });
            let have = u32::try_from(e.request.votes.len()).unwrap_or(u32::MAX);
            let need = e.request.min_approvals.max(1);
            if have < need {
                return Ok((e.request.clone(), DecideOutcome::Counted { have, need }));
            }
        }
        let status = if approve {
            ApprovalStatus::Approved
        } else {
            ApprovalStatus::Denied
        };
        e.request.status = status;
        e.request.decided_by = Some(approver.to_owned());
        e.request.decision_reason = reason;
        e.request.decided_at = Some(now);
        let _ = e.status.send(status);
        Ok((e.request.clone(), DecideOutcome::Decided))
    }

    /// Ends a pending request without a decision (expired, or the client left).
    pub fn close(&self, id: &str, status: ApprovalStatus) -> Option<ApprovalRequest> {
        let (request, changed) = {
            let mut m = self.entries.lock().ok()?;
            let e = m.get_mut(id)?;
            let changed = e.request.status == ApprovalStatus::Pending;
            if changed {
                e.request.status = status;
                e.request.decided_at = Some(rfc3339_in(Duration::ZERO));
                let _ = e.status.send(status);
            }
            (e.request.clone(), changed)
        };
        if changed {
            self.publish("approval.decided", &request);
        }
        Some(request)
    }

    pub fn get(&self, id: &str) -> Option<ApprovalRequest> {
        self.entries.lock().ok()?.get(id).map(|e| e.request.clone())
    }

    /// Requests, newest first, filtered.
    pub fn list(&self, filter: &ListFilter<'_>) -> Vec<ApprovalRequest> {
        let Ok(m) = self.entries.lock() else {
            return Vec::new();
        };
        let mut v: Vec<ApprovalRequest> = m
            .values()
            .filter(|e| {
                let r = &e.request;
                filter.status.is_none_or(|s| r.status.as_str() == s)
                    && filter.connection.is_none_or(|c| r.connection == c)
                    && filter.requester.is_none_or(|q| r.requester == q)
            })
            .map(|e| e.request.clone())
            .collect();
        v.sort_by(|a, b| b.created_at.cmp(&a.created_at));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(id: &str) -> ApprovalRequest {
        ApprovalRequest {
            id: id.into(),
            status: ApprovalStatus::Pending,
            requester: "bot".into(),
            requester_groups: vec!["fraud-bots".into()],
            client_addr: "127.0.0.1:1".into(),
            connection: "payments".into(),
            session_id: "s".into(),
            statement: "SELECT 1".into(),
            rule: "r".into(),
            approvers: vec!["security".into()],
            reason: None,
            created_at: String::new(),
            expires_at: String::new(),
            decided_by: None,
            decision_reason: None,
            decided_at: None,
            min_approvals: 1,
            votes: Vec::new(),
        }
    }

    #[test]
    fn separation_of_duties_and_single_decision() {
        let book = ApprovalBook::default();
        let rx = book.open(req("a"), Duration::from_secs(60));
        let sec = vec!["security".to_owned()];
        assert_eq!(
            book.decide("a", "bot", &sec, true, None).err(),
            Some(DecideError::SelfApproval)
        );
        assert!(matches!(
            book.decide("a", "eve", &["dba".to_owned()], true, None),
            Err(DecideError::NotApprover(_))
        ));
        let mut events = book.subscribe();
        assert!(book.decide("a", "alice", &sec, true, None).is_ok());
        assert_eq!(*rx.borrow(), ApprovalStatus::Approved);
        assert_eq!(
            events.try_recv().map(|e| e.event).ok(),
            Some("approval.decided")
        );
        assert_eq!(
            book.decide("a", "carol", &sec, false, None).err(),
            Some(DecideError::NotPending("approved"))
        );
        let pending = ListFilter {
            status: Some("pending"),
            ..ListFilter::default()
        };
        assert_eq!(book.list(&pending).len(), 0);
        assert_eq!(
            book.decide("zz", "x", &sec, true, None).err(),
            Some(DecideError::NotFound)
        );
    }

    #[test]
    fn quorum_needs_distinct_approvers_and_one_denial_decides() {
        let book = ApprovalBook::default();
        let sec = vec!["security".to_owned()];
        let mut r = req("q");
        r.min_approvals = 2;
        let rx = book.open(r, Duration::from_secs(60));
        assert_eq!(
            book.decide("q", "alice", &sec, true, None).map(|d| d.1),
            Ok(DecideOutcome::Counted { have: 1, need: 2 })
        );
        assert_eq!(*rx.borrow(), ApprovalStatus::Pending);
        assert_eq!(
            book.decide("q", "alice", &sec, true, None).err(),
            Some(DecideError::AlreadyApproved)
        );
        assert_eq!(
            book.decide("q", "carol", &sec, true, None).map(|d| d.1),
            Ok(DecideOutcome::Decided)
        );
        assert_eq!(*rx.borrow(), ApprovalStatus::Approved);
        let mut r = req("d");
        r.min_approvals = 3;
        let rx = book.open(r, Duration::from_secs(60));
        assert!(book.decide("d", "alice", &sec, true, None).is_ok());
        assert!(
            book.decide("d", "carol", &sec, false, Some("no".into()))
                .is_ok()
        );
        assert_eq!(*rx.borrow(), ApprovalStatus::Denied);
        let mine = ListFilter {
            requester: Some("bot"),
            connection: Some("payments"),
            ..ListFilter::default()
        };
        assert_eq!(book.list(&mine).len(), 2);
        let other = ListFilter {
            connection: Some("hr"),
            ..ListFilter::default()
        };
        assert!(book.list(&other).is_empty());
    }
}
