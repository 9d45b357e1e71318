//! A cached function declared inside another function's body, with a type
//! declared there too: its companions are siblings in the same block.
#![deny(warnings)]

use cache_runtime::{Cache, cached};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    struct UserId(u64);
    impl std::fmt::Display for UserId {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "{}", self.0)
        }
    }

    #[cached(prefix = "user", id = "user_id")]
    async fn get_user(user_id: UserId) -> u64 {
        user_id.0
    }

    #[cached(invalidate = [get_user(user_id)])]
    async fn touch(user_id: &UserId) -> Result<(), String> {
        let _ = user_id;
        Ok(())
    }

    let cache = Cache::builder().build().await.unwrap();
    Cache::scope(cache, async {
        assert_eq!(get_user(UserId(5)).await, 5);
        assert_eq!(get_user_key(&UserId(5)), "cache:user:5");
        touch(&UserId(5)).await.unwrap();
        get_user_invalidate(&UserId(5)).await;
    })
    .await;
}
