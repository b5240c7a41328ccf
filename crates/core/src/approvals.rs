//! Approval requests: a statement held at the gateway until an approver decides.
//!
//! The book is the live state shared by the data path (which holds the statement and waits)
//! and the admin API (which decides). Every request and decision is also an audit record, so
//! the evidence does not depend on this in-memory state.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;

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
}

struct Entry {
    request: ApprovalRequest,
    status: watch::Sender<ApprovalStatus>,
}

/// All requests this gateway holds. The lock is never held across an await.
#[derive(Default)]
pub struct ApprovalBook {
    entries: Mutex<HashMap<String, Entry>>,
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

impl ApprovalBook {
    /// Opens a request; the receiver follows its status.
    pub fn open(
        &self,
        mut request: ApprovalRequest,
        timeout: Duration,
    ) -> watch::Receiver<ApprovalStatus> {
        request.status = ApprovalStatus::Pending;
        request.created_at = rfc3339_in(Duration::ZERO);
        request.expires_at = rfc3339_in(timeout);
        let (tx, rx) = watch::channel(ApprovalStatus::Pending);
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

    /// Records a decision by `approver` (with its groups).
    pub fn decide(
        &self,
        id: &str,
        approver: &str,
        approver_groups: &[String],
        approve: bool,
        reason: Option<String>,
    ) -> Result<ApprovalRequest, DecideError> {
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
        let status = if approve {
            ApprovalStatus::Approved
        } else {
            ApprovalStatus::Denied
        };
        e.request.status = status;
        e.request.decided_by = Some(approver.to_owned());
        e.request.decision_reason = reason;
        e.request.decided_at = Some(rfc3339_in(Duration::ZERO));
        let _ = e.status.send(status);
        Ok(e.request.clone())
    }

    /// Ends a pending request without a decision (expired, or the client left).
    pub fn close(&self, id: &str, status: ApprovalStatus) -> Option<ApprovalRequest> {
        let mut m = self.entries.lock().ok()?;
        let e = m.get_mut(id)?;
        if e.request.status == ApprovalStatus::Pending {
            e.request.status = status;
            e.request.decided_at = Some(rfc3339_in(Duration::ZERO));
            let _ = e.status.send(status);
        }
        Some(e.request.clone())
    }

    pub fn get(&self, id: &str) -> Option<ApprovalRequest> {
        self.entries.lock().ok()?.get(id).map(|e| e.request.clone())
    }

    /// Requests, newest first, optionally with one status.
    pub fn list(&self, status: Option<&str>) -> Vec<ApprovalRequest> {
        let Ok(m) = self.entries.lock() else {
            return Vec::new();
        };
        let mut v: Vec<ApprovalRequest> = m
            .values()
            .map(|e| e.request.clone())
            .filter(|r| status.is_none_or(|s| r.status.as_str() == s))
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
        assert!(book.decide("a", "alice", &sec, true, None).is_ok());
        assert_eq!(*rx.borrow(), ApprovalStatus::Approved);
        assert_eq!(
            book.decide("a", "carol", &sec, false, None).err(),
            Some(DecideError::NotPending("approved"))
        );
        assert_eq!(book.list(Some("pending")).len(), 0);
        assert_eq!(
            book.decide("zz", "x", &sec, true, None).err(),
            Some(DecideError::NotFound)
        );
    }
}
