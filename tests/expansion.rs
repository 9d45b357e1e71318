//! The expansion against a real Redis, in the shapes real services have:
//! `Result` aliases (errors never stored, failing writes invalidate
//! nothing), `Result<Option<T>, E>` with and without `cache_none`, and a
//! repository trait used as `Arc<dyn UserStore>` (`#[async_trait]`) and
//! through generics (native `async fn` in traits), with typed invalidations
//! of its methods.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering::SeqCst};

use async_trait::async_trait;
use cache_runtime::{Cache, cached};
use common::RedisServer;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct ApiError {
    code: u16,
    message: String,
}

/// The alias that cached errors for a whole TTL when the shape was
/// decided by name.
type ApiResult<T> = Result<T, ApiError>;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct User {
    id: u64,
    name: String,
}

/// The "database": names by id, a switch that makes it fail, and a count
/// of queries.
#[derive(Default)]
struct Db {
    names: std::sync::Mutex<std::collections::HashMap<u64, String>>,
    down: std::sync::atomic::AtomicBool,
    queries: AtomicU32,
}

impl Db {
    fn query(&self, id: u64) -> ApiResult<Option<User>> {
        self.queries.fetch_add(1, SeqCst);
        if self.down.load(SeqCst) {
            return Err(ApiError {
                code: 503,
                message: "db timeout".into(),
            });
        }
        let names = self.names.lock().unwrap();
        Ok(names.get(&id).map(|name| User {
            id,
            name: name.clone(),
        }))
    }

    fn write(&self, id: u64, name: &str) -> ApiResult<()> {
        if self.down.load(SeqCst) {
            return Err(ApiError {
                code: 503,
                message: "db timeout".into(),
            });
        }
        self.names.lock().unwrap().insert(id, name.to_owned());
        Ok(())
    }
}

static DB: std::sync::LazyLock<Db> = std::sync::LazyLock::new(Db::default);

#[cached(prefix = "alias:user", id = "id", ttl = 600)]
async fn user(id: u64) -> ApiResult<User> {
    DB.query(id)?.ok_or(ApiError {
        code: 404,
        message: "no such user".into(),
    })
}

#[cached(prefix = "alias:maybe", id = "id", ttl = 600)]
async fn maybe_user(id: u64) -> ApiResult<Option<User>> {
    DB.query(id)
}

#[cached(prefix = "alias:none", id = "id", ttl = 600, cache_none = true)]
async fn maybe_user_none(id: u64) -> ApiResult<Option<User>> {
    DB.query(id)
}

#[cached(invalidate = [user(id), maybe_user(id), maybe_user_none(id)])]
async fn rename(id: u64, name: &str) -> ApiResult<()> {
    DB.write(id, name)
}

fn queries() -> u32 {
    DB.queries.load(SeqCst)
}

/// Items 1 and 7 of the expansion issue, in one sequence on one key space:
/// each step reads Redis directly to check what is (not) stored.
#[tokio::test]
async fn aliases_decide_by_type() {
    let server = RedisServer::start();
    let cache = server.builder().namespace("exp").build().await.unwrap();
    Cache::scope(cache, async {
        // An `Err` through an alias is returned, not stored.
        DB.down.store(true, SeqCst);
        let before = queries();
        for _ in 0..3 {
            assert_eq!(user(1).await.unwrap_err().code, 503);
        }
        assert_eq!(queries() - before, 3, "every call ran the body");
        assert!(!server.exists(&user_key(&1)), "the error is not in Redis");

        // `Ok` is stored as the value alone (plain JSON of `User`).
        DB.down.store(false, SeqCst);
        DB.write(1, "ann").unwrap();
        let before = queries();
        assert_eq!(user(1).await.unwrap().name, "ann");
        assert_eq!(user(1).await.unwrap().name, "ann");
        assert_eq!(queries() - before, 1, "the second call is a hit");
        let stored = server.get(&user_key(&1)).expect("stored");
        assert!(
            stored.contains(r#""name":"ann""#) && !stored.contains("Ok"),
            "{stored}"
        );

        // A write returning `ApiResult<()>` that fails invalidates nothing.
        DB.down.store(true, SeqCst);
        assert_eq!(rename(1, "bob").await.unwrap_err().code, 503);
        assert!(
            server.exists(&user_key(&1)),
            "a failed write left the entry"
        );
        DB.down.store(false, SeqCst);
        rename(1, "bob").await.unwrap();
        assert!(
            !server.exists(&user_key(&1)),
            "a successful write removed it"
        );
        assert_eq!(user(1).await.unwrap().name, "bob");

        // `Ok(None)` is not stored without `cache_none`...
        let before = queries();
        assert_eq!(maybe_user(2).await, Ok(None));
        assert_eq!(maybe_user(2).await, Ok(None));
        assert_eq!(queries() - before, 2);
        assert!(!server.exists(&maybe_user_key(&2)));
        // ...and is, as JSON `null`, with it.
        let before = queries();
        assert_eq!(maybe_user_none(2).await, Ok(None));
        assert_eq!(maybe_user_none(2).await, Ok(None));
        assert_eq!(queries() - before, 1);
        assert!(server.exists(&maybe_user_none_key(&2)));
        // `Ok(Some(_))` is stored by both; an `Err` by neither.
        assert_eq!(maybe_user(1).await.unwrap().unwrap().name, "bob");
        assert!(server.exists(&maybe_user_key(&1)));
        DB.down.store(true, SeqCst);
        assert!(maybe_user_none(3).await.is_err());
        assert!(!server.exists(&maybe_user_none_key(&3)));
        DB.down.store(false, SeqCst);
        // A write of user 2 drops its stored `None`.
        rename(2, "cy").await.unwrap();
        assert_eq!(
            maybe_user_none(2).await.unwrap().map(|u| u.name).as_deref(),
            Some("cy")
        );
    })
    .await;
}

/// The usual repository shape: a trait, implemented for the database,
/// held as `Arc<dyn UserStore>` by the handlers.
#[async_trait]
trait UserStore: Send + Sync {
    async fn get_user(&self, id: u64) -> ApiResult<User>;
    async fn rename(&self, id: u64, name: &str) -> ApiResult<()>;
}

struct PgStore {
    db: Db,
}

#[cached]
#[async_trait]
impl UserStore for PgStore {
    #[cached(prefix = "dyn:user", id = "id", ttl = 600)]
    async fn get_user(&self, id: u64) -> ApiResult<User> {
        self.db.query(id)?.ok_or(ApiError {
            code: 404,
            message: "no such user".into(),
        })
    }

    #[cached(invalidate = [PgStore::get_user(id)])]
    async fn rename(&self, id: u64, name: &str) -> ApiResult<()> {
        self.db.write(id, name)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trait_objects_cache_and_invalidate() {
    let server = RedisServer::start();
    let cache = server.builder().namespace("exp").build().await.unwrap();
    let pg = PgStore { db: Db::default() };
    pg.db.write(7, "ann").unwrap();
    let store: Arc<dyn UserStore> = Arc::new(pg);
    // Handlers run on spawned tasks: the futures must be `Send`.
    let handler = {
        let store = store.clone();
        move |id| {
            let store = store.clone();
            tokio::spawn(Cache::scope(cache.clone(), async move {
                store.get_user(id).await
            }))
        }
    };
    assert_eq!(handler(7).await.unwrap().unwrap().name, "ann");
    assert_eq!(handler(7).await.unwrap().unwrap().name, "ann");
    let cache = server.builder().namespace("exp").build().await.unwrap();
    Cache::scope(cache, async {
        // The companion builds the key in the cache in effect.
        let key = PgStore::get_user_key(&7);
        assert_eq!(key, "exp:dyn:user:7");
        assert!(server.exists(&key), "the method's entry is in Redis");
        // Errors through the trait object are not stored either.
        assert_eq!(store.get_user(8).await.unwrap_err().code, 404);
        assert!(!server.exists(&PgStore::get_user_key(&8)));
        store.rename(7, "bob").await.unwrap();
        assert!(!server.exists(&key), "the typed invalidation removed it");
        assert_eq!(store.get_user(7).await.unwrap().name, "bob");
        PgStore::get_user_invalidate(&7).await;
        assert!(!server.exists(&key), "the companion removed it");
    })
    .await;
}

/// Native `async fn` in a trait, used through generics.
trait Counter {
    async fn count(&self, group: &str) -> u64;
}

struct Counts {
    calls: AtomicU32,
}

#[cached]
impl Counter for Counts {
    #[cached(prefix = "native:count:{group}", ttl = 600)]
    async fn count(&self, group: &str) -> u64 {
        self.calls.fetch_add(1, SeqCst);
        group.len() as u64
    }
}

async fn total<C: Counter>(counter: &C, groups: &[&str]) -> u64 {
    let mut sum = 0;
    for group in groups {
        sum += counter.count(group).await;
    }
    sum
}

#[tokio::test]
async fn native_trait_methods_through_generics() {
    let server = RedisServer::start();
    let cache = server.builder().namespace("exp").build().await.unwrap();
    Cache::scope(cache, async {
        let counts = Counts {
            calls: AtomicU32::new(0),
        };
        assert_eq!(total(&counts, &["a", "bb", "a"]).await, 4);
        assert_eq!(counts.calls.load(SeqCst), 2, "the repeated group is a hit");
        assert!(server.exists(&Counts::count_key("bb")));
    })
    .await;
}

/// Two repositories with a method of the same name, as services have.
mod repos {
    use cache_runtime::cached;

    pub struct OrgRepo;
    pub struct TeamRepo;

    #[cached]
    impl OrgRepo {
        #[cached(prefix = "label:org", id = "id", ttl = 600)]
        pub async fn get(&self, id: u64) -> u64 {
            id
        }
    }

    #[cached]
    impl TeamRepo {
        #[cached(prefix = "label:team", id = "id", ttl = 600)]
        pub async fn get(&self, id: u64) -> u64 {
            id + 1
        }
    }

    #[cached(prefix = "label:count", id = "id", ttl = 600)]
    pub async fn count(id: u64) -> u64 {
        id
    }
}

/// Item 6: `OrgRepo::get` and `TeamRepo::get` are two entries in
/// `function_stats()` (and two `cache` labels in the metrics, the same
/// string), named by module path and type.
#[tokio::test]
async fn labels_name_the_module_and_the_type() {
    let server = RedisServer::start();
    let cache = server.builder().namespace("exp").build().await.unwrap();
    Cache::scope(cache, async {
        for _ in 0..3 {
            repos::OrgRepo.get(1).await;
        }
        repos::TeamRepo.get(1).await;
        repos::count(1).await;
    })
    .await;
    let stats = cache_runtime::function_stats();
    let find = |label: &str| {
        stats
            .iter()
            .find(|s| s.name == label)
            .unwrap_or_else(|| panic!("{label} not in {stats:?}"))
    };
    let org = find("repos::OrgRepo::get");
    assert_eq!((org.hits, org.misses), (2, 1));
    let team = find("repos::TeamRepo::get");
    assert_eq!((team.hits, team.misses), (0, 1));
    assert_eq!(find("repos::count").misses, 1);
    // A free function at the crate's root keeps its bare name.
    assert!(stats.iter().all(|s| s.name != "get"), "{stats:?}");
}

/// Item 10: the runtime depends on exactly its macro's version (the
/// expansion builds the runtime's private items).
#[test]
fn the_macro_version_is_pinned() {
    let manifest = include_str!("../Cargo.toml");
    let line = manifest
        .lines()
        .find(|l| l.starts_with("cache-macros = "))
        .expect("cache-macros in [workspace.dependencies]");
    assert!(line.contains(r#"version = "="#), "{line}");
    let runtime = include_str!("../cache-runtime/Cargo.toml");
    assert!(
        runtime.contains("cache-macros = { workspace = true }"),
        "cache-runtime takes the pinned workspace dependency"
    );
}
