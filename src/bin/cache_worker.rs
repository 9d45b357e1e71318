//! Test helper, not a tool: one OS process of the cross-process tests in
//! `tests/processes.rs`. It is built with the root package so that the tests
//! can start it through `env!("CARGO_BIN_EXE_cache_worker")`.
//!
//! ```text
//! cache_worker <mode> <redis_url> <namespace> <calls> <body_ms> <lease_ttl_ms>
//! ```
//!
//! Every mode calls one `#[cached]` function on one key, `<namespace>:hot:7`,
//! through a Redis cache with leases on and `lease_ttl = lease_wait =
//! <lease_ttl_ms>` (the defaults are equal too). Modes:
//!
//! - `stampede`: builds the cache, prints `ready` and waits for a line on
//!   stdin (the parent's start signal, so that every process fires at once),
//!   then makes `<calls>` concurrent calls whose body sleeps `<body_ms>`.
//!   Prints one line and exits (0 when every call returned the right value,
//!   1 otherwise):
//!
//!   ```text
//!   key=<key> bodies=<n> calls=<n> correct=<n> coalesced=<n> lease_waits=<n> lease_wait_timeouts=<n> hits=<n> misses=<n> stores=<n> leases_lost=<n> store_errors=<n> timeouts=<n> elapsed_ms=<n>
//!   ```
//!
//! - `hold`: makes one call whose body prints `holding` and never returns, so
//!   the process holds the key's lease until the parent kills it.
//!
//! Usage errors exit with status 2.

use std::io::{BufRead, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cache_runtime::{Cache, cached};

/// The id every call uses: all calls share one key.
const ID: u64 = 7;

/// How many times the body ran in this process.
static BODIES: AtomicU64 = AtomicU64::new(0);
/// How long the body sleeps, in ms (from the command line).
static BODY_MS: AtomicU64 = AtomicU64::new(0);
/// `hold` mode: the body never returns.
static HOLD: AtomicBool = AtomicBool::new(false);

#[cached(prefix = "hot", id = "id", ttl = 60)]
async fn hot(id: u64) -> String {
    BODIES.fetch_add(1, Ordering::SeqCst);
    if HOLD.load(Ordering::SeqCst) {
        say("holding");
        // Holds the lease until the process is killed.
        return std::future::pending::<String>().await;
    }
    tokio::time::sleep(Duration::from_millis(BODY_MS.load(Ordering::SeqCst))).await;
    expected(id)
}

fn expected(id: u64) -> String {
    format!("value-{id}-v1")
}

/// Prints a line and flushes it at once: the parent reads stdout through a pipe.
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn usage(msg: &str) -> ! {
    eprintln!("cache_worker: {msg}");
    eprintln!(
        "usage: cache_worker <stampede|hold> <redis_url> <namespace> <calls> <body_ms> <lease_ttl_ms>"
    );
    std::process::exit(2);
}

fn number(args: &[String], i: usize, name: &str) -> u64 {
    args.get(i)
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| usage(&format!("<{name}> must be a non-negative integer")))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() != 6 {
        usage("expected 6 arguments");
    }
    let (mode, url, namespace) = (args[0].as_str(), args[1].clone(), args[2].clone());
    let calls = number(&args, 3, "calls");
    let body_ms = number(&args, 4, "body_ms");
    let lease_ttl = Duration::from_millis(number(&args, 5, "lease_ttl_ms"));
    if !matches!(mode, "stampede" | "hold") {
        usage(&format!("unknown mode `{mode}`"));
    }
    BODY_MS.store(body_ms, Ordering::SeqCst);
    HOLD.store(mode == "hold", Ordering::SeqCst);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("build the tokio runtime");
    let cache = runtime.block_on(async {
        Cache::builder()
            .redis_url(url)
            .namespace(namespace)
            .leases(true)
            .lease_ttl(lease_ttl)
            // As long as the lease: a waiter gives up on a holder only when
            // its lease could have expired; a takeover restarts the wait.
            .lease_wait(lease_ttl)
            .build()
            .await
            .unwrap_or_else(|e| usage(&format!("invalid cache configuration: {e}")))
    });
    // Spawned tasks do not inherit a `Cache::scope`: install it process-wide.
    cache_runtime::install(cache.clone());
    let key = hot_key(&ID);

    if mode == "hold" {
        runtime.block_on(hot(ID));
        unreachable!("the body of `hold` never returns");
    }

    say("ready");
    let mut line = String::new();
    if std::io::stdin().lock().read_line(&mut line).is_err() || line.is_empty() {
        // The parent went away before the start signal.
        std::process::exit(3);
    }

    let started = Instant::now();
    let correct = runtime.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..calls {
            tasks.spawn(hot(ID));
        }
        let want = expected(ID);
        let mut correct = 0u64;
        while let Some(result) = tasks.join_next().await {
            match result {
                Ok(value) if value == want => correct += 1,
                Ok(value) => eprintln!("cache_worker: wrong value {value:?}, expected {want:?}"),
                Err(e) => eprintln!("cache_worker: a call failed: {e}"),
            }
        }
        correct
    });
    let elapsed = started.elapsed();
    let s = cache.stats();
    say(&format!(
        "key={key} bodies={} calls={calls} correct={correct} coalesced={} lease_waits={} \
         lease_wait_timeouts={} hits={} misses={} stores={} leases_lost={} store_errors={} \
         timeouts={} elapsed_ms={}",
        BODIES.load(Ordering::SeqCst),
        s.coalesced,
        s.lease_waits,
        s.lease_wait_timeouts,
        s.hits,
        s.misses,
        s.stores,
        s.leases_lost,
        s.store_errors,
        s.timeouts,
        elapsed.as_millis(),
    ));
    std::process::exit(i32::from(correct != calls));
}
