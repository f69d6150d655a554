//! The API key reaches the backend and nowhere else: not CONFIG GET, not INFO, not error
//! replies, not entries.

mod common;

use std::time::Duration;

use common::backend::{Backend, Reply};
use common::*;

const KEY: &str = "sk-test-0123456789abcdef";

fn everything_visible(con: &mut redis::Connection) -> String {
    let cfg: Vec<String> = redis::cmd("CONFIG").arg("GET").arg("*").query(con).unwrap();
    let info: String = redis::cmd("INFO").arg("everything").query(con).unwrap();
    let mut text = cfg.join("\n") + &info;
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(con).unwrap();
    for k in keys {
        let v: Vec<u8> = redis::cmd("DUMP").arg(&k).query(con).unwrap();
        text.push_str(&String::from_utf8_lossy(&v));
    }
    text
}

#[test]
fn key_from_the_environment_is_sent_as_bearer_and_never_shown() {
    let b = Backend::start(Duration::ZERO);
    let url = b.url();
    let s = Server::start_with_env(&["--qa.backend-url", &url], &[("QA_API_KEY", KEY)]);
    let mut con = s.conn();
    qa_get(&mut con, &["faq", "q"]).unwrap();
    assert_eq!(
        b.requests()[0].authorization.as_deref(),
        Some(format!("Bearer {KEY}").as_str())
    );

    // A backend that echoes the key in its error body: the reply quotes it redacted.
    b.set_reply(Reply::Status(
        401,
        format!("Incorrect API key provided: {KEY}."),
    ));
    let e = err_text(&qa_get(&mut con, &["faq", "other"]).unwrap_err());
    assert_eq!(
        e,
        "ERR backend returned HTTP 401: Incorrect API key provided: [redacted]."
    );

    let visible = everything_visible(&mut con);
    assert!(!visible.contains(KEY));
    let log = std::fs::read_to_string(s.dir.join("redis.log")).unwrap();
    assert!(!log.contains(KEY));
}

#[test]
fn key_file_wins_over_the_environment_and_a_missing_file_is_an_error() {
    let b = Backend::start(Duration::ZERO);
    let url = b.url();
    let s = Server::start_with_env(&["--qa.backend-url", &url], &[("QA_API_KEY", "sk-env")]);
    let mut con = s.conn();
    let file = s.dir.join("api-key");
    std::fs::write(&file, format!("{KEY}\n")).unwrap();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("qa.api-key-file")
        .arg(file.to_str().unwrap())
        .query(&mut con)
        .unwrap();
    qa_get(&mut con, &["faq", "q"]).unwrap();
    assert_eq!(
        b.requests()[0].authorization.as_deref(),
        Some(format!("Bearer {KEY}").as_str())
    );
    assert!(!everything_visible(&mut con).contains(KEY));

    std::fs::remove_file(&file).unwrap();
    let e = err_text(&qa_get(&mut con, &["faq", "other"]).unwrap_err());
    assert_eq!(e, "ERR cannot read qa.api-key-file: entity not found");
    assert_eq!(b.calls(), 1);
}

#[test]
fn no_key_means_no_authorization_header() {
    let b = Backend::start(Duration::ZERO);
    let url = b.url();
    let s = Server::start(&["--qa.backend-url", &url]);
    let mut con = s.conn();
    qa_get(&mut con, &["faq", "q"]).unwrap();
    assert_eq!(b.requests()[0].authorization, None);
}
