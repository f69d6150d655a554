//! Writes reach replicas and the AOF as plain commands: a replica or an AOF reload never
//! calls the backend, and a replica never writes.

mod common;

use std::time::Duration;

use common::backend::{answer_for, Backend};
use common::*;

fn link_up(con: &mut redis::Connection) -> bool {
    let info: String = redis::cmd("INFO").arg("replication").query(con).unwrap();
    info.contains("master_link_status:up")
}

fn aof_text(s: &Server) -> String {
    let mut text = String::new();
    for entry in std::fs::read_dir(s.dir.join("appendonlydir")).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        text.push_str(&String::from_utf8_lossy(&bytes));
    }
    text
}

#[test]
fn entries_replicate_and_persist_as_plain_writes() {
    let b = Backend::start(Duration::from_millis(20));
    let url = b.url();
    let mut primary = Server::start(&[
        "--qa.backend-url",
        &url,
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
    ]);
    let replica_of = primary.port.to_string();
    let replica = Server::start(&[
        "--qa.backend-url",
        &url,
        "--replicaof",
        "127.0.0.1",
        &replica_of,
    ]);
    let mut p = primary.conn();
    let mut r = replica.conn();
    assert!(wait_until(Duration::from_secs(10), || link_up(&mut r)));

    let q = "What is our refund policy?";
    let want = answer_for(q, "gpt-4o-mini", "");
    assert_eq!(qa_get(&mut p, &["faq", q]).unwrap(), want);
    let acked: i64 = redis::cmd("WAIT").arg(1).arg(2000).query(&mut p).unwrap();
    assert_eq!(acked, 1, "WAIT after a miss is acknowledged by the replica");

    // The replica holds the same entry, with the same absolute expiry, and serves hits.
    let keys: Vec<String> = redis::cmd("KEYS").arg("qa:*").query(&mut r).unwrap();
    assert_eq!(keys.len(), 1);
    let on_primary: Vec<String> = redis::cmd("HGETALL").arg(&keys[0]).query(&mut p).unwrap();
    let on_replica: Vec<String> = redis::cmd("HGETALL").arg(&keys[0]).query(&mut r).unwrap();
    assert_eq!(on_primary, on_replica);
    let exp_p: i64 = redis::cmd("PEXPIRETIME")
        .arg(&keys[0])
        .query(&mut p)
        .unwrap();
    let exp_r: i64 = redis::cmd("PEXPIRETIME")
        .arg(&keys[0])
        .query(&mut r)
        .unwrap();
    assert_eq!(exp_p, exp_r);
    assert_eq!(
        qa_get(&mut r, &["faq", " what is our REFUND policy "]).unwrap(),
        want
    );
    assert_eq!(b.calls(), 1, "the replica never called the backend");

    // A miss on the replica neither calls the backend nor writes.
    let e = qa_get(&mut r, &["faq", "something new"]).unwrap_err();
    assert_eq!(
        err_text(&e),
        "ERR cache miss on a read-only replica: send QA.GET to the primary"
    );
    assert_eq!(b.calls(), 1);
    assert_eq!(dbsize(&mut r), 1);

    // The AOF holds plain writes, never the module command.
    let aof = aof_text(&primary);
    assert!(aof.contains("HSET") || aof.contains("hset"), "{aof}");
    assert!(aof.to_ascii_lowercase().contains("pexpireat"), "{aof}");
    assert!(!aof.to_ascii_lowercase().contains("qa.get"), "{aof}");
    assert!(
        aof.contains("MULTI") && aof.contains("EXEC"),
        "entry and expiry in one transaction"
    );

    // kill -9 and restart: the entry is back from the AOF, same expiry, no backend call.
    drop(r);
    drop(p);
    primary.restart(&[]);
    let mut p = primary.conn();
    assert_eq!(qa_get(&mut p, &["faq", q]).unwrap(), want);
    let exp_after: i64 = redis::cmd("PEXPIRETIME")
        .arg(&keys[0])
        .query(&mut p)
        .unwrap();
    assert_eq!(exp_after, exp_p, "a restart does not extend the expiry");
    assert_eq!(b.calls(), 1);
}

#[test]
fn a_miss_that_ends_during_a_write_pause_answers_at_once_and_writes_after_it() {
    // Regression: writing from a worker while writes are paused aborted Redis 7.0
    // (propagatePendingCommands assertion) when an AOF or a replica was attached.
    let b = Backend::start(Duration::from_millis(300));
    let url = b.url();
    let s = Server::start(&["--qa.backend-url", &url, "--appendonly", "yes"]);
    let mut con = s.conn();
    let mut c1 = s.conn();
    let asker = std::thread::spawn(move || qa_get(&mut c1, &["faq", "straddle the pause"]));
    assert!(wait_until(Duration::from_secs(5), || b.calls() == 1));
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(1500)
        .arg("WRITE")
        .query(&mut con)
        .unwrap();
    let paused_at = std::time::Instant::now();
    // The waiting client is answered without waiting for the pause to end.
    let want = answer_for("straddle the pause", "gpt-4o-mini", "");
    assert_eq!(asker.join().unwrap().unwrap(), want);
    assert!(
        paused_at.elapsed() < Duration::from_millis(1200),
        "{:?}",
        paused_at.elapsed()
    );
    // Nothing was written during the pause; the entry lands after it, from the same call.
    assert_eq!(dbsize(&mut con), 0);
    assert!(wait_until(Duration::from_secs(10), || dbsize(&mut con) == 1));
    let pong: String = redis::cmd("PING").query(&mut con).unwrap();
    assert_eq!(pong, "PONG");
    assert_eq!(
        qa_get(&mut con, &["faq", "straddle the pause"]).unwrap(),
        want
    );
    assert_eq!(b.calls(), 1);
    let aof = aof_text(&s);
    assert!(aof.to_ascii_lowercase().contains("pexpireat"), "{aof}");
}
