//! The pre-pass every MySQL text goes through before sqlparser sees it: comments out, executable
//! comments unwrapped, statements split.
//!
//! Why: MySQL *executes* the body of `/*! ... */` and `/*!50001 ... */` (and MariaDB that of
//! `/*M! ... */` and `/*M!100101 ... */`), so to a parser that reads them as comments an
//! attacker can hide `, card_number` or `; DROP TABLE t` there. And wherever two lexers disagree
//! about where a comment or a string ends (nested comments, `--` without a space, Unicode
//! spaces), a statement can look harmless to the gateway and do something else on the server.
//! So this pass decides comment and string boundaries once, the way MySQL's lexer does, and
//! hands sqlparser a text without any comment at all:
//!
//! * ordinary comments (`/* */`, `-- ` with a space or control character after the dashes,
//!   `#` to the end of the line) and optimizer hints (`/*+ */`) become spaces;
//! * the markers of executable comments (`/*!`, `/*!NNNNN`, `/*M!`, `/*M!NNNNNN` and their
//!   closing `*/`) become spaces, their bodies stay — also the bodies of version-gated ones the
//!   server might skip (analysing more than runs only over-approximates);
//! * `;` outside strings, identifiers and comments ends a statement.
//!
//! Refused (an error; the statement is then not sent): an unterminated string, identifier or
//! comment; a comment opening inside an executable comment (MySQL's handling of those differs
//! between versions); an executable comment whose body would end elsewhere if the server
//! skipped it (a `*/` inside a string of the body); version numbers that are not 5 or 6
//! digits; non-ASCII whitespace outside strings (MySQL reads it as part of an identifier,
//! other lexers as a space); a zero byte.

/// The text to parse, and where each statement of it starts and ends (byte ranges into the
/// text, `;` excluded, empty statements left out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Prepared {
    pub text: String,
    pub statements: Vec<std::ops::Range<usize>>,
}

/// Why the text was refused.
pub(crate) type LexError = String;

/// Runs the pre-pass (see the module documentation).
pub(crate) fn prepare(sql: &str) -> Result<Prepared, LexError> {
    if sql.as_bytes().contains(&0) {
        return Err("query string contains a zero byte".to_owned());
    }
    let src = sql.as_bytes();
    // Byte-for-byte copy in which comment bytes become spaces: positions do not move, and
    // multi-byte UTF-8 sequences are either copied whole or (inside comments) blanked whole,
    // so the result stays valid UTF-8.
    let mut out: Vec<u8> = src.to_vec();
    let mut statements = Vec::new();
    let mut start = 0usize;
    let mut i = 0usize;
    // Inside an executable comment: where it opened.
    let mut in_exec: Option<usize> = None;
    let blank = |out: &mut Vec<u8>, from: usize, to: usize| {
        for b in out.iter_mut().take(to).skip(from) {
            if *b != b'\n' {
                *b = b' ';
            }
        }
    };
    while let Some(&c) = src.get(i) {
        let next = src.get(i + 1).copied();
        match c {
            b'\'' | b'"' | b'`' => {
                i = skip_quoted(src, i)?;
            }
            b'#' => {
                let end = line_end(src, i);
                blank(&mut out, i, end);
                i = end;
            }
            b'-' if next == Some(b'-')
                && src.get(i + 2).is_none_or(|&b| b <= b' ' || b == 0x7f) =>
            {
                let end = line_end(src, i);
                blank(&mut out, i, end);
                i = end;
            }
            b'/' if next == Some(b'*') => {
                if in_exec.is_some() {
                    return Err("a comment inside an executable comment (/*! ... */)".to_owned());
                }
                let rest = src.get(i + 2..).unwrap_or_default();
                let marker = if rest.first() == Some(&b'!') {
                    Some(1)
                } else if rest.starts_with(b"M!") {
                    Some(2)
                } else {
                    None
                };
                match marker {
                    Some(len) => {
                        let digits_at = i + 2 + len;
                        let digits = src
                            .get(digits_at..)
                            .unwrap_or_default()
                            .iter()
                            .take_while(|b| b.is_ascii_digit())
                            .count();
                        if !matches!(digits, 0 | 5 | 6) {
                            return Err(format!(
                                "executable comment with a {digits}-digit version number"
                            ));
                        }
                        // If the server skips the comment (version gate, or MariaDB syntax on
                        // MySQL), it ends at the first `*/`: that must be where it ends when
                        // run, checked when the closing marker is reached.
                        let body = digits_at + digits;
                        blank(&mut out, i, body);
                        in_exec = Some(i);
                        i = body;
                    }
                    None => {
                        let end = find(src, i + 2, b"*/")
                            .ok_or_else(|| "unterminated comment".to_owned())?;
                        blank(&mut out, i, end + 2);
                        i = end + 2;
                    }
                }
            }
            b'*' if next == Some(b'/') && in_exec.is_some() => {
                if let Some(open) = in_exec.take()
                    && find(src, open + 2, b"*/") != Some(i)
                {
                    return Err(
                        "an executable comment whose end depends on whether it runs".to_owned()
                    );
                }
                blank(&mut out, i, i + 2);
                i += 2;
            }
            b';' if in_exec.is_none() => {
                push_statement(&out, start, i, &mut statements);
                start = i + 1;
                i += 1;
            }
            b';' => {
                // `/*! a; b */`: MySQL ends the statement inside the comment; refuse rather
                // than model that.
                return Err("a statement separator inside an executable comment".to_owned());
            }
            _ if c >= 0x80 => {
                let ch = sql
                    .get(i..)
                    .and_then(|s| s.chars().next())
                    .ok_or_else(|| "invalid UTF-8".to_owned())?;
                if ch.is_whitespace() {
                    return Err(format!(
                        "non-ASCII whitespace U+{:04X} outside a string",
                        u32::from(ch)
                    ));
                }
                i += ch.len_utf8();
            }
            _ => i += 1,
        }
    }
    if in_exec.is_some() {
        return Err("unterminated executable comment".to_owned());
    }
    push_statement(&out, start, src.len(), &mut statements);
    let text = String::from_utf8(out).map_err(|_| "invalid UTF-8".to_owned())?;
    Ok(Prepared { text, statements })
}

fn push_statement(out: &[u8], start: usize, end: usize, into: &mut Vec<std::ops::Range<usize>>) {
    let blank = out
        .get(start..end)
        .is_none_or(|s| s.iter().all(u8::is_ascii_whitespace));
    if !blank {
        into.push(start..end);
    }
}

/// The index just past the closing quote of the literal or identifier opening at `at`.
/// `'...'` and `"..."` take backslash escapes and doubled quotes; backtick identifiers only
/// doubled backticks.
fn skip_quoted(src: &[u8], at: usize) -> Result<usize, LexError> {
    let Some(&q) = src.get(at) else {
        return Err("internal: no quote".to_owned());
    };
    let mut i = at + 1;
    loop {
        match src.get(i) {
            None => {
                return Err(if q == b'`' {
                    "unterminated quoted identifier".to_owned()
                } else {
                    "unterminated string literal".to_owned()
                });
            }
            Some(b'\\') if q != b'`' => i += 2,
            Some(&b) if b == q => {
                if src.get(i + 1) == Some(&q) {
                    i += 2;
                } else {
                    return Ok(i + 1);
                }
            }
            Some(_) => i += 1,
        }
    }
}

/// The index of the `\n` ending the line at `from` (MySQL ends `#` and `-- ` comments there),
/// or the end of the text.
fn line_end(src: &[u8], from: usize) -> usize {
    src.get(from..)
        .and_then(|r| r.iter().position(|&b| b == b'\n'))
        .map_or(src.len(), |p| from + p)
}

fn find(src: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    src.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| from + p)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn pieces(sql: &str) -> Vec<String> {
        let p = prepare(sql).unwrap();
        p.statements
            .iter()
            .map(|r| p.text[r.clone()].trim().to_owned())
            .collect()
    }

    #[test]
    fn executable_comments_are_unwrapped() {
        assert_eq!(
            pieces("SELECT a /*!50001 , card_number */ FROM t"),
            ["SELECT a          , card_number    FROM t"]
        );
        assert_eq!(
            pieces("SELECT 1 /*M!100101 ,2*/"),
            ["SELECT 1            ,2"]
        );
        assert_eq!(pieces("SELECT 1 /*!,2*/"), ["SELECT 1    ,2"]);
        assert_eq!(
            pieces("/*!40101 SET @OLD=@@CHARACTER_SET_CLIENT */;"),
            ["SET @OLD=@@CHARACTER_SET_CLIENT"]
        );
    }

    #[test]
    fn comments_become_spaces() {
        assert_eq!(pieces("SELECT 1 /* x; */ # y; \n; -- z;\n"), ["SELECT 1"]);
        assert_eq!(pieces("SELECT 1 /*+ hint */"), ["SELECT 1"]);
        // `--` without a space is two minus signs.
        assert_eq!(pieces("SELECT 1--1"), ["SELECT 1--1"]);
        assert_eq!(pieces("SELECT 1 --\t;x"), ["SELECT 1"]);
    }

    #[test]
    fn strings_are_not_unwrapped() {
        assert_eq!(pieces("SELECT '/*!  x */'"), ["SELECT '/*!  x */'"]);
        assert_eq!(pieces("SELECT \"a;#b\""), ["SELECT \"a;#b\""]);
        assert_eq!(pieces("SELECT `a/*b`"), ["SELECT `a/*b`"]);
        assert_eq!(
            pieces("SELECT 'a\\'; DROP TABLE t; -- '"),
            ["SELECT 'a\\'; DROP TABLE t; -- '"]
        );
        assert_eq!(pieces("SELECT 'a''; b'"), ["SELECT 'a''; b'"]);
        assert_eq!(
            pieces("SELECT 1; DROP TABLE t"),
            ["SELECT 1", "DROP TABLE t"]
        );
    }

    #[test]
    fn ambiguous_texts_are_refused() {
        for bad in [
            "SELECT '",
            "SELECT `a",
            "SELECT /* x",
            "SELECT /*! 1",
            "SELECT /*! 1 /*!, 2 */ */",
            "SELECT /*! 1 /* c */ */",
            "SELECT /*!5000 1 */",
            "SELECT /*!1234567 1 */",
            "SELECT /*!99999 '*/ , card_number FROM p -- ' */",
            "SELECT /*! 1; DROP TABLE t */",
            "SELECT 1 --\u{a0}x",
            "SELECT\u{2003}1",
            "SELECT 1\0",
        ] {
            assert!(prepare(bad).is_err(), "{bad:?}");
        }
    }
}
