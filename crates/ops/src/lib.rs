//! Operations on the audit trail: delivery to SIEM sinks, webhook notifications, failures of
//! the audit control turned into records, the background care of the chain (verification,
//! retention), the record of who read the audit data, exports and the PCI DSS evidence report.
//!
//! Why a crate of its own: none of this is protocol work (it never sees a wire message, only
//! the audit records and the books in `gatehouse-core`), and all of it used to live in the
//! `gatehouse` binary, where the only way to exercise it was to spawn the process. Here the
//! binary keeps the command line and the wiring of `serve`, and calls these modules; tests
//! reach them directly (a report built from a store, a sink's rendering, a drop-box pass)
//! without starting a gateway. Adapters for other protocols leave records of the same kinds,
//! so everything here serves them unchanged.
//!
//! What runs while the gateway serves ([`notify`], [`sinks`], [`alert_records`],
//! [`audit_tasks`], the gateway side of [`audit_access`]) is started by `spawn` functions
//! that take the shared handles (the store, the `Auditor`, the stop signal) and never block a
//! session: each reads the store or a broadcast channel on its own task. What a command runs
//! once ([`evidence`], [`export`], the CLI side of [`audit_access`]) only reads the store.
#![forbid(unsafe_code)]

pub mod alert_records;
pub mod audit_access;
pub mod audit_tasks;
mod error_text;
pub mod evidence;
pub mod export;
pub mod notify;
mod position;
pub mod signed_http;
pub mod sinks;

pub use position::PositionError;
