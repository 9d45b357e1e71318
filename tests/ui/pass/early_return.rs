//! `?` and early `return` inside the body behave as without the macro.
#![deny(warnings)]

use std::sync::atomic::{AtomicU32, Ordering::SeqCst};

use cache_runtime::{Cache, cached};

static CALLS: AtomicU32 = AtomicU32::new(0);

#[derive(Debug)]
#[allow(dead_code)] // the payload is only shown by `Debug`
enum AppError {
    Parse(std::num::ParseIntError),
    Negative,
}

impl From<std::num::ParseIntError> for AppError {
    fn from(e: std::num::ParseIntError) -> Self {
        AppError::Parse(e)
    }
}

#[cached(prefix = "parsed", id = "text")]
async fn parse(text: &str) -> Result<u32, AppError> {
    CALLS.fetch_add(1, SeqCst);
    // `?` converts through `From` into the declared error type.
    let n: i64 = text.trim().parse()?;
    if n < 0 {
        return Err(AppError::Negative);
    }
    if n == 0 {
        return Ok(0);
    }
    Ok(n as u32 * 2)
}

#[cached(prefix = "first_even:{start}:{end}")]
async fn first_even(start: u32, end: u32) -> Option<u32> {
    for v in start..end {
        if v % 2 == 0 {
            return Some(v);
        }
    }
    None
}

#[cached(prefix = "mutated", id = "n")]
async fn mutated(mut n: u32) -> u32 {
    n += 1;
    n
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let cache = Cache::builder().build().await.unwrap();
    Cache::scope(cache, async {
        assert_eq!(parse("21").await.unwrap(), 42);
        assert_eq!(parse("21").await.unwrap(), 42);
        assert_eq!(parse("0").await.unwrap(), 0);
        assert!(matches!(parse("x").await, Err(AppError::Parse(_))));
        assert!(matches!(parse("-1").await, Err(AppError::Negative)));
        assert_eq!(CALLS.load(SeqCst), 4);
        assert_eq!(first_even(3, 9).await, Some(4));
        assert_eq!(first_even(3, 4).await, None);
        assert_eq!(mutated(1).await, 2);
        assert_eq!(mutated(1).await, 2);
    })
    .await;
}
