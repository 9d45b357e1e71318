// A raw-identifier parameter is keyed like any other; `{type}` names it.
use cache_runtime::{Cache, cached};

#[cached]
async fn by_type(r#type: u32) -> u32 {
    r#type
}

#[cached(prefix = "kind:{type}")]
async fn by_kind(r#type: u32) -> u32 {
    r#type + 1
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(Cache::scope(rt.block_on(Cache::builder().build()).unwrap(), async {
        assert_eq!(by_type(7).await, 7);
        assert_eq!(by_kind(7).await, 8);
        assert_eq!(by_type_key(&7), "cache:by_type:7");
        assert_eq!(by_kind_key(&7), "cache:kind:7");
    }));
}
