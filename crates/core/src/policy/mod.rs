//! Statement policy: what a statement is (`analysis`), and what may be done with it
//! (`rules`, `decide`).
//!
//! The analysis types live here, protocol- and parser-independent, so that the SQL analyser
//! (`gatehouse-sql`, PostgreSQL's own parser) produces them and the rule engine consumes them
//! without depending on each other.

pub mod analysis;

pub use analysis::{ColumnRef, StatementInfo, TableRef};
