//! Masking: which values a session may not see in clear, and how they are shown instead.
//!
//! Two independent nets, because either alone leaks:
//! * **Column rules** (`[[mask]] columns`): a value that *comes from* a configured
//!   `schema.table.column` — directly, or computed from it (lineage) — is masked whatever it
//!   looks like (`substr(card_number, 5, 8)` is no longer a card number, but still card data).
//! * **Content detectors** (`[[mask]] detectors = ["pan"]`): any card number in any text the
//!   client receives is masked, wherever it came from (a free-text note, an error message).
//!
//! This module is protocol-agnostic: the PostgreSQL adapter resolves result columns to table
//! columns and asks [`SessionMasks`] what to do; a MySQL or HTTP adapter would ask the same.

pub mod counts;
pub mod detector;
pub mod inference;
pub mod style;

use serde::Deserialize;

use crate::policy::pattern::ColumnPattern;
use crate::policy::{ColumnRef, TableRef};
pub use counts::{MaskCounts, MaskReason, ReasonCounts};
pub use style::{MaskStyle, REDACTED, TokenKey};

/// One `[[mask]]` table of the configuration.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct MaskRule {
    /// Connections the rule applies to; empty: every connection.
    #[serde(default)]
    pub connections: Vec<String>,
    /// `schema.table.column` patterns (`*` wildcard per segment).
    #[serde(default)]
    pub columns: Vec<String>,
    /// Content detectors applied to every text value: `pan`.
    #[serde(default)]
    pub detectors: Vec<String>,
    #[serde(default)]
    pub style: MaskStyle,
    /// Groups that see clear values (the audit records that they did).
    #[serde(default)]
    pub exempt_groups: Vec<String>,
}

/// Column names that hold card verification codes: always fully redacted (PCI DSS 3.3.1),
/// whatever the style.
pub const VERIFICATION_CODE_COLUMNS: &[&str] = &[
    "cvv",
    "cvc",
    "cvv2",
    "cvc2",
    "cid",
    "csc",
    "security_code",
    "card_verification_code",
];

/// Whether a column name is a card verification code.
pub fn is_verification_code(column: &str) -> bool {
    VERIFICATION_CODE_COLUMNS
        .iter()
        .any(|c| c.eq_ignore_ascii_case(column))
}

/// The known content detectors.
pub const DETECTORS: &[&str] = &["pan"];

#[derive(Debug, Clone)]
struct CompiledRule {
    connections: Vec<String>,
    columns: Vec<ColumnPattern>,
    pan: bool,
    style: MaskStyle,
    exempt_groups: Vec<String>,
}

/// Every `[[mask]]` rule, checked and compiled, with the token key.
#[derive(Debug, Clone)]
pub struct MaskSet {
    rules: Vec<CompiledRule>,
    key: TokenKey,
}

impl MaskSet {
    /// Compiles the rules; the error names the rule (1-based) and the problem.
    pub fn compile(rules: &[MaskRule], key: TokenKey) -> Result<Self, String> {
        let mut out = Vec::with_capacity(rules.len());
        for (i, r) in rules.iter().enumerate() {
            let n = i + 1;
            let mut columns = Vec::with_capacity(r.columns.len());
            for c in &r.columns {
                columns.push(
                    ColumnPattern::parse(c).map_err(|e| format!("mask[{n}].columns: `{c}` {e}"))?,
                );
            }
            for d in &r.detectors {
                if !DETECTORS.contains(&d.as_str()) {
                    return Err(format!(
                        "mask[{n}].detectors: unknown detector `{d}` (known: {})",
                        DETECTORS.join(", ")
                    ));
                }
            }
            if columns.is_empty() && r.detectors.is_empty() {
                return Err(format!(
                    "mask[{n}]: needs `columns` or `detectors` (it would mask nothing)"
                ));
            }
            out.push(CompiledRule {
                connections: r.connections.clone(),
                columns,
                pan: r.detectors.iter().any(|d| d == "pan"),
                style: r.style,
                exempt_groups: r.exempt_groups.clone(),
            });
        }
        Ok(Self { rules: out, key })
    }

    /// What applies to a session of `connection` by an identity in `groups`.
    pub fn for_session(&self, connection: &str, groups: &[String]) -> SessionMasks {
        let mut s = SessionMasks {
            columns: Vec::new(),
            pan: None,
            exempted: Vec::new(),
            key: self.key.clone(),
        };
        for (i, r) in self.rules.iter().enumerate() {
            if !r.connections.is_empty() && !r.connections.iter().any(|c| c == connection) {
                continue;
            }
            if let Some(g) = groups.iter().find(|g| r.exempt_groups.contains(g)) {
                s.exempted.push(Exemption {
                    rule: i + 1,
                    group: g.clone(),
                });
                continue;
            }
            s.columns
                .extend(r.columns.iter().map(|p| (p.clone(), r.style)));
            if r.pan && s.pan.is_none() {
                s.pan = Some(r.style);
            }
        }
        s
    }
}

/// A rule a session is exempt from, and the group that exempts it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Exemption {
    /// 1-based index of the `[[mask]]` rule.
    pub rule: usize,
    pub group: String,
}

/// How one sensitive result column is masked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ColumnMask {
    pub style: MaskStyle,
    /// A card verification code: always redacted, never shown in part.
    pub verification_code: bool,
    /// The value is computed from a sensitive column (an encoding, a substring, arithmetic),
    /// not the value itself: masked whole, NULLs included, since the last four digits or a
    /// token of a derivative (or whether it is NULL) would reveal the original.
    pub derived: bool,
}

impl ColumnMask {
    /// The style actually applied (verification codes and derived values are always
    /// redacted).
    pub fn effective_style(&self) -> MaskStyle {
        if self.verification_code || self.derived {
            MaskStyle::Redact
        } else {
            self.style
        }
    }

    /// The mask of a value computed from one masked like `self`.
    pub fn derive(self) -> Self {
        Self {
            derived: true,
            ..self
        }
    }

    /// The mask of a value that may come from either: the stronger of both.
    pub fn merge(self, other: Self) -> Self {
        Self {
            style: if other.effective_style() == MaskStyle::Redact {
                MaskStyle::Redact
            } else {
                self.style
            },
            verification_code: self.verification_code || other.verification_code,
            derived: self.derived || other.derived,
        }
    }
}

/// The masking that applies to one session.
#[derive(Debug, Clone)]
pub struct SessionMasks {
    columns: Vec<(ColumnPattern, MaskStyle)>,
    pan: Option<MaskStyle>,
    exempted: Vec<Exemption>,
    key: TokenKey,
}

impl SessionMasks {
    /// No masking at all (no rule applies).
    pub fn none(key: TokenKey) -> Self {
        Self {
            columns: Vec::new(),
            pan: None,
            exempted: Vec::new(),
            key,
        }
    }

    /// Whether anything is masked for this session.
    pub fn is_active(&self) -> bool {
        !self.columns.is_empty() || self.pan.is_some()
    }

    /// The rules this session is exempt from (recorded with every unmasked result).
    pub fn exemptions(&self) -> &[Exemption] {
        &self.exempted
    }

    pub fn key(&self) -> &TokenKey {
        &self.key
    }

    /// The style of the content detector, if it runs for this session.
    pub fn pan_style(&self) -> Option<MaskStyle> {
        self.pan
    }

    /// How the table column `schema.table.column` is masked, if it is sensitive. Card
    /// verification codes are always masked while any rule applies to the session.
    pub fn table_column(&self, schema: &str, table: &str, column: &str) -> Option<ColumnMask> {
        let c = ColumnRef {
            table: Some(TableRef {
                schema: Some(schema.to_owned()),
                name: table.to_owned(),
            }),
            column: column.to_owned(),
        };
        let verification_code = is_verification_code(column);
        let style = self
            .columns
            .iter()
            .find(|(p, _)| p.matches_column(&c))
            .map(|(_, s)| *s);
        match (style, verification_code && self.is_active()) {
            (Some(style), v) => Some(ColumnMask {
                style,
                verification_code: v || verification_code,
                derived: false,
            }),
            (None, true) => Some(ColumnMask {
                style: MaskStyle::Redact,
                verification_code: true,
                derived: false,
            }),
            (None, false) => None,
        }
    }

    /// How a value computed from `source` is masked, if the source is sensitive. Sources not
    /// attributed to a table, or whole-row (`*`) sources, match conservatively.
    pub fn source(&self, source: &ColumnRef) -> Option<ColumnMask> {
        let verification_code = source.column != "*" && is_verification_code(&source.column);
        let style = self
            .columns
            .iter()
            .find(|(p, _)| p.matches_column(source))
            .map(|(_, s)| *s);
        match style {
            Some(style) => Some(ColumnMask {
                style,
                verification_code,
                derived: false,
            }),
            None if verification_code && self.is_active() => Some(ColumnMask {
                style: MaskStyle::Redact,
                verification_code: true,
                derived: false,
            }),
            None => None,
        }
    }

    /// Masks the card numbers in `text` with the detector's style. Returns the new text and
    /// how many were masked, or `None` when there is nothing to mask (no allocation).
    pub fn mask_pans(&self, text: &[u8]) -> Option<(Vec<u8>, u64)> {
        let style = self.pan?;
        mask_pans_with(style, &self.key, text)
    }

    /// Masks a whole value of a sensitive column.
    pub fn mask_value(&self, mask: ColumnMask, value: &[u8], out: &mut Vec<u8>) {
        style::mask_value(mask.effective_style(), &self.key, value, out);
    }
}

/// Masks every card number in `text` in `style`; `None` when there is none.
///
/// The result holds no card number by construction, not only none of those found: what a
/// style leaves visible (`last4`'s four digits) can join the digits next to the masked span
/// into a new Luhn-valid run (`4111 1111 1111 4008 0000 0000 0004` shows
/// `**** **** **** 4008 0000 0000 0004`, itself a card number). The output is scanned again
/// and every digit of what is found starred, until nothing is; past a few passes every
/// digit of the text is. Both keep `last4`'s promise that the output has the input's length
/// (COPY data is masked in place).
pub fn mask_pans_with(style: MaskStyle, key: &TokenKey, text: &[u8]) -> Option<(Vec<u8>, u64)> {
    let (mut out, count) = mask_pass(text, |span, buf| {
        style::mask_pan_span(style, key, span, buf)
    })?;
    for _ in 0..MAX_MASK_PASSES {
        match mask_pass(&out, star_digits) {
            None => return Some((out, count)),
            Some((again, _)) => out = again,
        }
    }
    let mut all = Vec::with_capacity(out.len());
    star_digits(&out, &mut all);
    Some((all, count))
}

/// Rescans of a masked text before [`mask_pans_with`] stars every digit in it. A starring
/// pass leaves no digit where it masked, so one rescan finds everything; the bound is a
/// backstop against a detector change breaking that.
const MAX_MASK_PASSES: usize = 4;

/// Appends `span` with every ASCII digit replaced by `*`.
fn star_digits(span: &[u8], out: &mut Vec<u8>) {
    out.extend(
        span.iter()
            .map(|b| if b.is_ascii_digit() { b'*' } else { *b }),
    );
}

/// One scan of `text`, each card number found replaced by what `mask` appends.
fn mask_pass(text: &[u8], mut mask: impl FnMut(&[u8], &mut Vec<u8>)) -> Option<(Vec<u8>, u64)> {
    if !detector::has_digit(text) {
        return None;
    }
    let mut out: Option<Vec<u8>> = None;
    let mut copied = 0;
    let mut count = 0u64;
    detector::find_pans(text, |m| {
        let buf = out.get_or_insert_with(|| Vec::with_capacity(text.len() + 16));
        buf.extend_from_slice(text.get(copied..m.start).unwrap_or_default());
        mask(text.get(m.start..m.end).unwrap_or_default(), buf);
        copied = m.end;
        count += 1;
    });
    let mut buf = out?;
    buf.extend_from_slice(text.get(copied..).unwrap_or_default());
    Some((buf, count))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(rules: &[MaskRule]) -> MaskSet {
        MaskSet::compile(rules, TokenKey::from_bytes([1; 32])).unwrap_or_else(|e| panic!("{e}"))
    }

    fn rule(columns: &[&str], detectors: &[&str], style: MaskStyle) -> MaskRule {
        MaskRule {
            connections: vec!["payments".into()],
            columns: columns.iter().map(|s| (*s).to_owned()).collect(),
            detectors: detectors.iter().map(|s| (*s).to_owned()).collect(),
            style,
            exempt_groups: vec!["auditors".into()],
        }
    }

    #[test]
    fn columns_styles_and_cvv() {
        let s = set(&[rule(
            &["public.payments.card_number", "*.*.cvv"],
            &["pan"],
            MaskStyle::Token,
        )])
        .for_session("payments", &["bots".into()]);
        assert!(s.is_active());
        let card = s.table_column("public", "payments", "card_number");
        assert_eq!(card.map(|m| m.effective_style()), Some(MaskStyle::Token));
        let cvv = s.table_column("other", "t", "cvv");
        assert_eq!(cvv.map(|m| m.effective_style()), Some(MaskStyle::Redact));
        assert_eq!(
            s.table_column("public", "payments", "cvc2")
                .map(|m| m.effective_style()),
            Some(MaskStyle::Redact),
            "verification codes are redacted even when not listed"
        );
        assert_eq!(s.table_column("public", "payments", "amount"), None);
        let whole = ColumnRef {
            table: Some(TableRef {
                schema: Some("public".into()),
                name: "payments".into(),
            }),
            column: "*".into(),
        };
        assert!(s.source(&whole).is_some());
    }

    #[test]
    fn exemptions_and_connections() {
        let m = set(&[rule(
            &["public.payments.card_number"],
            &["pan"],
            MaskStyle::Last4,
        )]);
        let exempt = m.for_session("payments", &["auditors".into()]);
        assert!(!exempt.is_active());
        assert_eq!(exempt.exemptions().len(), 1);
        assert!(!m.for_session("other", &[]).is_active());
    }

    #[test]
    fn bad_rules_are_named() {
        let bad = MaskSet::compile(
            &[rule(&["payments"], &[], MaskStyle::Last4)],
            TokenKey::from_bytes([1; 32]),
        );
        assert!(bad.is_err_and(|e| e.contains("mask[1].columns")));
        let bad = MaskSet::compile(
            &[rule(&[], &["ssn"], MaskStyle::Last4)],
            TokenKey::from_bytes([1; 32]),
        );
        assert!(bad.is_err_and(|e| e.contains("unknown detector `ssn`")));
    }

    #[test]
    fn text_masking() {
        let key = TokenKey::from_bytes([1; 32]);
        let (out, n) = mask_pans_with(MaskStyle::Last4, &key, b"paid with 4111 1111 1111 1111 ok")
            .unwrap_or_default();
        assert_eq!(
            String::from_utf8_lossy(&out),
            "paid with **** **** **** 1111 ok"
        );
        assert_eq!(n, 1);
        assert!(mask_pans_with(MaskStyle::Last4, &key, b"no card 12345").is_none());
    }

    /// What a style leaves visible never forms a new card number with its neighbours.
    #[test]
    fn masked_text_holds_no_card_number_even_where_last4_meets_other_digits() {
        let key = TokenKey::from_bytes([1; 32]);
        let count = |t: &[u8]| {
            let mut n = 0;
            detector::find_pans(t, |_| n += 1);
            n
        };
        // After masking the first card, its last four and the next twelve digits
        // (4008 0000 0000 0004) are a card number too.
        let text = b"x 4111 1111 1111 4008 0000 0000 0004 y";
        assert_eq!(
            count(b"4008 0000 0000 0004"),
            1,
            "the joined run is a card number"
        );
        for style in [MaskStyle::Last4, MaskStyle::Redact, MaskStyle::Token] {
            let (out, n) = mask_pans_with(style, &key, text).unwrap_or_default();
            assert_eq!(
                count(&out),
                0,
                "{style:?}: {}",
                String::from_utf8_lossy(&out)
            );
            assert!(n >= 1);
            assert!(out.starts_with(b"x ") && out.ends_with(b" y"), "{style:?}");
            if style == MaskStyle::Last4 {
                assert_eq!(out.len(), text.len(), "last4 keeps the length");
            }
        }
        // Card after card, each one's last four next to the following card's digits.
        let mut long = Vec::new();
        for _ in 0..64 {
            long.extend_from_slice(b"4111 1111 1111 4008 ");
        }
        long.extend_from_slice(b"0000 0000 0004");
        let (out, _) = mask_pans_with(MaskStyle::Last4, &key, &long).unwrap_or_default();
        assert_eq!(count(&out), 0, "{}", String::from_utf8_lossy(&out));
    }
}
