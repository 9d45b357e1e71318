//! What an operator sees: metrics through the `metrics` facade (captured with
//! `metrics-util`'s debugging recorder, set per test thread),
//! `function_stats`, `Cache::health` and `Cache::clear_namespace`, against
//! real Redis servers, stopped and restarted for real. (Spans:
//! `tests/spans.rs`.)
//!
//! Per-function counters are process-wide, so every test uses functions of
//! its own. Each test runs on a current-thread runtime: the local recorder
//! and the tracing subscriber are per thread.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use cache_runtime::{BreakerState, Cache, StoreKind, cached, function_stats};
use common::RedisServer;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};

async fn redis_cache(server: &RedisServer, namespace: &str) -> Cache {
    Cache::builder()
        .redis_url(server.url())
        .namespace(namespace)
        .op_timeout(Duration::from_millis(200))
        .circuit_breaker(3, Duration::from_millis(300))
        .invalidation_retry_for(Duration::from_millis(100))
        .build()
        .await
        .expect("build a Redis cache")
}

/// Every metric of a snapshot, by name and sorted `k=v` labels.
fn read(snapshotter: &Snapshotter) -> HashMap<(String, String), DebugValue> {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| {
            let mut labels: Vec<String> = key
                .key()
                .labels()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect();
            labels.sort();
            ((key.key().name().to_owned(), labels.join(",")), value)
        })
        .collect()
}

fn counter(m: &HashMap<(String, String), DebugValue>, name: &str, labels: &str) -> u64 {
    match m.get(&(name.to_owned(), labels.to_owned())) {
        Some(DebugValue::Counter(n)) => *n,
        None => 0,
        Some(other) => panic!("{name}{{{labels}}} is not a counter: {other:?}"),
    }
}

fn samples(m: &HashMap<(String, String), DebugValue>, name: &str, labels: &str) -> usize {
    match m.get(&(name.to_owned(), labels.to_owned())) {
        Some(DebugValue::Histogram(v)) => v.len(),
        None => 0,
        Some(other) => panic!("{name}{{{labels}}} is not a histogram: {other:?}"),
    }
}

fn gauge(m: &HashMap<(String, String), DebugValue>, name: &str, labels: &str) -> Option<f64> {
    match m.get(&(name.to_owned(), labels.to_owned())) {
        Some(DebugValue::Gauge(v)) => Some(v.into_inner()),
        None => None,
        Some(other) => panic!("{name}{{{labels}}} is not a gauge: {other:?}"),
    }
}

static PROFILE_RUNS: AtomicU32 = AtomicU32::new(0);

#[cached(prefix = "profile", id = "id", ttl = 60)]
async fn obs_profile(id: u32) -> Result<String, String> {
    PROFILE_RUNS.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(5)).await;
    Ok(format!("profile-{id}"))
}

#[cached(invalidate = [obs_profile(id)])]
async fn obs_update_profile(id: u32) -> Result<(), String> {
    let _ = id;
    Ok(())
}

#[tokio::test]
async fn metrics_count_hits_misses_loads_store_operations_and_invalidations() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);
    let server = RedisServer::start();
    let cache = redis_cache(&server, "obs1").await;

    Cache::scope(cache.clone(), async {
        assert_eq!(obs_profile(1).await.unwrap(), "profile-1");
        assert_eq!(obs_profile(1).await.unwrap(), "profile-1");
        assert_eq!(obs_profile(1).await.unwrap(), "profile-1");
        assert_eq!(obs_profile(2).await.unwrap(), "profile-2");
        obs_update_profile(1).await.unwrap();
        assert_eq!(obs_profile(1).await.unwrap(), "profile-1");
    })
    .await;
    assert_eq!(PROFILE_RUNS.load(Ordering::SeqCst), 3);

    let m = read(&snapshotter);
    let f = "cache=obs_profile";
    assert_eq!(counter(&m, "cache_hits_total", f), 2, "{m:#?}");
    assert_eq!(counter(&m, "cache_misses_total", f), 3);
    assert_eq!(counter(&m, "cache_loads_total", f), 3);
    assert_eq!(samples(&m, "cache_load_duration_seconds", f), 3);
    let durations = match &m[&("cache_load_duration_seconds".to_owned(), f.to_owned())] {
        DebugValue::Histogram(v) => v.iter().map(|x| x.into_inner()).collect::<Vec<_>>(),
        _ => unreachable!(),
    };
    assert!(
        durations.iter().all(|&s| (0.004..5.0).contains(&s)),
        "a body sleeps 5 ms: {durations:?}"
    );
    // Every lookup is a Redis round trip of the cache's own store.
    assert!(
        samples(
            &m,
            "cache_store_operation_duration_seconds",
            "op=get,store=default"
        ) >= 5
    );
    // Each miss took a lease and filled it.
    assert_eq!(
        samples(
            &m,
            "cache_store_operation_duration_seconds",
            "op=lease,store=default"
        ),
        3
    );
    assert_eq!(
        samples(
            &m,
            "cache_store_operation_duration_seconds",
            "op=fill,store=default"
        ),
        3
    );
    assert_eq!(
        counter(&m, "cache_invalidations_total", "kind=key,store=default"),
        1
    );
    assert_eq!(
        counter(&m, "cache_errors_total", "kind=timeout,store=default")
            + counter(&m, "cache_errors_total", "kind=connection,store=default"),
        0
    );

    // The same figures per function and per cache.
    let stats = function_stats()
        .into_iter()
        .find(|s| s.name == "obs_profile")
        .expect("obs_profile in function_stats");
    assert_eq!((stats.hits, stats.misses, stats.loads), (2, 3, 3));
    assert!((stats.hit_ratio - 0.4).abs() < 1e-9);
    assert!(stats.load_time >= Duration::from_millis(15));
    assert!(stats.mean_load_time().unwrap() >= Duration::from_millis(5));
    let json = serde_json::to_value(&stats).unwrap();
    assert_eq!(json["name"], "obs_profile");
    assert_eq!(json["hits"], 2);
    assert!(json["hit_ratio"].as_f64().unwrap() > 0.39);
    assert!(json["load_seconds"].as_f64().unwrap() >= 0.015);
    let totals = cache.stats();
    assert_eq!((totals.hits, totals.misses), (2, 3));
    assert_eq!(
        serde_json::to_value(totals).unwrap()["hit_ratio"].as_f64(),
        Some(0.4)
    );
}

static OUTAGE_RUNS: AtomicU32 = AtomicU32::new(0);

#[cached(prefix = "outage", id = "id", ttl = 60)]
async fn obs_outage(id: u32) -> u32 {
    OUTAGE_RUNS.fetch_add(1, Ordering::SeqCst);
    id
}

#[tokio::test]
async fn an_outage_shows_as_errors_by_kind_the_breaker_gauge_and_unhealthy() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);
    let mut server = RedisServer::start();
    let cache = redis_cache(&server, "obs2").await;

    let health = cache.health().await;
    assert!(health.healthy, "{health:?}");
    assert_eq!(health.store, StoreKind::Redis);
    assert_eq!(health.breaker, Some(BreakerState::Closed));
    assert!(health.ping.is_some_and(|p| p < Duration::from_secs(1)));
    assert_eq!(health.error, None);
    let json = serde_json::to_value(&health).unwrap();
    assert_eq!(json["store"], "redis");
    assert_eq!(json["breaker"], "closed");
    assert!(json["ping_ms"].as_f64().is_some());
    assert_eq!(
        gauge(&read(&snapshotter), "cache_breaker_state", "store=default"),
        Some(0.0)
    );

    server.kill();
    Cache::scope(cache.clone(), async {
        for i in 0..20 {
            // Never fails the caller: the body answers.
            assert_eq!(obs_outage(i).await, i);
        }
    })
    .await;
    let m = read(&snapshotter);
    let failures = counter(&m, "cache_errors_total", "kind=connection,store=default")
        + counter(&m, "cache_errors_total", "kind=timeout,store=default");
    assert!(failures >= 3, "{m:#?}");
    assert!(counter(&m, "cache_errors_total", "kind=breaker_open,store=default") >= 1);
    assert_eq!(gauge(&m, "cache_breaker_state", "store=default"), Some(2.0));

    let health = cache.health().await;
    assert!(!health.healthy);
    assert_eq!(health.ping, None);
    assert!(health.error.is_some());
    assert_eq!(health.breaker, Some(BreakerState::Open));

    server.restart();
    let recovered = common::eventually(Duration::from_secs(10), || {
        let cache = cache.clone();
        async move {
            Cache::scope(cache.clone(), obs_outage(1000)).await;
            cache.breaker_state() == Some(BreakerState::Closed) && cache.health().await.healthy
        }
    })
    .await;
    assert!(
        recovered,
        "the breaker closes and health recovers after the restart"
    );
    assert_eq!(
        gauge(&read(&snapshotter), "cache_breaker_state", "store=default"),
        Some(0.0)
    );
}

#[tokio::test]
async fn health_covers_named_stores_and_memory() {
    let server = RedisServer::start();
    let mut down = RedisServer::start();
    let down_url = down.url();
    down.kill();
    let cache = Cache::builder()
        .memory()
        .namespace("obs3")
        .store("flags", Cache::builder().redis_url(server.url()))
        .store(
            "sessions",
            Cache::builder()
                .redis_url(down_url)
                .connect_timeout(Duration::from_millis(300)),
        )
        .build()
        .await
        .unwrap();
    let health = cache.health().await;
    assert_eq!(health.store, StoreKind::Memory);
    assert!(health.stores["flags"].healthy);
    assert!(health.stores["flags"].ping.is_some());
    assert!(!health.stores["sessions"].healthy);
    assert!(health.stores["sessions"].error.is_some());
    assert!(!health.healthy, "a named store is down: {health:?}");

    let disabled = Cache::builder().disabled().build().await.unwrap();
    let health = disabled.health().await;
    assert!(health.healthy);
    assert_eq!(health.store, StoreKind::Disabled);
}

#[cached(prefix = "item", id = "id", ttl = 60, tags = ["items"])]
async fn obs_item(id: u32) -> u32 {
    id
}

#[tokio::test]
async fn clear_namespace_removes_every_key_of_the_namespace_and_nothing_else() {
    let server = RedisServer::start();
    let cache = Cache::builder()
        .redis_url(server.url())
        .namespace("app")
        .store(
            "flags",
            Cache::builder().redis_url(server.url()).namespace("flg"),
        )
        .build()
        .await
        .unwrap();
    Cache::scope(cache.clone(), async {
        for id in 0..50 {
            obs_item(id).await;
        }
        Cache::with_tenant("acme", async {
            obs_item(1).await;
        })
        .await;
    })
    .await;
    cache
        .store("flags")
        .unwrap()
        .set("flg:beta", &true, None)
        .await;
    // Neighbours that share a prefix with the namespace, and another one.
    for key in ["apple:item:1", "app_other:x", "other:app:1", "ap:1"] {
        server.cli(&["SET", key, "1"]);
    }
    let before = server.keys();
    assert!(before.contains(&"app:item:7".to_owned()), "{before:?}");
    assert!(before.contains(&"app#tag:items".to_owned()), "{before:?}");
    assert!(before.iter().any(|k| k.starts_with("app@")), "{before:?}");

    // 50 entries + 1 tag version, the tenant's entry + its tag version, the flag.
    assert_eq!(cache.clear_namespace().await, Some(54));
    let mut after = server.keys();
    after.sort();
    assert_eq!(
        after,
        ["ap:1", "app_other:x", "apple:item:1", "other:app:1"],
        "only the neighbours are left"
    );
    let stats = function_stats()
        .into_iter()
        .find(|s| s.name == "obs_item")
        .unwrap();
    Cache::scope(cache.clone(), async { obs_item(3).await }).await;
    let again = function_stats()
        .into_iter()
        .find(|s| s.name == "obs_item")
        .unwrap();
    assert_eq!(again.misses, stats.misses + 1, "cleared entries are misses");

    let unnamed = Cache::builder()
        .redis_url(server.url())
        .namespace("")
        .build()
        .await
        .unwrap();
    assert_eq!(
        unnamed.clear_namespace().await,
        None,
        "an empty namespace would be the whole database"
    );
    // The four neighbours, and the entry and tag version just stored again.
    assert_eq!(server.keys().len(), 6);

    let mut server = server;
    server.kill();
    assert_eq!(cache.clear_namespace().await, None);
}

static STALE_RUNS: AtomicU32 = AtomicU32::new(0);

#[cached(
    prefix = "stale",
    id = "id",
    ttl = "300ms",
    stale_while_revalidate = "10s"
)]
async fn obs_stale(id: u32) -> u32 {
    STALE_RUNS.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(50)).await;
    id + STALE_RUNS.load(Ordering::SeqCst)
}

#[tokio::test]
async fn stale_serves_refreshes_and_coalesced_calls_are_counted() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);
    let server = RedisServer::start();
    let cache = redis_cache(&server, "obs6").await;
    Cache::scope(cache.clone(), async {
        // Eight concurrent misses of one key: one body run, seven share it.
        let calls: Vec<_> = (0..8).map(|_| obs_stale(1)).collect();
        let first = futures_join_all(calls).await;
        assert!(first.iter().all(|&v| v == first[0]), "{first:?}");
        // Expired, within stale_while_revalidate: of two concurrent calls,
        // one refreshes (and returns the new value), the other is served
        // the old one at once. Both found a stale value.
        tokio::time::sleep(Duration::from_millis(400)).await;
        let mut second = futures_join_all(vec![obs_stale(1), obs_stale(1)]).await;
        second.sort();
        assert_eq!(
            second,
            [first[0], first[0] + 1],
            "the old value and the refreshed one"
        );
    })
    .await;
    let m = read(&snapshotter);
    let f = "cache=obs_stale";
    assert_eq!(counter(&m, "cache_coalesced_total", f), 7, "{m:#?}");
    assert_eq!(counter(&m, "cache_stale_served_total", f), 2);
    assert_eq!(counter(&m, "cache_refreshes_total", f), 1);
    assert_eq!(counter(&m, "cache_loads_total", f), 2);
    assert_eq!(STALE_RUNS.load(Ordering::SeqCst), 2);
    let stats = function_stats()
        .into_iter()
        .find(|s| s.name == "obs_stale")
        .unwrap();
    assert_eq!(
        (stats.coalesced, stats.stale_served, stats.refreshes),
        (7, 2, 1)
    );
}

/// Polls the futures together on this task (the local recorder and the
/// scoped cache are per task and thread).
async fn futures_join_all<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, output) in futures.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *output = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().map(Option::unwrap).collect()
}
