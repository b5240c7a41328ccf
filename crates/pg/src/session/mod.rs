//! One client connection, from the first byte to the last.
//!
//! `startup` negotiates TLS and the protocol, authenticates the token, checks the connection's
//! `allow_groups` (or an active access grant), logs in upstream with the held credential and
//! records the session start; `relay` then carries messages both ways, auditing every
//! statement before it is forwarded.

mod parameters;
pub mod policy;
mod relay;
mod startup;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gatehouse_core::audit::{AuditEvent, Auditor, RecordKind};
use gatehouse_core::config::RecordResults;
use gatehouse_core::identity::{Principal, Verifier};
use tokio::net::TcpStream;

use crate::cancel::CancelRegistry;
use crate::upstream::UpstreamTarget;

/// What every session shares; built once when the gateway starts.
pub struct Shared {
    pub verifier: Verifier,
    pub auditor: Auditor,
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub tls_required: bool,
    pub upstreams: HashMap<String, Arc<UpstreamTarget>>,
    /// `allow_groups` per connection name.
    pub allow_groups: HashMap<String, Vec<String>>,
    pub cancel: CancelRegistry,
    pub startup_timeout: Duration,
    pub max_message_bytes: usize,
    pub record_results: RecordResults,
    pub result_cap_bytes: usize,
    /// Result columns (by name, lower case) whose values are never recorded: the column part
    /// of every `[[mask]] columns` pattern, plus card verification codes (PCI DSS 3.3.1).
    pub redacted_columns: Vec<String>,
    /// The `[[mask]]` rules; each session takes what applies to its connection and identity.
    pub masks: Arc<gatehouse_core::masking::MaskSet>,
    /// Statement analysis and rules.
    pub policy: Arc<policy::PolicyPoint>,
    /// Statements held for approval.
    pub approvals: Arc<gatehouse_core::approvals::ApprovalBook>,
    /// Time-bound access grants: consulted when an identity is not in `allow_groups`.
    pub grants: Arc<gatehouse_core::grants::GrantBook>,
    /// Where approvers decide (shown to held clients).
    pub admin_url: String,
    /// Turns true when the gateway stops: open sessions end with 57P01 and a session_end.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
}

/// Column names that hold card verification codes, redacted from recorded results whatever
/// the configuration says.
pub use gatehouse_core::masking::VERIFICATION_CODE_COLUMNS;

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("upstreams", &self.upstreams.keys().collect::<Vec<_>>())
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

/// Who and where: the facts every record of the session carries.
#[derive(Debug, Clone)]
pub(crate) struct SessionInfo {
    pub id: String,
    pub principal: Principal,
    pub client_addr: String,
    pub connection: String,
    pub started: Instant,
}

impl SessionInfo {
    pub fn event(&self, kind: RecordKind) -> AuditEvent {
        let mut ev = AuditEvent::new(kind, self.id.clone());
        ev.subject = Some(self.principal.subject.clone());
        ev.groups = self.principal.groups.clone();
        ev.issuer = Some(self.principal.issuer.clone());
        ev.client_addr = Some(self.client_addr.clone());
        ev.connection = Some(self.connection.clone());
        ev
    }
}

/// Serves one client connection to completion. Never panics on peer input; every failure
/// ends as a protocol error to the client and/or a closed connection.
pub async fn serve_client(shared: Arc<Shared>, tcp: TcpStream, peer: SocketAddr) {
    let _ = tcp.set_nodelay(true);
    metrics::counter!("gatehouse_connections_total").increment(1);
    let started = match startup::establish(&shared, tcp, peer).await {
        Ok(Some(s)) => s,
        Ok(None) => return,
        Err(e) => {
            tracing::debug!(peer = %peer, error = %e, "connection ended during startup");
            return;
        }
    };
    metrics::gauge!("gatehouse_sessions_active").increment(1.0);
    let info = started.info.clone();
    let reason = relay::run(&shared, started).await;
    metrics::gauge!("gatehouse_sessions_active").decrement(1.0);
    let mut ev = info.event(RecordKind::SessionEnd);
    ev.duration_ms = Some(info.started.elapsed().as_secs_f64() * 1000.0);
    let ev = ev.with_detail(serde_json::json!({ "reason": reason }));
    shared.auditor.record_later(ev).await;
}
