//! Authentication and connection security, end to end: OIDC tokens verified against a JWKS served
//! over HTTP by this test, the local issuer, client-facing TLS (psql and rustls), startup
//! parameter checks, the held upstream credential, and the admin API's authorization.
//!
//! Every test talks to the real `gatehouse` binary in front of a real PostgreSQL.

use std::net::SocketAddr;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::support::*;
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair, KeyPair, RsaKeyPair};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_postgres::config::SslMode;

// ---------------------------------------------------------------------------------------------
// Helpers: base64, JWTs, a JWKS server, psql, a raw startup, a recording relay
// ---------------------------------------------------------------------------------------------

const ISS: &str = "https://idp.gatehouse.test";
const DOWN_ISS: &str = "https://down.gatehouse.test";
const KID: &str = "test-rsa-1";

fn b64(data: &[u8], url: bool) -> String {
    let alphabet: &[u8; 64] = if url {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    } else {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    };
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let chars = chunk.len() + 1;
        for i in 0..4 {
            if i < chars {
                out.push(alphabet[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else if !url {
                out.push('=');
            }
        }
    }
    out
}

fn b64url(data: &[u8]) -> String {
    b64(data, true)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The test identity provider's keys: an RSA key published in the JWKS, and an EC key that is
/// not (used for an algorithm-confusion attempt).
struct IdpKeys {
    rsa: RsaKeyPair,
    ec: EcdsaKeyPair,
}

fn idp() -> &'static IdpKeys {
    static KEYS: OnceLock<IdpKeys> = OnceLock::new();
    KEYS.get_or_init(|| IdpKeys {
        rsa: RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap(),
        ec: EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING).unwrap(),
    })
}

impl IdpKeys {
    fn jwks(&self) -> String {
        let pk = self.rsa.public_key();
        json!({ "keys": [{
            "kty": "RSA",
            "kid": KID,
            "use": "sig",
            "alg": "RS256",
            "n": b64url(pk.modulus().big_endian_without_leading_zero()),
            "e": b64url(pk.exponent().big_endian_without_leading_zero()),
        }]})
        .to_string()
    }

    /// The RSA public key as a PEM "PUBLIC KEY" (what an attacker would use as an HMAC secret).
    fn public_pem(&self) -> String {
        let der = self.rsa.public_key().as_der().unwrap();
        let body = b64(der.as_ref(), false);
        let mut pem = String::from("-----BEGIN PUBLIC KEY-----\n");
        for line in body.as_bytes().chunks(64) {
            pem.push_str(std::str::from_utf8(line).unwrap());
            pem.push('\n');
        }
        pem.push_str("-----END PUBLIC KEY-----\n");
        pem
    }

    fn rs256(&self, kid: Option<&str>, claims: &Value) -> String {
        let mut header = json!({ "alg": "RS256", "typ": "JWT" });
        if let Some(k) = kid {
            header["kid"] = json!(k);
        }
        jwt(&header, claims, |msg| {
            let mut sig = vec![0u8; self.rsa.public_modulus_len()];
            self.rsa
                .sign(
                    &signature::RSA_PKCS1_SHA256,
                    &SystemRandom::new(),
                    msg,
                    &mut sig,
                )
                .unwrap();
            sig
        })
    }

    fn es256(&self, kid: &str, claims: &Value) -> String {
        let header = json!({ "alg": "ES256", "typ": "JWT", "kid": kid });
        jwt(&header, claims, |msg| {
            self.ec
                .sign(&SystemRandom::new(), msg)
                .unwrap()
                .as_ref()
                .to_vec()
        })
    }
}

fn jwt(header: &Value, claims: &Value, sign: impl FnOnce(&[u8]) -> Vec<u8>) -> String {
    let input = format!(
        "{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    );
    let sig = sign(input.as_bytes());
    format!("{input}.{}", b64url(&sig))
}

fn claims(iss: &str, sub: &str, groups: &[&str]) -> Value {
    let t = now();
    json!({
        "iss": iss, "sub": sub, "aud": "gatehouse",
        "iat": t, "nbf": t, "exp": t + 600,
        "groups": groups,
    })
}

/// A tiny HTTP/1.1 server on 127.0.0.1 that answers every request with the JWKS and counts them.
async fn serve_jwks(body: String) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let (h, body) = (h.clone(), body.clone());
            tokio::spawn(async move {
                let mut req = Vec::new();
                let mut buf = [0u8; 1024];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                h.fetch_add(1, Ordering::SeqCst);
                let resp = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
                     Connection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    (addr, hits)
}

/// Runs psql with a conninfo string and a token as the password.
fn psql(conninfo: &str, token: &str, sql: &str) -> Output {
    Command::new("psql")
        .args([
            "-X",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            sql,
            conninfo,
        ])
        .env("PGPASSWORD", token)
        .env("PGCONNECT_TIMEOUT", "10")
        .env_remove("PGSSLMODE")
        .env_remove("PGSSLROOTCERT")
        .env_remove("PGHOST")
        .env_remove("PGPORT")
        .env_remove("PGOPTIONS")
        .output()
        .expect("psql")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A rustls client config trusting only the certificates in `ca` (none when `None`).
fn rustls_client(ca: Option<&std::path::Path>) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    if let Some(ca) = ca {
        for cert in CertificateDer::pem_file_iter(ca).unwrap() {
            roots.add(cert.unwrap()).unwrap();
        }
    }
    rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth()
}

async fn connect_rustls(
    gw: &Gateway,
    user: &str,
    token: &str,
    ca: Option<&std::path::Path>,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let tls = tokio_postgres_rustls::MakeRustlsConnect::new(rustls_client(ca));
    let (client, conn) = tokio_postgres::connect(
        &format!(
            "host=localhost hostaddr=127.0.0.1 port={} dbname=payments user={user} \
             password={token} sslmode=require",
            gw.pg_port
        ),
        tls,
    )
    .await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// Connects through the gateway (plaintext) with a chosen client user name.
async fn connect_as(
    port: u16,
    db: &str,
    user: &str,
    token: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let mut cfg = tokio_postgres::Config::new();
    cfg.host("127.0.0.1")
        .port(port)
        .dbname(db)
        .user(user)
        .password(token)
        .ssl_mode(SslMode::Disable)
        .connect_timeout(Duration::from_secs(10));
    let (client, conn) = cfg.connect(tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// The backend messages of a byte stream: (type, body).
fn messages(mut bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    while bytes.len() >= 5 {
        let len = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]) as usize;
        if len < 4 || bytes.len() < 1 + len {
            break;
        }
        out.push((bytes[0], bytes[5..1 + len].to_vec()));
        bytes = &bytes[1 + len..];
    }
    out
}

/// The fields of an ErrorResponse body: (code, value).
fn error_fields(body: &[u8]) -> Vec<(u8, String)> {
    let mut out = Vec::new();
    let mut rest = body;
    while let Some((&code, tail)) = rest.split_first() {
        if code == 0 {
            break;
        }
        let end = tail.iter().position(|b| *b == 0).unwrap_or(tail.len());
        out.push((code, String::from_utf8_lossy(&tail[..end]).into_owned()));
        rest = tail.get(end + 1..).unwrap_or(&[]);
    }
    out
}

/// Sends a raw protocol-3.0 StartupMessage and returns everything the gateway answers until it
/// closes the connection (or 10 s pass), and whether it closed it.
async fn raw_startup(port: u16, params: &[(&str, &str)]) -> (Vec<u8>, bool) {
    let mut body = Vec::new();
    body.extend_from_slice(&196_608u32.to_be_bytes());
    for (k, v) in params {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut packet = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    packet.extend_from_slice(&body);
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(&packet).await.unwrap();
    let mut got = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut got))
        .await
        .is_ok();
    (got, closed)
}

/// A TCP relay in front of the gateway that records, per connection, every byte the gateway
/// sends to the client.
type Recorded = Arc<Mutex<Vec<u8>>>;

async fn recording_relay(target: u16) -> (u16, Arc<Mutex<Vec<Recorded>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let record: Arc<Mutex<Vec<Recorded>>> = Arc::default();
    let rec = record.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = TcpStream::connect(("127.0.0.1", target)).await else {
                continue;
            };
            let seen: Recorded = Arc::default();
            rec.lock().unwrap().push(seen.clone());
            let (mut cr, mut cw) = client.into_split();
            let (mut sr, mut sw) = server.into_split();
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut cr, &mut sw).await;
                let _ = sw.shutdown().await;
            });
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 * 1024];
                loop {
                    match sr.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            seen.lock().unwrap().extend_from_slice(&buf[..n]);
                            if cw.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    }
                }
                let _ = cw.shutdown().await;
            });
        }
    });
    (port, record)
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// The `login_failed` record of the attempt made with client user name `user`.
fn login_failed<'a>(records: &'a [Value], user: &str) -> Option<&'a Value> {
    records
        .iter()
        .find(|r| r["kind"] == "login_failed" && r["detail"]["client_user"] == user)
}

fn session_start<'a>(records: &'a [Value], user: &str) -> Option<&'a Value> {
    records
        .iter()
        .find(|r| r["kind"] == "session_start" && r["detail"]["client_user"] == user)
}

// ---------------------------------------------------------------------------------------------
// 1. OIDC tokens verified with the issuer's JWKS
// ---------------------------------------------------------------------------------------------

fn oidc_gateway(jwks: SocketAddr) -> Gateway {
    let down = free_port();
    Gateway::builder()
        .extra(&format!(
            "[[identity.oidc]]\nissuer = \"{ISS}\"\naudience = \"gatehouse\"\n\
             jwks_url = \"http://127.0.0.1:{}/jwks.json\"\ngroups_claim = \"groups\"\n\n\
             [[identity.oidc]]\nissuer = \"{DOWN_ISS}\"\naudience = \"gatehouse\"\n\
             jwks_url = \"http://127.0.0.1:{down}/jwks.json\"\n\n",
            jwks.port()
        ))
        .start()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oidc_valid_token_connects_and_is_attributed() {
    let keys = idp();
    let (addr, hits) = serve_jwks(keys.jwks()).await;
    let gw = oidc_gateway(addr);

    let token = keys.rs256(Some(KID), &claims(ISS, "oidc-fraud-bot", &["fraud-bots"]));
    let c = connect_as(gw.pg_port, "payments", "oidc-user", &token)
        .await
        .unwrap_or_else(|e| panic!("valid OIDC token refused: {e}; log: {}", gw.log_text()));
    let n: i64 = c
        .query_one("SELECT count(*) FROM customers", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 2);
    assert!(hits.load(Ordering::SeqCst) >= 1, "JWKS was never fetched");

    // A second connection with the same key is served from the cached key set.
    let c2 = connect_as(gw.pg_port, "payments", "oidc-user-2", &token)
        .await
        .unwrap();
    c2.simple_query("SELECT 1").await.unwrap();
    assert_eq!(hits.load(Ordering::SeqCst), 1, "JWKS fetched again");
    drop((c, c2));

    let rec = gw.wait_for_record(|r| {
        r["kind"] == "session_start" && r["detail"]["client_user"] == "oidc-user"
    });
    assert_eq!(rec["subject"], "oidc-fraud-bot");
    assert_eq!(rec["issuer"], ISS);
    assert_eq!(rec["groups"], json!(["fraud-bots"]));
    assert_eq!(rec["connection"], "payments");

    // The admin API verifies OIDC tokens like database logins.
    let http = reqwest::Client::builder()
        .no_proxy()
        .tls_certs_only(std::iter::empty())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let url = format!("http://127.0.0.1:{}/api/sessions", gw.admin_port);
    let admin = keys.rs256(
        Some(KID),
        &claims(ISS, "oidc-auditor", &["gatehouse-admins"]),
    );
    let r = http.get(&url).bearer_auth(&admin).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let list: Value = r.json().await.unwrap();
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .any(|s| s["subject"] == "oidc-fraud-bot"),
        "{list}"
    );
    let r = http.get(&url).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), 403, "an OIDC identity outside admin_groups");
}

struct BadToken {
    user: &'static str,
    token: String,
    sqlstate: &'static str,
    says: &'static str,
    reason: &'static str,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oidc_bad_tokens_are_refused_with_reason_and_audited() {
    let keys = idp();
    let (addr, hits) = serve_jwks(keys.jwks()).await;
    let gw = oidc_gateway(addr);
    let t = now();

    let mut expired = claims(ISS, "oidc-bot", &["fraud-bots"]);
    expired["iat"] = json!(t - 7200);
    expired["nbf"] = json!(t - 7200);
    expired["exp"] = json!(t - 3600);
    let mut future = claims(ISS, "oidc-bot", &["fraud-bots"]);
    future["nbf"] = json!(t + 3600);
    future["exp"] = json!(t + 7200);
    let mut wrong_aud = claims(ISS, "oidc-bot", &["fraud-bots"]);
    wrong_aud["aud"] = json!("some-other-service");
    let good = claims(ISS, "oidc-bot", &["fraud-bots"]);

    // Tampered: signed with groups that are not allowed, then the payload is swapped for one
    // naming an allowed group (the signature stays the original one).
    let signed = keys.rs256(Some(KID), &claims(ISS, "oidc-bot", &["marketing"]));
    let parts: Vec<&str> = signed.split('.').collect();
    let forged = claims(ISS, "oidc-bot", &["fraud-bots", "gatehouse-admins"]);
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        b64url(forged.to_string().as_bytes()),
        parts[2]
    );

    let alg_none = format!(
        "{}.{}.",
        b64url(json!({"alg": "none", "typ": "JWT"}).to_string().as_bytes()),
        b64url(good.to_string().as_bytes())
    );
    let pem = keys.public_pem();
    let hs256 = jwt(
        &json!({"alg": "HS256", "typ": "JWT", "kid": KID}),
        &good,
        |msg| {
            let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, pem.as_bytes());
            aws_lc_rs::hmac::sign(&key, msg).as_ref().to_vec()
        },
    );

    let cases = vec![
        BadToken {
            user: "case-expired",
            token: keys.rs256(Some(KID), &expired),
            sqlstate: "28P01",
            says: "expired",
            reason: "expired",
        },
        BadToken {
            user: "case-nbf",
            token: keys.rs256(Some(KID), &future),
            sqlstate: "28P01",
            says: "not valid yet",
            reason: "not_yet_valid",
        },
        BadToken {
            user: "case-audience",
            token: keys.rs256(Some(KID), &wrong_aud),
            sqlstate: "28P01",
            says: "audience",
            reason: "wrong_audience",
        },
        BadToken {
            user: "case-issuer",
            token: keys.rs256(
                Some(KID),
                &claims("https://evil.example.test", "oidc-bot", &["fraud-bots"]),
            ),
            sqlstate: "28P01",
            says: "issuer",
            reason: "unknown_issuer",
        },
        BadToken {
            user: "case-alg-none",
            token: alg_none,
            sqlstate: "28P01",
            says: "algorithm",
            reason: "alg_not_allowed",
        },
        BadToken {
            user: "case-hs256",
            token: hs256,
            sqlstate: "28P01",
            says: "algorithm",
            reason: "alg_not_allowed",
        },
        BadToken {
            user: "case-es256-rsa-kid",
            token: keys.es256(KID, &good),
            sqlstate: "28P01",
            says: "algorithm",
            reason: "key_alg_mismatch",
        },
        BadToken {
            user: "case-kid",
            token: keys.rs256(Some("no-such-kid"), &good),
            sqlstate: "28P01",
            says: "key id",
            reason: "unknown_kid",
        },
        BadToken {
            user: "case-tampered",
            token: tampered,
            sqlstate: "28P01",
            says: "signature",
            reason: "bad_signature",
        },
        BadToken {
            user: "case-garbage",
            token: "this-is-not-a-jwt-Zq7".to_owned(),
            sqlstate: "28P01",
            says: "malformed",
            reason: "malformed",
        },
        BadToken {
            user: "case-jwks-down",
            token: keys.rs256(Some(KID), &claims(DOWN_ISS, "oidc-bot", &["fraud-bots"])),
            sqlstate: "28P01",
            says: "unavailable",
            reason: "jwks_unavailable",
        },
        BadToken {
            user: "case-group",
            token: keys.rs256(Some(KID), &claims(ISS, "oidc-marketer", &["marketing"])),
            sqlstate: "28000",
            says: "not in any group allowed",
            reason: "group_not_allowed",
        },
    ];

    let mut failures = Vec::new();
    for case in &cases {
        match connect_as(gw.pg_port, "payments", case.user, &case.token).await {
            Ok(_) => failures.push(format!("{}: token was ACCEPTED", case.user)),
            Err(e) => {
                let state = sqlstate(&e);
                let msg = db_message(&e);
                if state.as_deref() != Some(case.sqlstate) {
                    failures.push(format!(
                        "{}: SQLSTATE {state:?}, expected {} ({msg})",
                        case.user, case.sqlstate
                    ));
                }
                if !msg.to_lowercase().contains(case.says) {
                    failures.push(format!(
                        "{}: message {msg:?} does not say {:?}",
                        case.user, case.says
                    ));
                }
                for part in case.token.split('.').filter(|p| p.len() >= 8) {
                    if msg.contains(part) {
                        failures.push(format!("{}: message echoes the token", case.user));
                    }
                }
            }
        }
    }

    let last = cases.last().unwrap().user;
    gw.wait_for_record(|r| r["kind"] == "login_failed" && r["detail"]["client_user"] == last);
    let records = gw.export();
    for case in &cases {
        let Some(rec) = login_failed(&records, case.user) else {
            failures.push(format!("{}: no login_failed audit record", case.user));
            continue;
        };
        if rec["detail"]["reason"] != case.reason {
            failures.push(format!(
                "{}: audit reason {}, expected {:?}",
                case.user, rec["detail"]["reason"], case.reason
            ));
        }
        if rec["connection"] != "payments" {
            failures.push(format!(
                "{}: audit connection {}",
                case.user, rec["connection"]
            ));
        }
        let text = rec.to_string();
        for part in case.token.split('.').filter(|p| p.len() >= 8) {
            if text.contains(part) {
                failures.push(format!("{}: audit record holds the token", case.user));
            }
        }
    }
    // The identity is known when only the group check failed.
    if let Some(rec) = login_failed(&records, "case-group") {
        assert_eq!(rec["subject"], "oidc-marketer");
        assert_eq!(rec["issuer"], ISS);
    }
    // No session was started by any of them.
    for case in &cases {
        if session_start(&records, case.user).is_some() {
            failures.push(format!("{}: a session was started", case.user));
        }
    }
    // One initial load plus at most one refetch for the unknown kid: a sprayed kid cannot make
    // the gateway hammer the IdP.
    let n = hits.load(Ordering::SeqCst);
    if !(1..=2).contains(&n) {
        failures.push(format!("JWKS fetched {n} times, expected 1..=2"));
    }

    // The gateway is still serving a good token.
    let ok = keys.rs256(Some(KID), &good);
    let c = connect_as(gw.pg_port, "payments", "after-failures", &ok)
        .await
        .unwrap();
    c.simple_query("SELECT 1").await.unwrap();

    assert!(failures.is_empty(), "failures:\n{}", failures.join("\n"));
}

// ---------------------------------------------------------------------------------------------
// 2. TLS to clients
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn tls_psql_sslmode_require_and_verify_full() {
    let gw = Gateway::start();
    let token = gw.token("tls-bot", &["dba"]);
    let ca = gw.data_dir().join("ca.crt");
    assert!(ca.exists(), "the gateway did not generate {}", ca.display());
    let port = gw.pg_port;

    let out = psql(
        &format!("host=127.0.0.1 port={port} dbname=payments user=psql-require sslmode=require"),
        &token,
        "SELECT 'via-require'",
    );
    assert!(out.status.success(), "sslmode=require: {}", stderr(&out));
    assert_eq!(stdout(&out), "via-require");

    let out = psql(
        &format!(
            "host=localhost hostaddr=127.0.0.1 port={port} dbname=payments user=psql-verify \
             sslmode=verify-full sslrootcert={}",
            ca.display()
        ),
        &token,
        "SELECT count(*) FROM customers",
    );
    assert!(
        out.status.success(),
        "sslmode=verify-full: {}",
        stderr(&out)
    );
    assert_eq!(stdout(&out), "2");

    // verify-full against a CA that did not sign the gateway's certificate fails.
    let other = tempfile::tempdir().unwrap();
    let other_ca = other.path().join("other-ca.crt");
    let mkca = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=not-the-gatehouse-ca",
            "-keyout",
        ])
        .arg(other.path().join("k.pem"))
        .arg("-out")
        .arg(&other_ca)
        .output()
        .unwrap();
    assert!(mkca.status.success(), "openssl: {}", stderr(&mkca));
    let out = psql(
        &format!(
            "host=localhost hostaddr=127.0.0.1 port={port} dbname=payments user=psql-wrong-ca \
             sslmode=verify-full sslrootcert={}",
            other_ca.display()
        ),
        &token,
        "SELECT 1",
    );
    assert!(
        !out.status.success(),
        "verify-full with a foreign CA succeeded"
    );
    assert!(
        stderr(&out).contains("certificate verify failed"),
        "{}",
        stderr(&out)
    );

    // Plaintext still works when TLS is not required, and is recorded as such.
    let out = psql(
        &format!("host=127.0.0.1 port={port} dbname=payments user=psql-plain sslmode=disable"),
        &token,
        "SELECT 1",
    );
    assert!(out.status.success(), "sslmode=disable: {}", stderr(&out));

    gw.wait_for_record(|r| {
        r["kind"] == "session_start" && r["detail"]["client_user"] == "psql-plain"
    });
    let records = gw.export();
    for user in ["psql-require", "psql-verify"] {
        let rec =
            session_start(&records, user).unwrap_or_else(|| panic!("no session_start for {user}"));
        assert_eq!(rec["detail"]["tls"], json!(true), "{user}: {rec}");
        assert_eq!(rec["subject"], "tls-bot");
    }
    let rec = session_start(&records, "psql-plain").unwrap();
    assert_eq!(rec["detail"]["tls"], json!(false), "{rec}");
    assert!(session_start(&records, "psql-wrong-ca").is_none());
}

#[tokio::test]
async fn tls_tokio_postgres_rustls_verifies_the_generated_ca() {
    let gw = Gateway::start();
    let token = gw.token("rustls-bot", &["fraud-bots"]);
    let ca = gw.data_dir().join("ca.crt");

    let c = connect_rustls(&gw, "rustls-client", &token, Some(&ca))
        .await
        .unwrap_or_else(|e| panic!("rustls connect: {e}; log: {}", gw.log_text()));
    let row = c
        .query_one("SELECT name FROM customers WHERE id = $1", &[&1i32])
        .await
        .unwrap();
    assert_eq!(row.get::<_, &str>(0), "Ada");

    // A client that does not trust the gateway's CA refuses the handshake.
    let e = connect_rustls(&gw, "rustls-untrusting", &token, None)
        .await
        .expect_err("a client with no trusted roots connected");
    assert!(e.as_db_error().is_none(), "{e}");

    let rec = gw.wait_for_record(|r| {
        r["kind"] == "session_start" && r["detail"]["client_user"] == "rustls-client"
    });
    assert_eq!(rec["detail"]["tls"], json!(true), "{rec}");
    assert_eq!(rec["subject"], "rustls-bot");
}

#[tokio::test]
async fn tls_require_refuses_plaintext() {
    let gw = Gateway::builder().tls_require().start();
    let token = gw.token("strict-bot", &["dba"]);
    let port = gw.pg_port;

    let e = connect_as(port, "payments", "plain-client", &token)
        .await
        .expect_err("plaintext connection accepted with tls.require = true");
    assert_eq!(sqlstate(&e).as_deref(), Some("28000"), "{e}");
    assert!(db_message(&e).contains("TLS"), "{}", db_message(&e));

    let out = psql(
        &format!("host=127.0.0.1 port={port} dbname=payments user=psql-disable sslmode=disable"),
        &token,
        "SELECT 1",
    );
    assert!(!out.status.success(), "psql sslmode=disable succeeded");
    assert!(stderr(&out).contains("TLS"), "{}", stderr(&out));
    assert!(!stderr(&out).contains(&token));

    let out = psql(
        &format!("host=127.0.0.1 port={port} dbname=payments user=psql-require sslmode=require"),
        &token,
        "SELECT 'secure'",
    );
    assert!(out.status.success(), "sslmode=require: {}", stderr(&out));
    assert_eq!(stdout(&out), "secure");

    let c = connect_rustls(
        &gw,
        "rustls-strict",
        &token,
        Some(&gw.data_dir().join("ca.crt")),
    )
    .await
    .unwrap();
    c.simple_query("SELECT 1").await.unwrap();

    gw.wait_for_record(|r| {
        r["kind"] == "session_start" && r["detail"]["client_user"] == "rustls-strict"
    });
    let records = gw.export();
    for user in ["plain-client", "psql-disable"] {
        let rec =
            login_failed(&records, user).unwrap_or_else(|| panic!("no login_failed for {user}"));
        assert_eq!(rec["detail"]["reason"], "tls_required", "{rec}");
        assert!(session_start(&records, user).is_none());
    }
    let rec = session_start(&records, "psql-require").unwrap();
    assert_eq!(rec["detail"]["tls"], json!(true));
}

// ---------------------------------------------------------------------------------------------
// 3. Startup checks
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn startup_refusals_then_gateway_keeps_serving() {
    let gw = Gateway::start();
    let token = gw.token("startup-bot", &["dba"]);
    let port = gw.pg_port;

    // A client that starts up but never sends its password is dropped after
    // listen.startup_timeout (3 s in the test config); it runs while the other checks do.
    let stalled = tokio::spawn(async move {
        raw_startup(
            port,
            &[("user", "stalled-client"), ("database", "payments")],
        )
        .await
    });

    // Unknown connection name.
    let e = connect_as(port, "no_such_connection", "unknown-conn", &token)
        .await
        .expect_err("unknown connection accepted");
    assert_eq!(sqlstate(&e).as_deref(), Some("3D000"), "{e}");
    assert!(db_message(&e).contains("no_such_connection"), "{e}");

    // `options` (could set role, GUCs) is refused, by tokio-postgres and by psql.
    let mut cfg = tokio_postgres::Config::new();
    cfg.host("127.0.0.1")
        .port(port)
        .dbname("payments")
        .user("opts-client")
        .password(token.as_str())
        .options("-c role=postgres")
        .ssl_mode(SslMode::Disable);
    let e = cfg
        .connect(tokio_postgres::NoTls)
        .await
        .err()
        .expect("options=-c role=... accepted");
    assert_eq!(sqlstate(&e).as_deref(), Some("42501"), "{e}");
    assert!(db_message(&e).contains("options"), "{}", db_message(&e));

    let out = psql(
        &format!(
            "host=127.0.0.1 port={port} dbname=payments user=psql-opts sslmode=disable \
             options='-c role=postgres'"
        ),
        &token,
        "SELECT current_user",
    );
    assert!(
        !out.status.success(),
        "psql with options succeeded: {}",
        stdout(&out)
    );
    assert!(stderr(&out).contains("options"), "{}", stderr(&out));

    // Replication connections are refused before authentication (raw startup packet).
    let (answer, _) = raw_startup(
        port,
        &[
            ("user", "repl-client"),
            ("database", "payments"),
            ("replication", "database"),
        ],
    )
    .await;
    let msgs = messages(&answer);
    let (kind, body) = msgs.first().expect("no answer to a replication startup");
    assert_eq!(*kind, b'E', "expected an ErrorResponse, got {msgs:?}");
    let fields = error_fields(body);
    let field = |c: u8| {
        fields
            .iter()
            .find(|(k, _)| *k == c)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    assert_eq!(field(b'C'), "42501", "{fields:?}");
    assert_eq!(field(b'S'), "FATAL", "{fields:?}");
    assert!(field(b'M').contains("replication"), "{fields:?}");
    assert!(
        !msgs.iter().any(|(k, _)| *k == b'R'),
        "authentication was offered to a replication connection"
    );

    let out = psql(
        &format!(
            "host=127.0.0.1 port={port} dbname=payments user=psql-repl sslmode=disable \
             replication=database"
        ),
        &token,
        "IDENTIFY_SYSTEM",
    );
    assert!(!out.status.success(), "replication=database succeeded");
    assert!(stderr(&out).contains("replication"), "{}", stderr(&out));

    // Wrong tokens: garbage, and a token of another gateway's local issuer.
    let e = connect_as(port, "payments", "bad-token", "not-a-token")
        .await
        .expect_err("garbage token accepted");
    assert_eq!(sqlstate(&e).as_deref(), Some("28P01"), "{e}");
    let other = tempfile::tempdir().unwrap();
    let other_cfg = other.path().join("other.toml");
    std::fs::write(
        &other_cfg,
        Gateway::builder().config_text(free_port(), free_port()),
    )
    .unwrap();
    let out = Command::new(bin())
        .args([
            "token",
            "issue",
            "--subject",
            "startup-bot",
            "--group",
            "dba",
            "-c",
        ])
        .arg(&other_cfg)
        .env("TEST_DB_PASSWORD", SVC_PASSWORD)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let foreign = stdout(&out);
    let e = connect_as(port, "payments", "foreign-token", &foreign)
        .await
        .expect_err("a token of another gateway's key accepted");
    assert_eq!(sqlstate(&e).as_deref(), Some("28P01"), "{e}");
    assert!(!db_message(&e).contains(&foreign));

    // The gateway keeps serving a good client.
    let c = connect_as(port, "payments", "good-client", &token)
        .await
        .unwrap();
    let n: i64 = c
        .query_one("SELECT count(*) FROM payments", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 3);

    let (answer, closed) = stalled.await.unwrap();
    assert!(
        closed,
        "a client stalled in authentication was not disconnected"
    );
    let msgs = messages(&answer);
    assert_eq!(
        msgs.first().map(|(k, b)| (*k, b.clone())),
        Some((b'R', 3u32.to_be_bytes().to_vec())),
        "expected AuthenticationCleartextPassword first: {msgs:?}"
    );

    gw.wait_for_record(|r| {
        r["kind"] == "session_start" && r["detail"]["client_user"] == "good-client"
    });
    let records = gw.export();
    let expect = [
        ("unknown-conn", "unknown_connection"),
        ("opts-client", "parameter_refused"),
        ("psql-opts", "parameter_refused"),
        ("repl-client", "parameter_refused"),
        ("psql-repl", "parameter_refused"),
        ("bad-token", "malformed"),
        ("foreign-token", "unknown_kid"),
    ];
    for (user, reason) in expect {
        let rec = login_failed(&records, user)
            .unwrap_or_else(|| panic!("no login_failed record for {user}"));
        assert_eq!(rec["detail"]["reason"], reason, "{user}: {rec}");
        assert!(session_start(&records, user).is_none(), "{user}");
    }
    let rec = login_failed(&records, "unknown-conn").unwrap();
    assert_eq!(rec["subject"], "startup-bot");
    assert_eq!(rec["connection"], "no_such_connection");
}

// ---------------------------------------------------------------------------------------------
// 4. The upstream credential is held by the gateway
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_credential_is_never_sent_to_the_client() {
    const WRONG_PW: &str = "wrong-Upstream-Pw-31";
    let secrets = tempfile::tempdir().unwrap();
    let pw_file = secrets.path().join("badpw.secret");
    std::fs::write(&pw_file, format!("{WRONG_PW}\n")).unwrap();
    let pg = cluster();
    let gw = Gateway::builder()
        .extra(&format!(
            "[[connection]]\nname = \"badpw\"\nupstream = \"127.0.0.1:{}\"\n\
             database = \"payments\"\nuser = \"{SVC_USER}\"\npassword_file = \"{}\"\n\
             upstream_tls = \"disable\"\nallow_groups = [\"dba\"]\n\n",
            pg.port,
            pw_file.display()
        ))
        .start();
    let token = gw.token("cred-probe", &["dba"]);
    let (relay, record) = recording_relay(gw.pg_port).await;

    let c = connect_as(relay, "payments", "agent-who-wants-the-password", &token)
        .await
        .unwrap();
    let row = c
        .query_one("SELECT current_user::text, session_user::text", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, &str>(0), SVC_USER);
    assert_eq!(row.get::<_, &str>(1), SVC_USER);
    c.simple_query("SHOW ALL").await.unwrap();
    // Errors from upstream travel to the client; none of them may carry the secret.
    let e = c
        .simple_query("SELECT rolpassword FROM pg_authid")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("42501"), "{e}");
    let e = c.simple_query("SET ROLE postgres").await.unwrap_err();
    assert!(sqlstate(&e).is_some(), "{e}");
    let e = c
        .query("SELECT length($1::text) / 0", &[&"x"])
        .await
        .unwrap_err();
    assert!(sqlstate(&e).is_some(), "{e}");
    c.simple_query("SELECT 1").await.unwrap();
    drop(c);

    // An upstream login failure is reported without the upstream's details or credential.
    let e = connect_as(relay, "badpw", "agent-badpw", &token)
        .await
        .expect_err("login with a wrong upstream password succeeded");
    assert_eq!(sqlstate(&e).as_deref(), Some("08001"), "{e}");
    let msg = db_message(&e);
    assert!(
        !msg.contains(WRONG_PW) && !msg.contains(SVC_PASSWORD),
        "{msg}"
    );

    tokio::time::sleep(Duration::from_millis(300)).await;
    let streams: Vec<Vec<u8>> = record
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.lock().unwrap().clone())
        .collect();
    assert_eq!(streams.len(), 2);
    for (i, bytes) in streams.iter().enumerate() {
        assert!(!bytes.is_empty(), "connection {i}: nothing received");
        assert!(
            !contains(bytes, SVC_PASSWORD),
            "connection {i}: the upstream password reached the client"
        );
        assert!(
            !contains(bytes, WRONG_PW),
            "connection {i}: the configured password reached the client"
        );
        // The client is asked for a cleartext password (its token), never for SCRAM: the
        // upstream authentication exchange is not relayed.
        let auth: Vec<u32> = messages(bytes)
            .iter()
            .filter(|(k, b)| *k == b'R' && b.len() >= 4)
            .map(|(_, b)| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        assert_eq!(
            auth.first(),
            Some(&3),
            "connection {i}: auth requests {auth:?}"
        );
        assert!(
            !auth.iter().any(|c| (10..=12).contains(c) || *c == 5),
            "connection {i}: upstream auth exchange relayed: {auth:?}"
        );
    }

    // Nor does the audit trail or the gateway log hold it.
    let rec = gw.wait_for_record(|r| r["kind"] == "login_failed" && r["connection"] == "badpw");
    assert_eq!(rec["detail"]["reason"], "upstream_unavailable", "{rec}");
    assert_eq!(rec["subject"], "cred-probe", "{rec}");
    let export = serde_json::to_string(&gw.export()).unwrap();
    assert!(
        !export.contains(SVC_PASSWORD),
        "audit export holds the password"
    );
    assert!(
        !export.contains(WRONG_PW),
        "audit export holds the password"
    );
    let log = gw.log_text();
    assert!(
        !log.contains(SVC_PASSWORD),
        "gateway log holds the password"
    );
    assert!(!log.contains(WRONG_PW), "gateway log holds the password");
}

// ---------------------------------------------------------------------------------------------
// 5. Admin API
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn admin_api_health_metrics_and_session_authorization() {
    let gw = Gateway::start();
    let base = format!("http://127.0.0.1:{}", gw.admin_port);
    let http = reqwest::Client::builder()
        .no_proxy()
        .tls_certs_only(std::iter::empty())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();

    // A session to look at later, and a failed login for the auth-failure metric.
    let token = gw.token("admin-probe-bot", &["fraud-bots"]);
    let c = connect_as(gw.pg_port, "payments", "admin-probe", &token)
        .await
        .unwrap();
    c.simple_query("SELECT name FROM customers").await.unwrap();
    drop(c);
    assert!(
        connect_as(gw.pg_port, "payments", "admin-probe-bad", "bad-token")
            .await
            .is_err()
    );

    let r = http.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);

    let r = http.get(format!("{base}/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(text.contains("gatehouse_sessions_total"), "{text}");
    assert!(text.contains("gatehouse_auth_failures_total"), "{text}");

    let sessions = format!("{base}/api/sessions");
    let r = http.get(&sessions).send().await.unwrap();
    assert_eq!(r.status(), 401, "no Authorization header");
    let r = http
        .get(&sessions)
        .bearer_auth("not-a-valid-token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "invalid token");
    let body = r.text().await.unwrap();
    assert!(!body.contains("not-a-valid-token"), "{body}");
    let r = http
        .get(&sessions)
        .header("Authorization", format!("Basic {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "not a bearer token");
    let r = http
        .get(&sessions)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "a non-admin identity");

    let admin = gw.token("auditor", &["gatehouse-admins"]);
    let r = http
        .get(&sessions)
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let list: Value = r.json().await.unwrap();
    let list = list.as_array().expect("sessions is a JSON array");
    let ours = list
        .iter()
        .find(|s| s["subject"] == "admin-probe-bot")
        .unwrap_or_else(|| panic!("our session is not listed: {list:?}"));
    let id = ours["session_id"].as_str().expect("session_id").to_owned();
    assert_eq!(ours["connection"], "payments");

    let r = http
        .get(format!("{sessions}/{id}"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let detail: Value = r.json().await.unwrap();
    let events = detail["events"].as_array().expect("events array");
    assert!(
        events
            .iter()
            .any(|e| e["kind"] == "session_start" && e["session_id"] == id.as_str()),
        "{events:?}"
    );
    assert!(
        events.iter().any(|e| e["kind"] == "statement"
            && e["statement"]
                .as_str()
                .is_some_and(|s| s.contains("customers"))),
        "{events:?}"
    );
    // Reading the audit through the API is itself recorded (PCI DSS 10.2.1.3), refused
    // attempts are not (they read nothing).
    let reads: Vec<Value> = gw
        .export()
        .into_iter()
        .filter(|r| r["kind"] == "admin" && r["detail"]["event"] == "audit_read")
        .collect();
    assert_eq!(reads.len(), 2, "{reads:?}");
    assert!(reads.iter().all(|r| r["subject"] == "auditor"), "{reads:?}");
    assert_eq!(reads[0]["detail"]["what"], "sessions");
    assert_eq!(reads[1]["detail"]["target"], id.as_str());

    // A session id needs an admin too.
    let r = http
        .get(format!("{sessions}/{id}"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = http.get(format!("{sessions}/{id}")).send().await.unwrap();
    assert_eq!(r.status(), 401);

    let r = http
        .get(format!("{sessions}/00000000-0000-7000-8000-000000000000"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}
