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
    Answer(String),
    /// A full error reply, code included (`ERR ...`).
    Error(CString),
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
}

// SAFETY: a RedisModuleBlockedClient handle may be unblocked from any thread.
unsafe impl Send for Waiter {}

impl Waiter {
    /// Blocks the client of `ctx` until it is finished (by the worker or the reaper).
    ///
    /// # Safety
    /// `ctx` must be the context of a command being executed on the main thread.
    pub unsafe fn block(ctx: *mut raw::RedisModuleCtx, deadline: Instant) -> Option<Waiter> {
        let bc = raw::RedisModule_BlockClient.unwrap()(ctx, Some(reply_cb), None, Some(free_cb), 0);
        NonNull::new(bc).map(|bc| Waiter { bc, deadline })
    }

    /// Unblocks the client with `outcome` (its reply is written on the main thread).
    pub fn finish(self, outcome: &Arc<Outcome>) {
        self.unblock(Arc::clone(outcome));
        std::mem::forget(self);
    }

    fn unblock(&self, outcome: Arc<Outcome>) {
        let data = Box::into_raw(Box::new(outcome)).cast::<c_void>();
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
            .cast::<Arc<Outcome>>()
            .as_ref();
        match data.map(|d| &**d) {
            Some(Outcome::Answer(a)) => {
                raw::RedisModule_ReplyWithStringBuffer.unwrap()(ctx, a.as_ptr().cast(), a.len());
            }
            Some(Outcome::Error(e)) => {
                raw::RedisModule_ReplyWithError.unwrap()(ctx, e.as_ptr());
            }
            None => {
                let e = error_reply(&format!("ERR {}", error::INTERNAL));
                raw::RedisModule_ReplyWithError.unwrap()(ctx, e.as_ptr());
            }
        }
    }));
    raw::REDISMODULE_OK as c_int
}

extern "C" fn free_cb(_ctx: *mut raw::RedisModuleCtx, data: *mut c_void) {
    if !data.is_null() {
        // SAFETY: every privdata passed to UnblockClient is a Box<Arc<Outcome>>.
        drop(unsafe { Box::from_raw(data.cast::<Arc<Outcome>>()) });
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
