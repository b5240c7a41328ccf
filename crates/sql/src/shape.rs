//! The shape of a statement: its text with the values of plain literals taken out, so that
//! `... WHERE aid = 17` and `... WHERE aid = 42` share one cached analysis.
//!
//! Why this is safe: a literal is a leaf of the parse tree (`A_Const`); its value cannot change
//! the tree's structure, only the constant in it. So two texts whose shapes are equal parse to
//! trees that differ only in constants, and an analysis that never looked at a constant's
//! value is the same for both. The cache shares an analysis under a shape only when that holds
//! (see `cache.rs`: row-returning and DML statements without a constant `LIMIT`, settings,
//! COPY options or opaque code, the only places the analyser reads constants).
//!
//! Why it is conservative: the scanner follows PostgreSQL's lexical rules for the few tokens
//! it rewrites and gives up (`None`, the exact text is used) on anything it does not fully
//! understand: prefixed strings (`E'..'`, `B'..'`, `X'..'`, `N'..'`, `U&'..'`), dollar quoting,
//! numbers in other notations (`0x1F`, `1_000`, `1.`, `.5`), unterminated quotes or comments,
//! and texts holding the marker byte it uses. Only standard '...' strings (with `''` inside)
//! and decimal numbers standing alone become markers; identifiers, quoted identifiers,
//! comments, operators and whitespace are kept byte for byte. It must only be used with
//! `standard_conforming_strings` on (backslashes are then ordinary characters in strings).

/// Replaces a string literal in a shape.
const STRING: &str = "\u{1}s";
/// Replaces a numeric literal in a shape.
const NUMBER: &str = "\u{1}n";

/// Could `b` be part of an identifier (or keyword)? Like PostgreSQL's `ident_cont`, with every
/// non-ASCII byte counted as a letter.
fn ident_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80
}

/// The shape of `sql`, or `None` when it has no literal to take out or holds something the
/// scanner does not handle (then the exact text must be used).
pub(crate) fn of(sql: &str) -> Option<String> {
    let b = sql.as_bytes();
    if b.contains(&0x01) {
        return None; // the marker byte: never let the text fake a marker
    }
    let mut out: Vec<u8> = Vec::with_capacity(b.len());
    let mut literals = 0usize;
    let mut i = 0usize;
    while let Some(&c) = b.get(i) {
        let prev = i.checked_sub(1).and_then(|p| b.get(p)).copied();
        let next = b.get(i + 1).copied();
        match c {
            b'\'' => {
                // A prefix makes it another kind of string (E'', B'', X'', N'', U&'').
                if prev.is_some_and(|p| ident_byte(p) || p == b'&') {
                    return None;
                }
                let mut j = i + 1;
                loop {
                    match b.get(j) {
                        None => return None,
                        Some(b'\'') if b.get(j + 1) == Some(&b'\'') => j += 2,
                        Some(b'\'') => break,
                        Some(_) => j += 1,
                    }
                }
                out.extend_from_slice(STRING.as_bytes());
                literals += 1;
                i = j + 1;
            }
            b'"' => {
                let mut j = i + 1;
                loop {
                    match b.get(j) {
                        None => return None,
                        Some(b'"') if b.get(j + 1) == Some(&b'"') => j += 2,
                        Some(b'"') => break,
                        Some(_) => j += 1,
                    }
                }
                out.extend_from_slice(b.get(i..=j)?);
                i = j + 1;
            }
            b'-' if next == Some(b'-') => {
                let end = b
                    .get(i..)?
                    .iter()
                    .position(|&x| x == b'\n' || x == b'\r')
                    .map_or(b.len(), |p| i + p);
                out.extend_from_slice(b.get(i..end)?);
                i = end;
            }
            b'/' if next == Some(b'*') => {
                let mut depth = 0usize;
                let mut j = i;
                loop {
                    match (b.get(j), b.get(j + 1)) {
                        (Some(b'/'), Some(b'*')) => {
                            depth += 1;
                            j += 2;
                        }
                        (Some(b'*'), Some(b'/')) => {
                            depth -= 1;
                            j += 2;
                            if depth == 0 {
                                break;
                            }
                        }
                        (Some(_), _) => j += 1,
                        (None, _) => return None,
                    }
                }
                out.extend_from_slice(b.get(i..j)?);
                i = j;
            }
            b'$' if !prev.is_some_and(ident_byte) => {
                // `$1` is a parameter; anything else starting with `$` is dollar quoting.
                if !next.is_some_and(|n| n.is_ascii_digit()) {
                    return None;
                }
                out.push(c);
                i += 1;
            }
            b'.' if next.is_some_and(|n| n.is_ascii_digit()) && !prev.is_some_and(ident_byte) => {
                return None; // `.5`, or `t.5`-like oddities
            }
            b'0'..=b'9' if !prev.is_some_and(|p| ident_byte(p) || p == b'.') => {
                let digits = |mut j: usize| {
                    while b.get(j).is_some_and(u8::is_ascii_digit) {
                        j += 1;
                    }
                    j
                };
                let mut j = digits(i);
                if b.get(j) == Some(&b'.') {
                    if !b.get(j + 1).is_some_and(u8::is_ascii_digit) {
                        return None; // `1.` or `1..2`
                    }
                    j = digits(j + 1);
                }
                if matches!(b.get(j), Some(b'e' | b'E')) {
                    let mut k = j + 1;
                    if matches!(b.get(k), Some(b'+' | b'-')) {
                        k += 1;
                    }
                    if !b.get(k).is_some_and(u8::is_ascii_digit) {
                        return None;
                    }
                    j = digits(k);
                }
                if b.get(j).is_some_and(|&x| ident_byte(x) || x == b'.') {
                    return None; // `0x1F`, `1_000`, `1.2.3`, `12abc`
                }
                out.extend_from_slice(NUMBER.as_bytes());
                literals += 1;
                i = j;
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    if literals == 0 {
        return None;
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::of;

    #[test]
    fn literals_become_markers_and_nothing_else_changes() {
        let a = of("SELECT abalance FROM pgbench_accounts WHERE aid = 17;").unwrap_or_default();
        let b = of("SELECT abalance FROM pgbench_accounts WHERE aid = 4242;").unwrap_or_default();
        assert_eq!(a, b);
        assert_eq!(
            a,
            "SELECT abalance FROM pgbench_accounts WHERE aid = \u{1}n;"
        );
        assert_eq!(
            of("SELECT 'it''s', 1.5e-3, t1.c2, $1 FROM t9 -- 'x' 5\nWHERE x = 'y' /* 'z' /* 7 */ */")
                .as_deref(),
            Some(
                "SELECT \u{1}s, \u{1}n, t1.c2, $1 FROM t9 -- 'x' 5\nWHERE x = \u{1}s /* 'z' /* 7 */ */"
            )
        );
        assert_eq!(
            of("SELECT \"a'b\"\"1\" FROM t WHERE v = 3").as_deref(),
            Some("SELECT \"a'b\"\"1\" FROM t WHERE v = \u{1}n")
        );
        // Different statements keep different shapes.
        assert_ne!(of("SELECT 1 AS a"), of("SELECT 1 AS b"));
        assert_ne!(
            of("SELECT * FROM t WHERE a = 1"),
            of("SELECT * FROM u WHERE a = 1")
        );
        assert_ne!(of("SELECT 1, 2"), of("SELECT 1"));
    }

    #[test]
    fn anything_unusual_keeps_the_exact_text() {
        for sql in [
            "SELECT 1",
            "SELECT a FROM t", // no literal at all: nothing to share
            "SELECT E'\\x41'",
            "SELECT e'a'",
            "SELECT B'101'",
            "SELECT X'1F'",
            "SELECT N'abc'",
            "SELECT U&'d\\0061t'",
            "SELECT $$a$$",
            "SELECT $tag$a$tag$",
            "SELECT 0x1F",
            "SELECT 1_000",
            "SELECT 1.",
            "SELECT .5",
            "SELECT 1.2.3",
            "SELECT 'unterminated",
            "SELECT \"unterminated",
            "SELECT 1 /* unterminated",
            "SELECT '\u{1}'",
            "SELECT 12abc",
            "SELECT 1e",
        ] {
            if sql == "SELECT 1" {
                assert!(of(sql).is_some());
                continue;
            }
            assert_eq!(of(sql), None, "{sql}");
        }
    }

    #[test]
    fn identifiers_with_digits_and_dollars_are_not_numbers() {
        assert_eq!(
            of("SELECT a$1, x2y, _3 FROM t WHERE c = 'v'").as_deref(),
            Some("SELECT a$1, x2y, _3 FROM t WHERE c = \u{1}s")
        );
        assert_eq!(
            of("SELECT é1 FROM t WHERE c = 2").as_deref(),
            Some("SELECT é1 FROM t WHERE c = \u{1}n")
        );
    }
}
