//! Support for testing code that uses the cache (feature `testing`).
//!
//! [`Interpose`] puts a hook around every operation a cache sends to its
//! store: before it is sent and after its reply arrived. A hook can pause
//! an operation (a reply that is slow to come back, a request that is slow
//! to arrive), record it, or yield to other tasks to explore interleavings.
//! The operation itself still reaches the real store (Redis or memory).
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), cache_runtime::ConfigError> {
//! use std::sync::{Arc, Mutex};
//! use cache_runtime::testing::{Interpose, Phase, Step};
//! use cache_runtime::{Cache, cached};
//!
//! #[cached(prefix = "n", id = "n")]
//! async fn double(n: u64) -> u64 { n * 2 }
//!
//! let seen = Arc::new(Mutex::new(Vec::new()));
//! let log = seen.clone();
//! let cache = Cache::builder()
//!     .interpose(Interpose::new(move |step: &Step<'_>| {
//!         if step.phase == Phase::Answered {
//!             log.lock().unwrap().push(format!("{:?} {}", step.op, step.key));
//!         }
//!         None
//!     }))
//!     .build()
//!     .await?;
//! Cache::scope(cache, double(21)).await;
//! assert_eq!(seen.lock().unwrap()[0], "Get cache:n:21");
//! # Ok(()) }
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// A store operation, as [`Interpose`] sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StoreOp {
    /// A lookup of an entry (`GET`, with `PTTL` when the call needs it).
    Get,
    /// A lookup of an entry and its tags' versions in one round trip; also
    /// the re-read of tag versions next to a fill.
    Fetch,
    /// Reading (and creating) tag versions before a body runs.
    TagVersions,
    /// A plain store (`SET`).
    Set,
    /// Removing exact keys (an invalidation, `UNLINK`).
    Delete,
    /// Removing the keys that match a pattern (`SCAN` + `UNLINK`).
    DeletePattern,
    /// Taking a lease.
    Lease,
    /// Filling a leased key.
    Fill,
    /// Giving a lease back.
    Release,
}

/// When a hook runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    /// Before the operation is sent.
    Sending,
    /// After its reply arrived, before the cache sees it.
    Answered,
}

/// One hook call: which operation, when, and its key (the first key, for
/// operations on several; the pattern, for a pattern deletion).
#[derive(Debug, Clone, Copy)]
pub struct Step<'a> {
    /// The operation.
    pub op: StoreOp,
    /// Before or after it.
    pub phase: Phase,
    /// Its key.
    pub key: &'a str,
}

/// What a hook may return: a future the operation waits for.
pub type Pause = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

type Hook = dyn Fn(&Step<'_>) -> Option<Pause> + Send + Sync;

/// A hook around every store operation of a cache (see the module docs),
/// installed with [`CacheBuilder::interpose`](crate::CacheBuilder::interpose).
/// The hook returns `None` to let the operation go on at once, or a future
/// to wait for first.
#[derive(Clone)]
pub struct Interpose(Arc<Hook>);

impl Interpose {
    /// Wraps a hook.
    pub fn new(hook: impl Fn(&Step<'_>) -> Option<Pause> + Send + Sync + 'static) -> Self {
        Interpose(Arc::new(hook))
    }

    pub(crate) async fn step(&self, op: StoreOp, phase: Phase, key: &str) {
        if let Some(pause) = (self.0)(&Step { op, phase, key }) {
            pause.await;
        }
    }
}

impl fmt::Debug for Interpose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Interpose(..)")
    }
}

/// The lease protocol of a cache's store, one operation at a time, for a
/// conformance suite that runs every store (Redis, Redis Cluster, an older
/// Redis without `SET .. NX .. GET`, memory) through the same scenarios.
/// The protocol is described in `cache_runtime::policy`'s lease module (a lease
/// record in the entry's own key, filled by compare-and-set). Errors are the store's
/// error messages.
#[derive(Debug, Clone)]
pub struct Protocol {
    cache: crate::Cache,
}

/// One lease attempt's identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseToken(crate::policy::lease::Token);

impl LeaseToken {
    /// A fresh token, unique across processes and attempts.
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        LeaseToken(crate::policy::lease::Token::new())
    }
}

/// What a lease is taken for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeasePurpose {
    /// A miss: leases an absent key, or a value with at most `stale_within`
    /// left to live; a fresher value is returned instead.
    Miss {
        /// How much life a value may have left and still be leased over.
        stale_within: std::time::Duration,
    },
    /// A refresh: leases over whatever value is there.
    Refresh,
}

/// The answer to a lease attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseAnswer {
    /// The lease is ours.
    Acquired,
    /// Another holder's lease, with the value it is refreshing (if any).
    Leased {
        /// The value the record carries.
        value: Option<Vec<u8>>,
    },
    /// A value that is not leased over (a fresh one, for a miss).
    Value(Vec<u8>),
}

/// What a key holds, as the protocol reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// Nothing.
    Absent,
    /// A value.
    Value(Vec<u8>),
    /// A lease record, carrying the value being refreshed (if any).
    Leased {
        /// The value the record carries.
        value: Option<Vec<u8>>,
    },
}

fn content(c: crate::policy::lease::Content) -> Content {
    use crate::policy::lease::Content as C;
    match c {
        C::Value(v) => Content::Value(v.to_vec()),
        C::Leased { value, .. } => Content::Leased {
            value: value.map(|v| v.to_vec()),
        },
    }
}

impl crate::Cache {
    /// This cache's store, seen through its lease protocol (feature `testing`).
    pub fn protocol(&self) -> Protocol {
        Protocol {
            cache: self.clone(),
        }
    }
}

impl Protocol {
    fn store(&self) -> &crate::store::Backend {
        &self.cache.inner.store
    }

    /// Takes a lease on `key` for `ttl`.
    pub async fn lease(
        &self,
        key: &str,
        token: &LeaseToken,
        ttl: std::time::Duration,
        purpose: LeasePurpose,
    ) -> Result<LeaseAnswer, String> {
        use crate::policy::lease::{LeaseFor, LeaseReply};
        use crate::store::Store;
        let purpose = match purpose {
            LeasePurpose::Miss { stale_within } => LeaseFor::Miss { stale_within },
            LeasePurpose::Refresh => LeaseFor::Refresh,
        };
        let reply = self
            .store()
            .lease(key, &token.0, ttl, purpose)
            .await
            .map_err(|e| e.to_string())?;
        Ok(match reply {
            LeaseReply::Acquired => LeaseAnswer::Acquired,
            LeaseReply::Held(c) => match content(c) {
                Content::Value(v) => LeaseAnswer::Value(v),
                Content::Leased { value } => LeaseAnswer::Leased { value },
                Content::Absent => unreachable!("a held key holds something"),
            },
        })
    }

    /// Stores `value` for `ttl` if `key` still holds `token`'s lease.
    pub async fn fill(
        &self,
        key: &str,
        token: &LeaseToken,
        value: &[u8],
        ttl: std::time::Duration,
    ) -> Result<bool, String> {
        use crate::store::Store;
        self.store()
            .fill(key, &token.0, bytes::Bytes::copy_from_slice(value), ttl)
            .await
            .map_err(|e| e.to_string())
    }

    /// Gives `token`'s lease back, restoring the value it carries or not.
    pub async fn release(
        &self,
        key: &str,
        token: &LeaseToken,
        restore: bool,
    ) -> Result<bool, String> {
        use crate::store::Store;
        self.store()
            .release(key, &token.0, restore)
            .await
            .map_err(|e| e.to_string())
    }

    /// What `key` holds, and its remaining time to live.
    pub async fn read(&self, key: &str) -> Result<(Content, Option<std::time::Duration>), String> {
        use crate::store::Store;
        let found = self
            .store()
            .get_with_ttl(key)
            .await
            .map_err(|e| e.to_string())?;
        Ok(match found {
            None => (Content::Absent, None),
            Some((bytes, ttl)) => (content(crate::policy::lease::classify(bytes)), Some(ttl)),
        })
    }

    /// Stores `value` for `ttl`, whatever `key` holds.
    pub async fn set(
        &self,
        key: &str,
        value: &[u8],
        ttl: std::time::Duration,
    ) -> Result<(), String> {
        use crate::store::Store;
        self.store()
            .set(key, bytes::Bytes::copy_from_slice(value), ttl)
            .await
            .map_err(|e| e.to_string())
    }

    /// Removes `keys` (an invalidation).
    pub async fn delete(&self, keys: &[String]) -> Result<u64, String> {
        use crate::store::Store;
        self.store().delete(keys).await.map_err(|e| e.to_string())
    }

    /// Removes every key matching `pattern` (a pattern invalidation).
    pub async fn delete_pattern(&self, pattern: &str) -> Result<u64, String> {
        use crate::store::Store;
        self.store()
            .delete_pattern(pattern, None)
            .await
            .map_err(|e| e.to_string())
    }

    /// The versions of `tags`, created where missing and kept for `ttl`.
    pub async fn ensure_tag_versions(
        &self,
        tags: &[String],
        ttl: std::time::Duration,
    ) -> Result<Vec<u64>, String> {
        use crate::store::Store;
        self.store()
            .tag_versions(tags, ttl)
            .await
            .map_err(|e| e.to_string())
    }

    /// The current versions of `tags` (`None`: no version), read with `key`.
    pub async fn tag_versions(
        &self,
        key: &str,
        tags: &[String],
    ) -> Result<Vec<Option<u64>>, String> {
        use crate::store::Store;
        self.store()
            .fetch(key, false, tags)
            .await
            .map(|f| f.tags)
            .map_err(|e| e.to_string())
    }
}
