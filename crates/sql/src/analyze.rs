//! The walk over PostgreSQL's raw parse tree that fills [`StatementInfo`].
//!
//! Every node of every type is visited (the generic part comes from [`crate::children`], which
//! is generated and exhaustive); the node types that carry policy facts are handled here, with
//! name scopes (FROM lists, aliases, CTEs) so that column references resolve to tables.
//!
//! Resolution without a catalog is deliberately conservative: when a reference could belong
//! to several tables, it is reported against each of them (or with `table: None` when there
//! is no candidate at all), never dropped.

use std::collections::BTreeSet;

use gatehouse_core::policy::{ColumnRef, StatementInfo, TableRef};
use pg_query::protobuf as pb;
use pg_query::{NodeEnum, NodeRef, ParserOptions};

use crate::children::for_each_child;

mod effects;
use crate::{AnalysisContext, AnalysisError};

/// Nesting bound of the walk. libpg_query already stops far below it (about 750 nested
/// operators or 250 nested subqueries); this guards the Rust stack should that ever change.
/// Measured in a debug build: about 3.5 KiB of stack per level, so 4 000 levels need about
/// 14 MiB of the parser threads' 64 MiB.
pub(crate) const MAX_DEPTH: usize = 4_000;

/// Parses and analyses `sql` on the current thread (which must have a big stack).
pub(crate) fn analyze_on_this_thread(
    sql: &str,
    ctx: &AnalysisContext,
) -> Result<Vec<StatementInfo>, AnalysisError> {
    let mut options = ParserOptions::DEFAULT;
    if !ctx.standard_conforming_strings {
        options |= ParserOptions::DISABLE_STANDARD_CONFORMING_STRINGS;
    }
    let parsed = pg_query::parse(sql, options).map_err(|e| match e {
        pg_query::Error::Parse(message) if message.contains("stack depth limit exceeded") => {
            AnalysisError::TooComplex
        }
        pg_query::Error::Parse(message) => AnalysisError::Parse {
            message,
            position: None,
        },
        other => AnalysisError::Internal(other.to_string()),
    })?;
    let default_schema = ctx.default_schema();
    let mut out = Vec::with_capacity(parsed.protobuf.stmts.len());
    for raw in &parsed.protobuf.stmts {
        let Some(node) = raw.stmt.as_ref().and_then(|n| n.node.as_ref()) else {
            continue;
        };
        out.push(analyze_statement(node.to_ref(), default_schema.as_deref())?);
    }
    Ok(out)
}

pub(crate) fn analyze_statement(
    top: NodeRef<'_>,
    default_schema: Option<&str>,
) -> Result<StatementInfo, AnalysisError> {
    let mut w = Walker::new(default_schema);
    w.walk(top);
    if w.too_complex {
        return Err(AnalysisError::TooComplex);
    }
    let mut info = w.finish(top);
    // Where result values come from is a separate question (values, not names): its own pass.
    (info.outputs, info.uses) = crate::lineage::outputs(top, default_schema)?;
    info.copy = crate::lineage::copy_info(top, default_schema);
    Ok(info)
}

// ---------------------------------------------------------------------------------------------
// Kinds

#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    Plain,
    /// Umbrella `dml`; writes data.
    Dml,
    /// Umbrella `ddl`.
    Ddl,
}

/// The kind of a statement node (`None` for nodes that are not statements).
#[allow(clippy::too_many_lines)]
fn kind_of(node: NodeRef<'_>) -> Option<(&'static str, Class)> {
    use Class::{Ddl, Dml, Plain};
    let k = match node {
        NodeRef::SelectStmt(s) if s.into_clause.is_some() => ("create", Ddl),
        NodeRef::SelectStmt(_) => ("select", Plain),
        NodeRef::InsertStmt(_) => ("insert", Dml),
        NodeRef::UpdateStmt(_) => ("update", Dml),
        NodeRef::DeleteStmt(_) => ("delete", Dml),
        NodeRef::MergeStmt(_) => ("merge", Dml),
        NodeRef::TruncateStmt(_) => ("truncate", Dml),
        NodeRef::CopyStmt(s) if s.is_from => ("copy_from", Dml),
        NodeRef::CopyStmt(_) => ("copy_to", Plain),

        NodeRef::DropStmt(_)
        | NodeRef::DropdbStmt(_)
        | NodeRef::DropRoleStmt(_)
        | NodeRef::DropOwnedStmt(_)
        | NodeRef::DropTableSpaceStmt(_)
        | NodeRef::DropSubscriptionStmt(_)
        | NodeRef::DropUserMappingStmt(_) => ("drop", Ddl),

        NodeRef::AlterTableStmt(_)
        | NodeRef::AlterDomainStmt(_)
        | NodeRef::AlterDefaultPrivilegesStmt(_)
        | NodeRef::AlterFunctionStmt(_)
        | NodeRef::RenameStmt(_)
        | NodeRef::AlterSeqStmt(_)
        | NodeRef::AlterRoleStmt(_)
        | NodeRef::AlterRoleSetStmt(_)
        | NodeRef::AlterDatabaseStmt(_)
        | NodeRef::AlterDatabaseSetStmt(_)
        | NodeRef::AlterDatabaseRefreshCollStmt(_)
        | NodeRef::AlterOpFamilyStmt(_)
        | NodeRef::AlterObjectDependsStmt(_)
        | NodeRef::AlterObjectSchemaStmt(_)
        | NodeRef::AlterOwnerStmt(_)
        | NodeRef::AlterOperatorStmt(_)
        | NodeRef::AlterTypeStmt(_)
        | NodeRef::ReassignOwnedStmt(_)
        | NodeRef::AlterEnumStmt(_)
        | NodeRef::AlterTsdictionaryStmt(_)
        | NodeRef::AlterTsconfigurationStmt(_)
        | NodeRef::AlterFdwStmt(_)
        | NodeRef::AlterForeignServerStmt(_)
        | NodeRef::AlterUserMappingStmt(_)
        | NodeRef::AlterTableSpaceOptionsStmt(_)
        | NodeRef::AlterTableMoveAllStmt(_)
        | NodeRef::AlterExtensionStmt(_)
        | NodeRef::AlterExtensionContentsStmt(_)
        | NodeRef::AlterEventTrigStmt(_)
        | NodeRef::AlterPolicyStmt(_)
        | NodeRef::AlterPublicationStmt(_)
        | NodeRef::AlterSubscriptionStmt(_)
        | NodeRef::AlterCollationStmt(_)
        | NodeRef::AlterStatsStmt(_) => ("alter", Ddl),
        NodeRef::AlterSystemStmt(_) => ("alter_system", Ddl),

        NodeRef::CreateStmt(_)
        | NodeRef::DefineStmt(_)
        | NodeRef::IndexStmt(_)
        | NodeRef::ViewStmt(_)
        | NodeRef::CreateDomainStmt(_)
        | NodeRef::CreatedbStmt(_)
        | NodeRef::CreateSeqStmt(_)
        | NodeRef::CreatePlangStmt(_)
        | NodeRef::CreateRoleStmt(_)
        | NodeRef::CreateSchemaStmt(_)
        | NodeRef::CreateConversionStmt(_)
        | NodeRef::CreateCastStmt(_)
        | NodeRef::CreateOpClassStmt(_)
        | NodeRef::CreateOpFamilyStmt(_)
        | NodeRef::CreateTableSpaceStmt(_)
        | NodeRef::CompositeTypeStmt(_)
        | NodeRef::CreateEnumStmt(_)
        | NodeRef::CreateRangeStmt(_)
        | NodeRef::CreateFdwStmt(_)
        | NodeRef::CreateForeignServerStmt(_)
        | NodeRef::CreateUserMappingStmt(_)
        | NodeRef::CreateForeignTableStmt(_)
        | NodeRef::ImportForeignSchemaStmt(_)
        | NodeRef::CreateTransformStmt(_)
        | NodeRef::CreateAmStmt(_)
        | NodeRef::CreatePublicationStmt(_)
        | NodeRef::CreateSubscriptionStmt(_)
        | NodeRef::CreateStatsStmt(_)
        | NodeRef::CreateTableAsStmt(_) => ("create", Ddl),
        NodeRef::CreateExtensionStmt(_) => ("create_extension", Ddl),
        NodeRef::CreateFunctionStmt(_) => ("create_function", Ddl),
        NodeRef::CreateTrigStmt(_) | NodeRef::CreateEventTrigStmt(_) => ("create_trigger", Ddl),
        NodeRef::RuleStmt(_) => ("create_rule", Ddl),
        NodeRef::CreatePolicyStmt(_) => ("create_policy", Ddl),
        NodeRef::GrantStmt(s) if s.is_grant => ("grant", Ddl),
        NodeRef::GrantStmt(_) => ("revoke", Ddl),
        NodeRef::GrantRoleStmt(s) if s.is_grant => ("grant", Ddl),
        NodeRef::GrantRoleStmt(_) => ("revoke", Ddl),
        NodeRef::CommentStmt(_) => ("comment", Ddl),
        NodeRef::SecLabelStmt(_) | NodeRef::RefreshMatViewStmt(_) => ("other", Ddl),

        NodeRef::DoStmt(_) => ("do", Plain),
        NodeRef::CallStmt(_) => ("call", Plain),
        NodeRef::VariableSetStmt(s) => {
            let name = s.name.to_ascii_lowercase();
            let reset = matches!(
                pb::VariableSetKind::try_from(s.kind),
                Ok(pb::VariableSetKind::VarReset | pb::VariableSetKind::VarResetAll)
            );
            match name.as_str() {
                "role" => ("set_role", Plain),
                "session_authorization" => ("set_session_authorization", Plain),
                _ if reset => ("reset", Plain),
                _ => ("set", Plain),
            }
        }
        NodeRef::VariableShowStmt(_) => ("show", Plain),
        NodeRef::TransactionStmt(s) => {
            use pb::TransactionStmtKind as T;
            match T::try_from(s.kind) {
                Ok(T::TransStmtBegin | T::TransStmtStart) => ("begin", Plain),
                Ok(T::TransStmtCommit | T::TransStmtCommitPrepared) => ("commit", Plain),
                Ok(
                    T::TransStmtRollback | T::TransStmtRollbackTo | T::TransStmtRollbackPrepared,
                ) => ("rollback", Plain),
                Ok(T::TransStmtSavepoint | T::TransStmtRelease) => ("savepoint", Plain),
                Ok(T::TransStmtPrepare) => ("prepare_transaction", Plain),
                Ok(T::Undefined) | Err(_) => ("other", Plain),
            }
        }
        NodeRef::PrepareStmt(_) => ("prepare", Plain),
        NodeRef::ExecuteStmt(_) => ("execute", Plain),
        NodeRef::DeallocateStmt(_) => ("deallocate", Plain),
        NodeRef::DeclareCursorStmt(_) => ("declare", Plain),
        NodeRef::FetchStmt(_) => ("fetch", Plain),
        NodeRef::ClosePortalStmt(_) => ("close", Plain),
        NodeRef::ExplainStmt(_) => ("explain", Plain),
        NodeRef::ListenStmt(_) => ("listen", Plain),
        NodeRef::NotifyStmt(_) => ("notify", Plain),
        NodeRef::UnlistenStmt(_) => ("unlisten", Plain),
        NodeRef::VacuumStmt(s) if s.is_vacuumcmd => ("vacuum", Plain),
        NodeRef::VacuumStmt(_) => ("analyze", Plain),
        NodeRef::ReindexStmt(_) => ("reindex", Plain),
        NodeRef::ClusterStmt(_) => ("cluster", Plain),
        NodeRef::LockStmt(_) => ("lock", Plain),
        NodeRef::CheckPointStmt(_) => ("checkpoint", Plain),
        NodeRef::DiscardStmt(_) => ("discard", Plain),
        NodeRef::LoadStmt(_) => ("load", Plain),
        NodeRef::ConstraintsSetStmt(_) | NodeRef::ReturnStmt(_) | NodeRef::PlassignStmt(_) => {
            ("other", Plain)
        }
        _ => return None,
    };
    Some(k)
}

// ---------------------------------------------------------------------------------------------
// Scopes

/// One item of a FROM list (or a DML target), as visible to column references.
#[derive(Clone, Debug, Default)]
struct Entry {
    /// The name it is referred to by: the alias, else the relation (or CTE/function) name.
    name: String,
    /// For an unaliased table, its schema (so `schema.table.column` resolves).
    schema: Option<String>,
    /// The base tables behind it: one for a table, those of both sides for a join alias,
    /// none for a subquery, CTE or function (whose own reads are recorded where they happen).
    tables: Vec<TableRef>,
    /// Column aliases (`payments AS p(a, b)`): these names stand for columns at unknown
    /// positions, so a reference to one of them reads an unknown column of the tables: `*`.
    renamed: Vec<String>,
}

impl Entry {
    fn derived(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            ..Self::default()
        }
    }

    /// The column to report for `col` read through this entry.
    fn column<'c>(&self, col: &'c str) -> &'c str {
        if self.renamed.iter().any(|r| r == col) {
            "*"
        } else {
            col
        }
    }
}

/// The FROM-list entries of one query level.
#[derive(Default, Debug)]
struct Scope {
    entries: Vec<Entry>,
}

struct Walker<'s> {
    info: StatementInfo,
    default_schema: Option<&'s str>,
    /// `CREATE SCHEMA s ...` resolves unqualified names of its elements in `s`.
    schema_override: Vec<String>,
    scopes: Vec<Scope>,
    /// CTE names visible, one frame per WITH clause being walked.
    ctes: Vec<Vec<String>>,
    /// Non-zero while walking code that is stored, not run now (view queries, rule actions, policy
    /// expressions, function bodies, plain EXPLAIN): tables, columns and functions are still
    /// recorded, but not kinds nor `data_modifying`.
    deferred: u32,
    depth: usize,
    too_complex: bool,
}

pub(crate) fn node_ref(n: &pb::Node) -> Option<NodeRef<'_>> {
    n.node.as_ref().map(NodeEnum::to_ref)
}

pub(crate) fn boxed_ref(n: &Option<Box<pb::Node>>) -> Option<NodeRef<'_>> {
    n.as_ref().and_then(|b| node_ref(b))
}

/// The `sval`s of a list of `String` nodes (other nodes are skipped).
pub(crate) fn strings(nodes: &[pb::Node]) -> Vec<&str> {
    nodes
        .iter()
        .filter_map(|n| match &n.node {
            Some(NodeEnum::String(s)) => Some(s.sval.as_str()),
            _ => None,
        })
        .collect()
}

/// Is a DefElem argument (an EXPLAIN option) true? Anything not clearly false counts as true.
fn def_is_true(arg: Option<&pb::Node>) -> bool {
    match arg.and_then(|n| n.node.as_ref()) {
        None => true,
        Some(NodeEnum::Boolean(b)) => b.boolval,
        Some(NodeEnum::Integer(i)) => i.ival != 0,
        Some(NodeEnum::String(s)) => !matches!(
            s.sval.to_ascii_lowercase().as_str(),
            "false" | "off" | "0" | "no"
        ),
        Some(NodeEnum::AConst(c)) => match &c.val {
            Some(pb::a_const::Val::Boolval(b)) => b.boolval,
            Some(pb::a_const::Val::Ival(i)) => i.ival != 0,
            Some(pb::a_const::Val::Sval(s)) => !matches!(
                s.sval.to_ascii_lowercase().as_str(),
                "false" | "off" | "0" | "no"
            ),
            _ => true,
        },
        Some(_) => true,
    }
}

/// A constant LIMIT (`None` for ALL, NULL, expressions or WITH TIES).
fn limit_of(s: &pb::SelectStmt) -> Option<i64> {
    if matches!(
        pb::LimitOption::try_from(s.limit_option),
        Ok(pb::LimitOption::WithTies)
    ) {
        return None;
    }
    let NodeRef::AConst(c) = boxed_ref(&s.limit_count)? else {
        return None;
    };
    if c.isnull {
        return None;
    }
    match c.val.as_ref()? {
        pb::a_const::Val::Ival(i) => Some(i64::from(i.ival)),
        pb::a_const::Val::Fval(f) => f.fval.trim().parse().ok(),
        pb::a_const::Val::Sval(s) => s.sval.trim().parse().ok(),
        _ => None,
    }
}

/// Settings whose list elements the server quotes as identifiers (`GUC_LIST_QUOTE`).
const LIST_QUOTE_SETTINGS: [&str; 5] = [
    "search_path",
    "temp_tablespaces",
    "session_preload_libraries",
    "local_preload_libraries",
    "shared_preload_libraries",
];

/// PostgreSQL's `quote_identifier`, less the keyword check (a quoted keyword means the same).
fn quote_ident(s: &str) -> String {
    let safe = s
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if safe {
        s.to_owned()
    } else {
        format!("\"{}\"", s.replace('"', "\"\""))
    }
}

/// Renders the value of a `SET` as the server stores it: constants joined with `, `, list
/// elements of `search_path` and the like quoted as identifiers where needed.
fn render_set_args(args: &[pb::Node], quote: bool) -> String {
    fn one(n: &pb::Node, quote: bool) -> Option<String> {
        match n.node.as_ref()? {
            NodeEnum::AConst(c) => match c.val.as_ref()? {
                pb::a_const::Val::Sval(s) if quote => Some(quote_ident(&s.sval)),
                pb::a_const::Val::Sval(s) => Some(s.sval.clone()),
                pb::a_const::Val::Ival(i) => Some(i.ival.to_string()),
                pb::a_const::Val::Fval(f) => Some(f.fval.clone()),
                pb::a_const::Val::Boolval(b) => Some(if b.boolval { "on" } else { "off" }.into()),
                pb::a_const::Val::Bsval(b) => Some(b.bsval.clone()),
            },
            NodeEnum::TypeCast(t) => t.arg.as_deref().and_then(|a| one(a, quote)),
            NodeEnum::DefElem(d) => Some(match d.arg.as_deref().and_then(|a| one(a, false)) {
                Some(v) => format!("{} {v}", d.defname),
                None => d.defname.clone(),
            }),
            NodeEnum::String(s) => Some(s.sval.clone()),
            NodeEnum::Integer(i) => Some(i.ival.to_string()),
            _ => None,
        }
    }
    args.iter()
        .filter_map(|a| one(a, quote))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The table a relation name designates: its own schema if qualified, else the schema of an
/// enclosing `CREATE SCHEMA` (`schema_override`), `pg_temp` for temporary tables,
/// `pg_catalog` for `pg_*` names (searched before the `search_path`), else the default schema.
pub(crate) fn resolve_table(
    r: &pb::RangeVar,
    schema_override: Option<&str>,
    default_schema: Option<&str>,
) -> TableRef {
    let schema = if !r.schemaname.is_empty() {
        Some(r.schemaname.clone())
    } else if let Some(s) = schema_override {
        Some(s.to_owned())
    } else if r.relpersistence == "t" {
        Some("pg_temp".to_owned())
    } else if r.relname.starts_with("pg_") {
        // pg_catalog is searched before the search_path.
        Some("pg_catalog".to_owned())
    } else {
        default_schema.map(str::to_owned)
    };
    TableRef {
        schema,
        name: r.relname.clone(),
    }
}

impl<'s> Walker<'s> {
    fn new(default_schema: Option<&'s str>) -> Self {
        Self {
            info: StatementInfo::default(),
            default_schema,
            schema_override: Vec::new(),
            scopes: Vec::new(),
            ctes: Vec::new(),
            deferred: 0,
            depth: 0,
            too_complex: false,
        }
    }

    fn finish(mut self, top: NodeRef<'_>) -> StatementInfo {
        let kind = kind_of(top).map_or("other", |(k, _)| k);
        self.info.kind = kind.to_owned();
        self.info.kinds.insert(kind.to_owned());
        self.info.limit = match top {
            NodeRef::SelectStmt(s) if s.into_clause.is_none() => limit_of(s),
            NodeRef::PrepareStmt(p) => match boxed_ref(&p.query) {
                Some(NodeRef::SelectStmt(s)) => limit_of(s),
                _ => None,
            },
            NodeRef::DeclareCursorStmt(d) => match boxed_ref(&d.query) {
                Some(NodeRef::SelectStmt(s)) => limit_of(s),
                _ => None,
            },
            _ => None,
        };
        // A column read means its table is read.
        let tables: Vec<TableRef> = self
            .info
            .columns_read
            .iter()
            .filter_map(|c| c.table.clone())
            .collect();
        self.info.tables_read.extend(tables);
        if self
            .info
            .tables_read
            .iter()
            .any(effects::is_activity_relation)
        {
            self.info.kinds.insert("read_activity".to_owned());
        }
        self.info
    }

    // --- bookkeeping ------------------------------------------------------------------------

    fn note_kind(&mut self, kind: &str, class: Class) {
        if self.deferred > 0 {
            return;
        }
        self.info.kinds.insert(kind.to_owned());
        match class {
            Class::Plain => {}
            Class::Dml => {
                self.info.kinds.insert("dml".to_owned());
                self.info.data_modifying = true;
            }
            Class::Ddl => {
                self.info.kinds.insert("ddl".to_owned());
            }
        }
    }

    fn add_kind(&mut self, kind: &str) {
        if self.deferred == 0 {
            self.info.kinds.insert(kind.to_owned());
        }
    }

    fn data_modifying(&mut self) {
        if self.deferred == 0 {
            self.info.data_modifying = true;
        }
    }

    fn table_ref(&self, r: &pb::RangeVar) -> TableRef {
        resolve_table(
            r,
            self.schema_override.last().map(String::as_str),
            self.default_schema,
        )
    }

    /// A table from a qualified-name list (`[name]`, `[schema, name]`, `[db, schema, name]`).
    fn table_from_names(&self, names: &[&str]) -> Option<TableRef> {
        let (name, rest) = names.split_last()?;
        let rv = pb::RangeVar {
            schemaname: rest.last().map(|s| (*s).to_owned()).unwrap_or_default(),
            relname: (*name).to_owned(),
            ..Default::default()
        };
        Some(self.table_ref(&rv))
    }

    fn is_cte(&self, r: &pb::RangeVar) -> bool {
        r.schemaname.is_empty()
            && r.catalogname.is_empty()
            && self.ctes.iter().any(|frame| frame.contains(&r.relname))
    }

    fn read_col(&mut self, table: Option<TableRef>, column: &str) {
        self.info.columns_read.insert(ColumnRef {
            table,
            column: column.to_owned(),
        });
    }

    fn table_entry(&self, r: &pb::RangeVar, t: TableRef) -> Entry {
        match &r.alias {
            Some(a) => Entry {
                name: a.aliasname.clone(),
                schema: None,
                tables: vec![t],
                renamed: strings(&a.colnames)
                    .into_iter()
                    .map(str::to_owned)
                    .collect(),
            },
            None => Entry {
                name: t.name.clone(),
                schema: t.schema.clone(),
                tables: vec![t],
                renamed: Vec::new(),
            },
        }
    }

    fn push_entry(&mut self, e: Entry) {
        if let Some(scope) = self.scopes.last_mut() {
            scope.entries.push(e);
        }
    }

    fn entries_len(&self) -> usize {
        self.scopes.last().map_or(0, |s| s.entries.len())
    }

    fn entries_since(&self, start: usize) -> Vec<Entry> {
        self.scopes
            .last()
            .map(|s| s.entries.iter().skip(start).cloned().collect())
            .unwrap_or_default()
    }

    /// Records `col` read through `e` (from each of its tables).
    fn read_via(&mut self, e: &Entry, col: &str) {
        for t in &e.tables {
            self.read_col(Some(t.clone()), e.column(col));
        }
    }

    /// The entry a qualifier names (`[rel]` or `[schema, rel]` or `[db, schema, rel]`),
    /// innermost query level first.
    fn find_entry(&self, qual: &[&str]) -> Option<&Entry> {
        let (rel, rest) = qual.split_last()?;
        let schema = rest.last();
        self.scopes.iter().rev().find_map(|scope| {
            scope.entries.iter().rev().find(|e| {
                e.name == *rel
                    && match schema {
                        None => true,
                        Some(s) => e.schema.as_deref() == Some(*s),
                    }
            })
        })
    }

    // --- the walk -----------------------------------------------------------------------------

    fn enter(&mut self) -> bool {
        if self.too_complex {
            return false;
        }
        if self.depth >= MAX_DEPTH {
            self.too_complex = true;
            return false;
        }
        self.depth += 1;
        true
    }

    fn leave(&mut self) {
        self.depth = self.depth.saturating_sub(1);
    }

    fn walk_node(&mut self, n: &pb::Node) {
        if let Some(r) = node_ref(n) {
            self.walk(r);
        }
    }

    fn walk_opt(&mut self, n: &Option<Box<pb::Node>>) {
        if let Some(r) = boxed_ref(n) {
            self.walk(r);
        }
    }

    fn walk_list(&mut self, v: &[pb::Node]) {
        for n in v {
            self.walk_node(n);
        }
    }

    fn walk_children(&mut self, node: NodeRef<'_>) {
        for_each_child(node, &mut |c| self.walk(c));
    }

    /// Walks the children of `node` except the relation `skip` (handled by the caller).
    fn walk_children_except(&mut self, node: NodeRef<'_>, skip: Option<&pb::RangeVar>) {
        for_each_child(node, &mut |c| {
            if let (NodeRef::RangeVar(r), Some(s)) = (c, skip)
                && std::ptr::eq(r, s)
            {
                return;
            }
            self.walk(c);
        });
    }

    fn walk(&mut self, node: NodeRef<'_>) {
        if !self.enter() {
            return;
        }
        // A SET nested in another statement (ALTER SYSTEM/ROLE/DATABASE ... SET, a function's
        // SET clause) is not a session SET.
        let nested_set = matches!(node, NodeRef::VariableSetStmt(_)) && self.depth > 1;
        if let Some((kind, class)) = kind_of(node)
            && !nested_set
        {
            self.note_kind(kind, class);
        }
        self.effects(node);
        match node {
            NodeRef::SelectStmt(s) => self.select(s),
            NodeRef::InsertStmt(s) => self.insert(s),
            NodeRef::UpdateStmt(s) => self.update(s),
            NodeRef::DeleteStmt(s) => self.delete(s),
            NodeRef::MergeStmt(s) => self.merge(s),
            NodeRef::CopyStmt(s) => self.copy(s),
            NodeRef::ColumnRef(c) => self.column_ref(c),
            NodeRef::AIndirection(a) => self.indirection(node, a),
            NodeRef::FuncCall(f) => self.func_call(node, f),
            NodeRef::RangeVar(r) => {
                // A relation named outside a FROM list (LOCK, LIKE, INHERITS, REFERENCES...).
                let t = self.table_ref(r);
                self.info.tables_read.insert(t);
            }
            NodeRef::LockingClause(_) => {
                // FOR UPDATE/SHARE [OF alias]: the names are FROM aliases, not tables.
                self.add_kind("lock");
            }
            NodeRef::VariableSetStmt(s) if !nested_set => self.variable_set(s),
            NodeRef::DiscardStmt(d) => {
                if matches!(
                    pb::DiscardMode::try_from(d.target),
                    Ok(pb::DiscardMode::DiscardAll)
                ) {
                    // DISCARD ALL includes SET SESSION AUTHORIZATION DEFAULT (and so RESET ROLE).
                    self.add_kind("set_role");
                    self.add_kind("set_session_authorization");
                }
            }
            NodeRef::ExplainStmt(s) => {
                let analyze = s.options.iter().any(|o| match &o.node {
                    Some(NodeEnum::DefElem(d)) => {
                        d.defname.eq_ignore_ascii_case("analyze") && def_is_true(d.arg.as_deref())
                    }
                    _ => false,
                });
                if analyze {
                    self.walk_opt(&s.query);
                } else {
                    self.deferred += 1;
                    self.walk_opt(&s.query);
                    self.deferred -= 1;
                }
            }
            NodeRef::PrepareStmt(p) => {
                self.info.prepares = Some(p.name.clone());
                self.walk_children(node);
            }
            NodeRef::ExecuteStmt(e) => {
                self.info.executes = Some(e.name.clone());
                self.walk_list(&e.params);
            }
            NodeRef::CreateTableAsStmt(c) => {
                self.data_modifying();
                if let Some(rel) = c.into.as_ref().and_then(|i| i.rel.as_ref()) {
                    let t = self.table_ref(rel);
                    self.info.tables_written.insert(t);
                }
                self.walk_opt(&c.query);
            }
            NodeRef::DoStmt(_) | NodeRef::CreateEventTrigStmt(_) => {
                self.info.opaque = true;
            }
            NodeRef::CreateFunctionStmt(_) => {
                self.info.opaque = true;
                self.deferred_children(node, None, &[]);
            }
            NodeRef::CreateTrigStmt(t) => {
                self.info.opaque = true;
                self.deferred_children(node, t.relation.as_ref(), &["new", "old"]);
            }
            NodeRef::RuleStmt(r) => {
                self.info.opaque = true;
                self.deferred_children(node, r.relation.as_ref(), &["new", "old"]);
            }
            NodeRef::CreatePolicyStmt(p) => self.deferred_children(node, p.table.as_ref(), &[]),
            NodeRef::AlterPolicyStmt(p) => self.deferred_children(node, p.table.as_ref(), &[]),
            NodeRef::ViewStmt(v) => self.deferred_children(node, v.view.as_ref(), &[]),
            NodeRef::CreateSchemaStmt(s) => {
                self.schema_override.push(s.schemaname.clone());
                self.walk_children(node);
                self.schema_override.pop();
            }
            NodeRef::CreateStmt(s) => self.on_relation(node, s.relation.as_ref()),
            NodeRef::AlterTableStmt(s) => self.on_relation(node, s.relation.as_ref()),
            NodeRef::IndexStmt(s) => self.on_relation(node, s.relation.as_ref()),
            NodeRef::RenameStmt(s) => self.on_relation(node, s.relation.as_ref()),
            NodeRef::AlterObjectSchemaStmt(s) => self.on_relation(node, s.relation.as_ref()),
            NodeRef::AlterOwnerStmt(s) => self.on_relation(node, s.relation.as_ref()),
            NodeRef::ClusterStmt(s) => self.on_relation(node, s.relation.as_ref()),
            NodeRef::ReindexStmt(s) => self.on_relation(node, s.relation.as_ref()),
            NodeRef::CreateSeqStmt(s) => self.on_relation(node, s.sequence.as_ref()),
            NodeRef::AlterSeqStmt(s) => self.on_relation(node, s.sequence.as_ref()),
            NodeRef::RefreshMatViewStmt(s) => {
                self.data_modifying();
                self.on_relation(node, s.relation.as_ref());
            }
            NodeRef::TruncateStmt(s) => {
                for n in &s.relations {
                    if let Some(NodeEnum::RangeVar(r)) = &n.node {
                        let t = self.table_ref(r);
                        self.info.tables_written.insert(t);
                    }
                }
            }
            NodeRef::VacuumStmt(s) => {
                for n in &s.rels {
                    if let Some(NodeEnum::VacuumRelation(v)) = &n.node
                        && let Some(r) = &v.relation
                    {
                        let t = self.table_ref(r);
                        if s.is_vacuumcmd {
                            self.info.tables_written.insert(t);
                        } else {
                            self.info.tables_read.insert(t);
                        }
                    }
                }
                self.walk_list(&s.options);
            }
            NodeRef::GrantStmt(g) => {
                for n in &g.objects {
                    if let Some(NodeEnum::RangeVar(r)) = &n.node {
                        let t = self.table_ref(r);
                        self.info.tables_written.insert(t);
                    }
                }
            }
            NodeRef::DropStmt(d) => self.drop_objects(d.remove_type, &d.objects),
            NodeRef::CommentStmt(c) => {
                self.object_written(c.objtype, c.object.as_deref());
            }
            NodeRef::SecLabelStmt(c) => {
                self.object_written(c.objtype, c.object.as_deref());
            }
            _ => self.walk_children(node),
        }
        self.leave();
    }

    /// A statement acting on one relation: the relation is written, and the statement's own
    /// expressions (defaults, checks, index expressions...) see it as their FROM list.
    fn on_relation(&mut self, node: NodeRef<'_>, rel: Option<&pb::RangeVar>) {
        match rel {
            Some(r) => {
                let t = self.table_ref(r);
                self.info.tables_written.insert(t.clone());
                self.scopes.push(Scope {
                    entries: vec![self.table_entry(r, t)],
                });
                self.walk_children_except(node, Some(r));
                self.scopes.pop();
            }
            None => self.walk_children(node),
        }
    }

    /// A statement storing code that runs later (rule, trigger, policy, view, function): its
    /// relation is written now; the stored code is walked in deferred mode, with `extra`
    /// names (NEW, OLD) also meaning the relation.
    fn deferred_children(&mut self, node: NodeRef<'_>, rel: Option<&pb::RangeVar>, extra: &[&str]) {
        let mut entries = Vec::new();
        if let Some(r) = rel {
            let t = self.table_ref(r);
            self.info.tables_written.insert(t.clone());
            entries.push(self.table_entry(r, t.clone()));
            for name in extra {
                entries.push(Entry {
                    name: (*name).to_owned(),
                    schema: None,
                    tables: vec![t.clone()],
                    ..Entry::default()
                });
            }
        }
        self.scopes.push(Scope { entries });
        self.deferred += 1;
        self.walk_children_except(node, rel);
        self.deferred -= 1;
        self.scopes.pop();
    }

    /// DROP of tables/views/indexes/sequences, or of triggers/policies/rules on a table.
    fn drop_objects(&mut self, objtype: i32, objects: &[pb::Node]) {
        for n in objects {
            let names = match &n.node {
                Some(NodeEnum::List(l)) => strings(&l.items),
                Some(NodeEnum::String(s)) => vec![s.sval.as_str()],
                _ => continue,
            };
            if let Some(t) = self.object_table(objtype, &names) {
                self.info.tables_written.insert(t);
            }
        }
    }

    fn object_written(&mut self, objtype: i32, object: Option<&pb::Node>) {
        let names = match object.and_then(|o| o.node.as_ref()) {
            Some(NodeEnum::List(l)) => strings(&l.items),
            Some(NodeEnum::String(s)) => vec![s.sval.as_str()],
            _ => return,
        };
        if let Some(t) = self.object_table(objtype, &names) {
            self.info.tables_written.insert(t);
        }
    }

    /// The table an object name designates, for relation-like object types.
    fn object_table(&self, objtype: i32, names: &[&str]) -> Option<TableRef> {
        use pb::ObjectType as O;
        match O::try_from(objtype).ok()? {
            O::ObjectTable
            | O::ObjectView
            | O::ObjectMatview
            | O::ObjectIndex
            | O::ObjectSequence
            | O::ObjectForeignTable => self.table_from_names(names),
            // [schema.]table.name
            O::ObjectTrigger
            | O::ObjectPolicy
            | O::ObjectRule
            | O::ObjectColumn
            | O::ObjectTabconstraint => self.table_from_names(names.split_last()?.1),
            _ => None,
        }
    }

    // --- queries ------------------------------------------------------------------------------

    /// Walks a WITH clause and makes its names visible; returns whether a frame was pushed.
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
        let mut frame = Vec::new();
        if w.recursive {
            frame.extend(ctes.iter().map(|c| c.ctename.clone()));
        }
        self.ctes.push(frame);
        for c in ctes {
            self.walk_opt(&c.ctequery);
            if let Some(cycle) = &c.cycle_clause {
                self.walk_opt(&cycle.cycle_mark_value);
                self.walk_opt(&cycle.cycle_mark_default);
            }
            if !w.recursive
                && let Some(frame) = self.ctes.last_mut()
            {
                frame.push(c.ctename.clone());
            }
        }
        true
    }

    fn pop_with(&mut self, pushed: bool) {
        if pushed {
            self.ctes.pop();
        }
    }

    fn select(&mut self, s: &pb::SelectStmt) {
        let with = self.push_with(s.with_clause.as_ref());
        if s.larg.is_some() || s.rarg.is_some() {
            // UNION / INTERSECT / EXCEPT: each arm is a query of its own.
            if let Some(l) = &s.larg {
                self.walk(NodeRef::SelectStmt(l));
            }
            if let Some(r) = &s.rarg {
                self.walk(NodeRef::SelectStmt(r));
            }
            // ORDER BY of a set operation names output columns only.
            self.scopes.push(Scope::default());
            self.sort_clause(&s.sort_clause, None);
            self.walk_opt(&s.limit_offset);
            self.walk_opt(&s.limit_count);
            self.walk_list(&s.locking_clause);
            self.scopes.pop();
        } else {
            self.scopes.push(Scope::default());
            for n in &s.from_clause {
                self.walk_from_node(n);
            }
            if let Some(into) = &s.into_clause {
                // SELECT INTO is CREATE TABLE AS.
                self.data_modifying();
                self.add_kind("select");
                if let Some(rel) = &into.rel {
                    let t = self.table_ref(rel);
                    self.info.tables_written.insert(t);
                }
            }
            self.walk_list(&s.distinct_clause);
            self.walk_list(&s.target_list);
            self.walk_opt(&s.where_clause);
            self.walk_list(&s.group_clause);
            self.walk_opt(&s.having_clause);
            self.walk_list(&s.window_clause);
            self.walk_list(&s.values_lists);
            let outputs: Vec<&str> = s
                .target_list
                .iter()
                .filter_map(|n| match &n.node {
                    Some(NodeEnum::ResTarget(r)) if !r.name.is_empty() => Some(r.name.as_str()),
                    _ => None,
                })
                .collect();
            self.sort_clause(&s.sort_clause, Some(&outputs));
            self.walk_opt(&s.limit_offset);
            self.walk_opt(&s.limit_count);
            self.walk_list(&s.locking_clause);
            self.scopes.pop();
        }
        self.pop_with(with);
    }

    /// ORDER BY: a bare name that is an output column's alias (or any bare name, for a set
    /// operation: `outputs == None`) names the output, not a table column.
    fn sort_clause(&mut self, sort: &[pb::Node], outputs: Option<&[&str]>) {
        for n in sort {
            if let Some(NodeEnum::SortBy(sb)) = &n.node
                && let Some(NodeRef::ColumnRef(c)) = boxed_ref(&sb.node)
                && let [only] = c.fields.as_slice()
                && let Some(NodeEnum::String(name)) = &only.node
                && outputs.is_none_or(|o| o.contains(&name.sval.as_str()))
            {
                self.walk_list(&sb.use_op);
                continue;
            }
            self.walk_node(n);
        }
    }

    fn walk_from_node(&mut self, n: &pb::Node) {
        if let Some(r) = node_ref(n) {
            self.walk_from_item(r);
        }
    }

    /// One FROM-list item: records what it reads and adds its entries to the current scope.
    fn walk_from_item(&mut self, node: NodeRef<'_>) {
        if !self.enter() {
            return;
        }
        match node {
            NodeRef::RangeVar(r) => {
                if self.is_cte(r) {
                    let name = r
                        .alias
                        .as_ref()
                        .map_or(&r.relname, |a| &a.aliasname)
                        .clone();
                    self.push_entry(Entry::derived(&name));
                } else {
                    let t = self.table_ref(r);
                    self.info.tables_read.insert(t.clone());
                    let e = self.table_entry(r, t);
                    self.push_entry(e);
                }
            }
            NodeRef::RangeSubselect(s) => {
                self.walk_opt(&s.subquery);
                if let Some(a) = &s.alias {
                    self.push_entry(Entry::derived(&a.aliasname));
                }
            }
            NodeRef::RangeFunction(f) => {
                self.walk_children(node);
                let name = f.alias.as_ref().map(|a| a.aliasname.clone()).or_else(|| {
                    // Unaliased: the (first) function's name.
                    let first = f.functions.first()?;
                    let Some(NodeEnum::List(l)) = &first.node else {
                        return None;
                    };
                    let Some(NodeEnum::FuncCall(fc)) = l.items.first()?.node.as_ref() else {
                        return None;
                    };
                    strings(&fc.funcname).last().map(|s| (*s).to_owned())
                });
                if let Some(name) = name {
                    self.push_entry(Entry::derived(&name));
                }
            }
            NodeRef::RangeTableSample(t) => {
                self.walk_opt_from(&t.relation);
                let method = strings(&t.method).join(".").to_lowercase();
                if !method.is_empty() {
                    self.info.functions.insert(method);
                }
                self.walk_list(&t.args);
                self.walk_opt(&t.repeatable);
            }
            NodeRef::JoinExpr(j) => {
                let start = self.entries_len();
                self.walk_opt_from(&j.larg);
                self.walk_opt_from(&j.rarg);
                let sides = self.entries_since(start);
                for col in strings(&j.using_clause) {
                    for e in &sides {
                        self.read_via(e, col);
                    }
                }
                if j.is_natural {
                    // The common columns are unknown without a catalog: all of them.
                    for e in &sides {
                        self.read_via(e, "*");
                    }
                }
                self.walk_opt(&j.quals);
                // Deduplicated: the sides include nested join aliases, whose tables are those
                // of their own sides again (nested aliased joins would double them per level).
                let tables: Vec<TableRef> = sides
                    .iter()
                    .flat_map(|e| e.tables.iter().cloned())
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .collect();
                if let Some(a) = &j.join_using_alias {
                    self.push_entry(Entry {
                        name: a.aliasname.clone(),
                        tables: tables.clone(),
                        ..Entry::default()
                    });
                }
                if let Some(a) = &j.alias {
                    let mut renamed: Vec<String> = strings(&a.colnames)
                        .into_iter()
                        .map(str::to_owned)
                        .collect();
                    // Columns renamed on either side stay unknown through the join alias.
                    renamed.extend(sides.iter().flat_map(|e| e.renamed.iter().cloned()));
                    renamed.sort();
                    renamed.dedup();
                    self.push_entry(Entry {
                        name: a.aliasname.clone(),
                        tables,
                        renamed,
                        ..Entry::default()
                    });
                }
            }
            NodeRef::RangeTableFunc(t) => {
                self.walk_children(node);
                if let Some(a) = &t.alias {
                    self.push_entry(Entry::derived(&a.aliasname));
                }
            }
            NodeRef::JsonTable(t) => {
                self.walk_children(node);
                if let Some(a) = &t.alias {
                    self.push_entry(Entry::derived(&a.aliasname));
                }
            }
            other => self.walk(other),
        }
        self.leave();
    }

    fn walk_opt_from(&mut self, n: &Option<Box<pb::Node>>) {
        if let Some(r) = boxed_ref(n) {
            self.walk_from_item(r);
        }
    }

    /// Entries for a DML target and its RETURNING aliases (`old`/`new` or as renamed).
    fn target_entries(
        &self,
        r: &pb::RangeVar,
        t: &TableRef,
        ret: Option<&pb::ReturningClause>,
    ) -> Vec<Entry> {
        let mut entries = vec![self.table_entry(r, t.clone())];
        let mut names = vec!["old".to_owned(), "new".to_owned()];
        if let Some(rc) = ret {
            for o in &rc.options {
                if let Some(NodeEnum::ReturningOption(opt)) = &o.node {
                    names.push(opt.value.clone());
                }
            }
        }
        for name in names {
            entries.push(Entry {
                name,
                schema: None,
                tables: vec![t.clone()],
                ..Entry::default()
            });
        }
        entries
    }

    fn returning(&mut self, ret: Option<&pb::ReturningClause>) {
        if let Some(rc) = ret {
            self.walk_list(&rc.exprs);
        }
    }

    fn insert(&mut self, s: &pb::InsertStmt) {
        let with = self.push_with(s.with_clause.as_ref());
        // The source query does not see the target table. A plain VALUES list is not a query
        // of its own (no `select` kind).
        match boxed_ref(&s.select_stmt) {
            Some(NodeRef::SelectStmt(v)) if !v.values_lists.is_empty() => {
                if self.enter() {
                    self.select(v);
                    self.leave();
                }
            }
            _ => self.walk_opt(&s.select_stmt),
        }
        self.walk_list(&s.cols);
        if let Some(r) = &s.relation {
            let t = self.table_ref(r);
            self.info.tables_written.insert(t.clone());
            let mut entries = self.target_entries(r, &t, s.returning_clause.as_ref());
            if let Some(oc) = &s.on_conflict_clause {
                entries.push(Entry::derived("excluded"));
                self.scopes.push(Scope { entries });
                self.walk(NodeRef::OnConflictClause(oc));
            } else {
                self.scopes.push(Scope { entries });
            }
            self.returning(s.returning_clause.as_ref());
            self.scopes.pop();
        }
        self.pop_with(with);
    }

    /// The table an UPDATE/DELETE/MERGE writes: recorded, and its columns put in scope.
    fn write_target(
        &mut self,
        relation: Option<&pb::RangeVar>,
        returning: Option<&pb::ReturningClause>,
    ) {
        if let Some(r) = relation {
            let t = self.table_ref(r);
            self.info.tables_written.insert(t.clone());
            for e in self.target_entries(r, &t, returning) {
                self.push_entry(e);
            }
        }
    }

    fn update(&mut self, s: &pb::UpdateStmt) {
        let with = self.push_with(s.with_clause.as_ref());
        self.scopes.push(Scope::default());
        self.write_target(s.relation.as_ref(), s.returning_clause.as_ref());
        for n in &s.from_clause {
            self.walk_from_node(n);
        }
        self.walk_list(&s.target_list);
        self.walk_opt(&s.where_clause);
        self.returning(s.returning_clause.as_ref());
        self.scopes.pop();
        self.pop_with(with);
    }

    fn delete(&mut self, s: &pb::DeleteStmt) {
        let with = self.push_with(s.with_clause.as_ref());
        self.scopes.push(Scope::default());
        self.write_target(s.relation.as_ref(), s.returning_clause.as_ref());
        for n in &s.using_clause {
            self.walk_from_node(n);
        }
        self.walk_opt(&s.where_clause);
        self.returning(s.returning_clause.as_ref());
        self.scopes.pop();
        self.pop_with(with);
    }

    fn merge(&mut self, s: &pb::MergeStmt) {
        let with = self.push_with(s.with_clause.as_ref());
        self.scopes.push(Scope::default());
        self.write_target(s.relation.as_ref(), s.returning_clause.as_ref());
        self.walk_opt_from(&s.source_relation);
        self.walk_opt(&s.join_condition);
        for n in &s.merge_when_clauses {
            if let Some(NodeEnum::MergeWhenClause(w)) = &n.node {
                match pb::CmdType::try_from(w.command_type) {
                    Ok(pb::CmdType::CmdInsert) => self.add_kind("insert"),
                    Ok(pb::CmdType::CmdUpdate) => self.add_kind("update"),
                    Ok(pb::CmdType::CmdDelete) => self.add_kind("delete"),
                    _ => {}
                }
                self.walk_opt(&w.condition);
                self.walk_list(&w.target_list);
                self.walk_list(&w.values);
            }
        }
        self.returning(s.returning_clause.as_ref());
        self.scopes.pop();
        self.pop_with(with);
    }

    fn copy(&mut self, s: &pb::CopyStmt) {
        if let Some(r) = &s.relation {
            let t = self.table_ref(r);
            if s.is_from {
                self.info.tables_written.insert(t.clone());
                self.scopes.push(Scope {
                    entries: vec![self.table_entry(r, t)],
                });
                self.walk_opt(&s.where_clause);
                self.scopes.pop();
            } else {
                let cols = strings(&s.attlist);
                if cols.is_empty() {
                    self.read_col(Some(t.clone()), "*");
                }
                for c in cols {
                    self.read_col(Some(t.clone()), c);
                }
                self.info.tables_read.insert(t);
            }
        }
        self.walk_opt(&s.query);
        if !s.filename.is_empty() {
            if s.is_program {
                self.info.copy_program = true;
            } else {
                self.info.copy_file = true;
            }
        } else if s.is_program {
            self.info.copy_program = true;
        }
        self.walk_list(&s.options);
    }

    fn variable_set(&mut self, s: &pb::VariableSetStmt) {
        use pb::VariableSetKind as V;
        let kind = V::try_from(s.kind).unwrap_or(V::Undefined);
        let name = if s.name.is_empty() {
            "all".to_owned()
        } else {
            s.name.to_ascii_lowercase()
        };
        let value = match kind {
            V::VarSetValue | V::VarSetMulti => Some(render_set_args(
                &s.args,
                LIST_QUOTE_SETTINGS.contains(&name.as_str()),
            )),
            V::VarSetDefault | V::VarSetCurrent | V::VarReset | V::VarResetAll | V::Undefined => {
                None
            }
        };
        self.add_kind(if matches!(kind, V::VarReset | V::VarResetAll) {
            "reset"
        } else {
            "set"
        });
        self.info.set_setting = Some((name, value));
        self.walk_list(&s.args);
    }

    // --- expressions --------------------------------------------------------------------------

    fn column_ref(&mut self, c: &pb::ColumnRef) {
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
            if names.is_empty() {
                // SELECT *: every table of this query level.
                let tables: Vec<TableRef> = self
                    .scopes
                    .last()
                    .map(|s| {
                        s.entries
                            .iter()
                            .flat_map(|e| e.tables.iter().cloned())
                            .collect()
                    })
                    .unwrap_or_default();
                for t in tables {
                    self.read_col(Some(t), "*");
                }
            } else if let Some(e) = self.find_entry(&names).cloned() {
                self.read_via(&e, "*");
            }
            return;
        }
        match names.as_slice() {
            [] => {}
            [name] => {
                if let Some(e) = self.find_entry(&[name]).cloned() {
                    // A bare relation name is a whole-row reference (row_to_json(p), p::text)
                    // unless a column of that name exists, which the server tries first.
                    self.read_via(&e, "*");
                    self.unqualified_except(name, &e.tables);
                } else {
                    self.unqualified(name);
                }
            }
            [rel, col] => self.qualified(&[rel], col, rel),
            [schema, rel, col] => {
                if self.find_entry(&[schema, rel]).is_some() {
                    self.qualified(&[schema, rel], col, schema);
                } else {
                    // rel.col.field
                    self.qualified(&[schema], rel, schema);
                }
            }
            [_db, schema, rel, col, ..] => self.qualified(&[schema, rel], col, schema),
        }
    }

    /// `qual.col`; when `qual` names no FROM entry, `fallback` is a composite column.
    fn qualified(&mut self, qual: &[&str], col: &str, fallback: &str) {
        match self.find_entry(qual).cloned() {
            Some(e) => self.read_via(&e, col),
            None => self.unqualified(fallback),
        }
    }

    /// A bare column name: the single table of this query level when it is the only
    /// candidate anywhere; else every table it could come from (innermost level first, outer
    /// levels for correlated references), or no table at all when there is no candidate.
    fn unqualified(&mut self, col: &str) {
        self.unqualified_except(col, &[]);
    }

    /// [`Self::unqualified`], leaving out tables already reported whole (`covered`).
    fn unqualified_except(&mut self, col: &str, covered: &[TableRef]) {
        let inner_only = match self.scopes.split_last() {
            Some((inner, outer)) => match inner.entries.as_slice() {
                [only] if only.tables.len() == 1 && outer.iter().all(|s| s.entries.is_empty()) => {
                    Some(only.clone())
                }
                _ => None,
            },
            None => None,
        };
        let mut reads: BTreeSet<(TableRef, String)> = BTreeSet::new();
        let mut derived = false;
        let candidates: Vec<&Entry> = match &inner_only {
            Some(e) => vec![e],
            None => self.scopes.iter().flat_map(|s| s.entries.iter()).collect(),
        };
        for e in candidates {
            derived |= e.tables.is_empty();
            for t in &e.tables {
                reads.insert((t.clone(), e.column(col).to_owned()));
            }
        }
        if reads.is_empty() {
            if !derived && covered.is_empty() {
                self.read_col(None, col);
            }
            return;
        }
        for (t, c) in reads {
            if !covered.contains(&t) {
                self.read_col(Some(t), &c);
            }
        }
    }

    /// `(p).card_number`, `(p.*).card_number`, `(p).*`: field selection from a whole row.
    fn indirection(&mut self, node: NodeRef<'_>, a: &pb::AIndirection) {
        if let Some(NodeRef::ColumnRef(c)) = boxed_ref(&a.arg) {
            let (mut names, mut star) = (Vec::new(), false);
            for f in &c.fields {
                match &f.node {
                    Some(NodeEnum::String(s)) => names.push(s.sval.as_str()),
                    Some(NodeEnum::AStar(_)) => star = true,
                    _ => {}
                }
            }
            let whole_row = names.len() == 1 || (star && !names.is_empty());
            if whole_row && let Some(e) = self.find_entry(&names).cloned() {
                let field = match a.indirection.first().and_then(|n| n.node.as_ref()) {
                    Some(NodeEnum::String(s)) => s.sval.clone(),
                    _ => "*".to_owned(),
                };
                self.read_via(&e, &field);
                if !star && let Some(name) = names.first() {
                    // `(x).f` where x is a column of another table.
                    self.unqualified_except(name, &e.tables);
                }
                self.walk_list(&a.indirection);
                return;
            }
        }
        self.walk_children(node);
    }

    fn func_call(&mut self, node: NodeRef<'_>, f: &pb::FuncCall) {
        let mut names = strings(&f.funcname);
        if matches!(
            pb::CoercionForm::try_from(f.funcformat),
            Ok(pb::CoercionForm::CoerceSqlSyntax)
        ) && names.len() == 2
            && names.first() == Some(&"pg_catalog")
        {
            // SQL syntax (EXTRACT, SUBSTRING ... FROM, AT TIME ZONE): not written qualified.
            names.remove(0);
        }
        if !names.is_empty() {
            self.info.functions.insert(names.join(".").to_lowercase());
        }
        if let Some(name) = effects::bare_name(f) {
            self.call_effects(&name);
        }
        if names
            .last()
            .is_some_and(|n| n.eq_ignore_ascii_case("set_config"))
        {
            // set_config() changes settings like SET does; record what it changes.
            let name = f
                .args
                .first()
                .and_then(constant_text)
                .map(|n| n.trim().to_ascii_lowercase());
            let value = f.args.get(1).and_then(constant_text);
            self.info.config_calls.push((name, value));
        }
        self.walk_children(node);
    }
}

/// The text of a constant argument, through casts (`'off'::text`, `CAST('off' AS varchar)`);
/// `None` for anything the gateway would have to evaluate.
fn constant_text(n: &pb::Node) -> Option<String> {
    let mut cur = n;
    for _ in 0..16 {
        match cur.node.as_ref()? {
            NodeEnum::AConst(c) => {
                return match &c.val {
                    Some(pb::a_const::Val::Sval(s)) => Some(s.sval.clone()),
                    Some(pb::a_const::Val::Ival(i)) => Some(i.ival.to_string()),
                    Some(pb::a_const::Val::Fval(f)) => Some(f.fval.clone()),
                    Some(pb::a_const::Val::Boolval(b)) => Some(b.boolval.to_string()),
                    _ => None,
                };
            }
            NodeEnum::TypeCast(t) => cur = t.arg.as_deref()?,
            _ => return None,
        }
    }
    None
}
