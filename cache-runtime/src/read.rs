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

use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::__private::{Shape, Spec};
use crate::Cache;
use crate::cache::{Lookup, warming};
use crate::codec::Cacheable;
use crate::metrics::Event;
use crate::policy::lease::{Content, LeaseFor, LeaseReply, Token, classify};
use crate::policy::refresh::should_refresh;
use crate::policy::single_flight::{Leader, Outcome, Role};
use crate::policy::tags;
use crate::stats::Counters;
use crate::store::{Store, StoreError};

/// The policy in effect for one call: the function's options over the cache's.
struct Effective {
    ttl: Duration,
    /// The near tier keeps what this call reads (it needs the remaining TTL).
    near: bool,
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
            near: false,
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
        self.near || self.beta > 0.0 || !self.stale_extra().is_zero()
    }

    /// How long the versions of an entry's tags are kept: past the entry's
    /// own expiry, since it is stored after the body runs.
    fn tag_ttl(&self) -> Duration {
        self.store_ttl()
            .saturating_add(self.lease_ttl.max(Duration::from_secs(60)))
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

/// Reads the entry (and its remaining TTL when needed) and the current
/// versions of its tags, in one round trip; also returns those versions.
async fn look<V: Cacheable>(
    cache: &Cache,
    key: &str,
    tags: &[String],
    eff: &Effective,
) -> (Found<V>, Vec<Option<u64>>) {
    let store = &cache.inner.store;
    let reused = match &cache.inner.reused_versions {
        Some(r) if !tags.is_empty() => r.get_all(tags),
        _ => None,
    };
    let read = if tags.is_empty() || reused.is_some() {
        let versions: Vec<Option<u64>> = reused.unwrap_or_default().into_iter().map(Some).collect();
        if eff.needs_ttl() {
            store
                .get_with_ttl(key)
                .await
                .map(|o| (o.map(|(b, t)| (b, Some(t))), versions))
        } else {
            store
                .get(key)
                .await
                .map(|o| (o.map(|b| (b, None)), versions))
        }
    } else {
        store.fetch(key, eff.needs_ttl(), tags).await.map(|f| {
            if let Some(r) = &cache.inner.reused_versions {
                r.remember(tags, &f.tags);
            }
            (f.value.map(|b| (b, f.pttl)), f.tags)
        })
    };
    let (found, versions) = match read {
        Ok(found) => found,
        Err(e) => {
            let found = match cache.classify_error::<V>(e) {
                Lookup::Unavailable => Found::Unavailable,
                _ => Found::Miss,
            };
            return (found, Vec::new());
        }
    };
    let Some((bytes, pttl)) = found else {
        return (Found::Miss, versions);
    };
    let (bytes, refreshing) = match classify(bytes) {
        Content::Value(bytes) => (bytes, false),
        Content::Leased {
            value: Some(bytes), ..
        } => (bytes, true),
        Content::Leased { value: None, .. } => return (Found::Miss, versions),
    };
    let Some(value) = decode_current::<V>(cache, &bytes, &versions, true) else {
        return (Found::Miss, versions);
    };
    let extra = eff.stale_extra();
    let (remaining, stale_for) = match pttl {
        None | Some(Duration::MAX) => (None, None),
        Some(pttl) if pttl > extra => (Some(pttl - extra), None),
        Some(pttl) => (Some(Duration::ZERO), Some(extra - pttl)),
    };
    let found = Found::Value {
        value,
        remaining,
        stale_for,
        refreshing,
    };
    (found, versions)
}

/// Decodes a stored value if the versions it recorded for its tags are
/// still `current`; a moved tag is a miss (`tag_misses`), garbage a decode
/// error (a miss, overwritten). `count`: false when this call counted the
/// same bytes already.
fn decode_current<V: Cacheable>(
    cache: &Cache,
    bytes: &[u8],
    current: &[Option<u64>],
    count: bool,
) -> Option<V> {
    let decoded = crate::codec::split(bytes).and_then(|stored| {
        if !tags::current(stored.tag_versions(), current) {
            return Ok(None);
        }
        stored.decode().map(Some)
    });
    match decoded {
        Ok(Some(value)) => Some(value),
        Ok(None) => {
            if count {
                Counters::bump(&cache.inner.counters.tag_misses);
            }
            None
        }
        Err(e) => {
            if count {
                cache.decode_failed(&e);
            }
            None
        }
    }
}

/// The versions to record with a result about to be computed: read (and
/// created where missing) *before* the body runs, so a tag invalidated
/// while it runs leaves the stored entry stale, never served. `None` when
/// the store did not answer: the result is then not stored.
async fn versions_before_body(cache: &Cache, tags: &[String], ttl: Duration) -> Option<Vec<u64>> {
    if tags.is_empty() {
        return Some(Vec::new());
    }
    match cache.inner.store.tag_versions(tags, ttl).await {
        Ok(versions) => {
            if let Some(r) = &cache.inner.reused_versions {
                let known: Vec<Option<u64>> = versions.iter().copied().map(Some).collect();
                r.remember(tags, &known);
            }
            Some(versions)
        }
        Err(e) => {
            cache.store_failed(&e);
            None
        }
    }
}

/// Stores a write-through result under its key with the current versions of
/// its tags (after the write's own invalidations ran).
pub(crate) async fn store_tagged<V: Cacheable>(
    cache: &Cache,
    key: &str,
    tags: &[String],
    value: &V,
    ttl: Option<Duration>,
) {
    let ttl = ttl.unwrap_or(cache.inner.default_ttl);
    let tag_ttl = ttl.saturating_add(Duration::from_secs(60));
    if let Some(versions) = versions_before_body(cache, tags, tag_ttl).await {
        cache.set_encoded(key, value, &versions, ttl).await;
    }
}

/// What the near tier keeps of a fresh value read from Redis: the value,
/// its remaining fresh time (`None`: no expiry) and its tags' versions.
pub(crate) type Keep<'a, V> = &'a (dyn Fn(&V, Option<Duration>, &[Option<u64>]) + Sync);

/// Cache-aside with single flight, leases, early refresh and stale serving.
/// `keep`: a `near = true` function's near tier, given each fresh value
/// the lookup finds in Redis.
pub(crate) async fn read<S, R, F>(
    spec: &'static Spec,
    cache: &Cache,
    key: String,
    tags: Vec<String>,
    body: F,
    span: &tracing::Span,
    keep: Option<Keep<'_, S::Value>>,
) -> R
where
    S: Shape<R>,
    S::Value: Cacheable,
    F: Future<Output = R>,
{
    let counters = &*cache.inner.counters;
    let mut eff = Effective::new(cache, spec);
    eff.near = keep.is_some();
    let call = Miss { key, tags, eff };
    if warming() {
        span.record("outcome", "warm");
        return Box::pin(warm::<S, R, F>(spec, cache, &call, body)).await;
    }
    let eff = &call.eff;
    let mut stale = None;
    let (found, versions) = look::<S::Value>(cache, &call.key, &call.tags, eff).await;
    match found {
        Found::Value {
            value,
            remaining,
            stale_for: None,
            refreshing,
        } => {
            count(spec, &counters.hits, Event::Hit);
            span.record("outcome", "hit");
            if let Some(keep) = keep
                && !refreshing
            {
                keep(&value, remaining, &versions);
            }
            if !refreshing
                && eff.beta > 0.0
                && let (Some(remaining), Some(delta)) = (remaining, spec.load_time.get())
                && should_refresh(remaining, delta, eff.beta)
            {
                return Box::pin(refresh::<S, R, F>(spec, cache, &call, value, body)).await;
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
                count(spec, &counters.hits, Event::Hit);
                count(spec, &counters.stale_served, Event::StaleServed);
                span.record("outcome", "stale");
                if refreshing {
                    return S::from_stored(value);
                }
                return Box::pin(refresh::<S, R, F>(spec, cache, &call, value, body)).await;
            }
            count(spec, &counters.misses, Event::Miss);
            span.record("outcome", "miss");
            if stale_for < eff.sie {
                stale = Some(value);
            }
        }
        Found::Miss => {
            count(spec, &counters.misses, Event::Miss);
            span.record("outcome", "miss");
        }
        Found::Unavailable => {
            span.record("outcome", "unavailable");
            return Box::pin(unreachable::<S, R, F>(spec, cache, call.key, body)).await;
        }
    }
    // The cold paths are boxed: the future of a hit stays small (it is
    // created and moved on every call), a miss pays one allocation.
    Box::pin(miss::<S, R, F>(spec, cache, &call, &versions, stale, body)).await
}

/// What the cold paths need of a call.
struct Miss {
    key: String,
    tags: Vec<String>,
    eff: Effective,
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
                        count(spec, &cache.inner.counters.coalesced, Event::Coalesced);
                        return S::from_stored(value);
                    }
                    return timed(spec, body).await;
                }
                Outcome::Done(None) => return timed(spec, body).await,
                Outcome::Abandoned => continue,
            },
        }
    };
    let result = timed(spec, body).await;
    let shared = S::to_store(&result, spec.cache_none)
        .and_then(|value| cache.encode(value, &[]))
        .map(Bytes::from);
    leader.finish(shared);
    result
}

/// A miss: join or lead the key's flight; the leader takes the lease, runs
/// the body and fills.
async fn miss<S, R, F>(
    spec: &'static Spec,
    cache: &Cache,
    call: &Miss,
    versions: &[Option<u64>],
    stale: Option<S::Value>,
    body: F,
) -> R
where
    S: Shape<R>,
    S::Value: Cacheable,
    F: Future<Output = R>,
{
    let counters = &*cache.inner.counters;
    let (key, eff) = (&call.key, &call.eff);
    let leader = loop {
        match cache.inner.flights.join(key) {
            Role::Leader(leader) => break leader,
            Role::Follower(follower) => match follower.wait().await {
                Outcome::Done(Some(bytes)) => {
                    if let Some(value) = cache.decode::<S::Value>(&bytes) {
                        count(spec, &counters.coalesced, Event::Coalesced);
                        return S::from_stored(value);
                    }
                    return or_stale::<S, R>(spec, cache, timed(spec, body).await, stale);
                }
                Outcome::Done(None) => {
                    return or_stale::<S, R>(spec, cache, timed(spec, body).await, stale);
                }
                // The leader was cancelled: one of its followers leads now.
                Outcome::Abandoned => continue,
            },
        }
    };
    if !eff.leases {
        return plain::<S, R, F>(spec, cache, call, stale, leader, body).await;
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
        match store.lease(key, &token, eff.lease_ttl, purpose).await {
            Ok(LeaseReply::Acquired) => break,
            Ok(LeaseReply::Held(Content::Value(bytes))) => {
                // Filled since our lookup (by the holder we waited for, or
                // just before we asked), and current for the tag versions
                // the lookup read. (Garbage was counted by the lookup.)
                if let Some(value) = decode_current::<S::Value>(cache, &bytes, versions, false) {
                    count(spec, &counters.coalesced, Event::Coalesced);
                    leader.finish(Some(bytes));
                    return S::from_stored(value);
                }
                return plain::<S, R, F>(spec, cache, call, stale, leader, body).await;
            }
            Err(StoreError::WrongType(_)) => {
                return plain::<S, R, F>(spec, cache, call, stale, leader, body).await;
            }
            Ok(LeaseReply::Held(Content::Leased { token: theirs, .. })) => {
                if !waited {
                    waited = true;
                    count(spec, &counters.lease_waits, Event::LeaseWait);
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
                    return or_stale::<S, R>(spec, cache, timed(spec, body).await, stale);
                }
                tokio::time::sleep(pause.min(left)).await;
                pause = (pause * 2).min(Duration::from_millis(50));
            }
            Err(e) => {
                let unavailable = e.is_unavailable();
                cache.store_failed(&e);
                if unavailable {
                    // Unreachable: share the result with this process's
                    // callers (they would only load the database), store nothing.
                    let result = timed(spec, body).await;
                    let shared = S::to_store(&result, spec.cache_none)
                        .and_then(|value| cache.encode(value, &[]))
                        .map(Bytes::from);
                    leader.finish(shared);
                    return or_stale::<S, R>(spec, cache, result, stale);
                }
                // An error reply (e.g. scripts disabled): plain cache-aside.
                return plain::<S, R, F>(spec, cache, call, stale, leader, body).await;
            }
        }
    }

    // We hold the lease: read the tags' versions, run the body, then fill.
    let lease = LeaseGuard::new(cache, key, token);
    let recorded = versions_before_body(cache, &call.tags, eff.tag_ttl()).await;
    let result = timed(spec, body).await;
    let shared = match (S::to_store(&result, spec.cache_none), recorded) {
        (Some(value), Some(recorded)) => {
            match lease.fill(value, &recorded, eff.store_ttl()).await {
                Ok(shared) => shared,
                Err(LeaseLost) => {
                    // Invalidated (or Redis lost the lease) while the body ran:
                    // this result may predate the invalidation, so it is not
                    // shared. The flight ends without a result: the waiting
                    // callers start over, and one of them leads (and leases)
                    // again, rather than each running the body.
                    drop(leader);
                    return or_stale::<S, R>(spec, cache, result, stale);
                }
            }
        }
        (Some(_), None) => {
            lease.release(false).await;
            None
        }
        // A failure leaves what was there (an expired value kept for
        // `stale_if_error`); a success that is not stored removes it.
        (None, _) => {
            lease.release(!S::is_success(&result)).await;
            None
        }
    };
    leader.finish(shared);
    or_stale::<S, R>(spec, cache, result, stale)
}

/// Plain cache-aside: run the body and `SET` its result. With leases off,
/// and over garbage or a foreign Redis type under the key (counted by the
/// lookup), where there is nothing to lease against.
async fn plain<S, R, F>(
    spec: &'static Spec,
    cache: &Cache,
    call: &Miss,
    stale: Option<S::Value>,
    leader: Leader,
    body: F,
) -> R
where
    S: Shape<R>,
    S::Value: Cacheable,
    F: Future<Output = R>,
{
    let eff = &call.eff;
    let recorded = versions_before_body(cache, &call.tags, eff.tag_ttl()).await;
    let result = timed(spec, body).await;
    let shared = match (S::to_store(&result, spec.cache_none), recorded) {
        (Some(value), Some(recorded)) => {
            cache
                .set_encoded(&call.key, value, &recorded, eff.store_ttl())
                .await
        }
        _ => None,
    };
    leader.finish(shared);
    or_stale::<S, R>(spec, cache, result, stale)
}

/// A refresh of a servable value (early, or stale within
/// `stale_while_revalidate`): one caller per key recomputes it under a lease
/// while every other caller, in every process, keeps being served the value.
/// A refresh that can not start, or whose body fails, returns the value.
async fn refresh<S, R, F>(
    spec: &'static Spec,
    cache: &Cache,
    call: &Miss,
    servable: S::Value,
    body: F,
) -> R
where
    S: Shape<R>,
    S::Value: Cacheable,
    F: Future<Output = R>,
{
    let counters = &*cache.inner.counters;
    let (key, eff) = (call.key.as_str(), &call.eff);
    let Some(leader) = cache.inner.flights.try_lead(key) else {
        return S::from_stored(servable);
    };
    let Ok(lease) = lease_over_present(cache, key, eff).await else {
        return S::from_stored(servable);
    };
    count(spec, &counters.refreshes, Event::Refresh);
    let recorded = versions_before_body(cache, &call.tags, eff.tag_ttl()).await;
    let result = timed(spec, body).await;
    if !S::is_success(&result) {
        Counters::bump(&counters.refresh_failures);
        if let Some(lease) = lease {
            lease.release(true).await;
        }
        drop(leader);
        return S::from_stored(servable);
    }
    let shared = match (S::to_store(&result, spec.cache_none), lease, recorded) {
        (Some(value), Some(lease), Some(recorded)) => lease
            .fill(value, &recorded, eff.store_ttl())
            .await
            .unwrap_or(None),
        (Some(value), None, Some(recorded)) => {
            cache
                .set_encoded(key, value, &recorded, eff.store_ttl())
                .await
        }
        // The tags' versions could not be read: store nothing.
        (Some(_), lease, None) => {
            if let Some(lease) = lease {
                lease.release(true).await;
            }
            None
        }
        // A result that is not stored (e.g. `None` without `cache_none`)
        // must not leave the old value behind.
        (None, Some(lease), _) => {
            lease.release(false).await;
            None
        }
        (None, None, _) => {
            cache.invalidate_key(key).await;
            None
        }
    };
    leader.finish(shared);
    result
}

/// A lease over whatever `key` holds, for a refresh or warming: `Ok(None)`
/// with leases off, `Err` when another caller holds one or the store did
/// not answer (counted).
async fn lease_over_present(
    cache: &Cache,
    key: &str,
    eff: &Effective,
) -> Result<Option<LeaseGuard>, ()> {
    if !eff.leases {
        return Ok(None);
    }
    let token = Token::new();
    match cache
        .inner
        .store
        .lease(key, &token, eff.lease_ttl, LeaseFor::Refresh)
        .await
    {
        Ok(LeaseReply::Acquired) => Ok(Some(LeaseGuard::new(cache, key, token))),
        Ok(LeaseReply::Held(_)) => Err(()),
        Err(e) => {
            cache.store_failed(&e);
            Err(())
        }
    }
}

/// A call inside [`Cache::warm`]: no lookup; run the body and store its
/// result under a lease taken over whatever is there (readers keep being
/// served the present value until the fill), like a refresh.
async fn warm<S, R, F>(spec: &'static Spec, cache: &Cache, call: &Miss, body: F) -> R
where
    S: Shape<R>,
    S::Value: Cacheable,
    F: Future<Output = R>,
{
    let (key, eff) = (call.key.as_str(), &call.eff);
    // Held: another caller is computing it right now, theirs will do.
    let Ok(lease) = lease_over_present(cache, key, eff).await else {
        return timed(spec, body).await;
    };
    let recorded = versions_before_body(cache, &call.tags, eff.tag_ttl()).await;
    let result = timed(spec, body).await;
    let stored = match (S::to_store(&result, spec.cache_none), lease, recorded) {
        (Some(value), Some(lease), Some(recorded)) => lease
            .fill(value, &recorded, eff.store_ttl())
            .await
            .unwrap_or(None),
        (Some(value), None, Some(recorded)) => {
            cache
                .set_encoded(key, value, &recorded, eff.store_ttl())
                .await
        }
        (_, lease, _) => {
            if let Some(lease) = lease {
                lease.release(!S::is_success(&result)).await;
            }
            None
        }
    };
    if stored.is_some() {
        Counters::bump(&cache.inner.counters.warmed);
    }
    result
}

/// Runs the body, recording its duration (XFetch's delta, and the load metrics).
async fn timed<R>(spec: &'static Spec, body: impl Future<Output = R>) -> R {
    let started = Instant::now();
    let result = body.await;
    let took = started.elapsed();
    spec.load_time.observe(took);
    spec.loaded(took);
    result
}

/// Counts `event` in the cache's `counter` and in the function's metrics.
#[inline]
fn count(spec: &'static Spec, counter: &AtomicU64, event: Event) {
    Counters::bump(counter);
    spec.count(event);
}

/// `stale_if_error`: a failed result is replaced by the stale value, if any.
fn or_stale<S: Shape<R>, R>(
    spec: &'static Spec,
    cache: &Cache,
    result: R,
    stale: Option<S::Value>,
) -> R {
    match stale {
        Some(value) if !S::is_success(&result) => {
            count(
                spec,
                &cache.inner.counters.stale_on_error,
                Event::StaleServed,
            );
            S::from_stored(value)
        }
        _ => result,
    }
}

/// A fill found its lease gone.
struct LeaseLost;

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
    /// `None` when it could not be encoded, `LeaseLost` when the lease was
    /// gone (voided by an invalidation, or lost with a Redis restart).
    async fn fill<V: Cacheable>(
        mut self,
        value: &V,
        tag_versions: &[u64],
        ttl: Duration,
    ) -> Result<Option<Bytes>, LeaseLost> {
        let Some(token) = self.token.take() else {
            return Ok(None);
        };
        let cache = &self.cache;
        let bytes = match cache.encode(value, tag_versions) {
            Some(bytes) => bytes,
            None => {
                let _ = cache.inner.store.release(&self.key, &token, true).await;
                return Ok(None);
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
                Ok(Some(shared))
            }
            Ok(false) => {
                Counters::bump(&cache.inner.counters.leases_lost);
                Err(LeaseLost)
            }
            // Unreachable: nothing was stored; share the result with this
            // process's callers rather than send each to the database.
            Err(e) => {
                cache.store_failed(&e);
                Ok(e.is_unavailable().then_some(shared))
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
