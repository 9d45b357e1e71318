//! `Option` returns: `None` is stored only with `cache_none = true`.
#![deny(warnings)]

use std::sync::atomic::{AtomicU32, Ordering::SeqCst};

use cache_runtime::{Cache, cached};

static PLAIN_CALLS: AtomicU32 = AtomicU32::new(0);
static NONE_CALLS: AtomicU32 = AtomicU32::new(0);

#[cached(prefix = "email", id = "user_id")]
async fn find_email(user_id: u64) -> Option<String> {
    PLAIN_CALLS.fetch_add(1, SeqCst);
    (user_id != 0).then(|| format!("{user_id}@example.com"))
}

#[cached(prefix = "phone", id = "user_id", cache_none = true)]
async fn find_phone(user_id: u64) -> Option<String> {
    NONE_CALLS.fetch_add(1, SeqCst);
    (user_id != 0).then(|| format!("+1-{user_id}"))
}

#[cached(prefix = "fax", id = "user_id", cache_none = false)]
async fn find_fax(user_id: u64) -> Option<u64> {
    Some(user_id)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let cache = Cache::builder().build().await.unwrap();
    Cache::scope(cache, async {
        assert_eq!(find_email(7).await.as_deref(), Some("7@example.com"));
        assert_eq!(find_email(7).await.as_deref(), Some("7@example.com"));
        assert_eq!(PLAIN_CALLS.load(SeqCst), 1, "`Some` is stored");
        assert_eq!(find_email(0).await, None);
        assert_eq!(find_email(0).await, None);
        assert_eq!(
            PLAIN_CALLS.load(SeqCst),
            3,
            "`None` is not stored by default"
        );

        assert_eq!(find_phone(0).await, None);
        assert_eq!(find_phone(0).await, None);
        assert_eq!(
            NONE_CALLS.load(SeqCst),
            1,
            "`cache_none = true` stores `None`"
        );
        assert_eq!(find_phone(3).await.as_deref(), Some("+1-3"));
        assert_eq!(find_phone(3).await.as_deref(), Some("+1-3"));
        assert_eq!(NONE_CALLS.load(SeqCst), 2);

        assert_eq!(find_fax(5).await, Some(5));
        assert_eq!(find_phone_key(&3), "cache:phone:3");
    })
    .await;
}
