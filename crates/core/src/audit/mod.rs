//! The audit trail: what happened, in order, provably unaltered.
//!
//! Adapters build an [`AuditEvent`] and hand it to the [`Auditor`]. The auditor's writer task
//! gives events their sequence number and chain hash and makes them durable in batches (group
//! commit), answering each submitter only once its batch is stored. Write-ahead auditing is
//! therefore "await the ack, then forward": if the ack is an error, the statement never
//! reaches the database (fail closed).

mod chain;
mod checkpoint;
mod record;
mod writer;

pub use chain::{ChainVerifier, VerifyError, VerifyReport, verify_chain};
pub use checkpoint::{Checkpoint, CheckpointSigner};
pub use record::{
    AuditEvent, AuditRecord, Outcome, RecordKind, now_rfc3339, parse_rfc3339, rfc3339,
};
pub use writer::{
    AuditAlert, AuditError, AuditLog, Auditor, StoreFailure, WriterDone, spawn_writer,
};
