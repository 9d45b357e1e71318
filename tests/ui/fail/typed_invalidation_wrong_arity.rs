use cache_runtime::cached;

#[cached(prefix = "user", id = "user_id")]
async fn get_user(user_id: u64) -> u64 {
    user_id
}

#[cached(invalidate = [get_user(user_id, page)])]
async fn update_user(user_id: u64, page: u32) -> Result<(), String> {
    let _ = (user_id, page);
    Ok(())
}

fn main() {}
