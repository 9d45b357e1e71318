//! Background retry of failed invalidations.
//!
//! A failed invalidation is the one cache failure that can leave stale data
//! behind, so it is not dropped: each one gets a task that retries with
//! exponential backoff (20 ms doubling to 2 s) until the store confirms it or
//! the retry window ends. Deleting later than planned is always safe (the next
//! read misses), so retries need no ordering with other writes.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use crate::metrics::{ErrorKind, InvalidationKind};
use crate::stats::Counters;
use crate::store::{Backend, Store};

/// At most this many invalidations wait for a retry; past it, new failures
/// are counted as dropped so an outage can not grow memory without bound.
const MAX_PENDING: usize = 10_000;

#[derive(Debug)]
pub(crate) struct RetryQueue {
    store: Backend,
    counters: Arc<Counters>,
    retry_for: Duration,
    pending: Arc<AtomicUsize>,
}

impl RetryQueue {
    pub fn new(store: Backend, counters: Arc<Counters>, retry_for: Duration) -> Self {
        RetryQueue {
            store,
            counters,
            retry_for,
            pending: Arc::new(AtomicUsize::new(0)),
        }
    }

    pub fn push(&self, keys: Vec<String>, patterns: Vec<String>) {
        let jobs = keys.len() + patterns.len();
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.drop_jobs(jobs, "no Tokio runtime to retry on");
            return;
        };
        if self.pending.fetch_add(1, Relaxed) >= MAX_PENDING {
            self.pending.fetch_sub(1, Relaxed);
            self.drop_jobs(jobs, "too many invalidations waiting for a retry");
            return;
        }
        let store = self.store.clone();
        let counters = self.counters.clone();
        let pending = self.pending.clone();
        let deadline = Instant::now() + self.retry_for;
        runtime.spawn(async move {
            let (mut keys, mut patterns) = (keys, patterns);
            let mut backoff = Duration::from_millis(20);
            while !keys.is_empty() || !patterns.is_empty() {
                if Instant::now() + backoff > deadline {
                    let left = (keys.len() + patterns.len()) as u64;
                    counters.error(ErrorKind::InvalidationDropped, left);
                    tracing::error!(
                        keys = keys.len(),
                        patterns = patterns.len(),
                        "cache invalidation given up after the retry window: entries may stay stale until their TTL"
                    );
                    break;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
                Counters::bump(&counters.invalidation_retries);
                if !keys.is_empty() {
                    match store.delete(&keys).await {
                        Ok(_) => {
                            counters.invalidated(InvalidationKind::Key, keys.len() as u64);
                            keys.clear();
                        }
                        Err(_) => counters.error(ErrorKind::InvalidationFailed, 1),
                    }
                }
                let mut still_failing = Vec::new();
                for pattern in patterns.drain(..) {
                    match store.delete_pattern(&pattern, None).await {
                        Ok(_) => counters.invalidated(InvalidationKind::Pattern, 1),
                        Err(_) => {
                            counters.error(ErrorKind::InvalidationFailed, 1);
                            still_failing.push(pattern);
                        }
                    }
                }
                patterns = still_failing;
            }
            pending.fetch_sub(1, Relaxed);
        });
    }

    fn drop_jobs(&self, jobs: usize, why: &str) {
        self.counters
            .error(ErrorKind::InvalidationDropped, jobs as u64);
        tracing::error!(
            jobs,
            "cache invalidation dropped ({why}): entries may stay stale until their TTL"
        );
    }
}
