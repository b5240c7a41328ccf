//! The evidence report built through the library, from a store written by the real audit
//! writer: no gateway process, no PostgreSQL. The records carry the typed details the gateway
//! writes (and a CLI read goes through the drop box and its ingestion), so every figure that
//! reads `detail.event` is exercised through the same shapes as in production.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::path::Path;

use gatehouse_core::audit::detail::{
    ApprovalDecided, ApprovalEnded, ApprovalRequested, AuditRead, ControlAlertsMissed,
    ControlFailure, Detail, DetailEvent, GrantUsed, LoginFailed, NotifyFailed, RetentionPurged,
    SessionEnded, SessionStarted, StatementOutcomeDetail, UnmaskedFor,
};
use gatehouse_core::audit::{
    AuditEvent, Auditor, CheckpointSigner, Outcome, RecordKind, WriterOptions, spawn_writer,
};
use gatehouse_core::config::Config;
use gatehouse_ops::audit_access::{self, AccessLog, ReadResult};
use gatehouse_ops::evidence::{self, Format, Period, Status};
use gatehouse_store::SqliteStore;
use serde_json::{Value, json};

const CONFIG: &str = r#"
data_dir = "./data"

[identity]
local_issuer = true
service_groups = ["bots"]

[audit]
retention_days = 400

[[connection]]
name = "payments"
upstream = "127.0.0.1:5432"
database = "payments"
user = "svc"
password_env = "UNUSED_PASSWORD"
upstream_tls = "disable"
allow_groups = ["dba", "bots"]

[[mask]]
connections = ["payments"]
columns = ["public.payments.card_number"]
detectors = ["pan"]
exempt_groups = ["auditors"]
"#;

/// A card number that must never come out of the report.
const PAN: &str = "4111111111111111";

fn event(kind: RecordKind, session: &str, subject: Option<&str>) -> AuditEvent {
    let mut ev = AuditEvent::new(kind, session);
    ev.subject = subject.map(str::to_owned);
    ev.connection = Some("payments".into());
    ev
}

fn session_start(
    session: &str,
    subject: Option<&str>,
    groups: &[&str],
    app: Option<&str>,
    grant: Option<&str>,
) -> AuditEvent {
    let mut ev = event(RecordKind::SessionStart, session, subject);
    ev.groups = groups.iter().map(|g| (*g).to_owned()).collect();
    ev.issuer = Some("gatehouse-local".into());
    ev.client_addr = Some("10.0.0.1:5000".into());
    ev.with_detail(
        SessionStarted {
            tls: true,
            application_name: app.map(str::to_owned),
            client_user: subject.map(str::to_owned),
            grant: grant.map(str::to_owned),
            protocol: "postgres",
            adapter: serde_json::Map::new(),
        }
        .to_value(),
    )
}

fn statement(session: &str, text: &str, kinds: &[&str], tables: &[&str]) -> AuditEvent {
    let mut ev = event(RecordKind::Statement, session, Some("ann"));
    ev.client_addr = Some("10.0.0.1:5000".into());
    ev.statement = Some(text.to_owned());
    ev.outcome = Some(Outcome::Ok);
    ev.with_detail(json!({ "kinds": kinds, "tables": tables }))
}

fn admin(subject: &str, detail: Value) -> AuditEvent {
    let mut ev = AuditEvent::new(RecordKind::Admin, String::new());
    ev.subject = Some(subject.to_owned());
    ev.with_detail(detail)
}

/// Every kind of record the report reads, in the order a gateway would write them.
fn records() -> Vec<AuditEvent> {
    let mut recs = vec![
        session_start("s1", Some("ann"), &["dba"], Some("psql"), None),
        session_start("s2", Some("bot"), &["bots"], Some("psql 16"), Some("g1")),
        session_start("s3", None, &[], None, None),
        statement(
            "s1",
            &format!("SELECT card_number FROM payments WHERE card_number = '{PAN}'"),
            &["select"],
            &["public.payments"],
        ),
    ];
    let mut blocked = statement(
        "s1",
        "DROP TABLE audit_copy",
        &["drop"],
        &["public.audit_copy"],
    );
    blocked.outcome = Some(Outcome::Blocked);
    blocked.rule = Some("no-destructive".into());
    recs.push(blocked);
    let mut refused = statement("s1", "INSERT INTO t VALUES (1)", &["insert"], &["public.t"]);
    refused.outcome = Some(Outcome::Error);
    refused.sqlstate = Some("58000".into());
    recs.push(refused);
    let mut masked = event(RecordKind::Outcome, "s1", Some("ann"));
    masked.client_addr = Some("10.0.0.1:5000".into());
    masked.outcome = Some(Outcome::Ok);
    masked.statement_seq = Some(4);
    recs.push(
        masked.with_detail(
            StatementOutcomeDetail {
                result_rows: 2,
                result_bytes: 40,
                skipped: false,
                session_ended_before_completion: true,
                masked: Some(json!({"card_number": {"column": 2}})),
                unmasked_for: None,
                results: None,
            }
            .to_value(),
        ),
    );
    let mut exempt = event(RecordKind::Outcome, "s2", Some("bot"));
    exempt.client_addr = Some("10.0.0.1:5001".into());
    exempt.outcome = Some(Outcome::Ok);
    recs.push(
        exempt.with_detail(
            StatementOutcomeDetail {
                result_rows: 1,
                result_bytes: 20,
                skipped: false,
                session_ended_before_completion: false,
                masked: None,
                unmasked_for: Some(UnmaskedFor {
                    subject: "bot".into(),
                    groups: vec!["auditors".into()],
                    rules: vec![1],
                }),
                results: None,
            }
            .to_value(),
        ),
    );
    let mut failed = AuditEvent::new(RecordKind::LoginFailed, "s4");
    failed.subject = Some("eve".into());
    failed.client_addr = Some("10.0.0.9:4000".into());
    failed.connection = Some("payments".into());
    failed.outcome = Some(Outcome::Error);
    failed.sqlstate = Some("28P01".into());
    recs.push(
        failed.with_detail(
            LoginFailed {
                reason: "expired".into(),
                client_user: Some("eve".into()),
                application_name: None,
                error: None,
            }
            .to_value(),
        ),
    );
    // A held statement approved by someone else, and one that expired.
    for (id, decision) in [("a1", Some("bob")), ("a2", None)] {
        let mut req = event(RecordKind::Approval, "s1", Some("ann"));
        req.client_addr = Some("10.0.0.1:5000".into());
        req.rule = Some("bulk-card-read".into());
        req.statement = Some("COPY payments TO STDOUT".into());
        recs.push(
            req.with_detail(
                ApprovalRequested {
                    event: DetailEvent::Requested,
                    approval_id: id.into(),
                    approvers: vec!["security".into()],
                    reason: Some("case 7".into()),
                    min_approvals: 1,
                }
                .to_value(),
            ),
        );
        let ended = match decision {
            Some(by) => {
                let mut ev = event(RecordKind::Approval, "s1", Some(by));
                ev.rule = Some("bulk-card-read".into());
                ev.outcome = Some(Outcome::Ok);
                ev.with_detail(
                    ApprovalDecided {
                        event: DetailEvent::Approved,
                        approval_id: id.into(),
                        requester: "ann".into(),
                        reason: Some("looks fine".into()),
                        approvals: 1,
                        min_approvals: 1,
                    }
                    .to_value(),
                )
            }
            None => {
                let mut ev = event(RecordKind::Approval, "s1", None);
                ev.outcome = Some(Outcome::Expired);
                ev.with_detail(
                    ApprovalEnded {
                        event: DetailEvent::Expired,
                        approval_id: id.into(),
                        why: None,
                    }
                    .to_value(),
                )
            }
        };
        recs.push(ended);
    }
    // An access grant: requested by the bot, approved, used once, revoked by the bot.
    let grant = |event_name: DetailEvent, subject: &str, reason: Option<&str>| {
        let mut ev = event(RecordKind::Grant, "g1", Some(subject));
        ev.outcome = match event_name {
            DetailEvent::Approved => Some(Outcome::Ok),
            DetailEvent::Revoked => Some(Outcome::Denied),
            _ => None,
        };
        ev.with_detail(json!({
            "event": event_name,
            "grant_id": "g1",
            "requester": "bot",
            "request_reason": "nightly reconciliation",
            "reason": reason,
        }))
    };
    recs.push(grant(DetailEvent::Requested, "bot", None));
    recs.push(grant(DetailEvent::Approved, "bob", Some("ok for tonight")));
    recs.push(
        event(RecordKind::Grant, "s2", Some("bot")).with_detail(
            GrantUsed {
                event: DetailEvent::Used,
                grant_id: "g1".into(),
                requester: "bot".into(),
                expires_at: "2999-01-01T00:00:00.000000Z".into(),
            }
            .to_value(),
        ),
    );
    recs.push(grant(DetailEvent::Revoked, "bot", Some("done")));
    // The audit control itself.
    recs.push(admin(
        "alice",
        AuditRead {
            event: DetailEvent::AuditRead,
            what: "sessions".into(),
            target: None,
        }
        .to_value(),
    ));
    recs.push(admin(
        "gatehouse",
        ControlFailure {
            event: DetailEvent::ControlFailure,
            alert: "audit.write_failed".into(),
            count: 3,
            records: 9,
            first_at: "2026-01-01T00:00:00.000000Z".into(),
            last_at: "2026-01-01T00:00:05.000000Z".into(),
            error: "disk I/O error".into(),
        }
        .to_value(),
    ));
    recs.push(admin(
        "gatehouse",
        ControlAlertsMissed {
            event: DetailEvent::ControlFailure,
            alert: "alerts_missed".into(),
            count: 2,
        }
        .to_value(),
    ));
    recs.push(admin(
        "gatehouse",
        NotifyFailed {
            event: DetailEvent::NotifyFailed,
            notify: "chat".into(),
            url: "https://hooks.example:443".into(),
            notify_event: "approval.requested".into(),
            request_id: "a1".into(),
            attempts: 5,
            error: "HTTP 500".into(),
        }
        .to_value(),
    ));
    recs.push(admin(
        "gatehouse",
        RetentionPurged {
            event: DetailEvent::RetentionPurge,
            deleted_through_seq: 0,
            records: 0,
            anchor_seq: 0,
            retention_days: 400,
            cutoff: "2025-01-01T00:00:00.000000Z".into(),
        }
        .to_value(),
    ));
    let mut end = event(RecordKind::SessionEnd, "s1", Some("ann"));
    end.client_addr = Some("10.0.0.1:5000".into());
    recs.push(
        end.with_detail(
            SessionEnded {
                reason: "client terminated".into(),
            }
            .to_value(),
        ),
    );
    recs
}

/// Writes the records through the audit writer, then a CLI read through the drop box and its
/// ingestion, and stops the writer (which seals the chain with a checkpoint).
async fn write_store(cfg: &Config) {
    std::fs::create_dir_all(&cfg.data_dir).unwrap();
    let store = SqliteStore::open(&cfg.store.url).unwrap();
    let signer = CheckpointSigner::load_or_create(&cfg.data_dir).unwrap();
    let mut opts = WriterOptions::new(store.journal_dir());
    opts.checkpoint_every = 5;
    let (auditor, done) = spawn_writer(store.writer().unwrap(), signer, opts).unwrap();
    record_all(&auditor, records()).await;
    let log = AccessLog::open(&cfg.data_dir).unwrap();
    log.record("export", json!({"format": "jsonl"}), &ReadResult::Ok)
        .unwrap();
    assert_eq!(
        audit_access::ingest(&cfg.data_dir, &auditor).await.unwrap(),
        1
    );
    auditor.flush().await.unwrap();
    drop(auditor);
    done.wait().await;
}

async fn record_all(auditor: &Auditor, recs: Vec<AuditEvent>) {
    for ev in recs {
        auditor.record(ev).await.unwrap();
    }
}

fn config(dir: &Path) -> Config {
    Config::from_toml(CONFIG, dir).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_from_a_store_counts_every_requirement() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    write_store(&cfg).await;
    let expected_records = records().len() as u64 + 1;

    let store = SqliteStore::open_existing(&cfg.store.url).unwrap();
    let period = Period::parse("2000-01-01", "2999-12-31").unwrap();
    let report = evidence::build(&cfg, Path::new("gatehouse.toml"), &store, period).unwrap();
    let rep = serde_json::to_value(&report).unwrap();

    assert_eq!(rep["integrity"]["verified"], true, "{}", rep["integrity"]);
    assert_eq!(rep["integrity"]["records"], expected_records);
    assert_eq!(rep["report"]["records_in_period"], expected_records);
    assert_eq!(rep["report"]["config"], "gatehouse.toml");

    // 10.2.1.1 / 3.4.1
    let a = &rep["access_to_cardholder_data"];
    assert_eq!(a["statements_touching_sensitive_tables"], 1);
    assert_eq!(a["statements_by_table"]["public.payments"], 1);
    assert_eq!(a["statements_with_masked_values"], 1);
    assert_eq!(a["masked_values"], 2);
    assert_eq!(a["sessions"], 2);
    let m = &rep["masking"];
    assert_eq!(m["exempt_statements"], 1);
    assert_eq!(
        m["exemptions"][0]["rules"][0],
        "[[mask]] #1 (public.payments.card_number, pan)"
    );
    assert_eq!(m["by_reason"]["column"], 2);

    // 10.2.1.2
    let ad = &rep["administrative_actions"];
    assert_eq!(ad["admin_statements"]["total"], 1);
    assert_eq!(ad["admin_statements_by_kind"]["drop"], 1);
    assert_eq!(ad["interactive_sessions"]["total"], 2);
    assert_eq!(ad["service_identity_interactive_sessions"]["total"], 1);
    assert_eq!(
        ad["service_identity_interactive_sessions"]["items"][0]["grant"],
        "g1"
    );
    assert_eq!(ad["gateway_admin_events"]["approval:requested"], 2);
    assert_eq!(ad["gateway_admin_events"]["grant:used"], 1);
    assert_eq!(ad["gateway_admin_events"]["admin:audit_read"], 2);
    assert_eq!(ad["sessions_by_application"]["(none)"], 1);

    // 10.2.1.3: the API read and the CLI read that came through the drop box.
    let la = &rep["audit_log_access"];
    assert_eq!(la["reads"], 2);
    assert_eq!(la["by_kind"]["api:sessions"], 1);
    assert_eq!(la["by_kind"]["cli:export"], 1);
    let cli = la["list"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["via"] == "cli")
        .unwrap();
    assert_eq!(cli["target"], r#"{"format":"jsonl"}"#);
    assert_eq!(cli["result"], "ok");

    // 10.2.1.4
    let inv = &rep["invalid_access_attempts"];
    assert_eq!(inv["login_failed"], 1);
    assert_eq!(inv["by_reason"]["expired"], 1);
    assert_eq!(inv["by_subject"]["eve"], 1);
    assert_eq!(inv["by_client_address"]["10.0.0.9"], 1);

    // 10.2.2: the session without a subject is incomplete.
    let c = &rep["record_completeness"];
    assert_eq!(c["records_checked"], expected_records);
    let incomplete = c["incomplete"]["items"].as_array().unwrap();
    assert!(
        incomplete
            .iter()
            .any(|i| i["kind"] == "session_start" && i["missing"][0] == "subject"),
        "{incomplete:?}"
    );

    // 3.5.1: the number is found where it is, and never copied.
    let p = &rep["pan_scan"];
    assert_eq!(p["pans_found"], 1);
    assert_eq!(p["records"]["items"][0]["fields"][0], "statement");

    // 7.2 / 8.6.1
    let ap = &rep["approvals"];
    assert_eq!(ap["requests"], 2);
    assert_eq!(ap["approved"], 1);
    assert_eq!(ap["expired"], 1);
    assert_eq!(ap["pending"], 0);
    assert_eq!(ap["self_decisions"], 0);
    assert_eq!(ap["deciders"]["bob"], 1);
    let a1 = &ap["list"]["items"][0];
    assert_eq!(
        (a1["id"].as_str(), a1["status"].as_str()),
        (Some("a1"), Some("approved"))
    );
    assert_eq!(a1["requester"], "ann");
    assert_eq!(a1["decided_by"], "bob");
    assert_eq!(a1["approvers"], json!(["bob"]));
    assert_eq!(a1["decision_reason"], "looks fine");
    assert!(a1["latency_seconds"].is_number());
    assert_eq!(ap["list"]["items"][1]["status"], "expired");
    let g = &rep["grants"];
    assert_eq!(
        (&g["requests"], &g["approved"], &g["revoked"], &g["used"]),
        (&json!(1), &json!(1), &json!(1), &json!(1))
    );
    let g1 = &g["list"]["items"][0];
    assert_eq!(g1["status"], "revoked");
    assert_eq!(g1["requester"], "bot");
    assert_eq!(g1["request_reason"], "nightly reconciliation");
    assert_eq!(g1["revoked_by"], "bot");
    assert_eq!(g1["revoke_reason"], "done");
    assert_eq!(g1["used"], 1);

    // 8.2.1
    let id = &rep["identities"];
    assert_eq!(id["sessions"], 3);
    assert_eq!(id["sessions_without_subject"], 1);
    assert_eq!(id["unique_subjects"], 2);

    // 10.5.1
    assert_eq!(rep["retention"]["purges"], 1);
    assert_eq!(rep["retention"]["retention_days"], 400);
    assert_eq!(rep["retention"]["at_least_12_months"], true);

    // 10.7.2
    let cf = &rep["control_failures"];
    assert_eq!(cf["fail_closed_refusals"], 1);
    assert_eq!(cf["blocked_statements"], 1);
    assert_eq!(cf["blocked_by_rule"]["no-destructive"], 1);
    assert_eq!(cf["statements_cut_short"], 1);
    assert_eq!(cf["audit_control_alerts"]["audit.write_failed"], 3);
    assert_eq!(cf["audit_control_alerts"]["alerts_missed"], 2);
    assert_eq!(cf["webhook_failures"], 1);
    assert_eq!(cf["webhook_failures_by_target"]["chat"], 1);
    assert_eq!(cf["session_end_reasons"]["client terminated"], 1);

    // The summary: one row per requirement, attention where the figures call for it.
    let status = |req: &str| {
        report
            .summary
            .iter()
            .find(|r| r.requirement == req)
            .map(|r| r.status)
    };
    assert_eq!(report.summary.len(), 12);
    assert_eq!(status("10.3"), Some(Status::Ok));
    assert_eq!(status("10.2.1.3"), Some(Status::Ok));
    assert_eq!(status("10.5.1"), Some(Status::Ok));
    assert_eq!(status("10.7.2"), Some(Status::Attention));
    assert_eq!(status("3.5.1"), Some(Status::Attention));
    assert_eq!(status("8.2.1"), Some(Status::Attention));

    // Every format renders, none copies the card number.
    for format in [Format::Json, Format::Html, Format::Md] {
        let text = evidence::render(&report, format).unwrap();
        assert!(!text.contains(PAN), "{}", format.name());
        assert!(text.contains("no-destructive"), "{}", format.name());
    }
    let html = evidence::render(&report, Format::Html).unwrap();
    assert!(html.contains("<table class=\"summary\">"));
    assert!(html.contains("id=\"req-7-2-8-6-1\""));
    let md = evidence::render(&report, Format::Md).unwrap();
    assert!(md.contains("| Requirement | Evidence | Figure | Status |"));
    let out = dir.path().join("report.json");
    evidence::write_atomically(&out, b"{}\n").unwrap();
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "{}\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_store_is_reported_not_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    write_store(&cfg).await;
    SqliteStore::open(&cfg.store.url)
        .unwrap()
        .execute_raw("UPDATE audit_records SET statement = 'SELECT 1' WHERE seq = 4")
        .unwrap();
    let store = SqliteStore::open_existing(&cfg.store.url).unwrap();
    let period = Period::parse("2000-01-01", "2999-12-31").unwrap();
    let report = evidence::build(&cfg, Path::new("gatehouse.toml"), &store, period).unwrap();
    assert!(!report.integrity.verified);
    assert!(
        report.integrity.result.starts_with("record 4"),
        "{}",
        report.integrity.result
    );
    assert_eq!(
        report
            .summary
            .iter()
            .find(|r| r.requirement == "10.3")
            .map(|r| r.status),
        Some(Status::Attention)
    );
}

#[test]
fn bad_command_lines_are_typed_errors() {
    use gatehouse_ops::evidence::EvidenceError;
    assert!(matches!(
        Period::parse("2026-02-01", "2026-01-01"),
        Err(EvidenceError::EmptyPeriod { .. })
    ));
    let e = Period::parse("yesterday", "2026-01-01").unwrap_err();
    assert_eq!(
        e.to_string(),
        "--from \"yesterday\": use a date (2026-11-22) or RFC 3339 (2026-11-22T10:00:00Z)"
    );
    assert_eq!(
        Format::choose(Some("pdf"), Path::new("r"))
            .unwrap_err()
            .to_string(),
        "--format \"pdf\" is not supported (html, json, md)"
    );
}
