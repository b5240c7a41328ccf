//! Connection startup: TLS and protocol negotiation, token authentication, upstream login.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use gatehouse_core::audit::detail::SessionStarted;
use gatehouse_core::session::{LoginAttempt, LoginRefusal, Session};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::Shared;
use crate::cancel::{CancelGuard, CancelTarget};
use crate::codec::{CodecError, FrameReader, Side};
use crate::messages::backend::{self, Severity};
use crate::messages::frontend;
use crate::messages::startup::{StartupPacket, parse_startup, startup_len};
use crate::stream::{BoxRead, BoxWrite, split_any, split_tcp};
use crate::upstream::Upstream;

use super::parameters::{session_parameters, upstream_state_refusal};

/// A logged-in session, ready to relay.
pub(crate) struct Established {
    /// The admitted session (its records go through it; dropping it records its end).
    pub session: Session,
    pub client_read: BoxRead,
    pub client_write: BoxWrite,
    /// Client bytes already read past the startup.
    pub client_buf: BytesMut,
    pub upstream: Upstream,
    /// The client's `search_path` startup parameter, if any.
    pub search_path: Option<String>,
    /// The client's `application_name` (an agent's justification for approvals).
    pub application_name: Option<String>,
    pub _cancel: CancelGuard,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum StartupError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("protocol: {0}")]
    Codec(#[from] CodecError),
    #[error("timed out")]
    Timeout,
    #[error("refused: {0}")]
    Refused(String),
}

/// Runs the startup. `Ok(None)` means the connection was fully handled (cancel request,
/// refusal already answered).
pub(crate) async fn establish(
    shared: &Arc<Shared>,
    tcp: TcpStream,
    peer: SocketAddr,
) -> Result<Option<Established>, StartupError> {
    match tokio::time::timeout(shared.startup_timeout, establish_inner(shared, tcp, peer)).await {
        Ok(r) => r,
        Err(_) => Err(StartupError::Timeout),
    }
}

async fn read_packet<R: AsyncRead + Unpin>(r: &mut R) -> Result<StartupPacket, StartupError> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len).await?;
    let len = startup_len(len)?;
    let mut body = vec![0u8; len - 4];
    r.read_exact(&mut body).await?;
    Ok(parse_startup(Bytes::from(body))?)
}

async fn fatal<W: AsyncWrite + Unpin>(
    w: &mut W,
    sqlstate: &str,
    msg: &str,
) -> Result<Option<Established>, StartupError> {
    w.write_all(&backend::error_response(
        Severity::Fatal,
        sqlstate,
        msg,
        None,
    ))
    .await?;
    let _ = w.shutdown().await;
    Err(StartupError::Refused(msg.to_owned()))
}

async fn establish_inner(
    shared: &Arc<Shared>,
    mut tcp: TcpStream,
    peer: SocketAddr,
) -> Result<Option<Established>, StartupError> {
    // Negotiation happens on the raw socket; after TLS, the rest goes through the TLS stream.
    let (mut read, mut write, tls, startup) = loop {
        match read_packet(&mut tcp).await {
            Ok(StartupPacket::GssEncRequest) => tcp.write_all(b"N").await?,
            Ok(StartupPacket::SslRequest) => match &shared.tls {
                Some(cfg) => {
                    tcp.write_all(b"S").await?;
                    let acceptor = tokio_rustls::TlsAcceptor::from(cfg.clone());
                    let stream = acceptor.accept(tcp).await?;
                    let (mut r, w) = split_any(stream);
                    let packet = read_packet(&mut r).await?;
                    break (r, w, true, packet);
                }
                None => tcp.write_all(b"N").await?,
            },
            Ok(packet) => {
                let (r, w) = split_tcp(tcp);
                break (r, w, false, packet);
            }
            Err(StartupError::Codec(e)) => {
                return fatal(&mut tcp, "08P01", &format!("invalid startup packet: {e}")).await;
            }
            Err(e) => return Err(e),
        }
    };
    let msg = match startup {
        StartupPacket::Cancel { pid, secret } => {
            handle_cancel(shared, pid, &secret).await;
            return Ok(None);
        }
        StartupPacket::Startup(m) => m,
        StartupPacket::SslRequest | StartupPacket::GssEncRequest => {
            return fatal(&mut write, "08P01", "encryption negotiated twice").await;
        }
    };
    if msg.major != 3 {
        return fatal(
            &mut write,
            "0A000",
            &format!(
                "unsupported frontend protocol {}.{}: Gatehouse supports 3.0",
                msg.major, msg.minor
            ),
        )
        .await;
    }
    let attempt = LoginAttempt {
        peer: peer.to_string(),
        connection: Some(
            msg.get("database")
                .or_else(|| msg.get("user"))
                .unwrap_or("")
                .to_owned(),
        ),
        client_user: msg.get("user").map(str::to_owned),
        application_name: msg.get("application_name").map(str::to_owned),
    };
    let gate = &shared.gate;
    if shared.tls_required && !tls {
        let r = gate
            .refuse(&attempt, None, LoginRefusal::TlsRequired, sqlstate_of)
            .await;
        return refuse(&mut write, &r).await;
    }
    let passthrough = match session_parameters(&msg.params) {
        Ok(p) => p,
        Err(problem) => {
            let refusal = LoginRefusal::Parameter(problem.to_string());
            let r = gate.refuse(&attempt, None, refusal, sqlstate_of).await;
            return refuse(&mut write, &r).await;
        }
    };
    // Protocol 3.2 or `_pq_.` extensions: answer with what we speak (3.0, no extensions).
    let unsupported: Vec<String> = msg
        .params
        .iter()
        .filter(|(k, _)| k.starts_with("_pq_."))
        .map(|(k, _)| k.clone())
        .collect();
    if msg.minor > 0 || !unsupported.is_empty() {
        write
            .write_all(&backend::negotiate_protocol_version(0, &unsupported))
            .await?;
    }

    // Authenticate: the password is the token.
    write.write_all(&backend::auth_cleartext()).await?;
    write.flush().await?;
    let mut buf = BytesMut::with_capacity(4096);
    let reader = FrameReader::new(Side::Frontend, 64 * 1024);
    let frame = loop {
        match reader.next_frame(&mut buf) {
            Ok(Some(f)) => break f,
            Ok(None) => {
                if read.read_buf(&mut buf).await? == 0 {
                    return Err(StartupError::Refused(
                        "client left during authentication".into(),
                    ));
                }
            }
            Err(e) => {
                return fatal(
                    &mut write,
                    "08P01",
                    &format!("invalid authentication message: {e}"),
                )
                .await;
            }
        }
    };
    let token = match frontend::password(&frame) {
        Ok(t) => t,
        Err(_) => {
            return fatal(
                &mut write,
                "08P01",
                "expected a password message carrying a token",
            )
            .await;
        }
    };
    let token = String::from_utf8_lossy(&token).into_owned();
    let admitted = gate.admit(&attempt, token.trim(), sqlstate_of).await;
    drop(token);
    let admitted = match admitted {
        Ok(a) => a,
        Err(r) => return refuse(&mut write, &r).await,
    };
    let connection = admitted.connection.clone();
    let Some(target) = shared.upstreams.get(&connection) else {
        // A connection the gate knows but this adapter does not serve.
        let refusal = LoginRefusal::UnknownConnection(connection);
        let r = gate
            .refuse(&attempt, Some(&admitted.principal), refusal, sqlstate_of)
            .await;
        return refuse(&mut write, &r).await;
    };
    let mut session = Session::new(gate.clone(), admitted, peer.to_string());

    let upstream = match target.checkout(&passthrough, Duration::from_secs(10)).await {
        Ok(u) => u,
        Err(e) => {
            let exhausted = matches!(e, crate::upstream::UpstreamError::PoolExhausted { .. });
            let (sqlstate, reason, client_msg) = if exhausted {
                tracing::warn!(connection = %connection, error = %e, "no upstream connection free");
                (
                    "53300",
                    "pool_exhausted",
                    format!(
                        "Gatehouse has no free upstream connection for \"{connection}\": {e}; \
                         try again later"
                    ),
                )
            } else {
                tracing::warn!(connection = %connection, error = %e, "upstream login failed");
                (
                    "08001",
                    "upstream_unavailable",
                    format!("Gatehouse could not connect to the upstream of \"{connection}\""),
                )
            };
            session
                .fail(&attempt, reason, sqlstate, e.to_string())
                .await;
            return fatal(&mut write, sqlstate, &client_msg).await;
        }
    };

    // The server must start in a state the gateway parses as it does (a role or database
    // default set outside the gateway could say otherwise).
    if let Some(problem) = upstream_state_refusal(&upstream.params) {
        tracing::warn!(connection = %connection, %problem, "upstream session state refused");
        session
            .fail(&attempt, "upstream_state_refused", "42501", problem.clone())
            .await;
        return fatal(
            &mut write,
            "42501",
            &format!("Gatehouse refuses this session: {problem}"),
        )
        .await;
    }

    // The session is recorded before the client may send anything (fail closed).
    let mut adapter = serde_json::Map::new();
    adapter.insert(
        "protocol_version".into(),
        format!("{}.{}", msg.major, msg.minor).into(),
    );
    adapter.insert("upstream_tls".into(), upstream.tls.into());
    adapter.insert("upstream_reused".into(), upstream.reused.into());
    adapter.insert(
        "upstream_pid".into(),
        upstream.key.as_ref().map(|k| k.0).into(),
    );
    let started = SessionStarted {
        tls,
        application_name: attempt.application_name.clone(),
        client_user: attempt.client_user.clone(),
        grant: None,
        protocol: "postgres",
        adapter,
    };
    if session.start(started).await.is_err() {
        return fatal(
            &mut write,
            "58000",
            "Gatehouse cannot record this session (audit store unavailable); refusing to proceed",
        )
        .await;
    }

    let (upstream_pid, upstream_secret) = upstream
        .key
        .clone()
        .unwrap_or((0, Bytes::from_static(&[0, 0, 0, 0])));
    let (pid, secret, guard) = shared.cancel.register(CancelTarget {
        connection: connection.clone(),
        upstream_pid,
        upstream_secret,
    });
    let mut out = BytesMut::new();
    out.extend_from_slice(&backend::auth_ok());
    for (k, v) in &upstream.params {
        out.extend_from_slice(&backend::parameter_status(k, v));
    }
    out.extend_from_slice(&backend::backend_key_data(pid, secret));
    out.extend_from_slice(&backend::ready_for_query(b'I'));
    write.write_all(&out).await?;
    write.flush().await?;

    Ok(Some(Established {
        session,
        client_read: read,
        client_write: write,
        client_buf: buf,
        upstream,
        search_path: passthrough
            .iter()
            .find(|(k, _)| k == "search_path")
            .map(|(_, v)| v.clone()),
        application_name: attempt.application_name,
        _cancel: guard,
    }))
}

/// The SQLSTATE a refused login is answered (and recorded) with.
fn sqlstate_of(r: &LoginRefusal) -> &'static str {
    match r {
        LoginRefusal::TlsRequired | LoginRefusal::GroupNotAllowed { .. } => "28000",
        LoginRefusal::Parameter(_) => "42501",
        LoginRefusal::Authentication(_) => "28P01",
        LoginRefusal::UnknownConnection(_) => "3D000",
    }
}

/// Answers a refused login in PostgreSQL's words.
async fn refuse<W: AsyncWrite + Unpin>(
    w: &mut W,
    r: &LoginRefusal,
) -> Result<Option<Established>, StartupError> {
    let msg = match r {
        LoginRefusal::TlsRequired => {
            "Gatehouse requires TLS (tls.require = true): connect with sslmode=require".to_owned()
        }
        LoginRefusal::UnknownConnection(c) => {
            format!("database \"{c}\" does not exist (no such Gatehouse connection)")
        }
        other => other.to_string(),
    };
    fatal(w, sqlstate_of(r), &msg).await
}

async fn handle_cancel(shared: &Shared, pid: i32, secret: &Bytes) {
    let Some(target) = shared.cancel.lookup(pid, secret) else {
        metrics::counter!("gatehouse_cancel_requests_total", "result" => "unknown").increment(1);
        return;
    };
    let Some(upstream) = shared.upstreams.get(&target.connection) else {
        return;
    };
    match upstream
        .cancel(target.upstream_pid, &target.upstream_secret)
        .await
    {
        Ok(()) => metrics::counter!("gatehouse_cancel_requests_total", "result" => "forwarded")
            .increment(1),
        Err(e) => tracing::warn!(error = %e, "forwarding a cancel request failed"),
    }
}
