//! Masking a text-protocol result set, column by column, as the PostgreSQL adapter does.
//!
//! A result column is sensitive when it *comes from* a configured `database.table.column`:
//! MySQL says where a plain column comes from in its column definition (`schema`, `org_table`,
//! `org_name`), which covers aliases and views' base columns without parsing anything. A
//! computed column (empty `org_table`) is judged by what the caller's statement analysis says
//! (`computed`): unknown is masked whole, never waved through. The content detector then looks
//! at every value regardless.
//!
//! A masked value stays a valid value of its type, or drivers break: text is masked as text,
//! integer and decimal card numbers become the number made of their last four digits (or NULL
//! under the other styles), and where no faithful value exists (floats, JSON) the value becomes
//! NULL. Only rows that need it are rebuilt.

use gatehouse_core::masking::detector::is_pan;
use gatehouse_core::masking::style::last4_number;
use gatehouse_core::masking::{
    ColumnMask, MaskCounts, MaskReason, MaskStyle, ReasonCounts, SessionMasks,
};

use crate::messages::MessageError;
use crate::messages::command::{
    ColumnDefinition, binary_row, encode_binary_row, encode_text_row, fixed_width, is_temporal,
    text_row,
};

/// How a column's values are shaped, from its type code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueKind {
    Text,
    /// TINY, SHORT, LONG, LONGLONG, INT24, YEAR, DECIMAL, NEWDECIMAL: digits (and a sign, a
    /// fraction).
    Number,
    /// FLOAT, DOUBLE, JSON, GEOMETRY: no faithful masked form, so NULL.
    Opaque,
}

impl ValueKind {
    pub fn of(column_type: u8) -> Self {
        match column_type {
            0x01 | 0x02 | 0x03 | 0x08 | 0x09 | 0x0d | 0x00 | 0xf6 => Self::Number,
            0x04 | 0x05 | 0xf5 | 0xff => Self::Opaque,
            _ => Self::Text,
        }
    }
}

/// One column of the result being masked.
#[derive(Debug, Clone)]
pub struct ColumnPlan {
    /// The label its counts are recorded under (the result column's name).
    pub name: String,
    pub kind: ValueKind,
    pub mask: Option<ColumnMask>,
    /// The column's type code and whether it is unsigned (for binary-protocol values).
    pub column_type: u8,
    pub unsigned: bool,
}

/// The masking of one result set, with its counts so far.
#[derive(Debug, Clone)]
pub struct RowMask {
    columns: Vec<ColumnPlan>,
    /// The columns' type codes, for reading binary-protocol rows.
    types: Vec<u8>,
    detect: Option<MaskStyle>,
    counts: Vec<ReasonCounts>,
}

impl RowMask {
    /// Plans the masking of a result from its column definitions. `computed` is what masks a
    /// column with no source table, from the statement's analysis (`None`: computed from no
    /// masked data).
    pub fn plan(
        columns: &[ColumnDefinition],
        masks: &SessionMasks,
        computed: Option<ColumnMask>,
    ) -> Self {
        Self::plan_with(columns, masks, |_, c| {
            if c.org_table.is_empty() {
                computed
            } else {
                None
            }
        })
    }

    /// Plans the masking of a result: each column is masked as its source table column says
    /// (its definition's `schema.org_table.org_name`) and, on top, as `analysis` says for its
    /// position — the stronger of both, so a source the server does not name (a computed
    /// column, a derived table, a view) is covered by the statement's lineage.
    pub fn plan_with(
        columns: &[ColumnDefinition],
        masks: &SessionMasks,
        analysis: impl Fn(usize, &ColumnDefinition) -> Option<ColumnMask>,
    ) -> Self {
        let plans: Vec<ColumnPlan> = columns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
                let from_source = if c.org_table.is_empty() {
                    None
                } else {
                    masks.table_column(&text(&c.schema), &text(&c.org_table), &text(&c.org_name))
                };
                let mask = match (from_source, analysis(i, c)) {
                    (Some(a), Some(b)) => Some(a.merge(b)),
                    (a, b) => a.or(b),
                };
                ColumnPlan {
                    name: text(&c.name),
                    kind: ValueKind::of(c.column_type),
                    mask,
                    column_type: c.column_type,
                    unsigned: c.flags & UNSIGNED_FLAG != 0,
                }
            })
            .collect();
        Self {
            counts: vec![ReasonCounts::default(); plans.len()],
            types: plans.iter().map(|c| c.column_type).collect(),
            columns: plans,
            detect: masks.pan_style(),
        }
    }

    /// The columns' type codes (what a binary-protocol row is read with).
    pub fn column_types(&self) -> &[u8] {
        &self.types
    }

    /// The planned columns (their labels and masks).
    pub fn columns(&self) -> &[ColumnPlan] {
        &self.columns
    }

    /// Whether any row of this result may need rewriting.
    pub fn active(&self) -> bool {
        self.detect.is_some() || self.columns.iter().any(|c| c.mask.is_some())
    }

    /// Masks one text-protocol row: `Ok(None)` when it goes out unchanged.
    pub fn text_row(
        &mut self,
        payload: &[u8],
        masks: &SessionMasks,
    ) -> Result<Option<Vec<u8>>, MessageError> {
        let values = text_row(payload, self.columns.len())?;
        let Some(out) = self.rewrite(&values, |plan, c, v| match v {
            Some(v) => plan.value(c, v, masks),
            // A derived value's NULL would tell whether its source is NULL.
            None if c.mask.is_some_and(|m| m.derived) => (
                Some(Some(gatehouse_core::masking::REDACTED.to_vec())),
                Some(MaskReason::Column),
            ),
            None => (None, None),
        }) else {
            return Ok(None);
        };
        let refs: Vec<Option<&[u8]>> = out.iter().map(|v| v.as_deref()).collect();
        let mut row = Vec::with_capacity(payload.len());
        encode_text_row(&refs, &mut row);
        Ok(Some(row))
    }

    /// Masks one binary-protocol row (prepared statements): `Ok(None)` when it goes out
    /// unchanged. Integers and floats are judged by their decimal value and, when masked,
    /// keep their width (the last four digits) or become NULL; temporal values are never
    /// card data but are NULL when their column is masked.
    pub fn binary_row(
        &mut self,
        payload: &[u8],
        masks: &SessionMasks,
    ) -> Result<Option<Vec<u8>>, MessageError> {
        let values = binary_row(payload, &self.types)?;
        let Some(out) = self.rewrite(&values, |plan, c, v| match v {
            Some(v) => plan.binary_value(c, v, masks),
            // A derived value's NULL would tell whether its source is NULL: a text one
            // shows the redaction, any other type is NULL either way.
            None if c.mask.is_some_and(|m| m.derived) && c.kind == ValueKind::Text => (
                Some(Some(gatehouse_core::masking::REDACTED.to_vec())),
                Some(MaskReason::Column),
            ),
            None => (None, None),
        }) else {
            return Ok(None);
        };
        let refs: Vec<Option<&[u8]>> = out.iter().map(|v| v.as_deref()).collect();
        let mut row = Vec::with_capacity(payload.len());
        encode_binary_row(&refs, &self.types, &mut row);
        Ok(Some(row))
    }

    /// Judges every value of a row with `judge` (what replaces it, `None`: kept; and why),
    /// counting per column. The row's new values, or `None` when nothing changed.
    fn rewrite(
        &mut self,
        values: &[Option<&[u8]>],
        judge: impl Fn(&Self, &ColumnPlan, Option<&[u8]>) -> Judged,
    ) -> Option<Vec<Option<Vec<u8>>>> {
        let mut out: Vec<Option<Vec<u8>>> = Vec::with_capacity(values.len());
        let mut changed = false;
        for (i, v) in values.iter().enumerate() {
            let (replaced, reason) = match self.columns.get(i) {
                Some(c) => judge(self, c, *v),
                None => (None, None),
            };
            if let (Some(reason), Some(slot)) = (reason, self.counts.get_mut(i)) {
                slot.add(reason, 1);
            }
            match replaced {
                Some(r) => {
                    changed = true;
                    out.push(r);
                }
                None => out.push(v.map(<[u8]>::to_vec)),
            }
        }
        changed.then_some(out)
    }

    /// One non-NULL binary value: fixed-width numbers through their decimal text.
    fn binary_value(&self, c: &ColumnPlan, v: &[u8], masks: &SessionMasks) -> Judged {
        if is_temporal(c.column_type) {
            return match c.mask {
                Some(m) => (Some(None), Some(reason_of(m))),
                None => (None, None),
            };
        }
        let Some(width) = fixed_width(c.column_type) else {
            // Strings and decimals travel as their text in the binary protocol too.
            return self.value(c, v, masks);
        };
        let Some(text) = decimal_text(c.column_type, c.unsigned, v) else {
            return (None, None);
        };
        let (replaced, reason) = self.value(c, text.as_bytes(), masks);
        let replaced = replaced.map(|r| {
            r.and_then(|t| {
                let n: i64 = std::str::from_utf8(&t).ok()?.parse().ok()?;
                fit(n, width, matches!(c.column_type, 0x04 | 0x05))
            })
        });
        (replaced, reason)
    }

    /// What becomes of one non-NULL value (`None`: kept), and why it was masked.
    fn value(&self, c: &ColumnPlan, v: &[u8], masks: &SessionMasks) -> Judged {
        if let Some(mask) = c.mask {
            let reason = if mask.verification_code {
                MaskReason::VerificationCode
            } else {
                MaskReason::Column
            };
            let out = match c.kind {
                ValueKind::Text => {
                    let mut out = Vec::with_capacity(v.len());
                    masks.mask_value(mask, v, &mut out);
                    Some(out)
                }
                ValueKind::Number if mask.effective_style() == MaskStyle::Last4 => {
                    Some(last4_number(integer_part(v)).to_string().into_bytes())
                }
                ValueKind::Number | ValueKind::Opaque => None,
            };
            return match out {
                Some(o) if o == v => (None, None),
                o => (Some(o), Some(reason)),
            };
        }
        let Some(style) = self.detect else {
            return (None, None);
        };
        match c.kind {
            // What a server sends for a number is digits; anything else is looked at as text.
            ValueKind::Number if plain_number(v) => {
                let digits = integer_part(v);
                if !is_pan(digits) {
                    return (None, None);
                }
                let out = (style == MaskStyle::Last4)
                    .then(|| last4_number(digits).to_string().into_bytes());
                (Some(out), Some(MaskReason::Pan))
            }
            ValueKind::Text | ValueKind::Number | ValueKind::Opaque => match masks.mask_pans(v) {
                Some((masked, _)) if c.kind == ValueKind::Text => {
                    (Some(Some(masked)), Some(MaskReason::Pan))
                }
                // A card number inside a float or a JSON document: no faithful masked form.
                Some(_) => (Some(None), Some(MaskReason::Pan)),
                None => (None, None),
            },
        }
    }

    /// Adds this result's counts to `into` (and starts counting again).
    pub fn drain_counts(&mut self, into: &mut MaskCounts) {
        for (c, n) in self.columns.iter().zip(self.counts.iter_mut()) {
            into.add(&c.name, std::mem::take(n));
        }
    }
}

/// What becomes of one value (`None`: kept; `Some(None)`: NULL) and why it was masked.
type Judged = (Option<Option<Vec<u8>>>, Option<MaskReason>);

/// `ColumnDefinition.flags`: the column is unsigned.
const UNSIGNED_FLAG: u16 = 0x20;

fn reason_of(mask: ColumnMask) -> MaskReason {
    if mask.verification_code {
        MaskReason::VerificationCode
    } else {
        MaskReason::Column
    }
}

/// The decimal text of a fixed-width binary number (`None`: not a number of that width).
fn decimal_text(column_type: u8, unsigned: bool, v: &[u8]) -> Option<String> {
    if v.is_empty() {
        return None;
    }
    let mut b = [0u8; 8];
    b.get_mut(..v.len())?.copy_from_slice(v);
    Some(match (column_type, unsigned) {
        (0x04, _) => f32::from_le_bytes(b.get(..4)?.try_into().ok()?).to_string(),
        (0x05, _) => f64::from_le_bytes(b).to_string(),
        (_, true) => u64::from_le_bytes(b).to_string(),
        (_, false) => {
            // Sign-extend from the value's width.
            let shift = 64 - 8 * v.len() as u32;
            (((u64::from_le_bytes(b) << shift) as i64) >> shift).to_string()
        }
    })
}

/// `n` in a binary number of `width` bytes (a float for `float`), or `None` (NULL) if it
/// does not fit.
fn fit(n: i64, width: usize, float: bool) -> Option<Vec<u8>> {
    match (width, float) {
        (4, true) => Some((n as f32).to_le_bytes().to_vec()),
        (8, true) => Some((n as f64).to_le_bytes().to_vec()),
        (1, false) => i8::try_from(n).ok().map(|x| x.to_le_bytes().to_vec()),
        (2, false) => i16::try_from(n).ok().map(|x| x.to_le_bytes().to_vec()),
        (4, false) => i32::try_from(n).ok().map(|x| x.to_le_bytes().to_vec()),
        (8, false) => Some(n.to_le_bytes().to_vec()),
        _ => None,
    }
}

/// Whether `v` is a decimal number as a server writes one (`-12`, `4111.00`).
fn plain_number(v: &[u8]) -> bool {
    let digits = v.strip_prefix(b"-").unwrap_or(v);
    let (int, frac) = match digits.iter().position(|b| *b == b'.') {
        Some(i) => (
            digits.get(..i).unwrap_or_default(),
            digits.get(i + 1..).unwrap_or_default(),
        ),
        None => (digits, &[][..]),
    };
    !int.is_empty() && int.iter().all(u8::is_ascii_digit) && frac.iter().all(u8::is_ascii_digit)
}

/// The digits before any fraction, without a sign (`-4111.00` → `4111`).
fn integer_part(v: &[u8]) -> &[u8] {
    let v = v.strip_prefix(b"-").unwrap_or(v);
    let end = v.iter().position(|b| *b == b'.').unwrap_or(v.len());
    v.get(..end).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use gatehouse_core::masking::{MaskRule, MaskSet, TokenKey};

    use super::*;

    fn masks(style: MaskStyle) -> SessionMasks {
        let rules = [MaskRule {
            columns: vec![
                "shop.payments.card_number".into(),
                "shop.payments.card_int".into(),
            ],
            detectors: vec!["pan".into()],
            style,
            ..MaskRule::default()
        }];
        MaskSet::compile(&rules, TokenKey::from_bytes([3; 32]))
            .unwrap_or_else(|e| panic!("{e}"))
            .for_session("shop", &[])
    }

    fn column(org_table: &str, org_name: &str, name: &str, column_type: u8) -> ColumnDefinition {
        ColumnDefinition {
            schema: b"shop".to_vec(),
            table: org_table.as_bytes().to_vec(),
            org_table: org_table.as_bytes().to_vec(),
            name: name.as_bytes().to_vec(),
            org_name: org_name.as_bytes().to_vec(),
            column_type,
            ..ColumnDefinition::default()
        }
    }

    fn row(values: &[Option<&[u8]>]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_text_row(values, &mut out);
        out
    }

    #[test]
    fn sensitive_columns_are_masked_by_their_source_whatever_their_alias() {
        let m = masks(MaskStyle::Last4);
        let cols = [
            column("payments", "card_number", "cn", 0xfd),
            column("payments", "card_int", "ci", 0x08),
            column("payments", "note", "note", 0xfc),
            column("payments", "id", "id", 0x03),
        ];
        let mut plan = RowMask::plan(&cols, &m, None);
        assert!(plan.active());
        let input = row(&[
            Some(b"4111111111111111"),
            Some(b"5555555555554444"),
            Some(b"paid with 6011 1111 1111 1117"),
            Some(b"7"),
        ]);
        let out = plan
            .text_row(&input, &m)
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("rewritten"));
        assert_eq!(
            text_row(&out, 4).unwrap_or_default(),
            vec![
                Some(&b"************1111"[..]),
                Some(&b"4444"[..]),
                Some(&b"paid with **** **** **** 1117"[..]),
                Some(&b"7"[..]),
            ]
        );
        let mut counts = MaskCounts::default();
        plan.drain_counts(&mut counts);
        assert_eq!(
            counts.to_json().to_string(),
            r#"{"ci":{"column":1},"cn":{"column":1},"note":{"pan":1}}"#
        );
        // A clean row is not rebuilt.
        let clean = row(&[None, None, Some(b"no cards"), Some(b"8")]);
        assert_eq!(plan.text_row(&clean, &m), Ok(None));
    }

    #[test]
    fn computed_columns_follow_the_analysis_and_unknown_is_masked_whole() {
        let m = masks(MaskStyle::Last4);
        let cols = [column("", "", "substr(card_number, 1, 6)", 0xfd)];
        let derived = ColumnMask {
            style: MaskStyle::Last4,
            verification_code: false,
            derived: true,
        };
        let mut plan = RowMask::plan(&cols, &m, Some(derived));
        let out = plan
            .text_row(&row(&[Some(b"411111")]), &m)
            .unwrap_or_default()
            .unwrap_or_default();
        assert_eq!(
            text_row(&out, 1).unwrap_or_default(),
            vec![Some(&b"[REDACTED]"[..])]
        );
        // NULL of a derived value is masked too (it would say whether the source is NULL).
        let out = plan
            .text_row(&row(&[None]), &m)
            .unwrap_or_default()
            .unwrap_or_default();
        assert_eq!(
            text_row(&out, 1).unwrap_or_default(),
            vec![Some(&b"[REDACTED]"[..])]
        );
    }

    #[test]
    fn binary_rows_keep_each_values_width() {
        let m = masks(MaskStyle::Last4);
        let cols = [
            column("payments", "card_int", "ci", 0x08),
            column("payments", "card_number", "cn", 0xfd),
            column("other", "n", "n", 0x08),
            column("other", "id", "id", 0x03),
        ];
        let mut plan = RowMask::plan(&cols, &m, None);
        let types = [0x08, 0xfd, 0x08, 0x03];
        let card = 5_555_555_555_554_444i64.to_le_bytes();
        let other_card = 4_111_111_111_111_111i64.to_le_bytes();
        let id = 7i32.to_le_bytes();
        let mut input = Vec::new();
        encode_binary_row(
            &[
                Some(&card),
                Some(b"4111111111111111"),
                Some(&other_card),
                Some(&id),
            ],
            &types,
            &mut input,
        );
        let out = plan
            .binary_row(&input, &m)
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("rewritten"));
        let four = 4444i64.to_le_bytes();
        let one = 1111i64.to_le_bytes();
        assert_eq!(
            binary_row(&out, &types).unwrap_or_default(),
            vec![
                Some(&four[..]),
                Some(&b"************1111"[..]),
                Some(&one[..]),
                Some(&id[..])
            ]
        );
        // Nothing to mask: forwarded as it came.
        let mut clean = Vec::new();
        encode_binary_row(
            &[None, None, Some(&id), Some(&id)],
            &[0x08, 0xfd, 0x03, 0x03],
            &mut clean,
        );
        let mut plan = RowMask::plan(
            &[
                cols[0].clone(),
                cols[1].clone(),
                column("o", "a", "a", 0x03),
                cols[3].clone(),
            ],
            &m,
            None,
        );
        assert_eq!(plan.binary_row(&clean, &m), Ok(None));
        assert_eq!(decimal_text(0x01, false, &[0xff]).as_deref(), Some("-1"));
        assert_eq!(decimal_text(0x01, true, &[0xff]).as_deref(), Some("255"));
        assert_eq!(
            decimal_text(0x06, false, &[]),
            None,
            "the NULL type has no bytes"
        );
    }

    #[test]
    fn numbers_keep_their_type_and_other_styles_give_null() {
        let m = masks(MaskStyle::Redact);
        let cols = [
            column("payments", "card_int", "ci", 0x08),
            column("other", "amount", "amount", 0xf6),
            column("other", "ratio", "ratio", 0x05),
        ];
        let mut plan = RowMask::plan(&cols, &m, None);
        let out = plan
            .text_row(
                &row(&[
                    Some(b"5555555555554444"),
                    Some(b"4111111111111111.00"),
                    Some(b"4111111111111111"),
                ]),
                &m,
            )
            .unwrap_or_default()
            .unwrap_or_default();
        assert_eq!(
            text_row(&out, 3).unwrap_or_default(),
            vec![None, None, None]
        );
        assert!(
            plan.text_row(b"\x10short", &m).is_err(),
            "a malformed row is an error"
        );
    }
}
