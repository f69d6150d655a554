//! The bundled demo backend: an OpenAI-compatible server that answers after a delay, so the
//! cache's effect is visible without an API key.
//!
//! `cargo run --release --example demo_backend -- [ADDR] [DELAY_MS]`
//! (defaults: 127.0.0.1:8089, 2000 ms). Point `qa.backend-url` at `http://ADDR/v1`.

#[path = "../tests/common/backend.rs"]
mod backend;

use std::time::Duration;

fn main() {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:8089".into());
    let delay_ms: u64 = args.next().and_then(|d| d.parse().ok()).unwrap_or(2000);
    let b = backend::Backend::start_on(&addr, Duration::from_millis(delay_ms));
    println!("demo backend on {} ({} ms per answer)", b.url(), delay_ms);
    loop {
        std::thread::park();
    }
}
