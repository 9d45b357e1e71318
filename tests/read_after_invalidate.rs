//! Read-after-invalidate, one schedule at a time: each test drives one
//! interleaving that broke the property before it was guaranteed, step by
//! step, against a real Redis.
//!
//! The property: once an invalidation (typed, pattern, tag, write-through)
//! has returned, no cached call that *begins* after it returns a value
//! computed by a body that began before it, whether the call reads Redis,
//! follows another call of its process, or waits on another process's lease.
//!
//! Every test runs on a current-thread runtime, so a task runs until it
//! waits: a step that signals the test has finished everything it does
//! before its next await. A reply that is "slow to come back" is held by a
//! hook around the cache's store operations (`cache_runtime::testing`), as
//! a proxy holding that one reply would. Two `Cache` handles have separate
//! connections and separate single-flight maps: to the protocol they are
//! two processes. `tests/consistency.rs` checks the property over many
//! random schedules.

mod common;

use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cache_runtime::testing::{Interpose, Phase, StoreOp};
use cache_runtime::{Cache, cached};
use common::RedisServer;
use tokio::sync::{Notify, watch};

/// A row and its version, the count of body runs, a gate that holds
/// reading bodies (after they read the row) until the test opens it, and
/// one that holds the write-through body that wrote version `slow_write`.
struct Db {
    version: AtomicU64,
    calls: AtomicU64,
    gate: watch::Sender<bool>,
    write_gate: watch::Sender<bool>,
    slow_write: AtomicU64,
}

impl Db {
    fn new() -> Arc<Self> {
        Arc::new(Db {
            version: AtomicU64::new(0),
            calls: AtomicU64::new(0),
            gate: watch::Sender::new(true),
            write_gate: watch::Sender::new(false),
            slow_write: AtomicU64::new(0),
        })
    }
    fn calls(&self) -> u64 {
        self.calls.load(SeqCst)
    }
    async fn query(&self) -> u64 {
        self.calls.fetch_add(1, SeqCst);
        let version = self.version.load(SeqCst);
        let mut gate = self.gate.subscribe();
        let _ = gate.wait_for(|open| *open).await;
        version
    }
    fn write(&self) -> u64 {
        self.version.fetch_add(1, SeqCst) + 1
    }
}

#[cached(prefix = "row", id = "id", ttl = 60, skip = [db])]
async fn get_row(db: &Db, id: u64) -> u64 {
    db.query().await
}

#[cached(invalidate = [get_row(id)])]
async fn write_row(db: &Db, id: u64) -> u64 {
    db.write()
}

#[cached(invalidate = ["row:*"])]
async fn write_all_rows(db: &Db) -> u64 {
    db.write()
}

#[cached(prefix = "trow", id = "id", ttl = 60, tags = ["row:{id}"], skip = [db])]
async fn get_tagged_row(db: &Db, id: u64) -> u64 {
    db.query().await
}

#[cached(invalidate = [tag("row:{id}")])]
async fn write_tagged_row(db: &Db, id: u64) -> u64 {
    db.write()
}

#[cached(prefix = "wrow", id = "id", ttl = 60, skip = [db])]
async fn get_written_row(db: &Db, id: u64) -> u64 {
    db.query().await
}

/// Write-through: stores its own result under `get_written_row`'s key.
/// The body that writes version `slow_write` waits at the write gate.
#[cached(prefix = "wrow", id = "id", ttl = 60, invalidate = [get_row(id)], skip = [db])]
async fn write_through_row(db: &Db, id: u64) -> u64 {
    let version = db.write();
    if version == db.slow_write.load(SeqCst) {
        let mut gate = db.write_gate.subscribe();
        let _ = gate.wait_for(|open| *open).await;
    }
    version
}

/// A hook that can hold one store operation at a given phase until the
/// test lets it go, and count the passes of another.
#[derive(Default)]
struct Hold {
    /// The operation to hold, once.
    armed: Mutex<Option<(StoreOp, Phase)>>,
    held: Notify,
    release: Notify,
    /// The operation whose passes are counted.
    watched: Mutex<Option<(StoreOp, Phase)>>,
    passes: watch::Sender<u64>,
}

impl Hold {
    fn interpose(self: &Arc<Self>) -> Interpose {
        let hold = self.clone();
        Interpose::new(move |step| {
            let at = (step.op, step.phase);
            if *hold.watched.lock().unwrap() == Some(at) {
                hold.passes.send_modify(|n| *n += 1);
            }
            let mut armed = hold.armed.lock().unwrap();
            if *armed != Some(at) {
                return None;
            }
            *armed = None;
            hold.held.notify_one();
            let hold = hold.clone();
            Some(Box::pin(async move { hold.release.notified().await }))
        })
    }
    /// Holds the next `op` at `phase`; `held` is notified when it is.
    fn arm(&self, op: StoreOp, phase: Phase) {
        *self.armed.lock().unwrap() = Some((op, phase));
    }
    /// Counts passes of `op` at `phase` from now on; returns the count so far.
    fn watch(&self, op: StoreOp, phase: Phase) -> u64 {
        *self.watched.lock().unwrap() = Some((op, phase));
        *self.passes.borrow()
    }
    /// Waits for a pass after the `seen`-th.
    async fn passed(&self, seen: u64) {
        let _ = self.passes.subscribe().wait_for(|n| *n > seen).await;
    }
}

async fn handle(server: &RedisServer, hold: Option<&Arc<Hold>>) -> Cache {
    let mut builder = server.builder().namespace("rai");
    if let Some(hold) = hold {
        builder = builder.interpose(hold.interpose());
    }
    builder.build().await.unwrap()
}

/// Scenario 1: R misses on H1 and fills the old row; the fill reaches
/// Redis but its reply is slow to come back. W (on H2) writes the row and
/// invalidates (`invalidate`), removing R's fill, and returns. F then calls
/// on H1: Redis says miss, and R's flight is still open. F must not get
/// R's value.
async fn late_follower_after(invalidate: impl AsyncFnOnce(&Db)) {
    let server = RedisServer::start();
    let hold = Arc::new(Hold::default());
    let h1 = handle(&server, Some(&hold)).await;
    let h2 = handle(&server, None).await;
    let db = Db::new();

    hold.arm(StoreOp::Fill, Phase::Answered);
    let r = tokio::spawn(Cache::scope(h1.clone(), {
        let db = db.clone();
        async move { get_row(&db, 1).await }
    }));
    hold.held.notified().await;
    assert_eq!(
        server.get("rai:row:1").as_deref(),
        Some("0"),
        "R's fill landed"
    );

    Cache::scope(h2.clone(), invalidate(&db)).await;
    assert!(
        !server.exists("rai:row:1"),
        "the invalidation removed R's fill"
    );

    // F begins after the invalidation returned.
    let seen = hold.watch(StoreOp::Get, Phase::Answered);
    let f = tokio::spawn(Cache::scope(h1.clone(), {
        let db = db.clone();
        async move { get_row(&db, 1).await }
    }));
    // F saw the miss and ran on to wait in R's flight.
    hold.passed(seen).await;
    hold.release.notify_one();

    assert_eq!(r.await.unwrap(), 0, "R began before the write");
    assert_eq!(
        f.await.unwrap(),
        1,
        "F began after the invalidation returned: it must not get R's fill"
    );
    assert_eq!(db.calls(), 2, "F ran the body once more");
}

#[tokio::test]
async fn a_late_follower_does_not_get_a_fill_a_typed_invalidation_removed() {
    late_follower_after(async |db| {
        write_row(db, 1).await;
    })
    .await;
}

#[tokio::test]
async fn a_late_follower_does_not_get_a_fill_a_pattern_invalidation_removed() {
    late_follower_after(async |db| {
        write_all_rows(db).await;
    })
    .await;
}

/// Scenario 1, through a lease waiter: R (on H1) holds the lease and its
/// body runs; L (on H3) waits on R's lease. R fills and returns. L's next
/// lease attempt sees R's value, and that reply is slow to come back. W
/// writes and invalidates. F begins on H3 and joins L's flight: it must
/// not get the value L saw.
#[tokio::test]
async fn a_follower_of_a_lease_waiter_does_not_get_a_value_the_invalidation_removed() {
    let server = RedisServer::start();
    let hold = Arc::new(Hold::default());
    let h1 = handle(&server, None).await;
    let h2 = handle(&server, None).await;
    let h3 = handle(&server, Some(&hold)).await;
    let db = Db::new();

    db.gate.send_replace(false);
    let r = tokio::spawn(Cache::scope(h1.clone(), {
        let db = db.clone();
        async move { get_row(&db, 1).await }
    }));
    while db.calls() == 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    // L waits on R's lease.
    let seen = hold.watch(StoreOp::Lease, Phase::Answered);
    let l = tokio::spawn(Cache::scope(h3.clone(), {
        let db = db.clone();
        async move { get_row(&db, 1).await }
    }));
    hold.passed(seen).await;
    // L's next lease attempt waits to be sent until R has filled; its
    // reply, R's value, is then slow to come back.
    hold.arm(StoreOp::Lease, Phase::Sending);
    hold.held.notified().await;
    db.gate.send_replace(true);
    assert_eq!(r.await.unwrap(), 0);
    assert_eq!(db.calls(), 1, "R ran the body, L waited");
    hold.arm(StoreOp::Lease, Phase::Answered);
    hold.release.notify_one();
    hold.held.notified().await;

    Cache::scope(h2.clone(), write_row(&db, 1)).await;
    assert!(!server.exists("rai:row:1"));

    let seen = hold.watch(StoreOp::Get, Phase::Answered);
    let f = tokio::spawn(Cache::scope(h3.clone(), {
        let db = db.clone();
        async move { get_row(&db, 1).await }
    }));
    hold.passed(seen).await;
    hold.release.notify_one();

    assert_eq!(l.await.unwrap(), 0, "L began before the write");
    assert_eq!(
        f.await.unwrap(),
        1,
        "F began after the invalidation returned"
    );
}

/// Scenario 2: R (on H1) leads a tagged miss; while its body runs, W (on
/// H2) writes and invalidates the tag, which leaves R's lease intact. F
/// begins on H1 and joins R's flight. R's fill succeeds; F must not get
/// it (readers of other processes would miss: the tag moved).
#[tokio::test]
async fn a_tag_invalidation_reaches_followers_of_the_same_process() {
    let server = RedisServer::start();
    let hold = Arc::new(Hold::default());
    let h1 = handle(&server, Some(&hold)).await;
    let h2 = handle(&server, None).await;
    let db = Db::new();

    db.gate.send_replace(false);
    let r = tokio::spawn(Cache::scope(h1.clone(), {
        let db = db.clone();
        async move { get_tagged_row(&db, 1).await }
    }));
    while db.calls() == 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Cache::scope(h2.clone(), write_tagged_row(&db, 1)).await;

    let seen = hold.watch(StoreOp::Fetch, Phase::Answered);
    let f = tokio::spawn(Cache::scope(h1.clone(), {
        let db = db.clone();
        async move { get_tagged_row(&db, 1).await }
    }));
    hold.passed(seen).await;
    db.gate.send_replace(true);

    assert_eq!(r.await.unwrap(), 0, "R began before the write");
    assert_eq!(f.await.unwrap(), 1, "F began after the tag was invalidated");
    // What is stored now is current: another process reads it.
    let other = handle(&server, None).await;
    assert_eq!(Cache::scope(other, get_tagged_row(&db, 1)).await, 1);
    assert_eq!(db.calls(), 2, "the new value was computed once");
}

/// Scenario 3: one tagged key, cold, called 25 times at once on each of 4
/// handles: the body runs once in all, whether the tag has a version yet,
/// has one, or was just invalidated.
async fn tagged_stampede(tag_state: &str) {
    let server = RedisServer::start();
    let mut handles = Vec::new();
    for _ in 0..4 {
        handles.push(handle(&server, None).await);
    }
    let db = Db::new();
    match tag_state {
        "cold" => {}
        "existing" => {
            // Another entry of the same tag gives it a version.
            Cache::scope(handles[0].clone(), get_tagged_row(&db, 1)).await;
            db.calls.store(0, SeqCst);
            server.cli(&["DEL", "rai:trow:1"]);
        }
        "invalidated" => {
            Cache::scope(handles[0].clone(), get_tagged_row(&db, 1)).await;
            Cache::scope(handles[0].clone(), write_tagged_row(&db, 1)).await;
            db.calls.store(0, SeqCst);
        }
        other => unreachable!("{other}"),
    }
    // The body outlasts every lookup and lease attempt.
    db.gate.send_replace(false);
    let mut calls = Vec::new();
    for cache in &handles {
        for _ in 0..25 {
            let db = db.clone();
            calls.push(tokio::spawn(Cache::scope(cache.clone(), async move {
                get_tagged_row(&db, 1).await
            })));
        }
    }
    while db.calls() == 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    db.gate.send_replace(true);
    let want = db.version.load(SeqCst);
    for call in calls {
        assert_eq!(call.await.unwrap(), want);
    }
    assert_eq!(
        db.calls(),
        1,
        "one body run for 4 x 25 calls ({tag_state} tag)"
    );
    let waits: u64 = handles.iter().map(|c| c.stats().lease_waits).sum();
    assert_eq!(waits, 3, "the other handles waited on the lease");
}

#[tokio::test]
async fn a_cold_tag_does_not_split_the_stampede() {
    tagged_stampede("cold").await;
}

#[tokio::test]
async fn a_tag_with_a_version_does_not_split_the_stampede() {
    tagged_stampede("existing").await;
}

#[tokio::test]
async fn a_just_invalidated_tag_does_not_split_the_stampede() {
    tagged_stampede("invalidated").await;
}

/// A write-through stores its own result only if nothing touched its key
/// while it ran: R's miss leases the key and reads the old row; a
/// write-through then runs to the end; R's fill must fail, and a later
/// reader gets the written row.
#[tokio::test]
async fn a_write_through_is_not_overwritten_by_an_older_fill() {
    let server = RedisServer::start();
    let h1 = handle(&server, None).await;
    let h2 = handle(&server, None).await;
    let db = Db::new();
    db.gate.send_replace(false);
    let r = tokio::spawn(Cache::scope(h1.clone(), {
        let db = db.clone();
        async move { get_written_row(&db, 1).await }
    }));
    while db.calls() == 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(Cache::scope(h2.clone(), write_through_row(&db, 1)).await, 1);
    db.gate.send_replace(true);
    assert_eq!(r.await.unwrap(), 0, "R began before the write");
    let h3 = handle(&server, None).await;
    assert_eq!(Cache::scope(h3, get_written_row(&db, 1)).await, 1);
}

/// Two write-throughs of one key: W1 writes version 1 and is slow to
/// store it; W2 writes version 2 and returns. A reader that begins after
/// W2 returned must not get W1's older version.
#[tokio::test]
async fn a_slow_write_through_does_not_overwrite_a_newer_one() {
    let server = RedisServer::start();
    let h1 = handle(&server, None).await;
    let h2 = handle(&server, None).await;
    let db = Db::new();
    db.slow_write.store(1, SeqCst);
    let w1 = tokio::spawn(Cache::scope(h1.clone(), {
        let db = db.clone();
        async move { write_through_row(&db, 1).await }
    }));
    while db.version.load(SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(Cache::scope(h2.clone(), write_through_row(&db, 1)).await, 2);
    db.write_gate.send_replace(true);
    assert_eq!(w1.await.unwrap(), 1);
    let h3 = handle(&server, None).await;
    assert_eq!(
        Cache::scope(h3, get_written_row(&db, 1)).await,
        2,
        "a read after both writes returned gets the newer one"
    );
}

/// Write-through of a `Result`: updates the row, or fails.
#[cached(prefix = "wrow", id = "id", ttl = 60, invalidate = [get_row(id)], skip = [db, fail])]
async fn write_through_fallible(db: &Db, id: u64, fail: bool) -> Result<u64, String> {
    if fail {
        return Err("the database refused".into());
    }
    Ok(db.write())
}

/// A write-through whose body fails gives its lease back: the value that
/// was there is served again (no lease record left behind, TTL kept), and
/// nothing it listed is invalidated.
#[tokio::test]
async fn a_failed_write_through_leaves_the_old_value() {
    let server = RedisServer::start();
    let cache = handle(&server, None).await;
    let db = Db::new();
    Cache::scope(cache.clone(), async {
        assert_eq!(write_through_fallible(&db, 1, false).await, Ok(1));
        assert_eq!(get_row(&db, 1).await, 1);
        let ttl = server.pttl("rai:wrow:1");
        assert!(write_through_fallible(&db, 1, true).await.is_err());
        assert_eq!(server.get("rai:wrow:1").as_deref(), Some("1"));
        assert!(server.pttl("rai:wrow:1") <= ttl, "the TTL is kept");
        assert!(
            server.exists("rai:row:1"),
            "a failed write invalidates nothing"
        );
        assert_eq!(get_written_row(&db, 1).await, 1, "a hit");
        assert_eq!(db.calls(), 1, "only get_row's first call ran a body");
    })
    .await;
}

/// Scenario 4: `build()` against servers that accept connections and
/// never answer waits one connect timeout in all, not one per store.
#[tokio::test]
async fn build_waits_one_connect_timeout_for_all_stores() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("redis://{}", silent.local_addr().unwrap());
    let accepted = std::thread::spawn(move || {
        // Accept and hold every connection, never answering.
        let mut held = Vec::new();
        silent.set_nonblocking(true).unwrap();
        let until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < until {
            match silent.accept() {
                Ok((conn, _)) => held.push(conn),
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    });
    let timeout = Duration::from_millis(1000);
    let started = Instant::now();
    let cache = Cache::builder()
        .redis_url(&url)
        .connect_timeout(timeout)
        .store_url("flags", &url)
        .store_url("sessions", &url)
        .build()
        .await
        .unwrap();
    let took = started.elapsed();
    assert!(
        took < timeout * 2,
        "three silent stores took {took:?}: they must be checked at once"
    );
    // Calls still run their bodies (the store never answers).
    #[cached(prefix = "n", id = "n", ttl = 60)]
    async fn n(n: u64) -> u64 {
        n
    }
    let cache2 = cache.clone();
    let quick = tokio::time::timeout(Duration::from_secs(5), Cache::scope(cache2, n(7))).await;
    assert_eq!(quick.ok(), Some(7));
    drop(accepted);
}

/// With leases off, a write-through stores its result with a plain `SET`,
/// as before (plain cache-aside makes no read-after-invalidate promise).
#[tokio::test]
async fn with_leases_off_a_write_through_still_stores() {
    let server = RedisServer::start();
    let cache = server
        .builder()
        .namespace("rai")
        .leases(false)
        .build()
        .await
        .unwrap();
    let db = Db::new();
    assert_eq!(
        Cache::scope(cache, write_through_fallible(&db, 1, false)).await,
        Ok(1)
    );
    assert_eq!(server.get("rai:wrow:1").as_deref(), Some("1"));
}
