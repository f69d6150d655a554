//! "Any client works": runs the redis-py test suite (tests/python/test_redis_py.py: sync,
//! pipelines, RESP3, redis.asyncio) and the Python examples (examples/python/quickstart.py,
//! sync; examples/python/asyncio_client.py, redis.asyncio) against a real redis-server with
//! the module and the in-process mock backend.
//!
//! Needs `python3` (or `QA_PYTHON`) with redis-py >= 5 and pytest >= 7:
//! `pip install -r tests/python/requirements.txt`. Missing Python or packages fail these
//! tests; set `QA_SKIP_PYTHON=1` to skip them instead.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::backend::{answer_for, Backend};
use common::*;

const MODEL: &str = "gpt-4o-mini";

fn python() -> String {
    std::env::var("QA_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// False (after saying so) if `QA_SKIP_PYTHON=1`; panics if Python, redis-py >= 5 or
/// pytest >= 7 is missing.
fn python_ready(test: &str) -> bool {
    if std::env::var("QA_SKIP_PYTHON").as_deref() == Ok("1") {
        // Straight to stderr, past the test harness's output capture, so it always shows.
        let _ = writeln!(std::io::stderr(), "{test}: SKIPPED (QA_SKIP_PYTHON=1)");
        return false;
    }
    let check = "import sys, redis, pytest\n\
                 major = lambda v: int(v.split('.')[0])\n\
                 print(sys.version.split()[0], redis.__version__, pytest.__version__)\n\
                 sys.exit(0 if major(redis.__version__) >= 5 and major(pytest.__version__) >= 7 \
                 else 3)";
    let mut cmd = Command::new(python());
    cmd.args(["-c", check]);
    let out = match cmd.output() {
        Ok(o) => o,
        Err(e) => panic!("{test}: cannot run `{}`: {e}\n{}", python(), install_hint()),
    };
    if !out.status.success() {
        panic!(
            "{test}: `{}` lacks redis-py >= 5 or pytest >= 7 ({}):\n{}{}\n{}",
            python(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            install_hint()
        );
    }
    true
}

fn install_hint() -> &'static str {
    "install them with `pip install -r tests/python/requirements.txt` \
     (or set QA_PYTHON to another interpreter, or QA_SKIP_PYTHON=1 to skip these tests)"
}

/// Runs a Python script (from the crate root) with a deadline; kills it when the deadline
/// passes. Python is unbuffered and writes no bytecode into the source tree.
fn run_python(args: &[&str], env: &[(&str, &str)], deadline: Duration) -> Run {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut cmd = Command::new(python());
    cmd.args(args)
        .current_dir(root)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONUNBUFFERED", "1")
        .env_remove("REDIS_HOST")
        .env_remove("REDIS_PORT")
        .env_remove("QA_REDIS_HOST")
        .env_remove("QA_REDIS_PORT")
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    run_with_deadline(cmd, deadline)
}

fn server_for(b: &Backend) -> Server {
    let url = b.url();
    Server::start(&["--qa.backend-url", url.as_str()])
}

#[test]
fn redis_py_suite_passes_against_the_module() {
    if !python_ready("redis_py_suite_passes_against_the_module") {
        return;
    }
    let b = Backend::start(Duration::from_millis(150));
    let s = server_for(&b);
    let port = s.port.to_string();
    let run = run_python(
        &[
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/python/test_redis_py.py",
        ],
        &[("QA_REDIS_PORT", &port)],
        Duration::from_secs(60),
    );
    assert!(run.ok, "pytest failed\n{}", run.shown());
    // Exit status 0 alone would also accept a run that collected or ran nothing.
    let summary = run
        .stdout
        .lines()
        .rev()
        .find(|l| l.contains(" passed"))
        .unwrap_or_else(|| panic!("no pytest summary line\n{}", run.shown()));
    for bad in ["skipped", "failed", "error", "deselected", "xfail"] {
        assert!(!summary.contains(bad), "{summary}\n{}", run.shown());
    }
    let passed: usize = summary
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unparsable summary {summary:?}"));
    assert!(passed >= 15, "only {passed} tests ran\n{}", run.shown());
    println!("{}", run.shown());
    // The suite counts backend calls through INFO qa; it must agree with the backend's own.
    let mut con = s.conn();
    assert_eq!(info_field(&mut con, "backend_calls"), b.calls() as u64);
    assert!(b.calls() > 0);
}

/// Parses one "<first|second> ask:  12.3 ms  via <how>" line and the "  A: <answer>" after it.
fn asks(out: &str) -> Vec<(f64, String, String)> {
    let lines: Vec<&str> = out.lines().collect();
    let mut v = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        let Some(rest) = l
            .strip_prefix("first ask:")
            .or_else(|| l.strip_prefix("second ask:"))
        else {
            continue;
        };
        let (ms, how) = rest.split_once(" ms  via ").expect("ask line format");
        let ms: f64 = ms.trim().parse().expect("latency");
        let answer = lines
            .get(i + 1)
            .and_then(|a| a.strip_prefix("  A: "))
            .expect("answer line");
        v.push((ms, how.to_string(), answer.to_string()));
    }
    v
}

#[test]
fn quickstart_shows_a_miss_then_a_hit() {
    if !python_ready("quickstart_shows_a_miss_then_a_hit") {
        return;
    }
    let delay = Duration::from_millis(200);
    let b = Backend::start(delay);
    let s = server_for(&b);
    let port = s.port.to_string();
    let q = "What is our refund policy?";
    let expected = answer_for(q, MODEL, "");

    // Port on the command line, default cache and question.
    let run = run_python(
        &["examples/python/quickstart.py", "--port", &port],
        &[],
        Duration::from_secs(30),
    );
    assert!(run.ok, "quickstart failed\n{}", run.shown());
    println!("{}", run.shown());
    assert!(run.stdout.contains(&format!("Q: {q}")), "{}", run.shown());
    let a = asks(&run.stdout);
    assert_eq!(a.len(), 2, "{}", run.shown());
    assert_eq!(a[0].1, "redis, cache miss (LLM called)", "{}", run.shown());
    assert_eq!(a[1].1, "redis, cache hit", "{}", run.shown());
    assert_eq!(a[0].2, expected);
    assert_eq!(a[1].2, expected);
    // The miss waited for the backend; the hit did not.
    assert!(a[0].0 >= delay.as_millis() as f64, "{a:?}");
    assert!(a[1].0 < a[0].0, "{a:?}");
    assert_eq!(b.calls(), 1);

    // Port from REDIS_PORT, a normalized variant of the question: two hits, no new call.
    let run = run_python(
        &[
            "examples/python/quickstart.py",
            "  what is our REFUND policy ",
        ],
        &[("REDIS_PORT", &port)],
        Duration::from_secs(30),
    );
    assert!(run.ok, "quickstart failed\n{}", run.shown());
    println!("{}", run.shown());
    let a = asks(&run.stdout);
    assert_eq!(a.len(), 2, "{}", run.shown());
    for (_, how, answer) in &a {
        assert_eq!(how, "redis, cache hit", "{}", run.shown());
        assert_eq!(answer, &expected);
    }
    assert_eq!(b.calls(), 1);
}

#[test]
fn quickstart_falls_back_to_the_llm_when_redis_is_unreachable() {
    if !python_ready("quickstart_falls_back_to_the_llm_when_redis_is_unreachable") {
        return;
    }
    let port = free_port().to_string(); // nothing listens there
    let run = run_python(
        &[
            "examples/python/quickstart.py",
            "--host",
            "127.0.0.1",
            "--port",
            &port,
        ],
        &[],
        Duration::from_secs(30),
    );
    assert!(run.ok, "quickstart failed\n{}", run.shown());
    println!("{}", run.shown());
    assert!(run.stdout.contains("redis unreachable"), "{}", run.shown());
    let a = asks(&run.stdout);
    assert_eq!(a.len(), 2, "{}", run.shown());
    for (_, how, answer) in &a {
        assert_eq!(how, "direct LLM call (no cache)", "{}", run.shown());
        assert!(answer.starts_with("(stub answer"), "{}", run.shown());
    }
}

// ---- examples/python/asyncio_client.py (redis.asyncio) ----

/// The burst part of asyncio_client.py's output: (count, via, LLM calls, question, answers).
fn burst(out: &str) -> (usize, String, String, String, Vec<String>) {
    let lines: Vec<&str> = out.lines().collect();
    let i = lines
        .iter()
        .position(|l| l.contains(" concurrent asks: "))
        .expect("burst line");
    let (n, rest) = lines[i].split_once(" concurrent asks: ").unwrap();
    let (_, rest) = rest.split_once(" ms  via ").expect("burst line format");
    let (via, calls) = rest
        .split_once(", LLM calls through redis: ")
        .expect("burst line format");
    let q = lines[i + 1]
        .strip_prefix("  Q: ")
        .expect("burst question line");
    let answers = lines[i + 2..]
        .iter()
        .map_while(|l| l.strip_prefix("  A: "))
        .map(str::to_string)
        .collect();
    (
        n.parse().expect("burst size"),
        via.to_string(),
        calls.to_string(),
        q.to_string(),
        answers,
    )
}

#[test]
fn asyncio_example_shows_a_miss_a_hit_and_one_call_for_a_burst() {
    if !python_ready("asyncio_example_shows_a_miss_a_hit_and_one_call_for_a_burst") {
        return;
    }
    let delay = Duration::from_millis(200);
    let b = Backend::start(delay);
    let s = server_for(&b);
    let port = s.port.to_string();
    let q = "What is our refund policy?";
    let burst_q = "How do I reset my password?";

    let run = run_python(
        &["examples/python/asyncio_client.py", "--port", &port],
        &[],
        Duration::from_secs(30),
    );
    assert!(run.ok, "asyncio_client failed\n{}", run.shown());
    println!("{}", run.shown());
    assert!(run.stdout.contains(&format!("Q: {q}\n")), "{}", run.shown());
    let a = asks(&run.stdout);
    assert_eq!(a.len(), 2, "{}", run.shown());
    assert_eq!(a[0].1, "redis, cache miss (LLM called)", "{}", run.shown());
    assert_eq!(a[1].1, "redis, cache hit", "{}", run.shown());
    assert_eq!(a[0].2, answer_for(q, MODEL, ""));
    assert_eq!(a[1].2, answer_for(q, MODEL, ""));
    assert!(a[0].0 >= delay.as_millis() as f64, "{a:?}");
    assert!(a[1].0 < a[0].0, "{a:?}");
    // Ten tasks at once, one backend call, one answer for all.
    let (n, via, calls, bq, answers) = burst(&run.stdout);
    assert_eq!((n, via.as_str(), calls.as_str()), (10, "redis", "1"));
    assert_eq!(bq, burst_q);
    assert_eq!(answers, [answer_for(burst_q, MODEL, "")], "{}", run.shown());
    assert_eq!(b.calls(), 2);
    let mut con = s.conn();
    assert_eq!(info_field(&mut con, "backend_calls"), 2);
    // 1 miss + 1 hit, then the ten burst asks, each a miss (joining the one flight) or a hit.
    let (hits, misses) = (info_field(&mut con, "hits"), info_field(&mut con, "misses"));
    assert_eq!(hits + misses, 12, "hits {hits}, misses {misses}");
    assert!(misses >= 2, "misses {misses}");
    assert_eq!(scan_keys(&mut con, "qa:{faq}:*").len(), 2);

    // Another cache, port from REDIS_PORT: the same questions are misses there (caches are
    // separate), and the burst of three tasks again costs one call.
    let run = run_python(
        &[
            "examples/python/asyncio_client.py",
            "--cache",
            "support",
            "--burst",
            "3",
            q,
        ],
        &[("REDIS_PORT", &port)],
        Duration::from_secs(30),
    );
    assert!(run.ok, "asyncio_client failed\n{}", run.shown());
    println!("{}", run.shown());
    let a = asks(&run.stdout);
    let how: Vec<&str> = a.iter().map(|a| a.1.as_str()).collect();
    assert_eq!(how, ["redis, cache miss (LLM called)", "redis, cache hit"]);
    assert!(a.iter().all(|a| a.2 == answer_for(q, MODEL, "")), "{a:?}");
    let (n, _, calls, _, answers) = burst(&run.stdout);
    assert_eq!((n, calls.as_str()), (3, "1"), "{}", run.shown());
    assert_eq!(answers, [answer_for(burst_q, MODEL, "")]);
    assert_eq!(b.calls(), 4);
}

#[test]
fn asyncio_example_falls_back_to_the_llm_when_redis_is_unreachable() {
    if !python_ready("asyncio_example_falls_back_to_the_llm_when_redis_is_unreachable") {
        return;
    }
    let port = free_port().to_string(); // nothing listens there
    let run = run_python(
        &[
            "examples/python/asyncio_client.py",
            "--port",
            &port,
            "--burst",
            "3",
        ],
        &[],
        Duration::from_secs(30),
    );
    assert!(run.ok, "asyncio_client failed\n{}", run.shown());
    println!("{}", run.shown());
    assert!(
        run.stdout.contains("redis unreachable ("),
        "{}",
        run.shown()
    );
    let a = asks(&run.stdout);
    assert_eq!(a.len(), 2, "{}", run.shown());
    for (_, how, answer) in &a {
        assert_eq!(how, "direct LLM call (no cache)", "{}", run.shown());
        assert_eq!(
            answer,
            "(stub answer, LLM called directly) What is our refund policy?"
        );
    }
    let (n, via, calls, _, answers) = burst(&run.stdout);
    assert_eq!((n, via.as_str(), calls.as_str()), (3, "direct", "?"));
    assert_eq!(
        answers,
        ["(stub answer, LLM called directly) How do I reset my password?"]
    );
}
