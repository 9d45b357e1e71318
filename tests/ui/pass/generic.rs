//! Generic functions: the companions keep only the generics their
//! arguments mention, so callers never annotate them.
#![deny(warnings)]

use std::fmt::Display;
use std::sync::atomic::{AtomicU32, Ordering::SeqCst};

use cache_runtime::{Cache, cached};

static CALLS: AtomicU32 = AtomicU32::new(0);

#[cached(prefix = "len", id = "id")]
async fn id_len<T: Display + Send + Sync>(id: T) -> u64 {
    CALLS.fetch_add(1, SeqCst);
    id.to_string().len() as u64
}

trait Db: Sync {
    fn name(&self, id: u64) -> String;
}

struct MemDb;

impl Db for MemDb {
    fn name(&self, id: u64) -> String {
        format!("n{id}")
    }
}

// `D` appears only in a skipped parameter: the companions have no generics.
#[cached(prefix = "name", id = "id", skip = [db])]
async fn name<D>(db: &D, id: u64) -> String
where
    D: Db,
{
    db.name(id)
}

#[cached(prefix = "pair:{a}:{b}")]
async fn pair<'a, A, B>(a: &'a A, b: B) -> String
where
    A: Display + Sync + ?Sized,
    B: Display + Send,
{
    format!("{a}{b}")
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    assert_eq!(id_len_key(&12345), "cache:len:12345");
    assert_eq!(id_len_key(&"abc"), "cache:len:abc");
    assert_eq!(name_key(&1), "cache:name:1");
    assert_eq!(pair_key("x", &2), "cache:pair:x:2");

    let cache = Cache::builder().build().await.unwrap();
    Cache::scope(cache, async {
        assert_eq!(id_len(12345).await, 5);
        assert_eq!(id_len(12345).await, 5);
        assert_eq!(id_len("12345").await, 5, "same key, same entry");
        assert_eq!(CALLS.load(SeqCst), 1);
        assert_eq!(name(&MemDb, 1).await, "n1");
        assert_eq!(pair("x", 2).await, "x2");
    })
    .await;
}
