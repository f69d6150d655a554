//! The Node.js examples (examples/node, node-redis) against real servers with the module and
//! the in-process mock backend: `quickstart.js` on one server (a miss then a hit, the
//! fallback when Redis is unreachable, an error reply) and `cluster.js` on a three-primary
//! cluster (QA.GET routed by the cache name, with no redirection).
//!
//! Needs `node` (>= 18.19, for node-redis 5) and `npm` (or `QA_NODE` / `QA_NPM`). Missing
//! `examples/node/node_modules` is installed once with `npm ci` (from the committed
//! package-lock.json; offline once installed). Missing Node fails these tests; set
//! `QA_SKIP_NODE=1` to skip them instead.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use common::backend::{answer_for, Backend};
use common::*;

const MODEL: &str = "gpt-4o-mini";

fn node() -> String {
    std::env::var("QA_NODE").unwrap_or_else(|_| "node".into())
}

fn npm() -> String {
    std::env::var("QA_NPM").unwrap_or_else(|_| "npm".into())
}

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/node")
}

/// Result of the one `npm ci` per test process (the tests run in parallel).
static INSTALL: Mutex<Option<Result<(), String>>> = Mutex::new(None);

/// False (after saying so) if `QA_SKIP_NODE=1`; panics if Node is missing or too old, or
/// node-redis cannot be installed.
fn node_ready(test: &str) -> bool {
    if std::env::var("QA_SKIP_NODE").as_deref() == Ok("1") {
        // Straight to stderr, past the test harness's output capture, so it always shows.
        let _ = writeln!(std::io::stderr(), "{test}: SKIPPED (QA_SKIP_NODE=1)");
        return false;
    }
    let hint = "install Node.js >= 18.19 and npm (Debian: apt-get install nodejs npm), \
                set QA_NODE/QA_NPM, or QA_SKIP_NODE=1 to skip these tests";
    let out = Command::new(node())
        .args(["-e", "process.stdout.write(process.versions.node)"])
        .output()
        .unwrap_or_else(|e| panic!("{test}: cannot run `{}`: {e}\n{hint}", node()));
    let version = String::from_utf8_lossy(&out.stdout).into_owned();
    let v: Vec<u32> = version.split('.').filter_map(|p| p.parse().ok()).collect();
    assert!(
        out.status.success() && v.len() == 3 && (v[0], v[1]) >= (18, 19),
        "{test}: `{}` is Node {version:?}, node-redis 5 needs >= 18.19\n{hint}",
        node()
    );
    let mut install = INSTALL.lock().unwrap();
    if install.is_none() {
        *install = Some(npm_ci_if_missing());
    }
    if let Some(Err(e)) = install.as_ref() {
        panic!("{test}: {e}\n{hint}");
    }
    true
}

/// `npm ci` in examples/node when node-redis is not installed there.
fn npm_ci_if_missing() -> Result<(), String> {
    let dir = examples_dir();
    if dir.join("node_modules/redis/package.json").exists() {
        return Ok(());
    }
    let out = Command::new(npm())
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(&dir)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run `{}`: {e}", npm()))?;
    if !out.status.success() {
        return Err(format!(
            "`npm ci` in {} failed ({}):\n{}{}",
            dir.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

/// Runs `node examples/node/<script> args...` with a deadline (killed when it passes).
fn run_node(script: &str, args: &[&str], env: &[(&str, &str)], deadline: Duration) -> Run {
    let mut cmd = Command::new(node());
    cmd.arg(script)
        .args(args)
        .current_dir(examples_dir())
        .env_remove("REDIS_HOST")
        .env_remove("REDIS_PORT")
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    run_with_deadline(cmd, deadline)
}

/// Every "<first|second> ask: 12.3 ms  <how>" line (after `prefix`) with the answer line
/// "<prefix>  A: <answer>" after it: (ms, how, answer).
fn asks(out: &str, prefix: &str, sep: &str) -> Vec<(f64, String, String)> {
    let lines: Vec<&str> = out.lines().collect();
    let mut v = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        let Some(rest) = l.strip_prefix(prefix).and_then(|l| {
            l.strip_prefix("first ask:")
                .or_else(|| l.strip_prefix("second ask:"))
        }) else {
            continue;
        };
        let (ms, how) = rest.split_once(sep).expect("ask line format");
        let ms: f64 = ms.trim().parse().expect("latency");
        let answer = lines
            .get(i + 1)
            .and_then(|a| a.strip_prefix(prefix))
            .and_then(|a| a.strip_prefix("  A: "))
            .expect("answer line");
        v.push((ms, how.to_string(), answer.to_string()));
    }
    v
}

#[test]
fn node_quickstart_shows_a_miss_then_a_hit() {
    if !node_ready("node_quickstart_shows_a_miss_then_a_hit") {
        return;
    }
    let delay = Duration::from_millis(200);
    let b = Backend::start(delay);
    let url = b.url();
    let s = Server::start(&["--qa.backend-url", url.as_str()]);
    let port = s.port.to_string();
    let q = "What is our refund policy?";
    let expected = answer_for(q, MODEL, "");

    // Port on the command line, default cache and question.
    let run = run_node(
        "quickstart.js",
        &["--port", &port],
        &[],
        Duration::from_secs(20),
    );
    assert!(run.ok, "quickstart.js failed\n{}", run.shown());
    assert!(run.stdout.contains(&format!("Q: {q}\n")), "{}", run.shown());
    let a = asks(&run.stdout, "", " ms  via ");
    assert_eq!(a.len(), 2, "{}", run.shown());
    assert_eq!(a[0].1, "redis, cache miss (LLM called)", "{}", run.shown());
    assert_eq!(a[1].1, "redis, cache hit", "{}", run.shown());
    assert_eq!(a[0].2, expected);
    assert_eq!(a[1].2, expected);
    // The miss waited for the backend; the hit did not.
    assert!(a[0].0 >= delay.as_millis() as f64, "{a:?}");
    assert!(a[1].0 < a[0].0, "{a:?}");
    assert_eq!(b.calls(), 1);
    let mut con = s.conn();
    assert_eq!(info_field(&mut con, "backend_calls"), 1);
    assert_eq!(
        (info_field(&mut con, "misses"), info_field(&mut con, "hits")),
        (1, 1)
    );
    assert_eq!(scan_keys(&mut con, "qa:{faq}:*").len(), 1);

    // Port from REDIS_PORT, another cache name: a miss there; then a normalized variant in
    // that cache: two hits, no new call.
    let run = run_node(
        "quickstart.js",
        &["--cache", "support", q],
        &[("REDIS_PORT", &port)],
        Duration::from_secs(20),
    );
    assert!(run.ok, "{}", run.shown());
    let a = asks(&run.stdout, "", " ms  via ");
    let how: Vec<&str> = a.iter().map(|x| x.1.as_str()).collect();
    assert_eq!(
        how,
        ["redis, cache miss (LLM called)", "redis, cache hit"],
        "{}",
        run.shown()
    );
    assert_eq!(b.calls(), 2);
    let run = run_node(
        "quickstart.js",
        &[
            "--port",
            &port,
            "--cache",
            "support",
            "  what is our REFUND policy ",
        ],
        &[],
        Duration::from_secs(20),
    );
    assert!(run.ok, "{}", run.shown());
    let a = asks(&run.stdout, "", " ms  via ");
    assert_eq!(a.len(), 2, "{}", run.shown());
    for (_, how, answer) in &a {
        assert_eq!(how, "redis, cache hit", "{}", run.shown());
        assert_eq!(answer, &expected);
    }
    assert_eq!(b.calls(), 2);
    assert_eq!(scan_keys(&mut con, "qa:{support}:*").len(), 1);

    // An error reply is an error (exit 1 with Redis's text), not a fallback to the LLM.
    let run = run_node(
        "quickstart.js",
        &["--port", &port, ""],
        &[],
        Duration::from_secs(20),
    );
    assert!(!run.ok, "{}", run.shown());
    assert_eq!(run.status, "exit status: 1", "{}", run.shown());
    assert!(
        run.stderr.contains("error: ERR question is empty"),
        "{}",
        run.shown()
    );
    assert!(!run.stdout.contains("calling the LLM directly"));
    assert_eq!(b.calls(), 2);
    assert_eq!(info_field(&mut con, "backend_calls"), 2);
}

#[test]
fn node_quickstart_falls_back_to_the_llm_when_redis_is_unreachable() {
    if !node_ready("node_quickstart_falls_back_to_the_llm_when_redis_is_unreachable") {
        return;
    }
    let port = free_port().to_string(); // nothing listens there
    let run = run_node(
        "quickstart.js",
        &["--host", "127.0.0.1", "--port", &port],
        &[],
        Duration::from_secs(20),
    );
    assert!(run.ok, "quickstart.js failed\n{}", run.shown());
    assert!(
        // Refused, or reset when another test's server was just starting on that port.
        run.stdout.contains("redis unreachable ("),
        "{}",
        run.shown()
    );
    let a = asks(&run.stdout, "", " ms  via ");
    assert_eq!(a.len(), 2, "{}", run.shown());
    for (_, how, answer) in &a {
        assert_eq!(how, "direct LLM call (no cache)", "{}", run.shown());
        assert_eq!(
            answer,
            "(stub answer, LLM called directly) What is our refund policy?"
        );
    }
}

// ---- Cluster ----

fn keyslot(con: &mut redis::Connection, key: &str) -> u16 {
    redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg(key)
        .query(con)
        .unwrap()
}

/// How many MOVED and ASK redirections a node has replied (`INFO errorstats`).
fn redirections(con: &mut redis::Connection) -> u64 {
    let info: String = redis::cmd("INFO").arg("errorstats").query(con).unwrap();
    info.lines()
        .filter(|l| l.starts_with("errorstat_MOVED:") || l.starts_with("errorstat_ASK:"))
        .filter_map(|l| {
            l.split_once("count=")?
                .1
                .split(',')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

#[test]
fn node_cluster_example_routes_qa_get_by_the_cache_name() {
    if !node_ready("node_cluster_example_routes_qa_get_by_the_cache_name") {
        return;
    }
    let b = Backend::start(Duration::from_millis(50));
    let url = b.url();
    let nodes = start_cluster(&url);
    let mut any = nodes[0].conn();
    let owners = slot_owners(&mut any);
    let owner = |slot: u16| {
        owners
            .iter()
            .find(|(a, z, _)| (*a..=*z).contains(&slot))
            .map(|(_, _, p)| *p)
            .unwrap()
    };

    // One cache owned by each node.
    let mut caches: BTreeMap<u16, (String, u16)> = BTreeMap::new();
    for i in 0.. {
        let name = format!("kb-{i}");
        let slot = keyslot(&mut any, &name);
        caches.entry(owner(slot)).or_insert((name, slot));
        if caches.len() == 3 {
            break;
        }
    }
    let q = "How do I reset my password?";
    let expected = answer_for(q, MODEL, "");
    // Any node will do as the seed: the client learns the slot map from it.
    let seed = nodes[2].port.to_string();
    let mut args = vec!["--port", seed.as_str()];
    for (name, _) in caches.values() {
        args.extend(["--cache", name.as_str()]);
    }
    args.push(q);
    let run = run_node("cluster.js", &args, &[], Duration::from_secs(30));
    assert!(run.ok, "cluster.js failed\n{}", run.shown());

    // Per cache: the slot and owner the client computed are the cluster's, a miss then a hit
    // (counted on the owner), the exact answer.
    for (port, (name, slot)) in &caches {
        let head = format!("cache '{name}': slot {slot} on 127.0.0.1:{port}");
        let at = run
            .stdout
            .find(&head)
            .unwrap_or_else(|| panic!("no line {head:?}\n{}", run.shown()));
        let block = &run.stdout[at..];
        let a: Vec<_> = asks(block, "  ", " ms  ").into_iter().take(2).collect();
        assert_eq!(a.len(), 2, "{}", run.shown());
        assert_eq!(a[0].1, "cache miss (LLM called)", "{name}\n{}", run.shown());
        assert_eq!(a[1].1, "cache hit", "{name}\n{}", run.shown());
        assert_eq!(a[0].2, expected);
        assert_eq!(a[1].2, expected);
        assert!(a[0].0 >= 50.0, "{a:?}");
    }
    assert_eq!(b.calls(), 3);

    // Each cache's one entry is on its owner, and every node holds exactly its own cache.
    for n in &nodes {
        let mut con = n.conn();
        let (name, _) = &caches[&n.port];
        assert_eq!(
            scan_keys(&mut con, "qa:*").len(),
            1,
            "node {} holds one entry",
            n.port
        );
        assert_eq!(scan_keys(&mut con, &format!("qa:{{{name}}}:*")).len(), 1);
        assert_eq!(
            (info_field(&mut con, "misses"), info_field(&mut con, "hits")),
            (1, 1),
            "node {}",
            n.port
        );
        // Routed straight to the owner: no node ever replied MOVED (or ASK).
        assert_eq!(redirections(&mut con), 0, "node {}", n.port);
    }

    // Control: a QA.GET sent to a node that does not own the slot is counted there as MOVED,
    // so the check above would have seen a misrouted command.
    let (name, slot) = &caches[&nodes[0].port];
    let mut wrong = nodes[1].conn();
    let e = qa_get(&mut wrong, &[name, q]).unwrap_err();
    assert_eq!(
        err_text(&e),
        format!("MOVED {slot} 127.0.0.1:{}", nodes[0].port)
    );
    assert_eq!(redirections(&mut wrong), 1);
}
