//! The single writer of the audit chain, with group commit.
//!
//! One thread owns the chain head, so sequence numbers and hashes are assigned without locks.
//! Everything queued while the previous batch was being stored goes into the next batch, which
//! is one transaction (one fsync) however many sessions contributed to it: under load the
//! per-statement cost of durability falls instead of rising.
//!
//! The writer is an OS thread, not an async task: storing is blocking I/O by nature, and a
//! dedicated thread keeps it off the runtime's workers while costing one wake-up per batch.

use std::time::{Duration, Instant};

use tokio::sync::{broadcast, mpsc, oneshot};

use super::checkpoint::{Checkpoint, CheckpointSigner};
use super::record::{AuditEvent, AuditRecord, GENESIS_HASH, now_rfc3339};

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

enum Msg {
    Durable(
        Vec<AuditEvent>,
        oneshot::Sender<Result<Vec<u64>, AuditError>>,
    ),
    Later(Box<AuditEvent>),
    Flush(oneshot::Sender<Result<(), AuditError>>),
    /// Time for a periodic checkpoint.
    Tick,
}

/// Handle used by sessions to record events. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Auditor {
    tx: mpsc::Sender<Msg>,
    fail_closed: bool,
    /// The writer thread, woken when a submitter waits (it may be lingering for company).
    writer: std::thread::Thread,
    /// Failures of the audit control (never waited on: sending never blocks).
    alerts: broadcast::Sender<AuditAlert>,
}

impl Auditor {
    /// Whether a failed write must stop the statement (`audit.fail_closed`).
    pub fn fail_closed(&self) -> bool {
        self.fail_closed
    }

    /// Failures of the audit control from here on: every failed write of the writer, and
    /// whatever [`Auditor::raise_alert`] publishes.
    pub fn subscribe_alerts(&self) -> broadcast::Receiver<AuditAlert> {
        self.alerts.subscribe()
    }

    /// Publishes an alert about the audit control (e.g. a failed chain verification) to the
    /// subscribers; never waits.
    pub fn raise_alert(&self, alert: AuditAlert) {
        let _ = self.alerts.send(alert);
    }

    /// Records `event` and waits until it is durable; returns its sequence number.
    pub async fn record(&self, event: AuditEvent) -> Result<u64, AuditError> {
        let seqs = self.record_many(vec![event]).await?;
        seqs.first().copied().ok_or(AuditError::Closed)
    }

    /// Records several events in order and waits until all are durable.
    pub async fn record_many(&self, events: Vec<AuditEvent>) -> Result<Vec<u64>, AuditError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Msg::Durable(events, tx))
            .await
            .map_err(|_| AuditError::Closed)?;
        self.writer.unpark();
        rx.await.map_err(|_| AuditError::Closed)?
    }

    /// Queues `event` without waiting (outcomes and session ends, which follow the fact).
    /// Order relative to this handle's other events is kept.
    pub async fn record_later(&self, event: AuditEvent) {
        if self.tx.send(Msg::Later(Box::new(event))).await.is_err() {
            metrics::counter!("gatehouse_audit_write_failures_total").increment(1);
            tracing::error!("audit writer is not running; an event was lost");
            self.raise_alert(AuditAlert::new(
                AuditAlert::WRITE_FAILED,
                "audit writer is not running; an event was lost",
                1,
            ));
        }
    }

    /// Waits until everything queued so far is durable and writes a checkpoint.
    pub async fn flush(&self) -> Result<(), AuditError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Msg::Flush(tx))
            .await
            .map_err(|_| AuditError::Closed)?;
        self.writer.unpark();
        rx.await.map_err(|_| AuditError::Closed)?
    }
}

/// A checkpoint is also written at this interval while records keep arriving.
const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(30);

/// How long records nobody waits for may wait for company before they are stored.
const LINGER: Duration = Duration::from_millis(2);

fn drain(rx: &mut mpsc::Receiver<Msg>, batch: &mut Vec<Msg>) {
    while batch.len() < MAX_BATCH {
        match rx.try_recv() {
            Ok(m) => batch.push(m),
            Err(_) => break,
        }
    }
}

impl Msg {
    fn has_waiter(&self) -> bool {
        matches!(self, Msg::Durable(..) | Msg::Flush(_))
    }
}

/// Most events stored in one transaction.
const MAX_BATCH: usize = 4096;

/// Resolves when the writer thread has stored everything and sealed the chain.
#[derive(Debug)]
pub struct WriterDone(oneshot::Receiver<()>);

impl WriterDone {
    pub async fn wait(self) {
        let _ = self.0.await;
    }
}

/// Starts the writer thread over `log` (and, inside a Tokio runtime, a timer for periodic
/// checkpoints). The thread ends when every [`Auditor`] is dropped, after storing what was
/// queued and a final checkpoint.
pub fn spawn_writer<L: AuditLog>(
    mut log: L,
    signer: CheckpointSigner,
    checkpoint_every: u64,
    fail_closed: bool,
) -> Result<(Auditor, WriterDone), StoreFailure> {
    let head = log.head()?;
    let (tx, rx) = mpsc::channel(16 * 1024);
    let (alerts, _) = broadcast::channel(ALERT_CAPACITY);
    let writer = Writer {
        alerts: alerts.clone(),
        log,
        signer,
        checkpoint_every: checkpoint_every.max(1),
        head: head.unwrap_or_else(|| (0, GENESIS_HASH.to_owned())),
        since_checkpoint: 0,
    };
    let (done_tx, done_rx) = oneshot::channel();
    let thread = std::thread::Builder::new()
        .name("gatehouse-audit".into())
        .spawn(move || {
            writer.run(rx);
            let _ = done_tx.send(());
        })
        .map_err(|e| StoreFailure(format!("cannot start the audit writer thread: {e}")))?;
    let writer = thread.thread().clone();
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        // Holds only a weak sender, so it never keeps the writer alive.
        let weak = tx.downgrade();
        rt.spawn(async move {
            let mut tick = tokio::time::interval(CHECKPOINT_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(tx) = weak.upgrade() else { break };
                if tx.send(Msg::Tick).await.is_err() {
                    break;
                }
            }
        });
    }
    Ok((
        Auditor {
            tx,
            fail_closed,
            writer,
            alerts,
        },
        WriterDone(done_rx),
    ))
}

struct Writer<L> {
    alerts: broadcast::Sender<AuditAlert>,
    log: L,
    signer: CheckpointSigner,
    checkpoint_every: u64,
    head: (u64, String),
    since_checkpoint: u64,
}

enum Ack {
    Durable(oneshot::Sender<Result<Vec<u64>, AuditError>>, Vec<u64>),
    Flush(oneshot::Sender<Result<(), AuditError>>),
}

impl<L: AuditLog> Writer<L> {
    fn run(mut self, mut rx: mpsc::Receiver<Msg>) {
        let mut batch: Vec<Msg> = Vec::new();
        while let Some(first) = rx.blocking_recv() {
            batch.push(first);
            drain(&mut rx, &mut batch);
            // Nobody waits on after-the-fact records (outcomes, session ends): linger a
            // moment so they share the next write-ahead commit instead of costing their own
            // fsync. A waiting submitter unparks this thread at once.
            if !batch.iter().any(Msg::has_waiter) {
                std::thread::park_timeout(LINGER);
                drain(&mut rx, &mut batch);
            }
            self.commit(&mut batch);
        }
        // Every handle is gone: seal the chain with a final checkpoint.
        if self.since_checkpoint > 0 {
            let cp = self.checkpoint();
            if let Err(e) = self.log.append(&[], Some(&cp)) {
                tracing::error!(error = %e, "final audit checkpoint failed");
            }
        }
    }

    fn checkpoint(&self) -> Checkpoint {
        self.signer.sign(self.head.0, &self.head.1, &now_rfc3339())
    }

    fn commit(&mut self, batch: &mut Vec<Msg>) {
        let started = Instant::now();
        let (mut seq, mut prev) = self.head.clone();
        let mut records = Vec::new();
        let mut acks = Vec::new();
        let mut force_checkpoint = false;
        for msg in batch.drain(..) {
            match msg {
                Msg::Durable(events, ack) => {
                    let mut seqs = Vec::with_capacity(events.len());
                    for ev in events {
                        seq += 1;
                        let r = AuditRecord::chain(seq, &prev, ev);
                        prev.clone_from(&r.hash);
                        seqs.push(seq);
                        records.push(r);
                    }
                    acks.push(Ack::Durable(ack, seqs));
                }
                Msg::Later(ev) => {
                    seq += 1;
                    let r = AuditRecord::chain(seq, &prev, *ev);
                    prev.clone_from(&r.hash);
                    records.push(r);
                }
                Msg::Flush(ack) => {
                    force_checkpoint = true;
                    acks.push(Ack::Flush(ack));
                }
                // Bounds how much recent history could be cut off undetected.
                Msg::Tick => force_checkpoint |= self.since_checkpoint > 0,
            }
        }
        let pending = self.since_checkpoint + records.len() as u64;
        let checkpoint = if (force_checkpoint && seq > 0) || pending >= self.checkpoint_every {
            Some(self.signer.sign(seq, &prev, &now_rfc3339()))
        } else {
            None
        };
        let result = if records.is_empty() && checkpoint.is_none() {
            Ok(())
        } else {
            self.log.append(&records, checkpoint.as_ref())
        };
        metrics::histogram!("gatehouse_audit_write_seconds").record(started.elapsed());
        match result {
            Ok(()) => {
                self.head = (seq, prev);
                self.since_checkpoint = if checkpoint.is_some() { 0 } else { pending };
                metrics::counter!("gatehouse_audit_records_total").increment(records.len() as u64);
                for ack in acks {
                    match ack {
                        Ack::Durable(tx, seqs) => {
                            let _ = tx.send(Ok(seqs));
                        }
                        Ack::Flush(tx) => {
                            let _ = tx.send(Ok(()));
                        }
                    }
                }
            }
            Err(e) => {
                metrics::counter!("gatehouse_audit_write_failures_total").increment(1);
                tracing::error!(error = %e, records = records.len(), "audit write failed");
                let _ = self.alerts.send(AuditAlert::new(
                    AuditAlert::WRITE_FAILED,
                    format!("audit store write failed: {e}"),
                    records.len() as u64,
                ));
                for ack in acks {
                    match ack {
                        Ack::Durable(tx, _) => {
                            let _ = tx.send(Err(AuditError::Store(e.clone())));
                        }
                        Ack::Flush(tx) => {
                            let _ = tx.send(Err(AuditError::Store(e.clone())));
                        }
                    }
                }
                // The store may have moved on (or not): trust it, not our memory.
                match self.log.head() {
                    Ok(h) => self.head = h.unwrap_or_else(|| (0, GENESIS_HASH.to_owned())),
                    Err(e) => tracing::error!(error = %e, "cannot re-read audit head"),
                }
                // Avoid a hot loop against a store that keeps failing.
                std::thread::sleep(Duration::from_millis(5));
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

    #[tokio::test]
    async fn group_commit_chains_and_fails_closed() {
        let dir = std::env::temp_dir().join(format!("gh-writer-{}", uuid::Uuid::new_v4()));
        let signer = CheckpointSigner::load_or_create(&dir).unwrap();
        let log = MemLog::default();
        let (auditor, done) = spawn_writer(log.clone(), signer, 10, true).unwrap();
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
        assert_eq!(log.records.lock().unwrap().len(), 50);
        assert!(*log.appends.lock().unwrap() <= 50);

        let mut alerts = auditor.subscribe_alerts();
        *log.fail.lock().unwrap() = true;
        let err = auditor
            .record(AuditEvent::new(RecordKind::Statement, "x"))
            .await;
        assert!(matches!(err, Err(AuditError::Store(_))));
        let alert = alerts.recv().await.unwrap();
        assert_eq!(alert.event, AuditAlert::WRITE_FAILED);
        assert!(alert.error.contains("disk full"), "{alert:?}");
        assert_eq!(alert.records, 1);
        *log.fail.lock().unwrap() = false;
        let seq = auditor
            .record(AuditEvent::new(RecordKind::Statement, "y"))
            .await
            .unwrap();
        assert_eq!(seq, 51, "a failed batch must not consume sequence numbers");

        drop(auditor);
        done.wait().await;
        let signer = CheckpointSigner::load(&dir).unwrap();
        let recs = log.records.lock().unwrap().clone();
        let cps = log.checkpoints.lock().unwrap().clone();
        assert!(!cps.is_empty());
        assert_eq!(
            cps.last().unwrap().seq,
            51,
            "final checkpoint seals the head"
        );
        let rep = verify_chain(&signer, cps, &recs).unwrap();
        assert_eq!(rep.records, 51);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
