//! What can stop a report: a bad command line (format, period), an unreadable store, a report
//! that cannot be written. A chain that does not verify is not an error: the report is written
//! and says so.

use std::path::PathBuf;

use gatehouse_store::StoreError;

/// Why no report was produced. The texts name the `gatehouse evidence` flags they are about.
#[derive(Debug, thiserror::Error)]
pub enum EvidenceError {
    #[error("--format {0:?} is not supported (html, json, md)")]
    UnsupportedFormat(String),
    #[error("{flag} {value:?}: use a date (2026-11-22) or RFC 3339 (2026-11-22T10:00:00Z)")]
    BadTime { flag: &'static str, value: String },
    #[error("{flag} {value:?}: no day after it")]
    NoDayAfter { flag: &'static str, value: String },
    #[error("--from {from:?} is after --to {to:?}")]
    EmptyPeriod { from: String, to: String },
    /// The store's signed checkpoints could not be listed.
    #[error("{0}")]
    Checkpoints(StoreError),
    #[error("cannot read the audit store: {0}")]
    Read(StoreError),
    #[error("serializing the report")]
    Serialize(#[source] serde_json::Error),
    #[error("-o {}: not a file name", .0.display())]
    NotAFileName(PathBuf),
    #[error("writing {}", .path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}
