//! Redis Cluster: three primaries on loopback, the module on each. `QA.GET <cache> ...` has
//! the cache name as its key, and entries (`qa:{<cache>}:...`) hash to the cache name's slot,
//! so cluster clients route each cache to one node, entries land there, several caches
//! spread over the nodes, and a node that does not own the slot answers a plain `MOVED`.
//!
//! Routing is exercised three ways: plain connections (the `MOVED` reply itself),
//! `redis-cli -c` (follows redirections), and redis-py's `RedisCluster` (computes the slot
//! from `COMMAND` key specs), run as a small Python script. The Python part needs `python3`
//! (or `QA_PYTHON`) with redis-py >= 5; `QA_SKIP_PYTHON=1` skips only that part.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::process::Command;
use std::time::Duration;

use common::backend::{answer_for, Backend};
use common::*;

const MODEL: &str = "gpt-4o-mini";

struct Cluster {
    nodes: Vec<Server>,
}

impl Cluster {
    /// Three primaries (no replicas), created with `redis-cli --cluster create`, every slot
    /// covered and every node agreeing.
    fn start(backend_url: &str) -> Cluster {
        Cluster {
            nodes: start_cluster(backend_url),
        }
    }

    /// (first slot, last slot, owner's port) for every range, as `node` sees them.
    fn slot_owners(&self, con: &mut redis::Connection) -> Vec<(u16, u16, u16)> {
        slot_owners(con)
    }

    fn node(&self, port: u16) -> &Server {
        self.nodes.iter().find(|n| n.port == port).unwrap()
    }

    /// The port of the node owning `slot`.
    fn owner(&self, slot: u16) -> u16 {
        let mut con = self.nodes[0].conn();
        self.slot_owners(&mut con)
            .into_iter()
            .find(|(a, b, _)| (*a..=*b).contains(&slot))
            .map(|(_, _, p)| p)
            .unwrap()
    }
}

fn keyslot(con: &mut redis::Connection, key: &str) -> u16 {
    redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg(key)
        .query::<i64>(con)
        .unwrap() as u16
}

fn python() -> String {
    std::env::var("QA_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Asks each (cache, question) through redis-py's RedisCluster, starting from `port`; per ask:
/// (cache, question, answer, port of the node redis-py routed it to).
const PY_CLUSTER: &str = r#"
import json, sys
import redis
from redis.cluster import RedisCluster
assert int(redis.__version__.split(".")[0]) >= 5, redis.__version__
rc = RedisCluster(host="127.0.0.1", port=int(sys.argv[1]), decode_responses=True)
out = []
for cache, q in json.loads(sys.argv[2]):
    answer = rc.execute_command("QA.GET", cache, q)
    node = rc.get_node_from_key(cache)
    out.append([cache, q, answer, node.port])
rc.close()
print(json.dumps(out))
"#;

fn redis_py_asks(
    port: u16,
    asks: &[(String, String)],
) -> Option<Vec<(String, String, String, u16)>> {
    if std::env::var("QA_SKIP_PYTHON").as_deref() == Ok("1") {
        let _ = writeln!(
            std::io::stderr(),
            "redis-py RedisCluster part: SKIPPED (QA_SKIP_PYTHON=1)"
        );
        return None;
    }
    let out = Command::new(python())
        .args([
            "-c",
            PY_CLUSTER,
            &port.to_string(),
            &serde_json::to_string(asks).unwrap(),
        ])
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {}: {e} (QA_SKIP_PYTHON=1 skips this part)",
                python()
            )
        });
    assert!(
        out.status.success(),
        "redis-py RedisCluster script failed ({}); needs redis-py >= 5 \
         (pip install -r tests/python/requirements.txt, or QA_SKIP_PYTHON=1):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Some(serde_json::from_slice(&out.stdout).expect("JSON from the script"))
}

#[test]
fn qa_get_is_routed_to_the_node_owning_the_cache_slot() {
    let b = Backend::start(Duration::from_millis(5));
    let url = b.url();
    let cluster = Cluster::start(&url);
    let mut any = cluster.nodes[0].conn();

    // The cache name is the command's key, and an entry key hashes like the cache name.
    let getkeys: Vec<String> = redis::cmd("COMMAND")
        .arg("GETKEYS")
        .arg("QA.GET")
        .arg("faq")
        .arg("a question")
        .query(&mut any)
        .unwrap();
    assert_eq!(getkeys, ["faq"]);
    let faq_slot = keyslot(&mut any, "faq");
    assert_eq!(keyslot(&mut any, "qa:{faq}:0123abcd"), faq_slot);

    // Caches whose slots fall on each of the three nodes, two per node.
    let mut caches: BTreeMap<u16, Vec<(String, u16)>> = BTreeMap::new();
    for i in 0.. {
        let name = format!("cache-{i}");
        let slot = keyslot(&mut any, &name);
        let owner = cluster.owner(slot);
        let on = caches.entry(owner).or_default();
        if on.len() < 2 {
            on.push((name, slot));
        }
        if caches.len() == 3 && caches.values().all(|v| v.len() == 2) {
            break;
        }
    }

    // A plain connection to a node that does not own the slot gets MOVED, and nothing is
    // asked or written anywhere.
    let (owner, list) = caches.iter().next().unwrap();
    let (cache, slot) = list[0].clone();
    let first_cache = cache.clone();
    let wrong = cluster.nodes.iter().find(|n| n.port != *owner).unwrap();
    let e = qa_get(&mut wrong.conn(), &[&cache, "Where is my order?"]).unwrap_err();
    assert_eq!(err_text(&e), format!("MOVED {slot} 127.0.0.1:{owner}"));
    assert_eq!(b.calls(), 0);
    for n in &cluster.nodes {
        assert_eq!(dbsize(&mut n.conn()), 0);
    }
    // The owner answers, and the entry is in that slot on that node only.
    let mut on_owner = cluster.node(*owner).conn();
    let want = answer_for("Where is my order?", MODEL, "");
    assert_eq!(
        qa_get(&mut on_owner, &[&cache, "Where is my order?"]).unwrap(),
        want
    );
    let in_slot: i64 = redis::cmd("CLUSTER")
        .arg("COUNTKEYSINSLOT")
        .arg(slot)
        .query(&mut on_owner)
        .unwrap();
    assert_eq!(in_slot, 2, "the entry and its cache's generation key");
    let on_other: u64 = dbsize(&mut wrong.conn());
    assert_eq!(on_other, 0);
    // A hit asked at the wrong node is redirected too (the key decides, not hit or miss).
    let e = qa_get(&mut wrong.conn(), &[&cache, "where is my order"]).unwrap_err();
    assert_eq!(err_text(&e), format!("MOVED {slot} 127.0.0.1:{owner}"));

    // redis-cli -c, started at a node that does not own the slot, follows the redirection.
    let wrong_port = wrong.port.to_string();
    let (ok, out, err) = redis_cli(&[
        "-c",
        "-p",
        &wrong_port,
        "QA.GET",
        &cache,
        "Can I pay by card?",
    ]);
    assert!(ok, "{out}{err}");
    assert_eq!(out.trim_end(), answer_for("Can I pay by card?", MODEL, ""));
    assert_eq!(b.calls(), 2);
    let in_slot: i64 = redis::cmd("CLUSTER")
        .arg("COUNTKEYSINSLOT")
        .arg(slot)
        .query(&mut on_owner)
        .unwrap();
    assert_eq!(in_slot, 3, "two entries and the generation key");

    // redis-py's RedisCluster routes every cache to its owner: six caches on three nodes.
    let asks: Vec<(String, String)> = caches
        .values()
        .flatten()
        .flat_map(|(c, _)| {
            [
                (c.clone(), format!("How do refunds work for {c}?")),
                (c.clone(), format!("how do refunds work for {c}")),
            ]
        })
        .collect();
    let Some(routed) = redis_py_asks(cluster.nodes[0].port, &asks) else {
        return;
    };
    assert_eq!(routed.len(), asks.len());
    for (cache, q, answer, port) in &routed {
        let slot = keyslot(&mut any, cache);
        assert_eq!(*port, cluster.owner(slot), "{cache} routed to the owner");
        let asked = format!("How do refunds work for {cache}?");
        assert_eq!(*answer, answer_for(&asked, MODEL, ""), "{q}");
    }
    // One backend call per cache (the second spelling was a hit), each entry on its owner.
    assert_eq!(b.calls(), 2 + 6);
    for (owner, list) in &caches {
        let mut con = cluster.node(*owner).conn();
        for (cache, slot) in list {
            let keys: Vec<String> = redis::cmd("CLUSTER")
                .arg("GETKEYSINSLOT")
                .arg(slot)
                .arg(10)
                .query(&mut con)
                .unwrap();
            let entries: Vec<&String> = keys
                .iter()
                .filter(|k| k.starts_with(&format!("qa:{{{cache}}}:")) && !k.ends_with(":gen"))
                .collect();
            // (The first cache also holds the two questions asked above.)
            let want = if *cache == first_cache { 3 } else { 1 };
            assert_eq!(entries.len(), want, "{cache} on {owner}: {keys:?}");
        }
    }
    // Spread: every node holds entries, and only its own.
    let mut total = 0;
    for n in &cluster.nodes {
        let mut con = n.conn();
        let here = dbsize(&mut con);
        assert!(here >= 2, "node {} holds {here} entries", n.port);
        total += here;
        for k in scan_keys(&mut con, "qa:*") {
            assert_eq!(cluster.owner(keyslot(&mut con, &k)), n.port, "{k}");
        }
    }
    assert_eq!(total, 8);
    let hits: u64 = cluster
        .nodes
        .iter()
        .map(|n| info_field(&mut n.conn(), "hits"))
        .sum();
    assert_eq!(hits, 6);
}

fn meta_field(m: &[(String, String)], name: &str) -> String {
    m.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| panic!("no {name} in {m:?}"))
}

fn node_id(con: &mut redis::Connection) -> String {
    redis::cmd("CLUSTER").arg("MYID").query(con).unwrap()
}

/// The semantic tier in a cluster: caches on two primaries serve paraphrases on their owners;
/// moving a cache's slot to the third primary (which had no index at all) moves its entries,
/// the new owner indexes them as they arrive and serves the paraphrase, and the old owner's
/// index lets them go.
#[test]
fn semantic_hits_follow_a_cache_whose_slot_is_moved() {
    const Q: &str = "What is our refund policy?";
    const PARAPHRASE: &str = "what is YOUR refund policy";
    let b = Backend::start(Duration::ZERO);
    let url = b.url();
    let nodes = start_cluster_with(
        &url,
        &["--qa.semantic", "yes", "--qa.semantic-audit-rate", "0"],
    );
    let cluster = Cluster { nodes };
    let mut any = cluster.nodes[0].conn();
    let ports: Vec<u16> = cluster.nodes.iter().map(|n| n.port).collect();
    // One cache on each of the first two nodes; the third node gets none.
    let (from, to, other) = (ports[0], ports[2], ports[1]);
    let mut caches = Vec::new();
    for owner in [from, other] {
        let cache = (0..)
            .map(|i| format!("sem-{i}"))
            .find(|c| cluster.owner(keyslot(&mut any, c)) == owner)
            .unwrap();
        caches.push((cache, owner));
    }
    for (cache, owner) in &caches {
        let mut con = cluster.node(*owner).conn();
        let answer = format!("Refunds for {cache} within 30 days.");
        let ok: String = redis::cmd("QA.SET")
            .arg(&[cache.as_str(), Q, &answer])
            .query(&mut con)
            .unwrap();
        assert_eq!(ok, "OK");
        assert!(wait_until(Duration::from_secs(10), || info_field(
            &mut con,
            "semantic_index_entries"
        ) == 1));
        let m = meta(&mut con, &[cache, PARAPHRASE]);
        assert_eq!(meta_field(&m, "served"), "semantic", "{cache} on {owner}");
        assert_eq!(meta_field(&m, "answer"), answer);
    }
    let mut on_to = cluster.node(to).conn();
    assert_eq!(info_field(&mut on_to, "semantic_index_entries"), 0);

    // Move the first cache's slot from its owner to the third node, as a resharding does:
    // IMPORTING / MIGRATING, MIGRATE of its keys (entry and generation), then the new owner.
    let (cache, _) = &caches[0];
    let slot = keyslot(&mut any, cache);
    let mut on_from = cluster.node(from).conn();
    let (from_id, to_id) = (node_id(&mut on_from), node_id(&mut on_to));
    let setslot = |con: &mut redis::Connection, how: &str, id: &str| {
        let ok: String = redis::cmd("CLUSTER")
            .arg("SETSLOT")
            .arg(slot)
            .arg(how)
            .arg(id)
            .query(con)
            .unwrap();
        assert_eq!(ok, "OK");
    };
    setslot(&mut on_to, "IMPORTING", &from_id);
    setslot(&mut on_from, "MIGRATING", &to_id);
    let keys: Vec<String> = redis::cmd("CLUSTER")
        .arg("GETKEYSINSLOT")
        .arg(slot)
        .arg(100)
        .query(&mut on_from)
        .unwrap();
    assert_eq!(keys.len(), 2, "the entry and the generation key: {keys:?}");
    let moved: String = redis::cmd("MIGRATE")
        .arg(&["127.0.0.1", &to.to_string(), "", "0", "5000", "KEYS"])
        .arg(&keys)
        .query(&mut on_from)
        .unwrap();
    assert_eq!(moved, "OK");
    for n in &cluster.nodes {
        setslot(&mut n.conn(), "NODE", &to_id);
    }
    assert!(wait_until(Duration::from_secs(10), || cluster
        .nodes
        .iter()
        .all(|n| slot_owners(&mut n.conn())
            .iter()
            .any(|(a, z, p)| (*a..=*z).contains(&slot) && *p == to))));

    // The new owner indexed what arrived and serves the paraphrase; no backend call.
    assert!(wait_until(Duration::from_secs(10), || info_field(
        &mut on_to,
        "semantic_index_entries"
    ) == 1));
    let chat_calls = || {
        b.requests()
            .iter()
            .filter(|r| r.path.ends_with("/chat/completions"))
            .count()
    };
    let calls = chat_calls();
    let m = meta(&mut on_to, &[cache, PARAPHRASE]);
    assert_eq!(meta_field(&m, "served"), "semantic");
    assert_eq!(
        meta_field(&m, "answer"),
        format!("Refunds for {cache} within 30 days.")
    );
    assert_eq!(chat_calls(), calls);
    // The old owner let them go and redirects; the other cache is untouched.
    assert!(wait_until(Duration::from_secs(10), || info_field(
        &mut on_from,
        "semantic_index_entries"
    ) == 0));
    assert_eq!(dbsize(&mut on_from), 0);
    let e = qa_get(&mut on_from, &[cache, PARAPHRASE]).unwrap_err();
    assert_eq!(err_text(&e), format!("MOVED {slot} 127.0.0.1:{to}"));
    let (cache2, owner2) = &caches[1];
    let m = meta(&mut cluster.node(*owner2).conn(), &[cache2, PARAPHRASE]);
    assert_eq!(meta_field(&m, "served"), "semantic");
}
