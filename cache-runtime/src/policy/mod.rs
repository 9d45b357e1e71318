//! Concurrency and failure policies: the circuit breaker, the retry of
//! failed invalidations, single flight, leases and early refresh.

pub(crate) mod breaker;
pub(crate) mod lease;
pub mod refresh;
pub(crate) mod retry;
pub(crate) mod single_flight;
pub mod tags;
pub use breaker::BreakerState;

use std::time::Duration;

/// The cache-wide concurrency policy, from the builder; each function may
/// override parts of it in its attribute.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Policy {
    pub leases: bool,
    pub lease_ttl: Duration,
    pub lease_wait: Duration,
    /// XFetch beta; 0 = off.
    pub early_refresh: f64,
    pub stale_while_revalidate: Duration,
    pub stale_if_error: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            leases: true,
            lease_ttl: Duration::from_secs(5),
            lease_wait: Duration::from_secs(5),
            early_refresh: 0.0,
            stale_while_revalidate: Duration::ZERO,
            stale_if_error: Duration::ZERO,
        }
    }
}

/// One function's overrides of the cache-wide settings, from its
/// attribute (`ttl`, `lease`, `lease_ttl`, `early_refresh`,
/// `stale_while_revalidate`, `stale_if_error`); `None` keeps the cache's.
/// The expansion writes one into every function's static spec.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Overrides {
    pub ttl: Option<Duration>,
    pub leases: Option<bool>,
    pub lease_ttl: Option<Duration>,
    /// The XFetch beta, `0.0` = off.
    pub early_refresh: Option<f64>,
    /// `ZERO` = off.
    pub stale_while_revalidate: Option<Duration>,
    /// `ZERO` = off.
    pub stale_if_error: Option<Duration>,
}

impl Policy {
    /// This policy with a function's overrides applied.
    #[inline]
    pub(crate) fn with(&self, o: &Overrides) -> Policy {
        Policy {
            leases: o.leases.unwrap_or(self.leases),
            lease_ttl: o.lease_ttl.unwrap_or(self.lease_ttl),
            lease_wait: self.lease_wait,
            early_refresh: o.early_refresh.unwrap_or(self.early_refresh),
            stale_while_revalidate: o
                .stale_while_revalidate
                .unwrap_or(self.stale_while_revalidate),
            stale_if_error: o.stale_if_error.unwrap_or(self.stale_if_error),
        }
    }
}
