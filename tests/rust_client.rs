//! The Rust example (examples/rust_client.rs, redis-rs) against a real server with the module
//! and the in-process mock backend. The example's code is compiled into this test (`#[path]`)
//! and called as `main` calls it; when the example binary that `cargo test` builds is there
//! (and newer than its source), it is also run as a user runs it.

mod common;

#[path = "../examples/rust_client.rs"]
#[allow(dead_code)]
mod rust_client;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::backend::{answer_for, Backend};
use common::*;

const MODEL: &str = "gpt-4o-mini";

fn ask_twice(port: u16, cache: &str, question: &str) -> (Vec<rust_client::Asked>, String) {
    let mut out = Vec::new();
    let asked = rust_client::ask_twice("127.0.0.1", port, cache, question, &mut out)
        .unwrap_or_else(|e| panic!("ask_twice: {e}\n{}", String::from_utf8_lossy(&out)));
    let out = String::from_utf8(out).unwrap();
    println!("{out}");
    (asked, out)
}

/// "<first|second> ask: 1.234 ms  via <how>" lines: (ms, how).
fn ask_lines(out: &str) -> Vec<(f64, String)> {
    out.lines()
        .filter_map(|l| {
            let rest = l
                .strip_prefix("first ask:")
                .or_else(|| l.strip_prefix("second ask:"))?;
            let (ms, how) = rest.split_once(" ms  via ")?;
            Some((ms.trim().parse().ok()?, how.to_string()))
        })
        .collect()
}

#[test]
fn rust_example_shows_a_miss_then_a_hit() {
    let delay = Duration::from_millis(200);
    let b = Backend::start(delay);
    let url = b.url();
    let s = Server::start(&["--qa.backend-url", url.as_str()]);
    let q = "What is our refund policy?";
    let expected = answer_for(q, MODEL, "");

    let (a, out) = ask_twice(s.port, "faq", q);
    assert!(
        out.starts_with(&format!(
            "redis 127.0.0.1:{}, cache 'faq'\nQ: {q}\n",
            s.port
        )),
        "{out}"
    );
    assert_eq!(a.len(), 2);
    assert_eq!(a[0].via, "redis, cache miss (LLM called)");
    assert_eq!(a[1].via, "redis, cache hit");
    assert_eq!(a[0].answer, expected);
    assert_eq!(a[1].answer, expected);
    assert!(a[0].ms >= delay.as_millis() as f64, "{a:?}");
    assert!(a[1].ms < a[0].ms, "{a:?}");
    // What it printed is what it measured.
    let lines = ask_lines(&out);
    let shown: Vec<&str> = lines.iter().map(|l| l.1.as_str()).collect();
    assert_eq!(shown, [a[0].via, a[1].via], "{out}");
    assert_eq!(
        out.matches(&format!("  A: {expected}\n")).count(),
        2,
        "{out}"
    );
    assert_eq!(b.calls(), 1);
    let mut con = s.conn();
    assert_eq!(info_field(&mut con, "backend_calls"), 1);
    assert_eq!(
        (info_field(&mut con, "misses"), info_field(&mut con, "hits")),
        (1, 1)
    );

    // A normalized variant: two hits, no new call.
    let (a, _) = ask_twice(s.port, "faq", "  what is our REFUND policy ");
    for x in &a {
        assert_eq!(x.via, "redis, cache hit");
        assert_eq!(x.answer, expected);
    }
    assert_eq!(b.calls(), 1);

    // An error reply is returned as an error, not answered by the fallback.
    let mut out = Vec::new();
    let e = rust_client::ask_twice("127.0.0.1", s.port, "faq", "?!", &mut out).unwrap_err();
    assert_eq!(err_text(&e), "ERR question is empty");
    assert!(!String::from_utf8_lossy(&out).contains("calling the LLM directly"));
    assert_eq!(b.calls(), 1);

    // The binary as built by `cargo test` (examples are built with the test targets).
    let Some(bin) = example_binary() else {
        return;
    };
    let port = s.port.to_string();
    let run = Command::new(&bin)
        .args(["--port", &port, "--cache", "support", q])
        .env_remove("REDIS_HOST")
        .env_remove("REDIS_PORT")
        .stdin(Stdio::null())
        .output()
        .expect("run the example");
    let stdout = String::from_utf8_lossy(&run.stdout);
    println!("{}\n{stdout}", bin.display());
    assert!(run.status.success(), "{stdout}{:?}", run.stderr);
    let lines = ask_lines(&stdout);
    let shown: Vec<&str> = lines.iter().map(|l| l.1.as_str()).collect();
    assert_eq!(
        shown,
        ["redis, cache miss (LLM called)", "redis, cache hit"],
        "{stdout}"
    );
    assert_eq!(stdout.matches(&format!("  A: {expected}\n")).count(), 2);
    assert_eq!(b.calls(), 2);

    // Redis's error text on stderr, exit status 1.
    let run = Command::new(&bin)
        .args(["--port", &port, ""])
        .stdin(Stdio::null())
        .output()
        .expect("run the example");
    assert_eq!(run.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("question is empty"), "{stderr}");
    assert_eq!(b.calls(), 2);
}

#[test]
fn rust_example_falls_back_to_the_llm_when_redis_is_unreachable() {
    let port = free_port(); // nothing listens there
    let (a, out) = ask_twice(port, "faq", "What is our refund policy?");
    assert!(
        // Refused, or reset when another test's server was just starting on that port.
        out.contains("redis unreachable ("),
        "{out}"
    );
    assert_eq!(a.len(), 2);
    for x in &a {
        assert_eq!(x.via, "direct LLM call (no cache)");
        assert_eq!(
            x.answer,
            "(stub answer, LLM called directly) What is our refund policy?"
        );
    }
}

/// `target/<profile>/examples/rust_client` beside this test's binary, if it exists and is
/// newer than examples/rust_client.rs (else says why it is not run).
fn example_binary() -> Option<PathBuf> {
    let me = std::env::current_exe().ok()?;
    let bin = me.parent()?.parent()?.join("examples").join("rust_client");
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/rust_client.rs");
    let mtime = |p: &PathBuf| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    match (mtime(&bin), mtime(&src)) {
        (Some(b), Some(s)) if b >= s => Some(bin),
        _ => {
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "rust_client binary part: not run ({} missing or older than its source; \
                 `cargo test` builds it, `cargo test --test rust_client` alone does not)",
                bin.display()
            );
            None
        }
    }
}
