//! Typed `detail` of audit records: what `detail.event` says, and one builder per kind of
//! detail the session core writes.
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
    /// Facts only this protocol has.
    #[serde(flatten)]
    pub adapter: serde_json::Map<String, serde_json::Value>,
}
impl Detail for SessionStarted {}

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
        adapter.insert("protocol".into(), "3.0".into());
        adapter.insert("upstream_tls".into(), false.into());
        let typed = SessionStarted {
            tls: true,
            application_name: Some("bot".into()),
            client_user: None,
            grant: None,
            adapter,
        }
        .to_value()
        .to_string();
        let before = serde_json::json!({
            "tls": true,
            "application_name": "bot",
            "client_user": null,
            "protocol": "3.0",
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
}
