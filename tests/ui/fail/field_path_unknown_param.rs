// A typo in a placeholder also reports the parameter it meant as missing
// from the key: two errors for one mistake (reported as a macro problem).
use cache_runtime::cached;

struct User {
    id: u64,
}

#[cached(prefix = "user:{usr.id}:posts", id = "page")]
async fn user_posts(user: &User, page: u32) -> Vec<u64> {
    vec![user.id, page as u64]
}

fn main() {}
