//! This framework against its peers, in one run: `#[cached]`, hand-written
//! redis-rs cache-aside, the `cached` crate (4.x) and raw `redis-benchmark`,
//! on the hit path and the miss path, against the same `redis-server`.
//!
//! The bench starts its own `redis-server` on a free loopback port (through
//! `tests/common/mod.rs`, no persistence; never the one on 6379). Hits live in
//! database 0, misses in database 1.
//!
//! # Sides
//!
//! Every side is called as `f(id: u64)` and returns the same Rust value: the
//! clone of a prebuilt value carrying `id` (the body: it counts its runs).
//!
//! 1. `framework`: a `#[cached(prefix = .., id = "id", ttl = ..)]` async fn
//!    with the cache given by `Cache::scope` in each task (one `Cache` per
//!    database, built with `Cache::builder().redis_url(..).namespace("peers")
//!    .build()`, otherwise the default settings: leases, single flight, JSON,
//!    200 ms operation timeout). A hit is one `GET` and a JSON decode. A miss is a `GET`, the
//!    lease script, the body, the JSON encode and the fill script: three
//!    round trips by design (see the README's Stampedes section).
//!    `framework, lease = false` (miss path only) is the same function with
//!    `lease = false`: `GET`, body, `SET`, two round trips.
//! 2. `hand-written`: what a service team writes: `format!` the key, `GET`
//!    through a `redis::aio::ConnectionManager` (default config, one per
//!    database, cloned into each task), `serde_json::from_slice`; on a miss
//!    the body, `serde_json::to_vec` and `SET key value EX ttl`. It reads
//!    the very keys the framework stored (same bytes, plain JSON).
//! 3. `cached 4.x`: `#[cached::macros::concurrent_cached(ty =
//!    "cached::AsyncRedisCache<u64, V>", create = {..}, map_error = ..)]`
//!    (4.x renamed `io_cached` to `concurrent_cached`, and
//!    `AsyncRedisCache::new(prefix, ttl)` to `AsyncRedisCache::builder(prefix)
//!    .ttl(..)`), its store built with `.connection_manager(true)`, the same
//!    connection type as the hand-written side (the default is a plain
//!    `MultiplexedConnection`). A hit is one `GET` and a MessagePack decode;
//!    a miss a `GET`, the body, and one `PSETEX` (`cached` stores from a
//!    reference, without reading the old value). `cached` 4.x does not store
//!    JSON: it wraps every value in its own envelope, a MessagePack array
//!    `[value, format version]`, with structs encoded positionally (no field
//!    names), so its bytes on the wire are fewer than the JSON of the other
//!    sides (the header of the output gives both sizes).
//! 4. `redis-benchmark`: `redis-benchmark -t get` (hit tables) or `-t set`
//!    (miss tables), `-d <JSON size of the value>`, `-n` sized from a short
//!    probe to take about `PEERS_RB_SECS`, `--csv` parsed for requests/s and
//!    p50/p99: a bare `GET`/`SET` of one key (`SET` overwrites it, where the
//!    other sides insert fresh keys) from a C client. Two shapes: `-c <c>`,
//!    c connections with one request in flight each (at c = 1, the ceiling of
//!    a call that waits for each reply), and, above c = 1, `-c 1 -P <c>`, one
//!    connection pipelining c requests. The Rust sides multiplex every task
//!    over one connection, so at c > 1 they are closer to the second shape:
//!    c connections cost Redis a read and a write per request and are no
//!    ceiling for them. It is a separate process and can not be interleaved
//!    per call: it runs once per scenario, halfway through its rounds (for
//!    `GET`, its key is first set with `-d`).
//!
//! # Paths, values, concurrency
//!
//! - hit: keys pre-warmed (1,000 small, 100 large per side; the framework
//!   and the hand-written side share them), every call a hit; each run
//!   checks that no body ran.
//! - miss: every call a fresh id (a global counter: no key repeats across
//!   calls, runs or sides), so every call misses, runs the body and stores
//!   the value (TTL 60 s). Memory stays bounded the same way for every side:
//!   database 1 is emptied with `FLUSHDB` (untimed) before every run, so a
//!   run starts from an empty keyspace and Redis holds at most one run's
//!   values. Each run checks that the body ran exactly once per call and
//!   that `DBSIZE` equals the number of calls (each side stored each value).
//! - values: small, the `User` struct of `benches/hit_path.rs` (~200 bytes
//!   of JSON); large, a `Vec` of 480 of them (~100 KB of JSON).
//! - concurrency 1, 16, 64, 256: tasks on a multi-thread tokio runtime (the
//!   default, one worker per CPU), each doing sequential calls; N calls per
//!   run in total, N sized so a hand-written run takes about
//!   `PEERS_RUN_SECS` (at least 4 calls per task).
//! - every returned value is compared with the original (full equality, on
//!   every call, outside the per-call timing); a wrong value panics.
//!
//! # Rounds and figures
//!
//! Each scenario (path, value, concurrency) runs `PEERS_ROUNDS` rounds; a
//! round runs every side once, forward in even rounds and backward in odd
//! ones (ABBA), so drift of the machine weighs on every side alike. The
//! ratio of a side to hand-written is the median of its per-round ratios of
//! calls/s (IQR: their 25th-75th percentiles); calls/s is the median over
//! rounds; p50/p99 are over every call of every round (each call's latency,
//! queueing at high concurrency included); CPU µs/call is this process's CPU
//! time (all threads) and `redis-server`'s, over all rounds.
//!
//! `cargo bench --bench peers` runs it (4-5 minutes on 2 cores, at most
//! about 6.5 when every scenario hits its time budget) and
//! prints markdown tables. Without `--bench` (as under `cargo test
//! --benches`) it runs a few hundred calls per side and scenario as a smoke
//! test (seconds; the large value only at c <= 16, as an unoptimized build
//! decodes it ten times slower), which must be clean. A failed check (a body that ran on a
//! hit, a miss not stored, a store error) is listed at the end of a full run,
//! which then exits with status 1. Environment overrides:
//!
//! - `PEERS_ROUNDS` (16) and `PEERS_RUN_SECS` (0.2): rounds per scenario and
//!   the target duration of one run; a scenario stops early, after at least
//!   6 rounds, once it took twice its planned time;
//! - `PEERS_RB_SECS` (1.0): target duration of a `redis-benchmark` run;
//! - `PEERS_CONCURRENCY` (`1,16,64,256`), `PEERS_PATHS` (`hit,miss`),
//!   `PEERS_VALUES` (`small,large`): run a subset;
//! - `PEERS_VERBOSE=1`: print every round to stderr.

#[path = "../tests/common/mod.rs"]
mod harness;

mod common;

use std::fmt::Debug;
use std::future::Future;
use std::hint::black_box;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{LazyLock, OnceLock};
use std::time::{Duration, Instant};

use cache_runtime::{Cache, cached};
use common::{User, abba_order, env_or, process_cpu, quantile, thousands, user};
use hdrhistogram::Histogram;
use redis::aio::ConnectionManager;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Namespace of the framework's cache and of the hand-written keys.
const NS: &str = "peers";
/// The database of the misses (emptied before each miss run); hits use 0.
const MISS_DB: u32 = 1;
const HIT_TTL: u64 = 3600;
const MISS_TTL: u64 = 60;
/// Users in the large value: ~100 KB of JSON.
const LARGE_LEN: u64 = 480;
/// Pre-warmed keys per side for the small and the large value.
const SMALL_KEYS: u64 = 1_000;
const LARGE_KEYS: u64 = 100;

/// The prebuilt values the bodies clone.
static SMALL: LazyLock<User> = LazyLock::new(|| user(0));
static LARGE: LazyLock<Vec<User>> = LazyLock::new(|| (0..LARGE_LEN).map(user).collect());

/// Runs of every body, of every side: runs never overlap, so the difference
/// over one run is that run's.
static BODY_RUNS: AtomicU64 = AtomicU64::new(0);
/// Body runs during hit runs (after the warm-up): must stay 0.
static HIT_RUN_BODIES: AtomicU64 = AtomicU64::new(0);
/// The next id of a miss call: every miss call gets a key never used before.
static NEXT_MISS_ID: AtomicU64 = AtomicU64::new(1 << 32);
/// The Redis URLs of the hits and the misses, for the `cached` stores (whose
/// `create` blocks run on the first call of each function).
static URLS: OnceLock<(String, String)> = OnceLock::new();

/// The body of every side: clones the prebuilt value and sets its id.
fn body<V: Value>(id: u64) -> V {
    BODY_RUNS.fetch_add(1, Relaxed);
    V::make(id)
}

type Call<V> = Result<V, String>;

/// A value type of the bench, with its functions on every side.
trait Value: Clone + PartialEq + Debug + Serialize + DeserializeOwned + Send + Sync + 'static {
    /// `small` or `large`.
    const LABEL: &'static str;
    /// Pre-warmed keys per side.
    const KEYS: u64;
    /// The prefixes of the hand-written keys (the hit prefix is the
    /// framework's: both sides read the same keys).
    const HIT_PREFIX: &'static str;
    const MISS_PREFIX: &'static str;

    /// The value of `id`: the prebuilt value, carrying `id`.
    fn make(id: u64) -> Self;
    /// Whether `self` equals `make(id)`, without cloning the whole value.
    fn is(&self, id: u64) -> bool;

    fn framework_hit(id: u64) -> impl Future<Output = Call<Self>> + Send;
    fn framework_miss(id: u64) -> impl Future<Output = Call<Self>> + Send;
    fn framework_miss_no_lease(id: u64) -> impl Future<Output = Call<Self>> + Send;
    fn cached_hit(id: u64) -> impl Future<Output = Call<Self>> + Send;
    fn cached_miss(id: u64) -> impl Future<Output = Call<Self>> + Send;
    /// The framework's key of `id` on the hit path.
    fn framework_hit_key(id: u64) -> String;
}

fn with_id(user: &User, id: u64) -> User {
    User { id, ..user.clone() }
}

// ---------------------------------------------------------------------------
// Side 1: the framework
// ---------------------------------------------------------------------------

#[cached(prefix = "hit_s", id = "id", ttl = 3600)]
async fn framework_hit_small(id: u64) -> Result<User, String> {
    Ok(body::<User>(id))
}

#[cached(prefix = "hit_l", id = "id", ttl = 3600)]
async fn framework_hit_large(id: u64) -> Result<Vec<User>, String> {
    Ok(body::<Vec<User>>(id))
}

#[cached(prefix = "miss_s", id = "id", ttl = 60)]
async fn framework_miss_small(id: u64) -> Result<User, String> {
    Ok(body::<User>(id))
}

#[cached(prefix = "miss_l", id = "id", ttl = 60)]
async fn framework_miss_large(id: u64) -> Result<Vec<User>, String> {
    Ok(body::<Vec<User>>(id))
}

#[cached(prefix = "miss_nl_s", id = "id", ttl = 60, lease = false)]
async fn framework_miss_no_lease_small(id: u64) -> Result<User, String> {
    Ok(body::<User>(id))
}

#[cached(prefix = "miss_nl_l", id = "id", ttl = 60, lease = false)]
async fn framework_miss_no_lease_large(id: u64) -> Result<Vec<User>, String> {
    Ok(body::<Vec<User>>(id))
}

// ---------------------------------------------------------------------------
// Side 2: hand-written redis-rs cache-aside
// ---------------------------------------------------------------------------

/// Hand-written cache-aside with redis-rs, the same work as the framework's
/// functions: a failed or undecodable `GET` is a miss, a failed `SET` is
/// ignored.
async fn hand_written<V: Value>(
    conn: &mut ConnectionManager,
    prefix: &str,
    ttl: u64,
    id: u64,
) -> Call<V> {
    let key = format!("{NS}:{prefix}:{id}");
    let cached: redis::RedisResult<Option<Vec<u8>>> =
        redis::cmd("GET").arg(&key).query_async(conn).await;
    if let Ok(Some(bytes)) = cached
        && let Ok(value) = serde_json::from_slice(&bytes)
    {
        return Ok(value);
    }
    let value = body::<V>(id);
    if let Ok(bytes) = serde_json::to_vec(&value) {
        let _: redis::RedisResult<()> = redis::cmd("SET")
            .arg(&key)
            .arg(bytes)
            .arg("EX")
            .arg(ttl)
            .query_async(conn)
            .await;
    }
    Ok(value)
}

// ---------------------------------------------------------------------------
// Side 3: the `cached` crate, 4.x
// ---------------------------------------------------------------------------

/// What each `create` block of the `cached` functions does: an
/// `AsyncRedisCache` with a key prefix, a TTL and a `ConnectionManager`.
async fn cached_store<V>(prefix: &str, ttl: u64, url: &str) -> ::cached::AsyncRedisCache<u64, V>
where
    V: Serialize + DeserializeOwned + Send,
{
    ::cached::AsyncRedisCache::builder(prefix)
        .ttl(Duration::from_secs(ttl))
        .connection_string(url)
        .connection_manager(true)
        .build()
        .await
        .expect("cached: build the AsyncRedisCache")
}

fn hit_url() -> &'static str {
    &URLS.get().expect("the Redis URLs are set first").0
}

fn miss_url() -> &'static str {
    &URLS.get().expect("the Redis URLs are set first").1
}

#[::cached::macros::concurrent_cached(
    ty = "::cached::AsyncRedisCache<u64, User>",
    create = { cached_store("hit_s", HIT_TTL, hit_url()).await },
    map_error = |e| format!("cached: {e:?}")
)]
async fn cached_hit_small(id: u64) -> Result<User, String> {
    Ok(body::<User>(id))
}

#[::cached::macros::concurrent_cached(
    ty = "::cached::AsyncRedisCache<u64, Vec<User>>",
    create = { cached_store("hit_l", HIT_TTL, hit_url()).await },
    map_error = |e| format!("cached: {e:?}")
)]
async fn cached_hit_large(id: u64) -> Result<Vec<User>, String> {
    Ok(body::<Vec<User>>(id))
}

#[::cached::macros::concurrent_cached(
    ty = "::cached::AsyncRedisCache<u64, User>",
    create = { cached_store("miss_s", MISS_TTL, miss_url()).await },
    map_error = |e| format!("cached: {e:?}")
)]
async fn cached_miss_small(id: u64) -> Result<User, String> {
    Ok(body::<User>(id))
}

#[::cached::macros::concurrent_cached(
    ty = "::cached::AsyncRedisCache<u64, Vec<User>>",
    create = { cached_store("miss_l", MISS_TTL, miss_url()).await },
    map_error = |e| format!("cached: {e:?}")
)]
async fn cached_miss_large(id: u64) -> Result<Vec<User>, String> {
    Ok(body::<Vec<User>>(id))
}

/// `cached`'s key of `id` in a store with `prefix` (default namespace).
fn cached_key(prefix: &str, id: u64) -> String {
    format!("cached-redis-store:{prefix}:{id}")
}

impl Value for User {
    const LABEL: &'static str = "small";
    const KEYS: u64 = SMALL_KEYS;
    const HIT_PREFIX: &'static str = "hit_s";
    const MISS_PREFIX: &'static str = "hand_miss_s";

    fn make(id: u64) -> Self {
        with_id(&SMALL, id)
    }
    fn is(&self, id: u64) -> bool {
        *self == with_id(&SMALL, id)
    }
    fn framework_hit(id: u64) -> impl Future<Output = Call<Self>> + Send {
        framework_hit_small(id)
    }
    fn framework_miss(id: u64) -> impl Future<Output = Call<Self>> + Send {
        framework_miss_small(id)
    }
    fn framework_miss_no_lease(id: u64) -> impl Future<Output = Call<Self>> + Send {
        framework_miss_no_lease_small(id)
    }
    fn cached_hit(id: u64) -> impl Future<Output = Call<Self>> + Send {
        cached_hit_small(id)
    }
    fn cached_miss(id: u64) -> impl Future<Output = Call<Self>> + Send {
        cached_miss_small(id)
    }
    fn framework_hit_key(id: u64) -> String {
        framework_hit_small_key(&id)
    }
}

impl Value for Vec<User> {
    const LABEL: &'static str = "large";
    const KEYS: u64 = LARGE_KEYS;
    const HIT_PREFIX: &'static str = "hit_l";
    const MISS_PREFIX: &'static str = "hand_miss_l";

    fn make(id: u64) -> Self {
        let mut value = LARGE.clone();
        value[0].id = id;
        value
    }
    fn is(&self, id: u64) -> bool {
        self.len() == LARGE.len() && self[0] == with_id(&LARGE[0], id) && self[1..] == LARGE[1..]
    }
    fn framework_hit(id: u64) -> impl Future<Output = Call<Self>> + Send {
        framework_hit_large(id)
    }
    fn framework_miss(id: u64) -> impl Future<Output = Call<Self>> + Send {
        framework_miss_large(id)
    }
    fn framework_miss_no_lease(id: u64) -> impl Future<Output = Call<Self>> + Send {
        framework_miss_no_lease_large(id)
    }
    fn cached_hit(id: u64) -> impl Future<Output = Call<Self>> + Send {
        cached_hit_large(id)
    }
    fn cached_miss(id: u64) -> impl Future<Output = Call<Self>> + Send {
        cached_miss_large(id)
    }
    fn framework_hit_key(id: u64) -> String {
        framework_hit_large_key(&id)
    }
}

// ---------------------------------------------------------------------------
// Runs
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Side {
    HandWritten,
    Framework,
    FrameworkNoLease,
    Cached,
}

impl Side {
    fn label(self) -> &'static str {
        match self {
            Side::HandWritten => "hand-written",
            Side::Framework => "framework",
            Side::FrameworkNoLease => "framework, lease = false",
            Side::Cached => "cached 4.x",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum PathKind {
    Hit,
    Miss,
}

impl PathKind {
    fn label(self) -> &'static str {
        match self {
            PathKind::Hit => "hit",
            PathKind::Miss => "miss",
        }
    }

    fn sides(self) -> &'static [Side] {
        match self {
            PathKind::Hit => &[Side::HandWritten, Side::Framework, Side::Cached],
            PathKind::Miss => &[
                Side::HandWritten,
                Side::Framework,
                Side::FrameworkNoLease,
                Side::Cached,
            ],
        }
    }
}

/// What every task needs: the caches and connections of the sides.
#[derive(Clone)]
struct Env {
    hit_cache: Cache,
    miss_cache: Cache,
    /// The hand-written side's connections.
    hit_conn: ConnectionManager,
    miss_conn: ConnectionManager,
    /// `FLUSHDB` and `DBSIZE` of the misses' database (untimed).
    admin: ConnectionManager,
    redis_pid: Option<String>,
    port: u16,
}

/// The ids a task calls: cycling over the pre-warmed keys, or a block of
/// fresh ids.
#[derive(Clone, Copy)]
enum Ids {
    Cycle { first: u64, keys: u64 },
    Fresh { first: u64 },
}

impl Ids {
    fn at(self, i: u64) -> u64 {
        match self {
            Ids::Cycle { first, keys } => (first + i) % keys,
            Ids::Fresh { first } => first + i,
        }
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 2).expect("histogram bounds")
}

/// What one task measured.
struct TaskOut {
    /// Latency of every call, in ns.
    hist: Histogram<u64>,
    errors: u64,
    first_error: Option<String>,
}

impl TaskOut {
    fn check<V: Value>(&mut self, side: Side, result: Call<V>, id: u64) {
        match result {
            Ok(value) => assert!(
                value.is(id),
                "{}: wrong {} value for id {id}",
                side.label(),
                V::LABEL
            ),
            Err(e) => {
                self.errors += 1;
                self.first_error.get_or_insert(e);
            }
        }
    }
}

/// `$ops` sequential calls, each timed and checked.
macro_rules! timed_calls {
    ($out:ident, $side:expr, $ids:expr, $ops:expr, |$id:ident| $call:expr) => {
        for i in 0..$ops {
            let $id = $ids.at(i);
            let start = Instant::now();
            let result: Call<V> = $call.await;
            let elapsed = start.elapsed();
            $out.hist.saturating_record(elapsed.as_nanos() as u64);
            $out.check($side, black_box(result), $id);
        }
    };
}

async fn task<V: Value>(
    env: Env,
    side: Side,
    path: PathKind,
    ids: Ids,
    ops: u64,
    hist: Histogram<u64>,
) -> TaskOut {
    let mut out = TaskOut {
        hist,
        errors: 0,
        first_error: None,
    };
    match (side, path) {
        (Side::HandWritten, PathKind::Hit) => {
            let mut conn = env.hit_conn;
            timed_calls!(out, side, ids, ops, |id| hand_written::<V>(
                &mut conn,
                V::HIT_PREFIX,
                HIT_TTL,
                id
            ));
        }
        (Side::HandWritten, PathKind::Miss) => {
            let mut conn = env.miss_conn;
            timed_calls!(out, side, ids, ops, |id| hand_written::<V>(
                &mut conn,
                V::MISS_PREFIX,
                MISS_TTL,
                id
            ));
        }
        (Side::Framework, PathKind::Hit) => {
            Cache::scope(env.hit_cache, async {
                timed_calls!(out, side, ids, ops, |id| V::framework_hit(id));
            })
            .await
        }
        (Side::Framework, PathKind::Miss) => {
            Cache::scope(env.miss_cache, async {
                timed_calls!(out, side, ids, ops, |id| V::framework_miss(id));
            })
            .await
        }
        (Side::FrameworkNoLease, PathKind::Miss) => {
            Cache::scope(env.miss_cache, async {
                timed_calls!(out, side, ids, ops, |id| V::framework_miss_no_lease(id));
            })
            .await
        }
        (Side::Cached, PathKind::Hit) => {
            timed_calls!(out, side, ids, ops, |id| V::cached_hit(id));
        }
        (Side::Cached, PathKind::Miss) => {
            timed_calls!(out, side, ids, ops, |id| V::cached_miss(id));
        }
        (Side::FrameworkNoLease, PathKind::Hit) => {
            unreachable!("the hit path has no lease = false side")
        }
    }
    out
}

/// One run of one side.
struct Sample {
    ops: u64,
    ops_per_sec: f64,
    hist: Histogram<u64>,
    /// CPU time of this process (all threads) during the run, if known.
    cpu: Option<Duration>,
    /// CPU time of `redis-server` during the run, if known.
    redis_cpu: Option<Duration>,
}

async fn flushdb(env: &Env) {
    let () = redis::cmd("FLUSHDB")
        .query_async(&mut env.admin.clone())
        .await
        .expect("FLUSHDB of the misses' database");
}

async fn dbsize(env: &Env) -> u64 {
    redis::cmd("DBSIZE")
        .query_async(&mut env.admin.clone())
        .await
        .expect("DBSIZE of the misses' database")
}

/// `total` calls of `side` spread over `concurrency` spawned tasks; checks
/// the body runs and stores of the run, adding what is wrong to `problems`.
async fn run<V: Value>(
    env: &Env,
    side: Side,
    path: PathKind,
    concurrency: u64,
    total: u64,
    problems: &mut Vec<String>,
) -> Sample {
    let per_task = (total / concurrency).max(1);
    let ops = per_task * concurrency;
    let ids: Vec<Ids> = match path {
        PathKind::Hit => (0..concurrency)
            .map(|t| Ids::Cycle {
                first: t * V::KEYS / concurrency,
                keys: V::KEYS,
            })
            .collect(),
        PathKind::Miss => {
            flushdb(env).await;
            let first = NEXT_MISS_ID.fetch_add(ops, Relaxed);
            (0..concurrency)
                .map(|t| Ids::Fresh {
                    first: first + t * per_task,
                })
                .collect()
        }
    };
    // Everything a task gets is built before the clock starts.
    let args: Vec<(Env, Ids, Histogram<u64>)> = ids
        .into_iter()
        .map(|ids| (env.clone(), ids, histogram()))
        .collect();
    let body_before = BODY_RUNS.load(Relaxed);
    let redis_cpu = || env.redis_pid.as_deref().and_then(process_cpu);
    let (cpu_before, redis_before) = (process_cpu("self"), redis_cpu());
    let start = Instant::now();
    let handles: Vec<_> = args
        .into_iter()
        .map(|(env, ids, hist)| tokio::spawn(task::<V>(env, side, path, ids, per_task, hist)))
        .collect();
    let mut outs = Vec::with_capacity(handles.len());
    for h in handles {
        outs.push(h.await.expect("a benchmark task panicked"));
    }
    let wall = start.elapsed();
    let cpu = process_cpu("self")
        .zip(cpu_before)
        .map(|(after, before)| after - before);
    let redis_cpu = redis_cpu()
        .zip(redis_before)
        .map(|(after, before)| after - before);
    let body_runs = BODY_RUNS.load(Relaxed) - body_before;

    let what = format!(
        "{} {} {}, c={concurrency}",
        side.label(),
        path.label(),
        V::LABEL
    );
    let mut hist = histogram();
    let mut errors = 0;
    let mut first_error = None;
    for out in outs {
        hist.add(&out.hist).expect("merge histograms");
        errors += out.errors;
        first_error = first_error.or(out.first_error);
    }
    if let Some(e) = first_error {
        problems.push(format!(
            "{what}: {errors} failed call(s) in a run of {ops}, the first: {e}"
        ));
    }
    match path {
        PathKind::Hit if body_runs != 0 => {
            HIT_RUN_BODIES.fetch_add(body_runs, Relaxed);
            problems.push(format!(
                "{what}: the body ran {body_runs} times in a run of {ops} hits"
            ))
        }
        PathKind::Miss if body_runs != ops => problems.push(format!(
            "{what}: the body ran {body_runs} times in a run of {ops} misses"
        )),
        PathKind::Miss => {
            let stored = dbsize(env).await;
            if stored != ops {
                problems.push(format!(
                    "{what}: {stored} keys stored by a run of {ops} misses"
                ));
            }
        }
        PathKind::Hit => {}
    }
    Sample {
        ops,
        ops_per_sec: ops as f64 / wall.as_secs_f64(),
        hist,
        cpu,
        redis_cpu,
    }
}

// ---------------------------------------------------------------------------
// redis-benchmark
// ---------------------------------------------------------------------------

/// One `redis-benchmark` run.
struct RbSample {
    test: &'static str,
    /// `-c`: connections, each with one request in flight.
    connections: u64,
    /// `-P`: requests sent at once on each connection (1: no pipelining).
    pipeline: u64,
    requests: u64,
    rps: f64,
    p50_us: Option<f64>,
    p99_us: Option<f64>,
    redis_cpu: Option<Duration>,
}

impl RbSample {
    fn label(&self) -> String {
        let test = self.test.to_uppercase();
        match (self.connections, self.pipeline) {
            (1, 1) => format!("redis-benchmark {test}"),
            (c, 1) => format!("redis-benchmark {test}, {c} connections"),
            (1, p) => format!("redis-benchmark {test}, 1 connection, -P {p}"),
            (c, p) => format!("redis-benchmark {test}, {c} connections, -P {p}"),
        }
    }
}

/// Runs `redis-benchmark -t <test> -d <size> -c <connections> -P <pipeline>
/// -n <requests> --csv` against the bench's server.
fn redis_benchmark(
    env: &Env,
    test: &'static str,
    size: usize,
    (connections, pipeline): (u64, u64),
    requests: u64,
) -> RbSample {
    // Whole batches: redis-benchmark 7.0 with one pipelining connection
    // sometimes aborts ("All clients disconnected") on a partial last batch.
    let batch = connections * pipeline;
    let requests = requests.div_ceil(batch) * batch;
    let redis_cpu = || env.redis_pid.as_deref().and_then(process_cpu);
    let mut attempt = 1;
    let (out, redis_cpu) = loop {
        let before = redis_cpu();
        let out = Command::new("redis-benchmark")
            .args(["-h", "127.0.0.1", "-p", &env.port.to_string(), "-t", test])
            .args(["-d", &size.to_string(), "-c", &connections.to_string()])
            .args(["-P", &pipeline.to_string()])
            .args(["-n", &requests.to_string(), "--csv"])
            .output()
            .expect("redis-benchmark is not installed (it comes with redis-server)");
        let cpu = redis_cpu()
            .zip(before)
            .map(|(after, before)| after - before);
        if out.status.success() || attempt == 3 {
            break (out, cpu);
        }
        eprintln!(
            "redis-benchmark -t {test} -c {connections} -P {pipeline} -n {requests} failed \
             ({}), retrying: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout).trim()
        );
        attempt += 1;
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "redis-benchmark failed ({}): {stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    // "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms",...
    let rows: Vec<Vec<String>> = stdout
        .lines()
        .map(|l| {
            l.split(',')
                .map(|f| f.trim().trim_matches('"').to_owned())
                .collect()
        })
        .collect();
    let header = rows
        .iter()
        .find(|r| r.first().is_some_and(|f| f == "test"))
        .unwrap_or_else(|| panic!("no CSV header in the output of redis-benchmark: {stdout}"));
    let row = rows
        .iter()
        .find(|r| r.first().is_some_and(|f| f.eq_ignore_ascii_case(test)))
        .unwrap_or_else(|| panic!("no {test} row in the output of redis-benchmark: {stdout}"));
    let field = |name: &str| -> Option<f64> {
        let i = header.iter().position(|h| h == name)?;
        row.get(i)?.parse().ok()
    };
    RbSample {
        test,
        connections,
        pipeline,
        requests,
        rps: field("rps").unwrap_or_else(|| panic!("no rps in: {stdout}")),
        p50_us: field("p50_latency_ms").map(|ms| ms * 1e3),
        p99_us: field("p99_latency_ms").map(|ms| ms * 1e3),
        redis_cpu,
    }
}

/// The `redis-benchmark` runs of a scenario: `GET` for hits (its key first
/// set with `-d size`), `SET` for misses, with `concurrency` connections
/// and, above concurrency 1, with one connection pipelining `concurrency`
/// requests (what the Rust sides do: their tasks share one multiplexed
/// connection); `-n` sized from a short probe to take about `secs`.
fn redis_benchmark_scenario(
    env: &Env,
    path: PathKind,
    size: usize,
    concurrency: u64,
    secs: f64,
    full: bool,
) -> Vec<RbSample> {
    let test = match path {
        PathKind::Hit => "get",
        PathKind::Miss => "set",
    };
    if path == PathKind::Hit {
        redis_benchmark(env, "set", size, (1, 1), 10);
    }
    let mut shapes = vec![(concurrency, 1)];
    if concurrency > 1 {
        shapes.push((1, concurrency));
    }
    shapes
        .into_iter()
        .map(|shape| {
            if !full {
                return redis_benchmark(env, test, size, shape, 200.max(concurrency));
            }
            let probe = redis_benchmark(env, test, size, shape, 2_000.max(20 * concurrency));
            let requests = ((probe.rps * secs) as u64).max(probe.requests);
            redis_benchmark(env, test, size, shape, requests)
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------

struct Config {
    full: bool,
    rounds: usize,
    run_secs: f64,
    rb_secs: f64,
    verbose: bool,
}

/// One (path, value, concurrency): every side's samples, round by round.
struct Scenario {
    path: PathKind,
    value: &'static str,
    concurrency: u64,
    calls_per_run: u64,
    sides: &'static [Side],
    /// `samples[s][r]`: side `s`, round `r`.
    samples: Vec<Vec<Sample>>,
    /// `concurrency` connections, then (above 1) one pipelining connection.
    rb: Vec<RbSample>,
    took: Duration,
}

async fn scenario<V: Value>(
    env: &Env,
    cfg: &Config,
    path: PathKind,
    concurrency: u64,
    json_size: usize,
    problems: &mut Vec<String>,
) -> Scenario {
    let started = Instant::now();
    let sides = path.sides();
    // Untimed warm-up of every side (connections, scripts, `cached`'s
    // stores), then N sized from the fastest of three hand-written probes.
    let probe = if cfg.full {
        128.max(4 * concurrency)
    } else {
        64.max(concurrency)
    };
    for &side in sides {
        run::<V>(env, side, path, concurrency, probe, problems).await;
    }
    let calls_per_run = if cfg.full {
        let mut fastest = 0f64;
        for _ in 0..3 {
            let s = run::<V>(env, Side::HandWritten, path, concurrency, probe, problems).await;
            fastest = fastest.max(s.ops_per_sec);
        }
        let n = ((fastest * cfg.run_secs) as u64)
            .max(4 * concurrency)
            .max(64);
        n / concurrency * concurrency
    } else {
        probe.div_ceil(concurrency) * concurrency
    };

    let mut samples: Vec<Vec<Sample>> = sides.iter().map(|_| Vec::new()).collect();
    let mut rb = None;
    let planned = cfg.rounds as f64 * sides.len() as f64 * cfg.run_secs;
    let budget = Duration::from_secs_f64(2.0 * planned);
    let rounds_started = Instant::now();
    let mut round = 0;
    while common::next_round(round, cfg.rounds, 6, rounds_started.elapsed(), budget) {
        if round == cfg.rounds / 2 {
            rb = Some(redis_benchmark_scenario(
                env,
                path,
                json_size,
                concurrency,
                cfg.rb_secs,
                cfg.full,
            ));
        }
        for s in abba_order(round, sides.len()) {
            let sample = run::<V>(env, sides[s], path, concurrency, calls_per_run, problems).await;
            samples[s].push(sample);
        }
        if cfg.verbose {
            let line: Vec<String> = sides
                .iter()
                .zip(&samples)
                .map(|(side, s)| format!("{} {:.0}/s", side.label(), s[round].ops_per_sec))
                .collect();
            eprintln!(
                "{} {} c={concurrency} round {round}: {}",
                path.label(),
                V::LABEL,
                line.join(", ")
            );
        }
        round += 1;
    }
    let rb = rb.unwrap_or_else(|| {
        redis_benchmark_scenario(env, path, json_size, concurrency, cfg.rb_secs, cfg.full)
    });
    let scenario = Scenario {
        path,
        value: V::LABEL,
        concurrency,
        calls_per_run,
        sides,
        samples,
        rb,
        took: started.elapsed(),
    };
    eprintln!(
        "{} {} c={concurrency}: {} rounds of {calls_per_run} calls per side, {:.1} s; {}",
        path.label(),
        V::LABEL,
        round,
        scenario.took.as_secs_f64(),
        scenario.summary_cells().join(", ")
    );
    scenario
}

/// A side's figures over a scenario's rounds.
struct Figures {
    ops_per_sec: f64,
    /// Median, 25th and 75th percentiles of the per-round ratios to
    /// hand-written.
    ratio: (f64, f64, f64),
    p50_us: f64,
    p99_us: f64,
    cpu_us: Option<f64>,
    redis_cpu_us: Option<f64>,
}

impl Scenario {
    fn figures(&self, s: usize) -> Figures {
        let samples = &self.samples[s];
        let hand = &self.samples[0];
        let ratios: Vec<f64> = samples
            .iter()
            .zip(hand)
            .map(|(x, h)| x.ops_per_sec / h.ops_per_sec)
            .collect();
        let mut hist = histogram();
        for sample in samples {
            hist.add(&sample.hist).expect("merge histograms");
        }
        let ops: u64 = samples.iter().map(|s| s.ops).sum();
        let per_call = |cpu: Option<Duration>| cpu.map(|c| c.as_secs_f64() * 1e6 / ops as f64);
        Figures {
            ops_per_sec: quantile(samples.iter().map(|s| s.ops_per_sec).collect(), 0.5),
            ratio: (
                quantile(ratios.clone(), 0.5),
                quantile(ratios.clone(), 0.25),
                quantile(ratios, 0.75),
            ),
            p50_us: hist.value_at_quantile(0.5) as f64 / 1e3,
            p99_us: hist.value_at_quantile(0.99) as f64 / 1e3,
            cpu_us: per_call(samples.iter().map(|s| s.cpu).sum()),
            redis_cpu_us: per_call(samples.iter().map(|s| s.redis_cpu).sum()),
        }
    }

    fn side_index(&self, side: Side) -> Option<usize> {
        self.sides.iter().position(|&s| s == side)
    }

    /// The cells of the summary table after the scenario's name: hand-written
    /// calls/s, each other side's ratio, redis-benchmark.
    fn summary_cells(&self) -> Vec<String> {
        let hand = self.figures(0).ops_per_sec;
        let mut cells = vec![thousands(hand)];
        for side in [Side::Framework, Side::FrameworkNoLease, Side::Cached] {
            cells.push(match self.side_index(side) {
                Some(s) => {
                    let (median, q1, q3) = self.figures(s).ratio;
                    format!("{median:.2} ({q1:.2}-{q3:.2})")
                }
                None => "-".to_owned(),
            });
        }
        for pipelined in [false, true] {
            cells.push(
                match self.rb.iter().find(|rb| (rb.pipeline > 1) == pipelined) {
                    Some(rb) => format!("{} ({:.2})", thousands(rb.rps), rb.rps / hand),
                    None if self.concurrency == 1 => "(same)".to_owned(),
                    None => "-".to_owned(),
                },
            );
        }
        cells
    }
}

fn fmt_opt(v: Option<f64>, decimals: usize) -> String {
    v.map_or("n/a".to_owned(), |v| format!("{v:.decimals$}"))
}

fn print_summary(scenarios: &[Scenario], sizes: &Sizes) {
    println!("\n### Summary: calls/s relative to hand-written\n");
    println!(
        "| path | value | c | hand-written calls/s | framework | framework, lease = false | cached 4.x | redis-benchmark, c connections | redis-benchmark, 1 connection, -P c |"
    );
    println!("|---|---|--:|--:|--:|--:|--:|--:|--:|");
    for sc in scenarios {
        println!(
            "| {} | {} | {} | {} |",
            sc.path.label(),
            sizes.label(sc.value),
            sc.concurrency,
            sc.summary_cells().join(" | ")
        );
    }
    println!(
        "\nratio: median of the per-round ratios of calls/s to hand-written (each round runs \
         every side back to back, ABBA), in parentheses their IQR (25th-75th percentile).\n\
         redis-benchmark: requests/s of `GET` (hit rows) or `SET` (miss rows) of one key from \
         a C client, one run per scenario, in parentheses over the hand-written calls/s; with \
         c connections of one request in flight each, and with one connection pipelining c \
         requests (`-P c`), closer to the Rust sides, whose tasks share one multiplexed \
         connection."
    );
}

fn print_details(scenarios: &[Scenario], sizes: &Sizes) {
    let mut groups: Vec<(PathKind, &str)> = Vec::new();
    for sc in scenarios {
        if !groups.contains(&(sc.path, sc.value)) {
            groups.push((sc.path, sc.value));
        }
    }
    for (path, value) in groups {
        let title = match path {
            PathKind::Hit => "Hit path",
            PathKind::Miss => "Miss path",
        };
        println!("\n### {title}, {value} value ({})\n", sizes.describe(value));
        println!(
            "| c | side | calls/s | / hand-written (IQR) | p50 µs | p99 µs | CPU µs/call | redis CPU µs/call |"
        );
        println!("|--:|---|--:|---|--:|--:|--:|--:|");
        let mut runs = Vec::new();
        for sc in scenarios
            .iter()
            .filter(|s| s.path == path && s.value == value)
        {
            for (s, side) in sc.sides.iter().enumerate() {
                let f = sc.figures(s);
                let (median, q1, q3) = f.ratio;
                let ratio = if s == 0 {
                    "1".to_owned()
                } else {
                    format!("{median:.2} ({q1:.2}-{q3:.2})")
                };
                println!(
                    "| {} | {} | {} | {ratio} | {} | {} | {} | {} |",
                    sc.concurrency,
                    side.label(),
                    thousands(f.ops_per_sec),
                    thousands(f.p50_us),
                    thousands(f.p99_us),
                    fmt_opt(f.cpu_us, 1),
                    fmt_opt(f.redis_cpu_us, 1),
                );
            }
            let hand = sc.figures(0).ops_per_sec;
            for rb in &sc.rb {
                println!(
                    "| {} | {} | {} | {:.2} (1 run) | {} | {} | n/a | {} |",
                    sc.concurrency,
                    rb.label(),
                    thousands(rb.rps),
                    rb.rps / hand,
                    rb.p50_us.map_or("n/a".to_owned(), thousands),
                    rb.p99_us.map_or("n/a".to_owned(), thousands),
                    fmt_opt(
                        rb.redis_cpu
                            .map(|c| c.as_secs_f64() * 1e6 / rb.requests as f64),
                        1
                    ),
                );
            }
            runs.push(format!(
                "c={}: {} rounds of {} calls per side, {} requests per redis-benchmark run ({:.0} s)",
                sc.concurrency,
                sc.samples[0].len(),
                thousands(sc.calls_per_run as f64),
                sc.rb
                    .iter()
                    .map(|rb| thousands(rb.requests as f64))
                    .collect::<Vec<_>>()
                    .join(" and "),
                sc.took.as_secs_f64(),
            ));
        }
        println!("\n{}", runs.join("; "));
    }
    println!(
        "\ncalls/s: median over the rounds; / hand-written: median of the per-round ratios, \
         IQR in parentheses; p50/p99: latency of every call of every round (at high \
         concurrency mostly queueing); CPU µs/call: this process (all threads) and \
         redis-server, over all rounds (redis-benchmark's own CPU is not measured)."
    );
}

/// The stored sizes of the values, for the tables' titles.
struct Sizes {
    small_json: usize,
    small_cached: usize,
    large_json: usize,
    large_cached: usize,
}

impl Sizes {
    fn label(&self, value: &str) -> String {
        match value {
            "small" => format!("small ({} B)", self.small_json),
            _ => format!("large ({} KB)", self.large_json / 1000),
        }
    }

    fn describe(&self, value: &str) -> String {
        let (json, cached) = match value {
            "small" => (self.small_json, self.small_cached),
            _ => (self.large_json, self.large_cached),
        };
        format!(
            "{} bytes of JSON; cached 4.x stores {} bytes of MessagePack",
            thousands(json as f64),
            thousands(cached as f64)
        )
    }
}

fn list_or<T: Clone>(var: &str, all: &[(&str, T)]) -> Vec<T> {
    match std::env::var(var) {
        Ok(list) => list
            .split(',')
            .map(|item| {
                let item = item.trim();
                all.iter()
                    .find(|(name, _)| *name == item)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_else(|| panic!("{var}={list}: unknown item {item:?}"))
            })
            .collect(),
        Err(_) => all.iter().map(|(_, v)| v.clone()).collect(),
    }
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` does not.
    let full = std::env::args().any(|a| a == "--bench");
    let cfg = Config {
        full,
        rounds: if full { env_or("PEERS_ROUNDS", 16) } else { 1 },
        run_secs: env_or("PEERS_RUN_SECS", 0.2),
        rb_secs: env_or("PEERS_RB_SECS", 1.0),
        verbose: std::env::var_os("PEERS_VERBOSE").is_some(),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let server = harness::RedisServer::start();
    let problems = rt.block_on(bench(&server, &cfg));
    drop(rt);
    drop(server);
    if !problems.is_empty() {
        std::process::exit(1);
    }
}

async fn connect(url: &str) -> ConnectionManager {
    let client = redis::Client::open(url).expect("redis client");
    ConnectionManager::new(client).await.expect("connect")
}

async fn strlen(conn: &ConnectionManager, key: &str) -> usize {
    redis::cmd("STRLEN")
        .arg(key)
        .query_async(&mut conn.clone())
        .await
        .expect("STRLEN")
}

/// Stores every pre-warmed key of `V` through the framework and `cached`
/// (16 tasks each).
async fn warm<V: Value>(env: &Env) {
    let mut handles = Vec::new();
    for t in 0..16 {
        let cache = env.hit_cache.clone();
        handles.push(tokio::spawn(Cache::scope(cache, async move {
            for id in (t..V::KEYS).step_by(16) {
                let value = V::framework_hit(id).await.expect("warm the framework");
                assert!(value.is(id));
                let value = V::cached_hit(id).await.expect("warm cached");
                assert!(value.is(id));
            }
        })));
    }
    for h in handles {
        h.await.expect("warm-up");
    }
}

async fn bench(server: &harness::RedisServer, cfg: &Config) -> Vec<String> {
    let started = Instant::now();
    let info = server.cli(&["INFO", "server"]);
    let redis_pid = common::info_field(&info, "process_id");
    let hit_url = server.url();
    let miss_url = format!("{hit_url}/{MISS_DB}");
    URLS.set((hit_url.clone(), miss_url.clone()))
        .expect("URLS is set once");
    let build = |url: String| Cache::builder().redis_url(url).namespace(NS).build();
    let env = Env {
        hit_cache: build(hit_url.clone()).await.expect("cache"),
        miss_cache: build(miss_url.clone()).await.expect("cache"),
        hit_conn: connect(&hit_url).await,
        miss_conn: connect(&miss_url).await,
        admin: connect(&miss_url).await,
        redis_pid,
        port: server.port(),
    };
    let load_before = common::load_average();

    // The keys the hand-written side reads are the framework's (a key
    // companion names the key in the cache in scope).
    Cache::scope(env.hit_cache.clone(), async {
        assert_eq!(
            User::framework_hit_key(42),
            format!("{NS}:{}:42", User::HIT_PREFIX)
        );
        assert_eq!(
            <Vec<User>>::framework_hit_key(42),
            format!("{NS}:{}:42", <Vec<User>>::HIT_PREFIX)
        );
    })
    .await;
    warm::<User>(&env).await;
    warm::<Vec<User>>(&env).await;
    let warmed = BODY_RUNS.load(Relaxed);
    assert_eq!(
        warmed,
        2 * (SMALL_KEYS + LARGE_KEYS),
        "warm-up must store every key"
    );
    let hit_conn = &env.hit_conn;
    let sizes = Sizes {
        small_json: strlen(hit_conn, &format!("{NS}:{}:1", User::HIT_PREFIX)).await,
        small_cached: strlen(hit_conn, &cached_key("hit_s", 1)).await,
        large_json: strlen(hit_conn, &format!("{NS}:{}:1", <Vec<User>>::HIT_PREFIX)).await,
        large_cached: strlen(hit_conn, &cached_key("hit_l", 1)).await,
    };
    assert_eq!(
        sizes.small_json,
        serde_json::to_vec(&User::make(1)).unwrap().len()
    );
    assert_eq!(
        sizes.large_json,
        serde_json::to_vec(&<Vec<User>>::make(1)).unwrap().len()
    );
    assert!(
        sizes.small_cached > 0 && sizes.large_cached > 0,
        "cached stored its keys"
    );

    let paths = list_or(
        "PEERS_PATHS",
        &[("hit", PathKind::Hit), ("miss", PathKind::Miss)],
    );
    let values = list_or("PEERS_VALUES", &[("small", "small"), ("large", "large")]);
    let concurrencies: Vec<u64> = match std::env::var("PEERS_CONCURRENCY") {
        Ok(list) => list
            .split(',')
            .map(|c| {
                c.trim()
                    .parse()
                    .expect("PEERS_CONCURRENCY: numbers like 1,64")
            })
            .collect(),
        Err(_) => vec![1, 16, 64, 256],
    };
    let mut problems = Vec::new();
    let mut scenarios = Vec::new();
    for &path in &paths {
        for &value in &values {
            for &c in &concurrencies {
                // An unoptimized build decodes 100 KB of JSON ten times
                // slower: at high concurrency the calls queue past the
                // operation timeouts. The smoke run keeps to c <= 16 there.
                if !cfg.full && value == "large" && c > 16 {
                    continue;
                }
                scenarios.push(match value {
                    "small" => {
                        scenario::<User>(&env, cfg, path, c, sizes.small_json, &mut problems).await
                    }
                    _ => {
                        scenario::<Vec<User>>(&env, cfg, path, c, sizes.large_json, &mut problems)
                            .await
                    }
                });
            }
        }
    }
    let stats = [env.hit_cache.stats(), env.miss_cache.stats()];

    let workers = tokio::runtime::Handle::current().metrics().num_workers();
    println!(
        "## Peers: the framework against hand-written redis-rs, cached 4.x and redis-benchmark\n"
    );
    println!(
        "- machine: {} ({} CPUs), load average {load_before} before, {} after",
        common::cpu_model(),
        common::nproc(),
        common::load_average()
    );
    println!(
        "- {}, started by the bench on 127.0.0.1:{} (no persistence), on the same CPUs; {}",
        common::version_of("redis-server"),
        server.port(),
        common::version_of("redis-benchmark")
    );
    println!(
        "- client: tokio multi-thread runtime, {workers} workers; redis {}, cached {}, serde_json {}",
        common::locked_version("redis"),
        common::locked_version("cached"),
        common::locked_version("serde_json"),
    );
    println!(
        "- values: small = `User`, {}; large = `Vec<User>` of {LARGE_LEN}, {}",
        sizes.describe("small"),
        sizes.describe("large")
    );
    println!(
        "- {} round(s) per scenario of {:.2} s runs; misses: a fresh key per call, the misses' \
         database emptied (untimed) before every run",
        cfg.rounds, cfg.run_secs
    );
    let overrides: Vec<String> = std::env::vars()
        .filter(|(k, _)| k.starts_with("PEERS_"))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    if !overrides.is_empty() {
        println!("- overrides: {}", overrides.join(" "));
    }
    print_summary(&scenarios, &sizes);
    print_details(&scenarios, &sizes);
    println!(
        "\nframework stats (hit cache, miss cache): timeouts {}, {}; store errors {}, {}; \
         decode errors {}, {}; leases lost {}, {}; lease waits {}, {}; coalesced {}, {}",
        stats[0].timeouts,
        stats[1].timeouts,
        stats[0].store_errors,
        stats[1].store_errors,
        stats[0].decode_errors,
        stats[1].decode_errors,
        stats[0].leases_lost,
        stats[1].leases_lost,
        stats[0].lease_waits,
        stats[1].lease_waits,
        stats[0].coalesced,
        stats[1].coalesced,
    );
    println!(
        "bodies run during hit runs: {} (checked after every run, as are the misses: one body \
         run and one stored key per call); the whole run took {:.0} s",
        HIT_RUN_BODIES.load(Relaxed),
        started.elapsed().as_secs_f64()
    );
    if !problems.is_empty() {
        println!("\n### FAILED CHECKS\n");
        for p in &problems {
            println!("- {p}");
        }
        assert!(cfg.full, "the smoke run must be clean");
    }
    if !cfg.full {
        println!("\n(smoke run: pass --bench, as `cargo bench` does, for real numbers)");
    }
    problems
}
