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
    /// Settings given as defaults for later sessions (`ALTER ROLE/DATABASE ... SET`, `ALTER
    /// SYSTEM SET`): (name lower case, value as text; `None` for RESET/DEFAULT).
    pub persistent_settings: Vec<(String, Option<String>)>,
    /// Roles whose attributes, name, membership or settings the statement changes (`ALTER
    /// ROLE/USER/GROUP`, `GRANT/REVOKE role`, `DROP ROLE`), as written; `CURRENT_USER`,
    /// `SESSION_USER`, `CURRENT_ROLE` (upper case) for those keywords and `ALL` for `ALTER
    /// ROLE ALL`.
    pub roles_changed: BTreeSet<String>,
    /// `LIMIT` of the outermost SELECT, if a constant (`None`: no LIMIT or not constant).
    pub limit: Option<i64>,
    /// For `PREPARE name AS ...`: the name (the body's analysis is merged into this one).
    pub prepares: Option<String>,
    /// For `EXECUTE name`: the prepared statement it runs (resolved by the session).
    pub executes: Option<String>,
    /// The result columns, in order, for statements that return rows: SELECT/VALUES/set
    /// operations (position-wise union of the branches), INSERT/UPDATE/DELETE/MERGE ...
    /// RETURNING, DECLARE ... CURSOR FOR query, PREPARE name AS query (the body's outputs),
    /// COPY (query) TO. `None` for statements without rows, and for EXPLAIN (its rows are a
    /// plan, not data), EXECUTE (the session knows the body), SELECT INTO / CREATE TABLE AS and
    /// `COPY table TO` (described by [`Self::copy`]).
    ///
    /// Result columns the server reports with a table OID can be masked from the
    /// RowDescription alone; computed ones (`substr(card_number, 5, 8)`, `row_to_json(p)`)
    /// cannot, so masking needs to know which table columns can flow into each of them.
    pub outputs: Option<Vec<OutputColumn>>,
    /// The options and target of a `COPY` statement: TO STDOUT / FROM STDIN, and also to or
    /// from a file or program (see `copy_file`, `copy_program`); `None` for other statements.
    /// The gateway must know the data format to find (and mask) values in the COPY data
    /// stream.
    pub copy: Option<CopyInfo>,
    /// How the statement uses column values other than by returning them unchanged:
    /// conditions, orderings, computations, writes, calls. What a masked identity may do with
    /// a masked column is judged from this (`core::masking::inference`).
    pub uses: ColumnUses,
}

/// How a statement uses column values besides returning them as they are.
///
/// Filled by the same pass as [`StatementInfo::outputs`], with the same resolution and the
/// same over-approximation: a reference the pass cannot place in one of the narrow forms
/// below is `computed`, the form that reveals the most.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ColumnUses {
    /// Columns whose values the statement computes with anywhere a result can depend on
    /// them: in conditions other than the narrow forms of `compared` and `last4`, CASE
    /// conditions and operands, comparisons and tests inside result expressions, arguments of
    /// FROM-clause functions, LIMIT/OFFSET, FILTER, orderings and groupings of computed
    /// values, EXPLAIN'd queries. A masked column here lets a client infer its value.
    pub computed: BTreeSet<ColumnRef>,
    /// Columns compared as they are: `c = constant`, `c IN (constants)`, `a.c = b.c`, JOIN
    /// USING, GROUP BY / ORDER BY / DISTINCT / PARTITION BY of a plain column, the rows of
    /// UNION / INTERSECT / EXCEPT. One entry per comparison, with every column it compares.
    pub compared: Vec<Compared>,
    /// Columns of which only the last four characters are used: `right(c, n)` with a
    /// constant `0 <= n <= 4`, `c LIKE '%1234'`.
    pub last4: BTreeSet<ColumnRef>,
    /// Values the statement writes into table columns (INSERT, UPDATE, MERGE, CREATE TABLE
    /// AS, SELECT INTO): the target (`*`: a position not known, or a new table) and the
    /// columns whose values flow into it.
    pub stored: Vec<(ColumnRef, BTreeSet<ColumnRef>)>,
    /// Operations that can fail on some values of an operand (a cast to a type other than
    /// text, arithmetic, a function not known to answer every value), with the columns whose
    /// values reach that operand: whether the statement fails tells a bit of the value, even
    /// when the result itself is masked whole. The label names the operation (`cast to
    /// numeric`, `operator /`, `function chr`).
    pub fallible: Vec<(String, BTreeSet<ColumnRef>)>,
    /// Functions called with column values in their arguments (name as written, lower
    /// case), with those columns: a function may park a value where a later query reads it
    /// (`set_config`, `setval`, advisory locks, large objects, notifications).
    pub calls: Vec<(String, BTreeSet<ColumnRef>)>,
    /// The classification read a literal value (`right(c, 4)`, a LIKE pattern, an ordinal
    /// in ORDER BY): another statement of the same shape may be judged differently.
    pub literal_dependent: bool,
}

/// One comparison of column values as they are.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Compared {
    /// Every column compared (the sides of `=`, the branches of a set operation).
    pub columns: BTreeSet<ColumnRef>,
    /// A constant or a bind parameter is one of the sides: the comparison tests the columns
    /// against a value the client chose.
    pub constant: bool,
    /// The comparison's ordinal in the statement: tells two comparisons of the same columns
    /// apart.
    pub position: i32,
}

/// Where the values of one result column of a statement can come from.
///
/// An over-approximation by construction: a source is left out only when the expression
/// syntactically cannot reveal it (a comparison, `count(...)`, a CASE condition, WHERE...),
/// since a missing source would let a card number through unmasked.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OutputColumn {
    /// The target entry is `*` or `t.*` (or `(p).*`): it stands for zero or more result
    /// columns, whose number is unknown without a catalog.
    pub star: bool,
    /// Table columns whose values can flow into this output. `column == "*"` means every
    /// column of that table (whole-row reference `p`, `p.*` inside an expression, or a star
    /// over a table). Unqualified tables are resolved exactly as for
    /// [`StatementInfo::columns_read`] (same default-schema and conservative rules,
    /// `table: None` when there is no candidate table). Empty: the value is computed from
    /// constants only, or cannot reveal any column (`count(*)`, `a = b`).
    pub sources: BTreeSet<ColumnRef>,
    /// The sources whose values reach this output only through a computation (a function,
    /// an operator, a cast, a CASE result, an aggregate): the output is then a derivative of
    /// them, not the value itself, and is masked whole. A subset of `sources`.
    pub derived: BTreeSet<ColumnRef>,
}

/// What a `COPY` statement transfers and how the data is formatted, so that the COPY data
/// stream (which carries no per-column metadata) can be parsed and masked.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CopyInfo {
    /// `text`, `csv` or `binary` (the `FORMAT` option, or old-style `CSV`/`BINARY`); `text`
    /// when not given. Any other value is reported as given: the server rejects it (it
    /// compares exactly, so `FORMAT 'CSV'` is an error too).
    pub format: String,
    /// The `DELIMITER` option as given; `None`: the format's default (tab, or `,` for csv).
    pub delimiter: Option<String>,
    /// The `QUOTE` option as given; `None`: the default (`"`, csv only).
    pub quote: Option<String>,
    /// The `ESCAPE` option as given; `None`: the default (the quote character, csv only).
    pub escape: Option<String>,
    /// The `HEADER` option (`HEADER`, `HEADER true`, `HEADER MATCH`, old-style `CSV HEADER`):
    /// the first line of the data holds column names, not values. `false` when absent, off,
    /// or a value the server would reject (a header wrongly assumed would leave a data line
    /// unmasked).
    pub header: bool,
    /// `COPY table [(cols)] TO/FROM ...`: the table, resolved like `tables_read`.
    pub table: Option<TableRef>,
    /// The column list if given, else empty (all columns, in table order).
    pub columns: Vec<String>,
    /// `COPY (query) TO ...`: the query's result columns are in [`StatementInfo::outputs`].
    pub query: bool,
}
