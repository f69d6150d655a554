//! The bundled demo backend: an OpenAI-compatible server that answers after a delay, so the
//! cache's effect is visible without an API key.
//!
//! `cargo run --release --example demo_backend -- [ADDR] [DELAY_MS] [FIRST_MS] [PACE_MS]`
//! (defaults: 127.0.0.1:8089, 2000 ms). Point `qa.backend-url` at `http://ADDR/v1`.
//! Streamed requests (`QA.STREAM`'s) get their first word after FIRST_MS (default 300) and
//! one more every PACE_MS (default 200), like a model typing.

#[path = "../tests/common/backend.rs"]
mod backend;

use std::time::Duration;

fn main() {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:8089".into());
    let delay_ms: u64 = args.next().and_then(|d| d.parse().ok()).unwrap_or(2000);
    let first_ms: u64 = args.next().and_then(|d| d.parse().ok()).unwrap_or(300);
    let pace_ms: u64 = args.next().and_then(|d| d.parse().ok()).unwrap_or(200);
    let b = backend::Backend::start_on(&addr, Duration::from_millis(delay_ms));
    b.set_stream_first(Duration::from_millis(first_ms));
    b.set_pace(Duration::from_millis(pace_ms));
    println!(
        "demo backend on {} ({} ms per answer; streamed: first word after {} ms, then one every {} ms)",
        b.url(),
        delay_ms,
        first_ms,
        pace_ms
    );
    loop {
        std::thread::park();
    }
}
