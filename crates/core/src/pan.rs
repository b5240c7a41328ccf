//! Card numbers (PANs) in free text: detection by the Luhn check, masking to the last four.
//!
//! This is the minimum the audit needs before anything is written (PCI DSS 3.5.1): a digit
//! run of 13 to 19 digits (single spaces or dashes allowed between groups) that passes Luhn is
//! replaced by `*` except its last four digits. The full detector with brand prefixes and
//! the masking styles come with the masking issue.

/// Returns the text with every Luhn-valid 13–19 digit run masked to its last four digits;
/// borrows when nothing needs masking (the common case costs one scan, no allocation).
pub fn mask_pans(text: &str) -> std::borrow::Cow<'_, str> {
    let bytes = text.as_bytes();
    let mut out: Option<Vec<u8>> = None;
    let mut i = 0;
    while i < bytes.len() {
        let Some(off) = bytes
            .get(i..)
            .and_then(|rest| rest.iter().position(u8::is_ascii_digit))
        else {
            break;
        };
        let start = i + off;
        // Extend over digits with single separators between them.
        let mut end = start;
        let mut digits = 0usize;
        let mut j = start;
        while let Some(&b) = bytes.get(j) {
            if b.is_ascii_digit() {
                digits += 1;
                j += 1;
                end = j;
            } else if (b == b' ' || b == b'-')
                && bytes.get(j + 1).is_some_and(u8::is_ascii_digit)
                && j > start
            {
                j += 1;
            } else {
                break;
            }
        }
        let preceded_by_digit = start > 0 && bytes.get(start - 1).is_some_and(u8::is_ascii_digit);
        if !preceded_by_digit && (13..=19).contains(&digits) {
            let run = bytes.get(start..end).unwrap_or_default();
            if luhn_valid(run) {
                let buf = out.get_or_insert_with(|| bytes.to_vec());
                let mut seen = 0usize;
                for k in start..end {
                    if let Some(b) = buf.get_mut(k)
                        && b.is_ascii_digit()
                    {
                        seen += 1;
                        if seen + 4 <= digits {
                            *b = b'*';
                        }
                    }
                }
            }
        }
        i = end.max(start + 1);
    }
    match out {
        // Only ASCII digits were replaced by ASCII '*', so the bytes stay valid UTF-8.
        Some(buf) => std::borrow::Cow::Owned(String::from_utf8_lossy(&buf).into_owned()),
        None => std::borrow::Cow::Borrowed(text),
    }
}

/// Luhn check over the digits of `run` (separators ignored).
pub fn luhn_valid(run: &[u8]) -> bool {
    let mut sum = 0u32;
    let mut double = false;
    let mut n = 0;
    for &b in run.iter().rev() {
        if !b.is_ascii_digit() {
            continue;
        }
        let mut d = u32::from(b - b'0');
        if double {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
        double = !double;
        n += 1;
    }
    n > 0 && sum.is_multiple_of(10)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_luhn_valid_runs_only() {
        assert_eq!(
            mask_pans("card 4111111111111111 ok"),
            "card ************1111 ok"
        );
        assert_eq!(mask_pans("4111 1111 1111 1111"), "**** **** **** 1111");
        assert_eq!(mask_pans("4111-1111-1111-1111"), "****-****-****-1111");
        // Not Luhn-valid: untouched.
        assert_eq!(mask_pans("4111111111111112"), "4111111111111112");
        // Too short.
        assert_eq!(mask_pans("id 411111111111"), "id 411111111111");
        assert!(matches!(
            mask_pans("nothing here"),
            std::borrow::Cow::Borrowed(_)
        ));
    }

    #[test]
    fn masks_inside_sql_literals() {
        assert_eq!(
            mask_pans("SELECT * FROM p WHERE card='5555555555554444'"),
            "SELECT * FROM p WHERE card='************4444'"
        );
    }
}
