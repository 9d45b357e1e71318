//! Tags with version counters: what invalidating a tag costs as the number of
//! entries carrying it grows, and what tags cost a hit.
//!
//! Everything runs against one `redis-server` started on a free port by the
//! test harness (private to this process, so deleting its keys is fine).
//!
//! 1. Invalidation. For each N, a fresh namespace `inv-<N>` holds N entries
//!    of `cover_post` (key `inv-<N>:post:<i>`, tag `cover`). Storing 1M
//!    entries through the function would take minutes, so one entry is
//!    stored by a real call and its bytes (envelope with the tag's version,
//!    then the JSON of entry 0) are copied under the other N-1 keys with
//!    pipelined `SET`s; every copy is a hit of `cover_post(i)` (returning
//!    entry 0's value). A sample of entries is checked to be hits, then
//!    `invalidate_tag("cover")` is timed R times, the version key being put
//!    back (`SET`, untimed, then a sample hit) between repetitions so that
//!    each one invalidates N live entries. After the last one the sample must
//!    be misses. Last, as the contrast, one `invalidate_pattern` of
//!    `inv-<N>:post:*` (SCAN + UNLINK in batches) deletes the N entries.
//! 2. Hit path. The same ~200-byte struct as `benches/hit_path.rs` from four
//!    variants, every call a hit over 1,000 pre-warmed keys: no tags (the
//!    baseline), one tag (`user:{id}`), two tags (`user:{id}`, `users`), and
//!    two tags on a second cache built with `tag_version_reuse(10 s)`. Each
//!    variant runs at concurrency 1 and 64 (the task model of `hit_path`),
//!    paired with the baseline in ABBA order in every round, for many short
//!    rounds; the table reports medians and the ratio tagged/untagged.
//!
//! `cargo bench --bench tags` runs it (70-85 s on 2 cores, once compiled).
//! Without `--bench` (as under `cargo test --bench tags`) it runs N = 100
//! and 1,000 and a few hundred calls per side as a smoke test (a few
//! seconds), which must be clean: every hit a hit, every invalidated entry
//! a miss. Environment overrides:
//!
//! - `TAGS_SIZES` (`100,10000,1000000`): the N of part 1, comma-separated;
//! - `TAGS_REPEATS` (15): tag invalidations timed per N;
//! - `TAGS_ROUNDS` (24) and `TAGS_RUN_SECS` (0.15): rounds per concurrency
//!   and the target duration of one run in part 2 (it stops early, after at
//!   least 10 rounds, once it took twice its planned time);
//! - `TAGS_VERBOSE=1`: print every round.

#[path = "../tests/common/mod.rs"]
mod harness;

mod common;

use std::hint::black_box;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use cache_runtime::{Cache, cached};
use common::{User, env_or, process_cpu, quantile, user};
use redis::AsyncConnectionConfig;
use redis::aio::MultiplexedConnection;

/// Distinct pre-warmed keys per hit-path variant; every call is a hit.
const KEYS: u64 = 1_000;
const NS_HIT: &str = "tags-hit";
const NS_REUSE: &str = "tags-reuse";
/// Keys per pipeline when copying the template entry.
const POPULATE_BATCH: u64 = 10_000;
/// Entries checked to be hits before, and misses after, an invalidation.
const SAMPLE: u64 = 100;
/// The TTL of every entry, in seconds (as in the attributes).
const TTL_SECS: u64 = 3600;

/// Body runs of `cover_post` (part 1): one per miss.
static COVER_RUNS: AtomicU64 = AtomicU64::new(0);
/// Body runs of the hit-path functions (part 2): only while warming.
static HIT_BODY_RUNS: AtomicU64 = AtomicU64::new(0);

/// Part 1: every entry carries the tag `cover` (one namespace per N).
#[cached(prefix = "post", id = "id", ttl = 3600, tags = ["cover"])]
async fn cover_post(id: u64) -> Result<User, String> {
    COVER_RUNS.fetch_add(1, Relaxed);
    Ok(user(id))
}

#[cached(prefix = "untagged", id = "id", ttl = 3600)]
async fn untagged(id: u64) -> Result<User, String> {
    HIT_BODY_RUNS.fetch_add(1, Relaxed);
    Ok(user(id))
}

#[cached(prefix = "tag1", id = "id", ttl = 3600, tags = ["user:{id}"])]
async fn tagged1(id: u64) -> Result<User, String> {
    HIT_BODY_RUNS.fetch_add(1, Relaxed);
    Ok(user(id))
}

/// Also the "2 tags, reuse" variant, on the cache with `tag_version_reuse`.
#[cached(prefix = "tag2", id = "id", ttl = 3600, tags = ["user:{id}", "users"])]
async fn tagged2(id: u64) -> Result<User, String> {
    HIT_BODY_RUNS.fetch_add(1, Relaxed);
    Ok(user(id))
}

// ---------------------------------------------------------------------------
// Shared helpers
// ---------------------------------------------------------------------------

/// `TAGS_SIZES` as a list (`100,10_000,1000000`), or `default`.
fn sizes_or(default: &[u64]) -> Vec<u64> {
    let Ok(list) = std::env::var("TAGS_SIZES") else {
        return default.to_vec();
    };
    list.split(',')
        .map(|s| {
            s.trim()
                .replace('_', "")
                .parse()
                .unwrap_or_else(|_| panic!("TAGS_SIZES={list}: expected numbers like 100,10000"))
        })
        .collect()
}

/// The pid of the `redis-server` the benchmark runs against.
static REDIS_PID: OnceLock<String> = OnceLock::new();

/// CPU time of this process and of `redis-server` together.
fn total_cpu() -> Option<Duration> {
    Some(process_cpu("self")? + process_cpu(REDIS_PID.get()?)?)
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --bench tags` does not.
    let full = std::env::args().any(|a| a == "--bench");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let server = harness::RedisServer::start();
    rt.block_on(bench(&server, full));
}

async fn bench(server: &harness::RedisServer, full: bool) {
    let started = Instant::now();
    let info = server.cli(&["INFO", "server"]);
    let field = |name: &str| {
        info.lines()
            .find_map(|l| l.trim().strip_prefix(name))
            .map(str::to_owned)
    };
    if let Some(pid) = field("process_id:") {
        let _ = REDIS_PID.set(pid);
    }
    let version = field("redis_version:").unwrap_or_else(|| "?".to_owned());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let workers = tokio::runtime::Handle::current().metrics().num_workers();
    let header = format!(
        "machine: {cores} cores (available_parallelism), tokio {workers} workers; \
         redis-server {version} on port {} (shared cores, no persistence)",
        server.port()
    );
    println!("{header}");

    let client = redis::Client::open(server.url()).expect("redis client");
    // No response timeout: a pipeline of 10k SETs may take a while.
    let conn = client
        .get_multiplexed_async_connection_with_config(
            &AsyncConnectionConfig::new().set_response_timeout(None),
        )
        .await
        .expect("connect");

    // Part 1.
    let sizes = if full {
        sizes_or(&[100, 10_000, 1_000_000])
    } else {
        sizes_or(&[100, 1_000])
    };
    let repeats = env_or("TAGS_REPEATS", if full { 15 } else { 5 }).max(1);
    let mut inv_rows = Vec::new();
    for &n in &sizes {
        inv_rows.push(invalidation(server, conn.clone(), n, repeats).await);
    }
    let part1 = started.elapsed();

    // Part 2.
    let rounds = if full { env_or("TAGS_ROUNDS", 24) } else { 1 };
    let run_secs = env_or("TAGS_RUN_SECS", 0.15);
    let hit_rows = hit_path(server, full, rounds, run_secs).await;

    println!("\n{header}");
    print_invalidation_table(&inv_rows, repeats);
    print_hit_table(&hit_rows);
    println!(
        "\npart 1 took {:.1} s, part 2 {:.1} s",
        part1.as_secs_f64(),
        (started.elapsed() - part1).as_secs_f64()
    );
    if !full {
        println!("(smoke run: pass --bench, as `cargo bench` does, for real numbers)");
    }
}

// ---------------------------------------------------------------------------
// Part 1: invalidation cost against the number of entries
// ---------------------------------------------------------------------------

struct InvalidationRow {
    entries: u64,
    /// Each timed `invalidate_tag`.
    tag: Vec<Duration>,
    /// The one `invalidate_pattern`.
    pattern: Duration,
    /// Keys the pattern invalidation removed (from `DBSIZE`).
    pattern_removed: u64,
    populate: Duration,
}

/// The ids checked to be hits or misses: `SAMPLE` spread over `0..n`.
fn sample_ids(n: u64) -> Vec<u64> {
    let k = SAMPLE.min(n);
    (0..k).map(|j| j * n / k).collect()
}

/// Calls `cover_post` for every sampled id; returns how many ran the body.
async fn sample_misses(cache: &Cache, ids: &[u64]) -> u64 {
    let before = COVER_RUNS.load(Relaxed);
    Cache::scope(cache.clone(), async {
        for &id in ids {
            let got = cover_post(id).await.expect("cover_post");
            // A copy holds entry 0's value; a recomputed entry its own.
            assert!(got == user(0) || got == user(id));
        }
    })
    .await;
    COVER_RUNS.load(Relaxed) - before
}

async fn dbsize(conn: &mut MultiplexedConnection) -> u64 {
    redis::cmd("DBSIZE")
        .query_async(conn)
        .await
        .expect("DBSIZE")
}

async fn invalidation(
    server: &harness::RedisServer,
    mut conn: MultiplexedConnection,
    n: u64,
    repeats: usize,
) -> InvalidationRow {
    let ns = format!("inv-{n}");
    let cache = Cache::builder()
        .redis_url(server.url())
        .namespace(ns.as_str())
        .build()
        .await
        .expect("cache");
    let entry_key = |i: u64| format!("{ns}:post:{i}");
    let tag_key = format!("{ns}#tag:cover");

    // One real entry, and the keys the function uses.
    Cache::scope(cache.clone(), async {
        for i in [0, 1, n / 2, n - 1] {
            assert_eq!(cover_post_key(&i), entry_key(i));
        }
        cover_post(0).await.expect("store the template entry");
    })
    .await;
    let template: Vec<u8> = redis::cmd("GET")
        .arg(entry_key(0))
        .query_async(&mut conn)
        .await
        .expect("GET the template entry");
    let version: String = redis::cmd("GET")
        .arg(&tag_key)
        .query_async(&mut conn)
        .await
        .expect("GET the tag's version");
    // Envelope: marker, JSON without compression, one tag version.
    assert_eq!(template[..3], [0xC2, 0x00, 1], "unexpected envelope");
    let recorded = u64::from_le_bytes(template[3..11].try_into().expect("8 bytes"));
    assert_eq!(
        recorded.to_string(),
        version,
        "the entry records the tag's version"
    );

    // Copy it under the other N-1 keys.
    let start = Instant::now();
    let before = dbsize(&mut conn).await;
    for first in (1..n).step_by(POPULATE_BATCH as usize) {
        let mut pipe = redis::pipe();
        for i in first..(first + POPULATE_BATCH).min(n) {
            pipe.cmd("SET")
                .arg(entry_key(i))
                .arg(&template)
                .arg("EX")
                .arg(TTL_SECS)
                .ignore();
        }
        let () = pipe.query_async(&mut conn).await.expect("populate");
    }
    let populate = start.elapsed();
    assert_eq!(dbsize(&mut conn).await - before, n - 1, "N entries stored");

    let ids = sample_ids(n);
    assert_eq!(sample_misses(&cache, &ids).await, 0, "entries must be hits");

    // The version key's remaining TTL, to put it back as it was.
    let pttl: i64 = redis::cmd("PTTL")
        .arg(&tag_key)
        .query_async(&mut conn)
        .await
        .expect("PTTL");
    assert!(pttl > 0, "the version key has a TTL");
    let mut tag = Vec::with_capacity(repeats);
    for r in 0..repeats {
        if r > 0 {
            let () = redis::cmd("SET")
                .arg(&tag_key)
                .arg(&version)
                .arg("PX")
                .arg(pttl)
                .query_async(&mut conn)
                .await
                .expect("restore the version");
            // Live again: the next invalidation covers N live entries.
            assert_eq!(sample_misses(&cache, &ids[..1]).await, 0);
        }
        let start = Instant::now();
        let ok = cache.invalidate_tag("cover").await;
        tag.push(start.elapsed());
        assert!(ok, "invalidate_tag failed");
    }
    assert!(
        !server.exists(&tag_key),
        "the tag's version key must be gone"
    );
    let misses = sample_misses(&cache, &ids).await;
    assert_eq!(
        misses,
        ids.len() as u64,
        "invalidated entries must be misses"
    );

    // The contrast: SCAN + UNLINK of the same N entries (the misses above
    // re-stored their keys; there are still N).
    let before = dbsize(&mut conn).await;
    let start = Instant::now();
    let ok = cache.invalidate_pattern(format!("{ns}:post:*")).await;
    let pattern = start.elapsed();
    assert!(ok, "invalidate_pattern failed");
    let pattern_removed = before - dbsize(&mut conn).await;
    assert_eq!(pattern_removed, n, "the pattern removes the N entries");

    let stats = cache.stats();
    assert_eq!(
        stats.timeouts + stats.store_errors + stats.invalidation_failures,
        0,
        "{stats:?}"
    );
    let row = InvalidationRow {
        entries: n,
        tag,
        pattern,
        pattern_removed,
        populate,
    };
    println!(
        "N = {n}: populated in {:.2} s; tag invalidation median {:.0} µs; pattern {:.0} µs",
        populate.as_secs_f64(),
        row.tag_quantile(0.5),
        micros(pattern)
    );
    row
}

impl InvalidationRow {
    fn tag_quantile(&self, q: f64) -> f64 {
        quantile(self.tag.iter().copied().map(micros).collect(), q)
    }
}

fn print_invalidation_table(rows: &[InvalidationRow], repeats: usize) {
    println!("\n### Invalidation: one tag vs one pattern, N entries\n");
    println!(
        "| entries   | tag invalidation µs, median (p90) | pattern invalidation µs | pattern / tag |"
    );
    println!(
        "|----------:|----------------------------------:|------------------------:|--------------:|"
    );
    for row in rows {
        let median = row.tag_quantile(0.5);
        let tag = format!("{median:.0} ({:.0})", row.tag_quantile(0.9));
        println!(
            "| {:>9} | {tag:>33} | {:>23.0} | {:>12.0}x |",
            row.entries,
            micros(row.pattern),
            micros(row.pattern) / median,
        );
    }
    println!(
        "\ntag: `invalidate_tag` (one UNLINK of the version key), {repeats} repetitions per N, \
         each covering N live entries;\npattern: one `invalidate_pattern(\"<ns>:post:*\")` \
         (SCAN COUNT 1000 + UNLINK in batches of 500), which removed {} keys in total. \
         Entries were copied in {:.1} s in total (untimed).",
        rows.iter().map(|r| r.pattern_removed).sum::<u64>(),
        rows.iter().map(|r| r.populate.as_secs_f64()).sum::<f64>()
    );
}

// ---------------------------------------------------------------------------
// Part 2: the hit path with tags
// ---------------------------------------------------------------------------

/// Which function a run calls.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Work {
    Untagged,
    Tag1,
    Tag2,
}

/// One side of a comparison: a cache and the calls made through it.
#[derive(Clone)]
struct Side {
    cache: Cache,
    work: Work,
}

/// `ops` sequential calls of `$f` starting at key `first`; returns the
/// summed latency.
macro_rules! timed_calls {
    ($first:expr, $ops:expr, $f:ident) => {{
        let mut busy = Duration::ZERO;
        for i in 0..$ops {
            let id = ($first + i) % KEYS;
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
            Work::Untagged => timed_calls!(first, ops, untagged),
            Work::Tag1 => timed_calls!(first, ops, tagged1),
            Work::Tag2 => timed_calls!(first, ops, tagged2),
        }
    })
    .await
}

#[derive(Clone, Copy)]
struct Sample {
    ops: u64,
    ops_per_sec: f64,
    mean_latency: Duration,
    /// CPU time of this process and `redis-server` during the run, if known.
    cpu: Option<Duration>,
}

/// `total` calls spread over `concurrency` spawned tasks.
async fn run(side: &Side, concurrency: u64, total: u64) -> Sample {
    let per_task = total / concurrency;
    let cpu_before = total_cpu();
    let start = Instant::now();
    let handles: Vec<_> = (0..concurrency)
        .map(|t| tokio::spawn(task(side.clone(), t * (KEYS / concurrency), per_task)))
        .collect();
    let mut busy = Duration::ZERO;
    for h in handles {
        busy += h.await.expect("a benchmark task panicked");
    }
    let wall = start.elapsed();
    let cpu = total_cpu()
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

/// One tagged variant at one concurrency against the untagged baseline.
struct HitRow {
    variant: &'static str,
    concurrency: u64,
    /// `GET`s the server ran per call of the variant (1 for a bare GET).
    gets_per_call: f64,
    untagged: Vec<Sample>,
    tagged: Vec<Sample>,
}

impl HitRow {
    fn print(&self) {
        let ops = |s: &[Sample]| quantile(s.iter().map(|s| s.ops_per_sec).collect(), 0.5);
        let lat = |s: &[Sample]| quantile(s.iter().map(|s| micros(s.mean_latency)).collect(), 0.5);
        let cpu = |s: &[Sample]| {
            let cpu: Option<Duration> = s.iter().map(|s| s.cpu).sum();
            let ops: u64 = s.iter().map(|s| s.ops).sum();
            cpu.map_or("n/a".to_owned(), |c| {
                format!("{:.1}", micros(c) / ops as f64)
            })
        };
        // Each round's two runs are adjacent in time: their ratio cancels
        // drift and load shared by both.
        let ratios: Vec<f64> = self
            .untagged
            .iter()
            .zip(&self.tagged)
            .map(|(u, t)| t.ops_per_sec / u.ops_per_sec)
            .collect();
        println!(
            "| {:<16} | {:>2} | {:>6} | {:>9.0} | {:>9.0} | {:>6.3} | {:>5.3} - {:<5.3} | {:>8.1} | {:>8.1} | {:>4.2} | {:>8} | {:>8} |",
            self.variant,
            self.concurrency,
            self.untagged.len(),
            ops(&self.untagged),
            ops(&self.tagged),
            quantile(ratios.clone(), 0.5),
            quantile(ratios.clone(), 0.25),
            quantile(ratios, 0.75),
            lat(&self.untagged),
            lat(&self.tagged),
            self.gets_per_call,
            cpu(&self.untagged),
            cpu(&self.tagged),
        );
    }
}

fn print_hit_table(rows: &[HitRow]) {
    println!("\n### Hit path: tagged vs untagged `#[cached]`, every call a hit\n");
    println!(
        "| variant          | c  | rounds | untagged  | tagged    | ratio  | ratio         | untagged | tagged   | GETs | untagged | tagged   |"
    );
    println!(
        "|                  |    |        | calls/s   | calls/s   | t/u    | IQR           | µs/call  | µs/call  | /hit | CPU µs   | CPU µs   |"
    );
    println!(
        "|------------------|----|--------|-----------|-----------|--------|---------------|----------|----------|------|----------|----------|"
    );
    for row in rows {
        row.print();
    }
    println!(
        "\nmedians over the rounds; ratio: median of the per-round ratios tagged/untagged \
         throughput (each round runs both back to back, ABBA), IQR: their 25th-75th percentile;\n\
         µs/call: mean latency of a call; GETs/hit: GET commands the server ran per call of \
         the tagged variant (untagged: 1);\nCPU µs: CPU time of this process plus \
         redis-server per call, over all rounds."
    );
}

async fn hit_path(
    server: &harness::RedisServer,
    full: bool,
    rounds: usize,
    run_secs: f64,
) -> Vec<HitRow> {
    let build = |namespace: &'static str, reuse: Duration| {
        Cache::builder()
            .redis_url(server.url())
            .namespace(namespace)
            .tag_version_reuse(reuse)
            .build()
    };
    let cache = build(NS_HIT, Duration::ZERO).await.expect("cache");
    let reuse = build(NS_REUSE, Duration::from_secs(10))
        .await
        .expect("cache with reuse");

    // Warm every key of every variant (one task each: quicker smoke runs).
    Cache::scope(cache.clone(), async {
        assert_eq!(tagged2_key(&42), format!("{NS_HIT}:tag2:42"));
    })
    .await;
    let warm = [
        (&cache, Work::Untagged),
        (&cache, Work::Tag1),
        (&cache, Work::Tag2),
        (&reuse, Work::Tag2),
    ]
    .map(|(cache, work)| {
        let side = Side {
            cache: cache.clone(),
            work,
        };
        tokio::spawn(async move { task(side, 0, KEYS).await })
    });
    for handle in warm {
        handle.await.expect("warm-up");
    }
    let warmed = HIT_BODY_RUNS.load(Relaxed);
    assert_eq!(warmed, 4 * KEYS, "warm-up must store every key");
    let value = server
        .get(&format!("{NS_HIT}:untagged:42"))
        .unwrap_or_default();
    println!(
        "\nhit path: {KEYS} keys per variant, untagged value {} bytes (tagged: + 3 + 8 per tag)",
        value.len()
    );

    let baseline = Side {
        cache: cache.clone(),
        work: Work::Untagged,
    };
    let variants = [
        (
            "1 tag",
            Side {
                cache: cache.clone(),
                work: Work::Tag1,
            },
        ),
        (
            "2 tags",
            Side {
                cache: cache.clone(),
                work: Work::Tag2,
            },
        ),
        (
            "2 tags, reuse",
            Side {
                cache: reuse.clone(),
                work: Work::Tag2,
            },
        ),
    ];

    // What a hit costs the server: GETs per call, over sequential calls.
    let calls = if full { KEYS } else { 200 };
    let mut gets_per_call = Vec::new();
    for (_, side) in &variants {
        let before = server.command_calls("get");
        run(side, 1, calls).await;
        gets_per_call.push((server.command_calls("get") - before) as f64 / calls as f64);
    }

    let mut rows = Vec::new();
    for concurrency in [1, 64] {
        // Size N so that one untagged run takes about `run_secs`.
        let total = if full {
            for (_, side) in &variants {
                run(side, concurrency, 64 * 40).await;
            }
            // The fastest of three probes: a probe slowed down by a burst of
            // load elsewhere would make every run too short.
            let mut fastest = 0f64;
            for _ in 0..3 {
                fastest = fastest.max(run(&baseline, concurrency, 64 * 50).await.ops_per_sec);
            }
            let n = (fastest * run_secs) as u64;
            (n / concurrency).max(640 / concurrency) * concurrency
        } else {
            256
        };
        println!("c={concurrency}: {total} calls per run");
        let mut group: Vec<HitRow> = variants
            .iter()
            .zip(&gets_per_call)
            .map(|(&(name, _), &gets)| HitRow {
                variant: name,
                concurrency,
                gets_per_call: gets,
                untagged: Vec::new(),
                tagged: Vec::new(),
            })
            .collect();
        // Twice the planned time: rounds x variants x 2 runs.
        let budget =
            Duration::from_secs_f64(2.0 * rounds as f64 * variants.len() as f64 * 2.0 * run_secs);
        let start = Instant::now();
        for round in 0..rounds {
            // Heavy load elsewhere slows every run down: past the budget,
            // stop after an even number of rounds (at least 10).
            if round >= 10 && round % 2 == 0 && start.elapsed() > budget {
                break;
            }
            for (row, (_, side)) in group.iter_mut().zip(&variants) {
                // ABBA: alternate which side goes first.
                let (u, t) = if round % 2 == 0 {
                    let u = run(&baseline, concurrency, total).await;
                    (u, run(side, concurrency, total).await)
                } else {
                    let t = run(side, concurrency, total).await;
                    (run(&baseline, concurrency, total).await, t)
                };
                if std::env::var_os("TAGS_VERBOSE").is_some() {
                    eprintln!(
                        "{} c={concurrency} round {round}: untagged {:.0} calls/s, tagged {:.0} calls/s",
                        row.variant, u.ops_per_sec, t.ops_per_sec
                    );
                }
                row.untagged.push(u);
                row.tagged.push(t);
            }
        }
        rows.extend(group);
    }

    // Every measured call must have been a hit. Under heavy load a call can
    // exceed the 200 ms operation timeout and run the body: report it (and
    // fail the smoke run, which must be clean).
    let not_hits = HIT_BODY_RUNS.load(Relaxed) - warmed;
    let stats = [cache.stats(), reuse.stats()];
    let problems: u64 = stats
        .iter()
        .map(|s| s.store_errors + s.timeouts + s.decode_errors + s.tag_misses)
        .sum();
    println!(
        "\nmisses during the hit-path measurement: {not_hits} (timeouts, store errors, decode \
         errors, tag misses: {problems})"
    );
    if not_hits + problems > 0 {
        println!("WARNING: not every call was a hit; stats: {stats:#?}");
        assert!(full, "the smoke run must only hit the cache");
    }
    rows
}
