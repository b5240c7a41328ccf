//! Hostile and broken clients: garbage, lying lengths, half-open sockets, unusual
//! negotiation, refused sub-protocols and abrupt disconnects. Each is spoken by hand over raw
//! TCP; in every test a well-behaved tokio-postgres client on the same gateway keeps working
//! during and after the abuse, which also proves the gateway process did not die.

// Test code: panicking on the unexpected is the point.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const PROTOCOL_3_2: i32 = 196_610;
const SSL_REQUEST: i32 = 80_877_103;
const GSSENC_REQUEST: i32 = 80_877_104;

/// A rejection must come well before the 3 s startup timeout of the test config: otherwise
/// the gateway merely gave up waiting rather than refusing.
const PROMPT: Duration = Duration::from_millis(2000);

async fn raw_connect(gw: &Gateway) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", gw.pg_port))
        .await
        .expect("connect to the gateway");
    s.set_nodelay(true).unwrap();
    s
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

    // Plaintext stuffed after the SSLRequest (CVE-2021-23214 style): it must not be read as
    // a startup packet; only TLS may follow the 'S'.
    let mut s = raw_connect(&gw).await;
    let stuffed = [
        request_packet(SSL_REQUEST),
        startup_packet(
            PROTOCOL_3_0,
            &[("user", "injected"), ("database", "payments")],
        ),
        password(&token),
        query("SELECT 'injected'"),
    ]
    .concat();
    s.write_all(&stuffed).await.unwrap();
    assert_eq!(read_byte(&mut s).await, b'S');
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut rest))
        .await
        .expect("connection closed after a failed TLS handshake");
    assert!(
        rest.first().is_none_or(|&b| b == 0x15),
        "plaintext answer after SSLRequest: {:?}",
        String::from_utf8_lossy(&rest)
    );
    assert!(!rest.windows(8).any(|w| w == b"injected"));

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

/// Logs in as `subject`, starts `sql`, and vanishes once the server runs it (FIN, or RST if
/// `reset`).
/// Returns the session's `session_end` and `statement` records once the gateway has ended
/// the session.
async fn vanish_mid_query(
    gw: &Gateway,
    subject: &str,
    sql: &str,
    reset: bool,
) -> (serde_json::Value, serde_json::Value) {
    let t = gw.token(subject, &["dba"]);
    let mut s = raw_login(gw, &t).await;
    s.write_all(&query(sql)).await.unwrap();
    cluster().wait_until_running(sql).await;
    if reset {
        s.set_zero_linger().unwrap();
    }
    drop(s);
    let end = gw.wait_for_record(|r| r["kind"] == "session_end" && r["subject"] == subject);
    let statement = gw.wait_for_record(|r| {
        r["kind"] == "statement"
            && r["subject"] == subject
            && r["statement"].as_str().unwrap_or("") == sql
    });
    assert_eq!(end["session_id"], statement["session_id"]);
    (end, statement)
}

#[tokio::test]
async fn abrupt_disconnect_mid_query_ends_the_session_cleanly() {
    let gw = Gateway::start();
    let token = gw.token("robust-abrupt", &["dba"]);
    let good = gw.connect("payments", &token).await;
    let direct = cluster().direct("payments").await;

    for (i, reset) in [false, true].into_iter().enumerate() {
        let sql = format!("SELECT pg_sleep(1.{i}2)");
        let (end, _) = vanish_mid_query(&gw, &format!("robust-abrupt-{i}"), &sql, reset).await;
        assert!(end["detail"]["reason"].is_string(), "{end}");

        // Served meanwhile and after.
        assert_healthy(&good).await;

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

#[tokio::test]
async fn abrupt_disconnect_mid_query_still_records_the_outcome() {
    let gw = Gateway::start();
    let token = gw.token("robust-abrupt-outcome", &["dba"]);
    let good = gw.connect("payments", &token).await;

    // The query finishes upstream ~0.7 s after the client vanished, within the gateway's
    // drain grace: its result is written towards the dead client.
    for (i, reset) in [false, true].into_iter().enumerate() {
        let how = if reset { "RST" } else { "FIN" };
        let sql = format!("SELECT pg_sleep(1.{i}1)");
        let (end, statement) =
            vanish_mid_query(&gw, &format!("robust-abrupt-outcome-{i}"), &sql, reset).await;
        // Outcomes are recorded before the session end: it is there by now or never.
        let outcome = gw
            .export()
            .into_iter()
            .find(|r| r["kind"] == "outcome" && r["statement_seq"] == statement["seq"]);
        assert!(
            outcome.is_some(),
            "no outcome record for the in-flight statement {sql:?} (seq {}) of a client that \
             disconnected with {how}; session_end reason: {}",
            statement["seq"],
            end["detail"]["reason"]
        );
        assert_healthy(&good).await;
    }
}

#[tokio::test]
async fn malformed_known_messages_are_protocol_errors() {
    let gw = Gateway::start();
    let token = gw.token("robust-malformed", &["dba"]);
    let good = gw.connect("payments", &token).await;

    let parse_two_types_one_given = [
        &b"\0SELECT $1\0"[..],
        &2i16.to_be_bytes(),
        &23u32.to_be_bytes(),
    ]
    .concat();
    let bind_lying_length = [
        &b"\0\0"[..],
        &0i16.to_be_bytes(),
        &1i16.to_be_bytes(),
        &1_000_000i32.to_be_bytes(),
        b"short",
    ]
    .concat();
    let bind_negative_count = [&b"\0\0"[..], &0i16.to_be_bytes(), &(-1i16).to_be_bytes()].concat();
    for (what, bytes) in [
        ("Query without its NUL", message(b'Q', b"SELECT 1")),
        (
            "Parse declaring more types than sent",
            message(b'P', &parse_two_types_one_given),
        ),
        (
            "Bind with a lying value length",
            message(b'B', &bind_lying_length),
        ),
        (
            "Bind with a negative count",
            message(b'B', &bind_negative_count),
        ),
        ("Execute without max_rows", message(b'E', b"\0")),
        ("Close of an unknown kind", message(b'C', b"Zname\0")),
    ] {
        let mut s = raw_login(&gw, &token).await;
        s.write_all(&bytes).await.unwrap();
        let msgs = expect_fatal_and_close(&mut s, "08P01", what).await;
        assert_eq!(msgs.len(), 1, "{what}: expected a FATAL ErrorResponse");
        assert_healthy(&good).await;
    }

    // A second statement smuggled after the Query's NUL never runs: what the gateway audits
    // and what the server executes cannot differ.
    let mut s = raw_login(&gw, &token).await;
    s.write_all(&message(b'Q', b"SELECT 1\0DROP TABLE customers CASCADE\0"))
        .await
        .unwrap();
    let mut msgs = Vec::new();
    while let Some(m) = read_msg(&mut s, Duration::from_secs(10)).await {
        let done = m.tag == b'Z';
        msgs.push(m);
        if done {
            break;
        }
    }
    let err = msgs
        .iter()
        .find(|m| m.tag == b'E')
        .unwrap_or_else(|| panic!("smuggled statement accepted: {}", describe(&msgs)));
    assert_eq!(err.fields().get(&'C').map(String::as_str), Some("08P01"));
    assert!(
        msgs.iter().all(|m| m.tag != b'C'),
        "a command completed: {}",
        describe(&msgs)
    );
    drop(s);
    assert_healthy(&good).await;
    assert_accepts_new_clients(&gw, &token).await;
}

#[tokio::test]
async fn pipelined_login_dribbled_messages_and_idle_sessions_work() {
    let gw = Gateway::start();
    let token = gw.token("robust-pipelined", &["dba"]);
    let good = gw.connect("payments", &token).await;

    // Startup, password and a query in one write, before any answer.
    let mut s = raw_connect(&gw).await;
    let all = [
        startup_packet(PROTOCOL_3_0, &[("user", "eager"), ("database", "payments")]),
        password(&token),
        query("SELECT 'pipelined'"),
    ]
    .concat();
    s.write_all(&all).await.unwrap();
    read_until_auth_request(&mut s).await;
    let login = read_until_ready(&mut s).await;
    assert!(login.iter().all(|m| m.tag != b'E'), "{}", describe(&login));
    let answer = read_until_ready(&mut s).await;
    let rows: Vec<_> = answer
        .iter()
        .filter(|m| m.tag == b'D')
        .map(Msg::row)
        .collect();
    assert_eq!(rows, vec![vec![Some("pipelined".to_owned())]]);

    // A query arriving one byte at a time.
    let q = query("SELECT 'dribbled', 1 + 1");
    for b in &q {
        s.write_all(std::slice::from_ref(b)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let answer = read_until_ready(&mut s).await;
    let rows: Vec<_> = answer
        .iter()
        .filter(|m| m.tag == b'D')
        .map(Msg::row)
        .collect();
    assert_eq!(
        rows,
        vec![vec![Some("dribbled".to_owned()), Some("2".to_owned())]]
    );

    // Idle for longer than the startup timeout: a logged-in session is not cut off.
    tokio::time::sleep(Duration::from_millis(4000)).await;
    assert_eq!(
        raw_query(&mut s, "SELECT 'still here'").await,
        vec![vec![Some("still here".to_owned())]]
    );
    assert_healthy(&good).await;
}

#[tokio::test]
async fn large_legal_messages_pass_both_ways() {
    let gw = Gateway::start();
    let token = gw.token("robust-large", &["dba"]);
    let good = gw.connect("payments", &token).await;
    let c = gw.connect("payments", &token).await;

    // An 8 MiB simple Query.
    let big = "x".repeat(8 * 1024 * 1024);
    let msgs = c
        .simple_query(&format!("SELECT length('{big}')"))
        .await
        .unwrap();
    let got: Vec<String> = msgs
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some(r.get(0).unwrap().to_owned()),
            _ => None,
        })
        .collect();
    assert_eq!(got, vec![(8 * 1024 * 1024).to_string()]);

    // An 8 MiB bind parameter, and a 24 MiB value coming back.
    let row = c
        .query_one(
            "SELECT length($1::text), repeat('y', 24 * 1024 * 1024)",
            &[&big],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 8 * 1024 * 1024);
    let back: &str = row.get(1);
    assert_eq!(back.len(), 24 * 1024 * 1024);
    assert!(back.bytes().all(|b| b == b'y'));
    assert_healthy(&good).await;
}

/// A CancelRequest packet for `pid` / `secret`.
fn cancel_request(pid: i32, secret: &[u8]) -> Vec<u8> {
    framed_startup(
        [
            &80_877_102i32.to_be_bytes()[..],
            &pid.to_be_bytes()[..],
            secret,
        ]
        .concat(),
    )
}

#[tokio::test]
async fn cancel_requests_need_the_right_key() {
    let gw = Gateway::start();
    let token = gw.token("robust-cancel", &["dba"]);
    let good = gw.connect("payments", &token).await;

    let mut s = raw_connect(&gw).await;
    s.write_all(&startup_packet(
        PROTOCOL_3_0,
        &[("user", "victim"), ("database", "payments")],
    ))
    .await
    .unwrap();
    read_until_auth_request(&mut s).await;
    let login = finish_login(&mut s, &token).await;
    let k = login
        .iter()
        .find(|m| m.tag == b'K')
        .expect("BackendKeyData");
    let pid = k.i32_at(0);
    let secret = k.body[4..].to_vec();

    // Wrong keys: the right pid with a wrong secret, random pids; none cancels anything.
    let started = Instant::now();
    s.write_all(&query("SELECT pg_sleep(2), 'finished'"))
        .await
        .unwrap();
    cluster()
        .wait_until_running("pg_sleep(2), 'finished'")
        .await;
    let mut wrong: Vec<(i32, Vec<u8>)> = vec![
        (pid, secret.iter().map(|b| b ^ 0x5a).collect()),
        (pid, vec![0; 4]),
        (pid, [secret.clone(), vec![0]].concat()),
    ];
    for seed in 0..10u64 {
        let n = noise(seed + 1000, 8);
        wrong.push((
            i32::from_be_bytes(n[..4].try_into().unwrap()),
            n[4..].to_vec(),
        ));
    }
    for (p, sec) in &wrong {
        let mut c = raw_connect(&gw).await;
        c.write_all(&cancel_request(*p, sec)).await.unwrap();
        let answer = read_until_close(&mut c, Duration::from_secs(5)).await;
        assert!(answer.is_empty(), "cancel answered: {}", describe(&answer));
    }
    let msgs = read_until_ready(&mut s).await;
    assert!(
        msgs.iter().all(|m| m.tag != b'E'),
        "a wrong cancel key cancelled the query: {}",
        describe(&msgs)
    );
    assert!(started.elapsed() >= Duration::from_secs(2));

    // The right key cancels.
    let started = Instant::now();
    s.write_all(&query("SELECT pg_sleep(20) AS robust_right_key"))
        .await
        .unwrap();
    cluster().wait_until_running("robust_right_key").await;
    let mut c = raw_connect(&gw).await;
    c.write_all(&cancel_request(pid, &secret)).await.unwrap();
    let msgs = read_until_ready(&mut s).await;
    let e = msgs
        .iter()
        .find(|m| m.tag == b'E')
        .unwrap_or_else(|| panic!("not cancelled: {}", describe(&msgs)));
    assert_eq!(e.fields().get(&'C').map(String::as_str), Some("57014"));
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_healthy(&good).await;
}

#[tokio::test]
async fn flood_of_bad_connections_does_not_starve_good_clients() {
    let gw = Gateway::start();
    let token = gw.token("robust-flood", &["dba"]);
    let good = gw.connect("payments", &token).await;

    let since = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..120u64 {
        let port = gw.pg_port;
        tasks.push(tokio::spawn(async move {
            let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
            match i % 4 {
                0 => {} // silent
                1 => s.write_all(&noise(i, 64)).await.unwrap(),
                2 => s.write_all(&[0, 0, 0x27, 0x10, 0, 3, 0, 0]).await.unwrap(), // 10000 declared
                _ => s
                    .write_all(&startup_packet(PROTOCOL_3_0, &[("user", "flood")]))
                    .await
                    .unwrap(),
            }
            let mut sink = Vec::new();
            let r = tokio::time::timeout(Duration::from_secs(15), s.read_to_end(&mut sink)).await;
            assert!(r.is_ok(), "connection {i} was never closed");
        }));
    }
    // Served throughout.
    for _ in 0..5 {
        assert_healthy(&good).await;
        assert_accepts_new_clients(&gw, &token).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(since.elapsed() < Duration::from_secs(10));
    for t in tasks {
        t.await.unwrap();
    }
    assert_healthy(&good).await;
    assert_accepts_new_clients(&gw, &token).await;
}

fn parse_msg(name: &str, sql: &str) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(name.as_bytes());
    b.push(0);
    b.extend_from_slice(sql.as_bytes());
    b.push(0);
    b.extend_from_slice(&0i16.to_be_bytes());
    message(b'P', &b)
}

fn bind_msg(portal: &str, stmt: &str) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(portal.as_bytes());
    b.push(0);
    b.extend_from_slice(stmt.as_bytes());
    b.push(0);
    b.extend_from_slice(&0i16.to_be_bytes());
    b.extend_from_slice(&0i16.to_be_bytes());
    b.extend_from_slice(&0i16.to_be_bytes());
    message(b'B', &b)
}

fn execute_msg(portal: &str) -> Vec<u8> {
    let mut b = portal.as_bytes().to_vec();
    b.push(0);
    b.extend_from_slice(&0i32.to_be_bytes());
    message(b'E', &b)
}

fn sync_msg() -> Vec<u8> {
    message(b'S', b"")
}

#[tokio::test]
async fn function_calls_pipelined_between_queries_keep_the_session_in_step() {
    let gw = Gateway::start();
    let token = gw.token("robust-fn-pipeline", &["dba"]);
    let good = gw.connect("payments", &token).await;

    let mut s = raw_login(&gw, &token).await;
    let fc = function_call(2026, &[]); // pg_backend_pid()
    s.write_all(&[query("SELECT 'one'"), fc.clone(), query("SELECT 'two'")].concat())
        .await
        .unwrap();
    let first = read_until_ready(&mut s).await;
    assert_eq!(
        first
            .iter()
            .filter(|m| m.tag == b'D')
            .map(Msg::row)
            .collect::<Vec<_>>(),
        vec![vec![Some("one".to_owned())]],
        "{}",
        describe(&first)
    );
    let refused = read_until_ready(&mut s).await;
    assert_eq!(
        refused.iter().map(|m| m.tag).collect::<Vec<_>>(),
        vec![b'E', b'Z'],
        "{}",
        describe(&refused)
    );
    assert_eq!(
        refused[0].fields().get(&'C').map(String::as_str),
        Some("42501")
    );
    let second = read_until_ready(&mut s).await;
    assert_eq!(
        second
            .iter()
            .filter(|m| m.tag == b'D')
            .map(Msg::row)
            .collect::<Vec<_>>(),
        vec![vec![Some("two".to_owned())]],
        "{}",
        describe(&second)
    );

    // Inside a transaction, the refusal aborts it, as any error would.
    assert!(raw_query(&mut s, "BEGIN").await.is_empty());
    s.write_all(&fc).await.unwrap();
    let refused = read_until_ready(&mut s).await;
    assert_eq!(
        refused[0].fields().get(&'C').map(String::as_str),
        Some("42501")
    );
    assert_eq!(
        refused.last().unwrap().body,
        b"E".to_vec(),
        "transaction status"
    );
    s.write_all(&query("SELECT 1")).await.unwrap();
    let aborted = read_until_ready(&mut s).await;
    assert_eq!(
        aborted[0].fields().get(&'C').map(String::as_str),
        Some("25P02")
    );
    raw_query(&mut s, "ROLLBACK").await;
    assert_eq!(
        raw_query(&mut s, "SELECT 'three'").await,
        vec![vec![Some("three".to_owned())]]
    );
    assert_healthy(&good).await;
}

/// Sends `batch`, which must fail at its first message, and checks the client sees exactly
/// one ErrorResponse with `sqlstate` and one ReadyForQuery.
async fn failing_batch(s: &mut TcpStream, batch: &[Vec<u8>], sqlstate: &str) {
    s.write_all(&batch.concat()).await.unwrap();
    let answer = read_until_ready(s).await;
    assert_eq!(
        answer.iter().map(|m| m.tag).collect::<Vec<_>>(),
        vec![b'E', b'Z'],
        "{}",
        describe(&answer)
    );
    assert_eq!(
        answer[0].fields().get(&'C').map(String::as_str),
        Some(sqlstate)
    );
}

#[tokio::test]
async fn function_call_discarded_until_sync_does_not_replace_a_later_error() {
    let gw = Gateway::start();
    let token = gw.token("robust-skip-fn", &["dba"]);
    let good = gw.connect("payments", &token).await;

    let mut s = raw_login(&gw, &token).await;
    // After the Parse error (the gateway refuses the unparseable SQL, 42501, by replacing it
    // with a Parse the server rejects) the server skips everything up to Sync, the Query and the
    // FunctionCall's replacement included: no error comes back for the refused call.
    failing_batch(
        &mut s,
        &[
            parse_msg("", "SELEC broken"),
            bind_msg("", ""),
            execute_msg(""),
            query("SELECT 'discarded'"),
            function_call(2026, &[]),
            sync_msg(),
        ],
        "42501",
    )
    .await;
    // The next statement's own error must reach the client unchanged.
    s.write_all(&query("SELECT 1/0")).await.unwrap();
    let failed = read_until_ready(&mut s).await;
    let f = failed[0].fields();
    assert_eq!(
        f.get(&'C').map(String::as_str),
        Some("22012"),
        "SELECT 1/0 answered with {f:?}"
    );
    assert_eq!(
        raw_query(&mut s, "SELECT 'after'").await,
        vec![vec![Some("after".to_owned())]]
    );
    assert_healthy(&good).await;
}

#[tokio::test]
async fn query_discarded_until_sync_keeps_audit_outcomes_aligned() {
    let gw = Gateway::start();
    let token = gw.token("robust-skip", &["dba"]);
    let good = gw.connect("payments", &token).await;

    let mut s = raw_login(&gw, &token).await;
    // After the Parse error the server skips everything up to Sync, including the simple
    // Query inside the batch: it never runs.
    failing_batch(
        &mut s,
        &[
            parse_msg("", "SELEC broken"),
            bind_msg("", ""),
            execute_msg(""),
            query("SELECT 'discarded'"),
            sync_msg(),
        ],
        "42501",
    )
    .await;
    // What happens next must be recorded against the right statements.
    s.write_all(&query("SELECT 1/0")).await.unwrap();
    let failed = read_until_ready(&mut s).await;
    assert_eq!(
        failed[0].fields().get(&'C').map(String::as_str),
        Some("22012")
    );
    assert_eq!(
        raw_query(&mut s, "SELECT 'after'").await,
        vec![vec![Some("after".to_owned())]]
    );
    s.write_all(&message(b'X', b"")).await.unwrap();
    read_until_close(&mut s, Duration::from_secs(10)).await;
    gw.wait_for_record(|r| r["kind"] == "session_end" && r["subject"] == "robust-skip");
    assert_healthy(&good).await;

    let records = gw.export();
    let outcome_of = |needle: &str| -> serde_json::Value {
        let st = records
            .iter()
            .find(|r| {
                r["kind"] == "statement"
                    && r["subject"] == "robust-skip"
                    && r["statement"].as_str().unwrap_or("").contains(needle)
            })
            .unwrap_or_else(|| panic!("no statement record for {needle:?}"));
        records
            .iter()
            .find(|r| r["kind"] == "outcome" && r["statement_seq"] == st["seq"])
            .cloned()
            .unwrap_or_else(|| panic!("no outcome record for {needle:?} (seq {})", st["seq"]))
    };
    let show = |r: &serde_json::Value| {
        format!(
            "outcome={} sqlstate={} rows={} detail={}",
            r["outcome"], r["sqlstate"], r["rows"], r["detail"]
        )
    };
    let div = outcome_of("1/0");
    let after = outcome_of("'after'");
    let discarded = outcome_of("'discarded'");
    let summary = format!(
        "recorded: SELECT 1/0 -> {}; SELECT 'after' -> {}; SELECT 'discarded' -> {}",
        show(&div),
        show(&after),
        show(&discarded)
    );
    assert_eq!(
        (div["outcome"].as_str(), div["sqlstate"].as_str()),
        (Some("error"), Some("22012")),
        "{summary}"
    );
    assert_eq!(
        (after["outcome"].as_str(), after["rows"].as_u64()),
        (Some("ok"), Some(1)),
        "{summary}"
    );
    assert_ne!(discarded["outcome"].as_str(), Some("ok"), "{summary}");
}

#[tokio::test]
async fn bad_authentication_messages_are_refused() {
    let gw = Gateway::start();
    let token = gw.token("robust-auth", &["dba"]);
    let good = gw.connect("payments", &token).await;

    let startup = startup_packet(
        PROTOCOL_3_0,
        &[("user", "auth-agent"), ("database", "payments")],
    );
    for (what, bytes, sqlstate) in [
        (
            "password declaring 1 MiB",
            vec![b'p', 0, 0x10, 0, 0],
            "08P01",
        ),
        (
            "password with a negative length",
            vec![b'p', 0xff, 0, 0, 0],
            "08P01",
        ),
        ("Query instead of a password", query("SELECT 1"), "08P01"),
        ("password without its NUL", message(b'p', b"abc"), "08P01"),
        (
            "unknown type instead of a password",
            message(b'#', b""),
            "08P01",
        ),
        ("garbage token", password("not-a-token"), "28P01"),
        ("empty token", password(""), "28P01"),
        ("non-UTF-8 token", message(b'p', b"\xff\xfe\xfd\0"), "28P01"),
        (
            "token with a flipped signature byte",
            password(&{
                let mut t = token.clone().into_bytes();
                let last = t.len() - 2;
                t[last] = if t[last] == b'A' { b'B' } else { b'A' };
                String::from_utf8(t).unwrap()
            }),
            "28P01",
        ),
    ] {
        let mut s = raw_connect(&gw).await;
        s.write_all(&startup).await.unwrap();
        read_until_auth_request(&mut s).await;
        s.write_all(&bytes).await.unwrap();
        let msgs = expect_fatal_and_close(&mut s, sqlstate, what).await;
        assert_eq!(msgs.len(), 1, "{what}: expected a FATAL ErrorResponse");
        assert_healthy(&good).await;
    }
    gw.wait_for_record(|r| r["kind"] == "login_failed" && r["outcome"] == "denied");
    assert_accepts_new_clients(&gw, &token).await;
}

/// A blocking TLS session to the gateway after SSLRequest / 'S' (std I/O, rustls).
fn tls_session(
    port: u16,
    cfg: Arc<rustls::ClientConfig>,
) -> rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream> {
    use std::io::{Read, Write};
    let mut tcp = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    tcp.write_all(&request_packet(SSL_REQUEST)).unwrap();
    let mut b = [0u8; 1];
    tcp.read_exact(&mut b).unwrap();
    assert_eq!(b[0], b'S');
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let conn = rustls::ClientConnection::new(cfg, name).unwrap();
    rustls::StreamOwned::new(conn, tcp)
}

/// Writes `bytes` over a fresh TLS session and reads everything until the gateway closes.
async fn tls_exchange(gw: &Gateway, bytes: Vec<u8>) -> Vec<Msg> {
    let port = gw.pg_port;
    let cfg = Arc::new(tls_client_config(gw));
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut tls = tls_session(port, cfg);
        tls.write_all(&bytes).unwrap();
        tls.flush().unwrap();
        read_all_blocking(&mut tls)
    })
    .await
    .unwrap()
}

/// Reads messages from a blocking stream until EOF (or an error).
fn read_all_blocking(r: &mut impl std::io::Read) -> Vec<Msg> {
    let mut buf = Vec::new();
    let _ = r.read_to_end(&mut buf);
    let mut out = Vec::new();
    let mut rest = &buf[..];
    while rest.len() >= 5 {
        let len = i32::from_be_bytes(rest[1..5].try_into().unwrap()) as usize;
        if rest.len() < len + 1 {
            break;
        }
        out.push(Msg {
            tag: rest[0],
            body: rest[5..len + 1].to_vec(),
        });
        rest = &rest[len + 1..];
    }
    out
}

#[tokio::test]
async fn negotiation_inside_tls_and_garbage_inside_tls_are_refused() {
    let gw = Gateway::start();
    let token = gw.token("robust-tls-inner", &["dba"]);
    let good = gw.connect("payments", &token).await;

    // Encryption negotiated twice: refused with an error.
    for (what, bytes) in [
        ("SSLRequest inside TLS", request_packet(SSL_REQUEST)),
        ("GSSENCRequest inside TLS", request_packet(GSSENC_REQUEST)),
    ] {
        let msgs = tls_exchange(&gw, bytes).await;
        assert_eq!(msgs.len(), 1, "{what}: {}", describe(&msgs));
        assert_eq!(msgs[0].tag, b'E', "{what}");
        let f = msgs[0].fields();
        assert_eq!(
            f.get(&'C').map(String::as_str),
            Some("08P01"),
            "{what}: {f:?}"
        );
        assert_eq!(
            f.get(&'S').map(String::as_str),
            Some("FATAL"),
            "{what}: {f:?}"
        );
        assert_healthy(&good).await;
    }
    // Garbage inside TLS: the connection ends, with at most a protocol error.
    for (what, bytes) in [
        (
            "huge startup length inside TLS",
            vec![0x40, 0, 0, 0, 0, 3, 0, 0],
        ),
        ("noise inside TLS", framed_startup(noise(7, 50))),
    ] {
        let msgs = tls_exchange(&gw, bytes).await;
        assert!(msgs.len() <= 1, "{what}: {}", describe(&msgs));
        for m in &msgs {
            assert_eq!(m.tag, b'E', "{what}");
            assert_eq!(
                m.fields().get(&'C').map(String::as_str),
                Some("08P01"),
                "{what}"
            );
        }
        assert_healthy(&good).await;
    }

    // A full session over this hand-made TLS connection works.
    let session = [
        startup_packet(
            PROTOCOL_3_0,
            &[("user", "tls-raw"), ("database", "payments")],
        ),
        password(&token),
        query("SELECT 'over tls'"),
        message(b'X', b""),
    ]
    .concat();
    let rows = tls_exchange(&gw, session).await;
    let data: Vec<_> = rows
        .iter()
        .filter(|m| m.tag == b'D')
        .map(Msg::row)
        .collect();
    assert_eq!(
        data,
        vec![vec![Some("over tls".to_owned())]],
        "{}",
        describe(&rows)
    );
    assert_healthy(&good).await;
}

#[tokio::test]
async fn abrupt_disconnect_mid_copy_in_commits_nothing() {
    let pg = cluster();
    pg.create_database("robust_copy");
    let gw = Gateway::builder()
        .connection("robust_copy", "robust_copy")
        .start();
    let token = gw.token("robust-copy", &["dba"]);
    let good = gw.connect("payments", &token).await;
    pg.psql_as_svc("robust_copy", "CREATE TABLE sink (id int, label text)");

    let mut s = raw_connect(&gw).await;
    s.write_all(&startup_packet(
        PROTOCOL_3_0,
        &[("user", "copier"), ("database", "robust_copy")],
    ))
    .await
    .unwrap();
    read_until_auth_request(&mut s).await;
    finish_login(&mut s, &token).await;
    s.write_all(&query("COPY sink FROM STDIN")).await.unwrap();
    let g = read_msg(&mut s, Duration::from_secs(10)).await.unwrap();
    assert_eq!(
        g.tag,
        b'G',
        "CopyInResponse expected, got {}",
        describe(std::slice::from_ref(&g))
    );
    for i in 0..200 {
        s.write_all(&message(b'd', format!("{i}\trow {i}\n").as_bytes()))
            .await
            .unwrap();
    }
    // Half a CopyData message, then gone.
    s.write_all(&[b'd', 0, 0, 0, 100, b'1']).await.unwrap();
    s.set_zero_linger().unwrap();
    drop(s);

    gw.wait_for_record(|r| r["kind"] == "session_end" && r["subject"] == "robust-copy");
    let direct = pg.direct("robust_copy").await;
    let n: i64 = direct
        .query_one("SELECT count(*) FROM sink", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0, "rows of an abandoned COPY were committed");
    assert_healthy(&good).await;
    assert_accepts_new_clients(&gw, &token).await;
}

#[tokio::test]
async fn a_client_that_does_not_read_gets_backpressure_not_a_deadlock() {
    let gw = Gateway::start();
    let token = gw.token("robust-backpressure", &["dba"]);
    let good = gw.connect("payments", &token).await;

    let s = raw_login(&gw, &token).await;
    let (mut r, mut w) = s.into_split();
    const N: usize = 3000;
    let writer = tokio::spawn(async move {
        let q = query("SELECT repeat('x', 4000)");
        let all: Vec<u8> = q.iter().copied().cycle().take(q.len() * N).collect();
        w.write_all(&all).await.unwrap();
        w
    });
    // Not reading for a while: ~12 MB of results pile up behind the gateway.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_healthy(&good).await;
    assert_accepts_new_clients(&gw, &token).await;

    let mut ready = 0;
    let mut rows = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 256 * 1024];
    while ready < N {
        assert!(Instant::now() < deadline, "only {ready} of {N} answers");
        let n = tokio::time::timeout(Duration::from_secs(20), r.read(&mut chunk))
            .await
            .expect("answers keep coming")
            .unwrap();
        assert!(n > 0, "closed after {ready} answers");
        buf.extend_from_slice(&chunk[..n]);
        let mut at = 0;
        while buf.len() >= at + 5 {
            let len = i32::from_be_bytes(buf[at + 1..at + 5].try_into().unwrap()) as usize;
            if buf.len() < at + 1 + len {
                break;
            }
            match buf[at] {
                b'Z' => ready += 1,
                b'D' => rows += 1,
                b'E' => panic!(
                    "error: {:?}",
                    Msg {
                        tag: b'E',
                        body: buf[at + 5..at + 1 + len].to_vec()
                    }
                    .fields()
                ),
                _ => {}
            }
            at += 1 + len;
        }
        buf.drain(..at);
    }
    assert_eq!(rows, N);
    let _w = writer.await.unwrap();
    assert_healthy(&good).await;
}

#[tokio::test]
async fn upstream_backend_killed_mid_query_is_reported_and_recorded() {
    let gw = Gateway::start();
    let token = gw.token("robust-killed", &["dba"]);
    let good = gw.connect("payments", &token).await;
    let direct = cluster().direct("payments").await;

    let mut s = raw_login(&gw, &token).await;
    let pid: i32 = raw_query(&mut s, "SELECT pg_backend_pid()").await[0][0]
        .as_deref()
        .unwrap()
        .parse()
        .unwrap();
    s.write_all(&query("SELECT pg_sleep(30) AS robust_killed"))
        .await
        .unwrap();
    cluster().wait_until_running("robust_killed").await;
    let killed: bool = direct
        .query_one("SELECT pg_terminate_backend($1)", &[&pid])
        .await
        .unwrap()
        .get(0);
    assert!(killed);

    // The server's FATAL reaches the client, then the connection closes.
    let msgs = read_until_close(&mut s, Duration::from_secs(10)).await;
    let e = msgs
        .iter()
        .find(|m| m.tag == b'E')
        .unwrap_or_else(|| panic!("no error for the killed backend: {}", describe(&msgs)));
    let f = e.fields();
    assert_eq!(f.get(&'C').map(String::as_str), Some("57P01"), "{f:?}");
    assert_eq!(f.get(&'S').map(String::as_str), Some("FATAL"), "{f:?}");

    let end = gw.wait_for_record(|r| r["kind"] == "session_end" && r["subject"] == "robust-killed");
    let records = gw.export();
    let st = records
        .iter()
        .find(|r| {
            r["kind"] == "statement"
                && r["session_id"] == end["session_id"]
                && r["statement"]
                    .as_str()
                    .unwrap_or("")
                    .contains("pg_sleep(30)")
        })
        .expect("statement record");
    let outcome = records
        .iter()
        .find(|r| r["kind"] == "outcome" && r["statement_seq"] == st["seq"])
        .unwrap_or_else(|| panic!("no outcome for the interrupted statement"));
    assert_eq!(outcome["outcome"], "error", "{outcome}");
    assert_eq!(outcome["sqlstate"], "57P01", "{outcome}");

    assert_healthy(&good).await;
    assert_accepts_new_clients(&gw, &token).await;
}

/// The gateway bounds glibc's malloc arenas (memory stays flat while large results stream):
/// it runs with `MALLOC_ARENA_MAX=2`, under its own pid, unless the environment set it.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[tokio::test]
async fn the_gateway_runs_with_bounded_malloc_arenas() {
    let gw = Gateway::start();
    let pid = gw.pid().expect("running");
    let environ = std::fs::read(format!("/proc/{pid}/environ")).expect("environ");
    let vars: Vec<&[u8]> = environ.split(|b| *b == 0).collect();
    assert!(
        vars.contains(&&b"MALLOC_ARENA_MAX=2"[..]),
        "the gateway's environment lacks MALLOC_ARENA_MAX=2"
    );
    // Same process, same arguments: it serves.
    let token = gw.token("alice", &["dba"]);
    let c = gw.connect("payments", &token).await;
    assert_eq!(
        c.query_one("SELECT 1::int4", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        1
    );
}
