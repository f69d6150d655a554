//! A sick backend costs Redis nothing: each failure mode gives its documented reply, nothing
//! is cached, and meanwhile a second client's PING and GET keep answering. Retries, the
//! circuit breaker and truncated completions.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::backend::{answer_for, Backend, Reply};
use common::*;

fn start(b: &Backend, extra: &[&str]) -> Server {
    let url = b.url();
    let mut args = vec!["--qa.backend-url", url.as_str()];
    args.extend_from_slice(extra);
    Server::start(&args)
}

fn get_err(con: &mut redis::Connection, q: &str) -> String {
    match qa_get(con, &["faq", q]) {
        Err(e) => err_text(&e),
        Ok(v) => panic!("expected an error for {q:?}, got {v:?}"),
    }
}

/// Another client sending PING and GET in a loop while `f` runs; fails if any reply took
/// longer than 100 ms or was wrong. Returns what `f` returned.
fn while_responsive<T>(s: &Server, f: impl FnOnce() -> T) -> T {
    let mut con = s.conn();
    let _: () = redis::cmd("SET")
        .arg("plain")
        .arg("value")
        .query(&mut con)
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = Arc::clone(&stop);
    let pinger = std::thread::spawn(move || {
        let (mut worst, mut rounds) = (Duration::ZERO, 0u32);
        while !stop2.load(Ordering::SeqCst) {
            let t = Instant::now();
            let pong: String = redis::cmd("PING").query(&mut con).unwrap();
            let v: String = redis::cmd("GET").arg("plain").query(&mut con).unwrap();
            assert_eq!((pong.as_str(), v.as_str()), ("PONG", "value"));
            worst = worst.max(t.elapsed());
            rounds += 1;
            std::thread::sleep(Duration::from_millis(2));
        }
        (worst, rounds)
    });
    let out = f();
    stop.store(true, Ordering::SeqCst);
    let (worst, rounds) = pinger.join().unwrap();
    assert!(rounds > 0);
    assert!(
        worst < Duration::from_millis(100),
        "PING+GET took {worst:?}"
    );
    out
}

#[test]
fn each_failure_mode_has_its_reply_and_redis_keeps_answering() {
    let b = Backend::start(Duration::ZERO);
    // No retries and no breaker here: one call per miss, each failure on its own.
    let s = start(
        &b,
        &[
            "--qa.timeout-ms",
            "400",
            "--qa.backend-retries",
            "0",
            "--qa.breaker-failures",
            "0",
            "--qa.max-answer-bytes",
            "4096",
        ],
    );
    let mut con = s.conn();
    // (backend reply, exact error)
    let rows: Vec<(Reply, &str)> = vec![
        (Reply::Hang, "ERR backend timeout after 400 ms"),
        (
            Reply::Status(500, r#"{"error":"boom"}"#.into()),
            r#"ERR backend returned HTTP 500: {"error":"boom"}"#,
        ),
        (
            Reply::Raw("{\"choices\":[{\"message\":".into()),
            "ERR backend reply malformed: not JSON (EOF while parsing a value at line 1 column 23)",
        ),
        (
            Reply::Raw(r#"{"choices":[{"message":{"content":null}}]}"#.into()),
            "ERR backend reply has no answer",
        ),
        (
            Reply::Oversized(50 << 20),
            "ERR backend reply larger than 4096 bytes",
        ),
        (
            Reply::OversizedUndeclared(50 << 20),
            "ERR backend reply larger than 4096 bytes",
        ),
        (Reply::Reset, "ERR backend unreachable: connection reset"),
    ];
    while_responsive(&s, || {
        for (i, (reply, want)) in rows.into_iter().enumerate() {
            b.set_reply(reply);
            let t = Instant::now();
            assert_eq!(get_err(&mut con, &format!("q{i}")), want);
            assert!(
                t.elapsed() < Duration::from_secs(2),
                "{want}: {:?}",
                t.elapsed()
            );
            assert_eq!(
                dbsize(&mut con),
                1,
                "{want}: nothing cached (1 = the plain key)"
            );
        }
        // A refused connection.
        config_set(
            &mut con,
            "qa.backend-url",
            &format!("http://127.0.0.1:{}/v1", free_port()),
        );
        assert_eq!(
            get_err(&mut con, "refused"),
            "ERR backend unreachable: connection refused"
        );
    });
    // The hung call itself ends a little after its client was answered (at the deadline).
    assert!(wait_until(Duration::from_secs(2), || info_field(
        &mut con, "inflight"
    ) == 0));
    // (INFO field, count)
    for (field, n) in [
        ("backend_errors", 8),
        ("errors_timeout", 1),
        ("errors_http_5xx", 1),
        ("errors_malformed", 1),
        ("errors_empty", 1),
        ("errors_too_large", 2),
        ("errors_unreachable", 2),
        ("errors_http_4xx", 0),
        ("backend_retries", 0),
        ("stored", 0),
    ] {
        assert_eq!(info_field(&mut con, field), n, "{field}");
    }
}

#[test]
fn transient_failures_are_retried_then_answered() {
    let b = Backend::start(Duration::ZERO);
    let s = start(&b, &["--qa.backend-retries", "3"]);
    let mut con = s.conn();
    b.push([
        Reply::Status(503, "overloaded".into()),
        Reply::Reset,
        Reply::Status(502, String::new()),
    ]);
    let answer = while_responsive(&s, || qa_get(&mut con, &["faq", "q"]).unwrap());
    assert_eq!(answer, answer_for("q", "gpt-4o-mini", ""));
    assert_eq!(b.calls(), 4);
    assert_eq!(info_field(&mut con, "backend_retries"), 3);
    assert_eq!(info_field(&mut con, "backend_errors"), 0);
    assert_eq!(dbsize(&mut con), 2);
    // Backoff: 50-100 ms, then 100-200 ms, then 200-400 ms.
    let at: Vec<Instant> = b.requests().iter().map(|r| r.at).collect();
    for (i, min_ms) in [(1, 50), (2, 100), (3, 200)] {
        let gap = at[i] - at[i - 1];
        assert!(gap >= Duration::from_millis(min_ms), "retry {i}: {gap:?}");
    }

    // Retries run out: the last failure is the reply, and nothing is cached.
    b.clear();
    b.push(std::iter::repeat_n(Reply::Status(504, String::new()), 4));
    assert_eq!(get_err(&mut con, "q2"), "ERR backend returned HTTP 504");
    assert_eq!(b.requests().len(), 4);
    assert_eq!(info_field(&mut con, "errors_http_5xx"), 1);
}

#[test]
fn retry_after_is_honoured_within_the_time_left() {
    let b = Backend::start(Duration::ZERO);
    let s = start(&b, &["--qa.timeout-ms", "3000"]);
    let mut con = s.conn();
    let limited = |secs: &str| {
        Reply::StatusWith(
            429,
            vec![("Retry-After".into(), secs.into())],
            r#"{"error":"rate limited"}"#.into(),
        )
    };
    b.push([limited("1")]);
    let t = Instant::now();
    assert_eq!(
        qa_get(&mut con, &["faq", "q"]).unwrap(),
        answer_for("q", "gpt-4o-mini", "")
    );
    let reqs = b.requests();
    assert_eq!(reqs.len(), 2);
    assert!(reqs[1].at - reqs[0].at >= Duration::from_secs(1));
    assert!(t.elapsed() < Duration::from_secs(2));

    // A Retry-After beyond the clients' time left: the 429 is the reply, at once.
    b.clear();
    b.push([limited("30")]);
    let t = Instant::now();
    assert_eq!(
        get_err(&mut con, "q2"),
        r#"ERR backend returned HTTP 429: {"error":"rate limited"}"#
    );
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(b.requests().len(), 1);
    assert_eq!(info_field(&mut con, "errors_http_429"), 1);
}

#[test]
fn client_errors_are_never_retried() {
    let b = Backend::start(Duration::ZERO);
    let s = start(&b, &["--qa.backend-retries", "5"]);
    let mut con = s.conn();
    // (status, exact error)
    for (code, want) in [
        (400, "ERR backend returned HTTP 400: bad request"),
        (401, "ERR backend returned HTTP 401: bad request"),
        (404, "ERR backend returned HTTP 404: bad request"),
    ] {
        b.clear();
        b.set_reply(Reply::Status(code, "bad request".into()));
        assert_eq!(get_err(&mut con, &format!("q{code}")), want);
        assert_eq!(b.requests().len(), 1, "{code} was retried");
    }
    assert_eq!(info_field(&mut con, "backend_retries"), 0);
    assert_eq!(info_field(&mut con, "errors_http_4xx"), 3);
    // 4xx answers are prompt: they do not open the breaker (default: 5 failures).
    for i in 0..6 {
        assert!(
            get_err(&mut con, &format!("again{i}")).starts_with("ERR backend returned HTTP 404")
        );
    }
    assert_eq!(info_field(&mut con, "breaker_opened"), 0);
}

const BREAKER_OPEN: &str = "ERR backend circuit breaker open after repeated failures (next try after qa.breaker-cooldown-ms)";

#[test]
fn breaker_opens_fails_fast_then_one_probe_closes_it() {
    let b = Backend::start(Duration::ZERO);
    let s = start(
        &b,
        &[
            "--qa.breaker-failures",
            "3",
            "--qa.breaker-cooldown-ms",
            "400",
            "--qa.backend-retries",
            "0",
        ],
    );
    let mut con = s.conn();
    let hit = qa_get(&mut con, &["faq", "cached"]).unwrap();

    b.set_reply(Reply::Status(500, String::new()));
    while_responsive(&s, || {
        for i in 0..3 {
            assert_eq!(
                get_err(&mut con, &format!("q{i}")),
                "ERR backend returned HTTP 500"
            );
        }
        // Open: misses fail at once without calling; hits are served.
        let calls = b.calls();
        for i in 0..5 {
            assert_eq!(get_err(&mut con, &format!("fast{i}")), BREAKER_OPEN);
        }
        assert_eq!(b.calls(), calls);
        assert_eq!(qa_get(&mut con, &["faq", "cached"]).unwrap(), hit);
        assert_eq!(info_field(&mut con, "breaker_open"), 1);

        // After the cooldown one probe goes through; it fails: open again.
        std::thread::sleep(Duration::from_millis(450));
        assert_eq!(get_err(&mut con, "probe1"), "ERR backend returned HTTP 500");
        assert_eq!(b.calls(), calls + 1);
        assert_eq!(get_err(&mut con, "after probe1"), BREAKER_OPEN);

        // The backend recovers; the next probe closes the breaker.
        b.set_reply(Reply::Answer);
        std::thread::sleep(Duration::from_millis(450));
        assert_eq!(
            qa_get(&mut con, &["faq", "probe2"]).unwrap(),
            answer_for("probe2", "gpt-4o-mini", "")
        );
        assert_eq!(
            qa_get(&mut con, &["faq", "after probe2"]).unwrap(),
            answer_for("after probe2", "gpt-4o-mini", "")
        );
    });
    assert_eq!(info_field(&mut con, "breaker_open"), 0);
    assert_eq!(info_field(&mut con, "breaker_opened"), 2);
    assert_eq!(info_field(&mut con, "breaker_rejected"), 6);
}

#[test]
fn truncated_completions_are_replied_but_cached_only_if_configured() {
    let b = Backend::start(Duration::ZERO);
    let s = start(&b, &[]);
    let mut con = s.conn();
    b.set_reply(Reply::Truncated);
    let want = answer_for("q", "gpt-4o-mini", "");
    for _ in 0..2 {
        assert_eq!(qa_get(&mut con, &["faq", "q"]).unwrap(), want);
    }
    assert_eq!(b.calls(), 2, "not cached: asked again");
    assert_eq!(dbsize(&mut con), 0);
    assert_eq!(info_field(&mut con, "truncated"), 2);

    // The same for Anthropic's stop_reason "max_tokens".
    config_set(&mut con, "qa.backend-format", "anthropic");
    assert_eq!(qa_get(&mut con, &["faq", "q"]).unwrap(), want);
    assert_eq!(dbsize(&mut con), 0);

    config_set(&mut con, "qa.cache-truncated", "yes");
    assert_eq!(qa_get(&mut con, &["faq", "q"]).unwrap(), want);
    assert_eq!(dbsize(&mut con), 1);
    assert_eq!(qa_get(&mut con, &["faq", "q"]).unwrap(), want);
    assert_eq!(b.calls(), 4);
    assert_eq!(info_field(&mut con, "truncated"), 4);
    assert_eq!(info_field(&mut con, "not_stored"), 3);
}
