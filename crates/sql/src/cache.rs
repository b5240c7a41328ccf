//! A byte-bounded LRU cache in front of [`analyze`](crate::analyze).
//!
//! Keyed by the exact SQL text and the [`AnalysisContext`] (never by a fingerprint or a
//! normalised form: those ignore constants, and the same text can mean different statements
//! under another `standard_conforming_strings`). Bounded by the bytes of cached text, not the
//! entry count, so a client sending huge statements cannot make it grow without limit.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::{AnalysisContext, AnalysisError, StatementInfo, analyze};

type Outcome = Result<Arc<Vec<StatementInfo>>, AnalysisError>;

#[derive(Debug, Hash, PartialEq, Eq)]
struct Key {
    sql: String,
    ctx: AnalysisContext,
}

impl Key {
    /// What an entry counts against the bound: its SQL text and its `search_path` text.
    fn cost(&self) -> usize {
        self.sql.len() + self.ctx.search_path.iter().map(String::len).sum::<usize>()
    }
}

#[derive(Debug)]
struct Entry {
    outcome: Outcome,
    tick: u64,
}

#[derive(Debug, Default)]
struct State {
    map: HashMap<Arc<Key>, Entry>,
    /// Recency order: tick → key; the smallest tick is the least recently used.
    lru: BTreeMap<u64, Arc<Key>>,
    tick: u64,
    bytes: usize,
}

impl State {
    fn next_tick(&mut self) -> u64 {
        self.tick += 1;
        self.tick
    }

    fn remove(&mut self, key: &Key) {
        if let Some((k, entry)) = self.map.remove_entry(key) {
            self.lru.remove(&entry.tick);
            self.bytes -= k.cost();
        }
    }
}

#[derive(Debug)]
struct Inner {
    max_bytes: usize,
    state: Mutex<State>,
    hits: AtomicU64,
    misses: AtomicU64,
}

/// Counters of an [`AnalysisCache`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    pub entries: usize,
    /// Bytes of cached text (SQL plus `search_path`), at most `max_bytes`.
    pub bytes: usize,
    pub max_bytes: usize,
}

/// A cache in front of [`analyze`] keyed by (exact SQL text, context), bounded by the total
/// bytes of cached text, least recently used first out. Cheap to clone (all clones share one
/// cache); the lock is a std `Mutex` held only for map operations, never during analysis nor
/// across an `.await`.
///
/// Parse errors and [`AnalysisError::TooComplex`] are cached too (they are as deterministic
/// as successes); [`AnalysisError::Internal`] is not.
#[derive(Debug, Clone)]
pub struct AnalysisCache {
    inner: Arc<Inner>,
}

impl AnalysisCache {
    /// A cache holding at most `max_bytes` of text. `0` disables caching (every call analyses).
    pub fn new(max_bytes: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                max_bytes,
                state: Mutex::new(State::default()),
                hits: AtomicU64::new(0),
                misses: AtomicU64::new(0),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is consistent after every statement of the critical sections, so a
        // poisoned lock (a panic elsewhere while holding it) is safe to keep using.
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// [`analyze`], answered from the cache when this exact text was analysed before in the
    /// same context.
    pub fn analyze(&self, sql: &str, ctx: &AnalysisContext) -> Outcome {
        let key = Key {
            sql: sql.to_owned(),
            ctx: ctx.clone(),
        };
        {
            let mut state = self.lock();
            let tick = state.next_tick();
            let mut hit = None;
            if let Some(entry) = state.map.get_mut(&key) {
                let old = std::mem::replace(&mut entry.tick, tick);
                hit = Some((old, entry.outcome.clone()));
            }
            if let Some((old, outcome)) = hit {
                if let Some(k) = state.lru.remove(&old) {
                    state.lru.insert(tick, k);
                }
                drop(state);
                self.inner.hits.fetch_add(1, Ordering::Relaxed);
                return outcome;
            }
        }
        self.inner.misses.fetch_add(1, Ordering::Relaxed);

        let outcome: Outcome = analyze(sql, ctx).map(Arc::new);
        if matches!(outcome, Err(AnalysisError::Internal(_))) {
            return outcome;
        }
        let cost = key.cost();
        if cost > self.inner.max_bytes {
            return outcome;
        }

        let mut state = self.lock();
        state.remove(&key); // another caller may have raced us to it
        while state.bytes + cost > self.inner.max_bytes {
            let Some((_, oldest)) = state.lru.pop_first() else {
                break;
            };
            if let Some((k, _)) = state.map.remove_entry(&*oldest) {
                state.bytes -= k.cost();
            }
        }
        let tick = state.next_tick();
        let key = Arc::new(key);
        state.lru.insert(tick, Arc::clone(&key));
        state.map.insert(
            key,
            Entry {
                outcome: outcome.clone(),
                tick,
            },
        );
        state.bytes += cost;
        outcome
    }

    /// Number of calls answered from the cache.
    pub fn hits(&self) -> u64 {
        self.inner.hits.load(Ordering::Relaxed)
    }

    /// Number of calls that had to analyse.
    pub fn misses(&self) -> u64 {
        self.inner.misses.load(Ordering::Relaxed)
    }

    /// All counters at once.
    pub fn stats(&self) -> CacheStats {
        let state = self.lock();
        CacheStats {
            hits: self.hits(),
            misses: self.misses(),
            entries: state.map.len(),
            bytes: state.bytes,
            max_bytes: self.inner.max_bytes,
        }
    }

    /// Drops every entry (e.g. after a schema change); counters are kept.
    pub fn clear(&self) {
        let mut state = self.lock();
        state.map.clear();
        state.lru.clear();
        state.bytes = 0;
    }
}
