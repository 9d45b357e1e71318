use cache_runtime::cached;

const TTL_SECS: u64 = 0;

#[cached(prefix = "user", id = "user_id", ttl = TTL_SECS)]
async fn get_user(user_id: u64) -> u64 {
    user_id
}

fn main() {}
