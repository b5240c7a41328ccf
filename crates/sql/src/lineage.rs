//! Output-column lineage: for each result column of a statement, the table columns whose
//! values can flow into it ([`StatementInfo::outputs`]), and the options of `COPY`
//! ([`StatementInfo::copy`]).
//!
//! Why: the gateway masks card numbers in results. A result column that the server describes
//! with a table OID and column number can be matched against the masking rules directly, but a
//! computed column (`substr(card_number, 5, 8)`, `row_to_json(p)`, `(SELECT card_number ...)`)
//! carries no origin on the wire: only the statement tells where its values come from. This is
//! a pass of its own, separate from the policy walk in [`crate::analyze`], because it follows
//! *values* (target lists through FROM items, subqueries, CTEs, set operations, RETURNING)
//! rather than every name a statement mentions.
//!
//! It over-approximates by design, since a missing source leaks card data: a source is left
//! out only where the value syntactically cannot carry it: `count(...)`, boolean-valued
//! expression nodes (comparisons, LIKE/SIMILAR/regex matches, IN, BETWEEN, IS [NOT] ...,
//! AND/OR/NOT, EXISTS/ANY/ALL sublinks), CASE conditions, WHERE/GROUP BY/HAVING/ORDER BY/
//! JOIN ON/LIMIT, an aggregate's own ORDER BY (except `WITHIN GROUP`, whose ordering column is
//! the aggregated value) and FILTER, and window definitions. Every other node carries the
//! sources of all its children. Names that cannot be resolved without a catalog are reported
//! against every candidate, as for `columns_read`.
//!
//! Beyond what a reference names, values written by the statement itself flow into its
//! RETURNING: `INSERT INTO t (a) SELECT card_number ... RETURNING a` returns card numbers, so
//! the assigned values' sources are added to the target table's columns.
//!
//! [`StatementInfo::outputs`]: gatehouse_core::policy::StatementInfo::outputs
//! [`StatementInfo::copy`]: gatehouse_core::policy::StatementInfo::copy

use std::cell::Cell;
use std::collections::BTreeSet;

use gatehouse_core::policy::{ColumnRef, ColumnUses, CopyInfo, OutputColumn, TableRef};
use pg_query::protobuf as pb;
use pg_query::{NodeEnum, NodeRef};

use crate::AnalysisError;
use crate::analyze::{MAX_DEPTH, boxed_ref, node_ref, resolve_table, strings};
use crate::children::for_each_child;

/// What can flow into a value: table columns as they are (`direct`), table columns through a
/// computation (`derived`: a function, operator, cast, CASE result, aggregate...), and
/// whether constants or parameters can be among the values (`constant`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Sources {
    direct: BTreeSet<ColumnRef>,
    derived: BTreeSet<ColumnRef>,
    constant: bool,
}

impl Sources {
    fn new() -> Self {
        Self::default()
    }

    /// A column reached as it is.
    fn insert(&mut self, c: ColumnRef) {
        self.direct.insert(c);
    }

    fn extend(&mut self, other: Sources) {
        self.direct.extend(other.direct);
        self.derived.extend(other.derived);
        self.constant |= other.constant;
    }

    fn extend_ref(&mut self, other: &Sources) {
        self.direct.extend(other.direct.iter().cloned());
        self.derived.extend(other.derived.iter().cloned());
        self.constant |= other.constant;
    }

    fn len(&self) -> usize {
        self.direct.len() + self.derived.len()
    }

    /// No column can flow into the value (constants at most).
    fn no_columns(&self) -> bool {
        self.direct.is_empty() && self.derived.is_empty()
    }

    /// Every value is exactly the value of one of the `direct` columns: no computation and
    /// no constant in between (so comparing it compares the columns themselves).
    fn exact(&self) -> bool {
        !self.direct.is_empty() && self.derived.is_empty() && !self.constant
    }

    /// The same sources, reached through a computation.
    fn derive(mut self) -> Self {
        let direct = std::mem::take(&mut self.direct);
        self.derived.extend(direct);
        self
    }

    /// Every column, direct or derived.
    fn all(&self) -> impl Iterator<Item = &ColumnRef> {
        self.direct.iter().chain(self.derived.iter())
    }

    fn all_set(&self) -> BTreeSet<ColumnRef> {
        self.all().cloned().collect()
    }
}

mod totality;
mod uses;

/// Rounds of the fixpoint iteration for one `WITH RECURSIVE` before its result is widened
/// (every column gets every source seen): ordinary recursive CTEs settle in two or three.
const FIXPOINT_ROUNDS: u32 = 8;

/// Evaluations of recursive CTE bodies per statement, over all nesting levels: nested
/// `WITH RECURSIVE` would otherwise multiply their rounds. Past it, each recursive WITH is
/// evaluated once and widened, which stays sound (see [`Lineage::push_with`]).
const FIXPOINT_BUDGET: u32 = 64;

/// Work allowed per statement, in sources materialised and items visited. Ordinary statements
/// use a few hundred; without a bound, a short text could make the outputs quadratic in its
/// length (`SELECT s.x, s.x, ... FROM (SELECT a || b || ... AS x ...) s`). Past it the
/// statement is [`AnalysisError::TooComplex`], i.e. refused.
const WORK_LIMIT: usize = 1_000_000;

/// Binary operators whose result is boolean for the built-in types: a comparison reveals
/// (at most) one bit, not the value.
const COMPARISONS: [&str; 15] = [
    "=", "<>", "!=", "<", ">", "<=", ">=", "~", "~*", "!~", "!~*", "~~", "~~*", "!~~", "!~~*",
];

/// The result columns of `top` with their sources (`None` for statements without rows), and
/// how the statement uses column values besides returning them.
pub(crate) fn outputs(
    top: NodeRef<'_>,
    default_schema: Option<&str>,
) -> Result<(Option<Vec<OutputColumn>>, ColumnUses), AnalysisError> {
    let mut l = Lineage::new(default_schema);
    let cols = match top {
        NodeRef::DeclareCursorStmt(d) => l.opt_statement(&d.query),
        NodeRef::PrepareStmt(p) => l.opt_statement(&p.query),
        NodeRef::CopyStmt(c) if !c.is_from => l.opt_statement(&c.query),
        NodeRef::ExplainStmt(e) => {
            // The plan, not the rows, comes back; what the query does with values is judged
            // all the same (row counts and estimates answer its conditions).
            let _ = l.opt_statement(&e.query);
            None
        }
        NodeRef::CreateTableAsStmt(c) => {
            let cols = l.opt_statement(&c.query).unwrap_or_default();
            let table = c
                .into
                .as_ref()
                .and_then(|i| i.rel.as_ref())
                .map(|r| resolve_table(r, None, default_schema));
            l.store_new(table, &cols);
            None
        }
        other => l.statement(other),
    };
    if l.too_complex || l.work.get() > WORK_LIMIT {
        return Err(AnalysisError::TooComplex);
    }
    let outputs = cols.map(|cols| {
        cols.into_iter()
            .map(|c| OutputColumn {
                star: c.star,
                sources: c.sources.all_set(),
                derived: c.sources.derived,
            })
            .collect()
    });
    let mut uses = l.uses;
    // Text offsets told the comparisons apart during the pass (a recursive CTE is evaluated
    // several times); reported as ordinals, so that statements of one shape agree.
    for (i, c) in uses.compared.iter_mut().enumerate() {
        c.position = i32::try_from(i + 1).unwrap_or(i32::MAX);
    }
    Ok((outputs, uses))
}

/// The format, options and target of a `COPY` (`None` for other statements).
///
/// Old-style options (`CSV`, `BINARY`, `DELIMITER AS ','`, `COPY BINARY t`) reach the parse
/// tree as the same `DefElem`s as the parenthesised ones. Option names and the format are
/// compared exactly, as the server does (`FORMAT 'CSV'` is an error there, reported as given
/// here).
pub(crate) fn copy_info(top: NodeRef<'_>, default_schema: Option<&str>) -> Option<CopyInfo> {
    let NodeRef::CopyStmt(c) = top else {
        return None;
    };
    let mut info = CopyInfo {
        format: "text".to_owned(),
        table: c
            .relation
            .as_ref()
            .map(|r| resolve_table(r, None, default_schema)),
        columns: strings(&c.attlist).into_iter().map(str::to_owned).collect(),
        query: c.query.is_some(),
        ..CopyInfo::default()
    };
    for o in &c.options {
        let Some(NodeEnum::DefElem(d)) = &o.node else {
            continue;
        };
        let value = def_string(d.arg.as_deref());
        match d.defname.as_str() {
            "format" => {
                if let Some(v) = value {
                    info.format = v;
                }
            }
            "delimiter" => info.delimiter = value,
            "quote" => info.quote = value,
            "escape" => info.escape = value,
            "header" => info.header = def_header(d.arg.as_deref()),
            _ => {}
        }
    }
    Some(info)
}

/// The `HEADER` option's value, like the server's `defGetCopyHeaderChoice`: no argument, a
/// true boolean or `match` is true. A value the server would reject is false here, since a
/// header wrongly assumed would exempt a data line from masking.
fn def_header(arg: Option<&pb::Node>) -> bool {
    match arg.and_then(|a| a.node.as_ref()) {
        None => true,
        Some(NodeEnum::Boolean(b)) => b.boolval,
        Some(NodeEnum::Integer(i)) => i.ival == 1,
        Some(_) => def_string(arg).is_some_and(|t| {
            let t = t.to_ascii_lowercase();
            t == "match"
                || t == "on"
                || t == "1"
                || (!t.is_empty() && ("true".starts_with(&t) || "yes".starts_with(&t)))
        }),
    }
}

/// A `DefElem` argument as text, like the server's `defGetString`.
fn def_string(arg: Option<&pb::Node>) -> Option<String> {
    match arg?.node.as_ref()? {
        NodeEnum::String(s) => Some(s.sval.clone()),
        NodeEnum::Integer(i) => Some(i.ival.to_string()),
        NodeEnum::Float(f) => Some(f.fval.clone()),
        NodeEnum::Boolean(b) => Some(if b.boolval { "true" } else { "false" }.to_owned()),
        NodeEnum::AConst(c) => match c.val.as_ref()? {
            pb::a_const::Val::Sval(s) => Some(s.sval.clone()),
            pb::a_const::Val::Ival(i) => Some(i.ival.to_string()),
            pb::a_const::Val::Fval(f) => Some(f.fval.clone()),
            pb::a_const::Val::Boolval(b) => {
                Some(if b.boolval { "true" } else { "false" }.to_owned())
            }
            pb::a_const::Val::Bsval(b) => Some(b.bsval.clone()),
        },
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// Columns and scopes

/// One result column of a query, as an enclosing query sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Col {
    /// The name PostgreSQL gives it; `None` when it cannot be told here (a lookup by any name
    /// then considers this column too).
    name: Option<String>,
    /// `*` / `t.*`: zero or more columns of unknown names.
    star: bool,
    sources: Sources,
}

impl Col {
    /// A column of unknown name and position: matches any lookup.
    fn unknown(sources: Sources) -> Self {
        Self {
            name: None,
            star: true,
            sources,
        }
    }

    fn named(name: Option<String>, sources: Sources) -> Self {
        Self {
            name,
            star: false,
            sources,
        }
    }

    /// Could this column be the one called `col`?
    fn maybe(&self, col: &str) -> bool {
        self.star || self.name.as_deref().is_none_or(|n| n == col)
    }
}

/// Whether a FROM item has a column of some name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Has {
    No,
    Maybe,
    Yes,
}

/// What a FROM item (or DML target) is, for lineage.
#[derive(Clone, Debug)]
enum Rel {
    /// A table. `renamed`: alias column names (`payments AS p(a, b)`), at unknown positions,
    /// so a reference to one reads an unknown column (`*`). `assigned`: values this statement
    /// writes into the table's columns (INSERT/UPDATE/MERGE), which RETURNING gives back.
    Table {
        table: TableRef,
        renamed: Vec<String>,
        assigned: Vec<Col>,
    },
    /// A subquery, CTE, function, VALUES list...: its columns.
    Derived(Vec<Col>),
    /// A join alias: the joined items are the entries `start..end` of the same scope level
    /// (indices, not copies: nested join aliases would otherwise copy each other
    /// exponentially). Join entries among them are skipped, their items being there too.
    Join { start: usize, end: usize },
}

/// One item of a FROM list, as visible to references.
#[derive(Clone, Debug)]
struct Entry {
    /// The alias, else the relation, CTE or function name; empty for an unaliased subquery
    /// (its columns are visible, it cannot be named).
    name: String,
    /// For an unaliased table, its schema (so `schema.table.column` resolves).
    schema: Option<String>,
    rel: Rel,
}

/// Does a list of derived columns have `col`?
fn cols_have(cols: &[Col], col: &str) -> Has {
    if cols
        .iter()
        .any(|c| !c.star && c.name.as_deref() == Some(col))
    {
        Has::Yes
    } else if cols.iter().any(|c| c.maybe(col)) {
        Has::Maybe
    } else {
        Has::No
    }
}

/// The sources of derived column `col`: the columns of that name (and those whose name is not
/// known); all columns when none has that name.
fn cols_column(cols: &[Col], col: &str, out: &mut Sources) {
    let named = cols
        .iter()
        .any(|c| !c.star && c.name.as_deref() == Some(col));
    for c in cols {
        if !named || c.maybe(col) {
            out.extend_ref(&c.sources);
        }
    }
}

/// The number of sources held by some columns (for [`WORK_LIMIT`]).
fn weight(cols: &[Col]) -> usize {
    cols.iter().map(|c| c.sources.len() + 1).sum()
}

fn cols_all(cols: &[Col], out: &mut Sources) {
    for c in cols {
        out.extend_ref(&c.sources);
    }
}

/// The items a join alias stands for: those of `start..end` in its scope `level`, less
/// nested join aliases (whose items are in that range too).
fn join_items(level: &[Entry], start: usize, end: usize) -> impl Iterator<Item = &Entry> {
    level
        .get(start..end)
        .unwrap_or_default()
        .iter()
        .filter(|e| !matches!(e.rel, Rel::Join { .. }))
}

impl Entry {
    /// Whether this item has column `col`. `level`: the scope level the entry is in.
    fn has(&self, level: &[Entry], col: &str) -> Has {
        match &self.rel {
            Rel::Table { .. } => Has::Maybe,
            Rel::Derived(cols) => cols_have(cols, col),
            Rel::Join { start, end } => join_items(level, *start, *end)
                .map(|e| e.has(level, col))
                .max()
                .unwrap_or(Has::No),
        }
    }

    /// A whole-row reference (`p`, `p.*`, `(p).*`).
    fn whole_row(&self, level: &[Entry], out: &mut Sources) {
        match &self.rel {
            Rel::Table {
                table, assigned, ..
            } => {
                out.insert(ColumnRef {
                    table: Some(table.clone()),
                    column: "*".to_owned(),
                });
                cols_all(assigned, out);
            }
            Rel::Derived(cols) => cols_all(cols, out),
            Rel::Join { start, end } => {
                for e in join_items(level, *start, *end) {
                    e.whole_row(level, out);
                }
            }
        }
    }

    /// Column `col` of this item.
    fn column(&self, level: &[Entry], col: &str, out: &mut Sources) {
        match &self.rel {
            Rel::Table {
                table,
                renamed,
                assigned,
            } => {
                let column = if renamed.iter().any(|r| r == col) {
                    "*"
                } else {
                    col
                };
                out.insert(ColumnRef {
                    table: Some(table.clone()),
                    column: column.to_owned(),
                });
                for a in assigned {
                    if a.maybe(col) {
                        out.extend_ref(&a.sources);
                    }
                }
            }
            Rel::Derived(cols) => cols_column(cols, col, out),
            Rel::Join { start, end } => {
                let mut found = false;
                for e in join_items(level, *start, *end) {
                    if e.has(level, col) != Has::No {
                        found = true;
                        e.column(level, col, out);
                    }
                }
                if !found {
                    self.whole_row(level, out);
                }
            }
        }
    }
}

/// Renames derived columns by an alias column list (`AS s(a, b)`, `WITH c(a, b)`), by position.
/// After a star the positions are unknown: then no name can be trusted.
fn rename(cols: &mut [Col], names: &[&str]) {
    if names.is_empty() {
        return;
    }
    if cols.iter().any(|c| c.star) {
        for c in cols {
            c.name = None;
        }
        return;
    }
    for (c, n) in cols.iter_mut().zip(names) {
        c.name = Some((*n).to_owned());
    }
}

/// A set operation: position-wise union, names from the left. When a branch has a star the
/// positions do not line up: every column gets every source.
fn combine(left: Vec<Col>, right: Vec<Col>) -> Vec<Col> {
    let aligned = left.len() == right.len() && !left.iter().chain(&right).any(|c| c.star);
    if aligned {
        return left
            .into_iter()
            .zip(right)
            .map(|(mut l, r)| {
                l.sources.extend(r.sources);
                l
            })
            .collect();
    }
    let mut all = Sources::new();
    cols_all(&left, &mut all);
    cols_all(&right, &mut all);
    if left.is_empty() {
        return right
            .into_iter()
            .map(|c| Col {
                sources: all.clone(),
                ..c
            })
            .collect();
    }
    left.into_iter()
        .map(|c| Col {
            sources: all.clone(),
            ..c
        })
        .collect()
}

/// Values written into named target columns (`targets`, empty: in table order) from the
/// columns of a source query or VALUES row, by position; when positions are unknown, every
/// target gets every source.
fn positional(targets: &[&str], source: Vec<Col>) -> Vec<Col> {
    if source.is_empty() {
        return Vec::new();
    }
    if !targets.is_empty() && targets.len() == source.len() && !source.iter().any(|c| c.star) {
        return targets
            .iter()
            .zip(source)
            .map(|(t, c)| Col::named(Some((*t).to_owned()), c.sources))
            .collect();
    }
    let mut all = Sources::new();
    cols_all(&source, &mut all);
    if targets.is_empty() {
        return vec![Col::unknown(all)];
    }
    targets
        .iter()
        .map(|t| Col::named(Some((*t).to_owned()), all.clone()))
        .collect()
}

/// `SELECT ... INTO` (possibly on the leftmost branch of a set operation) returns no rows.
fn select_into(s: &pb::SelectStmt) -> bool {
    let mut cur = s;
    loop {
        if cur.into_clause.is_some() {
            return true;
        }
        match cur.larg.as_deref() {
            Some(l) => cur = l,
            None => return false,
        }
    }
}

/// `count(...)` (built-in): a number of rows, whatever its argument.
fn is_count(funcname: &[pb::Node]) -> bool {
    match strings(funcname).as_slice() {
        [name] | ["pg_catalog", name] => name.eq_ignore_ascii_case("count"),
        _ => false,
    }
}

/// Is this operator expression boolean by its syntax (a comparison, a pattern match, IN,
/// BETWEEN, IS [NOT] DISTINCT FROM, op ANY/ALL)?
fn is_boolean(e: &pb::AExpr) -> bool {
    use pb::AExprKind as K;
    match K::try_from(e.kind) {
        Ok(K::AexprOp) => {
            e.lexpr.is_some()
                && e.rexpr.is_some()
                && match strings(&e.name).as_slice() {
                    [op] | ["pg_catalog", op] => COMPARISONS.contains(op),
                    _ => false,
                }
        }
        Ok(
            K::AexprOpAny
            | K::AexprOpAll
            | K::AexprDistinct
            | K::AexprNotDistinct
            | K::AexprIn
            | K::AexprLike
            | K::AexprIlike
            | K::AexprSimilar
            | K::AexprBetween
            | K::AexprNotBetween
            | K::AexprBetweenSym
            | K::AexprNotBetweenSym,
        ) => true,
        Ok(K::AexprNullif | K::Undefined) | Err(_) => false,
    }
}

// ---------------------------------------------------------------------------------------------
// Result column names (PostgreSQL's FigureColname)

enum Figure {
    /// A name, with PostgreSQL's strength (2: a real name, 1: a fallback such as a type name).
    Name(String, u8),
    /// PostgreSQL would say `?column?`.
    Default,
    /// Not modelled here.
    Unknown,
}

/// The name PostgreSQL gives an unnamed result column; `None` when not modelled here.
fn column_name(node: NodeRef<'_>) -> Option<String> {
    match figure(node, 0) {
        Figure::Name(n, _) => Some(n),
        Figure::Default => Some("?column?".to_owned()),
        Figure::Unknown => None,
    }
}

fn figure(node: NodeRef<'_>, depth: usize) -> Figure {
    if depth > MAX_DEPTH {
        return Figure::Unknown;
    }
    let name = |n: &str, strength: u8| Figure::Name(n.to_owned(), strength);
    match node {
        NodeRef::ColumnRef(c) => match strings(&c.fields).last() {
            Some(n) => name(n, 2),
            None => Figure::Default,
        },
        NodeRef::AIndirection(a) => match strings(&a.indirection).last() {
            Some(n) => name(n, 2),
            None => boxed_ref(&a.arg).map_or(Figure::Default, |arg| figure(arg, depth + 1)),
        },
        NodeRef::FuncCall(f) => match strings(&f.funcname).last() {
            Some(n) => name(n, 2),
            None => Figure::Unknown,
        },
        NodeRef::AExpr(e) => {
            if matches!(
                pb::AExprKind::try_from(e.kind),
                Ok(pb::AExprKind::AexprNullif)
            ) {
                name("nullif", 2)
            } else {
                Figure::Default
            }
        }
        NodeRef::TypeCast(t) => {
            match boxed_ref(&t.arg).map_or(Figure::Default, |a| figure(a, depth + 1)) {
                Figure::Name(n, 2) => Figure::Name(n, 2),
                Figure::Unknown => Figure::Unknown,
                Figure::Name(..) | Figure::Default => {
                    match t
                        .type_name
                        .as_ref()
                        .and_then(|tn| strings(&tn.names).last().copied())
                    {
                        Some(n) => name(n, 1),
                        None => Figure::Unknown,
                    }
                }
            }
        }
        NodeRef::CollateClause(c) => {
            boxed_ref(&c.arg).map_or(Figure::Default, |a| figure(a, depth + 1))
        }
        NodeRef::GroupingFunc(_) => name("grouping", 2),
        NodeRef::MergeSupportFunc(_) => name("merge_action", 2),
        NodeRef::SubLink(s) => {
            use pb::SubLinkType as T;
            match T::try_from(s.sub_link_type) {
                Ok(T::ExistsSublink) => name("exists", 2),
                Ok(T::ArraySublink) => name("array", 2),
                Ok(T::ExprSublink) => match boxed_ref(&s.subselect) {
                    Some(NodeRef::SelectStmt(q)) => match first_output_name(q, depth + 1) {
                        Some(n) => Figure::Name(n, 2),
                        None => Figure::Unknown,
                    },
                    _ => Figure::Unknown,
                },
                _ => Figure::Default,
            }
        }
        NodeRef::CaseExpr(c) => {
            match boxed_ref(&c.defresult).map_or(Figure::Default, |d| figure(d, depth + 1)) {
                Figure::Name(n, 2) => Figure::Name(n, 2),
                Figure::Unknown => Figure::Unknown,
                Figure::Name(..) | Figure::Default => name("case", 1),
            }
        }
        NodeRef::AArrayExpr(_) => name("array", 1),
        NodeRef::RowExpr(_) => name("row", 1),
        NodeRef::CoalesceExpr(_) => name("coalesce", 2),
        NodeRef::MinMaxExpr(m) => match pb::MinMaxOp::try_from(m.op) {
            Ok(pb::MinMaxOp::IsGreatest) => name("greatest", 2),
            Ok(pb::MinMaxOp::IsLeast) => name("least", 2),
            _ => Figure::Unknown,
        },
        NodeRef::XmlSerialize(_) => name("xmlserialize", 2),
        NodeRef::AConst(_)
        | NodeRef::ParamRef(_)
        | NodeRef::BoolExpr(_)
        | NodeRef::NullTest(_)
        | NodeRef::BooleanTest(_) => Figure::Default,
        _ => Figure::Unknown,
    }
}

/// The name of the first result column of a query (that of a scalar subquery).
fn first_output_name(q: &pb::SelectStmt, depth: usize) -> Option<String> {
    let mut leaf = q;
    while let Some(l) = leaf.larg.as_deref() {
        leaf = l;
    }
    if !leaf.values_lists.is_empty() {
        return Some("column1".to_owned());
    }
    let Some(NodeEnum::ResTarget(r)) = leaf.target_list.first().and_then(|n| n.node.as_ref())
    else {
        return None;
    };
    if !r.name.is_empty() {
        return Some(r.name.clone());
    }
    let val = boxed_ref(&r.val)?;
    if star_target(val).is_some() {
        return None;
    }
    match figure(val, depth + 1) {
        Figure::Name(n, _) => Some(n),
        Figure::Default => Some("?column?".to_owned()),
        Figure::Unknown => None,
    }
}

/// A target entry that expands to several columns: `*`, `t.*` (the qualifier names), `(p).*`
/// (an empty qualifier list: the expression says the rest).
fn star_target(val: NodeRef<'_>) -> Option<Vec<&str>> {
    match val {
        NodeRef::ColumnRef(c)
            if matches!(
                c.fields.last().and_then(|f| f.node.as_ref()),
                Some(NodeEnum::AStar(_))
            ) =>
        {
            Some(strings(&c.fields))
        }
        NodeRef::AIndirection(a)
            if matches!(
                a.indirection.last().and_then(|f| f.node.as_ref()),
                Some(NodeEnum::AStar(_))
            ) =>
        {
            Some(Vec::new())
        }
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// The pass

struct Lineage<'s> {
    default_schema: Option<&'s str>,
    /// FROM-list entries, one level per query being evaluated (outer levels are visible to
    /// correlated and lateral references).
    scopes: Vec<Vec<Entry>>,
    /// CTEs visible, one frame per WITH clause: name and columns.
    ctes: Vec<Vec<(String, Vec<Col>)>>,
    depth: usize,
    too_complex: bool,
    /// Recursive CTE body evaluations left ([`FIXPOINT_BUDGET`]).
    budget: u32,
    /// Work done so far ([`WORK_LIMIT`]); a `Cell` so that the read-only resolution
    /// functions can count too.
    work: Cell<usize>,
    /// How values are used besides being returned (see [`ColumnUses`]).
    uses: ColumnUses,
}

impl<'s> Lineage<'s> {
    fn new(default_schema: Option<&'s str>) -> Self {
        Self {
            default_schema,
            scopes: Vec::new(),
            ctes: Vec::new(),
            depth: 0,
            too_complex: false,
            budget: FIXPOINT_BUDGET,
            work: Cell::new(0),
            uses: ColumnUses::default(),
        }
    }

    /// Counts `n` units of work; past [`WORK_LIMIT`] the pass stops at the next
    /// [`Self::enter`] and the statement is too complex.
    fn charge(&self, n: usize) {
        self.work.set(self.work.get().saturating_add(n));
    }

    fn enter(&mut self) -> bool {
        if self.too_complex {
            return false;
        }
        if self.depth >= MAX_DEPTH || self.work.get() > WORK_LIMIT {
            self.too_complex = true;
            return false;
        }
        self.depth += 1;
        true
    }

    fn leave(&mut self) {
        self.depth = self.depth.saturating_sub(1);
    }

    fn push_entry(&mut self, e: Entry) {
        if let Some(scope) = self.scopes.last_mut() {
            scope.push(e);
        }
    }

    fn entries_len(&self) -> usize {
        self.scopes.last().map_or(0, Vec::len)
    }

    // --- statements ---------------------------------------------------------------------------

    fn opt_statement(&mut self, n: &Option<Box<pb::Node>>) -> Option<Vec<Col>> {
        boxed_ref(n).and_then(|n| self.statement(n))
    }

    /// The result columns of a statement that returns rows.
    fn statement(&mut self, node: NodeRef<'_>) -> Option<Vec<Col>> {
        if !self.enter() {
            return None;
        }
        let cols = match node {
            NodeRef::SelectStmt(s) => {
                let cols = self.query(s);
                if select_into(s) {
                    let table = into_table(s).map(|r| resolve_table(r, None, self.default_schema));
                    self.store_new(table, &cols);
                    None
                } else {
                    Some(cols)
                }
            }
            NodeRef::InsertStmt(s) => self.insert(s),
            NodeRef::UpdateStmt(s) => self.update(s),
            NodeRef::DeleteStmt(s) => self.delete(s),
            NodeRef::MergeStmt(s) => self.merge(s),
            _ => None,
        };
        self.leave();
        cols
    }

    fn query(&mut self, s: &pb::SelectStmt) -> Vec<Col> {
        if !self.enter() {
            return Vec::new();
        }
        let with = self.push_with(s.with_clause.as_ref());
        let cols = if s.larg.is_some() || s.rarg.is_some() {
            let left = s.larg.as_deref().map(|l| self.query(l)).unwrap_or_default();
            let right = s.rarg.as_deref().map(|r| self.query(r)).unwrap_or_default();
            let cols = combine(left, right);
            self.charge(weight(&cols));
            // UNION (without ALL), INTERSECT and EXCEPT compare the rows of the branches.
            let union_all = s.all
                && matches!(
                    pb::SetOperation::try_from(s.op),
                    Ok(pb::SetOperation::SetopUnion)
                );
            if !union_all {
                for c in &cols {
                    self.compared_value(&c.sources, false, 0);
                }
            }
            self.scopes.push(Vec::new());
            self.order_and_limit(s, &cols);
            self.scopes.pop();
            cols
        } else if !s.values_lists.is_empty() {
            self.scopes.push(Vec::new());
            let cols = self.values(&s.values_lists);
            self.order_and_limit(s, &cols);
            self.scopes.pop();
            cols
        } else {
            self.scopes.push(Vec::new());
            for n in &s.from_clause {
                if let Some(r) = node_ref(n) {
                    self.add_from_item(r);
                }
            }
            let cols = self.targets(&s.target_list);
            self.clauses(s, &cols);
            self.scopes.pop();
            cols
        };
        self.pop_with(with);
        self.leave();
        cols
    }

    /// A VALUES list: position-wise union of the rows (`column1`, `column2`, ...).
    fn values(&mut self, rows: &[pb::Node]) -> Vec<Col> {
        let mut cols: Vec<Col> = Vec::new();
        for row in rows {
            let Some(NodeEnum::List(l)) = &row.node else {
                continue;
            };
            for (i, item) in l.items.iter().enumerate() {
                let src = self.expr_node(item);
                match cols.get_mut(i) {
                    Some(c) => c.sources.extend(src),
                    None => cols.push(Col::named(Some(format!("column{}", i + 1)), src)),
                }
            }
        }
        cols
    }

    /// A target list (or RETURNING list) in the current scope.
    fn targets(&mut self, list: &[pb::Node]) -> Vec<Col> {
        let mut cols = Vec::with_capacity(list.len());
        for n in list {
            let Some(NodeEnum::ResTarget(r)) = &n.node else {
                continue;
            };
            let Some(val) = boxed_ref(&r.val) else {
                continue;
            };
            match star_target(val) {
                Some(qual) if matches!(val, NodeRef::ColumnRef(_)) => {
                    let mut src = Sources::new();
                    self.star(&qual, &mut src);
                    self.charge(src.len() + 1);
                    cols.push(Col::unknown(src));
                }
                Some(_) => cols.push(Col::unknown(self.expr(val))),
                None => {
                    let name = if r.name.is_empty() {
                        column_name(val)
                    } else {
                        Some(r.name.clone())
                    };
                    let sources = self.expr(val);
                    cols.push(Col::named(name, sources));
                }
            }
        }
        cols
    }

    /// The entries a DML statement's RETURNING sees for its target: the table (as aliased)
    /// and `old`/`new` (or their RETURNING WITH names), with the values the statement assigns.
    fn target_entries(
        &self,
        r: &pb::RangeVar,
        rc: &pb::ReturningClause,
        assigned: &[Col],
    ) -> Vec<Entry> {
        let table = resolve_table(r, None, self.default_schema);
        let rel = Rel::Table {
            table: table.clone(),
            renamed: Vec::new(),
            assigned: assigned.to_vec(),
        };
        let mut entries = vec![match &r.alias {
            Some(a) => Entry {
                name: a.aliasname.clone(),
                schema: None,
                rel: rel.clone(),
            },
            None => Entry {
                name: table.name.clone(),
                schema: table.schema.clone(),
                rel: rel.clone(),
            },
        }];
        let mut names = vec!["old".to_owned(), "new".to_owned()];
        for o in &rc.options {
            if let Some(NodeEnum::ReturningOption(opt)) = &o.node {
                names.push(opt.value.clone());
            }
        }
        self.charge(weight(assigned).saturating_mul(names.len() + 1));
        for name in names {
            entries.push(Entry {
                name,
                schema: None,
                rel: rel.clone(),
            });
        }
        entries
    }

    /// `SET col = expr, ...`: the values written, by target column.
    fn assignments(&mut self, list: &[pb::Node]) -> Vec<Col> {
        let mut out = Vec::new();
        for n in list {
            if let Some(NodeEnum::ResTarget(r)) = &n.node {
                let sources = boxed_ref(&r.val).map(|v| self.expr(v)).unwrap_or_default();
                let name = (!r.name.is_empty()).then(|| r.name.clone());
                out.push(Col::named(name, sources));
            }
        }
        out
    }

    /// Gives the first `count` entries of the current scope (a DML target) the values the
    /// statement assigns.
    fn set_assigned(&mut self, count: usize, values: &[Col]) {
        self.charge(weight(values).saturating_mul(count));
        if let Some(scope) = self.scopes.last_mut() {
            for e in scope.iter_mut().take(count) {
                if let Rel::Table { assigned, .. } = &mut e.rel {
                    assigned.extend(values.iter().cloned());
                }
            }
        }
    }

    fn returning_clause(rc: Option<&pb::ReturningClause>) -> Option<&pb::ReturningClause> {
        rc.filter(|rc| !rc.exprs.is_empty())
    }

    fn insert(&mut self, s: &pb::InsertStmt) -> Option<Vec<Col>> {
        let r = s.relation.as_ref()?;
        let rc = Self::returning_clause(s.returning_clause.as_ref());
        let no_returning = pb::ReturningClause::default();
        let with = self.push_with(s.with_clause.as_ref());
        let targets = strings_of_targets(&s.cols);
        let source = self.opt_statement(&s.select_stmt).unwrap_or_default();
        let mut assigned = positional(&targets, source);
        self.charge(weight(&assigned));
        let table = resolve_table(r, None, self.default_schema);
        if let Some(oc) = &s.on_conflict_clause {
            // ON CONFLICT DO UPDATE SET ... sees the target and `excluded` (the proposed row).
            let mut entries = self.target_entries(r, rc.unwrap_or(&no_returning), &assigned);
            let mut proposed = assigned.clone();
            // The proposed row also holds the table's defaults.
            let mut defaults = Sources::new();
            defaults.insert(ColumnRef {
                table: Some(table.clone()),
                column: "*".to_owned(),
            });
            proposed.push(Col::unknown(defaults));
            entries.push(Entry {
                name: "excluded".to_owned(),
                schema: None,
                rel: Rel::Derived(proposed),
            });
            self.scopes.push(entries);
            let set = self.assignments(&oc.target_list);
            if let Some(w) = boxed_ref(&oc.where_clause) {
                self.compute(w);
            }
            self.scopes.pop();
            assigned.extend(set);
        }
        self.store(&table, &assigned);
        let cols = rc.map(|rc| {
            let entries = self.target_entries(r, rc, &assigned);
            self.scopes.push(entries);
            let cols = self.targets(&rc.exprs);
            self.scopes.pop();
            cols
        });
        self.pop_with(with);
        cols
    }

    fn update(&mut self, s: &pb::UpdateStmt) -> Option<Vec<Col>> {
        let r = s.relation.as_ref()?;
        let rc = Self::returning_clause(s.returning_clause.as_ref());
        let no_returning = pb::ReturningClause::default();
        let with = self.push_with(s.with_clause.as_ref());
        let entries = self.target_entries(r, rc.unwrap_or(&no_returning), &[]);
        let count = entries.len();
        self.scopes.push(entries);
        for n in &s.from_clause {
            if let Some(f) = node_ref(n) {
                self.add_from_item(f);
            }
        }
        let assigned = self.assignments(&s.target_list);
        if let Some(w) = boxed_ref(&s.where_clause) {
            self.filter(w);
        }
        let table = resolve_table(r, None, self.default_schema);
        self.store(&table, &assigned);
        self.set_assigned(count, &assigned);
        let cols = rc.map(|rc| self.targets(&rc.exprs));
        self.scopes.pop();
        self.pop_with(with);
        cols
    }

    fn delete(&mut self, s: &pb::DeleteStmt) -> Option<Vec<Col>> {
        let r = s.relation.as_ref()?;
        let rc = Self::returning_clause(s.returning_clause.as_ref());
        let no_returning = pb::ReturningClause::default();
        let with = self.push_with(s.with_clause.as_ref());
        let entries = self.target_entries(r, rc.unwrap_or(&no_returning), &[]);
        self.scopes.push(entries);
        for n in &s.using_clause {
            if let Some(f) = node_ref(n) {
                self.add_from_item(f);
            }
        }
        if let Some(w) = boxed_ref(&s.where_clause) {
            self.filter(w);
        }
        let cols = rc.map(|rc| self.targets(&rc.exprs));
        self.scopes.pop();
        self.pop_with(with);
        cols
    }

    fn merge(&mut self, s: &pb::MergeStmt) -> Option<Vec<Col>> {
        let r = s.relation.as_ref()?;
        let rc = Self::returning_clause(s.returning_clause.as_ref());
        let no_returning = pb::ReturningClause::default();
        let with = self.push_with(s.with_clause.as_ref());
        let entries = self.target_entries(r, rc.unwrap_or(&no_returning), &[]);
        let count = entries.len();
        self.scopes.push(entries);
        if let Some(src) = boxed_ref(&s.source_relation) {
            self.add_from_item(src);
        }
        if let Some(c) = boxed_ref(&s.join_condition) {
            self.filter(c);
        }
        let mut assigned = Vec::new();
        for n in &s.merge_when_clauses {
            let Some(NodeEnum::MergeWhenClause(w)) = &n.node else {
                continue;
            };
            if let Some(c) = boxed_ref(&w.condition) {
                self.compute(c);
            }
            if matches!(
                pb::CmdType::try_from(w.command_type),
                Ok(pb::CmdType::CmdInsert)
            ) {
                let targets = strings_of_targets(&w.target_list);
                let values: Vec<Col> = w
                    .values
                    .iter()
                    .map(|v| Col::named(None, self.expr_node(v)))
                    .collect();
                let written = positional(&targets, values);
                self.charge(weight(&written));
                assigned.extend(written);
            } else {
                assigned.extend(self.assignments(&w.target_list));
            }
        }
        let table = resolve_table(r, None, self.default_schema);
        self.store(&table, &assigned);
        self.set_assigned(count, &assigned);
        let cols = rc.map(|rc| self.targets(&rc.exprs));
        self.scopes.pop();
        self.pop_with(with);
        cols
    }

    /// Evaluates a WITH clause and makes its CTEs visible; returns whether a frame was pushed.
    ///
    /// `WITH RECURSIVE`: every CTE starts as one column of unknown name and no sources, and the
    /// bodies are evaluated until nothing changes (sources only accumulate, so this ends). If
    /// it has not settled within [`FIXPOINT_ROUNDS`] (or the statement's budget is spent),
    /// every column gets every source seen: a recursive reference only passes on sources
    /// that some evaluation already produced, so that is a sound upper bound.
    fn push_with(&mut self, with: Option<&pb::WithClause>) -> bool {
        let Some(w) = with else { return false };
        let ctes: Vec<&pb::CommonTableExpr> = w
            .ctes
            .iter()
            .filter_map(|n| match &n.node {
                Some(NodeEnum::CommonTableExpr(c)) => Some(&**c),
                _ => None,
            })
            .collect();
        if !w.recursive {
            self.ctes.push(Vec::new());
            for c in ctes {
                let cols = self.cte(c);
                if let Some(frame) = self.ctes.last_mut() {
                    frame.push((c.ctename.clone(), cols));
                }
            }
            return true;
        }
        self.ctes.push(
            ctes.iter()
                .map(|c| (c.ctename.clone(), vec![Col::unknown(Sources::new())]))
                .collect(),
        );
        let mut rounds = 0;
        loop {
            let computed: Vec<(String, Vec<Col>)> = ctes
                .iter()
                .map(|c| (c.ctename.clone(), self.cte(c)))
                .collect();
            rounds += 1;
            self.budget = self.budget.saturating_sub(1);
            let Some(frame) = self.ctes.last_mut() else {
                break;
            };
            let next: Vec<(String, Vec<Col>)> = frame
                .iter()
                .zip(computed)
                .map(|((_, prev), (name, cols))| (name, accumulate(prev, cols)))
                .collect();
            let settled = next == *frame;
            let w: usize = next.iter().map(|(_, cols)| weight(cols)).sum();
            *frame = next;
            self.work.set(self.work.get().saturating_add(w));
            if settled || self.too_complex {
                break;
            }
            if rounds >= FIXPOINT_ROUNDS || self.budget == 0 {
                let mut all = Sources::new();
                for (_, cols) in frame.iter() {
                    cols_all(cols, &mut all);
                }
                let mut copies = 0usize;
                for (_, cols) in frame.iter_mut() {
                    for c in cols {
                        c.sources.clone_from(&all);
                        copies = copies.saturating_add(all.len());
                    }
                }
                self.work.set(self.work.get().saturating_add(copies));
                break;
            }
        }
        true
    }

    fn pop_with(&mut self, pushed: bool) {
        if pushed {
            self.ctes.pop();
        }
    }

    /// The columns of one CTE (renamed by its column list).
    fn cte(&mut self, c: &pb::CommonTableExpr) -> Vec<Col> {
        let mut cols = self.opt_statement(&c.ctequery).unwrap_or_default();
        rename(&mut cols, &strings(&c.aliascolnames));
        cols
    }

    fn find_cte(&self, name: &str) -> Option<Vec<Col>> {
        self.ctes.iter().rev().find_map(|frame| {
            frame
                .iter()
                .rev()
                .find(|(n, _)| n == name)
                .map(|(_, cols)| cols.clone())
        })
    }

    // --- FROM ---------------------------------------------------------------------------------

    /// One FROM-list item: adds its entries to the current scope.
    fn add_from_item(&mut self, node: NodeRef<'_>) {
        if !self.enter() {
            return;
        }
        match node {
            NodeRef::RangeVar(r) => {
                let alias_cols = r
                    .alias
                    .as_ref()
                    .map(|a| strings(&a.colnames))
                    .unwrap_or_default();
                let cte = if r.schemaname.is_empty() && r.catalogname.is_empty() {
                    self.find_cte(&r.relname)
                } else {
                    None
                };
                let e = if let Some(mut cols) = cte {
                    self.charge(weight(&cols));
                    rename(&mut cols, &alias_cols);
                    Entry {
                        name: r
                            .alias
                            .as_ref()
                            .map_or(&r.relname, |a| &a.aliasname)
                            .clone(),
                        schema: None,
                        rel: Rel::Derived(cols),
                    }
                } else {
                    let table = resolve_table(r, None, self.default_schema);
                    let (name, schema) = match &r.alias {
                        Some(a) => (a.aliasname.clone(), None),
                        None => (table.name.clone(), table.schema.clone()),
                    };
                    Entry {
                        name,
                        schema,
                        rel: Rel::Table {
                            table,
                            renamed: alias_cols.into_iter().map(str::to_owned).collect(),
                            assigned: Vec::new(),
                        },
                    }
                };
                self.push_entry(e);
            }
            NodeRef::RangeSubselect(s) => {
                let mut cols = self.opt_statement(&s.subquery).unwrap_or_default();
                let (name, alias_cols) = match &s.alias {
                    Some(a) => (a.aliasname.clone(), strings(&a.colnames)),
                    None => (String::new(), Vec::new()),
                };
                rename(&mut cols, &alias_cols);
                self.push_entry(Entry {
                    name,
                    schema: None,
                    rel: Rel::Derived(cols),
                });
            }
            NodeRef::RangeFunction(f) => {
                let mut src = Sources::new();
                let mut first_name = None;
                for item in &f.functions {
                    // Each item is a list: the function call, then its column definitions.
                    let call = match &item.node {
                        Some(NodeEnum::List(l)) => l.items.first().and_then(node_ref),
                        _ => node_ref(item),
                    };
                    let Some(call) = call else { continue };
                    if let NodeRef::FuncCall(fc) = call {
                        if first_name.is_none() {
                            first_name = strings(&fc.funcname).last().map(|s| (*s).to_owned());
                        }
                        self.call_args(fc, &mut src);
                    } else {
                        self.expr_into(call, &mut src);
                    }
                }
                // How many rows a function returns, and which, depends on its arguments.
                self.computed(&src);
                let src = src.derive();
                let name = f
                    .alias
                    .as_ref()
                    .map(|a| a.aliasname.clone())
                    .or(first_name)
                    .unwrap_or_default();
                self.push_entry(Entry {
                    name,
                    schema: None,
                    rel: Rel::Derived(vec![Col::unknown(src)]),
                });
            }
            NodeRef::RangeTableSample(t) => {
                if let Some(r) = boxed_ref(&t.relation) {
                    self.add_from_item(r);
                }
                for a in &t.args {
                    if let Some(a) = node_ref(a) {
                        self.compute(a);
                    }
                }
                if let Some(r) = boxed_ref(&t.repeatable) {
                    self.compute(r);
                }
            }
            NodeRef::JoinExpr(j) => {
                let start = self.entries_len();
                if let Some(l) = boxed_ref(&j.larg) {
                    self.add_from_item(l);
                }
                if let Some(r) = boxed_ref(&j.rarg) {
                    self.add_from_item(r);
                }
                let end = self.entries_len();
                self.join_conditions(j, start, end);
                let join = Rel::Join { start, end };
                if let Some(a) = &j.join_using_alias {
                    self.push_entry(Entry {
                        name: a.aliasname.clone(),
                        schema: None,
                        rel: join.clone(),
                    });
                }
                if let Some(a) = &j.alias {
                    let rel = if a.colnames.is_empty() {
                        join
                    } else {
                        // Renamed join columns: positions unknown, so any of them.
                        let mut src = Sources::new();
                        if let Some(level) = self.scopes.last() {
                            for e in join_items(level, start, end) {
                                e.whole_row(level, &mut src);
                            }
                        }
                        self.charge(src.len());
                        Rel::Derived(vec![Col::unknown(src)])
                    };
                    self.push_entry(Entry {
                        name: a.aliasname.clone(),
                        schema: None,
                        rel,
                    });
                }
            }
            NodeRef::RangeTableFunc(t) => {
                let name = t.alias.as_ref().map(|a| a.aliasname.clone());
                self.opaque_item(node, name.unwrap_or_else(|| "xmltable".to_owned()));
            }
            NodeRef::JsonTable(t) => {
                let name = t.alias.as_ref().map(|a| a.aliasname.clone());
                self.opaque_item(node, name.unwrap_or_else(|| "json_table".to_owned()));
            }
            other => self.opaque_item(other, String::new()),
        }
        self.leave();
    }

    /// A FROM item whose columns all come from all of its expressions (XMLTABLE, JSON_TABLE).
    fn opaque_item(&mut self, node: NodeRef<'_>, name: String) {
        let mut src = Sources::new();
        for_each_child(node, &mut |c| self.expr_into(c, &mut src));
        self.computed(&src);
        self.push_entry(Entry {
            name,
            schema: None,
            rel: Rel::Derived(vec![Col::unknown(src.derive())]),
        });
    }

    /// JOIN ... ON (a condition on the rows), USING and NATURAL (the named or common columns
    /// of both sides compared); `start..end`: the joined items in the current scope.
    fn join_conditions(&mut self, j: &pb::JoinExpr, start: usize, end: usize) {
        if let Some(q) = boxed_ref(&j.quals) {
            self.filter(q);
        }
        let mut both = Sources::new();
        if let Some(level) = self.scopes.last() {
            let items = join_items(level, start, end);
            if j.is_natural {
                for e in items {
                    e.whole_row(level, &mut both);
                }
            } else {
                let items: Vec<&Entry> = items.collect();
                for name in strings(&j.using_clause) {
                    for e in &items {
                        if e.has(level, name) != Has::No {
                            e.column(level, name, &mut both);
                        }
                    }
                }
            }
        }
        self.compared_value(&both, false, 0);
    }

    // --- references ---------------------------------------------------------------------------

    /// The entry a qualifier names (`[rel]`, `[schema, rel]`), innermost query level first,
    /// with the scope level it is in.
    fn find_entry(&self, qual: &[&str]) -> Option<(&[Entry], &Entry)> {
        let (rel, rest) = qual.split_last()?;
        let schema = rest.last();
        self.scopes.iter().rev().find_map(|scope| {
            scope
                .iter()
                .rev()
                .find(|e| {
                    !e.name.is_empty()
                        && e.name == *rel
                        && match schema {
                            None => true,
                            Some(s) => e.schema.as_deref() == Some(*s),
                        }
                })
                .map(|e| (scope.as_slice(), e))
        })
    }

    /// `*` (every item of this query level) or `t.*`.
    fn star(&self, qual: &[&str], out: &mut Sources) {
        if qual.is_empty() {
            if let Some(level) = self.scopes.last() {
                self.charge(level.len());
                for e in level {
                    e.whole_row(level, out);
                }
            }
        } else if let Some((level, e)) = self.find_entry(qual) {
            e.whole_row(level, out);
        } else if let Some(first) = qual.first() {
            // Not a FROM item: a composite column (the server would reject it).
            self.bare(first, None, out);
        }
    }

    /// A bare column name: every item that may have it, level by level from the innermost,
    /// stopping after a level where some item certainly has it (the server resolves there);
    /// `table: None` when nothing may have it. `skip`: an item already reported whole.
    fn bare(&self, col: &str, skip: Option<&Entry>, out: &mut Sources) {
        let mut candidate = false;
        for level in self.scopes.iter().rev() {
            let mut certain = false;
            for e in level.iter().rev() {
                if skip.is_some_and(|s| std::ptr::eq(s, e)) {
                    continue;
                }
                self.charge(match e.rel {
                    Rel::Join { start, end } => 1 + end.saturating_sub(start),
                    _ => 1,
                });
                match e.has(level, col) {
                    Has::No => {}
                    has => {
                        candidate = true;
                        certain |= has == Has::Yes;
                        e.column(level, col, out);
                    }
                }
            }
            if certain {
                break;
            }
        }
        if !candidate && skip.is_none() {
            out.insert(ColumnRef {
                table: None,
                column: col.to_owned(),
            });
        }
    }

    /// `qual.col`; when `qual` names no FROM item, `fallback` is a composite column.
    fn qualified(&self, qual: &[&str], col: &str, fallback: &str, out: &mut Sources) {
        match self.find_entry(qual) {
            Some((level, e)) => e.column(level, col, out),
            None => self.bare(fallback, None, out),
        }
    }

    fn column_ref(&self, c: &pb::ColumnRef, out: &mut Sources) {
        let mut names = Vec::new();
        let mut star = false;
        for f in &c.fields {
            match &f.node {
                Some(NodeEnum::String(s)) => names.push(s.sval.as_str()),
                Some(NodeEnum::AStar(_)) => star = true,
                _ => {}
            }
        }
        if star {
            self.star(&names, out);
            return;
        }
        match names.as_slice() {
            [] => {}
            [name] => match self.find_entry(&[name]) {
                // A bare item name is a whole-row reference (row_to_json(p), p::text), unless
                // a column of that name exists, which the server tries first: report both.
                Some((level, e)) => {
                    e.whole_row(level, out);
                    self.bare(name, Some(e), out);
                }
                None => self.bare(name, None, out),
            },
            [rel, col] => self.qualified(&[rel], col, rel, out),
            [schema, rel, col] => {
                if self.find_entry(&[schema, rel]).is_some() {
                    self.qualified(&[schema, rel], col, schema, out);
                } else {
                    // rel.col.field
                    self.qualified(&[schema], rel, schema, out);
                }
            }
            [_db, schema, rel, col, ..] => self.qualified(&[schema, rel], col, schema, out),
        }
    }

    /// `(p).card_number`, `(p.*).card_number`, `(p).*`: a field of a whole row.
    fn indirection(&mut self, node: NodeRef<'_>, a: &pb::AIndirection, out: &mut Sources) {
        let handled = match boxed_ref(&a.arg) {
            Some(NodeRef::ColumnRef(c)) => {
                let (mut names, mut star) = (Vec::new(), false);
                for f in &c.fields {
                    match &f.node {
                        Some(NodeEnum::String(s)) => names.push(s.sval.as_str()),
                        Some(NodeEnum::AStar(_)) => star = true,
                        _ => {}
                    }
                }
                let whole_row = names.len() == 1 || (star && !names.is_empty());
                match self.find_entry(&names) {
                    Some((level, e)) if whole_row => {
                        match a.indirection.first().and_then(|n| n.node.as_ref()) {
                            Some(NodeEnum::String(s)) => e.column(level, &s.sval, out),
                            _ => e.whole_row(level, out),
                        }
                        if !star && let Some(name) = names.first() {
                            // `(x).f` where x is a column of another item.
                            self.bare(name, Some(e), out);
                        }
                        true
                    }
                    _ => false,
                }
            }
            _ => false,
        };
        // Subscripts select (and so reveal) values: their sources flow too, computed with.
        let mut inner = Sources::new();
        if handled {
            for n in &a.indirection {
                self.expr_node_into(n, &mut inner);
            }
        } else {
            for_each_child(node, &mut |c| self.expr_into(c, &mut inner));
        }
        out.extend(inner.derive());
    }

    // --- expressions --------------------------------------------------------------------------

    fn expr(&mut self, node: NodeRef<'_>) -> Sources {
        let mut out = Sources::new();
        self.expr_into(node, &mut out);
        out
    }

    fn expr_node(&mut self, n: &pb::Node) -> Sources {
        let mut out = Sources::new();
        self.expr_node_into(n, &mut out);
        out
    }

    fn expr_node_into(&mut self, n: &pb::Node, out: &mut Sources) {
        if let Some(r) = node_ref(n) {
            self.expr_into(r, out);
        }
    }

    fn opt_expr_into(&mut self, n: &Option<Box<pb::Node>>, out: &mut Sources) {
        if let Some(r) = boxed_ref(n) {
            self.expr_into(r, out);
        }
    }

    /// What can flow into the value of an expression.
    fn expr_into(&mut self, node: NodeRef<'_>, out: &mut Sources) {
        if !self.enter() {
            return;
        }
        match node {
            NodeRef::ColumnRef(c) => {
                let mut found = Sources::new();
                self.column_ref(c, &mut found);
                self.charge(found.len() + 1);
                out.extend(found);
            }
            NodeRef::AIndirection(a) => {
                let mut found = Sources::new();
                self.indirection(node, a, &mut found);
                self.charge(found.len() + 1);
                out.extend(found);
            }
            NodeRef::FuncCall(f) => self.call(f, out),
            // Tests and comparisons in a value: each one reveals a bit of what it looks at,
            // and a result can hold many of them.
            NodeRef::AExpr(e) if is_boolean(e) => self.compute_children(node),
            NodeRef::BoolExpr(_) | NodeRef::BooleanTest(_) => self.compute_children(node),
            NodeRef::NullTest(n) => {
                let f = boxed_ref(&n.arg).map(|a| self.expr(a)).unwrap_or_default();
                if !f.exact() {
                    self.computed(&f);
                }
            }
            NodeRef::SubLink(s) => {
                use pb::SubLinkType as T;
                match T::try_from(s.sub_link_type) {
                    // A scalar subquery: its value as it is.
                    Ok(T::ExprSublink) => self.opt_expr_into(&s.subselect, out),
                    Ok(T::ArraySublink) => {
                        let mut inner = Sources::new();
                        self.opt_expr_into(&s.subselect, &mut inner);
                        out.extend(inner.derive());
                    }
                    _ => self.compute_children(node),
                }
            }
            NodeRef::CaseExpr(c) => {
                // The results flow (as a choice among them: derived); the operand and the
                // conditions are computed with.
                if let Some(arg) = boxed_ref(&c.arg) {
                    self.compute(arg);
                }
                let mut results = Sources::new();
                for w in &c.args {
                    if let Some(NodeEnum::CaseWhen(w)) = &w.node {
                        if let Some(cond) = boxed_ref(&w.expr) {
                            self.compute(cond);
                        }
                        self.opt_expr_into(&w.result, &mut results);
                    }
                }
                self.opt_expr_into(&c.defresult, &mut results);
                out.extend(results.derive());
            }
            NodeRef::CollateClause(c) => self.opt_expr_into(&c.arg, out),
            NodeRef::SelectStmt(s) => {
                // A scalar or ARRAY subquery (reached through its SubLink): all its outputs.
                for c in self.query(s) {
                    out.extend(c.sources);
                }
            }
            NodeRef::AConst(_) | NodeRef::ParamRef(_) => out.constant = true,
            NodeRef::SqlvalueFunction(_)
            | NodeRef::SetToDefault(_)
            | NodeRef::GroupingFunc(_)
            | NodeRef::MergeSupportFunc(_)
            | NodeRef::WindowDef(_)
            | NodeRef::TypeName(_) => {}
            // Operators, casts, row and array constructors, COALESCE, GREATEST...: a value
            // computed from those of the children, which fails on some of them unless the
            // operation is known to be total.
            _ => {
                let mut inner = Sources::new();
                for_each_child(node, &mut |c| self.expr_into(c, &mut inner));
                self.fallible(|| fallible_operation(node), &inner);
                out.extend(inner.derive());
            }
        }
        self.leave();
    }

    /// The arguments of a call (and the ordering column of `WITHIN GROUP`, which is the
    /// aggregated value); not its FILTER, window or the ORDER BY of an ordinary aggregate.
    fn call_args(&mut self, f: &pb::FuncCall, out: &mut Sources) {
        self.each_call_arg(f, |_, _, _, s| out.extend(s));
    }

    /// The sources of each argument of a call, with its position (`None` for the ordering
    /// column of `WITHIN GROUP`) and whether it is named (`f(x => v)`).
    fn each_call_arg(
        &mut self,
        f: &pb::FuncCall,
        mut each: impl FnMut(&mut Self, Option<usize>, bool, Sources),
    ) {
        for (i, a) in f.args.iter().enumerate() {
            let s = self.expr_node(a);
            let named = matches!(a.node, Some(NodeEnum::NamedArgExpr(_)));
            each(self, Some(i), named, s);
        }
        if f.agg_within_group {
            for o in &f.agg_order {
                if let Some(NodeEnum::SortBy(sb)) = &o.node {
                    let mut s = Sources::new();
                    self.opt_expr_into(&sb.node, &mut s);
                    each(self, None, false, s);
                }
            }
        }
    }
}

/// The operation of an expression node (of the catch-all arm of [`Lineage::expr_into`]) that
/// can fail on some values of its operands, named for the refusal; `None` when it answers
/// every value (see [`totality`]).
fn fallible_operation(node: NodeRef<'_>) -> Option<String> {
    use pb::AExprKind as K;
    match node {
        NodeRef::TypeCast(t) => (!totality::cast(t.type_name.as_ref()))
            .then(|| format!("a cast to {}", totality::type_label(t.type_name.as_ref()))),
        NodeRef::AExpr(e) => match K::try_from(e.kind) {
            Ok(K::AexprNullif) => None,
            Ok(K::AexprOp) if totality::operator(&e.name) => None,
            _ => Some(format!("operator {}", strings(&e.name).join("."))),
        },
        NodeRef::CoalesceExpr(_)
        | NodeRef::MinMaxExpr(_)
        | NodeRef::RowExpr(_)
        | NodeRef::AArrayExpr(_)
        | NodeRef::NamedArgExpr(_) => None,
        _ => Some("an expression not known to answer every value".to_owned()),
    }
}

/// The table of `SELECT ... INTO t` (on the leftmost branch of a set operation).
fn into_table(s: &pb::SelectStmt) -> Option<&pb::RangeVar> {
    let mut cur = s;
    loop {
        if let Some(i) = &cur.into_clause {
            return i.rel.as_ref();
        }
        cur = cur.larg.as_deref()?;
    }
}

/// The next state of a recursive CTE: the new columns, with the sources of the previous
/// state kept where the shapes agree (so that the iteration only grows and must end).
fn accumulate(prev: &[Col], mut cols: Vec<Col>) -> Vec<Col> {
    let same_shape =
        prev.len() == cols.len() && prev.iter().zip(&cols).all(|(p, c)| p.star == c.star);
    if same_shape {
        for (c, p) in cols.iter_mut().zip(prev) {
            c.sources.extend_ref(&p.sources);
        }
    }
    cols
}

/// The column names of an INSERT column list (MERGE ... INSERT (a, b)).
fn strings_of_targets(list: &[pb::Node]) -> Vec<&str> {
    list.iter()
        .filter_map(|n| match &n.node {
            Some(NodeEnum::ResTarget(t)) => Some(t.name.as_str()),
            _ => None,
        })
        .collect()
}
