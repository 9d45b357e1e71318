//! The "caching off" store: every lookup misses, every write is dropped.

use std::time::Duration;

use bytes::Bytes;

use super::{Fetched, Store, StoreError};
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
    async fn fetch(
        &self,
        _key: &str,
        _with_ttl: bool,
        tags: &[String],
    ) -> Result<Fetched, StoreError> {
        Ok(Fetched {
            tags: vec![None; tags.len()],
            ..Fetched::default()
        })
    }
    async fn tag_versions(&self, _tags: &[String], _ttl: Duration) -> Result<Vec<u64>, StoreError> {
        // Never reached (a disabled cache stores nothing); an error keeps
        // anything from being stored if it ever is.
        Err(StoreError::Reply("caching is disabled".into()))
    }
    async fn set(&self, _key: &str, _value: Bytes, _ttl: Duration) -> Result<(), StoreError> {
        Ok(())
    }
    async fn delete(&self, _keys: &[String]) -> Result<u64, StoreError> {
        Ok(0)
    }
    async fn delete_pattern(&self, _pattern: &str, _keep: Option<&str>) -> Result<u64, StoreError> {
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
