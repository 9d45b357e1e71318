use std::time::Duration;

use cache_runtime::cached;

const TTL: Duration = Duration::from_secs(60);

#[cached(prefix = "user", id = "user_id", ttl = TTL)]
async fn get_user(user_id: u64) -> u64 {
    user_id
}

fn main() {}
