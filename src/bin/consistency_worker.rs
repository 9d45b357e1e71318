//! Test helper, not a tool: one OS process of `tests/consistency_processes.rs`,
//! the read-after-invalidate checker across real processes.
//!
//! ```text
//! consistency_worker reader <cache_url> <db_url> <kind> <rows> <readers_per_row>
//! consistency_worker writer <cache_url> <db_url> <kind> <rows> <writes_per_row>
//! ```
//!
//! The "database" is a Redis (`<db_url>`, reached directly): row `id` is
//! `db:row:<id>`, and `db:floor:<id>` is the newest version whose
//! invalidation has returned. The cache (`<cache_url>`, namespace `cp`) is
//! reached through the parent's jittering proxy; one reply in four also
//! reaches its caller up to 1 ms late (`cache_runtime::testing`). `<kind>`
//! is `typed`, `pattern`, `tag` or `write-through`.
//!
//! - `reader` prints `ready`, then runs `<readers_per_row>` readers per row
//!   until a line arrives on stdin. Each read notes the floor before it
//!   begins; a result below it is a violation. Prints
//!   `reads=<n> violations=<n> coalesced=<n>` and exits.
//! - `writer` prints `ready`, waits for a line on stdin, then makes
//!   `<writes_per_row>` writes of every row (two writers per row): commit a
//!   version, invalidate, raise the floor. Prints `writes=<n>` and exits.
//!
//! Usage errors exit with status 2.

use std::io::{BufRead, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::time::Duration;

use cache_runtime::Cache;
use cache_runtime::testing::{Interpose, Phase};
use redis::AsyncCommands;
use redis::aio::ConnectionManager;

#[path = "../../tests/rows/mod.rs"]
mod rows;
use rows::{Kind, read, write};

struct Db(ConnectionManager);

/// A pause of up to `max_us`, from a small per-thread generator.
async fn pause(max_us: u64) {
    let us = below(max_us);
    if us < 150 {
        tokio::task::yield_now().await;
    } else {
        tokio::time::sleep(Duration::from_micros(us)).await;
    }
}

fn below(n: u64) -> u64 {
    use std::cell::Cell;
    thread_local! {
        static X: Cell<u64> = Cell::new(u64::from(std::process::id()) << 20 | 1);
    }
    X.with(|x| {
        let mut v = x.get();
        v ^= v << 13;
        v ^= v >> 7;
        v ^= v << 17;
        x.set(v);
        v % n.max(1)
    })
}

impl Db {
    async fn read(&self, id: u64) -> u64 {
        pause(400).await;
        let version: Option<u64> = self
            .0
            .clone()
            .get(format!("db:row:{id}"))
            .await
            .ok()
            .flatten();
        // The race window: the row is read, the result not yet stored.
        pause(1_500).await;
        version.unwrap_or(0)
    }
    async fn write(&self, id: u64) -> u64 {
        pause(300).await;
        self.0
            .clone()
            .incr(format!("db:row:{id}"), 1)
            .await
            .unwrap_or_else(|e| fail(&format!("the database write failed: {e}")))
    }
    async fn floor(&self, id: u64) -> u64 {
        let floor: Option<u64> = self
            .0
            .clone()
            .get(format!("db:floor:{id}"))
            .await
            .ok()
            .flatten();
        floor.unwrap_or(0)
    }
    async fn raise_floor(&self, id: u64, version: u64) {
        let raised: redis::RedisResult<()> = redis::Script::new(
            "local f = tonumber(redis.call('GET', KEYS[1]) or '0') \
             if tonumber(ARGV[1]) > f then redis.call('SET', KEYS[1], ARGV[1]) end",
        )
        .key(format!("db:floor:{id}"))
        .arg(version)
        .invoke_async(&mut self.0.clone())
        .await;
        raised.unwrap_or_else(|e| fail(&format!("raising the floor failed: {e}")));
    }
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn fail(msg: &str) -> ! {
    eprintln!("consistency_worker: {msg}");
    std::process::exit(2);
}

fn wait_for_line() {
    let mut line = String::new();
    if std::io::stdin().lock().read_line(&mut line).is_err() || line.is_empty() {
        std::process::exit(3);
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [mode, cache_url, db_url, kind, rows, count] = args.as_slice() else {
        fail(
            "usage: consistency_worker <reader|writer> <cache_url> <db_url> <kind> <rows> <count>",
        );
    };
    let kind = Kind::parse(kind).unwrap_or_else(|| fail(&format!("unknown kind `{kind}`")));
    let number = |s: &str| {
        s.parse::<u64>()
            .unwrap_or_else(|_| fail(&format!("not a number: {s}")))
    };
    let (rows, count) = (number(rows), number(count));

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| fail(&format!("tokio runtime: {e}")));
    runtime.block_on(async {
        let client = redis::Client::open(db_url.as_str()).unwrap_or_else(|e| fail(&e.to_string()));
        let db = Arc::new(Db(ConnectionManager::new(client)
            .await
            .unwrap_or_else(|e| fail(&e.to_string()))));
        let late_replies = Interpose::new(|step| {
            (step.phase == Phase::Answered && below(3) == 0).then(|| {
                let late = Duration::from_micros(below(1_000));
                Box::pin(tokio::time::sleep(late)) as _
            })
        });
        let cache = Cache::builder()
            .redis_url(cache_url)
            .namespace("cp")
            .op_timeout(Duration::from_secs(5))
            .interpose(late_replies)
            .build()
            .await
            .unwrap_or_else(|e| fail(&e.to_string()));
        cache_runtime::install(cache.clone());
        say("ready");
        if mode == "writer" {
            wait_for_line();
            let mut writers = Vec::new();
            for id in (0..rows).flat_map(|id| [id, id]) {
                let db = db.clone();
                writers.push(tokio::spawn(async move {
                    for _ in 0..count {
                        pause(2_500).await;
                        let version = write(kind, &db, id).await;
                        db.raise_floor(id, version).await;
                    }
                }));
            }
            for w in writers {
                w.await.unwrap_or_else(|e| fail(&e.to_string()));
            }
            say(&format!("writes={}", rows * 2 * count));
            return;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let (reads, violations) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let mut readers = Vec::new();
        for id in (0..rows).flat_map(|id| std::iter::repeat_n(id, count as usize)) {
            let (db, stop, reads, violations) =
                (db.clone(), stop.clone(), reads.clone(), violations.clone());
            readers.push(tokio::spawn(async move {
                while !stop.load(SeqCst) {
                    pause(300).await;
                    let floor = db.floor(id).await;
                    let seen = read(kind, &db, id).await;
                    reads.fetch_add(1, SeqCst);
                    if seen < floor {
                        violations.fetch_add(1, SeqCst);
                        eprintln!("violation: {kind:?} row {id}: read {seen} after {floor}");
                    }
                }
            }));
        }
        tokio::task::spawn_blocking(wait_for_line)
            .await
            .unwrap_or_else(|e| fail(&e.to_string()));
        stop.store(true, SeqCst);
        for r in readers {
            r.await.unwrap_or_else(|e| fail(&e.to_string()));
        }
        say(&format!(
            "reads={} violations={} coalesced={}",
            reads.load(SeqCst),
            violations.load(SeqCst),
            cache.stats().coalesced
        ));
    });
}
