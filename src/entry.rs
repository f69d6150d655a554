//! Entries on the main thread, read with the low-level key API (no `RedisModule_Call`: it
//! costs microseconds, and this is the hit path).

use std::os::raw::{c_int, c_longlong};
use std::ptr;
use std::sync::OnceLock;

use std::time::{SystemTime, UNIX_EPOCH};

use redis_module::{raw, CallOptionsBuilder, CallResult, Context, ContextFlags};

/// Field names as Redis strings, made once: `RedisModule_HashGet` with C-string fields
/// would create and free a string object per field on every hit.
struct Fields([*mut raw::RedisModuleString; 6]);

// SAFETY: created once under the Redis lock, then only read, under the lock.
unsafe impl Send for Fields {}
unsafe impl Sync for Fields {}

static FIELDS: OnceLock<Fields> = OnceLock::new();

/// The fields a lookup reads, in this order.
const NAMES: [&str; 6] = [
    "answer",
    "tokens_in",
    "tokens_out",
    "latency_ms",
    "fresh_until",
    "created",
];

fn fields() -> &'static [*mut raw::RedisModuleString; 6] {
    &FIELDS
        .get_or_init(|| {
            Fields(NAMES.map(|n| {
                // SAFETY: a NULL context makes a string owned by the module, never freed.
                unsafe {
                    raw::RedisModule_CreateString.unwrap()(
                        ptr::null_mut(),
                        n.as_ptr().cast(),
                        n.len(),
                    )
                }
            }))
        })
        .0
}

/// A found entry. The answer string is owned here and freed on drop.
pub struct Hit {
    ctx: *mut raw::RedisModuleCtx,
    pub answer: *mut raw::RedisModuleString,
    pub tokens_in: u64,
    pub tokens_out: u64,
    pub latency_ms: u64,
    /// Unix ms, when asked for.
    pub created_ms: Option<i64>,
    /// Remaining TTL in ms (-1: none), when asked for.
    pub ttl_ms: Option<i64>,
    /// Past its TTL, within its stale grace period: serve, and refresh in the background.
    pub stale: bool,
}

impl Drop for Hit {
    fn drop(&mut self) {
        // SAFETY: `answer` came from HashGet in this command's context.
        unsafe { raw::RedisModule_FreeString.unwrap()(self.ctx, self.answer) };
    }
}

pub enum Lookup {
    Hit(Hit),
    Miss,
    /// The key exists but is not a hash (someone wrote it with other commands).
    WrongType,
}

unsafe fn to_u64(ctx: *mut raw::RedisModuleCtx, s: *mut raw::RedisModuleString) -> u64 {
    if s.is_null() {
        return 0;
    }
    let mut v: c_longlong = 0;
    let ok = raw::RedisModule_StringToLongLong.unwrap()(s, &mut v) == raw::REDISMODULE_OK as c_int;
    raw::RedisModule_FreeString.unwrap()(ctx, s);
    if ok {
        v.max(0) as u64
    } else {
        0
    }
}

/// Looks up the entry at `key`; `meta` also reads its creation time and remaining TTL.
///
/// # Safety
/// `ctx` must be the context of the command being executed, on the main thread.
pub unsafe fn lookup(ctx: *mut raw::RedisModuleCtx, key: &[u8], meta: bool) -> Lookup {
    let name = raw::RedisModule_CreateString.unwrap()(ctx, key.as_ptr().cast(), key.len());
    let k = raw::RedisModule_OpenKey.unwrap()(ctx, name, raw::REDISMODULE_READ as c_int);
    let result = if k.is_null() {
        Lookup::Miss
    } else {
        let kind = raw::RedisModule_KeyType.unwrap()(k);
        if kind == raw::REDISMODULE_KEYTYPE_HASH as c_int {
            let f = fields();
            let mut v: [*mut raw::RedisModuleString; 6] = [ptr::null_mut(); 6];
            let [a, ti, to, lat, fresh, cr] = &mut v;
            let end = ptr::null_mut::<raw::RedisModuleString>();
            let none = raw::REDISMODULE_HASH_NONE as c_int;
            // `created` only for WITHMETA: a NULL field name ends the list there, and
            // HashGet reads no further arguments.
            let created_field = if meta { f[5] } else { end };
            raw::RedisModule_HashGet.unwrap()(
                k,
                none,
                f[0],
                a as *mut _,
                f[1],
                ti as *mut _,
                f[2],
                to as *mut _,
                f[3],
                lat as *mut _,
                f[4],
                fresh as *mut _,
                created_field,
                cr as *mut _,
                end,
            );
            let tokens_in = to_u64(ctx, v[1]);
            let tokens_out = to_u64(ctx, v[2]);
            let latency_ms = to_u64(ctx, v[3]);
            let fresh_until = to_u64(ctx, v[4]);
            let created = to_u64(ctx, v[5]) as i64;
            if v[0].is_null() {
                // A hash without an answer is not an entry we wrote: ask the backend.
                Lookup::Miss
            } else {
                let stale = fresh_until > 0 && (now_ms() as u64) > fresh_until;
                let (created_ms, ttl_ms) = if meta {
                    (Some(created), Some(raw::RedisModule_GetExpire.unwrap()(k)))
                } else {
                    (None, None)
                };
                Lookup::Hit(Hit {
                    ctx,
                    answer: v[0],
                    tokens_in,
                    tokens_out,
                    latency_ms,
                    created_ms,
                    ttl_ms,
                    stale,
                })
            }
        } else if kind == raw::REDISMODULE_KEYTYPE_EMPTY as c_int {
            Lookup::Miss
        } else {
            Lookup::WrongType
        }
    };
    if !k.is_null() {
        raw::RedisModule_CloseKey.unwrap()(k);
    }
    raw::RedisModule_FreeString.unwrap()(ctx, name);
    result
}

/// An entry to write.
pub struct NewEntry<'a> {
    pub key: &'a [u8],
    pub answer: &'a [u8],
    pub question: &'a [u8],
    pub model: &'a [u8],
    pub tokens_in: Option<u64>,
    pub tokens_out: Option<u64>,
    pub latency_ms: Option<u64>,
    pub ttl_secs: i64,
    /// Grace after the TTL during which the entry is served stale while it is refreshed; the
    /// key then expires at TTL + grace, and `fresh_until` says when the TTL ended.
    pub stale_secs: i64,
    /// The question's embedding field (`sem`, see `semantic::encode`), if the semantic tier
    /// made one.
    pub sem: Option<&'a [u8]>,
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A write was refused (out of memory, or a key of another type in the way).
#[derive(Debug)]
pub struct WriteRefused;

/// Writes an entry with plain commands that replicate (`!`) and return errors as replies
/// (`E`): `HSET` then `PEXPIREAT`, which replicas and the AOF receive in one `MULTI`. Under
/// `noeviction` the write also fails on OOM (`M`) rather than grow past `maxmemory`. Under an
/// evicting policy it is not checked: from a worker, Redis would compare used memory with
/// the limit without evicting first, and refuse nearly every paid answer at the limit; the
/// next command evicts as usual. The caller holds the Redis lock.
pub fn write(ctx: &Context, e: &NewEntry<'_>) -> Result<(), WriteRefused> {
    let created = now_ms();
    let created_s = created.to_string();
    let num = |v: Option<u64>| v.map(|t| t.to_string()).unwrap_or_default();
    let (tokens_in, tokens_out, latency) = (num(e.tokens_in), num(e.tokens_out), num(e.latency_ms));
    let evicts = ctx.get_flags().contains(ContextFlags::EVICTED);
    let opts = if evicts {
        CallOptionsBuilder::new()
            .replicate()
            .errors_as_replies()
            .build()
    } else {
        CallOptionsBuilder::new()
            .replicate()
            .verify_oom()
            .errors_as_replies()
            .build()
    };
    let fresh_until = (created + e.ttl_secs * 1000).to_string();
    let mut fields: Vec<&[u8]> = vec![
        e.key,
        b"answer",
        e.answer,
        b"question",
        e.question,
        b"model",
        e.model,
        b"created",
        created_s.as_bytes(),
        b"tokens_in",
        tokens_in.as_bytes(),
        b"tokens_out",
        tokens_out.as_bytes(),
        b"latency_ms",
        latency.as_bytes(),
    ];
    if let Some(sem) = e.sem {
        fields.extend_from_slice(&[crate::semantic::FIELD, sem]);
    }
    if e.stale_secs > 0 {
        fields.extend_from_slice(&[b"fresh_until", fresh_until.as_bytes()]);
    } else {
        // An entry rewritten without a grace period must not keep an old one.
        let _: CallResult = ctx.call_ext("HDEL", &opts, &[e.key, b"fresh_until"][..]);
    }
    let written: CallResult = ctx.call_ext("HSET", &opts, &fields[..]);
    if written.is_err() {
        return Err(WriteRefused);
    }
    let at = (created + (e.ttl_secs + e.stale_secs) * 1000).to_string();
    let expired: CallResult = ctx.call_ext("PEXPIREAT", &opts, &[e.key, at.as_bytes()][..]);
    if expired.is_err() {
        // An entry without its TTL would live forever: take it back.
        let _: CallResult = ctx.call_ext("DEL", &opts, &[e.key][..]);
        return Err(WriteRefused);
    }
    crate::stats::STORED.bump();
    Ok(())
}
