// `#[tracing::instrument]` above `#[cached]` would give a span on misses only.
use cache_runtime::cached;

#[tracing::instrument]
#[cached(prefix = "user", id = "user_id")]
async fn get_user(user_id: u64) -> u64 {
    user_id
}

fn main() {}
