//! The embedded store: a bounded `moka` cache with a TTL per entry.

use std::time::{Duration, Instant};

use bytes::Bytes;
use moka::Expiry;

use super::{Store, StoreError};
use crate::key::glob_match;

#[derive(Debug, Clone)]
struct Entry {
    bytes: Bytes,
    ttl: Duration,
}

/// Expires each entry after the TTL it was stored with.
struct PerEntryTtl;

impl Expiry<String, Entry> for PerEntryTtl {
    fn expire_after_create(&self, _key: &String, value: &Entry, _at: Instant) -> Option<Duration> {
        Some(value.ttl)
    }
    fn expire_after_update(
        &self,
        _key: &String,
        value: &Entry,
        _at: Instant,
        _remaining: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.ttl)
    }
}

#[derive(Clone)]
pub(crate) struct MemoryStore {
    entries: moka::sync::Cache<String, Entry>,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("entries", &self.entries.entry_count())
            .finish()
    }
}

impl MemoryStore {
    pub fn new(max_entries: u64) -> Self {
        MemoryStore {
            entries: moka::sync::Cache::builder()
                .max_capacity(max_entries)
                .expire_after(PerEntryTtl)
                .build(),
        }
    }
}

impl Store for MemoryStore {
    async fn get(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        Ok(self.entries.get(key).map(|e| e.bytes))
    }

    async fn set(&self, key: &str, value: Vec<u8>, ttl: Duration) -> Result<(), StoreError> {
        let entry = Entry {
            bytes: Bytes::from(value),
            ttl,
        };
        self.entries.insert(key.to_owned(), entry);
        Ok(())
    }

    async fn delete(&self, keys: &[String]) -> Result<u64, StoreError> {
        let mut removed = 0;
        for key in keys {
            removed += u64::from(self.entries.remove(key).is_some());
        }
        Ok(removed)
    }

    async fn delete_pattern(&self, pattern: &str) -> Result<u64, StoreError> {
        // Collect first: removing while iterating moka's map is allowed but
        // would make the count depend on iteration order.
        let matching: Vec<String> = self
            .entries
            .iter()
            .filter(|(k, _)| glob_match(pattern.as_bytes(), k.as_bytes()))
            .map(|(k, _)| String::clone(&k))
            .collect();
        self.delete(&matching).await
    }
}
