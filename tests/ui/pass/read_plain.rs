//! A plain return type (neither `Result` nor `Option`) is always stored.
#![deny(warnings)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering::SeqCst};

use cache_runtime::{Cache, cached};

static CALLS: AtomicU32 = AtomicU32::new(0);

#[cached(prefix = "user:{user_id}:posts:page:{page}", ttl = "5m")]
async fn user_posts(user_id: u64, page: u32) -> Vec<String> {
    CALLS.fetch_add(1, SeqCst);
    vec![format!("{user_id}/{page}")]
}

#[cached(prefix = "counts", id = "tag")]
async fn counts(tag: &str) -> BTreeMap<String, u64> {
    BTreeMap::from([(tag.to_owned(), 1)])
}

// `{{` and `}}` are literal braces (a Redis Cluster hash tag).
#[cached(prefix = "{{users}}:name", id = "id")]
async fn name(id: u64) -> String {
    format!("n{id}")
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    assert_eq!(user_posts_key(&7, &2), "cache:user:7:posts:page:2");
    // Interpolated values are escaped, literal template text is not.
    assert_eq!(counts_key("a:b*"), "cache:counts:a%3Ab%2A");
    assert_eq!(name_key(&1), "cache:{users}:name:1");

    let cache = Cache::builder().namespace("app").build().await.unwrap();
    Cache::scope(cache, async {
        assert_eq!(user_posts_key(&7, &2), "app:user:7:posts:page:2");
        assert_eq!(user_posts(7, 2).await, ["7/2"]);
        assert_eq!(user_posts(7, 2).await, ["7/2"]);
        assert_eq!(user_posts(7, 3).await, ["7/3"]);
        assert_eq!(CALLS.load(SeqCst), 2);
        assert_eq!(counts("x").await.get("x"), Some(&1));
        assert_eq!(name(1).await, "n1");
    })
    .await;
}
