//! The example service (`examples/service`) over HTTP, against a real
//! `redis-server` and a real database: SQLite files by default, Postgres
//! when `DATABASE_URL=postgres://...` is set (each test then works in a
//! schema of its own, dropped at the end).
//!
//! Each test builds the service's router in-process with a `Cache` of its
//! own (its own redis-server, its own namespace) and a database of its own,
//! serves it on a free loopback port, and talks to it with reqwest. The
//! router scopes every request to its cache (`Cache::scope` in a
//! middleware), so the tests run in parallel without installing a global
//! cache. Body runs are counted by the service's `Db`, so "served from
//! Redis" means the database was not queried.

mod common;

#[allow(dead_code)]
#[path = "../examples/service/app.rs"]
mod app;

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use app::db::{BodyRunCounts, Db, DbConfig};
use cache_runtime::Cache;
use common::{RedisServer, eventually};
use metrics_exporter_prometheus::PrometheusHandle;
use reqwest::StatusCode;
use serde_json::{Value, json};

/// Users seeded into each test's database (20 posts each).
const SEED_USERS: i64 = 50;

/// The Prometheus recorder is process-wide: installed once, before the
/// first cached call of any test (every test gets here first).
fn metrics() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| app::install_metrics().expect("install the Prometheus recorder"))
        .clone()
}

/// A unique suffix per test in this process.
fn unique(name: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{name}_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Where a test's data lives: a SQLite file, or a Postgres schema.
enum TestDb {
    Sqlite(std::path::PathBuf),
    Postgres { url: String, schema: String },
}

impl TestDb {
    fn new(name: &str) -> Self {
        match std::env::var("DATABASE_URL") {
            Ok(url) if url.starts_with("postgres") => TestDb::Postgres {
                url,
                schema: unique(&format!("svc_{name}")),
            },
            _ => TestDb::Sqlite(
                std::env::temp_dir().join(format!("{}.db", unique(&format!("svc-{name}")))),
            ),
        }
    }

    fn config(&self) -> DbConfig {
        match self {
            TestDb::Sqlite(path) => DbConfig::sqlite_file(path, SEED_USERS),
            TestDb::Postgres { url, schema } => DbConfig {
                url: url.clone(),
                seed_users: SEED_USERS,
                pg_schema: Some(schema.clone()),
                max_connections: 4,
            },
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        match self {
            TestDb::Sqlite(path) => {
                for suffix in ["", "-wal", "-shm"] {
                    let mut file = path.clone().into_os_string();
                    file.push(suffix);
                    let _ = std::fs::remove_file(file);
                }
            }
            TestDb::Postgres { url, schema } => {
                // Drop runs outside any runtime: drop the schema with psql
                // if it is there (best effort; a leftover schema is named
                // after the test and the process id).
                let _ = std::process::Command::new("psql")
                    .arg(url.as_str())
                    .args([
                        "-q",
                        "-c",
                        &format!("DROP SCHEMA IF EXISTS {schema} CASCADE"),
                    ])
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .status();
            }
        }
    }
}

/// The service, served on a free loopback port.
struct TestApp {
    base: String,
    client: reqwest::Client,
    cache: Cache,
    db: Db,
    namespace: String,
    server: tokio::task::JoinHandle<()>,
    // Dropped last: the pool is closed by then.
    data: TestDb,
}

impl TestApp {
    async fn start(name: &str, redis: &RedisServer) -> TestApp {
        Self::start_with(name, redis, None).await
    }

    async fn start_with(name: &str, redis: &RedisServer, admin_token: Option<&str>) -> TestApp {
        let metrics = metrics();
        let namespace = unique(&format!("svc-{name}"));
        let cache = Cache::builder()
            .redis_url(redis.url())
            .namespace(namespace.clone())
            // Fail fast and recover fast when the test kills the server.
            .op_timeout(Duration::from_millis(250))
            .connect_timeout(Duration::from_millis(250))
            .circuit_breaker(3, Duration::from_millis(300))
            .build()
            .await
            .expect("build the Redis cache");
        let data = TestDb::new(name);
        let db = Db::connect(data.config())
            .await
            .expect("connect and seed the test database");
        let mut state = app::AppState::new(db.clone(), cache.clone(), metrics);
        state.admin_token = admin_token.map(Into::into);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a free port");
        let base = format!("http://{}", listener.local_addr().unwrap());
        let router = app::router(state);
        let server = tokio::spawn(async move {
            axum::serve(listener, router).await.expect("serve");
        });
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        TestApp {
            base,
            client,
            cache,
            db,
            namespace,
            server,
            data,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        let response = self.client.get(self.url(path)).send().await.unwrap();
        read(response).await
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: Value) -> (StatusCode, Value) {
        let response = self
            .client
            .request(method, self.url(path))
            .json(&body)
            .send()
            .await
            .unwrap();
        read(response).await
    }

    async fn put(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.send(reqwest::Method::PUT, path, body).await
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.send(reqwest::Method::POST, path, body).await
    }

    async fn delete(&self, path: &str) -> StatusCode {
        self.client
            .delete(self.url(path))
            .send()
            .await
            .unwrap()
            .status()
    }

    fn runs(&self) -> BodyRunCounts {
        self.db.body_runs()
    }

    /// A companion key (`get_user_key(&7)`...) as this app's cache builds it.
    async fn key(&self, key: impl FnOnce() -> String) -> String {
        Cache::scope(self.cache.clone(), async { key() }).await
    }

    /// This test's keys in Redis (entries, tag versions).
    fn own_keys(&self, redis: &RedisServer) -> Vec<String> {
        let ns = &self.namespace;
        redis
            .keys()
            .into_iter()
            .filter(|k| k.starts_with(&format!("{ns}:")) || k.starts_with(&format!("{ns}#")))
            .collect()
    }

    async fn stop(self) {
        self.server.abort();
        let _ = self.server.await;
        self.db.close().await;
    }
}

async fn read(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    let text = response.text().await.unwrap();
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    (status, body)
}

/// The value of the sample `series` (name and labels, exactly as rendered)
/// in a Prometheus text exposition.
fn sample(exposition: &str, series: &str) -> Option<f64> {
    exposition.lines().find_map(|line| {
        line.strip_prefix(series)
            .and_then(|rest| rest.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    })
}

// ------------------------------------------------------------------- tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_reads_are_served_from_redis() {
    let redis = RedisServer::start();
    let app = TestApp::start("reads", &redis).await;

    // A user: miss (one query), stored with its TTL, then a hit.
    let (status, first) = app.get("/users/7").await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(first["name"], "User 7");
    assert_eq!(app.runs().get_user, 1);
    let key = app.key(|| app::db::get_user_key(&7)).await;
    assert_eq!(key, format!("{}:user:7", app.namespace));
    let ttl = redis.pttl(&key);
    assert!(
        0 < ttl && ttl <= 600_000,
        "{key} has TTL {ttl} ms, want (0, 10m]"
    );
    // Plain JSON in Redis: what the endpoint returned, readable by anyone.
    let stored: Value = serde_json::from_str(&redis.get(&key).unwrap()).unwrap();
    assert_eq!(stored, first);

    let (status, second) = app.get("/users/7").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(second, first);
    assert_eq!(
        app.runs().get_user,
        1,
        "the second GET queried the database"
    );
    assert_eq!(app.cache.stats().hits, 1);

    // A posts page (the handler's user check is a hit now).
    let (status, page) = app.get("/users/7/posts?page=1").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["total_posts"], 20);
    assert_eq!(page["posts"].as_array().unwrap().len(), 10);
    let page_key = app.key(|| app::db::user_posts_key(&7, &1)).await;
    assert_eq!(page_key, format!("{}:user:7:posts:page:1", app.namespace));
    let ttl = redis.pttl(&page_key);
    assert!(0 < ttl && ttl <= 300_000, "{page_key}: TTL {ttl} ms");
    let (_, again) = app.get("/users/7/posts?page=1").await;
    assert_eq!(again, page);
    let (_, page2) = app.get("/users/7/posts?page=2").await;
    assert_ne!(page2["posts"], page["posts"]);
    let runs = app.runs();
    assert_eq!((runs.get_user, runs.user_posts), (1, 2), "{runs:?}");

    // The dashboard: computed once, then the same aggregates.
    let (status, dash) = app.get("/dashboard").await;
    assert_eq!(status, StatusCode::OK, "{dash}");
    assert_eq!(dash["users"], SEED_USERS);
    assert_eq!(dash["posts"], SEED_USERS * 20);
    let (_, dash2) = app.get("/dashboard").await;
    assert_eq!(dash2["computed_at_ms"], dash["computed_at_ms"]);
    assert_eq!(app.runs().dashboard, 1);
    let dash_key = app.key(app::db::dashboard_key).await;
    assert!(redis.pttl(&dash_key) > 0, "{dash_key} is not in Redis");

    // A missing user is a 404, cached too: the second one queries nothing.
    let (status, _) = app.get("/users/424242").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = app.get("/users/424242").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(app.runs().get_user, 2);
    // ... and no page of a missing user is stored.
    let (status, _) = app.get("/users/424242/posts?page=1").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(app.runs().user_posts, 2);

    // Bad input never reaches the cache or the database.
    let (status, _) = app.get("/users/7/posts?page=0").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let stats = app.cache.stats();
    assert_eq!((stats.hits, stats.misses), (8, 5), "{stats:?}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_invalidate_exactly_what_they_change() {
    let redis = RedisServer::start();
    let app = TestApp::start("writes", &redis).await;

    // Prime: two users, their first pages, the dashboard.
    for path in [
        "/users/7",
        "/users/8",
        "/users/7/posts?page=1",
        "/users/8/posts?page=1",
        "/dashboard",
    ] {
        let (status, body) = app.get(path).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
    }
    let (_, dash) = app.get("/dashboard").await;
    let base = app.runs();
    assert_eq!(
        base,
        BodyRunCounts {
            get_user: 2,
            user_posts: 2,
            dashboard: 1
        }
    );

    // PUT of the bio: user 7's entry goes, user 8's and the dashboard stay.
    let (status, updated) = app
        .put("/users/7", json!({ "bio": "Now into caches." }))
        .await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(updated["bio"], "Now into caches.");
    let (_, user) = app.get("/users/7").await;
    assert_eq!(user, updated, "GET after PUT returned the old profile");
    app.get("/users/8").await;
    app.get("/dashboard").await;
    let runs = app.runs();
    assert_eq!(runs.get_user, base.get_user + 1, "{runs:?}");
    assert_eq!(
        runs.dashboard, base.dashboard,
        "a bio change invalidated the dashboard"
    );

    // A rename also reaches the dashboard (it lists names).
    let (status, _) = app.put("/users/7", json!({ "name": "Ann" })).await;
    assert_eq!(status, StatusCode::OK);
    let (_, user) = app.get("/users/7").await;
    assert_eq!(user["name"], "Ann");
    assert_eq!(user["bio"], "Now into caches.");
    app.get("/dashboard").await;
    assert_eq!(app.runs().dashboard, base.dashboard + 1);

    // Failed writes invalidate nothing.
    let before = app.runs();
    let (status, _) = app.put("/users/7", json!({})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = app.put("/users/9999", json!({ "bio": "x" })).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    app.get("/users/7").await;
    assert_eq!(app.runs(), before);

    // A new post: user 7's pages and the dashboard reflect it, user 8's
    // page stays cached.
    let (status, post) = app
        .post(
            "/users/7/posts",
            json!({ "title": "Fresh", "body": "Just written." }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{post}");
    let post_id = post["id"].as_i64().unwrap();
    let (_, page) = app.get("/users/7/posts?page=1").await;
    assert_eq!(page["posts"][0]["id"], post_id, "{page}");
    assert_eq!(page["total_posts"], 21);
    assert_eq!(page["total_pages"], 3);
    let (_, dash_after) = app.get("/dashboard").await;
    assert_eq!(
        dash_after["posts"].as_i64(),
        dash["posts"].as_i64().map(|n| n + 1)
    );
    app.get("/users/8/posts?page=1").await;
    let runs = app.runs();
    assert_eq!(runs.user_posts, base.user_posts + 1, "{runs:?}");
    let (status, _) = app
        .post("/users/9999/posts", json!({ "title": "x", "body": "" }))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Deleting the post takes it off the page again.
    assert_eq!(
        app.delete(&format!("/users/7/posts/{post_id}")).await,
        StatusCode::NO_CONTENT
    );
    let (_, page) = app.get("/users/7/posts?page=1").await;
    assert_eq!(page["total_posts"], 20);
    assert_ne!(page["posts"][0]["id"], post_id);
    assert_eq!(
        app.delete(&format!("/users/7/posts/{post_id}")).await,
        StatusCode::NOT_FOUND
    );

    // Deleting the user: 404 at once, their pages are gone from Redis, the
    // dashboard counts one user less.
    let page_key = app.key(|| app::db::user_posts_key(&7, &1)).await;
    assert!(redis.exists(&page_key));
    assert_eq!(app.delete("/users/7").await, StatusCode::NO_CONTENT);
    assert!(!redis.exists(&page_key), "{page_key} survived delete_user");
    let (status, _) = app.get("/users/7").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = app.get("/users/7/posts?page=1").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, dash_after) = app.get("/dashboard").await;
    assert_eq!(dash_after["users"], SEED_USERS - 1);
    assert_eq!(dash_after["posts"], (SEED_USERS - 1) * 20);
    assert_eq!(app.delete("/users/7").await, StatusCode::NOT_FOUND);
    // User 8 was never touched.
    let (_, user8) = app.get("/users/8").await;
    assert_eq!(user8["name"], "User 8");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_and_metrics_count_hits_and_misses() {
    let redis = RedisServer::start();
    let app = TestApp::start("stats", &redis).await;

    for _ in 0..3 {
        assert_eq!(app.get("/users/3").await.0, StatusCode::OK);
    }
    for _ in 0..2 {
        assert_eq!(app.get("/dashboard").await.0, StatusCode::OK);
    }

    let (status, stats) = app.get("/cache/stats").await;
    assert_eq!(status, StatusCode::OK);
    // This router's cache: get_user 1 miss + 2 hits, dashboard 1 + 1.
    assert_eq!(stats["namespace"], app.namespace.as_str());
    assert_eq!(stats["store"], "redis");
    assert_eq!(stats["stats"]["hits"], 3, "{stats}");
    assert_eq!(stats["stats"]["misses"], 2, "{stats}");
    assert_eq!(stats["hit_ratio"], 0.6);
    let backend = match app.data {
        TestDb::Sqlite(_) => "sqlite",
        TestDb::Postgres { .. } => "postgres",
    };
    assert_eq!(stats["database"]["backend"], backend);
    assert_eq!(stats["database"]["body_runs"]["get_user"], 1);
    assert_eq!(stats["database"]["body_runs"]["dashboard"], 1);
    // Per function, per process (other tests of this binary add to them).
    let functions = stats["functions"].as_array().unwrap();
    let get_user = functions
        .iter()
        .find(|f| f["name"] == "app::db::get_user")
        .unwrap_or_else(|| panic!("no get_user in {stats}"));
    assert!(get_user["hits"].as_u64().unwrap() >= 2, "{get_user}");
    assert!(get_user["misses"].as_u64().unwrap() >= 1, "{get_user}");
    assert!(get_user["loads"].as_u64().unwrap() >= 1, "{get_user}");

    let response = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()[reqwest::header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let exposition = response.text().await.unwrap();
    let hits = sample(
        &exposition,
        r#"cache_hits_total{cache="app::db::get_user"}"#,
    )
    .unwrap_or_else(|| panic!("no get_user hits in:\n{exposition}"));
    assert!(hits >= 2.0, "cache_hits_total for get_user is {hits}");
    let misses = sample(
        &exposition,
        r#"cache_misses_total{cache="app::db::get_user"}"#,
    )
    .unwrap();
    assert!(misses >= 1.0);
    let loads = sample(
        &exposition,
        r#"cache_loads_total{cache="app::db::dashboard"}"#,
    )
    .unwrap();
    assert!(loads >= 1.0);
    assert!(
        exposition.contains("cache_store_operation_duration_seconds"),
        "no store latency histogram in:\n{exposition}"
    );
    assert!(
        exposition
            .contains(r#"http_requests_total{method="GET",route="/users/{id}",status="200"}"#),
        "no request counter in:\n{exposition}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_degrades_to_the_database_and_recovers() {
    let mut redis = RedisServer::start();
    let app = TestApp::start("outage", &redis).await;

    let (status, health) = app.get("/cache/health").await;
    assert_eq!(status, StatusCode::OK, "{health}");
    assert_eq!(health["healthy"], true);
    assert_eq!(health["store"], "redis");
    assert!(health["ping_ms"].as_f64().is_some(), "{health}");

    let (_, user) = app.get("/users/5").await;
    app.get("/users/5").await;
    assert_eq!(app.runs().get_user, 1);

    redis.kill();
    let (status, health) = app.get("/cache/health").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{health}");
    assert_eq!(health["healthy"], false);
    assert!(health["error"].is_string(), "{health}");

    // Every data endpoint still answers, from the database.
    let started = Instant::now();
    for _ in 0..3 {
        let (status, body) = app.get("/users/5").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, user);
    }
    assert_eq!(app.runs().get_user, 4, "each GET should query the database");
    assert_eq!(app.get("/users/5/posts?page=2").await.0, StatusCode::OK);
    assert_eq!(app.get("/dashboard").await.0, StatusCode::OK);
    let (status, updated) = app
        .put(
            "/users/5",
            json!({ "bio": "Written while Redis was down." }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    let (status, user) = app.get("/users/5").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(user["bio"], "Written while Redis was down.");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "requests during the outage took {:?}",
        started.elapsed()
    );
    let (status, _) = app.post("/cache/clear", json!({})).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);

    // Back: healthy again, and caching resumes.
    redis.restart();
    let healthy = eventually(Duration::from_secs(10), || async {
        app.get("/cache/health").await.0 == StatusCode::OK
    })
    .await;
    assert!(healthy, "/cache/health did not recover");
    // The PUT's invalidation failed while Redis was down and is retried in
    // the background: let it land first, or it could remove the entry
    // stored below.
    let delivered = eventually(Duration::from_secs(15), || async {
        app.cache.stats().invalidations >= 1
    })
    .await;
    assert!(
        delivered,
        "the failed invalidation was never retried: {:?}",
        app.cache.stats()
    );
    let key = app.key(|| app::db::get_user_key(&5)).await;
    let cached = eventually(Duration::from_secs(10), || async {
        app.get("/users/5").await;
        redis.exists(&key)
    })
    .await;
    assert!(cached, "{key} was never stored after the restart");
    let runs = app.runs().get_user;
    let (status, body) = app.get("/users/5").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, user);
    assert_eq!(
        app.runs().get_user,
        runs,
        "not served from Redis after recovery"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clear_removes_this_namespace_only() {
    let redis = RedisServer::start();
    let app = TestApp::start_with("clear", &redis, Some("s3cret")).await;

    for path in [
        "/users/1",
        "/users/2",
        "/users/1/posts?page=1",
        "/dashboard",
    ] {
        assert_eq!(app.get(path).await.0, StatusCode::OK, "{path}");
    }
    let own = app.own_keys(&redis);
    // user:1, user:2, the page, its tag version, the dashboard.
    assert_eq!(own.len(), 5, "{own:?}");
    redis.cli(&["SET", "other-service:user:1", "{}"]);

    // Admin only.
    let response = app
        .client
        .post(app.url("/cache/clear"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(app.own_keys(&redis).len(), 5);

    let response = app
        .client
        .post(app.url("/cache/clear"))
        .bearer_auth("s3cret")
        .send()
        .await
        .unwrap();
    let (status, body) = read(response).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["deleted"], 5, "{body}");
    assert_eq!(redis.keys(), vec!["other-service:user:1".to_owned()]);

    // The next GET is a miss that queries the database and stores again.
    let (misses, runs) = (app.cache.stats().misses, app.runs().get_user);
    assert_eq!(app.get("/users/1").await.0, StatusCode::OK);
    assert_eq!(app.cache.stats().misses, misses + 1);
    assert_eq!(app.runs().get_user, runs + 1);
    let key = app.key(|| app::db::get_user_key(&1)).await;
    assert!(redis.exists(&key));
    app.stop().await;
}
