//! Where values live: one trait, several backends.
//!
//! Backends are dispatched through the [`Backend`] enum rather than a trait
//! object, so a lookup is a direct call with no boxed future on the hit path.

mod disabled;
#[cfg(feature = "testing")]
mod interposed;
mod memory;
mod redis;

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;

pub(crate) use self::disabled::DisabledStore;
#[cfg(feature = "testing")]
pub(crate) use self::interposed::Wrapped;
pub(crate) use self::memory::MemoryStore;
pub(crate) use self::redis::{Connector, RedisOptions, RedisStore};
use crate::policy::BreakerState;
use crate::policy::lease::{LeaseFor, LeaseReply, Token};

/// Why a store operation did not happen. Never reaches a caller of a cached
/// function: the runtime counts it, logs it (rate-limited) and runs the body.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StoreError {
    #[error("operation timed out after {0:?}")]
    Timeout(Duration),
    #[error("circuit breaker open")]
    BreakerOpen,
    #[error("connection failed: {0}")]
    Connection(String),
    /// The key holds a value of another Redis type (a list, a hash...).
    #[error("key holds a foreign value: {0}")]
    WrongType(String),
    #[error("error reply: {0}")]
    Reply(String),
}

impl StoreError {
    /// The store did not answer: trying again within the same call would
    /// only add another wait.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            StoreError::Timeout(_) | StoreError::BreakerOpen | StoreError::Connection(_)
        )
    }
}

/// What [`Store::fetch`] read in one round trip.
#[derive(Debug, Default)]
pub(crate) struct Fetched {
    /// The raw stored bytes.
    pub value: Option<Bytes>,
    /// The key's remaining time to live, when asked for (`Duration::MAX`: no expiry).
    pub pttl: Option<Duration>,
    /// The current version of each tag asked for; `None`: the tag has no
    /// version (never used, invalidated, or expired), so no entry can match it.
    pub tags: Vec<Option<u64>>,
}

/// A tag version as stored: decimal text, readable by any client.
pub(crate) fn parse_tag_version(bytes: &[u8]) -> Option<u64> {
    std::str::from_utf8(bytes).ok()?.parse().ok()
}

/// The operations every backend provides.
pub(crate) trait Store: Send + Sync {
    /// The raw stored bytes, or `None` for a miss.
    fn get(&self, key: &str) -> impl Future<Output = Result<Option<Bytes>, StoreError>> + Send;
    /// The raw stored bytes and the key's remaining time to live (`Duration::MAX`
    /// for a key without expiry), in one round trip.
    fn get_with_ttl(
        &self,
        key: &str,
    ) -> impl Future<Output = Result<Option<(Bytes, Duration)>, StoreError>> + Send;
    /// The value (with its remaining TTL when `with_ttl`) and the current
    /// versions of `tags` (keys of tag versions), in one round trip.
    fn fetch(
        &self,
        key: &str,
        with_ttl: bool,
        tags: &[String],
    ) -> impl Future<Output = Result<Fetched, StoreError>> + Send;
    /// The current versions of `tags`, giving a fresh random version to each
    /// that has none, and keeping each for at least `ttl` (the entry about to
    /// be stored must not outlive the versions it records... or if it does,
    /// it is a miss then, never a stale hit).
    fn tag_versions(
        &self,
        tags: &[String],
        ttl: Duration,
    ) -> impl Future<Output = Result<Vec<u64>, StoreError>> + Send;
    /// Stores `value` under `key` for `ttl`, replacing whatever was there.
    fn set(
        &self,
        key: &str,
        value: Bytes,
        ttl: Duration,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Removes exact keys; returns how many existed.
    fn delete(&self, keys: &[String]) -> impl Future<Output = Result<u64, StoreError>> + Send;
    /// Removes every key matching a Redis glob pattern but `keep`; returns
    /// how many.
    fn delete_pattern(
        &self,
        pattern: &str,
        keep: Option<&str>,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;
    /// Takes a lease on `key` for `lease_ttl` (see [`crate::policy::lease`]):
    /// on an absent key, over an expired lease, or over a present value as
    /// `purpose` says.
    fn lease(
        &self,
        key: &str,
        token: &Token,
        lease_ttl: Duration,
        purpose: LeaseFor,
    ) -> impl Future<Output = Result<LeaseReply, StoreError>> + Send;
    /// Stores `value` only while `key` still holds `token`'s lease; whether it did.
    fn fill(
        &self,
        key: &str,
        token: &Token,
        value: Bytes,
        ttl: Duration,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
    /// Gives `token`'s lease back: with `restore`, puts back the value being
    /// refreshed (if any); otherwise removes the key.
    fn release(
        &self,
        key: &str,
        token: &Token,
        restore: bool,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
}

/// What kind of store a [`Cache`](crate::Cache) uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum StoreKind {
    /// A single Redis server.
    Redis,
    /// A Redis Cluster.
    Cluster,
    /// The embedded in-memory store.
    Memory,
    /// Caching switched off: every call runs its body.
    Disabled,
}

#[derive(Debug, Clone)]
pub(crate) enum Backend {
    Redis(RedisStore),
    Memory(MemoryStore),
    Disabled(DisabledStore),
    /// A store whose operations pass through a test hook.
    #[cfg(feature = "testing")]
    Interposed(interposed::InterposedStore),
}

impl Backend {
    pub fn kind(&self) -> StoreKind {
        match self {
            Backend::Redis(r) => r.kind(),
            Backend::Memory(_) => StoreKind::Memory,
            Backend::Disabled(_) => StoreKind::Disabled,
            #[cfg(feature = "testing")]
            Backend::Interposed(s) => match &s.inner {
                interposed::Wrapped::Redis(r) => r.kind(),
                interposed::Wrapped::Memory(_) => StoreKind::Memory,
            },
        }
    }

    /// This store with `hook` around each operation (the disabled store
    /// has none to hook).
    #[cfg(feature = "testing")]
    pub fn interposed(self, hook: crate::testing::Interpose) -> Self {
        let inner = match self {
            Backend::Redis(r) => interposed::Wrapped::Redis(r),
            Backend::Memory(m) => interposed::Wrapped::Memory(m),
            other => return other,
        };
        Backend::Interposed(interposed::InterposedStore { inner, hook })
    }

    pub fn breaker_state(&self) -> Option<BreakerState> {
        match self {
            Backend::Redis(r) => Some(r.breaker_state()),
            _ => None,
        }
    }
}

macro_rules! dispatch {
    ($self:ident, $s:ident => $call:expr) => {
        match $self {
            Backend::Redis($s) => $call.await,
            Backend::Memory($s) => $call.await,
            Backend::Disabled($s) => $call.await,
            #[cfg(feature = "testing")]
            Backend::Interposed($s) => $call.await,
        }
    };
}

impl Store for Backend {
    async fn get(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        dispatch!(self, s => s.get(key))
    }
    async fn get_with_ttl(&self, key: &str) -> Result<Option<(Bytes, Duration)>, StoreError> {
        dispatch!(self, s => s.get_with_ttl(key))
    }
    async fn fetch(
        &self,
        key: &str,
        with_ttl: bool,
        tags: &[String],
    ) -> Result<Fetched, StoreError> {
        dispatch!(self, s => s.fetch(key, with_ttl, tags))
    }
    async fn tag_versions(&self, tags: &[String], ttl: Duration) -> Result<Vec<u64>, StoreError> {
        dispatch!(self, s => s.tag_versions(tags, ttl))
    }
    async fn set(&self, key: &str, value: Bytes, ttl: Duration) -> Result<(), StoreError> {
        dispatch!(self, s => s.set(key, value, ttl))
    }
    async fn delete(&self, keys: &[String]) -> Result<u64, StoreError> {
        dispatch!(self, s => s.delete(keys))
    }
    async fn delete_pattern(&self, pattern: &str, keep: Option<&str>) -> Result<u64, StoreError> {
        dispatch!(self, s => s.delete_pattern(pattern, keep))
    }
    async fn lease(
        &self,
        key: &str,
        token: &Token,
        lease_ttl: Duration,
        purpose: LeaseFor,
    ) -> Result<LeaseReply, StoreError> {
        dispatch!(self, s => s.lease(key, token, lease_ttl, purpose))
    }
    async fn fill(
        &self,
        key: &str,
        token: &Token,
        value: Bytes,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        dispatch!(self, s => s.fill(key, token, value, ttl))
    }
    async fn release(&self, key: &str, token: &Token, restore: bool) -> Result<bool, StoreError> {
        dispatch!(self, s => s.release(key, token, restore))
    }
}
