use cache_runtime::cached;

#[cached(invalidate = ["user:{user_id}"], stale_while_revalidate = "30s")]
async fn update_user(user_id: u64) -> Result<(), String> {
    let _ = user_id;
    Ok(())
}

fn main() {}
