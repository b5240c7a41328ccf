//! 10.2.1.4 (invalid logical access attempts): the `login_failed` records, per reason, subject
//! and client address.

use std::collections::BTreeMap;

use gatehouse_core::audit::AuditRecord;
use serde_json::Value;

use super::values::{bump, client_ip, masked_opt, masked_str};
use crate::evidence::summary::{Capped, InvalidAccess, LoginFailure};

#[derive(Default)]
pub(super) struct LoginFailures {
    records: Capped<LoginFailure>,
    by_reason: BTreeMap<String, u64>,
    by_subject: BTreeMap<String, u64>,
    by_addr: BTreeMap<String, u64>,
}

impl LoginFailures {
    pub(super) fn push(&mut self, r: &AuditRecord, detail: &Value) {
        let e = &r.event;
        let reason = masked_str(detail.get("reason")).unwrap_or_else(|| "(none)".to_owned());
        bump(&mut self.by_reason, &reason, 1);
        bump(
            &mut self.by_subject,
            &masked_opt(&e.subject).unwrap_or_else(|| "(none)".to_owned()),
            1,
        );
        bump(
            &mut self.by_addr,
            &e.client_addr
                .as_deref()
                .map(client_ip)
                .unwrap_or_else(|| "(none)".to_owned()),
            1,
        );
        self.records.push(LoginFailure {
            seq: r.seq,
            time: e.time.clone(),
            reason,
            subject: masked_opt(&e.subject),
            client_addr: masked_opt(&e.client_addr),
            connection: masked_opt(&e.connection),
            sqlstate: e.sqlstate.clone(),
        });
    }

    pub(super) fn finish(self) -> InvalidAccess {
        InvalidAccess {
            login_failed: self.records.total,
            by_reason: self.by_reason,
            by_subject: self.by_subject,
            by_client_address: self.by_addr,
            records: self.records,
        }
    }
}
