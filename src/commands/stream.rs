//! `QA.STREAM <cache> <question> [TTL <seconds>] [STALE <seconds>] [MODEL <name>]
//! [SYSTEM <prompt>] [REFRESH] [SEMANTIC | EXACT]`
//!
//! Never blocks. A hit replies the answer; a miss replies the name of the Redis Stream the
//! answer is written to as the backend writes it (see `streaming` and docs/streaming.md).

use std::os::raw::c_int;

use redis_module::{raw, CallOptionsBuilder, CallResult, Context};

use super::args::{Allowed, EntryArgs};
use super::{reply_error, resolve, with_entry_args, Scratch};
use crate::entry::{self, Lookup};
use crate::error;
use crate::flight::Joined;
use crate::streaming::{self, BatchSettings, Sink, SinkSettings};
use crate::{config, generation, stats, worker};

/// The options `QA.STREAM` takes: those of `QA.GET` but `WITHMETA` (its reply always says
/// how it was served).
const ALLOWED: Allowed = Allowed {
    ttl: true,
    stale: true,
    refresh: true,
    withmeta: false,
    semantic: true,
    cited: true,
    unknown: error::UNKNOWN_OPTION_STREAM,
};

pub(crate) extern "C" fn qa_stream(
    ctx: *mut raw::RedisModuleCtx,
    argv: *mut *mut raw::RedisModuleString,
    argc: c_int,
) -> c_int {
    with_entry_args(ctx, argv, argc, 2, ALLOWED, |a, s| unsafe {
        stream(ctx, a, s)
    })
}

/// # Safety
/// `ctx` must be the running command's context, on the main thread.
unsafe fn stream(ctx: *mut raw::RedisModuleCtx, a: &EntryArgs<'_>, s: &mut Scratch) -> c_int {
    let question = match resolve(ctx, a, s) {
        Ok(q) => q,
        Err(e) => return reply_error(ctx, e),
    };
    if !a.refresh && !s.no_generation {
        match entry::lookup(ctx, &s.key, false) {
            Lookup::Hit(hit) => {
                let served = if hit.stale { "stale" } else { "hit" };
                reply(ctx, served, "answer", hit.answer());
                super::get::count_hit(ctx, s.slot, &hit);
                if hit.stale {
                    super::get::refresh_stale(ctx, a, question, &s.normalized, &s.key, s.slot);
                }
                return raw::REDISMODULE_OK as c_int;
            }
            Lookup::WrongType => return reply_error(ctx, error::WRONG_ENTRY_TYPE),
            Lookup::Miss => {}
        }
    }
    if let Some(e) = miss_refused(ctx) {
        return reply_error(ctx, e);
    }
    if s.no_generation {
        if let Err(e) = generation::ensure(ctx, a.cache).and_then(|_| resolve(ctx, a, s)) {
            return reply_error(ctx, e);
        }
    } else {
        generation::touch(ctx, a.cache);
    }
    let job = super::get::make_job(ctx, a, question, &s.normalized, &s.key);
    let stream_key = streaming::stream_key(&s.key);
    let settings = SinkSettings {
        batch: BatchSettings {
            ms: config::STREAM_BATCH_MS.get().max(0) as u64,
            bytes: config::STREAM_BATCH_BYTES.get().max(1) as usize,
        },
        linger_ms: config::STREAM_LINGER.get().max(1) * 1000,
        running_ms: job.timeout_ms as i64 + config::STREAM_LINGER.get().max(1) * 1000,
    };
    let (joined, made, served) = worker::join_stream(job.db, &s.key, a.refresh, || {
        Sink::new(job.db, stream_key.clone(), settings)
    });
    if made {
        // What an earlier flight of this key left (its lingering stream) must not be read
        // as this one's: the stream starts empty. Replicated like every write of the module.
        let opts = CallOptionsBuilder::new()
            .replicate()
            .errors_as_replies()
            .build();
        let _: CallResult = Context::new(ctx).call_ext("DEL", &opts, &[&stream_key[..]][..]);
    }
    stats::MISSES.bump_main();
    stats::for_cache(&Context::new(ctx), a.cache, |c| {
        c.misses += 1;
        c.coalesced += u64::from(joined == Joined::Follower);
    });
    reply(ctx, served, "stream", &stream_key);
    match joined {
        Joined::Leader => {
            let max_inflight = config::MAX_INFLIGHT.get().max(1) as usize;
            let max_queue = config::MAX_QUEUE.get().max(0) as usize;
            // Refusals (queue full, breaker open) end the flight with an error entry.
            let _ = worker::start(job, max_inflight, max_queue);
        }
        Joined::Follower => stats::COALESCED.bump_main(),
    }
    raw::REDISMODULE_OK as c_int
}

/// Why a miss cannot start a call here: inside `MULTI` or a script (`QA.STREAM` there
/// serves hits only, like `QA.GET`), on a replica, or out of memory.
///
/// # Safety
/// `ctx` must be the running command's context.
unsafe fn miss_refused(ctx: *mut raw::RedisModuleCtx) -> Option<&'static str> {
    if super::cannot_block(ctx) {
        return Some(error::STREAM_IN_MULTI);
    }
    let flags = raw::RedisModule_GetContextFlags.unwrap()(ctx) as u32;
    if flags & raw::REDISMODULE_CTX_FLAGS_SLAVE != 0 {
        return Some(error::STREAM_ON_REPLICA);
    }
    if flags & raw::REDISMODULE_CTX_FLAGS_OOM != 0 {
        return Some(error::OOM);
    }
    None
}

/// The reply: a map (RESP3) or flat array (RESP2) of `served` and `answer` or `stream`.
unsafe fn reply(ctx: *mut raw::RedisModuleCtx, served: &str, field: &str, value: &[u8]) {
    let bytes =
        |b: &[u8]| raw::RedisModule_ReplyWithStringBuffer.unwrap()(ctx, b.as_ptr().cast(), b.len());
    super::replied();
    raw::reply_with_map(ctx, 2);
    bytes(b"served");
    bytes(served.as_bytes());
    bytes(field.as_bytes());
    bytes(value);
}
