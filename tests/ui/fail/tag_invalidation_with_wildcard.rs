use cache_runtime::cached;

#[cached(invalidate = [tag("user:{user_id}:*")])]
async fn update_user(user_id: u64) -> Result<(), String> {
    let _ = user_id;
    Ok(())
}

fn main() {}
