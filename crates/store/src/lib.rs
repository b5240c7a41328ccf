//! Durable storage of the audit chain.
//!
//! The store only persists and reads back what the core hands it; it never computes hashes
//! or decides anything, so a second backend (PostgreSQL, for several replicas) has one small
//! surface to implement: [`gatehouse_core::audit::AuditLog`] plus the read queries below.
#![forbid(unsafe_code)]

mod sqlite;

pub use sqlite::{SessionSummary, SqliteStore, StoreError};
