//! Redis, in-memory and disabled stores behave the same from the caller's
//! side: one scenario (hit/miss, `Result`, `Option`, typed and pattern
//! invalidation, companions, write-through, TTL) runs against each.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use cache_runtime::{Cache, StoreKind, cached};
use common::RedisServer;

#[derive(Default)]
struct Db {
    /// Body runs of functions with their own key (reads, write-through).
    reads: AtomicU32,
    /// Body runs of write functions.
    writes: AtomicU32,
    fail: AtomicBool,
}

impl Db {
    fn read(&self) {
        self.reads.fetch_add(1, Ordering::SeqCst);
    }
    fn write(&self) {
        self.writes.fetch_add(1, Ordering::SeqCst);
    }
    fn reads(&self) -> u32 {
        self.reads.load(Ordering::SeqCst)
    }
    fn failing(&self) -> bool {
        self.fail.load(Ordering::SeqCst)
    }
    fn fail(&self, fail: bool) {
        self.fail.store(fail, Ordering::SeqCst);
    }
}

#[cached(prefix = "user", id = "user_id", ttl = 60, skip = [db])]
async fn get_user(db: &Db, user_id: u64) -> Result<String, String> {
    db.read();
    if db.failing() {
        return Err(format!("cannot load {user_id}"));
    }
    Ok(format!("user-{user_id}"))
}

#[cached(prefix = "user:{user_id}:posts:page:{page}", ttl = 60, skip = [db])]
async fn user_posts(db: &Db, user_id: u64, page: u32) -> Vec<String> {
    db.read();
    vec![format!("{user_id}/{page}")]
}

#[cached(invalidate = [get_user(user_id), "user:{user_id}:posts:*"])]
async fn update_user(db: &Db, user_id: u64) -> Result<(), String> {
    db.write();
    if db.failing() {
        return Err(format!("cannot update {user_id}"));
    }
    Ok(())
}

#[cached(prefix = "maybe", id = "n", ttl = 60, skip = [db])]
async fn maybe(db: &Db, n: u64) -> Option<u64> {
    db.read();
    n.is_multiple_of(2).then_some(n)
}

#[cached(prefix = "maybe_none", id = "n", ttl = 60, skip = [db], cache_none = true)]
async fn maybe_cache_none(db: &Db, n: u64) -> Option<u64> {
    db.read();
    n.is_multiple_of(2).then_some(n)
}

#[cached(
    prefix = "profile",
    id = "user_id",
    ttl = 60,
    skip = [db, name],
    invalidate = [get_user(user_id)]
)]
async fn save_profile(db: &Db, user_id: u64, name: &str) -> Result<String, String> {
    db.read();
    Ok(format!("{user_id}:{name}"))
}

#[cached(prefix = "profile", id = "user_id", ttl = 60, skip = [db])]
async fn get_profile(db: &Db, user_id: u64) -> Result<String, String> {
    db.read();
    Ok(format!("{user_id}:default"))
}

#[cached(prefix = "short", id = "n", ttl = "300ms", skip = [db])]
async fn short_lived(db: &Db, n: u64) -> u64 {
    db.read();
    n + 1000
}

/// Runs the scenario inside `Cache::scope(cache)`. `caching` says whether
/// bodies are expected to be skipped on hits (false for the disabled store).
/// Returns how many read bodies ran after each step, to compare stores.
async fn scenario(cache: &Cache) -> Vec<(&'static str, u32)> {
    let caching = cache.store_kind() != StoreKind::Disabled;
    // Runs of a step: `cached` with a caching store, `uncached` without.
    let expect = |cached: u32, uncached: u32| if caching { cached } else { uncached };
    let db = Db::default();
    let mut trace = Vec::new();
    let step = |trace: &mut Vec<(&'static str, u32)>, name: &'static str, db: &Db, runs: u32| {
        let total = db.reads();
        let before = trace.iter().map(|(_, n)| n).sum::<u32>();
        assert_eq!(
            total - before,
            runs,
            "{:?} store, step `{name}`: body runs",
            cache.store_kind()
        );
        trace.push((name, total - before));
    };

    Cache::scope(cache.clone(), async {
        // Hit and miss.
        assert_eq!(get_user(&db, 1).await, Ok("user-1".into()));
        assert_eq!(get_user(&db, 1).await, Ok("user-1".into()));
        step(&mut trace, "miss then hit", &db, expect(1, 2));

        // Err is not stored; Ok is, and is served even when the body would fail.
        db.fail(true);
        assert!(get_user(&db, 2).await.is_err());
        assert!(get_user(&db, 2).await.is_err());
        step(&mut trace, "errors", &db, 2);
        db.fail(false);
        assert_eq!(get_user(&db, 2).await, Ok("user-2".into()));
        db.fail(true);
        assert_eq!(
            get_user(&db, 2).await,
            if caching {
                Ok("user-2".into())
            } else {
                Err("cannot load 2".into())
            }
        );
        db.fail(false);
        step(&mut trace, "ok after errors", &db, expect(1, 2));

        // Option: None only with cache_none.
        for _ in 0..2 {
            assert_eq!(maybe(&db, 1).await, None);
        }
        step(&mut trace, "none not stored", &db, 2);
        for _ in 0..2 {
            assert_eq!(maybe(&db, 2).await, Some(2));
        }
        step(&mut trace, "some stored", &db, expect(1, 2));
        for _ in 0..2 {
            assert_eq!(maybe_cache_none(&db, 1).await, None);
        }
        step(&mut trace, "none stored with cache_none", &db, expect(1, 2));

        // Typed and pattern invalidation: user 1, not 10 or 11.
        for id in [1, 10, 11] {
            get_user(&db, id).await.unwrap();
            for page in 1..=2 {
                assert_eq!(
                    user_posts(&db, id, page).await,
                    vec![format!("{id}/{page}")]
                );
            }
        }
        step(&mut trace, "fill", &db, expect(8, 9));
        update_user(&db, 1).await.unwrap();
        for id in [1, 10, 11] {
            assert_eq!(get_user(&db, id).await, Ok(format!("user-{id}")));
            for page in 1..=2 {
                assert_eq!(
                    user_posts(&db, id, page).await,
                    vec![format!("{id}/{page}")]
                );
            }
        }
        step(&mut trace, "after update of user 1", &db, expect(3, 9));

        // A failed write invalidates nothing.
        db.fail(true);
        assert!(update_user(&db, 10).await.is_err());
        db.fail(false);
        get_user(&db, 10).await.unwrap();
        user_posts(&db, 10, 1).await;
        step(&mut trace, "after failed update", &db, expect(0, 2));

        // The companion.
        get_user_invalidate(&10).await;
        get_user(&db, 10).await.unwrap();
        get_user(&db, 11).await.unwrap();
        step(&mut trace, "after companion invalidate", &db, expect(1, 2));

        // Write-through: own result stored, listed entry removed.
        assert_eq!(save_profile(&db, 11, "ann").await, Ok("11:ann".into()));
        assert_eq!(
            get_profile(&db, 11).await,
            Ok(if caching { "11:ann" } else { "11:default" }.into())
        );
        get_user(&db, 11).await.unwrap();
        step(&mut trace, "write-through", &db, expect(2, 3));

        // TTL.
        assert_eq!(short_lived(&db, 1).await, 1001);
        assert_eq!(short_lived(&db, 1).await, 1001);
        step(&mut trace, "before expiry", &db, expect(1, 2));
        tokio::time::sleep(Duration::from_millis(450)).await;
        assert_eq!(short_lived(&db, 1).await, 1001);
        step(&mut trace, "after expiry", &db, 1);

        // Keys are built in the cache's namespace whatever the store.
        assert_eq!(get_user_key(&1), format!("{}:user:1", cache.namespace()));
    })
    .await;
    trace
}

#[tokio::test]
async fn redis_and_memory_stores_behave_the_same() {
    let server = RedisServer::start();
    let redis = Cache::builder()
        .redis_url(server.url())
        .namespace("st")
        .build()
        .await
        .unwrap();
    let memory = Cache::builder()
        .memory()
        .namespace("st")
        .build()
        .await
        .unwrap();
    assert_eq!(redis.store_kind(), StoreKind::Redis);
    assert_eq!(memory.store_kind(), StoreKind::Memory);
    assert_eq!(memory.breaker_state(), None);

    let (redis_trace, memory_trace) = tokio::join!(scenario(&redis), scenario(&memory));
    assert_eq!(redis_trace, memory_trace);
    assert_eq!(
        redis.stats(),
        memory.stats(),
        "the same counters for the same calls"
    );
    let stats = memory.stats();
    assert!(stats.hits > 0 && stats.misses > 0 && stats.invalidations > 0);
    assert_eq!(stats.bypasses, 0);
    // Redis holds what the scenario left (the short-lived entry expired
    // and was stored again).
    assert!(server.exists("st:short:1"));
    assert!(server.exists("st:profile:11"));
}

#[tokio::test]
async fn disabled_store_runs_every_body_and_counts_bypasses() {
    let disabled = Cache::builder()
        .disabled()
        .namespace("st-off")
        .build()
        .await
        .unwrap();
    assert_eq!(disabled.store_kind(), StoreKind::Disabled);
    assert_eq!(disabled.breaker_state(), None);
    let trace = scenario(&disabled).await;
    let reads: u32 = trace.iter().map(|(_, n)| n).sum();
    let stats = disabled.stats();
    assert_eq!(
        stats.bypasses,
        u64::from(reads),
        "every call with a key of its own is a bypass"
    );
    assert_eq!(
        (stats.hits, stats.misses, stats.stores, stats.invalidations),
        (0, 0, 0, 0),
        "{stats:?}"
    );
}

#[tokio::test]
async fn memory_store_is_bounded_by_max_entries() {
    let cache = Cache::builder()
        .memory()
        .max_entries(10)
        .build()
        .await
        .unwrap();
    let db = Db::default();
    Cache::scope(cache.clone(), async {
        for round in 0..2 {
            for n in 0..500 {
                assert_eq!(
                    get_user(&db, n).await,
                    Ok(format!("user-{n}")),
                    "round {round}"
                );
            }
        }
    })
    .await;
    let stats = cache.stats();
    // Unbounded, the second round would be 500 hits.
    assert!(
        stats.hits <= 50,
        "a 10-entry store served {} hits out of 500 distinct keys",
        stats.hits
    );
    assert_eq!(stats.hits + stats.misses, 1000);
}

#[tokio::test]
async fn scopes_nest_and_the_innermost_wins() {
    let outer = Cache::builder()
        .memory()
        .namespace("outer")
        .build()
        .await
        .unwrap();
    let inner = Cache::builder()
        .memory()
        .namespace("inner")
        .build()
        .await
        .unwrap();
    let db = Db::default();
    Cache::scope(outer.clone(), async {
        get_user(&db, 1).await.unwrap();
        assert_eq!(get_user_key(&1), "outer:user:1");
        Cache::scope(inner.clone(), async {
            assert_eq!(Cache::current().unwrap().namespace(), "inner");
            assert_eq!(get_user_key(&1), "inner:user:1");
            get_user(&db, 1).await.unwrap();
            get_user(&db, 1).await.unwrap();
        })
        .await;
        get_user(&db, 1).await.unwrap();
        // A spawned task does not inherit the scope.
        let spawned = tokio::spawn(async { Cache::current().is_none() })
            .await
            .unwrap();
        assert!(spawned, "a spawned task starts without the scope");
    })
    .await;
    assert_eq!(db.reads(), 2);
    assert_eq!((outer.stats().hits, outer.stats().misses), (1, 1));
    assert_eq!((inner.stats().hits, inner.stats().misses), (1, 1));
}
