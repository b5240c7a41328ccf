//! Background care of the audit store while the gateway runs: periodic chain verification
//! (alerting on failure, PCI DSS 10.7.2) and retention (`audit.retention_days`, PCI DSS 10.5.1).
//!
//! One task, so the two never race: at start and then every [`VERIFY_EVERY`] it verifies the
//! whole chain on a blocking thread (streaming; checkpoints and signatures included). A failed
//! verification counts `gatehouse_audit_verify_failures_total`, logs an error and raises an
//! `audit.verify_failed` alert for `[[notify]]`; nothing is purged while the chain does not
//! verify (evidence of tampering is never deleted). After a successful verification, at start
//! and then every [`PURGE_EVERY`], records older than the retention period are deleted, but
//! only through a record covered by a signed checkpoint, which is kept as the anchor of the
//! first kept record (`gatehouse audit verify` accepts a store starting at K > 1 only when a
//! valid signed checkpoint at K−1 carries record K's `prev_hash`). The deletion runs in
//! transactions that each end at a checkpoint (at most about `PURGE_BATCH` records each), so
//! every intermediate state verifies and the audit writer never waits long. The purge is then
//! recorded through the normal auditor (`admin` record, `detail.event` = `retention_purge`).
//!
//! Test hook: `GATEHOUSE_RETENTION_NOW` (RFC 3339) replaces the clock that retention compares
//! against; it exists for the integration tests, is logged as a warning when set, and the
//! cutoff used is written into the purge record.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use gatehouse_core::audit::detail::{Detail, DetailEvent, RetentionPurged};
use gatehouse_core::audit::{
    AuditAlert, AuditEvent, Auditor, ChainVerifier, CheckpointSigner, RecordKind, VerifyReport,
};
use gatehouse_core::config::Config;
use gatehouse_store::SqliteStore;
use tokio::sync::watch;

/// How often the whole chain is verified (and once at start).
pub const VERIFY_EVERY: Duration = Duration::from_secs(600);
/// How often the retention purge runs (and once at start, after the first verification).
pub const PURGE_EVERY: Duration = Duration::from_secs(3600);
/// About this many records per deletion transaction (each ends at a signed checkpoint).
const PURGE_BATCH: u64 = 10_000;
/// Pause between deletion transactions, so the audit writer gets the database.
const PURGE_PAUSE: Duration = Duration::from_millis(20);
/// Test-only override of the retention clock (RFC 3339).
pub const NOW_ENV: &str = "GATEHOUSE_RETENTION_NOW";

/// Starts the task; it ends when `stop` turns true (dropping its auditor handle).
pub fn spawn(
    cfg: &Config,
    store: SqliteStore,
    auditor: Auditor,
    stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let data_dir = cfg.data_dir.clone();
    let retention_days = cfg.audit.retention_days.max(1);
    tokio::spawn(run(data_dir, retention_days, store, auditor, stop))
}

async fn run(
    data_dir: std::path::PathBuf,
    retention_days: u32,
    store: SqliteStore,
    auditor: Auditor,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(VERIFY_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_purge: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            r = stop.wait_for(|s| *s) => {
                let _ = r;
                return;
            }
        }
        let verified = {
            let store = store.clone();
            let data_dir = data_dir.clone();
            let task = tokio::task::spawn_blocking(move || verify_store(&store, &data_dir));
            // A long verification never delays shutdown (it holds no auditor handle).
            tokio::select! {
                r = task => r,
                r = stop.wait_for(|s| *s) => {
                    let _ = r;
                    return;
                }
            }
        };
        let problem = match verified {
            Ok(Ok(rep)) => {
                tracing::info!(
                    records = rep.records,
                    first = rep.first_seq.unwrap_or(0),
                    last = rep.last_seq.unwrap_or(0),
                    checkpoints = rep.checkpoints,
                    "audit chain verified"
                );
                None
            }
            Ok(Err(problem)) => Some(problem),
            Err(e) => Some(format!("verification task failed: {e}")),
        };
        if let Some(problem) = problem {
            metrics::counter!("gatehouse_audit_verify_failures_total").increment(1);
            tracing::error!(error = %problem, "audit chain verification failed");
            auditor.raise_alert(AuditAlert::new(AuditAlert::VERIFY_FAILED, problem, 0));
            continue;
        }
        if last_purge.is_some_and(|t| t.elapsed() < PURGE_EVERY) {
            continue;
        }
        last_purge = Some(Instant::now());
        let cutoff = match retention_cutoff(retention_days) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "audit retention: no cutoff; nothing purged");
                continue;
            }
        };
        let purged = {
            let store = store.clone();
            let cutoff = cutoff.clone();
            let flag = Arc::new(AtomicBool::new(false));
            let mut stop = stop.clone();
            let set = flag.clone();
            // Lets the blocking purge notice a shutdown between two transactions.
            let watcher = tokio::spawn(async move {
                let _ = stop.wait_for(|s| *s).await;
                set.store(true, Ordering::Relaxed);
            });
            let r = tokio::task::spawn_blocking(move || purge(&store, &cutoff, &flag)).await;
            watcher.abort();
            r
        };
        match purged {
            Ok(Ok(None)) => tracing::debug!(cutoff = %cutoff, "audit retention: nothing to purge"),
            Ok(Ok(Some(p))) => {
                tracing::info!(
                    deleted_through_seq = p.anchor,
                    records = p.records,
                    cutoff = %cutoff,
                    "audit retention purge"
                );
                let mut ev = AuditEvent::new(RecordKind::Admin, String::new());
                ev.subject = Some("gatehouse".into());
                let ev = ev.with_detail(
                    RetentionPurged {
                        event: DetailEvent::RetentionPurge,
                        deleted_through_seq: p.anchor,
                        records: p.records,
                        anchor_seq: p.anchor,
                        retention_days,
                        cutoff,
                    }
                    .to_value(),
                );
                if let Err(e) = auditor.record(ev).await {
                    tracing::error!(error = %e, "the retention purge could not be recorded");
                }
            }
            Ok(Err(e)) => tracing::error!(error = %e, "audit retention purge failed"),
            Err(e) => tracing::error!(error = %e, "audit retention purge task failed"),
        }
    }
}

/// Verifies the whole stored chain against its signed checkpoints; the first problem as text.
fn verify_store(store: &SqliteStore, data_dir: &std::path::Path) -> Result<VerifyReport, String> {
    let signer = CheckpointSigner::load(data_dir).map_err(|e| e.to_string())?;
    let checkpoints = store.checkpoints().map_err(|e| e.to_string())?;
    let mut verifier = ChainVerifier::new(&signer, checkpoints).map_err(|e| e.to_string())?;
    let mut failure = None;
    store
        .for_each_record(None, |r| match verifier.push(&r) {
            Ok(()) => true,
            Err(e) => {
                failure = Some(e);
                false
            }
        })
        .map_err(|e| e.to_string())?;
    if let Some(e) = failure {
        return Err(e.to_string());
    }
    verifier.finish().map_err(|e| e.to_string())
}

/// Records before this time (RFC 3339 UTC, microseconds, as stored) are past retention.
fn retention_cutoff(days: u32) -> Result<String, String> {
    use time::format_description::well_known::Rfc3339;
    let now = match std::env::var(NOW_ENV) {
        Ok(v) => {
            tracing::warn!(
                "{NOW_ENV} is set: retention uses {v} as the current time (for tests only)"
            );
            time::OffsetDateTime::parse(&v, &Rfc3339).map_err(|e| format!("{NOW_ENV}: {e}"))?
        }
        Err(_) => time::OffsetDateTime::now_utc(),
    };
    let t = now
        .checked_sub(time::Duration::days(i64::from(days)))
        .ok_or_else(|| "retention cutoff out of range".to_owned())?;
    Ok(gatehouse_core::audit::rfc3339(t))
}

/// What a purge deleted.
#[derive(Debug, PartialEq, Eq)]
struct Purged {
    /// Records `..= anchor` are gone; the checkpoint at `anchor` is kept.
    anchor: u64,
    records: u64,
}

/// Deletes the records before `cutoff`, through the newest signed checkpoint that is older
/// than the first record to keep, in transactions each ending at a checkpoint. The last
/// stored record is always kept (the writer continues the chain from it after a restart).
fn purge(
    store: &SqliteStore,
    cutoff: &str,
    stop: &AtomicBool,
) -> Result<Option<Purged>, gatehouse_store::StoreError> {
    let (Some(first), Some(last)) = (store.first_seq()?, store.last_seq()?) else {
        return Ok(None);
    };
    let keep_from = store
        .first_seq_since(cutoff)?
        .unwrap_or(last)
        .min(last)
        .max(first);
    let target = keep_from.saturating_sub(1);
    if target < first {
        return Ok(None);
    }
    let anchors = store.checkpoint_seqs(first - 1, target)?;
    let mut done = first - 1;
    let mut purged: Option<Purged> = None;
    let mut rest = anchors.as_slice();
    while let Some(&next) = rest.first() {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        // The furthest checkpoint within the batch size, or at least the next one.
        let upto = rest
            .iter()
            .copied()
            .take_while(|&s| s <= done.saturating_add(PURGE_BATCH))
            .last()
            .unwrap_or(next);
        let n = store.purge_through(upto)?;
        done = upto;
        rest = rest
            .get(rest.partition_point(|&s| s <= upto)..)
            .unwrap_or(&[]);
        let total = purged.as_ref().map_or(0, |p| p.records) + n;
        purged = Some(Purged {
            anchor: upto,
            records: total,
        });
        if !rest.is_empty() {
            std::thread::sleep(PURGE_PAUSE);
        }
    }
    Ok(purged)
}
