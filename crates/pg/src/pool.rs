//! Pooled upstream connections: the upstream login (TCP, TLS, SCRAM) is paid once per server
//! connection, not once per client session, so a client's login costs a token check.
//!
//! Why session pooling (one server connection per client session) and not transaction
//! pooling: the gateway's analysis follows the session's state (`search_path`, prepared
//! statements, cursors, the encoding), and every statement of a session is attributed to one
//! identity. A server connection changes hands only between sessions.
//!
//! Invariants (each one is tested in `crates/gatehouse/tests/it/pooling.rs`):
//! - a connection comes back only after the client ended cleanly (Terminate) with nothing in
//!   flight and the server idle outside a transaction, and only if no statement of the
//!   session may have left state that `DISCARD ALL` cannot undo (`LOAD`, code the gateway
//!   cannot see into: `DO`, `CALL`, functions created outside the system schemas). Otherwise
//!   the connection is closed.
//! - before anyone else gets it, it is reset with `DISCARD ALL` (temporary tables, prepared
//!   statements, cursors, `SET` and `SET ROLE`, advisory locks, `LISTEN`), and the answer is
//!   checked: `CommandComplete` then `ReadyForQuery` idle, no error. Any doubt closes it.
//! - it is reused only by a session with exactly the same startup parameters: `RESET ALL`
//!   returns settings to those values, so another session's would otherwise carry over.
//! - an idle connection on which anything arrived (a FATAL from `pg_terminate_backend`,
//!   end of stream) is closed, not handed out.
//! - at most `max_upstream` server connections exist per configured connection (in use,
//!   idle or being reset); a client waits at most `pool_wait_timeout` for one and is then
//!   refused with a clear error (53300).
//!
//! A cancel request looked up just before its session ended may reach the server after the
//! connection was reset: it can only interrupt the reset (which then fails and closes the
//! connection) or, in a window of one round trip, the next session's first statement, as
//! with any pooler that forwards cancels.

use std::future::poll_fn;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::Poll;
use std::time::{Duration, Instant};

use gatehouse_core::config::{Connection, PoolMode, parse_duration};
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use crate::messages::backend;
use crate::upstream::{Upstream, UpstreamError, UpstreamTarget};

/// Longest a reset (`DISCARD ALL`) may take before the connection is given up.
const RESET_TIMEOUT: Duration = Duration::from_secs(5);

/// The pool of one configured connection.
pub struct UpstreamPool {
    /// The configured connection's name (metric label).
    name: String,
    mode: PoolMode,
    max: u32,
    idle_timeout: Duration,
    wait_timeout: Duration,
    /// One permit per server connection that may exist.
    permits: Arc<Semaphore>,
    /// Reset connections ready for a session, most recently used last.
    idle: Mutex<Vec<IdleConn>>,
    /// A connection became idle.
    returned: Notify,
    reaper_started: AtomicBool,
}

struct IdleConn {
    conn: Upstream,
    since: Instant,
}

impl std::fmt::Debug for UpstreamPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamPool")
            .field("mode", &self.mode)
            .field("max", &self.max)
            .field("idle", &self.idle_count())
            .finish_non_exhaustive()
    }
}

/// The key under which a connection is pooled: its startup parameters, order-independent.
pub(crate) fn startup_key(params: &[(String, String)]) -> Vec<(String, String)> {
    let mut key = params.to_vec();
    key.sort();
    key
}

impl UpstreamPool {
    pub fn new(conn: &Connection) -> Self {
        let max = conn.max_upstream.max(1);
        Self {
            name: conn.name.clone(),
            mode: conn.pool,
            max,
            idle_timeout: parse_duration(&conn.pool_idle_timeout)
                .unwrap_or(Duration::from_secs(300)),
            wait_timeout: parse_duration(&conn.pool_wait_timeout)
                .unwrap_or(Duration::from_secs(30)),
            permits: Arc::new(Semaphore::new(max as usize)),
            idle: Mutex::new(Vec::new()),
            returned: Notify::new(),
            reaper_started: AtomicBool::new(false),
        }
    }

    /// Whether sessions give their server connection back at a clean end.
    pub fn reuses(&self) -> bool {
        self.mode == PoolMode::Session
    }

    /// Publishes the idle count (`gatehouse_pool_idle_connections`).
    fn publish(&self, idle: usize) {
        metrics::gauge!("gatehouse_pool_idle_connections", "connection" => self.name.clone())
            .set(idle as f64);
    }

    /// Idle connections right now.
    pub fn idle_count(&self) -> usize {
        self.idle.lock().map(|v| v.len()).unwrap_or(0)
    }

    /// Takes the most recently used idle connection with this key; expired ones met on
    /// the way are closed.
    fn take_idle(&self, key: &[(String, String)]) -> Option<Upstream> {
        let mut expired = Vec::new();
        let found = {
            let mut idle = self.idle.lock().ok()?;
            let now = Instant::now();
            let mut i = 0;
            while i < idle.len() {
                if idle
                    .get(i)
                    .is_some_and(|c| now.duration_since(c.since) >= self.idle_timeout)
                {
                    expired.push(idle.remove(i));
                } else {
                    i += 1;
                }
            }
            let pos = idle.iter().rposition(|c| c.conn.startup == key);
            let found = pos.map(|p| idle.remove(p).conn);
            self.publish(idle.len());
            found
        };
        drop(expired);
        found
    }

    /// Closes the oldest idle connection (one of another key: ours were taken first), to
    /// free its permit. Returns whether one was closed.
    fn evict_one(&self) -> bool {
        let victim = match self.idle.lock() {
            Ok(mut idle) if !idle.is_empty() => {
                let v = idle.remove(0);
                self.publish(idle.len());
                Some(v)
            }
            _ => None,
        };
        if victim.is_some() {
            metrics::counter!("gatehouse_pool_closed_total", "reason" => "evicted").increment(1);
        }
        victim.is_some()
    }

    /// Closes idle connections older than the idle timeout.
    fn reap(&self) {
        let expired: Vec<IdleConn> = match self.idle.lock() {
            Ok(mut idle) => {
                let now = Instant::now();
                let (old, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut *idle)
                    .into_iter()
                    .partition(|c| now.duration_since(c.since) >= self.idle_timeout);
                *idle = keep;
                self.publish(idle.len());
                old
            }
            Err(_) => Vec::new(),
        };
        if !expired.is_empty() {
            metrics::counter!("gatehouse_pool_closed_total", "reason" => "idle_timeout")
                .increment(expired.len() as u64);
        }
    }

    fn put(&self, conn: Upstream) {
        if let Ok(mut idle) = self.idle.lock() {
            idle.push(IdleConn {
                conn,
                since: Instant::now(),
            });
            self.publish(idle.len());
        }
        self.returned.notify_waiters();
    }
}

impl UpstreamTarget {
    /// A logged-in server connection for a session with these startup parameters: a pooled
    /// one if there is one, else a new login — within `max_upstream`, waiting at most
    /// `pool_wait_timeout` for a free place.
    pub async fn checkout(
        &self,
        params: &[(String, String)],
        login_deadline: Duration,
    ) -> Result<Upstream, UpstreamError> {
        let pool = &self.pool;
        let key = startup_key(params);
        let waited = Instant::now();
        let deadline = tokio::time::Instant::now() + pool.wait_timeout;
        loop {
            let notified = pool.returned.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            while let Some(mut conn) = pool.take_idle(&key) {
                if conn.still_idle().await {
                    conn.reused = true;
                    metrics::counter!("gatehouse_pool_checkouts_total", "result" => "reused")
                        .increment(1);
                    return Ok(conn);
                }
                metrics::counter!("gatehouse_pool_closed_total", "reason" => "broken").increment(1);
            }
            if let Ok(permit) = pool.permits.clone().try_acquire_owned() {
                return self.open_pooled(params, key, permit, login_deadline).await;
            }
            if pool.evict_one() {
                continue;
            }
            tokio::select! {
                permit = pool.permits.clone().acquire_owned() => {
                    let permit = permit.map_err(|_| UpstreamError::Closed)?;
                    return self.open_pooled(params, key, permit, login_deadline).await;
                }
                () = &mut notified => {}
                () = tokio::time::sleep_until(deadline) => {
                    metrics::counter!("gatehouse_pool_checkouts_total", "result" => "exhausted")
                        .increment(1);
                    return Err(UpstreamError::PoolExhausted {
                        max: pool.max,
                        waited: waited.elapsed(),
                    });
                }
            }
        }
    }

    async fn open_pooled(
        &self,
        params: &[(String, String)],
        key: Vec<(String, String)>,
        permit: OwnedSemaphorePermit,
        login_deadline: Duration,
    ) -> Result<Upstream, UpstreamError> {
        let mut conn = self.login(params, login_deadline).await?;
        metrics::counter!("gatehouse_pool_checkouts_total", "result" => "login").increment(1);
        conn.startup = key;
        conn.permit = Some(permit);
        Ok(conn)
    }

    /// Takes back a session's server connection: it is reset in the background and then
    /// waits for the next session with the same startup parameters. Only call this when the
    /// session left nothing the reset cannot undo (see the module invariants).
    pub fn release(self: &Arc<Self>, mut conn: Upstream) {
        if !self.pool.reuses() || conn.permit.is_none() {
            tokio::spawn(conn.close());
            return;
        }
        let target = Arc::downgrade(self);
        if !self.pool.reaper_started.swap(true, Ordering::AcqRel) {
            tokio::spawn(reaper(Arc::downgrade(self), self.pool.idle_timeout));
        }
        tokio::spawn(async move {
            let reset = tokio::time::timeout(RESET_TIMEOUT, conn.reset()).await;
            match (reset, target.upgrade()) {
                (Ok(Ok(())), Some(target)) => target.pool.put(conn),
                (reset, _) => {
                    if let Ok(Err(e)) = &reset {
                        tracing::debug!(error = %e, "pooled connection reset failed; closing it");
                    }
                    metrics::counter!("gatehouse_pool_closed_total", "reason" => "reset_failed")
                        .increment(1);
                    conn.close().await;
                }
            }
        });
    }
}

/// Closes idle connections past the idle timeout until the target is gone.
async fn reaper(target: Weak<UpstreamTarget>, idle_timeout: Duration) {
    let period = (idle_timeout / 4).clamp(Duration::from_millis(100), Duration::from_secs(30));
    loop {
        tokio::time::sleep(period).await;
        let Some(t) = target.upgrade() else { return };
        t.pool.reap();
    }
}

impl Upstream {
    /// Whether nothing has arrived on this idle connection (no error, no end of stream):
    /// one poll of the socket, no waiting.
    async fn still_idle(&mut self) -> bool {
        if !self.buf.is_empty() || self.write.is_none() {
            return false;
        }
        let mut scratch = [0u8; 64];
        let read = &mut self.read;
        poll_fn(|cx| {
            let mut rb = ReadBuf::new(&mut scratch);
            match Pin::new(&mut *read).poll_read(cx, &mut rb) {
                Poll::Pending => Poll::Ready(true),
                Poll::Ready(_) => Poll::Ready(false),
            }
        })
        .await
    }

    /// `DISCARD ALL`, checked: it completed, nothing failed, and the server is idle outside
    /// a transaction. Parameter changes it reports are kept for the next session's startup.
    async fn reset(&mut self) -> Result<(), UpstreamError> {
        if !self.buf.is_empty() {
            return Err(unexpected("bytes left over from the session"));
        }
        let write = self.write.as_mut().ok_or(UpstreamError::Closed)?;
        write
            .write_all(&crate::messages::frontend::build_query("DISCARD ALL"))
            .await?;
        write.flush().await?;
        let mut completed = false;
        loop {
            let frame = self.next().await?;
            match frame.tag() {
                b'C' => completed = backend::command_tag(&frame) == "DISCARD ALL",
                b'S' => {
                    let (k, v) = backend::parameter(&frame)?;
                    match self.params.iter_mut().find(|(name, _)| *name == k) {
                        Some(p) => p.1 = v,
                        None => self.params.push((k, v)),
                    }
                }
                // Notices, and notifications sent before UNLISTEN took effect.
                b'N' | b'A' => {}
                b'E' => {
                    let f = backend::error_fields(&frame)?;
                    return Err(UpstreamError::Server {
                        sqlstate: f.sqlstate,
                        message: f.message,
                    });
                }
                b'Z' if completed && backend::ready_status(&frame) == b'I' => return Ok(()),
                b'Z' => return Err(unexpected("DISCARD ALL did not leave the session idle")),
                _ => return Err(unexpected("unexpected message answering DISCARD ALL")),
            }
        }
    }

    /// Ends the server session politely (Terminate), then drops the connection.
    pub async fn close(mut self) {
        if let Some(mut w) = self.write.take() {
            let _ = tokio::time::timeout(Duration::from_secs(1), async {
                let _ = w.write_all(&[b'X', 0, 0, 0, 4]).await;
                let _ = w.shutdown().await;
            })
            .await;
        }
    }
}

fn unexpected(what: &'static str) -> UpstreamError {
    UpstreamError::Protocol(crate::codec::CodecError::Malformed { what })
}
