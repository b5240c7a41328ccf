//! The open MySQL sessions, by the connection ids clients know them by, so that a client can
//! stop its own running statement: `KILL QUERY n` from a second connection (what the mariadb
//! and mysql CLIs send on Ctrl-C, with the id the gateway's greeting gave).
//!
//! Why a registry and not the server's `KILL`: every session shares the gateway's upstream
//! account, so the server would let anyone end anyone's statement (`builtin:signal-backend`
//! refuses that). The gateway knows who owns which session: a `KILL` naming a session of the
//! same identity on the same connection is rewritten to the upstream's id for it; anything else
//! stays refused.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, PoisonError};

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    subject: String,
    connection: String,
    upstream_id: u32,
}

/// Open sessions by the gateway's connection id.
#[derive(Debug)]
pub struct Registry {
    sessions: Mutex<HashMap<u32, Entry>>,
    next: AtomicU32,
}

impl Default for Registry {
    fn default() -> Self {
        Self {
            sessions: Mutex::new(HashMap::new()),
            // Not 1: ids do not look like a fresh server's, and differ between gateway runs.
            next: AtomicU32::new(1000 + rand::random::<u32>() % 1_000_000),
        }
    }
}

/// Removes its session from the registry when dropped.
#[derive(Debug)]
pub struct Registration<'a> {
    registry: &'a Registry,
    id: u32,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        self.registry
            .sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.id);
    }
}

impl Registry {
    /// The id the next greeting announces (unique while the gateway runs).
    pub fn next_id(&self) -> u32 {
        self.next.fetch_add(1, Ordering::Relaxed).max(1)
    }

    pub fn register(
        &self,
        id: u32,
        subject: &str,
        connection: &str,
        upstream_id: u32,
    ) -> Registration<'_> {
        self.sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(
                id,
                Entry {
                    subject: subject.to_owned(),
                    connection: connection.to_owned(),
                    upstream_id,
                },
            );
        Registration { registry: self, id }
    }

    /// The upstream id of the session `id` names — by the gateway's id or by the upstream's
    /// own (what `CONNECTION_ID()` returns) — if it belongs to `subject` on `connection`.
    pub fn own_upstream_id(&self, id: u32, subject: &str, connection: &str) -> Option<u32> {
        let sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        let mine = |e: &&Entry| e.subject == subject && e.connection == connection;
        sessions
            .get(&id)
            .filter(mine)
            .or_else(|| sessions.values().filter(mine).find(|e| e.upstream_id == id))
            .map(|e| e.upstream_id)
    }
}

/// `KILL [QUERY | CONNECTION] n`: whether only the statement ends, and `n`.
pub fn parse_kill(sql: &str) -> Option<(bool, u32)> {
    let words: Vec<&str> = sql
        .trim()
        .trim_end_matches(';')
        .split_whitespace()
        .collect();
    let is = |i: usize, w: &str| words.get(i).is_some_and(|x| x.eq_ignore_ascii_case(w));
    if !is(0, "kill") {
        return None;
    }
    let (query, n) = match words.len() {
        2 => (false, words.get(1)?),
        3 if is(1, "query") => (true, words.get(2)?),
        3 if is(1, "connection") => (false, words.get(2)?),
        _ => return None,
    };
    Some((query, n.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_same_identity_on_the_same_connection_finds_a_session() {
        let r = Registry::default();
        let id = r.next_id();
        let guard = r.register(id, "bot", "shop", 77);
        assert_eq!(r.own_upstream_id(id, "bot", "shop"), Some(77));
        assert_eq!(
            r.own_upstream_id(77, "bot", "shop"),
            Some(77),
            "by the upstream's id"
        );
        assert_eq!(r.own_upstream_id(id, "eve", "shop"), None);
        assert_eq!(r.own_upstream_id(id, "bot", "other"), None);
        assert_eq!(r.own_upstream_id(id + 1, "bot", "shop"), None);
        drop(guard);
        assert_eq!(r.own_upstream_id(id, "bot", "shop"), None);
        assert_ne!(r.next_id(), id);
    }

    #[test]
    fn kill_statements_are_read_in_their_plain_forms_only() {
        assert_eq!(parse_kill("KILL QUERY 12"), Some((true, 12)));
        assert_eq!(parse_kill("kill connection 12;"), Some((false, 12)));
        assert_eq!(parse_kill("KILL 12"), Some((false, 12)));
        assert_eq!(parse_kill("KILL HARD QUERY 12"), None);
        assert_eq!(parse_kill("KILL QUERY ID 12"), None);
        assert_eq!(parse_kill("KILL QUERY @x"), None);
        assert_eq!(parse_kill("KILL QUERY 12 /* and more */"), None);
        assert_eq!(parse_kill("SELECT 1"), None);
    }
}
