//! `tags` on a read function and on a method, `version`, named stores
//! (`store = "..."`) on read, write-through and write functions, and the
//! invalidations that go with them: `tag("...")` next to typed and template
//! invalidations, and a typed invalidation of a function in a named store.
#![deny(warnings)]

use std::sync::atomic::{AtomicU32, Ordering::SeqCst};

use cache_runtime::{Cache, cached};

static USER_LOADS: AtomicU32 = AtomicU32::new(0);
static FLAG_LOADS: AtomicU32 = AtomicU32::new(0);
static ALL_FLAGS_LOADS: AtomicU32 = AtomicU32::new(0);

struct Db;

#[cached(
    prefix = "user",
    id = "user_id",
    skip = [db],
    tags = ["user:{user_id}", "users"],
    version = 2
)]
async fn get_user(db: &Db, user_id: u64) -> Result<String, String> {
    let _ = db;
    USER_LOADS.fetch_add(1, SeqCst);
    Ok(format!("user{user_id}"))
}

struct Blog {
    loads: AtomicU32,
}

#[cached]
impl Blog {
    #[cached(prefix = "posts:{user_id}", id = "page", tags = ["user:{user_id}"])]
    async fn posts(&self, user_id: u64, page: u32) -> Vec<u64> {
        self.loads.fetch_add(1, SeqCst);
        vec![user_id, u64::from(page)]
    }
}

// The tag drops both functions' entries of one user; the typed and the
// template invalidation sit next to it.
#[cached(invalidate = [tag("user:{user_id}"), get_user(user_id), "user:{user_id}:*"])]
async fn update_user(user_id: u64) -> Result<(), String> {
    let _ = user_id;
    Ok(())
}

// Read functions in the named store `flags`.
#[cached(prefix = "flag", id = "name", store = "flags", version = 1)]
async fn flag(name: &str) -> bool {
    FLAG_LOADS.fetch_add(1, SeqCst);
    name == "on"
}

#[cached(prefix = "all_flags", store = "flags", tags = ["flags"])]
async fn all_flags() -> Vec<String> {
    ALL_FLAGS_LOADS.fetch_add(1, SeqCst);
    vec!["on".to_owned()]
}

// A write function in the default store invalidating an entry of `flags`:
// the typed invalidation finds the target's store.
#[cached(invalidate = [flag(name)])]
async fn toggle(name: &str) -> Result<(), String> {
    let _ = name;
    Ok(())
}

// Write-through in `flags`: stores under `flag`'s key, drops the tag `flags`.
#[cached(
    prefix = "flag",
    id = "name",
    skip = [on],
    store = "flags",
    version = 1,
    invalidate = [tag("flags")]
)]
async fn save_flag(name: &str, on: bool) -> bool {
    let _ = name;
    on
}

// A write function in `flags`: its tag is dropped in that store.
#[cached(store = "flags", invalidate = [tag("flags")])]
async fn reload_flags() -> Result<(), String> {
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let cache = Cache::builder()
        .store("flags", Cache::builder().memory().namespace("flags"))
        .build()
        .await
        .unwrap();
    let blog = Blog {
        loads: AtomicU32::new(0),
    };
    let db = Db;
    Cache::scope(cache.clone(), async {
        // `version` ends the key; a named store has its own namespace.
        assert_eq!(get_user_key(&7), "cache:user:7:v2");
        assert_eq!(Blog::posts_key(&7, &1), "cache:posts:7:1");
        assert_eq!(flag_key("on"), "flags:flag:on:v1");
        assert_eq!(save_flag_key("on"), flag_key("on"));

        get_user(&db, 7).await.unwrap();
        get_user(&db, 7).await.unwrap();
        assert_eq!(blog.posts(7, 1).await, [7, 1]);
        assert_eq!(blog.posts(7, 1).await, [7, 1]);
        assert_eq!((USER_LOADS.load(SeqCst), blog.loads.load(SeqCst)), (1, 1));

        update_user(7).await.unwrap();
        get_user(&db, 7).await.unwrap();
        blog.posts(7, 1).await;
        assert_eq!((USER_LOADS.load(SeqCst), blog.loads.load(SeqCst)), (2, 2));

        assert!(flag("on").await);
        assert!(flag("on").await);
        assert_eq!(FLAG_LOADS.load(SeqCst), 1);
        toggle("on").await.unwrap();
        assert!(flag("on").await);
        assert_eq!(FLAG_LOADS.load(SeqCst), 2, "invalidated in `flags`");

        all_flags().await;
        all_flags().await;
        assert_eq!(ALL_FLAGS_LOADS.load(SeqCst), 1);
        assert!(!save_flag("on", false).await);
        assert!(!flag("on").await, "written through");
        assert_eq!(FLAG_LOADS.load(SeqCst), 2);
        all_flags().await;
        assert_eq!(ALL_FLAGS_LOADS.load(SeqCst), 2, "tag `flags` dropped");
        reload_flags().await.unwrap();
        all_flags().await;
        assert_eq!(ALL_FLAGS_LOADS.load(SeqCst), 3);
    })
    .await;
    assert!(cache.store("flags").is_some());
}
