//! What only a Redis Cluster can show, on a cluster of 3 masters whatever
//! `CACHE_TEST_TOPOLOGY` says: a pattern invalidation and `clear_namespace`
//! reach the keys of every master (checked on each master's own `SCAN`,
//! before and after), a master killed and restarted under traffic costs no
//! caller an error and is cached on again once back, and the cluster is
//! configured from the environment with the seeds' password.
//!
//! The rest of the contract runs on a cluster through the shared suites
//! (`CACHE_TEST_TOPOLOGY=cluster`, as `scripts/test.sh` does).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::time::Duration;

use cache_runtime::{Cache, CacheBuilder, StoreKind, cached};
use common::{CLUSTER_MASTERS, RedisServer};

/// Enough keys per item that each master serves some of them (slots are
/// spread by CRC16 of the whole key; the assertions below check it).
const PARTS: u64 = 24;

/// Counts body runs.
#[derive(Default)]
struct Db {
    calls: AtomicU64,
}

impl Db {
    fn ran(&self) {
        self.calls.fetch_add(1, SeqCst);
    }
    fn calls(&self) -> u64 {
        self.calls.load(SeqCst)
    }
}

#[cached(prefix = "item:{id}:part", id = "part", ttl = 60, skip = [db])]
async fn item_part(db: &Db, id: u64, part: u64) -> String {
    db.ran();
    format!("item {id} part {part}")
}

#[cached(invalidate = ["item:{id}:*"])]
async fn update_item(id: u64) -> bool {
    true
}

#[cached(prefix = "tagged", id = "id", ttl = 60, tags = ["all"], skip = [db])]
async fn tagged(db: &Db, id: u64) -> u64 {
    db.ran();
    id
}

#[cached(prefix = "value", id = "id", ttl = 60, skip = [db])]
async fn value(db: &Db, id: u64) -> u64 {
    db.ran();
    id * 10
}

async fn cluster_cache(server: &RedisServer, namespace: &str) -> Cache {
    let cache = server
        .builder()
        .namespace(namespace)
        .build()
        .await
        .expect("build a cluster cache");
    assert_eq!(cache.store_kind(), StoreKind::Cluster);
    cache
}

/// Each master's own keys, split by `matches`: (matching, the others).
fn split_per_master(
    server: &RedisServer,
    matches: impl Fn(&str) -> bool,
) -> Vec<(Vec<String>, Vec<String>)> {
    (0..server.node_count())
        .map(|node| server.node_keys(node).into_iter().partition(|k| matches(k)))
        .collect()
}

#[tokio::test]
async fn a_pattern_invalidation_reaches_every_master() {
    let server = RedisServer::start_cluster();
    assert_eq!(server.node_count(), CLUSTER_MASTERS);
    let cache = cluster_cache(&server, "cl-pat").await;
    let db = Db::default();
    // Item 1's parts match `item:1:*`; items 10 and 2 are its neighbours
    // ("item:10:" shares the prefix "item:1").
    let fill = || async {
        for id in [1, 10, 2] {
            for part in 0..PARTS {
                item_part(&db, id, part).await;
            }
        }
    };
    Cache::scope(cache.clone(), fill()).await;
    let of_item_1 = |k: &str| k.starts_with("cl-pat:item:1:");
    for (node, (matching, others)) in split_per_master(&server, of_item_1).iter().enumerate() {
        assert!(
            !matching.is_empty(),
            "master {node} holds none of item 1's parts"
        );
        assert!(!others.is_empty(), "master {node} holds no neighbour");
    }
    let neighbours: Vec<String> = server
        .keys()
        .into_iter()
        .filter(|k| !of_item_1(k))
        .collect();
    assert_eq!(neighbours.len() as u64, 2 * PARTS);
    let scans: Vec<u64> = (0..CLUSTER_MASTERS)
        .map(|node| server.node_command_calls(node, "scan"))
        .collect();

    assert!(Cache::scope(cache.clone(), update_item(1)).await);

    for (node, (matching, _)) in split_per_master(&server, of_item_1).iter().enumerate() {
        assert!(
            matching.is_empty(),
            "master {node} still holds {matching:?}"
        );
        assert!(
            server.node_command_calls(node, "scan") > scans[node],
            "master {node} was scanned"
        );
    }
    assert_eq!(server.keys(), neighbours, "every neighbour survives");
    assert_eq!(cache.stats().invalidation_failures, 0);

    // From the caller's side: item 1 loads again, its neighbours are hits.
    let calls = db.calls();
    Cache::scope(cache.clone(), fill()).await;
    assert_eq!(db.calls(), calls + PARTS);
}

#[tokio::test]
async fn clear_namespace_empties_the_namespace_on_every_master() {
    let server = RedisServer::start_cluster();
    let cache = cluster_cache(&server, "app").await;
    let neighbour = cluster_cache(&server, "apple").await;
    let db = Db::default();
    let fill = || async {
        for part in 0..PARTS {
            item_part(&db, 1, part).await;
            tagged(&db, part).await;
        }
        Cache::with_tenant("acme", item_part(&db, 1, 0)).await;
    };
    Cache::scope(cache.clone(), fill()).await;
    Cache::scope(neighbour.clone(), fill()).await;
    for key in ["app_other:x", "other:app:1", "ap:1"] {
        server.cli(&["SET", key, "1"]);
    }
    let of_app = |k: &str| ["app:", "app@", "app#"].iter().any(|p| k.starts_with(p));
    let before = split_per_master(&server, of_app);
    for (node, (matching, others)) in before.iter().enumerate() {
        assert!(!matching.is_empty(), "master {node} holds no key of app");
        assert!(!others.is_empty(), "master {node} holds no neighbour");
    }
    let all = server.keys();
    assert!(all.contains(&"app#tag:all".to_owned()), "{all:?}");
    assert!(
        all.contains(&"app@acme:item:1:part:0".to_owned()),
        "{all:?}"
    );
    // The parts and tagged entries, the tag version, the tenant's entry.
    let count = all.iter().filter(|k| of_app(k)).count();
    assert_eq!(count as u64, 2 * PARTS + 2);

    assert_eq!(cache.clear_namespace().await, Some(count as u64));

    for (node, (matching, others)) in split_per_master(&server, of_app).into_iter().enumerate() {
        assert!(
            matching.is_empty(),
            "master {node} still holds {matching:?}"
        );
        assert_eq!(others, before[node].1, "master {node}'s other keys");
    }
    let calls = db.calls();
    Cache::scope(neighbour.clone(), fill()).await;
    assert_eq!(db.calls(), calls, "the neighbour namespace is all hits");
    Cache::scope(cache.clone(), fill()).await;
    assert_eq!(db.calls(), calls + 2 * PARTS + 1, "app is all misses");
}

/// A master goes down for a moment and comes back empty, while tasks call a
/// cached function over keys on every master. No call fails: the keys of
/// the missing master (and, while the breaker is open or the cluster is
/// down, any key) run the body. Once the master is back its keys are
/// stored there again and the body stops running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_restarted_under_traffic_fails_no_caller() {
    const KEYS: u64 = 24;
    const TASKS: usize = 4;
    let mut server = RedisServer::start_cluster();
    let cache = cluster_cache(&server, "cl-down").await;
    let db = Arc::new(Db::default());
    let key = |id: u64| format!("cl-down:value:{id}");
    let victim = server.node_of(&key(0));
    let victims: Vec<String> = (0..KEYS)
        .map(key)
        .filter(|k| server.node_of(k) == victim)
        .collect();
    assert!(victims.len() < KEYS as usize, "every key on one master");
    Cache::scope(cache.clone(), async {
        for id in 0..KEYS {
            value(&db, id).await;
        }
    })
    .await;
    assert_eq!(db.calls(), KEYS);

    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let (db, stop, served) = (db.clone(), stop.clone(), served.clone());
            tokio::spawn(Cache::scope(cache.clone(), async move {
                while !stop.load(SeqCst) {
                    for id in 0..KEYS {
                        assert_eq!(value(&db, id).await, id * 10);
                        served.fetch_add(1, SeqCst);
                    }
                    tokio::task::yield_now().await;
                }
            }))
        })
        .collect();
    let served_past = |n: u64| {
        let served = served.clone();
        move || {
            let served = served.clone();
            async move { served.load(SeqCst) >= n }
        }
    };
    assert!(common::eventually(Duration::from_secs(5), served_past(KEYS * 4)).await);
    assert_eq!(db.calls(), KEYS, "all hits while the cluster is whole");

    server.kill_node(victim);
    // The calls go on: the missing master's keys (at least) run the body.
    let at_kill = served.load(SeqCst);
    assert!(
        common::eventually(Duration::from_secs(5), served_past(at_kill + 8 * KEYS)).await,
        "calls stalled with a master down: {:?}",
        cache.stats()
    );
    let calls_down = db.calls();
    assert!(calls_down > KEYS, "the missing master's keys ran the body");
    // Health pings every master: one down is unhealthy.
    let health = cache.health().await;
    assert!(!health.healthy, "a master is down: {health:?}");

    server.restart_node(victim);
    // Hits resume: over a stretch of traffic no body runs, and the master
    // holds its keys again.
    let resumed = common::eventually(Duration::from_secs(10), || async {
        let (calls, at) = (db.calls(), served.load(SeqCst));
        tokio::time::sleep(Duration::from_millis(100)).await;
        db.calls() == calls && served.load(SeqCst) >= at + 2 * KEYS
    })
    .await;
    assert!(resumed, "the body still runs: {:?}", cache.stats());
    assert!(cache.health().await.healthy);
    let held = server.node_keys(victim);
    assert!(
        victims.iter().all(|k| held.contains(k)),
        "the restarted master holds {held:?}, expected {victims:?}"
    );

    stop.store(true, SeqCst);
    for task in tasks {
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("a caller hung")
            .expect("a caller failed");
    }
    let stats = cache.stats();
    assert!(stats.hits > 0 && stats.stores > KEYS, "{stats:?}");
}

/// `REDIS_CLUSTER_URLS` names the seeds; a password in their URLs reaches
/// every node, the ones discovered included.
#[tokio::test]
async fn a_cluster_with_a_password_from_the_environment() {
    let server = RedisServer::start_cluster_with(&["--requirepass", "s3cret"]);
    let (var, urls) = server.env_var();
    assert_eq!(var, "REDIS_CLUSTER_URLS");
    // One seed is enough: the other masters are discovered.
    let seed = urls.split(',').next().unwrap().to_owned();
    assert!(seed.contains(":s3cret@"), "{seed}");
    let cache = CacheBuilder::from_lookup(|v| match v {
        "REDIS_CLUSTER_URLS" => Some(seed.clone()),
        "CACHE_NAMESPACE" => Some("cl-env".to_owned()),
        _ => None,
    })
    .unwrap()
    .build()
    .await
    .unwrap();
    let health = cache.health().await;
    assert!(health.healthy, "{health:?}");
    assert_eq!(health.store, StoreKind::Cluster);
    let db = Db::default();
    Cache::scope(cache.clone(), async {
        for part in 0..PARTS {
            item_part(&db, 7, part).await;
            item_part(&db, 7, part).await;
        }
    })
    .await;
    assert_eq!(db.calls(), PARTS);
    for node in 0..CLUSTER_MASTERS {
        assert!(
            !server.node_keys(node).is_empty(),
            "master {node} stored nothing"
        );
    }
    assert_eq!(cache.stats().store_errors, 0);
}

#[tokio::test]
async fn bad_cluster_configuration_is_a_typed_error_at_start_up() {
    use cache_runtime::{CacheBuilder, ConfigError};
    let bad = Cache::builder()
        .redis_cluster(["redis://127.0.0.1:7000", "redis://:s3cret@/nowhere:x"])
        .build()
        .await;
    match &bad {
        Err(ConfigError::InvalidRedisUrl { url, .. }) => {
            assert!(url.contains("nowhere") && !url.contains("s3cret"), "{url}")
        }
        other => panic!("{other:?}"),
    }
    let none = Cache::builder()
        .redis_cluster(Vec::<String>::new())
        .build()
        .await;
    assert!(
        matches!(none, Err(ConfigError::InvalidRedisUrl { .. })),
        "{none:?}"
    );
    let both = CacheBuilder::from_lookup(|var| match var {
        "REDIS_URL" => Some("redis://127.0.0.1:6000".to_owned()),
        "REDIS_CLUSTER_URLS" => Some("redis://:pw@127.0.0.1:7000".to_owned()),
        _ => None,
    });
    match both {
        Err(ConfigError::InvalidEnv { var, value, .. }) => {
            assert_eq!(var, "REDIS_CLUSTER_URLS");
            assert!(!value.contains("pw@"), "{value}");
        }
        other => panic!("{other:?}"),
    }
}
