//! The in-memory vector index of the semantic tier. Pure: no Redis types, no I/O.
//!
//! Vectors are grouped by *scope*: (database, cache, scope digest), where the digest covers
//! the normalization version, model, system prompt and the cache's generation (see
//! [`super::scope_digest`]). A search only ever looks inside one scope, so another model's,
//! another system prompt's or an invalidated generation's entries can never match.
//!
//! Each vector is kept twice: as float32 (unit length) for the exact cosine, and as its sign
//! bits for a fast first pass. Large scopes are searched in two steps: Hamming distance over
//! the sign bits (48 bytes per 384-d vector) picks the `RERANK` nearest candidates, whose exact
//! cosine then decides. Small scopes are scanned exactly.

use std::collections::HashMap;
use std::sync::Arc;

/// A scope: database, cache name, scope digest.
pub type ScopeKey = (i32, Box<[u8]>, [u8; 16]);

/// Below this many vectors a scope is scanned exactly.
const EXACT_BELOW: usize = 2048;
/// Candidates kept by the Hamming pass for the exact rerank.
const RERANK: usize = 256;

/// One match: similarity, the entry key, its normalized question.
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    pub similarity: f32,
    pub key: Arc<[u8]>,
    pub question: Arc<str>,
}

#[derive(Default)]
struct Scope {
    dims: usize,
    keys: Vec<Arc<[u8]>>,
    questions: Vec<Arc<str>>,
    /// The unit vectors, `dims` floats each.
    vecs: Blocks<f32>,
    /// Their sign bits, `words` each.
    bits: Blocks<u64>,
}

/// Items a block holds: storage grows by whole blocks, never by copying what is there (a
/// large scope's vectors are never reallocated), except the first block of a scope, which
/// grows by a quarter at a time so small scopes stay small.
const BLOCK: usize = 1024;

/// Fixed-width items of `T` in blocks of `BLOCK`.
#[derive(Default)]
struct Blocks<T> {
    width: usize,
    blocks: Vec<Vec<T>>,
    len: usize,
}

impl<T: Copy> Blocks<T> {
    fn get(&self, i: usize) -> &[T] {
        let o = (i % BLOCK) * self.width;
        &self.blocks[i / BLOCK][o..o + self.width]
    }

    fn push(&mut self, item: &[T]) {
        if self.len == self.blocks.len() * BLOCK {
            let first = self.blocks.is_empty();
            let items = if first { 16 } else { BLOCK };
            self.blocks.push(Vec::with_capacity(items * self.width));
        }
        let w = self.width;
        let Some(last) = self.blocks.last_mut() else {
            return;
        };
        if last.len() == last.capacity() {
            let items = last.len() / w;
            let more = (items / 4).max(16).min(BLOCK - items);
            last.reserve_exact(more * w);
        }
        last.extend_from_slice(item);
        self.len += 1;
    }

    /// Moves the last item into slot `i` and drops the last slot.
    fn swap_remove(&mut self, i: usize) {
        let last = self.len - 1;
        if i != last {
            let moved = self.get(last).to_vec();
            let o = (i % BLOCK) * self.width;
            self.blocks[i / BLOCK][o..o + self.width].copy_from_slice(&moved);
        }
        if let Some(b) = self.blocks.last_mut() {
            b.truncate(b.len() - self.width);
            if b.is_empty() {
                self.blocks.pop();
            }
        }
        self.len -= 1;
    }

    /// Items, a block at a time.
    fn chunks(&self) -> impl Iterator<Item = &[T]> {
        self.blocks
            .iter()
            .flat_map(move |b| b.chunks_exact(self.width))
    }

    fn bytes(&self) -> usize {
        self.blocks.iter().map(|b| b.capacity()).sum::<usize>() * std::mem::size_of::<T>()
    }

    fn used_bytes(&self) -> usize {
        self.len * self.width * std::mem::size_of::<T>()
    }
}

impl Scope {
    fn words(&self) -> usize {
        self.dims.div_ceil(64)
    }

    fn len(&self) -> usize {
        self.keys.len()
    }

    fn push(&mut self, key: Arc<[u8]>, question: Arc<str>, v: &[f32]) -> usize {
        if self.keys.len() == self.keys.capacity() {
            // A pointer each: doubling costs little here.
            let more = (self.keys.len() / 4).max(16);
            self.keys.reserve_exact(more);
            self.questions.reserve_exact(more);
        }
        self.vecs.width = self.dims;
        self.bits.width = self.words();
        self.keys.push(key);
        self.questions.push(question);
        self.vecs.push(v);
        let bits: Vec<u64> = sign_bits(v).collect();
        self.bits.push(&bits);
        self.len() - 1
    }

    /// Removes slot `i` by moving the last one into it; returns the key now at `i`, if any.
    fn swap_remove(&mut self, i: usize) -> Option<Arc<[u8]>> {
        let last = self.len() - 1;
        self.vecs.swap_remove(i);
        self.bits.swap_remove(i);
        self.keys.swap_remove(i);
        self.questions.swap_remove(i);
        (i != last).then(|| self.keys[i].clone())
    }
}

/// Where an entry's vector lives: scope id and position in it.
#[derive(Clone, Copy)]
struct Slot {
    scope: u32,
    at: u32,
}

/// Every indexed entry, by scope.
#[derive(Default)]
pub struct Index {
    ids: HashMap<ScopeKey, u32>,
    /// By scope id; `None` once emptied (ids are reused).
    scopes: Vec<Option<(ScopeKey, Scope)>>,
    free: Vec<u32>,
    /// (database, entry key) -> where its vector is.
    slots: HashMap<(i32, Arc<[u8]>), Slot>,
}

/// Longest vector accepted (OpenAI's largest embedding has 3072 dimensions).
pub const MAX_DIMS: usize = 4096;

/// The vector scaled to unit length, if it is usable: 1 to `MAX_DIMS` finite values, not all
/// zero.
pub fn unit(v: &[f32]) -> Option<Vec<f32>> {
    if v.is_empty() || v.len() > MAX_DIMS || v.iter().any(|x| !x.is_finite()) {
        return None;
    }
    let norm = v
        .iter()
        .map(|x| (*x as f64) * (*x as f64))
        .sum::<f64>()
        .sqrt();
    if !(norm.is_finite() && norm > 1e-12) {
        return None;
    }
    Some(v.iter().map(|x| (*x as f64 / norm) as f32).collect())
}

fn sign_bits(v: &[f32]) -> impl Iterator<Item = u64> + '_ {
    v.chunks(64).map(|c| {
        c.iter()
            .enumerate()
            .fold(0u64, |w, (i, x)| if *x > 0.0 { w | (1 << i) } else { w })
    })
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    // Four accumulators let the compiler vectorise without reassociating one sum.
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let tail: f32 = ra.iter().zip(rb).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f32>() + tail
}

impl Index {
    fn scope_id(&mut self, scope: ScopeKey) -> u32 {
        if let Some(id) = self.ids.get(&scope) {
            return *id;
        }
        let id = match self.free.pop() {
            Some(id) => id,
            None => {
                self.scopes.push(None);
                (self.scopes.len() - 1) as u32
            }
        };
        self.scopes[id as usize] = Some((scope.clone(), Scope::default()));
        self.ids.insert(scope, id);
        id
    }

    fn release(&mut self, id: u32) {
        if let Some((key, _)) = self.scopes.get_mut(id as usize).and_then(Option::take) {
            self.ids.remove(&key);
            self.free.push(id);
        }
    }

    fn scope(&self, scope: &ScopeKey) -> Option<&Scope> {
        let id = *self.ids.get(scope)?;
        self.scopes.get(id as usize)?.as_ref().map(|(_, s)| s)
    }

    /// Adds (or replaces) the vector of entry `key` in database `db`. `v` must be a unit
    /// vector (see [`unit`]); a vector whose length differs from its scope's is refused.
    pub fn insert(&mut self, scope: ScopeKey, key: &[u8], question: &str, v: &[f32]) -> bool {
        self.remove(scope.0, key);
        if v.is_empty() || v.len() > MAX_DIMS {
            return false;
        }
        let db = scope.0;
        let id = self.scope_id(scope);
        let Some((_, s)) = self.scopes[id as usize].as_mut() else {
            return false;
        };
        if s.len() == 0 {
            s.dims = v.len();
        }
        if v.len() != s.dims {
            if s.len() == 0 {
                self.release(id);
            }
            return false;
        }
        let key: Arc<[u8]> = key.into();
        let at = s.push(key.clone(), question.into(), v) as u32;
        self.slots.insert((db, key), Slot { scope: id, at });
        true
    }

    /// Forgets entry `key` of database `db`; whether it was indexed.
    pub fn remove(&mut self, db: i32, key: &[u8]) -> bool {
        let probe: Arc<[u8]> = key.into();
        let Some(slot) = self.slots.remove(&(db, probe)) else {
            return false;
        };
        let Some(Some((_, s))) = self.scopes.get_mut(slot.scope as usize) else {
            return true;
        };
        if let Some(moved) = s.swap_remove(slot.at as usize) {
            if let Some(m) = self.slots.get_mut(&(db, moved)) {
                m.at = slot.at;
            }
        }
        if s.len() == 0 {
            self.release(slot.scope);
        }
        true
    }

    /// Forgets every scope of `cache` in `db` (its generation changed: old entries are
    /// never served again).
    pub fn drop_cache(&mut self, db: i32, cache: &[u8]) {
        let gone: Vec<u32> = self
            .ids
            .iter()
            .filter(|(k, _)| k.0 == db && &*k.1 == cache)
            .map(|(_, id)| *id)
            .collect();
        for id in gone {
            if let Some(Some((_, s))) = self.scopes.get_mut(id as usize) {
                for key in std::mem::take(&mut s.keys) {
                    self.slots.remove(&(db, key));
                }
            }
            self.release(id);
        }
    }

    /// Forgets database `db`, or every database (`None`).
    pub fn clear(&mut self, db: Option<i32>) {
        match db {
            None => *self = Index::default(),
            Some(db) => {
                let gone: Vec<u32> = self
                    .ids
                    .iter()
                    .filter(|(k, _)| k.0 == db)
                    .map(|(_, id)| *id)
                    .collect();
                for id in gone {
                    self.release(id);
                }
                self.slots.retain(|k, _| k.0 != db);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Bytes held by the vectors themselves (float32) and by the whole index (estimate:
    /// vectors, sign bits, keys, questions, tables).
    pub fn memory(&self) -> (usize, usize) {
        let mut raw = 0;
        let mut total = 0;
        for (k, s) in self.scopes.iter().flatten() {
            raw += s.vecs.used_bytes();
            total += s.vecs.bytes() + s.bits.bytes();
            total += s.keys.capacity() * 16 + s.questions.capacity() * 16;
            total += s.keys.iter().map(|k| k.len() + 16).sum::<usize>();
            total += s.questions.iter().map(|q| q.len() + 16).sum::<usize>();
            total += 2 * (k.1.len() + 64);
        }
        // A hash table slot: key (db, Arc) and value (scope id, position), plus control.
        total += self.slots.capacity() * (8 + 16 + 8 + 1);
        (raw, total)
    }

    /// The best matches of `query` (a unit vector) in `scope` with similarity at least
    /// `threshold`, best first, at most `limit`.
    pub fn search(
        &self,
        scope: &ScopeKey,
        query: &[f32],
        threshold: f32,
        limit: usize,
    ) -> Vec<Found> {
        let Some(s) = self.scope(scope) else {
            return Vec::new();
        };
        if query.len() != s.dims || s.len() == 0 || limit == 0 {
            return Vec::new();
        }
        let score = |i: usize| dot(query, s.vecs.get(i));
        let mut found: Vec<(f32, usize)> = if s.len() < EXACT_BELOW {
            (0..s.len()).map(|i| (score(i), i)).collect()
        } else {
            candidates(s, query)
                .into_iter()
                .map(|i| (score(i), i))
                .collect()
        };
        found.retain(|(sim, _)| *sim >= threshold);
        found.sort_by(|a, b| b.0.total_cmp(&a.0));
        found.truncate(limit);
        found
            .into_iter()
            .map(|(similarity, i)| Found {
                similarity,
                key: s.keys[i].clone(),
                question: s.questions[i].clone(),
            })
            .collect()
    }
}

/// The `RERANK` entries of `s` whose sign bits are nearest to the query's (ties at the
/// cut-off included), found with a histogram of distances instead of a sort.
fn candidates(s: &Scope, query: &[f32]) -> Vec<usize> {
    let q: Vec<u64> = sign_bits(query).collect();
    let mut dist: Vec<u16> = Vec::with_capacity(s.len());
    hamming_all(&s.bits, &q, &mut dist);
    let mut hist = vec![0usize; s.words() * 64 + 1];
    for d in &dist {
        hist[*d as usize] += 1;
    }
    let mut cut = 0;
    let mut taken = 0;
    for (d, n) in hist.iter().enumerate() {
        taken += n;
        cut = d;
        if taken >= RERANK {
            break;
        }
    }
    dist.iter()
        .enumerate()
        .filter(|(_, d)| **d as usize <= cut)
        .map(|(i, _)| i)
        .collect()
}

/// Hamming distances of every item of `bits` to `q`, with the CPU's popcount instruction
/// where it has one (x86-64's baseline has none: the portable one is several times slower).
fn hamming_all(bits: &Blocks<u64>, q: &[u64], out: &mut Vec<u16>) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("popcnt") {
            // SAFETY: the feature was just detected.
            unsafe { hamming_popcnt(bits, q, out) };
            return;
        }
    }
    hamming_portable(bits, q, out);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "popcnt")]
unsafe fn hamming_popcnt(bits: &Blocks<u64>, q: &[u64], out: &mut Vec<u16>) {
    hamming_portable(bits, q, out)
}

#[inline(always)]
fn hamming_portable(bits: &Blocks<u64>, q: &[u64], out: &mut Vec<u16>) {
    for b in bits.chunks() {
        let d: u32 = b.iter().zip(q).map(|(x, y)| (x ^ y).count_ones()).sum();
        out.push(d as u16);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(cache: &str) -> ScopeKey {
        (0, cache.as_bytes().into(), [7; 16])
    }

    /// A deterministic pseudo-random unit vector.
    fn rnd(seed: u64, dims: usize) -> Vec<f32> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let v: Vec<f32> = (0..dims)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                ((x >> 11) as f64 / (1u64 << 53) as f64 - 0.5) as f32
            })
            .collect();
        unit(&v).unwrap()
    }

    #[test]
    fn unit_refuses_unusable_vectors() {
        assert!(unit(&[]).is_none());
        assert!(unit(&[0.0, 0.0]).is_none());
        assert!(unit(&[f32::NAN, 1.0]).is_none());
        assert!(unit(&[f32::INFINITY]).is_none());
        assert!(unit(&vec![1.0; MAX_DIMS + 1]).is_none());
        let u = unit(&[3.0, 4.0]).unwrap();
        assert!((u[0] - 0.6).abs() < 1e-6 && (u[1] - 0.8).abs() < 1e-6);
        // Huge finite values do not overflow the norm.
        assert!(unit(&[f32::MAX, f32::MAX]).is_some());
    }

    #[test]
    fn finds_the_nearest_in_its_scope_only() {
        let mut ix = Index::default();
        let a = rnd(1, 32);
        let b = rnd(2, 32);
        assert!(ix.insert(scope("faq"), b"k1", "q one", &a));
        assert!(ix.insert(scope("faq"), b"k2", "q two", &b));
        assert!(ix.insert(scope("other"), b"k3", "q three", &a));
        let f = ix.search(&scope("faq"), &a, 0.99, 5);
        assert_eq!(f.len(), 1);
        assert_eq!(&*f[0].key, b"k1");
        assert_eq!(&*f[0].question, "q one");
        assert!((f[0].similarity - 1.0).abs() < 1e-5);
        // Another scope digest (model, system prompt or generation) sees nothing.
        let other_digest = (0, b"faq"[..].into(), [8; 16]);
        assert!(ix.search(&other_digest, &a, 0.0, 5).is_empty());
        // Another database neither.
        assert!(ix
            .search(&(1, b"faq"[..].into(), [7; 16]), &a, 0.0, 5)
            .is_empty());
        // Wrong dimension: refused, and searching with it finds nothing.
        assert!(!ix.insert(scope("faq"), b"k4", "x", &rnd(3, 16)));
        assert!(ix.search(&scope("faq"), &rnd(3, 16), 0.0, 5).is_empty());
    }

    #[test]
    fn remove_replace_drop_and_clear_keep_slots_consistent() {
        let mut ix = Index::default();
        let vs: Vec<Vec<f32>> = (0..50).map(|i| rnd(i, 24)).collect();
        for (i, v) in vs.iter().enumerate() {
            ix.insert(
                scope("faq"),
                format!("k{i}").as_bytes(),
                &format!("q{i}"),
                v,
            );
        }
        assert_eq!(ix.len(), 50);
        for i in (0..50).step_by(3) {
            assert!(ix.remove(0, format!("k{i}").as_bytes()));
            assert!(!ix.remove(0, format!("k{i}").as_bytes()));
        }
        for (i, v) in vs.iter().enumerate() {
            let f = ix.search(&scope("faq"), v, 0.999, 1);
            if i % 3 == 0 {
                assert!(f.iter().all(|f| &*f.key != format!("k{i}").as_bytes()));
            } else {
                assert_eq!(&*f[0].key, format!("k{i}").as_bytes(), "k{i}");
                assert_eq!(&*f[0].question, format!("q{i}"));
            }
        }
        // Re-inserting a key replaces its vector.
        ix.insert(scope("faq"), b"k1", "new", &vs[0]);
        assert_eq!(&*ix.search(&scope("faq"), &vs[0], 0.999, 1)[0].key, b"k1");
        assert!(ix.search(&scope("faq"), &vs[1], 0.999, 1).is_empty());
        ix.drop_cache(0, b"faq");
        assert!(ix.is_empty());
        ix.insert(scope("a"), b"x", "q", &vs[0]);
        ix.insert((3, b"a"[..].into(), [7; 16]), b"x", "q", &vs[0]);
        ix.clear(Some(3));
        assert_eq!(ix.len(), 1);
        ix.clear(None);
        assert!(ix.is_empty());
    }

    /// The two-step search finds what an exact scan finds, on clustered data where many
    /// vectors are close to the query.
    #[test]
    fn hamming_prefilter_agrees_with_exact_search() {
        let dims = 384;
        let mut ix = Index::default();
        let centres: Vec<Vec<f32>> = (0..50).map(|i| rnd(1000 + i, dims)).collect();
        let mut all = Vec::new();
        for i in 0..10_000u64 {
            let c = &centres[(i % 50) as usize];
            let noise = rnd(i, dims);
            let v: Vec<f32> = c.iter().zip(&noise).map(|(a, b)| a + 0.6 * b).collect();
            let v = unit(&v).unwrap();
            ix.insert(scope("big"), format!("k{i}").as_bytes(), "q", &v);
            all.push(v);
        }
        let mut agree = 0;
        for t in 0..100u64 {
            let c = &centres[(t % 50) as usize];
            let noise = rnd(50_000 + t, dims);
            let q = unit(
                &c.iter()
                    .zip(&noise)
                    .map(|(a, b)| a + 0.3 * b)
                    .collect::<Vec<_>>(),
            )
            .unwrap();
            let best = (0..all.len())
                .max_by(|a, b| dot(&q, &all[*a]).total_cmp(&dot(&q, &all[*b])))
                .unwrap();
            let f = ix.search(&scope("big"), &q, -1.0, 1);
            if &*f[0].key == format!("k{best}").as_bytes() {
                agree += 1;
            }
        }
        assert!(agree >= 99, "top-1 agreed {agree}/100");
    }

    #[test]
    fn memory_stays_near_the_raw_vectors() {
        let mut ix = Index::default();
        for i in 0..2000u64 {
            let key = format!("qa:{{faq}}:{:064x}", i);
            ix.insert(
                scope("faq"),
                key.as_bytes(),
                "what is our refund policy",
                &rnd(i, 384),
            );
        }
        let (raw, total) = ix.memory();
        assert_eq!(raw, 2000 * 384 * 4);
        assert!(total as f64 <= 1.25 * raw as f64, "{total} vs {raw}");
    }
}
