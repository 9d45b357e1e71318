//! A store whose operations pass through a test hook (feature `testing`,
//! see [`crate::testing`]).

use std::time::Duration;

use bytes::Bytes;

use super::{Fetched, MemoryStore, RedisStore, Store, StoreError};
use crate::policy::lease::{LeaseFor, LeaseReply, Token};
use crate::testing::{Interpose, Phase, StoreOp};

/// The stores a hook can wrap.
#[derive(Debug, Clone)]
pub(crate) enum Wrapped {
    Redis(RedisStore),
    Memory(MemoryStore),
}

#[derive(Debug, Clone)]
pub(crate) struct InterposedStore {
    pub inner: Wrapped,
    pub hook: Interpose,
}

macro_rules! around {
    ($self:ident, $op:expr, $key:expr, $s:ident => $call:expr) => {{
        $self.hook.step($op, Phase::Sending, $key).await;
        let reply = match &$self.inner {
            Wrapped::Redis($s) => $call.await,
            Wrapped::Memory($s) => $call.await,
        };
        $self.hook.step($op, Phase::Answered, $key).await;
        reply
    }};
}

fn first(keys: &[String]) -> &str {
    keys.first().map_or("", String::as_str)
}

impl Store for InterposedStore {
    async fn get(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        around!(self, StoreOp::Get, key, s => s.get(key))
    }
    async fn get_with_ttl(&self, key: &str) -> Result<Option<(Bytes, Duration)>, StoreError> {
        around!(self, StoreOp::Get, key, s => s.get_with_ttl(key))
    }
    async fn fetch(
        &self,
        key: &str,
        with_ttl: bool,
        tags: &[String],
    ) -> Result<Fetched, StoreError> {
        around!(self, StoreOp::Fetch, key, s => s.fetch(key, with_ttl, tags))
    }
    async fn tag_versions(&self, tags: &[String], ttl: Duration) -> Result<Vec<u64>, StoreError> {
        around!(self, StoreOp::TagVersions, first(tags), s => s.tag_versions(tags, ttl))
    }
    async fn set(&self, key: &str, value: Bytes, ttl: Duration) -> Result<(), StoreError> {
        around!(self, StoreOp::Set, key, s => s.set(key, value.clone(), ttl))
    }
    async fn delete(&self, keys: &[String]) -> Result<u64, StoreError> {
        around!(self, StoreOp::Delete, first(keys), s => s.delete(keys))
    }
    async fn delete_pattern(&self, pattern: &str, keep: Option<&str>) -> Result<u64, StoreError> {
        around!(self, StoreOp::DeletePattern, pattern, s => s.delete_pattern(pattern, keep))
    }
    async fn lease(
        &self,
        key: &str,
        token: &Token,
        lease_ttl: Duration,
        purpose: LeaseFor,
    ) -> Result<LeaseReply, StoreError> {
        around!(self, StoreOp::Lease, key, s => s.lease(key, token, lease_ttl, purpose))
    }
    async fn fill(
        &self,
        key: &str,
        token: &Token,
        value: Bytes,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        around!(self, StoreOp::Fill, key, s => s.fill(key, token, value.clone(), ttl))
    }
    async fn release(&self, key: &str, token: &Token, restore: bool) -> Result<bool, StoreError> {
        around!(self, StoreOp::Release, key, s => s.release(key, token, restore))
    }
}
