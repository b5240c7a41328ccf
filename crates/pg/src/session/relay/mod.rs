//! The relay: client → upstream with write-ahead audit, upstream → client with outcome
//! tracking.
//!
//! Each direction reads as much as is available, finds the complete messages in it, inspects
//! only the ones that matter, and forwards the whole run of bytes in one write. Messages are
//! never rebuilt unless they must change.
//!
//! The two directions are two halves of one session joined by an ordered channel: the
//! [`frontend`] half tells the [`backend`] half, before it forwards anything, what the server
//! will answer ([`expect`]), so every answer is paired with the message that caused it. This
//! module is the driver: it sets a session's relay up, races the two directions against the
//! session's end from outside, and decides how the session ends (and whether its server
//! connection goes back to the pool).
//!
//! Refusing a message (fail-closed audit, function calls) must keep the client's and the
//! server's view of the session identical (transaction aborted, extended-protocol messages
//! discarded until Sync). So a refused message is *replaced* by one the server rejects without
//! executing anything (a Query with a syntax error; an Execute of a portal that cannot exist),
//! and the server's resulting ErrorResponse is swapped for the gateway's own. The server then
//! does exactly what it would do for any error.

mod backend;
mod expect;
mod frontend;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::{Bytes, BytesMut};
use gatehouse_core::masking::SessionMasks;
use gatehouse_core::session::{EndReason, OutcomeCodes, Session};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use self::backend::Backend;
use self::frontend::Frontend;
use super::startup::Established;
use super::{SessionInfo, Shared};
use crate::stream::BoxWrite;
use crate::upstream::UpstreamTarget;

/// The SQLSTATEs of what the gateway decides: `insufficient_privilege` for a refusal,
/// `system_error` when the gateway could not carry a statement out.
const SQLSTATES: OutcomeCodes = OutcomeCodes {
    refused: "42501",
    gateway_error: "58000",
};

/// Read buffer growth step.
const READ_CHUNK: usize = 64 * 1024;

/// How long the backend direction may keep draining after the client side has ended.
const DRAIN_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// What both directions of one session share: the gateway's services, the session, its
/// upstream and masks, and what the server reports that the other direction must know.
struct Context<'a> {
    shared: Arc<Shared>,
    /// The core's session: approvals are held through it (the frontend's).
    session: &'a Session,
    info: &'a SessionInfo,
    target: Arc<UpstreamTarget>,
    masks: Arc<SessionMasks>,
    /// The server's `standard_conforming_strings`: set by the backend, read by the analysis.
    scs: Arc<AtomicBool>,
    /// ReadyForQuery messages the server has sent: counted by the backend, awaited by the
    /// frontend.
    ready: Arc<ReadyCount>,
}

/// Why one direction of the relay stopped. The session's end reason follows from it
/// ([`EndReason`]); the words recorded for each are fixed (records and evidence read them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DirectionEnd {
    /// The client closed its connection.
    ClientDisconnected,
    /// Reading from or writing to the client failed.
    ClientError,
    /// The client sent Terminate.
    ClientTerminated,
    /// The server closed its connection.
    UpstreamClosed,
    /// Reading from or writing to the server failed.
    UpstreamError,
    /// The client sent what the gateway cannot accept; it was told with a FATAL error.
    ProtocolError,
    /// The server sent an invalid message, or one masking cannot parse.
    UpstreamProtocolError,
    /// The server reported a session state the gateway cannot parse under.
    UpstreamStateRefused,
    /// The backend direction's end when the client has gone and every answer owed was read.
    Drained,
}

impl From<DirectionEnd> for EndReason {
    fn from(end: DirectionEnd) -> Self {
        match end {
            // Drained: the client went away and nothing was left unanswered.
            DirectionEnd::ClientDisconnected | DirectionEnd::Drained => {
                EndReason::ClientDisconnected
            }
            DirectionEnd::ClientError => EndReason::ClientError,
            DirectionEnd::ClientTerminated => EndReason::Protocol("client terminated"),
            DirectionEnd::UpstreamClosed => EndReason::UpstreamClosed,
            DirectionEnd::UpstreamError => EndReason::UpstreamError,
            DirectionEnd::ProtocolError => EndReason::Protocol("protocol error"),
            DirectionEnd::UpstreamProtocolError => EndReason::Protocol("upstream protocol error"),
            DirectionEnd::UpstreamStateRefused => EndReason::Protocol("upstream state refused"),
        }
    }
}

pub(crate) async fn run(shared: &Arc<Shared>, est: Established) {
    let Established {
        session,
        client_read,
        client_write,
        client_buf,
        mut upstream,
        search_path,
        application_name,
        _cancel,
    } = est;
    let info = session.info().clone();
    let Some(upstream_write) = upstream.write.take() else {
        return session.end(EndReason::Protocol("upstream not connected"));
    };
    let Some(target) = shared.upstreams.get(&info.connection).cloned() else {
        return session.end(EndReason::Protocol("unknown connection"));
    };
    let scs = Arc::new(AtomicBool::new(
        !upstream
            .params
            .iter()
            .any(|(k, v)| k == "standard_conforming_strings" && v != "on"),
    ));
    let (tx, rx) = mpsc::unbounded_channel();
    let masks = Arc::new(
        shared
            .gate
            .masks
            .for_session(&info.connection, &info.principal.groups),
    );
    let cx = Context {
        shared: shared.clone(),
        session: &session,
        info: &info,
        target: target.clone(),
        masks,
        scs,
        ready: Arc::new(ReadyCount::default()),
    };
    let front = Frontend::new(
        &cx,
        client_read,
        client_buf,
        upstream_write,
        tx,
        search_path.as_deref(),
        application_name,
    );
    let upstream_buf = std::mem::take(&mut upstream.buf);
    let mut back = Backend::new(cx, upstream.read, upstream_buf, client_write, rx);
    // The server connection's write half, when the client ended cleanly and the session may
    // hand the connection on; and whether every answer owed was read.
    let mut released: Option<BoxWrite> = None;
    let mut drained = false;
    let reason: EndReason = {
        let front = front.run();
        let backend = back.run();
        tokio::pin!(front, backend);
        tokio::select! {
            (r, write) = &mut front => {
                released = write;
                // The client is done; let responses already on their way be accounted for.
                drained = matches!(
                    tokio::time::timeout(DRAIN_GRACE, &mut backend).await,
                    Ok(DirectionEnd::Drained)
                );
                r.into()
            }
            r = &mut backend => r.into(),
            r = session.ending() => r,
        }
    };
    if let Some(why) = session.ending_message(reason) {
        // Tell the client why, as PostgreSQL does on a fast shutdown.
        back.fatal("57P01", &why).await;
    }
    back.abandon_pending().await;
    if let Some(write) = released
        && drained
        && back.idle()
    {
        // No cancel can be looked up for this session once its server connection moves on.
        drop(_cancel);
        (upstream.read, upstream.buf) = back.into_upstream();
        upstream.write = Some(write);
        target.release(upstream);
    }
    session.end(reason);
}

/// Total length of the message at the front of `buf` (header already validated).
fn msg_len(buf: &[u8]) -> usize {
    let len = i32::from_be_bytes([
        buf.get(1).copied().unwrap_or(0),
        buf.get(2).copied().unwrap_or(0),
        buf.get(3).copied().unwrap_or(0),
        buf.get(4).copied().unwrap_or(0),
    ]);
    usize::try_from(len).unwrap_or(0) + 1
}

/// How many ReadyForQuery messages the server has sent in this session.
///
/// Why: a function the gateway cannot see into may change how the server reads the next
/// statement (`set_config('client_encoding', ...)` in its body). A statement pipelined behind
/// such a call is analysed only once the server has answered the call — by then any change of
/// state has been reported (ParameterStatus comes before ReadyForQuery) and has ended the
/// session if the gateway cannot follow it.
#[derive(Default)]
struct ReadyCount {
    count: AtomicU64,
    changed: tokio::sync::Notify,
}

impl ReadyCount {
    fn bump(&self) {
        self.count.fetch_add(1, Ordering::Release);
        self.changed.notify_waiters();
    }

    async fn reached(&self, n: u64) {
        loop {
            let notified = self.changed.notified();
            if self.count.load(Ordering::Acquire) >= n {
                return;
            }
            notified.await;
        }
    }
}

/// Writes a run of message slices and flushes. One slice (the untouched run of messages, the
/// common case) goes out as is; several (a run with rewritten messages) are joined first, so
/// masking costs one write, not one per row. The flush matters with TLS: bytes left in the
/// TLS layer's buffer would otherwise wait for the next write, which may never come.
async fn write_parts(write: &mut BoxWrite, parts: Vec<Bytes>) -> std::io::Result<()> {
    write_joined(write, parts, &mut BytesMut::new()).await
}

/// Writes the parts as one write, joined in `scratch` (reused across calls, so a stream of
/// rewritten rows costs no allocation per chunk; given back when it grew past
/// [`SCRATCH_KEEP`]).
async fn write_joined(
    write: &mut BoxWrite,
    parts: Vec<Bytes>,
    scratch: &mut BytesMut,
) -> std::io::Result<()> {
    match parts.as_slice() {
        [] => {}
        [one] => write.write_all(one).await?,
        many => {
            scratch.clear();
            for p in many {
                scratch.extend_from_slice(p);
            }
            let written = write.write_all(scratch).await;
            if scratch.capacity() > SCRATCH_KEEP {
                *scratch = BytesMut::new();
            }
            written?;
        }
    }
    write.flush().await
}

/// Largest join buffer a session keeps between writes.
const SCRATCH_KEEP: usize = 256 * 1024;

#[cfg(test)]
mod tests {
    use super::*;

    /// Each direction's end is recorded in the words the relay always used (`session_end`'s
    /// `detail.reason`), and is the same [`EndReason`] those words stood for.
    #[test]
    fn direction_ends_keep_their_recorded_reasons() {
        let recorded = [
            (DirectionEnd::ClientDisconnected, "client disconnected"),
            (DirectionEnd::ClientError, "client connection error"),
            (DirectionEnd::ClientTerminated, "client terminated"),
            (DirectionEnd::UpstreamClosed, "upstream closed"),
            (DirectionEnd::UpstreamError, "upstream connection error"),
            (DirectionEnd::ProtocolError, "protocol error"),
            (
                DirectionEnd::UpstreamProtocolError,
                "upstream protocol error",
            ),
            (DirectionEnd::UpstreamStateRefused, "upstream state refused"),
        ];
        for (end, words) in recorded {
            let reason = EndReason::from(end);
            assert_eq!(reason.as_str(), words, "{end:?}");
            assert_eq!(reason, EndReason::from(words), "{end:?}");
        }
        // Draining to the end is the client having gone.
        assert_eq!(
            EndReason::from(DirectionEnd::Drained),
            EndReason::ClientDisconnected
        );
    }
}
