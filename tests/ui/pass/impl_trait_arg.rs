//! `impl Trait` arguments: skipped, or part of the key.
#![deny(warnings)]

use std::fmt::Display;
use std::sync::atomic::{AtomicU32, Ordering::SeqCst};

use cache_runtime::{Cache, cached};

static CALLS: AtomicU32 = AtomicU32::new(0);

#[cached(prefix = "report", id = "day", skip = [log])]
async fn report(log: impl Fn(&str) + Send, day: u32) -> String {
    CALLS.fetch_add(1, SeqCst);
    log("building");
    format!("report-{day}")
}

#[cached(prefix = "shown", id = "value")]
async fn shown(value: impl Display) -> String {
    value.to_string()
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    assert_eq!(report_key(&3), "cache:report:3");
    assert_eq!(shown_key(&7), "cache:shown:7");
    let cache = Cache::builder().build().await.unwrap();
    Cache::scope(cache, async {
        assert_eq!(report(|_| {}, 3).await, "report-3");
        assert_eq!(
            report(|m: &str| assert!(!m.is_empty()), 3).await,
            "report-3"
        );
        assert_eq!(CALLS.load(SeqCst), 1);
        assert_eq!(shown(7).await, "7");
    })
    .await;
}
