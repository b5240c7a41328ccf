//! 3.5.1 (PAN unreadable wherever stored): every field of every record of the period run
//! through the gateway's card-number detector. Only where numbers were found is reported,
//! never the numbers.

use gatehouse_core::audit::AuditRecord;
use gatehouse_core::masking::detector::find_pans;

use crate::evidence::summary::{Capped, PanHit, PanScan};

/// The record fields scanned, as the report names them.
const FIELDS_SCANNED: [&str; 9] = [
    "statement",
    "params",
    "detail",
    "subject",
    "groups",
    "issuer",
    "client_addr",
    "connection",
    "rule",
];

#[derive(Default)]
pub(super) struct PanScanAcc {
    hits: Capped<PanHit>,
    pans_found: u64,
    bytes_scanned: u64,
}

impl PanScanAcc {
    pub(super) fn scan(&mut self, r: &AuditRecord) {
        let e = &r.event;
        let mut fields: Vec<String> = Vec::new();
        let mut count = 0u64;
        let mut scanned = 0u64;
        let mut scan = |name: &str, text: &str| {
            scanned += text.len() as u64;
            let mut n = 0u64;
            find_pans(text.as_bytes(), |_| n += 1);
            if n > 0 {
                count += n;
                if !fields.iter().any(|f| f == name) {
                    fields.push(name.to_owned());
                }
            }
        };
        for (name, v) in [
            ("statement", &e.statement),
            ("detail", &e.detail),
            ("subject", &e.subject),
            ("issuer", &e.issuer),
            ("client_addr", &e.client_addr),
            ("connection", &e.connection),
            ("rule", &e.rule),
        ] {
            if let Some(t) = v {
                scan(name, t);
            }
        }
        for p in e.params.iter().flatten().flatten() {
            scan("params", p);
        }
        for g in &e.groups {
            scan("groups", g);
        }
        self.bytes_scanned += scanned;
        if count > 0 {
            self.pans_found += count;
            self.hits.push(PanHit {
                seq: r.seq,
                kind: e.kind.as_str().to_owned(),
                fields,
                count,
            });
        }
    }

    /// `records_scanned`: the records of the period (every one is scanned).
    pub(super) fn finish(self, records_scanned: u64) -> PanScan {
        PanScan {
            records_scanned,
            fields_scanned: FIELDS_SCANNED.iter().map(|f| (*f).to_owned()).collect(),
            bytes_scanned: self.bytes_scanned,
            pans_found: self.pans_found,
            records: self.hits,
        }
    }
}
