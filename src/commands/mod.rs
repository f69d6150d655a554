//! Command handlers and their registration. Handlers are plain `extern "C"` functions so the
//! hit path pays for nothing it does not use (no argument vector, no wrapper allocation), and
//! every one runs inside [`guarded`] so no panic reaches Redis.

pub mod args;
pub mod audit;
pub mod entries;
pub mod get;
pub mod info;
pub mod recent;
pub mod sources;
pub mod stream;

use std::ffi::CString;
use std::os::raw::c_int;
use std::panic::{catch_unwind, AssertUnwindSafe};

use redis_module::{raw, Context, Status};

use crate::{config, error, generation, keys, normalize};

use args::EntryArgs;

/// Scratch buffers reused by every command on the main thread, so a hit allocates nothing
/// of ours.
pub struct Scratch {
    /// The normalized question, when `normalized_ok` (see [`resolve_recent`]).
    pub normalized: String,
    pub normalized_ok: bool,
    pub key: Vec<u8>,
    /// The cache's stats slot, set by `resolve`.
    pub slot: Option<usize>,
    /// Set by `resolve`: the cache has no generation yet, so no entry of it is reachable
    /// (nothing to look up; a write must first make one, see `generation::ensure`).
    pub no_generation: bool,
    /// Keys of recently hit questions (see `recent`).
    pub recent: recent::Recent,
    /// Set by [`resolve_recent`] when the key was derived in full: where to keep it after a
    /// hit, under which derivation epoch (read before the derivation) and database.
    pub recent_under: Option<recent::Under>,
}

impl Scratch {
    /// After a hit on a key [`resolve_recent`] derived in full: keeps it for the next time
    /// the same question is asked.
    pub fn keep_recent(&mut self, cache: &[u8], question: &str) {
        if let Some(u) = self.recent_under.take() {
            self.recent
                .put(u, cache, question.as_bytes(), &self.key, self.slot);
        }
    }

    /// Makes `normalized` hold `question`'s normalization (a key taken from `recent` left
    /// it unset).
    pub fn ensure_normalized(&mut self, question: &str) {
        if !self.normalized_ok {
            normalize::normalize_into(question, &mut self.normalized);
            self.normalized_ok = true;
        }
    }
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = const {
        std::cell::RefCell::new(Scratch {
            normalized: String::new(),
            normalized_ok: false,
            key: Vec::new(),
            slot: None,
            no_generation: false,
            recent: recent::Recent::new(),
            recent_under: None,
        })
    };
}

/// Parses a command's arguments and runs `f` with them and the scratch buffers; every
/// failure becomes an error reply.
pub(crate) fn with_entry_args(
    ctx: *mut raw::RedisModuleCtx,
    argv: *mut *mut raw::RedisModuleString,
    argc: c_int,
    positional: usize,
    allowed: args::Allowed,
    f: impl FnOnce(&EntryArgs<'_>, &mut Scratch) -> c_int,
) -> c_int {
    guarded(ctx, || {
        // SAFETY: Redis passes the running command's arguments.
        let args = unsafe { Args::new(argv, argc) };
        args.with_slices(|a| match args::parse(a, positional, allowed) {
            Ok(parsed) => SCRATCH.with(|s| match s.try_borrow_mut() {
                Ok(mut scratch) => f(&parsed, &mut scratch),
                Err(_) => unsafe { reply_error(ctx, &format!("ERR {}", error::INTERNAL)) },
            }),
            Err(e) => unsafe { reply_error(ctx, e) },
        })
    })
}

/// Checks and normalizes the question and derives the entry key into `s.key`; returns the
/// question as asked.
///
/// # Safety
/// `ctx` must be the running command's context, on the main thread.
#[inline]
pub unsafe fn resolve<'a>(
    ctx: *mut raw::RedisModuleCtx,
    a: &EntryArgs<'a>,
    s: &mut Scratch,
) -> Result<&'a str, &'static str> {
    resolve_with(ctx, a, s, false)
}

/// [`resolve`] for a lookup: a question asked with the default model and system prompt and
/// no context may take its key from the recently hit ones (`recent`), leaving
/// `s.normalized` unset (`s.normalized_ok` false: see [`Scratch::ensure_normalized`]); if
/// not, `s.recent_under` says where to keep the key after a hit ([`Scratch::keep_recent`]).
///
/// # Safety
/// `ctx` must be the running command's context, on the main thread.
#[inline]
pub unsafe fn resolve_recent<'a>(
    ctx: *mut raw::RedisModuleCtx,
    a: &EntryArgs<'a>,
    s: &mut Scratch,
) -> Result<&'a str, &'static str> {
    resolve_with(ctx, a, s, true)
}

#[inline(always)]
unsafe fn resolve_with<'a>(
    ctx: *mut raw::RedisModuleCtx,
    a: &EntryArgs<'a>,
    s: &mut Scratch,
    use_recent: bool,
) -> Result<&'a str, &'static str> {
    let max_q = config::MAX_QUESTION_BYTES.get().max(0) as usize;
    let question = args::question_str(a.question, max_q)?;
    // `CONTEXT`: checked here, and its bytes are part of the key.
    let context = a.context();
    if context.is_some_and(|c| c.len() as i64 > config::MAX_CONTEXT_BYTES.get()) {
        return Err(error::CONTEXT_TOO_LONG);
    }
    let plain = a.model.is_none() && a.system.is_none() && context.is_none();
    s.recent_under = None;
    s.normalized_ok = false;
    if use_recent && plain {
        let under = recent::Under {
            at: recent::place(a.cache, question.as_bytes()),
            epoch: keys::derivation_epoch(),
            db: raw::RedisModule_GetSelectedDb.unwrap()(ctx),
        };
        if let Some(found) = s.recent.get(under, a.cache, question.as_bytes()) {
            s.key.clear();
            s.key.extend_from_slice(found.key);
            s.slot = found.stats_slot;
            s.no_generation = false;
            if found.touch {
                generation::touch_key(ctx, a.cache);
            }
            return Ok(question);
        }
        s.recent_under = Some(under);
    }
    normalize_checked(question, s)?;
    s.key.clear();
    let Scratch {
        normalized,
        key,
        slot,
        no_generation,
        ..
    } = s;
    generation::with_generation_state(ctx, a.cache, |generation, stats_slot, kept| {
        *slot = stats_slot;
        *no_generation = generation.is_empty();
        config::with_strings(&Context::new(ctx), |cfg| {
            match (a.model, a.system, context) {
                (None, None, None) => {
                    // The hit path: the cache's state for the default prefix, derived once
                    // per generation (and again after `qa.model`/`qa.system-prompt` change).
                    let state = match kept {
                        Some((epoch, state)) if *epoch == cfg.prefix_epoch => state,
                        _ => {
                            let state = keys::generation_state(&cfg.default_prefix, generation);
                            &mut kept.insert((cfg.prefix_epoch, state)).1
                        }
                    };
                    keys::entry_key_into(state, a.cache, normalized, key)
                }
                (m, sys, context) => {
                    let prefix = keys::prefix_state(
                        m.unwrap_or(&cfg.model),
                        sys.unwrap_or(&cfg.system_prompt),
                    );
                    let state = keys::generation_state(&prefix, generation);
                    match context {
                        None => keys::entry_key_into(&state, a.cache, normalized, key),
                        Some(c) => {
                            keys::entry_key_with_context_into(&state, a.cache, normalized, c, key)
                        }
                    }
                }
            }
        })
    })?;
    Ok(question)
}

/// Normalizes `question` into `s.normalized`; an empty result is refused.
fn normalize_checked(question: &str, s: &mut Scratch) -> Result<(), &'static str> {
    normalize::normalize_into(question, &mut s.normalized);
    if s.normalized.is_empty() {
        return Err(error::QUESTION_EMPTY);
    }
    s.normalized_ok = true;
    Ok(())
}

/// [`resolve`] for a command about to write an entry: gives the cache its first generation
/// if it has none (and derives the key again under it).
///
/// # Safety
/// `ctx` must be the running command's context, on the main thread, allowed to write.
pub unsafe fn resolve_for_write<'a>(
    ctx: *mut raw::RedisModuleCtx,
    a: &EntryArgs<'a>,
    s: &mut Scratch,
) -> Result<&'a str, &'static str> {
    let question = resolve(ctx, a, s)?;
    if s.no_generation && generation::ensure(ctx, a.cache)? {
        resolve(ctx, a, s)?;
    }
    Ok(question)
}

/// Whether the running command may not block its client (inside `MULTI`, a script, or a
/// context that denies blocking): then it cannot wait for a worker.
///
/// # Safety
/// `ctx` must be the running command's context.
pub unsafe fn cannot_block(ctx: *mut raw::RedisModuleCtx) -> bool {
    let flags = raw::RedisModule_GetContextFlags.unwrap()(ctx) as u32;
    flags
        & (raw::REDISMODULE_CTX_FLAGS_MULTI
            | raw::REDISMODULE_CTX_FLAGS_LUA
            | raw::REDISMODULE_CTX_FLAGS_DENY_BLOCKING)
        != 0
}

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
        // SAFETY: i < argc, and Redis keeps argv alive for the whole command.
        unsafe { crate::entry::bytes_of(*self.argv.add(i)).unwrap_or_default() }
    }

    /// `<command> <cache> [<keyword> <value>]`: the cache name (checked) and the option's
    /// value if it was given; anything else is a syntax error.
    pub fn cache_and_option(&self, keyword: &[u8]) -> Result<(&[u8], Option<&[u8]>), &'static str> {
        let cache = self.get(1);
        args::cache_name(cache)?;
        match self.argc {
            2 => Ok((cache, None)),
            4 if self.get(2).eq_ignore_ascii_case(keyword) => Ok((cache, Some(self.get(3)))),
            _ => Err(error::SYNTAX),
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

thread_local! {
    /// Whether the running handler has started its reply (see [`guarded`]).
    static REPLIED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Called before a handler's reply is written: a panic after it must not add a second one.
pub fn replied() {
    REPLIED.with(|r| r.set(true));
}

/// Replies with an error (`text` starts with its code).
///
/// # Safety
/// `ctx` must be a live command context.
pub unsafe fn reply_error(ctx: *mut raw::RedisModuleCtx, text: &str) -> c_int {
    replied();
    let msg = crate::blocked::error_reply(text);
    raw::RedisModule_ReplyWithError.unwrap()(ctx, msg.as_ptr());
    raw::REDISMODULE_OK as c_int
}

/// Runs a handler; a panic becomes an error reply instead of a crashed server, unless the
/// handler had already replied (a second reply would desynchronise the client's connection:
/// the panic is then only logged).
pub(crate) fn guarded(ctx: *mut raw::RedisModuleCtx, f: impl FnOnce() -> c_int) -> c_int {
    REPLIED.with(|r| r.set(false));
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(status) => status,
        Err(_) if REPLIED.with(|r| r.get()) => {
            Context::new(ctx)
                .log_warning("redis-qa: a command handler panicked after replying; nothing added");
            raw::REDISMODULE_OK as c_int
        }
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
    /// The cache name (argument 1) is written, not only read.
    write: bool,
    summary: &'static str,
    complexity: &'static str,
    /// ACL categories, where the server lets modules set them (Redis 7.2+, Valkey; Redis 7.0
    /// puts module commands in no category).
    acl: &'static str,
    /// Arguments for `COMMAND DOCS`, space-separated: `name:type` (`key`, `string`,
    /// `integer`), `TOKEN:type` for an option with a value, `TOKEN` alone for a flag; `?`
    /// first marks it optional.
    args: &'static str,
}

const COMMANDS: &[CommandDef] = &[
    CommandDef {
        name: "qa.get",
        handler: get::qa_get,
        // readonly: served on replicas and for read-only users (a hit writes nothing; a miss
        // writes through replicated calls from a worker). may-replicate: it can cause writes.
        flags: "readonly may-replicate",
        arity: -3,
        write: false,
        summary: "Returns the cached answer to a question, asking the LLM backend on a miss",
        complexity: "O(N) in the question's length on a hit",
        acl: "read",
        args: "cache:key question:string ?TTL:integer ?STALE:integer ?MODEL:string ?SYSTEM:string ?REFRESH ?WITHMETA",
    },
    CommandDef {
        name: "qa.stream",
        handler: stream::qa_stream,
        // As QA.GET: served on replicas for hits; a miss's writes (the stream, the entry)
        // are replicated writes of the module.
        flags: "readonly may-replicate",
        arity: -3,
        write: false,
        summary: "Returns the cached answer to a question, or on a miss the name of a stream the LLM's answer is written to as it arrives",
        complexity: "O(N) in the question's length",
        acl: "read",
        args: "cache:key question:string ?TTL:integer ?STALE:integer ?MODEL:string ?SYSTEM:string ?REFRESH",
    },
    CommandDef {
        name: "qa.peek",
        handler: entries::qa_peek,
        flags: "readonly fast",
        arity: -3,
        write: false,
        summary: "Returns the cached answer to a question, or nil; never calls the backend",
        complexity: "O(N) in the question's length",
        acl: "read fast",
        args: "cache:key question:string ?MODEL:string ?SYSTEM:string",
    },
    CommandDef {
        name: "qa.key",
        handler: entries::qa_key,
        flags: "readonly fast",
        arity: -3,
        write: false,
        summary: "Returns the normalized question and the entry key it maps to",
        complexity: "O(N) in the question's length",
        acl: "read fast",
        args: "cache:key question:string ?MODEL:string ?SYSTEM:string",
    },
    CommandDef {
        name: "qa.entry",
        handler: entries::qa_entry,
        flags: "readonly",
        arity: -3,
        write: false,
        summary: "Returns the whole entry of a question as a map (answer, question, model, times, tokens), or nil",
        complexity: "O(N) in the question's and the entry's length",
        acl: "read",
        args: "cache:key question:string ?MODEL:string ?SYSTEM:string",
    },
    CommandDef {
        name: "qa.set",
        handler: entries::qa_set,
        flags: "write deny-oom",
        arity: -4,
        write: true,
        summary: "Stores an answer for a question, as a miss would",
        complexity: "O(N) in the question's and answer's length",
        acl: "write",
        args: "cache:key question:string answer:string ?TTL:integer ?MODEL:string ?SYSTEM:string",
    },
    CommandDef {
        name: "qa.del",
        handler: entries::qa_del,
        flags: "write",
        arity: -3,
        write: true,
        summary: "Deletes the entry of a question; replies 1 if there was one, else 0",
        complexity: "O(N) in the question's length",
        acl: "write",
        args: "cache:key question:string ?MODEL:string ?SYSTEM:string",
    },
    CommandDef {
        name: "qa.invalidate",
        handler: entries::qa_invalidate,
        // Not fast: the SOURCE form removes every entry citing the ids.
        flags: "write",
        arity: -2,
        write: true,
        summary:
            "Stops every entry of a cache from being served, at once; replies the new generation token",
        complexity: "O(1); with SOURCE, O(N) in the entries citing the ids",
        acl: "write",
        args: "cache:key ?TOKEN:string ?SOURCE:string",
    },
    CommandDef {
        name: "qa.sources",
        handler: sources::qa_sources,
        flags: "readonly",
        arity: -3,
        write: false,
        summary: "Returns how many live entries of a cache cite a document (with WITHKEYS, their keys and questions)",
        complexity: "O(N) in the entries citing the document",
        acl: "read",
        args: "cache:key id:string ?WITHKEYS",
    },
    CommandDef {
        name: "qa.stats",
        handler: info::qa_stats,
        flags: "readonly",
        arity: -1,
        write: false,
        summary: "Returns hit, miss, cost and latency figures, global or for one cache",
        complexity: "O(1), O(W log W) for the latency window",
        acl: "read",
        args: "?cache:string",
    },
    CommandDef {
        name: "qa.resetstats",
        handler: info::qa_resetstats,
        // admin: like CONFIG RESETSTAT, for operators, not for the users who ask or store;
        // not write: the counters are this server's memory, not data (replicas reset theirs).
        flags: "admin",
        arity: -1,
        write: false,
        summary: "Zeroes the counters of QA.STATS and INFO qa, global or for one cache",
        complexity: "O(1) for a cache, O(N) in the caches counted without one",
        acl: "admin dangerous",
        args: "?cache:string",
    },
    CommandDef {
        name: "qa.audit",
        handler: audit::qa_audit,
        flags: "readonly",
        arity: -2,
        write: false,
        summary: "Lists the latest audited semantic hits whose fresh answer disagreed",
        complexity: "O(N) in the disagreements listed",
        acl: "read",
        args: "cache:key ?COUNT:integer",
    },
];

/// Registers every command, with a read-only key spec on the cache name (argument 1).
pub fn register(ctx: &Context) -> Status {
    crate::worker::start_reaper();
    crate::generation::subscribe(ctx);
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
    // QA.STATS and QA.RESETSTATS name no key (their cache argument is optional and reads no
    // key): a command whose arguments declare no key gets no key positions.
    let (first, last, step) = if !def.args.contains(":key") {
        (0, 0, 0)
    } else {
        (1, 1, 1)
    };
    let created = unsafe {
        raw::RedisModule_CreateCommand.unwrap()(
            ctx.ctx,
            name.as_ptr(),
            Some(def.handler),
            flags.as_ptr(),
            first,
            last,
            step,
        )
    };
    if created != raw::REDISMODULE_OK as c_int {
        return Err(());
    }
    set_info(ctx, &name, def);
    set_acl_categories(ctx, &name, def);
    Ok(())
}

/// Puts the command in its ACL categories when the server supports it (detected at load
/// time: the API is absent on Redis 7.0, where users need `+qa.get` and the like).
fn set_acl_categories(ctx: &Context, name: &CString, def: &CommandDef) {
    let (Some(get_command), Some(set_categories)) =
        (unsafe { raw::RedisModule_GetCommand }, unsafe {
            raw::RedisModule_SetCommandACLCategories
        })
    else {
        return;
    };
    let Ok(cats) = CString::new(def.acl) else {
        return;
    };
    let cmd = unsafe { get_command(ctx.ctx, name.as_ptr()) };
    if cmd.is_null()
        || unsafe { set_categories(cmd, cats.as_ptr()) } != raw::REDISMODULE_OK as c_int
    {
        ctx.log_warning(&format!(
            "redis-qa: could not set ACL categories for {}",
            def.name
        ));
    }
}

/// `COMMAND DOCS` arguments built from a [`CommandDef`]'s spec; owns the strings they point to
/// until Redis has copied them.
struct CommandArgs {
    _names: Vec<CString>,
    args: Vec<raw::RedisModuleCommandArg>,
}

impl CommandArgs {
    fn new(spec: &str) -> Self {
        let mut names = Vec::new();
        let mut args = Vec::new();
        for item in spec.split_whitespace() {
            let (optional, item) = match item.strip_prefix('?') {
                Some(rest) => (true, rest),
                None => (false, item),
            };
            let (name, kind) = item.split_once(':').unwrap_or((item, "token"));
            let token = name.chars().all(|c| c.is_ascii_uppercase());
            let type_ = match kind {
                "key" => raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_KEY,
                "integer" => raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_INTEGER,
                "token" => raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_PURE_TOKEN,
                _ => raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_STRING,
            };
            let (Ok(display), Ok(tok)) =
                (CString::new(name.to_ascii_lowercase()), CString::new(name))
            else {
                continue;
            };
            // SAFETY: all-zero is the "absent" value of every field.
            let mut arg: raw::RedisModuleCommandArg = unsafe { std::mem::zeroed() };
            arg.name = display.as_ptr();
            arg.type_ = type_;
            arg.key_spec_index = if kind == "key" { 0 } else { -1 };
            if token {
                arg.token = tok.as_ptr();
            }
            if optional {
                arg.flags = raw::REDISMODULE_CMD_ARG_OPTIONAL as c_int;
            }
            args.push(arg);
            names.push(display);
            names.push(tok);
        }
        // SAFETY: a zeroed argument ends the list.
        args.push(unsafe { std::mem::zeroed() });
        CommandArgs {
            _names: names,
            args,
        }
    }

    fn ptr(&self) -> *mut raw::RedisModuleCommandArg {
        self.args.as_ptr().cast_mut()
    }
}

/// Declares the cache name a key (read-only `RO ACCESS`, or `RW` for writing commands) so
/// ACL key patterns and cluster routing apply to it. Redis copies everything it is given.
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
    specs[0].flags = if def.write {
        (raw::REDISMODULE_CMD_KEY_RW | raw::REDISMODULE_CMD_KEY_UPDATE) as u64
    } else {
        (raw::REDISMODULE_CMD_KEY_RO | raw::REDISMODULE_CMD_KEY_ACCESS) as u64
    };
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
    let args = CommandArgs::new(def.args);
    info.args = args.ptr();
    if def.args.contains(":key") {
        info.key_specs = specs.as_mut_ptr();
    }
    if unsafe { set_command_info(cmd, &info) } != raw::REDISMODULE_OK as c_int {
        ctx.log_warning(&format!(
            "redis-qa: could not set command info for {}",
            def.name
        ));
    }
}
