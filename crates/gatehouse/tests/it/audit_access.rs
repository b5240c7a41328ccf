//! Access to the audit logs is itself logged (PCI DSS 10.2.1.3): every CLI command that reads
//! the audit store (`audit export`, `audit verify`, `evidence`, `sessions list|show|replay`)
//! becomes an `admin` record (`audit_read`, via `cli`) in the chain — while the gateway runs
//! and, when it does not, at its next start — and a command whose read cannot be recorded
//! does not run.

use std::time::{Duration, Instant};

use crate::support::*;
use serde_json::Value;

fn cli_reads(recs: &[Value]) -> Vec<Value> {
    recs.iter()
        .filter(|r| {
            r["kind"] == "admin"
                && r["detail"]["event"] == "audit_read"
                && r["detail"]["via"] == "cli"
        })
        .cloned()
        .collect()
}

/// Waits until `n` CLI reads are chained; returns them.
fn wait_for_cli_reads(gw: &Gateway, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let reads = cli_reads(&gw.export());
        if reads.len() >= n {
            return reads;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {n} CLI reads chained: {reads:#?}\n{}",
            reads.len(),
            gw.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn ok(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_cli_read_of_the_audit_store_is_chained() {
    let gw = Gateway::start();
    let c = gw.connect("payments", &gw.token("alice", &["dba"])).await;
    c.simple_query("SELECT 1").await.unwrap();
    drop(c);
    let end = gw.wait_for_record(|r| r["kind"] == "session_end");
    let sid = end["session_id"].as_str().unwrap().to_owned();
    let before = gw.export();

    let exported = ok(&gw.cli(&["audit", "export", "--since", "2000-01-01"]));
    // The export never holds its own record: the line is written when it ends.
    assert_eq!(exported.lines().count(), before.len());
    ok(&gw.cli(&["audit", "export", "--format", "cef"]));
    ok(&gw.cli(&["audit", "verify"]));
    ok(&gw.cli(&["sessions", "list"]));
    ok(&gw.cli(&["sessions", "show", &sid]));
    ok(&gw.cli(&["sessions", "replay", &sid]));
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("r.json");
    ok(&gw.cli(&[
        "evidence",
        "--from",
        "2000-01-01",
        "--to",
        "2999-12-31",
        "-o",
        report.to_str().unwrap(),
    ]));
    // A failed read is recorded too, with its result.
    let missing = gw.cli(&["sessions", "show", "no-such-session"]);
    assert!(!missing.status.success());

    let reads = wait_for_cli_reads(&gw, 8);
    assert_eq!(reads.len(), 8, "{reads:#?}");
    let what: Vec<&str> = reads
        .iter()
        .map(|r| r["detail"]["what"].as_str().unwrap())
        .collect();
    assert_eq!(
        what,
        [
            "export",
            "export",
            "verify",
            "sessions_list",
            "session",
            "replay",
            "evidence",
            "session"
        ]
    );
    let me = std::fs::metadata("/proc/self").map(|m| {
        use std::os::unix::fs::MetadataExt;
        m.uid()
    });
    for r in &reads {
        let d = &r["detail"];
        assert_eq!(d["uid"], me.as_ref().map(|u| *u).unwrap(), "{r}");
        assert!(d["os_user"].is_string(), "{r}");
        assert_eq!(
            r["subject"],
            format!("os:{}", d["os_user"].as_str().unwrap())
        );
        assert!(d["pid"].as_u64().unwrap() > 0, "{r}");
        assert!(d["read_at"].as_str().unwrap().starts_with("20"), "{r}");
    }
    assert_eq!(reads[0]["detail"]["args"]["since"], "2000-01-01");
    assert_eq!(reads[0]["detail"]["args"]["format"], "jsonl");
    assert_eq!(reads[1]["detail"]["args"]["format"], "cef");
    assert_eq!(reads[4]["detail"]["args"]["session_id"], sid.as_str());
    let ev = &reads[6]["detail"]["args"];
    assert_eq!(ev["from"], "2000-01-01");
    assert_eq!(ev["to"], "2999-12-31");
    assert_eq!(ev["output"], report.to_str().unwrap());
    for r in &reads[..7] {
        assert_eq!(r["detail"]["result"], "ok", "{r}");
    }
    assert_eq!(reads[7]["detail"]["result"], "error");
    assert!(
        reads[7]["detail"]["error"]
            .as_str()
            .unwrap()
            .contains("no-such-session"),
        "{}",
        reads[7]
    );

    // The chain still verifies with them in it; each line is chained once.
    ok(&gw.cli(&["audit", "verify"]));
    let reads = wait_for_cli_reads(&gw, 9);
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(cli_reads(&gw.export()).len(), 9);
    assert_eq!(reads[8]["detail"]["what"], "verify");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_while_the_gateway_is_down_are_chained_at_its_next_start() {
    let mut gw = Gateway::start();
    gw.stop();
    ok(&gw.cli(&["audit", "export"]));
    ok(&gw.cli(&["sessions", "list"]));
    // Something that is not a CLI line: chained as invalid (size and hash, never the text).
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(gw.data_dir().join("audit-access.jsonl"))
            .unwrap();
        f.write_all(b"forged 4111111111111111\n").unwrap();
    }
    assert!(cli_reads(&gw.export()).is_empty());
    gw.restart();
    let reads = wait_for_cli_reads(&gw, 3);
    assert_eq!(reads[0]["detail"]["what"], "export");
    assert_eq!(reads[1]["detail"]["what"], "sessions_list");
    assert_eq!(reads[2]["detail"]["invalid"], true);
    assert_eq!(reads[2]["detail"]["bytes"], 23);
    assert!(!reads[2].to_string().contains("4111111111111111"));

    // A restart does not chain them again.
    gw.restart();
    std::thread::sleep(Duration::from_millis(3000));
    assert_eq!(cli_reads(&gw.export()).len(), 3);
    gw.stop();
    ok(&gw.cli(&["audit", "verify"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_cli_reads_are_each_chained_once() {
    let gw = Gateway::start();
    let runs: Vec<_> = (0..12)
        .map(|i| {
            let args: Vec<String> = if i % 2 == 0 {
                vec!["audit".into(), "verify".into()]
            } else {
                vec!["sessions".into(), "list".into()]
            };
            let mut cmd = std::process::Command::new(bin());
            cmd.args(&args).arg("-c").arg(&gw.config);
            cmd.stdout(std::process::Stdio::null());
            cmd.spawn().unwrap()
        })
        .collect();
    for mut r in runs {
        assert!(r.wait().unwrap().success());
    }
    let reads = wait_for_cli_reads(&gw, 12);
    std::thread::sleep(Duration::from_millis(2500));
    let reads = if reads.len() == 12 {
        cli_reads(&gw.export())
    } else {
        reads
    };
    assert_eq!(reads.len(), 12, "{reads:#?}");
    assert!(
        reads.iter().all(|r| r["detail"]["invalid"].is_null()),
        "{reads:#?}"
    );
    let pids: std::collections::BTreeSet<u64> = reads
        .iter()
        .map(|r| r["detail"]["pid"].as_u64().unwrap())
        .collect();
    assert_eq!(pids.len(), 12, "one record per run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_that_cannot_be_recorded_does_not_happen() {
    let gw = Gateway::start();
    let c = gw.connect("payments", &gw.token("alice", &["dba"])).await;
    c.simple_query("SELECT 1").await.unwrap();
    drop(c);
    gw.wait_for_record(|r| r["kind"] == "session_end");
    // The drop box cannot be opened for appending (a directory stands in its place; as root,
    // file permissions would not stop the write).
    let drop_box = gw.data_dir().join("audit-access.jsonl");
    let _ = std::fs::remove_file(&drop_box);
    std::fs::create_dir(&drop_box).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("r.html");
    for args in [
        vec!["audit", "export"],
        vec!["audit", "verify"],
        vec!["sessions", "list"],
        vec![
            "evidence",
            "--from",
            "2000-01-01",
            "--to",
            "2999-12-31",
            "-o",
            report.to_str().unwrap(),
        ],
    ] {
        let out = gw.cli(&args);
        assert!(!out.status.success(), "{args:?} ran");
        assert!(out.stdout.is_empty(), "{args:?} printed {:?}", out.stdout);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("cannot record this read of the audit store") && err.contains("10.2.1.3"),
            "{args:?}: {err}"
        );
    }
    assert!(!report.exists(), "the evidence report was written");
}

/// Chaining the drop box failing is a failure of the control (10.7.2): an alert, recorded as a
/// `control_failure` record, not only a log line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drop_box_that_cannot_be_chained_raises_an_alert() {
    let gw = Gateway::start();
    ok(&gw.cli(&["sessions", "list"]));
    wait_for_cli_reads(&gw, 1);
    // The gateway saves its position right after the records are durable: wait for that
    // write, or it would repair the damage below.
    let offset_file = gw.data_dir().join("audit-access.offset");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::fs::read_to_string(&offset_file)
        .ok()
        .and_then(|t| t.trim().parse::<u64>().ok())
        .is_none_or(|n| n == 0)
    {
        assert!(std::time::Instant::now() < deadline, "no offset saved");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // The saved position is damaged: the gateway will not guess where to resume.
    std::fs::write(gw.data_dir().join("audit-access.offset"), "not a number").unwrap();
    ok(&gw.cli(&["audit", "verify"]));
    let rec = gw.wait_for_record(|r| {
        r["detail"]["event"] == "control_failure"
            && r["detail"]["alert"] == "audit.access_log_failed"
    });
    assert!(
        rec["detail"]["error"]
            .as_str()
            .unwrap()
            .contains("audit-access.offset"),
        "{rec}"
    );
    assert!(gw.log_text().contains("could not be chained"));
    // The read made meanwhile is not chained from a guessed position.
    assert_eq!(cli_reads(&gw.export()).len(), 1);
}
