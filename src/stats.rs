//! Counters for `INFO qa` and `QA.STATS`. In memory only: the hit path never writes a key.
//! Global counters are atomics (workers count too); per-cache counters live under the Redis
//! lock, for caches seen since the module loaded.
//!
//! A leaf: every layer writes here, and this module reads nothing of the crate. The figures
//! are rendered (with what the worker pool, the backend and the semantic index report) by
//! `commands::info`.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex};

use redis_module::{RedisGILGuard, RedisLockIndicator};

pub struct Counter(AtomicU64);

impl Counter {
    const fn new() -> Self {
        Counter(AtomicU64::new(0))
    }

    /// Adds one. Relaxed: counters order nothing.
    pub fn bump(&self) {
        self.add(1);
    }

    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// Adds `n` from the main thread only: a plain load and store, no locked instruction,
    /// because this runs on every hit.
    pub fn add_main(&self, n: u64) {
        self.0
            .store(self.0.load(Ordering::Relaxed) + n, Ordering::Relaxed);
    }

    pub fn bump_main(&self) {
        self.add_main(1);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    /// Back to zero (`QA.RESETSTATS`).
    pub fn reset(&self) {
        self.0.store(0, Ordering::Relaxed);
    }
}

/// Something counted in one slot of a fixed array of counters: a backend failure kind
/// ([`ERRORS_BY_KIND`]) or a semantic guard ([`GUARD_REFUSED`]). The layer that defines the
/// kinds says which slot each takes, so the counters need not know them.
pub trait CounterIndex {
    fn counter_index(&self) -> usize;
}

pub static HITS: Counter = Counter::new();
pub static MISSES: Counter = Counter::new();
pub static COALESCED: Counter = Counter::new();
pub static STALE: Counter = Counter::new();
pub static BACKEND_CALLS: Counter = Counter::new();
pub static BACKEND_ERRORS: Counter = Counter::new();
pub static CLIENT_TIMEOUTS: Counter = Counter::new();
pub static REFUSED_BUSY: Counter = Counter::new();
pub static STORED: Counter = Counter::new();
pub static STORE_ERRORS: Counter = Counter::new();
/// Per-source sets evicted (each gave its cache a new generation).
pub static SOURCE_SETS_EVICTED: Counter = Counter::new();
pub static TOKENS_IN_SPENT: Counter = Counter::new();
pub static TOKENS_OUT_SPENT: Counter = Counter::new();
pub static TOKENS_IN_SAVED: Counter = Counter::new();
pub static TOKENS_OUT_SAVED: Counter = Counter::new();
pub static BACKEND_MS_SAVED: Counter = Counter::new();

// The semantic tier.
pub static SEMANTIC_HITS: Counter = Counter::new();
/// Searches that found nothing servable (the backend was called).
pub static SEMANTIC_NO_MATCH: Counter = Counter::new();
/// Matches whose entry was gone or changed when checked (never served).
pub static SEMANTIC_STALE_INDEX: Counter = Counter::new();
pub static EMBED_CALLS: Counter = Counter::new();
pub static EMBED_ERRORS: Counter = Counter::new();
pub static EMBED_TOKENS: Counter = Counter::new();
// The verifier (`qa.semantic-verify`) and the audit (`qa.semantic-audit-rate`).
/// Verifier HTTP calls (one per candidate asked for `llm`, one per miss for `rerank`).
pub static VERIFY_CALLS: Counter = Counter::new();
/// Misses whose verifier accepted a candidate (served unless its entry changed meanwhile).
pub static VERIFY_ACCEPTED: Counter = Counter::new();
/// Misses whose verifier refused every candidate (the backend was called).
pub static VERIFY_REFUSED: Counter = Counter::new();
/// Misses whose verifier failed: error, timeout, unreadable reply (the backend was called).
pub static VERIFY_ERRORS: Counter = Counter::new();
/// `llm` verification asked of a webhook backend, which cannot answer it (counted in errors).
pub static VERIFY_UNSUPPORTED: Counter = Counter::new();
pub static VERIFY_TOKENS_IN: Counter = Counter::new();
pub static VERIFY_TOKENS_OUT: Counter = Counter::new();
/// Audits started / that could not be started (no free worker) / that failed.
pub static AUDIT_STARTED: Counter = Counter::new();
pub static AUDIT_SKIPPED: Counter = Counter::new();
pub static AUDIT_ERRORS: Counter = Counter::new();
/// Audit HTTP calls (the fresh answer and the comparison), and their tokens.
pub static AUDIT_CALLS: Counter = Counter::new();
pub static AUDIT_TOKENS_IN: Counter = Counter::new();
pub static AUDIT_TOKENS_OUT: Counter = Counter::new();
/// Calibration steps, over every cache.
pub static THRESHOLD_RAISED: Counter = Counter::new();
pub static THRESHOLD_LOWERED: Counter = Counter::new();
/// Matches refused by a guard, by `semantic::guard::ALL` position.
pub static GUARD_REFUSED: [Counter; 16] = [const { Counter::new() }; 16];

/// Counts a refusal by guard `r`.
pub fn count_refusal(r: impl CounterIndex) {
    if let Some(c) = GUARD_REFUSED.get(r.counter_index()) {
        c.bump();
    }
}

/// Every guard refusal.
pub fn guard_refusals() -> u64 {
    GUARD_REFUSED.iter().map(Counter::get).sum()
}

/// Per-cache figures.
#[derive(Default, Clone, Debug, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    pub coalesced: u64,
    /// Hits served past their TTL, within the stale grace, while a refresh ran.
    pub stale: u64,
    pub backend_calls: u64,
    pub backend_errors: u64,
    pub tokens_in_spent: u64,
    pub tokens_out_spent: u64,
    pub tokens_in_saved: u64,
    pub tokens_out_saved: u64,
    pub backend_ms_saved: u64,
    /// Answers served for a paraphrase (the semantic tier).
    pub semantic_hits: u64,
}

/// Caches tracked one by one; beyond, only the global figures grow (bounded memory whatever
/// cache names clients send). A cache is tracked from when it gets its generation (its first
/// stored entry, see `generation::ensure`), in that order: names that only ever miss or are
/// peeked at take no slot. `QA.STATS <cache>` says `tracked 0` for a cache beyond the limit.
pub const MAX_CACHES: usize = 10_000;

/// Per-cache figures in slots: the hit path reaches its cache's slot by index (kept in the
/// generation mirror), without hashing the name again.
#[derive(Default)]
struct Slots {
    index: HashMap<Box<[u8]>, usize>,
    stats: Vec<CacheStats>,
}

static SLOTS: LazyLock<RedisGILGuard<Slots>> =
    LazyLock::new(|| RedisGILGuard::new(Slots::default()));

/// The slot of `cache`, if it is tracked (the caller holds the Redis lock).
pub fn slot<G: RedisLockIndicator>(ctx: &G, cache: &[u8]) -> Option<usize> {
    SLOTS.lock(ctx).index.get(cache).copied()
}

/// The slot of `cache`, made if there is room: for a cache that is getting entries.
pub fn track<G: RedisLockIndicator>(ctx: &G, cache: &[u8]) -> Option<usize> {
    let mut slots = SLOTS.lock(ctx);
    if let Some(i) = slots.index.get(cache) {
        return Some(*i);
    }
    if slots.stats.len() >= MAX_CACHES {
        return None;
    }
    let i = slots.stats.len();
    slots.stats.push(CacheStats::default());
    slots.index.insert(cache.into(), i);
    Some(i)
}

/// Updates the figures in slot `i`.
pub fn with_slot<G: RedisLockIndicator>(ctx: &G, i: usize, f: impl FnOnce(&mut CacheStats)) {
    if let Some(s) = SLOTS.lock(ctx).stats.get_mut(i) {
        f(s);
    }
}

/// Updates the figures of `cache` (the caller holds the Redis lock).
pub fn for_cache<G: RedisLockIndicator>(ctx: &G, cache: &[u8], f: impl FnOnce(&mut CacheStats)) {
    if let Some(i) = slot(ctx, cache) {
        with_slot(ctx, i, f);
    }
}

/// The figures of one cache, if it was seen.
pub fn cache<G: RedisLockIndicator>(ctx: &G, cache: &[u8]) -> Option<CacheStats> {
    let slots = SLOTS.lock(ctx);
    slots
        .index
        .get(cache)
        .and_then(|i| slots.stats.get(*i))
        .cloned()
}

/// The global figures as a `CacheStats`.
pub fn global() -> CacheStats {
    CacheStats {
        hits: HITS.get(),
        misses: MISSES.get(),
        coalesced: COALESCED.get(),
        stale: STALE.get(),
        backend_calls: BACKEND_CALLS.get(),
        backend_errors: BACKEND_ERRORS.get(),
        tokens_in_spent: TOKENS_IN_SPENT.get(),
        tokens_out_spent: TOKENS_OUT_SPENT.get(),
        tokens_in_saved: TOKENS_IN_SAVED.get(),
        tokens_out_saved: TOKENS_OUT_SAVED.get(),
        backend_ms_saved: BACKEND_MS_SAVED.get(),
        semantic_hits: SEMANTIC_HITS.get(),
    }
}

/// The last `WINDOW` values of a measure, for percentiles.
struct Window(Mutex<VecDeque<u64>>);

const WINDOW: usize = 1024;

impl Window {
    const fn new() -> Self {
        Window(Mutex::new(VecDeque::new()))
    }

    fn clear(&self) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    fn record(&self, v: u64) {
        let mut w = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if w.len() == WINDOW {
            w.pop_front();
        }
        w.push_back(v);
    }

    /// (p50, p99), 0 when nothing was recorded.
    fn percentiles(&self) -> (u64, u64) {
        let mut v: Vec<u64> = self
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .copied()
            .collect();
        percentiles(&mut v)
    }
}

/// Backend latencies of the last calls, in ms.
static LATENCIES: Window = Window::new();
/// Semantic index search times of the last searches, in µs.
static SEARCH_US: Window = Window::new();

pub fn record_latency(ms: u64) {
    LATENCIES.record(ms);
}

/// (p50, p99) of the recent backend latencies in ms.
pub fn latency_percentiles() -> (u64, u64) {
    LATENCIES.percentiles()
}

pub fn record_search_us(us: u64) {
    SEARCH_US.record(us);
}

/// (p50, p99) of the recent semantic index searches in µs.
pub fn search_percentiles() -> (u64, u64) {
    SEARCH_US.percentiles()
}

fn percentiles(v: &mut [u64]) -> (u64, u64) {
    if v.is_empty() {
        return (0, 0);
    }
    v.sort_unstable();
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    (at(0.50), at(0.99))
}

/// Money saved, from the tokens saved and the prices per million tokens.
pub fn money_saved(s: &CacheStats, price_in: f64, price_out: f64) -> f64 {
    (s.tokens_in_saved as f64 * price_in + s.tokens_out_saved as f64 * price_out) / 1e6
}

pub static BACKEND_RETRIES: Counter = Counter::new();
pub static BREAKER_OPENED: Counter = Counter::new();
pub static BREAKER_REJECTED: Counter = Counter::new();
pub static TRUNCATED: Counter = Counter::new();
pub static NOT_STORED: Counter = Counter::new();
/// Semantic searches that gave up: the index stayed held past half the askers' time.
pub static SEMANTIC_INDEX_BUSY: Counter = Counter::new();
/// Keyspace events that reached the module (generic, expired, evicted: see `lib.rs`).
pub static KEYSPACE_EVENTS: Counter = Counter::new();

/// Failed misses by kind, indexed by the kind's [`CounterIndex`].
pub static ERRORS_BY_KIND: [Counter; 9] = [const { Counter::new() }; 9];

/// Every counter of this module, for [`reset_all`]. A new counter goes here too.
static ALL_COUNTERS: [&Counter; 44] = [
    &HITS,
    &MISSES,
    &COALESCED,
    &STALE,
    &BACKEND_CALLS,
    &BACKEND_ERRORS,
    &CLIENT_TIMEOUTS,
    &REFUSED_BUSY,
    &STORED,
    &STORE_ERRORS,
    &SOURCE_SETS_EVICTED,
    &TOKENS_IN_SPENT,
    &TOKENS_OUT_SPENT,
    &TOKENS_IN_SAVED,
    &TOKENS_OUT_SAVED,
    &BACKEND_MS_SAVED,
    &SEMANTIC_HITS,
    &SEMANTIC_NO_MATCH,
    &SEMANTIC_STALE_INDEX,
    &EMBED_CALLS,
    &EMBED_ERRORS,
    &EMBED_TOKENS,
    &BACKEND_RETRIES,
    &BREAKER_OPENED,
    &BREAKER_REJECTED,
    &TRUNCATED,
    &NOT_STORED,
    &KEYSPACE_EVENTS,
    &SEMANTIC_INDEX_BUSY,
    &VERIFY_CALLS,
    &VERIFY_ACCEPTED,
    &VERIFY_REFUSED,
    &VERIFY_ERRORS,
    &VERIFY_UNSUPPORTED,
    &VERIFY_TOKENS_IN,
    &VERIFY_TOKENS_OUT,
    &AUDIT_STARTED,
    &AUDIT_SKIPPED,
    &AUDIT_ERRORS,
    &AUDIT_CALLS,
    &AUDIT_TOKENS_IN,
    &AUDIT_TOKENS_OUT,
    &THRESHOLD_RAISED,
    &THRESHOLD_LOWERED,
];

/// Zeroes every counter: the global ones, every cache's figures (the caches keep their
/// slots) and the latency windows (the caller holds the Redis lock). Workers counting at the
/// same moment may have their count land before or after the reset.
pub fn reset_all<G: RedisLockIndicator>(ctx: &G) {
    for c in ALL_COUNTERS
        .iter()
        .copied()
        .chain(&GUARD_REFUSED)
        .chain(&ERRORS_BY_KIND)
    {
        c.reset();
    }
    LATENCIES.clear();
    SEARCH_US.clear();
    for s in SLOTS.lock(ctx).stats.iter_mut() {
        *s = CacheStats::default();
    }
}

/// Zeroes the figures of one cache, if it was seen (the caller holds the Redis lock).
pub fn reset_cache<G: RedisLockIndicator>(ctx: &G, cache: &[u8]) {
    let mut slots = SLOTS.lock(ctx);
    if let Some(i) = slots.index.get(cache).copied() {
        if let Some(s) = slots.stats.get_mut(i) {
            *s = CacheStats::default();
        }
    }
}

/// The share of agreeing audits (1 with none: nothing says otherwise yet).
pub fn precision(agreed: u64, audited: u64) -> f64 {
    if audited == 0 {
        1.0
    } else {
        agreed.min(audited) as f64 / audited as f64
    }
}

/// Counts one failed miss (a call that ended without an answer).
pub fn count_error(kind: impl CounterIndex) {
    BACKEND_ERRORS.bump();
    if let Some(c) = ERRORS_BY_KIND.get(kind.counter_index()) {
        c.bump();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_window() {
        // (values, expected (p50, p99))
        let rows: &[(&[u64], (u64, u64))] = &[
            (&[], (0, 0)),
            (&[7], (7, 7)),
            (&[5, 1, 3], (3, 5)),
            (&[1, 2, 3, 4, 5, 6, 7, 8, 9, 100], (6, 100)),
        ];
        for (values, want) in rows {
            assert_eq!(percentiles(&mut values.to_vec()), *want, "{values:?}");
        }
        let mut hundred: Vec<u64> = (1..=100).collect();
        assert_eq!(percentiles(&mut hundred), (51, 99));
    }

    #[test]
    fn money() {
        let s = CacheStats {
            tokens_in_saved: 2_000_000,
            tokens_out_saved: 1_000_000,
            ..Default::default()
        };
        // $0.15 per million in, $0.60 per million out.
        assert!((money_saved(&s, 0.15, 0.60) - 0.90).abs() < 1e-9);
    }
}
