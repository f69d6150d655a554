//! Lifecycle: shutting down with misses in flight, FLUSHALL while a miss is in flight, and
//! MODULE UNLOAD (unsupported).

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::backend::{answer_for, Backend};
use common::*;

const MODEL: &str = "gpt-4o-mini";

/// A connection error: the server closed the connection (no reply).
fn closed(e: &redis::RedisError) -> bool {
    e.is_io_error() || e.is_connection_dropped() || e.is_unrecoverable_error()
}

/// Starts `n` askers of `questions[i % len]` on `s`, each on its own connection.
fn askers(
    s: &Server,
    questions: &[&'static str],
    n: usize,
) -> Vec<std::thread::JoinHandle<redis::RedisResult<String>>> {
    (0..n)
        .map(|i| {
            let mut c = s.conn();
            let q = questions[i % questions.len()];
            std::thread::spawn(move || qa_get(&mut c, &["faq", q]))
        })
        .collect()
}

#[test]
fn shutdown_nosave_with_misses_in_flight_exits_cleanly_and_closes_the_waiting_connections() {
    let b = Backend::start(Duration::from_secs(5));
    let url = b.url();
    let mut s = Server::start(&["--qa.backend-url", &url]);
    let mut admin = s.conn();
    // Six clients waiting on three backend calls.
    let waiting = askers(&s, &["first", "second", "third"], 6);
    assert!(wait_until(Duration::from_secs(5), || info_field(
        &mut admin,
        "waiting_clients"
    ) == 6));
    assert_eq!(info_field(&mut admin, "flights"), 3);
    assert!(wait_until(Duration::from_secs(5), || b.calls() == 3));

    let asked = Instant::now();
    let r: redis::RedisResult<()> = redis::cmd("SHUTDOWN").arg("NOSAVE").query(&mut admin);
    assert!(closed(&r.unwrap_err()), "SHUTDOWN replies nothing");
    // The process exits with status 0, long before the backend would answer.
    let status = s.wait_exit(Duration::from_secs(3)).expect("still running");
    assert!(status.success(), "{status}");
    assert!(asked.elapsed() < Duration::from_secs(3));
    // Every waiting client sees its connection close.
    for w in waiting {
        let e = w.join().unwrap().unwrap_err();
        assert!(closed(&e), "{e:?}");
    }
    assert!(s.log().contains("ready to exit, bye bye"), "{}", s.log());
}

#[test]
fn sigterm_with_a_miss_in_flight_saves_what_was_stored_and_exits_cleanly() {
    let b = Backend::start(Duration::from_millis(10));
    let url = b.url();
    // SIGTERM saves an RDB when a save point is configured.
    let mut s = Server::start(&["--qa.backend-url", &url, "--save", "3600 1"]);
    let mut con = s.conn();
    let stored = "Answered before the shutdown";
    assert_eq!(
        qa_get(&mut con, &["faq", stored]).unwrap(),
        answer_for(stored, MODEL, "")
    );
    b.set_delay(Duration::from_secs(5));
    let pending = "Still in flight at the shutdown";
    let waiting = askers(&s, &[pending], 2);
    assert!(wait_until(Duration::from_secs(5), || info_field(
        &mut con,
        "waiting_clients"
    ) == 2));
    let pid = s.pid().to_string();
    let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(sent.success());
    let status = s.wait_exit(Duration::from_secs(3)).expect("still running");
    assert!(status.success(), "{status}");
    for w in waiting {
        let e = w.join().unwrap().unwrap_err();
        assert!(closed(&e), "{e:?}");
    }
    assert!(s.log().contains("DB saved on disk"), "{}", s.log());

    // Back up from that RDB: the stored entry, not the one that was in flight.
    b.set_delay(Duration::from_millis(10));
    s.restart(&[]);
    let mut con = s.conn();
    assert_eq!(dbsize(&mut con), 1);
    assert_eq!(
        qa_get(&mut con, &["faq", stored]).unwrap(),
        answer_for(stored, MODEL, "")
    );
    assert_eq!(info_field(&mut con, "hits"), 1);
    let calls = b.calls();
    assert_eq!(
        qa_get(&mut con, &["faq", pending]).unwrap(),
        answer_for(pending, MODEL, "")
    );
    assert_eq!(
        b.calls(),
        calls + 1,
        "the question in flight is asked again"
    );
}

/// FLUSHALL does not cancel a call in flight: its waiters get the answer, but it is not
/// stored (the flush took the cache's generation: an entry written under it could never be
/// reached). The same question asked after the flush is a new miss, stored as usual.
#[test]
fn flushall_while_a_miss_is_in_flight_then_the_late_write_lands_after_it() {
    let b = Backend::start(Duration::from_millis(5));
    let url = b.url();
    let s = Server::start(&["--qa.backend-url", &url]);
    let mut con = s.conn();
    let old = "Cached before the flush";
    assert_eq!(
        qa_get(&mut con, &["faq", old]).unwrap(),
        answer_for(old, MODEL, "")
    );

    for flush in [&["FLUSHALL"][..], &["FLUSHALL", "ASYNC"], &["FLUSHDB"]] {
        b.set_delay(Duration::from_millis(400));
        let q = format!("In flight during {}", flush.join(" "));
        let want = answer_for(&q, MODEL, "");
        let calls = b.calls() + 1;
        let mut c1 = s.conn();
        let q1 = q.clone();
        let first = std::thread::spawn(move || qa_get(&mut c1, &["faq", &q1]));
        assert!(wait_until(Duration::from_secs(5), || b.calls() == calls));
        assert_eq!(info_field(&mut con, "flights"), 1);
        let ok: String = redis::cmd(flush[0])
            .arg(&flush[1..])
            .query(&mut con)
            .unwrap();
        assert_eq!(ok, "OK");
        assert_eq!(dbsize(&mut con), 0, "{flush:?}");
        // Asked again after the flush, the question is a new miss of a cache without entries
        // (a new generation), not the call in flight.
        let mut c2 = s.conn();
        let q2 = q.clone();
        let second = std::thread::spawn(move || qa_get(&mut c2, &["faq", &q2]));
        assert_eq!(first.join().unwrap().unwrap(), want);
        assert_eq!(second.join().unwrap().unwrap(), want);
        assert_eq!(
            b.calls(),
            calls + 1,
            "the asker after the flush made a call"
        );
        // Only the answer asked for after the flush was stored, with its full TTL.
        assert!(wait_until(Duration::from_secs(5), || info_field(
            &mut con, "flights"
        ) == 0));
        let keys = scan_keys(&mut con, "qa:*");
        assert_eq!(keys.len(), 1, "{flush:?}: {keys:?}");
        let entry = entry_fields(&mut con, &keys[0]);
        assert_eq!(entry["question"], q);
        let created: i64 = entry["created"].parse().unwrap();
        let at: i64 = redis::cmd("PEXPIRETIME")
            .arg(&keys[0])
            .query(&mut con)
            .unwrap();
        assert_eq!(at, created + 3_600_000);
        b.set_delay(Duration::ZERO);
        let hits = info_field(&mut con, "hits");
        assert_eq!(qa_get(&mut con, &["faq", &q]).unwrap(), want);
        assert_eq!(info_field(&mut con, "hits"), hits + 1);
        // What existed before the flush is gone: asking it again calls the backend.
        let calls = b.calls();
        assert_eq!(
            qa_get(&mut con, &["faq", old]).unwrap(),
            answer_for(old, MODEL, "")
        );
        assert_eq!(b.calls(), calls + 1);
        let _: () = redis::cmd("DEL").arg(&keys[0]).query(&mut con).unwrap();
    }
    let pong: String = redis::cmd("PING").query(&mut con).unwrap();
    assert_eq!(pong, "PONG");
}

#[test]
fn module_unload_is_refused_while_a_miss_waits() {
    let b = Backend::start(Duration::from_millis(600));
    let url = b.url();
    let s = Server::start(&["--qa.backend-url", &url, "--enable-module-command", "yes"]);
    let mut con = s.conn();
    let waiting = askers(&s, &["Unload me not"], 1);
    assert!(wait_until(Duration::from_secs(5), || info_field(
        &mut con,
        "waiting_clients"
    ) == 1));
    let r: redis::RedisResult<String> =
        redis::cmd("MODULE").arg("UNLOAD").arg("qa").query(&mut con);
    let e = r.unwrap_err();
    // Redis's own refusal (the wording is the server's).
    assert!(
        err_text(&e).starts_with("ERR Error unloading module: the module has blocked clients"),
        "{}",
        err_text(&e)
    );
    assert_eq!(
        waiting.into_iter().next().unwrap().join().unwrap().unwrap(),
        answer_for("Unload me not", MODEL, "")
    );
    assert_eq!(dbsize(&mut con), 1);
}

/// Unloading is not supported: worker threads may still run module code after the last
/// client was answered (a write waiting out a `CLIENT PAUSE WRITE`, a call whose askers all
/// timed out). `MODULE UNLOAD` must be refused, with the reason in the log.
#[test]
fn module_unload_is_refused_with_the_reason_in_the_log() {
    let b = Backend::start(Duration::from_millis(5));
    let url = b.url();
    let s = Server::start(&["--qa.backend-url", &url, "--enable-module-command", "yes"]);
    let mut con = s.conn();
    // Worker threads exist once a miss has run.
    assert_eq!(
        qa_get(&mut con, &["faq", "warm up"]).unwrap(),
        answer_for("warm up", MODEL, "")
    );
    let r: redis::RedisResult<String> =
        redis::cmd("MODULE").arg("UNLOAD").arg("qa").query(&mut con);
    assert_eq!(
        err_text(&r.unwrap_err()),
        "ERR Error unloading module: operation not possible."
    );
    assert!(
        s.log().contains(
            "redis-qa: MODULE UNLOAD is not supported (worker threads may still be running)"
        ),
        "{}",
        s.log()
    );
    // Still loaded and serving.
    let list: redis::Value = redis::cmd("MODULE").arg("LIST").query(&mut con).unwrap();
    assert!(format!("{list:?}").contains("qa"));
    assert_eq!(
        qa_get(&mut con, &["faq", "WARM UP"]).unwrap(),
        answer_for("warm up", MODEL, "")
    );
    assert_eq!(b.calls(), 1);
}
