//! `QA.INVALIDATE <cache> SOURCE <id>...` and `QA.SOURCES <cache> <id> [WITHKEYS]`: the
//! entries citing a document (see `crate::sources` and docs/sources.md).

use std::os::raw::c_int;

use redis_module::{raw, Context};

use super::{args, reply_error, Args};
use crate::entry::links;
use crate::{error, generation, sources};

const OK: c_int = raw::REDISMODULE_OK as c_int;

/// Whether `QA.INVALIDATE`'s arguments are the `SOURCE` form.
pub fn is_by_source(args: &Args) -> bool {
    args.get(2).eq_ignore_ascii_case(b"SOURCE")
}

/// The cache name and the ids of `<command> <cache> <keyword> <id>...` (ids from argument
/// `first`), all checked.
fn cache_and_ids(args: &Args, first: usize, last: usize) -> Result<(&[u8], Vec<&[u8]>), &str> {
    let cache = args.get(1);
    args::cache_name(cache)?;
    let ids: Vec<&[u8]> = (first..last).map(|i| args.get(i)).collect();
    if !ids.iter().all(|id| sources::valid_id(id)) {
        return Err(error::SOURCE_ID_INVALID);
    }
    Ok((cache, ids))
}

/// `QA.INVALIDATE <cache> SOURCE <id> [<id> ...]`: removes every entry of the cache citing
/// any of the ids (`UNLINK`, replicated), and their per-source sets; replies how many
/// entries were removed. O(N) in the entries citing them.
///
/// # Safety
/// `ctx` must be the running command's context, on the main thread.
pub unsafe fn invalidate(ctx: *mut raw::RedisModuleCtx, args: &Args, argc: usize) -> c_int {
    if argc < 4 {
        return reply_error(ctx, error::INVALIDATE_SOURCE_ARITY);
    }
    let (cache, ids) = match cache_and_ids(args, 3, argc) {
        Ok(parsed) => parsed,
        Err(e) => return reply_error(ctx, e),
    };
    let generation = match generation::with_generation(ctx, cache, |g, _| g.to_vec()) {
        Ok(g) => g,
        Err(e) => return reply_error(ctx, e),
    };
    // No generation: the cache has no reachable entry, so none to remove.
    let removed = if generation.is_empty() {
        0
    } else {
        links::invalidate(&Context::new(ctx), cache, &generation, &ids)
    };
    super::replied();
    raw::RedisModule_ReplyWithLongLong.unwrap()(ctx, removed);
    OK
}

/// `QA.SOURCES <cache> <id> [WITHKEYS]`: how many live entries of the cache cite the
/// document; with `WITHKEYS`, a map of their keys to their questions instead.
pub(crate) extern "C" fn qa_sources(
    ctx: *mut raw::RedisModuleCtx,
    argv: *mut *mut raw::RedisModuleString,
    argc: c_int,
) -> c_int {
    super::guarded(ctx, || unsafe {
        let args = Args::new(argv, argc);
        let argc = argc.max(0) as usize;
        let withkeys = match argc {
            3 => false,
            4 if args.get(3).eq_ignore_ascii_case(b"WITHKEYS") => true,
            _ => return reply_error(ctx, error::SOURCES_SYNTAX),
        };
        let (cache, ids) = match cache_and_ids(&args, 2, 3) {
            Ok(parsed) => parsed,
            Err(e) => return reply_error(ctx, e),
        };
        let generation = match generation::with_generation(ctx, cache, |g, _| g.to_vec()) {
            Ok(g) => g,
            Err(e) => return reply_error(ctx, e),
        };
        let live = if generation.is_empty() {
            Vec::new()
        } else {
            links::live(&Context::new(ctx), cache, &generation, ids[0])
        };
        super::replied();
        if !withkeys {
            raw::RedisModule_ReplyWithLongLong.unwrap()(ctx, live.len() as i64);
            return OK;
        }
        raw::reply_with_map(ctx, live.len() as _);
        for (key, question) in &live {
            for b in [key, question] {
                raw::RedisModule_ReplyWithStringBuffer.unwrap()(ctx, b.as_ptr().cast(), b.len());
            }
        }
        OK
    })
}
