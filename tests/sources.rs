//! Answers that know their sources: `sources` from the webhook and `QA.SET`/`QA.GET ...
//! SOURCES`, `WITHMETA`'s `sources`, `QA.INVALIDATE <cache> SOURCE <id>...`, `QA.SOURCES`,
//! and `CONTEXT` (key and wire formats). See docs/sources.md.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::backend::{Backend, Reply};
use common::*;
use redis::Value;

fn cmd(con: &mut redis::Connection, args: &[&str]) -> redis::RedisResult<Value> {
    redis::cmd(args[0]).arg(&args[1..]).query(con)
}

fn text(v: &Value) -> String {
    match v {
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        Value::SimpleString(s) => s.clone(),
        Value::Int(n) => n.to_string(),
        Value::Okay => "OK".into(),
        other => panic!("not a string: {other:?}"),
    }
}

fn int(con: &mut redis::Connection, args: &[&str]) -> i64 {
    match cmd(con, args).unwrap() {
        Value::Int(n) => n,
        other => panic!("{args:?}: not an integer: {other:?}"),
    }
}

fn err(con: &mut redis::Connection, args: &[&str]) -> String {
    err_text(&cmd(con, args).unwrap_err())
}

/// A `WITHMETA` reply (RESP2 flat array) as name -> value.
fn meta(con: &mut redis::Connection, args: &[&str]) -> HashMap<String, Value> {
    match cmd(con, args).unwrap() {
        Value::Array(items) => items
            .chunks(2)
            .map(|p| (text(&p[0]), p[1].clone()))
            .collect(),
        other => panic!("not a map: {other:?}"),
    }
}

/// The `sources` of a `WITHMETA` reply (`None`: no such field).
fn sources_of(m: &HashMap<String, Value>) -> Option<Vec<String>> {
    match m.get("sources")? {
        Value::Array(ids) => Some(ids.iter().map(text).collect()),
        other => panic!("sources is not an array: {other:?}"),
    }
}

fn peek(con: &mut redis::Connection, cache: &str, q: &str) -> Option<String> {
    match cmd(con, &["QA.PEEK", cache, q]).unwrap() {
        Value::Nil => None,
        v => Some(text(&v)),
    }
}

/// A webhook reply citing `sources`.
fn cited(answer: &str, sources: &[&str]) -> Reply {
    Reply::Raw(serde_json::json!({"answer": answer, "sources": sources}).to_string())
}

fn webhook_server(b: &Backend, extra: &[&str]) -> Server {
    let url = b.hook_url();
    let mut args = vec!["--qa.backend-url", &url, "--qa.backend-format", "webhook"];
    args.extend_from_slice(extra);
    Server::start(&args)
}

/// The per-source sets in the selected database.
fn source_sets(con: &mut redis::Connection) -> Vec<String> {
    scan_keys(con, "qa:{*}:src:*")
}

/// Loads three answers into `faq` and one into `other`, all from the webhook:
/// q1 cites refunds.md and faq.md, q2 shipping.md, q3 nothing; other/q1 refunds.md.
fn load(b: &Backend, con: &mut redis::Connection) {
    b.push([
        cited("A1", &["refunds.md", "faq.md"]),
        cited("A2", &["shipping.md"]),
        Reply::Raw(r#"{"answer": "A3"}"#.into()),
        cited("O1", &["refunds.md"]),
    ]);
    let m = meta(con, &["QA.GET", "faq", "q1", "WITHMETA"]);
    assert_eq!(text(&m["served"]), "miss");
    assert_eq!(
        sources_of(&m),
        Some(vec!["refunds.md".into(), "faq.md".into()])
    );
    assert_eq!(qa_get(con, &["faq", "q2"]).unwrap(), "A2");
    let m = meta(con, &["QA.GET", "faq", "q3", "WITHMETA"]);
    assert_eq!(sources_of(&m), None, "no sources: no field");
    assert_eq!(m.len(), 4);
    assert_eq!(qa_get(con, &["other", "q1"]).unwrap(), "O1");
}

#[test]
fn sources_are_stored_replied_and_invalidated_by_one_or_several() {
    let b = Backend::start(Duration::ZERO);
    let s = webhook_server(&b, &[]);
    let mut con = s.conn();
    load(&b, &mut con);
    assert_eq!(b.calls(), 4);
    // A hit replies the stored sources.
    let m = meta(&mut con, &["QA.GET", "faq", "Q1?", "WITHMETA"]);
    assert_eq!(text(&m["served"]), "hit");
    assert_eq!(text(&m["answer"]), "A1");
    assert_eq!(
        sources_of(&m),
        Some(vec!["refunds.md".into(), "faq.md".into()])
    );
    // Who cites what.
    assert_eq!(int(&mut con, &["QA.SOURCES", "faq", "refunds.md"]), 1);
    assert_eq!(int(&mut con, &["QA.SOURCES", "faq", "faq.md"]), 1);
    assert_eq!(int(&mut con, &["QA.SOURCES", "faq", "nothing.md"]), 0);
    assert_eq!(int(&mut con, &["QA.SOURCES", "other", "refunds.md"]), 1);
    assert_eq!(
        int(&mut con, &["QA.SOURCES", "never-used", "refunds.md"]),
        0
    );
    let key = match cmd(&mut con, &["QA.KEY", "faq", "q1"]).unwrap() {
        Value::Array(kv) => text(&kv[3]),
        other => panic!("{other:?}"),
    };
    match cmd(&mut con, &["QA.SOURCES", "faq", "refunds.md", "WITHKEYS"]).unwrap() {
        Value::Array(kv) => assert_eq!(
            kv.iter().map(text).collect::<Vec<_>>(),
            vec![key.clone(), "q1".into()]
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(source_sets(&mut con).len(), 4);

    // One source: only the entry citing it goes, in this cache only.
    assert_eq!(
        int(&mut con, &["QA.INVALIDATE", "faq", "SOURCE", "refunds.md"]),
        1
    );
    assert_eq!(peek(&mut con, "faq", "q1"), None);
    assert_eq!(peek(&mut con, "faq", "q2").as_deref(), Some("A2"));
    assert_eq!(peek(&mut con, "faq", "q3").as_deref(), Some("A3"));
    assert_eq!(peek(&mut con, "other", "q1").as_deref(), Some("O1"));
    assert_eq!(int(&mut con, &["QA.SOURCES", "faq", "refunds.md"]), 0);
    assert_eq!(int(&mut con, &["QA.SOURCES", "faq", "faq.md"]), 0);
    assert_eq!(int(&mut con, &["QA.SOURCES", "other", "refunds.md"]), 1);
    // Again: nothing left to remove.
    assert_eq!(
        int(&mut con, &["QA.INVALIDATE", "faq", "SOURCE", "refunds.md"]),
        0
    );

    // Several sources at once; an id cited by nothing counts nothing.
    assert_eq!(
        int(
            &mut con,
            &[
                "QA.INVALIDATE",
                "faq",
                "SOURCE",
                "shipping.md",
                "nothing.md",
                "faq.md"
            ]
        ),
        1
    );
    assert_eq!(peek(&mut con, "faq", "q2"), None);
    assert_eq!(peek(&mut con, "faq", "q3").as_deref(), Some("A3"));

    // The next ask regenerates (one backend call), and cites again.
    b.push([cited("A1 v2", &["refunds.md"])]);
    assert_eq!(qa_get(&mut con, &["faq", "q1"]).unwrap(), "A1 v2");
    assert_eq!(b.calls(), 5);
    assert_eq!(int(&mut con, &["QA.SOURCES", "faq", "refunds.md"]), 1);
    // Whole-cache invalidation leaves no reachable entry behind a source.
    let _ = cmd(&mut con, &["QA.INVALIDATE", "faq"]).unwrap();
    assert_eq!(int(&mut con, &["QA.SOURCES", "faq", "refunds.md"]), 0);
    assert_eq!(
        int(&mut con, &["QA.INVALIDATE", "faq", "SOURCE", "refunds.md"]),
        0
    );
}

#[test]
fn qa_set_and_qa_get_take_sources_and_a_rewrite_moves_them() {
    let b = Backend::start(Duration::ZERO);
    let s = webhook_server(&b, &[]);
    let mut con = s.conn();
    let set = |con: &mut redis::Connection, args: &[&str]| {
        let mut all = vec!["QA.SET", "faq", "q", "the answer"];
        all.extend_from_slice(args);
        assert_eq!(text(&cmd(con, &all).unwrap()), "OK");
    };
    set(&mut con, &["SOURCES", "2", "x.md", "y.md", "TTL", "100"]);
    let m = meta(&mut con, &["QA.GET", "faq", "q", "WITHMETA"]);
    assert_eq!(sources_of(&m), Some(vec!["x.md".into(), "y.md".into()]));
    assert_eq!(int(&mut con, &["QA.SOURCES", "faq", "x.md"]), 1);
    // Rewritten citing y.md only: x.md no longer lists it.
    set(&mut con, &["SOURCES", "1", "y.md"]);
    assert_eq!(int(&mut con, &["QA.SOURCES", "faq", "x.md"]), 0);
    assert_eq!(int(&mut con, &["QA.SOURCES", "faq", "y.md"]), 1);
    assert_eq!(
        int(&mut con, &["QA.INVALIDATE", "faq", "SOURCE", "x.md"]),
        0
    );
    assert_eq!(peek(&mut con, "faq", "q").as_deref(), Some("the answer"));
    // Rewritten without sources: cited by nothing.
    set(&mut con, &[]);
    assert_eq!(int(&mut con, &["QA.SOURCES", "faq", "y.md"]), 0);
    assert_eq!(
        int(&mut con, &["QA.INVALIDATE", "faq", "SOURCE", "y.md"]),
        0
    );
    assert_eq!(source_sets(&mut con), Vec::<String>::new());

    // QA.GET ... SOURCES tags a miss's answer itself (over the backend's own).
    b.push([cited("B", &["backend.md"])]);
    let m = meta(
        &mut con,
        &[
            "QA.GET", "faq", "tagged", "SOURCES", "1", "app.md", "WITHMETA",
        ],
    );
    assert_eq!(sources_of(&m), Some(vec!["app.md".into()]));
    assert_eq!(int(&mut con, &["QA.SOURCES", "faq", "app.md"]), 1);
    assert_eq!(int(&mut con, &["QA.SOURCES", "faq", "backend.md"]), 0);
    // The entry's value shows its sources after the answer (docs/entry-format.md).
    let key = match cmd(&mut con, &["QA.KEY", "faq", "tagged"]).unwrap() {
        Value::Array(kv) => text(&kv[3]),
        other => panic!("{other:?}"),
    };
    let raw: Vec<u8> = redis::cmd("GET").arg(&key).query(&mut con).unwrap();
    let raw = String::from_utf8(raw).unwrap();
    assert!(
        raw.contains(" s=0 r=6\n") && raw.ends_with("\nB\napp.md"),
        "{raw}"
    );
    // QA.ENTRY lists them; an entry without sources has no such field.
    let e = meta(&mut con, &["QA.ENTRY", "faq", "tagged"]);
    assert_eq!(sources_of(&e), Some(vec!["app.md".into()]));
    assert_eq!(e.len(), 13);
    let _ = cmd(&mut con, &["QA.SET", "faq", "plain", "P"]).unwrap();
    let e = meta(&mut con, &["QA.ENTRY", "faq", "plain"]);
    assert_eq!((sources_of(&e), e.len()), (None, 12));
}

#[test]
fn limits_and_errors_are_exact() {
    let b = Backend::start(Duration::ZERO);
    let s = webhook_server(&b, &["--qa.max-context-bytes", "10"]);
    let mut con = s.conn();
    let long_id = "x".repeat(257);
    let count = "ERR SOURCES needs a count between 1 and 32, then that many ids";
    let id = "ERR a source id must be 1 to 256 bytes of UTF-8 without control characters";
    // (command, exact error)
    let rows: Vec<(Vec<&str>, &str)> = vec![
        (vec!["QA.SET", "faq", "q", "a", "SOURCES", "0"], count),
        (vec!["QA.SET", "faq", "q", "a", "SOURCES", "33", "a"], count),
        (vec!["QA.SET", "faq", "q", "a", "SOURCES", "2", "a"], count),
        (vec!["QA.SET", "faq", "q", "a", "SOURCES", "1", ""], id),
        (
            vec!["QA.SET", "faq", "q", "a", "SOURCES", "1", &long_id],
            id,
        ),
        (vec!["QA.GET", "faq", "q", "SOURCES", "1", "a\tb"], id),
        (
            vec!["QA.GET", "faq", "q", "CONTEXT", "eleven byte"],
            "ERR CONTEXT is longer than qa.max-context-bytes",
        ),
        (
            vec!["QA.PEEK", "faq", "q", "CONTEXT", "c"],
            "ERR unknown option (expected MODEL or SYSTEM)",
        ),
        (
            vec!["QA.INVALIDATE", "faq", "SOURCE"],
            "ERR SOURCE needs at least one source id",
        ),
        (vec!["QA.INVALIDATE", "faq", "SOURCE", "a", ""], id),
        (
            vec!["QA.INVALIDATE", "a{b", "SOURCE", "a"],
            "ERR cache name must not contain '{' or '}'",
        ),
        (
            vec!["QA.SOURCES", "faq", "a", "KEYS"],
            "ERR syntax error (expected QA.SOURCES <cache> <id> [WITHKEYS])",
        ),
        (
            vec!["QA.SOURCES", "faq"],
            "ERR wrong number of arguments for 'qa.sources' command",
        ),
        (vec!["QA.SOURCES", "faq", &long_id], id),
    ];
    for (args, want) in &rows {
        assert_eq!(err(&mut con, args), *want, "{args:?}");
    }
    // Not UTF-8.
    let e = redis::cmd("QA.GET")
        .arg("faq")
        .arg("q")
        .arg("CONTEXT")
        .arg(&b"\xff\xfe"[..])
        .query::<String>(&mut con)
        .unwrap_err();
    assert_eq!(err_text(&e), "ERR CONTEXT must be valid UTF-8");
    // A template must keep the context.
    let e = redis::cmd("CONFIG")
        .arg(&["SET", "qa.context-template", "{question} only"])
        .query::<()>(&mut con)
        .unwrap_err();
    assert!(
        err_text(&e).contains("must be valid UTF-8 of at most 65536 bytes containing {context}"),
        "{e}"
    );
    // Nothing was written or asked.
    assert_eq!(dbsize(&mut con), 0);
    assert_eq!(b.calls(), 0);

    // A webhook reply with badly shaped sources is malformed: replied as an error, not stored.
    let malformed = "ERR backend reply malformed: sources must be an array of at most 32 document ids of 1 to 256 bytes without control characters";
    for body in [
        r#"{"answer": "a", "sources": "a.md"}"#,
        r#"{"answer": "a", "sources": [1]}"#,
        r#"{"answer": "a", "sources": ["a\nb"]}"#,
    ] {
        b.push([Reply::Raw(body.into())]);
        assert_eq!(
            err(&mut con, &["QA.GET", "faq", "bad"]),
            malformed,
            "{body}"
        );
    }
    b.push([Reply::Raw(
        serde_json::json!({"answer": "a", "sources": (0..33).map(|i| format!("d{i}")).collect::<Vec<_>>()}).to_string(),
    )]);
    assert_eq!(err(&mut con, &["QA.GET", "faq", "bad"]), malformed);
    assert_eq!(peek(&mut con, "faq", "bad"), None);
    assert_eq!(source_sets(&mut con), Vec::<String>::new());
}

#[test]
fn invalidation_by_source_survives_a_reload_and_a_restart_from_the_aof() {
    let b = Backend::start(Duration::ZERO);
    let mut s = webhook_server(
        &b,
        &[
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--enable-debug-command",
            "yes",
        ],
    );
    let mut con = s.conn();
    load(&b, &mut con);
    // The bookkeeping is in the keyspace: a reload keeps it.
    let _: () = redis::cmd("DEBUG").arg("RELOAD").query(&mut con).unwrap();
    assert_eq!(int(&mut con, &["QA.SOURCES", "faq", "refunds.md"]), 1);
    assert_eq!(
        int(&mut con, &["QA.INVALIDATE", "faq", "SOURCE", "refunds.md"]),
        1
    );
    // The invalidation is in the AOF (as UNLINK/DEL): a restart keeps q1 gone and q2 cited.
    s.restart(&[]);
    let mut con = s.conn();
    assert!(wait_until(Duration::from_secs(5), || {
        let info: String = redis::cmd("INFO")
            .arg("persistence")
            .query(&mut con)
            .unwrap();
        info.contains("loading:0")
    }));
    assert_eq!(peek(&mut con, "faq", "q1"), None);
    assert_eq!(peek(&mut con, "faq", "q2").as_deref(), Some("A2"));
    assert_eq!(peek(&mut con, "other", "q1").as_deref(), Some("O1"));
    assert_eq!(int(&mut con, &["QA.SOURCES", "faq", "shipping.md"]), 1);
    assert_eq!(
        int(&mut con, &["QA.INVALIDATE", "faq", "SOURCE", "shipping.md"]),
        1
    );
    assert_eq!(peek(&mut con, "faq", "q2"), None);
    assert_eq!(b.calls(), 4, "nothing was asked again");
}

#[test]
fn a_replica_follows_invalidation_by_source() {
    let b = Backend::start(Duration::ZERO);
    let url = b.hook_url();
    let extra = ["--qa.backend-url", &url, "--qa.backend-format", "webhook"];
    let (primary, replica) = primary_and_replica(&extra, &extra);
    let mut p = primary.conn();
    let mut r = replica.conn();
    load(&b, &mut p);
    let synced = |p: &mut redis::Connection| {
        let n: i64 = redis::cmd("WAIT").arg(1).arg(5000).query(p).unwrap();
        assert_eq!(n, 1);
    };
    synced(&mut p);
    // QA.SOURCES reads: it works on the replica.
    assert_eq!(int(&mut r, &["QA.SOURCES", "faq", "refunds.md"]), 1);
    assert_eq!(peek(&mut r, "faq", "q1").as_deref(), Some("A1"));
    assert_eq!(
        int(
            &mut p,
            &[
                "QA.INVALIDATE",
                "faq",
                "SOURCE",
                "refunds.md",
                "shipping.md"
            ]
        ),
        2
    );
    synced(&mut p);
    assert_eq!(peek(&mut r, "faq", "q1"), None);
    assert_eq!(peek(&mut r, "faq", "q2"), None);
    assert_eq!(peek(&mut r, "faq", "q3").as_deref(), Some("A3"));
    assert_eq!(peek(&mut r, "other", "q1").as_deref(), Some("O1"));
    assert_eq!(int(&mut r, &["QA.SOURCES", "faq", "refunds.md"]), 0);
    // A write: refused on the replica.
    let e = err(&mut r, &["QA.INVALIDATE", "faq", "SOURCE", "x"]);
    assert!(e.starts_with("READONLY"), "{e}");
}

#[test]
fn expired_and_evicted_cited_entries_leave_no_bookkeeping_behind() {
    const N: usize = 2000;
    let b = Backend::start(Duration::ZERO);
    let s = webhook_server(&b, &[]);
    let mut con = s.conn();
    let mut pipe = redis::pipe();
    for i in 0..N {
        let q = format!("question {i}");
        let doc = format!("doc{}.md", i % 10);
        pipe.cmd("QA.SET")
            .arg(&[
                "faq",
                &q,
                "an answer",
                "TTL",
                "1",
                "SOURCES",
                "2",
                &doc,
                "all.md",
            ])
            .ignore();
    }
    let _: () = pipe.query(&mut con).unwrap();
    assert_eq!(int(&mut con, &["QA.SOURCES", "faq", "all.md"]), N as i64);
    assert_eq!(
        int(&mut con, &["QA.SOURCES", "faq", "doc3.md"]),
        N as i64 / 10
    );
    assert_eq!(source_sets(&mut con).len(), 11);
    // Every set expires with the entries it lists: nothing but the generation key is left.
    assert!(
        wait_until(Duration::from_secs(30), || entry_keys(&mut con).is_empty()),
        "left: {:?}",
        entry_keys(&mut con).len()
    );
    assert_eq!(int(&mut con, &["QA.SOURCES", "faq", "all.md"]), 0);

    // Deleted or evicted entries: the counts and the invalidation see only live ones, and
    // later additions prune the dead members.
    for i in 0..100 {
        let q = format!("kept {i}");
        let _ = cmd(
            &mut con,
            &["QA.SET", "faq", &q, "an answer", "SOURCES", "1", "live.md"],
        )
        .unwrap();
    }
    for i in 0..50 {
        let _ = cmd(&mut con, &["QA.DEL", "faq", &format!("kept {i}")]).unwrap();
    }
    assert_eq!(int(&mut con, &["QA.SOURCES", "faq", "live.md"]), 50);
    let set = source_sets(&mut con).pop().unwrap();
    let before: i64 = redis::cmd("SCARD").arg(&set).query(&mut con).unwrap();
    assert_eq!(before, 100);
    for i in 100..150 {
        let q = format!("kept {i}");
        let _ = cmd(
            &mut con,
            &["QA.SET", "faq", &q, "an answer", "SOURCES", "1", "live.md"],
        )
        .unwrap();
    }
    let after: i64 = redis::cmd("SCARD").arg(&set).query(&mut con).unwrap();
    assert!(after < 150, "50 additions pruned nothing: {after}");
    assert_eq!(int(&mut con, &["QA.SOURCES", "faq", "live.md"]), 100);
    assert_eq!(
        int(&mut con, &["QA.INVALIDATE", "faq", "SOURCE", "live.md"]),
        100
    );
    assert_eq!(source_sets(&mut con), Vec::<String>::new());
}

/// `QA.INVALIDATE ... SOURCE` writes the cache's key: a user who may only read it is refused.
#[test]
fn invalidating_by_source_is_a_write_to_the_cache_key() {
    let b = Backend::start(Duration::ZERO);
    let s = webhook_server(&b, &[]);
    let mut admin = s.conn();
    let _ = cmd(
        &mut admin,
        &["QA.SET", "faq", "q", "a", "SOURCES", "1", "d.md"],
    )
    .unwrap();
    for (user, keys) in [
        ("reader", "%R~faq"),
        ("writer", "~faq"),
        ("elsewhere", "~other"),
    ] {
        let _: () = redis::cmd("ACL")
            .arg(&[
                "SETUSER",
                user,
                "on",
                ">pw",
                "+qa.invalidate",
                "+qa.sources",
                keys,
            ])
            .query(&mut admin)
            .unwrap();
    }
    let login = |user: &str| {
        let mut c = s.conn();
        let _: () = redis::cmd("AUTH")
            .arg(user)
            .arg("pw")
            .query(&mut c)
            .unwrap();
        c
    };
    let mut reader = login("reader");
    assert_eq!(int(&mut reader, &["QA.SOURCES", "faq", "d.md"]), 1);
    let e = cmd(&mut reader, &["QA.INVALIDATE", "faq", "SOURCE", "d.md"]).unwrap_err();
    assert_eq!(e.code(), Some("NOPERM"), "{e}");
    let mut elsewhere = login("elsewhere");
    let e = cmd(&mut elsewhere, &["QA.INVALIDATE", "faq", "SOURCE", "d.md"]).unwrap_err();
    assert_eq!(e.code(), Some("NOPERM"), "{e}");
    assert_eq!(int(&mut admin, &["QA.SOURCES", "faq", "d.md"]), 1);
    let mut writer = login("writer");
    assert_eq!(
        int(&mut writer, &["QA.INVALIDATE", "faq", "SOURCE", "d.md"]),
        1
    );
}

/// `CONTEXT` is part of the key and reaches each wire format.
#[test]
fn context_changes_the_key_and_reaches_every_backend_format() {
    let b = Backend::start(Duration::ZERO);
    let s = webhook_server(&b, &[]);
    let mut con = s.conn();
    // Webhook: a `context` field; the same question with another context is another entry.
    for (i, ctx) in [
        "Refunds: 30 days.",
        "Refunds: 14 days.",
        "Refunds: 30 days.",
    ]
    .iter()
    .enumerate()
    {
        let _ = qa_get(&mut con, &["faq", "refund policy?", "CONTEXT", ctx]).unwrap();
        let calls = if i < 2 { i + 1 } else { 2 };
        assert_eq!(b.calls(), calls, "context {i}: same context, same entry");
    }
    let reqs = b.requests();
    assert_eq!(reqs[0].body["context"], "Refunds: 30 days.");
    assert_eq!(reqs[1].body["context"], "Refunds: 14 days.");
    // Without a context: a third entry, and no `context` field.
    let _ = qa_get(&mut con, &["faq", "refund policy?"]).unwrap();
    assert_eq!(b.calls(), 3);
    assert!(b.requests()[2].body.get("context").is_none());
    // QA.SET ... CONTEXT stores under the same key QA.GET ... CONTEXT reads.
    let _ = cmd(
        &mut con,
        &[
            "QA.SET",
            "faq",
            "shipping?",
            "Two days.",
            "CONTEXT",
            "ship.md text",
        ],
    )
    .unwrap();
    assert_eq!(
        qa_get(&mut con, &["faq", "shipping?", "CONTEXT", "ship.md text"]).unwrap(),
        "Two days."
    );
    assert_eq!(b.calls(), 3);

    // OpenAI and Anthropic: the user message from the template, which operators change.
    let url = b.url();
    for (format, template) in [
        ("openai", None),
        ("anthropic", Some("<doc>{context}</doc> {question}")),
    ] {
        let _: () = redis::cmd("CONFIG")
            .arg(&["SET", "qa.backend-format", format, "qa.backend-url", &url])
            .query(&mut con)
            .unwrap();
        if let Some(t) = template {
            let _: () = redis::cmd("CONFIG")
                .arg(&["SET", "qa.context-template", t])
                .query(&mut con)
                .unwrap();
        }
        b.clear();
        let q = format!("{format} question");
        let _ = qa_get(&mut con, &["faq", &q, "CONTEXT", "the docs"]).unwrap();
        let reqs = b.requests();
        let body = &reqs.last().unwrap().body;
        let messages = body["messages"].as_array().unwrap();
        let user = messages.last().unwrap();
        assert_eq!(user["role"], "user");
        let want = match template {
            None => format!(
                "Answer the question using only the context below.\n\nContext:\nthe docs\n\nQuestion: {q}"
            ),
            Some(_) => format!("<doc>the docs</doc> {q}"),
        };
        assert_eq!(user["content"], want.as_str(), "{format}");
    }
    let t: Vec<String> = redis::cmd("CONFIG")
        .arg(&["GET", "qa.context-template"])
        .query(&mut con)
        .unwrap();
    assert_eq!(t[1], "<doc>{context}</doc> {question}");
}

/// A per-source set evicted under memory pressure would leave answers that its source can no
/// longer invalidate: the cache gets a new generation instead (every answer a miss), so no
/// answer ever outlives an invalidation of what it cites.
#[test]
fn an_evicted_source_set_never_leaves_an_answer_that_cannot_be_invalidated() {
    const N: usize = 200;
    let b = Backend::start(Duration::ZERO);
    let s = webhook_server(&b, &[]);
    let mut con = s.conn();
    let base = info_num(&mut con, "memory", "used_memory");
    let answer = "x".repeat(2000);
    for i in 0..N {
        let q = format!("question {i}");
        let _ = cmd(
            &mut con,
            &["QA.SET", "faq", &q, &answer, "SOURCES", "1", "doc.md"],
        )
        .unwrap();
    }
    assert_eq!(int(&mut con, &["QA.SOURCES", "faq", "doc.md"]), N as i64);
    let limit = (base + 64 * 1024).to_string();
    let _: () = redis::cmd("CONFIG")
        .arg(&[
            "SET",
            "maxmemory-policy",
            "allkeys-random",
            "maxmemory",
            &limit,
        ])
        .query(&mut con)
        .unwrap();
    // Commands make Redis evict; random eviction of almost everything takes the set too.
    let evicted = wait_until(Duration::from_secs(10), || {
        let _: redis::RedisResult<()> = redis::cmd("SET").arg("junk").arg("1").query(&mut con);
        info_field(&mut con, "source_sets_evicted") >= 1
    });
    let _: () = redis::cmd("CONFIG")
        .arg(&["SET", "maxmemory", "0"])
        .query(&mut con)
        .unwrap();
    assert!(evicted, "the set was never evicted");
    // Once the eviction is handled, no answer is served that QA.SOURCES does not list.
    assert!(wait_until(Duration::from_secs(5), || {
        let listed = int(&mut con, &["QA.SOURCES", "faq", "doc.md"]);
        let served = (0..N)
            .filter(|i| peek(&mut con, "faq", &format!("question {i}")).is_some())
            .count() as i64;
        served == listed
    }));
    assert_eq!(peek(&mut con, "faq", "question 0"), None);
}

/// An answer asked for before its source was invalidated, arriving after, may be built from
/// the old document: it is replied but not stored.
#[test]
fn an_answer_in_flight_during_an_invalidation_of_its_source_is_not_stored() {
    let b = Backend::start(Duration::ZERO);
    let s = webhook_server(&b, &[]);
    let mut con = s.conn();
    // Warm the generation, then a slow answer citing doc.md.
    let _ = cmd(&mut con, &["QA.SET", "faq", "warm", "a"]).unwrap();
    b.set_delay(Duration::from_millis(800));
    b.push([cited("old", &["doc.md"]), cited("new", &["doc.md"])]);
    let mut asker = s.conn();
    let t = std::thread::spawn(move || qa_get(&mut asker, &["faq", "q"]).unwrap());
    assert!(wait_until(Duration::from_secs(5), || b.calls() == 1));
    // The backend is answering: the document changes now.
    assert_eq!(
        int(&mut con, &["QA.INVALIDATE", "faq", "SOURCE", "doc.md"]),
        0
    );
    assert_eq!(t.join().unwrap(), "old", "replied to who asked");
    assert_eq!(peek(&mut con, "faq", "q"), None, "but not stored");
    assert_eq!(int(&mut con, &["QA.SOURCES", "faq", "doc.md"]), 0);
    // Asked after the invalidation: stored as usual.
    b.set_delay(Duration::ZERO);
    assert_eq!(qa_get(&mut con, &["faq", "q"]).unwrap(), "new");
    assert_eq!(peek(&mut con, "faq", "q").as_deref(), Some("new"));
    assert_eq!(int(&mut con, &["QA.SOURCES", "faq", "doc.md"]), 1);
}
