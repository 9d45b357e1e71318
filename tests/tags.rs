//! Tags with version counters, against a real Redis (and the memory store
//! where the claim holds there too): invalidation by tag, its cost (one
//! key, nothing enumerated), the stale-set race for tags, lost or garbage
//! versions, local reuse of versions, tags per tenant, and `version = N`.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::time::Duration;

use cache_runtime::{Cache, cached};
use common::RedisServer;
use tokio::sync::watch;

/// A table of posts: a revision per author, a count of body runs, and a
/// gate that holds bodies until the test opens it.
struct Db {
    revision: AtomicU64,
    calls: AtomicU64,
    gate: watch::Sender<bool>,
}

impl Db {
    fn new() -> Arc<Self> {
        Arc::new(Db {
            revision: AtomicU64::new(1),
            calls: AtomicU64::new(0),
            gate: watch::Sender::new(true),
        })
    }
    fn calls(&self) -> u64 {
        self.calls.load(SeqCst)
    }
    async fn query(&self, author: u64, id: u64) -> String {
        self.calls.fetch_add(1, SeqCst);
        let revision = self.revision.load(SeqCst);
        let mut gate = self.gate.subscribe();
        let _ = gate.wait_for(|open| *open).await;
        format!("author {author} post {id} rev {revision}")
    }
}

#[cached(
    prefix = "author:{author}:post",
    id = "id",
    ttl = 60,
    tags = ["author:{author}", "posts"],
    skip = [db]
)]
async fn post(db: &Db, author: u64, id: u64) -> String {
    db.query(author, id).await
}

#[cached(prefix = "author:{author}:count", ttl = 60, tags = ["author:{author}"], skip = [db])]
async fn post_count(db: &Db, author: u64) -> u64 {
    db.calls.fetch_add(1, SeqCst);
    db.revision.load(SeqCst)
}

#[cached(invalidate = [tag("author:{author}")])]
async fn edit_author(db: &Db, author: u64) -> u64 {
    db.revision.fetch_add(1, SeqCst) + 1
}

async fn redis_cache(server: &RedisServer, namespace: &str) -> Cache {
    server.builder().namespace(namespace).build().await.unwrap()
}

async fn memory_cache() -> Cache {
    Cache::builder().namespace("t").build().await.unwrap()
}

/// Invalidating a tag makes every entry carrying it a miss, and nothing else.
async fn invalidates_what_the_tag_covers(cache: Cache) {
    let db = Db::new();
    Cache::scope(cache.clone(), async {
        for id in 0..3 {
            post(&db, 1, id).await;
            post(&db, 2, id).await;
        }
        post_count(&db, 1).await;
        assert_eq!(db.calls(), 7);
        // All hits.
        for id in 0..3 {
            post(&db, 1, id).await;
            post(&db, 2, id).await;
        }
        assert_eq!(db.calls(), 7);

        assert_eq!(edit_author(&db, 1).await, 2);
        // Author 1's entries (both functions) are misses, author 2's are not.
        for id in 0..3 {
            assert_eq!(post(&db, 1, id).await, format!("author 1 post {id} rev 2"));
            assert_eq!(post(&db, 2, id).await, format!("author 2 post {id} rev 1"));
        }
        assert_eq!(post_count(&db, 1).await, 2);
        assert_eq!(db.calls(), 11);

        // The shared tag covers both authors.
        assert!(cache.invalidate_tag("posts").await);
        post(&db, 1, 0).await;
        post(&db, 2, 0).await;
        post_count(&db, 1).await; // not tagged "posts": still a hit
        assert_eq!(db.calls(), 13);
    })
    .await;
    assert_eq!(cache.stats().tag_misses, 3 + 1 + 2);
}

#[tokio::test]
async fn tag_invalidation_on_redis() {
    let server = RedisServer::start();
    invalidates_what_the_tag_covers(redis_cache(&server, "tags").await).await;
}

#[tokio::test]
async fn tag_invalidation_on_memory() {
    invalidates_what_the_tag_covers(memory_cache().await).await;
}

/// Invalidating a tag deletes one key, whatever it covers: no SCAN, no KEYS,
/// and the entries themselves are left to expire, never served.
#[tokio::test]
async fn invalidating_a_tag_touches_one_key() {
    let server = RedisServer::start();
    let cache = redis_cache(&server, "cost").await;
    let db = Db::new();
    Cache::scope(cache.clone(), async {
        for id in 0..200 {
            post(&db, 7, id).await;
        }
    })
    .await;
    let entries = server
        .keys()
        .iter()
        .filter(|k| k.starts_with("cost:author:7:post:"))
        .count();
    assert_eq!(entries, 200);
    assert_eq!(
        server
            .get("cost#tag:posts")
            .map(|v| v.parse::<u64>().is_ok()),
        Some(true)
    );
    let deletes_before = server.command_calls("unlink") + server.command_calls("del");
    let scans_before = server.command_calls("scan");

    cache.invalidate_tag("author:7").await;

    assert_eq!(
        server.command_calls("unlink") + server.command_calls("del") - deletes_before,
        1
    );
    assert_eq!(server.command_calls("scan"), scans_before);
    assert_eq!(server.command_calls("keys"), 0);
    assert!(!server.exists("cost#tag:author:7"));
    // The entries are still there...
    assert!(server.exists("cost:author:7:post:0"));
    // ...and never served.
    let calls = db.calls();
    Cache::scope(cache.clone(), async {
        for id in 0..200 {
            post(&db, 7, id).await;
        }
    })
    .await;
    assert_eq!(db.calls() - calls, 200);
}

/// A body that started before a tag invalidation stores a result that is
/// already stale: the next call recomputes it rather than serving it.
#[tokio::test]
async fn a_result_read_before_a_tag_invalidation_is_not_served() {
    let server = RedisServer::start();
    // Leases off: the stored-after-invalidation value really is written.
    let cache = server
        .builder()
        .namespace("race")
        .leases(false)
        .build()
        .await
        .unwrap();
    let db = Db::new();
    db.gate.send_replace(false);
    let reader = {
        let (cache, db) = (cache.clone(), db.clone());
        tokio::spawn(Cache::scope(cache, async move { post(&db, 3, 1).await }))
    };
    assert!(common::eventually(Duration::from_secs(5), || async { db.calls() == 1 }).await);
    // The body has read revision 1; the write lands and invalidates the tag.
    Cache::scope(cache.clone(), edit_author(&db, 3)).await;
    db.gate.send_replace(true);
    assert_eq!(reader.await.unwrap(), "author 3 post 1 rev 1");
    assert!(
        server.exists("race:author:3:post:1"),
        "the stale result was stored"
    );

    let fresh = Cache::scope(cache.clone(), post(&db, 3, 1)).await;
    assert_eq!(fresh, "author 3 post 1 rev 2");
    assert_eq!(db.calls(), 2);
    assert_eq!(cache.stats().tag_misses, 1);
}

/// A version key that vanishes (evicted, expired, deleted by hand) or holds
/// garbage makes its entries misses; the next store gives it a new version.
#[tokio::test]
async fn lost_or_garbage_versions_are_misses() {
    let server = RedisServer::start();
    let cache = redis_cache(&server, "lost").await;
    let db = Db::new();
    let call = || Cache::scope(cache.clone(), post(&db, 4, 1));
    call().await;
    call().await;
    assert_eq!(db.calls(), 1);
    let old = server.get("lost#tag:author:4").unwrap();

    server.cli(&["DEL", "lost#tag:author:4"]);
    call().await;
    assert_eq!(db.calls(), 2);
    let new = server.get("lost#tag:author:4").unwrap();
    assert_ne!(old, new);
    call().await;
    assert_eq!(db.calls(), 2);

    server.cli(&["SET", "lost#tag:author:4", "not a number"]);
    call().await;
    call().await;
    assert_eq!(db.calls(), 3);
    assert!(
        server
            .get("lost#tag:author:4")
            .unwrap()
            .parse::<u64>()
            .is_ok()
    );
    // Version keys outlive the entries recorded against them.
    assert!(server.pttl("lost#tag:author:4") > server.pttl("lost:author:4:post:1"));
}

/// With `tag_version_reuse`, another process's tag invalidation may go
/// unseen for up to the window, and never longer; this process's own
/// invalidations are seen at once.
#[tokio::test]
async fn reused_versions_are_stale_for_at_most_the_window() {
    let server = RedisServer::start();
    let window = Duration::from_millis(400);
    let build = |reuse| {
        server
            .builder()
            .namespace("reuse")
            .tag_version_reuse(reuse)
            .build()
    };
    let reader = build(window).await.unwrap();
    let writer = build(Duration::ZERO).await.unwrap();
    let db = Db::new();
    let read = || Cache::scope(reader.clone(), post(&db, 5, 1));
    assert_eq!(read().await, "author 5 post 1 rev 1");
    let gets_before = server.command_calls("get");
    assert_eq!(read().await, "author 5 post 1 rev 1");
    // A hit read the entry only: one GET, no version reads.
    assert_eq!(server.command_calls("get") - gets_before, 1);

    // Another process invalidates: served stale within the window...
    Cache::scope(writer.clone(), edit_author(&db, 5)).await;
    let invalidated = std::time::Instant::now();
    assert_eq!(read().await, "author 5 post 1 rev 1");
    // ...and fresh after it.
    loop {
        let value = read().await;
        if value.ends_with("rev 2") {
            break;
        }
        let stale_for = invalidated.elapsed();
        assert!(
            stale_for <= window + Duration::from_millis(300),
            "stale for {stale_for:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // This process's own invalidation is seen at once.
    Cache::scope(reader.clone(), edit_author(&db, 5)).await;
    assert_eq!(read().await, "author 5 post 1 rev 3");
}

/// A tenant's tag invalidation reaches that tenant's entries only.
#[tokio::test]
async fn tags_belong_to_a_tenant() {
    let server = RedisServer::start();
    let cache = redis_cache(&server, "tt").await;
    let db = Db::new();
    let call = |tenant: &'static str| {
        Cache::scope(cache.clone(), Cache::with_tenant(tenant, post(&db, 6, 1)))
    };
    call("a").await;
    call("b").await;
    assert_eq!(db.calls(), 2);
    let version_b = server.get("tt@b#tag:posts").unwrap();
    Cache::scope(
        cache.clone(),
        Cache::with_tenant("a", async { cache.invalidate_tag("posts").await }),
    )
    .await;
    call("a").await;
    call("b").await;
    assert_eq!(db.calls(), 3);
    assert_eq!(server.get("tt@b#tag:posts").unwrap(), version_b);
}

#[cached(prefix = "profile", id = "id", ttl = 60, version = 2)]
async fn profile_v2(id: u64) -> (u64, String) {
    (id, format!("user {id}"))
}

/// `version = N` is a key segment: entries of an older layout are never read.
/// A value that does not decode is a miss, counted as a decode error, and
/// overwritten.
#[tokio::test]
async fn versions_are_key_segments() {
    let server = RedisServer::start();
    let cache = redis_cache(&server, "ver").await;
    Cache::scope(cache.clone(), async {
        assert_eq!(profile_v2_key(&1), "ver:profile:1:v2");
        // What version 1 stored (another layout) is not read.
        server.cli(&["SET", "ver:profile:1", "{\"name\":\"old\"}"]);
        assert_eq!(profile_v2(1).await, (1, "user 1".to_owned()));
        assert_eq!(server.get("ver:profile:1").unwrap(), "{\"name\":\"old\"}");
        // A value of the wrong shape under the versioned key.
        server.cli(&["SET", "ver:profile:2:v2", "{\"name\":\"old\"}"]);
        assert_eq!(profile_v2(2).await, (2, "user 2".to_owned()));
        assert_eq!(server.get("ver:profile:2:v2").unwrap(), "[2,\"user 2\"]");
        assert_eq!(profile_v2(2).await, (2, "user 2".to_owned()));
    })
    .await;
    let stats = cache.stats();
    assert_eq!(stats.decode_errors, 1);
    assert_eq!((stats.misses, stats.hits), (2, 1));
}

/// `Cache::warm` recomputes and stores entries whether or not they are
/// there, with their tags' versions, so what it stores is served (and
/// invalidated by tag) like any other entry.
#[tokio::test]
async fn warming_overwrites_present_entries() {
    let server = RedisServer::start();
    let cache = redis_cache(&server, "warm").await;
    let db = Db::new();
    Cache::scope(cache.clone(), async {
        assert_eq!(post(&db, 8, 1).await, "author 8 post 1 rev 1");
        // The row changes behind the cache's back; warming picks it up.
        db.revision.store(5, SeqCst);
        Cache::warm(async {
            for id in 1..=3 {
                post(&db, 8, id).await;
            }
        })
        .await;
        assert_eq!(db.calls(), 4);
        for id in 1..=3 {
            assert_eq!(post(&db, 8, id).await, format!("author 8 post {id} rev 5"));
        }
        assert_eq!(db.calls(), 4, "warmed entries are hits");
        edit_author(&db, 8).await;
        assert_eq!(post(&db, 8, 2).await, "author 8 post 2 rev 6");
    })
    .await;
    let stats = cache.stats();
    assert_eq!(stats.warmed, 3);
    assert_eq!(stats.hits, 3);
}
