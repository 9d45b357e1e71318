//! Configuration: the builder, the environment, and the typed errors a user
//! must act on. Everything here runs once, at start-up.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::Cache;
use crate::codec::{Codec, Compression, Format};
use crate::near::NearOptions;
use crate::policy::Policy;

/// Configuration that can not work. Returned by [`CacheBuilder::build`] and
/// [`Cache::from_env`]; never produced at run time.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The Redis URL does not parse (the password, if any, is masked).
    #[error("invalid Redis URL `{url}`: {reason}")]
    InvalidRedisUrl {
        /// The URL with its password replaced by `***`.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An environment variable holds a value that does not parse.
    #[error("invalid value `{value}` for environment variable {var}: {reason}")]
    InvalidEnv {
        /// The variable's name.
        var: &'static str,
        /// Its value.
        value: String,
        /// What was expected.
        reason: String,
    },
    /// A builder setting is out of range.
    #[error("invalid cache setting `{setting}`: {reason}")]
    InvalidSetting {
        /// The builder method.
        setting: &'static str,
        /// What was expected.
        reason: String,
    },
    /// A `#[cached(store = "..")]` names a store that is not configured.
    #[error(
        "`{function}` ({location}) uses the named store `{store}`, which is not configured: set {env_var} (a Redis URL, `memory` or `disabled`) or call `.store(\"{store}\", ...)` on the builder"
    )]
    UnknownStore {
        /// The store's name.
        store: String,
        /// The environment variable that would configure it.
        env_var: String,
        /// The first function found using it.
        function: &'static str,
        /// Where that function is (`file:line`).
        location: &'static str,
    },
}

/// Which store a cache uses.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum StoreConfig {
    Redis(String),
    /// Seed nodes of a Redis Cluster.
    Cluster(Vec<String>),
    Memory,
    Disabled,
}

impl fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreConfig::Redis(url) => f.debug_tuple("Redis").field(&redact_url(url)).finish(),
            StoreConfig::Cluster(urls) => f
                .debug_tuple("Cluster")
                .field(&urls.iter().map(|u| redact_url(u)).collect::<Vec<_>>())
                .finish(),
            StoreConfig::Memory => f.write_str("Memory"),
            StoreConfig::Disabled => f.write_str("Disabled"),
        }
    }
}

impl StoreConfig {
    /// `memory`, `disabled`, or a Redis URL.
    fn parse(value: &str) -> StoreConfig {
        match value.trim() {
            v if v.eq_ignore_ascii_case("memory") => StoreConfig::Memory,
            v if v.eq_ignore_ascii_case("disabled") => StoreConfig::Disabled,
            v => StoreConfig::Redis(v.to_owned()),
        }
    }
}

/// How a named store is configured.
#[derive(Debug, Clone)]
pub(crate) enum NamedStore {
    /// Only where it is (from `CACHE_STORE_<NAME>_URL` or
    /// [`CacheBuilder::store_url`]); every other setting is the main cache's.
    Url(StoreConfig),
    /// Configured in full.
    Builder(Box<CacheBuilder>),
}

/// The environment variable that configures the named store `name`.
pub(crate) fn store_env_var(name: &str) -> String {
    format!("CACHE_STORE_{}_URL", name.to_ascii_uppercase())
}

/// Whether `name` is a valid store name: `[a-z][a-z0-9_]{0,31}`.
fn valid_store_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some('a'..='z'))
        && name.len() <= 32
        && chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_'))
}

/// Masks the password of a Redis URL with `***`, whatever the URL holds:
/// `user:password@` user info (the password may itself contain raw `@`,
/// `/`, `?` or `#`, which is exactly when the URL fails to parse), and
/// `password=`/`pass=` query parameters (`redis+unix://` URLs).
///
/// ```
/// use cache_runtime::redact_url;
/// assert_eq!(redact_url("redis://:hunter2@db:6379/0"), "redis://:***@db:6379/0");
/// assert_eq!(redact_url("rediss://app:s3cr3t@db"), "rediss://app:***@db");
/// assert_eq!(redact_url("redis://:a#b/c?d@db/1"), "redis://:***@db/1");
/// assert_eq!(redact_url("redis+unix:///tmp/r.sock?db=1&pass=hunter2"), "redis+unix:///tmp/r.sock?db=1&pass=***");
/// assert_eq!(redact_url("redis://db:6379"), "redis://db:6379");
/// ```
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.find("://") {
        Some(i) => url.split_at(i + 3),
        None => ("", url),
    };
    // Host names never contain `@`, so the last `@` ends the user info even
    // when the password holds characters that would otherwise end it.
    let rest = match rest.rfind('@') {
        Some(at) => {
            let userinfo = &rest[..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            if userinfo.contains(':') {
                format!("{user}:***{}", &rest[at..])
            } else {
                format!("***{}", &rest[at..])
            }
        }
        None => rest.to_owned(),
    };
    let masked = mask_query_passwords(&rest);
    format!("{scheme}{masked}")
}

fn mask_query_passwords(s: &str) -> String {
    let Some(q) = s.find('?') else {
        return s.to_owned();
    };
    let params: Vec<String> = s[q + 1..]
        .split('&')
        .map(|kv| match kv.split_once('=') {
            Some((k, _))
                if k.eq_ignore_ascii_case("pass") || k.eq_ignore_ascii_case("password") =>
            {
                format!("{k}=***")
            }
            _ => kv.to_owned(),
        })
        .collect();
    format!("{}?{}", &s[..q], params.join("&"))
}

/// Builds a [`Cache`]. Start from [`Cache::builder`] (in-memory store) or
/// [`CacheBuilder::from_env`].
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), cache_runtime::ConfigError> {
/// use std::time::Duration;
/// use cache_runtime::Cache;
///
/// let cache = Cache::builder()
///     .namespace("shop")
///     .default_ttl(Duration::from_secs(600))
///     .max_entries(50_000)
///     .build()
///     .await?;
/// assert_eq!(cache.namespace(), "shop");
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `.build().await`"]
pub struct CacheBuilder {
    pub(crate) store: StoreConfig,
    pub(crate) namespace: String,
    pub(crate) default_ttl: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) op_timeout: Duration,
    pub(crate) max_entries: u64,
    pub(crate) max_key_part_len: usize,
    pub(crate) breaker_threshold: u32,
    pub(crate) breaker_open_for: Duration,
    pub(crate) invalidation_retry_for: Duration,
    pub(crate) scan_count: usize,
    pub(crate) delete_batch: usize,
    pub(crate) policy: Policy,
    pub(crate) format: Format,
    pub(crate) enforce_tenants: bool,
    pub(crate) tag_version_reuse: Duration,
    pub(crate) stores: BTreeMap<String, NamedStore>,
    /// PEM certificates to trust for `rediss://` instead of the system's.
    pub(crate) tls_ca_file: Option<PathBuf>,
    /// PEM client certificate and key for mutual TLS.
    pub(crate) tls_client: Option<(PathBuf, PathBuf)>,
    pub(crate) near: NearOptions,
    #[cfg(feature = "testing")]
    pub(crate) interpose: Option<crate::testing::Interpose>,
    /// The memory store to use instead of a new one (feature `testing`);
    /// `Some(None)`: asked for, but the cache given has none.
    #[cfg(feature = "testing")]
    pub(crate) shared_memory: Option<Option<crate::store::MemoryStore>>,
}

impl Default for CacheBuilder {
    fn default() -> Self {
        CacheBuilder {
            store: StoreConfig::Memory,
            namespace: "cache".to_owned(),
            default_ttl: Duration::from_secs(3600),
            connect_timeout: Duration::from_secs(1),
            op_timeout: Duration::from_millis(200),
            max_entries: 100_000,
            max_key_part_len: 128,
            breaker_threshold: 5,
            breaker_open_for: Duration::from_secs(1),
            invalidation_retry_for: Duration::from_secs(30),
            scan_count: 1000,
            delete_batch: 500,
            policy: Policy::default(),
            format: Format::default(),
            enforce_tenants: false,
            tag_version_reuse: Duration::ZERO,
            stores: BTreeMap::new(),
            tls_ca_file: None,
            tls_client: None,
            near: NearOptions::default(),
            #[cfg(feature = "testing")]
            interpose: None,
            #[cfg(feature = "testing")]
            shared_memory: None,
        }
    }
}

/// Environment variables read by [`CacheBuilder::from_env`] (`CACHE_STORE_<NAME>_URL`
/// stands for one variable per named store).
pub const ENV_VARS: &[&str] = &[
    "REDIS_URL",
    "REDIS_CLUSTER_URLS",
    "CACHE_DISABLED",
    "CACHE_NAMESPACE",
    "CACHE_DEFAULT_TTL",
    "CACHE_CONNECT_TIMEOUT",
    "CACHE_OP_TIMEOUT",
    "CACHE_MAX_ENTRIES",
    "CACHE_CODEC",
    "CACHE_COMPRESSION",
    "CACHE_COMPRESS_ABOVE",
    "CACHE_ENFORCE_TENANTS",
    "CACHE_TAG_VERSION_REUSE",
    "CACHE_NEAR",
    "CACHE_NEAR_CAPACITY",
    "CACHE_NEAR_MAX_TTL",
    "CACHE_STORE_<NAME>_URL",
    "CACHE_TLS_CA_FILE",
    "CACHE_TLS_CERT_FILE",
    "CACHE_TLS_KEY_FILE",
];

impl CacheBuilder {
    /// Reads the process environment:
    ///
    /// | variable | meaning | default |
    /// |---|---|---|
    /// | `REDIS_URL` | `redis://[user:password@]host[:port][/db]`; unset: in-memory store | unset |
    /// | `REDIS_CLUSTER_URLS` | seed nodes of a Redis Cluster, comma-separated (instead of `REDIS_URL`) | unset |
    /// | `CACHE_DISABLED` | `1`/`true`/`yes`: every call runs its body | `false` |
    /// | `CACHE_NAMESPACE` | first key segment | `cache` |
    /// | `CACHE_DEFAULT_TTL` | TTL of functions without `ttl`: seconds or `90s`, `5m`, `1h`, `1d` | `1h` |
    /// | `CACHE_CONNECT_TIMEOUT` | Redis connect timeout | `1s` |
    /// | `CACHE_OP_TIMEOUT` | bound on each Redis operation | `200ms` |
    /// | `CACHE_MAX_ENTRIES` | capacity of the in-memory store | `100000` |
    /// | `CACHE_CODEC` | `json`, `msgpack`, `postcard` (the last two are cargo features) | `json` |
    /// | `CACHE_COMPRESSION` | `none`, `lz4`, `zstd`, `zstd:<level>` (cargo features) | `none` |
    /// | `CACHE_COMPRESS_ABOVE` | compress encoded values of at least this many bytes | `1024` |
    /// | `CACHE_ENFORCE_TENANTS` | `true`: calls outside [`Cache::with_tenant`] bypass the cache | `false` |
    /// | `CACHE_TAG_VERSION_REUSE` | how long a process reuses tag versions it read | `0` (off) |
    /// | `CACHE_NEAR` | `false`: `near = true` functions read Redis like the others | `true` |
    /// | `CACHE_NEAR_CAPACITY` | most entries of the near tier, per store | `10000` |
    /// | `CACHE_NEAR_MAX_TTL` | longest life of a near entry, whatever its Redis TTL | `5m` |
    /// | `CACHE_STORE_<NAME>_URL` | the named store `<name>`: a Redis URL, `memory` or `disabled` | unset |
    /// | `CACHE_TLS_CA_FILE` | PEM certificates to trust for `rediss://` (feature `tls`) | the system's roots |
    /// | `CACHE_TLS_CERT_FILE`, `CACHE_TLS_KEY_FILE` | PEM client certificate and key, for servers that require them (`tls-auth-clients`) | unset |
    ///
    /// A value that does not parse is a [`ConfigError::InvalidEnv`].
    pub fn from_env() -> Result<Self, ConfigError> {
        // Named stores: the ones `#[cached(store = ..)]` uses, and any other
        // `CACHE_STORE_<NAME>_URL` set (for stores used by hand).
        let extra: Vec<String> = std::env::vars()
            .filter_map(|(var, _)| {
                var.strip_prefix("CACHE_STORE_")?
                    .strip_suffix("_URL")
                    .map(str::to_ascii_lowercase)
            })
            .collect();
        Self::from_lookup_with(|var| std::env::var(var).ok(), extra)
    }

    /// Like [`from_env`](Self::from_env), reading variables through `lookup`
    /// (for tests, or a configuration system of your own).
    ///
    /// ```
    /// use cache_runtime::{CacheBuilder, ConfigError};
    /// let err = CacheBuilder::from_lookup(|var| (var == "CACHE_DEFAULT_TTL").then(|| "soon".to_owned()))
    ///     .unwrap_err();
    /// assert!(matches!(err, ConfigError::InvalidEnv { var: "CACHE_DEFAULT_TTL", .. }));
    /// ```
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        Self::from_lookup_with(lookup, Vec::new())
    }

    fn from_lookup_with(
        lookup: impl Fn(&str) -> Option<String>,
        extra_stores: Vec<String>,
    ) -> Result<Self, ConfigError> {
        let mut b = CacheBuilder::default();
        let url = lookup("REDIS_URL").filter(|u| !u.trim().is_empty());
        let cluster = lookup("REDIS_CLUSTER_URLS").filter(|u| !u.trim().is_empty());
        match (url, cluster) {
            (Some(_), Some(urls)) => {
                return Err(env_err(
                    "REDIS_CLUSTER_URLS",
                    urls.split(',').map(redact_url).collect::<Vec<_>>().join(","),
                    "REDIS_URL is set too: set one of them (a single server, or a cluster's seed nodes)"
                        .to_owned(),
                ));
            }
            (Some(url), None) => b = b.redis_url(url),
            (None, Some(urls)) => {
                b = b.redis_cluster(
                    urls.split(',')
                        .map(str::trim)
                        .filter(|u| !u.is_empty())
                        .map(str::to_owned),
                );
            }
            (None, None) => {}
        }
        if let Some(v) = lookup("CACHE_DISABLED")
            && parse_bool("CACHE_DISABLED", v)?
        {
            b = b.disabled();
        }
        if let Some(v) = lookup("CACHE_NAMESPACE") {
            b = b.namespace(v);
        }
        let duration = |var: &'static str| -> Result<Option<Duration>, ConfigError> {
            match lookup(var) {
                None => Ok(None),
                Some(v) => parse_duration(&v)
                    .map(Some)
                    .map_err(|reason| env_err(var, v, reason)),
            }
        };
        if let Some(d) = duration("CACHE_DEFAULT_TTL")? {
            b = b.default_ttl(d);
        }
        if let Some(d) = duration("CACHE_CONNECT_TIMEOUT")? {
            b = b.connect_timeout(d);
        }
        if let Some(d) = duration("CACHE_OP_TIMEOUT")? {
            b = b.op_timeout(d);
        }
        if let Some(v) = lookup("CACHE_MAX_ENTRIES") {
            let n = v.trim().parse().map_err(|_| {
                env_err(
                    "CACHE_MAX_ENTRIES",
                    v.clone(),
                    "expected a positive integer",
                )
            })?;
            b = b.max_entries(n);
        }
        if let Some(v) = lookup("CACHE_CODEC") {
            let codec = v
                .parse::<Codec>()
                .map_err(|e| env_err("CACHE_CODEC", v.clone(), e.to_string()))?;
            b = b.codec(codec);
        }
        if let Some(v) = lookup("CACHE_COMPRESSION") {
            let compression = v
                .parse::<Compression>()
                .map_err(|e| env_err("CACHE_COMPRESSION", v.clone(), e.to_string()))?;
            b.format.compression = compression;
        }
        if let Some(v) = lookup("CACHE_COMPRESS_ABOVE") {
            b.format.compress_above = v.trim().parse().map_err(|_| {
                env_err(
                    "CACHE_COMPRESS_ABOVE",
                    v.clone(),
                    "expected a size in bytes",
                )
            })?;
        }
        if let Some(v) = lookup("CACHE_ENFORCE_TENANTS") {
            b.enforce_tenants = parse_bool("CACHE_ENFORCE_TENANTS", v)?;
        }
        if let Some(path) = lookup("CACHE_TLS_CA_FILE").filter(|p| !p.trim().is_empty()) {
            b.tls_ca_file = Some(path.into());
        }
        match (
            lookup("CACHE_TLS_CERT_FILE").filter(|p| !p.trim().is_empty()),
            lookup("CACHE_TLS_KEY_FILE").filter(|p| !p.trim().is_empty()),
        ) {
            (Some(cert), Some(key)) => b.tls_client = Some((cert.into(), key.into())),
            (None, None) => {}
            (Some(cert), None) => {
                return Err(env_err(
                    "CACHE_TLS_CERT_FILE",
                    cert,
                    "set CACHE_TLS_KEY_FILE too: a client certificate needs its key",
                ));
            }
            (None, Some(key)) => {
                return Err(env_err(
                    "CACHE_TLS_KEY_FILE",
                    key,
                    "set CACHE_TLS_CERT_FILE too: a client key needs its certificate",
                ));
            }
        }
        if let Some(d) = duration("CACHE_TAG_VERSION_REUSE")? {
            b = b.tag_version_reuse(d);
        }
        if let Some(v) = lookup("CACHE_NEAR") {
            b.near.enabled = parse_bool("CACHE_NEAR", v)?;
        }
        if let Some(v) = lookup("CACHE_NEAR_CAPACITY") {
            b.near.capacity = v.trim().parse().map_err(|_| {
                env_err(
                    "CACHE_NEAR_CAPACITY",
                    v.clone(),
                    "expected a number of entries",
                )
            })?;
        }
        if let Some(d) = duration("CACHE_NEAR_MAX_TTL")? {
            b.near.max_ttl = d;
        }
        let mut names: Vec<String> = crate::__private::store_uses()
            .map(|u| u.store.to_owned())
            .chain(extra_stores)
            .collect();
        names.sort();
        names.dedup();
        for name in names {
            if let Some(url) = lookup(&store_env_var(&name)).filter(|u| !u.trim().is_empty()) {
                b = b.store_url(name, url);
            }
        }
        Ok(b)
    }

    /// Use the Redis server at `url` (`redis://`, `rediss://` with the `tls`
    /// feature, `redis+unix://`). Checked by [`build`](Self::build).
    /// An ACL user goes in the URL: `redis://user:password@host:6379`.
    pub fn redis_url(mut self, url: impl Into<String>) -> Self {
        self.store = StoreConfig::Redis(url.into());
        self
    }

    /// Use the Redis Cluster that these seed nodes belong to (any reachable
    /// one is enough; the rest of the topology is discovered and followed
    /// through `MOVED`/`ASK` and node restarts). Same URL forms as
    /// [`redis_url`](Self::redis_url): `rediss://` for TLS (with the same
    /// certificate settings), `user:password@` for an ACL user.
    ///
    /// Every feature works on a cluster: each lease, fill and tag version
    /// touches one key, multi-key deletes are split per slot, and pattern
    /// invalidations scan every master.
    pub fn redis_cluster<I, S>(mut self, urls: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.store = StoreConfig::Cluster(urls.into_iter().map(Into::into).collect());
        self
    }

    /// Use the embedded in-memory store (the default).
    pub fn memory(mut self) -> Self {
        self.store = StoreConfig::Memory;
        self
    }

    /// Switch caching off: every call runs its body, nothing is stored.
    pub fn disabled(mut self) -> Self {
        self.store = StoreConfig::Disabled;
        self
    }

    /// The first segment of every key (default `cache`). May contain `:`;
    /// may not contain glob characters, braces, `@`, `#`, `%` or whitespace
    /// (`@` starts a tenant segment, `#` a tag's version key).
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// TTL of functions that do not set `ttl` (default 1 hour).
    pub fn default_ttl(mut self, ttl: Duration) -> Self {
        self.default_ttl = ttl;
        self
    }

    /// How long one Redis connection attempt may take (default 1 s); also
    /// the most [`build`](Self::build) waits for its start-up check.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Bound on every Redis operation, connection wait included (default
    /// 200 ms). A read that finds Redis unreachable does not try to store
    /// its result, and an invalidation that finds it unreachable hands the
    /// rest to the background retry, so a call waits at most this long for
    /// an unreachable cache (a pattern invalidation on a healthy Redis takes
    /// one bounded step per SCAN batch).
    pub fn op_timeout(mut self, timeout: Duration) -> Self {
        self.op_timeout = timeout;
        self
    }

    /// Capacity of the in-memory store, in entries (default 100,000).
    pub fn max_entries(mut self, entries: u64) -> Self {
        self.max_entries = entries;
        self
    }

    /// Interpolated values whose escaped form is longer than this many bytes
    /// are replaced by a 33-byte stable hash (default 128; at least 40).
    pub fn max_key_part_len(mut self, len: usize) -> Self {
        self.max_key_part_len = len;
        self
    }

    /// Open the circuit breaker after `failures` consecutive connection
    /// failures or timeouts, for `open_for` before a probe (default 5, 1 s).
    pub fn circuit_breaker(mut self, failures: u32, open_for: Duration) -> Self {
        self.breaker_threshold = failures;
        self.breaker_open_for = open_for;
        self
    }

    /// How long a failed invalidation is retried in the background before it
    /// is given up and counted as dropped (default 30 s).
    pub fn invalidation_retry_for(mut self, window: Duration) -> Self {
        self.invalidation_retry_for = window;
        self
    }

    /// The near tier of functions marked `#[cached(near = true)]` (default
    /// on): an in-process copy of their values in front of Redis, kept
    /// coherent across processes by Redis' client tracking. Off, they read
    /// Redis like every other function. The memory store has no near tier
    /// (it is in-process already).
    pub fn near_cache(mut self, enabled: bool) -> Self {
        self.near.enabled = enabled;
        self
    }

    /// Most entries the near tier keeps per store (default 10,000); the
    /// least useful are evicted first.
    pub fn near_capacity(mut self, entries: u64) -> Self {
        self.near.capacity = entries;
        self
    }

    /// Longest life of a near entry (default 5 minutes). Each entry also
    /// expires with the fresh part of its Redis key's TTL, read with it.
    pub fn near_max_ttl(mut self, ttl: Duration) -> Self {
        self.near.max_ttl = ttl;
        self
    }

    /// The `COUNT` hint of each `SCAN` step of a pattern invalidation (default 1000).
    pub fn scan_count(mut self, count: usize) -> Self {
        self.scan_count = count;
        self
    }

    /// Cross-process leases on misses (default on): N processes missing one
    /// key run the body once, and a reader that started before an
    /// invalidation can not store what it read. Off: plain cache-aside
    /// (single flight within the process stays on).
    pub fn leases(mut self, on: bool) -> Self {
        self.policy.leases = on;
        self
    }

    /// How long a lease holds (default 5 s): longer than the slowest body,
    /// since a holder still running past it loses the lease and its result
    /// is not stored. A crashed holder delays others by at most this.
    /// Per function: `#[cached(lease_ttl = "10s")]`.
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.policy.lease_ttl = ttl;
        self
    }

    /// How long a caller waits for another process's lease to be filled
    /// before it runs the body itself, without storing (default 5 s).
    pub fn lease_wait(mut self, wait: Duration) -> Self {
        self.policy.lease_wait = wait;
        self
    }

    /// Early refresh for every read function (default off, `0.0`): the XFetch
    /// `beta`; `1.0` is the paper's recommended value, larger refreshes
    /// earlier. Per function: `#[cached(early_refresh = true)]`.
    pub fn early_refresh(mut self, beta: f64) -> Self {
        self.policy.early_refresh = beta;
        self
    }

    /// Serve an expired value for up to `window` past its TTL while one
    /// caller refreshes it (default off). Per function:
    /// `#[cached(stale_while_revalidate = "30s")]`.
    pub fn stale_while_revalidate(mut self, window: Duration) -> Self {
        self.policy.stale_while_revalidate = window;
        self
    }

    /// When the body fails, return a value expired for up to `window`
    /// instead of the error (default off). Per function:
    /// `#[cached(stale_if_error = "5m")]`.
    pub fn stale_if_error(mut self, window: Duration) -> Self {
        self.policy.stale_if_error = window;
        self
    }

    /// Encode values with `codec` (default [`Codec::Json`], plain JSON that
    /// any client can read). Every value records the codec it was written
    /// with, so switching codecs never mis-decodes an old value.
    pub fn codec(mut self, codec: Codec) -> Self {
        self.format.codec = codec;
        self
    }

    /// Compress encoded values of at least `above` bytes with `compression`
    /// (default none); a value is stored compressed only if that makes it
    /// smaller.
    pub fn compression(mut self, compression: Compression, above: usize) -> Self {
        self.format.compression = compression;
        self.format.compress_above = above;
        self
    }

    /// Tenant isolation (default off): with `true`, a `#[cached]` call (or
    /// invalidation) made outside [`Cache::with_tenant`] runs its body and
    /// touches no key at all, counted in
    /// [`Stats::tenant_bypasses`](crate::Stats::tenant_bypasses): a request
    /// that lost its tenant can never read or fill a shared entry.
    pub fn enforce_tenants(mut self, on: bool) -> Self {
        self.enforce_tenants = on;
        self
    }

    /// Reuse tag versions this process has read for up to `window` (default
    /// zero: a tagged lookup reads its tags' versions in the same round trip
    /// as the value). With a window, a hit on a tagged entry costs what an
    /// untagged one does, and an invalidation made by *another* process may
    /// go unseen here for up to `window`: entries invalidated by tag can be
    /// served that much longer. Invalidations made by this process are seen
    /// at once.
    pub fn tag_version_reuse(mut self, window: Duration) -> Self {
        self.tag_version_reuse = window;
        self
    }

    /// Runs every operation of this cache's store through `hook`
    /// (feature `testing`; see [`crate::testing`]). Named stores take
    /// their own.
    #[cfg(feature = "testing")]
    pub fn interpose(mut self, hook: crate::testing::Interpose) -> Self {
        self.interpose = Some(hook);
        self
    }

    /// Uses the embedded store of `other` (built with the memory store)
    /// instead of a new one (feature `testing`): several handles then share
    /// one store with separate connections' worth of state (single-flight
    /// maps, counters), as processes share one Redis. For simulations of
    /// several processes without Redis. [`build`](Self::build) fails with
    /// [`ConfigError::InvalidSetting`] if `other` has no memory store.
    #[cfg(feature = "testing")]
    pub fn share_memory_store(mut self, other: &crate::Cache) -> Self {
        self.store = StoreConfig::Memory;
        self.shared_memory = Some(other.memory_store());
        self
    }

    /// A named store for `#[cached(store = "name")]` functions, configured in
    /// full by `builder` (its own store, namespace, TTL, codec...).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), cache_runtime::ConfigError> {
    /// use cache_runtime::Cache;
    /// let cache = Cache::builder()
    ///     .store("flags", Cache::builder().memory().namespace("flags"))
    ///     .build()
    ///     .await?;
    /// assert_eq!(cache.store("flags").map(Cache::namespace), Some("flags"));
    /// # Ok(()) }
    /// ```
    pub fn store(mut self, name: impl Into<String>, builder: CacheBuilder) -> Self {
        self.stores
            .insert(name.into(), NamedStore::Builder(Box::new(builder)));
        self
    }

    /// A named store at `url` (a Redis URL, `memory` or `disabled`), with
    /// every other setting taken from this builder. What
    /// `CACHE_STORE_<NAME>_URL` sets.
    pub fn store_url(mut self, name: impl Into<String>, url: impl AsRef<str>) -> Self {
        self.stores.insert(
            name.into(),
            NamedStore::Url(StoreConfig::parse(url.as_ref())),
        );
        self
    }

    /// The builders of the named stores, checked: valid names, no nesting,
    /// every store a `#[cached(store = ..)]` uses is configured (a disabled
    /// cache disables them all).
    fn resolve_stores(&mut self) -> Result<(), ConfigError> {
        let bad = |reason: String| ConfigError::InvalidSetting {
            setting: "store",
            reason,
        };
        let mut resolved = BTreeMap::new();
        for (name, named) in std::mem::take(&mut self.stores) {
            if !valid_store_name(&name) {
                return Err(bad(format!(
                    "`{name}` is not a valid store name: use lowercase letters, digits and `_`, starting with a letter, at most 32 bytes"
                )));
            }
            let mut sub = match named {
                NamedStore::Url(store) => CacheBuilder {
                    store,
                    stores: BTreeMap::new(),
                    ..self.clone()
                },
                NamedStore::Builder(sub) if !sub.stores.is_empty() => {
                    return Err(bad(format!(
                        "the named store `{name}` has named stores of its own; configure them all on the main builder"
                    )));
                }
                NamedStore::Builder(sub) => *sub,
            };
            if self.store == StoreConfig::Disabled {
                sub.store = StoreConfig::Disabled;
            }
            sub.validate()?;
            resolved.insert(name, NamedStore::Builder(Box::new(sub)));
        }
        for used in crate::__private::store_uses() {
            if resolved.contains_key(used.store) {
                continue;
            }
            if self.store != StoreConfig::Disabled {
                return Err(ConfigError::UnknownStore {
                    store: used.store.to_owned(),
                    env_var: store_env_var(used.store),
                    function: used.function,
                    location: used.location,
                });
            }
            let disabled = CacheBuilder {
                store: StoreConfig::Disabled,
                stores: BTreeMap::new(),
                ..self.clone()
            };
            resolved.insert(
                used.store.to_owned(),
                NamedStore::Builder(Box::new(disabled)),
            );
        }
        self.stores = resolved;
        Ok(())
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |setting, reason: &str| {
            Err(ConfigError::InvalidSetting {
                setting,
                reason: reason.to_owned(),
            })
        };
        if let Some(c) = self.namespace.chars().find(|c| {
            matches!(
                c,
                '*' | '?' | '[' | ']' | '\\' | '{' | '}' | '#' | '%' | '@'
            ) || c.is_whitespace()
                || c.is_control()
        }) {
            return bad(
                "namespace",
                &format!(
                    "`{}` contains `{c}`; use letters, digits, `:`, `-`, `_`, `.`",
                    self.namespace
                ),
            );
        }
        if self.namespace.starts_with(':') || self.namespace.ends_with(':') {
            return bad(
                "namespace",
                "must not start or end with `:` (the separator is added)",
            );
        }
        if self.default_ttl.is_zero() {
            return bad("default_ttl", "must be positive");
        }
        if self.connect_timeout.is_zero() {
            return bad("connect_timeout", "must be positive");
        }
        if self.op_timeout.is_zero() {
            return bad("op_timeout", "must be positive");
        }
        if self.max_entries == 0 {
            return bad(
                "max_entries",
                "must be at least 1 (use `.disabled()` to switch caching off)",
            );
        }
        if self.max_key_part_len < 40 {
            return bad(
                "max_key_part_len",
                "must be at least 40 (a hashed part takes 33 bytes)",
            );
        }
        if self.breaker_threshold == 0 || self.breaker_open_for.is_zero() {
            return bad("circuit_breaker", "failures and open_for must be positive");
        }
        if self.scan_count == 0 {
            return bad("scan_count", "must be positive");
        }
        if self.policy.lease_ttl.is_zero() {
            return bad("lease_ttl", "must be positive");
        }
        if self.policy.lease_wait.is_zero() {
            return bad("lease_wait", "must be positive");
        }
        #[cfg(feature = "testing")]
        if let Some(None) = self.shared_memory {
            return bad(
                "share_memory_store",
                "the cache given does not use the memory store: there is none to share",
            );
        }
        let beta = self.policy.early_refresh;
        if !beta.is_finite() || beta < 0.0 {
            return bad(
                "early_refresh",
                "must be a finite factor >= 0 (0 = off, 1 = XFetch's default)",
            );
        }
        Ok(())
    }

    /// Trust the PEM certificate(s) in `path` for `rediss://` servers,
    /// instead of the system's roots: the usual set-up for a private CA or
    /// a self-signed server certificate. Needs the `tls` feature; read and
    /// checked by [`build`](Self::build). Named stores inherit it.
    pub fn tls_ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.tls_ca_file = Some(path.into());
        self
    }

    /// Present this PEM client certificate and key to `rediss://` servers
    /// that require one (`tls-auth-clients yes`). Needs the `tls` feature;
    /// read and checked by [`build`](Self::build). Named stores inherit it.
    pub fn tls_client_cert(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.tls_client = Some((cert.into(), key.into()));
        self
    }

    /// Checks the configuration and creates the cache.
    ///
    /// With Redis, this returns promptly even if Redis is down: the
    /// connection is made lazily, calls run their bodies until Redis answers,
    /// and a warning is logged. For that log, every Redis store (named ones
    /// included) is sent a `PING` at the same time, and the build waits for
    /// the answers at most [`connect_timeout`](Self::connect_timeout) in
    /// all. Only configuration that can never work (a malformed URL, a zero
    /// timeout) is an error.
    pub async fn build(mut self) -> Result<Cache, ConfigError> {
        self.validate()?;
        self.resolve_stores()?;
        Cache::from_builder(self).await
    }
}

fn parse_bool(var: &'static str, v: String) -> Result<bool, ConfigError> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "" | "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(env_err(var, v, "expected true/false, 1/0, yes/no")),
    }
}

fn env_err(var: &'static str, value: String, reason: impl Into<String>) -> ConfigError {
    ConfigError::InvalidEnv {
        var,
        value,
        reason: reason.into(),
    }
}

/// Parses `"90"` (seconds) or a humantime duration (`"90s"`, `"5m"`, `"1h 30m"`).
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(s)
        .map_err(|e| format!("expected seconds or a duration such as `90s`, `5m`, `1h` ({e})"))
}
