//! Counters of what the cache did, and rate-limited logging of degradations.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

use crate::metrics::{ErrorKind, InvalidationKind, StoreMetrics};

/// Live counters of one [`Cache`](crate::Cache). Cheap to update (relaxed
/// atomics); the ones that are metrics too are updated through methods that
/// also emit the metric.
#[derive(Debug)]
pub(crate) struct Counters {
    /// The store's metric keys (labelled with its name).
    pub metrics: StoreMetrics,
    pub hits: AtomicU64,
    pub near_hits: AtomicU64,
    pub misses: AtomicU64,
    pub stores: AtomicU64,
    pub decode_errors: AtomicU64,
    pub encode_errors: AtomicU64,
    pub store_errors: AtomicU64,
    pub timeouts: AtomicU64,
    pub breaker_rejections: AtomicU64,
    pub bypasses: AtomicU64,
    pub invalidations: AtomicU64,
    pub invalidation_failures: AtomicU64,
    pub invalidation_retries: AtomicU64,
    pub invalidations_dropped: AtomicU64,
    pub coalesced: AtomicU64,
    pub lease_waits: AtomicU64,
    pub lease_wait_timeouts: AtomicU64,
    pub leases_lost: AtomicU64,
    pub refreshes: AtomicU64,
    pub refresh_failures: AtomicU64,
    pub stale_served: AtomicU64,
    pub stale_on_error: AtomicU64,
    pub tenant_bypasses: AtomicU64,
    pub tag_misses: AtomicU64,
    pub warmed: AtomicU64,
}

impl Counters {
    /// Counters of the store named `store` (`default` for a cache's own).
    pub fn new(store: &str) -> Self {
        let zero = AtomicU64::new;
        Counters {
            metrics: StoreMetrics::new(store),
            hits: zero(0),
            near_hits: zero(0),
            misses: zero(0),
            stores: zero(0),
            decode_errors: zero(0),
            encode_errors: zero(0),
            store_errors: zero(0),
            timeouts: zero(0),
            breaker_rejections: zero(0),
            bypasses: zero(0),
            invalidations: zero(0),
            invalidation_failures: zero(0),
            invalidation_retries: zero(0),
            invalidations_dropped: zero(0),
            coalesced: zero(0),
            lease_waits: zero(0),
            lease_wait_timeouts: zero(0),
            leases_lost: zero(0),
            refreshes: zero(0),
            refresh_failures: zero(0),
            stale_served: zero(0),
            stale_on_error: zero(0),
            tenant_bypasses: zero(0),
            tag_misses: zero(0),
            warmed: zero(0),
        }
    }

    #[inline]
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }

    /// Counts `n` errors of `kind`, in the counter and the metric.
    pub fn error(&self, kind: ErrorKind, n: u64) {
        let counter = match kind {
            ErrorKind::Timeout => &self.timeouts,
            ErrorKind::Connection => &self.store_errors,
            ErrorKind::BreakerOpen => &self.breaker_rejections,
            ErrorKind::Decode => &self.decode_errors,
            ErrorKind::Encode => &self.encode_errors,
            ErrorKind::InvalidationFailed => &self.invalidation_failures,
            ErrorKind::InvalidationDropped => &self.invalidations_dropped,
        };
        counter.fetch_add(n, Relaxed);
        self.metrics.error(kind, n);
    }

    /// Counts `n` confirmed invalidations of `kind`.
    pub fn invalidated(&self, kind: InvalidationKind, n: u64) {
        self.invalidations.fetch_add(n, Relaxed);
        self.metrics.invalidated(kind, n);
    }

    pub fn snapshot(&self) -> Stats {
        let l = |c: &AtomicU64| c.load(Relaxed);
        Stats {
            hits: l(&self.hits) + l(&self.near_hits),
            near_hits: l(&self.near_hits),
            near_flushes: 0,
            misses: l(&self.misses),
            stores: l(&self.stores),
            decode_errors: l(&self.decode_errors),
            encode_errors: l(&self.encode_errors),
            store_errors: l(&self.store_errors),
            timeouts: l(&self.timeouts),
            breaker_rejections: l(&self.breaker_rejections),
            bypasses: l(&self.bypasses),
            invalidations: l(&self.invalidations),
            invalidation_failures: l(&self.invalidation_failures),
            invalidation_retries: l(&self.invalidation_retries),
            invalidations_dropped: l(&self.invalidations_dropped),
            coalesced: l(&self.coalesced),
            lease_waits: l(&self.lease_waits),
            lease_wait_timeouts: l(&self.lease_wait_timeouts),
            leases_lost: l(&self.leases_lost),
            refreshes: l(&self.refreshes),
            refresh_failures: l(&self.refresh_failures),
            stale_served: l(&self.stale_served),
            stale_on_error: l(&self.stale_on_error),
            tenant_bypasses: l(&self.tenant_bypasses),
            tag_misses: l(&self.tag_misses),
            warmed: l(&self.warmed),
            hit_ratio: crate::metrics::ratio(l(&self.hits) + l(&self.near_hits), l(&self.misses)),
        }
    }
}

/// A snapshot of a cache's counters, from [`Cache::stats`](crate::Cache::stats).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let cache = cache_runtime::Cache::builder().memory().build().await.unwrap();
/// let stats = cache.stats();
/// assert_eq!(stats.hits + stats.misses, 0);
/// # }
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
#[non_exhaustive]
pub struct Stats {
    /// Lookups answered from the store (or its near tier).
    pub hits: u64,
    /// Hits answered by the in-process near tier (`near = true`), counted
    /// in `hits` too.
    pub near_hits: u64,
    /// Times the near tier was flushed because a tracking connection to
    /// Redis was lost or stopped answering.
    pub near_flushes: u64,
    /// Lookups that found no servable value: the body ran, in this call or
    /// in the one it joined (see `coalesced`).
    pub misses: u64,
    /// Values written to the store.
    pub stores: u64,
    /// Stored values that did not decode into the return type (garbage, a
    /// foreign value, an older layout): treated as a miss and overwritten.
    pub decode_errors: u64,
    /// Results whose `Serialize` impl failed: returned, not stored.
    pub encode_errors: u64,
    /// Store operations that failed (connection refused or reset, error replies).
    pub store_errors: u64,
    /// Store operations that ran past the operation timeout.
    pub timeouts: u64,
    /// Operations skipped because the circuit breaker was open.
    pub breaker_rejections: u64,
    /// Calls that ran the body without any cache (nothing installed, or the
    /// store is disabled).
    pub bypasses: u64,
    /// Invalidations (keys or patterns) confirmed by the store.
    pub invalidations: u64,
    /// Invalidation attempts that failed (each one is retried).
    pub invalidation_failures: u64,
    /// Retries of failed invalidations.
    pub invalidation_retries: u64,
    /// Invalidations given up after the retry window: entries that may stay
    /// stale until their TTL. Alert on this.
    pub invalidations_dropped: u64,
    /// Calls that shared another call's run of the body (single flight) instead of running their own.
    pub coalesced: u64,
    /// Misses that found another caller's lease and waited for its fill.
    pub lease_waits: u64,
    /// Lease waits that gave up (after `lease_wait`) and ran the body without storing.
    pub lease_wait_timeouts: u64,
    /// Results not stored because their lease was gone by the time they were ready: an invalidation (or a write) came in between, or the body outlived `lease_ttl`. Each is a stale write prevented.
    pub leases_lost: u64,
    /// Values recomputed before serving expired: early refreshes (XFetch) and refreshes of stale values.
    pub refreshes: u64,
    /// Refreshes whose body failed; the still-servable value was returned instead.
    pub refresh_failures: u64,
    /// Expired values served within `stale_while_revalidate`.
    pub stale_served: u64,
    /// Expired values returned in place of a failed body (`stale_if_error`).
    pub stale_on_error: u64,
    /// Calls that bypassed the cache because tenants are enforced and the call ran outside [`Cache::with_tenant`](crate::Cache::with_tenant); they touched no key.
    pub tenant_bypasses: u64,
    /// Entries found but not served because one of their tags was invalidated since they were stored (counted in `misses` too).
    pub tag_misses: u64,
    /// Values computed and stored by [`Cache::warm`](crate::Cache::warm).
    pub warmed: u64,
    /// `hits / (hits + misses)`, or 0 before any lookup (also
    /// [`hit_ratio()`](Self::hit_ratio); a field so that it is serialized).
    pub hit_ratio: f64,
}

impl Stats {
    /// `hits / (hits + misses)`, or 0 before any lookup.
    pub fn hit_ratio(&self) -> f64 {
        crate::metrics::ratio(self.hits, self.misses)
    }
}

/// Lets one log line through per interval, and counts what it held back, so an
/// outage at 10k calls/s writes one warning a few seconds, not 10k.
#[derive(Debug)]
pub(crate) struct LogLimiter {
    origin: Instant,
    next_ms: AtomicU64,
    suppressed: AtomicU64,
    interval_ms: u64,
}

impl LogLimiter {
    pub fn new(interval_ms: u64) -> Self {
        LogLimiter {
            origin: Instant::now(),
            next_ms: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
            interval_ms,
        }
    }

    /// `Some(n)` when this event may be logged; `n` is how many were held back since.
    pub fn permit(&self) -> Option<u64> {
        let now = self.origin.elapsed().as_millis() as u64;
        let next = self.next_ms.load(Relaxed);
        if now >= next
            && self
                .next_ms
                .compare_exchange(next, now + self.interval_ms, Relaxed, Relaxed)
                .is_ok()
        {
            return Some(self.suppressed.swap(0, Relaxed));
        }
        self.suppressed.fetch_add(1, Relaxed);
        None
    }
}
