// Four errors for one missing derive: the two on the return type are the
// intended ones; the two on the attribute repeat them (reported).
use cache_runtime::cached;

struct User {
    id: u64,
}

#[cached(prefix = "user", id = "user_id")]
async fn get_user(user_id: u64) -> Result<User, String> {
    Ok(User { id: user_id })
}

fn main() {}
