//! `[[audit.sink]]` and `audit export --format cef`: the continuous SIEM sinks tail the store,
//! so every record reaches them exactly once, in order, even when the receiver is down for a
//! while and the gateway restarts in between.
//!
//! Everything runs against a real PostgreSQL and the real `gatehouse` binary; the receivers
//! (syslog over TCP, HTTP) are run by the test.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::*;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::Value;
use tokio::io::AsyncReadExt;

/// Opens a session, runs `n` statements, closes it: session_start, statement and outcome
/// records, session_end.
async fn activity(gw: &Gateway, n: usize) {
    let c = gw.connect("payments", &gw.token("alice", &["dba"])).await;
    for i in 0..n {
        c.simple_query(&format!("SELECT {i} AS n")).await.unwrap();
    }
    drop(c);
}

fn seqs(records: &[Value]) -> Vec<u64> {
    records.iter().map(|r| r["seq"].as_u64().unwrap()).collect()
}

/// Waits until `got()` returns exactly the seqs of `audit export` (which may still grow while
/// the session ends), and returns the export.
async fn wait_until_delivered(gw: &Gateway, what: &str, got: impl Fn() -> Vec<u64>) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(45);
    loop {
        let export = gw.export();
        let want = seqs(&export);
        let have = got();
        if have == want && !want.is_empty() {
            // Stable: nothing more arrives (no duplicate after the last record).
            tokio::time::sleep(Duration::from_millis(600)).await;
            if got() == seqs(&gw.export()) {
                return export;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{what}: delivered seqs {have:?}, store has {want:?}\n{}",
            gw.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn config_dir(gw: &Gateway) -> PathBuf {
    gw.data_dir().parent().unwrap().to_path_buf()
}

/// The file sink's lines, oldest first: `path.N`, ..., `path.1`, `path`.
fn file_sink_lines(path: &Path) -> (Vec<String>, usize) {
    let mut files = Vec::new();
    for n in (1..=1000).rev() {
        let p = PathBuf::from(format!("{}.{n}", path.display()));
        if p.exists() {
            files.push(p);
        }
    }
    let rotated = files.len();
    files.push(path.to_path_buf());
    let mut lines = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        lines.extend(text.lines().map(str::to_owned));
    }
    (lines, rotated)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_sink_gets_every_record_and_rotates() {
    let gw = Gateway::builder()
        .extra(
            "\n[[audit.sink]]\nname = \"file-siem\"\nkind = \"file\"\npath = \"siem/audit.jsonl\"\n\
             max_bytes = 2048\nkeep = 500\n",
        )
        .start();
    activity(&gw, 6).await;
    let path = config_dir(&gw).join("siem/audit.jsonl");
    let read = || {
        file_sink_lines(&path)
            .0
            .iter()
            .map(|l| {
                serde_json::from_str::<Value>(l).unwrap()["seq"]
                    .as_u64()
                    .unwrap()
            })
            .collect::<Vec<_>>()
    };
    let export = wait_until_delivered(&gw, "file sink", read).await;
    let (lines, rotated) = file_sink_lines(&path);
    let records: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // The same JSON objects as `audit export`, seq 1.. without a gap.
    assert_eq!(records, export);
    assert_eq!(
        seqs(&records),
        (1..=records.len() as u64).collect::<Vec<_>>()
    );
    assert!(
        rotated >= 2,
        "expected rotation at 2048 bytes, got {rotated} files"
    );
    for n in 1..=rotated {
        let len = std::fs::metadata(format!("{}.{n}", path.display()))
            .unwrap()
            .len();
        assert!(len <= 2048, "rotated file .{n} has {len} bytes");
    }
    // The position is persisted after delivery.
    let pos = std::fs::read_to_string(gw.data_dir().join("sinks/file-siem.seq")).unwrap();
    assert_eq!(pos.trim().parse::<usize>().unwrap(), records.len());

    // The gateway stops between writing lines and saving the position, in the middle of a
    // line: at the next start the partial line is dropped and delivery resumes after the last
    // whole line, so the file still holds every seq exactly once.
    let mut gw = gw;
    gw.stop();
    let stored = gw.export().len();
    std::fs::write(gw.data_dir().join("sinks/file-siem.seq"), "3\n").unwrap();
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(b"{\"seq\": 99999, \"kind\": \"stat").unwrap();
    }
    gw.restart();
    activity(&gw, 2).await;
    let export = wait_until_delivered(&gw, "file sink after restart", read).await;
    assert!(export.len() > stored);
    let (lines, _) = file_sink_lines(&path);
    assert!(
        lines
            .iter()
            .all(|l| serde_json::from_str::<Value>(l).is_ok()),
        "a partial line is left"
    );
    assert_eq!(read(), (1..=export.len() as u64).collect::<Vec<_>>());
}

/// Splits RFC 6587 octet-counted frames; returns the messages and the unparsed rest.
fn frames(buf: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = buf;
    while let Some(sp) = rest.iter().position(|b| *b == b' ') {
        let len: usize = std::str::from_utf8(&rest[..sp]).unwrap().parse().unwrap();
        if rest.len() < sp + 1 + len {
            break;
        }
        out.push(String::from_utf8(rest[sp + 1..sp + 1 + len].to_vec()).unwrap());
        rest = &rest[sp + 1 + len..];
    }
    out
}

fn cef_seq(line: &str) -> u64 {
    let at = line.find(" cn1=").expect("cn1 (seq) in the CEF line");
    line[at + 5..].split(' ').next().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syslog_tcp_sink_sends_octet_counted_cef() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let received = Arc::new(Mutex::new(Vec::<u8>::new()));
    let sink = received.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let sink = sink.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 8192];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    sink.lock().unwrap().extend_from_slice(&buf[..n]);
                }
            });
        }
    });
    let gw = Gateway::builder()
        .extra(&format!(
            "\n[[audit.sink]]\nname = \"syslog-siem\"\nkind = \"syslog\"\n\
             address = \"127.0.0.1:{port}\"\nprotocol = \"tcp\"\nformat = \"cef\"\n"
        ))
        .start();
    activity(&gw, 3).await;
    let read = || {
        frames(&received.lock().unwrap())
            .iter()
            .map(|m| cef_seq(m))
            .collect::<Vec<_>>()
    };
    let export = wait_until_delivered(&gw, "syslog sink", read).await;
    let msgs = frames(&received.lock().unwrap());
    assert_eq!(msgs.len(), export.len());
    for (m, r) in msgs.iter().zip(&export) {
        // RFC 5424 header, then the CEF event.
        assert!(m.starts_with('<'), "{m}");
        let kind = r["kind"].as_str().unwrap();
        assert!(
            m.contains(&format!(" gatehouse - {kind} - CEF:0|Gatehouse|gatehouse|")),
            "{m}"
        );
        assert!(
            m.contains(&format!("cs5={}", r["hash"].as_str().unwrap())),
            "{m}"
        );
    }
}

struct HttpReceiver {
    /// Seqs in the order they arrived, one per record line.
    seqs: Mutex<Vec<u64>>,
}

async fn ingest(State(rx): State<Arc<HttpReceiver>>, body: Bytes) -> StatusCode {
    let text = String::from_utf8(body.to_vec()).unwrap();
    let mut seqs = rx.seqs.lock().unwrap();
    for line in text.lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        seqs.push(v["seq"].as_u64().unwrap());
    }
    StatusCode::OK
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_sink_delivers_everything_once_after_an_outage_and_a_restart() {
    // The receiver's port is chosen now but nothing listens on it yet: the SIEM is down.
    let port = free_port();
    let mut gw = Gateway::builder()
        .extra(&format!(
            "\n[[audit.sink]]\nname = \"http-siem\"\nkind = \"http\"\n\
             url = \"http://127.0.0.1:{port}/ingest\"\nbatch = 3\nlag_alert_records = 2\n"
        ))
        .start();
    activity(&gw, 4).await;
    gw.wait_for_log("audit sink delivery failed", 1);
    gw.wait_for_log("audit sink is falling behind", 1);
    // Still down across a restart; more records are written meanwhile, and fail again.
    let failed_before = gw.log_text().matches("audit sink delivery failed").count();
    gw.restart();
    activity(&gw, 3).await;
    gw.wait_for_log("audit sink delivery failed", failed_before + 1);

    // The SIEM comes up on the same port.
    let rx = Arc::new(HttpReceiver {
        seqs: Mutex::new(Vec::new()),
    });
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let app = axum::Router::new().fallback(ingest).with_state(rx.clone());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let export = wait_until_delivered(&gw, "http sink", || rx.seqs.lock().unwrap().clone()).await;
    // In order, no gap, no duplicate: exactly 1..=N.
    let got = rx.seqs.lock().unwrap().clone();
    assert_eq!(got, (1..=export.len() as u64).collect::<Vec<_>>());

    let metrics = gw.metrics().await;
    assert!(
        metrics.contains("gatehouse_sink_delivered_total{sink=\"http-siem\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("gatehouse_sink_lag_records{sink=\"http-siem\"} 0"),
        "{metrics}"
    );
}

/// The 7 header fields of a CEF line (unescaped) and its extension text.
fn cef_header(line: &str) -> (Vec<String>, String) {
    let mut fields = Vec::new();
    let mut cur = String::new();
    let mut chars = line.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => {
                if let Some((_, n)) = chars.next() {
                    cur.push(n);
                }
            }
            '|' => {
                fields.push(std::mem::take(&mut cur));
                if fields.len() == 7 {
                    return (fields, line[i + 1..].to_owned());
                }
            }
            c => cur.push(c),
        }
    }
    panic!("not a CEF line: {line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cef_export_parses_and_escapes() {
    let gw = Gateway::start();
    let c = gw.connect("payments", &gw.token("alice", &["dba"])).await;
    c.simple_query("SELECT 'a|b=c' AS x").await.unwrap();
    drop(c);
    gw.wait_for_record(|r| r["kind"] == "session_end");
    let export = gw.export();
    let out = gw.cli(&["audit", "export", "--format", "cef"]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), export.len());
    for (line, r) in lines.iter().zip(&export) {
        let (h, ext) = cef_header(line);
        assert_eq!(h[0], "CEF:0");
        assert_eq!(h[1], "Gatehouse");
        assert_eq!(h[2], "gatehouse");
        assert!(!h[3].is_empty());
        assert_eq!(h[4], r["kind"].as_str().unwrap());
        let sev: u8 = h[6].parse().unwrap();
        assert!(sev <= 10);
        assert_eq!(cef_seq(line), r["seq"].as_u64().unwrap());
        assert!(
            ext.contains(&format!("cs6={}", r["prev_hash"].as_str().unwrap())),
            "{line}"
        );
    }
    let stmt = lines
        .iter()
        .find(|l| l.contains("|statement|"))
        .expect("a statement line");
    let (h, ext) = cef_header(stmt);
    assert_eq!(h.len(), 7);
    assert!(ext.contains(r"cs2=SELECT 'a|b\=c' AS x"), "{stmt}");
    assert!(ext.contains("suser=alice"), "{stmt}");
    assert!(ext.contains("cs1Label=connection cs1=payments"), "{stmt}");
    // An unsupported format is an error naming the choices.
    let bad = gw.cli(&["audit", "export", "--format", "xml"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("jsonl, cef"));
}

/// A TLS syslog receiver (RFC 5425) on a free loopback port with a certificate for
/// 127.0.0.1/localhost signed by a fresh CA: returns the port, the CA PEM and the bytes read.
async fn tls_syslog_receiver() -> (u16, String, Arc<Mutex<Vec<u8>>>) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "gatehouse syslog test CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let server_cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            rustls_pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_cfg));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let received = Arc::new(Mutex::new(Vec::<u8>::new()));
    let sink = received.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, sink) = (acceptor.clone(), sink.clone());
            tokio::spawn(async move {
                // A client that does not trust the certificate aborts the handshake here.
                let Ok(mut s) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = [0u8; 8192];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    sink.lock().unwrap().extend_from_slice(&buf[..n]);
                }
            });
        }
    });
    (port, ca_cert.pem(), received)
}

/// The seq of an RFC 5424 message whose body is a jsonl record.
fn jsonl_syslog_seq(msg: &str) -> u64 {
    let body = &msg[msg.find(" - {").expect("a JSON body") + 3..];
    serde_json::from_str::<Value>(body).unwrap()["seq"]
        .as_u64()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syslog_tls_sink_verifies_the_server_and_delivers_every_record() {
    let (good_port, good_ca, good_rx) = tls_syslog_receiver().await;
    // The second receiver's certificate is signed by a CA the sink is not told about.
    let (bad_port, _, bad_rx) = tls_syslog_receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let ca_path = dir.path().join("siem-ca.pem");
    std::fs::write(&ca_path, &good_ca).unwrap();
    let gw = Gateway::builder()
        .extra(&format!(
            "\n[[audit.sink]]\nname = \"tls-siem\"\nkind = \"syslog\"\n\
             address = \"127.0.0.1:{good_port}\"\nprotocol = \"tls\"\nca_file = \"{ca}\"\n\
             \n[[audit.sink]]\nname = \"tls-wrong-ca\"\nkind = \"syslog\"\n\
             address = \"127.0.0.1:{bad_port}\"\nprotocol = \"tls\"\nca_file = \"{ca}\"\n\
             server_name = \"localhost\"\n",
            ca = ca_path.display()
        ))
        .start();
    activity(&gw, 3).await;
    let read = || {
        frames(&good_rx.lock().unwrap())
            .iter()
            .map(|m| jsonl_syslog_seq(m))
            .collect::<Vec<_>>()
    };
    let export = wait_until_delivered(&gw, "syslog tls sink", read).await;
    let msgs = frames(&good_rx.lock().unwrap());
    assert_eq!(msgs.len(), export.len());
    assert_eq!(
        msgs.iter().map(|m| jsonl_syslog_seq(m)).collect::<Vec<_>>(),
        (1..=export.len() as u64).collect::<Vec<_>>()
    );
    for (m, r) in msgs.iter().zip(&export) {
        let kind = r["kind"].as_str().unwrap();
        assert!(m.starts_with("<10"), "{m}");
        assert!(m.contains(&format!(" gatehouse - {kind} - {{")), "{m}");
        assert_eq!(
            serde_json::from_str::<Value>(&m[m.find(" - {").unwrap() + 3..]).unwrap(),
            *r
        );
    }

    // The untrusted receiver gets nothing; the failure is logged and traffic goes on.
    let c = gw.connect("payments", &gw.token("alice", &["dba"])).await;
    c.simple_query("SELECT 1").await.unwrap();
    drop(c);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let log = gw.log_text();
        if log.lines().any(|l| {
            l.contains("tls-wrong-ca")
                && l.contains("audit sink delivery failed")
                && l.contains("TLS handshake")
        }) {
            break;
        }
        assert!(Instant::now() < deadline, "no TLS delivery error:\n{log}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(bad_rx.lock().unwrap().is_empty());
    assert!(!gw.data_dir().join("sinks/tls-wrong-ca.seq").exists());
}
