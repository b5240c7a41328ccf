//! Connection startup: TLS and protocol negotiation, token authentication, upstream login.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use gatehouse_core::audit::{AuditEvent, RecordKind};
use gatehouse_core::identity::Principal;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{SessionInfo, Shared};
use crate::cancel::{CancelGuard, CancelTarget};
use crate::codec::{CodecError, FrameReader, Side};
use crate::messages::backend::{self, Severity};
use crate::messages::frontend;
use crate::messages::startup::{StartupMessage, StartupPacket, parse_startup, startup_len};
use crate::stream::{BoxRead, BoxWrite, split_any, split_tcp};
use crate::upstream::Upstream;

use super::parameters::{session_parameters, upstream_state_refusal};

/// A logged-in session, ready to relay.
pub(crate) struct Established {
    pub info: SessionInfo,
    pub client_read: BoxRead,
    pub client_write: BoxWrite,
    /// Client bytes already read past the startup.
    pub client_buf: BytesMut,
    pub upstream: Upstream,
    /// The client's `search_path` startup parameter, if any.
    pub search_path: Option<String>,
    /// The client's `application_name` (an agent's justification for approvals).
    pub application_name: Option<String>,
    /// The access grant that admitted the session (the identity is not in `allow_groups`):
    /// the session ends when the grant expires or is revoked.
    pub grant: Option<gatehouse_core::grants::Admission>,
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
    if shared.tls_required && !tls {
        let _ = audit_login_failed(shared, peer, &msg, ("tls_required", "28000"), None).await;
        return fatal(
            &mut write,
            "28000",
            "Gatehouse requires TLS (tls.require = true): connect with sslmode=require",
        )
        .await;
    }
    let passthrough = match session_parameters(&msg.params) {
        Ok(p) => p,
        Err(problem) => {
            let _ =
                audit_login_failed(shared, peer, &msg, ("parameter_refused", "42501"), None).await;
            return fatal(&mut write, "42501", &problem.to_string()).await;
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
    let principal = match shared.verifier.verify(token.trim()).await {
        Ok(p) => p,
        Err(e) => {
            metrics::counter!("gatehouse_auth_failures_total", "reason" => e.reason_code())
                .increment(1);
            let _ = audit_login_failed(shared, peer, &msg, (e.reason_code(), "28P01"), None).await;
            return fatal(&mut write, "28P01", &format!("authentication failed: {e}")).await;
        }
    };
    drop(token);

    let connection = msg
        .get("database")
        .or_else(|| msg.get("user"))
        .unwrap_or("")
        .to_owned();
    let (Some(target), Some(allowed)) = (
        shared.upstreams.get(&connection),
        shared.allow_groups.get(&connection),
    ) else {
        let _ = audit_login_failed(
            shared,
            peer,
            &msg,
            ("unknown_connection", "3D000"),
            Some(&principal),
        )
        .await;
        return fatal(
            &mut write,
            "3D000",
            &format!("database \"{connection}\" does not exist (no such Gatehouse connection)"),
        )
        .await;
    };
    let in_allow_groups = allowed
        .iter()
        .any(|g| g == "*" || principal.groups.iter().any(|h| h == g));
    // Not in allow_groups: an active access grant for this identity admits it all the same.
    let grant = if in_allow_groups {
        None
    } else {
        shared.grants.admits(&principal, &connection)
    };
    if !in_allow_groups && grant.is_none() {
        metrics::counter!("gatehouse_auth_failures_total", "reason" => "group_not_allowed")
            .increment(1);
        let _ = audit_login_failed(
            shared,
            peer,
            &msg,
            ("group_not_allowed", "28000"),
            Some(&principal),
        )
        .await;
        return fatal(
            &mut write,
            "28000",
            &format!(
                "identity \"{}\" is not in any group allowed to use connection \"{connection}\"",
                principal.subject
            ),
        )
        .await;
    }

    let info = SessionInfo {
        id: uuid::Uuid::now_v7().to_string(),
        principal,
        client_addr: peer.to_string(),
        connection: connection.clone(),
        started: Instant::now(),
    };

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
            let mut ev = info.event(RecordKind::LoginFailed);
            ev.sqlstate = Some(sqlstate.to_owned());
            ev.outcome = Some(gatehouse_core::audit::Outcome::Error);
            ev = ev.with_detail(serde_json::json!({
                "reason": reason,
                "error": e.to_string(),
                "client_user": msg.get("user"),
                "application_name": msg.get("application_name"),
            }));
            let _ = shared.auditor.record(ev).await;
            return fatal(&mut write, sqlstate, &client_msg).await;
        }
    };

    // The server must start in a state the gateway parses as it does (a role or database
    // default set outside the gateway could say otherwise).
    if let Some(problem) = upstream_state_refusal(&upstream.params) {
        tracing::warn!(connection = %connection, %problem, "upstream session state refused");
        let mut ev = info.event(RecordKind::LoginFailed);
        ev.sqlstate = Some("42501".to_owned());
        ev.outcome = Some(gatehouse_core::audit::Outcome::Error);
        ev = ev.with_detail(serde_json::json!({
            "reason": "upstream_state_refused",
            "error": problem,
            "client_user": msg.get("user"),
        }));
        let _ = shared.auditor.record(ev).await;
        return fatal(
            &mut write,
            "42501",
            &format!("Gatehouse refuses this session: {problem}"),
        )
        .await;
    }

    // A session admitted by a grant records the use first (fail closed like the start).
    if let Some(g) = &grant {
        let mut ev = info.event(RecordKind::Grant);
        ev.outcome = Some(gatehouse_core::audit::Outcome::Ok);
        let ev = ev.with_detail(serde_json::json!({
            "event": "used",
            "grant_id": g.id,
            "requester": info.principal.subject,
            "expires_at": g.expires_at_rfc3339(),
        }));
        if let Err(e) = shared.auditor.record(ev).await
            && shared.auditor.fail_closed()
        {
            tracing::error!(error = %e, "grant use could not be audited; refusing session");
            return fatal(
                &mut write,
                "58000",
                "Gatehouse cannot record this session (audit store unavailable); refusing to proceed",
            )
            .await;
        }
    }

    // The session is recorded before the client may send anything (fail closed).
    let mut ev = info.event(RecordKind::SessionStart);
    let mut detail = serde_json::json!({
        "tls": tls,
        "application_name": msg.get("application_name"),
        "client_user": msg.get("user"),
        "protocol": format!("{}.{}", msg.major, msg.minor),
        "upstream_tls": upstream.tls,
        "upstream_reused": upstream.reused,
        "upstream_pid": upstream.key.as_ref().map(|k| k.0),
    });
    if let (Some(g), Some(obj)) = (&grant, detail.as_object_mut()) {
        obj.insert("grant".to_owned(), serde_json::Value::String(g.id.clone()));
    }
    ev = ev.with_detail(detail);
    if let Err(e) = shared.auditor.record(ev).await
        && shared.auditor.fail_closed()
    {
        tracing::error!(error = %e, "session start could not be audited; refusing session");
        return fatal(
            &mut write,
            "58000",
            "Gatehouse cannot record this session (audit store unavailable); refusing to proceed",
        )
        .await;
    }
    metrics::counter!("gatehouse_sessions_total").increment(1);

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
        info,
        client_read: read,
        client_write: write,
        client_buf: buf,
        upstream,
        search_path: passthrough
            .iter()
            .find(|(k, _)| k == "search_path")
            .map(|(_, v)| v.clone()),
        application_name: msg.get("application_name").map(str::to_owned),
        grant,
        _cancel: guard,
    }))
}

async fn audit_login_failed(
    shared: &Shared,
    peer: SocketAddr,
    msg: &StartupMessage,
    (reason, sqlstate): (&str, &str),
    principal: Option<&Principal>,
) -> Result<u64, gatehouse_core::audit::AuditError> {
    let mut ev = AuditEvent::new(RecordKind::LoginFailed, uuid::Uuid::now_v7().to_string());
    ev.sqlstate = Some(sqlstate.to_owned());
    ev.client_addr = Some(peer.to_string());
    ev.connection = msg.get("database").map(str::to_owned);
    if let Some(p) = principal {
        ev.subject = Some(p.subject.clone());
        ev.groups = p.groups.clone();
        ev.issuer = Some(p.issuer.clone());
    }
    ev.outcome = Some(gatehouse_core::audit::Outcome::Denied);
    let ev = ev.with_detail(serde_json::json!({
        "reason": reason,
        "client_user": msg.get("user"),
        "application_name": msg.get("application_name"),
    }));
    shared.auditor.record(ev).await
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
