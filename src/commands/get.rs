//! `QA.GET <cache> <question> [TTL <seconds>] [STALE <seconds>] [MODEL <name>]
//! [SYSTEM <prompt>] [REFRESH] [WITHMETA] [SEMANTIC | EXACT]`

use std::os::raw::c_int;
use std::time::{Duration, Instant};

use redis_module::{raw, Context};

use super::args::{Allowed, EntryArgs};
use super::{reply_error, resolve, resolve_recent, with_entry_args, Scratch};
use crate::backend::Request;
use crate::blocked::{self, Waiter};
use crate::config;
use crate::entry::{self, Hit, Lookup};
use crate::error;
use crate::flight::Joined;
use crate::stats;
use crate::worker::{self, Job, SemanticJob};
use crate::{generation, semantic};

/// The options `QA.GET` takes.
const ALLOWED: Allowed = Allowed {
    ttl: true,
    stale: true,
    refresh: true,
    withmeta: true,
    semantic: true,
    cited: true,
    unknown: error::UNKNOWN_OPTION_GET,
};

pub(crate) extern "C" fn qa_get(
    ctx: *mut raw::RedisModuleCtx,
    argv: *mut *mut raw::RedisModuleString,
    argc: c_int,
) -> c_int {
    with_entry_args(ctx, argv, argc, 2, ALLOWED, |a, s| unsafe {
        get(ctx, a, s)
    })
}

/// # Safety
/// `ctx` must be the running command's context, on the main thread.
unsafe fn get(ctx: *mut raw::RedisModuleCtx, a: &EntryArgs<'_>, s: &mut Scratch) -> c_int {
    let question = match resolve_recent(ctx, a, s) {
        Ok(q) => q,
        Err(e) => return reply_error(ctx, e),
    };
    // A cache without a generation has no reachable entry: nothing to look up.
    if !a.refresh && !s.no_generation {
        match entry::lookup(ctx, &s.key, a.withmeta) {
            Lookup::Hit(hit) => {
                reply_hit(ctx, &hit, a.withmeta);
                count_hit(ctx, s.slot, &hit);
                s.keep_recent(a.cache, question);
                if hit.stale {
                    s.ensure_normalized(question);
                    refresh_stale(ctx, a, question, &s.normalized, &s.key, s.slot);
                }
                return raw::REDISMODULE_OK as c_int;
            }
            Lookup::WrongType => return reply_error(ctx, error::WRONG_ENTRY_TYPE),
            Lookup::Miss => {}
        }
    }
    s.ensure_normalized(question);
    if let Some(e) = miss_refused(ctx) {
        return reply_error(ctx, e);
    }
    // The answer will be stored under the cache's generation: the first miss makes one.
    if s.no_generation {
        match generation::ensure(ctx, a.cache).and_then(|_| resolve(ctx, a, s)) {
            Ok(_) => {}
            Err(e) => return reply_error(ctx, e),
        }
    } else {
        generation::touch(ctx, a.cache);
    }
    miss(ctx, a, question, &s.normalized, &s.key)
}

/// Why a miss cannot wait for the backend here, if it cannot: inside `MULTI` or a script, on
/// a replica, or out of memory (refused before paying for an answer that could not be
/// stored).
///
/// # Safety
/// `ctx` must be the running command's context.
unsafe fn miss_refused(ctx: *mut raw::RedisModuleCtx) -> Option<&'static str> {
    if super::cannot_block(ctx) {
        return Some(error::IN_MULTI);
    }
    let flags = raw::RedisModule_GetContextFlags.unwrap()(ctx) as u32;
    if flags & raw::REDISMODULE_CTX_FLAGS_SLAVE != 0 {
        return Some(error::ON_REPLICA);
    }
    if flags & raw::REDISMODULE_CTX_FLAGS_OOM != 0 {
        return Some(error::OOM);
    }
    None
}

/// Replies a hit: the answer, or with `WITHMETA` the answer and how it was served.
unsafe fn reply_hit(ctx: *mut raw::RedisModuleCtx, hit: &Hit, withmeta: bool) {
    let answer = hit.answer();
    if !withmeta {
        super::replied();
        raw::RedisModule_ReplyWithStringBuffer.unwrap()(ctx, answer.as_ptr().cast(), answer.len());
        return;
    }
    let now = raw::RedisModule_Milliseconds.unwrap()();
    let age = hit.created_ms.map_or(0, |c| (now - c).max(0));
    let served = if hit.stale { "stale" } else { "hit" };
    super::replied();
    blocked::reply_meta_cited(
        ctx,
        answer,
        served,
        age,
        hit.ttl_ms.unwrap_or(-1),
        hit.sources(),
    );
}

/// A stale entry was served: refresh it with one background call (single-flight), unless
/// this server cannot write now. If the refresh fails, the stale entry is served until its
/// grace period ends.
pub(crate) unsafe fn refresh_stale(
    ctx: *mut raw::RedisModuleCtx,
    a: &EntryArgs<'_>,
    question: &str,
    normalized: &str,
    key: &[u8],
    slot: Option<usize>,
) {
    stats::STALE.bump_main();
    if let Some(slot) = slot {
        stats::with_slot(&Context::new(ctx), slot, |c| c.stale += 1);
    }
    let flags = raw::RedisModule_GetContextFlags.unwrap()(ctx) as u32;
    if flags & (raw::REDISMODULE_CTX_FLAGS_SLAVE | raw::REDISMODULE_CTX_FLAGS_OOM) != 0 {
        return;
    }
    let mut job = make_job(ctx, a, question, normalized, key);
    job.background = true;
    // A background refresh re-embeds nothing: the entry keeps its vector.
    job.semantic = None;
    let max_inflight = config::MAX_INFLIGHT.get().max(1) as usize;
    let max_queue = config::MAX_QUEUE.get().max(0) as usize;
    worker::start_background(job, max_inflight, max_queue);
}

/// The backend call for a miss or a refresh, with everything copied from the settings.
pub(crate) unsafe fn make_job(
    ctx: *mut raw::RedisModuleCtx,
    a: &EntryArgs<'_>,
    question: &str,
    normalized: &str,
    key: &[u8],
) -> Job {
    let timeout_ms = config::TIMEOUT_MS.get();
    let (model, system, context_template) = config::with_strings(&Context::new(ctx), |cfg| {
        (
            a.model.unwrap_or(&cfg.model).to_string(),
            a.system.unwrap_or(&cfg.system_prompt).to_string(),
            if a.context().is_some() {
                cfg.context_template.clone()
            } else {
                String::new()
            },
        )
    });
    let db = raw::RedisModule_GetSelectedDb.unwrap()(ctx);
    let settings = config::call_settings(&Context::new(ctx));
    // The generation was just read for the key: this is the mirror's copy.
    let generation = generation::with_generation(ctx, a.cache, |g, _| g.to_vec()).ok();
    // An answer built on the app's context is not one for a paraphrase asked with another
    // (or none): such a call neither searches nor feeds the semantic tier.
    let semantic = if a.context().is_none() && a.semantic.unwrap_or_else(|| config::SEMANTIC.get())
    {
        generation.as_ref().map(|g| SemanticJob {
            settings: config::semantic_settings(&Context::new(ctx), &settings),
            scope: (
                db,
                a.cache.into(),
                semantic::scope_digest(&model, &system, g),
            ),
            search: !a.refresh,
        })
    } else {
        None
    };
    Job {
        db,
        cache: a.cache.to_vec(),
        key: key.to_vec(),
        request: Request {
            question: question.to_string(),
            model,
            system,
            cache: String::from_utf8_lossy(a.cache).into_owned(),
            normalized: normalized.to_string(),
            max_tokens: config::MAX_TOKENS.get().clamp(1, u32::MAX as i64) as u32,
            // Checked as UTF-8 when parsed.
            context: a
                .context()
                .map(|c| String::from_utf8_lossy(c).into_owned())
                .unwrap_or_default(),
            context_template,
        },
        sources: a
            .sources()
            .and_then(|ids| crate::sources::encode(ids.iter().copied()))
            .unwrap_or_default(),
        asked_us: entry::now_us(),
        ttl_secs: a.ttl.unwrap_or_else(|| config::TTL.get()),
        stale_secs: a.stale.unwrap_or_else(|| config::STALE_TTL.get()),
        background: false,
        cache_truncated: config::CACHE_TRUNCATED.get(),
        probe: None,
        generation: generation.unwrap_or_default(),
        deadline: Instant::now() + Duration::from_millis(timeout_ms.max(0) as u64),
        timeout_ms: timeout_ms.max(0) as u64,
        settings,
        semantic,
    }
}

/// Counts a hit, with what it saved: the tokens and backend time the entry cost.
pub(crate) fn count_hit(ctx: *mut raw::RedisModuleCtx, slot: Option<usize>, hit: &Hit) {
    stats::HITS.bump_main();
    stats::TOKENS_IN_SAVED.add_main(hit.tokens_in);
    stats::TOKENS_OUT_SAVED.add_main(hit.tokens_out);
    stats::BACKEND_MS_SAVED.add_main(hit.latency_ms);
    let Some(slot) = slot else { return };
    stats::with_slot(&Context::new(ctx), slot, |c| {
        c.hits += 1;
        c.tokens_in_saved += hit.tokens_in;
        c.tokens_out_saved += hit.tokens_out;
        c.backend_ms_saved += hit.latency_ms;
    });
}

/// The miss path (after [`miss_refused`]): block the caller on the key's flight.
unsafe fn miss(
    ctx: *mut raw::RedisModuleCtx,
    a: &EntryArgs<'_>,
    question: &str,
    normalized: &str,
    key: &[u8],
) -> c_int {
    // The job is built before blocking (nothing after the block may fail without a reply),
    // and for every miss: whether this caller leads is known only when it joins the flight,
    // atomically, below.
    let job = make_job(ctx, a, question, normalized, key);
    let (db, deadline) = (job.db, job.deadline);
    let Some(waiter) = Waiter::block(ctx, deadline, a.withmeta) else {
        return reply_error(ctx, &format!("ERR {}", error::INTERNAL));
    };
    stats::MISSES.bump_main();
    let joined = worker::join(db, key, waiter, a.refresh);
    stats::for_cache(&Context::new(ctx), a.cache, |c| {
        c.misses += 1;
        c.coalesced += u64::from(joined == Joined::Follower);
    });
    match joined {
        Joined::Leader => {
            let max_inflight = config::MAX_INFLIGHT.get().max(1) as usize;
            let max_queue = config::MAX_QUEUE.get().max(0) as usize;
            // Refusals (queue full, breaker open) answer the flight and are counted there.
            let _ = worker::start(job, max_inflight, max_queue);
        }
        Joined::Follower => stats::COALESCED.bump_main(),
    }
    raw::REDISMODULE_OK as c_int
}
