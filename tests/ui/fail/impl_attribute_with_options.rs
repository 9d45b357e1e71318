use cache_runtime::cached;

struct Repo;

#[cached(prefix = "repo")]
impl Repo {
    #[cached(prefix = "user", id = "user_id")]
    async fn get_user(&self, user_id: u64) -> u64 {
        user_id
    }
}

fn main() {}
