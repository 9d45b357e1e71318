use cache_runtime::cached;

#[cached(invalidate = ["user:{user_id}"])]
async fn touch_user(user_id: u64) -> Result<(), String> {
    let _ = user_id;
    Ok(())
}

#[cached(invalidate = [touch_user(user_id)])]
async fn update_user(user_id: u64) -> Result<(), String> {
    touch_user(user_id).await
}

fn main() {}
