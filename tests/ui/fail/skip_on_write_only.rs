use cache_runtime::cached;

#[cached(invalidate = ["user:{user_id}"], skip = [db])]
async fn update_user(db: &str, user_id: u64) -> Result<(), String> {
    let _ = (db, user_id);
    Ok(())
}

fn main() {}
