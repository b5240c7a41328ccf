//! The integration tests of the gateway: one test binary, one support harness.
//!
//! Why one binary: each file under `tests/` used to be its own crate, compiling and linking its
//! own copy of the harness and starting its own PostgreSQL. Here every module shares one build,
//! one link and one throwaway cluster ([`support::cluster`]); each module keeps to its own
//! databases and roles so that modules running side by side cannot see each other's data.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

mod approvals;
mod audit;
mod audit_access;
mod audit_alerts;
mod auth;
mod clients;
mod durability;
mod evidence;
mod grants;
mod inference;
mod masking;
mod mysql;
mod noninterference;
mod notify;
mod passthrough;
mod policy;
mod pooling;
mod retention;
mod robustness;
mod rules;
mod sinks;
mod upstream_tls;
