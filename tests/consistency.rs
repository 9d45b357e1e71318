//! Read-after-invalidate over many random schedules, against a real Redis
//! through a TCP proxy that delays every packet by a random time.
//!
//! The checker: every write commits a new version of a row and then
//! invalidates (typed, pattern, tag or write-through); when the
//! invalidation has returned, the row's *floor* rises to that version.
//! Every read notes the floor when it begins; a read that returns a
//! version below that floor got a value computed before an invalidation
//! that returned before the read began: a violation. It must never happen.
//!
//! Each run picks, from its seed, 1 to 4 cache handles (each with its own
//! connection and single-flight map: to the protocol, a process), with four
//! readers per row on every handle, so that readers of one handle follow
//! each other's flights, and two writers per row on random handles. Bodies pause for
//! random times inside (the race window between reading the row and
//! storing it). One in four replies also reaches its caller late (a hook
//! around the store's operations, `cache_runtime::testing`): the task that
//! receives a reply is not always the next to run, and a reply on a
//! multiplexed connection can not overtake the one before it, so without
//! this the late-reply races would need a busier machine to show. `tests/consistency_processes.rs` runs the same checker
//! across real OS processes; `CONSISTENCY_RUNS=n` repeats every kind `n`
//! times (default 1).

mod common;
mod rows;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::time::{Duration, Instant};

use cache_runtime::Cache;
use cache_runtime::testing::{Interpose, Phase};
use common::{RedisServer, TcpProxy, random_below};
use rows::{Kind, read, write};

const ROWS: u64 = 3;
const READERS_PER_ROW_AND_HANDLE: usize = 4;
/// Two, so that writes of one row race each other too.
const WRITERS_PER_ROW: usize = 2;
const WRITES: u64 = 3_000;

struct Db {
    rows: Vec<AtomicU64>,
    /// Per row: the newest version whose invalidation has returned.
    floor: Vec<AtomicU64>,
}

impl Db {
    fn new() -> Arc<Self> {
        Arc::new(Db {
            rows: (0..ROWS).map(|_| AtomicU64::new(0)).collect(),
            floor: (0..ROWS).map(|_| AtomicU64::new(0)).collect(),
        })
    }
    async fn read(&self, id: u64) -> u64 {
        pause(400).await;
        let version = self.rows[id as usize].load(SeqCst);
        // The race window: the row is read, the result not yet stored.
        pause(1_500).await;
        version
    }
    async fn write(&self, id: u64) -> u64 {
        pause(300).await;
        self.rows[id as usize].fetch_add(1, SeqCst) + 1
    }
}

/// A random pause of up to `max_us`: a database's variable latency.
async fn pause(max_us: u64) {
    let us = random_below(max_us);
    if us < 150 {
        tokio::task::yield_now().await;
    } else {
        tokio::time::sleep(Duration::from_micros(us)).await;
    }
}

/// One reply in four reaches its caller up to 1 ms late.
fn late_replies() -> Interpose {
    Interpose::new(|step| {
        (step.phase == Phase::Answered && random_below(3) == 0).then(|| {
            let late = Duration::from_micros(random_below(1_000));
            Box::pin(tokio::time::sleep(late)) as _
        })
    })
}

#[derive(Debug)]
struct Report {
    kind: Kind,
    handles: usize,
    writes: u64,
    reads: u64,
    violations: u64,
    coalesced: u64,
    leases_lost: u64,
    elapsed: Duration,
}

/// A seed's choices: a tiny xorshift, so a run's shape can be told again.
fn choices(seed: u64) -> impl FnMut(u64) -> u64 {
    let mut x = seed | 1;
    move |below| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % below
    }
}

async fn run(kind: Kind, seed: u64) -> Report {
    let mut pick = choices(seed);
    let server = RedisServer::start();
    let proxy = TcpProxy::start(server.port());
    proxy.jitter(Duration::from_micros(500));
    let handles = 1 + pick(4) as usize;
    let mut caches = Vec::new();
    for _ in 0..handles {
        let cache = server
            .builder()
            .redis_url(proxy.url())
            .namespace("consistency")
            // The jitter must never make an operation time out: that would
            // turn the run into an outage test.
            .op_timeout(Duration::from_secs(5))
            .interpose(late_replies())
            .build()
            .await
            .unwrap();
        caches.push(cache);
    }
    let db = Db::new();
    let reads = Arc::new(AtomicU64::new(0));
    let violations = Arc::new(AtomicU64::new(0));
    let writes = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();

    let mut readers = Vec::new();
    for cache in &caches {
        for id in 0..ROWS {
            for _ in 0..READERS_PER_ROW_AND_HANDLE {
                let (db, reads, violations, stop) =
                    (db.clone(), reads.clone(), violations.clone(), stop.clone());
                readers.push(tokio::spawn(Cache::scope(cache.clone(), async move {
                    while !stop.load(SeqCst) {
                        // Readers start at scattered moments.
                        pause(300).await;
                        let floor = db.floor[id as usize].load(SeqCst);
                        let seen = read(kind, &db, id).await;
                        reads.fetch_add(1, SeqCst);
                        if seen < floor {
                            violations.fetch_add(1, SeqCst);
                            eprintln!("violation: {kind:?} row {id}: read {seen} after {floor}");
                        }
                    }
                })));
            }
        }
    }
    let mut writers = Vec::new();
    for id in (0..ROWS).flat_map(|id| [id; WRITERS_PER_ROW]) {
        let cache = caches[pick(handles as u64) as usize].clone();
        let (db, writes) = (db.clone(), writes.clone());
        writers.push(tokio::spawn(Cache::scope(cache, async move {
            while writes.fetch_add(1, SeqCst) < WRITES {
                pause(2_500).await;
                let version = write(kind, &db, id).await;
                db.floor[id as usize].fetch_max(version, SeqCst);
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
    assert_eq!(written, WRITES, "every write committed once");
    Report {
        kind,
        handles,
        writes: written,
        reads: reads.load(SeqCst),
        violations: violations.load(SeqCst),
        coalesced: caches.iter().map(|c| c.stats().coalesced).sum(),
        leases_lost: caches.iter().map(|c| c.stats().leases_lost).sum(),
        elapsed: started.elapsed(),
    }
}

async fn check(kind: Kind) {
    let runs: u64 = std::env::var("CONSISTENCY_RUNS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1);
    let base = std::env::var("CONSISTENCY_SEED")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| random_below(u64::MAX - 1) + 1);
    for run_no in 0..runs {
        let seed = base.wrapping_add(run_no);
        let r = run(kind, seed).await;
        eprintln!(
            "{:?} seed {seed}: {} handles, {} writes, {} reads, {} coalesced, {} fills refused, {} violations, {:.1?}",
            r.kind,
            r.handles,
            r.writes,
            r.reads,
            r.coalesced,
            r.leases_lost,
            r.violations,
            r.elapsed
        );
        assert_eq!(r.violations, 0, "{r:?} (seed {seed})");
        assert!(
            r.reads > 100 && r.coalesced > 0,
            "the readers ran and followed each other: {r:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_read_after_a_typed_invalidation_returns_an_older_value() {
    check(Kind::Typed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_read_after_a_pattern_invalidation_returns_an_older_value() {
    check(Kind::Pattern).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_read_after_a_tag_invalidation_returns_an_older_value() {
    check(Kind::Tag).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_read_after_a_write_through_returns_an_older_value() {
    check(Kind::WriteThrough).await;
}
