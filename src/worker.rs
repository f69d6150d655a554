//! The miss path off the main thread: one backend call per flight, then one write on the main
//! thread (see `mainthread`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use redis_module::{ContextFlags, ThreadSafeContext};

use crate::backend::breaker::{Admit, Breaker, Change};
use crate::backend::embed::Embedding;
use crate::backend::http::Embed;
use crate::backend::http::{self, CallSettings};
use crate::backend::{Answer, BackendError, Request};
use crate::blocked::SemanticHit;
use crate::blocked::{Outcome, Waiter};
use crate::flight::{Joined, SingleFlight};
use crate::pool::{Pool, QueueFull};
use crate::semantic::calibrate;
use crate::semantic::index::{Found, ScopeKey};
use crate::semantic::{self, audit, guard, upkeep, verify};
use crate::streaming::{self, Sink};
use crate::{config, entry, generation, mainthread, normalize, stats};

/// Everything one backend call needs, copied on the main thread when the miss is seen.
pub struct Job {
    /// The asker's database: entries are looked up there, so they are written there.
    pub db: i32,
    pub cache: Vec<u8>,
    pub key: Vec<u8>,
    pub request: Request,
    pub ttl_secs: i64,
    pub stale_secs: i64,
    /// A refresh of a stale entry that nobody waits for.
    pub background: bool,
    pub deadline: Instant,
    pub timeout_ms: u64,
    pub settings: CallSettings,
    /// Store completions cut short by the token limit (`qa.cache-truncated`).
    pub cache_truncated: bool,
    /// Set by [`start`]: this call is the circuit breaker's probe. Dropped with the job
    /// unless its outcome was recorded, which lets the next miss probe.
    pub probe: Option<Probe>,
    /// The cache's generation when the miss was seen: the answer is stored only if it is
    /// still the current one (after `QA.INVALIDATE` the entry could never be reached).
    pub generation: Vec<u8>,
    /// The semantic tier, when on for this call.
    pub semantic: Option<SemanticJob>,
    /// The sources the asker tagged the answer with (`SOURCES`), as an entry's sources
    /// part; empty: the backend's (webhook `"sources"`), if any.
    pub sources: Vec<u8>,
    /// Unix µs when the question was asked: an answer citing a source invalidated since is
    /// not stored (it may come from the document before its change).
    pub asked_us: i64,
}

impl Job {
    /// The sources the entry made from `answer` cites.
    fn sources_of<'a>(&'a self, answer: &'a Answer) -> &'a [u8] {
        if self.sources.is_empty() {
            &answer.sources
        } else {
            &self.sources
        }
    }

    /// What the askers of `answer` are replied (with its sources in `WITHMETA`).
    fn outcome(&self, answer: &Answer, ttl_ms: i64) -> Outcome {
        match self.sources_of(answer) {
            [] => Outcome::Answer(answer.text.clone(), ttl_ms),
            s => Outcome::Cited(answer.text.clone(), ttl_ms, s.to_vec()),
        }
    }
}

/// What the semantic tier needs for one miss.
pub struct SemanticJob {
    pub settings: config::SemanticSettings,
    /// Where matches may come from: this database, cache, model, system prompt, generation.
    pub scope: ScopeKey,
    /// Search for a match (else only embed, so the new entry gets its vector: `REFRESH`).
    pub search: bool,
}

/// The circuit breaker, with the backend URL it is about: a new URL starts closed.
fn breaker() -> MutexGuard<'static, (String, Breaker)> {
    static BREAKER: Mutex<(String, Breaker)> = Mutex::new((String::new(), Breaker::CLOSED));
    BREAKER.lock().unwrap_or_else(|p| p.into_inner())
}

/// Whether misses are being refused by the breaker right now (for INFO).
pub fn breaker_open() -> bool {
    breaker().1.is_open()
}

/// Asks the breaker whether a call to `url` may start.
fn admit(url: &str) -> Admit {
    let mut b = breaker();
    if b.0 != url {
        *b = (url.to_string(), Breaker::CLOSED);
    }
    b.1.admit(Instant::now(), config::breaker_settings())
}

/// Tells the breaker how an admitted call to `url` ended.
fn record(url: &str, failed: bool, probe: bool) {
    let mut b = breaker();
    if b.0 != url {
        return;
    }
    let change =
        b.1.record(Instant::now(), config::breaker_settings(), failed, probe);
    drop(b);
    if change == Change::Opened {
        stats::BREAKER_OPENED.bump();
    }
}

/// The breaker's probe, owned by the job that makes it. Every way a job can end without
/// reaching the backend (refused by the queue, served by the semantic tier, unwound, dropped
/// by a main-thread task that never ran) drops it, which lets the next miss probe.
pub struct Probe {
    url: String,
    recorded: bool,
}

impl Probe {
    /// Reports the probe's outcome.
    fn record(mut self, failed: bool) {
        self.recorded = true;
        record(&self.url, failed, true);
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        if self.recorded {
            return;
        }
        let mut b = breaker();
        if b.0 == self.url {
            b.1.cancel_probe(Instant::now());
        }
    }
}

/// Flights are per (database, entry key): the same key in two databases is two entries.
type FlightKey = streaming::FlightKey;
type Flights = SingleFlight<FlightKey, Waiter>;

fn flight_table() -> MutexGuard<'static, Flights> {
    static FLIGHTS: OnceLock<Mutex<Flights>> = OnceLock::new();
    FLIGHTS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

/// How often waiters are checked against their deadlines.
const REAP_EVERY: Duration = Duration::from_millis(10);

/// Starts the thread that answers waiters whose deadline passed. Idempotent.
pub fn start_reaper() {
    static STARTED: OnceLock<()> = OnceLock::new();
    STARTED.get_or_init(|| {
        let _ = std::thread::Builder::new()
            .name("qa-reaper".into())
            .spawn(|| loop {
                std::thread::sleep(REAP_EVERY);
                let _ = std::panic::catch_unwind(reap);
            });
    });
}

fn reap() {
    let now = Instant::now();
    let expired = flight_table().take_waiters_where(|w| w.deadline <= now);
    if expired.is_empty() {
        return;
    }
    let timeout_ms = config::TIMEOUT_MS.get();
    let outcome = Arc::new(Outcome::err(
        BackendError::Timeout(timeout_ms.max(0) as u64),
    ));
    for w in expired {
        stats::CLIENT_TIMEOUTS.bump();
        w.finish(&outcome);
    }
}

fn pool() -> &'static Arc<Pool> {
    static POOL: OnceLock<Arc<Pool>> = OnceLock::new();
    POOL.get_or_init(Default::default)
}

/// (calls running, calls queued)
pub fn load() -> (usize, usize) {
    pool().load()
}

/// (distinct flights, clients waiting on them)
pub fn flights() -> (usize, usize) {
    let t = flight_table();
    (t.len(), t.waiters())
}

/// Adds a blocked client to the flight of `key`; a `Leader` must start the call. Whether it
/// leads is decided under the table's lock, and recorded in the waiter for `WITHMETA`.
pub fn join(db: i32, key: &[u8], mut waiter: Waiter, refresh: bool) -> Joined {
    let mut table = flight_table();
    let key = (db, key.to_vec());
    waiter.served = if table.is_in_flight(&key) {
        "coalesced"
    } else if refresh {
        "refresh"
    } else {
        "miss"
    };
    table.join(key, waiter)
}

/// A `QA.STREAM` miss: gives the flight of `key` a stream (`make` builds it unless the flight
/// has one), opening the flight if none runs: a `Leader` must start the call. Also says
/// whether the stream was made now (then the caller clears what an earlier flight left under
/// its key) and how the asker is served (`miss`, `refresh` or `coalesced`).
pub fn join_stream(
    db: i32,
    key: &[u8],
    refresh: bool,
    make: impl FnOnce() -> Arc<Sink>,
) -> (Joined, bool, &'static str) {
    let mut table = flight_table();
    let key = (db, key.to_vec());
    let (joined, served) = if table.open(key.clone()) {
        (Joined::Leader, if refresh { "refresh" } else { "miss" })
    } else {
        (Joined::Follower, "coalesced")
    };
    // Under the table's lock: a flight ending now either sees this sink or is already gone.
    let made = streaming::attach(&key, make);
    (joined, made, served)
}

/// Starts the call for a flight just created; on refusal (circuit breaker open, queue
/// full), fails the flight's waiters at once.
pub fn start(mut job: Job, max_inflight: usize, max_queue: usize) -> Result<(), QueueFull> {
    let key = (job.db, job.key.clone());
    // An unset URL is reported as such, not as a breaker state.
    if !job.settings.url.is_empty() {
        match admit(&job.settings.url) {
            Admit::Call => {}
            Admit::Probe => {
                job.probe = Some(Probe {
                    url: job.settings.url.clone(),
                    recorded: false,
                })
            }
            Admit::Reject => {
                stats::BREAKER_REJECTED.bump();
                finish(&key, Outcome::err(BackendError::BreakerOpen));
                return Ok(());
            }
        }
    }
    // A refused job is dropped with its probe, which releases it.
    submit_or_refuse(&key, Box::new(move || run(job)), max_inflight, max_queue)
}

/// Submits the call of flight `key` to the pool; if the queue is full, its waiters get the
/// busy error at once.
fn submit_or_refuse(
    key: &FlightKey,
    run: crate::pool::Job,
    max_inflight: usize,
    max_queue: usize,
) -> Result<(), QueueFull> {
    let submitted = pool().submit(run, max_inflight, max_queue);
    if submitted.is_err() {
        stats::REFUSED_BUSY.bump();
        finish(key, Outcome::err(BackendError::Busy));
    }
    submitted
}

/// Starts a refresh nobody waits for (a stale entry was served), unless a call for the key
/// is already in flight or the pool is full (then the stale entry is simply served again).
pub fn start_background(job: Job, max_inflight: usize, max_queue: usize) -> bool {
    let key: FlightKey = (job.db, job.key.clone());
    if breaker_open() || backing_off(&key) || !flight_table().open(key.clone()) {
        return false;
    }
    let run = Box::new(move || run(job));
    if pool().submit(run, max_inflight, max_queue).is_err() {
        drop(flight_table().finish(&key));
        return false;
    }
    true
}

/// After a failed refresh, the same entry is not refreshed again for this long: a sick
/// backend gets one call per stale entry per period, not one per hit.
const REFRESH_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFFS: usize = 10_000;

fn backoffs() -> MutexGuard<'static, HashMap<FlightKey, Instant>> {
    static BACKOFFS: OnceLock<Mutex<HashMap<FlightKey, Instant>>> = OnceLock::new();
    BACKOFFS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

fn backing_off(key: &FlightKey) -> bool {
    let mut b = backoffs();
    match b.get(key) {
        Some(until) if *until > Instant::now() => true,
        Some(_) => {
            b.remove(key);
            false
        }
        None => false,
    }
}

fn back_off(key: &FlightKey) {
    let mut b = backoffs();
    if b.len() >= MAX_BACKOFFS {
        let now = Instant::now();
        b.retain(|_, until| *until > now);
    }
    if b.len() < MAX_BACKOFFS {
        b.insert(key.clone(), Instant::now() + REFRESH_BACKOFF);
    }
}

/// Ends the flight of `key` and unblocks all its waiters with `outcome`.
fn finish(key: &FlightKey, outcome: Outcome) {
    finish_with(key, outcome, None)
}

/// [`finish`], with how the answer ended for the flight's stream if it has one (from the
/// worker: a flight with a stream ends on the main thread, after its last entry, so that no
/// new flight can start a new stream under the same key before).
fn finish_with(key: &FlightKey, outcome: Outcome, how: Option<(&'static str, &Answer)>) {
    let outcome = Arc::new(outcome);
    let mut table = flight_table();
    if streaming::attached(key).is_none() {
        let waiters = table.finish(key);
        drop(table);
        for w in waiters {
            w.finish(&outcome);
        }
        return;
    }
    drop(table);
    let ending = Ending {
        flight: OwnedFlight(Some(key.clone())),
        outcome,
        how: how.map(|(f, a)| (f, a.tokens_in, a.tokens_out)),
        since: Instant::now(),
    };
    if let Err(task) = mainthread::post(Box::new(move |ctx| ending.run(ctx))) {
        drop(task);
    }
}

/// The end of a flight with a stream, on the main thread.
struct Ending {
    flight: OwnedFlight,
    outcome: Arc<Outcome>,
    how: Option<(&'static str, Option<u64>, Option<u64>)>,
    since: Instant,
}

impl Ending {
    fn run(mut self, ctx: &redis_module::Context) {
        let paused =
            self.flight.end_stream(ctx, &self.outcome, self.how) == streaming::Writable::Paused;
        if paused && self.since.elapsed() < MAX_PAUSE_WAIT {
            mainthread::post_after(ctx, PAUSE_RETRY, Box::new(move |ctx| self.run(ctx)));
            return;
        }
        let outcome = Arc::clone(&self.outcome);
        self.flight.finish(&outcome);
    }
}

/// Ends flight `key` and takes out its waiters and its stream (together, under the table's
/// lock: a `QA.STREAM` for the key then starts a new flight with a new stream). A stream
/// taken out here without its last entry expires with the lifetime it was given. Waiters
/// dropped unanswered reply the internal error themselves (see Waiter's Drop).
fn end_flight(key: &FlightKey) -> Vec<Waiter> {
    let mut table = flight_table();
    streaming::detach(key);
    table.finish(key)
}

/// Ends the flight if the job unwinds before doing so, so no later miss joins a dead flight.
struct FlightGuard<'a>(Option<&'a FlightKey>);

impl Drop for FlightGuard<'_> {
    fn drop(&mut self) {
        if let Some(key) = self.0.take() {
            end_flight(key);
        }
    }
}

fn run(mut job: Job) {
    match job.semantic.take() {
        Some(sem) => run_semantic(job, sem),
        None => run_backend(job, None),
    }
}

/// The backend call of a miss, then the write of its entry (with `sem`, the question's
/// embedding field, when the semantic tier made one).
fn run_backend(mut job: Job, sem: Option<Vec<u8>>) {
    let flight: FlightKey = (job.db, job.key.clone());
    let mut guard = FlightGuard(Some(&flight));
    let probe = job.probe.take();
    stats::BACKEND_CALLS.bump();
    let started = Instant::now();
    // A flight some `QA.STREAM` asked for (before its call starts) streams its reply.
    let (result, attempts) = match streaming::attached(&flight) {
        Some(sink) => http::call_streaming(&job.settings, &job.request, job.deadline, &mut |p| {
            sink.push(p)
        }),
        None => http::call(&job.settings, &job.request, job.deadline),
    };
    let result = result.map_err(|e| match e {
        BackendError::Timeout(_) => BackendError::Timeout(job.timeout_ms),
        other => other,
    });
    let latency_ms = started.elapsed().as_millis() as u64;
    // Only an exchange with the backend says anything about its health (a job whose time
    // ran out in the queue never reached it).
    if attempts > 0 {
        let failed = result.as_ref().is_err_and(BackendError::is_backend_failure);
        match probe {
            Some(p) => p.record(failed),
            None => record(&job.settings.url, failed, false),
        }
    } else {
        drop(probe);
    }
    let answer = match result {
        Ok(answer) => answer,
        Err(e) => {
            stats::count_error(e.kind());
            {
                // A thread-safe context only where a per-cache figure must change.
                let tsc = ThreadSafeContext::new();
                let ctx = tsc.lock();
                stats::for_cache(&ctx, &job.cache, |s| {
                    s.backend_calls += 1;
                    s.backend_errors += 1;
                });
            }
            if job.background {
                back_off(&flight);
            }
            guard.0 = None;
            finish(&flight, Outcome::err(e));
            return;
        }
    };
    stats::record_latency(latency_ms);
    let (tokens_in, tokens_out) = (
        answer.tokens_in.unwrap_or(0),
        answer.tokens_out.unwrap_or(0),
    );
    stats::TOKENS_IN_SPENT.add(tokens_in);
    stats::TOKENS_OUT_SPENT.add(tokens_out);
    let ttl_secs = answer.ttl_secs.unwrap_or(job.ttl_secs);
    if answer.truncated {
        stats::TRUNCATED.bump();
    }
    if answer.no_store || (answer.truncated && !job.cache_truncated) {
        // Replied, never stored: the next ask calls the backend again.
        stats::NOT_STORED.bump();
        {
            let tsc = ThreadSafeContext::new();
            let ctx = tsc.lock();
            stats::for_cache(&ctx, &job.cache, |s| {
                s.backend_calls += 1;
                s.tokens_in_spent += tokens_in;
                s.tokens_out_spent += tokens_out;
            });
        }
        guard.0 = None;
        let how = crate::backend::stream::finish_reason(&answer);
        finish_with(&flight, job.outcome(&answer, -1), Some((how, &answer)));
        return;
    }
    // The write, and the end of the flight, happen on the main thread: a miss seen after
    // the write finds the entry, one seen before joined the flight. A paid answer is stored
    // even if every asker has gone.
    guard.0 = None;
    let write = Write {
        outcome: Arc::new(job.outcome(&answer, ttl_secs * 1000)),
        flight: OwnedFlight(Some(flight.clone())),
        setter: None,
        job,
        answer,
        sem,
        latency_ms,
        since: Instant::now(),
        counted: false,
    };
    if let Err(task) = mainthread::post(Box::new(move |ctx| write.run(ctx))) {
        // Not reached on supported servers (Redis 7.0+ has the one-shot event API): the
        // dropped task ends the flight; its waiters get the internal error.
        stats::STORE_ERRORS.bump();
        drop(task);
    }
}

/// Ends the flight when dropped (a write task that never ran, or unwound).
struct OwnedFlight(Option<FlightKey>);

impl OwnedFlight {
    /// Ends the flight now and answers its waiters with `outcome`.
    fn finish(&mut self, outcome: &Arc<Outcome>) {
        if let Some(key) = self.0.take() {
            for w in end_flight(&key) {
                w.finish(outcome);
            }
        }
    }

    /// Main thread, before [`finish`](Self::finish): the last entries of the flight's stream,
    /// if it has one (`how`: the finish reason and token counts of an answer).
    fn end_stream(
        &self,
        ctx: &redis_module::Context,
        outcome: &Outcome,
        how: Option<(&'static str, Option<u64>, Option<u64>)>,
    ) -> streaming::Writable {
        let Some(sink) = self.0.as_ref().and_then(streaming::attached) else {
            return streaming::Writable::Yes;
        };
        let (finish, tokens_in, tokens_out) = how.unwrap_or(("stop", None, None));
        let end = match outcome {
            Outcome::Answer(text, _) | Outcome::Cited(text, _, _) => streaming::End::Answer {
                text,
                finish,
                tokens_in,
                tokens_out,
            },
            Outcome::Semantic(hit) => streaming::End::Answer {
                text: &hit.answer,
                finish: "semantic",
                tokens_in: None,
                tokens_out: None,
            },
            Outcome::Error(e) => streaming::End::Error(e.to_bytes()),
            Outcome::Ok => return streaming::Writable::Yes,
        };
        sink.end(ctx, &end)
    }
}

impl Drop for OwnedFlight {
    fn drop(&mut self) {
        if let Some(key) = self.0.take() {
            end_flight(&key);
        }
    }
}

/// Storing a backend's answer, on the main thread.
struct Write {
    outcome: Arc<Outcome>,
    flight: OwnedFlight,
    /// A `QA.SET ... SEMANTIC` waiting for its `OK` (no flight then).
    setter: Option<Waiter>,
    job: Job,
    answer: Answer,
    sem: Option<Vec<u8>>,
    latency_ms: u64,
    /// When the answer arrived (a write waits out a pause for at most `MAX_PAUSE_WAIT`).
    since: Instant,
    counted: bool,
}

impl Write {
    fn run(mut self, ctx: &redis_module::Context) {
        // A timer's context starts on database 0.
        unsafe { redis_module::raw::RedisModule_SelectDb.unwrap()(ctx.ctx, self.job.db) };
        if !std::mem::replace(&mut self.counted, true) && self.setter.is_none() {
            let (tokens_in, tokens_out) = (
                self.answer.tokens_in.unwrap_or(0),
                self.answer.tokens_out.unwrap_or(0),
            );
            stats::for_cache(ctx, &self.job.cache, |s| {
                s.backend_calls += 1;
                s.tokens_in_spent += tokens_in;
                s.tokens_out_spent += tokens_out;
            });
        }
        let stored = store(
            ctx,
            &self.job,
            &self.answer,
            self.sem.as_deref(),
            self.latency_ms,
        );
        // A `QA.SET ... SEMANTIC` waits for its write no longer than its own deadline (it is
        // in no flight, so the reaper does not see it).
        let setter_late = self
            .setter
            .as_ref()
            .is_some_and(|w| w.deadline <= Instant::now());
        if stored == Store::Paused && setter_late {
            stats::STORE_ERRORS.bump();
            if let Some(w) = self.setter.take() {
                let e = crate::blocked::error_reply(crate::error::SET_PAUSED);
                w.finish(&Arc::new(Outcome::Error(e)));
            }
            return;
        }
        if stored == Store::Paused && self.since.elapsed() < MAX_PAUSE_WAIT {
            // Writes are paused (CLIENT PAUSE WRITE, FAILOVER): writing now would abort Redis
            // 7.0. Answer who waits, keep the flight open so new askers wait on it instead of
            // paying again, and retry the write when the pause is over.
            if let Some(key) = &self.flight.0 {
                for w in flight_table().drain(key) {
                    w.finish(&self.outcome);
                }
            }
            mainthread::post_after(ctx, PAUSE_RETRY, Box::new(move |ctx| self.run(ctx)));
            return;
        }
        if stored == Store::Paused {
            stats::STORE_ERRORS.bump();
        }
        let outcome = self.outcome.clone();
        let how = (
            crate::backend::stream::finish_reason(&self.answer),
            self.answer.tokens_in,
            self.answer.tokens_out,
        );
        // Not paused now (the entry's write just said so): the stream's end is written.
        self.flight.end_stream(ctx, &outcome, Some(how));
        self.flight.finish(&outcome);
        if let Some(w) = self.setter.take() {
            let reply = match stored {
                Store::Written | Store::Skipped => Outcome::Ok,
                Store::Refused(e) => Outcome::Error(crate::blocked::error_reply(e)),
                Store::Paused => {
                    Outcome::Error(crate::blocked::error_reply(crate::error::SET_PAUSED))
                }
            };
            w.finish(&Arc::new(reply));
        }
    }
}

/// How long a finished call waits for a write pause to end before dropping its answer.
const MAX_PAUSE_WAIT: Duration = Duration::from_secs(60);
const PAUSE_RETRY: Duration = Duration::from_millis(20);

#[derive(PartialEq, Eq)]
enum Store {
    Written,
    /// Not written because it could never be reached: the cache was invalidated (or lost its
    /// generation) while the backend was called.
    Skipped,
    /// Not written, for this reason (an error reply: the server became a replica, OOM).
    Refused(&'static str),
    /// Writes are paused; try again later.
    Paused,
}

/// Writes the entry unless this server must not write now.
fn store(
    ctx: &redis_module::Context,
    job: &Job,
    answer: &Answer,
    sem: Option<&[u8]>,
    latency_ms: u64,
) -> Store {
    // A primary turned replica while the call was in flight must not write.
    if ctx.get_flags().contains(ContextFlags::SLAVE) {
        stats::STORE_ERRORS.bump();
        return Store::Refused(crate::error::SET_NOT_PRIMARY);
    }
    // True while clients are paused (CLIENT PAUSE, FAILOVER): Redis 7.0 asserts if a module
    // propagates a write then.
    if unsafe { redis_module::raw::RedisModule_AvoidReplicaTraffic.map_or(0, |f| f()) } != 0 {
        return Store::Paused;
    }
    // The generation the key was derived under must still be the cache's: after
    // `QA.INVALIDATE` (or a lost generation key) an entry written now could never be found,
    // and its vector would sit in the index until its TTL.
    let current = unsafe { generation::current(ctx.ctx, &job.cache) };
    // A generation key evicted meanwhile is written again (same token) with the entry.
    unsafe { generation::touch(ctx.ctx, &job.cache) };
    if job.generation.is_empty() || current.as_deref() != Some(&job.generation[..]) {
        stats::NOT_STORED.bump();
        return Store::Skipped;
    }
    let sources = job.sources_of(answer);
    if !sources.is_empty()
        && entry::links::invalidated_since(ctx, &job.key, &job.generation, sources, job.asked_us)
    {
        stats::NOT_STORED.bump();
        return Store::Skipped;
    }
    let written = entry::write(
        ctx,
        &entry::NewEntry {
            key: &job.key,
            answer: answer.text.as_bytes(),
            question: job.request.question.as_bytes(),
            model: job.request.model.as_bytes(),
            tokens_in: answer.tokens_in,
            tokens_out: answer.tokens_out,
            latency_ms: Some(latency_ms),
            ttl_secs: answer.ttl_secs.unwrap_or(job.ttl_secs),
            stale_secs: job.stale_secs,
            sem,
            sources: job.sources_of(answer),
            generation: &job.generation,
        },
    );
    if written.is_err() {
        stats::STORE_ERRORS.bump();
        ctx.log_warning("redis-qa: could not store an answer (write refused, e.g. OOM)");
        return Store::Refused(crate::error::OOM);
    }
    // The index learns of the module's own writes here (it subscribes to no write events).
    match sem {
        Some(sem) => upkeep::indexed(job.db, &job.cache, &job.key, sem, &job.request.normalized),
        None => upkeep::forget_if_indexed(job.db, &job.key),
    }
    Store::Written
}

/// The embedding of `question`, within half the time left to the askers (the other half is
/// kept for the backend call should there be no match). `None` if the call failed: the
/// request then takes the exact path.
fn embed(job: &Job, sem: &SemanticJob) -> Option<Vec<f32>> {
    stats::EMBED_CALLS.bump();
    let left = job.deadline.saturating_duration_since(Instant::now());
    let deadline = Instant::now() + left / 2;
    let call = Embed {
        model: &sem.settings.embed_model,
        input: &job.request.question,
    };
    match http::exchange(&sem.settings.embed, &call, deadline).0 {
        Ok(Embedding { vector, tokens }) => {
            stats::EMBED_TOKENS.add(tokens.unwrap_or(0));
            Some(vector)
        }
        Err(_) => {
            stats::EMBED_ERRORS.bump();
            None
        }
    }
}

/// Candidates read back per miss at most (best first).
const MAX_CANDIDATES: usize = 4;

/// A miss with the semantic tier on: embed the question, search its scope, keep the matches
/// every guard accepts, and let the main thread serve the first one still stored. Without
/// one (or without an embedding), the backend is called as on any miss.
fn run_semantic(job: Job, sem: SemanticJob) {
    let flight: FlightKey = (job.db, job.key.clone());
    let mut guard_flight = FlightGuard(Some(&flight));
    let Some(v) = embed(&job, &sem) else {
        guard_flight.0 = None;
        return run_backend(job, None);
    };
    let blob = semantic::encode(&sem.scope.2, &v);
    if !sem.search {
        guard_flight.0 = None;
        return run_backend(job, Some(blob));
    }
    // The cache's calibrated threshold when a target precision is set (see semantic::audit).
    let threshold = audit::threshold(
        &job.cache,
        sem.settings.threshold,
        sem.settings.target_precision,
    );
    // At most half the time left for the search: the backend call must still fit.
    let left = job.deadline.saturating_duration_since(Instant::now());
    let found = upkeep::search(
        &sem.scope,
        &v,
        threshold,
        4 * MAX_CANDIDATES,
        Instant::now() + left / 2,
    );
    let mut accepted = Vec::new();
    for f in found {
        if sem.settings.guards {
            // With no verifier after them, the guards are strict (guard::check_strict).
            let checked = if sem.settings.verify == crate::config::VerifyMode::none {
                guard::check_strict(&job.request.normalized, &f.question)
            } else {
                guard::check(&job.request.normalized, &f.question)
            };
            if let Err(r) = checked {
                stats::count_refusal(r);
                continue;
            }
        }
        accepted.push(f);
        if accepted.len() == MAX_CANDIDATES {
            break;
        }
    }
    if accepted.is_empty() {
        stats::SEMANTIC_NO_MATCH.bump();
        guard_flight.0 = None;
        return run_backend(job, Some(blob));
    }
    // From here the flight is the task's (and ends when it is dropped). This worker waits
    // for the main thread's verdict and, if no match could be served, makes the backend call
    // itself: the job keeps its pool slot (a new submission could be refused, and a refused
    // continuation would leave its waiters and its breaker probe behind).
    guard_flight.0 = None;
    let (back, verdict) = std::sync::mpsc::sync_channel(1);
    let check = Check {
        flight: OwnedFlight(Some(flight.clone())),
        job,
        scope: sem.scope.2,
        candidates: accepted,
        blob,
        back,
        settings: sem.settings,
        threshold,
        verified: None,
    };
    post_check(check);
    // Nothing comes back when a match was served, or when the task was dropped without
    // running (its flight and probe were released with it).
    loop {
        match verdict.recv() {
            Ok(Back::Backend(check)) => return run_backend(check.job, Some(check.blob)),
            Ok(Back::Verify(check, hits)) => match verify_hits(*check, hits) {
                Ok(check) => post_check(check),
                Err(check) => return run_backend(check.job, Some(check.blob)),
            },
            Err(_) => return,
        }
    }
}

fn post_check(check: Check) {
    if let Err(task) = mainthread::post(Box::new(move |ctx| check.run(ctx))) {
        drop(task);
    }
}

/// Asks the verifier about the matches read back (best first). Accepted: the check that
/// reads the winner back and serves it if its answer is still the one verified. Otherwise
/// the check, for the backend call with its job (which owns the flight from here).
fn verify_hits(mut check: Check, hits: Vec<(Found, SemanticHit)>) -> Result<Check, Box<Check>> {
    let flight: FlightKey = (check.job.db, check.job.key.clone());
    let mut guard_flight = FlightGuard(Some(&flight));
    // Half the time left, as for the embedding: the other half is the backend's should the
    // verifier refuse or fail.
    let left = check.job.deadline.saturating_duration_since(Instant::now());
    let deadline = Instant::now() + left / 2;
    let candidates: Vec<verify::Candidate<'_>> = hits
        .iter()
        .map(|(_, h)| verify::Candidate {
            question: &h.matched,
            answer: &h.answer,
        })
        .collect();
    let verdict = verify::verify(
        &check.settings,
        &check.job.settings,
        &check.job.request.model,
        &check.job.request.question,
        &candidates,
        deadline,
    );
    guard_flight.0 = None;
    match verdict {
        verify::Verdict::Accepted(i) => match hits.into_iter().nth(i) {
            Some((found, hit)) => {
                check.candidates = vec![found];
                check.verified = Some(hit.answer);
                check.flight = OwnedFlight(Some(flight.clone()));
                Ok(check)
            }
            None => Err(Box::new(check)),
        },
        verify::Verdict::Refused | verify::Verdict::Failed => {
            stats::SEMANTIC_NO_MATCH.bump();
            Err(Box::new(check))
        }
    }
}

/// What a [`Check`] sends back to its waiting worker.
enum Back {
    /// No match could be served: call the backend (the check no longer owns the flight).
    Backend(Box<Check>),
    /// Verify these matches read back (best first) before one is served; the check no
    /// longer owns the flight.
    Verify(Box<Check>, Vec<(Found, SemanticHit)>),
}

/// Semantic matches to read back on the main thread before one is served.
struct Check {
    flight: OwnedFlight,
    job: Job,
    scope: [u8; 16],
    candidates: Vec<Found>,
    blob: Vec<u8>,
    /// Where the job goes back to its worker when no match could be served, or to be
    /// verified.
    back: std::sync::mpsc::SyncSender<Back>,
    settings: config::SemanticSettings,
    /// The similarity threshold the search used (the cache's calibrated one).
    threshold: f32,
    /// Set after the verifier accepted the one candidate left: the answer it saw.
    verified: Option<String>,
}

impl Check {
    fn run(mut self, ctx: &redis_module::Context) {
        unsafe { redis_module::raw::RedisModule_SelectDb.unwrap()(ctx.ctx, self.job.db) };
        let verifying = self.settings.verify != config::VerifyMode::none && self.verified.is_none();
        let mut readable = Vec::new();
        for c in std::mem::take(&mut self.candidates) {
            let read = unsafe { read_match(ctx.ctx, &c, &self.scope) }.filter(|(hit, _)| {
                // Verified, then changed (QA.SET of the same question): not what was verified.
                self.verified.as_ref().is_none_or(|v| *v == hit.answer)
            });
            match read {
                Some((hit, _)) if verifying => {
                    readable.push((c, hit));
                    if readable.len() == verify::TOP {
                        break;
                    }
                }
                Some((hit, saved)) => {
                    stats::SEMANTIC_HITS.bump();
                    stats::TOKENS_IN_SAVED.add(saved.0);
                    stats::TOKENS_OUT_SAVED.add(saved.1);
                    stats::BACKEND_MS_SAVED.add(saved.2);
                    stats::for_cache(ctx, &self.job.cache, |s| {
                        s.semantic_hits += 1;
                        s.tokens_in_saved += saved.0;
                        s.tokens_out_saved += saved.1;
                        s.backend_ms_saved += saved.2;
                    });
                    // The breaker's probe never reached the backend: another miss probes.
                    drop(self.job.probe.take());
                    let audit = self.audit_of(&hit);
                    let outcome = Arc::new(Outcome::Semantic(hit));
                    // A pause only delays a backend answer's stream; this one has no entry
                    // to wait for, so its end is written now or never.
                    self.flight.end_stream(ctx, &outcome, None);
                    self.flight.finish(&outcome);
                    if let Some(audit) = audit {
                        start_audit(audit);
                    }
                    return;
                }
                None => {
                    stats::SEMANTIC_STALE_INDEX.bump();
                    upkeep::forget(self.job.db, &c.key);
                }
            }
        }
        if !readable.is_empty() {
            // To the worker for the verifier (HTTP never runs here), which owns the flight
            // from here.
            let Some(key) = self.flight.0.take() else {
                return;
            };
            let back = self.back.clone();
            if back.send(Back::Verify(Box::new(self), readable)).is_err() {
                drop(OwnedFlight(Some(key)));
            }
            return;
        }
        // Every match was gone or changed: back to the waiting worker for the backend call,
        // which owns the flight from here.
        stats::SEMANTIC_NO_MATCH.bump();
        let Some(key) = self.flight.0.take() else {
            return;
        };
        let back = self.back.clone();
        if back.send(Back::Backend(Box::new(self))).is_err() {
            // The worker is gone (it cannot be while it waits): end the flight.
            drop(OwnedFlight(Some(key)));
        }
    }
}

impl Check {
    /// Whether this hit is audited (`qa.semantic-audit-rate`), and what the audit needs.
    fn audit_of(&self, hit: &SemanticHit) -> Option<Audit> {
        let rate = self.settings.audit_rate;
        if rate <= 0.0 || (rate < 1.0 && random() >= rate) {
            return None;
        }
        Some(Audit {
            cache: self.job.cache.clone(),
            request: self.job.request.clone(),
            settings: self.job.settings.clone(),
            served: hit.answer.clone(),
            matched: hit.matched.clone(),
            similarity: hit.similarity,
            served_at: self.threshold,
            base: self.settings.threshold,
            target: self.settings.target_precision,
            timeout: Duration::from_millis(self.job.timeout_ms),
        })
    }
}

/// A random number in `[0, 1)` (the std hasher's keys are random per `RandomState`).
fn random() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0);
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// A semantic hit to audit: the backend is asked the query (nothing stored) and its answer
/// compared with the served one, after the client has its reply.
struct Audit {
    cache: Vec<u8>,
    request: crate::backend::Request,
    settings: CallSettings,
    served: String,
    matched: String,
    similarity: f32,
    served_at: f32,
    base: f32,
    target: f64,
    timeout: Duration,
}

/// Runs `audit` on a free worker, if there is one (audits never queue ahead of misses) and
/// the backend is not refused by the breaker.
fn start_audit(audit: Audit) {
    if breaker_open() {
        stats::AUDIT_SKIPPED.bump();
        return;
    }
    let max_inflight = config::MAX_INFLIGHT.get().max(1) as usize;
    if pool()
        .submit(Box::new(move || run_audit(audit)), max_inflight, 0)
        .is_err()
    {
        stats::AUDIT_SKIPPED.bump();
        return;
    }
    stats::AUDIT_STARTED.bump();
}

fn run_audit(a: Audit) {
    let deadline = Instant::now() + a.timeout;
    stats::AUDIT_CALLS.bump();
    let fresh = match http::call(&a.settings, &a.request, deadline).0 {
        Ok(fresh) => fresh,
        Err(_) => {
            stats::AUDIT_ERRORS.bump();
            return;
        }
    };
    stats::AUDIT_TOKENS_IN.add(fresh.tokens_in.unwrap_or(0));
    stats::AUDIT_TOKENS_OUT.add(fresh.tokens_out.unwrap_or(0));
    let Some(agreed) = verify::answers_agree(
        &a.settings,
        &a.request.model,
        &a.request.question,
        &a.served,
        &fresh.text,
        deadline,
    ) else {
        stats::AUDIT_ERRORS.bump();
        return;
    };
    let disagreement = (!agreed).then(|| audit::Disagreement {
        query: audit::truncate(&a.request.question),
        matched: audit::truncate(&a.matched),
        similarity: a.similarity,
        served: audit::truncate(&a.served),
        fresh: audit::truncate(&fresh.text),
        at_ms: entry::now_ms(),
    });
    match audit::record(
        &a.cache,
        disagreement,
        a.served_at,
        a.base,
        a.target,
        Instant::now(),
    ) {
        calibrate::Change::Raised => stats::THRESHOLD_RAISED.bump(),
        calibrate::Change::Lowered => stats::THRESHOLD_LOWERED.bump(),
        calibrate::Change::Kept | calibrate::Change::Ignored => {}
    }
}

/// Reads a semantic match back from its entry: served only if the entry is still there,
/// fresh (the same lookup as a hit), of the same scope and for the same question. Also
/// returns what it saves (tokens in, tokens out, backend ms).
///
/// # Safety
/// Main thread, `ctx` on the entry's database.
unsafe fn read_match(
    ctx: *mut redis_module::raw::RedisModuleCtx,
    c: &Found,
    scope: &[u8; 16],
) -> Option<(SemanticHit, (u64, u64, u64))> {
    let entry::Lookup::Hit(hit) = entry::lookup(ctx, &c.key, true) else {
        return None;
    };
    if hit.stale {
        return None;
    }
    let [sem, question] = entry::read_fields(ctx, &c.key, [c"sem", c"question"])?;
    let question = String::from_utf8(question?).ok()?;
    if sem.as_deref().and_then(semantic::scope_of) != Some(*scope)
        || normalize::normalize(&question) != *c.question
    {
        return None;
    }
    let answer = String::from_utf8_lossy(hit.answer()).into_owned();
    let age_ms = hit.created_ms.map_or(0, |at| (entry::now_ms() - at).max(0));
    Some((
        SemanticHit {
            answer,
            age_ms,
            ttl_ms: hit.ttl_ms.unwrap_or(-1),
            similarity: c.similarity,
            matched: question,
        },
        (hit.tokens_in, hit.tokens_out, hit.latency_ms),
    ))
}

/// `QA.SET ... SEMANTIC`: embeds the question off the main thread, then stores the given
/// answer with its vector (without one if the embedding failed) and replies `OK`.
pub fn start_set(
    job: Job,
    answer: String,
    setter: Waiter,
    max_inflight: usize,
    max_queue: usize,
) -> Result<(), QueueFull> {
    // Shared with the job so that a refused job can still answer its setter (with the busy
    // error, not the internal one a dropped waiter replies).
    let setter = Arc::new(Mutex::new(Some(setter)));
    let in_job = Arc::clone(&setter);
    let run = Box::new(move || {
        let Some(setter) = in_job.lock().unwrap_or_else(|p| p.into_inner()).take() else {
            return;
        };
        let mut job = job;
        let sem = job
            .semantic
            .take()
            .and_then(|s| embed(&job, &s).map(|v| semantic::encode(&s.scope.2, &v)));
        let write = Write {
            outcome: Arc::new(Outcome::Ok),
            flight: OwnedFlight(None),
            setter: Some(setter),
            answer: Answer {
                text: answer,
                ..Answer::default()
            },
            job,
            sem,
            latency_ms: 0,
            since: Instant::now(),
            counted: false,
        };
        if let Err(task) = mainthread::post(Box::new(move |ctx| write.run(ctx))) {
            drop(task);
        }
    });
    let submitted = pool().submit(run, max_inflight, max_queue);
    if submitted.is_err() {
        stats::REFUSED_BUSY.bump();
        if let Some(w) = setter.lock().unwrap_or_else(|p| p.into_inner()).take() {
            w.finish(&Arc::new(Outcome::err(BackendError::Busy)));
        }
    }
    submitted
}
