//! Nothing installed and no scope: `#[cached]` functions run their bodies and
//! nothing panics. No test in this binary installs a cache (installation is
//! process-wide), so this is its own test binary.

use std::sync::atomic::{AtomicU32, Ordering};

use cache_runtime::{Cache, cached};

#[cached(prefix = "user", id = "user_id", ttl = 60, skip = [runs])]
async fn get_user(runs: &AtomicU32, user_id: u64) -> Result<String, String> {
    runs.fetch_add(1, Ordering::SeqCst);
    Ok(format!("user-{user_id}"))
}

#[cached(prefix = "maybe", id = "n", ttl = 60, skip = [runs], cache_none = true)]
async fn maybe(runs: &AtomicU32, n: u64) -> Option<u64> {
    runs.fetch_add(1, Ordering::SeqCst);
    (n > 0).then_some(n)
}

#[cached(invalidate = [get_user(user_id), "user:{user_id}:*"])]
async fn update_user(runs: &AtomicU32, user_id: u64) -> Result<u64, String> {
    runs.fetch_add(1, Ordering::SeqCst);
    Ok(user_id)
}

#[cached(prefix = "profile", id = "user_id", ttl = 60, skip = [runs], invalidate = [get_user(user_id)])]
async fn save_profile(runs: &AtomicU32, user_id: u64) -> Result<u64, String> {
    runs.fetch_add(1, Ordering::SeqCst);
    Ok(user_id)
}

#[tokio::test]
async fn without_a_cache_every_call_runs_its_body() {
    assert!(
        Cache::current().is_none(),
        "nothing is installed in this binary"
    );
    let runs = AtomicU32::new(0);
    for _ in 0..3 {
        assert_eq!(get_user(&runs, 7).await, Ok("user-7".into()));
    }
    assert_eq!(runs.load(Ordering::SeqCst), 3);
    assert_eq!(maybe(&runs, 0).await, None);
    assert_eq!(maybe(&runs, 0).await, None);
    assert_eq!(maybe(&runs, 2).await, Some(2));
    assert_eq!(runs.load(Ordering::SeqCst), 6);
    assert_eq!(update_user(&runs, 7).await, Ok(7));
    assert_eq!(save_profile(&runs, 7).await, Ok(7));
    assert_eq!(runs.load(Ordering::SeqCst), 8);
    // Companions work too: the key in the default namespace, a no-op invalidation.
    assert_eq!(get_user_key(&7), "cache:user:7");
    get_user_invalidate(&7).await;
    // And from a spawned task, on another thread.
    let handle = tokio::spawn(async {
        let runs = AtomicU32::new(0);
        get_user(&runs, 1).await.unwrap();
        get_user(&runs, 1).await.unwrap();
        runs.load(Ordering::SeqCst)
    });
    assert_eq!(handle.await.unwrap(), 2);
}
