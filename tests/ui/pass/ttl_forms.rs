//! Every accepted `ttl` form.
#![deny(warnings)]

use cache_runtime::{Cache, cached};

#[cached(prefix = "a", id = "id", ttl = 90)]
async fn seconds(id: u32) -> u32 {
    id
}

#[cached(prefix = "b", id = "id", ttl = "500ms")]
async fn millis(id: u32) -> u32 {
    id
}

#[cached(prefix = "c", id = "id", ttl = "90s")]
async fn secs_text(id: u32) -> u32 {
    id
}

#[cached(prefix = "d", id = "id", ttl = "5m")]
async fn minutes(id: u32) -> u32 {
    id
}

#[cached(prefix = "e", id = "id", ttl = "1h")]
async fn hours(id: u32) -> u32 {
    id
}

#[cached(prefix = "f", id = "id", ttl = "1d")]
async fn days(id: u32) -> u32 {
    id
}

#[cached(prefix = "g", id = "id")]
async fn default_ttl(id: u32) -> u32 {
    id
}

/// The environment's grammar (`CACHE_DEFAULT_TTL=1h30m`) works here too.
#[cached(prefix = "h", id = "id", ttl = "1h30m")]
async fn compound(id: u32) -> u32 {
    id
}

#[cached(prefix = "i", id = "id", ttl = "10min")]
async fn long_unit(id: u32) -> u32 {
    id
}

/// Const paths and const expressions, in seconds.
const RATE_TTL_SECS: u64 = 120;
mod config {
    pub const TTL: u64 = 30;
}

#[cached(prefix = "j", id = "id", ttl = RATE_TTL_SECS, stale_if_error = 10 * 60)]
async fn const_path(id: u32) -> u32 {
    id
}

#[cached(prefix = "k", id = "id", ttl = 10 * 60, lease_ttl = config::TTL / 3)]
async fn const_expr(id: u32) -> u32 {
    id
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let cache = Cache::builder().build().await.unwrap();
    Cache::scope(cache.clone(), async {
        for _ in 0..2 {
            assert_eq!(seconds(1).await, 1);
            assert_eq!(millis(2).await, 2);
            assert_eq!(secs_text(3).await, 3);
            assert_eq!(minutes(4).await, 4);
            assert_eq!(hours(5).await, 5);
            assert_eq!(days(6).await, 6);
            assert_eq!(default_ttl(7).await, 7);
            assert_eq!(compound(8).await, 8);
            assert_eq!(long_unit(9).await, 9);
            assert_eq!(const_path(10).await, 10);
            assert_eq!(const_expr(11).await, 11);
        }
    })
    .await;
    assert_eq!(cache.stats().hits, 11);
}
