//! Compares HNSW libraries on the semantic tier's workload: 384-d unit vectors, cosine,
//! top-1 and top-10 against an exact scan. See bench/ann/README.md.
//!
//!   cargo run --release -- --n 100000 --data random
//!   cargo run --release -- --n 100000 --data bench/ann/data     # base.f32 + query.f32
//!
//! Per library and setting: build time, bytes per vector (RSS growth), search p50/p99 on one
//! thread, recall@1 and recall@10, insert cost, delete cost, and recall after 10% deletes.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use hnsw_rs::prelude::*;
use usearch::{Index, IndexOptions, MetricKind, ScalarKind};

struct Args {
    n: usize,
    queries: usize,
    dims: usize,
    data: String,
    threads: usize,
    libs: Vec<String>,
    m: usize,
    efc: usize,
    efs: Vec<usize>,
}

fn args() -> Args {
    let mut a = Args {
        n: 100_000,
        queries: 1000,
        dims: 384,
        data: "random".into(),
        threads: 2,
        libs: vec![
            "usearch-f32".into(),
            "usearch-f16".into(),
            "usearch-i8".into(),
            "hnsw_rs".into(),
        ],
        m: 16,
        efc: 128,
        efs: vec![64, 128],
    };
    let v: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i + 1 < v.len() {
        let x = &v[i + 1];
        match v[i].as_str() {
            "--n" => a.n = x.parse().unwrap(),
            "--queries" => a.queries = x.parse().unwrap(),
            "--dims" => a.dims = x.parse().unwrap(),
            "--data" => a.data = x.clone(),
            "--threads" => a.threads = x.parse().unwrap(),
            "--libs" => a.libs = x.split(',').map(String::from).collect(),
            "--m" => a.m = x.parse().unwrap(),
            "--efc" => a.efc = x.parse().unwrap(),
            "--efs" => a.efs = x.split(',').map(|s| s.parse().unwrap()).collect(),
            o => panic!("unknown option {o}"),
        }
        i += 2;
    }
    a
}

fn rng(seed: u64) -> impl FnMut() -> f32 {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    move || {
        // Sum of 4 uniforms: close enough to a normal for random directions.
        let mut s = 0.0;
        for _ in 0..4 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            s += (x >> 11) as f64 / (1u64 << 53) as f64 - 0.5;
        }
        s as f32
    }
}

fn normalize(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.iter_mut().for_each(|x| *x /= n);
}

fn read_f32(path: &str, dims: usize, max: usize) -> Vec<Vec<f32>> {
    let b = std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    b.chunks_exact(dims * 4)
        .take(max)
        .map(|c| {
            c.chunks_exact(4)
                .map(|x| f32::from_le_bytes(x.try_into().unwrap()))
                .collect()
        })
        .collect()
}

/// Base vectors and queries. Random: uniform directions; half the queries are fresh random
/// directions (no near neighbour: the hard case for a graph), half are base vectors plus
/// noise (cosine about 0.95 to their source: the tier's real case, a near duplicate).
fn data(a: &Args) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
    if a.data == "random" {
        let mut r = rng(16);
        let base: Vec<Vec<f32>> = (0..a.n)
            .map(|_| {
                let mut v: Vec<f32> = (0..a.dims).map(|_| r()).collect();
                normalize(&mut v);
                v
            })
            .collect();
        let queries = (0..a.queries)
            .map(|i| {
                let mut v: Vec<f32> = (0..a.dims).map(|_| r()).collect();
                normalize(&mut v);
                if i % 2 == 0 {
                    let src = &base[(i * 7919) % a.n];
                    v = src.iter().zip(&v).map(|(s, n)| s + 0.33 * n).collect();
                    normalize(&mut v);
                }
                v
            })
            .collect();
        (base, queries)
    } else {
        let base = read_f32(&format!("{}/base.f32", a.data), a.dims, a.n);
        let queries = read_f32(&format!("{}/query.f32", a.data), a.dims, a.queries);
        (base, queries)
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    for (x, y) in a.chunks_exact(8).zip(b.chunks_exact(8)) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum()
}

const GT: usize = 64;

/// Exact top-`GT` ids per query, on `threads` threads.
fn ground_truth(base: &[Vec<f32>], queries: &[Vec<f32>], threads: usize) -> Vec<Vec<u64>> {
    let chunk = queries.len().div_ceil(threads);
    std::thread::scope(|s| {
        let hs: Vec<_> = queries
            .chunks(chunk)
            .map(|qs| {
                s.spawn(move || {
                    qs.iter()
                        .map(|q| {
                            let mut sc: Vec<(f32, u64)> = base
                                .iter()
                                .enumerate()
                                .map(|(i, v)| (dot(q, v), i as u64))
                                .collect();
                            sc.select_nth_unstable_by(GT, |a, b| b.0.total_cmp(&a.0));
                            sc.truncate(GT);
                            sc.sort_by(|a, b| b.0.total_cmp(&a.0));
                            sc.into_iter().map(|x| x.1).collect()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
    })
}

fn rss() -> usize {
    let s = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: usize = s.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

/// CPU time of the calling thread (the machine is shared: wall time includes waiting for a
/// core, CPU time does not).
fn thread_cpu() -> Duration {
    let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

fn process_cpu() -> Duration {
    let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut t) };
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

fn pct(v: &mut [Duration], p: f64) -> f64 {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i].as_secs_f64() * 1e6
}

/// What a library must do for the benchmark.
trait Ann: Sync {
    fn add(&self, key: u64, v: &[f32]);
    fn search(&self, q: &[f32], k: usize, ef: usize) -> Vec<u64> {
        self.scored(q, k, ef).into_iter().map(|x| x.0).collect()
    }
    /// Keys with the similarity the library computed (1 - cosine distance).
    fn scored(&self, q: &[f32], k: usize, ef: usize) -> Vec<(u64, f32)>;
    /// Whether it was removed natively (false: a tombstone the search filters out).
    fn remove(&mut self, key: u64) -> bool;
}

struct Us(Index);

impl Ann for Us {
    fn add(&self, key: u64, v: &[f32]) {
        self.0.add(key, v).unwrap();
    }
    fn scored(&self, q: &[f32], k: usize, ef: usize) -> Vec<(u64, f32)> {
        if self.0.expansion_search() != ef {
            self.0.change_expansion_search(ef);
        }
        let m = self.0.search(q, k).unwrap();
        m.keys.into_iter().zip(m.distances.into_iter().map(|d| 1.0 - d)).collect()
    }
    fn remove(&mut self, key: u64) -> bool {
        self.0.remove(key).unwrap();
        true
    }
}

struct Hr {
    h: Hnsw<'static, f32, DistCosine>,
    dead: HashSet<usize>,
}

struct Alive<'a>(&'a HashSet<usize>);

impl FilterT for Alive<'_> {
    fn hnsw_filter(&self, id: &DataId) -> bool {
        !self.0.contains(id)
    }
}

impl Ann for Hr {
    fn add(&self, key: u64, v: &[f32]) {
        self.h.insert_slice((v, key as usize));
    }
    fn scored(&self, q: &[f32], k: usize, ef: usize) -> Vec<(u64, f32)> {
        let r = if self.dead.is_empty() {
            self.h.search(q, k, ef)
        } else {
            self.h.search_filter(q, k, ef, Some(&Alive(&self.dead)))
        };
        r.into_iter()
            .map(|n| (n.d_id as u64, 1.0 - n.distance))
            .collect()
    }
    fn remove(&mut self, key: u64) -> bool {
        // hnsw_rs has no removal: a tombstone, filtered at search.
        self.dead.insert(key as usize);
        false
    }
}

fn make(lib: &str, a: &Args, cap: usize) -> Box<dyn Ann> {
    if let Some(q) = lib.strip_prefix("usearch-") {
        let quantization = match q {
            "f32" => ScalarKind::F32,
            "f16" => ScalarKind::F16,
            "bf16" => ScalarKind::BF16,
            "i8" => ScalarKind::I8,
            o => panic!("quantization {o}"),
        };
        let o = IndexOptions {
            dimensions: a.dims,
            metric: MetricKind::Cos,
            quantization,
            connectivity: a.m,
            expansion_add: a.efc,
            expansion_search: a.efs[0],
            multi: false,
        };
        let ix = Index::new(&o).unwrap();
        ix.reserve_capacity_and_threads(cap, a.threads.max(1))
            .unwrap();
        Box::new(Us(ix))
    } else if lib == "hnsw_rs" {
        let h = Hnsw::<f32, DistCosine>::new(a.m, cap, 16, a.efc, DistCosine {});
        Box::new(Hr {
            h,
            dead: HashSet::new(),
        })
    } else {
        panic!("library {lib}")
    }
}

fn recall(found: &[u64], truth: &[u64], k: usize) -> f64 {
    let t: HashSet<u64> = truth.iter().take(k).copied().collect();
    found.iter().take(k).filter(|x| t.contains(x)).count() as f64 / k.min(truth.len()) as f64
}

fn main() {
    let a = args();
    let t = Instant::now();
    let (base, queries) = data(&a);
    let n = base.len();
    eprintln!(
        "data {}: {} x {} + {} queries ({:.1}s)",
        a.data,
        n,
        a.dims,
        queries.len(),
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let truth = ground_truth(&base, &queries, a.threads);
    eprintln!("exact top-{GT}: {:.1}s", t.elapsed().as_secs_f64());
    // Exact search cost per query, one thread (what brute force costs at this size).
    let t = Instant::now();
    let c = thread_cpu();
    for q in queries.iter().take(20) {
        std::hint::black_box(base.iter().map(|v| dot(q, v)).fold(f32::MIN, f32::max));
    }
    let exact_us = t.elapsed().as_secs_f64() * 1e6 / 20.0;
    let exact_cpu = (thread_cpu() - c).as_secs_f64() * 1e6 / 20.0;
    println!(
        "| data | n | library | M/efc | build s wall ({} thr) | build s CPU | bytes/vector | efs | p50 us wall | p99 us wall | p50 us CPU | p99 us CPU | recall@1 near-duplicate queries | recall@1 | recall@10 | insert us CPU | delete us CPU | recall@10 after 10% deletes | max similarity error |",
        a.threads
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    println!(
        "| {} | {n} | exact scan f32 | - | 0 | 0 | {} | - | {exact_us:.0} | - | {exact_cpu:.0} | - | 1 | 1 | 1 | - | - | 1 | 0 |",
        a.data,
        a.dims * 4
    );
    let extra: Vec<Vec<f32>> = {
        let mut r = rng(99);
        // Near duplicates of stored vectors (paraphrases of stored questions).
        (0..1000)
            .map(|i| {
                let mut v: Vec<f32> = (0..a.dims).map(|_| r()).collect();
                normalize(&mut v);
                let src = &base[(i * 7907 + 3) % base.len()];
                let mut v: Vec<f32> = src.iter().zip(&v).map(|(s, n)| s + 0.33 * n).collect();
                normalize(&mut v);
                v
            })
            .collect()
    };
    for lib in &a.libs {
        let before = rss();
        let mut ix = make(lib, &a, n + extra.len());
        let t = Instant::now();
        let cpu0 = process_cpu();
        let chunk = n.div_ceil(a.threads);
        std::thread::scope(|s| {
            for (c, part) in base.chunks(chunk).enumerate() {
                let ix = &ix;
                s.spawn(move || {
                    for (i, v) in part.iter().enumerate() {
                        ix.add((c * chunk + i) as u64, v);
                    }
                });
            }
        });
        let build = t.elapsed().as_secs_f64();
        let build_cpu = (process_cpu() - cpu0).as_secs_f64();
        let bytes = (rss().saturating_sub(before)) as f64 / n as f64;
        let mut rows = Vec::new();
        let mut sim_err = 0f32;
        for &ef in &a.efs {
            let mut lat = Vec::with_capacity(queries.len());
            let mut cpu = Vec::with_capacity(queries.len());
            let (mut r1, mut r10) = (0.0, 0.0);
            let mut near1 = 0.0;
            for (qi, (q, tr)) in queries.iter().zip(&truth).enumerate() {
                let t = Instant::now();
                let c = thread_cpu();
                let scored = ix.scored(q, 10, ef);
                cpu.push(thread_cpu() - c);
                lat.push(t.elapsed());
                for (k, sim) in &scored {
                    let e = (sim - dot(q, &base[*k as usize])).abs();
                    if e > sim_err {
                        sim_err = e;
                    }
                }
                let f: Vec<u64> = scored.into_iter().map(|x| x.0).collect();
                r1 += recall(&f, tr, 1);
                if qi % 2 == 0 {
                    near1 += recall(&f, tr, 1);
                }
                r10 += recall(&f, tr, 10);
            }
            let nq = queries.len() as f64;
            rows.push((
                ef,
                pct(&mut lat, 0.5),
                pct(&mut lat, 0.99),
                pct(&mut cpu, 0.5),
                pct(&mut cpu, 0.99),
                r1 / nq,
                r10 / nq,
                near1 / (nq / 2.0),
            ));
        }
        // Inserts into the built index, one thread.
        let t = thread_cpu();
        for (i, v) in extra.iter().enumerate() {
            ix.add((n + i) as u64, v);
        }
        let insert_us = (thread_cpu() - t).as_secs_f64() * 1e6 / extra.len() as f64;
        // Deletes: every tenth vector.
        let t = thread_cpu();
        let mut native = true;
        let mut dead = HashSet::new();
        for k in (0..n as u64).step_by(10) {
            native &= ix.remove(k);
            dead.insert(k);
        }
        let delete_us = (thread_cpu() - t).as_secs_f64() * 1e6 / dead.len() as f64;
        let ef = *a.efs.last().unwrap();
        let mut r10 = 0.0;
        for (q, tr) in queries.iter().zip(&truth) {
            let alive: Vec<u64> = tr.iter().filter(|k| !dead.contains(k)).copied().collect();
            let f = ix.search(q, 10, ef);
            r10 += recall(&f, &alive, 10);
        }
        let after = r10 / queries.len() as f64;
        for (ef, p50, p99, c50, c99, r1, r10, near1) in rows {
            println!(
                "| {} | {n} | {lib} | {}/{} | {build:.1} | {build_cpu:.1} | {bytes:.0} | {ef} | {p50:.0} | {p99:.0} | {c50:.0} | {c99:.0} | {near1:.3} | {r1:.3} | {r10:.3} | {insert_us:.0} | {delete_us:.1}{} | {after:.3} (efs {}) | {sim_err:.4} |",
                a.data,
                a.m,
                a.efc,
                if native { "" } else { " (tombstone)" },
                *a.efs.last().unwrap()
            );
        }
        drop(ix);
    }
}
