//! Upstream pooling: a server connection serves one session after another (the upstream
//! login is paid once), is reset in between so that nothing of one identity's session reaches
//! the next, is closed instead when the reset could not undo what the session did, and stays
//! within its bounds (`max_upstream`, the wait and idle timeouts). Cancel requests still reach
//! the right server process.

use std::time::{Duration, Instant};

use crate::support::*;
use tokio_postgres::SimpleQueryMessage;

/// A gateway whose `payments` connection points at a fresh database `db`; `extra` is
/// appended to the connection's block (pool settings) or after it (rules).
fn gateway(db: &str, connection_keys: &str, after: &str) -> Gateway {
    cluster().create_database(db);
    let mut b = Gateway::builder();
    b.databases = vec![("payments".into(), db.into())];
    b.start_edited(|cfg| {
        let cfg = cfg.replacen(
            "allow_groups = [\"fraud-bots\", \"dba\"]\n",
            &format!("allow_groups = [\"fraud-bots\", \"dba\"]\n{connection_keys}\n"),
            1,
        );
        format!("{cfg}\n{after}")
    })
}

/// The first column of the first row of a simple query, as text (`None` for NULL).
async fn one(c: &tokio_postgres::Client, sql: &str) -> Option<String> {
    let msgs = c
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {}", db_message(&e)));
    msgs.iter().find_map(|m| match m {
        SimpleQueryMessage::Row(r) => Some(r.get(0).map(str::to_owned)),
        _ => None,
    })?
}

async fn backend_pid(c: &tokio_postgres::Client) -> i32 {
    one(c, "SELECT pg_backend_pid()")
        .await
        .and_then(|p| p.parse().ok())
        .expect("a backend pid")
}

/// Idle pooled connections of `payments` as the gateway reports them.
async fn idle_connections(gw: &Gateway) -> u64 {
    gw.metrics()
        .await
        .lines()
        .find(|l| l.starts_with("gatehouse_pool_idle_connections{connection=\"payments\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// Waits (bounded) until `cond` holds.
async fn wait_until<F, Fut>(what: &str, gw: &Gateway, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(15);
    while !cond().await {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; log: {}",
            gw.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether a server process with this pid exists (checked directly, not through the gateway).
async fn server_process_exists(direct: &tokio_postgres::Client, pid: i32) -> bool {
    let row = direct
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE pid = $1",
            &[&pid],
        )
        .await
        .expect("pg_stat_activity");
    row.get::<_, i64>(0) == 1
}

/// Ends a client with a Terminate (tokio-postgres sends one when the client is dropped) and
/// waits for the session's end record.
async fn end_session(gw: &Gateway, c: tokio_postgres::Client, sessions_before: usize) {
    drop(c);
    let deadline = Instant::now() + Duration::from_secs(15);
    while session_ends(gw) <= sessions_before {
        assert!(
            Instant::now() < deadline,
            "no session_end: {}",
            gw.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn session_ends(gw: &Gateway) -> usize {
    gw.export()
        .iter()
        .filter(|r| r["kind"] == "session_end")
        .count()
}

/// One whole session (connect, read the server pid, Terminate, `session_end` recorded):
/// returns the server process that served it.
async fn one_session(gw: &Gateway, token: &str) -> i32 {
    let c = gw.connect("payments", token).await;
    let pid = backend_pid(&c).await;
    let before = session_ends(gw);
    end_session(gw, c, before).await;
    pid
}

async fn wait_pooled(gw: &Gateway) {
    wait_until("the connection to be pooled", gw, || async {
        idle_connections(gw).await == 1
    })
    .await;
}

async fn wait_gone(gw: &Gateway, direct: &tokio_postgres::Client, pid: i32, what: &str) {
    wait_until(what, gw, || server_process_exists(direct, pid).then_not()).await;
}

const ALLOW_SET_ROLE_AND_DO: &str = r#"
[[rule]]
name = "may-set-role-and-run-do"
connections = ["*"]
statements = ["set_role", "do"]
action = "allow"
"#;

#[tokio::test]
async fn a_reused_server_connection_carries_nothing_of_the_previous_session() {
    let pg = cluster();
    let gw = gateway("pool_reset", "", ALLOW_SET_ROLE_AND_DO);
    pg.psql_super(
        "pool_reset",
        &format!(
            "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'pool_other') \
             THEN CREATE ROLE pool_other NOLOGIN; END IF; END $$; \
             GRANT pool_other TO {SVC_USER}; CREATE SCHEMA other AUTHORIZATION {SVC_USER};"
        ),
    );
    let direct = pg.direct("pool_reset").await;
    let alice = gw.token("alice", &["dba"]);
    let bob = gw.token("bob", &["fraud-bots"]);

    // Alice leaves every kind of session state behind.
    let a = gw.connect("payments", &alice).await;
    let pid = backend_pid(&a).await;
    a.batch_execute(
        "SET work_mem = '77kB'; SET myapp.tenant = 'acme'; SET search_path = other; \
         CREATE TEMP TABLE stash AS SELECT '4111111111111111'::text AS pan; \
         PREPARE leftover AS SELECT 1; \
         BEGIN; DECLARE held CURSOR WITH HOLD FOR SELECT 1; COMMIT; \
         SELECT pg_advisory_lock(4242); LISTEN pool_channel; SET ROLE pool_other",
    )
    .await
    .unwrap_or_else(|e| panic!("session state: {}", db_message(&e)));
    a.prepare("SELECT 2")
        .await
        .expect("a protocol-level prepared statement");
    assert_eq!(
        one(&a, "SELECT current_user").await.as_deref(),
        Some("pool_other")
    );
    let before = session_ends(&gw);
    end_session(&gw, a, before).await;
    wait_until("the connection to be pooled", &gw, || async {
        idle_connections(&gw).await == 1
    })
    .await;

    // Bob gets the very same server process...
    let b = gw.connect("payments", &bob).await;
    assert_eq!(
        backend_pid(&b).await,
        pid,
        "the server connection was reused"
    );
    // ...and none of Alice's state.
    assert_eq!(
        one(&b, "SELECT current_user").await.as_deref(),
        Some(SVC_USER)
    );
    let fresh = |sql: &'static str| {
        let direct = &direct;
        async move {
            direct
                .simple_query(sql)
                .await
                .unwrap()
                .iter()
                .find_map(|m| match m {
                    SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
                    _ => None,
                })
        }
    };
    assert_eq!(one(&b, "SHOW work_mem").await, fresh("SHOW work_mem").await);
    assert_ne!(one(&b, "SHOW work_mem").await.as_deref(), Some("77kB"));
    let tenant = one(&b, "SELECT current_setting('myapp.tenant', true)").await;
    assert!(
        tenant.as_deref().unwrap_or("").is_empty(),
        "custom setting crossed: {tenant:?}"
    );
    assert_eq!(
        one(&b, "SHOW search_path").await,
        fresh("SHOW search_path").await
    );
    assert_eq!(
        one(
            &b,
            "SELECT count(*) FROM pg_class WHERE relpersistence = 't'"
        )
        .await
        .as_deref(),
        Some("0"),
        "temporary table crossed"
    );
    assert_eq!(
        one(&b, "SELECT count(*) FROM pg_prepared_statements")
            .await
            .as_deref(),
        Some("0"),
        "prepared statements crossed"
    );
    let e = b.simple_query("EXECUTE leftover").await.unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("26000"));
    assert_eq!(
        one(&b, "SELECT count(*) FROM pg_cursors").await.as_deref(),
        Some("0"),
        "cursor crossed"
    );
    assert_eq!(
        one(&b, "SELECT count(*) FROM pg_listening_channels()")
            .await
            .as_deref(),
        Some("0"),
        "LISTEN crossed"
    );
    let locks: i64 = direct
        .query_one(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = $1",
            &[&pid],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(locks, 0, "advisory lock crossed");

    // The records say which session reused which server process.
    let starts: Vec<serde_json::Value> = gw
        .export()
        .into_iter()
        .filter(|r| r["kind"] == "session_start")
        .collect();
    let reused: Vec<(&str, bool)> = starts
        .iter()
        .map(|r| {
            (
                r["subject"].as_str().unwrap_or(""),
                r["detail"]["upstream_reused"].as_bool().unwrap_or(false),
            )
        })
        .collect();
    assert_eq!(reused, vec![("alice", false), ("bob", true)]);
    for r in &starts {
        assert_eq!(r["detail"]["upstream_pid"].as_i64(), Some(i64::from(pid)));
    }
}

#[tokio::test]
async fn open_failed_or_unfinished_sessions_are_closed_not_pooled() {
    let pg = cluster();
    let gw = gateway("pool_dirty", "", ALLOW_SET_ROLE_AND_DO);
    pg.psql_as_svc("pool_dirty", "CREATE TABLE marks (v text)");
    let direct = pg.direct("pool_dirty").await;
    let token = gw.token("alice", &["dba"]);

    let cases: [(&str, &str); 3] = [
        (
            "open transaction",
            "BEGIN; INSERT INTO marks VALUES ('open')",
        ),
        ("failed transaction", "BEGIN; SELECT 1/0"),
        (
            "code the gateway cannot see into",
            "DO $$ BEGIN PERFORM 1; END $$",
        ),
    ];
    for (what, sql) in cases {
        let c = gw.connect("payments", &token).await;
        let pid = backend_pid(&c).await;
        let _ = c.batch_execute(sql).await;
        let before = session_ends(&gw);
        end_session(&gw, c, before).await;
        wait_until(
            &format!("the server process of a session with {what} to end"),
            &gw,
            || server_process_exists(&direct, pid).then_not(),
        )
        .await;
        assert_eq!(idle_connections(&gw).await, 0, "{what}: pooled");
    }
    // The open transaction's write never committed.
    let n: i64 = direct
        .query_one("SELECT count(*) FROM marks", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);

    // A client that leaves without waiting for its answer is not pooled either.
    let mut w = WireClient::connect(&gw, "payments", &token).await;
    let pid = {
        let msgs = w.simple("SELECT pg_backend_pid()").await;
        let rows = wire_data_rows(&msgs);
        String::from_utf8(rows[0][0].clone().unwrap())
            .unwrap()
            .parse::<i32>()
            .unwrap()
    };
    let before = session_ends(&gw);
    let mut q = b"SELECT pg_sleep(0.2)".to_vec();
    q.push(0);
    w.send(b'Q', &q).await;
    w.send(b'X', &[]).await;
    drop(w);
    let deadline = Instant::now() + Duration::from_secs(15);
    while session_ends(&gw) == before {
        assert!(
            Instant::now() < deadline,
            "no session end: {}",
            gw.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_gone(
        &gw,
        &direct,
        pid,
        "the pipelined session's server process to end",
    )
    .await;
}

/// `!` for a future of `bool`.
trait ThenNot: std::future::Future<Output = bool> + Sized {
    fn then_not(self) -> impl std::future::Future<Output = bool> {
        async move { !self.await }
    }
}
impl<F: std::future::Future<Output = bool>> ThenNot for F {}

#[tokio::test]
async fn sessions_with_other_startup_parameters_get_other_server_connections() {
    let gw = gateway("pool_params", "", "");
    let token = gw.token("alice", &["dba"]);
    let connect = |app: &'static str| {
        let s = format!(
            "{} application_name={app}",
            gw.conn_str("payments", "agent", &token)
        );
        async move {
            let (c, conn) = tokio_postgres::connect(&s, tokio_postgres::NoTls)
                .await
                .expect("connect");
            tokio::spawn(conn);
            c
        }
    };
    let x = connect("job-x").await;
    let pid_x = backend_pid(&x).await;
    let before = session_ends(&gw);
    end_session(&gw, x, before).await;
    wait_pooled(&gw).await;

    let y = connect("job-y").await;
    assert_ne!(
        backend_pid(&y).await,
        pid_x,
        "other parameters, other connection"
    );
    assert_eq!(
        one(&y, "SHOW application_name").await.as_deref(),
        Some("job-y")
    );
    let x2 = connect("job-x").await;
    assert_eq!(backend_pid(&x2).await, pid_x, "same parameters reuse it");
    assert_eq!(
        one(&x2, "SHOW application_name").await.as_deref(),
        Some("job-x")
    );
}

#[tokio::test]
async fn max_upstream_bounds_the_server_connections_and_a_waiting_client_gets_a_clear_error() {
    let gw = gateway(
        "pool_bounds",
        "max_upstream = 1\npool_wait_timeout = \"1s\"",
        "",
    );
    let token = gw.token("alice", &["dba"]);
    let a = gw.connect("payments", &token).await;
    let pid = backend_pid(&a).await;

    // The one server connection is busy: the next client is refused after the wait.
    let e = match gw.try_connect("payments", &token).await {
        Ok(_) => panic!("a second upstream connection was opened beyond max_upstream = 1"),
        Err(e) => e,
    };
    assert_eq!(sqlstate(&e).as_deref(), Some("53300"), "{e}");
    assert!(
        db_message(&e).contains("max_upstream"),
        "the error says why: {}",
        db_message(&e)
    );
    gw.wait_for_record(|r| {
        r["kind"] == "login_failed" && r["detail"]["reason"] == "pool_exhausted"
    });

    // A client waiting while the connection is handed back gets it.
    let waiting = {
        let s = gw.conn_str("payments", "agent", &token);
        tokio::spawn(async move {
            let (c, conn) = tokio_postgres::connect(&s, tokio_postgres::NoTls).await?;
            tokio::spawn(conn);
            Ok::<_, tokio_postgres::Error>(c)
        })
    };
    drop(a);
    let b = waiting
        .await
        .unwrap()
        .expect("the waiting client got the connection");
    assert_eq!(backend_pid(&b).await, pid);
    assert_eq!(one(&b, "SELECT 1").await.as_deref(), Some("1"));
}

#[tokio::test]
async fn idle_server_connections_close_after_the_idle_timeout_and_broken_ones_are_replaced() {
    let pg = cluster();
    let gw = gateway("pool_idle", "pool_idle_timeout = \"1s\"", "");
    let direct = pg.direct("pool_idle").await;
    let token = gw.token("alice", &["dba"]);

    let pid = one_session(&gw, &token).await;
    wait_gone(&gw, &direct, pid, "the idle connection to close").await;
    assert_eq!(idle_connections(&gw).await, 0);

    // A pooled connection the server ended while idle is not handed out.
    let gw = gateway("pool_broken", "", "");
    let direct = pg.direct("pool_broken").await;
    let token = gw.token("alice", &["dba"]);
    let pid = one_session(&gw, &token).await;
    wait_pooled(&gw).await;
    let _ = pg.psql_super("postgres", &format!("SELECT pg_terminate_backend({pid})"));
    wait_gone(&gw, &direct, pid, "the terminated process to end").await;
    let b = gw.connect("payments", &token).await;
    let pid_b = backend_pid(&b).await;
    assert_ne!(pid_b, pid);
    assert_eq!(one(&b, "SELECT 1").await.as_deref(), Some("1"));
}

#[tokio::test]
async fn a_cancel_reaches_the_backend_of_a_reused_connection() {
    let gw = gateway("pool_cancel", "", "");
    let token = gw.token("alice", &["dba"]);
    let pid = one_session(&gw, &token).await;
    wait_pooled(&gw).await;

    let b = gw.connect("payments", &token).await;
    assert_eq!(backend_pid(&b).await, pid);
    let cancel = b.cancel_token();
    let started = Instant::now();
    let sleeping = tokio::spawn(async move { b.simple_query("SELECT pg_sleep(60)").await });
    // Cancel once the statement is running on the server.
    let direct = cluster().direct("pool_cancel").await;
    wait_until("the statement to run", &gw, || async {
        let row = direct
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = $1 AND state = 'active'",
                &[&pid],
            )
            .await
            .unwrap();
        row.get::<_, i64>(0) == 1
    })
    .await;
    cancel
        .cancel_query(tokio_postgres::NoTls)
        .await
        .expect("cancel request");
    let e = sleeping.await.unwrap().unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("57014"), "{e}");
    assert!(started.elapsed() < Duration::from_secs(60));
}

#[tokio::test]
async fn pool_none_logs_in_for_every_session_and_ends_the_server_session_with_it() {
    let pg = cluster();
    let gw = gateway("pool_none", "pool = \"none\"", "");
    let direct = pg.direct("pool_none").await;
    let token = gw.token("alice", &["dba"]);
    let pid = one_session(&gw, &token).await;
    wait_gone(&gw, &direct, pid, "the server process to end").await;
    let b = gw.connect("payments", &token).await;
    assert_ne!(backend_pid(&b).await, pid);
}
