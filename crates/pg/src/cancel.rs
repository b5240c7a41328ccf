//! Cancel requests: each client gets a gateway-made (pid, secret) pair, never the upstream's,
//! so a client can cancel only its own query and learns nothing about the upstream server.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use subtle::ConstantTimeEq;

/// Where a cancel for one client session must go.
#[derive(Clone)]
pub struct CancelTarget {
    pub connection: String,
    pub upstream_pid: i32,
    pub upstream_secret: Bytes,
}

impl std::fmt::Debug for CancelTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CancelTarget")
            .field("connection", &self.connection)
            .field("upstream_pid", &self.upstream_pid)
            .finish_non_exhaustive()
    }
}

struct Entry {
    secret: [u8; 4],
    target: CancelTarget,
}

/// Live sessions by gateway pid. The lock is never held across an await.
#[derive(Clone, Default)]
pub struct CancelRegistry {
    inner: Arc<Mutex<HashMap<i32, Entry>>>,
}

/// Removes the registration when the session ends.
pub struct CancelGuard {
    registry: CancelRegistry,
    pid: i32,
}

impl Drop for CancelGuard {
    fn drop(&mut self) {
        if let Ok(mut map) = self.registry.inner.lock() {
            map.remove(&self.pid);
        }
    }
}

impl CancelRegistry {
    /// Registers a session and returns the (pid, secret) to give its client.
    pub fn register(&self, target: CancelTarget) -> (i32, i32, CancelGuard) {
        let Ok(mut map) = self.inner.lock() else {
            // A poisoned lock only means another session panicked; cancel is best-effort.
            return (
                0,
                0,
                CancelGuard {
                    registry: self.clone(),
                    pid: 0,
                },
            );
        };
        loop {
            let pid = rand::random_range(1..i32::MAX);
            if map.contains_key(&pid) {
                continue;
            }
            let secret: i32 = rand::random();
            map.insert(
                pid,
                Entry {
                    secret: secret.to_be_bytes(),
                    target,
                },
            );
            return (
                pid,
                secret,
                CancelGuard {
                    registry: self.clone(),
                    pid,
                },
            );
        }
    }

    /// The target for a cancel request, if the pid and secret match (constant-time compare).
    pub fn lookup(&self, pid: i32, secret: &[u8]) -> Option<CancelTarget> {
        let map = self.inner.lock().ok()?;
        let e = map.get(&pid)?;
        if secret.len() == 4 && bool::from(e.secret.ct_eq(secret)) {
            Some(e.target.clone())
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_lookup_and_unregister() {
        let r = CancelRegistry::default();
        let t = CancelTarget {
            connection: "c".into(),
            upstream_pid: 42,
            upstream_secret: Bytes::from_static(b"abcd"),
        };
        let (pid, secret, guard) = r.register(t);
        assert_eq!(
            r.lookup(pid, &secret.to_be_bytes()).map(|t| t.upstream_pid),
            Some(42)
        );
        assert!(
            r.lookup(pid, &secret.wrapping_add(1).to_be_bytes())
                .is_none()
        );
        drop(guard);
        assert!(r.lookup(pid, &secret.to_be_bytes()).is_none());
    }
}
