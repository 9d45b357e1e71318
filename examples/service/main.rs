//! An example service: users, their posts and a dashboard, over axum and a
//! real database, with its data-access functions cached by `#[cached]`.
//!
//! ```text
//! cargo run --example service                       # SQLite file, in-memory cache
//! REDIS_URL=redis://127.0.0.1:6379 cargo run --example service
//! DATABASE_URL=postgres://user:pw@localhost/db cargo run --example service
//! CACHE_DISABLED=true cargo run --example service   # every request queries the database
//! ```
//!
//! Environment: `LISTEN` (default `127.0.0.1:3000`), `DATABASE_URL`
//! (`postgres://...` or `sqlite://...`; default: a SQLite file under
//! `SERVICE_DATA_DIR` or the temporary directory), `SEED_USERS` (default
//! 1000, seeded into an empty database), `ADMIN_TOKEN` (guards
//! `POST /cache/clear`), and the cache's own variables (`REDIS_URL`,
//! `CACHE_DISABLED`, `CACHE_NAMESPACE`, ...: see the README).
//!
//! Routes: `GET|PUT|DELETE /users/{id}`, `GET|POST /users/{id}/posts`
//! (`?page=N`), `DELETE /users/{id}/posts/{post_id}`, `GET /dashboard`,
//! `GET /cache/health`, `GET /cache/stats`, `POST /cache/clear`,
//! `GET /metrics`.

mod app;

use std::io::IsTerminal;

use app::db::{self, Db, DbConfig};
use cache_runtime::Cache;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();

    // Before the cache: the runtime's metrics go to whatever recorder is
    // installed when they are first emitted.
    let metrics = app::install_metrics()?;
    tokio::spawn(app::metrics_upkeep(metrics.clone()));

    // REDIS_URL set: Redis; unset: the embedded in-memory store;
    // CACHE_DISABLED=true: no caching at all.
    let cache = Cache::from_env().await?;
    cache_runtime::install(cache.clone());

    let config = DbConfig::from_env()?;
    let db = Db::connect(config).await?;

    let listen = std::env::var("LISTEN").unwrap_or_else(|_| "127.0.0.1:3000".to_owned());
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    tracing::info!(
        address = %listener.local_addr()?,
        database = ?db.backend(),
        cache_store = ?cache.store_kind(),
        namespace = cache.namespace(),
        "service listening"
    );

    // The dashboard is the one expensive read: compute and store it before
    // the first request needs it.
    Cache::warm(async {
        if let Err(e) = db::dashboard(&db).await {
            tracing::warn!(error = %e, "warming the dashboard failed");
        }
    })
    .await;

    let mut state = app::AppState::new(db.clone(), cache, metrics);
    state.admin_token = std::env::var("ADMIN_TOKEN")
        .ok()
        .filter(|t| !t.is_empty())
        .map(Into::into);
    axum::serve(listener, app::router(state))
        .with_graceful_shutdown(shutdown())
        .await?;
    db.close().await;
    tracing::info!("service stopped");
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM: in-flight requests finish, then `serve` returns.
async fn shutdown() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
