//! Circuit breaker: after `failure_threshold` consecutive connection failures
//! or timeouts, stop calling the store for `open_for`, then let one probe
//! through; its success closes the breaker, its failure opens it again.
//!
//! While open, every cache operation is skipped at the cost of two atomic
//! loads, so a Redis outage costs callers nothing but the body's own time.
//!
//! A probe whose caller is cancelled (its future dropped) reports nothing, so
//! a probe is also only trusted for `probe_timeout`: after that, the next
//! call becomes a new probe. The breaker can never stay half-open for good.

use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering::*};
use std::time::{Duration, Instant};

const CLOSED: u8 = 0;
const OPEN: u8 = 1;
const HALF_OPEN: u8 = 2;

/// Where a store's circuit breaker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Calls go to the store.
    Closed,
    /// The store is considered down; calls skip it until the next probe.
    Open,
    /// One probe call is in flight; the others skip the store.
    HalfOpen,
}

#[derive(Debug)]
pub(crate) struct Breaker {
    state: AtomicU8,
    consecutive_failures: AtomicU32,
    /// Milliseconds since `origin` when the breaker may let a (new) probe through.
    retry_at_ms: AtomicU64,
    origin: Instant,
    threshold: u32,
    open_for: Duration,
    probe_timeout: Duration,
    pub opened: AtomicU64,
    pub closed: AtomicU64,
}

/// Permission to call the store; report the outcome to the breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Permit {
    Call,
    Probe,
}

impl Breaker {
    pub fn new(threshold: u32, open_for: Duration, probe_timeout: Duration) -> Self {
        Breaker {
            state: AtomicU8::new(CLOSED),
            consecutive_failures: AtomicU32::new(0),
            retry_at_ms: AtomicU64::new(0),
            origin: Instant::now(),
            threshold: threshold.max(1),
            open_for,
            probe_timeout,
            opened: AtomicU64::new(0),
            closed: AtomicU64::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64
    }

    /// Whether a call may go to the store now.
    #[inline]
    pub fn permit(&self) -> Option<Permit> {
        if self.state.load(Acquire) == CLOSED {
            return Some(Permit::Call);
        }
        // Open, or half-open with a probe that may have been cancelled: the
        // one caller that moves `retry_at_ms` forward becomes the probe.
        let now = self.now_ms();
        let retry_at = self.retry_at_ms.load(Acquire);
        if now < retry_at {
            return None;
        }
        let probe_until = now + self.probe_timeout.as_millis() as u64;
        if self
            .retry_at_ms
            .compare_exchange(retry_at, probe_until, AcqRel, Acquire)
            .is_err()
        {
            return None;
        }
        // Only from OPEN: a concurrent success may have closed it meanwhile.
        let _ = self
            .state
            .compare_exchange(OPEN, HALF_OPEN, AcqRel, Acquire);
        Some(Permit::Probe)
    }

    #[inline]
    pub fn on_success(&self, permit: Permit) {
        if self.consecutive_failures.load(Relaxed) != 0 {
            self.consecutive_failures.store(0, Relaxed);
        }
        if permit == Permit::Probe
            && self
                .state
                .compare_exchange(HALF_OPEN, CLOSED, AcqRel, Acquire)
                .is_ok()
        {
            self.retry_at_ms.store(0, Release);
            self.closed.fetch_add(1, Relaxed);
            tracing::info!("cache store reachable again: circuit breaker closed");
        }
    }

    /// Records a connection failure or timeout; returns true if this opened the breaker.
    pub fn on_failure(&self, permit: Permit) -> bool {
        let failures = self.consecutive_failures.fetch_add(1, Relaxed) + 1;
        let trip = match permit {
            Permit::Probe => true,
            Permit::Call => failures >= self.threshold,
        };
        if !trip {
            return false;
        }
        let from = if permit == Permit::Probe {
            HALF_OPEN
        } else {
            CLOSED
        };
        let opened = self
            .state
            .compare_exchange(from, OPEN, AcqRel, Acquire)
            .is_ok();
        if opened {
            self.retry_at_ms
                .store(self.now_ms() + self.open_for.as_millis() as u64, Release);
        }
        if opened && from == CLOSED {
            self.opened.fetch_add(1, Relaxed);
            tracing::warn!(
                failures,
                open_for = ?self.open_for,
                "cache store failing: circuit breaker opened, calls run without the cache"
            );
        }
        opened
    }

    pub fn state(&self) -> BreakerState {
        match self.state.load(Acquire) {
            CLOSED => BreakerState::Closed,
            OPEN => BreakerState::Open,
            _ => BreakerState::HalfOpen,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cancelled_probe_is_replaced_after_the_probe_timeout() {
        let b = Breaker::new(1, Duration::from_millis(10), Duration::from_millis(30));
        b.on_failure(Permit::Call);
        std::thread::sleep(Duration::from_millis(15));
        assert_eq!(b.permit(), Some(Permit::Probe));
        // That probe's caller is dropped: it never reports.
        assert_eq!(b.permit(), None);
        std::thread::sleep(Duration::from_millis(35));
        let p = b.permit();
        assert_eq!(p, Some(Permit::Probe));
        b.on_success(Permit::Probe);
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn opens_after_threshold_and_closes_after_probe() {
        let b = Breaker::new(3, Duration::from_millis(30), Duration::from_millis(30));
        for _ in 0..2 {
            assert!(!b.on_failure(b.permit().unwrap()));
        }
        assert!(b.on_failure(b.permit().unwrap()));
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.permit(), None);
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(b.permit(), Some(Permit::Probe));
        // Only one probe at a time.
        assert_eq!(b.permit(), None);
        b.on_success(Permit::Probe);
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(b.permit(), Some(Permit::Call));
    }

    #[test]
    fn failed_probe_reopens() {
        let b = Breaker::new(1, Duration::from_millis(20), Duration::from_millis(20));
        b.on_failure(Permit::Call);
        std::thread::sleep(Duration::from_millis(25));
        let p = b.permit().unwrap();
        assert_eq!(p, Permit::Probe);
        b.on_failure(p);
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.permit(), None);
    }
}
