use cache_runtime::cached;

#[cached(prefix = "user", id = "user_id", tags = ["user:{user_id}", "users", "user:{user_id}"])]
async fn get_user(user_id: u64) -> u64 {
    user_id
}

fn main() {}
