//! The policy engine in the data path: statements are analysed with PostgreSQL's own parser
//! and blocked however they are dressed up, with nothing of them executed.

use crate::support::*;
use tokio_postgres::SimpleQueryMessage;

const RULES: &str = r#"
[[rule]]
name = "no-destructive"
connections = ["*"]
statements = ["drop", "truncate", "alter_system", "create_extension"]
action = "block"

[[rule]]
name = "no-card-writes"
connections = ["*"]
groups = ["fraud-bots"]
writes = ["public.payments"]
action = "block"

[[rule]]
name = "bulk-card-read"
connections = ["*"]
groups = ["fraud-bots"]
reads = ["public.payments.card_number"]
without_limit = true
action = "approve"
approvers = ["security"]
timeout = "1s"

[[rule]]
name = "dba-may-set-role"
connections = ["*"]
groups = ["dba"]
statements = ["set_role"]
action = "allow"
"#;

/// A gateway on a fresh database (with a canary table) and the rules above.
async fn setup(db: &str) -> (Gateway, tokio_postgres::Client) {
    let pg = cluster();
    pg.create_database(db);
    pg.psql_as_svc(
        db,
        "CREATE TABLE canary (v int); INSERT INTO canary VALUES (1);",
    );
    let gw = Gateway::builder().connection(db, db).extra(RULES).start();
    let direct = pg.direct(db).await;
    (gw, direct)
}

async fn canary_exists(direct: &tokio_postgres::Client) -> bool {
    direct
        .query_one("SELECT to_regclass('public.canary') IS NOT NULL", &[])
        .await
        .unwrap()
        .get(0)
}

async fn card_count(direct: &tokio_postgres::Client) -> i64 {
    direct
        .query_one("SELECT count(*) FROM payments", &[])
        .await
        .unwrap()
        .get(0)
}

fn assert_blocked(e: &tokio_postgres::Error, rule: &str) {
    assert_eq!(sqlstate(e).as_deref(), Some("42501"), "{e}");
    let msg = db_message(e);
    assert!(msg.contains(&format!("rule \"{rule}\"")), "{msg}");
}

#[tokio::test]
async fn destructive_statements_are_blocked_in_every_disguise() {
    let (gw, direct) = setup("pol_disguise").await;
    let token = gw.token("dba-1", &["dba"]);
    let c = gw.connect("pol_disguise", &token).await;
    let disguises = [
        "DROP TABLE canary",
        "dRoP tAbLe CaNaRy",
        "/* harmless */ DROP /* nested /* comment */ still */ TABLE canary",
        "-- line comment\nDROP TABLE canary",
        "SELECT $$ not a drop $$; DROP TABLE canary",
        "SELECT 1; DROP TABLE canary; SELECT 2",
        "DROP TABLE U&\"\\0063anary\"",
        "TRUNCATE canary",
        "ALTER SYSTEM SET work_mem = '1GB'",
        "CREATE EXTENSION IF NOT EXISTS pgcrypto",
        "WITH x AS (SELECT 1) SELECT * FROM x; DROP TABLE canary",
        "DO $$ BEGIN EXECUTE 'DROP TABLE canary'; END $$",
        "COPY canary TO PROGRAM 'cat > /dev/null'",
        "COPY canary FROM '/etc/passwd'",
        "SELECT pg_read_file('/etc/passwd')",
        "SET standard_conforming_strings = off",
        "SET ROLE postgres",
    ];
    for sql in disguises {
        let e = c
            .simple_query(sql)
            .await
            .err()
            .unwrap_or_else(|| panic!("allowed: {sql}"));
        assert_eq!(sqlstate(&e).as_deref(), Some("42501"), "{sql}: {e}");
        // The session stays usable after every refusal.
        c.simple_query("SELECT 1").await.unwrap();
    }
    assert!(
        canary_exists(&direct).await,
        "a disguised DROP reached the server"
    );
    let n: i64 = direct
        .query_one("SELECT count(*) FROM canary", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);

    // The extended protocol is judged at Parse: nothing is created, the session goes on.
    let e = c.prepare("DROP TABLE canary").await.unwrap_err();
    assert_blocked(&e, "no-destructive");
    let e = c.execute("DROP TABLE canary", &[]).await.unwrap_err();
    assert_blocked(&e, "no-destructive");
    assert_eq!(
        c.query_one("SELECT 2", &[]).await.unwrap().get::<_, i32>(0),
        2
    );
    assert!(canary_exists(&direct).await);

    // Every refusal is recorded with its rule and outcome "blocked".
    let rec = gw.wait_for_record(|r| {
        r["kind"] == "statement" && r["outcome"] == "blocked" && r["rule"] == "no-destructive"
    });
    assert_eq!(rec["sqlstate"], "42501");
}

#[tokio::test]
async fn nothing_of_a_multi_statement_string_runs_if_one_part_is_blocked() {
    let (gw, direct) = setup("pol_multi").await;
    let token = gw.token("dba-2", &["dba"]);
    let c = gw.connect("pol_multi", &token).await;
    let e = c
        .simple_query("INSERT INTO canary VALUES (2); DROP TABLE canary")
        .await
        .unwrap_err();
    assert_blocked(&e, "no-destructive");
    let n: i64 = direct
        .query_one("SELECT count(*) FROM canary", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1, "the INSERT before the blocked DROP must not run");
}

#[tokio::test]
async fn hidden_writes_are_found() {
    let (gw, direct) = setup("pol_writes").await;
    let token = gw.token("bot-1", &["fraud-bots"]);
    let c = gw.connect("pol_writes", &token).await;
    let before = card_count(&direct).await;
    for sql in [
        "WITH d AS (DELETE FROM payments RETURNING *) SELECT count(*) FROM d",
        "EXPLAIN ANALYZE DELETE FROM payments",
        "DELETE FROM PUBLIC.PAYMENTS",
        "UPDATE payments SET amount = 0",
    ] {
        let e = c
            .simple_query(sql)
            .await
            .err()
            .unwrap_or_else(|| panic!("allowed: {sql}"));
        assert_blocked(&e, "no-card-writes");
    }
    // PREPARE/EXECUTE: the EXECUTE is judged as what it runs.
    let e = c
        .simple_query("PREPARE wipe AS DELETE FROM payments")
        .await
        .unwrap_err();
    assert_blocked(&e, "no-card-writes");
    assert_eq!(card_count(&direct).await, before);

    // Reads are fine; a bulk read of card numbers needs approval (not available yet: blocked).
    let rows = c
        .simple_query("SELECT id FROM payments ORDER BY id")
        .await
        .unwrap();
    assert!(rows.iter().any(|m| matches!(m, SimpleQueryMessage::Row(_))));
    let e = c
        .simple_query("SELECT card_number FROM payments")
        .await
        .unwrap_err();
    assert_blocked(&e, "bulk-card-read");
    assert!(db_message(&e).contains("approval"), "{}", db_message(&e));
    c.simple_query("SELECT card_number FROM payments LIMIT 10")
        .await
        .unwrap();

    // A decoy schema in front of the search_path does not dodge the rule.
    c.simple_query("SET search_path = decoy, public")
        .await
        .unwrap();
    let e = c
        .simple_query("SELECT card_number FROM payments")
        .await
        .unwrap_err();
    assert_blocked(&e, "bulk-card-read");
    c.simple_query("RESET search_path").await.unwrap();

    // Copying card numbers out into a new table is the same bulk read.
    for sql in [
        "CREATE TABLE stolen AS SELECT card_number FROM payments",
        "SELECT card_number INTO stolen FROM payments",
    ] {
        let e = c
            .simple_query(sql)
            .await
            .err()
            .unwrap_or_else(|| panic!("allowed: {sql}"));
        assert_blocked(&e, "bulk-card-read");
    }
    let stolen: bool = direct
        .query_one("SELECT to_regclass('public.stolen') IS NOT NULL", &[])
        .await
        .unwrap()
        .get(0);
    assert!(!stolen);
}

#[tokio::test]
async fn set_role_needs_an_explicit_allow_and_the_backslash_trick_fails() {
    let (gw, direct) = setup("pol_role").await;
    let bot = gw.token("bot-2", &["fraud-bots"]);
    let c = gw.connect("pol_role", &bot).await;
    let e = c.simple_query("SET ROLE gatehouse_svc").await.unwrap_err();
    assert_blocked(&e, "builtin:set-role");
    let e = c
        .simple_query("SET SESSION AUTHORIZATION gatehouse_svc")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("42501"));
    // Going back to the login role is no escalation: connection pools send these.
    for sql in [
        "RESET ROLE",
        "SET ROLE NONE",
        "SET SESSION AUTHORIZATION DEFAULT",
        "DISCARD ALL",
    ] {
        c.simple_query(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    // With standard_conforming_strings on (as here), the backslash is literal: this is a
    // SELECT followed by a real DROP, and the gateway parses it exactly as the server would.
    let e = c
        .simple_query("SELECT 'a\\'; DROP TABLE canary; --'")
        .await
        .unwrap_err();
    assert_blocked(&e, "no-destructive");
    // The mirror image is one harmless SELECT of a string containing "'; DROP ...".
    let rows = c
        .simple_query("SELECT 'a\\''; DROP TABLE canary; --'")
        .await
        .unwrap();
    assert!(rows.iter().any(|m| matches!(m, SimpleQueryMessage::Row(_))));
    // ...and the setting that would change that is refused.
    let e = c
        .simple_query("SET standard_conforming_strings TO 'off'")
        .await
        .unwrap_err();
    assert_blocked(&e, "builtin:standard-conforming-strings");
    assert!(canary_exists(&direct).await);

    // set_config() is SET by another name.
    for sql in [
        "SELECT set_config('standard_conforming_strings', 'off', false)",
        "SELECT set_config('role', 'gatehouse_svc', false)",
        "SET client_encoding = 'SJIS'",
    ] {
        let e = c
            .simple_query(sql)
            .await
            .err()
            .unwrap_or_else(|| panic!("allowed: {sql}"));
        assert_eq!(sqlstate(&e).as_deref(), Some("42501"), "{sql}: {e}");
    }
    // pg_dump's own use of set_config stays allowed.
    c.simple_query("SELECT pg_catalog.set_config('search_path', '', false)")
        .await
        .unwrap();

    let dba = gw.token("dba-3", &["dba"]);
    let d = gw.connect("pol_role", &dba).await;
    d.simple_query("SET ROLE gatehouse_svc").await.unwrap();
    d.simple_query("RESET ROLE").await.unwrap();
}

#[tokio::test]
async fn unparseable_statements_are_blocked_unless_configured_to_forward() {
    let (gw, _direct) = setup("pol_parse").await;
    let token = gw.token("dba-4", &["dba"]);
    let c = gw.connect("pol_parse", &token).await;
    let e = c.simple_query("SELEC 1").await.unwrap_err();
    assert_blocked(&e, "builtin:unparseable");
    assert!(
        db_message(&e).contains("syntax error"),
        "{}",
        db_message(&e)
    );
    c.simple_query("SELECT 1").await.unwrap();

    let pg = cluster();
    let fwd = Gateway::builder()
        .extra(&format!(
            "[[connection]]\nname = \"fwd\"\nupstream = \"127.0.0.1:{}\"\ndatabase = \"pol_parse\"\n\
             user = \"{SVC_USER}\"\npassword_env = \"TEST_DB_PASSWORD\"\nupstream_tls = \"disable\"\n\
             allow_groups = [\"dba\"]\non_parse_error = \"forward\"\n",
            pg.port
        ))
        .start();
    let token = fwd.token("dba-5", &["dba"]);
    let c = fwd.connect("fwd", &token).await;
    let e = c.simple_query("SELEC 1").await.unwrap_err();
    assert_eq!(
        sqlstate(&e).as_deref(),
        Some("42601"),
        "the server's own syntax error"
    );
}

#[test]
fn explain_shows_the_decision_without_running_anything() {
    let gw = Gateway::builder().extra(RULES).start();
    let out = gw.cli(&[
        "explain",
        "--connection",
        "payments",
        "--subject",
        "bot",
        "--group",
        "fraud-bots",
        "SELECT p.card_number FROM payments p; DROP TABLE customers",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert!(text.contains("statement 1: select"), "{text}");
    assert!(text.contains("public.payments.card_number"), "{text}");
    assert!(text.contains("rule \"bulk-card-read\""), "{text}");
    assert!(text.contains("statement 2: drop"), "{text}");
    assert!(text.contains("rule \"no-destructive\""), "{text}");

    let out = gw.cli(&[
        "explain",
        "--connection",
        "payments",
        "--subject",
        "a",
        "--group",
        "dba",
        "SELECT 1",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("decision:  allow"));
}

#[test]
fn check_rejects_rules_that_can_never_match() {
    let gw = Gateway::start();
    let base = std::fs::read_to_string(&gw.config).unwrap();
    let cfg = gw.dir.path().join("bad.toml");
    std::fs::write(
        &cfg,
        format!("{base}\n[[rule]]\nname = \"typo\"\nconnections = [\"*\"]\nstatements = [\"dorp\"]\naction = \"block\"\n"),
    )
    .unwrap();
    let out = std::process::Command::new(bin())
        .args(["check", "-c"])
        .arg(&cfg)
        .env("TEST_DB_PASSWORD", SVC_PASSWORD)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("statements") && err.contains("dorp"), "{err}");
}

/// Statements nested deeper than the analyser goes are refused cleanly; the gateway (whose
/// worker threads parse with big stacks) keeps serving.
#[tokio::test]
async fn deeply_nested_statements_fail_cleanly() {
    let gw = Gateway::start();
    let token = gw.token("deep", &["dba"]);
    let c = gw.connect("payments", &token).await;
    let deep = [
        format!("SELECT {}", vec!["1"; 100_000].join("+")),
        format!("SELECT {}1{}", "(".repeat(20_000), ")".repeat(20_000)),
        format!("SELECT {} 1{}", "(SELECT".repeat(3000), ")".repeat(3000)),
        format!("SELECT {}", vec!["1"; 2_000].join("+")),
    ];
    for sql in &deep {
        let e = c.simple_query(sql).await.unwrap_err();
        assert_blocked(&e, "builtin:unparseable");
        assert_eq!(
            c.query_one("SELECT 1", &[]).await.unwrap().get::<_, i32>(0),
            1
        );
    }
    // Moderately nested statements, which PostgreSQL accepts, still work.
    let ok = format!("SELECT {}", vec!["1"; 500].join("+"));
    c.simple_query(&ok).await.unwrap();
}

/// With the upstream catalog, names resolve as the server resolves them: a table found first in
/// another schema of the search_path is not the protected one, and `*` reads every column.
#[tokio::test]
async fn names_resolve_through_the_upstream_catalog() {
    let (gw, _direct) = setup("pol_catalog").await;
    cluster().psql_as_svc(
        "pol_catalog",
        "CREATE SCHEMA decoy; CREATE TABLE decoy.payments (card_number text); \
         INSERT INTO decoy.payments VALUES ('not a card');",
    );
    let token = gw.token("bot-3", &["fraud-bots"]);
    let c = gw.connect("pol_catalog", &token).await;
    // The server reads decoy.payments here: no card numbers, no approval needed.
    c.simple_query("SET search_path = decoy, public")
        .await
        .unwrap();
    let rows = c
        .simple_query("SELECT card_number FROM payments")
        .await
        .unwrap();
    assert!(rows.iter().any(|m| matches!(m, SimpleQueryMessage::Row(_))));
    // With public first, the same text reads the protected table.
    c.simple_query("SET search_path = public, decoy")
        .await
        .unwrap();
    let e = c
        .simple_query("SELECT card_number FROM payments")
        .await
        .unwrap_err();
    assert_blocked(&e, "bulk-card-read");
    // `*` expands to the table's columns, card_number included.
    let e = c
        .simple_query("SELECT * FROM public.payments")
        .await
        .unwrap_err();
    assert_blocked(&e, "bulk-card-read");

    // explain reads the catalog through the held credential too.
    let out = gw.cli(&[
        "explain",
        "--connection",
        "pol_catalog",
        "--subject",
        "bot",
        "--group",
        "fraud-bots",
        "SELECT * FROM payments",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("public.payments.card_number"), "{text}");
    assert!(text.contains("public.payments.amount"), "{text}");
}

/// The listeners and connection kinds of protocols to come are part of the configuration
/// already: `check` accepts the listeners with a clear warning and refuses a connection it
/// cannot serve, naming the key.
#[test]
fn check_reports_protocols_this_version_does_not_serve() {
    let gw = Gateway::start();
    let base = std::fs::read_to_string(&gw.config).unwrap();
    assert!(base.contains("[listen]\n"), "{base}");
    let check = |text: String| {
        let cfg = gw.dir.path().join("protocols.toml");
        std::fs::write(&cfg, text).unwrap();
        std::process::Command::new(bin())
            .args(["check", "-c"])
            .arg(&cfg)
            .env("TEST_DB_PASSWORD", SVC_PASSWORD)
            .output()
            .unwrap()
    };
    let out = check(base.replacen("[listen]\n", "[listen]\nssh = \"127.0.0.1:2222\"\n", 1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("listen.ssh = \"127.0.0.1:2222\": the SSH adapter is not in this version yet"),
        "{err}"
    );
    let out = check(format!(
        "{base}\n[[connection]]\nname = \"web-1\"\nkind = \"ssh\"\nupstream = \"127.0.0.1:22\"\n\
         user = \"deploy\"\nprivate_key_file = \"id\"\nhost_key = \"SHA256:abc\"\nallow_groups = [\"ops\"]\n"
    ));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("kind") && err.contains("not served by this version yet"),
        "{err}"
    );
}
