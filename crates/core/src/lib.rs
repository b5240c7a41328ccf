//! Gatehouse core: everything that does not depend on a wire protocol.
//!
//! Protocol adapters (PostgreSQL now; MySQL, SSH and HTTP later) translate their protocol into
//! the decision points here: who is this (`identity`), what happened (`audit`), under which
//! configuration (`config`). Keeping them protocol-agnostic is what lets every adapter produce
//! the same evidence.
#![forbid(unsafe_code)]

pub mod approvals;
pub mod audit;
pub mod config;
pub mod grants;
pub mod identity;
pub mod ids;
pub mod masking;
pub mod pan;
pub mod policy;
pub mod session;
pub mod upstream_tls;
