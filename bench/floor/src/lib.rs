//! `FLOOR.GET <key>`: the least a module command can do to answer from a key: open it, read
//! its string in place, reply its last 500 bytes (a 500-byte answer at the end of an entry),
//! close it. What `QA.GET` adds on top of this (argument checks, the question's key, the
//! entry's header, stats) is the module's own cost; this is the module API's.

use std::os::raw::c_int;

use redis_module::raw;

const ANSWER: usize = 500;

/// # Safety
/// Called by Redis when loading the module.
#[no_mangle]
pub unsafe extern "C" fn RedisModule_OnLoad(
    ctx: *mut raw::RedisModuleCtx,
    _argv: *mut *mut raw::RedisModuleString,
    _argc: c_int,
) -> c_int {
    let err = raw::Status::Err as c_int;
    if raw::Export_RedisModule_Init(
        ctx,
        c"floor".as_ptr(),
        1,
        raw::REDISMODULE_APIVER_1 as c_int,
    ) == err
    {
        return err;
    }
    match raw::RedisModule_CreateCommand {
        Some(create) => create(
            ctx,
            c"floor.get".as_ptr(),
            Some(floor_get),
            c"readonly fast".as_ptr(),
            1,
            1,
            1,
        ),
        None => err,
    }
}

extern "C" fn floor_get(
    ctx: *mut raw::RedisModuleCtx,
    argv: *mut *mut raw::RedisModuleString,
    argc: c_int,
) -> c_int {
    // SAFETY: Redis passes the command's arguments and context; every API pointer was set
    // by RedisModule_Init.
    unsafe {
        if argc != 2 {
            return raw::RedisModule_WrongArity.unwrap()(ctx);
        }
        let k = raw::RedisModule_OpenKey.unwrap()(ctx, *argv.add(1), raw::REDISMODULE_READ as c_int);
        if k.is_null() {
            return raw::RedisModule_ReplyWithNull.unwrap()(ctx);
        }
        let is_string =
            raw::RedisModule_KeyType.unwrap()(k) == raw::REDISMODULE_KEYTYPE_STRING as c_int;
        // As QA.GET: a short string may be embedded or an integer, which StringDMA would
        // convert in place; not read.
        if !is_string || raw::RedisModule_ValueLength.unwrap()(k) <= 44 {
            raw::RedisModule_CloseKey.unwrap()(k);
            return raw::RedisModule_ReplyWithNull.unwrap()(ctx);
        }
        let mut len = 0usize;
        let p = raw::RedisModule_StringDMA.unwrap()(k, &mut len, raw::REDISMODULE_READ as c_int);
        if p.is_null() {
            raw::RedisModule_CloseKey.unwrap()(k);
            return raw::RedisModule_ReplyWithNull.unwrap()(ctx);
        }
        let n = len.min(ANSWER);
        raw::RedisModule_ReplyWithStringBuffer.unwrap()(ctx, p.add(len - n), n);
        raw::RedisModule_CloseKey.unwrap()(k);
        raw::REDISMODULE_OK as c_int
    }
}
