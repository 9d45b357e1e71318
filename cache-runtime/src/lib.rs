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
//! assert!(get_user_key(&42).ends_with(":user:42"));
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
pub mod metrics;
mod near;
pub mod policy;
mod read;
mod stats;
mod store;
#[cfg(feature = "testing")]
pub mod testing;

#[doc(hidden)]
#[path = "private.rs"]
pub mod __private;

pub use cache::{AlreadyInstalled, Cache, Health, install, try_install};
pub use codec::{Cacheable, Codec, Compression};
pub use config::{CacheBuilder, ConfigError, ENV_VARS, redact_url};
pub use metrics::{FunctionStats, function_stats};
pub use policy::BreakerState;
pub use stats::Stats;
pub use store::StoreKind;

/// Caches an async function's result in the installed cache, invalidates
/// other functions' entries when it succeeds, or both.
///
/// # Options
///
/// | option | meaning |
/// |---|---|
/// | `prefix = "user:{user_id}"` | key template after the namespace; `{placeholders}` name parameters or field paths (`{user.id}`); `{{`/`}}` are literal braces |
/// | `id = "user_id"` | a parameter (or field path) appended to the key as `:<value>` |
/// | `ttl = 1800` / `ttl = "1h30m"` / `ttl = TTL_SECS` | seconds; a duration string in the environment's grammar (`"500ms"`, `"90s"`, `"10min"`, `"1h30m"`, `"1d"`); or a const expression in seconds (`u64`); default: the cache's default TTL. `lease_ttl`, `stale_while_revalidate` and `stale_if_error` take the same forms |
/// | `skip = [db, pool]` | parameters that do not change the result, left out of the key |
/// | `invalidate = [...]` | after success: `get_user(user_id)` (another cached function's key, type-checked), `"user:{user_id}"` (an exact key), `"user:{user_id}:posts:*"` (a pattern: `*`, `?` or `[`), `tag("user:{user_id}")` (every entry carrying that tag) |
/// | `tags = ["user:{user_id}", "posts"]` | read and write-through functions: labels for the entry, templates of the key's parameters; invalidating a tag makes every entry carrying it a miss, at the cost of one deletion |
/// | `version = 2` | appends `:v2` to the key, so a changed return type never reads entries of the old one |
/// | `store = "flags"` | use the named store `flags` ([`CacheBuilder::store`], `CACHE_STORE_FLAGS_URL`); a name that is not configured fails [`CacheBuilder::build`] |
/// | `cache_none = true` | for `Option<T>` and `Result<Option<T>, E>` returns: store `None` / `Ok(None)` too |
/// | `lease = false` | read functions: no cross-process lease on a miss (plain cache-aside); default: the cache's setting, on |
/// | `lease_ttl = "5s"` | read functions: how long a lease holds before another process may take it over; longer than the slowest body; default: the cache's setting (5 s) |
/// | `early_refresh = true` / `1.5` / `false` | read functions: recompute before the TTL runs out, with probability rising as it nears (XFetch); a number is the factor beta (`true` = 1.0, larger refreshes earlier); default: the cache's setting (off) |
/// | `stale_while_revalidate = "30s"` | read functions: for this long past the TTL, return the expired value at once while one caller recomputes it; `0` = off; default: the cache's setting (off) |
/// | `stale_if_error = "5m"` | read functions: for this long past the TTL, return the expired value when the body fails; `0` = off; default: the cache's setting (off) |
/// | `crate = "path"` | where `cache_runtime` is, if renamed |
///
/// A function with `prefix`/`id` (or with no options at all) has a key of its
/// own and is a **read** function: a hit returns the stored value without
/// running the body; a miss runs the body and stores its result. With
/// `invalidate` and no key it is a **write** function: the body always runs,
/// and the listed entries are removed after it succeeds (`Ok`, or any value
/// of a non-`Result` type). With both it is **write-through**: the body
/// always runs, the listed entries are removed and the result is stored
/// under the function's own key.
///
/// `Result<T, E>` stores only `Ok(T)`; `Option<T>` stores `Some` (and `None`
/// with `cache_none`), so a stored `None` and a miss stay distinguishable;
/// any other `T` is stored as is (decided by the type, see
/// [Companions](#companions)). The stored type must be
/// `Serialize + DeserializeOwned` ([`Cacheable`]); values are plain JSON
/// unless the cache is configured with another [`Codec`] or compression (see
/// [`codec`]).
///
/// # Tags, tenants, warming
///
/// Tags are version counters ([`policy::tags`]): an entry records its tags'
/// versions and is a miss once any has moved; invalidating a tag
/// ([`Cache::invalidate_tag`], `invalidate = [tag("...")]`) deletes one key
/// whatever it covers. [`Cache::with_tenant`] gives a task its own keyspace;
/// [`Cache::warm`] recomputes and stores every read function it calls.
///
/// # Under concurrency
///
/// Concurrent misses of one key run the body once per process (single
/// flight) and, with leases (the default), once across processes: the first
/// miss puts a lease record in the key (`SET NX`-like, with `lease_ttl`), the
/// others wait for its fill. The fill only writes while the lease is still
/// there, and an invalidation removes it, so a read whose body began before
/// an invalidation never stores what it read. A lease record starts with
/// byte `0xC1`, which no JSON (or MessagePack) value starts with. See
/// [`CacheBuilder::leases`] and the `policy` module.
///
/// **Read-after-invalidate.** Once an invalidation (typed, template,
/// pattern, tag, write-through, [`Cache::invalidate`]) has returned
/// success, no call that begins after it, in any process, returns a value
/// computed by a body that began before it: not a reader, not a follower
/// of another call's flight, not a waiter on another process's lease.
/// Every value a call returns was confirmed in the store after the call
/// began: by its own lookup, by a fill made under a lease the invalidation
/// would have removed (with the tags' versions read again), or, for a
/// follower, by such a step sent after it joined; a follower that joined
/// later looks the key up again. A write-through stores its result under a
/// lease taken before its body, or removes its key. Exceptions, each opt-in:
/// `near = true` (another process's invalidation reaches near copies
/// shortly after it returned), [`CacheBuilder::tag_version_reuse`], and
/// `lease = false`. An invalidation the store did not confirm is retried in
/// the background ([`CacheBuilder::invalidation_retry_for`]) and promises
/// nothing until it succeeds.
///
/// # Keys
///
/// `<namespace>[@<tenant>]:<prefix>[:<id>][:v<version>]`, e.g. `app:user:42`. A bare `#[cached]`
/// keys on the function's name and every non-skipped parameter, in order
/// (`app:get_user:42`). A value contributes its `Display` text, or else
/// its compact JSON when it is `Serialize` (`Option<u32>`: `2` / `null`;
/// `&[u64]`: `[1,2]`; enums, filter structs); then it is escaped (see
/// [`key`]), so keys are injective and a value can never widen a pattern.
///
/// # Compile-time checks
///
/// Each of these is a compile error pointing at the offending token: a
/// non-`async` function; an unknown or repeated option; a `ttl` that is not
/// a positive duration; a placeholder or `id` that names no parameter;
/// **a parameter that is neither part of the key nor in `skip`**; `skip`
/// naming an unknown parameter or one the key uses; `self` in a key; a
/// malformed template; a wildcard in `prefix`; a string invalidation using
/// unknown parameters; `ttl`/`skip`/`cache_none` on a function with no key;
/// `cache_none` on a return type without a `None`; `#[tracing::instrument]`
/// or `#[async_trait]` expanded before `#[cached]`; a return type that can not be
/// stored (`()`, `impl Trait`, a type without serde derives); a method with
/// no `prefix`; `lease`, `lease_ttl`, `early_refresh`,
/// `stale_while_revalidate` or `stale_if_error` on a write or write-through
/// function; `lease_ttl` with `lease = false`; a zero `lease_ttl` or
/// `early_refresh`; a tag using an unknown or skipped parameter, a wildcard,
/// or repeated; `tags` or `version` on a write function; `version = 0`; a
/// malformed `store` name; `tag(..)` without one string literal. A typed invalidation `get_user(user_id)` expands to a call of
/// `get_user_key(&user_id)`, so rustc checks that `get_user` is a cached
/// function and that the arguments have the right types.
///
/// # Companions
///
/// A function `get_user` with a key of its own gets two siblings:
/// `get_user_key(&id) -> String` (the exact key, in the cache in effect) and
/// `get_user_invalidate(&id).await`, plus a hidden `__cache_store_get_user`.
/// Companion arguments are borrowed versions of the key's parameters (`u64`
/// -> `&u64`, `String` -> `&str`). A typed invalidation `get_user(id)` calls
/// `get_user_key`, so it works wherever the target is: a free function, a
/// function declared in another function's body, an associated function
/// (`Self::find(id)`, `Repo::find(id)`).
///
/// **Methods and trait impls.** A trait impl can hold nothing but the
/// trait's items, so a `self` method gets its companions from a bare
/// `#[cached]` on its impl block (inherent or trait; above `#[async_trait]`,
/// which must run after it): it expands the `#[cached(..)]` methods and
/// puts their companions in an inherent impl of the type,
/// `Repo::get_user_key(..)`. Without it the method is cached all the same,
/// with no companions.
///
/// **Return types are decided by type, not by name.** rustc resolves the
/// return type (aliases such as `ApiResult<T>`, `io::Result<T>` or a
/// crate's own `Result<T>` included) and picks how to store it:
/// `Result<T, E>` stores only `Ok(T)` (so `E` needs no serde derive), and a
/// write function invalidates only on `Ok`; `Option<T>` and
/// `Result<Option<T>, E>` store `None` / `Ok(None)` only with
/// `cache_none = true`; any other type, even one named `Result`, is stored
/// as is.
///
/// **`#[tracing::instrument]`** goes below `#[cached]`: it then wraps the
/// whole call, and its span is entered on hits too. Above, it would only
/// see the body; that order is a compile error.
///
/// ```
/// use cache_runtime::{Cache, cached};
///
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct Post { id: u64 }
///
/// struct Posts;
///
/// #[cached]
/// impl Posts {
///     #[cached(prefix = "user:{user_id}:posts:page:{page}", ttl = "5m")]
///     async fn page(&self, user_id: u64, page: u32) -> Result<Vec<Post>, String> {
///         Ok(vec![Post { id: u64::from(page) }])
///     }
///
///     #[cached(invalidate = ["user:{user_id}:posts:*"])]
///     async fn add_post(&self, user_id: u64) -> Result<(), String> {
///         Ok(())
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let cache = Cache::builder().namespace("app").build().await.unwrap();
/// Cache::scope(cache, async {
///     assert_eq!(Posts::page_key(&7, &2), "app:user:7:posts:page:2");
///     Posts.page(7, 2).await.unwrap();
///     Posts.add_post(7).await.unwrap(); // removes every page of user 7
/// }).await;
/// # }
/// ```
pub use cache_macros::cached;
