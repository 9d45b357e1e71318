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
//! several rounds that alternate baseline and framework (in ABBA order), so
//! drift of the machine does not bias the ratio; the table reports medians.
//!
//! `cargo bench --bench hit_path` runs it (about a minute). Without `--bench`
//! (as under `cargo test --benches`) it runs a few hundred calls per side as
//! a smoke test. `HIT_PATH_ROUNDS` and `HIT_PATH_RUN_SECS` override the
//! number of rounds (5) and the target duration of one run (1.5 s).

#[path = "../tests/common/mod.rs"]
mod common;

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use cache_runtime::{Cache, cached};
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};

/// Distinct pre-warmed keys; every call is a hit.
const KEYS: u64 = 1_000;
const NAMESPACE: &str = "bench";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct User {
    id: u64,
    name: String,
    email: String,
    created_at: String,
    roles: Vec<String>,
    active: bool,
    login_count: u32,
    country: String,
    plan: String,
}

/// The "database": runs only while the keys are warmed.
fn load_user(id: u64) -> User {
    BODY_RUNS.fetch_add(1, Relaxed);
    User {
        id,
        name: format!("Jane Q. Example {id}"),
        email: format!("jane.example.{id}@example.com"),
        created_at: "2024-03-15T10:30:00Z".to_owned(),
        roles: vec!["reader".to_owned(), "editor".to_owned()],
        active: true,
        login_count: 1_234,
        country: "DE".to_owned(),
        plan: "professional".to_owned(),
    }
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
    ops_per_sec: f64,
    mean_latency: Duration,
}

/// `total` calls spread over `concurrency` spawned tasks.
async fn run(side: &Side, concurrency: u64, total: u64) -> Sample {
    let per_task = total / concurrency;
    let start = Instant::now();
    let handles: Vec<_> = (0..concurrency)
        .map(|t| tokio::spawn(task(side.clone(), t * (KEYS / concurrency), per_task)))
        .collect();
    let mut busy = Duration::ZERO;
    for h in handles {
        busy += h.await.expect("a benchmark task panicked");
    }
    let wall = start.elapsed();
    let ops = per_task * concurrency;
    Sample {
        ops_per_sec: ops as f64 / wall.as_secs_f64(),
        mean_latency: busy / ops as u32,
    }
}

struct Row {
    scenario: String,
    baseline: Vec<Sample>,
    framework: Vec<Sample>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

impl Row {
    fn print(&self) {
        let ops = |s: &[Sample]| median(s.iter().map(|s| s.ops_per_sec).collect());
        let lat = |s: &[Sample]| median(s.iter().map(|s| s.mean_latency.as_secs_f64()).collect());
        let (b, f) = (ops(&self.baseline), ops(&self.framework));
        let rounds: Vec<f64> = self
            .baseline
            .iter()
            .zip(&self.framework)
            .map(|(b, f)| f.ops_per_sec / b.ops_per_sec)
            .collect();
        let lo = rounds.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = rounds.iter().copied().fold(0.0, f64::max);
        println!(
            "| {:<16} | {:>9.0} | {:>9.0} | {:>5.3} | {:>11.3} - {:<5.3} | {:>8.1} | {:>8.1} |",
            self.scenario,
            b,
            f,
            f / b,
            lo,
            hi,
            lat(&self.baseline) * 1e6,
            lat(&self.framework) * 1e6,
        );
    }
}

fn env_or<T: std::str::FromStr>(var: &str, default: T) -> T {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` does not.
    let full = std::env::args().any(|a| a == "--bench");
    let rounds = if full {
        env_or("HIT_PATH_ROUNDS", 5)
    } else {
        1
    };
    let run_secs = env_or("HIT_PATH_RUN_SECS", 1.5);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let server = common::RedisServer::start();
    rt.block_on(bench(&server, full, rounds, run_secs));
}

async fn bench(server: &common::RedisServer, full: bool, rounds: usize, run_secs: f64) {
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
        assert_eq!(get_user::key(&42), format!("{NAMESPACE}:user:42"));
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
        "tokio multi-thread runtime, {workers} workers; {rounds} round(s) per scenario, \
         baseline and framework alternated"
    );

    let baseline = Side::Baseline(conn);
    let scoped = Side::Scoped(cache.clone());
    let mut rows = Vec::new();
    let mut calls_per_run = Vec::new();
    for concurrency in [1, 64] {
        // Size N so that one run takes about `run_secs` (a fixed N per scenario).
        let total = if full {
            run(&baseline, concurrency, 64 * 40).await;
            run(&scoped, concurrency, 64 * 40).await;
            let probe = run(&baseline, concurrency, 64 * 100).await;
            let n = (probe.ops_per_sec * run_secs) as u64;
            (n / concurrency).max(1) * concurrency
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
            )
            .await,
        );
    }

    assert_eq!(
        BODY_RUNS.load(Relaxed),
        KEYS,
        "every measured call must be a hit"
    );
    let stats = cache.stats();
    assert_eq!(stats.misses, KEYS);
    assert_eq!(stats.store_errors + stats.timeouts + stats.decode_errors, 0);

    println!();
    for (concurrency, total) in &calls_per_run {
        println!("c={concurrency}: N = {total} calls per run");
    }
    println!(
        "\n| scenario         | baseline  | framework | ratio | ratio per round     | base lat | fw lat   |"
    );
    println!(
        "|                  | ops/s     | ops/s     | fw/bl | (min - max)         | mean µs  | mean µs  |"
    );
    println!(
        "|------------------|-----------|-----------|-------|---------------------|----------|----------|"
    );
    for row in &rows {
        row.print();
    }
    println!(
        "\nmedians of {rounds} round(s); target: ratio >= 0.90 (framework at most 10% slower)"
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
) -> Row {
    let mut row = Row {
        scenario: scenario.to_owned(),
        baseline: Vec::new(),
        framework: Vec::new(),
    };
    for round in 0..rounds {
        // ABBA: alternate which side goes first.
        if round % 2 == 0 {
            row.baseline.push(run(baseline, concurrency, total).await);
            row.framework.push(run(framework, concurrency, total).await);
        } else {
            row.framework.push(run(framework, concurrency, total).await);
            row.baseline.push(run(baseline, concurrency, total).await);
        }
    }
    row
}
