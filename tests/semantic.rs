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

/// A server with the semantic tier on, chat and embeddings from `b`; no audits (they call the
/// backend at random, see tests/verify.rs).
fn semantic_server(b: &Backend, extra: &[&str]) -> Server {
    let url = b.url();
    let mut args = vec![
        "--qa.backend-url",
        &url,
        "--qa.semantic",
        "yes",
        "--qa.semantic-audit-rate",
        "0",
    ];
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
    // As f16 (`qav2`): magic, scope digest, dimension count, two bytes per dimension.
    assert!(fields["sem"].starts_with("qav2"), "{fields:?}");
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
    assert!(wait_until(Duration::from_secs(5), || info_field(
        &mut con,
        "semantic_index_entries"
    ) == 1));
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
    let s = Server::start(&["--qa.backend-url", &url, "--qa.semantic-audit-rate", "0"]);
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
    assert!(wait_until(Duration::from_secs(5), || info_field(
        &mut con,
        "semantic_index_entries"
    ) == 0));
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
    assert!(wait_until(Duration::from_secs(5), || info_field(
        &mut con,
        "semantic_index_entries"
    ) == 1));
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
    // The index applies changes on its own thread: wait for it.
    assert!(wait_until(Duration::from_secs(5), || entries(&mut con) == 0));
    assert!(!is_semantic(&mut con));

    // QA.DEL.
    set(&mut con, &["faq", Q, A]);
    let _: i64 = redis::cmd("QA.DEL")
        .arg(&["faq", Q])
        .query(&mut con)
        .unwrap();
    // The index applies changes on its own thread: wait for it.
    assert!(wait_until(Duration::from_secs(5), || entries(&mut con) == 0));
    assert!(!is_semantic(&mut con));

    // Expiry (active expiry removes it; the check reads the entry back anyway).
    set(&mut con, &["faq", Q, A, "TTL", "1"]);
    assert!(is_semantic(&mut con));
    assert!(wait_until(Duration::from_secs(5), || dbsize(&mut con) == 0));
    // The index applies changes on its own thread: wait for it.
    assert!(wait_until(Duration::from_secs(5), || entries(&mut con) == 0));
    assert!(!is_semantic(&mut con));

    // QA.INVALIDATE: the old generation's vectors are dropped and never searched.
    set(&mut con, &["faq", Q, A]);
    // The index applies changes on its own thread: wait for it.
    assert!(wait_until(Duration::from_secs(5), || entries(&mut con) == 1));
    let _: String = redis::cmd("QA.INVALIDATE")
        .arg("faq")
        .query(&mut con)
        .unwrap();
    // The index applies changes on its own thread: wait for it.
    assert!(wait_until(Duration::from_secs(5), || entries(&mut con) == 0));
    assert!(!is_semantic(&mut con));

    // FLUSHALL.
    set(&mut con, &["faq", Q, A]);
    // The index applies changes on its own thread: wait for it.
    assert!(wait_until(Duration::from_secs(5), || entries(&mut con) == 1));
    let _: String = redis::cmd("FLUSHALL").query(&mut con).unwrap();
    // The index applies changes on its own thread: wait for it.
    assert!(wait_until(Duration::from_secs(5), || entries(&mut con) == 0));
    assert!(!is_semantic(&mut con));

    // Overwritten by hand with another question's fields: read back, refused, forgotten.
    let (entry_key, raw) = stored(&mut con, "faq", Q, A);
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
        .arg(&entry_key)
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
    assert!(wait_until(Duration::from_secs(5), || info_field(
        &mut con,
        "semantic_index_entries"
    ) == 51));
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

/// A replica keeps no index (it never searches: misses are refused there); promoted, it
/// rebuilds one from its entries and serves paraphrases.
#[test]
fn a_promoted_replica_rebuilds_its_index_and_serves_paraphrases() {
    let b = Backend::start(Duration::ZERO);
    let url = b.url();
    let common = ["--qa.backend-url", &url, "--qa.semantic", "yes"];
    let (p, r) = primary_and_replica(&common, &common);
    let mut pc = p.conn();
    let mut rc = r.conn();
    set(&mut pc, &["faq", Q, A]);
    assert!(wait_until(Duration::from_secs(5), || info_field(
        &mut pc,
        "semantic_index_entries"
    ) == 1));
    let acked: i64 = redis::cmd("WAIT").arg(1).arg(5000).query(&mut pc).unwrap();
    assert_eq!(acked, 1);
    assert_eq!(info_field(&mut rc, "semantic_index_entries"), 0);
    // A full sync loads everything from the primary; still no index on a replica.
    let mut r = r;
    r.restart(&[]);
    let mut rc = r.conn();
    assert!(wait_until(Duration::from_secs(10), || link_up(&mut rc)));
    // The link can be up before the entry is applied (a restarted replica may resume with a
    // partial resync): promote it only once it holds the entry.
    assert!(wait_until(Duration::from_secs(10), || dbsize(&mut rc) == 1));
    let _: String = redis::cmd("REPLICAOF")
        .arg(&["NO", "ONE"])
        .query(&mut rc)
        .unwrap();
    assert!(wait_until(Duration::from_secs(10), || info_field(
        &mut rc,
        "semantic_index_entries"
    ) == 1));
    assert_eq!(qa_get(&mut rc, &["faq", PARAPHRASE]).unwrap(), A);
    assert_eq!(chat_calls(&b), 0);
}

/// `QA.SET <cache> <question> <answer>`, then the entry's key and its value as stored.
fn stored(con: &mut redis::Connection, cache: &str, q: &str, a: &str) -> (String, Vec<u8>) {
    set(con, &[cache, q, a]);
    let key: Vec<String> = redis::cmd("QA.KEY").arg(&[cache, q]).query(con).unwrap();
    let raw: Vec<u8> = redis::cmd("GET").arg(&key[3]).query(con).unwrap();
    (key[3].clone(), raw)
}

/// Writes `n` entries of cache `cache` by hand, each with an embedding field of `dims`
/// dimensions (the `sem` layout: `qav1`, a 16-byte scope digest, u16 LE dimensions, f32 LE
/// values), in pipelines.
fn hand_entries(con: &mut redis::Connection, cache: &str, n: usize, dims: usize) {
    for chunk in (0..n).collect::<Vec<_>>().chunks(2_000) {
        let mut pipe = redis::pipe();
        for &i in chunk {
            let v: Vec<f32> = (0..dims)
                .map(|d| if d == i % dims { 1.0 } else { 0.0 })
                .collect();
            hand_entry(
                &mut pipe,
                &format!("qa:{{{cache}}}:{i:064x}"),
                &format!("question {i}"),
                &sem_qav1(&[7u8; 16], &v),
            );
        }
        let _: () = pipe.query(con).unwrap();
    }
}

/// An embedding field as older builds wrote it: `qav1`, the 16-byte scope digest, u16 LE
/// dimensions, f32 LE values.
fn sem_qav1(digest: &[u8], v: &[f32]) -> Vec<u8> {
    let mut sem = b"qav1".to_vec();
    sem.extend_from_slice(digest);
    sem.extend_from_slice(&(v.len() as u16).to_le_bytes());
    for f in v {
        sem.extend_from_slice(&f.to_le_bytes());
    }
    sem
}

/// Queues the `HSET` of a format-1 entry at `key` (answer `answer <question>`).
fn hand_entry(pipe: &mut redis::Pipeline, key: &str, question: &str, sem: &[u8]) {
    pipe.cmd("HSET")
        .arg(key)
        .arg("answer")
        .arg(format!("answer to {question}"))
        .arg("question")
        .arg(question)
        .arg("sem")
        .arg(sem)
        .ignore();
}

/// Stores `Q` in cache `faq` through the module and returns its scope digest, read from the
/// entry: its embedding is the last part of its value (`qav2`, then the digest).
fn faq_scope(con: &mut redis::Connection) -> Vec<u8> {
    let (_, raw) = stored(con, "faq", Q, A);
    let sem_len = 4 + 16 + 2 + 2 * common::backend::EMBED_DIMS;
    let sem = &raw[raw.len() - sem_len..];
    assert_eq!(&sem[..4], b"qav2");
    sem[4..20].to_vec()
}

/// Pseudo-random vectors of the test backend's dimensions (xorshift from `seed`).
fn random_vectors(seed: u64) -> impl FnMut() -> Vec<f32> {
    let mut x = seed;
    move || {
        (0..common::backend::EMBED_DIMS)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 40) as f32 / (1u64 << 24) as f32 - 0.5
            })
            .collect()
    }
}

/// Writes `n` filler entries `qa:{faq}:f<i>` of scope `digest` by hand, each with a random
/// float32 vector (`qav1`, as older builds wrote them): in place (the index sees them at the
/// next rebuild), or written aside and renamed into place (the rename's keyspace event
/// indexes each as it arrives).
fn hand_filled(con: &mut redis::Connection, digest: &[u8], n: usize, seed: u64, renamed: bool) {
    let mut random = random_vectors(seed);
    let mut pipe = redis::pipe();
    for i in 0..n {
        let key = format!("qa:{{faq}}:f{i:031x}");
        let at = if renamed {
            format!("scratch{i}")
        } else {
            key.clone()
        };
        hand_entry(
            &mut pipe,
            &at,
            &format!("filler question {i}"),
            &sem_qav1(digest, &random()),
        );
        if renamed {
            pipe.cmd("RENAME").arg(&at).arg(&key).ignore();
        }
    }
    let _: () = pipe.query(con).unwrap();
}

/// Waits until the rebuilds counted pass `before` and the index holds `n` entries, every one
/// in its graph.
fn rebuilt(con: &mut redis::Connection, before: u64, n: u64) -> bool {
    wait_until(Duration::from_secs(60), || {
        info_field(con, "semantic_rebuilds") > before
            && info_field(con, "semantic_index_entries") == n
            && info_field(con, "semantic_index_graph_pending") == 0
    })
}

/// A scope past `GRAPH_FROM` (2,048) vectors gets an HNSW graph, filled by the index thread
/// while the server goes on: misses search it and add entries, `DEL`s remove from it, `INFO`
/// reads its size. The server survives (this is the load under which `INFO` once crashed a
/// server: see docs/semantic.md, "What usearch guarantees"), and once the graph holds every
/// vector a paraphrase is still served from its entry, found through the graph.
#[test]
fn a_large_scope_is_served_through_its_graph_while_it_changes() {
    const N: usize = 4_000;
    let b = Backend::start(Duration::ZERO);
    let mut s = semantic_server(&b, &["--enable-debug-command", "yes"]);
    let mut con = s.conn();
    let digest = faq_scope(&mut con);
    // N entries of that scope written by hand, indexed by the rebuild after DEBUG RELOAD.
    hand_filled(&mut con, &digest, N, 0x9E37_79B9_7F4A_7C15, false);
    let _: String = redis::cmd("DEBUG").arg("RELOAD").query(&mut con).unwrap();
    assert!(wait_until(Duration::from_secs(30), || info_field(
        &mut con,
        "semantic_index_entries"
    ) == N as u64 + 1));
    // While the graph fills: misses (a search each, then an insert), deletes, INFO.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let workers: Vec<_> = (0..3)
        .map(|w| {
            let mut c = s.conn();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut n = 0;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) || n < 20 {
                    match w {
                        0 => {
                            let q = format!("a brand new question {n} about shipping");
                            assert_eq!(
                                qa_get(&mut c, &["faq", &q]).unwrap(),
                                answer_for(&q, "gpt-4o-mini", "")
                            );
                        }
                        1 => {
                            let _: i64 = redis::cmd("DEL")
                                .arg(format!("qa:{{faq}}:f{:031x}", 2 * n))
                                .query(&mut c)
                                .unwrap();
                        }
                        _ => {
                            let _ = info_field(&mut c, "semantic_index_bytes");
                        }
                    }
                    n += 1;
                }
                n
            })
        })
        .collect();
    let caught_up = wait_until(Duration::from_secs(60), || {
        info_field(&mut con, "semantic_index_graph_pending") == 0
    });
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for w in workers {
        assert!(w.join().unwrap() >= 20);
    }
    assert!(caught_up, "the graph did not take every vector");
    assert!(wait_until(Duration::from_secs(30), || info_field(
        &mut con,
        "semantic_index_graph_pending"
    ) == 0));
    assert!(s.running(), "{}", s.log_tail(40));
    // Every vector is in the graph: as f16, two bytes per dimension (a tail's are four).
    let entries = info_field(&mut con, "semantic_index_entries");
    assert!(entries > N as u64 / 2);
    assert_eq!(
        info_field(&mut con, "semantic_index_vector_bytes"),
        entries * 2 * common::backend::EMBED_DIMS as u64
    );
    let m = meta(&mut con, &["faq", PARAPHRASE]);
    assert_eq!(field(&m, "served"), "semantic");
    assert_eq!(field(&m, "matched"), Q);
    assert_eq!(field(&m, "answer"), A);
    assert!(info_field(&mut con, "semantic_index_bytes") > 0);
}

fn usec_per_call(con: &mut redis::Connection, command: &str) -> f64 {
    let info: String = redis::cmd("INFO").arg("commandstats").query(con).unwrap();
    let line = info
        .lines()
        .find(|l| l.starts_with(&format!("cmdstat_{command}:")))
        .unwrap_or_else(|| panic!("no {command} in {info}"));
    line.split(',')
        .find_map(|f| f.strip_prefix("usec_per_call="))
        .unwrap()
        .parse()
        .unwrap()
}

/// `QA.INVALIDATE` and `FLUSHALL ASYNC` stay O(1) on the main thread with a large index:
/// the dropped vectors are freed by the index's own thread. (Freeing 20k vectors of 384
/// dimensions inline took about 6 ms; the bound below is a hundredth of that per call
/// when nothing is freed inline, and docs/benchmarks.md has the measured times.)
#[test]
fn invalidating_or_flushing_a_large_index_frees_it_off_the_main_thread() {
    const N: usize = 20_000;
    let b = Backend::start(Duration::ZERO);
    let s = semantic_server(&b, &["--enable-debug-command", "yes"]);
    let mut con = s.conn();
    hand_entries(&mut con, "big", N, 384);
    let _: String = redis::cmd("DEBUG").arg("RELOAD").query(&mut con).unwrap();
    assert!(wait_until(Duration::from_secs(30), || info_field(
        &mut con,
        "semantic_index_entries"
    ) == N as u64));
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query(&mut con)
        .unwrap();
    let _: String = redis::cmd("QA.INVALIDATE")
        .arg("big")
        .query(&mut con)
        .unwrap();
    let took = usec_per_call(&mut con, "qa.invalidate");
    assert!(wait_until(Duration::from_secs(10), || info_field(
        &mut con,
        "semantic_index_entries"
    ) == 0));
    assert!(
        took < 2_000.0,
        "QA.INVALIDATE took {took} µs on the main thread"
    );

    let _: String = redis::cmd("DEBUG").arg("RELOAD").query(&mut con).unwrap();
    assert!(wait_until(Duration::from_secs(30), || info_field(
        &mut con,
        "semantic_index_entries"
    ) == N as u64));
    // FLUSHALL ASYNC: Redis's own part of it (the keys) costs as much with or without an
    // index, so only the index is checked here; bench/review_costs.py measures both.
    let _: () = redis::cmd("FLUSHALL").arg("ASYNC").query(&mut con).unwrap();
    assert!(wait_until(Duration::from_secs(10), || info_field(
        &mut con,
        "semantic_index_entries"
    ) == 0));
}

/// The index rebuilt after a restart is not abandoned by a flush of another database.
#[test]
fn a_flush_of_another_database_does_not_stop_the_rebuild() {
    const N: usize = 20_000;
    let b = Backend::start(Duration::ZERO);
    let s = semantic_server(&b, &["--enable-debug-command", "yes"]);
    let mut con = s.conn();
    hand_entries(&mut con, "faq", N, 8);
    let mut other = s.conn();
    let _: () = redis::cmd("SELECT").arg(5).query(&mut other).unwrap();
    let _: String = redis::cmd("DEBUG").arg("RELOAD").query(&mut con).unwrap();
    let _: () = redis::cmd("FLUSHDB").query(&mut other).unwrap();
    assert!(
        wait_until(Duration::from_secs(30), || info_field(
            &mut con,
            "semantic_index_entries"
        ) == N as u64),
        "indexed: {}",
        info_field(&mut con, "semantic_index_entries")
    );
    // A flush of the indexed database empties it.
    let _: () = redis::cmd("FLUSHDB").query(&mut con).unwrap();
    assert!(wait_until(Duration::from_secs(10), || info_field(
        &mut con,
        "semantic_index_entries"
    ) == 0));
}

/// An answer that arrives after `QA.INVALIDATE` is replied but not stored: its entry could
/// never be reached, and its vector would sit in the index until its TTL.
#[test]
fn an_answer_arriving_after_an_invalidation_is_not_stored() {
    let b = Backend::start(Duration::from_millis(600));
    let s = semantic_server(&b, &[]);
    let mut con = s.conn();
    let mut asker = s.conn();
    let waiting = std::thread::spawn(move || qa_get(&mut asker, &["faq", Q]).unwrap());
    assert!(wait_until(Duration::from_secs(5), || chat_calls(&b) == 1));
    let _: String = redis::cmd("QA.INVALIDATE")
        .arg("faq")
        .query(&mut con)
        .unwrap();
    assert_eq!(waiting.join().unwrap(), answer_for(Q, "gpt-4o-mini", ""));
    assert_eq!(dbsize(&mut con), 0, "no entry");
    let gen: bool = redis::cmd("EXISTS")
        .arg("qa:{faq}:gen")
        .query(&mut con)
        .unwrap();
    assert!(gen);
    assert!(wait_until(Duration::from_secs(5), || info_field(
        &mut con,
        "semantic_index_entries"
    ) == 0));
    assert_eq!(
        redis::cmd("QA.PEEK")
            .arg(&["faq", Q])
            .query::<Option<String>>(&mut con)
            .unwrap(),
        None
    );
}

/// The circuit breaker's probe can be a miss that goes the semantic way and whose match
/// fails the read-back (here: the entry went stale); its backend call then runs on the same
/// worker, even with no queue at all, and its outcome closes the breaker.
#[test]
fn a_semantic_probe_whose_match_fails_the_read_back_still_decides_the_breaker() {
    let b = Backend::start(Duration::ZERO);
    let s = semantic_server(
        &b,
        &[
            "--qa.breaker-failures",
            "1",
            "--qa.breaker-cooldown-ms",
            "200",
            "--qa.backend-retries",
            "0",
            "--qa.max-inflight",
            "1",
            "--qa.max-queue",
            "0",
        ],
    );
    let mut con = s.conn();
    for i in 0..3 {
        // With one worker and no queue, the next miss waits until the last job let go.
        assert!(wait_until(Duration::from_secs(5), || info_field(
            &mut con, "inflight"
        ) == 0));
        let stored = format!("What is our refund policy number {i}");
        let asked = format!("what is YOUR refund policy number {i}");
        // An entry with a one-second TTL and a long grace: stale soon, still stored.
        let _: String = redis::cmd("QA.GET")
            .arg(&["faq", &stored, "TTL", "1", "STALE", "100"])
            .query(&mut con)
            .unwrap();
        let key: Vec<String> = redis::cmd("QA.KEY")
            .arg(&["faq", &stored])
            .query(&mut con)
            .unwrap();
        // Stale once its second is over (the key lives 101 s): read without a hit, which
        // would start a background refresh.
        assert!(wait_until(Duration::from_secs(5), || {
            redis::cmd("PTTL")
                .arg(&key[3])
                .query::<i64>(&mut con)
                .unwrap()
                < 99_800
        }));
        assert!(wait_until(Duration::from_secs(5), || info_field(
            &mut con, "inflight"
        ) == 0));
        // One failure opens the breaker; after the cooldown the next miss probes.
        b.push([Reply::Status(500, String::new())]);
        let e = redis::cmd("QA.GET")
            .arg(&["faq", &format!("boom {i}"), "EXACT"])
            .query::<String>(&mut con)
            .unwrap_err();
        assert_eq!(err_text(&e), "ERR backend returned HTTP 500");
        assert_eq!(info_field(&mut con, "breaker_open"), 1);
        std::thread::sleep(Duration::from_millis(250));
        assert!(wait_until(Duration::from_secs(5), || info_field(
            &mut con, "inflight"
        ) == 0));
        // The probe: embedded, matched to the stale entry, refused at read-back, then asked.
        let calls = chat_calls(&b);
        assert_eq!(
            qa_get(&mut con, &["faq", &asked]).unwrap(),
            answer_for(&asked, "gpt-4o-mini", ""),
            "round {i}"
        );
        assert_eq!(chat_calls(&b), calls + 1);
        assert_eq!(info_field(&mut con, "breaker_open"), 0, "round {i}");
        assert!(wait_until(Duration::from_secs(5), || info_field(
            &mut con, "inflight"
        ) == 0));
        let fresh = format!("a new question {i}");
        assert_eq!(
            qa_get(&mut con, &["faq", &fresh, "EXACT"]).unwrap(),
            answer_for(&fresh, "gpt-4o-mini", "")
        );
    }
    assert!(info_field(&mut con, "semantic_stale_index") >= 3);
}

/// `QA.SET ... SEMANTIC` answers like a miss would when it cannot go on: the busy error when
/// the pool is full, and an error within its own deadline when writes are paused.
#[test]
fn qa_set_semantic_refusals_have_their_own_errors() {
    let b = Backend::start(Duration::from_millis(800));
    let s = semantic_server(
        &b,
        &[
            "--qa.max-inflight",
            "1",
            "--qa.max-queue",
            "0",
            "--qa.timeout-ms",
            "3000",
        ],
    );
    let mut con = s.conn();
    let mut first = s.conn();
    let slow = std::thread::spawn(move || {
        redis::cmd("QA.SET")
            .arg(&["faq", "first question", "a1"])
            .query::<String>(&mut first)
    });
    assert!(wait_until(Duration::from_secs(5), || b.calls() == 1));
    let e = redis::cmd("QA.SET")
        .arg(&["faq", "second question", "a2"])
        .query::<String>(&mut con)
        .unwrap_err();
    assert_eq!(
        err_text(&e),
        "ERR too many misses waiting for the backend (qa.max-queue)"
    );
    assert_eq!(slow.join().unwrap().unwrap(), "OK");

    // Writes paused while the embedding is made: the setter is answered at its deadline
    // (3 s), not when the 20 s pause ends.
    assert!(wait_until(Duration::from_secs(5), || info_field(
        &mut con, "inflight"
    ) == 0));
    let mut setter = s.conn();
    let started = std::time::Instant::now();
    let paused = std::thread::spawn(move || {
        redis::cmd("QA.SET")
            .arg(&["faq", "third question", "a3"])
            .query::<String>(&mut setter)
    });
    assert!(wait_until(Duration::from_secs(5), || b.calls() == 2));
    let _: () = redis::cmd("CLIENT")
        .arg(&["PAUSE", "20000", "WRITE"])
        .query(&mut con)
        .unwrap();
    let e = paused.join().unwrap().unwrap_err();
    assert_eq!(
        err_text(&e),
        "ERR writes are paused (CLIENT PAUSE or a failover): the answer was not stored"
    );
    assert!(started.elapsed() < Duration::from_secs(15));
    let _: () = redis::cmd("CLIENT").arg("UNPAUSE").query(&mut con).unwrap();
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
    assert!(wait_until(Duration::from_secs(5), || info_field(
        &mut con,
        "semantic_index_entries"
    ) == left));
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

/// Files of the graph checkpoint in a server's directory (`dump.rdb.qa-graph*`), by name.
fn checkpoint_files(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("dump.rdb.qa-graph")
        })
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

/// A save writes the large scope's graph beside the RDB file; a restart reads it back
/// instead of building it again, and uses a saved vector only for an entry that is there
/// with the same key, scope and vector: a checkpoint older than the data (entries deleted
/// and changed since) is claimed where it agrees and the rest is dropped; a damaged one is
/// ignored and the graph built again. Paraphrases are served throughout.
#[test]
fn a_restart_reads_the_saved_graph_and_keeps_only_what_the_entries_confirm() {
    const N: usize = 3_000;
    let b = Backend::start(Duration::ZERO);
    let mut s = semantic_server(&b, &["--enable-debug-command", "yes"]);
    let mut con = s.conn();
    let digest = faq_scope(&mut con);
    hand_filled(&mut con, &digest, N, 0x2545_F491_4F6C_DD1D, false);
    let mut random = random_vectors(0x5851_F42D_4C95_7F2D);
    let before = info_field(&mut con, "semantic_rebuilds");
    let _: String = redis::cmd("DEBUG").arg("RELOAD").query(&mut con).unwrap();
    let all = N as u64 + 1;
    assert!(rebuilt(&mut con, before, all), "{}", s.log_tail(20));
    assert_eq!(info_field(&mut con, "semantic_graph_restored"), 0);

    // BGSAVE: the checkpoint is written beside the fork's RDB (the parent does not wait).
    let _: String = redis::cmd("BGSAVE").query(&mut con).unwrap();
    assert!(wait_until(Duration::from_secs(30), || {
        info_field(&mut con, "semantic_graph_checkpoints") == 1
            && info_num(&mut con, "persistence", "rdb_bgsave_in_progress") == 0
    }));
    let saved = checkpoint_files(&s.dir);
    assert_eq!(saved.len(), 2, "a manifest and one graph: {saved:?}");
    assert!(info_field(&mut con, "semantic_graph_checkpoint_bytes") > (N * 2 * 8) as u64);
    // Nothing changed: SAVE (which waits for its checkpoint) writes nothing new.
    let _: String = redis::cmd("SAVE").query(&mut con).unwrap();
    assert_eq!(info_field(&mut con, "semantic_graph_checkpoints"), 1);
    assert_eq!(checkpoint_files(&s.dir), saved);

    // A restart (SIGKILL, then the RDB of that SAVE): the graph is read back, not built.
    s.restart(&[]);
    let mut con = s.conn();
    assert!(rebuilt(&mut con, 0, all), "{}", s.log_tail(20));
    assert_eq!(info_field(&mut con, "semantic_graph_restored"), all);
    assert_eq!(info_field(&mut con, "semantic_graph_restored_unclaimed"), 0);
    let m = meta(&mut con, &["faq", PARAPHRASE]);
    assert_eq!(field(&m, "served"), "semantic");
    assert_eq!(field(&m, "answer"), A);

    // The data moves on past the checkpoint: 100 entries deleted, one given another vector,
    // then saved (a new checkpoint), and the old checkpoint put back in its place.
    for i in 0..100 {
        let _: i64 = redis::cmd("DEL")
            .arg(format!("qa:{{faq}}:f{i:031x}"))
            .query(&mut con)
            .unwrap();
    }
    let changed = format!("qa:{{faq}}:f{:031x}", 500);
    let _: i64 = redis::cmd("HSET")
        .arg(&changed)
        .arg("sem")
        .arg(sem_qav1(&digest, &random()))
        .query(&mut con)
        .unwrap();
    let _: String = redis::cmd("SAVE").query(&mut con).unwrap();
    assert_ne!(checkpoint_files(&s.dir), saved);
    for (name, _) in checkpoint_files(&s.dir) {
        std::fs::remove_file(s.dir.join(name)).unwrap();
    }
    for (name, bytes) in &saved {
        std::fs::write(s.dir.join(name), bytes).unwrap();
    }
    let before = info_field(&mut con, "semantic_rebuilds");
    let _: String = redis::cmd("DEBUG")
        .arg("RELOAD")
        .arg("NOSAVE")
        .query(&mut con)
        .unwrap();
    let left = all - 100;
    assert!(rebuilt(&mut con, before, left), "{}", s.log_tail(20));
    assert_eq!(info_field(&mut con, "semantic_graph_restored"), all);
    // The deleted entries' vectors went when the scan ended; the changed one at once (its
    // new vector went to the graph the usual way).
    assert_eq!(
        info_field(&mut con, "semantic_graph_restored_unclaimed"),
        100
    );
    // Every indexed vector is in the graph once: f16, two bytes per dimension.
    assert_eq!(
        info_field(&mut con, "semantic_index_vector_bytes"),
        left * 2 * common::backend::EMBED_DIMS as u64
    );
    assert_eq!(
        field(&meta(&mut con, &["faq", PARAPHRASE]), "served"),
        "semantic"
    );

    // A damaged graph file is refused (its CRC) and logged; the graph is built again.
    let _: String = redis::cmd("SAVE").query(&mut con).unwrap();
    let files = checkpoint_files(&s.dir);
    let (graph, bytes) = files
        .iter()
        .find(|(n, _)| n.contains(".qa-graph."))
        .unwrap();
    let mut bytes = bytes.clone();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x10;
    std::fs::write(s.dir.join(graph), bytes).unwrap();
    let before = info_field(&mut con, "semantic_rebuilds");
    let _: String = redis::cmd("DEBUG")
        .arg("RELOAD")
        .arg("NOSAVE")
        .query(&mut con)
        .unwrap();
    assert!(rebuilt(&mut con, before, left), "{}", s.log_tail(20));
    assert_eq!(info_field(&mut con, "semantic_graph_restored"), 0);
    assert!(s.log().contains("was not used"), "{}", s.log_tail(20));
    assert_eq!(
        field(&meta(&mut con, &["faq", PARAPHRASE]), "served"),
        "semantic"
    );

    // Off: no file is written or read.
    config_set(&mut con, "qa.semantic-graph-file", "no");
    for (name, _) in checkpoint_files(&s.dir) {
        std::fs::remove_file(s.dir.join(name)).unwrap();
    }
    let _: String = redis::cmd("SAVE").query(&mut con).unwrap();
    assert!(checkpoint_files(&s.dir).is_empty());
    assert!(s.running());
}

/// With the AOF alone (no RDB save point), a shutdown still writes the graphs, and the next
/// start reads them back while it replays the AOF.
#[test]
fn with_the_aof_alone_a_shutdown_saves_the_graph_for_the_next_start() {
    const N: usize = 2_500;
    let b = Backend::start(Duration::ZERO);
    let mut s = semantic_server(&b, &["--appendonly", "yes"]);
    let mut con = s.conn();
    let digest = faq_scope(&mut con);
    hand_filled(&mut con, &digest, N, 0x1234_5678_9ABC_DEF1, true);
    let all = N as u64 + 1;
    assert!(
        wait_until(Duration::from_secs(60), || {
            info_field(&mut con, "semantic_index_entries") == all
                && info_field(&mut con, "semantic_index_graph_pending") == 0
        }),
        "{}",
        s.log_tail(20)
    );
    let _ = redis::cmd("SHUTDOWN").query::<()>(&mut con);
    assert!(s.wait_exit(Duration::from_secs(60)).is_some(), "no exit");
    let files = checkpoint_files(&s.dir);
    assert_eq!(files.len(), 2, "{files:?}");
    assert!(!s.dir.join("dump.rdb").exists(), "no RDB was written");
    s.restart(&[]);
    let mut con = s.conn();
    assert!(rebuilt(&mut con, 0, all), "{}", s.log_tail(20));
    assert_eq!(info_field(&mut con, "semantic_graph_restored"), all);
    assert_eq!(info_field(&mut con, "semantic_graph_restored_unclaimed"), 0);
    assert_eq!(
        field(&meta(&mut con, &["faq", PARAPHRASE]), "served"),
        "semantic"
    );
}
