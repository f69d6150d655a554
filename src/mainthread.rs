//! Work handed from a worker thread to Redis's main thread, run there with a real context.
//!
//! Writes made by a thread holding the module lock are not enough on Redis 8.0: when such a
//! write feeds a MONITOR client or a keyspace-notification subscriber, Redis 8.0.2 asserts it
//! runs on the main thread and aborts (redis/redis#14152). So a worker never writes: it posts
//! the write here. `RedisModule_EventLoopAddOneShot` (thread-safe) wakes the main thread, which
//! arms a zero-delay module timer; the timer's callback gets an ordinary context, so writes made
//! there are propagated to the AOF and replicas like any module write from a timer.

use std::os::raw::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicPtr, Ordering};
use std::time::Duration;

use redis_module::{raw, Context};

/// A piece of work for the main thread.
pub type Task = Box<dyn FnOnce(&Context) + Send>;

/// A detached context, made at load time, used only on the main thread to arm timers.
static TIMER_CTX: AtomicPtr<raw::RedisModuleCtx> = AtomicPtr::new(std::ptr::null_mut());

/// Called once from the module's `init` (main thread).
pub fn init(ctx: &Context) {
    let Some(detach) = (unsafe { raw::RedisModule_GetDetachedThreadSafeContext }) else {
        return;
    };
    let detached = unsafe { detach(ctx.ctx) };
    TIMER_CTX.store(detached, Ordering::Release);
}

/// Whether [`post`] can reach the main thread on this server.
pub fn available() -> bool {
    !TIMER_CTX.load(Ordering::Acquire).is_null()
        && unsafe { raw::RedisModule_EventLoopAddOneShot }.is_some()
        && unsafe { raw::RedisModule_CreateTimer }.is_some()
}

/// Runs `task` on the main thread as soon as it can. From any thread. Gives the task back if
/// the server offers no way to reach the main thread (the caller then does it itself).
pub fn post(task: Task) -> Result<(), Task> {
    let Some(add) = (unsafe { raw::RedisModule_EventLoopAddOneShot }) else {
        return Err(task);
    };
    if !available() {
        return Err(task);
    }
    let data = Box::into_raw(Box::new(task)) as *mut c_void;
    // SAFETY: `one_shot` takes ownership of `data` back; the call is thread-safe.
    let rc = unsafe { add(Some(one_shot), data) };
    if rc != raw::REDISMODULE_OK as i32 {
        // SAFETY: not handed over, so still ours.
        let task = unsafe { Box::from_raw(data as *mut Task) };
        return Err(*task);
    }
    Ok(())
}

/// On the main thread, from a task: runs `task` again after `delay` (e.g. to retry a write
/// once a pause is over).
pub fn post_after(ctx: &Context, delay: Duration, task: Task) {
    let data = Box::into_raw(Box::new(task)) as *mut c_void;
    arm(ctx.ctx, delay, data);
}

fn arm(ctx: *mut raw::RedisModuleCtx, delay: Duration, data: *mut c_void) {
    let Some(create) = (unsafe { raw::RedisModule_CreateTimer }) else {
        // Not reached (see `available`); dropping the task ends its flight.
        // SAFETY: not handed over, so still ours.
        drop(unsafe { Box::from_raw(data as *mut Task) });
        return;
    };
    let ms = delay.as_millis().min(i64::MAX as u128) as i64;
    // SAFETY: main thread; `on_timer` takes ownership of `data`.
    unsafe { create(ctx, ms, Some(on_timer), data) };
}

/// Main thread, from the event loop (no context of its own).
extern "C" fn one_shot(data: *mut c_void) {
    let ctx = TIMER_CTX.load(Ordering::Acquire);
    arm(ctx, Duration::ZERO, data);
}

/// Main thread, from a module timer: runs the task with the timer's context.
extern "C" fn on_timer(ctx: *mut raw::RedisModuleCtx, data: *mut c_void) {
    // SAFETY: made by `post`/`post_after` from a `Box<Task>`, handed over exactly once.
    let task = unsafe { Box::from_raw(data as *mut Task) };
    let ctx = Context::new(ctx);
    // No panic may reach Redis; a task that panics has dropped its guards (flights end).
    let _ = catch_unwind(AssertUnwindSafe(move || task(&ctx)));
}
