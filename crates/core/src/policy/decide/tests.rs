//! The decision: builtin refusals and the precedence of rules, statement by statement.

use super::*;
use crate::policy::analysis::ColumnRef;

// ---- builders ---------------------------------------------------------------------------

fn rule(name: &str, action: Action) -> Rule {
    Rule {
        name: name.into(),
        connections: vec!["*".into()],
        groups: None,
        statements: vec![],
        reads: vec![],
        writes: vec![],
        functions: vec![],
        without_limit: false,
        limit_above: None,
        action,
        approvers: if action == Action::Approve {
            vec!["security".into()]
        } else {
            vec![]
        },
        timeout: None,
        min_approvals: None,
    }
}

fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

fn with_statements(mut r: Rule, kinds: &[&str]) -> Rule {
    r.statements = strs(kinds);
    r
}
fn with_reads(mut r: Rule, p: &[&str]) -> Rule {
    r.reads = strs(p);
    r
}
fn with_writes(mut r: Rule, p: &[&str]) -> Rule {
    r.writes = strs(p);
    r
}
fn with_functions(mut r: Rule, p: &[&str]) -> Rule {
    r.functions = strs(p);
    r
}
fn on(mut r: Rule, conns: &[&str]) -> Rule {
    r.connections = strs(conns);
    r
}
fn for_groups(mut r: Rule, groups: &[&str]) -> Rule {
    r.groups = Some(strs(groups));
    r
}

fn t(schema: &str, name: &str) -> TableRef {
    TableRef {
        schema: Some(schema.into()),
        name: name.into(),
    }
}

fn stmt(kind: &str) -> StatementInfo {
    let mut s = StatementInfo {
        kind: kind.into(),
        ..Default::default()
    };
    s.kinds.insert(kind.into());
    if DML_KINDS.contains(&kind) {
        s.kinds.insert("dml".into());
    }
    if DDL_KINDS.contains(&kind) {
        s.kinds.insert("ddl".into());
    }
    s
}

/// `SELECT cols FROM schema.table [LIMIT n]`.
fn select(schema: &str, table: &str, cols: &[&str], limit: Option<i64>) -> StatementInfo {
    let mut s = stmt("select");
    s.tables_read.insert(t(schema, table));
    for c in cols {
        s.columns_read.insert(ColumnRef {
            table: Some(t(schema, table)),
            column: (*c).into(),
        });
    }
    s.limit = limit;
    s
}

fn write(kind: &str, schema: &str, table: &str) -> StatementInfo {
    let mut s = stmt(kind);
    s.tables_written.insert(t(schema, table));
    s.data_modifying = true;
    s
}

fn call(funcs: &[&str]) -> StatementInfo {
    let mut s = stmt("select");
    for f in funcs {
        s.functions.insert((*f).into());
    }
    s
}

fn set(name: &str, value: Option<&str>) -> StatementInfo {
    let mut s = stmt("set");
    s.set_setting = Some((name.into(), value.map(str::to_owned)));
    s
}

fn g(groups: &[&str]) -> Vec<String> {
    strs(groups)
}

fn product_rules() -> Vec<Rule> {
    vec![
        with_statements(
            rule("no-destructive", Action::Block),
            &["drop", "truncate", "alter_system", "create_extension"],
        ),
        for_groups(
            on(
                with_reads(
                    rule("bulk-card-read", Action::Approve),
                    &["public.payments.card_number"],
                ),
                &["payments"],
            ),
            &["fraud-bots"],
        ),
    ]
}

fn assert_decision(d: &Decision, action: Action, rule: Option<&str>) {
    assert_eq!((d.action, d.rule.as_deref()), (action, rule), "{d:?}");
}

// ---- matchers ---------------------------------------------------------------------------

#[test]
fn default_is_allow_without_rule() {
    let p = Policy::new(&[]);
    let d = p.decide(
        "payments",
        &g(&["dba"]),
        &select("public", "payments", &["id"], None),
    );
    assert_eq!(d, Decision::default_allow());
    assert_eq!(d.client_message(), "allowed: no rule matched");
}

#[test]
fn statement_kind_matcher() {
    let p = Policy::new(&product_rules());
    let d = p.decide("payments", &g(&["dba"]), &write("drop", "public", "x"));
    assert_decision(&d, Action::Block, Some("no-destructive"));
    assert_eq!(d.reason, "DROP public.x");
    assert_eq!(
        d.client_message(),
        "blocked by rule \"no-destructive\": DROP public.x"
    );
    let d = p.decide("payments", &g(&["dba"]), &stmt("alter_system"));
    assert_eq!(
        d.client_message(),
        "blocked by rule \"no-destructive\": ALTER SYSTEM"
    );
    let d = p.decide("payments", &g(&["dba"]), &write("insert", "public", "x"));
    assert_decision(&d, Action::Allow, None);
}

#[test]
fn nested_kinds_match() {
    // EXPLAIN ANALYZE DELETE ... → {explain, delete, dml}
    let mut s = write("explain", "public", "payments");
    s.kinds.insert("delete".into());
    s.kinds.insert("dml".into());
    let p = Policy::new(&[with_statements(
        rule("no-delete", Action::Block),
        &["delete"],
    )]);
    let d = p.decide("c", &[], &s);
    assert_decision(&d, Action::Block, Some("no-delete"));
    assert_eq!(d.reason, "DELETE public.payments");
}

#[test]
fn umbrella_kinds_match_and_show_the_real_kind() {
    let p = Policy::new(&[
        with_statements(rule("no-ddl", Action::Block), &["ddl"]),
        with_statements(rule("dml-needs-ok", Action::Approve), &["dml"]),
    ]);
    let d = p.decide("c", &[], &write("alter", "public", "t"));
    assert_decision(&d, Action::Block, Some("no-ddl"));
    assert_eq!(d.reason, "ALTER public.t");
    let d = p.decide("c", &[], &write("update", "public", "t"));
    assert_decision(&d, Action::Approve, Some("dml-needs-ok"));
    // Umbrella implied even when the analysis omitted it.
    let mut s = stmt("truncate");
    s.kinds.remove("dml");
    assert_decision(
        &p.decide("c", &[], &s),
        Action::Approve,
        Some("dml-needs-ok"),
    );
    assert_decision(&p.decide("c", &[], &stmt("select")), Action::Allow, None);
}

#[test]
fn reads_matcher_exact_column() {
    let p = Policy::new(&product_rules());
    let bots = g(&["fraud-bots"]);
    let d = p.decide(
        "payments",
        &bots,
        &select("public", "payments", &["id", "card_number"], Some(10)),
    );
    assert_decision(&d, Action::Approve, Some("bulk-card-read"));
    assert_eq!(d.reason, "reads public.payments.card_number");
    assert_eq!(
        d.client_message(),
        "approval required by rule \"bulk-card-read\": reads public.payments.card_number"
    );
    let d = p.decide(
        "payments",
        &bots,
        &select("public", "payments", &["id", "amount"], None),
    );
    assert_decision(&d, Action::Allow, None);
    // SELECT * covers card_number.
    let d = p.decide(
        "payments",
        &bots,
        &select("public", "payments", &["*"], None),
    );
    assert_decision(&d, Action::Approve, Some("bulk-card-read"));
    assert_eq!(d.reason, "reads public.payments.*");
}

#[test]
fn reads_wildcard_patterns() {
    let p = Policy::new(&[
        with_reads(rule("no-cvv", Action::Block), &["*.*.cvv"]),
        with_reads(
            rule("payments-any", Action::Approve),
            &["public.payments.*"],
        ),
    ]);
    let d = p.decide("c", &[], &select("billing", "cards", &["cvv"], Some(1)));
    assert_decision(&d, Action::Block, Some("no-cvv"));
    assert_eq!(d.reason, "reads billing.cards.cvv");
    let d = p.decide(
        "c",
        &[],
        &select("public", "payments", &["amount"], Some(1)),
    );
    assert_decision(&d, Action::Approve, Some("payments-any"));
    // count(*): the table is read without any column.
    let d = p.decide("c", &[], &select("public", "payments", &[], None));
    assert_decision(&d, Action::Approve, Some("payments-any"));
    assert_eq!(d.reason, "reads public.payments");
    let d = p.decide("c", &[], &select("public", "orders", &["id"], None));
    assert_decision(&d, Action::Allow, None);
    // An unattributed column named cvv is conservatively covered.
    let mut s = stmt("select");
    s.columns_read.insert(ColumnRef {
        table: None,
        column: "cvv".into(),
    });
    assert_decision(&p.decide("c", &[], &s), Action::Block, Some("no-cvv"));
}

#[test]
fn writes_matcher() {
    let p = Policy::new(&[with_writes(
        rule("ledger-ro", Action::Block),
        &["public.ledger", "audit.*.*"],
    )]);
    let d = p.decide("c", &[], &write("update", "public", "ledger"));
    assert_decision(&d, Action::Block, Some("ledger-ro"));
    assert_eq!(d.reason, "writes public.ledger");
    assert_decision(
        &p.decide("c", &[], &write("insert", "audit", "events")),
        Action::Block,
        Some("ledger-ro"),
    );
    assert_decision(
        &p.decide("c", &[], &write("insert", "public", "x")),
        Action::Allow,
        None,
    );
    // Reading the table is not writing it.
    assert_decision(
        &p.decide("c", &[], &select("public", "ledger", &["id"], None)),
        Action::Allow,
        None,
    );
}

#[test]
fn functions_matcher_bare_and_qualified() {
    let p = Policy::new(&[with_functions(
        rule("no-remote", Action::Block),
        &["dblink*", "pg_terminate_backend"],
    )]);
    for f in [
        "dblink",
        "dblink_exec",
        "public.dblink_connect",
        "pg_terminate_backend",
        "pg_catalog.pg_terminate_backend",
    ] {
        let d = p.decide("c", &[], &call(&["now", f]));
        assert_decision(&d, Action::Block, Some("no-remote"));
        assert_eq!(d.reason, format!("calls {f}"));
    }
    assert_decision(
        &p.decide("c", &[], &call(&["now", "my_dblink"])),
        Action::Allow,
        None,
    );
}

#[test]
fn criteria_combine_with_and() {
    let mut r = with_statements(rule("del-payments", Action::Block), &["delete"]);
    r = with_writes(r, &["public.payments"]);
    let p = Policy::new(&[r]);
    assert_decision(
        &p.decide("c", &[], &write("delete", "public", "payments")),
        Action::Block,
        Some("del-payments"),
    );
    assert_decision(
        &p.decide("c", &[], &write("delete", "public", "other")),
        Action::Allow,
        None,
    );
    assert_decision(
        &p.decide("c", &[], &write("update", "public", "payments")),
        Action::Allow,
        None,
    );
}

#[test]
fn rule_without_criteria_matches_everything_in_scope() {
    let p = Policy::new(&[on(rule("freeze", Action::Block), &["legacy"])]);
    let d = p.decide("legacy", &[], &select("public", "t", &["a"], Some(1)));
    assert_decision(&d, Action::Block, Some("freeze"));
    assert_eq!(d.reason, "SELECT public.t");
    assert_decision(
        &p.decide("payments", &[], &stmt("select")),
        Action::Allow,
        None,
    );
}

// ---- scoping ----------------------------------------------------------------------------

#[test]
fn group_scoping() {
    let p = Policy::new(&product_rules());
    let s = select("public", "payments", &["card_number"], Some(5));
    assert_decision(
        &p.decide("payments", &g(&["fraud-bots"]), &s),
        Action::Approve,
        Some("bulk-card-read"),
    );
    assert_decision(
        &p.decide("payments", &g(&["dba", "fraud-bots"]), &s),
        Action::Approve,
        Some("bulk-card-read"),
    );
    assert_decision(&p.decide("payments", &g(&["dba"]), &s), Action::Allow, None);
    assert_decision(&p.decide("payments", &[], &s), Action::Allow, None);
    // Absent groups → everyone, even with no group at all.
    assert_decision(
        &p.decide("payments", &[], &write("drop", "public", "x")),
        Action::Block,
        Some("no-destructive"),
    );
    // Wildcard group.
    let p = Policy::new(&[for_groups(
        with_statements(rule("bots", Action::Block), &["drop"]),
        &["*-bots"],
    )]);
    assert_decision(
        &p.decide("c", &g(&["ci-bots"]), &stmt("drop")),
        Action::Block,
        Some("bots"),
    );
    assert_decision(
        &p.decide("c", &g(&["humans"]), &stmt("drop")),
        Action::Allow,
        None,
    );
}

#[test]
fn connection_scoping() {
    let p = Policy::new(&product_rules());
    let bots = g(&["fraud-bots"]);
    let s = select("public", "payments", &["card_number"], Some(5));
    assert_decision(
        &p.decide("payments", &bots, &s),
        Action::Approve,
        Some("bulk-card-read"),
    );
    assert_decision(&p.decide("analytics", &bots, &s), Action::Allow, None);
    // "*" covers every connection.
    assert_decision(
        &p.decide("analytics", &bots, &stmt("truncate")),
        Action::Block,
        Some("no-destructive"),
    );
    let p = Policy::new(&[on(
        with_statements(rule("prod", Action::Block), &["drop"]),
        &["prod-*", "billing"],
    )]);
    assert_decision(
        &p.decide("prod-eu", &[], &stmt("drop")),
        Action::Block,
        Some("prod"),
    );
    assert_decision(
        &p.decide("billing", &[], &stmt("drop")),
        Action::Block,
        Some("prod"),
    );
    assert_decision(
        &p.decide("staging", &[], &stmt("drop")),
        Action::Allow,
        None,
    );
    assert_decision(
        &p.decide("billing2", &[], &stmt("drop")),
        Action::Allow,
        None,
    );
}

// ---- precedence -------------------------------------------------------------------------

#[test]
fn block_beats_approve_beats_allow_in_any_order() {
    let allow = with_statements(rule("a", Action::Allow), &["delete"]);
    let approve = with_statements(rule("b", Action::Approve), &["delete"]);
    let blk = with_statements(rule("c", Action::Block), &["delete"]);
    let s = write("delete", "public", "t");
    for rules in [
        vec![allow.clone(), approve.clone(), blk.clone()],
        vec![blk.clone(), approve.clone(), allow.clone()],
        vec![approve.clone(), blk.clone(), allow.clone()],
    ] {
        assert_decision(
            &Policy::new(&rules).decide("c", &[], &s),
            Action::Block,
            Some("c"),
        );
    }
    for rules in [
        vec![allow.clone(), approve.clone()],
        vec![approve.clone(), allow.clone()],
    ] {
        assert_decision(
            &Policy::new(&rules).decide("c", &[], &s),
            Action::Approve,
            Some("b"),
        );
    }
    let d = Policy::new(std::slice::from_ref(&allow)).decide("c", &[], &s);
    assert_decision(&d, Action::Allow, Some("a"));
    assert_eq!(d.client_message(), "allowed by rule \"a\": DELETE public.t");
}

#[test]
fn ties_go_to_the_first_in_file_order() {
    let first = with_statements(rule("first", Action::Block), &["delete"]);
    let second = with_writes(rule("second", Action::Block), &["public.t"]);
    let s = write("delete", "public", "t");
    assert_decision(
        &Policy::new(&[first.clone(), second.clone()]).decide("c", &[], &s),
        Action::Block,
        Some("first"),
    );
    assert_decision(
        &Policy::new(&[second, first]).decide("c", &[], &s),
        Action::Block,
        Some("second"),
    );
    let a1 = with_statements(rule("approve-1", Action::Approve), &["delete"]);
    let a2 = with_statements(rule("approve-2", Action::Approve), &["dml"]);
    assert_decision(
        &Policy::new(&[a1, a2]).decide("c", &[], &s),
        Action::Approve,
        Some("approve-1"),
    );
}

#[test]
fn out_of_scope_rules_do_not_take_precedence() {
    let blk = for_groups(
        with_statements(rule("bots-no-delete", Action::Block), &["delete"]),
        &["bots"],
    );
    let approve = with_statements(rule("delete-approval", Action::Approve), &["delete"]);
    let p = Policy::new(&[blk, approve]);
    let s = write("delete", "public", "t");
    assert_decision(
        &p.decide("c", &g(&["bots"]), &s),
        Action::Block,
        Some("bots-no-delete"),
    );
    assert_decision(
        &p.decide("c", &g(&["dba"]), &s),
        Action::Approve,
        Some("delete-approval"),
    );
}

// ---- builtin refusals -------------------------------------------------------------------

/// Rules that would allow anything, explicitly.
fn permissive() -> Policy {
    Policy::new(&[with_statements(
        rule("allow-all", Action::Allow),
        &["copy_to", "copy_from", "select", "set"],
    )])
}

#[test]
fn copy_program_is_refused() {
    let mut s = stmt("copy_from");
    s.copy_program = true;
    let d = permissive().decide("c", &g(&["dba"]), &s);
    assert_decision(&d, Action::Block, Some("builtin:copy-program"));
    assert!(d.is_builtin());
    assert_eq!(
        d.client_message(),
        "blocked by rule \"builtin:copy-program\": COPY FROM PROGRAM"
    );
    let mut s = stmt("copy_to");
    s.copy_program = true;
    assert_eq!(permissive().decide("c", &[], &s).reason, "COPY TO PROGRAM");
}

#[test]
fn copy_file_is_refused() {
    for kind in ["copy_to", "copy_from"] {
        let mut s = stmt(kind);
        s.copy_file = true;
        assert_decision(
            &permissive().decide("c", &[], &s),
            Action::Block,
            Some("builtin:copy-file"),
        );
    }
}

#[test]
fn file_functions_are_refused_bare_or_qualified() {
    for f in [
        "pg_read_file",
        "pg_catalog.pg_read_file",
        "pg_read_binary_file",
        "pg_ls_dir",
        "pg_ls_waldir",
        "pg_stat_file",
        "lo_import",
        "lo_export",
        "pg_catalog.lo_export",
    ] {
        let d = permissive().decide("c", &[], &call(&["now", f]));
        assert_decision(&d, Action::Block, Some("builtin:file-access"));
        assert_eq!(d.reason, format!("calls {f} (server-side file access)"));
    }
    assert_decision(
        &permissive().decide("c", &[], &call(&["lo_open", "now"])),
        Action::Allow,
        Some("allow-all"),
    );
}

#[test]
fn standard_conforming_strings_off_is_refused() {
    for v in ["off", "OFF", "'off'", "false", "0", "no", "f", "n", "of"] {
        let d = permissive().decide("c", &[], &set("standard_conforming_strings", Some(v)));
        assert_decision(
            &d,
            Action::Block,
            Some("builtin:standard-conforming-strings"),
        );
    }
    let d = permissive().decide("c", &[], &set("standard_conforming_strings", Some("off")));
    assert_eq!(d.reason, "SET standard_conforming_strings = off");
    for v in [
        Some("on"),
        Some("true"),
        Some("1"),
        Some("yes"),
        Some("'on'"),
        Some("default"),
        None,
    ] {
        let d = permissive().decide("c", &[], &set("standard_conforming_strings", v));
        assert_eq!(d.action, Action::Allow, "{v:?}");
    }
}

#[test]
fn any_backslash_quote_is_refused() {
    for v in [Some("on"), Some("off"), Some("safe_encoding"), None] {
        let d = permissive().decide("c", &[], &set("backslash_quote", v));
        assert_decision(&d, Action::Block, Some("builtin:backslash-quote"));
    }
    assert_decision(
        &permissive().decide("c", &[], &set("search_path", Some("public"))),
        Action::Allow,
        Some("allow-all"),
    );
}

#[test]
fn builtins_win_over_allow_rules_of_any_scope() {
    let p = Policy::new(&[rule("allow-everything", Action::Allow)]);
    let mut s = stmt("copy_from");
    s.copy_program = true;
    assert_decision(
        &p.decide("c", &[], &s),
        Action::Block,
        Some("builtin:copy-program"),
    );
}

// ---- SET ROLE and opaque code -----------------------------------------------------------

fn set_role_stmt() -> StatementInfo {
    let mut s = stmt("set_role");
    s.set_setting = Some(("role".into(), Some("admin".into())));
    s
}

#[test]
fn set_role_blocked_without_explicit_allow() {
    let d = Policy::new(&[]).decide("c", &g(&["dba"]), &set_role_stmt());
    assert_decision(&d, Action::Block, Some("builtin:set-role"));
    // Allow rules that do not list set_role explicitly do not count.
    let p = Policy::new(&[
        rule("allow-everything", Action::Allow),
        with_statements(rule("allow-set", Action::Allow), &["set"]),
    ]);
    assert_decision(
        &p.decide("c", &g(&["dba"]), &set_role_stmt()),
        Action::Block,
        Some("builtin:set-role"),
    );
    // Nor does a block or approve rule listing it.
    let p = Policy::new(&[with_statements(
        rule("approve-role", Action::Approve),
        &["set_role"],
    )]);
    assert_decision(
        &p.decide("c", &g(&["dba"]), &set_role_stmt()),
        Action::Block,
        Some("builtin:set-role"),
    );
}

#[test]
fn set_role_allowed_only_for_the_rule_group() {
    let p = Policy::new(&[for_groups(
        on(
            with_statements(rule("dba-role", Action::Allow), &["set_role"]),
            &["payments"],
        ),
        &["dba"],
    )]);
    let d = p.decide("payments", &g(&["dba"]), &set_role_stmt());
    assert_decision(&d, Action::Allow, Some("dba-role"));
    assert_decision(
        &p.decide("payments", &g(&["fraud-bots"]), &set_role_stmt()),
        Action::Block,
        Some("builtin:set-role"),
    );
    assert_decision(
        &p.decide("analytics", &g(&["dba"]), &set_role_stmt()),
        Action::Block,
        Some("builtin:set-role"),
    );
    // A block rule still applies on top of the explicit allow.
    let p = Policy::new(&[
        for_groups(
            with_statements(rule("dba-role", Action::Allow), &["set_role"]),
            &["dba"],
        ),
        with_statements(rule("no-role", Action::Block), &["set_role"]),
    ]);
    assert_decision(
        &p.decide("c", &g(&["dba"]), &set_role_stmt()),
        Action::Block,
        Some("no-role"),
    );
}

#[test]
fn reset_role_and_session_authorization() {
    // RESET ROLE reported as a reset of the "role" setting: back to the login role, no
    // escalation, so no explicit allow is needed.
    let mut reset = stmt("reset");
    reset.set_setting = Some(("role".into(), None));
    let none = Policy::new(&[]);
    assert_decision(&none.decide("c", &[], &reset), Action::Allow, None);
    // SET role = x through the generic form.
    assert_decision(
        &none.decide("c", &[], &set("role", Some("x"))),
        Action::Block,
        Some("builtin:set-role"),
    );
    let allow = Policy::new(&[with_statements(rule("roles", Action::Allow), &["set_role"])]);
    assert_decision(
        &allow.decide("c", &[], &reset),
        Action::Allow,
        Some("roles"),
    );

    let mut sa = stmt("set_session_authorization");
    sa.set_setting = Some(("session_authorization".into(), Some("bob".into())));
    assert_decision(
        &none.decide("c", &[], &sa),
        Action::Block,
        Some("builtin:set-session-authorization"),
    );
    assert_decision(
        &allow.decide("c", &[], &sa),
        Action::Block,
        Some("builtin:set-session-authorization"),
    );
    let p = Policy::new(&[with_statements(
        rule("sa", Action::Allow),
        &["set_session_authorization"],
    )]);
    assert_decision(&p.decide("c", &[], &sa), Action::Allow, Some("sa"));
}

fn opaque(kind: &str) -> StatementInfo {
    let mut s = stmt(kind);
    s.opaque = true;
    s
}

#[test]
fn opaque_code_blocked_without_explicit_allow() {
    let d = Policy::new(&[]).decide("c", &g(&["dba"]), &opaque("do"));
    assert_decision(&d, Action::Block, Some("builtin:opaque-code"));
    assert!(d.reason.contains("\"do\""), "{}", d.reason);
    let p = Policy::new(&[
        rule("allow-everything", Action::Allow),
        with_statements(rule("allow-ddl", Action::Allow), &["ddl"]),
    ]);
    for k in ["do", "create_function", "create_trigger", "create_rule"] {
        assert_decision(
            &p.decide("c", &[], &opaque(k)),
            Action::Block,
            Some("builtin:opaque-code"),
        );
    }
    // A CREATE FUNCTION without a body the analysis cannot read is not opaque.
    assert_decision(
        &p.decide("c", &[], &stmt("create_function")),
        Action::Allow,
        Some("allow-everything"),
    );
}

#[test]
fn opaque_code_allowed_by_explicit_rule_for_the_group() {
    let p = Policy::new(&[for_groups(
        with_statements(
            rule("migrations", Action::Allow),
            &["create_function", "create_trigger"],
        ),
        &["deployers"],
    )]);
    let dep = g(&["deployers"]);
    assert_decision(
        &p.decide("c", &dep, &opaque("create_function")),
        Action::Allow,
        Some("migrations"),
    );
    assert_decision(
        &p.decide("c", &dep, &opaque("create_trigger")),
        Action::Allow,
        Some("migrations"),
    );
    assert_decision(
        &p.decide("c", &dep, &opaque("do")),
        Action::Block,
        Some("builtin:opaque-code"),
    );
    assert_decision(
        &p.decide("c", &g(&["bots"]), &opaque("create_function")),
        Action::Block,
        Some("builtin:opaque-code"),
    );
    // Opaque code nested in another statement: its own kind must be listed.
    let mut s = opaque("explain");
    s.kinds.insert("do".into());
    assert_decision(
        &p.decide("c", &dep, &s),
        Action::Block,
        Some("builtin:opaque-code"),
    );
    let p2 = Policy::new(&[with_statements(rule("do-ok", Action::Allow), &["do"])]);
    assert_decision(&p2.decide("c", &dep, &s), Action::Allow, Some("do-ok"));
}

// ---- without_limit ----------------------------------------------------------------------

fn unbounded(limit_above: Option<i64>) -> Policy {
    let mut r = on(
        with_reads(rule("bulk", Action::Approve), &["public.payments"]),
        &["payments"],
    );
    r.without_limit = true;
    r.limit_above = limit_above;
    Policy::new(&[r])
}

#[test]
fn without_limit_default_threshold() {
    let p = unbounded(None);
    let d = p.decide(
        "payments",
        &[],
        &select("public", "payments", &["id"], None),
    );
    assert_decision(&d, Action::Approve, Some("bulk"));
    assert_eq!(
        d.reason,
        "reads public.payments.id, reads public.payments without LIMIT"
    );
    assert_decision(
        &p.decide(
            "payments",
            &[],
            &select("public", "payments", &["id"], Some(10)),
        ),
        Action::Allow,
        None,
    );
    assert_decision(
        &p.decide(
            "payments",
            &[],
            &select("public", "payments", &["id"], Some(1000)),
        ),
        Action::Allow,
        None,
    );
    let d = p.decide(
        "payments",
        &[],
        &select("public", "payments", &["id"], Some(1001)),
    );
    assert_decision(&d, Action::Approve, Some("bulk"));
    assert!(
        d.reason
            .ends_with("reads public.payments with LIMIT 1001 (above 1000)"),
        "{}",
        d.reason
    );
    // Another table: the reads criterion does not hold.
    assert_decision(
        &p.decide("payments", &[], &select("public", "orders", &["id"], None)),
        Action::Allow,
        None,
    );
}

#[test]
fn without_limit_custom_threshold_and_alone() {
    let p = unbounded(Some(50));
    assert_decision(
        &p.decide(
            "payments",
            &[],
            &select("public", "payments", &["id"], Some(51)),
        ),
        Action::Approve,
        Some("bulk"),
    );
    assert_decision(
        &p.decide(
            "payments",
            &[],
            &select("public", "payments", &["id"], Some(50)),
        ),
        Action::Allow,
        None,
    );

    let mut r = rule("any-unbounded", Action::Block);
    r.without_limit = true;
    let p = Policy::new(&[r]);
    let d = p.decide("c", &[], &select("public", "orders", &["id"], None));
    assert_decision(&d, Action::Block, Some("any-unbounded"));
    assert_eq!(d.reason, "reads public.orders without LIMIT");
    // Not a read of a table: SELECT now(), an UPDATE, an EXPLAIN.
    assert_decision(&p.decide("c", &[], &call(&["now"])), Action::Allow, None);
    assert_decision(
        &p.decide("c", &[], &write("update", "public", "orders")),
        Action::Allow,
        None,
    );
    let mut e = select("public", "orders", &["id"], None);
    e.kind = "explain".into();
    assert_decision(&p.decide("c", &[], &e), Action::Allow, None);
    // COPY (SELECT ...) TO STDOUT is a read.
    let mut c = select("public", "orders", &["id"], None);
    c.kind = "copy_to".into();
    assert_decision(
        &p.decide("c", &[], &c),
        Action::Block,
        Some("any-unbounded"),
    );
}

// ---- decide_all -------------------------------------------------------------------------

#[test]
fn decide_all_picks_the_strictest() {
    let p = Policy::new(&product_rules());
    let bots = g(&["fraud-bots"]);
    let stmts = vec![
        select("public", "orders", &["id"], None),
        select("public", "payments", &["card_number"], Some(1)),
        write("drop", "public", "x"),
        write("truncate", "public", "y"),
    ];
    let (d, i) = p.decide_all("payments", &bots, &stmts);
    assert_decision(&d, Action::Block, Some("no-destructive"));
    assert_eq!(i, Some(2));
    let (d, i) = p.decide_all("payments", &bots, stmts.get(..2).unwrap_or_default());
    assert_decision(&d, Action::Approve, Some("bulk-card-read"));
    assert_eq!(i, Some(1));
    let (d, i) = p.decide_all("payments", &bots, stmts.get(..1).unwrap_or_default());
    assert_decision(&d, Action::Allow, None);
    assert_eq!(i, Some(0));
    let (d, i) = p.decide_all("payments", &bots, &[]);
    assert_eq!(d, Decision::default_allow());
    assert_eq!(i, None);
    // A builtin refusal anywhere decides.
    let mut cp = stmt("copy_from");
    cp.copy_program = true;
    let (d, i) = p.decide_all("payments", &bots, &[stmts[1].clone(), cp]);
    assert_decision(&d, Action::Block, Some("builtin:copy-program"));
    assert_eq!(i, Some(1));
}

// ---- construction -----------------------------------------------------------------------

#[test]
fn unvalidated_rules_fail_closed() {
    let bad_block = with_reads(rule("bad-block", Action::Block), &["public..x"]);
    let p = Policy::new(std::slice::from_ref(&bad_block));
    let d = p.decide("c", &[], &stmt("select"));
    assert_decision(&d, Action::Block, Some("bad-block"));
    assert!(Policy::try_new(&[bad_block]).is_err());
    // A broken allow rule grants nothing (not even SET ROLE).
    let bad_allow = with_reads(
        with_statements(rule("bad-allow", Action::Allow), &["set_role"]),
        &["x"],
    );
    let p = Policy::new(&[bad_allow]);
    assert_decision(
        &p.decide("c", &[], &set_role_stmt()),
        Action::Block,
        Some("builtin:set-role"),
    );
    assert_decision(&p.decide("c", &[], &stmt("select")), Action::Allow, None);
    let unknown_kind = with_statements(rule("typo", Action::Block), &["dorp"]);
    assert_decision(
        &Policy::new(&[unknown_kind]).decide("c", &[], &stmt("select")),
        Action::Block,
        Some("typo"),
    );
}

#[test]
fn rule_lookup() {
    let p = Policy::try_new(&product_rules()).unwrap();
    assert_eq!(
        p.rule("bulk-card-read").map(|r| r.approvers.clone()),
        Some(strs(&["security"]))
    );
    assert!(p.rule("nope").is_none());
    assert_eq!(p.rules().count(), 2);
    assert!(!p.is_empty());
}

#[test]
fn statement_kinds_in_rules_are_case_insensitive() {
    let p = Policy::new(&[with_statements(rule("x", Action::Block), &["DROP"])]);
    assert_decision(&p.decide("c", &[], &stmt("drop")), Action::Block, Some("x"));
}

#[test]
fn the_upstream_role_is_guarded_by_name_and_by_keyword() {
    let p = permissive();
    for role in [
        "CURRENT_USER",
        "SESSION_USER",
        "CURRENT_ROLE",
        "ALL",
        "gate",
    ] {
        let mut s = stmt("alter");
        s.roles_changed.insert(role.into());
        let d = p.decide_as("c", Some("gate"), &[], &s);
        assert_decision(&d, Action::Block, Some("builtin:upstream-role"));
    }
    let mut s = stmt("alter");
    s.roles_changed.insert("bob".into());
    assert_eq!(
        p.decide_as("c", Some("gate"), &[], &s).action,
        Action::Allow
    );
    // An allow rule for named groups listing the kind lets it through; one for everyone
    // does not.
    let mut s = stmt("alter");
    s.roles_changed.insert("gate".into());
    let everyone = Policy::new(&[with_statements(
        rule("all", Action::Allow),
        &["alter_upstream_role"],
    )]);
    assert_eq!(
        everyone
            .decide_as("c", Some("gate"), &g(&["dba"]), &s)
            .action,
        Action::Block
    );
    let mut r = with_statements(rule("dba", Action::Allow), &["alter_upstream_role"]);
    r.groups = Some(vec!["dba".into()]);
    let dba = Policy::new(&[r]);
    assert_eq!(
        dba.decide_as("c", Some("gate"), &g(&["dba"]), &s).action,
        Action::Allow
    );
    assert_eq!(
        dba.decide_as("c", Some("gate"), &g(&["bots"]), &s).action,
        Action::Block
    );
}

#[test]
fn signalling_and_activity_are_guarded() {
    let p = permissive();
    let mut s = stmt("select");
    s.kinds.insert("signal_backend".into());
    assert_decision(
        &p.decide("c", &[], &s),
        Action::Block,
        Some("builtin:signal-backend"),
    );
    let mut s = stmt("select");
    s.kinds.insert("read_activity".into());
    assert_decision(
        &p.decide("c", &[], &s),
        Action::Block,
        Some("builtin:session-activity"),
    );
}

#[test]
fn every_route_to_a_parser_setting_is_judged() {
    let p = permissive();
    let mut s = stmt("select");
    s.config_calls
        .push((Some("standard_conforming_strings".into()), None));
    assert_decision(
        &p.decide("c", &[], &s),
        Action::Block,
        Some("builtin:standard-conforming-strings"),
    );
    let mut s = stmt("select");
    s.config_calls.push((None, Some("sjis".into())));
    assert_decision(
        &p.decide("c", &[], &s),
        Action::Block,
        Some("builtin:set-config-unknown"),
    );
    let mut s = stmt("select");
    s.config_calls
        .push((None, Some("view, foreign-table".into())));
    assert_eq!(p.decide("c", &[], &s).action, Action::Allow);
    let mut s = stmt("alter");
    s.persistent_settings
        .push(("client_encoding".into(), Some("WIN936".into())));
    assert_decision(
        &p.decide("c", &[], &s),
        Action::Block,
        Some("builtin:client-encoding"),
    );
    let d = p.decide("c", &[], &set("client_encoding", Some("shift_jis_2004")));
    assert_decision(&d, Action::Block, Some("builtin:client-encoding"));
    assert_eq!(
        p.decide("c", &[], &set("client_encoding", None)).action,
        Action::Allow
    );
    assert_eq!(
        p.decide("c", &[], &set("names", Some("'LATIN1'"))).action,
        Action::Allow
    );
}
