// A hand-written future-returning fn is not `async fn`: the plain
// "works on `async fn` only" error, not the `#[async_trait]` order hint.
use std::future::Future;

use cache_runtime::cached;

#[cached(prefix = "user", id = "user_id")]
fn get_user(user_id: u64) -> impl Future<Output = u64> {
    async move { user_id }
}

fn main() {}
