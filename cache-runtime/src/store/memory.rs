//! The embedded store: a bounded `moka` cache with a TTL per entry.
//!
//! Leases work as on Redis (same record format, same rules), with moka's
//! atomic per-key compute in place of Lua scripts: they close the stale-set
//! race between tasks of one process just as Redis leases do between processes.

use std::sync::LazyLock;
use std::time::{Duration, Instant};

use bytes::Bytes;
use moka::Expiry;
use moka::ops::compute::Op;

use super::{Fetched, Store, StoreError, parse_tag_version};
use crate::key::glob_match;
use crate::policy::lease::{Content, LeaseFor, LeaseReply, Token, classify};
use crate::policy::tags::new_tag_version;

#[derive(Debug, Clone)]
struct Entry {
    bytes: Bytes,
    expires_at: Instant,
}

impl Entry {
    fn remaining(&self) -> Duration {
        self.expires_at.saturating_duration_since(Instant::now())
    }
}

/// Expires each entry at the instant it was stored with.
struct PerEntryTtl;

impl Expiry<String, Entry> for PerEntryTtl {
    fn expire_after_create(&self, _key: &String, value: &Entry, _at: Instant) -> Option<Duration> {
        Some(value.remaining())
    }
    fn expire_after_update(
        &self,
        _key: &String,
        value: &Entry,
        _at: Instant,
        _remaining: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.remaining())
    }
}

/// Lease deadlines of the memory store: milliseconds on this process's
/// monotonic clock.
fn now_ms() -> u64 {
    static START: LazyLock<Instant> = LazyLock::new(Instant::now);
    START.elapsed().as_millis() as u64
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

    /// A live entry (moka may still hold one past its expiry until it evicts it).
    fn live(entry: Option<moka::Entry<String, Entry>>) -> Option<Entry> {
        entry
            .map(moka::Entry::into_value)
            .filter(|e| e.expires_at > Instant::now())
    }
}

impl Store for MemoryStore {
    async fn get(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        Ok(self.entries.get(key).map(|e| e.bytes))
    }

    async fn get_with_ttl(&self, key: &str) -> Result<Option<(Bytes, Duration)>, StoreError> {
        Ok(self.entries.get(key).map(|e| {
            let remaining = e.remaining();
            (e.bytes, remaining)
        }))
    }

    async fn fetch(
        &self,
        key: &str,
        with_ttl: bool,
        tags: &[String],
    ) -> Result<Fetched, StoreError> {
        let entry = self.entries.get(key);
        Ok(Fetched {
            pttl: entry.as_ref().filter(|_| with_ttl).map(Entry::remaining),
            value: entry.map(|e| e.bytes),
            tags: tags
                .iter()
                .map(|t| {
                    self.entries
                        .get(t)
                        .and_then(|e| parse_tag_version(&e.bytes))
                })
                .collect(),
        })
    }

    async fn tag_versions(&self, tags: &[String], ttl: Duration) -> Result<Vec<u64>, StoreError> {
        let mut versions = Vec::with_capacity(tags.len());
        for tag in tags {
            let mut version = 0;
            self.entries
                .entry_by_ref(tag.as_str())
                .and_compute_with(|current| {
                    let keep_until = Instant::now() + ttl;
                    match Self::live(current) {
                        Some(entry) if let Some(v) = parse_tag_version(&entry.bytes) => {
                            version = v;
                            if entry.expires_at < keep_until {
                                Op::Put(Entry {
                                    expires_at: keep_until,
                                    ..entry
                                })
                            } else {
                                Op::Nop
                            }
                        }
                        // Absent, expired or garbage: a fresh version.
                        _ => {
                            version = new_tag_version();
                            Op::Put(Entry {
                                bytes: Bytes::from(version.to_string()),
                                expires_at: keep_until,
                            })
                        }
                    }
                });
            versions.push(version);
        }
        Ok(versions)
    }

    async fn set(&self, key: &str, value: Bytes, ttl: Duration) -> Result<(), StoreError> {
        let entry = Entry {
            bytes: value,
            expires_at: Instant::now() + ttl,
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

    async fn delete_pattern(&self, pattern: &str, keep: Option<&str>) -> Result<u64, StoreError> {
        // Collect first: removing while iterating moka's map is allowed but
        // would make the count depend on iteration order.
        let matching: Vec<String> = self
            .entries
            .iter()
            .filter(|(k, _)| {
                glob_match(pattern.as_bytes(), k.as_bytes()) && Some(k.as_str()) != keep
            })
            .map(|(k, _)| String::clone(&k))
            .collect();
        self.delete(&matching).await
    }

    async fn lease(
        &self,
        key: &str,
        token: &Token,
        lease_ttl: Duration,
        purpose: LeaseFor,
    ) -> Result<LeaseReply, StoreError> {
        let now = now_ms();
        let deadline = now + lease_ttl.as_millis() as u64;
        let mut reply = LeaseReply::Acquired;
        self.entries
            .entry_by_ref(key)
            .and_compute_with(|current| match Self::live(current) {
                None => Op::Put(Entry {
                    bytes: Bytes::from(token.record(deadline, b"")),
                    expires_at: Instant::now() + lease_ttl,
                }),
                Some(entry) => match classify(entry.bytes.clone()) {
                    Content::Leased {
                        deadline_ms, value, ..
                    } if deadline_ms <= now => {
                        let value = value.unwrap_or_default();
                        let expires_at = if value.is_empty() {
                            Instant::now() + lease_ttl
                        } else {
                            entry.expires_at
                        };
                        Op::Put(Entry {
                            bytes: Bytes::from(token.record(deadline, &value)),
                            expires_at,
                        })
                    }
                    Content::Value(value) if purpose.takes(entry.remaining()) => Op::Put(Entry {
                        bytes: Bytes::from(token.record(deadline, &value)),
                        expires_at: entry.expires_at,
                    }),
                    content => {
                        reply = LeaseReply::Held(content);
                        Op::Nop
                    }
                },
            });
        Ok(reply)
    }

    async fn fill(
        &self,
        key: &str,
        token: &Token,
        value: Bytes,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let prefix = token.record_prefix();
        let mut filled = false;
        let mut value = Some(value);
        self.entries
            .entry_by_ref(key)
            .and_compute_with(|current| match Self::live(current) {
                Some(entry) if entry.bytes.starts_with(&prefix) => {
                    filled = true;
                    Op::Put(Entry {
                        bytes: value.take().unwrap_or_default(),
                        expires_at: Instant::now() + ttl,
                    })
                }
                _ => Op::Nop,
            });
        Ok(filled)
    }

    async fn release(&self, key: &str, token: &Token, restore: bool) -> Result<bool, StoreError> {
        let prefix = token.record_prefix();
        let mut released = false;
        self.entries
            .entry_by_ref(key)
            .and_compute_with(|current| match Self::live(current) {
                Some(entry) if entry.bytes.starts_with(&prefix) => {
                    released = true;
                    match classify(entry.bytes) {
                        Content::Leased {
                            value: Some(value), ..
                        } if restore => Op::Put(Entry {
                            bytes: value,
                            expires_at: entry.expires_at,
                        }),
                        _ => Op::Remove,
                    }
                }
                _ => Op::Nop,
            });
        Ok(released)
    }
}
