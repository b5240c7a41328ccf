//! 10.2.1.1 (access to cardholder data) and 3.4.1 (PAN masked when displayed): both read the
//! same facts, the values masked in results and the results that went out unmasked to exempt
//! identities, so one accumulator gathers them; 10.2.1.1 adds the statements on the tables the
//! `[[mask]]` column patterns name.

use std::collections::{BTreeMap, BTreeSet};

use gatehouse_core::audit::AuditRecord;
use gatehouse_core::config::Config;
use gatehouse_core::pan::mask_pans;
use gatehouse_core::policy::pattern::ColumnPattern;
use serde_json::Value;

use super::values::{bump, masked_str, strings};
use crate::evidence::summary::{
    CardholderAccess, CardholderIdentity, Exemption, MaskRuleSummary, Masking,
};

/// What one identity did with cardholder data.
#[derive(Default)]
struct ChdSubject {
    sessions: BTreeSet<String>,
    masked_statements: u64,
    masked_values: u64,
    sensitive_statements: u64,
    unmasked_results: u64,
}

pub(super) struct CardholderAcc {
    /// (connections of the rule, pattern) for patterns that name tables.
    sensitive: Vec<(Vec<String>, ColumnPattern)>,
    /// `[[mask]]` rules as named in exemptions (`#1 (columns)`), by 1-based index.
    mask_labels: Vec<String>,
    /// Sessions with masked values, unmasked results or statements on sensitive tables.
    sessions: BTreeSet<String>,
    by_subject: BTreeMap<String, ChdSubject>,
    /// Outcome records whose `detail.masked` is not empty.
    masked_statements: u64,
    sensitive_statements: u64,
    sensitive_by_table: BTreeMap<String, u64>,
    /// Values masked per result column and reason.
    masked: BTreeMap<String, BTreeMap<String, u64>>,
    /// Results per (subject, groups, rules) of `detail.unmasked_for`.
    exemptions: BTreeMap<(String, Vec<String>, Vec<String>), u64>,
}

impl CardholderAcc {
    pub(super) fn new(cfg: &Config) -> Self {
        let mut sensitive = Vec::new();
        for m in &cfg.masks {
            for c in &m.columns {
                if let Ok(p) = ColumnPattern::parse(c)
                    && !(p.schema.is_any() && p.table.is_any())
                {
                    sensitive.push((m.connections.clone(), p));
                }
            }
        }
        let mask_labels = cfg
            .masks
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let what: Vec<String> = m.columns.iter().chain(&m.detectors).cloned().collect();
                format!("[[mask]] #{} ({})", i + 1, what.join(", "))
            })
            .collect();
        Self {
            sensitive,
            mask_labels,
            sessions: BTreeSet::new(),
            by_subject: BTreeMap::new(),
            masked_statements: 0,
            sensitive_statements: 0,
            sensitive_by_table: BTreeMap::new(),
            masked: BTreeMap::new(),
            exemptions: BTreeMap::new(),
        }
    }

    fn subject(&mut self, subject: String, session_id: &str) -> &mut ChdSubject {
        self.sessions.insert(session_id.to_owned());
        let c = self.by_subject.entry(subject).or_default();
        c.sessions.insert(session_id.to_owned());
        c
    }

    /// A statement record: does it read or write a table of a `[[mask]] columns` pattern?
    pub(super) fn statement(&mut self, r: &AuditRecord, detail: &Value) {
        let e = &r.event;
        let connection = e.connection.as_deref().unwrap_or("");
        let mut touched: BTreeSet<String> = BTreeSet::new();
        for t in strings(detail.get("tables")) {
            let (schema, name) = match t.split_once('.') {
                Some((sch, n)) => (Some(sch), n),
                None => (None, t.as_str()),
            };
            let hit = self.sensitive.iter().any(|(conns, p)| {
                (conns.is_empty() || conns.iter().any(|c| c == connection))
                    && schema.is_none_or(|sch| p.schema.matches(sch))
                    && p.table.matches(name)
            });
            if hit {
                touched.insert(t.clone());
            }
        }
        if !touched.is_empty() {
            self.sensitive_statements += 1;
            for t in &touched {
                bump(&mut self.sensitive_by_table, &mask_pans(t), 1);
            }
            let subject = mask_pans(e.subject.as_deref().unwrap_or("(none)")).into_owned();
            self.subject(subject, &e.session_id).sensitive_statements += 1;
        }
    }

    /// An outcome record: the values masked in its results, or the exemption it went out under.
    pub(super) fn outcome(&mut self, r: &AuditRecord, detail: &Value) {
        let e = &r.event;
        if let Some(m) = detail.get("masked").and_then(Value::as_object)
            && !m.is_empty()
        {
            let mut values = 0u64;
            for (column, reasons) in m {
                let column = mask_pans(column).into_owned();
                let slot = self.masked.entry(column).or_default();
                for (reason, n) in reasons.as_object().into_iter().flatten() {
                    let n = n.as_u64().unwrap_or(0);
                    values += n;
                    bump(slot, &mask_pans(reason), n);
                }
            }
            self.masked_statements += 1;
            let subject = mask_pans(e.subject.as_deref().unwrap_or("(none)")).into_owned();
            let c = self.subject(subject, &e.session_id);
            c.masked_statements += 1;
            c.masked_values += values;
        }
        if let Some(u) = detail.get("unmasked_for") {
            let subject = masked_str(u.get("subject")).unwrap_or_else(|| "(none)".to_owned());
            // Rules are 1-based `[[mask]]` indices.
            let rules = u
                .get("rules")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|r| match r.as_u64() {
                    Some(n) => usize::try_from(n)
                        .ok()
                        .and_then(|n| n.checked_sub(1))
                        .and_then(|i| self.mask_labels.get(i).cloned())
                        .unwrap_or_else(|| format!("[[mask]] #{n}")),
                    None => mask_pans(r.as_str().unwrap_or("?")).into_owned(),
                })
                .collect();
            let key = (subject.clone(), strings(u.get("groups")), rules);
            *self.exemptions.entry(key).or_default() += 1;
            self.subject(subject, &e.session_id).unmasked_results += 1;
        }
    }

    pub(super) fn finish(self, cfg: &Config) -> (CardholderAccess, Masking) {
        let masked_values: u64 = self.masked.values().flat_map(|m| m.values()).sum();
        let access = CardholderAccess {
            sensitive_table_patterns: self.sensitive.iter().map(|(_, p)| p.to_string()).collect(),
            statements_with_masked_values: self.masked_statements,
            masked_values,
            masked_by_column: self.masked.clone(),
            statements_touching_sensitive_tables: self.sensitive_statements,
            statements_by_table: self.sensitive_by_table,
            sessions: self.sessions.len() as u64,
            identities: self
                .by_subject
                .into_iter()
                .map(|(subject, c)| CardholderIdentity {
                    subject,
                    sessions: c.sessions.len() as u64,
                    statements_with_masked_values: c.masked_statements,
                    masked_values: c.masked_values,
                    statements_touching_sensitive_tables: c.sensitive_statements,
                    unmasked_results: c.unmasked_results,
                })
                .collect(),
        };
        let mut by_reason: BTreeMap<String, u64> = BTreeMap::new();
        for reasons in self.masked.values() {
            for (reason, n) in reasons {
                bump(&mut by_reason, reason, *n);
            }
        }
        let exempt_statements = self.exemptions.values().sum();
        let masking = Masking {
            rules: cfg
                .masks
                .iter()
                .map(|m| MaskRuleSummary {
                    connections: m.connections.clone(),
                    columns: m.columns.clone(),
                    detectors: m.detectors.clone(),
                    style: serde_json::to_value(m.style)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default(),
                    exempt_groups: m.exempt_groups.clone(),
                })
                .collect(),
            outcome_records_with_masking: self.masked_statements,
            masked_values,
            by_reason,
            by_column: self.masked,
            exempt_statements,
            exemptions: self
                .exemptions
                .into_iter()
                .map(|((subject, groups, rules), statements)| Exemption {
                    subject,
                    groups,
                    rules,
                    statements,
                })
                .collect(),
        };
        (access, masking)
    }
}
