use cache_runtime::cached;

trait Users {
    #[cached(prefix = "user", id = "user_id")]
    async fn get_user(&self, user_id: u64) -> u64;
}

fn main() {}
