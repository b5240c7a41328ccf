//! `[[notify]]`: webhooks for approval events and for failures of the audit control.
//!
//! Besides approvals, the audit writer and the gateway's periodic chain verification publish
//! `audit.write_failed` and `audit.verify_failed` ([`AuditAlert`], PCI DSS 10.7.2) on a second
//! broadcast channel; they are rendered and queued exactly like approval events.
//!
//! A held statement waits for a human, and that human usually learns about the request from a
//! chat message or a ticket, so the gateway posts every `approval.requested` and
//! `approval.decided` to the configured webhooks. **Decisions must never wait on a webhook**: an
//! approver's click, an expiry or a denial is final the moment the [`ApprovalBook`] takes it,
//! and a webhook that is slow, failing or gone may not delay it, block the admin API, or hold a
//! client's session. Hence the shape of this module:
//!
//! - the book publishes on a broadcast channel and never waits for its subscribers; a dispatcher
//!   task reads that channel (a `Lagged` gap is counted as dropped, never fatal) and only
//!   *enqueues*: it renders the body for each `[[notify]]` entry that wants the event and puts it
//!   on that entry's bounded in-memory queue ([`QUEUE_CAPACITY`]; when full, the oldest event is
//!   dropped, counted in `gatehouse_notify_dropped_total` and logged);
//! - one delivery task per entry posts from its queue with a timeout and retries with
//!   exponential backoff, so a dead webhook delays only its own later events.
//!
//! Delivery is best effort: the audit chain, not the webhook, is the evidence of a request and
//! its decision; events still queued when the gateway stops are not delivered. When a secret is
//! configured each delivery is signed: `X-Gatehouse-Signature: sha256=<hex HMAC-SHA256(secret,
//! timestamp + "." + body)>` with `X-Gatehouse-Timestamp` (Unix seconds, for replay
//! protection). Neither the secret, the URL's path (Slack's holds a token) nor the payload is
//! ever logged.
//!
//! [`ApprovalBook`]: gatehouse_core::approvals::ApprovalBook

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use gatehouse_core::approvals::{ApprovalEvent, ApprovalRequest, ApprovalStatus};
use gatehouse_core::audit::detail::{Detail, DetailEvent, NotifyFailed};
use gatehouse_core::audit::{AuditAlert, AuditEvent, Auditor, RecordKind};
use gatehouse_core::config::{Config, ConfigError, NotifyFormat, Secret};
use serde::Serialize;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;

use crate::error_text::with_sources;
use crate::signed_http::{SIGNATURE_HEADER, TIMESTAMP_HEADER, http_client, signature, unix_now};

/// Events waiting per webhook; beyond it the oldest is dropped.
pub const QUEUE_CAPACITY: usize = 1000;
/// Per attempt: connecting, sending and reading the answer.
const HTTP_TIMEOUT: Duration = Duration::from_secs(5);
/// Attempts per event; waits between them double from [`FIRST_BACKOFF`] (0.5, 1, 2, 4 s).
const ATTEMPTS: u32 = 5;
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// Statement characters shown in a Slack message.
const SLACK_STATEMENT_CHARS: usize = 300;

pub const EVENT_HEADER: &str = "x-gatehouse-event";

/// A `[[notify]]` entry that cannot start (the gateway refuses to start with it).
#[derive(Debug, thiserror::Error)]
pub enum NotifySetupError {
    /// Its secret cannot be read (the text names the entry).
    #[error("{0}")]
    Secret(ConfigError),
    #[error("{key}: http client")]
    HttpClient {
        key: String,
        #[source]
        source: reqwest::Error,
    },
}

/// Starts the dispatcher and one delivery task per `[[notify]]` entry (nothing without
/// entries). Fails when a secret cannot be read or an HTTP client cannot be built, so a
/// misconfigured webhook is found at start, not when the first approval is waiting.
pub fn spawn(
    cfg: &Config,
    events: broadcast::Receiver<ApprovalEvent>,
    alerts: broadcast::Receiver<AuditAlert>,
    auditor: Auditor,
) -> Result<(), NotifySetupError> {
    if cfg.notify.is_empty() {
        return Ok(());
    }
    let mut targets = Vec::with_capacity(cfg.notify.len());
    for (i, n) in cfg.notify.iter().enumerate() {
        let key = format!("notify[{i}]");
        let secret = n
            .secret(&key, &cfg.base_dir)
            .map_err(NotifySetupError::Secret)?;
        let client = http_client(&n.url, HTTP_TIMEOUT)
            .map_err(|source| NotifySetupError::HttpClient { key, source })?;
        let target = Arc::new(Target {
            label: n.label(i),
            url: n.url.clone(),
            redacted_url: n.redacted_url(),
            secret,
            events: n.events.clone(),
            format: n.format,
            client,
            queue: Queue::new(QUEUE_CAPACITY),
            auditor: auditor.clone(),
        });
        tracing::info!(
            notify = %target.label,
            url = %target.redacted_url,
            events = ?target.events,
            signed = target.secret.is_some(),
            "webhook configured"
        );
        tokio::spawn(deliver_loop(target.clone()));
        targets.push(target);
    }
    tokio::spawn(dispatch(events, alerts, targets));
    Ok(())
}

/// One `[[notify]]` entry at run time.
struct Target {
    label: String,
    url: String,
    redacted_url: String,
    secret: Option<Secret>,
    events: Vec<String>,
    format: NotifyFormat,
    client: reqwest::Client,
    queue: Queue,
    /// Undelivered events are audit records (PCI DSS 10.7.2: failures of a security control).
    auditor: Auditor,
}

impl Target {
    /// Records that `event` about `request_id` did not reach this webhook.
    async fn record_failure(&self, event: &str, request_id: &str, attempts: u32, error: &str) {
        let ev = AuditEvent::new(RecordKind::Admin, String::new()).with_detail(
            NotifyFailed {
                event: DetailEvent::NotifyFailed,
                notify: self.label.clone(),
                url: self.redacted_url.clone(),
                notify_event: event.to_owned(),
                request_id: request_id.to_owned(),
                attempts,
                error: error.to_owned(),
            }
            .to_value(),
        );
        self.auditor.record_later(ev).await;
    }
}

/// An event rendered for one webhook.
struct Delivery {
    event: &'static str,
    request_id: String,
    body: Vec<u8>,
}

/// A bounded queue that drops its oldest item when full. Pushing never waits.
struct Queue {
    items: Mutex<VecDeque<Delivery>>,
    ready: tokio::sync::Notify,
    capacity: usize,
}

impl Queue {
    fn new(capacity: usize) -> Self {
        Self {
            items: Mutex::new(VecDeque::new()),
            ready: tokio::sync::Notify::new(),
            capacity: capacity.max(1),
        }
    }

    /// Adds `d`; returns the item dropped to make room, if any.
    fn push(&self, d: Delivery) -> Option<Delivery> {
        let dropped = {
            let mut q = self.items.lock().unwrap_or_else(PoisonError::into_inner);
            let dropped = if q.len() >= self.capacity {
                q.pop_front()
            } else {
                None
            };
            q.push_back(d);
            dropped
        };
        // Stores a permit when the consumer is not waiting yet, so no wake-up is lost.
        self.ready.notify_one();
        dropped
    }

    async fn pop(&self) -> Delivery {
        loop {
            let next = self
                .items
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pop_front();
            if let Some(d) = next {
                return d;
            }
            self.ready.notified().await;
        }
    }
}

/// What the dispatcher received: an approval event or an audit control alert.
enum Incoming {
    Approval(Box<ApprovalEvent>),
    Alert(AuditAlert),
}

impl Incoming {
    fn event(&self) -> &'static str {
        match self {
            Incoming::Approval(ev) => ev.event,
            Incoming::Alert(a) => a.event,
        }
    }

    /// The id shown in logs: the approval request's, or the alert's time.
    fn id(&self) -> String {
        match self {
            Incoming::Approval(ev) => ev.request.id.clone(),
            Incoming::Alert(a) => a.time.clone(),
        }
    }

    fn render(&self, format: NotifyFormat, sent_at: &str) -> serde_json::Result<Vec<u8>> {
        match self {
            Incoming::Approval(ev) => render(format, ev, sent_at),
            Incoming::Alert(a) => render_alert(format, a, sent_at),
        }
    }
}

/// The next event of either channel; `None` once both are closed. A `Lagged` gap is
/// returned as `Err(missed)`.
async fn next_incoming(
    events: &mut Option<broadcast::Receiver<ApprovalEvent>>,
    alerts: &mut Option<broadcast::Receiver<AuditAlert>>,
) -> Option<Result<Incoming, u64>> {
    loop {
        let (ev, al) = (events.as_mut(), alerts.as_mut());
        let got = match (ev, al) {
            (None, None) => return None,
            (Some(e), None) => Recv::Approval(Box::new(e.recv().await)),
            (None, Some(a)) => Recv::Alert(a.recv().await),
            (Some(e), Some(a)) => tokio::select! {
                r = e.recv() => Recv::Approval(Box::new(r)),
                r = a.recv() => Recv::Alert(r),
            },
        };
        match got {
            Recv::Approval(r) => match *r {
                Ok(ev) => return Some(Ok(Incoming::Approval(Box::new(ev)))),
                Err(RecvError::Lagged(n)) => return Some(Err(n)),
                Err(RecvError::Closed) => *events = None,
            },
            Recv::Alert(Ok(a)) => return Some(Ok(Incoming::Alert(a))),
            Recv::Alert(Err(RecvError::Lagged(n))) => return Some(Err(n)),
            Recv::Alert(Err(RecvError::Closed)) => *alerts = None,
        }
    }
}

enum Recv {
    Approval(Box<Result<ApprovalEvent, RecvError>>),
    Alert(Result<AuditAlert, RecvError>),
}

/// Reads the book's events and the audit alerts and enqueues them; never waits on a webhook.
async fn dispatch(
    events: broadcast::Receiver<ApprovalEvent>,
    alerts: broadcast::Receiver<AuditAlert>,
    targets: Vec<Arc<Target>>,
) {
    let (mut events, mut alerts) = (Some(events), Some(alerts));
    while let Some(next) = next_incoming(&mut events, &mut alerts).await {
        match next {
            Ok(ev) => {
                let sent_at = gatehouse_core::audit::now_rfc3339();
                for t in targets
                    .iter()
                    .filter(|t| t.events.iter().any(|e| e == ev.event()))
                {
                    let body = match ev.render(t.format, &sent_at) {
                        Ok(b) => b,
                        Err(e) => {
                            metrics::counter!("gatehouse_notify_failed_total", "notify" => t.label.clone())
                                .increment(1);
                            tracing::warn!(notify = %t.label, event = ev.event(), error = %e, "cannot render webhook body");
                            continue;
                        }
                    };
                    let delivery = Delivery {
                        event: ev.event(),
                        request_id: ev.id(),
                        body,
                    };
                    if let Some(old) = t.queue.push(delivery) {
                        metrics::counter!("gatehouse_notify_dropped_total", "notify" => t.label.clone())
                            .increment(1);
                        tracing::warn!(
                            notify = %t.label,
                            event = old.event,
                            request = %old.request_id,
                            "webhook queue full ({QUEUE_CAPACITY}); oldest event dropped"
                        );
                        t.record_failure(
                            old.event,
                            &old.request_id,
                            0,
                            &format!("queue full ({QUEUE_CAPACITY}); dropped"),
                        )
                        .await;
                    }
                }
            }
            Err(missed) => {
                for t in &targets {
                    metrics::counter!("gatehouse_notify_dropped_total", "notify" => t.label.clone())
                        .increment(missed);
                }
                tracing::warn!(missed, "events missed by the webhook dispatcher");
            }
        }
    }
}

async fn deliver_loop(t: Arc<Target>) {
    loop {
        let d = t.queue.pop().await;
        deliver(&t, &d).await;
    }
}

/// Posts one event, retrying transient failures with exponential backoff.
async fn deliver(t: &Target, d: &Delivery) {
    let mut backoff = FIRST_BACKOFF;
    for attempt in 1..=ATTEMPTS {
        match post(t, d).await {
            Ok(()) => {
                metrics::counter!("gatehouse_notify_sent_total", "notify" => t.label.clone())
                    .increment(1);
                tracing::debug!(notify = %t.label, event = d.event, request = %d.request_id, attempt, "webhook delivered");
                return;
            }
            Err(f) if f.retry && attempt < ATTEMPTS => {
                tracing::debug!(notify = %t.label, event = d.event, attempt, error = %f.reason, "webhook attempt failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = backoff.saturating_mul(2);
            }
            Err(f) => {
                metrics::counter!("gatehouse_notify_failed_total", "notify" => t.label.clone())
                    .increment(1);
                tracing::warn!(
                    notify = %t.label,
                    url = %t.redacted_url,
                    event = d.event,
                    request = %d.request_id,
                    attempts = attempt,
                    error = %f.reason,
                    "webhook delivery failed; event not delivered"
                );
                t.record_failure(d.event, &d.request_id, attempt, &f.reason)
                    .await;
                return;
            }
        }
    }
}

struct Failure {
    /// Network errors, timeouts, 408, 429 and 5xx are retried; other answers are final.
    retry: bool,
    reason: String,
}

async fn post(t: &Target, d: &Delivery) -> Result<(), Failure> {
    let mut req = t
        .client
        .post(&t.url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(EVENT_HEADER, d.event);
    if let Some(secret) = &t.secret {
        // Signed per attempt, so the timestamp says when this attempt was made.
        let ts = unix_now();
        req = req.header(TIMESTAMP_HEADER, ts.to_string()).header(
            SIGNATURE_HEADER,
            signature(secret.expose().as_bytes(), ts, &d.body),
        );
    }
    match req.body(d.body.clone()).send().await {
        Ok(resp) => {
            let status = resp.status();
            if status.is_success() {
                Ok(())
            } else {
                let code = status.as_u16();
                Err(Failure {
                    retry: status.is_server_error() || code == 408 || code == 429,
                    reason: format!("HTTP {code}"),
                })
            }
        }
        Err(e) => Err(Failure {
            retry: true,
            reason: with_sources(&e.without_url()),
        }),
    }
}

#[derive(Serialize)]
struct JsonBody<'a> {
    event: &'a str,
    request: &'a ApprovalRequest,
    sent_at: &'a str,
}

#[derive(Serialize)]
struct SlackBody {
    text: String,
}

fn render(format: NotifyFormat, ev: &ApprovalEvent, sent_at: &str) -> serde_json::Result<Vec<u8>> {
    match format {
        NotifyFormat::Json => serde_json::to_vec(&JsonBody {
            event: ev.event,
            request: &ev.request,
            sent_at,
        }),
        NotifyFormat::Slack => serde_json::to_vec(&SlackBody {
            text: slack_text(ev),
        }),
    }
}

#[derive(Serialize)]
struct AlertBody<'a> {
    event: &'a str,
    alert: &'a AuditAlert,
    sent_at: &'a str,
}

fn render_alert(
    format: NotifyFormat,
    a: &AuditAlert,
    sent_at: &str,
) -> serde_json::Result<Vec<u8>> {
    match format {
        NotifyFormat::Json => serde_json::to_vec(&AlertBody {
            event: a.event,
            alert: a,
            sent_at,
        }),
        NotifyFormat::Slack => serde_json::to_vec(&SlackBody {
            text: slack_escape(&format!(
                "Gatehouse audit control failure ({}) at {}: {}",
                a.event,
                a.time,
                one_line(&a.error, SLACK_STATEMENT_CHARS)
            )),
        }),
    }
}

/// One line for a chat channel: who asked, where, under which rule, the status, the (masked,
/// shortened) statement, the id, and for a new request how to decide it.
fn slack_text(ev: &ApprovalEvent) -> String {
    let r = &ev.request;
    let statement = one_line(&r.statement, SLACK_STATEMENT_CHARS).replace('`', "'");
    let text = if r.status == ApprovalStatus::Pending {
        format!(
            "Gatehouse approval requested: {} wants to run on {} (rule {}, status pending): `{}` \
             (id {}). Approve with `gatehouse approvals approve {}` or deny with \
             `gatehouse approvals deny {}` (approvers: {}; expires {}).",
            r.requester,
            r.connection,
            r.rule,
            statement,
            r.id,
            r.id,
            r.id,
            r.approvers.join(", "),
            r.expires_at,
        )
    } else {
        let by = match (&r.decided_by, &r.decision_reason) {
            (Some(by), Some(reason)) => format!(" by {by} ({})", one_line(reason, 200)),
            (Some(by), None) => format!(" by {by}"),
            _ => String::new(),
        };
        format!(
            "Gatehouse approval {}{by}: {} on {} (rule {}): `{}` (id {}).",
            r.status.as_str(),
            r.requester,
            r.connection,
            r.rule,
            statement,
            r.id,
        )
    };
    slack_escape(&text)
}

/// Whitespace runs collapsed to one space, cut at `max` characters (with `…`).
fn one_line(s: &str, max: usize) -> String {
    let collapsed = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if collapsed.chars().count() <= max {
        return collapsed;
    }
    let mut cut: String = collapsed.chars().take(max).collect();
    cut.push('…');
    cut
}

/// Slack treats `<`, `>` and `&` as markup.
fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
    use super::*;

    fn event(event: &'static str, status: ApprovalStatus, statement: &str) -> ApprovalEvent {
        ApprovalEvent {
            event,
            request: ApprovalRequest {
                id: "0193-abc".into(),
                status,
                requester: "fraud-bot".into(),
                requester_groups: vec!["fraud-bots".into()],
                client_addr: "127.0.0.1:5".into(),
                connection: "payments".into(),
                session_id: "s1".into(),
                statement: statement.into(),
                rule: "bulk-card-read".into(),
                approvers: vec!["security".into()],
                reason: None,
                created_at: "2025-01-01T00:00:00Z".into(),
                expires_at: "2025-01-01T00:15:00Z".into(),
                decided_by: None,
                decision_reason: None,
                decided_at: None,
                min_approvals: 1,
                votes: Vec::new(),
            },
        }
    }

    #[test]
    fn slack_text_for_a_request_says_how_to_approve() {
        let long = format!(
            "SELECT card_number\n  FROM payments WHERE note = '<b>&`x`' {}",
            "AND 1=1 ".repeat(100)
        );
        let text = slack_text(&event("approval.requested", ApprovalStatus::Pending, &long));
        assert!(!text.contains('\n'), "{text}");
        assert!(
            text.contains("fraud-bot wants to run on payments"),
            "{text}"
        );
        assert!(
            text.contains("rule bulk-card-read, status pending"),
            "{text}"
        );
        assert!(text.contains("(id 0193-abc)"), "{text}");
        assert!(
            text.contains("`gatehouse approvals approve 0193-abc`"),
            "{text}"
        );
        assert!(text.contains("&lt;b&gt;&amp;'x'"), "escaped: {text}");
        assert!(text.contains("…`"), "truncated: {text}");
        assert!(text.len() < 800, "{}", text.len());
        let body: serde_json::Value = serde_json::from_slice(
            &render(
                NotifyFormat::Slack,
                &event("approval.requested", ApprovalStatus::Pending, "SELECT 1"),
                "t",
            )
            .unwrap(),
        )
        .unwrap();
        assert!(body["text"].as_str().unwrap().contains("`SELECT 1`"));
    }

    #[test]
    fn slack_text_for_a_decision_names_the_decider() {
        let mut ev = event(
            "approval.decided",
            ApprovalStatus::Approved,
            "SELECT card_number FROM payments",
        );
        ev.request.decided_by = Some("alice".into());
        ev.request.decision_reason = Some("case 42".into());
        let text = slack_text(&ev);
        assert_eq!(
            text,
            "Gatehouse approval approved by alice (case 42): fraud-bot on payments \
             (rule bulk-card-read): `SELECT card_number FROM payments` (id 0193-abc)."
        );
        ev.request.status = ApprovalStatus::Expired;
        ev.request.decided_by = None;
        assert!(slack_text(&ev).starts_with("Gatehouse approval expired: fraud-bot"));
    }

    #[test]
    fn json_body_carries_event_request_and_time() {
        let body = render(
            NotifyFormat::Json,
            &event("approval.requested", ApprovalStatus::Pending, "SELECT 1"),
            "2025-01-01T00:00:01Z",
        )
        .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["event"], "approval.requested");
        assert_eq!(v["request"]["id"], "0193-abc");
        assert_eq!(v["request"]["status"], "pending");
        assert_eq!(v["sent_at"], "2025-01-01T00:00:01Z");
    }

    #[tokio::test]
    async fn a_full_queue_drops_the_oldest() {
        let q = Queue::new(2);
        let d = |id: &str| Delivery {
            event: "approval.requested",
            request_id: id.into(),
            body: Vec::new(),
        };
        assert!(q.push(d("1")).is_none());
        assert!(q.push(d("2")).is_none());
        assert_eq!(q.push(d("3")).map(|o| o.request_id).as_deref(), Some("1"));
        assert_eq!(q.pop().await.request_id, "2");
        assert_eq!(q.pop().await.request_id, "3");
        // A push after the consumer started waiting wakes it.
        let q = Arc::new(q);
        let q2 = q.clone();
        let waiter = tokio::spawn(async move { q2.pop().await.request_id });
        tokio::task::yield_now().await;
        q.push(d("4"));
        assert_eq!(waiter.await.unwrap(), "4");
    }
}
