//! How a masked value is rendered: `last4`, `redact` or `token`.
//!
//! PCI DSS 3.4.1 allows at most the BIN and the last four digits to be displayed; `last4` keeps
//! only the last four (and the separators and length, so layouts and widths survive). `token`
//! is a deterministic keyed HMAC-SHA-256 of the digits (3.5.1.1): equal cards give equal
//! tokens, so a fraud bot can group and join by card, but without the key nobody can test a
//! guess. A token is rendered as `tok_` and sixteen consonants, so it can never be mistaken for
//! — or detected as — a card number, and masking a token again leaves it unchanged.

use std::path::Path;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

/// A masking style (`[[mask]] style`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MaskStyle {
    #[default]
    Last4,
    Redact,
    Token,
}

/// What `redact` (and every card verification code) becomes.
pub const REDACTED: &[u8] = b"[REDACTED]";

/// Alphabet of token characters: no digits, no vowels (no accidental words).
const TOKEN_ALPHABET: &[u8; 16] = b"bcdfghjklmnpqrst";

/// The token key file in `data_dir`.
pub const TOKEN_KEY_FILE: &str = "mask-token.key";

/// The HMAC key of the `token` style. Never printed.
#[derive(Clone)]
pub struct TokenKey(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(<secret>)")
    }
}

impl TokenKey {
    /// Reads the key from `data_dir`, creating it (mode 0600) on first use. A key that changes
    /// changes every token, so it is kept with the rest of the gateway's state.
    pub fn load_or_create(data_dir: &Path) -> std::io::Result<Self> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let path = data_dir.join(TOKEN_KEY_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let bytes = Zeroizing::new(hex::decode(text.trim()).map_err(|_| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("{} is not a hex key", path.display()),
                    )
                })?);
                let mut key = Zeroizing::new([0u8; 32]);
                if bytes.len() != 32 {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("{} must hold 32 bytes (64 hex digits)", path.display()),
                    ));
                }
                key.copy_from_slice(&bytes);
                Ok(Self(key))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut key = Zeroizing::new([0u8; 32]);
                rand::fill(&mut key[..]);
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)?;
                f.write_all(Zeroizing::new(hex::encode(&key[..])).as_bytes())?;
                f.sync_all()?;
                Ok(Self(key))
            }
            Err(e) => Err(e),
        }
    }

    /// A key from fixed bytes (tests and benchmarks).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// The token of a value: HMAC-SHA-256 over its digits (so `4111 1111 ...` and
    /// `4111111...` tokenise alike), or over its bytes when it has none.
    pub fn token(&self, value: &[u8]) -> [u8; 20] {
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.0[..]) else {
            // HMAC accepts keys of any length; this cannot happen. Fail safe anyway.
            return *b"tok_bbbbbbbbbbbbbbbb";
        };
        if value.iter().any(u8::is_ascii_digit) {
            for &b in value.iter().filter(|b| b.is_ascii_digit()) {
                mac.update(&[b]);
            }
        } else {
            mac.update(value);
        }
        let digest = mac.finalize().into_bytes();
        let mut out = *b"tok_0000000000000000";
        for (slot, byte) in out.iter_mut().skip(4).zip(digest.iter()) {
            *slot = TOKEN_ALPHABET
                .get(usize::from(byte & 0x0f))
                .copied()
                .unwrap_or(b'b');
        }
        out
    }
}

/// Appends the masked form of a detected card number (`span`: digits and separators).
pub fn mask_pan_span(style: MaskStyle, key: &TokenKey, span: &[u8], out: &mut Vec<u8>) {
    match style {
        MaskStyle::Last4 => last4_into(span, out),
        MaskStyle::Redact => out.extend_from_slice(REDACTED),
        MaskStyle::Token => out.extend_from_slice(&key.token(span)),
    }
}

/// Appends the masked form of a whole value of a sensitive column (or one derived from it).
/// `last4` keeps every character but the digits before the last four.
pub fn mask_value(style: MaskStyle, key: &TokenKey, value: &[u8], out: &mut Vec<u8>) {
    match style {
        MaskStyle::Last4 => last4_into(value, out),
        MaskStyle::Redact => out.extend_from_slice(REDACTED),
        MaskStyle::Token => out.extend_from_slice(&key.token(value)),
    }
}

/// Every ASCII digit but the last four replaced by `*`; everything else kept.
fn last4_into(value: &[u8], out: &mut Vec<u8>) {
    let digits = value.iter().filter(|b| b.is_ascii_digit()).count();
    let mut seen = 0;
    out.reserve(value.len());
    for &b in value {
        if b.is_ascii_digit() {
            seen += 1;
            out.push(if seen + 4 <= digits { b'*' } else { b });
        } else {
            out.push(b);
        }
    }
}

/// The number made of the last four digits of `value` (what an integer card-number column
/// shows under `last4`): at most four digits are ever revealed.
pub fn last4_number(value: &[u8]) -> i64 {
    let digits: Vec<u8> = value.iter().copied().filter(u8::is_ascii_digit).collect();
    digits
        .iter()
        .skip(digits.len().saturating_sub(4))
        .fold(0i64, |acc, d| acc * 10 + i64::from(d - b'0'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::masking::detector::find_pans;

    fn key() -> TokenKey {
        TokenKey::from_bytes([7u8; 32])
    }

    fn value(style: MaskStyle, v: &str) -> String {
        let mut out = Vec::new();
        mask_value(style, &key(), v.as_bytes(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }

    #[test]
    fn last4_keeps_separators_and_length() {
        assert_eq!(
            value(MaskStyle::Last4, "4111111111111111"),
            "************1111"
        );
        assert_eq!(
            value(MaskStyle::Last4, "4111 1111-1111 1234"),
            "**** ****-**** 1234"
        );
        assert_eq!(value(MaskStyle::Last4, "123"), "123");
        assert_eq!(value(MaskStyle::Redact, "4111111111111111"), "[REDACTED]");
    }

    #[test]
    fn tokens_are_deterministic_keyed_and_never_pans() {
        let a = value(MaskStyle::Token, "4111111111111111");
        let b = value(MaskStyle::Token, "4111 1111 1111 1111");
        let c = value(MaskStyle::Token, "5555555555554444");
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!(a.starts_with("tok_") && a.len() == 20);
        assert!(!a.bytes().skip(4).any(|b| b.is_ascii_digit()));
        let other = TokenKey::from_bytes([8u8; 32]).token(b"4111111111111111");
        assert_ne!(a.as_bytes(), &other[..]);
        let mut found = 0;
        find_pans(a.as_bytes(), |_| found += 1);
        assert_eq!(found, 0);
    }

    #[test]
    fn last4_numbers() {
        assert_eq!(last4_number(b"4111111111111234"), 1234);
        assert_eq!(last4_number(b"4111111111110004"), 4);
        assert_eq!(last4_number(b"12"), 12);
    }

    #[test]
    fn key_file_round_trip_and_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("gh-key-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap_or_default();
        let k1 = TokenKey::load_or_create(&dir).map(|k| k.token(b"4111111111111111"));
        let k2 = TokenKey::load_or_create(&dir).map(|k| k.token(b"4111111111111111"));
        assert!(k1.is_ok());
        assert_eq!(k1.ok(), k2.ok());
        let mode = std::fs::metadata(dir.join(TOKEN_KEY_FILE))
            .map(|m| m.permissions().mode() & 0o777)
            .unwrap_or(0);
        assert_eq!(mode, 0o600);
        assert_eq!(format!("{:?}", key()), "TokenKey(<secret>)");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
