//! Test helper, not a tool: one OS process of the near-tier tests in
//! `tests/near_processes.rs`. It is built with the root package so that the
//! tests can start it through `env!("CARGO_BIN_EXE_near_worker")`.
//!
//! ```text
//! near_worker <redis_url> <namespace> <db_path> <connect_timeout_ms>
//! ```
//!
//! The process builds a Redis cache, installs it, prints `ready`, then
//! answers one line on stdout for each command line on stdin, until stdin
//! closes. Its one cached function is `version(7)`, `near = true`, whose
//! body reads the "database": the file `<db_path>`, which holds one
//! version number. (A file rather than a Redis key: this binary may only
//! use the root package's normal dependencies, and `redis` is not one.
//! Writers replace the file with a rename, so a reader sees the old or the
//! new content, never a torn one.) Times are wall-clock nanoseconds since
//! the Unix epoch, comparable across the processes of one machine.
//!
//! - `warm <timeout_ms>`: calls until the near tier serves the value.
//!   `warm ok=<0|1> value=<v> near_hits=<n>`
//! - `watch`: starts calling in a loop on a thread of its own, one call
//!   every [`POLL`], recording when each version was first and last returned.
//!   `watching`
//! - `stop <version> <timeout_ms>`: the loop goes on until it has returned
//!   `<version>` (or a later one), or for at most `<timeout_ms>`, then stops.
//!   `seen calls=<n> backwards=<n> newest=<v> slowest_call_us=<n>
//!   near_hits=<n> hits=<n> misses=<n> near_flushes=<n> lease_waits=<n>
//!   coalesced=<n> leases_lost=<n> first_seen=<v>:<ns>,...
//!   first_started=<v>:<ns>,... last_seen=<v>:<ns>,...` (counters since
//!   `watch`; `backwards`: calls that returned an older version than an
//!   earlier call did; `first_seen` and `last_seen`: when the first and the
//!   last call that returned each version returned; `first_started`: when
//!   the first call that returned it started)
//! - `calls <n>`: `<n>` calls in a row.
//!   `values near_hits=<n> list=<v>,...`
//! - `bump <n> <pause_ms>`: `<n>` times: writes the next version to the
//!   database, invalidates the entry with the typed companion
//!   (`version_invalidate`), notes when it returned, sleeps `<pause_ms>`.
//!   `bumped invalidation_failures=<n> returned=<v>:<ns>,...`
//! - `stats`: `stats hits=<n> near_hits=<n> misses=<n> near_flushes=<n>
//!   invalidation_failures=<n>`
//!
//! Usage errors exit with status 2.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cache_runtime::{Cache, Stats, cached};
use tokio::runtime::Runtime;

/// The id every call uses: all calls share one key.
const ID: u64 = 7;
/// Pause between two calls of the `watch` loop. A paced loop rather than a
/// spinning one: the test runs 3 workers, Redis and itself on machines with
/// as few as 2 cores, and spinning readers would starve the writer and
/// Redis of CPU, measuring the scheduler instead of the invalidation path.
/// It adds at most this much (plus timer slack) to a measured staleness.
const POLL: Duration = Duration::from_micros(100);

/// The database file (from the command line).
static DB: OnceLock<PathBuf> = OnceLock::new();

#[cached(prefix = "version", id = "id", ttl = 60, near = true)]
async fn version(id: u64) -> u64 {
    let _ = id;
    read_db()
}

fn read_db() -> u64 {
    let path = DB.get().expect("the database path is set at start");
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("near_worker: read {}: {e}", path.display()));
    text.trim()
        .parse()
        .unwrap_or_else(|e| panic!("near_worker: {} holds {text:?}: {e}", path.display()))
}

/// Replaces the database's content at once (write aside, then rename).
fn write_db(version: u64) {
    let path = DB.get().expect("the database path is set at start");
    let aside = path.with_extension("next");
    std::fs::write(&aside, version.to_string())
        .and_then(|()| std::fs::rename(&aside, path))
        .unwrap_or_else(|e| panic!("near_worker: write {}: {e}", path.display()));
}

/// Wall-clock time in ns since the Unix epoch (CLOCK_REALTIME): comparable
/// between processes, unlike `Instant`.
fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_nanos() as u64
}

/// Prints a line and flushes it at once: the parent reads stdout through a pipe.
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn usage(msg: &str) -> ! {
    eprintln!("near_worker: {msg}");
    eprintln!("usage: near_worker <redis_url> <namespace> <db_path> <connect_timeout_ms>");
    std::process::exit(2);
}

fn number(word: Option<&str>, name: &str) -> u64 {
    word.and_then(|w| w.parse().ok())
        .unwrap_or_else(|| usage(&format!("<{name}> must be a non-negative integer")))
}

/// `v:ns` pairs, comma-separated.
fn pairs<'a>(items: impl IntoIterator<Item = (&'a u64, &'a u64)>) -> String {
    items
        .into_iter()
        .map(|(v, t)| format!("{v}:{t}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The `watch` loop's stop conditions, set by `stop`.
static STOP_AT: AtomicU64 = AtomicU64::new(u64::MAX);
static STOP_NOW: AtomicBool = AtomicBool::new(false);

/// What one `watch` loop saw.
struct Watched {
    calls: u64,
    backwards: u64,
    newest: u64,
    slowest_call: Duration,
    /// Version -> wall-clock ns when the first call that returned it returned.
    first_seen: BTreeMap<u64, u64>,
    /// Version -> wall-clock ns when that first call started.
    first_started: BTreeMap<u64, u64>,
    /// Version -> the same for the last call that returned it.
    last_seen: BTreeMap<u64, u64>,
}

fn watch_loop(runtime: &Runtime) -> Watched {
    let mut w = Watched {
        calls: 0,
        backwards: 0,
        newest: 0,
        slowest_call: Duration::ZERO,
        first_seen: BTreeMap::new(),
        first_started: BTreeMap::new(),
        last_seen: BTreeMap::new(),
    };
    loop {
        let (started, started_ns) = (Instant::now(), now_ns());
        let v = runtime.block_on(version(ID));
        let t = now_ns();
        w.slowest_call = w.slowest_call.max(started.elapsed());
        if w.calls > 0 && v < w.newest {
            w.backwards += 1;
        }
        w.calls += 1;
        w.newest = w.newest.max(v);
        if let Entry::Vacant(first) = w.first_seen.entry(v) {
            first.insert(t);
            w.first_started.insert(v, started_ns);
        }
        w.last_seen.insert(v, t);
        if w.newest >= STOP_AT.load(Ordering::SeqCst) || STOP_NOW.load(Ordering::SeqCst) {
            return w;
        }
        std::thread::sleep(POLL);
    }
}

struct Worker {
    runtime: &'static Runtime,
    cache: Cache,
    watching: Option<(JoinHandle<Watched>, Stats)>,
}

impl Worker {
    fn stats_line(&self) -> String {
        let s = self.cache.stats();
        format!(
            "stats hits={} near_hits={} misses={} near_flushes={} invalidation_failures={}",
            s.hits, s.near_hits, s.misses, s.near_flushes, s.invalidation_failures
        )
    }

    fn warm(&self, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        let start = self.cache.stats().near_hits;
        loop {
            let value = self.runtime.block_on(version(ID));
            let near_hits = self.cache.stats().near_hits;
            if near_hits > start || Instant::now() >= deadline {
                let ok = u8::from(near_hits > start);
                return format!("warm ok={ok} value={value} near_hits={near_hits}");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn watch(&mut self) -> String {
        if self.watching.is_some() {
            usage("`watch` while already watching");
        }
        STOP_AT.store(u64::MAX, Ordering::SeqCst);
        STOP_NOW.store(false, Ordering::SeqCst);
        let before = self.cache.stats();
        let runtime = self.runtime;
        let handle = std::thread::spawn(move || watch_loop(runtime));
        self.watching = Some((handle, before));
        "watching".to_owned()
    }

    fn stop(&mut self, until: u64, timeout: Duration) -> String {
        let Some((handle, before)) = self.watching.take() else {
            usage("`stop` without `watch`");
        };
        STOP_AT.store(until, Ordering::SeqCst);
        let deadline = Instant::now() + timeout;
        while !handle.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        STOP_NOW.store(true, Ordering::SeqCst);
        let w = handle.join().expect("the watch loop panicked");
        let s = self.cache.stats();
        format!(
            "seen calls={} backwards={} newest={} slowest_call_us={} near_hits={} hits={} \
             misses={} near_flushes={} lease_waits={} coalesced={} leases_lost={} \
             first_seen={} first_started={} last_seen={}",
            w.calls,
            w.backwards,
            w.newest,
            w.slowest_call.as_micros(),
            s.near_hits - before.near_hits,
            s.hits - before.hits,
            s.misses - before.misses,
            s.near_flushes - before.near_flushes,
            s.lease_waits - before.lease_waits,
            s.coalesced - before.coalesced,
            s.leases_lost - before.leases_lost,
            pairs(&w.first_seen),
            pairs(&w.first_started),
            pairs(&w.last_seen),
        )
    }

    fn calls(&self, n: u64) -> String {
        let before = self.cache.stats().near_hits;
        let list: Vec<String> = (0..n)
            .map(|_| self.runtime.block_on(version(ID)).to_string())
            .collect();
        let near_hits = self.cache.stats().near_hits - before;
        format!("values near_hits={near_hits} list={}", list.join(","))
    }

    fn bump(&self, n: u64, pause: Duration) -> String {
        let failures = self.cache.stats().invalidation_failures;
        let mut current = read_db();
        let mut returned = BTreeMap::new();
        for _ in 0..n {
            current += 1;
            write_db(current);
            self.runtime.block_on(version_invalidate(&ID));
            returned.insert(current, now_ns());
            std::thread::sleep(pause);
        }
        let failures = self.cache.stats().invalidation_failures - failures;
        format!(
            "bumped invalidation_failures={failures} returned={}",
            pairs(&returned)
        )
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() != 4 {
        usage("expected 4 arguments");
    }
    let (url, namespace) = (args[0].clone(), args[1].clone());
    let _ = DB.set(PathBuf::from(&args[2]));
    let connect_timeout = Duration::from_millis(number(Some(&args[3]), "connect_timeout_ms"));

    // 'static: the `watch` thread blocks on it too.
    let runtime: &'static Runtime = Box::leak(Box::new(
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("build the tokio runtime"),
    ));
    let cache = runtime.block_on(async {
        Cache::builder()
            .redis_url(url)
            .namespace(namespace)
            .connect_timeout(connect_timeout)
            .build()
            .await
            .unwrap_or_else(|e| usage(&format!("invalid cache configuration: {e}")))
    });
    // Calls are made from several threads: install the cache process-wide
    // rather than in a `Cache::scope`.
    cache_runtime::install(cache.clone());
    let mut worker = Worker {
        runtime,
        cache,
        watching: None,
    };

    say("ready");
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let mut words = line.split_whitespace();
        let reply = match words.next() {
            Some("warm") => worker.warm(Duration::from_millis(number(words.next(), "timeout_ms"))),
            Some("watch") => worker.watch(),
            Some("stop") => {
                let until = number(words.next(), "version");
                worker.stop(
                    until,
                    Duration::from_millis(number(words.next(), "timeout_ms")),
                )
            }
            Some("calls") => worker.calls(number(words.next(), "n")),
            Some("bump") => {
                let n = number(words.next(), "n");
                worker.bump(n, Duration::from_millis(number(words.next(), "pause_ms")))
            }
            Some("stats") => worker.stats_line(),
            None => continue,
            Some(other) => usage(&format!("unknown command `{other}`")),
        };
        say(&reply);
    }
    // stdin closed: the parent is done (or gone).
}
