// A `self` method's companions come from `#[cached]` on its impl block; a
// typed invalidation of a method whose impl lacks it names a missing item.
use cache_runtime::cached;

struct Repo;

impl Repo {
    #[cached(prefix = "user", id = "user_id")]
    async fn get_user(&self, user_id: u64) -> u64 {
        user_id
    }

    #[cached(invalidate = [Repo::get_user(user_id)])]
    async fn touch(&self, user_id: u64) -> Result<(), String> {
        let _ = user_id;
        Ok(())
    }
}

fn main() {}
