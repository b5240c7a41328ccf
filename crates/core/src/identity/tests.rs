//! Behaviour tests with real keys (Ed25519 local key; RSA and EC P-256 keys made by the
//! `openssl` CLI) and a real JWKS HTTP(S) server on 127.0.0.1 that counts its requests.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

use super::jwks::KeySet;
use super::*;
use crate::config::Config;

const ISS: &str = "https://idp.example.test";
const AUD: &str = "gatehouse-pg";

// ---------------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------------

struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let p = std::env::temp_dir().join(format!("gatehouse-identity-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn openssl(args: &[&str], stdin: Option<&[u8]>) -> Vec<u8> {
    let mut child = Command::new("openssl")
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl CLI");
    if let Some(input) = stdin {
        use std::io::Write;
        child.stdin.take().unwrap().write_all(input).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "openssl {args:?}: {:?}", out);
    out.stdout
}

/// An asymmetric test key: signing key, public JWK (without `kid`), public key PEM.
struct TestKey {
    enc: EncodingKey,
    jwk: Value,
    public_pem: Vec<u8>,
}

impl TestKey {
    fn rsa() -> Self {
        let pem = openssl(
            &[
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
            ],
            None,
        );
        let enc = EncodingKey::from_rsa_pem(&pem).unwrap();
        Self::finish(enc, Algorithm::RS256, &pem)
    }

    fn ec() -> Self {
        let pem = openssl(
            &[
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
            ],
            None,
        );
        let enc = EncodingKey::from_ec_pem(&pem).unwrap();
        Self::finish(enc, Algorithm::ES256, &pem)
    }

    fn finish(enc: EncodingKey, alg: Algorithm, private_pem: &[u8]) -> Self {
        let jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(&enc, alg).unwrap();
        let mut jwk = serde_json::to_value(jwk).unwrap();
        // Keys published without "alg" are common; the key type alone must then decide.
        jwk.as_object_mut().unwrap().remove("alg");
        let public_pem = openssl(&["pkey", "-pubout"], Some(private_pem));
        Self {
            enc,
            jwk,
            public_pem,
        }
    }

    /// The public JWK with `kid` (and optionally `alg`).
    fn jwk(&self, kid: &str) -> Value {
        let mut j = self.jwk.clone();
        j["kid"] = json!(kid);
        j["use"] = json!("sig");
        j
    }
}

struct Keys {
    rsa1: TestKey,
    rsa2: TestKey,
    ec: TestKey,
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| Keys {
        rsa1: TestKey::rsa(),
        rsa2: TestKey::rsa(),
        ec: TestKey::ec(),
    })
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn claims(iss: &str, aud: &str) -> Value {
    let t = now();
    json!({
        "iss": iss, "sub": "fraud-bot", "aud": aud,
        "iat": t, "nbf": t, "exp": t + 300,
        "groups": ["fraud-bots", "readers"],
    })
}

fn sign(key: &EncodingKey, alg: Algorithm, kid: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
}

fn segment(token: &str, i: usize) -> Value {
    let part = token.split('.').nth(i).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

/// A tiny HTTP/1.1 JWKS server on 127.0.0.1 (optionally TLS) that counts requests.
struct JwksServer {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    body: Arc<Mutex<String>>,
    scheme: &'static str,
}

impl JwksServer {
    async fn start(keys: Vec<Value>) -> Self {
        Self::start_with(keys, None).await
    }

    async fn start_with(keys: Vec<Value>, tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let body = Arc::new(Mutex::new(json!({ "keys": keys }).to_string()));
        let scheme = if tls.is_some() { "https" } else { "http" };
        let (h, b) = (hits.clone(), body.clone());
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let (h, b, tls) = (h.clone(), b.clone(), tls.clone());
                tokio::spawn(async move {
                    match tls {
                        Some(acceptor) => {
                            if let Ok(s) = acceptor.accept(sock).await {
                                respond(s, h, b).await;
                            }
                        }
                        None => respond(sock, h, b).await,
                    }
                });
            }
        });
        Self {
            addr,
            hits,
            body,
            scheme,
        }
    }

    fn url(&self) -> String {
        format!("{}://127.0.0.1:{}/jwks", self.scheme, self.addr.port())
    }

    fn set_keys(&self, keys: Vec<Value>) {
        *self.body.lock().unwrap() = json!({ "keys": keys }).to_string();
    }

    fn set_raw(&self, body: &str) {
        *self.body.lock().unwrap() = body.to_owned();
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

async fn respond<S: AsyncRead + AsyncWrite + Unpin>(
    mut sock: S,
    hits: Arc<AtomicUsize>,
    body: Arc<Mutex<String>>,
) {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        let n = sock.read(&mut buf).await.unwrap_or(0);
        if n == 0 || head.len() > 16 * 1024 {
            return;
        }
        head.extend_from_slice(&buf[..n]);
        if head.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    hits.fetch_add(1, Ordering::SeqCst);
    let body = body.lock().unwrap().clone();
    let response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = sock.write_all(response.as_bytes()).await;
    let _ = sock.shutdown().await;
}

/// One `[[identity.oidc]]` entry for [`config`].
struct Issuer<'a> {
    issuer: &'a str,
    url: String,
    extra: &'a str,
}

fn oidc(url: String) -> Issuer<'static> {
    Issuer {
        issuer: ISS,
        url,
        extra: "",
    }
}

fn config(dir: &Path, local: bool, issuers: &[Issuer<'_>]) -> Config {
    let mut text = format!(
        "data_dir = '{}'\n[identity]\nlocal_issuer = {local}\n",
        dir.join("data").display()
    );
    for i in issuers {
        text.push_str(&format!(
            "[[identity.oidc]]\nissuer = '{}'\naudience = '{AUD}'\njwks_url = '{}'\n{}\n",
            i.issuer, i.url, i.extra
        ));
    }
    Config::from_toml(&text, dir).unwrap()
}

async fn oidc_verifier(server: &JwksServer, dir: &TempDir) -> Verifier {
    Verifier::from_config(&config(dir.path(), false, &[oidc(server.url())])).unwrap()
}

// ---------------------------------------------------------------------------------------------
// Local issuer
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn local_issue_verify_round_trip_with_groups() {
    let dir = TempDir::new();
    let cfg = config(dir.path(), true, &[]);
    let verifier = Verifier::from_config(&cfg).unwrap();
    let issuer = LocalIssuer::load_or_create(&cfg.data_dir).unwrap();
    let groups = vec!["dba".to_owned(), "fraud-bots".to_owned()];
    let token = issuer
        .issue("ci-job-42", &groups, Duration::from_secs(900))
        .unwrap();

    let p = verifier.verify(&token).await.unwrap();
    assert_eq!(p.subject, "ci-job-42");
    // A trailing newline (password file) is tolerated.
    assert_eq!(verifier.verify(&format!("{token}\n")).await.unwrap(), p);
    assert_eq!(p.groups, groups);
    assert_eq!(p.issuer, "gatehouse-local");

    let header = segment(&token, 0);
    assert_eq!(header["alg"], "EdDSA");
    assert_eq!(header["kid"], issuer.key_id());
    assert_eq!(issuer.key_id().len(), 16);
    let c = segment(&token, 1);
    assert_eq!(c["iss"], "gatehouse-local");
    assert_eq!(c["aud"], "gatehouse");
    assert_eq!(c["sub"], "ci-job-42");
    let (iat, nbf, exp) = (
        c["iat"].as_u64().unwrap(),
        c["nbf"].as_u64().unwrap(),
        c["exp"].as_u64().unwrap(),
    );
    assert_eq!(nbf, iat);
    assert_eq!(exp, iat + 900);
    assert!(uuid::Uuid::parse_str(c["jti"].as_str().unwrap()).is_ok());
    assert_ne!(
        segment(&issuer.issue("x", &[], Duration::from_secs(60)).unwrap(), 1)["jti"],
        c["jti"]
    );

    // No groups → empty list; empty subject or zero lifetime → refused.
    let t = issuer.issue("solo", &[], Duration::from_secs(60)).unwrap();
    assert!(verifier.verify(&t).await.unwrap().groups.is_empty());
    assert!(issuer.issue("", &[], Duration::from_secs(60)).is_err());
    assert!(issuer.issue("x", &[], Duration::ZERO).is_err());
}

#[test]
fn local_key_file_is_private_created_once_and_reused() {
    let dir = TempDir::new();
    let data = dir.path().join("nested").join("data");
    let a = LocalIssuer::load_or_create(&data).unwrap();
    let b = LocalIssuer::load_or_create(&data).unwrap();
    assert_eq!(a.key_id(), b.key_id());
    let path = data.join("issuer-ed25519.pem");
    assert_eq!(a.key_path(), path);
    let pem = std::fs::read_to_string(&path).unwrap();
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // No temporary files are left behind.
    let names: Vec<_> = std::fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("issuer-ed25519.pem")]);

    // A key written by `openssl genpkey -algorithm ed25519` is accepted too.
    let other = TempDir::new();
    let pem = openssl(&["genpkey", "-algorithm", "ed25519"], None);
    std::fs::write(other.path().join("issuer-ed25519.pem"), pem).unwrap();
    let c = LocalIssuer::load_or_create(other.path()).unwrap();
    assert_ne!(c.key_id(), a.key_id());

    // A corrupt key file is an error, not silently replaced.
    let bad = TempDir::new();
    std::fs::write(bad.path().join("issuer-ed25519.pem"), "not a key").unwrap();
    assert!(matches!(
        LocalIssuer::load_or_create(bad.path()),
        Err(IdentityError::BadKey { .. })
    ));
}

#[test]
fn concurrent_first_use_agrees_on_one_key() {
    let dir = TempDir::new();
    let data = dir.path().join("data");
    let ids: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                s.spawn(|| {
                    LocalIssuer::load_or_create(&data)
                        .unwrap()
                        .key_id()
                        .to_owned()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
}

#[tokio::test]
async fn local_time_claims_audience_and_subject_are_enforced() {
    let dir = TempDir::new();
    let cfg = config(dir.path(), true, &[]);
    let verifier = Verifier::from_config(&cfg).unwrap();
    let issuer = LocalIssuer::load_or_create(&cfg.data_dir).unwrap();
    let base = claims("gatehouse-local", "gatehouse");
    let t = now();
    let with = |patch: Value| {
        let mut c = base.clone();
        for (k, v) in patch.as_object().unwrap() {
            if v.is_null() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        issuer.sign(&c).unwrap()
    };

    assert!(verifier.verify(&with(json!({}))).await.is_ok());
    // Expired (beyond the 30 s leeway) / within leeway.
    let err = verifier
        .verify(&with(json!({"exp": t - 120})))
        .await
        .unwrap_err();
    assert_eq!(err, AuthError::Expired);
    assert_eq!(err.reason_code(), "expired");
    assert!(verifier.verify(&with(json!({"exp": t - 10}))).await.is_ok());
    // Not yet valid.
    let err = verifier
        .verify(&with(json!({"nbf": t + 300})))
        .await
        .unwrap_err();
    assert_eq!(err.reason_code(), "not_yet_valid");
    assert!(verifier.verify(&with(json!({"nbf": t + 10}))).await.is_ok());
    // exp is required.
    assert_eq!(
        verifier.verify(&with(json!({"exp": null}))).await,
        Err(AuthError::MissingClaim("exp"))
    );
    // Wrong audience; an audience array containing ours is fine.
    let err = verifier
        .verify(&with(json!({"aud": "other"})))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        AuthError::WrongAudience {
            expected: "gatehouse".into()
        }
    );
    assert_eq!(err.reason_code(), "wrong_audience");
    assert!(
        verifier
            .verify(&with(json!({"aud": ["x", "gatehouse"]})))
            .await
            .is_ok()
    );
    assert!(verifier.verify(&with(json!({"aud": null}))).await.is_err());
    // Subject required and non-empty.
    for patch in [json!({"sub": null}), json!({"sub": ""}), json!({"sub": 7})] {
        let err = verifier.verify(&with(patch)).await.unwrap_err();
        assert!(
            matches!(err, AuthError::MissingSubject | AuthError::Malformed(_)),
            "{err:?}"
        );
    }
    assert_eq!(
        verifier.verify(&with(json!({"sub": ""}))).await,
        Err(AuthError::MissingSubject)
    );
    // A single-string groups claim; a malformed one.
    let p = verifier
        .verify(&with(json!({"groups": "dba"})))
        .await
        .unwrap();
    assert_eq!(p.groups, vec!["dba"]);
    assert_eq!(
        verifier
            .verify(&with(json!({"groups": ["a", 1]})))
            .await
            .unwrap_err()
            .reason_code(),
        "malformed"
    );
}

#[tokio::test]
async fn local_tokens_from_another_key_or_when_disabled_are_rejected() {
    let dir = TempDir::new();
    let cfg = config(dir.path(), true, &[]);
    let verifier = Verifier::from_config(&cfg).unwrap();

    // Another Gatehouse's local issuer (different key, same issuer name).
    let other_dir = TempDir::new();
    let other = LocalIssuer::load_or_create(other_dir.path()).unwrap();
    let token = other
        .issue("mallory", &[], Duration::from_secs(60))
        .unwrap();
    assert_eq!(
        verifier.verify(&token).await.unwrap_err().reason_code(),
        "unknown_kid"
    );
    // Same, with the kid removed so that the signature itself is checked.
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    parts[0] = b64(&json!({"alg": "EdDSA", "typ": "JWT"}));
    let resigned = {
        let msg = format!("{}.{}", parts[0], parts[1]);
        let sig =
            jsonwebtoken::crypto::sign(msg.as_bytes(), other.encoding_key(), Algorithm::EdDSA)
                .unwrap();
        format!("{msg}.{sig}")
    };
    assert_eq!(
        verifier.verify(&resigned).await,
        Err(AuthError::BadSignature)
    );

    // local_issuer = false: local tokens are from an unknown issuer, and no key file is made.
    let off = TempDir::new();
    let cfg_off = config(off.path(), false, &[]);
    let v_off = Verifier::from_config(&cfg_off).unwrap();
    assert!(!cfg_off.data_dir.join("issuer-ed25519.pem").exists());
    assert_eq!(v_off.verify(&token).await, Err(AuthError::UnknownIssuer));
}

// ---------------------------------------------------------------------------------------------
// OIDC via JWKS
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn rs256_and_es256_via_jwks_are_accepted_and_keys_cached() {
    let k = keys();
    let server = JwksServer::start(vec![k.rsa1.jwk("rsa-1"), k.ec.jwk("ec-1")]).await;
    let dir = TempDir::new();
    let verifier = oidc_verifier(&server, &dir).await;
    assert_eq!(server.hits(), 0, "no fetch before the first token");

    let rs = sign(
        &k.rsa1.enc,
        Algorithm::RS256,
        Some("rsa-1"),
        &claims(ISS, AUD),
    );
    let p = verifier.verify(&rs).await.unwrap();
    assert_eq!(p.subject, "fraud-bot");
    assert_eq!(p.groups, vec!["fraud-bots", "readers"]);
    assert_eq!(p.issuer, ISS);

    let es = sign(&k.ec.enc, Algorithm::ES256, Some("ec-1"), &claims(ISS, AUD));
    assert_eq!(verifier.verify(&es).await.unwrap().subject, "fraud-bot");

    // PS256 with the RSA key (its JWK states no alg) also verifies.
    let ps = sign(
        &k.rsa1.enc,
        Algorithm::PS256,
        Some("rsa-1"),
        &claims(ISS, AUD),
    );
    assert!(verifier.verify(&ps).await.is_ok());

    // The clone shares the cache.
    assert!(verifier.clone().verify(&rs).await.is_ok());
    assert_eq!(server.hits(), 1);

    // Wrong audience and expiry apply to OIDC tokens too.
    let bad_aud = sign(
        &k.rsa1.enc,
        Algorithm::RS256,
        Some("rsa-1"),
        &claims(ISS, "gatehouse"),
    );
    assert_eq!(
        verifier.verify(&bad_aud).await,
        Err(AuthError::WrongAudience {
            expected: AUD.into()
        })
    );
    let mut c = claims(ISS, AUD);
    c["exp"] = json!(now() - 3600);
    let expired = sign(&k.ec.enc, Algorithm::ES256, Some("ec-1"), &c);
    assert_eq!(verifier.verify(&expired).await, Err(AuthError::Expired));
}

#[tokio::test]
async fn unknown_issuer_is_rejected_without_fetching() {
    let k = keys();
    let server = JwksServer::start(vec![k.rsa1.jwk("rsa-1")]).await;
    let dir = TempDir::new();
    let verifier = oidc_verifier(&server, &dir).await;
    for iss in ["https://evil.example", "https://idp.example.test/", ""] {
        let t = sign(
            &k.rsa1.enc,
            Algorithm::RS256,
            Some("rsa-1"),
            &claims(iss, AUD),
        );
        let err = verifier.verify(&t).await.unwrap_err();
        assert_eq!(err, AuthError::UnknownIssuer);
        assert_eq!(err.reason_code(), "unknown_issuer");
        assert!(!err.to_string().contains("evil"));
    }
    assert_eq!(server.hits(), 0);
}

#[tokio::test]
async fn alg_none_is_rejected_before_keys_are_touched() {
    let k = keys();
    let server = JwksServer::start(vec![k.rsa1.jwk("rsa-1")]).await;
    let dir = TempDir::new();
    let cfg = config(dir.path(), true, &[oidc(server.url())]);
    let verifier = Verifier::from_config(&cfg).unwrap();
    for iss in [ISS, "gatehouse-local"] {
        let aud = if iss == ISS { AUD } else { "gatehouse" };
        for alg in ["none", "None", "NONE"] {
            let header = b64(&json!({"alg": alg, "typ": "JWT", "kid": "rsa-1"}));
            let payload = b64(&claims(iss, aud));
            for sig in ["", "AAAA"] {
                let t = format!("{header}.{payload}.{sig}");
                let err = verifier.verify(&t).await.unwrap_err();
                assert_eq!(err.reason_code(), "alg_not_allowed", "{alg} {sig}");
            }
        }
    }
    assert_eq!(server.hits(), 0);
}

#[tokio::test]
async fn hs256_signed_with_the_rsa_public_key_is_rejected() {
    let k = keys();
    // The JWKS also carries an HMAC ("oct") key: it must never be used.
    let oct = json!({"kty": "oct", "kid": "hmac-1", "alg": "HS256",
                     "k": URL_SAFE_NO_PAD.encode(&k.rsa1.public_pem)});
    let server = JwksServer::start(vec![k.rsa1.jwk("rsa-1"), oct]).await;
    let dir = TempDir::new();
    let verifier = oidc_verifier(&server, &dir).await;
    let secret = EncodingKey::from_secret(&k.rsa1.public_pem);
    for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
        for kid in [Some("rsa-1"), Some("hmac-1"), None] {
            let t = sign(&secret, alg, kid, &claims(ISS, AUD));
            let err = verifier.verify(&t).await.unwrap_err();
            assert_eq!(
                err,
                AuthError::AlgNotAllowed {
                    alg: Some(match alg {
                        Algorithm::HS256 => "HS256",
                        Algorithm::HS384 => "HS384",
                        _ => "HS512",
                    })
                }
            );
        }
    }
    assert_eq!(server.hits(), 0);

    // And the oct key is dropped when the set is parsed.
    let body = json!({"keys": [k.rsa1.jwk("rsa-1"),
        {"kty": "oct", "kid": "h", "k": "c2VjcmV0"},
        {"kty": "oct", "kid": "h2", "alg": "RS256", "k": "c2VjcmV0"}]});
    let (set, skipped) = KeySet::parse(body.to_string().as_bytes()).unwrap();
    assert_eq!((set.keys.len(), skipped), (1, 2));
}

#[tokio::test]
async fn key_of_the_wrong_type_for_the_algorithm_is_rejected() {
    let k = keys();
    let mut rs_only = k.rsa2.jwk("rsa-rs256");
    rs_only["alg"] = json!("RS256");
    let server = JwksServer::start(vec![k.rsa1.jwk("rsa-1"), k.ec.jwk("ec-1"), rs_only]).await;
    let dir = TempDir::new();
    let verifier = oidc_verifier(&server, &dir).await;
    // ES256 token naming an RSA key, RS256 token naming an EC key.
    let t = sign(
        &k.ec.enc,
        Algorithm::ES256,
        Some("rsa-1"),
        &claims(ISS, AUD),
    );
    assert_eq!(
        verifier.verify(&t).await.unwrap_err().reason_code(),
        "key_alg_mismatch"
    );
    let t = sign(
        &k.rsa1.enc,
        Algorithm::RS256,
        Some("ec-1"),
        &claims(ISS, AUD),
    );
    assert_eq!(
        verifier.verify(&t).await.unwrap_err().reason_code(),
        "key_alg_mismatch"
    );
    // A JWK that states alg RS256 cannot verify PS256.
    let t = sign(
        &k.rsa2.enc,
        Algorithm::PS256,
        Some("rsa-rs256"),
        &claims(ISS, AUD),
    );
    assert_eq!(
        verifier.verify(&t).await.unwrap_err().reason_code(),
        "key_alg_mismatch"
    );
    let t = sign(
        &k.rsa2.enc,
        Algorithm::RS256,
        Some("rsa-rs256"),
        &claims(ISS, AUD),
    );
    assert!(verifier.verify(&t).await.is_ok());
}

#[tokio::test]
async fn unknown_kid_refetches_at_most_once_per_interval() {
    let k = keys();
    let server = JwksServer::start(vec![k.rsa1.jwk("rsa-1")]).await;
    let dir = TempDir::new();
    let verifier = oidc_verifier(&server, &dir).await;
    let good = sign(
        &k.rsa1.enc,
        Algorithm::RS256,
        Some("rsa-1"),
        &claims(ISS, AUD),
    );
    assert!(verifier.verify(&good).await.is_ok());
    assert_eq!(server.hits(), 1);

    let t = sign(
        &k.rsa1.enc,
        Algorithm::RS256,
        Some("random-1"),
        &claims(ISS, AUD),
    );
    let err = verifier.verify(&t).await.unwrap_err();
    assert_eq!(err, AuthError::UnknownKid { issuer: ISS.into() });
    assert_eq!(err.reason_code(), "unknown_kid");
    assert_eq!(server.hits(), 2, "an unknown kid triggers one refetch");

    // A spray of further unknown kids within 10 s causes no more fetches, even concurrently.
    let mut tasks = Vec::new();
    for i in 0..20 {
        let v = verifier.clone();
        let t = sign(
            &k.rsa1.enc,
            Algorithm::RS256,
            Some(&format!("random-{}", i + 2)),
            &claims(ISS, AUD),
        );
        tasks.push(tokio::spawn(async move { v.verify(&t).await }));
    }
    for task in tasks {
        assert_eq!(
            task.await.unwrap().unwrap_err().reason_code(),
            "unknown_kid"
        );
    }
    assert_eq!(server.hits(), 2);
    // Known keys keep working without fetching.
    assert!(verifier.verify(&good).await.is_ok());
    assert_eq!(server.hits(), 2);

    // When the very first token has an unknown kid, the initial load is the only fetch.
    let server = JwksServer::start(vec![k.rsa1.jwk("rsa-1")]).await;
    let dir = TempDir::new();
    let verifier = oidc_verifier(&server, &dir).await;
    let t = sign(
        &k.rsa1.enc,
        Algorithm::RS256,
        Some("nope"),
        &claims(ISS, AUD),
    );
    assert_eq!(
        verifier.verify(&t).await.unwrap_err().reason_code(),
        "unknown_kid"
    );
    assert_eq!(server.hits(), 1);
}

#[tokio::test]
async fn key_rotation_is_picked_up_by_refetch() {
    let k = keys();
    let server = JwksServer::start(vec![k.rsa1.jwk("rsa-1")]).await;
    let dir = TempDir::new();
    let verifier = oidc_verifier(&server, &dir).await;
    let old = sign(
        &k.rsa1.enc,
        Algorithm::RS256,
        Some("rsa-1"),
        &claims(ISS, AUD),
    );
    assert!(verifier.verify(&old).await.is_ok());
    assert_eq!(server.hits(), 1);

    // The IdP rotates: a new key appears.
    server.set_keys(vec![k.rsa1.jwk("rsa-1"), k.rsa2.jwk("rsa-2")]);
    let new = sign(
        &k.rsa2.enc,
        Algorithm::RS256,
        Some("rsa-2"),
        &claims(ISS, AUD),
    );
    let p = verifier.verify(&new).await.unwrap();
    assert_eq!(p.subject, "fraud-bot");
    assert_eq!(server.hits(), 2);
    assert!(verifier.verify(&old).await.is_ok());
    assert!(verifier.verify(&new).await.is_ok());
    assert_eq!(server.hits(), 2);
}

#[tokio::test]
async fn tampered_tokens_fail_signature_check() {
    let k = keys();
    let server = JwksServer::start(vec![k.rsa1.jwk("rsa-1"), k.ec.jwk("ec-1")]).await;
    let dir = TempDir::new();
    let cfg = config(dir.path(), true, &[oidc(server.url())]);
    let verifier = Verifier::from_config(&cfg).unwrap();
    let local = LocalIssuer::load_or_create(&cfg.data_dir).unwrap();

    let tokens = [
        sign(
            &k.rsa1.enc,
            Algorithm::RS256,
            Some("rsa-1"),
            &claims(ISS, AUD),
        ),
        sign(&k.ec.enc, Algorithm::ES256, Some("ec-1"), &claims(ISS, AUD)),
        local
            .issue("fraud-bot", &["fraud-bots".into()], Duration::from_secs(60))
            .unwrap(),
    ];
    for token in &tokens {
        assert!(verifier.verify(token).await.is_ok());
        let parts: Vec<&str> = token.split('.').collect();
        // Escalate groups in the payload, keep header and signature.
        let mut c = segment(token, 1);
        c["groups"] = json!(["dba", "gatehouse-admins"]);
        let forged = format!("{}.{}.{}", parts[0], b64(&c), parts[2]);
        let err = verifier.verify(&forged).await.unwrap_err();
        assert_eq!(err, AuthError::BadSignature);
        assert_eq!(err.reason_code(), "bad_signature");
        assert!(!err.to_string().contains(parts[2]));
        // Flip a signature character.
        let mut sig: Vec<u8> = parts[2].as_bytes().to_vec();
        sig[5] = if sig[5] == b'A' { b'B' } else { b'A' };
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            parts[1],
            String::from_utf8(sig).unwrap()
        );
        assert_eq!(verifier.verify(&forged).await, Err(AuthError::BadSignature));
        // Signature removed.
        let stripped = format!("{}.{}.", parts[0], parts[1]);
        assert!(verifier.verify(&stripped).await.is_err());
    }
}

#[tokio::test]
async fn custom_groups_claim() {
    let k = keys();
    let server = JwksServer::start(vec![k.rsa1.jwk("rsa-1")]).await;
    let dir = TempDir::new();
    let cfg = config(
        dir.path(),
        false,
        &[
            Issuer {
                issuer: ISS,
                url: server.url(),
                extra: "groups_claim = 'roles'",
            },
            Issuer {
                issuer: "https://keycloak.test/realms/x",
                url: server.url(),
                extra: "groups_claim = 'realm_access.roles'",
            },
            Issuer {
                issuer: "https://auth0.test/",
                url: server.url(),
                extra: "groups_claim = 'https://gatehouse.example/groups'",
            },
        ],
    );
    let verifier = Verifier::from_config(&cfg).unwrap();
    let tok = |iss: &str, patch: Value| {
        let mut c = claims(iss, AUD);
        for (key, v) in patch.as_object().unwrap() {
            c[key] = v.clone();
        }
        sign(&k.rsa1.enc, Algorithm::RS256, Some("rsa-1"), &c)
    };
    let groups = |r: Result<Principal, AuthError>| r.unwrap().groups;

    // `roles` is used, `groups` ignored.
    assert_eq!(
        groups(
            verifier
                .verify(&tok(ISS, json!({"roles": ["a", "b"]})))
                .await
        ),
        vec!["a", "b"]
    );
    assert_eq!(
        groups(verifier.verify(&tok(ISS, json!({"roles": "single"}))).await),
        vec!["single"]
    );
    assert!(groups(verifier.verify(&tok(ISS, json!({}))).await).is_empty());
    assert_eq!(
        verifier
            .verify(&tok(ISS, json!({"roles": {"x": 1}})))
            .await
            .unwrap_err()
            .reason_code(),
        "malformed"
    );
    // Nested path (Keycloak) and a namespaced claim with dots (Auth0).
    let kc = "https://keycloak.test/realms/x";
    assert_eq!(
        groups(
            verifier
                .verify(&tok(kc, json!({"realm_access": {"roles": ["dba"]}})))
                .await
        ),
        vec!["dba"]
    );
    assert_eq!(
        groups(
            verifier
                .verify(&tok(
                    "https://auth0.test/",
                    json!({"https://gatehouse.example/groups": ["ops"]})
                ))
                .await
        ),
        vec!["ops"]
    );
}

#[tokio::test]
async fn issuer_algorithm_allow_list_is_enforced() {
    let k = keys();
    let server = JwksServer::start(vec![k.rsa1.jwk("rsa-1"), k.ec.jwk("ec-1")]).await;
    let dir = TempDir::new();
    let cfg = config(
        dir.path(),
        true,
        &[Issuer {
            issuer: ISS,
            url: server.url(),
            extra: "algorithms = ['ES256']",
        }],
    );
    let verifier = Verifier::from_config(&cfg).unwrap();
    let rs = sign(
        &k.rsa1.enc,
        Algorithm::RS256,
        Some("rsa-1"),
        &claims(ISS, AUD),
    );
    assert_eq!(
        verifier.verify(&rs).await,
        Err(AuthError::AlgNotAllowed { alg: Some("RS256") })
    );
    assert_eq!(server.hits(), 0);
    let es = sign(&k.ec.enc, Algorithm::ES256, Some("ec-1"), &claims(ISS, AUD));
    assert!(verifier.verify(&es).await.is_ok());

    // The local issuer accepts EdDSA only.
    let local_rs = sign(
        &k.rsa1.enc,
        Algorithm::RS256,
        None,
        &claims("gatehouse-local", "gatehouse"),
    );
    assert_eq!(
        verifier.verify(&local_rs).await.unwrap_err().reason_code(),
        "alg_not_allowed"
    );
}

#[tokio::test]
async fn token_without_kid_needs_exactly_one_key_for_its_alg() {
    let k = keys();
    let server = JwksServer::start(vec![k.rsa1.jwk("rsa-1"), k.ec.jwk("ec-1")]).await;
    let dir = TempDir::new();
    let verifier = oidc_verifier(&server, &dir).await;
    let t = sign(&k.rsa1.enc, Algorithm::RS256, None, &claims(ISS, AUD));
    assert!(verifier.verify(&t).await.is_ok());
    let t = sign(&k.ec.enc, Algorithm::ES256, None, &claims(ISS, AUD));
    assert!(verifier.verify(&t).await.is_ok());

    let server2 = JwksServer::start(vec![k.rsa1.jwk("rsa-1"), k.rsa2.jwk("rsa-2")]).await;
    let dir2 = TempDir::new();
    let verifier2 = oidc_verifier(&server2, &dir2).await;
    let t = sign(&k.rsa1.enc, Algorithm::RS256, None, &claims(ISS, AUD));
    let err = verifier2.verify(&t).await.unwrap_err();
    assert_eq!(err, AuthError::NoMatchingKey { issuer: ISS.into() });
    assert_eq!(err.reason_code(), "no_matching_key");
}

#[tokio::test]
async fn jwks_unavailable_does_not_break_startup() {
    let k = keys();
    // A port with nothing listening.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let dir = TempDir::new();
    let cfg = config(
        dir.path(),
        true,
        &[oidc(format!("http://127.0.0.1:{port}/jwks"))],
    );
    let verifier = Verifier::from_config(&cfg).unwrap();
    let t = sign(
        &k.rsa1.enc,
        Algorithm::RS256,
        Some("rsa-1"),
        &claims(ISS, AUD),
    );
    for _ in 0..2 {
        let err = verifier.verify(&t).await.unwrap_err();
        assert_eq!(err, AuthError::JwksUnavailable { issuer: ISS.into() });
        assert_eq!(err.reason_code(), "jwks_unavailable");
    }
    // The local issuer still works.
    let local = LocalIssuer::load_or_create(&cfg.data_dir).unwrap();
    let lt = local.issue("x", &[], Duration::from_secs(60)).unwrap();
    assert!(verifier.verify(&lt).await.is_ok());

    // A server answering garbage is "unavailable" too, and retries are rate limited.
    let server = JwksServer::start(vec![]).await;
    server.set_raw("<html>not json</html>");
    let dir2 = TempDir::new();
    let v2 = oidc_verifier(&server, &dir2).await;
    for _ in 0..3 {
        assert_eq!(
            v2.verify(&t).await.unwrap_err().reason_code(),
            "jwks_unavailable"
        );
    }
    assert_eq!(server.hits(), 1);
}

#[tokio::test]
async fn malformed_tokens_are_rejected_without_panicking() {
    let dir = TempDir::new();
    let cfg = config(dir.path(), true, &[]);
    let verifier = Verifier::from_config(&cfg).unwrap();
    let local = LocalIssuer::load_or_create(&cfg.data_dir).unwrap();
    let good = local.issue("x", &[], Duration::from_secs(60)).unwrap();
    let parts: Vec<&str> = good.split('.').collect();
    let huge = format!("{}.{}.{}", parts[0], "A".repeat(20_000), parts[2]);
    let cases: Vec<String> = vec![
        String::new(),
        ".".into(),
        "..".into(),
        "a.b.c".into(),
        "a.b".into(),
        "Bearer abc".into(),
        format!("{}.{}", parts[0], parts[1]),
        format!("{good}.extra.parts"),
        format!("{}..{}", parts[0], parts[2]),
        format!("!!!.{}.{}", parts[1], parts[2]),
        format!("{}.{}.{}", b64(&json!([1, 2])), parts[1], parts[2]),
        format!("{}.{}.{}", b64(&json!({"typ": "JWT"})), parts[1], parts[2]),
        format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode([0xff, 0xfe]),
            parts[1],
            parts[2]
        ),
        format!("{}.{}.{}", parts[0], b64(&json!("str")), parts[2]),
        format!("{}.{}.{}", parts[0], b64(&json!({"sub": "x"})), parts[2]),
        format!("{}.{}.{}", parts[0], b64(&json!({"iss": 5})), parts[2]),
        format!("{}.{}.{}", parts[0], "eyJpc3Mi", parts[2]),
        format!(
            "{}.{}.{}",
            b64(&json!({"alg": "EdDSA", "crit": ["exp"], "exp": 1})),
            parts[1],
            parts[2]
        ),
        format!(
            "{}.{}.{}",
            b64(&json!({"alg": "EdDSA", "kid": 5})),
            parts[1],
            parts[2]
        ),
        format!("{}=.{}.{}", parts[0], parts[1], parts[2]),
        huge,
        "é.é.é".into(),
    ];
    for case in &cases {
        let err = verifier.verify(case).await.unwrap_err();
        // Never echo the token back.
        if case.len() > 4 {
            assert!(!err.to_string().contains(case.as_str()), "{err}");
        }
    }
    assert_eq!(
        verifier.verify(&cases[20]).await.unwrap_err().reason_code(),
        "malformed"
    );

    // Random garbage made of base64url characters and dots.
    let alphabet = b"ABCxyz019-_.=+/ ";
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..2000 {
        let len = (seed % 200) as usize;
        let mut s = String::with_capacity(len);
        for _ in 0..len {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            s.push(alphabet[(seed % alphabet.len() as u64) as usize] as char);
        }
        assert!(verifier.verify(&s).await.is_err());
    }
}

#[tokio::test]
async fn debug_output_and_errors_reveal_no_key_material() {
    let k = keys();
    let server = JwksServer::start(vec![k.rsa1.jwk("rsa-1")]).await;
    let dir = TempDir::new();
    let cfg = config(dir.path(), true, &[oidc(server.url())]);
    let verifier = Verifier::from_config(&cfg).unwrap();
    let rs = sign(
        &k.rsa1.enc,
        Algorithm::RS256,
        Some("rsa-1"),
        &claims(ISS, AUD),
    );
    verifier.verify(&rs).await.unwrap(); // keys are now cached
    let local = LocalIssuer::load_or_create(&cfg.data_dir).unwrap();

    let debug = format!("{verifier:?} {local:?} {verifier:#?} {local:#?}");
    assert!(debug.contains(local.key_id()), "{debug}");
    assert!(debug.contains(ISS));
    let pem = std::fs::read_to_string(local.key_path()).unwrap();
    let body: Vec<&str> = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    for line in &body {
        assert!(!debug.contains(line), "{debug}");
    }
    // The raw 32-byte seed follows the 16-byte PKCS#8 prefix.
    let der = base64::engine::general_purpose::STANDARD
        .decode(body.concat())
        .unwrap();
    let seed = &der[16..48];
    assert!(!debug.contains(&URL_SAFE_NO_PAD.encode(seed)));
    assert!(!debug.contains(&format!("{seed:?}")));
    assert!(!debug.contains(&seed.iter().map(|b| format!("{b:02x}")).collect::<String>()));
    let n = k.rsa1.jwk["n"].as_str().unwrap();
    assert!(!debug.contains(&n[..40]));
    assert!(!debug.to_ascii_lowercase().contains("private"));

    // Principal and errors don't carry tokens or claim values other than config names.
    let err = verifier
        .verify(&rs.replace("eyJ", "eyK"))
        .await
        .unwrap_err();
    assert!(!err.to_string().contains("fraud-bot"));
}

#[tokio::test]
async fn https_jwks_trusts_only_the_configured_ca_file() {
    let k = keys();
    let dir = TempDir::new();
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();

    let (ca_pem, leaf_der, leaf_key) = test_ca("127.0.0.1");
    let (other_ca_pem, _, _) = test_ca("127.0.0.1");
    let server_cfg = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf_der],
            rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.into()),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_cfg));
    let server = JwksServer::start_with(vec![k.rsa1.jwk("rsa-1")], Some(acceptor)).await;
    assert!(server.url().starts_with("https://"));

    let ca_path = dir.path().join("ca.pem");
    std::fs::write(&ca_path, ca_pem).unwrap();
    let other_path = dir.path().join("other-ca.pem");
    std::fs::write(&other_path, other_ca_pem).unwrap();

    let rs = sign(
        &k.rsa1.enc,
        Algorithm::RS256,
        Some("rsa-1"),
        &claims(ISS, AUD),
    );
    let trusted = config(
        dir.path(),
        false,
        &[Issuer {
            issuer: ISS,
            url: server.url(),
            extra: "ca_file = 'ca.pem'",
        }],
    );
    let verifier = Verifier::from_config(&trusted).unwrap();
    assert_eq!(verifier.verify(&rs).await.unwrap().subject, "fraud-bot");
    assert_eq!(server.hits(), 1);

    // Another CA: the TLS handshake fails, so the keys are unavailable.
    let untrusted = config(
        dir.path(),
        false,
        &[Issuer {
            issuer: ISS,
            url: server.url(),
            extra: "ca_file = 'other-ca.pem'",
        }],
    );
    let verifier = Verifier::from_config(&untrusted).unwrap();
    assert_eq!(
        verifier.verify(&rs).await.unwrap_err().reason_code(),
        "jwks_unavailable"
    );
    assert_eq!(server.hits(), 1);

    // Without ca_file the platform roots are used, which do not include the test CA.
    // (On a host without system CA certificates, building that client is itself an error.)
    let platform = config(dir.path(), false, &[oidc(server.url())]);
    match Verifier::from_config(&platform) {
        Ok(verifier) => assert_eq!(
            verifier.verify(&rs).await.unwrap_err().reason_code(),
            "jwks_unavailable"
        ),
        Err(e) => assert!(matches!(e, IdentityError::HttpClient { .. }), "{e}"),
    }

    // A bad ca_file is a setup error.
    std::fs::write(dir.path().join("empty.pem"), "").unwrap();
    let bad = config(
        dir.path(),
        false,
        &[Issuer {
            issuer: ISS,
            url: server.url(),
            extra: "ca_file = 'empty.pem'",
        }],
    );
    assert!(matches!(
        Verifier::from_config(&bad),
        Err(IdentityError::CaFile { .. })
    ));
}

/// A fresh CA and a leaf certificate for `host` signed by it: (CA PEM, leaf DER, leaf key DER).
fn test_ca(host: &str) -> (String, rustls::pki_types::CertificateDer<'static>, Vec<u8>) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "gatehouse test CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec![host.to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    (ca_cert.pem(), leaf.der().clone(), leaf_key.serialize_der())
}

#[test]
fn identity_config_conflicts_are_setup_errors() {
    let dir = TempDir::new();
    let url = "http://127.0.0.1:1/jwks".to_owned();
    let cfg = config(
        dir.path(),
        false,
        &[
            Issuer {
                issuer: ISS,
                url: url.clone(),
                extra: "",
            },
            Issuer {
                issuer: ISS,
                url: url.clone(),
                extra: "",
            },
        ],
    );
    assert!(matches!(
        Verifier::from_config(&cfg),
        Err(IdentityError::Config(_))
    ));
    let cfg = config(
        dir.path(),
        true,
        &[Issuer {
            issuer: "gatehouse-local",
            url,
            extra: "",
        }],
    );
    assert!(matches!(
        Verifier::from_config(&cfg),
        Err(IdentityError::Config(_))
    ));
}

#[test]
fn reason_codes_are_stable() {
    let issuer = || "i".to_owned();
    let cases = [
        (AuthError::Malformed("x"), "malformed"),
        (AuthError::AlgNotAllowed { alg: None }, "alg_not_allowed"),
        (AuthError::UnknownIssuer, "unknown_issuer"),
        (
            AuthError::WrongAudience { expected: issuer() },
            "wrong_audience",
        ),
        (AuthError::Expired, "expired"),
        (AuthError::NotYetValid, "not_yet_valid"),
        (AuthError::MissingClaim("exp"), "missing_claim"),
        (AuthError::MissingSubject, "missing_subject"),
        (AuthError::BadSignature, "bad_signature"),
        (AuthError::UnknownKid { issuer: issuer() }, "unknown_kid"),
        (
            AuthError::NoMatchingKey { issuer: issuer() },
            "no_matching_key",
        ),
        (
            AuthError::KeyAlgMismatch { issuer: issuer() },
            "key_alg_mismatch",
        ),
        (
            AuthError::JwksUnavailable { issuer: issuer() },
            "jwks_unavailable",
        ),
    ];
    for (err, code) in cases {
        assert_eq!(err.reason_code(), code);
        assert!(!err.to_string().is_empty());
    }
    assert_eq!(
        AuthError::AlgNotAllowed { alg: Some("HS256") }.to_string(),
        "token signature algorithm HS256 is not allowed"
    );
}

#[test]
fn jwks_parsing_skips_unusable_keys() {
    let k = keys();
    let mut enc_key = k.rsa1.jwk("enc");
    enc_key["use"] = json!("enc");
    let mut wrong_alg = k.ec.jwk("ec-rs");
    wrong_alg["alg"] = json!("RS256");
    let mut p384_claimed = k.ec.jwk("ec-384");
    p384_claimed["crv"] = json!("P-384");
    let body = json!({"keys": [
        k.rsa1.jwk("ok-rsa"),
        k.ec.jwk("ok-ec"),
        enc_key,
        wrong_alg,
        p384_claimed,
        {"kty": "RSA", "kid": "small", "n": "AQAB", "e": "AQAB"},
        {"kty": "OKP", "crv": "X25519", "kid": "x", "x": "AAAA"},
        {"kty": "EC", "crv": "P-256", "kid": "short", "x": "AAAA", "y": "AAAA"},
        {"kty": "weird"},
        "not an object",
    ]});
    let (set, skipped) = KeySet::parse(body.to_string().as_bytes()).unwrap();
    let kids: Vec<_> = set.keys.iter().map(|k| k.kid.clone().unwrap()).collect();
    assert_eq!(kids, vec!["ok-rsa", "ok-ec"]);
    assert_eq!(skipped, 8);
    assert!(KeySet::parse(b"[]").is_err());
    assert!(KeySet::parse(b"{\"keys\": 5}").is_err());
}
