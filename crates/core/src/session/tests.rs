//! The session core against a real audit writer (journal in a temporary directory) and a
//! real local issuer: what each step records, and what it refuses.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::*;
use crate::approvals::{ApprovalBook, ApprovalStatus};
use crate::audit::detail::{DetailEvent, SessionStarted};
use crate::audit::{
    AuditLog, AuditRecord, Auditor, Checkpoint, CheckpointSigner, Outcome, RecordKind,
    StoreFailure, WriterOptions, spawn_writer,
};
use crate::config::Config;
use crate::grants::GrantBook;
use crate::identity::{LocalIssuer, Verifier};
use crate::masking::{MaskSet, TokenKey};
use crate::policy::Policy;

#[derive(Clone, Default)]
struct MemLog(Arc<Mutex<Vec<AuditRecord>>>);

impl AuditLog for MemLog {
    fn head(&mut self) -> Result<Option<(u64, String)>, StoreFailure> {
        let records = self.0.lock().map_err(|_| StoreFailure("poisoned".into()))?;
        Ok(records.last().map(|r| (r.seq, r.hash.clone())))
    }
    fn append(
        &mut self,
        records: &[AuditRecord],
        _: Option<&Checkpoint>,
    ) -> Result<(), StoreFailure> {
        self.0
            .lock()
            .map_err(|_| StoreFailure("poisoned".into()))?
            .extend_from_slice(records);
        Ok(())
    }
}

struct Fixture {
    gate: Arc<Gate>,
    log: MemLog,
    issuer: LocalIssuer,
    stop: tokio::sync::watch::Sender<bool>,
    _dir: tempfile::TempDir,
}

const RULES: &str = r#"
[[connection]]
name = "payments"
upstream = "127.0.0.1:1"
database = "payments"
user = "app"
allow_groups = ["agents"]

[[rule]]
name = "bulk-read"
connections = ["payments"]
statements = ["select"]
action = "approve"
approvers = ["security"]
timeout = "1s"
"#;

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "data_dir = '{}'\n[identity]\nlocal_issuer = true\n{RULES}",
        dir.path().join("data").display()
    );
    let cfg = Config::from_toml(&text, dir.path()).unwrap();
    let verifier = Verifier::from_config(&cfg).unwrap();
    let issuer = LocalIssuer::load_or_create(&cfg.data_dir).unwrap();
    let log = MemLog::default();
    let signer = CheckpointSigner::load_or_create(&cfg.data_dir).unwrap();
    let (auditor, _done) = spawn_writer(
        log.clone(),
        signer,
        WriterOptions::new(dir.path().join("journal")),
    )
    .unwrap();
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let allow_groups: HashMap<_, _> = cfg
        .connections
        .iter()
        .map(|c| (c.name.clone(), c.allow_groups.clone()))
        .collect();
    let gate = Arc::new(Gate {
        verifier,
        auditor,
        allow_groups,
        rules: Arc::new(Policy::new(&cfg.rules)),
        masks: Arc::new(
            MaskSet::compile(&[], TokenKey::load_or_create(&cfg.data_dir).unwrap()).unwrap(),
        ),
        approvals: Arc::new(ApprovalBook::default()),
        grants: Arc::new(GrantBook::from_connections(&cfg.connections)),
        record_results: cfg.audit.record_results,
        result_cap_bytes: cfg.audit.result_cap_bytes,
        redacted_columns: Vec::new(),
        admin_url: "http://127.0.0.1:9".into(),
        shutdown,
    });
    Fixture {
        gate,
        log,
        issuer,
        stop,
        _dir: dir,
    }
}

impl Fixture {
    fn token(&self, subject: &str, groups: &[&str]) -> String {
        let groups: Vec<String> = groups.iter().map(|g| (*g).to_owned()).collect();
        self.issuer
            .issue(subject, &groups, Duration::from_secs(60))
            .unwrap()
    }

    /// Everything recorded so far, in order, once the writer has stored it.
    async fn records(&self) -> Vec<AuditRecord> {
        let auditor: &Auditor = &self.gate.auditor;
        auditor.flush().await.unwrap();
        self.log.0.lock().unwrap().clone()
    }

    async fn admitted_session(&self) -> Session {
        let token = self.token("bot", &["agents"]);
        let admitted = self
            .gate
            .admit(&attempt("payments"), &token, code)
            .await
            .unwrap();
        let mut s = Session::new(self.gate.clone(), admitted, "127.0.0.1:5000".into());
        s.start(started()).await.unwrap();
        s
    }
}

fn attempt(connection: &str) -> LoginAttempt {
    LoginAttempt {
        peer: "127.0.0.1:5000".into(),
        connection: Some(connection.into()),
        client_user: Some("anyone".into()),
        application_name: Some("nightly report".into()),
    }
}

fn code(r: &LoginRefusal) -> &'static str {
    match r {
        LoginRefusal::Authentication(_) => "AUTH",
        LoginRefusal::UnknownConnection(_) => "NOCONN",
        _ => "DENIED",
    }
}

fn started() -> SessionStarted {
    let mut adapter = serde_json::Map::new();
    adapter.insert("protocol_version".into(), "test/1".into());
    SessionStarted {
        tls: true,
        application_name: Some("nightly report".into()),
        client_user: Some("anyone".into()),
        grant: None,
        protocol: "test",
        adapter,
    }
}

fn detail(r: &AuditRecord) -> serde_json::Value {
    serde_json::from_str(r.event.detail.as_deref().unwrap_or("null")).unwrap()
}

#[tokio::test]
async fn refused_logins_are_recorded_with_the_adapters_code_and_a_stable_reason() {
    let f = fixture().await;
    let bad = f
        .gate
        .admit(&attempt("payments"), "not-a-token", code)
        .await;
    assert!(matches!(bad, Err(LoginRefusal::Authentication(_))));
    let token = f.token("bot", &["agents"]);
    let unknown = f.gate.admit(&attempt("nowhere"), &token, code).await;
    assert!(matches!(unknown, Err(LoginRefusal::UnknownConnection(c)) if c == "nowhere"));
    let outsider = f.token("eve", &["interns"]);
    let denied = f.gate.admit(&attempt("payments"), &outsider, code).await;
    let Err(e) = denied else {
        panic!("eve was admitted")
    };
    assert_eq!(
        e.to_string(),
        "identity \"eve\" is not in any group allowed to use connection \"payments\""
    );

    let records = f.records().await;
    assert_eq!(records.len(), 3);
    let got: Vec<_> = records
        .iter()
        .map(|r| {
            assert_eq!(r.event.kind, RecordKind::LoginFailed);
            assert_eq!(r.event.outcome, Some(Outcome::Denied));
            (
                r.event.sqlstate.clone().unwrap(),
                detail(r)["reason"].as_str().unwrap().to_owned(),
                r.event.subject.clone(),
            )
        })
        .collect();
    assert_eq!(got[0].0, "AUTH");
    assert_eq!(got[0].2, None, "no identity behind a bad token");
    assert_eq!(
        got[1],
        (
            "NOCONN".into(),
            "unknown_connection".into(),
            Some("bot".into())
        )
    );
    assert_eq!(
        got[2],
        (
            "DENIED".into(),
            "group_not_allowed".into(),
            Some("eve".into())
        )
    );
    // The token never reaches the record.
    for r in &records {
        assert!(!serde_json::to_string(&r.event).unwrap().contains(&token));
    }
}

#[tokio::test]
async fn a_session_records_its_start_and_end_once_even_when_dropped() {
    let f = fixture().await;
    let s = f.admitted_session().await;
    let id = s.info().id.clone();
    s.end(EndReason::ClientDisconnected);
    let dropped = f.admitted_session().await;
    let dropped_id = dropped.info().id.clone();
    drop(dropped);
    // Admitted but never started (no upstream): nothing is owed.
    let token = f.token("bot", &["agents"]);
    let admitted = f
        .gate
        .admit(&attempt("payments"), &token, code)
        .await
        .unwrap();
    drop(Session::new(
        f.gate.clone(),
        admitted,
        "127.0.0.1:5001".into(),
    ));

    let records = f.records().await;
    let kinds: Vec<_> = records
        .iter()
        .map(|r| (r.event.kind, r.event.session_id.clone()))
        .collect();
    assert_eq!(
        kinds,
        vec![
            (RecordKind::SessionStart, id.clone()),
            (RecordKind::SessionEnd, id),
            (RecordKind::SessionStart, dropped_id.clone()),
            (RecordKind::SessionEnd, dropped_id),
        ]
    );
    let start = detail(&records[0]);
    assert_eq!(start["protocol"], "test");
    assert_eq!(start["protocol_version"], "test/1");
    assert_eq!(start["tls"], true);
    assert_eq!(start["client_user"], "anyone");
    assert_eq!(detail(&records[1])["reason"], "client disconnected");
    assert_eq!(detail(&records[3])["reason"], "session dropped");
    assert!(records[1].event.duration_ms.is_some());
}

#[tokio::test]
async fn a_held_statement_is_released_by_an_approval() {
    let f = fixture().await;
    let s = f.admitted_session().await;
    let mut hold = s
        .hold(HoldRequest {
            rule: "bulk-read".into(),
            statement: "SELECT * FROM cards".into(),
            reason: Some("nightly report".into()),
        })
        .await
        .unwrap();
    assert!(
        hold.notice().contains("approvers: security"),
        "{}",
        hold.notice()
    );
    assert!(hold.notice().contains(hold.id()));
    let pending = f.gate.approvals.get(hold.id()).unwrap();
    assert_eq!(pending.status, ApprovalStatus::Pending);
    assert_eq!(pending.requester, "bot");
    assert_eq!(pending.statement, "SELECT * FROM cards");
    f.gate
        .approvals
        .decide(hold.id(), "alice", &["security".to_owned()], true, None)
        .unwrap();
    assert_eq!(hold.verdict().await, Verdict::Approved);
    drop(hold);
    let records = f.records().await;
    let approvals: Vec<_> = records
        .iter()
        .filter(|r| r.event.kind == RecordKind::Approval)
        .collect();
    assert_eq!(
        approvals.len(),
        1,
        "approved: only the request is recorded here"
    );
    let d = detail(approvals[0]);
    assert_eq!(d["event"], DetailEvent::Requested.as_str());
    assert_eq!(d["approvers"], serde_json::json!(["security"]));
    assert_eq!(d["reason"], "nightly report");
}

#[tokio::test]
async fn a_denied_statement_says_by_whom_and_why() {
    let f = fixture().await;
    let s = f.admitted_session().await;
    let req = HoldRequest {
        rule: "bulk-read".into(),
        statement: "SELECT 1".into(),
        reason: None,
    };
    let mut hold = s.hold(req).await.unwrap();
    f.gate
        .approvals
        .decide(
            hold.id(),
            "alice",
            &["security".to_owned()],
            false,
            Some("not today".into()),
        )
        .unwrap();
    let v = hold.verdict().await;
    assert_eq!(
        v.refusal_message("bulk-read").unwrap(),
        "approval denied by alice: not today (rule \"bulk-read\")"
    );
    assert_eq!(v.outcome(), Outcome::Denied);
}

#[tokio::test]
async fn an_undecided_hold_expires_abandons_or_is_closed_by_the_session_end() {
    let f = fixture().await;
    let s = f.admitted_session().await;
    let req = HoldRequest {
        rule: "bulk-read".into(),
        statement: "SELECT 2".into(),
        reason: None,
    };
    // Expiry (the rule's 1 s timeout).
    let mut hold = s.hold(req.clone()).await.unwrap();
    let expired_id = hold.id().to_owned();
    let v = hold.verdict().await;
    assert_eq!(
        v,
        Verdict::Expired {
            after: Duration::from_secs(1)
        }
    );
    drop(hold);
    assert_eq!(
        f.gate.approvals.get(&expired_id).unwrap().status,
        ApprovalStatus::Expired
    );
    // The client left.
    let hold = s.hold(req.clone()).await.unwrap();
    let left_id = hold.id().to_owned();
    assert_eq!(hold.abandon(), Verdict::Abandoned);
    // The session ended while held (the hold is dropped undecided).
    let hold = s.hold(req).await.unwrap();
    let dropped_id = hold.id().to_owned();
    drop(hold);
    for id in [&left_id, &dropped_id] {
        assert_eq!(
            f.gate.approvals.get(id).unwrap().status,
            ApprovalStatus::Abandoned
        );
    }

    let records = f.records().await;
    let ends: Vec<_> = records
        .iter()
        .filter(|r| r.event.kind == RecordKind::Approval)
        .map(detail)
        .filter(|d| d["event"] != "requested")
        .map(|d| {
            (
                d["event"].as_str().unwrap().to_owned(),
                d["approval_id"].as_str().unwrap().to_owned(),
                d["why"].as_str().map(str::to_owned),
            )
        })
        .collect();
    assert_eq!(
        ends,
        vec![
            ("expired".into(), expired_id, None),
            (
                "abandoned".into(),
                left_id,
                Some("the client disconnected while held".into())
            ),
            (
                "abandoned".into(),
                dropped_id,
                Some("the session ended while the statement was held".into())
            ),
        ]
    );
}

#[tokio::test]
async fn a_session_learns_of_the_gateways_shutdown() {
    let f = fixture().await;
    let s = f.admitted_session().await;
    let ending = s.ending();
    tokio::pin!(ending);
    // Nothing ends it yet.
    assert!(
        tokio::time::timeout(Duration::from_millis(50), &mut ending)
            .await
            .is_err()
    );
    f.stop.send(true).unwrap();
    assert_eq!(ending.await, EndReason::Shutdown);
    assert_eq!(
        s.ending_message(EndReason::Shutdown).unwrap(),
        "terminating connection because Gatehouse is shutting down"
    );
    assert_eq!(s.ending_message(EndReason::ClientDisconnected), None);
}

#[test]
fn end_reasons_keep_their_recorded_labels() {
    for r in [
        EndReason::ClientDisconnected,
        EndReason::ClientError,
        EndReason::UpstreamClosed,
        EndReason::UpstreamError,
        EndReason::Shutdown,
        EndReason::GrantExpired,
        EndReason::GrantRevoked,
        EndReason::Dropped,
    ] {
        assert_eq!(EndReason::from(r.as_str()), r);
    }
    assert_eq!(
        EndReason::from("upstream protocol error"),
        EndReason::Protocol("upstream protocol error")
    );
    assert_eq!(EndReason::from("gateway shutdown"), EndReason::Shutdown);
}
