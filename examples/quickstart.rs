//! Quickstart: a miss, a hit, an invalidation, a miss again.
//!
//! ```text
//! cargo run --example quickstart                                  # in-memory store
//! REDIS_URL=redis://127.0.0.1:6379 cargo run --example quickstart # Redis
//! ```

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cache_runtime::{Cache, StoreKind, cached};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct User {
    id: u64,
    name: String,
}

/// A slow "database": every query takes 50 ms.
struct Db {
    names: Mutex<HashMap<u64, String>>,
}

impl Db {
    async fn load(&self, id: u64) -> Result<User, String> {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let name = self.names.lock().unwrap().get(&id).cloned();
        name.map(|name| User { id, name })
            .ok_or_else(|| format!("no user {id}"))
    }

    async fn rename(&self, id: u64, name: String) -> Result<(), String> {
        tokio::time::sleep(Duration::from_millis(50)).await;
        self.names.lock().unwrap().insert(id, name);
        Ok(())
    }
}

/// Read function: the key is `<namespace>:user:<user_id>`; `db` is not part
/// of it. Only `Ok` results are stored, for 10 minutes.
#[cached(prefix = "user", id = "user_id", ttl = "10m", skip = [db])]
async fn get_user(db: &Db, user_id: u64) -> Result<User, String> {
    db.load(user_id).await
}

/// Write function: always runs; once it returns `Ok`, the entry of
/// `get_user(user_id)` is removed.
#[cached(invalidate = [get_user(user_id)])]
async fn rename_user(db: &Db, user_id: u64, name: String) -> Result<(), String> {
    db.rename(user_id, name).await
}

/// Runs one call, printing how long it took and, from the cache's
/// counters, what happened.
async fn timed<T: std::fmt::Debug>(
    cache: &Cache,
    call: &str,
    step: impl Future<Output = Result<T, String>>,
) -> Result<T, String> {
    let before = cache.stats();
    let start = Instant::now();
    let result = step.await;
    let ms = start.elapsed().as_secs_f64() * 1e3;
    let after = cache.stats();
    let (what, note) = if call.starts_with("rename_user") {
        if after.invalidations > before.invalidations {
            (
                "write",
                "the body ran, then get_user(42)'s entry was removed",
            )
        } else {
            (
                "write",
                "the body ran; removing the entry failed, retried in the background",
            )
        }
    } else if after.hits > before.hits {
        ("hit", "from the cache; the body did not run")
    } else if after.misses > before.misses && after.stores > before.stores {
        ("miss", "the body queried the database; result stored")
    } else if after.misses > before.misses {
        ("miss", "the body queried the database; result not stored")
    } else {
        ("-", "the cache is unavailable: the body ran without it")
    };
    let shown = match &result {
        Ok(value) => format!("{value:?}"),
        Err(e) => format!("error: {e}"),
    };
    println!("{call:<22} {ms:>6.2} ms  {what:<5}  {shown:<28}  <- {note}");
    result
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Shows the runtime's own messages (connected to Redis, Redis unreachable...).
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();

    // REDIS_URL set: Redis; unset: the embedded in-memory store.
    let cache = Cache::from_env().await?;
    // Every #[cached] function now uses it (`cache` stays a handle to it).
    cache_runtime::install(cache.clone());
    let source = match std::env::var("REDIS_URL") {
        Ok(url) => format!("REDIS_URL={}", cache_runtime::redact_url(&url)),
        Err(_) => "REDIS_URL is unset: embedded in-memory store".to_owned(),
    };
    println!("store: {:?} ({source})", cache.store_kind());
    println!("get_user(42) is cached under key {}", get_user_key(&42));
    if cache.store_kind() == StoreKind::Redis {
        // Redis keeps entries between runs: start from a clean slate.
        get_user_invalidate(&42).await;
        println!("(invalidated the entry a previous run may have left in Redis)");
    }
    println!();

    let db = Db {
        names: Mutex::new(HashMap::from([(42, "Ann".to_owned())])),
    };
    timed(&cache, "get_user(42)", get_user(&db, 42)).await?;
    timed(&cache, "get_user(42)", get_user(&db, 42)).await?;
    timed(
        &cache,
        "rename_user(42, \"Bob\")",
        rename_user(&db, 42, "Bob".into()),
    )
    .await?;
    timed(&cache, "get_user(42)", get_user(&db, 42)).await?;
    timed(&cache, "get_user(42)", get_user(&db, 42)).await?;

    let s = cache.stats();
    println!(
        "\nstats: {} hits, {} misses, {} stored, {} invalidated, {} store errors",
        s.hits, s.misses, s.stores, s.invalidations, s.store_errors
    );
    Ok(())
}
