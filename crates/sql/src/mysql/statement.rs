//! From one parsed statement to its [`StatementInfo`]: kinds, written tables, settings, flags.
//!
//! Why a closed match: the policy's builtin refusals key on kinds and flags (`copy_file`,
//! `opaque`, `alter_system`, ...), so every statement sqlparser can produce must be classified
//! deliberately. A statement type not listed here is not MySQL (sqlparser parses many
//! dialects' statements with any dialect): it is reported as `other` *and* `opaque`, which the
//! policy refuses unless a rule allows it by name.
//!
//! Reads (tables, columns, functions, lineage) come from `walk.rs`, over the whole statement,
//! whatever its type.

use std::collections::BTreeSet;

use gatehouse_core::policy::{ColumnRef, DDL_KINDS, DML_KINDS, StatementInfo, TableRef};
use sqlparser::ast::{
    ContextModifier, Expr, FromTable, FunctionArg, FunctionArgExpr, FunctionArguments, GranteeName,
    Ident, ObjectName, ObjectType, OnInsert, Query, Set, SetExpr, Statement, TableFactor,
    TableObject, TableWithJoins, Value,
};

use super::MysqlContext;
use super::walk::{self, table_ref};

/// A [`StatementInfo`] under construction.
pub(crate) struct Builder {
    pub info: StatementInfo,
}

impl Builder {
    pub(crate) fn new(kind: &str) -> Self {
        let mut b = Self {
            info: StatementInfo::default(),
        };
        b.info.kind = kind.to_owned();
        b
    }

    /// Adds a kind and its umbrella.
    pub(crate) fn kind(&mut self, kind: &str) {
        self.info.kinds.insert(kind.to_owned());
        if DML_KINDS.contains(&kind) {
            self.info.kinds.insert("dml".to_owned());
        }
        if DDL_KINDS.contains(&kind) {
            self.info.kinds.insert("ddl".to_owned());
        }
    }

    pub(crate) fn set_kind(&mut self, kind: &str) {
        self.info.kind = kind.to_owned();
        self.kind(kind);
    }
}

fn tables_of(twj: &TableWithJoins, ctx: &MysqlContext, out: &mut BTreeSet<TableRef>) {
    let mut add = |f: &TableFactor| {
        if let TableFactor::Table { name, .. } = f {
            out.insert(table_ref(name, ctx));
        }
    };
    add(&twj.relation);
    for j in &twj.joins {
        add(&j.relation);
    }
}

/// The user part of a grantee, as written (`'app'@'%'` → `app`).
fn grantee_name(g: &GranteeName) -> String {
    match g {
        GranteeName::ObjectName(n) => walk::function_name(n),
        GranteeName::UserHost { user, .. } => user.value.clone(),
    }
}

/// A constant's text (`'x'` → `x`, `1` → `1`, `ON` → `on`), `None` for anything computed.
fn constant_text(e: &Expr) -> Option<String> {
    match e {
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => Some(s.clone()),
            Value::Number(n, _) => Some(n.clone()),
            Value::Boolean(b) => Some(b.to_string()),
            _ => None,
        },
        // `SET x = ON`, `SET sql_mode = ANSI`: a bare word is a constant to MySQL.
        Expr::Identifier(i) if i.quote_style.is_none() && !i.value.starts_with('@') => {
            Some(i.value.clone())
        }
        _ => None,
    }
}

/// A system variable name as assigned: (normalised name, global), `None` for a user variable
/// (`@x`).
fn system_variable(scope: Option<&ContextModifier>, name: &ObjectName) -> Option<(String, bool)> {
    let mut parts: Vec<String> = name
        .0
        .iter()
        .map(|p| p.to_string().trim_matches('`').to_lowercase())
        .collect();
    let mut global = matches!(scope, Some(ContextModifier::Global));
    let first = parts.first().cloned().unwrap_or_default();
    if first.starts_with('@') && !first.starts_with("@@") {
        return None;
    }
    if let Some(stripped) = first.strip_prefix("@@")
        && let Some(p) = parts.first_mut()
    {
        *p = stripped.to_owned();
    }
    // `@@global.x`, `global.x`, `@@session.x`, `@@local.x`, `persist.x`.
    if parts.len() > 1 {
        let scope_word = parts.remove(0);
        if matches!(scope_word.as_str(), "global" | "persist" | "persist_only") {
            global = true;
        }
    }
    let name = parts.join(".");
    let name = match name.as_str() {
        "character set" | "charset" => "character_set_client".to_owned(),
        _ => name,
    };
    Some((name, global))
}

/// Settings whose change decides how the server reads text: reported first when a SET
/// has several assignments.
fn is_guarded(name: &str) -> bool {
    name == "sql_mode" || name == "names" || name.starts_with("character_set")
}

/// The value a SET assigns, as `set_setting` reports it (`@unknown` for an expression).
fn setting_value(e: &Expr) -> Option<String> {
    if let Expr::Identifier(i) = e
        && i.value.eq_ignore_ascii_case("default")
    {
        return None;
    }
    Some(
        constant_text(e)
            .or_else(|| appended_to_current(e))
            .unwrap_or_else(|| super::UNKNOWN_VALUE.to_owned()),
    )
}

/// `CONCAT(@@sql_mode, ',STRICT_TRANS_TABLES')` (what drivers such as Connector/J send at
/// connect): the session's current value with constants appended. The current value is safe
/// (the gateway refuses a session whose upstream starts in an unsafe state, and every change
/// is judged), so the assignment is judged by what it appends: the constants, joined.
fn appended_to_current(e: &Expr) -> Option<String> {
    let Expr::Function(f) = e else {
        return None;
    };
    if !walk::function_name(&f.name).eq_ignore_ascii_case("concat") {
        return None;
    }
    let FunctionArguments::List(list) = &f.args else {
        return None;
    };
    let mut appended = String::new();
    let mut current = false;
    for arg in &list.args {
        let FunctionArg::Unnamed(FunctionArgExpr::Expr(x)) = arg else {
            return None;
        };
        match x {
            Expr::Identifier(i) if i.value.starts_with("@@") => current = true,
            Expr::CompoundIdentifier(parts)
                if parts.first().is_some_and(|p| p.value.starts_with("@@")) =>
            {
                current = true;
            }
            other => appended.push_str(&constant_text(other)?),
        }
    }
    current.then_some(appended)
}

fn set_assignments(b: &mut Builder, assigns: &[(Option<&ContextModifier>, &ObjectName, &Expr)]) {
    let mut chosen: Option<(String, Option<String>)> = None;
    for (scope, name, value) in assigns {
        let Some((name, global)) = system_variable(*scope, name) else {
            continue;
        };
        if name == "password" {
            // SET PASSWORD = ...: the session's own user.
            b.set_kind("grant");
            b.info.roles_changed.insert("CURRENT_USER".to_owned());
            continue;
        }
        if global {
            b.kind("alter_system");
            b.info
                .persistent_settings
                .push((name.clone(), setting_value(value)));
        }
        let this = (name, setting_value(value));
        match &chosen {
            None => chosen = Some(this),
            Some((n, _)) if !is_guarded(n) && is_guarded(&this.0) => chosen = Some(this),
            Some(_) => {}
        }
    }
    if b.info.kinds.contains("alter_system") {
        b.set_kind("alter_system");
    }
    if b.info.kind != "grant" {
        b.info.set_setting = chosen;
    }
}

/// Classifies `stmt`, whose reads were collected as `c` (see `walk.rs`).
pub(crate) fn classify(stmt: &Statement, ctx: &MysqlContext) -> StatementInfo {
    // The query whose result columns go to the client. `SELECT ... INTO @v` returns nothing:
    // its values go into variables the client reads later, unmasked — so its columns count
    // as computed with, as in `SET @v = (SELECT ...)`, never as returned.
    let outer: Option<&Query> = match stmt {
        Statement::Query(q) if !select_into(q) => Some(q),
        _ => None,
    };
    let collected = walk::collect(stmt, outer, ctx);
    let mut written: BTreeSet<TableRef> = BTreeSet::new();
    let mut b = Builder::new("other");
    let mut stored_source = false;
    match stmt {
        Statement::Query(q) => {
            b.set_kind("select");
            if let Some(limit) = &q.limit_clause {
                b.info.limit = limit_of(limit);
            }
            if select_into_file(q) {
                // SELECT ... INTO OUTFILE/DUMPFILE (reaching the parser as targets named so):
                // refused by builtin:copy-file. Variables are judged by what flows into them
                // (see `outer` above).
                b.info.copy_file = true;
            }
            if q.locks.iter().len() > 0 {
                b.kind("lock");
            }
        }
        Statement::Insert(ins) => {
            b.set_kind("insert");
            b.info.data_modifying = true;
            if let TableObject::TableName(n) = &ins.table {
                written.insert(table_ref(n, ctx));
            }
            if let Some(OnInsert::DuplicateKeyUpdate(_)) = &ins.on {
                b.kind("update");
            }
            stored_source = true;
        }
        Statement::Update(u) => {
            b.set_kind("update");
            b.info.data_modifying = true;
            tables_of(&u.table, ctx, &mut written);
            stored_source = true;
        }
        Statement::Delete(d) => {
            b.set_kind("delete");
            b.info.data_modifying = true;
            for n in &d.tables {
                written.insert(table_ref(n, ctx));
            }
            let from = match &d.from {
                FromTable::WithFromKeyword(f) | FromTable::WithoutKeyword(f) => f,
            };
            for twj in from.iter().chain(d.using.iter().flatten()) {
                tables_of(twj, ctx, &mut written);
            }
        }
        Statement::Truncate(t) => {
            b.set_kind("truncate");
            b.info.data_modifying = true;
            for n in &t.table_names {
                written.insert(table_ref(&n.name, ctx));
            }
        }
        Statement::Drop {
            object_type, names, ..
        } => {
            b.set_kind("drop");
            if matches!(object_type, ObjectType::Role | ObjectType::User) {
                b.set_kind("grant");
                for n in names {
                    b.info.roles_changed.insert(walk::function_name(n));
                }
            } else {
                for n in names {
                    written.insert(table_ref(n, ctx));
                }
            }
        }
        Statement::DropFunction(_)
        | Statement::DropProcedure { .. }
        | Statement::DropTrigger(_) => {
            b.set_kind("drop");
        }
        Statement::AlterTable(a) => {
            b.set_kind("alter");
            written.insert(table_ref(&a.name, ctx));
        }
        Statement::AlterView(v) => {
            b.set_kind("alter");
            written.insert(table_ref(&v.name, ctx));
        }
        Statement::RenameTable(rs) => {
            b.set_kind("alter");
            for r in rs {
                written.insert(table_ref(&r.old_name, ctx));
                written.insert(table_ref(&r.new_name, ctx));
            }
        }
        Statement::CreateTable(ct) => {
            b.set_kind("create");
            written.insert(table_ref(&ct.name, ctx));
            if ct.query.is_some() {
                b.info.data_modifying = true;
                stored_source = true;
            }
        }
        Statement::CreateView(v) => {
            b.set_kind("create");
            written.insert(table_ref(&v.name, ctx));
        }
        Statement::CreateIndex(ci) => {
            b.set_kind("create");
            written.insert(table_ref(&ci.table_name, ctx));
        }
        Statement::CreateDatabase { .. } | Statement::CreateSchema { .. } => {
            b.set_kind("create");
        }
        Statement::CreateFunction(_) | Statement::CreateProcedure { .. } => {
            b.set_kind("create_function");
            b.info.opaque = true;
        }
        Statement::CreateTrigger(t) => {
            b.set_kind("create_trigger");
            b.info.opaque = true;
            written.insert(table_ref(&t.table_name, ctx));
        }
        Statement::Grant(g) => {
            b.set_kind("grant");
            for g in &g.grantees {
                if let Some(n) = &g.name {
                    b.info.roles_changed.insert(grantee_name(n));
                }
            }
        }
        Statement::Revoke(r) => {
            b.set_kind("revoke");
            b.kind("grant");
            for g in &r.grantees {
                if let Some(n) = &g.name {
                    b.info.roles_changed.insert(grantee_name(n));
                }
            }
        }
        Statement::Set(set) => {
            b.set_kind("set");
            match set {
                Set::SingleAssignment {
                    scope,
                    variable,
                    values,
                    ..
                } => {
                    if let [value] = values.as_slice() {
                        set_assignments(&mut b, &[(scope.as_ref(), variable, value)]);
                    } else {
                        // A list value: not a constant the gateway judges.
                        if let Some((name, _)) = system_variable(scope.as_ref(), variable) {
                            b.info.set_setting = Some((name, Some(super::UNKNOWN_VALUE.into())));
                        }
                    }
                }
                Set::MultipleAssignments { assignments } => {
                    let list: Vec<_> = assignments
                        .iter()
                        .map(|a| (a.scope.as_ref(), &a.name, &a.value))
                        .collect();
                    set_assignments(&mut b, &list);
                }
                Set::SetNames { charset_name, .. } => {
                    b.info.set_setting =
                        Some(("names".to_owned(), Some(charset_name.value.clone())));
                }
                Set::SetNamesDefault {} => {
                    b.info.set_setting = Some(("names".to_owned(), None));
                }
                Set::SetTransaction { .. } => {}
                Set::SetRole { role_name, .. } => {
                    b.info.set_setting = Some((
                        "role".to_owned(),
                        role_name.as_ref().map(|r: &Ident| r.value.clone()),
                    ));
                }
                Set::SetTimeZone { value, .. } => {
                    b.info.set_setting = Some(("time_zone".to_owned(), setting_value(value)));
                }
                _ => {
                    b.info.opaque = true;
                }
            }
        }
        Statement::ShowVariable { variable } => {
            let first = variable.first().map(|i| i.value.to_lowercase());
            if matches!(
                first.as_deref(),
                Some(
                    "binlog" | "relaylog" | "master" | "slave" | "replica" | "replicas" | "binary"
                )
            ) {
                b.kind("replication");
            } else {
                b.set_kind("show");
            }
        }
        Statement::ShowVariables { .. }
        | Statement::ShowStatus { .. }
        | Statement::ShowCreate { .. }
        | Statement::ShowColumns { .. }
        | Statement::ShowDatabases { .. }
        | Statement::ShowSchemas { .. }
        | Statement::ShowTables { .. }
        | Statement::ShowFunctions { .. }
        | Statement::ShowCollation { .. }
        | Statement::ShowCharset(_)
        | Statement::ShowViews { .. } => {
            b.set_kind("show");
        }
        Statement::ShowProcessList { .. } => {
            b.set_kind("show");
            // Every session's statement text (identities share the upstream user).
            b.kind("read_activity");
        }
        Statement::ExplainTable { .. } => {
            b.set_kind("show");
        }
        Statement::Explain { statement, .. } => {
            b.set_kind("explain");
            // The explained statement is walked for reads (below) but adds no kinds; a
            // MySQL EXPLAIN ANALYZE runs it, so its data-modifying flag and kinds count.
            let inner = classify(statement, ctx);
            if let Statement::Explain { analyze: true, .. } = stmt {
                for k in &inner.kinds {
                    b.kind(k);
                }
                b.info.data_modifying |= inner.data_modifying;
            }
            b.info.opaque |= inner.opaque;
            b.info.copy_file |= inner.copy_file;
            written.extend(inner.tables_written);
        }
        Statement::StartTransaction { .. } => b.set_kind("begin"),
        Statement::Commit { .. } => b.set_kind("commit"),
        Statement::Rollback { .. } => b.set_kind("rollback"),
        Statement::Savepoint { .. } | Statement::ReleaseSavepoint { .. } => b.set_kind("savepoint"),
        Statement::Use(_) => b.set_kind("use"),
        Statement::Call(_) => {
            b.set_kind("call");
            b.info.opaque = true;
        }
        Statement::LockTables { tables } => {
            b.set_kind("lock");
            for t in tables {
                let tr = table_ref(&ObjectName::from(vec![t.table.clone()]), ctx);
                b.info.tables_read.insert(tr);
            }
        }
        Statement::UnlockTables => b.set_kind("lock"),
        Statement::Prepare { .. } => {
            b.set_kind("prepare");
            b.info.opaque = true;
        }
        Statement::Execute { .. } => {
            b.set_kind("execute");
            b.info.opaque = true;
        }
        Statement::Deallocate { .. } => b.set_kind("deallocate"),
        Statement::Kill { .. } => {
            b.set_kind("kill");
            b.kind("signal_backend");
        }
        Statement::Flush { .. } => {
            b.set_kind("other");
            b.kind("flush");
        }
        Statement::Analyze(_) => b.set_kind("analyze"),
        Statement::OptimizeTable { .. } => b.set_kind("other"),
        Statement::Comment { .. } => b.set_kind("comment"),
        _ => {
            // Not a MySQL statement: nothing here knows what it does.
            b.info.opaque = true;
        }
    }
    if b.info.kinds.is_empty() {
        let k = b.info.kind.clone();
        b.kind(&k);
    }
    let resolved = collected.resolve(&written, ctx);
    b.info.tables_read.extend(collected.tables.iter().cloned());
    // UPDATE/DELETE targets are read too (their WHERE, SET and ORDER BY read them).
    if matches!(b.info.kind.as_str(), "update" | "delete") {
        b.info.tables_read.extend(written.iter().cloned());
    }
    b.info.tables_written.extend(written.iter().cloned());
    for c in &resolved.columns_read {
        if let Some(t) = &c.table {
            b.info.tables_read.insert(t.clone());
        }
    }
    b.info.columns_read = resolved.columns_read.clone();
    b.info.functions = collected.functions.clone();
    b.info.uses.computed = resolved.computed.clone();
    b.info.uses.compared = resolved.compared.clone();
    b.info.uses.last4 = resolved.last4.clone();
    if b.info.kind == "explain" {
        // The explained query's result is not returned: everything in it is a computation.
        b.info
            .uses
            .computed
            .extend(resolved.columns_read.iter().cloned());
    }
    if let Statement::Query(q) = stmt {
        b.info.outputs = Some(walk::outputs(q, &collected, &resolved, ctx));
    }
    if stored_source {
        for t in &written {
            b.info.uses.stored.push((
                ColumnRef {
                    table: Some(t.clone()),
                    column: "*".to_owned(),
                },
                resolved.columns_read.clone(),
            ));
        }
    }
    b.info
}

/// Whether any select of the query (or a nested one) has an INTO clause.
/// Whether `q` has an `INTO` target that is not a variable (a file, or anything else the
/// gateway cannot tell from one): the worst case, a server-side file.
fn select_into_file(q: &Query) -> bool {
    fn variable(e: &Expr) -> bool {
        match e {
            Expr::Identifier(i) => {
                i.quote_style.is_none()
                    && !i.value.eq_ignore_ascii_case("outfile")
                    && !i.value.eq_ignore_ascii_case("dumpfile")
            }
            _ => false,
        }
    }
    fn body(s: &SetExpr) -> bool {
        match s {
            SetExpr::Select(s) => s
                .into
                .as_ref()
                .is_some_and(|i| i.targets.is_empty() || !i.targets.iter().all(variable)),
            SetExpr::Query(q) => select_into_file(q),
            SetExpr::SetOperation { left, right, .. } => body(left) || body(right),
            _ => false,
        }
    }
    body(&q.body)
}

fn select_into(q: &Query) -> bool {
    fn body(s: &SetExpr) -> bool {
        match s {
            SetExpr::Select(s) => s.into.is_some(),
            SetExpr::Query(q) => select_into(q),
            SetExpr::SetOperation { left, right, .. } => body(left) || body(right),
            _ => false,
        }
    }
    body(&q.body)
}

fn limit_of(l: &sqlparser::ast::LimitClause) -> Option<i64> {
    use sqlparser::ast::LimitClause;
    let e = match l {
        LimitClause::LimitOffset { limit, .. } => limit.as_ref()?,
        LimitClause::OffsetCommaLimit { limit, .. } => limit,
    };
    match e {
        Expr::Value(v) => match &v.value {
            Value::Number(n, _) => n.parse().ok(),
            _ => None,
        },
        _ => None,
    }
}
