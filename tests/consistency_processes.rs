//! Read-after-invalidate across real OS processes: the checker of
//! `tests/consistency.rs`, with every cache handle in a process of its own
//! (`src/bin/consistency_worker.rs`) and the "database" in Redis, so that a
//! write in one process and a read in another are ordered by the server.
//!
//! Per kind of invalidation (typed, pattern, tag, write-through): three
//! reader processes (four readers per row each) and one writer process
//! (two writers per row), every cache connection through a proxy that
//! delays each packet by up to 0.5 ms. Every read notes the row's floor
//! (the newest version whose invalidation returned) before it begins; a
//! result below it is a violation, counted by the reader that saw it.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::Duration;

use common::{RedisServer, TcpProxy};

const WORKER: &str = env!("CARGO_BIN_EXE_consistency_worker");
const ROWS: u64 = 3;
const READERS_PER_ROW: u64 = 4;
const WRITES_PER_ROW_AND_WRITER: u64 = 300;
/// Far above a legitimate run, so that only a hang reaches it.
const DEADLINE: Duration = Duration::from_secs(120);

struct Worker {
    child: Child,
    lines: Receiver<String>,
}

impl Worker {
    fn spawn(mode: &str, cache_url: &str, db_url: &str, kind: &str, count: u64) -> Self {
        let mut child = Command::new(WORKER)
            .args([mode, cache_url, db_url, kind])
            .args([ROWS, count].map(|n| n.to_string()))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("start {WORKER}: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Worker { child, lines }
    }

    fn line(&self) -> String {
        self.lines
            .recv_timeout(DEADLINE)
            .unwrap_or_else(|e| panic!("a worker said nothing ({e}): hung or exited"))
    }

    fn signal(&mut self) {
        let stdin = self.child.stdin.as_mut().expect("piped stdin");
        stdin.write_all(b"go\n").unwrap();
        stdin.flush().unwrap();
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn field(line: &str, name: &str) -> u64 {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no `{name}` in {line:?}"))
}

fn check(kind: &str) {
    let server = RedisServer::start_single();
    let proxy = TcpProxy::start(server.port());
    proxy.jitter(Duration::from_micros(500));
    let (cache_url, db_url) = (proxy.url(), server.url());
    let mut readers: Vec<Worker> = (0..3)
        .map(|_| Worker::spawn("reader", &cache_url, &db_url, kind, READERS_PER_ROW))
        .collect();
    let mut writer = Worker::spawn(
        "writer",
        &cache_url,
        &db_url,
        kind,
        WRITES_PER_ROW_AND_WRITER,
    );
    for w in readers.iter().chain([&writer]) {
        assert_eq!(w.line(), "ready");
    }
    writer.signal();
    let writes = field(&writer.line(), "writes");
    let (mut reads, mut violations, mut coalesced) = (0, 0, 0);
    for r in &mut readers {
        r.signal();
        let summary = r.line();
        reads += field(&summary, "reads");
        violations += field(&summary, "violations");
        coalesced += field(&summary, "coalesced");
    }
    eprintln!(
        "{kind}: 3 reader processes, {writes} writes, {reads} reads, {coalesced} coalesced, {violations} violations"
    );
    assert_eq!(writes, ROWS * 2 * WRITES_PER_ROW_AND_WRITER);
    assert!(
        reads > 100 && coalesced > 0,
        "the readers ran: {reads} reads"
    );
    assert_eq!(
        violations, 0,
        "{kind}: reads older than an invalidation that had returned"
    );
}

#[test]
fn typed_invalidations_across_processes() {
    check("typed");
}

#[test]
fn pattern_invalidations_across_processes() {
    check("pattern");
}

#[test]
fn tag_invalidations_across_processes() {
    check("tag");
}

#[test]
fn write_throughs_across_processes() {
    check("write-through");
}
