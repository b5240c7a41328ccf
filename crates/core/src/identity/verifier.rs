//! The entry point: picks the issuer of a token and verifies it.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use jsonwebtoken::Algorithm;

use super::local::LocalKey;
use super::oidc::OidcProvider;
use super::{AuthError, IdentityError, LocalIssuer, Principal, token};
use crate::config::Config;

/// Verifies tokens of the local issuer and of every configured OIDC issuer. Cheap to clone.
#[derive(Clone)]
pub struct Verifier {
    inner: Arc<Inner>,
}

struct Inner {
    local: Option<LocalKey>,
    oidc: Vec<OidcProvider>,
}

impl fmt::Debug for Verifier {
    // By hand: only identifiers, never key material.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field(
                "local_issuer_kid",
                &self.inner.local.as_ref().map(|k| k.kid.as_str()),
            )
            .field("oidc", &self.inner.oidc)
            .finish()
    }
}

impl Verifier {
    /// Loads (creating if needed) the local issuer key when `identity.local_issuer` is true, and
    /// prepares one JWKS cache per `[[identity.oidc]]`. No network access happens here: keys are
    /// fetched on the first token of each issuer.
    pub fn from_config(cfg: &Config) -> Result<Self, IdentityError> {
        let local = if cfg.identity.local_issuer {
            Some(LocalIssuer::load_or_create(&cfg.data_dir)?.public_key())
        } else {
            None
        };
        let mut seen = BTreeSet::new();
        let mut oidc = Vec::with_capacity(cfg.identity.oidc.len());
        for o in &cfg.identity.oidc {
            if o.issuer == LocalIssuer::ISSUER {
                return Err(IdentityError::Config(format!(
                    "issuer name {:?} is reserved for the local issuer",
                    LocalIssuer::ISSUER
                )));
            }
            if !seen.insert(o.issuer.as_str()) {
                return Err(IdentityError::Config(format!(
                    "issuer {:?} is configured twice",
                    o.issuer
                )));
            }
            oidc.push(OidcProvider::new(o)?);
        }
        Ok(Self {
            inner: Arc::new(Inner { local, oidc }),
        })
    }

    /// Validates a token: chooses the issuer by the (unverified) `iss` claim, then fully
    /// verifies signature, times, issuer, audience and subject.
    ///
    /// Surrounding ASCII whitespace (a trailing newline from a password file) is ignored.
    pub async fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        let token = token.trim_matches(|c: char| c.is_ascii_whitespace());
        let peek = token::peek(token)?;
        if peek.iss == LocalIssuer::ISSUER
            && let Some(local) = &self.inner.local
        {
            return verify_local(local, token, &peek);
        }
        let provider = self
            .inner
            .oidc
            .iter()
            .find(|p| p.issuer == peek.iss)
            .ok_or(AuthError::UnknownIssuer)?;
        provider.verify(token, &peek).await
    }
}

fn verify_local(
    local: &LocalKey,
    token: &str,
    peek: &token::Unverified,
) -> Result<Principal, AuthError> {
    if peek.alg != Algorithm::EdDSA {
        return Err(AuthError::AlgNotAllowed {
            alg: Some(peek.alg_name),
        });
    }
    if let Some(kid) = &peek.kid
        && *kid != local.kid
    {
        return Err(AuthError::UnknownKid {
            issuer: LocalIssuer::ISSUER.to_owned(),
        });
    }
    let claims = token::verify_signed(
        token,
        &local.key,
        Algorithm::EdDSA,
        LocalIssuer::ISSUER,
        LocalIssuer::AUDIENCE,
    )?;
    token::principal(&claims, "groups", LocalIssuer::ISSUER)
}
