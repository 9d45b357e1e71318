//! Interpolated values are escaped: keys are injective, and no value can widen
//! a pattern invalidation, checked against what real Redis `SCAN MATCH` does.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

use cache_runtime::{Cache, cached};
use common::RedisServer;
use proptest::prelude::*;

/// Counts body executions per argument list.
#[derive(Default)]
struct Calls(Mutex<BTreeMap<String, u32>>);

impl Calls {
    fn ran(&self, what: String) {
        *self.0.lock().unwrap().entry(what).or_default() += 1;
    }
    fn of(&self, what: &str) -> u32 {
        self.0.lock().unwrap().get(what).copied().unwrap_or(0)
    }
    fn total(&self) -> u32 {
        self.0.lock().unwrap().values().sum()
    }
}

#[cached(prefix = "user", id = "user_id", ttl = 60, skip = [calls])]
async fn get_user(calls: &Calls, user_id: &str) -> String {
    calls.ran(format!("user {user_id}"));
    format!("user <{user_id}>")
}

#[cached(prefix = "user:{user_id}:posts:page:{page}", ttl = 60, skip = [calls])]
async fn user_posts(calls: &Calls, user_id: &str, page: u32) -> String {
    calls.ran(format!("posts {user_id} {page}"));
    format!("posts <{user_id}> {page}")
}

#[cached(invalidate = ["user:{user_id}:posts:*"])]
async fn clear_posts(user_id: &str) -> Result<(), String> {
    Ok(())
}

#[cached(prefix = "pair:{a}:{b}", ttl = 60, skip = [calls])]
async fn pair(calls: &Calls, a: &str, b: &str) -> String {
    calls.ran(format!("pair {a} {b}"));
    format!("<{a}>+<{b}>")
}

/// Bare: keyed on the function name and every parameter.
#[cached(ttl = 60, skip = [calls])]
async fn bare_pair(calls: &Calls, a: String, b: String) -> String {
    calls.ran(format!("bare {a} {b}"));
    format!("<{a}>+<{b}>")
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

async fn redis_cache(server: &RedisServer, namespace: &str) -> Cache {
    server
        .builder()
        .namespace(namespace)
        .build()
        .await
        .expect("build a Redis cache")
}

const TRICKY: &[&str] = &[
    "*", "a:b", "a", "b", "x", "[x]", "\\", "?", "ab", "a*", "a?", "[ab]", "%2A", "",
];

#[tokio::test]
async fn keys_escape_interpolated_values() {
    let server = RedisServer::start();
    let cache = redis_cache(&server, "ke").await;
    Cache::scope(cache, async {
        assert_eq!(get_user_key("42"), "ke:user:42");
        assert_eq!(get_user_key("a:b"), "ke:user:a%3Ab");
        assert_eq!(get_user_key("*"), "ke:user:%2A");
        assert_eq!(get_user_key("[x]"), "ke:user:%5Bx%5D");
        assert_eq!(get_user_key("\\"), "ke:user:%5C");
        assert_eq!(get_user_key("?"), "ke:user:%3F");
        assert_eq!(get_user_key("%2A"), "ke:user:%252A");
        assert_eq!(get_user_key("a b"), "ke:user:a%20b");
        assert_eq!(get_user_key("{tag}"), "ke:user:%7Btag%7D");
        assert_eq!(get_user_key("ann@example.com"), "ke:user:ann@example.com");
        assert_eq!(pair_key("a", "b:c"), "ke:pair:a:b%3Ac");
        assert_eq!(pair_key("a:b", "c"), "ke:pair:a%3Ab:c");
    })
    .await;
}

#[tokio::test]
async fn values_with_separators_do_not_collide() {
    let server = RedisServer::start();
    let cache = redis_cache(&server, "ke-collide").await;
    let calls = Calls::default();
    Cache::scope(cache, async {
        assert_eq!(pair(&calls, "a", "b:c").await, "<a>+<b:c>");
        assert_eq!(pair(&calls, "a:b", "c").await, "<a:b>+<c>");
        assert_eq!(pair(&calls, "a", "b:c").await, "<a>+<b:c>");
        assert_eq!(pair(&calls, "a:b", "c").await, "<a:b>+<c>");
        assert_eq!(calls.of("pair a b:c"), 1);
        assert_eq!(calls.of("pair a:b c"), 1);

        assert_eq!(
            bare_pair(&calls, "a".into(), "b:c".into()).await,
            "<a>+<b:c>"
        );
        assert_eq!(
            bare_pair(&calls, "a:b".into(), "c".into()).await,
            "<a:b>+<c>"
        );
        assert_eq!(
            bare_pair(&calls, "a:b".into(), "c".into()).await,
            "<a:b>+<c>"
        );
        assert_eq!(calls.of("bare a b:c") + calls.of("bare a:b c"), 2);

        // A user "a:b" and a user "a" whose posts page is "b" stay apart.
        assert_eq!(get_user(&calls, "a:b").await, "user <a:b>");
        assert_eq!(get_user(&calls, "a").await, "user <a>");
        assert_eq!(get_user(&calls, "a:b").await, "user <a:b>");
        assert_eq!(get_user(&calls, "a").await, "user <a>");
        assert_eq!(calls.of("user a:b"), 1);
        assert_eq!(calls.of("user a"), 1);

        let keys = server.keys();
        assert_eq!(keys.len(), 6, "{keys:?}");
        assert_eq!(
            keys.iter().collect::<BTreeSet<_>>().len(),
            6,
            "six distinct keys"
        );
    })
    .await;
}

#[tokio::test]
async fn a_value_can_not_widen_a_pattern_invalidation() {
    let server = RedisServer::start();
    let cache = redis_cache(&server, "ke-pat").await;
    let calls = Calls::default();
    Cache::scope(cache, async {
        for id in TRICKY {
            get_user(&calls, id).await;
            for page in 1..=2 {
                user_posts(&calls, id, page).await;
            }
        }
        let all = server.keys();
        assert_eq!(all.len(), TRICKY.len() * 3, "{all:?}");

        for target in ["*", "?", "[x]", "\\", "a", "a*", "[ab]", "%2A", ""] {
            let before: BTreeSet<String> = server.keys().into_iter().collect();
            clear_posts(target).await.unwrap();
            let after: BTreeSet<String> = server.keys().into_iter().collect();
            let removed: BTreeSet<String> = before.difference(&after).cloned().collect();
            let expected: BTreeSet<String> =
                (1..=2).map(|page| user_posts_key(target, &page)).collect();
            assert_eq!(
                removed, expected,
                "clearing the posts of {target:?} removes exactly its pages"
            );
        }
        // Users' own entries were never touched.
        for id in TRICKY {
            assert!(server.exists(&get_user_key(id)), "{id:?}");
        }
        let before = calls.total();
        for id in TRICKY {
            assert_eq!(get_user(&calls, id).await, format!("user <{id}>"));
        }
        assert_eq!(calls.total(), before);
    })
    .await;
}

#[tokio::test]
async fn long_values_are_hashed_stably_in_keys_and_patterns() {
    let server = RedisServer::start();
    let cache = server
        .builder()
        .namespace("ke-long")
        .max_key_part_len(40)
        .build()
        .await
        .unwrap();
    let calls = Calls::default();
    let long_a = "a".repeat(300);
    let long_b = format!("{}b", "a".repeat(299));
    Cache::scope(cache, async {
        let key = get_user_key(&long_a);
        assert!(key.starts_with("ke-long:user:#"), "{key}");
        assert_eq!(key.len(), "ke-long:user:#".len() + 32, "{key}");
        assert_eq!(key, get_user_key(&long_a), "stable");
        assert_ne!(key, get_user_key(&long_b));
        // Values just under the limit stay readable.
        assert_eq!(
            get_user_key(&"z".repeat(40)),
            format!("ke-long:user:{}", "z".repeat(40))
        );

        for id in [&long_a, &long_b] {
            get_user(&calls, id).await;
            get_user(&calls, id).await;
            user_posts(&calls, id, 1).await;
            user_posts(&calls, id, 2).await;
        }
        assert_eq!(calls.total(), 6, "each long id is cached under its own key");
        assert_eq!(server.keys().len(), 6);

        clear_posts(&long_a).await.unwrap();
        assert!(!server.exists(&user_posts_key(&long_a, &1)));
        assert!(!server.exists(&user_posts_key(&long_a, &2)));
        assert!(server.exists(&user_posts_key(&long_b, &1)));
        assert!(server.exists(&user_posts_key(&long_b, &2)));
        assert!(server.exists(&get_user_key(&long_a)));
    })
    .await;
}

/// Ids made of the bytes that mean something in keys and globs.
fn id_strategy() -> impl Strategy<Value = String> {
    const CHARS: &[char] = &[
        'a', 'b', '0', '1', ' ', '*', '?', '[', ']', '\\', ':', '{', '}', '%', '#', '^', '-', 'é',
    ];
    proptest::collection::vec(proptest::sample::select(CHARS), 0..6)
        .prop_map(|chars| chars.into_iter().collect())
}

fn proptest_config() -> ProptestConfig {
    ProptestConfig {
        cases: 64,
        // Do not write regression files into the source tree.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Stores entries for random ids in real Redis (and, for the caller's view,
/// in the memory store), clears one id's pages with a pattern template, and
/// checks that exactly that id's keys are gone. One server and runtime for
/// all cases (owned here, so the server is killed at the end); each case gets
/// a fresh namespace.
#[test]
fn pattern_invalidation_removes_exactly_one_ids_keys() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let server = RedisServer::start();
    let strategy = (
        proptest::collection::btree_set(id_strategy(), 1..6),
        any::<proptest::sample::Index>(),
    );
    let mut runner = proptest::test_runner::TestRunner::new(proptest_config());
    let result = runner.run(&strategy, |(ids, pick)| {
        let ids: Vec<String> = ids.into_iter().collect();
        let target = ids[pick.index(ids.len())].clone();
        let ns = format!("ke-prop{}", COUNTER.fetch_add(1, Ordering::Relaxed));
        runtime.block_on(check_pattern_case(&server, &ns, &ids, &target))
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

async fn check_pattern_case(
    server: &RedisServer,
    ns: &str,
    ids: &[String],
    target: &str,
) -> Result<(), TestCaseError> {
    let redis = redis_cache(server, ns).await;
    let memory = Cache::builder()
        .memory()
        .namespace(ns)
        .build()
        .await
        .unwrap();
    let ns_keys = || -> BTreeSet<String> {
        server
            .keys()
            .into_iter()
            .filter(|k| k.starts_with(&format!("{ns}:")))
            .collect()
    };
    for cache in [redis, memory] {
        // Redis, or a Redis Cluster under CACHE_TEST_TOPOLOGY=cluster.
        let is_redis = cache.store_kind() != cache_runtime::StoreKind::Memory;
        let calls = Calls::default();
        Cache::scope(cache.clone(), async {
            for id in ids {
                get_user(&calls, id).await;
                for page in 1..=2 {
                    prop_assert_eq!(
                        user_posts(&calls, id, page).await,
                        format!("posts <{id}> {page}")
                    );
                }
            }
            prop_assert_eq!(calls.total() as usize, ids.len() * 3);
            if is_redis {
                prop_assert_eq!(ns_keys().len(), ids.len() * 3);
            }

            clear_posts(target).await.unwrap();

            if is_redis {
                let mut expected: BTreeSet<String> = BTreeSet::new();
                for id in ids {
                    expected.insert(get_user_key(id));
                    if id != target {
                        expected.insert(user_posts_key(id, &1));
                        expected.insert(user_posts_key(id, &2));
                    }
                }
                prop_assert_eq!(ns_keys(), expected);
            }
            // From the caller's side: only the target's pages load again.
            let before = calls.total();
            for id in ids {
                get_user(&calls, id).await;
                for page in 1..=2 {
                    prop_assert_eq!(
                        user_posts(&calls, id, page).await,
                        format!("posts <{id}> {page}")
                    );
                }
            }
            prop_assert_eq!(calls.total(), before + 2);
            prop_assert_eq!(calls.of(&format!("posts {target} 1")), 2);
            Ok(())
        })
        .await?;
    }
    Ok(())
}

/// Key parts of common types (item 5 of the expansion issue): `Option`,
/// slices, `Vec`, enums, `bool` and filter structs need no newtype. A value
/// with `Display` is its text (as always); any other `Serialize` value is
/// its compact JSON; both percent-escaped.
mod key_parts {
    use cache_runtime::cached;
    use serde::Serialize;

    #[derive(Serialize)]
    #[serde(rename_all = "snake_case")]
    pub enum Status {
        Open,
        #[allow(dead_code)]
        Closed,
    }

    #[derive(Serialize)]
    pub struct Filter {
        pub status: Status,
        pub author: Option<String>,
    }

    #[cached(prefix = "page:{owner}:{page}", ttl = 60)]
    pub async fn page(owner: u64, page: Option<u32>) -> u32 {
        page.unwrap_or(1) + owner as u32
    }

    #[cached(prefix = "name", id = "name", ttl = 60)]
    pub async fn by_name(name: Option<&str>) -> usize {
        name.map_or(0, str::len)
    }

    #[cached(prefix = "many", id = "ids", ttl = 60)]
    pub async fn many(ids: &[u64]) -> u64 {
        ids.iter().sum()
    }

    #[cached(prefix = "names", id = "names", ttl = 60)]
    pub async fn names(names: Vec<String>) -> usize {
        names.len()
    }

    #[cached(prefix = "opt_names", id = "names", ttl = 60)]
    pub async fn opt_names(names: Vec<Option<String>>) -> usize {
        names.len()
    }

    #[cached(prefix = "nested", id = "lists", ttl = 60)]
    pub async fn nested(lists: Vec<Vec<String>>) -> usize {
        lists.len()
    }

    #[cached(prefix = "search:{filter}:{archived}", ttl = 60)]
    pub async fn search(filter: &Filter, archived: bool) -> u32 {
        u32::from(archived) + u32::from(matches!(filter.status, Status::Open))
    }
}

/// The keys another service rebuilds: `Display` text, or compact JSON,
/// then the escape of every value.
#[tokio::test]
async fn common_types_are_key_parts() {
    use key_parts::*;
    let server = RedisServer::start();
    let cache = redis_cache(&server, "kp").await;
    Cache::scope(cache, async {
        assert_eq!(page(1, Some(2)).await, 3);
        assert_eq!(page(1, None).await, 2);
        assert_eq!(page_key(&1, &Some(2)), "kp:page:1:2");
        assert_eq!(page_key(&1, &None), "kp:page:1:null");
        assert_eq!(by_name_key(&None), "kp:name:null");
        assert_eq!(by_name_key(&Some("")), "kp:name:\"\"");
        assert_eq!(by_name_key(&Some("null")), "kp:name:\"null\"");
        assert_eq!(many_key([1, 2].as_slice()), "kp:many:%5B1,2%5D");
        assert_eq!(names_key(&vec!["1,2".to_owned()]), "kp:names:%5B\"1,2\"%5D");
        assert_eq!(
            names_key(&vec!["1".into(), "2".into()]),
            "kp:names:%5B\"1\",\"2\"%5D"
        );
        let filter = Filter {
            status: Status::Open,
            author: None,
        };
        assert_eq!(
            search_key(&filter, &true),
            "kp:search:%7B\"status\"%3A\"open\",\"author\"%3Anull%7D:true"
        );
        // Stored under those keys, and hits on the second call.
        assert_eq!(many(&[1, 2]).await, 3);
        assert_eq!(search(&filter, true).await, 2);
        for key in [
            page_key(&1, &Some(2)),
            page_key(&1, &None),
            many_key([1, 2].as_slice()),
            search_key(&filter, &true),
        ] {
            assert!(server.exists(&key), "{key} not in Redis");
        }
    })
    .await;
}

/// Distinct values of one type never share a key part, whatever bytes their
/// strings hold: `None` vs `Some("")` vs `Some("null")`, `["1,2"]` vs
/// `["1", "2"]`, nested lists. (The companions build keys without a cache,
/// in the default namespace.)
#[test]
fn key_parts_are_injective() {
    let options = || proptest::collection::vec(proptest::option::of(id_strategy()), 0..4);
    let nested = || proptest::collection::vec(proptest::collection::vec(id_strategy(), 0..3), 0..3);
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 512,
        ..proptest_config()
    });
    runner
        .run(&(options(), options()), |(a, b)| {
            let (ka, kb) = (key_parts::opt_names_key(&a), key_parts::opt_names_key(&b));
            prop_assert_eq!(a == b, ka == kb, "{:?} {:?} -> {} {}", a, b, ka, kb);
            Ok(())
        })
        .unwrap();
    runner
        .run(&(nested(), nested()), |(a, b)| {
            let (ka, kb) = (key_parts::nested_key(&a), key_parts::nested_key(&b));
            prop_assert_eq!(a == b, ka == kb, "{:?} {:?} -> {} {}", a, b, ka, kb);
            Ok(())
        })
        .unwrap();
    // The pairs the issue names, and pairs random strings rarely hit.
    assert_ne!(
        key_parts::opt_names_key(&vec![None]),
        key_parts::opt_names_key(&vec![Some(String::new())])
    );
    assert_ne!(
        key_parts::nested_key(&vec![vec!["1,2".into()]]),
        key_parts::nested_key(&vec![vec!["1".into(), "2".into()]])
    );
    assert_ne!(
        key_parts::nested_key(&vec![]),
        key_parts::nested_key(&vec![vec![]])
    );
}
