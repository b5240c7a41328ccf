//! The standard command-line clients work through the gateway unchanged: psql (queries,
//! catalog-heavy describe commands, `\copy` both ways, TLS) and pg_dump (schema and data),
//! each with a token as the password.

// Test code: panicking on the unexpected is the point.

use std::path::Path;
use std::process::Command;

use crate::support::*;

fn conninfo(gw: &Gateway, db: &str, extra: &str) -> String {
    format!(
        "host=127.0.0.1 port={} dbname={db} user=x {extra}",
        gw.pg_port
    )
}

/// psql with no psqlrc, stopping at the first error, unaligned tuples-only output.
fn psql(gw: &Gateway, db: &str, token: &str, commands: &[&str]) -> String {
    let conn = conninfo(gw, db, "");
    let mut args = vec!["-X", "-v", "ON_ERROR_STOP=1", "-A", "-t"];
    for c in commands {
        args.push("-c");
        args.push(c);
    }
    args.push(&conn);
    libpq_tool("psql", &args, token)
}

fn path_str(p: &Path) -> &str {
    let s = p.to_str().expect("UTF-8 temp path");
    assert!(!s.contains('\''), "temp path with a quote: {s}");
    s
}

#[test]
fn psql_queries_describes_and_copies_both_ways() {
    let pg = cluster();
    pg.create_database("clients");
    let gw = Gateway::builder().connection("clients", "clients").start();
    let token = gw.token("psql-user", &["dba"]);

    // Plain queries, several in one invocation.
    let out = psql(
        &gw,
        "clients",
        &token,
        &[
            "SELECT name FROM customers ORDER BY id",
            "SELECT count(*) FROM payments",
        ],
    );
    assert_eq!(out, "Ada\nGrace\n3\n");

    // \d runs a series of catalog queries (pg_class, pg_attribute, pg_index, pg_constraint...).
    let conn = conninfo(&gw, "clients", "");
    let described = libpq_tool(
        "psql",
        &["-X", "-v", "ON_ERROR_STOP=1", "-c", r"\d payments", &conn],
        &token,
    );
    for needle in [
        "Table \"public.payments\"",
        "card_number",
        "customer_id",
        "numeric(12,2)",
        "\"payments_pkey\" PRIMARY KEY, btree (id)",
        "FOREIGN KEY (customer_id) REFERENCES customers(id)",
    ] {
        assert!(
            described.contains(needle),
            "\\d payments lacks {needle:?}:\n{described}"
        );
    }
    let listed = psql(&gw, "clients", &token, &[r"\dt"]);
    assert!(
        listed.contains("public|customers|table") && listed.contains("public|payments|table"),
        "{listed}"
    );
    let described = psql(
        &gw,
        "clients",
        &token,
        &[r"\d+ customers", r"\df", r"\dn", r"\l"],
    );
    assert!(described.contains("clients"), "{described}");

    // \copy out: COPY ... TO STDOUT through the gateway into a client-side file.
    let dir = tempfile::tempdir().unwrap();
    let out_file = dir.path().join("customers.csv");
    let out = psql(
        &gw,
        "clients",
        &token,
        &[&format!(
            r"\copy (SELECT id, name, email FROM customers ORDER BY id) TO '{}' WITH (FORMAT csv)",
            path_str(&out_file)
        )],
    );
    assert_eq!(out.trim(), "COPY 2");
    assert_eq!(
        std::fs::read_to_string(&out_file).unwrap(),
        "1,Ada,ada@example.com\n2,Grace,grace@example.com\n"
    );

    // \copy in: COPY ... FROM STDIN, large enough to span many CopyData messages.
    let in_file = dir.path().join("imported.csv");
    let mut data = String::new();
    for i in 1..=5000 {
        data.push_str(&format!("{i},name {i},\"quoted, \"\"{i}\"\"\"\n"));
    }
    std::fs::write(&in_file, &data).unwrap();
    let out = psql(
        &gw,
        "clients",
        &token,
        &[
            "CREATE TABLE imported (id int PRIMARY KEY, name text, note text)",
            &format!(
                r"\copy imported FROM '{}' WITH (FORMAT csv)",
                path_str(&in_file)
            ),
        ],
    );
    assert!(out.contains("COPY 5000"), "{out}");
    let check = pg.psql_as_svc(
        "clients",
        "SELECT count(*), sum(id), max(note) FILTER (WHERE id = 7) FROM imported",
    );
    assert_eq!(check.trim(), "5000|12502500|quoted, \"7\"");

    // And back out: what went in comes back byte for byte.
    let round = dir.path().join("round.csv");
    psql(
        &gw,
        "clients",
        &token,
        &[&format!(
            r"\copy (SELECT * FROM imported ORDER BY id) TO '{}' WITH (FORMAT csv)",
            path_str(&round)
        )],
    );
    assert_eq!(std::fs::read_to_string(&round).unwrap(), data);

    // A failing \copy (bad row) is an error for psql, and the next command still works.
    let bad = dir.path().join("bad.csv");
    std::fs::write(&bad, "1,dup,x\n").unwrap();
    let conn = conninfo(&gw, "clients", "");
    let out = Command::new("psql")
        .args(["-X", "-v", "ON_ERROR_STOP=1", "-c"])
        .arg(format!(
            r"\copy imported FROM '{}' WITH (FORMAT csv)",
            path_str(&bad)
        ))
        .arg(&conn)
        .env("PGPASSWORD", &token)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("duplicate key"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        psql(&gw, "clients", &token, &["SELECT count(*) FROM imported"]),
        "5000\n"
    );

    // The statements are on the record (write-ahead, so already there), attributed to the
    // token's subject.
    let statements: Vec<String> = gw
        .export()
        .iter()
        .filter(|r| r["kind"] == "statement" && r["subject"] == "psql-user")
        .map(|r| r["statement"].as_str().unwrap_or("").to_owned())
        .collect();
    for needle in [
        "imported FROM STDIN",
        "pg_catalog.pg_class",
        "FROM customers",
    ] {
        assert!(
            statements.iter().any(|s| s.contains(needle)),
            "no recorded statement contains {needle:?}: {statements:#?}"
        );
    }
}

#[test]
fn psql_over_verified_tls() {
    let gw = Gateway::start();
    let token = gw.token("psql-tls", &["dba"]);
    let ca = gw.data_dir().join("ca.crt");
    for host in ["127.0.0.1", "localhost"] {
        let conn = format!(
            "host={host} port={} dbname=payments user=x sslmode=verify-full sslrootcert={}",
            gw.pg_port,
            path_str(&ca)
        );
        let out = libpq_tool(
            "psql",
            &[
                "-X",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                r"\conninfo",
                "-c",
                "SELECT count(*) FROM customers",
                &conn,
            ],
            &token,
        );
        assert!(out.contains("SSL connection"), "{host}: {out}");
        assert!(out.contains(" 2\n"), "{host}: {out}");
    }
}

#[test]
fn pg_dump_dumps_schema_and_data() {
    let gw = Gateway::start();
    let token = gw.token("dumper", &["dba"]);
    let conn = conninfo(&gw, "payments", "");

    let dump = libpq_tool("pg_dump", &["--no-password", "-d", &conn], &token);
    for needle in [
        "CREATE TABLE public.customers",
        "CREATE TABLE public.payments",
        "COPY public.customers (id, name, email) FROM stdin;",
        "1\tAda\tada@example.com",
        "2\tGrace\tgrace@example.com",
        "COPY public.payments (",
        "ADD CONSTRAINT payments_pkey PRIMARY KEY (id)",
        "FOREIGN KEY (customer_id) REFERENCES public.customers(id)",
        "PostgreSQL database dump complete",
    ] {
        assert!(
            dump.contains(needle),
            "pg_dump output lacks {needle:?}:\n{dump}"
        );
    }

    // Custom format, read back by pg_restore (the whole archive came through intact).
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("payments.dump");
    libpq_tool(
        "pg_dump",
        &[
            "--no-password",
            "-Fc",
            "-f",
            path_str(&archive),
            "-d",
            &conn,
        ],
        &token,
    );
    let listing = libpq_tool("pg_restore", &["-l", path_str(&archive)], &token);
    assert!(listing.contains("TABLE DATA public customers"), "{listing}");
    assert!(listing.contains("TABLE DATA public payments"), "{listing}");

    // pg_dump's statements are on the record.
    let statements: Vec<String> = gw
        .export()
        .iter()
        .filter(|r| r["kind"] == "statement" && r["subject"] == "dumper")
        .map(|r| r["statement"].as_str().unwrap_or("").to_owned())
        .collect();
    assert!(
        statements
            .iter()
            .any(|s| s.contains("COPY public.customers")),
        "{statements:#?}"
    );
}
