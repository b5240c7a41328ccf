//! The judgement of one statement text: the decision, the analysis it was made on, and what
//! the audit records to explain it — the same for every SQL adapter.

use std::sync::Arc;

use super::{Action, Decision, StatementInfo};
use crate::audit::detail::StatementJudged;

/// Name of the builtin rule for statements the analyser cannot read.
pub const UNPARSEABLE_RULE: &str = "builtin:unparseable";

/// The decision for one statement text (a Query, a Parse, a COM_QUERY), with its analysis.
#[derive(Debug, Clone)]
pub struct Judgement {
    pub decision: Decision,
    pub statements: Arc<Vec<StatementInfo>>,
    /// Why the text could not be analysed (then `statements` is empty).
    pub parse_error: Option<String>,
}

impl Judgement {
    /// A text the analyser could not read: refused as [`UNPARSEABLE_RULE`], or let through
    /// when the connection says `on_parse_error = "forward"` (`forward`).
    pub fn unparseable(error: &dyn std::fmt::Display, forward: bool) -> Self {
        let decision = if forward {
            Decision::default_allow()
        } else {
            Decision {
                action: Action::Block,
                rule: Some(UNPARSEABLE_RULE.to_owned()),
                reason: format!("the statement cannot be analysed: {error}"),
            }
        };
        Self {
            decision,
            statements: Arc::new(Vec::new()),
            parse_error: Some(error.to_string()),
        }
    }

    pub fn allowed(&self) -> bool {
        self.decision.action == Action::Allow
    }

    /// The explanation stored with the statement record.
    pub fn detail(&self) -> serde_json::Value {
        StatementJudged::of(
            &self.decision,
            &self.statements,
            self.parse_error.as_deref(),
        )
        .into_value()
    }
}
