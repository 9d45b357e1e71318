//! The cost of leases: `#[cached]` with leases on (the default) against the
//! same function with leases off, on the miss path and on the hit path.
//!
//! Two caches per comparison on one `redis-server` (started on a free port by
//! the test harness), identical except `.leases(true)` / `.leases(false)` and
//! their namespaces (`leases-on`, `leases-off`). The functions return the
//! same ~200-byte JSON struct as `benches/hit_path.rs`:
//!
//! - hit: `get_user(id)` over pre-warmed keys, every call a hit. A hit does
//!   the same work either way (one `GET`; a lease record is told from a value
//!   by its first byte), so the ratio should be 1.00;
//! - miss: `miss_user(id)` with a fresh id per call (a global counter: no key
//!   repeats across calls, runs or sides) and a trivial body, so only the
//!   cache's own cost is measured: with leases `GET` + the lease
//!   (`SET .. NX PX .. GET`) + the fill script (three round trips, one of
//!   them an `EVALSHA`), without `GET` + `SET` (two). Single flight (an in-process map) runs on both
//!   sides. The misses live in database 1, emptied (`FLUSHDB`, untimed)
//!   before every run, so every run starts from the same empty keyspace and
//!   memory stays flat;
//! - miss, 1 ms body: the same with `tokio::time::sleep(1 ms)` standing in
//!   for a database query, where the relative cost should mostly vanish;
//! - for information, with leases on both sides: the hit path of a function
//!   with `early_refresh = true` (`GET` and `PTTL` pipelined in one round
//!   trip) against the plain `get_user` (a bare `GET`).
//!
//! Each scenario runs at concurrency 1 and 64 (tasks on a multi-thread tokio
//! runtime, each doing sequential calls; N calls in total per run), for many
//! rounds that alternate the two sides in ABBA order, so drift of the machine
//! does not bias the ratio; the tables report medians. On a small VM the
//! round trip at concurrency 1 can flip between runs from ~85 µs to ~11 µs
//! (both sides alike; most likely the wake-up latency of idle vCPUs): a
//! flipped run makes its round's ratio meaningless, which widens the IQR of
//! the c=1 rows; the median holds. At the end the run prints the commands `redis-server` ran
//! (from `INFO commandstats`), which checks the cost model above.
//!
//! `cargo bench --bench leases` runs it (about 1.5 minutes). Without
//! `--bench` (as under `cargo test --benches`) it runs a few hundred calls
//! per side as a smoke test, which also checks that every hit was a hit and
//! every miss ran its body and stored its value. Environment overrides:
//!
//! - `LEASES_ROUNDS` (30) and `LEASES_RUN_SECS` (0.15): rounds per scenario
//!   and the target duration of one run (a scenario stops early, after at
//!   least 10 rounds, once it took twice its planned time);
//! - `LEASES_VERBOSE=1`: print every round;
//! - `LEASES_PROFILE=hit-off|hit-on|hit-er|miss-off|miss-on|miss1ms-off|miss1ms-on`
//!   (with `LEASES_CALLS`, default 20000, and `LEASES_CONCURRENCY`, default
//!   1): run only that side, once, for a profiler (`perf`, callgrind).

#[path = "../tests/common/mod.rs"]
mod harness;

mod common;

use std::hint::black_box;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use cache_runtime::{Cache, cached};
use common::{User, env_or, process_cpu, quantile, user};
use redis::aio::ConnectionManager;

/// Distinct pre-warmed keys per hit function; every hit call is a hit.
const KEYS: u64 = 1_000;
const NS_OFF: &str = "leases-off";
const NS_ON: &str = "leases-on";
/// The database of the misses (emptied before each run); hits use 0.
const MISS_DB: u32 = 1;

/// Body runs of the hit functions: only while the keys are warmed.
static HIT_BODY_RUNS: AtomicU64 = AtomicU64::new(0);
/// Body runs of the miss functions: one per miss call.
static MISS_BODY_RUNS: AtomicU64 = AtomicU64::new(0);
/// The next id of a miss call: every miss call gets a key never used before.
static NEXT_MISS_ID: AtomicU64 = AtomicU64::new(0);

#[cached(prefix = "user", id = "id", ttl = 3600)]
async fn get_user(id: u64) -> Result<User, String> {
    HIT_BODY_RUNS.fetch_add(1, Relaxed);
    Ok(user(id))
}

/// `get_user` with early refresh: its lookups read the remaining TTL too.
/// With a 1 h TTL and a body of microseconds it never actually refreshes.
#[cached(prefix = "user_er", id = "id", ttl = 3600, early_refresh = true)]
async fn get_user_er(id: u64) -> Result<User, String> {
    HIT_BODY_RUNS.fetch_add(1, Relaxed);
    Ok(user(id))
}

#[cached(prefix = "miss", id = "id", ttl = 3600)]
async fn miss_user(id: u64) -> Result<User, String> {
    MISS_BODY_RUNS.fetch_add(1, Relaxed);
    Ok(user(id))
}

/// A miss whose body takes about a millisecond, like a quick query (tokio's
/// timer has 1 ms resolution and rounds up: 1-2 ms in practice).
#[cached(prefix = "miss_1ms", id = "id", ttl = 3600)]
async fn miss_user_1ms(id: u64) -> Result<User, String> {
    tokio::time::sleep(Duration::from_millis(1)).await;
    MISS_BODY_RUNS.fetch_add(1, Relaxed);
    Ok(user(id))
}

/// What the calls of a run do.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Work {
    Hit,
    HitEarlyRefresh,
    Miss,
    Miss1ms,
}

/// One side of a comparison: a cache and the calls made through it.
#[derive(Clone)]
struct Side {
    cache: Cache,
    work: Work,
    /// For misses: a connection to `MISS_DB`, emptied before each run.
    flush: Option<ConnectionManager>,
}

/// `ops` sequential calls of `$f`, the id of call `$i` given by `$id`;
/// returns the summed latency.
macro_rules! timed_calls {
    ($ops:expr, |$i:ident| $id:expr, $f:ident) => {{
        let mut busy = Duration::ZERO;
        for $i in 0..$ops {
            let id = $id;
            let start = Instant::now();
            let user: Result<User, String> = $f(id).await;
            busy += start.elapsed();
            assert_eq!(black_box(user).map(|u| u.id), Ok(id));
        }
        busy
    }};
}

async fn task(side: Side, first: u64, ops: u64) -> Duration {
    let work = side.work;
    Cache::scope(side.cache, async move {
        match work {
            Work::Hit => timed_calls!(ops, |i| (first + i) % KEYS, get_user),
            Work::HitEarlyRefresh => timed_calls!(ops, |i| (first + i) % KEYS, get_user_er),
            Work::Miss => timed_calls!(ops, |_i| NEXT_MISS_ID.fetch_add(1, Relaxed), miss_user),
            Work::Miss1ms => {
                timed_calls!(ops, |_i| NEXT_MISS_ID.fetch_add(1, Relaxed), miss_user_1ms)
            }
        }
    })
    .await
}

#[derive(Clone, Copy)]
struct Sample {
    ops: u64,
    ops_per_sec: f64,
    mean_latency: Duration,
    /// CPU time of this process (all threads) during the run, if known.
    cpu: Option<Duration>,
    /// CPU time of `redis-server` (all threads) during the run, if known:
    /// the lease scripts run there.
    redis_cpu: Option<Duration>,
}

/// The pid of the `redis-server` the benchmark runs against.
static REDIS_PID: OnceLock<String> = OnceLock::new();

fn redis_cpu() -> Option<Duration> {
    process_cpu(REDIS_PID.get()?)
}

/// `total` calls spread over `concurrency` spawned tasks.
async fn run(side: &Side, concurrency: u64, total: u64) -> Sample {
    if let Some(conn) = &side.flush {
        let mut conn = conn.clone();
        let () = redis::cmd("FLUSHDB")
            .query_async(&mut conn)
            .await
            .expect("FLUSHDB of the misses' database");
    }
    let per_task = total / concurrency;
    let (cpu_before, redis_before) = (process_cpu("self"), redis_cpu());
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
    let redis_cpu = redis_cpu()
        .zip(redis_before)
        .map(|(after, before)| after - before);
    let ops = per_task * concurrency;
    Sample {
        ops,
        ops_per_sec: ops as f64 / wall.as_secs_f64(),
        mean_latency: busy / ops as u32,
        cpu,
        redis_cpu,
    }
}

/// One scenario: side A (leases off, or the plain function) against side B
/// (leases on, or the function with early refresh), round by round.
struct Row {
    scenario: &'static str,
    concurrency: u64,
    a: Vec<Sample>,
    b: Vec<Sample>,
}

impl Row {
    /// Median of the per-round ratios B/A, and their 25th and 75th percentiles.
    fn ratios(&self) -> (f64, f64, f64) {
        // Each round's two runs are adjacent in time: their ratio cancels
        // drift and load shared by both.
        let ratios: Vec<f64> = self
            .a
            .iter()
            .zip(&self.b)
            .map(|(a, b)| b.ops_per_sec / a.ops_per_sec)
            .collect();
        (
            quantile(ratios.clone(), 0.5),
            quantile(ratios.clone(), 0.25),
            quantile(ratios, 0.75),
        )
    }

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
        // Total CPU over total calls, per side.
        let cpu = |s: &[Sample], of: fn(&Sample) -> Option<Duration>| {
            let cpu: Option<Duration> = s.iter().map(of).sum();
            let ops: u64 = s.iter().map(|s| s.ops).sum();
            cpu.map_or("n/a".to_owned(), |c| {
                format!("{:.2}", c.as_secs_f64() * 1e6 / ops as f64)
            })
        };
        let (median, q1, q3) = self.ratios();
        println!(
            "| {:<14} | {:>2} | {:>6} | {:>9.0} | {:>9.0} | {:>8.3} | {:>5.3} - {:<5.3} | {:>7.1} | {:>7.1} | {:>6} | {:>6} | {:>6} | {:>6} |",
            self.scenario,
            self.concurrency,
            self.a.len(),
            ops(&self.a),
            ops(&self.b),
            median,
            q1,
            q3,
            lat(&self.a),
            lat(&self.b),
            cpu(&self.a, |s| s.cpu),
            cpu(&self.b, |s| s.cpu),
            cpu(&self.a, |s| s.redis_cpu),
            cpu(&self.b, |s| s.redis_cpu),
        );
    }
}

fn print_table(title: &str, a: &str, b: &str, rows: &[&Row]) {
    println!("\n{title}\n");
    println!(
        "| scenario       | c  | rounds | {a:<9} | {b:<9} | ratio    | ratio         | {a:<7} | {b:<7} | {a:<6} | {b:<6} | {a:<6} | {b:<6} |"
    );
    println!(
        "|                |    |        | calls/s   | calls/s   | {:<8} | IQR           | µs/call | µs/call | CPU µs | CPU µs | redis  | redis  |",
        format!("{b}/{a}"),
    );
    println!(
        "|----------------|----|--------|-----------|-----------|----------|---------------|---------|---------|--------|--------|--------|--------|"
    );
    for row in rows {
        row.print();
    }
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` does not.
    let full = std::env::args().any(|a| a == "--bench");
    let rounds = if full { env_or("LEASES_ROUNDS", 30) } else { 1 };
    let run_secs = env_or("LEASES_RUN_SECS", 0.15);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let server = harness::RedisServer::start();
    rt.block_on(bench(&server, full, rounds, run_secs));
}

async fn build_cache(url: &str, namespace: &str, leases: bool) -> Cache {
    Cache::builder()
        .redis_url(url)
        .namespace(namespace)
        .leases(leases)
        .build()
        .await
        .expect("cache")
}

async fn bench(server: &harness::RedisServer, full: bool, rounds: usize, run_secs: f64) {
    let info = server.cli(&["INFO", "server"]);
    if let Some(pid) = info
        .lines()
        .find_map(|l| l.trim().strip_prefix("process_id:"))
    {
        let _ = REDIS_PID.set(pid.to_owned());
    }
    let miss_url = format!("{}/{MISS_DB}", server.url());
    let hit_off = build_cache(&server.url(), NS_OFF, false).await;
    let hit_on = build_cache(&server.url(), NS_ON, true).await;
    let miss_off = build_cache(&miss_url, NS_OFF, false).await;
    let miss_on = build_cache(&miss_url, NS_ON, true).await;
    let client = redis::Client::open(miss_url.as_str()).expect("redis client");
    let flush = ConnectionManager::new(client).await.expect("connect");

    // Warm every hit key: `get_user` in both caches, `get_user_er` with
    // leases on (the early-refresh comparison runs there).
    for cache in [&hit_off, &hit_on] {
        Cache::scope(cache.clone(), async {
            for id in 0..KEYS {
                get_user(id).await.expect("warm");
            }
        })
        .await;
    }
    Cache::scope(hit_on.clone(), async {
        assert_eq!(get_user_er_key(&42), format!("{NS_ON}:user_er:42"));
        for id in 0..KEYS {
            get_user_er(id).await.expect("warm");
        }
    })
    .await;
    let warmed = HIT_BODY_RUNS.load(Relaxed);
    assert_eq!(warmed, 3 * KEYS, "warm-up must store every key");
    let value = server.cli(&["GET", &format!("{NS_ON}:user:42")]);
    let workers = tokio::runtime::Handle::current().metrics().num_workers();
    println!(
        "redis-server on port {} (pid {}), {KEYS} keys per hit function, value {} bytes: {value}",
        server.port(),
        REDIS_PID.get().map_or("?", String::as_str),
        value.len(),
    );
    println!(
        "tokio multi-thread runtime, {workers} workers ({} CPUs, shared with redis-server); \
         {rounds} round(s) per scenario, the two sides alternated",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    let side = |cache: &Cache, work| Side {
        cache: cache.clone(),
        work,
        flush: matches!(work, Work::Miss | Work::Miss1ms).then(|| flush.clone()),
    };
    if let Ok(name) = std::env::var("LEASES_PROFILE") {
        let side = match name.as_str() {
            "hit-off" => side(&hit_off, Work::Hit),
            "hit-on" => side(&hit_on, Work::Hit),
            "hit-er" => side(&hit_on, Work::HitEarlyRefresh),
            "miss-off" => side(&miss_off, Work::Miss),
            "miss-on" => side(&miss_on, Work::Miss),
            "miss1ms-off" => side(&miss_off, Work::Miss1ms),
            "miss1ms-on" => side(&miss_on, Work::Miss1ms),
            other => panic!(
                "LEASES_PROFILE={other}: expected hit-off, hit-on, hit-er, miss-off, miss-on, \
                 miss1ms-off or miss1ms-on"
            ),
        };
        let (calls, concurrency) = (
            env_or("LEASES_CALLS", 20_000),
            env_or("LEASES_CONCURRENCY", 1),
        );
        let s = run(&side, concurrency, calls).await;
        println!(
            "profile run: {calls} calls at c={concurrency}: {:.0} calls/s, mean {:?}",
            s.ops_per_sec, s.mean_latency
        );
        return;
    }

    // (scenario, concurrency, side A, side B)
    let scenarios = [
        (
            "hit",
            1,
            side(&hit_off, Work::Hit),
            side(&hit_on, Work::Hit),
        ),
        (
            "hit",
            64,
            side(&hit_off, Work::Hit),
            side(&hit_on, Work::Hit),
        ),
        (
            "miss",
            1,
            side(&miss_off, Work::Miss),
            side(&miss_on, Work::Miss),
        ),
        (
            "miss",
            64,
            side(&miss_off, Work::Miss),
            side(&miss_on, Work::Miss),
        ),
        (
            "miss, 1ms body",
            64,
            side(&miss_off, Work::Miss1ms),
            side(&miss_on, Work::Miss1ms),
        ),
        (
            "hit",
            1,
            side(&hit_on, Work::Hit),
            side(&hit_on, Work::HitEarlyRefresh),
        ),
        (
            "hit",
            64,
            side(&hit_on, Work::Hit),
            side(&hit_on, Work::HitEarlyRefresh),
        ),
    ];
    // Twice the planned time of a scenario.
    let budget = Duration::from_secs_f64(2.0 * rounds as f64 * 2.0 * run_secs);
    let mut rows = Vec::new();
    let mut calls_per_run = Vec::new();
    for (scenario, concurrency, a, b) in scenarios {
        // Size N so that one run of side A takes about `run_secs`.
        let total = if full {
            run(&a, concurrency, 64 * 40).await;
            run(&b, concurrency, 64 * 40).await;
            // The fastest of three probes: a probe slowed down by a burst of
            // load elsewhere would make every run of the scenario too short.
            let mut fastest = 0f64;
            for _ in 0..3 {
                fastest = fastest.max(run(&a, concurrency, 64 * 50).await.ops_per_sec);
            }
            let n = (fastest * run_secs) as u64;
            // At least 10 calls per task at c=64; unlike in `hit_path` the
            // floor stays below `run_secs` at c=1 too (a 2560-call floor
            // would make the c=1 misses run 3 times their planned time).
            (n / concurrency).max(640 / concurrency) * concurrency
        } else {
            256
        };
        calls_per_run.push((scenario, concurrency, total));
        rows.push(measure(scenario, &a, &b, concurrency, total, rounds, budget).await);
    }
    // The misses' last run stays in the database until here.
    let stored_misses: u64 = redis::cmd("DBSIZE")
        .query_async(&mut flush.clone())
        .await
        .expect("DBSIZE");

    // Every hit must have been a hit, every miss a miss that stored its
    // value. Under heavy load a call can exceed the 200 ms operation timeout:
    // report it (and fail the smoke run, which must be clean).
    let miss_calls = NEXT_MISS_ID.load(Relaxed);
    let not_hits = HIT_BODY_RUNS.load(Relaxed) - warmed;
    let not_run = miss_calls - MISS_BODY_RUNS.load(Relaxed);
    let stats = [&hit_off, &hit_on, &miss_off, &miss_on].map(|c| c.stats());
    let not_stored = miss_calls - (stats[2].stores + stats[3].stores);
    let problems: u64 = stats
        .iter()
        .map(|s| {
            s.store_errors
                + s.timeouts
                + s.decode_errors
                + s.leases_lost
                + s.lease_waits
                + s.coalesced
                + s.refreshes
        })
        .sum();
    if not_hits + not_run + not_stored + problems > 0 {
        println!(
            "\nWARNING: {not_hits} hit calls were not hits, {not_run} miss calls did not run \
             their body, {not_stored} miss results were not stored; stats (hit off, hit on, \
             miss off, miss on): {stats:#?}"
        );
        assert!(full, "the smoke run must be clean");
    }
    assert!(
        stored_misses > 0,
        "the misses must be stored in database {MISS_DB}"
    );
    // What the misses cost in commands: with leases a SET NX GET and the
    // fill script (an EVALSHA, which runs a GET and a SET inside; its
    // first call fails with NOSCRIPT and is retried after SCRIPT LOAD),
    // without a SET. Commands run by scripts count in INFO commandstats too.
    let leased = stats[1].misses + stats[3].misses;
    let unleased = stats[0].misses + stats[2].misses;
    let (evalsha, set) = (server.command_calls("evalsha"), server.command_calls("set"));
    let commands = format!(
        "redis-server ran {evalsha} EVALSHA for {leased} misses with leases (1 per miss, \
         + 1 NOSCRIPT), {set} SET for {unleased} misses without (+ 2 per leased miss: \
         the lease and the fill script's), {} GET, {} PTTL, {} SCRIPT LOAD",
        server.command_calls("get"),
        server.command_calls("pttl"),
        server.command_calls("script|load"),
    );
    if !(leased..=leased + 1).contains(&evalsha) || set != unleased + 2 * leased {
        println!("\nWARNING: unexpected commands: {commands}");
        assert!(full, "the smoke run must be clean");
    }

    println!();
    for (scenario, concurrency, total) in &calls_per_run {
        println!("{scenario}, c={concurrency}: N = {total} calls per run");
    }
    println!(
        "{miss_calls} miss calls in all, each with a fresh key; {stored_misses} keys in database \
         {MISS_DB} after the last run\n{commands}"
    );
    let (leases, early) = rows.split_at(5);
    print_table(
        "Leases off against leases on:",
        "off",
        "on",
        &leases.iter().collect::<Vec<_>>(),
    );
    print_table(
        "For information, hits with leases on both: a plain function against one with early_refresh = true (ER):",
        "plain",
        "ER",
        &early.iter().collect::<Vec<_>>(),
    );
    println!(
        "\nmedians over the rounds; ratio: median of the per-round ratios of calls/s (each round \
         runs both sides back to back), IQR: their 25th-75th percentile;\n\
         µs/call: mean latency of a call; CPU µs: this process's CPU time (all threads) per call, \
         redis: redis-server's, over all rounds.\n\
         expected: hit on/off = 1.00 (one GET either way); miss on/off < 1 (GET + SET NX GET + \
         EVALSHA against GET + SET), close to 1 with a 1 ms body."
    );
    // One smoke round says nothing about speed.
    for row in rows[..2].iter().filter(|_| full) {
        let (median, q1, q3) = row.ratios();
        if q3 < 1.0 {
            println!(
                "NOTE: hits with leases on were slower at c={}: ratio {median:.3} \
                 (IQR {q1:.3} - {q3:.3})",
                row.concurrency
            );
        }
    }
    if !full {
        println!("(smoke run: pass --bench, as `cargo bench` does, for real numbers)");
    }
}

async fn measure(
    scenario: &'static str,
    a: &Side,
    b: &Side,
    concurrency: u64,
    total: u64,
    rounds: usize,
    budget: Duration,
) -> Row {
    let mut row = Row {
        scenario,
        concurrency,
        a: Vec::new(),
        b: Vec::new(),
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
            row.a.push(run(a, concurrency, total).await);
            row.b.push(run(b, concurrency, total).await);
        } else {
            row.b.push(run(b, concurrency, total).await);
            row.a.push(run(a, concurrency, total).await);
        }
        if std::env::var_os("LEASES_VERBOSE").is_some() {
            let (sa, sb) = (row.a[round], row.b[round]);
            eprintln!(
                "{scenario}, c={concurrency} round {round}: A {:.0} calls/s {:?}, B {:.0} calls/s {:?}",
                sa.ops_per_sec, sa.mean_latency, sb.ops_per_sec, sb.mean_latency
            );
        }
    }
    row
}
