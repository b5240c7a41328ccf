//! The relay: client → upstream with write-ahead audit, upstream → client with outcome
//! tracking.
//!
//! Each direction reads as much as is available, finds the complete messages in it, inspects
//! only the ones that matter, and forwards the whole run of bytes in one write. Messages are
//! never rebuilt unless they must change.
//!
//! Refusing a message (fail-closed audit, function calls) must keep the client's and the
//! server's view of the session identical (transaction aborted, extended-protocol messages
//! discarded until Sync). So a refused message is *replaced* by one the server rejects without
//! executing anything (a Query with a syntax error; an Execute of a portal that cannot exist),
//! and the server's resulting ErrorResponse is swapped for the gateway's own. The server then
//! does exactly what it would do for any error.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use gatehouse_core::audit::{AuditEvent, Outcome, RecordKind};
use gatehouse_core::config::RecordResults;
use gatehouse_core::pan::mask_pans;
use gatehouse_core::session::{
    CapturedValue, EndReason, HoldRequest, OutcomeCodes, ResultCapture, Session, StatementEnd,
    StatementOutcome, Verdict,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::policy::{Judgement, SessionPolicy};
use super::startup::Established;
use super::{SessionInfo, Shared};
use crate::codec::{CodecError, Frame, FrameReader, Side};
use crate::mask::copy::{CopyOut, CopyPlan, CopySpec};
use crate::mask::{LineageMask, Resolver, ResultPlan, message};
use crate::messages::backend::{self, Severity};
use crate::messages::frontend::{self, Param};
use crate::stream::{BoxRead, BoxWrite};
use crate::upstream::UpstreamTarget;
use gatehouse_core::masking::{
    ColumnMask, MaskCounts, MaskReason, ReasonCounts, SessionMasks, inference,
};

/// SQL the server rejects at parse time without executing anything (replaces a Query).
/// The SQLSTATEs of what the gateway decides: `insufficient_privilege` for a refusal,
/// `system_error` when the gateway could not carry a statement out.
const SQLSTATES: OutcomeCodes = OutcomeCodes {
    refused: "42501",
    gateway_error: "58000",
};

const REFUSAL_SQL: &str = "GATEHOUSE REFUSED THIS STATEMENT";
/// A portal that never exists: executing it fails without touching the client's prepared
/// statements or portals (replaces an Execute).
const REFUSAL_PORTAL: &str = "gatehouse: refused";

/// While a statement is held, the client's further messages are read (to notice a
/// disconnect) up to this many buffered bytes; then reading pauses until the decision.
const HOLD_BUFFER_LIMIT: usize = 1024 * 1024;

/// Read buffer growth step.
const READ_CHUNK: usize = 64 * 1024;

/// A statement in flight, from its write-ahead record to its outcome.
#[derive(Debug)]
struct Stmt {
    seq: Option<u64>,
    started: Instant,
    /// The gateway's error to show instead of the server's (the statement was refused).
    replace_error: Option<Bytes>,
    refused_outcome: Option<Outcome>,
    rows: u64,
    result_rows: u64,
    end: StatementEnd,
    results: Option<ResultCapture>,
    result_bytes: u64,
    /// Result format codes from the Bind (empty: all text, as in the simple protocol).
    result_formats: Arc<[i16]>,
    /// Column names from a RowDescription seen while this statement was current.
    columns: Vec<String>,
    /// Masking: what the statement's lineage says, the plan of the result set being sent,
    /// the COPY being sent, and the values masked so far.
    masking: StmtMasking,
    plan: Option<ResultPlan>,
    copy: Option<CopyPlan>,
    masked: MaskCounts,
}

/// What the frontend learnt about a statement's results, for the backend to mask them.
#[derive(Debug, Clone, Default)]
struct StmtMasking {
    lineage: Option<Arc<LineageMask>>,
    copy: Option<Arc<CopySpec>>,
    /// The statement reads or writes masked data: the server's error and notice texts are
    /// withheld (they may quote a masked value in any shape).
    withhold_text: bool,
}

impl Stmt {
    fn new(seq: Option<u64>) -> Self {
        Self {
            seq,
            started: Instant::now(),
            replace_error: None,
            refused_outcome: None,
            rows: 0,
            result_rows: 0,
            end: StatementEnd::Completed,
            results: None,
            result_bytes: 0,
            result_formats: Arc::from([]),
            columns: Vec::new(),
            masking: StmtMasking::default(),
            plan: None,
            copy: None,
            masked: MaskCounts::default(),
        }
    }

    /// Moves the counts of the finished result set (or COPY) into the statement's totals.
    fn close_result(&mut self) {
        if let Some(mut p) = self.plan.take() {
            p.drain_counts(&mut self.masked);
        }
        if let Some(mut c) = self.copy.take() {
            c.drain_counts(&mut self.masked);
        }
    }

    /// Whether result column `i` arrives in binary format.
    fn binary_column(&self, i: usize) -> bool {
        match self.result_formats.len() {
            0 => false,
            1 => self.result_formats.first() == Some(&1),
            _ => self.result_formats.get(i) == Some(&1),
        }
    }
}

/// What the backend direction should expect, in the order the client sent it.
#[derive(Debug)]
enum Expect {
    /// A simple Query (or FunctionCall): completes at the next ReadyForQuery.
    Query(Stmt),
    /// An extended-protocol Execute: completes at CommandComplete, EmptyQueryResponse,
    /// PortalSuspended or ErrorResponse — or is skipped after an earlier error.
    Execute(Stmt),
    /// A Parse, Bind, Close or Describe: completes at its own response (ParseComplete,
    /// BindComplete, CloseComplete, RowDescription/NoData). With an error, the message was
    /// refused and replaced: the server's ErrorResponse is swapped for this one.
    Ext(ExtKind, Option<Bytes>),
    /// A Sync: completes at ReadyForQuery.
    Sync,
    /// Write this to the client, then end the session.
    Fatal(Bytes),
    /// Write this to the client at once, between messages (a NoticeResponse about a held
    /// statement); it answers nothing.
    Notice(Bytes),
}

/// Extended-protocol messages that answer with a completion of their own. Tracking them
/// keeps the queue exact: an ErrorResponse is always attributed to the message the server
/// was processing, and after one, everything up to Sync is known to be discarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ExtKind {
    Parse,
    Bind,
    Close,
    Describe,
    /// The gateway's own Describe of the portal an Execute runs: its RowDescription (or
    /// NoData) gives the result's columns and formats, and is not forwarded.
    MaskDescribe,
}

pub(crate) async fn run(shared: &Arc<Shared>, est: Established) {
    let Established {
        session,
        client_read,
        client_write,
        client_buf,
        mut upstream,
        search_path,
        application_name,
        _cancel,
    } = est;
    let info = session.info().clone();
    let Some(upstream_write) = upstream.write.take() else {
        return session.end(EndReason::Protocol("upstream not connected"));
    };
    let Some(target) = shared.upstreams.get(&info.connection).cloned() else {
        return session.end(EndReason::Protocol("unknown connection"));
    };
    let scs = Arc::new(AtomicBool::new(
        !upstream
            .params
            .iter()
            .any(|(k, v)| k == "standard_conforming_strings" && v != "on"),
    ));
    let (tx, rx) = mpsc::unbounded_channel();
    let ready = Arc::new(ReadyCount::default());
    let masks = Arc::new(
        shared
            .gate
            .masks
            .for_session(&info.connection, &info.principal.groups),
    );
    let front = Frontend {
        shared: shared.clone(),
        session: &session,
        info: &info,
        read: client_read,
        buf: client_buf,
        write: upstream_write,
        tx,
        statements: HashMap::new(),
        portals: HashMap::new(),
        policy: SessionPolicy::new(search_path.as_deref(), scs.clone(), masks.is_active()),
        reason: application_name,
        target: target.clone(),
        masks: masks.clone(),
        masking: HashMap::new(),
        cursors: None,
        ready: ready.clone(),
        ready_owed: 0,
        barrier: false,
        poolable: target.pool.reuses(),
        unsynced: false,
        released: false,
        bytes_in: metrics::counter!("gatehouse_bytes_total", "direction" => "client_to_upstream"),
        statements_total: metrics::counter!("gatehouse_statements_total"),
    };
    let mut back = Backend {
        shared: shared.clone(),
        info: &info,
        read: upstream.read,
        buf: std::mem::take(&mut upstream.buf),
        write: client_write,
        rx,
        queue: VecDeque::new(),
        skipping: false,
        done: Vec::new(),
        notices: Vec::new(),
        bytes_out: metrics::counter!("gatehouse_bytes_total", "direction" => "upstream_to_client"),
        scs,
        masks,
        target: target.clone(),
        ready,
        status: b'I',
        scratch: BytesMut::new(),
    };
    // The server connection's write half, when the client ended cleanly and the session may
    // hand the connection on; and whether every answer owed was read.
    let mut released: Option<BoxWrite> = None;
    let mut drained = false;
    let reason: EndReason = {
        let front = front.run();
        let backend = back.run();
        tokio::pin!(front, backend);
        tokio::select! {
            (r, write) = &mut front => {
                released = write;
                // The client is done; let responses already on their way be accounted for.
                drained = matches!(
                    tokio::time::timeout(DRAIN_GRACE, &mut backend).await,
                    Ok(DRAINED)
                );
                r.into()
            }
            r = &mut backend => if r == DRAINED {
                EndReason::ClientDisconnected
            } else {
                r.into()
            },
            r = session.ending() => r,
        }
    };
    if let Some(why) = session.ending_message(reason) {
        // Tell the client why, as PostgreSQL does on a fast shutdown.
        back.fatal("57P01", &why).await;
    }
    back.abandon_pending().await;
    if let Some(write) = released
        && drained
        && back.status == b'I'
        && back.buf.is_empty()
    {
        // No cancel can be looked up for this session once its server connection moves on.
        drop(_cancel);
        upstream.read = back.read;
        upstream.buf = back.buf;
        upstream.write = Some(write);
        target.release(upstream);
    }
    session.end(reason);
}

/// The backend direction's end when the client has gone and every answer owed was read.
const DRAINED: &str = "drained";

/// How long the backend direction may keep draining after the client side has ended.
const DRAIN_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

struct Frontend<'a> {
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

impl Frontend<'_> {
    /// Relays until the session ends; returns why, and the server connection's write half
    /// when the Terminate was kept from the server for the pool.
    async fn run(mut self) -> (&'static str, Option<BoxWrite>) {
        let reason = self.relay().await;
        // `self` (and with it the expectation channel) is dropped here: the backend sees
        // the client side end.
        (reason, self.released.then_some(self.write))
    }

    async fn relay(&mut self) -> &'static str {
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
                Ok(0) => return "client disconnected",
                Ok(n) => self.bytes_in.increment(n as u64),
                Err(_) => return "client connection error",
            }
        }
    }

    async fn fatal(&mut self, msg: &str, sqlstate: &str) -> &'static str {
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
        "protocol error"
    }

    /// Handles a run of complete messages; returns a reason when the session must end.
    async fn handle_chunk(&mut self, chunk: Bytes) -> Option<&'static str> {
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
    ) -> Option<&'static str> {
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
            return Some("upstream connection error");
        }
        if terminate {
            if !self.released {
                let _ = self.write.shutdown().await;
            }
            return Some("client terminated");
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

    /// The refusal of what would let this masked session infer masked values
    /// (`builtin:masked-inference`), judged on what actually runs.
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

/// `LOAD`: a library stays loaded in the server process whatever resets the session.
/// The name of the rule that decided `j` (empty for none).
fn request_rule(j: &Judgement) -> String {
    j.decision.rule.clone().unwrap_or_default()
}

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

/// Total length of the message at the front of `buf` (header already validated).
fn msg_len(buf: &[u8]) -> usize {
    let len = i32::from_be_bytes([
        buf.get(1).copied().unwrap_or(0),
        buf.get(2).copied().unwrap_or(0),
        buf.get(3).copied().unwrap_or(0),
        buf.get(4).copied().unwrap_or(0),
    ]);
    usize::try_from(len).unwrap_or(0) + 1
}

struct Backend<'a> {
    shared: Arc<Shared>,
    info: &'a SessionInfo,
    read: BoxRead,
    buf: BytesMut,
    write: BoxWrite,
    rx: mpsc::UnboundedReceiver<Expect>,
    queue: VecDeque<Expect>,
    /// After an extended-protocol error the server discards everything up to Sync.
    skipping: bool,
    /// Statements finished and waiting for their outcome record.
    done: Vec<Stmt>,
    /// Notices drained with other expectations, written before the next chunk.
    notices: Vec<Bytes>,
    bytes_out: metrics::Counter,
    /// The server's `standard_conforming_strings`, shared with the analysis of the frontend.
    scs: Arc<AtomicBool>,
    masks: Arc<SessionMasks>,
    target: Arc<UpstreamTarget>,
    ready: Arc<ReadyCount>,
    /// The transaction status of the server's last ReadyForQuery.
    status: u8,
    /// Where rewritten runs of messages are joined before they are written.
    scratch: BytesMut,
}

/// How many ReadyForQuery messages the server has sent in this session.
///
/// Why: a function the gateway cannot see into may change how the server reads the next
/// statement (`set_config('client_encoding', ...)` in its body). A statement pipelined behind
/// such a call is analysed only once the server has answered the call — by then any change of
/// state has been reported (ParameterStatus comes before ReadyForQuery) and has ended the
/// session if the gateway cannot follow it.
#[derive(Default)]
struct ReadyCount {
    count: AtomicU64,
    changed: tokio::sync::Notify,
}

impl ReadyCount {
    fn bump(&self) {
        self.count.fetch_add(1, Ordering::Release);
        self.changed.notify_waiters();
    }

    async fn reached(&self, n: u64) {
        loop {
            let notified = self.changed.notified();
            if self.count.load(Ordering::Acquire) >= n {
                return;
            }
            notified.await;
        }
    }
}

impl Backend<'_> {
    async fn run(&mut self) -> &'static str {
        let reader = FrameReader::new(Side::Backend, crate::codec::LARGE_MESSAGE_LIMIT);
        let mut client_open = true;
        loop {
            let mut end = 0;
            loop {
                let rest = self.buf.get(end..).unwrap_or_default();
                match reader.check_header(rest) {
                    Ok(0) => end += msg_len(rest),
                    Ok(need) => {
                        self.buf
                            .reserve(need.max(READ_CHUNK).min(need + READ_CHUNK));
                        break;
                    }
                    Err(e) => {
                        tracing::error!(session = %self.info.id, error = %e, "invalid message from upstream");
                        self.fatal(
                            "08P01",
                            "Gatehouse received an invalid message from the upstream server",
                        )
                        .await;
                        return "upstream protocol error";
                    }
                }
            }
            if end > 0 {
                let chunk = self.buf.split_to(end).freeze();
                if let Err(reason) = self.handle_chunk(chunk).await {
                    return reason;
                }
            }
            if !client_open && self.queue.is_empty() && self.buf.is_empty() {
                return DRAINED;
            }
            tokio::select! {
                r = self.read.read_buf(&mut self.buf) => match r {
                    Ok(0) => return "upstream closed",
                    Ok(n) => self.bytes_out.increment(n as u64),
                    Err(_) => return "upstream connection error",
                },
                msg = self.rx.recv(), if client_open => match msg {
                    Some(Expect::Fatal(bytes)) => {
                        let _ = self.write.write_all(&bytes).await;
                        let _ = self.write.shutdown().await;
                        return "protocol error";
                    }
                    Some(Expect::Notice(bytes)) => {
                        if write_parts(&mut self.write, vec![bytes]).await.is_err() {
                            return "client connection error";
                        }
                    }
                    Some(e) => self.push_expect(e),
                    // The client side ended; keep forwarding what the server still sends.
                    None => client_open = false,
                },
            }
        }
    }

    /// Sends the client a FATAL error and closes its side.
    async fn fatal(&mut self, sqlstate: &str, msg: &str) {
        let _ = self
            .write
            .write_all(&backend::error_response(
                Severity::Fatal,
                sqlstate,
                msg,
                None,
            ))
            .await;
        let _ = self.write.shutdown().await;
    }

    /// Masks the card numbers in a text-carrying message (ErrorResponse, NoticeResponse,
    /// NotificationResponse) with `rewrite`, counting them under `label` for the current
    /// statement. `Ok(None)`: nothing to mask; `Err`: the message cannot be parsed.
    fn mask_text_message(
        &mut self,
        msg: &[u8],
        label: &str,
        rewrite: TextRewrite,
    ) -> Result<Option<Bytes>, ()> {
        let style = self.masks.pan_style().unwrap_or_default();
        let Some((masked, n)) = rewrite(msg, style, self.masks.key())? else {
            return Ok(None);
        };
        if let Some(st) = self.current() {
            st.masked.add(label, ReasonCounts::of(MaskReason::Pan, n));
        }
        Ok(Some(Bytes::from(masked)))
    }

    /// A message from the server that masking cannot parse: it is not forwarded, the session
    /// ends (nothing unmasked may reach the client).
    async fn malformed(&mut self) -> Result<(), &'static str> {
        tracing::error!(session = %self.info.id, "malformed value-carrying message from upstream");
        self.fatal(
            "08P01",
            "Gatehouse received a malformed message from the upstream server",
        )
        .await;
        Err("upstream protocol error")
    }

    /// Plans the masking of the result set a RowDescription (`body`) announces, for the
    /// statement now running: the Execute after the gateway's Describe, or the current Query.
    async fn plan_result(&mut self, body: Bytes, record_columns: bool) {
        let Ok(fields) = crate::mask::row_description(body) else {
            return;
        };
        let first_oid = fields.iter().map(|f| f.table_oid).find(|o| *o != 0);
        let policy = self.shared.policy.clone();
        let catalog = match first_oid {
            Some(oid) => {
                policy
                    .catalog
                    .get_with(&self.target.name, &self.target, oid)
                    .await
            }
            None => None,
        };
        let masks = self.masks.clone();
        let resolver = Resolver {
            catalog: catalog.as_deref(),
            masks: &masks,
            search_path: &[],
            user: &self.target.user,
        };
        let st = match self.queue.front_mut() {
            Some(Expect::Query(st)) | Some(Expect::Execute(st)) => st,
            _ => return,
        };
        st.close_result();
        let lineage = st.masking.lineage.clone().unwrap_or_else(|| {
            // Nothing is known about the statement: computed columns could be anything.
            Arc::new(LineageMask::all(None))
        });
        st.plan = Some(resolver.plan(&fields, &lineage));
        if record_columns {
            st.columns = fields.into_iter().map(|f| f.name).collect();
        }
    }

    /// Pulls everything the frontend has queued (it always queues before forwarding).
    fn drain_expectations(&mut self) -> Result<(), &'static str> {
        while let Ok(e) = self.rx.try_recv() {
            self.push_expect(e);
        }
        Ok(())
    }

    /// Queues what the client sent, unless the server is discarding it (skip-to-Sync).
    fn push_expect(&mut self, e: Expect) {
        match e {
            Expect::Fatal(_) => self.queue.push_front(e),
            Expect::Notice(b) => self.notices.push(b),
            Expect::Sync => {
                self.skipping = false;
                self.queue.push_back(e);
            }
            Expect::Query(st) | Expect::Execute(st) if self.skipping => self.skip(st),
            Expect::Ext(..) if self.skipping => {}
            e => self.queue.push_back(e),
        }
    }

    fn skip(&mut self, mut st: Stmt) {
        st.end.set(StatementEnd::Skipped);
        self.done.push(st);
    }

    /// An error in the extended protocol: the server discards everything up to the next Sync.
    /// The first statement of that run carries the error; the rest never ran.
    fn extended_error(&mut self, sqlstate: &str) -> Option<Bytes> {
        // Only the message the server was processing (the head) can have caused the error,
        // so only its replacement applies.
        let mut replace = None;
        let mut head = true;
        let mut attributed = false;
        loop {
            match self.queue.front() {
                None => {
                    // The Sync has not arrived yet: discard what comes until it does.
                    self.skipping = true;
                    break;
                }
                Some(Expect::Sync) | Some(Expect::Fatal(_)) => break,
                Some(_) => {}
            }
            match self.queue.pop_front() {
                Some(Expect::Execute(mut st)) if !attributed => {
                    attributed = true;
                    if head {
                        replace = st.replace_error.take();
                    }
                    // A refused Parse ahead of it: the statement was blocked, not failed.
                    let code = if replace.is_some() { "42501" } else { sqlstate };
                    st.end.set(StatementEnd::Failed(code.to_owned()));
                    self.done.push(st);
                }
                Some(Expect::Execute(st)) | Some(Expect::Query(st)) => self.skip(st),
                Some(Expect::Ext(_, rep)) if head => replace = rep,
                _ => {}
            }
            head = false;
        }
        replace
    }

    fn current(&mut self) -> Option<&mut Stmt> {
        current_of(&mut self.queue)
    }

    /// Whether the statement now running has its server texts withheld.
    fn withholds_text(&mut self) -> bool {
        self.current().is_some_and(|st| st.masking.withhold_text)
    }

    async fn handle_chunk(&mut self, chunk: Bytes) -> Result<(), &'static str> {
        self.drain_expectations()?;
        for n in std::mem::take(&mut self.notices) {
            if self.write.write_all(&n).await.is_err() {
                return Err("client connection error");
            }
        }
        if let Some(Expect::Fatal(bytes)) = self.queue.front() {
            let _ = write_parts(&mut self.write, vec![bytes.clone()]).await;
            return Err("protocol error");
        }
        let record = self.shared.gate.record_results;
        let cap = self.shared.gate.result_cap_bytes;
        let shared = self.shared.clone();
        let mut out: Vec<Bytes> = Vec::new();
        let mut run_start: Option<usize> = None;
        let mut run_end = 0;
        let mut offset = 0;
        while offset < chunk.len() {
            let len = msg_len(chunk.get(offset..).unwrap_or_default());
            let tag = chunk.get(offset).copied().unwrap_or(0);
            let mut replace: Option<Bytes> = None;
            match tag {
                b'D' => {
                    let mut malformed = false;
                    // Field-level borrows: the statement (queue) and the masks side by side.
                    if let Some(st) = current_of(&mut self.queue) {
                        st.result_rows += 1;
                        st.result_bytes += len as u64;
                        let masks = &self.masks;
                        if masks.is_active() {
                            let plan = st.plan.get_or_insert_with(|| ResultPlan {
                                // Rows without a description: the detector still runs.
                                fields: Vec::new(),
                                detect: Some(masks.pan_style().unwrap_or_default()),
                                counts: Vec::new(),
                            });
                            let msg = chunk.get(offset..offset + len).unwrap_or_default();
                            if plan.active() {
                                match message::data_row(msg, plan, masks.key()) {
                                    Ok(Some(rewritten)) => replace = Some(Bytes::from(rewritten)),
                                    Ok(None) => {}
                                    Err(()) => malformed = true,
                                }
                            }
                        }
                        if record == RecordResults::Masked && !malformed {
                            let bytes = replace
                                .clone()
                                .unwrap_or_else(|| chunk.slice(offset..offset + len));
                            capture_row(
                                st,
                                &Frame::from_raw(bytes),
                                cap,
                                &shared.gate.redacted_columns,
                            );
                        }
                    }
                    if malformed {
                        return self.malformed().await;
                    }
                }
                b'T' if matches!(
                    self.queue.front(),
                    Some(Expect::Ext(ExtKind::MaskDescribe, _))
                ) =>
                {
                    // The gateway's own Describe: plan the Execute's rows, tell the client nothing.
                    self.queue.pop_front();
                    let body = chunk.slice(offset + 5..offset + len);
                    self.plan_result(body, record == RecordResults::Masked)
                        .await;
                    replace = Some(Bytes::new());
                }
                b'n' if matches!(
                    self.queue.front(),
                    Some(Expect::Ext(ExtKind::MaskDescribe, _))
                ) =>
                {
                    self.queue.pop_front();
                    replace = Some(Bytes::new());
                }
                b'T' => {
                    if self.masks.is_active()
                        && matches!(self.queue.front(), Some(Expect::Query(_)))
                    {
                        let body = chunk.slice(offset + 5..offset + len);
                        self.plan_result(body, false).await;
                    }
                    if let Some(Expect::Ext(ExtKind::Describe, _)) = self.queue.front() {
                        self.queue.pop_front();
                        // A Describe of the portal an Execute runs next: its columns.
                        if record == RecordResults::Masked
                            && let Some(Expect::Execute(st)) = self.queue.front_mut()
                        {
                            let frame = Frame::from_raw(chunk.slice(offset..offset + len));
                            st.columns = backend::row_description_names(&frame).unwrap_or_default();
                        }
                    } else if record == RecordResults::Masked
                        && let Some(st) = self.current()
                    {
                        let frame = Frame::from_raw(chunk.slice(offset..offset + len));
                        st.columns = backend::row_description_names(&frame).unwrap_or_default();
                    }
                }
                b'd' => {
                    if let Some(st) = current_of(&mut self.queue) {
                        st.result_bytes += len as u64;
                        if let Some(plan) = st.copy.as_mut()
                            && let Some(data) = chunk.get(offset + 5..offset + len)
                        {
                            match plan.push(data, self.masks.key()) {
                                CopyOut::Keep => {}
                                CopyOut::Replace(masked) => replace = Some(copy_data(&masked)),
                                // The row continues in the next message: sent with it.
                                CopyOut::Hold => replace = Some(Bytes::new()),
                            }
                        }
                    }
                }
                // CopyDone: a row still held (no terminator) goes out before it.
                b'c' => {
                    if let Some(st) = current_of(&mut self.queue)
                        && let Some(plan) = st.copy.as_mut()
                        && let Some(rest) = plan.finish(self.masks.key())
                    {
                        let mut b = BytesMut::from(&copy_data(&rest)[..]);
                        b.extend_from_slice(chunk.get(offset..offset + len).unwrap_or_default());
                        replace = Some(b.freeze());
                    }
                }
                // CopyOutResponse: the format of the COPY data that follows.
                b'H' => {
                    let masks = &self.masks;
                    if masks.is_active()
                        && let Some(st) = current_of(&mut self.queue)
                    {
                        let binary = chunk.get(offset + 5) == Some(&1);
                        let spec = st.masking.copy.clone().unwrap_or_else(|| {
                            Arc::new(CopySpec {
                                csv: None,
                                delimiter: b'\t',
                                fields: Vec::new(),
                                header: false,
                            })
                        });
                        st.close_result();
                        let plan = spec.plan(binary, Some(masks.pan_style().unwrap_or_default()));
                        st.copy = plan.active().then_some(plan);
                    }
                }
                // NotificationResponse: the payload is text anyone could have written.
                b'A' if self.masks.is_active() => {
                    let msg = chunk.get(offset..offset + len).unwrap_or_default();
                    match self.mask_text_message(msg, "notification", message::notification) {
                        Ok(masked) => replace = masked,
                        Err(()) => return self.malformed().await,
                    }
                }
                // NoticeResponse: server text may quote values (RAISE NOTICE, warnings).
                b'N' if self.masks.is_active() => {
                    let msg = chunk.get(offset..offset + len).unwrap_or_default();
                    if self.withholds_text() {
                        match message::withhold(msg) {
                            Ok(w) => replace = Some(Bytes::from(w)),
                            Err(()) => return self.malformed().await,
                        }
                    } else {
                        match self.mask_text_message(msg, "notice", message::error_or_notice) {
                            Ok(masked) => replace = masked,
                            Err(()) => return self.malformed().await,
                        }
                    }
                }
                b'C' | b'I' | b's' => {
                    let rows = if tag == b'C' {
                        backend::command_rows(&Frame::from_raw(chunk.slice(offset..offset + len)))
                    } else {
                        None
                    };
                    match self.queue.front_mut() {
                        Some(Expect::Query(st)) => st.rows += rows.unwrap_or(0),
                        Some(Expect::Execute(st)) => {
                            st.rows += rows.unwrap_or(st.result_rows);
                            if let Some(Expect::Execute(st)) = self.queue.pop_front() {
                                self.done.push(st);
                            }
                        }
                        _ => {}
                    }
                }
                b'S' => {
                    let frame = Frame::from_raw(chunk.slice(offset..offset + len));
                    if let Ok((name, value)) = backend::parameter(&frame) {
                        if name == "standard_conforming_strings" {
                            self.scs.store(value == "on", Ordering::Relaxed);
                        }
                        // Whatever route got the server there (a function the gateway cannot
                        // see into), a state the gateway cannot parse under ends the session.
                        let state = [(name.to_owned(), value.to_owned())];
                        if let Some(problem) = super::parameters::upstream_state_refusal(&state) {
                            tracing::warn!(session = %self.info.id, %problem, "upstream session state refused");
                            self.fatal("42501", &format!("Gatehouse ends this session: {problem}"))
                                .await;
                            return Err("upstream state refused");
                        }
                    }
                }
                // ParseComplete, BindComplete, CloseComplete.
                b'1' | b'2' | b'3' => {
                    if let Some(Expect::Ext(..)) = self.queue.front() {
                        self.queue.pop_front();
                    }
                }
                // NoData answers a Describe (a RowDescription does too, see above).
                b'n' => {
                    if let Some(Expect::Ext(ExtKind::Describe, _)) = self.queue.front() {
                        self.queue.pop_front();
                    }
                }
                b'E' => {
                    let frame = Frame::from_raw(chunk.slice(offset..offset + len));
                    let fields = backend::error_fields(&frame).unwrap_or_default();
                    // Server errors may quote values (a unique violation's key, a bad cast).
                    let mut masked_error = None;
                    if self.masks.is_active() {
                        let msg = chunk.get(offset..offset + len).unwrap_or_default();
                        if self.withholds_text() {
                            match message::withhold(msg) {
                                Ok(w) => masked_error = Some(Bytes::from(w)),
                                Err(()) => return self.malformed().await,
                            }
                        } else {
                            match self.mask_text_message(msg, "error", message::error_or_notice) {
                                Ok(masked) => masked_error = masked,
                                Err(()) => return self.malformed().await,
                            }
                        }
                    }
                    match self.queue.front_mut() {
                        Some(Expect::Query(st)) => {
                            if let Some(rep) = st.replace_error.take() {
                                replace = Some(rep);
                            } else {
                                st.end.set(StatementEnd::Failed(fields.sqlstate.clone()));
                            }
                        }
                        Some(Expect::Execute(_)) | Some(Expect::Ext(..)) => {
                            replace = self.extended_error(&fields.sqlstate);
                        }
                        _ => {}
                    }
                    if replace.is_none() {
                        replace = masked_error;
                    }
                }
                b'Z' => {
                    // Everything up to the Query or Sync this answers is complete.
                    // Status byte after the length; a short message reads as not idle.
                    self.status = chunk.get(offset + 5).copied().unwrap_or(b'?');
                    self.ready.bump();
                    self.skipping = false;
                    while let Some(e) = self.queue.pop_front() {
                        match e {
                            Expect::Execute(st) => self.skip(st),
                            Expect::Ext(..) | Expect::Notice(_) => {}
                            Expect::Query(st) => {
                                self.done.push(st);
                                break;
                            }
                            Expect::Sync => break,
                            Expect::Fatal(b) => {
                                self.queue.push_front(Expect::Fatal(b));
                                break;
                            }
                        }
                    }
                }
                _ => {}
            }
            match replace {
                None => {
                    if run_start.is_none() {
                        run_start = Some(offset);
                    }
                    run_end = offset + len;
                }
                Some(rep) => {
                    if let Some(s) = run_start.take() {
                        out.push(chunk.slice(s..run_end));
                    }
                    out.push(rep);
                }
            }
            offset += len;
        }
        if let Some(s) = run_start {
            if s == 0 && run_end == chunk.len() && out.is_empty() {
                out.push(chunk);
            } else {
                out.push(chunk.slice(s..run_end));
            }
        }
        let written = write_joined(&mut self.write, out, &mut self.scratch)
            .await
            .map_err(|_| "client connection error");
        // Statements that ran are recorded even if the client can no longer be told.
        for st in std::mem::take(&mut self.done) {
            self.record_outcome(st).await;
        }
        written
    }

    /// Records an outcome for every statement still in flight when the session ends.
    async fn abandon_pending(&mut self) {
        while let Ok(e) = self.rx.try_recv() {
            self.queue.push_back(e);
        }
        for st in std::mem::take(&mut self.done) {
            self.record_outcome(st).await;
        }
        while let Some(e) = self.queue.pop_front() {
            if let Expect::Query(mut st) | Expect::Execute(mut st) = e {
                st.end.set(StatementEnd::SessionEnded);
                self.record_outcome(st).await;
            }
        }
    }

    async fn record_outcome(&self, mut st: Stmt) {
        st.close_result();
        let outcome = StatementOutcome {
            seq: st.seq,
            duration: st.started.elapsed(),
            refused: st.refused_outcome,
            end: st.end,
            rows: st.rows,
            result_rows: st.result_rows,
            result_bytes: st.result_bytes,
            masked: st.masked,
            results: st.results,
        };
        let ev = self.info.outcome_record(outcome, &self.masks, &SQLSTATES);
        self.shared.gate.auditor.record_later(ev).await;
    }
}

/// Writes a run of message slices and flushes. One slice (the untouched run of messages, the
/// common case) goes out as is; several (a run with rewritten messages) are joined first, so
/// masking costs one write, not one per row. The flush matters with TLS: bytes left in the
/// TLS layer's buffer would otherwise wait for the next write, which may never come.
async fn write_parts(write: &mut BoxWrite, parts: Vec<Bytes>) -> std::io::Result<()> {
    write_joined(write, parts, &mut BytesMut::new()).await
}

/// Writes the parts as one write, joined in `scratch` (reused across calls, so a stream of
/// rewritten rows costs no allocation per chunk; given back when it grew past
/// [`SCRATCH_KEEP`]).
async fn write_joined(
    write: &mut BoxWrite,
    parts: Vec<Bytes>,
    scratch: &mut BytesMut,
) -> std::io::Result<()> {
    match parts.as_slice() {
        [] => {}
        [one] => write.write_all(one).await?,
        many => {
            scratch.clear();
            for p in many {
                scratch.extend_from_slice(p);
            }
            let written = write.write_all(scratch).await;
            if scratch.capacity() > SCRATCH_KEEP {
                *scratch = BytesMut::new();
            }
            written?;
        }
    }
    write.flush().await
}

/// Largest join buffer a session keeps between writes.
const SCRATCH_KEEP: usize = 256 * 1024;

/// The statement whose results are arriving: the head of the queue when it is a Query or an
/// Execute. A free function so that callers can borrow other fields of the backend alongside.
fn current_of(queue: &mut VecDeque<Expect>) -> Option<&mut Stmt> {
    match queue.front_mut() {
        Some(Expect::Query(s)) | Some(Expect::Execute(s)) => Some(s),
        _ => None,
    }
}

/// A rewriter of a text-carrying backend message: the masked message and the count, `None`
/// when unchanged, `Err` when malformed.
type TextRewrite = fn(
    &[u8],
    gatehouse_core::masking::MaskStyle,
    &gatehouse_core::masking::TokenKey,
) -> Result<Option<(Vec<u8>, u64)>, ()>;

/// A CopyData message carrying `data`.
fn copy_data(data: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(data.len() + 5);
    b.extend_from_slice(b"d");
    b.extend_from_slice(
        &i32::try_from(data.len() + 4)
            .unwrap_or(i32::MAX)
            .to_be_bytes(),
    );
    b.extend_from_slice(data);
    b.freeze()
}

/// Adds one DataRow's values to the record: text PAN-masked, binary and sensitive columns
/// withheld, within the cap. (Column-lineage masking replaces the name match later.)
fn capture_row(st: &mut Stmt, frame: &Frame, cap: usize, redacted: &[String]) {
    if st.results.as_ref().is_some_and(ResultCapture::is_full) {
        return;
    }
    let Ok(values) = backend::data_row_values(frame) else {
        return;
    };
    let binary: Vec<bool> = (0..values.len()).map(|i| st.binary_column(i)).collect();
    let columns = &st.columns;
    let capture = st
        .results
        .get_or_insert_with(|| ResultCapture::new(columns.clone()));
    let row = values.iter().zip(binary).map(|(v, binary)| match v {
        None => CapturedValue::Null,
        Some(b) if binary => CapturedValue::Binary(b.len()),
        Some(b) => CapturedValue::Text(b),
    });
    capture.push_row(row, redacted, cap);
}
