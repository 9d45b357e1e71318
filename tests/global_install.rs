//! `install` is process-wide and first-wins, so this binary holds the only
//! test that installs a cache.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};

use cache_runtime::{Cache, cached};
use common::RedisServer;

#[cached(prefix = "user", id = "user_id", ttl = 60, skip = [runs])]
async fn get_user(runs: &AtomicU32, user_id: u64) -> u64 {
    runs.fetch_add(1, Ordering::SeqCst);
    user_id * 2
}

#[cached(invalidate = [get_user(user_id)])]
async fn update_user(user_id: u64) -> Result<(), String> {
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn installed_cache_is_used_everywhere_outside_a_scope() {
    let server = RedisServer::start();
    let global = Cache::builder()
        .redis_url(server.url())
        .namespace("global")
        .build()
        .await
        .unwrap();
    assert!(Cache::current().is_none());
    cache_runtime::try_install(global.clone()).expect("the first install wins");
    assert_eq!(Cache::current().unwrap().namespace(), "global");

    let runs = AtomicU32::new(0);
    assert_eq!(get_user(&runs, 1).await, 2);
    assert_eq!(get_user(&runs, 1).await, 2);
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_eq!(get_user_key(&1), "global:user:1");
    assert!(server.exists("global:user:1"));

    // Spawned tasks (other threads) use it too.
    let spawned = tokio::spawn(async {
        let runs = AtomicU32::new(0);
        assert_eq!(get_user(&runs, 1).await, 2);
        runs.load(Ordering::SeqCst)
    })
    .await
    .unwrap();
    assert_eq!(spawned, 0, "a hit from another task");

    // A scope overrides it for its task only.
    let local = Cache::builder()
        .memory()
        .namespace("local")
        .build()
        .await
        .unwrap();
    Cache::scope(local.clone(), async {
        assert_eq!(get_user_key(&1), "local:user:1");
        assert_eq!(get_user(&runs, 1).await, 2);
    })
    .await;
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    assert_eq!(local.stats().misses, 1);

    update_user(1).await.unwrap();
    assert!(!server.exists("global:user:1"));

    // A second install is refused and handed back; the first stays.
    let second = Cache::builder()
        .memory()
        .namespace("second")
        .build()
        .await
        .unwrap();
    let refused = cache_runtime::try_install(second).unwrap_err();
    assert_eq!(refused.0.namespace(), "second");
    cache_runtime::install(
        Cache::builder()
            .memory()
            .namespace("third")
            .build()
            .await
            .unwrap(),
    );
    assert_eq!(Cache::current().unwrap().namespace(), "global");
    assert_eq!(global.stats().hits, 2);
}
