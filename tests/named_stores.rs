//! Named stores: `#[cached(store = "flags")]` uses a separately configured
//! store (another Redis, another logical database, or memory), configured
//! from the builder or `CACHE_STORE_<NAME>_URL`; an unconfigured name is a
//! start-up error.
//!
//! Every function of this test binary that names a store registers it, so
//! every cache built here must configure `flags`.

mod common;

use cache_runtime::{Cache, CacheBuilder, ConfigError, StoreKind, cached};
use common::RedisServer;

#[cached(prefix = "flag", id = "name", ttl = 60, store = "flags")]
async fn flag(name: String) -> bool {
    name.starts_with("on")
}

#[cached(prefix = "user", id = "id", ttl = 60)]
async fn user(id: u64) -> String {
    format!("user {id}")
}

/// A write function in the default store invalidating an entry of the named
/// store (typed), and its own store's entries.
#[cached(invalidate = [flag(name), user(id)])]
async fn toggle(name: String, id: u64) -> bool {
    true
}

/// A write function whose templates target its named store.
#[cached(invalidate = ["flag:*"], store = "flags")]
async fn reset_flags() -> bool {
    true
}

#[tokio::test]
async fn a_named_store_keeps_its_entries_apart() {
    let main = RedisServer::start();
    let flags = RedisServer::start();
    let cache = main
        .builder()
        .namespace("app")
        .store("flags", flags.builder().namespace("ff"))
        .build()
        .await
        .unwrap();
    Cache::scope(cache.clone(), async {
        assert!(flag("on-beta".to_owned()).await);
        assert!(flag("on-beta".to_owned()).await);
        assert_eq!(user(1).await, "user 1");
        assert_eq!(flag_key("on-beta"), "ff:flag:on-beta");
    })
    .await;
    assert_eq!(main.keys(), ["app:user:1"]);
    assert_eq!(flags.keys(), ["ff:flag:on-beta"]);
    let named = cache.store("flags").unwrap();
    assert_eq!((named.stats().hits, named.stats().misses), (1, 1));
    assert_eq!((cache.stats().hits, cache.stats().misses), (0, 1));

    // A typed invalidation reaches the store of the function it names.
    Cache::scope(cache.clone(), toggle("on-beta".to_owned(), 1)).await;
    assert!(flags.keys().is_empty());
    assert!(main.keys().is_empty());

    // A pattern of a named-store write function runs in that store.
    Cache::scope(cache.clone(), async {
        flag("on-a".to_owned()).await;
        user(2).await;
        reset_flags().await;
    })
    .await;
    assert!(flags.keys().is_empty());
    assert_eq!(main.keys(), ["app:user:2"]);
}

#[tokio::test]
async fn named_stores_come_from_the_environment() {
    if common::cluster_topology() {
        eprintln!(
            "skipped on a cluster: the named store is logical database 3 of the main server, \
             and a cluster has database 0 only (tests/cluster.rs covers REDIS_CLUSTER_URLS)"
        );
        return;
    }
    let main = RedisServer::start();
    let flags_db = format!("{}/3", main.url());
    let env = |var: &str| match var {
        "REDIS_URL" => Some(main.url()),
        "CACHE_NAMESPACE" => Some("envns".to_owned()),
        "CACHE_STORE_FLAGS_URL" => Some(flags_db.clone()),
        _ => None,
    };
    let cache = CacheBuilder::from_lookup(env)
        .unwrap()
        .build()
        .await
        .unwrap();
    let named = cache.store("flags").unwrap();
    assert_eq!(named.store_kind(), StoreKind::Redis);
    // Every setting but the URL is the main cache's.
    assert_eq!(named.namespace(), "envns");
    Cache::scope(cache.clone(), flag("on".to_owned())).await;
    assert_eq!(main.cli(&["-n", "3", "KEYS", "*"]), "envns:flag:on");
    assert!(main.keys().is_empty());

    let memory = CacheBuilder::from_lookup(|var| {
        (var == "CACHE_STORE_FLAGS_URL").then(|| "memory".to_owned())
    })
    .unwrap()
    .build()
    .await
    .unwrap();
    assert_eq!(
        memory.store("flags").unwrap().store_kind(),
        StoreKind::Memory
    );
}

#[tokio::test]
async fn an_unconfigured_store_is_a_start_up_error() {
    let err = Cache::builder().build().await.unwrap_err();
    let ConfigError::UnknownStore {
        store,
        env_var,
        function,
        location,
    } = &err
    else {
        panic!("expected UnknownStore, got {err:?}");
    };
    assert_eq!(store, "flags");
    assert_eq!(env_var, "CACHE_STORE_FLAGS_URL");
    assert!(["flag", "reset_flags"].contains(function), "{function}");
    assert!(location.starts_with("tests/named_stores.rs:"), "{location}");
    let message = err.to_string();
    assert!(message.contains("CACHE_STORE_FLAGS_URL"), "{message}");
    assert!(message.contains(".store(\"flags\", ...)"), "{message}");

    // A bad name in code is an error too.
    let err = Cache::builder()
        .store("flags", Cache::builder())
        .store("Feature-Flags", Cache::builder())
        .build()
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ConfigError::InvalidSetting {
                setting: "store",
                ..
            }
        ),
        "{err:?}"
    );
    // Named stores do not nest.
    let err = Cache::builder()
        .store("flags", Cache::builder().store("inner", Cache::builder()))
        .build()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("named stores of its own"), "{err}");
}

/// Caching switched off switches named stores off too, configured or not.
#[tokio::test]
async fn a_disabled_cache_disables_named_stores() {
    let cache = Cache::builder().disabled().build().await.unwrap();
    assert_eq!(
        cache.store("flags").unwrap().store_kind(),
        StoreKind::Disabled
    );
    Cache::scope(cache.clone(), async {
        flag("x".to_owned()).await;
        flag("x".to_owned()).await;
    })
    .await;
    assert_eq!(cache.store("flags").unwrap().stats().bypasses, 2);
}
