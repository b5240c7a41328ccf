//! Compact-JWS handling shared by every issuer: the bounded, panic-free peek at the unverified
//! header and `iss`, the full verification call into `jsonwebtoken`, and claim extraction.

use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

use super::{ALLOWED_ALGORITHMS, AuthError, LEEWAY_SECS, MAX_TOKEN_BYTES, Principal};

/// Claims of a verified token.
pub(crate) type Claims = Map<String, Value>;

/// What can be read from a token before its signature is checked. Only used to pick the issuer
/// and key; nothing here is trusted.
#[derive(Debug)]
pub(crate) struct Unverified {
    pub(crate) alg: Algorithm,
    pub(crate) alg_name: &'static str,
    pub(crate) kid: Option<String>,
    pub(crate) iss: String,
}

/// Every `alg` name we recognise, so that errors can name it without echoing token text.
const KNOWN_ALG_NAMES: &[&str] = &[
    "none", "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
    "ES256", "ES384", "ES512", "EdDSA",
];

/// The static name of a recognised algorithm.
pub(crate) fn known_alg_name(name: &str) -> Option<&'static str> {
    KNOWN_ALG_NAMES.iter().copied().find(|k| *k == name)
}

/// Parses an algorithm name if it is on the global allow-list (never `none`, never `HS*`).
pub(crate) fn allowed_algorithm(name: &str) -> Option<(Algorithm, &'static str)> {
    let name = ALLOWED_ALGORITHMS.iter().copied().find(|a| *a == name)?;
    let alg = Algorithm::from_str(name).ok()?;
    if matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) {
        return None;
    }
    Some((alg, name))
}

fn b64_json(part: &str, what: &'static str) -> Result<Map<String, Value>, AuthError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| AuthError::Malformed(what))?;
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(AuthError::Malformed(what)),
    }
}

/// Splits a compact JWS into its three segments.
fn segments(token: &str) -> Result<(&str, &str, &str), AuthError> {
    if token.is_empty() {
        return Err(AuthError::Malformed("empty token"));
    }
    if token.len() > MAX_TOKEN_BYTES {
        return Err(AuthError::Malformed("token is larger than 16 KiB"));
    }
    let mut parts = token.split('.');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(h), Some(p), Some(s), None) if !h.is_empty() && !p.is_empty() => Ok((h, p, s)),
        _ => Err(AuthError::Malformed(
            "not a compact JWS (three dot-separated parts)",
        )),
    }
}

/// Reads the header and the `iss` claim without verifying anything.
///
/// Rejects `alg: none`, HMAC and unknown algorithms here, before any key is looked up.
pub(crate) fn peek(token: &str) -> Result<Unverified, AuthError> {
    let (header, payload, signature) = segments(token)?;
    let header = b64_json(header, "header is not base64url-encoded JSON")?;
    let alg_text = match header.get("alg") {
        Some(Value::String(s)) => s.as_str(),
        _ => return Err(AuthError::Malformed("header has no \"alg\"")),
    };
    let Some((alg, alg_name)) = allowed_algorithm(alg_text) else {
        return Err(AuthError::AlgNotAllowed {
            alg: known_alg_name(alg_text),
        });
    };
    if header.contains_key("crit") {
        // RFC 7515 §4.1.11: unknown critical extensions must be rejected; we support none.
        return Err(AuthError::Malformed(
            "unsupported critical header parameters",
        ));
    }
    let kid = match header.get("kid") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(AuthError::Malformed("header \"kid\" is not a string")),
    };
    if signature.is_empty() {
        return Err(AuthError::BadSignature);
    }
    let claims = b64_json(payload, "payload is not base64url-encoded JSON")?;
    let iss = match claims.get("iss") {
        Some(Value::String(s)) => s.clone(),
        None | Some(Value::Null) => return Err(AuthError::MissingClaim("iss")),
        Some(_) => return Err(AuthError::Malformed("claim \"iss\" is not a string")),
    };
    Ok(Unverified {
        alg,
        alg_name,
        kid,
        iss,
    })
}

/// Verifies signature, `exp`/`nbf` (with leeway), `iss` and `aud`, and returns the claims.
pub(crate) fn verify_signed(
    token: &str,
    key: &DecodingKey,
    alg: Algorithm,
    issuer: &str,
    audience: &str,
) -> Result<Claims, AuthError> {
    if key.family() != alg.family() {
        return Err(AuthError::AlgNotAllowed {
            alg: known_alg_name(&format!("{alg:?}")),
        });
    }
    // One algorithm only: jsonwebtoken requires every listed algorithm to match the key family,
    // and the caller has already checked `alg` against the issuer's allow-list.
    let mut validation = Validation::new(alg);
    validation.leeway = LEEWAY_SECS;
    validation.validate_exp = true;
    validation.validate_nbf = true;
    validation.validate_aud = true;
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    validation.set_issuer(&[issuer]);
    validation.set_audience(&[audience]);
    let data = jsonwebtoken::decode::<Claims>(token, key, &validation)
        .map_err(|e| map_jwt_error(e.kind(), audience))?;
    Ok(data.claims)
}

fn map_jwt_error(kind: &ErrorKind, audience: &str) -> AuthError {
    match kind {
        ErrorKind::InvalidSignature => AuthError::BadSignature,
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
        ErrorKind::InvalidAudience => AuthError::WrongAudience {
            expected: audience.to_owned(),
        },
        ErrorKind::InvalidIssuer => AuthError::UnknownIssuer,
        ErrorKind::InvalidSubject => AuthError::MissingSubject,
        ErrorKind::MissingRequiredClaim(claim) => match claim.as_str() {
            "exp" => AuthError::MissingClaim("exp"),
            "iss" => AuthError::MissingClaim("iss"),
            "aud" => AuthError::MissingClaim("aud"),
            "sub" => AuthError::MissingSubject,
            "nbf" => AuthError::MissingClaim("nbf"),
            _ => AuthError::Malformed("a required claim is missing"),
        },
        ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => {
            AuthError::AlgNotAllowed { alg: None }
        }
        ErrorKind::InvalidEcdsaKey
        | ErrorKind::InvalidEddsaKey
        | ErrorKind::InvalidRsaKey(_)
        | ErrorKind::InvalidKeyFormat => {
            tracing::warn!(error = ?kind, "identity: issuer key unusable for verification");
            AuthError::BadSignature
        }
        ErrorKind::InvalidClaimFormat(_) => {
            AuthError::Malformed("a registered claim has the wrong type")
        }
        ErrorKind::Base64(_) => AuthError::Malformed("bad base64url encoding"),
        ErrorKind::Json(_) | ErrorKind::Utf8(_) => AuthError::Malformed("payload is not JSON"),
        _ => AuthError::Malformed("token could not be decoded"),
    }
}

/// Builds the principal from verified claims: `sub` (non-empty string) and the groups claim.
pub(crate) fn principal(
    claims: &Claims,
    groups_claim: &str,
    issuer: &str,
) -> Result<Principal, AuthError> {
    let subject = match claims.get("sub") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        _ => return Err(AuthError::MissingSubject),
    };
    let groups = groups(claims, groups_claim)?;
    Ok(Principal {
        subject,
        groups,
        issuer: issuer.to_owned(),
    })
}

/// Groups from `claim`: an array of strings or a single string; absent or null → none.
///
/// The claim name is first looked up as is (names such as `https://example.com/groups` contain
/// dots); if absent and it contains dots, it is read as a path into nested objects
/// (`realm_access.roles`).
pub(crate) fn groups(claims: &Claims, claim: &str) -> Result<Vec<String>, AuthError> {
    let value = match claims.get(claim) {
        Some(v) => Some(v),
        None if claim.contains('.') => {
            let mut cur: Option<&Value> = None;
            for (i, part) in claim.split('.').enumerate() {
                cur = match (i, cur) {
                    (0, _) => claims.get(part),
                    (_, Some(Value::Object(map))) => map.get(part),
                    _ => None,
                };
                if cur.is_none() {
                    break;
                }
            }
            cur
        }
        None => None,
    };
    const BAD: AuthError =
        AuthError::Malformed("groups claim is not a string or an array of strings");
    match value {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) if s.is_empty() => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.clone()),
                _ => Err(BAD),
            })
            .collect(),
        Some(_) => Err(BAD),
    }
}
