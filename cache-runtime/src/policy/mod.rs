//! Policies that keep a sick store from hurting callers.

pub(crate) mod breaker;
pub(crate) mod retry;

pub use breaker::BreakerState;
