//! The services every session of every protocol shares, built once when the gateway starts.

use std::collections::HashMap;
use std::sync::Arc;

use crate::approvals::ApprovalBook;
use crate::audit::Auditor;
use crate::config::RecordResults;
use crate::grants::GrantBook;
use crate::identity::Verifier;
use crate::masking::MaskSet;
use crate::policy::Policy;

/// What the gate knows that no protocol adds to: who may use which connection, the rules,
/// the masks, the books of approvals and grants, and where records go.
pub struct Gate {
    pub verifier: Verifier,
    pub auditor: Auditor,
    /// `allow_groups` per connection name (every configured connection has an entry).
    pub allow_groups: HashMap<String, Vec<String>>,
    /// The rules (for an approval: its approvers, quorum and timeout).
    pub rules: Arc<Policy>,
    /// The `[[mask]]` rules; each session takes what applies to its connection and identity.
    pub masks: Arc<MaskSet>,
    /// Statements held for approval.
    pub approvals: Arc<ApprovalBook>,
    /// Time-bound access grants: consulted when an identity is not in `allow_groups`.
    pub grants: Arc<GrantBook>,
    pub record_results: RecordResults,
    pub result_cap_bytes: usize,
    /// Result columns (by name, lower case) whose values are never recorded: the column part
    /// of every `[[mask]] columns` pattern, plus card verification codes (PCI DSS 3.3.1).
    pub redacted_columns: Vec<String>,
    /// Where approvers decide (shown to held clients).
    pub admin_url: String,
    /// Turns true when the gateway stops: open sessions end with [`super::EndReason::Shutdown`].
    pub shutdown: tokio::sync::watch::Receiver<bool>,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate")
            .field("connections", &self.allow_groups.keys().collect::<Vec<_>>())
            .field("admin_url", &self.admin_url)
            .finish_non_exhaustive()
    }
}
