// A typo in `id` also reports the parameter it meant as missing from the
// key: two errors for one mistake (reported as a macro problem).
use cache_runtime::cached;

#[cached(prefix = "user:{user_id}:post", id = "post")]
async fn get_post(user_id: u64, post_id: u64) -> u64 {
    user_id + post_id
}

fn main() {}
