//! A parsed JSON Web Key Set: only asymmetric signature keys we can use, each tagged with the key
//! type that decides which algorithms it may verify.

use base64::Engine;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;
use serde_json::Value;

use super::token::allowed_algorithm;

/// At most this many keys of a set are considered; an IdP publishes a handful.
pub(crate) const MAX_KEYS: usize = 64;

/// base64url, with or without padding (some IdPs pad JWK members).
const B64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The kind of public key, which fixes the algorithms it can verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyType {
    Rsa,
    EcP256,
    EcP384,
    Ed25519,
}

impl KeyType {
    /// Whether a key of this type may verify `alg` (RSA keys never verify ES256, etc.).
    pub(crate) fn fits(self, alg: Algorithm) -> bool {
        match self {
            KeyType::Rsa => matches!(
                alg,
                Algorithm::RS256
                    | Algorithm::RS384
                    | Algorithm::RS512
                    | Algorithm::PS256
                    | Algorithm::PS384
                    | Algorithm::PS512
            ),
            KeyType::EcP256 => alg == Algorithm::ES256,
            KeyType::EcP384 => alg == Algorithm::ES384,
            KeyType::Ed25519 => alg == Algorithm::EdDSA,
        }
    }
}

#[derive(Clone)]
pub(crate) struct PublicKey {
    pub(crate) kid: Option<String>,
    /// The JWK's own `alg`, when it states one: the key may then verify only that algorithm.
    pub(crate) alg: Option<Algorithm>,
    pub(crate) kty: KeyType,
    pub(crate) key: DecodingKey,
}

impl PublicKey {
    fn fits(&self, alg: Algorithm) -> bool {
        self.kty.fits(alg) && self.alg.is_none_or(|a| a == alg)
    }
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublicKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("kty", &self.kty)
            .finish_non_exhaustive()
    }
}

/// The usable keys of one issuer.
#[derive(Debug, Default)]
pub(crate) struct KeySet {
    pub(crate) keys: Vec<PublicKey>,
}

/// The outcome of looking a key up for a token.
pub(crate) enum Selection {
    Found(DecodingKey),
    /// The `kid` exists but its key cannot verify the token's algorithm.
    Mismatch,
    /// No key with that `kid` (or, without `kid`, no key for the algorithm).
    NotFound,
    /// No `kid` and several keys could verify the algorithm.
    Ambiguous,
}

#[derive(Deserialize)]
struct RawSet {
    keys: Vec<Value>,
}

#[derive(Deserialize)]
struct RawJwk {
    kty: Option<String>,
    kid: Option<String>,
    #[serde(rename = "use")]
    use_: Option<String>,
    key_ops: Option<Vec<String>>,
    alg: Option<String>,
    crv: Option<String>,
    n: Option<String>,
    e: Option<String>,
    x: Option<String>,
    y: Option<String>,
}

impl KeySet {
    /// Parses a JWKS document. Keys that are not usable asymmetric signature keys (HMAC `oct`
    /// keys, encryption keys, unknown types, disallowed `alg`, wrong sizes) are skipped; the
    /// second value counts them.
    pub(crate) fn parse(body: &[u8]) -> Result<(KeySet, usize), &'static str> {
        let raw: RawSet =
            serde_json::from_slice(body).map_err(|_| "not a JSON object with a \"keys\" array")?;
        let mut keys = Vec::new();
        let mut skipped = 0;
        for value in raw.keys.into_iter().take(MAX_KEYS) {
            match serde_json::from_value::<RawJwk>(value)
                .ok()
                .and_then(public_key)
            {
                Some(k) => keys.push(k),
                None => skipped += 1,
            }
        }
        Ok((KeySet { keys }, skipped))
    }

    /// Picks the key for a token with header `kid` and `alg`.
    pub(crate) fn select(&self, kid: Option<&str>, alg: Algorithm) -> Selection {
        match kid {
            Some(kid) => {
                let mut named = self
                    .keys
                    .iter()
                    .filter(|k| k.kid.as_deref() == Some(kid))
                    .peekable();
                if named.peek().is_none() {
                    return Selection::NotFound;
                }
                match named.find(|k| k.fits(alg)) {
                    Some(k) => Selection::Found(k.key.clone()),
                    None => Selection::Mismatch,
                }
            }
            None => {
                let mut fitting = self.keys.iter().filter(|k| k.fits(alg));
                match (fitting.next(), fitting.next()) {
                    (Some(k), None) => Selection::Found(k.key.clone()),
                    (None, _) => Selection::NotFound,
                    (Some(_), Some(_)) => Selection::Ambiguous,
                }
            }
        }
    }
}

fn decode(field: Option<&String>) -> Option<Vec<u8>> {
    B64.decode(field?).ok()
}

/// Turns one JWK into a usable public verification key, or `None`.
fn public_key(jwk: RawJwk) -> Option<PublicKey> {
    if jwk.use_.as_deref().is_some_and(|u| u != "sig") {
        return None;
    }
    if let Some(ops) = &jwk.key_ops
        && !ops.iter().any(|o| o == "verify")
    {
        return None;
    }
    // A stated `alg` must be one we allow; that also excludes every HS* (and `none`).
    let alg = match &jwk.alg {
        Some(a) => Some(allowed_algorithm(a)?.0),
        None => None,
    };
    let (kty, key) = match jwk.kty.as_deref()? {
        "RSA" => {
            let n = decode(jwk.n.as_ref())?;
            let e = decode(jwk.e.as_ref())?;
            let significant = n.iter().skip_while(|b| **b == 0).count();
            // 2048..=8192 bits, as the verifier requires; reject tiny exponents/empty values.
            if !(256..=1024).contains(&significant) || e.is_empty() || e.len() > 8 {
                return None;
            }
            (KeyType::Rsa, DecodingKey::from_rsa_raw_components(&n, &e))
        }
        "EC" => {
            let (kty, len) = match jwk.crv.as_deref()? {
                "P-256" => (KeyType::EcP256, 32),
                "P-384" => (KeyType::EcP384, 48),
                _ => return None,
            };
            let x = decode(jwk.x.as_ref())?;
            let y = decode(jwk.y.as_ref())?;
            if x.len() != len || y.len() != len {
                return None;
            }
            let mut point = Vec::with_capacity(1 + 2 * len);
            point.push(0x04);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            (kty, DecodingKey::from_ec_der(&point))
        }
        "OKP" => {
            if jwk.crv.as_deref()? != "Ed25519" {
                return None;
            }
            let x = decode(jwk.x.as_ref())?;
            if x.len() != 32 {
                return None;
            }
            (KeyType::Ed25519, DecodingKey::from_ed_der(&x))
        }
        // "oct" (HMAC secrets) and anything else: never used.
        _ => return None,
    };
    if let Some(a) = alg
        && !kty.fits(a)
    {
        return None;
    }
    Some(PublicKey {
        kid: jwk.kid,
        alg,
        kty,
        key,
    })
}
