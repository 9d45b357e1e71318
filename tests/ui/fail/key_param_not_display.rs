use cache_runtime::cached;

struct User {
    id: u64,
}

#[cached(prefix = "user", id = "user")]
async fn user_posts(user: &User) -> Vec<u64> {
    vec![user.id]
}

fn main() {}
