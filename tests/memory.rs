//! Memory limits: entries are ordinary keys, evicted by the `maxmemory-policy` like any other.
//! Filling the cache far past `maxmemory` under `allkeys-lru`, `allkeys-lfu` and
//! `volatile-ttl` keeps `used_memory` under the limit, every paid answer is stored, the
//! policy's own choice decides what goes, and hits keep working. (`noeviction` is covered in
//! tests/errors.rs: a miss is refused with the OOM error before any backend call.)
//!
//! Also measures the size of one entry for a typical 500-byte answer (docs/operating.md).

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::backend::{Backend, Reply};
use common::*;

/// Answer size for the fill: large, so a few hundred misses go far past the limit.
const FILL_ANSWER: usize = 8 * 1024;
/// Room for entries above the server's baseline memory.
const ROOM: u64 = 1024 * 1024;
/// How far past the limit a fill goes: the bytes of answers written, over `ROOM`.
const FILL_FACTOR: u64 = 4;
/// What INFO's own reply may add to the `used_memory` it reports.
const INFO_SLACK: u64 = 4096;

fn used_memory(con: &mut redis::Connection) -> u64 {
    info_num(con, "memory", "used_memory")
}

fn evicted_keys(con: &mut redis::Connection) -> u64 {
    info_num(con, "stats", "evicted_keys")
}

struct Limited {
    b: Backend,
    /// Kept alive for the test's duration.
    _s: Server,
    con: redis::Connection,
    maxmemory: u64,
    answer: String,
}

/// A server whose backend answers every question with the same `FILL_ANSWER`-byte text at
/// once, under `policy`, with `maxmemory` set `ROOM` above its baseline.
fn limited(policy: &str) -> Limited {
    let b = Backend::start(Duration::ZERO);
    let answer = "x".repeat(FILL_ANSWER);
    b.set_reply(Reply::Raw(completion_body(&answer)));
    let url = b.url();
    let s = Server::start(&["--qa.backend-url", &url, "--maxmemory-policy", policy]);
    let mut con = s.conn();
    let maxmemory = used_memory(&mut con) + ROOM;
    config_set(&mut con, "maxmemory", &maxmemory.to_string());
    Limited {
        b,
        _s: s,
        con,
        maxmemory,
        answer,
    }
}

impl Limited {
    /// Misses, one after the other, for `cache` questions `from..to`; every one is answered.
    fn fill(&mut self, cache: &str, from: usize, to: usize) {
        for i in from..to {
            let q = format!("fill question {i}");
            assert_eq!(
                qa_get(&mut self.con, &[cache, &q]).unwrap(),
                self.answer,
                "miss {i}"
            );
        }
    }

    /// Misses enough to write `FILL_FACTOR` times the room there is.
    fn fill_count() -> usize {
        (FILL_FACTOR * ROOM / FILL_ANSWER as u64) as usize
    }

    /// `used_memory` is under the limit. Redis evicts before each command; INFO then reads
    /// `used_memory` while building its own reply, so it may count that reply's buffer
    /// (`INFO_SLACK`, far less than one entry) on top.
    fn assert_under_limit(&mut self) {
        let used = used_memory(&mut self.con);
        assert!(
            used <= self.maxmemory + INFO_SLACK,
            "used_memory {used} > maxmemory {} + {INFO_SLACK}",
            self.maxmemory
        );
    }

    /// A hit: the answer, no backend call, `qa_hits` up by one.
    fn assert_hit(&mut self, cache: &str, q: &str) {
        let calls = self.b.calls();
        let hits = info_field(&mut self.con, "hits");
        assert_eq!(qa_get(&mut self.con, &[cache, q]).unwrap(), self.answer);
        assert_eq!(self.b.calls(), calls, "{q:?} was a miss");
        assert_eq!(info_field(&mut self.con, "hits"), hits + 1);
    }

    /// Entry key -> question, for every entry of `cache` present. Reads every entry, which
    /// counts as an access for LRU/LFU: call it only when that does not matter.
    ///
    /// At the limit, any command may evict a little more first (Redis frees and reallocates
    /// client buffers between commands): an entry listed by SCAN can be gone by the time it
    /// is read, so only the policy's protected entries are checked by name.
    fn index(&mut self, cache: &str) -> HashMap<String, String> {
        scan_keys(&mut self.con, &format!("qa:{{{cache}}}:*"))
            .into_iter()
            .filter_map(|k| {
                let q = entry_fields(&mut self.con, &k).remove("question");
                q.map(|q| (k, q))
            })
            .collect()
    }

    /// The questions of the entries of `cache` still present (reads them all: see `index`).
    fn present(&mut self, cache: &str) -> Vec<String> {
        let mut qs: Vec<String> = self.index(cache).into_values().collect();
        qs.sort();
        qs
    }

    /// After a fill of `misses`: all stored, some evicted, under the limit.
    fn assert_filled_past_limit(&mut self, misses: usize) {
        self.assert_under_limit();
        assert_eq!(self.b.calls(), misses, "one backend call per miss");
        // An answer whose cache lost its generation key to eviction while it was asked is
        // not stored (it could never be reached): counted as not stored.
        assert_eq!(
            info_field(&mut self.con, "stored") + info_field(&mut self.con, "not_stored"),
            misses as u64,
            "every paid answer was stored or deliberately dropped"
        );
        assert_eq!(info_field(&mut self.con, "store_errors"), 0);
        let evicted = evicted_keys(&mut self.con);
        let keys = dbsize(&mut self.con);
        assert!(evicted > 0);
        // Nothing else deletes keys here: what is missing was evicted. Generation keys are
        // evictable too (with LRU's one-second clock every key written in the same second
        // ties): each one evicted was made again by the next miss, one key more.
        let stored = info_field(&mut self.con, "stored");
        let base = stored + self.extra_keys();
        assert!(
            keys + evicted >= base && keys + evicted <= base + misses as u64 / 10,
            "{keys} keys + {evicted} evicted vs {base}"
        );
        assert!(
            keys * (FILL_ANSWER as u64) < self.maxmemory,
            "{keys} entries of {FILL_ANSWER} bytes cannot fit in {}",
            self.maxmemory
        );
    }

    /// Keys written by the test itself (not entries).
    fn extra_keys(&mut self) -> u64 {
        let mut n = 0;
        for k in scan_keys(&mut self.con, "*") {
            if !k.starts_with("qa:") {
                n += 1;
            }
        }
        n
    }
}

#[test]
fn allkeys_lru_evicts_the_least_recently_used_entries_and_hits_keep_working() {
    let mut l = limited("allkeys-lru");
    let n = Limited::fill_count();
    let clock_start = info_num(&mut l.con, "server", "lru_clock");
    l.fill("faq", 0, n);
    l.assert_filled_past_limit(n);
    // Key -> question of what is left (reading them sets their LRU time to now).
    let old = l.index("faq");
    let clock_end = info_num(&mut l.con, "server", "lru_clock");

    // LRU time has a resolution of one second, and Redis's eviction pool remembers keys with
    // the idle time they had when sampled (during the fill: at most `clock_end - clock_start`
    // seconds). Wait until every old entry is idle for longer than that, so that anything
    // touched from now on is younger than any old entry, even a remembered one. (INFO, SCAN
    // and OBJECT do not count as accesses; GET and QA.GET do.) Meanwhile the limit is lifted
    // a little: at the limit any command may evict a few more keys first (client buffers come
    // and go), which would sample an entry into the pool as old just before it is read.
    let limit = l.maxmemory;
    config_set(&mut l.con, "maxmemory", &(limit + ROOM).to_string());
    let wait_for = 2 * clock_end - clock_start + 1;
    assert!(wait_until(Duration::from_secs(5), || info_num(
        &mut l.con,
        "server",
        "lru_clock"
    ) >= wait_for));

    // A hit refreshes an entry's LRU time: three old entries are read now...
    let mut old_keys: Vec<&String> = old.keys().collect();
    old_keys.sort();
    let mut touched = Vec::new();
    for k in old_keys {
        if touched.len() == 3 {
            break;
        }
        let idle: Option<u64> = redis::cmd("OBJECT")
            .arg("IDLETIME")
            .arg(k)
            .query(&mut l.con)
            .unwrap();
        let Some(idle) = idle else {
            continue; // evicted meanwhile
        };
        assert!(idle >= 1, "{k} idle {idle}");
        let q = old[k].clone();
        l.assert_hit("faq", &q);
        touched.push(k.clone());
    }
    assert_eq!(touched.len(), 3);
    config_set(&mut l.con, "maxmemory", &limit.to_string());
    // ...then new misses push out about half the entries again: the evicted ones are old
    // entries nobody read; the three read ones and every new one stay.
    let more = old.len() / 2;
    l.fill("faq", n, n + more);
    l.assert_under_limit();
    let now = scan_keys(&mut l.con, "qa:{faq}:*");
    for k in &touched {
        assert!(now.contains(k), "{k}, read after the others, was evicted");
    }
    // Redis's LRU is approximated by sampling (`maxmemory-samples`): when a sample happens to
    // hold only young keys, one of them goes. Allow a tenth of the new entries to be evicted
    // that way (Valkey 8.1 did so for 1 in 21 here); the old ones must make up the rest.
    let new_keys = now.iter().filter(|k| !old.contains_key(*k)).count();
    assert!(
        new_keys + more / 10 >= more,
        "{} of {more} entries written after the clock moved were evicted",
        more - new_keys
    );
    let old_left = now.iter().filter(|k| old.contains_key(*k)).count();
    assert!(
        old_left < old.len() - more / 2,
        "{old_left} of {} old entries left",
        old.len()
    );
    // The entries read or written since the clock moved are served as hits.
    for k in &touched {
        let q = old[k].clone();
        l.assert_hit("faq", &q);
    }
    for i in n..n + more {
        l.assert_hit("faq", &format!("fill question {i}"));
    }
    l.assert_under_limit();
    assert_eq!(info_field(&mut l.con, "store_errors"), 0);
}

#[test]
fn allkeys_lfu_keeps_frequently_asked_entries_and_hits_keep_working() {
    let mut l = limited("allkeys-lfu");
    // Three popular questions, asked often before the cache fills up.
    let popular = ["popular one", "popular two", "popular three"];
    for q in popular {
        for _ in 0..200 {
            assert_eq!(qa_get(&mut l.con, &["faq", q]).unwrap(), l.answer);
        }
    }
    assert_eq!(l.b.calls(), popular.len());
    let hot = l.index("faq");
    let freq = |con: &mut redis::Connection, k: &str| -> Option<u64> {
        redis::cmd("OBJECT").arg("FREQ").arg(k).query(con).unwrap()
    };
    let n = Limited::fill_count();
    l.fill("faq", 0, n);
    l.assert_filled_past_limit(n + popular.len());

    // The popular entries are still there: their hits raised their LFU counter above that of
    // any entry asked once (OBJECT FREQ does not count as an access).
    let now = scan_keys(&mut l.con, "qa:{faq}:*");
    let mut cold = Vec::new();
    for k in &now {
        if !hot.contains_key(k) {
            // (None: evicted since the SCAN.)
            cold.extend(freq(&mut l.con, k));
        }
    }
    let mut hot_freq = Vec::new();
    for k in hot.keys() {
        assert!(
            now.contains(k),
            "{:?}, asked 200 times, was evicted",
            hot[k]
        );
        hot_freq.push(freq(&mut l.con, k).expect("a popular entry"));
    }
    let coldest_hot = *hot_freq.iter().min().unwrap();
    let hottest_cold = *cold.iter().max().unwrap();
    assert!(
        coldest_hot > hottest_cold,
        "hot {hot_freq:?}, others {cold:?}"
    );
    // The popular entries are served as hits.
    for q in popular {
        l.assert_hit("faq", q);
    }
    l.assert_under_limit();
}

#[test]
fn volatile_ttl_evicts_the_entries_closest_to_expiry_and_never_keys_without_ttl() {
    let mut l = limited("volatile-ttl");
    // An application key without a TTL, and one entry that lives ten years.
    let _: () = redis::cmd("SET")
        .arg("app:settings")
        .arg("y".repeat(4096))
        .query(&mut l.con)
        .unwrap();
    let long = "the long-lived question";
    assert_eq!(
        qa_get(&mut l.con, &["faq", long, "TTL", "315360000"]).unwrap(),
        l.answer
    );
    let n = Limited::fill_count();
    l.fill("faq", 0, n);
    l.assert_filled_past_limit(n + 1);

    // Only entries with the default TTL (the sooner to expire) were evicted.
    let now = l.present("faq");
    assert!(
        now.contains(&long.to_string()),
        "the 10-year entry was evicted"
    );
    let settings: Option<String> = redis::cmd("GET")
        .arg("app:settings")
        .query(&mut l.con)
        .unwrap();
    assert_eq!(settings.map(|v| v.len()), Some(4096));
    l.assert_hit("faq", long);
    // Among the default-TTL entries, written one after another, the earliest expire first:
    // the last one written is still there.
    let last = format!("fill question {}", n - 1);
    assert!(now.contains(&last), "the newest entry was evicted");
    l.assert_hit("faq", &last);
    l.assert_under_limit();
}

/// The size of one entry for a typical 500-byte answer, as `MEMORY USAGE` reports it, and the
/// growth of `used_memory` per entry over 1000 entries (which adds the keyspace and expiry
/// tables), next to a plain `SETEX` of the same answer under a 32-character key. Printed for
/// docs/operating.md (`cargo test --release --test memory entry_size -- --nocapture`); the
/// assertions bound the overhead over the bytes actually stored: an entry is one string.
#[test]
fn entry_size_for_a_500_byte_answer() {
    const N: usize = 1000;
    let b = Backend::start(Duration::ZERO);
    let answer = "a".repeat(500);
    b.set_reply(Reply::Raw(completion_body(&answer)));
    let url = b.url();
    let s = Server::start(&["--qa.backend-url", &url]);
    let mut con = s.conn();
    let version = info_str(&mut con, "server", "redis_version");
    let allocator = info_str(&mut con, "memory", "mem_allocator");

    let q = "What is our refund policy for annual plans?";
    assert_eq!(qa_get(&mut con, &["sizing", q]).unwrap(), answer);
    let key = scan_keys(&mut con, "qa:{sizing}:*").remove(0);
    let usage = |con: &mut redis::Connection, k: &str| -> u64 {
        redis::cmd("MEMORY")
            .arg("USAGE")
            .arg(k)
            .arg("SAMPLES")
            .arg(0)
            .query(con)
            .unwrap()
    };
    let entry_usage = usage(&mut con, &key);
    let value: Vec<u8> = redis::cmd("GET").arg(&key).query(&mut con).unwrap();
    let payload = (key.len() + value.len()) as u64;
    let encoding: String = redis::cmd("OBJECT")
        .arg("ENCODING")
        .arg(&key)
        .query(&mut con)
        .unwrap();
    assert_eq!(encoding, "raw");

    let before = used_memory(&mut con);
    for i in 0..N {
        let q = format!("Question number {i:04} about our refund policy?");
        assert_eq!(qa_get(&mut con, &["sizing", &q]).unwrap(), answer);
    }
    let per_entry = (used_memory(&mut con) - before) / N as u64;
    // The same answers as plain strings with an expiry, in another database.
    let _: () = redis::cmd("SELECT").arg(1).query(&mut con).unwrap();
    let plain_key = |i: usize| format!("{:032x}", i as u128 * 0x9E37_79B9_7F4A_7C15);
    let _: () = redis::cmd("SETEX")
        .arg(plain_key(N))
        .arg(3600)
        .arg(&answer)
        .query(&mut con)
        .unwrap();
    let plain_usage = usage(&mut con, &plain_key(N));
    let before = used_memory(&mut con);
    for i in 0..N {
        let _: () = redis::cmd("SETEX")
            .arg(plain_key(i))
            .arg(3600)
            .arg(&answer)
            .query(&mut con)
            .unwrap();
    }
    let plain_per_entry = (used_memory(&mut con) - before) / N as u64;
    println!(
        "redis {version} ({allocator}), 500-byte answer, 43-byte question, {} bytes of key and \
         value: MEMORY USAGE {entry_usage} B, used_memory {per_entry} B per entry; SETEX of the \
         same answer (32-character key): MEMORY USAGE {plain_usage} B, used_memory \
         {plain_per_entry} B per key",
        payload
    );
    assert_eq!(b.calls(), N + 1);
    // One string: an object, a header and allocation rounding (jemalloc size classes are
    // 128 B apart here) over the payload. (Valkey 8.1 embeds the key in the object and
    // reports the payload's own size.)
    assert!(
        entry_usage >= payload && entry_usage < payload + 200,
        "{entry_usage} for {payload}"
    );
    // The keyspace and expiry tables add their entries and buckets (they grow in powers of
    // two, so it depends on where 1000 falls).
    assert!(
        per_entry > entry_usage && per_entry < entry_usage + 200,
        "{per_entry} vs {entry_usage}"
    );
    // The header and the question cost at most one allocation size class over a SETEX.
    assert!(
        per_entry <= plain_per_entry + 160,
        "{per_entry} vs {plain_per_entry}"
    );
}
