//! Early refresh under steady load: one hot key, 16 concurrent callers,
//! through 20 expiries of its TTL, with and without XFetch early refresh.
//! Prints, per expiry, how many bodies ran and how many callers missed.
//!
//! Without early refresh every expiry is a miss for every caller that
//! arrives while the body runs (single flight and the lease keep it to one
//! body); with it, one caller recomputes shortly before the expiry and the
//! others never see a miss.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::time::{Duration, Instant};

use cache_runtime::{Cache, cached};
use common::RedisServer;

const TTL: Duration = Duration::from_millis(300);
const EXPIRIES: u32 = 20;
const CALLERS: usize = 16;
const BODY: Duration = Duration::from_millis(30);

#[derive(Default)]
struct Db {
    bodies: AtomicU64,
}

impl Db {
    async fn query(&self) -> u64 {
        tokio::time::sleep(BODY).await;
        self.bodies.fetch_add(1, SeqCst) + 1
    }
}

#[cached(prefix = "hot", id = "id", ttl = "300ms", skip = [db])]
async fn plain(db: &Db, id: u64) -> u64 {
    db.query().await
}

#[cached(prefix = "hot", id = "id", ttl = "300ms", early_refresh = true, skip = [db])]
async fn early(db: &Db, id: u64) -> u64 {
    db.query().await
}

#[derive(Debug)]
struct Report {
    calls: u64,
    bodies: u64,
    misses: u64,
    /// Calls that took at least the body's duration: they waited for a body
    /// (their own refresh included).
    delayed: u64,
}

async fn load(server: &RedisServer, early_refresh: bool) -> Report {
    let cache = server
        .builder()
        .namespace(if early_refresh { "xf-on" } else { "xf-off" })
        .build()
        .await
        .unwrap();
    let db = Arc::new(Db::default());
    let stop = Arc::new(AtomicBool::new(false));
    let (calls, delayed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    // Warm the key, so both runs start from a fresh value.
    Cache::scope(cache.clone(), async {
        if early_refresh {
            early(&db, 1).await
        } else {
            plain(&db, 1).await
        }
    })
    .await;
    let warm = cache.stats();
    let bodies_before = db.bodies.load(SeqCst);
    let mut tasks = Vec::new();
    for _ in 0..CALLERS {
        let (db, stop, calls, delayed) = (db.clone(), stop.clone(), calls.clone(), delayed.clone());
        tasks.push(tokio::spawn(Cache::scope(cache.clone(), async move {
            while !stop.load(SeqCst) {
                let started = Instant::now();
                let value = if early_refresh {
                    early(&db, 1).await
                } else {
                    plain(&db, 1).await
                };
                assert!(value >= 1);
                calls.fetch_add(1, SeqCst);
                if started.elapsed() >= BODY {
                    delayed.fetch_add(1, SeqCst);
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })));
    }
    tokio::time::sleep(TTL * EXPIRIES).await;
    stop.store(true, SeqCst);
    for t in tasks {
        t.await.unwrap();
    }
    let stats = cache.stats();
    Report {
        calls: calls.load(SeqCst),
        bodies: db.bodies.load(SeqCst) - bodies_before,
        misses: stats.misses - warm.misses,
        delayed: delayed.load(SeqCst),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hot_key_through_20_expiries_with_and_without_early_refresh() {
    let server = RedisServer::start();
    let off = load(&server, false).await;
    let on = load(&server, true).await;
    let per = |n: u64| n as f64 / f64::from(EXPIRIES);
    eprintln!(
        "hot key, {CALLERS} callers, ttl {TTL:?}, body {BODY:?}, {EXPIRIES} expiries (per expiry):"
    );
    for (name, r) in [("early refresh off", &off), ("early refresh on", &on)] {
        eprintln!(
            "  {name:18} calls {:>6}  bodies {:>5.2}  caller misses {:>6.2}  callers delayed by a body {:>6.2}",
            r.calls,
            per(r.bodies),
            per(r.misses),
            per(r.delayed)
        );
    }
    // Without: every expiry is a miss for someone (usually for every caller).
    assert!(off.misses >= u64::from(EXPIRIES) - 1, "{off:?}");
    // With: no caller misses; about one body per TTL (XFetch refreshes a
    // little before each expiry, so slightly more than one).
    assert!(on.misses <= 1, "{on:?}");
    assert!(
        on.bodies >= u64::from(EXPIRIES) - 2,
        "the value is kept fresh: {on:?}"
    );
    assert!(
        on.bodies <= u64::from(EXPIRIES) * 4,
        "one refresh per expiry, not a storm: {on:?}"
    );
    assert!(on.delayed < off.delayed, "{on:?} vs {off:?}");
}
