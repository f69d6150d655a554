//! Keeping the semantic index in step with the keyspace, and searching it.
//!
//! The index mirrors the `sem` fields of entries on a primary. Its changes come from the main
//! thread: the module's own writes ([`indexed`]), keyspace events (deletes, expiry,
//! eviction, renames, moves, restores: generic events only, so writes to other keys pay
//! nothing for them) and server events (flush, loading, swapdb, role changes). A change of
//! one entry is applied at once when the index is free and nothing older waits; anything else
//! is sent, in order, to the `qa-index` thread (a channel: the main thread never waits for a
//! lock that thread holds). So the main thread never waits for the index and never frees a
//! large part of it (`QA.INVALIDATE` of a cache with 100k vectors, `FLUSHALL`).
//!
//! A replica keeps no index (it never searches: misses are refused there, and it would see
//! the primary's writes only through write events on every key); a replica promoted to
//! primary, a restart and a full sync rebuild it by a scan in small steps on the main thread.
//!
//! The index is only a guide: a match is read back from its entry before it is served (see
//! `worker`), so a change the index has not seen yet can make a match be skipped, never
//! served wrongly.

use std::os::raw::{c_int, c_void};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Condvar, LazyLock, Mutex, MutexGuard, OnceLock, RwLock};
use std::time::Duration;

use redis_module::{raw, Context, NotifyEvent};

use super::index::{Found, Index, Restored, ScopeKey, GRAPH_BATCH};
use super::{cache_of_entry, persist};
use crate::{entry, mainthread, normalize};

enum Op {
    Insert(ScopeKey, Vec<u8>, String, Vec<f32>),
    Remove(i32, Vec<u8>),
    DropCache(i32, Vec<u8>),
    Clear(Option<i32>),
    /// Graphs restored from a checkpoint, before the rebuild scan's inserts claim them.
    Adopt(Vec<Restored>),
    /// A rebuild scan has ended (every entry it read is queued before this): restored
    /// members not claimed go (if it adopted restored graphs), and the rebuild is counted.
    ScanDone(bool),
    /// An entry as the rebuild scan read it (database, cache, key, its `sem` and `question`
    /// fields, `None`: not an entry), decoded and indexed by the index thread.
    Scanned(i32, Box<[u8]>, Vec<u8>, Option<[Option<Vec<u8>>; 2]>),
}

static INDEX: LazyLock<RwLock<Index>> = LazyLock::new(Default::default);
/// Changes for the index thread, in order. A channel, not a locked queue: the main thread
/// must never wait for a lock the idle-priority index thread might hold while it is not
/// scheduled (a priority inversion that measured 10 ms on a loaded 2-core machine).
static QUEUE: OnceLock<Sender<Op>> = OnceLock::new();
/// The index thread, for waking it.
static THREAD: OnceLock<std::thread::Thread> = OnceLock::new();
/// Changes sent and not applied yet (queued, or in the index thread's hands): while there
/// are any, no change is applied anywhere else (it would overtake them).
static OUTSTANDING: AtomicUsize = AtomicUsize::new(0);
/// Set when some scope has graph work for the `qa-index` thread (see `index::Index::graph_batch`).
static GRAPH_WORK: AtomicBool = AtomicBool::new(false);
/// Entries indexed, as of the last change applied.
static LEN: AtomicUsize = AtomicUsize::new(0);
/// Entries not in their scope's graph yet, as of the last change applied.
static GRAPH_PENDING: AtomicUsize = AtomicUsize::new(0);

/// How many changes wait for the index thread (queued or in its hands).
fn queued() -> usize {
    OUTSTANDING.load(Ordering::SeqCst)
}

/// Queues a change for the index thread, without waking it (see [`wake`]).
fn send(op: Op) {
    start_thread();
    OUTSTANDING.fetch_add(1, Ordering::SeqCst);
    match QUEUE.get().map(|q| q.send(op)) {
        Some(Ok(())) => {}
        // No index thread (it could not be started): the change is dropped.
        _ => {
            OUTSTANDING.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// Wakes the index thread (lock-free: an unpark).
fn wake() {
    if let Some(t) = THREAD.get() {
        t.unpark();
    }
}

fn apply_to(ix: &mut Index, op: Op) {
    match op {
        Op::Insert(scope, key, question, v) => {
            ix.insert(scope, &key, &question, &v);
        }
        Op::Remove(db, key) => {
            ix.remove(db, &key);
        }
        Op::DropCache(db, cache) => ix.drop_cache(db, &cache),
        Op::Clear(db) => ix.clear(db),
        Op::Adopt(graphs) => {
            let n = ix.adopt(graphs);
            GRAPH_RESTORED.store(n as u64, Ordering::Relaxed);
        }
        Op::ScanDone(adopted) => {
            if adopted {
                let n = ix.settle();
                GRAPH_UNCLAIMED.store(n as u64, Ordering::Relaxed);
            }
            REBUILDS.fetch_add(1, Ordering::Relaxed);
        }
        Op::Scanned(db, cache, key, fields) => match decoded(db, &cache, fields) {
            Some((scope, q, v)) => {
                ix.insert(scope, &key, &q, &v);
            }
            None => {
                ix.remove(db, &key);
            }
        },
    }
    CHANGES.fetch_add(1, Ordering::Relaxed);
}

/// Applies `op`: at once if it is cheap (one entry in or out), the index is free and no
/// older change waits (so the memory of an evicted entry's vector is freed with it: it counts
/// against `maxmemory`); else queued for the `qa-index` thread, in order. Never blocks on the
/// index; freeing a whole cache or database always goes to the thread.
fn apply(op: Op) {
    if matches!(op, Op::Insert(..) | Op::Remove(..)) {
        if let Ok(mut ix) = INDEX.try_write() {
            // An insert that would grow a large table (a copy or rehash of megabytes) is
            // the index thread's.
            let large = matches!(&op, Op::Insert(scope, ..) if ix.insert_grows_large(scope));
            if queued() == 0 && !large {
                apply_to(&mut ix, op);
                after_changes(&ix);
                return;
            }
        }
    }
    send(op);
    wake();
}

fn after_changes(ix: &Index) {
    LEN.store(ix.len(), Ordering::Relaxed);
    GRAPH_PENDING.store(ix.lagging(), Ordering::Relaxed);
    if ix.has_graph_work() {
        want_graph_work();
    }
}

/// Changes applied per write-lock turn by [`drain_in_turns`].
const DRAIN_TURN: usize = 1024;

/// The index thread applies the queue in turns of [`DRAIN_TURN`] changes: entries the
/// rebuild scan read are decoded (f16 to float, normalization) before the index is locked,
/// so a search waits at most one turn's inserts, not a scan's decoding.
fn drain_in_turns(rx: &Receiver<Op>) {
    loop {
        let ready: Vec<Op> = rx
            .try_iter()
            .take(DRAIN_TURN)
            .map(|op| match op {
                Op::Scanned(db, cache, key, fields) => match decoded(db, &cache, fields) {
                    Some((scope, q, v)) => Op::Insert(scope, key, q, v),
                    None => Op::Remove(db, key),
                },
                op => op,
            })
            .collect();
        if ready.is_empty() {
            return;
        }
        let n = ready.len();
        let trash = {
            let mut ix = INDEX.write().unwrap_or_else(|p| p.into_inner());
            for op in ready {
                apply_to(&mut ix, op);
            }
            OUTSTANDING.fetch_sub(n, Ordering::SeqCst);
            after_changes(&ix);
            ix.take_trash()
        };
        drop(trash);
    }
}

/// Wakes the `qa-index` thread for graph work (once: until it has taken the work).
fn want_graph_work() {
    if !GRAPH_WORK.swap(true, Ordering::SeqCst) {
        start_thread();
        wake();
    }
}

/// The server's process id, taken when the module loads (a fork child has another).
static MAIN_PID: LazyLock<u32> = LazyLock::new(std::process::id);

/// Starts the `qa-index` thread (at load: it is then asleep, at its low priority, before the
/// first change that needs it). Idempotent.
pub fn start_thread() {
    LazyLock::force(&MAIN_PID);
    static STARTED: OnceLock<()> = OnceLock::new();
    STARTED.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("qa-index".into())
            .spawn(move || {
                // Freeing a whole cache's vectors takes milliseconds: on a core it shares with
                // Redis's main thread, this thread must never run ahead of it. SCHED_IDLE (and
                // nice 19): woken, it does not preempt the main thread (nice 19 alone sometimes
                // did: 1.7 ms of a QA.INVALIDATE). Starved on a saturated machine while it
                // holds the index, it cannot stall a search: searches give up at their
                // deadline (see `search_now`).
                #[cfg(target_os = "linux")]
                // SAFETY: both change the calling thread only (Linux).
                unsafe {
                    libc::setpriority(libc::PRIO_PROCESS, 0, 19);
                    let param = libc::sched_param { sched_priority: 0 };
                    libc::sched_setscheduler(0, libc::SCHED_IDLE, &param);
                }
                index_loop(rx)
            });
        if let Ok(h) = spawned {
            let _ = THREAD.set(h.thread().clone());
            let _ = QUEUE.set(tx);
        }
    });
}

fn index_loop(rx: Receiver<Op>) -> ! {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    loop {
        // An unpark before the park makes it return at once: no wake-up is lost.
        while queued() == 0 && !GRAPH_WORK.load(Ordering::SeqCst) && !JOB.load(Ordering::SeqCst) {
            std::thread::park_timeout(Duration::from_secs(1));
        }
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            drain_in_turns(&rx);
            let trash = INDEX
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .take_trash();
            drop(trash);
            run_jobs();
            graph_work(threads, &rx);
        }));
    }
}

/// Moves tails into graphs, a batch at a time: the batch is taken and committed with the
/// index held for writing (a copy of 256 vectors, then a few hundred microseconds of
/// bookkeeping), and added to the graph with it held for reading, so searches go on
/// meanwhile. Waiting changes are applied between batches (in order: only under the write
/// lock). Stops when no scope has graph work left, or a checkpoint or restore waits.
fn graph_work(threads: usize, rx: &Receiver<Op>) {
    GRAPH_WORK.store(false, Ordering::Relaxed);
    loop {
        if JOB.load(Ordering::Relaxed) {
            GRAPH_WORK.store(true, Ordering::Relaxed);
            return;
        }
        drain_in_turns(rx);
        let batch = INDEX
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .graph_batch(GRAPH_BATCH);
        let Some(mut batch) = batch else {
            return;
        };
        // At most a few milliseconds per batch, and none once changes or a job wait (they
        // are applied before the next batch).
        let until = std::time::Instant::now() + Duration::from_millis(5);
        let stop =
            || queued() > 0 || JOB.load(Ordering::Relaxed) || std::time::Instant::now() >= until;
        INDEX
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .graph_add(&mut batch, threads, &stop);
        let trash = {
            let mut ix = INDEX.write().unwrap_or_else(|p| p.into_inner());
            ix.graph_commit(batch);
            CHANGES.fetch_add(1, Ordering::Relaxed);
            GRAPH_PENDING.store(ix.lagging(), Ordering::Relaxed);
            ix.take_trash()
        };
        drop(trash);
    }
}

// ---- Checkpoints: the graphs saved next to the RDB file, restored after a load. ----

/// Changes applied to the index (and graph batches committed): a checkpoint with nothing
/// changed since the last one to the same place is skipped.
static CHANGES: AtomicU64 = AtomicU64::new(0);
/// Set when a checkpoint or a restore waits for the `qa-index` thread.
static JOB: AtomicBool = AtomicBool::new(false);

#[derive(Default)]
struct Jobs {
    /// Where to write the next checkpoint.
    checkpoint: Option<PathBuf>,
    /// Checkpoints asked for and done (a synchronous save waits for its own).
    asked: u64,
    done: u64,
    /// A restore to read: where from, and its number in [`RESTORE`].
    restore: Option<(PathBuf, u64)>,
    /// The last checkpoint written: where, and [`CHANGES`] then.
    last: Option<(PathBuf, u64)>,
}

static JOBS: LazyLock<Mutex<Jobs>> = LazyLock::new(Default::default);
static JOBS_DONE: Condvar = Condvar::new();

fn jobs() -> MutexGuard<'static, Jobs> {
    JOBS.lock().unwrap_or_else(|p| p.into_inner())
}

enum RestoreState {
    Idle,
    /// The thread is reading checkpoint `n`.
    Reading(u64),
    /// Checkpoint `n` read: graphs for the rebuild scan to adopt.
    Ready(Vec<Restored>),
}

static RESTORE: Mutex<RestoreState> = Mutex::new(RestoreState::Idle);
static RESTORE_SEQ: AtomicU64 = AtomicU64::new(0);

fn restore_state() -> MutexGuard<'static, RestoreState> {
    RESTORE.lock().unwrap_or_else(|p| p.into_inner())
}

/// How long a rebuild scan waits for a checkpoint being read before it starts without it.
const RESTORE_WAIT: Duration = Duration::from_secs(120);
/// How long a synchronous save (`SAVE`, `SHUTDOWN`, `DEBUG RELOAD`) waits for its checkpoint.
const CHECKPOINT_WAIT: Duration = Duration::from_secs(120);

static GRAPH_RESTORED: AtomicU64 = AtomicU64::new(0);
static GRAPH_UNCLAIMED: AtomicU64 = AtomicU64::new(0);
static RESTORE_MS: AtomicU64 = AtomicU64::new(0);
static CHECKPOINTS: AtomicU64 = AtomicU64::new(0);
static CHECKPOINT_MS: AtomicU64 = AtomicU64::new(0);
static CHECKPOINT_BYTES: AtomicU64 = AtomicU64::new(0);

/// Checkpoint figures for INFO: (vectors restored at the last load, of them removed as
/// unclaimed, restore ms, checkpoints written, last checkpoint ms, its bytes).
pub fn checkpoint_stats() -> [u64; 6] {
    [
        GRAPH_RESTORED.load(Ordering::Relaxed),
        GRAPH_UNCLAIMED.load(Ordering::Relaxed),
        RESTORE_MS.load(Ordering::Relaxed),
        CHECKPOINTS.load(Ordering::Relaxed),
        CHECKPOINT_MS.load(Ordering::Relaxed),
        CHECKPOINT_BYTES.load(Ordering::Relaxed),
    ]
}

fn wake_for_job() {
    JOB.store(true, Ordering::SeqCst);
    start_thread();
    wake();
}

fn run_jobs() {
    if !JOB.swap(false, Ordering::Relaxed) {
        return;
    }
    let (restore, checkpoint) = {
        let mut j = jobs();
        let asked = j.asked;
        (j.restore.take(), j.checkpoint.take().map(|p| (p, asked)))
    };
    if let Some((base, n)) = restore {
        restore_now(&base, n);
    }
    if let Some((base, asked)) = checkpoint {
        checkpoint_now(&base);
        let mut j = jobs();
        j.done = j.done.max(asked);
        JOBS_DONE.notify_all();
    }
}

fn checkpoint_now(base: &std::path::Path) {
    let started = std::time::Instant::now();
    let ix = INDEX.read().unwrap_or_else(|p| p.into_inner());
    let changes = CHANGES.load(Ordering::Relaxed);
    if jobs().last.as_ref() == Some(&(base.to_path_buf(), changes)) {
        return; // nothing changed since the last checkpoint there
    }
    let Some(graphs) = ix.to_save() else {
        return; // a rebuild is claiming a restored graph: the files it came from stay
    };
    if graphs.is_empty() && !persist::manifest_path(base).exists() {
        return;
    }
    let seq = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64);
    match persist::save(base, seq, &graphs) {
        Ok(w) => {
            CHECKPOINTS.fetch_add(1, Ordering::Relaxed);
            CHECKPOINT_MS.store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
            CHECKPOINT_BYTES.store(w.bytes, Ordering::Relaxed);
            jobs().last = Some((base.to_path_buf(), changes));
        }
        Err(e) => redis_module::logging::log_warning(format!(
            "redis-qa: the semantic graphs were not saved ({e}); a restart builds them again"
        )),
    }
}

fn restore_now(base: &std::path::Path, n: u64) {
    let started = std::time::Instant::now();
    let found = persist::load(base, super::index::open_graph);
    for why in &found.refused {
        redis_module::logging::log_warning(format!(
            "redis-qa: a saved semantic graph was not used ({why}); it is built again"
        ));
    }
    RESTORE_MS.store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
    let mut st = restore_state();
    if matches!(*st, RestoreState::Reading(m) if m == n) {
        *st = RestoreState::Ready(found.graphs);
    }
}

/// `<dir>/<dbfilename>`: where this server's checkpoint lives (Redis runs in `dir`).
fn graph_base(ctx: &Context) -> Option<PathBuf> {
    let dir = std::env::current_dir().ok()?;
    let reply = ctx.call("CONFIG", &["GET", "dbfilename"]).ok()?;
    let redis_module::RedisValue::Array(items) = reply else {
        return None;
    };
    let name = match items.get(1)? {
        redis_module::RedisValue::BulkString(s) | redis_module::RedisValue::SimpleString(s) => {
            s.clone()
        }
        redis_module::RedisValue::BulkRedisString(s) => s.try_as_str().ok()?.to_string(),
        redis_module::RedisValue::StringBuffer(b) => String::from_utf8(b.clone()).ok()?,
        _ => return None,
    };
    (!name.is_empty() && !name.contains('/')).then(|| dir.join(name))
}

/// A save is starting: the graphs are written next to its file by the `qa-index` thread. A
/// synchronous save (`SAVE`, `SHUTDOWN`, `DEBUG RELOAD`) waits for them (bounded), as it waits
/// for its own file; a background one does not.
fn request_checkpoint(ctx: &Context, wait: bool) {
    if !crate::config::SEMANTIC_GRAPH_FILE.get() || is_replica(ctx) {
        return;
    }
    let Some(base) = graph_base(ctx) else {
        return;
    };
    if LEN.load(Ordering::Relaxed) == 0 && !persist::manifest_path(&base).exists() {
        return; // no semantic index here, and no files of one to replace
    }
    let asked = {
        let mut j = jobs();
        j.checkpoint = Some(base);
        j.asked += 1;
        j.asked
    };
    wake_for_job();
    if wait {
        let deadline = std::time::Instant::now() + CHECKPOINT_WAIT;
        let mut j = jobs();
        while j.done < asked {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                ctx.log_warning(
                    "redis-qa: the semantic graphs are still being saved; not waiting longer",
                );
                break;
            }
            j = JOBS_DONE
                .wait_timeout(j, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

/// A load is starting: the `qa-index` thread reads the last checkpoint meanwhile, for the
/// rebuild scan that follows the load.
fn request_restore(ctx: &Context) {
    *restore_state() = RestoreState::Idle;
    // The figures are the last load's.
    GRAPH_RESTORED.store(0, Ordering::Relaxed);
    GRAPH_UNCLAIMED.store(0, Ordering::Relaxed);
    if !crate::config::SEMANTIC_GRAPH_FILE.get() || is_replica(ctx) {
        return;
    }
    let Some(base) = graph_base(ctx) else {
        return;
    };
    if !persist::manifest_path(&base).exists() {
        return;
    }
    let n = RESTORE_SEQ.fetch_add(1, Ordering::Relaxed) + 1;
    *restore_state() = RestoreState::Reading(n);
    jobs().restore = Some((base, n));
    wake_for_job();
}

/// The best matches for `query` (a unit vector) in `scope`, best first. Worker threads.
pub fn search(
    scope: &ScopeKey,
    query: &[f32],
    threshold: f32,
    limit: usize,
    deadline: std::time::Instant,
) -> Vec<Found> {
    let started = std::time::Instant::now();
    let found = search_now(scope, query, threshold, limit, deadline);
    crate::stats::record_search_us(started.elapsed().as_micros() as u64);
    found
}

/// Searches once the index is free (changes waiting are the index thread's to apply); nothing
/// (the exact path) if the index stays held past `deadline` (the `qa-index` thread may be
/// starved while it frees a cache). A change not applied yet can only make a match be skipped
/// at read-back, never served wrongly.
fn search_now(
    scope: &ScopeKey,
    query: &[f32],
    threshold: f32,
    limit: usize,
    deadline: std::time::Instant,
) -> Vec<Found> {
    loop {
        if let Ok(ix) = INDEX.try_read() {
            let (found, complete) = ix.search_until(scope, query, threshold, limit, Some(deadline));
            if !complete {
                // A rebuild's tail not scanned, or the graph busy with additions past the
                // deadline: some entries were not looked at (misses, never wrong answers).
                crate::stats::SEMANTIC_INDEX_BUSY.bump();
            }
            return found;
        }
        if std::time::Instant::now() >= deadline {
            crate::stats::SEMANTIC_INDEX_BUSY.bump();
            return Vec::new();
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// Forgets one entry (a match found gone or changed when read back).
pub fn forget(db: i32, key: &[u8]) {
    apply(Op::Remove(db, key.to_vec()));
}

/// A cache was invalidated: its old vectors are never searched again.
pub fn drop_cache(db: i32, cache: &[u8]) {
    if LEN.load(Ordering::Relaxed) > 0 || queued() > 0 {
        apply(Op::DropCache(db, cache.to_vec()));
    }
}

/// The module stored entry `key` of `cache` with its embedding field `sem` for the question
/// `normalized`.
pub fn indexed(db: i32, cache: &[u8], key: &[u8], sem: &[u8], normalized: &str) {
    match super::decode(sem) {
        Some((scope, v)) if !normalized.is_empty() => apply(Op::Insert(
            (db, cache.into(), scope),
            key.to_vec(),
            normalized.to_string(),
            v,
        )),
        _ => forget_if_indexed(db, key),
    }
}

/// The module stored entry `key` without an embedding: an older vector of it must go.
pub fn forget_if_indexed(db: i32, key: &[u8]) {
    if LEN.load(Ordering::Relaxed) > 0 || queued() > 0 {
        apply(Op::Remove(db, key.to_vec()));
    }
}

/// (entries, float32 bytes, whole index bytes), for INFO. Never waits: while the index is
/// held for writing, the entry count as of the last change applied and the sizes as last
/// read.
pub fn size() -> (usize, usize, usize) {
    static LAST: [AtomicUsize; 2] = [AtomicUsize::new(0), AtomicUsize::new(0)];
    match INDEX.try_read() {
        Ok(ix) => {
            let (raw, total) = ix.memory();
            LAST[0].store(raw, Ordering::Relaxed);
            LAST[1].store(total, Ordering::Relaxed);
            (ix.len(), raw, total)
        }
        Err(_) => (
            LEN.load(Ordering::Relaxed),
            LAST[0].load(Ordering::Relaxed),
            LAST[1].load(Ordering::Relaxed),
        ),
    }
}

/// Entries searchable but not in their scope's HNSW graph yet (scanned exactly meanwhile),
/// for INFO, as of the last change applied. Never waits.
pub fn graph_pending() -> usize {
    GRAPH_PENDING.load(Ordering::Relaxed)
}

/// The fields of an entry the index needs.
const FIELDS: [&std::ffi::CStr; 2] = [c"sem", c"question"];

/// An entry's scope, normalized question and unit vector from its fields as read (`None`:
/// not a hash or string entry, or no usable `sem` field).
fn decoded(
    db: i32,
    cache: &[u8],
    fields: Option<[Option<Vec<u8>>; 2]>,
) -> Option<(ScopeKey, String, Vec<f32>)> {
    let [Some(sem), Some(q)] = fields? else {
        return None;
    };
    let (scope, v) = super::decode(&sem)?;
    let normalized = normalize::normalize(std::str::from_utf8(&q).ok()?);
    (!normalized.is_empty()).then(|| ((db, cache.into(), scope), normalized, v))
}

/// Indexes entry `key` from its fields as read (`None`: not a hash), or forgets it if it has
/// no usable `sem` field.
fn index_entry(db: i32, cache: &[u8], key: &[u8], fields: Option<[Option<Vec<u8>>; 2]>) {
    match decoded(db, cache, fields) {
        Some((scope, q, v)) => apply(Op::Insert(scope, key.to_vec(), q, v)),
        None => apply(Op::Remove(db, key.to_vec())),
    }
}

/// Queues an entry the rebuild scan read, for the index thread (decoding, normalizing and
/// inserting are its work, not the main thread's).
fn queue_scanned(db: i32, cache: &[u8], key: &[u8], fields: Option<[Option<Vec<u8>>; 2]>) {
    send(Op::Scanned(db, cache.into(), key.to_vec(), fields));
}

/// A rebuild step scans nothing while this many changes wait for the index thread (about
/// 1 KB each at 384 dimensions: the queue stays within a few tens of megabytes even if the
/// thread is starved).
const QUEUE_MAX: usize = 20_000;

/// Keyspace events on entry keys keep the index in step (generic, expired and evicted
/// events: an entry overwritten by hand is caught when a match is read back before serving).
pub fn on_key_event(ctx: &Context, _kind: NotifyEvent, event: &str, key: &[u8]) {
    let Some(cache) = cache_of_entry(key) else {
        return;
    };
    // An entry that arrives (restore: a slot migrated here, rename_to, move_to, copy_to) is
    // read even when the index is empty: the first semantic entries of a node can come by
    // MIGRATE. Removals and TTL changes need an index to act on.
    let arrives = !matches!(
        event,
        "expire" | "persist" | "del" | "expired" | "evicted" | "rename_from" | "move_from"
    );
    if !arrives
        && LEN.load(Ordering::Relaxed) == 0
        && queued() == 0
        && !REBUILDING.load(Ordering::Relaxed)
    {
        return; // no index here (exact tier only, or a replica)
    }
    let db = unsafe { raw::RedisModule_GetSelectedDb.unwrap()(ctx.ctx) };
    match event {
        // The TTL changed, not the entry.
        "expire" | "persist" => {}
        "del" | "expired" | "evicted" | "rename_from" | "move_from" => {
            apply(Op::Remove(db, key.to_vec()));
        }
        // restore, rename_to, move_to, copy_to.
        _ => {
            if is_replica(ctx) {
                return;
            }
            index_entry(db, cache, key, unsafe {
                entry::read_fields(ctx.ctx, key, FIELDS)
            })
        }
    }
}

fn is_replica(ctx: &Context) -> bool {
    ctx.get_flags().contains(redis_module::ContextFlags::SLAVE)
}

/// Whether a rebuild scan is running (events must then reach the index even while empty).
static REBUILDING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Bumped whenever a rebuild starts or the index is cleared: a running scan that sees a
/// newer value stops.
static EPOCH: AtomicU64 = AtomicU64::new(0);

/// Keys looked at per step of a rebuild scan, at most.
const SCAN_STEP: usize = 500;

/// A step also ends when it has taken this long (checked after each scanned bucket), so a
/// slow or loaded machine gets shorter steps rather than longer pauses.
const SCAN_STEP_BUDGET: Duration = Duration::from_millis(2);

/// The longest step of a rebuild scan so far, in microseconds (main-thread time, for INFO).
static SCAN_STEP_MAX_US: AtomicU64 = AtomicU64::new(0);

/// Rebuild scans completed, every entry they read applied to the index.
static REBUILDS: AtomicU64 = AtomicU64::new(0);

/// Rebuild scans completed since the module loaded (for INFO).
pub fn rebuilds() -> u64 {
    REBUILDS.load(Ordering::Relaxed)
}

/// The longest main-thread step of a rebuild scan since the module loaded, in microseconds.
pub fn rebuild_step_max_us() -> u64 {
    SCAN_STEP_MAX_US.load(Ordering::Relaxed)
}

/// Server events (called by `generation`'s handler, which owns the subscription).
pub fn on_server_event(ctx: &Context, eid: u64, subevent: u64, data: *mut c_void) {
    if eid == raw::REDISMODULE_EVENT_FLUSHDB {
        // The flush-start event carries the database (-1: all); clear before the keys go.
        let db = if data.is_null() {
            -1
        } else {
            unsafe { (*(data as *const raw::RedisModuleFlushInfo)).dbnum }
        };
        if db < 0 {
            EPOCH.fetch_add(1, Ordering::Relaxed);
            REBUILDING.store(false, Ordering::Relaxed);
        }
        // A flush of one database leaves a running rebuild scan going for the others (in
        // the flushed one it finds nothing more).
        apply(Op::Clear((db >= 0).then_some(db)));
    } else if eid == raw::REDISMODULE_EVENT_PERSISTENCE {
        // A background save fires its start event in the fork child, which has none of this
        // process's threads (and may have inherited a lock held by one): nothing is done
        // there. Its checkpoint is asked for by the parent when the child is born (below).
        if std::process::id() != *MAIN_PID {
            return;
        }
        if subevent == raw::REDISMODULE_SUBEVENT_PERSISTENCE_SYNC_RDB_START
            || subevent == raw::REDISMODULE_SUBEVENT_PERSISTENCE_SYNC_AOF_START
        {
            request_checkpoint(ctx, true);
        }
    } else if eid == raw::REDISMODULE_EVENT_FORK_CHILD {
        // BGSAVE, BGREWRITEAOF, a full sync's RDB: the parent does not wait.
        if subevent == raw::REDISMODULE_SUBEVENT_FORK_CHILD_BORN && std::process::id() == *MAIN_PID
        {
            request_checkpoint(ctx, false);
        }
    } else if eid == raw::REDISMODULE_EVENT_SHUTDOWN {
        // With the AOF alone (no RDB save at shutdown) the graphs are still saved for the
        // next start; after an RDB save nothing changed since, and nothing is written again.
        request_checkpoint(ctx, true);
    } else if eid == raw::REDISMODULE_EVENT_LOADING {
        EPOCH.fetch_add(1, Ordering::Relaxed);
        REBUILDING.store(false, Ordering::Relaxed);
        apply(Op::Clear(None));
        if subevent == raw::REDISMODULE_SUBEVENT_LOADING_RDB_START
            || subevent == raw::REDISMODULE_SUBEVENT_LOADING_AOF_START
        {
            request_restore(ctx);
        }
        if subevent == raw::REDISMODULE_SUBEVENT_LOADING_ENDED
            || subevent == raw::REDISMODULE_SUBEVENT_LOADING_FAILED
        {
            rebuild(ctx);
        }
    } else if eid == raw::REDISMODULE_EVENT_SWAPDB || eid == raw::REDISMODULE_EVENT_REPL_ASYNC_LOAD
    {
        rebuild(ctx);
    } else if eid == raw::REDISMODULE_EVENT_REPLICATION_ROLE_CHANGED {
        if subevent == raw::REDISMODULE_EVENT_REPLROLECHANGED_NOW_MASTER {
            rebuild(ctx);
        } else {
            EPOCH.fetch_add(1, Ordering::Relaxed);
            REBUILDING.store(false, Ordering::Relaxed);
            apply(Op::Clear(None));
        }
    }
}

/// Empties the index and scans every database for entries with a `sem` field, a step per
/// main-thread turn. A replica only empties it.
pub fn rebuild(ctx: &Context) {
    let epoch = EPOCH.fetch_add(1, Ordering::Relaxed) + 1;
    apply(Op::Clear(None));
    if is_replica(ctx) {
        REBUILDING.store(false, Ordering::Relaxed);
        return;
    }
    REBUILDING.store(true, Ordering::Relaxed);
    let scan = Scan {
        epoch,
        db: 0,
        cursor: std::ptr::null_mut(),
        started: std::time::Instant::now(),
        restore: true,
        adopted: false,
    };
    mainthread::post_after(ctx, Duration::ZERO, Box::new(move |ctx| scan.step(ctx)));
}

struct Scan {
    epoch: u64,
    db: i32,
    cursor: *mut raw::RedisModuleScanCursor,
    started: std::time::Instant,
    /// Whether to look for restored graphs before the first step.
    restore: bool,
    /// Whether restored graphs were adopted (settled when the scan ends).
    adopted: bool,
}

// SAFETY: the cursor is only used on the main thread (each step runs there).
unsafe impl Send for Scan {}

impl Drop for Scan {
    fn drop(&mut self) {
        if !self.cursor.is_null() {
            unsafe { raw::RedisModule_ScanCursorDestroy.unwrap()(self.cursor) };
        }
    }
}

struct Seen {
    db: i32,
    keys: usize,
}

impl Scan {
    fn step(mut self, ctx: &Context) {
        if EPOCH.load(Ordering::Relaxed) != self.epoch {
            return;
        }
        if self.restore {
            // Never waits for the index thread's hold of the state (see `QUEUE`).
            let mut st = match RESTORE.try_lock() {
                Ok(st) => st,
                Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
                Err(std::sync::TryLockError::WouldBlock) => {
                    mainthread::post_after(
                        ctx,
                        Duration::from_millis(1),
                        Box::new(move |ctx| self.step(ctx)),
                    );
                    return;
                }
            };
            match std::mem::replace(&mut *st, RestoreState::Idle) {
                RestoreState::Reading(n) if self.started.elapsed() < RESTORE_WAIT => {
                    // The checkpoint is still being read: look again in a millisecond.
                    *st = RestoreState::Reading(n);
                    drop(st);
                    mainthread::post_after(
                        ctx,
                        Duration::from_millis(1),
                        Box::new(move |ctx| self.step(ctx)),
                    );
                    return;
                }
                RestoreState::Ready(graphs) => {
                    drop(st);
                    // Queued behind the rebuild's clear, ahead of the scan's inserts.
                    apply(Op::Adopt(graphs));
                    self.adopted = true;
                }
                _ => {} // none, or read for too long: built again
            }
            self.restore = false;
        }
        let started = std::time::Instant::now();
        if queued() >= QUEUE_MAX {
            // The index thread is behind: wait for it rather than queue more.
            mainthread::post_after(
                ctx,
                Duration::from_millis(1),
                Box::new(move |ctx| self.step(ctx)),
            );
            return;
        }
        let c = ctx.ctx;
        unsafe {
            if raw::RedisModule_SelectDb.unwrap()(c, self.db) != raw::REDISMODULE_OK as c_int {
                REBUILDING.store(false, Ordering::Relaxed);
                apply(Op::ScanDone(self.adopted));
                return; // past the last database: done
            }
            if self.cursor.is_null() {
                self.cursor = raw::RedisModule_ScanCursorCreate.unwrap()();
            }
            let mut seen = Seen {
                db: self.db,
                keys: 0,
            };
            let mut more = true;
            while more && seen.keys < SCAN_STEP && started.elapsed() < SCAN_STEP_BUDGET {
                more = raw::RedisModule_Scan.unwrap()(
                    c,
                    self.cursor,
                    Some(on_scanned),
                    (&mut seen as *mut Seen).cast(),
                ) != 0;
            }
            if !more {
                raw::RedisModule_ScanCursorDestroy.unwrap()(self.cursor);
                self.cursor = std::ptr::null_mut();
                self.db += 1;
            }
        }
        SCAN_STEP_MAX_US.fetch_max(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        wake();
        mainthread::post_after(ctx, Duration::ZERO, Box::new(move |ctx| self.step(ctx)));
    }
}

extern "C" fn on_scanned(
    ctx: *mut raw::RedisModuleCtx,
    keyname: *mut raw::RedisModuleString,
    key: *mut raw::RedisModuleKey,
    privdata: *mut c_void,
) {
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| unsafe {
        let seen = &mut *(privdata as *mut Seen);
        seen.keys += 1;
        let Some(name) = entry::bytes_of(keyname) else {
            return;
        };
        if let Some(cache) = cache_of_entry(name) {
            // The key comes opened for reading, without an expiry check (which could delete
            // it in the middle of the scan).
            if !key.is_null() {
                queue_scanned(
                    seen.db,
                    cache,
                    name,
                    entry::read_open_fields(ctx, key, FIELDS),
                );
            }
        }
    }));
}
