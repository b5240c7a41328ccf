//! The export shape of an audit record (the JSONL contract of `audit export`).

use gatehouse_core::audit::AuditRecord;
use serde_json::{Value, json};

/// One record as a JSON object with the contract's field names.
pub fn record_json(r: &AuditRecord) -> Value {
    let e = &r.event;
    let detail: Value = e
        .detail
        .as_deref()
        .and_then(|d| serde_json::from_str(d).ok())
        .unwrap_or(Value::Null);
    json!({
        "seq": r.seq,
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
        "prev_hash": r.prev_hash,
        "hash": r.hash,
    })
}
