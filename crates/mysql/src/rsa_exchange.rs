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
