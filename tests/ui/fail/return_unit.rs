use cache_runtime::cached;

#[cached(prefix = "user", id = "user_id")]
async fn get_user(user_id: u64) {
    let _ = user_id;
}

fn main() {}
