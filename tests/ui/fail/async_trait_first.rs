// `#[async_trait]` above the impl expands first: the method `#[cached]` then
// sees a boxed future; the error says which order works.
use async_trait::async_trait;
use cache_runtime::cached;

#[async_trait]
trait Users {
    async fn get_user(&self, user_id: u64) -> u64;
}

struct Repo;

#[async_trait]
impl Users for Repo {
    #[cached(prefix = "user", id = "user_id")]
    async fn get_user(&self, user_id: u64) -> u64 {
        user_id
    }
}

fn main() {}
