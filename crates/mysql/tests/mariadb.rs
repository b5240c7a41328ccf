//! The codec against a real MariaDB: a throwaway server (`mariadb-install-db` + `mariadbd` on a
//! free loopback port, as the `mysql` OS user when run as root), logged into with the
//! `mysql_native_password` scramble and queried in the text protocol. What the gateway's
//! upstream login will do, checked byte for byte against the server users run.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use gatehouse_core::masking::{MaskRule, MaskSet, MaskStyle, TokenKey};
use gatehouse_mysql::capabilities::{
    DEPRECATE_EOF, LONG_PASSWORD, MULTI_RESULTS, PLUGIN_AUTH, PLUGIN_AUTH_LENENC_CLIENT_DATA,
    PROTOCOL_41, SECURE_CONNECTION, TRANSACTIONS,
};
use gatehouse_mysql::mask::RowMask;
use gatehouse_mysql::messages::command::{query, text_row};
use gatehouse_mysql::messages::{
    AuthSwitchRequest, ColumnDefinition, ErrPacket, HandshakeResponse41, HandshakeV10,
};
use gatehouse_mysql::wire::Reader;
use gatehouse_mysql::{Packet, PacketReader, auth, write_packets};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SVC_USER: &str = "gatehouse_svc";
const SVC_PASSWORD: &str = "svc-secret-7";

struct MariaDb {
    port: u16,
    /// The server runs under a shell that waits on this pipe: when the test process exits
    /// (however it exits), the pipe closes and the shell stops the server and removes its
    /// directory. A static's `Drop` would never run.
    _keepalive: std::sync::Mutex<std::process::ChildStdin>,
}

/// The server binary: on PATH, or where Debian puts it (`/usr/sbin`, not on a user's PATH).
fn mariadbd() -> String {
    ["/usr/sbin/mariadbd", "/usr/bin/mariadbd"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .unwrap_or("mariadbd")
        .to_owned()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn free_port() -> u16 {
    // Below the ephemeral range, where a client socket cannot take it meanwhile.
    let start = 20_000 + (std::process::id() % 6_000) as u16 + 6_000;
    (start..start + 2_000)
        .find(|p| TcpListener::bind(("127.0.0.1", *p)).is_ok())
        .expect("a free port")
}

/// One server for this test binary, stopped when the process exits (see [`MariaDb`]).
fn server() -> &'static MariaDb {
    static SERVER: OnceLock<MariaDb> = OnceLock::new();
    SERVER.get_or_init(start)
}

fn start() -> MariaDb {
    let dir = tempfile::tempdir().expect("tempdir");
    let data: PathBuf = dir.path().join("data");
    let root = is_root();
    if root {
        assert!(
            Command::new("chown")
                .args(["-R", "mysql:mysql"])
                .arg(dir.path())
                .status()
                .unwrap()
                .success()
        );
    }
    let mut install = Command::new("mariadb-install-db");
    install
        .arg("--no-defaults")
        .arg(format!("--datadir={}", data.display()))
        .args(["--auth-root-authentication-method=normal", "--skip-test-db"]);
    if root {
        install.arg("--user=mysql");
    }
    let out = install.output().expect("mariadb-install-db");
    assert!(
        out.status.success(),
        "mariadb-install-db: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let port = free_port();
    let socket = dir.path().join("sock");
    let mut cmd = Command::new("mariadbd");
    cmd.arg("--no-defaults")
        .arg(format!("--datadir={}", data.display()))
        .arg(format!("--socket={}", socket.display()))
        .arg(format!("--port={port}"))
        .args([
            "--bind-address=127.0.0.1",
            "--skip-name-resolve",
            "--innodb-buffer-pool-size=16M",
        ])
        .arg(format!(
            "--log-error={}",
            dir.path().join("err.log").display()
        ))
        .arg(format!("--pid-file={}", dir.path().join("pid").display()));
    if root {
        cmd.arg("--user=mysql");
    }
    let mut line: Vec<String> = vec![mariadbd()];
    line.extend(cmd.get_args().map(|a| a.to_string_lossy().into_owned()));
    let dir = dir.keep();
    let script = format!(
        "{} >/dev/null 2>&1 & pid=$!; cat >/dev/null; kill $pid; wait $pid; rm -rf {}",
        line.join(" "),
        dir.display()
    );
    let mut child: Child = Command::new("bash")
        .args(["-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start mariadbd");
    let stdin = child.stdin.take().expect("stdin");
    std::mem::forget(child);
    let server = MariaDb {
        port,
        _keepalive: std::sync::Mutex::new(stdin),
    };
    // Ready once the socket answers the CLI.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ok = Command::new("mariadb")
            .arg("--no-defaults")
            .arg(format!("--socket={}", socket.display()))
            .args(["-u", "root", "-e", "SELECT 1"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if ok {
            break;
        }
        assert!(Instant::now() < deadline, "mariadbd did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    let sql = format!(
        "CREATE USER '{SVC_USER}'@'%' IDENTIFIED VIA mysql_native_password USING PASSWORD('{SVC_PASSWORD}');
         GRANT ALL ON *.* TO '{SVC_USER}'@'%';
         CREATE DATABASE shop;
         CREATE TABLE shop.payments (id int PRIMARY KEY, card_number varchar(32), note text);
         INSERT INTO shop.payments VALUES (1, '4111111111111111', NULL);"
    );
    let out = Command::new("mariadb")
        .arg("--no-defaults")
        .arg(format!("--socket={}", socket.display()))
        .args(["-u", "root", "-e", &sql])
        .output()
        .expect("mariadb");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    server
}

struct Conn {
    tcp: TcpStream,
    buf: BytesMut,
    reader: PacketReader,
}

impl Conn {
    async fn read(&mut self) -> Packet {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(p) = self.reader.next_packet(&mut self.buf).expect("framing") {
                return p;
            }
            assert!(Instant::now() < deadline, "no packet in time");
            let n = tokio::time::timeout(Duration::from_secs(20), self.tcp.read_buf(&mut self.buf))
                .await
                .expect("read in time")
                .expect("read");
            assert!(n > 0, "the server closed the connection");
        }
    }

    async fn send(&mut self, payload: &[u8], seq: u8) {
        let mut out = BytesMut::new();
        write_packets(payload, seq, &mut out);
        self.tcp.write_all(&out).await.expect("write");
    }
}

/// Logs in as the service user with `password`; the server's final answer (OK or ERR payload).
async fn login(password: &str) -> (Conn, Vec<u8>) {
    let tcp = TcpStream::connect(("127.0.0.1", server().port))
        .await
        .expect("connect");
    let mut c = Conn {
        tcp,
        buf: BytesMut::new(),
        reader: PacketReader::new(16 << 20),
    };
    let greeting = c.read().await;
    let hello = HandshakeV10::parse(&greeting.payload).expect("greeting");
    assert_eq!(hello.auth_data.len(), 20, "a 20-byte scramble");
    let caps = hello.capabilities
        & (LONG_PASSWORD
            | PROTOCOL_41
            | SECURE_CONNECTION
            | PLUGIN_AUTH
            | PLUGIN_AUTH_LENENC_CLIENT_DATA
            | TRANSACTIONS
            | MULTI_RESULTS
            | DEPRECATE_EOF);
    let response = HandshakeResponse41 {
        capabilities: caps,
        max_packet: 16 << 20,
        charset: 45,
        user: SVC_USER.as_bytes().to_vec(),
        auth_response: auth::native_password(password.as_bytes(), &hello.auth_data),
        database: None,
        auth_plugin: Some(b"mysql_native_password".to_vec()),
        attributes: Vec::new(),
    };
    let mut out = Vec::new();
    response.encode(&mut out);
    c.send(&out, greeting.next_seq()).await;
    let mut answer = c.read().await;
    if answer.payload.first() == Some(&0xfe) {
        let switch = AuthSwitchRequest::parse(&answer.payload).expect("auth switch");
        assert_eq!(switch.plugin, b"mysql_native_password");
        let reply = auth::native_password(password.as_bytes(), &switch.data);
        c.send(&reply, answer.next_seq()).await;
        answer = c.read().await;
    }
    (c, answer.payload.to_vec())
}

#[tokio::test]
async fn the_held_credential_logs_in_and_a_text_result_is_read_column_by_column() {
    let (mut c, ok) = login(SVC_PASSWORD).await;
    assert_eq!(ok.first(), Some(&0x00), "OK after login: {ok:?}");

    c.send(
        &query(b"SELECT id, card_number AS cn, note FROM shop.payments"),
        0,
    )
    .await;
    let count = c.read().await;
    let n = Reader::new(&count.payload)
        .lenenc("column count")
        .expect("count") as usize;
    assert_eq!(n, 3);
    let mut columns = Vec::new();
    for _ in 0..n {
        columns.push(ColumnDefinition::parse(&c.read().await.payload).expect("column"));
    }
    // What masking resolves a result column by: the table and column it comes from.
    assert_eq!(columns[1].org_table, b"payments");
    assert_eq!(columns[1].org_name, b"card_number");
    assert_eq!(columns[1].name, b"cn");
    assert_eq!(columns[1].schema, b"shop");
    // The masking of this result for a session under a `last4` rule on the card column.
    let masks = MaskSet::compile(
        &[MaskRule {
            columns: vec!["shop.payments.card_number".into()],
            detectors: vec!["pan".into()],
            style: MaskStyle::Last4,
            ..MaskRule::default()
        }],
        TokenKey::from_bytes([9; 32]),
    )
    .expect("mask rules")
    .for_session("shop", &[]);
    let mut plan = RowMask::plan(&columns, &masks, None);
    let own = |payload: &[u8]| -> Vec<Option<Vec<u8>>> {
        text_row(payload, n)
            .expect("row")
            .into_iter()
            .map(|v| v.map(<[u8]>::to_vec))
            .collect()
    };
    let mut rows = Vec::new();
    let mut masked = Vec::new();
    loop {
        let p = c.read().await;
        if p.payload.first() == Some(&0xfe) && p.payload.len() < 0xff_ffff {
            break; // the OK (DEPRECATE_EOF) that ends the result set
        }
        rows.push(own(&p.payload));
        let out = plan
            .text_row(&p.payload, &masks)
            .expect("masking")
            .expect("rewritten");
        masked.push(own(&out));
    }
    let card = |v: &[u8]| vec![Some(b"1".to_vec()), Some(v.to_vec()), None];
    assert_eq!(rows, vec![card(b"4111111111111111")]);
    assert_eq!(masked, vec![card(b"************1111")]);
}

#[tokio::test]
async fn a_wrong_password_gets_the_servers_access_denied() {
    let (_c, answer) = login("not-the-password").await;
    let err = ErrPacket::parse(&answer).expect("an ERR packet");
    assert_eq!(err.code, 1045);
    assert_eq!(&err.sqlstate, b"28000");
}
