//! How a statement *uses* column values besides returning them: compared, computed with,
//! matched by the last four characters, stored elsewhere, passed to functions
//! (`StatementInfo::uses`).
//!
//! Why a module of its own: the output lineage (the parent module) says where each result
//! column's values come from; this says what else the statement does with values — the
//! conditions, joins, groupings, orderings, windows, limits and writes through which a value
//! can leak without being returned. Masking against inference judges exactly these uses, so
//! every clause that can carry information must be walked here and nowhere else.

use std::collections::BTreeSet;

use gatehouse_core::policy::{ColumnRef, Compared, TableRef};
use pg_query::protobuf as pb;
use pg_query::{NodeEnum, NodeRef};

use super::{Col, Lineage, Sources, is_count, totality};
use crate::analyze::{boxed_ref, node_ref, strings};
use crate::children::for_each_child;

impl Lineage<'_> {
    /// Values written into the columns of `table`.
    pub(super) fn store(&mut self, table: &TableRef, assigned: &[Col]) {
        for c in assigned {
            if c.sources.no_columns() {
                continue;
            }
            let target = ColumnRef {
                table: Some(table.clone()),
                column: if c.star {
                    "*".to_owned()
                } else {
                    c.name.clone().unwrap_or_else(|| "*".to_owned())
                },
            };
            let entry = (target, c.sources.all_set());
            if !self.uses.stored.contains(&entry) {
                self.charge(entry.1.len());
                self.uses.stored.push(entry);
            }
        }
    }

    /// The rows of a query written into a new table (CREATE TABLE AS, SELECT INTO).
    pub(super) fn store_new(&mut self, table: Option<TableRef>, cols: &[Col]) {
        let table = table.unwrap_or_else(|| TableRef {
            schema: None,
            name: String::new(),
        });
        self.store(&table, cols);
    }

    /// The statement computes with the value of `node`: every column it can depend on.
    pub(super) fn compute(&mut self, node: NodeRef<'_>) {
        let f = self.expr(node);
        self.computed(&f);
    }

    pub(super) fn computed(&mut self, f: &Sources) {
        self.charge(f.len());
        self.uses.computed.extend(f.all().cloned());
    }

    /// Values of `f` reach an operand of `operation` on which it can fail: a bit of them.
    /// `operation` names it, or says it is total (`None`); asked only when columns flow.
    pub(super) fn fallible(&mut self, operation: impl FnOnce() -> Option<String>, f: &Sources) {
        if f.no_columns() {
            return;
        }
        let Some(operation) = operation() else {
            return;
        };
        let entry = (operation, f.all_set());
        if !self.uses.fallible.contains(&entry) {
            self.charge(entry.1.len());
            self.uses.fallible.push(entry);
        }
    }

    pub(super) fn compute_children(&mut self, node: NodeRef<'_>) {
        for_each_child(node, &mut |c| self.compute(c));
    }

    /// Records a comparison of `columns` (with a client-chosen value when `constant`).
    pub(super) fn compare(&mut self, columns: BTreeSet<ColumnRef>, constant: bool, position: i32) {
        if columns.is_empty() {
            return;
        }
        let c = Compared {
            columns,
            constant,
            position,
        };
        if !self.uses.compared.contains(&c) {
            self.charge(c.columns.len());
            self.uses.compared.push(c);
        }
    }

    /// A value compared, grouped or ordered as a whole: a comparison of its columns when it is
    /// exactly their values, else a computation.
    pub(super) fn compared_value(&mut self, f: &Sources, constant: bool, position: i32) {
        if f.no_columns() {
            return;
        }
        if f.exact() {
            self.compare(f.all_set(), constant, position);
        } else {
            self.computed(f);
        }
    }

    /// Sides compared with each other (`=`, `<>`, IN): a comparison when every side is a
    /// column as it is or holds no column at all, else a computation.
    pub(super) fn compare_sides(&mut self, sides: &[Sources], position: i32) {
        if sides.iter().all(|s| s.no_columns() || s.exact()) {
            let mut columns = BTreeSet::new();
            for s in sides {
                columns.extend(s.all().cloned());
            }
            let constant = sides.iter().any(Sources::no_columns);
            self.compare(columns, constant, position);
        } else {
            for s in sides {
                self.computed(s);
            }
        }
    }

    /// A condition that decides which rows a query returns (a top-level conjunct of WHERE,
    /// JOIN ON or HAVING). The narrow forms that compare a column as it is are comparisons;
    /// anything else is a computation.
    pub(super) fn filter(&mut self, node: NodeRef<'_>) {
        if !self.enter() {
            return;
        }
        match node {
            NodeRef::BoolExpr(b)
                if matches!(
                    pb::BoolExprType::try_from(b.boolop),
                    Ok(pb::BoolExprType::AndExpr)
                ) =>
            {
                for a in &b.args {
                    if let Some(r) = node_ref(a) {
                        self.filter(r);
                    }
                }
            }
            NodeRef::AExpr(e) => self.filter_aexpr(node, e),
            NodeRef::NullTest(n) => {
                let f = boxed_ref(&n.arg).map(|a| self.expr(a)).unwrap_or_default();
                if !f.exact() {
                    self.computed(&f);
                }
            }
            NodeRef::SubLink(l) => self.filter_sublink(node, l),
            _ => self.compute(node),
        }
        self.leave();
    }

    pub(super) fn filter_aexpr(&mut self, node: NodeRef<'_>, e: &pb::AExpr) {
        use pb::AExprKind as K;
        let op = strings(&e.name);
        let (Some(l), Some(r)) = (boxed_ref(&e.lexpr), boxed_ref(&e.rexpr)) else {
            self.compute(node);
            return;
        };
        if matches!(K::try_from(e.kind), Ok(K::AexprLike)) && matches!(r, NodeRef::AConst(_)) {
            // Whether the pattern only fixes the last four: a property of the literal.
            self.uses.literal_dependent = true;
        }
        match K::try_from(e.kind) {
            Ok(K::AexprOp) if matches!(op.as_slice(), ["=" | "<>" | "!="]) => {
                let sides = [self.expr(l), self.expr(r)];
                self.compare_sides(&sides, e.location);
            }
            Ok(K::AexprIn) => {
                let left = self.expr(l);
                let right = self.expr(r);
                if right.no_columns() {
                    // Each value of the list is a client-chosen value of its own: a list of a
                    // thousand candidates is a thousand guesses, not one. Their positions stay
                    // inside the list's own text, so they never meet another comparison's.
                    let values = match r {
                        NodeRef::List(l) => l.items.len().max(1),
                        _ => 1,
                    };
                    for i in 0..values {
                        let at = e
                            .location
                            .saturating_add(i32::try_from(i).unwrap_or(i32::MAX));
                        self.compare_sides(&[left.clone(), right.clone()], at);
                    }
                } else {
                    self.computed(&left);
                    self.computed(&right);
                }
            }
            Ok(K::AexprLike) if matches!(op.as_slice(), ["~~"]) && last4_pattern(r) => {
                let left = self.expr(l);
                if left.exact() {
                    self.uses.last4.extend(left.all().cloned());
                } else {
                    self.computed(&left);
                }
            }
            _ => self.compute(node),
        }
    }

    pub(super) fn filter_sublink(&mut self, node: NodeRef<'_>, l: &pb::SubLink) {
        use pb::SubLinkType as T;
        match T::try_from(l.sub_link_type) {
            // Whether rows exist: what the subquery's own conditions say.
            Ok(T::ExistsSublink) => {
                if let Some(q) = boxed_ref(&l.subselect) {
                    let _ = self.expr(q);
                }
            }
            // `x IN (SELECT c ...)`, `x = ANY (SELECT c ...)`: x compared with c.
            Ok(T::AnySublink) if matches!(strings(&l.oper_name).as_slice(), [] | ["="]) => {
                let test = boxed_ref(&l.testexpr)
                    .map(|t| self.expr(t))
                    .unwrap_or_default();
                let sub = boxed_ref(&l.subselect)
                    .map(|q| self.expr(q))
                    .unwrap_or_default();
                self.compare_sides(&[test, sub], l.location);
            }
            _ => self.compute(node),
        }
    }

    /// WHERE, GROUP BY, HAVING, WINDOW, DISTINCT, ORDER BY and LIMIT of a plain query, in
    /// its scope; `cols` are its result columns (ORDER BY may name them).
    pub(super) fn clauses(&mut self, s: &pb::SelectStmt, cols: &[Col]) {
        if let Some(w) = boxed_ref(&s.where_clause) {
            self.filter(w);
        }
        if let Some(h) = boxed_ref(&s.having_clause) {
            self.filter(h);
        }
        for g in &s.group_clause {
            self.grouping(g, Some(cols));
        }
        for w in &s.window_clause {
            if let Some(NodeEnum::WindowDef(d)) = &w.node {
                self.window(d);
            }
        }
        match s.distinct_clause.as_slice() {
            [] => {}
            // Plain DISTINCT: an empty list entry; every result column is compared.
            [only] if only.node.is_none() => {
                for c in cols {
                    self.compared_value(&c.sources, false, 0);
                }
            }
            on => {
                for n in on {
                    self.grouping(n, Some(cols));
                }
            }
        }
        self.order_and_limit(s, cols);
    }

    /// ORDER BY and LIMIT/OFFSET (also of set operations and VALUES).
    pub(super) fn order_and_limit(&mut self, s: &pb::SelectStmt, cols: &[Col]) {
        for o in &s.sort_clause {
            self.sort_item(o, Some(cols));
        }
        for n in [&s.limit_offset, &s.limit_count] {
            if let Some(n) = boxed_ref(n) {
                self.compute(n);
            }
        }
    }

    pub(super) fn sort_item(&mut self, n: &pb::Node, cols: Option<&[Col]>) {
        match &n.node {
            Some(NodeEnum::SortBy(sb)) => {
                if let Some(inner) = sb.node.as_deref() {
                    self.grouping(inner, cols);
                }
            }
            _ => self.grouping(n, cols),
        }
    }

    /// An ordering or grouping key (GROUP BY, ORDER BY, DISTINCT ON, PARTITION BY): a
    /// comparison of the column it is, else a computation. An integer or a result column
    /// name may stand for a result column.
    pub(super) fn grouping(&mut self, n: &pb::Node, cols: Option<&[Col]>) {
        let Some(node) = node_ref(n) else { return };
        let f = match node {
            NodeRef::GroupingSet(g) => {
                for c in &g.content {
                    self.grouping(c, cols);
                }
                return;
            }
            NodeRef::AConst(c) if cols.is_some() => {
                self.uses.literal_dependent = true;
                let Some(pb::a_const::Val::Ival(i)) = &c.val else {
                    return;
                };
                let cols = cols.unwrap_or_default();
                let index = usize::try_from(i.ival).ok().and_then(|i| i.checked_sub(1));
                match index {
                    Some(i) if !cols.iter().take(i).any(|c| c.star) => match cols.get(i) {
                        Some(c) => c.sources.clone(),
                        None => return,
                    },
                    _ => {
                        let mut all = Sources::new();
                        for c in cols {
                            all.extend_ref(&c.sources);
                        }
                        all
                    }
                }
            }
            NodeRef::ColumnRef(c) if cols.is_some() && c.fields.len() == 1 => {
                let input = self.expr(node);
                let name = strings(&c.fields).first().map(|n| (*n).to_owned());
                let output = cols
                    .unwrap_or_default()
                    .iter()
                    .find(|c| c.name.is_some() && c.name == name);
                match output {
                    // A name no FROM item has: the result column.
                    Some(o) if input.all().all(|c| c.table.is_none()) => o.sources.clone(),
                    Some(o) => {
                        let mut both = input;
                        both.extend_ref(&o.sources);
                        both
                    }
                    None => input,
                }
            }
            other => self.expr(other),
        };
        self.compared_value(&f, false, 0);
    }

    pub(super) fn window(&mut self, w: &pb::WindowDef) {
        for p in &w.partition_clause {
            self.grouping(p, None);
        }
        for o in &w.order_clause {
            self.sort_item(o, None);
        }
        for n in [&w.start_offset, &w.end_offset] {
            if let Some(n) = boxed_ref(n) {
                self.compute(n);
            }
        }
    }

    /// A call in a value: FILTER, OVER and an aggregate's ORDER BY are uses; the arguments
    /// flow into the result through the function.
    pub(super) fn call(&mut self, f: &pb::FuncCall, out: &mut Sources) {
        if let Some(flt) = boxed_ref(&f.agg_filter) {
            self.compute(flt);
        }
        if let Some(over) = f.over.as_deref() {
            self.window(over);
        }
        if !f.agg_within_group {
            for o in &f.agg_order {
                self.sort_item(o, None);
            }
        }
        if is_right_with_constant(f) {
            // Whether it keeps at most four characters: a property of the literal.
            self.uses.literal_dependent = true;
        }
        if let Some(arg) = last4_call(f) {
            let a = self.expr(arg);
            if a.exact() {
                // The last four characters of a column: no more than masking shows.
                self.uses.last4.extend(a.all().cloned());
                return;
            }
            // Otherwise an ordinary call of `right`.
        }
        let total = totality::function(&f.funcname);
        let mut args = Sources::new();
        self.each_call_arg(f, |this, position, named, s| {
            // A named argument's position is not its place in the list; the ordering column
            // of `WITHIN GROUP` (no position) is the aggregated value.
            if named || !position.is_some_and(|i| total.argument(i)) {
                this.fallible(
                    || Some(format!("function {}", strings(&f.funcname).join("."))),
                    &s,
                );
            }
            args.extend(s);
        });
        if f.agg_distinct {
            self.compared_value(&args, false, f.location);
        }
        if is_count(&f.funcname) {
            // A number of rows (of non-NULL values): nothing of the values themselves.
            if !args.exact() {
                self.computed(&args);
            }
            return;
        }
        if !args.no_columns() {
            let name = strings(&f.funcname).join(".").to_ascii_lowercase();
            let entry = (name, args.all_set());
            if !self.uses.calls.contains(&entry) {
                self.charge(entry.1.len());
                self.uses.calls.push(entry);
            }
        }
        out.extend(args.derive());
    }

    // --- WITH ---------------------------------------------------------------------------------
}

/// Whether `f` is `right(x, constant)` (whether it keeps at most four characters is then a
/// property of the literal).
fn is_right_with_constant(f: &pb::FuncCall) -> bool {
    let name = strings(&f.funcname);
    matches!(name.as_slice(), ["right"] | ["pg_catalog", "right"])
        && matches!(f.args.as_slice(), [_, n] if matches!(n.node, Some(NodeEnum::AConst(_))))
}

/// `right(c, n)` with a constant `0 <= n <= 4`: its first argument.
fn last4_call(f: &pb::FuncCall) -> Option<NodeRef<'_>> {
    let name = strings(&f.funcname);
    if !matches!(name.as_slice(), ["right"] | ["pg_catalog", "right"]) || f.agg_star {
        return None;
    }
    let [arg, n] = f.args.as_slice() else {
        return None;
    };
    match &n.node {
        Some(NodeEnum::AConst(c)) => match &c.val {
            Some(pb::a_const::Val::Ival(i)) if (0..=4).contains(&i.ival) => node_ref(arg),
            _ => None,
        },
        _ => None,
    }
}

/// A LIKE pattern that only fixes the last four characters or fewer: `'%'` then at most four
/// digits.
fn last4_pattern(node: NodeRef<'_>) -> bool {
    let NodeRef::AConst(c) = node else {
        return false;
    };
    let Some(pb::a_const::Val::Sval(s)) = &c.val else {
        return false;
    };
    match s.sval.strip_prefix('%') {
        Some(rest) => rest.len() <= 4 && rest.bytes().all(|b| b.is_ascii_digit()),
        None => false,
    }
}
