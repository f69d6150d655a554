//! Every error QA.GET can reply, with its exact text; after each, nothing was written and the
//! server still answers.

mod common;

use std::time::{Duration, Instant};

use common::backend::{Backend, Reply};
use common::*;

fn server_for(b: &Backend, extra: &[&str]) -> Server {
    let url = b.url();
    let mut args = vec!["--qa.backend-url", url.as_str()];
    args.extend_from_slice(extra);
    Server::start(&args)
}

fn get_err(con: &mut redis::Connection, args: &[&[u8]]) -> String {
    let r: redis::RedisResult<redis::Value> = redis::cmd("QA.GET").arg(args).query(con);
    match r {
        Err(e) => err_text(&e),
        Ok(v) => panic!("expected an error for {args:?}, got {v:?}"),
    }
}

fn config_set(con: &mut redis::Connection, name: &str, value: &str) -> redis::RedisResult<()> {
    redis::cmd("CONFIG")
        .arg("SET")
        .arg(name)
        .arg(value)
        .query(con)
}

fn assert_untouched(con: &mut redis::Connection, keys_before: u64) {
    assert_eq!(dbsize(con), keys_before, "an error must write nothing");
    let pong: String = redis::cmd("PING").query(con).unwrap();
    assert_eq!(pong, "PONG");
}

const ARITY: &str = "ERR wrong number of arguments for 'qa.get' command";

#[test]
fn bad_arguments_get_exact_errors_and_change_nothing() {
    let b = Backend::start(Duration::ZERO);
    let s = server_for(&b, &["--qa.max-question-bytes", "64"]);
    let mut con = s.conn();
    let long_cache = "c".repeat(129);
    let long_q = "q".repeat(65);
    // (arguments, exact error)
    let rows: &[(&[&[u8]], &str)] = &[
        (&[], ARITY),
        (&[b"faq"], ARITY),
        (
            &[b"faq", b"q", b"BOGUS"],
            "ERR unknown option (expected TTL, STALE, MODEL, SYSTEM, CONTEXT, SOURCES, REFRESH, WITHMETA, SEMANTIC or EXACT)",
        ),
        (&[b"faq", b"q", b"TTL"], "ERR option needs a value"),
        (
            &[b"faq", b"q", b"TTL", b"0"],
            "ERR TTL must be an integer between 1 and 315360000 seconds",
        ),
        (
            &[b"faq", b"q", b"TTL", b"-1"],
            "ERR TTL must be an integer between 1 and 315360000 seconds",
        ),
        (
            &[b"faq", b"q", b"TTL", b"ten"],
            "ERR TTL must be an integer between 1 and 315360000 seconds",
        ),
        (
            &[b"faq", b"q", b"TTL", b"315360001"],
            "ERR TTL must be an integer between 1 and 315360000 seconds",
        ),
        (
            &[b"faq", b"q", b"TTL", b"5", b"ttl", b"6"],
            "ERR option given twice",
        ),
        (
            &[b"faq", b"q", b"REFRESH", b"refresh"],
            "ERR option given twice",
        ),
        (
            &[b"faq", b"q", b"MODEL", b""],
            "ERR MODEL must be 1 to 256 bytes of UTF-8 without control characters",
        ),
        (
            &[b"faq", b"q", b"MODEL", b"\xff"],
            "ERR MODEL must be 1 to 256 bytes of UTF-8 without control characters",
        ),
        (
            &[b"faq", b"q", b"SYSTEM", b"\xff"],
            "ERR SYSTEM must be valid UTF-8 of at most 65536 bytes",
        ),
        (&[b"", b"q"], "ERR cache name is empty"),
        (
            &[b"a{b}", b"q"],
            "ERR cache name must not contain '{' or '}'",
        ),
        (
            &[long_cache.as_bytes(), b"q"],
            "ERR cache name is longer than 128 bytes",
        ),
        (&[b"faq", b""], "ERR question is empty"),
        (&[b"faq", b"  \t\n "], "ERR question is empty"),
        (&[b"faq", b"?!."], "ERR question is empty"),
        (
            &[b"faq", long_q.as_bytes()],
            "ERR question is longer than qa.max-question-bytes",
        ),
        (&[b"faq", b"caf\xe9?"], "ERR question is not valid UTF-8"),
    ];
    for (args, want) in rows {
        assert_eq!(get_err(&mut con, args), *want, "{args:?}");
        assert_untouched(&mut con, 0);
    }
    assert_eq!(b.calls(), 0, "no bad request reached the backend");
}

#[test]
fn backend_failures_get_exact_errors_and_cache_nothing() {
    let b = Backend::start(Duration::ZERO);
    let s = server_for(&b, &["--qa.timeout-ms", "300"]);
    let mut con = s.conn();
    // (backend reply, exact error)
    let rows = [
        (
            Reply::Status(500, r#"{"error":"boom"}"#.into()),
            r#"ERR backend returned HTTP 500: {"error":"boom"}"#,
        ),
        (
            Reply::Status(429, "slow down\r\nplease".into()),
            "ERR backend returned HTTP 429: slow down please",
        ),
        (
            Reply::Status(503, String::new()),
            "ERR backend returned HTTP 503",
        ),
        (
            Reply::Raw(r#"{"choices":[]}"#.into()),
            "ERR backend reply malformed: no choices[0].message.content",
        ),
        (
            Reply::Raw(r#"{"choices":[{"message":{"content":""}}]}"#.into()),
            "ERR backend reply has no answer",
        ),
        (
            Reply::Raw(r#"{"choices":[{"message":{"content":7}}]}"#.into()),
            "ERR backend reply malformed: choices[0].message.content is not a string",
        ),
    ];
    for (i, (reply, want)) in rows.into_iter().enumerate() {
        b.set_reply(reply);
        let q = format!("question {i}");
        assert_eq!(get_err(&mut con, &[b"faq", q.as_bytes()]), want);
        assert_untouched(&mut con, 0);
    }
    b.set_reply(Reply::Raw("<html>".into()));
    let e = get_err(&mut con, &[b"faq", b"html"]);
    assert!(
        e.starts_with("ERR backend reply malformed: not JSON ("),
        "{e}"
    );
    assert_untouched(&mut con, 0);

    // A failure is not cached: once the backend recovers, the same question is answered.
    b.set_reply(Reply::Answer);
    let ok = qa_get(&mut con, &["faq", "question 0"]).unwrap();
    assert_eq!(
        ok,
        common::backend::answer_for("question 0", "gpt-4o-mini", "")
    );
    assert_eq!(dbsize(&mut con), 1);
    assert_eq!(info_field(&mut con, "backend_errors"), 7);

    // Timeout: the client gets its error after qa.timeout-ms, not after the backend's delay.
    b.set_delay(Duration::from_secs(3));
    let started = Instant::now();
    assert_eq!(
        get_err(&mut con, &[b"faq", b"slow"]),
        "ERR backend timeout after 300 ms"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_untouched(&mut con, 1);
}

#[test]
fn unset_and_unreachable_backends() {
    let s = Server::start(&[]);
    let mut con = s.conn();
    assert_eq!(
        get_err(&mut con, &[b"faq", b"q"]),
        "ERR backend URL not set (CONFIG SET qa.backend-url <url>)"
    );
    assert_untouched(&mut con, 0);
    // A port nobody listens on.
    let port = free_port();
    config_set(
        &mut con,
        "qa.backend-url",
        &format!("http://127.0.0.1:{port}/v1"),
    )
    .unwrap();
    let e = get_err(&mut con, &[b"faq", b"q"]);
    assert!(e.starts_with("ERR backend unreachable: "), "{e}");
    assert!(e.contains("refused"), "{e}");
    assert_untouched(&mut con, 0);
}

#[test]
fn misses_cannot_wait_inside_multi_or_scripts() {
    let b = Backend::start(Duration::ZERO);
    let s = server_for(&b, &[]);
    let mut con = s.conn();
    const IN_MULTI: &str =
        "ERR cache miss inside MULTI or a script: QA.GET cannot wait for the backend there";
    let r: Vec<redis::Value> = redis::pipe()
        .atomic()
        .cmd("QA.GET")
        .arg("faq")
        .arg("never asked")
        .query(&mut con)
        .unwrap_or_else(|e| vec![redis::Value::SimpleString(err_text(&e))]);
    let text = format!("{r:?}");
    assert!(
        text.contains("cache miss inside MULTI or a script"),
        "{text}"
    );
    let e: redis::RedisError = redis::cmd("EVAL")
        .arg("return redis.call('QA.GET', KEYS[1], ARGV[1])")
        .arg(1)
        .arg("faq")
        .arg("never asked")
        .query::<String>(&mut con)
        .unwrap_err();
    assert!(err_text(&e).starts_with(IN_MULTI), "{}", err_text(&e));
    assert_untouched(&mut con, 0);
    assert_eq!(b.calls(), 0);
}

#[test]
fn an_entry_key_holding_another_type_is_reported_not_overwritten() {
    let b = Backend::start(Duration::ZERO);
    let s = server_for(&b, &[]);
    let mut con = s.conn();
    qa_get(&mut con, &["faq", "q"]).unwrap();
    let keys: Vec<String> = entry_keys(&mut con);
    let _: () = redis::cmd("SET")
        .arg(&keys[0])
        .arg("not a hash")
        .query(&mut con)
        .unwrap();
    assert_eq!(
        get_err(&mut con, &[b"faq", b"q"]),
        "WRONGTYPE the entry key holds a value that is not a redis-qa entry"
    );
    let v: String = redis::cmd("GET").arg(&keys[0]).query(&mut con).unwrap();
    assert_eq!(v, "not a hash");
    assert_eq!(b.calls(), 1);
}

#[test]
fn full_queue_and_full_memory_refuse_misses_before_calling_the_backend() {
    let b = Backend::start(Duration::from_millis(1500));
    let s = server_for(&b, &["--qa.max-inflight", "1", "--qa.max-queue", "0"]);
    let mut con = s.conn();
    let mut c1 = s.conn();
    let first = std::thread::spawn(move || qa_get(&mut c1, &["faq", "first"]));
    assert!(wait_until(Duration::from_secs(5), || info_field(
        &mut con, "inflight"
    ) == 1));
    assert_eq!(
        get_err(&mut con, &[b"faq", b"second"]),
        "ERR too many misses waiting for the backend (qa.max-queue)"
    );
    // The same question as the running call does not need a slot: it waits on that call.
    let mut c3 = s.conn();
    let same = std::thread::spawn(move || qa_get(&mut c3, &["faq", "first"]));
    assert_eq!(
        first.join().unwrap().unwrap(),
        same.join().unwrap().unwrap()
    );
    assert_eq!(b.calls(), 1);
    assert_eq!(info_field(&mut con, "refused_busy"), 1);

    // Out of memory under noeviction: misses are refused with Redis's own OOM error, before
    // any backend call; hits keep working.
    b.set_delay(Duration::ZERO);
    config_set(&mut con, "maxmemory-policy", "noeviction").unwrap();
    config_set(&mut con, "maxmemory", "1").unwrap();
    assert_eq!(
        get_err(&mut con, &[b"faq", b"new question"]),
        "OOM command not allowed when used memory > 'maxmemory'"
    );
    assert_eq!(b.calls(), 1);
    assert!(
        qa_get(&mut con, &["faq", "first"]).is_ok(),
        "hits are served at the limit"
    );
    config_set(&mut con, "maxmemory", "0").unwrap();
}

#[test]
fn every_timed_out_client_gets_exactly_one_reply() {
    // Regression: with Redis's own blocking timeout, a timeout racing the worker's unblock
    // left clients with no reply at all.
    const CLIENTS: usize = 60;
    let b = Backend::start(Duration::from_secs(2));
    let s = server_for(&b, &["--qa.timeout-ms", "400", "--qa.max-inflight", "4"]);
    let handles: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let mut c = s.conn();
            std::thread::spawn(move || {
                let e = qa_get(&mut c, &["faq", &format!("q{i}")]).unwrap_err();
                // The connection is in step: no second reply is waiting to be read.
                let pong: String = redis::cmd("PING").query(&mut c).unwrap();
                (err_text(&e), pong)
            })
        })
        .collect();
    for h in handles {
        let (e, pong) = h.join().unwrap();
        assert_eq!(e, "ERR backend timeout after 400 ms");
        assert_eq!(pong, "PONG");
    }
    let mut con = s.conn();
    assert!(wait_until(Duration::from_secs(5), || info_field(
        &mut con,
        "waiting_clients"
    ) == 0));
    assert_eq!(dbsize(&mut con), 0);
}

#[test]
fn config_values_are_validated() {
    let s = Server::start(&[]);
    let mut con = s.conn();
    // (name, bad value, end of the error message)
    let rows = [
        (
            "qa.ttl",
            "0",
            "argument must be between 1 and 315360000 inclusive",
        ),
        (
            "qa.timeout-ms",
            "5",
            "argument must be between 100 and 600000 inclusive",
        ),
        (
            "qa.max-inflight",
            "0",
            "argument must be between 1 and 1024 inclusive",
        ),
        (
            "qa.ttl",
            "abc",
            "argument couldn't be parsed into an integer",
        ),
        (
            "qa.backend-url",
            "ftp://x",
            "must be empty or an http:// or https:// URL without spaces",
        ),
        (
            "qa.model",
            "",
            "must be 1 to 256 bytes of UTF-8 without control characters",
        ),
    ];
    for (name, value, want) in rows {
        let e = config_set(&mut con, name, value).unwrap_err();
        let text = err_text(&e);
        assert!(text.starts_with("ERR CONFIG SET failed"), "{text}");
        assert!(text.ends_with(want), "{name}={value}: {text}");
    }
    let ttl: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("qa.ttl")
        .query(&mut con)
        .unwrap();
    assert_eq!(ttl[1], "3600", "a refused value leaves the old one");
}
