//! Cache generations: `QA.INVALIDATE <cache>` is O(1) because the value of the key
//! `qa:{<cache>}:gen`, a random 128-bit token, is part of every entry key's digest. A new
//! token makes every existing entry unreachable at once; old entries are never served again
//! and expire with their TTL.
//!
//! A cache without a generation key has no reachable entries: entries are only ever written
//! under a token (the first miss or `QA.SET` of a cache makes one), never under an empty or
//! shared one. So a lost generation key (evicted, deleted, flushed, lost in a failover) can
//! only make entries unreachable, never bring invalidated ones back, and tokens are never
//! reused (a counter would restart at 1 and revive the entries written under 1 before).
//!
//! Every change of a token goes through `QA.INVALIDATE` (primaries replicate even the first
//! token as `QA.INVALIDATE <cache> TOKEN <t>`), so replicas and the AOF run the same handler.
//! The hit path must not pay a second key lookup, so tokens are mirrored in memory, per
//! database and cache name, and the mirror is only a cache of the key: dropped for a cache by
//! `QA.INVALIDATE`, by keyspace events on the key (deletes, expiry, eviction, renames,
//! restores) and entirely on `FLUSHALL`/`FLUSHDB`, loading, `SWAPDB` and role changes. The
//! mirror is bounded (two generations of at most [`MIRROR_HALF`] names: recently used names
//! stay), so names nobody stores anything under cost nothing for long. Writing a generation
//! key by hand (`SET qa:{faq}:gen ...`) is not supported: the mirror may not see it.
//!
//! Hits do not touch the generation key, so under `allkeys-lru`/`allkeys-lfu` it could look
//! like the coldest key. Every [`TOUCH_EVERY`]th use of a mirrored token reads the key, which
//! keeps it about as warm as the cache's traffic. If it is evicted all the same, the cache
//! starts empty (a miss per question), it never serves old answers.

use std::collections::HashMap;
use std::os::raw::c_int;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::LazyLock;

use redis_module::{
    raw, CallOptionsBuilder, CallReply, CallResult, Context, NotifyEvent, RedisGILGuard,
    RedisLockIndicator,
};

use sha2::Sha256;

use crate::error;

/// A cache's key-derivation state for the default model and system prompt (see
/// `keys::generation_state`), kept with its mirrored generation so a hit hashes only its
/// question: the `config::Strings::prefix_epoch` it was derived under, and the state.
pub type KeyState = Option<(u64, Sha256)>;

/// The generation of a cache that has none: no entry is reachable under it.
pub const NONE: &[u8] = b"";

/// A new token: 128 random bits as 32 hex characters.
pub const TOKEN_LEN: usize = 32;

/// Names mirrored per generation of the mirror (all databases together).
pub const MIRROR_HALF: usize = 8_192;

/// One use in this many of a mirrored token reads the generation key (see the module doc).
pub const TOUCH_EVERY: u32 = 32;

struct Mirrored {
    token: Box<[u8]>,
    slot: Option<usize>,
    uses: u32,
    /// The key was evicted: the token is still the cache's (eviction is no invalidation) and
    /// the next miss writes the key again with it (see [`touch`]).
    evicted: bool,
    key_state: KeyState,
}

type Names = Vec<HashMap<Box<[u8]>, Mirrored>>;

/// Two generations of names: lookups look in `young`, then `old` (moving a name found there
/// to `young`); when `young` is full it becomes `old` and the old `old` is dropped.
#[derive(Default)]
struct Mirror {
    young: Names,
    old: Names,
    young_len: usize,
}

impl Mirror {
    fn get(&mut self, db: usize, cache: &[u8]) -> Option<&mut Mirrored> {
        // One hash lookup when the name is young (the usual case). The borrow checker cannot
        // yet end a returned borrow on the path that does not return, hence the pointer.
        if let Some(m) = self.young.get_mut(db).and_then(|m| m.get_mut(cache)) {
            let m: *mut Mirrored = m;
            // SAFETY: `m` points into `self.young`, which nothing changes before the
            // returned borrow (tied to `&mut self`) ends.
            return Some(unsafe { &mut *m });
        }
        let moved = self.old.get_mut(db).and_then(|m| m.remove_entry(cache))?;
        self.put(db, moved.0, moved.1);
        self.young.get_mut(db)?.get_mut(cache)
    }

    fn put(&mut self, db: usize, cache: Box<[u8]>, m: Mirrored) {
        crate::keys::derivation_changed();
        if self.young_len >= MIRROR_HALF {
            self.old = std::mem::take(&mut self.young);
            self.young_len = 0;
        }
        if self.young.len() <= db {
            self.young.resize_with(db + 1, HashMap::new);
        }
        if self.young[db].insert(cache, m).is_none() {
            self.young_len += 1;
        }
    }

    fn remove(&mut self, db: usize, cache: &[u8]) {
        crate::keys::derivation_changed();
        if let Some(m) = self.young.get_mut(db) {
            if m.remove(cache).is_some() {
                self.young_len -= 1;
            }
        }
        if let Some(m) = self.old.get_mut(db) {
            m.remove(cache);
        }
    }

    fn len(&self) -> usize {
        self.young_len + self.old.iter().map(HashMap::len).sum::<usize>()
    }
}

static MIRROR: LazyLock<RedisGILGuard<Mirror>> =
    LazyLock::new(|| RedisGILGuard::new(Mirror::default()));

/// Cache names mirrored now (INFO `mirrored_caches`; kept without the lock for INFO).
pub static MIRRORED: AtomicUsize = AtomicUsize::new(0);

fn count(m: &Mirror) {
    MIRRORED.store(m.len(), Ordering::Relaxed);
}

/// The generation key of a cache.
pub fn gen_key(cache: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(cache.len() + 9);
    k.extend_from_slice(b"qa:{");
    k.extend_from_slice(cache);
    k.extend_from_slice(b"}:gen");
    k
}

/// The cache name in a generation key, if `key` is one.
fn cache_of_gen_key(key: &[u8]) -> Option<&[u8]> {
    key.strip_prefix(b"qa:{")?.strip_suffix(b"}:gen")
}

fn selected_db(ctx: *mut raw::RedisModuleCtx) -> usize {
    unsafe { raw::RedisModule_GetSelectedDb.unwrap()(ctx) }.max(0) as usize
}

/// Calls `f` with the current generation of `cache` ([`NONE`] if it has none) and the
/// cache's stats slot (see `stats::slot`; none for a cache without a generation).
///
/// # Safety
/// `ctx` must be a command context on the main thread.
pub unsafe fn with_generation<R>(
    ctx: *mut raw::RedisModuleCtx,
    cache: &[u8],
    f: impl FnOnce(&[u8], Option<usize>) -> R,
) -> Result<R, &'static str> {
    with_generation_state(ctx, cache, |token, slot, _| f(token, slot))
}

/// [`with_generation`], also lending `f` the cache's [`KeyState`] (kept while the
/// generation stays mirrored; `f` checks its epoch and replaces it when stale).
///
/// # Safety
/// `ctx` must be a command context on the main thread.
pub unsafe fn with_generation_state<R>(
    ctx: *mut raw::RedisModuleCtx,
    cache: &[u8],
    f: impl FnOnce(&[u8], Option<usize>, &mut KeyState) -> R,
) -> Result<R, &'static str> {
    let context = Context::new(ctx);
    let db = selected_db(ctx);
    // The mirror is borrowed only inside this block: reading the key below can run keyspace
    // handlers that use the mirror too.
    let mut f = Some(f);
    let mirrored = {
        let mut mirror = MIRROR.lock(&context);
        match (mirror.get(db, cache), f.take()) {
            (Some(m), Some(f)) => {
                m.uses = m.uses.wrapping_add(1);
                Ok((
                    m.uses % TOUCH_EVERY == 0,
                    f(&m.token, m.slot, &mut m.key_state),
                ))
            }
            (_, f) => Err(f),
        }
    };
    let f = match mirrored {
        Ok((touch, result)) => {
            if touch {
                touch_key(ctx, cache);
            }
            return Ok(result);
        }
        Err(Some(f)) => f,
        Err(None) => return Err(error::INTERNAL_GENERATION),
    };
    let token = read_generation(&context, cache)?;
    let slot = if token.is_empty() {
        None
    } else {
        // A cache with a generation has (or had) entries: it gets its figures.
        crate::stats::track(&context, cache)
    };
    let mut key_state = None;
    let result = f(&token, slot, &mut key_state);
    let m = Mirrored {
        token: token.into_boxed_slice(),
        slot,
        uses: 0,
        evicted: false,
        key_state,
    };
    let mut mirror = MIRROR.lock(&context);
    mirror.put(db, cache.into(), m);
    count(&mirror);
    Ok(result)
}

/// Reads `qa:{<cache>}:gen` (with `GET`: direct access would rewrite an integer-encoded
/// value in place, on replicas too). Only on a mirror miss.
fn read_generation(ctx: &Context, cache: &[u8]) -> Result<Vec<u8>, &'static str> {
    let name = gen_key(cache);
    let opts = CallOptionsBuilder::new().errors_as_replies().build();
    let got: CallResult = ctx.call_ext("GET", &opts, &[&name[..]][..]);
    match got {
        Ok(CallReply::String(s)) => Ok(s.as_bytes().to_vec()),
        Ok(CallReply::Null(_)) => Ok(Vec::new()),
        _ => Err(error::GENERATION_TYPE),
    }
}

/// Counts a use of the cache's generation key for LRU/LFU eviction: every miss does (a
/// cache that keeps being asked keeps its generation), besides one mirrored use in
/// [`TOUCH_EVERY`]. If the key was evicted, writes it again with the same token: eviction
/// is no invalidation, and the cache's entries stay reachable (a key deleted, flushed or
/// lost otherwise is forgotten instead, and the cache starts over with a new token).
///
/// # Safety
/// `ctx` must be a command context on the main thread that may write.
pub unsafe fn touch(ctx: *mut raw::RedisModuleCtx, cache: &[u8]) {
    let context = Context::new(ctx);
    let db = selected_db(ctx);
    let evicted = {
        let mut mirror = MIRROR.lock(&context);
        mirror
            .get(db, cache)
            .filter(|m| m.evicted)
            .map(|m| m.token.to_vec())
    };
    match evicted {
        Some(token) => {
            let _ = set_key(ctx, cache, &token);
            if let Some(m) = MIRROR.lock(&context).get(db, cache) {
                m.evicted = false;
            }
        }
        None => touch_key(ctx, cache),
    }
}

/// Opens the generation key for reading, which counts as a use for LRU/LFU eviction.
///
/// # Safety
/// `ctx` must be a command context on the main thread.
pub unsafe fn touch_key(ctx: *mut raw::RedisModuleCtx, cache: &[u8]) {
    let name = gen_key(cache);
    let s = raw::RedisModule_CreateString.unwrap()(ctx, name.as_ptr().cast(), name.len());
    let k = raw::RedisModule_OpenKey.unwrap()(ctx, s, raw::REDISMODULE_READ as c_int);
    if !k.is_null() {
        raw::RedisModule_CloseKey.unwrap()(k);
    }
    raw::RedisModule_FreeString.unwrap()(ctx, s);
}

/// A new random token.
pub fn new_token() -> Vec<u8> {
    let mut t = vec![0u8; TOKEN_LEN];
    // SAFETY: writes exactly `TOKEN_LEN` bytes into `t`; thread-safe in Redis.
    unsafe {
        if let Some(hex) = raw::RedisModule_GetRandomHexChars {
            hex(t.as_mut_ptr().cast(), TOKEN_LEN);
            return t;
        }
    }
    // Not reached on Redis 7+ (the API exists since 5.0): std's random hasher keys.
    use std::hash::{BuildHasher, Hasher};
    let mut out = Vec::with_capacity(TOKEN_LEN);
    for i in 0..2u64 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(i);
        out.extend_from_slice(format!("{:016x}", h.finish()).as_bytes());
    }
    out
}

/// Whether `t` can be a generation token: 1 to 64 bytes of printable ASCII.
pub fn valid_token(t: &[u8]) -> bool {
    !t.is_empty() && t.len() <= 64 && t.iter().all(|b| b.is_ascii_graphic())
}

/// Sets the generation of `cache` in the selected database to `token` and replicates it as
/// `QA.INVALIDATE <cache> TOKEN <token>`, so replicas and the AOF run the same handler (and
/// drop their mirror of it). Not checked for OOM: an invalidation must always work.
///
/// # Safety
/// `ctx` must be a command context on the main thread that may write.
pub unsafe fn set(
    ctx: *mut raw::RedisModuleCtx,
    cache: &[u8],
    token: &[u8],
) -> Result<(), &'static str> {
    set_key(ctx, cache, token)?;
    let context = Context::new(ctx);
    let db = selected_db(ctx);
    forget(&context, db, cache);
    // The old generation's vectors can never match again: free them (off the main thread).
    crate::semantic::upkeep::drop_cache(db as i32, cache);
    Ok(())
}

/// Writes the generation key and replicates it as `QA.INVALIDATE <cache> TOKEN <token>`.
unsafe fn set_key(
    ctx: *mut raw::RedisModuleCtx,
    cache: &[u8],
    token: &[u8],
) -> Result<(), &'static str> {
    let context = Context::new(ctx);
    // SET overwrites any type: only a string (or nothing) may be replaced.
    read_generation(&context, cache)?;
    let name = gen_key(cache);
    let opts = CallOptionsBuilder::new().errors_as_replies().build();
    let set: CallResult = context.call_ext("SET", &opts, &[&name[..], token][..]);
    if set.is_err() {
        return Err(error::GENERATION_TYPE);
    }
    // Replicas run the same handler: unconditional, with the token decided here.
    if let Some(replicate) = raw::RedisModule_Replicate {
        replicate(
            ctx,
            c"qa.invalidate".as_ptr(),
            c"bcb".as_ptr(),
            cache.as_ptr(),
            cache.len(),
            c"TOKEN".as_ptr(),
            token.as_ptr(),
            token.len(),
        );
    }
    Ok(())
}

/// Makes sure `cache` has a generation before an entry is written under it (a miss about to
/// call the backend, `QA.SET`): the first one is a new random token. Returns whether one was
/// made (the caller derives the entry key again).
///
/// # Safety
/// `ctx` must be a command context on the main thread that may write.
pub unsafe fn ensure(ctx: *mut raw::RedisModuleCtx, cache: &[u8]) -> Result<bool, &'static str> {
    let has = with_generation(ctx, cache, |t, _| !t.is_empty())?;
    if has {
        return Ok(false);
    }
    set(ctx, cache, &new_token())?;
    crate::stats::track(&Context::new(ctx), cache);
    Ok(true)
}

/// The current generation of `cache` for a write on the main thread (a worker's answer):
/// `None` if it cannot be read.
///
/// # Safety
/// `ctx` must be a context on the main thread, on the entry's database.
pub unsafe fn current(ctx: *mut raw::RedisModuleCtx, cache: &[u8]) -> Option<Vec<u8>> {
    with_generation(ctx, cache, |t, _| t.to_vec()).ok()
}

/// Forgets the mirrored generation of one cache.
pub fn forget<G: RedisLockIndicator>(ctx: &G, db: usize, cache: &[u8]) {
    let mut mirror = MIRROR.lock(ctx);
    mirror.remove(db, cache);
    count(&mirror);
}

/// Forgets every mirrored generation.
pub fn forget_all<G: RedisLockIndicator>(ctx: &G) {
    let mut mirror = MIRROR.lock(ctx);
    *mirror = Mirror::default();
    crate::keys::derivation_changed();
    count(&mirror);
}

/// Keyspace events: any change to a generation key drops its mirror entry. The module's
/// only keyspace subscription (generic, expired and evicted events: see `lib.rs`); entry keys
/// are passed on to the semantic index.
pub fn on_key_event(ctx: &Context, kind: NotifyEvent, event: &str, key: &[u8]) {
    crate::stats::KEYSPACE_EVENTS.bump_main();
    crate::semantic::upkeep::on_key_event(ctx, kind, event, key);
    if event == "evicted" {
        if let Some(cache) = crate::sources::cache_of_set_key(key) {
            source_set_evicted(ctx, cache);
            return;
        }
    }
    if let Some(cache) = cache_of_gen_key(key) {
        let db = selected_db(ctx.ctx);
        if event == "evicted" {
            // Not an invalidation: keep the token, write the key again on the next miss.
            if let Some(m) = MIRROR.lock(ctx).get(db, cache) {
                m.evicted = true;
                return;
            }
        }
        forget(ctx, db, cache);
        // A generation key that arrives (restore: its slot migrated here with the entries;
        // rename_to, move_to, copy_to) may be the very generation of vectors indexed a moment
        // ago from entries that came with it: keep them (the index scope holds the token, so a
        // vector of another generation can never match anyway). Any other change ends the
        // generation: its vectors can never match again, free them.
        if !matches!(event, "restore" | "rename_to" | "move_to" | "copy_to") {
            crate::semantic::upkeep::drop_cache(db as i32, cache);
        }
    }
}

/// A per-source set was evicted: the entries it listed could no longer be found by
/// `QA.INVALIDATE ... SOURCE`, and an answer that cannot be invalidated is worse than a miss.
/// The cache gets a new generation (as `QA.INVALIDATE <cache>`), on the main thread after
/// the eviction (no write from inside a keyspace event).
fn source_set_evicted(ctx: &Context, cache: &[u8]) {
    crate::stats::SOURCE_SETS_EVICTED.bump_main();
    let db = selected_db(ctx.ctx) as i32;
    let cache = cache.to_vec();
    let task = Box::new(move |ctx: &Context| unsafe {
        raw::RedisModule_SelectDb.unwrap()(ctx.ctx, db);
        let flags = raw::RedisModule_GetContextFlags.unwrap()(ctx.ctx) as u32;
        if flags & raw::REDISMODULE_CTX_FLAGS_SLAVE == 0 {
            let _ = set(ctx.ctx, &cache, &new_token());
        }
    });
    let _ = crate::mainthread::post(task);
}

/// Server events that change keys without keyspace events (flush, load, swapdb) or change
/// what this server may do (a role change: writes from a primary reached a replica's keys
/// without passing through the mirror or the index).
/// The semantic index follows the same events (one subscription per event and module).
extern "C" fn on_server_event(
    ctx: *mut raw::RedisModuleCtx,
    eid: raw::RedisModuleEvent,
    subevent: u64,
    data: *mut std::os::raw::c_void,
) {
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let ctx = Context::new(ctx);
        // A save, a fork or a shutdown changes no key: the mirror stays.
        if eid.id != raw::REDISMODULE_EVENT_PERSISTENCE
            && eid.id != raw::REDISMODULE_EVENT_SHUTDOWN
            && eid.id != raw::REDISMODULE_EVENT_FORK_CHILD
        {
            forget_all(&ctx);
        }
        crate::semantic::upkeep::on_server_event(&ctx, eid.id, subevent, data);
    }));
}

/// Subscribes to the server events above; `init` calls it.
pub fn subscribe(ctx: &Context) {
    let events = [
        raw::RedisModuleEvent {
            id: raw::REDISMODULE_EVENT_FLUSHDB,
            dataver: 1,
        },
        raw::RedisModuleEvent {
            id: raw::REDISMODULE_EVENT_LOADING,
            dataver: 1,
        },
        raw::RedisModuleEvent {
            id: raw::REDISMODULE_EVENT_SWAPDB,
            dataver: 1,
        },
        raw::RedisModuleEvent {
            id: raw::REDISMODULE_EVENT_REPL_ASYNC_LOAD,
            dataver: 1,
        },
        raw::RedisModuleEvent {
            id: raw::REDISMODULE_EVENT_REPLICATION_ROLE_CHANGED,
            dataver: 1,
        },
        // Saves and shutdown: the semantic index's graphs are saved beside the RDB file.
        raw::RedisModuleEvent {
            id: raw::REDISMODULE_EVENT_PERSISTENCE,
            dataver: 1,
        },
        raw::RedisModuleEvent {
            id: raw::REDISMODULE_EVENT_SHUTDOWN,
            dataver: 1,
        },
        // A background save's fork, seen from the parent (its persistence event fires in
        // the child).
        raw::RedisModuleEvent {
            id: raw::REDISMODULE_EVENT_FORK_CHILD,
            dataver: 1,
        },
    ];
    for e in events {
        unsafe {
            raw::RedisModule_SubscribeToServerEvent.unwrap()(ctx.ctx, e, Some(on_server_event));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_keys() {
        assert_eq!(gen_key(b"faq"), b"qa:{faq}:gen");
        // (key, cache it belongs to)
        let rows: &[(&[u8], Option<&[u8]>)] = &[
            (b"qa:{faq}:gen", Some(b"faq")),
            (b"qa:{a:b}:gen", Some(b"a:b")),
            (b"qa:{faq}:0123", None),
            (b"qa:{faq}:genx", None),
            (b"xqa:{faq}:gen", None),
            (b"faq", None),
        ];
        for (key, cache) in rows {
            assert_eq!(cache_of_gen_key(key), *cache, "{key:?}");
        }
    }
}
