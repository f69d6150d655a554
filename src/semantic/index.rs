//! The in-memory vector index of the semantic tier. Pure: no Redis types, no I/O.
//!
//! Vectors are grouped by *scope*: (database, cache, scope digest), where the digest covers
//! the normalization version, model, system prompt and the cache's generation (see
//! [`super::scope_digest`]). A search only ever looks inside one scope, so another model's,
//! another system prompt's or an invalidated generation's entries can never match.
//!
//! A scope keeps its newest vectors as float32 (unit length) in its *tail*, scanned exactly.
//! Once a scope holds [`GRAPH_FROM`] vectors it also gets an HNSW graph (`usearch`, vectors
//! quantized to [`QUANTIZATION`] inside it), and the tail is moved into the graph a batch at a
//! time by the index's own thread ([`Index::graph_batch`], [`Index::graph_add`] under a read
//! lock, so searches go on meanwhile, then [`Index::graph_commit`]). A search looks at the
//! graph and at the tail; so a vector is searchable from the moment it is inserted, whether
//! or not the graph has it yet. Small scopes (most caches) never get a graph and cost a few
//! hundred bytes of fixed overhead.
//!
//! Every member of a scope has a stable id. The graph's key of a vector is its id and the
//! id's *generation* (bumped when the id is reused), so a vector left in the graph by an entry
//! that has since gone can never be taken for the entry that reused its id: a graph match
//! counts only if its id is live, of the same generation and marked as in the graph. Removal
//! is usearch's own (the slot is marked deleted, skipped by searches and reused by later
//! additions).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use usearch::{MetricKind, ScalarKind};

use super::gate::{Gate, ADD_THREADS, CONTEXTS};

/// A scope: database, cache name, scope digest.
pub type ScopeKey = (i32, Box<[u8]>, [u8; 16]);

/// A scope gets an HNSW graph once it holds this many vectors; below, the exact scan of its
/// tail is as fast as a graph search (about 0.1 ms at 384 dimensions) and costs no graph.
pub const GRAPH_FROM: usize = 2048;
/// Vectors moved from a tail into its graph per batch.
pub const GRAPH_BATCH: usize = 256;
/// A graphed scope whose tail is longer than this (a rebuild in progress) is searched in its
/// graph only: the newest entries are then missed (a miss, never a wrong answer) rather than
/// scanned at the cost of an exact search of the whole scope.
const TAIL_SCAN_MAX: usize = 16_384;
/// HNSW parameters (see bench/ann and docs/semantic.md for the measurements behind them).
const CONNECTIVITY: usize = 16;
const EXPANSION_ADD: usize = 128;
const EXPANSION_SEARCH: usize = 128;
/// How vectors are stored in a graph.
pub const QUANTIZATION: ScalarKind = ScalarKind::F16;
/// An addition turn on a graph ends after this long (or as soon as a search waits, see
/// [`Gate`]), so searches of the graph wait at most about this long.
const ADD_TURN: std::time::Duration = std::time::Duration::from_millis(2);

/// One match: similarity, the entry key, its normalized question.
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    pub similarity: f32,
    pub key: Arc<[u8]>,
    pub question: Arc<str>,
}

struct Member {
    key: Arc<[u8]>,
    question: Arc<str>,
}

/// `at` of a member whose vector is in the graph (not in the tail).
const IN_GRAPH: u32 = u32::MAX;

/// A scope's HNSW graph. What usearch allows at once, and how this module keeps to it
/// (docs/semantic.md, "What usearch guarantees"): `reserve` and `remove` only with `&mut`
/// access to the [`Index`] (nothing else runs on any graph: the caller's lock gives that);
/// additions ([`Index::graph_add`]) and searches with shared access, but never at the same
/// time on one graph: the [`Gate`] keeps them apart. `memory_usage` walks every node and is
/// read only with `&mut` access ([`Index::graph_commit`]), cached in `bytes`.
struct Graph {
    ix: usearch::Index,
    gate: Gate,
    /// Unique per graph made, so a batch prepared for one graph is never added to another.
    serial: u64,
    /// `ix.memory_usage()` and `ix.size()` when last measured.
    bytes: usize,
    measured_at: usize,
}

impl Graph {
    /// A graph around `ix`, its memory measured.
    fn new(ix: usearch::Index, serial: u64) -> Graph {
        let mut g = Graph {
            ix,
            gate: Gate::default(),
            serial,
            bytes: 0,
            measured_at: 0,
        };
        g.measure(true);
        g
    }

    /// Measures the graph's memory when it has changed size by a sixteenth since the last
    /// time (a walk over every node: not on each batch of a large graph). `&mut`: no
    /// addition runs.
    fn measure(&mut self, force: bool) {
        let size = self.ix.size();
        if force || size.abs_diff(self.measured_at) >= (self.measured_at / 16).max(GRAPH_BATCH) {
            self.bytes = self.ix.memory_usage();
            self.measured_at = size;
        }
    }
}

/// Items a block holds: a tail grows by whole blocks, never by copying what is there (a
/// rebuild's long tail is never reallocated on the main thread), except its first block,
/// which grows by an eighth at a time (at least one item) so small scopes carry no empty room.
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
            let items = if self.blocks.is_empty() { 1 } else { BLOCK };
            self.blocks.push(Vec::with_capacity(items * self.width));
        }
        let w = self.width;
        let Some(last) = self.blocks.last_mut() else {
            return;
        };
        if last.len() == last.capacity() {
            let items = last.len() / w.max(1);
            let more = (items / 8).max(1).min(BLOCK - items);
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
            + self.blocks.capacity() * std::mem::size_of::<Vec<T>>()
    }
}

#[derive(Default)]
struct Scope {
    dims: usize,
    /// By id: the entry, `None` for a free id.
    members: Vec<Option<Member>>,
    /// By id: bumped on each reuse of the id.
    gens: Vec<u32>,
    /// By id: position in the tail, or `IN_GRAPH`.
    at: Vec<u32>,
    free: Vec<u32>,
    live: usize,
    /// Ids of the tail's vectors, and the vectors (`dims` floats each).
    tail_ids: Vec<u32>,
    tail: Blocks<f32>,
    graph: Option<Graph>,
    /// Graph members restored from a saved checkpoint that no entry has claimed yet (entry
    /// key -> id): not searchable (their `members` slot is `None`) until the rebuild scan
    /// finds their entry with the same vector ([`Index::insert`]); removed by
    /// [`Index::settle`] when the scan ends.
    unclaimed: HashMap<Arc<[u8]>, u32>,
}

fn graph_key(id: u32, generation: u32) -> u64 {
    ((generation as u64) << 32) | id as u64
}

impl Scope {
    fn push(&mut self, member: Member, v: &[f32]) -> u32 {
        let id = match self.free.pop() {
            Some(id) => {
                self.gens[id as usize] = self.gens[id as usize].wrapping_add(1);
                id
            }
            None => {
                grow(&mut self.members);
                grow(&mut self.gens);
                grow(&mut self.at);
                self.members.push(None);
                self.gens.push(0);
                self.at.push(0);
                (self.members.len() - 1) as u32
            }
        };
        self.members[id as usize] = Some(member);
        self.at[id as usize] = self.tail_ids.len() as u32;
        grow(&mut self.tail_ids);
        self.tail_ids.push(id);
        self.tail.width = self.dims;
        self.tail.push(v);
        self.live += 1;
        id
    }

    /// Drops tail position `p` by moving the last one into it.
    fn tail_remove(&mut self, p: usize) {
        let last = self.tail_ids.len() - 1;
        if p != last {
            let moved = self.tail_ids[last];
            self.tail_ids[p] = moved;
            self.at[moved as usize] = p as u32;
        }
        self.tail_ids.pop();
        self.tail.swap_remove(p);
    }

    fn remove(&mut self, id: u32) {
        let i = id as usize;
        if self.members.get(i).and_then(Option::as_ref).is_none() {
            return;
        }
        self.members[i] = None;
        if self.at[i] == IN_GRAPH {
            if let Some(g) = &self.graph {
                let _ = g.ix.remove(graph_key(id, self.gens[i]));
            }
        } else {
            self.tail_remove(self.at[i] as usize);
        }
        self.free.push(id);
        self.live -= 1;
    }

    /// The id of a restored, unclaimed graph member for entry `key` whose saved vector is
    /// `v` (as f16: each value within 2^-10 of it), now marked claimed (the caller stores the
    /// member). A restored member of that key with another vector leaves the graph.
    fn claim(&mut self, key: Arc<[u8]>, v: &[f32]) -> Option<u32> {
        let id = self.unclaimed.remove(&key)?;
        let g = self.graph.as_ref()?;
        let label = graph_key(id, self.gens[id as usize]);
        let mut saved = vec![0f32; self.dims];
        let same = matches!(g.ix.get(label, &mut saved), Ok(n) if n == 1)
            && saved
                .iter()
                .zip(v)
                .all(|(a, b)| (a - b).abs() <= 1.0 / 1024.0);
        if same {
            return Some(id);
        }
        let _ = g.ix.remove(label);
        self.free.push(id);
        None
    }

    /// Removes every restored member no entry claimed; how many.
    fn settle(&mut self) -> usize {
        let gone = std::mem::take(&mut self.unclaimed);
        for id in gone.values() {
            if let Some(g) = &self.graph {
                let _ = g.ix.remove(graph_key(*id, self.gens[*id as usize]));
            }
            self.free.push(*id);
        }
        if let Some(g) = self.graph.as_mut() {
            g.measure(true);
        }
        gone.len()
    }

    fn member(&self, id: u32) -> Option<&Member> {
        self.members.get(id as usize)?.as_ref()
    }

    /// Matches at or above `threshold`, unsorted; whether the search was complete.
    fn matches(
        &self,
        q: &[f32],
        threshold: f32,
        limit: usize,
        deadline: Option<std::time::Instant>,
    ) -> (Vec<(f32, u32)>, bool) {
        let mut out = Vec::new();
        // Restored members not claimed yet (a rebuild in progress) are not served.
        let mut complete = self.unclaimed.is_empty();
        if self.graph.is_none() || self.tail_ids.len() <= TAIL_SCAN_MAX {
            for (p, v) in self.tail.chunks().enumerate() {
                let sim = dot(q, v);
                if sim >= threshold {
                    out.push((sim, self.tail_ids[p]));
                }
            }
        } else {
            complete = false;
        }
        // Only committed members count (`at == IN_GRAPH`): a graph none of whose vectors is
        // committed yet is not searched.
        let graphed = self.live - self.tail_ids.len();
        if let Some(g) = self.graph.as_ref().filter(|_| graphed > 0) {
            let Some(turn) = g.gate.search(deadline) else {
                return (out, false);
            };
            let result = g.ix.search(q, limit.max(10));
            drop(turn);
            match result {
                Ok(m) => {
                    for (key, dist) in m.keys.iter().zip(&m.distances) {
                        let (id, generation) = (*key as u32, (*key >> 32) as u32);
                        let i = id as usize;
                        let current = self.member(id).is_some()
                            && self.gens[i] == generation
                            && self.at[i] == IN_GRAPH;
                        let sim = 1.0 - dist;
                        if current && sim >= threshold {
                            out.push((sim, id));
                        }
                    }
                }
                Err(_) => complete = false,
            }
        }
        (out, complete)
    }

    fn bytes(&self) -> usize {
        let mut b = std::mem::size_of::<Scope>();
        b += self.members.capacity() * std::mem::size_of::<Option<Member>>();
        b += (self.gens.capacity() + self.at.capacity() + self.free.capacity()) * 4;
        b += self.tail_ids.capacity() * 4 + self.tail.bytes();
        for m in self.members.iter().flatten() {
            b += m.key.len() + m.question.len() + 32;
        }
        b += self.unclaimed.capacity() * (16 + 4 + 1);
        if let Some(g) = &self.graph {
            b += g.bytes + std::mem::size_of::<Graph>();
        }
        b
    }

    fn raw_bytes(&self) -> usize {
        let per = match QUANTIZATION {
            ScalarKind::F32 => 4,
            ScalarKind::F16 | ScalarKind::BF16 => 2,
            _ => 1,
        };
        let graphed = self.live - self.tail_ids.len();
        self.tail_ids.len() * self.dims * 4 + graphed * self.dims * per
    }
}

/// Grows a per-member vector by an eighth at a time (at least 4), so small scopes stay
/// small and large ones carry little slack.
fn grow<T>(v: &mut Vec<T>) {
    if v.len() == v.capacity() {
        v.reserve_exact((v.len() / 8).max(4));
    }
}

/// Where an entry's vector lives: scope id and member id in it.
#[derive(Clone, Copy)]
struct Slot {
    scope: u32,
    at: u32,
}

/// Vectors taken from a scope's tail for its graph (see [`Index::graph_batch`]).
pub struct Batch {
    scope: u32,
    serial: u64,
    items: Vec<(u64, Vec<f32>)>,
    added: Vec<bool>,
    /// Whether `graph_add` stopped early.
    stopped: bool,
}

impl Batch {
    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
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
    /// Scopes that may have graph work: a graph to make or a tail to move into it.
    needy: HashSet<u32>,
    /// Graphs of released scopes, for the index thread to free (not the main thread).
    trash: Vec<usearch::Index>,
    serial: u64,
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

fn dot(a: &[f32], b: &[f32]) -> f32 {
    // Eight accumulators let the compiler vectorise without reassociating one sum.
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

fn new_graph(dims: usize, capacity: usize) -> Option<usearch::Index> {
    let o = usearch::IndexOptions {
        dimensions: dims,
        metric: MetricKind::Cos,
        quantization: QUANTIZATION,
        connectivity: CONNECTIVITY,
        expansion_add: EXPANSION_ADD,
        expansion_search: EXPANSION_SEARCH,
        multi: false,
    };
    let ix = match usearch::Index::new(&o) {
        Ok(ix) => ix,
        Err(e) => {
            eprintln!("usearch new: {e}");
            return None;
        }
    };
    if let Err(e) = ix.reserve_capacity_and_threads(capacity, CONTEXTS) {
        eprintln!("usearch reserve: {e}");
        return None;
    }
    Some(ix)
}

/// A graph read back from a checkpoint (see `persist`), for [`Index::adopt`].
pub struct Restored {
    pub scope: ScopeKey,
    pub dims: usize,
    ix: usearch::Index,
    members: Vec<(u64, Box<[u8]>)>,
}

/// Opens a saved graph file for `listed`: refused unless usearch's header matches what this
/// module writes (dimensions, cosine, [`QUANTIZATION`], one vector per key) and the graph
/// holds exactly the listed members (so it has no vector the manifest does not name).
pub fn open_graph(
    path: &std::path::Path,
    listed: &super::persist::Listed,
) -> Result<Restored, String> {
    let p = path.to_str().ok_or("path is not UTF-8")?;
    let meta = usearch::Index::metadata(p).map_err(|e| format!("header: {e}"))?;
    if meta.dimensions != listed.dims as u64
        || meta.metric != MetricKind::Cos
        || meta.quantization != QUANTIZATION
        || meta.multi
        || meta.count_present != listed.members.len() as u64
    {
        return Err("header differs from the manifest".into());
    }
    let ix = new_graph(listed.dims, 0).ok_or("cannot make a graph")?;
    ix.load(p).map_err(|e| format!("load: {e}"))?;
    if ix.dimensions() != listed.dims
        || ix.size() != listed.members.len()
        || ix.connectivity() != CONNECTIVITY
    {
        return Err("graph differs from the manifest".into());
    }
    ix.change_expansion_add(EXPANSION_ADD);
    ix.change_expansion_search(EXPANSION_SEARCH);
    let mut ids = HashSet::with_capacity(listed.members.len());
    for (label, _) in &listed.members {
        if !ids.insert(*label as u32) || !ix.contains(*label) {
            return Err("a listed member is missing from the graph".into());
        }
    }
    ix.reserve_capacity_and_threads(ix.size() + GRAPH_BATCH, CONTEXTS)
        .map_err(|e| format!("reserve: {e}"))?;
    Ok(Restored {
        scope: listed.scope.clone(),
        dims: listed.dims,
        ix,
        members: listed.members.clone(),
    })
}

impl Index {
    /// The graphs to checkpoint, with their committed members (graph key, entry key): every
    /// scope whose graph holds at least one committed vector. `None` while a restored graph
    /// still has unclaimed members (a rebuild in progress: the files it came from stay).
    pub fn to_save(&self) -> Option<Vec<super::persist::ToSave<'_>>> {
        let mut out = Vec::new();
        for (key, s) in self.scopes.iter().flatten() {
            if !s.unclaimed.is_empty() {
                return None;
            }
            let Some(g) = &s.graph else { continue };
            let members: Vec<(u64, Arc<[u8]>)> = s
                .members
                .iter()
                .enumerate()
                .filter(|(i, _)| s.at[*i] == IN_GRAPH)
                .filter_map(|(i, m)| {
                    let m = m.as_ref()?;
                    Some((graph_key(i as u32, s.gens[i]), m.key.clone()))
                })
                .collect();
            if members.is_empty() || members.len() != g.ix.size() {
                continue;
            }
            out.push(super::persist::ToSave {
                scope: key,
                dims: s.dims,
                graph: &g.ix,
                members,
            });
        }
        Some(out)
    }

    /// Takes restored graphs in, their members unclaimed: the rebuild scan's inserts claim
    /// them ([`Index::insert`]), [`Index::settle`] removes the rest. A scope that already has
    /// vectors keeps them and the restored graph is dropped.
    pub fn adopt(&mut self, restored: Vec<Restored>) -> usize {
        let mut taken = 0;
        for r in restored {
            let id = self.scope_id(r.scope.clone());
            let Some((_, s)) = self.scopes[id as usize].as_mut() else {
                continue;
            };
            if s.live > 0 || s.graph.is_some() {
                self.trash.push(r.ix);
                continue;
            }
            let n = r
                .members
                .iter()
                .map(|(l, _)| *l as u32 as usize + 1)
                .max()
                .unwrap_or(0);
            s.dims = r.dims;
            s.members = (0..n).map(|_| None).collect();
            s.gens = vec![0; n];
            s.at = vec![0; n];
            s.unclaimed = HashMap::with_capacity(r.members.len());
            for (label, key) in r.members {
                let (i, generation) = (label as u32 as usize, (label >> 32) as u32);
                s.gens[i] = generation;
                s.at[i] = IN_GRAPH;
                s.unclaimed.insert(key.into(), i as u32);
            }
            s.free = (0..n as u32)
                .rev()
                .filter(|i| s.at[*i as usize] != IN_GRAPH)
                .collect();
            taken += s.unclaimed.len();
            self.serial += 1;
            s.graph = Some(Graph::new(r.ix, self.serial));
            if s.unclaimed.is_empty() {
                self.release(id);
            }
        }
        taken
    }

    /// Removes the restored members no entry claimed (the rebuild scan has ended); how many.
    pub fn settle(&mut self) -> usize {
        let mut removed = 0;
        let mut empty = Vec::new();
        for (id, (_, s)) in self
            .scopes
            .iter_mut()
            .enumerate()
            .filter_map(|(i, s)| Some((i, s.as_mut()?)))
        {
            if s.unclaimed.is_empty() {
                continue;
            }
            removed += s.settle();
            if s.live == 0 {
                empty.push(id as u32);
            }
        }
        for id in empty {
            self.release(id);
        }
        removed
    }

    /// Whether restored members wait to be claimed or removed (for tests).
    #[cfg(test)]
    pub fn unsettled(&self) -> bool {
        self.scopes
            .iter()
            .flatten()
            .any(|(_, s)| !s.unclaimed.is_empty())
    }

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
        if let Some((key, s)) = self.scopes.get_mut(id as usize).and_then(Option::take) {
            self.ids.remove(&key);
            self.free.push(id);
            self.needy.remove(&id);
            if let Some(g) = s.graph {
                self.trash.push(g.ix);
            }
        }
    }

    fn scope(&self, scope: &ScopeKey) -> Option<&Scope> {
        let id = *self.ids.get(scope)?;
        self.scopes.get(id as usize)?.as_ref().map(|(_, s)| s)
    }

    /// Adds (or replaces) the vector of entry `key` in database `db`. `v` must be a unit
    /// vector (see [`unit`]); a vector whose length differs from its scope's is refused.
    /// Cheap: the vector goes to its scope's tail (the graph, if any, takes it later).
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
        if s.live == 0 && s.graph.is_none() {
            s.dims = v.len();
        }
        if v.len() != s.dims {
            if s.live == 0 && s.unclaimed.is_empty() {
                self.release(id);
            }
            return false;
        }
        let key: Arc<[u8]> = key.into();
        let member = Member {
            key: key.clone(),
            question: question.into(),
        };
        if let Some(at) = s.claim(member.key.clone(), v) {
            s.members[at as usize] = Some(member);
            s.live += 1;
            self.slots.insert((db, key), Slot { scope: id, at });
            return true;
        }
        let at = s.push(member, v);
        if s.live >= GRAPH_FROM || s.graph.is_some() {
            self.needy.insert(id);
        }
        self.slots.insert((db, key), Slot { scope: id, at });
        true
    }

    /// Whether inserting into `scope` would grow a large table (the entry map, or the
    /// scope's per-member vectors past [`BIG`] items): a copy or rehash of megabytes, which
    /// the main thread leaves to the index thread.
    pub fn insert_grows_large(&self, scope: &ScopeKey) -> bool {
        const BIG: usize = 16_384;
        if self.slots.len() >= self.slots.capacity() && self.slots.len() >= BIG {
            return true;
        }
        self.scope(scope).is_some_and(|s| {
            s.free.is_empty() && s.members.len() >= BIG && s.members.len() == s.members.capacity()
        })
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
        s.remove(slot.at);
        if s.live == 0 && s.unclaimed.is_empty() {
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
                for m in std::mem::take(&mut s.members).into_iter().flatten() {
                    self.slots.remove(&(db, m.key));
                }
            }
            self.release(id);
        }
    }

    /// Forgets database `db`, or every database (`None`).
    pub fn clear(&mut self, db: Option<i32>) {
        match db {
            None => {
                // Graphs go to the trash, for the index thread to free (not the caller).
                let mut trash = std::mem::take(&mut self.trash);
                for (_, s) in std::mem::take(&mut self.scopes).into_iter().flatten() {
                    trash.extend(s.graph.map(|g| g.ix));
                }
                let serial = self.serial;
                *self = Index::default();
                self.trash = trash;
                self.serial = serial;
            }
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

    /// Bytes held by the vectors themselves (float32 in tails, quantized in graphs) and by
    /// the whole index (estimate: vectors, graphs, keys, questions, tables).
    pub fn memory(&self) -> (usize, usize) {
        let mut raw = 0;
        let mut total = 0;
        for (k, s) in self.scopes.iter().flatten() {
            raw += s.raw_bytes();
            total += s.bytes() + 2 * (k.1.len() + 64);
        }
        // A hash table slot: key (db, Arc) and value (scope id, member id), plus control.
        total += self.slots.capacity() * (8 + 16 + 8 + 1);
        (raw, total)
    }

    /// Entries not in a graph yet in scopes that have one (a rebuild or a burst of inserts
    /// the index thread has not caught up with).
    pub fn lagging(&self) -> usize {
        self.needy
            .iter()
            .filter_map(|id| self.scopes.get(*id as usize)?.as_ref())
            .map(|(_, s)| s.tail_ids.len())
            .sum()
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
        self.search_complete(scope, query, threshold, limit).0
    }

    /// [`Index::search`], and whether every vector of the scope was looked at (not: a long
    /// tail skipped during a rebuild, the graph busy past `deadline`, or its search failed).
    pub fn search_complete(
        &self,
        scope: &ScopeKey,
        query: &[f32],
        threshold: f32,
        limit: usize,
    ) -> (Vec<Found>, bool) {
        self.search_until(scope, query, threshold, limit, None)
    }

    /// [`Index::search_complete`], leaving a graph out if it stays busy with additions
    /// past `deadline`.
    pub fn search_until(
        &self,
        scope: &ScopeKey,
        query: &[f32],
        threshold: f32,
        limit: usize,
        deadline: Option<std::time::Instant>,
    ) -> (Vec<Found>, bool) {
        let Some(s) = self.scope(scope) else {
            return (Vec::new(), true);
        };
        if query.len() != s.dims || s.live == 0 || limit == 0 {
            return (Vec::new(), s.unclaimed.is_empty());
        }
        let (mut found, complete) = s.matches(query, threshold, limit, deadline);
        found.sort_by(|a, b| b.0.total_cmp(&a.0));
        found.truncate(limit);
        let found = found
            .into_iter()
            .filter_map(|(similarity, id)| {
                let m = s.member(id)?;
                Some(Found {
                    similarity,
                    key: m.key.clone(),
                    question: m.question.clone(),
                })
            })
            .collect();
        (found, complete)
    }

    /// Whether some scope has graph work (see [`Index::graph_batch`]).
    pub fn has_graph_work(&self) -> bool {
        !self.needy.is_empty()
    }

    /// Graphs of released scopes, to be dropped by the caller outside the lock.
    pub fn take_trash(&mut self) -> Vec<usearch::Index> {
        std::mem::take(&mut self.trash)
    }

    /// Up to `max` tail vectors of a scope that has (or now gets) a graph, copied out for
    /// [`Index::graph_add`]; `None` when no scope has graph work left.
    pub fn graph_batch(&mut self, max: usize) -> Option<Batch> {
        loop {
            let id = *self.needy.iter().next()?;
            let Some(Some((_, s))) = self.scopes.get_mut(id as usize) else {
                self.needy.remove(&id);
                continue;
            };
            if s.graph.is_none() {
                if s.live < GRAPH_FROM {
                    self.needy.remove(&id);
                    continue;
                }
                let Some(ix) = new_graph(s.dims, s.live + max) else {
                    self.needy.remove(&id);
                    continue;
                };
                self.serial += 1;
                s.graph = Some(Graph::new(ix, self.serial));
            }
            let n = s.tail_ids.len().min(max);
            let Some(g) = s.graph.as_ref().filter(|_| n > 0) else {
                self.needy.remove(&id);
                continue;
            };
            let want = g.ix.size() + n;
            if g.ix.capacity() < want {
                let more = want.max(g.ix.capacity() + g.ix.capacity() / 2);
                if g.ix.reserve_capacity_and_threads(more, CONTEXTS).is_err() {
                    self.needy.remove(&id);
                    continue;
                }
            }
            let first = s.tail_ids.len() - n;
            let items = (first..s.tail_ids.len())
                .map(|p| {
                    let mid = s.tail_ids[p];
                    let key = graph_key(mid, s.gens[mid as usize]);
                    (key, s.tail.get(p).to_vec())
                })
                .collect();
            return Some(Batch {
                scope: id,
                serial: g.serial,
                items,
                added: vec![false; n],
                stopped: false,
            });
        }
    }

    fn graph_of(&self, batch: &Batch) -> Option<&Graph> {
        let (_, s) = self.scopes.get(batch.scope as usize)?.as_ref()?;
        let g = s.graph.as_ref()?;
        (g.serial == batch.serial).then_some(g)
    }

    /// Adds a batch's vectors to its graph, on up to `threads` threads, until `stop` says so
    /// (changes are waiting: they are applied between batches, so a long batch would hold
    /// them back; what is not added stays in the tail for a later batch). Needs only shared
    /// access: searches of other scopes go on, and searches of this graph take turns with
    /// the additions (see [`Gate`]: a turn lasts at most [`ADD_TURN`] and ends as soon as a
    /// search waits). The vectors are not served from the graph before
    /// [`Index::graph_commit`]; until then their tail copies are.
    pub fn graph_add(&self, batch: &mut Batch, threads: usize, stop: &(dyn Fn() -> bool + Sync)) {
        let Some(g) = self.graph_of(batch) else {
            return;
        };
        let threads = threads.clamp(1, ADD_THREADS);
        batch.stopped = false;
        let per = batch.items.len().div_ceil(threads).max(1);
        let mut parts: Vec<_> = batch
            .items
            .chunks(per)
            .zip(batch.added.chunks_mut(per))
            .map(|(items, added)| (items, added, 0usize))
            .collect();
        loop {
            let turn = g.gate.add();
            let until = std::time::Instant::now() + ADD_TURN;
            let pause = || g.gate.wanted() || std::time::Instant::now() >= until || stop();
            let pause = &pause;
            std::thread::scope(|sc| {
                let mut rest = parts.iter_mut().filter(|p| p.2 < p.0.len());
                let mine = rest.next();
                for part in rest {
                    sc.spawn(move || add_some(&g.ix, part, pause));
                }
                if let Some(part) = mine {
                    add_some(&g.ix, part, pause);
                }
            });
            drop(turn);
            if parts.iter().all(|p| p.2 == p.0.len()) {
                break;
            }
            if stop() {
                batch.stopped = true;
                break;
            }
            // Searches let in by the end of the turn go first.
            std::thread::yield_now();
        }
    }

    /// Marks a batch's vectors as in the graph and drops their tail copies; a vector whose
    /// entry went or changed since [`Index::graph_batch`] is removed from the graph again.
    pub fn graph_commit(&mut self, batch: Batch) {
        let serial_ok = self.graph_of(&batch).is_some();
        let Some(Some((_, s))) = self.scopes.get_mut(batch.scope as usize) else {
            return;
        };
        if !serial_ok {
            return;
        }
        let mut any = false;
        for ((key, _), added) in batch.items.iter().zip(&batch.added) {
            if !added {
                continue;
            }
            any = true;
            let (id, generation) = (*key as u32, (*key >> 32) as u32);
            let i = id as usize;
            let current = s.member(id).is_some() && s.gens[i] == generation && s.at[i] != IN_GRAPH;
            if current {
                s.tail_remove(s.at[i] as usize);
                s.at[i] = IN_GRAPH;
            } else if let Some(g) = &s.graph {
                let _ = g.ix.remove(*key);
            }
        }
        if let Some(g) = s.graph.as_mut() {
            g.measure(s.tail_ids.is_empty());
        }
        if (!any && !batch.stopped) || s.tail_ids.is_empty() {
            // Done, or the graph takes nothing (it is retried on the scope's next insert).
            self.needy.remove(&batch.scope);
        }
    }
}

/// A share of a batch for one adding thread: its items, whether each was added, and the
/// next one to add.
type Part<'a> = (&'a [(u64, Vec<f32>)], &'a mut [bool], usize);

/// Adds a part's items from its cursor on, at least one, until `pause` says so.
fn add_some(
    ix: &usearch::Index,
    (items, added, next): &mut Part<'_>,
    pause: &(dyn Fn() -> bool + Sync),
) {
    let first = *next;
    while *next < items.len() {
        if *next > first && pause() {
            return;
        }
        let (key, v) = &items[*next];
        added[*next] = ix.add(*key, v).is_ok();
        *next += 1;
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

    /// Runs the index thread's graph work to the end, as `upkeep` does.
    fn settle(ix: &mut Index) {
        while let Some(mut b) = ix.graph_batch(GRAPH_BATCH) {
            ix.graph_add(&mut b, 2, &|| false);
            ix.graph_commit(b);
        }
        drop(ix.take_trash());
    }

    /// A graph saved and read back is adopted, its members claimed by entries that are there
    /// with the same vector; the rest never match and go at `settle`.
    #[test]
    fn a_saved_graph_is_claimed_by_its_entries_and_the_rest_removed() {
        let dims = 32;
        let n = 3000;
        let vs: Vec<Vec<f32>> = (0..n).map(|i| rnd(i, dims)).collect();
        let mut ix = Index::default();
        for (i, v) in vs.iter().enumerate() {
            ix.insert(scope("big"), format!("k{i}").as_bytes(), "q", v);
        }
        settle(&mut ix);
        assert_eq!(ix.lagging(), 0);
        let dir = std::env::temp_dir().join(format!("qa-index-save-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let base = dir.join("dump.rdb");
        let w = super::super::persist::save(&base, 7, &ix.to_save().unwrap()).unwrap();
        assert_eq!((w.graphs, w.vectors), (1, n as usize));
        let found = super::super::persist::load(&base, open_graph);
        assert!(found.refused.is_empty(), "{:?}", found.refused);
        assert_eq!(found.graphs.len(), 1);

        let mut back = Index::default();
        assert_eq!(back.adopt(found.graphs), n as usize);
        assert!(back.unsettled());
        // Nothing is served before its entry claims it, and the search says it was partial.
        let (f, complete) = back.search_complete(&scope("big"), &vs[5], 0.5, 3);
        assert!(f.is_empty() && !complete);
        // Entries 0..2000 come back unchanged; 2000 comes back with another vector; the
        // rest are gone (expired while the server was down).
        for (i, v) in vs.iter().enumerate().take(2000) {
            assert!(back.insert(scope("big"), format!("k{i}").as_bytes(), "q", v));
        }
        let other = rnd(99_999, dims);
        back.insert(scope("big"), b"k2000", "q", &other);
        assert_eq!(
            back.lagging(),
            1,
            "only the changed vector waits for the graph"
        );
        assert_eq!(back.settle(), (n - 2001) as usize);
        assert!(!back.unsettled());
        assert_eq!(back.len(), 2001);
        let (f, complete) = back.search_complete(&scope("big"), &vs[5], 0.99, 1);
        assert!(complete);
        assert_eq!(&*f[0].key, b"k5");
        // The old vector of k2000 and the vectors of entries that did not come back never
        // match; the new vector of k2000 does.
        for i in [2000usize, 2500, 2999] {
            let f = back.search(&scope("big"), &vs[i], 0.99, 3);
            assert!(f.is_empty(), "{i}: {:?}", f.first().map(|f| f.key.clone()));
        }
        assert_eq!(
            &*back.search(&scope("big"), &other, 0.99, 1)[0].key,
            b"k2000"
        );
        // New inserts reuse freed ids and reach the graph.
        for i in 0..300u64 {
            back.insert(
                scope("big"),
                format!("new{i}").as_bytes(),
                "q",
                &rnd(50_000 + i, dims),
            );
        }
        settle(&mut back);
        assert_eq!(back.lagging(), 0);
        assert_eq!(back.len(), 2301);
        assert_eq!(
            &*back.search(&scope("big"), &rnd(50_007, dims), 0.99, 1)[0].key,
            b"new7"
        );
        // A graph file damaged on disk is refused (CRC), not loaded.
        let file = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.to_string_lossy().ends_with(".7.0"))
            .unwrap();
        let mut bytes = std::fs::read(&file).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x40;
        std::fs::write(&file, bytes).unwrap();
        let found = super::super::persist::load(&base, open_graph);
        assert!(found.graphs.is_empty());
        assert_eq!(found.refused.len(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn clustered(n: u64, dims: usize, spread: f32) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
        let centres: Vec<Vec<f32>> = (0..50).map(|i| rnd(1000 + i, dims)).collect();
        let all = (0..n)
            .map(|i| {
                let c = &centres[(i % 50) as usize];
                let noise = rnd(i, dims);
                unit(
                    &c.iter()
                        .zip(&noise)
                        .map(|(a, b)| a + spread * b)
                        .collect::<Vec<_>>(),
                )
                .unwrap()
            })
            .collect();
        (centres, all)
    }

    /// A large scope's graph finds what an exact scan finds, on clustered data where many
    /// vectors are close to the query, before and after the graph has taken the tail.
    #[test]
    fn graph_search_agrees_with_exact_search() {
        let dims = 384;
        let mut ix = Index::default();
        let (centres, all) = clustered(10_000, dims, 0.6);
        for (i, v) in all.iter().enumerate() {
            ix.insert(scope("big"), format!("k{i}").as_bytes(), "q", v);
        }
        assert!(ix.has_graph_work());
        assert_eq!(ix.lagging(), 10_000, "nothing is in the graph yet");
        let agree = |ix: &Index| {
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
                let (f, complete) = ix.search_complete(&scope("big"), &q, -1.0, 1);
                assert!(complete);
                if &*f[0].key == format!("k{best}").as_bytes() {
                    agree += 1;
                }
            }
            agree
        };
        assert_eq!(agree(&ix), 100, "the tail is scanned exactly");
        settle(&mut ix);
        assert!(!ix.has_graph_work());
        assert_eq!(ix.lagging(), 0);
        // Every vector is in the graph, as f16: the tail is empty.
        assert_eq!(ix.memory().0, 10_000 * dims * 2);
        let a = agree(&ix);
        assert!(a >= 97, "top-1 agreed {a}/100");
        // A stored vector finds itself (nearly always: these clusters are 200 points all
        // equally far from each other, the hardest case for a graph), with its similarity
        // (quantized: close to 1).
        let mut found = 0;
        for i in (0..10_000).step_by(37) {
            let f = ix.search(&scope("big"), &all[i], 0.9, 1);
            if let Some(f) = f.first() {
                assert_eq!(&*f.key, format!("k{i}").as_bytes());
                assert!((f.similarity - 1.0).abs() < 0.005, "{}", f.similarity);
                found += 1;
            }
        }
        assert!(found >= 260, "{found}/271 found themselves");
    }

    /// An entry removed or replaced never comes back from the graph, even when its id is
    /// reused and even when it changes between a batch and its commit.
    #[test]
    fn graph_never_serves_a_removed_or_replaced_vector() {
        let dims = 64;
        let mut ix = Index::default();
        let vs: Vec<Vec<f32>> = (0..GRAPH_FROM as u64 + 500).map(|i| rnd(i, dims)).collect();
        for (i, v) in vs.iter().enumerate() {
            ix.insert(scope("s"), format!("k{i}").as_bytes(), &format!("q{i}"), v);
        }
        settle(&mut ix);
        // Remove a third, then insert new keys (reusing their ids) with other vectors.
        for i in (0..vs.len()).step_by(3) {
            assert!(ix.remove(0, format!("k{i}").as_bytes()));
        }
        for i in (0..vs.len()).step_by(3) {
            ix.insert(
                scope("s"),
                format!("n{i}").as_bytes(),
                "new",
                &rnd(900_000 + i as u64, dims),
            );
        }
        // A batch taken, then its entries removed or replaced before the commit.
        let mut b = ix.graph_batch(GRAPH_BATCH).unwrap();
        for i in (0..vs.len()).step_by(3) {
            ix.remove(0, format!("n{i}").as_bytes());
            ix.insert(
                scope("s"),
                format!("m{i}").as_bytes(),
                "newer",
                &rnd(800_000 + i as u64, dims),
            );
        }
        ix.graph_add(&mut b, 2, &|| false);
        ix.graph_commit(b);
        settle(&mut ix);
        let mut missed = Vec::new();
        for (i, v) in vs.iter().enumerate() {
            let f = ix.search(&scope("s"), v, 0.95, 4);
            if i % 3 == 0 {
                assert!(f.is_empty(), "k{i}: {f:?}");
            } else if f.is_empty() {
                missed.push(i);
            } else {
                assert_eq!(&*f[0].key, format!("k{i}").as_bytes());
                assert_eq!(&*f[0].question, format!("q{i}"));
            }
        }
        assert!(missed.len() <= vs.len() / 100, "not found: {missed:?}");
        for i in (0..vs.len()).step_by(3) {
            let f = ix.search(&scope("s"), &rnd(900_000 + i as u64, dims), 0.95, 4);
            assert!(f.is_empty(), "n{i}: {f:?}");
            let f = ix.search(&scope("s"), &rnd(800_000 + i as u64, dims), 0.95, 4);
            assert_eq!(&*f[0].key, format!("m{i}").as_bytes());
            assert_eq!(&*f[0].question, "newer");
        }
        // Dropping the cache hands its graph to the caller to free.
        ix.drop_cache(0, b"s");
        assert!(ix.is_empty());
        assert_eq!(ix.take_trash().len(), 1);
    }

    /// One graph used from more threads than cores and than the graph has contexts:
    /// searches, additions in turns, inserts and removals that reuse graph slots, growth of
    /// the graph (`reserve`), memory readings and dropped scopes, all at once, as `upkeep`
    /// drives them (one lock around the index: shared for searches and additions, exclusive
    /// for the rest). Every answer must be sane: a stored vector finds itself, and every
    /// match's similarity is that of the match's own current vector (never a removed entry's
    /// vector served for another).
    #[test]
    fn concurrent_use_of_one_graph_stays_sane() {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        use std::sync::RwLock;
        let dims = 48;
        let stable = GRAPH_FROM as u64 + 1000;
        let ix = Arc::new(RwLock::new(Index::default()));
        {
            let mut w = ix.write().unwrap();
            for i in 0..stable {
                w.insert(
                    scope("s"),
                    format!("s{i}").as_bytes(),
                    &format!("s{i}"),
                    &rnd(i, dims),
                );
            }
        }
        // `mutated`: the mutator is through; `done`: and the graph has taken every vector.
        let mutated = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicBool::new(false));
        let churned = Arc::new(AtomicUsize::new(0));
        // Churned entry j has the vector rnd(1_000_000 + j).
        let churn = move |j: u64| rnd(1_000_000 + j, dims);
        let indexer = {
            let (ix, mutated, done) = (ix.clone(), mutated.clone(), done.clone());
            std::thread::spawn(move || {
                let mut batches = 0;
                loop {
                    let batch = ix.write().unwrap().graph_batch(64);
                    let Some(mut b) = batch else {
                        if mutated.load(Ordering::SeqCst) {
                            done.store(true, Ordering::SeqCst);
                            return batches;
                        }
                        std::thread::yield_now();
                        continue;
                    };
                    ix.read().unwrap().graph_add(&mut b, 3, &|| false);
                    let mut w = ix.write().unwrap();
                    w.graph_commit(b);
                    drop(w.take_trash());
                    batches += 1;
                }
            })
        };
        let mutator = {
            let (ix, mutated, churned) = (ix.clone(), mutated.clone(), churned.clone());
            std::thread::spawn(move || {
                let mut live = std::collections::VecDeque::new();
                let mut j = 0u64;
                while j < 8_000 {
                    let mut w = ix.write().unwrap();
                    w.insert(
                        scope("s"),
                        format!("c{j}").as_bytes(),
                        &format!("c{j}"),
                        &churn(j),
                    );
                    live.push_back(j);
                    // Keep about 2,000 churned entries: removals free graph slots that later
                    // additions reuse, and the graph grows past its first capacity.
                    if live.len() > 2_000 || j.is_multiple_of(7) {
                        if let Some(k) = live.pop_front() {
                            assert!(w.remove(0, format!("c{k}").as_bytes()));
                        }
                    }
                    // Another scope made and dropped: its graph goes to the trash.
                    if j % 2_000 == 1_999 {
                        for i in 0..GRAPH_FROM as u64 {
                            w.insert(scope("t"), format!("t{i}").as_bytes(), "t", &rnd(i, 16));
                        }
                    }
                    if j % 2_000 == 999 {
                        w.drop_cache(0, b"t");
                    }
                    drop(w);
                    j += 1;
                    churned.store(j as usize, Ordering::SeqCst);
                }
                mutated.store(true, Ordering::SeqCst);
            })
        };
        let searchers: Vec<_> = (0..12u64)
            .map(|t| {
                let (ix, done) = (ix.clone(), done.clone());
                std::thread::spawn(move || {
                    let (mut asked, mut found) = (0, 0);
                    let mut n = 0u64;
                    while n < 600 || !done.load(Ordering::SeqCst) {
                        n += 1;
                        let i = (t * 7919 + n * 104_729) % stable;
                        let q = rnd(i, dims);
                        let r = ix.read().unwrap();
                        if n.is_multiple_of(10) {
                            let (raw, total) = r.memory();
                            assert!(raw > 0 && total > raw);
                        }
                        let f = r.search(&scope("s"), &q, 0.3, 5);
                        drop(r);
                        // Lets the writers in between searches, as workers do between jobs.
                        std::thread::yield_now();
                        asked += 1;
                        if f.first()
                            .is_some_and(|f| *f.key == *format!("s{i}").as_bytes())
                        {
                            found += 1;
                        }
                        for w in f.windows(2) {
                            assert!(w[0].similarity >= w[1].similarity);
                        }
                        for m in &f {
                            let key = std::str::from_utf8(&m.key).unwrap();
                            assert_eq!(key, &*m.question, "a match carries its own question");
                            let v = match key.split_at(1) {
                                ("s", n) => rnd(n.parse().unwrap(), dims),
                                ("c", n) => churn(n.parse().unwrap()),
                                _ => panic!("{key}"),
                            };
                            let exact = dot(&q, &v);
                            assert!(
                                (m.similarity - exact).abs() < 0.01,
                                "{key}: {} reported, {exact} exact",
                                m.similarity
                            );
                        }
                    }
                    (asked, found)
                })
            })
            .collect();
        let (mut asked, mut found) = (0, 0);
        mutator.join().unwrap();
        for s in searchers {
            let (a, f) = s.join().unwrap();
            asked += a;
            found += f;
        }
        let batches = indexer.join().unwrap();
        let churned = churned.load(Ordering::SeqCst);
        eprintln!("{asked} searches, {churned} inserts, {batches} graph batches");
        assert!(
            churned == 8_000 && batches >= 50,
            "{churned} inserts, {batches} batches"
        );
        assert!(
            found * 100 >= asked * 98,
            "{found} of {asked} found themselves"
        );
    }

    /// Many small scopes cost little each: no graph, small vectors of members. (10k caches
    /// of 10 entries: the figure printed is the one in docs/semantic.md.)
    #[test]
    fn small_scopes_stay_small() {
        let mut ix = Index::default();
        for c in 0..10_000u64 {
            for i in 0..10u64 {
                let key = format!("qa:{{c{c}}}:{:032x}", i);
                ix.insert(
                    scope(&format!("c{c}")),
                    key.as_bytes(),
                    "what is our refund policy",
                    &rnd(c * 10 + i, 384),
                );
            }
        }
        assert!(!ix.has_graph_work());
        let (raw, total) = ix.memory();
        assert_eq!(raw, 100_000 * 384 * 4);
        let per_scope = (total - raw) as f64 / 10_000.0;
        eprintln!("10k scopes of 10 entries: {per_scope:.0} bytes per scope beyond the vectors");
        assert!(
            per_scope < 2_500.0,
            "{per_scope} bytes per scope beyond the vectors"
        );
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
