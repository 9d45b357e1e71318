//! The "caching off" store: every lookup misses, every write is dropped.

use std::time::Duration;

use bytes::Bytes;

use super::{Store, StoreError};
use crate::policy::lease::{LeaseFor, LeaseReply, Token};

#[derive(Debug, Clone, Default)]
pub(crate) struct DisabledStore;

impl Store for DisabledStore {
    async fn get(&self, _key: &str) -> Result<Option<Bytes>, StoreError> {
        Ok(None)
    }
    async fn get_with_ttl(&self, _key: &str) -> Result<Option<(Bytes, Duration)>, StoreError> {
        Ok(None)
    }
    async fn set(&self, _key: &str, _value: Bytes, _ttl: Duration) -> Result<(), StoreError> {
        Ok(())
    }
    async fn delete(&self, _keys: &[String]) -> Result<u64, StoreError> {
        Ok(0)
    }
    async fn delete_pattern(&self, _pattern: &str) -> Result<u64, StoreError> {
        Ok(0)
    }
    // Never reached: calls bypass a disabled cache before any lease. A lease
    // that can never be filled keeps any caller from waiting on it.
    async fn lease(
        &self,
        _key: &str,
        _token: &Token,
        _lease_ttl: Duration,
        _purpose: LeaseFor,
    ) -> Result<LeaseReply, StoreError> {
        Ok(LeaseReply::Acquired)
    }
    async fn fill(
        &self,
        _key: &str,
        _token: &Token,
        _value: Bytes,
        _ttl: Duration,
    ) -> Result<bool, StoreError> {
        Ok(false)
    }
    async fn release(
        &self,
        _key: &str,
        _token: &Token,
        _restore: bool,
    ) -> Result<bool, StoreError> {
        Ok(false)
    }
}
