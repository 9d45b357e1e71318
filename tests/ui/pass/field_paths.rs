//! Field paths in templates (`{user.id}`) and in `id` (`"user.id"`),
//! including tuple fields and nested fields.
#![deny(warnings)]

use std::sync::atomic::{AtomicU32, Ordering::SeqCst};

use cache_runtime::{Cache, cached};

static CALLS: AtomicU32 = AtomicU32::new(0);

struct Org {
    slug: String,
}

struct User {
    id: u64,
    org: Org,
}

#[cached(prefix = "user:{user.id}:settings")]
async fn settings(user: &User) -> Vec<String> {
    CALLS.fetch_add(1, SeqCst);
    vec![format!("theme-{}", user.id)]
}

#[cached(prefix = "org:{user.org.slug}:member", id = "user.id")]
async fn membership(user: &User) -> String {
    format!("{}@{}", user.id, user.org.slug)
}

#[cached(prefix = "cell:{pos.0}:{pos.1}")]
async fn cell(pos: (u32, u32)) -> u32 {
    pos.0 * pos.1
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let ann = User {
        id: 42,
        org: Org {
            slug: "acme".to_owned(),
        },
    };
    assert_eq!(settings_key(&ann), "cache:user:42:settings");
    assert_eq!(membership_key(&ann), "cache:org:acme:member:42");
    assert_eq!(cell_key(&(3, 4)), "cache:cell:3:4");

    let cache = Cache::builder().build().await.unwrap();
    Cache::scope(cache, async {
        assert_eq!(settings(&ann).await, ["theme-42"]);
        assert_eq!(settings(&ann).await, ["theme-42"]);
        assert_eq!(CALLS.load(SeqCst), 1);
        assert_eq!(membership(&ann).await, "42@acme");
        assert_eq!(cell((3, 4)).await, 12);
    })
    .await;
}
