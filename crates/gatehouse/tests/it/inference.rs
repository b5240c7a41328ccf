//! Masking that holds against inference: no single statement lets a masked identity rebuild
//! more than the last four digits of a card number, or any digit of a verification code.
//!
//! Each attack of the red-team families (implicit flows through conditions, joins, CASE,
//! counts, offsets and EXPLAIN; derived values; SQL inside strings; server-side stores;
//! copies under another name; error texts) runs through the gateway against a real
//! PostgreSQL, in the simple and the extended protocol. Each must be refused
//! (`builtin:masked-inference`, SQLSTATE 42501) or answer nothing that depends on the hidden
//! digits (a derivative masked whole, an error text withheld). Useful masked queries keep
//! working: filtering by the last four, counting, grouping and joining by token, lookups by a
//! parameter, pg_dump of a masked table.

// Test code: panicking on the unexpected is the point.

use std::sync::OnceLock;

use crate::support::*;
use tokio_postgres::{Client, SimpleQueryMessage};

const DB: &str = "inference";
const CONN: &str = "payments";

/// The hidden card numbers and verification codes.
const CARDS: &[(i32, &str, &str)] = &[
    (1, "4111111111111111", "123"),
    (2, "5555555555554444", "456"),
    (3, "6011111111111117", "789"),
];

fn seed_sql() -> String {
    let rows: Vec<String> = CARDS
        .iter()
        .map(|(id, pan, cvv)| format!("({id}, '{pan}', '{cvv}', {pan})"))
        .collect();
    format!(
        "CREATE TABLE public.payments (id int PRIMARY KEY, card_number text, cvv text, card_bigint int8);
         INSERT INTO public.payments VALUES {};
         CREATE TABLE public.cards (id int, pan text);
         INSERT INTO public.cards SELECT id, card_number FROM public.payments;
         CREATE TABLE public.guesses (v text);
         INSERT INTO public.guesses VALUES ('4111111111111111'), ('4111111111111112');
         CREATE SEQUENCE public.s;
         CREATE VIEW public.starts_with_4 AS
             SELECT id FROM public.payments WHERE substr(card_number, 1, 1) = '4';
         CREATE VIEW public.plain_cards AS SELECT id, card_number FROM public.payments;
         CREATE FUNCTION public.peek(int) RETURNS text LANGUAGE sql AS
             $f$SELECT card_number FROM public.payments WHERE id = $1$f$;
         ANALYZE public.payments;
         CREATE SCHEMA decoy;
         CREATE TABLE decoy.payments (id int, card_number text, cvv text, card_bigint int8);
         INSERT INTO decoy.payments VALUES (9, '0000000000000000', '000', 0);",
        rows.join(", ")
    )
}

fn seeded() {
    static SEEDED: OnceLock<()> = OnceLock::new();
    SEEDED.get_or_init(|| cluster().create_database_with(DB, &seed_sql()));
}

fn gateway(style: &str) -> Gateway {
    seeded();
    let mut b = Gateway::builder();
    b.databases = vec![(CONN.to_owned(), DB.to_owned())];
    b.extra(&format!(
        r#"
[[mask]]
connections = ["{CONN}"]
columns = ["public.payments.card_number", "public.payments.card_bigint", "public.cards.pan", "*.*.cvv"]
detectors = ["pan"]
style = "{style}"
exempt_groups = ["pci-auditors"]

# DO is allowed by a rule: what refuses it for a masked identity is the masking itself.
[[rule]]
name = "bots-may-run-do"
connections = ["{CONN}"]
groups = ["fraud-bots"]
statements = ["do"]
action = "allow"
"#
    ))
    .start()
}

/// What a client got: rows (text) or an error (SQLSTATE, message).
type Answer = Result<Vec<Vec<Option<String>>>, (String, String)>;

async fn simple(c: &Client, sql: &str) -> Answer {
    match c.simple_query(sql).await {
        Ok(msgs) => Ok(msgs
            .iter()
            .filter_map(|m| match m {
                SimpleQueryMessage::Row(r) => {
                    Some((0..r.len()).map(|i| r.get(i).map(str::to_owned)).collect())
                }
                _ => None,
            })
            .collect()),
        Err(e) => Err((sqlstate(&e).unwrap_or_default(), format!("{e:?}"))),
    }
}

/// The extended protocol, every result column read as text by the server (`::text` is not
/// added: binary results for the types that have them).
async fn extended(c: &Client, sql: &str) -> Answer {
    match c.query(sql, &[]).await {
        Ok(rows) => Ok(rows
            .iter()
            .map(|r| {
                (0..r.len())
                    .map(|i| {
                        r.try_get::<_, Option<String>>(i)
                            .ok()
                            .flatten()
                            .or_else(|| {
                                r.try_get::<_, Option<i64>>(i)
                                    .ok()
                                    .flatten()
                                    .map(|n| n.to_string())
                            })
                            .or_else(|| {
                                r.try_get::<_, Option<i32>>(i)
                                    .ok()
                                    .flatten()
                                    .map(|n| n.to_string())
                            })
                    })
                    .collect()
            })
            .collect()),
        Err(e) => Err((sqlstate(&e).unwrap_or_default(), format!("{e:?}"))),
    }
}

/// Every text the answer carries, for leak checks.
fn text_of(a: &Answer) -> String {
    match a {
        Ok(rows) => rows
            .iter()
            .flatten()
            .map(|v| v.clone().unwrap_or_else(|| "NULL".into()))
            .collect::<Vec<_>>()
            .join("|"),
        Err((state, msg)) => format!("{state} {msg}"),
    }
}

/// Fails if `text` holds any run of five or more digits of a hidden card number other than
/// its last four (spaces and dashes ignored), or the card number re-encoded letter-wise.
#[track_caller]
fn assert_no_card_digits(what: &str, text: &str) {
    let digits: String = text.chars().filter(|c| *c != ' ' && *c != '-').collect();
    for (_, pan, _) in CARDS {
        let head = &pan[..pan.len() - 4];
        for w in head.as_bytes().windows(6) {
            let w = std::str::from_utf8(w).unwrap();
            assert!(
                !digits.contains(w),
                "{what}: {w} of {pan} reached the client: {text}"
            );
        }
        let letters: String = pan
            .chars()
            .map(|c| (b'a' + (c as u8 - b'0')) as char)
            .collect();
        assert!(
            !text.contains(&letters[..8]),
            "{what}: {pan} reached the client as letters: {text}"
        );
    }
}

/// Statements that would let a masked identity infer hidden digits: each is refused.
const REFUSED: &[&str] = &[
    // Redefinitions: a renamed or moved table or column is no longer masked by name; generated
    // columns, expression indexes, defaults and constraints compute with the raw values.
    "ALTER TABLE payments RENAME TO p2",
    "ALTER TABLE public.payments RENAME COLUMN card_number TO c",
    "ALTER TABLE payments SET SCHEMA decoy",
    "ALTER TABLE payments ADD COLUMN g text GENERATED ALWAYS AS (substr(card_number, 1, 8)) STORED",
    "ALTER TABLE payments ALTER COLUMN cvv TYPE text USING cvv || ''",
    "ALTER TABLE payments ADD CONSTRAINT c4 CHECK (substr(card_number, 1, 1) = '4')",
    "CREATE INDEX ON payments (substr(card_number, 1, 1))",
    "ALTER TABLE cards RENAME pan TO p",
    // Implicit flows: conditions, CASE, joins, counts, offsets, booleans, EXPLAIN.
    "SELECT id, CASE substr(card_number, 1, 1) WHEN '4' THEN 'a' WHEN '5' THEN 'b' ELSE 'c' END FROM payments",
    "SELECT id, CASE WHEN substr(card_number, 2, 1) = '1' THEN 'x' END FROM payments",
    "SELECT p.id, g FROM payments p JOIN generate_series(0, 9999) g ON substr(p.card_number, 1, 4)::int = g",
    "SELECT p.id, g FROM payments p, generate_series(0, 9999) g WHERE substr(p.card_number, 5, 4)::int = g",
    "SELECT count(*) FROM payments p, generate_series(1, substr(p.card_number, 1, 4)::int) WHERE p.id = 1",
    "SELECT id FROM payments ORDER BY id OFFSET (SELECT substr(card_number, 1, 1)::int FROM payments WHERE id = 1)",
    "SELECT id FROM payments LIMIT (SELECT substr(card_number, 2, 1)::int FROM payments WHERE id = 1)",
    "SELECT (substr(card_number, 1, 1) = '4')::int + (substr(card_number, 2, 1) = '1')::int * 2 FROM payments",
    "SELECT card_number = '4111111111111111' FROM payments",
    "SELECT id FROM payments WHERE substr(card_number, 1, 6) = '411111'",
    "SELECT id FROM payments WHERE card_number > '45'",
    "SELECT id FROM payments WHERE card_number LIKE '4111%'",
    "SELECT count(*) FILTER (WHERE card_number LIKE '4%') FROM payments",
    "SELECT id FROM payments ORDER BY substr(card_number, 7, 1)",
    "SELECT substr(card_number, 1, 1), count(*) FROM payments GROUP BY 1",
    "SELECT DISTINCT substr(card_number, 3, 1) FROM payments",
    "EXPLAIN ANALYZE SELECT * FROM payments WHERE substr(card_number, 1, 1) = '4'",
    "SELECT id FROM payments p WHERE EXISTS (SELECT 1 FROM generate_series(0, 9) d WHERE substr(p.card_number, 1, 1) = d::text)",
    "SELECT row_number() OVER (PARTITION BY substr(card_number, 1, 2)) FROM payments",
    "SELECT id FROM payments WHERE card_number = '4111111111111111' OR card_number = '5555555555554444'",
    "SELECT 1 FROM payments WHERE card_number = '4111111111111111' UNION ALL SELECT 2 FROM payments WHERE card_number = '5555555555554444'",
    "SELECT g.v FROM payments p JOIN guesses g ON p.card_number = g.v",
    // A list of candidates is as many guesses as it has values (one allowance per statement).
    "SELECT id FROM payments WHERE card_number IN ('4111111111111111', '5555555555554444')",
    "SELECT id FROM payments WHERE card_number IN ($1, $2)",
    "SELECT v FROM guesses WHERE v IN (SELECT card_number FROM payments)",
    "SELECT card_number FROM payments UNION SELECT '4111111111111110' ORDER BY 1",
    "SELECT card_number FROM payments INTERSECT SELECT v FROM guesses",
    "SELECT id FROM payments WHERE card_bigint / 1000000000000 = 4",
    // Verification codes: no digit, in any clause.
    "SELECT id FROM payments WHERE substr(cvv, 1, 1) = '1'",
    "SELECT id, CASE WHEN cvv = '123' THEN 1 END FROM payments",
    "SELECT id FROM payments WHERE right(cvv, 2) = '23'",
    "SELECT right(cvv, 3) FROM payments",
    "SELECT id FROM payments WHERE cvv LIKE '%3'",
    // Errors as a channel: an operation that fails on some values answers a bit of the
    // value by failing or not, whatever the masking of its result.
    "SELECT (substr(card_number, 5, 1)::int / (substr(card_number, 5, 1)::int - 1)) FROM payments WHERE id = 1",
    "SELECT (regexp_replace(card_number, '[0-4]', '', 'g'))::numeric FROM payments",
    "SELECT (SELECT substr(card_number, 2, 1)::int FROM payments p2 WHERE p2.id = p.id) FROM payments p",
    "SELECT chr(ascii(substr(card_number, 3, 1)) + 17) FROM payments ORDER BY id",
    "SELECT card_bigint / 10000 FROM payments",
    "SELECT cash_words((card_bigint / 10000)::money) FROM payments ORDER BY id",
    "SELECT length(card_number) * 0 + card_bigint FROM payments",
    "SELECT card_number::int FROM payments",
    "SELECT substr('abc', 1, length(card_number) - 17) FROM payments",
    "SELECT repeat(card_number, 2) FROM payments",
    "SELECT decode(substr(card_number, 1, 2), 'hex') FROM payments",
    "SELECT json_build_object(nullif(substr(card_number, 1, 1), '4'), 1) FROM payments",
    "SELECT string_agg(cvv, ',')::int FROM payments",
    "SELECT public.lower(card_number) FROM payments",
    // Set-returning functions multiply rows by the value.
    "SELECT unnest(string_to_array(card_number, NULL)) FROM payments",
    "SELECT generate_series(1, substr(card_number, 1, 2)::int) FROM payments WHERE id = 1",
    // SQL inside strings.
    "SELECT query_to_xml('SELECT card_number FROM payments', false, false, '')",
    "SELECT table_to_xml('payments', false, false, '')",
    // Server-side stores.
    "SELECT set_config('gatehouse.x', card_number, false) FROM payments WHERE id = 1",
    "SELECT set_config('application_name', card_number, false) FROM payments WHERE id = 1",
    "SELECT pg_advisory_lock(card_bigint) FROM payments WHERE id = 1",
    "SELECT setval('s', card_bigint) FROM payments WHERE id = 1",
    "SELECT lo_from_bytea(0, convert_to(card_number, 'UTF8')) FROM payments WHERE id = 1",
    "SELECT pg_notify('c', card_number) FROM payments WHERE id = 1",
    "SELECT most_common_vals::text FROM pg_stats WHERE tablename = 'payments'",
    // Copies under another name.
    "CREATE TEMP TABLE t AS SELECT cvv AS sec FROM payments",
    "SELECT card_number AS c INTO TEMP t2 FROM payments",
    "INSERT INTO guesses SELECT card_number FROM payments",
    "UPDATE guesses SET v = (SELECT card_number FROM payments WHERE id = 1)",
    "WITH x AS (INSERT INTO guesses SELECT cvv FROM payments RETURNING 1) SELECT count(*) FROM x",
    // Code the gateway cannot see into; views that compute with the column.
    "SELECT peek(1)",
    "DO $$BEGIN RAISE NOTICE '%', (SELECT card_number FROM payments LIMIT 1); END$$",
    "SELECT id FROM starts_with_4",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inference_attacks_are_refused() {
    let gw = gateway("last4");
    let token = gw.token("bot-1", &["fraud-bots"]);
    let c = gw.connect(CONN, &token).await;
    let mut failures = Vec::new();
    for sql in REFUSED {
        for (proto, a) in [
            ("simple", simple(&c, sql).await),
            ("extended", extended(&c, sql).await),
        ] {
            let what = format!("{proto}: {sql}");
            let refused = matches!(&a, Err((state, msg))
                if state == "42501" && msg.contains("builtin:masked-inference"));
            if !refused {
                failures.push(format!("{what}\n    got: {}", text_of(&a)));
            }
            assert_no_card_digits(&what, &text_of(&a));
        }
    }
    assert!(
        failures.is_empty(),
        "{} attacks were not refused:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // Nothing was parked by the refused statements.
    let direct = cluster().direct(DB).await;
    let n: i64 = direct
        .query_one("SELECT count(*) FROM guesses", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 2, "no copy reached the guesses table");
    let setting = simple(&c, "SELECT current_setting('gatehouse.x', true)").await;
    assert_eq!(
        setting,
        Ok(vec![vec![None]]),
        "no setting holds a card number"
    );
    // Refusals are recorded as blocked, with the rule, and the statement as the server would
    // have seen it (masked).
    let export = gw.export();
    let blocked: Vec<&serde_json::Value> = export
        .iter()
        .filter(|r| r["kind"] == "statement" && r["rule"] == "builtin:masked-inference")
        .collect();
    assert!(blocked.len() >= REFUSED.len(), "{}", blocked.len());
    assert!(blocked.iter().all(|r| r["outcome"] == "blocked"));
    // Explain says the same without running anything.
    let out = gw.cli(&[
        "explain",
        "--connection",
        CONN,
        "--subject",
        "bot-1",
        "--group",
        "fraud-bots",
        "SELECT id FROM payments WHERE substr(card_number, 1, 6) = '411111'",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert!(
        text.contains("block (rule \"builtin:masked-inference\")"),
        "{text}"
    );
}

/// The server's search_path can change where the gateway cannot follow it (set_config, RESET,
/// a rolled-back SET, SET LOCAL, DISCARD): for a masked identity an unqualified name is judged
/// as every relation of that name, so a decoy the gateway might believe in changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_are_judged_whatever_the_servers_search_path() {
    let gw = gateway("last4");
    let token = gw.token("bot-path", &["fraud-bots"]);
    let attack = "SELECT id FROM payments WHERE substr(card_number, 1, 1) = '4'";
    for switch in [
        "SELECT set_config('search_path', 'public', false)",
        "RESET search_path",
        "BEGIN; SET search_path = public; ROLLBACK",
        "DISCARD ALL",
        "SET search_path TO DEFAULT",
    ] {
        let c = gw.connect(CONN, &token).await;
        // The gateway is told the decoy (unmasked) comes first...
        simple(&c, "SET search_path = decoy").await.unwrap();
        // ... then the server's path moves back to public, by a route of each kind.
        simple(&c, "BEGIN; SET search_path = decoy; COMMIT")
            .await
            .unwrap();
        let _ = simple(&c, switch).await;
        for (proto, a) in [
            ("simple", simple(&c, attack).await),
            ("extended", extended(&c, attack).await),
        ] {
            assert!(
                matches!(&a, Err((state, msg))
                    if state == "42501" && msg.contains("builtin:masked-inference")),
                "{proto} after {switch}: {}",
                text_of(&a)
            );
        }
        // In one Query string too: judged against the state the server will have.
        let a = simple(&c, &format!("SET search_path = public; {attack}")).await;
        assert!(matches!(&a, Err((s, _)) if s == "42501"), "{}", text_of(&a));
        let a = simple(&c, &format!("SET search_path = decoy; {attack}")).await;
        assert!(matches!(&a, Err((s, _)) if s == "42501"), "{}", text_of(&a));
    }
    // A qualified name is exact: the decoy is not masked, the real table is.
    let c = gw.connect(CONN, &token).await;
    let a = simple(&c, "SELECT substr(card_number, 1, 4) FROM decoy.payments").await;
    assert_eq!(a, Ok(vec![vec![Some("0000".to_owned())]]));
    let a = simple(&c, "SELECT substr(card_number, 1, 4) FROM public.payments").await;
    assert_eq!(text_of(&a), "[REDACTED]|[REDACTED]|[REDACTED]");
}

/// Values computed from a masked column come back masked whole: neither the last four digits
/// of a derivative nor whether it is NULL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn derived_values_are_masked_whole() {
    let gw = gateway("last4");
    let token = gw.token("bot-2", &["fraud-bots"]);
    let c = gw.connect(CONN, &token).await;
    for sql in [
        "SELECT translate(card_number, '0123456789', 'abcdefghij') FROM payments ORDER BY id",
        "SELECT concat_ws('-', substr(card_number, 1, 4), substr(card_number, 5, 4)) FROM payments ORDER BY id",
        "SELECT substr(card_number, 1, 12) FROM payments ORDER BY id",
        "SELECT nullif(substr(card_number, 1, 1), '4') FROM payments ORDER BY id",
        "SELECT md5(substr(card_number, 1, 1)) FROM payments ORDER BY id",
        "SELECT upper(reverse(lpad(card_number, 20, '0'))) FROM payments ORDER BY id",
        "SELECT (SELECT regexp_replace(card_number, '[0-4]', '', 'g') FROM payments p2 WHERE p2.id = p.id) FROM payments p ORDER BY id",
        "SELECT card_bigint::text || '' FROM payments ORDER BY id",
        "SELECT card_number || '' FROM payments ORDER BY id",
    ] {
        for (proto, a) in [
            ("simple", simple(&c, sql).await),
            ("extended", extended(&c, sql).await),
        ] {
            let rows = a.unwrap_or_else(|e| panic!("{proto}: {sql}: {e:?}"));
            assert_eq!(rows.len(), CARDS.len(), "{proto}: {sql}");
            for r in &rows {
                assert_eq!(r[0].as_deref(), Some("[REDACTED]"), "{proto}: {sql}");
            }
        }
    }
    for sql in [
        "SELECT ascii(substr(card_number, 1, 1)), length(card_number) FROM payments",
        "SELECT max(card_bigint), min(card_bigint) FROM payments",
    ] {
        for (proto, a) in [
            ("simple", simple(&c, sql).await),
            ("extended", extended(&c, sql).await),
        ] {
            let rows = a.unwrap_or_else(|e| panic!("{proto}: {sql}: {e:?}"));
            assert!(
                rows.iter().flatten().all(Option::is_none),
                "{proto}: {sql}: an integer derivative is NULL: {rows:?}"
            );
        }
    }
    // What the store kept of those results is what the client saw: masked whole.
    gw.wait_for_record(|r| {
        r["kind"] == "outcome"
            && r["detail"]["results"]["rows"]
                .to_string()
                .contains("[REDACTED]")
    });
    let kept: Vec<String> = gw
        .export()
        .iter()
        .filter(|r| r["kind"] == "outcome")
        .map(|r| r["detail"]["results"].to_string())
        .collect();
    assert_no_card_digits("stored results", &kept.join(" "));
    // COPY of a query: the same.
    let out = run_psql(
        &gw,
        &token,
        "COPY (SELECT id, substr(card_number, 1, 12), nullif(substr(card_number, 1, 1), '4') FROM payments ORDER BY id) TO STDOUT",
    );
    for line in out.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        assert_eq!(f[1..], ["[REDACTED]", "[REDACTED]"], "{out}");
    }
    assert_no_card_digits("COPY", &out);
    // CSV and binary COPY: NULLs of derived columns are masked too.
    let q = "SELECT id, substr(card_number, 1, 12), nullif(substr(card_number, 1, 1), '4') FROM payments ORDER BY id";
    let out = run_psql(
        &gw,
        &token,
        &format!("COPY ({q}) TO STDOUT WITH (FORMAT csv)"),
    );
    assert_eq!(out.lines().count(), 3, "{out}");
    for line in out.lines() {
        let f: Vec<&str> = line.split(',').collect();
        assert_eq!(f[1..], ["[REDACTED]", "[REDACTED]"], "{out}");
    }
    let out = run_psql(
        &gw,
        &token,
        &format!("COPY ({q}) TO STDOUT WITH (FORMAT binary)"),
    );
    // Binary text values are masked as NULL (length -1): six of them, plus the signature's
    // 0xFF and the trailer (-1 as two bytes), and no other 0xFF byte.
    assert_eq!(out.matches('\u{FFFD}').count(), 1 + 6 * 4 + 2, "{out:?}");
    assert_no_card_digits("binary COPY", &out);
}

/// The server's error texts about masked data are withheld; the SQLSTATE stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_texts_about_masked_data_are_withheld() {
    let gw = gateway("last4");
    let token = gw.token("bot-3", &["fraud-bots"]);
    let c = gw.connect(CONN, &token).await;
    for (sql, state) in [
        // Errors that depend on constants only (those that depend on a value are refused
        // before they reach the server: see `REFUSED`).
        (
            "SELECT substr(card_number, 1, -1), cvv FROM payments",
            "22011",
        ),
        (
            "SELECT split_part(card_number || cvv, ',', 0) FROM payments",
            "22023",
        ),
        (
            "INSERT INTO payments (id, card_number, cvv) VALUES (1, '4000000000000002', '000')",
            "23505",
        ),
    ] {
        for (proto, a) in [
            ("simple", simple(&c, sql).await),
            ("extended", extended(&c, sql).await),
        ] {
            let Err((got, msg)) = &a else {
                panic!("{proto}: {sql}: no error: {a:?}")
            };
            assert_eq!(got, state, "{proto}: {sql}: {msg}");
            assert!(
                msg.contains("withheld by Gatehouse"),
                "{proto}: {sql}: {msg}"
            );
            assert!(!msg.contains("123,456"), "{proto}: {sql}: {msg}");
            assert!(!msg.contains("Key (id)"), "{proto}: {sql}: {msg}");
            assert_no_card_digits(&format!("{proto}: {sql}"), msg);
        }
    }
    // Other errors keep their text.
    let a = simple(&c, "SELECT 1/0").await;
    assert!(
        matches!(&a, Err((s, m)) if s == "22012" && m.contains("division by zero")),
        "{a:?}"
    );
}

/// What a fraud bot needs still works under masking.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn masked_but_useful_queries_work() {
    let gw = gateway("last4");
    let token = gw.token("bot-4", &["fraud-bots"]);
    let c = gw.connect(CONN, &token).await;
    let ok = |a: Answer, sql: &str| a.unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    let sql = "SELECT id, card_number FROM payments WHERE right(card_number, 4) = '4444'";
    assert_eq!(
        ok(simple(&c, sql).await, sql),
        vec![vec![Some("2".into()), Some("************4444".into())]]
    );
    let sql = "SELECT id FROM payments WHERE card_number LIKE '%1117'";
    assert_eq!(ok(simple(&c, sql).await, sql), vec![vec![Some("3".into())]]);
    let sql = "SELECT right(card_number, 4) FROM payments WHERE id = 1";
    assert_eq!(
        ok(simple(&c, sql).await, sql),
        vec![vec![Some("1111".into())]]
    );
    let sql = "SELECT count(*), count(card_number), count(DISTINCT card_number) FROM payments";
    assert_eq!(
        ok(simple(&c, sql).await, sql),
        vec![vec![Some("3".into()), Some("3".into()), Some("3".into())]]
    );
    // A lookup by a parameter (the one-bit oracle) and by a literal.
    let rows = c
        .query(
            "SELECT id FROM payments WHERE card_number = $1",
            &[&"5555555555554444"],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].get::<_, i32>(0), 2);
    // A list of one value is one lookup.
    let sql = "SELECT id FROM payments WHERE card_number IN ('5555555555554444')";
    assert_eq!(ok(simple(&c, sql).await, sql), vec![vec![Some("2".into())]]);
    let sql = "SELECT id, card_number FROM payments WHERE card_number = '4111111111111111'";
    assert_eq!(
        ok(simple(&c, sql).await, sql),
        vec![vec![Some("1".into()), Some("************1111".into())]]
    );
    // Through a view that only passes the column on.
    let sql = "SELECT card_number FROM plain_cards WHERE id = 3";
    assert_eq!(
        ok(simple(&c, sql).await, sql),
        vec![vec![Some("************1117".into())]]
    );
    // pg_dump of the masked table.
    let db = conninfo(&gw);
    let dump = libpq_tool(
        "pg_dump",
        &["--no-password", "-t", "payments", "-d", &db],
        &token,
    );
    assert!(dump.contains("************4444"), "{dump}");
    assert_no_card_digits("pg_dump", &dump);
}

/// With `token`, a bot joins and groups by card without seeing one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_style_joins_and_groups() {
    let gw = gateway("token");
    let token = gw.token("bot-5", &["fraud-bots"]);
    let c = gw.connect(CONN, &token).await;
    let ok = |a: Answer, sql: &str| a.unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    let sql = "SELECT p.id, c.id, p.card_number FROM payments p JOIN cards c ON c.pan = p.card_number ORDER BY 1";
    let rows = ok(simple(&c, sql).await, sql);
    assert_eq!(rows.len(), 3);
    for r in &rows {
        assert_eq!(r[0], r[1], "joined on the card: {rows:?}");
        assert!(r[2].as_deref().unwrap().starts_with("tok_"), "{rows:?}");
    }
    let sql = "SELECT card_number, count(*) FROM payments GROUP BY card_number ORDER BY 2";
    let rows = ok(simple(&c, sql).await, sql);
    assert_eq!(rows.len(), 3);
    assert!(
        rows.iter()
            .all(|r| r[0].as_deref().unwrap().starts_with("tok_"))
    );
    assert_no_card_digits("token", &format!("{rows:?}"));
    // The same card gives the same token in both tables.
    let a = ok(
        simple(&c, "SELECT card_number FROM payments WHERE id = 1").await,
        "a",
    );
    let b = ok(simple(&c, "SELECT pan FROM cards WHERE id = 1").await, "b");
    assert_eq!(a, b);
}

fn conninfo(gw: &Gateway) -> String {
    gw.conn_str(CONN, "bot", "").replace(" password=", "")
}

fn run_psql(gw: &Gateway, token: &str, sql: &str) -> String {
    let db = conninfo(gw);
    libpq_tool("psql", &["-X", "-q", "-A", "-c", sql, "-d", &db], token)
}
