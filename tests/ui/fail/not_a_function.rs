use cache_runtime::cached;

#[cached(prefix = "user")]
struct User {
    id: u64,
}

fn main() {}
