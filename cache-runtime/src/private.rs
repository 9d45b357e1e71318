//! What the `#[cached]` expansion calls. Not a public API: names and
//! signatures change with the macro, which is always the same version.

use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

use futures_util::future::Either;
use tracing::Instrument;

use crate::cache::{Current, Unresolved, current_in, current_tenant};
use crate::codec::Cacheable;
pub use crate::key::KeyBuilder;
use crate::key::KeyKind;
pub use crate::metrics::SpecMetrics;
pub use crate::policy::Overrides;
pub use crate::policy::refresh::LoadTime;
use crate::read::no_inline;
use crate::stats::Counters;
use crate::store::Backend;
use crate::{Cache, CacheBuilder};

/// The static description of one `#[cached]` function.
#[derive(Debug)]
pub struct Spec {
    /// The function's name.
    pub name: &'static str,
    /// `module_path!()` where it is declared.
    pub module: &'static str,
    /// The type of its impl, when `#[cached]` on the impl block names it.
    pub owner: Option<&'static str>,
    /// Store `None` results of `Option` returns.
    pub cache_none: bool,
    /// `ttl` and the stampede options; `None`: the cache's setting.
    pub options: Overrides,
    /// How long the body takes (XFetch's delta), measured in this process.
    pub load_time: LoadTime,
    /// `store = "flags"`: a named store; `None`: the cache's own store.
    pub store: Option<&'static str>,
    /// Per-function counters and metric keys.
    pub metrics: SpecMetrics,
}

/// A function's use of a named store, registered by the macro so that
/// [`CacheBuilder::build`] can reject a store that is not configured.
#[derive(Debug)]
pub struct StoreUse {
    pub store: &'static str,
    pub function: &'static str,
    pub location: &'static str,
}

inventory::collect!(StoreUse);
pub use inventory;

/// Every registered store use.
pub(crate) fn store_uses() -> impl Iterator<Item = &'static StoreUse> {
    inventory::iter::<StoreUse>.into_iter()
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
/// `Result<Option<T>, E>`: `Ok(Some(T))` is stored as `T`, `Ok(None)` as
/// JSON `null` only with `cache_none`, like [`OptionShape`].
pub struct ResultOptionShape;
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

impl<T, E> Outcome<Result<Option<T>, E>> for ResultOptionShape {
    #[inline]
    fn is_success(result: &Result<Option<T>, E>) -> bool {
        result.is_ok()
    }
}
impl<T, E> Shape<Result<Option<T>, E>> for ResultOptionShape {
    type Value = Option<T>;
    #[inline]
    fn to_store(result: &Result<Option<T>, E>, cache_none: bool) -> Option<&Option<T>> {
        match result {
            Ok(value) => (value.is_some() || cache_none).then_some(value),
            Err(_) => None,
        }
    }
    #[inline]
    fn from_stored(value: Option<T>) -> Result<Option<T>, E> {
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

/// The shape of a return type, chosen by the type rustc resolved (aliases
/// such as `io::Result<T>` or `ApiResult<T>` included), never by its name:
/// the expansion calls `(&&&Kind::<R>::new()).__cache_shape()`, and method
/// resolution picks the most specific impl (autoref specialization):
/// `Result<Option<T>, E>`, then `Result<T, E>` or `Option<T>`, then any `T`.
pub struct Kind<R>(PhantomData<fn() -> R>);

impl<R> Kind<R> {
    #[inline]
    pub const fn new() -> Self {
        Kind(PhantomData)
    }
}

impl<R> Default for Kind<R> {
    fn default() -> Self {
        Self::new()
    }
}

/// See [`Kind`]: `Result<Option<T>, E>`.
pub trait ResultOptionKind {
    fn __cache_shape(&self) -> ResultOptionShape {
        ResultOptionShape
    }
}
impl<T, E> ResultOptionKind for &&Kind<Result<Option<T>, E>> {}

/// See [`Kind`]: `Result<T, E>`.
pub trait ResultKind {
    fn __cache_shape(&self) -> ResultShape {
        ResultShape
    }
}
impl<T, E> ResultKind for &Kind<Result<T, E>> {}

/// See [`Kind`]: `Option<T>`.
pub trait OptionKind {
    fn __cache_shape(&self) -> OptionShape {
        OptionShape
    }
}
impl<T> OptionKind for &Kind<Option<T>> {}

/// See [`Kind`]: any other type.
pub trait PlainKind {
    fn __cache_shape(&self) -> PlainShape {
        PlainShape
    }
}
impl<T> PlainKind for Kind<T> {}

/// A value interpolated into a key, for the expansion's
/// `(&&&KeyArg(&v)).__cache_key_part(k)`: method resolution picks its
/// `Display` text when it has one (as it always did), else its compact
/// JSON when it is `Serialize` (`Option`, slices, `Vec`, enums, filter
/// structs), else reports [`KeyForm`]'s error (autoref specialization, as
/// for [`Kind`]).
pub struct KeyArg<'a, T: ?Sized>(pub &'a T);

/// See [`KeyArg`]: the `Display` text.
pub trait ViaDisplay {
    fn __cache_key_part(&self, k: &mut KeyBuilder);
}
impl<T: std::fmt::Display + ?Sized> ViaDisplay for &&KeyArg<'_, T> {
    #[inline]
    fn __cache_key_part(&self, k: &mut KeyBuilder) {
        k.arg(self.0);
    }
}

/// See [`KeyArg`]: the compact JSON.
pub trait ViaSerialize {
    fn __cache_key_part(&self, k: &mut KeyBuilder);
}
impl<T: serde::Serialize + ?Sized> ViaSerialize for &KeyArg<'_, T> {
    #[inline]
    fn __cache_key_part(&self, k: &mut KeyBuilder) {
        k.arg_json(self.0);
    }
}

/// See [`KeyArg`]: neither; the call fails on [`KeyForm`].
pub trait NoKeyForm<T: ?Sized> {
    fn __cache_key_part(&self, k: &mut KeyBuilder)
    where
        T: KeyForm;
}
impl<T: ?Sized> NoKeyForm<T> for KeyArg<'_, T> {
    fn __cache_key_part(&self, _: &mut KeyBuilder)
    where
        T: KeyForm,
    {
    }
}

/// Implemented by nothing: the error of a key value with no key form.
#[diagnostic::on_unimplemented(
    message = "`{Self}` can not be part of a cache key",
    label = "a value of this key template has no key form",
    note = "a key part is a value's `Display` text, or else its compact JSON: implement `Display` or `serde::Serialize` for `{Self}`, or `skip` the parameter if it does not change the result"
)]
pub trait KeyForm {}

/// The shapes whose `None` `cache_none` can store.
#[diagnostic::on_unimplemented(
    message = "`cache_none` applies to functions returning `Option<T>` or `Result<Option<T>, E>`",
    label = "this return type has no `None` to store",
    note = "remove `cache_none`"
)]
pub trait HasNone {}
impl HasNone for OptionShape {}
impl HasNone for ResultOptionShape {}

/// `cache_none = true`: checks, by type, that the shape has a `None`.
#[inline]
pub const fn cache_none<S: HasNone>(shape: S) -> S {
    shape
}

static NOT_INSTALLED_WARNED: AtomicBool = AtomicBool::new(false);

fn warn_not_installed(function: Option<&'static Spec>) {
    if !NOT_INSTALLED_WARNED.swap(true, Relaxed) {
        tracing::warn!(
            function = function.map_or("an invalidation", Spec::label),
            "no cache installed: #[cached] functions run their bodies without caching \
             (call cache_runtime::install at start-up, or use Cache::scope)"
        );
    }
}

/// The cache a call uses, with the tenant it runs for; `None` when the call
/// must not touch the cache (none installed, caching disabled, or a
/// tenant required and missing), which is counted and logged here.
/// `function`: a call of that function, with a key of its own (a disabled
/// cache counts it as a bypass); `None`: an invalidation.
fn resolve(
    store: Option<&'static str>,
    function: Option<&'static Spec>,
) -> Option<(Current, Option<Arc<str>>)> {
    let cache = match current_in(store) {
        Ok(cache) => cache,
        Err(Unresolved::NotInstalled) => {
            warn_not_installed(function);
            return None;
        }
        Err(Unresolved::UnknownStore) => {
            if let Ok(default) = current_in(None) {
                Counters::bump(&default.inner.counters.bypasses);
                default.degraded(
                    "a named store is not configured; the call runs without the cache",
                    &store.unwrap_or_default(),
                );
            }
            return None;
        }
    };
    if matches!(cache.inner.store, Backend::Disabled(_)) {
        if function.is_some() {
            Counters::bump(&cache.inner.counters.bypasses);
        }
        return None;
    }
    let tenant = current_tenant();
    if tenant.is_none() && cache.inner.enforce_tenants {
        Counters::bump(&cache.inner.counters.tenant_bypasses);
        cache.degraded(
            "a cached call ran without a tenant while tenants are enforced; it bypassed the cache (wrap the request in Cache::with_tenant)",
            &function.map_or("an invalidation", Spec::label),
        );
        return None;
    }
    Some((cache, tenant))
}

/// One call of a function with its own key: the cache in effect, the key
/// and the keys of its tags' versions.
pub struct Call {
    cache: Option<Current>,
    tenant: Option<Arc<str>>,
    key: String,
    tags: Vec<String>,
}

/// Starts a call: finds the cache in effect and builds the key from the
/// borrowed arguments (before the body can move them).
#[inline]
pub fn call(spec: &'static Spec, write_key: impl FnOnce(&mut KeyBuilder)) -> Call {
    match resolve(spec.store, Some(spec)) {
        Some((cache, tenant)) => {
            let key = cache.key_for(tenant.as_deref(), KeyKind::Entry, write_key);
            Call {
                cache: Some(cache),
                tenant,
                key,
                tags: Vec::new(),
            }
        }
        None => Call {
            cache: None,
            tenant: None,
            key: String::new(),
            tags: Vec::new(),
        },
    }
}

impl Call {
    /// The function's tags, built from the same borrowed arguments.
    #[inline]
    pub fn tags(mut self, write_tags: impl FnOnce(&mut TagWriter)) -> Self {
        if let Some(cache) = &self.cache {
            let mut writer = TagWriter {
                cache,
                tenant: self.tenant.as_deref(),
                keys: Vec::new(),
            };
            write_tags(&mut writer);
            self.tags = writer.keys;
        }
        self
    }
}

/// Collects the version keys of a function's tags.
pub struct TagWriter<'a> {
    cache: &'a Cache,
    tenant: Option<&'a str>,
    keys: Vec<String>,
}

impl TagWriter<'_> {
    /// One tag, written like a key template.
    #[inline]
    pub fn tag(&mut self, write_tag: impl FnOnce(&mut KeyBuilder)) {
        let key = self.cache.key_for(self.tenant, KeyKind::Tag, write_tag);
        self.keys.push(key);
    }
}

/// Cache-aside: the stored value on a hit; on a miss the body's result,
/// stored when its shape says so.
#[inline]
pub fn read<S, R, F>(_: S, spec: &'static Spec, call: Call, body: F) -> impl Future<Output = R>
where
    S: Shape<R>,
    S::Value: Cacheable,
    F: Future<Output = R>,
{
    read_cached::<S, R, F>(spec, call, body)
}

async fn read_cached<S, R, F>(spec: &'static Spec, call: Call, body: F) -> R
where
    S: Shape<R>,
    S::Value: Cacheable,
    F: Future<Output = R>,
{
    let Some(cache) = call.cache else {
        return body.await;
    };
    let span = call_span(spec, &call.key);
    crate::read::read::<S, R, F>(spec, &cache, call.key, call.tags, body, &span, None)
        .instrument(span.clone())
        .await
}

/// One span per call, at DEBUG: free while that level is off. The body
/// runs inside it, so the database's own spans nest under the call.
#[inline(never)]
fn call_span(spec: &'static Spec, key: &str) -> tracing::Span {
    let span = tracing::debug_span!(
        "cached",
        function = spec.label(),
        key = tracing::field::Empty,
        outcome = tracing::field::Empty,
    );
    if !span.is_disabled() {
        span.record("key", key);
    }
    span
}

/// [`read`] for a `near = true` function: the near tier first (a copy of
/// the decoded value, no round trip); on a near miss, the Redis read, and
/// a fresh value found there is kept near for the rest of its fresh TTL.
///
/// Not an `async fn`: a near hit returns a ready future, so the caller's
/// future stays small (the Redis path is boxed; it pays a round trip anyway).
#[inline]
pub fn read_near<S, R, F>(_: S, spec: &'static Spec, call: Call, body: F) -> impl Future<Output = R>
where
    S: Shape<R>,
    S::Value: Cacheable + Clone + Send + Sync + 'static,
    F: Future<Output = R>,
{
    if let Some(cache) = &call.cache
        && let Some(near) = cache.near()
        && let Some(value) = near.get::<S::Value>(&call.key)
        && !crate::cache::warming()
    {
        cache.near_hit(spec);
        return Either::Left(std::future::ready(S::from_stored(value)));
    }
    Either::Right(Box::pin(read_near_slow::<S, R, F>(spec, call, body)))
}

async fn read_near_slow<S, R, F>(spec: &'static Spec, call: Call, body: F) -> R
where
    S: Shape<R>,
    S::Value: Cacheable + Clone + Send + Sync + 'static,
    F: Future<Output = R>,
{
    let Some(cache) = call.cache else {
        return body.await;
    };
    let near = match cache.near() {
        Some(near) if !crate::cache::warming() => near.clone(),
        _ => {
            let call = Call {
                cache: Some(cache),
                ..call
            };
            return read_cached::<S, R, F>(spec, call, body).await;
        }
    };
    let span = call_span(spec, &call.key);
    let ticket = near.ticket(&call.key);
    let (key, tags) = (call.key, call.tags);
    let keep = |value: &S::Value, remaining: Option<Duration>, versions: &[Option<u64>]| {
        // Every tag must have a version: an entry without one is a miss.
        let Some(tagged) = tags
            .iter()
            .zip(versions)
            .map(|(tag, v)| v.map(|v| (tag.clone(), v)))
            .collect::<Option<Vec<_>>>()
        else {
            return;
        };
        let ttl = remaining.unwrap_or(Duration::MAX);
        near.insert(ticket, &key, value, ttl, &tagged);
    };
    crate::read::read::<S, R, F>(
        spec,
        &cache,
        key.clone(),
        tags.clone(),
        body,
        &span,
        Some(&keep),
    )
    .instrument(span.clone())
    .await
}

/// Write-through: always runs the body; on success invalidates the listed
/// entries, then stores the result under its own key (or removes the own
/// key when the result is not stored, e.g. `None` without `cache_none`).
/// A lease on the own key, taken before the body, makes the store
/// conditional: a key changed while the write ran is removed instead.
pub async fn write_through<S, R, F>(
    _: S,
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
    let lease = match &call.cache {
        Some(cache) => Some(no_inline(crate::read::lease_for_write(cache, spec, &call.key)).await),
        None => None,
    };
    let result = body.await;
    if !S::is_success(&result) {
        if let Some(lease) = lease {
            no_inline(lease.release()).await;
        }
        return result;
    }
    let stored = S::to_store(&result, spec.cache_none);
    // A result that is not stored removes the own key instead.
    if call.cache.is_some() && stored.is_none() {
        inv.push(spec.store, call.key.clone());
    }
    // The own key is left to the fill below (under the lease taken before
    // the body), even where a listed pattern matches it.
    let keep = (stored.is_some() && lease.is_some()).then_some(call.key.as_str());
    no_inline(inv.run_keeping(spec.store, keep)).await;
    match (&call.cache, stored, lease) {
        (Some(cache), Some(value), Some(lease)) => {
            crate::read::store_written(cache, spec, &call.key, &call.tags, value, lease).await;
        }
        (_, _, Some(lease)) => lease.forget(),
        _ => {}
    }
    result
}

/// A write function: always runs the body; on success invalidates.
pub async fn write<S, R, F>(_: S, inv: Invalidations, body: F) -> R
where
    S: Outcome<R>,
    F: Future<Output = R>,
{
    let result = body.await;
    if S::is_success(&result) {
        no_inline(inv.run()).await;
    }
    result
}

/// The entries a write function invalidates, computed before its body runs
/// (the body may move the arguments they are built from), grouped by store.
pub struct Invalidations {
    /// The function's own store: its templates, patterns and tags.
    own: Option<&'static str>,
    groups: Vec<Group>,
}

struct Group {
    store: Option<&'static str>,
    cache: Current,
    tenant: Option<Arc<str>>,
    keys: Vec<String>,
    patterns: Vec<String>,
}

impl Invalidations {
    #[inline]
    pub fn new(store: Option<&'static str>) -> Self {
        Invalidations {
            own: store,
            groups: Vec::new(),
        }
    }

    /// The group of `store`, resolved on first use; `None` when that store
    /// must not be touched (see [`resolve`]).
    fn group(&mut self, store: Option<&'static str>) -> Option<&mut Group> {
        let at = match self.groups.iter().position(|g| g.store == store) {
            Some(at) => at,
            None => {
                let (cache, tenant) = resolve(store, None)?;
                self.groups.push(Group {
                    store,
                    cache,
                    tenant,
                    keys: Vec::new(),
                    patterns: Vec::new(),
                });
                self.groups.len() - 1
            }
        };
        self.groups.get_mut(at)
    }

    fn push(&mut self, store: Option<&'static str>, key: String) {
        if let Some(group) = self.group(store) {
            group.keys.push(key);
        }
    }

    /// A key computed by another function's `key` companion, in its store.
    #[inline]
    pub fn key(mut self, key: String, store: Option<&'static str>) -> Self {
        self.push(store, key);
        self
    }

    /// An exact-key template of the annotated function.
    #[inline]
    pub fn template(mut self, write_key: impl FnOnce(&mut KeyBuilder)) -> Self {
        if let Some(g) = self.group(self.own) {
            let key = g
                .cache
                .key_for(g.tenant.as_deref(), KeyKind::Entry, write_key);
            g.keys.push(key);
        }
        self
    }

    /// A pattern template of the annotated function.
    #[inline]
    pub fn pattern(mut self, write_key: impl FnOnce(&mut KeyBuilder)) -> Self {
        if let Some(g) = self.group(self.own) {
            let key = g
                .cache
                .key_for(g.tenant.as_deref(), KeyKind::Entry, write_key);
            g.patterns.push(key);
        }
        self
    }

    /// A tag of the annotated function's store: its version key is deleted.
    #[inline]
    pub fn tag(mut self, write_tag: impl FnOnce(&mut KeyBuilder)) -> Self {
        if let Some(g) = self.group(self.own) {
            let key = g
                .cache
                .key_for(g.tenant.as_deref(), KeyKind::Tag, write_tag);
            g.keys.push(key);
        }
        self
    }

    async fn run(self) {
        self.run_keeping(None, None).await;
    }

    /// Runs them, leaving `keep` alone in `store`.
    async fn run_keeping(self, store: Option<&'static str>, keep: Option<&str>) {
        for g in self.groups {
            let keep = if g.store == store { keep } else { None };
            g.cache.invalidate_keeping(g.keys, g.patterns, keep).await;
        }
    }
}

/// The `key` companion: the key in the cache in effect for `store` and the
/// current tenant (or, with none installed, in a default-configured cache's
/// namespace).
pub fn key_in(store: Option<&'static str>, write_key: impl FnOnce(&mut KeyBuilder)) -> String {
    let tenant = current_tenant();
    match current_in(store) {
        Ok(cache) => cache.key_for(tenant.as_deref(), KeyKind::Entry, write_key),
        Err(_) => {
            let defaults = CacheBuilder::default();
            let mut k = KeyBuilder::new(
                &defaults.namespace,
                tenant.as_deref(),
                KeyKind::Entry,
                defaults.max_key_part_len,
            );
            write_key(&mut k);
            k.finish()
        }
    }
}

/// The `invalidate` companion.
pub async fn invalidate_key_in(store: Option<&'static str>, key: String) {
    if let Some((cache, _)) = resolve(store, None) {
        Cache::invalidate_key(&cache, key).await;
    }
}
