use cache_runtime::cached;

type Score = u64;

#[cached(prefix = "score", id = "user_id", cache_none = true)]
async fn score(user_id: u64) -> Score {
    user_id
}

fn main() {}
