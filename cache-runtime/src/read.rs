//! The read path of a `#[cached]` function: lookup, then on a miss single
//! flight and a lease, early refresh and stale serving.
//!
//! Split in two so that almost nothing is compiled per function: [`Flow`]
//! is the whole state machine, on bytes, compiled once; [`read`] is the
//! thin generic shell that runs the body, encodes its result and decodes
//! what the flow hands back. A hit crosses `Flow::start` (one lookup),
//! a decode, and `Flow::served`.
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
use crate::codec::{Cacheable, CodecError};
use crate::metrics::Event;
use crate::policy::lease::{Content, Filled, LeaseFor, LeaseGuard, LeaseReply, Token, classify};
use crate::policy::refresh::should_refresh;
use crate::policy::single_flight::{Leader, Outcome, Role, Stamp};
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
        let p = cache.inner.policy.with(&spec.options);
        Effective {
            ttl: spec.options.ttl.unwrap_or(cache.inner.default_ttl),
            near: false,
            leases: p.leases,
            lease_ttl: p.lease_ttl,
            lease_wait: p.lease_wait,
            beta: p.early_refresh,
            swr: p.stale_while_revalidate,
            sie: p.stale_if_error,
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
enum Found {
    /// A servable value (its stored bytes, tags checked, not yet decoded).
    /// `remaining`: time to its fresh expiry when known; `stale_for`: how
    /// long it has been expired (zero when fresh); `refreshing`: another
    /// caller holds a refresh lease on it.
    Value {
        bytes: Bytes,
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
async fn look(
    cache: &Cache,
    key: &str,
    tags: &[String],
    eff: &Effective,
) -> (Found, Vec<Option<u64>>) {
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
            let found = match cache.classify_error::<()>(e) {
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
    match check_current(cache, &bytes, &versions, true) {
        Current::Yes => {}
        Current::Outdated => return (Found::Outdated, versions),
        Current::Garbage => return (Found::Miss, versions),
    }
    let extra = eff.stale_extra();
    let (remaining, stale_for) = match pttl {
        None | Some(Duration::MAX) => (None, None),
        Some(pttl) if pttl > extra => (Some(pttl - extra), None),
        Some(pttl) => (Some(Duration::ZERO), Some(extra - pttl)),
    };
    let found = Found::Value {
        bytes,
        remaining,
        stale_for,
        refreshing,
    };
    (found, versions)
}

/// A stored value, checked against the current versions of its tags
/// (its typed decoding is the shell's).
enum Current {
    Yes,
    /// A tag moved since the value was stored.
    Outdated,
    /// Not a stored value of this codec (a decode error, counted).
    Garbage,
}

/// Checks that the versions a stored value recorded for its tags are
/// still `current`; a moved tag is `Outdated` (`tag_misses`), bytes that
/// are no stored value garbage. `count`: false when this call counted the
/// same bytes already.
fn check_current(cache: &Cache, bytes: &[u8], current: &[Option<u64>], count: bool) -> Current {
    match crate::codec::split(bytes) {
        Ok(stored) if tags::current(stored.tag_versions(), current) => Current::Yes,
        Ok(_) => {
            if count {
                Counters::bump(&cache.inner.counters.tag_misses);
            }
            Current::Outdated
        }
        Err(e) => {
            if count {
                cache.decode_failed(&e);
            }
            Current::Garbage
        }
    }
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

/// Cache-aside with single flight, leases, early refresh and stale serving:
/// the generic shell over [`Flow`]. It runs the body, encodes its result
/// and decodes what the flow hands back; everything else is the flow's.
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
    let mut flow = Flow::new(spec, cache, key, tags, span, keep.is_some());
    let mut step = no_inline(flow.start()).await;
    // Until the body runs: a value to return (`Serve`), or a servable value
    // to return if the refresh's body fails (`Refresh`).
    let servable = loop {
        let (bytes, refresh) = match step {
            Step::Serve(bytes) => (bytes, false),
            Step::Refresh(bytes) => (bytes, true),
            Step::Run => break None,
        };
        match decode::<S::Value>(&bytes) {
            Ok(value) => {
                if let (Some(keep), Some((remaining, versions))) = (keep, flow.kept()) {
                    keep(&value, remaining, versions);
                }
                flow.served();
                if !refresh {
                    return S::from_stored(value);
                }
                break Some(value);
            }
            Err(e) => step = no_inline(Box::pin(flow.undecodable(&e))).await,
        }
    };
    // The body is awaited in one place only: its code is not repeated.
    let result = timed(spec, body).await;
    let ran = ran::<S, R>(spec, &flow, &result);
    match servable {
        Some(servable) => {
            if no_inline(Box::pin(flow.refreshed(ran))).await {
                result
            } else {
                S::from_stored(servable)
            }
        }
        // `stale_if_error`: a failed result is replaced by the stale
        // value, if any (and if it decodes).
        None => match no_inline(Box::pin(flow.ran(ran))).await {
            Some(stale) => decode::<S::Value>(&stale).map_or(result, S::from_stored),
            None => result,
        },
    }
}

/// Decodes stored bytes (envelope and value). Out of line: one copy per
/// value type, not one per function.
#[inline(never)]
fn decode<V: Cacheable>(bytes: &[u8]) -> Result<V, CodecError> {
    crate::codec::split(bytes).and_then(|stored| stored.decode())
}

/// What the flow needs of a finished body: whether its shape stores it,
/// its encoding when the flow wants one, whether it succeeded. Out of line:
/// one copy per return type.
#[inline(never)]
fn ran<S: Shape<R>, R>(spec: &'static Spec, flow: &Flow<'_>, result: &R) -> Ran
where
    S::Value: Cacheable,
{
    let value = S::to_store(result, spec.cache_none);
    let bytes = match (value, flow.wants()) {
        (Some(value), Some(tag_versions)) => flow.cache.encode(value, tag_versions),
        _ => None,
    };
    Ran {
        storable: value.is_some(),
        bytes,
        success: S::is_success(result),
    }
}

/// What the shell does next.
pub(crate) enum Step {
    /// Decode these stored bytes and return the value; then
    /// [`Flow::served`], or [`Flow::undecodable`] when they do not decode.
    Serve(Bytes),
    /// Decode this servable value, run the body, and report with
    /// [`Flow::refreshed`]: the value is returned if the body fails.
    Refresh(Bytes),
    /// Run the body and report with [`Flow::ran`].
    Run,
}

/// A finished body's result, as the flow sees it.
pub(crate) struct Ran {
    /// Its shape stores it (`Ok`, `Some`, a plain value).
    storable: bool,
    /// Its encoding, with the tag versions [`Flow::wants`] gave; `None`
    /// when not wanted, not storable, or it did not encode (counted).
    bytes: Option<Vec<u8>>,
    /// `Ok` (or any value of a type that can not fail).
    success: bool,
}

/// What a [`Step::Serve`] hands out, for [`Flow::served`] to count (and,
/// for a value seen under another process's lease, to share) once it
/// decoded.
enum Pending {
    None,
    /// The lookup's value, fresh.
    Hit,
    /// The lookup's value, expired but within `stale_while_revalidate`.
    Stale,
    /// The leader's result (in-process follower).
    Coalesced,
    /// A late follower's second lookup.
    Relooked,
    /// Another process's fill, seen by this leader's lease attempt.
    Held {
        leader: Leader,
        sent: Stamp,
        bytes: Bytes,
    },
}

/// What happens after the body runs.
enum Running {
    /// Nothing: a run of its own (a lease wait that timed out, a follower
    /// whose leader's result did not decode).
    Alone,
    /// The leader holds the key's lease: fill it.
    Leased {
        leader: Leader,
        lease: LeaseGuard,
        recorded: Option<Vec<u64>>,
        body_started: Stamp,
    },
    /// Plain cache-aside `SET`.
    Plain {
        leader: Leader,
        recorded: Option<Vec<u64>>,
        started: Stamp,
    },
    /// The store did not answer: share with this process's callers only.
    Uncached { leader: Leader, started: Stamp },
    /// A refresh of a servable value.
    Refresh {
        leader: Leader,
        lease: Option<LeaseGuard>,
        recorded: Option<Vec<u64>>,
        started: Stamp,
    },
    /// A call inside [`Cache::warm`].
    Warm {
        lease: Option<LeaseGuard>,
        recorded: Option<Vec<u64>>,
    },
}

/// One cached call's state machine, on bytes: the lookup, single flight,
/// leases, tags, refresh, stale serving and warming, for every function
/// alike (compiled once). The shell ([`read`]) drives it through
/// [`Step`]s.
pub(crate) struct Flow<'c> {
    spec: &'static Spec,
    cache: &'c Cache,
    key: String,
    tags: Vec<String>,
    eff: Effective,
    span: &'c tracing::Span,
    /// An expired value kept for `stale_if_error`.
    stale: Option<Bytes>,
    /// The key holds a value whose tags moved.
    outdated: bool,
    /// A fresh value's remaining time and tag versions, for the near tier.
    keep: Option<(Option<Duration>, Vec<Option<u64>>)>,
    pending: Pending,
    running: Running,
}

impl<'c> Flow<'c> {
    #[inline(never)]
    fn new(
        spec: &'static Spec,
        cache: &'c Cache,
        key: String,
        tags: Vec<String>,
        span: &'c tracing::Span,
        near: bool,
    ) -> Self {
        let mut eff = Effective::new(cache, spec);
        eff.near = near;
        Flow {
            spec,
            cache,
            key,
            tags,
            eff,
            span,
            stale: None,
            outdated: false,
            keep: None,
            pending: Pending::None,
            running: Running::Alone,
        }
    }

    /// The lookup, and what it leads to.
    async fn start(&mut self) -> Step {
        if warming() {
            self.span.record("outcome", "warm");
            return Box::pin(self.warm()).await;
        }
        let (found, versions) = look(self.cache, &self.key, &self.tags, &self.eff).await;
        let eff = &self.eff;
        match found {
            Found::Value {
                bytes,
                remaining,
                stale_for: None,
                refreshing,
            } => {
                self.span.record("outcome", "hit");
                self.pending = Pending::Hit;
                if eff.near && !refreshing {
                    self.keep = Some((remaining, versions));
                }
                if !refreshing
                    && eff.beta > 0.0
                    && let (Some(remaining), Some(delta)) = (remaining, self.spec.load_time.get())
                    && should_refresh(remaining, delta, eff.beta)
                {
                    return Box::pin(self.refresh(bytes)).await;
                }
                Step::Serve(bytes)
            }
            Found::Value {
                bytes,
                stale_for: Some(stale_for),
                refreshing,
                ..
            } => {
                if stale_for < eff.swr {
                    self.span.record("outcome", "stale");
                    self.pending = Pending::Stale;
                    if refreshing {
                        return Step::Serve(bytes);
                    }
                    return Box::pin(self.refresh(bytes)).await;
                }
                self.missed();
                if stale_for < eff.sie {
                    self.stale = Some(bytes);
                }
                Box::pin(self.miss()).await
            }
            Found::Miss | Found::Outdated => {
                self.outdated = matches!(found, Found::Outdated);
                self.missed();
                Box::pin(self.miss()).await
            }
            Found::Unavailable => {
                self.span.record("outcome", "unavailable");
                Box::pin(self.unreachable()).await
            }
        }
    }

    /// Counts a miss of the lookup.
    fn missed(&self) {
        count(self.spec, &self.cache.inner.counters.misses, Event::Miss);
        self.span.record("outcome", "miss");
    }

    /// The value of the last [`Step::Serve`] or [`Step::Refresh`] decoded
    /// and is returned: count it.
    #[inline(never)]
    fn served(&mut self) {
        let counters = &*self.cache.inner.counters;
        match std::mem::replace(&mut self.pending, Pending::None) {
            Pending::Hit => count(self.spec, &counters.hits, Event::Hit),
            Pending::Stale => {
                count(self.spec, &counters.hits, Event::Hit);
                count(self.spec, &counters.stale_served, Event::StaleServed);
            }
            Pending::Coalesced | Pending::Relooked => {
                count(self.spec, &counters.coalesced, Event::Coalesced);
            }
            Pending::Held {
                leader,
                sent,
                bytes,
            } => {
                count(self.spec, &counters.coalesced, Event::Coalesced);
                leader.finish(Some(bytes), sent);
            }
            Pending::None => {}
        }
    }

    /// The near tier's part of a fresh hit: remaining time and versions.
    #[inline]
    fn kept(&self) -> Option<(Option<Duration>, &[Option<u64>])> {
        self.keep.as_ref().map(|(r, v)| (*r, v.as_slice()))
    }

    /// The value of the last [`Step::Serve`] or [`Step::Refresh`] does not
    /// decode into the return type (a changed type, or garbage): go on as
    /// if it had not been there.
    async fn undecodable(&mut self, e: &CodecError) -> Step {
        self.keep = None;
        match std::mem::replace(&mut self.pending, Pending::None) {
            Pending::Hit | Pending::Stale => {
                self.cache.decode_failed(e);
                if let Running::Refresh { leader, lease, .. } =
                    std::mem::replace(&mut self.running, Running::Alone)
                {
                    if let Some(lease) = lease {
                        lease.release(false).await;
                    }
                    drop(leader);
                }
                self.missed();
                self.miss().await
            }
            Pending::Coalesced => {
                self.cache.decode_failed(e);
                self.running = Running::Alone;
                Step::Run
            }
            Pending::Relooked => {
                self.cache.decode_failed(e);
                self.miss().await
            }
            // Counted by the lookup that saw the same bytes.
            Pending::Held { leader, .. } => self.plain(leader).await,
            Pending::None => {
                self.running = Running::Alone;
                Step::Run
            }
        }
    }

    /// The tag versions to encode the body's result with, when this run
    /// stores or shares it.
    fn wants(&self) -> Option<&[u64]> {
        match &self.running {
            Running::Leased { recorded, .. }
            | Running::Plain { recorded, .. }
            | Running::Refresh { recorded, .. }
            | Running::Warm { recorded, .. } => recorded.as_deref(),
            Running::Uncached { .. } => Some(&[]),
            Running::Alone => None,
        }
    }

    /// The store did not answer the lookup (down, or the breaker is open):
    /// concurrent callers of this process still share one run of the body
    /// (the database needs protecting most while the cache is down);
    /// nothing is stored and no lease taken. Nothing can confirm that a
    /// result computed before a caller began is still current, so a caller
    /// that comes after the body started shares the next run instead, which
    /// starts when this one ends: one body at a time per key, each shared
    /// with the callers that began before it.
    async fn unreachable(&mut self) -> Step {
        let mut leader = loop {
            match self.cache.inner.flights.join_queued(&self.key) {
                Role::Leader(leader) => break leader,
                Role::Follower(follower) => match follower.wait().await {
                    Outcome::Done(Some(bytes)) => {
                        self.pending = Pending::Coalesced;
                        return Step::Serve(bytes);
                    }
                    Outcome::Done(None) => {
                        self.running = Running::Alone;
                        return Step::Run;
                    }
                    Outcome::Late | Outcome::Abandoned => continue,
                },
            }
        };
        leader.ready().await;
        self.uncached(leader)
    }

    /// A miss: join or lead the key's flight; the leader takes the lease
    /// (the body runs next).
    async fn miss(&mut self) -> Step {
        let counters = &*self.cache.inner.counters;
        let leader = loop {
            match self.cache.inner.flights.join(&self.key) {
                Role::Leader(leader) => break leader,
                Role::Follower(follower) => match follower.wait().await {
                    Outcome::Done(Some(bytes)) => {
                        self.pending = Pending::Coalesced;
                        return Step::Serve(bytes);
                    }
                    Outcome::Done(None) => {
                        self.running = Running::Alone;
                        return Step::Run;
                    }
                    // The leader's value was confirmed before we joined: look
                    // again (it is most likely a hit now).
                    Outcome::Late => {
                        match look(self.cache, &self.key, &self.tags, &self.eff).await.0 {
                            Found::Value {
                                bytes,
                                stale_for: None,
                                ..
                            } => {
                                self.pending = Pending::Relooked;
                                return Step::Serve(bytes);
                            }
                            Found::Value {
                                bytes,
                                stale_for: Some(stale_for),
                                ..
                            } => {
                                if stale_for < self.eff.sie {
                                    self.stale = Some(bytes);
                                }
                            }
                            Found::Miss => {}
                            Found::Outdated => self.outdated = true,
                            Found::Unavailable => return Box::pin(self.unreachable()).await,
                        }
                    }
                    // The leader was cancelled: one of its followers leads now.
                    Outcome::Abandoned => continue,
                },
            }
        };
        if !self.eff.leases {
            return self.plain(leader).await;
        }

        let store = &self.cache.inner.store;
        let eff = &self.eff;
        let token = Token::new();
        // `lease_wait` bounds the wait for each holder: when a dead holder's
        // lease expires and another process takes it over, the clock
        // restarts (at most once more), so the takeover's fill is waited
        // for too.
        let mut started = Instant::now();
        let mut holder: Option<Bytes> = None;
        let mut takeovers = 0;
        let mut pause = Duration::from_millis(2);
        let mut waited = false;
        // An expired value kept for stale serving is leased over; a fresh
        // one is a fill that landed since the lookup. A value whose tags
        // moved is leased over too (recomputed while it is not served).
        let mut purpose = if self.outdated {
            LeaseFor::Refresh
        } else {
            LeaseFor::Miss {
                stale_within: eff.stale_extra(),
            }
        };
        loop {
            let sent = leader.stamp();
            match store.lease(&self.key, &token, eff.lease_ttl, purpose).await {
                Ok(LeaseReply::Acquired) => break,
                Ok(LeaseReply::Held(Content::Value(bytes))) => {
                    // Filled since our lookup (by the holder we waited for,
                    // or just before we asked): checked against the tags'
                    // versions as they are *now*, read again after this
                    // call and every follower of its flight began (a
                    // version read before proves nothing about them).
                    // Garbage was counted by the lookup.
                    match versions_now(self.cache, &self.key, &self.tags).await {
                        Ok(now) => match check_current(self.cache, &bytes, &now, false) {
                            Current::Yes => {
                                self.pending = Pending::Held {
                                    leader,
                                    sent,
                                    bytes: bytes.clone(),
                                };
                                return Step::Serve(bytes);
                            }
                            Current::Outdated => purpose = LeaseFor::Refresh,
                            Current::Garbage => return self.plain(leader).await,
                        },
                        Err(e) => {
                            self.cache.store_failed(&e);
                            return self.uncached(leader);
                        }
                    }
                }
                Err(StoreError::WrongType(_)) => return self.plain(leader).await,
                Ok(LeaseReply::Held(Content::Leased { token: theirs, .. })) => {
                    if !waited {
                        waited = true;
                        count(self.spec, &counters.lease_waits, Event::LeaseWait);
                    }
                    if holder.as_ref().is_some_and(|h| *h != theirs) && takeovers < 1 {
                        takeovers += 1;
                        started = Instant::now();
                    }
                    holder = Some(theirs);
                    // Someone else is computing it: their fill is what we
                    // wait for, not a value to lease over again.
                    purpose = LeaseFor::Miss {
                        stale_within: eff.stale_extra(),
                    };
                    let left = eff.lease_wait.saturating_sub(started.elapsed());
                    if left.is_zero() {
                        // The holder is slow or gone and its lease not yet
                        // expired: run the body rather than wait longer.
                        // Without a lease the result is not stored, and not
                        // shared.
                        Counters::bump(&counters.lease_wait_timeouts);
                        drop(leader);
                        self.running = Running::Alone;
                        return Step::Run;
                    }
                    tokio::time::sleep(pause.min(left)).await;
                    pause = (pause * 2).min(Duration::from_millis(50));
                }
                Err(e) => {
                    let unavailable = e.is_unavailable();
                    self.cache.store_failed(&e);
                    if unavailable {
                        return self.uncached(leader);
                    }
                    // An error reply (e.g. scripts disabled): plain cache-aside.
                    return self.plain(leader).await;
                }
            }
        }

        // We hold the lease: read the tags' versions; the body runs next.
        let lease = LeaseGuard::new(self.cache, &self.key, token);
        let recorded = versions_before_body(self.cache, &self.tags, eff.tag_ttl()).await;
        let body_started = leader.stamp();
        self.running = Running::Leased {
            leader,
            lease,
            recorded,
            body_started,
        };
        Step::Run
    }

    /// The store did not answer: run the body and share its result with
    /// this process's callers that joined before it started (they would
    /// only load the database), store nothing.
    fn uncached(&mut self, leader: Leader) -> Step {
        let started = leader.body_started();
        self.running = Running::Uncached { leader, started };
        Step::Run
    }

    /// Plain cache-aside: run the body and `SET` its result. With leases
    /// off, and over garbage or a foreign Redis type under the key (counted
    /// by the lookup), where there is nothing to lease against. Nothing
    /// confirms the result after the body started, so only followers that
    /// joined before it receive it.
    async fn plain(&mut self, leader: Leader) -> Step {
        let recorded = versions_before_body(self.cache, &self.tags, self.eff.tag_ttl()).await;
        let started = leader.body_started();
        self.running = Running::Plain {
            leader,
            recorded,
            started,
        };
        Step::Run
    }

    /// The body ran ([`Step::Run`]): store or share its result as the run
    /// requires. Returns the stale value to return instead
    /// (`stale_if_error`), if the body failed and one is kept.
    async fn ran(&mut self, ran: Ran) -> Option<Bytes> {
        let Ran {
            storable,
            bytes,
            success,
        } = ran;
        let cache = self.cache;
        let ttl = self.eff.store_ttl();
        match std::mem::replace(&mut self.running, Running::Alone) {
            Running::Alone => {}
            Running::Leased {
                leader,
                lease,
                recorded,
                body_started,
            } => {
                let (shared, confirmed) = match (storable, recorded) {
                    (true, Some(recorded)) => {
                        let sent = leader.stamp();
                        match lease.fill_encoded(bytes, &recorded, &self.tags, ttl).await {
                            Filled::Stored(bytes) => (Some(bytes), sent),
                            Filled::Unconfirmed(bytes) => (Some(bytes), body_started),
                            Filled::NotEncoded => (None, sent),
                            Filled::Lost => {
                                // Invalidated (or Redis lost the lease) while
                                // the body ran: this result may predate the
                                // invalidation, so it is not shared. The
                                // flight ends without a result: the waiting
                                // callers start over, and one of them leads
                                // (and leases) again, rather than each
                                // running the body.
                                drop(leader);
                                return self.or_stale(success);
                            }
                        }
                    }
                    (true, None) => {
                        lease.release(false).await;
                        (None, body_started)
                    }
                    // A failure leaves what was there (an expired value kept
                    // for `stale_if_error`); a success that is not stored
                    // removes it.
                    (false, _) => {
                        lease.release(!success).await;
                        (None, body_started)
                    }
                };
                leader.finish(shared, confirmed);
            }
            Running::Plain {
                leader,
                recorded,
                started,
            } => {
                let shared = match (storable, recorded, bytes) {
                    (true, Some(_), Some(bytes)) => {
                        cache.set_bytes(&self.key, Bytes::from(bytes), ttl).await
                    }
                    _ => None,
                };
                leader.finish(shared, started);
            }
            Running::Uncached { leader, started } => {
                leader.finish(bytes.map(Bytes::from), started);
            }
            Running::Warm { lease, recorded } => {
                let stored = match (storable, lease, recorded) {
                    (true, Some(lease), Some(recorded)) => matches!(
                        lease.fill_encoded(bytes, &recorded, &self.tags, ttl).await,
                        Filled::Stored(_)
                    ),
                    (true, None, Some(_)) => match bytes {
                        Some(bytes) => cache
                            .set_bytes(&self.key, Bytes::from(bytes), ttl)
                            .await
                            .is_some(),
                        None => false,
                    },
                    (_, lease, _) => {
                        if let Some(lease) = lease {
                            lease.release(!success).await;
                        }
                        false
                    }
                };
                if stored {
                    Counters::bump(&cache.inner.counters.warmed);
                }
            }
            Running::Refresh { .. } => unreachable!("a refresh ends in `refreshed`"),
        }
        self.or_stale(success)
    }

    /// `stale_if_error`: the stale value to return instead of a failure.
    fn or_stale(&mut self, success: bool) -> Option<Bytes> {
        if success {
            return None;
        }
        let stale = self.stale.take()?;
        count(
            self.spec,
            &self.cache.inner.counters.stale_on_error,
            Event::StaleServed,
        );
        Some(stale)
    }

    /// A refresh of a servable value (early, or stale within
    /// `stale_while_revalidate`): one caller per key recomputes it under a
    /// lease while every other caller, in every process, keeps being served
    /// the value. A refresh that can not start serves the value.
    async fn refresh(&mut self, servable: Bytes) -> Step {
        let Some(leader) = self.cache.inner.flights.try_lead(&self.key) else {
            return Step::Serve(servable);
        };
        let Ok(lease) =
            lease_over_present(self.cache, &self.key, self.eff.leases, self.eff.lease_ttl).await
        else {
            return Step::Serve(servable);
        };
        count(
            self.spec,
            &self.cache.inner.counters.refreshes,
            Event::Refresh,
        );
        let recorded = versions_before_body(self.cache, &self.tags, self.eff.tag_ttl()).await;
        let started = leader.stamp();
        self.running = Running::Refresh {
            leader,
            lease,
            recorded,
            started,
        };
        Step::Refresh(servable)
    }

    /// The body of a [`Step::Refresh`] ran: store its result. `false`: it
    /// failed, and the servable value is returned instead.
    async fn refreshed(&mut self, ran: Ran) -> bool {
        let Running::Refresh {
            leader,
            lease,
            recorded,
            started,
        } = std::mem::replace(&mut self.running, Running::Alone)
        else {
            unreachable!("`refreshed` follows `Step::Refresh`");
        };
        let cache = self.cache;
        let key = self.key.as_str();
        let ttl = self.eff.store_ttl();
        if !ran.success {
            Counters::bump(&cache.inner.counters.refresh_failures);
            if let Some(lease) = lease {
                lease.release(true).await;
            }
            drop(leader);
            return false;
        }
        let (shared, confirmed) = match (ran.storable, lease, recorded) {
            (true, Some(lease), Some(recorded)) => {
                let sent = leader.stamp();
                match lease
                    .fill_encoded(ran.bytes, &recorded, &self.tags, ttl)
                    .await
                {
                    Filled::Stored(bytes) => (Some(bytes), sent),
                    Filled::Unconfirmed(bytes) => (Some(bytes), started),
                    Filled::NotEncoded | Filled::Lost => (None, sent),
                }
            }
            (true, None, Some(_)) => {
                let stored = match ran.bytes {
                    Some(bytes) => cache.set_bytes(key, Bytes::from(bytes), ttl).await,
                    None => None,
                };
                (stored, started)
            }
            // The tags' versions could not be read: store nothing.
            (true, lease, None) => {
                if let Some(lease) = lease {
                    lease.release(true).await;
                }
                (None, started)
            }
            // A result that is not stored (e.g. `None` without `cache_none`)
            // must not leave the old value behind.
            (false, Some(lease), _) => {
                lease.release(false).await;
                (None, started)
            }
            (false, None, _) => {
                cache.invalidate_key(key).await;
                (None, started)
            }
        };
        leader.finish(shared, confirmed);
        true
    }

    /// A call inside [`Cache::warm`]: no lookup; run the body and store its
    /// result under a lease taken over whatever is there (readers keep
    /// being served the present value until the fill), like a refresh.
    async fn warm(&mut self) -> Step {
        // Held: another caller is computing it right now, theirs will do.
        let Ok(lease) =
            lease_over_present(self.cache, &self.key, self.eff.leases, self.eff.lease_ttl).await
        else {
            self.running = Running::Alone;
            return Step::Run;
        };
        let recorded = versions_before_body(self.cache, &self.tags, self.eff.tag_ttl()).await;
        self.running = Running::Warm { lease, recorded };
        Step::Run
    }
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
    let recorded = no_inline(versions_before_body(cache, tags, eff.tag_ttl())).await;
    let encoded = recorded.as_ref().map(|r| cache.encode(value, r));
    no_inline(store_written_encoded(
        cache, &eff, key, tags, recorded, encoded, lease,
    ))
    .await;
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
    loaded(spec, started);
    result
}

/// The non-generic half of [`timed`].
#[inline(never)]
fn loaded(spec: &'static Spec, started: Instant) {
    let took = started.elapsed();
    spec.load_time.observe(took);
    spec.loaded(took);
}

pin_project_lite::pin_project! {
    /// A future whose `poll` is never inlined into its caller's: the
    /// flow's futures are compiled once, not again inside every function's
    /// shell.
    pub(crate) struct NoInline<F> {
        #[pin]
        inner: F,
    }
}

impl<F: Future> Future for NoInline<F> {
    type Output = F::Output;

    #[inline(never)]
    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        self.project().inner.poll(cx)
    }
}

/// Wraps `inner` in [`NoInline`].
#[inline]
pub(crate) fn no_inline<F: Future>(inner: F) -> NoInline<F> {
    NoInline { inner }
}

/// Counts `event` in the cache's `counter` and in the function's metrics.
#[inline]
fn count(spec: &'static Spec, counter: &AtomicU64, event: Event) {
    Counters::bump(counter);
    spec.count(event);
}
