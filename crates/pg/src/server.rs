//! The PostgreSQL listener: the core's accept loop serving each client with this adapter.

use std::sync::Arc;

use gatehouse_core::session::AcceptLoop;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::session::{Shared, serve_client};

/// Listener settings.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub max_connections: usize,
}

/// A running PostgreSQL listener.
pub struct Gateway {
    listener: TcpListener,
    shared: Arc<Shared>,
    config: GatewayConfig,
}

impl Gateway {
    pub fn new(listener: TcpListener, shared: Arc<Shared>, config: GatewayConfig) -> Self {
        Self {
            listener,
            shared,
            config,
        }
    }

    /// Accepts until `shutdown` turns true, then waits for open sessions to end.
    pub async fn run(self, shutdown: watch::Receiver<bool>) {
        let shared = self.shared;
        AcceptLoop::new(self.listener, self.config.max_connections)
            .run(shutdown, move |tcp, peer| {
                serve_client(shared.clone(), tcp, peer)
            })
            .await;
    }
}
