//! Compile-time checked cache-aside for async Rust, over Redis or an
//! embedded in-memory store.
//!
//! ```
//! use cache_runtime::{Cache, cached};
//!
//! #[derive(Clone, serde::Serialize, serde::Deserialize)]
//! struct User { id: u64, name: String }
//!
//! // Key: "<namespace>:user:<user_id>"; `db` is not part of the key.
//! #[cached(prefix = "user", id = "user_id", ttl = "30m", skip = [db])]
//! async fn get_user(db: &Db, user_id: u64) -> Result<User, String> {
//!     db.load(user_id)
//! }
//!
//! // Runs every time; after it succeeds, the user's entry is gone.
//! #[cached(invalidate = [get_user(user_id)])]
//! async fn rename(db: &Db, user_id: u64, name: String) -> Result<(), String> {
//!     db.rename(user_id, name)
//! }
//!
//! # struct Db;
//! # impl Db {
//! #     fn load(&self, id: u64) -> Result<User, String> { Ok(User { id, name: "ann".into() }) }
//! #     fn rename(&self, _: u64, _: String) -> Result<(), String> { Ok(()) }
//! # }
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Once at start-up: REDIS_URL set -> Redis, unset -> in-memory.
//! cache_runtime::install(Cache::from_env().await?);
//!
//! let db = Db;
//! get_user(&db, 42).await?;                      // miss: runs the body, stores the result
//! get_user(&db, 42).await?;                      // hit
//! assert!(get_user::key(&42).ends_with(":user:42"));
//! rename(&db, 42, "bob".into()).await?;          // invalidates get_user(42)
//! # Ok(()) }
//! ```
//!
//! The attribute, its options and the compile-time checks are documented on
//! [`cached`]; configuration on [`CacheBuilder`].

#![warn(missing_docs)]

mod cache;
pub mod codec;
mod config;
pub mod key;
pub mod policy;
mod stats;
mod store;

#[doc(hidden)]
#[path = "private.rs"]
pub mod __private;

pub use cache::{AlreadyInstalled, Cache, install, try_install};
pub use codec::Cacheable;
pub use config::{CacheBuilder, ConfigError, ENV_VARS, redact_url};
pub use policy::BreakerState;
pub use stats::Stats;
pub use store::StoreKind;

pub use cache_macros::cached;
