//! Reads of the audit store from the command line become audit records (PCI DSS 10.2.1.3:
//! access to the audit logs is itself logged).
//!
//! The CLI cannot append to the chain itself: the running gateway's writer owns the chain head,
//! and a second writer would fork it. So each reading command (`audit export`, `audit verify`,
//! `evidence`, `sessions list|show|replay`) leaves one JSON line in a drop box,
//! `data_dir/audit-access.jsonl`, and the gateway chains every new line as an `admin` record
//! (`detail.event` = `audit_read`, `detail.via` = `cli`) within [`INGEST_EVERY`], or at its
//! next start when it is not running. It keeps the byte offset of what it has chained in
//! `data_dir/audit-access.offset`, written only after the records are durable, so a line is
//! never lost; a crash between the two can chain one batch twice (visible by `read_at` and
//! `pid`), never drop it.
//!
//! Fail closed: the drop box is opened before the command reads anything; if it cannot be
//! opened the command refuses to run. The line is written when the command ends (with its
//! result), so a run never reads its own access record and counts stay stable while a report
//! is produced. Lines the gateway cannot parse are still recorded (as `invalid`, with their
//! size and hash, never their text); a drop box that shrank below the saved offset is
//! recorded too and read again from its start.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use gatehouse_core::audit::detail::{
    AuditAccessLogTruncated, CliAuditRead, CliAuditReadInvalid, Detail, DetailEvent, ReadVia,
};
use gatehouse_core::audit::{AuditAlert, AuditEvent, Auditor, RecordKind, now_rfc3339};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use crate::error_text::with_sources;
use crate::position::{PositionError, read_position, write_position};

/// The drop box, under `data_dir`.
pub const DROP_BOX: &str = "audit-access.jsonl";
/// How far the gateway has chained the drop box (bytes), under `data_dir`.
pub const OFFSET_FILE: &str = "audit-access.offset";
/// How often the running gateway chains new lines.
pub const INGEST_EVERY: Duration = Duration::from_secs(2);
/// While chaining keeps failing, the `audit.access_log_failed` alert is repeated this often.
const ALERT_EVERY: Duration = Duration::from_secs(60);
/// A line longer than this is not a CLI record (it is chained as `invalid`).
const MAX_LINE: usize = 64 * 1024;
/// Bytes read per pass; more lines wait for the next pass.
const MAX_PASS: u64 = 4 * 1024 * 1024;

/// One read of the audit store by a CLI command: the drop box's line format.
#[derive(Debug, Serialize, Deserialize)]
pub struct CliRead {
    /// What was read: `export`, `verify`, `evidence`, `sessions_list`, `session`, `replay`.
    pub what: String,
    /// The command's arguments that say what was read (period, session, format, output file).
    #[serde(default)]
    pub args: serde_json::Value,
    /// When the command ended (RFC 3339).
    #[serde(default)]
    pub read_at: String,
    /// `ok`, `failed` (non-zero exit) or `error`.
    #[serde(default)]
    pub result: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The operating-system account that ran the command.
    #[serde(default)]
    pub os_user: Option<String>,
    #[serde(default)]
    pub uid: Option<u32>,
    #[serde(default)]
    pub pid: u32,
}

/// How a reading command ended, as its drop-box line says (`result`, `error`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadResult {
    /// It ran and succeeded.
    Ok,
    /// It ran and exited non-zero (a chain that does not verify, say).
    Failed,
    /// It stopped on this error (recorded cut to 500 characters).
    Error(String),
}

/// The drop box could not be opened or written: the read must not happen, or must fail.
#[derive(Debug, thiserror::Error)]
pub enum AccessLogError {
    #[error(
        "cannot record this read of the audit store in {} (PCI DSS 10.2.1.3: access to the \
         audit logs is logged); refusing to read",
        .path.display()
    )]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Serialize(serde_json::Error),
    #[error("recording this read in {}", .path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The drop box, opened by a reading command before it reads.
pub struct AccessLog {
    file: File,
    path: PathBuf,
}

impl AccessLog {
    /// Opens (creating, mode 0600) the drop box under `data_dir`. Failing here must stop the
    /// command: a read that cannot be recorded does not happen.
    pub fn open(data_dir: &Path) -> Result<Self, AccessLogError> {
        let path = data_dir.join(DROP_BOX);
        match OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(file) => Ok(Self { file, path }),
            Err(source) => Err(AccessLogError::Open { path, source }),
        }
    }

    /// Writes the command's line (one `write`, O_APPEND, then fsync).
    pub fn record(
        mut self,
        what: &str,
        args: serde_json::Value,
        result: &ReadResult,
    ) -> Result<(), AccessLogError> {
        let (result, error) = match result {
            ReadResult::Ok => ("ok", None),
            ReadResult::Failed => ("failed", None),
            ReadResult::Error(e) => ("error", Some(truncate(e, 500))),
        };
        let uid = std::fs::metadata("/proc/self").ok().map(|m| m.uid());
        let line = CliRead {
            what: what.to_owned(),
            args,
            read_at: now_rfc3339(),
            result: result.to_owned(),
            error,
            os_user: uid
                .and_then(user_name)
                .or_else(|| std::env::var("USER").ok()),
            uid,
            pid: std::process::id(),
        };
        let mut text = serde_json::to_string(&line).map_err(AccessLogError::Serialize)?;
        text.push('\n');
        self.file
            .write_all(text.as_bytes())
            .and_then(|()| self.file.sync_data())
            .map_err(|source| AccessLogError::Write {
                path: self.path.clone(),
                source,
            })
    }
}

fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", s.get(..i).unwrap_or_default()),
        None => s.to_owned(),
    }
}

/// The account name of `uid` from /etc/passwd (no NSS: this is a record, not an access check).
fn user_name(uid: u32) -> Option<String> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let mut f = l.split(':');
        let name = f.next()?;
        let id: u32 = f.nth(1)?.parse().ok()?;
        (id == uid).then(|| name.to_owned())
    })
}

// ---------------------------------------------------------------------------------------------
// Gateway side

/// Chains the drop box's new lines at start and every [`INGEST_EVERY`] until `stop`, with a
/// last pass when stopping.
pub fn spawn(
    data_dir: PathBuf,
    auditor: Auditor,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(INGEST_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_alert: Option<std::time::Instant> = None;
        loop {
            let stopping = tokio::select! {
                _ = tick.tick() => false,
                r = stop.wait_for(|s| *s) => {
                    let _ = r;
                    true
                }
            };
            match ingest(&data_dir, &auditor).await {
                Ok(_) => {
                    if last_alert.take().is_some() {
                        tracing::info!("CLI reads of the audit store are chained again");
                    }
                }
                Err(e) => {
                    // A failure of the control itself (10.7.2): alert, not just log.
                    tracing::error!(error = %e, "CLI reads of the audit store could not be chained");
                    if last_alert.is_none_or(|t| t.elapsed() >= ALERT_EVERY) {
                        last_alert = Some(std::time::Instant::now());
                        metrics::counter!("gatehouse_audit_access_log_failures_total").increment(1);
                        auditor.raise_alert(AuditAlert::new(
                            AuditAlert::ACCESS_LOG_FAILED,
                            format!(
                                "CLI reads of the audit store could not be chained: {}",
                                with_sources(&e)
                            ),
                            0,
                        ));
                    }
                }
            }
            if stopping {
                return;
            }
        }
    })
}

/// Why new drop-box lines were not chained this pass (they are tried again the next).
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("drop box reader: {0}")]
    Reader(tokio::task::JoinError),
    #[error("opening {}", .path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Read(#[from] std::io::Error),
    #[error(transparent)]
    Offset(#[from] PositionError),
    #[error("{0}")]
    Record(gatehouse_core::audit::AuditError),
    #[error("offset writer: {0}")]
    OffsetWriter(tokio::task::JoinError),
    #[error("writing {}", .path.display())]
    SaveOffset {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// One pass: reads the lines after the saved offset, records them, then saves the new offset.
/// Returns how many records were written.
pub async fn ingest(data_dir: &Path, auditor: &Auditor) -> Result<usize, IngestError> {
    let dir = data_dir.to_owned();
    let pass = tokio::task::spawn_blocking(move || read_pass(&dir))
        .await
        .map_err(IngestError::Reader)??;
    let Some(pass) = pass else {
        return Ok(0);
    };
    let n = pass.events.len();
    if n > 0 {
        auditor
            .record_many(pass.events)
            .await
            .map_err(IngestError::Record)?;
    }
    let dir = data_dir.to_owned();
    tokio::task::spawn_blocking(move || save_offset(&dir, pass.new_offset))
        .await
        .map_err(IngestError::OffsetWriter)??;
    Ok(n)
}

struct Pass {
    events: Vec<AuditEvent>,
    new_offset: u64,
}

fn read_pass(data_dir: &Path) -> Result<Option<Pass>, IngestError> {
    let path = data_dir.join(DROP_BOX);
    let mut file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(IngestError::Open { path, source }),
    };
    let size = file.metadata()?.len();
    let mut offset = load_offset(data_dir)?;
    let mut events = Vec::new();
    if size < offset {
        // Someone truncated or replaced the drop box: say so, and read it from the start.
        events.push(
            AuditEvent::new(RecordKind::Admin, String::new()).with_detail(
                AuditAccessLogTruncated {
                    event: DetailEvent::AuditAccessLogTruncated,
                    via: ReadVia::Cli,
                    offset,
                    size,
                }
                .to_value(),
            ),
        );
        offset = 0;
    }
    if size == offset && events.is_empty() {
        return Ok(None);
    }
    file.seek(SeekFrom::Start(offset))?;
    let mut buf = Vec::new();
    file.take(MAX_PASS).read_to_end(&mut buf)?;
    let mut consumed = 0usize;
    let mut rest = buf.as_slice();
    while let Some(nl) = rest.iter().position(|b| *b == b'\n') {
        let (line, tail) = rest.split_at(nl);
        events.push(event_for(line));
        consumed += nl + 1;
        rest = tail.get(1..).unwrap_or_default();
    }
    if consumed == 0 && rest.len() as u64 >= MAX_PASS.min(MAX_LINE as u64) {
        // No line end in a long run of bytes: not something the CLI wrote; chain it as
        // invalid and move past it rather than stall on it.
        events.push(event_for(rest));
        consumed = rest.len();
    }
    Ok(Some(Pass {
        events,
        new_offset: offset + consumed as u64,
    }))
}

/// The audit event for one drop-box line.
fn event_for(line: &[u8]) -> AuditEvent {
    let parsed = (line.len() <= MAX_LINE)
        .then(|| serde_json::from_slice::<CliRead>(line).ok())
        .flatten();
    let mut ev = AuditEvent::new(RecordKind::Admin, String::new());
    match parsed {
        Some(r) => {
            ev.subject = r.os_user.as_ref().map(|u| format!("os:{u}"));
            ev.with_detail(
                CliAuditRead {
                    event: DetailEvent::AuditRead,
                    via: ReadVia::Cli,
                    what: r.what,
                    args: r.args,
                    read_at: r.read_at,
                    result: r.result,
                    error: r.error,
                    os_user: r.os_user,
                    uid: r.uid,
                    pid: r.pid,
                }
                .to_value(),
            )
        }
        None => ev.with_detail(
            CliAuditReadInvalid {
                event: DetailEvent::AuditRead,
                via: ReadVia::Cli,
                invalid: true,
                bytes: line.len(),
                sha256: hex::encode(Sha256::digest(line)),
            }
            .to_value(),
        ),
    }
}

fn load_offset(data_dir: &Path) -> Result<u64, PositionError> {
    read_position(&data_dir.join(OFFSET_FILE))
}

fn save_offset(data_dir: &Path, offset: u64) -> Result<(), IngestError> {
    let path = data_dir.join(OFFSET_FILE);
    write_position(&path, offset).map_err(|source| IngestError::SaveOffset { path, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_round_trips_and_junk_is_invalid() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let log = AccessLog::open(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        log.record(
            "export",
            serde_json::json!({"format": "jsonl"}),
            &ReadResult::Ok,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let text = std::fs::read_to_string(dir.path().join(DROP_BOX)).unwrap_or_default();
        let ev = event_for(text.trim_end().as_bytes());
        let d: serde_json::Value =
            serde_json::from_str(ev.detail.as_deref().unwrap_or("null")).unwrap_or_default();
        assert_eq!(d["what"], "export");
        assert_eq!(d["result"], "ok");
        assert_eq!(d["args"]["format"], "jsonl");
        let junk = event_for(b"{not json 4111111111111111");
        let text = junk.detail.unwrap_or_default();
        assert!(text.contains("\"invalid\":true"), "{text}");
        assert!(!text.contains("4111"), "{text}");
    }

    #[test]
    fn a_pass_reads_only_whole_lines_and_resumes() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let p = dir.path().join(DROP_BOX);
        std::fs::write(&p, b"{\"what\":\"export\"}\n{\"what\":\"ver").unwrap_or_default();
        let pass = read_pass(dir.path())
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("no pass"));
        assert_eq!(pass.events.len(), 1);
        assert_eq!(pass.new_offset, 18);
        save_offset(dir.path(), pass.new_offset).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(&p, b"{\"what\":\"export\"}\n{\"what\":\"verify\"}\n").unwrap_or_default();
        let pass = read_pass(dir.path())
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("no pass"));
        assert_eq!(pass.events.len(), 1);
        save_offset(dir.path(), pass.new_offset).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            read_pass(dir.path())
                .unwrap_or_else(|e| panic!("{e}"))
                .is_none()
        );
        // Shrunk below the offset: recorded, and read again from the start.
        std::fs::write(&p, b"{\"what\":\"x\"}\n").unwrap_or_default();
        let pass = read_pass(dir.path())
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("no pass"));
        assert_eq!(pass.events.len(), 2);
        let first = pass.events.first().and_then(|e| e.detail.clone());
        assert!(
            first
                .unwrap_or_default()
                .contains("audit_access_log_truncated")
        );
    }
}
