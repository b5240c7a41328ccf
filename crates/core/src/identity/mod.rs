//! Who is on the other end: JWT validation for the local issuer and OIDC issuers.
//!
//! [`Verifier::verify`] turns a bearer token (the PostgreSQL password, the admin API's
//! `Authorization` header) into a [`Principal`] or an [`AuthError`] whose text is safe to show the
//! client. Rules, for every issuer:
//! - the token is at most [`MAX_TOKEN_BYTES`]; the unverified header and `iss` are read with a
//!   bounded, panic-free base64url/JSON decode only to choose the issuer and key;
//! - `alg` must be on an explicit allow-list ([`ALLOWED_ALGORITHMS`], narrowed per issuer by
//!   `algorithms`; EdDSA only for the local issuer): `none` and `HS*` are rejected before any key
//!   is looked up, HMAC keys in a JWKS are ignored, and a key is used only for algorithms of its
//!   own type (an RSA key never verifies ES256);
//! - signature, `exp` (required) and `nbf` with [`LEEWAY_SECS`] of leeway, `iss` exact, `aud`
//!   containing the configured audience (`gatehouse` for the local issuer), `sub` non-empty;
//! - groups come from the issuer's `groups_claim` (array of strings or one string; absent →
//!   none); local tokens use `groups`.
//!
//! OIDC keys are fetched lazily, on the first token of each issuer (startup never needs the
//! IdP), and cached by `kid`. A token with an unknown `kid` triggers a refetch at most once per
//! [`REFETCH_INTERVAL`] per issuer; cached keys are refreshed after [`JWKS_MAX_AGE`]. JWKS URLs
//! are fetched over HTTPS — trusting only `ca_file` when it is set, else the platform trust
//! store (a host without system CA certificates must set `ca_file`) — or plain HTTP on
//! loopback only; no redirects, [`HTTP_TIMEOUT`], bounded body.

mod error;
mod jwks;
mod local;
mod oidc;
mod principal;
mod token;
mod verifier;

#[cfg(test)]
mod tests;

use std::time::Duration;

pub use error::{AuthError, IdentityError};
pub use local::LocalIssuer;
pub use oidc::{JWKS_MAX_AGE, REFETCH_INTERVAL};
pub use principal::Principal;
pub use verifier::Verifier;

/// Signature algorithms a token may use. HMAC (`HS*`) and `none` are never accepted: a shared
/// secret cannot prove which party signed, and accepting HS256 with a public key as the secret
/// is the classic algorithm-confusion attack.
pub const ALLOWED_ALGORITHMS: &[&str] = &[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
];

/// Largest token accepted, in bytes.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// Clock skew tolerated on `exp` and `nbf`, in seconds.
pub const LEEWAY_SECS: u64 = 30;

/// Timeout of a JWKS request (connect and whole request).
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(5);
