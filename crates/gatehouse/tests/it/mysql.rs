//! The MySQL adapter end to end: the `mariadb` CLI (TLS by default, or the cleartext plugin)
//! through `listen.mysql` to a throwaway MariaDB, with the gateway's token as the password.
//! Each test checks what the client saw, what reached the server and what the audit recorded,
//! and the attacker's tests try the ways around masking and rules that MySQL offers
//! (executable comments, derived tables, computed columns, warnings, inference by WHERE).

use std::process::{Command, Output};

use crate::support::mariadb::mariadb;
use crate::support::{Gateway, api, pending_approval};

const MASKS: &str = r#"
[[mask]]
connections = ["shop"]
columns = ["shop.payments.card_number"]
detectors = ["pan"]
style = "last4"
"#;

const RULES: &str = r#"
[[rule]]
name = "no-deletes"
connections = ["shop"]
statements = ["delete", "truncate", "drop"]
action = "block"

[[rule]]
name = "notes-need-approval"
connections = ["shop"]
groups = ["fraud-bots"]
reads = ["shop.payments.note"]
action = "approve"
approvers = ["security"]
"#;

fn gateway(extra: &str) -> Gateway {
    Gateway::builder().mysql().extra(extra).start()
}

/// The `mariadb` CLI against the gateway: batch mode, no column names, no auto-rehash.
fn mysql_cli(gw: &Gateway, token: &str, db: Option<&str>, sql: &str, extra: &[&str]) -> Output {
    cli_at(gw.mysql_port.expect("listen.mysql"), token, db, sql, extra)
}

/// [`mysql_cli`] by port, for a client that runs in its own thread.
fn cli_at(port: u16, token: &str, db: Option<&str>, sql: &str, extra: &[&str]) -> Output {
    let port = port.to_string();
    let mut cmd = Command::new("mariadb");
    cmd.arg("--no-defaults")
        .args(["-h", "127.0.0.1", "-P", &port, "-u", "fraud-bot"])
        .arg(format!("-p{token}"))
        .args(["-N", "-B", "-A", "--connect-timeout=10"])
        .args(extra)
        .args(["-e", sql]);
    if let Some(db) = db {
        cmd.arg(db);
    }
    cmd.output().expect("mariadb client")
}

/// Runs `sql` over TLS in its own thread (a statement that blocks: held, sleeping).
fn cli_in_thread(gw: &Gateway, token: &str, sql: &str) -> std::thread::JoinHandle<Output> {
    let (port, token, sql) = (
        gw.mysql_port.expect("mysql"),
        token.to_owned(),
        sql.to_owned(),
    );
    std::thread::spawn(move || cli_at(port, &token, Some("shop"), &sql, &["--ssl"]))
}

/// The upstream's id of the connection running a statement that starts with `prefix`, once
/// it runs (`None` after 10 s).
fn running_upstream_id(prefix: &str) -> Option<String> {
    for _ in 0..200 {
        let id = mariadb().sql(&format!(
            "SELECT id FROM information_schema.processlist WHERE info LIKE '{prefix}%'"
        ));
        if !id.trim().is_empty() {
            return Some(id.trim().to_owned());
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    None
}

/// A record's `detail`, whether exported as an object or as JSON text.
fn detail_of(r: &serde_json::Value) -> serde_json::Value {
    match &r["detail"] {
        serde_json::Value::String(s) => serde_json::from_str(s).unwrap_or_default(),
        other => other.clone(),
    }
}

fn ok_stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a Python client `script` with `args`; its stdout, asserting that it succeeded.
fn python_client(gw: &Gateway, script: &str, args: &[&str]) -> String {
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("python3");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{}\n{text}\nlog: {}",
        String::from_utf8_lossy(&out.stderr),
        gw.log_text()
    );
    text
}

fn err_text(out: &Output) -> String {
    assert!(
        !out.status.success(),
        "client succeeded: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn the_cli_logs_in_with_a_token_over_tls_and_sees_card_numbers_masked() {
    let gw = gateway(MASKS);
    let token = gw.token("fraud-bot", &["fraud-bots"]);
    let out = mysql_cli(
        &gw,
        &token,
        Some("shop"),
        "SELECT id, card_number, note FROM payments ORDER BY id",
        &["--ssl"],
    );
    let text = ok_stdout(&out);
    assert_eq!(
        text, "1\t************1111\tfirst\n2\t************5559\tNULL\n",
        "{text}"
    );
    assert!(!text.contains("4111111111111111"));
    let start = gw.wait_for_record(|r| r["kind"] == "session_start" && r["connection"] == "shop");
    assert_eq!(start["subject"], "fraud-bot");
    let detail = detail_of(&start);
    assert_eq!(detail["protocol"], "mysql", "{start}");
    assert_eq!(detail["tls"], true, "{start}");
    let stmt = gw.wait_for_record(|r| {
        r["kind"] == "statement"
            && r["statement"]
                .as_str()
                .is_some_and(|s| s.contains("card_number, note"))
    });
    let outcome =
        gw.wait_for_record(|r| r["kind"] == "outcome" && r["statement_seq"] == stmt["seq"]);
    assert_eq!(outcome["outcome"], "ok", "{outcome}");
    let raw = outcome.to_string();
    assert!(raw.contains("card_number"), "mask counts recorded: {raw}");
    assert!(!raw.contains("4111111111111111"), "{raw}");
    gw.wait_for_record(|r| r["kind"] == "session_end" && r["connection"] == "shop");
}

#[test]
fn wrong_tokens_unknown_connections_and_missing_tls_are_refused_with_mysql_codes() {
    let gw = Gateway::builder()
        .mysql()
        .tls_require()
        .extra(MASKS)
        .start();
    let token = gw.token("fraud-bot", &["fraud-bots"]);
    let e = err_text(&mysql_cli(
        &gw,
        "not-a-token",
        Some("shop"),
        "SELECT 1",
        &["--ssl"],
    ));
    assert!(e.contains("1045"), "{e}");
    let e = err_text(&mysql_cli(
        &gw,
        &token,
        Some("nowhere"),
        "SELECT 1",
        &["--ssl"],
    ));
    assert!(e.contains("1049") && e.contains("nowhere"), "{e}");
    // tls.require: the cleartext plugin without TLS is refused before the token is read.
    let e = err_text(&mysql_cli(
        &gw,
        &token,
        Some("shop"),
        "SELECT 1",
        &["--skip-ssl", "--enable-cleartext-plugin"],
    ));
    assert!(e.contains("1045") && e.contains("TLS"), "{e}");
    // A character set in which a multibyte character can hide a quote or a backslash.
    let e = err_text(&mysql_cli(
        &gw,
        &token,
        Some("shop"),
        "SELECT 1",
        &["--ssl", "--default-character-set=gbk"],
    ));
    assert!(e.contains("1045") && e.contains("character set"), "{e}");
    // An identity outside allow_groups.
    let eve = gw.token("eve", &["marketing"]);
    let e = err_text(&mysql_cli(&gw, &eve, Some("shop"), "SELECT 1", &["--ssl"]));
    assert!(e.contains("1045") && e.contains("not in any group"), "{e}");
    let failed =
        gw.wait_for_record(|r| r["kind"] == "login_failed" && r["connection"] == "nowhere");
    assert_eq!(failed["sqlstate"], "1049", "{failed}");
    let raw = gw
        .export()
        .iter()
        .map(|r| r.to_string())
        .collect::<String>();
    assert!(!raw.contains(&token), "the token is never recorded");
}

/// PyMySQL without TLS: caching_sha2_password's RSA exchange (with the `cryptography` package).
const PYMYSQL_RSA_SCRIPT: &str = r#"
import sys, pymysql
c = pymysql.connect(host="127.0.0.1", port=int(sys.argv[1]), user="fraud-bot",
                    password=sys.argv[2], database="shop", ssl_disabled=True)
with c.cursor() as cur:
    cur.execute("SELECT card_number FROM payments WHERE id = 1")
    print("ROW", cur.fetchall())
c.close()
"#;

#[test]
fn without_tls_the_token_travels_rsa_encrypted_or_by_the_cleartext_plugin() {
    let gw = gateway(MASKS);
    let token = gw.token("fraud-bot", &["fraud-bots"]);
    // The mariadb CLI asks for the gateway's public key and sends the token encrypted.
    let out = mysql_cli(
        &gw,
        &token,
        Some("shop"),
        "SELECT card_number FROM payments WHERE id = 1",
        &["--skip-ssl"],
    );
    assert!(out.status.success(), "{}", gw.log_text());
    assert_eq!(ok_stdout(&out), "************1111\n");
    let start = gw.wait_for_record(|r| r["kind"] == "session_start" && r["connection"] == "shop");
    assert_eq!(detail_of(&start)["tls"], false, "{start}");
    assert_eq!(
        detail_of(&start)["client_auth"],
        "caching_sha2_password_rsa",
        "{start}"
    );
    // PyMySQL does the same exchange.
    let port = gw.mysql_port.expect("mysql");
    let text = python_client(&gw, PYMYSQL_RSA_SCRIPT, &[&port.to_string(), &token]);
    assert!(text.contains("ROW (('************1111',),)"), "{text}");
    // A client that sends the cleartext plugin's answer directly.
    let mut s = raw::login(port, &token);
    raw::send(&mut s, 0, &[0x0e]);
    let (_, ok) = raw::packet(&mut s).expect("ping answer");
    assert_eq!(ok.first(), Some(&0x00), "{ok:?}");
    // A forged ciphertext (the token never encrypted with the gateway's key): refused, and
    // the gateway serves the next login.
    let mut s = raw::connect(port);
    raw::packet(&mut s).expect("greeting");
    raw::send(
        &mut s,
        1,
        &raw::login_payload(&[0u8; 32], "caching_sha2_password"),
    );
    let (seq, more) = raw::packet(&mut s).expect("full authentication");
    assert_eq!(more, [0x01, 0x04], "perform full authentication");
    raw::send(&mut s, seq + 1, &[0x02]);
    let (seq, key) = raw::packet(&mut s).expect("public key");
    assert!(
        key.starts_with(b"\x01-----BEGIN PUBLIC KEY-----"),
        "{}",
        String::from_utf8_lossy(&key)
    );
    raw::send(&mut s, seq + 1, &[0x41u8; 512]);
    let (_, err) = raw::packet(&mut s).expect("an error packet");
    assert_eq!(raw::err_code(&err), Some(1045), "{err:?}");
    assert!(
        String::from_utf8_lossy(&err).contains("could not be decrypted"),
        "{}",
        String::from_utf8_lossy(&err)
    );
    assert!(raw::closed(&mut s));
    let failed = gw
        .wait_for_record(|r| r["kind"] == "login_failed" && detail_of(r)["reason"] == "malformed");
    assert_eq!(failed["sqlstate"], "1045", "{failed}");
    let out = mysql_cli(&gw, &token, Some("shop"), "SELECT 1", &["--skip-ssl"]);
    assert_eq!(ok_stdout(&out), "1\n");
}

#[test]
fn rules_block_statements_and_the_server_keeps_its_rows() {
    let gw = gateway(&format!("{MASKS}{RULES}"));
    let token = gw.token("fraud-bot", &["fraud-bots"]);
    let tls = ["--ssl"];
    for sql in [
        "DELETE FROM payments WHERE id = 2",
        "delete from shop.payments",
        // Hidden in an executable comment, which the server runs.
        "/*! DELETE FROM payments */",
        "/*!50000 DELETE */ FROM payments",
        "SELECT 1; DROP TABLE payments",
        "TRUNCATE payments",
    ] {
        let e = err_text(&mysql_cli(&gw, &token, Some("shop"), sql, &tls));
        assert!(e.contains("1227"), "{sql}: {e}");
        assert!(e.contains("no-deletes"), "{sql}: {e}");
    }
    assert_eq!(mariadb().sql("SELECT count(*) FROM shop.payments"), "2\n");
    let blocked = gw.wait_for_record(|r| {
        r["kind"] == "statement" && r["outcome"] == "blocked" && r["rule"] == "no-deletes"
    });
    assert_eq!(blocked["sqlstate"], "1227", "{blocked}");
    // What the gateway cannot analyse is refused, not waved through.
    let e = err_text(&mysql_cli(
        &gw,
        &token,
        Some("shop"),
        "SELEC card_number FRM payments",
        &tls,
    ));
    assert!(
        e.contains("1227") && e.contains("builtin:unparseable"),
        "{e}"
    );
    // Server-side files and dynamic SQL are builtin refusals.
    for sql in [
        "SELECT LOAD_FILE('/etc/passwd')",
        "SELECT card_number FROM payments INTO OUTFILE '/tmp/cards.txt'",
        "PREPARE s FROM @q",
        "ALTER USER 'gatehouse_svc'@'%' IDENTIFIED BY 'taken-over'",
        "SET PASSWORD = 'taken-over'",
        "KILL 1",
        "SET sql_mode = 'NO_BACKSLASH_ESCAPES'",
        "SET NAMES gbk",
        "SHOW PROCESSLIST",
        "SELECT info FROM information_schema.processlist",
        "SHOW BINLOG EVENTS",
        // Password hashes: with a native hash one logs in as that account, the gateway's too.
        "SELECT user, authentication_string FROM mysql.user",
        "SHOW GRANTS FOR 'gatehouse_svc'@'%'",
        // Row reads that are not SELECT, and stores the analysis cannot follow.
        "HANDLER payments OPEN",
        "SELECT card_number INTO @v FROM payments LIMIT 1",
        "LOAD XML LOCAL INFILE '/tmp/x.xml' INTO TABLE payments",
    ] {
        let e = err_text(&mysql_cli(&gw, &token, Some("shop"), sql, &tls));
        assert!(e.contains("1227") && e.contains("builtin:"), "{sql}: {e}");
    }
}

#[test]
fn masking_holds_through_computations_derived_tables_and_comments() {
    let gw = gateway(MASKS);
    let token = gw.token("fraud-bot", &["fraud-bots"]);
    let tls = ["--ssl"];
    let run = |sql: &str| ok_stdout(&mysql_cli(&gw, &token, Some("shop"), sql, &tls));
    // Aliases and qualified names: the server names the source column.
    assert_eq!(
        run("SELECT p.card_number AS c FROM shop.payments p WHERE p.id = 1"),
        "************1111\n"
    );
    // A result computed by total functions is a derivative: masked whole, NULLs included.
    for sql in [
        "SELECT concat(card_number, '') FROM payments WHERE id = 1",
        "SELECT substr(card_number, 1, 12), reverse(card_number) FROM payments WHERE id = 1",
        "SELECT md5(card_number) FROM payments WHERE id = 1",
        "SELECT lower(coalesce(note, card_number)) FROM payments WHERE id = 2",
    ] {
        let out = run(sql);
        assert!(!out.is_empty(), "{sql}");
        for digits in ["4111", "1111", "5559", "5500"] {
            assert!(!out.contains(digits), "{sql}: {out}");
        }
        assert!(out.contains("[REDACTED]"), "{sql}: {out}");
    }
    // Compared as it is with one client-chosen value: a lookup, allowed.
    assert_eq!(
        run("SELECT id FROM payments WHERE card_number = '5500005555555559'"),
        "2\n"
    );
    assert_eq!(
        run("SELECT id FROM payments WHERE card_number IN ('4111111111111111') ORDER BY id"),
        "1\n"
    );
    // A list of candidates is as many guesses: refused.
    let e = err_text(&mysql_cli(
        &gw,
        &token,
        Some("shop"),
        "SELECT id FROM payments WHERE card_number IN ('4111111111111111', '4111111111111112')",
        &tls,
    ));
    assert!(e.contains("more than once"), "{e}");
    // Its last four digits may be matched (they are what masking shows).
    assert_eq!(
        run("SELECT id FROM payments WHERE card_number LIKE '%5559'"),
        "2\n"
    );
    assert_eq!(
        run("SELECT id FROM payments WHERE RIGHT(card_number, 4) = '5559'"),
        "2\n"
    );
    // Two guesses in one statement are not.
    let e = err_text(&mysql_cli(
        &gw,
        &token,
        Some("shop"),
        "SELECT id FROM payments WHERE card_number = 'a' AND card_number = 'b'",
        &tls,
    ));
    assert!(e.contains("builtin:masked-inference"), "{e}");
    // Anything else that computes with a masked value is refused (the MySQL analysis does not
    // yet tell comparisons and fallible operations apart), never served unmasked.
    for sql in [
        "SELECT card_number = '4111111111111111' FROM payments",
        "SELECT card_number + 0 FROM payments",
        "SELECT CASE WHEN card_number LIKE '4%' THEN 'visa' END FROM payments",
        "SELECT x FROM (SELECT substr(card_number, 1, 8) AS x FROM payments) t",
        // A derived table: the server may not name the source.
        "SELECT x FROM (SELECT card_number AS x FROM payments) t",
        "SELECT id FROM payments WHERE card_number LIKE '4111%'",
        // Parked in a variable, to be read back unmasked by a later `SELECT @v`.
        "SELECT card_number INTO @v FROM payments WHERE id = 1",
    ] {
        let e = err_text(&mysql_cli(&gw, &token, Some("shop"), sql, &tls));
        assert!(
            e.contains("1227") && e.contains("builtin:masked-inference"),
            "{sql}: {e}"
        );
    }
    // A variable holding what nobody masks is served (not taken for a server-side file).
    assert_eq!(
        run("SELECT note INTO @n FROM payments WHERE id = 1; SELECT @n"),
        "first\n"
    );
    // A column hidden in an executable comment is still a column of the result.
    let out = run("SELECT id /*!, card_number */ FROM payments WHERE id = 1");
    assert_eq!(out, "1\t************1111\n");
    // The content detector catches a card number the analysis cannot attribute.
    assert_eq!(run("SELECT '4111111111111111'"), "************1111\n");
}

#[test]
fn warnings_after_a_masked_statement_are_withheld() {
    let gw = gateway(MASKS);
    let token = gw.token("fraud-bot", &["fraud-bots"]);
    let out = mysql_cli(
        &gw,
        &token,
        Some("shop"),
        "SELECT card_number FROM payments WHERE id = 1; SHOW WARNINGS",
        &["--ssl"],
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "************1111\n");
    let e = err_text(&out);
    assert!(e.contains("builtin:masked-diagnostics"), "{e}");
    // In a fresh statement on unmasked data they are served again.
    let out = mysql_cli(
        &gw,
        &token,
        Some("shop"),
        "SELECT id FROM payments LIMIT 1; SHOW WARNINGS",
        &["--ssl"],
    );
    assert_eq!(ok_stdout(&out), "1\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_held_for_approval_runs_once_approved() {
    let gw = gateway(&format!("{MASKS}{RULES}"));
    let token = gw.token("fraud-bot", &["fraud-bots"]);
    let held = cli_in_thread(&gw, &token, "SELECT note FROM payments WHERE id = 1");
    let alice = gw.token("alice", &["security"]);
    let req = pending_approval(&gw, &alice).await;
    assert_eq!(req["rule"], "notes-need-approval", "{req}");
    assert_eq!(req["requester"], "fraud-bot");
    assert_eq!(req["connection"], "shop");
    let id = req["id"].as_str().unwrap_or_default().to_owned();
    let (status, body) = api(
        &gw,
        "POST",
        &format!("/api/approvals/{id}/approve"),
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let out = held.join().expect("client thread");
    assert_eq!(ok_stdout(&out), "first\n");
    gw.wait_for_record(|r| r["kind"] == "approval" && r["outcome"] == "ok");
}

#[test]
fn mysqldump_dumps_through_the_gateway_with_card_numbers_masked() {
    let gw = gateway(MASKS);
    let token = gw.token("fraud-bot", &["dba"]);
    let port = gw.mysql_port.expect("mysql").to_string();
    let out = Command::new("mysqldump")
        .arg("--no-defaults")
        .args(["-h", "127.0.0.1", "-P", &port, "-u", "alice", "--ssl"])
        .arg(format!("-p{token}"))
        .args([
            "--single-transaction",
            "--skip-lock-tables",
            "shop",
            "payments",
        ])
        .output()
        .expect("mysqldump");
    let dump = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "mysqldump failed: {}\n{dump}\nlog: {}",
        String::from_utf8_lossy(&out.stderr),
        gw.log_text()
    );
    assert!(dump.contains("CREATE TABLE `payments`"), "{dump}");
    assert!(dump.contains("INSERT INTO `payments` VALUES"), "{dump}");
    assert!(dump.contains("************1111"), "{dump}");
    assert!(!dump.contains("4111111111111111"), "{dump}");
}

/// mysql-connector-python with `cursor(prepared=True)`: COM_STMT_PREPARE / EXECUTE / CLOSE,
/// binary-protocol rows masked, refusals at prepare time.
const CONNECTOR_SCRIPT: &str = r#"
import sys, mysql.connector
c = mysql.connector.connect(host="127.0.0.1", port=int(sys.argv[1]), user="fraud-bot",
                            password=sys.argv[2], database="shop", use_pure=(sys.argv[3] == "pure"))
cur = c.cursor(prepared=True)
cur.execute("SELECT id, card_number FROM payments WHERE id = %s", (1,))
print("ROW", cur.fetchall())
cur.execute("SELECT id, card_number FROM payments ORDER BY id")
print("ROWS", cur.fetchall())
cur.execute("SELECT %s AS echoed", ("4111111111111111",))
print("ECHO", cur.fetchall())
cur.execute("SELECT id FROM payments WHERE card_number = %s", ("4111111111111111",))
print("LOOKUP", cur.fetchall())
for sql in ("DELETE FROM payments WHERE id = %s", "SELECT id FROM payments WHERE card_number LIKE %s"):
    try:
        cur.execute(sql, (2,))
        print("RAN", sql)
    except mysql.connector.Error as e:
        print("ERR", e.errno, e.msg)
cur.close()
c.close()
"#;

#[test]
fn prepared_statements_of_mysql_connector_are_judged_and_their_binary_rows_masked() {
    let gw = gateway(&format!("{MASKS}{RULES}"));
    let token = gw.token("fraud-bot", &["fraud-bots"]);
    let port = gw.mysql_port.expect("mysql").to_string();
    {
        let mode = "pure";
        let out = Command::new("python3")
            .args(["-c", CONNECTOR_SCRIPT, &port, &token, mode])
            .output()
            .expect("python3");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{mode}: {}\n{text}\nlog: {}",
            String::from_utf8_lossy(&out.stderr),
            gw.log_text()
        );
        assert!(
            text.contains("ROW [(1, '************1111')]"),
            "{mode}: {text}"
        );
        assert!(
            text.contains("ROWS [(1, '************1111'), (2, '************5559')]"),
            "{mode}: {text}"
        );
        assert!(
            text.contains("ECHO [('************1111',)]"),
            "{mode}: {text}"
        );
        // A lookup by card number compares the value as it is: allowed, once per statement.
        assert!(text.contains("LOOKUP [(1,)]"), "{mode}: {text}");
        assert!(
            text.contains("ERR 1227 blocked by rule \"no-deletes\""),
            "{mode}: {text}"
        );
        assert!(text.contains("builtin:masked-inference"), "{mode}: {text}");
        assert!(!text.contains("RAN"), "{mode}: {text}");
        assert!(!text.contains("4111111111111111"), "{mode}: {text}");
    }
    assert_eq!(mariadb().sql("SELECT count(*) FROM shop.payments"), "2\n");
    let exec = gw.wait_for_record(|r| {
        r["kind"] == "statement"
            && r["statement"]
                .as_str()
                .is_some_and(|s| s.starts_with("SELECT id, card_number FROM payments ORDER BY id"))
    });
    let outcome =
        gw.wait_for_record(|r| r["kind"] == "outcome" && r["statement_seq"] == exec["seq"]);
    assert_eq!(outcome["outcome"], "ok", "{outcome}");
}

/// A raw MySQL-protocol client: the bytes as sent, the packets as received.
mod raw {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::Duration;

    pub fn connect(port: u16) -> TcpStream {
        let s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        s
    }

    /// The next packet's (sequence id, payload), or `None` once the peer closed.
    pub fn packet(s: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
        let mut head = [0u8; 4];
        s.read_exact(&mut head).ok()?;
        let len = u32::from_le_bytes([head[0], head[1], head[2], 0]) as usize;
        let mut body = vec![0u8; len];
        s.read_exact(&mut body).ok()?;
        Some((head[3], body))
    }

    pub fn send(s: &mut TcpStream, seq: u8, payload: &[u8]) {
        let len = (payload.len() as u32).to_le_bytes();
        let mut out = vec![len[0], len[1], len[2], seq];
        out.extend_from_slice(payload);
        s.write_all(&out).expect("send");
    }

    /// The error code of an ERR packet.
    pub fn err_code(payload: &[u8]) -> Option<u16> {
        (payload.first() == Some(&0xff)).then(|| u16::from_le_bytes([payload[1], payload[2]]))
    }

    /// Logs in without TLS with the cleartext plugin; panics unless the gateway says OK.
    pub fn login(port: u16, token: &str) -> TcpStream {
        let mut s = connect(port);
        packet(&mut s).expect("greeting");
        let mut auth = token.as_bytes().to_vec();
        auth.push(0);
        send(&mut s, 1, &login_payload(&auth, "mysql_clear_password"));
        let (_, ok) = packet(&mut s).expect("login answer");
        assert_eq!(ok.first(), Some(&0x00), "{}", String::from_utf8_lossy(&ok));
        s
    }

    /// A HandshakeResponse41 for the database `shop` with `auth` as the plugin's answer.
    pub fn login_payload(auth: &[u8], plugin: &str) -> Vec<u8> {
        // PROTOCOL_41 | SECURE_CONNECTION | PLUGIN_AUTH | PLUGIN_AUTH_LENENC | CONNECT_WITH_DB
        // | DEPRECATE_EOF | MULTI_RESULTS | LONG_PASSWORD | TRANSACTIONS
        let caps: u32 = (1 << 9)
            | (1 << 15)
            | (1 << 19)
            | (1 << 21)
            | (1 << 3)
            | (1 << 24)
            | (1 << 17)
            | 1
            | (1 << 13);
        let mut p = caps.to_le_bytes().to_vec();
        p.extend_from_slice(&(1u32 << 24).to_le_bytes());
        p.push(45);
        p.extend_from_slice(&[0u8; 23]);
        p.extend_from_slice(b"raw\0");
        // A length-encoded integer (PLUGIN_AUTH_LENENC_CLIENT_DATA).
        let n = u16::try_from(auth.len()).expect("short token");
        if n < 251 {
            p.push(n as u8);
        } else {
            p.push(0xfc);
            p.extend_from_slice(&n.to_le_bytes());
        }
        p.extend_from_slice(auth);
        p.extend_from_slice(b"shop\0");
        p.extend_from_slice(plugin.as_bytes());
        p.push(0);
        p
    }

    pub fn closed(s: &mut TcpStream) -> bool {
        let mut b = [0u8; 1];
        matches!(s.read(&mut b), Ok(0))
    }
}

#[test]
fn malformed_input_gets_a_mysql_error_and_other_sessions_are_served() {
    let gw = gateway(MASKS);
    let port = gw.mysql_port.expect("mysql");
    let token = gw.token("fraud-bot", &["fraud-bots"]);
    // Garbage instead of a login (an HTTP request): its "length" is far over the login limit.
    let mut s = raw::connect(port);
    let (_, greeting) = raw::packet(&mut s).expect("greeting");
    assert_eq!(greeting[0], 10, "protocol 10 greeting");
    std::io::Write::write_all(&mut s, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").expect("write");
    let (_, err) = raw::packet(&mut s).expect("an error packet");
    assert_eq!(raw::err_code(&err), Some(1043), "{err:?}");
    assert!(raw::closed(&mut s));
    // A truncated login.
    let mut s = raw::connect(port);
    raw::packet(&mut s).expect("greeting");
    raw::send(&mut s, 1, &[0x0d, 0xa2, 0x00]);
    let (_, err) = raw::packet(&mut s).expect("an error packet");
    assert_eq!(raw::err_code(&err), Some(1043), "{err:?}");
    assert!(raw::closed(&mut s));
    // A pre-4.1 login.
    let mut s = raw::connect(port);
    raw::packet(&mut s).expect("greeting");
    raw::send(&mut s, 1, &[0u8; 40]);
    let (_, err) = raw::packet(&mut s).expect("an error packet");
    assert_eq!(raw::err_code(&err), Some(1043), "{err:?}");
    // The gateway goes on serving everyone else.
    let out = mysql_cli(
        &gw,
        &token,
        Some("shop"),
        "SELECT count(*) FROM payments",
        &["--ssl"],
    );
    assert_eq!(ok_stdout(&out), "2\n");
}

#[test]
fn bad_commands_after_login_are_answered_and_oversized_ones_close_the_session() {
    let gw = Gateway::builder()
        .mysql()
        .extra(MASKS)
        .start_edited(|c| c.replacen("[listen]\n", "[listen]\nmax_message_bytes = 1048576\n", 1));
    let port = gw.mysql_port.expect("mysql");
    let token = gw.token("fraud-bot", &["fraud-bots"]);
    // An unknown command is refused and the session goes on.
    let mut s = raw::login(port, &token);
    raw::send(&mut s, 0, &[0x99, 1, 2, 3]);
    let (_, err) = raw::packet(&mut s).expect("answer");
    assert_eq!(raw::err_code(&err), Some(1047), "{err:?}");
    raw::send(&mut s, 0, &[0x0e]); // COM_PING
    let (_, ok) = raw::packet(&mut s).expect("answer");
    assert_eq!(ok.first(), Some(&0x00));
    // A query's rows through the raw client are masked too.
    raw::send(
        &mut s,
        0,
        b"\x03SELECT card_number FROM payments WHERE id = 1",
    );
    let mut packets = Vec::new();
    while let Some((_, p)) = raw::packet(&mut s) {
        let end = p.first() == Some(&0xfe) && p.len() < 9;
        packets.push(p);
        if end {
            break;
        }
    }
    let bytes: Vec<u8> = packets.concat();
    assert!(
        bytes.windows(16).any(|w| w == b"************1111"),
        "{packets:?}"
    );
    // A command out of sequence ends the session with 1156.
    raw::send(&mut s, 7, &[0x0e]);
    let (_, err) = raw::packet(&mut s).expect("answer");
    assert_eq!(raw::err_code(&err), Some(1156), "{err:?}");
    assert!(raw::closed(&mut s));
    // A packet announced over max_message_bytes: 1153 at its header, nothing more is read.
    let mut s = raw::login(port, &token);
    std::io::Write::write_all(&mut s, &[0xff, 0xff, 0xff, 0x00, 0x03]).expect("write");
    let (_, err) = raw::packet(&mut s).expect("answer");
    assert_eq!(raw::err_code(&err), Some(1153), "{err:?}");
    assert!(raw::closed(&mut s));
    // COM_CHANGE_USER is refused and ends the session.
    let mut s = raw::login(port, &token);
    raw::send(&mut s, 0, b"\x11root\0");
    let (_, err) = raw::packet(&mut s).expect("answer");
    assert_eq!(raw::err_code(&err), Some(1227), "{err:?}");
    assert!(raw::closed(&mut s));
    // Everyone else is still served.
    let out = mysql_cli(
        &gw,
        &token,
        Some("shop"),
        "SELECT count(*) FROM payments",
        &["--ssl"],
    );
    assert_eq!(ok_stdout(&out), "2\n");
}

#[test]
fn explain_judges_mysql_statements_in_mysqls_dialect() {
    let gw = gateway(&format!("{MASKS}{RULES}"));
    let explain = |sql: &str| {
        let out = gw.cli(&[
            "explain",
            "--connection",
            "shop",
            "--subject",
            "bot",
            "--group",
            "fraud-bots",
            sql,
        ]);
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, text) = explain("SELECT id FROM payments; /*! DELETE FROM payments */");
    assert_eq!(code, Some(3), "{text}");
    assert!(text.contains("statement 1: select"), "{text}");
    assert!(text.contains("shop.payments"), "{text}");
    assert!(text.contains("statement 2: delete"), "{text}");
    assert!(text.contains("rule \"no-deletes\""), "{text}");
    let (_, text) = explain("SELECT id FROM payments WHERE card_number LIKE '4%'");
    assert!(text.contains("builtin:masked-inference"), "{text}");
    let (code, text) = explain("SELECT `id` FROM `payments` WHERE id = 1");
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("decision:  allow"), "{text}");
    assert_eq!(mariadb().sql("SELECT count(*) FROM shop.payments"), "2\n");
}

#[test]
fn load_data_local_infile_is_judged_as_a_write_and_streams_the_clients_file() {
    let gw = gateway(&format!(
        "{MASKS}{RULES}\n[[rule]]\nname = \"no-bot-imports\"\nconnections = [\"shop\"]\n\
         groups = [\"fraud-bots\"]\nwrites = [\"shop.imports\"]\naction = \"block\"\n"
    ));
    mariadb().sql("CREATE TABLE IF NOT EXISTS shop.imports (id int, card varchar(32))");
    let file = gw.dir.path().join("imports.csv");
    let rows: String = (1..=2000)
        .map(|i| format!("{i},4000000000000002\n"))
        .collect();
    std::fs::write(&file, rows).expect("csv");
    let sql = format!(
        "LOAD DATA LOCAL INFILE '{}' INTO TABLE imports FIELDS TERMINATED BY ','",
        file.display()
    );
    // The bot may not write there: refused before the server asks for anything.
    let bot = gw.token("fraud-bot", &["fraud-bots"]);
    let e = err_text(&mysql_cli(
        &gw,
        &bot,
        Some("shop"),
        &sql,
        &["--ssl", "--local-infile=1"],
    ));
    assert!(e.contains("1227") && e.contains("no-bot-imports"), "{e}");
    assert_eq!(mariadb().sql("SELECT count(*) FROM shop.imports"), "0\n");
    // A dba may: the file streams through the gateway to the server.
    let dba = gw.token("alice", &["dba"]);
    ok_stdout(&mysql_cli(
        &gw,
        &dba,
        Some("shop"),
        &sql,
        &["--ssl", "--local-infile=1"],
    ));
    assert_eq!(mariadb().sql("SELECT count(*) FROM shop.imports"), "2000\n");
    let stmt = gw.wait_for_record(|r| {
        r["kind"] == "statement"
            && r["subject"] == "alice"
            && r["statement"]
                .as_str()
                .is_some_and(|s| s.starts_with("LOAD DATA LOCAL"))
    });
    let outcome =
        gw.wait_for_record(|r| r["kind"] == "outcome" && r["statement_seq"] == stmt["seq"]);
    assert_eq!(outcome["outcome"], "ok", "{outcome}");
    assert_eq!(outcome["rows"], 2000, "{outcome}");
    mariadb().sql("DROP TABLE shop.imports");
}

#[test]
fn mysql_sessions_replay_masked_and_count_in_the_evidence() {
    let gw = gateway(MASKS);
    let token = gw.token("fraud-bot", &["fraud-bots"]);
    let out = mysql_cli(
        &gw,
        &token,
        Some("shop"),
        "SELECT card_number FROM payments WHERE id = 2",
        &["--ssl"],
    );
    assert_eq!(ok_stdout(&out), "************5559\n");
    let start = gw.wait_for_record(|r| r["kind"] == "session_start" && r["connection"] == "shop");
    let sid = start["session_id"].as_str().unwrap_or_default().to_owned();
    gw.wait_for_record(|r| r["kind"] == "session_end" && r["session_id"] == sid.as_str());
    let out = gw.cli(&["sessions", "replay", &sid]);
    let replay = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{replay}");
    assert!(
        replay.contains("SELECT card_number FROM payments WHERE id = 2"),
        "{replay}"
    );
    // Results are recorded with the masked columns redacted, as for PostgreSQL.
    assert!(replay.contains("[\"[redacted]\"]"), "{replay}");
    assert!(replay.contains("application \"mysql\""), "{replay}");
    assert!(!replay.contains("5500005555555559"), "{replay}");
    // `sessions list` names the protocol.
    let out = gw.cli(&["sessions", "list"]);
    let list = String::from_utf8_lossy(&out.stdout);
    let line = list.lines().find(|l| l.contains(&sid)).unwrap_or_default();
    assert_eq!(line.split_whitespace().nth(4), Some("mysql"), "{list}");
    let o = Command::new("date")
        .args(["-u", "+%F"])
        .output()
        .expect("date");
    let today = String::from_utf8_lossy(&o.stdout).trim().to_owned();
    let path = gw.dir.path().join("evidence.json");
    let o = gw.cli(&[
        "evidence",
        "--from",
        &today,
        "--to",
        &today,
        "--format",
        "json",
        "-o",
        path.to_str().unwrap_or_default(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let report = std::fs::read_to_string(&path).unwrap_or_default();
    // The mariadb CLI is an interactive tool (10.2.1.2): its session is listed.
    assert!(
        report.contains(&sid),
        "the MySQL session is in the evidence: {report}"
    );
    assert!(!report.contains("5500005555555559"));
    // Sessions and statements are counted per protocol.
    let v: serde_json::Value = serde_json::from_str(&report).unwrap_or_default();
    let ad = &v["administrative_actions"];
    assert_eq!(ad["sessions_by_protocol"]["mysql"], 1, "{ad}");
    let statements = gw
        .export()
        .iter()
        .filter(|r| r["kind"] == "statement" && r["session_id"] == sid.as_str())
        .count();
    assert!(statements >= 1);
    assert_eq!(ad["statements_by_protocol"]["mysql"], statements, "{ad}");
    assert!(ad["sessions_by_protocol"].get("postgres").is_none(), "{ad}");
}

#[test]
fn an_identity_stops_its_own_running_statement_and_no_one_elses() {
    let gw = gateway(MASKS);
    let token = gw.token("fraud-bot", &["fraud-bots"]);
    let started = std::time::Instant::now();
    let long = cli_in_thread(&gw, &token, "SELECT SLEEP(30) AS slept");
    let upstream_id = running_upstream_id("SELECT SLEEP(30)").unwrap_or_default();
    if upstream_id.is_empty() {
        let out = long.join().expect("client thread");
        panic!(
            "the statement never ran: {} {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Another identity may not stop it.
    let eve = gw.token("eve", &["dba"]);
    let kill = format!("KILL QUERY {upstream_id}");
    let e = err_text(&mysql_cli(&gw, &eve, Some("shop"), &kill, &["--ssl"]));
    assert!(
        e.contains("1227") && e.contains("builtin:signal-backend"),
        "{e}"
    );
    // Its own identity may, from another connection.
    ok_stdout(&mysql_cli(&gw, &token, Some("shop"), &kill, &["--ssl"]));
    let out = long.join().expect("client thread");
    // SLEEP interrupted by KILL QUERY returns 1 (or the statement fails as interrupted).
    assert!(
        started.elapsed() < std::time::Duration::from_secs(25),
        "the statement ran to its end: {:?}",
        String::from_utf8_lossy(&out.stdout)
    );
    let rec = gw.wait_for_record(|r| {
        r["kind"] == "statement"
            && r["statement"].as_str() == Some(kill.as_str())
            && r["subject"] == "fraud-bot"
    });
    assert!(rec["outcome"].is_null() || rec["outcome"] == "ok", "{rec}");
}

#[test]
fn a_login_without_a_database_binds_to_the_only_connection_or_at_the_first_use() {
    let gw = gateway(&format!(
        "{MASKS}\n[[connection]]\nname = \"shop-copy\"\nkind = \"mysql\"\nupstream = \"127.0.0.1:{}\"\n\
         database = \"shop\"\nuser = \"{}\"\npassword_env = \"TEST_DB_PASSWORD\"\n\
         upstream_tls = \"disable\"\nallow_groups = [\"dba\"]\n",
        mariadb().port,
        crate::support::SVC_USER
    ));
    // fraud-bots may use only `shop`: a login without a database lands there.
    let bot = gw.token("fraud-bot", &["fraud-bots"]);
    let out = mysql_cli(
        &gw,
        &bot,
        None,
        "SELECT card_number FROM shop.payments WHERE id = 1",
        &["--ssl"],
    );
    assert_eq!(ok_stdout(&out), "************1111\n");
    let start = gw.wait_for_record(|r| r["kind"] == "session_start" && r["subject"] == "fraud-bot");
    assert_eq!(start["connection"], "shop", "{start}");
    // dba may use both: logged in unbound, 1046 until it says which, then bound by USE
    // (COM_INIT_DB from the CLI) or a USE statement.
    let dba = gw.token("alice", &["dba"]);
    let e = err_text(&mysql_cli(&gw, &dba, None, "SELECT 1", &["--ssl"]));
    assert!(
        e.contains("1046") && e.contains("No database selected"),
        "{e}"
    );
    let ok = mysql_cli(
        &gw,
        &dba,
        None,
        "USE `shop-copy`; SELECT count(*) FROM payments",
        &["--ssl"],
    );
    assert_eq!(ok_stdout(&ok), "2\n");
    let start = gw.wait_for_record(|r| r["kind"] == "session_start" && r["subject"] == "alice");
    assert_eq!(start["connection"], "shop-copy", "{start}");
    // Binding to a connection that does not exist is refused like a login.
    let e = err_text(&mysql_cli(
        &gw,
        &dba,
        None,
        "USE nowhere; SELECT 1",
        &["--ssl"],
    ));
    assert!(e.contains("1049"), "{e}");
    // A bad token is refused at login, not at the bind.
    let e = err_text(&mysql_cli(
        &gw,
        "forged",
        None,
        "USE shop; SELECT 1",
        &["--ssl"],
    ));
    assert!(e.contains("1045"), "{e}");
}

/// node mysql2 (`npm ci` in `crates/gatehouse/tests/js`; `.ci/run` does it): `query()` and
/// `execute()` over TLS.
#[test]
fn node_mysql2_queries_and_executes_through_the_gateway() {
    let js = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/js");
    assert!(
        js.join("node_modules/mysql2").exists(),
        "run `npm ci --prefix {}` first (node's mysql2 client)",
        js.display()
    );
    let gw = gateway(&format!("{MASKS}{RULES}"));
    let token = gw.token("fraud-bot", &["fraud-bots"]);
    let port = gw.mysql_port.expect("mysql").to_string();
    let out = Command::new("node")
        .arg(js.join("mysql2_client.js"))
        .args([&port, &token])
        .current_dir(&js)
        .output()
        .expect("node");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}\n{text}\nlog: {}",
        String::from_utf8_lossy(&out.stderr),
        gw.log_text()
    );
    assert!(
        text.contains(r#"QUERY [{"id":1,"card_number":"************1111"},{"id":2,"card_number":"************5559"}]"#),
        "{text}"
    );
    assert!(
        text.contains(r#"EXECUTE [{"id":2,"card_number":"************5559"}]"#),
        "{text}"
    );
    assert!(text.contains(r#"LOOKUP [{"id":1}]"#), "{text}");
    assert!(
        text.contains("ERR 1227 blocked by rule \"no-deletes\""),
        "{text}"
    );
    assert!(text.contains("builtin:masked-inference"), "{text}");
    assert!(!text.contains("RAN"), "{text}");
    assert_eq!(mariadb().sql("SELECT count(*) FROM shop.payments"), "2\n");
}

#[test]
fn a_running_statement_ends_with_the_session_when_the_gateway_stops() {
    let mut gw = gateway(MASKS);
    let token = gw.token("fraud-bot", &["fraud-bots"]);
    let started = std::time::Instant::now();
    let long = cli_in_thread(&gw, &token, "SELECT SLEEP(29) AS slept");
    assert!(
        running_upstream_id("SELECT SLEEP(29)").is_some(),
        "the statement never ran"
    );
    gw.stop();
    let out = long.join().expect("client thread");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "waited for the statement"
    );
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("1927") || e.contains("shutting down"), "{e}");
    let end = gw.wait_for_record(|r| r["kind"] == "session_end" && r["connection"] == "shop");
    assert!(end.to_string().contains("gateway shutdown"), "{end}");
}

#[test]
fn the_upstream_login_follows_upstream_tls_and_verifies_the_server() {
    use crate::support::mariadb::TLS_USER;
    let server = mariadb();
    let conn = |name: &str, tls: &str, ca: &str| {
        format!(
            "\n[[connection]]\nname = \"{name}\"\nkind = \"mysql\"\nupstream = \"127.0.0.1:{}\"\n\
             database = \"shop\"\nuser = \"{TLS_USER}\"\npassword_env = \"TEST_DB_PASSWORD\"\n\
             upstream_tls = \"{tls}\"\n{ca}allow_groups = [\"dba\"]\n",
            server.port
        )
    };
    let ca = format!("upstream_ca_file = \"{}\"\n", server.ca_file().display());
    // Another CA (the test PostgreSQL's): the MariaDB certificate does not chain to it.
    let other_ca = format!(
        "upstream_ca_file = \"{}\"\n",
        crate::support::cluster().ca_file().display()
    );
    let gw = gateway(&format!(
        "{MASKS}{}{}{}{}",
        conn("shop-verified", "verify-full", &ca),
        conn("shop-encrypted", "require", ""),
        conn("shop-plain", "disable", ""),
        conn("shop-wrong-ca", "verify-full", &other_ca)
    ));
    let dba = gw.token("alice", &["dba"]);
    for name in ["shop-verified", "shop-encrypted"] {
        let out = mysql_cli(
            &gw,
            &dba,
            Some(name),
            "SELECT count(*) FROM payments",
            &["--ssl"],
        );
        assert_eq!(ok_stdout(&out), "2\n", "{name}");
        let start = gw.wait_for_record(|r| r["kind"] == "session_start" && r["connection"] == name);
        assert_eq!(detail_of(&start)["upstream_tls"], true, "{start}");
    }
    // The account requires TLS: without it the server refuses the gateway, and the client
    // hears only that the upstream could not be reached.
    let e = err_text(&mysql_cli(
        &gw,
        &dba,
        Some("shop-plain"),
        "SELECT 1",
        &["--ssl"],
    ));
    assert!(
        e.contains("1105") && e.contains("could not connect to the upstream"),
        "{e}"
    );
    assert!(!e.contains(crate::support::SVC_PASSWORD), "{e}");
    let failed =
        gw.wait_for_record(|r| r["kind"] == "login_failed" && r["connection"] == "shop-plain");
    assert!(
        failed.to_string().contains("upstream_unavailable"),
        "{failed}"
    );
    // verify-full against a CA the server's certificate does not chain to: refused.
    let e = err_text(&mysql_cli(
        &gw,
        &dba,
        Some("shop-wrong-ca"),
        "SELECT 1",
        &["--ssl"],
    ));
    assert!(e.contains("1105"), "{e}");
    let failed =
        gw.wait_for_record(|r| r["kind"] == "login_failed" && r["connection"] == "shop-wrong-ca");
    assert!(
        failed.to_string().to_lowercase().contains("tls"),
        "{failed}"
    );
}

/// MariaDB Connector/J (Debian `libmariadb-java`) with server-side prepared statements.
#[test]
fn connector_j_prepares_server_side_through_the_gateway() {
    let jar = std::path::Path::new("/usr/share/java/mariadb-java-client.jar");
    assert!(
        jar.exists(),
        "install Debian's libmariadb-java (Connector/J)"
    );
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/java/ConnectorJ.java");
    let gw = gateway(&format!("{MASKS}{RULES}"));
    let classes = gw.dir.path().join("classes");
    let javac = Command::new("javac")
        .arg("-d")
        .arg(&classes)
        .arg(&src)
        .output()
        .expect("javac");
    assert!(
        javac.status.success(),
        "{}",
        String::from_utf8_lossy(&javac.stderr)
    );
    let token = gw.token("fraud-bot", &["fraud-bots"]);
    let port = gw.mysql_port.expect("mysql").to_string();
    let cp = format!("{}:{}", jar.display(), classes.display());
    let out = Command::new("java")
        .args(["-cp", &cp, "ConnectorJ", &port, &token])
        .output()
        .expect("java");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}\n{text}\nlog: {}",
        String::from_utf8_lossy(&out.stderr),
        gw.log_text()
    );
    assert!(text.contains("ROW 1 ************1111"), "{text}");
    assert!(
        text.contains("ERR 1227") && text.contains("no-deletes"),
        "{text}"
    );
    assert!(!text.contains("RAN"), "{text}");
    assert_eq!(mariadb().sql("SELECT count(*) FROM shop.payments"), "2\n");
    // The driver prepared on the server: the gateway recorded an execution of the text.
    gw.wait_for_record(|r| {
        r["kind"] == "statement"
            && r["statement"].as_str() == Some("SELECT id, card_number FROM payments WHERE id = ?")
    });
}

/// PyMySQL (pure Python, the text protocol; parameters interpolated by the client) over TLS.
const PYMYSQL_SCRIPT: &str = r#"
import sys, ssl, pymysql
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
c = pymysql.connect(host="127.0.0.1", port=int(sys.argv[1]), user="fraud-bot",
                    password=sys.argv[2], database="shop", ssl=ctx)
with c.cursor() as cur:
    cur.execute("SELECT id, card_number FROM payments WHERE id = %s", (1,))
    print("ROW", cur.fetchall())
    try:
        cur.execute("DELETE FROM payments WHERE id = %s", (1,))
        print("RAN")
    except pymysql.err.MySQLError as e:
        print("ERR", e.args[0], e.args[1])
c.close()
"#;

#[test]
fn pymysql_queries_through_the_gateway_over_tls() {
    let gw = gateway(&format!("{MASKS}{RULES}"));
    let token = gw.token("fraud-bot", &["fraud-bots"]);
    let port = gw.mysql_port.expect("mysql").to_string();
    let text = python_client(&gw, PYMYSQL_SCRIPT, &[&port, &token]);
    assert!(text.contains("ROW ((1, '************1111'),)"), "{text}");
    assert!(
        text.contains("ERR 1227 blocked by rule \"no-deletes\""),
        "{text}"
    );
    assert!(!text.contains("RAN"), "{text}");
}

#[test]
fn views_are_seen_through_for_masking_and_inference() {
    mariadb().sql(
        "CREATE OR REPLACE VIEW shop.cards_v AS SELECT id, card_number AS c FROM shop.payments;
         CREATE OR REPLACE VIEW shop.cards_w AS SELECT id, concat(card_number, '') AS c FROM shop.payments;
         CREATE OR REPLACE VIEW shop.cards_vv AS SELECT c AS cc FROM shop.cards_v",
    );
    let gw = gateway(MASKS);
    let token = gw.token("fraud-bot", &["fraud-bots"]);
    let run = |sql: &str| ok_stdout(&mysql_cli(&gw, &token, Some("shop"), sql, &["--ssl"]));
    // The server names the view, not the card column: the view's query says what it shows.
    assert_eq!(
        run("SELECT * FROM cards_v WHERE id = 1"),
        "1\t************1111\n"
    );
    // A view that computes from the card number shows a derivative: masked whole.
    assert_eq!(run("SELECT c FROM cards_w WHERE id = 1"), "[REDACTED]\n");
    // Views over views are followed.
    assert_eq!(run("SELECT cc FROM cards_vv LIMIT 1"), "************1111\n");
    // Inference through a view's column is refused like through the table's.
    let e = err_text(&mysql_cli(
        &gw,
        &token,
        Some("shop"),
        "SELECT id FROM cards_v WHERE c LIKE '4111%'",
        &["--ssl"],
    ));
    assert!(e.contains("builtin:masked-inference"), "{e}");
    // A read of masked values through a view taints the diagnostics like a direct read.
    let out = mysql_cli(
        &gw,
        &token,
        Some("shop"),
        "SELECT c FROM cards_v WHERE id = 1; SHOW WARNINGS",
        &["--ssl"],
    );
    assert!(err_text(&out).contains("builtin:masked-diagnostics"));
    mariadb().sql("DROP VIEW shop.cards_vv, shop.cards_v, shop.cards_w");
}

/// The attacker's server-side state: an upstream session that starts in an `sql_mode` where
/// quotes or backslashes read differently (set outside the gateway, here by the server's
/// `init_connect` for one account) is refused before the client can send anything, with 1227
/// and a `login_failed` record; a mode that does not change how strings and names are read
/// (`PIPES_AS_CONCAT`: `||` concatenates) is served, and a masked column concatenated by
/// `||` is refused as a computation with it.
#[test]
fn an_upstream_session_in_a_mode_the_gateway_cannot_parse_is_refused() {
    let server = mariadb();
    // Accounts without SUPER run init_connect; the mode depends on the account, so the other
    // tests' sessions on this server are untouched.
    server.sql(&format!(
        "CREATE USER IF NOT EXISTS 'gh_ansi'@'%' IDENTIFIED BY '{pw}';
         GRANT SELECT ON shop.* TO 'gh_ansi'@'%';
         CREATE USER IF NOT EXISTS 'gh_nobs'@'%' IDENTIFIED BY '{pw}';
         GRANT SELECT ON shop.* TO 'gh_nobs'@'%';
         CREATE USER IF NOT EXISTS 'gh_pipes'@'%' IDENTIFIED BY '{pw}';
         GRANT SELECT ON shop.* TO 'gh_pipes'@'%';
         SET GLOBAL init_connect = \"SET sql_mode = CASE SUBSTRING_INDEX(CURRENT_USER(), '@', 1) \
           WHEN 'gh_ansi' THEN CONCAT(@@sql_mode, ',ANSI') \
           WHEN 'gh_nobs' THEN CONCAT(@@sql_mode, ',NO_BACKSLASH_ESCAPES') \
           WHEN 'gh_pipes' THEN CONCAT(@@sql_mode, ',PIPES_AS_CONCAT') \
           ELSE @@sql_mode END\";",
        pw = crate::support::SVC_PASSWORD
    ));
    let conn = |name: &str, user: &str| {
        format!(
            "\n[[connection]]\nname = \"{name}\"\nkind = \"mysql\"\nupstream = \"127.0.0.1:{}\"\n\
             database = \"shop\"\nuser = \"{user}\"\npassword_env = \"TEST_DB_PASSWORD\"\n\
             upstream_tls = \"disable\"\nallow_groups = [\"fraud-bots\"]\n",
            server.port
        )
    };
    let masks = r#"
[[mask]]
connections = ["shop-ansi", "shop-nobs", "shop-pipes"]
columns = ["shop.payments.card_number"]
detectors = ["pan"]
style = "last4"
"#;
    let gw = gateway(&format!(
        "{masks}{}{}{}",
        conn("shop-ansi", "gh_ansi"),
        conn("shop-nobs", "gh_nobs"),
        conn("shop-pipes", "gh_pipes")
    ));
    let token = gw.token("fraud-bot", &["fraud-bots"]);
    for (name, flag) in [
        ("shop-ansi", "ANSI_QUOTES"),
        ("shop-nobs", "NO_BACKSLASH_ESCAPES"),
    ] {
        let e = err_text(&mysql_cli(
            &gw,
            &token,
            Some(name),
            "SELECT card_number FROM payments",
            &["--ssl"],
        ));
        assert!(e.contains("1227") && e.contains("sql_mode"), "{name}: {e}");
        assert!(e.contains(flag), "{name}: {e}");
        assert!(!e.contains("4111"), "{e}");
        let failed = gw.wait_for_record(|r| r["kind"] == "login_failed" && r["connection"] == name);
        assert!(
            failed.to_string().contains("upstream_state_refused"),
            "{failed}"
        );
        assert!(
            gw.export()
                .iter()
                .all(|r| !(r["kind"] == "statement" && r["connection"] == name)),
            "no statement of {name} was recorded, none reached the server"
        );
    }
    // The session is served in that mode, masked as everywhere.
    let out = mysql_cli(
        &gw,
        &token,
        Some("shop-pipes"),
        "SELECT @@sql_mode LIKE '%PIPES_AS_CONCAT%', card_number FROM payments WHERE id = 1",
        &["--ssl"],
    );
    assert_eq!(ok_stdout(&out), "1\t************1111\n");
    // `||` concatenates here, where the gateway's parser reads an OR: either way it computes
    // with the card number, which a masked identity may not do.
    let e = err_text(&mysql_cli(
        &gw,
        &token,
        Some("shop-pipes"),
        "SELECT card_number || '' FROM payments WHERE id = 1",
        &["--ssl"],
    ));
    assert!(
        e.contains("1227") && e.contains("builtin:masked-inference"),
        "{e}"
    );
    assert!(!e.contains("4111111111111111"), "{e}");
    server.sql("SET GLOBAL init_connect = ''");
}

/// A MySQL 8 upstream with `caching_sha2_password` (a MySQL-protocol test server: no MySQL 8
/// is packaged here, and MariaDB has no such server plugin): the gateway passes the fast
/// path, and full authentication without TLS only to the server's pinned RSA key — it never
/// asks the server for a key, sends no password in the clear, and without a pinned key (or
/// with the wrong one) the login fails with 1105 for the client and a record naming why.
#[test]
fn a_mysql8_upstream_is_logged_into_by_caching_sha2_fast_path_or_the_pinned_rsa_key() {
    use crate::support::mysql8::Mysql8;
    let server = Mysql8::start(crate::support::SVC_PASSWORD);
    let keys = tempfile::tempdir().expect("tempdir");
    let pinned = keys.path().join("mysql8-public.pem");
    std::fs::write(&pinned, &server.public_pem).expect("key");
    let other = keys.path().join("other-public.pem");
    std::fs::write(&other, &Mysql8::start("x").public_pem).expect("key");
    let conn = |name: &str, user: &str, key: Option<&std::path::Path>| {
        let key = key
            .map(|k| format!("upstream_rsa_public_key_file = \"{}\"\n", k.display()))
            .unwrap_or_default();
        format!(
            "\n[[connection]]\nname = \"{name}\"\nkind = \"mysql\"\nupstream = \"127.0.0.1:{}\"\n\
             database = \"shop\"\nuser = \"{user}\"\npassword_env = \"TEST_DB_PASSWORD\"\n\
             upstream_tls = \"disable\"\n{key}allow_groups = [\"dba\"]\n",
            server.port
        )
    };
    let gw = gateway(&format!(
        "{}{}{}{}",
        conn("m8-fast", "fast_user", None),
        conn("m8-pinned", "full_user", Some(&pinned)),
        conn("m8-unpinned", "full_user", None),
        conn("m8-wrong-key", "full_user", Some(&other)),
    ));
    let dba = gw.token("alice", &["dba"]);
    for name in ["m8-fast", "m8-pinned"] {
        let out = mysql_cli(&gw, &dba, Some(name), "SELECT 'hi'", &["--ssl"]);
        assert_eq!(ok_stdout(&out), "hello from mysql 8\n", "{name}");
        let start = gw.wait_for_record(|r| r["kind"] == "session_start" && r["connection"] == name);
        assert_eq!(
            detail_of(&start)["upstream_version"],
            "8.0.40-gatehouse-test"
        );
    }
    let log = server.log();
    assert!(log.contains(&"fast ok".to_owned()), "{log:?}");
    assert!(log.contains(&"full rsa ok".to_owned()), "{log:?}");
    for (name, why) in [
        ("m8-unpinned", "upstream_rsa_public_key_file"),
        ("m8-wrong-key", "Access denied"),
    ] {
        let e = err_text(&mysql_cli(&gw, &dba, Some(name), "SELECT 'hi'", &["--ssl"]));
        assert!(
            e.contains("1105") && e.contains("could not connect to the upstream"),
            "{name}: {e}"
        );
        assert!(!e.contains(crate::support::SVC_PASSWORD), "{e}");
        let failed = gw.wait_for_record(|r| r["kind"] == "login_failed" && r["connection"] == name);
        let raw = failed.to_string();
        assert!(
            raw.contains("upstream_unavailable") && raw.contains(why),
            "{name}: {raw}"
        );
        assert!(!raw.contains(crate::support::SVC_PASSWORD), "{raw}");
    }
    let log = server.log();
    assert!(!log.contains(&"key requested".to_owned()), "{log:?}");
    assert!(
        !log.contains(&"password in the clear".to_owned()),
        "{log:?}"
    );
    assert_eq!(
        log.iter().filter(|l| *l == "bad password").count(),
        1,
        "the wrong key's ciphertext reached the server and was refused: {log:?}"
    );
    assert!(
        log.iter().any(|l| l == "query SELECT 'hi'"),
        "the client's query reached the server: {log:?}"
    );
}
