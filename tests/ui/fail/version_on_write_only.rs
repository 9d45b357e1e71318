use cache_runtime::cached;

#[cached(invalidate = ["user:{user_id}"], version = 2)]
async fn update_user(user_id: u64) -> Result<(), String> {
    let _ = user_id;
    Ok(())
}

fn main() {}
