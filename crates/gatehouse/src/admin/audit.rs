//! Reads of the audit data through the API are themselves audit records (PCI DSS 10.2.1.3:
//! access to the audit logs is logged), written before the answer.

use gatehouse_core::audit::detail::{AuditRead, Detail, DetailEvent};
use gatehouse_core::audit::{AuditEvent, RecordKind};
use gatehouse_core::identity::Principal;

use super::AdminState;

/// Records that `p` read `what` (`sessions`, `session`), about `target` (a session id).
pub(super) async fn record_read(s: &AdminState, p: &Principal, what: &str, target: Option<&str>) {
    let mut ev = AuditEvent::new(RecordKind::Admin, String::new());
    ev.subject = Some(p.subject.clone());
    ev.groups = p.groups.clone();
    ev.issuer = Some(p.issuer.clone());
    let ev = ev.with_detail(
        AuditRead {
            event: DetailEvent::AuditRead,
            what: what.to_owned(),
            target: target.map(str::to_owned),
        }
        .to_value(),
    );
    if let Err(e) = s.auditor.record(ev).await {
        tracing::error!(error = %e, "an audit read could not be recorded");
    }
}
