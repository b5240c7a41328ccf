//! Rules that hold: encodings, parser state, the gateway's own upstream role, and every
//! destructive form, against a real PostgreSQL where the upstream role is powerful (it owns
//! the tables, may signal backends, reads all statistics and is a member of a superuser
//! role).
//!
//! Every attempt is checked for its effect directly in the database (rows, columns,
//! constraints, large objects, privileges, role settings, the role's password still logging
//! in, the other session alive), in the simple and the extended protocol, and pipelined
//! behind a refused statement.

// Test code: panicking on the unexpected is the point.

use std::process::Command;
use std::sync::OnceLock;

use crate::support::*;
use tokio_postgres::Client;

const DB: &str = "rules_hold";
const CONN: &str = "payments";
/// A database of its own for the test that changes the upstream role's defaults in it.
const STATE_DB: &str = "rules_state";

fn seeded() {
    static SEEDED: OnceLock<()> = OnceLock::new();
    SEEDED.get_or_init(|| {
        let pg = cluster();
        pg.psql_super(
            "postgres",
            &format!(
                "CREATE ROLE rules_power SUPERUSER NOLOGIN;
                 GRANT rules_power TO {SVC_USER};
                 GRANT pg_signal_backend, pg_read_all_stats TO {SVC_USER};
                 CREATE ROLE rules_other NOLOGIN;"
            ),
        );
        pg.create_database_with(
            DB,
            "CREATE TABLE public.victims (id int PRIMARY KEY, note text NOT NULL DEFAULT 'n',
                 code text CONSTRAINT code_not_empty CHECK (code <> ''));
             INSERT INTO public.victims VALUES (1, 'a', 'x'), (2, 'b', 'y');
             SELECT lo_create(424242);
             SELECT 1;",
        );
        pg.create_database_with(
            STATE_DB,
            "CREATE FUNCTION public.to_sjis() RETURNS text LANGUAGE sql AS
                 $f$SELECT set_config('client_encoding', 'SJIS', false)$f$;
             CREATE TABLE public.victims (id int);
             INSERT INTO public.victims VALUES (1), (2);
             CREATE TABLE public.loaded (id int);
             CREATE PROCEDURE public.noop() LANGUAGE sql AS $p$SELECT 1$p$;",
        );
    });
}

fn gateway() -> Gateway {
    seeded();
    let mut b = Gateway::builder();
    b.databases = vec![
        (CONN.to_owned(), DB.to_owned()),
        ("state".to_owned(), STATE_DB.to_owned()),
    ];
    b.extra(&format!(
        r#"
[[rule]]
name = "no-destructive"
connections = ["{CONN}"]
statements = ["drop", "truncate", "delete", "grant"]
action = "block"
"#
    ))
    .start()
}

/// The error of a refused statement: (SQLSTATE, message).
fn refusal(e: &tokio_postgres::Error) -> (String, String) {
    (sqlstate(e).unwrap_or_default(), db_message(e))
}

/// Runs `sql` in the simple and in the extended protocol; both must be refused with 42501
/// naming `rule`.
async fn refused_both(c: &Client, sql: &str, rule: &str) {
    let e = c.simple_query(sql).await.expect_err(sql);
    let (state, msg) = refusal(&e);
    assert_eq!(state, "42501", "{sql}: {msg}");
    assert!(msg.contains(rule), "{sql}: {msg} (expected {rule})");
    let e = c.execute(sql, &[]).await.expect_err(sql);
    let (state, msg) = refusal(&e);
    assert_eq!(state, "42501", "{sql} (extended): {msg}");
    assert!(
        msg.contains(rule),
        "{sql} (extended): {msg} (expected {rule})"
    );
}

async fn scalar(c: &Client, sql: &str) -> String {
    let rows = c.simple_query(sql).await.expect(sql);
    rows.iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
            _ => None,
        })
        .unwrap_or_default()
}

async fn victims_intact(direct: &Client) {
    assert_eq!(
        scalar(direct, "SELECT count(*) FROM public.victims").await,
        "2"
    );
    assert_eq!(
        scalar(
            direct,
            "SELECT string_agg(attname, ',' ORDER BY attnum) FROM pg_attribute
             WHERE attrelid = 'public.victims'::regclass AND attnum > 0 AND NOT attisdropped"
        )
        .await,
        "id,note,code"
    );
    assert_eq!(
        scalar(
            direct,
            "SELECT count(*) FROM pg_constraint WHERE conrelid = 'public.victims'::regclass"
        )
        .await,
        "2"
    );
    assert_eq!(
        scalar(
            direct,
            "SELECT atttypid::regtype FROM pg_attribute
             WHERE attrelid = 'public.victims'::regclass AND attname = 'note'"
        )
        .await,
        "text"
    );
}

async fn no_role_or_database_settings(direct: &Client) {
    assert_eq!(
        scalar(
            direct,
            "SELECT count(*) FROM pg_db_role_setting WHERE setdatabase IS DISTINCT FROM
             (SELECT oid FROM pg_database WHERE datname = 'rules_state')"
        )
        .await,
        "0",
        "ALTER ... SET reached the server"
    );
}

#[tokio::test]
async fn encodings_are_judged_by_what_the_server_uses_on_every_route() {
    let gw = gateway();
    let direct = cluster().direct(DB).await;
    let token = gw.token("enc-bot", &["fraud-bots"]);
    let c = gw.connect(CONN, &token).await;
    for sql in [
        "SET client_encoding = 'SJIS'",
        "SET client_encoding TO 'Shift_JIS_2004'",
        "SET client_encoding = 'win932'",
        "SET client_encoding = 'WINDOWS936'",
        "SET NAMES 'big5'",
        "SET client_encoding = 'something-new'",
        "SET LOCAL client_encoding = 'uhc'",
        "SELECT set_config('client_encoding', 'SJIS'::text, false)",
        "SELECT pg_catalog.set_config('CLIENT_ENCODING', CAST('gbk' AS text), false)",
        "SELECT set_config('client_encoding', 'sj' || 'is', false)",
        "ALTER ROLE CURRENT_USER SET client_encoding = 'SJIS'",
        "ALTER DATABASE rules_hold SET client_encoding = 'johab'",
    ] {
        refused_both(&c, sql, "builtin:").await;
    }
    // A name the gateway cannot evaluate, with a value some guarded setting takes.
    refused_both(
        &c,
        "SELECT set_config(name, 'sjis', false) FROM pg_settings WHERE name = 'client_encoding'",
        "builtin:set-config-unknown",
    )
    .await;
    assert_eq!(scalar(&c, "SHOW client_encoding").await, "UTF8");
    // Harmless encodings and spellings pass.
    c.simple_query("SET client_encoding = 'latin1'; RESET client_encoding")
        .await
        .unwrap();
    assert_eq!(scalar(&c, "SHOW client_encoding").await, "UTF8");
    no_role_or_database_settings(&direct).await;

    // At startup, under any spelling of the name.
    for env in [
        ("PGCLIENTENCODING", "WIN932"),
        ("PGOPTIONS", "-c Client_Encoding=sjis"),
    ] {
        let out = psql_via(&gw, &token, &[env], "SELECT 1");
        assert!(!out.status.success(), "{env:?} connected");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("client_encoding"), "{err}");
    }
}

#[tokio::test]
async fn a_pipelined_statement_is_never_read_under_a_state_the_server_does_not_have() {
    let gw = gateway();
    let direct = cluster().direct(DB).await;
    let token = gw.token("pipe-bot", &["fraud-bots"]);
    let mut w = WireClient::connect(&gw, CONN, &token).await;
    // The change of state and the smuggling statement in one write: the first is refused,
    // the second is parsed the one way the server parses it.
    for (first, second) in [
        (
            "SELECT set_config('standard_conforming_strings', 'off'::text, false)",
            &b"SELECT 'a\\'; DELETE FROM public.victims; --'"[..],
        ),
        (
            "SET client_encoding = 'SJIS'",
            &b"SELECT '\x95\\'; DELETE FROM public.victims; --'"[..],
        ),
    ] {
        let mut q1 = first.as_bytes().to_vec();
        q1.push(0);
        let mut q2 = second.to_vec();
        q2.push(0);
        w.send(b'Q', &q1).await;
        w.send(b'Q', &q2).await;
        let a = w.until_ready().await;
        let e = wire_error(&a).expect("first refused");
        assert!(e.iter().any(|(t, v)| *t == b'C' && v == "42501"), "{e:?}");
        let _ = w.until_ready().await;
        victims_intact(&direct).await;
    }
    let a = w.simple("SHOW standard_conforming_strings").await;
    assert_eq!(wire_data_rows(&a)[0][0].as_deref(), Some(&b"on"[..]));
}

#[tokio::test]
async fn parser_settings_cannot_be_changed_by_any_route() {
    let gw = gateway();
    let direct = cluster().direct(DB).await;
    let token = gw.token("scs-bot", &["fraud-bots"]);
    let c = gw.connect(CONN, &token).await;
    for sql in [
        "SET standard_conforming_strings = off",
        "SET standard_conforming_strings TO 'of'",
        "SET SESSION standard_conforming_strings = false",
        "SELECT set_config('standard_conforming_strings', 'off'::text, false)",
        "SELECT set_config('standard_conforming_strings', lower('OFF'), false)",
        "SELECT set_config(lower('STANDARD_CONFORMING_STRINGS'), 'off', false)",
        "SET backslash_quote = on",
        "SELECT set_config('backslash_quote', 'safe_encoding', true)",
        "ALTER ROLE rules_other SET standard_conforming_strings = off",
        "ALTER DATABASE rules_hold SET backslash_quote = on",
    ] {
        refused_both(&c, sql, "builtin:").await;
    }
    assert_eq!(scalar(&c, "SHOW standard_conforming_strings").await, "on");
    assert_eq!(scalar(&c, "SHOW backslash_quote").await, "safe_encoding");
    no_role_or_database_settings(&direct).await;
    // At startup too, under any case of the name (PGOPTIONS included).
    for opts in [
        "-c standard_conforming_strings=off",
        "-c Standard_Conforming_Strings=off",
        "--backslash-quote=on",
    ] {
        let out = psql_via(&gw, &token, &[("PGOPTIONS", opts)], "SELECT 1");
        assert!(!out.status.success(), "{opts} connected");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("refused by Gatehouse"), "{opts}: {err}");
    }
}

#[tokio::test]
async fn a_state_reached_where_the_gateway_cannot_see_ends_the_session() {
    let gw = gateway();
    let token = gw.token("fn-bot", &["fraud-bots"]);
    let c = gw.connect("state", &token).await;
    // A function created outside the gateway changes the encoding: the server reports it,
    // and the gateway ends the session instead of parsing on under a wrong assumption.
    let e = c.simple_query("SELECT public.to_sjis()").await;
    let gone = match e {
        Err(e) => e.is_closed() || db_message(&e).contains("ends this session"),
        Ok(_) => c.simple_query("SELECT 1").await.is_err(),
    };
    assert!(gone, "the session went on under SJIS");
    assert!(c.is_closed() || c.simple_query("SELECT 1").await.is_err());
    gw.wait_for_record(|r| r["kind"] == "session_end");

    // The same call with the smuggling statement pipelined behind it in one write: the
    // second is analysed only after the server answered the first, and by then the session
    // has ended.
    let mut w = WireClient::connect(&gw, "state", &token).await;
    let mut q1 = b"SELECT public.to_sjis()".to_vec();
    q1.push(0);
    let mut q2 = b"SELECT '\x95\\'; DELETE FROM public.victims; --'".to_vec();
    q2.push(0);
    w.send(b'Q', &q1).await;
    w.send(b'Q', &q2).await;
    let mut saw_fatal = false;
    for _ in 0..20 {
        let (tag, body) = w.read_msg().await;
        if tag == b'E' && String::from_utf8_lossy(&body).contains("ends this session") {
            saw_fatal = true;
            break;
        }
    }
    assert!(saw_fatal, "the session was not ended");
    let direct = cluster().direct(STATE_DB).await;
    let n: i64 = direct
        .query_one("SELECT count(*) FROM public.victims", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 2, "the pipelined DELETE ran under SJIS");

    // A barrier never holds the data of a COPY FROM STDIN that follows the call in the same
    // Query (the server waits for it before it answers).
    let mut child = Command::new("timeout")
        .args([
            "30",
            "psql",
            "-X",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            "CALL public.noop(); COPY public.loaded FROM STDIN",
        ])
        .arg(format!(
            "host=127.0.0.1 port={} dbname=state user=agent sslmode=disable",
            gw.pg_port
        ))
        .env("PGPASSWORD", &token)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("psql");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"7\n8\n\\.\n").unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let n: i64 = direct
        .query_one("SELECT count(*) FROM public.loaded", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 2);

    // A default set outside the gateway: new sessions are refused, not parsed wrongly.
    // (Clients send their client_encoding at startup, which overrides a role default; the
    // parser setting they do not send.)
    let pg = cluster();
    pg.psql_super(
        STATE_DB,
        &format!(
            "ALTER ROLE {SVC_USER} IN DATABASE {STATE_DB} SET standard_conforming_strings = off"
        ),
    );
    let r = gw.try_connect("state", &token).await;
    pg.psql_super(
        STATE_DB,
        &format!("ALTER ROLE {SVC_USER} IN DATABASE {STATE_DB} RESET standard_conforming_strings"),
    );
    let Err(e) = r else {
        panic!("a session with standard_conforming_strings off was admitted");
    };
    assert!(
        db_message(&e).contains("standard_conforming_strings"),
        "{}",
        db_message(&e)
    );
    gw.wait_for_record(|r| {
        r["kind"] == "login_failed" && r["detail"]["reason"] == "upstream_state_refused"
    });
}

#[tokio::test]
async fn the_gateways_own_role_cannot_be_changed_through_it() {
    let gw = gateway();
    let direct = cluster().direct(DB).await;
    let token = gw.token("role-bot", &["fraud-bots"]);
    let c = gw.connect(CONN, &token).await;
    let before = scalar(
        &direct,
        &format!(
            "SELECT string_agg(b.rolname, ',' ORDER BY b.rolname) FROM pg_auth_members m
             JOIN pg_roles r ON r.oid = m.member JOIN pg_roles b ON b.oid = m.roleid
             WHERE r.rolname = '{SVC_USER}'"
        ),
    )
    .await;
    for sql in [
        "ALTER ROLE CURRENT_USER PASSWORD 'taken-over'",
        "ALTER USER current_user WITH PASSWORD 'taken-over'",
        "ALTER ROLE SESSION_USER VALID UNTIL '2000-01-01'",
        &format!("ALTER USER {SVC_USER} PASSWORD 'taken-over'"),
        &format!("ALTER ROLE {} NOLOGIN", SVC_USER.to_uppercase()),
        &format!("ALTER ROLE {SVC_USER} RENAME TO gatehouse_gone"),
        &format!("REVOKE rules_power FROM {SVC_USER}"),
        &format!("GRANT pg_read_server_files TO {SVC_USER}"),
        &format!("ALTER GROUP rules_power DROP USER {SVC_USER}"),
        "ALTER ROLE ALL SET work_mem = '64kB'",
        &format!("ALTER ROLE {SVC_USER} SET search_path = 'nowhere'"),
    ] {
        refused_both(&c, sql, "builtin:upstream-role").await;
    }
    // Another role may be changed as the rules say.
    // Another role is the rules' and the server's business: the gateway passes it on (the
    // server itself refuses, the role lacking CREATEROLE).
    let e = c
        .simple_query("ALTER ROLE rules_other CONNECTION LIMIT 3")
        .await
        .unwrap_err();
    assert!(!db_message(&e).contains("builtin:"), "{}", db_message(&e));
    // The password still logs in, the memberships and the name are unchanged.
    let again = cluster().direct(DB).await;
    assert_eq!(scalar(&again, "SELECT current_user").await, SVC_USER);
    let after = scalar(
        &again,
        &format!(
            "SELECT string_agg(b.rolname, ',' ORDER BY b.rolname) FROM pg_auth_members m
             JOIN pg_roles r ON r.oid = m.member JOIN pg_roles b ON b.oid = m.roleid
             WHERE r.rolname = '{SVC_USER}'"
        ),
    )
    .await;
    assert_eq!(before, after);
    assert_eq!(
        scalar(&again, &format!("SELECT rolvaliduntil IS NULL AND rolcanlogin FROM pg_roles WHERE rolname = '{SVC_USER}'")).await,
        "t"
    );
    no_role_or_database_settings(&again).await;

    // `gatehouse explain` shows the same refusal.
    let out = gw.cli(&[
        "explain",
        "--connection",
        CONN,
        "--subject",
        "role-bot",
        "--group",
        "fraud-bots",
        "ALTER ROLE CURRENT_USER PASSWORD 'x'",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("builtin:upstream-role"), "{text}");
}

#[tokio::test]
async fn other_sessions_can_be_neither_signalled_nor_read() {
    let gw = gateway();
    let alice = gw.connect(CONN, &gw.token("alice", &["fraud-bots"])).await;
    let mallory = gw
        .connect(CONN, &gw.token("mallory", &["fraud-bots"]))
        .await;
    let pid = scalar(&alice, "SELECT pg_backend_pid()").await;
    // Alice's statement text sits in pg_stat_activity while it runs.
    alice
        .simple_query("SELECT 'alice-secret-literal' AS s")
        .await
        .unwrap();
    for sql in [
        format!("SELECT pg_terminate_backend({pid})"),
        format!("SELECT pg_catalog.pg_cancel_backend({pid})"),
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid <> pg_backend_pid()"
            .to_owned(),
    ] {
        refused_both(&mallory, &sql, "builtin:").await;
    }
    for sql in [
        "SELECT query FROM pg_stat_activity",
        "SELECT query FROM pg_catalog.pg_stat_activity WHERE pid <> pg_backend_pid()",
        "SELECT * FROM pg_stat_get_activity(NULL)",
        "SELECT pg_stat_get_backend_activity(1)",
    ] {
        refused_both(&mallory, sql, "builtin:session-activity").await;
    }
    // Alice is still there.
    assert_eq!(scalar(&alice, "SELECT 7").await, "7");
    // Her own cancel request still works (the client's way to stop its own work).
    let cancel = alice.cancel_token();
    let slow = alice.simple_query("SELECT pg_sleep(30) AS alice_own_cancel");
    let (r, _) = tokio::join!(slow, async {
        cluster().wait_until_running("alice_own_cancel").await;
        cancel.cancel_query(tokio_postgres::NoTls).await
    });
    assert_eq!(sqlstate(&r.unwrap_err()).as_deref(), Some("57014"));
}

#[tokio::test]
async fn destructive_forms_count_as_the_kind_they_amount_to() {
    let gw = gateway();
    let direct = cluster().direct(DB).await;
    let token = gw.token("ddl-bot", &["fraud-bots"]);
    let c = gw.connect(CONN, &token).await;
    for sql in [
        "ALTER TABLE public.victims DROP COLUMN code",
        "ALTER TABLE public.victims DROP CONSTRAINT code_not_empty",
        "ALTER TABLE public.victims ALTER COLUMN note DROP DEFAULT",
        "ALTER TABLE public.victims ALTER COLUMN note DROP NOT NULL",
        "ALTER TABLE public.victims ALTER COLUMN note TYPE int USING 0",
        "ALTER TABLE public.victims ADD COLUMN x int, DROP COLUMN note",
        "SELECT lo_unlink(424242)",
        "SELECT lo_unlink(oid) FROM pg_largeobject_metadata",
        "SELECT pg_catalog.lo_truncate(lo_open(424242, 131072), 0)",
        "GRANT ALL ON public.victims TO PUBLIC",
        "GRANT ALL ON ALL TABLES IN SCHEMA public TO rules_other",
        "REVOKE SELECT ON public.victims FROM PUBLIC",
        "ALTER DEFAULT PRIVILEGES GRANT ALL ON TABLES TO PUBLIC",
        "ALTER TABLE public.victims OWNER TO rules_other",
    ] {
        refused_both(&c, sql, "no-destructive").await;
    }
    victims_intact(&direct).await;
    assert_eq!(
        scalar(
            &direct,
            "SELECT count(*) FROM pg_largeobject_metadata WHERE oid = 424242"
        )
        .await,
        "1"
    );
    assert_eq!(
        scalar(
            &direct,
            "SELECT relacl IS NULL FROM pg_class WHERE oid = 'public.victims'::regclass"
        )
        .await,
        "t"
    );
    assert_eq!(
        scalar(&direct, "SELECT count(*) FROM pg_default_acl").await,
        "0"
    );
    // What the rule does not cover still runs.
    c.simple_query("ALTER TABLE public.victims ALTER COLUMN note SET DEFAULT 'm'")
        .await
        .unwrap();

    // The record holds the statement as the server would have seen it.
    let rec = gw.wait_for_record(|r| {
        r["kind"] == "statement"
            && r["outcome"] == "blocked"
            && r["statement"]
                .as_str()
                .is_some_and(|s| s.contains("DROP COLUMN code"))
    });
    assert_eq!(rec["rule"], "no-destructive");
}

/// Runs psql through the gateway with extra environment (libpq's PG* variables).
fn psql_via(gw: &Gateway, token: &str, env: &[(&str, &str)], sql: &str) -> std::process::Output {
    Command::new("psql")
        .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .arg(format!(
            "host=127.0.0.1 port={} dbname={CONN} user=agent sslmode=disable",
            gw.pg_port
        ))
        .env("PGPASSWORD", token)
        .envs(env.iter().copied())
        .output()
        .expect("psql")
}

#[tokio::test]
async fn libpq_environment_settings_connect() {
    let gw = gateway();
    let token = gw.token("env-user", &["fraud-bots"]);
    let env = [
        ("PGTZ", "Europe/Paris"),
        ("PGDATESTYLE", "ISO, DMY"),
        ("PGGEQO", "off"),
        ("PGOPTIONS", "-c statement_timeout=5s --lock-timeout=2s"),
    ];
    let out = psql_via(
        &gw,
        &token,
        &env,
        "SELECT current_setting('TimeZone') || '|' || current_setting('DateStyle') || '|' || \
         current_setting('geqo') || '|' || current_setting('statement_timeout') || '|' || \
         current_setting('lock_timeout')",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "Europe/Paris|ISO, DMY|off|5s|2s"
    );
    // pgbench and pg_dump with the same environment.
    let conn = format!(
        "host=127.0.0.1 port={} dbname={CONN} user=agent sslmode=disable",
        gw.pg_port
    );
    let out = Command::new("pg_dump")
        .args(["--schema-only", "-t", "public.victims", "-d", &conn])
        .env("PGPASSWORD", &token)
        .envs(env.iter().copied())
        .output()
        .expect("pg_dump");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("CREATE TABLE public.victims"));
    if let Some(pgbench) = pg_tool("pgbench") {
        let script = gw.dir.path().join("rules-bench.sql");
        std::fs::write(&script, "SELECT count(*) FROM public.victims;\n").unwrap();
        let out = Command::new(pgbench)
            .args(["-n", "-t", "5", "-f"])
            .arg(&script)
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &gw.pg_port.to_string(),
                "-U",
                "agent",
                CONN,
            ])
            .env("PGPASSWORD", &token)
            .env("PGSSLMODE", "disable")
            .envs(env.iter().copied())
            .output()
            .expect("pgbench");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Other settings and switches are refused by name.
    for (opts, named) in [
        ("-c role=postgres", "\"role\""),
        (
            "-c session_authorization=postgres",
            "\"session_authorization\"",
        ),
        ("-c log_statement=none", "\"log_statement\""),
        ("-P", "\"-P\""),
    ] {
        let out = psql_via(&gw, &token, &[("PGOPTIONS", opts)], "SELECT 1");
        assert!(!out.status.success(), "{opts} connected");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(named), "{opts}: {err}");
    }
}

/// A PostgreSQL client tool from PATH or the server's bin directory.
fn pg_tool(name: &str) -> Option<std::path::PathBuf> {
    if let Ok(p) = which(name) {
        return Some(p);
    }
    for v in ["18", "17", "16", "15", "14", "13"] {
        let p = std::path::PathBuf::from(format!("/usr/lib/postgresql/{v}/bin/{name}"));
        if p.exists() {
            return Some(p);
        }
    }
    None
}

fn which(name: &str) -> Result<std::path::PathBuf, ()> {
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(name))
                .find(|p| p.is_file())
        })
        .ok_or(())
}
