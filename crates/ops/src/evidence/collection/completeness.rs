//! 10.2.2 (audit record content): each record checked for the fields required for its kind
//! (user, time, origin, affected component, success or failure, session).

use std::collections::BTreeMap;

use gatehouse_core::audit::detail::DetailEvent;
use gatehouse_core::audit::{AuditRecord, RecordKind, parse_rfc3339 as parse_time};

use super::EventField;
use super::values::present;
use crate::evidence::summary::{Capped, Completeness, FieldCompleteness, Incomplete, percent};

/// Required fields, in report order.
const FIELDS: [&str; 6] = [
    "time",
    "session_id",
    "subject",
    "client_addr",
    "connection",
    "outcome",
];

#[derive(Default)]
pub(super) struct CompletenessAcc {
    /// Per field of [`FIELDS`]: (records it applies to, records that have it).
    field_counts: [(u64, u64); 6],
    complete: u64,
    incomplete: Capped<Incomplete>,
}

impl CompletenessAcc {
    pub(super) fn check(&mut self, r: &AuditRecord, event: EventField) {
        use DetailEvent::{Abandoned, Approved, Denied, Expired, Requested, Revoked};
        let e = &r.event;
        let kind = e.kind;
        let data_path = matches!(
            kind,
            RecordKind::SessionStart
                | RecordKind::SessionEnd
                | RecordKind::Statement
                | RecordKind::Outcome
        );
        let approval = kind == RecordKind::Approval;
        let grant = kind == RecordKind::Grant;
        let applicable: [bool; 6] = [
            true,
            data_path
                || matches!(
                    kind,
                    RecordKind::LoginFailed | RecordKind::Approval | RecordKind::Grant
                ),
            data_path
                || kind == RecordKind::Admin
                || (approval && !event.is_any(&[Expired, Abandoned]))
                || (grant && !event.is(Expired)),
            data_path || kind == RecordKind::LoginFailed || (approval && event.is(Requested)),
            data_path || approval || grant,
            kind == RecordKind::Outcome
                || kind == RecordKind::LoginFailed
                // Every event of an approval but the request (an event of another name too).
                || (approval && event.text.is_some() && !event.is(Requested))
                || (grant && event.is_any(&[Approved, Denied, Expired, Revoked])),
        ];
        let has: [bool; 6] = [
            parse_time(&e.time).is_some(),
            !e.session_id.is_empty(),
            present(&e.subject),
            present(&e.client_addr),
            present(&e.connection),
            e.outcome.is_some(),
        ];
        let mut missing = Vec::new();
        for (i, ((app, ok), name)) in applicable.iter().zip(has).zip(FIELDS).enumerate() {
            if !app {
                continue;
            }
            if let Some(c) = self.field_counts.get_mut(i) {
                c.0 += 1;
                if ok {
                    c.1 += 1;
                }
            }
            if !ok {
                missing.push(name.to_owned());
            }
        }
        if missing.is_empty() {
            self.complete += 1;
        } else {
            self.incomplete.push(Incomplete {
                seq: r.seq,
                time: e.time.clone(),
                kind: kind.as_str().to_owned(),
                missing,
            });
        }
    }

    /// `records_checked`: the records of the period (every one is checked).
    pub(super) fn finish(self, records_checked: u64) -> Completeness {
        let rules: BTreeMap<String, String> = [
            ("time", "every record"),
            (
                "session_id",
                "session_start, session_end, statement, outcome, login_failed, approval, grant",
            ),
            (
                "subject",
                "session_start, session_end, statement, outcome, admin, approval (except expired/abandoned), grant (except expired)",
            ),
            (
                "client_addr",
                "session_start, session_end, statement, outcome, login_failed, approval requested",
            ),
            (
                "connection",
                "session_start, session_end, statement, outcome, approval, grant",
            ),
            (
                "outcome",
                "outcome, login_failed, approval decisions and ends, grant decisions and ends",
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        Completeness {
            records_checked,
            complete_records: self.complete,
            rules,
            fields: FIELDS
                .iter()
                .zip(self.field_counts)
                .map(|(name, (applicable, present))| FieldCompleteness {
                    field: (*name).to_owned(),
                    applicable,
                    present,
                    percent: percent(present, applicable),
                })
                .collect(),
            incomplete: self.incomplete,
        }
    }
}
