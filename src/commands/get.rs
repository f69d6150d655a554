//! `QA.GET <cache> <question> [TTL <seconds>] [MODEL <name>] [SYSTEM <prompt>] [REFRESH]`

use std::cell::RefCell;
use std::os::raw::c_int;
use std::time::{Duration, Instant};

use redis_module::{raw, Context};

use super::{guarded, reply_error, Args};
use crate::backend::Request;
use crate::blocked::Waiter;
use crate::config::{self, MAX_TTL_SECS};
use crate::entry::{self, Lookup};
use crate::error;
use crate::flight::Joined;
use crate::keys::{self, CacheNameError};
use crate::normalize;
use crate::stats;
use crate::worker::{self, Job};

/// The parsed arguments of `QA.GET`.
#[derive(Debug, PartialEq, Eq)]
pub struct GetArgs<'a> {
    pub cache: &'a [u8],
    pub question: &'a [u8],
    pub ttl: Option<i64>,
    pub model: Option<&'a str>,
    pub system: Option<&'a str>,
    pub refresh: bool,
}

/// Parses everything after the command name. Pure: all checks that need no config.
pub fn parse<'a>(args: &[&'a [u8]]) -> Result<GetArgs<'a>, &'static str> {
    let [cache, question, rest @ ..] = args else {
        return Err(error::SYNTAX);
    };
    let mut out = GetArgs {
        cache,
        question,
        ttl: None,
        model: None,
        system: None,
        refresh: false,
    };
    let mut i = 0;
    while i < rest.len() {
        let opt = rest[i];
        let value = rest.get(i + 1).copied();
        if opt.eq_ignore_ascii_case(b"REFRESH") {
            if out.refresh {
                return Err(error::OPTION_TWICE);
            }
            out.refresh = true;
            i += 1;
            continue;
        }
        let is = |name: &[u8]| opt.eq_ignore_ascii_case(name);
        if !(is(b"TTL") || is(b"MODEL") || is(b"SYSTEM")) {
            return Err(error::UNKNOWN_OPTION);
        }
        let value = value.ok_or(error::OPTION_VALUE)?;
        if is(b"TTL") {
            if out.ttl.is_some() {
                return Err(error::OPTION_TWICE);
            }
            out.ttl = Some(parse_ttl(value).ok_or(error::TTL_RANGE)?);
        } else if is(b"MODEL") {
            if out.model.is_some() {
                return Err(error::OPTION_TWICE);
            }
            let m = std::str::from_utf8(value).map_err(|_| error::MODEL_INVALID)?;
            if !config::valid_model(m) {
                return Err(error::MODEL_INVALID);
            }
            out.model = Some(m);
        } else {
            if out.system.is_some() {
                return Err(error::OPTION_TWICE);
            }
            let s = std::str::from_utf8(value).map_err(|_| error::SYSTEM_INVALID)?;
            if !config::valid_system(s) {
                return Err(error::SYSTEM_INVALID);
            }
            out.system = Some(s);
        }
        i += 2;
    }
    match keys::validate_cache_name(cache) {
        Ok(()) => {}
        Err(CacheNameError::Empty) => return Err(error::CACHE_EMPTY),
        Err(CacheNameError::TooLong) => return Err(error::CACHE_TOO_LONG),
        Err(CacheNameError::Brace) => return Err(error::CACHE_BRACE),
    }
    Ok(out)
}

/// Seconds, as plain decimal digits (no sign, no spaces), 1 to [`MAX_TTL_SECS`].
fn parse_ttl(v: &[u8]) -> Option<i64> {
    if v.is_empty() || v.len() > 10 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: i64 = std::str::from_utf8(v).ok()?.parse().ok()?;
    (1..=MAX_TTL_SECS).contains(&n).then_some(n)
}

/// Checks the question against the size limit and decodes it.
pub fn question_str(q: &[u8], max_bytes: usize) -> Result<&str, &'static str> {
    if q.len() > max_bytes {
        return Err(error::QUESTION_TOO_LONG);
    }
    std::str::from_utf8(q).map_err(|_| error::QUESTION_UTF8)
}

/// Scratch buffers reused by every call on the main thread, so a hit allocates nothing of ours.
struct Scratch {
    normalized: String,
    key: Vec<u8>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = const {
        RefCell::new(Scratch { normalized: String::new(), key: Vec::new() })
    };
}

pub(crate) extern "C" fn qa_get(
    ctx: *mut raw::RedisModuleCtx,
    argv: *mut *mut raw::RedisModuleString,
    argc: c_int,
) -> c_int {
    guarded(ctx, || {
        // SAFETY: Redis passes the running command's arguments.
        let args = unsafe { Args::new(argv, argc) };
        args.with_slices(|a| match parse(a) {
            Ok(parsed) => SCRATCH.with(|s| match s.try_borrow_mut() {
                Ok(mut scratch) => unsafe { get(ctx, &parsed, &mut scratch) },
                Err(_) => unsafe { reply_error(ctx, &format!("ERR {}", error::INTERNAL)) },
            }),
            Err(e) => unsafe { reply_error(ctx, e) },
        })
    })
}

/// # Safety
/// `ctx` must be the running command's context, on the main thread.
unsafe fn get(ctx: *mut raw::RedisModuleCtx, a: &GetArgs<'_>, s: &mut Scratch) -> c_int {
    let max_q = config::MAX_QUESTION_BYTES.get().max(0) as usize;
    let question = match question_str(a.question, max_q) {
        Ok(q) => q,
        Err(e) => return reply_error(ctx, e),
    };
    normalize::normalize_into(question, &mut s.normalized);
    if s.normalized.is_empty() {
        return reply_error(ctx, error::QUESTION_EMPTY);
    }
    s.key.clear();
    config::with_strings(&Context::new(ctx), |cfg| match (a.model, a.system) {
        (None, None) => {
            keys::entry_key_into(&cfg.default_prefix, a.cache, &s.normalized, &mut s.key)
        }
        (m, sys) => {
            let prefix =
                keys::prefix_state(m.unwrap_or(&cfg.model), sys.unwrap_or(&cfg.system_prompt));
            keys::entry_key_into(&prefix, a.cache, &s.normalized, &mut s.key);
        }
    });
    if !a.refresh {
        match entry::reply_if_hit(ctx, &s.key) {
            Lookup::Replied => {
                stats::HITS.bump_main();
                return raw::REDISMODULE_OK as c_int;
            }
            Lookup::WrongType => return reply_error(ctx, error::WRONG_ENTRY_TYPE),
            Lookup::Miss => {}
        }
    }
    miss(ctx, a, question, &s.normalized, &s.key)
}

/// The miss path: refuse what cannot wait, else block the caller on the key's flight.
unsafe fn miss(
    ctx: *mut raw::RedisModuleCtx,
    a: &GetArgs<'_>,
    question: &str,
    normalized: &str,
    key: &[u8],
) -> c_int {
    let flags = raw::RedisModule_GetContextFlags.unwrap()(ctx) as u32;
    if flags
        & (raw::REDISMODULE_CTX_FLAGS_MULTI
            | raw::REDISMODULE_CTX_FLAGS_LUA
            | raw::REDISMODULE_CTX_FLAGS_DENY_BLOCKING)
        != 0
    {
        return reply_error(ctx, error::IN_MULTI);
    }
    if flags & raw::REDISMODULE_CTX_FLAGS_SLAVE != 0 {
        return reply_error(ctx, error::ON_REPLICA);
    }
    // Refuse before paying for an answer that could not be stored.
    if flags & raw::REDISMODULE_CTX_FLAGS_OOM != 0 {
        return reply_error(ctx, error::OOM);
    }
    let timeout_ms = config::TIMEOUT_MS.get();
    let deadline = Instant::now() + Duration::from_millis(timeout_ms.max(0) as u64);
    // The job is built before blocking (nothing after the block may fail without a reply),
    // and for every miss: whether this caller leads is known only when it joins the flight,
    // atomically, below.
    let (model, system) = config::with_strings(&Context::new(ctx), |cfg| {
        (
            a.model.unwrap_or(&cfg.model).to_string(),
            a.system.unwrap_or(&cfg.system_prompt).to_string(),
        )
    });
    let job = Job {
        key: key.to_vec(),
        request: Request {
            question: question.to_string(),
            model,
            system,
            cache: String::from_utf8_lossy(a.cache).into_owned(),
            normalized: normalized.to_string(),
            max_tokens: config::MAX_TOKENS.get().clamp(1, u32::MAX as i64) as u32,
        },
        ttl_secs: a.ttl.unwrap_or_else(|| config::TTL.get()),
        deadline,
        timeout_ms: timeout_ms as u64,
        settings: config::call_settings(&Context::new(ctx)),
        cache_truncated: config::CACHE_TRUNCATED.get(),
        probe: false,
    };
    let Some(waiter) = Waiter::block(ctx, deadline) else {
        return reply_error(ctx, &format!("ERR {}", error::INTERNAL));
    };
    stats::MISSES.bump_main();
    match worker::join(key, waiter) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<GetArgs<'static>, &'static str> {
        let v: Vec<&'static [u8]> = args
            .iter()
            .map(|s| &*Box::leak(s.as_bytes().to_vec().into_boxed_slice()))
            .collect();
        parse(Box::leak(v.into_boxed_slice()))
    }

    #[test]
    fn parses_options_case_insensitively() {
        let a = p(&[
            "faq", "q", "ttl", "60", "Model", "m1", "SYSTEM", "be brief", "refresh",
        ])
        .unwrap();
        assert_eq!(
            a,
            GetArgs {
                cache: b"faq",
                question: b"q",
                ttl: Some(60),
                model: Some("m1"),
                system: Some("be brief"),
                refresh: true,
            }
        );
        assert_eq!(p(&["faq", "q"]).unwrap().ttl, None);
    }

    /// (arguments, expected error)
    #[test]
    fn errors() {
        let rows: &[(&[&str], &str)] = &[
            (&["faq"], error::SYNTAX),
            (&["faq", "q", "TTL"], error::OPTION_VALUE),
            (&["faq", "q", "TTL", "0"], error::TTL_RANGE),
            (&["faq", "q", "TTL", "-5"], error::TTL_RANGE),
            (&["faq", "q", "TTL", "+5"], error::TTL_RANGE),
            (&["faq", "q", "TTL", " 5"], error::TTL_RANGE),
            (&["faq", "q", "TTL", "1.5"], error::TTL_RANGE),
            (&["faq", "q", "TTL", "abc"], error::TTL_RANGE),
            (&["faq", "q", "TTL", "315360001"], error::TTL_RANGE),
            (
                &["faq", "q", "TTL", "99999999999999999999"],
                error::TTL_RANGE,
            ),
            (&["faq", "q", "TTL", "5", "TTL", "6"], error::OPTION_TWICE),
            (&["faq", "q", "REFRESH", "REFRESH"], error::OPTION_TWICE),
            (
                &["faq", "q", "MODEL", "a", "MODEL", "b"],
                error::OPTION_TWICE,
            ),
            (
                &["faq", "q", "SYSTEM", "a", "SYSTEM", "b"],
                error::OPTION_TWICE,
            ),
            (&["faq", "q", "MODEL", ""], error::MODEL_INVALID),
            (&["faq", "q", "MODEL", "a\nb"], error::MODEL_INVALID),
            (&["faq", "q", "BOGUS"], error::UNKNOWN_OPTION),
            (&["faq", "q", "BOGUS", "1"], error::UNKNOWN_OPTION),
            (&["", "q"], error::CACHE_EMPTY),
            (&["a{b", "q"], error::CACHE_BRACE),
            (&["a}b", "q"], error::CACHE_BRACE),
        ];
        for (args, want) in rows {
            assert_eq!(p(args).unwrap_err(), *want, "{args:?}");
        }
        assert_eq!(
            p(&[&"c".repeat(129), "q"]).unwrap_err(),
            error::CACHE_TOO_LONG
        );
    }

    #[test]
    fn ttl_bounds() {
        assert_eq!(parse_ttl(b"1"), Some(1));
        assert_eq!(parse_ttl(b"315360000"), Some(315_360_000));
        assert_eq!(parse_ttl(b"0001"), Some(1));
        assert_eq!(parse_ttl(b""), None);
    }

    #[test]
    fn questions() {
        assert_eq!(question_str(b"abc", 3), Ok("abc"));
        assert_eq!(question_str(b"abcd", 3), Err(error::QUESTION_TOO_LONG));
        assert_eq!(question_str(b"\xff", 3), Err(error::QUESTION_UTF8));
    }
}
