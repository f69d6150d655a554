//! What the audits of semantic hits found, per cache: counts, the latest disagreements (for
//! `QA.AUDIT`) and the calibration of the cache's threshold (see [`calibrate`]).
//!
//! Written by workers when an audit ends, read by `QA.STATS`, `QA.AUDIT` and by workers
//! choosing a threshold: a plain mutex, never held across I/O. Bounded: at most
//! `stats::MAX_CACHES` caches, `RING` disagreements each, `MAX_TEXT` bytes per text.
//!
//! [`calibrate`]: super::calibrate

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Instant;

use super::calibrate::{Calibration, Change};

/// Disagreements kept per cache (the latest).
pub const RING: usize = 32;
/// Bytes kept of each question and answer of a disagreement.
pub const MAX_TEXT: usize = 256;

/// The 95% Wilson score interval of a proportion `k` of `n`; (0, 1) when `n` is 0.
pub fn wilson(k: u64, n: u64) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    const Z: f64 = 1.959_963_984_540_054;
    let n_f = n as f64;
    let p = k.min(n) as f64 / n_f;
    let z2 = Z * Z;
    let denom = 1.0 + z2 / n_f;
    let centre = p + z2 / (2.0 * n_f);
    let margin = Z * (p * (1.0 - p) / n_f + z2 / (4.0 * n_f * n_f)).sqrt();
    (
        ((centre - margin) / denom).clamp(0.0, 1.0),
        ((centre + margin) / denom).clamp(0.0, 1.0),
    )
}

/// One audited hit whose fresh answer did not agree with the served one.
#[derive(Debug, Clone, PartialEq)]
pub struct Disagreement {
    pub query: String,
    pub matched: String,
    pub similarity: f32,
    pub served: String,
    pub fresh: String,
    /// Unix ms.
    pub at_ms: i64,
}

/// A cache's audit record.
#[derive(Debug, Default, Clone)]
pub struct CacheAudit {
    pub audited: u64,
    pub agreed: u64,
    pub disagreed: u64,
    pub latest: VecDeque<Disagreement>,
    pub calibration: Calibration,
}

fn table() -> MutexGuard<'static, HashMap<Vec<u8>, CacheAudit>> {
    static T: OnceLock<Mutex<HashMap<Vec<u8>, CacheAudit>>> = OnceLock::new();
    T.get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

/// The threshold a search in `cache` uses: the configured one without a target, else the
/// cache's calibrated one (conservative when it has no audit history).
pub fn threshold(cache: &[u8], base: f32, target: f64) -> f32 {
    if target <= 0.0 {
        return base;
    }
    match table().get(cache) {
        Some(a) => a.calibration.threshold(base),
        None => Calibration::default().threshold(base),
    }
}

/// `s` cut to at most `MAX_TEXT` bytes on a character boundary.
pub fn truncate(s: &str) -> String {
    if s.len() <= MAX_TEXT {
        return s.to_string();
    }
    let mut end = MAX_TEXT;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

/// Records one audit of `cache`; `disagreement` is set when the answers did not agree.
/// `served_at` is the threshold the hit was served under. Returns what it did to the
/// threshold (`Ignored` without a target, or for a cache beyond the limit).
pub fn record(
    cache: &[u8],
    disagreement: Option<Disagreement>,
    served_at: f32,
    base: f32,
    target: f64,
    now: Instant,
) -> Change {
    let mut t = table();
    if !t.contains_key(cache) && t.len() >= crate::stats::MAX_CACHES {
        return Change::Ignored;
    }
    let a = t.entry(cache.to_vec()).or_default();
    a.audited += 1;
    let agreed = disagreement.is_none();
    match disagreement {
        None => a.agreed += 1,
        Some(d) => {
            a.disagreed += 1;
            if a.latest.len() == RING {
                a.latest.pop_back();
            }
            a.latest.push_front(d);
        }
    }
    if target <= 0.0 {
        return Change::Ignored;
    }
    a.calibration.observe(agreed, served_at, base, target, now)
}

/// A copy of the audit record of `cache`, if it has one.
pub fn of(cache: &[u8]) -> Option<CacheAudit> {
    table().get(cache).cloned()
}

/// (audited, agreed, disagreed) over every cache.
pub fn totals() -> (u64, u64, u64) {
    table().values().fold((0, 0, 0), |(n, a, d), c| {
        (n + c.audited, a + c.agreed, d + c.disagreed)
    })
}

/// Forgets everything (FLUSHALL leaves the history of caches that may come back: not called
/// there; for tests).
#[cfg(test)]
fn clear() {
    table().clear();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wilson_intervals() {
        // (k, n, low, high), to 3 decimals (checked against the textbook formula by hand and
        // against statsmodels' proportion_confint(method="wilson")).
        let rows = [
            (0, 0, 0.0, 1.0),
            (0, 10, 0.0, 0.278),
            (10, 10, 0.722, 1.0),
            (5, 10, 0.237, 0.763),
            (97, 100, 0.915, 0.990),
            (125, 125, 0.970, 1.0),
            (1, 1, 0.207, 1.0),
            (950, 1000, 0.935, 0.962),
        ];
        for (k, n, lo, hi) in rows {
            let (l, h) = wilson(k, n);
            assert!((l - lo).abs() < 1e-3, "{k}/{n}: low {l}");
            assert!((h - hi).abs() < 1e-3, "{k}/{n}: high {h}");
        }
        // More successes than trials are capped, never NaN.
        assert_eq!(wilson(5, 3), wilson(3, 3));
    }

    #[test]
    fn texts_are_truncated_on_a_character_boundary() {
        assert_eq!(truncate("short"), "short");
        let long = "é".repeat(200);
        let t = truncate(&long);
        assert!(t.ends_with("...") && t.len() <= MAX_TEXT + 3, "{}", t.len());
    }

    #[test]
    fn a_ring_of_the_latest_disagreements_and_the_counts() {
        clear();
        let now = Instant::now();
        let d = |i: usize| Disagreement {
            query: format!("q{i}"),
            matched: "m".into(),
            similarity: 0.9,
            served: "a".into(),
            fresh: "b".into(),
            at_ms: i as i64,
        };
        for i in 0..RING + 5 {
            record(b"ring", Some(d(i)), 0.8, 0.8, 0.0, now);
        }
        record(b"ring", None, 0.8, 0.8, 0.0, now);
        let a = of(b"ring").unwrap();
        assert_eq!(
            (a.audited, a.agreed, a.disagreed),
            (RING as u64 + 6, 1, RING as u64 + 5)
        );
        assert_eq!(a.latest.len(), RING);
        assert_eq!(a.latest[0].query, format!("q{}", RING + 4));
        // No target: the configured threshold, whatever the audits said.
        assert_eq!(threshold(b"ring", 0.8, 0.0), 0.8);
        // With a target and no history: conservative.
        assert!((threshold(b"never", 0.8, 0.9) - 0.84).abs() < 1e-6);
        // A disagreement at the conservative start raises it.
        assert_eq!(
            record(b"cal", Some(d(0)), 0.84, 0.8, 0.9, now),
            Change::Raised
        );
        assert!((threshold(b"cal", 0.8, 0.9) - 0.86).abs() < 1e-6);
    }
}
