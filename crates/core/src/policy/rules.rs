//! `[[rule]]`: the typed rule of the configuration file, and its validation.
//!
//! Semantics (enforced by [`super::Policy`]):
//! - a rule applies to a statement when its `connections` match the connection name, its
//!   `groups` (absent: everyone) share a group with the identity, and every criterion it sets
//!   holds: `statements` (any listed kind), `reads` (any pattern), `writes` (any pattern),
//!   `functions` (any pattern), `without_limit`. Criteria combine with AND, the entries of one
//!   list with OR. A rule with no criterion applies to every statement;
//! - among the rules that apply, `block` beats `approve` beats `allow`; ties go to the first in
//!   file order; nothing applies → allow.

use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::pattern::{ColumnPattern, FunctionPattern, TablePattern, check_name_pattern};

/// What happens to a statement a rule applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Allow,
    Block,
    Approve,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Block => "block",
            Action::Approve => "approve",
        }
    }

    /// Strictness: block > approve > allow.
    pub fn severity(self) -> u8 {
        match self {
            Action::Allow => 0,
            Action::Approve => 1,
            Action::Block => 2,
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `limit_above` when `without_limit = true` does not set it.
pub const DEFAULT_LIMIT_ABOVE: i64 = 1000;

/// Prefix of the names of the rules built into the gateway (`builtin:copy-program`, ...);
/// reserved, a configured rule may not use it.
pub const BUILTIN_PREFIX: &str = "builtin:";

/// One `[[rule]]` of the configuration file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub name: String,
    /// Connection names (`*` wildcard). Must not be empty.
    #[serde(default)]
    pub connections: Vec<String>,
    /// Groups of the identity the rule applies to; absent → everyone.
    #[serde(default)]
    pub groups: Option<Vec<String>>,
    /// Statement kinds ([`STATEMENT_KINDS`]).
    #[serde(default)]
    pub statements: Vec<String>,
    /// `schema.table.column` or `schema.table` patterns of what is read.
    #[serde(default)]
    pub reads: Vec<String>,
    /// `schema.table` or `schema.table.*` patterns of the tables written.
    #[serde(default)]
    pub writes: Vec<String>,
    /// Function names (`*` wildcard), bare or schema-qualified.
    #[serde(default)]
    pub functions: Vec<String>,
    /// Applies to reads with no LIMIT or a LIMIT above `limit_above`.
    #[serde(default)]
    pub without_limit: bool,
    #[serde(default)]
    pub limit_above: Option<i64>,
    pub action: Action,
    /// Groups allowed to decide (`action = "approve"` only).
    #[serde(default)]
    pub approvers: Vec<String>,
    /// How long an approval request waits (`action = "approve"` only), e.g. "5m".
    #[serde(default)]
    pub timeout: Option<String>,
    /// Distinct approvers needed (`action = "approve"` only); default 1. One denial suffices.
    #[serde(default)]
    pub min_approvals: Option<u32>,
}

impl Rule {
    /// The LIMIT above which a read counts as unbounded for `without_limit`.
    pub fn limit_threshold(&self) -> i64 {
        self.limit_above.unwrap_or(DEFAULT_LIMIT_ABOVE)
    }

    /// `timeout` as a duration (`None` when absent or invalid; validation rejects invalid).
    pub fn timeout_duration(&self) -> Option<Duration> {
        self.timeout
            .as_deref()
            .and_then(crate::config::parse_duration)
    }

    /// Whether the rule sets no statement criterion (and so applies to every statement of its
    /// connections and groups).
    pub fn has_no_criteria(&self) -> bool {
        self.statements.is_empty()
            && self.reads.is_empty()
            && self.writes.is_empty()
            && self.functions.is_empty()
            && !self.without_limit
    }
}

/// The statement kinds a rule may name: those the analysis produces
/// (`StatementInfo::kind`/`kinds`), plus the umbrella kinds `dml` and `ddl`.
pub const STATEMENT_KINDS: &[&str] = &[
    "select",
    "insert",
    "update",
    "delete",
    "merge",
    "copy_to",
    "copy_from",
    "drop",
    "truncate",
    "alter",
    "create",
    "grant",
    "revoke",
    "alter_system",
    "create_extension",
    "do",
    "call",
    "set",
    "set_role",
    "set_session_authorization",
    "reset",
    "show",
    "begin",
    "commit",
    "rollback",
    "prepare",
    "execute",
    "deallocate",
    "declare",
    "fetch",
    "close",
    "explain",
    "listen",
    "notify",
    "unlisten",
    "vacuum",
    "analyze",
    "reindex",
    "cluster",
    "lock",
    "comment",
    "create_function",
    "create_trigger",
    "create_rule",
    "create_policy",
    "checkpoint",
    "discard",
    "load",
    "alter_column_type",
    "alter_upstream_role",
    "signal_backend",
    "read_activity",
    "read_credentials",
    "replication",
    "kill",
    "use",
    "savepoint",
    "other",
    "dml",
    "ddl",
];

/// Whether `kind` (any case) is one of [`STATEMENT_KINDS`].
pub fn is_statement_kind(kind: &str) -> bool {
    STATEMENT_KINDS.iter().any(|k| k.eq_ignore_ascii_case(kind))
}

/// A rule the configuration cannot accept: the key (`rule[1].statements`) and the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {problem}")]
pub struct RuleError {
    pub key: String,
    pub problem: String,
}

fn err(key: String, problem: impl Into<String>) -> RuleError {
    RuleError {
        key,
        problem: problem.into(),
    }
}

/// Checks one rule on its own (not duplicates, not connection names). `key` is `rule[i]`.
pub fn validate_rule(key: &str, r: &Rule) -> Result<(), RuleError> {
    if r.name.trim().is_empty() {
        return Err(err(format!("{key}.name"), "must not be empty"));
    }
    if r.name.starts_with(BUILTIN_PREFIX) {
        return Err(err(
            format!("{key}.name"),
            format!(
                "{:?}: names starting with {BUILTIN_PREFIX:?} are reserved",
                r.name
            ),
        ));
    }
    if r.connections.is_empty() {
        return Err(err(
            format!("{key}.connections"),
            "is empty: list connection names or \"*\"",
        ));
    }
    for c in &r.connections {
        check_name_pattern(c)
            .map_err(|p| err(format!("{key}.connections"), format!("{c:?} {p}")))?;
    }
    if let Some(groups) = &r.groups {
        if groups.is_empty() {
            return Err(err(
                format!("{key}.groups"),
                "is empty: the rule would apply to nobody (omit groups to apply to everyone)",
            ));
        }
        for g in groups {
            check_name_pattern(g)
                .map_err(|p| err(format!("{key}.groups"), format!("{g:?} {p}")))?;
        }
    }
    for k in &r.statements {
        if !is_statement_kind(k) {
            return Err(err(
                format!("{key}.statements"),
                format!("unknown statement kind {k:?}"),
            ));
        }
    }
    for p in &r.reads {
        ColumnPattern::parse(p).map_err(|e| err(format!("{key}.reads"), format!("{p:?} {e}")))?;
    }
    for p in &r.writes {
        TablePattern::parse(p).map_err(|e| err(format!("{key}.writes"), format!("{p:?} {e}")))?;
    }
    for p in &r.functions {
        FunctionPattern::parse(p)
            .map_err(|e| err(format!("{key}.functions"), format!("{p:?} {e}")))?;
    }
    if let Some(n) = r.limit_above {
        if !r.without_limit {
            return Err(err(
                format!("{key}.limit_above"),
                "is set but without_limit is not true",
            ));
        }
        if n < 0 {
            return Err(err(format!("{key}.limit_above"), "must not be negative"));
        }
    }
    match r.action {
        Action::Approve => {
            if r.approvers.is_empty() {
                return Err(err(
                    format!("{key}.approvers"),
                    "action = \"approve\" needs at least one approver group",
                ));
            }
            if r.min_approvals == Some(0) {
                return Err(err(format!("{key}.min_approvals"), "must be at least 1"));
            }
        }
        Action::Allow | Action::Block => {
            if !r.approvers.is_empty() {
                return Err(err(
                    format!("{key}.approvers"),
                    format!(
                        "only used with action = \"approve\" (action is {:?})",
                        r.action.as_str()
                    ),
                ));
            }
            if r.min_approvals.is_some() {
                return Err(err(
                    format!("{key}.min_approvals"),
                    format!(
                        "only used with action = \"approve\" (action is {:?})",
                        r.action.as_str()
                    ),
                ));
            }
            if r.timeout.is_some() {
                return Err(err(
                    format!("{key}.timeout"),
                    format!(
                        "only used with action = \"approve\" (action is {:?})",
                        r.action.as_str()
                    ),
                ));
            }
        }
    }
    for a in &r.approvers {
        check_name_pattern(a).map_err(|p| err(format!("{key}.approvers"), format!("{a:?} {p}")))?;
    }
    if let Some(t) = &r.timeout
        && crate::config::parse_duration(t).is_none_or(|d| d.is_zero())
    {
        return Err(err(
            format!("{key}.timeout"),
            format!("{t:?} is not a duration such as 5m"),
        ));
    }
    Ok(())
}

/// Checks every rule, names unique, and (when `connections` is given) that every connection a
/// rule names without a wildcard is configured. Keys are `rule[i].field`, `i` from 0.
pub fn validate_rules(rules: &[Rule], connections: Option<&[&str]>) -> Result<(), RuleError> {
    let mut names = BTreeSet::new();
    for (i, r) in rules.iter().enumerate() {
        let key = format!("rule[{i}]");
        validate_rule(&key, r)?;
        if !names.insert(r.name.as_str()) {
            return Err(err(
                format!("{key}.name"),
                format!("duplicate rule name {:?}", r.name),
            ));
        }
        if let Some(known) = connections {
            for c in &r.connections {
                if !c.contains('*') && !known.contains(&c.as_str()) {
                    return Err(err(
                        format!("{key}.connections"),
                        format!(
                            "unknown connection {c:?} (configured: {})",
                            if known.is_empty() {
                                "none".to_owned()
                            } else {
                                known.join(", ")
                            }
                        ),
                    ));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, ConfigError};
    use std::path::Path;

    const BASE: &str = r#"
[[connection]]
name = "payments"
upstream = "127.0.0.1:5432"
database = "payments"
user = "svc"
allow_groups = ["dba"]

[[connection]]
name = "analytics"
upstream = "127.0.0.1:5432"
database = "analytics"
user = "svc"
allow_groups = ["dba"]
"#;

    const GOOD_RULES: &str = r#"
[[rule]]
name        = "no-destructive"
connections = ["*"]
statements  = ["drop", "truncate", "alter_system", "create_extension"]
action      = "block"

[[rule]]
name        = "bulk-card-read"
connections = ["payments"]
groups      = ["fraud-bots"]
reads       = ["public.payments.card_number"]
action      = "approve"
approvers   = ["security"]
timeout     = "5m"
"#;

    fn load(rules: &str) -> Result<Config, ConfigError> {
        Config::from_toml(&format!("{BASE}{rules}"), Path::new("/"))
    }

    fn load_err(rules: &str) -> String {
        match load(rules) {
            Ok(_) => panic!("accepted:\n{rules}"),
            Err(e) => e.to_string(),
        }
    }

    /// The first rule is a valid one so that errors must name `rule[1]`.
    fn second(rule_body: &str) -> String {
        load_err(&format!(
            "[[rule]]\nname = \"ok\"\nconnections = [\"*\"]\naction = \"allow\"\n\n[[rule]]\n{rule_body}\n"
        ))
    }

    #[test]
    fn product_example_parses_typed() {
        let cfg = load(GOOD_RULES).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cfg.rules.len(), 2);
        let r = &cfg.rules[1];
        assert_eq!(r.name, "bulk-card-read");
        assert_eq!(r.action, Action::Approve);
        assert_eq!(r.groups, Some(vec!["fraud-bots".to_owned()]));
        assert_eq!(r.approvers, vec!["security".to_owned()]);
        assert_eq!(r.timeout_duration(), Some(Duration::from_secs(300)));
        assert_eq!(cfg.rules[0].groups, None);
        assert_eq!(cfg.rules[0].action, Action::Block);
        assert!(!cfg.rules[0].without_limit);
        assert_eq!(cfg.rules[0].limit_threshold(), DEFAULT_LIMIT_ABOVE);
    }

    #[test]
    fn config_rules_compile_into_a_policy() {
        use crate::policy::{Policy, StatementInfo, TableRef};
        let cfg = load(GOOD_RULES).unwrap_or_else(|e| panic!("{e}"));
        let p = Policy::new(&cfg.rules);
        let mut drop = StatementInfo {
            kind: "drop".into(),
            ..Default::default()
        };
        drop.kinds.insert("drop".into());
        drop.tables_written.insert(TableRef {
            schema: Some("public".into()),
            name: "x".into(),
        });
        let d = p.decide("analytics", &["dba".to_owned()], &drop);
        assert_eq!(
            d.client_message(),
            "blocked by rule \"no-destructive\": DROP public.x"
        );
    }

    #[test]
    fn the_example_config_file_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/gatehouse.toml");
        if path.exists() {
            let cfg = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
            assert!(cfg.rules.len() >= 2);
        }
    }

    #[test]
    fn unknown_statement_kind_names_key_and_kind() {
        assert_eq!(
            second(
                "name = \"x\"\nconnections = [\"*\"]\nstatements = [\"select\", \"dorp\"]\naction = \"block\""
            ),
            "rule[1].statements: unknown statement kind \"dorp\""
        );
    }

    #[test]
    fn statement_kinds_are_case_insensitive() {
        assert!(load("[[rule]]\nname = \"x\"\nconnections = [\"*\"]\nstatements = [\"DROP\", \"ddl\", \"dml\"]\naction = \"block\"\n").is_ok());
    }

    #[test]
    fn every_analysis_kind_is_accepted() {
        for k in STATEMENT_KINDS {
            assert!(is_statement_kind(k));
        }
        assert!(!is_statement_kind("dorp"));
        assert!(!is_statement_kind(""));
    }

    #[test]
    fn bad_read_patterns_name_the_key() {
        let e = second(
            "name = \"x\"\nconnections = [\"*\"]\nreads = [\"public..card_number\"]\naction = \"block\"",
        );
        assert!(
            e.starts_with("rule[1].reads: \"public..card_number\""),
            "{e}"
        );
        assert!(e.contains("empty segment"), "{e}");
        let e = second(
            "name = \"x\"\nconnections = [\"*\"]\nreads = [\"a.b.c.d\"]\naction = \"block\"",
        );
        assert!(e.starts_with("rule[1].reads: \"a.b.c.d\""), "{e}");
        assert!(e.contains("more than 3 segments"), "{e}");
        let e = second("name = \"x\"\nconnections = [\"*\"]\nreads = [\"\"]\naction = \"block\"");
        assert!(e.starts_with("rule[1].reads:"), "{e}");
        let e = second(
            "name = \"x\"\nconnections = [\"*\"]\nreads = [\"card_number\"]\naction = \"block\"",
        );
        assert!(e.starts_with("rule[1].reads:"), "{e}");
    }

    #[test]
    fn bad_write_and_function_patterns_name_the_key() {
        let e = second(
            "name = \"x\"\nconnections = [\"*\"]\nwrites = [\"public.payments.card_number\"]\naction = \"block\"",
        );
        assert!(e.starts_with("rule[1].writes:"), "{e}");
        let e = second(
            "name = \"x\"\nconnections = [\"*\"]\nwrites = [\"public.\"]\naction = \"block\"",
        );
        assert!(e.starts_with("rule[1].writes:"), "{e}");
        let e = second(
            "name = \"x\"\nconnections = [\"*\"]\nfunctions = [\"a.b.c\"]\naction = \"block\"",
        );
        assert!(e.starts_with("rule[1].functions:"), "{e}");
        assert!(load("[[rule]]\nname = \"x\"\nconnections = [\"*\"]\nwrites = [\"public.payments\", \"audit.*.*\"]\nfunctions = [\"dblink*\", \"pg_catalog.pg_terminate_backend\"]\naction = \"block\"\n").is_ok());
    }

    #[test]
    fn approve_needs_approvers() {
        assert_eq!(
            second("name = \"x\"\nconnections = [\"*\"]\naction = \"approve\""),
            "rule[1].approvers: action = \"approve\" needs at least one approver group"
        );
    }

    #[test]
    fn approvers_and_timeout_only_with_approve() {
        let e = second(
            "name = \"x\"\nconnections = [\"*\"]\naction = \"block\"\napprovers = [\"security\"]",
        );
        assert!(e.starts_with("rule[1].approvers:"), "{e}");
        let e = second("name = \"x\"\nconnections = [\"*\"]\naction = \"allow\"\ntimeout = \"5m\"");
        assert!(e.starts_with("rule[1].timeout:"), "{e}");
    }

    #[test]
    fn bad_timeout() {
        for t in ["5 minutes", "0s", "", "5"] {
            let e = second(&format!(
                "name = \"x\"\nconnections = [\"*\"]\naction = \"approve\"\napprovers = [\"s\"]\ntimeout = {t:?}"
            ));
            assert_eq!(
                e,
                format!("rule[1].timeout: {t:?} is not a duration such as 5m")
            );
        }
    }

    #[test]
    fn unknown_action_is_a_parse_error() {
        let e = load_err("[[rule]]\nname = \"x\"\nconnections = [\"*\"]\naction = \"deny\"\n");
        assert!(e.contains("deny"), "{e}");
    }

    #[test]
    fn unknown_rule_key_is_rejected() {
        let e = load_err(
            "[[rule]]\nname = \"x\"\nconnections = [\"*\"]\naction = \"block\"\nstatement = [\"drop\"]\n",
        );
        assert!(e.contains("statement"), "{e}");
    }

    #[test]
    fn duplicate_names() {
        assert_eq!(
            second("name = \"ok\"\nconnections = [\"*\"]\naction = \"block\""),
            "rule[1].name: duplicate rule name \"ok\""
        );
    }

    #[test]
    fn names_empty_or_reserved() {
        assert_eq!(
            second("name = \"\"\nconnections = [\"*\"]\naction = \"block\""),
            "rule[1].name: must not be empty"
        );
        let e = second("name = \"builtin:mine\"\nconnections = [\"*\"]\naction = \"block\"");
        assert!(
            e.starts_with("rule[1].name:") && e.contains("reserved"),
            "{e}"
        );
        let e = load_err("[[rule]]\nconnections = [\"*\"]\naction = \"block\"\n");
        assert!(e.contains("name"), "{e}");
    }

    #[test]
    fn connections_required_and_known() {
        assert_eq!(
            second("name = \"x\"\naction = \"block\""),
            "rule[1].connections: is empty: list connection names or \"*\""
        );
        assert_eq!(
            second("name = \"x\"\nconnections = [\"paymnts\"]\naction = \"block\""),
            "rule[1].connections: unknown connection \"paymnts\" (configured: payments, analytics)"
        );
        assert!(load("[[rule]]\nname = \"x\"\nconnections = [\"pay*\", \"analytics\"]\naction = \"block\"\n").is_ok());
    }

    #[test]
    fn empty_groups_rejected() {
        let e = second("name = \"x\"\nconnections = [\"*\"]\ngroups = []\naction = \"block\"");
        assert!(e.starts_with("rule[1].groups: is empty"), "{e}");
    }

    #[test]
    fn limit_above_checks() {
        let e = second("name = \"x\"\nconnections = [\"*\"]\nlimit_above = 10\naction = \"block\"");
        assert!(e.starts_with("rule[1].limit_above:"), "{e}");
        let e = second(
            "name = \"x\"\nconnections = [\"*\"]\nwithout_limit = true\nlimit_above = -1\naction = \"block\"",
        );
        assert_eq!(e, "rule[1].limit_above: must not be negative");
        let cfg = load("[[rule]]\nname = \"x\"\nconnections = [\"*\"]\nwithout_limit = true\nlimit_above = 50\naction = \"block\"\n").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cfg.rules[0].limit_threshold(), 50);
    }

    #[test]
    fn validate_rules_without_connection_check() {
        let r = Rule {
            name: "x".into(),
            connections: vec!["anything".into()],
            groups: None,
            statements: vec![],
            reads: vec![],
            writes: vec![],
            functions: vec![],
            without_limit: false,
            limit_above: None,
            action: Action::Block,
            approvers: vec![],
            timeout: None,
            min_approvals: None,
        };
        assert!(validate_rules(std::slice::from_ref(&r), None).is_ok());
        assert!(validate_rules(std::slice::from_ref(&r), Some(&["payments"])).is_err());
    }
}
