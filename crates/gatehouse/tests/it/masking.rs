//! Result masking through the gateway, with real clients against a real PostgreSQL.
//!
//! Two nets, both checked here: column rules (`[[mask]] columns`, matched by the table column
//! a value comes from, through aliases, `*`, views, cursors, prepared statements and computed
//! expressions) and the PAN content detector (`detectors = ["pan"]`, over every text the client
//! receives: any column, literals, COPY, errors, notices, notifications, echoed parameters).
//! For every path the bytes the client got, the audit export and the raw audit store are
//! checked for the seeded card numbers.

// Test code: panicking on the unexpected is the point.

use std::error::Error;
use std::process::Output;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::support::*;
use bytes::{Bytes, BytesMut};
use futures_util::TryStreamExt;
use serde_json::{Value, json};
use tokio_postgres::types::{FromSql, IsNull, ToSql, Type, to_sql_checked};
use tokio_postgres::{AsyncMessage, Client, SimpleQueryMessage};

/// The PostgreSQL database holding the seed data.
const DB: &str = "masking";
/// The gateway's connection name for it (what clients put in `dbname`).
const CONN: &str = "payments";

// ---------------------------------------------------------------------------------------------
// Seed data
// ---------------------------------------------------------------------------------------------

struct Seed {
    id: i32,
    /// `card_number` (and, as a number, `card_bigint` and `card_numeric`).
    pan: &'static str,
    cvv: &'static str,
    note: Option<&'static str>,
    /// The card number as written inside `note`, if there is one.
    note_span: Option<&'static str>,
    holder: &'static str,
}

/// Luhn-valid test cards of several brands and lengths, the last row a short non-card value.
const SEEDS: &[Seed] = &[
    Seed {
        id: 1,
        pan: "4111111111111111",
        cvv: "123",
        note: Some("paid with 4111 1111 1111 1111 yesterday"),
        note_span: Some("4111 1111 1111 1111"),
        holder: "Ada Lovelace",
    },
    Seed {
        id: 2,
        pan: "5555555555554444",
        cvv: "456",
        note: Some("card 5555-5555-5555-4444 on file"),
        note_span: Some("5555-5555-5555-4444"),
        holder: "Grace Hopper",
    },
    Seed {
        id: 3,
        pan: "378282246310005",
        cvv: "7890",
        note: Some("amex 3782-822463-10005, thanks"),
        note_span: Some("3782-822463-10005"),
        holder: "Linus",
    },
    Seed {
        id: 4,
        pan: "6011111111111117",
        cvv: "321",
        note: Some("discover:6011111111111117"),
        note_span: Some("6011111111111117"),
        holder: "Barbara",
    },
    Seed {
        id: 5,
        pan: "3530111333300000",
        cvv: "111",
        note: Some("jcb 3530 1113 3330 0000 ok"),
        note_span: Some("3530 1113 3330 0000"),
        holder: "Edsger",
    },
    Seed {
        id: 6,
        pan: "30569309025904",
        cvv: "222",
        note: Some("diners (30569309025904)"),
        note_span: Some("30569309025904"),
        holder: "Frances",
    },
    Seed {
        id: 7,
        pan: "4222222222222",
        cvv: "333",
        note: Some("no card here, order 12345 on 2024-11-22"),
        note_span: None,
        holder: "Ken",
    },
    Seed {
        id: 8,
        pan: "2223003122003222",
        cvv: "444",
        note: None,
        note_span: None,
        holder: "Margaret",
    },
    Seed {
        id: 9,
        pan: "6200000000000005",
        cvv: "555",
        note: Some("unionpay 6200000000000005"),
        note_span: Some("6200000000000005"),
        holder: "Donald",
    },
    Seed {
        id: 10,
        pan: "123",
        cvv: "999",
        note: Some("short 123"),
        note_span: None,
        holder: "Niklaus",
    },
];

/// Every seeded card number (the values no client may see in full).
const PANS: &[&str] = &[
    "4111111111111111",
    "5555555555554444",
    "378282246310005",
    "6011111111111117",
    "3530111333300000",
    "30569309025904",
    "4222222222222",
    "2223003122003222",
    "6200000000000005",
];

fn seed_sql() -> String {
    let mut rows = Vec::new();
    for (i, s) in SEEDS.iter().enumerate() {
        let note = s.note.map_or("NULL".to_owned(), |n| format!("'{n}'"));
        rows.push(format!(
            "({}, '{}', '{}', {}, {}, {}.{:02}, {note}, '{}')",
            s.id,
            s.pan,
            s.cvv,
            s.pan,
            s.pan,
            (i + 1) * 7,
            (i * 13) % 100,
            s.holder
        ));
    }
    format!(
        "CREATE TABLE public.payments (id int PRIMARY KEY, card_number text, cvv text,
             card_bigint int8, card_numeric numeric, amount numeric(10,2), note text, holder text);
         INSERT INTO public.payments VALUES {};
         CREATE VIEW public.v_cards AS SELECT id, card_number AS cn FROM payments;
         CREATE TABLE public.orders (id int, ref text);
         INSERT INTO public.orders VALUES (1, 'order for card 4111111111111111'),
             (2, 'ref 5555 5555 5555 4444'), (3, 'plain ref 42');
         CREATE TABLE public.card_registry (pan text UNIQUE);
         INSERT INTO public.card_registry VALUES ('6011111111111117');
         -- The card number is built at run time: the function body holds no PAN.
         CREATE FUNCTION public.raise_card_notice() RETURNS int LANGUAGE plpgsql AS
             $f$BEGIN RAISE NOTICE 'card on file: %', '5555' || '5555' || '5555' || '4444';
             RETURN 1; END$f$;",
        rows.join(",\n")
    )
}

/// Creates the seed database once per test binary (the cluster is shared too).
fn seeded() {
    static SEEDED: OnceLock<()> = OnceLock::new();
    SEEDED.get_or_init(|| cluster().create_database_with(DB, &seed_sql()));
}

fn mask_config(style: &str) -> String {
    format!(
        r#"
[[mask]]
connections = ["{CONN}"]
columns = ["public.payments.card_number", "public.payments.card_bigint", "public.payments.card_numeric", "*.*.cvv"]
detectors = ["pan"]
style = "{style}"
exempt_groups = ["pci-auditors"]

[[rule]]
name = "dba-may-run-do"
connections = ["{CONN}"]
groups = ["dba"]
statements = ["do"]
action = "allow"
"#
    )
}

fn builder(style: &str) -> GatewayBuilder {
    seeded();
    let mut b = Gateway::builder();
    b.databases = vec![(CONN.to_owned(), DB.to_owned())];
    b.extra(&mask_config(style))
}

fn gateway(style: &str) -> Gateway {
    builder(style).start()
}

// ---------------------------------------------------------------------------------------------
// Expected values
// ---------------------------------------------------------------------------------------------

/// `last4`: every digit but the last four replaced by `*`, everything else kept.
fn last4(v: &str) -> String {
    let n = v.chars().filter(char::is_ascii_digit).count();
    let mut seen = 0;
    v.chars()
        .map(|c| {
            if c.is_ascii_digit() {
                seen += 1;
                if seen + 4 <= n { '*' } else { c }
            } else {
                c
            }
        })
        .collect()
}

/// The number made of the last four digits (what int8/numeric card columns show in `last4`).
fn last4_number(v: &str) -> String {
    let d: String = v.chars().filter(char::is_ascii_digit).collect();
    let tail = &d[d.len().saturating_sub(4)..];
    tail.parse::<i64>().unwrap().to_string()
}

/// The note with its card number (if any) replaced by `f(span)`.
fn note_with(s: &Seed, f: impl Fn(&str) -> String) -> Option<String> {
    let note = s.note?;
    Some(match s.note_span {
        Some(span) => note.replace(span, &f(span)),
        None => note.to_owned(),
    })
}

fn note_last4(s: &Seed) -> Option<String> {
    note_with(s, last4)
}

/// `text` with every seeded card number (and every way the notes write them) in `last4`.
fn known_last4(text: &str) -> String {
    let mut forms: Vec<&str> = PANS.to_vec();
    forms.extend(SEEDS.iter().filter_map(|s| s.note_span));
    forms.extend(["5555 5555 5555 4444"]);
    forms.sort_by_key(|f| std::cmp::Reverse(f.len()));
    let mut out = text.to_owned();
    for f in forms {
        out = out.replace(f, &last4(f));
    }
    out
}

fn seed(id: i32) -> &'static Seed {
    SEEDS.iter().find(|s| s.id == id).unwrap()
}

// ---------------------------------------------------------------------------------------------
// Leak checks
// ---------------------------------------------------------------------------------------------

fn strip_separators(b: &[u8]) -> Vec<u8> {
    b.iter()
        .copied()
        .filter(|c| *c != b' ' && *c != b'-')
        .collect()
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// The base-10000 digit words of a card number in PostgreSQL's binary numeric format.
fn numeric_words(pan: &str) -> Vec<u8> {
    let pad = (4 - pan.len() % 4) % 4;
    let padded = format!("{}{pan}", "0".repeat(pad));
    let mut words: Vec<i16> = padded
        .as_bytes()
        .chunks(4)
        .map(|c| std::str::from_utf8(c).unwrap().parse().unwrap())
        .collect();
    while words.last() == Some(&0) {
        words.pop();
    }
    words.iter().flat_map(|w| w.to_be_bytes()).collect()
}

/// Asserts that `bytes` (what a client got, or what the gateway stored) holds no seeded card
/// number: not as text (spaces and dashes stripped), not as a binary int8, not as the digit
/// words of a binary numeric.
#[track_caller]
fn assert_no_pan(what: &str, bytes: &[u8]) {
    let stripped = strip_separators(bytes);
    for pan in PANS {
        assert!(
            !contains(&stripped, pan.as_bytes()),
            "{what}: the card number {pan} reached it in full:\n{}",
            String::from_utf8_lossy(bytes)
        );
        let n: i64 = pan.parse().unwrap();
        assert!(
            !contains(bytes, &n.to_be_bytes()),
            "{what}: the card number {pan} reached it as a binary int8"
        );
        let words = numeric_words(pan);
        assert!(
            words.len() < 6 || !contains(bytes, &words),
            "{what}: the card number {pan} reached it as a binary numeric"
        );
    }
}

fn rows_bytes(rows: &[Vec<Option<String>>]) -> Vec<u8> {
    let mut out = Vec::new();
    for r in rows {
        for v in r {
            out.extend_from_slice(v.as_deref().unwrap_or("\\N").as_bytes());
            out.push(b'\t');
        }
        out.push(b'\n');
    }
    out
}

fn wire_bytes(msgs: &[WireMsg]) -> Vec<u8> {
    msgs.iter().flat_map(|(_, b)| b.iter().copied()).collect()
}

/// The export (as text) and the raw bytes of the SQLite store hold no seeded card number;
/// nor does anything else the gateway wrote under its directory (log, data dir).
fn assert_audit_clean(gw: &Gateway) {
    let out = gw.cli(&["audit", "export", "--format", "jsonl"]);
    assert!(out.status.success(), "export: {}", text(&out));
    assert!(!out.stdout.is_empty(), "empty export");
    assert_no_pan("`gatehouse audit export`", &out.stdout);
    let files = gw.store_file_bytes();
    assert!(
        files.iter().any(|(p, _)| p.ends_with("gatehouse.db")),
        "no audit store in {}",
        gw.data_dir().display()
    );
    for (path, bytes) in &files {
        assert_no_pan(&format!("audit store {}", path.display()), bytes);
    }
    for (path, bytes) in all_files(gw.dir.path()) {
        assert_no_pan(&format!("gateway file {}", path.display()), &bytes);
    }
}

fn all_files(dir: &std::path::Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(all_files(&p));
        } else if let Ok(b) = std::fs::read(&p) {
            out.push((p, b));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Client helpers
// ---------------------------------------------------------------------------------------------

/// Any column as its raw wire bytes (`None`: SQL NULL), whatever its type.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Raw(Option<Vec<u8>>);

impl<'a> FromSql<'a> for Raw {
    fn from_sql(_ty: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn Error + Sync + Send>> {
        Ok(Raw(Some(raw.to_vec())))
    }

    fn from_sql_null(_ty: &Type) -> Result<Self, Box<dyn Error + Sync + Send>> {
        Ok(Raw(None))
    }

    fn accepts(_ty: &Type) -> bool {
        true
    }
}

/// A bind parameter sent in text format (tokio-postgres sends `&str` in binary).
#[derive(Debug)]
struct TextParam<'a>(&'a str);

impl ToSql for TextParam<'_> {
    fn to_sql(
        &self,
        _ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        out.extend_from_slice(self.0.as_bytes());
        Ok(IsNull::No)
    }

    fn accepts(_ty: &Type) -> bool {
        true
    }

    fn encode_format(&self, _ty: &Type) -> tokio_postgres::types::Format {
        tokio_postgres::types::Format::Text
    }

    to_sql_checked!();
}

fn simple_rows(msgs: &[SimpleQueryMessage]) -> Vec<Vec<Option<String>>> {
    msgs.iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => {
                Some((0..r.len()).map(|i| r.get(i).map(str::to_owned)).collect())
            }
            _ => None,
        })
        .collect()
}

/// Runs `sql` with the simple protocol; panics (with the gateway log) on error.
async fn simple(gw: &Gateway, c: &Client, sql: &str) -> Vec<Vec<Option<String>>> {
    match c.simple_query(sql).await {
        Ok(m) => {
            let rows = simple_rows(&m);
            assert_no_pan(&format!("simple query {sql:?}"), &rows_bytes(&rows));
            rows
        }
        Err(e) => panic!("{sql}: {e:?}\nlog tail: {}", log_tail(gw)),
    }
}

/// Runs `sql` with the extended protocol (binary results); every column as raw bytes.
async fn binary(gw: &Gateway, c: &Client, sql: &str) -> Vec<Vec<Raw>> {
    match c.query(sql, &[]).await {
        Ok(rows) => raw_rows(sql, &rows),
        Err(e) => panic!("{sql}: {e:?}\nlog tail: {}", log_tail(gw)),
    }
}

fn raw_rows(what: &str, rows: &[tokio_postgres::Row]) -> Vec<Vec<Raw>> {
    let out: Vec<Vec<Raw>> = rows
        .iter()
        .map(|r| (0..r.len()).map(|i| r.get::<_, Raw>(i)).collect())
        .collect();
    let bytes: Vec<u8> = out
        .iter()
        .flatten()
        .flat_map(|r| r.0.clone().unwrap_or_default())
        .collect();
    assert_no_pan(&format!("extended query {what:?}"), &bytes);
    out
}

fn log_tail(gw: &Gateway) -> String {
    let log = gw.log_text();
    let start = log.len().saturating_sub(3000);
    log.get(start..).unwrap_or(&log).to_owned()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn s(v: Option<&str>) -> Option<String> {
    v.map(str::to_owned)
}

fn txt(r: &Raw) -> Option<String> {
    r.0.as_ref()
        .map(|b| String::from_utf8_lossy(b).into_owned())
}

fn int8(r: &Raw) -> Option<i64> {
    r.0.as_ref()
        .map(|b| i64::from_be_bytes(b.as_slice().try_into().expect("8 bytes of int8")))
}

/// PostgreSQL's binary numeric as its text form.
fn numeric_text(b: &[u8]) -> String {
    let word = |i: usize| i16::from_be_bytes([b[i], b[i + 1]]);
    let ndigits = word(0) as usize;
    let weight = i32::from(word(2));
    let sign = u16::from_be_bytes([b[4], b[5]]);
    let dscale = word(6) as usize;
    assert_eq!(
        b.len(),
        8 + 2 * ndigits,
        "numeric of {ndigits} digits: {b:?}"
    );
    let digits: Vec<i16> = (0..ndigits).map(|i| word(8 + 2 * i)).collect();
    if sign == 0xC000 {
        return "NaN".into();
    }
    let mut out = String::new();
    if sign == 0x4000 {
        out.push('-');
    }
    if weight < 0 {
        out.push('0');
    } else {
        for i in 0..=weight as usize {
            let d = digits.get(i).copied().unwrap_or(0);
            if i == 0 {
                out.push_str(&d.to_string());
            } else {
                out.push_str(&format!("{d:04}"));
            }
        }
    }
    if dscale > 0 {
        let mut frac = String::new();
        let mut i = weight + 1;
        while frac.len() < dscale {
            let d = if i < 0 {
                0
            } else {
                digits.get(i as usize).copied().unwrap_or(0)
            };
            frac.push_str(&format!("{d:04}"));
            i += 1;
        }
        frac.truncate(dscale);
        out.push('.');
        out.push_str(&frac);
    }
    out
}

fn numeric(r: &Raw) -> Option<String> {
    r.0.as_deref().map(numeric_text)
}

/// The statement record with exactly this text, and its outcome (waits for both).
fn outcome_for(gw: &Gateway, sql: &str) -> Value {
    let st = gw.wait_for_record(|r| r["kind"] == "statement" && r["statement"] == sql);
    gw.wait_for_record(|r| r["kind"] == "outcome" && r["statement_seq"] == st["seq"])
}

/// Parses a binary COPY stream into rows of fields.
fn parse_binary_copy(data: &[u8]) -> Vec<Vec<Option<Vec<u8>>>> {
    assert!(
        data.starts_with(b"PGCOPY\n\xff\r\n\0"),
        "not a binary COPY stream: {data:?}"
    );
    let mut at = 11 + 4;
    let ext = u32::from_be_bytes(data[at..at + 4].try_into().unwrap()) as usize;
    at += 4 + ext;
    let mut rows = Vec::new();
    loop {
        let n = i16::from_be_bytes([data[at], data[at + 1]]);
        at += 2;
        if n == -1 {
            break;
        }
        let mut row = Vec::new();
        for _ in 0..n {
            let len = i32::from_be_bytes(data[at..at + 4].try_into().unwrap());
            at += 4;
            if len < 0 {
                row.push(None);
            } else {
                row.push(Some(data[at..at + len as usize].to_vec()));
                at += len as usize;
            }
        }
        rows.push(row);
    }
    assert_eq!(at, data.len(), "trailing bytes after the COPY trailer");
    rows
}

async fn copy_out(gw: &Gateway, c: &Client, sql: &str) -> Vec<u8> {
    let stream = c
        .copy_out(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}\nlog tail: {}", log_tail(gw)));
    let chunks: Vec<Bytes> = stream
        .try_collect()
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}\nlog tail: {}", log_tail(gw)));
    let out = chunks.concat();
    assert_no_pan(&format!("COPY {sql:?}"), &out);
    out
}

/// The next asynchronous message matching `pick`, within 10 s.
async fn next_message<T>(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<AsyncMessage>,
    pick: impl Fn(AsyncMessage) -> Option<T>,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let m = tokio::time::timeout(left, rx.recv())
            .await
            .expect("asynchronous message in time")
            .expect("connection open");
        if let Some(t) = pick(m) {
            return t;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 1. Column rules, last4, every access path
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last4_column_rules_on_every_access_path() {
    let gw = gateway("last4");
    let token = gw.token("bot-1", &["fraud-bots"]);
    let c = gw.connect(CONN, &token).await;
    let direct = cluster().direct(DB).await;

    let cards: Vec<Option<String>> = SEEDS.iter().map(|s| Some(last4(s.pan))).collect();
    let col = |rows: &[Vec<Option<String>>], i: usize| -> Vec<Option<String>> {
        rows.iter().map(|r| r[i].clone()).collect()
    };

    // Plain select, alias, p.*, the view, a non-card value ('123' keeps its ≤4 digits).
    let rows = simple(&gw, &c, "SELECT card_number FROM payments ORDER BY id").await;
    assert_eq!(col(&rows, 0), cards, "plain select (simple protocol)");
    assert_eq!(
        rows[9][0].as_deref(),
        Some("123"),
        "non-card value under last4"
    );
    let rows = simple(&gw, &c, "SELECT card_number AS x FROM payments ORDER BY id").await;
    assert_eq!(col(&rows, 0), cards, "alias (simple protocol)");
    let rows = simple(&gw, &c, "SELECT cn FROM v_cards ORDER BY id").await;
    assert_eq!(
        col(&rows, 0),
        cards,
        "view column v_cards.cn (simple protocol)"
    );
    let rows = simple(&gw, &c, "SELECT p.* FROM payments p ORDER BY id").await;
    let direct_rows = simple_rows(
        &direct
            .simple_query("SELECT p.* FROM payments p ORDER BY id")
            .await
            .unwrap(),
    );
    for (i, s) in SEEDS.iter().enumerate() {
        let d = &direct_rows[i];
        assert_eq!(
            rows[i],
            vec![
                d[0].clone(),
                Some(last4(s.pan)),
                Some("[REDACTED]".to_owned()),
                Some(last4_number(s.pan)),
                Some(last4_number(s.pan)),
                d[5].clone(),
                note_last4(s),
                d[7].clone(),
            ],
            "p.* row {} (simple protocol); direct: {d:?}",
            s.id
        );
    }

    // Cursor in a transaction, simple protocol.
    let rows = simple(
        &gw,
        &c,
        "BEGIN; DECLARE cur CURSOR FOR SELECT id, card_number FROM payments ORDER BY id; \
         FETCH ALL FROM cur; COMMIT",
    )
    .await;
    assert_eq!(
        col(&rows, 1),
        cards,
        "DECLARE CURSOR + FETCH (simple protocol)"
    );

    // PREPARE / EXECUTE.
    let rows = simple(
        &gw,
        &c,
        "PREPARE q(int) AS SELECT card_number, card_bigint FROM payments WHERE id = $1; EXECUTE q(2)",
    )
    .await;
    assert_eq!(
        rows,
        vec![vec![s(Some("************4444")), s(Some("4444"))]],
        "PREPARE/EXECUTE"
    );
    let rows = simple(&gw, &c, "EXECUTE q(3)").await;
    assert_eq!(
        rows,
        vec![vec![s(Some("***********0005")), s(Some("5"))]],
        "EXECUTE again"
    );

    // int8 / numeric card columns in text: the number made of the last four digits.
    let rows = simple(
        &gw,
        &c,
        "SELECT card_bigint, card_numeric FROM payments ORDER BY id",
    )
    .await;
    for (i, sd) in SEEDS.iter().enumerate() {
        assert_eq!(
            rows[i],
            vec![Some(last4_number(sd.pan)), Some(last4_number(sd.pan))],
            "int8/numeric in text, row {}",
            sd.id
        );
    }

    // Extended protocol, binary results (tokio-postgres).
    let rows = c
        .query(
            "SELECT id, card_number, card_bigint, cvv, card_number AS x FROM payments ORDER BY id",
            &[],
        )
        .await
        .unwrap();
    raw_rows("binary card columns", &rows);
    for (i, sd) in SEEDS.iter().enumerate() {
        assert_eq!(rows[i].get::<_, i32>(0), sd.id);
        assert_eq!(
            rows[i].get::<_, String>(1),
            last4(sd.pan),
            "binary card_number"
        );
        assert_eq!(
            rows[i].get::<_, i64>(2),
            last4_number(sd.pan).parse::<i64>().unwrap(),
            "binary card_bigint, row {}",
            sd.id
        );
        assert_eq!(rows[i].get::<_, String>(3), "[REDACTED]", "binary cvv");
        assert_eq!(rows[i].get::<_, String>(4), last4(sd.pan), "binary alias");
    }
    let raw = binary(&gw, &c, "SELECT card_numeric FROM payments ORDER BY id").await;
    for (i, sd) in SEEDS.iter().enumerate() {
        assert_eq!(
            numeric(&raw[i][0]),
            Some(last4_number(sd.pan)),
            "binary card_numeric, row {}",
            sd.id
        );
    }
    let raw = binary(&gw, &c, "SELECT p.* FROM payments p WHERE id = 1").await;
    assert_eq!(txt(&raw[0][1]), Some(last4(SEEDS[0].pan)), "binary p.*");
    assert_eq!(txt(&raw[0][2]), s(Some("[REDACTED]")), "binary p.* cvv");
    assert_eq!(int8(&raw[0][3]), Some(1111), "binary p.* card_bigint");
    assert_eq!(
        numeric(&raw[0][4]),
        s(Some("1111")),
        "binary p.* card_numeric"
    );
    let raw = binary(&gw, &c, "SELECT cn FROM v_cards ORDER BY id").await;
    assert_eq!(
        raw.iter().map(|r| txt(&r[0])).collect::<Vec<_>>(),
        cards,
        "binary view"
    );

    // A prepared statement used twice, with a parameter.
    let st = c
        .prepare("SELECT card_number, card_bigint FROM payments WHERE id = $1")
        .await
        .unwrap();
    for id in [4, 5, 4] {
        let rows = c.query(&st, &[&id]).await.unwrap();
        raw_rows("prepared statement", &rows);
        let sd = seed(id);
        assert_eq!(rows[0].get::<_, String>(0), last4(sd.pan), "prepared {id}");
        assert_eq!(
            rows[0].get::<_, i64>(1).to_string(),
            last4_number(sd.pan),
            "prepared {id}"
        );
    }

    // Cursor, extended protocol.
    let mut c2 = gw.connect(CONN, &token).await;
    let tx = c2.transaction().await.unwrap();
    tx.batch_execute(
        "DECLARE cur2 CURSOR FOR SELECT id, card_number, card_bigint FROM payments ORDER BY id",
    )
    .await
    .unwrap();
    let rows = tx.query("FETCH ALL FROM cur2", &[]).await.unwrap();
    raw_rows("FETCH (extended)", &rows);
    assert_eq!(
        rows.iter()
            .map(|r| Some(r.get::<_, String>(1)))
            .collect::<Vec<_>>(),
        cards,
        "FETCH (extended, binary)"
    );
    assert_eq!(rows[0].get::<_, i64>(2), 1111, "FETCH int8 (binary)");
    tx.commit().await.unwrap();

    // The raw wire: extended protocol with text and binary results, and without Describe.
    let mut w = WireClient::connect(&gw, CONN, &token).await;
    let sql = "SELECT id, card_number, cvv, card_bigint, card_numeric FROM payments ORDER BY id";
    let msgs = w.extended(sql, &[], 0, true).await;
    assert_no_pan("wire extended/text", &wire_bytes(&msgs));
    let rows = wire_data_rows(&msgs);
    assert_eq!(rows.len(), SEEDS.len(), "{:?}", wire_error(&msgs));
    for (i, sd) in SEEDS.iter().enumerate() {
        let got: Vec<Option<String>> = rows[i]
            .iter()
            .map(|v| v.as_ref().map(|b| String::from_utf8_lossy(b).into_owned()))
            .collect();
        assert_eq!(
            got,
            vec![
                Some(sd.id.to_string()),
                Some(last4(sd.pan)),
                Some("[REDACTED]".to_owned()),
                Some(last4_number(sd.pan)),
                Some(last4_number(sd.pan)),
            ],
            "extended protocol, text format, row {}",
            sd.id
        );
    }
    let msgs = w.extended(sql, &[], 1, true).await;
    assert_no_pan("wire extended/binary", &wire_bytes(&msgs));
    let rows = wire_data_rows(&msgs);
    assert_eq!(rows.len(), SEEDS.len(), "{:?}", wire_error(&msgs));
    for (i, sd) in SEEDS.iter().enumerate() {
        let r = &rows[i];
        let n: i64 = last4_number(sd.pan).parse().unwrap();
        assert_eq!(
            r[1].as_deref(),
            Some(last4(sd.pan).as_bytes()),
            "wire binary text"
        );
        assert_eq!(r[2].as_deref(), Some(&b"[REDACTED]"[..]), "wire binary cvv");
        assert_eq!(
            r[3].as_deref(),
            Some(&n.to_be_bytes()[..]),
            "wire binary int8"
        );
        assert_eq!(
            r[4].as_deref().map(numeric_text),
            Some(n.to_string()),
            "wire binary numeric"
        );
    }
    // A client that never asks for a description still gets masked values.
    let msgs = w
        .extended(
            "SELECT card_number, card_bigint FROM payments ORDER BY id",
            &[],
            0,
            false,
        )
        .await;
    assert_no_pan("wire extended without Describe", &wire_bytes(&msgs));
    let rows = wire_data_rows(&msgs);
    assert_eq!(rows.len(), SEEDS.len(), "{:?}", wire_error(&msgs));
    assert_eq!(rows[0][0].as_deref(), Some(&b"************1111"[..]));
    assert_eq!(rows[0][1].as_deref(), Some(&b"1111"[..]));
    let msgs = w
        .simple("SELECT card_number, cvv FROM payments WHERE id = 1")
        .await;
    assert_no_pan("wire simple", &wire_bytes(&msgs));
    assert_eq!(
        wire_data_rows(&msgs),
        vec![vec![
            Some(b"************1111".to_vec()),
            Some(b"[REDACTED]".to_vec())
        ]]
    );

    // Non-sensitive values are byte-identical to a direct query (text and binary).
    for sql in [
        "SELECT id, amount, holder FROM payments ORDER BY id",
        "SELECT note FROM payments WHERE id IN (7, 8, 10) ORDER BY id",
        "SELECT id, holder, amount, card_number FROM payments ORDER BY id",
    ] {
        let via = simple(&gw, &c, sql).await;
        let dir = simple_rows(&direct.simple_query(sql).await.unwrap());
        let keep = |rows: &[Vec<Option<String>>]| -> Vec<Vec<Option<String>>> {
            rows.iter()
                .map(|r| r.iter().take(3).cloned().collect())
                .collect()
        };
        assert_eq!(keep(&via), keep(&dir), "{sql} (text)");
        let via = binary(&gw, &c, sql).await;
        let dir: Vec<Vec<Raw>> = direct
            .query(sql, &[])
            .await
            .unwrap()
            .iter()
            .map(|r| (0..r.len()).map(|i| r.get::<_, Raw>(i)).collect())
            .collect();
        let keep = |rows: &[Vec<Raw>]| -> Vec<Vec<Raw>> {
            rows.iter()
                .map(|r| r.iter().take(3).cloned().collect())
                .collect()
        };
        assert_eq!(keep(&via), keep(&dir), "{sql} (binary)");
    }

    // Counts per result column and reason on the outcome record.
    let counted = "SELECT card_number, cvv, note FROM payments WHERE id <= 3 ORDER BY id";
    let rows = simple(&gw, &c, counted).await;
    assert_eq!(
        rows,
        SEEDS[..3]
            .iter()
            .map(|sd| vec![Some(last4(sd.pan)), s(Some("[REDACTED]")), note_last4(sd)])
            .collect::<Vec<_>>()
    );
    let o = outcome_for(&gw, counted);
    assert_eq!(
        o["detail"]["masked"],
        json!({"card_number": {"column": 3}, "cvv": {"verification_code": 3}, "note": {"pan": 3}}),
        "outcome: {o}"
    );
    assert!(
        o["detail"].get("unmasked_for").is_none_or(Value::is_null),
        "a masked session is not unmasked: {o}"
    );
    // Nothing masked → no counts.
    let plain = "SELECT id, holder FROM payments WHERE id = 1";
    simple(&gw, &c, plain).await;
    let o = outcome_for(&gw, plain);
    assert!(
        o["detail"]
            .get("masked")
            .is_none_or(|m| m.is_null() || m.as_object().is_some_and(|m| m.is_empty())),
        "nothing was masked: {o}"
    );

    // The gateway keeps serving; nothing of it reached the audit trail.
    assert_eq!(simple(&gw, &c, "SELECT 1").await, vec![vec![s(Some("1"))]]);
    drop((c, c2, w));
    assert_audit_clean(&gw);
}

// ---------------------------------------------------------------------------------------------
// 2. Lineage: computed values are masked whole; aggregates that reveal nothing are not
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last4_lineage_masks_computed_values_whole() {
    let gw = gateway("last4");
    let token = gw.token("bot-2", &["fraud-bots"]);
    let c = gw.connect(CONN, &token).await;
    let direct = cluster().direct(DB).await;

    // Each of these computes a value from card_number: a derivative is not the card number,
    // so it is masked whole (the last four digits of a derivative would reveal others).
    let computed = [
        "SELECT substr(card_number, 5, 8) AS v FROM payments WHERE id = 1",
        "SELECT card_number || '' AS v FROM payments WHERE id = 1",
        "SELECT reverse(card_number) AS v FROM payments WHERE id = 1",
        "SELECT upper(card_number) AS v FROM payments WHERE id = 2",
        "SELECT lower(card_number) AS v FROM payments WHERE id = 3",
        "SELECT concat_ws(' ', card_number) AS v FROM payments WHERE id = 4",
        "SELECT concat('card:', card_number) AS v FROM payments WHERE id = 5",
        "SELECT left(card_number, 8) AS v FROM payments WHERE id = 1",
        "SELECT coalesce(card_number, 'none') AS v FROM payments WHERE id = 6",
        "SELECT CASE WHEN id > 0 THEN card_number END AS v FROM payments WHERE id = 9",
        "SELECT json_agg(card_number ORDER BY id) AS v FROM payments WHERE id <= 3",
        "SELECT string_agg(card_number, ',' ORDER BY id) AS v FROM payments WHERE id <= 3",
        "SELECT array_agg(card_number ORDER BY id) AS v FROM payments WHERE id <= 3",
        "WITH c AS (SELECT card_number || '' AS x FROM payments WHERE id = 4) SELECT x AS v FROM c",
    ];
    // These pass the card number itself on: last4.
    let as_is = [
        "SELECT x AS v FROM (SELECT card_number AS x FROM payments WHERE id = 1) s",
        "SELECT (SELECT card_number FROM payments WHERE id = 2) AS v",
        "SELECT card_number AS v FROM payments WHERE id = 1 UNION ALL SELECT holder FROM payments WHERE id = 2",
    ];
    // Every mismatch is collected, so one report shows them all.
    let mut bad: Vec<String> = Vec::new();
    // A whole row also reads `cvv`, a verification code: redacted whatever the style.
    for sql in [
        "SELECT row_to_json(p) AS v FROM payments p WHERE id = 1",
        "SELECT p::text AS v FROM payments p WHERE id = 2",
    ] {
        let via = simple(&gw, &c, sql).await;
        // A json value stays valid JSON: the marker becomes a JSON string.
        let marker = if sql.contains("row_to_json") {
            "\"[REDACTED]\""
        } else {
            "[REDACTED]"
        };
        let expected = vec![vec![s(Some(marker))]];
        if via != expected {
            bad.push(format!(
                "{sql} (text)\n    got:      {via:?}\n    expected: {expected:?}"
            ));
        }
    }
    for sql in computed {
        let via = simple(&gw, &c, sql).await;
        let marker = if sql.contains("json_agg") {
            "\"[REDACTED]\""
        } else {
            "[REDACTED]"
        };
        let expected = vec![vec![s(Some(marker))]];
        if via != expected {
            bad.push(format!(
                "{sql} (text)\n    got:      {via:?}\n    expected: {expected:?}"
            ));
        }
    }
    for sql in as_is {
        let via = simple(&gw, &c, sql).await;
        let dir = simple_rows(&direct.simple_query(sql).await.unwrap());
        let expected: Vec<Vec<Option<String>>> = dir
            .iter()
            .map(|r| r.iter().map(|v| v.as_deref().map(last4)).collect())
            .collect();
        assert!(!dir.is_empty(), "{sql}: no rows directly");
        if via != expected {
            bad.push(format!(
                "{sql} (text)\n    got:      {via:?}\n    expected: {expected:?}"
            ));
        }
    }
    // The spec's example, spelled out.
    let rows = simple(
        &gw,
        &c,
        "SELECT substr(card_number, 5, 8) AS part FROM payments WHERE id = 1",
    )
    .await;
    assert_eq!(rows, vec![vec![s(Some("[REDACTED]"))]]);
    let o = outcome_for(
        &gw,
        "SELECT substr(card_number, 5, 8) AS part FROM payments WHERE id = 1",
    );
    assert_eq!(
        o["detail"]["masked"],
        json!({"part": {"column": 1}}),
        "lineage counts as \"column\": {o}"
    );

    // A cast that can fail is refused (whether it fails would tell a bit); an integer
    // derivative that cannot fail is NULL, never part of the number.
    let refused = c
        .simple_query("SELECT card_number::bigint AS v FROM payments WHERE id = 1")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&refused).as_deref(), Some("42501"), "{refused}");
    let rows = simple(
        &gw,
        &c,
        "SELECT length(card_number) AS v FROM payments WHERE id = 1",
    )
    .await;
    assert_eq!(rows, vec![vec![None]], "length(card_number) (text)");
    let rows = c
        .query(
            "SELECT length(card_number) AS v FROM payments WHERE id = 1",
            &[],
        )
        .await
        .unwrap();
    raw_rows("length(card_number)", &rows);
    assert_eq!(
        rows[0].get::<_, Option<i32>>(0),
        None,
        "length(card_number) (binary)"
    );

    // The same expressions with binary results.
    for sql in [
        "SELECT upper(card_number) AS v FROM payments WHERE id = 1",
        "SELECT substr(card_number, 5, 8) AS v FROM payments WHERE id = 1",
        "SELECT json_agg(card_number ORDER BY id) AS v FROM payments WHERE id <= 3",
        "SELECT string_agg(card_number, ',' ORDER BY id) AS v FROM payments WHERE id <= 3",
        "SELECT x AS v FROM (SELECT card_number AS x FROM payments WHERE id = 1) s",
    ] {
        let via = binary(&gw, &c, sql).await;
        let dir = direct.query(sql, &[]).await.unwrap();
        let d = txt(&dir[0].get::<_, Raw>(0)).unwrap();
        let got = txt(&via[0][0]);
        let want = if sql.starts_with("SELECT x ") {
            last4(&d)
        } else if sql.contains("json_agg") {
            "\"[REDACTED]\"".to_owned()
        } else {
            "[REDACTED]".to_owned()
        };
        if got.as_deref() != Some(want.as_str()) {
            bad.push(format!(
                "{sql} (binary)\n    got:      {got:?}\n    expected: {want:?}"
            ));
        }
    }
    // Arrays and records in binary: whatever their layout, no card number in the bytes.
    binary(
        &gw,
        &c,
        "SELECT array_agg(card_number ORDER BY id) FROM payments",
    )
    .await;
    binary(&gw, &c, "SELECT json_agg(p) FROM payments p").await;

    // Left alone: byte-identical to a direct query, in text and in binary.
    for sql in [
        "SELECT count(card_number) FROM payments",
        "SELECT count(DISTINCT card_number) FROM payments",
        "SELECT id, amount, holder FROM payments ORDER BY id",
    ] {
        let via = simple(&gw, &c, sql).await;
        let dir = simple_rows(&direct.simple_query(sql).await.unwrap());
        if via != dir {
            bad.push(format!(
                "{sql} (text)\n    got:      {via:?}\n    expected: {dir:?}"
            ));
        }
        let via = binary(&gw, &c, sql).await;
        let dir: Vec<Vec<Raw>> = direct
            .query(sql, &[])
            .await
            .unwrap()
            .iter()
            .map(|r| (0..r.len()).map(|i| r.get::<_, Raw>(i)).collect())
            .collect();
        if via != dir {
            bad.push(format!(
                "{sql} (binary)\n    got:      {via:?}\n    expected: {dir:?}"
            ));
        }
    }
    assert!(
        bad.is_empty(),
        "{} lineage mismatches:\n{}",
        bad.len(),
        bad.join("\n")
    );

    assert_eq!(simple(&gw, &c, "SELECT 1").await, vec![vec![s(Some("1"))]]);
    drop(c);
    assert_audit_clean(&gw);
}

// ---------------------------------------------------------------------------------------------
// 3. The PAN detector over every text sent to the client
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pan_detector_covers_every_text_sent_to_the_client() {
    let gw = gateway("last4");
    let token = gw.token("dba-3", &["dba"]);
    let c = gw.connect(CONN, &token).await;
    let direct = cluster().direct(DB).await;

    // Any column: free-text notes, a table no rule names, a literal.
    let rows = simple(&gw, &c, "SELECT note FROM payments ORDER BY id").await;
    assert_eq!(
        rows,
        SEEDS
            .iter()
            .map(|sd| vec![note_last4(sd)])
            .collect::<Vec<_>>(),
        "notes (simple)"
    );
    let rows = c
        .query("SELECT note FROM payments ORDER BY id", &[])
        .await
        .unwrap();
    raw_rows("notes (binary)", &rows);
    assert_eq!(
        rows.iter()
            .map(|r| r.get::<_, Option<String>>(0))
            .collect::<Vec<_>>(),
        SEEDS.iter().map(note_last4).collect::<Vec<_>>(),
        "notes (binary)"
    );
    let expected_refs = vec![
        vec![s(Some("order for card ************1111"))],
        vec![s(Some("ref **** **** **** 4444"))],
        vec![s(Some("plain ref 42"))],
    ];
    let rows = simple(&gw, &c, "SELECT ref FROM orders ORDER BY id").await;
    assert_eq!(rows, expected_refs, "orders.ref (simple)");
    let raw = binary(&gw, &c, "SELECT ref FROM orders ORDER BY id").await;
    assert_eq!(
        raw.iter().map(|r| vec![txt(&r[0])]).collect::<Vec<_>>(),
        expected_refs,
        "orders.ref (binary)"
    );
    let lit = "SELECT '4111111111111111' AS lit";
    let rows = simple(&gw, &c, lit).await;
    assert_eq!(rows, vec![vec![s(Some("************1111"))]], "literal");
    let o = outcome_for(&gw, "SELECT '************1111' AS lit");
    assert_eq!(
        o["detail"]["masked"],
        json!({"lit": {"pan": 1}}),
        "detector counts: {o}"
    );
    let raw = binary(&gw, &c, "SELECT 'x 5555 5555 5555 4444 y'::text AS lit").await;
    assert_eq!(txt(&raw[0][0]), s(Some("x **** **** **** 4444 y")));

    // A card number given as a bind parameter and echoed back (binary and text parameter).
    let rows = c
        .query("SELECT $1::text AS echo", &[&"4111111111111111"])
        .await
        .unwrap();
    raw_rows("echoed binary parameter", &rows);
    assert_eq!(
        rows[0].get::<_, String>(0),
        "************1111",
        "echo (binary param)"
    );
    let rows = c
        .query(
            "SELECT $1::text AS echo",
            &[&TextParam("card 5555-5555-5555-4444")],
        )
        .await
        .unwrap();
    raw_rows("echoed text parameter", &rows);
    assert_eq!(
        rows[0].get::<_, String>(0),
        "card ****-****-****-4444",
        "echo (text param)"
    );
    let mut w = WireClient::connect(&gw, CONN, &token).await;
    let msgs = w
        .extended("SELECT $1::text AS echo", &["4111111111111111"], 0, true)
        .await;
    assert_no_pan("wire echo", &wire_bytes(&msgs));
    assert_eq!(
        wire_data_rows(&msgs),
        vec![vec![Some(b"************1111".to_vec())]],
        "echo (wire, text results)"
    );

    // COPY TO STDOUT: text, CSV and binary.
    let got = copy_out(
        &gw,
        &c,
        "COPY (SELECT id, card_number, note FROM payments ORDER BY id) TO STDOUT",
    )
    .await;
    let expected: String = SEEDS
        .iter()
        .map(|sd| {
            format!(
                "{}\t{}\t{}\n",
                sd.id,
                last4(sd.pan),
                note_last4(sd).unwrap_or_else(|| "\\N".into())
            )
        })
        .collect();
    assert_eq!(String::from_utf8_lossy(&got), expected, "COPY (query) text");

    let sql = "COPY (SELECT id, card_number, note FROM payments ORDER BY id) TO STDOUT WITH (FORMAT csv, HEADER)";
    let got = copy_out(&gw, &c, sql).await;
    let dir: Vec<Bytes> = direct
        .copy_out(sql)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let dir = String::from_utf8(dir.concat()).unwrap();
    assert_eq!(String::from_utf8_lossy(&got), known_last4(&dir), "COPY CSV");

    // A whole table, as pg_dump copies it: column rules by column, detector on the rest.
    let got = copy_out(&gw, &c, "COPY payments TO STDOUT").await;
    let dir: Vec<Bytes> = direct
        .copy_out("COPY payments TO STDOUT")
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let dir = String::from_utf8(dir.concat()).unwrap();
    let expected: String = dir
        .lines()
        .zip(SEEDS)
        .map(|(line, sd)| {
            let f: Vec<&str> = line.split('\t').collect();
            format!(
                "{}\t{}\t[REDACTED]\t{}\t{}\t{}\t{}\t{}\n",
                f[0],
                last4(sd.pan),
                last4_number(sd.pan),
                last4_number(sd.pan),
                f[5],
                note_last4(sd).unwrap_or_else(|| "\\N".into()),
                f[7]
            )
        })
        .collect();
    assert_eq!(
        String::from_utf8_lossy(&got),
        expected,
        "COPY payments (text)"
    );

    let got = copy_out(&gw, &c, "COPY payments TO STDOUT (FORMAT binary)").await;
    let dir: Vec<Bytes> = direct
        .copy_out("COPY payments TO STDOUT (FORMAT binary)")
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let got = parse_binary_copy(&got);
    let dir = parse_binary_copy(&dir.concat());
    assert_eq!(got.len(), SEEDS.len());
    for ((g, d), sd) in got.iter().zip(&dir).zip(SEEDS) {
        let n: i64 = last4_number(sd.pan).parse().unwrap();
        assert_eq!(g[0], d[0], "binary COPY id");
        assert_eq!(
            g[1].as_deref(),
            Some(last4(sd.pan).as_bytes()),
            "binary COPY card_number"
        );
        assert_eq!(g[2].as_deref(), Some(&b"[REDACTED]"[..]), "binary COPY cvv");
        assert_eq!(
            g[3].as_deref(),
            Some(&n.to_be_bytes()[..]),
            "binary COPY card_bigint"
        );
        assert_eq!(
            g[4].as_deref().map(numeric_text),
            Some(n.to_string()),
            "binary COPY card_numeric"
        );
        assert_eq!(g[5], d[5], "binary COPY amount");
        assert_eq!(
            g[6].as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned()),
            note_last4(sd),
            "binary COPY note"
        );
        assert_eq!(g[7], d[7], "binary COPY holder");
    }
    let got = copy_out(
        &gw,
        &c,
        "COPY (SELECT note, card_bigint FROM payments ORDER BY id) TO STDOUT (FORMAT binary)",
    )
    .await;
    let got = parse_binary_copy(&got);
    assert_eq!(
        got.iter()
            .map(|r| r[0]
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned()))
            .collect::<Vec<_>>(),
        SEEDS.iter().map(note_last4).collect::<Vec<_>>(),
        "binary COPY (query) notes"
    );

    // Error messages: the server quotes the value back.
    let e = c
        .simple_query("SELECT '4111111111111111'::int")
        .await
        .unwrap_err();
    assert_no_pan("cast error (simple)", format!("{e:?}").as_bytes());
    assert_eq!(sqlstate(&e).as_deref(), Some("22003"), "{e:?}");
    assert_eq!(
        db_message(&e),
        "value \"************1111\" is out of range for type integer"
    );
    let e = c
        .query("SELECT '5555555555554444'::int", &[])
        .await
        .unwrap_err();
    assert_no_pan("cast error (extended)", format!("{e:?}").as_bytes());
    assert_eq!(
        db_message(&e),
        "value \"************4444\" is out of range for type integer"
    );
    let e = c
        .simple_query("INSERT INTO card_registry VALUES ('6011111111111117')")
        .await
        .unwrap_err();
    assert_no_pan("unique violation", format!("{e:?}").as_bytes());
    assert_eq!(sqlstate(&e).as_deref(), Some("23505"), "{e:?}");
    assert_eq!(
        e.as_db_error().and_then(|d| d.detail()),
        Some("Key (pan)=(************1117) already exists."),
        "{e:?}"
    );
    let msgs = w.simple("SELECT '4111111111111111'::int").await;
    assert_no_pan("wire error", &wire_bytes(&msgs));
    let fields = wire_error(&msgs).expect("an error");
    assert!(
        fields.contains(&(
            b'M',
            "value \"************1111\" is out of range for type integer".into()
        )),
        "{fields:?}"
    );

    // Notices and notifications. A function the gateway cannot see into, and DO, could read
    // masked columns: refused to a masked identity (builtin:masked-inference). A notice of a
    // statement on other data still goes through the detector.
    let (mc, mut rx) = gw.connect_with_messages(CONN, &token).await;
    for sql in [
        "SELECT raise_card_notice()",
        "DO $$BEGIN RAISE NOTICE '%', '5555555555554444'; END$$",
    ] {
        let e = mc.simple_query(sql).await.unwrap_err();
        assert_eq!(sqlstate(&e).as_deref(), Some("42501"), "{sql}: {e:?}");
        assert!(
            db_message(&e).contains("builtin:masked-inference"),
            "{sql}: {e:?}"
        );
    }
    mc.batch_execute("DROP FUNCTION IF EXISTS \"4111111111111111\"()")
        .await
        .unwrap_or_else(|e| panic!("DROP IF EXISTS: {e:?}"));
    let notice = next_message(&mut rx, |m| match m {
        AsyncMessage::Notice(n) => Some(n),
        _ => None,
    })
    .await;
    assert_no_pan("notice", format!("{notice:?}").as_bytes());
    assert_eq!(
        notice.message(),
        "function ************1111() does not exist, skipping"
    );

    mc.batch_execute("LISTEN card_events").await.unwrap();
    let sender = gw.connect(CONN, &token).await;
    sender
        .batch_execute("NOTIFY card_events, '4111111111111111'")
        .await
        .unwrap();
    let (channel, payload) = next_message(&mut rx, |m| match m {
        AsyncMessage::Notification(n) => Some((n.channel().to_owned(), n.payload().to_owned())),
        _ => None,
    })
    .await;
    assert_no_pan("notification payload", payload.as_bytes());
    assert_eq!(
        (channel.as_str(), payload.as_str()),
        ("card_events", "************1111")
    );
    direct
        .batch_execute("SELECT pg_notify('card_events', 'card 5555 5555 5555 4444 declined')")
        .await
        .unwrap();
    let payload = next_message(&mut rx, |m| match m {
        AsyncMessage::Notification(n) => Some(n.payload().to_owned()),
        _ => None,
    })
    .await;
    assert_eq!(
        payload, "card **** **** **** 4444 declined",
        "notification from elsewhere"
    );

    assert_eq!(simple(&gw, &c, "SELECT 1").await, vec![vec![s(Some("1"))]]);
    assert_eq!(simple(&gw, &mc, "SELECT 1").await, vec![vec![s(Some("1"))]]);
    drop((c, mc, sender, w));
    assert_audit_clean(&gw);
}

// ---------------------------------------------------------------------------------------------
// 4. psql and pg_dump; the masked dump restores
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_and_pg_dump_show_masked_values_and_the_dump_restores() {
    let gw = gateway("last4");
    let token = gw.token("dumper", &["dba"]);
    let conninfo = format!("host=127.0.0.1 port={} dbname={CONN} user=x", gw.pg_port);

    let out = libpq_tool(
        "psql",
        &[
            "-X",
            "-v",
            "ON_ERROR_STOP=1",
            "-A",
            "-t",
            "-c",
            "SELECT card_number FROM payments ORDER BY id",
            "-c",
            "SELECT id, cvv, card_bigint, note FROM payments ORDER BY id",
            &conninfo,
        ],
        &token,
    );
    assert_no_pan("psql output", out.as_bytes());
    let mut expected: Vec<String> = SEEDS.iter().map(|sd| last4(sd.pan)).collect();
    expected.extend(SEEDS.iter().map(|sd| {
        format!(
            "{}|[REDACTED]|{}|{}",
            sd.id,
            last4_number(sd.pan),
            note_last4(sd).unwrap_or_default()
        )
    }));
    assert_eq!(out.lines().collect::<Vec<_>>(), expected, "psql output");

    let dump = libpq_tool("pg_dump", &["--no-password", "-d", &conninfo], &token);
    assert_no_pan("pg_dump output", dump.as_bytes());
    for needle in [
        "CREATE TABLE public.payments",
        "COPY public.payments (id, card_number, cvv, card_bigint, card_numeric, amount, note, holder) FROM stdin;",
        "1\t************1111\t[REDACTED]\t1111\t1111\t",
        "CREATE VIEW public.v_cards",
        "COPY public.orders",
        "PostgreSQL database dump complete",
    ] {
        assert!(
            dump.contains(needle),
            "pg_dump output lacks {needle:?}:\n{dump}"
        );
    }

    // The masked dump is a valid dump: it restores into a fresh database.
    let pg = cluster();
    pg.psql_super(
        "postgres",
        &format!("CREATE DATABASE masking_restored OWNER {SVC_USER};"),
    );
    pg.psql_as_svc("masking_restored", &dump);
    let restored = pg.psql_as_svc(
        "masking_restored",
        "SELECT id, card_number, cvv, card_bigint, card_numeric, note FROM payments ORDER BY id",
    );
    let expected: Vec<String> = SEEDS
        .iter()
        .map(|sd| {
            format!(
                "{}|{}|[REDACTED]|{}|{}|{}",
                sd.id,
                last4(sd.pan),
                last4_number(sd.pan),
                last4_number(sd.pan),
                note_last4(sd).unwrap_or_default()
            )
        })
        .collect();
    assert_eq!(
        restored.lines().collect::<Vec<_>>(),
        expected,
        "restored data"
    );
    let orders = pg.psql_as_svc("masking_restored", "SELECT ref FROM orders ORDER BY id");
    assert_eq!(
        orders.lines().collect::<Vec<_>>(),
        vec![
            "order for card ************1111",
            "ref **** **** **** 4444",
            "plain ref 42"
        ]
    );

    let c = gw.connect(CONN, &token).await;
    assert_eq!(simple(&gw, &c, "SELECT 1").await, vec![vec![s(Some("1"))]]);
    drop(c);
    assert_audit_clean(&gw);
}

// ---------------------------------------------------------------------------------------------
// 5. Exemption
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exempt_group_sees_clear_values_and_the_audit_says_so() {
    let gw = builder("last4").start_edited(|cfg| {
        cfg.replace(
            "allow_groups = [\"fraud-bots\", \"dba\"]",
            "allow_groups = [\"fraud-bots\", \"dba\", \"pci-auditors\"]",
        )
    });
    let auditor = gw.token("auditor-1", &["pci-auditors"]);
    let bot = gw.token("bot-5", &["fraud-bots"]);
    let a = gw.connect(CONN, &auditor).await;
    let b = gw.connect(CONN, &bot).await;

    let sql = "SELECT card_number, card_bigint, note FROM payments WHERE id = 1";
    let rows = simple_rows(&a.simple_query(sql).await.unwrap());
    assert_eq!(
        rows,
        vec![vec![
            s(Some("4111111111111111")),
            s(Some("4111111111111111")),
            s(Some("paid with 4111 1111 1111 1111 yesterday"))
        ]],
        "an exempt identity sees clear values"
    );
    let row = a.query_one(sql, &[]).await.unwrap();
    assert_eq!(row.get::<_, String>(0), "4111111111111111");
    assert_eq!(row.get::<_, i64>(1), 4_111_111_111_111_111);
    let rows = simple_rows(
        &a.simple_query("SELECT '5555555555554444' AS lit")
            .await
            .unwrap(),
    );
    assert_eq!(
        rows,
        vec![vec![s(Some("5555555555554444"))]],
        "detector off for the exempt"
    );

    // The same statement by a non-exempt identity on the same gateway is masked.
    let rows = simple(&gw, &b, sql).await;
    assert_eq!(
        rows,
        vec![vec![
            s(Some("************1111")),
            s(Some("1111")),
            s(Some("paid with **** **** **** 1111 yesterday"))
        ]]
    );

    let o = {
        let st = gw.wait_for_record(|r| {
            r["kind"] == "statement" && r["statement"] == sql && r["subject"] == "auditor-1"
        });
        gw.wait_for_record(|r| r["kind"] == "outcome" && r["statement_seq"] == st["seq"])
    };
    assert_eq!(
        o["detail"]["unmasked_for"],
        json!({"subject": "auditor-1", "groups": ["pci-auditors"], "rules": [1]}),
        "outcome of the exempt statement: {o}"
    );
    let st = gw.wait_for_record(|r| {
        r["kind"] == "statement" && r["statement"] == sql && r["subject"] == "bot-5"
    });
    let ob = gw.wait_for_record(|r| r["kind"] == "outcome" && r["statement_seq"] == st["seq"]);
    assert!(
        ob["detail"].get("unmasked_for").is_none_or(Value::is_null),
        "the masked session is not unmasked: {ob}"
    );

    assert_eq!(
        simple_rows(&a.simple_query("SELECT 1").await.unwrap()).len(),
        1
    );
    assert_eq!(simple(&gw, &b, "SELECT 1").await, vec![vec![s(Some("1"))]]);
    drop((a, b));
    // What the auditor saw in clear is still recorded masked.
    assert_audit_clean(&gw);
}

// ---------------------------------------------------------------------------------------------
// 6. redact
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redact_style_replaces_values_and_nulls_numbers() {
    let gw = gateway("redact");
    let token = gw.token("bot-6", &["fraud-bots"]);
    let c = gw.connect(CONN, &token).await;
    let direct = cluster().direct(DB).await;

    let rows = simple(
        &gw,
        &c,
        "SELECT card_number, cvv, card_bigint, card_numeric, note FROM payments ORDER BY id",
    )
    .await;
    for (i, sd) in SEEDS.iter().enumerate() {
        assert_eq!(
            rows[i],
            vec![
                s(Some("[REDACTED]")),
                s(Some("[REDACTED]")),
                None,
                None,
                note_with(sd, |_| "[REDACTED]".into()),
            ],
            "redact, row {} (the non-card '123' is redacted too)",
            sd.id
        );
    }
    let raw = binary(
        &gw,
        &c,
        "SELECT card_number, cvv, card_bigint, card_numeric, note FROM payments ORDER BY id",
    )
    .await;
    for (i, sd) in SEEDS.iter().enumerate() {
        assert_eq!(
            raw[i],
            vec![
                Raw(Some(b"[REDACTED]".to_vec())),
                Raw(Some(b"[REDACTED]".to_vec())),
                Raw(None),
                Raw(None),
                Raw(note_with(sd, |_| "[REDACTED]".into()).map(String::into_bytes)),
            ],
            "redact (binary), row {}",
            sd.id
        );
    }
    let rows = simple(&gw, &c, "SELECT cn FROM v_cards WHERE id = 1").await;
    assert_eq!(rows, vec![vec![s(Some("[REDACTED]"))]], "view");

    // Computed from card_number: the whole value is redacted; an integer becomes NULL.
    // Mismatches are collected, so one report shows them all.
    let mut bad: Vec<String> = Vec::new();
    for sql in [
        "SELECT substr(card_number, 5, 8) FROM payments WHERE id = 1",
        "SELECT upper(card_number) FROM payments WHERE id = 1",
        "SELECT row_to_json(p) FROM payments p WHERE id = 1",
        "SELECT p::text FROM payments p WHERE id = 1",
        "SELECT json_agg(card_number) FROM payments",
        "SELECT string_agg(card_number, ',') FROM payments",
        "SELECT x FROM (SELECT card_number AS x FROM payments WHERE id = 1) s",
    ] {
        let got = simple(&gw, &c, sql).await;
        // A json value stays valid JSON: the marker becomes a JSON string.
        let marker = if sql.contains("json") {
            "\"[REDACTED]\""
        } else {
            "[REDACTED]"
        };
        if got != vec![vec![s(Some(marker))]] {
            bad.push(format!(
                "{sql}\n    got:      {got:?}\n    expected: [[Some({marker:?})]]"
            ));
        }
    }
    assert_eq!(
        simple(
            &gw,
            &c,
            "SELECT length(card_number) FROM payments WHERE id = 1"
        )
        .await,
        vec![vec![None]],
        "length(card_number) under redact"
    );
    let raw = binary(
        &gw,
        &c,
        "SELECT length(card_number) FROM payments WHERE id = 1",
    )
    .await;
    assert_eq!(
        raw,
        vec![vec![Raw(None)]],
        "length(card_number) under redact (binary)"
    );

    // Detector: just the card number becomes [REDACTED].
    assert_eq!(
        simple(&gw, &c, "SELECT 'paid 4111-1111-1111-1111 ok' AS t").await,
        vec![vec![s(Some("paid [REDACTED] ok"))]]
    );

    // Left alone: aggregates and comparisons that reveal nothing, and other columns.
    for sql in [
        "SELECT count(card_number) FROM payments",
        "SELECT count(DISTINCT card_number) FROM payments",
        "SELECT id, amount, holder FROM payments ORDER BY id",
    ] {
        let via = simple(&gw, &c, sql).await;
        let dir = simple_rows(&direct.simple_query(sql).await.unwrap());
        if via != dir {
            bad.push(format!(
                "{sql} (text)\n    got:      {via:?}\n    expected: {dir:?}"
            ));
        }
        let via = binary(&gw, &c, sql).await;
        let dir: Vec<Vec<Raw>> = direct
            .query(sql, &[])
            .await
            .unwrap()
            .iter()
            .map(|r| (0..r.len()).map(|i| r.get::<_, Raw>(i)).collect())
            .collect();
        if via != dir {
            bad.push(format!(
                "{sql} (binary)\n    got:      {via:?}\n    expected: {dir:?}"
            ));
        }
    }
    assert!(
        bad.is_empty(),
        "{} redact mismatches:\n{}",
        bad.len(),
        bad.join("\n")
    );

    assert_eq!(simple(&gw, &c, "SELECT 1").await, vec![vec![s(Some("1"))]]);
    drop(c);
    assert_audit_clean(&gw);
}

// ---------------------------------------------------------------------------------------------
// 7. token
// ---------------------------------------------------------------------------------------------

fn is_token(t: &str) -> bool {
    t.len() == 20 && t.starts_with("tok_") && t[4..].chars().all(|c| "bcdfghjklmnpqrst".contains(c))
}

/// The token key the gateway keeps in its data dir, if it is there (to compute exact tokens).
fn token_key(gw: &Gateway) -> Option<gatehouse_core::masking::TokenKey> {
    let hex = std::fs::read_to_string(gw.data_dir().join("mask-token.key")).ok()?;
    let hex = hex.trim();
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    Some(gatehouse_core::masking::TokenKey::from_bytes(
        bytes.try_into().ok()?,
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_style_is_deterministic_and_distinct() {
    let mut gw = gateway("token");
    let token = gw.token("bot-7", &["fraud-bots"]);
    let sql = "SELECT card_number, note, cvv, card_bigint, card_numeric FROM payments ORDER BY id";

    let c = gw.connect(CONN, &token).await;
    let first = simple(&gw, &c, sql).await;
    let cards: Vec<String> = first.iter().map(|r| r[0].clone().unwrap()).collect();
    for (r, sd) in first.iter().zip(SEEDS) {
        let t = r[0].as_deref().unwrap();
        assert!(
            is_token(t),
            "row {}: {t:?} is not tok_ + 16 of bcdfghjklmnpqrst",
            sd.id
        );
        // Same card → same token, whether found by the column rule or the detector.
        assert_eq!(
            r[1],
            note_with(sd, |_| t.to_owned()),
            "note of row {}",
            sd.id
        );
        assert_eq!(r[2].as_deref(), Some("[REDACTED]"), "cvv under token");
        assert_eq!(r[3], None, "card_bigint under token");
        assert_eq!(r[4], None, "card_numeric under token");
    }
    let mut distinct = cards.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        cards.len(),
        "different cards, different tokens: {cards:?}"
    );
    if let Some(key) = token_key(&gw) {
        for (t, sd) in cards.iter().zip(SEEDS) {
            let want = String::from_utf8(key.token(sd.pan.as_bytes()).to_vec()).unwrap();
            assert_eq!(
                t, &want,
                "token of row {} is the keyed HMAC of its digits",
                sd.id
            );
        }
    }

    // Binary results, another session, the view, a literal: the same tokens.
    let raw = binary(&gw, &c, sql).await;
    assert_eq!(
        raw.iter().map(|r| txt(&r[0]).unwrap()).collect::<Vec<_>>(),
        cards,
        "binary"
    );
    assert!(
        raw.iter().all(|r| r[3] == Raw(None) && r[4] == Raw(None)),
        "int8/numeric NULL (binary)"
    );
    let c2 = gw.connect(CONN, &token).await;
    assert_eq!(simple(&gw, &c2, sql).await, first, "another session");
    let view = simple(&gw, &c2, "SELECT cn FROM v_cards ORDER BY id").await;
    assert_eq!(
        view.iter()
            .map(|r| r[0].clone().unwrap())
            .collect::<Vec<_>>(),
        cards,
        "view"
    );
    let lit = simple(&gw, &c2, "SELECT '4111111111111111' AS lit").await;
    assert_eq!(lit[0][0].as_deref(), Some(cards[0].as_str()), "literal");
    let echo = c2
        .query_one("SELECT $1::text", &[&"5555555555554444"])
        .await
        .unwrap();
    assert_eq!(echo.get::<_, String>(0), cards[1], "echoed parameter");
    let count = simple(&gw, &c2, "SELECT count(DISTINCT card_number) FROM payments").await;
    assert_eq!(count, vec![vec![s(Some("10"))]], "count is left alone");

    // The key is kept with the gateway's state: tokens survive a restart.
    drop((c, c2));
    gw.restart();
    let c3 = gw.connect(CONN, &token).await;
    assert_eq!(simple(&gw, &c3, sql).await, first, "after a restart");

    assert_eq!(simple(&gw, &c3, "SELECT 1").await, vec![vec![s(Some("1"))]]);
    drop(c3);
    assert_audit_clean(&gw);
}

/// Regression: masked rows are rebuilt, and over TLS the rebuilt bytes must be flushed out of
/// the TLS layer, or a large result stalls with its tail in the gateway's buffer. psql over
/// `sslmode=require`, a result of 20 000 masked rows, several times, each under a deadline.
#[test]
fn large_masked_results_stream_over_tls() {
    let gw = gateway("last4");
    let token = gw.token("bulk-reader", &["dba"]);
    let conninfo = format!(
        "host=127.0.0.1 port={} dbname={CONN} user=x sslmode=require",
        gw.pg_port
    );
    for round in 0..4 {
        let out = libpq_tool(
            "timeout",
            &[
                "60",
                "psql",
                "-X",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                "SELECT p.card_number, p.note FROM payments p, generate_series(1, 2000) g WHERE p.id = 1",
                &conninfo,
            ],
            &token,
        );
        assert_no_pan("psql over TLS", out.as_bytes());
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2000, "round {round}: every row arrived");
        assert!(
            lines.iter().all(|l| l.starts_with("************1111|")),
            "round {round}: rows masked: {:?}",
            lines.first()
        );
    }
}

/// `gatehouse explain` names the output columns that would be masked, and why.
#[test]
fn explain_shows_masked_columns() {
    let gw = gateway("last4");
    let out = gw.cli(&[
        "explain",
        "--connection",
        CONN,
        "--subject",
        "analyst",
        "--group",
        "dba",
        "SELECT id, substr(card_number, 1, 6) AS bin, amount, row_to_json(p) AS r FROM payments p",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("masked:    output 2 (column): redact from public.payments.card_number"),
        "{text}"
    );
    assert!(
        text.contains("masked:    output 4 (column): redact (verification code)"),
        "{text}"
    );
    assert!(!text.contains("output 1 "), "id is not masked: {text}");
    assert!(!text.contains("output 3 "), "amount is not masked: {text}");
    assert!(text.contains("detector:  pan (last4)"), "{text}");
}
