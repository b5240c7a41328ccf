//! A byte-bounded LRU cache in front of [`analyze`](crate::analyze).
//!
//! Keyed by the exact SQL text and the [`AnalysisContext`] (the same text can mean different
//! statements under another `standard_conforming_strings`), or by the statement's *shape*
//! (its text with plain literal values taken out, see `shape.rs`) when the analysis cannot
//! depend on those values: statements that only read or write rows, with no constant `LIMIT`,
//! no settings changed, no COPY and no opaque code — everywhere else the analyser reads
//! constants, so those are keyed by their exact text. A statement sent with a different
//! literal each time (the simple protocol's usual case) is then parsed once per shape instead
//! of once per call. Bounded by the bytes of cached text, not the entry count, so a client
//! sending huge statements cannot make it grow without limit.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::mysql::{MysqlContext, analyze_mysql};
use crate::{AnalysisContext, AnalysisError, StatementInfo, analyze};

type Outcome = Result<Arc<Vec<StatementInfo>>, AnalysisError>;

/// Which dialect a text was analysed in, with the session state that shapes its meaning.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
enum Dialect {
    Postgres(AnalysisContext),
    Mysql(MysqlContext),
}

#[derive(Debug, Hash, PartialEq, Eq)]
struct Key {
    /// The exact text, or the shape when `shaped`.
    sql: String,
    ctx: Dialect,
    shaped: bool,
}

impl Key {
    /// What an entry counts against the bound: its SQL text and its context's text.
    fn cost(&self) -> usize {
        self.sql.len()
            + match &self.ctx {
                Dialect::Postgres(c) => c.search_path.iter().map(String::len).sum::<usize>(),
                Dialect::Mysql(c) => c.database.as_ref().map_or(0, String::len),
            }
    }
}

#[derive(Debug, Clone)]
enum Cached {
    Analysis(Outcome),
    /// A shape whose statements' analysis depends on their literal values: use the exact
    /// text's entry.
    NotShareable,
}

#[derive(Debug)]
struct Entry {
    cached: Cached,
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

    /// [`analyze`], answered from the cache when this exact text, or a text of the same shape
    /// whose analysis cannot depend on its literals, was analysed before in the same context.
    pub fn analyze(&self, sql: &str, ctx: &AnalysisContext) -> Outcome {
        let exact = || Key {
            sql: sql.to_owned(),
            ctx: Dialect::Postgres(ctx.clone()),
            shaped: false,
        };
        let miss = || self.miss(|| analyze(sql, ctx));
        let shape = if ctx.standard_conforming_strings {
            crate::shape::of(sql)
        } else {
            None
        };
        let Some(shape) = shape else {
            return self.by_exact_text(exact(), miss);
        };
        let shaped = Key {
            sql: shape,
            ctx: Dialect::Postgres(ctx.clone()),
            shaped: true,
        };
        match self.lookup(&shaped) {
            Some(Cached::Analysis(outcome)) => self.hit(outcome),
            Some(Cached::NotShareable) => self.by_exact_text(exact(), miss),
            None => {
                let outcome = miss();
                if shareable(&outcome) {
                    self.insert(shaped, Cached::Analysis(outcome.clone()), &outcome);
                } else {
                    self.insert(shaped, Cached::NotShareable, &outcome);
                    self.insert(exact(), Cached::Analysis(outcome.clone()), &outcome);
                }
                outcome
            }
        }
    }

    /// [`analyze_mysql`], answered from the cache when this exact text was analysed before
    /// with the same current database (MySQL texts are keyed by their exact text only: the
    /// shape scanner reads PostgreSQL's lexical rules).
    pub fn analyze_mysql(&self, sql: &str, ctx: &MysqlContext) -> Outcome {
        let key = Key {
            sql: sql.to_owned(),
            ctx: Dialect::Mysql(ctx.clone()),
            shaped: false,
        };
        self.by_exact_text(key, || self.miss(|| analyze_mysql(sql, ctx)))
    }

    /// The entry of this exact text, analysed (`miss`) and stored on a miss.
    fn by_exact_text(&self, key: Key, miss: impl FnOnce() -> Outcome) -> Outcome {
        if let Some(Cached::Analysis(outcome)) = self.lookup(&key) {
            return self.hit(outcome);
        }
        let outcome = miss();
        self.insert(key, Cached::Analysis(outcome.clone()), &outcome);
        outcome
    }

    fn hit(&self, outcome: Outcome) -> Outcome {
        self.inner.hits.fetch_add(1, Ordering::Relaxed);
        outcome
    }

    fn miss(&self, analyse: impl FnOnce() -> Result<Vec<StatementInfo>, AnalysisError>) -> Outcome {
        self.inner.misses.fetch_add(1, Ordering::Relaxed);
        analyse().map(Arc::new)
    }

    /// The entry for `key`, marked as used.
    fn lookup(&self, key: &Key) -> Option<Cached> {
        let mut state = self.lock();
        let tick = state.next_tick();
        let entry = state.map.get_mut(key)?;
        let old = std::mem::replace(&mut entry.tick, tick);
        let cached = entry.cached.clone();
        if let Some(k) = state.lru.remove(&old) {
            state.lru.insert(tick, k);
        }
        Some(cached)
    }

    /// Stores `cached` under `key` (an internal error of `outcome` is never stored), evicting
    /// the least recently used entries beyond the bound.
    fn insert(&self, key: Key, cached: Cached, outcome: &Outcome) {
        if matches!(outcome, Err(AnalysisError::Internal(_))) {
            return;
        }
        let cost = key.cost();
        if cost > self.inner.max_bytes {
            return;
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
        state.map.insert(key, Entry { cached, tick });
        state.bytes += cost;
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

/// Whether an analysis can be shared by every text of its shape: it must not depend on the
/// value of any literal. The analyser reads literal values only for a constant `LIMIT`,
/// `set_config()` arguments, `SET` values, COPY and EXPLAIN options and stored code, so only
/// statements that read or write rows without any of those qualify (a parse error does not:
/// another text of the shape may parse).
fn shareable(outcome: &Outcome) -> bool {
    const ROW_KINDS: [&str; 5] = ["select", "insert", "update", "delete", "dml"];
    let Ok(statements) = outcome else {
        return false;
    };
    !statements.is_empty()
        && statements.iter().all(|s| {
            s.kinds.iter().all(|k| ROW_KINDS.contains(&k.as_str()))
                && ROW_KINDS.contains(&s.kind.as_str())
                && s.limit.is_none()
                && s.config_calls.is_empty()
                && s.set_setting.is_none()
                && !s.opaque
                && !s.copy_file
                && !s.copy_program
                && s.copy.is_none()
                && s.prepares.is_none()
                && s.executes.is_none()
                && !s.uses.literal_dependent
        })
}
