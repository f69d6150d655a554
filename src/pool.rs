//! A bounded worker pool for backend calls.
//!
//! At most `max_threads` jobs run at once (`qa.max-inflight`, read at every submit so
//! `CONFIG SET` takes effect without a restart) and at most `max_queue` wait. Threads start on
//! demand and leave after a minute idle, so an idle module holds no threads. A job that panics
//! is caught here; the job itself is responsible for answering its clients (see `worker`).

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

pub type Job = Box<dyn FnOnce() + Send + 'static>;

const IDLE_EXIT: Duration = Duration::from_secs(60);

#[derive(Default)]
struct State {
    queue: VecDeque<Job>,
    threads: usize,
    idle: usize,
    running: usize,
    max_threads: usize,
}

#[derive(Default)]
pub struct Pool {
    state: Mutex<State>,
    wake: Condvar,
}

/// The pool refused a job: the queue is full.
#[derive(Debug, PartialEq, Eq)]
pub struct QueueFull;

impl Pool {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `job`, starting a thread if none is idle and the limit allows.
    pub fn submit(
        self: &Arc<Self>,
        job: Job,
        max_threads: usize,
        max_queue: usize,
    ) -> Result<(), QueueFull> {
        let mut st = self.lock();
        st.max_threads = max_threads.max(1);
        let free_threads = st.max_threads.saturating_sub(st.running);
        // Jobs beyond the free threads wait in the queue, and the queue is bounded.
        if st.queue.len() + 1 > free_threads + max_queue {
            return Err(QueueFull);
        }
        st.queue.push_back(job);
        self.wake.notify_one();
        if st.idle < st.queue.len() && st.threads < st.max_threads {
            st.threads += 1;
            let pool = Arc::clone(self);
            let spawned = std::thread::Builder::new()
                .name("qa-worker".into())
                .spawn(move || pool.run());
            if spawned.is_err() {
                st.threads -= 1;
                // No thread could start: the job stays queued for a running thread, or, if
                // there is none, is refused (it would otherwise wait forever).
                if st.threads == 0 {
                    st.queue.pop_back();
                    return Err(QueueFull);
                }
            }
        }
        Ok(())
    }

    fn run(self: Arc<Self>) {
        let mut st = self.lock();
        loop {
            // Run a job whenever the limit allows, even on a thread that is surplus after a
            // lowered limit: leaving it queued would strand it until a timeout.
            if st.running < st.max_threads {
                if let Some(job) = st.queue.pop_front() {
                    st.running += 1;
                    drop(st);
                    // A panicking job must not take the worker (and the jobs behind it) down.
                    let _ = catch_unwind(AssertUnwindSafe(job));
                    st = self.lock();
                    st.running -= 1;
                    continue;
                }
            }
            if st.threads > st.max_threads {
                break;
            }
            st.idle += 1;
            let (next, timeout) = self
                .wake
                .wait_timeout(st, IDLE_EXIT)
                .unwrap_or_else(|p| p.into_inner());
            st = next;
            st.idle -= 1;
            if timeout.timed_out() && st.queue.is_empty() {
                break;
            }
        }
        st.threads -= 1;
        // This thread may have taken a wake-up meant for a queued job.
        if !st.queue.is_empty() {
            self.wake.notify_one();
        }
    }

    /// (jobs running, jobs queued)
    pub fn load(&self) -> (usize, usize) {
        let st = self.lock();
        (st.running, st.queue.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::mpsc;
    use std::time::Instant;

    fn wait_until(deadline: Duration, mut f: impl FnMut() -> bool) -> bool {
        let end = Instant::now() + deadline;
        while Instant::now() < end {
            if f() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        f()
    }

    #[test]
    fn runs_jobs_and_bounds_concurrency() {
        let pool = Arc::new(Pool::default());
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let release_rx = Arc::new(Mutex::new(release_rx));
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let done = Arc::new(AtomicUsize::new(0));
        for _ in 0..6 {
            let (rx, running, peak, done) = (
                release_rx.clone(),
                running.clone(),
                peak.clone(),
                done.clone(),
            );
            pool.submit(
                Box::new(move || {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    let _ = rx.lock().unwrap().recv();
                    running.fetch_sub(1, Ordering::SeqCst);
                    done.fetch_add(1, Ordering::SeqCst);
                }),
                2,
                10,
            )
            .unwrap();
        }
        assert!(wait_until(Duration::from_secs(5), || pool.load() == (2, 4)));
        for _ in 0..6 {
            release_tx.send(()).unwrap();
        }
        assert!(wait_until(Duration::from_secs(5), || done
            .load(Ordering::SeqCst)
            == 6));
        assert_eq!(peak.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn refuses_beyond_the_queue() {
        let pool = Arc::new(Pool::default());
        let (tx, rx) = mpsc::channel::<()>();
        let rx = Arc::new(Mutex::new(rx));
        let block = |rx: Arc<Mutex<mpsc::Receiver<()>>>| -> Job {
            Box::new(move || {
                let _ = rx.lock().unwrap().recv();
            })
        };
        // One thread, a queue of one: the first job runs, the second waits, the third is refused.
        assert_eq!(pool.submit(block(rx.clone()), 1, 1), Ok(()));
        assert!(wait_until(Duration::from_secs(5), || pool.load().0 == 1));
        assert_eq!(pool.submit(block(rx.clone()), 1, 1), Ok(()));
        assert_eq!(pool.submit(block(rx.clone()), 1, 1), Err(QueueFull));
        tx.send(()).unwrap();
        tx.send(()).unwrap();
        assert!(wait_until(Duration::from_secs(5), || pool.load() == (0, 0)));
    }

    /// Regression: after the limit was lowered with many idle threads, the woken thread was
    /// surplus and left without running the job (it waited until idle threads retired).
    #[test]
    fn a_lowered_limit_does_not_strand_a_job() {
        let pool = Arc::new(Pool::default());
        let (tx, rx) = mpsc::channel::<()>();
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..8 {
            let rx = rx.clone();
            pool.submit(
                Box::new(move || {
                    let _ = rx.lock().unwrap().recv();
                }),
                8,
                10,
            )
            .unwrap();
        }
        assert!(wait_until(Duration::from_secs(5), || pool.load() == (8, 0)));
        for _ in 0..8 {
            tx.send(()).unwrap();
        }
        assert!(wait_until(Duration::from_secs(5), || pool.load() == (0, 0)));
        // Eight idle threads, limit now 2: the job must still run promptly.
        let (done_tx, done_rx) = mpsc::channel();
        pool.submit(Box::new(move || done_tx.send(1).unwrap()), 2, 10)
            .unwrap();
        assert_eq!(done_rx.recv_timeout(Duration::from_secs(5)), Ok(1));
    }

    #[test]
    fn survives_a_panicking_job() {
        let pool = Arc::new(Pool::default());
        pool.submit(Box::new(|| panic!("boom")), 1, 10).unwrap();
        let (tx, rx) = mpsc::channel();
        pool.submit(Box::new(move || tx.send(42).unwrap()), 1, 10)
            .unwrap();
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)), Ok(42));
    }
}
