//! The card-number (PAN) content detector.
//!
//! Column rules catch what the catalog knows is a card number; this catches the rest: a PAN in
//! a free-text note, an error message, a notification, a COPY row, a query literal. It must be
//! cheap enough to run over every text byte a client receives, so the common case — text with
//! no digits at all — is a word-at-a-time scan for an ASCII digit (eight bytes per step, no
//! per-byte branch), and only digit runs are looked at closely.
//!
//! A PAN here is 13 to 19 digits, written contiguously or in groups separated by a single space
//! or dash (`4111 1111 1111 1111`, `3782-822463-10005`), that passes the Luhn check and starts
//! with a known card-brand prefix. A match is made of whole digit groups: `41111111111111110`
//! (17 digits, one group) is one number, not a PAN followed by a zero. A longer run of groups
//! (`4111 1111 1111 1111 2024`) is searched for its longest PAN window at each group.

/// A card number found in text: the byte range from its first to its last digit (separators
/// inside it included).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PanMatch {
    pub start: usize,
    pub end: usize,
}

const MIN_DIGITS: usize = 13;
const MAX_DIGITS: usize = 19;

const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
const HIGH: u64 = 0x8080_8080_8080_8080;
/// Adding this to a 7-bit byte sets its high bit iff the byte is >= b'0'.
const GE_ZERO: u64 = 0x5050_5050_5050_5050;
/// Adding this to a 7-bit byte sets its high bit iff the byte is > b'9'.
const GT_NINE: u64 = 0x4646_4646_4646_4646;

/// The index of the first ASCII digit in `text` at or after `from`.
#[inline]
pub fn next_digit(text: &[u8], from: usize) -> Option<usize> {
    let rest = text.get(from..)?;
    let mut chunks = rest.chunks_exact(8);
    let mut base = from;
    for chunk in chunks.by_ref() {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let v = u64::from_le_bytes(word);
        let low = v & LOW7;
        // High bit of each byte: >= '0', not > '9', and ASCII (bytes >= 0x80 are never digits).
        let digits = low.wrapping_add(GE_ZERO) & !low.wrapping_add(GT_NINE) & !v & HIGH;
        if digits != 0 {
            return Some(base + (digits.trailing_zeros() / 8) as usize);
        }
        base += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(u8::is_ascii_digit)
        .map(|i| base + i)
}

/// Whether `text` holds any ASCII digit (the fast "nothing to do" test).
#[inline]
pub fn has_digit(text: &[u8]) -> bool {
    next_digit(text, 0).is_some()
}

/// Calls `found` for every PAN in `text`, in order, non-overlapping.
pub fn find_pans(text: &[u8], mut found: impl FnMut(PanMatch)) {
    let mut i = 0;
    // Digit groups of the current run: (start, end) byte offsets. Reused across runs.
    let mut groups: Vec<(usize, usize)> = Vec::new();
    while let Some(start) = next_digit(text, i) {
        groups.clear();
        let mut j = start;
        loop {
            let gstart = j;
            while text.get(j).is_some_and(u8::is_ascii_digit) {
                j += 1;
            }
            groups.push((gstart, j));
            // A single separator followed by a digit continues the run.
            match (text.get(j), text.get(j + 1)) {
                (Some(b' ' | b'-'), Some(d)) if d.is_ascii_digit() => j += 1,
                _ => break,
            }
        }
        let run_end = j;
        // A digit run glued to letters or underscores on the left is part of an identifier or
        // a token (`tok_...`, `id4111...`): still scanned, since an adversary controls that.
        scan_groups(text, &groups, &mut found);
        i = run_end.max(start + 1);
    }
}

/// Finds PAN windows among consecutive digit groups of one run.
fn scan_groups(text: &[u8], groups: &[(usize, usize)], found: &mut impl FnMut(PanMatch)) {
    let total: usize = groups.iter().map(|(s, e)| e - s).sum();
    if total < MIN_DIGITS {
        return;
    }
    let mut g = 0;
    while g < groups.len() {
        let mut digits = 0;
        let mut best: Option<usize> = None;
        for (k, &(s, e)) in groups.iter().enumerate().skip(g) {
            digits += e - s;
            if digits > MAX_DIGITS {
                break;
            }
            if digits >= MIN_DIGITS && text.get(groups_span(groups, g, k)).is_some_and(is_pan) {
                best = Some(k);
            }
        }
        match best {
            Some(k) => {
                let (start, _) = groups.get(g).copied().unwrap_or_default();
                let (_, end) = groups.get(k).copied().unwrap_or_default();
                found(PanMatch { start, end });
                g = k + 1;
            }
            None => g += 1,
        }
    }
}

/// The byte range covering groups `from..=to`.
fn groups_span(groups: &[(usize, usize)], from: usize, to: usize) -> std::ops::Range<usize> {
    let start = groups.get(from).map_or(0, |g| g.0);
    let end = groups.get(to).map_or(start, |g| g.1);
    start..end
}

/// Whether `span` (digits with optional separators) is a card number: 13–19 digits, a known
/// brand prefix and a valid Luhn check digit.
pub fn is_pan(span: &[u8]) -> bool {
    let mut digits = [0u8; MAX_DIGITS];
    let mut n = 0;
    for &b in span {
        if b.is_ascii_digit() {
            match digits.get_mut(n) {
                Some(d) => *d = b - b'0',
                None => return false,
            }
            n += 1;
        }
    }
    let digits = digits.get(..n).unwrap_or_default();
    (MIN_DIGITS..=MAX_DIGITS).contains(&n) && known_brand(digits) && luhn(digits)
}

/// The Luhn (mod 10) check over digit values.
pub fn luhn(digits: &[u8]) -> bool {
    let mut sum = 0u32;
    for (i, &d) in digits.iter().rev().enumerate() {
        let mut d = u32::from(d);
        if i % 2 == 1 {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
    }
    sum.is_multiple_of(10)
}

/// Issuer identification prefixes of the card brands in use (Visa, Mastercard, American
/// Express, Discover, JCB, Diners Club, UnionPay, Maestro, RuPay, Mir). Deliberately broad:
/// a false positive masks a number that was not a card, a false negative leaks one.
fn known_brand(digits: &[u8]) -> bool {
    let prefix = |n: usize| -> u32 {
        digits
            .iter()
            .take(n)
            .fold(0u32, |acc, &d| acc * 10 + u32::from(d))
    };
    match digits.first() {
        Some(4) => true,                                           // Visa
        Some(5) => true, // Mastercard 51–55, Maestro 50, 56–59
        Some(6) => true, // Discover, UnionPay, Maestro, RuPay
        Some(3) => !matches!(prefix(2), 31..=33), // Amex, JCB, Diners
        Some(2) => matches!(prefix(4), 2200..=2204 | 2221..=2720), // Mir, Mastercard 2-series
        Some(8) => matches!(prefix(2), 81 | 82), // UnionPay 81, RuPay 82
        Some(1) => digits.len() == 15, // UATP
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pans(text: &str) -> Vec<&str> {
        let mut out = Vec::new();
        find_pans(text.as_bytes(), |m| {
            out.push(text.get(m.start..m.end).unwrap_or_default())
        });
        out
    }

    #[test]
    fn finds_brands_and_lengths() {
        for pan in [
            "4111111111111111",
            "4222222222222",
            "5555555555554444",
            "2223003122003222",
            "378282246310005",
            "6011111111111117",
            "3530111333300000",
            "30569309025904",
            "6200000000000005",
            "4000000000000000006",
        ] {
            assert_eq!(pans(&format!("card {pan}.")), vec![pan], "{pan}");
        }
    }

    #[test]
    fn separators_and_windows() {
        assert_eq!(pans("x 4111 1111 1111 1111 y"), vec!["4111 1111 1111 1111"]);
        assert_eq!(pans("4111-1111-1111-1111"), vec!["4111-1111-1111-1111"]);
        assert_eq!(pans("3782-822463-10005"), vec!["3782-822463-10005"]);
        assert_eq!(
            pans("4111 1111 1111 1111 2024"),
            vec!["4111 1111 1111 1111"]
        );
        assert_eq!(pans("12 4111 1111 1111 1111"), vec!["4111 1111 1111 1111"]);
        assert_eq!(
            pans("4111111111111111,5555555555554444"),
            vec!["4111111111111111", "5555555555554444"]
        );
        assert_eq!(pans("tok_4111111111111111"), vec!["4111111111111111"]);
    }

    #[test]
    fn leaves_non_pans() {
        assert!(pans("4111111111111112").is_empty(), "Luhn fails");
        assert!(
            pans("41111111111111110").is_empty(),
            "17 digits, Luhn fails as one number"
        );
        assert!(pans("9111111111111117").is_empty(), "unknown brand");
        assert!(pans("7111111111111119").is_empty(), "unknown brand");
        assert!(pans("2024-11-22 10:00, order 123456").is_empty());
        assert!(
            pans("4111  1111 1111 1111").is_empty(),
            "double space splits the run"
        );
        assert!(pans("").is_empty());
    }

    #[test]
    fn digit_search_handles_utf8_and_tails() {
        let text = "ééééééé€€€€ abcdefghijklmnop 7";
        assert_eq!(next_digit(text.as_bytes(), 0), Some(text.len() - 1));
        assert_eq!(next_digit(b"\xff\xfe\xb0\xb9\xc0\xc9\x80\x80abc", 0), None);
        for n in 0..20 {
            let mut s = vec![b'a'; n];
            s.push(b'5');
            assert_eq!(next_digit(&s, 0), Some(n));
        }
    }
}
