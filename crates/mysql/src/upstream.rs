//! The gateway's own login to the upstream server with the credential it holds.
//!
//! The client never sees this exchange: the gateway answers the server's scramble itself
//! (`mysql_native_password`, `caching_sha2_password` fast path, or its full authentication
//! with the password inside TLS or encrypted to the server's pinned RSA key — never to a key
//! the server sends on request), so the credential never reaches the client and the
//! client's token never reaches the server. The login asks for the framing the client
//! negotiated with the gateway (EOF packets or not, multi-results), so result sets can be
//! relayed packet by packet; a server that cannot give it is refused, not translated.

use std::sync::Arc;
use std::time::Duration;

use gatehouse_core::config::{Connection, Secret, UpstreamTls};
use tokio::net::TcpStream;

use crate::auth::{caching_sha2_password, native_password};
use crate::capabilities::{
    CONNECT_WITH_DB, DEPRECATE_EOF, LONG_PASSWORD, MULTI_RESULTS, MULTI_STATEMENTS, PLUGIN_AUTH,
    PLUGIN_AUTH_LENENC_CLIENT_DATA, PROTOCOL_41, PS_MULTI_RESULTS, SECURE_CONNECTION, SSL,
    TRANSACTIONS,
};
use crate::messages::auth_switch::{CACHING_SHA2_PASSWORD, CLEAR_PASSWORD, NATIVE_PASSWORD};
use crate::messages::{
    AuthMoreData, AuthSwitchRequest, ErrPacket, HandshakeResponse41, HandshakeV10, MessageError,
    SslRequest,
};
use crate::rsa_exchange::PinnedServerKey;
use crate::stream::{Duplex, PacketStream, StreamError};

/// Capabilities that change how results are framed: the upstream must grant each one the
/// client was granted, or packets could not be relayed as they come.
pub const FRAMING: u32 = PROTOCOL_41 | DEPRECATE_EOF | MULTI_RESULTS | PS_MULTI_RESULTS;

/// The largest payload the gateway reads from an upstream.
const MAX_UPSTREAM_PAYLOAD: usize = 1 << 30;

/// Why the upstream login failed. Shown to operators (logs, the `login_failed` record), never
/// to clients verbatim.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot connect to upstream {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("upstream {0}: timed out")]
    Timeout(String),
    #[error("upstream: {0}")]
    Stream(#[from] StreamError),
    #[error("upstream sent an unexpected packet: {0}")]
    Message(#[from] MessageError),
    #[error("upstream refused TLS but upstream_tls requires it")]
    TlsRefused,
    #[error("upstream TLS: {0}")]
    Tls(String),
    #[error("upstream asked for authentication plugin {0:?}, which the gateway does not speak")]
    UnsupportedAuth(String),
    #[error(
        "caching_sha2_password full authentication needs TLS to the upstream \
         (upstream_tls = \"require\" or \"verify-full\") or the server's pinned RSA key \
         (upstream_rsa_public_key_file)"
    )]
    FullAuthNeedsTls,
    #[error("upstream_rsa_public_key_file: {0}")]
    PinnedKey(#[from] crate::rsa_exchange::PinnedKeyError),
    #[error("upstream_rsa_public_key_file {path}: {source}")]
    PinnedKeyFile {
        path: String,
        source: std::io::Error,
    },
    #[error("upstream does not support {0}, which the client uses")]
    MissingCapability(&'static str),
    #[error("upstream error {code} ({sqlstate}): {message}")]
    Server {
        code: u16,
        sqlstate: String,
        message: String,
    },
}

impl From<std::io::Error> for UpstreamError {
    fn from(e: std::io::Error) -> Self {
        Self::Stream(StreamError::Io(e))
    }
}

/// One configured MySQL upstream, ready to connect to.
pub struct MysqlTarget {
    pub name: String,
    pub addr: String,
    host: String,
    pub database: String,
    pub user: String,
    password: Option<Secret>,
    pub tls: UpstreamTls,
    tls_config: Option<Arc<rustls::ClientConfig>>,
    /// The server's pinned RSA key (`upstream_rsa_public_key_file`).
    rsa_key: Option<PinnedServerKey>,
}

impl std::fmt::Debug for MysqlTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MysqlTarget")
            .field("name", &self.name)
            .field("addr", &self.addr)
            .field("database", &self.database)
            .field("user", &self.user)
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

/// A logged-in upstream connection.
pub struct Upstream {
    pub stream: PacketStream<Box<dyn Duplex>>,
    /// The server's id for this connection (what `KILL` names).
    pub connection_id: u32,
    pub server_version: String,
    pub capabilities: u32,
    pub tls: bool,
}

impl MysqlTarget {
    pub fn new(conn: &Connection, password: Option<Secret>) -> Result<Self, UpstreamError> {
        Ok(Self {
            name: conn.name.clone(),
            addr: conn.upstream.clone(),
            host: gatehouse_core::upstream_tls::upstream_host(&conn.upstream),
            database: conn.database.clone(),
            user: conn.user.clone(),
            password,
            tls: conn.upstream_tls,
            tls_config: gatehouse_core::upstream_tls::client_config(conn)
                .map_err(UpstreamError::Tls)?,
            rsa_key: match &conn.upstream_rsa_public_key_file {
                Some(path) => {
                    let pem =
                        std::fs::read(path).map_err(|source| UpstreamError::PinnedKeyFile {
                            path: path.display().to_string(),
                            source,
                        })?;
                    Some(PinnedServerKey::from_pem(&pem)?)
                }
                None => None,
            },
        })
    }

    /// Connects and logs in with the held credential, asking for the capabilities in
    /// `client_caps` that shape results, within `deadline`.
    pub async fn connect(
        &self,
        client_caps: u32,
        charset: u8,
        deadline: Duration,
    ) -> Result<Upstream, UpstreamError> {
        match tokio::time::timeout(deadline, self.connect_inner(client_caps, charset)).await {
            Ok(r) => r,
            Err(_) => Err(UpstreamError::Timeout(self.addr.clone())),
        }
    }

    async fn connect_inner(
        &self,
        client_caps: u32,
        charset: u8,
    ) -> Result<Upstream, UpstreamError> {
        let tcp =
            TcpStream::connect(&self.addr)
                .await
                .map_err(|source| UpstreamError::Connect {
                    addr: self.addr.clone(),
                    source,
                })?;
        let _ = tcp.set_nodelay(true);
        let mut plain = PacketStream::new(tcp, MAX_UPSTREAM_PAYLOAD);
        let greeting = plain.read().await?;
        if greeting.payload.first() == Some(&0xff) {
            return Err(server_error(&greeting.payload));
        }
        let hello = HandshakeV10::parse(&greeting.payload)?;
        // LOCAL_FILES: the server may then ask for a client file, which the relay passes on
        // only for the client's own judged LOAD DATA LOCAL naming it.
        let wanted = (client_caps
            & (FRAMING
                | MULTI_STATEMENTS
                | crate::capabilities::FOUND_ROWS
                | crate::capabilities::LOCAL_FILES))
            | PROTOCOL_41
            | LONG_PASSWORD
            | TRANSACTIONS
            | SECURE_CONNECTION
            | PLUGIN_AUTH
            | PLUGIN_AUTH_LENENC_CLIENT_DATA
            | CONNECT_WITH_DB;
        let mut caps = wanted & hello.capabilities;
        if let Some(missing) = missing_framing(client_caps, caps) {
            return Err(UpstreamError::MissingCapability(missing));
        }
        let mut seq = greeting.next_seq();
        let (mut stream, tls): (PacketStream<Box<dyn Duplex>>, bool) = match &self.tls_config {
            Some(cfg) if hello.capabilities & SSL != 0 => {
                caps |= SSL;
                let mut req = Vec::new();
                SslRequest {
                    capabilities: caps,
                    max_packet: 1 << 24,
                    charset,
                }
                .encode(&mut req);
                seq = plain.send(&req, seq).await?;
                let tcp = plain.into_inner()?;
                let name = gatehouse_core::upstream_tls::server_name(&self.host)
                    .map_err(UpstreamError::Tls)?;
                let tls = tokio_rustls::TlsConnector::from(cfg.clone())
                    .connect(name, tcp)
                    .await
                    .map_err(|e| UpstreamError::Tls(e.to_string()))?;
                (PacketStream::new(Box::new(tls), MAX_UPSTREAM_PAYLOAD), true)
            }
            Some(_) if self.tls != UpstreamTls::Prefer => return Err(UpstreamError::TlsRefused),
            _ => (
                PacketStream::new(Box::new(plain.into_inner()?), MAX_UPSTREAM_PAYLOAD),
                false,
            ),
        };
        let password = self
            .password
            .as_ref()
            .map(|p| p.expose().as_bytes())
            .unwrap_or_default();
        let plugin = if hello.auth_plugin == CACHING_SHA2_PASSWORD {
            CACHING_SHA2_PASSWORD
        } else {
            NATIVE_PASSWORD
        };
        let mut login = Vec::new();
        HandshakeResponse41 {
            capabilities: caps,
            max_packet: 1 << 24,
            charset,
            user: self.user.as_bytes().to_vec(),
            auth_response: scramble_answer(plugin, password, &hello.auth_data, tls)?,
            database: Some(self.database.as_bytes().to_vec()),
            auth_plugin: Some(plugin.to_vec()),
            attributes: Vec::new(),
        }
        .encode(&mut login);
        stream.send(&login, seq).await?;
        let mut plugin = plugin.to_vec();
        // The scramble the server's last request carried (what an RSA-encrypted password is
        // XORed with).
        let mut scramble = crate::auth::scramble_20(&hello.auth_data).to_vec();
        loop {
            let p = stream.read().await?;
            let next = p.next_seq();
            match p.payload.first() {
                Some(0x00) => break,
                Some(0xff) => return Err(server_error(&p.payload)),
                Some(0xfe) => {
                    let switch = AuthSwitchRequest::parse(&p.payload)?;
                    let answer = scramble_answer(&switch.plugin, password, &switch.data, tls)?;
                    plugin = switch.plugin;
                    scramble = crate::auth::scramble_20(&switch.data).to_vec();
                    stream.send(&answer, next).await?;
                }
                Some(0x01) if plugin == CACHING_SHA2_PASSWORD => {
                    let more = AuthMoreData::parse(&p.payload)?;
                    match more.0.first() {
                        // Fast authentication succeeded: the OK follows.
                        Some(0x03) => {}
                        Some(0x04) if tls => {
                            let mut clear = password.to_vec();
                            clear.push(0);
                            stream.send(&clear, next).await?;
                        }
                        // Without TLS, only to the pinned key; never to a key the server
                        // (or whoever answers in its place) sends on request.
                        Some(0x04) => match &self.rsa_key {
                            Some(key) => {
                                let sent = key.encrypt(password, &scramble)?;
                                stream.send(&sent, next).await?;
                            }
                            None => return Err(UpstreamError::FullAuthNeedsTls),
                        },
                        _ => {
                            return Err(UpstreamError::UnsupportedAuth(
                                "caching_sha2_password (unknown step)".into(),
                            ));
                        }
                    }
                }
                Some(&found) => {
                    return Err(UpstreamError::Message(MessageError::Unexpected {
                        what: "login answer",
                        found,
                    }));
                }
                None => {
                    return Err(UpstreamError::Message(MessageError::Unsupported(
                        "an empty packet during login",
                    )));
                }
            }
        }
        Ok(Upstream {
            stream,
            connection_id: hello.connection_id,
            server_version: String::from_utf8_lossy(&hello.server_version).into_owned(),
            capabilities: caps,
            tls,
        })
    }
}

impl Upstream {
    /// Runs `sql` (the gateway's own query, between the client's commands) and returns the
    /// first row of its result, text values as sent.
    pub async fn query_row(&mut self, sql: &str) -> Result<Vec<Option<Vec<u8>>>, UpstreamError> {
        Ok(self
            .query_rows(sql)
            .await?
            .into_iter()
            .next()
            .unwrap_or_default())
    }

    /// Runs `sql` (the gateway's own query) and returns its rows, text values as sent, at most
    /// [`MAX_OWN_ROWS`] of them (the rest are read and dropped).
    pub async fn query_rows(
        &mut self,
        sql: &str,
    ) -> Result<Vec<Vec<Option<Vec<u8>>>>, UpstreamError> {
        let deprecate_eof = self.capabilities & DEPRECATE_EOF != 0;
        self.stream
            .send(&crate::messages::command::query(sql.as_bytes()), 0)
            .await?;
        let head = self.stream.read().await?;
        match head.payload.first() {
            Some(0xff) => return Err(server_error(&head.payload)),
            Some(0x00) => return Ok(Vec::new()),
            _ => {}
        }
        let columns = crate::wire::Reader::new(&head.payload)
            .lenenc("column count")
            .map_err(MessageError::from)?;
        let columns = usize::try_from(columns).unwrap_or(usize::MAX).min(4096);
        for _ in 0..columns + usize::from(!deprecate_eof) {
            self.stream.read().await?;
        }
        let mut rows = Vec::new();
        loop {
            let p = self.stream.read().await?;
            match p.payload.first() {
                Some(0xfe) if p.payload.len() < 0xff_ffff => break,
                Some(0xff) => return Err(server_error(&p.payload)),
                _ if rows.len() < MAX_OWN_ROWS => {
                    let values = crate::messages::command::text_row(&p.payload, columns)?;
                    rows.push(values.into_iter().map(|v| v.map(<[u8]>::to_vec)).collect());
                }
                _ => {}
            }
        }
        Ok(rows)
    }
}

/// The most rows the gateway keeps of its own queries (the views of a server).
pub const MAX_OWN_ROWS: usize = 100_000;

/// Which result-shaping capability the client has and `granted` lacks.
pub fn missing_framing(client: u32, granted: u32) -> Option<&'static str> {
    [
        (PROTOCOL_41, "CLIENT_PROTOCOL_41"),
        (DEPRECATE_EOF, "CLIENT_DEPRECATE_EOF"),
        (MULTI_RESULTS, "CLIENT_MULTI_RESULTS"),
        (PS_MULTI_RESULTS, "CLIENT_PS_MULTI_RESULTS"),
    ]
    .into_iter()
    .find(|(flag, _)| client & flag != 0 && granted & flag == 0)
    .map(|(_, name)| name)
}

/// The auth response for `plugin` to `scramble`.
fn scramble_answer(
    plugin: &[u8],
    password: &[u8],
    scramble: &[u8],
    tls: bool,
) -> Result<Vec<u8>, UpstreamError> {
    if plugin == NATIVE_PASSWORD {
        Ok(native_password(password, scramble))
    } else if plugin == CACHING_SHA2_PASSWORD {
        Ok(caching_sha2_password(password, scramble))
    } else if plugin == CLEAR_PASSWORD && tls {
        let mut clear = password.to_vec();
        clear.push(0);
        Ok(clear)
    } else {
        Err(UpstreamError::UnsupportedAuth(
            String::from_utf8_lossy(plugin).into_owned(),
        ))
    }
}

fn server_error(payload: &[u8]) -> UpstreamError {
    match ErrPacket::parse(payload) {
        Ok(e) => UpstreamError::Server {
            code: e.code,
            sqlstate: String::from_utf8_lossy(&e.sqlstate).into_owned(),
            message: String::from_utf8_lossy(&e.message).into_owned(),
        },
        Err(e) => UpstreamError::Message(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_must_grant_the_framing_the_client_agreed() {
        assert_eq!(
            missing_framing(PROTOCOL_41 | DEPRECATE_EOF, PROTOCOL_41),
            Some("CLIENT_DEPRECATE_EOF")
        );
        assert_eq!(
            missing_framing(PROTOCOL_41, PROTOCOL_41 | DEPRECATE_EOF),
            None
        );
        assert_eq!(
            missing_framing(MULTI_RESULTS, 0),
            Some("CLIENT_MULTI_RESULTS")
        );
    }
}
