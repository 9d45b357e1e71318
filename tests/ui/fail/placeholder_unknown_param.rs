// A typo in a placeholder also reports the parameter it meant as missing
// from the key: two errors for one mistake (reported as a macro problem).
use cache_runtime::cached;

#[cached(prefix = "user:{uid}:posts", id = "page", skip = [db])]
async fn user_posts(db: &str, user_id: u64, page: u32) -> Vec<String> {
    vec![format!("{db}{user_id}{page}")]
}

fn main() {}
