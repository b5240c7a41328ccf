//! `kind = "syslog"`: the trail as RFC 5424 messages to a syslog receiver, over UDP, TCP or
//! TLS (RFC 5425, the server certificate always verified).

use std::sync::Arc;

use gatehouse_core::audit::AuditRecord;
use gatehouse_core::config::{AuditSink, SyslogProtocol};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::IO_TIMEOUT;
use super::error::{DeliveryError, OutputError};
use crate::export::cef_severity;

/// A UDP syslog message is cut to this many bytes (one datagram).
const UDP_MAX: usize = 60_000;

/// RFC 5424 messages over UDP (one datagram each), TCP or TLS (RFC 6587 octet counting).
pub(super) struct SyslogOut {
    address: String,
    protocol: SyslogProtocol,
    hostname: String,
    /// `protocol = "tls"`: the connector and the name the server certificate must match.
    tls: Option<(
        tokio_rustls::TlsConnector,
        rustls_pki_types::ServerName<'static>,
    )>,
    /// The TCP or TLS connection (kept open between batches).
    stream: Option<Box<dyn AsyncWrite + Unpin + Send>>,
    udp: Option<tokio::net::UdpSocket>,
}

impl SyslogOut {
    pub(super) fn new(s: &AuditSink) -> Result<Self, OutputError> {
        Ok(Self {
            address: s.address.clone().ok_or(OutputError::Missing("address"))?,
            protocol: s.protocol(),
            hostname: hostname(),
            tls: match s.protocol() {
                SyslogProtocol::Tls => Some(syslog_tls(s)?),
                _ => None,
            },
            stream: None,
            udp: None,
        })
    }
}

/// The TLS client of a `protocol = "tls"` syslog sink: only the `ca_file` roots when set,
/// else the platform trust store (like the HTTP clients); the certificate is always verified.
fn syslog_tls(
    s: &AuditSink,
) -> Result<
    (
        tokio_rustls::TlsConnector,
        rustls_pki_types::ServerName<'static>,
    ),
    OutputError,
> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(OutputError::Tls)?;
    let cfg = match &s.ca_file {
        Some(path) => {
            let pem = std::fs::read(path).map_err(|source| OutputError::CaRead {
                path: path.clone(),
                source,
            })?;
            let mut roots = rustls::RootCertStore::empty();
            for cert in rustls_pki_types::pem::PemObject::pem_slice_iter(&pem) {
                let cert: rustls_pki_types::CertificateDer<'static> =
                    cert.map_err(|error| OutputError::CaNotPem {
                        path: path.clone(),
                        error,
                    })?;
                roots.add(cert).map_err(|error| OutputError::CaRejected {
                    path: path.clone(),
                    error,
                })?;
            }
            if roots.is_empty() {
                return Err(OutputError::CaEmpty(path.clone()));
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        None => {
            use rustls_platform_verifier::BuilderVerifierExt;
            builder
                .with_platform_verifier()
                .map_err(OutputError::PlatformTrust)?
                .with_no_client_auth()
        }
    };
    let name = s.tls_server_name().ok_or(OutputError::Missing("address"))?;
    let name = rustls_pki_types::ServerName::try_from(name).map_err(OutputError::ServerName)?;
    Ok((tokio_rustls::TlsConnector::from(Arc::new(cfg)), name))
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_graphic()))
        .unwrap_or_else(|| "-".to_owned())
}

/// An RFC 5424 message: facility `log audit` (13); warning for the records CEF rates 7 or
/// more, notice otherwise; APP-NAME `gatehouse`, MSGID the record kind.
pub fn syslog_message(hostname: &str, r: &AuditRecord, body: &str) -> String {
    let severity = if cef_severity(r) >= 7 { 4 } else { 5 };
    format!(
        "<{}>1 {} {hostname} gatehouse - {} - {body}",
        13 * 8 + severity,
        r.event.time,
        r.event.kind.as_str()
    )
}

impl SyslogOut {
    pub(super) async fn send(
        &mut self,
        records: &[AuditRecord],
        lines: &[String],
    ) -> Result<(), DeliveryError> {
        match self.protocol {
            SyslogProtocol::Tcp | SyslogProtocol::Tls => {
                let mut buf = Vec::new();
                for (r, line) in records.iter().zip(lines) {
                    let msg = syslog_message(&self.hostname, r, line);
                    buf.extend_from_slice(format!("{} ", msg.len()).as_bytes());
                    buf.extend_from_slice(msg.as_bytes());
                }
                if self.stream.is_none() {
                    let tcp = tokio::time::timeout(
                        IO_TIMEOUT,
                        tokio::net::TcpStream::connect(&self.address),
                    )
                    .await
                    .map_err(|_| DeliveryError::ConnectTimeout(self.address.clone()))?
                    .map_err(|source| DeliveryError::Connect {
                        address: self.address.clone(),
                        source,
                    })?;
                    self.stream = Some(match &self.tls {
                        None => Box::new(tcp),
                        Some((connector, name)) => Box::new(
                            tokio::time::timeout(IO_TIMEOUT, connector.connect(name.clone(), tcp))
                                .await
                                .map_err(|_| DeliveryError::HandshakeTimeout(self.address.clone()))?
                                .map_err(|source| DeliveryError::Handshake {
                                    address: self.address.clone(),
                                    source,
                                })?,
                        ),
                    });
                }
                let Some(s) = self.stream.as_mut() else {
                    return Err(DeliveryError::NotConnected);
                };
                let sent = tokio::time::timeout(IO_TIMEOUT, async {
                    s.write_all(&buf).await?;
                    s.flush().await
                })
                .await;
                match sent {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(source)) => {
                        self.stream = None;
                        Err(DeliveryError::Send {
                            address: self.address.clone(),
                            source,
                        })
                    }
                    Err(_) => {
                        self.stream = None;
                        Err(DeliveryError::SendTimeout(self.address.clone()))
                    }
                }
            }
            SyslogProtocol::Udp => {
                if self.udp.is_none() {
                    let sock = tokio::net::UdpSocket::bind(if self.address.starts_with('[') {
                        "[::]:0"
                    } else {
                        "0.0.0.0:0"
                    })
                    .await?;
                    sock.connect(&self.address)
                        .await
                        .map_err(|source| DeliveryError::Resolve {
                            address: self.address.clone(),
                            source,
                        })?;
                    self.udp = Some(sock);
                }
                let Some(sock) = self.udp.as_ref() else {
                    return Err(DeliveryError::NoSocket);
                };
                for (r, line) in records.iter().zip(lines) {
                    let msg = syslog_message(&self.hostname, r, line);
                    let bytes = msg.as_bytes();
                    let bytes = bytes.get(..UDP_MAX.min(bytes.len())).unwrap_or(bytes);
                    if let Err(source) = sock.send(bytes).await {
                        self.udp = None;
                        return Err(DeliveryError::Send {
                            address: self.address.clone(),
                            source,
                        });
                    }
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_core::audit::{AuditEvent, RecordKind};

    #[test]
    fn syslog_message_is_rfc5424() {
        let mut ev = AuditEvent::new(RecordKind::LoginFailed, "s");
        ev.time = "2026-01-02T03:04:05.000001Z".into();
        let r = AuditRecord {
            seq: 1,
            event: ev,
            prev_hash: "a".into(),
            hash: "b".into(),
        };
        assert_eq!(
            syslog_message("h", &r, "body"),
            "<108>1 2026-01-02T03:04:05.000001Z h gatehouse - login_failed - body"
        );
    }
}
