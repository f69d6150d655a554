//! `QA.AUDIT`, and the verifier and audit figures `QA.STATS` adds.

use std::os::raw::c_int;

use redis_module::{raw, Context};

use super::{guarded, reply_error, Args};
use crate::semantic::audit;
use crate::{config, error, stats};

const OK: c_int = raw::REDISMODULE_OK as c_int;

unsafe fn reply_str(ctx: *mut raw::RedisModuleCtx, s: &[u8]) {
    raw::RedisModule_ReplyWithStringBuffer.unwrap()(ctx, s.as_ptr().cast(), s.len());
}

/// `QA.AUDIT <cache> [COUNT <n>]`: the latest audited semantic hits of `cache` whose fresh
/// answer disagreed with the served one, newest first (at most `n`, default 10, at most
/// 32 kept): an array of maps `query`, `matched`, `similarity`, `served`, `fresh`, `at_ms`.
pub(crate) extern "C" fn qa_audit(
    ctx: *mut raw::RedisModuleCtx,
    argv: *mut *mut raw::RedisModuleString,
    argc: c_int,
) -> c_int {
    guarded(ctx, || unsafe {
        let args = Args::new(argv, argc);
        let (cache, count) = match args.cache_and_option(b"COUNT") {
            Ok(parsed) => parsed,
            Err(e) => return reply_error(ctx, e),
        };
        let count = match count.map(parse_count) {
            None => 10,
            Some(Some(n)) => n,
            Some(None) => return reply_error(ctx, error::AUDIT_COUNT),
        };
        let latest = audit::of(cache).map(|a| a.latest).unwrap_or_default();
        let n = latest.len().min(count);
        super::replied();
        raw::RedisModule_ReplyWithArray.unwrap()(ctx, n as _);
        for d in latest.iter().take(n) {
            raw::reply_with_map(ctx, 6);
            for (name, value) in [
                ("query", d.query.as_str()),
                ("matched", d.matched.as_str()),
                ("similarity", &format!("{:.4}", d.similarity)),
                ("served", d.served.as_str()),
                ("fresh", d.fresh.as_str()),
            ] {
                reply_str(ctx, name.as_bytes());
                reply_str(ctx, value.as_bytes());
            }
            reply_str(ctx, b"at_ms");
            raw::RedisModule_ReplyWithLongLong.unwrap()(ctx, d.at_ms);
        }
        OK
    })
}

/// A `COUNT`: an integer from 1 to `audit::RING`.
fn parse_count(b: &[u8]) -> Option<usize> {
    let s = std::str::from_utf8(b).ok()?;
    if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    s.parse::<usize>()
        .ok()
        .filter(|n| (1..=audit::RING).contains(n))
}

/// A value `QA.STATS` replies.
pub enum Figure {
    Int(u64),
    Text(String),
}

/// The audit figures of `cache` (else of every cache), and for the global figures the
/// verifier's and the audit's own calls, tokens and cost (`money` prices per million
/// tokens in and out).
pub fn stats_figures(
    ctx: &Context,
    cache: Option<&[u8]>,
    prices: (f64, f64),
) -> Vec<(&'static str, Figure)> {
    let (audited, agreed, disagreed) = match cache {
        Some(c) => audit::of(c).map_or((0, 0, 0), |a| (a.audited, a.agreed, a.disagreed)),
        None => audit::totals(),
    };
    let (low, high) = audit::wilson(agreed, audited);
    let dec = |x: f64| Figure::Text(format!("{x:.4}"));
    let mut out = vec![
        ("audited", Figure::Int(audited)),
        ("audit_agreed", Figure::Int(agreed)),
        ("audit_disagreed", Figure::Int(disagreed)),
        ("audit_precision", dec(stats::precision(agreed, audited))),
        ("audit_precision_low", dec(low)),
        ("audit_precision_high", dec(high)),
    ];
    match cache {
        Some(c) => {
            let s = config::semantic_settings(ctx, &config::call_settings(ctx));
            let t = audit::threshold(c, s.threshold, s.target_precision);
            out.push(("semantic_threshold", Figure::Text(format!("{t:.4}"))));
        }
        None => {
            let cost = |i: u64, o: u64| {
                Figure::Text(format!(
                    "{:.6}",
                    (i as f64 * prices.0 + o as f64 * prices.1) / 1e6
                ))
            };
            let (vi, vo) = (
                stats::VERIFY_TOKENS_IN.get(),
                stats::VERIFY_TOKENS_OUT.get(),
            );
            let (ai, ao) = (stats::AUDIT_TOKENS_IN.get(), stats::AUDIT_TOKENS_OUT.get());
            out.extend([
                ("verify_calls", Figure::Int(stats::VERIFY_CALLS.get())),
                ("verify_accepted", Figure::Int(stats::VERIFY_ACCEPTED.get())),
                ("verify_refused", Figure::Int(stats::VERIFY_REFUSED.get())),
                ("verify_errors", Figure::Int(stats::VERIFY_ERRORS.get())),
                ("verify_tokens_in", Figure::Int(vi)),
                ("verify_tokens_out", Figure::Int(vo)),
                ("verify_cost", cost(vi, vo)),
                ("audit_calls", Figure::Int(stats::AUDIT_CALLS.get())),
                ("audit_tokens_in", Figure::Int(ai)),
                ("audit_tokens_out", Figure::Int(ao)),
                ("audit_cost", cost(ai, ao)),
            ]);
        }
    }
    out
}

/// Replies `figures` as map entries (the caller counted them in the map's length).
///
/// # Safety
/// Main thread, inside a map reply.
pub unsafe fn reply_figures(ctx: *mut raw::RedisModuleCtx, figures: &[(&str, Figure)]) {
    for (name, f) in figures {
        reply_str(ctx, name.as_bytes());
        match f {
            Figure::Int(v) => {
                raw::RedisModule_ReplyWithLongLong.unwrap()(ctx, *v as i64);
            }
            Figure::Text(t) => reply_str(ctx, t.as_bytes()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts() {
        // (argument, parsed)
        let rows: &[(&[u8], Option<usize>)] = &[
            (b"1", Some(1)),
            (b"32", Some(32)),
            (b"0", None),
            (b"33", None),
            (b"-1", None),
            (b"", None),
            (b"1x", None),
            (b"+3", None),
            (b"\xff", None),
            (b"99999999999999999999999", None),
        ];
        for (arg, want) in rows {
            assert_eq!(parse_count(arg), *want, "{arg:?}");
        }
    }
}
