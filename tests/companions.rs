//! QA.PEEK, QA.KEY, QA.SET, QA.DEL, QA.INVALIDATE, QA.STATS and QA.GET ... WITHMETA.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::backend::{answer_for, Backend};
use common::*;
use redis::Value;

const MODEL: &str = "gpt-4o-mini";

fn server_for(b: &Backend, extra: &[&str]) -> Server {
    let url = b.url();
    let mut args = vec!["--qa.backend-url", url.as_str()];
    args.extend_from_slice(extra);
    Server::start(&args)
}

fn cmd(con: &mut redis::Connection, args: &[&str]) -> redis::RedisResult<Value> {
    redis::cmd(args[0]).arg(&args[1..]).query(con)
}

fn text(v: &Value) -> String {
    match v {
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        Value::SimpleString(s) => s.clone(),
        Value::Int(n) => n.to_string(),
        other => panic!("not a string: {other:?}"),
    }
}

/// A map reply (RESP3 map or RESP2 flat array) as name -> value.
fn map(v: Value) -> HashMap<String, Value> {
    match v {
        Value::Map(pairs) => pairs.into_iter().map(|(k, v)| (text(&k), v)).collect(),
        Value::Array(items) => items
            .chunks(2)
            .map(|p| (text(&p[0]), p[1].clone()))
            .collect(),
        other => panic!("not a map: {other:?}"),
    }
}

#[test]
fn peek_set_del_and_key() {
    let b = Backend::start(Duration::ZERO);
    let s = server_for(&b, &[]);
    let mut con = s.conn();
    let q = "What is our refund policy?";
    // PEEK never calls the backend.
    assert_eq!(cmd(&mut con, &["QA.PEEK", "faq", q]).unwrap(), Value::Nil);
    assert_eq!(b.calls(), 0);
    // SET pre-loads; GET and PEEK (any spelling) then hit.
    assert_eq!(
        cmd(
            &mut con,
            &[
                "QA.SET",
                "faq",
                q,
                "30 days, no questions asked.",
                "TTL",
                "100"
            ]
        )
        .unwrap(),
        Value::Okay
    );
    assert_eq!(
        qa_get(&mut con, &["faq", " what is our REFUND policy "]).unwrap(),
        "30 days, no questions asked."
    );
    assert_eq!(
        text(&cmd(&mut con, &["QA.PEEK", "faq", q]).unwrap()),
        "30 days, no questions asked."
    );
    assert_eq!(b.calls(), 0);
    // KEY explains where that answer lives.
    let k = map(cmd(&mut con, &["QA.KEY", "faq", q]).unwrap());
    assert_eq!(text(&k["normalized"]), "what is our refund policy");
    let key = text(&k["key"]);
    let mut keys: Vec<String> = redis::cmd("KEYS").arg("qa:*").query(&mut con).unwrap();
    keys.sort();
    assert_eq!(keys, vec![key.clone(), "qa:{faq}:gen".to_string()]);
    let entry = entry_fields(&mut con, &key);
    assert_eq!(entry["question"], q);
    assert_eq!(entry["model"], MODEL);
    let ttl: i64 = redis::cmd("TTL").arg(&key).query(&mut con).unwrap();
    assert!((90..=100).contains(&ttl), "{ttl}");
    // Another model is another entry, for every command.
    assert_eq!(
        cmd(&mut con, &["QA.PEEK", "faq", q, "MODEL", "other"]).unwrap(),
        Value::Nil
    );
    assert_ne!(
        text(&map(cmd(&mut con, &["QA.KEY", "faq", q, "MODEL", "other"]).unwrap())["key"]),
        key
    );
    // DEL: 1, then 0; the next GET is a miss.
    assert_eq!(cmd(&mut con, &["QA.DEL", "faq", q]).unwrap(), Value::Int(1));
    assert_eq!(cmd(&mut con, &["QA.DEL", "faq", q]).unwrap(), Value::Int(0));
    assert_eq!(
        qa_get(&mut con, &["faq", q]).unwrap(),
        answer_for(q, MODEL, "")
    );
    assert_eq!(b.calls(), 1);
}

#[test]
fn companion_errors_are_exact() {
    let s = Server::start(&[]);
    let mut con = s.conn();
    // (command, exact error)
    let rows: &[(&[&str], &str)] = &[
        (
            &["QA.PEEK", "faq"],
            "ERR wrong number of arguments for 'qa.peek' command",
        ),
        (
            &["QA.SET", "faq", "q"],
            "ERR wrong number of arguments for 'qa.set' command",
        ),
        (
            &["QA.INVALIDATE"],
            "ERR wrong number of arguments for 'qa.invalidate' command",
        ),
        (&["QA.INVALIDATE", "a", "b"], "ERR syntax error"),
        (&["QA.INVALIDATE", "a", "TOKEN"], "ERR syntax error"),
        (
            &["QA.INVALIDATE", "a", "TOKEN", ""],
            "ERR TOKEN must be 1 to 64 printable ASCII characters",
        ),
        (
            &["QA.PEEK", "faq", "q", "TTL", "5"],
            "ERR unknown option (expected MODEL or SYSTEM)",
        ),
        (
            &["QA.DEL", "faq", "q", "REFRESH"],
            "ERR unknown option (expected MODEL or SYSTEM)",
        ),
        (
            &["QA.SET", "faq", "q", "a", "REFRESH"],
            "ERR unknown option (expected TTL, MODEL, SYSTEM, CONTEXT, SOURCES, SEMANTIC or EXACT)",
        ),
        (&["QA.SET", "faq", "q", ""], "ERR answer is empty"),
        (&["QA.SET", "faq", "", "a"], "ERR question is empty"),
        (
            &["QA.KEY", "a{b", "q"],
            "ERR cache name must not contain '{' or '}'",
        ),
        (&["QA.INVALIDATE", ""], "ERR cache name is empty"),
        (
            &["QA.STATS", "a", "b"],
            "ERR QA.STATS takes at most one cache name",
        ),
    ];
    for (args, want) in rows {
        let e = cmd(&mut con, args).unwrap_err();
        assert_eq!(err_text(&e), *want, "{args:?}");
    }
    assert_eq!(dbsize(&mut con), 0);
}

#[test]
fn invalidate_is_o1_and_every_old_entry_stops_being_served() {
    const ENTRIES: usize = 100_000;
    let b = Backend::start(Duration::ZERO);
    let s = server_for(&b, &[]);
    let mut con = s.conn();
    let mut pipe = redis::pipe();
    for i in 0..ENTRIES {
        pipe.cmd("QA.SET")
            .arg("big")
            .arg(format!("question {i}"))
            .arg(format!("answer {i}"))
            .ignore();
    }
    let _: () = pipe.query(&mut con).unwrap();
    assert_eq!(
        dbsize(&mut con),
        ENTRIES as u64,
        "entries and the generation"
    );
    assert_eq!(
        qa_get(&mut con, &["big", "question 7"]).unwrap(),
        "answer 7"
    );
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query(&mut con)
        .unwrap();
    let first = text(&cmd(&mut con, &["QA.INVALIDATE", "big"]).unwrap());
    assert_eq!(first.len(), 32, "a random 128-bit token in hex: {first}");
    assert!(first.bytes().all(|b| b.is_ascii_hexdigit()), "{first}");
    // One SET, whatever the size: the command's own time is reported, not asserted (timing
    // belongs to the benchmark), but nothing was deleted inline.
    assert_eq!(
        dbsize(&mut con),
        ENTRIES as u64,
        "old entries stay until their TTL"
    );
    let pong: String = redis::cmd("PING").query(&mut con).unwrap();
    assert_eq!(pong, "PONG");
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut con)
        .unwrap();
    eprintln!(
        "{}",
        info.lines()
            .find(|l| l.contains("qa.invalidate"))
            .unwrap_or("")
    );
    for i in [0, 7, 99_999] {
        let q = format!("question {i}");
        assert_eq!(
            cmd(&mut con, &["QA.PEEK", "big", &q]).unwrap(),
            Value::Nil,
            "{q}"
        );
    }
    // The next GET asks the backend and the new entry is served from then on.
    assert_eq!(
        qa_get(&mut con, &["big", "question 7"]).unwrap(),
        answer_for("question 7", MODEL, "")
    );
    assert_eq!(
        qa_get(&mut con, &["big", "question 7"]).unwrap(),
        answer_for("question 7", MODEL, "")
    );
    assert_eq!(b.calls(), 1);
    // Other caches are untouched.
    let _: Value = cmd(&mut con, &["QA.SET", "small", "q", "kept"]).unwrap();
    let second = text(&cmd(&mut con, &["QA.INVALIDATE", "big"]).unwrap());
    assert_eq!(second.len(), 32);
    assert_ne!(second, first, "tokens are never reused");
    assert_eq!(
        text(&cmd(&mut con, &["QA.PEEK", "small", "q"]).unwrap()),
        "kept"
    );
}

#[test]
fn the_generation_mirror_follows_the_key_however_it_changes() {
    let s = Server::start(&[]);
    let mut con = s.conn();
    let set = |con: &mut redis::Connection, a: &str| {
        let _: Value = cmd(con, &["QA.SET", "c", "q", a]).unwrap();
    };
    let peek = |con: &mut redis::Connection| cmd(con, &["QA.PEEK", "c", "q"]).unwrap();
    let gen = |con: &mut redis::Connection| -> Option<String> {
        redis::cmd("GET").arg("qa:{c}:gen").query(con).unwrap()
    };
    // A cache without a generation has no entries: peeking makes nothing.
    assert_eq!(peek(&mut con), Value::Nil);
    assert_eq!(dbsize(&mut con), 0);
    // The first write makes a random token.
    set(&mut con, "gen0");
    assert_eq!(text(&peek(&mut con)), "gen0");
    let token0 = gen(&mut con).expect("the first write makes the generation");
    assert_eq!(token0.len(), 32);
    // A deleted generation key never brings old entries back: the cache is empty, and the
    // next write gets a new token (the gen0 entry is still stored, unreachable).
    let _: () = redis::cmd("DEL").arg("qa:{c}:gen").query(&mut con).unwrap();
    assert_eq!(peek(&mut con), Value::Nil);
    set(&mut con, "gen1");
    assert_eq!(text(&peek(&mut con)), "gen1");
    let token1 = gen(&mut con).unwrap();
    assert_ne!(token1, token0);
    assert_eq!(
        dbsize(&mut con),
        2,
        "gen0 entry, gen1 entry, generation key"
    );
    // A renamed-away or expired generation key likewise.
    let _: () = redis::cmd("RENAME")
        .arg("qa:{c}:gen")
        .arg("elsewhere")
        .query(&mut con)
        .unwrap();
    assert_eq!(peek(&mut con), Value::Nil);
    let _: () = redis::cmd("RENAME")
        .arg("elsewhere")
        .arg("qa:{c}:gen")
        .query(&mut con)
        .unwrap();
    assert_eq!(text(&peek(&mut con)), "gen1", "the same token, restored");
    let _: () = redis::cmd("PEXPIRE")
        .arg("qa:{c}:gen")
        .arg(1)
        .query(&mut con)
        .unwrap();
    assert!(wait_until(Duration::from_secs(5), || peek(&mut con) == Value::Nil));
    // Another type at the generation key is refused, never guessed.
    let _: () = redis::cmd("LPUSH")
        .arg("qa:{c}:gen")
        .arg("x")
        .query(&mut con)
        .unwrap();
    // (A read may still see the mirror's "no generation": nil, never an answer.)
    assert_eq!(peek(&mut con), Value::Nil);
    let e = cmd(&mut con, &["QA.SET", "c", "q", "a"]).unwrap_err();
    assert_eq!(
        err_text(&e),
        "WRONGTYPE the cache's generation key (qa:{<cache>}:gen) does not hold a string"
    );
    let e = cmd(&mut con, &["QA.INVALIDATE", "c"]).unwrap_err();
    assert_eq!(
        err_text(&e),
        "WRONGTYPE the cache's generation key (qa:{<cache>}:gen) does not hold a string"
    );
    // FLUSHALL empties the mirror with the keys: the next write makes a new generation.
    let _: () = redis::cmd("DEL").arg("qa:{c}:gen").query(&mut con).unwrap();
    set(&mut con, "gen2");
    let _: () = redis::cmd("FLUSHALL").query(&mut con).unwrap();
    assert_eq!(peek(&mut con), Value::Nil);
    set(&mut con, "after flush");
    let key = text(&map(cmd(&mut con, &["QA.KEY", "c", "q"]).unwrap())["key"]);
    let mut keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut con).unwrap();
    keys.sort();
    assert_eq!(keys, vec![key, "qa:{c}:gen".to_string()]);
    // Each database has its own generations.
    let _: Value = cmd(&mut con, &["QA.INVALIDATE", "c"]).unwrap();
    let _: () = redis::cmd("SELECT").arg(1).query(&mut con).unwrap();
    assert_eq!(peek(&mut con), Value::Nil);
    set(&mut con, "db1");
    assert_eq!(text(&peek(&mut con)), "db1");
}

/// An integer-encoded generation (written by an older build's INCR) is read without being
/// rewritten (direct memory access would re-encode it, on replicas too).
#[test]
fn reading_a_generation_leaves_its_encoding_alone() {
    let s = Server::start(&[]);
    let mut con = s.conn();
    let _: () = redis::cmd("SET")
        .arg("qa:{old}:gen")
        .arg(7)
        .query(&mut con)
        .unwrap();
    let enc = |con: &mut redis::Connection| -> String {
        redis::cmd("OBJECT")
            .arg("ENCODING")
            .arg("qa:{old}:gen")
            .query(con)
            .unwrap()
    };
    assert_eq!(enc(&mut con), "int");
    assert_eq!(cmd(&mut con, &["QA.PEEK", "old", "q"]).unwrap(), Value::Nil);
    let _: Value = cmd(&mut con, &["QA.SET", "old", "q", "a"]).unwrap();
    assert_eq!(text(&cmd(&mut con, &["QA.PEEK", "old", "q"]).unwrap()), "a");
    assert_eq!(enc(&mut con), "int");
}

/// Hits do not read the generation key through the mirror, yet it must not look like the
/// coldest key to LRU eviction: every 32nd use of the mirror reads it.
#[test]
fn hits_keep_the_generation_key_warm() {
    let s = Server::start(&["--maxmemory-policy", "allkeys-lru"]);
    let mut con = s.conn();
    let _: Value = cmd(&mut con, &["QA.SET", "warm", "q", "a"]).unwrap();
    let _: () = redis::cmd("SET")
        .arg("control")
        .arg(1)
        .query(&mut con)
        .unwrap();
    let idle = |con: &mut redis::Connection, k: &str| -> u64 {
        redis::cmd("OBJECT")
            .arg("IDLETIME")
            .arg(k)
            .query(con)
            .unwrap()
    };
    // LRU time has a resolution of a second: wait until both keys look idle.
    assert!(wait_until(Duration::from_secs(10), || idle(
        &mut con, "control"
    ) >= 2
        && idle(&mut con, "qa:{warm}:gen") >= 2));
    for _ in 0..64 {
        assert_eq!(
            text(&cmd(&mut con, &["QA.PEEK", "warm", "q"]).unwrap()),
            "a"
        );
    }
    assert_eq!(idle(&mut con, "qa:{warm}:gen"), 0);
    assert!(idle(&mut con, "control") >= 2);
}

/// Names nobody stores anything under cost bounded memory (the mirror keeps recently used
/// names only) and take no per-cache stats slot, so a real cache still gets its figures.
#[test]
fn unused_cache_names_are_bounded_and_do_not_blind_the_stats() {
    let s = Server::start(&[]);
    let mut con = s.conn();
    let mut pipe = redis::pipe();
    for i in 0..20_000 {
        pipe.cmd("QA.PEEK")
            .arg(format!("junk{i}"))
            .arg("q")
            .ignore();
    }
    let _: () = pipe.query(&mut con).unwrap();
    assert_eq!(dbsize(&mut con), 0);
    let mirrored = info_num(&mut con, "qa", "qa_mirrored_caches");
    assert!(mirrored <= 16_384, "mirror bounded: {mirrored}");
    let _: Value = cmd(&mut con, &["QA.SET", "real", "q", "a"]).unwrap();
    assert_eq!(text(&cmd(&mut con, &["QA.GET", "real", "q"]).unwrap()), "a");
    let st = map(cmd(&mut con, &["QA.STATS", "real"]).unwrap());
    assert_eq!(st["hits"], Value::Int(1));
    assert_eq!(st["tracked"], Value::Int(1));
    let junk = map(cmd(&mut con, &["QA.STATS", "junk7"]).unwrap());
    assert_eq!(junk["tracked"], Value::Int(0));
}

/// Writes to keys that are not the module's (strings, lists, hashes, sets...) never reach
/// it: the module subscribes to no write event class.
#[test]
fn unrelated_writes_send_the_module_no_events() {
    let s = Server::start(&[]);
    let mut con = s.conn();
    let mut pipe = redis::pipe();
    for i in 0..500 {
        pipe.cmd("SET").arg(format!("s{i}")).arg(i).ignore();
        pipe.cmd("INCR").arg(format!("n{i}")).ignore();
        pipe.cmd("LPUSH").arg(format!("l{i}")).arg(i).ignore();
        pipe.cmd("HSET")
            .arg(format!("h{i}"))
            .arg("f")
            .arg(i)
            .ignore();
        pipe.cmd("SADD").arg(format!("t{i}")).arg(i).ignore();
        pipe.cmd("ZADD").arg(format!("z{i}")).arg(1).arg(i).ignore();
        pipe.cmd("XADD")
            .arg(format!("x{i}"))
            .arg("*")
            .arg("f")
            .arg(i)
            .ignore();
    }
    let _: () = pipe.query(&mut con).unwrap();
    assert_eq!(info_num(&mut con, "qa", "qa_keyspace_events"), 0);
    // A delete is a generic event, which the generation mirror and the index need.
    let _: () = redis::cmd("DEL").arg("s1").query(&mut con).unwrap();
    assert_eq!(info_num(&mut con, "qa", "qa_keyspace_events"), 1);
}

#[test]
fn invalidation_reaches_replicas() {
    let (primary, replica) = primary_and_replica(&[], &[]);
    let mut p = primary.conn();
    let mut r = replica.conn();
    let _: Value = cmd(&mut p, &["QA.SET", "faq", "q", "old"]).unwrap();
    let acked: i64 = redis::cmd("WAIT").arg(1).arg(5000).query(&mut p).unwrap();
    assert_eq!(acked, 1);
    assert_eq!(text(&cmd(&mut r, &["QA.PEEK", "faq", "q"]).unwrap()), "old");
    let _: Value = cmd(&mut p, &["QA.INVALIDATE", "faq"]).unwrap();
    let acked: i64 = redis::cmd("WAIT").arg(1).arg(5000).query(&mut p).unwrap();
    assert_eq!(acked, 1);
    assert_eq!(cmd(&mut r, &["QA.PEEK", "faq", "q"]).unwrap(), Value::Nil);
    let _: Value = cmd(&mut p, &["QA.SET", "faq", "q", "new"]).unwrap();
    // Until the write arrives the replica has no entry for the new generation (nil).
    assert!(wait_until(Duration::from_secs(5), || {
        cmd(&mut r, &["QA.PEEK", "faq", "q"]).ok() == Some(Value::BulkString(b"new".to_vec()))
    }));
}

#[test]
fn withmeta_tells_how_an_answer_was_served_in_resp2_and_resp3() {
    let b = Backend::start(Duration::from_millis(300));
    let s = server_for(&b, &["--qa.ttl", "500"]);
    let mut con = s.conn();
    // A miss, with a second asker coalescing on it.
    let mut c2 = s.conn();
    let follower = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        map(cmd(&mut c2, &["QA.GET", "faq", "q", "WITHMETA"]).unwrap())
    });
    let m = map(cmd(&mut con, &["QA.GET", "faq", "q", "WITHMETA"]).unwrap());
    let f = follower.join().unwrap();
    assert_eq!(text(&m["answer"]), answer_for("q", MODEL, ""));
    assert_eq!(text(&m["served"]), "miss");
    assert_eq!(m["age_ms"], Value::Int(0));
    assert_eq!(m["ttl_ms"], Value::Int(500_000));
    assert_eq!(text(&f["served"]), "coalesced");
    assert_eq!(text(&f["answer"]), answer_for("q", MODEL, ""));
    assert_eq!(b.calls(), 1);
    // A hit over RESP3: a real map, with the entry's age and remaining TTL.
    let client = redis::Client::open(format!("{}?protocol=resp3", s.url())).unwrap();
    let mut c3 = client.get_connection().unwrap();
    let v = cmd(&mut c3, &["QA.GET", "faq", "Q?", "WITHMETA"]).unwrap();
    assert!(matches!(v, Value::Map(_)), "{v:?}");
    let h = map(v);
    assert_eq!(text(&h["served"]), "hit");
    let Value::Int(age) = h["age_ms"] else {
        panic!()
    };
    let Value::Int(ttl) = h["ttl_ms"] else {
        panic!()
    };
    assert!((0..60_000).contains(&age), "{age}");
    assert!(ttl > 400_000 && ttl <= 500_000, "{ttl}");
    // REFRESH says so.
    let r = map(cmd(&mut con, &["QA.GET", "faq", "q", "REFRESH", "WITHMETA"]).unwrap());
    assert_eq!(text(&r["served"]), "refresh");
    assert_eq!(b.calls(), 2);
}

#[test]
fn stats_match_the_calls_made_and_price_the_savings() {
    let b = Backend::start(Duration::from_millis(20));
    let s = server_for(
        &b,
        &[
            "--qa.price-input-per-mtok",
            "0.15",
            "--qa.price-output-per-mtok",
            "0.6",
        ],
    );
    let mut con = s.conn();
    let q = "What is our refund policy?";
    let answer = qa_get(&mut con, &["faq", q]).unwrap();
    for _ in 0..3 {
        qa_get(&mut con, &["faq", q]).unwrap();
    }
    qa_get(&mut con, &["other", "x"]).unwrap();
    // The mock backend's usage: prompt len/4+1, completion len/4+1 tokens.
    let (tin, tout) = ((q.len() / 4 + 1) as i64, (answer.len() / 4 + 1) as i64);
    let st = map(cmd(&mut con, &["QA.STATS", "faq"]).unwrap());
    let int = |m: &HashMap<String, Value>, k: &str| match m[k] {
        Value::Int(n) => n,
        ref other => panic!("{k}: {other:?}"),
    };
    assert_eq!(int(&st, "hits"), 3);
    assert_eq!(int(&st, "misses"), 1);
    assert_eq!(int(&st, "backend_calls"), 1);
    assert_eq!(int(&st, "backend_errors"), 0);
    assert_eq!(int(&st, "tokens_in_spent"), tin);
    assert_eq!(int(&st, "tokens_out_spent"), tout);
    assert_eq!(int(&st, "tokens_in_saved"), 3 * tin);
    assert_eq!(int(&st, "tokens_out_saved"), 3 * tout);
    assert!(
        int(&st, "backend_ms_saved") >= 3 * 20,
        "each hit saved the backend's 20 ms"
    );
    let money = (3 * tin) as f64 * 0.15 / 1e6 + (3 * tout) as f64 * 0.6 / 1e6;
    assert_eq!(text(&st["money_saved"]), format!("{money:.6}"));
    let all = map(cmd(&mut con, &["QA.STATS"]).unwrap());
    assert_eq!(int(&all, "hits"), 3);
    assert_eq!(int(&all, "misses"), 2);
    assert_eq!(int(&all, "backend_calls"), 2);
    assert!(int(&all, "backend_latency_p50_ms") >= 20);
    // The worker thread returns just after its answer is handed to the main thread, so the
    // pool may still count it for a moment after the client has its reply.
    assert!(wait_until(Duration::from_secs(5), || {
        let all = map(cmd(&mut con, &["QA.STATS"]).unwrap());
        int(&all, "inflight") == 0
    }));
    let unseen = map(cmd(&mut con, &["QA.STATS", "never"]).unwrap());
    assert_eq!(int(&unseen, "hits"), 0);
    assert_eq!(info_field(&mut con, "tokens_in_saved"), 3 * tin as u64);
}

#[test]
fn read_only_users_can_look_but_not_write() {
    let s = Server::start(&[]);
    let mut admin = s.conn();
    let _: Value = cmd(&mut admin, &["QA.SET", "public", "q", "a"]).unwrap();
    let _: () = redis::cmd("ACL")
        .arg(&[
            "SETUSER",
            "reader",
            "on",
            ">pw",
            "+qa.get",
            "+qa.peek",
            "+qa.key",
            "+qa.set",
            "+qa.del",
            "+qa.invalidate",
            "%R~public*",
        ])
        .query(&mut admin)
        .unwrap();
    let mut r = s.conn();
    let _: () = redis::cmd("AUTH")
        .arg("reader")
        .arg("pw")
        .query(&mut r)
        .unwrap();
    assert_eq!(
        text(&cmd(&mut r, &["QA.PEEK", "public", "q"]).unwrap()),
        "a"
    );
    assert!(cmd(&mut r, &["QA.KEY", "public", "q"]).is_ok());
    for args in [
        &["QA.SET", "public", "q", "b"][..],
        &["QA.DEL", "public", "q"][..],
        &["QA.INVALIDATE", "public"][..],
        &["QA.PEEK", "secret", "q"][..],
    ] {
        let e = cmd(&mut r, args).unwrap_err();
        assert_eq!(e.code(), Some("NOPERM"), "{args:?}: {e}");
    }
    assert_eq!(
        text(&cmd(&mut admin, &["QA.PEEK", "public", "q"]).unwrap()),
        "a"
    );
}

#[test]
fn stale_entries_are_served_at_once_while_one_call_refreshes_them() {
    const CLIENTS: usize = 20;
    let b = Backend::start(Duration::ZERO);
    let s = server_for(&b, &["--qa.stale-ttl", "30"]);
    let mut con = s.conn();
    let old = qa_get(&mut con, &["faq", "q", "TTL", "1"]).unwrap();
    let key = text(&map(cmd(&mut con, &["QA.KEY", "faq", "q"]).unwrap())["key"]);
    let pttl: i64 = redis::cmd("PTTL").arg(&key).query(&mut con).unwrap();
    assert!(
        pttl > 30_000 && pttl <= 31_000,
        "the key lives TTL + grace: {pttl}"
    );
    // Fresh: a plain hit.
    assert_eq!(
        text(&map(cmd(&mut con, &["QA.GET", "faq", "q", "WITHMETA"]).unwrap())["served"]),
        "hit"
    );
    b.set_delay(Duration::from_millis(800));
    b.set_reply(common::backend::Reply::Raw(
        r#"{"choices":[{"message":{"content":"fresh answer"}}]}"#.into(),
    ));
    // Past the TTL: every asker gets the old answer at once, served "stale", and only one
    // background call refreshes it.
    assert!(wait_until(Duration::from_secs(5), || {
        let m = map(cmd(&mut con, &["QA.GET", "faq", "q", "WITHMETA"]).unwrap());
        text(&m["served"]) == "stale"
    }));
    let handles: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let mut c = s.conn();
            std::thread::spawn(move || {
                let started = std::time::Instant::now();
                let m = map(cmd(&mut c, &["QA.GET", "faq", "q", "WITHMETA"]).unwrap());
                (text(&m["answer"]), text(&m["served"]), started.elapsed())
            })
        })
        .collect();
    for h in handles {
        let (answer, served, took) = h.join().unwrap();
        assert_eq!((answer.as_str(), served.as_str()), (old.as_str(), "stale"));
        assert!(
            took < Duration::from_millis(800),
            "a stale hit does not wait for the refresh"
        );
    }
    // The refresh runs in the background: wait for it to reach the backend, then check that
    // twenty stale hits made that one call only.
    assert!(wait_until(Duration::from_secs(5), || b.calls() >= 2));
    assert!(wait_until(Duration::from_secs(5), || {
        cmd(&mut con, &["QA.PEEK", "faq", "q"]).ok()
            == Some(Value::BulkString(b"fresh answer".to_vec()))
    }));
    assert_eq!(b.calls(), 2, "one miss, one refresh");
    assert_eq!(
        text(&map(cmd(&mut con, &["QA.GET", "faq", "q", "WITHMETA"]).unwrap())["served"]),
        "hit"
    );
    let st = map(cmd(&mut con, &["QA.STATS", "faq"]).unwrap());
    assert!(
        matches!(st["stale"], Value::Int(n) if n >= CLIENTS as i64),
        "{:?}",
        st["stale"]
    );

    // A refresh that fails keeps the stale answer, and a sick backend is asked at most once a
    // second per entry, not once per hit.
    b.set_delay(Duration::ZERO);
    b.set_reply(common::backend::Reply::Status(500, "down".into()));
    let _ = qa_get(&mut con, &["faq", "q2", "TTL", "1"]);
    b.set_reply(common::backend::Reply::Answer);
    qa_get(&mut con, &["faq", "q2", "TTL", "1"]).unwrap();
    let q2 = answer_for("q2", MODEL, "");
    b.set_reply(common::backend::Reply::Status(500, "down".into()));
    let calls = b.calls();
    assert!(wait_until(Duration::from_secs(5), || {
        text(&map(cmd(&mut con, &["QA.GET", "faq", "q2", "WITHMETA"]).unwrap())["served"])
            == "stale"
    }));
    for _ in 0..50 {
        assert_eq!(qa_get(&mut con, &["faq", "q2"]).unwrap(), q2);
    }
    assert!(
        b.calls() - calls <= 2,
        "{} refresh calls for 50 stale hits",
        b.calls() - calls
    );
    // STALE 0 on the call turns it off for the entry it writes.
    b.set_reply(common::backend::Reply::Answer);
    qa_get(&mut con, &["faq", "q3", "TTL", "100", "STALE", "0"]).unwrap();
    let key3 = text(&map(cmd(&mut con, &["QA.KEY", "faq", "q3"]).unwrap())["key"]);
    let ttl3: i64 = redis::cmd("TTL").arg(&key3).query(&mut con).unwrap();
    assert!(ttl3 <= 100, "{ttl3}");
    assert_eq!(entry_fields(&mut con, &key3).get("fresh_until"), None);
}

#[test]
fn every_command_has_docs_and_key_metadata() {
    let s = Server::start(&[]);
    let mut con = s.conn();
    // (command, arguments COMMAND DOCS must list, key flags COMMAND INFO must show)
    let rows: &[(&str, &[&str], Option<&str>)] = &[
        (
            "qa.get",
            &[
                "cache", "question", "ttl", "stale", "model", "system", "refresh", "withmeta",
            ],
            Some("RO"),
        ),
        (
            "qa.peek",
            &["cache", "question", "model", "system"],
            Some("RO"),
        ),
        (
            "qa.key",
            &["cache", "question", "model", "system"],
            Some("RO"),
        ),
        (
            "qa.set",
            &["cache", "question", "answer", "ttl", "model", "system"],
            Some("RW"),
        ),
        (
            "qa.del",
            &["cache", "question", "model", "system"],
            Some("RW"),
        ),
        ("qa.invalidate", &["cache"], Some("RW")),
        (
            "qa.entry",
            &["cache", "question", "model", "system"],
            Some("RO"),
        ),
        ("qa.stats", &["cache"], None),
        ("qa.audit", &["cache", "count"], Some("RO")),
    ];
    for (name, args, key_flag) in rows {
        let docs = format!("{:?}", cmd(&mut con, &["COMMAND", "DOCS", name]).unwrap());
        assert!(
            docs.contains("summary") && docs.contains("complexity"),
            "{name}: {docs}"
        );
        for a in *args {
            assert!(
                docs.contains(&format!("\"{a}\"")),
                "{name} lacks {a}: {docs}"
            );
        }
        let info = format!("{:?}", cmd(&mut con, &["COMMAND", "INFO", name]).unwrap());
        match key_flag {
            Some(flag) => assert!(info.contains(&format!("\"{flag}\"")), "{name}: {info}"),
            None => assert!(
                !info.contains("begin_search"),
                "{name} declares no key: {info}"
            ),
        }
    }
}

/// An entry is one string (format v2): a text header, the question, the answer. `GET` shows
/// it readable, `QA.ENTRY` shows it whole, and a hit serves it with its stats, age and
/// staleness; a string that is not an entry (edited by hand, another version) is not served.
#[test]
fn an_entry_is_one_readable_string_shown_whole_by_qa_entry() {
    let b = Backend::start(Duration::from_millis(20));
    let s = server_for(&b, &["--qa.stale-ttl", "30"]);
    let mut con = s.conn();
    let q = "What is our refund policy?";
    let answer = qa_get(&mut con, &["faq", q, "TTL", "600"]).unwrap();
    let key = text(&map(cmd(&mut con, &["QA.KEY", "faq", q]).unwrap())["key"]);
    let kind: String = redis::cmd("TYPE").arg(&key).query(&mut con).unwrap();
    assert_eq!(kind, "string");
    let raw: Vec<u8> = redis::cmd("GET").arg(&key).query(&mut con).unwrap();
    let entry = decode_entry(&raw).unwrap();
    let num = |f: &str| -> u64 { entry[f].parse().unwrap() };
    let (created, fresh_until) = (num("created"), num("fresh_until"));
    let (tin, tout, lat) = (num("tokens_in"), num("tokens_out"), num("latency_ms"));
    assert_eq!(fresh_until, created + 600_000);
    assert!(lat >= 20, "{lat}");
    let header = format!(
        "qa2 c={created} f={fresh_until} i={tin} o={tout} l={lat} m={MODEL} q={} a={} s=0\n",
        q.len(),
        answer.len()
    );
    assert_eq!(
        String::from_utf8_lossy(&raw),
        format!("{header}{q}\n{answer}")
    );
    let expire_at: i64 = redis::cmd("PEXPIRETIME").arg(&key).query(&mut con).unwrap();
    assert_eq!(expire_at as u64, created + 630_000, "TTL + stale grace");

    // QA.ENTRY: every part, by name (RESP2 here: a flat array).
    let e = map(cmd(
        &mut con,
        &["QA.ENTRY", "faq", " what is our REFUND policy "],
    )
    .unwrap());
    let int = |k: &str| match e[k] {
        Value::Int(n) => n,
        ref other => panic!("{k}: {other:?}"),
    };
    assert_eq!(e.len(), 12, "{e:?}");
    assert_eq!(text(&e["key"]), key);
    assert_eq!(text(&e["question"]), q);
    assert_eq!(text(&e["model"]), MODEL);
    assert_eq!(text(&e["answer"]), answer);
    assert_eq!(int("format"), 2);
    assert_eq!(int("created_ms") as u64, created);
    assert_eq!(int("fresh_until_ms") as u64, fresh_until);
    assert_eq!(
        (int("tokens_in"), int("tokens_out"), int("latency_ms")),
        (tin as i64, tout as i64, lat as i64)
    );
    assert!(
        (600_000..=630_000).contains(&int("ttl_ms")),
        "{}",
        int("ttl_ms")
    );
    assert_eq!(int("sem_bytes"), 0);
    assert_eq!(
        cmd(&mut con, &["QA.ENTRY", "faq", "never asked"]).unwrap(),
        Value::Nil
    );

    // Hits: the answer, what it saved, its age.
    for i in 1..=2u64 {
        let m = map(cmd(&mut con, &["QA.GET", "faq", q, "WITHMETA"]).unwrap());
        assert_eq!(text(&m["answer"]), answer);
        assert_eq!(text(&m["served"]), "hit");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let age = match m["age_ms"] {
            Value::Int(n) => n as u64,
            ref other => panic!("age_ms {other:?}"),
        };
        assert!(
            age <= now - created && age + 60_000 > now - created,
            "{age}"
        );
        assert_eq!(info_field(&mut con, "hits"), i);
        assert_eq!(info_field(&mut con, "tokens_in_saved"), i * tin);
        assert_eq!(info_field(&mut con, "tokens_out_saved"), i * tout);
        assert_eq!(info_field(&mut con, "backend_ms_saved"), i * lat);
    }
    assert_eq!(b.calls(), 1);

    // Past `f`, within the grace: served stale, and refreshed (which writes a new entry).
    let past = String::from_utf8_lossy(&raw).replacen(&format!("f={fresh_until}"), "f=1", 1);
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg(&past)
        .arg("KEEPTTL")
        .query(&mut con)
        .unwrap();
    let m = map(cmd(&mut con, &["QA.GET", "faq", q, "WITHMETA"]).unwrap());
    assert_eq!(text(&m["served"]), "stale");
    assert!(wait_until(Duration::from_secs(5), || {
        entry_fields(&mut con, &key)
            .get("fresh_until")
            .map(String::as_str)
            != Some("1")
    }));
    assert_eq!(b.calls(), 2);
    assert_eq!(
        text(&map(cmd(&mut con, &["QA.GET", "faq", q, "WITHMETA"]).unwrap())["served"]),
        "hit"
    );

    // Strings that are not entries: (value, why). Never served, never overwritten by a hit.
    let good = String::from_utf8_lossy(&raw).into_owned();
    let rows: Vec<(String, &str)> = vec![
        (good.replacen("qa2 ", "qa3 ", 1), "another format version"),
        (format!("{good}x"), "longer than its lengths say"),
        (good[..good.len() - 1].to_string(), "truncated"),
        (
            good.replacen(" f=", "  f=", 1),
            "a double space in the header",
        ),
        ("x".repeat(60), "not an entry at all"),
        ("42".to_string(), "a short string (kept as an integer)"),
    ];
    for (value, why) in &rows {
        let _: () = redis::cmd("SET")
            .arg(&key)
            .arg(value)
            .query(&mut con)
            .unwrap();
        assert_eq!(
            err_text(&qa_get(&mut con, &["faq", q]).unwrap_err()),
            "WRONGTYPE the entry key holds a value that is not a redis-qa entry",
            "{why}"
        );
        assert_eq!(
            err_text(&cmd(&mut con, &["QA.ENTRY", "faq", q]).unwrap_err()),
            "WRONGTYPE the entry key holds a value that is not a redis-qa entry",
            "{why}"
        );
        let now: Vec<u8> = redis::cmd("GET").arg(&key).query(&mut con).unwrap();
        assert_eq!(now, value.as_bytes(), "{why}");
    }
    assert_eq!(b.calls(), 2);

    // QA.SET writes an entry without a grace and with nothing saved.
    cmd(&mut con, &["QA.SET", "faq", "set q", "set a"]).unwrap();
    let key2 = text(&map(cmd(&mut con, &["QA.KEY", "faq", "set q"]).unwrap())["key"]);
    let raw2: Vec<u8> = redis::cmd("GET").arg(&key2).query(&mut con).unwrap();
    let e2 = decode_entry(&raw2).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&raw2),
        format!(
            "qa2 c={} f=0 i=0 o=0 l=0 m={MODEL} q=5 a=5 s=0\nset q\nset a",
            e2["created"]
        )
    );
}

/// Entries written by older builds are hashes (format 1). They are still served, from the
/// packed `hit` field or, without a usable one (an entry of an even older build, or edited by
/// hand), from the readable fields, with the same stats, age and staleness; `QA.ENTRY` shows
/// them; the next store replaces one with a v2 string.
#[test]
fn entries_of_older_builds_are_served_and_replaced_when_next_stored() {
    let b = Backend::start(Duration::from_millis(20));
    let s = server_for(&b, &["--qa.stale-ttl", "30"]);
    let mut con = s.conn();
    let q = "What is our refund policy?";
    // The cache's generation first (an older build wrote under one of its own).
    let _: Value = cmd(&mut con, &["QA.INVALIDATE", "faq"]).unwrap();
    let key = text(&map(cmd(&mut con, &["QA.KEY", "faq", q]).unwrap())["key"]);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let (created, fresh_until, tin, tout, lat) = (now - 5_000, now + 600_000, 7u64, 15u64, 2001u64);
    let answer = "Refunds within 30 days.";
    let hit = format!("1 {created} {fresh_until} {tin} {tout} {lat}");
    let _: () = redis::cmd("HSET")
        .arg(&key)
        .arg(&[
            ("answer", answer.to_string()),
            ("hit", hit.clone()),
            ("question", q.to_string()),
            ("model", MODEL.to_string()),
            ("created", created.to_string()),
            ("tokens_in", tin.to_string()),
            ("tokens_out", tout.to_string()),
            ("latency_ms", lat.to_string()),
            ("fresh_until", fresh_until.to_string()),
        ])
        .query(&mut con)
        .unwrap();
    let _: () = redis::cmd("PEXPIREAT")
        .arg(&key)
        .arg(fresh_until + 30_000)
        .query(&mut con)
        .unwrap();

    let e = map(cmd(&mut con, &["QA.ENTRY", "faq", q]).unwrap());
    assert_eq!(e["format"], Value::Int(1));
    assert_eq!(text(&e["answer"]), answer);
    assert_eq!(text(&e["question"]), q);
    assert_eq!(e["tokens_out"], Value::Int(tout as i64));

    // (what is done to the entry's `hit` field before a hit, why)
    let rows: &[(Option<&str>, &str)] = &[
        (None, "as written"),
        (Some(""), "deleted: an entry of an older build"),
        (Some("garbage"), "unreadable"),
        (Some("2 1 2 3 4 5"), "a format this build does not know"),
        (Some("1 1 2 3 4"), "one number short"),
    ];
    for (i, (edit, why)) in rows.iter().enumerate() {
        match edit {
            None => {}
            Some("") => {
                let _: i64 = redis::cmd("HDEL")
                    .arg(&key)
                    .arg("hit")
                    .query(&mut con)
                    .unwrap();
            }
            Some(v) => {
                let _: i64 = redis::cmd("HSET")
                    .arg(&key)
                    .arg("hit")
                    .arg(*v)
                    .query(&mut con)
                    .unwrap();
            }
        }
        let m = map(cmd(&mut con, &["QA.GET", "faq", q, "WITHMETA"]).unwrap());
        assert_eq!(text(&m["answer"]), answer, "{why}");
        assert_eq!(text(&m["served"]), "hit", "{why}");
        let age = match m["age_ms"] {
            Value::Int(n) => n as u64,
            ref other => panic!("{why}: age_ms {other:?}"),
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        assert!(
            age <= now - created,
            "{why}: age {age} from created {created}"
        );
        assert!(age + 60_000 > now - created, "{why}: age {age}");
        assert_eq!(
            text(&cmd(&mut con, &["QA.PEEK", "faq", q]).unwrap()),
            answer,
            "{why}"
        );
        assert_eq!(qa_get(&mut con, &["faq", q]).unwrap(), answer, "{why}");
        let n = 2 * (i as u64 + 1);
        assert_eq!(info_field(&mut con, "hits"), n, "{why}");
        assert_eq!(info_field(&mut con, "tokens_in_saved"), n * tin, "{why}");
        assert_eq!(info_field(&mut con, "tokens_out_saved"), n * tout, "{why}");
        assert_eq!(info_field(&mut con, "backend_ms_saved"), n * lat, "{why}");
    }
    assert_eq!(b.calls(), 0);

    // Past `fresh_until`, without `hit`: served stale from the readable field, and refreshed,
    // which replaces the hash with a v2 string.
    let _: i64 = redis::cmd("HDEL")
        .arg(&key)
        .arg("hit")
        .query(&mut con)
        .unwrap();
    let _: i64 = redis::cmd("HSET")
        .arg(&key)
        .arg("fresh_until")
        .arg(1)
        .query(&mut con)
        .unwrap();
    let m = map(cmd(&mut con, &["QA.GET", "faq", q, "WITHMETA"]).unwrap());
    assert_eq!(text(&m["served"]), "stale");
    assert!(wait_until(Duration::from_secs(5), || {
        let kind: String = redis::cmd("TYPE").arg(&key).query(&mut con).unwrap();
        kind == "string"
    }));
    assert_eq!(b.calls(), 1);
    let fresh = answer_for(q, MODEL, "");
    let m = map(cmd(&mut con, &["QA.GET", "faq", q, "WITHMETA"]).unwrap());
    assert_eq!(
        (text(&m["served"]), text(&m["answer"])),
        ("hit".to_string(), fresh)
    );
    assert_eq!(
        map(cmd(&mut con, &["QA.ENTRY", "faq", q]).unwrap())["format"],
        Value::Int(2)
    );

    // A hash that is not an entry (no `answer`) is a miss, and is replaced when stored.
    let _: i64 = redis::cmd("DEL").arg(&key).query(&mut con).unwrap();
    let _: () = redis::cmd("HSET")
        .arg(&key)
        .arg("x")
        .arg("y")
        .query(&mut con)
        .unwrap();
    assert_eq!(cmd(&mut con, &["QA.ENTRY", "faq", q]).unwrap(), Value::Nil);
    assert_eq!(
        qa_get(&mut con, &["faq", q]).unwrap(),
        answer_for(q, MODEL, "")
    );
    assert_eq!(b.calls(), 2);
    let kind: String = redis::cmd("TYPE").arg(&key).query(&mut con).unwrap();
    assert_eq!(kind, "string");
}

/// The key names of looked-up entries are kept in a small table of slots; many questions
/// sharing slots (more questions than slots, read in turns) still get their own answers.
#[test]
fn many_questions_sharing_key_name_slots_get_their_own_answers() {
    let s = Server::start(&[]);
    let mut con = s.conn();
    const N: usize = 700;
    let mut p = redis::pipe();
    for i in 0..N {
        p.cmd("QA.SET")
            .arg("faq")
            .arg(format!("question {i}"))
            .arg(format!("answer {i}"))
            .ignore();
    }
    p.query::<()>(&mut con).unwrap();
    for round in 0..3 {
        let mut p = redis::pipe();
        for i in (0..N).rev().step_by(round + 1) {
            p.cmd("QA.PEEK").arg("faq").arg(format!("question {i}"));
            p.cmd("QA.PEEK")
                .arg("faq")
                .arg(format!("question {}", (i * 7) % N));
            p.cmd("QA.PEEK").arg("faq").arg(format!("unknown {i}"));
        }
        let got: Vec<Option<String>> = p.query(&mut con).unwrap();
        for (j, i) in (0..N).rev().step_by(round + 1).enumerate() {
            assert_eq!(got[3 * j].as_deref(), Some(format!("answer {i}").as_str()));
            assert_eq!(
                got[3 * j + 1].as_deref(),
                Some(format!("answer {}", (i * 7) % N).as_str())
            );
            assert_eq!(got[3 * j + 2], None);
        }
    }
    // A deleted entry is a miss even while its key name is held.
    cmd(&mut con, &["QA.DEL", "faq", "question 3"]).unwrap();
    assert_eq!(
        cmd(&mut con, &["QA.PEEK", "faq", "question 3"]).unwrap(),
        Value::Nil
    );
}
