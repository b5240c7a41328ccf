//! The server → client direction: frames the server's messages, pairs each answer with what
//! the client sent (the [`ExpectQueue`]), masks results and server texts, captures result
//! values for the record, forwards the run of messages in one write, and records each
//! statement's outcome after the fact.
//!
//! Why the outcome is recorded here and not with the statement: only the server's answer says
//! how a statement ended (rows, SQLSTATE, skipped after an earlier error), and it is recorded
//! even when the client can no longer be told.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::{Bytes, BytesMut};
use gatehouse_core::config::RecordResults;
use gatehouse_core::masking::{MaskReason, ReasonCounts, SessionMasks};
use gatehouse_core::session::{CapturedValue, ResultCapture, StatementOutcome};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::expect::{Expect, ExpectQueue, ExtKind, Stmt, binary_format};
use super::{
    Context, DirectionEnd, READ_CHUNK, ReadyCount, SQLSTATES, msg_len, write_joined, write_parts,
};
use crate::codec::{Frame, FrameReader, Side};
use crate::mask::copy::{CopyOut, CopySpec};
use crate::mask::{LineageMask, Resolver, ResultPlan, message};
use crate::messages::backend::{self, Severity};
use crate::session::{SessionInfo, Shared};
use crate::stream::{BoxRead, BoxWrite};
use crate::upstream::UpstreamTarget;

/// The server → client half of one session.
pub(super) struct Backend<'a> {
    shared: Arc<Shared>,
    info: &'a SessionInfo,
    read: BoxRead,
    buf: BytesMut,
    write: BoxWrite,
    rx: mpsc::UnboundedReceiver<Expect>,
    /// What the server's answers are paired with.
    expect: ExpectQueue,
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

impl<'a> Backend<'a> {
    /// The server's side of a session that starts: what the server sent past startup is in
    /// `buf`; what the client sent arrives on `rx`.
    pub(super) fn new(
        cx: Context<'a>,
        read: BoxRead,
        buf: BytesMut,
        write: BoxWrite,
        rx: mpsc::UnboundedReceiver<Expect>,
    ) -> Self {
        Self {
            shared: cx.shared,
            info: cx.info,
            read,
            buf,
            write,
            rx,
            expect: ExpectQueue::default(),
            bytes_out: metrics::counter!("gatehouse_bytes_total", "direction" => "upstream_to_client"),
            scs: cx.scs,
            masks: cx.masks,
            target: cx.target,
            ready: cx.ready,
            status: b'I',
            scratch: BytesMut::new(),
        }
    }

    /// Whether the server connection can serve another session as far as this direction
    /// knows: the last ReadyForQuery said idle and nothing unread is buffered.
    pub(super) fn idle(&self) -> bool {
        self.status == b'I' && self.buf.is_empty()
    }

    /// The server connection's read half and what was read from it, for the pool.
    pub(super) fn into_upstream(self) -> (BoxRead, BytesMut) {
        (self.read, self.buf)
    }
}

impl Backend<'_> {
    pub(super) async fn run(&mut self) -> DirectionEnd {
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
                        return DirectionEnd::UpstreamProtocolError;
                    }
                }
            }
            if end > 0 {
                let chunk = self.buf.split_to(end).freeze();
                if let Err(reason) = self.handle_chunk(chunk).await {
                    return reason;
                }
            }
            if !client_open && self.expect.is_empty() && self.buf.is_empty() {
                return DirectionEnd::Drained;
            }
            tokio::select! {
                r = self.read.read_buf(&mut self.buf) => match r {
                    Ok(0) => return DirectionEnd::UpstreamClosed,
                    Ok(n) => self.bytes_out.increment(n as u64),
                    Err(_) => return DirectionEnd::UpstreamError,
                },
                msg = self.rx.recv(), if client_open => match msg {
                    Some(Expect::Fatal(bytes)) => {
                        let _ = self.write.write_all(&bytes).await;
                        let _ = self.write.shutdown().await;
                        return DirectionEnd::ProtocolError;
                    }
                    Some(Expect::Notice(bytes)) => {
                        if write_parts(&mut self.write, vec![bytes]).await.is_err() {
                            return DirectionEnd::ClientError;
                        }
                    }
                    Some(e) => self.expect.push(e),
                    // The client side ended; keep forwarding what the server still sends.
                    None => client_open = false,
                },
            }
        }
    }

    /// Sends the client a FATAL error and closes its side.
    pub(super) async fn fatal(&mut self, sqlstate: &str, msg: &str) {
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
        if let Some(st) = self.expect.current() {
            st.masked.add(label, ReasonCounts::of(MaskReason::Pan, n));
        }
        Ok(Some(Bytes::from(masked)))
    }

    /// A message from the server that masking cannot parse: it is not forwarded, the session
    /// ends (nothing unmasked may reach the client).
    async fn malformed(&mut self) -> Result<(), DirectionEnd> {
        tracing::error!(session = %self.info.id, "malformed value-carrying message from upstream");
        self.fatal(
            "08P01",
            "Gatehouse received a malformed message from the upstream server",
        )
        .await;
        Err(DirectionEnd::UpstreamProtocolError)
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
        let Some(st) = self.expect.current() else {
            return;
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
    fn drain_expectations(&mut self) {
        while let Ok(e) = self.rx.try_recv() {
            self.expect.push(e);
        }
    }

    /// Whether the statement now running has its server texts withheld.
    fn withholds_text(&mut self) -> bool {
        self.expect
            .current()
            .is_some_and(|st| st.masking.withhold_text)
    }

    async fn handle_chunk(&mut self, chunk: Bytes) -> Result<(), DirectionEnd> {
        self.drain_expectations();
        for n in self.expect.take_notices() {
            if self.write.write_all(&n).await.is_err() {
                return Err(DirectionEnd::ClientError);
            }
        }
        if let Some(bytes) = self.expect.fatal() {
            let _ = write_parts(&mut self.write, vec![bytes.clone()]).await;
            return Err(DirectionEnd::ProtocolError);
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
                    // Field-level borrows: the statement (expectations) and the masks side by side.
                    if let Some(st) = self.expect.current() {
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
                b'T' if self.expect.ext_at_head(ExtKind::MaskDescribe) => {
                    // The gateway's own Describe: plan the Execute's rows, tell the client nothing.
                    self.expect.described(ExtKind::MaskDescribe);
                    let body = chunk.slice(offset + 5..offset + len);
                    self.plan_result(body, record == RecordResults::Masked)
                        .await;
                    replace = Some(Bytes::new());
                }
                b'n' if self.expect.ext_at_head(ExtKind::MaskDescribe) => {
                    self.expect.described(ExtKind::MaskDescribe);
                    replace = Some(Bytes::new());
                }
                b'T' => {
                    if self.masks.is_active() && self.expect.query_at_head() {
                        let body = chunk.slice(offset + 5..offset + len);
                        self.plan_result(body, false).await;
                    }
                    if self.expect.described(ExtKind::Describe) {
                        // A Describe of the portal an Execute runs next: its columns.
                        if record == RecordResults::Masked
                            && let Some(st) = self.expect.execute()
                        {
                            let frame = Frame::from_raw(chunk.slice(offset..offset + len));
                            st.columns = backend::row_description_names(&frame).unwrap_or_default();
                        }
                    } else if record == RecordResults::Masked
                        && let Some(st) = self.expect.current()
                    {
                        let frame = Frame::from_raw(chunk.slice(offset..offset + len));
                        st.columns = backend::row_description_names(&frame).unwrap_or_default();
                    }
                }
                b'd' => {
                    if let Some(st) = self.expect.current() {
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
                    if let Some(st) = self.expect.current()
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
                        && let Some(st) = self.expect.current()
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
                    self.expect.command_complete(rows);
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
                        if let Some(problem) =
                            crate::session::parameters::upstream_state_refusal(&state)
                        {
                            tracing::warn!(session = %self.info.id, %problem, "upstream session state refused");
                            self.fatal("42501", &format!("Gatehouse ends this session: {problem}"))
                                .await;
                            return Err(DirectionEnd::UpstreamStateRefused);
                        }
                    }
                }
                // ParseComplete, BindComplete, CloseComplete.
                b'1' | b'2' | b'3' => {
                    self.expect.ext_complete();
                }
                // NoData answers a Describe (a RowDescription does too, see above).
                b'n' => {
                    self.expect.described(ExtKind::Describe);
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
                    replace = self.expect.error(&fields.sqlstate).or(masked_error);
                }
                b'Z' => {
                    // Everything up to the Query or Sync this answers is complete.
                    // Status byte after the length; a short message reads as not idle.
                    self.status = chunk.get(offset + 5).copied().unwrap_or(b'?');
                    self.ready.bump();
                    self.expect.ready_for_query();
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
            .map_err(|_| DirectionEnd::ClientError);
        // Statements that ran are recorded even if the client can no longer be told.
        for st in self.expect.take_done() {
            self.record_outcome(st).await;
        }
        written
    }

    /// Records an outcome for every statement still in flight when the session ends.
    pub(super) async fn abandon_pending(&mut self) {
        while let Ok(e) = self.rx.try_recv() {
            self.expect.push_unanswered(e);
        }
        for st in self.expect.finish() {
            self.record_outcome(st).await;
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
    // Field-level borrows: the formats beside the capture, no per-row allocation.
    let formats = &st.result_formats;
    let columns = &st.columns;
    let capture = st
        .results
        .get_or_insert_with(|| ResultCapture::new(columns.clone()));
    let row = values.iter().enumerate().map(|(i, v)| match v {
        None => CapturedValue::Null,
        Some(b) if binary_format(formats, i) => CapturedValue::Binary(b.len()),
        Some(b) => CapturedValue::Text(b),
    });
    capture.push_row(row, redacted, cap);
}
