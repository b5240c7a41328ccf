//! Typed `detail` of audit records: what `detail.event` says, and one builder per kind of
//! detail the session core writes (and, below them, the `admin` details of the operations on
//! the audit trail: audit reads, control failures, retention purges, undelivered webhooks).
//!
//! Why typed: the detail is part of the hashed record and is read back by evidence, export and
//! replay. Written by hand with `json!` in every adapter, one misspelt key or event name would
//! silently drop a record out of an evidence figure. Here every adapter gets the same shape.
//!
//! Why through [`serde_json::Value`]: a `Value` object keeps its keys sorted (the crate is
//! built without `preserve_order`), which is exactly how the `json!` objects written before
//! these types came out. Records written by either are byte-for-byte alike, so chains and
//! reports read old and new records the same way.

use serde::{Deserialize, Serialize};

/// What `detail.event` says: the second discriminator of `approval`, `grant` and
/// `control` records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DetailEvent {
    /// An approval or access grant was asked for.
    Requested,
    /// One approver's vote was counted; more are needed.
    ApprovalCounted,
    Approved,
    Denied,
    Expired,
    Revoked,
    /// The requester left (or the gateway stopped) while the request was pending.
    Abandoned,
    /// A session was admitted by an access grant.
    Used,
    RetentionPurge,
    AuditRead,
    AuditAccessLogTruncated,
    ControlFailure,
    NotifyFailed,
    /// A torn tail of the audit journal was cut at startup.
    #[serde(rename = "audit.journal_tail_cut")]
    JournalTailCut,
}

impl DetailEvent {
    pub const ALL: [DetailEvent; 14] = [
        Self::Requested,
        Self::ApprovalCounted,
        Self::Approved,
        Self::Denied,
        Self::Expired,
        Self::Revoked,
        Self::Abandoned,
        Self::Used,
        Self::RetentionPurge,
        Self::AuditRead,
        Self::AuditAccessLogTruncated,
        Self::ControlFailure,
        Self::NotifyFailed,
        Self::JournalTailCut,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Requested => "requested",
            Self::ApprovalCounted => "approval_counted",
            Self::Approved => "approved",
            Self::Denied => "denied",
            Self::Expired => "expired",
            Self::Revoked => "revoked",
            Self::Abandoned => "abandoned",
            Self::Used => "used",
            Self::RetentionPurge => "retention_purge",
            Self::AuditRead => "audit_read",
            Self::AuditAccessLogTruncated => "audit_access_log_truncated",
            Self::ControlFailure => "control_failure",
            Self::NotifyFailed => "notify_failed",
            Self::JournalTailCut => "audit.journal_tail_cut",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.as_str() == s)
    }

    /// The event of a record's detail text (`None`: no detail, not JSON, or no known event).
    pub fn of_detail(detail: Option<&str>) -> Option<Self> {
        let v: serde_json::Value = serde_json::from_str(detail?).ok()?;
        Self::parse(v.get("event")?.as_str()?)
    }
}

impl std::fmt::Display for DetailEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A detail value, serialized with sorted keys (see the module docs).
pub trait Detail: Serialize {
    fn to_value(&self) -> serde_json::Value {
        // A struct of strings, numbers, options and vectors always serializes.
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }
}

/// `approval` record: a statement (or command, or request) was held for approval.
#[derive(Debug, Clone, Serialize)]
pub struct ApprovalRequested {
    pub event: DetailEvent,
    pub approval_id: String,
    pub approvers: Vec<String>,
    /// The requester's justification (PostgreSQL: its `application_name`).
    pub reason: Option<String>,
    pub min_approvals: u32,
}
impl Detail for ApprovalRequested {}

/// `approval` record: an approver decided (`approved`, `denied`) or was counted towards the
/// quorum (`approval_counted`).
#[derive(Debug, Clone, Serialize)]
pub struct ApprovalDecided {
    pub event: DetailEvent,
    pub approval_id: String,
    pub requester: String,
    /// The approver's reason (PAN-masked).
    pub reason: Option<String>,
    /// Distinct approvals counted so far.
    pub approvals: usize,
    pub min_approvals: u32,
}
impl Detail for ApprovalDecided {}

/// `approval` record: a held request ended without a decision (`abandoned` or `expired`).
#[derive(Debug, Clone, Serialize)]
pub struct ApprovalEnded {
    pub event: DetailEvent,
    pub approval_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
}
impl Detail for ApprovalEnded {}

/// `grant` record: a session was admitted by an access grant.
#[derive(Debug, Clone, Serialize)]
pub struct GrantUsed {
    pub event: DetailEvent,
    pub grant_id: String,
    pub requester: String,
    pub expires_at: String,
}
impl Detail for GrantUsed {}

/// `grant` record: a grant of a previous run ended because the gateway restarted (grants are
/// not kept across restarts).
#[derive(Debug, Clone, Serialize)]
pub struct GrantEndedByRestart {
    pub event: DetailEvent,
    pub grant_id: String,
    pub requester: Option<String>,
    pub why: String,
}
impl Detail for GrantEndedByRestart {}

/// `login_failed` record: why an identity (or an anonymous peer) was not admitted.
#[derive(Debug, Clone, Serialize)]
pub struct LoginFailed {
    /// A stable code (`expired`, `group_not_allowed`, `unknown_connection`, ...).
    pub reason: String,
    /// The user name the client sent (not an identity: the token is the identity).
    pub client_user: Option<String>,
    pub application_name: Option<String>,
    /// What went wrong upstream, when the gateway could not connect for the client.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}
impl Detail for LoginFailed {}

/// `session_start` record: the facts common to every protocol, and the adapter's own
/// (`protocol`, `upstream_tls`, ...) beside them.
#[derive(Debug, Clone, Serialize)]
pub struct SessionStarted {
    /// The client connection is encrypted.
    pub tls: bool,
    pub application_name: Option<String>,
    pub client_user: Option<String>,
    /// The access grant that admitted the session.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grant: Option<String>,
    /// Which adapter served the session: `postgres`, `mysql`, `ssh`, `http` (the contract's
    /// `protocol` field; read back with [`session_protocol`]).
    pub protocol: &'static str,
    /// Facts only this protocol has.
    #[serde(flatten)]
    pub adapter: serde_json::Map<String, serde_json::Value>,
}
impl Detail for SessionStarted {}

/// The protocol of a session from its `session_start` record's `detail.protocol`. Records
/// written before the field named the adapter carry PostgreSQL's wire version there (`3.0`):
/// those sessions were PostgreSQL's, the only adapter then.
pub fn session_protocol(detail_protocol: Option<&str>) -> &str {
    match detail_protocol {
        None => "postgres",
        Some(p) if p.starts_with(|c: char| c.is_ascii_digit()) => "postgres",
        Some(p) => p,
    }
}

/// `statement` record: how the gateway judged the statement (the same for every protocol).
#[derive(Debug, Clone, Serialize)]
pub struct StatementJudged {
    pub decision: &'static str,
    pub reason: String,
    pub kinds: Vec<String>,
    /// Every table read or written, `schema.name` (or the bare name when unresolved).
    pub tables: Vec<String>,
    pub parse_error: Option<String>,
}
impl Detail for StatementJudged {}

impl StatementJudged {
    pub fn of(
        decision: &crate::policy::Decision,
        statements: &[crate::policy::StatementInfo],
        parse_error: Option<&str>,
    ) -> Self {
        Self {
            decision: decision.action.as_str(),
            reason: decision.reason.clone(),
            kinds: statements.iter().map(|s| s.kind.clone()).collect(),
            tables: statements
                .iter()
                .flat_map(|s| s.tables_read.iter().chain(s.tables_written.iter()))
                .map(|t| match &t.schema {
                    Some(schema) => format!("{schema}.{}", t.name),
                    None => t.name.clone(),
                })
                .collect(),
            parse_error: parse_error.map(str::to_owned),
        }
    }

    pub fn into_value(self) -> serde_json::Value {
        self.to_value()
    }
}

/// `session_end` record.
#[derive(Debug, Clone, Serialize)]
pub struct SessionEnded {
    pub reason: String,
}
impl Detail for SessionEnded {}

/// `outcome` record of a statement (command, request).
#[derive(Debug, Clone, Serialize)]
pub struct StatementOutcomeDetail {
    pub result_rows: u64,
    pub result_bytes: u64,
    /// It never ran (an earlier statement of its batch failed).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub skipped: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub session_ended_before_completion: bool,
    /// Values masked per column and reason (`MaskCounts::to_json`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub masked: Option<serde_json::Value>,
    /// The identity saw results in clear under these exemptions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unmasked_for: Option<UnmaskedFor>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub results: Option<CapturedResults>,
}
impl Detail for StatementOutcomeDetail {}

/// Who saw results unmasked, and by which `[[mask]]` rules' exemptions (1-based).
#[derive(Debug, Clone, Serialize)]
pub struct UnmaskedFor {
    pub subject: String,
    pub groups: Vec<String>,
    pub rules: Vec<usize>,
}

/// Result rows kept in the record, card numbers masked.
#[derive(Debug, Clone, Serialize)]
pub struct CapturedResults {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Option<String>>>,
    pub truncated: bool,
    pub masked: bool,
}

/// `admin` record: an identity read audit data through the admin API (PCI DSS 10.2.1.3: access
/// to the audit logs is itself logged), written before the answer. It has no `via`: readers
/// count a read without one as `api`.
#[derive(Debug, Clone, Serialize)]
pub struct AuditRead {
    pub event: DetailEvent,
    /// What was read (`sessions`, `session`).
    pub what: String,
    /// The session read; `null` for a list.
    pub target: Option<String>,
}
impl Detail for AuditRead {}

/// Where a read of the audit store that the gateway did not serve itself came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadVia {
    /// A command run against the store, recorded through the drop box in `data_dir`.
    Cli,
}

/// `admin` record: a CLI command read the audit store (its drop-box line, chained by the
/// gateway).
#[derive(Debug, Clone, Serialize)]
pub struct CliAuditRead {
    pub event: DetailEvent,
    pub via: ReadVia,
    /// What was read (`export`, `verify`, `evidence`, `sessions_list`, `session`, `replay`).
    pub what: String,
    /// The command's arguments that say what was read.
    pub args: serde_json::Value,
    /// When the command ended (RFC 3339).
    pub read_at: String,
    /// `ok`, `failed` (non-zero exit) or `error`.
    pub result: String,
    pub error: Option<String>,
    /// The operating-system account that ran the command.
    pub os_user: Option<String>,
    pub uid: Option<u32>,
    pub pid: u32,
}
impl Detail for CliAuditRead {}

/// `admin` record: a drop-box line that is not a CLI record, chained by its size and hash
/// (never its text, which may hold anything).
#[derive(Debug, Clone, Serialize)]
pub struct CliAuditReadInvalid {
    pub event: DetailEvent,
    pub via: ReadVia,
    /// Always `true`: what tells this shape from [`CliAuditRead`].
    pub invalid: bool,
    pub bytes: usize,
    /// Hex SHA-256 of the line.
    pub sha256: String,
}
impl Detail for CliAuditReadInvalid {}

/// `admin` record: the drop box held fewer bytes than were already chained (truncated or
/// replaced), so it is read again from its start.
#[derive(Debug, Clone, Serialize)]
pub struct AuditAccessLogTruncated {
    pub event: DetailEvent,
    pub via: ReadVia,
    /// Bytes chained before.
    pub offset: u64,
    /// Bytes the drop box holds now.
    pub size: u64,
}
impl Detail for AuditAccessLogTruncated {}

/// `admin` record: alerts of one kind about the audit control (PCI DSS 10.7.2), held and
/// coalesced until the store took writes.
#[derive(Debug, Clone, Serialize)]
pub struct ControlFailure {
    pub event: DetailEvent,
    /// The alert (`audit.write_failed`, `audit.verify_failed`, `audit.sink_lag`, ...).
    pub alert: String,
    /// Alerts coalesced into this record.
    pub count: u64,
    /// Records the alerts were about (summed).
    pub records: u64,
    pub first_at: String,
    pub last_at: String,
    /// The last alert's error.
    pub error: String,
}
impl Detail for ControlFailure {}

/// `admin` record: alerts the recorder never saw (its channel dropped them while it fell
/// behind).
#[derive(Debug, Clone, Serialize)]
pub struct ControlAlertsMissed {
    pub event: DetailEvent,
    /// `alerts_missed`.
    pub alert: String,
    pub count: u64,
}
impl Detail for ControlAlertsMissed {}

/// `admin` record: records past `audit.retention_days` were deleted through a signed
/// checkpoint, which is kept as the anchor of the first kept record.
#[derive(Debug, Clone, Serialize)]
pub struct RetentionPurged {
    pub event: DetailEvent,
    pub deleted_through_seq: u64,
    pub records: u64,
    pub anchor_seq: u64,
    pub retention_days: u32,
    /// Records before this time were past retention.
    pub cutoff: String,
}
impl Detail for RetentionPurged {}

/// `admin` record: a `[[notify]]` event never reached its webhook (given up after its
/// attempts, or dropped from a full queue with `attempts` 0).
#[derive(Debug, Clone, Serialize)]
pub struct NotifyFailed {
    pub event: DetailEvent,
    /// The entry's label.
    pub notify: String,
    /// Scheme, host and port only (a path may hold a token).
    pub url: String,
    /// The event that was not delivered (`approval.requested`, ...).
    pub notify_event: String,
    pub request_id: String,
    pub attempts: u32,
    pub error: String,
}
impl Detail for NotifyFailed {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_names_round_trip_and_match_serde() {
        for e in DetailEvent::ALL {
            assert_eq!(DetailEvent::parse(e.as_str()), Some(e));
            assert_eq!(
                serde_json::to_value(e).ok(),
                Some(serde_json::Value::String(e.as_str().to_owned()))
            );
        }
        assert_eq!(DetailEvent::parse("nonsense"), None);
        assert_eq!(
            DetailEvent::of_detail(Some(r#"{"event":"used","grant_id":"g"}"#)),
            Some(DetailEvent::Used)
        );
        assert_eq!(DetailEvent::of_detail(Some("not json")), None);
    }

    /// The statement judgement every adapter records, as the PostgreSQL adapter's `json!`.
    #[test]
    fn statement_judgements_serialize_like_the_json_object_before_them() {
        use crate::policy::{Action, Decision, StatementInfo, TableRef};
        let decision = Decision {
            action: Action::Block,
            rule: Some("no-drops".into()),
            reason: "DROP public.t".into(),
        };
        let mut stmt = StatementInfo {
            kind: "drop".into(),
            ..StatementInfo::default()
        };
        stmt.tables_written.insert(TableRef {
            schema: Some("public".into()),
            name: "t".into(),
        });
        stmt.tables_read.insert(TableRef {
            schema: None,
            name: "u".into(),
        });
        let typed = StatementJudged::of(&decision, &[stmt], Some("x")).into_value();
        let old = serde_json::json!({
            "decision": "block",
            "reason": "DROP public.t",
            "kinds": ["drop"],
            "tables": ["u", "public.t"],
            "parse_error": "x",
        });
        assert_eq!(typed.to_string(), old.to_string());
    }

    /// The typed details come out byte-for-byte as the `json!` objects they replace.
    #[test]
    fn typed_details_serialize_like_the_json_objects_before_them() {
        let typed = ApprovalRequested {
            event: DetailEvent::Requested,
            approval_id: "a1".into(),
            approvers: vec!["sec".into()],
            reason: None,
            min_approvals: 1,
        }
        .to_value()
        .to_string();
        let before = serde_json::json!({
            "event": "requested",
            "approval_id": "a1",
            "approvers": ["sec"],
            "reason": null,
            "min_approvals": 1,
        })
        .to_string();
        assert_eq!(typed, before);

        let mut adapter = serde_json::Map::new();
        adapter.insert("upstream_tls".into(), false.into());
        let typed = SessionStarted {
            tls: true,
            application_name: Some("bot".into()),
            client_user: None,
            grant: None,
            protocol: "postgres",
            adapter,
        }
        .to_value()
        .to_string();
        let before = serde_json::json!({
            "tls": true,
            "application_name": "bot",
            "client_user": null,
            "protocol": "postgres",
            "upstream_tls": false,
        })
        .to_string();
        assert_eq!(typed, before);

        let typed = ApprovalEnded {
            event: DetailEvent::Expired,
            approval_id: "a2".into(),
            why: None,
        }
        .to_value()
        .to_string();
        assert_eq!(typed, r#"{"approval_id":"a2","event":"expired"}"#);

        let typed = GrantEndedByRestart {
            event: DetailEvent::Expired,
            grant_id: "g1".into(),
            requester: Some("bob".into()),
            why: "restarted".into(),
        }
        .to_value()
        .to_string();
        let before = serde_json::json!({
            "event": "expired",
            "grant_id": "g1",
            "requester": "bob",
            "why": "restarted",
        })
        .to_string();
        assert_eq!(typed, before);

        let typed = StatementOutcomeDetail {
            result_rows: 2,
            result_bytes: 40,
            skipped: false,
            session_ended_before_completion: true,
            masked: Some(serde_json::json!({"card_number": {"column": 2}})),
            unmasked_for: Some(UnmaskedFor {
                subject: "ann".into(),
                groups: vec!["auditors".into()],
                rules: vec![1],
            }),
            results: Some(CapturedResults {
                columns: vec!["card_number".into()],
                rows: vec![vec![Some("************1111".into())], vec![None]],
                truncated: false,
                masked: true,
            }),
        }
        .to_value()
        .to_string();
        let before = serde_json::json!({
            "result_rows": 2,
            "result_bytes": 40,
            "session_ended_before_completion": true,
            "masked": {"card_number": {"column": 2}},
            "unmasked_for": {"subject": "ann", "groups": ["auditors"], "rules": [1]},
            "results": {
                "columns": ["card_number"],
                "rows": [["************1111"], [null]],
                "truncated": false,
                "masked": true,
            },
        })
        .to_string();
        assert_eq!(typed, before);
    }

    /// The details the operations on the audit trail write (admin API, drop box, alerts,
    /// retention, webhooks) come out byte-for-byte as the `json!` objects they replace.
    #[test]
    fn operations_details_serialize_like_the_json_objects_before_them() {
        let typed = AuditRead {
            event: DetailEvent::AuditRead,
            what: "session".into(),
            target: Some("s-1".into()),
        }
        .to_value()
        .to_string();
        let before = serde_json::json!({
            "event": "audit_read",
            "what": "session",
            "target": Some("s-1"),
        })
        .to_string();
        assert_eq!(typed, before);
        let typed = AuditRead {
            event: DetailEvent::AuditRead,
            what: "sessions".into(),
            target: None,
        }
        .to_value()
        .to_string();
        let none: Option<&str> = None;
        let before = serde_json::json!({
            "event": "audit_read",
            "what": "sessions",
            "target": none,
        })
        .to_string();
        assert_eq!(typed, before);

        for (error, os_user, uid) in [
            (None, None, None),
            (
                Some("boom".to_owned()),
                Some("ann".to_owned()),
                Some(1000u32),
            ),
        ] {
            let args = serde_json::json!({"from": "2026-01-01", "format": null});
            let typed = CliAuditRead {
                event: DetailEvent::AuditRead,
                via: ReadVia::Cli,
                what: "evidence".into(),
                args: args.clone(),
                read_at: "2026-01-02T03:04:05.000006Z".into(),
                result: "ok".into(),
                error: error.clone(),
                os_user: os_user.clone(),
                uid,
                pid: 4242,
            }
            .to_value()
            .to_string();
            let before = serde_json::json!({
                "event": "audit_read",
                "via": "cli",
                "what": "evidence",
                "args": args,
                "read_at": "2026-01-02T03:04:05.000006Z",
                "result": "ok",
                "error": error,
                "os_user": os_user,
                "uid": uid,
                "pid": 4242u32,
            })
            .to_string();
            assert_eq!(typed, before);
        }

        let typed = CliAuditReadInvalid {
            event: DetailEvent::AuditRead,
            via: ReadVia::Cli,
            invalid: true,
            bytes: 27usize,
            sha256: "ab12".into(),
        }
        .to_value()
        .to_string();
        let before = serde_json::json!({
            "event": "audit_read",
            "via": "cli",
            "invalid": true,
            "bytes": 27usize,
            "sha256": "ab12",
        })
        .to_string();
        assert_eq!(typed, before);

        let typed = AuditAccessLogTruncated {
            event: DetailEvent::AuditAccessLogTruncated,
            via: ReadVia::Cli,
            offset: 180u64,
            size: 12u64,
        }
        .to_value()
        .to_string();
        let before = serde_json::json!({
            "event": "audit_access_log_truncated",
            "via": "cli",
            "offset": 180u64,
            "size": 12u64,
        })
        .to_string();
        assert_eq!(typed, before);

        let typed = ControlFailure {
            event: DetailEvent::ControlFailure,
            alert: "audit.write_failed".into(),
            count: 3,
            records: 7,
            first_at: "2026-01-01T00:00:00.000000Z".into(),
            last_at: "2026-01-01T00:00:09.000000Z".into(),
            error: "disk I/O error".into(),
        }
        .to_value()
        .to_string();
        let before = serde_json::json!({
            "event": "control_failure",
            "alert": "audit.write_failed",
            "count": 3u64,
            "records": 7u64,
            "first_at": "2026-01-01T00:00:00.000000Z",
            "last_at": "2026-01-01T00:00:09.000000Z",
            "error": "disk I/O error",
        })
        .to_string();
        assert_eq!(typed, before);

        let typed = ControlAlertsMissed {
            event: DetailEvent::ControlFailure,
            alert: "alerts_missed".into(),
            count: 5,
        }
        .to_value()
        .to_string();
        let before = serde_json::json!({
            "event": "control_failure",
            "alert": "alerts_missed",
            "count": 5u64,
        })
        .to_string();
        assert_eq!(typed, before);

        let typed = RetentionPurged {
            event: DetailEvent::RetentionPurge,
            deleted_through_seq: 900,
            records: 899,
            anchor_seq: 900,
            retention_days: 365,
            cutoff: "2025-01-01T00:00:00.000000Z".into(),
        }
        .to_value()
        .to_string();
        let before = serde_json::json!({
            "event": "retention_purge",
            "deleted_through_seq": 900u64,
            "records": 899u64,
            "anchor_seq": 900u64,
            "retention_days": 365u32,
            "cutoff": "2025-01-01T00:00:00.000000Z",
        })
        .to_string();
        assert_eq!(typed, before);

        let typed = NotifyFailed {
            event: DetailEvent::NotifyFailed,
            notify: "chat".into(),
            url: "https://hooks.example:443".into(),
            notify_event: "approval.requested".into(),
            request_id: "0193-abc".into(),
            attempts: 5,
            error: "HTTP 500".into(),
        }
        .to_value()
        .to_string();
        let before = serde_json::json!({
            "event": "notify_failed",
            "notify": "chat",
            "url": "https://hooks.example:443",
            "notify_event": "approval.requested",
            "request_id": "0193-abc",
            "attempts": 5u32,
            "error": "HTTP 500",
        })
        .to_string();
        assert_eq!(typed, before);
    }
}
