//! `crate = "..."`: the path to the runtime, for crates that re-export it.
#![deny(warnings)]

use cache_runtime::{Cache, cached};

mod reexport {
    pub use cache_runtime as runtime;
}

#[cached(prefix = "a", id = "id", crate = "::cache_runtime")]
async fn absolute(id: u64) -> u64 {
    id
}

#[cached(prefix = "b", id = "id", crate = "crate::reexport::runtime")]
async fn reexported(id: u64) -> u64 {
    id
}

#[cached(invalidate = [absolute(id), reexported(id)], crate = "crate::reexport::runtime")]
async fn drop_both(id: u64) -> Result<(), ()> {
    let _ = id;
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    assert_eq!(absolute_key(&1), "cache:a:1");
    assert_eq!(reexported_key(&1), "cache:b:1");
    let cache = Cache::builder().build().await.unwrap();
    Cache::scope(cache.clone(), async {
        assert_eq!(absolute(1).await, 1);
        assert_eq!(reexported(1).await, 1);
        drop_both(1).await.unwrap();
    })
    .await;
    assert_eq!(cache.stats().invalidations, 2);
}
