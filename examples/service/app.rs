//! The HTTP side of the example service: state, router, handlers, and the
//! two middlewares (the cache scope, request metrics).
//!
//! Shared by `main.rs` and the HTTP tests (`tests/service.rs` includes this
//! file with `#[path]`), so it declares its one submodule with an explicit
//! path: `#[path]` resolves against this file's directory from either crate.

#[path = "db.rs"]
pub mod db;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use cache_runtime::Cache;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde::Deserialize;
use serde_json::json;

use db::{AppError, Db, MAX_PAGE, NewPost, UserPatch};

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub db: Db,
    /// The cache this router's requests run with (see [`with_cache`]).
    pub cache: Cache,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
    /// If set, `POST /cache/clear` requires `Authorization: Bearer <token>`.
    pub admin_token: Option<Arc<str>>,
}

impl AppState {
    pub fn new(db: Db, cache: Cache, metrics: PrometheusHandle) -> Self {
        AppState {
            db,
            cache,
            metrics,
            admin_token: None,
        }
    }
}

/// Installs the process-wide Prometheus recorder that the `metrics` facade
/// (and with it the cache runtime) reports to. Call once per process,
/// before the first cached call; a long-running process also runs
/// [`metrics_upkeep`].
pub fn install_metrics() -> Result<PrometheusHandle, Box<dyn std::error::Error + Send + Sync>> {
    // Explicit buckets: latencies render as Prometheus histograms, which
    // aggregate across instances (summaries do not).
    let buckets = [
        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    ];
    Ok(PrometheusBuilder::new()
        .set_buckets(&buckets)?
        .install_recorder()?)
}

/// Drains the recorder's histograms every few seconds (with
/// `install_recorder`, nobody else does); runs forever.
pub async fn metrics_upkeep(handle: PrometheusHandle) {
    let mut every = tokio::time::interval(Duration::from_secs(5));
    loop {
        every.tick().await;
        handle.run_upkeep();
    }
}

/// The service's routes.
pub fn router(state: AppState) -> Router {
    let cache = state.cache.clone();
    Router::new()
        .route(
            "/users/{id}",
            get(get_user).put(update_user).delete(delete_user),
        )
        .route("/users/{id}/posts", get(user_posts).post(create_post))
        .route("/users/{id}/posts/{post_id}", delete(delete_post))
        .route("/dashboard", get(dashboard))
        .route("/cache/health", get(cache_health))
        .route("/cache/stats", get(cache_stats))
        .route("/cache/clear", post(cache_clear))
        .route("/metrics", get(metrics))
        .layer(middleware::from_fn(http_metrics))
        .layer(middleware::from_fn_with_state(cache, with_cache))
        .with_state(state)
}

/// Runs each request with this router's cache in effect.
///
/// `#[cached]` functions use the innermost `Cache::scope` of the task they
/// run on, else the process-wide cache from `cache_runtime::install`. The
/// service installs its cache (which covers start-up warming and anything
/// a handler spawns), and the router scopes every request to the cache it
/// was built with as well, so that a router is self-contained: the HTTP
/// tests run many routers in one process, each with its own Redis
/// namespace, and axum serves each connection on a task of its own, which
/// would not inherit a scope from the code that built the router. The cost
/// is a task-local set and an `Arc` clone per request. A task spawned in a
/// handler starts outside the scope (wrap it too).
async fn with_cache(State(cache): State<Cache>, request: Request, next: Next) -> Response {
    Cache::scope(cache, next.run(request)).await
}

/// `http_requests_total{method,route,status}` and
/// `http_request_duration_seconds{method,route}`, labelled by route
/// template (`/users/{id}`), never by raw path, so label values stay few.
async fn http_metrics(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = request.method().as_str().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::histogram!("http_request_duration_seconds", "method" => method.clone(), "route" => route.clone())
        .record(started.elapsed().as_secs_f64());
    metrics::counter!("http_requests_total", "method" => method, "route" => route, "status" => status)
        .increment(1);
    response
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = match &self {
            AppError::NotFound(_) => StatusCode::NOT_FOUND,
            AppError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AppError::Db(e) => {
                tracing::error!(error = %e, "database error");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        let message = match &self {
            AppError::Db(_) => "internal error".to_owned(),
            other => other.to_string(),
        };
        (status, Json(json!({ "error": message }))).into_response()
    }
}

// ------------------------------------------------------------ data routes

async fn get_user(
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> Result<Json<db::User>, AppError> {
    db::get_user(&state.db, id)
        .await?
        .map(Json)
        .ok_or(AppError::NotFound("user"))
}

async fn update_user(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    Json(patch): Json<UserPatch>,
) -> Result<Json<db::User>, AppError> {
    Ok(Json(db::update_user(&state.db, id, patch).await?))
}

async fn delete_user(
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> Result<StatusCode, AppError> {
    db::delete_user(&state.db, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
struct PageQuery {
    page: Option<u32>,
}

async fn user_posts(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    Query(query): Query<PageQuery>,
) -> Result<Json<db::PostsPage>, AppError> {
    let page = query.page.unwrap_or(1);
    if !(1..=MAX_PAGE).contains(&page) {
        return Err(AppError::BadRequest(format!(
            "page must be between 1 and {MAX_PAGE}"
        )));
    }
    // An unknown user is a 404 (answered from the cache too), and no page
    // of theirs is ever stored.
    if db::get_user(&state.db, id).await?.is_none() {
        return Err(AppError::NotFound("user"));
    }
    Ok(Json(db::user_posts(&state.db, id, page).await?))
}

async fn create_post(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    Json(post): Json<NewPost>,
) -> Result<(StatusCode, Json<db::Post>), AppError> {
    let post = db::create_post(&state.db, id, post).await?;
    Ok((StatusCode::CREATED, Json(post)))
}

async fn delete_post(
    State(state): State<AppState>,
    Path((id, post_id)): Path<(i64, i64)>,
) -> Result<StatusCode, AppError> {
    db::delete_post(&state.db, id, post_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn dashboard(State(state): State<AppState>) -> Result<Json<db::Dashboard>, AppError> {
    Ok(Json(db::dashboard(&state.db).await?))
}

// ----------------------------------------------------------- admin routes

/// 200 with the store's health when it answers, 503 (same body) when it
/// does not: the service still answers every request then, from the
/// database, so this is the endpoint to alert on, not a liveness probe.
async fn cache_health(State(state): State<AppState>) -> Response {
    let health = state.cache.health().await;
    let status = if health.healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(health)).into_response()
}

/// This router's cache counters, the per-function figures and how many
/// times each cached read actually queried the database.
async fn cache_stats(State(state): State<AppState>) -> Json<serde_json::Value> {
    let cache = &state.cache;
    let stats = cache.stats();
    Json(json!({
        "namespace": cache.namespace(),
        "store": cache.store_kind(),
        "breaker": cache.breaker_state(),
        "hit_ratio": stats.hit_ratio(),
        "stats": stats,
        "functions": cache_runtime::function_stats(),
        "database": {
            "backend": state.db.backend(),
            "body_runs": state.db.body_runs(),
        },
    }))
}

/// Deletes every key of this cache's namespace (SCAN + UNLINK).
async fn cache_clear(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(token) = &state.admin_token {
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if presented != Some(&**token) {
            return (
                StatusCode::UNAUTHORIZED,
                Json(json!({ "error": "admin token required" })),
            )
                .into_response();
        }
    }
    let namespace = state.cache.namespace().to_owned();
    match state.cache.clear_namespace().await {
        Some(deleted) => {
            tracing::warn!(namespace, deleted, "cache namespace cleared by an admin");
            Json(json!({ "namespace": namespace, "deleted": deleted })).into_response()
        }
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({
                "namespace": namespace,
                "error": "the store did not confirm the deletion (unreachable?)",
            })),
        )
            .into_response(),
    }
}

/// Prometheus text format: the cache runtime's `cache_*` series and this
/// service's `http_*` series.
async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}
