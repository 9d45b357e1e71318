use cache_runtime::cached;

async fn get_user(user_id: u64) -> u64 {
    user_id
}

#[cached(invalidate = [get_user(user_id)])]
async fn update_user(user_id: u64) -> Result<(), String> {
    get_user(user_id).await;
    Ok(())
}

fn main() {}
