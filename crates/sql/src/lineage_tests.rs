//! Tests of output-column lineage (`StatementInfo::outputs`) and COPY options
//! (`StatementInfo::copy`).

use std::collections::BTreeSet;

use std::time::{Duration, Instant};

use crate::{
    AnalysisContext, AnalysisError, ColumnRef, CopyInfo, OutputColumn, StatementInfo, TableRef,
    analyze,
};

fn all_with(sql: &str, ctx: &AnalysisContext) -> Vec<StatementInfo> {
    match analyze(sql, ctx) {
        Ok(v) => v,
        Err(e) => panic!("{sql:?} failed: {e:?}"),
    }
}

fn one(sql: &str) -> StatementInfo {
    let mut v = all_with(sql, &AnalysisContext::default());
    assert_eq!(v.len(), 1, "{sql:?} should be one statement: {v:#?}");
    v.remove(0)
}

/// Outputs with their sources only (`derived` is checked by the tests of uses).
fn strip(outputs: Option<Vec<OutputColumn>>) -> Option<Vec<OutputColumn>> {
    outputs.map(|o| {
        o.into_iter()
            .map(|mut c| {
                c.derived.clear();
                c
            })
            .collect()
    })
}

/// The outputs of a statement that returns rows (sources only: `derived` is checked by the
/// tests of uses).
fn outs(sql: &str) -> Vec<OutputColumn> {
    match one(sql).outputs {
        Some(o) => o
            .into_iter()
            .map(|mut c| {
                c.derived.clear();
                c
            })
            .collect(),
        None => panic!("{sql:?} should have outputs"),
    }
}

fn t(name: &str) -> TableRef {
    TableRef {
        schema: Some("public".to_owned()),
        name: name.to_owned(),
    }
}

/// `public.table.column`.
fn tc(table: &str, column: &str) -> ColumnRef {
    ColumnRef {
        table: Some(t(table)),
        column: column.to_owned(),
    }
}

/// `public.payments.column`.
fn pc(column: &str) -> ColumnRef {
    tc("payments", column)
}

fn col(sources: &[ColumnRef]) -> OutputColumn {
    OutputColumn {
        star: false,
        sources: sources.iter().cloned().collect(),
        derived: BTreeSet::new(),
    }
}

fn star(sources: &[ColumnRef]) -> OutputColumn {
    OutputColumn {
        star: true,
        sources: sources.iter().cloned().collect(),
        derived: BTreeSet::new(),
    }
}

fn none() -> OutputColumn {
    col(&[])
}

/// Asserts the outputs of `sql`.
#[track_caller]
fn check(sql: &str, expected: &[OutputColumn]) {
    assert_eq!(outs(sql), expected, "{sql}");
}

/// Asserts a statement with one output column whose sources are exactly `sources`.
#[track_caller]
fn check1(sql: &str, sources: &[ColumnRef]) {
    check(sql, &[col(sources)]);
}

// --- expressions -------------------------------------------------------------------------------

#[test]
fn plain_column_is_its_own_source() {
    check1("SELECT amount FROM payments", &[pc("amount")]);
    check1("SELECT card_number FROM payments", &[pc("card_number")]);
    check1("SELECT p.card_number FROM payments p", &[pc("card_number")]);
    check1(
        "SELECT public.payments.card_number FROM public.payments",
        &[pc("card_number")],
    );
    check(
        "SELECT amount, card_number, 1 FROM payments",
        &[col(&[pc("amount")]), col(&[pc("card_number")]), none()],
    );
}

#[test]
fn functions_operators_and_casts_carry_their_arguments() {
    for sql in [
        "SELECT substr(card_number, 5, 8) FROM payments",
        "SELECT card_number || '' FROM payments",
        "SELECT reverse(upper(card_number)) FROM payments",
        "SELECT format('%s', card_number) FROM payments",
        "SELECT card_number::bigint FROM payments",
        "SELECT CAST(card_number AS bigint) + 1 FROM payments",
        "SELECT coalesce(NULL, card_number) FROM payments",
        "SELECT nullif(card_number, '') FROM payments",
        "SELECT greatest(card_number, '0') FROM payments",
        "SELECT ARRAY[card_number] FROM payments",
        "SELECT ROW(card_number, 1) FROM payments",
        "SELECT substring(card_number FROM 2 FOR 4) FROM payments",
        "SELECT (string_to_array(card_number, ''))[1] FROM payments",
        "SELECT string_agg(card_number, ',') FROM payments",
        "SELECT array_agg(card_number) FROM payments",
        "SELECT json_agg(card_number) FROM payments",
        "SELECT min(card_number) FROM payments",
        "SELECT max(card_number) FROM payments",
        "SELECT sum(card_number::numeric) FROM payments",
        "SELECT first_value(card_number) OVER (PARTITION BY amount ORDER BY amount) \
         FROM payments",
        "SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY card_number) FROM payments",
        "SELECT mode() WITHIN GROUP (ORDER BY card_number) FROM payments",
        "SELECT -card_number::bigint FROM payments",
        "SELECT ~card_number::bigint FROM payments",
        "SELECT card_number COLLATE \"C\" FROM payments",
        "SELECT json_build_object('n', card_number) FROM payments",
        "SELECT evil.count(card_number) FROM payments",
    ] {
        check1(sql, &[pc("card_number")]);
    }
}

#[test]
fn whole_row_references_are_star_sources() {
    for sql in [
        "SELECT row_to_json(p) FROM payments p",
        "SELECT p::text FROM payments p",
        "SELECT to_jsonb(p) FROM payments p",
        "SELECT json_agg(p) FROM payments p",
        "SELECT ROW(p.*) FROM payments p",
        "SELECT row_to_json(payments) FROM payments",
        "SELECT (p.*)::text FROM payments p",
        "SELECT jsonb_build_object('r', p.*) FROM payments p",
    ] {
        check1(sql, &[pc("*")]);
    }
    check("SELECT (p).* FROM payments p", &[star(&[pc("*")])]);
    check1(
        "SELECT (p).card_number FROM payments p",
        &[pc("card_number")],
    );
}

#[test]
fn things_that_cannot_reveal_the_value_have_no_sources() {
    for sql in [
        "SELECT count(card_number) FROM payments",
        "SELECT count(distinct card_number) FROM payments",
        "SELECT count(*) FROM payments",
        "SELECT pg_catalog.count(card_number) FROM payments",
        "SELECT count(card_number) OVER () FROM payments",
        "SELECT card_number = '4111' FROM payments",
        "SELECT card_number <> '4111' FROM payments",
        "SELECT card_number < '4' FROM payments",
        "SELECT card_number LIKE '4%' FROM payments",
        "SELECT card_number ILIKE '4%' FROM payments",
        "SELECT card_number SIMILAR TO '4%' FROM payments",
        "SELECT card_number ~ '^4' FROM payments",
        "SELECT card_number IS NULL FROM payments",
        "SELECT card_number IS NOT NULL FROM payments",
        "SELECT card_number IS DISTINCT FROM 'x' FROM payments",
        "SELECT (card_number = 'x') IS TRUE FROM payments",
        "SELECT card_number IN ('1', '2') FROM payments",
        "SELECT card_number BETWEEN '1' AND '5' FROM payments",
        "SELECT card_number = 'x' AND amount > 1 FROM payments",
        "SELECT NOT (card_number = 'x') FROM payments",
        "SELECT EXISTS (SELECT card_number FROM payments)",
        "SELECT 'x' = ANY (SELECT card_number FROM payments)",
        "SELECT 'x' = ANY (ARRAY[card_number]) FROM payments",
        "SELECT 'x' < ALL (SELECT card_number FROM payments)",
        "SELECT CASE WHEN card_number LIKE '4%' THEN 'visa' ELSE 'other' END FROM payments",
        "SELECT CASE card_number WHEN '1' THEN 'a' END FROM payments",
        "SELECT 1, 'x', NULL FROM payments",
    ] {
        let o = outs(sql);
        assert!(
            o.iter().all(|c| c.sources.is_empty() && !c.star),
            "{sql}: {o:?}"
        );
    }
}

#[test]
fn case_results_flow_but_not_conditions() {
    check1(
        "SELECT CASE WHEN amount > 0 THEN card_number END FROM payments",
        &[pc("card_number")],
    );
    check1(
        "SELECT CASE WHEN card_number = 'x' THEN 'a' ELSE note END FROM payments",
        &[pc("note")],
    );
}

#[test]
fn aggregate_order_filter_and_window_definitions_do_not_flow() {
    check1(
        "SELECT string_agg(amount::text, ',' ORDER BY card_number) \
         FILTER (WHERE card_number <> '') FROM payments",
        &[pc("amount")],
    );
    check1(
        "SELECT sum(amount) OVER (PARTITION BY card_number ORDER BY card_number) FROM payments",
        &[pc("amount")],
    );
}

#[test]
fn clauses_outside_the_target_list_do_not_flow() {
    check1(
        "SELECT amount FROM payments p JOIN refunds r ON r.card = p.card_number \
         WHERE card_number = 'x' GROUP BY amount HAVING max(card_number) > 'a' \
         ORDER BY max(card_number) LIMIT 1",
        &[pc("amount"), tc("refunds", "amount")],
    );
}

#[test]
fn bare_columns_report_every_candidate() {
    check1(
        "SELECT card_number FROM payments, refunds",
        &[pc("card_number"), tc("refunds", "card_number")],
    );
    // No FROM: no candidate table.
    check1(
        "SELECT card_number",
        &[ColumnRef {
            table: None,
            column: "card_number".to_owned(),
        }],
    );
    // Table alias column lists rename unknown positions.
    check1("SELECT x FROM payments AS p(x)", &[pc("*")]);
}

#[test]
fn unresolved_schema_follows_columns_read() {
    let ctx = AnalysisContext {
        search_path: vec!["a".to_owned(), "b".to_owned()],
        ..AnalysisContext::default()
    };
    let i = all_with("SELECT substr(card_number, 1, 4) FROM payments", &ctx);
    let unresolved = ColumnRef {
        table: Some(TableRef {
            schema: None,
            name: "payments".to_owned(),
        }),
        column: "card_number".to_owned(),
    };
    assert_eq!(
        strip(i[0].outputs.clone()),
        Some(vec![col(std::slice::from_ref(&unresolved))])
    );
    assert!(i[0].columns_read.contains(&unresolved));
}

// --- stars -------------------------------------------------------------------------------------

#[test]
fn stars() {
    check("SELECT * FROM payments", &[star(&[pc("*")])]);
    check("TABLE payments", &[star(&[pc("*")])]);
    check("SELECT p.*, 1 FROM payments p", &[star(&[pc("*")]), none()]);
    check(
        "SELECT * FROM payments p JOIN refunds r ON true",
        &[star(&[pc("*"), tc("refunds", "*")])],
    );
    check(
        "SELECT r.* FROM payments p JOIN refunds r ON true",
        &[star(&[tc("refunds", "*")])],
    );
    check(
        "SELECT * FROM (SELECT card_number, 1 FROM payments) s",
        &[star(&[pc("card_number")])],
    );
    check(
        "SELECT * FROM payments p, unnest(ARRAY[p.note]) u",
        &[star(&[pc("*"), pc("note")])],
    );
}

// --- subqueries, CTEs, set operations ----------------------------------------------------------

#[test]
fn from_subqueries_follow_names_and_alias_lists() {
    check(
        "SELECT s.a, s.b FROM (SELECT card_number, amount FROM payments) AS s(a, b)",
        &[col(&[pc("card_number")]), col(&[pc("amount")])],
    );
    check(
        "SELECT b, a FROM (SELECT card_number, amount FROM payments) AS s(a, b)",
        &[col(&[pc("amount")]), col(&[pc("card_number")])],
    );
    check1(
        "SELECT x FROM (SELECT card_number AS x, amount FROM payments) s",
        &[pc("card_number")],
    );
    check1(
        "SELECT s.amount FROM (SELECT card_number AS x, amount FROM payments) s",
        &[pc("amount")],
    );
    // Names PostgreSQL gives unnamed columns.
    check1(
        "SELECT s.substr FROM (SELECT substr(card_number, 1, 4), amount FROM payments) s",
        &[pc("card_number")],
    );
    check1(
        "SELECT s.amount FROM (SELECT substr(card_number, 1, 4), amount FROM payments) s",
        &[pc("amount")],
    );
    check1(
        "SELECT s.card_number FROM (SELECT card_number::text, amount FROM payments) s",
        &[pc("card_number")],
    );
    check1(
        "SELECT s.amount FROM (SELECT (SELECT max(card_number) FROM payments), amount \
         FROM payments) s",
        &[pc("amount")],
    );
    // A star in the subquery: by name cannot be told, so everything.
    check1(
        "SELECT s.amount FROM (SELECT * FROM payments) s",
        &[pc("*")],
    );
    // Unknown name: everything the subquery has.
    check1(
        "SELECT s.nope FROM (SELECT card_number AS x, amount FROM payments) s",
        &[pc("card_number"), pc("amount")],
    );
    // Whole-row reference to a subquery: all its outputs.
    check1(
        "SELECT row_to_json(s) FROM (SELECT card_number AS x, 1 AS y FROM payments) s",
        &[pc("card_number")],
    );
    // Unaliased subquery (PostgreSQL 16+): its columns are still visible.
    check1(
        "SELECT x FROM (SELECT card_number AS x FROM payments)",
        &[pc("card_number")],
    );
}

#[test]
fn lateral_subqueries_and_functions() {
    check1(
        "SELECT l.c FROM payments p, LATERAL (SELECT p.card_number AS c) l",
        &[pc("card_number")],
    );
    // `u` could also be a column of payments (the server tries that first): both.
    check1(
        "SELECT u FROM payments p, unnest(ARRAY[p.card_number]) AS u",
        &[pc("card_number"), pc("u")],
    );
    check1(
        "SELECT u.x FROM payments p, unnest(ARRAY[p.card_number]) AS u(x)",
        &[pc("card_number")],
    );
    check(
        "SELECT x.key, x.value FROM payments p, jsonb_each(to_jsonb(p)) x",
        &[col(&[pc("*")]), col(&[pc("*")])],
    );
    check1("SELECT g FROM generate_series(1, 10) g", &[]);
    check1(
        "SELECT j.a FROM payments p, json_to_record(row_to_json(p)) AS j(a text, b int)",
        &[pc("*")],
    );
    check1(
        "SELECT u.x FROM unnest((SELECT array_agg(card_number) FROM payments)) AS u(x)",
        &[pc("card_number")],
    );
    check1(
        "SELECT r.n FROM payments p, LATERAL ROWS FROM (unnest(ARRAY[p.note]), \
         generate_series(1, 2)) AS r(n, i)",
        &[pc("note")],
    );
}

#[test]
fn table_functions_in_from() {
    check1(
        "SELECT x.n FROM payments p, XMLTABLE('/r' PASSING xmlelement(name r, p.card_number) \
         COLUMNS n text PATH '.') AS x",
        &[pc("card_number")],
    );
    check1(
        "SELECT jt.c FROM payments p, JSON_TABLE(to_jsonb(p), '$' \
         COLUMNS (c text PATH '$.card_number')) jt",
        &[pc("*")],
    );
    check(
        "SELECT * FROM payments p CROSS JOIN LATERAL unnest(ARRAY[p.note]) \
         WITH ORDINALITY AS u(c, n)",
        &[star(&[pc("*"), pc("note")])],
    );
}

#[test]
fn ctes() {
    check(
        "WITH c AS (SELECT card_number AS n, amount FROM payments) SELECT n, amount FROM c",
        &[col(&[pc("card_number")]), col(&[pc("amount")])],
    );
    check(
        "WITH c(a, b) AS (SELECT card_number, amount FROM payments) SELECT x.b, x.a FROM c x",
        &[col(&[pc("amount")]), col(&[pc("card_number")])],
    );
    // Later CTEs see earlier ones; a CTE shadows a table of the same name.
    check1(
        "WITH a AS (SELECT card_number AS v FROM payments), refunds AS (SELECT v FROM a) \
         SELECT v FROM refunds",
        &[pc("card_number")],
    );
    check(
        "WITH c AS (SELECT card_number FROM payments) SELECT * FROM c",
        &[star(&[pc("card_number")])],
    );
}

#[test]
fn recursive_ctes_reach_a_fixpoint() {
    check(
        "WITH RECURSIVE r(n, k) AS (SELECT amount, 1 FROM payments \
         UNION ALL SELECT n, k + 1 FROM r WHERE k < 3) SELECT n, k FROM r",
        &[col(&[pc("amount")]), none()],
    );
    // The recursive branch moves card numbers from b into a: a is tainted.
    check(
        "WITH RECURSIVE r(a, b) AS (SELECT 1, card_number FROM payments \
         UNION ALL SELECT b::int, a::text FROM r WHERE a < 3) SELECT a, b FROM r",
        &[col(&[pc("card_number")]), col(&[pc("card_number")])],
    );
    // Through three columns, needing several rounds.
    let o = outs(
        "WITH RECURSIVE r(a, b, c) AS (SELECT 1, 2, card_number FROM payments \
         UNION ALL SELECT b, c, a FROM r) SELECT a FROM r",
    );
    assert_eq!(o, vec![col(&[pc("card_number")])]);
}

#[test]
fn nested_recursive_ctes_stay_bounded_and_sound() {
    let mut sql = "SELECT card_number AS v FROM payments".to_owned();
    for i in 0..8 {
        sql = format!(
            "WITH RECURSIVE r{i}(v) AS ({sql} UNION ALL SELECT v FROM r{i}) SELECT v FROM r{i}"
        );
    }
    let start = Instant::now();
    check1(&sql, &[pc("card_number")]);
    assert!(start.elapsed() < Duration::from_secs(10));
}

#[test]
fn set_operations_are_position_wise() {
    check(
        "SELECT amount, 'x' FROM payments UNION SELECT amount, card_number FROM payments",
        &[col(&[pc("amount")]), col(&[pc("card_number")])],
    );
    check(
        "SELECT 1 INTERSECT SELECT card_number FROM payments EXCEPT SELECT note FROM payments",
        &[col(&[pc("card_number"), pc("note")])],
    );
    // A star makes positions unknown: every column gets everything.
    check(
        "SELECT * FROM refunds UNION SELECT card_number, 1 FROM payments",
        &[star(&[tc("refunds", "*"), pc("card_number")])],
    );
    check(
        "WITH c AS (SELECT 1 AS a, 2 AS b UNION ALL SELECT card_number, amount FROM payments) \
         SELECT b FROM c",
        &[col(&[pc("amount")])],
    );
}

#[test]
fn scalar_and_array_subqueries() {
    check1(
        "SELECT (SELECT card_number FROM payments LIMIT 1)",
        &[pc("card_number")],
    );
    check1(
        "SELECT ARRAY(SELECT card_number FROM payments)",
        &[pc("card_number")],
    );
    // Correlated: the outer reference flows too.
    check1(
        "SELECT (SELECT r.note || p.card_number FROM refunds r LIMIT 1) FROM payments p",
        &[pc("card_number"), tc("refunds", "note")],
    );
}

#[test]
fn values_lists_are_position_wise() {
    check("VALUES (1, 'a'), (2, 'b')", &[none(), none()]);
    check(
        "SELECT v.b FROM (VALUES (1, 'a'), (2, (SELECT card_number FROM payments LIMIT 1))) \
         AS v(a, b)",
        &[col(&[pc("card_number")])],
    );
    check1(
        "SELECT column2 FROM (VALUES (1, 'a'), (2, (SELECT note FROM payments LIMIT 1))) v",
        &[pc("note")],
    );
}

#[test]
fn joins_and_join_aliases() {
    check1(
        "SELECT j.card_number FROM (payments p JOIN refunds r USING (id)) AS j",
        &[pc("card_number"), tc("refunds", "card_number")],
    );
    check1(
        "SELECT u.id FROM payments p JOIN refunds r USING (id) AS u",
        &[pc("id"), tc("refunds", "id")],
    );
    check1(
        "SELECT j.x FROM (payments p JOIN (SELECT card_number AS x FROM payments) s ON true) \
         AS j",
        &[pc("card_number"), pc("x")],
    );
}

// --- statements --------------------------------------------------------------------------------

#[test]
fn cursors_and_prepared_statements_have_their_query_outputs() {
    let d = one("DECLARE c CURSOR FOR SELECT substr(card_number, 1, 6), amount FROM payments");
    assert_eq!(
        strip(d.outputs.clone()),
        Some(vec![col(&[pc("card_number")]), col(&[pc("amount")])])
    );
    let p = one("PREPARE q(int) AS SELECT card_number FROM payments WHERE id = $1");
    assert_eq!(
        strip(p.outputs.clone()),
        Some(vec![col(&[pc("card_number")])])
    );
    let p = one("PREPARE q AS DELETE FROM payments RETURNING reverse(card_number)");
    assert_eq!(
        strip(p.outputs.clone()),
        Some(vec![col(&[pc("card_number")])])
    );
    assert_eq!(
        strip(one("PREPARE q AS DELETE FROM payments").outputs),
        None
    );
}

#[test]
fn returning() {
    check1(
        "INSERT INTO payments (card_number) VALUES ('4111') RETURNING card_number",
        &[pc("card_number")],
    );
    check(
        "UPDATE payments SET amount = 0 RETURNING *",
        &[star(&[pc("*")])],
    );
    check1(
        "DELETE FROM payments p RETURNING p.card_number",
        &[pc("card_number")],
    );
    check1(
        "UPDATE payments SET note = 'x' RETURNING old.card_number",
        &[pc("card_number")],
    );
    check1(
        "UPDATE payments SET note = 'x' RETURNING WITH (OLD AS o) o.card_number",
        &[pc("card_number")],
    );
    check(
        "UPDATE payments p SET note = 'x' FROM refunds r WHERE r.id = p.id RETURNING r.*, p.id",
        &[star(&[tc("refunds", "*")]), col(&[pc("id")])],
    );
    check1(
        "DELETE FROM payments USING refunds r RETURNING r.note",
        &[tc("refunds", "note")],
    );
    check1(
        "MERGE INTO payments p USING refunds r ON p.id = r.id \
         WHEN MATCHED THEN UPDATE SET note = 'x' RETURNING p.card_number",
        &[pc("card_number")],
    );
}

#[test]
fn returning_gives_back_the_values_written() {
    // Card numbers copied into another table come back through RETURNING.
    check1(
        "INSERT INTO scratch (a) SELECT card_number FROM payments RETURNING a",
        &[tc("scratch", "a"), pc("card_number")],
    );
    check1(
        "INSERT INTO scratch (a, b) SELECT 1, card_number FROM payments RETURNING a",
        &[tc("scratch", "a")],
    );
    check1(
        "INSERT INTO scratch SELECT card_number FROM payments RETURNING a",
        &[tc("scratch", "a"), pc("card_number")],
    );
    check1(
        "UPDATE scratch s SET a = p.card_number FROM payments p WHERE p.id = s.id \
         RETURNING s.a",
        &[tc("scratch", "a"), pc("card_number")],
    );
    check1(
        "UPDATE scratch SET a = 'x' RETURNING b",
        &[tc("scratch", "b")],
    );
    check1(
        "INSERT INTO scratch (a) VALUES ('1') ON CONFLICT (a) DO UPDATE \
         SET a = (SELECT p.card_number FROM payments p LIMIT 1) RETURNING a",
        &[tc("scratch", "a"), pc("card_number")],
    );
    check1(
        "MERGE INTO scratch s USING payments p ON s.id = p.id \
         WHEN NOT MATCHED THEN INSERT (a) VALUES (p.card_number) RETURNING s.a",
        &[tc("scratch", "a"), pc("card_number")],
    );
}

#[test]
fn data_modifying_ctes_flow_like_any_cte() {
    check1(
        "WITH d AS (DELETE FROM payments RETURNING card_number) SELECT card_number FROM d",
        &[pc("card_number")],
    );
    check(
        "WITH d AS (UPDATE payments SET note = '' RETURNING *) SELECT * FROM d",
        &[star(&[pc("*")])],
    );
    // Without RETURNING the CTE has no columns to give.
    check("WITH d AS (DELETE FROM payments) SELECT 1", &[none()]);
}

#[test]
fn statements_without_rows_have_no_outputs() {
    for sql in [
        "DELETE FROM payments",
        "INSERT INTO payments (card_number) VALUES ('x')",
        "UPDATE payments SET note = card_number",
        "CREATE TABLE x (a int)",
        "EXPLAIN SELECT card_number FROM payments",
        "EXPLAIN ANALYZE SELECT card_number FROM payments",
        "SELECT card_number INTO copy_of FROM payments",
        "CREATE TABLE copy_of AS SELECT card_number FROM payments",
        "SET search_path = public",
        "EXECUTE q",
        "COPY payments TO STDOUT",
        "COPY payments FROM STDIN",
        "BEGIN",
    ] {
        assert_eq!(one(sql).outputs, None, "{sql}");
    }
}

#[test]
fn each_statement_of_a_query_has_its_own_outputs() {
    let v = all_with(
        "SELECT card_number FROM payments; SELECT amount FROM payments; DELETE FROM payments",
        &AnalysisContext::default(),
    );
    let o: Vec<Option<Vec<OutputColumn>>> = v.into_iter().map(|i| i.outputs).collect();
    assert_eq!(
        o,
        vec![
            Some(vec![col(&[pc("card_number")])]),
            Some(vec![col(&[pc("amount")])]),
            None
        ]
    );
}

// --- COPY --------------------------------------------------------------------------------------

fn copy(sql: &str) -> CopyInfo {
    match one(sql).copy {
        Some(c) => c,
        None => panic!("{sql:?} should have copy info"),
    }
}

#[test]
fn copy_with_new_style_options() {
    let i = one("COPY payments (card_number, amount) TO STDOUT WITH (FORMAT csv, DELIMITER ';')");
    assert_eq!(
        i.copy,
        Some(CopyInfo {
            format: "csv".to_owned(),
            delimiter: Some(";".to_owned()),
            quote: None,
            escape: None,
            header: false,
            table: Some(t("payments")),
            columns: vec!["card_number".to_owned(), "amount".to_owned()],
            query: false,
        })
    );
    assert_eq!(strip(i.outputs.clone()), None);
    let c = copy("COPY payments TO STDOUT (FORMAT csv, QUOTE '''', ESCAPE '\\', HEADER)");
    assert_eq!(c.format, "csv");
    assert_eq!(c.quote.as_deref(), Some("'"));
    assert_eq!(c.escape.as_deref(), Some("\\"));
    assert_eq!(c.delimiter, None);
    assert!(c.columns.is_empty());
}

#[test]
fn copy_with_old_style_options() {
    let c = copy("COPY payments TO STDOUT CSV HEADER");
    assert_eq!(c.format, "csv");
    assert_eq!(c.delimiter, None);
    assert!(c.header);
    assert!(!copy("COPY payments TO STDOUT CSV").header);
    let c = copy("COPY payments TO STDOUT WITH DELIMITER AS '|'");
    assert_eq!(c.format, "text");
    assert_eq!(c.delimiter.as_deref(), Some("|"));
    let c = copy("COPY payments TO STDOUT WITH CSV QUOTE AS '\"' ESCAPE AS '/'");
    assert_eq!(c.format, "csv");
    assert_eq!(c.quote.as_deref(), Some("\""));
    assert_eq!(c.escape.as_deref(), Some("/"));
    let c = copy("COPY payments TO STDOUT BINARY");
    assert_eq!(c.format, "binary");
    let c = copy("COPY BINARY payments TO STDOUT");
    assert_eq!(c.format, "binary");
}

#[test]
fn copy_of_a_query_has_its_outputs() {
    let i = one(
        "COPY (SELECT substr(card_number, 1, 6), amount FROM payments) TO STDOUT (FORMAT binary)",
    );
    assert_eq!(
        i.copy,
        Some(CopyInfo {
            format: "binary".to_owned(),
            query: true,
            ..CopyInfo::default()
        })
    );
    assert_eq!(
        strip(i.outputs.clone()),
        Some(vec![col(&[pc("card_number")]), col(&[pc("amount")])])
    );
    let i = one("COPY (DELETE FROM payments RETURNING card_number) TO STDOUT");
    assert_eq!(
        strip(i.outputs.clone()),
        Some(vec![col(&[pc("card_number")])])
    );
}

#[test]
fn copy_from_stdin() {
    let i = one("COPY payments (card_number) FROM STDIN");
    assert_eq!(
        i.copy,
        Some(CopyInfo {
            format: "text".to_owned(),
            table: Some(t("payments")),
            columns: vec!["card_number".to_owned()],
            ..CopyInfo::default()
        })
    );
    assert_eq!(strip(i.outputs.clone()), None);
}

#[test]
fn only_copy_has_copy_info() {
    assert_eq!(one("SELECT 1").copy, None);
    assert_eq!(one("INSERT INTO payments VALUES (1)").copy, None);
    let sets: BTreeSet<String> = one("COPY payments TO STDOUT").kinds;
    assert!(sets.contains("copy_to"));
}

// --- cost bounds -------------------------------------------------------------------------------

#[test]
fn nested_join_aliases_stay_cheap() {
    let mut from = "payments t0".to_owned();
    for i in 1..200 {
        from = format!("({from} JOIN refunds t{i} ON true) AS j{i}");
    }
    let sql = format!("SELECT j199.card_number, note, * FROM {from}");
    let start = Instant::now();
    let o = outs(&sql);
    assert!(start.elapsed() < Duration::from_secs(10));
    let both = [pc("card_number"), tc("refunds", "card_number")];
    assert_eq!(o.first(), Some(&col(&both)));
    assert_eq!(o.get(2), Some(&star(&[pc("*"), tc("refunds", "*")])));
}

#[test]
fn quadratic_outputs_are_refused() {
    // A short text whose outputs would be quadratic in its length.
    let wide = (0..1500)
        .map(|i| format!("c{i}"))
        .collect::<Vec<_>>()
        .join(" || ");
    let refs = vec!["s.x"; 1500].join(", ");
    let sql = format!("SELECT {refs} FROM (SELECT {wide} AS x FROM payments) s");
    let start = Instant::now();
    let r = analyze(&sql, &AnalysisContext::default());
    assert!(matches!(r, Err(AnalysisError::TooComplex)), "{r:?}");
    assert!(start.elapsed() < Duration::from_secs(10));
    // The same shape, small: fine.
    let o = outs("SELECT s.x, s.x FROM (SELECT c1 || c2 AS x FROM payments) s");
    assert_eq!(o, vec![col(&[pc("c1"), pc("c2")]); 2]);
}

#[test]
fn copy_header_option() {
    for (sql, header) in [
        ("COPY payments TO STDOUT (FORMAT csv, HEADER)", true),
        ("COPY payments TO STDOUT (FORMAT csv, HEADER true)", true),
        ("COPY payments TO STDOUT (FORMAT csv, HEADER on)", true),
        ("COPY payments TO STDOUT (FORMAT csv, HEADER 1)", true),
        ("COPY payments FROM STDIN (FORMAT csv, HEADER match)", true),
        ("COPY payments TO STDOUT (FORMAT csv, HEADER false)", false),
        ("COPY payments TO STDOUT (FORMAT csv, HEADER off)", false),
        ("COPY payments TO STDOUT (FORMAT csv, HEADER 0)", false),
        (
            "COPY payments TO STDOUT (FORMAT csv, HEADER 'nonsense')",
            false,
        ),
        ("COPY payments TO STDOUT (FORMAT csv)", false),
    ] {
        assert_eq!(copy(sql).header, header, "{sql}");
    }
}

/// The columns recorded as reaching an operation that can fail on some values.
fn fallible(sql: &str) -> Vec<String> {
    one(sql)
        .uses
        .fallible
        .iter()
        .flat_map(|(_, cols)| cols.iter().map(|c| c.column.clone()))
        .collect()
}

#[test]
fn operations_that_can_fail_on_a_value_are_recorded() {
    for sql in [
        "SELECT card::int FROM t",
        "SELECT CAST(card AS numeric) FROM t",
        "SELECT card::text[] FROM t",
        "SELECT n / 10 FROM t",
        "SELECT -n FROM t",
        "SELECT chr(n) FROM t",
        "SELECT format('%s', card) FROM t",
        "SELECT substr('abc', 1, n) FROM t",
        "SELECT regexp_replace('x', card, '') FROM t",
        "SELECT json_build_object(card, 1) FROM t",
        "SELECT myschema.lower(card) FROM t",
        "SELECT lower(s => card) FROM t",
        "SELECT (SELECT card::int FROM t)",
        "SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY card) FROM t",
    ] {
        assert!(!fallible(sql).is_empty(), "{sql}: not recorded as fallible");
    }
    for sql in [
        "SELECT card::text, card::varchar(4), CAST(card AS char(3)) FROM t",
        "SELECT card || 'x', substr(card, 2, 3), lpad(card, 20, '0'), md5(card) FROM t",
        "SELECT nullif(card, '1'), coalesce(card, ''), greatest(card, '5') FROM t",
        "SELECT regexp_replace(card, '[0-4]', '', 'g'), split_part(card, '1', 2) FROM t",
        "SELECT json_build_object('k', card), row_to_json(t), count(card), max(n) FROM t",
        "SELECT pg_catalog.upper(card), length(card)::text FROM t",
        "SELECT 1 / 0, n, (2 + 3)::int FROM t",
    ] {
        assert_eq!(fallible(sql), Vec::<String>::new(), "{sql}");
    }
}
