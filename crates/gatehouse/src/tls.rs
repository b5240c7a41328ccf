//! The client-facing TLS certificate: configured files, or a CA and server certificate
//! generated into `data_dir` on first start (so `sslmode=verify-full` works with
//! `sslrootcert=data_dir/ca.crt`).

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

pub const CA_CERT: &str = "ca.crt";
pub const SERVER_CERT: &str = "server.crt";
pub const SERVER_KEY: &str = "server.key";

/// Builds the rustls server config from the configured or generated certificate.
pub fn server_config(
    cert: Option<&Path>,
    key: Option<&Path>,
    data_dir: &Path,
) -> Result<Arc<rustls::ServerConfig>> {
    let (cert_path, key_path) = match (cert, key) {
        (Some(c), Some(k)) => (c.to_owned(), k.to_owned()),
        _ => {
            ensure_generated(data_dir)?;
            (data_dir.join(SERVER_CERT), data_dir.join(SERVER_KEY))
        }
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert_path)
        .with_context(|| format!("tls.cert: cannot read {}", cert_path.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("tls.cert: {} is not a PEM certificate", cert_path.display()))?;
    if certs.is_empty() {
        bail!("tls.cert: {} holds no certificate", cert_path.display());
    }
    let key = PrivateKeyDer::from_pem_file(&key_path).with_context(|| {
        format!(
            "tls.key: cannot read a private key from {}",
            key_path.display()
        )
    })?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("tls: protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("tls: certificate and key do not match")?;
    Ok(Arc::new(cfg))
}

/// Generates `ca.crt` and a server certificate for localhost/127.0.0.1/::1 signed by it.
fn ensure_generated(data_dir: &Path) -> Result<()> {
    let cert_path = data_dir.join(SERVER_CERT);
    let key_path = data_dir.join(SERVER_KEY);
    if cert_path.exists() && key_path.exists() {
        return Ok(());
    }
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("data_dir: cannot create {}", data_dir.display()))?;
    let ca_key = rcgen::KeyPair::generate().context("tls: generating CA key")?;
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Gatehouse local CA");
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let ca = ca_params.self_signed(&ca_key).context("tls: signing CA")?;
    let issuer = rcgen::Issuer::new(ca_params, ca_key);

    let key = rcgen::KeyPair::generate().context("tls: generating server key")?;
    let mut params = rcgen::CertificateParams::new(vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ])?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "gatehouse");
    let cert = params
        .signed_by(&key, &issuer)
        .context("tls: signing server cert")?;

    write_file(&data_dir.join(CA_CERT), ca.pem().as_bytes(), 0o644)?;
    write_file(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
    write_file(&cert_path, cert.pem().as_bytes(), 0o644)?;
    Ok(())
}

fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(bytes)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}
