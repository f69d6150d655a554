//! Writes reach replicas and the AOF as plain commands: a replica or an AOF reload never
//! calls the backend, and a replica never writes.

mod common;

use std::time::Duration;

use common::backend::{answer_for, Backend};
use common::*;

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
    let (mut primary, replica) = primary_and_replica(
        &[
            "--qa.backend-url",
            &url,
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
        ],
        &["--qa.backend-url", &url],
    );
    let mut p = primary.conn();
    let mut r = replica.conn();

    let q = "What is our refund policy?";
    let want = answer_for(q, "gpt-4o-mini", "");
    assert_eq!(qa_get(&mut p, &["faq", q]).unwrap(), want);
    let acked: i64 = redis::cmd("WAIT").arg(1).arg(2000).query(&mut p).unwrap();
    assert_eq!(acked, 1, "WAIT after a miss is acknowledged by the replica");

    // The replica holds the same entry, with the same absolute expiry, and serves hits.
    let keys: Vec<String> = entry_keys(&mut r);
    assert_eq!(keys.len(), 1);
    let on_primary: Vec<u8> = redis::cmd("GET").arg(&keys[0]).query(&mut p).unwrap();
    let on_replica: Vec<u8> = redis::cmd("GET").arg(&keys[0]).query(&mut r).unwrap();
    assert_eq!(on_primary, on_replica);
    assert_eq!(decode_entry(&on_replica).unwrap()["answer"], want);
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

    // The AOF holds plain writes, never the module command: the entry and its absolute
    // expiry in one command.
    let aof = aof_text(&primary).to_ascii_lowercase();
    assert!(!aof.contains("qa.get"), "{aof}");
    let set_at = aof.find("\r\nset\r\n").expect("a SET");
    assert!(
        aof[set_at..].contains(&format!(
            "\r\npxat\r\n${}\r\n{exp_p}\r\n",
            exp_p.to_string().len()
        )),
        "{aof}"
    );
    assert!(
        !aof.contains("\r\nmulti\r\n"),
        "one command needs no transaction: {aof}"
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
    assert!(aof.to_ascii_lowercase().contains("\r\npxat\r\n"), "{aof}");
}

fn role(con: &mut redis::Connection) -> String {
    info_str(con, "replication", "role")
}

fn replicaof(con: &mut redis::Connection, host: &str, port: &str) {
    let _: String = redis::cmd("REPLICAOF")
        .arg(host)
        .arg(port)
        .query(con)
        .unwrap();
}

fn entry_keys(con: &mut redis::Connection) -> Vec<String> {
    scan_keys(con, "qa:*")
}

#[test]
fn a_promoted_replica_serves_cached_entries_and_takes_misses_as_a_primary() {
    let b = Backend::start(Duration::from_millis(20));
    let url = b.url();
    let (old_primary, new_primary) =
        primary_and_replica(&["--qa.backend-url", &url], &["--qa.backend-url", &url]);
    let mut p = old_primary.conn();
    let mut r = new_primary.conn();
    let q1 = "What is our refund policy?";
    let a1 = answer_for(q1, "gpt-4o-mini", "");
    assert_eq!(qa_get(&mut p, &["faq", q1]).unwrap(), a1);
    let acked: i64 = redis::cmd("WAIT").arg(1).arg(2000).query(&mut p).unwrap();
    assert_eq!(acked, 1);
    let k1 = entry_keys(&mut r).remove(0);
    let exp1: i64 = redis::cmd("PEXPIRETIME").arg(&k1).query(&mut p).unwrap();

    // Failover: the replica is promoted.
    let ok: String = redis::cmd("REPLICAOF")
        .arg("NO")
        .arg("ONE")
        .query(&mut r)
        .unwrap();
    assert_eq!(ok, "OK");
    assert_eq!(role(&mut r), "master");
    // It serves what it replicated, as hits, with the expiry the old primary set...
    assert_eq!(
        qa_get(&mut r, &["faq", "what is our refund policy"]).unwrap(),
        a1
    );
    assert_eq!(info_field(&mut r, "hits"), 1);
    let exp1_r: i64 = redis::cmd("PEXPIRETIME").arg(&k1).query(&mut r).unwrap();
    assert_eq!(exp1_r, exp1);
    assert_eq!(b.calls(), 1);
    // ...and takes misses as a primary: one backend call, stored with its TTL.
    let q2 = "How do I reset my password?";
    let a2 = answer_for(q2, "gpt-4o-mini", "");
    assert_eq!(qa_get(&mut r, &["faq", q2, "TTL", "120"]).unwrap(), a2);
    assert_eq!(b.calls(), 2);
    assert_eq!(info_field(&mut r, "stored"), 1);
    let k2 = entry_keys(&mut r)
        .into_iter()
        .find(|k| *k != k1)
        .expect("the new entry");
    let created: i64 = entry_fields(&mut r, &k2)["created"].parse().unwrap();
    let exp2: i64 = redis::cmd("PEXPIRETIME").arg(&k2).query(&mut r).unwrap();
    assert_eq!(exp2, created + 120_000);
    assert_eq!(qa_get(&mut r, &["faq", q2]).unwrap(), a2);
    assert_eq!(b.calls(), 2);

    // The old primary rejoins as a replica of the new one: it gets the new entry, serves it
    // as a hit, and refuses misses.
    let new_port = new_primary.port.to_string();
    replicaof(&mut p, "127.0.0.1", &new_port);
    assert!(wait_until(Duration::from_secs(10), || link_up(&mut p)));
    let acked: i64 = redis::cmd("WAIT").arg(1).arg(2000).query(&mut r).unwrap();
    assert_eq!(acked, 1);
    assert_eq!(entry_keys(&mut p), entry_keys(&mut r));
    let exp2_p: i64 = redis::cmd("PEXPIRETIME").arg(&k2).query(&mut p).unwrap();
    assert_eq!(exp2_p, exp2);
    assert_eq!(qa_get(&mut p, &["faq", q2]).unwrap(), a2);
    assert_eq!(
        err_text(&qa_get(&mut p, &["faq", "a third question"]).unwrap_err()),
        "ERR cache miss on a read-only replica: send QA.GET to the primary"
    );
    assert_eq!(b.calls(), 2);
}

#[test]
fn a_primary_turned_replica_mid_miss_answers_every_waiter_and_drops_its_write() {
    let b = Backend::start(Duration::from_millis(800));
    let url = b.url();
    let a = Server::start(&["--qa.backend-url", &url, "--repl-diskless-sync-delay", "0"]);
    let other = Server::start(&["--qa.backend-url", &url, "--repl-diskless-sync-delay", "0"]);
    let mut ca = a.conn();
    let mut co = other.conn();
    // The primary it will follow has one entry of its own.
    b.set_delay(Duration::ZERO);
    let own = "What does the other primary know?";
    assert_eq!(
        qa_get(&mut co, &["faq", own]).unwrap(),
        answer_for(own, "gpt-4o-mini", "")
    );
    b.set_delay(Duration::from_millis(800));

    // Three clients wait on one call on `a`...
    let q = "Asked just before the role change";
    let waiters: Vec<_> = (0..3)
        .map(|_| {
            let mut c = a.conn();
            std::thread::spawn(move || qa_get(&mut c, &["faq", q]))
        })
        .collect();
    assert!(wait_until(Duration::from_secs(5), || info_field(
        &mut ca,
        "waiting_clients"
    ) == 3));
    assert!(wait_until(Duration::from_secs(5), || b.calls() == 2));
    // ...when `a` becomes a replica.
    let other_port = other.port.to_string();
    replicaof(&mut ca, "127.0.0.1", &other_port);
    // Redis itself unblocks them (and closes their connections after the reply).
    for w in waiters {
        let e = w.join().unwrap().unwrap_err();
        assert_eq!(
            err_text(&e),
            "UNBLOCKED force unblock from blocking operation, instance state changed \
             (master -> replica?)"
        );
    }
    // The call still ends; its answer is not written on the replica.
    assert!(wait_until(Duration::from_secs(5), || info_field(
        &mut ca, "flights"
    ) == 0));
    assert_eq!(info_field(&mut ca, "stored"), 0);
    assert_eq!(info_field(&mut ca, "store_errors"), 1);
    assert!(wait_until(Duration::from_secs(10), || link_up(&mut ca)));
    let acked: i64 = redis::cmd("WAIT").arg(1).arg(2000).query(&mut co).unwrap();
    assert_eq!(acked, 1);
    // `a` holds exactly what its new primary has: the other entry, not the dropped one.
    assert_eq!(entry_keys(&mut ca), entry_keys(&mut co));
    assert_eq!(dbsize(&mut ca), 1);
    assert_eq!(dbsize(&mut co), 1);
    assert_eq!(
        qa_get(&mut ca, &["faq", own]).unwrap(),
        answer_for(own, "gpt-4o-mini", "")
    );
    assert_eq!(
        err_text(&qa_get(&mut ca, &["faq", q]).unwrap_err()),
        "ERR cache miss on a read-only replica: send QA.GET to the primary"
    );
    assert_eq!(b.calls(), 2);
    let pong: String = redis::cmd("PING").query(&mut ca).unwrap();
    assert_eq!(pong, "PONG");
}

#[test]
fn a_coordinated_failover_during_a_miss_unblocks_the_client_and_leaves_no_divergence() {
    // Longer than a failover, which waits for the replica's acknowledgement (sent once a
    // second).
    let b = Backend::start(Duration::from_millis(3000));
    let url = b.url();
    let (p, r) = primary_and_replica(&["--qa.backend-url", &url], &["--qa.backend-url", &url]);
    let mut cp = p.conn();
    let mut cr = r.conn();
    let q = "Asked during the failover";
    let want = answer_for(q, "gpt-4o-mini", "");
    let mut c = p.conn();
    let asker = std::thread::spawn(move || qa_get(&mut c, &["faq", q]));
    assert!(wait_until(Duration::from_secs(5), || b.calls() == 1));
    // FAILOVER pauses writes on the primary, lets the replica catch up, and swaps roles.
    let ok: String = redis::cmd("FAILOVER").query(&mut cp).unwrap();
    assert_eq!(ok, "OK");
    assert!(wait_until(Duration::from_secs(10), || role(&mut cr)
        == "master"
        && role(&mut cp) == "slave"));
    // The call (3 s) outlasts the failover (about a second): the waiting client is unblocked by
    // Redis when the roles change.
    let e = asker.join().unwrap().unwrap_err();
    assert_eq!(
        err_text(&e),
        "UNBLOCKED force unblock from blocking operation, instance state changed \
         (master -> replica?)"
    );
    assert!(wait_until(Duration::from_secs(5), || info_field(
        &mut cp, "flights"
    ) == 0));
    // The old primary dropped the write; nothing diverges: both have no entry.
    assert!(wait_until(Duration::from_secs(10), || link_up(&mut cp)));
    assert_eq!(info_field(&mut cp, "stored"), 0);
    assert_eq!(info_field(&mut cp, "store_errors"), 1);
    assert_eq!(dbsize(&mut cp), 0);
    assert_eq!(dbsize(&mut cr), 0);
    // The new primary takes the miss again and the old one replicates it.
    b.set_delay(Duration::ZERO);
    assert_eq!(qa_get(&mut cr, &["faq", q]).unwrap(), want);
    let acked: i64 = redis::cmd("WAIT").arg(1).arg(2000).query(&mut cr).unwrap();
    assert_eq!(acked, 1);
    assert_eq!(qa_get(&mut cp, &["faq", q]).unwrap(), want);
    assert_eq!(b.calls(), 2);
}

/// `min-replicas-to-write` holds for the module's own writes (made from a timer, where Redis
/// would not check it): with too few replicas, a miss is answered but not stored.
#[test]
fn a_miss_is_not_stored_while_min_replicas_to_write_is_not_met() {
    let b = Backend::start(Duration::ZERO);
    let url = b.url();
    let s = Server::start(&["--qa.backend-url", &url, "--min-replicas-to-write", "1"]);
    let mut con = s.conn();
    assert_eq!(
        qa_get(&mut con, &["faq", "q"]).unwrap(),
        answer_for("q", "gpt-4o-mini", "")
    );
    assert!(wait_until(Duration::from_secs(5), || info_field(
        &mut con,
        "store_errors"
    ) == 1));
    assert_eq!(dbsize(&mut con), 0);
    assert_eq!(info_field(&mut con, "stored"), 0);
    // Once the condition is lifted, the next miss is stored.
    let _: () = redis::cmd("CONFIG")
        .arg(&["SET", "min-replicas-to-write", "0"])
        .query(&mut con)
        .unwrap();
    let _ = qa_get(&mut con, &["faq", "q"]).unwrap();
    assert!(wait_until(Duration::from_secs(5), || dbsize(&mut con) == 1));
}
