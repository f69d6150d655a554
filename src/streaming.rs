//! `QA.STREAM`'s half of a flight: the Redis Stream its answer is written to as it arrives.
//!
//! A flight gets a [`Sink`] when a `QA.STREAM` asks for its key (it started the flight, or
//! joined one). The worker hands the sink each piece of text the backend streams; pieces are
//! batched ([`Batcher`]: `qa.stream-batch-ms` / `qa.stream-batch-bytes`) and appended with
//! `XADD` on the main thread (see `mainthread`), replicated like the entry itself. When the
//! flight ends, on the main thread and just before its waiters are answered, the sink writes
//! what is left of the answer and one last entry saying how it ended, and the stream key is
//! given `qa.stream-linger` to live. Flights nobody streams have no sink and write nothing.
//!
//! Entries: `text <piece>`; then `end <finish reason>` with `tokens_in` / `tokens_out` when
//! known; or `error <the error reply QA.GET would give>`. See docs/streaming.md.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use redis_module::{raw, CallOptionsBuilder, CallResult, Context, ContextFlags};

use crate::mainthread;

/// When pieces are written: after `ms` since the last write, or as soon as `bytes` wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchSettings {
    pub ms: u64,
    pub bytes: usize,
}

/// Pieces waiting to be written, and when the next write is due. Pure (the time is passed
/// in), so the batching rule is tested without a clock: the first piece goes out at once,
/// later ones at most every `ms` or as soon as `bytes` have gathered.
#[derive(Debug, Default)]
pub struct Batcher {
    pending: String,
    last_write: Option<Instant>,
    /// A write is scheduled for this time (its task will take whatever is pending then).
    due: Option<Instant>,
}

impl Batcher {
    /// Adds `piece`; returns the delay of a write to schedule, if one must be.
    pub fn push(&mut self, piece: &str, now: Instant, s: BatchSettings) -> Option<Duration> {
        self.pending.push_str(piece);
        let full = self.pending.len() >= s.bytes;
        match self.due {
            // Already due soon enough.
            Some(due) if !full || due <= now => None,
            _ => {
                let at = match self.last_write {
                    Some(last) if !full => (last + Duration::from_millis(s.ms)).max(now),
                    _ => now,
                };
                self.due = Some(at);
                Some(at - now)
            }
        }
    }

    /// Takes what is pending, for a write made now.
    pub fn take(&mut self, now: Instant) -> String {
        self.due = None;
        self.last_write = Some(now);
        std::mem::take(&mut self.pending)
    }
}

/// What a sink copies from the config when it is made.
#[derive(Debug, Clone, Copy)]
pub struct SinkSettings {
    pub batch: BatchSettings,
    /// How long the stream lives after its last entry.
    pub linger_ms: i64,
    /// Its lifetime while the call runs (a flight that dies without an end cannot leave it
    /// behind for ever).
    pub running_ms: i64,
}

struct State {
    batch: Batcher,
    /// Bytes of the answer written so far (the pieces written are its first bytes).
    written: usize,
    /// A piece could not be written (out of memory): nothing more is, but the end entry.
    broken: bool,
    /// The last entry is written: nothing more is.
    closed: bool,
}

/// The stream of one flight.
pub struct Sink {
    db: i32,
    key: Vec<u8>,
    settings: SinkSettings,
    state: Mutex<State>,
}

impl Sink {
    pub fn new(db: i32, key: Vec<u8>, settings: SinkSettings) -> Arc<Sink> {
        Arc::new(Sink {
            db,
            key,
            settings,
            state: Mutex::new(State {
                batch: Batcher::default(),
                written: 0,
                broken: false,
                closed: false,
            }),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// From the worker: the next piece of the answer.
    pub fn push(self: &Arc<Self>, piece: &str) {
        let delay = {
            let mut st = self.state();
            if st.closed || st.broken {
                return;
            }
            st.batch.push(piece, Instant::now(), self.settings.batch)
        };
        if let Some(delay) = delay {
            let sink = Arc::clone(self);
            let task: mainthread::Task = if delay.is_zero() {
                Box::new(move |ctx| sink.write_pending(ctx))
            } else {
                Box::new(move |ctx| {
                    mainthread::post_after(ctx, delay, Box::new(move |ctx| sink.write_pending(ctx)))
                })
            };
            // Not reached on supported servers; the pieces then go out with the end.
            let _ = mainthread::post(task);
        }
    }

    /// Main thread: writes the pending pieces as one entry.
    fn write_pending(self: Arc<Self>, ctx: &Context) {
        let mut st = self.state();
        if st.closed || st.broken {
            return;
        }
        match writable(ctx) {
            Writable::Yes => {}
            Writable::Paused => {
                drop(st);
                let sink = Arc::clone(&self);
                mainthread::post_after(
                    ctx,
                    PAUSE_RETRY,
                    Box::new(move |ctx| sink.write_pending(ctx)),
                );
                return;
            }
            Writable::Never => {
                st.closed = true;
                return;
            }
        }
        let text = st.batch.take(Instant::now());
        if text.is_empty() {
            return;
        }
        select_db(ctx, self.db);
        let first = st.written == 0;
        if xadd(ctx, &self.key, &[(b"text", text.as_bytes())], true) {
            st.written += text.len();
            if first {
                self.expire(ctx, self.settings.running_ms);
            }
        } else {
            st.broken = true;
        }
    }

    /// Main thread, when the flight ends: what is left of the answer and the last entry.
    /// `Paused` if writes are paused now (call again later); nothing happens twice.
    pub fn end(&self, ctx: &Context, end: &End<'_>) -> Writable {
        let mut st = self.state();
        if st.closed {
            return Writable::Yes;
        }
        let w = writable(ctx);
        if w != Writable::Yes {
            st.closed = w == Writable::Never;
            return w;
        }
        st.closed = true;
        select_db(ctx, self.db);
        let written = st.written;
        let last: Vec<(&[u8], Vec<u8>)> = match end {
            End::Answer {
                text,
                finish,
                tokens_in,
                tokens_out,
            } if !st.broken => {
                // The pieces written are the answer's first bytes: write the rest of it.
                let rest = text.get(written..).unwrap_or_default();
                if !rest.is_empty() && !xadd(ctx, &self.key, &[(b"text", rest.as_bytes())], true) {
                    return self.error_end(ctx, crate::error::OOM.as_bytes());
                }
                let mut fields: Vec<(&[u8], Vec<u8>)> = vec![(b"end", finish.as_bytes().to_vec())];
                if let Some(n) = tokens_in {
                    fields.push((b"tokens_in", n.to_string().into_bytes()));
                }
                if let Some(n) = tokens_out {
                    fields.push((b"tokens_out", n.to_string().into_bytes()));
                }
                fields
            }
            End::Answer { .. } => vec![(b"error", crate::error::OOM.as_bytes().to_vec())],
            End::Error(text) => vec![(b"error", text.to_vec())],
        };
        let fields: Vec<(&[u8], &[u8])> = last.iter().map(|(k, v)| (*k, &v[..])).collect();
        // Past maxmemory too: a few bytes, without which readers would wait for the expiry.
        xadd(ctx, &self.key, &fields, false);
        self.expire(ctx, self.settings.linger_ms);
        Writable::Yes
    }

    fn error_end(&self, ctx: &Context, text: &[u8]) -> Writable {
        xadd(ctx, &self.key, &[(b"error", text)], false);
        self.expire(ctx, self.settings.linger_ms);
        Writable::Yes
    }

    fn expire(&self, ctx: &Context, ms: i64) {
        let ms = ms.max(1).to_string();
        let opts = CallOptionsBuilder::new()
            .replicate()
            .errors_as_replies()
            .build();
        let _: CallResult = ctx.call_ext("PEXPIRE", &opts, &[&self.key[..], ms.as_bytes()][..]);
    }
}

/// How a streamed flight ended.
pub enum End<'a> {
    Answer {
        text: &'a str,
        finish: &'a str,
        tokens_in: Option<u64>,
        tokens_out: Option<u64>,
    },
    /// The whole error reply, code included, as `QA.GET` would reply it.
    Error(&'a [u8]),
}

/// Whether the module may write now.
#[derive(Debug, PartialEq, Eq)]
pub enum Writable {
    Yes,
    /// Clients are paused (`CLIENT PAUSE WRITE`, a failover): Redis 7.0 aborts if a module
    /// propagates a write then. Try again later.
    Paused,
    /// This server is a replica: its primary's writes are the only ones.
    Never,
}

fn writable(ctx: &Context) -> Writable {
    if ctx.get_flags().contains(ContextFlags::SLAVE) {
        return Writable::Never;
    }
    if unsafe { raw::RedisModule_AvoidReplicaTraffic.map_or(0, |f| f()) } != 0 {
        return Writable::Paused;
    }
    Writable::Yes
}

/// How often a write waiting out a pause is tried again.
pub const PAUSE_RETRY: Duration = Duration::from_millis(20);

fn select_db(ctx: &Context, db: i32) {
    // A timer's context starts on database 0.
    unsafe { raw::RedisModule_SelectDb.unwrap()(ctx.ctx, db) };
}

/// `XADD <key> * <fields...>`, replicated; with `check_oom`, refused on OOM like the entry's
/// own write (see `entry::write`). False if refused.
fn xadd(ctx: &Context, key: &[u8], fields: &[(&[u8], &[u8])], check_oom: bool) -> bool {
    let evicts = !check_oom || ctx.get_flags().contains(ContextFlags::EVICTED);
    let builder = CallOptionsBuilder::new()
        .replicate()
        .script_mode()
        .errors_as_replies();
    let opts = if evicts {
        builder.build()
    } else {
        builder.verify_oom().build()
    };
    let mut args: Vec<&[u8]> = Vec::with_capacity(2 + 2 * fields.len());
    args.push(key);
    args.push(b"*");
    for (k, v) in fields {
        args.push(k);
        args.push(v);
    }
    let added: CallResult = ctx.call_ext("XADD", &opts, &args[..]);
    added.is_ok()
}

/// The stream key of an entry key: `<entry key>:stream`, in the entry's hash slot.
pub fn stream_key(entry_key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(entry_key.len() + 7);
    k.extend_from_slice(entry_key);
    k.extend_from_slice(b":stream");
    k
}

/// A flight: (database, entry key).
pub type FlightKey = (i32, Vec<u8>);

/// The sinks of the flights that have one. Locked after the flight table, never before.
fn sinks() -> MutexGuard<'static, HashMap<FlightKey, Arc<Sink>>> {
    static SINKS: OnceLock<Mutex<HashMap<FlightKey, Arc<Sink>>>> = OnceLock::new();
    SINKS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

/// Gives flight `key` a sink unless it has one; true if it was made now. The caller holds
/// the flight table's lock.
pub fn attach(key: &FlightKey, make: impl FnOnce() -> Arc<Sink>) -> bool {
    let mut s = sinks();
    if s.contains_key(key) {
        return false;
    }
    s.insert(key.clone(), make());
    true
}

/// The sink of flight `key`, if it has one.
pub fn attached(key: &FlightKey) -> Option<Arc<Sink>> {
    sinks().get(key).cloned()
}

/// Takes the sink out of flight `key` (the flight is ending).
pub fn detach(key: &FlightKey) -> Option<Arc<Sink>> {
    sinks().remove(key)
}

/// Streams being written (for INFO).
pub fn count() -> usize {
    sinks().len()
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: BatchSettings = BatchSettings { ms: 5, bytes: 10 };

    #[test]
    fn batching() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut b = Batcher::default();
        // The first piece is written at once.
        assert_eq!(b.push("a", t0, S), Some(Duration::ZERO));
        // Scheduled already: nothing more to schedule.
        assert_eq!(b.push("b", t0, S), None);
        assert_eq!(b.take(ms(1)), "ab");
        // 2 ms after a write: due 5 ms after it, so in 4 ms.
        assert_eq!(b.push("c", ms(2), S), Some(Duration::from_millis(4)));
        assert_eq!(b.push("d", ms(3), S), None);
        // Full (10 bytes) before the due time: one more write, now.
        assert_eq!(b.push("efghijkl", ms(4), S), Some(Duration::ZERO));
        assert_eq!(b.push("m", ms(4), S), None);
        assert_eq!(b.take(ms(4)), "cdefghijklm");
        // The write scheduled for 6 ms finds nothing.
        assert_eq!(b.take(ms(6)), "");
        // Long after the last write: at once again.
        assert_eq!(b.push("n", ms(100), S), Some(Duration::ZERO));
        assert_eq!(b.take(ms(100)), "n");
    }

    #[test]
    fn a_pending_piece_always_has_a_write_scheduled() {
        // Whatever the timing, after each push either a write is due or nothing is pending.
        let t0 = Instant::now();
        let mut b = Batcher::default();
        let mut seed = 7u64;
        let mut now = t0;
        let mut due: Option<Instant> = None;
        let mut written = String::new();
        let mut all = String::new();
        for i in 0..5000 {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            now += Duration::from_micros(seed >> 54);
            if due.is_some_and(|d| d <= now) {
                written.push_str(&b.take(now));
                due = None;
            }
            let piece = "x".repeat((seed >> 60) as usize + 1);
            all.push_str(&piece);
            if let Some(d) = b.push(&piece, now, S) {
                due = Some(due.map_or(now + d, |old| old.min(now + d)));
            }
            assert!(due.is_some() || b.pending.is_empty(), "{i}");
        }
        written.push_str(&b.take(now));
        assert_eq!(written, all);
    }

    #[test]
    fn stream_key_shares_the_entry_slot() {
        assert_eq!(
            stream_key(b"qa:{faq}:0123456789abcdef0123456789abcdef"),
            b"qa:{faq}:0123456789abcdef0123456789abcdef:stream"
        );
    }
}
