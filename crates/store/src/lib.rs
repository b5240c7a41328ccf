//! Durable storage of the audit chain.
//!
//! The store only persists and reads back what the core hands it; it never computes hashes
//! or decides anything, so a second backend (PostgreSQL, for several replicas) has one small
//! surface to implement: [`gatehouse_core::audit::AuditLog`] plus the read queries below.
//!
//! The SQLite backend is synchronous on purpose: the audit writer runs on its own thread and
//! calls SQLite directly, so a group commit costs one thread wake-up and one fsync, not a
//! series of hops between async tasks and a database worker thread.
#![forbid(unsafe_code)]

mod migrate;
mod sqlite;

pub use sqlite::{Durability, SessionSummary, SqliteStore, SqliteWriter, StoreError};
