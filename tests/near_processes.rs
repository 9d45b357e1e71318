//! The near tier (`#[cached(near = true)]`) across real OS processes sharing
//! one `redis-server`: how long a process keeps serving its near copy after
//! another process changed the data and invalidated it, and that a process
//! cut off from Redis never serves the old value once it is back.
//!
//! Each process is the `near_worker` binary (`src/bin/near_worker.rs`),
//! driven over stdin/stdout lines. The "database" all processes read is a
//! file holding a version number: the writer replaces it, then invalidates
//! the entry with the typed companion. Times are wall-clock (CLOCK_REALTIME)
//! nanoseconds, comparable across the processes of one machine.
//!
//! Every worker is killed when its guard drops, so a failing test leaves no
//! process behind, and every wait has a deadline, so a hang fails the test
//! instead of blocking CI. The tests take turns (see [`serial`]): the
//! staleness they measure would otherwise include the CPU the others use.
//! `cargo test --test near_processes -- --nocapture` shows the figures.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::{RedisServer, TcpProxy};

const WORKER: &str = env!("CARGO_BIN_EXE_near_worker");
/// Bound on a worker's start-up (process start, cache build).
const START_UP: Duration = Duration::from_secs(30);
/// Bound on a command's reply beyond the time the command itself is given:
/// only a hang reaches it.
const REPLY: Duration = Duration::from_secs(10);
/// A process whose invalidation path works drops its stale copy within
/// milliseconds (the server pushes the key name); one whose path is broken
/// keeps it up to the entry's TTL (60 s). This bound tells the two apart
/// and is no latency claim.
const COHERENCE_BOUND: Duration = Duration::from_secs(1);

/// One test at a time: they measure latencies on machines with few cores.
fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The "database": a file holding the current version, in a directory of
/// its own that is removed on drop.
struct Database {
    dir: PathBuf,
}

impl Database {
    fn new(test: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "cache-test-near-processes-{test}-{}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).expect("create the database's directory");
        let db = Database { dir };
        std::fs::write(db.path(), "0").expect("write the database");
        db
    }

    fn path(&self) -> PathBuf {
        self.dir.join("version")
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One `near_worker` process. Dropped, it is killed (SIGKILL) and reaped.
struct Worker {
    name: String,
    child: Child,
    lines: Receiver<String>,
}

impl Worker {
    /// Starts a worker on `redis_url` and waits for its `ready`.
    fn spawn(name: &str, redis_url: &str, db: &Database, connect_timeout_ms: u64) -> Self {
        let mut child = Command::new(WORKER)
            .args([redis_url, "near-procs"])
            .arg(db.path())
            .arg(connect_timeout_ms.to_string())
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
        let mut worker = Worker {
            name: name.to_owned(),
            child,
            lines,
        };
        worker.expect_line("ready", Instant::now() + START_UP);
        worker
    }

    /// Sends one command line.
    fn send(&mut self, command: &str) {
        let stdin = self.child.stdin.as_mut().expect("piped stdin");
        writeln!(stdin, "{command}")
            .and_then(|()| stdin.flush())
            .unwrap_or_else(|e| panic!("{}: send `{command}`: {e}", self.name));
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
                    std::thread::sleep(Duration::from_millis(100));
                    let status = self.child.try_wait();
                    panic!(
                        "{}: exited ({status:?}) without a `{prefix}` line",
                        self.name
                    )
                }
            }
        }
    }

    /// Sends `command` and returns its reply, whose first word is `reply`,
    /// within `work` (what the command may take) plus [`REPLY`].
    fn request(&mut self, command: &str, reply: &str, work: Duration) -> Reply {
        self.send(command);
        let line = self.expect_line(reply, Instant::now() + work + REPLY);
        Reply::parse(&self.name, &line)
    }

    /// Calls until the near tier serves the value; returns the value.
    fn warm(&mut self) -> u64 {
        let reply = self.request("warm 5000", "warm", Duration::from_secs(5));
        assert_eq!(
            reply.get("ok"),
            1,
            "{}: the near tier never served the value: {:?}",
            self.name,
            reply.fields
        );
        reply.get("value")
    }

    fn stats(&mut self) -> Reply {
        self.request("stats", "stats", Duration::ZERO)
    }

    /// `n` calls in a row: the values returned and the near hits among them.
    fn calls(&mut self, n: u64) -> (Vec<u64>, u64) {
        let reply = self.request(&format!("calls {n}"), "values", Duration::from_secs(10));
        (reply.list("list"), reply.get("near_hits"))
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A worker's reply: `name=value` fields after the first word.
struct Reply {
    worker: String,
    fields: HashMap<String, String>,
}

impl Reply {
    fn parse(worker: &str, line: &str) -> Self {
        Reply {
            worker: worker.to_owned(),
            fields: line
                .split_whitespace()
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        }
    }

    fn field(&self, field: &str) -> &str {
        self.fields
            .get(field)
            .unwrap_or_else(|| panic!("{}: reply without `{field}`", self.worker))
    }

    fn get(&self, field: &str) -> u64 {
        let v = self.field(field);
        v.parse()
            .unwrap_or_else(|_| panic!("{}: `{field}={v}` is not a number", self.worker))
    }

    /// A comma-separated list of numbers.
    fn list(&self, field: &str) -> Vec<u64> {
        let v = self.field(field);
        v.split(',')
            .filter(|s| !s.is_empty())
            .map(|n| {
                n.parse()
                    .unwrap_or_else(|_| panic!("{}: `{field}` holds {n:?}", self.worker))
            })
            .collect()
    }

    /// Comma-separated `version:ns` pairs.
    fn pairs(&self, field: &str) -> BTreeMap<u64, u64> {
        let v = self.field(field);
        v.split(',')
            .filter(|s| !s.is_empty())
            .map(|pair| {
                pair.split_once(':')
                    .and_then(|(v, t)| Some((v.parse().ok()?, t.parse().ok()?)))
                    .unwrap_or_else(|| panic!("{}: `{field}` holds {pair:?}", self.worker))
            })
            .collect()
    }
}

/// How long a reader went on without the new value after the writer's
/// invalidation of each version returned: the first time it returned that
/// version or a later one (it may skip a version that was replaced before
/// it looked), minus the time `invalidate` returned; 0 if earlier. This
/// includes the time its call spent fetching the new value (a miss, and a
/// wait for another process's lease). A version it never reached is left
/// out (the caller asserts it reached the last).
fn staleness(returned: &BTreeMap<u64, u64>, first_seen: &BTreeMap<u64, u64>) -> Vec<u64> {
    let mut out = Vec::with_capacity(returned.len());
    for (&v, &t_ret) in returned {
        let reached = first_seen.range(v..).map(|(_, &t)| t).min();
        if let Some(t_seen) = reached {
            out.push(t_seen.saturating_sub(t_ret));
        }
    }
    out
}

/// How long a reader went on returning an older version after the
/// writer's invalidation of each version returned: the last time a call
/// returned something older, minus the time `invalidate` returned; 0 if
/// earlier. The part of [`staleness`] spent serving the old value, without
/// the time spent fetching the new one.
fn served_stale(returned: &BTreeMap<u64, u64>, last_seen: &BTreeMap<u64, u64>) -> Vec<u64> {
    returned
        .iter()
        .map(|(&v, &t_ret)| {
            let last_old = last_seen.range(..v).map(|(_, &t)| t).max().unwrap_or(0);
            last_old.saturating_sub(t_ret)
        })
        .collect()
}

/// How long the call that first returned each version took (from its
/// start to its return): the part of [`staleness`] spent fetching the new
/// value from Redis (a miss, a lease, perhaps a wait for another
/// process's lease) rather than finding out that the old one was gone.
fn fetching(first_started: &BTreeMap<u64, u64>, first_seen: &BTreeMap<u64, u64>) -> Vec<u64> {
    first_seen
        .iter()
        .filter(|(v, _)| **v > 0)
        .filter_map(|(v, &t)| Some(t.saturating_sub(*first_started.get(v)?)))
        .collect()
}

/// `p50=.. p99=.. max=..` of unsorted nanoseconds.
fn summary(mut ns: Vec<u64>) -> String {
    ns.sort_unstable();
    if ns.is_empty() {
        return "no figures".to_owned();
    }
    format!(
        "p50={} p99={} max={}",
        ms(quantile(&ns, 0.5)),
        ms(quantile(&ns, 0.99)),
        ms(ns[ns.len() - 1])
    )
}

/// The nearest-rank `q` quantile of sorted values.
fn quantile(sorted: &[u64], q: f64) -> u64 {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn ms(ns: u64) -> String {
    format!("{:.3} ms", ns as f64 / 1e6)
}

/// Polls the worker's `stats` until `near_flushes` reaches 1, within
/// `timeout`; returns how long that took.
fn until_flushed(worker: &mut Worker, timeout: Duration) -> Duration {
    let started = Instant::now();
    loop {
        if worker.stats().get("near_flushes") >= 1 {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < timeout,
            "{}: its near tier was not flushed within {timeout:?} of losing Redis",
            worker.name
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// After an outage: 200 calls that must all return `version`, then calls
/// until the near tier serves again (tracking is back), all returning
/// `version` too.
fn assert_never_old_again(reader: &mut Worker, version: u64) {
    let (values, _) = reader.calls(200);
    let wrong: Vec<_> = values.iter().filter(|&&v| v != version).collect();
    assert!(
        wrong.is_empty(),
        "{}: {} of 200 calls after the outage returned an old value ({wrong:?}), expected {version}",
        reader.name,
        wrong.len()
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (values, near_hits) = reader.calls(20);
        assert!(
            values.iter().all(|&v| v == version),
            "{}: once tracking was back it returned {values:?}, expected {version}",
            reader.name
        );
        if near_hits > 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{}: the near tier did not serve again within 10 s of Redis coming back",
            reader.name
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn readers_stop_serving_a_near_copy_soon_after_another_process_invalidates_it() {
    const VERSIONS: u64 = 1000;
    const PAUSE_MS: u64 = 5;
    let _turn = serial();
    let server = RedisServer::start_single();
    let db = Database::new("staleness");
    let mut writer = Worker::spawn("writer", &server.url(), &db, 1000);
    let mut readers: Vec<Worker> = (1..=2)
        .map(|i| Worker::spawn(&format!("reader-{i}"), &server.url(), &db, 1000))
        .collect();
    for r in &mut readers {
        assert_eq!(r.warm(), 0);
        r.request("watch", "watching", Duration::ZERO);
    }

    // 1,000 x (write + invalidate + 5 ms): about 6 s.
    let started = Instant::now();
    let bumped = writer.request(
        &format!("bump {VERSIONS} {PAUSE_MS}"),
        "bumped",
        Duration::from_secs(20),
    );
    let elapsed = started.elapsed();
    let returned = bumped.pairs("returned");
    assert_eq!(returned.len() as u64, VERSIONS);
    assert_eq!(
        bumped.get("invalidation_failures"),
        0,
        "the writer's invalidations must all reach Redis"
    );

    let (mut all, mut all_served, mut all_fetching) = (Vec::new(), Vec::new(), Vec::new());
    let (mut calls, mut near_hits) = (0, 0);
    for r in &mut readers {
        let seen = r.request(
            &format!("stop {VERSIONS} 3000"),
            "seen",
            Duration::from_secs(3),
        );
        let first_seen = seen.pairs("first_seen");
        let stale = staleness(&returned, &first_seen);
        let served = served_stale(&returned, &seen.pairs("last_seen"));
        let fetch = fetching(&seen.pairs("first_started"), &first_seen);
        let skipped = (1..=VERSIONS)
            .filter(|v| !first_seen.contains_key(v))
            .count();
        let (r_calls, r_near) = (seen.get("calls"), seen.get("near_hits"));
        eprintln!(
            "near_processes: {}: calls={r_calls} near_hits={r_near} hits={} misses={} \
             near_flushes={} lease_waits={} coalesced={} leases_lost={} slowest_call={} \
             versions_skipped={skipped}\n  staleness {}\n  served stale {}\n  \
             fetching {}",
            r.name,
            seen.get("hits"),
            seen.get("misses"),
            seen.get("near_flushes"),
            seen.get("lease_waits"),
            seen.get("coalesced"),
            seen.get("leases_lost"),
            ms(seen.get("slowest_call_us") * 1000),
            summary(stale.clone()),
            summary(served.clone()),
            summary(fetch.clone()),
        );
        assert_eq!(
            seen.get("backwards"),
            0,
            "{}: a call returned an older version than an earlier call did",
            r.name
        );
        assert_eq!(
            seen.get("newest"),
            VERSIONS,
            "{}: never returned the last version within 3 s of its invalidation",
            r.name
        );
        calls += r_calls;
        near_hits += r_near;
        all.extend(stale);
        all_served.extend(served);
        all_fetching.extend(fetch);
    }

    assert_eq!(all.len() as u64, 2 * VERSIONS);
    let max = all.iter().copied().max().unwrap_or(0);
    eprintln!(
        "near_processes: {VERSIONS} invalidations in {:.2} s ({PAUSE_MS} ms apart), 2 readers, \
         {} (reader, version) pairs:\n  staleness (invalidate returned -> reader first returns \
         the new value) {}\n  served stale (invalidate returned -> reader last returns an old \
         value) {}\n  fetching (the call that first returned a version, start -> return) \
         {}\n  near hits {near_hits} of {calls} calls ({:.1}%)",
        elapsed.as_secs_f64(),
        all.len(),
        summary(all),
        summary(all_served),
        summary(all_fetching),
        100.0 * near_hits as f64 / calls.max(1) as f64,
    );
    assert!(
        near_hits * 2 > calls,
        "the readers should serve most calls from the near tier: {near_hits} of {calls}"
    );
    assert!(
        Duration::from_nanos(max) < COHERENCE_BOUND,
        "a reader went {} without the new value after its invalidation returned: \
         the invalidation did not reach its near tier",
        ms(max)
    );
}

#[test]
fn a_reader_cut_off_from_redis_never_serves_the_old_value_again() {
    let _turn = serial();
    let server = RedisServer::start_single();
    let proxy = TcpProxy::start(server.port());
    let db = Database::new("partition");
    let mut writer = Worker::spawn("writer", &server.url(), &db, 1000);
    // Heartbeat 500 ms + a 300 ms timeout: the reader notices a silent
    // connection within about 0.8 s.
    let mut reader = Worker::spawn("reader", &proxy.url(), &db, 300);
    assert_eq!(reader.warm(), 0);

    // A partition: the reader's connections stay open and go silent. The
    // writer's invalidation can not reach it.
    proxy.blackhole();
    writer.request("bump 1 0", "bumped", Duration::from_secs(5));
    let noticed = until_flushed(&mut reader, Duration::from_secs(5));
    eprintln!(
        "near_processes: partition noticed (near tier flushed) {} ms after the invalidation",
        noticed.as_millis()
    );
    proxy.restore();
    assert_never_old_again(&mut reader, 1);

    // Tracking is back: invalidations reach the reader again. (Right after
    // the reconnection this can take up to one delayed ACK, ~40 ms: the
    // harness's proxy does not set TCP_NODELAY, so Nagle holds the push
    // while the reply to CLIENT TRACKING is unacknowledged. Direct
    // connections to Redis, which sets TCP_NODELAY, have no such delay.)
    reader.request("watch", "watching", Duration::ZERO);
    let bumped = writer.request("bump 1 0", "bumped", Duration::from_secs(5));
    let seen = reader.request("stop 2 3000", "seen", Duration::from_secs(3));
    assert_eq!(seen.get("backwards"), 0);
    assert_eq!(
        seen.get("newest"),
        2,
        "the reader missed an invalidation after tracking came back"
    );
    let returned = bumped.pairs("returned");
    let first_seen = seen.pairs("first_seen");
    let stale = staleness(&returned, &first_seen);
    eprintln!(
        "near_processes: after the partition, the next invalidation: staleness {}, \
         served stale {}, fetching {}",
        ms(stale[0]),
        ms(served_stale(&returned, &seen.pairs("last_seen"))[0]),
        ms(fetching(&seen.pairs("first_started"), &first_seen)
            .last()
            .copied()
            .unwrap_or(0)),
    );
    assert!(Duration::from_nanos(stale[0]) < COHERENCE_BOUND);
}

#[test]
fn a_reader_whose_redis_restarts_never_serves_the_old_value_again() {
    let _turn = serial();
    let mut server = RedisServer::start_single();
    let db = Database::new("restart");
    let mut writer = Worker::spawn("writer", &server.url(), &db, 300);
    let mut reader = Worker::spawn("reader", &server.url(), &db, 300);
    assert_eq!(reader.warm(), 0);

    // The socket closes: the reader flushes without waiting for a heartbeat.
    server.kill();
    let noticed = until_flushed(&mut reader, Duration::from_secs(3));
    eprintln!(
        "near_processes: server killed, near tier flushed after {} ms",
        noticed.as_millis()
    );
    // The database changes while Redis is down; the invalidation fails (and
    // is retried in the background). The restarted server is empty.
    writer.request("bump 1 0", "bumped", Duration::from_secs(5));
    server.restart();
    assert_never_old_again(&mut reader, 1);
}
