//! MySQL/MariaDB statement analysis into the parser-independent [`StatementInfo`].
//!
//! Why: the policy engine and the masking inference judge decide on `StatementInfo`, whatever
//! the protocol. For PostgreSQL it comes from the server's own grammar; no such library exists
//! for MySQL, so this module uses `sqlparser` (pure Rust, `MySqlDialect`) and makes up for the
//! difference between that parser and the server in three ways:
//!
//! * `lexer.rs` decides comment and string boundaries the way MySQL does, unwraps executable
//!   comments (`/*! ... */`, `/*M! ... */`: the server runs their bodies), strips every other
//!   comment and splits statements, refusing whatever it cannot decide for sure;
//! * `walk.rs` collects reads with sqlparser's whole-tree visitor (nothing in an unfamiliar
//!   clause is missed) and resolves names without a catalog, over-approximating;
//! * `statement.rs` classifies every statement type deliberately (unknown ones are `opaque`),
//!   and `fallback.rs` recognises a few exact shapes sqlparser does not parse (mysqldump's
//!   `ALTER TABLE t DISABLE KEYS`, `LOAD DATA`, `PREPARE s FROM ...`, user management...).
//!   Anything else sqlparser rejects is an error: what the gateway cannot analyse, it refuses.
//!
//! ## Conventions (beyond those of the PostgreSQL analyser, which apply)
//! * Names are lower case (MySQL table names are case-sensitive on Linux; lower-casing only
//!   makes rules match more). Unqualified tables take [`MysqlContext::database`].
//! * `SET` of a system variable: `set_setting` = (name without `@@`/`session.`, value);
//!   `SET NAMES cs` → (`names`, cs), `SET CHARACTER SET cs` → (`character_set_client`, cs);
//!   a value that is not a constant is [`UNKNOWN_VALUE`]; `DEFAULT` is `None`. SET GLOBAL /
//!   PERSIST / `@@global.x` are `alter_system` (and listed in `persistent_settings`).
//!   User variables (`SET @x = ...`) set nothing.
//! * Kinds specific to MySQL: `use`, `kill` (with `signal_backend`), `replication` (binlog and
//!   replica statements, refused by `builtin:replication`), `flush`.
//! * `SELECT ... INTO OUTFILE|DUMPFILE` (an `INTO` target that is not a plain variable)
//!   sets `copy_file`, as does a `LOAD DATA INFILE` without LOCAL; `LOAD DATA LOCAL INFILE` is
//!   `copy_from`.
//! * PREPARE, EXECUTE, CALL, CREATE PROCEDURE/FUNCTION/TRIGGER/EVENT are `opaque`.
//!
//! ## What sqlparser 0.64 (MySqlDialect) parses
//! Measured by the test `sqlparser_coverage` (`ok`: parsed and classified by the AST; `fallback`:
//! rejected by sqlparser, recognised by `fallback.rs`; `refused`: an error):
//!
//! | statement | result |
//! | --- | --- |
//! | `/*!40101 SET @OLD_CHARACTER_SET_CLIENT=@@CHARACTER_SET_CLIENT */;` | ok (after the pre-pass) |
//! | `LOCK TABLES t WRITE` / `UNLOCK TABLES` | ok |
//! | `ALTER TABLE t DISABLE KEYS` / `ENABLE KEYS` | fallback |
//! | `START TRANSACTION WITH CONSISTENT SNAPSHOT` | fallback |
//! | `SET NAMES utf8mb4` / `SET NAMES DEFAULT` | ok |
//! | `SET CHARACTER SET cs` | fallback |
//! | `SHOW CREATE TABLE t`, `DESCRIBE t`, `SHOW PROCESSLIST` | ok |
//! | `SHOW BINLOG EVENTS` / `MASTER STATUS` / `SLAVE STATUS` | ok (as SHOW of a variable) |
//! | `SELECT @@version`, `SELECT ... INTO @v` | ok |
//! | `LOAD DATA [LOCAL] INFILE 'x' INTO TABLE t` | fallback |
//! | `CREATE USER 'u'@'%'`, `ALTER USER`, `DROP USER 'u'@'%'`, `SET PASSWORD FOR` | fallback |
//! | `GRANT ... TO 'u'@'%'`, `SET PASSWORD = 'x'` | ok |
//! | `SELECT ... INTO OUTFILE 'f'` / `INTO DUMPFILE` | fallback |
//! | `FLUSH TABLES`, `KILL [QUERY] n`, `USE db`, `EXECUTE s USING @a`, `DEALLOCATE PREPARE s` | ok |
//! | `PREPARE s FROM 'text'` / `FROM @v` | fallback |
//! | `CHANGE MASTER`, `START/STOP SLAVE/REPLICA`, `PURGE BINARY LOGS` | fallback |
//! | `INSTALL PLUGIN`, `UNINSTALL PLUGIN` | fallback |
//! | `REPLACE INTO`, `INSERT ... ON DUPLICATE KEY UPDATE`, `DELETE t FROM t JOIN ...` | ok |
//! | `UPDATE a, b SET ...` (comma multi-table update) | **refused** |
//! | `SET PERSIST x = v`, `SET a = 1, NAMES x` | **refused** |
//!
//! (The table is kept in sync by hand with the test's expectations.)
//!
//! ## Limitations
//! * The server's own `sql_mode` is not known here: with `NO_BACKSLASH_ESCAPES` or
//!   `ANSI_QUOTES` set globally, strings are read differently from this analysis. The adapter
//!   must check the session's `sql_mode` at connect (changing it by SET is refused).
//! * Compound statements (procedure bodies sent with a client `DELIMITER`) are split at their
//!   inner `;` and so refused.
//! * No catalog: views and stored functions are not expanded.
//! * `SELECT ... INTO @var` returns nothing to the client: what it reads counts as computed
//!   with (refused for masked identities, as `SET @v = (SELECT ...)`); an `INTO` target that
//!   is not a plain variable name is taken for a file (`copy_file`).
//! * `fallible` and `calls` of [`ColumnUses`](gatehouse_core::policy::ColumnUses) are left empty: every use
//!   other than a plain outermost projection item, a comparison (`=`, `IN`) or a last-four
//!   match (`LIKE '%1234'`, `RIGHT(c, 4) = 'x'`) is `computed`, so the masking inference judge
//!   refuses more than it would for PostgreSQL.
//! * Outer references to a derived table's or CTE's columns take every column the statement
//!   reads as sources (and as `derived`): masked whole rather than by style.
//! * A 6-digit version in `/*!NNNNNN` is read as a version (MySQL 8.0 reads 5 digits and would
//!   treat the sixth as the first character of the body: a number literal at most).

mod fallback;
mod lexer;
mod statement;
mod walk;

#[cfg(test)]
mod tests;

use gatehouse_core::policy::StatementInfo;
use sqlparser::dialect::MySqlDialect;
use sqlparser::parser::{Parser, ParserError};

use crate::AnalysisError;
use crate::pool;

/// The value `set_setting` reports for a SET whose value is not a constant.
pub const UNKNOWN_VALUE: &str = "@unknown";

/// How deep sqlparser may recurse (nested expressions, subqueries): beyond it the statement
/// is refused as [`AnalysisError::TooComplex`].
const RECURSION_LIMIT: usize = 200;

/// The session state that changes how a MySQL statement is resolved.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct MysqlContext {
    /// The session's current database (`USE`): the schema of unqualified tables.
    pub database: Option<String>,
}

/// Analyses every statement of a MySQL text (one [`StatementInfo`] per `;`-separated
/// statement, in order; empty statements are skipped).
///
/// Runs on the analyser pool's big-stack threads, like [`crate::analyze`]. Errors:
/// [`AnalysisError::Parse`] for anything sqlparser (and the fallback shapes) cannot parse or
/// the pre-pass refuses, [`AnalysisError::TooComplex`] for too deep nesting.
pub fn analyze_mysql(sql: &str, ctx: &MysqlContext) -> Result<Vec<StatementInfo>, AnalysisError> {
    if sql.as_bytes().contains(&0) {
        return Err(parse_error("query string contains a zero byte"));
    }
    let sql = sql.to_owned();
    let ctx = ctx.clone();
    pool::run(move || analyze_on_this_thread(&sql, &ctx))
}

fn parse_error(message: impl Into<String>) -> AnalysisError {
    AnalysisError::Parse {
        message: message.into(),
        position: None,
    }
}

fn analyze_on_this_thread(
    sql: &str,
    ctx: &MysqlContext,
) -> Result<Vec<StatementInfo>, AnalysisError> {
    let prepared = lexer::prepare(sql).map_err(parse_error)?;
    let mut out = Vec::new();
    for range in &prepared.statements {
        let text = prepared
            .text
            .get(range.clone())
            .ok_or_else(|| AnalysisError::Internal("statement range".to_owned()))?;
        let dialect = MySqlDialect {};
        let parsed = Parser::new(&dialect)
            .with_recursion_limit(RECURSION_LIMIT)
            .try_with_sql(text)
            .and_then(|mut p| p.parse_statements());
        match parsed {
            Ok(stmts) => {
                for s in &stmts {
                    let mut info = statement::classify(s, ctx);
                    mark_credential_reads(&mut info, text);
                    out.push(info);
                }
            }
            Err(ParserError::RecursionLimitExceeded) => return Err(AnalysisError::TooComplex),
            Err(e) => match fallback::classify(text, ctx) {
                Some(mut info) => {
                    mark_credential_reads(&mut info, text);
                    out.push(info);
                }
                None => return Err(parse_error(e.to_string())),
            },
        }
    }
    for info in &mut out {
        mark_activity_reads(info);
    }
    Ok(out)
}

/// Tables that show other sessions' statement texts (what `SHOW PROCESSLIST` shows), under
/// any name the server accepts: reading them is `read_activity`, a guarded kind.
const ACTIVITY_TABLES: &[(&str, &str)] = &[
    ("information_schema", "processlist"),
    ("performance_schema", "threads"),
    ("performance_schema", "processlist"),
    ("performance_schema", "events_statements_current"),
    ("performance_schema", "events_statements_history"),
    ("performance_schema", "events_statements_history_long"),
    ("performance_schema", "events_statements_summary_by_digest"),
    ("sys", "processlist"),
    ("sys", "session"),
    ("sys", "x$processlist"),
    ("sys", "x$session"),
];

/// Tables that hold the server accounts' password hashes: with a `mysql_native_password` hash
/// one can log in as that account (the gateway's own included), so reading them is
/// `read_credentials`, a guarded kind.
const CREDENTIAL_TABLES: &[(&str, &str)] = &[
    ("mysql", "user"),
    ("mysql", "global_priv"),
    ("mysql", "password_history"),
];

/// Reads of password hashes: the credential tables, and the statements that print hashes
/// (`SHOW GRANTS`, `SHOW CREATE USER`).
fn mark_credential_reads(info: &mut StatementInfo, text: &str) {
    let reads_table = info.tables_read.iter().any(|t| {
        CREDENTIAL_TABLES.iter().any(|(schema, name)| {
            t.name == *name && t.schema.as_deref().is_none_or(|s| s == *schema)
        })
    });
    let words: Vec<String> = text
        .split_whitespace()
        .take(3)
        .map(str::to_ascii_lowercase)
        .collect();
    let shows = matches!(
        words
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .as_slice(),
        ["show", "grants", ..] | ["show", "create", "user", ..]
    );
    if reads_table || shows {
        info.kinds.insert("read_credentials".to_owned());
    }
}

fn mark_activity_reads(info: &mut StatementInfo) {
    let reads = info.tables_read.iter().any(|t| {
        ACTIVITY_TABLES.iter().any(|(schema, name)| {
            t.name == *name && t.schema.as_deref().is_none_or(|s| s == *schema)
        })
    });
    if reads {
        info.kinds.insert("read_activity".to_owned());
    }
}
