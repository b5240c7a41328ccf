//! The command phase: one command at a time, judged before it is forwarded.
//!
//! What is relayed: COM_QUERY (analysed, judged, held, recorded, results masked), the
//! prepared-statement commands (COM_STMT_PREPARE judged like its text, each COM_STMT_EXECUTE
//! judged again, recorded and its binary rows masked; CLOSE, RESET and SEND_LONG_DATA only for
//! statements this session prepared), COM_INIT_DB (judged as `USE`), COM_PING,
//! COM_STATISTICS, COM_RESET_CONNECTION, COM_SET_OPTION. What is refused, fail closed, with an
//! error the client shows: cursors (COM_STMT_FETCH), COM_FIELD_LIST, COM_CHANGE_USER (it would
//! log in as another upstream account; it ends the session), and any command the gateway does
//! not know.

mod prepared;

use std::collections::HashMap;
use std::sync::Arc;

use bytes::BytesMut;
use std::time::Instant;

use gatehouse_core::audit::Outcome;
use gatehouse_core::config::RecordResults;
use gatehouse_core::masking::SessionMasks;
use gatehouse_core::pan::mask_pans;
use gatehouse_core::policy::{Action, Decision};
use gatehouse_core::session::{EndReason, HoldRequest, Session, StatementOutcome, Verdict};

use super::judge::{Judge, Judgement, Masked, MaskedReads, diagnostics_refusal, reads_diagnostics};
use super::login::Established;
use super::registry::parse_kill;
use super::response::{Relay, RelayError};
use super::{CODES, Shared};
use crate::capabilities::{DEPRECATE_EOF, LOCAL_FILES};
use crate::codec::{Packet, write_packets};
use crate::messages::{CommandKind, ErrPacket, codes};
use crate::stream::{Duplex, PacketStream, StreamError};
use crate::upstream::{MysqlTarget, Upstream};
use crate::views::ViewCatalog;

/// `ER_UNSUPPORTED_PS`: what a client that prepares a statement is told for now.
const UNSUPPORTED_PS: (u16, &str) = (1295, "HY000");
/// `ER_NET_PACKET_TOO_LARGE` (also for other framing errors: the stream is unusable).
const PACKET_TOO_LARGE: (u16, &str) = (1153, "08S01");
/// `ER_UNKNOWN_STMT_HANDLER`.
const UNKNOWN_STMT: (u16, &str) = (1243, "HY000");
/// `ER_NOT_SUPPORTED_YET`.
const NOT_SUPPORTED: (u16, &str) = (1235, "42000");
/// `ER_UNKNOWN_COM_ERROR`.
const UNKNOWN_COMMAND: (u16, &str) = (1047, "08S01");
/// `ER_NET_PACKETS_OUT_OF_ORDER`.
const OUT_OF_ORDER: (u16, &str) = (1156, "08S01");
/// `ER_CONNECTION_KILLED`: the session ends from outside (shutdown, grant end).
const KILLED: (u16, &str) = (1927, "70100");

struct Conn<'a> {
    shared: &'a Shared,
    session: Session,
    client: PacketStream<Box<dyn Duplex>>,
    upstream: Upstream,
    target: Arc<MysqlTarget>,
    capabilities: u32,
    application_name: Option<String>,
    masks: SessionMasks,
    /// The session's current database (unqualified names resolve to it).
    database: Option<String>,
    /// The last statement that used a table used masked values: its diagnostics are withheld.
    diagnostics_tainted: bool,
    /// A command the client sent while a statement was held.
    pending: Option<Packet>,
    /// The statements this session prepared, by the server's id: their text, judged again at
    /// every execution.
    prepared: HashMap<u32, String>,
    /// The upstream's views, for a masked session (read again when stale).
    views: Option<Arc<ViewCatalog>>,
}

pub(crate) async fn run(shared: &Arc<Shared>, e: Established) {
    let masks = {
        let info = e.session.info();
        e.session
            .gate()
            .masks
            .for_session(&info.connection, &info.principal.groups)
    };
    let _registration = {
        let info = e.session.info();
        shared.sessions.register(
            e.connection_id,
            &info.principal.subject,
            &info.connection,
            e.upstream.connection_id,
        )
    };
    let mut conn = Conn {
        shared,
        database: Some(e.target.database.clone()).filter(|d| !d.is_empty()),
        session: e.session,
        client: e.client,
        upstream: e.upstream,
        target: e.target,
        capabilities: e.capabilities,
        application_name: e.application_name,
        masks,
        diagnostics_tainted: false,
        pending: None,
        prepared: HashMap::new(),
        views: None,
    };
    let reason = conn.serve().await;
    if reason.is_external()
        && let Some(msg) = conn.session.ending_message(reason)
    {
        conn.send_error(0, KILLED, &msg).await;
    }
    conn.client.shutdown().await;
    conn.upstream.stream.shutdown().await;
    conn.session.end(reason);
}

impl Conn<'_> {
    async fn serve(&mut self) -> EndReason {
        loop {
            let packet = match self.pending.take() {
                Some(p) => Ok(p),
                None => tokio::select! {
                    p = self.client.read() => p,
                    r = self.session.ending() => return r,
                },
            };
            let packet = match packet {
                Ok(p) => p,
                Err(StreamError::Closed) => return EndReason::ClientDisconnected,
                Err(StreamError::Codec(e)) => {
                    // The stream cannot be read past this point: say why, then close.
                    self.send_error(0, PACKET_TOO_LARGE, &format!("Bad packet: {e}"))
                        .await;
                    return EndReason::Protocol("protocol error");
                }
                Err(e) => {
                    tracing::debug!(error = %e, "mysql client stream failed");
                    return EndReason::ClientError;
                }
            };
            if packet.first_seq != 0 {
                self.send_error(packet.next_seq(), OUT_OF_ORDER, "Got packets out of order")
                    .await;
                return EndReason::Protocol("protocol error");
            }
            let kind = match CommandKind::of(&packet.payload) {
                Ok(k) => k,
                Err(_) => {
                    self.send_error(1, UNKNOWN_COMMAND, "Unknown command (refused by Gatehouse)")
                        .await;
                    continue;
                }
            };
            let r = match kind {
                CommandKind::Quit => return EndReason::ClientDisconnected,
                CommandKind::Query => {
                    let body = packet.payload.get(1..).unwrap_or_default();
                    match std::str::from_utf8(body) {
                        Ok(sql) => self.statement(&packet, sql, None, false).await,
                        Err(_) => {
                            self.refuse_unreadable(&packet).await;
                            Ok(())
                        }
                    }
                }
                CommandKind::InitDb => {
                    let body = packet.payload.get(1..).unwrap_or_default();
                    match std::str::from_utf8(body) {
                        Ok(db) if !db.contains('`') => {
                            let sql = format!("USE `{db}`");
                            self.statement(&packet, &sql, Some(db.to_owned()), false)
                                .await
                        }
                        _ => {
                            self.refuse_unreadable(&packet).await;
                            Ok(())
                        }
                    }
                }
                CommandKind::Ping | CommandKind::Statistics | CommandKind::SetOption => {
                    self.forward_simple(&packet).await
                }
                CommandKind::ResetConnection => {
                    // The server forgets the session's prepared statements.
                    self.prepared.clear();
                    self.forward_simple(&packet).await
                }
                CommandKind::ChangeUser => {
                    self.send_error(
                        1,
                        codes::REFUSED,
                        "COM_CHANGE_USER is refused by Gatehouse: connect again with another token",
                    )
                    .await;
                    return EndReason::Protocol("change user refused");
                }
                CommandKind::StmtPrepare => {
                    let body = packet.payload.get(1..).unwrap_or_default();
                    match std::str::from_utf8(body) {
                        Ok(sql) => self.prepare(&packet, sql).await,
                        Err(_) => {
                            self.refuse_unreadable(&packet).await;
                            Ok(())
                        }
                    }
                }
                CommandKind::StmtExecute => self.execute(&packet).await,
                CommandKind::StmtFetch => {
                    self.send_error(
                        1,
                        UNSUPPORTED_PS,
                        "cursors are not supported through Gatehouse yet; fetch the whole result",
                    )
                    .await;
                    Ok(())
                }
                CommandKind::StmtReset => match self.known_statement(&packet) {
                    Some(_) => self.forward_simple(&packet).await,
                    None => {
                        self.send_error(1, UNKNOWN_STMT, "Unknown prepared statement handler")
                            .await;
                        Ok(())
                    }
                },
                // No answer is due to these.
                CommandKind::StmtClose => {
                    if let Some(id) = self.known_statement(&packet) {
                        self.prepared.remove(&id);
                        self.forward_only(&packet).await
                    } else {
                        Ok(())
                    }
                }
                CommandKind::StmtSendLongData => match self.known_statement(&packet) {
                    Some(_) => self.forward_only(&packet).await,
                    None => Ok(()),
                },
                CommandKind::FieldList => {
                    self.send_error(
                        1,
                        NOT_SUPPORTED,
                        "COM_FIELD_LIST is not supported through Gatehouse: use SHOW COLUMNS \
                         (the mysql client: --no-auto-rehash)",
                    )
                    .await;
                    Ok(())
                }
            };
            if let Err(end) = r {
                return end;
            }
        }
    }

    async fn send_error(&mut self, seq: u8, code: (u16, &str), message: &str) {
        let mut out = Vec::new();
        ErrPacket::new(code, message).encode(&mut out);
        self.client.queue(&out, seq);
        let _ = self.client.flush().await;
    }

    async fn refuse_unreadable(&mut self, _packet: &Packet) {
        self.send_error(
            1,
            codes::REFUSED,
            "blocked by rule \"builtin:unparseable\": the statement is not valid UTF-8 text",
        )
        .await;
    }

    /// Forwards a command whose answer is one packet (OK, ERR, EOF or a status string).
    async fn forward_simple(&mut self, packet: &Packet) -> Result<(), EndReason> {
        self.upstream.stream.queue_wire(&packet.wire);
        if self.upstream.stream.flush().await.is_err() {
            return Err(EndReason::UpstreamError);
        }
        let answer = match self.upstream.stream.read().await {
            Ok(p) => p,
            Err(StreamError::Closed) => return Err(EndReason::UpstreamClosed),
            Err(_) => return Err(EndReason::UpstreamError),
        };
        self.client.queue_wire(&answer.wire);
        self.client
            .flush()
            .await
            .map_err(|_| EndReason::ClientError)
    }

    /// For a masked session: the upstream's views, current within [`crate::views::VIEWS_TTL`]
    /// (read with this session's upstream connection when stale). Fail closed: a catalog that
    /// cannot be read ends the session.
    async fn refresh_views(&mut self) -> Result<(), EndReason> {
        if !self.masks.is_active() {
            return Ok(());
        }
        let connection = self.session.info().connection.clone();
        match self.shared.views.get(&connection, &mut self.upstream).await {
            Ok(v) => {
                self.views = Some(v);
                Ok(())
            }
            Err(e) => {
                tracing::warn!(connection = %connection, error = %e, "the upstream's views could not be read");
                self.send_error(
                    1,
                    codes::GATEWAY_ERROR,
                    "Gatehouse could not read the upstream's views, which masking needs; the \
                     session ends",
                )
                .await;
                Err(EndReason::UpstreamError)
            }
        }
    }

    /// `KILL [QUERY] n` naming a session of this identity on this connection (by the id the
    /// gateway's greeting gave, or by the upstream's): allowed, and rewritten to the upstream's
    /// id for that session. Any other KILL is judged as usual (`builtin:signal-backend`).
    fn own_kill(&self, sql: &str) -> Option<(Judgement, BytesMut)> {
        let (query, n) = parse_kill(sql)?;
        let info = self.session.info();
        let upstream_id =
            self.shared
                .sessions
                .own_upstream_id(n, &info.principal.subject, &info.connection)?;
        let ctx = gatehouse_sql::mysql::MysqlContext {
            database: self.database.clone(),
        };
        let statements = self
            .shared
            .analysis
            .analyze_mysql(sql, &ctx)
            .unwrap_or_default();
        let j = Judgement {
            decision: Decision {
                action: Action::Allow,
                rule: None,
                reason: format!(
                    "ends {} of the identity's own session {n} (upstream connection {upstream_id})",
                    if query {
                        "the running statement"
                    } else {
                        "the connection"
                    }
                ),
            },
            statements,
            parse_error: None,
        };
        let text = format!(
            "KILL {} {upstream_id}",
            if query { "QUERY" } else { "CONNECTION" }
        );
        let mut wire = BytesMut::new();
        write_packets(
            &crate::messages::command::query(text.as_bytes()),
            0,
            &mut wire,
        );
        Some((j, wire))
    }

    fn judge(&self, sql: &str) -> Judgement {
        let info = self.session.info();
        let judge = Judge {
            connection: &info.connection,
            upstream_user: &self.target.user,
            groups: &info.principal.groups,
            policy: &self.session.gate().rules,
            masks: &self.masks,
            on_parse_error: self
                .shared
                .on_parse_error
                .get(&info.connection)
                .copied()
                .unwrap_or_default(),
            database: self.database.clone(),
            cache: &self.shared.analysis,
            views: self.views.as_deref(),
        };
        let mut j = judge.judge(sql);
        if j.allowed() && self.diagnostics_tainted && reads_diagnostics(sql) {
            j.decision = diagnostics_refusal();
        }
        j
    }

    /// One statement (a COM_QUERY, or COM_INIT_DB as `USE`): judged, recorded, held if a
    /// rule says so, forwarded, its answer relayed and its outcome recorded.
    async fn statement(
        &mut self,
        packet: &Packet,
        sql: &str,
        init_db: Option<String>,
        binary: bool,
    ) -> Result<(), EndReason> {
        let started = Instant::now();
        self.refresh_views().await?;
        let (j, rewritten) = match self.own_kill(sql) {
            Some((j, wire)) => (j, Some(wire)),
            None => (self.judge(sql), None),
        };
        let gate = self.session.gate().clone();
        let event = self
            .session
            .info()
            .statement_record(sql, &j.decision, &j.detail(), &CODES);
        let seq = match gate.auditor.record(event).await {
            Ok(s) => Some(s),
            Err(e) if gate.auditor.fail_closed() => {
                tracing::error!(error = %e, "statement could not be audited; refusing it");
                self.send_error(
                    1,
                    codes::GATEWAY_ERROR,
                    "Gatehouse cannot record this statement (audit store unavailable); refused",
                )
                .await;
                return Ok(());
            }
            Err(_) => None,
        };
        let mut outcome = StatementOutcome {
            seq,
            ..StatementOutcome::default()
        };
        if j.decision.action == Action::Approve {
            let rule = j.decision.rule.clone().unwrap_or_default();
            match self.hold(&rule, sql).await {
                Ok(Verdict::Approved) => {}
                Ok(verdict) => {
                    let msg = verdict.refusal_message(&rule).unwrap_or_default();
                    outcome.refused = Some(verdict.outcome());
                    self.refuse(&msg, outcome, started).await;
                    return match verdict {
                        Verdict::Abandoned => Err(EndReason::ClientDisconnected),
                        _ => Ok(()),
                    };
                }
                Err(e) => {
                    outcome.refused = Some(Outcome::Error);
                    self.refuse(&e, outcome, started).await;
                    return Ok(());
                }
            }
        } else if !j.allowed() {
            outcome.refused = Some(Outcome::Blocked);
            self.refuse(&j.decision.client_message(), outcome, started)
                .await;
            return Ok(());
        }

        // Forward, as the client sent it (a KILL of the identity's own session: rewritten).
        self.upstream
            .stream
            .queue_wire(rewritten.as_deref().unwrap_or(&packet.wire));
        if self.upstream.stream.flush().await.is_err() {
            outcome
                .end
                .set(gatehouse_core::session::StatementEnd::SessionEnded);
            self.record_outcome(outcome, started);
            return Err(EndReason::UpstreamError);
        }
        let data = Masked {
            masks: &self.masks,
            views: self.views.as_deref(),
        };
        let touches = j.touches_masked(data);
        let reads_masked = j.reads_masked_values(data);
        let capture_cap = gate.result_cap_bytes;
        let relay = Relay {
            client: &mut self.client,
            upstream: &mut self.upstream.stream,
            deprecate_eof: self.capabilities & DEPRECATE_EOF != 0,
            masks: &self.masks,
            views: self.views.as_deref(),
            statements: &j.statements,
            withhold_errors: touches,
            capture: (gate.record_results == RecordResults::Masked)
                .then_some((capture_cap, gate.redacted_columns.as_slice())),
            binary,
            local_infile: self.capabilities & LOCAL_FILES != 0
                && j.statements.iter().any(|s| s.kind == "copy_from"),
            sql,
        };
        // The session may have to end while the statement runs (the gateway stops, the grant
        // that admitted it ends): the answer is then not awaited.
        let relayed = tokio::select! {
            r = relay.run() => r,
            reason = self.session.ending() => {
                outcome.end.set(gatehouse_core::session::StatementEnd::SessionEnded);
                self.record_outcome(outcome, started);
                return Err(reason);
            }
        };
        let relayed = match relayed {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "mysql statement relay failed");
                outcome
                    .end
                    .set(gatehouse_core::session::StatementEnd::SessionEnded);
                self.record_outcome(outcome, started);
                return Err(match e {
                    RelayError::Client(_) => EndReason::ClientError,
                    RelayError::Upstream(StreamError::Closed) => EndReason::UpstreamClosed,
                    _ => EndReason::UpstreamError,
                });
            }
        };
        let failed = relayed.end.is_error();
        outcome.end = relayed.end;
        outcome.rows = relayed.rows;
        outcome.result_rows = relayed.result_rows;
        outcome.result_bytes = relayed.result_bytes;
        outcome.masked = relayed.masked;
        outcome.results = relayed.capture;
        self.record_outcome(outcome, started);
        // Follow the session's state; DDL may have changed the views masking relies on.
        if j.statements.iter().any(|s| s.kinds.contains("ddl")) {
            self.shared
                .views
                .invalidate(&self.session.info().connection);
        }
        if !failed {
            if let Some(db) = init_db {
                self.database = Some(db);
            } else if let Some(db) = j
                .statements
                .iter()
                .filter(|s| s.kind == "use")
                .find_map(|_| use_target(sql))
            {
                self.database = Some(db);
            }
        }
        if j.statements
            .iter()
            .any(|s| !s.tables_read.is_empty() || !s.tables_written.is_empty())
        {
            // A statement that uses a table replaces the diagnostics.
            self.diagnostics_tainted = reads_masked;
        } else if reads_masked {
            self.diagnostics_tainted = true;
        }
        Ok(())
    }

    /// Holds the statement until an approver decides. A command that arrives meanwhile is
    /// kept for later; a client that leaves abandons the request.
    async fn hold(&mut self, rule: &str, sql: &str) -> Result<Verdict, String> {
        let req = HoldRequest {
            rule: rule.to_owned(),
            statement: mask_pans(sql).into_owned(),
            reason: self.application_name.clone(),
        };
        let mut hold = self.session.hold(req).await.map_err(|e| e.to_string())?;
        tracing::info!(approval = %hold.id(), rule = %rule, "mysql statement held for approval");
        loop {
            if self.pending.is_some() {
                return Ok(hold.verdict().await);
            }
            tokio::select! {
                v = hold.verdict() => return Ok(v),
                p = self.client.read() => match p {
                    Ok(p) => self.pending = Some(p),
                    Err(_) => return Ok(hold.abandon()),
                },
            }
        }
    }

    async fn refuse(&mut self, message: &str, outcome: StatementOutcome, started: Instant) {
        self.send_error(1, codes::REFUSED, message).await;
        self.record_outcome(outcome, started);
    }

    fn record_outcome(&self, mut outcome: StatementOutcome, started: Instant) {
        outcome.duration = started.elapsed();
        let ev = self
            .session
            .info()
            .outcome_record(outcome, &self.masks, &CODES);
        self.session.gate().auditor.record_unwaited(ev);
    }
}

/// A packet from the upstream, or how the session ends.
fn upstream_packet(r: Result<Packet, StreamError>) -> Result<Packet, EndReason> {
    match r {
        Ok(p) => Ok(p),
        Err(StreamError::Closed) => Err(EndReason::UpstreamClosed),
        Err(_) => Err(EndReason::UpstreamError),
    }
}

/// The database a `USE db` statement switches to.
pub(super) fn use_target(sql: &str) -> Option<String> {
    let rest = sql.trim_start();
    let rest = rest
        .get(..3)
        .filter(|w| w.eq_ignore_ascii_case("use"))
        .and_then(|_| rest.get(3..))?;
    let name = rest.trim().trim_end_matches(';').trim();
    let name = name
        .strip_prefix('`')
        .and_then(|n| n.strip_suffix('`'))
        .map(|n| n.replace("``", "`"))
        .unwrap_or_else(|| name.to_owned());
    (!name.is_empty()).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn use_targets_are_read_as_the_server_reads_them() {
        assert_eq!(use_target("USE shop").as_deref(), Some("shop"));
        assert_eq!(use_target("  use `my``db`;").as_deref(), Some("my`db"));
        assert_eq!(use_target("USE"), None);
        assert_eq!(use_target("SELECT 1"), None);
    }
}
