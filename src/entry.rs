//! Entries on the main thread, read with the low-level key API (no `RedisModule_Call`: it
//! costs microseconds, and this is the hit path).
//!
//! An entry is written as one Redis string in format v2 (see [`v2`] and
//! docs/entry-format.md). Entries written by older builds are hashes (format 1: the fields
//! `answer`, `hit`, `question`, `model`, `created`, `tokens_in`, `tokens_out`,
//! `latency_ms`, `fresh_until`, `sem`); they are still read, and replaced by a v2 string
//! when next stored.

pub mod links;
pub mod v2;

use std::cell::Cell;
use std::os::raw::{c_int, c_longlong};
use std::ptr;
use std::sync::OnceLock;

use std::time::{SystemTime, UNIX_EPOCH};

use redis_module::{raw, CallOptionsBuilder, CallResult, Context, ContextFlags};

/// Field names as Redis strings, made once: `RedisModule_HashGet` with C-string fields
/// would create and free a string object per field on every hit.
struct Fields([*mut raw::RedisModuleString; 7]);

// SAFETY: created once under the Redis lock, then only read, under the lock.
unsafe impl Send for Fields {}
unsafe impl Sync for Fields {}

static FIELDS: OnceLock<Fields> = OnceLock::new();

/// The fields a lookup reads: a hit reads `answer` and `hit` only; the others are read
/// when `hit` is absent or unreadable (an entry written by an older build, or by hand).
const NAMES: [&str; 7] = [
    "answer",
    "hit",
    "tokens_in",
    "tokens_out",
    "latency_ms",
    "fresh_until",
    "created",
];
const ANSWER: usize = 0;
const HIT: usize = 1;
const TOKENS_IN: usize = 2;
const TOKENS_OUT: usize = 3;
const LATENCY_MS: usize = 4;
const FRESH_UNTIL: usize = 5;
const CREATED: usize = 6;

fn fields() -> &'static [*mut raw::RedisModuleString; 7] {
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

/// Key-name strings of recently hit entries, so that a hit on a hot question does not
/// create and free a string object for its key name (two allocations: the names are longer
/// than Redis's embedded strings) every time. Direct-mapped by the digest that ends every
/// entry key. A slot's string is owned by the module and never modified once made (Redis
/// may keep a reference to a key name, e.g. to propagate the deletion of an expired key); a
/// hit on a key that maps to a taken slot replaces its string. Only hits are kept: a miss
/// checks for OOM after the lookup, and a name kept then could tip a server that has just
/// evicted down to its limit over it. Main thread only, like every lookup.
const KEY_NAME_SLOT_BITS: u32 = 8;

thread_local! {
    static KEY_NAMES: [Cell<*mut raw::RedisModuleString>; 1 << KEY_NAME_SLOT_BITS] =
        const { [const { Cell::new(ptr::null_mut()) }; 1 << KEY_NAME_SLOT_BITS] };
}

/// The slot of a key name: its last eight bytes (hex digits of the digest), mixed.
fn key_name_slot(key: &[u8]) -> usize {
    let mut tail = [0u8; 8];
    let n = key.len().min(8);
    tail[..n].copy_from_slice(&key[key.len() - n..]);
    (u64::from_le_bytes(tail).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - KEY_NAME_SLOT_BITS))
        as usize
}

/// The bytes of a module string (valid while the string lives); `None` for NULL.
///
/// # Safety
/// `s` must be NULL or a live module string.
#[inline]
pub unsafe fn bytes_of<'a>(s: *mut raw::RedisModuleString) -> Option<&'a [u8]> {
    if s.is_null() {
        return None;
    }
    let mut len = 0usize;
    let p = raw::RedisModule_StringPtrLen.unwrap()(s, &mut len);
    (!p.is_null()).then(|| std::slice::from_raw_parts(p.cast::<u8>(), len))
}

/// Copies of the fields `names` of the entry open at `k`, in either format: for a v2 string
/// the names are those of format 1 (`answer`, `question`, `model`, `sem`, `created`,
/// `fresh_until`, `tokens_in`, `tokens_out`, `latency_ms`; an absent `sem` or a zero
/// `fresh_until` reads as absent). `None` if `k` holds no entry (nothing, another type, a
/// string that is not a v2 entry).
///
/// # Safety
/// Main thread (or the module lock held), `k` NULL or open in `ctx`.
pub unsafe fn read_open_fields<const N: usize>(
    ctx: *mut raw::RedisModuleCtx,
    k: *mut raw::RedisModuleKey,
    names: [&std::ffi::CStr; N],
) -> Option<[Option<Vec<u8>>; N]> {
    if k.is_null() {
        return None;
    }
    let kind = raw::RedisModule_KeyType.unwrap()(k);
    if kind == raw::REDISMODULE_KEYTYPE_STRING as c_int {
        let e = open_v2(k)?;
        return Some(names.map(|name| v2_field(&e, name.to_bytes())));
    }
    if kind != raw::REDISMODULE_KEYTYPE_HASH as c_int {
        return None;
    }
    Some(names.map(|name| {
        let mut v: *mut raw::RedisModuleString = ptr::null_mut();
        raw::RedisModule_HashGet.unwrap()(
            k,
            raw::REDISMODULE_HASH_CFIELDS as c_int,
            name.as_ptr(),
            &mut v as *mut *mut raw::RedisModuleString,
            ptr::null_mut::<std::os::raw::c_void>(),
        );
        let copy = bytes_of(v).map(<[u8]>::to_vec);
        if !v.is_null() {
            raw::RedisModule_FreeString.unwrap()(ctx, v);
        }
        copy
    }))
}

/// A field of a v2 entry by its format-1 name.
fn v2_field(e: &v2::Entry<'_>, name: &[u8]) -> Option<Vec<u8>> {
    let num = |n: u64| Some(n.to_string().into_bytes());
    match name {
        b"answer" => Some(e.answer.to_vec()),
        b"question" => Some(e.question.to_vec()),
        b"model" => Some(v2::unescape(e.model_escaped)),
        b"sem" => (!e.sem.is_empty()).then(|| e.sem.to_vec()),
        b"created" => num(e.meta.created_ms),
        b"fresh_until" => {
            (e.meta.fresh_until > 0).then(|| e.meta.fresh_until.to_string().into_bytes())
        }
        b"tokens_in" => num(e.meta.tokens_in),
        b"tokens_out" => num(e.meta.tokens_out),
        b"latency_ms" => num(e.meta.latency_ms),
        _ => None,
    }
}

/// No v2 entry is this short (its creation time alone takes 13 digits), and a string of up
/// to 44 bytes may be kept embedded or as an integer, which `StringDMA` would convert in the
/// keyspace, a write in what is a read: such strings are not read at all.
const MAX_EMBEDDED: usize = 44;

/// The v2 entry in the string open at `k`, read in place: valid while `k` stays open and
/// the key unchanged. `None` if the string is not a v2 entry.
///
/// # Safety
/// Main thread (or the module lock held), `k` open on a string key.
unsafe fn open_v2<'a>(k: *mut raw::RedisModuleKey) -> Option<v2::Entry<'a>> {
    if raw::RedisModule_ValueLength.unwrap()(k) <= MAX_EMBEDDED {
        return None;
    }
    let mut len = 0usize;
    let p = raw::RedisModule_StringDMA.unwrap()(k, &mut len, raw::REDISMODULE_READ as c_int);
    if p.is_null() {
        return None;
    }
    v2::decode(std::slice::from_raw_parts(p.cast::<u8>(), len))
}

/// As [`read_open_fields`], opening the key `key` of the selected database for reading.
///
/// # Safety
/// Main thread (or the module lock held).
pub unsafe fn read_fields<const N: usize>(
    ctx: *mut raw::RedisModuleCtx,
    key: &[u8],
    names: [&std::ffi::CStr; N],
) -> Option<[Option<Vec<u8>>; N]> {
    let name = raw::RedisModule_CreateString.unwrap()(ctx, key.as_ptr().cast(), key.len());
    let k = raw::RedisModule_OpenKey.unwrap()(ctx, name, raw::REDISMODULE_READ as c_int);
    let out = read_open_fields(ctx, k, names);
    if !k.is_null() {
        raw::RedisModule_CloseKey.unwrap()(k);
    }
    raw::RedisModule_FreeString.unwrap()(ctx, name);
    out
}

/// The kept string holding `key`, if there is one: valid until a later [`keep_key_name`] of
/// the same slot, never to be freed by the caller.
unsafe fn kept_key_name(key: &[u8]) -> Option<*mut raw::RedisModuleString> {
    KEY_NAMES.with(|slots| {
        let held = slots[key_name_slot(key)].get();
        (bytes_of(held) == Some(key)).then_some(held)
    })
}

/// Keeps `name` (made with a NULL context, holding `key`) in its slot, releasing the string
/// it replaces (anyone else holding that one holds a reference of their own).
unsafe fn keep_key_name(key: &[u8], name: *mut raw::RedisModuleString) {
    KEY_NAMES.with(|slots| {
        let old = slots[key_name_slot(key)].replace(name);
        if !old.is_null() {
            raw::RedisModule_FreeString.unwrap()(ptr::null_mut(), old);
        }
    })
}

/// What a hit needs besides the answer. In a format-1 entry (a hash written by an older
/// build) it is kept in the `hit` field so that a hit reads two fields instead of six. Text,
/// so `HGETALL` stays readable: `1 <created> <fresh_until> <tokens_in> <tokens_out>
/// <latency_ms>` (a format version, then unsigned decimals separated by one space;
/// `fresh_until` 0 means no stale grace, an unknown count is 0). Anything else (another
/// version included) is not trusted: the readable fields are read instead.
pub type HitMeta = v2::Meta;

impl HitMeta {
    /// The `hit` field's value.
    pub fn encode(&self) -> String {
        format!(
            "1 {} {} {} {} {}",
            self.created_ms, self.fresh_until, self.tokens_in, self.tokens_out, self.latency_ms
        )
    }

    /// Parses a `hit` field; `None` for anything [`HitMeta::encode`] would not have written.
    /// One pass over the bytes (this runs on every hit).
    pub fn parse(b: &[u8]) -> Option<Self> {
        let rest = b.strip_prefix(b"1 ")?;
        let mut n = [0u64; 5];
        let mut i = 0;
        let mut digits = 0;
        // The number being read stays in a register, stored when it ends.
        let mut cur = 0u64;
        for &c in rest {
            if c == b' ' {
                // A separator ends a non-empty number, and the last number has none after it.
                if digits == 0 || i == n.len() - 1 {
                    return None;
                }
                n[i] = cur;
                i += 1;
                cur = 0;
                digits = 0;
            } else {
                let d = c.wrapping_sub(b'0');
                if d > 9 {
                    return None;
                }
                // Up to 19 digits cannot overflow: no checked (slower, serial) arithmetic.
                cur = if digits < 19 {
                    cur * 10 + u64::from(d)
                } else {
                    cur.checked_mul(10)?.checked_add(u64::from(d))?
                };
                digits += 1;
            }
        }
        if digits == 0 || i != n.len() - 1 {
            return None;
        }
        n[i] = cur;
        let [created_ms, fresh_until, tokens_in, tokens_out, latency_ms] = n;
        Some(HitMeta {
            created_ms,
            fresh_until,
            tokens_in,
            tokens_out,
            latency_ms,
        })
    }
}

/// A found entry. Its key stays open while it lives: a v2 entry's answer is read in place.
pub struct Hit {
    ctx: *mut raw::RedisModuleCtx,
    key: *mut raw::RedisModuleKey,
    /// Format 1: the answer's copy (freed on drop); NULL for a v2 entry.
    copy: *mut raw::RedisModuleString,
    answer_ptr: *const u8,
    answer_len: usize,
    /// The sources part, in place like the answer (empty: none).
    sources_ptr: *const u8,
    sources_len: usize,
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

impl Hit {
    /// The answer's bytes.
    pub fn answer(&self) -> &[u8] {
        // SAFETY: a non-NULL pointer into the open key's string (v2) or into `copy`, both
        // alive as long as `self`.
        unsafe { std::slice::from_raw_parts(self.answer_ptr, self.answer_len) }
    }

    /// The sources part (ids joined by `\n`; empty: none).
    pub fn sources(&self) -> &[u8] {
        // SAFETY: as for `answer`; dangling only with a zero length.
        unsafe { std::slice::from_raw_parts(self.sources_ptr, self.sources_len) }
    }
}

impl Drop for Hit {
    fn drop(&mut self) {
        // SAFETY: `copy` came from HashGet and `key` from OpenKey, in this command's context.
        unsafe {
            if !self.copy.is_null() {
                raw::RedisModule_FreeString.unwrap()(self.ctx, self.copy);
            }
            raw::RedisModule_CloseKey.unwrap()(self.key);
        }
    }
}

pub enum Lookup {
    Hit(Hit),
    Miss,
    /// The key holds something that is not an entry (someone wrote it with other commands).
    WrongType,
}

/// Reads a number field the way older builds wrote it (decimal, or empty), and frees it.
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

/// Parses the `hit` field (NULL if absent) and frees it.
unsafe fn take_hit_meta(
    ctx: *mut raw::RedisModuleCtx,
    s: *mut raw::RedisModuleString,
) -> Option<HitMeta> {
    if s.is_null() {
        return None;
    }
    let meta = bytes_of(s).and_then(HitMeta::parse);
    raw::RedisModule_FreeString.unwrap()(ctx, s);
    meta
}

/// The readable fields of an entry without a usable `hit` field.
unsafe fn read_readable_fields(
    ctx: *mut raw::RedisModuleCtx,
    k: *mut raw::RedisModuleKey,
    meta: bool,
) -> HitMeta {
    let f = fields();
    let mut v: [*mut raw::RedisModuleString; 5] = [ptr::null_mut(); 5];
    let [ti, to, lat, fresh, cr] = &mut v;
    let end = ptr::null_mut::<raw::RedisModuleString>();
    // `created` only for WITHMETA: a NULL field name ends the list there, and HashGet reads
    // no further arguments.
    let created_field = if meta { f[CREATED] } else { end };
    raw::RedisModule_HashGet.unwrap()(
        k,
        raw::REDISMODULE_HASH_NONE as c_int,
        f[TOKENS_IN],
        ti as *mut _,
        f[TOKENS_OUT],
        to as *mut _,
        f[LATENCY_MS],
        lat as *mut _,
        f[FRESH_UNTIL],
        fresh as *mut _,
        created_field,
        cr as *mut _,
        end,
    );
    HitMeta {
        tokens_in: to_u64(ctx, v[0]),
        tokens_out: to_u64(ctx, v[1]),
        latency_ms: to_u64(ctx, v[2]),
        fresh_until: to_u64(ctx, v[3]),
        created_ms: to_u64(ctx, v[4]),
    }
}

/// Looks up the entry at `key`; `meta` also reads its creation time and remaining TTL.
/// A v2 hit allocates nothing of ours when the key's name is kept (a hot key): the key is
/// opened, its string read in place and parsed, and the answer is a slice of it.
///
/// # Safety
/// `ctx` must be the context of the command being executed, on the main thread.
pub unsafe fn lookup(ctx: *mut raw::RedisModuleCtx, key: &[u8], meta: bool) -> Lookup {
    let kept = kept_key_name(key);
    // A NULL context: a string the module owns, so that a hit can keep it.
    let name = kept.unwrap_or_else(|| {
        raw::RedisModule_CreateString.unwrap()(ptr::null_mut(), key.as_ptr().cast(), key.len())
    });
    let k = raw::RedisModule_OpenKey.unwrap()(ctx, name, raw::REDISMODULE_READ as c_int);
    let result = if k.is_null() {
        Lookup::Miss
    } else {
        let kind = raw::RedisModule_KeyType.unwrap()(k);
        if kind == raw::REDISMODULE_KEYTYPE_STRING as c_int {
            match open_v2(k) {
                Some(e) => Lookup::Hit(make_hit(
                    ctx,
                    k,
                    ptr::null_mut(),
                    (e.answer, e.sources),
                    &e.meta,
                    meta,
                )),
                None => Lookup::WrongType,
            }
        } else if kind == raw::REDISMODULE_KEYTYPE_HASH as c_int {
            lookup_v1(ctx, k, meta)
        } else if kind == raw::REDISMODULE_KEYTYPE_EMPTY as c_int {
            Lookup::Miss
        } else {
            Lookup::WrongType
        }
    };
    // A hit closes its key when dropped.
    if !k.is_null() && !matches!(result, Lookup::Hit(_)) {
        raw::RedisModule_CloseKey.unwrap()(k);
    }
    if kept.is_none() {
        if matches!(result, Lookup::Hit(_)) {
            keep_key_name(key, name);
        } else {
            raw::RedisModule_FreeString.unwrap()(ptr::null_mut(), name);
        }
    }
    result
}

/// A hit on the entry open at `k`, whose answer and sources part are `parts` (in place, or
/// the answer in `copy`).
unsafe fn make_hit(
    ctx: *mut raw::RedisModuleCtx,
    k: *mut raw::RedisModuleKey,
    copy: *mut raw::RedisModuleString,
    parts: (&[u8], &[u8]),
    m: &HitMeta,
    meta: bool,
) -> Hit {
    let (answer, sources) = parts;
    let stale = m.fresh_until > 0 && (now_ms().max(0) as u64) > m.fresh_until;
    let (created_ms, ttl_ms) = if meta {
        (
            Some(m.created_ms.min(i64::MAX as u64) as i64),
            Some(raw::RedisModule_GetExpire.unwrap()(k)),
        )
    } else {
        (None, None)
    };
    Hit {
        ctx,
        key: k,
        copy,
        answer_ptr: if answer.is_empty() {
            ptr::NonNull::dangling().as_ptr()
        } else {
            answer.as_ptr()
        },
        answer_len: answer.len(),
        sources_ptr: if sources.is_empty() {
            ptr::NonNull::dangling().as_ptr()
        } else {
            sources.as_ptr()
        },
        sources_len: sources.len(),
        tokens_in: m.tokens_in,
        tokens_out: m.tokens_out,
        latency_ms: m.latency_ms,
        created_ms,
        ttl_ms,
        stale,
    }
}

/// The lookup of a format-1 entry (a hash) open at `k`.
unsafe fn lookup_v1(
    ctx: *mut raw::RedisModuleCtx,
    k: *mut raw::RedisModuleKey,
    meta: bool,
) -> Lookup {
    let f = fields();
    let mut answer: *mut raw::RedisModuleString = ptr::null_mut();
    let mut packed: *mut raw::RedisModuleString = ptr::null_mut();
    raw::RedisModule_HashGet.unwrap()(
        k,
        raw::REDISMODULE_HASH_NONE as c_int,
        f[ANSWER],
        &mut answer as *mut *mut raw::RedisModuleString,
        f[HIT],
        &mut packed as *mut *mut raw::RedisModuleString,
        ptr::null_mut::<raw::RedisModuleString>(),
    );
    let packed = take_hit_meta(ctx, packed);
    let Some(bytes) = bytes_of(answer) else {
        // A hash without an answer is not an entry we wrote: ask the backend.
        if !answer.is_null() {
            raw::RedisModule_FreeString.unwrap()(ctx, answer);
        }
        return Lookup::Miss;
    };
    let m = match packed {
        Some(m) => m,
        None => read_readable_fields(ctx, k, meta),
    };
    Lookup::Hit(make_hit(ctx, k, answer, (bytes, &[]), &m, meta))
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
    /// The documents the answer cites (see `crate::sources::encode`); empty: none.
    pub sources: &'a [u8],
    /// The cache generation the key was derived under (names the per-source sets; used
    /// only when this entry or the one it replaces cites sources).
    pub generation: &'a [u8],
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Unix µs: orders two commands run one after the other on the main thread (a millisecond
/// does not).
pub fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// A write was refused (out of memory, or a key of another type in the way).
#[derive(Debug)]
pub struct WriteRefused;

/// Writes an entry as one v2 string with one plain command that replicates (`!`) and
/// returns errors as replies (`E`): `SET <key> <value> PXAT <ms>`, which replicas and the AOF
/// receive as it is. Under `noeviction` the write also fails on OOM (`M`) rather than grow
/// past `maxmemory`. Under an evicting policy it is not checked: from a worker, Redis would
/// compare used memory with the limit without evicting first, and refuse nearly every paid
/// answer at the limit; the next command evicts as usual. A key holding something that is
/// not an entry is left alone (refused). The caller holds the Redis lock.
pub fn write(ctx: &Context, e: &NewEntry<'_>) -> Result<(), WriteRefused> {
    let created = now_ms();
    let evicts = ctx.get_flags().contains(ContextFlags::EVICTED);
    // Script mode (`S`): refused like a client's write when `min-replicas-to-write` is not met
    // or the server cannot persist (a timer's write would otherwise skip both checks).
    let opts = if evicts {
        CallOptionsBuilder::new()
            .replicate()
            .script_mode()
            .errors_as_replies()
            .build()
    } else {
        CallOptionsBuilder::new()
            .replicate()
            .script_mode()
            .verify_oom()
            .errors_as_replies()
            .build()
    };
    // The sources of the entry this one replaces, if it cited any.
    let Some(old_sources) = (unsafe { replaced_sources(ctx.ctx, e.key) }) else {
        return Err(WriteRefused);
    };
    let fresh_until_ms = created + e.ttl_secs * 1000;
    let meta = HitMeta {
        created_ms: created.max(0) as u64,
        fresh_until: if e.stale_secs > 0 {
            fresh_until_ms.max(0) as u64
        } else {
            0
        },
        tokens_in: e.tokens_in.unwrap_or(0),
        tokens_out: e.tokens_out.unwrap_or(0),
        latency_ms: e.latency_ms.unwrap_or(0),
    };
    let value = v2::encode_cited(
        &meta,
        e.model,
        e.question,
        e.answer,
        e.sem.unwrap_or_default(),
        e.sources,
    );
    let expire_at = created + (e.ttl_secs + e.stale_secs) * 1000;
    let at = expire_at.to_string();
    let written: CallResult =
        ctx.call_ext("SET", &opts, &[e.key, &value, b"PXAT", at.as_bytes()][..]);
    if written.is_err() {
        return Err(WriteRefused);
    }
    if (!old_sources.is_empty() || !e.sources.is_empty())
        && links::relink(ctx, e.key, e.generation, &old_sources, e.sources, expire_at).is_err()
    {
        // An entry its sources cannot find could outlive an invalidation of them: a miss
        // is better than that.
        let opts = CallOptionsBuilder::new()
            .replicate()
            .errors_as_replies()
            .build();
        let _: CallResult = ctx.call_ext("UNLINK", &opts, &[e.key][..]);
        return Err(WriteRefused);
    }
    crate::stats::STORED.bump();
    Ok(())
}

/// `None` if `key` holds a value that is not an entry of either format (which a write must
/// not overwrite); else the sources part of the entry there (empty: none, or no entry; no
/// allocation then). Opened without touching its LRU/LFU clock.
///
/// # Safety
/// Main thread (or the module lock held).
unsafe fn replaced_sources(ctx: *mut raw::RedisModuleCtx, key: &[u8]) -> Option<Vec<u8>> {
    let name = raw::RedisModule_CreateString.unwrap()(ctx, key.as_ptr().cast(), key.len());
    let mode = raw::REDISMODULE_READ | raw::REDISMODULE_OPEN_KEY_NOTOUCH;
    let k = raw::RedisModule_OpenKey.unwrap()(ctx, name, mode as c_int);
    let found = if k.is_null() {
        Some(Vec::new())
    } else {
        let kind = raw::RedisModule_KeyType.unwrap()(k);
        let found = if kind == raw::REDISMODULE_KEYTYPE_STRING as c_int {
            open_v2(k).map(|e| e.sources.to_vec())
        } else if kind == raw::REDISMODULE_KEYTYPE_HASH as c_int
            || kind == raw::REDISMODULE_KEYTYPE_EMPTY as c_int
        {
            Some(Vec::new())
        } else {
            None
        };
        raw::RedisModule_CloseKey.unwrap()(k);
        found
    };
    raw::RedisModule_FreeString.unwrap()(ctx, name);
    found
}

/// A whole entry, for `QA.ENTRY`.
pub struct Described {
    /// 1: a hash written by an older build; 2: a v2 string.
    pub format: i64,
    pub question: Vec<u8>,
    pub model: Vec<u8>,
    pub answer: Vec<u8>,
    pub meta: HitMeta,
    /// Remaining TTL in ms (-1: none).
    pub ttl_ms: i64,
    /// Length of the embedding (0: none).
    pub sem_bytes: usize,
    /// The sources part (empty: none).
    pub sources: Vec<u8>,
}

/// The key holds something that is not an entry.
#[derive(Debug)]
pub struct NotAnEntry;

/// The whole entry at `key`: `Ok(None)` if there is none, [`NotAnEntry`] if the key holds
/// something else.
///
/// # Safety
/// `ctx` must be the running command's context, on the main thread.
pub unsafe fn describe(
    ctx: *mut raw::RedisModuleCtx,
    key: &[u8],
) -> Result<Option<Described>, NotAnEntry> {
    let name = raw::RedisModule_CreateString.unwrap()(ctx, key.as_ptr().cast(), key.len());
    let k = raw::RedisModule_OpenKey.unwrap()(ctx, name, raw::REDISMODULE_READ as c_int);
    let out = describe_open(ctx, k);
    if !k.is_null() {
        raw::RedisModule_CloseKey.unwrap()(k);
    }
    raw::RedisModule_FreeString.unwrap()(ctx, name);
    out
}

unsafe fn describe_open(
    ctx: *mut raw::RedisModuleCtx,
    k: *mut raw::RedisModuleKey,
) -> Result<Option<Described>, NotAnEntry> {
    if k.is_null() {
        return Ok(None);
    }
    let kind = raw::RedisModule_KeyType.unwrap()(k);
    let ttl_ms = raw::RedisModule_GetExpire.unwrap()(k);
    if kind == raw::REDISMODULE_KEYTYPE_EMPTY as c_int {
        return Ok(None);
    }
    if kind == raw::REDISMODULE_KEYTYPE_STRING as c_int {
        let e = open_v2(k).ok_or(NotAnEntry)?;
        return Ok(Some(Described {
            format: 2,
            question: e.question.to_vec(),
            model: v2::unescape(e.model_escaped),
            answer: e.answer.to_vec(),
            meta: e.meta,
            ttl_ms,
            sem_bytes: e.sem.len(),
            sources: e.sources.to_vec(),
        }));
    }
    let fields = read_open_fields(
        ctx,
        k,
        [
            c"answer",
            c"question",
            c"model",
            c"sem",
            c"hit",
            c"created",
            c"fresh_until",
            c"tokens_in",
            c"tokens_out",
            c"latency_ms",
        ],
    )
    .ok_or(NotAnEntry)?;
    let [answer, question, model, sem, hit, rest @ ..] = fields;
    let Some(answer) = answer else {
        // Not an entry we wrote (a lookup treats it as a miss).
        return Ok(None);
    };
    let num = |v: &Option<Vec<u8>>| {
        v.as_deref()
            .and_then(|b| std::str::from_utf8(b).ok()?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let meta = hit
        .as_deref()
        .and_then(HitMeta::parse)
        .unwrap_or_else(|| HitMeta {
            created_ms: num(&rest[0]),
            fresh_until: num(&rest[1]),
            tokens_in: num(&rest[2]),
            tokens_out: num(&rest[3]),
            latency_ms: num(&rest[4]),
        });
    Ok(Some(Described {
        format: 1,
        question: question.unwrap_or_default(),
        model: model.unwrap_or_default(),
        answer,
        meta,
        ttl_ms,
        sem_bytes: sem.map_or(0, |s| s.len()),
        sources: Vec::new(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hit_meta_round_trips() {
        let rows = [
            HitMeta::default(),
            HitMeta {
                created_ms: 1_795_711_556_260,
                fresh_until: 1_795_711_616_260,
                tokens_in: 7,
                tokens_out: 15,
                latency_ms: 2001,
            },
            HitMeta {
                created_ms: u64::MAX,
                fresh_until: u64::MAX,
                tokens_in: u64::MAX,
                tokens_out: u64::MAX,
                latency_ms: u64::MAX,
            },
        ];
        for m in rows {
            assert_eq!(HitMeta::parse(m.encode().as_bytes()), Some(m), "{m:?}");
        }
        assert_eq!(
            HitMeta::parse(b"1 1795711556260 0 7 15 2001"),
            Some(HitMeta {
                created_ms: 1_795_711_556_260,
                fresh_until: 0,
                tokens_in: 7,
                tokens_out: 15,
                latency_ms: 2001,
            })
        );
    }

    /// Anything `encode` would not write is refused (the readable fields are read instead).
    #[test]
    fn hit_meta_refuses_what_it_did_not_write() {
        let rows: &[&[u8]] = &[
            b"",                                     // empty
            b"1",                                    // version only
            b"1 ",                                   // version and a separator only
            b"1 1 2 3 4 ",                           // last number missing after a separator
            b"1 1 2 3 4",                            // one number short
            b"1 1 2 3 4 5 6",                        // one too many
            b"2 1 2 3 4 5",                          // unknown version
            b"01 1 2 3 4 5",                         // version spelled otherwise
            b" 1 1 2 3 4 5",                         // leading space
            b"1 1 2 3 4 5 ",                         // trailing space
            b"1  1 2 3 4 5",                         // double space
            b"1 1 2 3 4 -5",                         // sign
            b"1 1 2 3 4 +5",                         // sign
            b"1 1 2 3 4 5\n",                        // newline
            b"1 1 2 3 4 0x5",                        // hex
            b"1 1 2 3 4 18446744073709551616",       // u64::MAX + 1
            b"1 1 2 3 4 99999999999999999999999999", // far too long
            b"1\t1\t2\t3\t4\t5",                     // tabs
            b"1 1 2 3 4 \xff",                       // not UTF-8
            b"\xff\xfe\x00\x01",                     // binary
            b"1 \x00 2 3 4 5",                       // NUL
            b"1 1 2 3 4 \xd9\xa5",                   // a non-ASCII digit (Arabic-Indic 5)
        ];
        for r in rows {
            assert_eq!(HitMeta::parse(r), None, "{:?}", String::from_utf8_lossy(r));
        }
    }

    /// The shortest entry a write can make (a 13-digit creation time, one byte of model,
    /// question and answer) is longer than any string Redis may keep embedded: `open_v2`
    /// skips those without losing an entry.
    #[test]
    fn every_written_entry_is_longer_than_an_embedded_string() {
        let meta = HitMeta {
            created_ms: 1_000_000_000_000,
            ..HitMeta::default()
        };
        let shortest = v2::encode(&meta, b"m", b"q", b"a", b"");
        assert!(shortest.len() > MAX_EMBEDDED, "{}", shortest.len());
        assert!(v2::decode(&shortest).is_some());
    }

    #[test]
    fn key_name_slots_are_in_range_and_spread() {
        let mut used = std::collections::HashSet::new();
        for i in 0..4096u32 {
            let key = format!(
                "qa:{{faq}}:{:064x}",
                u64::from(i).wrapping_mul(0x2545_F491_4F6C_DD1D)
            );
            let slot = key_name_slot(key.as_bytes());
            assert!(slot < 1 << KEY_NAME_SLOT_BITS);
            used.insert(slot);
        }
        assert!(used.len() > 200, "{} slots used", used.len());
        // Short and empty keys too (lookup takes any bytes).
        for key in [&b""[..], b"a", b"1234567", b"12345678"] {
            assert!(key_name_slot(key) < 1 << KEY_NAME_SLOT_BITS);
        }
    }

    #[test]
    fn hit_meta_never_panics_on_bytes() {
        // Every short string over an alphabet of the bytes that matter, plus some others.
        let alphabet = [b'1', b'0', b'9', b' ', b'-', 0u8, 0xff];
        let mut buf = Vec::new();
        for len in 0..=6u32 {
            for mut n in 0..alphabet.len().pow(len) {
                buf.clear();
                for _ in 0..len {
                    buf.push(alphabet[n % alphabet.len()]);
                    n /= alphabet.len();
                }
                let _ = HitMeta::parse(&buf);
            }
        }
    }
}
