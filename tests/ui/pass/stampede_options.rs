//! The per-function stampede options on read functions: `lease`,
//! `lease_ttl`, `early_refresh`, `stale_while_revalidate`, `stale_if_error`.
//! With a 60 s `ttl` an entry stays fresh, so the second call is a hit.
#![deny(warnings)]

use std::sync::atomic::{AtomicU32, Ordering::SeqCst};

use cache_runtime::{Cache, cached};

static CALLS: AtomicU32 = AtomicU32::new(0);

#[cached(
    prefix = "user",
    id = "user_id",
    ttl = 60,
    lease = true,
    lease_ttl = "5s",
    early_refresh = 1.5,
    stale_while_revalidate = "30s",
    stale_if_error = 300
)]
async fn get_user(user_id: u64) -> Result<String, String> {
    CALLS.fetch_add(1, SeqCst);
    Ok(format!("user{user_id}"))
}

// Every option off for this function: `0` turns the stale ones off.
#[cached(
    prefix = "flag",
    id = "name",
    ttl = "1m",
    lease = false,
    early_refresh = false,
    stale_while_revalidate = 0,
    stale_if_error = "0s"
)]
async fn flag(name: &str) -> Option<bool> {
    Some(name == "on")
}

struct Repo {
    calls: AtomicU32,
}

#[cached]
impl Repo {
    #[cached(
        prefix = "post",
        id = "post_id",
        ttl = "60s",
        lease_ttl = 2,
        early_refresh = true,
        stale_while_revalidate = 30,
        stale_if_error = "5m"
    )]
    async fn post(&self, post_id: u64) -> Vec<u64> {
        self.calls.fetch_add(1, SeqCst);
        vec![post_id, post_id + 1]
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let cache = Cache::builder().build().await.unwrap();
    let repo = Repo {
        calls: AtomicU32::new(0),
    };
    Cache::scope(cache.clone(), async {
        assert_eq!(get_user(7).await.unwrap(), "user7");
        assert_eq!(get_user(7).await.unwrap(), "user7");
        assert_eq!(CALLS.load(SeqCst), 1);
    })
    .await;
    assert_eq!(cache.stats().hits, 1);

    Cache::scope(cache.clone(), async {
        assert_eq!(flag("on").await, Some(true));
        assert_eq!(flag("on").await, Some(true));
    })
    .await;
    assert_eq!(cache.stats().hits, 2);

    Cache::scope(cache.clone(), async {
        assert_eq!(repo.post(3).await, [3, 4]);
        assert_eq!(repo.post(3).await, [3, 4]);
        assert_eq!(repo.calls.load(SeqCst), 1);
    })
    .await;
    assert_eq!(cache.stats().hits, 3);
}
