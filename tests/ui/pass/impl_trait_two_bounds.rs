// An `impl A + B` argument in the key: the companion takes `&(impl A + B)`.
use cache_runtime::{Cache, cached};

#[cached(prefix = "shown", id = "value")]
async fn shown(value: impl std::fmt::Display + Send) -> String {
    value.to_string()
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(Cache::scope(rt.block_on(Cache::builder().build()).unwrap(), async {
        assert_eq!(shown(5).await, "5");
        assert_eq!(shown_key(&5), "cache:shown:5");
    }));
}
