//! What the cache did, for dashboards: metrics through the [`metrics`]
//! facade, and per-function counters behind [`function_stats`].
//!
//! No exporter is forced on anyone: install any `metrics` recorder (the
//! Prometheus exporter, StatsD, ...) and these appear; without one each
//! event costs a relaxed atomic add and a call into the no-op recorder.
//!
//! | metric | kind | labels | what |
//! |---|---|---|---|
//! | `cache_hits_total` | counter | `cache` | lookups answered from the store (stale serves included) |
//! | `cache_misses_total` | counter | `cache` | lookups that found nothing servable |
//! | `cache_stale_served_total` | counter | `cache` | expired values served within `stale_while_revalidate` or `stale_if_error` |
//! | `cache_loads_total` | counter | `cache` | runs of the function's body |
//! | `cache_load_duration_seconds` | histogram | `cache` | how long each run of the body took |
//! | `cache_coalesced_total` | counter | `cache` | calls that shared another call's run of the body |
//! | `cache_lease_waits_total` | counter | `cache` | misses that waited for another process's fill |
//! | `cache_refreshes_total` | counter | `cache` | early and stale-while-revalidate recomputations |
//! | `cache_near_hits_total` | counter | `cache` | hits served by the in-process near tier (`near = true`; counted in `cache_hits_total` too) |
//! | `cache_store_operation_duration_seconds` | histogram | `store`, `op` | Redis round trips (`get`, `fetch`, `set`, `delete`, `scan`, `lease`, `fill`, `release`, `tags`, `ping`), failed ones included |
//! | `cache_errors_total` | counter | `store`, `kind` | `timeout`, `connection` (refused, reset, error replies), `breaker_open`, `decode`, `encode`, `invalidation_failed`, `invalidation_dropped` |
//! | `cache_invalidations_total` | counter | `store`, `kind` | confirmed removals: `key` (entries and tag versions), `pattern` |
//! | `cache_breaker_state` | gauge | `store` | 0 closed, 1 half-open, 2 open |
//!
//! `cache` is the function's name as written (`get_user`), `store` is
//! `default` or the name of a named store (`#[cached(store = "flags")]`).
//!
//! The labelled keys are built once per function and per store, so an event
//! allocates nothing. The recorder is looked up at each event rather than
//! handles kept, so a recorder installed after the first call still sees
//! everything that follows.

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use metrics::{Key, Label, Level, Metadata};

use crate::__private::Spec;
use crate::policy::BreakerState;

const META: Metadata<'static> =
    Metadata::new("cache_runtime", Level::INFO, Some("cache_runtime::metrics"));

/// What one call of a `#[cached]` function did, counted per function.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Event {
    Hit,
    Miss,
    StaleServed,
    Load,
    Coalesced,
    LeaseWait,
    Refresh,
    NearHit,
}

const EVENTS: usize = 8;
const EVENT_METRICS: [&str; EVENTS] = [
    "cache_hits_total",
    "cache_misses_total",
    "cache_stale_served_total",
    "cache_loads_total",
    "cache_coalesced_total",
    "cache_lease_waits_total",
    "cache_refreshes_total",
    "cache_near_hits_total",
];
const LOAD_DURATION: &str = "cache_load_duration_seconds";

/// Per-function counters and metric keys; part of the macro's static
/// `Spec`, so counting costs no lookup.
#[doc(hidden)]
#[derive(Debug)]
pub struct SpecMetrics {
    counts: [AtomicU64; EVENTS],
    load_nanos: AtomicU64,
    /// Boxed: the static of every function stays small.
    keys: OnceLock<Box<SpecKeys>>,
}

#[derive(Debug)]
struct SpecKeys {
    /// See [`Spec::label`].
    label: &'static str,
    events: [Key; EVENTS],
    load_duration: Key,
}

/// `repos::OrgRepo::get`: the module path without the crate's name, the
/// impl's type when known, and the function's name.
fn label_of(module: &str, owner: Option<&str>, name: &str) -> String {
    let mut parts: Vec<&str> = module.split("::").skip(1).collect();
    parts.extend(owner);
    parts.push(name);
    parts.join("::")
}

/// Every function that counted something, for [`function_stats`].
static FUNCTIONS: Mutex<Vec<&'static Spec>> = Mutex::new(Vec::new());

impl SpecMetrics {
    /// Nothing counted yet.
    #[allow(clippy::new_without_default)]
    pub const fn new() -> Self {
        SpecMetrics {
            counts: [const { AtomicU64::new(0) }; EVENTS],
            load_nanos: AtomicU64::new(0),
            keys: OnceLock::new(),
        }
    }
}

impl Spec {
    /// The function's label in metrics (`cache="repos::OrgRepo::get"`),
    /// [`function_stats`] and spans: unambiguous across modules and impls
    /// (an impl's type is known when `#[cached]` is on its impl block),
    /// and short (no crate name). Computed once.
    pub(crate) fn label(&'static self) -> &'static str {
        self.keys().label
    }

    fn keys(&'static self) -> &'static SpecKeys {
        self.metrics.keys.get_or_init(|| {
            FUNCTIONS
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .push(self);
            // Once per function, for `'static` labels.
            let name: &'static str =
                Box::leak(label_of(self.module, self.owner, self.name).into_boxed_str());
            let label = || vec![Label::new("cache", name)];
            Box::new(SpecKeys {
                label: name,
                events: EVENT_METRICS.map(|name| Key::from_parts(name, label())),
                load_duration: Key::from_parts(LOAD_DURATION, label()),
            })
        })
    }

    /// Counts one event of this function.
    #[inline]
    pub(crate) fn count(&'static self, event: Event) {
        self.metrics.counts[event as usize].fetch_add(1, Relaxed);
        let key = &self.keys().events[event as usize];
        metrics::with_recorder(|r| r.register_counter(key, &META).increment(1));
    }

    /// Counts one run of the body and its duration.
    pub(crate) fn loaded(&'static self, took: Duration) {
        self.count(Event::Load);
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.metrics.load_nanos.fetch_add(nanos, Relaxed);
        let key = &self.keys().load_duration;
        metrics::with_recorder(|r| r.register_histogram(key, &META).record(took.as_secs_f64()));
    }

    fn snapshot(&'static self) -> FunctionStats {
        let count = |event: Event| self.metrics.counts[event as usize].load(Relaxed);
        FunctionStats {
            name: self.label(),
            store: self.store,
            hits: count(Event::Hit),
            misses: count(Event::Miss),
            stale_served: count(Event::StaleServed),
            loads: count(Event::Load),
            load_time: Duration::from_nanos(self.metrics.load_nanos.load(Relaxed)),
            coalesced: count(Event::Coalesced),
            lease_waits: count(Event::LeaseWait),
            refreshes: count(Event::Refresh),
            near_hits: count(Event::NearHit),
            hit_ratio: ratio(count(Event::Hit), count(Event::Miss)),
        }
    }
}

/// What one `#[cached]` function did in this process, from
/// [`function_stats`].
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[non_exhaustive]
pub struct FunctionStats {
    /// The function's label: its module path without the crate's name, the
    /// impl's type (when `#[cached]` is on the impl block) and its name,
    /// e.g. `repos::OrgRepo::get`; the same as the metrics' `cache` label.
    pub name: &'static str,
    /// Its named store (`#[cached(store = "..")]`), if any.
    pub store: Option<&'static str>,
    /// Lookups answered from the store (stale serves included).
    pub hits: u64,
    /// Lookups that found nothing servable.
    pub misses: u64,
    /// Expired values served (`stale_while_revalidate`, `stale_if_error`).
    pub stale_served: u64,
    /// Runs of the body.
    pub loads: u64,
    /// Time spent in the body, summed over `loads`; serialized as
    /// `load_seconds`.
    #[serde(rename = "load_seconds", serialize_with = "as_secs")]
    pub load_time: Duration,
    /// Calls that shared another call's run of the body.
    pub coalesced: u64,
    /// Misses that waited for another process's fill.
    pub lease_waits: u64,
    /// Early and stale-while-revalidate recomputations.
    pub refreshes: u64,
    /// Hits served by the in-process near tier (counted in `hits` too).
    pub near_hits: u64,
    /// `hits / (hits + misses)`, or 0 before any lookup (also
    /// [`hit_ratio()`](Self::hit_ratio); a field so that it is serialized).
    pub hit_ratio: f64,
}

impl FunctionStats {
    /// `hits / (hits + misses)`, or 0 before any lookup.
    pub fn hit_ratio(&self) -> f64 {
        ratio(self.hits, self.misses)
    }

    /// The mean duration of a run of the body, if it ran.
    pub fn mean_load_time(&self) -> Option<Duration> {
        u32::try_from(self.loads)
            .ok()
            .filter(|&n| n > 0)
            .map(|n| self.load_time / n)
    }
}

pub(crate) fn ratio(hits: u64, misses: u64) -> f64 {
    let total = hits + misses;
    if total == 0 {
        0.0
    } else {
        hits as f64 / total as f64
    }
}

pub(crate) fn as_secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// Per-function counters of every `#[cached]` read or write-through
/// function called so far in this process, sorted by name. The counters
/// are per process, across every [`Cache`](crate::Cache) handle (use
/// [`Cache::stats`](crate::Cache::stats) for one cache's totals).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), cache_runtime::ConfigError> {
/// use cache_runtime::{Cache, cached};
///
/// #[cached(prefix = "square", id = "n")]
/// async fn square(n: u64) -> u64 { n * n }
///
/// let cache = Cache::builder().build().await?;
/// Cache::scope(cache, async {
///     square(3).await;
///     square(3).await;
/// }).await;
/// // Named by module path (without the crate's name) and function: here
/// // `square` at a crate's root, `repos::square` in a module `repos`.
/// let square = cache_runtime::function_stats()
///     .into_iter()
///     .find(|f| f.name.ends_with("square"))
///     .unwrap();
/// assert_eq!((square.hits, square.misses, square.loads), (1, 1, 1));
/// assert_eq!(square.hit_ratio(), 0.5);
/// # Ok(()) }
/// ```
pub fn function_stats() -> Vec<FunctionStats> {
    let functions = FUNCTIONS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .clone();
    let mut stats: Vec<FunctionStats> = functions.iter().map(|spec| spec.snapshot()).collect();
    stats.sort_by(|a, b| (a.name, a.store).cmp(&(b.name, b.store)));
    stats
}

/// A store operation, for `cache_store_operation_duration_seconds`.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Op {
    Get,
    Fetch,
    Set,
    Delete,
    Scan,
    Lease,
    Fill,
    Release,
    Tags,
    Ping,
}

const OPS: [&str; 10] = [
    "get", "fetch", "set", "delete", "scan", "lease", "fill", "release", "tags", "ping",
];

/// Kinds of `cache_errors_total`.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ErrorKind {
    Timeout,
    Connection,
    BreakerOpen,
    Decode,
    Encode,
    InvalidationFailed,
    InvalidationDropped,
}

const ERRORS: [&str; 7] = [
    "timeout",
    "connection",
    "breaker_open",
    "decode",
    "encode",
    "invalidation_failed",
    "invalidation_dropped",
];

/// Kinds of `cache_invalidations_total`.
#[derive(Debug, Clone, Copy)]
pub(crate) enum InvalidationKind {
    Key,
    Pattern,
}

/// The metric keys of one store, labelled with its name.
#[derive(Debug)]
pub(crate) struct StoreMetrics {
    ops: [Key; OPS.len()],
    errors: [Key; ERRORS.len()],
    invalidations: [Key; 2],
    breaker: Key,
    /// The breaker state last reported, as the gauge's value (`u8::MAX`: none).
    reported: AtomicU8,
}

impl StoreMetrics {
    pub fn new(store: &str) -> Self {
        let store: metrics::SharedString = store.to_owned().into();
        let with = |name: &'static str, kind: Option<(&'static str, &'static str)>| {
            let mut labels = vec![Label::new("store", store.clone())];
            if let Some((k, v)) = kind {
                labels.push(Label::new(k, v));
            }
            Key::from_parts(name, labels)
        };
        StoreMetrics {
            ops: OPS.map(|op| with("cache_store_operation_duration_seconds", Some(("op", op)))),
            errors: ERRORS.map(|kind| with("cache_errors_total", Some(("kind", kind)))),
            invalidations: ["key", "pattern"]
                .map(|kind| with("cache_invalidations_total", Some(("kind", kind)))),
            breaker: with("cache_breaker_state", None),
            reported: AtomicU8::new(u8::MAX),
        }
    }

    /// One store operation's duration.
    #[inline]
    pub fn op(&self, op: Op, took: Duration) {
        let key = &self.ops[op as usize];
        metrics::with_recorder(|r| r.register_histogram(key, &META).record(took.as_secs_f64()));
    }

    pub fn error(&self, kind: ErrorKind, n: u64) {
        let key = &self.errors[kind as usize];
        metrics::with_recorder(|r| r.register_counter(key, &META).increment(n));
    }

    pub fn invalidated(&self, kind: InvalidationKind, n: u64) {
        let key = &self.invalidations[kind as usize];
        metrics::with_recorder(|r| r.register_counter(key, &META).increment(n));
    }

    /// Reports the breaker's state when it changed since the last report
    /// (`force`: report anyway, for a recorder installed since).
    pub fn breaker(&self, state: BreakerState, force: bool) {
        let value = match state {
            BreakerState::Closed => 0,
            BreakerState::HalfOpen => 1,
            BreakerState::Open => 2,
        };
        if self.reported.swap(value, Relaxed) != value || force {
            metrics::with_recorder(|r| {
                r.register_gauge(&self.breaker, &META).set(f64::from(value))
            });
        }
    }
}

/// Gives the metrics their descriptions (the `# HELP` lines of Prometheus)
/// in the recorder installed now; called whenever a cache is built.
pub(crate) fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "cache_hits_total",
        "Lookups of a #[cached] function answered from the store"
    );
    describe_counter!(
        "cache_misses_total",
        "Lookups of a #[cached] function that found nothing servable"
    );
    describe_counter!(
        "cache_stale_served_total",
        "Expired values served (stale_while_revalidate, stale_if_error)"
    );
    describe_counter!("cache_loads_total", "Runs of a #[cached] function's body");
    describe_histogram!(
        "cache_load_duration_seconds",
        Unit::Seconds,
        "Duration of a run of a #[cached] function's body"
    );
    describe_counter!(
        "cache_coalesced_total",
        "Calls that shared another call's run of the body"
    );
    describe_counter!(
        "cache_lease_waits_total",
        "Misses that waited for another process's fill"
    );
    describe_counter!(
        "cache_refreshes_total",
        "Early and stale-while-revalidate recomputations"
    );
    describe_counter!(
        "cache_near_hits_total",
        "Hits served by the in-process near tier"
    );
    describe_histogram!(
        "cache_store_operation_duration_seconds",
        Unit::Seconds,
        "Duration of a Redis operation"
    );
    describe_counter!("cache_errors_total", "Degradations of the cache, by kind");
    describe_counter!(
        "cache_invalidations_total",
        "Invalidations confirmed by the store"
    );
    describe_gauge!(
        "cache_breaker_state",
        "Circuit breaker of the store: 0 closed, 1 half-open, 2 open"
    );
}
