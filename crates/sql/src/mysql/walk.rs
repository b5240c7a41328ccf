//! What one parsed statement reads: tables, columns, functions, result-column lineage.
//!
//! Why a whole-tree visitor and not a walk of the clauses one knows: sqlparser's AST has
//! hundreds of node types, and a column or function missed in one of them would be a read the
//! policy never sees. The derived visitor reaches every expression, table factor and query of
//! the statement whatever clause holds it, so what is collected here is complete by
//! construction; only the *structure* used for lineage (the projection of the outermost query)
//! is walked by hand, and everything it does not understand falls back to "every column".
//!
//! Resolution is without a catalog, over-approximating (the same rules as the PostgreSQL
//! analyser): a bare column belongs to every table of the statement, `x.c` to the tables `x`
//! names (alias or table name) or to every table when `x` is not a known table (derived table,
//! CTE), `db.t.c` to `db.t`. Names are compared in lower case.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::ops::ControlFlow;

use gatehouse_core::policy::{ColumnRef, Compared, OutputColumn, TableRef};
use sqlparser::ast::{
    BinaryOperator, Expr, FunctionArg, FunctionArgExpr, FunctionArguments, Ident, InTarget,
    ObjectName, ObjectNamePart, Query, Select, SelectItem, SelectItemQualifiedWildcardKind,
    SetExpr, TableFactor, Value, Visit, Visitor,
};

use super::MysqlContext;

/// A column reference as written: qualifier parts and column (`*` for a star), lower case.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct RawColumn {
    qualifier: Vec<String>,
    column: String,
}

/// A relation a qualifier can stand for.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Target {
    Table(TableRef),
    /// A derived table, a table function, anything whose columns are not a table's.
    Unknown,
}

/// Everything collected from one statement (or one part of it).
#[derive(Debug, Default)]
pub(crate) struct Collected {
    /// Every relation named in relation position (FROM, JOIN, INSERT INTO, ...).
    pub tables: BTreeSet<TableRef>,
    pub functions: BTreeSet<String>,
    /// Column references (and stars) other than the plain projection items of the outermost
    /// query: every one of these is a computation on the value.
    computed: Vec<RawColumn>,
    /// Plain projection items of the outermost query, and columns compared as they are.
    plain: Vec<RawColumn>,
    /// Conditions that compare columns as they are (`c = 'x'`, `c = ?`, `c IN (...)`,
    /// `a.c = b.c`): the columns of each, and whether a constant is one side.
    compared: Vec<(Vec<RawColumn>, bool)>,
    /// Columns of which a condition uses only the last four characters (`c LIKE '%1234'`).
    last4: Vec<RawColumn>,
    /// Qualifier → what it names.
    aliases: BTreeMap<String, BTreeSet<Target>>,
    /// The queries of derived tables and CTEs: outer references to their columns can carry
    /// anything they output.
    derived_queries: usize,
    /// A FROM item whose columns are not a table's nor a query's (JSON_TABLE, table functions).
    opaque_from: bool,
}

fn ident(i: &Ident) -> String {
    i.value.to_lowercase()
}

fn name_parts(name: &ObjectName) -> Vec<String> {
    name.0
        .iter()
        .map(|p| match p {
            ObjectNamePart::Identifier(i) => ident(i),
            ObjectNamePart::Function(f) => ident(&f.name),
        })
        .collect()
}

/// `db.t` → {db, t}; `t` → {current database, t}.
pub(crate) fn table_ref(name: &ObjectName, ctx: &MysqlContext) -> TableRef {
    table_from_parts(&name_parts(name), ctx)
}

fn table_from_parts(parts: &[String], ctx: &MysqlContext) -> TableRef {
    match parts {
        [t] => TableRef {
            schema: ctx.database.as_ref().map(|d| d.to_lowercase()),
            name: t.clone(),
        },
        [.., db, t] => TableRef {
            schema: Some(db.clone()),
            name: t.clone(),
        },
        [] => TableRef {
            schema: None,
            name: String::new(),
        },
    }
}

/// The function name as written, lower case.
pub(crate) fn function_name(name: &ObjectName) -> String {
    name_parts(name).join(".")
}

struct Collector<'a> {
    ctx: &'a MysqlContext,
    out: Collected,
    /// Expressions that are plain projection items of the outermost query (by address: the
    /// visitor hands out references into the same tree).
    plain_exprs: HashSet<*const Expr>,
    /// Selects of the outermost query (by address), whose stars are plain items.
    outer_selects: HashSet<*const Select>,
    /// Column references that a condition compares as they are (by address).
    compared_exprs: HashSet<*const Expr>,
}

/// A column reference as written, or `None` for anything else (user variables included).
fn raw_column(e: &Expr) -> Option<RawColumn> {
    match e {
        Expr::Identifier(i) if i.quote_style.is_none() && i.value.starts_with('@') => None,
        Expr::Identifier(i) => Some(RawColumn {
            qualifier: Vec::new(),
            column: ident(i),
        }),
        Expr::CompoundIdentifier(parts) => {
            let mut parts: Vec<String> = parts.iter().map(ident).collect();
            let column = parts.pop()?;
            Some(RawColumn {
                qualifier: parts,
                column,
            })
        }
        Expr::Nested(inner) => raw_column(inner),
        _ => None,
    }
}

/// A literal or a bind parameter: a value the client chose.
fn is_constant(e: &Expr) -> bool {
    match e {
        Expr::Value(v) => matches!(
            v.value,
            Value::SingleQuotedString(_)
                | Value::DoubleQuotedString(_)
                | Value::Number(..)
                | Value::Placeholder(_)
        ),
        Expr::Nested(inner) => is_constant(inner),
        _ => false,
    }
}

/// The conjuncts of a condition (`a AND b AND c`).
fn conjuncts<'e>(e: &'e Expr, out: &mut Vec<&'e Expr>) {
    match e {
        Expr::BinaryOp {
            left,
            op: BinaryOperator::And,
            right,
        } => {
            conjuncts(left, out);
            conjuncts(right, out);
        }
        Expr::Nested(inner) => conjuncts(inner, out),
        other => out.push(other),
    }
}

/// A conjunct that compares columns as they are: the column references, whether a constant is
/// one side, and how many client-chosen values it tests. Only `=` and a positive `IN` list of
/// constants; anything else is a computation. Each value of an `IN` list is a guess of its
/// own: a list of a thousand candidates would otherwise test a thousand card numbers per
/// statement under one allowance.
fn comparison(e: &Expr) -> Option<(Vec<&Expr>, bool, usize)> {
    let leaf = |x: &'_ Expr| raw_column(x).is_some();
    match e {
        Expr::BinaryOp {
            left,
            op: BinaryOperator::Eq,
            right,
        } => match (leaf(left), leaf(right)) {
            (true, true) => Some((vec![&**left, &**right], false, 0)),
            (true, false) if is_constant(right) => Some((vec![&**left], true, 1)),
            (false, true) if is_constant(left) => Some((vec![&**right], true, 1)),
            _ => None,
        },
        Expr::In {
            expr,
            target: InTarget::List(list),
            negated: false,
            ..
        } if leaf(expr) && !list.is_empty() && list.iter().all(is_constant) => {
            Some((vec![&**expr], true, list.len()))
        }
        _ => None,
    }
}

/// `c LIKE '%1234'` (one to four digits after a single leading `%`, no escape clause) or
/// `RIGHT(c, n) = constant` (a literal `n` from 0 to 4): only the last characters of `c` are
/// tested. The column reference, if so.
fn last4_match(e: &Expr) -> Option<&Expr> {
    if let Expr::BinaryOp {
        left,
        op: BinaryOperator::Eq,
        right,
    } = e
    {
        return match (right_call(left), right_call(right)) {
            (Some(c), None) if is_constant(right) => Some(c),
            (None, Some(c)) if is_constant(left) => Some(c),
            _ => None,
        };
    }
    let Expr::Like {
        negated: false,
        any: false,
        expr,
        pattern,
        escape_char: None,
    } = e
    else {
        return None;
    };
    raw_column(expr)?;
    let Expr::Value(v) = &**pattern else {
        return None;
    };
    let (Value::SingleQuotedString(p) | Value::DoubleQuotedString(p)) = &v.value else {
        return None;
    };
    let digits = p.strip_prefix('%')?;
    let ok = (1..=4).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit());
    ok.then_some(&**expr)
}

/// `RIGHT(c, n)` of a column as it is with a literal `n` from 0 to 4: the column reference.
fn right_call(e: &Expr) -> Option<&Expr> {
    let Expr::Function(f) = column_leaf(e) else {
        return None;
    };
    if !function_name(&f.name).eq_ignore_ascii_case("right") {
        return None;
    }
    let FunctionArguments::List(list) = &f.args else {
        return None;
    };
    if list.duplicate_treatment.is_some() || !list.clauses.is_empty() {
        return None;
    }
    let [
        FunctionArg::Unnamed(FunctionArgExpr::Expr(c)),
        FunctionArg::Unnamed(FunctionArgExpr::Expr(n)),
    ] = list.args.as_slice()
    else {
        return None;
    };
    raw_column(c)?;
    let Expr::Value(v) = column_leaf(n) else {
        return None;
    };
    let Value::Number(digits, _) = &v.value else {
        return None;
    };
    matches!(digits.as_str(), "0" | "1" | "2" | "3" | "4").then_some(c)
}

/// The column reference itself under any parentheses (what the visitor hands out).
fn column_leaf(e: &Expr) -> &Expr {
    match e {
        Expr::Nested(inner) => column_leaf(inner),
        other => other,
    }
}

impl Visitor for Collector<'_> {
    type Break = ();

    fn pre_visit_relation(&mut self, relation: &ObjectName) -> ControlFlow<()> {
        let t = table_ref(relation, self.ctx);
        self.out.tables.insert(t);
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, f: &TableFactor) -> ControlFlow<()> {
        match f {
            TableFactor::Table { name, alias, .. } => {
                let t = table_ref(name, self.ctx);
                let target = Target::Table(t.clone());
                self.out
                    .aliases
                    .entry(t.name.clone())
                    .or_default()
                    .insert(target.clone());
                if let Some(a) = alias {
                    self.out
                        .aliases
                        .entry(ident(&a.name))
                        .or_default()
                        .insert(target);
                }
            }
            TableFactor::Derived { alias, .. } => {
                self.out.derived_queries += 1;
                if let Some(a) = alias {
                    self.out
                        .aliases
                        .entry(ident(&a.name))
                        .or_default()
                        .insert(Target::Unknown);
                }
            }
            TableFactor::NestedJoin { alias, .. } => {
                if let Some(a) = alias {
                    self.out
                        .aliases
                        .entry(ident(&a.name))
                        .or_default()
                        .insert(Target::Unknown);
                }
            }
            _ => {
                self.out.opaque_from = true;
            }
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_query(&mut self, q: &Query) -> ControlFlow<()> {
        if let Some(with) = &q.with {
            self.out.derived_queries += with.cte_tables.len();
            for cte in &with.cte_tables {
                self.out
                    .aliases
                    .entry(ident(&cte.alias.name))
                    .or_default()
                    .insert(Target::Unknown);
            }
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_select(&mut self, s: &Select) -> ControlFlow<()> {
        // WHERE and HAVING conjuncts that compare columns as they are.
        let mut parts = Vec::new();
        for cond in [&s.selection, &s.having].into_iter().flatten() {
            conjuncts(cond, &mut parts);
        }
        for part in parts {
            if let Some(column) = last4_match(part) {
                if let Some(raw) = raw_column(column) {
                    self.compared_exprs
                        .insert(std::ptr::from_ref(column_leaf(column)));
                    self.out.last4.push(raw);
                }
                continue;
            }
            if let Some((columns, constant, values)) = comparison(part) {
                let raws: Vec<RawColumn> = columns.iter().filter_map(|c| raw_column(c)).collect();
                for c in columns {
                    self.compared_exprs
                        .insert(std::ptr::from_ref(column_leaf(c)));
                }
                // One comparison per client-chosen value (the judge allows one per statement).
                for _ in 0..values.max(1) {
                    self.out.compared.push((raws.clone(), constant));
                }
            }
        }
        let outer = self.outer_selects.contains(&std::ptr::from_ref(s));
        for item in &s.projection {
            let star = match item {
                SelectItem::Wildcard(_) => Some(Vec::new()),
                SelectItem::QualifiedWildcard(
                    SelectItemQualifiedWildcardKind::ObjectName(n),
                    _,
                ) => Some(name_parts(n)),
                SelectItem::QualifiedWildcard(SelectItemQualifiedWildcardKind::Expr(_), _) => {
                    Some(Vec::new())
                }
                _ => None,
            };
            if let Some(qualifier) = star {
                let raw = RawColumn {
                    qualifier,
                    column: "*".to_owned(),
                };
                if outer {
                    self.out.plain.push(raw);
                } else {
                    self.out.computed.push(raw);
                }
            }
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
        let raw = match e {
            // `@x`, `@@version`: variables, not columns.
            Expr::Identifier(i) if i.quote_style.is_none() && i.value.starts_with('@') => None,
            Expr::Identifier(i) => Some(RawColumn {
                qualifier: Vec::new(),
                column: ident(i),
            }),
            Expr::CompoundIdentifier(parts) => {
                let mut parts: Vec<String> = parts.iter().map(ident).collect();
                let column = parts.pop().unwrap_or_default();
                Some(RawColumn {
                    qualifier: parts,
                    column,
                })
            }
            Expr::Function(f) => {
                let name = function_name(&f.name);
                // `count(*)` reveals no column; a star in any other function's arguments
                // stands for every column.
                if let FunctionArguments::List(list) = &f.args {
                    for arg in &list.args {
                        let arg = match arg {
                            FunctionArg::Named { arg, .. }
                            | FunctionArg::ExprNamed { arg, .. }
                            | FunctionArg::Unnamed(arg) => arg,
                        };
                        let qualifier = match arg {
                            FunctionArgExpr::Wildcard | FunctionArgExpr::WildcardWithOptions(_)
                                if name != "count" =>
                            {
                                Some(Vec::new())
                            }
                            FunctionArgExpr::QualifiedWildcard(n) => Some(name_parts(n)),
                            _ => None,
                        };
                        if let Some(qualifier) = qualifier {
                            self.out.computed.push(RawColumn {
                                qualifier,
                                column: "*".to_owned(),
                            });
                        }
                    }
                }
                self.out.functions.insert(name);
                None
            }
            other => {
                if let Some(name) = syntax_function(other) {
                    self.out.functions.insert(name.to_owned());
                }
                None
            }
        };
        if let Some(raw) = raw {
            if self.plain_exprs.contains(&std::ptr::from_ref(e))
                || self.compared_exprs.contains(&std::ptr::from_ref(e))
            {
                self.out.plain.push(raw);
            } else {
                self.out.computed.push(raw);
            }
        }
        ControlFlow::Continue(())
    }
}

/// Functions written with SQL syntax rather than a call.
fn syntax_function(e: &Expr) -> Option<&'static str> {
    Some(match e {
        Expr::Extract { .. } => "extract",
        Expr::Substring { .. } => "substring",
        Expr::Trim { .. } => "trim",
        Expr::Position { .. } => "position",
        Expr::Overlay { .. } => "overlay",
        Expr::Convert { .. } => "convert",
        Expr::Ceil { .. } => "ceil",
        Expr::Floor { .. } => "floor",
        Expr::MatchAgainst { .. } => "match",
        _ => return None,
    })
}

/// The selects of a query's body that make its result (through set operations, not into
/// subqueries).
fn outer_selects<'q>(body: &'q SetExpr, out: &mut Vec<&'q Select>) {
    match body {
        SetExpr::Select(s) => out.push(s),
        SetExpr::Query(q) => outer_selects(&q.body, out),
        SetExpr::SetOperation { left, right, .. } => {
            outer_selects(left, out);
            outer_selects(right, out);
        }
        _ => {}
    }
}

fn is_plain(e: &Expr) -> bool {
    matches!(e, Expr::Identifier(_) | Expr::CompoundIdentifier(_))
        || matches!(e, Expr::Nested(inner) if is_plain(inner))
}

/// Functions that answer every value of their arguments (no error, whatever the card number:
/// MySQL turns bad input into NULL or a warning, and warnings after masked reads are withheld)
/// and that compute from their arguments only.
const TOTAL_FUNCTIONS: &[&str] = &[
    "char_length",
    "character_length",
    "coalesce",
    "concat",
    "concat_ws",
    "hex",
    "ifnull",
    "lcase",
    "left",
    "length",
    "lower",
    "lpad",
    "ltrim",
    "md5",
    "mid",
    "octet_length",
    "repeat",
    "replace",
    "reverse",
    "right",
    "rpad",
    "rtrim",
    "sha",
    "sha1",
    "sha2",
    "substr",
    "substring",
    "trim",
    "ucase",
    "upper",
];

/// Whether `e` is built only of column references, literals and calls of
/// [`TOTAL_FUNCTIONS`] (no operators, comparisons, CASE, subqueries, window or aggregate
/// clauses); its column references are pushed to `leaves`.
fn total_leaves<'e>(e: &'e Expr, leaves: &mut Vec<&'e Expr>) -> bool {
    match e {
        Expr::Identifier(i) if !i.value.starts_with('@') => {
            leaves.push(e);
            true
        }
        Expr::CompoundIdentifier(_) => {
            leaves.push(e);
            true
        }
        Expr::Value(_) => true,
        Expr::Nested(inner) => total_leaves(inner, leaves),
        Expr::Substring {
            expr,
            substring_from,
            substring_for,
            ..
        } => {
            total_leaves(expr, leaves)
                && substring_from
                    .as_deref()
                    .is_none_or(|f| total_leaves(f, leaves))
                && substring_for
                    .as_deref()
                    .is_none_or(|f| total_leaves(f, leaves))
        }
        Expr::Function(f) => {
            let name = function_name(&f.name);
            if !TOTAL_FUNCTIONS.contains(&name.as_str())
                || f.over.is_some()
                || f.filter.is_some()
                || f.null_treatment.is_some()
                || !f.within_group.is_empty()
                || !matches!(f.parameters, FunctionArguments::None)
            {
                return false;
            }
            let FunctionArguments::List(list) = &f.args else {
                return false;
            };
            list.duplicate_treatment.is_none()
                && list.clauses.is_empty()
                && list.args.iter().all(|a| match a {
                    FunctionArg::Unnamed(FunctionArgExpr::Expr(x)) => total_leaves(x, leaves),
                    _ => false,
                })
        }
        _ => false,
    }
}

fn plain_leaf(e: &Expr) -> &Expr {
    match e {
        Expr::Nested(inner) => plain_leaf(inner),
        other => other,
    }
}

fn item_expr(item: &SelectItem) -> Option<&Expr> {
    match item {
        SelectItem::UnnamedExpr(e)
        | SelectItem::ExprWithAlias { expr: e, .. }
        | SelectItem::ExprWithAliases { expr: e, .. } => Some(e),
        _ => None,
    }
}

/// Collects everything of `node`; `outer` is the query whose plain projection items are
/// returned as they are (the statement's result), if any.
pub(crate) fn collect<V: Visit>(node: &V, outer: Option<&Query>, ctx: &MysqlContext) -> Collected {
    let mut c = Collector {
        ctx,
        out: Collected::default(),
        plain_exprs: HashSet::new(),
        outer_selects: HashSet::new(),
        compared_exprs: HashSet::new(),
    };
    if let Some(q) = outer {
        let mut selects = Vec::new();
        outer_selects(&q.body, &mut selects);
        for s in selects {
            c.outer_selects.insert(std::ptr::from_ref(s));
            for item in &s.projection {
                let Some(e) = item_expr(item) else {
                    continue;
                };
                if is_plain(e) {
                    c.plain_exprs.insert(std::ptr::from_ref(plain_leaf(e)));
                    continue;
                }
                // A result computed from columns by total functions only: its columns are
                // returned (as a derivative, masked whole), not computed with.
                let mut leaves = Vec::new();
                if total_leaves(e, &mut leaves) {
                    c.plain_exprs
                        .extend(leaves.into_iter().map(std::ptr::from_ref));
                }
            }
        }
    }
    let _ = node.visit(&mut c);
    c.out
}

/// The resolved view of a [`Collected`].
pub(crate) struct Resolved {
    pub columns_read: BTreeSet<ColumnRef>,
    pub computed: BTreeSet<ColumnRef>,
    /// Each comparison of columns as they are, resolved.
    pub compared: Vec<Compared>,
    /// Columns of which only the last four characters are tested.
    pub last4: BTreeSet<ColumnRef>,
    /// Everything an outer reference to a derived table's or CTE's column may carry: every
    /// column read anywhere (always a superset of what those queries output).
    pub pool: BTreeSet<ColumnRef>,
}

impl Collected {
    /// Every table of the statement plus `extra` (the candidates of a bare column).
    fn candidates<'s>(&'s self, extra: &'s BTreeSet<TableRef>) -> BTreeSet<&'s TableRef> {
        self.tables.iter().chain(extra).collect()
    }

    /// Whether the statement has relations whose columns are not a table's.
    pub(crate) fn has_derived(&self) -> bool {
        self.derived_queries > 0 || self.opaque_from
    }

    /// The table columns a reference can stand for, and whether it may stand for a derived
    /// table's column.
    fn resolve_one(
        &self,
        raw: &RawColumn,
        extra: &BTreeSet<TableRef>,
        ctx: &MysqlContext,
    ) -> (BTreeSet<ColumnRef>, bool) {
        let every = |column: &str| -> BTreeSet<ColumnRef> {
            let cands = self.candidates(extra);
            if cands.is_empty() {
                return BTreeSet::from([ColumnRef {
                    table: None,
                    column: column.to_owned(),
                }]);
            }
            cands
                .into_iter()
                .map(|t| ColumnRef {
                    table: Some(t.clone()),
                    column: column.to_owned(),
                })
                .collect()
        };
        let col = raw.column.as_str();
        match raw.qualifier.as_slice() {
            [] => (every(col), self.has_derived()),
            [x] => match self.aliases.get(x) {
                Some(targets) if !targets.contains(&Target::Unknown) => (
                    targets
                        .iter()
                        .filter_map(|t| match t {
                            Target::Table(t) => Some(ColumnRef {
                                table: Some(t.clone()),
                                column: col.to_owned(),
                            }),
                            Target::Unknown => None,
                        })
                        .collect(),
                    false,
                ),
                _ => (every(col), true),
            },
            parts => {
                let t = table_from_parts(parts, ctx);
                (
                    BTreeSet::from([ColumnRef {
                        table: Some(t),
                        column: col.to_owned(),
                    }]),
                    false,
                )
            }
        }
    }

    /// Resolves every reference; `extra` are tables the statement acts on that are not in
    /// relation position (targets of DDL).
    pub(crate) fn resolve(&self, extra: &BTreeSet<TableRef>, ctx: &MysqlContext) -> Resolved {
        let mut columns_read = BTreeSet::new();
        let mut computed = BTreeSet::new();
        for raw in &self.computed {
            let (refs, _) = self.resolve_one(raw, extra, ctx);
            computed.extend(refs.iter().cloned());
            columns_read.extend(refs);
        }
        for raw in &self.plain {
            columns_read.extend(self.resolve_one(raw, extra, ctx).0);
        }
        let pool = if self.has_derived() {
            columns_read.clone()
        } else {
            BTreeSet::new()
        };
        let compared = self
            .compared
            .iter()
            .zip(1..)
            .map(|((raws, constant), position)| Compared {
                columns: raws
                    .iter()
                    .flat_map(|raw| self.resolve_one(raw, extra, ctx).0)
                    .collect(),
                constant: *constant,
                position,
            })
            .collect();
        let last4 = self
            .last4
            .iter()
            .flat_map(|raw| self.resolve_one(raw, extra, ctx).0)
            .collect();
        Resolved {
            columns_read,
            computed,
            compared,
            last4,
            pool,
        }
    }
}

/// The result columns of `q`, the outermost query of a statement collected as `c`.
pub(crate) fn outputs(
    q: &Query,
    c: &Collected,
    r: &Resolved,
    ctx: &MysqlContext,
) -> Vec<OutputColumn> {
    let none = BTreeSet::new();
    set_outputs(&q.body, c, r, ctx, &none)
}

fn set_outputs(
    body: &SetExpr,
    c: &Collected,
    r: &Resolved,
    ctx: &MysqlContext,
    extra: &BTreeSet<TableRef>,
) -> Vec<OutputColumn> {
    match body {
        SetExpr::Select(s) => s
            .projection
            .iter()
            .map(|item| item_output(item, c, r, ctx, extra))
            .collect(),
        SetExpr::Query(q) => set_outputs(&q.body, c, r, ctx, extra),
        SetExpr::SetOperation { left, right, .. } => {
            let l = set_outputs(left, c, r, ctx, extra);
            let rr = set_outputs(right, c, r, ctx, extra);
            if l.len() == rr.len() && !l.iter().chain(&rr).any(|o| o.star) {
                l.into_iter()
                    .zip(rr)
                    .map(|(a, b)| OutputColumn {
                        star: false,
                        sources: a.sources.union(&b.sources).cloned().collect(),
                        derived: a.derived.union(&b.derived).cloned().collect(),
                    })
                    .collect()
            } else {
                let all = merge(l.iter().chain(&rr));
                let n = l.len().max(rr.len());
                vec![all; n]
            }
        }
        SetExpr::Values(v) => {
            let width = v
                .rows
                .iter()
                .map(|row| row.content.len())
                .max()
                .unwrap_or(0);
            (0..width)
                .map(|i| {
                    let mut o = OutputColumn::default();
                    for row in &v.rows {
                        if let Some(e) = row.content.get(i) {
                            let inner = collect(e, None, ctx);
                            let refs = c.resolve_inner(&inner, r, extra, ctx);
                            o.sources.extend(refs.iter().cloned());
                            o.derived.extend(refs);
                        }
                    }
                    o
                })
                .collect()
        }
        _ => {
            // TABLE t, or anything else: every column of every table, as one star.
            let mut o = OutputColumn {
                star: true,
                ..OutputColumn::default()
            };
            o.sources = r.columns_read.clone();
            for t in &c.tables {
                o.sources.insert(ColumnRef {
                    table: Some(t.clone()),
                    column: "*".to_owned(),
                });
            }
            o.derived = o.sources.clone();
            vec![o]
        }
    }
}

/// An output of resolved `sources`; one that may refer to a derived table's or CTE's column
/// also carries (as derivatives) everything those queries could output.
fn with_pool(
    (mut sources, maybe_derived): (BTreeSet<ColumnRef>, bool),
    r: &Resolved,
    star: bool,
) -> OutputColumn {
    let mut derived = BTreeSet::new();
    if maybe_derived {
        sources.extend(r.pool.iter().cloned());
        derived.extend(r.pool.iter().cloned());
    }
    OutputColumn {
        star,
        sources,
        derived,
    }
}

fn merge<'o>(outs: impl Iterator<Item = &'o OutputColumn>) -> OutputColumn {
    let mut all = OutputColumn::default();
    for o in outs {
        all.star |= o.star;
        all.sources.extend(o.sources.iter().cloned());
        all.derived.extend(o.derived.iter().cloned());
    }
    all
}

impl Collected {
    /// The resolved references of a part of the statement (collected on its own), with the
    /// statement's tables and aliases, plus the derived pool where they may refer to it.
    fn resolve_inner(
        &self,
        inner: &Collected,
        r: &Resolved,
        extra: &BTreeSet<TableRef>,
        ctx: &MysqlContext,
    ) -> BTreeSet<ColumnRef> {
        let mut out = BTreeSet::new();
        for raw in inner.computed.iter().chain(&inner.plain) {
            let (refs, maybe_derived) = self.resolve_one(raw, extra, ctx);
            out.extend(refs);
            if maybe_derived {
                out.extend(r.pool.iter().cloned());
            }
        }
        // A subquery inside may have derived tables of its own.
        if inner.has_derived() {
            out.extend(r.pool.iter().cloned());
        }
        out
    }
}

fn item_output(
    item: &SelectItem,
    c: &Collected,
    r: &Resolved,
    ctx: &MysqlContext,
    extra: &BTreeSet<TableRef>,
) -> OutputColumn {
    match item {
        SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..) => {
            let qualifier = match item {
                SelectItem::QualifiedWildcard(
                    SelectItemQualifiedWildcardKind::ObjectName(n),
                    _,
                ) => name_parts(n),
                _ => Vec::new(),
            };
            let raw = RawColumn {
                qualifier,
                column: "*".to_owned(),
            };
            // A star over a derived table: whatever it outputs, possibly computed.
            with_pool(c.resolve_one(&raw, extra, ctx), r, true)
        }
        _ => {
            let Some(e) = item_expr(item) else {
                return OutputColumn::default();
            };
            if is_plain(e) {
                let inner = collect(plain_leaf(e), None, ctx);
                let raw = inner.computed.first();
                let resolved = match raw {
                    Some(raw) => c.resolve_one(raw, extra, ctx),
                    None => (BTreeSet::new(), false),
                };
                with_pool(resolved, r, false)
            } else {
                let inner = collect(e, None, ctx);
                let sources = c.resolve_inner(&inner, r, extra, ctx);
                OutputColumn {
                    star: false,
                    derived: sources.clone(),
                    sources,
                }
            }
        }
    }
}
