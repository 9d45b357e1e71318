// The second error is a cascade: once `prefix` fails to parse, every
// parameter looks unused by the key (reported as a macro problem).
use cache_runtime::cached;

#[cached(prefix = "user:{user_id")]
async fn get_user(user_id: u64) -> u64 {
    user_id
}

fn main() {}
