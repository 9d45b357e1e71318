//! Redis through one shared, multiplexed connection (every task pipelines
//! over one socket per server): a `ConnectionManager` for a single server,
//! reconnecting on I/O errors, or a cluster connection, which routes each
//! command to its slot's master, follows `MOVED`/`ASK` and reconnects to
//! restarted nodes.
//!
//! On a cluster nothing crosses slots: every script touches one key, a
//! lookup's tag versions are read apart from the entry (`MGET`, split per
//! slot by the client), multi-key `UNLINK`s are split per slot, and a
//! pattern invalidation scans each master in turn.
//!
//! Every operation is bounded by the operation timeout and guarded by the
//! circuit breaker. When the breaker opens, the connection is replaced: a
//! server that vanished without closing the socket (a black hole) produces
//! only timeouts, which redis-rs does not treat as a reason to reconnect.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, LazyLock, OnceLock, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{Client, Cmd, Pipeline, RedisError, RedisFuture, RedisResult, Script, Value};

use super::{Fetched, Store, StoreError, StoreKind, parse_tag_version};
use crate::metrics::Op;
use crate::near::{self, Near, NearOptions, Nodes};
use crate::policy::BreakerState;
use crate::policy::breaker::{Breaker, Permit};
use crate::policy::lease::{self, Content, LeaseFor, LeaseReply, Token, classify};
use crate::policy::tags::{self, new_tag_version};
use crate::stats::Counters;

// Scripts run as EVALSHA (loaded on the first NOSCRIPT); each touches one
// key, so they run unchanged on Redis Cluster.
static LEASE: LazyLock<Script> = LazyLock::new(|| Script::new(lease::LEASE));
static FILL: LazyLock<Script> = LazyLock::new(|| Script::new(lease::FILL));
static RELEASE: LazyLock<Script> = LazyLock::new(|| Script::new(lease::RELEASE));

/// Tuning of the Redis backend, from the builder.
#[derive(Debug, Clone)]
pub(crate) struct RedisOptions {
    pub connect_timeout: Duration,
    pub op_timeout: Duration,
    pub breaker_threshold: u32,
    pub breaker_open_for: Duration,
    pub scan_count: usize,
    pub delete_batch: usize,
    /// The near tier's settings, and the key prefixes it tracks.
    pub near: NearOptions,
    pub near_prefixes: Vec<String>,
}

/// Where connections come from.
// One per store, never moved on a hot path: the sizes do not matter.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Connector {
    Single(Client),
    Cluster {
        client: ClusterClient,
        /// The first seed node's client: the template (credentials, TLS)
        /// of the near tier's connection to each master.
        seed: Client,
    },
}

impl Connector {
    /// A connection that connects in the background: creating it never waits.
    fn connect(&self, options: &RedisOptions) -> RedisResult<Conn> {
        match self {
            Connector::Single(client) => Ok(Conn::Single(ConnectionManager::new_lazy_with_config(
                client.clone(),
                manager_config(options),
            )?)),
            Connector::Cluster { client, .. } => {
                let config = redis::cluster::ClusterConfig::new()
                    .set_connection_timeout(options.connect_timeout);
                Ok(Conn::Cluster(
                    client.get_pending_async_connection_with_config(config),
                ))
            }
        }
    }
}

/// One multiplexed connection handle (cheap to clone).
#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

#[derive(Clone)]
pub(crate) struct RedisStore(Arc<Inner>);

struct Inner {
    client: Connector,
    conn: ArcSwap<Conn>,
    options: RedisOptions,
    breaker: Breaker,
    /// The cache's counters, for the operation-duration and breaker metrics.
    counters: Arc<Counters>,
    /// Whether the server takes `SET .. NX .. GET` (Redis 7.0 and later),
    /// the Lua-free lease of a miss; cleared on its first syntax error.
    set_nx_get: AtomicBool,
    /// The near tier, started by the first `near = true` read.
    near: OnceLock<Option<Arc<Near>>>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The client's connection info holds the password: never print it.
        f.debug_struct("RedisStore")
            .field("options", &self.0.options)
            .field("breaker", &self.0.breaker.state())
            .finish_non_exhaustive()
    }
}

fn manager_config(options: &RedisOptions) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(options.connect_timeout))
        // Our own timeout bounds the whole operation, connection wait included.
        .set_response_timeout(None)
        // Few, quick reconnect attempts per trigger: a request waiting on a
        // reconnect is bounded by the operation timeout anyway, and the next
        // request triggers a new attempt.
        .set_number_of_retries(1)
        .set_min_delay(Duration::from_millis(20))
        .set_max_delay(Duration::from_millis(500))
}

impl RedisStore {
    /// Creates the store without waiting for Redis: the connection is made
    /// lazily, so a Redis that is down at start-up delays nothing.
    pub fn new(
        client: Connector,
        options: RedisOptions,
        counters: Arc<Counters>,
    ) -> RedisResult<Self> {
        let conn = client.connect(&options)?;
        let breaker = Breaker::new(
            options.breaker_threshold,
            options.breaker_open_for,
            options.op_timeout,
        );
        Ok(RedisStore(Arc::new(Inner {
            client,
            conn: ArcSwap::from_pointee(conn),
            options,
            breaker,
            counters,
            set_nx_get: AtomicBool::new(true),
            near: OnceLock::new(),
        })))
    }

    pub fn kind(&self) -> StoreKind {
        match self.0.client {
            Connector::Single(_) => StoreKind::Redis,
            Connector::Cluster { .. } => StoreKind::Cluster,
        }
    }

    /// The near tier, started on first use (it needs a Tokio runtime for
    /// its tracking connections); `None` when switched off.
    pub fn near(&self) -> Option<&Arc<Near>> {
        self.0
            .near
            .get_or_init(|| {
                let options = &self.0.options;
                if !options.near.enabled {
                    return None;
                }
                let runtime = tokio::runtime::Handle::try_current().ok()?;
                let near = Arc::new(Near::new(options.near.clone()));
                runtime.spawn(near::track(
                    Arc::downgrade(&near),
                    Masters(Arc::downgrade(&self.0)),
                    options.near_prefixes.clone(),
                    options.connect_timeout,
                ));
                Some(near)
            })
            .as_ref()
    }

    /// The near tier if a read started it.
    pub fn started_near(&self) -> Option<&Arc<Near>> {
        self.0.near.get().and_then(Option::as_ref)
    }

    /// Drops `key` from this process's near tier (if started), after a
    /// change this process made to it: it reads its own writes at once,
    /// without waiting for the server's push.
    fn forget(&self, key: &str) {
        if let Some(Some(near)) = self.0.near.get() {
            near.drop_key(key);
        }
    }

    fn is_cluster(&self) -> bool {
        matches!(self.0.client, Connector::Cluster { .. })
    }

    pub fn breaker_state(&self) -> BreakerState {
        self.0.breaker.state()
    }

    /// The common lease of a miss, without Lua: `SET key <record> NX PX
    /// ttl GET` takes the lease when the key is absent and otherwise
    /// returns what is there, in one plain command (Redis 7.0 or later).
    /// `None` when the lease script must decide: the key holds another
    /// lease record (the script knows the server's clock and takes over an
    /// expired one), or the server rejects `NX` with `GET` (older than 7.0:
    /// the script is used from then on).
    ///
    /// The record's deadline is left far in the future: an empty record
    /// expires with its key (`PX`), and nothing else reads its deadline.
    async fn lease_absent(
        &self,
        key: &str,
        token: &Token,
        px: u64,
    ) -> Result<Option<LeaseReply>, StoreError> {
        const NO_DEADLINE_MS: u64 = 9_999_999_999_999;
        let record = token.record(NO_DEADLINE_MS, b"");
        let reply: Result<Option<Vec<u8>>, StoreError> = self
            .guarded(Op::Lease, |mut conn| async move {
                redis::cmd("SET")
                    .arg(key)
                    .arg(record)
                    .arg("NX")
                    .arg("PX")
                    .arg(px)
                    .arg("GET")
                    .query_async(&mut conn)
                    .await
            })
            .await;
        match reply {
            Ok(None) => Ok(Some(LeaseReply::Acquired)),
            Ok(Some(bytes)) => match classify(Bytes::from(bytes)) {
                Content::Value(bytes) => Ok(Some(LeaseReply::Held(Content::Value(bytes)))),
                Content::Leased { .. } => Ok(None),
            },
            Err(StoreError::Reply(e)) if e.contains("syntax error") => {
                self.0.set_nx_get.store(false, Relaxed);
                tracing::info!(
                    "Redis rejects SET with both NX and GET (older than 7.0): leases use the Lua script only"
                );
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// SCAN walks the keyspace (of one cluster master: `node`) in steps of
    /// COUNT without blocking the server (KEYS would); each step's matches
    /// are UNLINKed (freed off the main thread) before the next step.
    async fn delete_pattern_on(
        &self,
        node: Option<(String, u16)>,
        pattern: &str,
        keep: Option<&str>,
    ) -> Result<u64, StoreError> {
        let count = self.0.options.scan_count;
        let mut cursor: u64 = 0;
        let mut removed = 0;
        loop {
            let node = node.clone();
            let (next, mut keys): (u64, Vec<String>) = self
                .guarded(Op::Scan, |mut conn| async move {
                    let mut scan = redis::cmd("SCAN");
                    scan.arg(cursor)
                        .arg("MATCH")
                        .arg(pattern)
                        .arg("COUNT")
                        .arg(count);
                    match (node, &mut conn) {
                        (Some((host, port)), Conn::Cluster(cluster)) => {
                            let at = SingleNodeRoutingInfo::ByAddress { host, port };
                            let reply = cluster
                                .route_command(scan, RoutingInfo::SingleNode(at))
                                .await?;
                            Ok(redis::from_redis_value(reply)?)
                        }
                        _ => scan.query_async(&mut conn).await,
                    }
                })
                .await?;
            if let Some(keep) = keep {
                keys.retain(|k| k != keep);
            }
            removed += self.delete(&keys).await?;
            if next == 0 {
                return Ok(removed);
            }
            cursor = next;
        }
    }

    /// The cluster's masters (`host`, `port`), from `CLUSTER SLOTS`.
    async fn masters(&self) -> Result<Vec<(String, u16)>, StoreError> {
        let slots: Vec<Value> = self
            .guarded(Op::Scan, |mut conn| async move {
                redis::cmd("CLUSTER")
                    .arg("SLOTS")
                    .query_async(&mut conn)
                    .await
            })
            .await?;
        let masters = masters_of(slots);
        if masters.is_empty() {
            return Err(StoreError::Reply(
                "CLUSTER SLOTS named no master".to_owned(),
            ));
        }
        Ok(masters)
    }

    /// Sets the breaker gauge when the state changed (`force`: anyway).
    fn report_breaker(&self, force: bool) {
        self.0
            .counters
            .metrics
            .breaker(self.0.breaker.state(), force);
    }

    /// PING, bounded by the connect timeout, past the breaker: used at
    /// start-up to log whether Redis is reachable (it never fails the
    /// build) and by health checks. The round trip's duration when it
    /// answered. On a cluster, every master must answer.
    pub async fn ping(&self) -> Result<Duration, StoreError> {
        let mut conn = Conn::clone(&self.0.conn.load());
        let started = Instant::now();
        let answer =
            tokio::time::timeout(self.0.options.connect_timeout, ping_every_node(&mut conn)).await;
        let took = started.elapsed();
        self.0.counters.metrics.op(Op::Ping, took);
        self.report_breaker(true);
        match answer {
            Ok(Ok(())) => Ok(took),
            Ok(Err(e)) => Err(StoreError::Connection(e.to_string())),
            Err(_) => Err(StoreError::Timeout(self.0.options.connect_timeout)),
        }
    }

    /// Runs one command under the breaker and the operation timeout,
    /// recording its duration as `what`.
    async fn guarded<T, F, Fut>(&self, what: Op, op: F) -> Result<T, StoreError>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let inner = &*self.0;
        let Some(permit) = inner.breaker.permit() else {
            return Err(StoreError::BreakerOpen);
        };
        if permit == Permit::Probe {
            self.report_breaker(false);
        }
        let conn = Conn::clone(&inner.conn.load());
        let started = Instant::now();
        let answer = tokio::time::timeout(inner.options.op_timeout, op(conn)).await;
        inner.counters.metrics.op(what, started.elapsed());
        match answer {
            Ok(Ok(value)) => {
                inner.breaker.on_success(permit);
                if permit == Permit::Probe {
                    self.report_breaker(false);
                }
                Ok(value)
            }
            Ok(Err(e)) if is_connection_error(&e) => {
                self.on_failure(permit);
                Err(StoreError::Connection(e.to_string()))
            }
            Ok(Err(e)) => {
                // The server answered: the connection is healthy.
                inner.breaker.on_success(permit);
                if e.code() == Some("WRONGTYPE") {
                    Err(StoreError::WrongType(e.to_string()))
                } else {
                    Err(StoreError::Reply(e.to_string()))
                }
            }
            Err(_elapsed) => {
                self.on_failure(permit);
                Err(StoreError::Timeout(inner.options.op_timeout))
            }
        }
    }

    fn on_failure(&self, permit: Permit) {
        let inner = &*self.0;
        if inner.breaker.on_failure(permit) {
            self.report_breaker(false);
            // Replace the connection: the old one may be a black hole that
            // will never produce the I/O error redis-rs reconnects on.
            match inner.client.connect(&inner.options) {
                Ok(fresh) => inner.conn.store(Arc::new(fresh)),
                Err(e) => tracing::warn!(error = %e, "could not create a fresh Redis connection"),
            }
        }
    }
}

/// The nodes the near tier tracks: the server, or every master of the
/// cluster (asked anew at each reconnection).
struct Masters(Weak<Inner>);

impl Nodes for Masters {
    async fn addresses(&self) -> Result<Vec<Client>, String> {
        let inner = self.0.upgrade().ok_or("the cache was dropped")?;
        match &inner.client {
            Connector::Single(client) => Ok(vec![near::client_at(client, None)?]),
            Connector::Cluster { seed, .. } => {
                let store = RedisStore(inner.clone());
                let masters = store.masters().await.map_err(|e| e.to_string())?;
                masters
                    .iter()
                    .map(|(host, port)| near::client_at(seed, Some((host, *port))))
                    .collect()
            }
        }
    }
}

/// The masters (`host`, `port`) named by a `CLUSTER SLOTS` reply.
fn masters_of(slots: Vec<Value>) -> Vec<(String, u16)> {
    let mut masters = Vec::new();
    for range in slots {
        // [start, end, [host, port, id, ..], replicas..]
        let Value::Array(range) = range else { continue };
        let Some(Value::Array(master)) = range.get(2) else {
            continue;
        };
        let host = match master.first() {
            Some(Value::BulkString(h)) => String::from_utf8_lossy(h).into_owned(),
            Some(Value::SimpleString(h)) => h.clone(),
            _ => continue,
        };
        let Some(Value::Int(port)) = master.get(1) else {
            continue;
        };
        let Ok(port) = u16::try_from(*port) else {
            continue;
        };
        if !masters.contains(&(host.clone(), port)) {
            masters.push((host, port));
        }
    }
    masters
}

/// PING the server, or each master of a cluster by its address (a PING
/// through the cluster connection only reaches the nodes it holds a
/// connection to, so a dead master would go unnoticed).
async fn ping_every_node(conn: &mut Conn) -> RedisResult<()> {
    let Conn::Cluster(cluster) = conn else {
        return redis::cmd("PING").query_async(conn).await;
    };
    let slots: Vec<Value> = redis::cmd("CLUSTER")
        .arg("SLOTS")
        .query_async(cluster)
        .await?;
    for (host, port) in masters_of(slots) {
        let at = SingleNodeRoutingInfo::ByAddress { host, port };
        cluster
            .route_command(redis::cmd("PING"), RoutingInfo::SingleNode(at))
            .await?;
    }
    Ok(())
}

/// A `PTTL` reply: `-1` (no expiry) is `Duration::MAX`, `-2` (gone) zero.
fn pttl_duration(pttl: i64) -> Duration {
    match u64::try_from(pttl) {
        Ok(ms) => Duration::from_millis(ms),
        Err(_) if pttl == -1 => Duration::MAX,
        Err(_) => Duration::ZERO,
    }
}

fn is_connection_error(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || e.is_unrecoverable_error()
}

impl Store for RedisStore {
    async fn get(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        let value: Option<Vec<u8>> = self
            .guarded(Op::Get, |mut conn| async move {
                redis::cmd("GET").arg(key).query_async(&mut conn).await
            })
            .await?;
        Ok(value.map(Bytes::from))
    }

    async fn get_with_ttl(&self, key: &str) -> Result<Option<(Bytes, Duration)>, StoreError> {
        // One round trip; not atomic, which only matters if the key vanishes
        // between the two (PTTL -2): the value read is then still returned.
        let (value, pttl): (Option<Vec<u8>>, i64) = self
            .guarded(Op::Fetch, |mut conn| async move {
                redis::pipe()
                    .cmd("GET")
                    .arg(key)
                    .cmd("PTTL")
                    .arg(key)
                    .query_async(&mut conn)
                    .await
            })
            .await?;
        Ok(value.map(|v| (Bytes::from(v), pttl_duration(pttl))))
    }

    async fn fetch(
        &self,
        key: &str,
        with_ttl: bool,
        tags: &[String],
    ) -> Result<Fetched, StoreError> {
        let cluster = self.is_cluster();
        let replies: Vec<Value> = self
            .guarded(Op::Fetch, |mut conn| async move {
                let mut pipe = redis::pipe();
                pipe.cmd("GET").arg(key);
                if with_ttl {
                    pipe.cmd("PTTL").arg(key);
                }
                if !cluster || tags.is_empty() {
                    // One pipeline of single-key commands.
                    for tag in tags {
                        pipe.cmd("GET").arg(tag);
                    }
                    return pipe.query_async(&mut conn).await;
                }
                // On a cluster the tags live in other slots than the entry
                // (a pipeline must not cross slots): read them at the same
                // time with one MGET, which the client splits per slot.
                let mut tag_conn = conn.clone();
                let mut mget = redis::cmd("MGET");
                mget.arg(tags);
                let (mut entry, versions): (Vec<Value>, Vec<Value>) =
                    futures_util::future::try_join(
                        pipe.query_async(&mut conn),
                        mget.query_async(&mut tag_conn),
                    )
                    .await?;
                entry.extend(versions);
                Ok(entry)
            })
            .await?;
        let mut replies = replies.into_iter();
        let bytes = |v: Option<Value>| match v {
            Some(Value::BulkString(b)) => Some(b),
            _ => None,
        };
        let value = bytes(replies.next()).map(Bytes::from);
        let pttl = if with_ttl {
            match replies.next() {
                Some(Value::Int(ms)) => Some(pttl_duration(ms)),
                _ => Some(Duration::ZERO),
            }
        } else {
            None
        };
        let tags = replies
            .map(|v| bytes(Some(v)).and_then(|b| parse_tag_version(&b)))
            .collect();
        Ok(Fetched { value, pttl, tags })
    }

    async fn tag_versions(&self, tags: &[String], ttl: Duration) -> Result<Vec<u64>, StoreError> {
        let px = (ttl.as_millis() as u64).max(1);
        let cluster = self.is_cluster();
        let versions: Vec<Vec<u8>> = self
            .guarded(Op::Tags, |mut conn| async move {
                // EVAL, not EVALSHA: a pipeline can not reload a script on
                // NOSCRIPT, and the server caches the compiled script anyway.
                let ensure = |tag: &String| {
                    let mut cmd = redis::cmd("EVAL");
                    cmd.arg(tags::ENSURE)
                        .arg(1)
                        .arg(tag)
                        .arg(new_tag_version())
                        .arg(px);
                    cmd
                };
                if cluster {
                    // Each tag in its own slot: one command each, at once.
                    let calls = tags.iter().map(|tag| {
                        let mut conn = conn.clone();
                        let cmd = ensure(tag);
                        async move { cmd.query_async::<Vec<u8>>(&mut conn).await }
                    });
                    return futures_util::future::try_join_all(calls).await;
                }
                let mut pipe = redis::pipe();
                for tag in tags {
                    pipe.add_command(ensure(tag));
                }
                pipe.query_async(&mut conn).await
            })
            .await?;
        versions
            .iter()
            .map(|v| {
                parse_tag_version(v).ok_or_else(|| {
                    StoreError::Reply(format!(
                        "a tag version is not a number: {:?}",
                        String::from_utf8_lossy(v)
                    ))
                })
            })
            .collect()
    }

    async fn set(&self, key: &str, value: Bytes, ttl: Duration) -> Result<(), StoreError> {
        // PX keeps sub-second TTLs exact; at least 1 ms (PX 0 is an error).
        let px = (ttl.as_millis() as u64).max(1);
        let set = self
            .guarded(Op::Set, |mut conn| async move {
                redis::cmd("SET")
                    .arg(key)
                    .arg(value.as_ref())
                    .arg("PX")
                    .arg(px)
                    .query_async::<()>(&mut conn)
                    .await
            })
            .await;
        self.forget(key);
        set
    }

    async fn delete(&self, keys: &[String]) -> Result<u64, StoreError> {
        if keys.is_empty() {
            return Ok(0);
        }
        let mut removed = 0;
        for batch in keys.chunks(self.0.options.delete_batch) {
            let unlinked = self
                .guarded(Op::Delete, |mut conn| async move {
                    redis::cmd("UNLINK")
                        .arg(batch)
                        .query_async::<u64>(&mut conn)
                        .await
                })
                .await;
            for key in batch {
                self.forget(key);
            }
            removed += unlinked?;
        }
        Ok(removed)
    }

    async fn delete_pattern(&self, pattern: &str, keep: Option<&str>) -> Result<u64, StoreError> {
        let removed = if self.is_cluster() {
            // Every master holds its own part of the keyspace: scan each.
            let mut removed = 0;
            for master in self.masters().await? {
                removed += self.delete_pattern_on(Some(master), pattern, keep).await?;
            }
            removed
        } else {
            self.delete_pattern_on(None, pattern, keep).await?
        };
        if let Some(Some(near)) = self.0.near.get() {
            near.drop_pattern(pattern);
        }
        Ok(removed)
    }

    async fn lease(
        &self,
        key: &str,
        token: &Token,
        lease_ttl: Duration,
        purpose: LeaseFor,
    ) -> Result<LeaseReply, StoreError> {
        let px = (lease_ttl.as_millis() as u64).max(1);
        if purpose
            == (LeaseFor::Miss {
                stale_within: Duration::ZERO,
            })
            && self.0.set_nx_get.load(Relaxed)
            && let Some(reply) = self.lease_absent(key, token, px).await?
        {
            return Ok(reply);
        }
        let reply: Value = self
            .guarded(Op::Lease, |mut conn| async move {
                LEASE
                    .key(key)
                    .arg(token.as_str())
                    .arg(px)
                    .arg(purpose.script_arg())
                    .invoke_async(&mut conn)
                    .await
            })
            .await?;
        match reply {
            Value::Int(1) => Ok(LeaseReply::Acquired),
            Value::BulkString(bytes) => Ok(LeaseReply::Held(classify(Bytes::from(bytes)))),
            other => Err(StoreError::Reply(format!(
                "unexpected reply to the lease script: {other:?}"
            ))),
        }
    }

    async fn fill(
        &self,
        key: &str,
        token: &Token,
        value: Bytes,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let px = (ttl.as_millis() as u64).max(1);
        let prefix = token.record_prefix();
        let filled = self
            .guarded(Op::Fill, |mut conn| async move {
                FILL.key(key)
                    .arg(prefix)
                    .arg(value.as_ref())
                    .arg(px)
                    .invoke_async::<bool>(&mut conn)
                    .await
            })
            .await;
        self.forget(key);
        filled
    }

    async fn release(&self, key: &str, token: &Token, restore: bool) -> Result<bool, StoreError> {
        let prefix = token.record_prefix();
        let released = self
            .guarded(Op::Release, |mut conn| async move {
                RELEASE
                    .key(key)
                    .arg(prefix)
                    .arg(if restore { "1" } else { "0" })
                    .invoke_async::<bool>(&mut conn)
                    .await
            })
            .await;
        self.forget(key);
        released
    }
}
