//! The client → server direction: reads the client's messages, classifies and judges each,
//! records statements before they are forwarded, holds those a rule wants approved, and tells
//! the backend direction what to expect, in order.
//!
//! Why refusals are replacements: a refused message (fail-closed audit, a rule, a function
//! call) must leave the client's and the server's view of the session identical (transaction
//! aborted, extended-protocol messages discarded until Sync). So it is *replaced* by one the
//! server rejects without executing anything, and the backend direction swaps the server's
//! resulting error for the gateway's own.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::{Bytes, BytesMut};
use gatehouse_core::audit::{AuditEvent, Outcome, RecordKind};
use gatehouse_core::masking::{ColumnMask, SessionMasks, inference};
use gatehouse_core::pan::mask_pans;
use gatehouse_core::session::{HoldRequest, Session, Verdict};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::expect::{Expect, ExtKind, Stmt, StmtMasking};
use super::{Context, DirectionEnd, READ_CHUNK, ReadyCount, SQLSTATES, msg_len, write_parts};
use crate::codec::{CodecError, Frame, FrameReader, Side};
use crate::mask::Resolver;
use crate::messages::backend::{self, Severity};
use crate::messages::frontend::{self, Param};
use crate::session::policy::{Judgement, SessionPolicy};
use crate::session::{SessionInfo, Shared};
use crate::stream::{BoxRead, BoxWrite};
use crate::upstream::UpstreamTarget;

/// SQL the server rejects at parse time without executing anything (replaces a Query).
const REFUSAL_SQL: &str = "GATEHOUSE REFUSED THIS STATEMENT";
/// A portal that never exists: executing it fails without touching the client's prepared
/// statements or portals (replaces an Execute).
const REFUSAL_PORTAL: &str = "gatehouse: refused";

/// While a statement is held, the client's further messages are read (to notice a
/// disconnect) up to this many buffered bytes; then reading pauses until the decision.
const HOLD_BUFFER_LIMIT: usize = 1024 * 1024;

/// The client → server half of one session.
pub(super) struct Frontend<'a> {
    shared: Arc<Shared>,
    /// The core's session: approvals are held through it.
    session: &'a Session,
    info: &'a SessionInfo,
    read: BoxRead,
    buf: BytesMut,
    write: BoxWrite,
    tx: mpsc::UnboundedSender<Expect>,
    /// Prepared statement name → SQL text (masked), for auditing Executes.
    statements: HashMap<Bytes, Arc<str>>,
    /// Portal name → (SQL text, parameters as recorded).
    portals: HashMap<Bytes, Portal>,
    policy: SessionPolicy,
    /// The agent's justification for approvals (its application_name).
    reason: Option<String>,
    /// The upstream this session talks to (its catalog resolves names for policy).
    target: Arc<UpstreamTarget>,
    /// The masking that applies to this session.
    masks: Arc<SessionMasks>,
    /// Prepared statement name → what masking needs to know about its results.
    masking: HashMap<Bytes, StmtMasking>,
    /// The strongest mask of any cursor declared in this session (FETCH results).
    cursors: Option<ColumnMask>,
    /// ReadyForQuery messages the server has sent (counted by the backend direction).
    ready: Arc<ReadyCount>,
    /// ReadyForQuery messages the server owes for what was forwarded (one per Query and Sync).
    ready_owed: u64,
    /// The Query just classified runs code the gateway cannot see into: later messages wait
    /// for its answer before they are analysed (see [`ReadyCount`]).
    barrier: bool,
    /// Nothing this session ran may leave server state that `DISCARD ALL` cannot undo, so
    /// its server connection may serve another session (see [`crate::pool`]).
    poolable: bool,
    /// Extended-protocol messages were forwarded since the last Sync.
    unsynced: bool,
    /// The client's Terminate was kept from the server: the connection goes back to the pool.
    released: bool,
    // Metric handles resolved once per session, not per message.
    bytes_in: metrics::Counter,
    statements_total: metrics::Counter,
}

/// A bound portal, as far as the audit needs it.
struct Portal {
    text: Arc<str>,
    params: Vec<Option<String>>,
    result_formats: Arc<[i16]>,
    masking: StmtMasking,
}

/// What to do with one client message.
enum Action {
    Forward,
    /// Forward, expecting the server's completion of this extended-protocol message.
    Ext(ExtKind),
    /// Audit before forwarding; on failure, replace with `replacement`.
    Audit {
        /// Taken when the batch of events is sent to the auditor.
        event: Option<AuditEvent>,
        expect: fn(Stmt) -> Expect,
        replacement: Bytes,
        result_formats: Arc<[i16]>,
        masking: StmtMasking,
        /// Sent just before the message (the gateway's Describe of an Execute's portal).
        prefix: Option<Bytes>,
    },
    /// Refuse without asking the audit store for permission (the refusal is recorded).
    Refuse {
        event: AuditEvent,
        replacement: Bytes,
        error: Bytes,
        /// `Some` when the refused message is an extended-protocol one (a Parse).
        ext: Option<ExtKind>,
    },
    Sync,
    Terminate,
}

impl<'a> Frontend<'a> {
    /// The client's side of a session that starts: what the client sent past startup is in
    /// `buf`; what the backend must expect goes to `tx`.
    pub(super) fn new(
        cx: &Context<'a>,
        read: BoxRead,
        buf: BytesMut,
        write: BoxWrite,
        tx: mpsc::UnboundedSender<Expect>,
        search_path: Option<&str>,
        reason: Option<String>,
    ) -> Self {
        Self {
            shared: cx.shared.clone(),
            session: cx.session,
            info: cx.info,
            read,
            buf,
            write,
            tx,
            statements: HashMap::new(),
            portals: HashMap::new(),
            policy: SessionPolicy::new(search_path, cx.scs.clone(), cx.masks.is_active()),
            reason,
            target: cx.target.clone(),
            masks: cx.masks.clone(),
            masking: HashMap::new(),
            cursors: None,
            ready: cx.ready.clone(),
            ready_owed: 0,
            barrier: false,
            poolable: cx.target.pool.reuses(),
            unsynced: false,
            released: false,
            bytes_in: metrics::counter!("gatehouse_bytes_total", "direction" => "client_to_upstream"),
            statements_total: metrics::counter!("gatehouse_statements_total"),
        }
    }
}

impl Frontend<'_> {
    /// Relays until the session ends; returns why, and the server connection's write half
    /// when the Terminate was kept from the server for the pool.
    pub(super) async fn run(mut self) -> (DirectionEnd, Option<BoxWrite>) {
        let reason = self.relay().await;
        // `self` (and with it the expectation channel) is dropped here: the backend sees
        // the client side end.
        (reason, self.released.then_some(self.write))
    }

    async fn relay(&mut self) -> DirectionEnd {
        let reader = FrameReader::new(Side::Frontend, self.shared.max_message_bytes);
        loop {
            // Find the run of complete messages at the front of the buffer.
            let mut end = 0;
            let mut bad: Option<CodecError> = None;
            loop {
                let rest = self.buf.get(end..).unwrap_or_default();
                match reader.check_header(rest) {
                    Ok(0) => {
                        let len = msg_len(rest);
                        end += len;
                    }
                    Ok(need) => {
                        self.buf
                            .reserve(need.max(READ_CHUNK).min(need + READ_CHUNK));
                        break;
                    }
                    Err(e) => {
                        bad = Some(e);
                        break;
                    }
                }
            }
            if end > 0 {
                let chunk = self.buf.split_to(end).freeze();
                if let Some(reason) = self.handle_chunk(chunk).await {
                    return reason;
                }
            }
            if let Some(e) = bad {
                return self
                    .fatal(&format!("invalid message from client: {e}"), "08P01")
                    .await;
            }
            match self.read.read_buf(&mut self.buf).await {
                Ok(0) => return DirectionEnd::ClientDisconnected,
                Ok(n) => self.bytes_in.increment(n as u64),
                Err(_) => return DirectionEnd::ClientError,
            }
        }
    }

    async fn fatal(&mut self, msg: &str, sqlstate: &str) -> DirectionEnd {
        let mut ev = self.info.event(RecordKind::Statement);
        ev.outcome = Some(Outcome::Error);
        ev.sqlstate = Some(sqlstate.to_owned());
        let ev = ev.with_detail(serde_json::json!({ "protocol_error": msg }));
        self.shared.gate.auditor.record_later(ev).await;
        let _ = self.tx.send(Expect::Fatal(backend::error_response(
            Severity::Fatal,
            sqlstate,
            msg,
            None,
        )));
        // The backend direction writes the error and ends the session.
        std::future::pending::<()>().await;
        DirectionEnd::ProtocolError
    }

    /// Handles a run of complete messages; returns a reason when the session must end.
    async fn handle_chunk(&mut self, chunk: Bytes) -> Option<DirectionEnd> {
        let mut offset = 0;
        let mut actions: Vec<(usize, usize, Action)> = Vec::new();
        while offset < chunk.len() {
            if std::mem::take(&mut self.barrier) {
                // Forward what came before (the call itself), then wait for its answer.
                if let Some(reason) = self.flush(&chunk, std::mem::take(&mut actions)).await {
                    return Some(reason);
                }
                self.ready.reached(self.ready_owed).await;
            }
            let len = msg_len(chunk.get(offset..).unwrap_or_default());
            let frame = Frame::from_raw(chunk.slice(offset..offset + len));
            let action = match self.classify(&frame).await {
                Ok(a) => a,
                Err(e) => {
                    // Forward what came before, then end with a protocol error.
                    let _ = self.flush(&chunk, actions).await;
                    return Some(
                        self.fatal(&format!("invalid message from client: {e}"), "08P01")
                            .await,
                    );
                }
            };
            if matches!(frame.tag(), b'Q' | b'S') {
                self.ready_owed += 1;
            }
            match frame.tag() {
                b'P' | b'B' | b'D' | b'E' | b'C' | b'H' => self.unsynced = true,
                b'S' => self.unsynced = false,
                _ => {}
            }
            actions.push((offset, offset + len, action));
            offset += len;
        }
        self.flush(&chunk, actions).await
    }

    /// Audits, queues expectations and forwards one run of messages.
    async fn flush(
        &mut self,
        chunk: &Bytes,
        mut actions: Vec<(usize, usize, Action)>,
    ) -> Option<DirectionEnd> {
        let events: Vec<AuditEvent> = actions
            .iter_mut()
            .filter_map(|(_, _, a)| match a {
                Action::Audit { event, .. } => event.take(),
                _ => None,
            })
            .collect();
        let mut seqs: Option<Vec<u64>> = None;
        let mut audit_failed = false;
        if !events.is_empty() {
            self.statements_total.increment(events.len() as u64);
            match self.shared.gate.auditor.record_many(events).await {
                Ok(s) => seqs = Some(s),
                Err(e) => {
                    tracing::error!(session = %self.info.id, error = %e, "write-ahead audit failed");
                    audit_failed = self.shared.gate.auditor.fail_closed();
                }
            }
        }
        let mut seq_iter = seqs.unwrap_or_default().into_iter();
        // Contiguous forwarded ranges are written as one slice of the original bytes.
        let mut out: Vec<Bytes> = Vec::new();
        let mut run_start: Option<usize> = None;
        let mut run_end = 0;
        let mut terminate = false;
        for (start, end, action) in actions {
            let replacement = match action {
                Action::Forward => None,
                Action::Ext(kind) => {
                    let _ = self.tx.send(Expect::Ext(kind, None));
                    None
                }
                Action::Sync => {
                    let _ = self.tx.send(Expect::Sync);
                    None
                }
                Action::Terminate => {
                    terminate = true;
                    let answered = self.ready.count.load(Ordering::Acquire) >= self.ready_owed;
                    if self.poolable && answered && !self.unsynced {
                        // Kept from the server: the connection is reset and pooled.
                        self.released = true;
                        Some(Bytes::new())
                    } else {
                        None
                    }
                }
                Action::Audit {
                    expect,
                    replacement,
                    result_formats,
                    masking,
                    prefix,
                    ..
                } => {
                    if audit_failed {
                        let mut st = Stmt::new(None);
                        st.refused_outcome = Some(Outcome::Error);
                        st.replace_error = Some(backend::error_response(
                            Severity::Error,
                            "58000",
                            "statement refused: Gatehouse could not record it in the audit \
                             log (audit.fail_closed = true)",
                            None,
                        ));
                        let _ = self.tx.send(expect(st));
                        Some(replacement)
                    } else {
                        let mut st = Stmt::new(seq_iter.next());
                        st.result_formats = result_formats;
                        st.masking = masking;
                        if let Some(prefix) = prefix {
                            // The prefix goes out right before this message.
                            if let Some(s) = run_start.take() {
                                out.push(chunk.slice(s..run_end));
                            }
                            out.push(prefix);
                            let _ = self.tx.send(Expect::Ext(ExtKind::MaskDescribe, None));
                        }
                        let _ = self.tx.send(expect(st));
                        None
                    }
                }
                Action::Refuse {
                    event,
                    replacement,
                    error,
                    ext,
                } => {
                    let outcome = event.outcome.unwrap_or(Outcome::Blocked);
                    let seq = self.shared.gate.auditor.record(event).await.ok();
                    match ext {
                        // A refused Parse: nothing runs, the statement record says so.
                        Some(kind) => {
                            let _ = self.tx.send(Expect::Ext(kind, Some(error)));
                        }
                        None => {
                            let mut st = Stmt::new(seq);
                            st.refused_outcome = Some(outcome);
                            st.replace_error = Some(error);
                            let _ = self.tx.send(Expect::Query(st));
                        }
                    }
                    Some(replacement)
                }
            };
            match replacement {
                None => {
                    if run_start.is_none() {
                        run_start = Some(start);
                    }
                    run_end = end;
                }
                Some(rep) => {
                    if let Some(s) = run_start.take() {
                        out.push(chunk.slice(s..run_end));
                    }
                    out.push(rep);
                }
            }
        }
        if let Some(s) = run_start {
            out.push(chunk.slice(s..run_end));
        }
        if write_parts(&mut self.write, out).await.is_err() {
            return Some(DirectionEnd::UpstreamError);
        }
        if terminate {
            if !self.released {
                let _ = self.write.shutdown().await;
            }
            return Some(DirectionEnd::ClientTerminated);
        }
        None
    }

    /// Judges a statement; for a refusal, builds the blocked record and the client's error.
    async fn judge(&mut self, sql: &[u8]) -> (Judgement, AuditEvent) {
        let text = String::from_utf8_lossy(sql);
        let mut j = self
            .policy
            .judge(
                &self.shared.policy,
                &self.target,
                &self.info.principal.groups,
                &text,
            )
            .await;
        if self.masks.is_active()
            && j.decision.action != gatehouse_core::policy::Action::Block
            && let Some(refusal) = self.masked_inference(&j).await
        {
            j.decision = refusal;
        }
        let event = self
            .info
            .statement_record(&text, &j.decision, &j.detail(), &SQLSTATES);
        if !j.allowed() {
            metrics::counter!("gatehouse_statements_refused_total").increment(1);
        }
        (j, event)
    }

    /// Whether the statement runs code the gateway cannot see into: DO, CALL, or a function
    /// the catalog lists as created outside the system schemas (every call counts when the
    /// catalog cannot be read).
    async fn runs_unseen_code(&self, j: &Judgement) -> bool {
        // COPY FROM STDIN: the server waits for the client's data before it answers, so
        // holding what follows would wait forever (and data is not parsed as SQL).
        if j.effective.iter().any(|s| s.kinds.contains("copy_from")) {
            return false;
        }
        let opaque = j
            .effective
            .iter()
            .any(|s| s.opaque || s.kinds.contains("call") || s.kinds.contains("do"));
        if opaque {
            return true;
        }
        if j.effective.iter().all(|s| s.functions.is_empty()) {
            return false;
        }
        let catalog = self.catalog().await;
        match catalog {
            Some(c) => j
                .effective
                .iter()
                .flat_map(|s| s.functions.iter())
                .any(|f| c.is_user_function(f)),
            None => true,
        }
    }

    /// The upstream's catalog, as cached for the connection (`None`: it cannot be read).
    async fn catalog(&self) -> Option<Arc<crate::catalog::Catalog>> {
        self.shared
            .policy
            .catalog
            .get(&self.target.name, &self.target)
            .await
    }

    /// The refusal of what would let this masked session infer masked values
    /// (`builtin:masked-inference`), judged on what actually runs.
    async fn masked_inference(&self, j: &Judgement) -> Option<gatehouse_core::policy::Decision> {
        let catalog = self.catalog().await;
        j.effective.iter().find_map(|s| {
            crate::mask::masked_inference(
                catalog.as_deref(),
                &self.masks,
                self.policy.search_path(),
                &self.target.user,
                s,
            )
        })
    }

    /// For an `approve` decision, holds the statement; the record then says how it ended.
    async fn approve_if_needed(
        &mut self,
        j: Judgement,
        event: &mut AuditEvent,
    ) -> Result<Judgement, Bytes> {
        if j.decision.action != gatehouse_core::policy::Action::Approve {
            return Ok(j);
        }
        match self.hold(j, event).await {
            Ok(j) => {
                // Approved: forwarded like any allowed statement, recorded with its rule.
                event.outcome = None;
                event.sqlstate = None;
                Ok(j)
            }
            Err(error) => {
                event.outcome = Some(Outcome::Denied);
                event.sqlstate = Some("42501".to_owned());
                Err(error)
            }
        }
    }

    /// Holds a statement a rule wants approved: opens a request, tells the client at once,
    /// and waits for the decision or the timeout. `Ok` with an allowing judgement when
    /// approved; `Err` with the client's error otherwise.
    async fn hold(&mut self, mut j: Judgement, event: &AuditEvent) -> Result<Judgement, Bytes> {
        let session = self.session;
        let request = HoldRequest {
            rule: j.decision.rule.clone().unwrap_or_default(),
            statement: event.statement.clone().unwrap_or_default(),
            reason: self.reason.clone(),
        };
        let mut hold = match session.hold(request).await {
            Ok(h) => h,
            Err(e) => {
                return Err(backend::error_response(
                    Severity::Error,
                    "58000",
                    &e.to_string(),
                    None,
                ));
            }
        };
        let _ = self
            .tx
            .send(Expect::Notice(backend::notice_response(&hold.notice())));
        // Wait for the decision or the deadline, watching the client meanwhile: what it sends
        // is buffered (it runs after the held statement, in order), and if it goes away the
        // request is abandoned rather than left for an approver to run into the void.
        let verdict = loop {
            let room = self.buf.len() < HOLD_BUFFER_LIMIT;
            tokio::select! {
                v = hold.verdict() => break v,
                n = self.read.read_buf(&mut self.buf), if room => match n {
                    Ok(0) | Err(_) => break hold.abandon(),
                    Ok(n) => self.bytes_in.increment(n as u64),
                },
            }
        };
        match verdict.refusal_message(&request_rule(&j)) {
            None => {
                j.decision.action = gatehouse_core::policy::Action::Allow;
                Ok(j)
            }
            Some(msg) => {
                let sqlstate = if verdict == Verdict::Abandoned {
                    "57014"
                } else {
                    "42501"
                };
                Err(backend::error_response(
                    Severity::Error,
                    sqlstate,
                    &msg,
                    None,
                ))
            }
        }
    }

    /// What the backend needs to mask this statement's results (nothing when no masking
    /// applies to the session).
    async fn masking_for(&mut self, j: &Judgement) -> StmtMasking {
        if !self.masks.is_active() {
            return StmtMasking::default();
        }
        let catalog = self.catalog().await;
        let resolver = Resolver {
            catalog: catalog.as_deref(),
            masks: &self.masks,
            search_path: self.policy.search_path(),
            user: &self.target.user,
        };
        if let Some(m) = resolver.declared(&j.effective) {
            self.cursors = Some(self.cursors.unwrap_or(m));
        }
        let lineage = resolver.lineage(&j.effective, self.cursors);
        let copy = j
            .effective
            .iter()
            .find(|s| s.kind == "copy_to")
            .and_then(|s| resolver.copy_spec(s));
        let withhold_text = j
            .effective
            .iter()
            .any(|s| inference::touches_masked(s, &resolver));
        StmtMasking {
            lineage: Some(Arc::new(lineage)),
            copy: copy.map(Arc::new),
            withhold_text,
        }
    }

    fn refusal(j: &Judgement) -> Bytes {
        backend::error_response(Severity::Error, "42501", &j.decision.client_message(), None)
    }

    async fn classify(&mut self, frame: &Frame) -> Result<Action, CodecError> {
        Ok(match frame.tag() {
            b'Q' => {
                let sql = frontend::query_text(frame)?;
                let (j, mut event) = self.judge(&sql).await;
                let j = match self.approve_if_needed(j, &mut event).await {
                    Ok(j) => j,
                    Err(error) => {
                        return Ok(Action::Refuse {
                            error,
                            event,
                            replacement: frontend::build_query(REFUSAL_SQL),
                            ext: None,
                        });
                    }
                };
                if !j.allowed() {
                    // Nothing of a multi-statement string runs if any part is refused.
                    return Ok(Action::Refuse {
                        error: Self::refusal(&j),
                        event,
                        replacement: frontend::build_query(REFUSAL_SQL),
                        ext: None,
                    });
                }
                self.policy
                    .allowed(&self.shared.policy, &self.info.connection, &j, None);
                // `SET gatehouse.reason = '...'`: the agent's justification for approvals (a
                // custom setting the server accepts and ignores).
                for st in j.statements.iter() {
                    if let Some((name, value)) = &st.set_setting
                        && name == "gatehouse.reason"
                    {
                        self.reason = value
                            .as_deref()
                            .map(|v| mask_pans(v.trim_matches('\'')).into_owned());
                    }
                }
                let masking = self.masking_for(&j).await;
                self.barrier = self.runs_unseen_code(&j).await;
                if self.barrier || loads_code(&j) {
                    self.poolable = false;
                }
                Action::Audit {
                    event: Some(event),
                    expect: Expect::Query,
                    replacement: frontend::build_query(REFUSAL_SQL),
                    result_formats: Arc::from([]),
                    masking,
                    prefix: None,
                }
            }
            b'P' => {
                let p = frontend::parse(frame)?;
                let (j, mut event) = self.judge(&p.query).await;
                let j = match self.approve_if_needed(j, &mut event).await {
                    Ok(j) => j,
                    Err(error) => {
                        return Ok(Action::Refuse {
                            error,
                            event,
                            replacement: frontend::build_parse(&p.name, REFUSAL_SQL),
                            ext: Some(ExtKind::Parse),
                        });
                    }
                };
                if !j.allowed() {
                    // The statement is never created: a Parse the server rejects takes its
                    // place, under the same name, so both sides agree it does not exist.
                    return Ok(Action::Refuse {
                        error: Self::refusal(&j),
                        event,
                        replacement: frontend::build_parse(&p.name, REFUSAL_SQL),
                        ext: Some(ExtKind::Parse),
                    });
                }
                self.policy.allowed(
                    &self.shared.policy,
                    &self.info.connection,
                    &j,
                    Some(&String::from_utf8_lossy(&p.name)),
                );
                if self.poolable && (loads_code(&j) || self.runs_unseen_code(&j).await) {
                    self.poolable = false;
                }
                let text: Arc<str> = mask_pans(&String::from_utf8_lossy(&p.query)).into();
                let masking = self.masking_for(&j).await;
                self.masking.insert(p.name.clone(), masking);
                self.statements.insert(p.name, text);
                Action::Ext(ExtKind::Parse)
            }
            b'B' => {
                let b = frontend::bind(frame)?;
                let text = self
                    .statements
                    .get(&b.statement)
                    .cloned()
                    .unwrap_or_else(|| Arc::from(""));
                let params = b.params.iter().map(param_for_audit).collect();
                let masking = self.masking.get(&b.statement).cloned().unwrap_or_default();
                self.portals.insert(
                    b.portal,
                    Portal {
                        text,
                        params,
                        result_formats: b.result_formats.into(),
                        masking,
                    },
                );
                Action::Ext(ExtKind::Bind)
            }
            b'E' => {
                let portal = frontend::execute_portal(frame)?;
                let mut event = self.info.event(RecordKind::Statement);
                let mut result_formats: Arc<[i16]> = Arc::from([]);
                let mut masking = StmtMasking::default();
                if let Some(p) = self.portals.get(&portal) {
                    event.statement = Some(p.text.to_string());
                    event.params = Some(p.params.clone());
                    result_formats = p.result_formats.clone();
                    masking = p.masking.clone();
                }
                // The gateway learns the result's columns and formats from the server itself,
                // whatever the client described (or did not).
                let prefix = self
                    .masks
                    .is_active()
                    .then(|| frontend::build_describe_portal(&portal));
                event.detail = Some(
                    serde_json::json!({ "protocol": "extended", "portal": String::from_utf8_lossy(&portal) })
                        .to_string(),
                );
                Action::Audit {
                    event: Some(event),
                    expect: Expect::Execute,
                    replacement: frontend::build_execute(REFUSAL_PORTAL),
                    result_formats,
                    masking,
                    prefix,
                }
            }
            b'C' => {
                let (kind, name) = frontend::close_target(frame)?;
                if kind == b'S' {
                    self.statements.remove(&name);
                    self.masking.remove(&name);
                } else {
                    self.portals.remove(&name);
                }
                Action::Ext(ExtKind::Close)
            }
            b'S' => Action::Sync,
            b'X' => Action::Terminate,
            b'F' => {
                let mut event = self.info.event(RecordKind::Statement);
                event.statement = Some("<function call>".to_owned());
                event.outcome = Some(Outcome::Blocked);
                event.rule = Some("builtin:function-call".to_owned());
                Action::Refuse {
                    event,
                    replacement: frontend::build_query(REFUSAL_SQL),
                    error: backend::error_response(
                        Severity::Error,
                        "42501",
                        "blocked by rule \"builtin:function-call\": the function-call \
                         sub-protocol is refused by Gatehouse",
                        None,
                    ),
                    ext: None,
                }
            }
            b'D' => Action::Ext(ExtKind::Describe),
            // Flush, CopyData/Done/Fail: nothing to inspect, no response of their own.
            b'H' | b'd' | b'c' | b'f' => Action::Forward,
            b'p' => {
                return Err(CodecError::Malformed {
                    what: "unexpected authentication message",
                });
            }
            other => return Err(CodecError::UnknownType { tag: other as char }),
        })
    }
}

/// The name of the rule that decided `j` (empty for none).
fn request_rule(j: &Judgement) -> String {
    j.decision.rule.clone().unwrap_or_default()
}

/// `LOAD`: a library stays loaded in the server process whatever resets the session.
fn loads_code(j: &Judgement) -> bool {
    j.effective.iter().any(|s| s.kinds.contains("load"))
}

/// A bind parameter as written to the audit record: text values masked, binary values never
/// stored (their type is unknown here, so they could hide a card number).
fn param_for_audit(p: &Param) -> Option<String> {
    match p {
        Param::Null => None,
        Param::Text(b) => Some(mask_pans(&String::from_utf8_lossy(b)).into_owned()),
        Param::Binary(b) => Some(format!("<binary {} bytes>", b.len())),
    }
}
