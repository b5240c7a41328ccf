//! Values taken from records on their way into the report: PAN-masked again (a report must not
//! become the place a leaked card number is copied to), shortened, counted.

use std::collections::BTreeMap;

use gatehouse_core::audit::AuditRecord;
use gatehouse_core::pan::mask_pans;
use serde_json::Value;

use crate::evidence::summary::StatementRef;

/// Characters of statement text shown in lists.
const TEXT_LIMIT: usize = 400;

/// A string member of a detail, PAN-masked.
pub(super) fn masked_str(v: Option<&Value>) -> Option<String> {
    v.and_then(Value::as_str).map(|x| mask_pans(x).into_owned())
}

/// A record field, PAN-masked.
pub(super) fn masked_opt(v: &Option<String>) -> Option<String> {
    v.as_deref().map(|x| mask_pans(x).into_owned())
}

/// The strings of a detail's array member, PAN-masked (other members are skipped).
pub(super) fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(|x| mask_pans(x).into_owned())
        .collect()
}

/// Statement text for a list: PAN-masked again, shortened.
pub(super) fn clip(text: &str) -> String {
    let masked = mask_pans(text);
    if masked.chars().count() <= TEXT_LIMIT {
        return masked.into_owned();
    }
    let mut out: String = masked.chars().take(TEXT_LIMIT).collect();
    out.push('\u{2026}');
    out
}

/// The IP of `ip:port` (a client's port changes per connection).
pub(super) fn client_ip(addr: &str) -> String {
    addr.parse::<std::net::SocketAddr>()
        .map(|a| a.ip().to_string())
        .unwrap_or_else(|_| mask_pans(addr).into_owned())
}

/// Adds `by` to the count of `key`.
pub(super) fn bump(map: &mut BTreeMap<String, u64>, key: &str, by: u64) {
    match map.get_mut(key) {
        Some(v) => *v += by,
        None => {
            map.insert(key.to_owned(), by);
        }
    }
}

/// A field that is there and not empty.
pub(super) fn present(v: &Option<String>) -> bool {
    v.as_deref().is_some_and(|x| !x.is_empty())
}

/// A statement record as a row of a list (administrative, blocked).
pub(super) fn statement_ref(r: &AuditRecord, detail: &Value) -> StatementRef {
    let e = &r.event;
    StatementRef {
        seq: r.seq,
        time: e.time.clone(),
        session_id: e.session_id.clone(),
        subject: masked_opt(&e.subject),
        connection: masked_opt(&e.connection),
        kinds: strings(detail.get("kinds")),
        rule: masked_opt(&e.rule),
        outcome: e.outcome.map(|o| o.as_str().to_owned()),
        statement: clip(e.statement.as_deref().unwrap_or("")),
    }
}
