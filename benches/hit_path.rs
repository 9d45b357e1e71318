//! Cache-hit path: `#[cached]` against hand-written redis-rs cache-aside.
//!
//! Both sides read the same pre-warmed keys from the same `redis-server`
//! (started on a free port by the test harness) and decode the same ~200-byte
//! JSON value into the same struct:
//!
//! - baseline: `GET key` through a `redis::aio::ConnectionManager` (default
//!   config), then `serde_json::from_slice`; what a service writes by hand;
//! - framework: `get_user(id)`, a `#[cached]` function, with the cache given
//!   by `Cache::scope` and then, last, by `cache_runtime::install` (the
//!   production path).
//!
//! Each scenario runs at concurrency 1 and 64 (tasks on a multi-thread tokio
//! runtime, each doing sequential calls; N calls in total per run), for
//! many rounds that alternate baseline and framework (in ABBA order), so
//! drift of the machine does not bias the ratio; the table reports medians.
//!
//! `cargo bench --bench hit_path` runs it (about a minute). Without `--bench`
//! (as under `cargo test --benches`) it runs a few hundred calls per side as
//! a smoke test. Environment overrides:
//!
//! - `HIT_PATH_ROUNDS` (40) and `HIT_PATH_RUN_SECS` (0.15): rounds per
//!   scenario and the target duration of one run (a scenario stops early,
//!   after at least 10 rounds, once it took twice its planned time). Many short back-to-back
//!   pairs cancel the load of other processes on a small shared machine
//!   better than a few long runs;
//! - `HIT_PATH_VERBOSE=1`: print every round;
//! - `HIT_PATH_PROFILE=baseline|scoped|global` (with `HIT_PATH_CALLS`,
//!   default 20000, and `HIT_PATH_CONCURRENCY`, default 1): run only that
//!   side, once, for a profiler (`valgrind --tool=callgrind`, `perf`).

#[path = "../tests/common/mod.rs"]
mod harness;

mod common;

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use cache_runtime::{Cache, cached};
use common::{User, env_or, process_cpu, quantile, user};
use redis::aio::ConnectionManager;

/// Distinct pre-warmed keys; every call is a hit.
const KEYS: u64 = 1_000;
const NAMESPACE: &str = "bench";

/// The "database": runs only while the keys are warmed.
fn load_user(id: u64) -> User {
    BODY_RUNS.fetch_add(1, Relaxed);
    user(id)
}

static BODY_RUNS: AtomicU64 = AtomicU64::new(0);

#[cached(prefix = "user", id = "id", ttl = 3600)]
async fn get_user(id: u64) -> Result<User, String> {
    Ok(load_user(id))
}

/// Hand-written cache-aside with redis-rs, the same work as `get_user`.
async fn baseline_get_user(conn: &mut ConnectionManager, id: u64) -> Result<User, String> {
    let key = format!("{NAMESPACE}:user:{id}");
    let cached: redis::RedisResult<Option<Vec<u8>>> =
        redis::cmd("GET").arg(&key).query_async(conn).await;
    if let Ok(Some(bytes)) = cached
        && let Ok(user) = serde_json::from_slice(&bytes)
    {
        return Ok(user);
    }
    let user = load_user(id);
    if let Ok(bytes) = serde_json::to_vec(&user) {
        let _: redis::RedisResult<()> = redis::cmd("SET")
            .arg(&key)
            .arg(bytes)
            .arg("EX")
            .arg(3600)
            .query_async(conn)
            .await;
    }
    Ok(user)
}

#[derive(Clone)]
enum Side {
    Baseline(ConnectionManager),
    Scoped(Cache),
    Global,
}

/// `ops` sequential calls starting at key `first`; returns the summed latency.
macro_rules! timed_calls {
    ($first:expr, $ops:expr, |$id:ident| $call:expr) => {{
        let mut busy = Duration::ZERO;
        for i in 0..$ops {
            let $id = ($first + i) % KEYS;
            let start = Instant::now();
            let user: Result<User, String> = $call.await;
            busy += start.elapsed();
            assert_eq!(black_box(user).map(|u| u.id), Ok($id));
        }
        busy
    }};
}

async fn task(side: Side, first: u64, ops: u64) -> Duration {
    match side {
        Side::Baseline(mut conn) => timed_calls!(first, ops, |id| baseline_get_user(&mut conn, id)),
        Side::Scoped(cache) => {
            Cache::scope(
                cache,
                async move { timed_calls!(first, ops, |id| get_user(id)) },
            )
            .await
        }
        Side::Global => timed_calls!(first, ops, |id| get_user(id)),
    }
}

#[derive(Clone, Copy)]
struct Sample {
    ops: u64,
    ops_per_sec: f64,
    mean_latency: Duration,
    /// CPU time of this process (all threads) during the run, if known.
    cpu: Option<Duration>,
}

/// `total` calls spread over `concurrency` spawned tasks.
async fn run(side: &Side, concurrency: u64, total: u64) -> Sample {
    let per_task = total / concurrency;
    let cpu_before = process_cpu("self");
    let start = Instant::now();
    let handles: Vec<_> = (0..concurrency)
        .map(|t| tokio::spawn(task(side.clone(), t * (KEYS / concurrency), per_task)))
        .collect();
    let mut busy = Duration::ZERO;
    for h in handles {
        busy += h.await.expect("a benchmark task panicked");
    }
    let wall = start.elapsed();
    let cpu = process_cpu("self")
        .zip(cpu_before)
        .map(|(after, before)| after - before);
    let ops = per_task * concurrency;
    Sample {
        ops,
        ops_per_sec: ops as f64 / wall.as_secs_f64(),
        mean_latency: busy / ops as u32,
        cpu,
    }
}

struct Row {
    scenario: String,
    baseline: Vec<Sample>,
    framework: Vec<Sample>,
}

impl Row {
    fn print(&self) {
        let ops = |s: &[Sample]| quantile(s.iter().map(|s| s.ops_per_sec).collect(), 0.5);
        let lat = |s: &[Sample]| {
            quantile(
                s.iter()
                    .map(|s| s.mean_latency.as_secs_f64() * 1e6)
                    .collect(),
                0.5,
            )
        };
        // Each round's two runs are adjacent in time: their ratio cancels
        // drift and load shared by both.
        let ratios: Vec<f64> = self
            .baseline
            .iter()
            .zip(&self.framework)
            .map(|(b, f)| f.ops_per_sec / b.ops_per_sec)
            .collect();
        // Total CPU over total calls, per side.
        let cpu = |s: &[Sample]| {
            let cpu: Option<Duration> = s.iter().map(|s| s.cpu).sum();
            let ops: u64 = s.iter().map(|s| s.ops).sum();
            cpu.map_or("n/a".to_owned(), |c| {
                format!("{:.2}", c.as_secs_f64() * 1e6 / ops as f64)
            })
        };
        println!(
            "| {:<14} | {:>6} | {:>9.0} | {:>9.0} | {:>6.3} | {:>5.3} - {:<5.3} | {:>9.1} | {:>9.1} | {:>9} | {:>9} |",
            self.scenario,
            self.baseline.len(),
            ops(&self.baseline),
            ops(&self.framework),
            quantile(ratios.clone(), 0.5),
            quantile(ratios.clone(), 0.25),
            quantile(ratios, 0.75),
            lat(&self.baseline),
            lat(&self.framework),
            cpu(&self.baseline),
            cpu(&self.framework),
        );
    }
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` does not.
    let full = std::env::args().any(|a| a == "--bench");
    let rounds = if full {
        env_or("HIT_PATH_ROUNDS", 40)
    } else {
        1
    };
    let run_secs = env_or("HIT_PATH_RUN_SECS", 0.15);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let server = harness::RedisServer::start();
    rt.block_on(bench(&server, full, rounds, run_secs));
}

async fn bench(server: &harness::RedisServer, full: bool, rounds: usize, run_secs: f64) {
    let cache = Cache::builder()
        .redis_url(server.url())
        .namespace(NAMESPACE)
        .build()
        .await
        .expect("cache");
    let client = redis::Client::open(server.url()).expect("redis client");
    let conn = ConnectionManager::new(client).await.expect("connect");

    // Warm every key through the framework; the baseline reads the same keys.
    Cache::scope(cache.clone(), async {
        assert_eq!(get_user_key(&42), format!("{NAMESPACE}:user:42"));
        for id in 0..KEYS {
            get_user(id).await.expect("warm");
        }
    })
    .await;
    assert_eq!(
        BODY_RUNS.load(Relaxed),
        KEYS,
        "warm-up must store every key"
    );
    let value = server.cli(&["GET", &format!("{NAMESPACE}:user:42")]);
    let workers = tokio::runtime::Handle::current().metrics().num_workers();
    println!(
        "redis-server on port {}, {KEYS} keys, value {} bytes: {value}",
        server.port(),
        value.len(),
    );
    println!(
        "tokio multi-thread runtime, {workers} workers ({} CPUs, shared with redis-server); \
         {rounds} round(s) per scenario, baseline and framework alternated",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    let baseline = Side::Baseline(conn);
    let scoped = Side::Scoped(cache.clone());
    if let Ok(side) = std::env::var("HIT_PATH_PROFILE") {
        let side = match side.as_str() {
            "baseline" => baseline,
            "scoped" => scoped,
            "global" => {
                cache_runtime::install(cache.clone());
                Side::Global
            }
            other => panic!("HIT_PATH_PROFILE={other}: expected baseline, scoped or global"),
        };
        let (calls, concurrency) = (
            env_or("HIT_PATH_CALLS", 20_000),
            env_or("HIT_PATH_CONCURRENCY", 1),
        );
        let s = run(&side, concurrency, calls).await;
        println!(
            "profile run: {calls} calls at c={concurrency}: {:.0} ops/s, mean {:?}",
            s.ops_per_sec, s.mean_latency
        );
        return;
    }
    // Twice the planned time of a scenario.
    let budget = Duration::from_secs_f64(2.0 * rounds as f64 * 2.0 * run_secs);
    let mut rows = Vec::new();
    let mut calls_per_run = Vec::new();
    for concurrency in [1, 64] {
        // Size N so that one run takes about `run_secs` (a fixed N per scenario).
        let total = if full {
            run(&baseline, concurrency, 64 * 40).await;
            run(&scoped, concurrency, 64 * 40).await;
            // The fastest of three probes: a probe slowed down by a burst of
            // load elsewhere would make every run of the scenario too short.
            let mut fastest = 0f64;
            for _ in 0..3 {
                fastest = fastest.max(run(&baseline, concurrency, 64 * 50).await.ops_per_sec);
            }
            let n = (fastest * run_secs) as u64;
            (n / concurrency).max(64 * 40 / concurrency) * concurrency
        } else {
            256
        };
        calls_per_run.push((concurrency, total));
        rows.push(
            measure(
                &format!("scoped, c={concurrency}"),
                &baseline,
                &scoped,
                concurrency,
                total,
                rounds,
                budget,
            )
            .await,
        );
    }

    // The production path, last: once installed, the global cache stays.
    cache_runtime::install(cache.clone());
    for &(concurrency, total) in &calls_per_run {
        if full {
            run(&Side::Global, concurrency, 64 * 40).await;
        }
        rows.push(
            measure(
                &format!("global, c={concurrency}"),
                &baseline,
                &Side::Global,
                concurrency,
                total,
                rounds,
                budget,
            )
            .await,
        );
    }

    // Every measured call must have been a hit. Under heavy load a call can
    // exceed the 200 ms operation timeout and run the body: report it (and
    // fail the smoke run, which must be clean).
    let stats = cache.stats();
    let not_hits = BODY_RUNS.load(Relaxed) - KEYS;
    let problems = stats.store_errors + stats.timeouts + stats.decode_errors;
    if not_hits + problems > 0 {
        println!(
            "\nWARNING: {not_hits} measured calls were not hits ({} timeouts, {} store errors, \
             {} decode errors); the framework numbers include them",
            stats.timeouts, stats.store_errors, stats.decode_errors
        );
        assert!(full, "the smoke run must only hit the cache: {stats:?}");
    }

    println!();
    for (concurrency, total) in &calls_per_run {
        println!("c={concurrency}: N = {total} calls per run");
    }
    println!(
        "\n| scenario       | rounds | baseline  | framework | ratio  | ratio         | baseline  | framework | baseline  | framework |"
    );
    println!(
        "|                |        | ops/s     | ops/s     | fw/bl  | IQR           | mean µs   | mean µs   | CPU µs/op | CPU µs/op |"
    );
    println!(
        "|----------------|--------|-----------|-----------|--------|---------------|-----------|-----------|-----------|-----------|"
    );
    for row in &rows {
        row.print();
    }
    println!(
        "\nmedians over the rounds; ratio: median of the per-round ratios (each round \
         runs both sides back to back), IQR: their 25th-75th percentile;\n\
         CPU µs/op: this process's CPU time (all threads; redis-server excluded) per call, over all rounds.\n\
         target: ratio >= 0.90 (framework at most 10% slower)"
    );
    if !full {
        println!("(smoke run: pass --bench, as `cargo bench` does, for real numbers)");
    }
}

async fn measure(
    scenario: &str,
    baseline: &Side,
    framework: &Side,
    concurrency: u64,
    total: u64,
    rounds: usize,
    budget: Duration,
) -> Row {
    let mut row = Row {
        scenario: scenario.to_owned(),
        baseline: Vec::new(),
        framework: Vec::new(),
    };
    let start = Instant::now();
    for round in 0..rounds {
        // Heavy load elsewhere slows every run down: past the time budget,
        // stop after an even number of rounds (at least 10).
        if round >= 10 && round % 2 == 0 && start.elapsed() > budget {
            break;
        }
        // ABBA: alternate which side goes first.
        if round % 2 == 0 {
            row.baseline.push(run(baseline, concurrency, total).await);
            row.framework.push(run(framework, concurrency, total).await);
        } else {
            row.framework.push(run(framework, concurrency, total).await);
            row.baseline.push(run(baseline, concurrency, total).await);
        }
        if std::env::var_os("HIT_PATH_VERBOSE").is_some() {
            let (b, f) = (row.baseline[round], row.framework[round]);
            eprintln!(
                "{scenario} round {round}: baseline {:.0} ops/s {:?}, framework {:.0} ops/s {:?}",
                b.ops_per_sec, b.mean_latency, f.ops_per_sec, f.mean_latency
            );
        }
    }
    row
}
