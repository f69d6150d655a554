//! Counters for the `qa` INFO section. In memory only: the hit path never writes a key.

use std::sync::atomic::{AtomicU64, Ordering};

use redis_module::{InfoContext, RedisResult};

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

/// Writes the `# qa` INFO section.
pub fn info(ctx: &InfoContext, _for_crash_report: bool) -> RedisResult<()> {
    let (running, queued) = crate::worker::load();
    let (flights, waiting) = crate::worker::flights();
    ctx.builder()
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
        .build_section()?
        .build_info()?;
    Ok(())
}
