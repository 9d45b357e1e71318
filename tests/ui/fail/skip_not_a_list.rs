use cache_runtime::cached;

#[cached(prefix = "user", id = "user_id", skip = db)]
async fn get_user(db: &str, user_id: u64) -> String {
    format!("{db}{user_id}")
}

fn main() {}
