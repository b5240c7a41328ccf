//! Exact shapes of MySQL statements that sqlparser does not parse, recognised from tokens.
//!
//! Why: refusing every statement sqlparser lacks would refuse mysqldump's output and routine
//! administration (`ALTER TABLE t DISABLE KEYS`, `START TRANSACTION WITH CONSISTENT
//! SNAPSHOT`, `LOAD DATA LOCAL INFILE`, `CREATE USER 'u'@'%'`). Each shape here is either
//! fully spelled out (keywords, names, string and number literals only: no expression that
//! could read or compute anything), or a statement family whose grammar has no expressions
//! at all (user management) or that the builtin refusals block whatever follows the keywords
//! (replication, plugins, stored code, files). Everything else stays a parse error.

use std::collections::BTreeSet;

use gatehouse_core::policy::{StatementInfo, TableRef};
use sqlparser::dialect::MySqlDialect;
use sqlparser::tokenizer::{Token, Tokenizer, Whitespace};

use super::MysqlContext;
use super::statement::Builder;

/// The statement's tokens without whitespace.
fn tokens(text: &str) -> Option<Vec<Token>> {
    let dialect = MySqlDialect {};
    let toks = Tokenizer::new(&dialect, text).tokenize().ok()?;
    Some(
        toks.into_iter()
            .filter(|t| {
                !matches!(
                    t,
                    Token::Whitespace(Whitespace::Space | Whitespace::Newline | Whitespace::Tab)
                )
            })
            .collect(),
    )
}

/// An unquoted word, upper case.
fn kw(t: &Token) -> Option<String> {
    match t {
        Token::Word(w) if w.quote_style.is_none() => Some(w.value.to_ascii_uppercase()),
        _ => None,
    }
}

/// A name (unquoted or backticked word), lower case.
fn name(t: &Token) -> Option<String> {
    match t {
        Token::Word(w) if w.quote_style.is_none() || w.quote_style == Some('`') => {
            Some(w.value.to_lowercase())
        }
        _ => None,
    }
}

fn string(t: &Token) -> Option<&str> {
    match t {
        Token::SingleQuotedString(s) | Token::DoubleQuotedString(s) => Some(s),
        _ => None,
    }
}

/// `t` or `db.t` at `toks[i..]`: the table and the index after it.
fn table_at(toks: &[Token], i: usize, ctx: &MysqlContext) -> Option<(TableRef, usize)> {
    let first = name(toks.get(i)?)?;
    if matches!(toks.get(i + 1), Some(Token::Period)) {
        let second = name(toks.get(i + 2)?)?;
        return Some((
            TableRef {
                schema: Some(first),
                name: second,
            },
            i + 3,
        ));
    }
    Some((
        TableRef {
            schema: ctx.database.as_ref().map(|d| d.to_lowercase()),
            name: first,
        },
        i + 1,
    ))
}

fn words(toks: &[Token]) -> Vec<String> {
    toks.iter().map(|t| kw(t).unwrap_or_default()).collect()
}

/// The [`StatementInfo`] of a statement sqlparser rejected, if it has one of the shapes.
pub(crate) fn classify(text: &str, ctx: &MysqlContext) -> Option<StatementInfo> {
    let toks = tokens(text)?;
    let w = words(&toks);
    let w: Vec<&str> = w.iter().map(String::as_str).collect();
    match w.as_slice() {
        // ALTER TABLE t DISABLE|ENABLE KEYS (mysqldump).
        ["ALTER", "TABLE", ..] => {
            let (t, next) = table_at(&toks, 2, ctx)?;
            let rest: Vec<&str> = w.get(next..)?.to_vec();
            if !matches!(rest.as_slice(), ["DISABLE" | "ENABLE", "KEYS"]) {
                return None;
            }
            let mut b = Builder::new("alter");
            b.set_kind("alter");
            b.info.tables_written.insert(t);
            Some(b.info)
        }
        // START TRANSACTION WITH CONSISTENT SNAPSHOT [, READ ONLY | READ WRITE].
        [
            "START",
            "TRANSACTION",
            "WITH",
            "CONSISTENT",
            "SNAPSHOT",
            rest @ ..,
        ] => {
            let ok = rest.is_empty()
                || (matches!(toks.get(5), Some(Token::Comma))
                    && matches!(rest.get(1..), Some(["READ", "ONLY" | "WRITE"])));
            ok.then(|| {
                let mut b = Builder::new("begin");
                b.set_kind("begin");
                b.info
            })
        }
        ["LOAD", "DATA", ..] => load_data(&toks, &w, ctx),
        // SET CHARACTER SET cs / SET CHARSET cs.
        ["SET", "CHARACTER", "SET", _] | ["SET", "CHARSET", _] => {
            let cs = toks
                .last()
                .and_then(|t| name(t).or_else(|| string(t).map(str::to_owned)))?;
            let mut b = Builder::new("set");
            b.set_kind("set");
            b.info.set_setting = Some(("character_set_client".to_owned(), Some(cs)));
            Some(b.info)
        }
        // PREPARE s FROM 'text' | @var: what runs is not known.
        ["PREPARE", _, "FROM", _] => {
            let stmt = name(toks.get(1)?)?;
            let source_ok = string(toks.get(3)?).is_some()
                || matches!(toks.get(3), Some(Token::Word(v)) if v.value.starts_with('@'));
            source_ok.then(|| {
                let mut b = Builder::new("prepare");
                b.set_kind("prepare");
                b.info.opaque = true;
                b.info.prepares = Some(stmt);
                b.info
            })
        }
        // User management: no expressions in their grammar.
        ["CREATE" | "ALTER" | "DROP" | "RENAME", "USER", ..] | ["SET", "PASSWORD", ..] => {
            let mut b = Builder::new("grant");
            b.set_kind("grant");
            b.info.roles_changed = users(&toks);
            Some(b.info)
        }
        // Plugins and components: code loaded into the server.
        [
            "INSTALL" | "UNINSTALL",
            "PLUGIN" | "SONAME" | "COMPONENT",
            ..,
        ] => {
            let mut b = Builder::new("create_extension");
            b.set_kind("create_extension");
            Some(b.info)
        }
        // Replication control: refused by builtin:replication whatever follows.
        ["CHANGE", "MASTER" | "REPLICATION", ..]
        | [
            "START" | "STOP",
            "SLAVE" | "REPLICA" | "GROUP_REPLICATION",
            ..,
        ]
        | ["PURGE", "BINARY" | "MASTER", "LOGS", ..]
        | ["RESET", "MASTER" | "SLAVE" | "REPLICA" | "BINARY", ..] => {
            let mut b = Builder::new("other");
            b.kind("replication");
            Some(b.info)
        }
        // Stored code (also with DEFINER = ...): refused by builtin:opaque-code.
        ["CREATE", ..] if create_code(&w).is_some() => {
            let kind = create_code(&w)?;
            let mut b = Builder::new(kind);
            b.set_kind(kind);
            b.info.opaque = true;
            Some(b.info)
        }
        // SELECT ... INTO OUTFILE/DUMPFILE: refused by builtin:copy-file whatever it reads.
        ["SELECT" | "WITH" | "TABLE" | "(", ..]
            if w.windows(2)
                .any(|p| matches!(p, ["INTO", "OUTFILE" | "DUMPFILE"])) =>
        {
            let mut b = Builder::new("select");
            b.set_kind("select");
            b.info.copy_file = true;
            Some(b.info)
        }
        _ => None,
    }
}

/// The kind of `CREATE [OR REPLACE] [DEFINER = ...] [AGGREGATE] PROCEDURE|FUNCTION|TRIGGER|EVENT`.
fn create_code(w: &[&str]) -> Option<&'static str> {
    w.iter().skip(1).take(12).find_map(|k| match *k {
        "PROCEDURE" | "FUNCTION" => Some("create_function"),
        "TRIGGER" => Some("create_trigger"),
        "EVENT" => Some("create_function"),
        _ => None,
    })
}

/// The user names of a user-management statement: the user part of every `'u'@'h'` and every
/// string or name in user position, as written; `CURRENT_USER` for the session's own user.
fn users(toks: &[Token]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let w = words(toks);
    // SET PASSWORD without FOR, ALTER USER USER() / CURRENT_USER: the session's own user.
    let self_user = (w.first().is_some_and(|k| k == "SET") && !w.iter().any(|k| k == "FOR"))
        || w.iter().any(|k| k == "CURRENT_USER")
        || toks.windows(2).any(|p| {
            matches!(p, [Token::Word(u), Token::LParen] if u.value.eq_ignore_ascii_case("user"))
        });
    if self_user {
        out.insert("CURRENT_USER".to_owned());
    }
    for (i, t) in toks.iter().enumerate() {
        let prev = i.checked_sub(1).and_then(|p| toks.get(p));
        let prev_kw = prev.and_then(kw).unwrap_or_default();
        // Secrets and options follow these: never a user name (and never logged).
        if matches!(
            prev_kw.as_str(),
            "BY" | "AS" | "WITH" | "COMMENT" | "ATTRIBUTE" | "="
        ) || matches!(prev, Some(Token::Eq))
        {
            continue;
        }
        // The host part of 'u'@'h' (sqlparser tokenises `@'h'` as a word or `@` + string).
        if matches!(prev, Some(Token::AtSign)) {
            continue;
        }
        let user = match t {
            Token::SingleQuotedString(s) | Token::DoubleQuotedString(s) => Some(s.clone()),
            Token::Word(word) if word.quote_style == Some('`') => Some(word.value.clone()),
            Token::Word(word)
                if word.quote_style.is_none()
                    && matches!(prev_kw.as_str(), "USER" | "EXISTS" | "FOR" | "TO")
                    || matches!(prev, Some(Token::Comma)) && word.quote_style.is_none() =>
            {
                if word.value.starts_with('@') {
                    None
                } else {
                    Some(word.value.clone())
                }
            }
            _ => None,
        };
        if let Some(u) = user
            && !u.eq_ignore_ascii_case("current_user")
            && !u.is_empty()
        {
            out.insert(u);
        }
    }
    out
}

/// `LOAD DATA [LOW_PRIORITY | CONCURRENT] [LOCAL] INFILE 'file' [REPLACE | IGNORE] INTO TABLE
/// t [options]`, where the options are only words, literals, names, commas and parentheses
/// (no `SET col = expr`, which could compute anything).
fn load_data(toks: &[Token], w: &[&str], ctx: &MysqlContext) -> Option<StatementInfo> {
    let mut i = 2;
    if matches!(w.get(i), Some(&"LOW_PRIORITY" | &"CONCURRENT")) {
        i += 1;
    }
    let local = w.get(i) == Some(&"LOCAL");
    if local {
        i += 1;
    }
    if w.get(i) != Some(&"INFILE") {
        return None;
    }
    string(toks.get(i + 1)?)?;
    i += 2;
    if matches!(w.get(i), Some(&"REPLACE" | &"IGNORE")) {
        i += 1;
    }
    if !(w.get(i) == Some(&"INTO") && w.get(i + 1) == Some(&"TABLE")) {
        return None;
    }
    let (table, next) = table_at(toks, i + 2, ctx)?;
    for t in toks.get(next..)? {
        let ok = match t {
            Token::Word(word) => {
                !(word.quote_style.is_none() && word.value.eq_ignore_ascii_case("set"))
            }
            Token::SingleQuotedString(_)
            | Token::DoubleQuotedString(_)
            | Token::HexStringLiteral(_)
            | Token::Number(..)
            | Token::Comma
            | Token::LParen
            | Token::RParen
            | Token::AtSign => true,
            _ => false,
        };
        if !ok {
            return None;
        }
    }
    let mut b = if local {
        let mut b = Builder::new("copy_from");
        b.set_kind("copy_from");
        b.kind("insert");
        b
    } else {
        let mut b = Builder::new("insert");
        b.set_kind("insert");
        b.info.copy_file = true;
        b
    };
    b.info.data_modifying = true;
    b.info.tables_written.insert(table);
    Some(b.info)
}
