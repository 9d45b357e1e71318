//! Claims about real OS processes sharing one Redis (DESIGN.md section 4):
//!
//! - "4 processes x 250 concurrent calls on one cold key: the body runs
//!   exactly once in total";
//! - "lease-holder crash: no caller hangs, every caller gets a correct value;
//!   a crashed lease holder costs at most the lease expiry".
//!
//! Each process is the `cache_worker` binary (`src/bin/cache_worker.rs`), which
//! counts its own body runs and reports them with the cache's counters on one
//! line. Every test starts its own `redis-server`; every worker is killed when
//! its guard drops, so a failing test leaves no process behind, and every wait
//! has a deadline, so a hang fails the test instead of blocking CI.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use common::RedisServer;

const WORKER: &str = env!("CARGO_BIN_EXE_cache_worker");
/// The id `cache_worker` calls `hot` with, and the value it must return.
const ID: u64 = 7;
const VALUE: &str = "value-7-v1";
/// Bound on a worker's start-up (process start, cache build, first PING).
const START_UP: Duration = Duration::from_secs(30);
/// Bound on a fired stampede: far above anything legitimate (a lease expiry
/// plus a body), so that only a hang reaches it.
const HANG: Duration = Duration::from_secs(15);

fn key(namespace: &str) -> String {
    format!("{namespace}:hot:{ID}")
}

/// One `cache_worker` process. Dropped, it is killed (SIGKILL) and reaped.
struct Worker {
    name: String,
    child: Child,
    lines: Receiver<String>,
}

impl Worker {
    fn spawn(
        name: impl Into<String>,
        mode: &str,
        server: &RedisServer,
        namespace: &str,
        calls: u64,
        body_ms: u64,
        lease_ttl_ms: u64,
    ) -> Self {
        let name = name.into();
        let mut child = Command::new(WORKER)
            .args([mode, &server.url(), namespace])
            .args([calls, body_ms, lease_ttl_ms].map(|n| n.to_string()))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("start {name} ({WORKER}): {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Worker { name, child, lines }
    }

    /// The next stdout line starting with `prefix` (other lines are skipped),
    /// before `deadline`; panics if the worker exits or the deadline passes.
    fn expect_line(&mut self, prefix: &str, deadline: Instant) -> String {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.starts_with(prefix) => return line,
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => panic!(
                    "{}: no `{prefix}` line before the deadline (hung?)",
                    self.name
                ),
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.wait_until(Instant::now() + Duration::from_secs(5));
                    panic!(
                        "{}: exited ({status:?}) without a `{prefix}` line",
                        self.name
                    )
                }
            }
        }
    }

    /// The start signal of a `stampede` worker.
    fn fire(&mut self) {
        let stdin = self.child.stdin.as_mut().expect("piped stdin");
        stdin
            .write_all(b"go\n")
            .and_then(|()| stdin.flush())
            .unwrap_or_else(|e| panic!("{}: start signal: {e}", self.name));
    }

    /// Waits for the process to exit, until `deadline`.
    fn wait_until(&mut self, deadline: Instant) -> Option<ExitStatus> {
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGKILL, then reap.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A worker's summary line, `name=value` pairs.
struct Summary(HashMap<String, String>);

impl Summary {
    fn parse(line: &str) -> Self {
        Summary(
            line.split_whitespace()
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        )
    }

    fn get(&self, field: &str) -> u64 {
        self.0
            .get(field)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("summary without numeric `{field}`: {:?}", self.0))
    }

    fn key(&self) -> &str {
        self.0.get("key").map(String::as_str).unwrap_or_default()
    }
}

/// Fires every worker at once, then collects their summaries (bounded by
/// [`HANG`]) and exit statuses. Returns the summaries and the time from
/// firing to the last summary.
fn fire_and_collect(workers: &mut [Worker]) -> (Vec<Summary>, Duration) {
    let fired = Instant::now();
    for w in workers.iter_mut() {
        w.fire();
    }
    let deadline = fired + HANG;
    let mut summaries = Vec::new();
    for w in workers.iter_mut() {
        let line = w.expect_line("key=", deadline);
        eprintln!("  {}: {line}", w.name);
        summaries.push(Summary::parse(&line));
    }
    let elapsed = fired.elapsed();
    for (w, s) in workers.iter_mut().zip(&summaries) {
        let status = w.wait_until(deadline + Duration::from_secs(5));
        assert!(
            status.is_some_and(|s| s.success()),
            "{} exited with {status:?}; its summary: {:?}",
            w.name,
            s.0
        );
    }
    (summaries, elapsed)
}

fn total(summaries: &[Summary], field: &str) -> u64 {
    summaries.iter().map(|s| s.get(field)).sum()
}

/// The exact bytes under `key` (redis-cli output goes through UTF-8).
fn raw_get(server: &RedisServer, key: &str) -> Option<Vec<u8>> {
    let client = redis::Client::open(server.url()).expect("client");
    let mut conn = client.get_connection().expect("connect to the test server");
    redis::cmd("GET")
        .arg(key)
        .query(&mut conn)
        .expect("GET the key")
}

/// The key holds the value, stored as plain JSON.
fn assert_stored(server: &RedisServer, key: &str) {
    assert_eq!(
        server.get(key).as_deref(),
        Some(format!("\"{VALUE}\"").as_str())
    );
    let raw = raw_get(server, key).expect("the key is there");
    assert_eq!(
        serde_json::from_slice::<String>(&raw).expect("the stored value is JSON"),
        VALUE
    );
}

fn summary(summaries: &[Summary]) -> String {
    [
        "bodies",
        "correct",
        "calls",
        "coalesced",
        "lease_waits",
        "lease_wait_timeouts",
        "hits",
        "misses",
        "stores",
        "leases_lost",
        "store_errors",
        "timeouts",
    ]
    .map(|f| format!("{f}={}", total(summaries, f)))
    .join(" ")
}

#[test]
fn four_processes_250_calls_each_run_the_body_once() {
    const PROCESSES: usize = 4;
    const CALLS: u64 = 250;
    let server = RedisServer::start();
    let namespace = "procs-stampede";
    let key = key(namespace);

    let mut workers: Vec<Worker> = (0..PROCESSES)
        .map(|i| {
            Worker::spawn(
                format!("stampede-{i}"),
                "stampede",
                &server,
                namespace,
                CALLS,
                200,
                5000,
            )
        })
        .collect();
    let deadline = Instant::now() + START_UP;
    for w in &mut workers {
        w.expect_line("ready", deadline);
    }
    assert!(!server.exists(&key), "the key must start cold");

    let (summaries, elapsed) = fire_and_collect(&mut workers);
    eprintln!(
        "four_processes: {} elapsed_ms={}",
        summary(&summaries),
        elapsed.as_millis()
    );

    for s in &summaries {
        assert_eq!(s.key(), key, "the worker's key");
        assert_eq!(s.get("calls"), CALLS);
        assert_eq!(s.get("correct"), CALLS, "every call returns the value");
    }
    assert_eq!(total(&summaries, "correct"), PROCESSES as u64 * CALLS);
    assert_eq!(
        total(&summaries, "bodies"),
        1,
        "{PROCESSES} processes x {CALLS} calls on one cold key ran the body more than once: {}",
        summary(&summaries)
    );
    assert_stored(&server, &key);
}

#[test]
fn a_killed_lease_holder_delays_others_at_most_the_lease_ttl() {
    const PROCESSES: usize = 3;
    const CALLS: u64 = 100;
    const LEASE_TTL_MS: u64 = 1500;
    let server = RedisServer::start();
    let namespace = "procs-crash";
    let key = key(namespace);

    // The stampede processes are started (and connected) first and only
    // fired once the holder is dead, so that their start-up does not eat
    // into the dead holder's lease: they must meet it.
    let mut workers: Vec<Worker> = (0..PROCESSES)
        .map(|i| {
            Worker::spawn(
                format!("after-crash-{i}"),
                "stampede",
                &server,
                namespace,
                CALLS,
                100,
                LEASE_TTL_MS,
            )
        })
        .collect();
    let deadline = Instant::now() + START_UP;
    for w in &mut workers {
        w.expect_line("ready", deadline);
    }

    let mut holder = Worker::spawn("holder", "hold", &server, namespace, 1, 0, LEASE_TTL_MS);
    holder.expect_line("holding", Instant::now() + START_UP);

    // The key holds the holder's lease record: 0xC1 "lease:", not JSON.
    let record = raw_get(&server, &key).expect("the holder's lease is in the key");
    assert!(
        record.starts_with(b"\xC1lease:"),
        "not a lease record: {:?}",
        String::from_utf8_lossy(&record)
    );
    assert!(serde_json::from_slice::<serde_json::Value>(&record).is_err());
    assert_eq!(server.cli(&["GETRANGE", &key, "1", "6"]), "lease:");

    holder.kill();
    let pttl_at_kill = server.pttl(&key);
    let (summaries, elapsed) = fire_and_collect(&mut workers);
    eprintln!(
        "killed_holder: {} lease_ttl_ms={LEASE_TTL_MS} lease_pttl_at_kill_ms={pttl_at_kill} elapsed_ms={}",
        summary(&summaries),
        elapsed.as_millis()
    );

    for s in &summaries {
        assert_eq!(s.key(), key, "the worker's key");
        assert_eq!(s.get("correct"), CALLS, "every call returns the value");
    }
    assert_eq!(total(&summaries, "correct"), PROCESSES as u64 * CALLS);
    assert_eq!(
        total(&summaries, "bodies"),
        1,
        "after the holder's crash, one process should take the lease over and the others wait for its fill: {}",
        summary(&summaries)
    );
    assert_stored(&server, &key);
}
