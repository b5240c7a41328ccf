//! The accept loop: a connection limit, one task per client, graceful shutdown.

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

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
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let limit = Arc::new(Semaphore::new(self.config.max_connections.max(1)));
        let mut tasks = tokio::task::JoinSet::new();
        loop {
            let permit = tokio::select! {
                p = limit.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => break,
                },
                _ = shutdown.changed() => break,
            };
            let (tcp, peer) = tokio::select! {
                r = self.listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = shutdown.changed() => break,
            };
            let shared = self.shared.clone();
            tasks.spawn(async move {
                serve_client(shared, tcp, peer).await;
                drop(permit);
            });
            // Reap finished tasks so the set does not grow without bound.
            while tasks.try_join_next().is_some() {}
        }
        drop(self.listener);
        while tasks.join_next().await.is_some() {}
    }
}
