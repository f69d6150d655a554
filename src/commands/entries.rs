//! The companion commands: `QA.PEEK`, `QA.KEY`, `QA.SET`, `QA.DEL`, `QA.INVALIDATE`. None of
//! them ever calls the backend. (`QA.STATS` is in `info.rs`.)

use std::os::raw::c_int;

use redis_module::{raw, CallOptionsBuilder, CallResult, Context, RedisValue};

use super::args::{self, Allowed, LOOKUP_ONLY};
use super::{guarded, reply_error, resolve, resolve_for_write, with_entry_args, Args};
use crate::blocked::Waiter;
use crate::entry::{self, Lookup};
use crate::{config, error, generation, worker};

const OK: c_int = raw::REDISMODULE_OK as c_int;

unsafe fn reply_str(ctx: *mut raw::RedisModuleCtx, s: &[u8]) {
    super::replied();
    raw::RedisModule_ReplyWithStringBuffer.unwrap()(ctx, s.as_ptr().cast(), s.len());
}

/// `QA.PEEK <cache> <question> [MODEL <name>] [SYSTEM <prompt>]`: the cached answer or nil.
pub(crate) extern "C" fn qa_peek(
    ctx: *mut raw::RedisModuleCtx,
    argv: *mut *mut raw::RedisModuleString,
    argc: c_int,
) -> c_int {
    with_entry_args(ctx, argv, argc, 2, LOOKUP_ONLY, |a, s| unsafe {
        if let Err(e) = resolve(ctx, a, s) {
            return reply_error(ctx, e);
        }
        if s.no_generation {
            super::replied();
            raw::RedisModule_ReplyWithNull.unwrap()(ctx);
            return OK;
        }
        match entry::lookup(ctx, &s.key, false) {
            Lookup::Hit(hit) => {
                super::replied();
                reply_str(ctx, hit.answer());
            }
            Lookup::Miss => {
                super::replied();
                raw::RedisModule_ReplyWithNull.unwrap()(ctx);
            }
            Lookup::WrongType => return reply_error(ctx, error::WRONG_ENTRY_TYPE),
        }
        OK
    })
}

/// `QA.KEY <cache> <question> [MODEL <name>] [SYSTEM <prompt>]`: a map of `normalized`
/// (the question as the cache sees it) and `key` (the entry key it maps to).
pub(crate) extern "C" fn qa_key(
    ctx: *mut raw::RedisModuleCtx,
    argv: *mut *mut raw::RedisModuleString,
    argc: c_int,
) -> c_int {
    with_entry_args(ctx, argv, argc, 2, LOOKUP_ONLY, |a, s| unsafe {
        if let Err(e) = resolve(ctx, a, s) {
            return reply_error(ctx, e);
        }
        super::replied();
        raw::reply_with_map(ctx, 2);
        reply_str(ctx, b"normalized");
        reply_str(ctx, s.normalized.as_bytes());
        reply_str(ctx, b"key");
        reply_str(ctx, &s.key);
        OK
    })
}

const SET_ALLOWED: Allowed = Allowed {
    ttl: true,
    stale: false,
    refresh: false,
    withmeta: false,
    semantic: true,
    cited: true,
    unknown: error::UNKNOWN_OPTION_SET,
};

/// `QA.SET <cache> <question> <answer> [TTL <seconds>] [MODEL <name>] [SYSTEM <prompt>]
/// [SEMANTIC | EXACT]`: stores an answer as a miss would (to pre-load FAQs); replies OK.
pub(crate) extern "C" fn qa_set(
    ctx: *mut raw::RedisModuleCtx,
    argv: *mut *mut raw::RedisModuleString,
    argc: c_int,
) -> c_int {
    with_entry_args(ctx, argv, argc, 3, SET_ALLOWED, |a, s| unsafe {
        let answer = a.answer.unwrap_or_default();
        if answer.is_empty() {
            return reply_error(ctx, error::ANSWER_EMPTY);
        }
        if answer.len() as i64 > config::MAX_ANSWER_BYTES.get() {
            return reply_error(ctx, error::ANSWER_TOO_LONG);
        }
        let question = match resolve_for_write(ctx, a, s) {
            Ok(q) => q,
            Err(e) => return reply_error(ctx, e),
        };
        // With the app's context the semantic tier is off (see `get::make_job`).
        if a.context().is_none() && a.semantic.unwrap_or_else(|| config::SEMANTIC.get()) {
            return set_semantic(ctx, a, question, &s.normalized, &s.key, answer);
        }
        let context = Context::new(ctx);
        let model = config::with_strings(&context, |c| a.model.unwrap_or(&c.model).to_string());
        let sources = a
            .sources()
            .and_then(|ids| crate::sources::encode(ids.iter().copied()))
            .unwrap_or_default();
        // Names the per-source sets (of this entry, or of the one it replaces).
        let generation = match generation::with_generation(ctx, a.cache, |g, _| g.to_vec()) {
            Ok(g) => g,
            Err(e) => return reply_error(ctx, e),
        };
        let written = entry::write(
            &context,
            &entry::NewEntry {
                key: &s.key,
                answer,
                question: question.as_bytes(),
                model: model.as_bytes(),
                tokens_in: None,
                tokens_out: None,
                latency_ms: None,
                ttl_secs: a.ttl.unwrap_or_else(|| config::TTL.get()),
                stale_secs: 0,
                sem: None,
                sources: &sources,
                generation: &generation,
            },
        );
        match written {
            Ok(()) => {
                // Stored without a vector: an older one of this entry must not stay indexed.
                let db = raw::RedisModule_GetSelectedDb.unwrap()(ctx);
                crate::semantic::upkeep::forget_if_indexed(db, &s.key);
                super::replied();
                raw::RedisModule_ReplyWithSimpleString.unwrap()(ctx, c"OK".as_ptr());
                OK
            }
            Err(_) => reply_error(ctx, error::OOM),
        }
    })
}

/// `QA.SET` with the semantic tier: the question's embedding is fetched off the main thread
/// (the caller waits, as on a miss), then the entry is stored with it. If the embedding call
/// fails the entry is stored without a vector (found by exact match only).
unsafe fn set_semantic(
    ctx: *mut raw::RedisModuleCtx,
    a: &args::EntryArgs<'_>,
    question: &str,
    normalized: &str,
    key: &[u8],
    answer: &[u8],
) -> c_int {
    if super::cannot_block(ctx) {
        return reply_error(ctx, error::SET_SEMANTIC_IN_MULTI);
    }
    let flags = raw::RedisModule_GetContextFlags.unwrap()(ctx) as u32;
    if flags & raw::REDISMODULE_CTX_FLAGS_OOM != 0 {
        return reply_error(ctx, error::OOM);
    }
    let Ok(answer) = std::str::from_utf8(answer) else {
        return reply_error(ctx, error::ANSWER_UTF8);
    };
    let mut job = super::get::make_job(ctx, a, question, normalized, key);
    job.stale_secs = 0;
    let Some(waiter) = Waiter::block(ctx, job.deadline, false) else {
        return reply_error(ctx, &format!("ERR {}", error::INTERNAL));
    };
    let max_inflight = config::MAX_INFLIGHT.get().max(1) as usize;
    let max_queue = config::MAX_QUEUE.get().max(0) as usize;
    // A refused job drops the waiter, which then replies an error itself.
    let _ = worker::start_set(job, answer.to_string(), waiter, max_inflight, max_queue);
    OK
}

/// `QA.DEL <cache> <question> [MODEL <name>] [SYSTEM <prompt>]`: 1 if an entry was
/// deleted, else 0.
pub(crate) extern "C" fn qa_del(
    ctx: *mut raw::RedisModuleCtx,
    argv: *mut *mut raw::RedisModuleString,
    argc: c_int,
) -> c_int {
    with_entry_args(ctx, argv, argc, 2, LOOKUP_ONLY, |a, s| unsafe {
        if let Err(e) = resolve(ctx, a, s) {
            return reply_error(ctx, e);
        }
        let opts = CallOptionsBuilder::new()
            .replicate()
            .errors_as_replies()
            .build();
        let context = Context::new(ctx);
        let deleted: CallResult = context.call_ext("DEL", &opts, &[&s.key[..]][..]);
        let n = match deleted.map(|r| RedisValue::from(&r)) {
            Ok(RedisValue::Integer(n)) => n,
            _ => 0,
        };
        super::replied();
        raw::RedisModule_ReplyWithLongLong.unwrap()(ctx, n);
        OK
    })
}

/// `QA.INVALIDATE <cache> [TOKEN <token> | SOURCE <id> [<id> ...]]`: gives the cache a new
/// random generation token (the value of `qa:{<cache>}:gen`), so no existing entry of it is
/// served again; replies the new token. O(1) whatever the cache's size: old entries expire with their TTL, and their
/// vectors are freed off the main thread. `TOKEN` is how the command reaches replicas and the
/// AOF (with the token the primary chose); a client should never need it. `SOURCE`: see
/// `sources::invalidate`.
pub(crate) extern "C" fn qa_invalidate(
    ctx: *mut raw::RedisModuleCtx,
    argv: *mut *mut raw::RedisModuleString,
    argc: c_int,
) -> c_int {
    guarded(ctx, || unsafe {
        let args = Args::new(argv, argc);
        if super::sources::is_by_source(&args) {
            return super::sources::invalidate(ctx, &args, argc.max(0) as usize);
        }
        let (cache, token) = match args.cache_and_option(b"TOKEN") {
            Ok(parsed) => parsed,
            Err(e) => return reply_error(ctx, e),
        };
        let token = match token {
            None => generation::new_token(),
            Some(t) if generation::valid_token(t) => t.to_vec(),
            Some(_) => return reply_error(ctx, error::TOKEN_INVALID),
        };
        match generation::set(ctx, cache, &token) {
            Ok(()) => {
                reply_str(ctx, &token);
                OK
            }
            Err(e) => reply_error(ctx, e),
        }
    })
}

/// `QA.ENTRY <cache> <question> [MODEL <name>] [SYSTEM <prompt>]`: the whole entry as a map
/// (RESP3; a flat array in RESP2), or nil: `key`, `format` (1: a hash written by an older
/// build, 2: one string), `question` (as first asked), `model`, `answer`, `created_ms`,
/// `fresh_until_ms` (0: no stale grace), `tokens_in`, `tokens_out`, `latency_ms`, `ttl_ms`
/// (-1: none), `sem_bytes` (0: no embedding), and `sources` (an array of document ids) when
/// the entry cites any.
pub(crate) extern "C" fn qa_entry(
    ctx: *mut raw::RedisModuleCtx,
    argv: *mut *mut raw::RedisModuleString,
    argc: c_int,
) -> c_int {
    with_entry_args(ctx, argv, argc, 2, LOOKUP_ONLY, |a, s| unsafe {
        if let Err(e) = resolve(ctx, a, s) {
            return reply_error(ctx, e);
        }
        super::replied();
        if s.no_generation {
            raw::RedisModule_ReplyWithNull.unwrap()(ctx);
            return OK;
        }
        let d = match entry::describe(ctx, &s.key) {
            Ok(Some(d)) => d,
            Ok(None) => {
                raw::RedisModule_ReplyWithNull.unwrap()(ctx);
                return OK;
            }
            Err(entry::NotAnEntry) => return reply_error(ctx, error::WRONG_ENTRY_TYPE),
        };
        let m = &d.meta;
        let texts: [(&str, &[u8]); 4] = [
            ("key", &s.key),
            ("question", &d.question),
            ("model", &d.model),
            ("answer", &d.answer),
        ];
        let ints: [(&str, i64); 8] = [
            ("created_ms", m.created_ms.min(i64::MAX as u64) as i64),
            ("fresh_until_ms", m.fresh_until.min(i64::MAX as u64) as i64),
            ("tokens_in", m.tokens_in.min(i64::MAX as u64) as i64),
            ("tokens_out", m.tokens_out.min(i64::MAX as u64) as i64),
            ("latency_ms", m.latency_ms.min(i64::MAX as u64) as i64),
            ("ttl_ms", d.ttl_ms),
            ("sem_bytes", d.sem_bytes as i64),
            ("format", d.format),
        ];
        let cited = !d.sources.is_empty();
        raw::reply_with_map(ctx, (texts.len() + ints.len() + usize::from(cited)) as _);
        for (name, v) in texts {
            reply_str(ctx, name.as_bytes());
            reply_str(ctx, v);
        }
        for (name, v) in ints {
            reply_str(ctx, name.as_bytes());
            raw::RedisModule_ReplyWithLongLong.unwrap()(ctx, v);
        }
        if cited {
            reply_str(ctx, b"sources");
            let ids: Vec<&[u8]> = crate::sources::ids(&d.sources).collect();
            raw::RedisModule_ReplyWithArray.unwrap()(ctx, ids.len() as _);
            for id in ids {
                reply_str(ctx, id);
            }
        }
        OK
    })
}
