use cache_runtime::cached;

#[cached(prefix = "user", id = "user_id")]
async fn get_user(user_id: u64) -> impl std::fmt::Display {
    user_id
}

fn main() {}
