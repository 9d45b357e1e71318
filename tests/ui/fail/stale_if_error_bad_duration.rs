use cache_runtime::cached;

#[cached(prefix = "user", id = "user_id", stale_if_error = "5 parsecs")]
async fn get_user(user_id: u64) -> u64 {
    user_id
}

fn main() {}
