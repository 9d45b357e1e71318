//! The stale-set race of cache-aside, tortured: many readers and writers on
//! a few keys, through a proxy that delays every packet by a random time,
//! with random pauses inside the bodies.
//!
//! The race: a reader misses and reads the old row; a writer commits and
//! invalidates; the reader then stores the old row, and every later reader
//! is served it until its TTL. A *stale read* here is a read that started
//! after an invalidation for version `v` had returned and still got a
//! version older than `v`. The same run is made with leases off (plain
//! cache-aside) and on (the default): on must give exactly 0.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::time::{Duration, Instant};

use cache_runtime::{Cache, cached};
use common::{RedisServer, TcpProxy, random_below};

const KEYS: usize = 24;
const READERS_PER_KEY: usize = 3;
/// Cache handles, each with its own connection and single-flight map: the
/// "processes" of the test.
const PROCESSES: usize = 4;
const RACES: u64 = 10_000;

#[derive(Default)]
struct Db {
    rows: Vec<AtomicU64>,
    /// Per row, the newest version whose invalidation has returned.
    invalidated: Vec<AtomicU64>,
}

/// A random pause of up to `max_us`: a database query's variable latency.
async fn pause(max_us: u64) {
    let us = random_below(max_us);
    if us < 200 {
        tokio::task::yield_now().await;
    } else {
        tokio::time::sleep(Duration::from_micros(us)).await;
    }
}

#[cached(prefix = "row", id = "id", ttl = 60, skip = [db])]
async fn read_row(db: &Db, id: usize) -> u64 {
    pause(500).await;
    let version = db.rows[id].load(SeqCst);
    // The race window: the row is read, the result not yet stored.
    pause(2_000).await;
    version
}

#[cached(invalidate = [read_row(id)])]
async fn write_row(db: &Db, id: usize) -> u64 {
    pause(500).await;
    db.rows[id].fetch_add(1, SeqCst) + 1
}

#[derive(Debug)]
struct Report {
    races: u64,
    reads: u64,
    stale_reads: u64,
    leases_lost: u64,
    elapsed: Duration,
}

async fn run(leases: bool) -> Report {
    let server = RedisServer::start();
    let proxy = TcpProxy::start(server.port());
    proxy.jitter(Duration::from_micros(700));
    let mut caches = Vec::new();
    for _ in 0..PROCESSES {
        let cache = Cache::builder()
            .redis_url(proxy.url())
            .namespace("torture")
            .leases(leases)
            // The jitter must never make an operation time out: a timeout
            // would turn the run into an outage test.
            .op_timeout(Duration::from_secs(5))
            .build()
            .await
            .unwrap();
        caches.push(cache);
    }
    let db = Arc::new(Db {
        rows: (0..KEYS).map(|_| AtomicU64::new(0)).collect(),
        invalidated: (0..KEYS).map(|_| AtomicU64::new(0)).collect(),
    });
    let races = Arc::new(AtomicU64::new(0));
    let reads = Arc::new(AtomicU64::new(0));
    let stale = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();

    let mut readers = Vec::new();
    for id in 0..KEYS {
        for r in 0..READERS_PER_KEY {
            let cache = caches[(id + r + 1) % PROCESSES].clone();
            let (db, reads, stale, stop) = (db.clone(), reads.clone(), stale.clone(), stop.clone());
            readers.push(tokio::spawn(Cache::scope(cache, async move {
                while !stop.load(SeqCst) {
                    let floor = db.invalidated[id].load(SeqCst);
                    let seen = read_row(&db, id).await;
                    reads.fetch_add(1, SeqCst);
                    if seen < floor {
                        stale.fetch_add(1, SeqCst);
                    }
                }
            })));
        }
    }
    let mut writers = Vec::new();
    for id in 0..KEYS {
        let cache = caches[id % PROCESSES].clone();
        let (db, races) = (db.clone(), races.clone());
        writers.push(tokio::spawn(Cache::scope(cache, async move {
            while races.fetch_add(1, SeqCst) < RACES {
                pause(3_000).await;
                let version = write_row(&db, id).await;
                db.invalidated[id].fetch_max(version, SeqCst);
            }
        })));
    }
    for w in writers {
        w.await.unwrap();
    }
    stop.store(true, SeqCst);
    for r in readers {
        r.await.unwrap();
    }
    let written: u64 = db.rows.iter().map(|r| r.load(SeqCst)).sum();
    assert_eq!(written, RACES, "every race is one committed write");
    Report {
        races: written,
        reads: reads.load(SeqCst),
        stale_reads: stale.load(SeqCst),
        leases_lost: caches.iter().map(|c| c.stats().leases_lost).sum(),
        elapsed: started.elapsed(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_set_race_leases_off_vs_on() {
    let off = run(false).await;
    let on = run(true).await;
    eprintln!("stale-set torture ({KEYS} keys, {PROCESSES} handles, packet jitter 0-0.7 ms):");
    for (name, r) in [
        ("leases off (plain cache-aside)", &off),
        ("leases on (default)", &on),
    ] {
        eprintln!(
            "  {name:32} races {:>6}  reads {:>7}  stale reads {:>6}  fills refused {:>5}  {:.1?}",
            r.races, r.reads, r.stale_reads, r.leases_lost, r.elapsed
        );
    }
    assert!(
        off.stale_reads > 0,
        "the torture must reproduce the race without leases, or it proves nothing: {off:?}"
    );
    assert_eq!(on.stale_reads, 0, "{on:?}");
    assert!(on.leases_lost > 0, "leases refused stale fills: {on:?}");
}
