//! Calibration of a cache's effective similarity threshold to `qa.semantic-target-precision`,
//! from its audits. A pure state machine: the time is passed in.
//!
//! - A cache with no audit history starts conservative: `START` above the configured
//!   threshold.
//! - Audits are counted at the current level only (an audit of a hit served under a lower
//!   threshold says nothing about the current one and is ignored).
//! - A disagreement that leaves the Wilson lower bound of the level's precision below the
//!   target raises the threshold by `STEP_UP` and starts a new level.
//! - An agreement that brings the lower bound to the target lowers it by `STEP_DOWN` (at most
//!   once per `DOWN_EVERY`) and starts a new level: it takes enough agreeing audits to show
//!   the target is met (about 125 in a row for 0.97), so it falls back slowly.
//! - Never below the configured threshold, never above `CEILING` (or the configured threshold
//!   if that is higher).

use std::time::{Duration, Instant};

pub const START: f32 = 0.04;
pub const STEP_UP: f32 = 0.02;
pub const STEP_DOWN: f32 = 0.01;
pub const CEILING: f32 = 0.99;
pub const DOWN_EVERY: Duration = Duration::from_secs(2);
/// Audits kept per level at most: past this the counts are halved (old evidence fades).
const WINDOW: u32 = 4096;

/// What an audit did to the threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Raised,
    Lowered,
    Kept,
    /// About an older, lower level: not counted.
    Ignored,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Calibration {
    /// Added to the configured threshold.
    offset: f32,
    agreed: u32,
    disagreed: u32,
    last_change: Option<Instant>,
}

impl Default for Calibration {
    fn default() -> Self {
        Calibration {
            offset: START,
            agreed: 0,
            disagreed: 0,
            last_change: None,
        }
    }
}

impl Calibration {
    /// The threshold in force over configured threshold `base`.
    pub fn threshold(&self, base: f32) -> f32 {
        effective(base, self.offset)
    }

    /// Takes one audit of a hit served at threshold `served_at`.
    pub fn observe(
        &mut self,
        agreed: bool,
        served_at: f32,
        base: f32,
        target: f64,
        now: Instant,
    ) -> Change {
        if served_at + 1e-4 < self.threshold(base) {
            return Change::Ignored;
        }
        if agreed {
            self.agreed += 1;
        } else {
            self.disagreed += 1;
        }
        if self.agreed + self.disagreed > WINDOW {
            self.agreed /= 2;
            self.disagreed /= 2;
        }
        let n = u64::from(self.agreed + self.disagreed);
        let (low, _) = super::audit::wilson(u64::from(self.agreed), n);
        if !agreed && low < target {
            let before = self.threshold(base);
            self.offset = (self.offset + STEP_UP).min((CEILING - base).max(0.0));
            self.new_level(now);
            return if self.threshold(base) > before {
                Change::Raised
            } else {
                Change::Kept
            };
        }
        let rested = self
            .last_change
            .is_none_or(|t| now.saturating_duration_since(t) >= DOWN_EVERY);
        if agreed && low >= target && rested && self.offset > 0.0 {
            self.offset = (self.offset - STEP_DOWN).max(0.0);
            self.new_level(now);
            return Change::Lowered;
        }
        Change::Kept
    }

    fn new_level(&mut self, now: Instant) {
        self.agreed = 0;
        self.disagreed = 0;
        self.last_change = Some(now);
    }
}

fn effective(base: f32, offset: f32) -> f32 {
    // Rounded to a hundredth of a hundredth so repeated steps print as typed (0.86, not
    // 0.8599999).
    let t = ((base + offset) * 10_000.0).round() / 10_000.0;
    t.min(CEILING.max(base)).max(base)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_conservative_and_stays_within_bounds() {
        let c = Calibration::default();
        // (configured, effective with no history)
        let rows = [(0.80, 0.84), (0.97, 0.99), (0.995, 0.995), (0.0, 0.04)];
        for (base, want) in rows {
            assert!((c.threshold(base) - want).abs() < 1e-6, "{base}");
        }
    }

    #[test]
    fn a_disagreement_raises_it_agreements_lower_it_slowly() {
        let t0 = Instant::now();
        let base = 0.80;
        let mut c = Calibration::default();
        // One disagreement with no evidence: the lower bound is under any target.
        assert_eq!(c.observe(false, 0.84, base, 0.9, t0), Change::Raised);
        assert!((c.threshold(base) - 0.86).abs() < 1e-6);
        // Audits of hits served at 0.84 (before the raise) are ignored.
        assert_eq!(c.observe(false, 0.84, base, 0.9, t0), Change::Ignored);
        // Agreements at 0.86: Wilson's lower bound of n/n reaches 0.9 at n = 35.
        let t1 = t0 + DOWN_EVERY;
        let mut changes = Vec::new();
        for _ in 0..35 {
            changes.push(c.observe(true, 0.86, base, 0.9, t1));
        }
        assert_eq!(changes.iter().filter(|c| **c == Change::Lowered).count(), 1);
        assert_eq!(changes.last(), Some(&Change::Lowered));
        assert!((c.threshold(base) - 0.85).abs() < 1e-6);
        // Within DOWN_EVERY of the last change, agreements do not lower it again.
        for _ in 0..100 {
            assert_eq!(c.observe(true, 0.85, base, 0.9, t1), Change::Kept);
        }
        assert_eq!(
            c.observe(true, 0.85, base, 0.9, t1 + DOWN_EVERY),
            Change::Lowered
        );
        assert!((c.threshold(base) - 0.84).abs() < 1e-6);
    }

    #[test]
    fn a_rare_disagreement_among_many_agreements_changes_nothing() {
        let t0 = Instant::now();
        let mut c = Calibration::default();
        // At target 0.9 the 35th agreement lowers it once; keep the clock still after that.
        for _ in 0..200 {
            c.observe(true, 0.84, 0.80, 0.5, t0);
        }
        let level = c.threshold(0.80);
        // Many agreements at the level, then one disagreement: the bound stays over 0.5.
        for _ in 0..3 {
            c.observe(true, level, 0.80, 0.5, t0);
        }
        assert_eq!(c.observe(false, level, 0.80, 0.5, t0), Change::Kept);
    }

    #[test]
    fn never_above_the_ceiling_nor_below_the_configured_threshold() {
        let t = Instant::now();
        let mut c = Calibration::default();
        for _ in 0..20 {
            let at = c.threshold(0.9);
            c.observe(false, at, 0.9, 0.97, t);
        }
        assert!((c.threshold(0.9) - CEILING).abs() < 1e-6);
        assert_eq!(c.observe(false, CEILING, 0.9, 0.97, t), Change::Kept);
        let mut c = Calibration::default();
        for i in 0..50u64 {
            let now = t + DOWN_EVERY * (i as u32 + 1);
            let at = c.threshold(0.7);
            for _ in 0..10 {
                c.observe(true, at, 0.7, 0.5, now);
            }
        }
        assert!((c.threshold(0.7) - 0.7).abs() < 1e-6);
    }
}
