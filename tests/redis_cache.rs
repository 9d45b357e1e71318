//! The `#[cached]` contract against a real Redis server: hits and misses, the
//! stored format, TTLs, `Result`/`Option` semantics, every kind of
//! invalidation, write-through, methods, and garbage under a key.
//!
//! Every test starts its own Redis (one server, or a cluster under
//! `CACHE_TEST_TOPOLOGY=cluster`) and counts body executions in its own `Db`,
//! so the tests of this file run in parallel without interfering.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use cache_runtime::{Cache, cached};
use common::RedisServer;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct User {
    id: u64,
    name: String,
}

fn user(id: u64) -> User {
    User {
        id,
        name: format!("user-{id}"),
    }
}

/// Stands in for a database: counts how often a body ran, and can fail.
#[derive(Default)]
struct Db {
    calls: AtomicU32,
    fail: AtomicBool,
}

impl Db {
    fn ran(&self) {
        self.calls.fetch_add(1, Ordering::SeqCst);
    }
    fn calls(&self) -> u32 {
        self.calls.load(Ordering::SeqCst)
    }
    fn fail(&self, fail: bool) {
        self.fail.store(fail, Ordering::SeqCst);
    }
    fn failing(&self) -> bool {
        self.fail.load(Ordering::SeqCst)
    }
}

async fn redis_cache(server: &RedisServer, namespace: &str) -> Cache {
    server
        .builder()
        .namespace(namespace)
        .build()
        .await
        .expect("build a Redis cache")
}

// ---------------------------------------------------------------- functions

#[cached(prefix = "user", id = "user_id", ttl = 60, skip = [db])]
async fn get_user(db: &Db, user_id: u64) -> Result<User, String> {
    db.ran();
    if db.failing() {
        return Err(format!("db down while loading {user_id}"));
    }
    Ok(user(user_id))
}

#[cached(prefix = "user:{user_id}:posts:page:{page}", ttl = "5m", skip = [db])]
async fn user_posts(db: &Db, user_id: u64, page: u32) -> Vec<String> {
    db.ran();
    vec![format!("post {user_id}/{page}")]
}

/// Typed invalidation plus a pattern template.
#[cached(invalidate = [get_user(user_id), "user:{user_id}:posts:*"])]
async fn update_user(db: &Db, user_id: u64) -> Result<(), String> {
    db.ran();
    if db.failing() {
        return Err(format!("update of {user_id} failed"));
    }
    Ok(())
}

/// An exact (non-pattern) template.
#[cached(invalidate = ["user:{user_id}"])]
async fn touch_user(user_id: u64) -> Result<u64, String> {
    Ok(user_id)
}

/// A write function with a plain return: every result is a success.
#[cached(invalidate = ["user:{user_id}:posts:page:{page}"])]
async fn delete_post(user_id: u64, page: u32) -> bool {
    user_id > 0 && page > 0
}

/// Write-through: stores its own result, removes the listed entries.
#[cached(
    prefix = "profile",
    id = "user_id",
    ttl = 60,
    skip = [db, name],
    invalidate = [get_user(user_id), "user:{user_id}:posts:*"]
)]
async fn save_profile(db: &Db, user_id: u64, name: String) -> Result<User, String> {
    db.ran();
    if db.failing() {
        return Err("save failed".into());
    }
    Ok(User { id: user_id, name })
}

/// Reads what `save_profile` writes through (same key).
#[cached(prefix = "profile", id = "user_id", ttl = 60, skip = [db])]
async fn get_profile(db: &Db, user_id: u64) -> Result<User, String> {
    db.ran();
    Ok(user(user_id))
}

/// Write-through of an `Option`: `None` removes the own entry.
#[cached(prefix = "slot", id = "n", ttl = 60, skip = [value], invalidate = ["user:{n}"])]
async fn put_slot(n: u64, value: Option<u64>) -> Option<u64> {
    value
}

/// Write-through whose own key matches its own pattern: the fresh result
/// must survive the invalidation.
#[cached(
    prefix = "user:{user_id}:summary",
    ttl = 60,
    skip = [db],
    invalidate = ["user:{user_id}:*"]
)]
async fn refresh_summary(db: &Db, user_id: u64) -> String {
    db.ran();
    format!("summary of {user_id}")
}

#[cached(prefix = "square", id = "n", ttl = "500ms", skip = [db])]
async fn square_500ms(db: &Db, n: u64) -> u64 {
    db.ran();
    n * n
}

#[cached(prefix = "cube", id = "n", ttl = "1s", skip = [db])]
async fn cube_1s(db: &Db, n: u64) -> u64 {
    db.ran();
    n * n * n
}

/// No `ttl`: the cache's default TTL applies.
#[cached(prefix = "double", id = "n", skip = [db])]
async fn double_default_ttl(db: &Db, n: u64) -> u64 {
    db.ran();
    2 * n
}

#[cached(prefix = "fallible", id = "n", ttl = 60, skip = [db])]
async fn fallible(db: &Db, n: u64) -> Result<u64, String> {
    db.ran();
    if db.failing() {
        Err(format!("no {n}"))
    } else {
        Ok(n * 10)
    }
}

/// `Some` for even ids, `None` for odd ones; `None` is not stored.
#[cached(prefix = "maybe", id = "n", ttl = 60, skip = [db])]
async fn maybe_user(db: &Db, n: u64) -> Option<User> {
    db.ran();
    n.is_multiple_of(2).then(|| user(n))
}

/// Same, but `None` is stored too.
#[cached(prefix = "maybe_none", id = "n", ttl = 60, skip = [db], cache_none = true)]
async fn maybe_user_cache_none(db: &Db, n: u64) -> Option<User> {
    db.ran();
    n.is_multiple_of(2).then(|| user(n))
}

/// A bare `#[cached]`: keyed on the function's name and all its parameters.
#[cached(ttl = 60, skip = [db])]
async fn bare_sum(db: &Db, a: u64, b: String) -> String {
    db.ran();
    format!("{a}+{b}")
}

struct Query {
    org: String,
    page: (u32, u32),
}

/// Placeholders may be field paths (including tuple fields).
#[cached(prefix = "org:{q.org}:page:{q.page.0}", id = "q.page.1", ttl = 60, skip = [db])]
async fn org_page(db: &Db, q: &Query) -> String {
    db.ran();
    format!("{}/{}/{}", q.org, q.page.0, q.page.1)
}

struct Repo {
    db: Db,
}

#[cached]
impl Repo {
    #[cached(prefix = "repo:item", id = "id", ttl = 60)]
    async fn item(&self, id: u64) -> Result<User, String> {
        self.db.ran();
        Ok(user(id))
    }

    #[cached(invalidate = [Self::item(id)])]
    async fn rename_item(&self, id: u64) -> Result<(), String> {
        Ok(())
    }
}

// -------------------------------------------------------------------- tests

#[tokio::test]
async fn miss_then_hit_and_the_stored_value_is_plain_json() {
    let server = RedisServer::start();
    let cache = redis_cache(&server, "rc-hit").await;
    let db = Db::default();
    Cache::scope(cache.clone(), async {
        assert_eq!(get_user(&db, 42).await, Ok(user(42)));
        assert_eq!(db.calls(), 1, "a miss runs the body");
        assert_eq!(get_user(&db, 42).await, Ok(user(42)));
        assert_eq!(db.calls(), 1, "a hit does not run the body");

        let key = get_user_key(&42);
        assert_eq!(key, "rc-hit:user:42");
        assert_eq!(server.keys(), vec![key.clone()]);
        let raw = server.get(&key).expect("the entry is in Redis");
        let stored: User = serde_json::from_str(&raw).expect("plain JSON of the struct");
        assert_eq!(stored, user(42));
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&raw).unwrap(),
            serde_json::json!({"id": 42, "name": "user-42"})
        );

        // Another service writing plain JSON under the documented key is
        // read back as a hit.
        server.cli(&["SET", "rc-hit:user:7", r#"{"id":7,"name":"from python"}"#]);
        let seven = get_user(&db, 7).await.unwrap();
        assert_eq!(seven.name, "from python");
        assert_eq!(db.calls(), 1);
    })
    .await;
    let stats = cache.stats();
    assert_eq!((stats.hits, stats.misses, stats.stores), (2, 1, 1));
    assert_eq!(stats.decode_errors + stats.store_errors + stats.timeouts, 0);
}

#[tokio::test]
async fn template_keys_bare_keys_and_method_keys() {
    let server = RedisServer::start();
    let cache = redis_cache(&server, "rc-keys").await;
    let db = Db::default();
    let repo = Repo { db: Db::default() };
    Cache::scope(cache.clone(), async {
        assert_eq!(user_posts(&db, 3, 2).await, vec!["post 3/2".to_owned()]);
        assert_eq!(bare_sum(&db, 1, "x".into()).await, "1+x");
        assert_eq!(repo.item(5).await, Ok(user(5)));
        assert_eq!(repo.item(5).await, Ok(user(5)));
        assert_eq!(repo.db.calls(), 1);

        assert_eq!(user_posts_key(&3, &2), "rc-keys:user:3:posts:page:2");
        assert_eq!(bare_sum_key(&1, "x"), "rc-keys:bare_sum:1:x");
        assert_eq!(Repo::item_key(&5), "rc-keys:repo:item:5");
        assert_eq!(
            server.keys(),
            vec![
                "rc-keys:bare_sum:1:x",
                "rc-keys:repo:item:5",
                "rc-keys:user:3:posts:page:2"
            ]
        );

        let q = Query {
            org: "acme:eu".into(),
            page: (3, 9),
        };
        assert_eq!(org_page(&db, &q).await, "acme:eu/3/9");
        assert_eq!(org_page(&db, &q).await, "acme:eu/3/9");
        assert_eq!(org_page_key(&q), "rc-keys:org:acme%3Aeu:page:3:9");
        assert!(server.exists("rc-keys:org:acme%3Aeu:page:3:9"));
        assert_eq!(db.calls(), 3);

        repo.rename_item(5).await.unwrap();
        assert!(!server.exists("rc-keys:repo:item:5"));
        assert_eq!(repo.item(5).await, Ok(user(5)));
        assert_eq!(repo.db.calls(), 2, "the method's entry was invalidated");

        Repo::item_invalidate(&5).await;
        assert!(!server.exists("rc-keys:repo:item:5"));
    })
    .await;
}

#[tokio::test]
async fn ttl_expires_entries_and_is_set_in_redis() {
    let server = RedisServer::start();
    let cache = server
        .builder()
        .namespace("rc-ttl")
        .default_ttl(Duration::from_secs(7))
        .build()
        .await
        .unwrap();
    let db = Db::default();
    Cache::scope(cache.clone(), async {
        assert_eq!(square_500ms(&db, 9).await, 81);
        assert_eq!(cube_1s(&db, 3).await, 27);
        assert_eq!(double_default_ttl(&db, 4).await, 8);
        assert_eq!(db.calls(), 3);

        let pttl = server.pttl(&square_500ms_key(&9));
        assert!(pttl > 0 && pttl <= 500, "PTTL of a 500ms entry: {pttl}");
        let pttl = server.pttl(&cube_1s_key(&3));
        assert!(pttl > 500 && pttl <= 1000, "PTTL of a 1s entry: {pttl}");
        let pttl = server.pttl(&double_default_ttl_key(&4));
        assert!(
            pttl > 6000 && pttl <= 7000,
            "PTTL of an entry under the 7s default TTL: {pttl}"
        );

        assert_eq!(square_500ms(&db, 9).await, 81);
        assert_eq!(db.calls(), 3, "still cached before the TTL");

        // Wait until Redis itself reports the entry gone (PTTL -2).
        let key = square_500ms_key(&9);
        let gone =
            common::eventually(Duration::from_secs(3), || async { server.pttl(&key) == -2 }).await;
        assert!(gone, "the 500ms entry did not expire");
        assert_eq!(square_500ms(&db, 9).await, 81);
        assert_eq!(db.calls(), 4, "after expiry the body runs again");
        assert!(server.exists(&key), "and the result is stored again");

        let key = cube_1s_key(&3);
        let gone =
            common::eventually(Duration::from_secs(3), || async { server.pttl(&key) == -2 }).await;
        assert!(gone, "the 1s entry did not expire");
        assert_eq!(cube_1s(&db, 3).await, 27);
        assert_eq!(db.calls(), 5);
    })
    .await;
}

#[tokio::test]
async fn errors_are_not_stored() {
    let server = RedisServer::start();
    let cache = redis_cache(&server, "rc-result").await;
    let db = Db::default();
    Cache::scope(cache.clone(), async {
        db.fail(true);
        assert_eq!(fallible(&db, 1).await, Err("no 1".to_owned()));
        assert_eq!(fallible(&db, 1).await, Err("no 1".to_owned()));
        assert_eq!(db.calls(), 2, "an Err is never served from the cache");
        assert!(!server.exists(&fallible_key(&1)));
        assert_eq!(cache.stats().stores, 0);

        db.fail(false);
        assert_eq!(fallible(&db, 1).await, Ok(10));
        assert_eq!(server.get(&fallible_key(&1)).as_deref(), Some("10"));
        db.fail(true);
        assert_eq!(fallible(&db, 1).await, Ok(10), "the Ok is served");
        assert_eq!(db.calls(), 3);
    })
    .await;
}

#[tokio::test]
async fn options_store_some_and_none_only_when_asked() {
    let server = RedisServer::start();
    let cache = redis_cache(&server, "rc-option").await;
    let db = Db::default();
    Cache::scope(cache.clone(), async {
        // None, default: not stored, the body runs each time.
        assert_eq!(maybe_user(&db, 1).await, None);
        assert_eq!(maybe_user(&db, 1).await, None);
        assert_eq!(db.calls(), 2);
        assert!(!server.exists(&maybe_user_key(&1)));

        // Some: stored as the plain value, served as a hit.
        assert_eq!(maybe_user(&db, 2).await, Some(user(2)));
        assert_eq!(maybe_user(&db, 2).await, Some(user(2)));
        assert_eq!(db.calls(), 3);
        let raw = server.get(&maybe_user_key(&2)).unwrap();
        assert_eq!(serde_json::from_str::<User>(&raw).unwrap(), user(2));

        // None with cache_none: stored as JSON null and served as a hit.
        let hits = cache.stats().hits;
        assert_eq!(maybe_user_cache_none(&db, 1).await, None);
        assert_eq!(db.calls(), 4);
        assert_eq!(
            server.get(&maybe_user_cache_none_key(&1)).as_deref(),
            Some("null")
        );
        assert_eq!(maybe_user_cache_none(&db, 1).await, None);
        assert_eq!(db.calls(), 4, "a stored None is a hit");
        assert_eq!(cache.stats().hits, hits + 1);
        assert_eq!(maybe_user_cache_none(&db, 4).await, Some(user(4)));
        assert_eq!(maybe_user_cache_none(&db, 4).await, Some(user(4)));
        assert_eq!(db.calls(), 5);
    })
    .await;
}

/// Fills user 1's, 10's and 11's entries.
async fn fill(db: &Db) {
    for id in [1, 10, 11] {
        get_user(db, id).await.unwrap();
        for page in 1..=3 {
            user_posts(db, id, page).await;
        }
    }
}

fn keys_of(ns: &str, ids: &[u64]) -> Vec<String> {
    let mut keys = Vec::new();
    for id in ids {
        keys.push(format!("{ns}:user:{id}"));
        for page in 1..=3 {
            keys.push(format!("{ns}:user:{id}:posts:page:{page}"));
        }
    }
    keys.sort();
    keys
}

#[tokio::test]
async fn write_function_invalidates_typed_entries_and_patterns() {
    let server = RedisServer::start();
    let cache = redis_cache(&server, "rc-inv").await;
    let db = Db::default();
    Cache::scope(cache.clone(), async {
        fill(&db).await;
        assert_eq!(server.keys(), keys_of("rc-inv", &[1, 10, 11]));
        let before = cache.stats().invalidations;

        update_user(&db, 1).await.unwrap();
        assert_eq!(
            server.keys(),
            keys_of("rc-inv", &[10, 11]),
            "user 1's entry and all its pages are gone; users 10 and 11 are untouched"
        );
        assert_eq!(
            cache.stats().invalidations,
            before + 2,
            "one key, one pattern"
        );

        let calls = db.calls();
        assert_eq!(get_user(&db, 1).await, Ok(user(1)));
        assert_eq!(user_posts(&db, 1, 2).await, vec!["post 1/2".to_owned()]);
        assert_eq!(db.calls(), calls + 2, "user 1 is loaded again");
        get_user(&db, 10).await.unwrap();
        user_posts(&db, 11, 3).await;
        assert_eq!(db.calls(), calls + 2, "users 10 and 11 are still hits");
    })
    .await;
}

#[tokio::test]
async fn failed_write_invalidates_nothing() {
    let server = RedisServer::start();
    let cache = redis_cache(&server, "rc-inv-err").await;
    let db = Db::default();
    Cache::scope(cache.clone(), async {
        fill(&db).await;
        let keys = server.keys();
        let before = cache.stats();
        db.fail(true);
        assert_eq!(
            update_user(&db, 1).await,
            Err("update of 1 failed".to_owned())
        );
        assert_eq!(server.keys(), keys, "nothing was invalidated");
        assert_eq!(cache.stats().invalidations, before.invalidations);
        assert_eq!(cache.stats().invalidation_failures, 0);
    })
    .await;
}

#[tokio::test]
async fn exact_template_plain_write_and_companion_invalidation() {
    let server = RedisServer::start();
    let cache = redis_cache(&server, "rc-inv-exact").await;
    let db = Db::default();
    Cache::scope(cache.clone(), async {
        fill(&db).await;

        // Exact template "user:{user_id}": only that key.
        assert_eq!(touch_user(10).await, Ok(10));
        assert!(!server.exists("rc-inv-exact:user:10"));
        assert!(server.exists("rc-inv-exact:user:1"));
        assert!(server.exists("rc-inv-exact:user:10:posts:page:1"));

        // A plain (non-Result) write function always invalidates.
        assert!(delete_post(11, 2).await);
        assert!(!server.exists("rc-inv-exact:user:11:posts:page:2"));
        assert!(server.exists("rc-inv-exact:user:11:posts:page:1"));
        assert!(server.exists("rc-inv-exact:user:11:posts:page:3"));

        // The typed companion.
        get_user_invalidate(&1).await;
        assert!(!server.exists("rc-inv-exact:user:1"));
        assert!(server.exists("rc-inv-exact:user:11"));
        let calls = db.calls();
        assert_eq!(get_user(&db, 1).await, Ok(user(1)));
        assert_eq!(db.calls(), calls + 1);
        // Invalidating a key that is not there is fine.
        get_user_invalidate(&999).await;
        assert_eq!(cache.stats().invalidation_failures, 0);
    })
    .await;
}

#[tokio::test]
async fn write_through_stores_own_result_and_invalidates_the_rest() {
    let server = RedisServer::start();
    let cache = redis_cache(&server, "rc-wt").await;
    let db = Db::default();
    Cache::scope(cache.clone(), async {
        fill(&db).await;
        assert_eq!(get_profile(&db, 1).await, Ok(user(1)));
        let calls = db.calls();

        let saved = save_profile(&db, 1, "renamed".into()).await.unwrap();
        assert_eq!(saved.name, "renamed");
        assert_eq!(db.calls(), calls + 1, "the write-through body always runs");
        let raw = server.get("rc-wt:profile:1").expect("own result stored");
        assert_eq!(serde_json::from_str::<User>(&raw).unwrap(), saved);
        let pttl = server.pttl("rc-wt:profile:1");
        assert!(pttl > 0 && pttl <= 60_000, "{pttl}");
        let mut expected = keys_of("rc-wt", &[10, 11]);
        expected.push("rc-wt:profile:1".into());
        expected.sort();
        assert_eq!(server.keys(), expected, "user 1's entries are gone");

        // The reader of the same key now gets the written-through value.
        assert_eq!(get_profile(&db, 1).await, Ok(saved.clone()));
        assert_eq!(db.calls(), calls + 1);

        // A second write-through runs again and replaces the value.
        let again = save_profile(&db, 1, "again".into()).await.unwrap();
        assert_eq!(get_profile(&db, 1).await, Ok(again));

        // A failing write-through stores nothing and invalidates nothing.
        fill(&db).await;
        let keys = server.keys();
        db.fail(true);
        assert!(save_profile(&db, 1, "nope".into()).await.is_err());
        assert_eq!(server.keys(), keys);
        assert_eq!(
            serde_json::from_str::<User>(&server.get("rc-wt:profile:1").unwrap())
                .unwrap()
                .name,
            "again"
        );
    })
    .await;
}

#[tokio::test]
async fn write_through_of_none_removes_the_own_entry() {
    let server = RedisServer::start();
    let cache = redis_cache(&server, "rc-wt-opt").await;
    let db = Db::default();
    Cache::scope(cache.clone(), async {
        get_user(&db, 5).await.unwrap();
        assert_eq!(put_slot(5, Some(50)).await, Some(50));
        assert_eq!(server.get("rc-wt-opt:slot:5").as_deref(), Some("50"));
        assert!(!server.exists("rc-wt-opt:user:5"), "listed entry removed");

        get_user(&db, 5).await.unwrap();
        assert_eq!(put_slot(5, None).await, None);
        assert!(
            !server.exists("rc-wt-opt:slot:5"),
            "a None that is not stored removes the old value"
        );
        assert!(!server.exists("rc-wt-opt:user:5"));
    })
    .await;
}

#[tokio::test]
async fn write_through_result_survives_its_own_pattern() {
    let server = RedisServer::start();
    let cache = redis_cache(&server, "rc-wt-own").await;
    let db = Db::default();
    Cache::scope(cache.clone(), async {
        fill(&db).await;
        server.cli(&["SET", "rc-wt-own:user:1:summary", r#""stale""#]);
        assert_eq!(refresh_summary(&db, 1).await, "summary of 1");
        assert_eq!(
            server.get("rc-wt-own:user:1:summary").as_deref(),
            Some(r#""summary of 1""#),
            "the fresh result is stored after the invalidation"
        );
        let mut expected = keys_of("rc-wt-own", &[10, 11]);
        expected.push("rc-wt-own:user:1".into());
        expected.push("rc-wt-own:user:1:summary".into());
        expected.sort();
        assert_eq!(server.keys(), expected, "user 1's pages are gone");
    })
    .await;
}

#[tokio::test]
async fn garbage_under_a_key_is_a_miss_and_is_overwritten() {
    let server = RedisServer::start();
    let cache = redis_cache(&server, "rc-garbage").await;
    let db = Db::default();
    Cache::scope(cache.clone(), async {
        let cases: [(u64, &[&str]); 5] = [
            (1, &["SET", "rc-garbage:user:1", "notjson"]),
            (2, &["RPUSH", "rc-garbage:user:2", "x"]),
            (3, &["SET", "rc-garbage:user:3", r#""a string""#]),
            (4, &["SET", "rc-garbage:user:4", r#"{"id":4}"#]),
            (5, &["HSET", "rc-garbage:user:5", "id", "5"]),
        ];
        for (i, (id, command)) in cases.iter().enumerate() {
            let key = get_user_key(id);
            server.cli(command);
            assert!(server.exists(&key));
            let decode_errors = cache.stats().decode_errors;
            assert_eq!(get_user(&db, *id).await, Ok(user(*id)), "{command:?}");
            assert_eq!(db.calls(), i as u32 + 1, "{command:?}: the body ran");
            assert_eq!(
                cache.stats().decode_errors,
                decode_errors + 1,
                "{command:?}: counted as a decode error"
            );
            assert_eq!(server.cli(&["TYPE", &key]), "string", "{command:?}");
            let raw = server.get(&key).unwrap();
            assert_eq!(
                serde_json::from_str::<User>(&raw).ok(),
                Some(user(*id)),
                "{command:?}: overwritten with valid JSON"
            );
            let pttl = server.pttl(&key);
            assert!(pttl > 0 && pttl <= 60_000, "{command:?}: TTL set: {pttl}");
            assert_eq!(get_user(&db, *id).await, Ok(user(*id)));
            assert_eq!(db.calls(), i as u32 + 1, "{command:?}: now a hit");
        }
        let stats = cache.stats();
        assert_eq!(stats.store_errors, 0);
        assert_eq!(stats.hits, 5);
    })
    .await;
}

#[tokio::test]
async fn pattern_invalidation_scans_the_whole_keyspace_in_steps() {
    let server = RedisServer::start();
    let cache = server
        .builder()
        .namespace("rc-scan")
        .scan_count(100)
        .build()
        .await
        .unwrap();
    // 2,000 pages of user 1 and 300 of user 11, written straight into Redis.
    let mut pages = Vec::new();
    for (user, count) in [(1, 2_000), (11, 300)] {
        for page in 0..count {
            pages.push((format!("rc-scan:user:{user}:posts:page:{page}"), r#"["x"]"#));
        }
    }
    server.set_many(pages).await;
    let db = Db::default();
    Cache::scope(cache.clone(), async {
        assert_eq!(user_posts(&db, 1, 1999).await, vec!["x".to_owned()]);
        assert_eq!(db.calls(), 0, "entries written by another client are hits");
        update_user(&db, 1).await.unwrap();
    })
    .await;
    assert_eq!(
        server.dbsize(),
        300,
        "every page of user 1 is gone, user 11's stay"
    );
    let left = server.keys();
    assert!(
        left.iter()
            .all(|k| k.starts_with("rc-scan:user:11:posts:page:")),
        "{:?}",
        &left[..5]
    );
    assert!(
        server.command_calls("scan") >= 10,
        "SCAN in steps of COUNT 100, never KEYS"
    );
    assert_eq!(server.command_calls("keys"), 0);
    assert_eq!(cache.stats().invalidation_failures, 0);
}
