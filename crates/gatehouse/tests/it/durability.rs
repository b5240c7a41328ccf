//! Durability proven, not assumed: the gateway is killed with SIGKILL at pseudo-random moments
//! while clients write through it, restarted each time, and afterwards
//! - `audit verify` passes (the chain survived every crash, torn tails included),
//! - every row the database committed has its statement record (fail closed: a statement is
//!   forwarded only once its record is durable, so a committed row without one is a lost
//!   record),

// Test code: panicking on the unexpected is the point.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::support::*;

const DB: &str = "durability";
const KILLS: usize = 20;
const WRITERS: usize = 4;

/// A small deterministic generator (xorshift), so that a failing run can be repeated.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_survive_sigkill_under_write_load() {
    cluster().create_database_with(DB, "CREATE TABLE public.markers (k bigint PRIMARY KEY);");
    let mut b = Gateway::builder();
    b.databases = vec![("payments".to_owned(), DB.to_owned())];
    let mut gw = b.start();
    let token = gw.token("writer", &["fraud-bots"]);
    let next = Arc::new(AtomicU64::new(1));
    let seed = std::env::var("DURABILITY_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x9e37_79b9_7f4a_7c15u64);
    let mut rng = Rng(seed);
    let mut acknowledged: BTreeSet<u64> = BTreeSet::new();

    for round in 0..KILLS {
        let stop = Arc::new(AtomicBool::new(false));
        let mut writers = Vec::new();
        for _ in 0..WRITERS {
            let (port, token, next, stop) = (gw.pg_port, token.clone(), next.clone(), stop.clone());
            writers.push(tokio::spawn(async move {
                let mut acked = Vec::new();
                let conn = format!(
                    "host=127.0.0.1 port={port} dbname=payments user=agent password={token} sslmode=disable"
                );
                let Ok((c, conn)) = tokio_postgres::connect(&conn, tokio_postgres::NoTls).await
                else {
                    return acked;
                };
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                while !stop.load(Ordering::Relaxed) {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    match c
                        .simple_query(&format!("INSERT INTO markers VALUES ({k})"))
                        .await
                    {
                        Ok(_) => acked.push(k),
                        Err(_) => break,
                    }
                }
                acked
            }));
        }
        // Let the load build up, then crash at a moment that differs every round.
        let wait = 20 + rng.next() % 280;
        tokio::time::sleep(Duration::from_millis(wait)).await;
        gw.kill();
        stop.store(true, Ordering::Relaxed);
        for w in writers {
            acknowledged.extend(w.await.unwrap());
        }
        gw.start_again();
        // The restarted gateway serves again (and has recovered its chain).
        let c = gw.connect("payments", &token).await;
        c.simple_query("SELECT 1").await.unwrap_or_else(|e| {
            panic!(
                "round {round}: no service after restart: {e}\n{}",
                gw.log_text()
            )
        });
    }
    gw.stop();

    // The chain verifies end to end.
    let out = gw.cli(&["audit", "verify"]);
    assert!(
        out.status.success(),
        "audit verify after {KILLS} crashes: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // Every committed marker has its statement record; every acknowledged one was committed.
    let direct = cluster().direct(DB).await;
    let committed: BTreeSet<u64> = direct
        .query("SELECT k FROM markers", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| u64::try_from(r.get::<_, i64>(0)).unwrap())
        .collect();
    assert!(
        committed.len() > KILLS,
        "too little load: {} rows",
        committed.len()
    );
    eprintln!(
        "{KILLS} crashes: {} rows committed, {} acknowledged to clients",
        committed.len(),
        acknowledged.len()
    );
    let missing_rows: Vec<&u64> = acknowledged.difference(&committed).collect();
    assert!(
        missing_rows.is_empty(),
        "acknowledged but not committed: {missing_rows:?}"
    );

    let records = gw.export();
    let mut statements: BTreeMap<u64, u64> = BTreeMap::new(); // marker -> record seq
    for r in &records {
        if r["kind"] == "statement"
            && let Some(sql) = r["statement"].as_str()
            && let Some(k) = sql
                .strip_prefix("INSERT INTO markers VALUES (")
                .and_then(|s| s.strip_suffix(')'))
                .and_then(|s| s.parse::<u64>().ok())
        {
            statements.insert(k, r["seq"].as_u64().unwrap_or(0));
        }
    }
    let unrecorded: Vec<&u64> = committed
        .iter()
        .filter(|k| !statements.contains_key(k))
        .collect();
    assert!(
        unrecorded.is_empty(),
        "{} committed rows have no statement record: {:?}",
        unrecorded.len(),
        unrecorded.iter().take(20).collect::<Vec<_>>()
    );
}
