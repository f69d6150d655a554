//! QA.STREAM against a real redis-server and a local backend that streams (server-sent
//! events, one word a piece): pieces in order, one call for many askers, late joiners,
//! QA.GET and QA.STREAM on one flight, errors mid-stream, the stream's lifetime, replicas.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use common::backend::{answer_for, Backend, Reply};
use common::*;

const MODEL: &str = "gpt-4o-mini";

fn server_for(b: &Backend, extra: &[&str]) -> Server {
    let url = b.url();
    let mut args = vec!["--qa.backend-url", url.as_str()];
    args.extend_from_slice(extra);
    Server::start(&args)
}

/// `QA.STREAM` with arguments; its reply (RESP2: a flat array) as a map.
fn qa_stream(
    con: &mut redis::Connection,
    args: &[&str],
) -> redis::RedisResult<HashMap<String, String>> {
    let flat: Vec<String> = redis::cmd("QA.STREAM").arg(args).query(con)?;
    Ok(flat
        .chunks(2)
        .map(|kv| (kv[0].clone(), kv.get(1).cloned().unwrap_or_default()))
        .collect())
}

/// One stream entry: its id and its fields in order.
type Entry = (String, Vec<(String, String)>);

fn text(v: &redis::Value) -> String {
    match v {
        redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        redis::Value::SimpleString(s) => s.clone(),
        other => panic!("not a string: {other:?}"),
    }
}

fn entries_of(v: &redis::Value) -> Vec<Entry> {
    let redis::Value::Array(items) = v else {
        panic!("not an array: {v:?}")
    };
    items
        .iter()
        .map(|e| {
            let redis::Value::Array(pair) = e else {
                panic!("{e:?}")
            };
            let redis::Value::Array(fields) = &pair[1] else {
                panic!("{e:?}")
            };
            let fields = fields
                .chunks(2)
                .map(|kv| (text(&kv[0]), text(&kv[1])))
                .collect();
            (text(&pair[0]), fields)
        })
        .collect()
}

/// Reads `key` from `from` with `XREAD BLOCK` until an `end` or `error` entry (the way a
/// client reads it), within 20 s.
fn read_from(con: &mut redis::Connection, key: &str, from: &str) -> Vec<Entry> {
    let mut last = from.to_string();
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::time::Instant::now() < deadline {
        let v: redis::Value = redis::cmd("XREAD")
            .arg("BLOCK")
            .arg(500)
            .arg("STREAMS")
            .arg(key)
            .arg(&last)
            .query(con)
            .unwrap();
        let redis::Value::Array(streams) = v else {
            continue; // timed out (nil)
        };
        for s in &streams {
            let redis::Value::Array(kv) = s else { panic!() };
            for e in entries_of(&kv[1]) {
                last = e.0.clone();
                let done = e.1.iter().any(|(f, _)| f == "end" || f == "error");
                out.push(e);
                if done {
                    return out;
                }
            }
        }
    }
    panic!("the stream {key} did not end: {out:?}")
}

fn read_all(con: &mut redis::Connection, key: &str) -> Vec<Entry> {
    read_from(con, key, "0")
}

/// The concatenated `text` fields, and the last entry's fields.
fn answer_and_end(entries: &[Entry]) -> (String, HashMap<String, String>) {
    let mut answer = String::new();
    for (_, fields) in &entries[..entries.len() - 1] {
        assert_eq!(fields.len(), 1, "{fields:?}");
        assert_eq!(fields[0].0, "text", "{fields:?}");
        answer.push_str(&fields[0].1);
    }
    let end = entries.last().unwrap().1.iter().cloned().collect();
    (answer, end)
}

fn stored_entries(con: &mut redis::Connection) -> Vec<String> {
    entry_keys(con)
        .into_iter()
        .filter(|k| !k.ends_with(":stream") && !k.contains(":src:") && !k.contains(":inv:"))
        .collect()
}

#[test]
fn pieces_arrive_in_order_and_make_the_stored_answer() {
    let b = Backend::start(Duration::from_millis(20));
    b.set_pace(Duration::from_millis(30));
    let s = server_for(&b, &[]);
    let mut con = s.conn();
    let q = "What is our refund policy?";
    let r = qa_stream(&mut con, &["faq", q]).unwrap();
    assert_eq!(r["served"], "miss");
    let key = &r["stream"];
    // The entry's key with `:stream`: same hash tag, so the same cluster slot.
    assert!(
        key.starts_with("qa:{faq}:") && key.ends_with(":stream"),
        "{key}"
    );
    let entries = read_all(&mut con, key);
    let (answer, end) = answer_and_end(&entries);
    let want = answer_for(q, MODEL, "");
    assert_eq!(answer, want);
    // Word by word, 30 ms apart, batched every 50 ms: more than one piece.
    assert!(entries.len() > 2, "{entries:?}");
    assert_eq!(end["end"], "stop");
    assert_eq!(end["tokens_out"], (want.len() / 4 + 1).to_string());
    assert!(end.contains_key("tokens_in"));
    // The call asked for a stream, with usage.
    let req = &b.requests()[0];
    assert_eq!(req.body["stream"], true);
    assert_eq!(req.body["stream_options"]["include_usage"], true);
    // Stored as a QA.GET miss stores it: the next ask is a hit, without a call.
    let entry = stored_entries(&mut con);
    assert_eq!(entry.len(), 1);
    assert_eq!(format!("{}:stream", entry[0]), *key);
    assert_eq!(entry_fields(&mut con, &entry[0])["answer"], want);
    assert_eq!(qa_get(&mut con, &["faq", q]).unwrap(), want);
    let hit = qa_stream(&mut con, &["faq", "what is our refund policy"]).unwrap();
    assert_eq!(
        hit,
        HashMap::from([
            ("served".to_string(), "hit".to_string()),
            ("answer".to_string(), want.clone())
        ])
    );
    assert_eq!(b.calls(), 1);
}

#[test]
fn the_anthropic_and_webhook_streams_too() {
    let b = Backend::start(Duration::from_millis(10));
    b.set_pace(Duration::from_millis(5));
    for (format, url) in [("anthropic", b.url()), ("webhook", b.hook_url())] {
        let s = Server::start(&[
            "--qa.backend-url",
            &url,
            "--qa.backend-format",
            format,
            "--qa.api-key-file",
            "",
        ]);
        let mut con = s.conn();
        let q = format!("Streamed through {format}?");
        let r = qa_stream(&mut con, &["faq", &q]).unwrap();
        let (answer, end) = answer_and_end(&read_all(&mut con, &r["stream"]));
        assert_eq!(answer, answer_for(&q, MODEL, ""), "{format}");
        assert_eq!(end["end"], "stop", "{format}");
        assert_eq!(qa_get(&mut con, &["faq", &q]).unwrap(), answer, "{format}");
    }
    assert!(b.requests().iter().all(|r| r.body["stream"] == true));
}

#[test]
fn a_hundred_askers_share_one_call_and_read_the_same_stream() {
    let b = Backend::start(Duration::from_millis(500));
    b.set_pace(Duration::from_millis(10));
    let s = server_for(&b, &[]);
    let n = 100;
    let barrier = Arc::new(Barrier::new(n));
    let url = s.url();
    let handles: Vec<_> = (0..n)
        .map(|_| {
            let barrier = Arc::clone(&barrier);
            let url = url.clone();
            std::thread::spawn(move || {
                let mut con = redis::Client::open(url.as_str())
                    .unwrap()
                    .get_connection()
                    .unwrap();
                barrier.wait();
                let r = qa_stream(&mut con, &["faq", "How do refunds work?"]).unwrap();
                let entries = read_all(&mut con, &r["stream"]);
                (r["served"].clone(), entries)
            })
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(b.calls(), 1);
    let misses = results.iter().filter(|(s, _)| s == "miss").count();
    let coalesced = results.iter().filter(|(s, _)| s == "coalesced").count();
    assert_eq!((misses, coalesced), (1, n - 1));
    let first = &results[0].1;
    assert!(results.iter().all(|(_, e)| e == first));
    let (answer, _) = answer_and_end(first);
    assert_eq!(answer, answer_for("How do refunds work?", MODEL, ""));
}

#[test]
fn a_late_joiner_reads_everything_from_the_start() {
    let b = Backend::start(Duration::from_millis(10));
    b.set_pace(Duration::from_millis(60));
    let s = server_for(&b, &[]);
    let mut con = s.conn();
    let q = "Where is the late joiner?";
    let first = qa_stream(&mut con, &["faq", q]).unwrap();
    let key = first["stream"].clone();
    assert!(wait_until(Duration::from_secs(10), || {
        redis::cmd("XLEN").arg(&key).query::<u64>(&mut con).unwrap() >= 2
    }));
    let mut late = s.conn();
    let joined = qa_stream(&mut late, &["faq", q]).unwrap();
    assert_eq!(joined["served"], "coalesced");
    assert_eq!(joined["stream"], key);
    let from_late = read_all(&mut late, &key);
    let from_first = read_all(&mut con, &key);
    assert_eq!(from_late, from_first);
    assert_eq!(answer_and_end(&from_late).0, answer_for(q, MODEL, ""));
    // Resuming after a disconnect: from the last id read, the rest.
    let mid = &from_first[0].0;
    assert_eq!(read_from(&mut late, &key, mid), from_first[1..].to_vec());
    assert_eq!(b.calls(), 1);
}

#[test]
fn qa_get_joins_a_streaming_flight_and_gets_the_whole_answer() {
    let b = Backend::start(Duration::from_millis(100));
    b.set_pace(Duration::from_millis(30));
    let s = server_for(&b, &[]);
    let mut con = s.conn();
    let q = "Do streams and gets share?";
    let r = qa_stream(&mut con, &["faq", q]).unwrap();
    let mut get_con = s.conn();
    let meta: HashMap<String, redis::Value> = redis::cmd("QA.GET")
        .arg(&["faq", q, "WITHMETA"])
        .query(&mut get_con)
        .unwrap();
    let (answer, _) = answer_and_end(&read_all(&mut con, &r["stream"]));
    assert_eq!(answer, answer_for(q, MODEL, ""));
    assert_eq!(
        meta["answer"],
        redis::Value::BulkString(answer.clone().into_bytes())
    );
    assert_eq!(b.calls(), 1);
}

#[test]
fn qa_stream_joins_a_flight_that_qa_get_started() {
    let b = Backend::start(Duration::from_millis(400));
    let s = server_for(&b, &[]);
    let q = "Who started this flight?";
    let url = s.url();
    let getter = std::thread::spawn(move || {
        let mut con = redis::Client::open(url.as_str())
            .unwrap()
            .get_connection()
            .unwrap();
        qa_get(&mut con, &["faq", q]).unwrap()
    });
    assert!(wait_until(Duration::from_secs(10), || b.calls() == 1));
    let mut con = s.conn();
    let r = qa_stream(&mut con, &["faq", q]).unwrap();
    assert_eq!(r["served"], "coalesced");
    let (answer, end) = answer_and_end(&read_all(&mut con, &r["stream"]));
    let got = getter.join().unwrap();
    assert_eq!(answer, got);
    assert_eq!(answer, answer_for(q, MODEL, ""));
    assert_eq!(end["end"], "stop");
    // The call was made before any stream was asked for: a plain one.
    assert!(b.requests()[0].body.get("stream").is_none());
    assert_eq!(b.calls(), 1);
}

/// A failed call: the stream ends with the error `QA.GET` replies for the same flight,
/// nothing is stored, and the next ask calls again (into a stream that starts empty).
fn fails_then_retries(b: &Backend, s: &Server, q: &str, want_error: &str) {
    let mut con = s.conn();
    let stored = stored_entries(&mut con).len();
    let r = qa_stream(&mut con, &["faq", q]).unwrap();
    // A QA.GET joining the flight gets the same error.
    let mut get_con = s.conn();
    let got = qa_get(&mut get_con, &["faq", q]);
    let entries = read_all(&mut con, &r["stream"]);
    let (_, end) = answer_and_end(&entries);
    assert_eq!(
        end.get("error").map(String::as_str),
        Some(want_error),
        "{entries:?}"
    );
    if let Err(e) = got {
        assert_eq!(err_text(&e), want_error);
    } // else: the QA.GET came after the flight ended and started a call of its own.
    assert_eq!(stored_entries(&mut con).len(), stored);
    let calls = b.calls();
    b.set_reply(Reply::Answer);
    let again = qa_stream(&mut con, &["faq", q]).unwrap();
    assert_eq!(again["served"], "miss");
    let (answer, end) = answer_and_end(&read_all(&mut con, &again["stream"]));
    assert_eq!(answer, answer_for(q, MODEL, ""));
    assert_eq!(end["end"], "stop");
    assert_eq!(b.calls(), calls + 1);
    assert_eq!(stored_entries(&mut con).len(), stored + 1);
}

#[test]
fn errors_mid_stream_end_it_with_the_qa_get_error() {
    let b = Backend::start(Duration::from_millis(100));
    b.set_pace(Duration::from_millis(20));
    let s = server_for(
        &b,
        &[
            "--qa.backend-retries",
            "0",
            "--qa.max-answer-bytes",
            "1024",
            "--qa.timeout-ms",
            "1500",
        ],
    );
    // The connection drops after two pieces.
    b.set_reply(Reply::StreamDrop(2));
    fails_then_retries(
        &b,
        &s,
        "Will the backend drop?",
        "ERR backend unreachable: connection closed before the end of the stream",
    );
    // The backend reports an error inside the stream.
    b.set_reply(Reply::StreamError(3, "Overloaded".into()));
    fails_then_retries(
        &b,
        &s,
        "Will the backend fail?",
        "ERR backend reply malformed: error event: Overloaded",
    );
    // An HTTP error before any piece.
    b.set_reply(Reply::Status(500, "boom".into()));
    fails_then_retries(&b, &s, "A status?", "ERR backend returned HTTP 500: boom");
    // An answer over qa.max-answer-bytes (sent fast, to be over it within the timeout).
    b.set_pace(Duration::ZERO);
    b.set_reply(Reply::Says("many words ".repeat(120)));
    fails_then_retries(
        &b,
        &s,
        "A long one?",
        "ERR backend reply larger than 1024 bytes",
    );
    // No reply in time.
    b.set_reply(Reply::Hang);
    fails_then_retries(&b, &s, "Hanging?", "ERR backend timeout after 1500 ms");
    // Pieces, then silence: the call's time runs out mid-stream.
    b.set_pace(Duration::from_millis(20));
    b.set_reply(Reply::StreamStall(2));
    fails_then_retries(&b, &s, "Stalling?", "ERR backend timeout after 1500 ms");
}

#[test]
fn a_client_that_leaves_does_not_stop_the_flight_and_the_stream_expires() {
    let b = Backend::start(Duration::from_millis(50));
    b.set_pace(Duration::from_millis(20));
    let s = server_for(&b, &["--qa.stream-linger", "1"]);
    let q = "Will it expire?";
    let key = {
        let mut gone = s.conn();
        qa_stream(&mut gone, &["faq", q]).unwrap()["stream"].clone()
    }; // the asker disconnects at once
    let mut con = s.conn();
    let entries = read_all(&mut con, &key);
    assert_eq!(answer_and_end(&entries).0, answer_for(q, MODEL, ""));
    assert_eq!(stored_entries(&mut con).len(), 1);
    let pttl: i64 = redis::cmd("PTTL").arg(&key).query(&mut con).unwrap();
    assert!((1..=1000).contains(&pttl), "{pttl}");
    assert!(wait_until(Duration::from_secs(5), || {
        redis::cmd("EXISTS")
            .arg(&key)
            .query::<u64>(&mut con)
            .unwrap()
            == 0
    }));
    // The entry lives on (its own TTL).
    assert_eq!(
        qa_get(&mut con, &["faq", q]).unwrap(),
        answer_for(q, MODEL, "")
    );
}

#[test]
fn replicas_see_the_stream_and_the_entry() {
    let b = Backend::start(Duration::from_millis(50));
    b.set_pace(Duration::from_millis(20));
    let url = b.url();
    let (primary, replica) =
        primary_and_replica(&["--qa.backend-url", &url], &["--qa.backend-url", &url]);
    let mut p = primary.conn();
    let mut r = replica.conn();
    let q = "Replicated?";
    let key = qa_stream(&mut p, &["faq", q]).unwrap()["stream"].clone();
    let on_replica = read_all(&mut r, &key);
    let on_primary = read_all(&mut p, &key);
    assert_eq!(on_replica, on_primary);
    assert_eq!(answer_and_end(&on_replica).0, answer_for(q, MODEL, ""));
    assert!(wait_until(Duration::from_secs(5), || {
        stored_entries(&mut r).len() == 1
    }));
    // A hit on the replica; a miss there is refused.
    let hit = qa_stream(&mut r, &["faq", q]).unwrap();
    assert_eq!(hit["served"], "hit");
    let e = qa_stream(&mut r, &["faq", "Not asked yet?"]).unwrap_err();
    assert_eq!(
        err_text(&e),
        "ERR cache miss on a read-only replica: send QA.STREAM to the primary"
    );
    assert_eq!(b.calls(), 1);
}

#[test]
fn multi_serves_hits_only_and_options_are_checked() {
    let b = Backend::start(Duration::from_millis(10));
    let s = server_for(&b, &[]);
    let mut con = s.conn();
    qa_get(&mut con, &["faq", "cached"]).unwrap();
    let (hit, miss): (Vec<String>, redis::RedisResult<Vec<String>>) = {
        let hit: Vec<Vec<String>> = redis::pipe()
            .atomic()
            .cmd("QA.STREAM")
            .arg(&["faq", "cached"])
            .query(&mut con)
            .unwrap();
        let miss = redis::pipe()
            .atomic()
            .cmd("QA.STREAM")
            .arg(&["faq", "never asked"])
            .query::<Vec<Vec<String>>>(&mut con)
            .map(|mut v| v.remove(0));
        (hit.into_iter().next().unwrap(), miss)
    };
    assert_eq!(hit[..2], ["served".to_string(), "hit".to_string()]);
    assert_eq!(
        err_text(&miss.unwrap_err()),
        "ERR cache miss inside MULTI or a script: QA.STREAM cannot start a backend call there"
    );
    let e = qa_stream(&mut con, &["faq", "q", "WITHMETA"]).unwrap_err();
    assert_eq!(
        err_text(&e),
        "ERR unknown option (expected TTL, STALE, MODEL, SYSTEM, CONTEXT, SOURCES, REFRESH, SEMANTIC or EXACT)"
    );
    let e = qa_stream(&mut con, &["faq", "   "]).unwrap_err();
    assert_eq!(err_text(&e), "ERR question is empty");
    assert_eq!(b.calls(), 1);
}

/// Checks the output of examples/python/stream.py and examples/node/stream.js (the same
/// shape): a typed miss, a whole hit, then three readers sharing one call (`who`).
fn check_example_output(out: &str, who: &str) {
    let q = "What is retrieval-augmented generation?";
    let want = answer_for(q, MODEL, "");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines.len() >= 9, "{out}");
    assert_eq!(lines[0], format!("Q: {q}"));
    // The miss, typed piece by piece, then the hit, whole.
    assert_eq!(lines[1], format!("A: {want}"));
    let miss = lines[2].trim();
    assert!(miss.starts_with("(miss: first piece after "), "{miss}");
    let pieces: usize = miss
        .split(", ")
        .nth(1)
        .and_then(|p| p.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{miss}"));
    assert!(pieces > 1, "{miss}");
    assert_eq!(lines[3], format!("A: {want}"));
    let hit = lines[4].trim();
    assert!(hit.starts_with("(hit: first piece after "), "{hit}");
    assert!(hit.contains(", 1 piece(s), "), "{hit}");
    // Three readers at once: one call, the same pieces.
    let rq = "How do I reset my password?";
    assert_eq!(lines[5], format!("Q: {rq} (3 {who} at once)"));
    assert_eq!(lines[6].trim(), "served: coalesced, coalesced, miss");
    assert!(
        lines[7].trim().starts_with("identical pieces: yes ("),
        "{}",
        lines[7]
    );
    assert_eq!(
        lines[8].trim(),
        format!("answer: {}", answer_for(rq, MODEL, ""))
    );
}

/// examples/python/stream.py (redis-py, sync and asyncio). Skipped with `QA_SKIP_PYTHON=1`;
/// needs redis-py >= 5 (`pip install -r tests/python/requirements.txt`) otherwise.
#[test]
fn the_python_example_types_a_miss_and_shows_a_hit_at_once() {
    if std::env::var("QA_SKIP_PYTHON").as_deref() == Ok("1") {
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "python stream example: SKIPPED (QA_SKIP_PYTHON=1)"
        );
        return;
    }
    let b = Backend::start(Duration::from_millis(100));
    b.set_pace(Duration::from_millis(40));
    let s = server_for(&b, &[]);
    let python = std::env::var("QA_PYTHON").unwrap_or_else(|_| "python3".into());
    let mut cmd = std::process::Command::new(python);
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONUNBUFFERED", "1")
        .args(["examples/python/stream.py", "--port", &s.port.to_string()]);
    let run = run_with_deadline(cmd, Duration::from_secs(60));
    assert!(run.ok, "stream.py failed\n{}", run.shown());
    println!("{}", run.shown());
    check_example_output(&run.stdout, "asyncio readers");
    assert_eq!(b.calls(), 2);
}

/// examples/node/stream.js (node-redis). Skipped with `QA_SKIP_NODE=1`; otherwise needs
/// Node >= 18.19 and node-redis in examples/node (`npm ci` there, run here if missing).
#[test]
fn the_node_example_types_a_miss_and_shows_a_hit_at_once() {
    if std::env::var("QA_SKIP_NODE").as_deref() == Ok("1") {
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "node stream example: SKIPPED (QA_SKIP_NODE=1)"
        );
        return;
    }
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/node");
    if !dir.join("node_modules/redis/package.json").exists() {
        let npm = std::env::var("QA_NPM").unwrap_or_else(|_| "npm".into());
        let out = std::process::Command::new(npm)
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .output()
            .expect("run npm (or set QA_SKIP_NODE=1)");
        assert!(out.status.success(), "npm ci: {out:?}");
    }
    let b = Backend::start(Duration::from_millis(100));
    b.set_pace(Duration::from_millis(40));
    let s = server_for(&b, &[]);
    let node = std::env::var("QA_NODE").unwrap_or_else(|_| "node".into());
    let mut cmd = std::process::Command::new(node);
    cmd.current_dir(&dir)
        .args(["stream.js", "--port", &s.port.to_string()]);
    let run = run_with_deadline(cmd, Duration::from_secs(60));
    assert!(run.ok, "stream.js failed\n{}", run.shown());
    println!("{}", run.shown());
    check_example_output(&run.stdout, "clients");
    assert_eq!(b.calls(), 2);
}

#[test]
fn writes_wait_out_a_client_pause() {
    let b = Backend::start(Duration::from_millis(10));
    b.set_pace(Duration::from_millis(50));
    let s = server_for(&b, &[]);
    let mut con = s.conn();
    let q = "Paused mid-stream?";
    let key = qa_stream(&mut con, &["faq", q]).unwrap()["stream"].clone();
    assert!(wait_until(Duration::from_secs(10), || {
        redis::cmd("XLEN").arg(&key).query::<u64>(&mut con).unwrap() >= 1
    }));
    // Redis 7.0 aborts if a module propagates a write while clients are paused: the pieces
    // and the end must wait, then arrive whole.
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(400)
        .arg("WRITE")
        .query(&mut con)
        .unwrap();
    let entries = read_all(&mut con, &key);
    let (answer, end) = answer_and_end(&entries);
    assert_eq!(answer, answer_for(q, MODEL, ""));
    assert_eq!(end["end"], "stop");
    assert_eq!(qa_get(&mut con, &["faq", q]).unwrap(), answer);
    assert_eq!(b.calls(), 1);
}

/// In a cluster, `QA.STREAM` routes by the cache name and the `XREAD` by the stream key,
/// which hash to the same slot: redis-py's `RedisCluster` reads the stream from the node that
/// made it. Skipped with `QA_SKIP_PYTHON=1` (the routing part).
#[test]
fn cluster_clients_route_the_command_and_the_read_to_one_node() {
    let b = Backend::start(Duration::from_millis(20));
    b.set_pace(Duration::from_millis(10));
    let nodes = start_cluster(&b.url());
    let mut con = nodes[0].conn();
    for cache in ["faq", "support", "sales"] {
        let slot: i64 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(cache)
            .query(&mut con)
            .unwrap();
        let stream_slot: i64 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(format!(
                "qa:{{{cache}}}:00112233445566778899aabbccddeeff:stream"
            ))
            .query(&mut con)
            .unwrap();
        assert_eq!(slot, stream_slot);
    }
    if std::env::var("QA_SKIP_PYTHON").as_deref() == Ok("1") {
        return;
    }
    const PY: &str = r#"
import sys
from redis.cluster import RedisCluster
rc = RedisCluster(host="127.0.0.1", port=int(sys.argv[1]), decode_responses=True)
for cache in ["faq", "support", "sales"]:
    q = f"Routed for {cache}?"
    reply = rc.execute_command("QA.STREAM", cache, q)
    reply = reply if isinstance(reply, dict) else dict(zip(reply[0::2], reply[1::2]))
    key, last, text = reply["stream"], "0", ""
    done = False
    while not done:
        for _, entries in rc.xread({key: last}, block=5000) or []:
            for last, f in entries:
                if "error" in f:
                    raise SystemExit(f["error"])
                done = "end" in f
                text += f.get("text", "")
    print(cache, rc.get_node_from_key(cache).port, rc.get_node_from_key(key).port, text)
"#;
    let python = std::env::var("QA_PYTHON").unwrap_or_else(|_| "python3".into());
    let mut cmd = std::process::Command::new(python);
    cmd.args(["-c", PY, &nodes[0].port.to_string()]);
    let run = run_with_deadline(cmd, Duration::from_secs(60));
    assert!(run.ok, "{}", run.shown());
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", run.shown());
    for line in lines {
        let mut parts = line.splitn(4, ' ');
        let (cache, node, stream_node, text) = (
            parts.next().unwrap(),
            parts.next().unwrap(),
            parts.next().unwrap(),
            parts.next().unwrap(),
        );
        assert_eq!(node, stream_node, "{line}");
        assert_eq!(text, answer_for(&format!("Routed for {cache}?"), MODEL, ""));
    }
    assert_eq!(b.calls(), 3);
}

#[test]
fn a_stream_past_maxmemory_ends_with_the_oom_error() {
    let b = Backend::start(Duration::from_millis(10));
    b.set_pace(Duration::from_millis(50));
    let s = server_for(&b, &["--maxmemory-policy", "noeviction"]);
    let mut con = s.conn();
    let q = "Out of memory mid-stream?";
    let key = qa_stream(&mut con, &["faq", q]).unwrap()["stream"].clone();
    assert!(wait_until(Duration::from_secs(10), || {
        redis::cmd("XLEN").arg(&key).query::<u64>(&mut con).unwrap() >= 1
    }));
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg(1)
        .query(&mut con)
        .unwrap();
    let entries = read_all(&mut con, &key);
    let (_, end) = answer_and_end(&entries);
    assert_eq!(
        end.get("error").map(String::as_str),
        Some("OOM command not allowed when used memory > 'maxmemory'"),
        "{entries:?}"
    );
    assert!(stored_entries(&mut con).is_empty());
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg(0)
        .query(&mut con)
        .unwrap();
}

/// Hostile arguments: every reply is an error or a two-field map, and the server lives.
#[test]
fn hostile_arguments_get_replies_not_crashes() {
    let b = Backend::start(Duration::ZERO);
    let s = server_for(&b, &[]);
    let mut con = s.conn();
    let words: [&[u8]; 14] = [
        b"faq",
        b"",
        b"{x}",
        b"TTL",
        b"STALE",
        b"MODEL",
        b"SYSTEM",
        b"REFRESH",
        b"SEMANTIC",
        b"EXACT",
        b"-1",
        b"99999999999999999999",
        b"\xff\xfe\x00",
        b"what is it",
    ];
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..500 {
        let mut cmd = redis::cmd("QA.STREAM");
        for _ in 0..(seed % 7 + 1) {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            cmd.arg(words[(seed % words.len() as u64) as usize]);
        }
        match cmd.query::<redis::Value>(&mut con) {
            Ok(redis::Value::Array(v)) => assert_eq!(v.len(), 4, "{v:?}"),
            Ok(other) => panic!("{other:?}"),
            Err(e) => assert!(
                e.code().is_some_and(|c| c == "ERR" || c == "WRONGTYPE"),
                "{e:?}"
            ),
        }
    }
    let pong: String = redis::cmd("PING").query(&mut con).unwrap();
    assert_eq!(pong, "PONG");
}

/// `CONTEXT` and `SOURCES` on `QA.STREAM`: the context reaches the streamed request and is part
/// of the key (another context is another entry); the app's sources are stored with the
/// streamed answer, so `QA.INVALIDATE ... SOURCE` reaches it.
#[test]
fn context_and_sources_reach_a_streamed_answer() {
    let b = Backend::start(Duration::ZERO);
    let s = server_for(&b, &[]);
    let mut con = s.conn();
    let q = "What is our refund policy?";
    let r = qa_stream(
        &mut con,
        &[
            "faq",
            q,
            "CONTEXT",
            "Refunds: 30 days.",
            "SOURCES",
            "1",
            "refunds.md",
        ],
    )
    .unwrap();
    assert_eq!(r["served"], "miss");
    let (answer, end) = answer_and_end(&read_all(&mut con, &r["stream"]));
    assert_eq!(end["end"], "stop");
    let req = &b.requests()[0];
    assert_eq!(req.body["stream"], true);
    let sent = req.body["messages"].to_string();
    assert!(sent.contains("Refunds: 30 days."), "{sent}");
    // Stored, citing the app's source: the same context is a hit, another one a miss.
    assert!(wait_until(Duration::from_secs(5), || stored_entries(
        &mut con
    )
    .len()
        == 1));
    let hit = qa_stream(&mut con, &["faq", q, "CONTEXT", "Refunds: 30 days."]).unwrap();
    assert_eq!(hit["served"], "hit");
    assert_eq!(hit["answer"], answer);
    let cited: i64 = redis::cmd("QA.SOURCES")
        .arg(&["faq", "refunds.md"])
        .query(&mut con)
        .unwrap();
    assert_eq!(cited, 1);
    let gone: i64 = redis::cmd("QA.INVALIDATE")
        .arg(&["faq", "SOURCE", "refunds.md"])
        .query(&mut con)
        .unwrap();
    assert_eq!(gone, 1);
    let again = qa_stream(&mut con, &["faq", q, "CONTEXT", "Refunds: 30 days."]).unwrap();
    assert_eq!(again["served"], "miss");
    let other = qa_stream(&mut con, &["faq", q, "CONTEXT", "Refunds: 60 days."]).unwrap();
    assert_eq!(other["served"], "miss");
    assert_ne!(other["stream"], again["stream"]);
}
