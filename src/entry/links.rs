//! The per-source sets (see `crate::sources`) on the main thread: kept up to date when an
//! entry citing sources is written, read by `QA.INVALIDATE ... SOURCE` and `QA.SOURCES`.
//! Only entries with sources (or replacing one with sources) come here.

use redis_module::{raw, CallOptionsBuilder, CallReply, CallResult, Context};

use crate::sources;

/// A set write failed (a key of another type in the way).
#[derive(Debug)]
pub struct LinkRefused;

/// The members of the set at `set` (none if it does not exist or holds something else).
pub fn members(ctx: &Context, set: &[u8]) -> Vec<Vec<u8>> {
    let opts = CallOptionsBuilder::new().errors_as_replies().build();
    let got: CallResult = ctx.call_ext("SMEMBERS", &opts, &[set][..]);
    let mut out = Vec::new();
    match got {
        Ok(CallReply::Array(a)) => {
            for m in a.iter().flatten() {
                if let CallReply::String(s) = m {
                    out.push(s.as_bytes().to_vec());
                }
            }
        }
        Ok(CallReply::Set(a)) => {
            for m in a.iter().flatten() {
                if let CallReply::String(s) = m {
                    out.push(s.as_bytes().to_vec());
                }
            }
        }
        _ => {}
    }
    out
}

/// A replicated call whose reply is an integer (0 on error).
fn write_int(ctx: &Context, cmd: &str, args: &[&[u8]]) -> Result<i64, LinkRefused> {
    // Not checked for OOM: bookkeeping of an entry already written (or an invalidation) must
    // not be refused half way.
    let opts = CallOptionsBuilder::new()
        .replicate()
        .errors_as_replies()
        .build();
    let got: CallResult = ctx.call_ext(cmd, &opts, args);
    match got {
        Ok(CallReply::I64(n)) => Ok(n.to_i64()),
        Ok(_) => Ok(0),
        Err(_) => Err(LinkRefused),
    }
}

/// The entry at `key`, if it is a v2 entry: its question and sources part. Opened without
/// touching its LRU/LFU clock.
///
/// # Safety
/// Main thread (or the module lock held).
pub unsafe fn cited(ctx: *mut raw::RedisModuleCtx, key: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    let name = raw::RedisModule_CreateString.unwrap()(ctx, key.as_ptr().cast(), key.len());
    let mode = raw::REDISMODULE_READ | raw::REDISMODULE_OPEN_KEY_NOTOUCH;
    let k = raw::RedisModule_OpenKey.unwrap()(ctx, name, mode as std::os::raw::c_int);
    let mut out = None;
    if !k.is_null() {
        if raw::RedisModule_KeyType.unwrap()(k) == raw::REDISMODULE_KEYTYPE_STRING as i32 {
            out = super::open_v2(k).map(|e| (e.question.to_vec(), e.sources.to_vec()));
        }
        raw::RedisModule_CloseKey.unwrap()(k);
    }
    raw::RedisModule_FreeString.unwrap()(ctx, name);
    out
}

/// Whether `key` exists (without touching its LRU/LFU clock).
unsafe fn exists(ctx: *mut raw::RedisModuleCtx, key: &[u8]) -> bool {
    let name = raw::RedisModule_CreateString.unwrap()(ctx, key.as_ptr().cast(), key.len());
    let mode = raw::REDISMODULE_READ | raw::REDISMODULE_OPEN_KEY_NOTOUCH;
    let k = raw::RedisModule_OpenKey.unwrap()(ctx, name, mode as std::os::raw::c_int);
    let found = !k.is_null()
        && raw::RedisModule_KeyType.unwrap()(k) != raw::REDISMODULE_KEYTYPE_EMPTY as i32;
    if !k.is_null() {
        raw::RedisModule_CloseKey.unwrap()(k);
    }
    raw::RedisModule_FreeString.unwrap()(ctx, name);
    found
}

/// After the entry at `key` (under `generation`) was written citing `new` (a sources part)
/// where it cited `old` before: leaves the sets of the sources it no longer cites, joins
/// those it cites, and makes each of those live at least until `expire_at_ms` (the entry's
/// own expiry). Each joined set is also pruned of a few members whose entry is gone.
pub fn relink(
    ctx: &Context,
    key: &[u8],
    generation: &[u8],
    old: &[u8],
    new: &[u8],
    expire_at_ms: i64,
) -> Result<(), LinkRefused> {
    let Some((cache, member)) = sources::split_entry_key(key) else {
        return Ok(());
    };
    for id in sources::ids(old).filter(|id| !sources::cites(new, id)) {
        let set = sources::set_key(cache, generation, id);
        write_int(ctx, "SREM", &[&set, member])?;
    }
    let at = expire_at_ms.max(1).to_string();
    for id in sources::ids(new) {
        let set = sources::set_key(cache, generation, id);
        write_int(ctx, "SADD", &[&set, member])?;
        // A new set gets the entry's expiry; an older one keeps the later of the two.
        write_int(ctx, "PEXPIREAT", &[&set, at.as_bytes(), b"NX"])?;
        write_int(ctx, "PEXPIREAT", &[&set, at.as_bytes(), b"GT"])?;
        prune(ctx, cache, &set, member);
    }
    Ok(())
}

/// Removes from `set` the sampled members whose entry is gone (never `keep`).
fn prune(ctx: &Context, cache: &[u8], set: &[u8], keep: &[u8]) {
    let opts = CallOptionsBuilder::new().errors_as_replies().build();
    let count = sources::PRUNE_SAMPLE.to_string();
    let got: CallResult = ctx.call_ext("SRANDMEMBER", &opts, &[set, count.as_bytes()][..]);
    let Ok(CallReply::Array(a)) = got else { return };
    let sampled: Vec<Vec<u8>> = a
        .iter()
        .flatten()
        .filter_map(|m| match m {
            CallReply::String(s) => Some(s.as_bytes().to_vec()),
            _ => None,
        })
        .collect();
    for m in sampled {
        if m != keep && !unsafe { exists(ctx.ctx, &sources::entry_key(cache, &m)) } {
            let _ = write_int(ctx, "SREM", &[set, &m]);
        }
    }
}

/// `QA.INVALIDATE <cache> SOURCE <id>...`: unlinks every entry of `cache` (under
/// `generation`) in the sets of `ids`, then the sets; returns how many entries were removed.
/// Replicas and the AOF receive the `UNLINK`s and `DEL`s.
pub fn invalidate(ctx: &Context, cache: &[u8], generation: &[u8], ids: &[&[u8]]) -> i64 {
    /// Keys per `UNLINK` (bounds the argument vector of one call).
    const BATCH: usize = 512;
    let mut removed = 0;
    for id in ids {
        let set = sources::set_key(cache, generation, id);
        let keys: Vec<Vec<u8>> = members(ctx, &set)
            .iter()
            .map(|m| sources::entry_key(cache, m))
            .collect();
        for chunk in keys.chunks(BATCH) {
            let args: Vec<&[u8]> = chunk.iter().map(|k| &k[..]).collect();
            removed += write_int(ctx, "UNLINK", &args).unwrap_or(0);
        }
        let _ = write_int(ctx, "DEL", &[&set]);
        // Answers asked for before now and still in flight must not be stored.
        let tomb = sources::tombstone_key(cache, generation, id);
        let now = super::now_us().to_string();
        let ttl = sources::TOMBSTONE_MS.to_string();
        let _ = write_int(ctx, "SET", &[&tomb, now.as_bytes(), b"PX", ttl.as_bytes()]);
    }
    removed
}

/// Whether any of the sources (a sources part) of an answer for the entry at `key` (under
/// `generation`) was invalidated at or after `asked_us` (Unix µs): the answer may be built
/// from a document that changed since, and must not be stored.
pub fn invalidated_since(
    ctx: &Context,
    key: &[u8],
    generation: &[u8],
    sources: &[u8],
    asked_us: i64,
) -> bool {
    let Some((cache, _)) = sources::split_entry_key(key) else {
        return false;
    };
    let opts = CallOptionsBuilder::new().errors_as_replies().build();
    sources::ids(sources).any(|id| {
        let tomb = sources::tombstone_key(cache, generation, id);
        let got: CallResult = ctx.call_ext("GET", &opts, &[&tomb[..]][..]);
        match got {
            Ok(CallReply::String(s)) => std::str::from_utf8(s.as_bytes())
                .ok()
                .and_then(|v| v.parse::<i64>().ok())
                .is_none_or(|at| at >= asked_us),
            _ => false,
        }
    })
}

/// The entries of `cache` (under `generation`) that exist and cite `id`: their keys and
/// questions.
pub fn live(ctx: &Context, cache: &[u8], generation: &[u8], id: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let set = sources::set_key(cache, generation, id);
    let mut out = Vec::new();
    for m in members(ctx, &set) {
        let key = sources::entry_key(cache, &m);
        if let Some((question, part)) = unsafe { cited(ctx.ctx, &key) } {
            if sources::cites(&part, id) {
                out.push((key, question));
            }
        }
    }
    out.sort();
    out
}
