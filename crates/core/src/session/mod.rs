//! The protocol-agnostic session: everything an adapter asks of the gate that is not wire
//! translation.
//!
//! Why here: the same identities, grants, approvals, audit chain and evidence must hold for
//! PostgreSQL, MySQL, SSH and HTTP. If each adapter wrote its own admission, its own
//! `session_start` and `approval` records and its own hold loop, the evidence would be only
//! as consistent as the least careful adapter. An adapter does three things with this module:
//!
//! 1. [`Gate::admit`] an identity (token → principal → connection → `allow_groups` or an
//!    access grant); every refusal is recorded as `login_failed` with a stable reason, and the
//!    adapter only maps the [`LoginRefusal`] to its protocol's error.
//! 2. [`Session::start`] once its upstream is ready (the `grant used` and `session_start`
//!    records, fail closed); then for each statement, command or request: judge it (policy,
//!    not here), [`Session::hold`] it when a rule wants approval, record it with
//!    [`SessionInfo::statement_record`] and its end with [`SessionInfo::outcome_record`]
//!    (mask counts, captured results); watch [`Session::ending`] for the gateway's shutdown and the
//!    grant's end.
//! 3. [`Session::end`] with an [`EndReason`]. A session dropped without it (a panic, a
//!    cancelled task) still records its end, so no session is left open in the evidence.

mod accept;
mod admission;
mod ending;
mod gate;
mod handle;
mod hold;
mod outcome;

pub use accept::AcceptLoop;
pub use admission::{Admitted, LoginAttempt, LoginRefusal};
pub use ending::EndReason;
pub use gate::Gate;
pub use handle::{Session, SessionInfo, StartError};
pub use hold::{DEFAULT_HOLD_TIMEOUT, Hold, HoldError, HoldRequest, Verdict};
pub use outcome::{CapturedValue, OutcomeCodes, ResultCapture, StatementEnd, StatementOutcome};

#[cfg(test)]
mod tests;
