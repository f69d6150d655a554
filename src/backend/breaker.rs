//! The circuit breaker: after `failures` consecutive backend failures, misses fail fast for
//! `cooldown`; then exactly one probe call is let through, and its outcome closes the breaker
//! or opens it for another cooldown. A probe that reports nothing within `probe_timeout`
//! (lost, or still running past any asker's deadline) no longer holds the breaker: the next
//! miss probes. Pure: time is passed in.
//!
//! What counts as a failure is the caller's business (see
//! [`BackendError::is_backend_failure`](super::BackendError::is_backend_failure)).

use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Consecutive failures that open the breaker; 0 turns it off.
    pub failures: u32,
    pub cooldown: Duration,
    /// How long one probe may decide before another is let through.
    pub probe_timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// The cooldown is over and one call, let through at `since`, is deciding.
    Probing {
        since: Instant,
    },
}

/// What a miss may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    Call,
    /// Call, and report the outcome with `probe: true`.
    Probe,
    Reject,
}

/// What a reported outcome did to the breaker (for counters and the log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    None,
    Opened,
    Closed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Breaker {
    state: State,
}

impl Default for Breaker {
    fn default() -> Self {
        Breaker::CLOSED
    }
}

impl Breaker {
    pub const CLOSED: Breaker = Breaker {
        state: State::Closed { failures: 0 },
    };

    pub fn admit(&mut self, now: Instant, s: Settings) -> Admit {
        if s.failures == 0 {
            self.state = State::Closed { failures: 0 };
            return Admit::Call;
        }
        match self.state {
            State::Closed { .. } => Admit::Call,
            State::Open { until } if now < until => Admit::Reject,
            State::Open { .. } => {
                self.state = State::Probing { since: now };
                Admit::Probe
            }
            State::Probing { since } if now < since + s.probe_timeout => Admit::Reject,
            // The probe never reported (its job was lost or outlived every deadline).
            State::Probing { .. } => {
                self.state = State::Probing { since: now };
                Admit::Probe
            }
        }
    }

    /// Reports how an admitted call ended.
    pub fn record(&mut self, now: Instant, s: Settings, failed: bool, probe: bool) -> Change {
        if s.failures == 0 {
            self.state = State::Closed { failures: 0 };
            return Change::None;
        }
        match (self.state, probe, failed) {
            (State::Probing { .. }, true, false) => {
                self.state = State::Closed { failures: 0 };
                Change::Closed
            }
            (State::Probing { .. }, true, true) => {
                self.state = State::Open {
                    until: now + s.cooldown,
                };
                Change::Opened
            }
            (State::Closed { .. }, _, false) => {
                self.state = State::Closed { failures: 0 };
                Change::None
            }
            (State::Closed { failures }, _, true) => {
                let failures = failures.saturating_add(1);
                if failures >= s.failures {
                    self.state = State::Open {
                        until: now + s.cooldown,
                    };
                    Change::Opened
                } else {
                    self.state = State::Closed { failures };
                    Change::None
                }
            }
            // A call admitted before the breaker opened: only the probe decides now.
            (State::Open { .. } | State::Probing { .. }, _, _) => Change::None,
        }
    }

    /// An admitted probe that was never made (e.g. the queue was full): the next miss probes.
    pub fn cancel_probe(&mut self, now: Instant) {
        if matches!(self.state, State::Probing { .. }) {
            self.state = State::Open { until: now };
        }
    }

    /// Whether misses are currently refused (for INFO).
    pub fn is_open(&self) -> bool {
        !matches!(self.state, State::Closed { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Settings = Settings {
        failures: 3,
        cooldown: Duration::from_secs(10),
        probe_timeout: Duration::from_secs(30),
    };

    fn at(t0: Instant, secs: u64) -> Instant {
        t0 + Duration::from_secs(secs)
    }

    #[test]
    fn opens_after_consecutive_failures_then_one_probe_closes_it() {
        let t0 = Instant::now();
        let mut b = Breaker::default();
        // (time in s, step, expected)
        for (t, failed, want) in [
            (0, true, Change::None),
            (1, false, Change::None), // a success resets the count
            (2, true, Change::None),
            (3, true, Change::None),
            (4, true, Change::Opened), // third in a row
        ] {
            assert_eq!(b.admit(at(t0, t), S), Admit::Call);
            assert_eq!(b.record(at(t0, t), S, failed, false), want, "t={t}");
        }
        assert!(b.is_open());
        assert_eq!(b.admit(at(t0, 5), S), Admit::Reject);
        assert_eq!(b.admit(at(t0, 13), S), Admit::Reject); // cooldown ends at 14
        assert_eq!(b.admit(at(t0, 14), S), Admit::Probe);
        assert_eq!(b.admit(at(t0, 14), S), Admit::Reject, "one probe at a time");
        assert_eq!(b.record(at(t0, 15), S, false, true), Change::Closed);
        assert!(!b.is_open());
        assert_eq!(b.admit(at(t0, 15), S), Admit::Call);
    }

    #[test]
    fn a_failed_probe_opens_for_another_cooldown() {
        let t0 = Instant::now();
        let mut b = Breaker::default();
        for _ in 0..3 {
            b.record(t0, S, true, false);
        }
        assert_eq!(b.admit(at(t0, 10), S), Admit::Probe);
        assert_eq!(b.record(at(t0, 12), S, true, true), Change::Opened);
        assert_eq!(b.admit(at(t0, 21), S), Admit::Reject);
        assert_eq!(b.admit(at(t0, 22), S), Admit::Probe);
    }

    #[test]
    fn late_results_of_earlier_calls_do_not_decide() {
        let t0 = Instant::now();
        let mut b = Breaker::default();
        for _ in 0..3 {
            b.record(t0, S, true, false);
        }
        // Calls admitted before the breaker opened end while it is open or probing.
        assert_eq!(b.record(at(t0, 1), S, false, false), Change::None);
        assert!(b.is_open());
        assert_eq!(b.admit(at(t0, 10), S), Admit::Probe);
        assert_eq!(b.record(at(t0, 10), S, false, false), Change::None);
        assert_eq!(b.record(at(t0, 10), S, true, false), Change::None);
        assert_eq!(b.admit(at(t0, 10), S), Admit::Reject, "still probing");
    }

    #[test]
    fn a_cancelled_probe_lets_the_next_miss_probe() {
        let t0 = Instant::now();
        let mut b = Breaker::default();
        for _ in 0..3 {
            b.record(t0, S, true, false);
        }
        assert_eq!(b.admit(at(t0, 10), S), Admit::Probe);
        b.cancel_probe(at(t0, 10));
        assert_eq!(b.admit(at(t0, 10), S), Admit::Probe);
    }

    #[test]
    fn a_probe_that_never_reports_stops_holding_the_breaker() {
        let t0 = Instant::now();
        let mut b = Breaker::default();
        for _ in 0..3 {
            b.record(t0, S, true, false);
        }
        // (time in s, expected admission): the probe at 10 is lost; 30 s later another.
        for (t, want) in [
            (10, Admit::Probe),
            (11, Admit::Reject),
            (39, Admit::Reject),
            (40, Admit::Probe),
            (41, Admit::Reject),
        ] {
            assert_eq!(b.admit(at(t0, t), S), want, "t={t}");
        }
        // The late report of the first probe still decides.
        assert_eq!(b.record(at(t0, 42), S, false, true), Change::Closed);
        assert_eq!(b.admit(at(t0, 42), S), Admit::Call);
    }

    #[test]
    fn zero_failures_turns_it_off() {
        let off = Settings { failures: 0, ..S };
        let t0 = Instant::now();
        let mut b = Breaker::default();
        for _ in 0..100 {
            assert_eq!(b.admit(t0, off), Admit::Call);
            assert_eq!(b.record(t0, off, true, false), Change::None);
        }
        // Turned off while open: closed at once.
        let mut b = Breaker::default();
        for _ in 0..3 {
            b.record(t0, S, true, false);
        }
        assert_eq!(b.admit(t0, off), Admit::Call);
        assert!(!b.is_open());
    }
}
