use cache_runtime::cached;

#[cached(prefix = "user", id = "user_id", invalidate = ["user:{user_id}:posts:*"], early_refresh = true)]
async fn save_user(user_id: u64) -> Result<u64, String> {
    Ok(user_id)
}

fn main() {}
