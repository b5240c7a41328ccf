//! The gateway's own login to the upstream server with the credential it holds.
//!
//! The client never sees this exchange: its messages are consumed here, and only the
//! ParameterStatus values and the end of the startup are passed on (with a gateway-made
//! BackendKeyData instead of the server's).

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use gatehouse_core::config::{Connection, Secret, UpstreamTls};
use postgres_protocol::authentication::sasl::{ChannelBinding, SCRAM_SHA_256, ScramSha256};
use postgres_protocol::message::frontend;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::codec::{CodecError, Frame, FrameReader, Side};
use crate::messages::backend;
use crate::stream::{BoxRead, BoxWrite, split_any, split_tcp};

/// Why the upstream login failed. Shown to operators (logs), never to clients verbatim.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot connect to upstream {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("upstream {0}: timed out")]
    Timeout(String),
    #[error("upstream I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("upstream protocol: {0}")]
    Protocol(#[from] CodecError),
    #[error("upstream refused TLS but upstream_tls requires it")]
    TlsRefused,
    #[error("upstream TLS: {0}")]
    Tls(String),
    #[error("upstream asked for a password but the connection has none configured")]
    NoPassword,
    #[error("upstream authentication method {0} is not supported")]
    UnsupportedAuth(i32),
    #[error("upstream SCRAM: {0}")]
    Scram(String),
    #[error("upstream error {sqlstate}: {message}")]
    Server { sqlstate: String, message: String },
    #[error("upstream closed the connection during startup")]
    Closed,
    #[error("all {max} upstream connections (max_upstream) stayed busy for {waited:?}")]
    PoolExhausted { max: u32, waited: Duration },
}

/// One configured upstream, ready to connect to.
pub struct UpstreamTarget {
    pub name: String,
    pub addr: String,
    pub host: String,
    pub database: String,
    pub user: String,
    password: Option<Secret>,
    pub tls: UpstreamTls,
    tls_config: Option<Arc<rustls::ClientConfig>>,
    /// Server connections kept between sessions (`pool`, `max_upstream`).
    pub pool: crate::pool::UpstreamPool,
}

impl std::fmt::Debug for UpstreamTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTarget")
            .field("name", &self.name)
            .field("addr", &self.addr)
            .field("database", &self.database)
            .field("user", &self.user)
            .field("tls", &self.tls)
            .field("pool", &self.pool)
            .finish_non_exhaustive()
    }
}

impl UpstreamTarget {
    /// Prepares a target; reads the CA file for `verify-full`.
    pub fn new(conn: &Connection, password: Option<Secret>) -> Result<Self, UpstreamError> {
        let host = gatehouse_core::upstream_tls::upstream_host(&conn.upstream);
        let tls_config =
            gatehouse_core::upstream_tls::client_config(conn).map_err(UpstreamError::Tls)?;
        Ok(Self {
            name: conn.name.clone(),
            addr: conn.upstream.clone(),
            host,
            database: conn.database.clone(),
            user: conn.user.clone(),
            password,
            tls: conn.upstream_tls,
            tls_config,
            pool: crate::pool::UpstreamPool::new(conn),
        })
    }

    async fn open(&self) -> Result<(BoxRead, BoxWrite, bool), UpstreamError> {
        let mut tcp =
            TcpStream::connect(&self.addr)
                .await
                .map_err(|source| UpstreamError::Connect {
                    addr: self.addr.clone(),
                    source,
                })?;
        let _ = tcp.set_nodelay(true);
        let Some(cfg) = &self.tls_config else {
            let (r, w) = split_tcp(tcp);
            return Ok((r, w, false));
        };
        let mut buf = BytesMut::new();
        frontend::ssl_request(&mut buf);
        tcp.write_all(&buf).await?;
        let answer = tcp.read_u8().await?;
        if answer != b'S' {
            if self.tls == UpstreamTls::Prefer {
                let (r, w) = split_tcp(tcp);
                return Ok((r, w, false));
            }
            return Err(UpstreamError::TlsRefused);
        }
        let name =
            gatehouse_core::upstream_tls::server_name(&self.host).map_err(UpstreamError::Tls)?;
        let tls = tokio_rustls::TlsConnector::from(cfg.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| UpstreamError::Tls(e.to_string()))?;
        let (r, w) = split_any(tls);
        Ok((r, w, true))
    }

    /// Connects and logs in, with a deadline.
    pub async fn login(
        &self,
        params: &[(String, String)],
        deadline: Duration,
    ) -> Result<Upstream, UpstreamError> {
        tokio::time::timeout(deadline, self.login_inner(params))
            .await
            .map_err(|_| UpstreamError::Timeout(self.addr.clone()))?
    }

    async fn login_inner(&self, params: &[(String, String)]) -> Result<Upstream, UpstreamError> {
        let (read, mut write, tls) = self.open().await?;
        let mut conn = Upstream {
            read,
            buf: BytesMut::with_capacity(16 * 1024),
            reader: FrameReader::new(Side::Backend, crate::codec::LARGE_MESSAGE_LIMIT),
            write: None,
            params: Vec::new(),
            key: None,
            tls,
            startup: crate::pool::startup_key(params),
            permit: None,
            reused: false,
        };
        let mut out = BytesMut::new();
        let mut startup: Vec<(&str, &str)> =
            vec![("user", &self.user), ("database", &self.database)];
        for (k, v) in params {
            startup.push((k, v));
        }
        frontend::startup_message(startup.iter().copied(), &mut out)?;
        write.write_all(&out).await?;
        write.flush().await?;

        let mut scram: Option<ScramSha256> = None;
        loop {
            let frame = conn.next().await?;
            match frame.tag() {
                b'R' => {
                    let (code, data) = backend::auth_request(&frame)?;
                    out.clear();
                    match code {
                        0 => {}
                        3 => {
                            let pw = self.password.as_ref().ok_or(UpstreamError::NoPassword)?;
                            frontend::password_message(pw.expose().as_bytes(), &mut out)?;
                        }
                        5 => {
                            let pw = self.password.as_ref().ok_or(UpstreamError::NoPassword)?;
                            let salt: [u8; 4] = data
                                .get(..4)
                                .and_then(|s| s.try_into().ok())
                                .ok_or(CodecError::Malformed {
                                    what: "AuthenticationMD5",
                                })?;
                            let hash = postgres_protocol::authentication::md5_hash(
                                self.user.as_bytes(),
                                pw.expose().as_bytes(),
                                salt,
                            );
                            frontend::password_message(hash.as_bytes(), &mut out)?;
                        }
                        10 => {
                            let pw = self.password.as_ref().ok_or(UpstreamError::NoPassword)?;
                            let offered = data
                                .split(|&b| b == 0)
                                .any(|m| m == SCRAM_SHA_256.as_bytes());
                            if !offered {
                                return Err(UpstreamError::UnsupportedAuth(code));
                            }
                            let s = ScramSha256::new(
                                pw.expose().as_bytes(),
                                ChannelBinding::unsupported(),
                            );
                            frontend::sasl_initial_response(SCRAM_SHA_256, s.message(), &mut out)?;
                            scram = Some(s);
                        }
                        11 => {
                            let s = scram
                                .as_mut()
                                .ok_or(UpstreamError::Scram("SASLContinue without SASL".into()))?;
                            s.update(&data)
                                .map_err(|e| UpstreamError::Scram(e.to_string()))?;
                            frontend::sasl_response(s.message(), &mut out)?;
                        }
                        12 => {
                            let s = scram
                                .as_mut()
                                .ok_or(UpstreamError::Scram("SASLFinal without SASL".into()))?;
                            s.finish(&data)
                                .map_err(|e| UpstreamError::Scram(e.to_string()))?;
                        }
                        other => return Err(UpstreamError::UnsupportedAuth(other)),
                    }
                    if !out.is_empty() {
                        write.write_all(&out).await?;
                        write.flush().await?;
                    }
                }
                b'E' => {
                    let f = backend::error_fields(&frame)?;
                    return Err(UpstreamError::Server {
                        sqlstate: f.sqlstate,
                        message: f.message,
                    });
                }
                b'S' => conn.params.push(backend::parameter(&frame)?),
                b'K' => conn.key = Some(backend::backend_key(&frame)?),
                b'N' | b'v' => {}
                b'Z' => break,
                _ => {
                    return Err(UpstreamError::Protocol(CodecError::Malformed {
                        what: "upstream startup",
                    }));
                }
            }
        }
        conn.write = Some(write);
        Ok(conn)
    }

    /// Sends a CancelRequest for the upstream backend `pid`/`secret`.
    pub async fn cancel(&self, pid: i32, secret: &Bytes) -> Result<(), UpstreamError> {
        let (_read, mut write, _) = self.open().await?;
        let mut buf = BytesMut::new();
        let len = i32::try_from(12 + secret.len()).unwrap_or(16);
        buf.extend_from_slice(&len.to_be_bytes());
        buf.extend_from_slice(&crate::messages::startup::CANCEL_REQUEST.to_be_bytes());
        buf.extend_from_slice(&pid.to_be_bytes());
        buf.extend_from_slice(secret);
        write.write_all(&buf).await?;
        write.shutdown().await?;
        Ok(())
    }
}

/// A logged-in upstream connection.
pub struct Upstream {
    pub read: BoxRead,
    /// Bytes read past the end of startup (belong to the relay).
    pub buf: BytesMut,
    reader: FrameReader,
    pub write: Option<BoxWrite>,
    pub params: Vec<(String, String)>,
    pub key: Option<(i32, Bytes)>,
    pub tls: bool,
    /// The startup parameters it was opened with (sorted): the pool's key.
    pub(crate) startup: Vec<(String, String)>,
    /// Its place among the connection's `max_upstream` (none: a gateway-own connection).
    pub(crate) permit: Option<tokio::sync::OwnedSemaphorePermit>,
    /// It served an earlier session (and was reset since).
    pub reused: bool,
}

impl Upstream {
    /// Runs one simple query on this (gateway-owned) connection and returns its text rows.
    /// Used for the gateway's own catalog lookups, never for client traffic.
    pub async fn simple_rows(
        &mut self,
        sql: &str,
    ) -> Result<Vec<Vec<Option<String>>>, UpstreamError> {
        let write = self.write.as_mut().ok_or(UpstreamError::Closed)?;
        write
            .write_all(&crate::messages::frontend::build_query(sql))
            .await?;
        let mut rows = Vec::new();
        let mut error = None;
        loop {
            let frame = self.next().await?;
            match frame.tag() {
                b'D' => rows.push(
                    backend::data_row_values(&frame)?
                        .into_iter()
                        .map(|v| v.map(|b| String::from_utf8_lossy(&b).into_owned()))
                        .collect(),
                ),
                b'E' => {
                    let f = backend::error_fields(&frame)?;
                    error = Some(UpstreamError::Server {
                        sqlstate: f.sqlstate,
                        message: f.message,
                    });
                }
                b'Z' => break,
                _ => {}
            }
        }
        match error {
            Some(e) => Err(e),
            None => Ok(rows),
        }
    }

    pub(crate) async fn next(&mut self) -> Result<Frame, UpstreamError> {
        loop {
            if let Some(f) = self.reader.next_frame(&mut self.buf)? {
                return Ok(f);
            }
            if self.read.read_buf(&mut self.buf).await? == 0 {
                return Err(UpstreamError::Closed);
            }
        }
    }
}
