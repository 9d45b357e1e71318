//! A read function returning `Result`: `Ok` is stored, `Err` is not.
#![deny(warnings)]

use std::sync::atomic::{AtomicU32, Ordering::SeqCst};

use cache_runtime::{Cache, cached};
use serde::{Deserialize, Serialize};

static CALLS: AtomicU32 = AtomicU32::new(0);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct User {
    id: u64,
    name: String,
}

struct Db;

#[cached(prefix = "user", id = "user_id", ttl = 1800, skip = [db])]
async fn get_user(db: &Db, user_id: u64) -> Result<User, String> {
    let _ = db;
    CALLS.fetch_add(1, SeqCst);
    if user_id == 0 {
        return Err("no user 0".to_owned());
    }
    Ok(User {
        id: user_id,
        name: format!("user{user_id}"),
    })
}

// A one-parameter `Result` alias: only the `Ok` type is stored, so the
// error type need not be serializable.
#[cached(prefix = "len", id = "path")]
async fn file_len(path: &str) -> std::io::Result<u64> {
    if path.is_empty() {
        return Err(std::io::Error::other("empty path"));
    }
    Ok(path.len() as u64)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    assert_eq!(get_user_key(&42), "cache:user:42");
    let cache = Cache::builder().build().await.unwrap();
    Cache::scope(cache.clone(), async {
        let db = Db;
        let first = get_user(&db, 42).await.unwrap();
        let second = get_user(&db, 42).await.unwrap();
        assert_eq!(first, second);
        assert_eq!(CALLS.load(SeqCst), 1, "the second call is a hit");

        assert!(get_user(&db, 0).await.is_err());
        assert!(get_user(&db, 0).await.is_err());
        assert_eq!(CALLS.load(SeqCst), 3, "`Err` is never stored");

        get_user_invalidate(&42).await;
        get_user(&db, 42).await.unwrap();
        assert_eq!(CALLS.load(SeqCst), 4, "invalidated: the body runs again");
    })
    .await;
    let stats = cache.stats();
    assert_eq!(stats.hits, 1);
    assert_eq!(stats.stores, 2);

    Cache::scope(cache.clone(), async {
        assert_eq!(file_len("abc").await.unwrap(), 3);
        assert_eq!(file_len("abc").await.unwrap(), 3);
        assert!(file_len("").await.is_err());
    })
    .await;
    assert_eq!(cache.stats().hits, 2);
}
