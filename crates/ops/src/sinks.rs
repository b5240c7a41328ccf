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

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use gatehouse_core::audit::{AuditAlert, AuditRecord, Auditor};
use gatehouse_core::config::{AuditSink, Config, Secret, SinkFormat, SinkKind, SyslogProtocol};
use gatehouse_store::SqliteStore;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::position::{read_position, write_position};

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
/// A UDP syslog message is cut to this many bytes (one datagram).
const UDP_MAX: usize = 60_000;

use crate::notify::{SIGNATURE_HEADER, TIMESTAMP_HEADER};

/// Starts one delivery task per `[[audit.sink]]`. Fails when a sink cannot be set up (its
/// position file unreadable, a secret missing), so a misconfigured sink is found at start.
pub fn spawn(cfg: &Config, store: &SqliteStore, auditor: &Auditor) -> Result<()> {
    if cfg.audit.sinks.is_empty() {
        return Ok(());
    }
    let dir = cfg.data_dir.join("sinks");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for (i, s) in cfg.audit.sinks.iter().enumerate() {
        let key = format!("audit.sink[{i}]");
        let out = Output::new(s, &cfg.base_dir).with_context(|| key.clone())?;
        let pos_file = dir.join(format!("{}.seq", s.name));
        let mut delivered = read_position(&pos_file).with_context(|| key.clone())?;
        // A file sink can be ahead of its position (the gateway stopped between writing the
        // lines and the position): resume after the last whole line in the file, so nothing
        // is written twice.
        if let Output::File(f) = &out {
            let in_file = f
                .recover(s.format)
                .with_context(|| format!("{key}: reading {}", f.path.display()))?;
            if let Some(seq) = in_file.filter(|seq| *seq > delivered) {
                tracing::info!(sink = %s.name, position = delivered, in_file = seq, "file sink resumes after its last line");
                delivered = seq;
                write_position(&pos_file, seq).with_context(|| key.clone())?;
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
                write_position(&self.pos_file, last).context("cannot persist the sink position")
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
                        error = format!("{e:#}"),
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

enum Output {
    File(FileOut),
    Syslog(SyslogOut),
    Http(HttpOut),
}

impl Output {
    fn new(s: &AuditSink, base_dir: &Path) -> Result<Self> {
        Ok(match s.kind {
            SinkKind::File => {
                let path = s
                    .file_path(base_dir)
                    .ok_or_else(|| anyhow!("path is required"))?;
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)
                        .with_context(|| format!("cannot create {}", dir.display()))?;
                }
                Self::File(FileOut {
                    path,
                    max_bytes: s.max_bytes(),
                    keep: s.keep(),
                    file: None,
                    size: 0,
                })
            }
            SinkKind::Syslog => Self::Syslog(SyslogOut {
                address: s
                    .address
                    .clone()
                    .ok_or_else(|| anyhow!("address is required"))?,
                protocol: s.protocol(),
                hostname: hostname(),
                tls: match s.protocol() {
                    SyslogProtocol::Tls => Some(syslog_tls(s)?),
                    _ => None,
                },
                stream: None,
                udp: None,
            }),
            SinkKind::Http => {
                let url = s.url.clone().ok_or_else(|| anyhow!("url is required"))?;
                let secret = match &s.secret_env {
                    Some(var) => match std::env::var(var) {
                        Ok(v) if !v.is_empty() => Some(Secret::new(v)),
                        _ => bail!("secret_env: environment variable {var} is not set or empty"),
                    },
                    None => None,
                };
                Self::Http(HttpOut {
                    client: crate::notify::http_client(&url, IO_TIMEOUT)?,
                    url,
                    secret,
                    format: s.format,
                })
            }
        })
    }

    async fn deliver(&mut self, records: &[AuditRecord], lines: &[String]) -> Result<()> {
        match self {
            Self::File(f) => tokio::task::block_in_place(|| f.write(lines)),
            Self::Syslog(s) => s.send(records, lines).await,
            Self::Http(h) => h.post(records, lines).await,
        }
    }
}

// --- file -------------------------------------------------------------------------------------

struct FileOut {
    path: PathBuf,
    max_bytes: u64,
    keep: u32,
    file: Option<std::fs::File>,
    size: u64,
}

impl FileOut {
    /// At start: drops a partial last line (a write cut short) and returns the seq of the last
    /// whole line, if the file has one.
    fn recover(&self, format: SinkFormat) -> Result<Option<u64>> {
        use std::io::{Read, Seek, SeekFrom};
        let mut f = match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let len = f.metadata()?.len();
        let start = len.saturating_sub(256 * 1024);
        f.seek(SeekFrom::Start(start))?;
        let mut tail = Vec::new();
        f.read_to_end(&mut tail)?;
        let whole = tail.iter().rposition(|b| *b == b'\n').map_or(0, |p| p + 1);
        if whole < tail.len() {
            let keep = start + whole as u64;
            tracing::warn!(path = %self.path.display(), bytes = len - keep, "file sink: dropping a partial last line");
            f.set_len(keep)?;
            f.sync_data()?;
        }
        let lines = tail.get(..whole).unwrap_or_default();
        let last = lines
            .strip_suffix(b"\n")
            .and_then(|l| l.rsplit(|b| *b == b'\n').next())
            .and_then(|l| std::str::from_utf8(l).ok());
        Ok(last.and_then(|l| line_seq(format, l)))
    }

    fn open(&mut self) -> Result<()> {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .with_context(|| format!("cannot open {}", self.path.display()))?;
        self.size = f.metadata()?.len();
        self.file = Some(f);
        Ok(())
    }

    /// `path` becomes `path.1`, `path.1` becomes `path.2`, ... ; `path.<keep>` is removed.
    fn rotate(&mut self) -> Result<()> {
        self.file = None;
        let numbered = |n: u32| {
            let mut p = self.path.clone().into_os_string();
            p.push(format!(".{n}"));
            PathBuf::from(p)
        };
        let _ = std::fs::remove_file(numbered(self.keep));
        for n in (1..self.keep).rev() {
            let from = numbered(n);
            if from.exists() {
                std::fs::rename(&from, numbered(n + 1))
                    .with_context(|| format!("cannot rotate {}", from.display()))?;
            }
        }
        std::fs::rename(&self.path, numbered(1))
            .with_context(|| format!("cannot rotate {}", self.path.display()))?;
        self.open()
    }

    fn write(&mut self, lines: &[String]) -> Result<()> {
        if self.file.is_none() {
            self.open()?;
        }
        for line in lines {
            let len = line.len() as u64 + 1;
            if self.size > 0 && self.size + len > self.max_bytes {
                if let Some(f) = &self.file {
                    f.sync_data()?;
                }
                self.rotate()?;
            }
            let Some(f) = self.file.as_mut() else {
                bail!("{} is not open", self.path.display());
            };
            let mut buf = Vec::with_capacity(line.len() + 1);
            buf.extend_from_slice(line.as_bytes());
            buf.push(b'\n');
            if let Err(e) = f.write_all(&buf) {
                // Reopen next time: a partial line is possible, the retry appends it whole.
                self.file = None;
                return Err(e).with_context(|| format!("cannot write {}", self.path.display()));
            }
            self.size += len;
        }
        if let Some(f) = &self.file {
            f.sync_data()
                .with_context(|| format!("cannot sync {}", self.path.display()))?;
        }
        Ok(())
    }
}

// --- syslog -----------------------------------------------------------------------------------

struct SyslogOut {
    address: String,
    protocol: SyslogProtocol,
    hostname: String,
    /// `protocol = "tls"`: the connector and the name the server certificate must match.
    tls: Option<(
        tokio_rustls::TlsConnector,
        rustls_pki_types::ServerName<'static>,
    )>,
    /// The TCP or TLS connection (kept open between batches).
    stream: Option<Box<dyn AsyncWrite + Unpin + Send>>,
    udp: Option<tokio::net::UdpSocket>,
}

/// The TLS client of a `protocol = "tls"` syslog sink: only the `ca_file` roots when set,
/// else the platform trust store (like the HTTP clients); the certificate is always verified.
fn syslog_tls(
    s: &AuditSink,
) -> Result<(
    tokio_rustls::TlsConnector,
    rustls_pki_types::ServerName<'static>,
)> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?;
    let cfg = match &s.ca_file {
        Some(path) => {
            let pem = std::fs::read(path)
                .with_context(|| format!("ca_file: cannot read {}", path.display()))?;
            let mut roots = rustls::RootCertStore::empty();
            for cert in rustls_pki_types::pem::PemObject::pem_slice_iter(&pem) {
                let cert: rustls_pki_types::CertificateDer<'static> =
                    cert.map_err(|e| anyhow!("ca_file: {} is not PEM: {e}", path.display()))?;
                roots.add(cert).map_err(|e| {
                    anyhow!("ca_file: bad CA certificate in {}: {e}", path.display())
                })?;
            }
            if roots.is_empty() {
                bail!("ca_file: {} contains no certificate", path.display());
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        None => {
            use rustls_platform_verifier::BuilderVerifierExt;
            builder
                .with_platform_verifier()
                .context("cannot load the platform trust store")?
                .with_no_client_auth()
        }
    };
    let name = s
        .tls_server_name()
        .ok_or_else(|| anyhow!("address is required"))?;
    let name =
        rustls_pki_types::ServerName::try_from(name).map_err(|e| anyhow!("server_name: {e}"))?;
    Ok((tokio_rustls::TlsConnector::from(Arc::new(cfg)), name))
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_graphic()))
        .unwrap_or_else(|| "-".to_owned())
}

/// An RFC 5424 message: facility `log audit` (13); warning for the records CEF rates 7 or
/// more, notice otherwise; APP-NAME `gatehouse`, MSGID the record kind.
pub fn syslog_message(hostname: &str, r: &AuditRecord, body: &str) -> String {
    let severity = if crate::export::cef_severity(r) >= 7 {
        4
    } else {
        5
    };
    format!(
        "<{}>1 {} {hostname} gatehouse - {} - {body}",
        13 * 8 + severity,
        r.event.time,
        r.event.kind.as_str()
    )
}

impl SyslogOut {
    async fn send(&mut self, records: &[AuditRecord], lines: &[String]) -> Result<()> {
        match self.protocol {
            SyslogProtocol::Tcp | SyslogProtocol::Tls => {
                let mut buf = Vec::new();
                for (r, line) in records.iter().zip(lines) {
                    let msg = syslog_message(&self.hostname, r, line);
                    buf.extend_from_slice(format!("{} ", msg.len()).as_bytes());
                    buf.extend_from_slice(msg.as_bytes());
                }
                if self.stream.is_none() {
                    let tcp = tokio::time::timeout(
                        IO_TIMEOUT,
                        tokio::net::TcpStream::connect(&self.address),
                    )
                    .await
                    .map_err(|_| anyhow!("connecting to {} timed out", self.address))?
                    .with_context(|| format!("cannot connect to {}", self.address))?;
                    self.stream = Some(match &self.tls {
                        None => Box::new(tcp),
                        Some((connector, name)) => Box::new(
                            tokio::time::timeout(IO_TIMEOUT, connector.connect(name.clone(), tcp))
                                .await
                                .map_err(|_| {
                                    anyhow!("TLS handshake with {} timed out", self.address)
                                })?
                                .with_context(|| {
                                    format!("TLS handshake with {} failed", self.address)
                                })?,
                        ),
                    });
                }
                let Some(s) = self.stream.as_mut() else {
                    bail!("not connected");
                };
                let sent = tokio::time::timeout(IO_TIMEOUT, async {
                    s.write_all(&buf).await?;
                    s.flush().await
                })
                .await;
                match sent {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => {
                        self.stream = None;
                        Err(e).with_context(|| format!("cannot send to {}", self.address))
                    }
                    Err(_) => {
                        self.stream = None;
                        bail!("sending to {} timed out", self.address)
                    }
                }
            }
            SyslogProtocol::Udp => {
                if self.udp.is_none() {
                    let sock = tokio::net::UdpSocket::bind(if self.address.starts_with('[') {
                        "[::]:0"
                    } else {
                        "0.0.0.0:0"
                    })
                    .await?;
                    sock.connect(&self.address)
                        .await
                        .with_context(|| format!("cannot resolve {}", self.address))?;
                    self.udp = Some(sock);
                }
                let Some(sock) = self.udp.as_ref() else {
                    bail!("no socket");
                };
                for (r, line) in records.iter().zip(lines) {
                    let msg = syslog_message(&self.hostname, r, line);
                    let bytes = msg.as_bytes();
                    let bytes = bytes.get(..UDP_MAX.min(bytes.len())).unwrap_or(bytes);
                    if let Err(e) = sock.send(bytes).await {
                        self.udp = None;
                        return Err(e).with_context(|| format!("cannot send to {}", self.address));
                    }
                }
                Ok(())
            }
        }
    }
}

// --- http -------------------------------------------------------------------------------------

struct HttpOut {
    client: reqwest::Client,
    url: String,
    secret: Option<Secret>,
    format: SinkFormat,
}

impl HttpOut {
    /// One POST per batch: the lines joined by `\n` (NDJSON for jsonl), with the seq range
    /// in `X-Gatehouse-First-Seq`/`X-Gatehouse-Last-Seq`; any 2xx is success.
    async fn post(&mut self, records: &[AuditRecord], lines: &[String]) -> Result<()> {
        let mut body = lines.join("\n");
        body.push('\n');
        let first = records.first().map_or(0, |r| r.seq);
        let last = records.last().map_or(0, |r| r.seq);
        let content_type = match self.format {
            SinkFormat::Jsonl => "application/x-ndjson",
            SinkFormat::Cef => "text/plain; charset=utf-8",
        };
        let mut req = self
            .client
            .post(&self.url)
            .header("content-type", content_type)
            .header("x-gatehouse-first-seq", first.to_string())
            .header("x-gatehouse-last-seq", last.to_string());
        if let Some(secret) = &self.secret {
            let ts = crate::notify::unix_now();
            let sig = crate::notify::signature(secret.expose().as_bytes(), ts, body.as_bytes());
            req = req
                .header(TIMESTAMP_HEADER, ts.to_string())
                .header(SIGNATURE_HEADER, sig);
        }
        // The error text of reqwest can hold the URL (and its token): report the kind only.
        let resp = req.body(body).send().await.map_err(|e| {
            anyhow!(
                "POST failed ({})",
                if e.is_timeout() {
                    "timeout"
                } else if e.is_connect() {
                    "cannot connect"
                } else {
                    "request error"
                }
            )
        })?;
        let status = resp.status();
        if !status.is_success() {
            bail!("POST answered {status}");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_core::audit::{AuditEvent, RecordKind};

    #[test]
    fn syslog_message_is_rfc5424() {
        let mut ev = AuditEvent::new(RecordKind::LoginFailed, "s");
        ev.time = "2026-01-02T03:04:05.000001Z".into();
        let r = AuditRecord {
            seq: 1,
            event: ev,
            prev_hash: "a".into(),
            hash: "b".into(),
        };
        assert_eq!(
            syslog_message("h", &r, "body"),
            "<108>1 2026-01-02T03:04:05.000001Z h gatehouse - login_failed - body"
        );
    }

    #[test]
    fn file_rotation_keeps_n() {
        let dir = std::env::temp_dir().join(format!("gh-sink-rot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut f = FileOut {
            path: dir.join("a.log"),
            max_bytes: 20,
            keep: 2,
            file: None,
            size: 0,
        };
        let lines: Vec<String> = (0..5).map(|i| format!("line-{i}-xxxxxx")).collect();
        f.write(&lines).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.join("a.log")).unwrap(),
            "line-4-xxxxxx\n"
        );
        assert_eq!(
            std::fs::read_to_string(dir.join("a.log.1")).unwrap(),
            "line-3-xxxxxx\n"
        );
        assert!(dir.join("a.log.2").exists());
        assert!(!dir.join("a.log.3").exists());
        std::fs::remove_dir_all(&dir).unwrap();
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
