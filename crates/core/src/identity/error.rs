//! Errors of the identity module.
//!
//! [`AuthError`] is what a client may be told about its token: the reason, never the token, key
//! material or claim values (only issuer and audience names that come from the configuration).
//! [`IdentityError`] is a setup problem (key file, CA bundle, HTTP client), reported to the
//! operator.

use std::path::PathBuf;

/// Why a token was rejected.
///
/// The `Display` text is safe to send to a client. [`AuthError::reason_code`] gives a short stable
/// code for audit records and metrics.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// Not a well-formed compact JWS, too large, bad base64/JSON, or a claim of the wrong type.
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// `alg` is `none`, HMAC, unknown, or not in the issuer's allow-list.
    #[error("token signature algorithm {} is not allowed", .alg.unwrap_or("(unrecognised)"))]
    AlgNotAllowed {
        /// The algorithm name when it is one we recognise (never arbitrary token text).
        alg: Option<&'static str>,
    },
    /// The `iss` claim names no trusted issuer.
    #[error("token issuer is not trusted")]
    UnknownIssuer,
    /// The `aud` claim does not contain the audience configured for the issuer.
    #[error("token audience does not include {expected:?}")]
    WrongAudience { expected: String },
    /// `exp` is in the past (beyond the leeway).
    #[error("token has expired")]
    Expired,
    /// `nbf` is in the future (beyond the leeway).
    #[error("token is not valid yet")]
    NotYetValid,
    /// A required registered claim (`exp`, `iss`, `aud`, `sub`) is absent.
    #[error("token lacks the required {0:?} claim")]
    MissingClaim(&'static str),
    /// `sub` is absent, not a string, or empty.
    #[error("token has no subject")]
    MissingSubject,
    /// The signature does not verify with the issuer's key.
    #[error("token signature is invalid")]
    BadSignature,
    /// The token's `kid` is not in the issuer's key set (even after a permitted refetch).
    #[error("token key id is unknown to issuer {issuer:?}")]
    UnknownKid { issuer: String },
    /// No `kid`, and the key set has no single key usable for the token's algorithm.
    #[error("token has no key id and issuer {issuer:?} has no single key for its algorithm")]
    NoMatchingKey { issuer: String },
    /// The key named by `kid` cannot be used with the token's algorithm (e.g. an RSA key for an
    /// ES256 token): an algorithm-confusion attempt or a misconfigured issuer.
    #[error("token algorithm does not match the type of key {issuer:?} published for its key id")]
    KeyAlgMismatch { issuer: String },
    /// The issuer's JWKS could not be fetched (or not yet; retries are rate limited).
    #[error("signing keys of issuer {issuer:?} are unavailable")]
    JwksUnavailable { issuer: String },
}

impl AuthError {
    /// Short stable code, e.g. for audit records (`login_failed` reason) and metrics labels.
    pub fn reason_code(&self) -> &'static str {
        match self {
            AuthError::Malformed(_) => "malformed",
            AuthError::AlgNotAllowed { .. } => "alg_not_allowed",
            AuthError::UnknownIssuer => "unknown_issuer",
            AuthError::WrongAudience { .. } => "wrong_audience",
            AuthError::Expired => "expired",
            AuthError::NotYetValid => "not_yet_valid",
            AuthError::MissingClaim(_) => "missing_claim",
            AuthError::MissingSubject => "missing_subject",
            AuthError::BadSignature => "bad_signature",
            AuthError::UnknownKid { .. } => "unknown_kid",
            AuthError::NoMatchingKey { .. } => "no_matching_key",
            AuthError::KeyAlgMismatch { .. } => "key_alg_mismatch",
            AuthError::JwksUnavailable { .. } => "jwks_unavailable",
        }
    }
}

/// A problem setting up identity verification or issuing a token.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// Reading or writing the local issuer key (or its directory) failed.
    #[error("cannot {action} {}: {source}", .path.display())]
    KeyFile {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The local issuer key file exists but is not a PKCS#8 Ed25519 private key in PEM.
    #[error("{} is not a PKCS#8 PEM Ed25519 private key", .path.display())]
    BadKey { path: PathBuf },
    /// The operating system's random generator failed.
    #[error("cannot generate a key: {0}")]
    Random(String),
    /// A `ca_file` could not be read or holds no usable certificate.
    #[error("identity.oidc issuer {issuer:?}: ca_file {}: {problem}", .path.display())]
    CaFile {
        issuer: String,
        path: PathBuf,
        problem: String,
    },
    /// The HTTP client for an issuer's JWKS could not be built.
    #[error(
        "identity.oidc issuer {issuer:?}: cannot build the HTTPS client \
         (without ca_file the system CA certificates are needed): {source}"
    )]
    HttpClient {
        issuer: String,
        #[source]
        source: reqwest::Error,
    },
    /// The identity configuration is inconsistent (duplicate issuer, bad algorithm, ...).
    #[error("identity: {0}")]
    Config(String),
    /// A token could not be issued (bad subject, signing failure).
    #[error("cannot issue a token: {0}")]
    Issue(String),
}
