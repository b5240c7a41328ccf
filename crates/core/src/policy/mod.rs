//! Statement policy: what a statement is (`analysis`), and what may be done with it
//! (`rules`, `decide`).
//!
//! The analysis types live here, protocol- and parser-independent, so that the SQL analyser
//! (`gatehouse-sql`, PostgreSQL's own parser) produces them and the rule engine consumes them
//! without depending on each other.

pub mod analysis;
pub mod decide;
pub mod judgement;
pub mod pattern;
pub mod rules;
pub mod settings;

pub use analysis::{
    ColumnRef, ColumnUses, Compared, CopyInfo, OutputColumn, StatementInfo, TableRef,
};
pub use decide::{DDL_KINDS, DML_KINDS, Decision, Policy};
pub use judgement::{Judgement, UNPARSEABLE_RULE};
pub use rules::{
    Action, BUILTIN_PREFIX, DEFAULT_LIMIT_ABOVE, Rule, RuleError, STATEMENT_KINDS, validate_rules,
};
