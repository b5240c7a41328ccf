//! Name patterns of `[[rule]]`: connection and group names, `schema.table.column` patterns
//! (`reads`), `schema.table` patterns (`writes`) and function names (`functions`).
//!
//! A dotted pattern is split into segments on unquoted dots. An unquoted segment may contain
//! `*` (any run of characters, possibly empty) and is compared ignoring ASCII case, the way
//! PostgreSQL folds unquoted identifiers; a double-quoted segment (`"My.Schema"`, `""` for a
//! quote) is compared exactly and has no wildcard.
//!
//! Matching is conservative where the analysis is incomplete: a table whose schema could not be
//! resolved matches any schema segment, a column not attributed to a table matches any
//! schema/table, and a whole-row or `*` column read matches any column segment of its table.
//! Over-matching can only make a block or approve rule fire more often, never less.

use super::analysis::{ColumnRef, TableRef};

/// Whether `text` matches the glob `pattern` (`*` only), comparing characters exactly.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    glob_bytes(pattern.as_bytes(), text.as_bytes(), |a, b| a == b)
}

/// Whether `text` matches the glob `pattern` (`*` only), ignoring ASCII case.
pub fn glob_match_ignore_case(pattern: &str, text: &str) -> bool {
    glob_bytes(pattern.as_bytes(), text.as_bytes(), |a, b| {
        a.eq_ignore_ascii_case(&b)
    })
}

/// Iterative glob matching with single-star backtracking (linear in practice). Byte-wise is
/// equivalent to character-wise for UTF-8, which is self-synchronising.
fn glob_bytes(p: &[u8], t: &[u8], eq: impl Fn(u8, u8) -> bool) -> bool {
    let (mut pi, mut ti) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match (p.get(pi), t.get(ti)) {
            (Some(b'*'), _) => {
                star = Some((pi, ti));
                pi += 1;
            }
            (Some(&pc), Some(&tc)) if eq(pc, tc) => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    pi = sp + 1;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    p.get(pi..)
        .is_some_and(|rest| rest.iter().all(|&c| c == b'*'))
}

/// One segment of a dotted pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// `*`: anything.
    Any,
    /// Unquoted, may contain `*`; ASCII case-insensitive.
    Glob(String),
    /// Double-quoted: exact.
    Exact(String),
}

impl Segment {
    pub fn matches(&self, name: &str) -> bool {
        match self {
            Segment::Any => true,
            Segment::Glob(g) => glob_match_ignore_case(g, name),
            Segment::Exact(s) => s == name,
        }
    }

    pub fn is_any(&self) -> bool {
        matches!(self, Segment::Any)
    }
}

/// Splits a dotted pattern into segments; the error is a short problem description.
pub fn parse_segments(pattern: &str) -> Result<Vec<Segment>, String> {
    if pattern.is_empty() {
        return Err("is empty".into());
    }
    let mut out = Vec::new();
    let mut chars = pattern.chars().peekable();
    loop {
        // One segment.
        if chars.peek() == Some(&'"') {
            chars.next();
            let mut name = String::new();
            loop {
                match chars.next() {
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        name.push('"');
                    }
                    Some('"') => break,
                    Some(c) => name.push(c),
                    None => return Err("has an unterminated double quote".into()),
                }
            }
            if name.is_empty() {
                return Err("has an empty quoted segment".into());
            }
            out.push(Segment::Exact(name));
            match chars.next() {
                None => break,
                Some('.') => continue,
                Some(_) => {
                    return Err("has characters after a closing double quote".into());
                }
            }
        } else {
            let mut name = String::new();
            let mut ended = true;
            for c in chars.by_ref() {
                if c == '.' {
                    ended = false;
                    break;
                }
                if c.is_whitespace() {
                    return Err("contains whitespace".into());
                }
                if c == '"' {
                    return Err("has a double quote inside a segment".into());
                }
                name.push(c);
            }
            if name.is_empty() {
                return Err("has an empty segment".into());
            }
            out.push(if name.chars().all(|c| c == '*') {
                Segment::Any
            } else {
                Segment::Glob(name)
            });
            if ended {
                break;
            }
            if chars.peek().is_none() {
                return Err("has an empty segment".into());
            }
        }
    }
    Ok(out)
}

fn render_segment(s: &Segment) -> String {
    match s {
        Segment::Any => "*".into(),
        Segment::Glob(g) => g.clone(),
        Segment::Exact(e) => format!("\"{}\"", e.replace('"', "\"\"")),
    }
}

/// A `reads` pattern: `schema.table.column` or `schema.table` (every column of the table).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnPattern {
    pub schema: Segment,
    pub table: Segment,
    pub column: Segment,
}

impl ColumnPattern {
    pub fn parse(pattern: &str) -> Result<Self, String> {
        let segs = parse_segments(pattern)?;
        let mut it = segs.into_iter();
        match (it.next(), it.next(), it.next(), it.next()) {
            (Some(schema), Some(table), column, None) => Ok(Self {
                schema,
                table,
                column: column.unwrap_or(Segment::Any),
            }),
            (_, _, _, Some(_)) => Err(
                "has more than 3 segments (expected schema.table.column, `*` allowed per segment)"
                    .into(),
            ),
            _ => Err(
                "must be schema.table.column or schema.table (`*` allowed per segment, e.g. *.*.cvv)"
                    .into(),
            ),
        }
    }

    fn matches_table(&self, table: Option<&TableRef>) -> bool {
        match table {
            // Not attributed to a table: it could be any.
            None => true,
            Some(t) => {
                t.schema.as_deref().is_none_or(|s| self.schema.matches(s))
                    && self.table.matches(&t.name)
            }
        }
    }

    /// Whether reading this column is covered by the pattern (a `*`/whole-row read covers
    /// every column of its table).
    pub fn matches_column(&self, c: &ColumnRef) -> bool {
        self.matches_table(c.table.as_ref()) && (c.column == "*" || self.column.matches(&c.column))
    }

    /// Whether reading from this table at all is covered (only for `schema.table[.*]`).
    pub fn matches_table_read(&self, t: &TableRef) -> bool {
        self.column.is_any() && self.matches_table(Some(t))
    }
}

impl std::fmt::Display for ColumnPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}.{}.{}",
            render_segment(&self.schema),
            render_segment(&self.table),
            render_segment(&self.column)
        )
    }
}

/// A `writes` pattern: `schema.table` or `schema.table.*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TablePattern {
    pub schema: Segment,
    pub table: Segment,
}

impl TablePattern {
    pub fn parse(pattern: &str) -> Result<Self, String> {
        let segs = parse_segments(pattern)?;
        let mut it = segs.into_iter();
        match (it.next(), it.next(), it.next(), it.next()) {
            (Some(schema), Some(table), None, None) => Ok(Self { schema, table }),
            (Some(schema), Some(table), Some(Segment::Any), None) => Ok(Self { schema, table }),
            (Some(_), Some(_), Some(_), None) => Err(
                "writes are tracked per table: use schema.table or schema.table.* (not a column)"
                    .into(),
            ),
            (_, _, _, Some(_)) => Err("has more than 3 segments (expected schema.table)".into()),
            _ => Err("must be schema.table or schema.table.* (`*` allowed per segment)".into()),
        }
    }

    pub fn matches(&self, t: &TableRef) -> bool {
        t.schema.as_deref().is_none_or(|s| self.schema.matches(s)) && self.table.matches(&t.name)
    }
}

/// A `functions` pattern: `name` (any schema) or `schema.name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionPattern {
    pub schema: Option<Segment>,
    pub name: Segment,
}

impl FunctionPattern {
    pub fn parse(pattern: &str) -> Result<Self, String> {
        let segs = parse_segments(pattern)?;
        let mut it = segs.into_iter();
        match (it.next(), it.next(), it.next()) {
            (Some(name), None, None) => Ok(Self { schema: None, name }),
            (Some(schema), Some(name), None) => Ok(Self {
                schema: Some(schema),
                name,
            }),
            _ => Err("must be name or schema.name (`*` allowed, e.g. dblink*)".into()),
        }
    }

    /// `call` as the analysis reports it: lower case, qualified only if written so. A bare
    /// call matches a qualified pattern (it may resolve to that schema through search_path).
    pub fn matches(&self, call: &str) -> bool {
        let (schema, name) = match call.rsplit_once('.') {
            Some((q, n)) => (q.rsplit('.').next(), n),
            None => (None, call),
        };
        if !self.name.matches(name) {
            return false;
        }
        match (&self.schema, schema) {
            (Some(p), Some(s)) => p.matches(s),
            _ => true,
        }
    }
}

/// A connection or group name pattern (`*` wildcard, exact case, no dots).
pub fn check_name_pattern(pattern: &str) -> Result<(), String> {
    if pattern.is_empty() {
        return Err("is empty".into());
    }
    if pattern.trim() != pattern {
        return Err("has leading or trailing whitespace".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(schema: Option<&str>, name: &str) -> TableRef {
        TableRef {
            schema: schema.map(str::to_owned),
            name: name.into(),
        }
    }

    fn c(table: Option<TableRef>, column: &str) -> ColumnRef {
        ColumnRef {
            table,
            column: column.into(),
        }
    }

    #[test]
    fn globs() {
        assert!(glob_match("*", ""));
        assert!(glob_match("*", "anything"));
        assert!(glob_match("dblink*", "dblink"));
        assert!(glob_match("dblink*", "dblink_exec"));
        assert!(!glob_match("dblink*", "xdblink"));
        assert!(glob_match("*_dir", "pg_ls_dir"));
        assert!(glob_match("pg_*_file", "pg_read_binary_file"));
        assert!(!glob_match("pg_*_file", "pg_read_files"));
        assert!(glob_match("a*b*c", "aXXbYYbc"));
        assert!(!glob_match("a*b*c", "aXXbYY"));
        assert!(glob_match("exact", "exact"));
        assert!(!glob_match("exact", "Exact"));
        assert!(glob_match_ignore_case("exact", "ExAcT"));
        assert!(glob_match("caf\u{e9}*", "caf\u{e9}s"));
        assert!(glob_match("**", "x"));
        assert!(!glob_match("", "x"));
        assert!(glob_match("", ""));
    }

    #[test]
    fn segments_parse_and_errors() {
        assert_eq!(
            parse_segments("public.payments.*"),
            Ok(vec![
                Segment::Glob("public".into()),
                Segment::Glob("payments".into()),
                Segment::Any
            ])
        );
        assert_eq!(
            parse_segments("\"My.Schema\".\"a\"\"b\".c*"),
            Ok(vec![
                Segment::Exact("My.Schema".into()),
                Segment::Exact("a\"b".into()),
                Segment::Glob("c*".into())
            ])
        );
        assert_eq!(parse_segments(""), Err("is empty".into()));
        assert_eq!(parse_segments("a..b"), Err("has an empty segment".into()));
        assert_eq!(parse_segments(".a"), Err("has an empty segment".into()));
        assert_eq!(parse_segments("a."), Err("has an empty segment".into()));
        assert!(parse_segments("a. b").is_err());
        assert!(parse_segments("\"abc").is_err());
        assert!(parse_segments("\"\".x").is_err());
        assert!(parse_segments("\"a\"b").is_err());
        assert!(parse_segments("a\"b\"").is_err());
    }

    #[test]
    fn column_patterns() {
        let p = ColumnPattern::parse("public.payments.card_number").unwrap();
        let pay = t(Some("public"), "payments");
        assert!(p.matches_column(&c(Some(pay.clone()), "card_number")));
        assert!(p.matches_column(&c(Some(pay.clone()), "CARD_NUMBER")));
        assert!(!p.matches_column(&c(Some(pay.clone()), "amount")));
        assert!(!p.matches_column(&c(Some(t(Some("other"), "payments")), "card_number")));
        // Star / whole-row read covers every column of the table.
        assert!(p.matches_column(&c(Some(pay.clone()), "*")));
        assert!(!p.matches_column(&c(Some(t(Some("public"), "orders")), "*")));
        // Unresolved schema or table: conservative.
        assert!(p.matches_column(&c(Some(t(None, "payments")), "card_number")));
        assert!(p.matches_column(&c(None, "card_number")));
        // A specific column does not match a bare table read.
        assert!(!p.matches_table_read(&pay));

        let cvv = ColumnPattern::parse("*.*.cvv").unwrap();
        assert!(cvv.matches_column(&c(Some(t(Some("billing"), "cards")), "cvv")));
        assert!(cvv.matches_column(&c(Some(pay.clone()), "cvv")));
        assert!(!cvv.matches_column(&c(Some(pay.clone()), "cvv2")));
        assert!(!cvv.matches_table_read(&pay));

        let all = ColumnPattern::parse("public.payments.*").unwrap();
        assert!(all.matches_column(&c(Some(pay.clone()), "amount")));
        assert!(all.matches_table_read(&pay));
        assert!(!all.matches_table_read(&t(Some("public"), "orders")));
        assert_eq!(ColumnPattern::parse("public.payments"), Ok(all.clone()));
        assert_eq!(all.to_string(), "public.payments.*");

        let glob = ColumnPattern::parse("public.pay*.card_*").unwrap();
        assert!(glob.matches_column(&c(Some(t(Some("public"), "payouts")), "card_hash")));
        assert!(!glob.matches_column(&c(Some(t(Some("public"), "orders")), "card_hash")));

        let quoted = ColumnPattern::parse("public.\"Payments\".pan").unwrap();
        assert!(quoted.matches_column(&c(Some(t(Some("public"), "Payments")), "pan")));
        assert!(!quoted.matches_column(&c(Some(t(Some("public"), "payments")), "pan")));

        assert!(
            ColumnPattern::parse("a.b.c.d")
                .unwrap_err()
                .contains("more than 3")
        );
        assert!(ColumnPattern::parse("card_number").is_err());
        assert!(ColumnPattern::parse("public..x").is_err());
    }

    #[test]
    fn table_patterns() {
        let p = TablePattern::parse("public.payments").unwrap();
        assert_eq!(TablePattern::parse("public.payments.*"), Ok(p.clone()));
        assert!(p.matches(&t(Some("public"), "payments")));
        assert!(p.matches(&t(None, "payments")));
        assert!(!p.matches(&t(Some("public"), "orders")));
        assert!(!p.matches(&t(Some("audit"), "payments")));
        let any = TablePattern::parse("*.*").unwrap();
        assert!(any.matches(&t(Some("x"), "y")));
        assert!(
            TablePattern::parse("public.payments.card_number")
                .unwrap_err()
                .contains("per table")
        );
        assert!(TablePattern::parse("payments").is_err());
        assert!(TablePattern::parse("a.b.c.d").is_err());
    }

    #[test]
    fn function_patterns() {
        let p = FunctionPattern::parse("pg_read_file").unwrap();
        assert!(p.matches("pg_read_file"));
        assert!(p.matches("pg_catalog.pg_read_file"));
        assert!(p.matches("mydb.pg_catalog.pg_read_file"));
        assert!(!p.matches("pg_read_binary_file"));
        let q = FunctionPattern::parse("pg_catalog.pg_read_file").unwrap();
        assert!(q.matches("pg_read_file"));
        assert!(q.matches("pg_catalog.pg_read_file"));
        assert!(!q.matches("public.pg_read_file"));
        let d = FunctionPattern::parse("dblink*").unwrap();
        assert!(d.matches("dblink"));
        assert!(d.matches("dblink_exec"));
        assert!(d.matches("public.dblink_connect"));
        assert!(!d.matches("my_dblink"));
        assert!(FunctionPattern::parse("a.b.c").is_err());
        assert!(FunctionPattern::parse("").is_err());
    }

    #[test]
    fn name_patterns() {
        assert!(check_name_pattern("payments").is_ok());
        assert!(check_name_pattern("*").is_ok());
        assert!(check_name_pattern("").is_err());
        assert!(check_name_pattern(" x").is_err());
    }
}
