//! caching_sha2_password's RSA key exchange: how a client without TLS sends the token without
//! sending it in the clear.
//!
//! Why: the gateway must read the token itself (a scramble only proves a password the server
//! already holds). Inside TLS the client sends it as it is; without TLS a standard client asks
//! for the server's RSA public key (`0x02`), encrypts the password (NUL-terminated, XORed with
//! the greeting's scramble) with RSA-OAEP (SHA-1, MGF1-SHA-1) and sends the ciphertext. The
//! key is the gateway's own, generated on first use and never written anywhere: a client
//! that pins a key file (`--server-public-key-path`) would have to fetch it again after a
//! restart, which standard clients do by default.

use std::sync::Arc;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeySize, OAEP_SHA1_MGF1SHA1, OaepPrivateDecryptingKey, PrivateDecryptingKey};
use base64::Engine as _;

/// Why an RSA exchange failed. Says nothing about the ciphertext or what it held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RsaExchangeError {
    #[error("the gateway could not create its RSA key")]
    KeyGeneration,
    #[error("the encrypted password could not be decrypted with the gateway's public key")]
    Undecryptable,
    #[error("the decrypted password is not terminated as caching_sha2_password requires")]
    Malformed,
}

/// The gateway's RSA key for the exchange.
pub struct RsaExchange {
    key: OaepPrivateDecryptingKey,
    /// The public key as the clients expect it: PEM, SubjectPublicKeyInfo.
    public_pem: Vec<u8>,
}

impl std::fmt::Debug for RsaExchange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RsaExchange").finish_non_exhaustive()
    }
}

impl RsaExchange {
    /// A fresh 4096-bit key. MySQL's server uses 2048 bits, which carries at most 214 bytes
    /// through RSA-OAEP: less than most tokens. 4096 bits carry 470 bytes; a longer token
    /// needs TLS (the client fails before it sends anything).
    pub fn generate() -> Result<Self, RsaExchangeError> {
        let private = PrivateDecryptingKey::generate(KeySize::Rsa4096)
            .map_err(|_| RsaExchangeError::KeyGeneration)?;
        let der = private
            .public_key()
            .as_der()
            .map_err(|_| RsaExchangeError::KeyGeneration)?;
        let public_pem = pem("PUBLIC KEY", der.as_ref());
        let key =
            OaepPrivateDecryptingKey::new(private).map_err(|_| RsaExchangeError::KeyGeneration)?;
        Ok(Self { key, public_pem })
    }

    /// What the server sends when a client asks for its public key.
    pub fn public_pem(&self) -> &[u8] {
        &self.public_pem
    }

    /// The length of a ciphertext under this key (a client that already has the key sends
    /// exactly this many bytes).
    pub fn ciphertext_len(&self) -> usize {
        self.key.key_size_bytes()
    }

    /// The password a client encrypted for `scramble` (the greeting's 20 bytes).
    pub fn password(
        &self,
        ciphertext: &[u8],
        scramble: &[u8],
    ) -> Result<Vec<u8>, RsaExchangeError> {
        let mut buf = vec![0u8; self.key.min_output_size()];
        let plain = self
            .key
            .decrypt(&OAEP_SHA1_MGF1SHA1, ciphertext, &mut buf, None)
            .map_err(|_| RsaExchangeError::Undecryptable)?;
        let mut password: Vec<u8> = plain
            .iter()
            .zip(scramble.iter().cycle())
            .map(|(b, s)| b ^ s)
            .collect();
        buf.fill(0);
        if scramble.is_empty() || password.pop() != Some(0) {
            password.fill(0);
            return Err(RsaExchangeError::Malformed);
        }
        Ok(password)
    }
}

/// The key, created the first time a client needs it (key generation takes tens of
/// milliseconds; most gateways never need one).
#[derive(Debug, Default)]
pub struct RsaKeyCell(tokio::sync::OnceCell<Arc<RsaExchange>>);

impl RsaKeyCell {
    pub async fn get(&self) -> Result<Arc<RsaExchange>, RsaExchangeError> {
        self.0
            .get_or_try_init(|| async {
                tokio::task::spawn_blocking(RsaExchange::generate)
                    .await
                    .map_err(|_| RsaExchangeError::KeyGeneration)?
                    .map(Arc::new)
            })
            .await
            .cloned()
    }
}

/// An upstream server's RSA public key, pinned in the configuration
/// (`upstream_rsa_public_key_file`): the gateway's side of the exchange when it logs in
/// upstream without TLS.
pub struct PinnedServerKey(aws_lc_rs::rsa::OaepPublicEncryptingKey);

impl std::fmt::Debug for PinnedServerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PinnedServerKey").finish_non_exhaustive()
    }
}

/// Why a pinned key cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PinnedKeyError {
    #[error("not a PEM public key (-----BEGIN PUBLIC KEY-----, as the server's public_key.pem)")]
    NotPem,
    #[error("not an RSA public key")]
    NotRsa,
    #[error("the password is too long to encrypt to this key ({len} bytes, at most {max})")]
    TooLong { len: usize, max: usize },
    #[error("RSA encryption failed")]
    Encrypt,
}

impl PinnedServerKey {
    /// The key from a PEM `PUBLIC KEY` (SubjectPublicKeyInfo), as MySQL writes it.
    pub fn from_pem(text: &[u8]) -> Result<Self, PinnedKeyError> {
        let text = std::str::from_utf8(text).map_err(|_| PinnedKeyError::NotPem)?;
        let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
        if lines.next() != Some("-----BEGIN PUBLIC KEY-----") {
            return Err(PinnedKeyError::NotPem);
        }
        let mut body = String::new();
        let mut ended = false;
        for line in lines {
            if line == "-----END PUBLIC KEY-----" {
                ended = true;
                break;
            }
            body.push_str(line);
        }
        if !ended {
            return Err(PinnedKeyError::NotPem);
        }
        let der = base64::engine::general_purpose::STANDARD
            .decode(body)
            .map_err(|_| PinnedKeyError::NotPem)?;
        let public = aws_lc_rs::rsa::PublicEncryptingKey::from_der(&der)
            .map_err(|_| PinnedKeyError::NotRsa)?;
        aws_lc_rs::rsa::OaepPublicEncryptingKey::new(public)
            .map(Self)
            .map_err(|_| PinnedKeyError::NotRsa)
    }

    /// What a client sends for `password` and the greeting's `scramble`: the password,
    /// NUL-terminated and XORed with the scramble, RSA-OAEP-encrypted to the key.
    pub fn encrypt(&self, password: &[u8], scramble: &[u8]) -> Result<Vec<u8>, PinnedKeyError> {
        let mut plain = password.to_vec();
        plain.push(0);
        let max = self.0.max_plaintext_size(&OAEP_SHA1_MGF1SHA1);
        if plain.len() > max {
            plain.fill(0);
            return Err(PinnedKeyError::TooLong {
                len: password.len(),
                max: max.saturating_sub(1),
            });
        }
        for (b, s) in plain.iter_mut().zip(scramble.iter().cycle()) {
            *b ^= s;
        }
        let mut out = vec![0u8; self.0.ciphertext_size()];
        let written = self
            .0
            .encrypt(&OAEP_SHA1_MGF1SHA1, &plain, &mut out, None)
            .map(|c| c.len());
        plain.fill(0);
        let len = written.map_err(|_| PinnedKeyError::Encrypt)?;
        out.truncate(len);
        Ok(out)
    }
}

fn pem(label: &str, der: &[u8]) -> Vec<u8> {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

    use aws_lc_rs::rsa::{OaepPublicEncryptingKey, PublicEncryptingKey};

    use super::*;

    /// What a client does: NUL-terminate, XOR with the scramble, encrypt with the public key.
    fn client_encrypts(pem_text: &[u8], password: &[u8], scramble: &[u8]) -> Vec<u8> {
        let text = String::from_utf8(pem_text.to_vec()).unwrap();
        let body: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(body)
            .unwrap();
        let public =
            OaepPublicEncryptingKey::new(PublicEncryptingKey::from_der(&der).unwrap()).unwrap();
        let mut plain = password.to_vec();
        plain.push(0);
        for (b, s) in plain.iter_mut().zip(scramble.iter().cycle()) {
            *b ^= s;
        }
        let mut out = vec![0u8; public.ciphertext_size()];
        public
            .encrypt(&OAEP_SHA1_MGF1SHA1, &plain, &mut out, None)
            .unwrap()
            .to_vec()
    }

    #[test]
    fn a_pinned_key_encrypts_what_the_keys_owner_reads_back() {
        let rsa = RsaExchange::generate().unwrap();
        let pinned = PinnedServerKey::from_pem(rsa.public_pem()).unwrap();
        let scramble = b"abcdefghij0123456789";
        let sent = pinned.encrypt(b"held-secret", scramble).unwrap();
        assert_eq!(sent.len(), rsa.ciphertext_len());
        assert!(!sent.windows(11).any(|w| w == b"held-secret"));
        assert_eq!(rsa.password(&sent, scramble).unwrap(), b"held-secret");
        // Another scramble reads back something else: the ciphertext is bound to the login.
        assert_ne!(
            rsa.password(&sent, b"ZZZZZZZZZZZZZZZZZZZZ").ok(),
            Some(b"held-secret".to_vec())
        );
        let too_long = vec![b'x'; 600];
        assert!(matches!(
            pinned.encrypt(&too_long, scramble),
            Err(PinnedKeyError::TooLong { .. })
        ));
        for bad in [
            &b""[..],
            b"not a key",
            b"-----BEGIN PUBLIC KEY-----\n!!!\n-----END PUBLIC KEY-----\n",
            b"-----BEGIN PUBLIC KEY-----\nAAAA\n",
            b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
        ] {
            assert!(PinnedServerKey::from_pem(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_client_encrypted_password_is_read_back_and_anything_else_is_refused() {
        let rsa = RsaExchange::generate().unwrap();
        let pem = rsa.public_pem();
        assert!(pem.starts_with(b"-----BEGIN PUBLIC KEY-----\n"));
        assert!(pem.ends_with(b"-----END PUBLIC KEY-----\n"));
        let scramble = b"0123456789abcdefghij";
        // Longer than the scramble: the XOR repeats it.
        let token = b"eyJhbGciOiJFZERTQSJ9.a-token-longer-than-twenty-bytes";
        let sent = client_encrypts(pem, token, scramble);
        assert_eq!(sent.len(), rsa.ciphertext_len());
        assert_eq!(rsa.password(&sent, scramble).unwrap(), token.to_vec());
        // Another scramble (a replay into another login) does not yield the token.
        let other = rsa.password(&sent, b"jihgfedcba9876543210");
        assert_ne!(other.ok(), Some(token.to_vec()));
        // Garbage, a truncated ciphertext, a ciphertext for another key.
        assert_eq!(
            rsa.password(&[0u8; 256], scramble),
            Err(RsaExchangeError::Undecryptable)
        );
        assert_eq!(
            rsa.password(&sent[..100], scramble),
            Err(RsaExchangeError::Undecryptable)
        );
        let stranger = RsaExchange::generate().unwrap();
        let foreign = client_encrypts(stranger.public_pem(), token, scramble);
        assert_eq!(
            rsa.password(&foreign, scramble),
            Err(RsaExchangeError::Undecryptable)
        );
        assert_eq!(format!("{rsa:?}"), "RsaExchange { .. }");
    }
}
