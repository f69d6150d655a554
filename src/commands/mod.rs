//! Command handlers and their registration. Handlers are plain `extern "C"` functions so the
//! hit path pays for nothing it does not use (no argument vector, no wrapper allocation), and
//! every one runs inside [`guarded`] so no panic reaches Redis.

pub mod get;

use std::ffi::CString;
use std::os::raw::c_int;
use std::panic::{catch_unwind, AssertUnwindSafe};

use redis_module::{raw, Context, Status};

use crate::error;

/// The arguments of a command as byte slices, without copying.
pub struct Args {
    argv: *mut *mut raw::RedisModuleString,
    argc: usize,
}

impl Args {
    /// # Safety
    /// `argv`/`argc` must be the arguments Redis passed to the running command.
    pub unsafe fn new(argv: *mut *mut raw::RedisModuleString, argc: c_int) -> Self {
        Args {
            argv,
            argc: argc.max(0) as usize,
        }
    }

    pub fn get(&self, i: usize) -> &[u8] {
        if i >= self.argc {
            return &[];
        }
        let mut len = 0usize;
        // SAFETY: i < argc, and Redis keeps argv alive for the whole command.
        unsafe {
            let s = *self.argv.add(i);
            let p = raw::RedisModule_StringPtrLen.unwrap()(s, &mut len);
            if p.is_null() {
                &[]
            } else {
                std::slice::from_raw_parts(p.cast::<u8>(), len)
            }
        }
    }

    /// Calls `f` with the arguments after the command name, without allocating for the usual
    /// short commands.
    pub fn with_slices<R>(&self, f: impl FnOnce(&[&[u8]]) -> R) -> R {
        const INLINE: usize = 12;
        if self.argc <= INLINE + 1 {
            let mut buf: [&[u8]; INLINE] = [&[]; INLINE];
            for (i, slot) in buf.iter_mut().enumerate().take(self.argc.saturating_sub(1)) {
                *slot = self.get(i + 1);
            }
            f(&buf[..self.argc.saturating_sub(1)])
        } else {
            let v: Vec<&[u8]> = (1..self.argc).map(|i| self.get(i)).collect();
            f(&v)
        }
    }
}

/// Replies with an error (`text` starts with its code).
///
/// # Safety
/// `ctx` must be a live command context.
pub unsafe fn reply_error(ctx: *mut raw::RedisModuleCtx, text: &str) -> c_int {
    let msg = crate::blocked::error_reply(text);
    raw::RedisModule_ReplyWithError.unwrap()(ctx, msg.as_ptr());
    raw::REDISMODULE_OK as c_int
}

/// Runs a handler; a panic becomes an error reply instead of a crashed server.
pub(crate) fn guarded(ctx: *mut raw::RedisModuleCtx, f: impl FnOnce() -> c_int) -> c_int {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(status) => status,
        Err(_) => {
            Context::new(ctx).log_warning("redis-qa: a command handler panicked; replied an error");
            unsafe { reply_error(ctx, &format!("ERR {}", error::INTERNAL)) }
        }
    }
}

type Handler =
    extern "C" fn(*mut raw::RedisModuleCtx, *mut *mut raw::RedisModuleString, c_int) -> c_int;

struct CommandDef {
    name: &'static str,
    handler: Handler,
    flags: &'static str,
    arity: c_int,
    summary: &'static str,
    complexity: &'static str,
}

const COMMANDS: &[CommandDef] = &[CommandDef {
    name: "qa.get",
    handler: get::qa_get,
    // readonly: served on replicas and for read-only users (a hit writes nothing; a miss
    // writes through replicated calls from a worker). may-replicate: it can cause writes.
    flags: "readonly may-replicate",
    arity: -3,
    summary: "Returns the cached answer to a question, asking the LLM backend on a miss",
    complexity: "O(N) in the question's length on a hit",
}];

/// Registers every command, with a read-only key spec on the cache name (argument 1).
pub fn register(ctx: &Context) -> Status {
    crate::worker::start_reaper();
    for def in COMMANDS {
        if register_one(ctx, def).is_err() {
            ctx.log_warning(&format!("redis-qa: could not register {}", def.name));
            return Status::Err;
        }
    }
    Status::Ok
}

fn register_one(ctx: &Context, def: &CommandDef) -> Result<(), ()> {
    let name = CString::new(def.name).map_err(|_| ())?;
    let flags = CString::new(def.flags).map_err(|_| ())?;
    let created = unsafe {
        raw::RedisModule_CreateCommand.unwrap()(
            ctx.ctx,
            name.as_ptr(),
            Some(def.handler),
            flags.as_ptr(),
            1,
            1,
            1,
        )
    };
    if created != raw::REDISMODULE_OK as c_int {
        return Err(());
    }
    set_info(ctx, &name, def);
    Ok(())
}

/// Declares the cache name a read-only key (`RO ACCESS`) so ACL `%R~pattern` users and cluster
/// routing treat it as one. Redis copies everything it is given here.
fn set_info(ctx: &Context, name: &CString, def: &CommandDef) {
    let (Some(get_command), Some(set_command_info)) =
        (unsafe { raw::RedisModule_GetCommand }, unsafe {
            raw::RedisModule_SetCommandInfo
        })
    else {
        return; // Older than Redis 7: legacy key positions still apply.
    };
    let cmd = unsafe { get_command(ctx.ctx, name.as_ptr()) };
    if cmd.is_null() {
        return;
    }
    let version = raw::RedisModuleCommandInfoVersion {
        version: 1,
        sizeof_historyentry: std::mem::size_of::<raw::RedisModuleCommandHistoryEntry>(),
        sizeof_keyspec: std::mem::size_of::<raw::RedisModuleCommandKeySpec>(),
        sizeof_arg: std::mem::size_of::<raw::RedisModuleCommandArg>(),
    };
    // SAFETY: all-zero is a valid (terminating) key spec.
    let mut specs: [raw::RedisModuleCommandKeySpec; 2] = unsafe { std::mem::zeroed() };
    specs[0].flags = (raw::REDISMODULE_CMD_KEY_RO | raw::REDISMODULE_CMD_KEY_ACCESS) as u64;
    specs[0].begin_search_type = raw::RedisModuleKeySpecBeginSearchType_REDISMODULE_KSPEC_BS_INDEX;
    specs[0].bs.index.pos = 1;
    specs[0].find_keys_type = raw::RedisModuleKeySpecFindKeysType_REDISMODULE_KSPEC_FK_RANGE;
    specs[0].fk.range.lastkey = 0;
    specs[0].fk.range.keystep = 1;
    specs[0].fk.range.limit = 0;
    let summary = CString::new(def.summary).unwrap_or_default();
    let complexity = CString::new(def.complexity).unwrap_or_default();
    let since = c"0.1.0";
    // SAFETY: zeroed is the "absent" value for every pointer field.
    let mut info: raw::RedisModuleCommandInfo = unsafe { std::mem::zeroed() };
    info.version = &version;
    info.summary = summary.as_ptr();
    info.complexity = complexity.as_ptr();
    info.since = since.as_ptr();
    info.arity = def.arity;
    info.key_specs = specs.as_mut_ptr();
    if unsafe { set_command_info(cmd, &info) } != raw::REDISMODULE_OK as c_int {
        ctx.log_warning(&format!(
            "redis-qa: could not set command info for {}",
            def.name
        ));
    }
}
