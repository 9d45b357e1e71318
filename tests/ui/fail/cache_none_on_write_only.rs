use cache_runtime::cached;

#[cached(invalidate = ["user:{user_id}"], cache_none = true)]
async fn update_user(user_id: u64) -> Option<u64> {
    Some(user_id)
}

fn main() {}
