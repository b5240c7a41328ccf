//! One configured OIDC issuer: its validation settings and its lazily fetched, cached JWKS.
//!
//! Fetch policy:
//! - The JWKS is fetched on the first token for the issuer (startup never depends on the IdP),
//!   and again when the cached copy is older than [`JWKS_MAX_AGE`]; a failed refresh keeps the
//!   previous keys. Such loads happen at most once per [`REFETCH_INTERVAL`].
//! - A token whose `kid` is unknown triggers a refetch (key rotation), also at most once per
//!   [`REFETCH_INTERVAL`] per issuer, so spraying random `kid`s cannot hammer the IdP.
//! - Fetches are single-flight (a `tokio::sync::Mutex`); the key cache itself sits behind a
//!   `std::sync::Mutex` that is only held to clone an `Arc` in or out, never across an await.
//! - HTTPS with the platform roots, or only the `ca_file` bundle when set; plain HTTP only for
//!   loopback URLs (checked by the config). No redirects, 5 s timeout, body capped at 512 KiB.

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use jsonwebtoken::Algorithm;

use super::jwks::{KeySet, Selection};
use super::token::{self, Unverified, allowed_algorithm};
use super::{ALLOWED_ALGORITHMS, AuthError, HTTP_TIMEOUT, IdentityError, Principal};
use crate::config::OidcIssuer;

/// Minimum time between two JWKS fetches of the same kind for one issuer.
pub const REFETCH_INTERVAL: Duration = Duration::from_secs(10);
/// Age after which cached keys are refreshed on the next token.
pub const JWKS_MAX_AGE: Duration = Duration::from_secs(15 * 60);
/// Largest JWKS document accepted.
const MAX_JWKS_BYTES: usize = 512 * 1024;

#[derive(Default)]
struct KeyState {
    /// `None` until the first successful fetch.
    keys: Option<Arc<KeySet>>,
    /// Bumped on every successful fetch.
    generation: u64,
    fetched_at: Option<Instant>,
    /// Last initial/periodic load attempt (success or not).
    last_load: Option<Instant>,
    /// Last refetch caused by an unknown `kid`.
    last_kid_refetch: Option<Instant>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Reason {
    Load,
    UnknownKid,
}

struct Snapshot {
    keys: Option<Arc<KeySet>>,
    generation: u64,
    stale: bool,
}

pub(crate) struct OidcProvider {
    pub(crate) issuer: String,
    audience: String,
    groups_claim: String,
    jwks_url: String,
    algorithms: Vec<Algorithm>,
    client: reqwest::Client,
    state: Mutex<KeyState>,
    fetch_lock: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for OidcProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcIssuer")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("jwks_url", &self.jwks_url)
            .field("groups_claim", &self.groups_claim)
            .finish_non_exhaustive()
    }
}

fn is_loopback_http(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = match host.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
        _ => host,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn read_ca_bundle(issuer: &str, path: &Path) -> Result<Vec<reqwest::Certificate>, IdentityError> {
    let problem = |problem: String| IdentityError::CaFile {
        issuer: issuer.to_owned(),
        path: path.to_owned(),
        problem,
    };
    let pem = std::fs::read(path).map_err(|e| problem(e.to_string()))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|_| problem("is not a PEM certificate bundle".into()))?;
    if certs.is_empty() {
        return Err(problem("contains no certificate".into()));
    }
    Ok(certs)
}

impl OidcProvider {
    pub(crate) fn new(cfg: &OidcIssuer) -> Result<Self, IdentityError> {
        let names: Vec<&str> = if cfg.algorithms.is_empty() {
            ALLOWED_ALGORITHMS.to_vec()
        } else {
            cfg.algorithms.iter().map(String::as_str).collect()
        };
        let mut algorithms = Vec::with_capacity(names.len());
        for name in names {
            let (alg, _) = allowed_algorithm(name).ok_or_else(|| {
                IdentityError::Config(format!(
                    "issuer {:?}: algorithm {name:?} is not allowed (allowed: {})",
                    cfg.issuer,
                    ALLOWED_ALGORITHMS.join(", ")
                ))
            })?;
            algorithms.push(alg);
        }

        let loopback_http = is_loopback_http(&cfg.jwks_url);
        if !loopback_http && !cfg.jwks_url.starts_with("https://") {
            return Err(IdentityError::Config(format!(
                "issuer {:?}: jwks_url must be https:// (http:// only on loopback)",
                cfg.issuer
            )));
        }
        let mut builder = reqwest::Client::builder()
            .timeout(HTTP_TIMEOUT)
            .connect_timeout(HTTP_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("gatehouse/", env!("CARGO_PKG_VERSION")));
        if let Some(ca) = &cfg.ca_file {
            builder = builder.tls_certs_only(read_ca_bundle(&cfg.issuer, ca)?);
        } else if loopback_http {
            // No TLS is used; do not depend on the platform trust store being present.
            builder = builder.tls_certs_only(std::iter::empty());
        }
        if loopback_http {
            builder = builder.no_proxy();
        } else {
            builder = builder.https_only(true);
        }
        let client = builder
            .build()
            .map_err(|source| IdentityError::HttpClient {
                issuer: cfg.issuer.clone(),
                source,
            })?;

        Ok(Self {
            issuer: cfg.issuer.clone(),
            audience: cfg.audience.clone(),
            groups_claim: cfg.groups_claim.clone(),
            jwks_url: cfg.jwks_url.clone(),
            algorithms,
            client,
            state: Mutex::new(KeyState::default()),
            fetch_lock: tokio::sync::Mutex::new(()),
        })
    }

    pub(crate) async fn verify(
        &self,
        token: &str,
        peek: &Unverified,
    ) -> Result<Principal, AuthError> {
        if !self.algorithms.contains(&peek.alg) {
            return Err(AuthError::AlgNotAllowed {
                alg: Some(peek.alg_name),
            });
        }
        let key = self.key_for(peek.kid.as_deref(), peek.alg).await?;
        let claims = token::verify_signed(token, &key, peek.alg, &self.issuer, &self.audience)?;
        token::principal(&claims, &self.groups_claim, &self.issuer)
    }

    fn lock_state(&self) -> MutexGuard<'_, KeyState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn snapshot(&self) -> Snapshot {
        let st = self.lock_state();
        Snapshot {
            keys: st.keys.clone(),
            generation: st.generation,
            stale: st.fetched_at.is_none_or(|t| t.elapsed() >= JWKS_MAX_AGE),
        }
    }

    fn resolve(
        &self,
        keys: &KeySet,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Option<Result<jsonwebtoken::DecodingKey, AuthError>> {
        match keys.select(kid, alg) {
            Selection::Found(k) => Some(Ok(k)),
            Selection::Mismatch => Some(Err(AuthError::KeyAlgMismatch {
                issuer: self.issuer.clone(),
            })),
            Selection::Ambiguous => Some(Err(AuthError::NoMatchingKey {
                issuer: self.issuer.clone(),
            })),
            Selection::NotFound => None,
        }
    }

    async fn key_for(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<jsonwebtoken::DecodingKey, AuthError> {
        let mut snap = self.snapshot();
        let mut just_loaded = false;
        if snap.keys.is_none() || snap.stale {
            let before = snap.generation;
            self.refresh(Reason::Load, before, snap.keys.is_none())
                .await;
            snap = self.snapshot();
            just_loaded = snap.generation != before;
        }
        let Some(keys) = snap.keys else {
            return Err(AuthError::JwksUnavailable {
                issuer: self.issuer.clone(),
            });
        };
        if let Some(found) = self.resolve(&keys, kid, alg) {
            return found;
        }
        // Unknown kid: the IdP may have rotated its keys. Refetch (rate limited) and retry,
        // unless the keys were fetched for this very call.
        if !just_loaded {
            self.refresh(Reason::UnknownKid, snap.generation, true)
                .await;
        }
        let again = self.snapshot();
        if again.generation != snap.generation
            && let Some(keys) = again.keys
            && let Some(found) = self.resolve(&keys, kid, alg)
        {
            return found;
        }
        Err(match kid {
            Some(_) => AuthError::UnknownKid {
                issuer: self.issuer.clone(),
            },
            None => AuthError::NoMatchingKey {
                issuer: self.issuer.clone(),
            },
        })
    }

    /// Fetches the JWKS unless another task already did since `seen_generation` or the rate
    /// limit for `reason` forbids it. Failures are logged; callers look at the state afterwards.
    ///
    /// With `wait == false` (stale keys that can still be used), a fetch already in flight is
    /// not waited for.
    async fn refresh(&self, reason: Reason, seen_generation: u64, wait: bool) {
        let _flight = if wait {
            self.fetch_lock.lock().await
        } else {
            match self.fetch_lock.try_lock() {
                Ok(guard) => guard,
                Err(_) => return,
            }
        };
        {
            let mut st = self.lock_state();
            if st.generation != seen_generation {
                return;
            }
            let now = Instant::now();
            let last = match reason {
                Reason::Load => &mut st.last_load,
                Reason::UnknownKid => &mut st.last_kid_refetch,
            };
            if last.is_some_and(|t| now.duration_since(t) < REFETCH_INTERVAL) {
                return;
            }
            *last = Some(now);
        }
        match self.fetch().await {
            Ok((keys, skipped)) => {
                tracing::debug!(
                    issuer = %self.issuer,
                    keys = keys.keys.len(),
                    skipped,
                    "identity: fetched JWKS"
                );
                if keys.keys.is_empty() {
                    tracing::warn!(issuer = %self.issuer, "identity: JWKS has no usable signature key");
                }
                let mut st = self.lock_state();
                st.keys = Some(Arc::new(keys));
                st.generation = st.generation.wrapping_add(1);
                st.fetched_at = Some(Instant::now());
            }
            Err(error) => {
                tracing::warn!(issuer = %self.issuer, url = %self.jwks_url, %error, "identity: JWKS fetch failed");
            }
        }
    }

    async fn fetch(&self) -> Result<(KeySet, usize), String> {
        let mut response = self
            .client
            .get(&self.jwks_url)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("HTTP status {status}"));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
            if body.len().saturating_add(chunk.len()) > MAX_JWKS_BYTES {
                return Err(format!("JWKS larger than {MAX_JWKS_BYTES} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        KeySet::parse(&body).map_err(str::to_owned)
    }
}
