//! Stampede control and consistency within and across cache handles, against
//! a real Redis (and the memory store where the claim holds there too):
//! single flight, leases and the stale-set race, a cancelled leader, a Redis
//! restart while a lease is held, early refresh, stale-while-revalidate and
//! stale-if-error.
//!
//! Two `Cache` handles on one Redis have separate connections and separate
//! single-flight maps: to the lease protocol they are two processes.
//! `tests/processes.rs` repeats the central claims with real OS processes.

mod common;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::time::Duration;

use cache_runtime::{Cache, cached};
use common::RedisServer;
use tokio::sync::watch;

/// Stands in for a database row: a version, a count of body runs, a gate
/// that holds bodies until the test opens it, and a switch that fails them.
struct Db {
    version: AtomicU64,
    calls: AtomicU64,
    gate: watch::Sender<bool>,
    failing: std::sync::atomic::AtomicBool,
}

impl Db {
    fn new() -> Arc<Self> {
        Arc::new(Db {
            version: AtomicU64::new(1),
            calls: AtomicU64::new(0),
            gate: watch::Sender::new(true),
            failing: Default::default(),
        })
    }
    fn calls(&self) -> u64 {
        self.calls.load(SeqCst)
    }
    fn close_gate(&self) {
        self.gate.send_replace(false);
    }
    fn open_gate(&self) {
        self.gate.send_replace(true);
    }
    fn bump(&self) -> u64 {
        self.version.fetch_add(1, SeqCst) + 1
    }
    /// The body of every function here: count, read the row, wait at the gate.
    async fn query(&self) -> u64 {
        self.calls.fetch_add(1, SeqCst);
        let version = self.version.load(SeqCst);
        let mut gate = self.gate.subscribe();
        let _ = gate.wait_for(|open| *open).await;
        version
    }
    async fn query_fallible(&self) -> Result<u64, String> {
        let version = self.query().await;
        if self.failing.load(SeqCst) {
            Err("database down".into())
        } else {
            Ok(version)
        }
    }
}

#[cached(prefix = "row", id = "id", ttl = 60, skip = [db])]
async fn row(db: &Db, id: u64) -> u64 {
    db.query().await
}

#[cached(invalidate = [row(id)])]
async fn update_row(db: &Db, id: u64) -> u64 {
    db.bump()
}

#[cached(prefix = "swr", id = "id", ttl = "300ms", stale_while_revalidate = "10s", skip = [db])]
async fn swr_row(db: &Db, id: u64) -> u64 {
    db.query().await
}

#[cached(prefix = "sie", id = "id", ttl = "300ms", stale_if_error = "10s", skip = [db])]
async fn sie_row(db: &Db, id: u64) -> Result<u64, String> {
    db.query_fallible().await
}

#[cached(prefix = "sie-short", id = "id", ttl = "200ms", stale_if_error = "100ms", skip = [db])]
async fn sie_short_row(db: &Db, id: u64) -> Result<u64, String> {
    db.query_fallible().await
}

// beta this large makes the XFetch draw all but certain once the body's
// duration (at least 1 µs) is known: P(refresh) = exp(-remaining / (delta *
// beta)) > 0.999998 for 2 s.
#[cached(prefix = "early", id = "id", ttl = "2s", early_refresh = 1e12, skip = [db])]
async fn early_row(db: &Db, id: u64) -> u64 {
    db.query().await
}

async fn redis_cache(server: &RedisServer, namespace: &str, leases: bool) -> Cache {
    server
        .builder()
        .namespace(namespace)
        .leases(leases)
        .build()
        .await
        .expect("build a Redis cache")
}

async fn memory_cache(leases: bool) -> Cache {
    Cache::builder().leases(leases).build().await.unwrap()
}

/// Runs `f` as a task with `cache` in scope.
fn spawn_in<F>(cache: &Cache, f: F) -> tokio::task::JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    tokio::spawn(Cache::scope(cache.clone(), f))
}

/// Starts `n` calls as tasks, spread over `caches` in turn (each call in its
/// cache's scope).
fn spawn_calls<T, Fut>(
    n: usize,
    caches: &[&Cache],
    db: &Arc<Db>,
    call: impl Fn(Arc<Db>) -> Fut,
) -> Vec<tokio::task::JoinHandle<T>>
where
    Fut: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    (0..n)
        .map(|i| spawn_in(caches[i % caches.len()], call(db.clone())))
        .collect()
}

/// Waits for `n` body runs (bodies signal by counting).
async fn until_calls(db: &Db, n: u64) {
    let ok = common::eventually(Duration::from_secs(5), || async { db.calls() >= n }).await;
    assert!(ok, "expected {n} body runs, saw {}", db.calls());
}

/// Every call of a batch must finish within `bound`: a hang fails the test
/// instead of blocking CI.
async fn join_all<T>(tasks: Vec<tokio::task::JoinHandle<T>>, bound: Duration) -> Vec<T> {
    tokio::time::timeout(bound, async {
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.expect("task panicked"));
        }
        out
    })
    .await
    .expect("callers hung")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_misses_run_the_body_once_per_key() {
    let server = RedisServer::start();
    for cache in [
        redis_cache(&server, "sf", true).await,
        memory_cache(true).await,
    ] {
        let db = Db::new();
        db.close_gate();
        let tasks = spawn_calls(200, &[&cache], &db, |db| async move { row(&db, 1).await });
        until_calls(&db, 1).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        db.open_gate();
        let values = join_all(tasks, Duration::from_secs(10)).await;
        assert!(values.iter().all(|&v| v == 1), "{values:?}");
        assert_eq!(db.calls(), 1, "{:?}", cache.store_kind());
        let stats = cache.stats();
        assert_eq!(stats.coalesced, 199, "{stats:?}");
        assert_eq!(stats.stores, 1, "{stats:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_handle_waits_for_the_first_ones_lease() {
    let server = RedisServer::start();
    let a = redis_cache(&server, "two", true).await;
    let b = redis_cache(&server, "two", true).await;
    let db = Db::new();
    db.close_gate();
    let first = {
        let db = db.clone();
        spawn_in(&a, async move { row(&db, 1).await })
    };
    until_calls(&db, 1).await;
    let others = spawn_calls(50, &[&a, &b], &db, |db| async move { row(&db, 1).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(db.calls(), 1, "everyone else waits for the lease holder");
    db.open_gate();
    assert_eq!(first.await.unwrap(), 1);
    let values = join_all(others, Duration::from_secs(10)).await;
    assert!(values.iter().all(|&v| v == 1));
    assert_eq!(db.calls(), 1);
    assert!(b.stats().lease_waits >= 1, "{:?}", b.stats());
    assert_eq!(server.get("two:row:1").as_deref(), Some("1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_is_never_mistaken_for_a_value() {
    let server = RedisServer::start();
    let cache = redis_cache(&server, "rec", true).await;
    let db = Db::new();
    db.close_gate();
    let call = {
        let db = db.clone();
        spawn_in(&cache, async move { row(&db, 1).await })
    };
    until_calls(&db, 1).await;
    let mut conn = server.connection_for("rec:row:1").await;
    let raw: Vec<u8> = redis::cmd("GET")
        .arg("rec:row:1")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(raw[0], 0xC1, "a lease record starts with 0xC1: {raw:?}");
    assert!(raw.starts_with(b"\xC1lease:"));
    assert!(
        serde_json::from_slice::<serde_json::Value>(&raw).is_err(),
        "a JSON reader sees an error, never a value"
    );
    assert!(std::str::from_utf8(&raw).is_err(), "nor is it text");
    let pttl = server.pttl("rec:row:1");
    assert!(
        pttl > 0 && pttl <= 5_000,
        "the lease expires by itself: {pttl}"
    );
    // The public API reads it as a miss, not as garbage.
    assert_eq!(cache.get::<u64>("rec:row:1").await, None);
    assert_eq!(cache.stats().decode_errors, 0);
    db.open_gate();
    assert_eq!(call.await.unwrap(), 1);
    assert_eq!(server.get("rec:row:1").as_deref(), Some("1"));
}

/// A plain miss takes its lease with one `SET .. NX .. GET` (no Lua: only
/// the fill is a script), and a record left by a dead holder, past its
/// deadline but not yet expired, is still taken over (by the lease script,
/// which knows the server's clock).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_miss_leases_without_lua_and_a_dead_holders_record_is_taken_over() {
    let server = RedisServer::start();
    let cache = redis_cache(&server, "nx", true).await;
    let db = Db::new();
    // One miss first: the fill script's first EVALSHA meets NOSCRIPT and is
    // sent again once loaded.
    let warm = db.clone();
    spawn_in(&cache, async move { row(&warm, 100).await })
        .await
        .unwrap();
    let (set0, eval0) = (server.command_calls("set"), server.command_calls("evalsha"));
    for id in 0..10 {
        assert_eq!(
            spawn_in(&cache, {
                let db = db.clone();
                async move { row(&db, id).await }
            })
            .await
            .unwrap(),
            1
        );
    }
    assert_eq!(db.calls(), 11);
    assert_eq!(
        server.command_calls("set") - set0,
        20,
        "per miss, the SET NX GET and the fill script's SET (commandstats count SETs inside scripts)"
    );
    assert_eq!(
        server.command_calls("evalsha") - eval0,
        10,
        "one script per miss: the fill"
    );
    assert_eq!(server.get("nx:row:3").as_deref(), Some("1"));

    // A dead refresher's record: it carries a value and its deadline (1 s
    // after the epoch) has passed, but the key has a minute left.
    let mut conn = server.connection_for("nx:row:50").await;
    let record = b"\xC1lease:0123456789abcdef0123456789abcdef:1000:not json".to_vec();
    let () = redis::cmd("SET")
        .arg("nx:row:50")
        .arg(record)
        .arg("PX")
        .arg(60_000)
        .query_async(&mut conn)
        .await
        .unwrap();
    let value = tokio::time::timeout(
        Duration::from_secs(2),
        spawn_in(&cache, {
            let db = db.clone();
            async move { row(&db, 50).await }
        }),
    )
    .await
    .expect("taken over at once, not waited out")
    .unwrap();
    assert_eq!(value, 1);
    assert_eq!(db.calls(), 12);
    assert_eq!(server.get("nx:row:50").as_deref(), Some("1"), "and filled");
    assert_eq!(cache.stats().lease_wait_timeouts, 0);
}

/// The stale-set race, step by step: a read runs its body and reads version
/// 1; a write commits version 2 and invalidates; then the read finishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_that_began_before_an_invalidation_does_not_store_its_result() {
    let server = RedisServer::start();
    let cases = [
        (redis_cache(&server, "race-on", true).await, true),
        (redis_cache(&server, "race-off", false).await, false),
        (memory_cache(true).await, true),
        (memory_cache(false).await, false),
    ];
    for (cache, leases) in cases {
        let db = Db::new();
        db.close_gate();
        let reader = {
            let db = db.clone();
            spawn_in(&cache, async move { row(&db, 1).await })
        };
        until_calls(&db, 1).await;
        let version = Cache::scope(cache.clone(), update_row(&db, 1)).await;
        assert_eq!(version, 2);
        db.open_gate();
        assert_eq!(reader.await.unwrap(), 1, "the read began before the write");
        let after = Cache::scope(cache.clone(), row(&db, 1)).await;
        let kind = cache.store_kind();
        if leases {
            assert_eq!(
                after, 2,
                "{kind:?}: the read after the invalidation is fresh"
            );
            assert_eq!(cache.stats().leases_lost, 1, "{kind:?}");
        } else {
            // Plain cache-aside stored the old row after the invalidation.
            assert_eq!(
                after, 1,
                "{kind:?}: without leases the race leaves it stale"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_leader_does_not_strand_its_followers() {
    let server = RedisServer::start();
    // A lease that was not given back would hold followers for 30 s: the
    // bound below proves the cancelled leader released it.
    let redis = server
        .builder()
        .namespace("cancel")
        .lease_ttl(Duration::from_secs(30))
        .lease_wait(Duration::from_secs(30))
        .build()
        .await
        .unwrap();
    let other = server
        .builder()
        .namespace("cancel")
        .lease_ttl(Duration::from_secs(30))
        .lease_wait(Duration::from_secs(30))
        .build()
        .await
        .unwrap();
    let memory = memory_cache(true).await;
    for (cache, remote) in [(&redis, Some(&other)), (&memory, None)] {
        let db = Db::new();
        db.close_gate();
        let leader = {
            let db = db.clone();
            spawn_in(cache, async move { row(&db, 1).await })
        };
        until_calls(&db, 1).await;
        let mut followers = spawn_calls(20, &[cache], &db, |db| async move { row(&db, 1).await });
        if let Some(remote) = remote {
            for _ in 0..5 {
                let db = db.clone();
                followers.push(spawn_in(remote, async move { row(&db, 1).await }));
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        leader.abort();
        assert!(leader.await.unwrap_err().is_cancelled());
        // One follower leads now; its body must not wait at the gate.
        until_calls(&db, 2).await;
        db.open_gate();
        let values = join_all(followers, Duration::from_secs(5)).await;
        assert!(values.iter().all(|&v| v == 1), "{values:?}");
        assert_eq!(db.calls(), 2, "the cancelled run and one more");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalidation_during_the_body_costs_one_more_run_not_one_per_waiter() {
    let server = RedisServer::start();
    let a = redis_cache(&server, "relead", true).await;
    let db = Db::new();
    db.close_gate();
    let callers = spawn_calls(10, &[&a], &db, |db| async move { row(&db, 1).await });
    until_calls(&db, 1).await;
    // The row changes while the holder's body runs: its lease is voided,
    // its fill refused, and its nine waiters must not each run the body.
    assert_eq!(Cache::scope(a.clone(), update_row(&db, 1)).await, 2);
    db.open_gate();
    let values = join_all(callers, Duration::from_secs(10)).await;
    assert_eq!(values.iter().filter(|&&v| v == 2).count(), 9, "{values:?}");
    // The voided run, and one run for the waiters.
    assert_eq!(db.calls(), 2, "{:?}", a.stats());
    assert_eq!(a.stats().leases_lost, 1);
    assert_eq!(server.get("relead:row:1").as_deref(), Some("2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_while_a_lease_is_held_fails_no_caller() {
    let mut server = RedisServer::start();
    let a = redis_cache(&server, "restart", true).await;
    let b = redis_cache(&server, "restart", true).await;
    let db = Db::new();
    db.close_gate();
    let mut callers = spawn_calls(10, &[&a], &db, |db| async move { row(&db, 1).await });
    until_calls(&db, 1).await;
    for _ in 0..10 {
        let db = db.clone();
        callers.push(spawn_in(&b, async move { row(&db, 1).await }));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The lease vanishes with the server's memory.
    server.restart();
    db.open_gate();
    let values = join_all(callers, Duration::from_secs(10)).await;
    assert!(values.iter().all(|&v| v == 1), "{values:?}");
    assert!(
        db.calls() <= 3,
        "at most the holder and one per handle: {} {:?} {:?}",
        db.calls(),
        a.stats(),
        b.stats()
    );
    // And the cache works again afterwards.
    let ok = common::eventually(Duration::from_secs(5), || async {
        Cache::scope(a.clone(), row(&db, 1)).await == 1 && server.get("restart:row:1").is_some()
    })
    .await;
    assert!(ok, "{:?}", a.stats());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_while_revalidate_serves_the_old_value_while_one_caller_refreshes() {
    let server = RedisServer::start();
    let a = redis_cache(&server, "swr", true).await;
    let b = redis_cache(&server, "swr", true).await;
    let db = Db::new();
    assert_eq!(Cache::scope(a.clone(), swr_row(&db, 1)).await, 1);
    let pttl = server.pttl("swr:swr:1");
    assert!(
        pttl > 9_000 && pttl <= 10_300,
        "stored for ttl + window: {pttl}"
    );
    tokio::time::sleep(Duration::from_millis(400)).await; // expired, within the window
    db.bump();
    db.close_gate();
    let refresher = {
        let db = db.clone();
        spawn_in(&a, async move { swr_row(&db, 1).await })
    };
    until_calls(&db, 2).await;
    // While the refresh is held at the gate, every other caller, through
    // either handle, gets the old value at once.
    let others = spawn_calls(
        20,
        &[&a, &b],
        &db,
        |db| async move { swr_row(&db, 1).await },
    );
    let values = join_all(others, Duration::from_secs(2)).await;
    assert!(values.iter().all(|&v| v == 1), "{values:?}");
    assert_eq!(db.calls(), 2, "one refresh");
    db.open_gate();
    assert_eq!(
        refresher.await.unwrap(),
        2,
        "the refresher returns the new value"
    );
    assert_eq!(Cache::scope(b.clone(), swr_row(&db, 1)).await, 2);
    assert_eq!(db.calls(), 2);
    let (sa, sb) = (a.stats(), b.stats());
    assert_eq!(sa.refreshes + sb.refreshes, 1);
    assert!(sa.stale_served + sb.stale_served >= 21, "{sa:?} {sb:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_if_error_returns_the_expired_value_when_the_body_fails() {
    let server = RedisServer::start();
    for cache in [
        redis_cache(&server, "sie", true).await,
        memory_cache(true).await,
    ] {
        let db = Db::new();
        Cache::scope(cache.clone(), async {
            assert_eq!(sie_row(&db, 1).await, Ok(1));
            assert_eq!(sie_short_row(&db, 1).await, Ok(1));
            tokio::time::sleep(Duration::from_millis(450)).await;
            db.failing.store(true, SeqCst);
            // Expired 150 ms ago, within its 10 s window: served instead of the error.
            assert_eq!(sie_row(&db, 1).await, Ok(1));
            assert_eq!(cache.stats().stale_on_error, 1);
            // Expired 250 ms ago, past its 100 ms window: the error.
            assert_eq!(sie_short_row(&db, 1).await, Err("database down".into()));
            // Healthy again: the fresh value replaces the stale one.
            db.failing.store(false, SeqCst);
            db.bump();
            assert_eq!(sie_row(&db, 1).await, Ok(2));
            assert_eq!(sie_row(&db, 1).await, Ok(2));
        })
        .await;
        assert_eq!(cache.stats().stale_on_error, 1, "{:?}", cache.store_kind());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_refresh_recomputes_before_expiry_while_others_keep_the_value() {
    let server = RedisServer::start();
    for cache in [
        redis_cache(&server, "early", true).await,
        memory_cache(true).await,
    ] {
        let db = Db::new();
        // Miss: the body runs and its duration becomes XFetch's delta.
        assert_eq!(Cache::scope(cache.clone(), early_row(&db, 1)).await, 1);
        db.bump();
        db.close_gate();
        // Fresh for ~2 s, but the draw says refresh: this caller recomputes.
        let refresher = {
            let db = db.clone();
            spawn_in(&cache, async move { early_row(&db, 1).await })
        };
        until_calls(&db, 2).await;
        let others = spawn_calls(
            10,
            &[&cache],
            &db,
            |db| async move { early_row(&db, 1).await },
        );
        let values = join_all(others, Duration::from_secs(2)).await;
        assert!(values.iter().all(|&v| v == 1), "{values:?}");
        db.open_gate();
        assert_eq!(refresher.await.unwrap(), 2);
        let stats = cache.stats();
        assert_eq!(stats.refreshes, 1, "{stats:?}");
        assert_eq!(stats.misses, 1, "only the first call missed: {stats:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_value_kept_for_stale_serving_is_recomputed_once() {
    let server = RedisServer::start();
    let a = redis_cache(&server, "kept", true).await;
    let b = redis_cache(&server, "kept", true).await;
    let db = Db::new();
    assert_eq!(Cache::scope(a.clone(), sie_row(&db, 1)).await, Ok(1));
    tokio::time::sleep(Duration::from_millis(450)).await; // past the TTL, kept for errors
    db.bump();
    db.close_gate();
    let first = {
        let db = db.clone();
        spawn_in(&a, async move { sie_row(&db, 1).await })
    };
    until_calls(&db, 2).await;
    // The others wait for the lease over the expired value, then take the
    // fresh fill instead of leasing it again.
    let others = spawn_calls(
        10,
        &[&a, &b],
        &db,
        |db| async move { sie_row(&db, 1).await },
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    db.open_gate();
    assert_eq!(first.await.unwrap(), Ok(2));
    let values = join_all(others, Duration::from_secs(5)).await;
    assert!(values.iter().all(|v| *v == Ok(2)), "{values:?}");
    assert_eq!(db.calls(), 2, "one recomputation for all of them");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_down_concurrent_calls_share_one_body_at_a_time() {
    let mut server = RedisServer::start();
    let cache = redis_cache(&server, "down", true).await;
    server.kill();
    let db = Db::new();
    db.close_gate();
    let calls = spawn_calls(100, &[&cache], &db, |db| async move { row(&db, 1).await });
    until_calls(&db, 1).await;
    // Longer than one operation timeout: every lookup has given up by now.
    tokio::time::sleep(Duration::from_millis(400)).await;
    db.open_gate();
    let values = join_all(calls, Duration::from_secs(5)).await;
    assert!(values.iter().all(|&v| v == 1));
    // One run at a time: callers that came after the first run started
    // (nothing can confirm its result is still current for them) share
    // the second one.
    let runs = db.calls();
    assert!((1..=2).contains(&runs), "{runs} runs: {:?}", cache.stats());
    assert_eq!(cache.stats().coalesced, 100 - runs, "{:?}", cache.stats());
    assert_eq!(cache.stats().stores, 0);
}
