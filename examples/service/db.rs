//! The data-access layer: the database handle, its schema and seed data, and
//! the `#[cached]` functions the HTTP handlers call.
//!
//! One code path for SQLite (the default: a file, no set-up) and Postgres
//! (`DATABASE_URL=postgres://...`), through sqlx's `Any` driver. What that
//! takes:
//! - placeholders are written `$1, $2, ...`: Postgres' syntax, which SQLite
//!   accepts too (a `$N` parameter binds the N-th argument in both);
//! - every integer column is `BIGINT` and read as `i64` (Postgres' `INT4`
//!   would be an `i32` under `Any`), `SUM` is cast back to `BIGINT` (it is
//!   `NUMERIC` in Postgres, which `Any` can not decode), timestamps are Unix
//!   seconds, and averages are computed in Rust rather than in SQL;
//! - the one piece of DDL that differs (an auto-generated post id) is chosen
//!   by backend.
//!
//! Caching good practice shown here:
//! - the database handle is a skipped parameter (`skip = [db]`): it does not
//!   change the result, so it is not part of the key;
//! - errors are `Result::Err` and never cached; the error type
//!   ([`AppError`]) is not even `Serialize`: only `Ok` values are stored;
//! - a missing user is `Ok(None)`, stored with `cache_none = true` (negative caching: a
//!   burst of lookups of an unknown id costs the database one query per TTL),
//!   and `delete_user` invalidates it, so a deleted user is a 404 at once;
//! - every write lists exactly the entries it changes, by the three kinds of
//!   invalidation: typed (`get_user(user_id)`, checked by rustc), a key
//!   pattern (`"user:{user_id}:posts:*"`), and a tag.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cache_runtime::cached;
use serde::{Deserialize, Serialize};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};

/// Posts per page of `GET /users/{id}/posts`.
pub const PER_PAGE: i64 = 10;
/// The highest page number served: bounds the number of distinct keys a
/// client can make the service create.
pub const MAX_PAGE: u32 = 1_000;
/// Posts each seeded user gets.
pub const SEED_POSTS_PER_USER: i64 = 20;
/// Users seeded by default (`SEED_USERS` overrides it).
pub const DEFAULT_SEED_USERS: i64 = 1_000;

// ------------------------------------------------------------------ errors

/// The service's error. Deliberately not `Serialize`: `#[cached]` stores
/// only `Ok` values, so an error is never cached and needs no encoding.
#[derive(Debug)]
pub enum AppError {
    /// The resource does not exist (404).
    NotFound(&'static str),
    /// The request is malformed (400).
    BadRequest(String),
    /// The database failed (500; the details go to the log, not the client).
    Db(sqlx::Error),
}

impl std::fmt::Display for AppError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AppError::NotFound(what) => write!(f, "{what} not found"),
            AppError::BadRequest(why) => write!(f, "bad request: {why}"),
            AppError::Db(e) => write!(f, "database error: {e}"),
        }
    }
}

impl std::error::Error for AppError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            AppError::Db(e) => Some(e),
            _ => None,
        }
    }
}

impl From<sqlx::Error> for AppError {
    fn from(e: sqlx::Error) -> Self {
        AppError::Db(e)
    }
}

// ------------------------------------------------------------------ models

/// A user and their profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub id: i64,
    pub name: String,
    pub email: String,
    pub bio: String,
    pub location: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub updated_at: i64,
}

/// The profile fields `PUT /users/{id}` may change; absent fields are kept.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserPatch {
    pub name: Option<String>,
    pub email: Option<String>,
    pub bio: Option<String>,
    pub location: Option<String>,
}

impl UserPatch {
    /// Rejects an empty patch and out-of-range fields.
    pub fn validate(&self) -> Result<(), AppError> {
        let fields = [
            ("name", &self.name, 1, 100),
            ("email", &self.email, 3, 200),
            ("bio", &self.bio, 0, 2_000),
            ("location", &self.location, 0, 100),
        ];
        if fields.iter().all(|(_, value, _, _)| value.is_none()) {
            return Err(AppError::BadRequest(
                "the patch changes nothing: set name, email, bio or location".into(),
            ));
        }
        for (field, value, min, max) in fields {
            if let Some(value) = value {
                let len = value.chars().count();
                if len < min || len > max {
                    return Err(AppError::BadRequest(format!(
                        "{field} must be {min} to {max} characters long"
                    )));
                }
            }
        }
        if let Some(email) = &self.email
            && !email.contains('@')
        {
            return Err(AppError::BadRequest("email must contain '@'".into()));
        }
        Ok(())
    }
}

/// A post.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Post {
    pub id: i64,
    pub user_id: i64,
    pub title: String,
    pub body: String,
    pub likes: i64,
    /// Unix seconds.
    pub created_at: i64,
}

/// The body of `POST /users/{id}/posts`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewPost {
    pub title: String,
    pub body: String,
}

impl NewPost {
    /// Rejects an empty or oversized post.
    pub fn validate(&self) -> Result<(), AppError> {
        let title = self.title.trim().chars().count();
        if !(1..=200).contains(&title) {
            return Err(AppError::BadRequest(
                "title must be 1 to 200 characters long".into(),
            ));
        }
        if self.body.chars().count() > 10_000 {
            return Err(AppError::BadRequest(
                "body must be at most 10000 characters long".into(),
            ));
        }
        Ok(())
    }
}

/// One page of a user's posts, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PostsPage {
    pub user_id: i64,
    pub page: u32,
    pub per_page: i64,
    pub total_posts: i64,
    pub total_pages: i64,
    pub posts: Vec<Post>,
}

/// A user ranked by how much they post.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopPoster {
    pub user_id: i64,
    pub name: String,
    pub posts: i64,
    pub likes: i64,
}

/// A post ranked by likes (no body: the dashboard is a summary).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PopularPost {
    pub id: i64,
    pub user_id: i64,
    pub title: String,
    pub likes: i64,
}

/// Users and posts per location.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocationStats {
    pub location: String,
    pub users: i64,
    pub posts: i64,
    pub likes: i64,
}

/// Aggregate statistics over the whole database: several scans and joins of
/// the posts table, the expensive read worth caching.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dashboard {
    pub users: i64,
    pub posts: i64,
    pub total_likes: i64,
    pub avg_posts_per_user: f64,
    pub top_posters: Vec<TopPoster>,
    pub most_liked: Vec<PopularPost>,
    pub by_location: Vec<LocationStats>,
    /// When the aggregates were computed (Unix milliseconds): the same value
    /// across responses means they came from the cache.
    pub computed_at_ms: i64,
    /// How long the queries took.
    pub query_ms: f64,
}

// ---------------------------------------------------------------- database

/// Which database the pool talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// How many times each cached read function's body ran (that is, queried
/// the database): the counters the tests and `/cache/stats` read to tell a
/// hit from a miss.
#[derive(Debug, Default)]
pub struct BodyRuns {
    pub get_user: AtomicU64,
    pub user_posts: AtomicU64,
    pub dashboard: AtomicU64,
}

/// A snapshot of [`BodyRuns`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BodyRunCounts {
    pub get_user: u64,
    pub user_posts: u64,
    pub dashboard: u64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Where the database is and how to prepare it.
#[derive(Debug, Clone)]
pub struct DbConfig {
    /// `sqlite://<path>?mode=rwc` or `postgres://...`.
    pub url: String,
    /// Users to seed into an empty database (each with
    /// [`SEED_POSTS_PER_USER`] posts).
    pub seed_users: i64,
    /// Postgres only: a schema to create and use (`search_path`) instead of
    /// `public`, so that tests sharing one database do not see each other.
    pub pg_schema: Option<String>,
    /// Pool size.
    pub max_connections: u32,
}

impl DbConfig {
    /// A SQLite database in the file `path` (created if missing).
    pub fn sqlite_file(path: &Path, seed_users: i64) -> Self {
        DbConfig {
            url: format!("sqlite://{}?mode=rwc", path.display()),
            seed_users,
            pg_schema: None,
            max_connections: 8,
        }
    }

    /// `DATABASE_URL` (a `postgres://` or `sqlite://` URL) or, when unset, the
    /// SQLite file `$SERVICE_DATA_DIR/service.db` (default: the temporary
    /// directory's `cache-service/`); `SEED_USERS` users (default 1,000).
    pub fn from_env() -> Result<Self, String> {
        let seed_users = match std::env::var("SEED_USERS") {
            Ok(v) => v
                .parse::<i64>()
                .ok()
                .filter(|n| *n >= 0)
                .ok_or_else(|| format!("SEED_USERS={v:?} is not a non-negative integer"))?,
            Err(_) => DEFAULT_SEED_USERS,
        };
        match std::env::var("DATABASE_URL") {
            Ok(url) if !url.is_empty() => {
                if !(url.starts_with("postgres://")
                    || url.starts_with("postgresql://")
                    || url.starts_with("sqlite:"))
                {
                    return Err(
                        "DATABASE_URL must start with postgres://, postgresql:// or sqlite:".into(),
                    );
                }
                Ok(DbConfig {
                    url,
                    seed_users,
                    pg_schema: None,
                    max_connections: 16,
                })
            }
            _ => {
                let dir = std::env::var_os("SERVICE_DATA_DIR")
                    .map(Into::into)
                    .unwrap_or_else(|| std::env::temp_dir().join("cache-service"));
                std::fs::create_dir_all(&dir)
                    .map_err(|e| format!("create {}: {e}", dir.display()))?;
                Ok(DbConfig::sqlite_file(&dir.join("service.db"), seed_users))
            }
        }
    }

    fn backend(&self) -> Backend {
        if self.url.starts_with("postgres") {
            Backend::Postgres
        } else {
            Backend::Sqlite
        }
    }
}

/// The database handle: a connection pool plus the body-run counters.
/// Cheap to clone.
#[derive(Debug, Clone)]
pub struct Db {
    pool: AnyPool,
    backend: Backend,
    runs: Arc<BodyRuns>,
}

/// A user's columns, in [`user_from_row`]'s order.
const USER_COLUMNS: &str = "id, name, email, bio, location, created_at, updated_at";
/// A post's columns, in [`post_from_row`]'s order.
const POST_COLUMNS: &str = "id, user_id, title, body, likes, created_at";

fn user_from_row(row: &AnyRow) -> Result<User, sqlx::Error> {
    Ok(User {
        id: row.try_get(0)?,
        name: row.try_get(1)?,
        email: row.try_get(2)?,
        bio: row.try_get(3)?,
        location: row.try_get(4)?,
        created_at: row.try_get(5)?,
        updated_at: row.try_get(6)?,
    })
}

fn post_from_row(row: &AnyRow) -> Result<Post, sqlx::Error> {
    Ok(Post {
        id: row.try_get(0)?,
        user_id: row.try_get(1)?,
        title: row.try_get(2)?,
        body: row.try_get(3)?,
        likes: row.try_get(4)?,
        created_at: row.try_get(5)?,
    })
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Seed data: the same for every run, so load runs and tests are comparable.
const BASE_TIME: i64 = 1_700_000_000;
const CITIES: [&str; 8] = [
    "Lisbon", "Osaka", "Nairobi", "Montreal", "Tallinn", "Lima", "Perth", "Oslo",
];
const TOPICS: [&str; 10] = [
    "databases",
    "caching",
    "async Rust",
    "distributed systems",
    "observability",
    "compilers",
    "networking",
    "storage engines",
    "type systems",
    "testing",
];

fn seed_user(id: i64) -> User {
    User {
        id,
        name: format!("User {id}"),
        email: format!("user{id}@example.com"),
        bio: format!(
            "Writes about {} and {}.",
            TOPICS[(id % 10) as usize],
            TOPICS[((id * 7 + 3) % 10) as usize]
        ),
        location: CITIES[(id % 8) as usize].to_owned(),
        created_at: BASE_TIME + id * 3_600,
        updated_at: BASE_TIME + id * 3_600,
    }
}

/// `($1, $2), ($3, $4)` for `rows` rows of `columns` values each.
fn values_placeholders(rows: usize, columns: usize) -> String {
    (0..rows)
        .map(|row| {
            let params: Vec<String> = (1..=columns)
                .map(|c| format!("${}", row * columns + c))
                .collect();
            format!("({})", params.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

impl Db {
    /// Connects, creates the schema if missing and seeds an empty database.
    pub async fn connect(config: DbConfig) -> Result<Db, sqlx::Error> {
        sqlx::any::install_default_drivers();
        let backend = config.backend();
        let schema = config.pg_schema.clone();
        if let Some(schema) = &schema {
            let valid = !schema.is_empty()
                && schema
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_');
            if backend != Backend::Postgres || !valid {
                return Err(sqlx::Error::Configuration(
                    format!("pg_schema {schema:?}: Postgres only, [A-Za-z0-9_]+").into(),
                ));
            }
            // The schema must exist before a connection selects it.
            let pool = AnyPoolOptions::new()
                .max_connections(1)
                .connect(&config.url)
                .await?;
            sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
                .execute(&pool)
                .await?;
            pool.close().await;
        }
        let pool = AnyPoolOptions::new()
            .max_connections(config.max_connections)
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(move |conn, _meta| {
                let schema = schema.clone();
                Box::pin(async move {
                    match backend {
                        // WAL: readers do not block on the writer. NORMAL
                        // sync is durable enough in WAL mode.
                        Backend::Sqlite => {
                            sqlx::query("PRAGMA journal_mode = WAL")
                                .execute(&mut *conn)
                                .await?;
                            sqlx::query("PRAGMA synchronous = NORMAL")
                                .execute(&mut *conn)
                                .await?;
                        }
                        Backend::Postgres => {
                            if let Some(schema) = schema {
                                sqlx::query(&format!("SET search_path TO {schema}"))
                                    .execute(&mut *conn)
                                    .await?;
                            }
                        }
                    }
                    Ok(())
                })
            })
            .connect(&config.url)
            .await?;
        let db = Db {
            pool,
            backend,
            runs: Arc::default(),
        };
        db.create_schema().await?;
        db.seed(config.seed_users).await?;
        Ok(db)
    }

    /// Which database this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// How many times each cached read's body ran.
    pub fn body_runs(&self) -> BodyRunCounts {
        BodyRunCounts {
            get_user: self.runs.get_user.load(Ordering::Relaxed),
            user_posts: self.runs.user_posts.load(Ordering::Relaxed),
            dashboard: self.runs.dashboard.load(Ordering::Relaxed),
        }
    }

    /// Closes the pool.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    async fn create_schema(&self) -> Result<(), sqlx::Error> {
        let post_id = match self.backend {
            // A rowid alias: assigned on insert.
            Backend::Sqlite => "INTEGER PRIMARY KEY",
            Backend::Postgres => "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY",
        };
        let statements = [
            "CREATE TABLE IF NOT EXISTS users (
                id BIGINT PRIMARY KEY,
                name TEXT NOT NULL,
                email TEXT NOT NULL,
                bio TEXT NOT NULL,
                location TEXT NOT NULL,
                created_at BIGINT NOT NULL,
                updated_at BIGINT NOT NULL
            )"
            .to_owned(),
            format!(
                "CREATE TABLE IF NOT EXISTS posts (
                    id {post_id},
                    user_id BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
                    title TEXT NOT NULL,
                    body TEXT NOT NULL,
                    likes BIGINT NOT NULL,
                    created_at BIGINT NOT NULL
                )"
            ),
            "CREATE INDEX IF NOT EXISTS posts_by_user ON posts (user_id, id)".to_owned(),
        ];
        for statement in statements {
            sqlx::query(&statement).execute(&self.pool).await?;
        }
        Ok(())
    }

    /// Seeds `users` users with their posts, in one transaction, if the
    /// database has no user yet: re-running the service keeps its data.
    async fn seed(&self, users: i64) -> Result<(), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let existing: i64 = sqlx::query("SELECT COUNT(*) FROM users")
            .fetch_one(&mut *tx)
            .await?
            .try_get(0)?;
        if existing > 0 || users == 0 {
            return Ok(());
        }
        let started = Instant::now();
        const USERS_PER_BATCH: i64 = 100;
        let mut first = 1;
        while first <= users {
            let last = (first + USERS_PER_BATCH - 1).min(users);
            let rows: Vec<User> = (first..=last).map(seed_user).collect();
            let placeholders = values_placeholders(rows.len(), 7);
            let sql = format!("INSERT INTO users ({USER_COLUMNS}) VALUES {placeholders}");
            let mut query = sqlx::query(&sql);
            for u in &rows {
                query = query
                    .bind(u.id)
                    .bind(u.name.clone())
                    .bind(u.email.clone())
                    .bind(u.bio.clone())
                    .bind(u.location.clone())
                    .bind(u.created_at)
                    .bind(u.updated_at);
            }
            query.execute(&mut *tx).await?;

            // Posts of this batch of users, inserted in a fixed order so
            // their generated ids are the same on every run.
            let posts: Vec<(i64, i64)> = (first..=last)
                .flat_map(|user| (1..=SEED_POSTS_PER_USER).map(move |k| (user, k)))
                .collect();
            for chunk in posts.chunks(500) {
                let placeholders = values_placeholders(chunk.len(), 5);
                let sql = format!(
                    "INSERT INTO posts (user_id, title, body, likes, created_at) VALUES {placeholders}"
                );
                let mut query = sqlx::query(&sql);
                for &(user, k) in chunk {
                    let topic = TOPICS[((user + k) % 10) as usize];
                    query = query
                        .bind(user)
                        .bind(format!("Notes on {topic}, part {k}"))
                        .bind(format!(
                            "User {user} shares lesson {k} learned about {topic} the hard way."
                        ))
                        .bind((user * 31 + k * 17) % 500)
                        .bind(BASE_TIME + user * 3_600 + k * 60);
                }
                query.execute(&mut *tx).await?;
            }
            first = last + 1;
        }
        tx.commit().await?;
        tracing::info!(
            users,
            posts = users * SEED_POSTS_PER_USER,
            took_ms = started.elapsed().as_millis() as u64,
            "seeded the database"
        );
        Ok(())
    }
}

// ------------------------------------------------------- cached reads

/// A user's profile; `Ok(None)` if there is no such user (cached too, with
/// `cache_none`: see the module docs). Key: `<ns>:user:<user_id>`.
#[cached(prefix = "user", id = "user_id", ttl = "10m", cache_none = true, skip = [db])]
pub async fn get_user(db: &Db, user_id: i64) -> Result<Option<User>, AppError> {
    bump(&db.runs.get_user);
    let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1");
    let row = sqlx::query(&sql)
        .bind(user_id)
        .fetch_optional(&db.pool)
        .await?;
    Ok(row.as_ref().map(user_from_row).transpose()?)
}

/// One page (from 1) of a user's posts, newest first. Key:
/// `<ns>:user:<user_id>:posts:page:<page>`, tagged `user:<user_id>:posts`
/// so that a new or deleted post invalidates every page of that user at the
/// cost of one deletion, however many pages are cached and however large
/// the keyspace is (a pattern would SCAN all of it).
///
/// The caller checks that the user exists ([`get_user`], cached), so no page
/// of an unknown user is ever stored.
#[cached(
    prefix = "user:{user_id}:posts:page:{page}",
    ttl = "5m",
    tags = ["user:{user_id}:posts"],
    skip = [db]
)]
pub async fn user_posts(db: &Db, user_id: i64, page: u32) -> Result<PostsPage, AppError> {
    bump(&db.runs.user_posts);
    let total_posts: i64 = sqlx::query("SELECT COUNT(*) FROM posts WHERE user_id = $1")
        .bind(user_id)
        .fetch_one(&db.pool)
        .await?
        .try_get(0)?;
    let sql = format!(
        "SELECT {POST_COLUMNS} FROM posts WHERE user_id = $1 ORDER BY id DESC LIMIT $2 OFFSET $3"
    );
    let rows = sqlx::query(&sql)
        .bind(user_id)
        .bind(PER_PAGE)
        .bind((i64::from(page) - 1) * PER_PAGE)
        .fetch_all(&db.pool)
        .await?;
    Ok(PostsPage {
        user_id,
        page,
        per_page: PER_PAGE,
        total_posts,
        total_pages: (total_posts + PER_PAGE - 1) / PER_PAGE,
        posts: rows.iter().map(post_from_row).collect::<Result<_, _>>()?,
    })
}

/// Aggregates over every user and post. Key: `<ns>:dashboard`. Recomputed
/// shortly before it expires by one caller (`early_refresh`), so the hot
/// key never expires into a burst of these queries; if the database fails
/// after expiry, the last value is served for up to an hour
/// (`stale_if_error`).
#[cached(prefix = "dashboard", ttl = "5m", early_refresh = true, stale_if_error = "1h", skip = [db])]
pub async fn dashboard(db: &Db) -> Result<Dashboard, AppError> {
    bump(&db.runs.dashboard);
    let started = Instant::now();
    let totals = sqlx::query(
        "SELECT (SELECT COUNT(*) FROM users),
                COUNT(*),
                CAST(COALESCE(SUM(likes), 0) AS BIGINT)
         FROM posts",
    )
    .fetch_one(&db.pool)
    .await?;
    let users: i64 = totals.try_get(0)?;
    let posts: i64 = totals.try_get(1)?;
    let total_likes: i64 = totals.try_get(2)?;

    let top_posters = sqlx::query(
        "SELECT u.id, u.name, COUNT(p.id) AS n, CAST(COALESCE(SUM(p.likes), 0) AS BIGINT) AS l
         FROM users u JOIN posts p ON p.user_id = u.id
         GROUP BY u.id, u.name
         ORDER BY n DESC, l DESC, u.id
         LIMIT 10",
    )
    .fetch_all(&db.pool)
    .await?
    .iter()
    .map(|r| {
        Ok(TopPoster {
            user_id: r.try_get(0)?,
            name: r.try_get(1)?,
            posts: r.try_get(2)?,
            likes: r.try_get(3)?,
        })
    })
    .collect::<Result<Vec<_>, sqlx::Error>>()?;

    let most_liked =
        sqlx::query("SELECT id, user_id, title, likes FROM posts ORDER BY likes DESC, id LIMIT 10")
            .fetch_all(&db.pool)
            .await?
            .iter()
            .map(|r| {
                Ok(PopularPost {
                    id: r.try_get(0)?,
                    user_id: r.try_get(1)?,
                    title: r.try_get(2)?,
                    likes: r.try_get(3)?,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()?;

    let by_location = sqlx::query(
        "SELECT u.location, COUNT(DISTINCT u.id), COUNT(p.id),
                CAST(COALESCE(SUM(p.likes), 0) AS BIGINT)
         FROM users u LEFT JOIN posts p ON p.user_id = u.id
         GROUP BY u.location
         ORDER BY u.location",
    )
    .fetch_all(&db.pool)
    .await?
    .iter()
    .map(|r| {
        Ok(LocationStats {
            location: r.try_get(0)?,
            users: r.try_get(1)?,
            posts: r.try_get(2)?,
            likes: r.try_get(3)?,
        })
    })
    .collect::<Result<Vec<_>, sqlx::Error>>()?;

    Ok(Dashboard {
        users,
        posts,
        total_likes,
        avg_posts_per_user: if users == 0 {
            0.0
        } else {
            posts as f64 / users as f64
        },
        top_posters,
        most_liked,
        by_location,
        computed_at_ms: now_ms(),
        query_ms: started.elapsed().as_secs_f64() * 1e3,
    })
}

// ------------------------------------------------------------------ writes

/// Applies `patch` to a user's profile. Invalidates the user's entry
/// (typed: rustc checks `get_user` takes an `i64`). The dashboard shows
/// names, so a renamed user also invalidates it, through its companion:
/// a patch of the bio or location leaves the dashboard cached.
#[cached(invalidate = [get_user(user_id)])]
pub async fn update_user(db: &Db, user_id: i64, patch: UserPatch) -> Result<User, AppError> {
    patch.validate()?;
    let sql = format!(
        "UPDATE users SET
            name = COALESCE($1, name),
            email = COALESCE($2, email),
            bio = COALESCE($3, bio),
            location = COALESCE($4, location),
            updated_at = $5
         WHERE id = $6
         RETURNING {USER_COLUMNS}"
    );
    let row = sqlx::query(&sql)
        .bind(patch.name.clone())
        .bind(patch.email)
        .bind(patch.bio)
        .bind(patch.location)
        .bind(now_secs())
        .bind(user_id)
        .fetch_optional(&db.pool)
        .await?
        .ok_or(AppError::NotFound("user"))?;
    if patch.name.is_some() {
        dashboard_invalidate().await;
    }
    Ok(user_from_row(&row)?)
}

/// Deletes a user and their posts. Invalidates the user's entry, every
/// cached page of their posts (a pattern: SCAN + UNLINK, so the dead
/// user's pages leave Redis instead of waiting for their TTL), and the
/// dashboard.
#[cached(invalidate = [get_user(user_id), "user:{user_id}:posts:*", dashboard()])]
pub async fn delete_user(db: &Db, user_id: i64) -> Result<(), AppError> {
    let mut tx = db.pool.begin().await?;
    sqlx::query("DELETE FROM posts WHERE user_id = $1")
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
    let deleted = sqlx::query("DELETE FROM users WHERE id = $1")
        .bind(user_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if deleted == 0 {
        // Dropping `tx` rolls back; `Err` invalidates nothing.
        return Err(AppError::NotFound("user"));
    }
    tx.commit().await?;
    Ok(())
}

/// Adds a post. Invalidates every page of the author's posts (their tag)
/// and the dashboard.
#[cached(invalidate = [tag("user:{user_id}:posts"), dashboard()])]
pub async fn create_post(db: &Db, user_id: i64, post: NewPost) -> Result<Post, AppError> {
    post.validate()?;
    let sql = format!(
        "INSERT INTO posts (user_id, title, body, likes, created_at)
         SELECT $1, $2, $3, 0, $4 WHERE EXISTS (SELECT 1 FROM users WHERE id = $1)
         RETURNING {POST_COLUMNS}"
    );
    let row = sqlx::query(&sql)
        .bind(user_id)
        .bind(post.title.trim().to_owned())
        .bind(post.body)
        .bind(now_secs())
        .fetch_optional(&db.pool)
        .await?
        .ok_or(AppError::NotFound("user"))?;
    Ok(post_from_row(&row)?)
}

/// Deletes one of a user's posts. Invalidates the user's pages (their tag)
/// and the dashboard.
#[cached(invalidate = [tag("user:{user_id}:posts"), dashboard()])]
pub async fn delete_post(db: &Db, user_id: i64, post_id: i64) -> Result<(), AppError> {
    let deleted = sqlx::query("DELETE FROM posts WHERE id = $1 AND user_id = $2")
        .bind(post_id)
        .bind(user_id)
        .execute(&db.pool)
        .await?
        .rows_affected();
    if deleted == 0 {
        return Err(AppError::NotFound("post"));
    }
    Ok(())
}
