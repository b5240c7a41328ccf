//! Why a session ends, and the ends that come from outside the connection: the gateway's
//! shutdown and the end of the access grant that admitted the session.

use super::handle::Session;
use crate::grants::GrantStatus;

/// Why a session ended, as `session_end` records it (`detail.reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// The client ended the session or its connection went away.
    ClientDisconnected,
    /// The client's connection failed (reset, TLS error).
    ClientError,
    /// The upstream closed the connection.
    UpstreamClosed,
    /// The upstream connection failed.
    UpstreamError,
    /// The gateway is stopping.
    Shutdown,
    /// The access grant that admitted the session expired.
    GrantExpired,
    /// The access grant that admitted the session was revoked.
    GrantRevoked,
    /// The session handle was dropped without an end (a panic, a cancelled task).
    Dropped,
    /// An end only this protocol has (a protocol error, an unknown target), in its words.
    Protocol(&'static str),
}

impl EndReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClientDisconnected => "client disconnected",
            Self::ClientError => "client connection error",
            Self::UpstreamClosed => "upstream closed",
            Self::UpstreamError => "upstream connection error",
            Self::Shutdown => "gateway shutdown",
            Self::GrantExpired => "grant expired",
            Self::GrantRevoked => "grant revoked",
            Self::Dropped => "session dropped",
            Self::Protocol(s) => s,
        }
    }

    /// An end that came from outside the connection (the client is told why).
    pub fn is_external(self) -> bool {
        matches!(
            self,
            Self::Shutdown | Self::GrantExpired | Self::GrantRevoked
        )
    }
}

impl From<&'static str> for EndReason {
    /// The reason of that label ([`EndReason::as_str`]); any other label is the protocol's own.
    fn from(label: &'static str) -> Self {
        [
            Self::ClientDisconnected,
            Self::ClientError,
            Self::UpstreamClosed,
            Self::UpstreamError,
            Self::Shutdown,
            Self::GrantExpired,
            Self::GrantRevoked,
            Self::Dropped,
        ]
        .into_iter()
        .find(|r| r.as_str() == label)
        .unwrap_or(Self::Protocol(label))
    }
}

impl std::fmt::Display for EndReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Session {
    /// Resolves when the session must end from outside: the gateway stops, or the grant that
    /// admitted it expires or is revoked. Never resolves otherwise. Cancel-safe.
    pub async fn ending(&self) -> EndReason {
        let mut shutdown = self.gate().shutdown.clone();
        let stop = async move {
            if shutdown.wait_for(|stop| *stop).await.is_err() {
                // No shutdown signal can come any more: never fire.
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            () = stop => EndReason::Shutdown,
            r = grant_ended(self.grant().cloned()) => r,
        }
    }

    /// What the client is told when the session ends from outside (`None` for other ends).
    pub fn ending_message(&self, reason: EndReason) -> Option<String> {
        match reason {
            EndReason::Shutdown => {
                Some("terminating connection because Gatehouse is shutting down".to_owned())
            }
            EndReason::GrantExpired | EndReason::GrantRevoked => {
                let how = if reason == EndReason::GrantRevoked {
                    "was revoked"
                } else {
                    "expired"
                };
                let id = self.grant().map(|g| g.id.as_str()).unwrap_or("?");
                Some(format!(
                    "terminating connection because access grant {id} {how}"
                ))
            }
            _ => None,
        }
    }
}

/// Resolves when the access grant ends (never without one).
async fn grant_ended(grant: Option<crate::grants::Admission>) -> EndReason {
    let Some(mut g) = grant else {
        return std::future::pending().await;
    };
    let deadline = tokio::time::Instant::now() + g.remaining();
    let ended = async {
        g.status
            .wait_for(|s| *s != GrantStatus::Active)
            .await
            .map(|s| *s)
    };
    let status = tokio::select! {
        () = tokio::time::sleep_until(deadline) => return EndReason::GrantExpired,
        s = ended => s,
    };
    match status {
        Ok(GrantStatus::Revoked) => EndReason::GrantRevoked,
        Ok(_) => EndReason::GrantExpired,
        Err(_) => {
            // The book forgot the grant: its time still bounds the session.
            tokio::time::sleep_until(deadline).await;
            EndReason::GrantExpired
        }
    }
}
