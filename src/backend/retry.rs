//! When to try a failed call again, and after how long. Pure: the caller passes the time
//! left and the random jitter in.
//!
//! Retried: HTTP 429, 502, 503, 504 and connections reset or closed mid-exchange. Never
//! another 4xx (the same request would fail the same way), never a timeout (the time is
//! gone), never a refused connection (the circuit breaker deals with a backend that is down).

use std::time::Duration;

/// Exponential backoff with jitter, bounded by a retry count and the clients' time left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Retries after the first attempt (`qa.backend-retries`).
    pub max_retries: u32,
    /// The first backoff; doubled per retry.
    pub base: Duration,
    /// No single backoff longer than this (unless the backend's `Retry-After` says so).
    pub cap: Duration,
    /// A retry is only worth it with at least this much time left for the attempt itself.
    pub min_attempt: Duration,
}

impl Policy {
    pub const fn new(max_retries: u32) -> Policy {
        Policy {
            max_retries,
            base: Duration::from_millis(100),
            cap: Duration::from_secs(5),
            min_attempt: Duration::from_millis(50),
        }
    }

    /// How long to wait before retry number `retries_done + 1`, or `None` to give up.
    ///
    /// `retry_after` is the backend's hint; it is honoured (never retried sooner) or, when it
    /// does not fit in `time_left`, the call gives up at once. `jitter` in `[0, 1)` spreads
    /// the backoff over its upper half, so a stampede of retries does not stay in step.
    pub fn next_delay(
        &self,
        retries_done: u32,
        retry_after: Option<Duration>,
        time_left: Duration,
        jitter: f64,
    ) -> Option<Duration> {
        if retries_done >= self.max_retries {
            return None;
        }
        let exp = self
            .base
            .saturating_mul(1u32.checked_shl(retries_done).unwrap_or(u32::MAX))
            .min(self.cap);
        let jitter = if jitter.is_finite() {
            jitter.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let backoff = exp / 2 + exp.mul_f64(jitter / 2.0);
        let delay = match retry_after {
            Some(ra) => ra.max(backoff),
            None => backoff,
        };
        (delay.saturating_add(self.min_attempt) <= time_left).then_some(delay)
    }
}

/// HTTP statuses worth retrying: rate limited, or a gateway/overload answer.
pub fn retryable_status(code: u16) -> bool {
    matches!(code, 429 | 502 | 503 | 504)
}

/// `Retry-After` (delay-seconds; an HTTP date is not honoured and means no hint) or the
/// millisecond variant `retry-after-ms` some OpenAI-compatible servers send.
pub fn parse_retry_after(seconds: Option<&str>, millis: Option<&str>) -> Option<Duration> {
    if let Some(ms) = millis.and_then(|m| m.trim().parse::<f64>().ok()) {
        if ms.is_finite() && ms >= 0.0 {
            return Some(Duration::from_secs_f64((ms / 1000.0).min(1e6)));
        }
    }
    let s = seconds?.trim();
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse::<u64>()
        .ok()
        .map(|s| Duration::from_secs(s.min(1_000_000)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn backoff_doubles_with_jitter_and_stops() {
        let p = Policy::new(3);
        let big = Duration::from_secs(60);
        // (retries done, jitter, expected delay)
        let rows = [
            (0, 0.0, Some(MS(50))),  // half of the 100 ms base
            (0, 0.5, Some(MS(75))),  // up to the whole base
            (0, 1.0, Some(MS(100))), // (jitter is below 1 in practice)
            (1, 0.0, Some(MS(100))), // 200 ms doubled, lower half
            (2, 0.5, Some(MS(300))), // 400 ms: 200 + 100
            (3, 0.0, None),          // max_retries reached
        ];
        for (done, jitter, want) in rows {
            assert_eq!(
                p.next_delay(done, None, big, jitter),
                want,
                "done={done} jitter={jitter}"
            );
        }
    }

    #[test]
    fn backoff_is_capped() {
        let p = Policy::new(40);
        let d = p
            .next_delay(35, None, Duration::from_secs(60), 1.0)
            .unwrap();
        assert_eq!(d, Duration::from_secs(5));
        // Nonsense jitter is treated as none.
        let d = p
            .next_delay(0, None, Duration::from_secs(60), f64::NAN)
            .unwrap();
        assert_eq!(d, MS(50));
    }

    #[test]
    fn retry_after_is_honoured_within_the_time_left() {
        let p = Policy::new(2);
        // (retry-after, time left, expected)
        let rows = [
            (MS(1000), MS(5000), Some(MS(1000))), // the hint wins over the 50 ms backoff
            (MS(10), MS(5000), Some(MS(50))),     // never sooner than the backoff
            (MS(1000), MS(1049), None),           // no time left for the attempt after it
            (MS(1000), MS(1050), Some(MS(1000))),
            (Duration::from_secs(120), MS(30_000), None),
        ];
        for (ra, left, want) in rows {
            assert_eq!(
                p.next_delay(0, Some(ra), left, 0.0),
                want,
                "{ra:?} {left:?}"
            );
        }
        // Without a hint the backoff must fit too.
        assert_eq!(p.next_delay(0, None, MS(99), 0.0), None);
        assert_eq!(p.next_delay(0, None, MS(100), 0.0), Some(MS(50)));
    }

    #[test]
    fn no_retries_configured() {
        assert_eq!(
            Policy::new(0).next_delay(0, None, Duration::from_secs(60), 0.5),
            None
        );
    }

    #[test]
    fn statuses() {
        for code in [429, 502, 503, 504] {
            assert!(retryable_status(code), "{code}");
        }
        for code in [200, 400, 401, 403, 404, 408, 413, 422, 500, 501] {
            assert!(!retryable_status(code), "{code}");
        }
    }

    #[test]
    fn retry_after_headers() {
        // (Retry-After, retry-after-ms, expected)
        let rows = [
            (Some("2"), None, Some(MS(2000))),
            (Some(" 0 "), None, Some(MS(0))),
            (Some("1.5"), None, None),
            (Some("-1"), None, None),
            (Some("Wed, 21 Oct 2015 07:28:00 GMT"), None, None),
            (Some(""), None, None),
            (None, Some("250"), Some(MS(250))),
            (
                Some("9"),
                Some("120.5"),
                Some(Duration::from_micros(120_500)),
            ),
            (None, Some("soon"), None),
            (Some("99999999999999999999"), None, None),
            (Some("9999999"), None, Some(Duration::from_secs(1_000_000))),
            (None, None, None),
        ];
        for (s, ms, want) in rows {
            assert_eq!(parse_retry_after(s, ms), want, "{s:?} {ms:?}");
        }
    }
}
