//! Write functions: always run; after success they invalidate typed
//! references, exact templates and pattern templates; after a failure, nothing.
#![deny(warnings)]

use std::sync::atomic::{AtomicU32, Ordering::SeqCst};

use cache_runtime::{Cache, cached};

static USER_CALLS: AtomicU32 = AtomicU32::new(0);
static POST_CALLS: AtomicU32 = AtomicU32::new(0);
static WRITES: AtomicU32 = AtomicU32::new(0);

#[cached(prefix = "user", id = "user_id")]
async fn get_user(user_id: u64) -> Result<String, String> {
    USER_CALLS.fetch_add(1, SeqCst);
    Ok(format!("user{user_id}"))
}

#[cached(prefix = "user:{user_id}:posts:page:{page}")]
async fn user_posts(user_id: u64, page: u32) -> Vec<u32> {
    POST_CALLS.fetch_add(1, SeqCst);
    vec![page]
}

// Typed reference and pattern template.
#[cached(invalidate = [get_user(user_id), "user:{user_id}:posts:*"])]
async fn update_user(user_id: u64, fail: bool) -> Result<(), String> {
    WRITES.fetch_add(1, SeqCst);
    if fail {
        return Err(format!("can not update {user_id}"));
    }
    Ok(())
}

// Exact template, plain return type.
#[cached(invalidate = ["user:{user_id}:posts:page:{page}"])]
async fn edit_page(user_id: u64, page: u32) -> bool {
    WRITES.fetch_add(1, SeqCst);
    let _ = (user_id, page);
    true
}

// A write function may return `()`.
#[cached(invalidate = [get_user(user_id)])]
async fn touch(user_id: u64) {
    WRITES.fetch_add(1, SeqCst);
    let _ = user_id;
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let cache = Cache::builder().build().await.unwrap();
    Cache::scope(cache, async {
        get_user(1).await.unwrap();
        user_posts(1, 1).await;
        user_posts(1, 2).await;
        user_posts(11, 1).await;
        assert_eq!((USER_CALLS.load(SeqCst), POST_CALLS.load(SeqCst)), (1, 3));

        // A failed write invalidates nothing.
        update_user(1, true).await.unwrap_err();
        get_user(1).await.unwrap();
        user_posts(1, 1).await;
        assert_eq!((USER_CALLS.load(SeqCst), POST_CALLS.load(SeqCst)), (1, 3));

        // A successful one removes get_user(1) and user 1's pages, not user 11's.
        update_user(1, false).await.unwrap();
        get_user(1).await.unwrap();
        user_posts(1, 1).await;
        user_posts(1, 2).await;
        user_posts(11, 1).await;
        assert_eq!((USER_CALLS.load(SeqCst), POST_CALLS.load(SeqCst)), (2, 5));

        // The exact template removes one page.
        assert!(edit_page(1, 2).await);
        user_posts(1, 1).await;
        user_posts(1, 2).await;
        assert_eq!(POST_CALLS.load(SeqCst), 6);

        touch(1).await;
        get_user(1).await.unwrap();
        assert_eq!(USER_CALLS.load(SeqCst), 3);
        assert_eq!(WRITES.load(SeqCst), 4);
    })
    .await;
}
