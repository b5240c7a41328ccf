//! Properties of the card-number (PAN) detector and of masking detected numbers.
//!
//! A PAN is 13–19 digits, Luhn-valid, with a known brand prefix, written contiguously or in
//! digit groups separated by a single space or dash, and always made of whole digit groups.
//! These properties generate such numbers (and near misses) and check that the detector finds
//! exactly them and that masking leaves nothing recoverable.

// Test code: panicking on the unexpected is the point.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use gatehouse_core::masking::detector::{PanMatch, find_pans, is_pan, luhn};
use gatehouse_core::masking::{MaskStyle, TokenKey, mask_pans_with};
use proptest::prelude::*;

const STYLES: [MaskStyle; 3] = [MaskStyle::Last4, MaskStyle::Redact, MaskStyle::Token];
const TOKEN_ALPHABET: &str = "bcdfghjklmnpqrst";

fn key() -> TokenKey {
    TokenKey::from_bytes([0x5a; 32])
}

// ---------------------------------------------------------------------------------------------
// Reference implementations (independent of the crate under test)
// ---------------------------------------------------------------------------------------------

/// Luhn over ASCII digits.
fn luhn_ascii(digits: &[u8]) -> bool {
    let mut sum = 0u32;
    for (i, &b) in digits.iter().rev().enumerate() {
        let mut d = u32::from(b - b'0');
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

/// The check digit that makes `payload` (ASCII digits) Luhn-valid when appended.
fn check_digit(payload: &[u8]) -> u8 {
    for d in b'0'..=b'9' {
        let mut v = payload.to_vec();
        v.push(d);
        if luhn_ascii(&v) {
            return d;
        }
    }
    unreachable!("some check digit always exists")
}

/// `text` with every ' ' and '-' removed.
fn strip_separators(text: &[u8]) -> Vec<u8> {
    text.iter()
        .copied()
        .filter(|b| *b != b' ' && *b != b'-')
        .collect()
}

/// Whether `text` (separators stripped) holds any run of 13–19 consecutive digits that is
/// Luhn-valid (whatever its prefix).
fn has_luhn_valid_sequence(text: &[u8]) -> bool {
    let t = strip_separators(text);
    let mut i = 0;
    while i < t.len() {
        if !t[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        let start = i;
        while i < t.len() && t[i].is_ascii_digit() {
            i += 1;
        }
        let run = &t[start..i];
        for a in 0..run.len() {
            for len in 13..=19 {
                if a + len <= run.len() && luhn_ascii(&run[a..a + len]) {
                    return true;
                }
            }
        }
    }
    false
}

/// Every digit but the last four replaced by '*', everything else kept.
fn last4(span: &[u8]) -> Vec<u8> {
    let n = span.iter().filter(|b| b.is_ascii_digit()).count();
    let mut seen = 0;
    span.iter()
        .map(|&b| {
            if b.is_ascii_digit() {
                seen += 1;
                if seen + 4 <= n { b'*' } else { b }
            } else {
                b
            }
        })
        .collect()
}

fn digits_of(text: &[u8]) -> Vec<u8> {
    text.iter().copied().filter(u8::is_ascii_digit).collect()
}

fn matches(text: &[u8]) -> Vec<PanMatch> {
    let mut out = Vec::new();
    find_pans(text, |m| out.push(m));
    out
}

/// Whether `t` is `tok_` followed by exactly 16 characters of the token alphabet.
fn is_token(t: &[u8]) -> bool {
    t.len() == 20
        && t.starts_with(b"tok_")
        && t[4..].iter().all(|b| TOKEN_ALPHABET.as_bytes().contains(b))
}

// ---------------------------------------------------------------------------------------------
// Generators
// ---------------------------------------------------------------------------------------------

/// A known brand prefix (Visa, Mastercard 51–55 / Maestro 50, 56–59, Mastercard 2221–2720,
/// Mir 2200–2204, Amex/Diners/JCB 34/37/30/35/36/38/39, Discover/UnionPay/Maestro 6,
/// UnionPay/RuPay 81/82).
fn brand_prefix() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("4".to_owned()),
        (50u32..=59).prop_map(|p| p.to_string()),
        (2221u32..=2720).prop_map(|p| p.to_string()),
        (2200u32..=2204).prop_map(|p| p.to_string()),
        prop::sample::select(vec!["34", "37", "30", "35", "36", "38", "39"])
            .prop_map(str::to_owned),
        Just("6".to_owned()),
        prop::sample::select(vec!["81", "82"]).prop_map(str::to_owned),
    ]
}

/// A prefix no brand uses (first digit 0/7/9, 31–33, 8 but not 81/82, 2-series outside the
/// Mir and Mastercard ranges).
fn unknown_prefix() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec!["0", "7", "9"]).prop_map(str::to_owned),
        (31u32..=33).prop_map(|p| p.to_string()),
        prop::sample::select(vec!["80", "83", "84", "85", "86", "87", "88", "89"])
            .prop_map(str::to_owned),
        (2000u32..=2199).prop_map(|p| p.to_string()),
        (2205u32..=2220).prop_map(|p| p.to_string()),
        (2721u32..=2999).prop_map(|p| p.to_string()),
    ]
}

/// A Luhn-valid digit string of 13–19 digits starting with a prefix from `prefix`.
fn luhn_number(prefix: impl Strategy<Value = String>) -> impl Strategy<Value = Vec<u8>> {
    (prefix, 13usize..=19, prop::collection::vec(0u8..10, 19)).prop_map(|(p, len, body)| {
        let mut digits: Vec<u8> = p.into_bytes();
        let mut body = body.into_iter();
        while digits.len() < len - 1 {
            digits.push(b'0' + body.next().unwrap_or(0));
        }
        let c = check_digit(&digits);
        digits.push(c);
        digits
    })
}

/// A valid PAN, contiguous or split into digit groups with single spaces or dashes.
fn written_pan() -> impl Strategy<Value = (Vec<u8>, Vec<u8>)> {
    (
        luhn_number(brand_prefix()),
        prop::collection::vec((any::<bool>(), prop::sample::select(vec![b' ', b'-'])), 18),
        any::<bool>(),
    )
        .prop_map(|(digits, cuts, grouped)| {
            let mut span = Vec::new();
            for (i, d) in digits.iter().enumerate() {
                if grouped && i > 0 {
                    let (cut, sep) = cuts[i - 1];
                    if cut {
                        span.push(sep);
                    }
                }
                span.push(*d);
            }
            (digits, span)
        })
}

/// Text without any ASCII digit (any other Unicode, spaces and dashes included).
fn noise() -> impl Strategy<Value = String> {
    "[^0-9]{0,24}"
}

/// A non-empty gap between two numbers that no separator rule can bridge: it holds at least one
/// character that is neither a digit, a space nor a dash.
fn gap() -> impl Strategy<Value = String> {
    ("[^0-9]{0,8}", "[^0-9 \\-]", "[^0-9]{0,8}").prop_map(|(a, b, c)| format!("{a}{b}{c}"))
}

// ---------------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// The reference Luhn and the crate's agree on every digit string.
    #[test]
    fn luhn_agrees_with_reference(digits in prop::collection::vec(0u8..10, 0..40)) {
        let ascii: Vec<u8> = digits.iter().map(|d| b'0' + d).collect();
        prop_assert_eq!(luhn(&digits), luhn_ascii(&ascii));
    }

    /// Every valid PAN, however written, is found exactly where it is.
    #[test]
    fn every_valid_pan_in_text_is_found(
        (digits, span) in written_pan(),
        before in noise(),
        after in noise(),
    ) {
        prop_assert!(is_pan(&span), "is_pan({:?})", String::from_utf8_lossy(&span));
        prop_assert!(is_pan(&digits));
        let text = [before.as_bytes(), &span, after.as_bytes()].concat();
        let found = matches(&text);
        prop_assert_eq!(
            found,
            vec![PanMatch { start: before.len(), end: before.len() + span.len() }],
            "in {:?}",
            String::from_utf8_lossy(&text)
        );
    }

    /// `last4` leaves only the last four digits of the number, and nothing Luhn-valid.
    #[test]
    fn last4_keeps_only_the_last_four_digits(
        (digits, span) in written_pan(),
        before in noise(),
        after in noise(),
    ) {
        let text = [before.as_bytes(), &span, after.as_bytes()].concat();
        let (out, n) = mask_pans_with(MaskStyle::Last4, &key(), &text)
            .unwrap_or_else(|| panic!("not masked: {:?}", String::from_utf8_lossy(&text)));
        prop_assert_eq!(n, 1);
        let expected = [before.as_bytes(), &last4(&span), after.as_bytes()].concat();
        prop_assert_eq!(
            String::from_utf8_lossy(&out),
            String::from_utf8_lossy(&expected)
        );
        prop_assert!(!has_luhn_valid_sequence(&out), "{:?}", String::from_utf8_lossy(&out));
        prop_assert_eq!(digits_of(&out), digits[digits.len() - 4..].to_vec());
        prop_assert!(!strip_separators(&out).windows(digits.len()).any(|w| w == digits.as_slice()));
    }

    /// `redact` replaces just the number.
    #[test]
    fn redact_replaces_just_the_number(
        (_digits, span) in written_pan(),
        before in noise(),
        after in noise(),
    ) {
        let text = [before.as_bytes(), &span, after.as_bytes()].concat();
        let (out, n) = mask_pans_with(MaskStyle::Redact, &key(), &text).expect("masked");
        prop_assert_eq!(n, 1);
        let expected = [before.as_bytes(), b"[REDACTED]".as_slice(), after.as_bytes()].concat();
        prop_assert_eq!(out, expected);
    }

    /// Two numbers in one text are both found and both masked.
    #[test]
    fn two_pans_in_one_text_are_both_masked(
        (d1, s1) in written_pan(),
        (d2, s2) in written_pan(),
        before in noise(),
        between in gap(),
        after in noise(),
    ) {
        let text = [before.as_bytes(), &s1, between.as_bytes(), &s2, after.as_bytes()].concat();
        prop_assert_eq!(matches(&text).len(), 2, "{:?}", String::from_utf8_lossy(&text));
        for style in STYLES {
            let (out, n) = mask_pans_with(style, &key(), &text).expect("masked");
            prop_assert_eq!(n, 2);
            let stripped = strip_separators(&out);
            for d in [&d1, &d2] {
                prop_assert!(!stripped.windows(d.len()).any(|w| w == d.as_slice()));
            }
            prop_assert!(!has_luhn_valid_sequence(&out), "{:?}", String::from_utf8_lossy(&out));
        }
    }

    /// Tokens are `tok_` + 16 consonants: no digit survives, the same card (however written)
    /// gives the same token, and the output holds nothing the detector would find again.
    #[test]
    fn token_output_never_contains_a_digit_run(
        (digits, span) in written_pan(),
        before in noise(),
        after in noise(),
    ) {
        let text = [before.as_bytes(), &span, after.as_bytes()].concat();
        let (out, n) = mask_pans_with(MaskStyle::Token, &key(), &text).expect("masked");
        prop_assert_eq!(n, 1);
        prop_assert!(!out.iter().any(u8::is_ascii_digit), "{:?}", String::from_utf8_lossy(&out));
        prop_assert!(out.starts_with(before.as_bytes()));
        prop_assert!(out.ends_with(after.as_bytes()));
        let tok = &out[before.len()..out.len() - after.len()];
        prop_assert!(is_token(tok), "{:?}", String::from_utf8_lossy(tok));
        // Deterministic, and independent of how the number was written.
        let (plain, _) = mask_pans_with(MaskStyle::Token, &key(), &digits).expect("masked");
        prop_assert_eq!(plain.as_slice(), tok);
        prop_assert!(mask_pans_with(MaskStyle::Token, &key(), &out).is_none());
    }

    /// Different cards give different tokens.
    #[test]
    fn different_cards_give_different_tokens(a in luhn_number(brand_prefix()), b in luhn_number(brand_prefix())) {
        prop_assume!(a != b);
        let (ta, _) = mask_pans_with(MaskStyle::Token, &key(), &a).expect("masked");
        let (tb, _) = mask_pans_with(MaskStyle::Token, &key(), &b).expect("masked");
        prop_assert_ne!(ta, tb);
    }

    /// 13–19 digits that fail Luhn are left alone, even with a brand prefix.
    #[test]
    fn luhn_failures_are_left_alone(
        valid in luhn_number(prop_oneof![brand_prefix(), unknown_prefix()]),
        bump in 1u8..10,
        before in noise(),
        after in noise(),
    ) {
        let mut digits = valid;
        let last = digits.len() - 1;
        digits[last] = b'0' + (digits[last] - b'0' + bump) % 10;
        prop_assert!(!luhn_ascii(&digits));
        prop_assert!(!is_pan(&digits));
        let text = [before.as_bytes(), &digits, after.as_bytes()].concat();
        prop_assert!(matches(&text).is_empty());
        for style in STYLES {
            prop_assert!(mask_pans_with(style, &key(), &text).is_none(), "{:?}", style);
        }
    }

    /// Luhn-valid numbers without a known brand prefix are left alone.
    #[test]
    fn unknown_brands_are_left_alone(
        digits in luhn_number(unknown_prefix()),
        before in noise(),
        after in noise(),
    ) {
        prop_assert!(!is_pan(&digits), "{:?}", String::from_utf8_lossy(&digits));
        let text = [before.as_bytes(), &digits, after.as_bytes()].concat();
        prop_assert!(mask_pans_with(MaskStyle::Last4, &key(), &text).is_none());
    }

    /// A PAN glued to more digits is a different (longer) number: a 17-digit run that fails
    /// Luhn as a whole is not a PAN followed by a digit.
    #[test]
    fn whole_digit_groups_only(
        digits in luhn_number(brand_prefix()),
        extra in prop::collection::vec(b'0'..=b'9', 1..4),
    ) {
        let mut run = digits.clone();
        run.extend_from_slice(&extra);
        prop_assume!(!luhn_ascii(&run) || run.len() > 19);
        prop_assert!(matches(&run).is_empty(), "{:?}", String::from_utf8_lossy(&run));
        let mut run = extra.clone();
        run.extend_from_slice(&digits);
        prop_assume!(!luhn_ascii(&run) || run.len() > 19);
        prop_assert!(matches(&run).is_empty(), "{:?}", String::from_utf8_lossy(&run));
    }

    /// Text without digits is never touched.
    #[test]
    fn text_without_digits_is_left_alone(text in "[^0-9]{0,200}", raw in prop::collection::vec(any::<u8>(), 0..300)) {
        let raw: Vec<u8> = raw.into_iter().filter(|b| !b.is_ascii_digit()).collect();
        for t in [text.as_bytes(), raw.as_slice()] {
            prop_assert!(matches(t).is_empty());
            for style in STYLES {
                prop_assert!(mask_pans_with(style, &key(), t).is_none());
            }
        }
    }

    /// Arbitrary bytes (biased towards digits and separators) never panic, matches are sane,
    /// and no style's output holds anything the detector would find again.
    #[test]
    fn random_bytes_never_panic(
        bytes in prop::collection::vec(
            prop_oneof![
                4 => b'0'..=b'9',
                1 => Just(b' '),
                1 => Just(b'-'),
                2 => any::<u8>(),
            ],
            0..400,
        ),
    ) {
        let found = matches(&bytes);
        let mut prev_end = 0;
        for m in &found {
            prop_assert!(m.start >= prev_end && m.start < m.end && m.end <= bytes.len(), "{:?}", found);
            prop_assert!(is_pan(&bytes[m.start..m.end]));
            prop_assert!(bytes[m.start].is_ascii_digit() && bytes[m.end - 1].is_ascii_digit());
            prev_end = m.end;
        }
        let _ = is_pan(&bytes);
        let _ = luhn(&bytes);
        for style in STYLES {
            match mask_pans_with(style, &key(), &bytes) {
                None => prop_assert!(found.is_empty()),
                Some((out, n)) => {
                    prop_assert_eq!(n as usize, found.len());
                    if style == MaskStyle::Last4 {
                        prop_assert_eq!(out.len(), bytes.len());
                    }
                    // Whatever the style leaves visible never forms a new card number.
                    prop_assert!(matches(&out).is_empty(), "{:?}: {:?}", style, String::from_utf8_lossy(&out));
                }
            }
        }
    }
}
