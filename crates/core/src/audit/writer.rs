//! The audit write path: chain, journal, group flush, index.
//!
//! A session records an event itself, without a hand-off: under one short lock it takes the
//! next sequence number, hashes the record onto the chain and writes its frame into the
//! [journal](super::journal). With `durability = "os"` that write is the durability; with
//! `"fsync"` the session then waits for the flusher thread, whose one `fdatasync` covers every
//! record written before it started (group commit: under load the cost per statement falls).
//! Records then reach the store ([`AuditLog`], SQLite) through the indexer thread in large
//! batches, with the signed checkpoints; the store is what every reader uses, and a journal
//! segment is recycled only once the store holds all its records.
//!
//! Failures stay closed: a journal write or flush that fails fails the statements waiting on
//! it (and every later one: the journal cannot be trusted past a failed flush); a store that
//! fails delays indexing only (the records are durable in the journal) and is retried, and an
//! index too far behind refuses new records rather than holding unbounded memory.

use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, oneshot, watch};

use super::checkpoint::{Checkpoint, CheckpointSigner};
use super::journal::{self, JournalError, JournalWriter, TornTail};
use super::record::{
    AuditEvent, AuditRecord, GENESIS_HASH, RecordKind, canonical_bytes, event_json, hash_of,
    now_rfc3339,
};
use crate::config::AuditDurability;

/// A failure of the store, as text safe to log (the store never sees secrets).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct StoreFailure(pub String);

/// Where the writer puts records. Implemented by the store crate; called only from the
/// writer thread, so implementations may block.
pub trait AuditLog: Send + 'static {
    /// The last stored (seq, hash), if any.
    fn head(&mut self) -> Result<Option<(u64, String)>, StoreFailure>;
    /// Stores `records` (and the checkpoint, if any) atomically and durably.
    fn append(
        &mut self,
        records: &[AuditRecord],
        checkpoint: Option<&Checkpoint>,
    ) -> Result<(), StoreFailure>;
    /// Makes everything appended so far survive a power loss (called before the journal
    /// recycles segments whose records were appended; appends alone may be lazy).
    fn sync(&mut self) -> Result<(), StoreFailure> {
        Ok(())
    }
}

/// A failure of the audit control itself (PCI DSS 10.7.2), published to
/// [`Auditor::subscribe_alerts`] subscribers (the gateway's `[[notify]]` webhooks).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AuditAlert {
    /// `audit.write_failed` (the writer could not store a batch), `audit.verify_failed`
    /// (a periodic chain verification found a problem), `audit.sink_lag` (a SIEM sink is
    /// behind by more than its threshold) or `audit.access_log_failed` (CLI reads of the
    /// audit store cannot be chained).
    pub event: &'static str,
    /// What failed, safe to log (store errors and verification findings carry no secrets).
    pub error: String,
    /// Records in the failed batch (`audit.write_failed`), records waiting (`audit.sink_lag`),
    /// else 0.
    pub records: u64,
    pub time: String,
}

impl AuditAlert {
    pub const WRITE_FAILED: &'static str = "audit.write_failed";
    pub const VERIFY_FAILED: &'static str = "audit.verify_failed";
    /// An `[[audit.sink]]` is further behind the store than its `lag_alert_records`.
    pub const SINK_LAG: &'static str = "audit.sink_lag";
    /// CLI reads of the audit store (the drop box, PCI DSS 10.2.1.3) cannot be chained.
    pub const ACCESS_LOG_FAILED: &'static str = "audit.access_log_failed";

    pub fn new(event: &'static str, error: impl Into<String>, records: u64) -> Self {
        Self {
            event,
            error: error.into(),
            records,
            time: now_rfc3339(),
        }
    }
}

/// Alerts buffered per subscriber; a slow subscriber loses the oldest (and is told so).
const ALERT_CAPACITY: usize = 256;

/// Why an event could not be made durable.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuditError {
    #[error("audit store write failed: {0}")]
    Store(StoreFailure),
    #[error("audit writer is not running")]
    Closed,
}

/// How the write path is set up.
#[derive(Debug, Clone)]
pub struct WriterOptions {
    /// The journal's directory (created if missing).
    pub journal_dir: PathBuf,
    pub durability: AuditDurability,
    /// A signed checkpoint is written at least every this many records.
    pub checkpoint_every: u64,
    /// Whether a failed write must stop the statement (`audit.fail_closed`).
    pub fail_closed: bool,
    /// Journal segment size in bytes.
    pub segment_size: u64,
}

impl WriterOptions {
    pub fn new(journal_dir: impl Into<PathBuf>) -> Self {
        Self {
            journal_dir: journal_dir.into(),
            durability: AuditDurability::Fsync,
            checkpoint_every: 1000,
            fail_closed: true,
            segment_size: journal::DEFAULT_SEGMENT_SIZE,
        }
    }
}

/// A checkpoint is also written at this interval while records keep arriving.
const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(30);

/// Longest a record nobody waits for (an outcome, a session end) stays written but not yet
/// fsynced: such records ride along with the next waited-for flush, so a statement costs
/// one `fdatasync`, not two. A crash of the gateway loses nothing (the kernel has the
/// pages); a power loss within this window may lose outcomes, never a statement record.
const LAZY_FLUSH: Duration = Duration::from_millis(10);

/// Most records stored in one index transaction.
const MAX_BATCH: usize = 8192;

/// After storing a small batch the indexer waits this long for more records before the next
/// transaction (unless a flush, a full batch or the end asks sooner). The journal already made
/// the records durable and readers see its tail, so this only trades a few milliseconds of
/// index lag for one store transaction and one wake-up per many statements instead of per
/// statement.
const INDEX_LINGER: Duration = Duration::from_millis(10);

/// Records written but not yet indexed beyond which new records are refused: the store is
/// failing or far too slow, and memory must stay bounded.
const MAX_UNINDEXED: usize = 256 * 1024;

/// What the indexer takes from the queue.
// Nearly every item is a record: boxing them would add an allocation per record.
#[allow(clippy::large_enum_variant)]
enum IndexItem {
    Record(AuditRecord),
    /// Answered once everything before it is stored, with a checkpoint.
    Flush(oneshot::Sender<Result<(), AuditError>>),
}

/// How far the journal is durable, published to waiting sessions.
#[derive(Debug, Clone, Default)]
struct Durable {
    pos: u64,
    failed: Option<StoreFailure>,
}

struct State {
    /// The chain head: last (seq, hash) written to the journal.
    head: (u64, String),
    journal: JournalWriter,
    /// Set when the journal cannot be trusted (a failed flush); every record fails.
    broken: Option<StoreFailure>,
    queue: Vec<IndexItem>,
    queued_records: usize,
    /// Journal position last made durable by the flusher.
    synced: u64,
    /// Highest journal position someone waits to see durable: the flusher syncs at once up
    /// to here; records nobody waits for (outcomes, session ends) wait up to [`LAZY_FLUSH`].
    wanted: u64,
    flusher_idle: bool,
    indexer_idle: bool,
    /// The indexer waits for a batch to fill ([`INDEX_LINGER`]); wake it only for a full
    /// batch or a flush.
    indexer_lingering: bool,
    /// Every [`Auditor`] is gone: drain and stop.
    closed: bool,
    /// Reused frame buffer.
    buf: Vec<u8>,
}

struct Core {
    state: Mutex<State>,
    flush_wake: Condvar,
    index_wake: Condvar,
    durable: watch::Sender<Durable>,
    alerts: broadcast::Sender<AuditAlert>,
    durability: AuditDurability,
    fail_closed: bool,
}

impl Core {
    fn lock(&self) -> Result<MutexGuard<'_, State>, AuditError> {
        // A panic while holding the lock leaves the chain head in doubt: stop recording.
        self.state.lock().map_err(|_| AuditError::Closed)
    }

    fn alert_write_failed(&self, error: &str, records: u64) {
        metrics::counter!("gatehouse_audit_write_failures_total").increment(1);
        tracing::error!(error, records, "audit write failed");
        let _ = self.alerts.send(AuditAlert::new(
            AuditAlert::WRITE_FAILED,
            format!("audit store write failed: {error}"),
            records,
        ));
    }

    /// Chains and writes `events`; returns their seqs and the journal position to wait for.
    /// Writes the events into the journal; `waited`: the caller will wait for them to be
    /// durable (the flusher syncs now rather than within [`LAZY_FLUSH`]).
    fn append(&self, events: Vec<AuditEvent>, waited: bool) -> Result<(Vec<u64>, u64), AuditError> {
        // Everything that does not depend on the chain head is done before taking the lock.
        let bodies: Vec<Vec<u8>> = events.iter().map(event_json).collect();
        let n = events.len();
        let mut st = self.lock()?;
        if let Some(b) = &st.broken {
            return Err(AuditError::Store(b.clone()));
        }
        if st.queued_records >= MAX_UNINDEXED {
            drop(st);
            let msg = "the audit store is too far behind the journal (is it failing?)";
            self.alert_write_failed(msg, n as u64);
            return Err(AuditError::Store(StoreFailure(msg.into())));
        }
        let mut buf = std::mem::take(&mut st.buf);
        buf.clear();
        let (mut seq, mut prev) = st.head.clone();
        let mut records = Vec::with_capacity(n);
        let mut seqs = Vec::with_capacity(n);
        for (event, body) in events.into_iter().zip(bodies) {
            seq += 1;
            let canonical = canonical_bytes(seq, &prev, &body);
            let hash = hash_of(&canonical);
            journal::encode_frame(&mut buf, &canonical);
            let prev_hash = std::mem::replace(&mut prev, hash.clone());
            records.push(AuditRecord {
                seq,
                event,
                prev_hash,
                hash,
            });
            seqs.push(seq);
        }
        buf.extend_from_slice(&journal::END_MARKER);
        let written = st.journal.append(&buf, seq);
        st.buf = buf;
        let pos = match written {
            Ok(pos) => pos,
            Err(e) => {
                drop(st);
                let msg = e.to_string();
                self.alert_write_failed(&msg, n as u64);
                return Err(AuditError::Store(StoreFailure(msg)));
            }
        };
        st.head = (seq, prev);
        if waited {
            st.wanted = st.wanted.max(pos);
        }
        let was_empty = st.queue.is_empty();
        st.queued_records += n;
        st.queue.extend(records.into_iter().map(IndexItem::Record));
        if (was_empty && st.indexer_idle)
            || (st.indexer_lingering && st.queued_records >= MAX_BATCH)
        {
            self.index_wake.notify_one();
        }
        // Only the fsync durability has a flusher; `os` is durable once written.
        if st.flusher_idle {
            self.flush_wake.notify_one();
        }
        drop(st);
        metrics::counter!("gatehouse_audit_records_total").increment(n as u64);
        Ok((seqs, pos))
    }

    async fn durable(&self, pos: u64) -> Result<(), AuditError> {
        if self.durability == AuditDurability::Os {
            return Ok(());
        }
        let mut rx = self.durable.subscribe();
        let d = rx
            .wait_for(|d| d.pos >= pos || d.failed.is_some())
            .await
            .map_err(|_| AuditError::Closed)?;
        if d.pos >= pos {
            Ok(())
        } else {
            Err(AuditError::Store(
                d.failed
                    .clone()
                    .unwrap_or(StoreFailure("journal flush failed".into())),
            ))
        }
    }
}

/// Ends the write path when the last [`Auditor`] clone is dropped.
struct Handle(Arc<Core>);

impl Drop for Handle {
    fn drop(&mut self) {
        if let Ok(mut st) = self.0.state.lock() {
            st.closed = true;
        }
        self.0.flush_wake.notify_all();
        self.0.index_wake.notify_all();
    }
}

/// Handle used by sessions to record events. Cheap to clone.
#[derive(Clone)]
pub struct Auditor {
    core: Arc<Core>,
    _handle: Arc<Handle>,
}

impl std::fmt::Debug for Auditor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auditor")
            .field("durability", &self.core.durability)
            .field("fail_closed", &self.core.fail_closed)
            .finish_non_exhaustive()
    }
}

impl Auditor {
    /// Whether a failed write must stop the statement (`audit.fail_closed`).
    pub fn fail_closed(&self) -> bool {
        self.core.fail_closed
    }

    /// Failures of the audit control from here on: every failed write, and whatever
    /// [`Auditor::raise_alert`] publishes.
    pub fn subscribe_alerts(&self) -> broadcast::Receiver<AuditAlert> {
        self.core.alerts.subscribe()
    }

    /// Publishes an alert about the audit control (e.g. a failed chain verification) to the
    /// subscribers; never waits.
    pub fn raise_alert(&self, alert: AuditAlert) {
        let _ = self.core.alerts.send(alert);
    }

    /// Records `event` and waits until it is durable; returns its sequence number.
    pub async fn record(&self, event: AuditEvent) -> Result<u64, AuditError> {
        let seqs = self.record_many(vec![event]).await?;
        seqs.first().copied().ok_or(AuditError::Closed)
    }

    /// Records several events in order and waits until all are durable.
    pub async fn record_many(&self, events: Vec<AuditEvent>) -> Result<Vec<u64>, AuditError> {
        let (seqs, pos) = self.core.append(events, true)?;
        self.core.durable(pos).await?;
        Ok(seqs)
    }

    /// Records `event` without waiting for durability (outcomes and session ends, which
    /// follow the fact). Order relative to this handle's other events is kept.
    pub async fn record_later(&self, event: AuditEvent) {
        self.record_unwaited(event);
    }

    /// [`Auditor::record_later`] for code that cannot await (a session handle's `Drop`):
    /// the record is chained and written into the journal before this returns.
    pub fn record_unwaited(&self, event: AuditEvent) {
        if let Err(e) = self.core.append(vec![event], false) {
            tracing::error!(error = %e, "an audit event was lost");
        }
    }

    /// Waits until everything recorded so far is in the store and writes a checkpoint.
    pub async fn flush(&self) -> Result<(), AuditError> {
        let (tx, rx) = oneshot::channel();
        {
            let mut st = self.core.lock()?;
            let was_empty = st.queue.is_empty();
            st.queue.push(IndexItem::Flush(tx));
            if (was_empty && st.indexer_idle) || st.indexer_lingering {
                self.core.index_wake.notify_one();
            }
        }
        rx.await.map_err(|_| AuditError::Closed)?
    }
}

/// Resolves when the indexer has stored everything and sealed the chain.
#[derive(Debug)]
pub struct WriterDone(oneshot::Receiver<()>);

impl WriterDone {
    pub async fn wait(self) {
        let _ = self.0.await;
    }
}

fn failure(e: JournalError) -> StoreFailure {
    StoreFailure(e.to_string())
}

/// Recovers the journal into `log`, then starts the flusher (with fsync durability) and the
/// indexer threads. The threads end when every [`Auditor`] is dropped, after storing what was
/// recorded and a final checkpoint.
///
/// Recovery: records the journal holds beyond the store's head are indexed first (they must
/// continue its chain); a torn tail is cut, logged and recorded (`audit.journal_tail_cut`).
pub fn spawn_writer<L: AuditLog>(
    mut log: L,
    signer: CheckpointSigner,
    opts: WriterOptions,
) -> Result<(Auditor, WriterDone), StoreFailure> {
    let stored = log.head()?;
    let stored_seq = stored.as_ref().map_or(0, |h| h.0);
    let mut pending: Vec<AuditRecord> = Vec::new();
    let scan = journal::scan(&opts.journal_dir, |r| {
        if r.seq > stored_seq {
            pending.push(r);
        }
    })
    .map_err(failure)?;
    if let Some(first) = pending.first() {
        let expected = stored
            .as_ref()
            .map_or(GENESIS_HASH, |h| h.1.as_str())
            .to_owned();
        if first.seq != stored_seq + 1 || first.prev_hash != expected {
            return Err(failure(JournalError::Discontinuous {
                seq: first.seq,
                head: stored_seq,
            }));
        }
    }
    for chunk in pending.chunks(MAX_BATCH) {
        log.append(chunk, None)?;
    }
    // The journal continues only where it ends at the store's head (or beyond, now indexed).
    let journal_head = scan.last.clone();
    let continues = match (&journal_head, &stored) {
        (Some(j), Some(s)) => j.0 >= s.0,
        (Some(_), None) => true,
        // An emptied journal (a graceful stop) continues where it is, from the store's head.
        (None, _) => scan.end.is_some() && scan.torn.is_none(),
    };
    // The head is the journal's where it continues with records, else the store's.
    let head = journal_head
        .filter(|_| continues)
        .or_else(|| stored.clone())
        .unwrap_or_else(|| (0, GENESIS_HASH.to_owned()));
    let head_seq = head.0;
    let journal = JournalWriter::open(&opts.journal_dir, opts.segment_size, &scan, !continues)
        .map_err(failure)?;
    if !pending.is_empty() {
        tracing::info!(
            records = pending.len(),
            "audit journal: recovered records the store did not hold yet"
        );
    }
    drop(pending);

    let (alerts, _) = broadcast::channel(ALERT_CAPACITY);
    let (durable, _) = watch::channel(Durable::default());
    let core = Arc::new(Core {
        state: Mutex::new(State {
            head,
            journal,
            broken: None,
            queue: Vec::new(),
            queued_records: 0,
            synced: 0,
            wanted: 0,
            flusher_idle: false,
            indexer_idle: false,
            indexer_lingering: false,
            closed: false,
            buf: Vec::new(),
        }),
        flush_wake: Condvar::new(),
        index_wake: Condvar::new(),
        durable,
        alerts,
        durability: opts.durability,
        fail_closed: opts.fail_closed,
    });
    let (done_tx, done_rx) = oneshot::channel();
    let flusher = if opts.durability == AuditDurability::Fsync {
        let core = core.clone();
        Some(
            std::thread::Builder::new()
                .name("gatehouse-audit-flush".into())
                .spawn(move || run_flusher(&core))
                .map_err(|e| StoreFailure(format!("cannot start the audit flusher: {e}")))?,
        )
    } else {
        None
    };
    let indexer = Indexer {
        core: core.clone(),
        log,
        signer,
        checkpoint_every: opts.checkpoint_every.max(1),
        since_checkpoint: 0,
        indexed: head_seq,
        failures: 0,
    };
    std::thread::Builder::new()
        .name("gatehouse-audit-index".into())
        .spawn(move || {
            indexer.run();
            if let Some(f) = flusher {
                let _ = f.join();
            }
            let _ = done_tx.send(());
        })
        .map_err(|e| StoreFailure(format!("cannot start the audit indexer: {e}")))?;
    let auditor = Auditor {
        _handle: Arc::new(Handle(core.clone())),
        core,
    };
    if let Some(t) = &scan.torn {
        report_torn_tail(&auditor, t);
    }
    Ok((auditor, WriterDone(done_rx)))
}

fn report_torn_tail(auditor: &Auditor, t: &TornTail) {
    tracing::warn!(
        segment = t.segment,
        offset = t.offset,
        bytes = t.bytes,
        "audit journal: a torn tail left by a crash was cut (an unfinished write, never acknowledged)"
    );
    let mut ev = AuditEvent::new(RecordKind::Admin, "gateway");
    ev.detail = Some(
        serde_json::json!({
            "event": "audit.journal_tail_cut",
            "segment": t.segment,
            "offset": t.offset,
            "bytes": t.bytes,
        })
        .to_string(),
    );
    if let Err(e) = auditor.core.append(vec![ev], false) {
        tracing::error!(error = %e, "cannot record the cut journal tail");
    }
}

/// Makes the journal durable up to what was written when each flush starts, for everyone
/// waiting (one `fdatasync` per group).
fn run_flusher(core: &Core) {
    loop {
        let (target, files) = {
            let Ok(mut st) = core.state.lock() else {
                return;
            };
            // When records nobody waits for were first seen unsynced.
            let mut lazy_since: Option<Instant> = None;
            loop {
                let pending = st.journal.written > st.synced;
                if pending && (st.wanted > st.synced || st.closed) {
                    break;
                }
                if st.closed {
                    return;
                }
                let deadline = if pending {
                    let since = *lazy_since.get_or_insert_with(Instant::now);
                    match (since + LAZY_FLUSH).checked_duration_since(Instant::now()) {
                        Some(left) => Some(left),
                        None => break,
                    }
                } else {
                    None
                };
                st.flusher_idle = true;
                st = match deadline {
                    Some(left) => match core.flush_wake.wait_timeout(st, left) {
                        Ok((g, _)) => g,
                        Err(_) => return,
                    },
                    None => match core.flush_wake.wait(st) {
                        Ok(g) => g,
                        Err(_) => return,
                    },
                };
                st.flusher_idle = false;
            }
            (st.journal.written, st.journal.files_to_sync())
        };
        let started = Instant::now();
        let result = files.iter().try_for_each(|f| f.sync_data());
        metrics::histogram!("gatehouse_audit_flush_seconds").record(started.elapsed());
        let Ok(mut st) = core.state.lock() else {
            return;
        };
        match result {
            Ok(()) => {
                st.synced = target;
                core.durable.send_modify(|d| d.pos = target);
            }
            Err(e) => {
                // After a failed fsync the kernel may have dropped the dirty pages: nothing
                // written since the last good flush can be trusted (PostgreSQL's lesson).
                let f = StoreFailure(format!("audit journal flush failed: {e}"));
                st.broken = Some(f.clone());
                drop(st);
                core.alert_write_failed(&f.0, 0);
                core.durable.send_modify(|d| d.failed = Some(f.clone()));
                return;
            }
        }
    }
}

struct Indexer<L> {
    core: Arc<Core>,
    log: L,
    signer: CheckpointSigner,
    checkpoint_every: u64,
    since_checkpoint: u64,
    /// Highest seq stored.
    indexed: u64,
    failures: u32,
}

impl<L: AuditLog> Indexer<L> {
    fn run(mut self) {
        let mut retry: Vec<IndexItem> = Vec::new();
        loop {
            let mut tick = false;
            let mut closing = false;
            let mut items = std::mem::take(&mut retry);
            {
                let Ok(mut st) = self.core.state.lock() else {
                    return;
                };
                loop {
                    if !st.queue.is_empty() || !items.is_empty() {
                        items.append(&mut st.queue);
                        closing = st.closed;
                        break;
                    }
                    if st.closed {
                        closing = true;
                        break;
                    }
                    st.indexer_idle = true;
                    let Ok((g, timeout)) =
                        self.core.index_wake.wait_timeout(st, CHECKPOINT_INTERVAL)
                    else {
                        return;
                    };
                    st = g;
                    st.indexer_idle = false;
                    if timeout.timed_out() && self.since_checkpoint > 0 {
                        tick = true;
                        break;
                    }
                }
            }
            if items.is_empty() && closing {
                break;
            }
            let small = items.len() < MAX_BATCH / 2;
            match self.store(items, tick) {
                Ok(()) => {
                    self.failures = 0;
                    if small && !closing {
                        self.linger();
                    }
                }
                Err(left) => {
                    retry = left;
                    self.failures += 1;
                    if closing && self.failures > 3 {
                        // The records are durable in the journal: the next start indexes them.
                        tracing::error!(
                            records = retry.len(),
                            "audit store unavailable at shutdown; the journal keeps the records"
                        );
                        return;
                    }
                    let backoff = 10u64 << self.failures.min(9);
                    std::thread::sleep(Duration::from_millis(backoff.min(5000)));
                }
            }
            self.maintain_journal();
        }
        if self.since_checkpoint > 0 {
            let cp = self.checkpoint_at(self.indexed);
            if let Some(cp) = cp
                && let Err(e) = self.log.append(&[], Some(&cp))
            {
                tracing::error!(error = %e, "final audit checkpoint failed");
            }
        }
        if let Err(e) = self.log.sync() {
            tracing::error!(error = %e, "audit store: cannot sync at shutdown; the journal keeps the records");
            return;
        }
        if let Ok(mut st) = self.core.state.lock()
            && st.head.0 == self.indexed
            && let Err(e) = st.journal.clear()
        {
            tracing::warn!(error = %e, "audit journal: cannot empty it after the final index");
        }
    }

    fn checkpoint_at(&mut self, seq: u64) -> Option<Checkpoint> {
        let hash = self.hash_of_indexed(seq)?;
        Some(self.signer.sign(seq, &hash, &now_rfc3339()))
    }

    fn hash_of_indexed(&mut self, seq: u64) -> Option<String> {
        self.log
            .head()
            .ok()
            .flatten()
            .filter(|h| h.0 == seq)
            .map(|h| h.1)
    }

    /// Waits up to [`INDEX_LINGER`] for the next batch to fill.
    fn linger(&self) {
        let Ok(mut st) = self.core.state.lock() else {
            return;
        };
        let until = Instant::now() + INDEX_LINGER;
        st.indexer_lingering = true;
        loop {
            let flush_waiting = st.queue.iter().any(|i| matches!(i, IndexItem::Flush(_)));
            if st.closed || flush_waiting || st.queued_records >= MAX_BATCH {
                break;
            }
            let Some(left) = until.checked_duration_since(Instant::now()) else {
                break;
            };
            st = match self.core.index_wake.wait_timeout(st, left) {
                Ok((g, _)) => g,
                Err(_) => return,
            };
        }
        st.indexer_lingering = false;
    }

    /// Stores one batch; on failure returns the items to retry (flush waiters are answered
    /// with the error and dropped).
    fn store(&mut self, items: Vec<IndexItem>, tick: bool) -> Result<(), Vec<IndexItem>> {
        let started = Instant::now();
        let mut records = Vec::with_capacity(items.len());
        let mut flushes = Vec::new();
        for item in items {
            match item {
                IndexItem::Record(r) => records.push(r),
                IndexItem::Flush(tx) => flushes.push(tx),
            }
        }
        let force = tick || !flushes.is_empty();
        let mut stored = 0usize;
        let mut result = Ok(());
        let chunks: Vec<&[AuditRecord]> = if records.is_empty() {
            vec![&[][..]]
        } else {
            records.chunks(MAX_BATCH).collect()
        };
        let last_chunk = chunks.len() - 1;
        for (i, chunk) in chunks.into_iter().enumerate() {
            let pending = self.since_checkpoint + chunk.len() as u64;
            let head = chunk.last().map(|r| (r.seq, r.hash.clone())).or_else(|| {
                self.hash_of_indexed(self.indexed)
                    .map(|h| (self.indexed, h))
            });
            let checkpoint = match head {
                Some((seq, hash))
                    if seq > 0
                        && ((force && i == last_chunk) || pending >= self.checkpoint_every) =>
                {
                    Some(self.signer.sign(seq, &hash, &now_rfc3339()))
                }
                _ => None,
            };
            if chunk.is_empty() && checkpoint.is_none() {
                continue;
            }
            match self.log.append(chunk, checkpoint.as_ref()) {
                Ok(()) => {
                    stored += chunk.len();
                    if let Some(last) = chunk.last() {
                        self.indexed = last.seq;
                    }
                    self.since_checkpoint = if checkpoint.is_some() { 0 } else { pending };
                }
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        metrics::histogram!("gatehouse_audit_write_seconds").record(started.elapsed());
        if let Ok(mut st) = self.core.state.lock() {
            st.queued_records = st.queued_records.saturating_sub(stored);
        }
        match result {
            Ok(()) => {
                for tx in flushes {
                    let _ = tx.send(Ok(()));
                }
                Ok(())
            }
            Err(e) => {
                self.core
                    .alert_write_failed(&e.0, (records.len() - stored) as u64);
                for tx in flushes {
                    let _ = tx.send(Err(AuditError::Store(e.clone())));
                }
                Err(records
                    .into_iter()
                    .skip(stored)
                    .map(IndexItem::Record)
                    .collect())
            }
        }
    }

    /// Recycles segments the store now holds entirely, and prepares a spare ahead of need.
    fn maintain_journal(&mut self) {
        let recyclable = self
            .core
            .state
            .lock()
            .is_ok_and(|st| st.journal.has_indexed(self.indexed));
        // The store must hold the records durably before the journal forgets them.
        if recyclable && let Err(e) = self.log.sync() {
            tracing::warn!(error = %e, "audit store: cannot sync before recycling the journal");
            return;
        }
        let (dir, size, recycled) = {
            let Ok(mut st) = self.core.state.lock() else {
                return;
            };
            let indexed = if recyclable {
                st.journal.take_indexed(self.indexed)
            } else {
                Vec::new()
            };
            let mut recycled = Vec::new();
            for no in indexed {
                let to =
                    journal::room_for_spare(&st.journal.spares).then(|| st.journal.next_spare_no());
                match journal::recycle(st.journal.dir(), no, to) {
                    Ok(()) => {
                        if let Some(to) = to {
                            st.journal.spares.push(to);
                        }
                        recycled.push(no);
                    }
                    Err(e) => tracing::warn!(error = %e, "audit journal: cannot recycle a segment"),
                }
            }
            (
                st.journal.dir().to_owned(),
                st.journal.segment_size(),
                (!recycled.is_empty(), st.journal.wants_spare()),
            )
        };
        if recycled.0
            && let Err(e) = journal::sync_dir(&dir)
        {
            tracing::warn!(error = %e, "audit journal: cannot sync its directory");
        }
        if recycled.1 {
            // Zero-filled under a temporary number, then numbered under the lock.
            let tmp_no = u64::MAX - 1;
            if journal::create_segment(&dir, tmp_no, size).is_ok()
                && let Ok(mut st) = self.core.state.lock()
            {
                let no = st.journal.next_spare_no();
                if journal::recycle(&dir, tmp_no, Some(no)).is_ok() {
                    st.journal.spares.push(no);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{RecordKind, verify_chain};
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct MemLog {
        records: Arc<Mutex<Vec<AuditRecord>>>,
        checkpoints: Arc<Mutex<Vec<Checkpoint>>>,
        fail: Arc<Mutex<bool>>,
        appends: Arc<Mutex<usize>>,
    }

    impl AuditLog for MemLog {
        fn head(&mut self) -> Result<Option<(u64, String)>, StoreFailure> {
            Ok(self
                .records
                .lock()
                .unwrap()
                .last()
                .map(|r| (r.seq, r.hash.clone())))
        }
        fn append(
            &mut self,
            records: &[AuditRecord],
            cp: Option<&Checkpoint>,
        ) -> Result<(), StoreFailure> {
            if *self.fail.lock().unwrap() {
                return Err(StoreFailure("disk full".into()));
            }
            *self.appends.lock().unwrap() += 1;
            self.records.lock().unwrap().extend_from_slice(records);
            if let Some(cp) = cp {
                self.checkpoints.lock().unwrap().push(cp.clone());
            }
            Ok(())
        }
    }

    /// The log's records verify against its checkpoints; returns how many there are.
    fn verified(dir: &std::path::Path, log: &MemLog) -> u64 {
        let signer = CheckpointSigner::load(dir).unwrap();
        let recs = log.records.lock().unwrap().clone();
        let cps = log.checkpoints.lock().unwrap().clone();
        verify_chain(&signer, cps, &recs).unwrap().records
    }

    fn opts(dir: &std::path::Path, every: u64, durability: AuditDurability) -> WriterOptions {
        WriterOptions {
            journal_dir: dir.join("journal"),
            durability,
            checkpoint_every: every,
            fail_closed: true,
            segment_size: 64 * 1024,
        }
    }

    async fn wait_for(log: &MemLog, n: usize) {
        for _ in 0..500 {
            if log.records.lock().unwrap().len() >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the store never got {n} records");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn records_chain_through_the_journal_and_survive_a_failing_store() {
        for durability in [AuditDurability::Fsync, AuditDurability::Os] {
            let dir = std::env::temp_dir().join(format!("gh-writer-{}", uuid::Uuid::new_v4()));
            let signer = CheckpointSigner::load_or_create(&dir).unwrap();
            let log = MemLog::default();
            let (auditor, done) =
                spawn_writer(log.clone(), signer, opts(&dir, 10, durability)).unwrap();
            let mut joins = Vec::new();
            for i in 0..50 {
                let a = auditor.clone();
                joins.push(tokio::spawn(async move {
                    let mut ev = AuditEvent::new(RecordKind::Statement, format!("s{i}"));
                    ev.statement = Some("SELECT 1".into());
                    a.record(ev).await
                }));
            }
            for j in joins {
                assert!(j.await.unwrap().is_ok());
            }
            wait_for(&log, 50).await;
            assert!(*log.appends.lock().unwrap() <= 50);

            // The store fails: records are still durable (the journal) and the failure is
            // alerted; once the store recovers, it gets every record, in order.
            let mut alerts = auditor.subscribe_alerts();
            *log.fail.lock().unwrap() = true;
            let seq = auditor
                .record(AuditEvent::new(RecordKind::Statement, "x"))
                .await
                .unwrap();
            assert_eq!(seq, 51);
            let alert = alerts.recv().await.unwrap();
            assert_eq!(alert.event, AuditAlert::WRITE_FAILED);
            assert!(alert.error.contains("disk full"), "{alert:?}");
            *log.fail.lock().unwrap() = false;
            let seq = auditor
                .record(AuditEvent::new(RecordKind::Statement, "y"))
                .await
                .unwrap();
            assert_eq!(seq, 52);
            auditor.flush().await.unwrap();
            assert_eq!(log.records.lock().unwrap().len(), 52);

            drop(auditor);
            done.wait().await;
            let last_checkpoint = log.checkpoints.lock().unwrap().last().map(|c| c.seq);
            assert_eq!(last_checkpoint, Some(52), "final checkpoint seals the head");
            assert_eq!(verified(&dir, &log), 52);
            std::fs::remove_dir_all(dir).unwrap();
        }
    }

    /// Records acknowledged but not yet in the store (a crash before indexing) are recovered
    /// from the journal at the next start, and the chain continues from them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_record_nobody_waits_for_becomes_durable_by_itself() {
        let dir = std::env::temp_dir().join(format!("gh-writer-{}", uuid::Uuid::new_v4()));
        let signer = CheckpointSigner::load_or_create(&dir).unwrap();
        let (auditor, _done) = spawn_writer(
            MemLog::default(),
            signer,
            opts(&dir, 1000, AuditDurability::Fsync),
        )
        .unwrap();
        auditor
            .record(AuditEvent::new(RecordKind::Statement, "s"))
            .await
            .unwrap();
        let synced_before = auditor.core.state.lock().unwrap().synced;
        auditor
            .record_later(AuditEvent::new(RecordKind::Outcome, "s"))
            .await;
        let written = auditor.core.state.lock().unwrap().journal.written;
        assert!(written > synced_before);
        // No one waits for it and nothing else is written: the flusher syncs it on its own.
        let mut rx = auditor.core.durable.subscribe();
        tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|d| d.pos >= written))
            .await
            .expect("the unwaited record was never synced")
            .unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_restart_indexes_what_the_store_missed() {
        let dir = std::env::temp_dir().join(format!("gh-writer-{}", uuid::Uuid::new_v4()));
        CheckpointSigner::load_or_create(&dir).unwrap();
        let log = MemLog::default();
        let (auditor, done) = spawn_writer(
            log.clone(),
            CheckpointSigner::load(&dir).unwrap(),
            opts(&dir, 1000, AuditDurability::Fsync),
        )
        .unwrap();
        for i in 0..300 {
            let mut ev = AuditEvent::new(RecordKind::Statement, format!("s{i}"));
            ev.statement = Some(format!("SELECT {i} -- {}", "x".repeat(200)));
            auditor.record(ev).await.unwrap();
        }
        auditor.flush().await.unwrap();
        // A crash now leaves the journal as it is (a graceful stop empties it).
        let journal = dir.join("journal");
        let saved: Vec<(std::path::PathBuf, Vec<u8>)> = std::fs::read_dir(&journal)
            .unwrap()
            .map(|e| e.unwrap().path())
            .map(|p| (p.clone(), std::fs::read(&p).unwrap()))
            .collect();
        drop(auditor);
        done.wait().await;
        for (p, bytes) in saved {
            std::fs::write(p, bytes).unwrap();
        }
        // The store lost its last 40 records (as if the gateway died before indexing them).
        log.records.lock().unwrap().truncate(260);
        log.checkpoints.lock().unwrap().clear();
        let (auditor, done) = spawn_writer(
            log.clone(),
            CheckpointSigner::load(&dir).unwrap(),
            opts(&dir, 1000, AuditDurability::Fsync),
        )
        .unwrap();
        assert_eq!(
            log.records.lock().unwrap().len(),
            300,
            "recovered before serving"
        );
        let seq = auditor
            .record(AuditEvent::new(RecordKind::Statement, "after"))
            .await
            .unwrap();
        assert_eq!(seq, 301);
        drop(auditor);
        done.wait().await;
        // After a graceful stop the journal is empty: the chain continues from the store.
        let (auditor, done) = spawn_writer(
            log.clone(),
            CheckpointSigner::load(&dir).unwrap(),
            opts(&dir, 1000, AuditDurability::Fsync),
        )
        .unwrap();
        let seq = auditor
            .record(AuditEvent::new(RecordKind::Statement, "again"))
            .await
            .unwrap();
        assert_eq!(seq, 302);
        drop(auditor);
        done.wait().await;
        assert_eq!(verified(&dir, &log), 302);
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// A crash in the middle of a write leaves a torn frame: the next start cuts it, records
    /// that it did, and the chain goes on verifiably from the last whole record.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_torn_tail_is_cut_recorded_and_the_chain_continues() {
        let dir = std::env::temp_dir().join(format!("gh-writer-{}", uuid::Uuid::new_v4()));
        CheckpointSigner::load_or_create(&dir).unwrap();
        let log = MemLog::default();
        let o = opts(&dir, 1000, AuditDurability::Fsync);
        let (auditor, done) = spawn_writer(
            log.clone(),
            CheckpointSigner::load(&dir).unwrap(),
            o.clone(),
        )
        .unwrap();
        for i in 0..5 {
            auditor
                .record(AuditEvent::new(RecordKind::Statement, format!("s{i}")))
                .await
                .unwrap();
        }
        auditor.flush().await.unwrap();
        // The process dies while writing record 6: half its frame reached the file.
        let seg = std::fs::read_dir(&o.journal_dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "seg"))
            .unwrap();
        let mut bytes = std::fs::read(&seg).unwrap();
        let end = {
            let mut off = journal::HEADER_LEN as usize;
            loop {
                let len = u32::from_le_bytes(bytes[off..off + 4].try_into().unwrap()) as usize;
                if len == 0 {
                    break off;
                }
                off += 8 + len;
            }
        };
        let mut torn = Vec::new();
        journal::encode_frame(&mut torn, br#"{"seq":6,"prev_hash":"x","event":{"time":"#);
        torn.truncate(torn.len() - 10);
        bytes[end..end + torn.len()].copy_from_slice(&torn);
        drop(auditor);
        done.wait().await;
        std::fs::write(&seg, &bytes).unwrap();
        log.records.lock().unwrap().truncate(5);

        let (auditor, done) =
            spawn_writer(log.clone(), CheckpointSigner::load(&dir).unwrap(), o).unwrap();
        let seq = auditor
            .record(AuditEvent::new(RecordKind::Statement, "after"))
            .await
            .unwrap();
        drop(auditor);
        done.wait().await;
        let recs = log.records.lock().unwrap().clone();
        let cut = recs
            .iter()
            .find(|r| r.event.kind == RecordKind::Admin)
            .expect("the cut is recorded");
        assert_eq!(cut.seq, 6);
        let detail: serde_json::Value =
            serde_json::from_str(cut.event.detail.as_deref().unwrap()).unwrap();
        assert_eq!(detail["event"], "audit.journal_tail_cut");
        assert_eq!(detail["offset"], end as u64);
        assert_eq!(seq, 7);
        assert_eq!(verified(&dir, &log), 7);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
