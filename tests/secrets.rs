//! Secrets and access control.
//!
//! The API key reaches the backend and nowhere else: after misses, hits, writes and
//! failures in every backend format (with backends that echo the key back), it is in none of
//! `CONFIG GET *`, `CONFIG REWRITE`'s file, `INFO everything`, `SLOWLOG`, `MONITOR`,
//! `CLIENT LIST`, the log (at `debug` level), any reply (answers and errors), any key's
//! value, or the RDB file.
//!
//! ACL key patterns apply to cache names: the README's two recipes (a read-only app user, an
//! admin of some caches) hold exactly, and no `QA.*` command reaches a cache outside them.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::backend::{answer_for, Backend, Reply};
use common::*;
use redis::Value;

const KEY: &str = "sk-proj-Zx9Q7wLmN3vB5tR8yK2pH4jD6fG1sA0c";

/// Everything `v` says, as lossy text (errors included).
fn flat(v: &Value) -> String {
    match v {
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        Value::SimpleString(s) => s.clone(),
        Value::Okay => "OK".into(),
        Value::Int(i) => i.to_string(),
        Value::Array(a) | Value::Set(a) => a.iter().map(flat).collect::<Vec<_>>().join("\n"),
        Value::Map(m) => m
            .iter()
            .map(|(k, v)| format!("{}\n{}", flat(k), flat(v)))
            .collect::<Vec<_>>()
            .join("\n"),
        Value::ServerError(e) => format!("{e:?}"),
        other => format!("{other:?}"),
    }
}

fn run(con: &mut redis::Connection, args: &[&str]) -> String {
    let mut c = redis::cmd(args[0]);
    for a in &args[1..] {
        c.arg(*a);
    }
    match c.query::<Value>(con) {
        Ok(v) => flat(&v),
        Err(e) => err_text(&e),
    }
}

/// A raw connection that ran `MONITOR`, collecting everything it is sent.
struct Monitor {
    out: Arc<Mutex<Vec<u8>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Monitor {
    fn start(port: u16) -> Monitor {
        let mut sock = TcpStream::connect(("127.0.0.1", port)).expect("monitor connect");
        sock.write_all(b"MONITOR\r\n").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let out = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (o, st) = (Arc::clone(&out), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 65536];
            while !st.load(Ordering::SeqCst) {
                match sock.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => o.lock().unwrap().extend_from_slice(&buf[..n]),
                    Err(_) => {}
                }
            }
        });
        let m = Monitor {
            out,
            stop,
            thread: Some(thread),
        };
        assert!(
            wait_until(Duration::from_secs(5), || m.text().starts_with("+OK")),
            "MONITOR did not start"
        );
        m
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.out.lock().unwrap()).into_owned()
    }

    fn finish(mut self) -> String {
        // Let the last commands arrive.
        std::thread::sleep(Duration::from_millis(200));
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.text()
    }
}

/// Every place a secret could surface without a client asking for the key itself.
fn everything_visible(s: &Server, con: &mut redis::Connection) -> Vec<(String, String)> {
    let mut places = Vec::new();
    for (name, args) in [
        ("CONFIG GET *", &["CONFIG", "GET", "*"][..]),
        ("INFO everything", &["INFO", "everything"]),
        ("SLOWLOG GET", &["SLOWLOG", "GET", "100000"]),
        ("CLIENT LIST", &["CLIENT", "LIST"]),
        ("MODULE LIST", &["MODULE", "LIST"]),
        ("QA.STATS", &["QA.STATS"]),
        ("ACL LOG", &["ACL", "LOG"]),
        ("LATENCY LATEST", &["LATENCY", "LATEST"]),
    ] {
        places.push((name.to_string(), run(con, args)));
    }
    for key in scan_keys(con, "*") {
        let dump: Vec<u8> = redis::cmd("DUMP").arg(&key).query(con).unwrap_or_default();
        let value = match run(con, &["TYPE", &key]).as_str() {
            "hash" => run(con, &["HGETALL", &key]),
            "string" => run(con, &["GET", &key]),
            other => format!("type {other}"),
        };
        places.push((
            format!("key {key}"),
            format!("{value}\n{}", String::from_utf8_lossy(&dump)),
        ));
    }
    let _: () = redis::cmd("SAVE").query(con).unwrap();
    let rdb = std::fs::read(s.dir.join("dump.rdb")).unwrap();
    places.push((
        "dump.rdb".into(),
        String::from_utf8_lossy(&rdb).into_owned(),
    ));
    places.push(("log".into(), s.log()));
    places
}

fn assert_nowhere(places: &[(String, String)], secret: &str) {
    for (name, text) in places {
        assert!(!text.contains(secret), "the API key is in {name}:\n{text}");
    }
}

#[test]
fn the_api_key_is_sent_to_the_backend_and_shown_nowhere() {
    let b = Backend::start(Duration::ZERO);
    let url = b.url();
    let s = Server::start_with_env(
        &[
            "--qa.backend-url",
            &url,
            "--loglevel",
            "debug",
            "--slowlog-log-slower-than",
            "0",
            "--slowlog-max-len",
            "100000",
            "--qa.backend-retries",
            "0",
            "--qa.breaker-failures",
            "0",
        ],
        &[("QA_API_KEY", KEY)],
    );
    let mut con = s.conn();
    let monitor = Monitor::start(s.port);
    let mut replies = Vec::new();

    // Misses, hits and every companion command, in the default (openai) format.
    for args in [
        &["QA.GET", "faq", "What is our refund policy?"][..],
        &["QA.GET", "faq", "what is our refund policy", "WITHMETA"],
        &["QA.GET", "faq", "q2", "MODEL", "m2", "SYSTEM", "Be brief."],
        &[
            "QA.GET",
            "faq",
            "q2",
            "MODEL",
            "m2",
            "SYSTEM",
            "Be brief.",
            "REFRESH",
        ],
        &["QA.SET", "faq", "preloaded", "an answer"],
        &["QA.PEEK", "faq", "preloaded"],
        &["QA.KEY", "faq", "preloaded"],
        &["QA.STATS", "faq"],
        &["QA.INVALIDATE", "other"],
    ] {
        replies.push(run(&mut con, args));
    }
    assert_eq!(
        replies[0],
        answer_for("What is our refund policy?", "gpt-4o-mini", "")
    );
    let bearer = format!("Bearer {KEY}");
    assert!(b
        .requests()
        .iter()
        .all(|r| r.authorization.as_deref() == Some(bearer.as_str())));

    // Backends that echo the key back, in every way an error reply could quote it.
    let padding = "x".repeat(190);
    let echoes = [
        Reply::Status(401, format!("Incorrect API key provided: {KEY}.")),
        Reply::Status(403, KEY.to_string()),
        Reply::Status(500, format!("line one\r\nauth: Bearer {KEY}\r\n")),
        // The key straddles the 200-byte excerpt limit: redacted before truncating.
        Reply::Status(400, format!("{padding} {KEY} tail")),
        Reply::Status(429, format!("{{\"error\":{{\"key\":\"{KEY}\"}}}}")),
        Reply::StatusWith(
            503,
            vec![("X-Echo-Key".into(), KEY.into())],
            format!("down ({KEY})"),
        ),
        Reply::Raw(format!("not json {KEY}")),
        Reply::Raw(format!(
            "{{\"choices\":[{{\"message\":{{\"content\":[\"{KEY}\"]}}}}]}}"
        )),
        Reply::Raw(format!("{{\"choices\":[{{\"message\":{{\"{KEY}\":1}}}}]}}")),
    ];
    for (i, reply) in echoes.into_iter().enumerate() {
        b.set_reply(reply);
        let r = run(&mut con, &["QA.GET", "faq", &format!("echo {i}")]);
        assert!(r.starts_with("ERR backend"), "{r}");
        replies.push(r);
    }
    assert_eq!(
        replies[replies.len() - 9],
        "ERR backend returned HTTP 401: Incorrect API key provided: [redacted]."
    );
    assert_eq!(
        replies[replies.len() - 8],
        "ERR backend returned HTTP 403: [redacted]"
    );
    b.set_reply(Reply::Answer);

    // The other formats send the key in their own headers.
    config_set(&mut con, "qa.backend-format", "anthropic");
    replies.push(run(&mut con, &["QA.GET", "faq", "anthropic question"]));
    let last = b.requests().pop().unwrap();
    assert_eq!(last.header("x-api-key"), Some(KEY));
    b.set_reply(Reply::Status(401, format!("invalid x-api-key {KEY}")));
    replies.push(run(&mut con, &["QA.GET", "faq", "anthropic failure"]));
    b.set_reply(Reply::Answer);
    config_set(&mut con, "qa.backend-format", "webhook");
    config_set(&mut con, "qa.backend-url", &b.hook_url());
    replies.push(run(&mut con, &["QA.GET", "faq", "webhook question"]));
    assert_eq!(
        b.requests().pop().unwrap().authorization.as_deref(),
        Some(bearer.as_str())
    );

    let mut places = everything_visible(&s, &mut con);
    let monitored = monitor.finish();
    assert!(monitored.contains("QA.GET"), "MONITOR saw nothing");
    places.push(("MONITOR".into(), monitored));
    places.push(("replies".into(), replies.join("\n")));
    assert_nowhere(&places, KEY);
    // Not even a recognisable part of it (a truncated excerpt could leak a prefix).
    assert_nowhere(&places, &KEY[..16]);
    assert_nowhere(&places, &KEY[KEY.len() - 16..]);
}

#[test]
fn the_key_file_stays_out_of_config_and_a_malformed_key_cannot_inject_headers() {
    let b = Backend::start(Duration::ZERO);
    let url = b.url();
    // A config file, so CONFIG REWRITE has somewhere to write.
    let dir = std::env::temp_dir().join(format!("qa-secrets-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key_file = dir.join("api-key");
    std::fs::write(&key_file, format!("  {KEY}\n")).unwrap();
    let conf = dir.join("redis.conf");
    std::fs::write(
        &conf,
        format!(
            "loadmodule {}\nqa.backend-url {url}\nqa.api-key-file {}\nqa.backend-retries 0\n",
            module_path().display(),
            key_file.display()
        ),
    )
    .unwrap();
    let s = Server::start_with_conf(&conf, &["--loglevel", "debug"]);
    let mut con = s.conn();
    let mut replies = vec![run(&mut con, &["QA.GET", "faq", "q"])];
    assert_eq!(
        b.requests()[0].authorization.as_deref(),
        Some(format!("Bearer {KEY}").as_str()),
        "the key file is read and trimmed"
    );
    let _: () = redis::cmd("CONFIG").arg("REWRITE").query(&mut con).unwrap();
    let rewritten = std::fs::read_to_string(&conf).unwrap();
    assert!(rewritten.contains("qa.api-key-file"), "{rewritten}");

    // A key with a line break in it must not become a second header (or a second request).
    let injected = "sk-bad\r\nX-Injected: yes";
    std::fs::write(&key_file, injected).unwrap();
    replies.push(run(&mut con, &["QA.GET", "faq", "injection"]));
    assert!(replies[1].starts_with("ERR "), "{}", replies[1]);
    assert!(
        b.requests()
            .iter()
            .all(|r| r.header("x-injected").is_none()),
        "{:?}",
        b.requests()
    );
    // An unreadable file names the problem, not the contents or the path's secrets.
    std::fs::remove_file(&key_file).unwrap();
    replies.push(run(&mut con, &["QA.GET", "faq", "missing"]));
    assert_eq!(
        replies[2],
        "ERR cannot read qa.api-key-file: entity not found"
    );

    let mut places = everything_visible(&s, &mut con);
    places.push(("CONFIG REWRITE".into(), rewritten));
    places.push(("replies".into(), replies.join("\n")));
    assert_nowhere(&places, KEY);
    assert_nowhere(&places, "sk-bad");
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A server that answers every connection with `reply` (not HTTP) and closes it.
fn junk_server(reply: &'static [u8]) -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for mut c in l.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = c.set_read_timeout(Some(Duration::from_millis(200)));
            let _ = c.read(&mut buf);
            let _ = c.write_all(reply);
        }
    });
    format!("http://{addr}/v1")
}

#[test]
fn without_a_key_error_reasons_are_not_garbled() {
    // No API key: the redaction of a protocol error must leave the text alone.
    let url = junk_server(b"SSH-2.0-OpenSSH_9.2\r\n\r\n");
    let s = Server::start(&["--qa.backend-url", &url, "--qa.backend-retries", "0"]);
    let mut con = s.conn();
    let e = run(&mut con, &["QA.GET", "faq", "q"]);
    assert!(e.starts_with("ERR backend unreachable: "), "{e}");
    assert!(!e.contains("[redacted]"), "{e}");
    assert!(e.contains("invalid HTTP version"), "{e}");
}

/// Redis 8.0.2 aborted here while entries were written from a worker thread holding the
/// module lock (its main-thread assertion in client memory accounting, redis/redis#14152):
/// entries are now written on the main thread (`src/mainthread.rs`).
#[test]
fn a_monitor_or_keyspace_subscriber_survives_a_miss() {
    let b = Backend::start(Duration::ZERO);
    let url = b.url();
    let mut s = Server::start(&["--qa.backend-url", &url, "--notify-keyspace-events", "KEA"]);
    // A MONITOR client, then a keyspace-event subscriber, each while a miss is stored.
    let monitor = Monitor::start(s.port);
    let mut con = s.conn();
    let r = run(&mut con, &["QA.GET", "faq", "seen by MONITOR"]);
    assert_eq!(r, answer_for("seen by MONITOR", "gpt-4o-mini", ""));
    assert!(s.running(), "the server died with a MONITOR client");
    monitor.finish();
    let mut sub = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    sub.write_all(b"PSUBSCRIBE __key*__:*\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let r = run(&mut con, &["QA.GET", "faq", "seen by a subscriber"]);
    assert_eq!(r, answer_for("seen by a subscriber", "gpt-4o-mini", ""));
    assert!(s.running(), "the server died with a keyspace subscriber");
}

// ---- Access control ----

fn acl_user(admin: &mut redis::Connection, rules: &[&str]) {
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg(rules)
        .query(admin)
        .unwrap_or_else(|e| panic!("ACL SETUSER {rules:?}: {e}"));
}

fn login(s: &Server, user: &str) -> redis::Connection {
    let mut c = s.conn();
    let _: () = redis::cmd("AUTH")
        .arg(user)
        .arg("pw")
        .query(&mut c)
        .unwrap();
    c
}

/// The reply of `args` as text, or the error code alone (`NOPERM`) for ACL refusals.
fn outcome(con: &mut redis::Connection, args: &[&str]) -> String {
    let r = run(con, args);
    if r.starts_with("NOPERM") {
        "NOPERM".into()
    } else {
        r
    }
}

/// Every QA command on one cache, with a question that has an entry in it.
fn every_command(cache: &str) -> Vec<Vec<String>> {
    [
        &["QA.GET", cache, "q"][..],
        &["QA.GET", cache, "q", "REFRESH"],
        &["QA.GET", cache, "q", "WITHMETA"],
        &["QA.PEEK", cache, "q"],
        &["QA.KEY", cache, "q"],
        &["QA.SET", cache, "q", "overwritten"],
        &["QA.DEL", cache, "q"],
        &["QA.INVALIDATE", cache],
    ]
    .iter()
    .map(|a| a.iter().map(|s| s.to_string()).collect())
    .collect()
}

#[test]
fn acl_recipes_confine_users_to_their_caches() {
    let b = Backend::start(Duration::ZERO);
    let url = b.url();
    let s = Server::start(&["--qa.backend-url", &url]);
    let mut admin = s.conn();
    for cache in ["public", "public:docs", "secret"] {
        run(
            &mut admin,
            &["QA.SET", cache, "q", &format!("{cache} answer")],
        );
    }
    // The README's recipes.
    acl_user(
        &mut admin,
        &[
            "app",
            "on",
            ">pw",
            "+qa.get",
            "+qa.peek",
            "+qa.key",
            "%R~public*",
        ],
    );
    acl_user(
        &mut admin,
        &[
            "ops",
            "on",
            ">pw",
            "+qa.get",
            "+qa.peek",
            "+qa.key",
            "+qa.set",
            "+qa.del",
            "+qa.invalidate",
            "+qa.stats",
            "~public*",
        ],
    );
    let mut app = login(&s, "app");
    let mut ops = login(&s, "ops");
    let calls_before = b.calls();

    // Nobody but the admin reaches `secret`, through any command.
    for args in every_command("secret") {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        assert_eq!(outcome(&mut app, &args), "NOPERM", "app {args:?}");
        assert_eq!(outcome(&mut ops, &args), "NOPERM", "ops {args:?}");
    }
    // Nor its entry keys directly (the key pattern is about cache names, `qa:{...}` keys
    // do not match it), nor any other command.
    let secret_key = scan_keys(&mut admin, "qa:{secret}:*");
    assert_eq!(secret_key.len(), 1);
    for args in [
        &["HGETALL", secret_key[0].as_str()][..],
        &["HGETALL", "qa:{public}:x"],
        &["KEYS", "*"],
        &["CONFIG", "GET", "qa.*"],
        &["EVAL", "return redis.call('QA.PEEK', 'secret', 'q')", "0"],
    ] {
        assert_eq!(outcome(&mut app, args), "NOPERM", "app {args:?}");
        assert_eq!(outcome(&mut ops, args), "NOPERM", "ops {args:?}");
    }
    assert_eq!(
        b.calls(),
        calls_before,
        "a refused command called the backend"
    );
    assert_eq!(
        run(&mut admin, &["QA.PEEK", "secret", "q"]),
        "secret answer",
        "a refused command changed the entry"
    );
    // The generation the admin's first write made, untouched by the refused commands.
    assert_eq!(run(&mut admin, &["GET", "qa:{secret}:gen"]).len(), 32);

    // The app user reads its caches (a miss is stored by the module, not by the user)...
    assert_eq!(
        outcome(&mut app, &["QA.PEEK", "public", "q"]),
        "public answer"
    );
    assert_eq!(
        outcome(&mut app, &["QA.GET", "public:docs", "q"]),
        "public:docs answer"
    );
    assert_eq!(
        outcome(&mut app, &["QA.GET", "public", "new"]),
        answer_for("new", "gpt-4o-mini", "")
    );
    assert_eq!(
        run(&mut admin, &["QA.PEEK", "public", "new"]),
        answer_for("new", "gpt-4o-mini", "")
    );
    assert!(outcome(&mut app, &["QA.KEY", "public", "q"]).contains("qa:{public}:"));
    // ...but writes none of them, and has no stats.
    for args in [
        &["QA.SET", "public", "q", "x"][..],
        &["QA.DEL", "public", "q"],
        &["QA.INVALIDATE", "public"],
        &["QA.STATS"],
        &["QA.STATS", "public"],
    ] {
        assert_eq!(outcome(&mut app, args), "NOPERM", "app {args:?}");
    }
    assert_eq!(
        run(&mut admin, &["QA.PEEK", "public", "q"]),
        "public answer"
    );

    // The admin of public* manages them.
    assert_eq!(outcome(&mut ops, &["QA.SET", "public", "q", "v2"]), "OK");
    assert_eq!(outcome(&mut ops, &["QA.PEEK", "public", "q"]), "v2");
    assert_eq!(outcome(&mut ops, &["QA.DEL", "public", "q"]), "1");
    assert_eq!(
        outcome(&mut ops, &["QA.INVALIDATE", "public:docs"]).len(),
        32
    );
    assert_eq!(outcome(&mut ops, &["QA.PEEK", "public:docs", "q"]), "nil");
    // QA.STATS names no key: its figures (counts, not entries) are readable for any cache
    // by whoever may run it. docs/security.md says so.
    assert!(outcome(&mut ops, &["QA.STATS", "secret"]).starts_with("hits"));
}
