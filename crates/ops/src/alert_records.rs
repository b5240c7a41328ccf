//! Failures of the audit control become audit records (PCI DSS 10.7.2), so the evidence
//! report can count them from the store like everything else.
//!
//! An alert ([`AuditAlert`]: a failed audit write, a failed chain verification, a lagging SIEM
//! sink) is published on the auditor's broadcast channel the moment it happens; this task
//! turns each into an `admin` record (`detail.event` = `control_failure`). The interesting
//! case is the failed write: the store is what failed, so recording it at once would fail too.
//! Alerts are therefore held and coalesced per kind (count, first and last time, last error)
//! and written once the store takes writes again, retried every [`RETRY_EVERY`]; a retry that
//! fails itself raises one more `audit.write_failed`, which is not counted again.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use gatehouse_core::audit::detail::{ControlAlertsMissed, ControlFailure, Detail, DetailEvent};
use gatehouse_core::audit::{AuditAlert, AuditEvent, Auditor, RecordKind};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::watch;

/// How often held alerts are retried while the store refuses writes.
pub const RETRY_EVERY: Duration = Duration::from_secs(5);
/// The `alert` of the record counting alerts this task never received.
const ALERTS_MISSED: &str = "alerts_missed";

/// Alerts of one kind waiting to be recorded.
struct Held {
    count: u64,
    records: u64,
    first_at: String,
    last_at: String,
    last_error: String,
}

#[derive(Default)]
struct Recorder {
    held: BTreeMap<&'static str, Held>,
    /// Alerts the channel dropped because this task fell behind.
    missed: u64,
    last_failure: Option<Instant>,
    /// Records in this task's own failed write, whose alert is not a new failure.
    own_failed_write: Option<u64>,
}

impl Recorder {
    fn add(&mut self, a: AuditAlert) {
        if a.event == AuditAlert::WRITE_FAILED && self.own_failed_write == Some(a.records) {
            self.own_failed_write = None;
            return;
        }
        let h = self.held.entry(a.event).or_insert_with(|| Held {
            count: 0,
            records: 0,
            first_at: a.time.clone(),
            last_at: a.time.clone(),
            last_error: String::new(),
        });
        h.count += 1;
        h.records = h.records.saturating_add(a.records);
        h.last_at = a.time;
        h.last_error = a.error;
    }

    fn due(&self) -> bool {
        (!self.held.is_empty() || self.missed > 0)
            && self.last_failure.is_none_or(|t| t.elapsed() >= RETRY_EVERY)
    }

    async fn flush(&mut self, auditor: &Auditor) {
        let mut events: Vec<AuditEvent> = self
            .held
            .iter()
            .map(|(alert, h)| {
                AuditEvent::new(RecordKind::Admin, String::new()).with_detail(
                    ControlFailure {
                        event: DetailEvent::ControlFailure,
                        alert: (*alert).to_owned(),
                        count: h.count,
                        records: h.records,
                        first_at: h.first_at.clone(),
                        last_at: h.last_at.clone(),
                        error: h.last_error.clone(),
                    }
                    .to_value(),
                )
            })
            .collect();
        if self.missed > 0 {
            events.push(
                AuditEvent::new(RecordKind::Admin, String::new()).with_detail(
                    ControlAlertsMissed {
                        event: DetailEvent::ControlFailure,
                        alert: ALERTS_MISSED.to_owned(),
                        count: self.missed,
                    }
                    .to_value(),
                ),
            );
        }
        let n = events.len() as u64;
        match auditor.record_many(events).await {
            Ok(_) => {
                self.held.clear();
                self.missed = 0;
                self.last_failure = None;
            }
            Err(e) => {
                tracing::warn!(error = %e, "audit control failures are held until the store takes writes");
                self.last_failure = Some(Instant::now());
                self.own_failed_write = Some(n);
            }
        }
    }
}

/// Starts the task; it records what it still holds when `stop` turns true, then ends.
pub fn spawn(auditor: Auditor, mut stop: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
    let mut alerts = auditor.subscribe_alerts();
    tokio::spawn(async move {
        let mut rec = Recorder::default();
        let mut tick = tokio::time::interval(RETRY_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut stopping = false;
        loop {
            tokio::select! {
                a = alerts.recv() => match a {
                    Ok(a) => rec.add(a),
                    Err(RecvError::Lagged(n)) => rec.missed += n,
                    Err(RecvError::Closed) => return,
                },
                _ = tick.tick() => {}
                r = stop.wait_for(|s| *s) => {
                    drop(r);
                    stopping = true;
                }
            }
            if stopping {
                if !rec.held.is_empty() || rec.missed > 0 {
                    rec.flush(&auditor).await;
                }
                return;
            }
            if rec.due() {
                rec.flush(&auditor).await;
            }
        }
    })
}
