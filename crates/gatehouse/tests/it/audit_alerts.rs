//! Failures of the audit control raise an alert (PCI DSS 10.7.2): a failed audit write, a
//! failed chain verification and a lagging SIEM sink each count a metric, log an error, post a
//! `[[notify]]` event and, once the store takes writes, become a `control_failure` record.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::*;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use gatehouse_store::SqliteStore;
use serde_json::Value;

/// A webhook receiver on a free loopback port that answers 200 and keeps what it got.
struct Receiver {
    port: u16,
    hits: Mutex<Vec<(HeaderMap, Vec<u8>)>>,
}

impl Receiver {
    async fn start() -> Arc<Receiver> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let rx = Arc::new(Receiver {
            port: listener.local_addr().unwrap().port(),
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

    /// Waits for a delivery of `event`; returns its JSON body.
    async fn wait_for_event(&self, event: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let found = self
                .hits
                .lock()
                .unwrap()
                .iter()
                .find(|(h, _)| {
                    h.get("x-gatehouse-event").and_then(|v| v.to_str().ok()) == Some(event)
                })
                .map(|(_, b)| serde_json::from_slice::<Value>(b).unwrap());
            if let Some(v) = found {
                return v;
            }
            assert!(Instant::now() < deadline, "receiver never got {event}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn receive(State(rx): State<Arc<Receiver>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    rx.hits.lock().unwrap().push((headers, body.to_vec()));
    StatusCode::OK
}

/// The value of an unlabelled counter in the Prometheus text, if present.
fn counter(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

fn error_line<'a>(log: &'a str, needle: &str) -> Option<&'a str> {
    log.lines()
        .find(|l| l.contains("ERROR") && l.contains(needle))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_audit_write_raises_metric_error_log_and_webhook() {
    let hook = Receiver::start().await;
    // No `events`: the default includes the audit control events.
    let gw = Gateway::builder()
        .extra(&format!("\n[[notify]]\nurl = \"{}\"\n", hook.url()))
        .start();
    let token = gw.token("alert-bot", &["dba"]);
    let c = gw.connect("payments", &token).await;
    c.simple_query("SELECT 1").await.unwrap();

    // The audit journal stops taking writes (as in the fail-closed test of the audit suite).
    gw.fail_journal(true);
    let e = c.simple_query("SELECT 2").await.unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("58000"), "{e:?}");

    let body = hook.wait_for_event("audit.write_failed").await;
    assert_eq!(body["event"], "audit.write_failed", "{body}");
    assert!(
        body["alert"]["error"]
            .as_str()
            .unwrap()
            .contains("no space left on device"),
        "{body}"
    );
    assert!(body["alert"]["records"].as_u64().unwrap() >= 1, "{body}");
    assert!(body["sent_at"].is_string(), "{body}");

    let m = gw.metrics().await;
    assert!(
        counter(&m, "gatehouse_audit_write_failures_total").is_some_and(|v| v >= 1.0),
        "{m}"
    );
    let log = gw.log_text();
    assert!(error_line(&log, "audit write failed").is_some(), "{log}");

    // Once the store takes writes again, the failure is in the chain (for the evidence report)
    // and the chain still verifies.
    gw.fail_journal(false);
    let rec = control_failure(&gw, "audit.write_failed");
    assert!(rec["detail"]["count"].as_u64().unwrap() >= 1, "{rec}");
    assert!(
        rec["detail"]["error"]
            .as_str()
            .unwrap()
            .contains("no space left on device"),
        "{rec}"
    );
    assert!(rec["detail"]["first_at"].is_string(), "{rec}");
    c.simple_query("SELECT 3").await.unwrap();
    assert!(gw.cli(&["audit", "verify"]).status.success());
}

/// Waits for the `control_failure` record of `alert`.
fn control_failure(gw: &Gateway, alert: &str) -> Value {
    gw.wait_for_record(|r| {
        r["kind"] == "admin"
            && r["detail"]["event"] == "control_failure"
            && r["detail"]["alert"] == alert
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_chain_verification_raises_metric_error_log_and_webhook() {
    let hook = Receiver::start().await;
    let mut gw = Gateway::builder()
        .extra(&format!(
            "\n[[notify]]\nurl = \"{}\"\nevents = [\"audit.verify_failed\"]\n",
            hook.url()
        ))
        .start();
    let token = gw.token("alert-bot", &["dba"]);
    let c = gw.connect("payments", &token).await;
    c.simple_query("SELECT 1").await.unwrap();
    drop(c);
    gw.stop();
    assert!(gw.cli(&["audit", "verify"]).status.success());

    // Someone edits a stored record while the gateway is down; it verifies at start.
    SqliteStore::open(&gw.store_url())
        .unwrap()
        .execute_raw("UPDATE audit_records SET subject = 'someone-else' WHERE seq = 1")
        .unwrap();
    gw.restart();

    let body = hook.wait_for_event("audit.verify_failed").await;
    assert_eq!(body["event"], "audit.verify_failed", "{body}");
    assert!(
        body["alert"]["error"]
            .as_str()
            .unwrap()
            .starts_with("record 1: content does not match its hash"),
        "{body}"
    );
    let m = gw.metrics().await;
    assert!(
        counter(&m, "gatehouse_audit_verify_failures_total").is_some_and(|v| v >= 1.0),
        "{m}"
    );
    let log = gw.log_text();
    assert!(
        error_line(&log, "audit chain verification failed").is_some(),
        "{log}"
    );
    // The gateway keeps serving (alerting does not stop it), and the failure is recorded.
    let c = gw.connect("payments", &token).await;
    c.simple_query("SELECT 1").await.unwrap();
    let rec = control_failure(&gw, "audit.verify_failed");
    assert!(
        rec["detail"]["error"]
            .as_str()
            .unwrap()
            .starts_with("record 1: content does not match its hash"),
        "{rec}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_siem_sink_raises_an_error_log_and_webhook() {
    let hook = Receiver::start().await;
    // An HTTP sink whose SIEM is down (nothing listens on its port) and a low threshold.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_port = dead.local_addr().unwrap().port();
    drop(dead);
    let gw = Gateway::builder()
        .extra(&format!(
            "\n[[audit.sink]]\nname = \"siem\"\nkind = \"http\"\nurl = \"http://127.0.0.1:{dead_port}/ingest\"\nlag_alert_records = 3\n\n[[notify]]\nurl = \"{}\"\nevents = [\"audit.sink_lag\"]\n",
            hook.url()
        ))
        .start();
    let token = gw.token("alert-bot", &["dba"]);
    let c = gw.connect("payments", &token).await;
    for i in 0..5 {
        c.simple_query(&format!("SELECT {i}")).await.unwrap();
    }

    let body = hook.wait_for_event("audit.sink_lag").await;
    assert_eq!(body["event"], "audit.sink_lag", "{body}");
    let error = body["alert"]["error"].as_str().unwrap();
    assert!(error.contains("audit sink siem is"), "{body}");
    assert!(body["alert"]["records"].as_u64().unwrap() > 3, "{body}");
    let log = gw.log_text();
    assert!(
        error_line(&log, "audit sink is falling behind").is_some(),
        "{log}"
    );
    let rec = control_failure(&gw, "audit.sink_lag");
    assert!(rec["detail"]["records"].as_u64().unwrap() > 3, "{rec}");
}
