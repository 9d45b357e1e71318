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
    /// A value whose tags moved since it was stored: a miss, to be
    /// recomputed under a lease taken over it.
    Outdated,
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
    let value = match decode_current::<V>(cache, &bytes, &versions, true) {
        Decoded::Value(value) => value,
        Decoded::Outdated => return (Found::Outdated, versions),
        Decoded::Garbage => return (Found::Miss, versions),
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

/// A stored value, checked against the current versions of its tags.
enum Decoded<V> {
    Value(V),
    /// A tag moved since the value was stored.
    Outdated,
    /// It does not decode.
    Garbage,
}

/// Decodes a stored value if the versions it recorded for its tags are
/// still `current`; a moved tag is `Outdated` (`tag_misses`), garbage a
/// decode error (a miss, overwritten). `count`: false when this call
/// counted the same bytes already.
fn decode_current<V: Cacheable>(
    cache: &Cache,
    bytes: &[u8],
    current: &[Option<u64>],
    count: bool,
) -> Decoded<V> {
    let decoded = crate::codec::split(bytes).and_then(|stored| {
        if !tags::current(stored.tag_versions(), current) {
            return Ok(None);
        }
        stored.decode().map(Some)
    });
    match decoded {
        Ok(Some(value)) => Decoded::Value(value),
        Ok(None) => {
            if count {
                Counters::bump(&cache.inner.counters.tag_misses);
            }
            Decoded::Outdated
        }
        Err(e) => {
            if count {
                cache.decode_failed(&e);
            }
            Decoded::Garbage
        }
    }
}

/// Checks a value another caller stored (seen by a lease attempt) against
/// its tags' versions as they are *now*: read again, after this call and
/// every follower of its flight began, since a version read before (by the
/// lookup, or before the holder created it) proves nothing about them.
/// `Err` when the versions could not be read (counted).
async fn decode_current_now<V: Cacheable>(
    cache: &Cache,
    key: &str,
    tags: &[String],
    bytes: &[u8],
) -> Result<Decoded<V>, StoreError> {
    let now = versions_now(cache, key, tags).await?;
    Ok(decode_current(cache, bytes, &now, false))
}

/// The current versions of `tags` (none to read without tags).
async fn versions_now(
    cache: &Cache,
    key: &str,
    tags: &[String],
) -> Result<Vec<Option<u64>>, StoreError> {
    if tags.is_empty() {
        return Ok(Vec::new());
    }
    Ok(cache.inner.store.fetch(key, false, tags).await?.tags)
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

/// What the near tier keeps of a fresh value read from Redis: the value,
/// its remaining fresh time (`None`: no expiry) and its tags' versions.
pub(crate) type Keep<'a, V> = &'a (dyn Fn(&V, Option<Duration>, &[Option<u64>]) + Sync);

/// Cache-aside with single flight, leases, early refresh and stale serving.
/// `keep`: a `near = true` function's near tier, given each fresh value
/// the lookup finds in Redis.
///
/// **Read-after-invalidate** (leases on, the default): once an
/// invalidation of this key (exact, pattern or tag) has returned success,
/// no call that begins after it returns a value computed by a body that
/// began before it. Every value a call returns was confirmed in the store
/// *after the call began*:
/// - a hit: by the call's own lookup (the entry, and its tags' versions,
///   read in one round trip);
/// - a fill under a lease: by the fill, which writes only while the lease
///   taken before the body is intact (an invalidation removes it), with
///   the tags' versions read again at the same time;
/// - a value another process filled while this call waited on its lease:
///   by the lease attempt that saw it, with the tags' versions read again;
/// - an in-process follower: by one of the above sent after it joined the
///   flight; a follower that joined later looks the key up again (see
///   [`crate::policy::single_flight`]);
/// - when nothing can confirm it (the store did not answer, or leases are
///   off): followers get the leader's result only if they joined before
///   its body started.
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
    let mut looked = Looked {
        stale: None,
        outdated: false,
    };
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
                looked.stale = Some(value);
            }
        }
        Found::Miss | Found::Outdated => {
            looked.outdated = matches!(found, Found::Outdated);
            count(spec, &counters.misses, Event::Miss);
            span.record("outcome", "miss");
        }
        Found::Unavailable => {
            span.record("outcome", "unavailable");
            return Box::pin(unreachable::<S, R, F>(spec, cache, &call.key, body)).await;
        }
    }
    // The cold paths are boxed: the future of a hit stays small (it is
    // created and moved on every call), a miss pays one allocation.
    Box::pin(miss::<S, R, F>(spec, cache, &call, looked, body)).await
}

/// What the cold paths need of a call.
struct Miss {
    key: String,
    tags: Vec<String>,
    eff: Effective,
}

/// What a miss's lookup found besides the miss.
struct Looked<V> {
    /// An expired value kept for `stale_if_error`.
    stale: Option<V>,
    /// The key holds a value whose tags moved.
    outdated: bool,
}

/// The store did not answer the lookup (down, or the breaker is open):
/// concurrent callers of this process still share one run of the body (the
/// database needs protecting most while the cache is down); nothing is
/// stored and no lease taken. Nothing can confirm that a result computed
/// before a caller began is still current, so a caller that comes after
/// the body started shares the next run instead, which starts when this
/// one ends: one body at a time per key, each shared with the callers
/// that began before it.
async fn unreachable<S, R, F>(spec: &'static Spec, cache: &Cache, key: &str, body: F) -> R
where
    S: Shape<R>,
    S::Value: Cacheable,
    F: Future<Output = R>,
{
    let mut leader = loop {
        match cache.inner.flights.join_queued(key) {
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
                Outcome::Late | Outcome::Abandoned => continue,
            },
        }
    };
    leader.ready().await;
    uncached::<S, R, F>(spec, cache, None, leader, body).await
}

/// A miss: join or lead the key's flight; the leader takes the lease, runs
/// the body and fills.
async fn miss<S, R, F>(
    spec: &'static Spec,
    cache: &Cache,
    call: &Miss,
    mut looked: Looked<S::Value>,
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
                    let result = timed(spec, body).await;
                    return or_stale::<S, R>(spec, cache, result, looked.stale);
                }
                Outcome::Done(None) => {
                    let result = timed(spec, body).await;
                    return or_stale::<S, R>(spec, cache, result, looked.stale);
                }
                // The leader's value was confirmed before we joined: look
                // again (it is most likely a hit now).
                Outcome::Late => match look::<S::Value>(cache, key, &call.tags, eff).await.0 {
                    Found::Value {
                        value,
                        stale_for: None,
                        ..
                    } => {
                        count(spec, &counters.coalesced, Event::Coalesced);
                        return S::from_stored(value);
                    }
                    Found::Value {
                        value,
                        stale_for: Some(stale_for),
                        ..
                    } => {
                        if stale_for < eff.sie {
                            looked.stale = Some(value);
                        }
                    }
                    Found::Miss => {}
                    Found::Outdated => looked.outdated = true,
                    Found::Unavailable => {
                        let result = Box::pin(unreachable::<S, R, F>(spec, cache, key, body)).await;
                        return or_stale::<S, R>(spec, cache, result, looked.stale);
                    }
                },
                // The leader was cancelled: one of its followers leads now.
                Outcome::Abandoned => continue,
            },
        }
    };
    if !eff.leases {
        return plain::<S, R, F>(spec, cache, call, looked.stale, leader, body).await;
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
    // An expired value kept for stale serving is leased over; a fresh one
    // is a fill that landed since the lookup. A value whose tags moved is
    // leased over too (recomputed while it is not served).
    let mut purpose = if looked.outdated {
        LeaseFor::Refresh
    } else {
        LeaseFor::Miss {
            stale_within: eff.stale_extra(),
        }
    };
    loop {
        let sent = leader.stamp();
        match store.lease(key, &token, eff.lease_ttl, purpose).await {
            Ok(LeaseReply::Acquired) => break,
            Ok(LeaseReply::Held(Content::Value(bytes))) => {
                // Filled since our lookup (by the holder we waited for, or
                // just before we asked). Garbage was counted by the lookup.
                match decode_current_now::<S::Value>(cache, key, &call.tags, &bytes).await {
                    Ok(Decoded::Value(value)) => {
                        count(spec, &counters.coalesced, Event::Coalesced);
                        leader.finish(Some(bytes), sent);
                        return S::from_stored(value);
                    }
                    Ok(Decoded::Outdated) => purpose = LeaseFor::Refresh,
                    Ok(Decoded::Garbage) => {
                        return plain::<S, R, F>(spec, cache, call, looked.stale, leader, body)
                            .await;
                    }
                    Err(e) => {
                        cache.store_failed(&e);
                        return uncached::<S, R, F>(spec, cache, looked.stale, leader, body).await;
                    }
                }
            }
            Err(StoreError::WrongType(_)) => {
                return plain::<S, R, F>(spec, cache, call, looked.stale, leader, body).await;
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
                // Someone else is computing it: their fill is what we wait
                // for, not a value to lease over again.
                purpose = LeaseFor::Miss {
                    stale_within: eff.stale_extra(),
                };
                let left = eff.lease_wait.saturating_sub(started.elapsed());
                if left.is_zero() {
                    // The holder is slow or gone and its lease not yet
                    // expired: run the body rather than wait longer. Without
                    // a lease the result is not stored, and not shared.
                    Counters::bump(&counters.lease_wait_timeouts);
                    drop(leader);
                    let result = timed(spec, body).await;
                    return or_stale::<S, R>(spec, cache, result, looked.stale);
                }
                tokio::time::sleep(pause.min(left)).await;
                pause = (pause * 2).min(Duration::from_millis(50));
            }
            Err(e) => {
                let unavailable = e.is_unavailable();
                cache.store_failed(&e);
                if unavailable {
                    return uncached::<S, R, F>(spec, cache, looked.stale, leader, body).await;
                }
                // An error reply (e.g. scripts disabled): plain cache-aside.
                return plain::<S, R, F>(spec, cache, call, looked.stale, leader, body).await;
            }
        }
    }

    // We hold the lease: read the tags' versions, run the body, then fill.
    let lease = LeaseGuard::new(cache, key, token);
    let recorded = versions_before_body(cache, &call.tags, eff.tag_ttl()).await;
    let body_started = leader.stamp();
    let result = timed(spec, body).await;
    let (shared, confirmed) = match (S::to_store(&result, spec.cache_none), recorded) {
        (Some(value), Some(recorded)) => {
            let sent = leader.stamp();
            match lease
                .fill(value, &recorded, &call.tags, eff.store_ttl())
                .await
            {
                Filled::Stored(bytes) => (Some(bytes), sent),
                Filled::Unconfirmed(bytes) => (Some(bytes), body_started),
                Filled::NotEncoded => (None, sent),
                Filled::Lost => {
                    // Invalidated (or Redis lost the lease) while the body ran:
                    // this result may predate the invalidation, so it is not
                    // shared. The flight ends without a result: the waiting
                    // callers start over, and one of them leads (and leases)
                    // again, rather than each running the body.
                    drop(leader);
                    return or_stale::<S, R>(spec, cache, result, looked.stale);
                }
            }
        }
        (Some(_), None) => {
            lease.release(false).await;
            (None, body_started)
        }
        // A failure leaves what was there (an expired value kept for
        // `stale_if_error`); a success that is not stored removes it.
        (None, _) => {
            lease.release(!S::is_success(&result)).await;
            (None, body_started)
        }
    };
    leader.finish(shared, confirmed);
    or_stale::<S, R>(spec, cache, result, looked.stale)
}

/// The store did not answer: run the body and share its result with this
/// process's callers that joined before it started (they would only load
/// the database), store nothing.
async fn uncached<S, R, F>(
    spec: &'static Spec,
    cache: &Cache,
    stale: Option<S::Value>,
    leader: Leader,
    body: F,
) -> R
where
    S: Shape<R>,
    S::Value: Cacheable,
    F: Future<Output = R>,
{
    let started = leader.body_started();
    let result = timed(spec, body).await;
    let shared = S::to_store(&result, spec.cache_none)
        .and_then(|value| cache.encode(value, &[]))
        .map(Bytes::from);
    leader.finish(shared, started);
    or_stale::<S, R>(spec, cache, result, stale)
}

/// Plain cache-aside: run the body and `SET` its result. With leases off,
/// and over garbage or a foreign Redis type under the key (counted by the
/// lookup), where there is nothing to lease against. Nothing confirms the
/// result after the body started, so only followers that joined before it
/// receive it.
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
    let started = leader.body_started();
    let result = timed(spec, body).await;
    let shared = match (S::to_store(&result, spec.cache_none), recorded) {
        (Some(value), Some(recorded)) => {
            cache
                .set_encoded(&call.key, value, &recorded, eff.store_ttl())
                .await
        }
        _ => None,
    };
    leader.finish(shared, started);
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
    let Ok(lease) = lease_over_present(cache, key, eff.leases, eff.lease_ttl).await else {
        return S::from_stored(servable);
    };
    count(spec, &counters.refreshes, Event::Refresh);
    let recorded = versions_before_body(cache, &call.tags, eff.tag_ttl()).await;
    let started = leader.stamp();
    let result = timed(spec, body).await;
    if !S::is_success(&result) {
        Counters::bump(&counters.refresh_failures);
        if let Some(lease) = lease {
            lease.release(true).await;
        }
        drop(leader);
        return S::from_stored(servable);
    }
    let (shared, confirmed) = match (S::to_store(&result, spec.cache_none), lease, recorded) {
        (Some(value), Some(lease), Some(recorded)) => {
            let sent = leader.stamp();
            match lease
                .fill(value, &recorded, &call.tags, eff.store_ttl())
                .await
            {
                Filled::Stored(bytes) => (Some(bytes), sent),
                Filled::Unconfirmed(bytes) => (Some(bytes), started),
                Filled::NotEncoded | Filled::Lost => (None, sent),
            }
        }
        (Some(value), None, Some(recorded)) => {
            let stored = cache
                .set_encoded(key, value, &recorded, eff.store_ttl())
                .await;
            (stored, started)
        }
        // The tags' versions could not be read: store nothing.
        (Some(_), lease, None) => {
            if let Some(lease) = lease {
                lease.release(true).await;
            }
            (None, started)
        }
        // A result that is not stored (e.g. `None` without `cache_none`)
        // must not leave the old value behind.
        (None, Some(lease), _) => {
            lease.release(false).await;
            (None, started)
        }
        (None, None, _) => {
            cache.invalidate_key(key).await;
            (None, started)
        }
    };
    leader.finish(shared, confirmed);
    result
}

/// A lease over whatever `key` holds, for a refresh, warming or a
/// write-through: `Ok(None)` with leases off, `Err` when another caller
/// holds one or the store did not answer (counted).
async fn lease_over_present(
    cache: &Cache,
    key: &str,
    leases: bool,
    lease_ttl: Duration,
) -> Result<Option<LeaseGuard>, ()> {
    if !leases {
        return Ok(None);
    }
    let token = Token::new();
    match cache
        .inner
        .store
        .lease(key, &token, lease_ttl, LeaseFor::Refresh)
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
    let Ok(lease) = lease_over_present(cache, key, eff.leases, eff.lease_ttl).await else {
        return timed(spec, body).await;
    };
    let recorded = versions_before_body(cache, &call.tags, eff.tag_ttl()).await;
    let result = timed(spec, body).await;
    let stored = match (S::to_store(&result, spec.cache_none), lease, recorded) {
        (Some(value), Some(lease), Some(recorded)) => matches!(
            lease
                .fill(value, &recorded, &call.tags, eff.store_ttl())
                .await,
            Filled::Stored(_)
        ),
        (Some(value), None, Some(recorded)) => cache
            .set_encoded(key, value, &recorded, eff.store_ttl())
            .await
            .is_some(),
        (_, lease, _) => {
            if let Some(lease) = lease {
                lease.release(!S::is_success(&result)).await;
            }
            false
        }
    };
    if stored {
        Counters::bump(&cache.inner.counters.warmed);
    }
    result
}

/// A write-through's hold on its own key, taken before its body runs (see
/// [`store_written`]).
pub(crate) struct WriteLease(Option<LeaseGuard>);

/// Takes a write-through's lease over its own key before the body runs:
/// whatever changes the key while the write runs (an invalidation, another
/// write, a reader's fill) voids it, so the write stores its result only
/// if nothing else touched the key meanwhile.
pub(crate) async fn lease_for_write(cache: &Cache, spec: &'static Spec, key: &str) -> WriteLease {
    let eff = Effective::new(cache, spec);
    WriteLease(
        lease_over_present(cache, key, eff.leases, eff.lease_ttl)
            .await
            .ok()
            .flatten(),
    )
}

impl WriteLease {
    /// The write failed: put back what was there.
    pub(crate) async fn release(self) {
        if let Some(lease) = self.0 {
            lease.release(true).await;
        }
    }

    /// The key was removed by the write's own invalidations: nothing to give back.
    pub(crate) fn forget(mut self) {
        if let Some(lease) = &mut self.0 {
            lease.token = None;
        }
    }
}

/// Stores a write-through result under its key, after the write's own
/// invalidations ran, with the current versions of its tags. Under its
/// lease, the result is stored only if nothing touched the key since the
/// body started; otherwise (another caller held the key, or changed it)
/// the key is removed instead, so no older result can stay behind a newer
/// write. With leases off it is a plain `SET`.
pub(crate) async fn store_written<V: Cacheable>(
    cache: &Cache,
    spec: &'static Spec,
    key: &str,
    tags: &[String],
    value: &V,
    lease: WriteLease,
) {
    let eff = Effective::new(cache, spec);
    let recorded = versions_before_body(cache, tags, eff.tag_ttl()).await;
    let encoded = recorded.as_ref().map(|r| cache.encode(value, r));
    store_written_encoded(cache, &eff, key, tags, recorded, encoded, lease).await;
}

/// [`store_written`] once encoded (`Some(None)`: it could not be), compiled once.
async fn store_written_encoded(
    cache: &Cache,
    eff: &Effective,
    key: &str,
    tags: &[String],
    recorded: Option<Vec<u64>>,
    encoded: Option<Option<Vec<u8>>>,
    lease: WriteLease,
) {
    match (lease.0, recorded, encoded) {
        (Some(lease), Some(recorded), Some(bytes)) => {
            match lease
                .fill_encoded(bytes, &recorded, tags, eff.store_ttl())
                .await
            {
                Filled::Stored(_) | Filled::NotEncoded => {}
                Filled::Lost | Filled::Unconfirmed(_) => {
                    cache.invalidate_key(key).await;
                }
            }
        }
        (None, Some(_), Some(Some(bytes))) if !eff.leases => {
            cache
                .set_bytes(key, Bytes::from(bytes), eff.store_ttl())
                .await;
        }
        (None, Some(_), Some(None)) if !eff.leases => {}
        (lease, _, _) => {
            if let Some(mut lease) = lease {
                lease.token = None;
            }
            cache.invalidate_key(key).await;
        }
    }
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

/// How a fill under a lease ended.
enum Filled {
    /// Stored while the lease was intact, and the tags' versions read at the
    /// same time are the ones recorded: safe to share.
    Stored(Bytes),
    /// The store did not answer: nothing is known to be stored.
    Unconfirmed(Bytes),
    /// The value could not be encoded (counted); the lease was given back.
    NotEncoded,
    /// The lease was gone (voided by an invalidation, or lost with a Redis
    /// restart), or a tag moved while the body ran: the result may predate
    /// an invalidation.
    Lost,
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

    /// Stores `value` if the lease is still ours; with `tags`, reads their
    /// versions at the same time (one round trip) and checks them against
    /// the `tag_versions` recorded before the body ran.
    async fn fill<V: Cacheable>(
        self,
        value: &V,
        tag_versions: &[u64],
        tags: &[String],
        ttl: Duration,
    ) -> Filled {
        let bytes = self.cache.encode(value, tag_versions);
        self.fill_encoded(bytes, tag_versions, tags, ttl).await
    }

    /// [`fill`](Self::fill) once encoded (`None`: it could not be): the
    /// part every function shares, compiled once.
    async fn fill_encoded(
        mut self,
        bytes: Option<Vec<u8>>,
        tag_versions: &[u64],
        tags: &[String],
        ttl: Duration,
    ) -> Filled {
        let Some(token) = self.token.take() else {
            return Filled::NotEncoded;
        };
        let cache = &self.cache;
        let store = &cache.inner.store;
        let Some(bytes) = bytes else {
            if let Err(e) = store.release(&self.key, &token, true).await {
                cache.store_failed(&e);
            }
            return Filled::NotEncoded;
        };
        let shared = Bytes::from(bytes);
        let fill = store.fill(&self.key, &token, shared.clone(), ttl);
        let (filled, current) = if tags.is_empty() {
            (fill.await, Ok(true))
        } else {
            let now = store.fetch(&self.key, false, tags);
            let (filled, now) = futures_util::future::join(fill, now).await;
            (
                filled,
                now.map(|now| tags::current(tag_versions.iter().copied(), &now.tags)),
            )
        };
        match (filled, current) {
            (Ok(true), Ok(true)) => {
                Counters::bump(&cache.inner.counters.stores);
                Filled::Stored(shared)
            }
            (Ok(true), Ok(false)) => {
                // Stored, but a tag moved: readers will not serve it.
                Counters::bump(&cache.inner.counters.stores);
                Counters::bump(&cache.inner.counters.leases_lost);
                Filled::Lost
            }
            (Ok(false), _) => {
                Counters::bump(&cache.inner.counters.leases_lost);
                Filled::Lost
            }
            // Unreachable: nothing known to be stored; share the result with
            // this process's callers rather than send each to the database.
            (Err(e), _) | (Ok(true), Err(e)) => {
                cache.store_failed(&e);
                if e.is_unavailable() {
                    Filled::Unconfirmed(shared)
                } else {
                    Filled::Lost
                }
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
