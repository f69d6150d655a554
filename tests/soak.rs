//! Soak: several clients send a random mix of valid and invalid commands for a bounded time
//! while the backend misbehaves at random (errors, garbage, resets, hangs, oversized and
//! truncated replies, delays). Afterwards: the server never crashed or panicked, every
//! request got a reply (no I/O error, no timeout, connections in step), every invalid
//! command got its exact error, and once the entries are deleted `used_memory` is back at
//! the baseline measured after a warm-up (nothing leaked per request).
//!
//! `soak_short` runs in `make test` (~17 s). `make fuzz` ends with `soak_long` (ignored;
//! `QA_SOAK_SECS`, default 120). `QA_SOAK_SEED` replays a run's choices.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::backend::{Backend, Reply};
use common::*;
use redis::Value;

struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len())]
    }
}

const CACHES: &[&str] = &["faq", "support:acme", "docs", "tenant:7"];

/// One command and what its reply must be.
enum Expect {
    /// Any reply that is not an error.
    Ok,
    /// An answer, or a backend failure (the backend is flaky).
    AnswerOrBackendError,
    /// Exactly this error.
    Error(&'static str),
    /// Any reply at all, error or not (random bytes).
    Anything,
}

/// Invalid commands and their exact errors.
#[rustfmt::skip]
const INVALID: &[(&[&[u8]], &str)] = &[
        (
            &[b"QA.GET", b"faq", b"q", b"TTL", b"0"],
            "ERR TTL must be an integer between 1 and 315360000 seconds",
        ),
        (
            &[b"QA.GET", b"faq", b"q", b"BOGUS"],
            "ERR unknown option (expected TTL, STALE, MODEL, SYSTEM, CONTEXT, SOURCES, REFRESH, WITHMETA, SEMANTIC or EXACT)",
        ),
        (&[b"QA.GET", b"faq", b"?!"], "ERR question is empty"),
        (&[b"QA.GET", b"a{b}", b"q"], "ERR cache name must not contain '{' or '}'"),
        (&[b"QA.PEEK", b"faq", b"\xff"], "ERR question is not valid UTF-8"),
        (&[b"QA.SET", b"faq", b"q", b""], "ERR answer is empty"),
        (&[b"QA.DEL", b"", b"q"], "ERR cache name is empty"),
        (
            &[b"QA.KEY", b"faq", b"q", b"MODEL", b"a\nb"],
            "ERR MODEL must be 1 to 256 bytes of UTF-8 without control characters",
        ),
        (&[b"QA.STATS", b"a", b"b"], "ERR QA.STATS takes at most one cache name"),
        (
            &[b"QA.GET", b"faq", b"q", b"REFRESH", b"REFRESH"],
            "ERR option given twice",
        ),
];

fn command(rng: &mut Rng) -> (Vec<Vec<u8>>, Expect) {
    let cache = rng.pick(CACHES).as_bytes().to_vec();
    let q = format!("question {}?", rng.below(60)).into_bytes();
    let b = |s: &str| s.as_bytes().to_vec();
    match rng.below(20) {
        0..=6 => {
            let mut args = vec![b("QA.GET"), cache, q];
            if rng.below(4) == 0 {
                args.extend([b("TTL"), (1 + rng.below(3)).to_string().into_bytes()]);
            }
            if rng.below(6) == 0 {
                args.extend([b("MODEL"), b("m2")]);
            }
            if rng.below(8) == 0 {
                args.push(b("REFRESH"));
            }
            if rng.below(5) == 0 {
                args.push(b("WITHMETA"));
            }
            (args, Expect::AnswerOrBackendError)
        }
        7 | 8 => (vec![b("QA.PEEK"), cache, q], Expect::Ok),
        9 => (vec![b("QA.KEY"), cache, q], Expect::Ok),
        10 => {
            let answer = vec![b'a'; 1 + rng.below(2000)];
            let ttl = (1 + rng.below(5)).to_string().into_bytes();
            (
                vec![b("QA.SET"), cache, q, answer, b("TTL"), ttl],
                Expect::Ok,
            )
        }
        11 => (vec![b("QA.DEL"), cache, q], Expect::Ok),
        12 => {
            if rng.below(10) == 0 {
                (vec![b("QA.INVALIDATE"), cache], Expect::Ok)
            } else {
                (vec![b("QA.STATS"), cache], Expect::Ok)
            }
        }
        13..=16 => {
            let (args, err) = *rng.pick(INVALID);
            (
                args.iter().map(|a| a.to_vec()).collect(),
                Expect::Error(err),
            )
        }
        _ => {
            // Random bytes after a random command name, with a valid cache name most of
            // the time (so parsing gets past it).
            let name = *rng.pick(&["QA.GET", "QA.PEEK", "QA.KEY", "QA.SET", "QA.DEL"]);
            let mut args = vec![b(name), if rng.below(4) == 0 { b("x}") } else { cache }];
            for _ in 0..rng.below(6) {
                let len = rng.below(12);
                args.push((0..len).map(|_| rng.below(256) as u8).collect());
            }
            // Keep QA.GET misses of random text rare: they would pile up in the queue.
            if name == "QA.GET" {
                args.push(b("TTL"));
                args.push(b("0"));
            }
            (args, Expect::Anything)
        }
    }
}

fn backend_error(e: &str) -> bool {
    [
        "ERR backend ",
        "ERR too many misses waiting for the backend",
    ]
    .iter()
    .any(|p| e.starts_with(p))
}

/// Replaces the backend's behaviour every few milliseconds, at random.
fn flaky(b: &Backend, rng: &mut Rng) {
    let reply = match rng.below(14) {
        0..=5 => Reply::Answer,
        6 => Reply::Truncated,
        7 => Reply::Status(500, "boom".into()),
        8 => Reply::StatusWith(429, vec![("Retry-After".into(), "0".into())], "slow".into()),
        9 => Reply::Status(503, String::new()),
        10 => Reply::Raw("<html>".into()),
        11 => Reply::Reset,
        12 => Reply::Oversized(1_100_000),
        _ => Reply::Hang,
    };
    b.set_reply(reply);
    b.set_delay(Duration::from_millis(rng.below(40) as u64));
}

fn used_memory(con: &mut redis::Connection) -> u64 {
    info_num(con, "memory", "used_memory")
}

/// Deletes every key (the entries and generation keys) with plain DEL, as a user would.
fn delete_everything(con: &mut redis::Connection) {
    for k in scan_keys(con, "*") {
        let _: i64 = redis::cmd("DEL").arg(&k).query(con).unwrap();
    }
    assert_eq!(dbsize(con), 0);
}

struct Totals {
    requests: AtomicU64,
    errors: AtomicU64,
}

/// Runs `clients` clients for `secs` seconds; returns the number of requests made.
fn phase(s: &Server, b: &Backend, clients: usize, secs: u64, seed: u64) -> (u64, u64) {
    let stop = Arc::new(AtomicBool::new(false));
    let totals = Arc::new(Totals {
        requests: AtomicU64::new(0),
        errors: AtomicU64::new(0),
    });
    let chaos = {
        let (b, stop) = (b.clone(), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut rng = Rng::new(seed);
            while !stop.load(Ordering::SeqCst) {
                flaky(&b, &mut rng);
                std::thread::sleep(Duration::from_millis(15));
            }
            b.set_reply(Reply::Answer);
            b.set_delay(Duration::ZERO);
        })
    };
    let handles: Vec<_> = (0..clients)
        .map(|i| {
            let url = s.url();
            let (stop, totals) = (Arc::clone(&stop), Arc::clone(&totals));
            std::thread::spawn(move || {
                let client = redis::Client::open(url.as_str()).unwrap();
                let mut con = client.get_connection().unwrap();
                // Every reply comes within qa.timeout-ms (plus margin): no request is lost.
                con.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                let mut rng = Rng::new(seed.wrapping_add(1 + i as u64).wrapping_mul(7919));
                while !stop.load(Ordering::SeqCst) {
                    // Now and then a client hangs up in the middle of a miss.
                    if rng.below(200) == 0 {
                        let mut gone = client.get_connection().unwrap();
                        let q = format!("abandoned {}", rng.below(1000));
                        let packed = redis::cmd("QA.GET").arg("faq").arg(&q).get_packed_command();
                        let _ = gone.send_packed_command(&packed);
                        drop(gone);
                    }
                    let (args, expect) = command(&mut rng);
                    let mut c = redis::cmd(std::str::from_utf8(&args[0]).unwrap());
                    for a in &args[1..] {
                        c.arg(&a[..]);
                    }
                    let r: redis::RedisResult<Value> = c.query(&mut con);
                    totals.requests.fetch_add(1, Ordering::Relaxed);
                    let shown = || {
                        args.iter()
                            .map(|a| String::from_utf8_lossy(a).into_owned())
                            .collect::<Vec<_>>()
                    };
                    match (&r, &expect) {
                        (Err(e), _) if e.is_io_error() || e.is_timeout() => {
                            panic!("no reply to {:?}: {e}", shown())
                        }
                        (Err(e), _) if err_text(e).contains("internal error") => {
                            panic!("{:?}: {e}", shown())
                        }
                        (Ok(_), Expect::Ok | Expect::AnswerOrBackendError | Expect::Anything) => {}
                        (Err(e), Expect::AnswerOrBackendError) => {
                            totals.errors.fetch_add(1, Ordering::Relaxed);
                            assert!(backend_error(&err_text(e)), "{:?}: {e}", shown());
                        }
                        (Err(e), Expect::Error(want)) => {
                            assert_eq!(err_text(e), *want, "{:?}", shown())
                        }
                        (Err(_), Expect::Anything) => {}
                        (r, _) => panic!("{:?}: unexpected {r:?}", shown()),
                    }
                }
                // The connection is still in step.
                let pong: String = redis::cmd("PING").query(&mut con).unwrap();
                assert_eq!(pong, "PONG");
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(secs));
    stop.store(true, Ordering::SeqCst);
    let mut failed = None;
    for h in handles {
        if let Err(e) = h.join() {
            failed.get_or_insert(e);
        }
    }
    chaos.join().unwrap();
    if let Some(e) = failed {
        std::panic::resume_unwind(e);
    }
    (
        totals.requests.load(Ordering::Relaxed),
        totals.errors.load(Ordering::Relaxed),
    )
}

fn soak(secs: u64) {
    let seed: u64 = std::env::var("QA_SOAK_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("soak: QA_SOAK_SEED={seed}");
    let b = Backend::start(Duration::ZERO);
    let url = b.url();
    let mut s = Server::start(&[
        "--qa.backend-url",
        &url,
        "--qa.timeout-ms",
        "800",
        "--qa.backend-retries",
        "1",
        "--qa.breaker-failures",
        "8",
        "--qa.breaker-cooldown-ms",
        "200",
        "--qa.max-inflight",
        "6",
        "--qa.max-queue",
        "40",
        "--qa.stale-ttl",
        "1",
    ]);
    let mut con = s.conn();
    let settle = |con: &mut redis::Connection| {
        assert!(
            wait_until(Duration::from_secs(15), || {
                info_field(con, "inflight") == 0
                    && info_field(con, "queued") == 0
                    && info_field(con, "waiting_clients") == 0
            }),
            "misses still running"
        );
    };

    // Warm-up: the same workload briefly, so lazily made things (worker threads, the HTTP
    // agent and its pool, stats slots, the generation mirror) exist before the baseline.
    let clients = 6;
    phase(&s, &b, clients, 3, seed ^ 0xabcdef);
    settle(&mut con);
    delete_everything(&mut con);
    std::thread::sleep(Duration::from_millis(300));
    let baseline = used_memory(&mut con);

    let (requests, errors) = phase(&s, &b, clients, secs, seed);
    settle(&mut con);
    let entries = dbsize(&mut con);
    let peak = used_memory(&mut con);
    delete_everything(&mut con);
    // Deleted keys' tables shrink in the background (serverCron): poll for a while.
    const SLACK: u64 = 128 * 1024;
    let mut after = 0;
    let back = wait_until(Duration::from_secs(10), || {
        after = used_memory(&mut con);
        after <= baseline + SLACK
    });
    eprintln!(
        "soak: {requests} requests in {secs} s from {clients} clients ({errors} backend errors), \
         {} backend calls, {entries} entries at the end; used_memory baseline {baseline}, \
         with entries {peak}, after deleting them {after}",
        b.calls()
    );
    assert!(requests > 1000, "only {requests} requests");
    assert!(
        back,
        "used_memory {after} did not return to {baseline} (+{SLACK}) after deleting the entries"
    );
    assert!(s.running(), "the server died");
    let log = s.log();
    assert!(!log.contains("panicked"), "a panic was logged:\n{log}");
    let pong: String = redis::cmd("PING").query(&mut con).unwrap();
    assert_eq!(pong, "PONG");
}

#[test]
fn soak_short() {
    soak(12);
}

#[test]
#[ignore = "long soak: make fuzz runs it (QA_SOAK_SECS, default 120)"]
fn soak_long() {
    let secs = std::env::var("QA_SOAK_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(120);
    soak(secs);
}
