use cache_runtime::cached;

#[cached(prefix = "flag", id = "name", store = "Feature-Flags")]
async fn flag(name: &str) -> bool {
    name == "on"
}

fn main() {}
