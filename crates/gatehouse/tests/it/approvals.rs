//! Just-in-time approvals: a statement held at the gateway until an approver decides.

use std::time::Duration;

use crate::support::*;
use serde_json::Value;

const RULES: &str = r#"
[[rule]]
name = "bulk-card-read"
connections = ["*"]
groups = ["fraud-bots"]
reads = ["public.payments.card_number"]
without_limit = true
action = "approve"
approvers = ["security"]
timeout = "3s"
"#;

const HELD: &str = "SELECT card_number FROM payments ORDER BY id";

#[tokio::test]
async fn a_held_statement_completes_after_approval() {
    let gw = Gateway::builder().extra(RULES).start();
    let bot = gw.token("fraud-bot", &["fraud-bots"]);
    let alice = gw.token("alice", &["security"]);
    let c = gw.connect("payments", &bot).await;
    let held = tokio::spawn(async move { c.simple_query(HELD).await.map(|m| row_count(&m)) });

    let req = pending_approval(&gw, &alice).await;
    for field in [
        "id",
        "status",
        "requester",
        "connection",
        "statement",
        "rule",
        "created_at",
        "expires_at",
    ] {
        assert!(
            req.get(field).is_some_and(|v| !v.is_null()),
            "{field} missing: {req}"
        );
    }
    assert_eq!(req["requester"], "fraud-bot");
    assert_eq!(req["rule"], "bulk-card-read");
    let id = req["id"].as_str().unwrap().to_owned();
    let path = format!("/api/approvals/{id}/approve");

    // No token, a non-approver, and the requester itself may not decide.
    assert_eq!(api(&gw, "POST", &path, None, None).await.0, 401);
    let eve = gw.token("eve", &["dba"]);
    assert_eq!(api(&gw, "POST", &path, Some(&eve), None).await.0, 403);
    let self_approver = gw.token("fraud-bot", &["security"]);
    assert_eq!(
        api(&gw, "POST", &path, Some(&self_approver), None).await.0,
        403
    );

    let (status, body) = api(
        &gw,
        "POST",
        &path,
        Some(&alice),
        Some(serde_json::json!({"reason": "case 42"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        held.await.unwrap().unwrap(),
        3,
        "the approved statement returns its rows"
    );
    // Deciding again is a conflict.
    assert_eq!(api(&gw, "POST", &path, Some(&alice), None).await.0, 409);

    let recs = gw.export();
    let approved = recs
        .iter()
        .find(|r| r["kind"] == "approval" && r["detail"]["event"] == "approved")
        .expect("approval decision recorded");
    assert_eq!(approved["subject"], "alice");
    assert_eq!(approved["detail"]["reason"], "case 42");
    assert!(
        recs.iter()
            .any(|r| r["kind"] == "approval" && r["detail"]["event"] == "requested")
    );
    let out = gw.cli(&["audit", "verify"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[tokio::test]
async fn deny_through_the_cli_and_timeout_give_clear_errors() {
    let gw = Gateway::builder().extra(RULES).start();
    let bot = gw.token("fraud-bot", &["fraud-bots"]);
    let alice = gw.token("alice", &["security"]);
    let c = gw.connect("payments", &bot).await;
    let held = tokio::spawn(async move {
        let r = c.simple_query(HELD).await;
        (r.map(|m| row_count(&m)), c)
    });
    let req = pending_approval(&gw, &alice).await;
    let id = req["id"].as_str().unwrap().to_owned();
    let out = std::process::Command::new(bin())
        .args(["approvals", "deny", &id, "--reason", "not today", "-c"])
        .arg(&gw.config)
        .env("GATEHOUSE_TOKEN", &alice)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (res, c) = held.await.unwrap();
    let e = res.unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("42501"));
    assert!(
        db_message(&e).contains("approval denied by alice: not today"),
        "{}",
        db_message(&e)
    );
    // The session stays usable.
    c.simple_query("SELECT 1").await.unwrap();

    // Nobody decides: the gateway enforces the timeout.
    let started = std::time::Instant::now();
    let e = c.simple_query(HELD).await.unwrap_err();
    assert!(
        db_message(&e).contains("approval timed out after 3s"),
        "{}",
        db_message(&e)
    );
    assert!(started.elapsed() >= Duration::from_secs(3));
    let (status, list) = api(
        &gw,
        "GET",
        "/api/approvals?status=expired",
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(list.as_array().map(Vec::len), Some(1));
    c.simple_query("SELECT 1").await.unwrap();

    // The CLI lists what an approver may decide.
    let out = std::process::Command::new(bin())
        .args(["approvals", "list", "--status", "all", "-c"])
        .arg(&gw.config)
        .env("GATEHOUSE_TOKEN", &alice)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("denied") && text.contains("expired"),
        "{text}"
    );
}

#[tokio::test]
async fn extended_protocol_waits_in_order() {
    let gw = Gateway::builder().extra(RULES).start();
    let bot = gw.token("fraud-bot", &["fraud-bots"]);
    let alice = gw.token("alice", &["security"]);
    let c = std::sync::Arc::new(gw.connect("payments", &bot).await);
    let (c1, c2) = (c.clone(), c.clone());
    // The held query first, then one that needs no approval.
    let first = tokio::spawn(async move { c1.query(HELD, &[]).await.map(|r| r.len()) });
    // Once the first is held, the second is sent on the same connection behind it.
    let req = pending_approval(&gw, &alice).await;
    let second = tokio::spawn(async move {
        c2.query_one("SELECT 7", &[])
            .await
            .map(|r| r.get::<_, i32>(0))
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !second.is_finished(),
        "a later statement must wait behind the held one"
    );
    let path = format!("/api/approvals/{}/approve", req["id"].as_str().unwrap());
    assert_eq!(api(&gw, "POST", &path, Some(&alice), None).await.0, 200);
    assert_eq!(first.await.unwrap().unwrap(), 3);
    assert_eq!(second.await.unwrap().unwrap(), 7);
}

const QUORUM_RULES: &str = r#"
[[rule]]
name = "bulk-card-read"
connections = ["*"]
groups = ["fraud-bots"]
reads = ["public.payments.card_number"]
without_limit = true
action = "approve"
approvers = ["security"]
min_approvals = 2
timeout = "20s"
"#;

/// Polls the export until a record matches.
async fn wait_record(gw: &Gateway, pred: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..100 {
        if let Some(r) = gw.export().into_iter().find(|r| pred(r)) {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no matching record appeared; log: {}", gw.log_text());
}

#[tokio::test]
async fn a_quorum_of_two_distinct_approvers_and_list_filters() {
    let gw = Gateway::builder().extra(QUORUM_RULES).start();
    let bot = gw.token("fraud-bot", &["fraud-bots"]);
    let alice = gw.token("alice", &["security"]);
    let carol = gw.token("carol", &["security"]);
    let c = gw.connect("payments", &bot).await;
    // The justification comes from a session setting the gateway reads.
    c.simple_query("SET gatehouse.reason = 'chargeback case 7'")
        .await
        .unwrap();
    let held = tokio::spawn(async move { c.simple_query(HELD).await.map(|m| row_count(&m)) });
    let req = pending_approval(&gw, &alice).await;
    assert_eq!(req["reason"], "chargeback case 7", "{req}");
    assert_eq!(req["min_approvals"], 2, "{req}");
    let id = req["id"].as_str().unwrap().to_owned();

    // Filters: by connection and requester; a non-matching one returns nothing.
    let (_, mine) = api(
        &gw,
        "GET",
        "/api/approvals?status=pending&connection=payments&requester=fraud-bot",
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(mine.as_array().map(Vec::len), Some(1), "{mine}");
    let (_, none) = api(
        &gw,
        "GET",
        "/api/approvals?requester=someone-else",
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(none.as_array().map(Vec::len), Some(0), "{none}");

    // The detail: for approvers and the requester; others 403, unknown ids 404.
    let detail = format!("/api/approvals/{id}");
    let (status, one) = api(&gw, "GET", &detail, Some(&alice), None).await;
    assert_eq!(status, 200, "{one}");
    assert_eq!(one["statement"], HELD);
    assert_eq!(one["rule"], "bulk-card-read");
    assert_eq!(api(&gw, "GET", &detail, Some(&bot), None).await.0, 200);
    let eve = gw.token("eve", &["dba"]);
    assert_eq!(api(&gw, "GET", &detail, Some(&eve), None).await.0, 403);
    assert_eq!(
        api(&gw, "GET", "/api/approvals/no-such-id", Some(&alice), None)
            .await
            .0,
        404
    );
    assert_eq!(api(&gw, "GET", &detail, None, None).await.0, 401);

    let path = format!("/api/approvals/{id}/approve");
    let (status, body) = api(&gw, "POST", &path, Some(&alice), None).await;
    assert_eq!(status, 202, "one approval is counted, not enough: {body}");
    assert_eq!(body["approvals"], 1);
    // Still held: the same approver cannot count twice.
    assert_eq!(api(&gw, "POST", &path, Some(&alice), None).await.0, 409);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !held.is_finished(),
        "one approval of two must not release it"
    );
    let (status, body) = api(&gw, "POST", &path, Some(&carol), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(held.await.unwrap().unwrap(), 3);

    let recs = gw.export();
    assert!(
        recs.iter().any(|r| r["kind"] == "approval"
            && r["detail"]["event"] == "requested"
            && r["detail"]["reason"] == "chargeback case 7"
            && r["detail"]["min_approvals"] == 2),
        "the request record carries the justification and the quorum"
    );
    assert!(recs.iter().any(|r| r["kind"] == "approval"
        && r["detail"]["event"] == "approval_counted"
        && r["subject"] == "alice"));
    assert!(recs.iter().any(|r| r["kind"] == "approval"
        && r["detail"]["event"] == "approved"
        && r["subject"] == "carol"));
}

#[tokio::test]
async fn a_client_that_leaves_abandons_its_request_and_a_restart_closes_leftovers() {
    let mut gw = Gateway::builder().extra(QUORUM_RULES).start();
    let bot = gw.token("fraud-bot", &["fraud-bots"]);
    let alice = gw.token("alice", &["security"]);

    // 1. The client disconnects while held: the request is abandoned at once.
    let mut wire = WireClient::connect(&gw, "payments", &bot).await;
    wire.send(b'Q', format!("{HELD}\0").as_bytes()).await;
    let req = pending_approval(&gw, &alice).await;
    let id = req["id"].as_str().unwrap().to_owned();
    drop(wire);
    let abandoned = wait_record(&gw, |r| {
        r["kind"] == "approval"
            && r["detail"]["event"] == "abandoned"
            && r["detail"]["approval_id"] == id.as_str()
    })
    .await;
    assert_eq!(abandoned["subject"], "fraud-bot");
    let (status, _) = api(
        &gw,
        "POST",
        &format!("/api/approvals/{id}/approve"),
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(status, 409, "an abandoned request cannot be approved");

    // 2. The gateway stops while a statement is held: after the restart the request is
    // recorded as abandoned, and the chain still verifies.
    let c = gw.connect("payments", &bot).await;
    let held = tokio::spawn(async move { c.simple_query(HELD).await.map(|m| row_count(&m)) });
    let second = loop {
        let (_, list) = api(
            &gw,
            "GET",
            "/api/approvals?status=pending",
            Some(&alice),
            None,
        )
        .await;
        if let Some(r) = list.as_array().and_then(|a| a.first()) {
            break r["id"].as_str().unwrap().to_owned();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    gw.restart();
    assert!(
        held.await.unwrap().is_err(),
        "the held client is disconnected by the stop"
    );
    let rec = wait_record(&gw, |r| {
        r["kind"] == "approval"
            && r["detail"]["event"] == "abandoned"
            && r["detail"]["approval_id"] == second.as_str()
    })
    .await;
    assert_eq!(rec["rule"], "bulk-card-read");
    let out = gw.cli(&["audit", "verify"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
