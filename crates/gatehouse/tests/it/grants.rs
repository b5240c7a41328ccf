//! Time-bound access grants: an identity outside `allow_groups` asks for access, approvers
//! decide, and the grant admits, expires and is revoked — with a real PostgreSQL and real
//! clients.

use std::time::{Duration, Instant};

use crate::support::*;
use serde_json::{Value, json};

const DEFAULT_ALLOW: &str = "allow_groups = [\"fraud-bots\", \"dba\"]";

/// `payments` is for `dba` only; `security` approves grants to it.
fn gateway(min_approvals: u32) -> Gateway {
    Gateway::builder()
        .connection("reports", "payments")
        .start_edited(|text| {
            // The first connection (payments) takes grants; the second (reports) does not.
            text.replacen(
                DEFAULT_ALLOW,
                &format!(
                    "allow_groups = [\"dba\"]\ngrant_approvers = [\"security\"]\n\
                     grant_max_duration = \"1h\"\ngrant_min_approvals = {min_approvals}"
                ),
                1,
            )
            .replacen(DEFAULT_ALLOW, "allow_groups = [\"dba\"]", 1)
        })
}

async fn request(gw: &Gateway, token: &str, duration: &str) -> String {
    let (status, g) = api(
        gw,
        "POST",
        "/api/grants",
        Some(token),
        Some(json!({"connection": "payments", "duration": duration, "reason": "incident 42"})),
    )
    .await;
    assert_eq!(status, 201, "{g}");
    assert_eq!(g["status"], "pending");
    g["id"].as_str().unwrap().to_owned()
}

async fn refused(gw: &Gateway, token: &str) {
    let Err(e) = gw.try_connect("payments", token).await else {
        panic!("connection admitted");
    };
    assert_eq!(sqlstate(&e).as_deref(), Some("28000"), "{e}");
}

/// Waits until the client's connection is closed by the gateway.
async fn closed(c: &tokio_postgres::Client) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !c.is_closed() {
        // A query notices the FATAL even if the connection task has not yet.
        let _ = c.simple_query("SELECT 1").await;
        assert!(Instant::now() < deadline, "session still open");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn grant_events(recs: &[Value], id: &str) -> Vec<String> {
    recs.iter()
        .filter(|r| r["kind"] == "grant" && r["detail"]["grant_id"] == id)
        .map(|r| r["detail"]["event"].as_str().unwrap_or("").to_owned())
        .collect()
}

#[tokio::test]
async fn grants_admit_expire_and_revoke() {
    let gw = gateway(1);
    let bob = gw.token("bob", &["contractors"]);
    let alice = gw.token("alice", &["security"]);
    let eve = gw.token("eve", &["dba"]);

    // Outside allow_groups: refused.
    refused(&gw, &bob).await;

    // Requests are validated.
    let post = |token: Option<String>, body: Value| {
        let gw = &gw;
        async move { api(gw, "POST", "/api/grants", token.as_deref(), Some(body)).await }
    };
    let ok_body = json!({"connection": "payments", "duration": "30m", "reason": "incident 42"});
    assert_eq!(post(None, ok_body.clone()).await.0, 401);
    for (body, want) in [
        (
            json!({"connection": "nope", "duration": "30m", "reason": "x"}),
            400,
        ),
        (
            json!({"connection": "payments", "duration": "soon", "reason": "x"}),
            400,
        ),
        (
            json!({"connection": "payments", "duration": "2h", "reason": "x"}),
            400,
        ),
        (
            json!({"connection": "payments", "duration": "30m", "reason": ""}),
            400,
        ),
        (json!({"connection": "payments"}), 400),
        (
            json!({"connection": "reports", "duration": "30m", "reason": "x"}),
            403,
        ),
    ] {
        let (status, b) = post(Some(bob.clone()), body.clone()).await;
        assert_eq!(status, want, "{body} -> {b}");
    }
    // Already allowed by allow_groups: nothing to grant.
    assert_eq!(post(Some(eve.clone()), ok_body.clone()).await.0, 409);

    let id = request(&gw, &bob, "30m").await;
    // One pending request per identity and connection.
    assert_eq!(post(Some(bob.clone()), ok_body.clone()).await.0, 409);
    // Pending admits nobody.
    refused(&gw, &bob).await;

    // Who sees what.
    let (status, mine) = api(&gw, "GET", "/api/grants", Some(&bob), None).await;
    assert_eq!(status, 200);
    assert_eq!(mine.as_array().map(Vec::len), Some(1), "{mine}");
    let (_, none) = api(&gw, "GET", "/api/grants", Some(&eve), None).await;
    assert_eq!(none.as_array().map(Vec::len), Some(0), "{none}");
    let (_, pending) = api(
        &gw,
        "GET",
        "/api/grants?status=pending&connection=payments",
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(pending[0]["id"], id.as_str(), "{pending}");
    assert_eq!(pending[0]["requester_groups"], json!(["contractors"]));
    let one = format!("/api/grants/{id}");
    assert_eq!(api(&gw, "GET", &one, Some(&eve), None).await.0, 403);
    assert_eq!(api(&gw, "GET", &one, Some(&bob), None).await.0, 200);
    assert_eq!(
        api(&gw, "GET", "/api/grants/nope", Some(&alice), None)
            .await
            .0,
        404
    );

    // Separation of duties.
    let approve = format!("/api/grants/{id}/approve");
    assert_eq!(api(&gw, "POST", &approve, None, None).await.0, 401);
    let self_approver = gw.token("bob", &["security"]);
    assert_eq!(
        api(&gw, "POST", &approve, Some(&self_approver), None)
            .await
            .0,
        403
    );
    assert_eq!(api(&gw, "POST", &approve, Some(&eve), None).await.0, 403);
    assert_eq!(
        api(&gw, "POST", "/api/grants/nope/approve", Some(&alice), None)
            .await
            .0,
        404
    );
    let (status, g) = api(
        &gw,
        "POST",
        &approve,
        Some(&alice),
        Some(json!({"reason": "ok for today"})),
    )
    .await;
    assert_eq!(status, 200, "{g}");
    assert_eq!(g["status"], "active");
    assert_eq!(g["decided_by"], "alice");
    assert!(g["expires_at"].is_string(), "{g}");
    assert_eq!(api(&gw, "POST", &approve, Some(&alice), None).await.0, 409);

    // Admitted as if in allow_groups.
    let c = gw.connect("payments", &bob).await;
    let rows = c.simple_query("SELECT 1").await.unwrap();
    assert!(!rows.is_empty());
    let n: i64 = c
        .query_one("SELECT count(*) FROM customers", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 2);
    // Only on that connection.
    assert!(gw.try_connect("reports", &bob).await.is_err());
    let used = gw.wait_for_record(|r| r["kind"] == "grant" && r["detail"]["event"] == "used");
    assert_eq!(used["subject"], "bob");
    assert_eq!(used["detail"]["grant_id"], id.as_str());
    let session = used["session_id"].as_str().unwrap().to_owned();
    let start = gw.wait_for_record(|r| r["kind"] == "session_start" && r["session_id"] == session);
    assert_eq!(start["detail"]["grant"], id.as_str());

    // An unrelated identity may not revoke; an approver may. Open sessions end at once.
    let revoke = format!("/api/grants/{id}/revoke");
    assert_eq!(api(&gw, "POST", &revoke, Some(&eve), None).await.0, 403);
    let (status, g) = api(
        &gw,
        "POST",
        &revoke,
        Some(&alice),
        Some(json!({"reason": "incident closed"})),
    )
    .await;
    assert_eq!(status, 200, "{g}");
    assert_eq!(g["status"], "revoked");
    assert_eq!(g["revoked_by"], "alice");
    assert_eq!(api(&gw, "POST", &revoke, Some(&alice), None).await.0, 409);
    closed(&c).await;
    refused(&gw, &bob).await;
    gw.wait_for_record(|r| {
        r["kind"] == "session_end"
            && r["session_id"] == session
            && r["detail"]["reason"] == "grant revoked"
    });

    // A short grant: works before, refused after; the expiry is recorded.
    let short = request(&gw, &bob, "2s").await;
    let (status, _) = api(
        &gw,
        "POST",
        &format!("/api/grants/{short}/approve"),
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let c2 = gw.connect("payments", &bob).await;
    c2.simple_query("SELECT 1").await.unwrap();
    // The expiry is recorded when the grant runs out; from then on bob is refused.
    let expired = gw.wait_for_record(|r| {
        r["kind"] == "grant"
            && r["detail"]["event"] == "expired"
            && r["detail"]["grant_id"] == short
    });
    refused(&gw, &bob).await;
    closed(&c2).await;
    assert_eq!(expired["outcome"], "expired");
    assert!(expired["subject"].is_null(), "{expired}");
    let (_, g) = api(
        &gw,
        "GET",
        &format!("/api/grants/{short}"),
        Some(&bob),
        None,
    )
    .await;
    assert_eq!(g["status"], "expired");

    // Every step is in the chain, and the chain verifies.
    let recs = gw.export();
    assert_eq!(
        grant_events(&recs, &id),
        ["requested", "approved", "used", "revoked"]
    );
    assert_eq!(
        grant_events(&recs, &short),
        ["requested", "approved", "used", "expired"]
    );
    let approved = recs
        .iter()
        .find(|r| r["kind"] == "grant" && r["detail"]["event"] == "approved")
        .unwrap();
    assert_eq!(approved["subject"], "alice");
    assert_eq!(approved["detail"]["reason"], "ok for today");
    assert_eq!(approved["detail"]["requester"], "bob");
    let out = gw.cli(&["audit", "verify"]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // The CLI lists them too.
    let out = std::process::Command::new(bin())
        .args(["grants", "list", "-c"])
        .arg(&gw.config)
        .env("GATEHOUSE_TOKEN", &alice)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains(&id) && text.contains("revoked") && text.contains("expired"),
        "{text}"
    );
}

#[tokio::test]
async fn grant_quorum_and_denial_through_the_cli() {
    let gw = gateway(2);
    let bob = gw.token("bob", &["contractors"]);
    let alice = gw.token("alice", &["security"]);
    let carol = gw.token("carol", &["security"]);
    let cli = |token: &str, args: &[&str]| {
        std::process::Command::new(bin())
            .args(args)
            .arg("-c")
            .arg(&gw.config)
            .env("GATEHOUSE_TOKEN", token)
            .output()
            .unwrap()
    };

    let out = cli(
        &bob,
        &[
            "grants",
            "request",
            "--connection",
            "payments",
            "--duration",
            "10m",
            "--reason",
            "month end",
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("pending"), "{text}");
    let id = text.split(':').next().unwrap().trim().to_owned();

    // One approval of two: counted, still refused.
    let approve = format!("/api/grants/{id}/approve");
    let (status, body) = api(&gw, "POST", &approve, Some(&alice), None).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["approvals"], 1);
    assert_eq!(body["min_approvals"], 2);
    refused(&gw, &bob).await;
    // The same approver again does not count.
    assert_eq!(api(&gw, "POST", &approve, Some(&alice), None).await.0, 409);
    let out = cli(&carol, &["grants", "approve", &id, "--reason", "second"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("active"));
    let c = gw.connect("payments", &bob).await;
    c.simple_query("SELECT 1").await.unwrap();

    // The requester may withdraw its own grant (CLI), the session ends.
    let out = cli(&bob, &["grants", "revoke", &id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    closed(&c).await;
    refused(&gw, &bob).await;

    // One denial decides, even after an approval.
    let (status, g) = api(
        &gw,
        "POST",
        "/api/grants",
        Some(&bob),
        Some(json!({"connection": "payments", "duration": "10m", "reason": "again"})),
    )
    .await;
    assert_eq!(status, 201);
    let id2 = g["id"].as_str().unwrap().to_owned();
    assert_eq!(
        api(
            &gw,
            "POST",
            &format!("/api/grants/{id2}/approve"),
            Some(&alice),
            None
        )
        .await
        .0,
        202
    );
    let out = cli(&carol, &["grants", "deny", &id2, "--reason", "no"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A decision on a denied grant is a conflict (the CLI exits non-zero).
    let out = cli(&carol, &["grants", "approve", &id2]);
    assert!(!out.status.success());
    refused(&gw, &bob).await;

    let recs = gw.export();
    assert_eq!(
        grant_events(&recs, &id),
        [
            "requested",
            "approval_counted",
            "approved",
            "used",
            "revoked"
        ]
    );
    assert_eq!(
        grant_events(&recs, &id2),
        ["requested", "approval_counted", "denied"]
    );
    let out = gw.cli(&["audit", "verify"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// Grants live in memory: a restart ends them, and the evidence says so (an `expired` record
/// for each grant still pending or active), so no grant is left without an end.
#[tokio::test]
async fn a_restart_ends_grants_with_a_record() {
    let mut gw = gateway(1);
    let contractor = gw.token("carol", &["contractors"]);
    let sec = gw.token("sam", &["security"]);
    let active = request(&gw, &contractor, "30m").await;
    let (status, g) = api(
        &gw,
        "POST",
        &format!("/api/grants/{active}/approve"),
        Some(&sec),
        Some(json!({"reason": "ok"})),
    )
    .await;
    assert_eq!(status, 200, "{g}");
    gw.try_connect("payments", &contractor)
        .await
        .expect("admitted while the grant is active");
    let other = gw.token("dave", &["contractors"]);
    let pending = request(&gw, &other, "30m").await;

    gw.restart();
    refused(&gw, &contractor).await;
    let recs = gw.export();
    for id in [&active, &pending] {
        let events = grant_events(&recs, id);
        assert_eq!(
            events.last().map(String::as_str),
            Some("expired"),
            "{id}: {events:?}"
        );
        let end = recs
            .iter()
            .rfind(|r| r["kind"] == "grant" && r["detail"]["grant_id"] == id.as_str())
            .unwrap();
        assert!(
            end["detail"]["why"].as_str().unwrap().contains("restarted"),
            "{end}"
        );
    }
    // Restarting again adds nothing: every grant already has its end.
    gw.restart();
    let again = gw.export();
    assert_eq!(
        grant_events(&again, &active).len(),
        grant_events(&recs, &active).len()
    );
    assert!(gw.cli(&["audit", "verify"]).status.success());
}
