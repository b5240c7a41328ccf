//! The local issuer: an Ed25519 key in `data_dir` that signs tokens for `gatehouse token issue`.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use rand::TryRngCore;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::IdentityError;

/// Largest key file we are willing to parse (a PKCS#8 Ed25519 PEM is about 120 bytes).
const MAX_KEY_FILE_BYTES: u64 = 16 * 1024;

/// The public half of the local issuer key, as the verifier needs it.
#[derive(Clone)]
pub(crate) struct LocalKey {
    pub(crate) kid: String,
    pub(crate) key: DecodingKey,
}

impl fmt::Debug for LocalKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// Signs tokens as issuer [`LocalIssuer::ISSUER`] for audience [`LocalIssuer::AUDIENCE`].
pub struct LocalIssuer {
    encoding: EncodingKey,
    public: LocalKey,
    path: PathBuf,
}

impl fmt::Debug for LocalIssuer {
    // By hand: the private key must never appear in logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalIssuer")
            .field("key_id", &self.public.kid)
            .field("key_file", &self.path)
            .finish_non_exhaustive()
    }
}

impl LocalIssuer {
    pub const ISSUER: &'static str = "gatehouse-local";
    pub const AUDIENCE: &'static str = "gatehouse";
    /// File name of the key inside `data_dir`.
    pub const KEY_FILE: &'static str = "issuer-ed25519.pem";

    /// Loads `data_dir/issuer-ed25519.pem` (PKCS#8 PEM), generating it on first use with mode
    /// 0600 (and `data_dir` with mode 0700 if it is missing).
    ///
    /// Creation is atomic: the key is written to a temporary file and hard-linked into place, so
    /// two processes starting at once agree on one key and never read a half-written file.
    pub fn load_or_create(data_dir: &Path) -> Result<Self, IdentityError> {
        create_dir(data_dir)?;
        let path = data_dir.join(Self::KEY_FILE);
        let signing = match read_key(&path)? {
            Some(key) => key,
            None => create_key(data_dir, &path)?,
        };
        Self::from_signing_key(&signing, path)
    }

    fn from_signing_key(signing: &SigningKey, path: PathBuf) -> Result<Self, IdentityError> {
        let der = signing
            .to_pkcs8_der()
            .map_err(|_| IdentityError::BadKey { path: path.clone() })?;
        let encoding = EncodingKey::from_ed_der(der.as_bytes());
        let public = signing.verifying_key();
        let public = LocalKey {
            kid: key_id(public.as_bytes()),
            key: DecodingKey::from_ed_der(public.as_bytes()),
        };
        Ok(Self {
            encoding,
            public,
            path,
        })
    }

    /// The `kid` put in token headers: a short RFC 7638 thumbprint of the public key.
    pub fn key_id(&self) -> &str {
        &self.public.kid
    }

    /// Where the key is stored.
    pub fn key_path(&self) -> &Path {
        &self.path
    }

    #[cfg(test)]
    pub(crate) fn encoding_key(&self) -> &EncodingKey {
        &self.encoding
    }

    pub(crate) fn public_key(&self) -> LocalKey {
        self.public.clone()
    }

    /// An EdDSA-signed JWT: `iss`, `sub`, `aud`, `iat`, `nbf`, `exp = now + ttl`, `jti` (UUID
    /// v4), `groups`; header `kid` = [`LocalIssuer::key_id`].
    pub fn issue(
        &self,
        subject: &str,
        groups: &[String],
        ttl: Duration,
    ) -> Result<String, IdentityError> {
        if subject.is_empty() {
            return Err(IdentityError::Issue("the subject must not be empty".into()));
        }
        let ttl = ttl.as_secs();
        if ttl == 0 {
            return Err(IdentityError::Issue(
                "the lifetime must be at least one second".into(),
            ));
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_err(|_| IdentityError::Issue("the system clock is before 1970".into()))?
            .as_secs();
        let exp = now
            .checked_add(ttl)
            .ok_or_else(|| IdentityError::Issue("the lifetime is too long".into()))?;
        let claims = json!({
            "iss": Self::ISSUER,
            "sub": subject,
            "aud": Self::AUDIENCE,
            "iat": now,
            "nbf": now,
            "exp": exp,
            "jti": crate::ids::random_id(),
            "groups": groups,
        });
        self.sign(&claims)
    }

    /// Signs arbitrary claims with the local key (header `alg: EdDSA`, `kid`).
    pub(crate) fn sign(&self, claims: &Value) -> Result<String, IdentityError> {
        let mut header = Header::new(Algorithm::EdDSA);
        header.typ = Some("JWT".into());
        header.kid = Some(self.public.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding)
            .map_err(|e| IdentityError::Issue(format!("signing failed: {e}")))
    }
}

/// RFC 7638 JWK thumbprint of an Ed25519 public key, truncated to 16 base64url characters.
fn key_id(public: &[u8; 32]) -> String {
    let jwk = format!(
        r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#,
        URL_SAFE_NO_PAD.encode(public)
    );
    let mut id = URL_SAFE_NO_PAD.encode(Sha256::digest(jwk.as_bytes()));
    id.truncate(16);
    id
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> IdentityError {
    let path = path.to_owned();
    move |source| IdentityError::KeyFile {
        action,
        path,
        source,
    }
}

fn create_dir(dir: &Path) -> Result<(), IdentityError> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(io_err("create directory", dir))
}

/// Reads the key; `Ok(None)` when the file does not exist.
fn read_key(path: &Path) -> Result<Option<SigningKey>, IdentityError> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err("read", path)(e)),
    };
    if !meta.is_file() || meta.len() > MAX_KEY_FILE_BYTES {
        return Err(IdentityError::BadKey {
            path: path.to_owned(),
        });
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                path = %path.display(),
                "local issuer key is readable by group or others; run chmod 600 on it"
            );
        }
    }
    let pem = Zeroizing::new(std::fs::read_to_string(path).map_err(io_err("read", path))?);
    SigningKey::from_pkcs8_pem(&pem)
        .map(Some)
        .map_err(|_| IdentityError::BadKey {
            path: path.to_owned(),
        })
}

fn create_key(dir: &Path, path: &Path) -> Result<SigningKey, IdentityError> {
    let mut seed = Zeroizing::new([0u8; 32]);
    rand::rngs::OsRng
        .try_fill_bytes(seed.as_mut())
        .map_err(|e| IdentityError::Random(e.to_string()))?;
    let signing = SigningKey::from_bytes(&seed);
    let pem = signing
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| IdentityError::Random(format!("cannot encode the key: {e}")))?;

    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        LocalIssuer::KEY_FILE,
        uuid::Uuid::new_v4()
    ));
    let written = write_private(&tmp, pem.as_bytes());
    let linked = written.and_then(|()| {
        std::fs::hard_link(&tmp, path).or_else(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                Ok(()) // another process won the race: use its key below
            } else {
                Err(io_err("create", path)(e))
            }
        })
    });
    let _ = std::fs::remove_file(&tmp);
    linked?;
    sync_dir(dir);
    match read_key(path)? {
        Some(key) => {
            if key.verifying_key() == signing.verifying_key() {
                tracing::info!(path = %path.display(), "generated the local issuer key");
            }
            Ok(key)
        }
        None => Err(io_err("read", path)(std::io::ErrorKind::NotFound.into())),
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), IdentityError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(io_err("create", path))?;
    file.write_all(bytes).map_err(io_err("write", path))?;
    file.sync_all().map_err(io_err("write", path))
}

fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    #[cfg(not(unix))]
    let _ = dir;
}
