//! Write-through (`prefix` and `invalidate`): the body always runs, its
//! result is stored under its own key and the listed entries are invalidated.
#![deny(warnings)]

use std::sync::atomic::{AtomicU32, Ordering::SeqCst};

use cache_runtime::{Cache, cached};
use serde::{Deserialize, Serialize};

static READS: AtomicU32 = AtomicU32::new(0);
static LIST_READS: AtomicU32 = AtomicU32::new(0);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct User {
    id: u64,
    name: String,
}

#[cached(prefix = "user", id = "user_id")]
async fn get_user(user_id: u64) -> Result<User, String> {
    READS.fetch_add(1, SeqCst);
    Ok(User {
        id: user_id,
        name: "old".to_owned(),
    })
}

#[cached(prefix = "users")]
async fn list_users() -> Vec<u64> {
    LIST_READS.fetch_add(1, SeqCst);
    vec![1]
}

// Stores under get_user's key ("user:{user_id}"), so the next read is a
// hit with the new value; invalidates the list. `name` is data, not key.
#[cached(prefix = "user", id = "user_id", ttl = "1h", skip = [name], invalidate = [list_users()])]
async fn save_user(user_id: u64, name: String) -> Result<User, String> {
    Ok(User { id: user_id, name })
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    assert_eq!(save_user_key(&1), get_user_key(&1));
    let cache = Cache::builder().build().await.unwrap();
    Cache::scope(cache, async {
        assert_eq!(get_user(1).await.unwrap().name, "old");
        list_users().await;
        list_users().await;
        assert_eq!(LIST_READS.load(SeqCst), 1);

        save_user(1, "new".to_owned()).await.unwrap();
        assert_eq!(get_user(1).await.unwrap().name, "new");
        assert_eq!(READS.load(SeqCst), 1, "written through: a hit");
        list_users().await;
        assert_eq!(LIST_READS.load(SeqCst), 2, "the list was invalidated");
    })
    .await;
}
