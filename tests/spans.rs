//! Each `#[cached]` read is a DEBUG `tracing` span named `cached` with the
//! function, the key and the outcome; an outage logs a few warnings, not one
//! per call.
//!
//! Alone in its binary: a thread-local subscriber (`set_default`) misses
//! callsites that another test thread registers at the same moment.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cache_runtime::{Cache, cached};
use common::RedisServer;

/// Spans named `cached`, with their recorded fields, and a count of the
/// WARN events of `cache_runtime`.
#[derive(Clone, Default)]
struct Spans(
    Arc<Mutex<Vec<HashMap<String, String>>>>,
    Arc<std::sync::atomic::AtomicU32>,
);

struct Fields<'a>(&'a mut HashMap<String, String>);

impl tracing::field::Visit for Fields<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.insert(
            field.name().to_owned(),
            format!("{value:?}").replace('"', ""),
        );
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

impl<S> tracing_subscriber::Layer<S> for Spans
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        _: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let name = attrs.metadata().name();
        if name != "cached" && name != "instrumented" {
            return;
        }
        let mut fields = HashMap::new();
        fields.insert("span".to_owned(), name.to_owned());
        fields.insert("id".to_owned(), id.into_u64().to_string());
        attrs.record(&mut Fields(&mut fields));
        self.0.lock().unwrap().push(fields);
    }

    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        let meta = event.metadata();
        if *meta.level() == tracing::Level::WARN && meta.target().starts_with("cache_runtime") {
            self.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    fn on_record(
        &self,
        id: &tracing::span::Id,
        values: &tracing::span::Record<'_>,
        _: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let id = id.into_u64().to_string();
        let mut spans = self.0.lock().unwrap();
        if let Some(fields) = spans.iter_mut().rev().find(|f| f["id"] == id) {
            values.record(&mut Fields(fields));
        }
    }
}

#[cached(prefix = "traced", id = "id", ttl = 60)]
async fn obs_traced(id: u32) -> u32 {
    id
}

/// `#[tracing::instrument]` below `#[cached]` wraps the whole call, so its
/// span is there on hits too (above `#[cached]` is a compile error).
#[cached(prefix = "instrumented", id = "id", ttl = 60)]
#[tracing::instrument(level = "info")]
async fn instrumented(id: u32) -> u32 {
    id
}

#[tokio::test]
async fn each_call_is_a_debug_span_with_its_outcome_and_outage_warnings_are_rate_limited() {
    use tracing_subscriber::layer::SubscriberExt;

    let spans = Spans::default();
    let subscriber = tracing_subscriber::registry()
        .with(spans.clone())
        .with(tracing_subscriber::filter::LevelFilter::DEBUG);
    let _default = tracing::subscriber::set_default(subscriber);
    let mut server = RedisServer::start();
    let cache = Cache::builder()
        .redis_url(server.url())
        .namespace("obs5")
        .build()
        .await
        .unwrap();
    Cache::scope(cache.clone(), async {
        obs_traced(7).await;
        obs_traced(7).await;
        instrumented(7).await;
        instrumented(7).await;
    })
    .await;
    let recorded = spans.0.lock().unwrap().clone();
    let instrumented: Vec<_> = recorded
        .iter()
        .filter(|f| f["span"] == "instrumented")
        .collect();
    assert_eq!(
        instrumented.len(),
        2,
        "a span per call, hit or miss: {recorded:?}"
    );
    let outcomes: Vec<_> = recorded
        .iter()
        .filter(|f| f.get("function").map(String::as_str) == Some("instrumented"))
        .map(|f| f["outcome"].as_str())
        .collect();
    assert_eq!(outcomes, ["miss", "hit"]);
    let ours: Vec<_> = recorded
        .iter()
        .filter(|f| f.get("function").map(String::as_str) == Some("obs_traced"))
        .collect();
    assert_eq!(ours.len(), 2, "{recorded:?}");
    assert_eq!(ours[0]["key"], "obs5:traced:7");
    assert_eq!(ours[0]["outcome"], "miss");
    assert_eq!(ours[1]["outcome"], "hit");

    // 500 calls during an outage (connection refused, then the breaker
    // open, then failing probes): at most one warning per 5 s window.
    assert_eq!(spans.1.load(std::sync::atomic::Ordering::SeqCst), 0);
    server.kill();
    Cache::scope(cache.clone(), async {
        for i in 0..500 {
            assert_eq!(obs_traced(i).await, i);
        }
    })
    .await;
    let warnings = spans.1.load(std::sync::atomic::Ordering::SeqCst);
    assert!((1..=2).contains(&warnings), "{warnings} warnings");
    assert!(cache.stats().store_errors + cache.stats().breaker_rejections >= 500);
}
