//! The accept loop every adapter runs: a connection limit, one task per client, graceful stop.
//!
//! Why in core: the limit (`limits.max_connections`) and the stop (a SIGTERM lets open
//! sessions finish, then the chain is sealed) are promises of the gateway, not of a protocol.
//! An adapter hands over its listener and a function serving one client.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};

/// A listener and the most clients it serves at once.
#[derive(Debug)]
pub struct AcceptLoop {
    listener: TcpListener,
    max_connections: usize,
}

impl AcceptLoop {
    /// `max_connections` of 0 is taken as 1.
    pub fn new(listener: TcpListener, max_connections: usize) -> Self {
        Self {
            listener,
            max_connections: max_connections.max(1),
        }
    }

    /// Accepts until `shutdown` turns true (or its sender goes away), one task per client;
    /// at the limit, new clients wait in the kernel's backlog. Then stops listening and
    /// waits for the open sessions to end (each watches the same signal).
    pub async fn run<F, Fut>(self, mut shutdown: watch::Receiver<bool>, serve: F)
    where
        F: Fn(TcpStream, SocketAddr) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let limit = Arc::new(Semaphore::new(self.max_connections));
        let mut tasks = tokio::task::JoinSet::new();
        loop {
            if *shutdown.borrow() {
                break;
            }
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
                        // Out of file descriptors and the like: wait rather than spin.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                        continue;
                    }
                },
                _ = shutdown.changed() => break,
            };
            let session = serve(tcp, peer);
            tasks.spawn(async move {
                session.await;
                drop(permit);
            });
            // Reap finished tasks so the set does not grow without bound.
            while tasks.try_join_next().is_some() {}
        }
        drop(self.listener);
        while tasks.join_next().await.is_some() {}
    }
}

/// Pause after a failed accept.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// Each client gets one byte (`b'a' + its order`), then its session waits for the test.
    async fn start(
        max: usize,
    ) -> (
        SocketAddr,
        watch::Sender<bool>,
        tokio::sync::broadcast::Sender<()>,
        tokio::task::JoinHandle<()>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let (stop_tx, stop_rx) = watch::channel(false);
        let (release, _) = tokio::sync::broadcast::channel::<()>(8);
        let order = Arc::new(AtomicUsize::new(0));
        let release_tx = release.clone();
        let run = tokio::spawn(
            AcceptLoop::new(listener, max).run(stop_rx, move |mut tcp, _| {
                let n = order.fetch_add(1, Ordering::SeqCst);
                let mut released = release_tx.subscribe();
                async move {
                    let _ = tcp.write_all(&[b'a' + n as u8]).await;
                    let _ = released.recv().await;
                }
            }),
        );
        (addr, stop_tx, release, run)
    }

    async fn first_byte(tcp: &mut TcpStream) -> Option<u8> {
        let mut b = [0u8; 1];
        match tokio::time::timeout(Duration::from_millis(300), tcp.read(&mut b)).await {
            Ok(Ok(1)) => Some(b[0]),
            _ => None,
        }
    }

    #[tokio::test]
    async fn the_limit_holds_new_clients_until_a_session_ends() {
        let (addr, _stop, release, _run) = start(2).await;
        let mut a = TcpStream::connect(addr)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let mut b = TcpStream::connect(addr)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(first_byte(&mut a).await, Some(b'a'));
        assert_eq!(first_byte(&mut b).await, Some(b'b'));
        let mut c = TcpStream::connect(addr)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            first_byte(&mut c).await,
            None,
            "a third client is served over the limit"
        );
        let _ = release.send(());
        assert_eq!(first_byte(&mut c).await, Some(b'c'));
    }

    #[tokio::test]
    async fn a_stop_closes_the_listener_and_waits_for_open_sessions() {
        let (addr, stop, release, run) = start(4).await;
        let mut a = TcpStream::connect(addr)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(first_byte(&mut a).await, Some(b'a'));
        let _ = stop.send(true);
        // The loop stops accepting at once ...
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while TcpStream::connect(addr).await.is_ok() {
            assert!(tokio::time::Instant::now() < deadline, "still listening");
            tokio::task::yield_now().await;
        }
        // ... but returns only once the open session has ended.
        assert!(!run.is_finished());
        let _ = release.send(());
        tokio::time::timeout(Duration::from_secs(5), run)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|e| panic!("{e}"));
    }
}
