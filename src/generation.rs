//! Cache generations: `QA.INVALIDATE <cache>` is O(1) because the value of the key
//! `qa:{<cache>}:gen` is part of every entry key's digest. Bumping it makes every existing
//! entry unreachable at once; the old entries are never served again and expire with their
//! TTL (or are evicted first, as the least used keys).
//!
//! The hit path must not pay a second key lookup for this, so the value is mirrored in
//! memory, per database and cache name, and the mirror is only a cache of the key: it is
//! dropped for a cache whenever its generation key changes in any way (keyspace events:
//! writes, deletes, expiry, eviction, renames, restores; replicated writes included), and
//! entirely on `FLUSHALL`/`FLUSHDB`, on loading (restart, full sync from a primary) and on
//! `SWAPDB`. A dropped entry is read again from the key on the next request.

use std::collections::HashMap;
use std::os::raw::c_int;
use std::sync::LazyLock;

use redis_module::{raw, Context, NotifyEvent, RedisGILGuard, RedisLockIndicator};

use crate::error;

/// Beyond this many mirrored caches in one database, further caches are not mirrored (their
/// key is read on every request), so hostile cache names cannot grow memory without bound.
const MAX_MIRRORED: usize = 100_000;

/// Per database: cache name -> (generation, the cache's stats slot).
type Mirror = Vec<HashMap<Box<[u8]>, (Box<[u8]>, Option<usize>)>>;

static MIRROR: LazyLock<RedisGILGuard<Mirror>> = LazyLock::new(|| RedisGILGuard::new(Vec::new()));

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

/// Calls `f` with the current generation of `cache` (empty if it was never invalidated) and
/// the cache's stats slot (see `stats::slot`).
///
/// # Safety
/// `ctx` must be a command context on the main thread.
pub unsafe fn with_generation<R>(
    ctx: *mut raw::RedisModuleCtx,
    cache: &[u8],
    f: impl FnOnce(&[u8], Option<usize>) -> R,
) -> Result<R, &'static str> {
    let context = Context::new(ctx);
    let db = raw::RedisModule_GetSelectedDb.unwrap()(ctx).max(0) as usize;
    let mut mirror = MIRROR.lock(&context);
    if let Some((token, slot)) = mirror.get(db).and_then(|m| m.get(cache)) {
        return Ok(f(token, *slot));
    }
    let token = read_generation(ctx, cache)?;
    let slot = crate::stats::slot(&context, cache);
    let result = f(&token, slot);
    if mirror.len() <= db {
        mirror.resize_with(db + 1, HashMap::new);
    }
    // Full: new caches are read from their key each time instead (still correct).
    if mirror[db].len() < MAX_MIRRORED {
        mirror[db].insert(cache.into(), (token.into_boxed_slice(), slot));
    }
    Ok(result)
}

/// Reads `qa:{<cache>}:gen` with the low-level key API.
unsafe fn read_generation(
    ctx: *mut raw::RedisModuleCtx,
    cache: &[u8],
) -> Result<Vec<u8>, &'static str> {
    let name = gen_key(cache);
    let s = raw::RedisModule_CreateString.unwrap()(ctx, name.as_ptr().cast(), name.len());
    let k = raw::RedisModule_OpenKey.unwrap()(ctx, s, raw::REDISMODULE_READ as c_int);
    let result = if k.is_null() {
        Ok(Vec::new())
    } else {
        let kind = raw::RedisModule_KeyType.unwrap()(k);
        if kind == raw::REDISMODULE_KEYTYPE_EMPTY as c_int {
            Ok(Vec::new())
        } else if kind == raw::REDISMODULE_KEYTYPE_STRING as c_int {
            let mut len = 0usize;
            let p =
                raw::RedisModule_StringDMA.unwrap()(k, &mut len, raw::REDISMODULE_READ as c_int);
            if p.is_null() {
                Ok(Vec::new())
            } else {
                Ok(std::slice::from_raw_parts(p.cast::<u8>(), len).to_vec())
            }
        } else {
            Err(error::GENERATION_TYPE)
        }
    };
    if !k.is_null() {
        raw::RedisModule_CloseKey.unwrap()(k);
    }
    raw::RedisModule_FreeString.unwrap()(ctx, s);
    result
}

/// Forgets the mirrored generation of one cache in the selected database of `ctx`.
pub fn forget<G: RedisLockIndicator>(ctx: &G, db: usize, cache: &[u8]) {
    if let Some(m) = MIRROR.lock(ctx).get_mut(db) {
        m.remove(cache);
    }
}

/// Forgets every mirrored generation.
pub fn forget_all<G: RedisLockIndicator>(ctx: &G) {
    MIRROR.lock(ctx).clear();
}

/// Keyspace events: any change to a generation key drops its mirror entry. The module's
/// only keyspace subscription (Redis makes a context per subscription per event, on every
/// write of every key): entry keys are passed on to the semantic index.
pub fn on_key_event(ctx: &Context, kind: NotifyEvent, event: &str, key: &[u8]) {
    crate::semantic::upkeep::on_key_event(ctx, kind, event, key);
    if let Some(cache) = cache_of_gen_key(key) {
        let db = unsafe { raw::RedisModule_GetSelectedDb.unwrap()(ctx.ctx) }.max(0) as usize;
        forget(ctx, db, cache);
        // The old generation's vectors can never match again: free them.
        crate::semantic::upkeep::drop_cache(db as i32, cache);
    }
}

/// Server events that change keys without keyspace events: flush, load, swapdb.
/// The semantic index follows the same events (one subscription per event and module).
extern "C" fn on_server_event(
    ctx: *mut raw::RedisModuleCtx,
    eid: raw::RedisModuleEvent,
    subevent: u64,
    data: *mut std::os::raw::c_void,
) {
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let ctx = Context::new(ctx);
        forget_all(&ctx);
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
