//! The figures, rendered: the `# qa` INFO section, `QA.STATS` and `QA.RESETSTATS`. The
//! counters themselves live in `crate::stats` (a leaf every layer writes to); this module
//! gathers them together with what each part reports of its own state: the worker pool and
//! the circuit breaker (`worker`), the semantic index (`semantic::upkeep`), the failure kinds
//! (`backend`) and the guards (`semantic::guard`).

use std::os::raw::c_int;

use redis_module::{raw, Context, InfoContext, RedisResult};

use super::{args, guarded, reply_error, Args};
use crate::backend::Kind;
use crate::stats::{self, CacheStats, CounterIndex};
use crate::{config, error, semantic, worker};

const OK: c_int = raw::REDISMODULE_OK as c_int;

unsafe fn reply_str(ctx: *mut raw::RedisModuleCtx, s: &[u8]) {
    raw::RedisModule_ReplyWithStringBuffer.unwrap()(ctx, s.as_ptr().cast(), s.len());
}

/// Writes the `# qa` INFO section. For a crash report only the counters (atomics) are read:
/// the crashing thread may hold any of the locks behind the gauges (pool, flights, breaker,
/// latency windows), which then read as 0.
pub fn info(ctx: &InfoContext, for_crash_report: bool) -> RedisResult<()> {
    let gauges = !for_crash_report;
    let (running, queued) = if gauges { worker::load() } else { (0, 0) };
    let (flights, waiting) = if gauges { worker::flights() } else { (0, 0) };
    let (p50, p99) = if gauges {
        stats::latency_percentiles()
    } else {
        (0, 0)
    };
    let mut b = ctx
        .builder()
        .add_section("")
        .field("hits", stats::HITS.get())?
        .field("misses", stats::MISSES.get())?
        .field("coalesced", stats::COALESCED.get())?
        .field("stale", stats::STALE.get())?
        .field("backend_calls", stats::BACKEND_CALLS.get())?
        .field("backend_errors", stats::BACKEND_ERRORS.get())?
        .field("client_timeouts", stats::CLIENT_TIMEOUTS.get())?
        .field("refused_busy", stats::REFUSED_BUSY.get())?
        .field("stored", stats::STORED.get())?
        .field("store_errors", stats::STORE_ERRORS.get())?
        .field("source_sets_evicted", stats::SOURCE_SETS_EVICTED.get())?
        .field("tokens_in_spent", stats::TOKENS_IN_SPENT.get())?
        .field("tokens_out_spent", stats::TOKENS_OUT_SPENT.get())?
        .field("tokens_in_saved", stats::TOKENS_IN_SAVED.get())?
        .field("tokens_out_saved", stats::TOKENS_OUT_SAVED.get())?
        .field("backend_ms_saved", stats::BACKEND_MS_SAVED.get())?
        .field("backend_latency_p50_ms", p50)?
        .field("backend_latency_p99_ms", p99)?
        .field("inflight", running as u64)?
        .field("queued", queued as u64)?
        .field("flights", flights as u64)?
        .field("waiting_clients", waiting as u64)?
        .field("backend_retries", stats::BACKEND_RETRIES.get())?
        .field("breaker_open", (gauges && worker::breaker_open()) as u64)?
        .field("breaker_opened", stats::BREAKER_OPENED.get())?
        .field("breaker_rejected", stats::BREAKER_REJECTED.get())?
        .field("truncated", stats::TRUNCATED.get())?
        .field("not_stored", stats::NOT_STORED.get())?
        .field("keyspace_events", stats::KEYSPACE_EVENTS.get())?
        .field(
            "mirrored_caches",
            crate::generation::MIRRORED.load(std::sync::atomic::Ordering::Relaxed) as u64,
        )?;
    for kind in Kind::ALL {
        let n = stats::ERRORS_BY_KIND
            .get(kind.counter_index())
            .map_or(0, stats::Counter::get);
        b = b.field(kind.info_field(), n)?;
    }
    let (entries, raw_bytes, index_bytes) = semantic::upkeep::size();
    let [restored, unclaimed, restore_ms, checkpoints, checkpoint_ms, checkpoint_bytes] =
        semantic::upkeep::checkpoint_stats();
    let (search_p50, search_p99) = if gauges {
        stats::search_percentiles()
    } else {
        (0, 0)
    };
    b = b
        .field("semantic_hits", stats::SEMANTIC_HITS.get())?
        .field("semantic_no_match", stats::SEMANTIC_NO_MATCH.get())?
        .field("semantic_stale_index", stats::SEMANTIC_STALE_INDEX.get())?
        .field("semantic_index_busy", stats::SEMANTIC_INDEX_BUSY.get())?
        .field("embed_calls", stats::EMBED_CALLS.get())?
        .field("embed_errors", stats::EMBED_ERRORS.get())?
        .field("embed_tokens", stats::EMBED_TOKENS.get())?
        .field("semantic_index_entries", entries as u64)?
        .field("semantic_index_vector_bytes", raw_bytes as u64)?
        .field("semantic_index_bytes", index_bytes as u64)?
        .field(
            "semantic_index_graph_pending",
            semantic::upkeep::graph_pending() as u64,
        )?
        .field(
            "semantic_rebuild_step_max_us",
            semantic::upkeep::rebuild_step_max_us(),
        )?
        .field("semantic_rebuilds", semantic::upkeep::rebuilds())?
        .field("semantic_graph_restored", restored)?
        .field("semantic_graph_restored_unclaimed", unclaimed)?
        .field("semantic_graph_restore_ms", restore_ms)?
        .field("semantic_graph_checkpoints", checkpoints)?
        .field("semantic_graph_checkpoint_ms", checkpoint_ms)?
        .field("semantic_graph_checkpoint_bytes", checkpoint_bytes)?
        .field("semantic_search_p50_us", search_p50)?
        .field("semantic_search_p99_us", search_p99)?;
    let (audited, agreed, disagreed) = if gauges {
        crate::semantic::audit::totals()
    } else {
        (0, 0, 0)
    };
    let (low, high) = crate::semantic::audit::wilson(agreed, audited);
    b = b
        .field("verify_calls", stats::VERIFY_CALLS.get())?
        .field("verify_accepted", stats::VERIFY_ACCEPTED.get())?
        .field("verify_refused", stats::VERIFY_REFUSED.get())?
        .field("verify_errors", stats::VERIFY_ERRORS.get())?
        .field("verify_unsupported", stats::VERIFY_UNSUPPORTED.get())?
        .field("verify_tokens_in", stats::VERIFY_TOKENS_IN.get())?
        .field("verify_tokens_out", stats::VERIFY_TOKENS_OUT.get())?
        .field("audit_started", stats::AUDIT_STARTED.get())?
        .field("audit_skipped", stats::AUDIT_SKIPPED.get())?
        .field("audit_errors", stats::AUDIT_ERRORS.get())?
        .field("audit_calls", stats::AUDIT_CALLS.get())?
        .field("audit_tokens_in", stats::AUDIT_TOKENS_IN.get())?
        .field("audit_tokens_out", stats::AUDIT_TOKENS_OUT.get())?
        .field("audited", audited)?
        .field("audit_agreed", agreed)?
        .field("audit_disagreed", disagreed)?
        .field(
            "audit_precision",
            format!("{:.4}", stats::precision(agreed, audited)).as_str(),
        )?
        .field("audit_precision_low", format!("{low:.4}").as_str())?
        .field("audit_precision_high", format!("{high:.4}").as_str())?
        .field("threshold_raised", stats::THRESHOLD_RAISED.get())?
        .field("threshold_lowered", stats::THRESHOLD_LOWERED.get())?;
    for r in semantic::guard::ALL {
        let n = stats::GUARD_REFUSED
            .get(r.counter_index())
            .map_or(0, stats::Counter::get);
        b = b.field(&format!("guard_refused_{}", r.as_str()), n)?;
    }
    b.build_section()?.build_info()?;
    Ok(())
}

/// The optional cache name of `QA.STATS` / `QA.RESETSTATS`: `Ok(None)` for all caches, or
/// the error to reply.
fn optional_cache<'a>(
    args: &'a Args,
    argc: c_int,
    arity_error: &'static str,
) -> Result<Option<&'a [u8]>, &'static str> {
    if argc > 2 {
        return Err(arity_error);
    }
    if argc < 2 {
        return Ok(None);
    }
    let cache = args.get(1);
    args::cache_name(cache)?;
    Ok(Some(cache))
}

/// `QA.STATS [<cache>]`: a map of figures, global or for one cache (zeros for a cache not
/// seen since the module loaded).
pub(crate) extern "C" fn qa_stats(
    ctx: *mut raw::RedisModuleCtx,
    argv: *mut *mut raw::RedisModuleString,
    argc: c_int,
) -> c_int {
    guarded(ctx, || unsafe {
        let args = Args::new(argv, argc);
        let cache = match optional_cache(&args, argc, error::STATS_ARITY) {
            Ok(c) => c,
            Err(e) => return reply_error(ctx, e),
        };
        let context = Context::new(ctx);
        let (figures, tracked) = match cache {
            Some(cache) => (
                stats::cache(&context, cache).unwrap_or_default(),
                Some(stats::slot(&context, cache).is_some()),
            ),
            None => (stats::global(), None),
        };
        let (price_in, price_out) = config::with_strings(&context, |c| c.prices());
        let more = super::audit::stats_figures(&context, cache, (price_in, price_out));
        reply_stats(ctx, &figures, tracked, price_in, price_out, &more);
        OK
    })
}

/// `QA.RESETSTATS [<cache>]`: zeroes the counters of one cache, or (without a cache) every
/// counter: the global ones, every cache's and the latency windows. Gauges (calls in
/// flight, queue, breaker state, index size) describe the present and are not counters.
/// Replies `OK`.
pub(crate) extern "C" fn qa_resetstats(
    ctx: *mut raw::RedisModuleCtx,
    argv: *mut *mut raw::RedisModuleString,
    argc: c_int,
) -> c_int {
    guarded(ctx, || unsafe {
        let args = Args::new(argv, argc);
        let cache = match optional_cache(&args, argc, error::RESETSTATS_ARITY) {
            Ok(c) => c,
            Err(e) => return reply_error(ctx, e),
        };
        let context = Context::new(ctx);
        match cache {
            Some(cache) => stats::reset_cache(&context, cache),
            None => stats::reset_all(&context),
        }
        super::replied();
        raw::RedisModule_ReplyWithSimpleString.unwrap()(ctx, c"OK".as_ptr());
        OK
    })
}

/// `tracked`: for one cache, whether it has figures of its own (see `stats::MAX_CACHES`);
/// `None` for the global figures.
unsafe fn reply_stats(
    ctx: *mut raw::RedisModuleCtx,
    f: &CacheStats,
    tracked: Option<bool>,
    price_in: f64,
    price_out: f64,
    figures: &[(&str, super::audit::Figure)],
) {
    let global = tracked.is_none();
    let ints: [(&str, u64); 12] = [
        ("hits", f.hits),
        ("misses", f.misses),
        ("coalesced", f.coalesced),
        ("stale", f.stale),
        ("backend_calls", f.backend_calls),
        ("backend_errors", f.backend_errors),
        ("tokens_in_spent", f.tokens_in_spent),
        ("tokens_out_spent", f.tokens_out_spent),
        ("tokens_in_saved", f.tokens_in_saved),
        ("tokens_out_saved", f.tokens_out_saved),
        ("backend_ms_saved", f.backend_ms_saved),
        ("semantic_hits", f.semantic_hits),
    ];
    let (p50, p99) = stats::latency_percentiles();
    let (running, queued) = worker::load();
    let globals: [(&str, u64); 11] = [
        ("client_timeouts", stats::CLIENT_TIMEOUTS.get()),
        ("refused_busy", stats::REFUSED_BUSY.get()),
        ("inflight", running as u64),
        ("queued", queued as u64),
        ("backend_latency_p50_ms", p50),
        ("backend_latency_p99_ms", p99),
        ("semantic_no_match", stats::SEMANTIC_NO_MATCH.get()),
        ("guard_refusals", stats::guard_refusals()),
        ("embed_calls", stats::EMBED_CALLS.get()),
        ("embed_errors", stats::EMBED_ERRORS.get()),
        ("embed_tokens", stats::EMBED_TOKENS.get()),
    ];
    let extra = if global { globals.len() } else { 0 };
    super::replied();
    raw::reply_with_map(
        ctx,
        (ints.len() + 1 + extra + usize::from(!global) + figures.len()) as _,
    );
    for (name, v) in ints.iter().chain(globals.iter().take(extra)) {
        reply_str(ctx, name.as_bytes());
        raw::RedisModule_ReplyWithLongLong.unwrap()(ctx, *v as i64);
    }
    // Money as a decimal string (RESP2 has no double), in the currency of the prices.
    reply_str(ctx, b"money_saved");
    reply_str(
        ctx,
        format!("{:.6}", stats::money_saved(f, price_in, price_out)).as_bytes(),
    );
    super::audit::reply_figures(ctx, figures);
    if let Some(tracked) = tracked {
        reply_str(ctx, b"tracked");
        raw::RedisModule_ReplyWithLongLong.unwrap()(ctx, i64::from(tracked));
    }
}
