use cache_runtime::cached;

#[cached(prefix = "user", id = "user_id", cache_none = "yes")]
async fn get_user(user_id: u64) -> Option<u64> {
    Some(user_id)
}

fn main() {}
