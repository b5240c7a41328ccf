//! `gatehouse evidence`: the PCI DSS report's figures, checked against counts computed
//! independently from `gatehouse audit export`, after real traffic through the gateway to a
//! real PostgreSQL (allowed, masked, exempt, blocked, approved statements, DDL, an interactive
//! session, failed logins). The html and md renderings carry the same figures and no markup
//! from the store.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::*;
use serde_json::Value;

const CONFIG: &str = r#"
[[mask]]
connections = ["payments"]
columns = ["public.payments.card_number"]
detectors = ["pan"]
exempt_groups = ["pci-auditors"]

[[rule]]
name = "no-destructive"
connections = ["*"]
statements = ["drop", "truncate"]
action = "block"

[[rule]]
name = "bulk-card-read"
connections = ["*"]
groups = ["fraud-bots"]
reads = ["public.payments.card_number"]
without_limit = true
action = "approve"
approvers = ["security"]
timeout = "30s"
"#;

const HELD: &str = "SELECT card_number FROM payments ORDER BY id";
const SCRIPT: &str = "<script>alert(1)</script>";
const HOSTILE_SUBJECT: &str = "mallory<script>alert(2)</script>";

/// The harness's admin-API call, asserting a 2xx answer.
async fn api_ok(gw: &Gateway, method: &str, path: &str, token: &str, body: Option<Value>) -> Value {
    let (status, v) = api(gw, method, path, Some(token), body).await;
    assert!((200..300).contains(&status), "{method} {path}: {status}");
    v
}

fn run_evidence(gw: &Gateway, from: &str, to: &str, out: &Path, format: Option<&str>) -> String {
    let mut args = vec![
        "evidence",
        "--from",
        from,
        "--to",
        to,
        "-o",
        out.to_str().unwrap(),
    ];
    if let Some(f) = format {
        args.push("--format");
        args.push(f);
    }
    let o = gw.cli(&args);
    assert!(
        o.status.success(),
        "evidence failed: {}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    std::fs::read_to_string(out).expect("report written")
}

fn count(recs: &[Value], pred: impl Fn(&Value) -> bool) -> u64 {
    recs.iter().filter(|r| pred(r)).count() as u64
}

/// Per result column and reason, summed over the outcome records' `detail.masked`.
fn masked_totals(recs: &[Value]) -> BTreeMap<String, BTreeMap<String, u64>> {
    let mut out: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    for r in recs.iter().filter(|r| r["kind"] == "outcome") {
        if let Some(m) = r["detail"]["masked"].as_object() {
            for (col, reasons) in m {
                for (reason, n) in reasons.as_object().unwrap() {
                    *out.entry(col.clone())
                        .or_default()
                        .entry(reason.clone())
                        .or_default() += n.as_u64().unwrap();
                }
            }
        }
    }
    out
}

fn as_map(v: &Value) -> BTreeMap<String, BTreeMap<String, u64>> {
    serde_json::from_value(v.clone()).unwrap()
}

#[tokio::test]
async fn evidence_report_matches_the_audit_export() {
    // `payments` also takes time-bound grants, approved by `security`.
    // A `[[notify]]` webhook that answers 404 (the admin API has no such path): every event
    // it is sent is a webhook failure (10.7.2).
    let mut gw = Gateway::builder().extra(CONFIG).start_edited(|text| {
        let admin = text
            .lines()
            .find_map(|l| l.strip_prefix("admin = \""))
            .and_then(|l| l.strip_suffix('"'))
            .unwrap()
            .to_owned();
        text.replacen(
            "allow_groups = [\"fraud-bots\", \"dba\"]",
            "allow_groups = [\"fraud-bots\", \"dba\"]\ngrant_approvers = [\"security\"]",
            1,
        )
        .replacen(
            "admin_groups = [\"gatehouse-admins\"]",
            "admin_groups = [\"gatehouse-admins\"]\nservice_groups = [\"fraud-bots\"]",
            1,
        ) + &format!("\n[[notify]]\nurl = \"http://{admin}/no-such-hook\"\nevents = [\"approval.requested\"]\n")
    });
    let analyst = gw.token("analyst", &["dba"]);
    let auditor = gw.token("auditor", &["dba", "pci-auditors"]);
    let bot = gw.token("fraud-bot", &["fraud-bots"]);
    let alice = gw.token("alice", &["security"]);
    let mallory = gw.token(HOSTILE_SUBJECT, &["dba"]);
    let outsider = gw.token("eve", &["nobody"]);
    let contractor = gw.token("bob", &["contractors"]);
    let admin = gw.token("root-admin", &["gatehouse-admins"]);

    // Allowed and masked statements (column rule, verification code, content detector).
    let c = gw.connect("payments", &analyst).await;
    c.simple_query("SELECT count(*) FROM customers")
        .await
        .unwrap();
    c.simple_query("SELECT id, card_number, cvv FROM payments ORDER BY id LIMIT 10")
        .await
        .unwrap();
    c.simple_query("SELECT 'paid with 4111 1111 1111 1111' AS note")
        .await
        .unwrap();
    // An administrative statement (DDL) that is allowed.
    c.simple_query("CREATE TABLE evidence_ddl_probe (id int)")
        .await
        .unwrap();
    // Blocked, with markup in the statement text.
    let e = c
        .simple_query(&format!("DROP TABLE \"{SCRIPT}\""))
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("42501"));
    drop(c);

    // An exempt identity sees clear values (recorded as unmasked_for).
    let c = gw.connect("payments", &auditor).await;
    c.simple_query("SELECT card_number FROM payments ORDER BY id LIMIT 10")
        .await
        .unwrap();
    drop(c);

    // An identity whose subject carries markup.
    let c = gw.connect("payments", &mallory).await;
    c.simple_query("SELECT 1").await.unwrap();
    drop(c);

    // An interactive session, and the bot (a service identity: identity.service_groups) used
    // interactively (8.6.1).
    for (user, token, sql) in [
        ("agent", &analyst, "SELECT 2"),
        ("fraud-bot", &bot, "SELECT 3"),
    ] {
        let (c, conn) = tokio_postgres::connect(
            &format!(
                "{} application_name=psql",
                gw.conn_str("payments", user, token)
            ),
            tokio_postgres::NoTls,
        )
        .await
        .unwrap();
        tokio::spawn(async move {
            let _ = conn.await;
        });
        c.simple_query(sql).await.unwrap();
        drop(c);
    }

    // A statement held for approval and approved.
    let c = gw.connect("payments", &bot).await;
    let held = tokio::spawn(async move {
        let r = c.simple_query(HELD).await.map(|m| m.len());
        drop(c);
        r
    });
    let req = pending_approval(&gw, &alice).await;
    let id = req["id"].as_str().unwrap().to_owned();
    api_ok(
        &gw,
        "POST",
        &format!("/api/approvals/{id}/approve"),
        &alice,
        Some(serde_json::json!({"reason": "case 42"})),
    )
    .await;
    held.await.unwrap().expect("approved statement runs");

    // A time-bound grant: requested, approved, used, revoked.
    let grant = api_ok(
        &gw,
        "POST",
        "/api/grants",
        &contractor,
        Some(serde_json::json!({"connection": "payments", "duration": "30m", "reason": "incident 7"})),
    )
    .await;
    let grant_id = grant["id"].as_str().unwrap().to_owned();
    api_ok(
        &gw,
        "POST",
        &format!("/api/grants/{grant_id}/approve"),
        &alice,
        Some(serde_json::json!({"reason": "ok for today"})),
    )
    .await;
    let c = gw.connect("payments", &contractor).await;
    c.simple_query("SELECT 3").await.unwrap();
    drop(c);
    api_ok(
        &gw,
        "POST",
        &format!("/api/grants/{grant_id}/revoke"),
        &alice,
        Some(serde_json::json!({"reason": "done"})),
    )
    .await;

    // A read of the audit logs through the admin API (10.2.1.3).
    api_ok(&gw, "GET", "/api/sessions", &admin, None).await;

    // Failed logins: bad tokens and an identity not allowed on the connection.
    for _ in 0..2 {
        assert!(gw.try_connect("payments", "not-a-token").await.is_err());
    }
    assert!(gw.try_connect("payments", &outsider).await.is_err());

    // Every session has ended and every outcome is recorded.
    let deadline = Instant::now() + Duration::from_secs(20);
    let recs = loop {
        let recs = gw.export();
        let starts = count(&recs, |r| r["kind"] == "session_start");
        let ends = count(&recs, |r| r["kind"] == "session_end");
        let statements = count(&recs, |r| {
            r["kind"] == "statement" && r["outcome"].is_null()
        });
        let outcomes = count(&recs, |r| r["kind"] == "outcome");
        let webhook_failed = count(&recs, |r| r["detail"]["event"] == "notify_failed");
        if starts == 7 && ends == starts && outcomes >= statements && webhook_failed == 1 {
            break recs;
        }
        assert!(
            Instant::now() < deadline,
            "records did not settle: {starts} starts, {ends} ends, {statements} statements, {outcomes} outcomes"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // The report is made from the store alone: the gateway is stopped, so the figures are
    // compared with a store that no longer changes (the evidence runs themselves are chained
    // at the next start: audit_access.rs).
    gw.stop();
    let recs = {
        let after = gw.export();
        assert_eq!(after[..recs.len()], recs[..], "stopping rewrote records");
        after
    };
    let first_day = recs.first().unwrap()["time"].as_str().unwrap()[..10].to_owned();
    let last_day = recs.last().unwrap()["time"].as_str().unwrap()[..10].to_owned();
    let dir = tempfile::tempdir().unwrap();

    // --- JSON: every figure against the export ---
    let json_path = dir.path().join("evidence.json");
    let text = run_evidence(&gw, &first_day, &last_day, &json_path, Some("json"));
    let rep: Value = serde_json::from_str(&text).expect("json report");
    assert_eq!(
        gw.export(),
        recs,
        "the evidence run must not write to the store"
    );

    assert_eq!(rep["report"]["records_in_period"], recs.len() as u64);
    assert_eq!(rep["report"]["records_in_store"], recs.len() as u64);

    // 10.2.1.4
    let failed: Vec<&Value> = recs
        .iter()
        .filter(|r| r["kind"] == "login_failed")
        .collect();
    assert_eq!(failed.len(), 3);
    let inv = &rep["invalid_access_attempts"];
    assert_eq!(inv["login_failed"], failed.len() as u64);
    let mut by_reason: BTreeMap<String, u64> = BTreeMap::new();
    for r in &failed {
        *by_reason
            .entry(r["detail"]["reason"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    assert_eq!(
        serde_json::from_value::<BTreeMap<String, u64>>(inv["by_reason"].clone()).unwrap(),
        by_reason
    );
    assert_eq!(inv["by_subject"]["eve"], 1);

    // 10.7.2
    let blocked = count(&recs, |r| {
        r["kind"] == "statement" && r["outcome"] == "blocked"
    });
    assert_eq!(blocked, 1);
    let cf = &rep["control_failures"];
    assert_eq!(cf["blocked_statements"], blocked);
    assert_eq!(cf["blocked_by_rule"]["no-destructive"], 1);
    assert!(
        cf["blocked"]["items"][0]["statement"]
            .as_str()
            .unwrap()
            .contains(SCRIPT)
    );
    assert_eq!(
        cf["fail_closed_refusals"],
        count(&recs, |r| r["sqlstate"] == "58000")
    );
    let failed_hooks: Vec<&Value> = recs
        .iter()
        .filter(|r| r["kind"] == "admin" && r["detail"]["event"] == "notify_failed")
        .collect();
    assert_eq!(failed_hooks.len(), 1);
    assert_eq!(
        failed_hooks[0]["detail"]["notify_event"],
        "approval.requested"
    );
    assert_eq!(failed_hooks[0]["detail"]["error"], "HTTP 404");
    assert_eq!(cf["webhook_failures"], 1);
    assert_eq!(
        cf["webhook_failures_by_target"].as_object().unwrap().len(),
        1
    );
    assert_eq!(
        cf["audit_control_alerts"].as_object().unwrap().len() as u64,
        count(&recs, |r| r["detail"]["event"] == "control_failure")
    );

    // 10.2.1.3: the API read of the sessions.
    let reads = count(&recs, |r| {
        r["kind"] == "admin" && r["detail"]["event"] == "audit_read"
    });
    assert_eq!(reads, 1);
    let la = &rep["audit_log_access"];
    assert_eq!(la["reads"], reads);
    assert_eq!(la["by_subject"]["root-admin"], 1);
    assert_eq!(la["by_kind"]["api:sessions"], 1);

    // 3.4.1 and 10.2.1.1: masked totals per column and reason.
    let masked = masked_totals(&recs);
    assert!(
        masked
            .get("card_number")
            .and_then(|m| m.get("column"))
            .is_some_and(|n| *n > 0),
        "{masked:?}"
    );
    assert!(
        masked
            .get("note")
            .and_then(|m| m.get("pan"))
            .is_some_and(|n| *n > 0),
        "{masked:?}"
    );
    assert_eq!(as_map(&rep["masking"]["by_column"]), masked);
    assert_eq!(
        as_map(&rep["access_to_cardholder_data"]["masked_by_column"]),
        masked
    );
    let masked_total: u64 = masked.values().flat_map(|m| m.values()).sum();
    assert_eq!(rep["masking"]["masked_values"], masked_total);
    let with_masking = count(&recs, |r| {
        r["kind"] == "outcome"
            && r["detail"]["masked"]
                .as_object()
                .is_some_and(|m| !m.is_empty())
    });
    assert_eq!(rep["masking"]["outcome_records_with_masking"], with_masking);
    let exempt = count(&recs, |r| {
        r["kind"] == "outcome" && !r["detail"]["unmasked_for"].is_null()
    });
    assert!(exempt >= 1);
    assert_eq!(rep["masking"]["exempt_statements"], exempt);
    assert_eq!(rep["masking"]["exemptions"][0]["subject"], "auditor");
    assert_eq!(rep["masking"]["exemptions"][0]["statements"], exempt);
    assert_eq!(
        rep["masking"]["exemptions"][0]["rules"][0],
        "[[mask]] #1 (public.payments.card_number, pan)"
    );
    let auditor_access = rep["access_to_cardholder_data"]["identities"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["subject"] == "auditor")
        .expect("the exempt identity is listed under access to cardholder data");
    assert_eq!(auditor_access["unmasked_results"], exempt);
    let sensitive = count(&recs, |r| {
        r["kind"] == "statement"
            && r["detail"]["tables"]
                .as_array()
                .is_some_and(|t| t.iter().any(|t| t == "public.payments" || t == "payments"))
    });
    assert!(sensitive >= 3);
    assert_eq!(
        rep["access_to_cardholder_data"]["statements_touching_sensitive_tables"],
        sensitive
    );

    // 10.2.1.2
    let ddl = count(&recs, |r| {
        r["kind"] == "statement"
            && r["detail"]["kinds"]
                .as_array()
                .is_some_and(|k| k.iter().any(|k| k == "create" || k == "drop"))
    });
    assert_eq!(ddl, 2, "the CREATE TABLE and the blocked DROP");
    let ad = &rep["administrative_actions"];
    assert_eq!(ad["admin_statements"]["total"], ddl);
    assert_eq!(
        ad["gateway_admin_records"]["total"],
        count(&recs, |r| {
            ["approval", "admin", "grant", "decision"].contains(&r["kind"].as_str().unwrap())
        })
    );
    let interactive = count(&recs, |r| {
        r["kind"] == "session_start" && r["detail"]["application_name"] == "psql"
    });
    assert_eq!(interactive, 2);
    assert_eq!(ad["interactive_sessions"]["total"], interactive);
    let service = &ad["service_identity_interactive_sessions"];
    assert_eq!(service["total"], 1);
    assert_eq!(service["items"][0]["subject"], "fraud-bot");
    assert_eq!(service["items"][0]["application_name"], "psql");
    assert_eq!(ad["service_groups"][0], "fraud-bots");
    // Every session here was PostgreSQL's, and each statement is counted under it.
    let sessions = count(&recs, |r| r["kind"] == "session_start");
    assert_eq!(ad["sessions_by_protocol"]["postgres"], sessions, "{ad}");
    assert_eq!(
        ad["statements_by_protocol"]["postgres"],
        count(&recs, |r| r["kind"] == "statement"),
        "{ad}"
    );

    // 7.2 / 8.6.1
    let ap = &rep["approvals"];
    assert_eq!(
        ap["requests"],
        count(&recs, |r| r["kind"] == "approval"
            && r["detail"]["event"] == "requested")
    );
    assert_eq!(ap["requests"], 1);
    assert_eq!(
        ap["approved"],
        count(&recs, |r| r["kind"] == "approval"
            && r["detail"]["event"] == "approved")
    );
    assert_eq!(ap["approved"], 1);
    assert_eq!(ap["denied"], 0);
    assert_eq!(ap["self_decisions"], 0);
    assert_eq!(ap["requesters"]["fraud-bot"], 1);
    assert_eq!(ap["deciders"]["alice"], 1);
    let one = &ap["list"]["items"][0];
    assert_eq!(one["id"], id.as_str());
    assert_eq!(one["requester"], "fraud-bot");
    assert_eq!(one["decided_by"], "alice");
    assert_eq!(one["decision_reason"], "case 42");
    assert_eq!(one["status"], "approved");
    let latency = ap["latency"]["median_seconds"].as_f64().unwrap();
    assert!((0.0..30.0).contains(&latency), "{latency}");

    let gr = &rep["grants"];
    let grant_event = |ev: &str| {
        count(&recs, |r| {
            r["kind"] == "grant" && r["detail"]["event"] == ev
        })
    };
    for (field, ev) in [
        ("requests", "requested"),
        ("approved", "approved"),
        ("used", "used"),
        ("revoked", "revoked"),
    ] {
        assert_eq!(gr[field], grant_event(ev), "grants {field}");
        assert_eq!(gr[field], 1, "grants {field}");
    }
    assert_eq!(gr["self_decisions"], 0);
    let g = &gr["list"]["items"][0];
    assert_eq!(g["id"], grant_id.as_str());
    assert_eq!(g["requester"], "bob");
    assert_eq!(g["request_reason"], "incident 7");
    assert_eq!(g["decided_by"], "alice");
    assert_eq!(g["decision_reason"], "ok for today");
    assert_eq!(g["revoked_by"], "alice");
    assert_eq!(g["status"], "revoked");
    assert_eq!(g["used"], 1);
    assert_eq!(gr["latency"]["decisions"], 1);

    // 8.2.1
    let subjects: BTreeSet<&str> = recs
        .iter()
        .filter(|r| r["kind"] == "session_start")
        .map(|r| r["subject"].as_str().unwrap())
        .collect();
    assert_eq!(rep["identities"]["unique_subjects"], subjects.len() as u64);
    let listed: BTreeSet<&str> = rep["identities"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["subject"].as_str().unwrap())
        .collect();
    assert_eq!(listed, subjects);
    assert!(subjects.contains(HOSTILE_SUBJECT));

    // 10.3: the head is the last exported record.
    let last = recs.last().unwrap();
    let integrity = &rep["integrity"];
    assert_eq!(integrity["verified"], true, "{integrity}");
    assert_eq!(integrity["result"], "ok");
    assert_eq!(integrity["head_seq"], last["seq"]);
    assert_eq!(integrity["head_hash"], last["hash"]);
    assert_eq!(integrity["records"], recs.len() as u64);

    // 3.5.1
    assert_eq!(rep["pan_scan"]["pans_found"], 0);
    assert_eq!(rep["pan_scan"]["records_scanned"], recs.len() as u64);

    // 10.2.2 and 10.5.1
    assert_eq!(
        rep["record_completeness"]["records_checked"],
        recs.len() as u64
    );
    assert_eq!(rep["retention"]["retention_days"], 400);
    assert_eq!(rep["retention"]["oldest_record_seq"], recs[0]["seq"]);

    // The summary: one row per requirement, statuses following the figures.
    let summary = rep["summary"].as_array().unwrap();
    let status = |req: &str| {
        summary
            .iter()
            .find(|r| r["requirement"] == req)
            .unwrap_or_else(|| panic!("no summary row {req}"))["status"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(summary.len(), 12);
    assert_eq!(status("10.7.2"), "attention", "a webhook failed");
    assert_eq!(
        status("10.2.1.2"),
        "attention",
        "a service identity was used interactively"
    );
    assert_eq!(status("3.5.1"), "ok");
    assert_eq!(status("10.3"), "ok");
    assert_eq!(status("10.2.1.4"), "attention");
    assert_eq!(status("3.4.1"), "attention", "an exemption was used");
    assert_eq!(status("10.5.1"), "ok");

    // A period without records: nothing counted, integrity still over the whole store.
    let empty = run_evidence(
        &gw,
        "2000-01-01",
        "2000-01-02",
        &dir.path().join("empty.json"),
        None,
    );
    let empty: Value = serde_json::from_str(&empty).unwrap();
    assert_eq!(empty["report"]["records_in_period"], 0);
    assert_eq!(empty["invalid_access_attempts"]["login_failed"], 0);
    assert_eq!(empty["integrity"]["head_seq"], last["seq"]);

    // --- HTML: one self-contained file, same figures, nothing from the store as markup ---
    let html_path = dir.path().join("evidence.html");
    let html = run_evidence(&gw, &first_day, &last_day, &html_path, None);
    let no_ext = dir.path().join("evidence-report");
    let default_html = run_evidence(&gw, &first_day, &last_day, &no_ext, None);
    assert!(default_html.starts_with("<!DOCTYPE html>"));
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(html.contains("<table class=\"summary\">"));
    let lower = html.to_lowercase();
    for forbidden in [
        "<script", "<link", "<img", "<iframe", "http://", "https://", "@import",
    ] {
        assert!(!lower.contains(forbidden), "html contains {forbidden}");
    }
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(html.contains("mallory&lt;script&gt;alert(2)&lt;/script&gt;"));
    let key_figures = [
        format!("{} failed logins", failed.len()),
        format!("head seq {}", last["seq"]),
        last["hash"].as_str().unwrap().to_owned(),
        "0 PANs found".to_owned(),
        format!("{blocked} statements blocked by rules"),
        "1 webhook failures".to_owned(),
        format!("{masked_total} values masked"),
    ];
    for req in [
        "10.2.1.1",
        "10.2.1.2",
        "10.2.1.3",
        "10.2.1.4",
        "10.2.2",
        "3.4.1",
        "3.5.1",
        "7.2 / 8.6.1",
        "8.2.1",
        "10.3",
        "10.5.1",
        "10.7.2",
    ] {
        assert!(html.contains(&format!(">{req}<")), "html lacks {req}");
    }
    for f in &key_figures {
        assert!(html.contains(f.as_str()), "html lacks {f:?}");
    }

    // --- Markdown ---
    let md_path = dir.path().join("evidence.md");
    let md = run_evidence(&gw, &first_day, &last_day, &md_path, None);
    assert!(md.contains("## Summary"));
    assert!(md.contains("| Requirement | Evidence | Figure | Status |"));
    assert!(!md.to_lowercase().contains("<script"));
    for f in &key_figures {
        assert!(md.contains(f.as_str()), "md lacks {f:?}");
    }
    for req in ["10.2.1.4", "3.5.1", "10.3", "10.7.2"] {
        assert!(md.contains(req), "md lacks {req}");
    }

    // Rendered by a real browser when one is installed.
    match std::process::Command::new("chromium")
        .arg("--version")
        .output()
    {
        Ok(o) if o.status.success() => {
            let out = std::process::Command::new("chromium")
                .args(["--headless", "--no-sandbox", "--disable-gpu", "--dump-dom"])
                .arg(format!("file://{}", html_path.display()))
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "chromium: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let dom = String::from_utf8_lossy(&out.stdout);
            assert!(dom.contains("Summary"));
            assert!(!dom.to_lowercase().contains("<script"));
        }
        _ => println!("note: chromium is not on PATH; the headless rendering check is skipped"),
    }

    // Bad input: a clear error, exit 2.
    let o = gw.cli(&[
        "evidence",
        "--from",
        "2026-02-01",
        "--to",
        "2026-01-01",
        "-o",
        dir.path().join("x.html").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("after --to"));

    // A modified record: the report is still written, says so, and the exit status is 1.
    gatehouse_store::SqliteStore::open(&gw.store_url())
        .unwrap()
        .execute_raw("UPDATE audit_records SET statement = 'SELECT 0' WHERE seq = 3")
        .unwrap();
    let tampered = dir.path().join("tampered.json");
    let o = gw.cli(&[
        "evidence",
        "--from",
        &first_day,
        "--to",
        &last_day,
        "-o",
        tampered.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    let rep: Value = serde_json::from_str(&std::fs::read_to_string(&tampered).unwrap()).unwrap();
    assert_eq!(rep["integrity"]["verified"], false);
    assert!(
        rep["integrity"]["result"]
            .as_str()
            .unwrap()
            .contains("record 3"),
        "{}",
        rep["integrity"]
    );
    let row = rep["summary"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["requirement"] == "10.3")
        .unwrap();
    assert_eq!(row["status"], "attention");

    // Each evidence run above read the audit logs (10.2.1.3): chained at the next start, with
    // its period, output and result.
    gw.restart();
    let deadline = Instant::now() + Duration::from_secs(20);
    let runs = loop {
        let runs: Vec<Value> = gw
            .export()
            .into_iter()
            .filter(|r| r["detail"]["event"] == "audit_read" && r["detail"]["what"] == "evidence")
            .collect();
        if runs.len() >= 7 || Instant::now() > deadline {
            break runs;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let results: Vec<&str> = runs
        .iter()
        .map(|r| r["detail"]["result"].as_str().unwrap())
        .collect();
    assert_eq!(
        results,
        ["ok", "ok", "ok", "ok", "ok", "error", "failed"],
        "{runs:#?}"
    );
    assert_eq!(
        runs[0]["detail"]["args"]["output"],
        json_path.to_str().unwrap()
    );
    assert_eq!(runs[0]["detail"]["args"]["format"], "json");
    assert_eq!(runs[0]["detail"]["args"]["from"], first_day.as_str());
}
