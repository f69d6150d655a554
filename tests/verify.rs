//! The semantic tier's verifier (`qa.semantic-verify llm|rerank`), its audits
//! (`qa.semantic-audit-rate`, `QA.AUDIT`) and the calibration of a cache's threshold
//! (`qa.semantic-target-precision`), against a real server and the mock backend: yes/no
//! questions (chat requests with a tiny `max_tokens`) are answered from the mock's judge
//! queue, `/rerank` scores by the cosine of its bag-of-words embeddings.
//!
//! Whatever the verifier does, a client gets either the stored answer of a match the
//! verifier accepted or the backend's own answer: never a refused match, never an error.

mod common;

use std::time::Duration;

use common::backend::{answer_for, Backend, Reply};
use common::*;

const Q: &str = "What is our refund policy?";
const A: &str = "Refunds within 30 days.";
const PARAPHRASE: &str = "what is YOUR refund policy";

fn set(con: &mut redis::Connection, args: &[&str]) {
    let ok: String = redis::cmd("QA.SET").arg(args).query(con).expect("QA.SET");
    assert_eq!(ok, "OK");
}

/// A server with the semantic tier on (chat and embeddings from `b`), audits off unless
/// `extra` turns them on.
fn server(b: &Backend, extra: &[&str]) -> Server {
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

/// The backend's own answer to `q` (what a miss replies).
fn fresh(q: &str) -> String {
    answer_for(q, "gpt-4o-mini", "")
}

/// Chat calls that were not yes/no questions (misses and audits' fresh answers).
fn answer_calls(b: &Backend) -> usize {
    let judged = b.judge_requests().len();
    b.requests()
        .iter()
        .filter(|r| r.path.ends_with("/chat/completions") || r.path.ends_with("/messages"))
        .count()
        - judged
}

/// (field, value) pairs of a RESP2 map reply.
fn pairs(v: &redis::Value) -> Vec<(String, String)> {
    let text = |v: &redis::Value| match v {
        redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        redis::Value::Int(n) => n.to_string(),
        redis::Value::SimpleString(s) => s.clone(),
        other => format!("{other:?}"),
    };
    match v {
        redis::Value::Array(items) => items
            .chunks(2)
            .map(|p| (text(&p[0]), text(&p[1])))
            .collect(),
        redis::Value::Map(items) => items.iter().map(|(k, v)| (text(k), text(v))).collect(),
        other => panic!("not a map: {other:?}"),
    }
}

fn field(m: &[(String, String)], name: &str) -> String {
    m.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| panic!("no {name} in {m:?}"))
}

fn stats(con: &mut redis::Connection, args: &[&str]) -> Vec<(String, String)> {
    let v: redis::Value = redis::cmd("QA.STATS")
        .arg(args)
        .query(con)
        .expect("QA.STATS");
    pairs(&v)
}

fn meta(con: &mut redis::Connection, args: &[&str]) -> Vec<(String, String)> {
    let v: redis::Value = redis::cmd("QA.GET")
        .arg(args)
        .arg("WITHMETA")
        .query(con)
        .expect("QA.GET WITHMETA");
    pairs(&v)
}

#[test]
fn llm_a_clear_yes_serves_the_match_and_the_question_pair_is_sent() {
    let b = Backend::start(Duration::ZERO);
    let s = server(&b, &["--qa.semantic-verify", "llm"]);
    let mut con = s.conn();
    set(&mut con, &["faq", Q, A]);
    let m = meta(&mut con, &["faq", PARAPHRASE]);
    assert_eq!(field(&m, "answer"), A);
    assert_eq!(field(&m, "served"), "semantic");
    assert_eq!(field(&m, "matched"), Q);
    // One yes/no question, in the backend's format, with a tiny max_tokens.
    let judged = b.judge_requests();
    assert_eq!(judged.len(), 1);
    let r = &judged[0];
    assert_eq!(r.path, "/v1/chat/completions");
    assert_eq!(r.body["model"], "gpt-4o-mini");
    assert_eq!(r.body["max_tokens"], 3);
    assert_eq!(r.body["temperature"], 0);
    assert_eq!(r.body["messages"][0]["role"], "system");
    let prompt = r.body["messages"][1]["content"].as_str().unwrap();
    assert!(
        prompt.contains(&format!("Question A: {PARAPHRASE}\n")),
        "{prompt}"
    );
    assert!(prompt.contains(&format!("Question B: {Q}\n")), "{prompt}");
    assert!(
        prompt.contains(&format!("Answer given to question B: {A}\n")),
        "{prompt}"
    );
    assert_eq!(answer_calls(&b), 0);
    assert_eq!(info_field(&mut con, "verify_calls"), 1);
    assert_eq!(info_field(&mut con, "verify_accepted"), 1);
    assert!(info_field(&mut con, "verify_tokens_in") > 0);
    assert_eq!(info_field(&mut con, "verify_tokens_out"), 1);
    assert_eq!(info_field(&mut con, "semantic_hits"), 1);
    let g = stats(&mut con, &[]);
    assert_eq!(field(&g, "verify_calls"), "1");
    assert_eq!(field(&g, "verify_cost"), "0.000000");
}

#[test]
fn llm_anything_but_a_clear_yes_calls_the_backend() {
    let b = Backend::start(Duration::ZERO);
    let s = server(
        &b,
        &["--qa.semantic-verify", "llm", "--qa.backend-retries", "0"],
    );
    let mut con = s.conn();
    // (judge's reply, counter it moves)
    let rows = [
        (Reply::Says("no".into()), "verify_refused"),
        (Reply::Says("No.".into()), "verify_refused"),
        (
            Reply::Says("Yes, but only for books".into()),
            "verify_refused",
        ),
        (Reply::Says("maybe".into()), "verify_refused"),
        (Reply::Says("  ".into()), "verify_refused"),
        (
            Reply::Status(500, "{\"error\":\"boom\"}".into()),
            "verify_errors",
        ),
        (Reply::Status(429, "slow down".into()), "verify_errors"),
        (Reply::Raw("<html>".into()), "verify_errors"),
        (Reply::Raw("{\"choices\":[]}".into()), "verify_errors"),
        (Reply::Reset, "verify_errors"),
    ];
    for (i, (reply, counter)) in rows.into_iter().enumerate() {
        let cache = format!("faq{i}");
        set(&mut con, &[&cache, Q, A]);
        b.set_judge(reply.clone());
        let before = info_field(&mut con, counter);
        let calls = answer_calls(&b);
        let got = qa_get(&mut con, &[&cache, PARAPHRASE]);
        assert_eq!(got.as_deref(), Ok(fresh(PARAPHRASE).as_str()), "{reply:?}");
        assert_eq!(info_field(&mut con, counter), before + 1, "{reply:?}");
        assert_eq!(answer_calls(&b), calls + 1, "{reply:?}");
    }
    assert_eq!(info_field(&mut con, "verify_accepted"), 0);
    assert_eq!(info_field(&mut con, "semantic_hits"), 0);
}

#[test]
fn llm_a_verifier_timeout_falls_back_to_the_backend_within_the_deadline() {
    let b = Backend::start(Duration::ZERO);
    let s = server(
        &b,
        &["--qa.semantic-verify", "llm", "--qa.timeout-ms", "2000"],
    );
    let mut con = s.conn();
    set(&mut con, &["faq", Q, A]);
    b.set_judge(Reply::Hang);
    // The verifier had half the time left; the backend answered within the rest (past the
    // deadline the client would get the timeout error instead).
    assert_eq!(
        qa_get(&mut con, &["faq", PARAPHRASE]).unwrap(),
        fresh(PARAPHRASE)
    );
    assert_eq!(info_field(&mut con, "verify_errors"), 1);
    assert_eq!(info_field(&mut con, "client_timeouts"), 0);
}

#[test]
fn llm_the_nearest_refused_the_second_accepted_and_served() {
    let b = Backend::start(Duration::ZERO);
    // Guards off and a loose threshold: both stored questions are candidates.
    let s = server(
        &b,
        &[
            "--qa.semantic-verify",
            "llm",
            "--qa.semantic-guards",
            "no",
            "--qa.semantic-threshold",
            "0.5",
        ],
    );
    let mut con = s.conn();
    let q2 = "What is our refund policy for books?";
    let a2 = "Books: 14 days.";
    set(&mut con, &["faq", Q, A]);
    set(&mut con, &["faq", q2, a2]);
    b.push_judge([Reply::Says("no".into()), Reply::Says("yes".into())]);
    let m = meta(&mut con, &["faq", PARAPHRASE]);
    assert_eq!(field(&m, "answer"), a2);
    assert_eq!(field(&m, "matched"), q2);
    let judged = b.judge_requests();
    assert_eq!(judged.len(), 2);
    let prompt = |i: usize| {
        judged[i].body["messages"][1]["content"]
            .as_str()
            .unwrap()
            .to_string()
    };
    // Nearest first.
    assert!(
        prompt(0).contains(&format!("Question B: {Q}\n")),
        "{}",
        prompt(0)
    );
    assert!(
        prompt(1).contains(&format!("Question B: {q2}\n")),
        "{}",
        prompt(1)
    );
    assert_eq!(answer_calls(&b), 0);
    assert_eq!(info_field(&mut con, "verify_calls"), 2);
    assert_eq!(info_field(&mut con, "verify_accepted"), 1);
    // Every candidate refused: the backend's answer.
    b.push_judge([Reply::Says("no".into()), Reply::Says("no".into())]);
    assert_eq!(
        qa_get(&mut con, &["faq", "what is YOUR refund policy today"]).unwrap(),
        fresh("what is YOUR refund policy today")
    );
    assert_eq!(info_field(&mut con, "verify_refused"), 1);
}

#[test]
fn llm_with_the_anthropic_format() {
    let b = Backend::start(Duration::ZERO);
    let eurl = b.url();
    let s = server(
        &b,
        &[
            "--qa.semantic-verify",
            "llm",
            "--qa.backend-format",
            "anthropic",
            "--qa.embed-url",
            &eurl,
        ],
    );
    let mut con = s.conn();
    set(&mut con, &["faq", Q, A]);
    assert_eq!(qa_get(&mut con, &["faq", PARAPHRASE]).unwrap(), A);
    let judged = b.judge_requests();
    assert_eq!(judged.len(), 1);
    assert_eq!(judged[0].path, "/v1/messages");
    assert_eq!(judged[0].body["max_tokens"], 3);
    assert!(judged[0].body["system"]
        .as_str()
        .unwrap()
        .contains("yes or no"));
    b.set_judge(Reply::Says("No".into()));
    assert_eq!(
        qa_get(&mut con, &["faq", "What is your refund policy"]).unwrap(),
        answer_for("What is your refund policy", "gpt-4o-mini", "")
    );
}

#[test]
fn llm_with_a_webhook_backend_is_a_counted_refusal() {
    let b = Backend::start(Duration::ZERO);
    let hook = b.hook_url();
    let eurl = b.url();
    let s = Server::start(&[
        "--qa.backend-url",
        &hook,
        "--qa.backend-format",
        "webhook",
        "--qa.embed-url",
        &eurl,
        "--qa.semantic",
        "yes",
        "--qa.semantic-audit-rate",
        "0",
        "--qa.semantic-verify",
        "llm",
    ]);
    let mut con = s.conn();
    set(&mut con, &["faq", Q, A]);
    assert_eq!(
        qa_get(&mut con, &["faq", PARAPHRASE]).unwrap(),
        fresh(PARAPHRASE)
    );
    assert_eq!(info_field(&mut con, "verify_unsupported"), 1);
    assert_eq!(info_field(&mut con, "verify_errors"), 1);
    assert_eq!(info_field(&mut con, "verify_calls"), 0);
    assert!(b.judge_requests().is_empty());
}

/// A server verifying with the rerank API of `rr`.
fn rerank_server(b: &Backend, rr: &Backend, extra: &[&str]) -> Server {
    let url = rr.rerank_url();
    let mut args = vec![
        "--qa.semantic-verify",
        "rerank",
        "--qa.rerank-url",
        &url,
        "--qa.rerank-model",
        "bge-reranker-base",
    ];
    args.extend_from_slice(extra);
    server(b, &args)
}

fn scores(pairs: &[(usize, f64)]) -> Reply {
    let results: Vec<serde_json::Value> = pairs
        .iter()
        .map(|(i, s)| serde_json::json!({"index": i, "relevance_score": s}))
        .collect();
    Reply::Raw(serde_json::json!({ "results": results }).to_string())
}

#[test]
fn rerank_wire_format_and_threshold() {
    let b = Backend::start(Duration::ZERO);
    let rr = Backend::start(Duration::ZERO);
    let s = rerank_server(&b, &rr, &[]);
    let mut con = s.conn();
    set(&mut con, &["faq", Q, A]);
    assert_eq!(qa_get(&mut con, &["faq", PARAPHRASE]).unwrap(), A);
    let r = &rr.requests()[0];
    assert_eq!(r.path, "/v1/rerank");
    assert_eq!(
        r.body,
        serde_json::json!({"model": "bge-reranker-base", "query": PARAPHRASE,
                           "documents": [Q], "top_n": 1})
    );
    assert_eq!(info_field(&mut con, "verify_accepted"), 1);
    // Under qa.semantic-verify-threshold (0.5): the backend's answer.
    set(&mut con, &["faq2", Q, A]);
    rr.push([scores(&[(0, 0.49)])]);
    assert_eq!(
        qa_get(&mut con, &["faq2", PARAPHRASE]).unwrap(),
        fresh(PARAPHRASE)
    );
    assert_eq!(info_field(&mut con, "verify_refused"), 1);
    // The threshold is a setting.
    redis::cmd("CONFIG")
        .arg(&["SET", "qa.semantic-verify-threshold", "0.4"])
        .query::<()>(&mut con)
        .unwrap();
    set(&mut con, &["faq3", Q, A]);
    rr.push([scores(&[(0, 0.49)])]);
    assert_eq!(qa_get(&mut con, &["faq3", PARAPHRASE]).unwrap(), A);
    let e = redis::cmd("CONFIG")
        .arg(&["SET", "qa.semantic-verify-threshold", "2"])
        .query::<()>(&mut con)
        .unwrap_err();
    assert!(
        err_text(&e).contains("must be a decimal number between 0 and 1"),
        "{e}"
    );
}

#[test]
fn rerank_failures_call_the_backend() {
    let b = Backend::start(Duration::ZERO);
    let rr = Backend::start(Duration::ZERO);
    let s = rerank_server(
        &b,
        &rr,
        &["--qa.backend-retries", "0", "--qa.timeout-ms", "2000"],
    );
    let mut con = s.conn();
    set(&mut con, &["faq", Q, A]);
    // (rerank reply, what it is)
    let rows = [
        (Reply::Status(500, "boom".into()), "an HTTP error"),
        (Reply::Status(404, "no such route".into()), "a 404"),
        (Reply::Raw("not json".into()), "garbage"),
        (scores(&[(3, 0.99)]), "an index out of range"),
        (Reply::Raw("{\"results\":[]}".into()), "no results"),
        (Reply::Reset, "a reset connection"),
        (Reply::Hang, "a timeout"),
    ];
    for (i, (reply, what)) in rows.into_iter().enumerate() {
        let cache = format!("faq{i}");
        set(&mut con, &[&cache, Q, A]);
        rr.push([reply]);
        let before = info_field(&mut con, "verify_errors");
        let got = qa_get(&mut con, &[&cache, PARAPHRASE]);
        assert_eq!(got.as_deref(), Ok(fresh(PARAPHRASE).as_str()), "{what}");
        assert_eq!(info_field(&mut con, "verify_errors"), before + 1, "{what}");
    }
    assert_eq!(info_field(&mut con, "semantic_hits"), 0);
    assert_eq!(info_field(&mut con, "client_timeouts"), 0);
    // No URL set: a failure too.
    redis::cmd("CONFIG")
        .arg(&["SET", "qa.rerank-url", ""])
        .query::<()>(&mut con)
        .unwrap();
    assert_eq!(
        qa_get(&mut con, &["faq", PARAPHRASE]).unwrap(),
        fresh(PARAPHRASE)
    );
}

#[test]
fn rerank_the_best_scored_candidate_wins() {
    let b = Backend::start(Duration::ZERO);
    let rr = Backend::start(Duration::ZERO);
    let s = rerank_server(
        &b,
        &rr,
        &[
            "--qa.semantic-guards",
            "no",
            "--qa.semantic-threshold",
            "0.5",
        ],
    );
    let mut con = s.conn();
    let q2 = "What is our refund policy for books?";
    let a2 = "Books: 14 days.";
    set(&mut con, &["faq", Q, A]);
    set(&mut con, &["faq", q2, a2]);
    rr.push([scores(&[(0, 0.1), (1, 0.9)])]);
    let m = meta(&mut con, &["faq", PARAPHRASE]);
    assert_eq!(field(&m, "answer"), a2);
    assert_eq!(field(&m, "matched"), q2);
    let body = &rr.requests()[0].body;
    assert_eq!(body["documents"], serde_json::json!([Q, q2]));
    assert_eq!(body["top_n"], 2);
}

/// Polls until `INFO qa` field `name` reaches `want`.
fn wait_info(con: &mut redis::Connection, name: &str, want: u64) {
    assert!(
        wait_until(Duration::from_secs(10), || info_field(con, name) >= want),
        "{name} never reached {want}: {}",
        info_field(con, name)
    );
}

#[test]
fn audits_count_agreements_and_list_disagreements() {
    let b = Backend::start(Duration::ZERO);
    let s = server(&b, &["--qa.semantic-audit-rate", "1"]);
    let mut con = s.conn();
    set(&mut con, &["faq", Q, A]);
    // The served answer and the fresh one differ: the backend is asked whether they say
    // the same thing. No.
    b.push_judge([Reply::Says("no".into())]);
    assert_eq!(qa_get(&mut con, &["faq", PARAPHRASE]).unwrap(), A);
    wait_info(&mut con, "audited", 1);
    assert_eq!(info_field(&mut con, "audit_disagreed"), 1);
    // The fresh answer was asked with the client's question, and not stored.
    assert_eq!(answer_calls(&b), 1);
    let keys = scan_keys(&mut con, "qa:{faq}:*");
    assert_eq!(
        keys.len(),
        1,
        "the entry only (scan_keys leaves out the generation): {keys:?}"
    );
    let judged = b.judge_requests();
    let prompt = judged[0].body["messages"][1]["content"].as_str().unwrap();
    assert!(prompt.contains(&format!("Answer 1: {A}\n")), "{prompt}");
    assert!(
        prompt.contains(&format!("Answer 2: {}\n", fresh(PARAPHRASE))),
        "{prompt}"
    );
    // Yes (the default): agreed.
    assert_eq!(qa_get(&mut con, &["faq", PARAPHRASE]).unwrap(), A);
    wait_info(&mut con, "audited", 2);
    assert_eq!(info_field(&mut con, "audit_agreed"), 1);
    let st = stats(&mut con, &["faq"]);
    assert_eq!(field(&st, "audited"), "2");
    assert_eq!(field(&st, "audit_agreed"), "1");
    assert_eq!(field(&st, "audit_disagreed"), "1");
    assert_eq!(field(&st, "audit_precision"), "0.5000");
    // Wilson 95% interval of 1 in 2.
    assert_eq!(field(&st, "audit_precision_low"), "0.0945");
    assert_eq!(field(&st, "audit_precision_high"), "0.9055");
    // No target: the configured threshold.
    assert_eq!(field(&st, "semantic_threshold"), "0.8000");

    let list: Vec<redis::Value> = redis::cmd("QA.AUDIT").arg("faq").query(&mut con).unwrap();
    assert_eq!(list.len(), 1);
    let d = pairs(&list[0]);
    assert_eq!(field(&d, "query"), PARAPHRASE);
    assert_eq!(field(&d, "matched"), Q);
    assert_eq!(field(&d, "served"), A);
    assert_eq!(field(&d, "fresh"), fresh(PARAPHRASE));
    assert!(field(&d, "similarity").parse::<f32>().unwrap() > 0.99);
    assert!(field(&d, "at_ms").parse::<i64>().unwrap() > 0);
    let list: Vec<redis::Value> = redis::cmd("QA.AUDIT")
        .arg(&["faq", "count", "1"])
        .query(&mut con)
        .unwrap();
    assert_eq!(list.len(), 1);
    let none: Vec<redis::Value> = redis::cmd("QA.AUDIT").arg("other").query(&mut con).unwrap();
    assert!(none.is_empty());
    // (arguments, exact error)
    let rows: &[(&[&str], &str)] = &[
        (
            &["faq", "COUNT", "0"],
            "ERR COUNT must be an integer between 1 and 32",
        ),
        (
            &["faq", "COUNT", "33"],
            "ERR COUNT must be an integer between 1 and 32",
        ),
        (
            &["faq", "COUNT", "x"],
            "ERR COUNT must be an integer between 1 and 32",
        ),
        (&["faq", "COUNT"], "ERR syntax error"),
        (&["faq", "LIMIT", "1"], "ERR syntax error"),
        (&["a{b}"], "ERR cache name must not contain '{' or '}'"),
        (&[""], "ERR cache name is empty"),
    ];
    for (args, want) in rows {
        let e = redis::cmd("QA.AUDIT")
            .arg(*args)
            .query::<redis::Value>(&mut con)
            .unwrap_err();
        assert_eq!(err_text(&e), *want, "{args:?}");
    }
    let e = redis::cmd("QA.AUDIT")
        .query::<redis::Value>(&mut con)
        .unwrap_err();
    assert!(err_text(&e).contains("wrong number of arguments"), "{e}");
}

#[test]
fn audit_failures_are_counted_apart_and_change_nothing() {
    let b = Backend::start(Duration::ZERO);
    let s = server(
        &b,
        &["--qa.semantic-audit-rate", "1", "--qa.backend-retries", "0"],
    );
    let mut con = s.conn();
    set(&mut con, &["faq", Q, A]);
    // The fresh answer fails: the client still has its answer, nothing is audited.
    // (The hit's embedding first, then the audit's call.)
    b.push([Reply::Answer, Reply::Status(500, "boom".into())]);
    assert_eq!(qa_get(&mut con, &["faq", PARAPHRASE]).unwrap(), A);
    wait_info(&mut con, "audit_errors", 1);
    // The comparison fails.
    b.push_judge([Reply::Raw("garbage".into())]);
    assert_eq!(qa_get(&mut con, &["faq", PARAPHRASE]).unwrap(), A);
    wait_info(&mut con, "audit_errors", 2);
    assert_eq!(info_field(&mut con, "audited"), 0);
    // The same text: agreed without asking.
    let calls = b.judge_requests().len();
    let q = "what is our refund policy";
    set(&mut con, &["same", PARAPHRASE, &fresh(q)]);
    assert_eq!(qa_get(&mut con, &["same", q]).unwrap(), fresh(q));
    wait_info(&mut con, "audited", 1);
    assert_eq!(info_field(&mut con, "audit_agreed"), 1);
    assert_eq!(b.judge_requests().len(), calls);
    // Rate 0: no audit.
    redis::cmd("CONFIG")
        .arg(&["SET", "qa.semantic-audit-rate", "0"])
        .query::<()>(&mut con)
        .unwrap();
    let started = info_field(&mut con, "audit_started");
    assert_eq!(qa_get(&mut con, &["faq", PARAPHRASE]).unwrap(), A);
    assert_eq!(info_field(&mut con, "audit_started"), started);
}

fn threshold(con: &mut redis::Connection, cache: &str) -> String {
    field(&stats(con, &[cache]), "semantic_threshold")
}

#[test]
fn calibration_raises_the_threshold_on_a_disagreement_and_lowers_it_while_audits_agree() {
    let b = Backend::start(Duration::ZERO);
    let s = server(
        &b,
        &[
            "--qa.semantic-audit-rate",
            "1",
            "--qa.semantic-threshold",
            "0.5",
            // Low enough that a few agreeing audits meet it (4 in a row: Wilson low 0.51).
            "--qa.semantic-target-precision",
            "0.5",
        ],
    );
    let mut con = s.conn();
    set(&mut con, &["faq", Q, A]);
    // No audit history: conservative.
    assert_eq!(threshold(&mut con, "faq"), "0.5400");
    b.push_judge([Reply::Says("no".into())]);
    assert_eq!(qa_get(&mut con, &["faq", PARAPHRASE]).unwrap(), A);
    wait_info(&mut con, "audited", 1);
    assert_eq!(threshold(&mut con, "faq"), "0.5600");
    assert_eq!(info_field(&mut con, "threshold_raised"), 1);
    // Agreeing audits bring it down, one step at most every 2 seconds.
    let mut audited = 1;
    let lowered = wait_until(Duration::from_secs(20), || {
        assert_eq!(qa_get(&mut con, &["faq", PARAPHRASE]).unwrap(), A);
        audited += 1;
        wait_info(&mut con, "audited", audited);
        threshold(&mut con, "faq") == "0.5500"
    });
    assert!(lowered, "{}", threshold(&mut con, "faq"));
    assert_eq!(info_field(&mut con, "threshold_lowered"), 1);
    assert!(audited >= 5, "{audited}");
    // Another cache has its own.
    assert_eq!(threshold(&mut con, "other"), "0.5400");
    // A new disagreement at the lowered level raises it again.
    b.push_judge([Reply::Says("no".into())]);
    assert_eq!(qa_get(&mut con, &["faq", PARAPHRASE]).unwrap(), A);
    wait_info(&mut con, "audited", audited + 1);
    assert_eq!(threshold(&mut con, "faq"), "0.5700");
}

#[test]
fn settings_are_validated_and_listed() {
    let s = Server::start(&[]);
    let mut con = s.conn();
    let got: Vec<String> = redis::cmd("CONFIG")
        .arg(&["GET", "qa.semantic-*"])
        .query(&mut con)
        .unwrap();
    for (name, default) in [
        ("qa.semantic-verify", "none"),
        ("qa.semantic-verify-threshold", "0.5"),
        ("qa.semantic-audit-rate", "0.02"),
        ("qa.semantic-target-precision", "0"),
    ] {
        let at = got
            .iter()
            .position(|x| x == name)
            .unwrap_or_else(|| panic!("{name}: {got:?}"));
        assert_eq!(got[at + 1], default, "{name}");
    }
    // (setting, value, accepted)
    let rows = [
        ("qa.semantic-verify", "llm", true),
        ("qa.semantic-verify", "rerank", true),
        ("qa.semantic-verify", "none", true),
        ("qa.semantic-verify", "maybe", false),
        ("qa.rerank-url", "http://127.0.0.1:1/v1", true),
        ("qa.rerank-url", "ftp://x", false),
        ("qa.rerank-model", "bge-reranker-v2-m3", true),
        ("qa.rerank-model", "", false),
        ("qa.semantic-audit-rate", "1", true),
        ("qa.semantic-audit-rate", "1.5", false),
        ("qa.semantic-audit-rate", "-0.1", false),
        ("qa.semantic-target-precision", "0.97", true),
        ("qa.semantic-target-precision", "97%", false),
        ("qa.semantic-verify-threshold", "nan", false),
    ];
    for (name, value, ok) in rows {
        let r = redis::cmd("CONFIG")
            .arg(&["SET", name, value])
            .query::<()>(&mut con);
        assert_eq!(r.is_ok(), ok, "{name} {value}: {r:?}");
    }
}

/// With no verifier the guards are strict: a question in other words is asked of the backend
/// (`guard_refused_wording`), one that differs only in filler words and a typo is served. With
/// a verifier the same reworded question reaches it and, accepted, is served.
#[test]
fn with_no_verifier_only_fillers_and_typos_may_differ_and_a_verifier_sees_the_rest() {
    const STORED: &str = "How do I delete my account?";
    const REWORDED: &str = "How can I permanently delete my account?";
    const TYPO: &str = "how can i delete the acount";
    let b = Backend::start(Duration::ZERO);
    // A low threshold: the mock's bag-of-words cosine of STORED and TYPO is 1/3.
    let s = server(&b, &["--qa.semantic-threshold", "0.3"]);
    let mut con = s.conn();
    set(&mut con, &["faq", STORED, A]);
    let m = meta(&mut con, &["faq", REWORDED]);
    assert_eq!(field(&m, "served"), "miss");
    assert_eq!(field(&m, "answer"), fresh(REWORDED));
    assert_eq!(info_field(&mut con, "guard_refused_wording"), 1);
    let m = meta(&mut con, &["faq", TYPO]);
    assert_eq!(field(&m, "served"), "semantic");
    assert_eq!(field(&m, "answer"), A);
    assert_eq!(field(&m, "matched"), STORED);
    // The miss stored REWORDED too; it is nearer to TYPO and was refused on the way.
    assert_eq!(info_field(&mut con, "guard_refused_wording"), 2);
    assert_eq!(info_field(&mut con, "verify_calls"), 0);

    let b = Backend::start(Duration::ZERO);
    let s = server(
        &b,
        &[
            "--qa.semantic-threshold",
            "0.4",
            "--qa.semantic-verify",
            "llm",
        ],
    );
    let mut con = s.conn();
    set(&mut con, &["faq", STORED, A]);
    let m = meta(&mut con, &["faq", REWORDED]);
    assert_eq!(field(&m, "served"), "semantic");
    assert_eq!(field(&m, "answer"), A);
    assert_eq!(info_field(&mut con, "guard_refused_wording"), 0);
    assert_eq!(info_field(&mut con, "verify_calls"), 1);
    assert_eq!(answer_calls(&b), 0);
}
