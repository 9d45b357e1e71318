use cache_runtime::cached;

#[cached(prefix = "user", id = "user_id", cache_none = true)]
async fn get_user(user_id: u64) -> Result<u64, String> {
    Ok(user_id)
}

fn main() {}
