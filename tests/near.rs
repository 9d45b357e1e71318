//! The near tier (`#[cached(near = true)]`) against a real Redis (or, with
//! `CACHE_TEST_TOPOLOGY=cluster`, a real 3-master cluster): near hits make
//! no round trip, and every change to a key, made by another cache (a
//! process of its own in production) or by any other client, drops the near
//! copies; a lost connection flushes them.
//!
//! Two `Cache` handles built on one server stand for two processes: each has
//! its own near tier and its own tracking connection. (`tests/near_processes.rs`
//! runs real processes and measures how long a stale copy survives.)

mod common;

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::SeqCst};
use std::time::Duration;

use cache_runtime::{Cache, cached};
use common::{RedisServer, TcpProxy, eventually};

/// The "database": a version per test, and how often a body ran.
#[derive(Default)]
struct Db {
    version: AtomicU64,
    calls: AtomicU32,
}

impl Db {
    fn load(&self, id: u64) -> String {
        self.calls.fetch_add(1, SeqCst);
        format!("item-{id}-v{}", self.version.load(SeqCst))
    }
    fn bump(&self) {
        self.version.fetch_add(1, SeqCst);
    }
    fn calls(&self) -> u32 {
        self.calls.load(SeqCst)
    }
}

#[cached(prefix = "item", id = "id", ttl = 60, near = true, skip = [db])]
async fn item(db: &Db, id: u64) -> String {
    db.load(id)
}

#[cached(prefix = "group:{group}:item", id = "id", ttl = 60, near = true, tags = ["group:{group}"], skip = [db])]
async fn grouped(db: &Db, group: u64, id: u64) -> String {
    db.load(id)
}

#[cached(prefix = "short", id = "id", ttl = 1, near = true, skip = [db])]
async fn short(db: &Db, id: u64) -> String {
    db.load(id)
}

#[cached(invalidate = ["group:{group}:item:*"])]
async fn wipe_group(group: u64) {}

async fn cache(server: &RedisServer, ns: &str) -> Cache {
    server
        .builder()
        .namespace(ns)
        .connect_timeout(Duration::from_millis(300))
        .build()
        .await
        .expect("build a cache")
}

/// Calls `f` until the near tier serves it (the tracking connection comes
/// up in the background after the first `near` call).
async fn until_near<F, Fut>(cache: &Cache, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = String>,
{
    let start = cache.stats().near_hits;
    let served = eventually(Duration::from_secs(5), || {
        let call = Cache::scope(cache.clone(), f());
        async move {
            call.await;
            cache.stats().near_hits > start
        }
    })
    .await;
    assert!(served, "the near tier never served the value");
}

#[tokio::test]
async fn near_hits_make_no_round_trip_and_invalidations_reach_other_processes() {
    let server = RedisServer::start();
    let (a, b) = (cache(&server, "nr").await, cache(&server, "nr").await);
    let db = Db::default();
    until_near(&b, || item(&db, 1)).await;
    assert_eq!(
        db.calls(),
        1,
        "one body run: the rest were Redis or near hits"
    );

    let gets = server.command_calls("get");
    for _ in 0..100 {
        assert_eq!(Cache::scope(b.clone(), item(&db, 1)).await, "item-1-v0");
    }
    assert_eq!(server.command_calls("get"), gets, "near hits send nothing");
    assert!(b.stats().near_hits >= 100);
    let stats = b.stats();
    assert!(
        stats.hits > stats.near_hits,
        "near hits count as hits: {stats:?}"
    );

    // Another process changes the data and invalidates: B drops its copy.
    db.bump();
    Cache::scope(a.clone(), item_invalidate(&1)).await;
    let fresh = eventually(Duration::from_secs(2), || async {
        Cache::scope(b.clone(), item(&db, 1)).await == "item-1-v1"
    })
    .await;
    assert!(fresh, "B kept serving its near copy after A's invalidation");
}

#[tokio::test]
async fn a_process_reads_its_own_invalidations_at_once() {
    let server = RedisServer::start();
    let a = cache(&server, "own").await;
    let db = Db::default();
    until_near(&a, || item(&db, 2)).await;
    db.bump();
    // No waiting for the server's push: the invalidation drops the local
    // copy before it returns.
    Cache::scope(a.clone(), item_invalidate(&2)).await;
    assert_eq!(Cache::scope(a.clone(), item(&db, 2)).await, "item-2-v1");

    until_near(&a, || grouped(&db, 5, 1)).await;
    db.bump();
    Cache::scope(a.clone(), wipe_group(5)).await;
    assert_eq!(
        Cache::scope(a.clone(), grouped(&db, 5, 1)).await,
        "item-1-v2"
    );

    until_near(&a, || grouped(&db, 6, 1)).await;
    db.bump();
    assert!(a.invalidate_tag("group:6").await);
    assert_eq!(
        Cache::scope(a.clone(), grouped(&db, 6, 1)).await,
        "item-1-v3"
    );
}

#[tokio::test]
async fn patterns_tags_and_foreign_writes_drop_near_copies_elsewhere() {
    let server = RedisServer::start();
    let (a, b) = (cache(&server, "pt").await, cache(&server, "pt").await);
    let db = Db::default();
    for group in [1, 2] {
        until_near(&b, || grouped(&db, group, 1)).await;
    }
    until_near(&b, || item(&db, 3)).await;

    db.bump();
    Cache::scope(a.clone(), wipe_group(1)).await;
    assert!(a.invalidate_tag("group:2").await);
    let dropped = eventually(Duration::from_secs(2), || async {
        Cache::scope(b.clone(), grouped(&db, 1, 1)).await == "item-1-v1"
            && Cache::scope(b.clone(), grouped(&db, 2, 1)).await == "item-1-v1"
    })
    .await;
    assert!(dropped, "a pattern or tag invalidation left a near copy");

    // Any client's write is tracked too: another service, or redis-cli.
    server.cli(&[
        "SET",
        &Cache::scope(b.clone(), async { item_key(&3) }).await,
        "\"from elsewhere\"",
    ]);
    let seen = eventually(Duration::from_secs(2), || async {
        Cache::scope(b.clone(), item(&db, 3)).await == "from elsewhere"
    })
    .await;
    assert!(seen, "a foreign SET did not reach the near tier");
}

#[tokio::test]
async fn a_near_copy_never_outlives_its_redis_ttl() {
    let server = RedisServer::start();
    let b = cache(&server, "ttl").await;
    let db = Db::default();
    until_near(&b, || short(&db, 1)).await;
    let runs = db.calls();
    db.bump();
    // The entry's TTL is 1 s: the near copy goes with it, and the next
    // call runs the body (Redis expired the key too).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(Cache::scope(b.clone(), short(&db, 1)).await, "item-1-v1");
    assert_eq!(db.calls(), runs + 1);
}

#[tokio::test]
async fn a_lost_connection_flushes_the_near_tier() {
    let server = RedisServer::start();
    if server.is_cluster() {
        eprintln!("skipped on a cluster: the proxy stands in front of one server");
        return;
    }
    let proxy = TcpProxy::start(server.port());
    let a = cache(&server, "loss").await;
    let b = Cache::builder()
        .redis_url(proxy.url())
        .namespace("loss")
        .connect_timeout(Duration::from_millis(300))
        .build()
        .await
        .unwrap();
    let db = Db::default();
    until_near(&b, || item(&db, 1)).await;

    // B's connections go silent (no reset: a partition). A invalidates;
    // B can not hear it. Within a heartbeat and a timeout B notices, drops
    // its near tier, and from then on never serves the old value.
    proxy.blackhole();
    db.bump();
    Cache::scope(a.clone(), item_invalidate(&1)).await;
    let noticed = eventually(Duration::from_secs(3), || async {
        b.stats().near_flushes >= 1
    })
    .await;
    assert!(
        noticed,
        "B did not notice its tracking connection went silent"
    );
    for _ in 0..20 {
        // Redis is unreachable for B: its calls run the body.
        assert_eq!(Cache::scope(b.clone(), item(&db, 1)).await, "item-1-v1");
    }
    proxy.restore();
    let back = eventually(Duration::from_secs(5), || async {
        Cache::scope(b.clone(), item(&db, 1)).await;
        b.health().await.healthy && b.stats().near_hits > 0
    })
    .await;
    assert!(back);
    assert_eq!(Cache::scope(b.clone(), item(&db, 1)).await, "item-1-v1");
}

#[tokio::test]
async fn a_restarted_server_flushes_the_near_tier_at_once() {
    let mut server = RedisServer::start();
    if server.is_cluster() {
        eprintln!("skipped on a cluster: tests/cluster.rs restarts masters");
        return;
    }
    let b = cache(&server, "restart").await;
    let db = Db::default();
    until_near(&b, || item(&db, 1)).await;
    server.kill();
    // The socket closes: the flush does not wait for a heartbeat.
    let flushed = eventually(Duration::from_secs(1), || async {
        b.stats().near_flushes >= 1
    })
    .await;
    assert!(flushed);
    db.bump();
    server.restart();
    let fresh = eventually(Duration::from_secs(5), || async {
        Cache::scope(b.clone(), item(&db, 1)).await == "item-1-v1"
    })
    .await;
    assert!(fresh);
    // And the tier comes back once tracking is up again.
    until_near(&b, || item(&db, 1)).await;
}
