//! What the `#[cached]` expansion calls. Not a public API: names and
//! signatures change with the macro, which is always the same version.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

use crate::cache::{Current, current};
use crate::codec::Cacheable;
pub use crate::key::KeyBuilder;
pub use crate::policy::refresh::LoadTime;
use crate::stats::Counters;
use crate::store::Backend;
use crate::{Cache, CacheBuilder};

/// The static description of one `#[cached]` function.
#[derive(Debug)]
pub struct Spec {
    /// The function's name, for logs.
    pub name: &'static str,
    /// `None`: the cache's default TTL.
    pub ttl: Option<Duration>,
    /// Store `None` results of `Option` returns.
    pub cache_none: bool,
    /// `lease = bool`; `None`: the cache's setting.
    pub lease: Option<bool>,
    /// `lease_ttl = "5s"`; `None`: the cache's setting.
    pub lease_ttl: Option<Duration>,
    /// `early_refresh = true | false | beta`: the XFetch beta, `0.0` = off;
    /// `None`: the cache's setting.
    pub early_refresh: Option<f64>,
    /// `stale_while_revalidate = "30s"`: `ZERO` = off; `None`: the cache's setting.
    pub stale_while_revalidate: Option<Duration>,
    /// `stale_if_error = "5m"`: `ZERO` = off; `None`: the cache's setting.
    pub stale_if_error: Option<Duration>,
    /// How long the body takes (XFetch's delta), measured in this process.
    pub load_time: LoadTime,
}

/// Whether a result counts as success (write functions invalidate only then).
pub trait Outcome<R> {
    fn is_success(result: &R) -> bool;
}

/// How a return type maps to the stored value.
pub trait Shape<R>: Outcome<R> {
    /// Not bounded here: the functions that store it require `Cacheable`,
    /// so a missing derive is reported once, with `Cacheable`'s message.
    type Value;
    /// The part to store, or `None` if this result is not stored.
    fn to_store(result: &R, cache_none: bool) -> Option<&Self::Value>;
    fn from_stored(value: Self::Value) -> R;
}

/// `Result<T, E>`: only `Ok(T)` is stored, as `T`.
pub struct ResultShape;
/// `Option<T>`: stored as `T` or JSON `null`; `None` only with `cache_none`.
pub struct OptionShape;
/// Any other `T`: stored as is.
pub struct PlainShape;

impl<T, E> Outcome<Result<T, E>> for ResultShape {
    #[inline]
    fn is_success(result: &Result<T, E>) -> bool {
        result.is_ok()
    }
}
impl<T, E> Shape<Result<T, E>> for ResultShape {
    type Value = T;
    #[inline]
    fn to_store(result: &Result<T, E>, _: bool) -> Option<&T> {
        result.as_ref().ok()
    }
    #[inline]
    fn from_stored(value: T) -> Result<T, E> {
        Ok(value)
    }
}

impl<T> Outcome<Option<T>> for OptionShape {
    #[inline]
    fn is_success(_: &Option<T>) -> bool {
        true
    }
}
impl<T> Shape<Option<T>> for OptionShape {
    type Value = Option<T>;
    #[inline]
    fn to_store(result: &Option<T>, cache_none: bool) -> Option<&Option<T>> {
        (result.is_some() || cache_none).then_some(result)
    }
    #[inline]
    fn from_stored(value: Option<T>) -> Option<T> {
        value
    }
}

impl<T> Outcome<T> for PlainShape {
    #[inline]
    fn is_success(_: &T) -> bool {
        true
    }
}
impl<T> Shape<T> for PlainShape {
    type Value = T;
    #[inline]
    fn to_store(result: &T, _: bool) -> Option<&T> {
        Some(result)
    }
    #[inline]
    fn from_stored(value: T) -> T {
        value
    }
}

static NOT_INSTALLED_WARNED: AtomicBool = AtomicBool::new(false);

fn warn_not_installed(spec: &Spec) {
    if !NOT_INSTALLED_WARNED.swap(true, Relaxed) {
        tracing::warn!(
            function = spec.name,
            "no cache installed: #[cached] functions run their bodies without caching \
             (call cache_runtime::install at start-up, or use Cache::scope)"
        );
    }
}

/// One call of a function with its own key: the cache in effect and the key.
pub struct Call {
    cache: Option<Current>,
    key: String,
}

/// Starts a call: finds the cache in effect and builds the key from the
/// borrowed arguments (before the body can move them).
#[inline]
pub fn call(spec: &'static Spec, write_key: impl FnOnce(&mut KeyBuilder)) -> Call {
    match current() {
        Some(cache) if !matches!(cache.inner.store, Backend::Disabled(_)) => {
            let key = cache.build_key(write_key);
            Call {
                cache: Some(cache),
                key,
            }
        }
        Some(cache) => {
            Counters::bump(&cache.inner.counters.bypasses);
            Call {
                cache: None,
                key: String::new(),
            }
        }
        None => {
            warn_not_installed(spec);
            Call {
                cache: None,
                key: String::new(),
            }
        }
    }
}

/// Cache-aside: the stored value on a hit; on a miss the body's result,
/// stored when its shape says so.
#[inline]
pub async fn read<S, R, F>(spec: &'static Spec, call: Call, body: F) -> R
where
    S: Shape<R>,
    S::Value: Cacheable,
    F: Future<Output = R>,
{
    let Some(cache) = call.cache else {
        return body.await;
    };
    crate::read::read::<S, R, F>(spec, &cache, call.key, body).await
}

/// Write-through: always runs the body; on success invalidates the listed
/// entries, then stores the result under its own key (or removes the own
/// key when the result is not stored, e.g. `None` without `cache_none`).
pub async fn write_through<S, R, F>(
    spec: &'static Spec,
    call: Call,
    mut inv: Invalidations,
    body: F,
) -> R
where
    S: Shape<R>,
    S::Value: Cacheable,
    F: Future<Output = R>,
{
    let result = body.await;
    if !S::is_success(&result) {
        return result;
    }
    let stored = S::to_store(&result, spec.cache_none);
    if stored.is_none() && call.cache.is_some() {
        inv.keys.push(call.key.clone());
    }
    inv.run().await;
    if let (Some(cache), Some(value)) = (&call.cache, stored) {
        cache.set(&call.key, value, spec.ttl).await;
    }
    result
}

/// A write function: always runs the body; on success invalidates.
pub async fn write<S, R, F>(inv: Invalidations, body: F) -> R
where
    S: Outcome<R>,
    F: Future<Output = R>,
{
    let result = body.await;
    if S::is_success(&result) {
        inv.run().await;
    }
    result
}

/// The entries a write function invalidates, computed before its body runs
/// (the body may move the arguments they are built from).
pub struct Invalidations {
    cache: Option<Current>,
    keys: Vec<String>,
    patterns: Vec<String>,
}

impl Invalidations {
    #[inline]
    pub fn new() -> Self {
        Invalidations {
            cache: current(),
            keys: Vec::new(),
            patterns: Vec::new(),
        }
    }

    /// A key computed by another function's `key` companion.
    #[inline]
    pub fn key(mut self, key: String) -> Self {
        if self.cache.is_some() {
            self.keys.push(key);
        }
        self
    }

    /// An exact-key template of the annotated function.
    #[inline]
    pub fn template(mut self, write_key: impl FnOnce(&mut KeyBuilder)) -> Self {
        if let Some(cache) = &self.cache {
            self.keys.push(cache.build_key(write_key));
        }
        self
    }

    /// A pattern template of the annotated function.
    #[inline]
    pub fn pattern(mut self, write_key: impl FnOnce(&mut KeyBuilder)) -> Self {
        if let Some(cache) = &self.cache {
            self.patterns.push(cache.build_key(write_key));
        }
        self
    }

    async fn run(self) {
        if let Some(cache) = self.cache {
            cache.invalidate(self.keys, self.patterns).await;
        }
    }
}

impl Default for Invalidations {
    fn default() -> Self {
        Self::new()
    }
}

/// The `key` companion: the key in the cache in effect (or, with none
/// installed, in a default-configured cache's namespace).
pub fn key(write_key: impl FnOnce(&mut KeyBuilder)) -> String {
    match current() {
        Some(cache) => cache.build_key(write_key),
        None => {
            let defaults = CacheBuilder::default();
            let mut k = KeyBuilder::new(&defaults.namespace, defaults.max_key_part_len);
            write_key(&mut k);
            k.finish()
        }
    }
}

/// The `invalidate` companion.
pub async fn invalidate_key(key: String) {
    if let Some(cache) = current() {
        Cache::invalidate_key(&cache, key).await;
    }
}
