//! `[[audit.sink]]`: continuous delivery of the audit trail to a SIEM (file, syslog, HTTP).
//!
//! **The audit store is the spool.** Each sink is a task that *tails the store*: it reads the
//! records after the last seq it delivered (polling every [`POLL`] through a short read-only
//! query), delivers them in chain order, and only after the delivery succeeded persists that
//! seq in `data_dir/sinks/<name>.seq` (written to a temporary file and renamed). Nothing is
//! queued in memory or handed over by the audit writer, so:
//!
//! - a slow, failing or dead SIEM never blocks a session or the audit writer, and never loses a
//!   record: the records simply wait in the store (bounded by the store's retention), and the
//!   sink retries with exponential backoff up to [`MAX_BACKOFF`];
//! - after a restart (or a crash) delivery resumes at the next seq, so there are no gaps; a
//!   record is delivered again only when the process died between a delivery and the position
//!   write, and every record carries its `seq` (and hash chain) so a receiver can check
//!   continuity and drop such a duplicate;
//! - a sink added later starts at the beginning of the store (the whole retained trail).
//!
//! The lag (head seq - delivered seq) is exported as `gatehouse_sink_lag_records{sink}`, and
//! an error is logged while it exceeds `lag_alert_records`; delivered records are counted in
//! `gatehouse_sink_delivered_total{sink}`. Statements are masked in the store already; URLs
//! (whose path may hold a token) and secrets are never logged.
//!
//! The tailing task here is the same for every sink; what differs is only how a batch of
//! rendered lines leaves, one file per kind (`file`, `syslog`, `http`).

mod error;
mod file;
mod http;
mod syslog;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use gatehouse_core::audit::{AuditAlert, AuditRecord, Auditor};
use gatehouse_core::config::{AuditSink, Config, Secret, SinkFormat, SinkKind};
use gatehouse_store::SqliteStore;

pub use error::{OutputError, SinkSetupError};
pub use syslog::syslog_message;

use crate::error_text::with_sources;
use crate::position::{read_position, write_position};
use error::DeliveryError;
use file::FileOut;
use http::HttpOut;
use syslog::SyslogOut;

/// How often an idle sink looks for new records.
pub const POLL: Duration = Duration::from_millis(200);
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Records read from the store per round for file and syslog sinks.
const READ_BATCH: usize = 500;
/// Per attempt: connecting, sending and reading the answer.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// While the lag stays above the alert threshold, the error is repeated this often.
const ALERT_EVERY: Duration = Duration::from_secs(60);

/// Starts one delivery task per `[[audit.sink]]`. Fails when a sink cannot be set up (its
/// position file unreadable, a secret missing), so a misconfigured sink is found at start.
pub fn spawn(cfg: &Config, store: &SqliteStore, auditor: &Auditor) -> Result<(), SinkSetupError> {
    if cfg.audit.sinks.is_empty() {
        return Ok(());
    }
    let dir = cfg.data_dir.join("sinks");
    std::fs::create_dir_all(&dir).map_err(|source| SinkSetupError::Dir {
        path: dir.clone(),
        source,
    })?;
    for (i, s) in cfg.audit.sinks.iter().enumerate() {
        let key = format!("audit.sink[{i}]");
        let out = Output::new(s, &cfg.base_dir).map_err(|source| SinkSetupError::Output {
            key: key.clone(),
            source,
        })?;
        let pos_file = dir.join(format!("{}.seq", s.name));
        let mut delivered =
            read_position(&pos_file).map_err(|source| SinkSetupError::Position {
                key: key.clone(),
                source,
            })?;
        // A file sink can be ahead of its position (the gateway stopped between writing the
        // lines and the position): resume after the last whole line in the file, so nothing
        // is written twice.
        if let Output::File(f) = &out {
            let in_file = f
                .recover(s.format)
                .map_err(|source| SinkSetupError::Recover {
                    key: key.clone(),
                    path: f.path.clone(),
                    source,
                })?;
            if let Some(seq) = in_file.filter(|seq| *seq > delivered) {
                tracing::info!(sink = %s.name, position = delivered, in_file = seq, "file sink resumes after its last line");
                delivered = seq;
                write_position(&pos_file, seq).map_err(|source| SinkSetupError::SavePosition {
                    key: key.clone(),
                    source,
                })?;
            }
        }
        let batch = match s.kind {
            SinkKind::Http => s.batch(),
            _ => READ_BATCH,
        };
        tracing::info!(
            sink = %s.name,
            kind = ?s.kind,
            format = ?s.format,
            delivered,
            "audit sink configured"
        );
        let task = SinkTask {
            name: s.name.clone(),
            format: s.format,
            batch,
            lag_alert: s.lag_alert_records,
            pos_file,
            delivered,
            store: store.clone(),
            out,
            auditor: auditor.clone(),
        };
        tokio::spawn(task.run());
    }
    Ok(())
}

/// The seq a rendered line carries (`"seq"` of a JSON line, `cn1` of a CEF line).
fn line_seq(format: SinkFormat, line: &str) -> Option<u64> {
    match format {
        SinkFormat::Jsonl => serde_json::from_str::<serde_json::Value>(line)
            .ok()?
            .get("seq")?
            .as_u64(),
        SinkFormat::Cef => {
            let rest = line
                .split(" cn1=")
                .nth(1)
                .or_else(|| line.split("|cn1=").nth(1))?;
            rest.split(' ').next()?.parse().ok()
        }
    }
}

/// One rendered line per record (no trailing newline).
pub fn render(format: SinkFormat, r: &AuditRecord) -> String {
    match format {
        SinkFormat::Jsonl => r.export_json().to_string(),
        SinkFormat::Cef => crate::export::record_cef(r),
    }
}

struct SinkTask {
    name: String,
    format: SinkFormat,
    batch: usize,
    lag_alert: u64,
    pos_file: PathBuf,
    delivered: u64,
    store: SqliteStore,
    out: Output,
    /// Raises `audit.sink_lag` for `[[notify]]` (PCI DSS 10.7.2).
    auditor: Auditor,
}

impl SinkTask {
    async fn run(mut self) {
        let mut backoff = FIRST_BACKOFF;
        let mut last_alert: Option<Instant> = None;
        let mut warned_ahead = false;
        loop {
            let store = self.store.clone();
            let (after, limit) = (self.delivered, self.batch);
            let read = tokio::task::spawn_blocking(move || {
                let head = store.last_seq()?.unwrap_or(0);
                let records = store.records_after(after, limit)?;
                Ok::<_, gatehouse_store::StoreError>((head, records))
            })
            .await;
            let (head, records) = match read {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => {
                    tracing::warn!(sink = %self.name, error = %e, "audit sink cannot read the store");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
                Err(e) => {
                    tracing::error!(sink = %self.name, error = %e, "audit sink reader failed");
                    tokio::time::sleep(MAX_BACKOFF).await;
                    continue;
                }
            };
            if head < self.delivered && !warned_ahead {
                warned_ahead = true;
                tracing::warn!(
                    sink = %self.name,
                    delivered = self.delivered,
                    head,
                    "audit sink position is ahead of the store (was the store replaced?)"
                );
            }
            let lag = head.saturating_sub(self.delivered);
            metrics::gauge!("gatehouse_sink_lag_records", "sink" => self.name.clone())
                .set(lag as f64);
            if lag > self.lag_alert {
                if last_alert.is_none_or(|t| t.elapsed() >= ALERT_EVERY) {
                    last_alert = Some(Instant::now());
                    tracing::error!(
                        sink = %self.name,
                        lag,
                        threshold = self.lag_alert,
                        "audit sink is falling behind: records are waiting in the store"
                    );
                    self.auditor.raise_alert(AuditAlert::new(
                        AuditAlert::SINK_LAG,
                        format!(
                            "audit sink {} is {lag} records behind (threshold {})",
                            self.name, self.lag_alert
                        ),
                        lag,
                    ));
                }
            } else if last_alert.take().is_some() {
                tracing::info!(sink = %self.name, lag, "audit sink has caught up");
            }
            let Some(last) = records.last().map(|r| r.seq) else {
                tokio::time::sleep(POLL).await;
                continue;
            };
            let lines: Vec<String> = records.iter().map(|r| render(self.format, r)).collect();
            let first = records.first().map_or(last, |r| r.seq);
            if self.delivered > 0 && first > self.delivered + 1 {
                // Only retention deletes records: the sink was down longer than it keeps them.
                tracing::error!(
                    sink = %self.name,
                    missing_from = self.delivered + 1,
                    missing_to = first - 1,
                    "audit sink gap: records were purged by retention before delivery"
                );
            }
            let result = self.out.deliver(&records, &lines).await.and_then(|()| {
                write_position(&self.pos_file, last).map_err(DeliveryError::Position)
            });
            match result {
                Ok(()) => {
                    if backoff > FIRST_BACKOFF {
                        tracing::info!(sink = %self.name, seq = first, "audit sink delivering again");
                    }
                    backoff = FIRST_BACKOFF;
                    self.delivered = last;
                    metrics::counter!("gatehouse_sink_delivered_total", "sink" => self.name.clone())
                        .increment(records.len() as u64);
                    metrics::gauge!("gatehouse_sink_lag_records", "sink" => self.name.clone())
                        .set(head.saturating_sub(last) as f64);
                }
                Err(e) => {
                    tracing::warn!(
                        sink = %self.name,
                        from_seq = first,
                        retry_in_ms = backoff.as_millis() as u64,
                        error = with_sources(&e),
                        "audit sink delivery failed; will retry"
                    );
                    metrics::counter!("gatehouse_sink_failed_total", "sink" => self.name.clone())
                        .increment(1);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }
}

/// Where a sink delivers.
enum Output {
    File(FileOut),
    Syslog(SyslogOut),
    Http(HttpOut),
}

impl Output {
    fn new(s: &AuditSink, base_dir: &Path) -> Result<Self, OutputError> {
        Ok(match s.kind {
            SinkKind::File => {
                let path = s.file_path(base_dir).ok_or(OutputError::Missing("path"))?;
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).map_err(|source| OutputError::Dir {
                        path: dir.to_owned(),
                        source,
                    })?;
                }
                Self::File(FileOut::new(path, s.max_bytes(), s.keep()))
            }
            SinkKind::Syslog => Self::Syslog(SyslogOut::new(s)?),
            SinkKind::Http => {
                let url = s.url.clone().ok_or(OutputError::Missing("url"))?;
                let secret = match &s.secret_env {
                    Some(var) => match std::env::var(var) {
                        Ok(v) if !v.is_empty() => Some(Secret::new(v)),
                        _ => return Err(OutputError::SecretEnv(var.clone())),
                    },
                    None => None,
                };
                Self::Http(HttpOut::new(url, secret, s.format)?)
            }
        })
    }

    async fn deliver(
        &mut self,
        records: &[AuditRecord],
        lines: &[String],
    ) -> Result<(), DeliveryError> {
        match self {
            Self::File(f) => tokio::task::block_in_place(|| f.write(lines)),
            Self::Syslog(s) => s.send(records, lines).await,
            Self::Http(h) => h.post(records, lines).await,
        }
    }
}

#[cfg(test)]
mod config_tests {
    use gatehouse_core::config::Config;
    use std::path::Path;

    const BASE: &str = "[identity]\nlocal_issuer = true\n";

    fn parse(sinks: &str) -> Result<Config, String> {
        Config::from_toml(&format!("{BASE}{sinks}"), Path::new("/etc/gh"))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_and_paths() {
        let c =
            parse("[[audit.sink]]\nname = \"f\"\nkind = \"file\"\npath = \"out/a.log\"\n").unwrap();
        let s = &c.audit.sinks[0];
        assert_eq!(s.max_bytes(), 100 * 1024 * 1024);
        assert_eq!(s.keep(), 10);
        assert_eq!(s.lag_alert_records, 10_000);
        assert_eq!(
            s.file_path(&c.base_dir).unwrap(),
            Path::new("/etc/gh/out/a.log")
        );
    }

    #[test]
    fn rejections_name_the_key() {
        let cases = [
            (
                "[[audit.sink]]\nname = \"a\"\nkind = \"file\"\n",
                "audit.sink[0].path",
            ),
            (
                "[[audit.sink]]\nname = \"a\"\nkind = \"file\"\npath = \"x\"\nurl = \"https://h/\"\n",
                "audit.sink[0].url",
            ),
            (
                "[[audit.sink]]\nname = \"a\"\nkind = \"http\"\nurl = \"http://example.com/\"\n",
                "audit.sink[0].url",
            ),
            (
                "[[audit.sink]]\nname = \"a\"\nkind = \"syslog\"\naddress = \"nohost\"\n",
                "audit.sink[0].address",
            ),
            (
                "[[audit.sink]]\nname = \"a/b\"\nkind = \"syslog\"\naddress = \"h:514\"\n",
                "audit.sink[0].name",
            ),
            (
                "[[audit.sink]]\nname = \"a\"\nkind = \"syslog\"\naddress = \"h:514\"\n\
                 [[audit.sink]]\nname = \"a\"\nkind = \"syslog\"\naddress = \"h:514\"\n",
                "audit.sink[1].name",
            ),
            (
                "[[audit.sink]]\nname = \"a\"\nkind = \"file\"\npath = \"x\"\nmax_bytes = 10\n",
                "audit.sink[0].max_bytes",
            ),
            (
                "[[audit.sink]]\nname = \"a\"\nkind = \"http\"\nurl = \"https://h/\"\nbatch = 0\n",
                "audit.sink[0].batch",
            ),
        ];
        for (text, key) in cases {
            let err = parse(text).unwrap_err();
            assert!(err.starts_with(key), "{text}: {err}");
        }
        assert!(parse("[[audit.sink]]\nname = \"a\"\nkind = \"kafka\"\n").is_err());
        assert!(
            parse(
                "[[audit.sink]]\nname = \"s\"\nkind = \"syslog\"\naddress = \"siem.example:6514\"\n\
                 protocol = \"tcp\"\nformat = \"cef\"\n"
            )
            .is_ok()
        );
    }

    #[test]
    fn syslog_tls_keys() {
        let c = parse(
            "[[audit.sink]]\nname = \"s\"\nkind = \"syslog\"\naddress = \"siem.example:6514\"\n\
             protocol = \"tls\"\nca_file = \"certs/ca.pem\"\n",
        )
        .unwrap();
        let s = &c.audit.sinks[0];
        assert_eq!(
            s.ca_file.as_deref(),
            Some(Path::new("/etc/gh/certs/ca.pem"))
        );
        assert_eq!(s.tls_server_name().as_deref(), Some("siem.example"));
        let c = parse(
            "[[audit.sink]]\nname = \"s\"\nkind = \"syslog\"\naddress = \"[::1]:6514\"\n\
             protocol = \"tls\"\nserver_name = \"siem.internal\"\n",
        )
        .unwrap();
        assert_eq!(
            c.audit.sinks[0].tls_server_name().as_deref(),
            Some("siem.internal")
        );
        let cases = [
            (
                "[[audit.sink]]\nname = \"a\"\nkind = \"syslog\"\naddress = \"h:514\"\n\
                 protocol = \"tcp\"\nca_file = \"ca.pem\"\n",
                "audit.sink[0].ca_file",
            ),
            (
                "[[audit.sink]]\nname = \"a\"\nkind = \"syslog\"\naddress = \"h:514\"\n\
                 server_name = \"h\"\n",
                "audit.sink[0].server_name",
            ),
            (
                "[[audit.sink]]\nname = \"a\"\nkind = \"syslog\"\naddress = \"h:514\"\n\
                 protocol = \"tls\"\nserver_name = \"not a name\"\n",
                "audit.sink[0].server_name",
            ),
            (
                "[[audit.sink]]\nname = \"a\"\nkind = \"file\"\npath = \"x\"\n\
                 ca_file = \"ca.pem\"\n",
                "audit.sink[0].ca_file",
            ),
        ];
        for (text, key) in cases {
            let err = parse(text).unwrap_err();
            assert!(err.starts_with(key), "{text}: {err}");
        }
    }
}
