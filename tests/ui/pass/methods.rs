//! Methods: `&self` is never part of the key; the companions are associated
//! functions `Self::<name>_key` and `Self::<name>_invalidate`.
#![deny(warnings)]

use std::sync::atomic::{AtomicU32, Ordering::SeqCst};

use cache_runtime::{Cache, cached};

struct Repo {
    calls: AtomicU32,
}

#[cached]
impl Repo {
    #[cached(prefix = "user", id = "user_id", ttl = 60)]
    async fn get_user(&self, user_id: u64) -> Result<String, String> {
        self.calls.fetch_add(1, SeqCst);
        Ok(format!("user{user_id}"))
    }

    #[cached(prefix = "user:{user_id}:posts", id = "page", skip = [verbose])]
    pub async fn posts(&self, user_id: u64, page: u32, verbose: bool) -> Vec<String> {
        let _ = verbose;
        vec![format!("{user_id}:{page}")]
    }

    // Typed invalidation of a method: `Self::get_user(user_id)`.
    #[cached(invalidate = [Self::get_user(user_id), "user:{user_id}:posts:*"])]
    async fn rename(&self, user_id: u64, name: &str) -> Result<(), String> {
        let _ = name;
        Ok(())
    }

    // Write-through on a method: stores under get_user's key.
    #[cached(prefix = "user", id = "user_id", skip = [name], invalidate = [Self::posts(user_id, 1)])]
    async fn save(&self, user_id: u64, name: String) -> Result<String, String> {
        let _ = user_id;
        Ok(name)
    }

    async fn forget(&self, user_id: u64) {
        Self::get_user_invalidate(&user_id).await;
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    assert_eq!(Repo::get_user_key(&42), "cache:user:42");
    assert_eq!(Repo::posts_key(&42, &2), "cache:user:42:posts:2");

    let repo = Repo {
        calls: AtomicU32::new(0),
    };
    let cache = Cache::builder().build().await.unwrap();
    Cache::scope(cache.clone(), async {
        assert_eq!(repo.get_user(42).await.unwrap(), "user42");
        assert_eq!(repo.get_user(42).await.unwrap(), "user42");
        assert_eq!(repo.calls.load(SeqCst), 1);

        repo.rename(42, "bob").await.unwrap();
        repo.get_user(42).await.unwrap();
        assert_eq!(
            repo.calls.load(SeqCst),
            2,
            "rename invalidated get_user(42)"
        );

        repo.forget(42).await;
        repo.get_user(42).await.unwrap();
        assert_eq!(
            repo.calls.load(SeqCst),
            3,
            "get_user_invalidate removed the entry"
        );

        assert_eq!(repo.posts(42, 2, true).await, ["42:2"]);

        assert_eq!(Repo::save_key(&42), Repo::get_user_key(&42));
        repo.save(42, "bob".to_owned()).await.unwrap();
        assert_eq!(repo.get_user(42).await.unwrap(), "bob", "written through");
        assert_eq!(repo.calls.load(SeqCst), 3);
    })
    .await;
}
