//! Each wire format against a local server speaking it, with the exact HTTP exchange; and
//! HTTPS with a private CA made in the test.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::backend::{answer_for, Backend, Recorded, Reply};
use common::*;

fn entry(con: &mut redis::Connection) -> HashMap<String, String> {
    let keys: Vec<String> = entry_keys(con);
    assert_eq!(keys.len(), 1, "{keys:?}");
    entry_fields(con, &keys[0])
}

fn ttl(con: &mut redis::Connection) -> i64 {
    let keys: Vec<String> = entry_keys(con);
    redis::cmd("TTL").arg(&keys[0]).query(con).unwrap()
}

/// The request's headers that matter, in a stable order (ureq adds others, like Host).
fn headers(r: &Recorded, names: &[&str]) -> Vec<(String, Option<String>)> {
    names
        .iter()
        .map(|n| (n.to_string(), r.header(n).map(str::to_string)))
        .collect()
}

fn only_request(b: &Backend) -> Recorded {
    let reqs = b.requests();
    assert_eq!(reqs.len(), 1, "{reqs:?}");
    reqs.into_iter().next().unwrap()
}

fn start(url: &str, extra: &[&str]) -> Server {
    let mut args = vec!["--qa.backend-url", url];
    args.extend_from_slice(extra);
    Server::start_with_env(&args, &[("QA_API_KEY", "sk-test-123")])
}

#[test]
fn openai_format_exchange() {
    let b = Backend::start(Duration::ZERO);
    let s = start(&b.url(), &[]);
    let mut con = s.conn();
    let got = qa_get(
        &mut con,
        &[
            "faq",
            "What is RAG?",
            "SYSTEM",
            "Be brief.",
            "MODEL",
            "gpt-4o",
        ],
    )
    .unwrap();
    assert_eq!(got, answer_for("What is RAG?", "gpt-4o", "Be brief."));
    let r = only_request(&b);
    assert_eq!(
        (r.method.as_str(), r.path.as_str()),
        ("POST", "/v1/chat/completions")
    );
    assert_eq!(
        headers(&r, &["content-type", "authorization", "x-api-key"]),
        vec![
            ("content-type".into(), Some("application/json".into())),
            ("authorization".into(), Some("Bearer sk-test-123".into())),
            ("x-api-key".into(), None),
        ]
    );
    assert_eq!(
        r.body,
        serde_json::json!({"model": "gpt-4o", "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "What is RAG?"}]})
    );
    let e = entry(&mut con);
    assert_eq!(e["answer"], got);
    // The test server counts len/4+1 tokens: usage is kept with the entry.
    assert_eq!(e["tokens_in"], "4");
    assert_eq!(e["tokens_out"], (got.len() / 4 + 1).to_string());
}

#[test]
fn anthropic_format_exchange() {
    let b = Backend::start(Duration::ZERO);
    let s = start(
        &b.url(),
        &[
            "--qa.backend-format",
            "anthropic",
            "--qa.max-tokens",
            "300",
            "--qa.model",
            "claude-3-5-haiku-latest",
        ],
    );
    let mut con = s.conn();
    let got = qa_get(&mut con, &["faq", "What is RAG?", "SYSTEM", "Be brief."]).unwrap();
    // The server splits its answer over two text blocks: they are joined.
    assert_eq!(
        got,
        answer_for("What is RAG?", "claude-3-5-haiku-latest", "Be brief.")
    );
    let r = only_request(&b);
    assert_eq!(
        (r.method.as_str(), r.path.as_str()),
        ("POST", "/v1/messages")
    );
    assert_eq!(
        headers(
            &r,
            &[
                "content-type",
                "x-api-key",
                "anthropic-version",
                "authorization"
            ]
        ),
        vec![
            ("content-type".into(), Some("application/json".into())),
            ("x-api-key".into(), Some("sk-test-123".into())),
            ("anthropic-version".into(), Some("2023-06-01".into())),
            ("authorization".into(), None),
        ]
    );
    assert_eq!(
        r.body,
        serde_json::json!({"model": "claude-3-5-haiku-latest", "max_tokens": 300,
                           "system": "Be brief.",
                           "messages": [{"role": "user", "content": "What is RAG?"}]})
    );
    let e = entry(&mut con);
    assert_eq!(e["answer"], got);
    assert_eq!(e["tokens_in"], "4");
    assert_eq!(e["tokens_out"], (got.len() / 4 + 1).to_string());
    let fmt: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("qa.backend-format")
        .query(&mut con)
        .unwrap();
    assert_eq!(fmt, vec!["qa.backend-format", "anthropic"]);
}

#[test]
fn webhook_format_exchange_ttl_and_no_store() {
    let b = Backend::start(Duration::ZERO);
    let s = start(&b.hook_url(), &["--qa.backend-format", "webhook"]);
    let mut con = s.conn();
    let got = qa_get(&mut con, &["support:acme", "  What is our REFUND policy?"]).unwrap();
    assert_eq!(
        got,
        answer_for("  What is our REFUND policy?", "gpt-4o-mini", "")
    );
    let r = only_request(&b);
    assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", "/hook"));
    assert_eq!(
        headers(&r, &["content-type", "authorization"]),
        vec![
            ("content-type".into(), Some("application/json".into())),
            ("authorization".into(), Some("Bearer sk-test-123".into())),
        ]
    );
    assert_eq!(
        r.body,
        serde_json::json!({"cache": "support:acme", "question": "  What is our REFUND policy?",
                           "normalized": "what is our refund policy", "model": "gpt-4o-mini",
                           "system": ""})
    );
    assert_eq!(ttl(&mut con), 3600);
    // Unknown counts are stored as 0 (a hit saves no known tokens).
    let e = entry(&mut con);
    assert_eq!(
        (e["tokens_in"].as_str(), e["tokens_out"].as_str()),
        ("0", "0")
    );

    // "ttl" replaces the asker's TTL; token counts are kept.
    let _: () = redis::cmd("FLUSHALL").query(&mut con).unwrap();
    b.set_reply(Reply::Raw(
        r#"{"answer": "30 days.", "ttl": 60, "tokens_in": 812, "tokens_out": 9}"#.into(),
    ));
    assert_eq!(
        qa_get(&mut con, &["faq", "refunds", "TTL", "9000"]).unwrap(),
        "30 days."
    );
    let t = ttl(&mut con);
    assert!((55..=60).contains(&t), "{t}");
    let e = entry(&mut con);
    assert_eq!(
        (e["tokens_in"].as_str(), e["tokens_out"].as_str()),
        ("812", "9")
    );

    // "cache": false answers without storing: the next ask calls again.
    let _: () = redis::cmd("FLUSHALL").query(&mut con).unwrap();
    b.set_reply(Reply::Raw(
        r#"{"answer": "It is 14:02.", "cache": false}"#.into(),
    ));
    let calls = b.calls();
    for _ in 0..2 {
        assert_eq!(
            qa_get(&mut con, &["faq", "what time is it"]).unwrap(),
            "It is 14:02."
        );
    }
    assert_eq!(b.calls(), calls + 2);
    assert_eq!(dbsize(&mut con), 0);
    assert_eq!(info_field(&mut con, "not_stored"), 2);

    // A reply without an answer is an error, and nothing is stored.
    b.set_reply(Reply::Raw(r#"{"sources": []}"#.into()));
    let e = qa_get(&mut con, &["faq", "no answer"]).unwrap_err();
    assert_eq!(err_text(&e), "ERR backend reply has no answer");
    assert_eq!(dbsize(&mut con), 0);
}

#[test]
fn backend_format_accepts_only_known_formats() {
    let s = Server::start(&[]);
    let mut con = s.conn();
    let e = redis::cmd("CONFIG")
        .arg("SET")
        .arg("qa.backend-format")
        .arg("grpc")
        .query::<()>(&mut con)
        .unwrap_err();
    assert!(err_text(&e).starts_with("ERR CONFIG SET failed"), "{e}");
    for f in ["anthropic", "webhook", "openai"] {
        config_set(&mut con, "qa.backend-format", f);
    }
}

#[test]
fn https_with_a_private_ca() {
    let pki = tls::make_pki("redis-qa test CA");
    let b = Backend::start_tls(Duration::ZERO, pki.server.clone());
    let s = start(&b.url(), &[]);
    let mut con = s.conn();

    // The system's roots do not know the test CA.
    let e = err_text(&qa_get(&mut con, &["faq", "q"]).unwrap_err());
    assert!(e.starts_with("ERR backend unreachable: "), "{e}");
    assert!(e.to_lowercase().contains("certificate"), "{e}");
    assert_eq!(b.calls(), 0);

    let missing = s.dir.join("no-such-ca.pem");
    config_set(&mut con, "qa.backend-ca-file", missing.to_str().unwrap());
    assert_eq!(
        err_text(&qa_get(&mut con, &["faq", "q"]).unwrap_err()),
        "ERR cannot read qa.backend-ca-file: entity not found"
    );
    let not_pem = s.dir.join("not-pem.txt");
    std::fs::write(&not_pem, "hello").unwrap();
    config_set(&mut con, "qa.backend-ca-file", not_pem.to_str().unwrap());
    assert_eq!(
        err_text(&qa_get(&mut con, &["faq", "q"]).unwrap_err()),
        "ERR cannot read qa.backend-ca-file: no PEM certificate in it"
    );

    let ca = s.dir.join("ca.pem");
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    config_set(&mut con, "qa.backend-ca-file", ca.to_str().unwrap());
    assert_eq!(
        qa_get(&mut con, &["faq", "q"]).unwrap(),
        answer_for("q", "gpt-4o-mini", "")
    );
    let r = only_request(&b);
    assert_eq!(r.authorization.as_deref(), Some("Bearer sk-test-123"));
    assert_eq!(dbsize(&mut con), 1);

    // Another CA's file replaces it: this server's certificate is no longer trusted.
    let other = tls::make_pki("another CA");
    std::fs::write(&ca, &other.ca_pem).unwrap();
    // A new modification time, even on filesystems with coarse timestamps.
    let later = std::time::SystemTime::now() + Duration::from_secs(5);
    std::fs::File::options()
        .write(true)
        .open(&ca)
        .and_then(|f| f.set_modified(later))
        .unwrap();
    let e = err_text(&qa_get(&mut con, &["faq", "q2"]).unwrap_err());
    assert!(e.starts_with("ERR backend unreachable: "), "{e}");
}
