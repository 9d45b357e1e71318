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
