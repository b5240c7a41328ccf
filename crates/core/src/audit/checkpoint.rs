//! Signed checkpoints: an Ed25519 signature over (seq, hash) of a chain position.
//!
//! A hash chain alone proves order and integrity *relative to its head*; someone able to
//! rewrite the store could rewrite the whole chain. A checkpoint signed with a key that lives
//! outside the store (in `data_dir`) pins the head at that moment, so a rewritten or truncated
//! history no longer matches a valid signature.

use std::path::{Path, PathBuf};

use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};

/// A signed chain position as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub seq: u64,
    pub hash: String,
    pub time: String,
    /// Hex Ed25519 signature over the checkpoint's message (its seq, hash and time).
    pub signature: String,
    /// Hex of the first 8 bytes of SHA-256 of the public key that signed it.
    pub key_id: String,
}

impl Checkpoint {
    fn message(seq: u64, hash: &str, time: &str) -> Vec<u8> {
        format!("gatehouse-checkpoint-v1\n{seq}\n{hash}\n{time}").into_bytes()
    }
}

/// Holds the audit signing key; `Debug` never prints it.
pub struct CheckpointSigner {
    key: SigningKey,
}

impl std::fmt::Debug for CheckpointSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckpointSigner")
            .field("key_id", &self.key_id())
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("cannot read or write audit signing key {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("audit signing key {path} is not a valid Ed25519 PKCS#8 PEM key")]
    Invalid { path: PathBuf },
}

impl CheckpointSigner {
    pub const FILE_NAME: &'static str = "audit-signing-ed25519.pem";

    /// Loads `data_dir/audit-signing-ed25519.pem`, creating it (mode 0600) on first use.
    pub fn load_or_create(data_dir: &Path) -> Result<Self, KeyFileError> {
        let path = data_dir.join(Self::FILE_NAME);
        let io = |source| KeyFileError::Io {
            path: path.clone(),
            source,
        };
        match std::fs::read_to_string(&path) {
            Ok(pem) => {
                let key = SigningKey::from_pkcs8_pem(&pem)
                    .map_err(|_| KeyFileError::Invalid { path: path.clone() })?;
                Ok(Self { key })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(data_dir).map_err(io)?;
                let mut seed = [0u8; 32];
                rand::Rng::fill(&mut rand::rng(), &mut seed);
                let key = SigningKey::from_bytes(&seed);
                let pem = key
                    .to_pkcs8_pem(Default::default())
                    .map_err(|_| KeyFileError::Invalid { path: path.clone() })?;
                write_private(&path, pem.as_bytes()).map_err(io)?;
                Ok(Self { key })
            }
            Err(e) => Err(io(e)),
        }
    }

    /// Loads an existing key only (verification must not invent a key).
    pub fn load(data_dir: &Path) -> Result<Self, KeyFileError> {
        let path = data_dir.join(Self::FILE_NAME);
        let pem = std::fs::read_to_string(&path).map_err(|source| KeyFileError::Io {
            path: path.clone(),
            source,
        })?;
        let key = SigningKey::from_pkcs8_pem(&pem).map_err(|_| KeyFileError::Invalid { path })?;
        Ok(Self { key })
    }

    pub fn key_id(&self) -> String {
        key_id(&self.key.verifying_key())
    }

    pub fn sign(&self, seq: u64, hash: &str, time: &str) -> Checkpoint {
        let sig = self.key.sign(&Checkpoint::message(seq, hash, time));
        Checkpoint {
            seq,
            hash: hash.to_owned(),
            time: time.to_owned(),
            signature: hex::encode(sig.to_bytes()),
            key_id: self.key_id(),
        }
    }

    /// Whether `cp` carries a valid signature by this key.
    pub fn verifies(&self, cp: &Checkpoint) -> bool {
        let Ok(bytes) = hex::decode(&cp.signature) else {
            return false;
        };
        let Ok(sig) = Signature::from_slice(&bytes) else {
            return false;
        };
        self.key
            .verifying_key()
            .verify(&Checkpoint::message(cp.seq, &cp.hash, &cp.time), &sig)
            .is_ok()
    }
}

fn key_id(vk: &VerifyingKey) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(vk.as_bytes());
    hex::encode(d.get(..8).unwrap_or_default())
}

/// Writes a file readable only by its owner.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify_and_reject_tampering() {
        let dir = std::env::temp_dir().join(format!("gh-cp-{}", uuid::Uuid::new_v4()));
        let s = CheckpointSigner::load_or_create(&dir).unwrap();
        let again = CheckpointSigner::load(&dir).unwrap();
        assert_eq!(s.key_id(), again.key_id());
        let cp = s.sign(10, "ab", "t");
        assert!(again.verifies(&cp));
        let mut bad = cp.clone();
        bad.seq = 11;
        assert!(!again.verifies(&bad));
        assert!(!format!("{s:?}").contains("PRIVATE"));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
