//! The decision for a statement: the builtin refusals first, then the configured rules.
//!
//! Builtin refusals (whatever the rules say; named `builtin:...`) are the dialect's: those
//! of PostgreSQL are in `decide/postgres.rs` (a MySQL adapter adds its own module beside it).
//!
//! Then, among the rules that apply: block > approve > allow, ties to the first in file order;
//! nothing applies → allow.

use std::collections::BTreeSet;

use super::analysis::{StatementInfo, TableRef};
use super::pattern::{ColumnPattern, FunctionPattern, TablePattern, glob_match};
use super::rules::{Action, BUILTIN_PREFIX, Rule, RuleError, is_statement_kind};
use super::settings::{self, SettingValue, setting_refusal};

mod postgres;
#[cfg(test)]
mod tests;

/// What to do with a statement, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub action: Action,
    /// The rule that decided (`builtin:...` for a builtin refusal); `None`: no rule applied.
    pub rule: Option<String>,
    /// Short text naming what triggered the rule, e.g. `DROP public.x` or
    /// `reads public.payments.card_number`. Names only, never literal values.
    pub reason: String,
}

impl Decision {
    /// The decision when no rule applies.
    pub fn default_allow() -> Self {
        Self {
            action: Action::Allow,
            rule: None,
            reason: "no rule matched".into(),
        }
    }

    /// Whether a builtin refusal decided.
    pub fn is_builtin(&self) -> bool {
        self.rule
            .as_deref()
            .is_some_and(|r| r.starts_with(BUILTIN_PREFIX))
    }

    /// The message for the client, e.g. `blocked by rule "no-destructive": DROP public.x`.
    pub fn client_message(&self) -> String {
        match (self.action, &self.rule) {
            (Action::Block, Some(r)) => format!("blocked by rule \"{r}\": {}", self.reason),
            (Action::Block, None) => format!("blocked: {}", self.reason),
            (Action::Approve, Some(r)) => {
                format!("approval required by rule \"{r}\": {}", self.reason)
            }
            (Action::Approve, None) => format!("approval required: {}", self.reason),
            (Action::Allow, Some(r)) => format!("allowed by rule \"{r}\": {}", self.reason),
            (Action::Allow, None) => format!("allowed: {}", self.reason),
        }
    }
}

/// Kinds that carry code the gateway cannot analyse.
const OPAQUE_KINDS: &[&str] = &["do", "create_function", "create_trigger", "create_rule"];

/// The kinds the `dml` umbrella covers (every dialect's analysis adds it for these).
pub const DML_KINDS: &[&str] = &[
    "insert",
    "update",
    "delete",
    "merge",
    "copy_from",
    "truncate",
];
/// The kinds the `ddl` umbrella covers.
pub const DDL_KINDS: &[&str] = &[
    "create",
    "alter",
    "drop",
    "create_extension",
    "create_function",
    "create_trigger",
    "create_rule",
    "create_policy",
    "comment",
];

/// A rule with its patterns parsed.
#[derive(Debug, Clone)]
struct Compiled {
    rule: Rule,
    statements: Vec<String>,
    reads: Vec<ColumnPattern>,
    writes: Vec<TablePattern>,
    functions: Vec<FunctionPattern>,
    /// `Some(limit_above)` when `without_limit`.
    without_limit: Option<i64>,
    /// The rule did not validate (only possible through [`Policy::new`] on unchecked rules):
    /// an allow rule is then ignored, a block/approve rule applies to every statement of its
    /// connections and groups (fail closed).
    broken: Option<String>,
}

/// The compiled rules of a configuration.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    rules: Vec<Compiled>,
}

/// Role names in `StatementInfo::roles_changed` that stand for the session's own role.
const SELF_ROLES: &[&str] = &["CURRENT_USER", "SESSION_USER", "CURRENT_ROLE", "ALL"];

/// What the rules look at in a statement, computed once per decision.
struct Facts<'a> {
    stmt: &'a StatementInfo,
    /// `kind`, `kinds`, plus what is implied: `set_role`/`set_session_authorization` from the
    /// setting, `dml`/`ddl` umbrellas.
    kinds: BTreeSet<&'a str>,
}

impl<'a> Facts<'a> {
    fn new(stmt: &'a StatementInfo, upstream_role: Option<&str>) -> Self {
        let mut kinds: BTreeSet<&'a str> = stmt.kinds.iter().map(String::as_str).collect();
        kinds.insert(stmt.kind.as_str());
        if stmt
            .roles_changed
            .iter()
            .any(|r| SELF_ROLES.contains(&r.as_str()) || Some(r.as_str()) == upstream_role)
        {
            kinds.insert("alter_upstream_role");
        }
        if let Some((name, _)) = &stmt.set_setting {
            match name.as_str() {
                "role" => {
                    kinds.insert("set_role");
                }
                "session_authorization" => {
                    kinds.insert("set_session_authorization");
                }
                _ => {}
            }
        }
        if DML_KINDS.iter().any(|k| kinds.contains(k)) {
            kinds.insert("dml");
        }
        if DDL_KINDS.iter().any(|k| kinds.contains(k)) {
            kinds.insert("ddl");
        }
        Self { stmt, kinds }
    }

    fn has(&self, kind: &str) -> bool {
        self.kinds.contains(kind)
    }

    /// A statement that returns or copies rows read from tables (for `without_limit`):
    /// `CREATE TABLE ... AS`, `SELECT ... INTO` and `INSERT ... SELECT` move rows as surely as
    /// a SELECT returns them.
    fn is_table_read(&self) -> bool {
        let s = self.stmt;
        let returns_rows = matches!(s.kind.as_str(), "select" | "copy_to" | "declare")
            || (s.kind == "execute" && s.kinds.contains("select"))
            || (s.data_modifying && matches!(s.kind.as_str(), "create" | "insert"));
        returns_rows && (!s.tables_read.is_empty() || !s.columns_read.is_empty())
    }

    /// The table to name in a `without_limit` reason.
    fn first_read_table(&self) -> Option<&'a TableRef> {
        self.stmt
            .tables_read
            .iter()
            .next()
            .or_else(|| self.stmt.columns_read.iter().find_map(|c| c.table.as_ref()))
    }
}

fn render_table(t: &TableRef) -> String {
    match &t.schema {
        Some(s) => format!("{s}.{}", t.name),
        None => t.name.clone(),
    }
}

fn render_kind(kind: &str) -> String {
    kind.replace('_', " ").to_ascii_uppercase()
}

/// `DROP public.x`: the kind, then the tables written (else read), at most three.
fn describe(kind: &str, stmt: &StatementInfo) -> String {
    let tables = if stmt.tables_written.is_empty() {
        &stmt.tables_read
    } else {
        &stmt.tables_written
    };
    let mut out = render_kind(kind);
    let names: Vec<String> = tables.iter().take(3).map(render_table).collect();
    if !names.is_empty() {
        out.push(' ');
        out.push_str(&names.join(", "));
        if tables.len() > 3 {
            out.push_str(&format!(" (+{} more)", tables.len() - 3));
        }
    }
    out
}

fn is_umbrella(kind: &str) -> bool {
    kind == "dml" || kind == "ddl"
}

impl Compiled {
    fn new(rule: &Rule) -> Self {
        let mut problems: Vec<String> = Vec::new();
        let reads = rule
            .reads
            .iter()
            .filter_map(|p| {
                ColumnPattern::parse(p)
                    .map_err(|e| problems.push(format!("reads {p:?} {e}")))
                    .ok()
            })
            .collect();
        let writes = rule
            .writes
            .iter()
            .filter_map(|p| {
                TablePattern::parse(p)
                    .map_err(|e| problems.push(format!("writes {p:?} {e}")))
                    .ok()
            })
            .collect();
        let functions = rule
            .functions
            .iter()
            .filter_map(|p| {
                FunctionPattern::parse(p)
                    .map_err(|e| problems.push(format!("functions {p:?} {e}")))
                    .ok()
            })
            .collect();
        for k in &rule.statements {
            if !is_statement_kind(k) {
                problems.push(format!("unknown statement kind {k:?}"));
            }
        }
        let broken = problems.into_iter().next();
        Self {
            statements: rule
                .statements
                .iter()
                .map(|k| k.to_ascii_lowercase())
                .collect(),
            reads,
            writes,
            functions,
            without_limit: rule.without_limit.then(|| rule.limit_threshold()),
            broken,
            rule: rule.clone(),
        }
    }

    /// Whether the rule is in force for this connection and identity.
    fn in_scope(&self, connection: &str, groups: &[String]) -> bool {
        if !self
            .rule
            .connections
            .iter()
            .any(|p| glob_match(p, connection))
        {
            return false;
        }
        match &self.rule.groups {
            None => true,
            Some(gs) => gs.iter().any(|p| groups.iter().any(|g| glob_match(p, g))),
        }
    }

    /// `Some(reason)` when every criterion the rule sets holds for the statement.
    fn matches(&self, f: &Facts<'_>) -> Option<String> {
        if let Some(problem) = &self.broken {
            return match self.rule.action {
                Action::Allow => None,
                Action::Block | Action::Approve => Some(format!(
                    "{} (invalid rule applied to every statement: {problem})",
                    describe(&f.stmt.kind, f.stmt)
                )),
            };
        }
        let mut parts: Vec<String> = Vec::new();
        let mut kind_shown: Option<&str> = None;
        if !self.statements.is_empty() {
            let k = self.statements.iter().find(|k| f.has(k))?;
            kind_shown = Some(if is_umbrella(k) { &f.stmt.kind } else { k });
        }
        if !self.reads.is_empty() {
            parts.push(self.match_reads(f.stmt)?);
        }
        if !self.writes.is_empty() {
            let t = f
                .stmt
                .tables_written
                .iter()
                .find(|t| self.writes.iter().any(|p| p.matches(t)))?;
            parts.push(format!("writes {}", render_table(t)));
        }
        if !self.functions.is_empty() {
            let call = f
                .stmt
                .functions
                .iter()
                .find(|c| self.functions.iter().any(|p| p.matches(c)))?;
            parts.push(format!("calls {call}"));
        }
        if let Some(threshold) = self.without_limit {
            if !f.is_table_read() {
                return None;
            }
            let table = f
                .first_read_table()
                .map(render_table)
                .unwrap_or_else(|| "a table".into());
            match f.stmt.limit {
                None => parts.push(format!("reads {table} without LIMIT")),
                Some(n) if n > threshold => {
                    parts.push(format!("reads {table} with LIMIT {n} (above {threshold})"))
                }
                Some(_) => return None,
            }
        }
        if parts.is_empty() {
            Some(describe(kind_shown.unwrap_or(&f.stmt.kind), f.stmt))
        } else {
            Some(parts.join(", "))
        }
    }

    fn match_reads(&self, stmt: &StatementInfo) -> Option<String> {
        for c in &stmt.columns_read {
            if self.reads.iter().any(|p| p.matches_column(c)) {
                let col = match &c.table {
                    Some(t) => format!("{}.{}", render_table(t), c.column),
                    None => c.column.clone(),
                };
                return Some(format!("reads {col}"));
            }
        }
        stmt.tables_read
            .iter()
            .find(|t| self.reads.iter().any(|p| p.matches_table_read(t)))
            .map(|t| format!("reads {}", render_table(t)))
    }

    /// Whether this allow rule explicitly lets the statement do `needed` (every kind listed).
    fn explicitly_allows(&self, f: &Facts<'_>, needed: &[&str]) -> bool {
        self.rule.action == Action::Allow
            && needed
                .iter()
                .all(|k| self.statements.iter().any(|s| s == k))
            && self.matches(f).is_some()
    }
}

pub(crate) fn block(rule: &str, reason: impl Into<String>) -> Decision {
    Decision {
        action: Action::Block,
        rule: Some(rule.to_owned()),
        reason: reason.into(),
    }
}

impl Policy {
    /// Compiles rules. Rules are expected to have passed validation (`Config::validate`); one
    /// that did not fails closed (see [`Policy::try_new`] for a checked construction).
    pub fn new(rules: &[Rule]) -> Self {
        Self {
            rules: rules.iter().map(Compiled::new).collect(),
        }
    }

    /// Validates (without checking connection names) and compiles.
    pub fn try_new(rules: &[Rule]) -> Result<Self, RuleError> {
        super::rules::validate_rules(rules, None)?;
        Ok(Self::new(rules))
    }

    /// The rules, in file order.
    pub fn rules(&self) -> impl Iterator<Item = &Rule> {
        self.rules.iter().map(|c| &c.rule)
    }

    /// The rule of that name (e.g. to find the approvers and timeout of an approve decision).
    pub fn rule(&self, name: &str) -> Option<&Rule> {
        self.rules().find(|r| r.name == name)
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    fn explicitly_allowed(
        &self,
        connection: &str,
        groups: &[String],
        f: &Facts<'_>,
        needed: &[&str],
    ) -> bool {
        self.rules
            .iter()
            .any(|r| r.in_scope(connection, groups) && r.explicitly_allows(f, needed))
    }

    /// [`Self::explicitly_allowed`] by a rule that names the groups it is for.
    fn explicitly_allowed_for_groups(
        &self,
        connection: &str,
        groups: &[String],
        f: &Facts<'_>,
        kind: &str,
    ) -> bool {
        self.rules.iter().any(|r| {
            r.rule.groups.is_some()
                && r.in_scope(connection, groups)
                && r.explicitly_allows(f, &[kind])
        })
    }

    /// The decision for one statement on `connection` by an identity with `groups`.
    pub fn decide(&self, connection: &str, groups: &[String], stmt: &StatementInfo) -> Decision {
        self.decide_as(connection, None, groups, stmt)
    }

    /// [`Self::decide`] knowing the role the gateway logs in upstream as (`alter_upstream_role`
    /// then also covers statements naming it, not only `CURRENT_USER` and the like).
    pub fn decide_as(
        &self,
        connection: &str,
        upstream_role: Option<&str>,
        groups: &[String],
        stmt: &StatementInfo,
    ) -> Decision {
        let f = Facts::new(stmt, upstream_role);
        if let Some(d) = self.builtin(connection, groups, &f) {
            return d;
        }
        let mut best: Option<(Action, &Compiled, String)> = None;
        for r in &self.rules {
            let action = r.rule.action;
            if best
                .as_ref()
                .is_some_and(|(b, _, _)| b.severity() >= action.severity())
            {
                continue;
            }
            if !r.in_scope(connection, groups) {
                continue;
            }
            if let Some(reason) = r.matches(&f) {
                best = Some((action, r, reason));
            }
        }
        match best {
            Some((action, r, reason)) => Decision {
                action,
                rule: Some(r.rule.name.clone()),
                reason,
            },
            None => Decision::default_allow(),
        }
    }

    /// The decision for a multi-statement string: the strictest of its statements' decisions
    /// (block > approve > allow; ties to the earliest statement), with that statement's index.
    /// `None` only when there is no statement.
    pub fn decide_all(
        &self,
        connection: &str,
        groups: &[String],
        stmts: &[StatementInfo],
    ) -> (Decision, Option<usize>) {
        self.decide_all_as(connection, None, groups, stmts)
    }

    /// [`Self::decide_all`] knowing the upstream role (see [`Self::decide_as`]).
    pub fn decide_all_as(
        &self,
        connection: &str,
        upstream_role: Option<&str>,
        groups: &[String],
        stmts: &[StatementInfo],
    ) -> (Decision, Option<usize>) {
        let mut best: Option<(Decision, usize)> = None;
        for (i, s) in stmts.iter().enumerate() {
            let d = self.decide_as(connection, upstream_role, groups, s);
            let stricter = best
                .as_ref()
                .is_none_or(|(b, _)| d.action.severity() > b.action.severity());
            if stricter {
                let is_block = d.action == Action::Block;
                best = Some((d, i));
                if is_block {
                    break;
                }
            }
        }
        match best {
            Some((d, i)) => (d, Some(i)),
            None => (Decision::default_allow(), None),
        }
    }
}
