//! `#[async_trait]` impls, used through `Arc<dyn Trait>`: a bare `#[cached]`
//! on the impl block, above `#[async_trait]`, expands the methods first.
#![deny(warnings)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering::SeqCst};

use async_trait::async_trait;
use cache_runtime::{Cache, cached};

static LOADS: AtomicU32 = AtomicU32::new(0);

#[async_trait]
trait UserStore: Send + Sync {
    async fn get_user(&self, id: u64) -> Result<String, String>;
    async fn rename(&self, id: u64, name: &str) -> Result<(), String>;
}

struct PgStore {
    suffix: String,
}

#[cached]
#[async_trait]
impl UserStore for PgStore {
    #[cached(prefix = "user", id = "id")]
    async fn get_user(&self, id: u64) -> Result<String, String> {
        LOADS.fetch_add(1, SeqCst);
        Ok(format!("user{id}{}", self.suffix))
    }

    #[cached(invalidate = [PgStore::get_user(id)])]
    async fn rename(&self, id: u64, name: &str) -> Result<(), String> {
        let _ = name;
        Ok(())
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let cache = Cache::builder().build().await.unwrap();
    Cache::scope(cache, async {
        let store: Arc<dyn UserStore> = Arc::new(PgStore { suffix: "!".into() });
        assert_eq!(store.get_user(1).await.unwrap(), "user1!");
        assert_eq!(store.get_user(1).await.unwrap(), "user1!");
        assert_eq!(LOADS.load(SeqCst), 1, "the second call is a hit");
        store.rename(1, "ann").await.unwrap();
        assert_eq!(store.get_user(1).await.unwrap(), "user1!");
        assert_eq!(LOADS.load(SeqCst), 2, "the typed invalidation removed it");
        assert_eq!(PgStore::get_user_key(&1), "cache:user:1");
        // The futures stay `Send` (spawned on a multi-thread runtime in
        // services).
        fn is_send<T: Send>(_: &T) {}
        is_send(&store.get_user(2));
    })
    .await;
}
