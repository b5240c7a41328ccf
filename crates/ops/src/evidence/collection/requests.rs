//! 7.2 / 8.6.1 (access approved by authorised personnel): held statements (`approval` records)
//! and time-bound access grants (`grant` records), each request followed from its request to
//! its end: who asked, who decided, the reason, how long the decision took.

use std::collections::BTreeMap;

use gatehouse_core::audit::detail::DetailEvent;
use gatehouse_core::audit::{AuditRecord, parse_rfc3339 as parse_time};
use gatehouse_core::pan::mask_pans;
use serde_json::Value;

use super::EventField;
use super::values::{bump, clip, masked_opt, masked_str};
use crate::evidence::summary::{Capped, Latency, Request, Requests, round3};

/// What the requests are for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RequestKind {
    /// A statement held for approval (`approval` records, `detail.approval_id`).
    HeldStatement,
    /// Access to a connection for a while (`grant` records, `detail.grant_id`).
    Grant,
}

impl RequestKind {
    fn id_key(self) -> &'static str {
        match self {
            Self::HeldStatement => "approval_id",
            Self::Grant => "grant_id",
        }
    }
}

pub(super) struct RequestAcc {
    kind: RequestKind,
    records: u64,
    /// Records per `detail.event` as written (`(none)` without one).
    events: BTreeMap<String, u64>,
    requests: BTreeMap<String, Request>,
    requesters: BTreeMap<String, u64>,
    deciders: BTreeMap<String, u64>,
}

impl RequestAcc {
    pub(super) fn new(kind: RequestKind) -> Self {
        Self {
            kind,
            records: 0,
            events: BTreeMap::new(),
            requests: BTreeMap::new(),
            requesters: BTreeMap::new(),
            deciders: BTreeMap::new(),
        }
    }

    /// One `approval` or `grant` record into the request it is about.
    pub(super) fn push(&mut self, r: &AuditRecord, detail: &Value, event: EventField) {
        use DetailEvent::{
            Abandoned, ApprovalCounted, Approved, Denied, Expired, Requested, Revoked, Used,
        };
        let e = &r.event;
        self.records += 1;
        bump(&mut self.events, event.text.unwrap_or("(none)"), 1);
        let Some(id) = detail.get(self.kind.id_key()).and_then(Value::as_str) else {
            return;
        };
        let req = self
            .requests
            .entry(id.to_owned())
            .or_insert_with(|| Request {
                id: mask_pans(id).into_owned(),
                requested_at: None,
                requester: None,
                connection: None,
                rule: None,
                statement: None,
                request_reason: None,
                status: "pending".to_owned(),
                approvers: Vec::new(),
                decided_by: None,
                decided_at: None,
                decision_reason: None,
                latency_seconds: None,
                used: 0,
                revoked_by: None,
                revoke_reason: None,
            });
        // The requester: a held statement's request record is made by the requester's session;
        // a grant's records name it in the detail.
        let requester = if self.kind == RequestKind::HeldStatement && event.is(Requested) {
            masked_opt(&e.subject)
        } else {
            masked_str(detail.get("requester"))
        };
        if req.requester.is_none() {
            req.requester = requester;
        }
        if req.connection.is_none() {
            req.connection = masked_opt(&e.connection);
        }
        if req.rule.is_none() {
            req.rule = masked_opt(&e.rule);
        }
        if req.statement.is_none() {
            req.statement = e.statement.as_deref().map(clip);
        }
        if req.request_reason.is_none() {
            req.request_reason = masked_str(detail.get("request_reason"));
        }
        let actor = masked_opt(&e.subject);
        match event.known {
            Some(Requested) => {
                req.requested_at = Some(e.time.clone());
                if let Some(q) = &req.requester {
                    bump(&mut self.requesters, q, 1);
                }
            }
            Some(decision @ (ApprovalCounted | Approved | Denied)) => {
                if let Some(a) = &actor {
                    bump(&mut self.deciders, a, 1);
                    if decision != Denied && !req.approvers.contains(a) {
                        req.approvers.push(a.clone());
                    }
                }
                if decision != ApprovalCounted {
                    req.status = decision.as_str().to_owned();
                    req.decided_by = actor;
                    req.decided_at = Some(e.time.clone());
                    req.decision_reason = masked_str(detail.get("reason"));
                    req.latency_seconds = match (
                        req.requested_at.as_deref().and_then(parse_time),
                        parse_time(&e.time),
                    ) {
                        (Some(a), Some(b)) => Some(round3((b - a).as_seconds_f64().max(0.0))),
                        _ => None,
                    };
                }
            }
            Some(Used) => req.used += 1,
            Some(end @ (Expired | Abandoned | Revoked)) => {
                req.status = end.as_str().to_owned();
                if req.decided_at.is_none() {
                    req.decided_at = Some(e.time.clone());
                }
                if end == Revoked {
                    req.revoked_by = actor;
                    req.revoke_reason = masked_str(detail.get("reason"));
                }
            }
            _ => {}
        }
    }

    pub(super) fn finish(self) -> Requests {
        let count = |ev: DetailEvent| self.events.get(ev.as_str()).copied().unwrap_or(0);
        // Set when approved or denied (a grant may be revoked or expire afterwards).
        let mut latencies: Vec<f64> = self
            .requests
            .values()
            .filter_map(|r| r.latency_seconds)
            .collect();
        latencies.sort_by(f64::total_cmp);
        let latency = match (latencies.first(), latencies.last()) {
            (Some(min), Some(max)) => {
                let n = latencies.len();
                let median = if n % 2 == 1 {
                    latencies.get(n / 2).copied().unwrap_or(*min)
                } else {
                    let a = latencies.get(n / 2 - 1).copied().unwrap_or(*min);
                    let b = latencies.get(n / 2).copied().unwrap_or(*max);
                    (a + b) / 2.0
                };
                Some(Latency {
                    decisions: n as u64,
                    min_seconds: round3(*min),
                    median_seconds: round3(median),
                    max_seconds: round3(*max),
                })
            }
            _ => None,
        };
        let self_decisions = self
            .requests
            .values()
            .filter(|r| {
                r.requester
                    .as_ref()
                    .is_some_and(|q| r.approvers.contains(q) || r.decided_by.as_ref() == Some(q))
            })
            .count() as u64;
        let pending = self
            .requests
            .values()
            .filter(|r| r.status == "pending" && r.requested_at.is_some())
            .count() as u64;
        let requests = count(DetailEvent::Requested);
        let approved = count(DetailEvent::Approved);
        let denied = count(DetailEvent::Denied);
        let expired = count(DetailEvent::Expired);
        let abandoned = count(DetailEvent::Abandoned);
        let revoked = count(DetailEvent::Revoked);
        let used = count(DetailEvent::Used);
        let mut list = Capped::default();
        let mut reqs: Vec<Request> = self.requests.into_values().collect();
        reqs.sort_by(|a, b| a.requested_at.cmp(&b.requested_at).then(a.id.cmp(&b.id)));
        for r in reqs {
            list.push(r);
        }
        Requests {
            records: self.records,
            requests,
            approved,
            denied,
            expired,
            abandoned,
            revoked,
            used,
            events: self.events,
            pending,
            self_decisions,
            requesters: self.requesters,
            deciders: self.deciders,
            latency,
            list,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evidence_latency_median() {
        let mut acc = RequestAcc::new(RequestKind::HeldStatement);
        for (i, secs) in [5.0, 1.0, 3.0, 10.0].iter().enumerate() {
            acc.requests.insert(
                i.to_string(),
                Request {
                    id: i.to_string(),
                    requested_at: None,
                    requester: Some("bot".into()),
                    connection: None,
                    rule: None,
                    statement: None,
                    request_reason: None,
                    status: "approved".into(),
                    approvers: vec!["alice".into()],
                    decided_by: Some("alice".into()),
                    decided_at: None,
                    decision_reason: None,
                    latency_seconds: Some(*secs),
                    used: 0,
                    revoked_by: None,
                    revoke_reason: None,
                },
            );
        }
        let r = acc.finish();
        let l = r.latency.unwrap();
        assert_eq!(
            (l.min_seconds, l.median_seconds, l.max_seconds),
            (1.0, 4.0, 10.0)
        );
        assert_eq!(r.self_decisions, 0);
    }
}
