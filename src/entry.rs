//! Entries on the main thread, read with the low-level key API (no `RedisModule_Call`: it
//! costs microseconds, and this is the hit path).
//!
//! Entry format v2 (one Redis string per entry) is encoded and decoded in [`v2`].

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

/// Copies of the fields `names` of the hash open at `k`; `None` if `k` is not a hash.
///
/// # Safety
/// Main thread (or the module lock held), `k` NULL or open in `ctx`.
pub unsafe fn read_open_fields<const N: usize>(
    ctx: *mut raw::RedisModuleCtx,
    k: *mut raw::RedisModuleKey,
    names: [&std::ffi::CStr; N],
) -> Option<[Option<Vec<u8>>; N]> {
    if k.is_null() || raw::RedisModule_KeyType.unwrap()(k) != raw::REDISMODULE_KEYTYPE_HASH as c_int
    {
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

/// What a hit needs besides the answer, kept in the entry's `hit` field so that a hit reads
/// two fields instead of six. Text, so `HGETALL` stays readable:
/// `1 <created> <fresh_until> <tokens_in> <tokens_out> <latency_ms>` (a format version,
/// then unsigned decimals separated by one space; `fresh_until` 0 means no stale grace, an
/// unknown count is 0). Anything else (another version included) is not trusted: the
/// readable fields are read instead.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct HitMeta {
    /// Unix ms.
    pub created_ms: u64,
    /// Unix ms when the TTL ended and the stale grace began; 0: no grace.
    pub fresh_until: u64,
    pub tokens_in: u64,
    pub tokens_out: u64,
    pub latency_ms: u64,
}

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
        if kind == raw::REDISMODULE_KEYTYPE_HASH as c_int {
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
            if answer.is_null() {
                // A hash without an answer is not an entry we wrote: ask the backend.
                Lookup::Miss
            } else {
                let m = match packed {
                    Some(m) => m,
                    None => read_readable_fields(ctx, k, meta),
                };
                let stale = m.fresh_until > 0 && (now_ms().max(0) as u64) > m.fresh_until;
                let (created_ms, ttl_ms) = if meta {
                    (
                        Some(m.created_ms.min(i64::MAX as u64) as i64),
                        Some(raw::RedisModule_GetExpire.unwrap()(k)),
                    )
                } else {
                    (None, None)
                };
                Lookup::Hit(Hit {
                    ctx,
                    answer,
                    tokens_in: m.tokens_in,
                    tokens_out: m.tokens_out,
                    latency_ms: m.latency_ms,
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
    if kept.is_none() {
        if matches!(result, Lookup::Hit(_)) {
            keep_key_name(key, name);
        } else {
            raw::RedisModule_FreeString.unwrap()(ptr::null_mut(), name);
        }
    }
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
    let fresh_until_ms = created + e.ttl_secs * 1000;
    let fresh_until = fresh_until_ms.to_string();
    let hit = HitMeta {
        created_ms: created.max(0) as u64,
        fresh_until: if e.stale_secs > 0 {
            fresh_until_ms.max(0) as u64
        } else {
            0
        },
        tokens_in: e.tokens_in.unwrap_or(0),
        tokens_out: e.tokens_out.unwrap_or(0),
        latency_ms: e.latency_ms.unwrap_or(0),
    }
    .encode();
    // `answer` and `hit` first: in a small (listpack) hash a hit finds them without
    // scanning past the other fields.
    let mut fields: Vec<&[u8]> = vec![
        e.key,
        b"answer",
        e.answer,
        b"hit",
        hit.as_bytes(),
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
