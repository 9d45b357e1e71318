//! The cache can never fail the caller: Redis killed, restarted, down at
//! start-up, black-holed, or answering with errors. Every call returns the
//! right value within a bound, the circuit breaker opens and closes, caching
//! resumes, and failed invalidations are retried (or counted as dropped).
//!
//! Short timeouts keep this fast: op_timeout 100 ms, breaker 3 failures /
//! 300 ms. Waits poll against deadlines rather than sleeping fixed times.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cache_runtime::{BreakerState, Cache, CacheBuilder, cached};
use common::{RedisServer, TcpProxy, eventually};

const OP_TIMEOUT: Duration = Duration::from_millis(100);
const CONNECT_TIMEOUT: Duration = Duration::from_millis(200);
const BREAKER_FAILURES: u32 = 3;
const OPEN_FOR: Duration = Duration::from_millis(300);
/// Slack on top of the timeouts for a loaded 2-core machine.
const SLACK: Duration = Duration::from_millis(400);

#[derive(Default)]
struct Db {
    calls: AtomicU32,
}

impl Db {
    fn ran(&self) {
        self.calls.fetch_add(1, Ordering::SeqCst);
    }
    fn calls(&self) -> u32 {
        self.calls.load(Ordering::SeqCst)
    }
}

fn expected_square(n: u64) -> u64 {
    n * n + 1
}

#[cached(prefix = "sq", id = "n", ttl = 60, skip = [db])]
async fn square(db: &Db, n: u64) -> u64 {
    db.ran();
    expected_square(n)
}

#[cached(prefix = "user", id = "user_id", ttl = 60, skip = [db])]
async fn get_user(db: &Db, user_id: u64) -> Result<String, String> {
    db.ran();
    Ok(format!("user-{user_id}"))
}

#[cached(invalidate = [get_user(user_id), "user:{user_id}:*"])]
async fn update_user(user_id: u64) -> Result<u64, String> {
    Ok(user_id)
}

fn builder(url: String, namespace: &str) -> CacheBuilder {
    Cache::builder()
        .redis_url(url)
        .namespace(namespace)
        .op_timeout(OP_TIMEOUT)
        .connect_timeout(CONNECT_TIMEOUT)
        .circuit_breaker(BREAKER_FAILURES, OPEN_FOR)
}

/// Calls `square(n)`, checks the value, returns how long the call took.
async fn timed_square(db: &Db, n: u64) -> Duration {
    let start = Instant::now();
    let value = square(db, n).await;
    let took = start.elapsed();
    assert_eq!(
        value,
        expected_square(n),
        "square({n}) returned a wrong value"
    );
    took
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_killed_and_restarted_during_a_stream_of_calls() {
    let mut server = RedisServer::start();
    let cache = builder(server.url(), "f-stream").build().await.unwrap();
    let db = Arc::new(Db::default());
    let total = Arc::new(AtomicU64::new(0));
    let wrong = Arc::new(AtomicU64::new(0));
    let max_latency_us = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));

    const WORKERS: u64 = 4;
    let mut workers = Vec::new();
    for w in 0..WORKERS {
        let (db, total, wrong, max_latency_us, stop) = (
            db.clone(),
            total.clone(),
            wrong.clone(),
            max_latency_us.clone(),
            stop.clone(),
        );
        // A spawned task starts outside the test's scope: give it one.
        workers.push(tokio::spawn(Cache::scope(cache.clone(), async move {
            let mut i = w;
            while !stop.load(Ordering::Relaxed) {
                let n = i % 32;
                let start = Instant::now();
                let value = square(&db, n).await;
                let us = start.elapsed().as_micros() as u64;
                max_latency_us.fetch_max(us, Ordering::Relaxed);
                if value != expected_square(n) {
                    wrong.fetch_add(1, Ordering::Relaxed);
                }
                total.fetch_add(1, Ordering::Relaxed);
                i += WORKERS;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })));
    }
    let wait_calls = |at_least: u64| {
        let total = total.clone();
        async move {
            let ok = eventually(Duration::from_secs(20), || {
                let total = total.clone();
                async move { total.load(Ordering::Relaxed) >= at_least }
            })
            .await;
            assert!(ok, "the stream stalled below {at_least} calls");
        }
    };

    // Phase 1: Redis up, entries cached.
    wait_calls(300).await;
    assert!(cache.stats().hits > 0, "{:?}", cache.stats());

    // Phase 2: Redis gone for at least 500 ms and 300 calls.
    tokio::task::block_in_place(|| server.kill());
    let killed_at = Instant::now();
    let at_kill = total.load(Ordering::Relaxed);
    wait_calls(at_kill + 300).await;
    let opened = eventually(Duration::from_secs(5), || async {
        cache.breaker_state() != Some(BreakerState::Closed)
    })
    .await;
    assert!(opened, "the breaker never left Closed while Redis was down");
    if let Some(rest) = Duration::from_millis(500).checked_sub(killed_at.elapsed()) {
        tokio::time::sleep(rest).await;
    }
    let during_outage = cache.stats();
    assert!(
        during_outage.breaker_rejections > 0,
        "calls skipped Redis while the breaker was open: {during_outage:?}"
    );

    // Phase 3: Redis back (empty): caching resumes.
    tokio::task::block_in_place(|| server.restart());
    let restarted_at = Instant::now();
    let hits_at_restart = cache.stats().hits;
    let resumed = eventually(Duration::from_secs(5), || async {
        cache.stats().hits > hits_at_restart + 50
    })
    .await;
    assert!(
        resumed,
        "no hits after the restart: {:?}, breaker {:?}",
        cache.stats(),
        cache.breaker_state()
    );
    let resumed_after = restarted_at.elapsed();
    let keys = tokio::task::block_in_place(|| server.keys());
    assert!(
        keys.iter().any(|k| k.starts_with("f-stream:sq:")),
        "entries reappear in the new server: {keys:?}"
    );

    wait_calls(2_000).await;
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.await.unwrap();
    }
    let total = total.load(Ordering::Relaxed);
    let max_latency = Duration::from_micros(max_latency_us.load(Ordering::Relaxed));
    eprintln!(
        "stream: {total} calls, max latency {max_latency:?}, caching resumed {resumed_after:?} after the restart, {:?}",
        cache.stats()
    );
    assert_eq!(
        wrong.load(Ordering::Relaxed),
        0,
        "every call returned the right value"
    );
    assert!(total >= 2_000);
    assert!(
        max_latency < Duration::from_secs(1),
        "a call took {max_latency:?}"
    );
}

#[tokio::test]
async fn redis_down_at_start_up_then_up() {
    let port = common::free_port();
    let start = Instant::now();
    let cache = builder(format!("redis://127.0.0.1:{port}"), "f-down")
        .build()
        .await
        .expect("an unreachable Redis is not a configuration error");
    let took = start.elapsed();
    assert!(
        took < 2 * CONNECT_TIMEOUT,
        "build() took {took:?} with Redis down"
    );
    let db = Db::default();
    Cache::scope(cache.clone(), async {
        let mut max = Duration::ZERO;
        for n in 0..20 {
            max = max.max(timed_square(&db, n % 5).await);
        }
        assert_eq!(db.calls(), 20, "no cache: every call runs the body");
        assert!(max < OP_TIMEOUT + SLACK, "a call took {max:?}");

        let server = RedisServer::start_on(port);
        let resumed = eventually(Duration::from_secs(5), || async {
            timed_square(&db, 7).await;
            cache.stats().hits > 0
        })
        .await;
        assert!(
            resumed,
            "caching did not resume once Redis came up: {:?}, breaker {:?}",
            cache.stats(),
            cache.breaker_state()
        );
        assert!(server.exists("f-down:sq:7"), "{:?}", server.keys());
        assert_eq!(cache.breaker_state(), Some(BreakerState::Closed));
    })
    .await;
}

#[tokio::test]
async fn redis_hanging_at_start_up_does_not_hang_build() {
    let server = RedisServer::start();
    let proxy = TcpProxy::start(server.port());
    proxy.blackhole();
    let start = Instant::now();
    let cache = builder(proxy.url(), "f-hang").build().await.unwrap();
    let took = start.elapsed();
    assert!(
        took < 2 * CONNECT_TIMEOUT,
        "build() took {took:?} with Redis not answering"
    );
    let db = Db::default();
    Cache::scope(cache.clone(), async {
        let mut max = Duration::ZERO;
        for n in 0..10 {
            max = max.max(timed_square(&db, n).await);
        }
        assert!(max < OP_TIMEOUT + SLACK, "a call took {max:?}");
        assert_eq!(db.calls(), 10);

        proxy.restore();
        let resumed = eventually(Duration::from_secs(5), || async {
            timed_square(&db, 3).await;
            cache.stats().hits > 0
        })
        .await;
        assert!(resumed, "{:?}", cache.stats());
        assert!(server.exists("f-hang:sq:3"));
    })
    .await;
}

#[tokio::test]
async fn black_holed_connection_times_out_opens_the_breaker_and_recovers() {
    let server = RedisServer::start();
    let proxy = TcpProxy::start(server.port());
    let cache = builder(proxy.url(), "f-bh").build().await.unwrap();
    let db = Db::default();
    Cache::scope(cache.clone(), async {
        timed_square(&db, 1).await;
        timed_square(&db, 1).await;
        assert_eq!((db.calls(), cache.stats().hits), (1, 1));

        proxy.blackhole();

        // Until the breaker opens, each call pays at most the timeouts.
        let mut max = Duration::ZERO;
        let mut calls = 0;
        while cache.breaker_state() != Some(BreakerState::Open) {
            assert!(calls < 10, "breaker still {:?}", cache.breaker_state());
            max = max.max(timed_square(&db, calls % 3).await);
            calls += 1;
        }
        let stats = cache.stats();
        assert!(stats.timeouts >= u64::from(BREAKER_FAILURES), "{stats:?}");
        assert!(
            max < OP_TIMEOUT + SLACK,
            "a call under a black hole took {max:?}"
        );
        eprintln!("black hole: breaker open after {calls} calls, slowest {max:?}");

        // While open, calls skip Redis: far faster than the op timeout.
        let rejections = cache.stats().breaker_rejections;
        let mut fast = 0;
        let mut max = Duration::ZERO;
        let window = Instant::now();
        for n in 0..50 {
            let took = timed_square(&db, n).await;
            max = max.max(took);
            if took < OP_TIMEOUT / 4 {
                fast += 1;
            }
        }
        eprintln!(
            "black hole, breaker open: 50 calls in {:?}, {fast} fast, slowest {max:?}",
            window.elapsed()
        );
        assert!(fast >= 45, "only {fast} of 50 calls skipped the timeout");
        assert!(max < OP_TIMEOUT + SLACK, "a call took {max:?}");
        assert!(
            cache.stats().breaker_rejections >= rejections + 45,
            "{:?}",
            cache.stats()
        );

        // Network back: a probe closes the breaker, hits come back.
        proxy.restore();
        let restored_at = Instant::now();
        let closed = eventually(OPEN_FOR + Duration::from_secs(3), || async {
            timed_square(&db, 1).await;
            cache.breaker_state() == Some(BreakerState::Closed)
        })
        .await;
        assert!(
            closed,
            "breaker {:?} after restore: {:?}",
            cache.breaker_state(),
            cache.stats()
        );
        eprintln!(
            "black hole: breaker closed {:?} after restore",
            restored_at.elapsed()
        );
        let hits = cache.stats().hits;
        let resumed = eventually(Duration::from_secs(3), || async {
            timed_square(&db, 2).await;
            cache.stats().hits >= hits + 2
        })
        .await;
        assert!(resumed, "no hits after restore: {:?}", cache.stats());
    })
    .await;
}

#[tokio::test]
async fn breaker_opens_when_the_server_dies_and_closes_after_restart() {
    let mut server = RedisServer::start();
    let cache = builder(server.url(), "f-breaker").build().await.unwrap();
    let db = Db::default();
    Cache::scope(cache.clone(), async {
        timed_square(&db, 1).await;
        assert_eq!(cache.breaker_state(), Some(BreakerState::Closed));

        server.kill();
        let mut calls = 0;
        let mut max = Duration::ZERO;
        while cache.breaker_state() != Some(BreakerState::Open) {
            assert!(
                calls < 20,
                "breaker still {:?} after {calls} calls: {:?}",
                cache.breaker_state(),
                cache.stats()
            );
            max = max.max(timed_square(&db, calls % 4).await);
            calls += 1;
        }
        assert!(max < OP_TIMEOUT + SLACK, "a call took {max:?}");
        let rejections = cache.stats().breaker_rejections;
        for n in 0..10 {
            timed_square(&db, n).await;
        }
        assert!(cache.stats().breaker_rejections >= rejections + 9);
        assert!(cache.stats().store_errors + cache.stats().timeouts >= u64::from(BREAKER_FAILURES));

        server.restart();
        let restarted_at = Instant::now();
        let closed = eventually(OPEN_FOR + Duration::from_secs(2), || async {
            timed_square(&db, 1).await;
            cache.breaker_state() == Some(BreakerState::Closed)
        })
        .await;
        assert!(
            closed,
            "breaker {:?} {:?} after the restart: {:?}",
            cache.breaker_state(),
            restarted_at.elapsed(),
            cache.stats()
        );
        let calls = db.calls();
        timed_square(&db, 9).await;
        timed_square(&db, 9).await;
        assert_eq!(db.calls(), calls + 1, "the second call is a hit again");
        assert!(server.exists("f-breaker:sq:9"));
    })
    .await;
}

#[tokio::test]
async fn failed_invalidation_is_retried_until_it_reaches_the_restarted_server() {
    let mut server = RedisServer::start();
    let cache = builder(server.url(), "f-retry")
        .invalidation_retry_for(Duration::from_secs(10))
        .build()
        .await
        .unwrap();
    let db = Db::default();
    Cache::scope(cache.clone(), async {
        assert_eq!(get_user(&db, 1).await.unwrap(), "user-1");
        assert_eq!(get_user(&db, 2).await.unwrap(), "user-2");
        server.cli(&["SET", "f-retry:user:1:avatar", "old"]);
        // A server with persistence: what it holds now survives the crash.
        server.save();
        server.kill();

        assert_eq!(
            update_user(1).await,
            Ok(1),
            "a failed invalidation never fails the write"
        );
        let stats = cache.stats();
        assert!(stats.invalidation_failures > 0, "{stats:?}");
        assert_eq!(stats.invalidations_dropped, 0);

        server.restart();
        // The entry of user 2 (never invalidated) survived the crash, so the
        // stale ones did too; the background retry must remove those.
        assert!(server.exists("f-retry:user:2"), "{:?}", server.keys());
        let removed = eventually(Duration::from_secs(6), || async {
            !server.exists("f-retry:user:1") && !server.exists("f-retry:user:1:avatar")
        })
        .await;
        assert!(
            removed,
            "stale entries left after the restart: {:?}, {:?}",
            server.keys(),
            cache.stats()
        );
        assert!(server.exists("f-retry:user:2"));
        assert!(server.command_calls("unlink") >= 1);
        let stats = cache.stats();
        assert!(stats.invalidation_retries > 0, "{stats:?}");
        assert_eq!(stats.invalidations_dropped, 0, "{stats:?}");

        let calls = db.calls();
        assert_eq!(get_user(&db, 1).await.unwrap(), "user-1");
        assert_eq!(db.calls(), calls + 1, "user 1 is loaded afresh");
    })
    .await;
}

#[tokio::test]
async fn invalidation_is_dropped_and_counted_after_the_retry_window() {
    let mut server = RedisServer::start();
    let cache = builder(server.url(), "f-drop")
        .invalidation_retry_for(Duration::from_millis(300))
        .build()
        .await
        .unwrap();
    let db = Db::default();
    Cache::scope(cache.clone(), async {
        get_user(&db, 1).await.unwrap();
        server.save();
        server.kill();
        assert_eq!(update_user(1).await, Ok(1));
        let dropped = eventually(Duration::from_secs(3), || async {
            cache.stats().invalidations_dropped > 0
        })
        .await;
        assert!(dropped, "{:?}", cache.stats());
        let stats = cache.stats();
        assert!(stats.invalidation_failures > 0, "{stats:?}");

        // Given up: the entry stays stale (until its TTL) once Redis is back.
        server.restart();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(server.exists("f-drop:user:1"));
        assert_eq!(server.command_calls("unlink"), 0);
    })
    .await;
}

#[tokio::test]
async fn error_replies_are_counted_and_do_not_open_the_breaker() {
    let server = RedisServer::start();
    let cache = builder(server.url(), "f-oom").build().await.unwrap();
    let db = Db::default();
    Cache::scope(cache.clone(), async {
        // Every write now fails with an OOM error reply; reads still work.
        assert_eq!(server.cli(&["CONFIG", "SET", "maxmemory", "1"]), "OK");
        for n in 0..20 {
            timed_square(&db, n % 2).await;
        }
        assert_eq!(db.calls(), 20, "nothing could be stored");
        let stats = cache.stats();
        // Two per call: the lease script, then the plain SET a miss falls
        // back to when Redis answers the lease with an error.
        assert_eq!(stats.store_errors, 40, "{stats:?}");
        assert_eq!(stats.stores, 0);
        assert_eq!(cache.breaker_state(), Some(BreakerState::Closed));
        assert!(server.keys().is_empty());

        assert_eq!(server.cli(&["CONFIG", "SET", "maxmemory", "0"]), "OK");
        timed_square(&db, 5).await;
        timed_square(&db, 5).await;
        assert_eq!(db.calls(), 21);
        assert_eq!(cache.stats().hits, 1);
    })
    .await;
}

/// A caller that gives up on a call (a request timeout, a `select!`, a
/// client that disconnects) while that call is the breaker's probe must not
/// leave the breaker half-open for good.
#[tokio::test]
async fn a_cancelled_probe_does_not_leave_the_breaker_half_open() {
    let server = RedisServer::start();
    let proxy = TcpProxy::start(server.port());
    let cache = builder(proxy.url(), "f-cancel").build().await.unwrap();
    let db = Db::default();
    Cache::scope(cache.clone(), async {
        timed_square(&db, 1).await;
        proxy.blackhole();
        let mut calls = 0;
        while cache.breaker_state() != Some(BreakerState::Open) {
            assert!(calls < 10, "breaker still {:?}", cache.breaker_state());
            timed_square(&db, calls % 3).await;
            calls += 1;
        }
        // Past open_for, the next call is the probe; its caller gives up
        // before the operation timeout.
        tokio::time::sleep(OPEN_FOR + Duration::from_millis(50)).await;
        let gave_up = tokio::time::timeout(Duration::from_millis(20), square(&db, 1)).await;
        assert!(gave_up.is_err(), "the call was cancelled while probing");

        proxy.restore();
        let closed = eventually(OPEN_FOR + Duration::from_secs(3), || async {
            timed_square(&db, 1).await;
            cache.breaker_state() == Some(BreakerState::Closed)
        })
        .await;
        assert!(
            closed,
            "breaker {:?} long after Redis came back: {:?}",
            cache.breaker_state(),
            cache.stats()
        );
    })
    .await;
}

/// `CacheBuilder::op_timeout` documents: "A call never waits longer than
/// this for the cache." A miss makes two operations (GET, then SET), each
/// bounded separately, so under a black hole it waits twice as long.
#[tokio::test]
async fn a_call_waits_at_most_op_timeout_for_the_cache() {
    let op_timeout = Duration::from_millis(200);
    let server = RedisServer::start();
    let proxy = TcpProxy::start(server.port());
    let cache = Cache::builder()
        .redis_url(proxy.url())
        .namespace("f-bound")
        .op_timeout(op_timeout)
        .build()
        .await
        .unwrap();
    let db = Db::default();
    Cache::scope(cache.clone(), async {
        timed_square(&db, 1).await;
        proxy.blackhole();
        let took = timed_square(&db, 2).await;
        assert!(
            took < op_timeout + op_timeout / 2,
            "a miss waited {took:?} for the cache with op_timeout {op_timeout:?}"
        );
    })
    .await;
}

/// With a breaker that never opens, reconnecting is up to the connection
/// itself: calls made while the server is down, then after it is back.
#[tokio::test]
async fn reconnects_after_a_restart_without_the_breakers_help() {
    let mut server = RedisServer::start();
    let cache = Cache::builder()
        .redis_url(server.url())
        .namespace("f-reconnect")
        .op_timeout(OP_TIMEOUT)
        .connect_timeout(CONNECT_TIMEOUT)
        .circuit_breaker(1_000_000, OPEN_FOR)
        .build()
        .await
        .unwrap();
    let db = Db::default();
    Cache::scope(cache.clone(), async {
        timed_square(&db, 1).await;
        server.kill();
        let mut max = Duration::ZERO;
        for n in 0..20 {
            max = max.max(timed_square(&db, n).await);
        }
        assert!(max < OP_TIMEOUT + SLACK, "a call took {max:?}");
        assert_eq!(cache.breaker_state(), Some(BreakerState::Closed));
        server.restart();
        let hits = cache.stats().hits;
        let resumed = eventually(Duration::from_secs(5), || async {
            timed_square(&db, 4).await;
            cache.stats().hits > hits
        })
        .await;
        assert!(resumed, "no hits after the restart: {:?}", cache.stats());
    })
    .await;
}

/// A server that stalls (`DEBUG SLEEP`) answers the timed-out requests late,
/// on the same multiplexed connection: no late reply may be taken for the
/// answer to a later request.
#[tokio::test]
async fn a_stalled_server_costs_a_timeout_and_late_replies_are_not_mixed_up() {
    let server = RedisServer::start();
    let cache = Cache::builder()
        .redis_url(server.url())
        .namespace("f-slow")
        .op_timeout(OP_TIMEOUT)
        .circuit_breaker(1_000_000, OPEN_FOR)
        .build()
        .await
        .unwrap();
    let db = Db::default();
    Cache::scope(cache.clone(), async {
        for n in 0..20 {
            timed_square(&db, n).await;
        }
        // The server stops processing commands for 600 ms.
        assert_eq!(server.cli(&["CLIENT", "PAUSE", "600", "ALL"]), "OK");
        let paused_at = Instant::now();
        let mut max = Duration::ZERO;
        for n in 0..40 {
            max = max.max(timed_square(&db, n).await);
        }
        assert!(max < OP_TIMEOUT + SLACK, "a call took {max:?}");
        assert!(cache.stats().timeouts > 0, "{:?}", cache.stats());
        if let Some(rest) = Duration::from_millis(700).checked_sub(paused_at.elapsed()) {
            tokio::time::sleep(rest).await;
        }
        // Late replies are in; every value must still be the right one.
        for _ in 0..3 {
            for n in 0..40 {
                timed_square(&db, n).await;
            }
        }
        let stats = cache.stats();
        assert_eq!(stats.decode_errors, 0, "{stats:?}");
        assert!(stats.hits >= 100, "{stats:?}");
    })
    .await;
}
