//! Who may use one HNSW graph at a time: searches (up to [`SEARCH_SLOTS`] at once) or the
//! index thread's additions, never both.
//!
//! usearch lets additions run together and searches run together, but a search running
//! while an addition raises the graph's top level or adds its first node can read memory
//! that is not there yet (see docs/semantic.md, "What usearch guarantees"). The gate keeps
//! them apart. Additions come in short turns: an addition turn ends as soon as a search
//! waits, and the searches waiting at that moment go in before the next turn, so a search
//! waits for at most one addition per adding thread, and a stream of searches cannot starve
//! the additions either.
//!
//! Searches beyond [`SEARCH_SLOTS`] wait for a slot: the graph holds that many thread
//! contexts (usearch fails a search that finds none free), so every search that enters finds
//! one.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Instant;

/// Searches of one graph at once (each needs one of the graph's thread contexts). More than
/// the cores gains nothing: a search is CPU only.
pub const SEARCH_SLOTS: usize = 8;
/// Threads adding to one graph at once, in one addition turn.
pub const ADD_THREADS: usize = 4;
/// Thread contexts a graph reserves: enough for whichever side holds the gate.
pub const CONTEXTS: usize = if SEARCH_SLOTS > ADD_THREADS {
    SEARCH_SLOTS
} else {
    ADD_THREADS
};

#[derive(Default)]
struct State {
    searching: usize,
    adding: bool,
    /// An addition turn waits for the searches inside to leave; new searches wait behind it.
    add_waiting: bool,
    /// Searches waiting to enter.
    search_waiting: usize,
    /// Searches still to let in, ahead of the next addition turn (those that waited when the
    /// last turn ended).
    admit: usize,
}

#[derive(Default)]
pub struct Gate {
    st: Mutex<State>,
    cv: Condvar,
    /// `State::search_waiting`, readable without the lock (an addition turn polls it).
    waiting: AtomicUsize,
}

/// A search inside the gate; leaves on drop.
pub struct Searching<'a>(&'a Gate);

/// An addition turn; ends on drop.
pub struct Adding<'a>(&'a Gate);

impl Gate {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.st.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn wait<'a>(&self, g: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        self.cv.wait(g).unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until a search may use the graph, or until `deadline` (`None`: the index
    /// thread, at idle priority, may be starved on a busy machine while it holds an addition
    /// turn; the search then leaves the graph out rather than wait for it).
    pub fn search(&self, deadline: Option<Instant>) -> Option<Searching<'_>> {
        let mut st = self.lock();
        st.search_waiting += 1;
        self.waiting.fetch_add(1, Ordering::Relaxed);
        while st.adding || st.searching >= SEARCH_SLOTS || (st.add_waiting && st.admit == 0) {
            st = match deadline {
                None => self.wait(st),
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        st.search_waiting -= 1;
                        self.waiting.fetch_sub(1, Ordering::Relaxed);
                        st.admit = st.admit.min(st.search_waiting);
                        drop(st);
                        self.cv.notify_all();
                        return None;
                    }
                    self.cv
                        .wait_timeout(st, left)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
            };
        }
        st.search_waiting -= 1;
        self.waiting.fetch_sub(1, Ordering::Relaxed);
        st.admit = st.admit.saturating_sub(1);
        st.searching += 1;
        Some(Searching(self))
    }

    /// Waits until no search uses the graph, and keeps new ones out until the turn ends.
    pub fn add(&self) -> Adding<'_> {
        let mut st = self.lock();
        while st.adding {
            st = self.wait(st);
        }
        st.add_waiting = true;
        while st.searching > 0 || st.admit > 0 {
            st = self.wait(st);
        }
        st.add_waiting = false;
        st.adding = true;
        Adding(self)
    }

    /// Whether a search waits (an addition turn should end).
    pub fn wanted(&self) -> bool {
        self.waiting.load(Ordering::Relaxed) > 0
    }
}

impl Drop for Searching<'_> {
    fn drop(&mut self) {
        let mut st = self.0.lock();
        st.searching -= 1;
        drop(st);
        self.0.cv.notify_all();
    }
}

impl Drop for Adding<'_> {
    fn drop(&mut self) {
        let mut st = self.0.lock();
        st.adding = false;
        st.admit = st.search_waiting;
        drop(st);
        self.0.cv.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    /// Searches and addition turns never overlap, searches never exceed their slots, and
    /// both sides make progress under contention from more threads than cores.
    #[test]
    fn searches_and_additions_never_overlap() {
        let gate = Arc::new(Gate::default());
        let inside = Arc::new(AtomicUsize::new(0));
        let adding = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicBool::new(false));
        let searchers: Vec<_> = (0..3 * SEARCH_SLOTS)
            .map(|_| {
                let (gate, inside, adding) = (gate.clone(), inside.clone(), adding.clone());
                std::thread::spawn(move || {
                    for n in 0..2_000 {
                        // Some give up at once when they would wait: nothing may leak.
                        let deadline = (n % 3 == 0).then(Instant::now);
                        let Some(_s) = gate.search(deadline) else {
                            continue;
                        };
                        let n = inside.fetch_add(1, Ordering::SeqCst) + 1;
                        assert!(n <= SEARCH_SLOTS, "{n} searches inside");
                        assert!(!adding.load(Ordering::SeqCst), "a search during additions");
                        std::hint::spin_loop();
                        inside.fetch_sub(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        let adder = {
            let (gate, inside, adding, done) =
                (gate.clone(), inside.clone(), adding.clone(), done.clone());
            std::thread::spawn(move || {
                let mut turns = 0u64;
                while !done.load(Ordering::SeqCst) {
                    let _a = gate.add();
                    adding.store(true, Ordering::SeqCst);
                    assert_eq!(
                        inside.load(Ordering::SeqCst),
                        0,
                        "additions during a search"
                    );
                    std::hint::spin_loop();
                    adding.store(false, Ordering::SeqCst);
                    turns += 1;
                }
                turns
            })
        };
        for s in searchers {
            s.join().unwrap();
        }
        done.store(true, Ordering::SeqCst);
        assert!(adder.join().unwrap() > 0);
        let st = gate.lock();
        assert_eq!((st.searching, st.search_waiting, st.admit), (0, 0, 0));
        assert!(!st.adding && !st.add_waiting && !gate.wanted());
    }
}
