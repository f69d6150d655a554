//! Argument parsing shared by every command that names an entry:
//! `<cache> <question> [<answer>] [TTL <s>] [MODEL <m>] [SYSTEM <p>] [REFRESH] [WITHMETA]`.
//! Pure: everything that needs no config or Redis state.

use crate::config::{self, MAX_TTL_SECS};
use crate::error;
use crate::keys::{self, CacheNameError};

/// Which options a command takes, and the error it replies for any other.
#[derive(Clone, Copy)]
pub struct Allowed {
    pub ttl: bool,
    /// `STALE <seconds>` (the grace period of stale-while-revalidate).
    pub stale: bool,
    pub refresh: bool,
    pub withmeta: bool,
    /// `SEMANTIC` / `EXACT` (the semantic tier on or off for this call).
    pub semantic: bool,
    /// `CONTEXT <text>` and `SOURCES <n> <id>...` (see docs/sources.md).
    pub cited: bool,
    pub unknown: &'static str,
}

/// `QA.PEEK`, `QA.DEL`, `QA.KEY`: MODEL and SYSTEM only.
pub const LOOKUP_ONLY: Allowed = Allowed {
    ttl: false,
    stale: false,
    refresh: false,
    withmeta: false,
    semantic: false,
    cited: false,
    unknown: error::UNKNOWN_OPTION_LOOKUP,
};

/// The parsed arguments.
#[derive(Debug, PartialEq, Eq, Default)]
pub struct EntryArgs<'a> {
    pub cache: &'a [u8],
    pub question: &'a [u8],
    /// The third positional argument (`QA.SET`'s answer), when the command has one.
    pub answer: Option<&'a [u8]>,
    pub ttl: Option<i64>,
    pub stale: Option<i64>,
    pub model: Option<&'a str>,
    pub system: Option<&'a str>,
    pub refresh: bool,
    pub withmeta: bool,
    /// `Some(true)` for `SEMANTIC`, `Some(false)` for `EXACT`, else the config decides.
    pub semantic: Option<bool>,
    /// `CONTEXT` and `SOURCES`, boxed: a request without them carries one null pointer.
    pub cited: Option<Box<Cited<'a>>>,
}

/// `CONTEXT <text>` and `SOURCES <n> <id>...` (docs/sources.md).
#[derive(Debug, PartialEq, Eq, Default)]
pub struct Cited<'a> {
    /// The app's retrieved context (part of the key, sent to the backend).
    pub context: Option<&'a [u8]>,
    /// The documents the answer cites, checked (not yet deduplicated).
    pub sources: Option<Vec<&'a [u8]>>,
}

impl<'a> EntryArgs<'a> {
    /// `CONTEXT <text>`, if given.
    pub fn context(&self) -> Option<&'a [u8]> {
        self.cited.as_ref().and_then(|c| c.context)
    }

    /// The ids of `SOURCES <n> <id>...`, if given.
    pub fn sources(&self) -> Option<&[&'a [u8]]> {
        self.cited.as_ref().and_then(|c| c.sources.as_deref())
    }
}

/// Parses everything after the command name: `positional` (2 or 3) fixed arguments, then
/// options. Redis has already checked the minimum arity.
pub fn parse<'a>(
    args: &[&'a [u8]],
    positional: usize,
    allowed: Allowed,
) -> Result<EntryArgs<'a>, &'static str> {
    if args.len() < positional {
        return Err(error::SYNTAX);
    }
    let mut out = EntryArgs {
        cache: args[0],
        question: args[1],
        answer: (positional > 2).then(|| args[2]),
        ..Default::default()
    };
    let rest = &args[positional..];
    let mut i = 0;
    while i < rest.len() {
        let opt = rest[i];
        let is = |name: &[u8]| opt.eq_ignore_ascii_case(name);
        if allowed.refresh && is(b"REFRESH") {
            if std::mem::replace(&mut out.refresh, true) {
                return Err(error::OPTION_TWICE);
            }
            i += 1;
            continue;
        }
        if allowed.withmeta && is(b"WITHMETA") {
            if std::mem::replace(&mut out.withmeta, true) {
                return Err(error::OPTION_TWICE);
            }
            i += 1;
            continue;
        }
        if allowed.semantic && (is(b"SEMANTIC") || is(b"EXACT")) {
            let on = is(b"SEMANTIC");
            match out.semantic.replace(on) {
                Some(was) if was == on => return Err(error::OPTION_TWICE),
                Some(_) => return Err(error::SEMANTIC_AND_EXACT),
                None => {}
            }
            i += 1;
            continue;
        }
        if allowed.cited && is(b"SOURCES") {
            let n = rest
                .get(i + 1)
                .and_then(|v| std::str::from_utf8(v).ok())
                .and_then(|v| v.parse::<usize>().ok())
                .filter(|n| (1..=crate::sources::MAX_SOURCES).contains(n))
                .ok_or(error::SOURCES_COUNT)?;
            let ids = rest.get(i + 2..i + 2 + n).ok_or(error::SOURCES_COUNT)?;
            if !ids.iter().all(|id| crate::sources::valid_id(id)) {
                return Err(error::SOURCE_ID_INVALID);
            }
            let cited = out.cited.get_or_insert_with(Default::default);
            if cited.sources.replace(ids.to_vec()).is_some() {
                return Err(error::OPTION_TWICE);
            }
            i += 2 + n;
            continue;
        }
        if allowed.cited && is(b"CONTEXT") {
            let value = rest.get(i + 1).copied().ok_or(error::OPTION_VALUE)?;
            if std::str::from_utf8(value).is_err() {
                return Err(error::CONTEXT_UTF8);
            }
            let cited = out.cited.get_or_insert_with(Default::default);
            if cited.context.replace(value).is_some() {
                return Err(error::OPTION_TWICE);
            }
            i += 2;
            continue;
        }
        if !((allowed.ttl && is(b"TTL"))
            || (allowed.stale && is(b"STALE"))
            || is(b"MODEL")
            || is(b"SYSTEM"))
        {
            return Err(allowed.unknown);
        }
        let value = rest.get(i + 1).copied().ok_or(error::OPTION_VALUE)?;
        if is(b"STALE") {
            // 0 turns stale serving off for this call.
            let stale = parse_seconds(value, 0).ok_or(error::STALE_RANGE)?;
            if out.stale.replace(stale).is_some() {
                return Err(error::OPTION_TWICE);
            }
        } else if is(b"TTL") {
            let ttl = parse_ttl(value).ok_or(error::TTL_RANGE)?;
            if out.ttl.replace(ttl).is_some() {
                return Err(error::OPTION_TWICE);
            }
        } else if is(b"MODEL") {
            let m = std::str::from_utf8(value)
                .ok()
                .filter(|m| config::valid_model(m))
                .ok_or(error::MODEL_INVALID)?;
            if out.model.replace(m).is_some() {
                return Err(error::OPTION_TWICE);
            }
        } else {
            let s = std::str::from_utf8(value)
                .ok()
                .filter(|s| config::valid_system(s))
                .ok_or(error::SYSTEM_INVALID)?;
            if out.system.replace(s).is_some() {
                return Err(error::OPTION_TWICE);
            }
        }
        i += 2;
    }
    cache_name(out.cache)?;
    Ok(out)
}

/// Checks a cache name, with the error reply for a bad one.
pub fn cache_name(cache: &[u8]) -> Result<(), &'static str> {
    keys::validate_cache_name(cache).map_err(|e| match e {
        CacheNameError::Empty => error::CACHE_EMPTY,
        CacheNameError::TooLong => error::CACHE_TOO_LONG,
        CacheNameError::Brace => error::CACHE_BRACE,
    })
}

/// Seconds, as plain decimal digits (no sign, no spaces), 1 to [`MAX_TTL_SECS`].
fn parse_ttl(v: &[u8]) -> Option<i64> {
    parse_seconds(v, 1)
}

/// Seconds, as plain decimal digits (leading zeros allowed), `min` to [`MAX_TTL_SECS`].
fn parse_seconds(v: &[u8], min: i64) -> Option<i64> {
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let digits = v
        .iter()
        .position(|b| *b != b'0')
        .map_or(&v[v.len() - 1..], |i| &v[i..]);
    if digits.len() > 10 {
        return None;
    }
    let n: i64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    (min..=MAX_TTL_SECS).contains(&n).then_some(n)
}

/// Checks the question against the size limit and decodes it.
pub fn question_str(q: &[u8], max_bytes: usize) -> Result<&str, &'static str> {
    if q.len() > max_bytes {
        return Err(error::QUESTION_TOO_LONG);
    }
    std::str::from_utf8(q).map_err(|_| error::QUESTION_UTF8)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GET: Allowed = Allowed {
        ttl: true,
        stale: true,
        refresh: true,
        withmeta: true,
        semantic: true,
        cited: true,
        unknown: error::UNKNOWN_OPTION_GET,
    };
    const SET: Allowed = Allowed {
        ttl: true,
        stale: false,
        refresh: false,
        withmeta: false,
        semantic: true,
        cited: true,
        unknown: error::UNKNOWN_OPTION_SET,
    };

    fn p(
        args: &[&str],
        positional: usize,
        allowed: Allowed,
    ) -> Result<EntryArgs<'static>, &'static str> {
        let v: Vec<&'static [u8]> = args
            .iter()
            .map(|s| &*Box::leak(s.as_bytes().to_vec().into_boxed_slice()))
            .collect();
        parse(Box::leak(v.into_boxed_slice()), positional, allowed)
    }

    #[test]
    fn parses_options_case_insensitively() {
        let a = p(
            &[
                "faq", "q", "ttl", "60", "Model", "m1", "SYSTEM", "be brief", "refresh",
                "withMeta", "semantic",
            ],
            2,
            GET,
        )
        .unwrap();
        assert_eq!(
            a,
            EntryArgs {
                cache: b"faq",
                question: b"q",
                answer: None,
                ttl: Some(60),
                stale: None,
                model: Some("m1"),
                system: Some("be brief"),
                refresh: true,
                withmeta: true,
                semantic: Some(true),
                cited: None,
            }
        );
        let s = p(&["faq", "q", "the answer", "TTL", "5", "exact"], 3, SET).unwrap();
        assert_eq!((s.answer, s.ttl), (Some(&b"the answer"[..]), Some(5)));
        assert_eq!(s.semantic, Some(false));
        assert_eq!(p(&["faq", "q"], 2, GET).unwrap().semantic, None);
        // Twice, or both.
        assert_eq!(
            p(&["faq", "q", "SEMANTIC", "semantic"], 2, GET),
            Err(error::OPTION_TWICE)
        );
        assert_eq!(
            p(&["faq", "q", "EXACT", "SEMANTIC"], 2, GET),
            Err(error::SEMANTIC_AND_EXACT)
        );
        // Not an option of the lookup-only commands.
        assert_eq!(
            p(&["faq", "q", "SEMANTIC"], 2, LOOKUP_ONLY),
            Err(error::UNKNOWN_OPTION_LOOKUP)
        );
    }

    /// (arguments, positional count, allowed options, expected error)
    #[test]
    fn errors() {
        let rows: &[(&[&str], usize, Allowed, &str)] = &[
            (&["faq"], 2, GET, error::SYNTAX),
            (&["faq", "q", "TTL"], 2, GET, error::OPTION_VALUE),
            (&["faq", "q", "TTL", "0"], 2, GET, error::TTL_RANGE),
            (&["faq", "q", "TTL", "-5"], 2, GET, error::TTL_RANGE),
            (&["faq", "q", "TTL", "+5"], 2, GET, error::TTL_RANGE),
            (&["faq", "q", "TTL", " 5"], 2, GET, error::TTL_RANGE),
            (&["faq", "q", "TTL", "1.5"], 2, GET, error::TTL_RANGE),
            (&["faq", "q", "TTL", "abc"], 2, GET, error::TTL_RANGE),
            (&["faq", "q", "TTL", "315360001"], 2, GET, error::TTL_RANGE),
            (
                &["faq", "q", "TTL", "99999999999999999999"],
                2,
                GET,
                error::TTL_RANGE,
            ),
            (
                &["faq", "q", "TTL", "5", "TTL", "6"],
                2,
                GET,
                error::OPTION_TWICE,
            ),
            (
                &["faq", "q", "REFRESH", "REFRESH"],
                2,
                GET,
                error::OPTION_TWICE,
            ),
            (
                &["faq", "q", "WITHMETA", "withmeta"],
                2,
                GET,
                error::OPTION_TWICE,
            ),
            (
                &["faq", "q", "MODEL", "a", "MODEL", "b"],
                2,
                GET,
                error::OPTION_TWICE,
            ),
            (
                &["faq", "q", "SYSTEM", "a", "SYSTEM", "b"],
                2,
                GET,
                error::OPTION_TWICE,
            ),
            (&["faq", "q", "MODEL", ""], 2, GET, error::MODEL_INVALID),
            (&["faq", "q", "MODEL", "a\nb"], 2, GET, error::MODEL_INVALID),
            (&["faq", "q", "BOGUS"], 2, GET, error::UNKNOWN_OPTION_GET),
            (
                &["faq", "q", "BOGUS", "1"],
                2,
                GET,
                error::UNKNOWN_OPTION_GET,
            ),
            (
                &["faq", "q", "TTL", "5"],
                2,
                LOOKUP_ONLY,
                error::UNKNOWN_OPTION_LOOKUP,
            ),
            (
                &["faq", "q", "REFRESH"],
                2,
                LOOKUP_ONLY,
                error::UNKNOWN_OPTION_LOOKUP,
            ),
            (
                &["faq", "q", "a", "REFRESH"],
                3,
                SET,
                error::UNKNOWN_OPTION_SET,
            ),
            (&["", "q"], 2, GET, error::CACHE_EMPTY),
            (&["a{b", "q"], 2, GET, error::CACHE_BRACE),
            (&["a}b", "q"], 2, GET, error::CACHE_BRACE),
        ];
        for (args, positional, allowed, want) in rows {
            assert_eq!(
                p(args, *positional, *allowed).unwrap_err(),
                *want,
                "{args:?}"
            );
        }
        assert_eq!(
            p(&[&"c".repeat(129), "q"], 2, GET).unwrap_err(),
            error::CACHE_TOO_LONG
        );
    }

    #[test]
    fn context_and_sources() {
        let a = p(
            &[
                "faq", "q", "SOURCES", "2", "a.md", "b.md", "context", "ctx", "TTL", "5",
            ],
            2,
            GET,
        )
        .unwrap();
        assert_eq!(a.sources(), Some(&[&b"a.md"[..], b"b.md"][..]));
        assert_eq!((a.context(), a.ttl), (Some(&b"ctx"[..]), Some(5)));
        // An id that looks like an option is an id: the count says where they end.
        let s = p(&["faq", "q", "ans", "sources", "1", "TTL"], 3, SET).unwrap();
        assert_eq!(s.sources(), Some(&[&b"TTL"[..]][..]));
        // (arguments, expected error)
        let rows: &[(&[&str], &str)] = &[
            (&["faq", "q", "SOURCES"], error::SOURCES_COUNT),
            (&["faq", "q", "SOURCES", "0"], error::SOURCES_COUNT),
            (&["faq", "q", "SOURCES", "33"], error::SOURCES_COUNT),
            (&["faq", "q", "SOURCES", "-1", "a"], error::SOURCES_COUNT),
            (&["faq", "q", "SOURCES", "x", "a"], error::SOURCES_COUNT),
            (&["faq", "q", "SOURCES", "2", "a"], error::SOURCES_COUNT),
            (&["faq", "q", "SOURCES", "1", ""], error::SOURCE_ID_INVALID),
            (
                &["faq", "q", "SOURCES", "1", "a\nb"],
                error::SOURCE_ID_INVALID,
            ),
            (
                &["faq", "q", "SOURCES", "1", "a", "SOURCES", "1", "b"],
                error::OPTION_TWICE,
            ),
            (&["faq", "q", "CONTEXT"], error::OPTION_VALUE),
            (
                &["faq", "q", "CONTEXT", "a", "CONTEXT", "b"],
                error::OPTION_TWICE,
            ),
            (&["faq", "q", "CONTEXT", "a"], error::UNKNOWN_OPTION_LOOKUP),
        ];
        for (args, want) in rows {
            let allowed = if args.len() == 4 && args[2] == "CONTEXT" {
                LOOKUP_ONLY
            } else {
                GET
            };
            assert_eq!(p(args, 2, allowed).unwrap_err(), *want, "{args:?}");
        }
        let bad_utf8: &'static [u8] = b"\xff";
        assert_eq!(
            parse(&[b"faq", b"q", b"CONTEXT", bad_utf8], 2, GET),
            Err(error::CONTEXT_UTF8)
        );
        assert_eq!(
            parse(&[b"faq", b"q", b"SOURCES", b"1", bad_utf8], 2, GET),
            Err(error::SOURCE_ID_INVALID)
        );
    }

    #[test]
    fn stale_accepts_zero() {
        assert_eq!(
            p(&["faq", "q", "STALE", "0"], 2, GET).unwrap().stale,
            Some(0)
        );
        assert_eq!(
            p(&["faq", "q", "stale", "30"], 2, GET).unwrap().stale,
            Some(30)
        );
        assert_eq!(
            p(&["faq", "q", "STALE", "00"], 2, GET).unwrap().stale,
            Some(0)
        );
        assert_eq!(
            p(&["faq", "q", "TTL", "0000000000005"], 2, GET)
                .unwrap()
                .ttl,
            Some(5)
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
