//! Hostile and broken clients: garbage, lying lengths, half-open sockets, unusual
//! negotiation, refused sub-protocols and abrupt disconnects. Each is spoken by hand over raw
//! TCP; in every test a well-behaved tokio-postgres client on the same gateway keeps working
//! during and after the abuse, which also proves the gateway process did not die.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const PROTOCOL_3_0: i32 = 196_608;
const PROTOCOL_3_2: i32 = 196_610;
const SSL_REQUEST: i32 = 80_877_103;
const GSSENC_REQUEST: i32 = 80_877_104;

/// A rejection must come well before the 3 s startup timeout of the test config: otherwise
/// the gateway merely gave up waiting rather than refusing.
const PROMPT: Duration = Duration::from_millis(2000);

/// One backend message as received.
#[derive(Debug, Clone)]
struct Msg {
    tag: u8,
    body: Vec<u8>,
}

impl Msg {
    fn tag(&self) -> char {
        self.tag as char
    }

    /// ErrorResponse / NoticeResponse fields by code (`S`, `V`, `C`, `M`...).
    fn fields(&self) -> BTreeMap<char, String> {
        let mut out = BTreeMap::new();
        let mut rest = &self.body[..];
        while let Some((&code, tail)) = rest.split_first() {
            if code == 0 {
                break;
            }
            let end = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
            out.insert(
                code as char,
                String::from_utf8_lossy(&tail[..end]).into_owned(),
            );
            rest = tail.get(end + 1..).unwrap_or_default();
        }
        out
    }

    /// The i32 at `at` in the body.
    fn i32_at(&self, at: usize) -> i32 {
        i32::from_be_bytes(self.body[at..at + 4].try_into().unwrap())
    }

    /// DataRow values as text.
    fn row(&self) -> Vec<Option<String>> {
        assert_eq!(self.tag, b'D');
        let n = i16::from_be_bytes([self.body[0], self.body[1]]);
        let mut at = 2;
        let mut out = Vec::new();
        for _ in 0..n {
            let len = self.i32_at(at);
            at += 4;
            if len < 0 {
                out.push(None);
            } else {
                let len = len as usize;
                out.push(Some(
                    String::from_utf8_lossy(&self.body[at..at + len]).into_owned(),
                ));
                at += len;
            }
        }
        out
    }
}

fn describe(msgs: &[Msg]) -> String {
    msgs.iter()
        .map(|m| {
            if m.tag == b'E' || m.tag == b'N' {
                format!("{}{:?}", m.tag(), m.fields())
            } else {
                format!("{}({} bytes)", m.tag(), m.body.len())
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn startup_packet(version: i32, params: &[(&str, &str)]) -> Vec<u8> {
    let mut body = version.to_be_bytes().to_vec();
    for (k, v) in params {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut out = i32::try_from(body.len() + 4)
        .unwrap()
        .to_be_bytes()
        .to_vec();
    out.extend_from_slice(&body);
    out
}

/// A startup-style packet: 4-byte length (including itself), then `body`.
fn framed_startup(body: Vec<u8>) -> Vec<u8> {
    let mut out = i32::try_from(body.len() + 4)
        .unwrap()
        .to_be_bytes()
        .to_vec();
    out.extend_from_slice(&body);
    out
}

fn request_packet(code: i32) -> Vec<u8> {
    let mut out = 8i32.to_be_bytes().to_vec();
    out.extend_from_slice(&code.to_be_bytes());
    out
}

fn message(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend_from_slice(&i32::try_from(body.len() + 4).unwrap().to_be_bytes());
    out.extend_from_slice(body);
    out
}

fn query(sql: &str) -> Vec<u8> {
    let mut body = sql.as_bytes().to_vec();
    body.push(0);
    message(b'Q', &body)
}

fn password(token: &str) -> Vec<u8> {
    let mut body = token.as_bytes().to_vec();
    body.push(0);
    message(b'p', &body)
}

async fn raw_connect(gw: &Gateway) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", gw.pg_port))
        .await
        .expect("connect to the gateway");
    s.set_nodelay(true).unwrap();
    s
}

fn is_closed(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::UnexpectedEof
            | std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::BrokenPipe
    )
}

/// Reads one message; `None` when the gateway closed the connection. Panics if nothing
/// arrives within `wait`.
async fn read_msg(s: &mut TcpStream, wait: Duration) -> Option<Msg> {
    let fut = async {
        let mut header = [0u8; 5];
        if let Err(e) = s.read_exact(&mut header).await {
            assert!(is_closed(&e), "read error: {e}");
            return None;
        }
        let len = i32::from_be_bytes(header[1..5].try_into().unwrap());
        assert!(
            (4..16 * 1024 * 1024).contains(&len),
            "gateway sent a message {:?} with length {len}",
            header[0] as char
        );
        let mut body = vec![0u8; len as usize - 4];
        if let Err(e) = s.read_exact(&mut body).await {
            assert!(is_closed(&e), "read error: {e}");
            return None;
        }
        Some(Msg {
            tag: header[0],
            body,
        })
    };
    tokio::time::timeout(wait, fut)
        .await
        .unwrap_or_else(|_| panic!("no answer from the gateway within {wait:?}"))
}

/// Reads one byte (the answer to SSLRequest / GSSENCRequest).
async fn read_byte(s: &mut TcpStream) -> u8 {
    let mut b = [0u8; 1];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut b))
        .await
        .expect("answer to the request")
        .expect("one byte");
    b[0]
}

/// Reads until the gateway closes the connection; panics if it is still open after `wait`.
async fn read_until_close(s: &mut TcpStream, wait: Duration) -> Vec<Msg> {
    let deadline = Instant::now() + wait;
    let mut out = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "connection still open after {wait:?}; got {}",
            describe(&out)
        );
        match read_msg(s, left).await {
            Some(m) => out.push(m),
            None => return out,
        }
    }
}

/// Reads up to and including the next ReadyForQuery.
async fn read_until_ready(s: &mut TcpStream) -> Vec<Msg> {
    let mut out = Vec::new();
    loop {
        match read_msg(s, Duration::from_secs(15)).await {
            Some(m) => {
                let done = m.tag == b'Z';
                out.push(m);
                if done {
                    return out;
                }
            }
            None => panic!(
                "connection closed before ReadyForQuery; got {}",
                describe(&out)
            ),
        }
    }
}

/// Reads up to and including the authentication request (and checks it is cleartext).
async fn read_until_auth_request(s: &mut TcpStream) -> Vec<Msg> {
    let mut out = Vec::new();
    loop {
        let m = read_msg(s, Duration::from_secs(5))
            .await
            .unwrap_or_else(|| panic!("closed before the auth request: {}", describe(&out)));
        let done = m.tag == b'R';
        out.push(m);
        if done {
            let r = out.last().unwrap();
            assert_eq!(r.i32_at(0), 3, "expected AuthenticationCleartextPassword");
            return out;
        }
        assert_ne!(
            out.last().unwrap().tag,
            b'E',
            "startup refused: {}",
            describe(&out)
        );
    }
}

/// Sends the password (token) and reads the rest of the login up to ReadyForQuery.
async fn finish_login(s: &mut TcpStream, token: &str) -> Vec<Msg> {
    s.write_all(&password(token)).await.unwrap();
    let msgs = read_until_ready(s).await;
    assert!(
        msgs.iter().all(|m| m.tag != b'E'),
        "login failed: {}",
        describe(&msgs)
    );
    assert_eq!(msgs.first().map(|m| (m.tag, m.i32_at(0))), Some((b'R', 0)));
    msgs
}

/// A raw-socket session logged in to `payments`.
async fn raw_login(gw: &Gateway, token: &str) -> TcpStream {
    let mut s = raw_connect(gw).await;
    s.write_all(&startup_packet(
        PROTOCOL_3_0,
        &[("user", "raw-agent"), ("database", "payments")],
    ))
    .await
    .unwrap();
    read_until_auth_request(&mut s).await;
    finish_login(&mut s, token).await;
    s
}

/// Runs a simple query on a raw session and returns its rows as text.
async fn raw_query(s: &mut TcpStream, sql: &str) -> Vec<Vec<Option<String>>> {
    s.write_all(&query(sql)).await.unwrap();
    let msgs = read_until_ready(s).await;
    assert!(
        msgs.iter().all(|m| m.tag != b'E'),
        "{sql}: {}",
        describe(&msgs)
    );
    msgs.iter()
        .filter(|m| m.tag == b'D')
        .map(Msg::row)
        .collect()
}

/// Asserts the connection is closed promptly after at most one FATAL ErrorResponse with
/// `sqlstate`, and returns the messages received.
async fn expect_fatal_and_close(s: &mut TcpStream, sqlstate: &str, what: &str) -> Vec<Msg> {
    let started = Instant::now();
    let msgs = read_until_close(s, Duration::from_secs(10)).await;
    assert!(
        started.elapsed() < PROMPT,
        "{what}: closed only after {:?} (the startup timeout, not a rejection?)",
        started.elapsed()
    );
    assert!(
        msgs.len() <= 1,
        "{what}: expected at most one ErrorResponse, got {}",
        describe(&msgs)
    );
    if let Some(m) = msgs.first() {
        assert_eq!(m.tag, b'E', "{what}: {}", describe(&msgs));
        let f = m.fields();
        assert_eq!(
            f.get(&'C').map(String::as_str),
            Some(sqlstate),
            "{what}: {f:?}"
        );
        assert_eq!(
            f.get(&'S').map(String::as_str),
            Some("FATAL"),
            "{what}: {f:?}"
        );
        assert!(!f.get(&'M').cloned().unwrap_or_default().is_empty());
    }
    msgs
}

/// The well-behaved client still answers correctly.
async fn assert_healthy(c: &tokio_postgres::Client) {
    let n: i64 = tokio::time::timeout(
        Duration::from_secs(10),
        c.query_one("SELECT count(*) FROM customers", &[]),
    )
    .await
    .expect("well-behaved client answered in time")
    .expect("well-behaved client query")
    .get(0);
    assert_eq!(n, 2);
}

/// A brand-new client can still connect and query.
async fn assert_accepts_new_clients(gw: &Gateway, token: &str) {
    let c = tokio::time::timeout(Duration::from_secs(10), gw.connect("payments", token))
        .await
        .expect("new connection in time");
    let v: i32 = c.query_one("SELECT 41 + 1", &[]).await.unwrap().get(0);
    assert_eq!(v, 42);
}

/// Deterministic pseudo-random bytes (xorshift), so failures reproduce.
fn noise(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

#[tokio::test]
async fn garbage_first_packet_is_refused_and_the_gateway_keeps_serving() {
    let gw = Gateway::start();
    let token = gw.token("robust-garbage", &["dba"]);
    let good = gw.connect("payments", &token).await;

    let mut cases: Vec<(String, Vec<u8>)> = vec![
        (
            "HTTP request".into(),
            b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n".to_vec(),
        ),
        (
            "TLS ClientHello without SSLRequest".into(),
            vec![
                0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03, 0, 0, 0,
            ],
        ),
        ("zero length".into(), vec![0; 16]),
        (
            "unknown request code".into(),
            vec![0, 0, 0, 8, 0xde, 0xad, 0xbe, 0xef],
        ),
        (
            "3.0 startup without terminator".into(),
            framed_startup([&PROTOCOL_3_0.to_be_bytes()[..], b"user\0x\0"].concat()),
        ),
        (
            "3.0 startup with a non-UTF-8 parameter".into(),
            framed_startup([&PROTOCOL_3_0.to_be_bytes()[..], b"user\0\xff\xfe\0\0"].concat()),
        ),
        (
            "cancel request with a 1-byte secret".into(),
            framed_startup(
                [
                    &80_877_102i32.to_be_bytes()[..],
                    &7i32.to_be_bytes()[..],
                    &[1u8][..],
                ]
                .concat(),
            ),
        ),
    ];
    // Noise framed as a complete 3.0 startup packet (so a refusal is not just a timeout).
    for seed in 1..=12u64 {
        let mut body = PROTOCOL_3_0.to_be_bytes().to_vec();
        body.extend_from_slice(&noise(seed, 40 + seed as usize * 7));
        body.push(0xff);
        cases.push((format!("noise seed {seed}"), framed_startup(body)));
    }

    for (what, bytes) in &cases {
        let mut s = raw_connect(&gw).await;
        s.write_all(bytes).await.unwrap();
        expect_fatal_and_close(&mut s, "08P01", what).await;
    }
    // Raw noise with no framing at all: whatever it claims, the connection ends (refusal or
    // startup timeout) and nothing but an error comes back.
    for seed in 100..104u64 {
        let mut s = raw_connect(&gw).await;
        s.write_all(&noise(seed, 300)).await.unwrap();
        let msgs = read_until_close(&mut s, Duration::from_secs(10)).await;
        assert!(
            msgs.iter().all(|m| m.tag == b'E'),
            "seed {seed}: {}",
            describe(&msgs)
        );
    }

    assert_healthy(&good).await;
    assert_accepts_new_clients(&gw, &token).await;
}

#[tokio::test]
async fn huge_startup_length_is_refused_without_reading_it() {
    let gw = Gateway::start();
    let token = gw.token("robust-startup-len", &["dba"]);
    let good = gw.connect("payments", &token).await;

    for (what, len) in [
        ("2 GiB", i32::MAX),
        ("1 GiB", 0x4000_0000),
        ("one byte over the 10000-byte limit", 10_001),
        ("negative", -1),
        ("shorter than its own header", 7),
    ] {
        let mut s = raw_connect(&gw).await;
        let mut p = len.to_be_bytes().to_vec();
        p.extend_from_slice(&PROTOCOL_3_0.to_be_bytes());
        p.extend_from_slice(b"user\0x\0\0");
        s.write_all(&p).await.unwrap();
        expect_fatal_and_close(&mut s, "08P01", what).await;
        assert_healthy(&good).await;
    }
    assert_accepts_new_clients(&gw, &token).await;
}

#[tokio::test]
async fn huge_or_bad_message_after_login_is_a_protocol_error() {
    let gw = Gateway::start();
    let token = gw.token("robust-huge-msg", &["dba"]);
    let good = gw.connect("payments", &token).await;

    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("Query declaring 1 GiB", vec![b'Q', 0x40, 0, 0, 0]),
        (
            "Query declaring 1 GiB, with some of it",
            [vec![b'Q', 0x40, 0, 0, 0], b"SELECT ".repeat(1000)].concat(),
        ),
        (
            "CopyData declaring 2 GiB",
            vec![b'd', 0x7f, 0xff, 0xff, 0xff],
        ),
        (
            "Query with a negative length",
            vec![b'Q', 0xff, 0xff, 0xff, 0xff],
        ),
        ("Query shorter than its header", vec![b'Q', 0, 0, 0, 3]),
        ("Sync with a body", vec![b'S', 0, 0, 0, 5, 0]),
        ("Describe declaring 1 MiB", vec![b'D', 0, 0x10, 0, 0]),
    ];
    for (what, bytes) in &cases {
        let mut s = raw_login(&gw, &token).await;
        s.write_all(bytes).await.unwrap();
        let msgs = expect_fatal_and_close(&mut s, "08P01", what).await;
        assert_eq!(msgs.len(), 1, "{what}: expected a FATAL ErrorResponse");
        assert_healthy(&good).await;
    }
    // The protocol errors are on the record.
    gw.wait_for_record(|r| {
        r["kind"] == "statement" && r["subject"] == "robust-huge-msg" && r["sqlstate"] == "08P01"
    });
    assert_accepts_new_clients(&gw, &token).await;
}

#[tokio::test]
async fn unknown_message_type_after_login_is_a_protocol_error() {
    let gw = Gateway::start();
    let token = gw.token("robust-unknown", &["dba"]);
    let good = gw.connect("payments", &token).await;

    for (what, bytes) in [
        ("unknown type 'Y'", message(b'Y', b"")),
        ("unknown type NUL", message(0, b"abc")),
        ("backend-only type 'Z'", message(b'Z', b"I")),
        ("password message after login", password("again")),
    ] {
        let mut s = raw_login(&gw, &token).await;
        // The session works first; then the bad message ends it.
        assert_eq!(
            raw_query(&mut s, "SELECT 'ok'").await,
            vec![vec![Some("ok".to_owned())]]
        );
        s.write_all(&bytes).await.unwrap();
        let msgs = expect_fatal_and_close(&mut s, "08P01", what).await;
        assert_eq!(msgs.len(), 1, "{what}: expected a FATAL ErrorResponse");
        assert_healthy(&good).await;
    }
    assert_accepts_new_clients(&gw, &token).await;
}

/// Time from `since` until the gateway closes `s` (with nothing but an error on the way).
async fn closed_after(mut s: TcpStream, since: Instant, what: &str) -> Duration {
    let msgs = read_until_close(&mut s, Duration::from_secs(15)).await;
    assert!(
        msgs.iter().all(|m| m.tag == b'E'),
        "{what}: {}",
        describe(&msgs)
    );
    since.elapsed()
}

#[tokio::test]
async fn half_open_connections_time_out_while_others_work() {
    let gw = Gateway::start();
    let token = gw.token("robust-half-open", &["dba"]);
    let good = gw.connect("payments", &token).await;

    let since = Instant::now();
    // Connects and says nothing.
    let silent = raw_connect(&gw).await;
    // Half a startup packet.
    let mut half = raw_connect(&gw).await;
    let p = startup_packet(PROTOCOL_3_0, &[("user", "slow"), ("database", "payments")]);
    half.write_all(&p[..p.len() / 2]).await.unwrap();
    // A whole startup packet, then no password.
    let mut no_password = raw_connect(&gw).await;
    no_password.write_all(&p).await.unwrap();
    read_until_auth_request(&mut no_password).await;
    // Half of a password message.
    let mut half_password = raw_connect(&gw).await;
    half_password.write_all(&p).await.unwrap();
    read_until_auth_request(&mut half_password).await;
    let pw = password(&token);
    half_password.write_all(&pw[..pw.len() / 2]).await.unwrap();
    // SSLRequest accepted, then no TLS handshake.
    let mut no_handshake = raw_connect(&gw).await;
    no_handshake
        .write_all(&request_packet(SSL_REQUEST))
        .await
        .unwrap();
    assert_eq!(read_byte(&mut no_handshake).await, b'S');

    // Meanwhile, others are served.
    let others = async {
        for _ in 0..6 {
            assert_healthy(&good).await;
            assert_accepts_new_clients(&gw, &token).await;
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        since.elapsed()
    };
    let (t_silent, t_half, t_no_pw, t_half_pw, t_tls, t_others) = tokio::join!(
        closed_after(silent, since, "silent"),
        closed_after(half, since, "half startup packet"),
        closed_after(no_password, since, "no password"),
        closed_after(half_password, since, "half password"),
        closed_after(no_handshake, since, "no TLS handshake"),
        others,
    );
    for (what, t) in [
        ("silent", t_silent),
        ("half startup packet", t_half),
        ("no password", t_no_pw),
        ("half password", t_half_pw),
        ("no TLS handshake", t_tls),
    ] {
        assert!(
            t >= Duration::from_millis(2500) && t < Duration::from_secs(7),
            "{what}: closed after {t:?}, expected ~3 s (startup_timeout)"
        );
    }
    assert!(
        t_others < Duration::from_secs(10),
        "others took {t_others:?}"
    );
    assert_healthy(&good).await;
}

fn tls_client_config(gw: &Gateway) -> rustls::ClientConfig {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let ca = gw.data_dir().join("ca.crt");
    let mut roots = rustls::RootCertStore::empty();
    for cert in
        CertificateDer::pem_file_iter(&ca).unwrap_or_else(|e| panic!("{}: {e}", ca.display()))
    {
        roots.add(cert.unwrap()).unwrap();
    }
    rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth()
}

#[tokio::test]
async fn ssl_request_gets_tls_and_gssenc_request_gets_n() {
    let gw = Gateway::start();
    let token = gw.token("robust-negotiation", &["dba"]);
    let good = gw.connect("payments", &token).await;

    // SSLRequest: exactly one byte, 'S'.
    let mut s = raw_connect(&gw).await;
    s.write_all(&request_packet(SSL_REQUEST)).await.unwrap();
    assert_eq!(read_byte(&mut s).await, b'S');
    drop(s);

    // ... and then TLS, verified against the generated CA (sslmode=verify-full).
    let tls = tokio_postgres_rustls::MakeRustlsConnect::new(tls_client_config(&gw));
    let (client, conn) = tokio_postgres::connect(
        &format!(
            "{} sslmode=require",
            gw.conn_str("payments", "tls-agent", &token)
        ),
        tls,
    )
    .await
    .expect("TLS connection through the gateway");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    assert_healthy(&client).await;

    // GSSENCRequest: 'N', then a plain startup on the same socket works.
    let mut s = raw_connect(&gw).await;
    s.write_all(&request_packet(GSSENC_REQUEST)).await.unwrap();
    assert_eq!(read_byte(&mut s).await, b'N');
    s.write_all(&startup_packet(
        PROTOCOL_3_0,
        &[("user", "gss-agent"), ("database", "payments")],
    ))
    .await
    .unwrap();
    read_until_auth_request(&mut s).await;
    finish_login(&mut s, &token).await;
    assert_eq!(
        raw_query(&mut s, "SELECT count(*) FROM customers").await,
        vec![vec![Some("2".to_owned())]]
    );

    // GSSENCRequest 'N', then SSLRequest 'S' (what libpq does with gssencmode=prefer).
    let mut s = raw_connect(&gw).await;
    s.write_all(&request_packet(GSSENC_REQUEST)).await.unwrap();
    assert_eq!(read_byte(&mut s).await, b'N');
    s.write_all(&request_packet(SSL_REQUEST)).await.unwrap();
    assert_eq!(read_byte(&mut s).await, b'S');
    drop(s);

    assert_healthy(&good).await;
    assert_accepts_new_clients(&gw, &token).await;
}

#[tokio::test]
async fn newer_protocol_and_pq_options_are_negotiated_down_to_3_0() {
    let gw = Gateway::start();
    let token = gw.token("robust-protocol", &["dba"]);
    let good = gw.connect("payments", &token).await;

    for (what, version, params, expect_options) in [
        (
            "3.2 with _pq_.foo",
            PROTOCOL_3_2,
            vec![
                ("user", "agent"),
                ("database", "payments"),
                ("_pq_.foo", "bar"),
            ],
            vec!["_pq_.foo"],
        ),
        (
            "3.2 without options",
            PROTOCOL_3_2,
            vec![("user", "agent"), ("database", "payments")],
            vec![],
        ),
        (
            "3.0 with two _pq_ options",
            PROTOCOL_3_0,
            vec![
                ("user", "agent"),
                ("_pq_.foo", "1"),
                ("database", "payments"),
                ("_pq_.bar", "2"),
            ],
            vec!["_pq_.foo", "_pq_.bar"],
        ),
    ] {
        let mut s = raw_connect(&gw).await;
        s.write_all(&startup_packet(version, &params))
            .await
            .unwrap();
        let mut msgs = read_until_auth_request(&mut s).await;
        msgs.extend(finish_login(&mut s, &token).await);
        let v: Vec<&Msg> = msgs.iter().filter(|m| m.tag == b'v').collect();
        assert_eq!(v.len(), 1, "{what}: {}", describe(&msgs));
        let v = v[0];
        assert_eq!(v.i32_at(0), 0, "{what}: newest minor version");
        assert_eq!(
            v.i32_at(4),
            i32::try_from(expect_options.len()).unwrap(),
            "{what}"
        );
        let names: Vec<String> = v.body[8..]
            .split(|&b| b == 0)
            .filter(|n| !n.is_empty())
            .map(|n| String::from_utf8_lossy(n).into_owned())
            .collect();
        assert_eq!(names, expect_options, "{what}");
        let expected_len = 8 + expect_options.iter().map(|o| o.len() + 1).sum::<usize>();
        assert_eq!(
            v.body.len(),
            expected_len,
            "{what}: NegotiateProtocolVersion body"
        );
        // 3.0 semantics: BackendKeyData carries a 4-byte secret.
        let k = msgs.iter().find(|m| m.tag == b'K').expect("BackendKeyData");
        assert_eq!(k.body.len(), 8, "{what}: BackendKeyData of protocol 3.0");
        // The session works.
        assert_eq!(
            raw_query(&mut s, "SELECT name FROM customers ORDER BY id").await,
            vec![vec![Some("Ada".to_owned())], vec![Some("Grace".to_owned())]],
            "{what}"
        );
        s.write_all(&message(b'X', b"")).await.unwrap();
        let rest = read_until_close(&mut s, Duration::from_secs(5)).await;
        assert!(
            rest.is_empty(),
            "{what}: after Terminate: {}",
            describe(&rest)
        );
    }

    // Version 3.0 with no options: no NegotiateProtocolVersion at all.
    let mut s = raw_connect(&gw).await;
    s.write_all(&startup_packet(
        PROTOCOL_3_0,
        &[("user", "agent"), ("database", "payments")],
    ))
    .await
    .unwrap();
    let mut msgs = read_until_auth_request(&mut s).await;
    msgs.extend(finish_login(&mut s, &token).await);
    assert!(msgs.iter().all(|m| m.tag != b'v'), "{}", describe(&msgs));

    assert_healthy(&good).await;
}

/// A FunctionCall message: `fn_oid(args...)`, binary arguments, text result.
fn function_call(fn_oid: u32, args: &[&[u8]]) -> Vec<u8> {
    let mut b = fn_oid.to_be_bytes().to_vec();
    b.extend_from_slice(&1i16.to_be_bytes());
    b.extend_from_slice(&1i16.to_be_bytes());
    b.extend_from_slice(&i16::try_from(args.len()).unwrap().to_be_bytes());
    for a in args {
        b.extend_from_slice(&i32::try_from(a.len()).unwrap().to_be_bytes());
        b.extend_from_slice(a);
    }
    b.extend_from_slice(&0i16.to_be_bytes());
    message(b'F', &b)
}

#[tokio::test]
async fn function_call_is_refused_and_recorded_as_blocked() {
    let gw = Gateway::start();
    let token = gw.token("robust-fncall", &["dba"]);
    let good = gw.connect("payments", &token).await;

    // nextval() on a fresh sequence: if the call reached the server, the sequence would move.
    let pg = cluster();
    pg.psql_as_svc(
        "payments",
        "CREATE SEQUENCE IF NOT EXISTS robustness_fncall_seq",
    );
    let direct = pg.direct("payments").await;
    let seq_oid: u32 = direct
        .query_one("SELECT 'robustness_fncall_seq'::regclass::oid", &[])
        .await
        .unwrap()
        .get(0);
    let nextval_oid: u32 = direct
        .query_one("SELECT 'nextval(regclass)'::regprocedure::oid", &[])
        .await
        .unwrap()
        .get(0);

    let mut s = raw_login(&gw, &token).await;
    s.write_all(&function_call(nextval_oid, &[&seq_oid.to_be_bytes()]))
        .await
        .unwrap();
    let msgs = read_until_ready(&mut s).await;
    let errors: Vec<&Msg> = msgs.iter().filter(|m| m.tag == b'E').collect();
    assert_eq!(errors.len(), 1, "{}", describe(&msgs));
    let f = errors[0].fields();
    assert_eq!(f.get(&'C').map(String::as_str), Some("42501"), "{f:?}");
    assert_eq!(f.get(&'S').map(String::as_str), Some("ERROR"), "{f:?}");
    let text = f.get(&'M').cloned().unwrap_or_default();
    assert!(text.contains("function-call"), "message: {text}");
    assert!(
        msgs.iter().all(|m| m.tag != b'V'),
        "FunctionCallResponse reached the client: {}",
        describe(&msgs)
    );
    assert_eq!(msgs.last().map(|m| m.body.clone()), Some(b"I".to_vec()));

    // The session keeps working.
    assert_eq!(
        raw_query(&mut s, "SELECT 'after'").await,
        vec![vec![Some("after".to_owned())]]
    );
    // The call never ran.
    let called: bool = direct
        .query_one("SELECT is_called FROM robustness_fncall_seq", &[])
        .await
        .unwrap()
        .get(0);
    assert!(!called, "nextval() was executed through a FunctionCall");

    let rec = gw.wait_for_record(|r| {
        r["kind"] == "statement" && r["subject"] == "robust-fncall" && r["outcome"] == "blocked"
    });
    assert!(
        rec["rule"].as_str().unwrap_or("").contains("function-call"),
        "{rec}"
    );
    assert_healthy(&good).await;
    assert_accepts_new_clients(&gw, &token).await;
}

#[tokio::test]
async fn abrupt_disconnect_mid_query_ends_the_session_cleanly() {
    let gw = Gateway::start();
    let token = gw.token("robust-abrupt", &["dba"]);
    let good = gw.connect("payments", &token).await;
    let direct = cluster().direct("payments").await;

    for (i, reset) in [false, true].into_iter().enumerate() {
        let subject = format!("robust-abrupt-{i}");
        let t = gw.token(&subject, &["dba"]);
        let sql = format!("SELECT pg_sleep(2.{i}1)");
        let mut s = raw_login(&gw, &t).await;
        s.write_all(&query(&sql)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(400)).await;
        if reset {
            // RST instead of FIN.
            s.set_zero_linger().unwrap();
        }
        drop(s);

        // Served meanwhile.
        assert_healthy(&good).await;

        let end = gw.wait_for_record(|r| r["kind"] == "session_end" && r["subject"] == *subject);
        let statement = gw.wait_for_record(|r| {
            r["kind"] == "statement"
                && r["subject"] == *subject
                && r["statement"].as_str().unwrap_or("").contains("pg_sleep")
        });
        assert_eq!(end["session_id"], statement["session_id"]);

        // The upstream backend does not linger once the sleep is over.
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let n: i64 = direct
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE query = $1",
                    &[&sql],
                )
                .await
                .unwrap()
                .get(0);
            if n == 0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the upstream session of a disconnected client is still there"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    assert_healthy(&good).await;
    assert_accepts_new_clients(&gw, &token).await;
}
