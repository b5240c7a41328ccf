//! The CEF shape of an audit record (`audit export --format cef`); the JSONL shape is
//! [`AuditRecord::export_json`].

use gatehouse_core::audit::AuditRecord;

/// Statement characters kept in a CEF line (ArcSight `cs` fields hold 4000 characters; the
/// full masked statement stays in the store and the JSONL export).
pub const CEF_STATEMENT_CHARS: usize = 2000;

/// One record as an ArcSight CEF line (without the trailing newline):
/// `CEF:0|Gatehouse|gatehouse|<version>|<kind>|<name>|<severity>|<extensions>`.
pub fn record_cef(r: &AuditRecord) -> String {
    use gatehouse_core::audit::{Outcome, RecordKind};
    let e = &r.event;
    let name = match (e.kind, e.outcome) {
        (RecordKind::SessionStart, _) => "Session started",
        (RecordKind::SessionEnd, _) => "Session ended",
        (RecordKind::LoginFailed, _) => "Login failed",
        (RecordKind::Statement, _) => "Statement",
        (RecordKind::Outcome | RecordKind::Decision, Some(Outcome::Blocked)) => "Statement blocked",
        (RecordKind::Outcome | RecordKind::Decision, Some(Outcome::Denied)) => "Statement denied",
        (RecordKind::Outcome, _) => "Statement outcome",
        (RecordKind::Decision, _) => "Policy decision",
        (RecordKind::Approval, _) => "Approval",
        (RecordKind::Admin, _) => "Admin action",
        (RecordKind::Grant, _) => "Access grant",
    };
    let mut line = format!(
        "CEF:0|Gatehouse|gatehouse|{}|{}|{}|{}|",
        cef_header(env!("CARGO_PKG_VERSION")),
        cef_header(e.kind.as_str()),
        cef_header(name),
        cef_severity(r)
    );
    let mut ext: Vec<(&str, String)> = vec![("cn1Label", "seq".into()), ("cn1", r.seq.to_string())];
    if let Some(ms) = epoch_millis(&e.time) {
        ext.push(("rt", ms.to_string()));
    }
    if let Some(s) = &e.subject {
        ext.push(("suser", s.clone()));
    }
    if let Some(a) = &e.client_addr {
        if let Ok(sa) = a.parse::<std::net::SocketAddr>() {
            ext.push(("src", sa.ip().to_string()));
            ext.push(("spt", sa.port().to_string()));
        } else if let Ok(ip) = a.parse::<std::net::IpAddr>() {
            ext.push(("src", ip.to_string()));
        }
    }
    ext.push(("externalId", e.session_id.clone()));
    if let Some(c) = &e.connection {
        ext.push(("cs1Label", "connection".into()));
        ext.push(("cs1", c.clone()));
    }
    if let Some(s) = &e.statement {
        let mut s: String = s.chars().take(CEF_STATEMENT_CHARS).collect();
        if s.len() < e.statement.as_deref().map_or(0, str::len) {
            s.push_str("...");
        }
        ext.push(("cs2Label", "statement".into()));
        ext.push(("cs2", s));
    }
    if let Some(o) = e.outcome {
        ext.push(("outcome", o.as_str().into()));
    }
    if let Some(s) = &e.sqlstate {
        ext.push(("cs3Label", "sqlstate".into()));
        ext.push(("cs3", s.clone()));
    }
    if let Some(s) = &e.rule {
        ext.push(("cs4Label", "rule".into()));
        ext.push(("cs4", s.clone()));
    }
    if let Some(n) = e.rows {
        ext.push(("cn2Label", "rows".into()));
        ext.push(("cn2", n.to_string()));
    }
    ext.push(("cs5Label", "hash".into()));
    ext.push(("cs5", r.hash.clone()));
    ext.push(("cs6Label", "prev_hash".into()));
    ext.push(("cs6", r.prev_hash.clone()));
    let mut first = true;
    for (k, v) in ext {
        if !first {
            line.push(' ');
        }
        first = false;
        line.push_str(k);
        line.push('=');
        line.push_str(&cef_ext(&v));
    }
    line
}

/// CEF severity (0-10): failed logins and blocked or denied statements stand out.
pub fn cef_severity(r: &AuditRecord) -> u8 {
    use gatehouse_core::audit::{Outcome, RecordKind};
    match (r.event.kind, r.event.outcome) {
        (RecordKind::LoginFailed, _) => 7,
        (_, Some(Outcome::Blocked | Outcome::Denied)) => 7,
        (_, Some(Outcome::Error)) => 5,
        (RecordKind::Admin | RecordKind::Approval | RecordKind::Grant, _) => 4,
        _ => 3,
    }
}

/// Escapes a CEF header field: `\` and `|`; line breaks become spaces.
fn cef_header(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '|' => out.push_str("\\|"),
            '\r' | '\n' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// Escapes a CEF extension value: `\`, `=` and line breaks (`\n`, `\r`).
fn cef_ext(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '=' => out.push_str("\\="),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out
}

/// Milliseconds since the Unix epoch of an RFC 3339 time (CEF `rt`).
fn epoch_millis(t: &str) -> Option<i128> {
    let t = time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()?;
    Some(t.unix_timestamp_nanos() / 1_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_core::audit::{AuditEvent, Outcome, RecordKind};

    fn record(kind: RecordKind) -> AuditRecord {
        let mut ev = AuditEvent::new(kind, "s-1");
        ev.time = "2026-01-02T03:04:05.678901Z".into();
        AuditRecord {
            seq: 42,
            event: ev,
            prev_hash: "aa".into(),
            hash: "bb".into(),
        }
    }

    #[test]
    fn header_escaping() {
        assert_eq!(cef_header(r"a|b\c"), r"a\|b\\c");
        assert_eq!(cef_header("x\ny"), "x y");
        assert_eq!(cef_header("a=b"), "a=b");
    }

    #[test]
    fn extension_escaping() {
        assert_eq!(cef_ext(r"a=b\c"), r"a\=b\\c");
        assert_eq!(cef_ext("l1\nl2\r"), r"l1\nl2\r");
        assert_eq!(cef_ext("a|b"), "a|b");
    }

    #[test]
    fn line_shape_and_severity() {
        let mut r = record(RecordKind::Outcome);
        r.event.statement = Some("SELECT 'a|b=c'\nFROM t".into());
        r.event.outcome = Some(Outcome::Blocked);
        r.event.client_addr = Some("10.0.0.5:5544".into());
        r.event.subject = Some("alice".into());
        let line = record_cef(&r);
        assert!(line.starts_with(&format!(
            "CEF:0|Gatehouse|gatehouse|{}|outcome|Statement blocked|7|",
            env!("CARGO_PKG_VERSION")
        )));
        assert!(line.contains(r"cs2=SELECT 'a|b\=c'\nFROM t "), "{line}");
        assert!(line.contains("cn1=42 "), "{line}");
        assert!(line.contains("rt=1767323045678 "), "{line}");
        assert!(line.contains("src=10.0.0.5 spt=5544 "), "{line}");
        assert!(line.contains("suser=alice "), "{line}");
        assert!(line.ends_with("cs6Label=prev_hash cs6=aa"), "{line}");
        assert!(!line.contains('\n'));
        assert_eq!(cef_severity(&record(RecordKind::LoginFailed)), 7);
        assert_eq!(cef_severity(&record(RecordKind::SessionStart)), 3);
    }

    #[test]
    fn long_statement_is_truncated() {
        let mut r = record(RecordKind::Statement);
        r.event.statement = Some("x".repeat(CEF_STATEMENT_CHARS + 10));
        let line = record_cef(&r);
        assert!(line.contains(&format!("cs2={}... ", "x".repeat(CEF_STATEMENT_CHARS))));
    }
}
