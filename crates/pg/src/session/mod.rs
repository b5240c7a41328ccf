//! One client connection, from the first byte to the last.
//!
//! `startup` negotiates TLS and the protocol, has the core's [`Gate`] admit the token's
//! identity to the connection (`allow_groups` or an active access grant), logs in upstream
//! with the held credential and starts the core [`gatehouse_core::session::Session`] (which
//! records it); `relay` then carries messages both ways, auditing every statement before it is
//! forwarded, holding it through the session for approval, and ends the session.

mod parameters;
pub mod policy;
mod relay;
mod startup;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use gatehouse_core::session::Gate;
pub(crate) use gatehouse_core::session::SessionInfo;
use tokio::net::TcpStream;

use crate::cancel::CancelRegistry;
use crate::upstream::UpstreamTarget;

/// What every PostgreSQL session shares; built once when the gateway starts. The services
/// every protocol shares (identity, rules, masks, approvals, grants, audit) are the [`Gate`].
pub struct Shared {
    pub gate: Arc<Gate>,
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub tls_required: bool,
    pub upstreams: HashMap<String, Arc<UpstreamTarget>>,
    pub cancel: CancelRegistry,
    pub startup_timeout: Duration,
    pub max_message_bytes: usize,
    /// Statement analysis (libpg_query, the shape cache, the upstream catalogs) over the rules.
    pub policy: Arc<policy::PolicyPoint>,
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
    relay::run(&shared, started).await;
}
