//! The TLS client configuration for a connection's upstream, per `upstream_tls`.
//!
//! Why in the core: every database adapter logs in upstream with the held credential, and
//! `upstream_tls` must mean the same for each (`prefer`/`require` encrypt without checking the
//! server's identity, like libpq's `sslmode=require`; `verify-full` checks the chain against
//! `upstream_ca_file` and the host name). One implementation, so the modes cannot drift apart.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use crate::config::{Connection, UpstreamTls};

/// The TLS client configuration `conn.upstream_tls` asks for (`None` for `disable`). Reads
/// the CA file for `verify-full`; the error says what is wrong in the operator's words.
pub fn client_config(conn: &Connection) -> Result<Option<Arc<rustls::ClientConfig>>, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    match conn.upstream_tls {
        UpstreamTls::Disable => Ok(None),
        UpstreamTls::Prefer | UpstreamTls::Require => {
            let cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(EncryptOnly(provider)))
                .with_no_client_auth();
            Ok(Some(Arc::new(cfg)))
        }
        UpstreamTls::VerifyFull => {
            let mut roots = rustls::RootCertStore::empty();
            let path = conn
                .upstream_ca_file
                .as_ref()
                .ok_or("upstream_tls = \"verify-full\" needs upstream_ca_file")?;
            let pem =
                std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(&pem) {
                let cert: CertificateDer<'static> =
                    cert.map_err(|e| format!("bad CA file: {e}"))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("bad CA certificate: {e}"))?;
            }
            let cfg = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .with_root_certificates(roots)
                .with_no_client_auth();
            Ok(Some(Arc::new(cfg)))
        }
    }
}

/// The host part of `host:port` (brackets of an IPv6 literal removed): the name TLS checks.
pub fn upstream_host(upstream: &str) -> String {
    upstream
        .rsplit_once(':')
        .map(|(h, _)| h.trim_start_matches('[').trim_end_matches(']').to_owned())
        .unwrap_or_else(|| upstream.to_owned())
}

/// The name to present in the TLS handshake.
pub fn server_name(host: &str) -> Result<ServerName<'static>, String> {
    ServerName::try_from(host.to_owned()).map_err(|e| format!("bad upstream host name: {e}"))
}

/// Certificate "verifier" for `prefer`/`require`: checks the handshake signature (so the
/// channel is really encrypted to the holder of the presented key) but not the chain.
#[derive(Debug)]
struct EncryptOnly(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
