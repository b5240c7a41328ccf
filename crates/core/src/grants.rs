//! Time-bound access grants: an identity that is not in a connection's `allow_groups` asks
//! for access to it, for a while and for a reason; approvers of that connection decide.
//!
//! Why a grant and not a group change: `allow_groups` is standing access, managed outside the
//! gateway. A grant is just-in-time access for one identity (subject and issuer), approved by
//! someone else (separation of duties, a quorum of distinct approvers like held statements),
//! bounded in time, revocable at once, and evidenced in the audit chain (`grant` records:
//! requested, approval_counted, approved, denied, used, expired, revoked).
//!
//! The book is the live state shared by the data path (which asks [`GrantBook::admits`] when
//! an identity fails `allow_groups`) and the admin API (which requests, decides and revokes).
//! It is in memory: a restart ends every grant (the audit chain keeps what happened). The lock
//! is a `std::sync::Mutex` that is never held across an await.
//!
//! Expiry is lazy (every call first expires what is due, so an expired grant never admits)
//! and also driven by a periodic [`GrantBook::sweep`], which returns the grants that ended by
//! expiry since the last sweep so that each gets exactly one `expired` record.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;
use time::OffsetDateTime;
use tokio::sync::watch;

use crate::audit::detail::DetailEvent;
use crate::audit::{AuditEvent, Outcome, RecordKind};
use crate::config::{Connection, parse_duration};
use crate::identity::Principal;

/// How long a request waits for its decision before it expires.
pub const PENDING_TTL: Duration = Duration::from_secs(3600);

/// How long ended grants stay listed in the book (the audit chain keeps them for good).
const KEEP_ENDED: Duration = Duration::from_secs(24 * 3600);

/// What a connection says about grants to it (from its `[[connection]]`).
#[derive(Debug, Clone)]
pub struct GrantPolicy {
    /// Its `allow_groups`: identities in them need no grant.
    pub allow_groups: Vec<String>,
    /// `grant_approvers`; empty: grants to the connection are refused.
    pub approvers: Vec<String>,
    /// `grant_max_duration`.
    pub max_duration: Duration,
    /// `grant_min_approvals` (at least 1).
    pub min_approvals: u32,
}

impl GrantPolicy {
    pub fn from_connection(c: &Connection) -> Self {
        Self {
            allow_groups: c.allow_groups.clone(),
            approvers: c.grant_approvers.clone(),
            max_duration: parse_duration(&c.grant_max_duration)
                .unwrap_or(Duration::from_secs(8 * 3600)),
            min_approvals: c.grant_min_approvals.max(1),
        }
    }

    fn allows(&self, groups: &[String]) -> bool {
        self.allow_groups
            .iter()
            .any(|g| g == "*" || groups.iter().any(|h| h == g))
    }
}

/// Where a grant stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GrantStatus {
    Pending,
    Active,
    Denied,
    Expired,
    Revoked,
}

impl GrantStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Active => "active",
            Self::Denied => "denied",
            Self::Expired => "expired",
            Self::Revoked => "revoked",
        }
    }
}

/// One approver's approval of a grant that needs several.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct GrantVote {
    pub by: String,
    pub reason: Option<String>,
    pub at: String,
}

/// One grant, as the API shows it. Times are RFC 3339 UTC.
#[derive(Debug, Clone, Serialize)]
pub struct AccessGrant {
    pub id: String,
    pub status: GrantStatus,
    /// The identity the grant is for: its subject ...
    pub requester: String,
    /// ... and the issuer that vouched for it (a grant never admits the same subject from
    /// another issuer).
    pub requester_issuer: String,
    /// The requester's groups when it asked (for the approvers' information).
    pub requester_groups: Vec<String>,
    pub connection: String,
    pub reason: String,
    /// How long the grant lasts once approved.
    pub duration_secs: u64,
    pub created_at: String,
    /// Until when an undecided request waits ([`PENDING_TTL`]).
    pub pending_until: String,
    pub approved_at: Option<String>,
    /// Set when approved: `approved_at + duration`.
    pub expires_at: Option<String>,
    pub decided_by: Option<String>,
    pub decision_reason: Option<String>,
    pub decided_at: Option<String>,
    /// Approvals given so far, each by a distinct approver.
    pub votes: Vec<GrantVote>,
    pub min_approvals: u32,
    /// The connection's `grant_approvers` when the request was made.
    pub approvers: Vec<String>,
    pub revoked_by: Option<String>,
    pub revoked_at: Option<String>,
    pub revoke_reason: Option<String>,
}

/// What a decision call did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GrantDecision {
    /// The grant is decided (active or denied).
    Decided,
    /// An approval was counted; more are needed.
    Counted { have: u32, need: u32 },
}

/// Why a request, decision or revocation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrantError {
    #[error("no connection is named {0:?}")]
    UnknownConnection(String),
    #[error("grants are not enabled for this connection (it has no grant_approvers)")]
    NotEnabled,
    #[error("{0:?} is not a duration such as 30m or 8h")]
    BadDuration(String),
    #[error("the duration is above this connection's grant_max_duration ({0}s)")]
    TooLong(u64),
    #[error("a reason is required")]
    NoReason,
    #[error("the identity is already allowed on this connection by allow_groups")]
    AlreadyAllowed,
    #[error("a request of this identity for this connection is already pending: {0}")]
    AlreadyPending(String),
    #[error("no such grant")]
    NotFound,
    #[error("the grant is {0}, no longer pending")]
    NotPending(&'static str),
    #[error("the requester cannot decide its own grant")]
    SelfApproval,
    #[error("the identity is not in any grant_approvers group of connection {0:?}")]
    NotApprover(String),
    #[error("this approver has already approved the grant; it needs a different approver")]
    AlreadyApproved,
    #[error("only an admin, an approver of the connection or the requester may revoke this grant")]
    NotAllowedToRevoke,
    #[error("the grant is {0}; only pending or active grants can be revoked")]
    NotRevocable(&'static str),
}

/// What [`GrantBook::admits`] gives a session admitted by a grant.
#[derive(Debug, Clone)]
pub struct Admission {
    pub id: String,
    /// When the grant expires.
    pub expires_at: OffsetDateTime,
    /// Follows the grant's status (turns `revoked` or `expired`).
    pub status: watch::Receiver<GrantStatus>,
}

impl Admission {
    pub fn expires_at_rfc3339(&self) -> String {
        rfc3339(self.expires_at)
    }

    /// Time left until the grant expires (zero when past).
    pub fn remaining(&self) -> Duration {
        let left = self.expires_at - OffsetDateTime::now_utc();
        Duration::try_from(left).unwrap_or(Duration::ZERO)
    }
}

struct Entry {
    grant: AccessGrant,
    created: OffsetDateTime,
    pending_until: OffsetDateTime,
    expires: Option<OffsetDateTime>,
    /// When it left `pending`/`active` for good.
    ended: Option<OffsetDateTime>,
    status: watch::Sender<GrantStatus>,
}

impl Entry {
    fn set_status(&mut self, status: GrantStatus, now: OffsetDateTime) {
        self.grant.status = status;
        if !matches!(status, GrantStatus::Pending | GrantStatus::Active) {
            self.ended = Some(now);
        }
        // `send_replace`: the value must change even while no session follows the grant.
        self.status.send_replace(status);
    }
}

#[derive(Default)]
struct Inner {
    entries: HashMap<String, Entry>,
    /// Grants that expired since the last sweep (each is reported once).
    expired: Vec<AccessGrant>,
}

/// Grant filters of the API (`None`: any).
#[derive(Debug, Clone, Default)]
pub struct GrantFilter<'a> {
    pub status: Option<&'a str>,
    pub connection: Option<&'a str>,
    pub requester: Option<&'a str>,
}

/// All grants this gateway holds, and the grant policy of every connection.
#[derive(Default)]
pub struct GrantBook {
    policies: HashMap<String, GrantPolicy>,
    inner: Mutex<Inner>,
    #[cfg(test)]
    skew: std::sync::atomic::AtomicI64,
}

impl std::fmt::Debug for GrantBook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrantBook")
            .field("connections", &self.policies.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn secs(d: Duration) -> time::Duration {
    time::Duration::seconds(i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

impl GrantBook {
    /// A book for these connections (by name).
    pub fn new(policies: HashMap<String, GrantPolicy>) -> Self {
        Self {
            policies,
            ..Self::default()
        }
    }

    /// A book for the configured connections.
    pub fn from_connections(connections: &[Connection]) -> Self {
        Self::new(
            connections
                .iter()
                .map(|c| (c.name.clone(), GrantPolicy::from_connection(c)))
                .collect(),
        )
    }

    pub fn policy(&self, connection: &str) -> Option<&GrantPolicy> {
        self.policies.get(connection)
    }

    fn now(&self) -> OffsetDateTime {
        let now = OffsetDateTime::now_utc();
        #[cfg(test)]
        let now =
            now + time::Duration::seconds(self.skew.load(std::sync::atomic::Ordering::Relaxed));
        now
    }

    /// Moves the book's clock forward (tests only).
    #[cfg(test)]
    fn advance(&self, seconds: i64) {
        self.skew
            .fetch_add(seconds, std::sync::atomic::Ordering::Relaxed);
    }

    /// Locks the book after expiring what is due.
    fn locked(&self, now: OffsetDateTime) -> Option<std::sync::MutexGuard<'_, Inner>> {
        let mut inner = self.inner.lock().ok()?;
        let Inner { entries, expired } = &mut *inner;
        for e in entries.values_mut() {
            let due = match e.grant.status {
                GrantStatus::Pending => now >= e.pending_until,
                GrantStatus::Active => e.expires.is_none_or(|x| now >= x),
                _ => false,
            };
            if due {
                e.set_status(GrantStatus::Expired, now);
                expired.push(e.grant.clone());
            }
        }
        Some(inner)
    }

    /// Opens a request by `requester` for `connection`, lasting `duration` once approved.
    pub fn request(
        &self,
        requester: &Principal,
        connection: &str,
        duration: &str,
        reason: &str,
    ) -> Result<AccessGrant, GrantError> {
        let policy = self
            .policies
            .get(connection)
            .ok_or_else(|| GrantError::UnknownConnection(connection.to_owned()))?;
        if policy.approvers.is_empty() {
            return Err(GrantError::NotEnabled);
        }
        let d = parse_duration(duration)
            .filter(|d| !d.is_zero())
            .ok_or_else(|| GrantError::BadDuration(duration.to_owned()))?;
        if d > policy.max_duration {
            return Err(GrantError::TooLong(policy.max_duration.as_secs()));
        }
        let reason = crate::pan::mask_pans(reason.trim()).into_owned();
        if reason.is_empty() {
            return Err(GrantError::NoReason);
        }
        if policy.allows(&requester.groups) {
            return Err(GrantError::AlreadyAllowed);
        }
        let now = self.now();
        let mut inner = self.locked(now).ok_or(GrantError::NotFound)?;
        if let Some(e) = inner.entries.values().find(|e| {
            e.grant.status == GrantStatus::Pending
                && e.grant.connection == connection
                && e.grant.requester == requester.subject
                && e.grant.requester_issuer == requester.issuer
        }) {
            return Err(GrantError::AlreadyPending(e.grant.id.clone()));
        }
        let pending_until = now + secs(PENDING_TTL);
        let grant = AccessGrant {
            id: crate::ids::time_ordered_id(),
            status: GrantStatus::Pending,
            requester: requester.subject.clone(),
            requester_issuer: requester.issuer.clone(),
            requester_groups: requester.groups.clone(),
            connection: connection.to_owned(),
            reason,
            duration_secs: d.as_secs(),
            created_at: rfc3339(now),
            pending_until: rfc3339(pending_until),
            approved_at: None,
            expires_at: None,
            decided_by: None,
            decision_reason: None,
            decided_at: None,
            votes: Vec::new(),
            min_approvals: policy.min_approvals.max(1),
            approvers: policy.approvers.clone(),
            revoked_by: None,
            revoked_at: None,
            revoke_reason: None,
        };
        inner.entries.insert(
            grant.id.clone(),
            Entry {
                grant: grant.clone(),
                created: now,
                pending_until,
                expires: None,
                ended: None,
                status: watch::channel(GrantStatus::Pending).0,
            },
        );
        Ok(grant)
    }

    /// Records a decision by `approver`: a denial decides at once, an approval counts towards
    /// `min_approvals` distinct approvers; the last one needed starts the grant's time.
    pub fn decide(
        &self,
        id: &str,
        approver: &Principal,
        approve: bool,
        reason: Option<String>,
    ) -> Result<(AccessGrant, GrantDecision), GrantError> {
        let now = self.now();
        let mut inner = self.locked(now).ok_or(GrantError::NotFound)?;
        let e = inner.entries.get_mut(id).ok_or(GrantError::NotFound)?;
        if e.grant.status != GrantStatus::Pending {
            return Err(GrantError::NotPending(e.grant.status.as_str()));
        }
        if e.grant.requester == approver.subject {
            return Err(GrantError::SelfApproval);
        }
        if !approver.in_any(&e.grant.approvers) {
            return Err(GrantError::NotApprover(e.grant.connection.clone()));
        }
        let at = rfc3339(now);
        if approve {
            if e.grant.votes.iter().any(|v| v.by == approver.subject) {
                return Err(GrantError::AlreadyApproved);
            }
            e.grant.votes.push(GrantVote {
                by: approver.subject.clone(),
                reason: reason.clone(),
                at: at.clone(),
            });
            let have = u32::try_from(e.grant.votes.len()).unwrap_or(u32::MAX);
            let need = e.grant.min_approvals.max(1);
            if have < need {
                return Ok((e.grant.clone(), GrantDecision::Counted { have, need }));
            }
            let expires = now
                + time::Duration::seconds(i64::try_from(e.grant.duration_secs).unwrap_or(i64::MAX));
            e.expires = Some(expires);
            e.grant.approved_at = Some(at.clone());
            e.grant.expires_at = Some(rfc3339(expires));
        }
        e.grant.decided_by = Some(approver.subject.clone());
        e.grant.decision_reason = reason;
        e.grant.decided_at = Some(at);
        let status = if approve {
            GrantStatus::Active
        } else {
            GrantStatus::Denied
        };
        e.set_status(status, now);
        Ok((e.grant.clone(), GrantDecision::Decided))
    }

    /// Ends a pending or active grant. `admin`: the actor is in `identity.admin_groups`;
    /// otherwise it must be an approver of the connection or the requester itself.
    pub fn revoke(
        &self,
        id: &str,
        actor: &Principal,
        admin: bool,
        reason: Option<String>,
    ) -> Result<AccessGrant, GrantError> {
        let now = self.now();
        let mut inner = self.locked(now).ok_or(GrantError::NotFound)?;
        let e = inner.entries.get_mut(id).ok_or(GrantError::NotFound)?;
        let own = e.grant.requester == actor.subject && e.grant.requester_issuer == actor.issuer;
        if !(admin || own || actor.in_any(&e.grant.approvers)) {
            return Err(GrantError::NotAllowedToRevoke);
        }
        if !matches!(e.grant.status, GrantStatus::Pending | GrantStatus::Active) {
            return Err(GrantError::NotRevocable(e.grant.status.as_str()));
        }
        e.grant.revoked_by = Some(actor.subject.clone());
        e.grant.revoked_at = Some(rfc3339(now));
        e.grant.revoke_reason = reason;
        e.set_status(GrantStatus::Revoked, now);
        Ok(e.grant.clone())
    }

    /// Whether an active grant admits `principal` (same subject and issuer) on `connection`
    /// now; the one that lasts longest if there are several.
    pub fn admits(&self, principal: &Principal, connection: &str) -> Option<Admission> {
        let now = self.now();
        let inner = self.locked(now)?;
        inner
            .entries
            .values()
            .filter(|e| {
                e.grant.status == GrantStatus::Active
                    && e.grant.connection == connection
                    && e.grant.requester == principal.subject
                    && e.grant.requester_issuer == principal.issuer
            })
            .filter_map(|e| Some((e, e.expires.filter(|x| *x > now)?)))
            .max_by_key(|(_, x)| *x)
            .map(|(e, expires_at)| Admission {
                id: e.grant.id.clone(),
                expires_at,
                status: e.status.subscribe(),
            })
    }

    /// Expires what is due and returns every grant that expired since the last sweep (for
    /// its `expired` record); forgets grants that ended more than a day ago.
    pub fn sweep(&self) -> Vec<AccessGrant> {
        let now = self.now();
        let Some(mut inner) = self.locked(now) else {
            return Vec::new();
        };
        let keep = secs(KEEP_ENDED);
        inner
            .entries
            .retain(|_, e| e.ended.is_none_or(|t| now - t < keep));
        std::mem::take(&mut inner.expired)
    }

    pub fn get(&self, id: &str) -> Option<AccessGrant> {
        let inner = self.locked(self.now())?;
        inner.entries.get(id).map(|e| e.grant.clone())
    }

    /// Grants, newest first, filtered.
    pub fn list(&self, filter: &GrantFilter<'_>) -> Vec<AccessGrant> {
        let Some(inner) = self.locked(self.now()) else {
            return Vec::new();
        };
        let mut v: Vec<(&Entry, &AccessGrant)> = inner
            .entries
            .values()
            .map(|e| (e, &e.grant))
            .filter(|(_, g)| {
                filter.status.is_none_or(|s| g.status.as_str() == s)
                    && filter.connection.is_none_or(|c| g.connection == c)
                    && filter.requester.is_none_or(|q| g.requester == q)
            })
            .collect();
        v.sort_by_key(|(e, _)| std::cmp::Reverse(e.created));
        v.into_iter().map(|(_, g)| g.clone()).collect()
    }
}

/// A `grant` audit record about `grant`: `event` is `requested`, `approval_counted`,
/// `approved`, `denied`, `expired` or `revoked` (sessions record `used` themselves). The
/// subject is the actor (none for an expiry); the session id is the grant id, so
/// `gatehouse sessions show <grant id>` finds a grant's history.
pub fn audit_event(
    grant: &AccessGrant,
    event: DetailEvent,
    actor: Option<&Principal>,
    reason: Option<&str>,
) -> AuditEvent {
    let mut ev = AuditEvent::new(RecordKind::Grant, grant.id.clone());
    if let Some(p) = actor {
        ev.subject = Some(p.subject.clone());
        ev.groups = p.groups.clone();
        ev.issuer = Some(p.issuer.clone());
    }
    ev.connection = Some(grant.connection.clone());
    ev.outcome = match event {
        DetailEvent::Approved => Some(Outcome::Ok),
        DetailEvent::Denied | DetailEvent::Revoked => Some(Outcome::Denied),
        DetailEvent::Expired => Some(Outcome::Expired),
        _ => None,
    };
    ev.with_detail(serde_json::json!({
        "event": event,
        "grant_id": grant.id,
        "status": grant.status,
        "requester": grant.requester,
        "requester_issuer": grant.requester_issuer,
        "requester_groups": grant.requester_groups,
        "duration_secs": grant.duration_secs,
        "request_reason": grant.reason,
        "reason": reason,
        "approvers": grant.approvers,
        "approvals": grant.votes.len(),
        "min_approvals": grant.min_approvals,
        "expires_at": grant.expires_at,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(subject: &str, groups: &[&str]) -> Principal {
        Principal {
            subject: subject.into(),
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
            issuer: "gatehouse-local".into(),
        }
    }

    fn book(min_approvals: u32) -> GrantBook {
        let mut p = HashMap::new();
        p.insert(
            "payments".to_owned(),
            GrantPolicy {
                allow_groups: vec!["dba".into()],
                approvers: vec!["security".into()],
                max_duration: Duration::from_secs(8 * 3600),
                min_approvals,
            },
        );
        p.insert(
            "hr".to_owned(),
            GrantPolicy {
                allow_groups: vec!["hr".into()],
                approvers: Vec::new(),
                max_duration: Duration::from_secs(3600),
                min_approvals: 1,
            },
        );
        GrantBook::new(p)
    }

    #[test]
    fn requests_are_validated() {
        let b = book(1);
        let bob = who("bob", &["contractors"]);
        assert_eq!(
            b.request(&bob, "nope", "1h", "x").err(),
            Some(GrantError::UnknownConnection("nope".into()))
        );
        assert_eq!(
            b.request(&bob, "hr", "1h", "x").err(),
            Some(GrantError::NotEnabled)
        );
        assert!(matches!(
            b.request(&bob, "payments", "soon", "x"),
            Err(GrantError::BadDuration(_))
        ));
        assert!(matches!(
            b.request(&bob, "payments", "0s", "x"),
            Err(GrantError::BadDuration(_))
        ));
        assert_eq!(
            b.request(&bob, "payments", "9h", "x").err(),
            Some(GrantError::TooLong(8 * 3600))
        );
        assert_eq!(
            b.request(&bob, "payments", "1h", "  ").err(),
            Some(GrantError::NoReason)
        );
        assert_eq!(
            b.request(&who("d", &["dba"]), "payments", "1h", "x").err(),
            Some(GrantError::AlreadyAllowed)
        );
        let g = b
            .request(&bob, "payments", "30m", "card 4111 1111 1111 1111")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(g.status, GrantStatus::Pending);
        assert_eq!(g.duration_secs, 1800);
        assert!(!g.reason.contains("4111 1111"), "{}", g.reason);
        assert_eq!(
            b.request(&bob, "payments", "1h", "again").err(),
            Some(GrantError::AlreadyPending(g.id.clone()))
        );
        assert!(
            b.admits(&bob, "payments").is_none(),
            "pending admits nobody"
        );
    }

    #[test]
    fn separation_of_duties_admission_and_revoke() {
        let b = book(1);
        let bob = who("bob", &["contractors"]);
        let g = b
            .request(&bob, "payments", "1h", "incident 7")
            .unwrap_or_else(|e| panic!("{e}"));
        let self_approver = who("bob", &["security"]);
        assert_eq!(
            b.decide(&g.id, &self_approver, true, None).err(),
            Some(GrantError::SelfApproval)
        );
        assert!(matches!(
            b.decide(&g.id, &who("eve", &["dba"]), true, None),
            Err(GrantError::NotApprover(_))
        ));
        assert_eq!(
            b.decide("zz", &who("alice", &["security"]), true, None)
                .err(),
            Some(GrantError::NotFound)
        );
        let alice = who("alice", &["security"]);
        let (active, d) = b
            .decide(&g.id, &alice, true, Some("ok".into()))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(d, GrantDecision::Decided);
        assert_eq!(active.status, GrantStatus::Active);
        assert!(active.expires_at.is_some() && active.approved_at.is_some());
        assert_eq!(
            b.decide(&g.id, &who("carol", &["security"]), false, None)
                .err(),
            Some(GrantError::NotPending("active"))
        );

        let adm = b
            .admits(&bob, "payments")
            .unwrap_or_else(|| panic!("admits"));
        assert_eq!(adm.id, g.id);
        // The status followed the grant even while no session watched it.
        assert_eq!(*adm.status.borrow(), GrantStatus::Active);
        assert!(adm.remaining() > Duration::from_secs(3500));
        // Same subject from another issuer, or another connection: no.
        let mut other = bob.clone();
        other.issuer = "https://idp.example".into();
        assert!(b.admits(&other, "payments").is_none());
        assert!(b.admits(&bob, "hr").is_none());

        // Only an admin, an approver or the requester may revoke.
        assert_eq!(
            b.revoke(&g.id, &who("eve", &["dba"]), false, None).err(),
            Some(GrantError::NotAllowedToRevoke)
        );
        let revoked = b
            .revoke(&g.id, &bob, false, Some("done".into()))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(revoked.status, GrantStatus::Revoked);
        assert_eq!(revoked.revoked_by.as_deref(), Some("bob"));
        assert_eq!(*adm.status.borrow(), GrantStatus::Revoked);
        assert!(b.admits(&bob, "payments").is_none());
        assert_eq!(
            b.revoke(&g.id, &who("root", &[]), true, None).err(),
            Some(GrantError::NotRevocable("revoked"))
        );
        // Revoked grants do not expire again.
        b.advance(7200);
        assert!(b.sweep().is_empty());
    }

    #[test]
    fn quorum_needs_distinct_approvers_and_one_denial_decides() {
        let b = book(2);
        let bob = who("bob", &["contractors"]);
        let sec = |s: &str| who(s, &["security"]);
        let g = b
            .request(&bob, "payments", "1h", "x")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            b.decide(&g.id, &sec("alice"), true, None).map(|d| d.1),
            Ok(GrantDecision::Counted { have: 1, need: 2 })
        );
        assert!(b.admits(&bob, "payments").is_none());
        assert_eq!(
            b.decide(&g.id, &sec("alice"), true, None).err(),
            Some(GrantError::AlreadyApproved)
        );
        assert_eq!(
            b.decide(&g.id, &sec("carol"), true, None).map(|d| d.1),
            Ok(GrantDecision::Decided)
        );
        assert!(b.admits(&bob, "payments").is_some());

        let g2 = b
            .request(&bob, "payments", "1h", "y")
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(b.decide(&g2.id, &sec("alice"), true, None).is_ok());
        let (denied, d) = b
            .decide(&g2.id, &sec("carol"), false, Some("no".into()))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (denied.status, d),
            (GrantStatus::Denied, GrantDecision::Decided)
        );
        let mine = GrantFilter {
            requester: Some("bob"),
            connection: Some("payments"),
            ..GrantFilter::default()
        };
        let list = b.list(&mine);
        assert_eq!(list.len(), 2);
        assert_eq!(list.first().map(|g| g.id.clone()), Some(g2.id.clone()));
        let active = GrantFilter {
            status: Some("active"),
            ..GrantFilter::default()
        };
        assert_eq!(b.list(&active).len(), 1);
    }

    #[test]
    fn grants_expire_lazily_and_are_swept_once() {
        let b = book(1);
        let bob = who("bob", &["contractors"]);
        let alice = who("alice", &["security"]);
        let g = b
            .request(&bob, "payments", "30m", "x")
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(b.decide(&g.id, &alice, true, None).is_ok());
        let adm = b
            .admits(&bob, "payments")
            .unwrap_or_else(|| panic!("admits"));
        b.advance(29 * 60);
        assert!(b.admits(&bob, "payments").is_some());
        assert!(b.sweep().is_empty());
        b.advance(61);
        // Lazily: no admission, status expired, before any sweep.
        assert!(b.admits(&bob, "payments").is_none());
        assert_eq!(b.get(&g.id).map(|g| g.status), Some(GrantStatus::Expired));
        assert_eq!(*adm.status.borrow(), GrantStatus::Expired);
        let swept = b.sweep();
        assert_eq!(swept.len(), 1);
        assert_eq!(swept.first().map(|g| g.id.clone()), Some(g.id.clone()));
        assert!(b.sweep().is_empty(), "reported once");

        // An undecided request expires after PENDING_TTL.
        let p = b
            .request(&bob, "payments", "1h", "y")
            .unwrap_or_else(|e| panic!("{e}"));
        b.advance(i64::try_from(PENDING_TTL.as_secs()).unwrap_or(0));
        assert_eq!(
            b.decide(&p.id, &alice, true, None).err(),
            Some(GrantError::NotPending("expired"))
        );
        assert_eq!(b.sweep().len(), 1);
        // Ended grants are forgotten after a day.
        b.advance(25 * 3600);
        assert!(b.sweep().is_empty());
        assert!(b.get(&g.id).is_none() && b.get(&p.id).is_none());
    }

    #[test]
    fn audit_event_names_the_actor_and_the_grant() {
        let b = book(1);
        let bob = who("bob", &["contractors"]);
        let g = b
            .request(&bob, "payments", "1h", "x")
            .unwrap_or_else(|e| panic!("{e}"));
        let ev = audit_event(&g, DetailEvent::Requested, Some(&bob), None);
        assert_eq!(ev.kind, RecordKind::Grant);
        assert_eq!(ev.session_id, g.id);
        assert_eq!(ev.subject.as_deref(), Some("bob"));
        let detail: serde_json::Value =
            serde_json::from_str(ev.detail.as_deref().unwrap_or("{}")).unwrap_or_default();
        assert_eq!(detail["event"], "requested");
        assert_eq!(detail["grant_id"], g.id.as_str());
        assert_eq!(
            audit_event(&g, DetailEvent::Expired, None, None).subject,
            None
        );
    }

    #[test]
    fn connection_keys_are_validated() {
        let base = r#"
[[connection]]
name = "payments"
upstream = "127.0.0.1:5432"
database = "payments"
user = "svc"
allow_groups = ["dba"]
"#;
        let cfg = crate::config::Config::from_toml(base, std::path::Path::new("/"))
            .unwrap_or_else(|e| panic!("{e}"));
        let c = cfg.connection("payments").unwrap_or_else(|| panic!("conn"));
        assert!(c.grant_approvers.is_empty());
        let p = GrantPolicy::from_connection(c);
        assert_eq!(p.max_duration, Duration::from_secs(8 * 3600));
        assert_eq!(p.min_approvals, 1);
        let good = format!(
            "{base}grant_approvers = [\"security\"]\ngrant_max_duration = \"2h\"\ngrant_min_approvals = 2\n"
        );
        let cfg = crate::config::Config::from_toml(&good, std::path::Path::new("/"))
            .unwrap_or_else(|e| panic!("{e}"));
        let b = GrantBook::from_connections(&cfg.connections);
        let p = b.policy("payments").unwrap_or_else(|| panic!("policy"));
        assert_eq!(
            (p.max_duration, p.min_approvals, p.approvers.clone()),
            (Duration::from_secs(7200), 2, vec!["security".to_owned()])
        );
        for (bad, key) in [
            ("grant_max_duration = \"soon\"", "grant_max_duration"),
            ("grant_max_duration = \"0s\"", "grant_max_duration"),
            ("grant_min_approvals = 0", "grant_min_approvals"),
            ("grant_approvers = [\"*\"]", "grant_approvers"),
        ] {
            let text = format!("{base}{bad}\n");
            match crate::config::Config::from_toml(&text, std::path::Path::new("/")) {
                Ok(_) => panic!("{bad} accepted"),
                Err(e) => assert!(e.to_string().contains(key), "{bad}: {e}"),
            }
        }
    }
}
