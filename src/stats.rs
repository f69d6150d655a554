//! Counters for the `qa` INFO section. In memory only: the hit path never writes a key.

use std::sync::atomic::{AtomicU64, Ordering};

use redis_module::{InfoContext, RedisResult};

use crate::backend::Kind;

pub struct Counter(AtomicU64);

impl Counter {
    const fn new() -> Self {
        Counter(AtomicU64::new(0))
    }

    /// Adds one. Relaxed: counters order nothing.
    pub fn bump(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds one from the main thread only: a plain load and store, no locked instruction,
    /// because this runs on every hit.
    pub fn bump_main(&self) {
        self.0
            .store(self.0.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

pub static HITS: Counter = Counter::new();
pub static MISSES: Counter = Counter::new();
pub static COALESCED: Counter = Counter::new();
pub static BACKEND_CALLS: Counter = Counter::new();
pub static BACKEND_ERRORS: Counter = Counter::new();
pub static CLIENT_TIMEOUTS: Counter = Counter::new();
pub static REFUSED_BUSY: Counter = Counter::new();
pub static STORED: Counter = Counter::new();
pub static STORE_ERRORS: Counter = Counter::new();
pub static BACKEND_RETRIES: Counter = Counter::new();
pub static BREAKER_OPENED: Counter = Counter::new();
pub static BREAKER_REJECTED: Counter = Counter::new();
pub static TRUNCATED: Counter = Counter::new();
pub static NOT_STORED: Counter = Counter::new();

/// Failed misses by kind, indexed by [`kind_index`].
pub static ERRORS_BY_KIND: [Counter; 9] = [const { Counter::new() }; 9];

/// INFO field names of [`ERRORS_BY_KIND`], in index order.
const KIND_FIELDS: [&str; 9] = [
    "errors_local",
    "errors_unreachable",
    "errors_timeout",
    "errors_http_4xx",
    "errors_http_429",
    "errors_http_5xx",
    "errors_malformed",
    "errors_empty",
    "errors_too_large",
];

pub fn kind_index(kind: Kind) -> usize {
    match kind {
        Kind::Local => 0,
        Kind::Unreachable => 1,
        Kind::Timeout => 2,
        Kind::Http4xx => 3,
        Kind::Http429 => 4,
        Kind::Http5xx => 5,
        Kind::Malformed => 6,
        Kind::Empty => 7,
        Kind::TooLarge => 8,
    }
}

/// Counts one failed miss (a call that ended without an answer).
pub fn count_error(kind: Kind) {
    BACKEND_ERRORS.bump();
    ERRORS_BY_KIND[kind_index(kind)].bump();
}

/// Writes the `# qa` INFO section.
pub fn info(ctx: &InfoContext, _for_crash_report: bool) -> RedisResult<()> {
    let (running, queued) = crate::worker::load();
    let (flights, waiting) = crate::worker::flights();
    let mut b = ctx
        .builder()
        .add_section("")
        .field("hits", HITS.get())?
        .field("misses", MISSES.get())?
        .field("coalesced", COALESCED.get())?
        .field("backend_calls", BACKEND_CALLS.get())?
        .field("backend_errors", BACKEND_ERRORS.get())?
        .field("client_timeouts", CLIENT_TIMEOUTS.get())?
        .field("refused_busy", REFUSED_BUSY.get())?
        .field("stored", STORED.get())?
        .field("store_errors", STORE_ERRORS.get())?
        .field("inflight", running as u64)?
        .field("queued", queued as u64)?
        .field("flights", flights as u64)?
        .field("waiting_clients", waiting as u64)?
        .field("backend_retries", BACKEND_RETRIES.get())?
        .field("breaker_open", crate::worker::breaker_open() as u64)?
        .field("breaker_opened", BREAKER_OPENED.get())?
        .field("breaker_rejected", BREAKER_REJECTED.get())?
        .field("truncated", TRUNCATED.get())?
        .field("not_stored", NOT_STORED.get())?;
    for (name, counter) in KIND_FIELDS.iter().zip(&ERRORS_BY_KIND) {
        b = b.field(name, counter.get())?;
    }
    b.build_section()?.build_info()?;
    Ok(())
}
