//! The read path of a `#[cached]` function: lookup, then on a miss single
//! flight and a lease, early refresh and stale serving.
//!
//! Guarantees (with leases on, the default):
//! - concurrent misses of one key run the body once per process (single
//!   flight) and once across processes (a lease in the key; others wait for
//!   its fill, bounded by `lease_wait`);
//! - a result is stored only while its lease is intact, so a body that
//!   started before an invalidation never stores what it read;
//! - a follower receives the leader's result only if it was stored that way,
//!   so it can not receive a value older than an invalidation either;
//! - the cache never fails a call: a store that does not answer makes the
//!   call run its body, as before.

use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::__private::{Shape, Spec};
use crate::Cache;
use crate::cache::Lookup;
use crate::codec::Cacheable;
use crate::policy::lease::{Content, LeaseFor, LeaseReply, Token, classify};
use crate::policy::refresh::should_refresh;
use crate::policy::single_flight::{Leader, Outcome, Role};
use crate::stats::Counters;
use crate::store::{Store, StoreError};

/// The policy in effect for one call: the function's options over the cache's.
struct Effective {
    ttl: Duration,
    leases: bool,
    lease_ttl: Duration,
    lease_wait: Duration,
    beta: f64,
    swr: Duration,
    sie: Duration,
}

impl Effective {
    #[inline]
    fn new(cache: &Cache, spec: &Spec) -> Self {
        let p = &cache.inner.policy;
        Effective {
            ttl: spec.ttl.unwrap_or(cache.inner.default_ttl),
            leases: spec.lease.unwrap_or(p.leases),
            lease_ttl: spec.lease_ttl.unwrap_or(p.lease_ttl),
            lease_wait: p.lease_wait,
            beta: spec.early_refresh.unwrap_or(p.early_refresh),
            swr: spec
                .stale_while_revalidate
                .unwrap_or(p.stale_while_revalidate),
            sie: spec.stale_if_error.unwrap_or(p.stale_if_error),
        }
    }

    /// How long a value is kept past its TTL to be served stale.
    fn stale_extra(&self) -> Duration {
        self.swr.max(self.sie)
    }

    /// The store's TTL for a value: fresh for `ttl`, then servable stale.
    fn store_ttl(&self) -> Duration {
        self.ttl.saturating_add(self.stale_extra())
    }

    /// Whether lookups need the key's remaining TTL (one more command in the
    /// same round trip); plain functions read with a bare GET.
    fn needs_ttl(&self) -> bool {
        self.beta > 0.0 || !self.stale_extra().is_zero()
    }
}

/// What a lookup found.
enum Found<V> {
    /// A servable value. `remaining`: time to its fresh expiry when known;
    /// `stale_for`: how long it has been expired (zero when fresh);
    /// `refreshing`: another caller holds a refresh lease on it.
    Value {
        value: V,
        remaining: Option<Duration>,
        stale_for: Option<Duration>,
        refreshing: bool,
    },
    /// Nothing usable; a lease or garbage counts as nothing.
    Miss,
    /// The store did not answer.
    Unavailable,
}

async fn look<V: Cacheable>(cache: &Cache, key: &str, eff: &Effective) -> Found<V> {
    let store = &cache.inner.store;
    let read = if eff.needs_ttl() {
        store
            .get_with_ttl(key)
            .await
            .map(|o| o.map(|(b, t)| (b, Some(t))))
    } else {
        store.get(key).await.map(|o| o.map(|b| (b, None)))
    };
    let (bytes, pttl) = match read {
        Ok(Some(found)) => found,
        Ok(None) => return Found::Miss,
        Err(e) => {
            return match cache.classify_error::<V>(e) {
                Lookup::Unavailable => Found::Unavailable,
                _ => Found::Miss,
            };
        }
    };
    let (bytes, refreshing) = match classify(bytes) {
        Content::Value(bytes) => (bytes, false),
        Content::Leased {
            value: Some(bytes), ..
        } => (bytes, true),
        Content::Leased { value: None, .. } => return Found::Miss,
    };
    let value = match cache.decode::<V>(&bytes) {
        Some(value) => value,
        None => return Found::Miss,
    };
    let extra = eff.stale_extra();
    let (remaining, stale_for) = match pttl {
        None | Some(Duration::MAX) => (None, None),
        Some(pttl) if pttl > extra => (Some(pttl - extra), None),
        Some(pttl) => (Some(Duration::ZERO), Some(extra - pttl)),
    };
    Found::Value {
        value,
        remaining,
        stale_for,
        refreshing,
    }
}

/// Cache-aside with single flight, leases, early refresh and stale serving.
pub(crate) async fn read<S, R, F>(spec: &'static Spec, cache: &Cache, key: String, body: F) -> R
where
    S: Shape<R>,
    S::Value: Cacheable,
    F: Future<Output = R>,
{
    let counters = &*cache.inner.counters;
    let eff = Effective::new(cache, spec);
    let mut stale = None;
    match look::<S::Value>(cache, &key, &eff).await {
        Found::Value {
            value,
            remaining,
            stale_for: None,
            refreshing,
        } => {
            Counters::bump(&counters.hits);
            if !refreshing
                && eff.beta > 0.0
                && let (Some(remaining), Some(delta)) = (remaining, spec.load_time.get())
                && should_refresh(remaining, delta, eff.beta)
            {
                return Box::pin(refresh::<S, R, F>(spec, cache, &key, &eff, value, body)).await;
            }
            return S::from_stored(value);
        }
        Found::Value {
            value,
            stale_for: Some(stale_for),
            refreshing,
            ..
        } => {
            if stale_for < eff.swr {
                Counters::bump(&counters.hits);
                Counters::bump(&counters.stale_served);
                if refreshing {
                    return S::from_stored(value);
                }
                return Box::pin(refresh::<S, R, F>(spec, cache, &key, &eff, value, body)).await;
            }
            Counters::bump(&counters.misses);
            if stale_for < eff.sie {
                stale = Some(value);
            }
        }
        Found::Miss => Counters::bump(&counters.misses),
        Found::Unavailable => {
            return Box::pin(unreachable::<S, R, F>(spec, cache, key, body)).await;
        }
    }
    // The cold paths are boxed: the future of a hit stays small (it is
    // created and moved on every call), a miss pays one allocation.
    Box::pin(miss::<S, R, F>(spec, cache, key, &eff, stale, body)).await
}

/// The store did not answer the lookup (down, or the breaker is open):
/// concurrent callers of this process still share one run of the body (the
/// database needs protecting most while the cache is down); nothing is
/// stored and no lease taken.
async fn unreachable<S, R, F>(spec: &'static Spec, cache: &Cache, key: String, body: F) -> R
where
    S: Shape<R>,
    S::Value: Cacheable,
    F: Future<Output = R>,
{
    let leader = loop {
        match cache.inner.flights.join(&key) {
            Role::Leader(leader) => break leader,
            Role::Follower(follower) => match follower.wait().await {
                Outcome::Done(Some(bytes)) => {
                    if let Some(value) = cache.decode::<S::Value>(&bytes) {
                        Counters::bump(&cache.inner.counters.coalesced);
                        return S::from_stored(value);
                    }
                    return body.await;
                }
                Outcome::Done(None) => return body.await,
                Outcome::Abandoned => continue,
            },
        }
    };
    let result = timed(spec, body).await;
    let shared = S::to_store(&result, spec.cache_none)
        .and_then(|value| cache.encode(value))
        .map(Bytes::from);
    leader.finish(shared);
    result
}

/// A miss: join or lead the key's flight; the leader takes the lease, runs
/// the body and fills.
async fn miss<S, R, F>(
    spec: &'static Spec,
    cache: &Cache,
    key: String,
    eff: &Effective,
    stale: Option<S::Value>,
    body: F,
) -> R
where
    S: Shape<R>,
    S::Value: Cacheable,
    F: Future<Output = R>,
{
    let counters = &*cache.inner.counters;
    let leader = loop {
        match cache.inner.flights.join(&key) {
            Role::Leader(leader) => break leader,
            Role::Follower(follower) => match follower.wait().await {
                Outcome::Done(Some(bytes)) => {
                    if let Some(value) = cache.decode::<S::Value>(&bytes) {
                        Counters::bump(&counters.coalesced);
                        return S::from_stored(value);
                    }
                    return or_stale::<S, R>(cache, body.await, stale);
                }
                Outcome::Done(None) => return or_stale::<S, R>(cache, body.await, stale),
                // The leader was cancelled: one of its followers leads now.
                Outcome::Abandoned => continue,
            },
        }
    };
    if !eff.leases {
        return plain::<S, R, F>(spec, cache, &key, eff, stale, leader, body).await;
    }

    let store = &cache.inner.store;
    let token = Token::new();
    // `lease_wait` bounds the wait for each holder: when a dead holder's
    // lease expires and another process takes it over, the clock restarts
    // (at most once more), so the takeover's fill is waited for too.
    let mut started = Instant::now();
    let mut holder: Option<Bytes> = None;
    let mut takeovers = 0;
    let mut pause = Duration::from_millis(2);
    let mut waited = false;
    loop {
        // An expired value kept for stale serving is leased over; a fresh
        // one is a fill that landed since the lookup.
        let purpose = LeaseFor::Miss {
            stale_within: eff.stale_extra(),
        };
        match store.lease(&key, &token, eff.lease_ttl, purpose).await {
            Ok(LeaseReply::Acquired) => break,
            Ok(LeaseReply::Held(Content::Value(bytes))) => {
                // Filled since our lookup (by the holder we waited for, or
                // just before we asked). Garbage was counted by the lookup.
                if let Ok(value) = crate::codec::decode::<S::Value>(&bytes) {
                    Counters::bump(&counters.coalesced);
                    leader.finish(Some(bytes));
                    return S::from_stored(value);
                }
                return plain::<S, R, F>(spec, cache, &key, eff, stale, leader, body).await;
            }
            Err(StoreError::WrongType(_)) => {
                return plain::<S, R, F>(spec, cache, &key, eff, stale, leader, body).await;
            }
            Ok(LeaseReply::Held(Content::Leased { token: theirs, .. })) => {
                if !waited {
                    waited = true;
                    Counters::bump(&counters.lease_waits);
                }
                if holder.as_ref().is_some_and(|h| *h != theirs) && takeovers < 1 {
                    takeovers += 1;
                    started = Instant::now();
                }
                holder = Some(theirs);
                let left = eff.lease_wait.saturating_sub(started.elapsed());
                if left.is_zero() {
                    // The holder is slow or gone and its lease not yet
                    // expired: run the body rather than wait longer. Without
                    // a lease the result is not stored, and not shared.
                    Counters::bump(&counters.lease_wait_timeouts);
                    drop(leader);
                    return or_stale::<S, R>(cache, body.await, stale);
                }
                tokio::time::sleep(pause.min(left)).await;
                pause = (pause * 2).min(Duration::from_millis(50));
            }
            Err(e) => {
                let unavailable = e.is_unavailable();
                cache.store_failed(&e);
                let result = timed(spec, body).await;
                let shared = match S::to_store(&result, spec.cache_none) {
                    // Unreachable: share the result with this process's
                    // callers (they would only load the database), store nothing.
                    Some(value) if unavailable => cache.encode(value).map(Bytes::from),
                    // An error reply (e.g. scripts disabled): plain cache-aside.
                    Some(value) => cache.set_encoded(&key, value, eff.store_ttl()).await,
                    None => None,
                };
                leader.finish(shared);
                return or_stale::<S, R>(cache, result, stale);
            }
        }
    }

    // We hold the lease: run the body, then fill.
    let lease = LeaseGuard::new(cache, &key, token);
    let result = timed(spec, body).await;
    let shared = match S::to_store(&result, spec.cache_none) {
        Some(value) => lease.fill(value, eff.store_ttl()).await,
        // A failure leaves what was there (an expired value kept for
        // `stale_if_error`); a success that is not stored removes it.
        None => {
            lease.release(!S::is_success(&result)).await;
            None
        }
    };
    leader.finish(shared);
    or_stale::<S, R>(cache, result, stale)
}

/// Plain cache-aside: run the body and `SET` its result. With leases off,
/// and over garbage or a foreign Redis type under the key (counted by the
/// lookup), where there is nothing to lease against.
async fn plain<S, R, F>(
    spec: &'static Spec,
    cache: &Cache,
    key: &str,
    eff: &Effective,
    stale: Option<S::Value>,
    leader: Leader,
    body: F,
) -> R
where
    S: Shape<R>,
    S::Value: Cacheable,
    F: Future<Output = R>,
{
    let result = timed(spec, body).await;
    let shared = match S::to_store(&result, spec.cache_none) {
        Some(value) => cache.set_encoded(key, value, eff.store_ttl()).await,
        None => None,
    };
    leader.finish(shared);
    or_stale::<S, R>(cache, result, stale)
}

/// A refresh of a servable value (early, or stale within
/// `stale_while_revalidate`): one caller per key recomputes it under a lease
/// while every other caller, in every process, keeps being served the value.
/// A refresh that can not start, or whose body fails, returns the value.
async fn refresh<S, R, F>(
    spec: &'static Spec,
    cache: &Cache,
    key: &str,
    eff: &Effective,
    servable: S::Value,
    body: F,
) -> R
where
    S: Shape<R>,
    S::Value: Cacheable,
    F: Future<Output = R>,
{
    let counters = &*cache.inner.counters;
    let Some(leader) = cache.inner.flights.try_lead(key) else {
        return S::from_stored(servable);
    };
    let lease = if eff.leases {
        let token = Token::new();
        match cache
            .inner
            .store
            .lease(key, &token, eff.lease_ttl, LeaseFor::Refresh)
            .await
        {
            Ok(LeaseReply::Acquired) => Some(LeaseGuard::new(cache, key, token)),
            Ok(LeaseReply::Held(_)) => return S::from_stored(servable),
            Err(e) => {
                cache.store_failed(&e);
                return S::from_stored(servable);
            }
        }
    } else {
        None
    };
    Counters::bump(&counters.refreshes);
    let result = timed(spec, body).await;
    if !S::is_success(&result) {
        Counters::bump(&counters.refresh_failures);
        if let Some(lease) = lease {
            lease.release(true).await;
        }
        drop(leader);
        return S::from_stored(servable);
    }
    let shared = match (S::to_store(&result, spec.cache_none), lease) {
        (Some(value), Some(lease)) => lease.fill(value, eff.store_ttl()).await,
        (Some(value), None) => cache.set_encoded(key, value, eff.store_ttl()).await,
        // A result that is not stored (e.g. `None` without `cache_none`)
        // must not leave the old value behind.
        (None, Some(lease)) => {
            lease.release(false).await;
            None
        }
        (None, None) => {
            cache.invalidate_key(key).await;
            None
        }
    };
    leader.finish(shared);
    result
}

/// Runs the body, recording its duration (XFetch's delta).
async fn timed<R>(spec: &Spec, body: impl Future<Output = R>) -> R {
    let started = Instant::now();
    let result = body.await;
    spec.load_time.observe(started.elapsed());
    result
}

/// `stale_if_error`: a failed result is replaced by the stale value, if any.
fn or_stale<S: Shape<R>, R>(cache: &Cache, result: R, stale: Option<S::Value>) -> R {
    match stale {
        Some(value) if !S::is_success(&result) => {
            Counters::bump(&cache.inner.counters.stale_on_error);
            S::from_stored(value)
        }
        _ => result,
    }
}

/// A lease this call holds. Dropped unfilled (the call was cancelled), it
/// is given back in the background so nobody waits for it to expire.
struct LeaseGuard {
    cache: Cache,
    key: String,
    token: Option<Token>,
}

impl LeaseGuard {
    fn new(cache: &Cache, key: &str, token: Token) -> Self {
        LeaseGuard {
            cache: cache.clone(),
            key: key.to_owned(),
            token: Some(token),
        }
    }

    /// Stores `value` if the lease is still ours. Returns the encoded value
    /// when it was stored (then safe to share) or the store did not answer,
    /// `None` when the lease was lost.
    async fn fill<V: Cacheable>(mut self, value: &V, ttl: Duration) -> Option<Bytes> {
        let token = self.token.take()?;
        let cache = &self.cache;
        let bytes = match cache.encode(value) {
            Some(bytes) => bytes,
            None => {
                let _ = cache.inner.store.release(&self.key, &token, true).await;
                return None;
            }
        };
        let shared = Bytes::from(bytes);
        match cache
            .inner
            .store
            .fill(&self.key, &token, shared.clone(), ttl)
            .await
        {
            Ok(true) => {
                Counters::bump(&cache.inner.counters.stores);
                Some(shared)
            }
            Ok(false) => {
                Counters::bump(&cache.inner.counters.leases_lost);
                None
            }
            // Unreachable: nothing was stored; share the result with this
            // process's callers rather than send each to the database.
            Err(e) => {
                cache.store_failed(&e);
                e.is_unavailable().then_some(shared)
            }
        }
    }

    async fn release(mut self, restore: bool) {
        if let Some(token) = self.token.take()
            && let Err(e) = self
                .cache
                .inner
                .store
                .release(&self.key, &token, restore)
                .await
        {
            self.cache.store_failed(&e);
        }
    }
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        let Some(token) = self.token.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return; // no runtime: the lease expires on its own
        };
        let cache = self.cache.clone();
        let key = std::mem::take(&mut self.key);
        runtime.spawn(async move {
            let _ = cache.inner.store.release(&key, &token, true).await;
        });
    }
}
