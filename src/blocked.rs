//! Blocked clients: a miss blocks only its caller until the backend call ends.
//!
//! Every waiter is unblocked by us, exactly once, through `RedisModule_UnblockClient` with an
//! [`Outcome`]; the reply is then written on the main thread by [`reply_cb`]. Whoever takes a
//! waiter out of the flight table unblocks it: the worker when the call ends, or the reaper
//! (see `worker`) when the waiter's deadline passes.
//!
//! Redis's own blocking timeout is deliberately not used: on Redis 7.0, when a timeout fires
//! while an `UnblockClient` for the same client is pending, the client is unblocked with no
//! reply at all (measured here: 15 of 100 clients hung). Redis requires `UnblockClient` for
//! every blocked client, even a disconnected one (its reply is then discarded); [`Waiter`]'s
//! `Drop` guarantees it.

use std::ffi::CString;
use std::os::raw::{c_int, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr::NonNull;
use std::sync::Arc;
use std::time::Instant;

use redis_module::raw;

use crate::error;

/// How a backend call ended, shared by everyone who waited on it.
pub enum Outcome {
    /// The answer, and the TTL in ms of the entry made from it.
    Answer(String, i64),
    /// A full error reply, code included (`ERR ...`).
    Error(CString),
    /// A stored answer served for a paraphrase (the semantic tier).
    Semantic(SemanticHit),
    /// A plain `+OK` (`QA.SET ... SEMANTIC`, which waits for the embedding).
    Ok,
    /// An answer citing sources: the answer, the entry's TTL in ms, and its sources part
    /// (ids joined by `\n`, see `crate::sources`), replied in `WITHMETA` as `sources`.
    Cited(String, i64, Vec<u8>),
}

/// What a semantic hit replies, `WITHMETA` included.
pub struct SemanticHit {
    pub answer: String,
    pub age_ms: i64,
    pub ttl_ms: i64,
    pub similarity: f32,
    /// The stored question whose answer this is.
    pub matched: String,
}

impl Outcome {
    /// An error outcome from a message without its code.
    pub fn err(message: impl std::fmt::Display) -> Self {
        Outcome::Error(error_reply(&format!("ERR {message}")))
    }
}

/// A `CString` for an error reply: interior NULs and line breaks (which would break RESP)
/// become spaces.
pub fn error_reply(text: &str) -> CString {
    let clean: Vec<u8> = text
        .bytes()
        .map(|b| {
            if b == 0 || b == b'\r' || b == b'\n' {
                b' '
            } else {
                b
            }
        })
        .collect();
    CString::new(clean).unwrap_or_default()
}

/// A client blocked on a miss. Send: Redis allows `UnblockClient` from any thread.
pub struct Waiter {
    bc: NonNull<raw::RedisModuleBlockedClient>,
    /// When the client stops waiting and gets a timeout error.
    pub deadline: Instant,
    /// Reply with metadata (`WITHMETA`).
    pub withmeta: bool,
    /// How the answer reached this client: `miss`, `refresh` or `coalesced`.
    pub served: &'static str,
}

/// What a blocked client's reply is made from.
struct Reply {
    outcome: Arc<Outcome>,
    withmeta: bool,
    served: &'static str,
}

// SAFETY: a RedisModuleBlockedClient handle may be unblocked from any thread.
unsafe impl Send for Waiter {}

impl Waiter {
    /// Blocks the client of `ctx` until it is finished (by the worker or the reaper).
    ///
    /// # Safety
    /// `ctx` must be the context of a command being executed on the main thread.
    pub unsafe fn block(
        ctx: *mut raw::RedisModuleCtx,
        deadline: Instant,
        withmeta: bool,
    ) -> Option<Waiter> {
        let bc = raw::RedisModule_BlockClient.unwrap()(ctx, Some(reply_cb), None, Some(free_cb), 0);
        NonNull::new(bc).map(|bc| Waiter {
            bc,
            deadline,
            withmeta,
            served: "miss",
        })
    }

    /// Unblocks the client with `outcome` (its reply is written on the main thread).
    pub fn finish(self, outcome: &Arc<Outcome>) {
        self.unblock(Arc::clone(outcome));
        std::mem::forget(self);
    }

    fn unblock(&self, outcome: Arc<Outcome>) {
        let reply = Reply {
            outcome,
            withmeta: self.withmeta,
            served: self.served,
        };
        let data = Box::into_raw(Box::new(reply)).cast::<c_void>();
        // SAFETY: the handle came from BlockClient and is unblocked exactly once (finish
        // forgets self; Drop runs only when finish did not).
        unsafe {
            raw::RedisModule_UnblockClient.unwrap()(self.bc.as_ptr(), data);
        }
    }
}

impl Drop for Waiter {
    /// A waiter dropped without an outcome (a bug or a panic on the way) still gets a reply.
    fn drop(&mut self) {
        self.unblock(Arc::new(Outcome::err(error::INTERNAL)));
    }
}

extern "C" fn reply_cb(
    ctx: *mut raw::RedisModuleCtx,
    _argv: *mut *mut raw::RedisModuleString,
    _argc: c_int,
) -> c_int {
    let _ = catch_unwind(AssertUnwindSafe(|| unsafe {
        let data = raw::RedisModule_GetBlockedClientPrivateData.unwrap()(ctx)
            .cast::<Reply>()
            .as_ref();
        match data {
            Some(Reply {
                outcome,
                withmeta,
                served,
            }) => match &**outcome {
                Outcome::Answer(a, ttl_ms) if *withmeta => {
                    reply_meta(ctx, a.as_bytes(), served, 0, *ttl_ms);
                }
                Outcome::Cited(a, ttl_ms, src) if *withmeta => {
                    reply_meta_with(ctx, a.as_bytes(), served, 0, *ttl_ms, None, src);
                }
                Outcome::Answer(a, _) | Outcome::Cited(a, _, _) => {
                    raw::RedisModule_ReplyWithStringBuffer.unwrap()(
                        ctx,
                        a.as_ptr().cast(),
                        a.len(),
                    );
                }
                Outcome::Error(e) => {
                    raw::RedisModule_ReplyWithError.unwrap()(ctx, e.as_ptr());
                }
                Outcome::Semantic(hit) if *withmeta => reply_meta_with(
                    ctx,
                    hit.answer.as_bytes(),
                    "semantic",
                    hit.age_ms,
                    hit.ttl_ms,
                    Some((hit.similarity, &hit.matched)),
                    b"",
                ),
                Outcome::Semantic(hit) => {
                    let a = &hit.answer;
                    raw::RedisModule_ReplyWithStringBuffer.unwrap()(
                        ctx,
                        a.as_ptr().cast(),
                        a.len(),
                    );
                }
                Outcome::Ok => {
                    raw::RedisModule_ReplyWithSimpleString.unwrap()(ctx, c"OK".as_ptr());
                }
            },
            None => {
                let e = error_reply(&format!("ERR {}", error::INTERNAL));
                raw::RedisModule_ReplyWithError.unwrap()(ctx, e.as_ptr());
            }
        }
    }));
    raw::REDISMODULE_OK as c_int
}

/// The `WITHMETA` reply: a map (RESP3) or flat array (RESP2) of `answer`, `served`,
/// `age_ms` and `ttl_ms` (-1: no expiry).
///
/// # Safety
/// `ctx` must be a context that may reply.
pub unsafe fn reply_meta(
    ctx: *mut raw::RedisModuleCtx,
    answer: &[u8],
    served: &str,
    age_ms: i64,
    ttl_ms: i64,
) {
    reply_meta_with(ctx, answer, served, age_ms, ttl_ms, None, b"");
}

/// [`reply_meta`] for an entry that may cite sources (its sources part, empty: none): a
/// `sources` array follows when there are any.
///
/// # Safety
/// `ctx` must be a context that may reply.
pub unsafe fn reply_meta_cited(
    ctx: *mut raw::RedisModuleCtx,
    answer: &[u8],
    served: &str,
    age_ms: i64,
    ttl_ms: i64,
    sources: &[u8],
) {
    reply_meta_with(ctx, answer, served, age_ms, ttl_ms, None, sources);
}

/// [`reply_meta`], plus for a semantic hit (`matched`: similarity and stored question)
/// `similarity` (a decimal string: RESP2 has no double) and `matched`, and `sources` (an
/// array of document ids) when the sources part is not empty.
unsafe fn reply_meta_with(
    ctx: *mut raw::RedisModuleCtx,
    answer: &[u8],
    served: &str,
    age_ms: i64,
    ttl_ms: i64,
    matched: Option<(f32, &str)>,
    sources: &[u8],
) {
    let bytes =
        |b: &[u8]| raw::RedisModule_ReplyWithStringBuffer.unwrap()(ctx, b.as_ptr().cast(), b.len());
    let text = |s: &str| bytes(s.as_bytes());
    let pairs = 4 + if matched.is_some() { 2 } else { 0 } + i64::from(!sources.is_empty());
    raw::reply_with_map(ctx, pairs as _);
    text("answer");
    bytes(answer);
    text("served");
    text(served);
    text("age_ms");
    raw::RedisModule_ReplyWithLongLong.unwrap()(ctx, age_ms);
    text("ttl_ms");
    raw::RedisModule_ReplyWithLongLong.unwrap()(ctx, ttl_ms);
    if let Some((similarity, question)) = matched {
        text("similarity");
        text(&format!("{similarity:.4}"));
        text("matched");
        text(question);
    }
    if !sources.is_empty() {
        text("sources");
        let ids: Vec<&[u8]> = crate::sources::ids(sources).collect();
        raw::RedisModule_ReplyWithArray.unwrap()(ctx, ids.len() as _);
        for id in ids {
            bytes(id);
        }
    }
}

extern "C" fn free_cb(_ctx: *mut raw::RedisModuleCtx, data: *mut c_void) {
    if !data.is_null() {
        // SAFETY: every privdata passed to UnblockClient is a Box<Reply>.
        drop(unsafe { Box::from_raw(data.cast::<Reply>()) });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_replies_cannot_break_the_protocol() {
        assert_eq!(error_reply("ERR a\r\nb\0c").to_bytes(), b"ERR a  b c");
        assert_eq!(error_reply("ERR plain").to_bytes(), b"ERR plain");
    }
}
