//! The audit trail: what happened, in order, provably unaltered.
//!
//! Adapters build an [`AuditEvent`] and hand it to the [`Auditor`], which gives it its
//! sequence number and chain hash and writes it into the [`journal`] from the session's own
//! task; the session waits only for durability (a shared group flush with fsync durability).
//! Write-ahead auditing is therefore "await the ack, then forward": if the ack is an error,
//! the statement never reaches the database (fail closed). The store (SQLite) is fed from the
//! same records in large batches and is what readers use.

mod chain;
mod checkpoint;
pub mod detail;
pub mod journal;
mod record;
mod writer;

pub use chain::{ChainVerifier, VerifyError, VerifyReport, verify_chain};
pub use checkpoint::{Checkpoint, CheckpointSigner};
pub use record::{
    AuditEvent, AuditRecord, Outcome, RecordKind, now_rfc3339, parse_rfc3339, rfc3339,
};
pub use writer::{
    AuditAlert, AuditError, AuditLog, Auditor, StoreFailure, WriterDone, WriterOptions,
    spawn_writer,
};
