//! The connection phase on the client side: greeting, TLS, the token, admission, the
//! upstream login, the session's start.
//!
//! Why the token travels as it does: the gateway must read the token itself, so a scramble
//! (which only proves knowledge of a password the server already holds) is no use. With TLS
//! the gateway asks for `caching_sha2_password`'s full authentication, in which standard
//! clients send the password as it is inside the encrypted channel. Without TLS (only when
//! `tls.require` is off) that plugin's RSA key exchange carries it encrypted with the
//! gateway's own key ([`crate::rsa_exchange`]); a client that logs in with another plugin is
//! switched to `mysql_clear_password`, which clients send only when told they may
//! (`--enable-cleartext-plugin`). `session_start.detail.client_auth` records which.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use gatehouse_core::audit::detail::SessionStarted;
use gatehouse_core::identity::AuthError;
use gatehouse_core::session::{LoginAttempt, LoginRefusal, Session};
use rand::Rng;
use tokio::net::TcpStream;

use super::Shared;
use crate::capabilities::{GATEWAY_OFFERS, SSL, negotiated};
use crate::messages::auth_switch::{CACHING_SHA2_PASSWORD, CLEAR_PASSWORD};
use crate::messages::{
    AuthMoreData, AuthSwitchRequest, ClientHello, CommandKind, ErrPacket, HandshakeResponse41,
    HandshakeV10, OkPacket, codes,
};
use crate::stream::{Duplex, PacketStream, Prefixed, StreamError};
use crate::upstream::{MysqlTarget, Upstream};

/// The version the gateway greets with (before it knows which upstream the client wants).
/// 5.7 rather than 8.0: MySQL 8 clients then choose collations (utf8mb4_general_ci) that
/// MariaDB knows too, instead of utf8mb4_0900_ai_ci, which MariaDB refuses.
pub const SERVER_VERSION: &[u8] = b"5.7.99-Gatehouse";

/// `ER_NO_DB_ERROR`: a login without a database, for an identity with no single connection.
const NO_DATABASE: (u16, &str) = (1046, "3D000");

/// `SERVER_STATUS_AUTOCOMMIT`.
const STATUS_AUTOCOMMIT: u16 = 0x0002;

/// The largest packet accepted before the client is logged in.
const MAX_LOGIN_PACKET: usize = 64 * 1024;

/// A logged-in session, ready for commands.
pub(crate) struct Established {
    pub session: Session,
    pub client: PacketStream<Box<dyn Duplex>>,
    pub upstream: Upstream,
    pub target: Arc<MysqlTarget>,
    /// The capabilities the client and the gateway agreed on.
    pub capabilities: u32,
    /// The client's program name (connection attribute), shown to approvers.
    pub application_name: Option<String>,
    /// The id the greeting gave the client (what its `KILL QUERY` names).
    pub connection_id: u32,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum LoginError {
    #[error(transparent)]
    Stream(#[from] StreamError),
    #[error("timed out")]
    Timeout,
    #[error("refused: {0}")]
    Refused(String),
}

impl From<std::io::Error> for LoginError {
    fn from(e: std::io::Error) -> Self {
        Self::Stream(StreamError::Io(e))
    }
}

/// Runs the login. `Ok(None)`: the connection was refused and already answered.
pub(crate) async fn establish(
    shared: &Arc<Shared>,
    tcp: TcpStream,
    peer: SocketAddr,
) -> Result<Option<Established>, LoginError> {
    match tokio::time::timeout(shared.startup_timeout, establish_inner(shared, tcp, peer)).await {
        Ok(r) => r,
        Err(_) => Err(LoginError::Timeout),
    }
}

/// Character sets in which every ASCII byte stands for itself (no multibyte character hides
/// a quote or a backslash), by collation id: the analyser reads the text as the server will.
fn charset_is_safe(id: u8) -> bool {
    matches!(id, 8 | 11 | 33 | 45 | 46 | 47 | 48 | 63 | 65 | 83 | 192..=215 | 224..=247 | 255)
}

async fn refuse_with<S: Duplex>(
    client: &mut PacketStream<S>,
    seq: u8,
    code: (u16, &str),
    message: &str,
) -> Result<Option<Established>, LoginError> {
    let mut out = Vec::new();
    ErrPacket::new(code, message).encode(&mut out);
    client.queue(&out, seq);
    client.shutdown().await;
    Err(LoginError::Refused(message.to_owned()))
}

/// The code a refused login is answered and recorded with.
fn code_of(r: &LoginRefusal) -> &'static str {
    match r {
        LoginRefusal::UnknownConnection(c) if c.is_empty() => "1046",
        LoginRefusal::UnknownConnection(_) => "1049",
        _ => "1045",
    }
}

fn wire_code(r: &LoginRefusal) -> (u16, &'static str) {
    match r {
        LoginRefusal::UnknownConnection(c) if c.is_empty() => NO_DATABASE,
        LoginRefusal::UnknownConnection(_) => codes::UNKNOWN_CONNECTION,
        _ => codes::ACCESS_DENIED,
    }
}

fn refusal_message(r: &LoginRefusal) -> String {
    match r {
        LoginRefusal::TlsRequired => {
            "Gatehouse requires TLS (tls.require = true): connect with --ssl".to_owned()
        }
        LoginRefusal::UnknownConnection(c) if c.is_empty() => "No database selected: name a \
            Gatehouse connection as the database (this identity may use none or several)"
            .to_owned(),
        LoginRefusal::UnknownConnection(c) => {
            format!("Unknown database '{c}' (no such Gatehouse connection)")
        }
        other => other.to_string(),
    }
}

async fn establish_inner(
    shared: &Arc<Shared>,
    tcp: TcpStream,
    peer: SocketAddr,
) -> Result<Option<Established>, LoginError> {
    let scramble: Vec<u8> = {
        let mut rng = rand::rng();
        (0..20).map(|_| rng.random_range(0x21u8..0x7f)).collect()
    };
    let offers = GATEWAY_OFFERS | if shared.tls.is_some() { SSL } else { 0 };
    let connection_id = shared.sessions.next_id();
    let mut greeting = Vec::new();
    HandshakeV10 {
        server_version: SERVER_VERSION.to_vec(),
        connection_id,
        auth_data: scramble.clone(),
        capabilities: offers,
        charset: 45,
        status: STATUS_AUTOCOMMIT,
        auth_plugin: CACHING_SHA2_PASSWORD.to_vec(),
    }
    .encode(&mut greeting);
    let mut plain = PacketStream::new(tcp, MAX_LOGIN_PACKET);
    plain.send(&greeting, 0).await?;
    let first = match plain.read().await {
        Ok(p) => p,
        Err(StreamError::Codec(e)) => {
            let msg = format!("Bad handshake: {e}");
            return refuse_with(&mut plain, 1, (1043, "08S01"), &msg).await;
        }
        Err(e) => return Err(e.into()),
    };
    let hello = match ClientHello::parse(&first.payload) {
        Ok(h) => h,
        Err(e) => {
            let msg = format!("Bad handshake: {e}");
            return refuse_with(&mut plain, first.next_seq(), (1043, "08S01"), &msg).await;
        }
    };
    let (mut client, tls, login, mut seq): (PacketStream<Box<dyn Duplex>>, bool, _, u8) =
        match hello {
            ClientHello::Ssl(_) => {
                let Some(cfg) = &shared.tls else {
                    let msg = "Bad handshake: TLS was not offered";
                    return refuse_with(&mut plain, first.next_seq(), (1043, "08S01"), msg).await;
                };
                // The client's TLS handshake may have arrived with its SSLRequest.
                let (tcp, early) = plain.into_parts();
                let tls = tokio_rustls::TlsAcceptor::from(cfg.clone())
                    .accept(Prefixed::new(early, tcp))
                    .await?;
                let mut client: PacketStream<Box<dyn Duplex>> =
                    PacketStream::new(Box::new(tls), MAX_LOGIN_PACKET);
                let p = client.read().await?;
                match ClientHello::parse(&p.payload) {
                    Ok(ClientHello::Login(l)) => (client, true, l, p.next_seq()),
                    _ => {
                        let msg = "Bad handshake: expected the login after TLS";
                        return refuse_with(&mut client, p.next_seq(), (1043, "08S01"), msg).await;
                    }
                }
            }
            ClientHello::Login(l) => {
                // Whatever the client sent after its login stays in order.
                let (tcp, early) = plain.into_parts();
                let client: PacketStream<Box<dyn Duplex>> =
                    PacketStream::new(Box::new(Prefixed::new(early, tcp)), MAX_LOGIN_PACKET);
                (client, false, l, first.next_seq())
            }
        };
    let mut attempt = LoginAttempt {
        peer: peer.to_string(),
        connection: login
            .database
            .as_deref()
            .filter(|d| !d.is_empty())
            .map(|d| String::from_utf8_lossy(d).into_owned()),
        client_user: Some(String::from_utf8_lossy(&login.user).into_owned()),
        application_name: attribute(&login, b"program_name"),
    };
    let gate = &shared.gate;
    if shared.tls_required && !tls {
        let r = gate
            .refuse(&attempt, None, LoginRefusal::TlsRequired, code_of)
            .await;
        return refuse_with(&mut client, seq, wire_code(&r), &refusal_message(&r)).await;
    }
    // Flags the client sets that were not offered (compression, session tracking, query
    // attributes...) are simply not in effect: the agreed set is the intersection.
    let parameter_problem = if !charset_is_safe(login.charset) {
        Some(format!(
            "character set {} is refused: Gatehouse reads statements only in character sets \
             where ASCII stands for itself (utf8mb4, utf8, latin1, ascii, binary)",
            login.charset
        ))
    } else {
        None
    };
    if let Some(problem) = parameter_problem {
        let r = gate
            .refuse(&attempt, None, LoginRefusal::Parameter(problem), code_of)
            .await;
        return refuse_with(&mut client, seq, wire_code(&r), &refusal_message(&r)).await;
    }

    // The token: as sent with the cleartext plugin, by caching_sha2_password's full
    // authentication inside TLS, or RSA-encrypted by that plugin without TLS.
    let plugin = login.auth_plugin.clone().unwrap_or_default();
    let client_auth: &'static str;
    let token: Vec<u8> = if plugin == CLEAR_PASSWORD {
        client_auth = "clear_password";
        login.auth_response.clone()
    } else if !tls && plugin == CACHING_SHA2_PASSWORD {
        client_auth = "caching_sha2_password_rsa";
        let mut out = Vec::new();
        AuthMoreData(vec![0x04]).encode(&mut out);
        client.send(&out, seq).await?;
        let mut p = client.read().await?;
        seq = p.next_seq();
        let rsa = match shared.rsa.get().await {
            Ok(k) => k,
            Err(e) => {
                tracing::error!(error = %e, "no RSA key for caching_sha2_password");
                let msg = "Gatehouse cannot read a password without TLS here: connect with --ssl";
                return refuse_with(&mut client, seq, codes::ACCESS_DENIED, msg).await;
            }
        };
        if p.payload.as_ref() == [0x02] {
            // The client asks for the public key, then sends the password encrypted with it.
            let mut out = Vec::new();
            AuthMoreData(rsa.public_pem().to_vec()).encode(&mut out);
            client.send(&out, seq).await?;
            p = client.read().await?;
            seq = p.next_seq();
        }
        match rsa.password(&p.payload, &scramble) {
            Ok(t) => t,
            Err(e) => {
                let why = match e {
                    crate::rsa_exchange::RsaExchangeError::Malformed => {
                        "the RSA-encrypted password is not terminated"
                    }
                    _ => "the RSA-encrypted password could not be decrypted",
                };
                let r = gate
                    .refuse(
                        &attempt,
                        None,
                        LoginRefusal::Authentication(AuthError::Malformed(why)),
                        code_of,
                    )
                    .await;
                return refuse_with(&mut client, seq, wire_code(&r), &refusal_message(&r)).await;
            }
        }
    } else if tls {
        client_auth = "caching_sha2_password";
        if plugin != CACHING_SHA2_PASSWORD {
            let mut out = Vec::new();
            AuthSwitchRequest {
                plugin: CACHING_SHA2_PASSWORD.to_vec(),
                data: scramble.clone(),
            }
            .encode(&mut out);
            client.send(&out, seq).await?;
            seq = client.read().await?.next_seq();
        }
        let mut out = Vec::new();
        // "Perform full authentication": the client answers with the password itself.
        AuthMoreData(vec![0x04]).encode(&mut out);
        client.send(&out, seq).await?;
        let p = client.read().await?;
        seq = p.next_seq();
        p.payload.to_vec()
    } else {
        // Another plugin without TLS (mysql_native_password): the cleartext plugin, which
        // clients send only when allowed.
        client_auth = "clear_password";
        let mut out = Vec::new();
        AuthSwitchRequest {
            plugin: CLEAR_PASSWORD.to_vec(),
            data: Vec::new(),
        }
        .encode(&mut out);
        client.send(&out, seq).await?;
        let p = client.read().await?;
        seq = p.next_seq();
        p.payload.to_vec()
    };
    let token = String::from_utf8_lossy(token.strip_suffix(&[0]).unwrap_or(&token)).into_owned();
    if attempt.connection.is_none() {
        attempt.connection = default_connection(shared, token.trim()).await;
    }
    if attempt.connection.is_none() {
        // No database and no single connection for this identity: the login is accepted once
        // the token is, and the session binds at the client's first COM_INIT_DB or USE
        // (within the startup timeout); until then every statement gets 1046.
        if let Err(e) = gate.verifier.verify(token.trim()).await {
            let r = gate.refuse(&attempt, None, e.into(), code_of).await;
            return refuse_with(&mut client, seq, wire_code(&r), &refusal_message(&r)).await;
        }
        let mut ok = Vec::new();
        OkPacket {
            status: STATUS_AUTOCOMMIT,
            ..OkPacket::default()
        }
        .encode(&mut ok);
        client.send(&ok, seq).await?;
        match await_database(&mut client).await? {
            Some(db) => {
                attempt.connection = Some(db);
                // The bind answers the client's COM_INIT_DB or USE.
                seq = 1;
            }
            None => return Ok(None),
        }
    }
    let admitted = gate.admit(&attempt, token.trim(), code_of).await;
    drop(token);
    let admitted = match admitted {
        Ok(a) => a,
        Err(r) => {
            return refuse_with(&mut client, seq, wire_code(&r), &refusal_message(&r)).await;
        }
    };
    let connection = admitted.connection.clone();
    let Some(target) = shared.targets.get(&connection).cloned() else {
        // A connection the gate knows, of another protocol.
        let refusal = LoginRefusal::UnknownConnection(connection);
        let r = gate
            .refuse(&attempt, Some(&admitted.principal), refusal, code_of)
            .await;
        return refuse_with(&mut client, seq, wire_code(&r), &refusal_message(&r)).await;
    };
    let mut session = Session::new(gate.clone(), admitted, peer.to_string());
    let capabilities = negotiated(offers, login.capabilities) & !SSL;
    let upstream = match target
        .connect(capabilities, login.charset, Duration::from_secs(10))
        .await
    {
        Ok(u) => u,
        Err(e) => {
            tracing::warn!(connection = %connection, error = %e, "mysql upstream login failed");
            session
                .fail(&attempt, "upstream_unavailable", "1105", e.to_string())
                .await;
            let msg = format!("Gatehouse could not connect to the upstream of \"{connection}\"");
            return refuse_with(&mut client, seq, codes::GATEWAY_ERROR, &msg).await;
        }
    };
    // The server must start in a state the gateway parses as it does: a global sql_mode with
    // NO_BACKSLASH_ESCAPES or ANSI_QUOTES (set outside the gateway) would change how every
    // statement is read.
    let mut upstream = upstream;
    let problem = match upstream.query_row("SELECT @@SESSION.sql_mode").await {
        Ok(row) => {
            let mode = row.into_iter().next().flatten().unwrap_or_default();
            let mode = String::from_utf8_lossy(&mode).into_owned();
            gatehouse_core::policy::settings::setting_refusal(
                "sql_mode",
                gatehouse_core::policy::settings::SettingValue::Known(&mode),
                "the upstream session starts with",
            )
            .map(|d| d.reason)
        }
        Err(e) => Some(format!(
            "the upstream session's sql_mode could not be read: {e}"
        )),
    };
    if let Some(problem) = problem {
        tracing::warn!(connection = %connection, %problem, "mysql upstream session state refused");
        session
            .fail(&attempt, "upstream_state_refused", "1227", problem.clone())
            .await;
        let msg = format!("Gatehouse refuses this session: {problem}");
        return refuse_with(&mut client, seq, codes::REFUSED, &msg).await;
    }
    let mut adapter = serde_json::Map::new();
    adapter.insert("client_auth".into(), client_auth.into());
    adapter.insert("upstream_tls".into(), upstream.tls.into());
    adapter.insert(
        "upstream_connection_id".into(),
        upstream.connection_id.into(),
    );
    adapter.insert(
        "upstream_version".into(),
        upstream.server_version.clone().into(),
    );
    let started = SessionStarted {
        tls,
        application_name: attempt.application_name.clone(),
        client_user: attempt.client_user.clone(),
        grant: None,
        protocol: "mysql",
        adapter,
    };
    if session.start(started).await.is_err() {
        let msg =
            "Gatehouse cannot record this session (audit store unavailable); refusing to proceed";
        return refuse_with(&mut client, seq, codes::GATEWAY_ERROR, msg).await;
    }
    let mut ok = Vec::new();
    OkPacket {
        status: STATUS_AUTOCOMMIT,
        ..OkPacket::default()
    }
    .encode(&mut ok);
    client.send(&ok, seq).await?;
    client.set_max_payload(shared.max_packet);
    Ok(Some(Established {
        session,
        client,
        upstream,
        target,
        capabilities,
        application_name: attempt.application_name,
        connection_id,
    }))
}

/// Serves a logged-in client that named no database until it names one (`COM_INIT_DB` or
/// `USE`): pings are answered, everything else gets `1046`. `None`: the client quit.
async fn await_database(
    client: &mut PacketStream<Box<dyn Duplex>>,
) -> Result<Option<String>, LoginError> {
    loop {
        let p = match client.read().await {
            Ok(p) => p,
            Err(StreamError::Closed) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let body = p.payload.get(1..).unwrap_or_default();
        let mut out = Vec::new();
        match CommandKind::of(&p.payload) {
            Ok(CommandKind::Quit) => return Ok(None),
            Ok(CommandKind::InitDb) => {
                return Ok(Some(String::from_utf8_lossy(body).into_owned()));
            }
            Ok(CommandKind::Query) => {
                if let Some(db) = std::str::from_utf8(body)
                    .ok()
                    .and_then(super::command::use_target)
                {
                    return Ok(Some(db));
                }
                ErrPacket::new(
                    NO_DATABASE,
                    "No database selected: USE a Gatehouse connection",
                )
                .encode(&mut out);
            }
            Ok(CommandKind::Ping) => OkPacket {
                status: STATUS_AUTOCOMMIT,
                ..OkPacket::default()
            }
            .encode(&mut out),
            // No answer is due to these.
            Ok(CommandKind::StmtClose | CommandKind::StmtSendLongData) => continue,
            _ => ErrPacket::new(
                NO_DATABASE,
                "No database selected: USE a Gatehouse connection",
            )
            .encode(&mut out),
        }
        client.send(&out, p.next_seq()).await?;
    }
}

/// The connection a login without a database (mysqldump does this) binds to: the only MySQL
/// connection this identity may use (by `allow_groups` or an active grant). `None` when the
/// token is not valid (admission then refuses it) or there is no single such connection.
async fn default_connection(shared: &Shared, token: &str) -> Option<String> {
    let principal = shared.gate.verifier.verify(token).await.ok()?;
    let gate = &shared.gate;
    let mut mine = shared.targets.keys().filter(|name| {
        let allowed = gate.allow_groups.get(*name).is_some_and(|groups| {
            groups
                .iter()
                .any(|g| g == "*" || principal.groups.iter().any(|h| h == g))
        });
        allowed || gate.grants.admits(&principal, name).is_some()
    });
    match (mine.next(), mine.next()) {
        (Some(only), None) => Some(only.clone()),
        _ => None,
    }
}

fn attribute(login: &HandshakeResponse41, name: &[u8]) -> Option<String> {
    login
        .attributes
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
}
