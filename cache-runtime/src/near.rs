//! The near cache: an in-process tier (moka) in front of Redis for the
//! functions marked `near = true`, holding decoded values, so a near hit
//! costs a hash lookup and a clone, no round trip and no decoding.
//!
//! # Coherence
//!
//! Every process keeps one extra connection per Redis master in RESP3 with
//! `CLIENT TRACKING ON BCAST PREFIX <ns>: PREFIX <ns>@ PREFIX <ns>#`: the
//! server pushes the name of every key of the namespace that changes, by
//! anyone (this or another process, another service sharing the keys,
//! `redis-cli`), and of every key that expires or is evicted, and a
//! `FLUSHALL`. Each pushed key is dropped from the near tier as the message
//! is read. Invalidations made by this process also drop their keys locally
//! before they return, so a process always reads its own writes.
//!
//! Server-assisted tracking was chosen over a pub/sub broadcast of our own:
//! it needs no extra command on any write path, and it sees writes this
//! library does not make. Broadcast mode was chosen over default tracking
//! because it does not depend on which connection read a key: the data
//! connection can reconnect (or be a cluster connection that moves between
//! nodes) without silently losing tracking.
//!
//! A value read from Redis is inserted only if no invalidation of its key
//! (or of any tag, for a tagged function) arrived since the read started,
//! and only while every tracking connection is up: an invalidation that
//! overtakes the reply it invalidates can not leave a stale copy behind.
//!
//! # Losing the connection
//!
//! When a tracking connection drops, or misses a heartbeat (a server that
//! stopped answering without closing the socket), the near tier is flushed
//! and serves nothing until tracking is back: it could not hear
//! invalidations meanwhile. Every entry also expires no later than the Redis
//! key it copies (its remaining fresh TTL when read) and `near_max_ttl`.

use std::any::Any;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use moka::sync::Cache as Moka;
use redis::aio::{AsyncPushSender, MultiplexedConnection, SendError};
use redis::{
    AsyncConnectionConfig, Client, ConnectionAddr, ProtocolVersion, PushInfo, PushKind, Value,
};

/// Settings of the near tier, from the builder.
#[derive(Debug, Clone)]
pub(crate) struct NearOptions {
    /// `false`: `near = true` functions read Redis like the others.
    pub enabled: bool,
    /// Most entries kept (values and tag versions counted apart).
    pub capacity: u64,
    /// No entry lives longer than this, whatever its Redis TTL.
    pub max_ttl: Duration,
    /// How often each tracking connection is checked with a PING.
    pub heartbeat: Duration,
}

impl Default for NearOptions {
    fn default() -> Self {
        NearOptions {
            enabled: true,
            capacity: 10_000,
            max_ttl: Duration::from_secs(300),
            heartbeat: Duration::from_millis(500),
        }
    }
}

/// Slots of invalidation counters: a read may insert its value only if the
/// counter of its key's slot did not move while it ran.
const SLOTS: usize = 4096;

#[derive(Clone)]
struct Entry {
    value: Arc<dyn Any + Send + Sync>,
    ttl: Duration,
    /// The tag version keys the value was stored with, and those versions.
    tags: Option<Arc<[(String, u64)]>>,
}

struct ByTtl;

impl moka::Expiry<String, Entry> for ByTtl {
    fn expire_after_create(&self, _: &String, entry: &Entry, _: Instant) -> Option<Duration> {
        Some(entry.ttl)
    }
    fn expire_after_update(
        &self,
        _: &String,
        entry: &Entry,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(entry.ttl)
    }
}

/// Where a read stood when it started: its value may be inserted only if
/// nothing that could concern it was invalidated since.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ticket {
    epoch: u64,
    slot: usize,
    slot_count: u64,
    tag_count: u64,
}

pub(crate) struct Near {
    entries: Moka<String, Entry>,
    /// Tag version keys and the versions read: a tagged near entry is
    /// served only while every version it recorded is still here.
    tag_versions: Moka<String, u64>,
    /// Every tracking connection is up and tracking.
    live: AtomicBool,
    /// Bumped on every flush and every change of `live`.
    epoch: AtomicU64,
    slots: Box<[AtomicU64]>,
    /// Bumped on every invalidation of a tag version.
    tag_count: AtomicU64,
    hasher: RandomState,
    options: NearOptions,
    /// Flushes caused by a lost or silent tracking connection.
    flushes: AtomicU64,
}

impl std::fmt::Debug for Near {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Near")
            .field("live", &self.live.load(Relaxed))
            .field("entries", &self.entries.entry_count())
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Near {
    pub fn new(options: NearOptions) -> Near {
        Near {
            entries: Moka::builder()
                .max_capacity(options.capacity)
                .expire_after(ByTtl)
                .support_invalidation_closures()
                .build(),
            tag_versions: Moka::builder()
                .max_capacity(options.capacity)
                .time_to_live(options.max_ttl)
                .build(),
            live: AtomicBool::new(false),
            epoch: AtomicU64::new(0),
            slots: (0..SLOTS).map(|_| AtomicU64::new(0)).collect(),
            tag_count: AtomicU64::new(0),
            hasher: RandomState::new(),
            options,
            flushes: AtomicU64::new(0),
        }
    }

    /// Whether the tier serves and accepts entries (tracking is up).
    pub fn is_live(&self) -> bool {
        self.live.load(Acquire)
    }

    /// How many times a lost tracking connection flushed the tier.
    pub fn flushes(&self) -> u64 {
        self.flushes.load(Relaxed)
    }

    /// The near copy of `key`, if there is one, it is a `V`, and every tag
    /// version it was stored with is still current.
    #[inline]
    pub fn get<V: Clone + 'static>(&self, key: &str) -> Option<V> {
        if !self.is_live() {
            return None;
        }
        let entry = self.entries.get(key)?;
        if let Some(tags) = &entry.tags
            && !tags
                .iter()
                .all(|(tag, version)| self.tag_versions.get(tag.as_str()) == Some(*version))
        {
            self.entries.invalidate(key);
            return None;
        }
        entry.value.downcast_ref::<V>().cloned()
    }

    fn slot(&self, key: &str) -> usize {
        (self.hasher.hash_one(key) as usize) % SLOTS
    }

    /// Taken before a read of `key` from Redis starts.
    pub fn ticket(&self, key: &str) -> Ticket {
        let slot = self.slot(key);
        Ticket {
            epoch: self.epoch.load(Acquire),
            slot,
            slot_count: self.slots[slot].load(Acquire),
            tag_count: self.tag_count.load(Acquire),
        }
    }

    fn still_valid(&self, t: &Ticket, tagged: bool) -> bool {
        self.is_live()
            && self.epoch.load(Acquire) == t.epoch
            && self.slots[t.slot].load(Acquire) == t.slot_count
            && (!tagged || self.tag_count.load(Acquire) == t.tag_count)
    }

    /// Keeps `value`, read from Redis under `ticket`, for at most `ttl`
    /// (its remaining fresh time in Redis), with the tag versions it was
    /// stored with; unless something that concerns it was invalidated
    /// since the read started.
    pub fn insert<V: Clone + Send + Sync + 'static>(
        &self,
        ticket: Ticket,
        key: &str,
        value: &V,
        ttl: Duration,
        tags: &[(String, u64)],
    ) {
        let ttl = ttl.min(self.options.max_ttl);
        let tagged = !tags.is_empty();
        if ttl.is_zero() || !self.still_valid(&ticket, tagged) {
            return;
        }
        for (tag, version) in tags {
            self.tag_versions.insert(tag.clone(), *version);
        }
        let entry = Entry {
            value: Arc::new(value.clone()),
            ttl,
            tags: tagged.then(|| tags.into()),
        };
        self.entries.insert(key.to_owned(), entry);
        // An invalidation that landed between the check and the insert
        // either removed the entry after it (fine) or bumped a counter
        // before it: then remove it here.
        if !self.still_valid(&ticket, tagged) {
            self.entries.invalidate(key);
            for (tag, _) in tags {
                self.tag_versions.invalidate(tag.as_str());
            }
        }
    }

    /// Drops `key` (a value or a tag version) and stops reads in flight
    /// from inserting what they read of it.
    pub fn drop_key(&self, key: &str) {
        self.slots[self.slot(key)].fetch_add(1, AcqRel);
        if key.contains("#tag:") {
            self.tag_count.fetch_add(1, AcqRel);
            self.tag_versions.invalidate(key);
        }
        self.entries.invalidate(key);
    }

    /// Drops every entry whose key matches the Redis glob `pattern`.
    pub fn drop_pattern(&self, pattern: &str) {
        // Reads in flight may be of any key: make them all start over.
        self.epoch.fetch_add(1, AcqRel);
        let pattern = pattern.as_bytes().to_vec();
        if pattern.windows(5).any(|w| w == b"#tag:") {
            self.tag_count.fetch_add(1, AcqRel);
            self.tag_versions.invalidate_all();
        }
        if self
            .entries
            .invalidate_entries_if(move |key, _| crate::key::glob_match(&pattern, key.as_bytes()))
            .is_err()
        {
            self.entries.invalidate_all();
        }
    }

    /// Drops everything.
    pub fn flush(&self) {
        self.epoch.fetch_add(1, AcqRel);
        self.tag_count.fetch_add(1, AcqRel);
        self.entries.invalidate_all();
        self.tag_versions.invalidate_all();
    }

    /// Tracking is up (`true`) or lost (`false`: everything is dropped).
    fn set_live(&self, live: bool) {
        if live {
            // Reads that started while tracking was down may hold values
            // whose invalidation was missed: they must not insert.
            self.epoch.fetch_add(1, AcqRel);
            self.live.store(true, Release);
        } else if self.live.swap(false, AcqRel) {
            self.flushes.fetch_add(1, Relaxed);
            self.flush();
        }
    }

    /// A message pushed on a tracking connection.
    fn on_push(&self, info: PushInfo) {
        match info.kind {
            PushKind::Invalidate => match info.data.into_iter().next() {
                Some(Value::Array(keys)) => {
                    for key in keys {
                        if let Value::BulkString(key) = key {
                            self.drop_key(&String::from_utf8_lossy(&key));
                        }
                    }
                }
                // `FLUSHALL`/`FLUSHDB`: the server says "everything".
                _ => self.flush(),
            },
            PushKind::Disconnection => self.set_live(false),
            _ => {}
        }
    }
}

/// Receives a tracking connection's pushes right in its reader (no channel,
/// no task hop): dropping keys is quick and never blocks.
struct Sink {
    near: Weak<Near>,
    /// The connection generation this sink belongs to: pushes of an old
    /// connection (its disconnection, late) are ignored.
    generation: u64,
    current: Arc<AtomicU64>,
}

impl AsyncPushSender for Sink {
    fn send(&self, info: PushInfo) -> Result<(), SendError> {
        let Some(near) = self.near.upgrade() else {
            return Err(SendError);
        };
        if self.current.load(Acquire) == self.generation {
            near.on_push(info);
        }
        Ok(())
    }
}

/// Where the tracking connections go: the server, or each master of a
/// cluster (asked anew at each reconnection, so a restarted or replaced
/// master is tracked again).
pub(crate) trait Nodes: Send + Sync + 'static {
    fn addresses(&self) -> impl Future<Output = Result<Vec<Client>, String>> + Send;
}

/// `template`'s connection settings (credentials, TLS) for `host:port`, in RESP3.
pub(crate) fn client_at(template: &Client, host: Option<(&str, u16)>) -> Result<Client, String> {
    let info = template.get_connection_info().clone();
    let addr = match (info.addr().clone(), host) {
        (addr, None) => addr,
        (ConnectionAddr::Tcp(..), Some((h, p))) => ConnectionAddr::Tcp(h.to_owned(), p),
        (
            ConnectionAddr::TcpTls {
                insecure,
                tls_params,
                ..
            },
            Some((h, p)),
        ) => ConnectionAddr::TcpTls {
            host: h.to_owned(),
            port: p,
            insecure,
            tls_params,
        },
        (addr, Some(_)) => addr,
    };
    let settings = info
        .redis_settings()
        .clone()
        .set_protocol(ProtocolVersion::RESP3);
    Client::open(info.set_addr(addr).set_redis_settings(settings)).map_err(|e| e.to_string())
}

/// Keeps the tracking connections up for as long as `near` lives: connect
/// to every node, turn broadcast tracking on, PING each every heartbeat;
/// on any failure mark the tier down (flushing it) and start over.
pub(crate) async fn track<N: Nodes>(
    near: Weak<Near>,
    nodes: N,
    prefixes: Vec<String>,
    timeout: Duration,
) {
    let current = Arc::new(AtomicU64::new(0));
    let mut pause = Duration::from_millis(50);
    loop {
        let Some(heartbeat) = near.upgrade().map(|n| n.options.heartbeat) else {
            return;
        };
        let generation = current.fetch_add(1, AcqRel) + 1;
        let connected = connect_all(&near, &nodes, &prefixes, timeout, generation, &current).await;
        match connected {
            Ok(mut conns) => {
                let Some(n) = near.upgrade() else { return };
                n.set_live(true);
                drop(n);
                pause = Duration::from_millis(50);
                'beat: loop {
                    tokio::time::sleep(heartbeat).await;
                    let Some(n) = near.upgrade() else { return };
                    if !n.is_live() {
                        break 'beat; // a connection dropped (its sink said so)
                    }
                    drop(n);
                    for conn in &mut conns {
                        let cmd = redis::cmd("PING");
                        let ping = cmd.query_async::<()>(conn);
                        if !matches!(tokio::time::timeout(timeout, ping).await, Ok(Ok(()))) {
                            break 'beat;
                        }
                    }
                }
                if let Some(n) = near.upgrade() {
                    n.set_live(false);
                }
                tracing::warn!(
                    "near cache: lost a tracking connection to Redis; flushed, reconnecting"
                );
            }
            Err(e) => {
                if let Some(n) = near.upgrade() {
                    n.set_live(false);
                }
                tracing::debug!(error = %e, "near cache: tracking connection failed");
            }
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(2));
    }
}

async fn connect_all<N: Nodes>(
    near: &Weak<Near>,
    nodes: &N,
    prefixes: &[String],
    timeout: Duration,
    generation: u64,
    current: &Arc<AtomicU64>,
) -> Result<Vec<MultiplexedConnection>, String> {
    let clients = tokio::time::timeout(timeout, nodes.addresses())
        .await
        .map_err(|_| "timed out asking for the cluster's masters".to_owned())??;
    let mut conns = Vec::with_capacity(clients.len());
    for client in clients {
        let sink = Sink {
            near: near.clone(),
            generation,
            current: current.clone(),
        };
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_push_sender(sink);
        let mut conn = client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| e.to_string())?;
        let mut tracking = redis::cmd("CLIENT");
        tracking.arg("TRACKING").arg("ON").arg("BCAST");
        for prefix in prefixes {
            tracking.arg("PREFIX").arg(prefix);
        }
        tokio::time::timeout(timeout, tracking.query_async::<()>(&mut conn))
            .await
            .map_err(|_| "CLIENT TRACKING timed out".to_owned())?
            .map_err(|e| e.to_string())?;
        conns.push(conn);
    }
    Ok(conns)
}

/// The key prefixes of namespace `ns` (entries, tenants' entries, tag
/// versions); none (every key) for an empty namespace.
pub(crate) fn prefixes(ns: &str) -> Vec<String> {
    if ns.is_empty() {
        return Vec::new();
    }
    [":", "@", "#"].iter().map(|s| format!("{ns}{s}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live() -> Near {
        let near = Near::new(NearOptions::default());
        near.set_live(true);
        near
    }

    #[test]
    fn an_invalidation_during_the_read_keeps_the_value_out() {
        let near = live();
        let t = near.ticket("ns:k");
        near.drop_key("ns:k");
        near.insert(t, "ns:k", &1u32, Duration::from_secs(5), &[]);
        assert_eq!(near.get::<u32>("ns:k"), None);
        let t = near.ticket("ns:k");
        near.insert(t, "ns:k", &2u32, Duration::from_secs(5), &[]);
        assert_eq!(near.get::<u32>("ns:k"), Some(2));
        assert_eq!(near.get::<u64>("ns:k"), None, "another type is a miss");
    }

    #[test]
    fn a_moved_tag_version_is_a_miss_and_losing_tracking_flushes() {
        let near = live();
        let tags = [("ns#tag:a".to_owned(), 7)];
        let t = near.ticket("ns:k");
        near.insert(t, "ns:k", &1u32, Duration::from_secs(5), &tags);
        assert_eq!(near.get::<u32>("ns:k"), Some(1));
        near.drop_key("ns#tag:a");
        assert_eq!(near.get::<u32>("ns:k"), None);

        let t = near.ticket("ns:j");
        near.insert(t, "ns:j", &1u32, Duration::from_secs(5), &[]);
        near.set_live(false);
        assert_eq!(near.get::<u32>("ns:j"), None);
        near.set_live(true);
        assert_eq!(near.get::<u32>("ns:j"), None, "flushed, not only hidden");
        let t = near.ticket("ns:j");
        near.set_live(false);
        near.set_live(true);
        near.insert(t, "ns:j", &1u32, Duration::from_secs(5), &[]);
        assert_eq!(near.get::<u32>("ns:j"), None, "read across an outage");
    }

    #[test]
    fn patterns_drop_matching_entries_only() {
        let near = live();
        for k in ["ns:u:1:p:1", "ns:u:1:p:2", "ns:u:10:p:1"] {
            let t = near.ticket(k);
            near.insert(t, k, &1u8, Duration::from_secs(5), &[]);
        }
        near.drop_pattern("ns:u:1:p:*");
        near.entries.run_pending_tasks();
        assert_eq!(near.get::<u8>("ns:u:1:p:1"), None);
        assert_eq!(near.get::<u8>("ns:u:1:p:2"), None);
        assert_eq!(near.get::<u8>("ns:u:10:p:1"), Some(1));
    }
}
