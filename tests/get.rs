//! QA.GET against a real redis-server and a real local HTTP backend: hits, misses,
//! normalization, TTLs, single-flight, responsiveness while misses wait.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::backend::{answer_for, Backend, Reply};
use common::*;

const MODEL: &str = "gpt-4o-mini";

fn server_for(b: &Backend, extra: &[&str]) -> Server {
    let url = b.url();
    let mut args = vec!["--qa.backend-url", url.as_str()];
    args.extend_from_slice(extra);
    Server::start(&args)
}

fn hgetall(con: &mut redis::Connection, key: &str) -> HashMap<String, String> {
    entry_fields(con, key)
}

fn only_key(con: &mut redis::Connection) -> String {
    let keys: Vec<String> = entry_keys(con);
    assert_eq!(keys.len(), 1, "{keys:?}");
    keys.into_iter().next().unwrap()
}

#[test]
fn module_loads_with_its_name_and_command_line_configs() {
    let s = Server::start(&["--qa.ttl", "60", "--qa.model", "llama3"]);
    let mut con = s.conn();
    let modules: Vec<HashMap<String, redis::Value>> =
        redis::cmd("MODULE").arg("LIST").query(&mut con).unwrap();
    assert!(modules
        .iter()
        .any(|m| m.get("name") == Some(&redis::Value::BulkString(b"qa".to_vec()))));
    let ttl: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("qa.ttl")
        .query(&mut con)
        .unwrap();
    assert_eq!(ttl, vec!["qa.ttl", "60"]);
    let model: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("qa.model")
        .query(&mut con)
        .unwrap();
    assert_eq!(model, vec!["qa.model", "llama3"]);
}

#[test]
fn miss_then_hit_calls_the_backend_once_and_stores_a_native_entry() {
    let b = Backend::start(Duration::from_millis(50));
    let s = server_for(&b, &["--qa.ttl", "600"]);
    let mut con = s.conn();
    let q = "What is our refund policy?";
    let want = answer_for(q, MODEL, "");

    assert_eq!(qa_get(&mut con, &["faq", q]).unwrap(), want);
    assert_eq!(b.calls(), 1);
    let key = only_key(&mut con);
    assert!(
        key.starts_with("qa:{faq}:") && key.len() == "qa:{faq}:".len() + 32,
        "{key}"
    );
    let entry = hgetall(&mut con, &key);
    assert_eq!(entry["answer"], want);
    assert_eq!(entry["question"], q);
    assert_eq!(entry["model"], MODEL);
    let created: i64 = entry["created"].parse().unwrap();
    let ttl: i64 = redis::cmd("TTL").arg(&key).query(&mut con).unwrap();
    assert!((590..=600).contains(&ttl), "ttl {ttl}");
    let pttl_before: i64 = redis::cmd("PEXPIRETIME").arg(&key).query(&mut con).unwrap();
    assert_eq!(
        pttl_before,
        created + 600_000,
        "expiry is absolute: created + ttl"
    );

    // Hits: same answer, no backend call, entry and expiry untouched.
    for _ in 0..3 {
        assert_eq!(qa_get(&mut con, &["faq", q]).unwrap(), want);
    }
    assert_eq!(b.calls(), 1);
    assert_eq!(hgetall(&mut con, &key), entry);
    let pttl_after: i64 = redis::cmd("PEXPIRETIME").arg(&key).query(&mut con).unwrap();
    assert_eq!(pttl_after, pttl_before);
    assert_eq!(
        (info_field(&mut con, "hits"), info_field(&mut con, "misses")),
        (3, 1)
    );
    assert_eq!(info_field(&mut con, "stored"), 1);
}

#[test]
fn normalized_variants_share_an_entry_and_meaningful_differences_do_not() {
    let b = Backend::start(Duration::ZERO);
    let s = server_for(&b, &[]);
    let mut con = s.conn();
    let first = qa_get(&mut con, &["faq", "What is our refund policy?"]).unwrap();
    for variant in [
        " what is our REFUND policy ",
        "What is our refund policy？",
        "what\tis our  refund policy!",
        "What is our refund policy",
    ] {
        assert_eq!(
            qa_get(&mut con, &["faq", variant]).unwrap(),
            first,
            "{variant:?}"
        );
    }
    assert_eq!(b.calls(), 1);

    // Different questions, caches, models and system prompts are different entries.
    let rows: &[&[&str]] = &[
        &["faq", "What is C++?"],
        &["faq", "What is C?"],
        &["faq", "Is 3.5 > 3.14?"],
        &["faq", "Is 35 > 314?"],
        &["other", "What is our refund policy?"],
        &["faq", "What is our refund policy?", "MODEL", "gpt-4o"],
        &[
            "faq",
            "What is our refund policy?",
            "SYSTEM",
            "Answer in French.",
        ],
    ];
    for (i, args) in rows.iter().enumerate() {
        let answer = qa_get(&mut con, args).unwrap();
        assert_eq!(b.calls(), 2 + i, "{args:?} must be a miss");
        let model = args
            .iter()
            .position(|a| *a == "MODEL")
            .map_or(MODEL, |p| args[p + 1]);
        let system = args
            .iter()
            .position(|a| *a == "SYSTEM")
            .map_or("", |p| args[p + 1]);
        assert_eq!(answer, answer_for(args[1], model, system));
    }
    // The backend got the question as asked, the model, and the system message.
    let last = b.requests().pop().unwrap();
    assert_eq!(last.path, "/v1/chat/completions");
    assert_eq!(
        last.body,
        serde_json::json!({"model": MODEL, "messages": [
            {"role": "system", "content": "Answer in French."},
            {"role": "user", "content": "What is our refund policy?"}]})
    );
}

#[test]
fn configured_model_and_system_prompt_are_part_of_the_key() {
    let b = Backend::start(Duration::ZERO);
    let s = server_for(&b, &[]);
    let mut con = s.conn();
    let a1 = qa_get(&mut con, &["faq", "hello"]).unwrap();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("qa.model")
        .arg("m2")
        .query(&mut con)
        .unwrap();
    let a2 = qa_get(&mut con, &["faq", "hello"]).unwrap();
    assert_eq!(a2, answer_for("hello", "m2", ""));
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("qa.system-prompt")
        .arg("Be brief.")
        .query(&mut con)
        .unwrap();
    let a3 = qa_get(&mut con, &["faq", "hello"]).unwrap();
    assert_eq!(a3, answer_for("hello", "m2", "Be brief."));
    assert_eq!(b.calls(), 3);
    // Back to the first settings: the first entry answers again, no call.
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("qa.model")
        .arg(MODEL)
        .arg("qa.system-prompt")
        .arg("")
        .query(&mut con)
        .unwrap();
    assert_eq!(qa_get(&mut con, &["faq", "hello"]).unwrap(), a1);
    // An explicit MODEL equal to the default is the same entry.
    assert_eq!(
        qa_get(&mut con, &["faq", "hello", "MODEL", MODEL]).unwrap(),
        a1
    );
    assert_eq!(b.calls(), 3);
}

#[test]
fn ttl_option_overrides_the_default_and_entries_expire() {
    let b = Backend::start(Duration::ZERO);
    let s = server_for(&b, &["--qa.ttl", "1000"]);
    let mut con = s.conn();
    qa_get(&mut con, &["faq", "short lived", "TTL", "1"]).unwrap();
    let key = only_key(&mut con);
    let ttl: i64 = redis::cmd("PTTL").arg(&key).query(&mut con).unwrap();
    assert!(ttl > 0 && ttl <= 1000, "pttl {ttl}");
    // Expired like any key, then asked again.
    assert!(wait_until(Duration::from_secs(5), || dbsize(&mut con) == 0));
    qa_get(&mut con, &["faq", "short lived"]).unwrap();
    assert_eq!(b.calls(), 2);
    let key = only_key(&mut con);
    let ttl: i64 = redis::cmd("TTL").arg(&key).query(&mut con).unwrap();
    assert!((990..=1000).contains(&ttl), "ttl {ttl}");
}

#[test]
fn refresh_asks_again_and_overwrites() {
    let b = Backend::start(Duration::ZERO);
    let s = server_for(&b, &[]);
    let mut con = s.conn();
    let q = "What changed?";
    assert_eq!(
        qa_get(&mut con, &["faq", q]).unwrap(),
        answer_for(q, MODEL, "")
    );
    b.set_reply(Reply::Raw(
        r#"{"choices":[{"message":{"content":"fresh answer"}}]}"#.into(),
    ));
    // Without REFRESH the cached answer is served.
    assert_eq!(
        qa_get(&mut con, &["faq", q]).unwrap(),
        answer_for(q, MODEL, "")
    );
    assert_eq!(b.calls(), 1);
    assert_eq!(
        qa_get(&mut con, &["faq", q, "REFRESH"]).unwrap(),
        "fresh answer"
    );
    assert_eq!(b.calls(), 2);
    assert_eq!(qa_get(&mut con, &["faq", q]).unwrap(), "fresh answer");
    assert_eq!(b.calls(), 2);
    assert_eq!(dbsize(&mut con), 1);
}

#[test]
fn concurrent_identical_misses_share_one_backend_call() {
    const CLIENTS: usize = 50;
    let b = Backend::start(Duration::from_millis(500));
    let s = server_for(&b, &[]);
    let q = "Why is the sky blue?";
    let barrier = Arc::new(Barrier::new(CLIENTS));
    let handles: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let mut con = s.conn();
            let barrier = barrier.clone();
            // Different spellings of one question coalesce too.
            let q = if i % 2 == 0 {
                q.to_string()
            } else {
                q.to_uppercase()
            };
            std::thread::spawn(move || {
                barrier.wait();
                qa_get(&mut con, &["faq", &q])
            })
        })
        .collect();
    let replies: Vec<String> = handles
        .into_iter()
        .map(|h| h.join().unwrap().unwrap())
        .collect();
    assert_eq!(b.calls(), 1);
    let first = &replies[0];
    assert!(replies.iter().all(|r| r == first));
    let mut con = s.conn();
    assert_eq!(
        info_field(&mut con, "misses") + info_field(&mut con, "hits"),
        CLIENTS as u64
    );
    assert_eq!(
        info_field(&mut con, "coalesced"),
        info_field(&mut con, "misses") - 1,
        "every miss but the leader's waited on the leader's call"
    );
    assert_eq!(info_field(&mut con, "backend_calls"), 1);
}

#[test]
fn redis_keeps_answering_while_misses_wait_on_a_slow_backend() {
    const MISSES: usize = 40;
    let delay = Duration::from_millis(1500);
    let b = Backend::start(delay);
    let s = server_for(&b, &["--qa.max-inflight", "8"]);
    let mut con = s.conn();
    let _: () = redis::cmd("SET")
        .arg("plain")
        .arg("value")
        .query(&mut con)
        .unwrap();
    let handles: Vec<_> = (0..MISSES)
        .map(|i| {
            let mut c = s.conn();
            std::thread::spawn(move || qa_get(&mut c, &["faq", &format!("slow question {i}")]))
        })
        .collect();
    assert!(wait_until(Duration::from_secs(5), || info_field(
        &mut con,
        "waiting_clients"
    ) == MISSES as u64));
    // Every client is blocked on the backend now; Redis itself is not.
    let started = Instant::now();
    for _ in 0..100 {
        let pong: String = redis::cmd("PING").query(&mut con).unwrap();
        assert_eq!(pong, "PONG");
        let v: String = redis::cmd("GET").arg("plain").query(&mut con).unwrap();
        assert_eq!(v, "value");
    }
    // Functional, not a benchmark: 200 round trips finish long before one backend answer.
    assert!(started.elapsed() < delay, "commands waited on the backend");
    assert_eq!(
        info_field(&mut con, "inflight"),
        8,
        "max-inflight bounds backend calls"
    );
    assert_eq!(info_field(&mut con, "queued"), MISSES as u64 - 8);
    for (i, h) in handles.into_iter().enumerate() {
        let answer = h.join().unwrap().unwrap();
        assert_eq!(answer, answer_for(&format!("slow question {i}"), MODEL, ""));
    }
    assert_eq!(b.calls(), MISSES);
}

#[test]
fn an_answer_is_stored_even_if_the_asker_disconnected() {
    let b = Backend::start(Duration::from_millis(300));
    let s = server_for(&b, &[]);
    {
        let mut c = s.conn();
        // Send without reading the reply, then drop the connection.
        let mut pipe = redis::pipe();
        pipe.cmd("QA.GET").arg("faq").arg("orphan question");
        let client = redis::Client::open(s.url().as_str()).unwrap();
        let mut raw = client.get_connection().unwrap();
        raw.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let _ = pipe.query::<Vec<String>>(&mut raw);
        drop(raw);
        let _: String = redis::cmd("PING").query(&mut c).unwrap();
    }
    let mut con = s.conn();
    assert!(wait_until(Duration::from_secs(5), || dbsize(&mut con) == 1));
    assert_eq!(
        qa_get(&mut con, &["faq", "orphan question"]).unwrap(),
        answer_for("orphan question", MODEL, "")
    );
    assert_eq!(b.calls(), 1);
}

#[test]
fn hits_are_served_inside_multi_and_scripts() {
    let b = Backend::start(Duration::ZERO);
    let s = server_for(&b, &[]);
    let mut con = s.conn();
    let want = qa_get(&mut con, &["faq", "cached"]).unwrap();
    let (r,): (String,) = redis::pipe()
        .atomic()
        .cmd("QA.GET")
        .arg("faq")
        .arg("cached")
        .query(&mut con)
        .unwrap();
    assert_eq!(r, want);
    let r: String = redis::cmd("EVAL")
        .arg("return redis.call('QA.GET', KEYS[1], ARGV[1])")
        .arg(1)
        .arg("faq")
        .arg("cached")
        .query(&mut con)
        .unwrap();
    assert_eq!(r, want);
    assert_eq!(b.calls(), 1);
}

/// A hit keeps its question's key so that the same bytes asked again skip normalization and
/// hashing (src/commands/recent.rs). The kept key must never outlive what it was derived
/// from: the default model and system prompt, the cache's generation, the cache, the
/// database. Each step asks twice first (the first hit keeps the key), then changes one
/// input and checks that the next ask goes where the new input says (or swaps databases, or
/// deletes the generation key by hand). A miss on a kept key still sends the backend the
/// normalized question.
#[test]
fn a_question_asked_again_is_looked_up_under_its_current_key() {
    let b = Backend::start(Duration::ZERO);
    let hook = b.hook_url();
    let s = Server::start(&["--qa.backend-url", &hook, "--qa.backend-format", "webhook"]);
    let mut con = s.conn();
    let q = "What is our refund policy?";
    let ask = |con: &mut redis::Connection| qa_get(con, &["faq", q]).unwrap();
    let twice = |con: &mut redis::Connection| {
        let a = ask(con);
        assert_eq!(ask(con), a);
        a
    };
    let a1 = twice(&mut con);
    assert_eq!(ask(&mut con), a1);
    assert_eq!(b.calls(), 1);
    let normalized_sent = |b: &Backend| {
        let r = b.requests();
        r.last().unwrap().body["normalized"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(normalized_sent(&b), "what is our refund policy");

    // Another default model: another entry, then back to the first without a call.
    config_set(&mut con, "qa.model", "m2");
    assert_eq!(twice(&mut con), answer_for(q, "m2", ""));
    assert_eq!(b.calls(), 2);
    config_set(&mut con, "qa.system-prompt", "Be brief.");
    assert_eq!(twice(&mut con), answer_for(q, "m2", "Be brief."));
    assert_eq!(b.calls(), 3);
    config_set(&mut con, "qa.model", MODEL);
    config_set(&mut con, "qa.system-prompt", "");
    assert_eq!(ask(&mut con), a1);
    assert_eq!(b.calls(), 3);

    // Invalidated: asked again, the backend is called (the same question, the same answer).
    let _: String = redis::cmd("QA.INVALIDATE")
        .arg("faq")
        .query(&mut con)
        .unwrap();
    assert_eq!(twice(&mut con), a1);
    assert_eq!(b.calls(), 4);

    // The entry deleted under a kept key: a miss, and the backend gets the normalized question.
    let deleted: i64 = redis::cmd("QA.DEL")
        .arg("faq")
        .arg(q)
        .query(&mut con)
        .unwrap();
    assert_eq!(deleted, 1);
    assert_eq!(ask(&mut con), a1);
    assert_eq!(b.calls(), 5);
    assert_eq!(normalized_sent(&b), "what is our refund policy");

    // Another cache, another database: misses of their own.
    assert_eq!(qa_get(&mut con, &["faq2", q]).unwrap(), a1);
    assert_eq!(b.calls(), 6);
    let _: () = redis::cmd("SELECT").arg(1).query(&mut con).unwrap();
    assert_eq!(twice(&mut con), a1);
    assert_eq!(b.calls(), 7);
    let _: () = redis::cmd("SELECT").arg(0).query(&mut con).unwrap();
    assert_eq!(twice(&mut con), a1);
    assert_eq!(b.calls(), 7);

    // Databases swapped: database 0 now holds database 1's cache, whose entry answers.
    let _: () = redis::cmd("SWAPDB").arg(0).arg(1).query(&mut con).unwrap();
    let _: () = redis::cmd("QA.SET")
        .arg("faq")
        .arg(q)
        .arg("swapped")
        .query(&mut con)
        .unwrap();
    let _: () = redis::cmd("SWAPDB").arg(0).arg(1).query(&mut con).unwrap();
    assert_eq!(twice(&mut con), a1);
    let _: () = redis::cmd("SWAPDB").arg(0).arg(1).query(&mut con).unwrap();
    assert_eq!(ask(&mut con), "swapped");
    assert_eq!(b.calls(), 7);

    // The generation key deleted by hand: the cache starts over.
    let _: i64 = redis::cmd("DEL")
        .arg("qa:{faq}:gen")
        .query(&mut con)
        .unwrap();
    assert_eq!(twice(&mut con), a1);
    assert_eq!(b.calls(), 8);

    // More questions than the table has slots, each hit twice: every one still gets its
    // own answer, and the first one is still a hit.
    for n in 0..300 {
        let qn = format!("Question number {n}?");
        let a = qa_get(&mut con, &["faq", &qn]).unwrap();
        assert_eq!(a, answer_for(&qn, MODEL, ""));
        assert_eq!(qa_get(&mut con, &["faq", &qn]).unwrap(), a);
    }
    assert_eq!(b.calls(), 308);
    for n in (0..300).step_by(7) {
        let qn = format!("Question number {n}?");
        assert_eq!(
            qa_get(&mut con, &["faq", &qn]).unwrap(),
            answer_for(&qn, MODEL, "")
        );
    }
    assert_eq!(ask(&mut con), a1);
    assert_eq!(b.calls(), 308);
}
