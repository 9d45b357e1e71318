//! Read-after-invalidate over thousands of interleavings: a deterministic
//! simulation of the read path on the embedded store.
//!
//! Each seed runs readers (four per row and handle, starting at scattered
//! moments) and writers (two per row) of a few rows on 1 to 3 cache handles
//! that share one memory store (as processes share one Redis, each with its
//! own single-flight map), on a current-thread runtime with a paused clock.
//! The seed decides everything that varies: how many handles, which handle
//! each writer uses, how long every body pauses, and how many times every
//! store operation yields to the scheduler before it is sent and after it
//! answered. The same seed replays the same interleaving, so a violation
//! is reported with the seed that reproduces it (`SIM_SEED=<seed>`).
//!
//! The checker is the one of `tests/consistency.rs`: every write commits a
//! version, then invalidates; when the invalidation returned, the row's
//! floor rises to that version; a read that began at floor `f` and returns
//! a version below `f` is a violation.
//!
//! `SIM_SEEDS=n` sets the number of seeds per kind (default 1,000), and
//! `SIM_FIRST_SEED=s` the first one (default 1).

use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::time::Duration;

use cache_runtime::Cache;
use cache_runtime::testing::Interpose;
use rows::{Kind, read, write};

mod rows;

const ROWS: u64 = 2;
const READERS_PER_ROW_AND_HANDLE: usize = 4;
/// Two, so that writes of one row race each other too.
const WRITERS_PER_ROW: usize = 2;
const WRITES_PER_WRITER: u64 = 15;

thread_local! {
    /// The run's random source: one thread runs a whole simulation.
    static RNG: Cell<u64> = const { Cell::new(1) };
}

fn seed_rng(seed: u64) {
    RNG.with(|r| r.set(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1));
}

fn below(n: u64) -> u64 {
    RNG.with(|r| {
        let mut x = r.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        r.set(x);
        x % n.max(1)
    })
}

/// A random scheduling point: yield a few times, or sleep a little
/// (virtual time), as the seed says.
async fn jitter() {
    match below(8) {
        0..=3 => {
            for _ in 0..below(4) {
                tokio::task::yield_now().await;
            }
        }
        4..=6 => tokio::time::sleep(Duration::from_micros(1 + below(300))).await,
        _ => {}
    }
}

struct Db {
    rows: Vec<AtomicU64>,
    floor: Vec<AtomicU64>,
}

impl Db {
    async fn read(&self, id: u64) -> u64 {
        jitter().await;
        let version = self.rows[id as usize].load(SeqCst);
        for _ in 0..below(6) {
            jitter().await;
        }
        version
    }
    async fn write(&self, id: u64) -> u64 {
        jitter().await;
        self.rows[id as usize].fetch_add(1, SeqCst) + 1
    }
}

/// A hook that makes every store operation a scheduling point.
fn scheduling_points() -> Interpose {
    Interpose::new(|_| Some(Box::pin(jitter())))
}

#[derive(Debug, Default)]
struct Outcome {
    reads: u64,
    violations: u64,
    coalesced: u64,
    leases_lost: u64,
}

/// One seed, start to end, on its own runtime.
fn simulate(kind: Kind, seed: u64) -> Outcome {
    seed_rng(seed);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    runtime.block_on(async {
        let handles = 1 + below(3) as usize;
        let first = Cache::builder()
            .namespace("sim")
            .interpose(scheduling_points())
            .build()
            .await
            .unwrap();
        let mut caches = vec![first.clone()];
        for _ in 1..handles {
            let cache = Cache::builder()
                .namespace("sim")
                .share_memory_store(&first)
                .interpose(scheduling_points())
                .build()
                .await
                .unwrap();
            caches.push(cache);
        }
        let db = Rc::new(Db {
            rows: (0..ROWS).map(|_| AtomicU64::new(0)).collect(),
            floor: (0..ROWS).map(|_| AtomicU64::new(0)).collect(),
        });
        let out = Rc::new(std::cell::RefCell::new(Outcome::default()));
        let done = Rc::new(Cell::new(0usize));
        let local = tokio::task::LocalSet::new();
        for cache in &caches {
            for id in 0..ROWS {
                for _ in 0..READERS_PER_ROW_AND_HANDLE {
                    let (db, out, done) = (db.clone(), out.clone(), done.clone());
                    local.spawn_local(Cache::scope(cache.clone(), async move {
                        while done.get() < ROWS as usize * WRITERS_PER_ROW {
                            // Readers start at scattered moments.
                            for _ in 0..below(3) {
                                jitter().await;
                            }
                            let floor = db.floor[id as usize].load(SeqCst);
                            let seen = read(kind, &db, id).await;
                            {
                                let mut out = out.borrow_mut();
                                out.reads += 1;
                                out.violations += u64::from(seen < floor);
                            }
                            // A hit may not yield at all: let others run.
                            tokio::task::yield_now().await;
                        }
                    }));
                }
            }
        }
        for id in (0..ROWS).flat_map(|id| [id; WRITERS_PER_ROW]) {
            let cache = caches[below(handles as u64) as usize].clone();
            let (db, done) = (db.clone(), done.clone());
            local.spawn_local(Cache::scope(cache, async move {
                for _ in 0..WRITES_PER_WRITER {
                    for _ in 0..below(6) {
                        jitter().await;
                    }
                    let version = write(kind, &db, id).await;
                    db.floor[id as usize].fetch_max(version, SeqCst);
                }
                done.set(done.get() + 1);
            }));
        }
        local.await;
        let mut out = std::mem::take(&mut *out.borrow_mut());
        out.coalesced = caches.iter().map(|c| c.stats().coalesced).sum();
        out.leases_lost = caches.iter().map(|c| c.stats().leases_lost).sum();
        out
    })
}

fn explore(kind: Kind) {
    let var = |name: &str| std::env::var(name).ok().and_then(|s| s.parse::<u64>().ok());
    let seeds: Vec<u64> = match var("SIM_SEED") {
        Some(seed) => vec![seed],
        None => {
            let first = var("SIM_FIRST_SEED").unwrap_or(1);
            (first..first + var("SIM_SEEDS").unwrap_or(1_000)).collect()
        }
    };
    let mut total = Outcome::default();
    let mut failing = Vec::new();
    for &seed in &seeds {
        let out = simulate(kind, seed);
        if out.violations > 0 {
            failing.push((seed, out.violations));
        }
        total.reads += out.reads;
        total.violations += out.violations;
        total.coalesced += out.coalesced;
        total.leases_lost += out.leases_lost;
    }
    eprintln!(
        "{kind:?}: {} seeds, {} reads, {} coalesced, {} fills refused, {} violations",
        seeds.len(),
        total.reads,
        total.coalesced,
        total.leases_lost,
        total.violations
    );
    assert!(
        failing.is_empty(),
        "{kind:?}: violations (seed, count): {failing:?}; replay one with SIM_SEED=<seed>"
    );
    assert!(
        total.coalesced > 0 && total.leases_lost > 0,
        "the schedules must reach followers and refused fills: {total:?}"
    );
}

#[test]
fn typed_invalidations_over_many_interleavings() {
    explore(Kind::Typed);
}

#[test]
fn pattern_invalidations_over_many_interleavings() {
    explore(Kind::Pattern);
}

#[test]
fn tag_invalidations_over_many_interleavings() {
    explore(Kind::Tag);
}

#[test]
fn write_throughs_over_many_interleavings() {
    explore(Kind::WriteThrough);
}

#[tokio::test]
async fn sharing_the_store_of_a_cache_without_one_is_a_configuration_error() {
    let disabled = Cache::builder().disabled().build().await.unwrap();
    let err = Cache::builder()
        .share_memory_store(&disabled)
        .build()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("share_memory_store"), "{err}");
}
