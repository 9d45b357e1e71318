//! Typed invalidations with literal and field arguments, of generic
//! functions, and of a generic type's method named by path from a free
//! function.
#![deny(warnings)]

use std::fmt::Display;
use std::sync::atomic::{AtomicU32, Ordering::SeqCst};

use cache_runtime::{Cache, cached};

static CALLS: AtomicU32 = AtomicU32::new(0);

#[cached(prefix = "g", id = "id")]
async fn generic<T: Display>(id: T) -> String {
    CALLS.fetch_add(1, SeqCst);
    id.to_string()
}

#[cached(prefix = "lit", id = "id")]
async fn fixed(id: u64) -> u64 {
    CALLS.fetch_add(1, SeqCst);
    id
}

struct Repo<T> {
    tag: T,
}

#[cached]
impl<T: Display + Send + Sync> Repo<T> {
    #[cached(prefix = "repo", id = "id")]
    async fn get(&self, id: u64) -> String {
        CALLS.fetch_add(1, SeqCst);
        format!("{}{id}", self.tag)
    }
}

struct Event {
    user_id: u64,
}

#[cached(invalidate = [generic(event.user_id), fixed(42), Repo::<u8>::get(event.user_id)])]
async fn apply(event: &Event) -> Result<(), String> {
    let _ = event.user_id;
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    assert_eq!(Repo::<u8>::get_key(&5), "cache:repo:5");
    let repo = Repo { tag: 1u8 };
    let cache = Cache::builder().build().await.unwrap();
    Cache::scope(cache.clone(), async {
        generic(5u64).await;
        fixed(42).await;
        repo.get(5).await;
        assert_eq!(CALLS.load(SeqCst), 3);
        generic(5u64).await;
        fixed(42).await;
        repo.get(5).await;
        assert_eq!(CALLS.load(SeqCst), 3, "all hits");

        apply(&Event { user_id: 5 }).await.unwrap();
        generic(5u64).await;
        fixed(42).await;
        repo.get(5).await;
        assert_eq!(CALLS.load(SeqCst), 6, "all three were invalidated");
    })
    .await;
    assert_eq!(cache.stats().invalidations, 3);
}
