//! 8.2.1 (unique identification): the identities that opened sessions, from which issuers,
//! groups and addresses, and sessions without one.

use std::collections::{BTreeMap, BTreeSet};

use gatehouse_core::audit::AuditRecord;
use gatehouse_core::pan::mask_pans;

use super::values::client_ip;
use crate::evidence::summary::{Identities, IdentitySeen};

/// One subject's sessions and statements.
#[derive(Default)]
struct IdAcc {
    issuers: BTreeSet<String>,
    groups: BTreeSet<String>,
    sessions: u64,
    statements: u64,
    addrs: BTreeSet<String>,
    first: String,
    last: String,
}

#[derive(Default)]
pub(super) struct IdentityAcc {
    ids: BTreeMap<String, IdAcc>,
    sessions_started: u64,
    sessions_without_subject: u64,
}

impl IdentityAcc {
    pub(super) fn session_start(&mut self, r: &AuditRecord) {
        let e = &r.event;
        self.sessions_started += 1;
        match e.subject.as_deref().filter(|x| !x.is_empty()) {
            None => self.sessions_without_subject += 1,
            Some(subject) => {
                let id = self.identity(subject, &e.time);
                id.sessions += 1;
                if let Some(i) = &e.issuer {
                    id.issuers.insert(mask_pans(i).into_owned());
                }
                for g in &e.groups {
                    id.groups.insert(mask_pans(g).into_owned());
                }
                if let Some(a) = &e.client_addr {
                    id.addrs.insert(client_ip(a));
                }
            }
        }
    }

    pub(super) fn statement(&mut self, r: &AuditRecord) {
        let e = &r.event;
        if let Some(subject) = e.subject.as_deref().filter(|x| !x.is_empty()) {
            self.identity(subject, &e.time).statements += 1;
        }
    }

    /// The subject's entry, its first and last time widened to `time`.
    fn identity(&mut self, subject: &str, time: &str) -> &mut IdAcc {
        let key = mask_pans(subject).into_owned();
        let id = self.ids.entry(key).or_default();
        if id.first.is_empty() || time < id.first.as_str() {
            id.first = time.to_owned();
        }
        if time > id.last.as_str() {
            id.last = time.to_owned();
        }
        id
    }

    pub(super) fn finish(self) -> Identities {
        Identities {
            unique_subjects: self.ids.len() as u64,
            sessions: self.sessions_started,
            sessions_without_subject: self.sessions_without_subject,
            subjects_with_several_issuers: self
                .ids
                .iter()
                .filter(|(_, i)| i.issuers.len() > 1)
                .map(|(s, _)| s.clone())
                .collect(),
            list: self
                .ids
                .into_iter()
                .map(|(subject, i)| IdentitySeen {
                    subject,
                    issuers: i.issuers.into_iter().collect(),
                    groups: i.groups.into_iter().collect(),
                    sessions: i.sessions,
                    statements: i.statements,
                    client_addresses: i.addrs.into_iter().collect(),
                    first_seen: i.first,
                    last_seen: i.last,
                })
                .collect(),
        }
    }
}
