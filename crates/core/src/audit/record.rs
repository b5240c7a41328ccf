//! One audit record and its canonical, hashable form.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What kind of thing a record describes (the `kind` field of the export contract).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordKind {
    SessionStart,
    SessionEnd,
    LoginFailed,
    Statement,
    Outcome,
    Decision,
    Approval,
    Admin,
    /// A time-bound access grant: requested, decided, used, expired or revoked.
    Grant,
}

impl RecordKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SessionStart => "session_start",
            Self::SessionEnd => "session_end",
            Self::LoginFailed => "login_failed",
            Self::Statement => "statement",
            Self::Outcome => "outcome",
            Self::Decision => "decision",
            Self::Approval => "approval",
            Self::Admin => "admin",
            Self::Grant => "grant",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "session_start" => Self::SessionStart,
            "session_end" => Self::SessionEnd,
            "login_failed" => Self::LoginFailed,
            "statement" => Self::Statement,
            "outcome" => Self::Outcome,
            "decision" => Self::Decision,
            "approval" => Self::Approval,
            "admin" => Self::Admin,
            "grant" => Self::Grant,
            _ => return None,
        })
    }
}

/// How a statement ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Ok,
    Error,
    Blocked,
    Denied,
    Expired,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Error => "error",
            Self::Blocked => "blocked",
            Self::Denied => "denied",
            Self::Expired => "expired",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "ok" => Self::Ok,
            "error" => Self::Error,
            "blocked" => Self::Blocked,
            "denied" => Self::Denied,
            "expired" => Self::Expired,
            _ => return None,
        })
    }
}

/// What an adapter reports. Text fields must already be masked (see [`crate::pan`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// RFC 3339 UTC with microseconds; set by [`AuditEvent::new`].
    pub time: String,
    pub kind: RecordKind,
    pub session_id: String,
    pub subject: Option<String>,
    pub groups: Vec<String>,
    pub issuer: Option<String>,
    pub client_addr: Option<String>,
    pub connection: Option<String>,
    pub statement: Option<String>,
    /// Bind parameters as text (masked); `None` entries are SQL NULLs.
    pub params: Option<Vec<Option<String>>>,
    pub outcome: Option<Outcome>,
    pub sqlstate: Option<String>,
    pub rule: Option<String>,
    pub rows: Option<u64>,
    pub duration_ms: Option<f64>,
    /// Sequence number of the statement record an outcome belongs to.
    pub statement_seq: Option<u64>,
    /// Further facts as a JSON object text (tls, application, reason, results...). Kept as text
    /// so the hashed bytes are exactly the stored bytes.
    pub detail: Option<String>,
}

impl AuditEvent {
    pub fn new(kind: RecordKind, session_id: impl Into<String>) -> Self {
        Self {
            time: now_rfc3339(),
            kind,
            session_id: session_id.into(),
            subject: None,
            groups: Vec::new(),
            issuer: None,
            client_addr: None,
            connection: None,
            statement: None,
            params: None,
            outcome: None,
            sqlstate: None,
            rule: None,
            rows: None,
            duration_ms: None,
            statement_seq: None,
            detail: None,
        }
    }

    pub fn with_detail(mut self, detail: serde_json::Value) -> Self {
        self.detail = Some(detail.to_string());
        self
    }
}

/// The current time as RFC 3339 UTC with microsecond precision.
pub fn now_rfc3339() -> String {
    rfc3339(time::OffsetDateTime::now_utc())
}

/// A time in the stored form: RFC 3339, UTC, microseconds (`2026-11-22T10:00:00.000000Z`).
/// Stored times compare correctly as text in this form.
pub fn rfc3339(t: time::OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.microsecond()
    )
}

/// Parses an RFC 3339 time (as stored in records).
pub fn parse_rfc3339(s: &str) -> Option<time::OffsetDateTime> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()
}

/// A stored record: an event with its place in the chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub seq: u64,
    #[serde(flatten)]
    pub event: AuditEvent,
    pub prev_hash: String,
    pub hash: String,
}

/// The bytes that are hashed: `{"seq":N,"prev_hash":"H","event":E}` with `E` the event as
/// `serde_json` writes it (struct fields in declaration order, no whitespace). The journal stores
/// exactly these bytes, so a record read back hashes to what was written.
pub(crate) fn canonical_bytes(seq: u64, prev_hash: &str, event_json: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(event_json.len() + prev_hash.len() + 40);
    out.extend_from_slice(b"{\"seq\":");
    out.extend_from_slice(itoa::Buffer::new().format(seq).as_bytes());
    out.extend_from_slice(b",\"prev_hash\":");
    // The hash is hex, but escape like serde_json would in case a stored value is not.
    let quoted = serde_json::to_vec(prev_hash).unwrap_or_default();
    out.extend_from_slice(&quoted);
    out.extend_from_slice(b",\"event\":");
    out.extend_from_slice(event_json);
    out.push(b'}');
    out
}

/// An event's JSON as it appears inside [`canonical_bytes`]. Serializing plain strings and
/// numbers into a Vec cannot fail; an empty fallback would still produce a hash that
/// verification rejects, never a silent pass.
pub(crate) fn event_json(event: &AuditEvent) -> Vec<u8> {
    serde_json::to_vec(event).unwrap_or_default()
}

/// The SHA-256 of canonical bytes, as stored (lowercase hex).
pub(crate) fn hash_of(canonical: &[u8]) -> String {
    hex::encode(Sha256::digest(canonical))
}

/// The all-zero hash that the first record chains from.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

impl AuditRecord {
    /// Links `event` after a record whose hash is `prev_hash`.
    pub fn chain(seq: u64, prev_hash: &str, event: AuditEvent) -> Self {
        let hash = compute_hash(seq, prev_hash, &event);
        Self {
            seq,
            event,
            prev_hash: prev_hash.to_owned(),
            hash,
        }
    }

    /// Recomputes this record's hash from its content.
    pub fn expected_hash(&self) -> String {
        compute_hash(self.seq, &self.prev_hash, &self.event)
    }

    /// The record as a JSON object with the contract's field names: the line format of
    /// `gatehouse audit export --format jsonl`, the admin API and the JSONL sinks. `detail` is
    /// parsed back into an object so consumers need not decode a string inside a string.
    pub fn export_json(&self) -> serde_json::Value {
        let e = &self.event;
        let detail: serde_json::Value = e
            .detail
            .as_deref()
            .and_then(|d| serde_json::from_str(d).ok())
            .unwrap_or(serde_json::Value::Null);
        serde_json::json!({
            "seq": self.seq,
            "time": e.time,
            "kind": e.kind.as_str(),
            "session_id": e.session_id,
            "subject": e.subject,
            "groups": e.groups,
            "issuer": e.issuer,
            "client_addr": e.client_addr,
            "connection": e.connection,
            "statement": e.statement,
            "params": e.params,
            "outcome": e.outcome.map(|o| o.as_str()),
            "sqlstate": e.sqlstate,
            "rule": e.rule,
            "rows": e.rows,
            "duration_ms": e.duration_ms,
            "statement_seq": e.statement_seq,
            "detail": detail,
            "prev_hash": self.prev_hash,
            "hash": self.hash,
        })
    }
}

fn compute_hash(seq: u64, prev_hash: &str, event: &AuditEvent) -> String {
    hash_of(&canonical_bytes(seq, prev_hash, &event_json(event)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_changes_with_any_field() {
        let ev = AuditEvent::new(RecordKind::Statement, "s1");
        let a = AuditRecord::chain(1, GENESIS_HASH, ev.clone());
        let mut ev2 = ev.clone();
        ev2.statement = Some("SELECT 1".into());
        let b = AuditRecord::chain(1, GENESIS_HASH, ev2);
        assert_ne!(a.hash, b.hash);
        let c = AuditRecord::chain(2, GENESIS_HASH, ev);
        assert_ne!(a.hash, c.hash);
        assert_eq!(a.hash, a.expected_hash());
        assert_eq!(a.hash.len(), 64);
    }

    /// The canonical bytes are what serde_json writes for the struct the hash was first
    /// defined over: stores written before the journal still verify.
    #[test]
    fn canonical_bytes_match_the_original_definition() {
        #[derive(Serialize)]
        struct Canonical<'a> {
            seq: u64,
            prev_hash: &'a str,
            event: &'a AuditEvent,
        }
        let mut ev = AuditEvent::new(RecordKind::Outcome, "s\"1\u{7}");
        ev.statement = Some("SELECT 'é', 4111".into());
        ev.params = Some(vec![None, Some("x".into())]);
        ev.duration_ms = Some(0.1 + 0.2);
        ev.rows = Some(u64::MAX);
        for (seq, prev) in [(1, GENESIS_HASH), (u64::MAX, "ab\"c")] {
            let old = serde_json::to_vec(&Canonical {
                seq,
                prev_hash: prev,
                event: &ev,
            })
            .unwrap();
            assert_eq!(canonical_bytes(seq, prev, &event_json(&ev)), old);
        }
    }

    #[test]
    fn time_format_is_rfc3339_utc_micros() {
        let t = now_rfc3339();
        assert_eq!(t.len(), "2026-11-22T15:00:00.000000Z".len());
        assert!(t.ends_with('Z'));
        assert!(
            time::OffsetDateTime::parse(&t, &time::format_description::well_known::Rfc3339).is_ok()
        );
    }
}
