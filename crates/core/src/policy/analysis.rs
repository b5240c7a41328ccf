//! What one SQL statement does, as far as policy is concerned.

use std::collections::BTreeSet;

/// A table, schema-qualified after resolving against the session's `search_path`
/// (`schema` is `None` only when it could not be resolved, e.g. an unknown table).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TableRef {
    pub schema: Option<String>,
    pub name: String,
}

/// A column read by the statement. `column == "*"` for a star or a whole-row reference
/// (`t.*`, `row_to_json(t)`, `t::text`) that was not expanded.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ColumnRef {
    pub table: Option<TableRef>,
    pub column: String,
}

/// The analysis of one statement of a (possibly multi-statement) SQL string.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatementInfo {
    /// The top-level kind, lower case: `select`, `insert`, `update`, `delete`, `merge`,
    /// `copy_to`, `copy_from`, `drop`, `truncate`, `alter`, `create`, `grant`, `revoke`,
    /// `alter_system`, `create_extension`, `do`, `call`, `set`, `set_role`,
    /// `set_session_authorization`, `reset`, `show`, `begin`, `commit`, `rollback`,
    /// `prepare`, `execute`, `deallocate`, `declare`, `fetch`, `close`, `explain`,
    /// `listen`, `notify`, `unlisten`, `vacuum`, `analyze`, `reindex`, `cluster`, `lock`,
    /// `comment`, `create_function`, `create_trigger`, `create_rule`, `create_policy`,
    /// `checkpoint`, `discard`, `load`, `other`.
    pub kind: String,
    /// Every kind the statement amounts to, including nested ones and the umbrella kinds
    /// `dml` (insert/update/delete/merge/copy_from/truncate) and `ddl` (create/alter/drop/...).
    /// E.g. `EXPLAIN ANALYZE DELETE ...` → {explain, delete, dml}.
    pub kinds: BTreeSet<String>,
    pub tables_read: BTreeSet<TableRef>,
    pub tables_written: BTreeSet<TableRef>,
    pub columns_read: BTreeSet<ColumnRef>,
    /// Functions called anywhere, lower case, schema-qualified only if written so
    /// (`pg_read_file`, `pg_catalog.pg_read_file`).
    pub functions: BTreeSet<String>,
    /// Writes data anywhere inside (data-modifying CTE, EXPLAIN ANALYZE of DML, CREATE TABLE
    /// AS, SELECT INTO, ...).
    pub data_modifying: bool,
    /// Contains code the gateway cannot analyse (DO blocks, function/procedure/trigger/rule
    /// bodies).
    pub opaque: bool,
    /// `COPY ... TO/FROM PROGRAM`.
    pub copy_program: bool,
    /// `COPY ... TO/FROM 'file'` (server-side file).
    pub copy_file: bool,
    /// `SET`/`SET LOCAL`/`RESET` of a setting: (name lower case, value as text if given).
    pub set_setting: Option<(String, Option<String>)>,
    /// Settings changed through `set_config(name, value, is_local)` calls anywhere in the
    /// statement: (name lower case, value) when the arguments are constants, `None` for a name
    /// that is not a constant (the gateway cannot know what it changes).
    pub config_calls: Vec<(Option<String>, Option<String>)>,
    /// `LIMIT` of the outermost SELECT, if a constant (`None`: no LIMIT or not constant).
    pub limit: Option<i64>,
    /// For `PREPARE name AS ...`: the name (the body's analysis is merged into this one).
    pub prepares: Option<String>,
    /// For `EXECUTE name`: the prepared statement it runs (resolved by the session).
    pub executes: Option<String>,
}
