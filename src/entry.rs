//! Reading entries on the main thread with the low-level key API (no `RedisModule_Call`:
//! it costs microseconds, and this is the hit path).

use std::os::raw::c_int;
use std::ptr;

use redis_module::raw;

pub enum Lookup {
    /// The answer was found and already sent as the reply.
    Replied,
    Miss,
    /// The key exists but is not a hash (someone wrote it with other commands).
    WrongType,
}

/// The field name `answer` as a Redis string, made once: `RedisModule_HashGet` with a C
/// string field would create and free a string object on every hit.
struct FieldName(*mut raw::RedisModuleString);

// SAFETY: created once under the Redis lock, then only read (by the main thread).
unsafe impl Send for FieldName {}
unsafe impl Sync for FieldName {}

static ANSWER_FIELD: std::sync::OnceLock<FieldName> = std::sync::OnceLock::new();

/// The `answer` field name, created on first use (on the main thread, under the lock).
fn answer_field() -> *mut raw::RedisModuleString {
    ANSWER_FIELD
        .get_or_init(|| {
            // SAFETY: a NULL context makes a string owned by the module, never freed.
            FieldName(unsafe {
                raw::RedisModule_CreateString.unwrap()(ptr::null_mut(), c"answer".as_ptr(), 6)
            })
        })
        .0
}

/// Replies with the `answer` field of the hash at `key` if there is one.
///
/// # Safety
/// `ctx` must be the context of the command being executed, on the main thread.
pub unsafe fn reply_if_hit(ctx: *mut raw::RedisModuleCtx, key: &[u8]) -> Lookup {
    let name = raw::RedisModule_CreateString.unwrap()(ctx, key.as_ptr().cast(), key.len());
    let k = raw::RedisModule_OpenKey.unwrap()(ctx, name, raw::REDISMODULE_READ as c_int);
    let result = if k.is_null() {
        Lookup::Miss
    } else {
        let kind = raw::RedisModule_KeyType.unwrap()(k);
        if kind == raw::REDISMODULE_KEYTYPE_HASH as c_int {
            let mut value: *mut raw::RedisModuleString = ptr::null_mut();
            raw::RedisModule_HashGet.unwrap()(
                k,
                raw::REDISMODULE_HASH_NONE as c_int,
                answer_field(),
                &mut value as *mut *mut raw::RedisModuleString,
                ptr::null_mut::<raw::RedisModuleString>(),
            );
            if value.is_null() {
                // A hash without an answer is not an entry we wrote: ask the backend.
                Lookup::Miss
            } else {
                raw::RedisModule_ReplyWithString.unwrap()(ctx, value);
                raw::RedisModule_FreeString.unwrap()(ctx, value);
                Lookup::Replied
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
