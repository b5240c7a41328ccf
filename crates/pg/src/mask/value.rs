//! One value, in the wire format of its type: masking a sensitive one, detecting card numbers
//! in any one.
//!
//! A masked value must still be a valid value of its type, or drivers break (a binary `int8`
//! must stay eight bytes, a `jsonb` must stay JSON). So text types are masked as text, integer
//! and numeric card numbers become the number made of their last four digits, JSON becomes a
//! JSON string, and where no faithful value exists the value becomes NULL.

use gatehouse_core::masking::detector::{self, is_pan};
use gatehouse_core::masking::style::{last4_number, mask_value};
use gatehouse_core::masking::{ColumnMask, MaskStyle, TokenKey, mask_pans_with};

/// The shape of a value, from its type OID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ValueKind {
    /// text, varchar, bpchar, name, unknown, xml, char: the bytes are the text in both formats.
    Text,
    Json,
    /// jsonb: binary format is a version byte and the text.
    Jsonb,
    Int2,
    Int4,
    Int8,
    Numeric,
    /// Anything else (arrays, records, user types, floats, dates, bytea...).
    Other,
}

impl ValueKind {
    pub(crate) fn of(type_oid: u32) -> Self {
        match type_oid {
            25 | 1043 | 1042 | 19 | 705 | 142 | 18 => Self::Text,
            114 => Self::Json,
            3802 => Self::Jsonb,
            21 => Self::Int2,
            23 => Self::Int4,
            20 => Self::Int8,
            1700 => Self::Numeric,
            _ => Self::Other,
        }
    }
}

/// What becomes of one value.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Masked {
    Keep,
    Value(Vec<u8>),
    Null,
}

/// Masks a value of a sensitive column (or one computed from it). `Keep` when masking leaves
/// it as it is (`last4` of a value with at most four digits).
pub(crate) fn mask_sensitive(
    kind: ValueKind,
    binary: bool,
    mask: ColumnMask,
    key: &TokenKey,
    value: &[u8],
) -> Masked {
    match mask_sensitive_inner(kind, binary, mask, key, value) {
        Masked::Value(v) if v == value => Masked::Keep,
        other => other,
    }
}

fn mask_sensitive_inner(
    kind: ValueKind,
    binary: bool,
    mask: ColumnMask,
    key: &TokenKey,
    value: &[u8],
) -> Masked {
    let style = mask.effective_style();
    match (kind, binary) {
        (ValueKind::Text, _) | (ValueKind::Other, false) => {
            let mut out = Vec::with_capacity(value.len());
            mask_value(style, key, value, &mut out);
            Masked::Value(out)
        }
        (ValueKind::Json, _) => Masked::Value(json_string(style, key, value)),
        (ValueKind::Jsonb, false) => Masked::Value(json_string(style, key, value)),
        (ValueKind::Jsonb, true) => {
            let mut out = vec![1u8];
            out.extend(json_string(style, key, value.get(1..).unwrap_or_default()));
            Masked::Value(out)
        }
        (ValueKind::Int2 | ValueKind::Int4 | ValueKind::Int8 | ValueKind::Numeric, _) => {
            if style != MaskStyle::Last4 {
                return Masked::Null;
            }
            let digits = if binary {
                match integer_digits(kind, value) {
                    Some(d) => d,
                    None => return Masked::Null,
                }
            } else {
                integer_part(value).to_vec()
            };
            number(kind, binary, last4_number(&digits))
        }
        (ValueKind::Other, true) => Masked::Null,
    }
}

/// Masks the card numbers found in a value of any column; `count` grows by how many.
pub(crate) fn detect(
    kind: ValueKind,
    binary: bool,
    style: MaskStyle,
    key: &TokenKey,
    value: &[u8],
    count: &mut u64,
) -> Masked {
    match (kind, binary) {
        (ValueKind::Int2 | ValueKind::Int4, _) => Masked::Keep,
        (ValueKind::Int8 | ValueKind::Numeric, _) => {
            let digits = if binary {
                match integer_digits(kind, value) {
                    Some(d) => d,
                    None => return Masked::Keep,
                }
            } else {
                integer_part(value).to_vec()
            };
            if !is_pan(&digits) {
                return Masked::Keep;
            }
            *count += 1;
            if style == MaskStyle::Last4 {
                number(kind, binary, last4_number(&digits))
            } else {
                Masked::Null
            }
        }
        (ValueKind::Jsonb, true) => {
            match mask_pans_with(style, key, value.get(1..).unwrap_or_default()) {
                Some((text, n)) => {
                    *count += n;
                    let mut out = Vec::with_capacity(text.len() + 1);
                    out.push(value.first().copied().unwrap_or(1));
                    out.extend(text);
                    Masked::Value(out)
                }
                None => Masked::Keep,
            }
        }
        (ValueKind::Other, true) => {
            // A binary value of a type not decoded here (an array, a record): its text parts
            // are raw bytes. Card numbers in them are masked in place, keeping every length.
            match mask_pans_with(MaskStyle::Last4, key, value) {
                Some((text, n)) if text.len() == value.len() => {
                    *count += n;
                    Masked::Value(text)
                }
                Some((_, n)) => {
                    *count += n;
                    Masked::Null
                }
                None => Masked::Keep,
            }
        }
        _ => match mask_pans_with(style, key, value) {
            Some((text, n)) => {
                *count += n;
                Masked::Value(text)
            }
            None => Masked::Keep,
        },
    }
}

/// Whether the content detector could find anything in a value (cheap pre-check).
pub(crate) fn may_hold_pan(kind: ValueKind, binary: bool, value: &[u8]) -> bool {
    match (kind, binary) {
        (ValueKind::Int2 | ValueKind::Int4, _) => false,
        (ValueKind::Int8, true) => value.len() == 8,
        (ValueKind::Numeric, true) => value.len() > 8,
        _ => value.len() >= 13 && detector::has_digit(value),
    }
}

/// The digits before the decimal point of a number's text form (sign dropped).
fn integer_part(value: &[u8]) -> &[u8] {
    let end = value.iter().position(|b| *b == b'.').unwrap_or(value.len());
    let int = value.get(..end).unwrap_or_default();
    int.strip_prefix(b"-")
        .or_else(|| int.strip_prefix(b"+"))
        .unwrap_or(int)
}

/// The integer digits of a binary int2/int4/int8/numeric value.
fn integer_digits(kind: ValueKind, value: &[u8]) -> Option<Vec<u8>> {
    let n: i128 = match kind {
        ValueKind::Int2 => i128::from(i16::from_be_bytes(value.try_into().ok()?)),
        ValueKind::Int4 => i128::from(i32::from_be_bytes(value.try_into().ok()?)),
        ValueKind::Int8 => i128::from(i64::from_be_bytes(value.try_into().ok()?)),
        ValueKind::Numeric => return numeric_integer_digits(value),
        _ => return None,
    };
    Some(n.unsigned_abs().to_string().into_bytes())
}

/// The integer part of a binary numeric, as decimal digits (`None` for NaN/infinity or a
/// malformed value).
fn numeric_integer_digits(value: &[u8]) -> Option<Vec<u8>> {
    let word = |i: usize| -> Option<i16> {
        Some(i16::from_be_bytes([*value.get(i)?, *value.get(i + 1)?]))
    };
    let ndigits = usize::try_from(word(0)?).ok()?;
    let weight = word(2)?;
    let sign = u16::from_be_bytes([*value.get(4)?, *value.get(5)?]);
    if sign != 0 && sign != 0x4000 {
        return None;
    }
    if value.len() != 8 + 2 * ndigits {
        return None;
    }
    let mut out = String::new();
    for i in 0..=usize::try_from(weight).ok()? {
        let d = if i < ndigits { word(8 + 2 * i)? } else { 0 };
        if !(0..10_000).contains(&d) {
            return None;
        }
        if out.is_empty() {
            if d != 0 {
                out = d.to_string();
            }
        } else {
            out.push_str(&format!("{d:04}"));
        }
        if out.len() > 40 {
            // Far beyond any card number; stop before building huge strings.
            return Some(out.into_bytes());
        }
    }
    if out.is_empty() {
        out.push('0');
    }
    Some(out.into_bytes())
}

/// `n` (0..=9999) as a value of `kind`.
fn number(kind: ValueKind, binary: bool, n: i64) -> Masked {
    if !binary {
        return Masked::Value(n.to_string().into_bytes());
    }
    Masked::Value(match kind {
        ValueKind::Int2 => i16::try_from(n).unwrap_or(0).to_be_bytes().to_vec(),
        ValueKind::Int4 => i32::try_from(n).unwrap_or(0).to_be_bytes().to_vec(),
        ValueKind::Int8 => n.to_be_bytes().to_vec(),
        ValueKind::Numeric => {
            let d = i16::try_from(n).unwrap_or(0);
            if d == 0 {
                vec![0, 0, 0, 0, 0, 0, 0, 0]
            } else {
                let mut v = vec![0, 1, 0, 0, 0, 0, 0, 0];
                v.extend(d.to_be_bytes());
                v
            }
        }
        _ => return Masked::Null,
    })
}

/// The masked JSON text if it is still valid JSON (`last4` over string values), else the
/// masked text as a JSON string, so a `json`/`jsonb` value always stays valid JSON.
fn json_string(style: MaskStyle, key: &TokenKey, value: &[u8]) -> Vec<u8> {
    let mut masked = Vec::with_capacity(value.len());
    mask_value(style, key, value, &mut masked);
    if serde_json::from_slice::<serde::de::IgnoredAny>(&masked).is_ok() {
        return masked;
    }
    let text = String::from_utf8_lossy(&masked);
    serde_json::to_vec(&serde_json::Value::String(text.into_owned()))
        .unwrap_or_else(|_| b"\"[REDACTED]\"".to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> TokenKey {
        TokenKey::from_bytes([2; 32])
    }

    fn card(style: MaskStyle) -> ColumnMask {
        ColumnMask {
            style,
            verification_code: false,
            derived: false,
        }
    }

    #[test]
    fn integers_keep_their_type() {
        let v = 4111111111111234i64.to_be_bytes();
        assert_eq!(
            mask_sensitive(ValueKind::Int8, true, card(MaskStyle::Last4), &key(), &v),
            Masked::Value(1234i64.to_be_bytes().to_vec())
        );
        assert_eq!(
            mask_sensitive(
                ValueKind::Int8,
                false,
                card(MaskStyle::Last4),
                &key(),
                b"4111111111111234"
            ),
            Masked::Value(b"1234".to_vec())
        );
        assert_eq!(
            mask_sensitive(ValueKind::Int8, true, card(MaskStyle::Token), &key(), &v),
            Masked::Null
        );
        let mut n = 0;
        let pan = 4111111111111111i64.to_be_bytes();
        assert_eq!(
            detect(
                ValueKind::Int8,
                true,
                MaskStyle::Last4,
                &key(),
                &pan,
                &mut n
            ),
            Masked::Value(1111i64.to_be_bytes().to_vec())
        );
        assert_eq!(n, 1);
        assert_eq!(
            detect(
                ValueKind::Int8,
                true,
                MaskStyle::Last4,
                &key(),
                &42i64.to_be_bytes(),
                &mut n
            ),
            Masked::Keep
        );
    }

    #[test]
    fn numeric_binary_round_trip() {
        // 4111111111111111 = 4111 1111 1111 1111 in base 10000, weight 3.
        let mut v = vec![0, 4, 0, 3, 0, 0, 0, 0];
        for d in [4111i16, 1111, 1111, 1111] {
            v.extend(d.to_be_bytes());
        }
        assert_eq!(
            numeric_integer_digits(&v),
            Some(b"4111111111111111".to_vec())
        );
        let mut n = 0;
        assert_eq!(
            detect(
                ValueKind::Numeric,
                true,
                MaskStyle::Last4,
                &key(),
                &v,
                &mut n
            ),
            Masked::Value(vec![0, 1, 0, 0, 0, 0, 0, 0, 0x04, 0x57])
        );
        assert_eq!(
            numeric_integer_digits(&[0, 0, 0, 0, 0xc0, 0, 0, 0]),
            None,
            "NaN"
        );
        assert_eq!(numeric_integer_digits(&[0, 5, 0]), None, "truncated");
    }

    #[test]
    fn json_stays_json() {
        let out = mask_sensitive(
            ValueKind::Jsonb,
            true,
            card(MaskStyle::Last4),
            &key(),
            b"\x01\"4111111111111111\"",
        );
        assert_eq!(out, Masked::Value(b"\x01\"************1111\"".to_vec()));
        let out = mask_sensitive(
            ValueKind::Json,
            false,
            card(MaskStyle::Last4),
            &key(),
            b"{\"a\": 12345.5}",
        );
        assert_eq!(out, Masked::Value(b"\"{\\\"a\\\": **345.5}\"".to_vec()));
        let out = mask_sensitive(
            ValueKind::Json,
            false,
            card(MaskStyle::Redact),
            &key(),
            b"{}",
        );
        assert_eq!(out, Masked::Value(b"\"[REDACTED]\"".to_vec()));
    }

    #[test]
    fn other_binary_masks_in_place() {
        let mut raw = vec![0, 0, 0, 16];
        raw.extend(b"4111111111111111");
        let mut n = 0;
        match detect(
            ValueKind::Other,
            true,
            MaskStyle::Token,
            &key(),
            &raw,
            &mut n,
        ) {
            Masked::Value(v) => {
                assert_eq!(v.len(), raw.len());
                assert!(v.ends_with(b"************1111"));
            }
            other => panic!("{other:?}"),
        }
    }
}
