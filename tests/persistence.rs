//! Persistence: entries are plain hashes with an absolute expiry, so RDB snapshots and the AOF
//! keep them like any key. A restart restores them without a single backend call, never
//! extends their expiry, and the AOF never holds the module's command.
//! (tests/replication.rs also covers an AOF restart after a miss, with a replica attached.)

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::backend::{answer_for, Backend};
use common::*;

const MODEL: &str = "gpt-4o-mini";

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn pexpiretime(con: &mut redis::Connection, key: &str) -> i64 {
    redis::cmd("PEXPIRETIME").arg(key).query(con).unwrap()
}

fn hgetall(con: &mut redis::Connection, key: &str) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = entry_fields(con, key).into_iter().collect();
    v.sort();
    v
}

fn field(con: &mut redis::Connection, key: &str, name: &str) -> String {
    entry_fields(con, key).remove(name).unwrap_or_default()
}

/// An entry: key, fields, absolute expiry in ms.
type Entry = (String, Vec<(String, String)>, i64);

/// Every entry.
fn snapshot(con: &mut redis::Connection) -> Vec<Entry> {
    scan_keys(con, "qa:*")
        .into_iter()
        .map(|k| {
            let fields = hgetall(con, &k);
            let at = pexpiretime(con, &k);
            (k, fields, at)
        })
        .collect()
}

/// The text of the AOF files the manifest lists (base and increments), in order.
fn aof_text(s: &Server) -> String {
    let dir = s.dir.join("appendonlydir");
    let manifest = std::fs::read_to_string(dir.join("appendonly.aof.manifest")).unwrap();
    let mut text = String::new();
    for line in manifest.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let kind = words.windows(2).find(|w| w[0] == "type").map(|w| w[1]);
        if !matches!(kind, Some("b") | Some("i")) {
            continue;
        }
        let bytes = std::fs::read(dir.join(words[1])).unwrap();
        text.push_str(&String::from_utf8_lossy(&bytes));
    }
    text
}

fn loading_done(con: &mut redis::Connection) -> bool {
    info_str(con, "persistence", "loading") == "0"
}

#[test]
fn an_rdb_snapshot_restores_entries_and_their_remaining_ttls_without_backend_calls() {
    let b = Backend::start(Duration::from_millis(5));
    let url = b.url();
    let mut s = Server::start(&["--qa.backend-url", &url]);
    let mut con = s.conn();
    let asked: [(&str, &[&str]); 3] = [
        ("What is our refund policy?", &[]),
        ("How do I reset my password?", &["TTL", "600"]),
        ("Which plans exist?", &["TTL", "86400", "MODEL", "gpt-4o"]),
    ];
    for (q, opts) in asked {
        let mut args = vec!["faq", q];
        args.extend_from_slice(opts);
        let model = if opts.contains(&"gpt-4o") {
            "gpt-4o"
        } else {
            MODEL
        };
        assert_eq!(qa_get(&mut con, &args).unwrap(), answer_for(q, model, ""));
    }
    // One entry that will have expired by the time the server is back.
    let short = "What is the promo code today?";
    assert_eq!(
        qa_get(&mut con, &["faq", short, "TTL", "1"]).unwrap(),
        answer_for(short, MODEL, "")
    );
    let short_key = scan_keys(&mut con, "qa:*")
        .into_iter()
        .find(|k| field(&mut con, k, "question") == short)
        .unwrap();
    let short_expiry = pexpiretime(&mut con, &short_key);
    let before: Vec<_> = snapshot(&mut con)
        .into_iter()
        .filter(|(k, _, _)| *k != short_key)
        .collect();
    assert_eq!(before.len(), 3);
    let ttls_before: Vec<i64> = before
        .iter()
        .map(|(k, _, _)| redis::cmd("PTTL").arg(k).query(&mut con).unwrap())
        .collect();
    assert_eq!(b.calls(), 4);

    let ok: String = redis::cmd("SAVE").query(&mut con).unwrap();
    assert_eq!(ok, "OK");
    assert!(s.dir.join("dump.rdb").exists());
    drop(con);
    s.kill();
    // Down until the short entry's absolute expiry has passed.
    assert!(wait_until(Duration::from_secs(3), || now_ms() > short_expiry + 50));
    s.restart(&[]);
    let mut con = s.conn();
    assert!(wait_until(Duration::from_secs(5), || loading_done(
        &mut con
    )));

    // Same entries, same absolute expiries (the remaining TTL went down, never up), and the
    // expired one is gone. Loading called nothing.
    assert_eq!(info_field(&mut con, "backend_calls"), 0);
    assert_eq!(b.calls(), 4);
    let after = snapshot(&mut con);
    assert_eq!(after, before);
    for ((k, _, _), ttl_before) in before.iter().zip(&ttls_before) {
        let ttl: i64 = redis::cmd("PTTL").arg(k).query(&mut con).unwrap();
        assert!(ttl > 0 && ttl <= *ttl_before, "{k}: {ttl} vs {ttl_before}");
    }
    // Every spelling is a hit; the expired question is a miss again.
    assert_eq!(
        qa_get(&mut con, &["faq", "  what is our REFUND policy"]).unwrap(),
        answer_for("What is our refund policy?", MODEL, "")
    );
    assert_eq!(
        qa_get(&mut con, &["faq", "how do i reset my password"]).unwrap(),
        answer_for("How do I reset my password?", MODEL, "")
    );
    assert_eq!(
        qa_get(&mut con, &["faq", "which plans exist", "MODEL", "gpt-4o"]).unwrap(),
        answer_for("Which plans exist?", "gpt-4o", "")
    );
    assert_eq!(info_field(&mut con, "hits"), 3);
    assert_eq!(b.calls(), 4);
    assert_eq!(
        qa_get(&mut con, &["faq", short]).unwrap(),
        answer_for(short, MODEL, "")
    );
    assert_eq!(b.calls(), 5);
    assert_eq!(info_field(&mut con, "misses"), 1);
}

#[test]
fn aof_always_kill_9_right_after_the_replies_keeps_every_answered_entry() {
    const ASKERS: usize = 12;
    let b = Backend::start(Duration::from_millis(50));
    let url = b.url();
    let mut s = Server::start(&[
        "--qa.backend-url",
        &url,
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
    ]);
    // Concurrent misses with different TTLs; the server is killed (SIGKILL) the moment the
    // last reply arrives, with no other command in between.
    let askers: Vec<_> = (0..ASKERS)
        .map(|i| {
            let mut c = s.conn();
            std::thread::spawn(move || {
                let q = format!("durable question {i}");
                let ttl = (100 + i).to_string();
                let a = qa_get(&mut c, &["faq", &q, "TTL", &ttl]).unwrap();
                assert_eq!(a, answer_for(&q, MODEL, ""));
            })
        })
        .collect();
    for a in askers {
        a.join().unwrap();
    }
    s.kill();
    let aof = aof_text(&s).to_ascii_lowercase();
    assert!(!aof.contains("qa.get"), "{aof}");
    // Each entry with its absolute expiry in one command: SET <key> <value> PXAT <ms>.
    assert_eq!(aof.matches("\r\npxat\r\n").count(), ASKERS, "{aof}");

    s.restart(&[]);
    let mut con = s.conn();
    assert!(wait_until(Duration::from_secs(5), || loading_done(
        &mut con
    )));
    assert_eq!(dbsize(&mut con), ASKERS as u64);
    // Each expiry is absolute: exactly `created` + TTL, whatever the restart.
    for k in scan_keys(&mut con, "qa:*") {
        let q = field(&mut con, &k, "question");
        let i: i64 = q.rsplit(' ').next().unwrap().parse().unwrap();
        let created: i64 = field(&mut con, &k, "created").parse().unwrap();
        assert_eq!(pexpiretime(&mut con, &k), created + (100 + i) * 1000, "{q}");
        assert_eq!(field(&mut con, &k, "answer"), answer_for(&q, MODEL, ""));
    }
    for i in 0..ASKERS {
        let q = format!("DURABLE question {i}?");
        assert_eq!(
            qa_get(&mut con, &["faq", &q]).unwrap(),
            answer_for(&format!("durable question {i}"), MODEL, "")
        );
    }
    assert_eq!(b.calls(), ASKERS, "nothing was asked again");
    assert_eq!(info_field(&mut con, "backend_calls"), 0);
}

#[test]
fn aof_rewrites_keep_entries_and_absolute_expiry_and_never_hold_the_module_command() {
    let b = Backend::start(Duration::from_millis(5));
    let url = b.url();
    let mut s = Server::start(&[
        "--qa.backend-url",
        &url,
        "--appendonly",
        "yes",
        "--aof-use-rdb-preamble",
        "no",
    ]);
    let mut con = s.conn();
    for i in 0..5 {
        let q = format!("rewrite question {i}");
        assert_eq!(
            qa_get(&mut con, &["faq", &q]).unwrap(),
            answer_for(&q, MODEL, "")
        );
    }
    let before = snapshot(&mut con);

    let rewrite = |con: &mut redis::Connection| {
        let started = info_num(con, "persistence", "aof_rewrites");
        let _: String = redis::cmd("BGREWRITEAOF").query(con).unwrap();
        assert!(wait_until(Duration::from_secs(10), || {
            info_num(con, "persistence", "aof_rewrites") > started
                && info_str(con, "persistence", "aof_rewrite_in_progress") == "0"
                && info_str(con, "persistence", "aof_rewrite_scheduled") == "0"
        }));
        assert_eq!(
            info_str(con, "persistence", "aof_last_bgrewrite_status"),
            "ok"
        );
    };

    // A rewrite as plain commands (no RDB preamble): entries are written back as SET and
    // PEXPIREAT, never as QA.GET.
    rewrite(&mut con);
    let aof = aof_text(&s).to_ascii_lowercase();
    assert!(!aof.contains("qa.get"), "{aof}");
    // Five entries and the cache's generation key.
    assert_eq!(aof.matches("\r\nset\r\n").count(), 6, "{aof}");
    assert_eq!(aof.matches("pexpireat").count(), 5, "{aof}");
    drop(con);
    s.restart(&[]);
    let mut con = s.conn();
    assert!(wait_until(Duration::from_secs(5), || loading_done(
        &mut con
    )));
    assert_eq!(snapshot(&mut con), before);

    // The same with an RDB preamble, plus an entry written after the rewrite (in the
    // incremental file).
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("aof-use-rdb-preamble")
        .arg("yes")
        .query(&mut con)
        .unwrap();
    rewrite(&mut con);
    assert_eq!(
        qa_get(&mut con, &["faq", "after the rewrite"]).unwrap(),
        answer_for("after the rewrite", MODEL, "")
    );
    let before = snapshot(&mut con);
    assert_eq!(before.len(), 6);
    assert!(!aof_text(&s).to_ascii_lowercase().contains("qa.get"));
    drop(con);
    s.restart(&[]);
    let mut con = s.conn();
    assert!(wait_until(Duration::from_secs(5), || loading_done(
        &mut con
    )));
    assert_eq!(snapshot(&mut con), before);
    for i in 0..5 {
        let q = format!("rewrite question {i}");
        assert_eq!(
            qa_get(&mut con, &["faq", &q]).unwrap(),
            answer_for(&q, MODEL, "")
        );
    }
    assert_eq!(b.calls(), 6);
    assert_eq!(info_field(&mut con, "backend_calls"), 0);
}

/// A client that selected another database looks entries up there, so the answer to its
/// miss must be stored there too (and persisted there).
#[test]
fn a_miss_is_stored_in_the_database_the_client_selected() {
    let b = Backend::start(Duration::from_millis(5));
    let url = b.url();
    let s = Server::start(&["--qa.backend-url", &url]);
    let mut db3 = redis::Client::open(format!("redis://127.0.0.1:{}/3", s.port).as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    let mut db0 = s.conn();
    let q = "Where is my invoice?";
    let want = answer_for(q, MODEL, "");
    assert_eq!(qa_get(&mut db3, &["faq", q]).unwrap(), want);
    assert_eq!(dbsize(&mut db3), 1, "the entry is in the asker's database");
    assert_eq!(dbsize(&mut db0), 0);
    assert_eq!(qa_get(&mut db3, &["faq", q]).unwrap(), want);
    assert_eq!(b.calls(), 1, "the second ask is a hit");
    // The same question from database 0 is another cache: its own miss, stored in 0.
    assert_eq!(qa_get(&mut db0, &["faq", q]).unwrap(), want);
    assert_eq!(b.calls(), 2);
    assert_eq!(dbsize(&mut db0), 1);
    assert_eq!(dbsize(&mut db3), 1);
    // Concurrent identical misses from two databases are two flights, each stored in its own
    // database.
    b.set_delay(Duration::from_millis(200));
    let mut c3 = redis::Client::open(format!("redis://127.0.0.1:{}/3", s.port).as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    let mut c0 = s.conn();
    let t3 = std::thread::spawn(move || qa_get(&mut c3, &["faq", "shared question"]));
    let t0 = std::thread::spawn(move || qa_get(&mut c0, &["faq", "shared question"]));
    assert!(t3.join().unwrap().is_ok());
    assert!(t0.join().unwrap().is_ok());
    assert_eq!(dbsize(&mut db3), 2);
    assert_eq!(dbsize(&mut db0), 2);
}
