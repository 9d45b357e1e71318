//! Trait-impl methods (native `async fn` in traits): `#[cached]` on the impl
//! block expands its `#[cached(..)]` methods and puts their companions in an
//! inherent impl of the type, where typed invalidations find them.
#![deny(warnings)]

use std::sync::atomic::{AtomicU32, Ordering::SeqCst};

use cache_runtime::{Cache, cached};

static LOADS: AtomicU32 = AtomicU32::new(0);

trait UserStore {
    async fn get_user(&self, id: u64) -> Result<String, String>;
    async fn rename(&self, id: u64, name: String) -> Result<(), String>;
    async fn count() -> u64;
}

struct PgStore;

#[cached]
impl UserStore for PgStore {
    #[cached(prefix = "user", id = "id")]
    async fn get_user(&self, id: u64) -> Result<String, String> {
        LOADS.fetch_add(1, SeqCst);
        Ok(format!("user{id}"))
    }

    #[cached(invalidate = [PgStore::get_user(id)])]
    async fn rename(&self, id: u64, name: String) -> Result<(), String> {
        let _ = name;
        Ok(())
    }

    #[cached(prefix = "count")]
    async fn count() -> u64 {
        3
    }
}

/// Generic over the trait, as handlers are.
async fn load<S: UserStore>(store: &S, id: u64) -> String {
    store.get_user(id).await.unwrap()
}

/// Not every method of the impl needs the attribute; methods without it are
/// left alone.
struct Plain;
#[cached]
impl Plain {
    #[cached(prefix = "plain", id = "id")]
    async fn plain(&self, id: u64) -> u64 {
        id
    }
    fn untouched(&self) -> u64 {
        7
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let cache = Cache::builder().build().await.unwrap();
    Cache::scope(cache, async {
        let store = PgStore;
        assert_eq!(load(&store, 1).await, "user1");
        assert_eq!(load(&store, 1).await, "user1");
        assert_eq!(LOADS.load(SeqCst), 1, "the second call is a hit");
        assert_eq!(PgStore::get_user_key(&1), "cache:user:1");
        store.rename(1, "ann".into()).await.unwrap();
        assert_eq!(load(&store, 1).await, "user1");
        assert_eq!(LOADS.load(SeqCst), 2, "the typed invalidation removed it");
        PgStore::get_user_invalidate(&1).await;
        assert_eq!(load(&store, 1).await, "user1");
        assert_eq!(LOADS.load(SeqCst), 3, "the companion removed it");
        assert_eq!(PgStore::count().await, 3);
        assert_eq!(PgStore::count_key(), "cache:count");
        assert_eq!(Plain.plain(4).await + Plain.untouched(), 11);
        assert_eq!(Plain::plain_key(&4), "cache:plain:4");
    })
    .await;
}
