//! The period a report covers, and how a record's time is compared with it.

use gatehouse_core::audit::rfc3339 as canonical;
use serde::Serialize;

use super::EvidenceError;

/// `[from, to]`: dates are whole days (UTC), RFC 3339 times are exact; compared with the
/// stored canonical time text (fixed width, so text order is time order).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Period {
    /// As given.
    pub from: String,
    pub to: String,
    /// Records with `time >= from_time` ...
    pub from_time: String,
    /// ... and `time < to_time` (a date: the next midnight) or `time <= to_time` (a time).
    pub to_time: String,
    pub to_inclusive: bool,
}

impl Period {
    /// `--from` and `--to` as given: `YYYY-MM-DD` (whole days) or RFC 3339.
    pub fn parse(from: &str, to: &str) -> Result<Self, EvidenceError> {
        let (from_time, _) = parse_bound(from, "--from", false)?;
        let (to_time, to_inclusive) = parse_bound(to, "--to", true)?;
        if to_time < from_time || (!to_inclusive && to_time == from_time) {
            return Err(EvidenceError::EmptyPeriod {
                from: from.to_owned(),
                to: to.to_owned(),
            });
        }
        Ok(Self {
            from: from.to_owned(),
            to: to.to_owned(),
            from_time,
            to_time,
            to_inclusive,
        })
    }

    /// Whether a record's stored time lies in the period.
    pub fn contains(&self, time: &str) -> bool {
        time >= self.from_time.as_str()
            && if self.to_inclusive {
                time <= self.to_time.as_str()
            } else {
                time < self.to_time.as_str()
            }
    }

    pub(super) fn describe(&self) -> String {
        format!(
            "{} \u{2264} time {} {} (UTC)",
            self.from_time,
            if self.to_inclusive { "\u{2264}" } else { "<" },
            self.to_time
        )
    }
}

/// The canonical stored form of a bound; for an end date, the next midnight (exclusive).
fn parse_bound(s: &str, flag: &'static str, end: bool) -> Result<(String, bool), EvidenceError> {
    use time::format_description::well_known::Rfc3339;
    if let Ok(t) = time::OffsetDateTime::parse(s, &Rfc3339) {
        return Ok((canonical(t), true));
    }
    let fmt = time::macros::format_description!("[year]-[month]-[day]");
    if let Ok(d) = time::Date::parse(s, &fmt) {
        if end {
            let next = d.next_day().ok_or_else(|| EvidenceError::NoDayAfter {
                flag,
                value: s.to_owned(),
            })?;
            return Ok((format!("{next}T00:00:00.000000Z"), false));
        }
        return Ok((format!("{d}T00:00:00.000000Z"), true));
    }
    Err(EvidenceError::BadTime {
        flag,
        value: s.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evidence_periods_parse_dates_inclusively() {
        let p = Period::parse("2026-01-01", "2026-01-31").unwrap();
        assert!(p.contains("2026-01-01T00:00:00.000000Z"));
        assert!(p.contains("2026-01-31T23:59:59.999999Z"));
        assert!(!p.contains("2026-02-01T00:00:00.000000Z"));
        assert!(!p.contains("2025-12-31T23:59:59.999999Z"));
        let p = Period::parse("2026-01-01T10:00:00+01:00", "2026-01-01T12:00:00Z").unwrap();
        assert_eq!(p.from_time, "2026-01-01T09:00:00.000000Z");
        assert!(p.contains("2026-01-01T12:00:00.000000Z"));
        assert!(!p.contains("2026-01-01T12:00:00.000001Z"));
        assert!(Period::parse("2026-02-01", "2026-01-01").is_err());
        assert!(Period::parse("yesterday", "2026-01-01").is_err());
    }
}
