//! QA.RESETSTATS: zeroes one cache's counters or all of them, for operators (an admin
//! command, not a write: it works on replicas and is not replicated).

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::backend::Backend;
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

/// `QA.STATS [<cache>]` as name -> value (as text).
/// The counters of `QA.STATS` (without `tracked`, which says whether a cache has figures of
/// its own and is no counter).
fn stats(con: &mut redis::Connection, cache: Option<&str>) -> HashMap<String, String> {
    let mut args = vec!["QA.STATS"];
    args.extend(cache);
    let mut m: HashMap<String, String> = match cmd(con, &args).unwrap() {
        Value::Map(pairs) => pairs.iter().map(|(k, v)| (text(k), text(v))).collect(),
        Value::Array(items) => items
            .chunks(2)
            .map(|p| (text(&p[0]), text(&p[1])))
            .collect(),
        other => panic!("not a map: {other:?}"),
    };
    // Not counters: whether the cache has figures of its own, and the semantic tier's audit
    // estimates and threshold (tests/verify.rs checks those).
    m.retain(|k, _| {
        k != "tracked"
            && k != "semantic_threshold"
            && !k.starts_with("audit")
            && !k.starts_with("verify")
    });
    m
}

/// What `QA.STATS <cache>` says for a cache with nothing counted.
fn zeros() -> HashMap<String, String> {
    [
        "hits",
        "misses",
        "coalesced",
        "stale",
        "backend_calls",
        "backend_errors",
        "tokens_in_spent",
        "tokens_out_spent",
        "tokens_in_saved",
        "tokens_out_saved",
        "backend_ms_saved",
        "semantic_hits",
    ]
    .iter()
    .map(|k| (k.to_string(), "0".to_string()))
    .chain([("money_saved".to_string(), "0.000000".to_string())])
    .collect()
}

#[test]
fn resets_one_cache_or_every_counter() {
    let b = Backend::start(Duration::ZERO);
    let url = b.url();
    let s = Server::start(&["--qa.backend-url", &url, "--qa.price-input-per-mtok", "1"]);
    let mut con = s.conn();
    qa_get(&mut con, &["faq", "What is our refund policy?"]).unwrap();
    qa_get(&mut con, &["faq", "what is our refund policy"]).unwrap();
    qa_get(&mut con, &["other", "Do you ship to Canada?"]).unwrap();
    // A miss's flight ends just after its reply: wait for the `inflight` gauge (checked as 0
    // below) rather than race it.
    assert!(wait_until(Duration::from_secs(5), || info_field(
        &mut con, "inflight"
    ) == 0));
    let faq = stats(&mut con, Some("faq"));
    assert_eq!((faq["hits"].as_str(), faq["misses"].as_str()), ("1", "1"));
    assert_ne!(faq["money_saved"], "0.000000");
    let other_before = stats(&mut con, Some("other"));
    assert_eq!(other_before["misses"], "1");

    // One cache: its figures only; the other cache's and the global ones stay.
    assert_eq!(
        text(&cmd(&mut con, &["QA.RESETSTATS", "faq"]).unwrap()),
        "OK"
    );
    assert_eq!(stats(&mut con, Some("faq")), zeros());
    assert_eq!(stats(&mut con, Some("other")), other_before);
    let all = stats(&mut con, None);
    assert_eq!((all["hits"].as_str(), all["misses"].as_str()), ("1", "2"));
    assert_eq!(info_field(&mut con, "hits"), 1);
    // A cache never seen: nothing to reset, still OK.
    assert_eq!(
        text(&cmd(&mut con, &["QA.RESETSTATS", "never"]).unwrap()),
        "OK"
    );
    assert_eq!(stats(&mut con, Some("never")), zeros());

    // Everything: every cache, the global figures, INFO qa and the latency window.
    assert_eq!(text(&cmd(&mut con, &["QA.RESETSTATS"]).unwrap()), "OK");
    assert_eq!(stats(&mut con, Some("other")), zeros());
    let all = stats(&mut con, None);
    for (k, v) in &all {
        let want = if k == "money_saved" { "0.000000" } else { "0" };
        assert_eq!(v, want, "{k}");
    }
    for field in [
        "hits",
        "misses",
        "backend_calls",
        "stored",
        "tokens_in_spent",
        "tokens_out_spent",
        "tokens_in_saved",
        "backend_ms_saved",
        "backend_latency_p50_ms",
        "backend_latency_p99_ms",
    ] {
        assert_eq!(info_field(&mut con, field), 0, "qa_{field}");
    }

    // Counting goes on from zero; the entries are untouched (a hit, no backend call).
    qa_get(&mut con, &["faq", "What is our refund policy?"]).unwrap();
    assert_eq!(b.calls(), 2);
    let faq = stats(&mut con, Some("faq"));
    assert_eq!((faq["hits"].as_str(), faq["misses"].as_str()), ("1", "0"));
    assert_eq!(info_field(&mut con, "hits"), 1);
    assert_eq!(info_field(&mut con, "misses"), 0);
}

#[test]
fn errors_are_exact() {
    let s = Server::start(&[]);
    let mut con = s.conn();
    for (args, want) in [
        (
            &["QA.RESETSTATS", "a", "b"][..],
            "ERR QA.RESETSTATS takes at most one cache name",
        ),
        (&["QA.RESETSTATS", ""], "ERR cache name is empty"),
        (
            &["QA.RESETSTATS", "a{b"],
            "ERR cache name must not contain '{' or '}'",
        ),
    ] {
        let e = cmd(&mut con, args).unwrap_err();
        assert_eq!(err_text(&e), want, "{args:?}");
    }
}

#[test]
fn an_admin_command_without_keys_in_command_docs() {
    let s = Server::start(&[]);
    let mut con = s.conn();
    // COMMAND INFO: arity -1, flags admin, no key positions.
    let info = cmd(&mut con, &["COMMAND", "INFO", "qa.resetstats"]).unwrap();
    let Value::Array(rows) = info else {
        panic!("{info:?}")
    };
    let Value::Array(row) = &rows[0] else {
        panic!("{rows:?}")
    };
    assert_eq!(text(&row[0]), "qa.resetstats");
    assert_eq!(row[1], Value::Int(-1));
    let Value::Array(flags) = &row[2] else {
        panic!("{row:?}")
    };
    let flags: Vec<String> = flags.iter().map(text).collect();
    assert!(flags.contains(&"admin".to_string()), "{flags:?}");
    assert!(!flags.contains(&"write".to_string()), "{flags:?}");
    assert_eq!(&row[3..6], &[Value::Int(0), Value::Int(0), Value::Int(0)]);
    // COMMAND DOCS: the summary and the optional cache argument.
    let docs = format!(
        "{:?}",
        cmd(&mut con, &["COMMAND", "DOCS", "qa.resetstats"]).unwrap()
    );
    assert!(
        docs.contains("Zeroes the counters of QA.STATS and INFO qa, global or for one cache"),
        "{docs}"
    );
    assert!(
        docs.contains("\"cache\"") && docs.contains("optional"),
        "{docs}"
    );
}

#[test]
fn replicas_reset_their_own_counters() {
    let b = Backend::start(Duration::ZERO);
    let url = b.url();
    let (primary, replica) = primary_and_replica(&["--qa.backend-url", &url], &[]);
    let mut p = primary.conn();
    let mut r = replica.conn();
    qa_get(&mut p, &["faq", "q"]).unwrap();
    let synced = wait_until(Duration::from_secs(10), || {
        cmd(&mut r, &["QA.PEEK", "faq", "q"]).is_ok_and(|v| v != Value::Nil)
    });
    assert!(synced, "the entry did not reach the replica");
    qa_get(&mut r, &["faq", "q"]).unwrap();
    assert_eq!(info_field(&mut r, "hits"), 1);
    // Not a write: no READONLY on the replica, and nothing replicated to or from it.
    assert_eq!(text(&cmd(&mut r, &["QA.RESETSTATS"]).unwrap()), "OK");
    assert_eq!(info_field(&mut r, "hits"), 0);
    assert_eq!(info_field(&mut p, "misses"), 1);
    assert_eq!(text(&cmd(&mut p, &["QA.RESETSTATS"]).unwrap()), "OK");
    assert_eq!(info_field(&mut p, "misses"), 0);
    assert_eq!(
        text(&cmd(&mut r, &["QA.PEEK", "faq", "q"]).unwrap()),
        text(&cmd(&mut p, &["QA.PEEK", "faq", "q"]).unwrap())
    );
}
