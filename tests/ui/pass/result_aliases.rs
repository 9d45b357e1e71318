//! The shape of a return type is the type rustc sees, not its name: an
//! alias of `Result` stores only `Ok` and a failing write invalidates
//! nothing; `cache_none` means the same for `Option<T>` and
//! `Result<Option<T>, E>`; a type merely named `Result` is a plain value.
#![deny(warnings)]

use std::sync::atomic::{AtomicU32, Ordering::SeqCst};

use cache_runtime::{Cache, cached};

#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct ApiError {
    code: u16,
}

type ApiResult<T> = Result<T, ApiError>;

mod app {
    /// A crate-local `Result<T>`, as many crates have.
    pub type Result<T> = std::result::Result<T, String>;
}

/// An error type that is not `Serialize`: never stored, so never required.
#[derive(Debug)]
struct NotSerializable;

static API_CALLS: AtomicU32 = AtomicU32::new(0);
static IO_CALLS: AtomicU32 = AtomicU32::new(0);
static OPT_CALLS: AtomicU32 = AtomicU32::new(0);
static NONE_CALLS: AtomicU32 = AtomicU32::new(0);
static PLAIN_CALLS: AtomicU32 = AtomicU32::new(0);

#[cached(prefix = "api", id = "id")]
async fn api(id: u64) -> ApiResult<u64> {
    API_CALLS.fetch_add(1, SeqCst);
    if id == 0 { Err(ApiError { code: 503 }) } else { Ok(id) }
}

#[cached(prefix = "io", id = "id")]
async fn io(id: u64) -> std::io::Result<u64> {
    IO_CALLS.fetch_add(1, SeqCst);
    if id == 0 { Err(std::io::Error::other("down")) } else { Ok(id) }
}

#[cached(prefix = "local", id = "id")]
async fn local(id: u64) -> app::Result<u64> {
    if id == 0 { Err("no".into()) } else { Ok(id) }
}

#[cached(prefix = "opaque", id = "id")]
async fn opaque_error(id: u64) -> Result<u64, NotSerializable> {
    if id == 0 { Err(NotSerializable) } else { Ok(id) }
}

#[cached(prefix = "opt", id = "id")]
async fn maybe(id: u64) -> ApiResult<Option<u64>> {
    OPT_CALLS.fetch_add(1, SeqCst);
    Ok((id != 0).then_some(id))
}

#[cached(prefix = "none", id = "id", cache_none = true)]
async fn maybe_none(id: u64) -> ApiResult<Option<u64>> {
    NONE_CALLS.fetch_add(1, SeqCst);
    Ok((id != 0).then_some(id))
}

mod mine {
    /// A type of the user's that happens to be called `Result`.
    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    pub struct Result {
        pub score: u64,
    }
}

#[cached(prefix = "plain", id = "id")]
async fn plain(id: u64) -> mine::Result {
    PLAIN_CALLS.fetch_add(1, SeqCst);
    mine::Result { score: id }
}

#[cached(invalidate = [api(id)])]
async fn update(id: u64, ok: bool) -> ApiResult<()> {
    if ok { Ok(()) } else { Err(ApiError { code: 500 }) }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let cache = Cache::builder().build().await.unwrap();
    Cache::scope(cache, async {
        assert_eq!(api(0).await, Err(ApiError { code: 503 }));
        assert_eq!(api(0).await, Err(ApiError { code: 503 }));
        assert_eq!(API_CALLS.load(SeqCst), 2, "an error of an alias is not stored");
        assert_eq!(api(1).await, Ok(1));
        assert_eq!(api(1).await, Ok(1));
        assert_eq!(API_CALLS.load(SeqCst), 3, "`Ok` is");

        assert!(update(1, false).await.is_err());
        assert_eq!(api(1).await, Ok(1));
        assert_eq!(API_CALLS.load(SeqCst), 3, "a failed write invalidates nothing");
        update(1, true).await.unwrap();
        assert_eq!(api(1).await, Ok(1));
        assert_eq!(API_CALLS.load(SeqCst), 4, "a successful one does");

        assert!(io(0).await.is_err());
        assert!(io(0).await.is_err());
        assert_eq!(IO_CALLS.load(SeqCst), 2, "`io::Result` errors are not stored");
        assert_eq!(local(0).await, Err("no".to_owned()));
        assert_eq!(local(2).await, Ok(2));
        assert!(opaque_error(0).await.is_err());
        assert_eq!(opaque_error(2).await.unwrap(), 2);

        assert_eq!(maybe(0).await, Ok(None));
        assert_eq!(maybe(0).await, Ok(None));
        assert_eq!(OPT_CALLS.load(SeqCst), 2, "`Ok(None)` is not stored by default");
        assert_eq!(maybe(5).await, Ok(Some(5)));
        assert_eq!(maybe(5).await, Ok(Some(5)));
        assert_eq!(OPT_CALLS.load(SeqCst), 3, "`Ok(Some(_))` is");
        assert_eq!(maybe_none(0).await, Ok(None));
        assert_eq!(maybe_none(0).await, Ok(None));
        assert_eq!(NONE_CALLS.load(SeqCst), 1, "with `cache_none`, `Ok(None)` is stored");

        assert_eq!(plain(4).await, mine::Result { score: 4 });
        assert_eq!(plain(4).await, mine::Result { score: 4 });
        assert_eq!(PLAIN_CALLS.load(SeqCst), 1);
    })
    .await;
}
