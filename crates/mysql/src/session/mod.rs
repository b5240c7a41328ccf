//! One MySQL client connection, from the greeting to the last command.
//!
//! `login` greets the client as a server would, takes the token it sends as its password
//! (inside TLS, or in clear text where allowed), has the core's [`Gate`] admit its identity to
//! the connection named as the database, logs in upstream with the held credential and
//! starts the core [`gatehouse_core::session::Session`] (which records it). `command` then
//! serves one command at a time: every statement is analysed and judged before anything is
//! forwarded, held for approval through the session, recorded, and its results masked as
//! they stream back (`response`). The protocol is strictly request–response, so one task
//! owns both streams.

mod command;
mod judge;
mod login;
mod registry;
mod response;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use gatehouse_core::config::ParseErrorAction;
use gatehouse_core::session::{AcceptLoop, Gate, OutcomeCodes};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::upstream::MysqlTarget;

pub use judge::masked_inference;
pub use registry::Registry;

/// What every MySQL session shares; built once when the gateway starts. The services every
/// protocol shares (identity, rules, masks, approvals, grants, audit) are the [`Gate`].
pub struct Shared {
    pub gate: Arc<Gate>,
    /// The gateway's certificate (the same as for PostgreSQL); `None`: TLS is not offered.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub tls_required: bool,
    /// The `kind = "mysql"` connections, by name.
    pub targets: HashMap<String, Arc<MysqlTarget>>,
    pub startup_timeout: Duration,
    /// The largest command payload accepted from a client.
    pub max_packet: usize,
    /// `on_parse_error` per connection name.
    pub on_parse_error: HashMap<String, ParseErrorAction>,
    /// The analyses of recent statement texts (shared with nobody else: keyed by dialect).
    pub analysis: gatehouse_sql::AnalysisCache,
    /// Open sessions by connection id (for `KILL QUERY` of a client's own statement).
    pub sessions: Registry,
    /// The upstream's views per connection (what masked sessions see through).
    pub views: crate::views::ViewCache,
    /// The RSA key for caching_sha2_password logins without TLS (created on first use).
    pub rsa: crate::rsa_exchange::RsaKeyCell,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("targets", &self.targets.keys().collect::<Vec<_>>())
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

/// The codes the session core records for the gateway's own refusals, in MySQL's terms.
pub const CODES: OutcomeCodes = OutcomeCodes {
    refused: "1227",
    gateway_error: "1105",
};

/// Accepts MySQL clients on `listener` until `shutdown`, at most `max_connections` at once.
pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    max_connections: usize,
    shutdown: watch::Receiver<bool>,
) {
    AcceptLoop::new(listener, max_connections)
        .run(shutdown, move |tcp, peer| {
            serve_client(shared.clone(), tcp, peer)
        })
        .await;
}

/// Serves one client connection to completion. Never panics on peer input; every failure
/// ends as an error packet to the client and/or a closed connection.
pub async fn serve_client(shared: Arc<Shared>, tcp: TcpStream, peer: SocketAddr) {
    let _ = tcp.set_nodelay(true);
    metrics::counter!("gatehouse_connections_total", "protocol" => "mysql").increment(1);
    let established = match login::establish(&shared, tcp, peer).await {
        Ok(Some(e)) => e,
        Ok(None) => return,
        Err(e) => {
            tracing::debug!(peer = %peer, error = %e, "mysql connection ended during login");
            return;
        }
    };
    command::run(&shared, established).await;
}
