//! Keeping the semantic index in step with the keyspace, and searching it.
//!
//! The index mirrors the `sem` fields of entries. It is changed from the main thread, by
//! keyspace events (writes, deletes, expiry, eviction, renames, moves: replicated writes
//! included) and server events (flush, loading, swapdb), and read by worker threads. The main
//! thread never waits for a worker: when a search holds the index, its change is queued and
//! applied by the next one to take the index. After loading (a restart or a full sync from a
//! primary) and `SWAPDB`, the index is rebuilt by a scan in small steps on the main thread.
//!
//! The index is only a guide: a match is read back from its entry before it is served (see
//! `worker`), so a change the index has not seen yet can make a match be skipped, never
//! served wrongly.

use std::os::raw::{c_int, c_void};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use redis_module::{raw, Context, NotifyEvent};

use super::cache_of_entry;
use super::index::{Found, Index, ScopeKey};
use crate::{entry, mainthread, normalize};

enum Op {
    Insert(ScopeKey, Vec<u8>, String, Vec<f32>),
    Remove(i32, Vec<u8>),
    DropCache(i32, Vec<u8>),
    Clear(Option<i32>),
}

static INDEX: LazyLock<RwLock<Index>> = LazyLock::new(Default::default);
static PENDING: Mutex<Vec<Op>> = Mutex::new(Vec::new());

fn pending() -> MutexGuard<'static, Vec<Op>> {
    PENDING.lock().unwrap_or_else(|p| p.into_inner())
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
    }
}

/// Applies `op` now if the index is free, else queues it (never blocks).
fn apply(op: Op) {
    match INDEX.try_write() {
        Ok(mut ix) => {
            for queued in std::mem::take(&mut *pending()) {
                apply_to(&mut ix, queued);
            }
            apply_to(&mut ix, op);
        }
        Err(_) => pending().push(op),
    }
}

/// The best matches for `query` (a unit vector) in `scope`, best first. Worker threads.
pub fn search(scope: &ScopeKey, query: &[f32], threshold: f32, limit: usize) -> Vec<Found> {
    let started = std::time::Instant::now();
    let found = search_now(scope, query, threshold, limit);
    crate::stats::record_search_us(started.elapsed().as_micros() as u64);
    found
}

fn search_now(scope: &ScopeKey, query: &[f32], threshold: f32, limit: usize) -> Vec<Found> {
    let queued = std::mem::take(&mut *pending());
    if !queued.is_empty() {
        let mut ix = INDEX.write().unwrap_or_else(|p| p.into_inner());
        for op in queued {
            apply_to(&mut ix, op);
        }
    }
    let ix = INDEX.read().unwrap_or_else(|p| p.into_inner());
    ix.search(scope, query, threshold, limit)
}

/// Forgets one entry (a match found gone or changed when read back).
pub fn forget(db: i32, key: &[u8]) {
    apply(Op::Remove(db, key.to_vec()));
}

/// A cache was invalidated: its old vectors are never searched again.
pub fn drop_cache(db: i32, cache: &[u8]) {
    apply(Op::DropCache(db, cache.to_vec()));
}

/// (entries, float32 bytes, whole index bytes), for INFO. Never waits.
pub fn size() -> (usize, usize, usize) {
    match INDEX.try_read() {
        Ok(ix) => {
            let (raw, total) = ix.memory();
            (ix.len(), raw, total)
        }
        Err(_) => (0, 0, 0),
    }
}

/// The fields of an entry the index needs.
const FIELDS: [&std::ffi::CStr; 2] = [c"sem", c"question"];

/// Indexes entry `key` from its fields as read (`None`: not a hash), or forgets it if it has
/// no usable `sem` field.
fn index_entry(db: i32, cache: &[u8], key: &[u8], fields: Option<[Option<Vec<u8>>; 2]>) {
    let indexed = fields.and_then(|f| {
        let [Some(sem), Some(q)] = f else { return None };
        let (scope, v) = super::decode(&sem)?;
        let normalized = normalize::normalize(std::str::from_utf8(&q).ok()?);
        (!normalized.is_empty()).then(|| ((db, cache.into(), scope), normalized, v))
    });
    match indexed {
        Some((scope, q, v)) => apply(Op::Insert(scope, key.to_vec(), q, v)),
        None => apply(Op::Remove(db, key.to_vec())),
    }
}

/// Keyspace events on entry keys keep the index in step.
pub fn on_key_event(ctx: &Context, _kind: NotifyEvent, event: &str, key: &[u8]) {
    let Some(cache) = cache_of_entry(key) else {
        return;
    };
    let db = unsafe { raw::RedisModule_GetSelectedDb.unwrap()(ctx.ctx) };
    match event {
        // The TTL changed, not the entry.
        "expire" | "persist" => {}
        "del" | "expired" | "evicted" | "rename_from" | "move_from" => {
            apply(Op::Remove(db, key.to_vec()));
        }
        // hset, hdel, restore, rename_to, move_to, copy_to, or a write of another type.
        _ => index_entry(db, cache, key, unsafe {
            entry::read_fields(ctx.ctx, key, FIELDS)
        }),
    }
}

/// Bumped whenever a rebuild starts or the index is cleared: a running scan that sees a
/// newer value stops.
static EPOCH: AtomicU64 = AtomicU64::new(0);

/// Keys looked at per step of a rebuild scan.
const SCAN_STEP: usize = 500;

/// Server events (called by `generation`'s handler, which owns the subscription).
pub fn on_server_event(ctx: &Context, eid: u64, subevent: u64, data: *mut c_void) {
    if eid == raw::REDISMODULE_EVENT_FLUSHDB {
        // The flush-start event carries the database (-1: all); clear before the keys go.
        let db = if data.is_null() {
            -1
        } else {
            unsafe { (*(data as *const raw::RedisModuleFlushInfo)).dbnum }
        };
        EPOCH.fetch_add(1, Ordering::Relaxed);
        apply(Op::Clear((db >= 0).then_some(db)));
    } else if eid == raw::REDISMODULE_EVENT_LOADING {
        EPOCH.fetch_add(1, Ordering::Relaxed);
        apply(Op::Clear(None));
        if subevent == raw::REDISMODULE_SUBEVENT_LOADING_ENDED
            || subevent == raw::REDISMODULE_SUBEVENT_LOADING_FAILED
        {
            rebuild(ctx);
        }
    } else if eid == raw::REDISMODULE_EVENT_SWAPDB || eid == raw::REDISMODULE_EVENT_REPL_ASYNC_LOAD
    {
        rebuild(ctx);
    }
}

/// Empties the index and scans every database for entries with a `sem` field, a step per
/// main-thread turn.
pub fn rebuild(ctx: &Context) {
    let epoch = EPOCH.fetch_add(1, Ordering::Relaxed) + 1;
    apply(Op::Clear(None));
    let scan = Scan {
        epoch,
        db: 0,
        cursor: std::ptr::null_mut(),
    };
    mainthread::post_after(ctx, Duration::ZERO, Box::new(move |ctx| scan.step(ctx)));
}

struct Scan {
    epoch: u64,
    db: i32,
    cursor: *mut raw::RedisModuleScanCursor,
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
        let c = ctx.ctx;
        unsafe {
            if raw::RedisModule_SelectDb.unwrap()(c, self.db) != raw::REDISMODULE_OK as c_int {
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
            while more && seen.keys < SCAN_STEP {
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
                index_entry(
                    seen.db,
                    cache,
                    name,
                    entry::read_open_fields(ctx, key, FIELDS),
                );
            }
        }
    }));
}
