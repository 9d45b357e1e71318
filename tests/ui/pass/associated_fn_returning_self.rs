// An associated function without `self`, in an inherent impl: its companions
// (`Self::find_key` / `Self::find_invalidate`) are siblings, legal there.
use cache_runtime::{Cache, cached};

#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct User {
    id: u64,
}

impl User {
    #[cached(prefix = "user", id = "id")]
    async fn find(id: u64) -> Result<Self, String> {
        Ok(User { id })
    }

    #[cached(invalidate = [Self::find(id)])]
    async fn touch(id: u64) -> Result<(), String> {
        let _ = id;
        Ok(())
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(Cache::scope(rt.block_on(Cache::builder().build()).unwrap(), async {
        assert_eq!(User::find(3).await, Ok(User { id: 3 }));
        assert_eq!(User::find_key(&3), "cache:user:3");
        User::touch(3).await.unwrap();
        User::find_invalidate(&3).await;
    }));
}
