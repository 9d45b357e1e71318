//! The cache handle: one global instance (`install`) or one per task (`Cache::scope`).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;

use crate::codec::{Cacheable, CodecError, Format};
use crate::config::{CacheBuilder, ConfigError, NamedStore, StoreConfig, redact_url};
use crate::key::{KeyBuilder, KeyKind};
use crate::metrics::{ErrorKind, InvalidationKind};
use crate::policy::lease::{Content, classify};
use crate::policy::retry::RetryQueue;
use crate::policy::single_flight::Flights;
use crate::policy::tags::ReusedVersions;
use crate::policy::{BreakerState, Policy};
use crate::stats::{Counters, LogLimiter, Stats};
use crate::store::{
    Backend, Connector, DisabledStore, MemoryStore, RedisOptions, RedisStore, Store, StoreError,
    StoreKind,
};

/// A cache: a store plus its configuration and counters. Cheap to clone (one `Arc`).
///
/// Create one with [`Cache::from_env`] or [`Cache::builder`], then either
/// [`install`] it for the whole process or run a future inside
/// [`Cache::scope`].
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), cache_runtime::ConfigError> {
/// use cache_runtime::{Cache, cached};
///
/// #[cached(prefix = "square", id = "n", ttl = 60)]
/// async fn square(n: u64) -> u64 { n * n }
///
/// let cache = Cache::builder().namespace("doc").build().await?;
/// Cache::scope(cache.clone(), async {
///     assert_eq!(square(7).await, 49); // miss: runs the body
///     assert_eq!(square(7).await, 49); // hit
/// }).await;
/// assert_eq!(cache.stats().hits, 1);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Cache {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub namespace: String,
    pub default_ttl: Duration,
    pub max_key_part_len: usize,
    pub store: Backend,
    pub counters: Arc<Counters>,
    pub log: LogLimiter,
    pub retry: RetryQueue,
    pub policy: Policy,
    pub flights: Arc<Flights>,
    pub format: Format,
    pub enforce_tenants: bool,
    pub reused_versions: Option<ReusedVersions>,
    /// Named stores (`#[cached(store = "flags")]`), each a cache of its own.
    pub stores: BTreeMap<String, Cache>,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("namespace", &self.inner.namespace)
            .field("store", &self.inner.store)
            .field("default_ttl", &self.inner.default_ttl)
            .field("stores", &self.inner.stores)
            .finish()
    }
}

static GLOBAL: OnceLock<Cache> = OnceLock::new();

/// The outcome of one lookup.
pub(crate) enum Lookup<T> {
    Hit(T),
    Miss,
    /// The store did not answer (timeout, connection failure, breaker open).
    Unavailable,
}

tokio::task_local! {
    static SCOPED: Cache;
    static TENANT: Option<Arc<str>>;
    static WARMING: ();
}

/// The tenant set for the current task by [`Cache::with_tenant`].
#[inline]
pub(crate) fn current_tenant() -> Option<Arc<str>> {
    TENANT.try_with(Option::clone).ok().flatten()
}

/// Whether the current task runs inside [`Cache::warm`].
#[inline]
pub(crate) fn warming() -> bool {
    WARMING.try_with(|_| ()).is_ok()
}

enum ClientError {
    /// The URL is wrong (it is redacted by the caller).
    Url(String),
    Config(ConfigError),
}

/// The redis-rs client for `url`, with the builder's TLS files (feature
/// `tls`): trusted CA certificates and a client certificate.
fn redis_client(url: &str, b: &CacheBuilder) -> Result<redis::Client, ClientError> {
    match tls_files(url, b)? {
        #[cfg(feature = "tls")]
        Some((certs, setting)) => redis::Client::build_with_tls(url, certs)
            .map_err(|e| setting_error(setting, format!("the TLS certificates: {e}"))),
        _ => redis::Client::open(url).map_err(|e| url_error(url, e)),
    }
}

/// The redis-rs cluster client for the seed nodes `urls`, with the
/// builder's TLS files; `Err((url, error))` names the URL to blame.
fn cluster_client(urls: &[String], b: &CacheBuilder) -> Result<Connector, (String, ClientError)> {
    let first = urls.first().ok_or_else(|| {
        (
            String::new(),
            ClientError::Url("a cluster needs at least one seed node URL".to_owned()),
        )
    })?;
    for url in urls {
        // Each URL on its own, so that an error names the one to fix.
        redis::Client::open(url.as_str()).map_err(|e| (url.clone(), url_error(url, e)))?;
        if url.starts_with("rediss://") != first.starts_with("rediss://") {
            return Err((
                url.clone(),
                ClientError::Url("mixes `redis://` and `rediss://` seed nodes".to_owned()),
            ));
        }
    }
    let files = tls_files(first, b).map_err(|e| (first.clone(), e))?;
    let builder = redis::cluster::ClusterClientBuilder::new(urls.iter().map(String::as_str))
        .connection_timeout(b.connect_timeout)
        // MOVED/ASK and reconnections are retried quickly; the operation
        // timeout bounds the whole call anyway.
        .retries(3)
        .min_retry_wait(5)
        .max_retry_wait(100);
    #[cfg(feature = "tls")]
    let builder = match files {
        Some((certs, setting)) => {
            // The cluster client checks certificates only when it connects:
            // check them now, as a single node's client does.
            redis::Client::build_with_tls(first.as_str(), certs.clone()).map_err(|e| {
                (
                    first.clone(),
                    setting_error(setting, format!("the TLS certificates: {e}")),
                )
            })?;
            builder.certs(certs)
        }
        None => builder,
    };
    #[cfg(not(feature = "tls"))]
    let _ = files;
    let client = builder
        .build()
        .map_err(|e| (first.clone(), ClientError::Url(e.to_string())))?;
    let seed = redis_client(first, b).map_err(|e| (first.clone(), e))?;
    Ok(Connector::Cluster { client, seed })
}

fn setting_error(setting: &'static str, reason: String) -> ClientError {
    ClientError::Config(ConfigError::InvalidSetting { setting, reason })
}

fn url_error(url: &str, e: redis::RedisError) -> ClientError {
    if url.starts_with("rediss://") && !cfg!(feature = "tls") {
        ClientError::Url("`rediss://` needs the `tls` feature of cache-runtime".to_owned())
    } else {
        ClientError::Url(e.to_string())
    }
}

/// The TLS certificates the builder names for `url`, read and checked
/// (`None`: none configured, and the system's roots are used for a
/// `rediss://` URL), with the builder setting to blame if they fail later.
#[cfg(feature = "tls")]
type TlsFiles = Option<(redis::TlsCertificates, &'static str)>;
#[cfg(not(feature = "tls"))]
type TlsFiles = Option<std::convert::Infallible>;

fn tls_files(url: &str, b: &CacheBuilder) -> Result<TlsFiles, ClientError> {
    let tls_url = url.starts_with("rediss://");
    let files = b.tls_ca_file.is_some() || b.tls_client.is_some();
    // The builder method to blame when the files as a whole are wrong.
    let files_setting = if b.tls_ca_file.is_some() {
        "tls_ca_file"
    } else {
        "tls_client_cert"
    };
    if files && !tls_url {
        return Err(setting_error(
            files_setting,
            "TLS certificates are configured but the Redis URL is not `rediss://`".to_owned(),
        ));
    }
    #[cfg(feature = "tls")]
    {
        // Whatever else enabled rustls' features, use one provider: ring.
        let _ = rustls::crypto::ring::default_provider().install_default();
        if files {
            let read = |name, path: &std::path::Path| {
                std::fs::read(path).map_err(|e| {
                    setting_error(name, format!("can not read `{}`: {e}", path.display()))
                })
            };
            let root_cert = match &b.tls_ca_file {
                Some(path) => Some(read("tls_ca_file", path)?),
                None => None,
            };
            let client_tls = match &b.tls_client {
                Some((cert, key)) => Some(redis::ClientTlsConfig {
                    client_cert: read("tls_client_cert", cert)?,
                    client_key: read("tls_client_cert", key)?,
                }),
                None => None,
            };
            let certs = redis::TlsCertificates {
                client_tls,
                root_cert,
            };
            return Ok(Some((certs, files_setting)));
        }
    }
    if files {
        return Err(setting_error(
            files_setting,
            "TLS needs the `tls` feature of cache-runtime".to_owned(),
        ));
    }
    Ok(None)
}

fn redis_options(b: &CacheBuilder) -> RedisOptions {
    RedisOptions {
        connect_timeout: b.connect_timeout,
        op_timeout: b.op_timeout,
        breaker_threshold: b.breaker_threshold,
        breaker_open_for: b.breaker_open_for,
        scan_count: b.scan_count,
        delete_batch: b.delete_batch,
        near: b.near.clone(),
        near_prefixes: crate::near::prefixes(&b.namespace),
    }
}

/// Logs whether Redis answers at start-up; never fails the build.
async fn connected(store: &RedisStore, url: &str) {
    match store.ping().await {
        Ok(_) => tracing::info!(url, "cache connected to Redis"),
        Err(e) => tracing::warn!(
            url,
            error = %e,
            "Redis did not answer at start-up (down, unreachable or refusing our credentials): calls run without the cache until it does"
        ),
    }
}

/// The answer of [`Cache::health`], ready to serialize for an endpoint.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[non_exhaustive]
pub struct Health {
    /// The store answered (or needs no answer: memory, disabled), and so
    /// did every named store.
    pub healthy: bool,
    /// What kind of store this is.
    pub store: StoreKind,
    /// The cache's namespace.
    pub namespace: String,
    /// The `PING` round trip (Redis, when it answered); serialized as
    /// `ping_ms`.
    #[serde(rename = "ping_ms", serialize_with = "opt_millis")]
    pub ping: Option<Duration>,
    /// The circuit breaker's state (Redis).
    pub breaker: Option<BreakerState>,
    /// Why the store did not answer.
    pub error: Option<String>,
    /// The named stores' health, by name.
    pub stores: BTreeMap<String, Health>,
}

fn opt_millis<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_some(&(d.as_secs_f64() * 1e3)),
        None => s.serialize_none(),
    }
}

/// The error of [`try_install`]: a cache was installed already.
#[derive(Debug, thiserror::Error)]
#[error(
    "a cache is already installed; `install` runs once per process (use `Cache::scope` for a second one)"
)]
pub struct AlreadyInstalled(pub Cache);

/// Installs `cache` as the process-wide cache used by every `#[cached]`
/// function outside a [`Cache::scope`]. The first call wins; a later call is
/// logged as an error and ignored (use [`try_install`] to handle it).
pub fn install(cache: Cache) {
    if try_install(cache).is_err() {
        tracing::error!("cache_runtime::install called twice: the second cache is ignored");
    }
}

/// Installs `cache` unless one is installed already.
pub fn try_install(cache: Cache) -> Result<(), AlreadyInstalled> {
    GLOBAL.set(cache).map_err(AlreadyInstalled)
}

/// The cache in effect here: the innermost [`Cache::scope`], else the installed one.
pub(crate) enum Current {
    Global(&'static Cache),
    Scoped(Cache),
}

impl std::ops::Deref for Current {
    type Target = Cache;
    #[inline]
    fn deref(&self) -> &Cache {
        match self {
            Current::Global(c) => c,
            Current::Scoped(c) => c,
        }
    }
}

#[inline]
pub(crate) fn current() -> Option<Current> {
    if let Ok(cache) = SCOPED.try_with(Cache::clone) {
        return Some(Current::Scoped(cache));
    }
    GLOBAL.get().map(Current::Global)
}

/// Why no cache is in effect for a call.
pub(crate) enum Unresolved {
    NotInstalled,
    /// A named store the cache in effect does not have. `build` rejects
    /// this for every `#[cached(store = ..)]` in the program, so only a
    /// hand-written name can get here.
    UnknownStore,
}

/// The cache in effect for `store` (`None`: the default store).
#[inline]
pub(crate) fn current_in(store: Option<&str>) -> Result<Current, Unresolved> {
    let cache = current().ok_or(Unresolved::NotInstalled)?;
    let Some(name) = store else {
        return Ok(cache);
    };
    match cache {
        Current::Global(global) => global
            .inner
            .stores
            .get(name)
            .map(Current::Global)
            .ok_or(Unresolved::UnknownStore),
        Current::Scoped(scoped) => scoped
            .inner
            .stores
            .get(name)
            .map(|c| Current::Scoped(c.clone()))
            .ok_or(Unresolved::UnknownStore),
    }
}

impl Cache {
    /// A builder with defaults: in-memory store, namespace `cache`, TTL 1 h.
    pub fn builder() -> CacheBuilder {
        CacheBuilder::default()
    }

    /// `REDIS_URL` set: Redis; unset: the embedded in-memory store. See
    /// [`CacheBuilder::from_env`] for every variable read.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), cache_runtime::ConfigError> {
    /// let cache = cache_runtime::Cache::from_env().await?;
    /// cache_runtime::install(cache);
    /// # Ok(()) }
    /// ```
    pub async fn from_env() -> Result<Cache, ConfigError> {
        CacheBuilder::from_env()?.build().await
    }

    pub(crate) async fn from_builder(b: CacheBuilder) -> Result<Cache, ConfigError> {
        crate::metrics::describe();
        let mut checks = Vec::new();
        let cache = Cache::build_store(b, "default", &mut checks)?;
        // Every Redis store is checked at once: the build waits at most one
        // connect timeout, however many stores there are.
        futures_util::future::join_all(checks.iter().map(|(store, url)| connected(store, url)))
            .await;
        Ok(cache)
    }

    /// Builds the cache of the store `label` (`default`, or a named store's
    /// name), which labels its metrics, without waiting for any server
    /// (connections are made lazily); each Redis store goes into `checks`
    /// with its redacted URL, for the start-up check.
    fn build_store(
        mut b: CacheBuilder,
        label: &str,
        checks: &mut Vec<(RedisStore, String)>,
    ) -> Result<Cache, ConfigError> {
        let mut stores = BTreeMap::new();
        for (name, named) in std::mem::take(&mut b.stores) {
            // `build` resolved every named store to a full builder.
            let NamedStore::Builder(sub) = named else {
                continue;
            };
            let cache = Cache::build_store(*sub, &name, checks)?;
            stores.insert(name, cache);
        }
        let counters = Arc::new(Counters::new(label));
        let store =
            match &b.store {
                #[cfg(feature = "testing")]
                StoreConfig::Memory if let Some(Some(shared)) = b.shared_memory.take() => {
                    Backend::Memory(shared)
                }
                StoreConfig::Memory => Backend::Memory(MemoryStore::new(b.max_entries)),
                StoreConfig::Disabled => Backend::Disabled(DisabledStore),
                StoreConfig::Redis(url) => {
                    let invalid = |reason: String| ConfigError::InvalidRedisUrl {
                        url: redact_url(url),
                        reason,
                    };
                    let client = redis_client(url, &b).map_err(|e| match e {
                        ClientError::Url(reason) => invalid(reason),
                        ClientError::Config(e) => e,
                    })?;
                    let store = RedisStore::new(
                        Connector::Single(client),
                        redis_options(&b),
                        counters.clone(),
                    )
                    .map_err(|e| invalid(e.to_string()))?;
                    checks.push((store.clone(), redact_url(url)));
                    Backend::Redis(store)
                }
                StoreConfig::Cluster(urls) => {
                    let client = cluster_client(urls, &b).map_err(|(url, e)| match e {
                        ClientError::Url(reason) => ConfigError::InvalidRedisUrl {
                            url: redact_url(&url),
                            reason,
                        },
                        ClientError::Config(e) => e,
                    })?;
                    let store = RedisStore::new(client, redis_options(&b), counters.clone())
                        .map_err(|e| ConfigError::InvalidRedisUrl {
                            url: redact_url(&urls[0]),
                            reason: e.to_string(),
                        })?;
                    let seeds: Vec<String> = urls.iter().map(|u| redact_url(u)).collect();
                    checks.push((store.clone(), seeds.join(",")));
                    Backend::Redis(store)
                }
            };
        #[cfg(feature = "testing")]
        let store = match (b.interpose.take(), store) {
            (Some(hook), store) => store.interposed(hook),
            (None, store) => store,
        };
        let retry = RetryQueue::new(store.clone(), counters.clone(), b.invalidation_retry_for);
        Ok(Cache {
            inner: Arc::new(Inner {
                namespace: b.namespace,
                default_ttl: b.default_ttl,
                max_key_part_len: b.max_key_part_len,
                store,
                counters,
                log: LogLimiter::new(5_000),
                retry,
                policy: b.policy,
                flights: Arc::default(),
                format: b.format,
                enforce_tenants: b.enforce_tenants,
                reused_versions: ReusedVersions::new(b.tag_version_reuse),
                stores,
            }),
        })
    }

    /// Runs `fut` with `cache` in effect for every `#[cached]` call it makes
    /// (on this task; a spawned task starts with the installed cache again).
    /// Scopes nest; the innermost wins. Tests use this to give each test its
    /// own store.
    pub fn scope<F: Future>(cache: Cache, fut: F) -> impl Future<Output = F::Output> {
        SCOPED.scope(cache, fut)
    }

    /// The cache in effect for the current task, if any.
    pub fn current() -> Option<Cache> {
        current().map(|c| Cache::clone(&c))
    }

    /// Runs `fut` on behalf of `tenant`: every `#[cached]` call, key
    /// companion and invalidation in it (on this task) uses the tenant's own
    /// keyspace, `<namespace>@<tenant>:...`, so no tenant can read, store or
    /// invalidate another's entries. An empty `tenant` means none. Nests; the
    /// innermost wins. With [`CacheBuilder::enforce_tenants`], calls made
    /// outside any tenant bypass the cache.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), cache_runtime::ConfigError> {
    /// use cache_runtime::{Cache, cached};
    ///
    /// #[cached(prefix = "plan", ttl = 60)]
    /// async fn plan() -> String { "pro".to_owned() }
    ///
    /// let cache = Cache::builder().namespace("app").enforce_tenants(true).build().await?;
    /// Cache::scope(cache.clone(), async {
    ///     let key = Cache::with_tenant("org-7", async { plan_key() }).await;
    ///     assert_eq!(key, "app@org-7:plan");
    ///     Cache::with_tenant("org-7", plan()).await; // cached for org-7 only
    ///     plan().await; // no tenant: runs the body, touches no key
    /// }).await;
    /// assert_eq!(cache.stats().tenant_bypasses, 1);
    /// # Ok(()) }
    /// ```
    pub fn with_tenant<F: Future>(
        tenant: impl AsRef<str>,
        fut: F,
    ) -> impl Future<Output = F::Output> {
        let tenant = tenant.as_ref();
        let tenant = (!tenant.is_empty()).then(|| Arc::<str>::from(tenant));
        TENANT.scope(tenant, fut)
    }

    /// The tenant of the current task (set by [`with_tenant`](Self::with_tenant)).
    pub fn tenant() -> Option<Arc<str>> {
        current_tenant()
    }

    /// Runs `fut` as cache warming: every `#[cached]` read function it calls
    /// runs its body and stores the result, whether or not an entry is
    /// there, through the same keys, tags, codec and leases as a normal
    /// miss. Use it at start-up, or on a schedule, for entries that must
    /// never be cold. (To fill only what is missing, call the functions
    /// without it: a miss stores.)
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), cache_runtime::ConfigError> {
    /// use cache_runtime::{Cache, cached};
    ///
    /// #[cached(prefix = "price", id = "sku", ttl = 600)]
    /// async fn price(sku: u32) -> u64 { u64::from(sku) * 100 }
    ///
    /// let cache = Cache::builder().build().await?;
    /// Cache::scope(cache.clone(), async {
    ///     Cache::warm(async {
    ///         for sku in [1, 2, 3] {
    ///             price(sku).await;
    ///         }
    ///     }).await;
    ///     price(2).await; // a hit
    /// }).await;
    /// assert_eq!((cache.stats().warmed, cache.stats().hits), (3, 1));
    /// # Ok(()) }
    /// ```
    pub fn warm<F: Future>(fut: F) -> impl Future<Output = F::Output> {
        WARMING.scope((), fut)
    }

    /// The named store `name` (`#[cached(store = "name")]`), configured with
    /// [`CacheBuilder::store`] or `CACHE_STORE_<NAME>_URL`.
    pub fn store(&self, name: &str) -> Option<&Cache> {
        self.inner.stores.get(name)
    }

    /// The first key segment.
    pub fn namespace(&self) -> &str {
        &self.inner.namespace
    }

    /// The TTL of functions that do not set one.
    pub fn default_ttl(&self) -> Duration {
        self.inner.default_ttl
    }

    /// Which store this cache uses.
    pub fn store_kind(&self) -> StoreKind {
        self.inner.store.kind()
    }

    /// The circuit breaker's state (Redis stores only).
    pub fn breaker_state(&self) -> Option<BreakerState> {
        self.inner.store.breaker_state()
    }

    /// A snapshot of this cache's counters (its own store; a named store's
    /// are at [`store(name)`](Self::store)`.stats()`). Per-function
    /// counters: [`function_stats`](crate::function_stats).
    pub fn stats(&self) -> Stats {
        let mut stats = self.inner.counters.snapshot();
        if let Backend::Redis(r) = &self.inner.store
            && let Some(near) = r.started_near()
        {
            stats.near_flushes = near.flushes();
        }
        stats
    }

    /// The near tier of this cache's store (started on first use); `None`
    /// for the memory and disabled stores, or when switched off.
    #[inline]
    pub(crate) fn near(&self) -> Option<&Arc<crate::near::Near>> {
        match &self.inner.store {
            Backend::Redis(r) => r.near(),
            _ => None,
        }
    }

    /// The embedded store, if this cache uses one (feature `testing`).
    #[cfg(feature = "testing")]
    pub(crate) fn memory_store(&self) -> Option<MemoryStore> {
        match &self.inner.store {
            Backend::Memory(m) => Some(m.clone()),
            Backend::Interposed(s) => match &s.inner {
                crate::store::Wrapped::Memory(m) => Some(m.clone()),
                crate::store::Wrapped::Redis(_) => None,
            },
            _ => None,
        }
    }

    /// Counts a hit served by the near tier.
    #[inline]
    pub(crate) fn near_hit(&self, spec: &'static crate::__private::Spec) {
        // `Stats::hits` adds these in: one shared counter less per near hit.
        Counters::bump(&self.inner.counters.near_hits);
        spec.count(crate::metrics::Event::Hit);
        spec.count(crate::metrics::Event::NearHit);
    }

    /// Whether the store answers, for a health endpoint: a `PING` past the
    /// circuit breaker (bounded by the connect timeout) with its round
    /// trip, the breaker's state, and the same for every named store.
    /// The memory and disabled stores are always healthy.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), cache_runtime::ConfigError> {
    /// use cache_runtime::{Cache, StoreKind};
    ///
    /// let cache = Cache::builder().memory().build().await?;
    /// let health = cache.health().await;
    /// assert!(health.healthy);
    /// assert_eq!(health.store, StoreKind::Memory);
    /// # Ok(()) }
    /// ```
    pub async fn health(&self) -> Health {
        let (ping, error) = match &self.inner.store {
            Backend::Redis(redis) => match redis.ping().await {
                Ok(took) => (Some(took), None),
                Err(e) => (None, Some(e.to_string())),
            },
            _ => (None, None),
        };
        let mut stores = BTreeMap::new();
        for (name, cache) in &self.inner.stores {
            stores.insert(name.clone(), Box::pin(cache.health()).await);
        }
        Health {
            healthy: error.is_none() && stores.values().all(|h: &Health| h.healthy),
            store: self.store_kind(),
            namespace: self.inner.namespace.clone(),
            ping,
            breaker: self.breaker_state(),
            error,
            stores,
        }
    }

    /// Removes every key of this cache's namespace: entries of every
    /// tenant, tag versions and lease records (SCAN + UNLINK in batches,
    /// never `KEYS`), then does the same in each named store. For an admin
    /// "clear cache" action; other namespaces in the same Redis are left
    /// alone. The number of keys removed, or `None` when a store did not
    /// confirm (logged and counted; nothing is retried: run it again) or
    /// the namespace is empty (that would be every key of the database).
    ///
    /// A read whose body is running while the namespace is cleared loses
    /// its lease and does not store what it read (see `leases_lost`).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), cache_runtime::ConfigError> {
    /// use cache_runtime::{Cache, cached};
    ///
    /// #[cached(prefix = "square", id = "n")]
    /// async fn square(n: u64) -> u64 { n * n }
    ///
    /// let cache = Cache::builder().namespace("app").build().await?;
    /// Cache::scope(cache.clone(), async {
    ///     square(2).await;
    ///     square(3).await;
    /// }).await;
    /// assert_eq!(cache.clear_namespace().await, Some(2));
    /// # Ok(()) }
    /// ```
    pub async fn clear_namespace(&self) -> Option<u64> {
        let mut removed = Some(0);
        if !matches!(self.inner.store, Backend::Disabled(_)) {
            let namespace = &self.inner.namespace;
            removed = if namespace.is_empty() {
                tracing::warn!(
                    "clear_namespace needs a namespace: with an empty one it would remove every key of the database; nothing removed"
                );
                None
            } else {
                // `ns:` entries, `ns@tenant` keys, `ns#tag:` versions; the
                // namespace holds no glob characters (checked at build).
                let pattern = format!("{namespace}[:@#]*");
                if let Some(reused) = &self.inner.reused_versions {
                    reused.forget_all();
                }
                match self.inner.store.delete_pattern(&pattern, None).await {
                    Ok(n) => {
                        self.inner
                            .counters
                            .invalidated(InvalidationKind::Pattern, 1);
                        tracing::info!(namespace, removed = n, "cache namespace cleared");
                        Some(n)
                    }
                    Err(e) => {
                        self.inner.counters.error(ErrorKind::InvalidationFailed, 1);
                        self.degraded("clearing the cache namespace failed (run it again)", &e);
                        None
                    }
                }
            };
        }
        for cache in self.inner.stores.values() {
            let theirs = Box::pin(cache.clear_namespace()).await;
            removed = removed.zip(theirs).map(|(a, b)| a + b);
        }
        removed
    }

    /// Builds a key in this cache's namespace and the current task's
    /// tenant (what the generated `key` companions call).
    pub fn build_key(&self, write: impl FnOnce(&mut KeyBuilder)) -> String {
        self.key_for(current_tenant().as_deref(), KeyKind::Entry, write)
    }

    pub(crate) fn key_for(
        &self,
        tenant: Option<&str>,
        kind: KeyKind,
        write: impl FnOnce(&mut KeyBuilder),
    ) -> String {
        let mut k = self.key_builder(tenant, kind);
        write(&mut k);
        k.finish()
    }

    /// A key builder in this cache's namespace (out of line: one copy).
    #[inline(never)]
    pub(crate) fn key_builder(&self, tenant: Option<&str>, kind: KeyKind) -> KeyBuilder {
        KeyBuilder::new(
            &self.inner.namespace,
            tenant,
            kind,
            self.inner.max_key_part_len,
        )
    }

    /// Invalidates every entry labelled `tag` (`#[cached(tags = [..])]`) in
    /// the current task's tenant: one deletion, however many entries carry
    /// the tag. `tag` is the tag as the attribute writes it, with each
    /// interpolated value escaped by [`key::escape`](crate::key::escape):
    /// `format!("user:{}", key::escape(&id))`.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), cache_runtime::ConfigError> {
    /// use cache_runtime::{Cache, cached};
    /// use std::sync::atomic::{AtomicU32, Ordering};
    /// static RUNS: AtomicU32 = AtomicU32::new(0);
    ///
    /// #[cached(prefix = "post", id = "id", tags = ["posts"])]
    /// async fn post(id: u32) -> u32 { RUNS.fetch_add(1, Ordering::Relaxed); id }
    ///
    /// let cache = Cache::builder().build().await?;
    /// Cache::scope(cache.clone(), async {
    ///     post(1).await;
    ///     post(2).await;
    ///     cache.invalidate_tag("posts").await;
    ///     post(1).await; // a miss again
    /// }).await;
    /// assert_eq!(RUNS.load(Ordering::Relaxed), 3);
    /// # Ok(()) }
    /// ```
    pub async fn invalidate_tag(&self, tag: &str) -> bool {
        let key = self.key_for(current_tenant().as_deref(), KeyKind::Tag, |k| k.lit(tag));
        self.invalidate(vec![key], Vec::new()).await
    }

    /// Reads and decodes the value under `key`; `None` on a miss and on any
    /// failure (counted and logged, never returned).
    ///
    /// This reads the key as it is: it does not know the tags of an entry a
    /// `#[cached(tags = ..)]` function stored, so it does not check them.
    /// Call the function to get tag-checked reads.
    pub async fn get<T: Cacheable>(&self, key: &str) -> Option<T> {
        match self.lookup(key).await {
            Lookup::Hit(value) => Some(value),
            Lookup::Miss | Lookup::Unavailable => None,
        }
    }

    /// Like [`get`](Self::get), telling a miss (store the fresh value) from
    /// an unreachable store (do not wait for it a second time in this call).
    pub(crate) async fn lookup<T: Cacheable>(&self, key: &str) -> Lookup<T> {
        let found = match self.inner.store.get(key).await {
            // A lease record is a miss, or the value it is refreshing.
            Ok(Some(bytes)) => match classify(bytes) {
                Content::Value(bytes)
                | Content::Leased {
                    value: Some(bytes), ..
                } => Ok(Some(bytes)),
                Content::Leased { value: None, .. } => Ok(None),
            },
            other => other,
        };
        match found {
            Ok(Some(bytes)) => match self.decode(&bytes) {
                Some(value) => {
                    Counters::bump(&self.inner.counters.hits);
                    Lookup::Hit(value)
                }
                None => {
                    Counters::bump(&self.inner.counters.misses);
                    Lookup::Miss
                }
            },
            Ok(None) => {
                Counters::bump(&self.inner.counters.misses);
                Lookup::Miss
            }
            Err(e) => self.classify_error(e),
        }
    }

    /// Decodes a stored value (never a lease record: callers classify
    /// first); garbage is counted, logged and `None`: a miss, overwritten by
    /// the next store.
    pub(crate) fn decode<T: Cacheable>(&self, bytes: &[u8]) -> Option<T> {
        match crate::codec::split(bytes).and_then(|stored| stored.decode()) {
            Ok(value) => Some(value),
            Err(e) => {
                self.decode_failed(&e);
                None
            }
        }
    }

    pub(crate) fn decode_failed(&self, e: &CodecError) {
        self.inner.counters.error(ErrorKind::Decode, 1);
        self.degraded(
            "a stored value does not decode into the return type; treated as a miss and overwritten",
            e,
        );
    }

    /// A failed read: a foreign Redis type is a miss (overwritten), an
    /// unreachable store is `Unavailable`, an error reply a miss.
    pub(crate) fn classify_error<T>(&self, e: StoreError) -> Lookup<T> {
        let counters = &self.inner.counters;
        match e {
            StoreError::WrongType(e) => {
                counters.error(ErrorKind::Decode, 1);
                Counters::bump(&counters.misses);
                self.degraded(
                    "the key holds a foreign Redis value; treated as a miss and overwritten",
                    &e,
                );
                Lookup::Miss
            }
            e => {
                self.store_failed(&e);
                if e.is_unavailable() {
                    Lookup::Unavailable
                } else {
                    Counters::bump(&counters.misses);
                    Lookup::Miss
                }
            }
        }
    }

    /// Encodes a value with this cache's codec, recording the versions of
    /// its tags; a `Serialize` failure is counted, logged and `None`.
    pub(crate) fn encode<T: Cacheable>(&self, value: &T, tag_versions: &[u64]) -> Option<Vec<u8>> {
        match self.inner.format.encode(value, tag_versions) {
            Ok(bytes) => Some(bytes),
            Err(e) => {
                self.inner.counters.error(ErrorKind::Encode, 1);
                self.degraded(
                    "a result could not be encoded; returned without storing it",
                    &e,
                );
                None
            }
        }
    }

    /// Encodes and stores `value`; the encoded bytes when stored.
    pub(crate) async fn set_encoded<T: Cacheable>(
        &self,
        key: &str,
        value: &T,
        tag_versions: &[u64],
        ttl: Duration,
    ) -> Option<Bytes> {
        let bytes = self.encode(value, tag_versions)?;
        self.set_bytes(key, Bytes::from(bytes), ttl).await
    }

    /// Stores encoded bytes; them again when stored (failures counted).
    pub(crate) async fn set_bytes(&self, key: &str, shared: Bytes, ttl: Duration) -> Option<Bytes> {
        match self.inner.store.set(key, shared.clone(), ttl).await {
            Ok(()) => {
                Counters::bump(&self.inner.counters.stores);
                Some(shared)
            }
            Err(e) => {
                self.store_failed(&e);
                None
            }
        }
    }

    /// Encodes and stores `value` under `key` for `ttl` (`None`: the default TTL).
    /// Failures are counted and logged, never returned.
    pub async fn set<T: Cacheable>(&self, key: &str, value: &T, ttl: Option<Duration>) {
        let ttl = ttl.unwrap_or(self.inner.default_ttl);
        self.set_encoded(key, value, &[], ttl).await;
    }

    /// Removes exact keys and every key matching the glob patterns. A failure
    /// is retried in the background (see
    /// [`CacheBuilder::invalidation_retry_for`]) and counted; this never fails.
    /// Returns whether the store confirmed every removal now.
    pub async fn invalidate(&self, keys: Vec<String>, patterns: Vec<String>) -> bool {
        self.invalidate_keeping(keys, patterns, None).await
    }

    /// [`invalidate`](Self::invalidate), leaving `keep` alone: a
    /// write-through's own key, which it is about to store under its lease.
    pub(crate) async fn invalidate_keeping(
        &self,
        mut keys: Vec<String>,
        patterns: Vec<String>,
        keep: Option<&str>,
    ) -> bool {
        if let Some(keep) = keep {
            keys.retain(|k| k != keep);
        }
        if matches!(self.inner.store, Backend::Disabled(_)) {
            return true;
        }
        if let Some(reused) = &self.inner.reused_versions {
            reused.forget(&keys);
        }
        let counters = &self.inner.counters;
        // After the store proves unreachable, queue the rest for the retry
        // task instead of waiting for it again: a call waits at most one
        // operation timeout for the cache.
        let mut unavailable = false;
        let mut failed_keys = Vec::new();
        let mut failed_patterns = Vec::new();
        if !keys.is_empty() {
            match self.inner.store.delete(&keys).await {
                Ok(_) => counters.invalidated(InvalidationKind::Key, keys.len() as u64),
                Err(e) => {
                    self.invalidation_failed(&e);
                    unavailable = e.is_unavailable();
                    failed_keys = keys;
                }
            }
        }
        for pattern in patterns {
            if unavailable {
                failed_patterns.push(pattern);
                continue;
            }
            match self.inner.store.delete_pattern(&pattern, keep).await {
                Ok(_) => counters.invalidated(InvalidationKind::Pattern, 1),
                Err(e) => {
                    self.invalidation_failed(&e);
                    unavailable = e.is_unavailable();
                    failed_patterns.push(pattern);
                }
            }
        }
        let confirmed = failed_keys.is_empty() && failed_patterns.is_empty();
        if !confirmed {
            self.inner.retry.push(failed_keys, failed_patterns);
        }
        confirmed
    }

    /// Removes one exact key. See [`invalidate`](Self::invalidate).
    pub async fn invalidate_key(&self, key: impl Into<String>) -> bool {
        self.invalidate(vec![key.into()], Vec::new()).await
    }

    /// Removes every key matching a Redis glob `pattern` (SCAN + UNLINK in
    /// batches, never KEYS). The pattern is used as given: build it with
    /// [`build_key`](Self::build_key) so interpolated values are escaped.
    pub async fn invalidate_pattern(&self, pattern: impl Into<String>) -> bool {
        self.invalidate(Vec::new(), vec![pattern.into()]).await
    }

    fn invalidation_failed(&self, e: &StoreError) {
        self.inner.counters.error(ErrorKind::InvalidationFailed, 1);
        if let Some(held_back) = self.inner.log.permit() {
            tracing::warn!(error = %e, held_back, "cache invalidation failed; retrying in the background");
        }
    }

    pub(crate) fn store_failed(&self, e: &StoreError) {
        let counters = &self.inner.counters;
        match e {
            StoreError::Timeout(_) => counters.error(ErrorKind::Timeout, 1),
            StoreError::BreakerOpen => {
                // Expected while the breaker is open: count, do not log.
                counters.error(ErrorKind::BreakerOpen, 1);
                return;
            }
            _ => counters.error(ErrorKind::Connection, 1),
        }
        self.degraded(
            "cache store operation failed; the call runs without the cache",
            e,
        );
    }

    pub(crate) fn degraded(&self, what: &'static str, error: &dyn std::fmt::Display) {
        if let Some(held_back) = self.inner.log.permit() {
            tracing::warn!(error = %error, held_back, "{what}");
        }
    }
}
