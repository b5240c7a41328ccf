//! Who is on the other end: JWT validation for the local issuer and OIDC issuers.
//!
//! (Stub: being implemented; see the interface below.)

/// Signature algorithms a token may use. HMAC (`HS*`) and `none` are never accepted: a shared
/// secret cannot prove which party signed, and accepting HS256 with a public key as the secret
/// is the classic algorithm-confusion attack.
pub const ALLOWED_ALGORITHMS: &[&str] = &[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
];
