//! A `pub` function's companions are usable from other modules, and typed
//! invalidations may name a function by path.
#![deny(warnings)]

use std::sync::atomic::{AtomicU32, Ordering::SeqCst};

use cache_runtime::{Cache, cached};

static CALLS: AtomicU32 = AtomicU32::new(0);

mod users {
    use super::*;

    /// Loads a user.
    #[cached(prefix = "user", id = "user_id")]
    pub async fn get_user(user_id: u64) -> Result<String, String> {
        CALLS.fetch_add(1, SeqCst);
        Ok(format!("user{user_id}"))
    }

    #[cached(prefix = "nick", id = "user_id")]
    pub(crate) async fn nickname(user_id: u64) -> String {
        format!("nick{user_id}")
    }
}

mod admin {
    use cache_runtime::cached;

    #[cached(invalidate = [crate::users::get_user(user_id), super::users::nickname(user_id)])]
    pub async fn ban(user_id: u64) -> Result<(), String> {
        let _ = user_id;
        Ok(())
    }

    pub fn user_key(user_id: u64) -> String {
        crate::users::get_user_key(&user_id)
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    assert_eq!(users::get_user_key(&42), "cache:user:42");
    assert_eq!(admin::user_key(42), "cache:user:42");
    assert_eq!(users::nickname_key(&42), "cache:nick:42");

    let cache = Cache::builder().build().await.unwrap();
    Cache::scope(cache, async {
        users::get_user(42).await.unwrap();
        users::get_user(42).await.unwrap();
        assert_eq!(CALLS.load(SeqCst), 1);
        admin::ban(42).await.unwrap();
        users::get_user(42).await.unwrap();
        assert_eq!(CALLS.load(SeqCst), 2);
        users::get_user_invalidate(&42).await;
        users::get_user(42).await.unwrap();
        assert_eq!(CALLS.load(SeqCst), 3);
        assert_eq!(users::nickname(42).await, "nick42");
    })
    .await;
}
