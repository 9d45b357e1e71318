//! A bare `#[cached]` keys on the function's name and all its non-skipped
//! parameters, in order; a `_` parameter can not change the result.
#![deny(warnings)]

use std::sync::atomic::{AtomicU32, Ordering::SeqCst};

use cache_runtime::{Cache, cached};

static CALLS: AtomicU32 = AtomicU32::new(0);

#[cached]
async fn add(a: i64, b: i64) -> i64 {
    CALLS.fetch_add(1, SeqCst);
    a + b
}

#[cached(skip = [verbose])]
async fn greet(name: String, verbose: bool) -> String {
    if verbose {
        format!("hello, {name}!")
    } else {
        format!("hi {name}")
    }
}

#[cached]
async fn version() -> String {
    "1.0".to_owned()
}

#[cached]
async fn ignore_first(_: &str, id: u64) -> u64 {
    id
}

#[cached(id = "id", ttl = 60)]
async fn by_id(id: u64) -> u64 {
    id
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    assert_eq!(add_key(&1, &2), "cache:add:1:2");
    assert_eq!(add_key(&-1, &2), "cache:add:-1:2");
    // The companion borrows the parameter type: `&String` for `String`.
    assert_eq!(greet_key(&"ann".to_owned()), "cache:greet:ann");
    assert_eq!(version_key(), "cache:version");
    assert_eq!(ignore_first_key(&9), "cache:ignore_first:9");
    assert_eq!(by_id_key(&9), "cache:by_id:9");

    let cache = Cache::builder().build().await.unwrap();
    Cache::scope(cache, async {
        assert_eq!(add(1, 2).await, 3);
        assert_eq!(add(1, 2).await, 3);
        assert_eq!(add(2, 1).await, 3);
        assert_eq!(CALLS.load(SeqCst), 2);
        assert_eq!(greet("ann".to_owned(), true).await, "hello, ann!");
        // `verbose` is skipped: the stored value is returned.
        assert_eq!(greet("ann".to_owned(), false).await, "hello, ann!");
        assert_eq!(version().await, "1.0");
        assert_eq!(ignore_first("x", 9).await, 9);
        assert_eq!(by_id(9).await, 9);
    })
    .await;
}
