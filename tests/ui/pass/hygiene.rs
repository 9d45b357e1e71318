//! Generated names never collide with the user's: parameters and neighbours
//! named like the expansion's own pieces, a module named like the function,
//! an inner attribute at the top of a body, and a `use` in the body that
//! shadows the return type's name.
#![deny(warnings)]

use cache_runtime::{Cache, cached};

/// Neighbours with the names the expansion uses.
#[allow(dead_code)]
fn key() {}
#[allow(dead_code)]
fn cache() {}
#[allow(dead_code)]
fn spec() {}
#[allow(dead_code)]
fn call() {}
#[allow(dead_code)]
fn body() {}
#[allow(dead_code)]
fn store() {}
#[allow(dead_code)]
fn invalidate() {}
#[allow(dead_code)]
fn read() {}
#[allow(dead_code)]
struct Kind;
#[allow(dead_code)]
struct Spec;

/// A module named like the cached function.
mod pricing {
    pub const BASE: u64 = 100;
}

#[cached(prefix = "price", id = "key")]
async fn pricing(key: u64) -> u64 {
    pricing::BASE + key
}

#[allow(clippy::too_many_arguments)]
#[cached(prefix = "all:{key}:{cache}:{spec}:{call}:{body}:{value}:{tags}:{store}:{invalidate}")]
async fn named_like_us(
    key: u64,
    cache: u64,
    spec: u64,
    call: u64,
    body: u64,
    value: u64,
    tags: u64,
    store: u64,
    invalidate: u64,
) -> u64 {
    key + cache + spec + call + body + value + tags + store + invalidate
}

#[cached(invalidate = [pricing(key), "all:{key}:*"])]
async fn reprice(key: u64) -> Result<(), String> {
    let _ = key;
    Ok(())
}

#[cached(prefix = "inner", id = "id")]
async fn inner_attribute(id: u64) -> u64 {
    #![allow(unused_variables)]
    let unused = 1;
    id
}

#[derive(Clone, Copy)]
#[allow(dead_code)]
enum Answer {
    Yes,
    No,
    Result,
}

#[cached(prefix = "shadow", id = "id")]
async fn shadowing_use(id: u64) -> Result<u64, String> {
    #[allow(unused_imports)]
    use Answer::*;
    let _ = Yes;
    Ok(id)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let cache = Cache::builder().build().await.unwrap();
    Cache::scope(cache, async {
        assert_eq!(pricing(1).await, 101);
        assert_eq!(pricing_key(&1), "cache:price:1");
        assert_eq!(named_like_us(1, 2, 3, 4, 5, 6, 7, 8, 9).await, 45);
        assert_eq!(
            named_like_us_key(&1, &2, &3, &4, &5, &6, &7, &8, &9),
            "cache:all:1:2:3:4:5:6:7:8:9"
        );
        reprice(1).await.unwrap();
        assert_eq!(inner_attribute(2).await, 2);
        assert_eq!(shadowing_use(3).await, Ok(3));
        pricing_invalidate(&1).await;
    })
    .await;
}
