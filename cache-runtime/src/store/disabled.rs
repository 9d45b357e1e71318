//! The "caching off" store: every lookup misses, every write is dropped.

use std::time::Duration;

use bytes::Bytes;

use super::{Store, StoreError};

#[derive(Debug, Clone, Default)]
pub(crate) struct DisabledStore;

impl Store for DisabledStore {
    async fn get(&self, _key: &str) -> Result<Option<Bytes>, StoreError> {
        Ok(None)
    }
    async fn set(&self, _key: &str, _value: Vec<u8>, _ttl: Duration) -> Result<(), StoreError> {
        Ok(())
    }
    async fn delete(&self, _keys: &[String]) -> Result<u64, StoreError> {
        Ok(0)
    }
    async fn delete_pattern(&self, _pattern: &str) -> Result<u64, StoreError> {
        Ok(0)
    }
}
