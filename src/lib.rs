//! redis-qa: an LLM answer cache inside Redis. This file only wires the module together:
//! configs, commands, the INFO section.

pub mod backend;
pub mod blocked;
pub mod commands;
pub mod config;
pub mod entry;
pub mod error;
pub mod flight;
pub mod generation;
pub mod keys;
pub mod mainthread;
pub mod normalize;
pub mod pool;
pub mod semantic;
pub mod sources;
pub mod stats;
pub mod streaming;
pub mod worker;

#[cfg(not(any(test, feature = "core-only")))]
mod module {
    use redis_module::configuration::ConfigurationFlags;
    use redis_module::{redis_module, Context, InfoContext, RedisResult, RedisString, Status};

    use crate::config::*;

    fn init(ctx: &Context, _args: &[RedisString]) -> Status {
        crate::mainthread::init(ctx);
        crate::semantic::init();
        crate::commands::register(ctx)
    }

    /// Unloading is refused: worker threads may still run module code (a write waiting out a
    /// pause, a call whose askers all timed out).
    fn deinit(ctx: &Context) -> Status {
        ctx.log_warning(
            "redis-qa: MODULE UNLOAD is not supported (worker threads may still be running)",
        );
        Status::Err
    }

    fn info(ctx: &InfoContext, for_crash_report: bool) {
        let _ = crate::commands::info::info(ctx, for_crash_report);
    }

    redis_module! {
        name: "qa",
        version: 1,
        allocator: (redis_module::alloc::RedisAlloc, redis_module::alloc::RedisAlloc),
        data_types: [],
        init: init,
        deinit: deinit,
        info: info,
        commands: [],
        event_handlers: [
            // Only generic (del, rename, move, restore...), expired and evicted events: Redis
            // makes a module context per subscribed event, so a write class here would tax every
            // write of every key. The module's own writes and generation changes reach the mirror
            // and the index directly (see generation.rs and semantic/upkeep.rs).
            [@GENERIC @EXPIRED @EVICTED: crate::generation::on_key_event],
        ],
        configurations: [
            i64: [
                [TTL.name, &TTL, TTL.default, TTL.min, TTL.max, ConfigurationFlags::DEFAULT, None],
                [STALE_TTL.name, &STALE_TTL, STALE_TTL.default, STALE_TTL.min, STALE_TTL.max, ConfigurationFlags::DEFAULT, None],
                [TIMEOUT_MS.name, &TIMEOUT_MS, TIMEOUT_MS.default, TIMEOUT_MS.min, TIMEOUT_MS.max, ConfigurationFlags::DEFAULT, None],
                [CONNECT_TIMEOUT_MS.name, &CONNECT_TIMEOUT_MS, CONNECT_TIMEOUT_MS.default, CONNECT_TIMEOUT_MS.min, CONNECT_TIMEOUT_MS.max, ConfigurationFlags::DEFAULT, None],
                [MAX_INFLIGHT.name, &MAX_INFLIGHT, MAX_INFLIGHT.default, MAX_INFLIGHT.min, MAX_INFLIGHT.max, ConfigurationFlags::DEFAULT, None],
                [MAX_QUEUE.name, &MAX_QUEUE, MAX_QUEUE.default, MAX_QUEUE.min, MAX_QUEUE.max, ConfigurationFlags::DEFAULT, None],
                [MAX_QUESTION_BYTES.name, &MAX_QUESTION_BYTES, MAX_QUESTION_BYTES.default, MAX_QUESTION_BYTES.min, MAX_QUESTION_BYTES.max, ConfigurationFlags::DEFAULT, None],
                [MAX_ANSWER_BYTES.name, &MAX_ANSWER_BYTES, MAX_ANSWER_BYTES.default, MAX_ANSWER_BYTES.min, MAX_ANSWER_BYTES.max, ConfigurationFlags::DEFAULT, None],
                [MAX_TOKENS.name, &MAX_TOKENS, MAX_TOKENS.default, MAX_TOKENS.min, MAX_TOKENS.max, ConfigurationFlags::DEFAULT, None],
                [BACKEND_RETRIES.name, &BACKEND_RETRIES, BACKEND_RETRIES.default, BACKEND_RETRIES.min, BACKEND_RETRIES.max, ConfigurationFlags::DEFAULT, None],
                [BREAKER_FAILURES.name, &BREAKER_FAILURES, BREAKER_FAILURES.default, BREAKER_FAILURES.min, BREAKER_FAILURES.max, ConfigurationFlags::DEFAULT, None],
                [BREAKER_COOLDOWN_MS.name, &BREAKER_COOLDOWN_MS, BREAKER_COOLDOWN_MS.default, BREAKER_COOLDOWN_MS.min, BREAKER_COOLDOWN_MS.max, ConfigurationFlags::DEFAULT, None],
                [STREAM_BATCH_MS.name, &STREAM_BATCH_MS, STREAM_BATCH_MS.default, STREAM_BATCH_MS.min, STREAM_BATCH_MS.max, ConfigurationFlags::DEFAULT, None],
                [STREAM_BATCH_BYTES.name, &STREAM_BATCH_BYTES, STREAM_BATCH_BYTES.default, STREAM_BATCH_BYTES.min, STREAM_BATCH_BYTES.max, ConfigurationFlags::DEFAULT, None],
                [STREAM_LINGER.name, &STREAM_LINGER, STREAM_LINGER.default, STREAM_LINGER.min, STREAM_LINGER.max, ConfigurationFlags::DEFAULT, None],
                [MAX_CONTEXT_BYTES.name, &MAX_CONTEXT_BYTES, MAX_CONTEXT_BYTES.default, MAX_CONTEXT_BYTES.min, MAX_CONTEXT_BYTES.max, ConfigurationFlags::DEFAULT, None],
            ],
            string: [
                [BACKEND_URL.name, &BACKEND_URL, BACKEND_URL.default, ConfigurationFlags::DEFAULT, None],
                [MODEL.name, &MODEL, MODEL.default, ConfigurationFlags::DEFAULT, None],
                [SYSTEM_PROMPT.name, &SYSTEM_PROMPT, SYSTEM_PROMPT.default, ConfigurationFlags::DEFAULT, None],
                [API_KEY_FILE.name, &API_KEY_FILE, API_KEY_FILE.default, ConfigurationFlags::DEFAULT, None],
                [PRICE_IN.name, &PRICE_IN, PRICE_IN.default, ConfigurationFlags::DEFAULT, None],
                [PRICE_OUT.name, &PRICE_OUT, PRICE_OUT.default, ConfigurationFlags::DEFAULT, None],
                [BACKEND_CA_FILE.name, &BACKEND_CA_FILE, BACKEND_CA_FILE.default, ConfigurationFlags::DEFAULT, None],
                [EMBED_URL.name, &EMBED_URL, EMBED_URL.default, ConfigurationFlags::DEFAULT, None],
                [EMBED_MODEL.name, &EMBED_MODEL, EMBED_MODEL.default, ConfigurationFlags::DEFAULT, None],
                [SEMANTIC_THRESHOLD.name, &SEMANTIC_THRESHOLD, SEMANTIC_THRESHOLD.default, ConfigurationFlags::DEFAULT, None],
                [RERANK_URL.name, &RERANK_URL, RERANK_URL.default, ConfigurationFlags::DEFAULT, None],
                [RERANK_MODEL.name, &RERANK_MODEL, RERANK_MODEL.default, ConfigurationFlags::DEFAULT, None],
                [SEMANTIC_VERIFY_THRESHOLD.name, &SEMANTIC_VERIFY_THRESHOLD, SEMANTIC_VERIFY_THRESHOLD.default, ConfigurationFlags::DEFAULT, None],
                [SEMANTIC_AUDIT_RATE.name, &SEMANTIC_AUDIT_RATE, SEMANTIC_AUDIT_RATE.default, ConfigurationFlags::DEFAULT, None],
                [SEMANTIC_TARGET_PRECISION.name, &SEMANTIC_TARGET_PRECISION, SEMANTIC_TARGET_PRECISION.default, ConfigurationFlags::DEFAULT, None],
                [CONTEXT_TEMPLATE.name, &CONTEXT_TEMPLATE, CONTEXT_TEMPLATE.default, ConfigurationFlags::DEFAULT, None],
            ],
            bool: [
                [CACHE_TRUNCATED.name, &CACHE_TRUNCATED, CACHE_TRUNCATED.default, ConfigurationFlags::DEFAULT, None],
                [SEMANTIC.name, &SEMANTIC, SEMANTIC.default, ConfigurationFlags::DEFAULT, None],
                [SEMANTIC_GUARDS.name, &SEMANTIC_GUARDS, SEMANTIC_GUARDS.default, ConfigurationFlags::DEFAULT, None],
                [SEMANTIC_GRAPH_FILE.name, &SEMANTIC_GRAPH_FILE, SEMANTIC_GRAPH_FILE.default, ConfigurationFlags::DEFAULT, None],
            ],
            enum: [
                [BACKEND_FORMAT.name, &BACKEND_FORMAT, BACKEND_FORMAT.default, ConfigurationFlags::DEFAULT, None],
                [SEMANTIC_VERIFY.name, &SEMANTIC_VERIFY, SEMANTIC_VERIFY.default, ConfigurationFlags::DEFAULT, None],
            ],
            module_args_as_configuration: true,
        ]
    }
}
