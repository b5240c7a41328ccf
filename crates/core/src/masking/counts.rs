//! How many values were masked, per result column and reason: the figures behind the
//! evidence for PCI DSS 3.4.1 ("PAN is rendered unreadable anywhere it is displayed").
//!
//! Every adapter counts the same way so that evidence reads one shape, whatever the protocol:
//! the outcome record of a statement (or request) carries `{"column": {"reason": n}}`.

use std::collections::BTreeMap;

/// Why a value was masked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaskReason {
    /// A column rule, directly or through lineage.
    Column,
    /// A card verification code (always redacted).
    VerificationCode,
    /// The content detector found a card number.
    Pan,
}

impl MaskReason {
    pub const ALL: [MaskReason; 3] = [Self::Column, Self::VerificationCode, Self::Pan];

    /// The key in the record (`column`, `verification_code`, `pan`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Column => "column",
            Self::VerificationCode => "verification_code",
            Self::Pan => "pan",
        }
    }

    fn slot(self) -> usize {
        match self {
            Self::Column => 0,
            Self::VerificationCode => 1,
            Self::Pan => 2,
        }
    }
}

/// Values masked in one column, per reason: the counters a result-set masker keeps per field
/// while rows stream by (no map lookup per value).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReasonCounts([u64; 3]);

impl ReasonCounts {
    /// `n` values masked for one reason.
    pub fn of(reason: MaskReason, n: u64) -> Self {
        let mut c = Self::default();
        c.add(reason, n);
        c
    }

    pub fn add(&mut self, reason: MaskReason, n: u64) {
        if let Some(c) = self.0.get_mut(reason.slot()) {
            *c += n;
        }
    }

    pub fn get(&self, reason: MaskReason) -> u64 {
        self.0.get(reason.slot()).copied().unwrap_or(0)
    }

    pub fn is_zero(&self) -> bool {
        self.0.iter().all(|c| *c == 0)
    }
}

/// Values masked, per result column and reason, over a statement.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MaskCounts(BTreeMap<String, ReasonCounts>);

impl MaskCounts {
    /// Adds one column's counts (nothing is kept for a column with none).
    pub fn add(&mut self, column: &str, counts: ReasonCounts) {
        if counts.is_zero() {
            return;
        }
        let slot = match self.0.get_mut(column) {
            Some(s) => s,
            None => self.0.entry(column.to_owned()).or_default(),
        };
        for r in MaskReason::ALL {
            slot.add(r, counts.get(r));
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `{"card_number": {"column": 3}, "note": {"pan": 2}}`: only reasons with a count.
    pub fn to_json(&self) -> serde_json::Value {
        let mut out = serde_json::Map::new();
        for (column, counts) in &self.0 {
            let mut m = serde_json::Map::new();
            for r in MaskReason::ALL {
                let c = counts.get(r);
                if c > 0 {
                    m.insert(r.as_str().to_owned(), c.into());
                }
            }
            out.insert(column.clone(), m.into());
        }
        out.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_add_up_per_column_and_reason_and_skip_zeroes() {
        let mut per = ReasonCounts::default();
        per.add(MaskReason::Column, 2);
        per.add(MaskReason::Pan, 1);
        let mut all = MaskCounts::default();
        all.add("card_number", per);
        all.add("card_number", per);
        all.add("note", ReasonCounts::default());
        assert_eq!(
            all.to_json().to_string(),
            r#"{"card_number":{"column":4,"pan":2}}"#
        );
        assert!(MaskCounts::default().is_empty());
    }
}
