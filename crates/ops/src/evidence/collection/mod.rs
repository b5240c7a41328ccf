//! The walk over the store: one streaming pass that verifies the chain and hands each record of
//! the period to the accumulators of the requirements it is evidence for.
//!
//! Why one accumulator per requirement: a record feeds several figures (a statement is an
//! identity's activity, maybe an administrative action, maybe a blocked one, maybe a read of a
//! sensitive table), but each figure is gathered and finished by one place, next to the rules
//! it follows. [`Acc`] only dispatches by record kind and `detail.event` and assembles the
//! [`Report`]; memory stays bounded because every accumulator keeps counts and capped lists.

mod administration;
mod audit_reads;
mod cardholder;
mod completeness;
mod controls;
mod identities;
mod logins;
mod pan_scan;
mod requests;
mod values;

use std::collections::BTreeMap;
use std::path::Path;

use gatehouse_core::audit::detail::DetailEvent;
use gatehouse_core::audit::{
    AuditRecord, ChainVerifier, CheckpointSigner, RecordKind, parse_rfc3339 as parse_time,
    rfc3339 as canonical,
};
use gatehouse_core::config::Config;
use gatehouse_store::SqliteStore;
use serde_json::Value;

use super::summary::{CheckpointRef, Integrity, Meta, Report, Retention, summary};
use super::{EvidenceError, Period};
use administration::AdminAcc;
use audit_reads::AuditReadAcc;
use cardholder::CardholderAcc;
use completeness::CompletenessAcc;
use controls::ControlAcc;
use identities::IdentityAcc;
use logins::LoginFailures;
use pan_scan::PanScanAcc;
use requests::{RequestAcc, RequestKind};
use values::bump;

/// One pass over the whole store: verifies the chain (like `gatehouse audit verify`) and
/// aggregates the records whose time lies in `period`. Only reads: the gateway may be running.
/// A chain that does not verify is reported in [`Report::integrity`], not as an error.
pub fn build(
    cfg: &Config,
    config_path: &Path,
    store: &SqliteStore,
    period: Period,
) -> Result<Report, EvidenceError> {
    let signer = CheckpointSigner::load(&cfg.data_dir);
    let checkpoints = store.checkpoints().map_err(EvidenceError::Checkpoints)?;
    let last_checkpoint = checkpoints
        .iter()
        .max_by_key(|c| c.seq)
        .map(|c| CheckpointRef {
            seq: c.seq,
            hash: c.hash.clone(),
            time: c.time.clone(),
            key_id: c.key_id.clone(),
        });
    let checkpoint_count = checkpoints.len() as u64;
    let mut acc = Acc::new(cfg, period);
    let mut verify_failure: Option<String> = None;
    let mut verifier = match &signer {
        Ok(s) => match ChainVerifier::new(s, checkpoints) {
            Ok(v) => Some(v),
            Err(e) => {
                verify_failure = Some(e.to_string());
                None
            }
        },
        Err(e) => {
            verify_failure = Some(format!("not verified: {e}"));
            None
        }
    };
    store
        .for_each_record(None, |r| {
            if let Some(v) = verifier.as_mut()
                && verify_failure.is_none()
                && let Err(e) = v.push(&r)
            {
                verify_failure = Some(e.to_string());
            }
            acc.push(&r);
            true
        })
        .map_err(EvidenceError::Read)?;
    let integrity = match (verifier, verify_failure) {
        (Some(v), None) => match v.finish() {
            Ok(rep) => Integrity {
                verified: true,
                result: "ok".to_owned(),
                records: rep.records,
                first_seq: rep.first_seq,
                head_seq: rep.last_seq,
                head_hash: rep.last_seq.map(|_| rep.head_hash.clone()),
                checkpoints: rep.checkpoints,
                records_after_last_checkpoint: rep
                    .last_seq
                    .unwrap_or(0)
                    .saturating_sub(last_checkpoint.as_ref().map_or(0, |c| c.seq)),
                last_checkpoint,
            },
            Err(e) => acc.failed_integrity(e.to_string(), checkpoint_count, last_checkpoint),
        },
        (_, Some(e)) => acc.failed_integrity(e, checkpoint_count, last_checkpoint),
        (None, None) => {
            acc.failed_integrity("not verified".to_owned(), checkpoint_count, last_checkpoint)
        }
    };
    Ok(acc.finish(cfg, config_path, store, integrity))
}

/// A record's `detail.event`: the text as written (keys and lists show it as it is) and the
/// [`DetailEvent`] it names, which is what every decision compares.
#[derive(Debug, Clone, Copy)]
struct EventField<'a> {
    text: Option<&'a str>,
    known: Option<DetailEvent>,
}

impl<'a> EventField<'a> {
    fn of(detail: &'a Value) -> Self {
        let text = detail.get("event").and_then(Value::as_str);
        Self {
            text,
            known: text.and_then(DetailEvent::parse),
        }
    }

    fn is(self, event: DetailEvent) -> bool {
        self.known == Some(event)
    }

    fn is_any(self, events: &[DetailEvent]) -> bool {
        self.known.is_some_and(|k| events.contains(&k))
    }
}

/// The whole store (first and last record) and the period (records per kind).
#[derive(Default)]
struct Totals {
    records: u64,
    in_period: u64,
    by_kind: BTreeMap<String, u64>,
    first_record: Option<(u64, String)>,
    last_record: Option<(u64, String)>,
}

/// Every accumulator, fed record by record.
struct Acc {
    period: Period,
    totals: Totals,
    /// 10.2.1.1 and 3.4.1
    cardholder: CardholderAcc,
    /// 10.2.1.2
    administration: AdminAcc,
    /// 10.2.1.3
    audit_reads: AuditReadAcc,
    /// 10.2.1.4
    logins: LoginFailures,
    /// 10.2.2
    completeness: CompletenessAcc,
    /// 3.5.1
    pans: PanScanAcc,
    /// 7.2 / 8.6.1
    approvals: RequestAcc,
    grants: RequestAcc,
    /// 8.2.1
    identities: IdentityAcc,
    /// 10.7.2
    controls: ControlAcc,
    /// 10.5.1: `retention_purge` records.
    purges: u64,
}

impl Acc {
    fn new(cfg: &Config, period: Period) -> Self {
        Self {
            period,
            totals: Totals::default(),
            cardholder: CardholderAcc::new(cfg),
            administration: AdminAcc::new(cfg),
            audit_reads: AuditReadAcc::default(),
            logins: LoginFailures::default(),
            completeness: CompletenessAcc::default(),
            pans: PanScanAcc::default(),
            approvals: RequestAcc::new(RequestKind::HeldStatement),
            grants: RequestAcc::new(RequestKind::Grant),
            identities: IdentityAcc::default(),
            controls: ControlAcc::default(),
            purges: 0,
        }
    }

    fn push(&mut self, r: &AuditRecord) {
        let e = &r.event;
        let totals = &mut self.totals;
        totals.records += 1;
        if totals.first_record.is_none() {
            totals.first_record = Some((r.seq, e.time.clone()));
        }
        totals.last_record = Some((r.seq, e.time.clone()));
        if !self.period.contains(&e.time) {
            return;
        }
        totals.in_period += 1;
        bump(&mut totals.by_kind, e.kind.as_str(), 1);
        let detail: Value = e
            .detail
            .as_deref()
            .and_then(|d| serde_json::from_str(d).ok())
            .unwrap_or(Value::Null);
        let event = EventField::of(&detail);
        self.pans.scan(r);
        self.completeness.check(r, event);
        self.controls.any_record(r, &detail);
        match e.kind {
            RecordKind::SessionStart => {
                self.administration.session_start(r, &detail);
                self.identities.session_start(r);
            }
            RecordKind::SessionEnd => {
                self.controls.session_end(&detail);
                self.administration.session_end(r);
            }
            RecordKind::Statement => {
                self.identities.statement(r);
                self.administration.statement(r, &detail);
                self.controls.statement(r, &detail);
                self.cardholder.statement(r, &detail);
            }
            RecordKind::Outcome => {
                self.controls.outcome(&detail);
                self.cardholder.outcome(r, &detail);
            }
            RecordKind::LoginFailed => self.logins.push(r, &detail),
            RecordKind::Approval | RecordKind::Grant | RecordKind::Admin | RecordKind::Decision => {
                self.administration.gateway_record(r, &detail, event);
                match e.kind {
                    RecordKind::Approval => self.approvals.push(r, &detail, event),
                    RecordKind::Grant => self.grants.push(r, &detail, event),
                    RecordKind::Admin => match event.known {
                        Some(DetailEvent::AuditRead) => self.audit_reads.push(r, &detail),
                        Some(DetailEvent::ControlFailure) => self.controls.control_failure(&detail),
                        Some(DetailEvent::NotifyFailed) => self.controls.notify_failed(&detail),
                        Some(DetailEvent::RetentionPurge) => self.purges += 1,
                        _ => {}
                    },
                    _ => {}
                }
            }
        }
    }

    fn failed_integrity(
        &self,
        result: String,
        checkpoints: u64,
        last_checkpoint: Option<CheckpointRef>,
    ) -> Integrity {
        let totals = &self.totals;
        Integrity {
            verified: false,
            result,
            records: totals.records,
            first_seq: totals.first_record.as_ref().map(|f| f.0),
            head_seq: totals.last_record.as_ref().map(|l| l.0),
            head_hash: None,
            checkpoints,
            records_after_last_checkpoint: totals
                .last_record
                .as_ref()
                .map_or(0, |l| l.0)
                .saturating_sub(last_checkpoint.as_ref().map_or(0, |c| c.seq)),
            last_checkpoint,
        }
    }

    fn finish(
        self,
        cfg: &Config,
        config_path: &Path,
        store: &SqliteStore,
        integrity: Integrity,
    ) -> Report {
        let now = time::OffsetDateTime::now_utc();
        let totals = self.totals;
        let (access, masking) = self.cardholder.finish(cfg);
        let retention = retention(cfg, &totals, &self.period, self.purges, now);
        let meta = Meta {
            title: "Gatehouse PCI DSS evidence report".to_owned(),
            generated_at: canonical(now),
            gatehouse_version: env!("CARGO_PKG_VERSION").to_owned(),
            config: config_path.display().to_string(),
            store: store.path().display().to_string(),
            period: self.period,
            records_in_period: totals.in_period,
            records_in_store: totals.records,
            records_by_kind: totals.by_kind,
        };
        let mut report = Report {
            report: meta,
            summary: Vec::new(),
            access_to_cardholder_data: access,
            administrative_actions: self.administration.finish(),
            audit_log_access: self.audit_reads.finish(),
            invalid_access_attempts: self.logins.finish(),
            record_completeness: self.completeness.finish(totals.in_period),
            masking,
            pan_scan: self.pans.finish(totals.in_period),
            approvals: self.approvals.finish(),
            grants: self.grants.finish(),
            identities: self.identities.finish(),
            integrity,
            retention,
            control_failures: self.controls.finish(),
        };
        report.summary = summary(&report);
        report
    }
}

/// 10.5.1: what the store holds against what the configuration keeps.
fn retention(
    cfg: &Config,
    totals: &Totals,
    period: &Period,
    purges: u64,
    now: time::OffsetDateTime,
) -> Retention {
    let oldest_age_days = totals
        .first_record
        .as_ref()
        .and_then(|(_, t)| parse_time(t))
        .map(|t| ((now - t).as_seconds_f64() / 86_400.0 * 100.0).round() / 100.0);
    Retention {
        retention_days: cfg.audit.retention_days,
        at_least_12_months: cfg.audit.retention_days >= 365,
        oldest_record_seq: totals.first_record.as_ref().map(|f| f.0),
        oldest_record_time: totals.first_record.as_ref().map(|f| f.1.clone()),
        oldest_record_age_days: oldest_age_days,
        newest_record_time: totals.last_record.as_ref().map(|l| l.1.clone()),
        covers_period_start: totals
            .first_record
            .as_ref()
            .is_some_and(|(_, t)| t.as_str() <= period.from_time.as_str()),
        purges,
        note: "records are kept online in the audit store (immediately available); records \
               older than retention_days are purged hourly in the background, up to a signed \
               checkpoint that anchors the first kept record, and each purge is itself an \
               admin record (retention_purge)"
            .to_owned(),
    }
}
