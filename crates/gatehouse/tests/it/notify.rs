//! `[[notify]]` webhooks: signed approval events reach a receiver, failing webhooks are retried,
//! and a dead webhook never holds a decision.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::*;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

const SECRET: &str = "hook-Secret-5e1d";
const CARD: &str = "4111111111111111";

/// An approve rule like the approvals suite's, with time enough for slow webhooks around it.
const RULES: &str = r#"
[[rule]]
name = "bulk-card-read"
connections = ["*"]
groups = ["fraud-bots"]
reads = ["public.payments.card_number"]
without_limit = true
action = "approve"
approvers = ["security"]
timeout = "60s"
"#;

/// Held by the rule; holds a card number the gateway must mask before anyone sees it.
fn held_sql() -> String {
    format!("SELECT card_number FROM payments WHERE card_number <> '{CARD}' ORDER BY id")
}

/// What a receiver does with each request.
#[derive(Clone, Copy)]
enum Mode {
    /// Answers 200.
    Ok,
    /// Answers 500 to the first `n` requests, then 200.
    FailFirst(usize),
    /// Never answers (within the test).
    Hang,
}

#[derive(Clone, Debug)]
struct Hit {
    headers: HeaderMap,
    body: Vec<u8>,
    at: Instant,
}

impl Hit {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

struct Receiver {
    port: u16,
    mode: Mode,
    hits: Mutex<Vec<Hit>>,
}

impl Receiver {
    /// A webhook receiver on a free loopback port.
    async fn start(mode: Mode) -> Arc<Receiver> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let rx = Arc::new(Receiver {
            port: listener.local_addr().unwrap().port(),
            mode,
            hits: Mutex::new(Vec::new()),
        });
        let app = axum::Router::new().fallback(receive).with_state(rx.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        rx
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    fn hits(&self) -> Vec<Hit> {
        self.hits.lock().unwrap().clone()
    }

    /// Waits until some hit satisfies `pred`.
    async fn wait_for(&self, what: &str, pred: impl Fn(&Hit) -> bool) -> Hit {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(h) = self.hits().into_iter().find(|h| pred(h)) {
                return h;
            }
            assert!(
                Instant::now() < deadline,
                "receiver never got {what}; got {:?}",
                self.hits()
                    .iter()
                    .map(|h| String::from_utf8_lossy(&h.body).into_owned())
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn wait_for_event(&self, event: &str) -> Hit {
        self.wait_for(event, |h| h.header("x-gatehouse-event") == Some(event))
            .await
    }
}

async fn receive(State(rx): State<Arc<Receiver>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let n = {
        let mut hits = rx.hits.lock().unwrap();
        hits.push(Hit {
            headers,
            body: body.to_vec(),
            at: Instant::now(),
        });
        hits.len()
    };
    match rx.mode {
        Mode::Ok => StatusCode::OK,
        Mode::FailFirst(k) if n <= k => StatusCode::INTERNAL_SERVER_ERROR,
        Mode::FailFirst(_) => StatusCode::OK,
        Mode::Hang => {
            tokio::time::sleep(Duration::from_secs(600)).await;
            StatusCode::OK
        }
    }
}

/// Recomputes the signature of a hit with the shared secret.
fn assert_signed(hit: &Hit) {
    let ts = hit
        .header("x-gatehouse-timestamp")
        .expect("timestamp header");
    let sig = hit
        .header("x-gatehouse-signature")
        .expect("signature header");
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(ts.as_bytes());
    mac.update(b".");
    mac.update(&hit.body);
    let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    assert_eq!(
        sig,
        expected,
        "signature of {}",
        String::from_utf8_lossy(&hit.body)
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let ts: u64 = ts.parse().unwrap();
    assert!(ts.abs_diff(now) < 120, "timestamp {ts} vs now {now}");
}

fn secret_file(dir: &Path) -> String {
    let p = dir.join("hook.secret");
    std::fs::write(&p, format!("{SECRET}\n")).unwrap();
    p.display().to_string()
}

fn notify_entry(url: &str, more: &str) -> String {
    format!("\n[[notify]]\nurl = \"{url}\"\n{more}\n")
}

async fn approve(gw: &Gateway, id: &str, token: &str) -> (u16, Duration) {
    let started = Instant::now();
    let resp = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .post(format!(
            "http://127.0.0.1:{}/api/approvals/{id}/approve",
            gw.admin_port
        ))
        .bearer_auth(token)
        .json(&serde_json::json!({"reason": "ticket 7"}))
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_gets_signed_requested_and_decided_events() {
    let hook = Receiver::start(Mode::Ok).await;
    let secrets = tempfile::tempdir().unwrap();
    let gw = Gateway::builder()
        .extra(RULES)
        .extra(&notify_entry(
            &hook.url(),
            &format!(
                "name = \"audit-hook\"\nsecret_file = \"{}\"",
                secret_file(secrets.path())
            ),
        ))
        .start();
    let bot = gw.token("fraud-bot", &["fraud-bots"]);
    let alice = gw.token("alice", &["security"]);
    let c = gw.connect("payments", &bot).await;
    let sql = held_sql();
    let held = tokio::spawn(async move { c.simple_query(&sql).await.map(|m| row_count(&m)) });

    let requested = hook.wait_for_event("approval.requested").await;
    assert_signed(&requested);
    assert_eq!(requested.header("content-type"), Some("application/json"));
    let body = requested.json();
    assert_eq!(body["event"], "approval.requested");
    assert!(
        body["sent_at"].as_str().is_some_and(|s| s.contains('T')),
        "{body}"
    );
    let req = &body["request"];
    assert_eq!(req["status"], "pending");
    assert_eq!(req["requester"], "fraud-bot");
    assert_eq!(req["connection"], "payments");
    assert_eq!(req["rule"], "bulk-card-read");
    let statement = req["statement"].as_str().unwrap();
    assert!(statement.contains("card_number <>"), "{statement}");
    assert!(
        !String::from_utf8_lossy(&requested.body).contains(CARD),
        "the card number must be masked: {statement}"
    );
    let id = req["id"].as_str().unwrap().to_owned();
    assert_eq!(
        pending_approval(&gw, &alice).await["id"]
            .as_str()
            .unwrap()
            .to_owned(),
        id,
        "the payload's id is the API's"
    );

    let (status, _) = approve(&gw, &id, &alice).await;
    assert_eq!(status, 200);
    assert_eq!(held.await.unwrap().unwrap(), 2);

    let decided = hook.wait_for_event("approval.decided").await;
    assert_signed(&decided);
    let body = decided.json();
    assert_eq!(body["event"], "approval.decided");
    assert_eq!(body["request"]["id"], id.as_str());
    assert_eq!(body["request"]["status"], "approved");
    assert_eq!(body["request"]["decided_by"], "alice");
    assert_eq!(body["request"]["decision_reason"], "ticket 7");
    assert!(!String::from_utf8_lossy(&decided.body).contains(CARD));
    assert_eq!(hook.hits().len(), 2, "one delivery per event");

    let m = gw.metrics().await;
    assert!(
        m.lines()
            .any(|l| l.starts_with("gatehouse_notify_sent_total{notify=\"audit-hook\"} 2")),
        "{m}"
    );
    let log = gw.log_text();
    assert!(!log.contains(SECRET), "the secret is never logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_webhooks_do_not_hold_decisions() {
    let closed_port = free_port(); // nothing listens there
    let hanging = Receiver::start(Mode::Hang).await;
    let failing = Receiver::start(Mode::FailFirst(usize::MAX)).await;
    let healthy = Receiver::start(Mode::Ok).await;
    let gw = Gateway::builder()
        .extra(RULES)
        .extra(&notify_entry(
            &format!("http://127.0.0.1:{closed_port}/hook"),
            "name = \"dead\"",
        ))
        .extra(&notify_entry(&hanging.url(), "name = \"hanging\""))
        .extra(&notify_entry(&failing.url(), "name = \"failing\""))
        .extra(&notify_entry(&healthy.url(), "name = \"healthy\""))
        .start();
    let bot = gw.token("fraud-bot", &["fraud-bots"]);
    let alice = gw.token("alice", &["security"]);
    let c = Arc::new(gw.connect("payments", &bot).await);

    // Two rounds: the second finds the dead webhooks still busy retrying the first.
    let mut ids = Vec::new();
    for round in 0..2 {
        let c2 = c.clone();
        let sql = held_sql();
        let held = tokio::spawn(async move {
            let r = c2.simple_query(&sql).await.map(|m| row_count(&m));
            (r, Instant::now())
        });
        let id = pending_approval(&gw, &alice).await["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let (status, took) = approve(&gw, &id, &alice).await;
        assert_eq!(status, 200, "round {round}");
        assert!(took < Duration::from_secs(2), "the decision took {took:?}");
        let approved_at = Instant::now();
        let (r, done_at) = tokio::time::timeout(Duration::from_secs(5), held)
            .await
            .expect("the approved statement completes promptly")
            .unwrap();
        assert_eq!(r.unwrap(), 2, "round {round}");
        assert!(
            done_at.saturating_duration_since(approved_at) < Duration::from_secs(3),
            "round {round}: the client waited {:?} after the approval",
            done_at.saturating_duration_since(approved_at)
        );
        ids.push(id);
    }

    // The decisions are in the audit chain.
    let recs = gw.export();
    for id in &ids {
        assert!(
            recs.iter().any(|r| r["kind"] == "approval"
                && r["detail"]["event"] == "approved"
                && r.to_string().contains(id.as_str())),
            "decision of {id} not recorded"
        );
    }

    // The healthy webhook got all four events, unaffected by the others.
    for id in &ids {
        for event in ["approval.requested", "approval.decided"] {
            healthy
                .wait_for(&format!("{event} {id}"), |h| {
                    h.header("x-gatehouse-event") == Some(event)
                        && h.json()["request"]["id"] == id.as_str()
                })
                .await;
        }
    }
    assert!(
        healthy
            .hits()
            .iter()
            .all(|h| h.header("x-gatehouse-signature").is_none())
    );
    // The hanging one saw only its first attempt so far (each attempt waits out a timeout).
    assert!(!hanging.hits().is_empty());

    // The failing one is retried, then given up on: counted and logged, never blocking.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let m = gw.metrics().await;
        if m.contains("gatehouse_notify_failed_total{notify=\"dead\"}")
            && m.contains("gatehouse_notify_failed_total{notify=\"failing\"}")
        {
            assert!(
                m.contains("gatehouse_notify_sent_total{notify=\"healthy\"} 4"),
                "{m}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "no failure counted: {m}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let first_event: Vec<Hit> = failing
        .hits()
        .into_iter()
        .filter(|h| h.body == failing.hits()[0].body)
        .collect();
    assert_eq!(first_event.len(), 5, "five attempts for one event");
    let gaps: Vec<Duration> = first_event
        .windows(2)
        .map(|w| w[1].at.duration_since(w[0].at))
        .collect();
    assert!(
        gaps.windows(2).all(|g| g[1] > g[0]),
        "backoff grows: {gaps:?}"
    );
    let log = gw.log_text();
    assert!(log.contains("webhook delivery failed"), "{log}");
    assert!(
        !log.contains(&format!("127.0.0.1:{}/hook", failing.port)),
        "URL paths are not logged"
    );
    // Each undelivered event is an audit record (10.7.2), without the URL's path or secret.
    let failed = gw.wait_for_record(|r| {
        r["detail"]["event"] == "notify_failed" && r["detail"]["notify"] == "failing"
    });
    assert_eq!(failed["kind"], "admin");
    assert_eq!(failed["detail"]["attempts"], 5, "{failed}");
    assert_eq!(failed["detail"]["error"], "HTTP 500", "{failed}");
    assert_eq!(
        failed["detail"]["notify_event"], "approval.requested",
        "{failed}"
    );
    assert!(!failed.to_string().contains("/hook"), "{failed}");
    gw.wait_for_record(|r| {
        r["detail"]["event"] == "notify_failed" && r["detail"]["notify"] == "dead"
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_delivery_is_retried() {
    let hook = Receiver::start(Mode::FailFirst(1)).await;
    let gw = Gateway::builder()
        .extra(RULES)
        .extra(&notify_entry(
            &hook.url(),
            "events = [\"approval.requested\"]",
        ))
        .start();
    let bot = gw.token("fraud-bot", &["fraud-bots"]);
    let c = gw.connect("payments", &bot).await;
    let sql = held_sql();
    let _held = tokio::spawn(async move { c.simple_query(&sql).await.map(|m| row_count(&m)) });

    hook.wait_for("a second attempt", |_| hook.hits().len() >= 2)
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let hits = hook.hits();
    assert_eq!(hits.len(), 2, "500 then 200: exactly two attempts");
    assert_eq!(hits[0].body, hits[1].body, "the same event again");
    assert_eq!(hits[1].json()["event"], "approval.requested");
    assert!(
        hits[1].at.duration_since(hits[0].at) >= Duration::from_millis(400),
        "retried after a backoff"
    );
    let m = gw.metrics().await;
    assert!(
        m.contains("gatehouse_notify_sent_total{notify=\"notify[0]\"} 1"),
        "{m}"
    );
    assert!(!m.contains("gatehouse_notify_failed_total"), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_format_posts_one_line_of_text() {
    let hook = Receiver::start(Mode::Ok).await;
    let secrets = tempfile::tempdir().unwrap();
    let gw = Gateway::builder()
        .extra(RULES)
        .extra(&notify_entry(
            &hook.url(),
            &format!(
                "format = \"slack\"\nsecret_file = \"{}\"",
                secret_file(secrets.path())
            ),
        ))
        .start();
    let bot = gw.token("fraud-bot", &["fraud-bots"]);
    let alice = gw.token("alice", &["security"]);
    let c = gw.connect("payments", &bot).await;
    let sql = held_sql();
    let held = tokio::spawn(async move { c.simple_query(&sql).await.map(|m| row_count(&m)) });

    let id = pending_approval(&gw, &alice).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let hit = hook.wait_for_event("approval.requested").await;
    assert_signed(&hit);
    let body = hit.json();
    assert_eq!(body.as_object().map(|o| o.len()), Some(1), "{body}");
    let text = body["text"].as_str().unwrap();
    assert!(text.contains("bulk-card-read"), "{text}");
    assert!(text.contains(&id), "{text}");
    assert!(text.contains("fraud-bot"), "{text}");
    assert!(
        text.contains(&format!("gatehouse approvals approve {id}")),
        "{text}"
    );
    assert!(!text.contains(CARD), "{text}");
    assert!(!text.contains('\n'), "{text}");

    assert_eq!(approve(&gw, &id, &alice).await.0, 200);
    assert_eq!(held.await.unwrap().unwrap(), 2);
    let hit = hook.wait_for_event("approval.decided").await;
    assert_signed(&hit);
    let text = hit.json()["text"].as_str().unwrap().to_owned();
    assert!(
        text.contains("approved by alice") && text.contains(&id),
        "{text}"
    );
}

#[test]
fn check_rejects_bad_notify_entries() {
    let dir = tempfile::tempdir().unwrap();
    let base = Gateway::builder().config_text(free_port(), free_port());
    // The first entry is valid, so errors must name the second: notify[1].
    let good = notify_entry("https://hooks.example.com/services/T1/B2/sekrit", "");
    for (entry, expect) in [
        (
            notify_entry("http://example.com/hook", ""),
            "notify[1].url: must be https://",
        ),
        (
            notify_entry("https://x.example/hook", "events = [\"approval.granted\"]"),
            "notify[1].events: unknown event \"approval.granted\"",
        ),
        (
            notify_entry(
                "https://x.example/hook",
                "secret_env = \"HOOK_SECRET\"\nsecret_file = \"hook.secret\"",
            ),
            "notify[1].secret_env: set secret_env or secret_file, not both",
        ),
        (
            notify_entry(
                "https://x.example/hook",
                "secret_env = \"GATEHOUSE_TEST_UNSET_HOOK_SECRET\"",
            ),
            "notify[1].secret_env: environment variable GATEHOUSE_TEST_UNSET_HOOK_SECRET is not set",
        ),
    ] {
        let path = dir.path().join("gatehouse.toml");
        std::fs::write(&path, format!("{base}{good}{entry}")).unwrap();
        let out = std::process::Command::new(bin())
            .args(["check", "-c"])
            .arg(&path)
            .env("TEST_DB_PASSWORD", SVC_PASSWORD)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "accepted: {entry}");
        assert!(stderr.contains(expect), "{entry}: {stderr}");
        assert!(!stderr.contains("sekrit"), "{stderr}");
    }
    // And the valid one alone passes.
    let path = dir.path().join("gatehouse.toml");
    std::fs::write(&path, format!("{base}{good}")).unwrap();
    let out = std::process::Command::new(bin())
        .args(["check", "-c"])
        .arg(&path)
        .env("TEST_DB_PASSWORD", SVC_PASSWORD)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
