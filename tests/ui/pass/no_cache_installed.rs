//! With no cache installed or scoped, functions run their bodies (no panic)
//! and the `key` companion uses the default namespace.
#![deny(warnings)]

use std::sync::atomic::{AtomicU32, Ordering::SeqCst};

use cache_runtime::cached;

static CALLS: AtomicU32 = AtomicU32::new(0);

#[cached(prefix = "user", id = "user_id")]
async fn get_user(user_id: u64) -> u64 {
    CALLS.fetch_add(1, SeqCst);
    user_id
}

#[cached(invalidate = [get_user(user_id)])]
async fn update_user(user_id: u64) -> Result<(), String> {
    let _ = user_id;
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    assert_eq!(get_user(1).await, 1);
    assert_eq!(get_user(1).await, 1);
    assert_eq!(CALLS.load(SeqCst), 2);
    update_user(1).await.unwrap();
    get_user_invalidate(&1).await;
    assert_eq!(get_user_key(&1), "cache:user:1");
}
