//! Configuration: typed errors for settings that can never work, the
//! environment, password-protected and ACL servers, and passwords that never
//! appear in `Debug` output, errors or logs.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cache_runtime::{Cache, CacheBuilder, ConfigError, StoreKind, cached};
use common::RedisServer;
use tracing_subscriber::util::SubscriberInitExt;

const SECRET: &str = "hunter2";

#[cached(prefix = "item", id = "n", ttl = 60, skip = [runs])]
async fn item(runs: &std::sync::atomic::AtomicU32, n: u64) -> u64 {
    runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    n * 3
}

/// No `ttl`: the cache's default applies.
#[cached(prefix = "plain", id = "n", skip = [runs])]
async fn plain(runs: &std::sync::atomic::AtomicU32, n: u64) -> u64 {
    runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    n
}

#[cached(invalidate = [item(n)])]
async fn touch(n: u64) -> Result<(), String> {
    Ok(())
}

/// Everything logged on this thread (all levels), as text.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The guard ends the capture when dropped.
fn capture_logs() -> (Logs, impl Sized) {
    let logs = Logs::default();
    let writer = logs.clone();
    let guard = tracing_subscriber::fmt()
        .with_max_level(tracing_subscriber::filter::LevelFilter::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish()
        .set_default();
    (logs, guard)
}

fn assert_no_secret(what: &str, text: &str) {
    assert!(!text.contains(SECRET), "{what} leaks the password: {text}");
}

fn setting(err: ConfigError) -> &'static str {
    match err {
        ConfigError::InvalidSetting { setting, .. } => setting,
        other => panic!("expected InvalidSetting, got {other:?}"),
    }
}

async fn build_err(b: CacheBuilder) -> ConfigError {
    match b.build().await {
        Ok(cache) => panic!("expected a configuration error, built {cache:?}"),
        Err(e) => e,
    }
}

#[tokio::test]
async fn invalid_settings_are_typed_errors() {
    let zero = Duration::ZERO;
    let b = Cache::builder;
    assert_eq!(setting(build_err(b().op_timeout(zero)).await), "op_timeout");
    assert_eq!(
        setting(build_err(b().connect_timeout(zero)).await),
        "connect_timeout"
    );
    assert_eq!(
        setting(build_err(b().default_ttl(zero)).await),
        "default_ttl"
    );
    assert_eq!(setting(build_err(b().max_entries(0)).await), "max_entries");
    assert_eq!(
        setting(build_err(b().max_key_part_len(39)).await),
        "max_key_part_len"
    );
    assert_eq!(
        setting(build_err(b().circuit_breaker(0, Duration::from_secs(1))).await),
        "circuit_breaker"
    );
    assert_eq!(
        setting(build_err(b().circuit_breaker(3, zero)).await),
        "circuit_breaker"
    );
    for bad in [
        "a*b", "a?b", "a[b]", "a\\b", "a{b}", "a b", "a\tb", ":ns", "ns:", "a#b", "a%b",
    ] {
        let err = build_err(b().namespace(bad)).await;
        let text = err.to_string();
        assert_eq!(setting(err), "namespace", "{bad:?}");
        assert!(text.contains("namespace"), "{text}");
    }
    // Good namespaces, including one with `:`.
    for good in ["app", "app:v2", "my-app_1.0"] {
        let cache = b().namespace(good).build().await.unwrap();
        assert_eq!(cache.namespace(), good);
    }
    // The same checks apply with Redis configured (no server is contacted).
    assert_eq!(
        setting(build_err(b().redis_url("redis://127.0.0.1:1").op_timeout(zero)).await),
        "op_timeout"
    );
}

#[tokio::test]
async fn bad_urls_are_typed_errors_without_the_password() {
    for url in [
        "redis://:hunter2@[bad",
        "redis://app:hunter2@[bad",
        "notredis://:hunter2@127.0.0.1:1",
    ] {
        let err = build_err(Cache::builder().redis_url(url)).await;
        assert_no_secret("the error's Display", &err.to_string());
        assert_no_secret("the error's Debug", &format!("{err:?}"));
        match &err {
            ConfigError::InvalidRedisUrl { url: shown, .. } => {
                assert!(shown.contains("***"), "the password is masked: {shown}");
            }
            other => panic!("{url}: expected InvalidRedisUrl, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn debug_output_never_shows_the_password() {
    let (logs, _guard) = capture_logs();
    let url = format!("redis://:{SECRET}@127.0.0.1:1/0");
    let builder = Cache::builder().redis_url(&url);
    let debug = format!("{builder:?}");
    assert_no_secret("the builder's Debug", &debug);
    assert!(debug.contains("***"), "{debug}");
    let cache = builder.build().await.unwrap();
    assert_no_secret("the cache's Debug", &format!("{cache:?}"));
    assert_no_secret("the cache's pretty Debug", &format!("{cache:#?}"));
    assert_no_secret("the logs", &logs.text());
    assert!(
        logs.text().contains("did not answer at start-up"),
        "the start-up warning was captured: {}",
        logs.text()
    );
}

#[tokio::test]
async fn password_protected_server_works_and_nothing_leaks() {
    let (logs, _guard) = capture_logs();
    let server = RedisServer::start_with(&["--requirepass", SECRET]);
    assert!(server.url().contains(SECRET));
    let runs = std::sync::atomic::AtomicU32::new(0);

    // The right password: a working cache.
    let cache = Cache::builder()
        .redis_url(server.url())
        .namespace("cfg-auth")
        .build()
        .await
        .unwrap();
    Cache::scope(cache.clone(), async {
        assert_eq!(item(&runs, 2).await, 6);
        assert_eq!(item(&runs, 2).await, 6);
        touch(2).await.unwrap();
    })
    .await;
    assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!((cache.stats().hits, cache.stats().invalidations), (1, 1));
    assert!(server.keys().is_empty(), "{:?}", server.keys());

    // A wrong password: builds, calls run their bodies, errors are counted.
    let wrong_url = format!("redis://:{SECRET}x@127.0.0.1:{}", server.port());
    let wrong = Cache::builder()
        .redis_url(wrong_url)
        .namespace("cfg-auth-wrong")
        .op_timeout(Duration::from_millis(100))
        .build()
        .await
        .unwrap();
    Cache::scope(wrong.clone(), async {
        for _ in 0..3 {
            assert_eq!(item(&runs, 4).await, 12);
        }
        touch(4).await.unwrap();
    })
    .await;
    assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 4);
    let stats = wrong.stats();
    assert_eq!(stats.hits, 0);
    assert!(
        stats.store_errors + stats.timeouts + stats.breaker_rejections > 0,
        "{stats:?}"
    );
    assert!(stats.invalidation_failures > 0, "{stats:?}");
    assert!(server.keys().is_empty());

    assert_no_secret("the cache's Debug", &format!("{cache:?} {wrong:?}"));
    let text = logs.text();
    assert_no_secret("the logs", &text);
    assert!(
        text.contains("WARN"),
        "the failures were logged (captured): {text}"
    );
}

#[tokio::test]
async fn acl_user_can_connect() {
    let server = RedisServer::start_with(&["--user", "app", "on", ">s3cret", "~*", "&*", "+@all"]);
    let runs = std::sync::atomic::AtomicU32::new(0);
    let cache = Cache::builder()
        .redis_url(format!("redis://app:s3cret@127.0.0.1:{}", server.port()))
        .namespace("cfg-acl")
        .build()
        .await
        .unwrap();
    Cache::scope(cache.clone(), async {
        assert_eq!(item(&runs, 5).await, 15);
        assert_eq!(item(&runs, 5).await, 15);
    })
    .await;
    assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(cache.stats().hits, 1);
    assert!(!format!("{cache:?}").contains("s3cret"));
    // The entry was written as that user.
    assert_eq!(server.cli(&["GET", "cfg-acl:item:5"]), "15");
    assert!(server.cli(&["ACL", "LOG"]).is_empty(), "no ACL denials");
}

fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let vars: Vec<(String, String)> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    move |name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
}

#[tokio::test]
async fn environment_values_that_do_not_parse_are_typed_errors() {
    for (var, value) in [
        ("CACHE_DEFAULT_TTL", "soon"),
        ("CACHE_CONNECT_TIMEOUT", "-1s"),
        ("CACHE_OP_TIMEOUT", "fast"),
        ("CACHE_MAX_ENTRIES", "-5"),
        ("CACHE_MAX_ENTRIES", "many"),
        ("CACHE_DISABLED", "maybe"),
    ] {
        match CacheBuilder::from_lookup(env(&[(var, value)])) {
            Err(ConfigError::InvalidEnv {
                var: got,
                value: shown,
                ..
            }) => {
                assert_eq!(got, var);
                assert_eq!(shown, value);
            }
            other => panic!("{var}={value}: expected InvalidEnv, got {other:?}"),
        }
    }
    // Parses, but can never work: a setting error at build time.
    let b = CacheBuilder::from_lookup(env(&[("CACHE_OP_TIMEOUT", "0")])).unwrap();
    assert_eq!(setting(build_err(b).await), "op_timeout");
    let b = CacheBuilder::from_lookup(env(&[("CACHE_NAMESPACE", "a*b")])).unwrap();
    assert_eq!(setting(build_err(b).await), "namespace");
    // A bad URL from the environment: typed, and the password stays hidden.
    let b = CacheBuilder::from_lookup(env(&[("REDIS_URL", "redis://:hunter2@[bad")])).unwrap();
    assert_no_secret("the builder's Debug", &format!("{b:?}"));
    let err = build_err(b).await;
    assert!(
        matches!(err, ConfigError::InvalidRedisUrl { .. }),
        "{err:?}"
    );
    assert_no_secret("the error", &format!("{err} {err:?}"));
}

#[tokio::test]
async fn environment_configures_the_cache() {
    let server = RedisServer::start();
    let url = server.url();
    let cache = CacheBuilder::from_lookup(env(&[
        ("REDIS_URL", &url),
        ("CACHE_NAMESPACE", "from-env"),
        ("CACHE_DEFAULT_TTL", "90s"),
        ("CACHE_OP_TIMEOUT", "150ms"),
        ("CACHE_CONNECT_TIMEOUT", "1"),
        ("CACHE_DISABLED", "false"),
    ]))
    .unwrap()
    .build()
    .await
    .unwrap();
    assert_eq!(cache.store_kind(), StoreKind::Redis);
    assert_eq!(cache.namespace(), "from-env");
    assert_eq!(cache.default_ttl(), Duration::from_secs(90));

    let memory = CacheBuilder::from_lookup(env(&[("REDIS_URL", "  ")]))
        .unwrap()
        .build()
        .await
        .unwrap();
    assert_eq!(memory.store_kind(), StoreKind::Memory, "blank REDIS_URL");
    let memory = CacheBuilder::from_lookup(env(&[]))
        .unwrap()
        .build()
        .await
        .unwrap();
    assert_eq!(memory.store_kind(), StoreKind::Memory);
    assert_eq!(memory.namespace(), "cache");
    for on in ["1", "true", "YES", "on"] {
        let off = CacheBuilder::from_lookup(env(&[("REDIS_URL", &url), ("CACHE_DISABLED", on)]))
            .unwrap()
            .build()
            .await
            .unwrap();
        assert_eq!(off.store_kind(), StoreKind::Disabled, "CACHE_DISABLED={on}");
    }

    let runs = std::sync::atomic::AtomicU32::new(0);
    Cache::scope(cache.clone(), async {
        item(&runs, 1).await;
        plain(&runs, 1).await;
    })
    .await;
    assert!(server.exists("from-env:item:1"));
    let pttl = server.pttl("from-env:plain:1");
    assert!(
        pttl > 85_000 && pttl <= 90_000,
        "CACHE_DEFAULT_TTL=90s applies: PTTL {pttl}"
    );
}

#[tokio::test]
async fn a_tls_url_needs_the_tls_feature() {
    let url = "rediss://:hunter2@127.0.0.1:1";
    // Without the `tls` feature, `rediss://` fails at build time, saying
    // why, without the password.
    #[cfg(not(feature = "tls"))]
    {
        let err = build_err(Cache::builder().redis_url(url)).await;
        let text = format!("{err} {err:?}");
        assert!(matches!(err, ConfigError::InvalidRedisUrl { .. }), "{text}");
        assert!(text.contains("`tls` feature"), "{text}");
        assert_no_secret("the TLS error", &text);
    }
    // With it, the URL is accepted (tests/tls.rs builds caches against a
    // TLS server; building one here would race the log capture of
    // `debug_output_never_shows_the_password` for the start-up warning).
    #[cfg(feature = "tls")]
    {
        let builder = Cache::builder().redis_url(url);
        assert_no_secret("a TLS builder", &format!("{builder:?}"));
    }
}

/// A unix socket path for a test server, removed when dropped.
struct SocketPath(std::path::PathBuf);

impl SocketPath {
    fn new(name: &str) -> Self {
        SocketPath(
            std::env::temp_dir().join(format!("cache-test-{name}-{}.sock", std::process::id())),
        )
    }
    fn as_str(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for SocketPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[tokio::test]
async fn unix_socket_with_a_password_works() {
    let socket = SocketPath::new("unix-ok");
    let server =
        RedisServer::start_with(&["--unixsocket", socket.as_str(), "--requirepass", SECRET]);
    let runs = std::sync::atomic::AtomicU32::new(0);
    let cache = Cache::builder()
        .redis_url(format!("redis+unix://{}?pass={SECRET}", socket.as_str()))
        .namespace("cfg-unix")
        .build()
        .await
        .unwrap();
    Cache::scope(cache.clone(), async {
        assert_eq!(item(&runs, 7).await, 21);
        assert_eq!(item(&runs, 7).await, 21);
    })
    .await;
    assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(cache.stats().hits, 1);
    assert!(server.exists("cfg-unix:item:7"));
}

#[tokio::test]
async fn unix_socket_password_never_leaks() {
    let (logs, _guard) = capture_logs();
    let socket = SocketPath::new("unix-leak");
    let _server =
        RedisServer::start_with(&["--unixsocket", socket.as_str(), "--requirepass", SECRET]);
    let builder = Cache::builder()
        .redis_url(format!("redis+unix://{}?pass={SECRET}", socket.as_str()))
        .namespace("cfg-unix-leak");
    let debug = format!("{builder:?}");
    let cache = builder.build().await.unwrap();
    assert_no_secret("the logs", &logs.text());
    assert_no_secret("the cache's Debug", &format!("{cache:?}"));
    assert_no_secret("the builder's Debug", &debug);
}

#[tokio::test]
async fn passwords_with_url_special_characters_never_leak() {
    for password in ["hunter2#1", "hunter2/1", "hunter2?1"] {
        let url = format!("redis://:{password}@127.0.0.1:1/0");
        let builder = Cache::builder().redis_url(&url);
        assert_no_secret("the builder's Debug", &format!("{builder:?}"));
        match builder.build().await {
            Ok(cache) => assert_no_secret("the cache's Debug", &format!("{cache:?}")),
            Err(err) => assert_no_secret("the error", &format!("{err} {err:?}")),
        }
    }
}
