//! The semantic tier against a real server: paraphrases served from another question's
//! entry, guards refusing look-alikes, falling back to the exact path when embeddings fail,
//! and the index following the keyspace (delete, expiry, invalidation, flush, restart,
//! replication). The test backend's embeddings are a deterministic bag of words (see
//! `embedding_for`): two questions sharing n of m words have a cosine of about n/m, and
//! "your" reads as "our".

mod common;

use std::time::Duration;

use common::backend::{answer_for, Backend, Reply};
use common::*;

/// A value of a WITHMETA reply (RESP2 flat array of field, value).
fn meta(con: &mut redis::Connection, args: &[&str]) -> Vec<(String, String)> {
    let flat: Vec<redis::Value> = redis::cmd("QA.GET")
        .arg(args)
        .arg("WITHMETA")
        .query(con)
        .expect("QA.GET WITHMETA");
    let text = |v: &redis::Value| match v {
        redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        redis::Value::Int(n) => n.to_string(),
        redis::Value::SimpleString(s) => s.clone(),
        other => format!("{other:?}"),
    };
    flat.chunks(2).map(|p| (text(&p[0]), text(&p[1]))).collect()
}

fn field<'a>(m: &'a [(String, String)], name: &str) -> &'a str {
    m.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no {name} in {m:?}"))
}

fn set(con: &mut redis::Connection, args: &[&str]) {
    let ok: String = redis::cmd("QA.SET").arg(args).query(con).expect("QA.SET");
    assert_eq!(ok, "OK");
}

/// A server with the semantic tier on, chat and embeddings from `b`.
fn semantic_server(b: &Backend, extra: &[&str]) -> Server {
    let url = b.url();
    let mut args = vec!["--qa.backend-url", &url, "--qa.semantic", "yes"];
    args.extend_from_slice(extra);
    Server::start(&args)
}

fn chat_calls(b: &Backend) -> usize {
    b.requests()
        .iter()
        .filter(|r| r.path.ends_with("/chat/completions"))
        .count()
}

const Q: &str = "What is our refund policy?";
const PARAPHRASE: &str = "what is YOUR refund policy";
const A: &str = "Refunds within 30 days.";

#[test]
fn a_paraphrase_is_served_from_the_stored_entry_with_its_similarity() {
    let b = Backend::start(Duration::ZERO);
    let s = semantic_server(&b, &[]);
    let mut con = s.conn();
    set(&mut con, &["faq", Q, A]);
    // The entry carries its embedding.
    let key: Vec<String> = redis::cmd("QA.KEY")
        .arg(&["faq", Q])
        .query(&mut con)
        .unwrap();
    let fields = entry_fields(&mut con, &key[3]);
    assert!(fields["sem"].starts_with("qav1"), "{fields:?}");
    assert_eq!(fields["answer"], A);

    let m = meta(&mut con, &["faq", PARAPHRASE]);
    assert_eq!(field(&m, "answer"), A);
    assert_eq!(field(&m, "served"), "semantic");
    assert_eq!(field(&m, "matched"), Q);
    let sim: f32 = field(&m, "similarity").parse().unwrap();
    assert!(sim > 0.99, "{sim}");
    assert!(field(&m, "ttl_ms").parse::<i64>().unwrap() > 0);
    // Without WITHMETA: just the answer. No chat call was ever made.
    assert_eq!(
        qa_get(&mut con, &["faq", "What is your refund policy ?"]).unwrap(),
        A
    );
    assert_eq!(chat_calls(&b), 0);
    assert_eq!(info_field(&mut con, "semantic_hits"), 2);
    assert_eq!(info_field(&mut con, "embed_calls"), 3);
    assert!(info_field(&mut con, "embed_tokens") > 0);
    assert_eq!(info_field(&mut con, "semantic_index_entries"), 1);
    let stats: Vec<redis::Value> = redis::cmd("QA.STATS").arg("faq").query(&mut con).unwrap();
    let stats = format!("{stats:?}");
    assert!(stats.contains("semantic_hits"), "{stats}");
    // The paraphrase itself was not stored: only the original entry exists.
    assert_eq!(scan_keys(&mut con, "qa:{faq}:*").len(), 1);
}

#[test]
fn off_by_default_and_exact_turns_it_off_per_call() {
    let b = Backend::start(Duration::ZERO);
    let url = b.url();
    let s = Server::start(&["--qa.backend-url", &url]);
    let mut con = s.conn();
    set(&mut con, &["faq", Q, A]);
    assert_eq!(
        qa_get(&mut con, &["faq", PARAPHRASE]).unwrap(),
        answer_for(PARAPHRASE, "gpt-4o-mini", "")
    );
    assert_eq!(info_field(&mut con, "embed_calls"), 0);
    // Per call: SEMANTIC on a server where it is off.
    set(&mut con, &["faq2", Q, A, "SEMANTIC"]);
    assert_eq!(
        qa_get(&mut con, &["faq2", PARAPHRASE, "SEMANTIC"]).unwrap(),
        A
    );
    // And EXACT where it is on.
    redis::cmd("CONFIG")
        .arg(&["SET", "qa.semantic", "yes"])
        .query::<()>(&mut con)
        .unwrap();
    assert_eq!(
        qa_get(&mut con, &["faq2", "Is your refund policy fair?", "EXACT"]).unwrap(),
        answer_for("Is your refund policy fair?", "gpt-4o-mini", "")
    );
    let e = qa_get(&mut con, &["faq2", Q, "SEMANTIC", "EXACT"]).unwrap_err();
    assert_eq!(
        err_text(&e),
        "ERR SEMANTIC and EXACT are mutually exclusive"
    );
}

#[test]
fn guards_refuse_look_alikes_that_clear_the_threshold() {
    let b = Backend::start(Duration::ZERO);
    // A low threshold: these pairs share most of their words.
    let s = semantic_server(&b, &["--qa.semantic-threshold", "0.6"]);
    let mut con = s.conn();
    // (stored, asked, guard that refuses)
    let rows = [
        (
            "How do I enable two factor authentication on my account?",
            "How do I disable two factor authentication on my account?",
            "antonym",
        ),
        (
            "Can I get a refund within 14 days of purchase?",
            "Can I get a refund within 30 days of purchase?",
            "number",
        ),
        (
            "Is the premium plan available for teams?",
            "Is the premium plan not available for teams?",
            "negation",
        ),
    ];
    for (stored, asked, guard) in rows {
        set(&mut con, &["g", stored, "STORED ANSWER"]);
        let before = info_field(&mut con, &format!("guard_refused_{guard}"));
        let m = meta(&mut con, &["g", asked]);
        assert_eq!(field(&m, "served"), "miss", "{asked}");
        assert_eq!(field(&m, "answer"), answer_for(asked, "gpt-4o-mini", ""));
        assert_eq!(
            info_field(&mut con, &format!("guard_refused_{guard}")),
            before + 1,
            "{asked}"
        );
    }
    // With the guards off (only for measuring), the same look-alike would be served.
    redis::cmd("CONFIG")
        .arg(&["SET", "qa.semantic-guards", "no"])
        .query::<()>(&mut con)
        .unwrap();
    let asked = "Can I get a refund within 60 days of purchase?";
    let m = meta(&mut con, &["g", asked]);
    assert_eq!(field(&m, "served"), "semantic");
    assert_ne!(field(&m, "answer"), answer_for(asked, "gpt-4o-mini", ""));
}

#[test]
fn another_model_or_system_prompt_never_matches() {
    let b = Backend::start(Duration::ZERO);
    let s = semantic_server(&b, &[]);
    let mut con = s.conn();
    set(&mut con, &["faq", Q, A, "MODEL", "m1"]);
    set(&mut con, &["faq", Q, A, "SYSTEM", "Be brief."]);
    assert_eq!(
        qa_get(&mut con, &["faq", PARAPHRASE, "MODEL", "m2"]).unwrap(),
        answer_for(PARAPHRASE, "m2", "")
    );
    assert_eq!(
        qa_get(
            &mut con,
            &["faq", "what is your refund policy!", "SYSTEM", "Be long."]
        )
        .unwrap(),
        answer_for("what is your refund policy!", "gpt-4o-mini", "Be long.")
    );
    assert_eq!(
        qa_get(&mut con, &["faq", PARAPHRASE, "MODEL", "m1"]).unwrap(),
        A
    );
    assert_eq!(info_field(&mut con, "semantic_hits"), 1);
}

#[test]
fn when_embeddings_fail_the_request_takes_the_exact_path() {
    let b = Backend::start(Duration::ZERO);
    let embed = Backend::start(Duration::ZERO);
    embed.set_reply(Reply::Status(500, "embedder down".into()));
    let eurl = embed.url();
    let s = semantic_server(&b, &["--qa.embed-url", &eurl]);
    let mut con = s.conn();
    // QA.SET still stores (without a vector); QA.GET still answers, from the backend.
    set(&mut con, &["faq", Q, A]);
    assert_eq!(qa_get(&mut con, &["faq", Q]).unwrap(), A);
    assert_eq!(
        qa_get(&mut con, &["faq", PARAPHRASE]).unwrap(),
        answer_for(PARAPHRASE, "gpt-4o-mini", "")
    );
    assert!(info_field(&mut con, "embed_errors") >= 2);
    assert_eq!(info_field(&mut con, "semantic_index_entries"), 0);
    // An embedder that hangs costs at most half the client's time, then the backend answers.
    embed.set_reply(Reply::Hang);
    redis::cmd("CONFIG")
        .arg(&["SET", "qa.timeout-ms", "2000"])
        .query::<()>(&mut con)
        .unwrap();
    let q = "How long does shipping take?";
    assert_eq!(
        qa_get(&mut con, &["faq", q]).unwrap(),
        answer_for(q, "gpt-4o-mini", "")
    );
    // Embeddings back: new entries get vectors again.
    embed.set_reply(Reply::Answer);
    set(&mut con, &["faq", "Do you ship to Canada?", "Yes."]);
    assert_eq!(info_field(&mut con, "semantic_index_entries"), 1);
    assert_eq!(
        qa_get(&mut con, &["faq", "do YOU ship to canada"]).unwrap(),
        "Yes."
    );
}

#[test]
fn misses_store_their_vector_and_later_paraphrases_hit() {
    let b = Backend::start(Duration::ZERO);
    let s = semantic_server(&b, &[]);
    let mut con = s.conn();
    let first = qa_get(&mut con, &["faq", Q]).unwrap();
    assert_eq!(first, answer_for(Q, "gpt-4o-mini", ""));
    assert!(wait_until(Duration::from_secs(5), || info_field(
        &mut con,
        "semantic_index_entries"
    ) == 1));
    assert_eq!(qa_get(&mut con, &["faq", PARAPHRASE]).unwrap(), first);
    assert_eq!(chat_calls(&b), 1);
    // REFRESH asks the backend again for the exact question, never a paraphrase's entry.
    let m = meta(&mut con, &["faq", PARAPHRASE, "REFRESH"]);
    assert_eq!(field(&m, "served"), "refresh");
    assert_eq!(chat_calls(&b), 2);
}

/// The index follows the keyspace: a deleted, expired, invalidated or flushed entry is
/// never matched again.
#[test]
fn the_index_follows_delete_expiry_invalidation_and_flush() {
    let b = Backend::start(Duration::ZERO);
    let s = semantic_server(&b, &[]);
    let mut con = s.conn();
    let entries = |con: &mut redis::Connection| info_field(con, "semantic_index_entries");
    let is_semantic = |con: &mut redis::Connection| {
        let m = meta(con, &["faq", PARAPHRASE, "TTL", "1"]);
        // What a miss stored is removed again, so each probe starts from the same state.
        let _: i64 = redis::cmd("QA.DEL")
            .arg(&["faq", PARAPHRASE])
            .query(con)
            .unwrap();
        field(&m, "served") == "semantic"
    };

    // DEL of the key.
    set(&mut con, &["faq", Q, A]);
    assert!(is_semantic(&mut con));
    let key: Vec<String> = redis::cmd("QA.KEY")
        .arg(&["faq", Q])
        .query(&mut con)
        .unwrap();
    let _: i64 = redis::cmd("DEL").arg(&key[3]).query(&mut con).unwrap();
    assert_eq!(entries(&mut con), 0);
    assert!(!is_semantic(&mut con));

    // QA.DEL.
    set(&mut con, &["faq", Q, A]);
    let _: i64 = redis::cmd("QA.DEL")
        .arg(&["faq", Q])
        .query(&mut con)
        .unwrap();
    assert_eq!(entries(&mut con), 0);
    assert!(!is_semantic(&mut con));

    // Expiry (active expiry removes it; the check reads the entry back anyway).
    set(&mut con, &["faq", Q, A, "TTL", "1"]);
    assert!(is_semantic(&mut con));
    assert!(wait_until(Duration::from_secs(5), || dbsize(&mut con) == 0));
    assert_eq!(entries(&mut con), 0);
    assert!(!is_semantic(&mut con));

    // QA.INVALIDATE: the old generation's vectors are dropped and never searched.
    set(&mut con, &["faq", Q, A]);
    assert_eq!(entries(&mut con), 1);
    let _: i64 = redis::cmd("QA.INVALIDATE")
        .arg("faq")
        .query(&mut con)
        .unwrap();
    assert_eq!(entries(&mut con), 0);
    assert!(!is_semantic(&mut con));

    // FLUSHALL.
    set(&mut con, &["faq", Q, A]);
    assert_eq!(entries(&mut con), 1);
    let _: String = redis::cmd("FLUSHALL").query(&mut con).unwrap();
    assert_eq!(entries(&mut con), 0);
    assert!(!is_semantic(&mut con));

    // Overwritten by hand with another question's fields: read back, refused, forgotten.
    set(&mut con, &["faq", Q, A]);
    let key: Vec<String> = redis::cmd("QA.KEY")
        .arg(&["faq", Q])
        .query(&mut con)
        .unwrap();
    let raw: Vec<u8> = redis::cmd("GET").arg(&key[3]).query(&mut con).unwrap();
    let nl = raw.iter().position(|b| *b == b'\n').unwrap();
    let other = "something else entirely";
    let header = String::from_utf8(raw[..nl].to_vec()).unwrap().replacen(
        &format!(" q={} ", Q.len()),
        &format!(" q={} ", other.len()),
        1,
    );
    let edited = [
        header.as_bytes(),
        b"\n",
        other.as_bytes(),
        &raw[nl + 1 + Q.len()..],
    ]
    .concat();
    assert_eq!(decode_entry(&edited).unwrap()["question"], other);
    let _: () = redis::cmd("SET")
        .arg(&key[3])
        .arg(edited)
        .arg("KEEPTTL")
        .query(&mut con)
        .unwrap();
    assert!(!is_semantic(&mut con));
}

#[test]
fn a_restart_rebuilds_the_index_from_the_entries() {
    let b = Backend::start(Duration::ZERO);
    let mut s = semantic_server(&b, &[]);
    let mut con = s.conn();
    for i in 0..50 {
        set(
            &mut con,
            &[
                "faq",
                &format!("Question number {i} about refunds"),
                &format!("A{i}"),
            ],
        );
    }
    set(&mut con, &["faq", Q, A]);
    assert_eq!(info_field(&mut con, "semantic_index_entries"), 51);
    let _: String = redis::cmd("SAVE").query(&mut con).unwrap();
    s.restart(&[]);
    let mut con = s.conn();
    assert!(wait_until(Duration::from_secs(10), || info_field(
        &mut con,
        "semantic_index_entries"
    ) == 51));
    assert_eq!(qa_get(&mut con, &["faq", PARAPHRASE]).unwrap(), A);
    assert_eq!(chat_calls(&b), 0);
}

#[test]
fn a_replica_indexes_what_it_receives_and_serves_paraphrases_once_promoted() {
    let b = Backend::start(Duration::ZERO);
    let url = b.url();
    let common = ["--qa.backend-url", &url, "--qa.semantic", "yes"];
    let (p, r) = primary_and_replica(&common, &common);
    let mut pc = p.conn();
    let mut rc = r.conn();
    set(&mut pc, &["faq", Q, A]);
    assert!(wait_until(Duration::from_secs(10), || info_field(
        &mut rc,
        "semantic_index_entries"
    ) == 1));
    // A full sync rebuilds it too: a restarted replica loads everything from the primary.
    let mut r = r;
    r.restart(&[]);
    let mut rc = r.conn();
    assert!(wait_until(Duration::from_secs(10), || link_up(&mut rc)
        && info_field(&mut rc, "semantic_index_entries") == 1));
    let _: String = redis::cmd("REPLICAOF")
        .arg(&["NO", "ONE"])
        .query(&mut rc)
        .unwrap();
    assert_eq!(qa_get(&mut rc, &["faq", PARAPHRASE]).unwrap(), A);
    assert_eq!(chat_calls(&b), 0);
}

#[test]
fn evicted_entries_leave_the_index() {
    let b = Backend::start(Duration::ZERO);
    let s = semantic_server(&b, &["--maxmemory-policy", "allkeys-lru"]);
    let mut con = s.conn();
    let used = info_num(&mut con, "memory", "used_memory");
    let limit = used + 1024 * 1024;
    redis::cmd("CONFIG")
        .arg(&["SET", "maxmemory", &limit.to_string()])
        .query::<()>(&mut con)
        .unwrap();
    let answer = "x".repeat(8 * 1024);
    // About four times what fits.
    for i in 0..512 {
        set(&mut con, &["faq", &format!("fill question {i}"), &answer]);
    }
    // Lift the limit before counting: at the limit any command (SCAN, INFO) may evict more.
    redis::cmd("CONFIG")
        .arg(&["SET", "maxmemory", "0"])
        .query::<()>(&mut con)
        .unwrap();
    let left = scan_keys(&mut con, "qa:{faq}:*").len() as u64;
    assert!(left < 512, "nothing was evicted");
    assert!(info_num(&mut con, "stats", "evicted_keys") > 0);
    assert_eq!(info_field(&mut con, "semantic_index_entries"), left);
}

#[test]
fn qa_set_with_the_semantic_tier_is_refused_inside_multi() {
    let b = Backend::start(Duration::ZERO);
    let s = semantic_server(&b, &[]);
    let mut con = s.conn();
    let e = redis::pipe()
        .atomic()
        .cmd("QA.SET")
        .arg(&["faq", Q, A])
        .query::<(String,)>(&mut con)
        .unwrap_err();
    assert_eq!(
        err_text(&e),
        "ERR QA.SET with the semantic tier cannot wait for the embedding inside MULTI or a script (add EXACT)"
    );
    assert_eq!(dbsize(&mut con), 0);
    // EXACT stores at once, inside MULTI too.
    let (ok,): (String,) = redis::pipe()
        .atomic()
        .cmd("QA.SET")
        .arg(&["faq", Q, A, "EXACT"])
        .query(&mut con)
        .unwrap();
    assert_eq!(ok, "OK");
    assert_eq!(qa_get(&mut con, &["faq", Q]).unwrap(), A);
}

#[test]
fn a_webhook_backend_needs_an_embed_url() {
    let b = Backend::start(Duration::ZERO);
    let hook = b.hook_url();
    let s = Server::start(&[
        "--qa.backend-url",
        &hook,
        "--qa.backend-format",
        "webhook",
        "--qa.semantic",
        "yes",
    ]);
    let mut con = s.conn();
    // No embeddings endpoint to call: stored and answered on the exact path, nothing posted
    // to the webhook's URL but the questions themselves.
    set(&mut con, &["faq", Q, A]);
    assert_eq!(
        qa_get(&mut con, &["faq", PARAPHRASE]).unwrap(),
        answer_for(PARAPHRASE, "gpt-4o-mini", "")
    );
    assert!(b.requests().iter().all(|r| r.path == "/hook"));
    assert_eq!(info_field(&mut con, "embed_errors"), 2);
    // With qa.embed-url, the same server goes semantic.
    let url = b.url();
    redis::cmd("CONFIG")
        .arg(&["SET", "qa.embed-url", &url])
        .query::<()>(&mut con)
        .unwrap();
    set(&mut con, &["faq", "Do you ship to Canada?", "Yes."]);
    assert_eq!(
        qa_get(&mut con, &["faq", "do YOU ship to canada"]).unwrap(),
        "Yes."
    );
}
