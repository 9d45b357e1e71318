// rustc's "similar field" suggestion replaces the whole template literal
// with `id`, because the field's span is the literal's (reported).
use cache_runtime::cached;

struct User {
    id: u64,
}

#[cached(prefix = "user:{user.uid}:posts", id = "page")]
async fn user_posts(user: &User, page: u32) -> Vec<u64> {
    vec![user.id, page as u64]
}

fn main() {}
