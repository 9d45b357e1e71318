//! Early refresh: the probabilistic rule of Vattani, Chierichetti and
//! Lowenstein, "Optimal Probabilistic Cache Stampede Prevention" (VLDB 2015),
//! known as XFetch.
//!
//! A caller that reads a value with `remaining` time to expiry recomputes it
//! when `-delta * beta * ln(rand()) >= remaining`, where `delta` is how long
//! the computation takes. The closer the expiry and the slower the body, the
//! likelier a refresh; under steady load exactly one caller tends to win the
//! draw shortly before the expiry, so the key never expires into a miss storm.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// How long a function's body takes, as observed in this process: an
/// exponentially weighted moving average (weight 1/4 for each new sample).
/// `delta` of the XFetch rule. Per function rather than per key, so a
/// process that has computed any key of the function can refresh all of them.
#[derive(Debug)]
pub struct LoadTime {
    micros: AtomicU64,
}

impl LoadTime {
    /// No observation yet.
    pub const fn new() -> Self {
        LoadTime {
            micros: AtomicU64::new(0),
        }
    }

    /// Records one run of the body.
    pub(crate) fn observe(&self, took: Duration) {
        let sample = u64::try_from(took.as_micros()).unwrap_or(u64::MAX).max(1);
        // A lost update under contention only drops one sample of an average.
        let old = self.micros.load(Relaxed);
        let new = if old == 0 {
            sample
        } else {
            old - old / 4 + sample / 4
        };
        self.micros.store(new, Relaxed);
    }

    /// The average, or `None` before the first run in this process.
    pub(crate) fn get(&self) -> Option<Duration> {
        match self.micros.load(Relaxed) {
            0 => None,
            us => Some(Duration::from_micros(us)),
        }
    }
}

impl Default for LoadTime {
    fn default() -> Self {
        Self::new()
    }
}

/// The XFetch draw: whether a value with `remaining` time left should be
/// recomputed now, for a body taking `delta` and the eagerness `beta`.
pub(crate) fn should_refresh(remaining: Duration, delta: Duration, beta: f64) -> bool {
    if beta <= 0.0 {
        return false;
    }
    // 1 - f64() is in (0, 1], so ln is finite and <= 0.
    let draw = -(1.0 - fastrand::f64()).ln();
    delta.as_secs_f64() * beta * draw >= remaining.as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_time_averages() {
        let t = LoadTime::new();
        assert_eq!(t.get(), None);
        t.observe(Duration::from_millis(100));
        assert_eq!(t.get(), Some(Duration::from_millis(100)));
        t.observe(Duration::from_millis(200));
        assert_eq!(t.get(), Some(Duration::from_millis(125)));
    }

    #[test]
    fn xfetch_probability_follows_the_rule() {
        // P(refresh) = P(-ln U >= r / (delta*beta)) = exp(-r / (delta*beta)).
        let delta = Duration::from_millis(100);
        let trials = 200_000;
        for (remaining_ms, beta) in [(0u64, 1.0), (100, 1.0), (200, 1.0), (100, 2.0), (300, 0.5)] {
            let remaining = Duration::from_millis(remaining_ms);
            let hits = (0..trials)
                .filter(|_| should_refresh(remaining, delta, beta))
                .count();
            let expected = (-(remaining_ms as f64) / (100.0 * beta)).exp();
            let seen = hits as f64 / trials as f64;
            assert!(
                (seen - expected).abs() < 0.01,
                "remaining {remaining_ms} ms, beta {beta}: saw {seen}, expected {expected}"
            );
        }
        assert!(!should_refresh(Duration::ZERO, delta, 0.0), "beta 0 is off");
    }
}
