//! Retention (`audit.retention_days`): old records are purged through a signed checkpoint that
//! stays as the anchor of the first kept record, the purge is itself recorded, the chain still
//! verifies, and tampering with the first kept record or removing the anchor is detected.

use std::time::Duration;

use crate::support::*;
use gatehouse_store::SqliteStore;
use serde_json::Value;

fn verify(gw: &Gateway) -> (bool, String) {
    let out = gw.cli(&["audit", "verify"]);
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn seqs(recs: &[Value]) -> Vec<u64> {
    recs.iter().map(|r| r["seq"].as_u64().unwrap()).collect()
}

async fn traffic(gw: &Gateway, n: usize) {
    let token = gw.token("retention-bot", &["dba"]);
    let c = gw.connect("payments", &token).await;
    for i in 0..n {
        c.simple_query(&format!("SELECT {i}")).await.unwrap();
    }
    drop(c);
}

fn rfc3339_plus_days(t: time::OffsetDateTime, days: i64) -> String {
    (t + time::Duration::days(days))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_records_are_purged_through_a_signed_checkpoint_and_the_chain_still_verifies() {
    // Phase 1: records that will be past retention.
    let mut gw = Gateway::builder().start();
    traffic(&gw, 30).await;
    gw.stop(); // seals the chain with a checkpoint at its head
    let old = gw.export();
    let n1 = *seqs(&old).last().unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    let mid = time::OffsetDateTime::now_utc();
    std::thread::sleep(Duration::from_millis(1100));

    // Phase 2: records within retention.
    gw.restart();
    traffic(&gw, 10).await;
    gw.stop();
    let before = gw.export();
    assert_eq!(seqs(&before)[0], 1);
    let (ok, out) = verify(&gw);
    assert!(ok, "{out}");

    // The retention clock is moved so that `mid` is exactly 400 days ago: phase 1 is old.
    gw.env.push((
        "GATEHOUSE_RETENTION_NOW".into(),
        rfc3339_plus_days(mid, 400),
    ));
    gw.restart();
    let purge =
        gw.wait_for_record(|r| r["kind"] == "admin" && r["detail"]["event"] == "retention_purge");
    let d = &purge["detail"];
    assert_eq!(d["deleted_through_seq"].as_u64(), Some(n1), "{purge}");
    assert_eq!(d["anchor_seq"].as_u64(), Some(n1), "{purge}");
    assert_eq!(d["records"].as_u64(), Some(n1), "{purge}");
    assert_eq!(d["retention_days"].as_u64(), Some(400), "{purge}");
    gw.stop();

    let after = gw.export();
    let kept = seqs(&after);
    assert_eq!(kept[0], n1 + 1, "records before the anchor are gone");
    assert!(kept.windows(2).all(|w| w[1] == w[0] + 1), "{kept:?}");
    // Everything of phase 2 is still there, unchanged.
    for r in before.iter().filter(|r| r["seq"].as_u64().unwrap() > n1) {
        assert!(after.contains(r), "kept record changed: {r}");
    }
    let store = SqliteStore::open(&gw.store_url()).unwrap();
    let cps: Vec<u64> = store.checkpoints().unwrap().iter().map(|c| c.seq).collect();
    assert_eq!(
        cps[0], n1,
        "the anchoring checkpoint is kept, older ones deleted: {cps:?}"
    );
    assert_eq!(after[0]["prev_hash"], old.last().unwrap()["hash"]);
    let (ok, out) = verify(&gw);
    assert!(ok, "{out}");
    assert!(out.contains(&format!("seq {}..", n1 + 1)), "{out}");

    // Tampering with the first kept record is detected...
    let first = n1 + 1;
    store
        .execute_raw(&format!(
            "UPDATE audit_records SET session_id = session_id || 'x' WHERE seq = {first}"
        ))
        .unwrap();
    let (ok, out) = verify(&gw);
    assert!(!ok, "{out}");
    assert!(out.contains(&format!("record {first}:")), "{out}");
    store
        .execute_raw(&format!(
            "UPDATE audit_records SET session_id = substr(session_id, 1, length(session_id) - 1) \
             WHERE seq = {first}"
        ))
        .unwrap();
    let (ok, out) = verify(&gw);
    assert!(ok, "{out}");

    // ...and so is a cut without its anchor (deleting old records by hand).
    store
        .execute_raw(&format!("DELETE FROM audit_checkpoints WHERE seq = {n1}"))
        .unwrap();
    let (ok, out) = verify(&gw);
    assert!(!ok, "{out}");
    assert!(
        out.contains(&format!("record {first}: records 1..={n1} are missing")),
        "{out}"
    );
}

#[test]
fn check_warns_below_365_days_but_passes() {
    let mut gw = Gateway::builder().start();
    gw.stop();
    let out = gw.cli(&["check"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).is_empty());
    let cfg = std::fs::read_to_string(&gw.config).unwrap();
    std::fs::write(
        &gw.config,
        cfg.replacen("[audit]\n", "[audit]\nretention_days = 30\n", 1),
    )
    .unwrap();
    let out = gw.cli(&["check"]);
    assert!(out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("warning: audit.retention_days = 30 is below 365"),
        "{err}"
    );
}
