//! `#[tracing::instrument]` below `#[cached]` wraps the whole call: its span
//! is entered on hits as well as misses (tests/spans.rs checks it at run time).
#![deny(warnings)]

use cache_runtime::{Cache, cached};

#[cached(prefix = "user", id = "user_id")]
#[tracing::instrument(level = "info")]
async fn get_user(user_id: u64) -> Result<u64, String> {
    Ok(user_id)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let cache = Cache::builder().build().await.unwrap();
    Cache::scope(cache, async {
        assert_eq!(get_user(1).await, Ok(1));
        assert_eq!(get_user(1).await, Ok(1));
    })
    .await;
}
