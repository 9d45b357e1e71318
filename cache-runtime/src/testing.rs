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
