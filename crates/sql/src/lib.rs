//! SQL analysis for Gatehouse, with PostgreSQL's own parser (libpg_query, through `pg_query`).
//!
//! The gateway must decide on what the server will actually execute, so every statement is
//! parsed by the real PostgreSQL grammar (no disguise by comments, quoting, dollar quoting,
//! Unicode escapes or multi-statement strings) and the whole parse tree is walked here to fill
//! [`StatementInfo`], the parser-independent description the policy engine consumes.
//!
//! * [`analyze`] parses and analyses one SQL string (a simple `Query` may hold several
//!   statements: one [`StatementInfo`] per statement, in order).
//! * [`AnalysisCache`] puts a byte-bounded LRU cache keyed by the exact text in front of it.
//! * Each statement's result columns come with their *lineage* ([`StatementInfo::outputs`]:
//!   the table columns whose values can flow into each, for masking computed columns), and a
//!   `COPY` with its format options ([`StatementInfo::copy`]); a second pass over the same
//!   tree (`lineage.rs`), over-approximating like the rest.
//!
//! Parsing, walking and freeing the tree happen on a small dedicated pool of threads with
//! 64 MiB stacks: deeply nested statements fail cleanly (libpg_query's own stack-depth limit,
//! then [`AnalysisError::TooComplex`] from the walker's depth bound) instead of overflowing a
//! caller's (e.g. a tokio worker's 2 MiB) stack. The call blocks its thread for the few
//! microseconds a statement takes; from async code, that is acceptable for ordinary queries, or
//! wrap it in `spawn_blocking` for very large ones.
//!
//! ## Kinds beyond the list in [`StatementInfo::kind`]
//! `savepoint` (SAVEPOINT, RELEASE), `prepare_transaction` (PREPARE TRANSACTION; COMMIT/ROLLBACK
//! PREPARED are `commit`/`rollback`); `SELECT ... FOR UPDATE/SHARE` adds `lock` to `kinds`;
//! `RESET ROLE` / `RESET SESSION AUTHORIZATION` have the kinds `set_role` /
//! `set_session_authorization` (with `reset` in `kinds`), and `DISCARD ALL` adds both, since it
//! resets the session authorization. `MERGE` adds the kinds of its actions (`insert`, `update`,
//! `delete`). `SECURITY LABEL` and `REFRESH MATERIALIZED VIEW` are `other` (with `ddl`), and
//! `SET CONSTRAINTS` is `other`.
//!
//! ## Conventions
//! * Tables a DDL or maintenance statement acts on (DROP, ALTER, TRUNCATE, CREATE INDEX/TRIGGER/
//!   POLICY/RULE, GRANT ON, COMMENT ON, VACUUM, REINDEX, CLUSTER) are in `tables_written`;
//!   ANALYZE and LOCK put theirs in `tables_read`. Every table of `columns_read` is also in
//!   `tables_read`.
//! * Stored code (view queries, rule actions, policy and trigger conditions, SQL-standard
//!   function bodies) and the query of a plain `EXPLAIN` (without ANALYZE) are walked for
//!   tables, columns and functions, but add no kinds and never set `data_modifying`.
//! * `data_modifying`: DML anywhere (insert/update/delete/merge/truncate/copy from, including
//!   data-modifying CTEs, EXPLAIN ANALYZE, PREPARE and DECLARE bodies), CREATE TABLE AS,
//!   SELECT INTO, REFRESH MATERIALIZED VIEW. Plain DDL is `ddl`, not `data_modifying`.
//! * Unqualified tables take the first usable `search_path` entry; `pg_*` names take
//!   `pg_catalog`; temporary tables (`CREATE TEMP TABLE`, `SELECT INTO TEMP`) take `pg_temp`;
//!   elements of `CREATE SCHEMA s ...` take `s`.
//! * Column resolution without a catalog over-approximates: a bare column is reported against
//!   every table it could belong to (including outer query levels, for correlated subqueries),
//!   `table: None` only when there is no candidate table at all; a column renamed by an alias
//!   list (`payments AS p(x)`) is reported as `*`; `NATURAL JOIN` reports `*` for both sides.
//!   Columns of subqueries, CTEs and functions are not reported where they are used, since what
//!   they read is reported inside them.
//! * `functions`: names as written, lower case (SQL-syntax forms such as `EXTRACT` or
//!   `AT TIME ZONE` without their implicit `pg_catalog.`), plus TABLESAMPLE methods.
//!
//! ## Limitations
//! * No catalog: views, functions and procedures are not expanded (what `SELECT * FROM v` or
//!   `SELECT f()` reads is not known here), and a `search_path` that puts a user schema before
//!   an implicit `pg_catalog` is not modelled.
//! * Function bodies given as strings (`AS $$ ... $$`, any language, even `sql`), DO blocks
//!   and trigger functions are not parsed: the statement is only flagged `opaque` (as are
//!   CREATE TRIGGER and CREATE RULE, whose conditions and actions are walked as stored code).
//! * Settings changed by functions (`set_config('role', ...)`) are not `set_setting`: the
//!   function is listed, and the session must follow the server's ParameterStatus messages.

mod analyze;
mod cache;
#[rustfmt::skip]
mod children;
mod lineage;
pub mod mysql;
mod pool;
mod shape;

#[cfg(test)]
mod lineage_tests;
#[cfg(test)]
mod tests;

pub use cache::{AnalysisCache, CacheStats};
pub use gatehouse_core::policy::{ColumnRef, CopyInfo, OutputColumn, StatementInfo, TableRef};
pub use pool::{STACK_SIZE, mark_big_stack};

/// The session state that changes how a statement is parsed or resolved.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AnalysisContext {
    /// The session's `search_path`, in order. Unqualified table names are qualified with the
    /// first entry that is not `$user` (there is no catalog here to look them up).
    pub search_path: Vec<String>,
    /// The session's `standard_conforming_strings`: when `false`, backslashes escape inside
    /// ordinary string literals, exactly as the server will read them.
    pub standard_conforming_strings: bool,
}

impl Default for AnalysisContext {
    fn default() -> Self {
        Self {
            search_path: vec!["public".to_owned()],
            standard_conforming_strings: true,
        }
    }
}

impl AnalysisContext {
    /// The schema unqualified table names resolve to: the only `search_path` entry other than
    /// `$user`, `pg_catalog` and `pg_temp` (double-quoted entries are unquoted); `None` when
    /// there are several (ambiguous without a catalog) or none. Names starting with `pg_`
    /// resolve to `pg_catalog` instead, since the server searches it first.
    pub fn default_schema(&self) -> Option<String> {
        let mut candidates = self
            .search_path
            .iter()
            .map(|s| unquote(s.trim()))
            .filter(|s| {
                !s.is_empty() && s != "$user" && s != "pg_catalog" && !s.starts_with("pg_temp")
            });
        let first = candidates.next()?;
        // With several schemas to search, which one holds an unqualified table is known only
        // to the catalog: leave it unresolved, which rules match conservatively (any schema),
        // rather than guess and let `SET search_path = decoy, public` dodge a rule.
        if candidates.next().is_some() {
            return None;
        }
        Some(first)
    }
}

/// `"My""Schema"` → `My"Schema`; anything else unchanged.
fn unquote(s: &str) -> String {
    match s.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
        Some(inner) => inner.replace("\"\"", "\""),
        None => s.to_owned(),
    }
}

/// Why a SQL string could not be analysed. Every error means "refuse the statement".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnalysisError {
    /// PostgreSQL's parser rejected the text (the server would reject it too).
    /// `position` is a 1-based character offset when known (libpg_query's Rust binding does
    /// not expose it at present, so it is `None`).
    #[error("{message}")]
    Parse {
        message: String,
        position: Option<i32>,
    },
    /// The statement is nested deeper than the analyser walks.
    #[error("statement too complex to analyse")]
    TooComplex,
    /// A failure of the analyser itself (thread pool unavailable, decoder error, panic).
    #[error("internal analyser error: {0}")]
    Internal(String),
}

/// Analyses every statement of a SQL string (a simple Query may hold several).
///
/// Runs the parser on a dedicated pool of threads with 64 MiB stacks (deep nesting fails
/// cleanly, it does not overflow the stack); a parse error returns [`AnalysisError::Parse`]
/// with PostgreSQL's message. An empty string (or only comments) yields an empty `Vec`.
pub fn analyze(sql: &str, ctx: &AnalysisContext) -> Result<Vec<StatementInfo>, AnalysisError> {
    if sql.as_bytes().contains(&0) {
        // The wire protocol carries the query as a C string: the server would stop at the NUL
        // (and then reject the message). Never analyse a different text from the one that runs.
        return Err(AnalysisError::Parse {
            message: "invalid message format: query string contains a zero byte".to_owned(),
            position: None,
        });
    }
    let sql = sql.to_owned();
    let ctx = ctx.clone();
    pool::run(move || analyze::analyze_on_this_thread(&sql, &ctx))
}
