//! 10.2.1.3 (access to audit logs): the `audit_read` records, from the admin API (no `via`)
//! and from CLI commands through the drop box (`via` = `cli`).

use std::collections::BTreeMap;

use gatehouse_core::audit::AuditRecord;
use gatehouse_core::pan::mask_pans;
use serde_json::Value;

use super::values::{bump, masked_opt, masked_str};
use crate::evidence::summary::{AuditLogAccess, AuditReadRef, Capped};

#[derive(Default)]
pub(super) struct AuditReadAcc {
    list: Capped<AuditReadRef>,
    by_subject: BTreeMap<String, u64>,
    /// Per `via:what`.
    by_kind: BTreeMap<String, u64>,
}

impl AuditReadAcc {
    pub(super) fn push(&mut self, r: &AuditRecord, detail: &Value) {
        let via = masked_str(detail.get("via")).unwrap_or_else(|| "api".to_owned());
        let what = if detail.get("invalid").and_then(Value::as_bool) == Some(true) {
            "invalid".to_owned()
        } else {
            masked_str(detail.get("what")).unwrap_or_else(|| "-".to_owned())
        };
        let target = masked_str(detail.get("target")).or_else(|| {
            detail
                .get("args")
                .filter(|a| a.as_object().is_some_and(|o| !o.is_empty()))
                .map(|a| mask_pans(&a.to_string()).into_owned())
        });
        let subject = masked_opt(&r.event.subject);
        bump(
            &mut self.by_subject,
            subject.as_deref().unwrap_or("(none)"),
            1,
        );
        bump(&mut self.by_kind, &format!("{via}:{what}"), 1);
        self.list.push(AuditReadRef {
            seq: r.seq,
            time: r.event.time.clone(),
            subject,
            via,
            what,
            target,
            result: masked_str(detail.get("result")),
        });
    }

    pub(super) fn finish(self) -> AuditLogAccess {
        AuditLogAccess {
            reads: self.list.total,
            by_subject: self.by_subject,
            by_kind: self.by_kind,
            list: self.list,
            note: "reads through the admin API are recorded before they are answered; reads \
                   by CLI commands (audit export/verify, evidence, sessions) are recorded when \
                   the command ends, by the gateway (at once while it runs, else at its next \
                   start); this report's own run is not in it"
                .to_owned(),
        }
    }
}
