//! The audit trail end to end: write-ahead statement records and their outcomes, PAN masking
//! in the store, tamper detection by `audit verify`, fail-closed behaviour when the store
//! cannot be written, recorded results, the audit/session CLI and group commit under load.
//!
//! Everything runs against a real PostgreSQL and the real `gatehouse` binary; tampering and
//! store failures are produced on the real SQLite file with a second connection.

// Helpers outside #[test] functions panic on purpose, like the assertions they serve.

use std::error::Error;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::support::*;
use bytes::BytesMut;
use gatehouse_store::SqliteStore;
use serde_json::Value;
use tokio_postgres::types::{Format, IsNull, ToSql, Type, to_sql_checked};
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// A bind parameter sent in *text* format (tokio-postgres sends its own types in binary).
#[derive(Debug)]
struct TextParam<'a>(&'a str);

impl ToSql for TextParam<'_> {
    fn to_sql(
        &self,
        _ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        out.extend_from_slice(self.0.as_bytes());
        Ok(IsNull::No)
    }

    fn accepts(_ty: &Type) -> bool {
        true
    }

    fn encode_format(&self, _ty: &Type) -> Format {
        Format::Text
    }

    to_sql_checked!();
}

/// A client through the gateway plus its connection task, so a test can close it and wait
/// until the gateway has seen the end of the session.
struct Session {
    client: Client,
    conn: tokio::task::JoinHandle<()>,
}

impl Session {
    async fn open(gw: &Gateway, db: &str, token: &str) -> Session {
        let (client, conn) = tokio_postgres::connect(&gw.conn_str(db, "agent", token), NoTls)
            .await
            .unwrap_or_else(|e| panic!("connect through gatehouse: {e}; log: {}", gw.log_text()));
        let conn = tokio::spawn(async move {
            let _ = conn.await;
        });
        Session { client, conn }
    }

    /// Sends Terminate and waits until the socket is closed.
    async fn close(self) {
        drop(self.client);
        let _ = tokio::time::timeout(Duration::from_secs(10), self.conn).await;
    }
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

fn kind<'a>(recs: &'a [Value], k: &str) -> Vec<&'a Value> {
    recs.iter().filter(|r| r["kind"] == k).collect()
}

/// The statement record with exactly this (stored, masked) text.
fn statement<'a>(recs: &'a [Value], text: &str) -> &'a Value {
    recs.iter()
        .find(|r| r["kind"] == "statement" && r["statement"] == text)
        .unwrap_or_else(|| panic!("no statement record {text:?} in {recs:#?}"))
}

/// The outcome record that belongs to the statement record `st`.
fn outcome_of<'a>(recs: &'a [Value], st: &Value) -> &'a Value {
    recs.iter()
        .find(|r| r["kind"] == "outcome" && r["statement_seq"] == st["seq"])
        .unwrap_or_else(|| panic!("no outcome for statement {st}"))
}

/// Waits until the export holds at least `n` records satisfying `pred`; returns the export.
fn wait_for_count(gw: &Gateway, n: usize, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let recs = gw.export();
        let have = recs.iter().filter(|r| pred(r)).count();
        if have >= n {
            return recs;
        }
        assert!(
            Instant::now() < deadline,
            "only {have} of {n} expected audit records; log: {}",
            gw.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Checks the chain-shaped fields of every exported record and the links between them.
fn assert_chain_fields(recs: &[Value]) {
    assert!(!recs.is_empty(), "no audit records");
    let mut prev: Option<&Value> = None;
    for r in recs {
        let seq = r["seq"]
            .as_u64()
            .unwrap_or_else(|| panic!("seq missing: {r}"));
        let t = s(&r["time"]);
        assert!(t.ends_with('Z'), "time is not UTC: {r}");
        assert!(
            time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).is_ok(),
            "time is not RFC 3339: {r}"
        );
        let hash = s(&r["hash"]);
        assert_eq!(hash.len(), 64, "hash: {r}");
        assert!(hash.chars().all(|c| c.is_ascii_hexdigit()), "hash: {r}");
        assert_eq!(s(&r["prev_hash"]).len(), 64, "prev_hash: {r}");
        match prev {
            None => {
                assert_eq!(seq, 1, "a fresh store starts at seq 1");
                assert_eq!(r["prev_hash"], GENESIS, "first record chains from genesis");
            }
            Some(p) => {
                let pseq = p["seq"].as_u64().unwrap_or(0);
                assert!(seq > pseq, "seq not increasing: {pseq} then {seq}");
                assert_eq!(seq, pseq + 1, "gap in seq: {pseq} then {seq}");
                assert_eq!(
                    r["prev_hash"], p["hash"],
                    "record {seq} does not chain from record {pseq}"
                );
            }
        }
        prev = Some(r);
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The SQLite database behind the gateway and its WAL companions.
fn store_files(gw: &Gateway) -> Vec<PathBuf> {
    let db = gw.data_dir().join("gatehouse.db");
    vec![
        db.clone(),
        PathBuf::from(format!("{}-wal", db.display())),
        PathBuf::from(format!("{}-shm", db.display())),
    ]
}

/// Every file under `dir` (recursively) whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &str) -> Vec<PathBuf> {
    let mut hits = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return hits;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            hits.extend(files_containing(&p, needle));
        } else if let Ok(bytes) = std::fs::read(&p)
            && contains_bytes(&bytes, needle.as_bytes())
        {
            hits.push(p);
        }
    }
    hits
}

fn contains_bytes(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// Asserts that none of `needles` occurs in the raw bytes of the store (db, -wal, -shm).
fn assert_store_free_of(gw: &Gateway, needles: &[&str]) {
    let files = store_files(gw);
    assert!(
        files[0].exists(),
        "store file {} missing",
        files[0].display()
    );
    for f in files.iter().filter(|f| f.exists()) {
        let bytes = std::fs::read(f).unwrap();
        for n in needles {
            assert!(
                !contains_bytes(&bytes, n.as_bytes()),
                "{n:?} found in the raw bytes of {}",
                f.display()
            );
        }
    }
}

/// Runs raw SQL on the gateway's SQLite store from a second connection.
async fn store_exec(gw: &Gateway, sqls: &[&str]) {
    let store = SqliteStore::open(&gw.store_url()).unwrap();
    for sql in sqls {
        store
            .execute_raw(sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
}

fn verify(gw: &Gateway) -> (bool, String) {
    let out = gw.cli(&["audit", "verify"]);
    (out.status.success(), text(&out))
}

/// Starts a gateway from the builder, then rewrites its config with `edit` and restarts it
/// (the harness writes `[audit]` itself; keys it does not know are added this way).
fn start_with(builder: GatewayBuilder, edit: impl Fn(String) -> String) -> Gateway {
    let mut gw = builder.start();
    gw.stop();
    let cfg = std::fs::read_to_string(&gw.config).unwrap();
    let edited = edit(cfg.clone());
    assert_ne!(cfg, edited, "config edit changed nothing");
    std::fs::write(&gw.config, edited).unwrap();
    gw.restart();
    gw
}

fn simple_rows(msgs: &[SimpleQueryMessage]) -> Vec<Vec<Option<String>>> {
    msgs.iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => {
                Some((0..r.len()).map(|i| r.get(i).map(str::to_owned)).collect())
            }
            _ => None,
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// 1. Write-ahead statement records, outcome records, session records, chain fields
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_and_outcomes_are_recorded_with_identity_and_chain() {
    let gw = Gateway::start();
    let token = gw.token("audit-bot", &["fraud-bots", "reporting"]);
    let sess = Session::open(&gw, "payments", &token).await;
    let c = &sess.client;

    // Simple protocol.
    let simple_sql = "SELECT id FROM customers ORDER BY id";
    let rows = simple_rows(&c.simple_query(simple_sql).await.unwrap());
    assert_eq!(rows.len(), 2);

    // Extended protocol with bind parameters (one binary, one text format).
    let ext_sql = "SELECT name FROM customers WHERE id = $1 AND name <> $2";
    let row = c
        .query_one(ext_sql, &[&1i32, &TextParam("nobody")])
        .await
        .unwrap();
    assert_eq!(row.get::<_, &str>(0), "Ada");

    // A failing statement.
    let bad_sql = "SELECT * FROM no_such_table";
    let e = c.simple_query(bad_sql).await.unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("42P01"));
    sess.close().await;

    wait_for_count(&gw, 1, |r| r["kind"] == "session_end");
    let recs = wait_for_count(&gw, 3, |r| r["kind"] == "outcome");
    assert_chain_fields(&recs);

    // Session start and end.
    let starts = kind(&recs, "session_start");
    let ends = kind(&recs, "session_end");
    assert_eq!(starts.len(), 1, "{recs:#?}");
    assert_eq!(ends.len(), 1, "{recs:#?}");
    let start = starts[0];
    let sid = s(&start["session_id"]).to_owned();
    assert!(!sid.is_empty());
    assert_eq!(start["subject"], "audit-bot");
    assert_eq!(start["issuer"], "gatehouse-local");
    assert_eq!(start["connection"], "payments");
    assert_eq!(ends[0]["session_id"], sid.as_str());
    assert_eq!(recs.first().unwrap()["kind"], "session_start");
    assert_eq!(
        recs.last().unwrap()["kind"],
        "session_end",
        "session_end must come last: {recs:#?}"
    );
    let groups: Vec<&str> = start["groups"].as_array().unwrap().iter().map(s).collect();
    assert!(
        groups.contains(&"fraud-bots") && groups.contains(&"reporting"),
        "{groups:?}"
    );

    // Statement records: identity and place, written ahead of their outcomes.
    let st_simple = statement(&recs, simple_sql);
    let st_ext = statement(&recs, ext_sql);
    let st_bad = statement(&recs, bad_sql);
    for st in [st_simple, st_ext, st_bad] {
        assert_eq!(st["session_id"], sid.as_str(), "{st}");
        assert_eq!(st["subject"], "audit-bot", "{st}");
        assert_eq!(st["groups"], start["groups"], "{st}");
        assert_eq!(st["issuer"], "gatehouse-local", "{st}");
        assert_eq!(st["connection"], "payments", "{st}");
        assert!(
            s(&st["client_addr"]).starts_with("127.0.0.1:"),
            "client_addr: {st}"
        );
        assert_eq!(st["client_addr"], start["client_addr"], "{st}");
    }
    let params = st_ext["params"]
        .as_array()
        .unwrap_or_else(|| panic!("extended statement has no params: {st_ext}"));
    assert_eq!(params.len(), 2, "{st_ext}");
    assert!(
        !params[0].is_null(),
        "binary parameter not recorded: {st_ext}"
    );
    assert_eq!(params[1], "nobody", "{st_ext}");
    assert!(
        st_simple["params"].is_null()
            || st_simple["params"].as_array().is_some_and(|a| a.is_empty()),
        "{st_simple}"
    );

    // Outcome records point at their statement.
    let o_simple = outcome_of(&recs, st_simple);
    let o_ext = outcome_of(&recs, st_ext);
    let o_bad = outcome_of(&recs, st_bad);
    for (st, o) in [(st_simple, o_simple), (st_ext, o_ext), (st_bad, o_bad)] {
        assert!(
            o["seq"].as_u64().unwrap() > st["seq"].as_u64().unwrap(),
            "outcome before its statement: {st} / {o}"
        );
        assert_eq!(o["session_id"], sid.as_str());
        let d = o["duration_ms"]
            .as_f64()
            .unwrap_or_else(|| panic!("duration_ms: {o}"));
        assert!((0.0..60_000.0).contains(&d), "duration_ms: {o}");
        assert!(o["rows"].is_u64(), "rows: {o}");
    }
    assert_eq!(o_simple["outcome"], "ok", "{o_simple}");
    assert!(o_simple["sqlstate"].is_null(), "{o_simple}");
    assert_eq!(o_simple["rows"], 2, "{o_simple}");
    assert_eq!(o_ext["outcome"], "ok", "{o_ext}");
    assert_eq!(o_ext["rows"], 1, "{o_ext}");
    assert_eq!(o_bad["outcome"], "error", "{o_bad}");
    assert_eq!(o_bad["sqlstate"], "42P01", "{o_bad}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statement_record_is_durable_while_the_statement_still_runs() {
    let gw = Gateway::start();
    let token = gw.token("slow-bot", &["dba"]);
    let Session { client, conn } = Session::open(&gw, "payments", &token).await;
    let sql = "SELECT pg_sleep(3)";
    let started = Instant::now();
    let running = tokio::spawn(async move {
        let r = client.simple_query(sql).await.map(|_| ());
        (client, r)
    });
    let st = gw.wait_for_record(|r| r["kind"] == "statement" && r["statement"] == sql);
    let recs = gw.export();
    assert!(
        !running.is_finished(),
        "the statement finished before its record could be observed ({:?}); cannot judge",
        started.elapsed()
    );
    assert!(
        !recs
            .iter()
            .any(|r| r["kind"] == "outcome" && r["statement_seq"] == st["seq"]),
        "an outcome exists for a statement that is still running: {recs:#?}"
    );
    let (client, r) = running.await.unwrap();
    r.unwrap();
    Session { client, conn }.close().await;
    let o = gw.wait_for_record(|r| r["kind"] == "outcome" && r["statement_seq"] == st["seq"]);
    assert_eq!(o["outcome"], "ok", "{o}");
    let d = o["duration_ms"].as_f64().unwrap();
    assert!(d >= 2900.0, "duration_ms {d} for a 3 s statement: {o}");
}

// ---------------------------------------------------------------------------------------------
// 2. No full PAN in the store (statement literals, bind parameters, results)
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn card_numbers_are_masked_before_they_reach_the_store() {
    let mut gw = Gateway::start();
    let token = gw.token("pan-bot", &["fraud-bots"]);
    let sess = Session::open(&gw, "payments", &token).await;
    let c = &sess.client;

    // Literal in a simple query: the client still gets the value.
    let rows = simple_rows(
        &c.simple_query("SELECT '4111111111111111' AS lit")
            .await
            .unwrap(),
    );
    assert_eq!(rows, vec![vec![Some("4111111111111111".to_owned())]]);

    // Literal in an extended Parse and a text-format bind parameter.
    let row = c
        .query_one(
            "SELECT '4111111111111111'::text AS lit, $1::text AS card",
            &[&TextParam("5555555555554444")],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, &str>(0), "4111111111111111");
    assert_eq!(row.get::<_, &str>(1), "5555555555554444");

    // A binary-format text parameter (what tokio-postgres sends for &str).
    let row = c
        .query_one("SELECT $1::text AS card", &[&"6011111111111117"])
        .await
        .unwrap();
    assert_eq!(row.get::<_, &str>(0), "6011111111111117");
    sess.close().await;

    let recs = wait_for_count(&gw, 3, |r| r["kind"] == "outcome");
    let st = statement(&recs, "SELECT '************1111' AS lit");
    assert!(st["params"].is_null() || st["params"] == serde_json::json!([]));
    let st = statement(
        &recs,
        "SELECT '************1111'::text AS lit, $1::text AS card",
    );
    assert_eq!(
        st["params"],
        serde_json::json!(["************4444"]),
        "text parameter must be stored masked: {st}"
    );
    let st = statement(&recs, "SELECT $1::text AS card");
    let p = &st["params"][0];
    assert!(!p.is_null(), "binary parameter not recorded at all: {st}");
    assert!(!s(p).contains("6011111111111117"), "{st}");

    // Nothing in the export carries a full PAN either.
    let export = gw.cli(&["audit", "export", "--format", "jsonl"]);
    let export = String::from_utf8_lossy(&export.stdout);
    for pan in ["4111111111111111", "5555555555554444", "6011111111111117"] {
        assert!(!export.contains(pan), "{pan} in the export");
    }

    // The raw SQLite bytes (db and WAL while running, db after the final checkpoint).
    let pans = ["4111111111111111", "5555555555554444", "6011111111111117"];
    assert_store_free_of(&gw, &pans);
    gw.stop();
    assert_store_free_of(&gw, &pans);
    let (ok, out) = verify(&gw);
    assert!(ok, "{out}");

    // Nor anywhere else the gateway wrote (its log, generated files).
    for pan in pans {
        let hits = files_containing(gw.dir.path(), pan);
        assert!(hits.is_empty(), "{pan} found in {hits:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// 3. `audit verify`: intact, then modified / deleted / reordered / truncated
// ---------------------------------------------------------------------------------------------

fn backup(gw: &Gateway, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for f in store_files(gw) {
        let dest = to.join(f.file_name().unwrap());
        let _ = std::fs::remove_file(&dest);
        if f.exists() {
            std::fs::copy(&f, &dest).unwrap();
        }
    }
}

fn restore(gw: &Gateway, from: &Path) {
    for f in store_files(gw) {
        let _ = std::fs::remove_file(&f);
        let src = from.join(f.file_name().unwrap());
        if src.exists() {
            std::fs::copy(&src, &f).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_verify_detects_modified_deleted_reordered_and_truncated_records() {
    let mut gw = Gateway::start();
    let token = gw.token("verify-bot", &["dba"]);
    let sess = Session::open(&gw, "payments", &token).await;
    for i in 1..=5 {
        sess.client
            .simple_query(&format!("SELECT {i}"))
            .await
            .unwrap();
    }
    sess.close().await;
    wait_for_count(&gw, 1, |r| r["kind"] == "session_end");
    gw.stop();

    let recs = gw.export();
    assert_chain_fields(&recs);
    let last = recs.last().unwrap()["seq"].as_u64().unwrap();
    let seq_of = |sql: &str| statement(&recs, sql)["seq"].as_u64().unwrap();

    // The final checkpoint written on shutdown seals the head.
    let store = SqliteStore::open(&gw.store_url()).unwrap();
    let cps = store.checkpoints().unwrap();
    assert_eq!(
        cps.last().map(|c| c.seq),
        Some(last),
        "graceful stop must write a checkpoint at the head"
    );

    let (ok, out) = verify(&gw);
    assert!(ok, "intact store must verify: {out}");
    assert!(out.contains("ok"), "{out}");

    let saved = gw.dir.path().join("backup");
    backup(&gw, &saved);

    // (a) One record's statement changed.
    let modified = seq_of("SELECT 2");
    store_exec(
        &gw,
        &[&format!(
            "UPDATE audit_records SET statement = 'SELECT 42' WHERE seq = {modified}"
        )],
    )
    .await;
    let (ok, out) = verify(&gw);
    assert!(!ok, "modified record not detected: {out}");
    assert!(out.contains(&format!("record {modified}:")), "{out}");
    assert!(
        !out.lines().any(|l| l.starts_with("ok")),
        "must not claim ok: {out}"
    );

    // (b) A middle record deleted: the record after the gap is the first bad one.
    restore(&gw, &saved);
    let deleted = seq_of("SELECT 3");
    store_exec(
        &gw,
        &[&format!("DELETE FROM audit_records WHERE seq = {deleted}")],
    )
    .await;
    let (ok, out) = verify(&gw);
    assert!(!ok, "deleted record not detected: {out}");
    assert!(out.contains(&format!("record {}:", deleted + 1)), "{out}");
    assert!(out.contains(&deleted.to_string()), "{out}");

    // (c) Two records swapped (reordered).
    restore(&gw, &saved);
    let a = seq_of("SELECT 4");
    let b = a + 1;
    store_exec(
        &gw,
        &[
            &format!("UPDATE audit_records SET seq = -1 WHERE seq = {a}"),
            &format!("UPDATE audit_records SET seq = {a} WHERE seq = {b}"),
            &format!("UPDATE audit_records SET seq = {b} WHERE seq = -1"),
        ],
    )
    .await;
    let (ok, out) = verify(&gw);
    assert!(!ok, "reordered records not detected: {out}");
    assert!(out.contains(&format!("record {a}:")), "{out}");

    // (d) The tail below the final signed checkpoint deleted.
    restore(&gw, &saved);
    store_exec(
        &gw,
        &[&format!(
            "DELETE FROM audit_records WHERE seq > {}",
            last - 2
        )],
    )
    .await;
    let (ok, out) = verify(&gw);
    assert!(!ok, "truncated tail not detected: {out}");
    assert!(out.contains(&format!("record {}:", last - 1)), "{out}");

    // The untouched copy still verifies (the restores above were real).
    restore(&gw, &saved);
    let (ok, out) = verify(&gw);
    assert!(ok, "restored store must verify: {out}");
}

// ---------------------------------------------------------------------------------------------
// 4. Fail closed: no durable record, no statement
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_are_refused_when_the_audit_store_cannot_be_written() {
    let pg = cluster();
    pg.create_database("failclosed");
    let direct = pg.direct("failclosed").await;
    direct
        .batch_execute("CREATE TABLE fc (v int)")
        .await
        .unwrap();
    let mut gw = Gateway::builder()
        .connection("failclosed", "failclosed")
        .start();
    let token = gw.token("fc-bot", &["dba"]);
    let sess = Session::open(&gw, "failclosed", &token).await;
    let c = &sess.client;
    c.simple_query("INSERT INTO fc VALUES (1)").await.unwrap();
    wait_for_count(&gw, 1, |r| r["kind"] == "outcome");

    // The audit journal stops taking writes (a full disk).
    gw.fail_journal(true);

    // Simple protocol.
    let e = c
        .simple_query("INSERT INTO fc VALUES (2)")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("58000"), "{e:?}");
    // Extended protocol.
    let e = c
        .execute("INSERT INTO fc VALUES ($1)", &[&3i32])
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("58000"), "{e:?}");
    let vals: Vec<i32> = direct
        .query("SELECT v FROM fc ORDER BY v", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        vals,
        vec![1],
        "a statement that was not recorded reached the database"
    );

    // A new session cannot be recorded, so it is refused.
    let refused = gw.try_connect("failclosed", &token).await;
    match refused {
        Ok(_) => panic!("a session was accepted although its start could not be recorded"),
        Err(e) => assert_eq!(sqlstate(&e).as_deref(), Some("58000"), "{e:?}"),
    }

    // The disk recovers: the same session works again, in both protocols.
    gw.fail_journal(false);
    c.simple_query("INSERT INTO fc VALUES (4)").await.unwrap();
    assert_eq!(
        c.execute("INSERT INTO fc VALUES ($1)", &[&5i32])
            .await
            .unwrap(),
        1
    );
    let vals: Vec<i32> = direct
        .query("SELECT v FROM fc ORDER BY v", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(vals, vec![1, 4, 5]);
    // And new sessions are accepted again.
    let again = Session::open(&gw, "failclosed", &token).await;
    again.client.simple_query("SELECT 1").await.unwrap();
    again.close().await;
    sess.close().await;
    wait_for_count(&gw, 2, |r| r["kind"] == "session_end");

    // What was recorded is exactly what ran, and the chain survived the failures.
    let recs = gw.export();
    assert_chain_fields(&recs);
    let stmts: Vec<&str> = kind(&recs, "statement")
        .iter()
        .map(|r| s(&r["statement"]))
        .collect();
    assert!(stmts.contains(&"INSERT INTO fc VALUES (1)"), "{stmts:?}");
    assert!(stmts.contains(&"INSERT INTO fc VALUES (4)"), "{stmts:?}");
    assert!(!stmts.contains(&"INSERT INTO fc VALUES (2)"), "{stmts:?}");
    let ext: Vec<&Value> = kind(&recs, "statement")
        .into_iter()
        .filter(|r| r["statement"] == "INSERT INTO fc VALUES ($1)")
        .collect();
    assert_eq!(ext.len(), 1, "only the executed extended INSERT: {ext:?}");
    gw.stop();
    let (ok, out) = verify(&gw);
    assert!(ok, "{out}");
}

/// The SQLSTATE of the first ErrorResponse among `msgs`.
fn raw_error(msgs: &[WireMsg]) -> Option<String> {
    wire_error(msgs)?
        .into_iter()
        .find_map(|(code, value)| (code == b'C').then_some(value))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_execute_leaves_the_clients_prepared_statements_intact() {
    let pg = cluster();
    pg.create_database("failclosed_unnamed");
    let direct = pg.direct("failclosed_unnamed").await;
    direct
        .batch_execute("CREATE TABLE fcu (v int)")
        .await
        .unwrap();
    let gw = Gateway::builder()
        .connection("failclosed_unnamed", "failclosed_unnamed")
        .start();
    let token = gw.token("raw-bot", &["dba"]);

    // tokio-postgres: a named statement prepared before the failure.
    let sess = Session::open(&gw, "failclosed_unnamed", &token).await;
    let named = sess
        .client
        .prepare("INSERT INTO fcu VALUES ($1 + 100)")
        .await
        .unwrap();
    sess.client.execute(&named, &[&1i32]).await.unwrap();

    // Raw protocol: the unnamed statement, parsed once and bound repeatedly.
    let mut raw = WireClient::connect(&gw, "failclosed_unnamed", &token).await;
    raw.parse_unnamed("INSERT INTO fcu VALUES ($1::int)").await;
    let msgs = raw.bind_execute_sync("1").await;
    assert_eq!(raw_error(&msgs), None, "{msgs:?}");

    gw.fail_journal(true);
    let msgs = raw.bind_execute_sync("2").await;
    assert_eq!(raw_error(&msgs).as_deref(), Some("58000"), "{msgs:?}");
    let e = sess.client.execute(&named, &[&2i32]).await.unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("58000"), "{e:?}");
    gw.fail_journal(false);

    // PostgreSQL keeps the unnamed statement until the next unnamed Parse or simple Query; a
    // refusal must not destroy it behind the client's back.
    let msgs = raw.bind_execute_sync("3").await;
    assert_eq!(
        raw_error(&msgs),
        None,
        "the unnamed prepared statement did not survive a refused Execute: {msgs:?}"
    );
    sess.client.execute(&named, &[&3i32]).await.unwrap();
    let vals: Vec<i32> = direct
        .query("SELECT v FROM fcu ORDER BY v", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(vals, vec![1, 3, 101, 103]);
    raw.send(b'X', &[]).await;
    sess.close().await;
}

// ---------------------------------------------------------------------------------------------
// 5. Recorded results: masked, capped, or not at all
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_are_recorded_masked_and_capped() {
    let gw = start_with(Gateway::builder(), |cfg| {
        cfg.replace("[audit]\n", "[audit]\nresult_cap_bytes = 300\n")
    });
    let token = gw.token("results-bot", &["dba"]);
    let sess = Session::open(&gw, "payments", &token).await;
    let c = &sess.client;

    let cards_sql = "SELECT id, card_number FROM payments ORDER BY id";
    let rows = simple_rows(&c.simple_query(cards_sql).await.unwrap());
    assert_eq!(
        rows,
        vec![
            vec![Some("1".to_owned()), Some(CARDS[0].to_owned())],
            vec![Some("2".to_owned()), Some(CARDS[1].to_owned())],
            vec![Some("3".to_owned()), Some(CARDS[2].to_owned())],
        ],
        "the client receives the real values (result masking is a later issue)"
    );

    let big_sql = "SELECT g, repeat('x', 50) AS pad FROM generate_series(1, 100) g";
    let rows = simple_rows(&c.simple_query(big_sql).await.unwrap());
    assert_eq!(rows.len(), 100);
    sess.close().await;

    let recs = wait_for_count(&gw, 2, |r| r["kind"] == "outcome");
    let o = outcome_of(&recs, statement(&recs, cards_sql));
    let res = &o["detail"]["results"];
    assert_eq!(
        res["columns"],
        serde_json::json!(["id", "card_number"]),
        "{o}"
    );
    assert_eq!(
        res["rows"],
        serde_json::json!([
            ["1", "************1111"],
            ["2", "************4444"],
            ["3", format!("{}0005", "*".repeat(11))],
        ]),
        "{o}"
    );
    assert_eq!(res["truncated"], false, "{o}");

    let o = outcome_of(&recs, statement(&recs, big_sql));
    let res = &o["detail"]["results"];
    assert_eq!(res["truncated"], true, "cap must truncate: {o}");
    let kept = res["rows"].as_array().unwrap().len();
    assert!(kept > 0 && kept < 100, "kept {kept} rows: {o}");
    let kept_bytes: usize = res["rows"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r.as_array().unwrap().iter())
        .map(|v| s(v).len())
        .sum();
    assert!(
        kept_bytes <= 300,
        "{kept_bytes} bytes kept over a 300 byte cap"
    );
    assert_eq!(o["rows"], 100, "the row count is not truncated: {o}");

    for pan in &CARDS[..3] {
        assert!(
            !serde_json::to_string(&recs).unwrap().contains(pan),
            "{pan} in the export"
        );
    }
    assert_store_free_of(&gw, &CARDS[..3]);
}

/// tokio-postgres asks for every result column in binary format. A card number kept in a
/// numeric column (int8 here) then arrives as 8 bytes that no text detector can see; the
/// recorded results must not keep it in a recoverable form (raw bytes or their hex).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_format_results_do_not_store_card_numbers() {
    let mut gw = Gateway::start();
    let token = gw.token("binary-bot", &["dba"]);
    let sess = Session::open(&gw, "payments", &token).await;
    let pan: i64 = 4_111_111_111_111_111;
    let sql = "SELECT 4111111111111111::int8 AS card_num, card_number FROM payments WHERE id = 1";
    let row = sess.client.query_one(sql, &[]).await.unwrap();
    assert_eq!(row.get::<_, i64>(0), pan);
    assert_eq!(row.get::<_, &str>(1), CARDS[0]);
    sess.close().await;

    let recs = wait_for_count(&gw, 1, |r| r["kind"] == "outcome");
    let st = statement(&recs, &sql.replace("4111111111111111", "************1111"));
    let o = outcome_of(&recs, st);
    let res = &o["detail"]["results"];
    // Binary values are withheld (their types are not decoded yet); a text column in binary
    // format is withheld too, never stored raw.
    assert_eq!(res["rows"][0][1], "<binary 16 bytes>", "{o}");
    assert_eq!(res["rows"][0][0], "<binary 8 bytes>", "{o}");
    // The int8 column must not be the PAN's binary encoding.
    let be = pan.to_be_bytes();
    let hex: String = be.iter().map(|b| format!("{b:02x}")).collect();
    let stored = s(&res["rows"][0][0]);
    assert!(
        stored.as_bytes() != be && !stored.contains(&hex) && !stored.contains(&pan.to_string()),
        "the full PAN {pan} is stored in recoverable form ({stored:?}, big-endian int8 \
         0x{hex}): {o}"
    );
    gw.stop();
    assert_store_free_of(&gw, &[CARDS[0], &hex]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_result_values_are_stored_with_none_or_summary() {
    for mode in ["none", "summary"] {
        let mut b = Gateway::builder();
        b.record_results = mode.to_owned();
        let mut gw = b.start();
        let token = gw.token("quiet-bot", &["dba"]);
        let sess = Session::open(&gw, "payments", &token).await;
        // The value only exists in the result (the statement text is lower case).
        let sql = "SELECT upper('quokkacanary') AS v, card_number FROM payments ORDER BY id";
        let rows = simple_rows(&sess.client.simple_query(sql).await.unwrap());
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0][0].as_deref(), Some("QUOKKACANARY"));
        sess.close().await;
        let recs = wait_for_count(&gw, 1, |r| r["kind"] == "outcome");
        let o = outcome_of(&recs, statement(&recs, sql));
        assert_eq!(o["outcome"], "ok", "{mode}: {o}");
        assert_eq!(o["rows"], 3, "{mode}: {o}");
        assert!(
            o["detail"].get("results").is_none_or(Value::is_null),
            "{mode}: result values recorded: {o}"
        );
        let all = serde_json::to_string(&recs).unwrap();
        assert!(!all.contains("QUOKKACANARY"), "{mode}: {all}");
        assert!(!all.contains("****1111"), "{mode}: {all}");
        gw.stop();
        assert_store_free_of(&gw, &["QUOKKACANARY", "****1111", CARDS[0], CARDS[1]]);
    }
}

// ---------------------------------------------------------------------------------------------
// 6. CLI: sessions, export --since, check
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_cli_and_export_since() {
    let gw = Gateway::start();
    let token = gw.token("cli-bot", &["dba"]);
    let sess = Session::open(&gw, "payments", &token).await;
    let sql = "SELECT name FROM customers WHERE id = 2";
    sess.client.simple_query(sql).await.unwrap();
    sess.close().await;
    let recs = wait_for_count(&gw, 1, |r| r["kind"] == "session_end");
    let sid = s(&kind(&recs, "session_start")[0]["session_id"]).to_owned();

    let out = gw.cli(&["sessions", "list"]);
    assert!(out.status.success(), "{}", text(&out));
    let list = String::from_utf8_lossy(&out.stdout);
    let line = list
        .lines()
        .find(|l| l.contains(&sid))
        .unwrap_or_else(|| panic!("session {sid} not listed: {list}"));
    assert!(line.contains("cli-bot"), "{line}");
    // The protocol column, from the session_start record's `detail.protocol`.
    assert_eq!(line.split_whitespace().nth(4), Some("postgres"), "{line}");
    let detail = &kind(&recs, "session_start")[0]["detail"];
    assert_eq!(detail["protocol"], "postgres", "{detail}");
    assert_eq!(detail["protocol_version"], "3.0", "{detail}");

    let out = gw.cli(&["sessions", "show", &sid]);
    assert!(out.status.success(), "{}", text(&out));
    let shown: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(shown.len() >= 4, "{shown:#?}");
    assert!(shown.iter().all(|r| r["session_id"] == sid.as_str()));
    assert!(shown.iter().any(|r| r["statement"] == sql), "{shown:#?}");
    assert_eq!(shown.first().unwrap()["kind"], "session_start");
    assert_eq!(shown.last().unwrap()["kind"], "session_end");

    let out = gw.cli(&["sessions", "replay", &sid]);
    assert!(out.status.success(), "{}", text(&out));
    let replay = String::from_utf8_lossy(&out.stdout);
    assert!(replay.contains(sql), "{replay}");
    assert!(replay.contains("session start"), "{replay}");
    assert!(replay.contains("session end"), "{replay}");
    assert!(replay.contains("cli-bot"), "{replay}");
    let start_at = replay.find("session start").unwrap();
    let stmt_at = replay.find(sql).unwrap();
    let end_at = replay.find("session end").unwrap();
    assert!(start_at < stmt_at && stmt_at < end_at, "{replay}");

    let out = gw.cli(&["sessions", "show", "no-such-session"]);
    assert!(!out.status.success(), "{}", text(&out));

    for since in ["2999-01-01", "2999-01-01T00:00:00Z"] {
        let out = gw.cli(&["audit", "export", "--since", since]);
        assert!(out.status.success(), "{}", text(&out));
        assert!(
            out.stdout.is_empty(),
            "--since {since} printed: {}",
            text(&out)
        );
    }
    let out = gw.cli(&["audit", "export", "--since", "2000-01-01"]);
    assert!(out.status.success(), "{}", text(&out));
    // Everything stored when it ran, in order (the CLI reads above are chained as they
    // arrive, so the store may have grown since).
    let seqs: Vec<u64> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["seq"]
                .as_u64()
                .unwrap()
        })
        .collect();
    let stored: Vec<u64> = gw
        .export()
        .iter()
        .map(|r| r["seq"].as_u64().unwrap())
        .collect();
    assert!(seqs.len() >= recs.len(), "{seqs:?}");
    assert_eq!(seqs[..], stored[..seqs.len()]);
}

fn check(config_text: &str, with_password: bool) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gatehouse.toml");
    std::fs::write(&path, config_text).unwrap();
    let mut cmd = Command::new(bin());
    cmd.args(["check", "-c"]).arg(&path);
    if with_password {
        cmd.env("TEST_DB_PASSWORD", SVC_PASSWORD);
    } else {
        cmd.env_remove("TEST_DB_PASSWORD");
    }
    let out = cmd.output().unwrap();
    (out.status.success(), text(&out))
}

#[test]
fn check_validates_config_and_names_the_bad_key() {
    let admin_port = free_port();
    let good = Gateway::builder().config_text(free_port(), admin_port);

    let (ok, out) = check(&good, true);
    assert!(ok, "good config rejected: {out}");

    let typo = good.replace("user = \"gatehouse_svc\"", "usr = \"gatehouse_svc\"");
    assert_ne!(typo, good);
    let (ok, out) = check(&typo, true);
    assert!(!ok, "typo accepted: {out}");
    assert!(out.contains("usr"), "{out}");

    let bad_admin = good.replace(
        &format!("admin = \"127.0.0.1:{admin_port}\""),
        "admin = \"nonsense\"",
    );
    assert_ne!(bad_admin, good);
    let (ok, out) = check(&bad_admin, true);
    assert!(!ok, "bad listen.admin accepted: {out}");
    assert!(out.contains("listen.admin"), "{out}");

    let (ok, out) = check(&good, false);
    assert!(!ok, "missing password env accepted: {out}");
    assert!(out.contains("password_env"), "{out}");
    assert!(out.contains("TEST_DB_PASSWORD"), "{out}");
    assert!(!out.contains(SVC_PASSWORD), "{out}");
}

// ---------------------------------------------------------------------------------------------
// 7. Group commit under concurrency
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_sessions_group_commit_and_the_chain_verifies() {
    const SESSIONS: usize = 16;
    const STATEMENTS: usize = 50;
    let mut gw = Gateway::start();
    let token = gw.token("load-bot", &["dba"]);
    let mut tasks = Vec::new();
    for n in 0..SESSIONS {
        let sess = Session::open(&gw, "payments", &token).await;
        tasks.push(tokio::spawn(async move {
            for i in 0..STATEMENTS {
                let v = (n * 1000 + i) as i32;
                if i % 2 == 0 {
                    let rows = simple_rows(
                        &sess
                            .client
                            .simple_query(&format!("SELECT {v}"))
                            .await
                            .unwrap(),
                    );
                    assert_eq!(rows, vec![vec![Some(v.to_string())]]);
                } else {
                    let r = sess
                        .client
                        .query_one("SELECT $1::int4 + 0", &[&v])
                        .await
                        .unwrap();
                    assert_eq!(r.get::<_, i32>(0), v);
                }
            }
            sess.close().await;
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    wait_for_count(&gw, SESSIONS, |r| r["kind"] == "session_end");
    gw.stop();

    let recs = gw.export();
    assert_chain_fields(&recs);
    let stmts = kind(&recs, "statement");
    let outcomes = kind(&recs, "outcome");
    assert_eq!(stmts.len(), SESSIONS * STATEMENTS);
    assert_eq!(outcomes.len(), SESSIONS * STATEMENTS);
    assert!(
        outcomes.iter().all(|o| o["outcome"] == "ok"),
        "{outcomes:?}"
    );
    assert_eq!(kind(&recs, "session_start").len(), SESSIONS);
    // Every statement has exactly one outcome, in its own session.
    let mut seen = std::collections::HashMap::new();
    for o in &outcomes {
        *seen
            .entry(o["statement_seq"].as_u64().unwrap())
            .or_insert(0) += 1;
    }
    for st in &stmts {
        assert_eq!(seen.get(&st["seq"].as_u64().unwrap()), Some(&1), "{st}");
        let o = outcome_of(&recs, st);
        assert_eq!(o["session_id"], st["session_id"]);
    }
    let (ok, out) = verify(&gw);
    assert!(ok, "{out}");
    assert!(out.contains(&format!("{} records", recs.len())), "{out}");
}

/// Card verification codes are never recorded (PCI DSS 3.3.1), nor are columns named by a
/// `[[mask]]` rule, even before result masking reaches clients.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verification_codes_and_mask_columns_are_never_recorded() {
    let gw = Gateway::builder()
        .extra("[[mask]]\nconnections = [\"payments\"]\ncolumns = [\"public.customers.email\"]\n")
        .start();
    let token = gw.token("cvv-bot", &["dba"]);
    let sess = Session::open(&gw, "payments", &token).await;
    let sql = "SELECT p.cvv, c.email, c.name FROM payments p JOIN customers c ON c.id = p.customer_id ORDER BY p.id";
    let rows = simple_rows(&sess.client.simple_query(sql).await.unwrap());
    // A verification code is redacted for the client too while any [[mask]] rule applies.
    assert_eq!(rows[0][0].as_deref(), Some("[REDACTED]"));
    sess.close().await;
    let recs = wait_for_count(&gw, 1, |r| r["kind"] == "outcome");
    let o = outcome_of(&recs, statement(&recs, sql));
    let res = &o["detail"]["results"];
    assert_eq!(
        res["columns"],
        serde_json::json!(["cvv", "email", "name"]),
        "{o}"
    );
    assert_eq!(
        res["rows"][0],
        serde_json::json!(["[redacted]", "[redacted]", "Ada"]),
        "{o}"
    );
    assert_store_free_of(&gw, &["ada@example.com"]);
}
