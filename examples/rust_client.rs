//! redis-qa from Rust (redis-rs): ask the same question twice through `QA.GET` and time both
//! calls.
//!
//! `cargo run --release --example rust_client -- [--host HOST] [--port PORT] [--cache NAME] [QUESTION]`
//!
//! Host and port default to `$REDIS_HOST` / `$REDIS_PORT`, else 127.0.0.1:6379. The server
//! needs the redis-qa module loaded with `qa.backend-url` set (`make run` starts one with the
//! demo backend). In your own project: `redis = "0.27"` in `[dependencies]`.
//!
//! The first call is a cache miss (Redis asks the LLM backend and stores the answer), the
//! second a hit served from Redis. If Redis cannot be reached, `ask` falls back to calling
//! the LLM directly, so the application keeps working without the cache. Errors that Redis
//! itself replies (e.g. `ERR question is empty`) are returned: Redis is up, so falling back
//! would hide the problem.

use std::io::Write;
use std::time::{Duration, Instant};

/// STUB: replace with your real LLM call (an HTTP request to your provider). It only runs
/// when Redis is unreachable, so the cache is an optimisation, not a dependency.
pub fn call_llm_directly(question: &str) -> String {
    format!("(stub answer, LLM called directly) {question}")
}

/// A connection, or `None` (after saying why) when Redis cannot be reached.
pub fn connect(host: &str, port: u16, out: &mut impl Write) -> Option<redis::Connection> {
    let url = format!("redis://{host}:{port}/");
    let con = redis::Client::open(url.as_str())
        .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(2)))
        // A miss waits for the LLM: the read timeout must exceed the module's qa.timeout-ms.
        .and_then(|c| c.set_read_timeout(Some(Duration::from_secs(60))).map(|_| c));
    match con {
        Ok(c) => Some(c),
        Err(e) => {
            let _ = writeln!(out, "  redis unreachable ({e}); calling the LLM directly");
            None
        }
    }
}

/// The answer and where it came from: `"redis"`, or `"direct"` when Redis is unreachable.
pub fn ask(
    con: Option<&mut redis::Connection>,
    cache: &str,
    question: &str,
    out: &mut impl Write,
) -> redis::RedisResult<(String, &'static str)> {
    let Some(con) = con else {
        return Ok((call_llm_directly(question), "direct"));
    };
    match redis::cmd("QA.GET").arg(cache).arg(question).query(con) {
        Ok(answer) => Ok((answer, "redis")),
        // The connection failed (not an error reply from Redis): carry on without the cache.
        Err(e) if e.is_io_error() || e.is_connection_dropped() || e.is_timeout() => {
            writeln!(out, "  redis unreachable ({e}); calling the LLM directly")?;
            Ok((call_llm_directly(question), "direct"))
        }
        Err(e) => Err(e),
    }
}

/// `(hits, misses)` from `INFO qa` (server-wide), or `None` if they cannot be read.
pub fn qa_counters(con: &mut redis::Connection) -> Option<(u64, u64)> {
    let info: String = redis::cmd("INFO").arg("qa").query(con).ok()?;
    let field = |name: &str| -> Option<u64> {
        let prefix = format!("qa_{name}:");
        info.lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))?
            .trim()
            .parse()
            .ok()
    };
    Some((field("hits")?, field("misses")?))
}

/// One timed ask: milliseconds, how it was served, the answer.
#[derive(Debug)]
pub struct Asked {
    pub ms: f64,
    pub via: &'static str,
    pub answer: String,
}

/// Asks `question` twice and prints each ask to `out` (as `main` shows it).
pub fn ask_twice(
    host: &str,
    port: u16,
    cache: &str,
    question: &str,
    out: &mut impl Write,
) -> redis::RedisResult<Vec<Asked>> {
    let mut con = connect(host, port, out);
    writeln!(out, "redis {host}:{port}, cache '{cache}'")?;
    writeln!(out, "Q: {question}")?;
    let mut asked = Vec::new();
    for attempt in ["first", "second"] {
        let before = con.as_mut().and_then(qa_counters);
        let start = Instant::now();
        let (answer, path) = ask(con.as_mut(), cache, question, out)?;
        let ms = start.elapsed().as_secs_f64() * 1000.0;
        let after = match path {
            "redis" => con.as_mut().and_then(qa_counters),
            _ => None,
        };
        let via = match (path, before, after) {
            ("direct", _, _) => "direct LLM call (no cache)",
            (_, Some(b), Some(a)) if a.0 > b.0 => "redis, cache hit",
            (_, Some(b), Some(a)) if a.1 > b.1 => "redis, cache miss (LLM called)",
            _ => "redis",
        };
        writeln!(out, "{attempt} ask: {ms:9.3} ms  via {via}")?;
        writeln!(out, "  A: {answer}")?;
        asked.push(Asked { ms, via, answer });
    }
    Ok(asked)
}

fn main() {
    let mut host = std::env::var("REDIS_HOST").unwrap_or_else(|_| "127.0.0.1".into());
    let mut port: u16 = std::env::var("REDIS_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(6379);
    let mut cache = "faq".to_string();
    let mut question = "What is our refund policy?".to_string();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--host" => host = args.next().expect("--host HOST"),
            "--port" => {
                port = args
                    .next()
                    .and_then(|p| p.parse().ok())
                    .expect("--port PORT")
            }
            "--cache" => cache = args.next().expect("--cache NAME"),
            _ => question = a,
        }
    }
    if let Err(e) = ask_twice(&host, port, &cache, &question, &mut std::io::stdout()) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
