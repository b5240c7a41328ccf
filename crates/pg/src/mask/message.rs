//! Rewriting the backend messages that carry values or text: DataRow, ErrorResponse /
//! NoticeResponse, NotificationResponse.
//!
//! Each function returns `None` when nothing changed, so the caller forwards the original
//! bytes; otherwise the whole message, with its length recomputed.

use gatehouse_core::masking::{MaskStyle, TokenKey, mask_pans_with};

use super::value::{self, Masked};
use gatehouse_core::masking::MaskReason;

use super::ResultPlan;

fn i32_at(buf: &[u8], at: usize) -> Option<i32> {
    Some(i32::from_be_bytes(buf.get(at..at + 4)?.try_into().ok()?))
}

/// Writes the message length (bytes 1..5) of a rebuilt message.
fn finish(mut out: Vec<u8>) -> Option<Vec<u8>> {
    let len = i32::try_from(out.len().checked_sub(1)?).ok()?;
    out.get_mut(1..5)?.copy_from_slice(&len.to_be_bytes());
    Some(out)
}

/// Masks one DataRow (`msg`: the whole message) under `plan`. `None` when unchanged or when
/// the message is malformed (then the caller refuses to forward it).
pub(crate) fn data_row(
    msg: &[u8],
    plan: &mut ResultPlan,
    key: &TokenKey,
) -> Result<Option<Vec<u8>>, ()> {
    let count = u16::from_be_bytes(msg.get(5..7).ok_or(())?.try_into().map_err(|_| ())?);
    let mut at = 7usize;
    let mut out: Option<Vec<u8>> = None;
    let mut copied = 0usize;
    for i in 0..usize::from(count) {
        let len = i32_at(msg, at).ok_or(())?;
        let start = at + 4;
        let end = if len < 0 {
            start
        } else {
            start
                .checked_add(usize::try_from(len).map_err(|_| ())?)
                .ok_or(())?
        };
        let v = msg.get(start..end).ok_or(())?;
        let outcome = if len < 0 {
            // A value computed from a masked column is masked whole, NULL or not: whether
            // it is NULL would otherwise answer a test on the original.
            match plan.fields.get(i).and_then(|f| f.mask.map(|m| (f, m))) {
                Some((f, m)) if m.derived => value::mask_sensitive(f.kind, f.binary, m, key, b""),
                _ => Masked::Keep,
            }
        } else {
            mask_field(plan, i, v, key)
        };
        if outcome != Masked::Keep {
            let buf = out.get_or_insert_with(|| Vec::with_capacity(msg.len() + 16));
            buf.extend_from_slice(msg.get(copied..at).ok_or(())?);
            match outcome {
                Masked::Value(v) => {
                    let n = i32::try_from(v.len()).map_err(|_| ())?;
                    buf.extend_from_slice(&n.to_be_bytes());
                    buf.extend_from_slice(&v);
                }
                _ => buf.extend_from_slice(&(-1i32).to_be_bytes()),
            }
            copied = end;
        }
        at = end;
    }
    if at != msg.len() {
        return Err(());
    }
    match out {
        None => Ok(None),
        Some(mut buf) => {
            buf.extend_from_slice(msg.get(copied..).ok_or(())?);
            finish(buf).map(Some).ok_or(())
        }
    }
}

/// Masks one non-NULL value of column `i`.
fn mask_field(plan: &mut ResultPlan, i: usize, v: &[u8], key: &TokenKey) -> Masked {
    let Some(field) = plan.fields.get(i) else {
        // More values than described columns: mask what may be a card number.
        return match plan.detect {
            Some(style) => value::detect(value::ValueKind::Other, false, style, key, v, &mut 0),
            None => Masked::Keep,
        };
    };
    if let Some(mask) = field.mask {
        let reason = if mask.verification_code {
            MaskReason::VerificationCode
        } else {
            MaskReason::Column
        };
        let out = value::mask_sensitive(field.kind, field.binary, mask, key, v);
        if out != Masked::Keep
            && let Some(c) = plan.counts.get_mut(i)
        {
            c.add(reason, 1);
        }
        return out;
    }
    let Some(style) = plan.detect else {
        return Masked::Keep;
    };
    if !value::may_hold_pan(field.kind, field.binary, v) {
        return Masked::Keep;
    }
    let mut found = 0;
    let out = value::detect(field.kind, field.binary, style, key, v, &mut found);
    if let Some(c) = plan.counts.get_mut(i) {
        c.add(MaskReason::Pan, found);
    }
    out
}

/// Masks the card numbers in the fields of an ErrorResponse or NoticeResponse (a unique
/// violation's detail, a cast error quoting the value). Returns the message and the count.
pub(crate) fn error_or_notice(
    msg: &[u8],
    style: MaskStyle,
    key: &TokenKey,
) -> Result<Option<(Vec<u8>, u64)>, ()> {
    let mut at = 5usize;
    let mut out: Option<Vec<u8>> = None;
    let mut copied = 0usize;
    let mut total = 0u64;
    loop {
        let code = *msg.get(at).ok_or(())?;
        if code == 0 {
            at += 1;
            break;
        }
        let start = at + 1;
        let nul = memchr::memchr(0, msg.get(start..).ok_or(())?).ok_or(())?;
        let end = start + nul;
        let text = msg.get(start..end).ok_or(())?;
        // Every field, Severity and SQLSTATE too: they should never hold data, but what the
        // server sends is not trusted to be well-behaved (found by the fuzz target).
        if let Some((masked, n)) = mask_pans_with(style, key, text) {
            let buf = out.get_or_insert_with(|| Vec::with_capacity(msg.len() + 16));
            buf.extend_from_slice(msg.get(copied..start).ok_or(())?);
            buf.extend_from_slice(&masked);
            copied = end;
            total += n;
        }
        at = end + 1;
    }
    if at != msg.len() {
        return Err(());
    }
    match out {
        None => Ok(None),
        Some(mut buf) => {
            buf.extend_from_slice(msg.get(copied..).ok_or(())?);
            finish(buf).map(|b| Some((b, total))).ok_or(())
        }
    }
}

/// SQLSTATEs whose message text is fixed by the server, never built from values.
const FIXED_TEXT_STATES: &[&[u8]] = &[
    b"42501", b"57014", b"25P02", b"40001", b"40P01", b"55P03", b"57P01", b"53100", b"53200",
    b"53300", b"54000",
];

/// The ErrorResponse/NoticeResponse `msg` without the text that may quote values: for a
/// statement that reads or writes masked data, whose errors may carry a masked value in any
/// shape (a cast's invalid input, a failing row, a unique key, a RAISE). Severity, SQLSTATE,
/// position and the names of the objects involved are kept; the message is replaced (unless
/// the SQLSTATE's text is fixed) and detail, hint, context and internal query are dropped.
/// `Err` when malformed.
pub(crate) fn withhold(msg: &[u8]) -> Result<Vec<u8>, ()> {
    let tag = *msg.first().ok_or(())?;
    let mut fields: Vec<(u8, &[u8])> = Vec::new();
    let mut at = 5usize;
    loop {
        let code = *msg.get(at).ok_or(())?;
        if code == 0 {
            at += 1;
            break;
        }
        let start = at + 1;
        let nul = memchr::memchr(0, msg.get(start..).ok_or(())?).ok_or(())?;
        fields.push((code, msg.get(start..start + nul).ok_or(())?));
        at = start + nul + 1;
    }
    if at != msg.len() {
        return Err(());
    }
    let state = fields
        .iter()
        .find(|(c, _)| *c == b'C')
        .map(|(_, v)| *v)
        .unwrap_or(b"XX000");
    let fixed = FIXED_TEXT_STATES.contains(&state);
    let replacement = format!(
        "{} (SQLSTATE {}): the server's message is withheld by Gatehouse because the statement \
         involves masked data",
        if tag == b'N' {
            "notice"
        } else {
            "statement failed"
        },
        String::from_utf8_lossy(state)
    );
    let mut out = vec![tag, 0, 0, 0, 0];
    for (code, value) in fields {
        let keep: Option<&[u8]> = match code {
            b'S' | b'V' | b'C' | b'P' | b's' | b't' | b'c' | b'd' | b'n' | b'F' | b'L' | b'R' => {
                Some(value)
            }
            b'M' if fixed => Some(value),
            b'M' => Some(replacement.as_bytes()),
            _ => None,
        };
        if let Some(v) = keep {
            out.push(code);
            out.extend_from_slice(v);
            out.push(0);
        }
    }
    out.push(0);
    finish(out).ok_or(())
}

/// Masks the card numbers in a NotificationResponse's channel and payload.
pub(crate) fn notification(
    msg: &[u8],
    style: MaskStyle,
    key: &TokenKey,
) -> Result<Option<(Vec<u8>, u64)>, ()> {
    let mut parts: Vec<&[u8]> = Vec::with_capacity(2);
    let mut at = 9usize;
    for _ in 0..2 {
        let rest = msg.get(at..).ok_or(())?;
        let nul = memchr::memchr(0, rest).ok_or(())?;
        parts.push(rest.get(..nul).ok_or(())?);
        at += nul + 1;
    }
    if at != msg.len() {
        return Err(());
    }
    let mut total = 0;
    let mut changed = false;
    let mut out = Vec::with_capacity(msg.len() + 16);
    out.extend_from_slice(msg.get(..9).ok_or(())?);
    for p in parts {
        match mask_pans_with(style, key, p) {
            Some((masked, n)) => {
                changed = true;
                total += n;
                out.extend_from_slice(&masked);
            }
            None => out.extend_from_slice(p),
        }
        out.push(0);
    }
    if !changed {
        return Ok(None);
    }
    finish(out).map(|b| Some((b, total))).ok_or(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mask::{FieldPlan, ValueKind};
    use gatehouse_core::masking::ColumnMask;

    fn row(values: &[Option<&[u8]>]) -> Vec<u8> {
        let mut body = (values.len() as u16).to_be_bytes().to_vec();
        for v in values {
            match v {
                Some(b) => {
                    body.extend((b.len() as i32).to_be_bytes());
                    body.extend(*b);
                }
                None => body.extend((-1i32).to_be_bytes()),
            }
        }
        let mut m = vec![b'D'];
        m.extend(((body.len() + 4) as i32).to_be_bytes());
        m.extend(body);
        m
    }

    fn plan(masks: &[Option<ColumnMask>], detect: Option<MaskStyle>) -> ResultPlan {
        ResultPlan {
            fields: masks
                .iter()
                .enumerate()
                .map(|(i, m)| FieldPlan {
                    name: format!("c{i}"),
                    kind: ValueKind::Text,
                    binary: false,
                    mask: *m,
                })
                .collect(),
            detect,
            counts: vec![gatehouse_core::masking::ReasonCounts::default(); masks.len()],
        }
    }

    /// Found by `fuzz/fuzz_targets/mask_server_messages.rs`: a card number in the Severity
    /// field (a misbehaving server) was passed on because Severity was assumed to hold none.
    #[test]
    fn error_fields_are_masked_whatever_their_code() {
        let key = TokenKey::from_bytes([0; 32]);
        let msg = b"E\x00\x00\x00\x1eSERROQ\xf8M4111111111111111 x\x00\x00";
        let (out, n) = error_or_notice(msg, MaskStyle::Last4, &key)
            .ok()
            .flatten()
            .unwrap_or_default();
        assert_eq!(n, 1);
        assert_eq!(
            out,
            b"E\x00\x00\x00\x20SERROQ\xf8M************1111 x\x00\x00".to_vec()
        );
    }

    #[test]
    fn data_row_rewrites_only_what_it_must() {
        let key = TokenKey::from_bytes([0; 32]);
        let card = Some(ColumnMask {
            style: MaskStyle::Last4,
            verification_code: false,
            derived: false,
        });
        let msg = row(&[
            Some(b"4111111111111111"),
            None,
            Some(b"note 5555555555554444"),
            Some(b"x"),
        ]);
        let mut p = plan(&[card, None, None, None], Some(MaskStyle::Last4));
        let out = data_row(&msg, &mut p, &key)
            .ok()
            .flatten()
            .unwrap_or_default();
        assert_eq!(
            out,
            row(&[
                Some(b"************1111"),
                None,
                Some(b"note ************4444"),
                Some(b"x")
            ])
        );
        let counts: Vec<[u64; 2]> = p
            .counts
            .iter()
            .map(|c| [c.get(MaskReason::Column), c.get(MaskReason::Pan)])
            .collect();
        assert_eq!(counts, vec![[1, 0], [0, 0], [0, 1], [0, 0]]);
        let clean = row(&[Some(b"12"), Some(b"abc")]);
        let mut p = plan(&[None, None], Some(MaskStyle::Last4));
        assert_eq!(data_row(&clean, &mut p, &key), Ok(None));
        // Truncated or overlong: an error, never a panic.
        assert!(data_row(&msg[..msg.len() - 3], &mut p, &key).is_err());
    }

    #[test]
    fn errors_and_notifications() {
        let key = TokenKey::from_bytes([0; 32]);
        let e = crate::messages::backend::error_response(
            crate::messages::backend::Severity::Error,
            "23505",
            "duplicate key",
            Some("Key (card)=(4111111111111111) already exists."),
        );
        let (out, n) = error_or_notice(&e, MaskStyle::Last4, &key)
            .ok()
            .flatten()
            .unwrap_or_default();
        assert_eq!(n, 1);
        assert!(String::from_utf8_lossy(&out).contains("(************1111)"));
        let mut a = vec![b'A', 0, 0, 0, 0, 0, 0, 0, 7];
        a.extend(b"ch\0paid 4111111111111111\0");
        let len = (a.len() - 1) as i32;
        a[1..5].copy_from_slice(&len.to_be_bytes());
        let (out, n) = notification(&a, MaskStyle::Last4, &key)
            .ok()
            .flatten()
            .unwrap_or_default();
        assert_eq!(n, 1);
        assert!(out.ends_with(b"ch\0paid ************1111\0"));
        assert_eq!(
            i32::from_be_bytes(out[1..5].try_into().unwrap_or_default()) as usize,
            out.len() - 1
        );
    }
}
