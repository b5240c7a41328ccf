//! The report: one struct per PCI DSS requirement, whose JSON form is the `--format json`
//! output (field names are that format's contract), and the summary table, one row per
//! requirement with its headline figure and whether it needs an assessor's attention.
//!
//! Why apart from the collection: these types are what the report *says*; how the figures are
//! gathered from the records (`collection`) and how they are laid out for people (`document`)
//! both depend on them, not on each other.

use std::collections::BTreeMap;

use serde::Serialize;

use super::Period;

/// Longest list kept per drill-down table (the total is always reported).
pub const LIST_LIMIT: usize = 500;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Attention,
}

impl Status {
    fn of(attention: bool) -> Self {
        if attention { Self::Attention } else { Self::Ok }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Attention => "attention",
        }
    }
}

/// A list capped at [`LIST_LIMIT`] items, with the true total.
#[derive(Debug, Clone, Serialize)]
pub struct Capped<T> {
    pub total: u64,
    pub truncated: bool,
    pub items: Vec<T>,
}

impl<T> Default for Capped<T> {
    fn default() -> Self {
        Self {
            total: 0,
            truncated: false,
            items: Vec::new(),
        }
    }
}

impl<T> Capped<T> {
    pub(super) fn push(&mut self, item: T) {
        self.total += 1;
        if self.items.len() < LIST_LIMIT {
            self.items.push(item);
        } else {
            self.truncated = true;
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub report: Meta,
    pub summary: Vec<SummaryRow>,
    /// 10.2.1.1
    pub access_to_cardholder_data: CardholderAccess,
    /// 10.2.1.2
    pub administrative_actions: AdminActions,
    /// 10.2.1.3
    pub audit_log_access: AuditLogAccess,
    /// 10.2.1.4
    pub invalid_access_attempts: InvalidAccess,
    /// 10.2.2
    pub record_completeness: Completeness,
    /// 3.4.1
    pub masking: Masking,
    /// 3.5.1
    pub pan_scan: PanScan,
    /// 7.2 / 8.6.1: held statements.
    pub approvals: Requests,
    /// 7.2 / 8.6.1: time-bound access grants.
    pub grants: Requests,
    /// 8.2.1
    pub identities: Identities,
    /// 10.3
    pub integrity: Integrity,
    /// 10.5.1
    pub retention: Retention,
    /// 10.7.2
    pub control_failures: ControlFailures,
}

#[derive(Debug, Serialize)]
pub struct Meta {
    pub title: String,
    pub generated_at: String,
    pub gatehouse_version: String,
    pub config: String,
    pub store: String,
    pub period: Period,
    pub records_in_period: u64,
    pub records_in_store: u64,
    /// Records per kind in the period.
    pub records_by_kind: BTreeMap<String, u64>,
}

#[derive(Debug, Serialize)]
pub struct SummaryRow {
    pub requirement: String,
    pub title: String,
    pub figure: String,
    pub status: Status,
    /// The section's anchor in html/md.
    pub section: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct StatementRef {
    pub seq: u64,
    pub time: String,
    pub session_id: String,
    pub subject: Option<String>,
    pub connection: Option<String>,
    pub kinds: Vec<String>,
    pub rule: Option<String>,
    pub outcome: Option<String>,
    pub statement: String,
}

#[derive(Debug, Serialize)]
pub struct CardholderIdentity {
    pub subject: String,
    pub sessions: u64,
    pub statements_with_masked_values: u64,
    pub masked_values: u64,
    pub statements_touching_sensitive_tables: u64,
    /// Results this identity received unmasked (exempt from a `[[mask]]` rule).
    pub unmasked_results: u64,
}

#[derive(Debug, Serialize)]
pub struct CardholderAccess {
    /// `[[mask]] columns` patterns that name tables (`*.*.cvv` names a column anywhere and is
    /// not used to pick tables).
    pub sensitive_table_patterns: Vec<String>,
    /// Outcome records whose `detail.masked` is not empty.
    pub statements_with_masked_values: u64,
    pub masked_values: u64,
    /// Per result column and reason (`column`, `verification_code`, `pan`).
    pub masked_by_column: BTreeMap<String, BTreeMap<String, u64>>,
    /// Statement records whose `detail.tables` match a sensitive table pattern.
    pub statements_touching_sensitive_tables: u64,
    pub statements_by_table: BTreeMap<String, u64>,
    /// Distinct sessions with either.
    pub sessions: u64,
    pub identities: Vec<CardholderIdentity>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SessionRef {
    pub session_id: String,
    pub time: String,
    pub subject: Option<String>,
    pub application_name: Option<String>,
    pub client_addr: Option<String>,
    pub connection: Option<String>,
    /// The access grant that admitted the session, if one did.
    pub grant: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct EventRef {
    pub seq: u64,
    pub time: String,
    pub kind: String,
    pub event: Option<String>,
    pub subject: Option<String>,
    pub connection: Option<String>,
    pub rule: Option<String>,
    pub outcome: Option<String>,
    /// `approval_id`, `grant_id` or `what`/`target` of an admin record.
    pub about: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct AdminActions {
    pub admin_statement_kinds: Vec<String>,
    /// Records of kind approval/admin/grant/decision, per `kind:event`.
    pub gateway_admin_events: BTreeMap<String, u64>,
    pub gateway_admin_records: Capped<EventRef>,
    pub admin_statements_by_kind: BTreeMap<String, u64>,
    pub admin_statements: Capped<StatementRef>,
    pub interactive_applications: Vec<String>,
    pub interactive_sessions: Capped<SessionRef>,
    /// `identity.service_groups` of the config.
    pub service_groups: Vec<String>,
    /// Interactive sessions of identities in a service group (8.6.1: interactive use of
    /// system accounts must be exceptional), with whether an access grant admitted them.
    pub service_identity_interactive_sessions: Capped<SessionRef>,
    /// Sessions per `application_name` (`(none)` when the client set none).
    pub sessions_by_application: BTreeMap<String, u64>,
    /// Sessions per protocol (`postgres`, `mysql`, ...), from their `session_start` records.
    pub sessions_by_protocol: BTreeMap<String, u64>,
    /// Statement records per protocol of their session.
    pub statements_by_protocol: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LoginFailure {
    pub seq: u64,
    pub time: String,
    pub reason: String,
    pub subject: Option<String>,
    pub client_addr: Option<String>,
    pub connection: Option<String>,
    pub sqlstate: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct InvalidAccess {
    pub login_failed: u64,
    pub by_reason: BTreeMap<String, u64>,
    /// `(none)`: the token did not yield an identity.
    pub by_subject: BTreeMap<String, u64>,
    /// By client IP address.
    pub by_client_address: BTreeMap<String, u64>,
    pub records: Capped<LoginFailure>,
}

#[derive(Debug, Serialize)]
pub struct FieldCompleteness {
    pub field: String,
    /// Records for which the field is required.
    pub applicable: u64,
    pub present: u64,
    /// `present / applicable` in percent (100 when nothing was applicable).
    pub percent: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Incomplete {
    pub seq: u64,
    pub time: String,
    pub kind: String,
    pub missing: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct Completeness {
    pub records_checked: u64,
    pub complete_records: u64,
    /// Which fields are required for which kinds.
    pub rules: BTreeMap<String, String>,
    pub fields: Vec<FieldCompleteness>,
    pub incomplete: Capped<Incomplete>,
}

#[derive(Debug, Serialize)]
pub struct MaskRuleSummary {
    pub connections: Vec<String>,
    pub columns: Vec<String>,
    pub detectors: Vec<String>,
    pub style: String,
    pub exempt_groups: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct Exemption {
    pub subject: String,
    pub groups: Vec<String>,
    pub rules: Vec<String>,
    pub statements: u64,
}

#[derive(Debug, Serialize)]
pub struct Masking {
    pub rules: Vec<MaskRuleSummary>,
    pub outcome_records_with_masking: u64,
    pub masked_values: u64,
    pub by_reason: BTreeMap<String, u64>,
    pub by_column: BTreeMap<String, BTreeMap<String, u64>>,
    /// Results that went out unmasked to an exempt identity (`detail.unmasked_for`).
    pub exempt_statements: u64,
    pub exemptions: Vec<Exemption>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PanHit {
    pub seq: u64,
    pub kind: String,
    /// Fields holding card numbers (the numbers themselves are never copied into the report).
    pub fields: Vec<String>,
    pub count: u64,
}

#[derive(Debug, Serialize)]
pub struct PanScan {
    pub records_scanned: u64,
    pub fields_scanned: Vec<String>,
    pub bytes_scanned: u64,
    pub pans_found: u64,
    pub records: Capped<PanHit>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Request {
    pub id: String,
    pub requested_at: Option<String>,
    pub requester: Option<String>,
    pub connection: Option<String>,
    pub rule: Option<String>,
    pub statement: Option<String>,
    pub request_reason: Option<String>,
    /// `pending` (no end recorded in the period), `approved`, `denied`, `expired`,
    /// `abandoned`, `revoked`.
    pub status: String,
    /// Distinct approvers whose approval counted (quorums), in order.
    pub approvers: Vec<String>,
    pub decided_by: Option<String>,
    pub decided_at: Option<String>,
    pub decision_reason: Option<String>,
    pub latency_seconds: Option<f64>,
    /// Grants: sessions admitted by it.
    pub used: u64,
    /// Grants: who revoked it, and why.
    pub revoked_by: Option<String>,
    pub revoke_reason: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Latency {
    pub decisions: u64,
    pub min_seconds: f64,
    pub median_seconds: f64,
    pub max_seconds: f64,
}

#[derive(Debug, Serialize)]
pub struct Requests {
    pub records: u64,
    /// Records per `detail.event`.
    pub events: BTreeMap<String, u64>,
    pub requests: u64,
    pub approved: u64,
    pub denied: u64,
    pub expired: u64,
    pub abandoned: u64,
    pub revoked: u64,
    pub used: u64,
    /// Requests with no end recorded in the period.
    pub pending: u64,
    /// Requests approved or denied by their own requester (separation of duties).
    pub self_decisions: u64,
    pub requesters: BTreeMap<String, u64>,
    /// Approvals counted and decisions made, per identity.
    pub deciders: BTreeMap<String, u64>,
    /// Requested → approved/denied.
    pub latency: Option<Latency>,
    pub list: Capped<Request>,
}

#[derive(Debug, Serialize)]
pub struct IdentitySeen {
    pub subject: String,
    pub issuers: Vec<String>,
    pub groups: Vec<String>,
    pub sessions: u64,
    pub statements: u64,
    pub client_addresses: Vec<String>,
    pub first_seen: String,
    pub last_seen: String,
}

#[derive(Debug, Serialize)]
pub struct Identities {
    pub unique_subjects: u64,
    pub sessions: u64,
    pub sessions_without_subject: u64,
    /// The same subject text from more than one issuer: possibly different people.
    pub subjects_with_several_issuers: Vec<String>,
    pub list: Vec<IdentitySeen>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CheckpointRef {
    pub seq: u64,
    pub hash: String,
    pub time: String,
    pub key_id: String,
}

#[derive(Debug, Serialize)]
pub struct Integrity {
    pub verified: bool,
    /// `ok` or the first problem found.
    pub result: String,
    pub records: u64,
    pub first_seq: Option<u64>,
    pub head_seq: Option<u64>,
    pub head_hash: Option<String>,
    pub checkpoints: u64,
    pub last_checkpoint: Option<CheckpointRef>,
    /// Protected by the chain only, not yet by a signature.
    pub records_after_last_checkpoint: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct AuditReadRef {
    pub seq: u64,
    pub time: String,
    pub subject: Option<String>,
    /// `api` (admin API) or `cli` (a command run against the store).
    pub via: String,
    /// What was read (`sessions`, `session`, `export`, `verify`, `evidence`, ...).
    pub what: String,
    /// The session read, or the command's arguments.
    pub target: Option<String>,
    /// `ok`, `failed` or `error` for CLI reads; API reads are recorded before they answer.
    pub result: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct AuditLogAccess {
    /// `admin` records with `detail.event` = `audit_read`.
    pub reads: u64,
    pub by_subject: BTreeMap<String, u64>,
    /// Per `via:what`.
    pub by_kind: BTreeMap<String, u64>,
    pub list: Capped<AuditReadRef>,
    pub note: String,
}

#[derive(Debug, Serialize)]
pub struct Retention {
    pub retention_days: u32,
    pub at_least_12_months: bool,
    pub oldest_record_seq: Option<u64>,
    pub oldest_record_time: Option<String>,
    pub oldest_record_age_days: Option<f64>,
    pub newest_record_time: Option<String>,
    /// The store holds records from before the period start.
    pub covers_period_start: bool,
    /// Retention purges recorded in the period (`admin` records, `retention_purge`).
    pub purges: u64,
    pub note: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct FailureRef {
    pub seq: u64,
    pub time: String,
    pub kind: String,
    pub subject: Option<String>,
    pub connection: Option<String>,
    pub sqlstate: Option<String>,
    pub statement_seq: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct ControlFailures {
    /// Records with SQLSTATE 58000: refused because the audit record could not be made durable.
    pub fail_closed_refusals: u64,
    pub fail_closed: Capped<FailureRef>,
    /// Statement records refused by a rule (`outcome = blocked`).
    pub blocked_statements: u64,
    pub blocked_by_rule: BTreeMap<String, u64>,
    pub blocked: Capped<StatementRef>,
    /// Held statements that were denied or expired.
    pub held_statements_refused: u64,
    /// Outcome records of statements cut short (`session_ended_before_completion`).
    pub statements_cut_short: u64,
    pub protocol_errors: u64,
    pub session_end_reasons: BTreeMap<String, u64>,
    /// Failures of the audit control (`control_failure` records), alerts per kind:
    /// `audit.write_failed`, `audit.verify_failed`, `audit.sink_lag`.
    pub audit_control_alerts: BTreeMap<String, u64>,
    /// `[[notify]]` events that never reached their webhook (`notify_failed` records).
    pub webhook_failures: u64,
    pub webhook_failures_by_target: BTreeMap<String, u64>,
    pub note: String,
}

/// One row per requirement, in report order.
pub(super) fn summary(r: &Report) -> Vec<SummaryRow> {
    let row = |req: &str, title: &str, figure: String, attention: bool| SummaryRow {
        requirement: req.to_owned(),
        title: title.to_owned(),
        figure,
        status: Status::of(attention),
        section: section_id(req),
    };
    let a = &r.access_to_cardholder_data;
    let ad = &r.administrative_actions;
    let inv = &r.invalid_access_attempts;
    let c = &r.record_completeness;
    let m = &r.masking;
    let p = &r.pan_scan;
    let ap = &r.approvals;
    let g = &r.grants;
    let id = &r.identities;
    let i = &r.integrity;
    let ret = &r.retention;
    let cf = &r.control_failures;
    vec![
        row(
            "10.2.1.1",
            "Access to cardholder data",
            format!(
                "{} identities, {} sessions: {} statements returned masked values ({} values), \
                 {} statements touched sensitive tables",
                a.identities.len(),
                a.sessions,
                a.statements_with_masked_values,
                a.masked_values,
                a.statements_touching_sensitive_tables
            ),
            m.exempt_statements > 0,
        ),
        row(
            "10.2.1.2",
            "Administrative actions",
            format!(
                "{} administrative statements, {} gateway approval/admin/grant records, {} \
                 interactive sessions ({} of service identities)",
                ad.admin_statements.total,
                ad.gateway_admin_records.total,
                ad.interactive_sessions.total,
                ad.service_identity_interactive_sessions.total
            ),
            ad.service_identity_interactive_sessions.total > 0,
        ),
        row(
            "10.2.1.3",
            "Access to audit logs",
            format!(
                "{} reads of the audit logs by {} identities",
                r.audit_log_access.reads,
                r.audit_log_access.by_subject.len()
            ),
            false,
        ),
        row(
            "10.2.1.4",
            "Invalid logical access attempts",
            format!(
                "{} failed logins ({} reasons, {} client addresses)",
                inv.login_failed,
                inv.by_reason.len(),
                inv.by_client_address.len()
            ),
            inv.login_failed > 0,
        ),
        row(
            "10.2.2",
            "Audit record content",
            format!(
                "{} of {} records complete ({}%), {} incomplete",
                c.complete_records,
                c.records_checked,
                percent(c.complete_records, c.records_checked),
                c.incomplete.total
            ),
            c.incomplete.total > 0,
        ),
        row(
            "3.4.1",
            "PAN masked when displayed",
            format!(
                "{} masking rules; {} values masked in {} results; {} results unmasked for exempt identities",
                m.rules.len(),
                m.masked_values,
                m.outcome_records_with_masking,
                m.exempt_statements
            ),
            m.rules.is_empty() || m.exempt_statements > 0,
        ),
        row(
            "3.5.1",
            "PAN unreadable where stored",
            format!(
                "{} PANs found in {} records scanned ({} bytes)",
                p.pans_found, p.records_scanned, p.bytes_scanned
            ),
            p.pans_found > 0,
        ),
        row(
            "7.2 / 8.6.1",
            "Approved access (held statements and grants)",
            format!(
                "{} requests: {} approved, {} denied, {} expired, {} abandoned, {} pending; {} \
                 grant requests ({} approved); {} self-decisions",
                ap.requests,
                ap.approved,
                ap.denied,
                ap.expired,
                ap.abandoned,
                ap.pending,
                g.requests,
                g.approved,
                ap.self_decisions + g.self_decisions
            ),
            ap.self_decisions + g.self_decisions > 0,
        ),
        row(
            "8.2.1",
            "Unique identification",
            format!(
                "{} unique subjects in {} sessions; {} sessions without subject; {} subjects \
                 from several issuers",
                id.unique_subjects,
                id.sessions,
                id.sessions_without_subject,
                id.subjects_with_several_issuers.len()
            ),
            id.sessions_without_subject > 0 || !id.subjects_with_several_issuers.is_empty(),
        ),
        row(
            "10.3",
            "Audit log integrity",
            if i.verified {
                format!(
                    "chain verified: {} records, head seq {}, {} signed checkpoints",
                    i.records,
                    i.head_seq.map_or_else(|| "-".to_owned(), |s| s.to_string()),
                    i.checkpoints
                )
            } else {
                format!("verification FAILED: {}", i.result)
            },
            !i.verified,
        ),
        row(
            "10.5.1",
            "Audit log retention",
            format!(
                "retention_days = {}; oldest record {}",
                ret.retention_days,
                ret.oldest_record_time.as_deref().unwrap_or("(none)")
            ),
            !ret.at_least_12_months,
        ),
        row(
            "10.7.2",
            "Failures of critical security controls",
            format!(
                "{} fail-closed refusals (58000), {} audit control alerts, {} webhook \
                 failures, {} statements blocked by rules, {} held statements refused",
                cf.fail_closed_refusals,
                cf.audit_control_alerts.values().sum::<u64>(),
                cf.webhook_failures,
                cf.blocked_statements,
                cf.held_statements_refused
            ),
            cf.fail_closed_refusals > 0
                || !cf.audit_control_alerts.is_empty()
                || cf.webhook_failures > 0,
        ),
    ]
}

/// The anchor of a requirement's section in html and md (`7.2 / 8.6.1` → `req-7-2-8-6-1`).
pub(super) fn section_id(req: &str) -> String {
    let mut id = String::from("req-");
    for ch in req.chars() {
        if ch.is_ascii_alphanumeric() {
            id.push(ch);
        } else if !id.ends_with('-') {
            id.push('-');
        }
    }
    id.trim_end_matches('-').to_owned()
}

/// `part / whole` in percent, two decimals (100 when nothing was applicable).
pub(super) fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        return 100.0;
    }
    ((part as f64) * 10_000.0 / (whole as f64)).round() / 100.0
}

/// Seconds to the millisecond.
pub(super) fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evidence_section_ids_are_plain() {
        assert_eq!(section_id("7.2 / 8.6.1"), "req-7-2-8-6-1");
        assert_eq!(section_id("10.2.1.1"), "req-10-2-1-1");
    }
}
