//! Leases: how N processes missing one key run the body once, and how a
//! reader that started before an invalidation is kept from storing what it read.
//!
//! A lease lives in the entry's own key, so an invalidation that removes the
//! key (by exact key or by pattern) removes the lease with it, and on Redis
//! Cluster the lease and the value are always in the same slot. The key then
//! holds a *lease record* instead of a value:
//!
//! ```text
//! \xC1 "lease:" <token: 32 hex> ":" <deadline: server ms> ":" [<value being refreshed>]
//! ```
//!
//! The first byte, 0xC1, can not start a JSON document (it is not valid
//! UTF-8) and is the one byte MessagePack never uses, so a plain reader
//! (`redis-cli`, another service) can never mistake a lease for a value.
//!
//! - A miss takes a lease with [`LEASE`]: the key is set to an empty record
//!   with `NX`-like semantics (only when absent) and the lease's expiry. On
//!   Redis, a miss with no stale window first tries the same without Lua:
//!   `SET key <record> NX PX <ttl> GET` leases an absent key, or returns the
//!   value that is there; only another holder's record goes to the script,
//!   which knows the server's clock and takes an expired one over.
//! - A refresh (early or stale) takes a lease on the value that is there:
//!   the record then carries the old value, which readers keep serving.
//! - The holder fills with [`FILL`], which writes only while its own record
//!   is still there. An invalidation, a write-through or an expired lease
//!   taken over by someone else all replace the record, so a fill that
//!   started before them is dropped: the stale-set race can not happen.
//! - A holder whose body failed or was cancelled gives the lease back with
//!   [`RELEASE`] (restoring the value it was refreshing).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use bytes::Bytes;

use crate::Cache;
use crate::policy::tags;
use crate::stats::Counters;
use crate::store::Store;

/// The first bytes of every lease record.
pub(crate) const MARKER: &[u8] = b"\xC1lease:";
const TOKEN_LEN: usize = 32;

/// Takes a lease. KEYS[1] = key; ARGV = token, lease ms, and which present
/// value to lease over: "-1" any (a refresh), or `n` (a miss): a value with
/// at most `n` ms to live, i.e. expired and only kept to be served stale; a
/// value with more is fresh and returned. An absent key is always leased.
/// Returns 1 when the lease is ours, else the key's current content (a value
/// or another holder's record). A record past its deadline is taken over,
/// keeping the value it carries. Deadlines use the server's clock (TIME), so
/// client clocks never matter.
pub(crate) const LEASE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local head = '\193lease:' .. ARGV[1] .. ':' .. string.format('%.0f', now + tonumber(ARGV[2])) .. ':'
local v = redis.call('GET', KEYS[1])
if not v then
  redis.call('SET', KEYS[1], head, 'PX', ARGV[2])
  return 1
end
if string.sub(v, 1, 7) == '\193lease:' then
  local deadline, rest = string.match(v, '^\193lease:%x+:(%d+):(.*)$')
  if deadline and tonumber(deadline) <= now then
    if rest == '' then
      redis.call('SET', KEYS[1], head, 'PX', ARGV[2])
    else
      redis.call('SET', KEYS[1], head .. rest, 'KEEPTTL')
    end
    return 1
  end
  return v
end
local within = tonumber(ARGV[3])
local take = within < 0
if not take then
  local pttl = redis.call('PTTL', KEYS[1])
  take = pttl >= 0 and pttl <= within
end
if take then
  redis.call('SET', KEYS[1], head .. v, 'KEEPTTL')
  return 1
end
return v
";

/// Fills a leased key. KEYS[1] = key; ARGV = record prefix (marker + token +
/// ':'), value, PX. Writes only while the key still holds our record.
pub(crate) const FILL: &str = r"
local v = redis.call('GET', KEYS[1])
if v and string.sub(v, 1, #ARGV[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0
";

/// Gives a lease back. KEYS[1] = key; ARGV = record prefix, "1" to restore
/// the value the record carries (keeping its TTL) or "0" to remove the key.
pub(crate) const RELEASE: &str = r"
local v = redis.call('GET', KEYS[1])
if v and string.sub(v, 1, #ARGV[1]) == ARGV[1] then
  local rest = string.match(v, '^\193lease:%x+:%d+:(.*)$')
  if ARGV[2] == '1' and rest and rest ~= '' then
    redis.call('SET', KEYS[1], rest, 'KEEPTTL')
  else
    redis.call('DEL', KEYS[1])
  end
  return 1
end
return 0
";

/// One lease attempt's identity: unique across processes and attempts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Token(String);

impl Token {
    pub fn new() -> Self {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        // 64 random bits, then pid and a per-process sequence: two attempts
        // never share a token, even with a badly seeded generator.
        let random = fastrand::u64(..);
        let pid = std::process::id();
        let seq = SEQ.fetch_add(1, Relaxed) & 0xffff_ffff;
        Token(format!("{random:016x}{pid:08x}{seq:08x}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The prefix of every record this token holds: marker, token, ':'.
    pub fn record_prefix(&self) -> Vec<u8> {
        let mut p = Vec::with_capacity(MARKER.len() + TOKEN_LEN + 1);
        p.extend_from_slice(MARKER);
        p.extend_from_slice(self.0.as_bytes());
        p.push(b':');
        p
    }

    /// A record for this token, as the memory store writes it.
    pub fn record(&self, deadline_ms: u64, value: &[u8]) -> Vec<u8> {
        let mut r = self.record_prefix();
        r.extend_from_slice(deadline_ms.to_string().as_bytes());
        r.push(b':');
        r.extend_from_slice(value);
        r
    }
}

/// What a key holds, as far as leases go.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Content {
    /// A plain value.
    Value(Bytes),
    /// A lease record: its holder, deadline and the value it is refreshing.
    Leased {
        token: Bytes,
        deadline_ms: u64,
        value: Option<Bytes>,
    },
}

/// Tells a lease record from a value. A record that does not parse (a value
/// someone else wrote starting with the marker) counts as a value; it then
/// fails to decode and is treated as garbage.
pub(crate) fn classify(bytes: Bytes) -> Content {
    if !bytes.starts_with(MARKER) {
        return Content::Value(bytes);
    }
    let rest = &bytes[MARKER.len()..];
    let parsed = (|| {
        let token_end = rest.iter().position(|&b| b == b':')?;
        let after = &rest[token_end + 1..];
        let deadline_end = after.iter().position(|&b| b == b':')?;
        let deadline_ms = std::str::from_utf8(&after[..deadline_end])
            .ok()?
            .parse()
            .ok()?;
        let value_at = MARKER.len() + token_end + 1 + deadline_end + 1;
        Some((token_end, deadline_ms, value_at))
    })();
    match parsed {
        Some((token_end, deadline_ms, value_at)) => Content::Leased {
            token: bytes.slice(MARKER.len()..MARKER.len() + token_end),
            deadline_ms,
            value: (value_at < bytes.len()).then(|| bytes.slice(value_at..)),
        },
        None => Content::Value(bytes),
    }
}

/// What a lease is taken for, which decides whether it goes over a value
/// that is present.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LeaseFor {
    /// A miss: an absent key is leased; so is a value with at most
    /// `stale_within` to live (expired, kept only to be served stale). A
    /// value with more is fresh (filled since the lookup) and is returned.
    Miss { stale_within: Duration },
    /// A refresh: the present value is leased, and keeps being served.
    Refresh,
}

impl LeaseFor {
    /// The script's third argument.
    pub fn script_arg(self) -> i64 {
        match self {
            LeaseFor::Miss { stale_within } => {
                i64::try_from(stale_within.as_millis()).unwrap_or(i64::MAX)
            }
            LeaseFor::Refresh => -1,
        }
    }

    /// Whether a value with `remaining` to live is leased over.
    pub fn takes(self, remaining: Duration) -> bool {
        match self {
            LeaseFor::Miss { stale_within } => remaining <= stale_within,
            LeaseFor::Refresh => true,
        }
    }
}

/// The result of a lease attempt.
#[derive(Debug)]
pub(crate) enum LeaseReply {
    /// The lease is ours.
    Acquired,
    /// Someone else's: the key's current content.
    Held(Content),
}

// ------------------------------------------------ a lease this process holds

/// How a fill under a lease ended.
pub(crate) enum Filled {
    /// Stored while the lease was intact, and the tags' versions read at the
    /// same time are the ones recorded: safe to share.
    Stored(Bytes),
    /// The store did not answer: nothing is known to be stored.
    Unconfirmed(Bytes),
    /// The value could not be encoded (counted); the lease was given back.
    NotEncoded,
    /// The lease was gone (voided by an invalidation, or lost with a Redis
    /// restart), or a tag moved while the body ran: the result may predate
    /// an invalidation.
    Lost,
}

/// A lease this call holds. Dropped unfilled (the call was cancelled), it
/// is given back in the background so nobody waits for it to expire.
pub(crate) struct LeaseGuard {
    cache: Cache,
    key: String,
    pub(crate) token: Option<Token>,
}

impl LeaseGuard {
    pub(crate) fn new(cache: &Cache, key: &str, token: Token) -> Self {
        LeaseGuard {
            cache: cache.clone(),
            key: key.to_owned(),
            token: Some(token),
        }
    }

    /// Stores the encoded value (`None`: it could not be) if the lease is
    /// still ours; with `tags`, reads their versions at the same time (one
    /// round trip) and checks them against the `tag_versions` recorded
    /// before the body ran.
    pub(crate) async fn fill_encoded(
        mut self,
        bytes: Option<Vec<u8>>,
        tag_versions: &[u64],
        tags: &[String],
        ttl: Duration,
    ) -> Filled {
        let Some(token) = self.token.take() else {
            return Filled::NotEncoded;
        };
        let cache = &self.cache;
        let store = &cache.inner.store;
        let Some(bytes) = bytes else {
            if let Err(e) = store.release(&self.key, &token, true).await {
                cache.store_failed(&e);
            }
            return Filled::NotEncoded;
        };
        let shared = Bytes::from(bytes);
        let fill = store.fill(&self.key, &token, shared.clone(), ttl);
        let (filled, current) = if tags.is_empty() {
            (fill.await, Ok(true))
        } else {
            let now = store.fetch(&self.key, false, tags);
            let (filled, now) = futures_util::future::join(fill, now).await;
            (
                filled,
                now.map(|now| tags::current(tag_versions.iter().copied(), &now.tags)),
            )
        };
        match (filled, current) {
            (Ok(true), Ok(true)) => {
                Counters::bump(&cache.inner.counters.stores);
                Filled::Stored(shared)
            }
            (Ok(true), Ok(false)) => {
                // Stored, but a tag moved: readers will not serve it.
                Counters::bump(&cache.inner.counters.stores);
                Counters::bump(&cache.inner.counters.leases_lost);
                Filled::Lost
            }
            (Ok(false), _) => {
                Counters::bump(&cache.inner.counters.leases_lost);
                Filled::Lost
            }
            // Unreachable: nothing known to be stored; share the result with
            // this process's callers rather than send each to the database.
            (Err(e), _) | (Ok(true), Err(e)) => {
                cache.store_failed(&e);
                if e.is_unavailable() {
                    Filled::Unconfirmed(shared)
                } else {
                    Filled::Lost
                }
            }
        }
    }

    pub(crate) async fn release(mut self, restore: bool) {
        if let Some(token) = self.token.take()
            && let Err(e) = self
                .cache
                .inner
                .store
                .release(&self.key, &token, restore)
                .await
        {
            self.cache.store_failed(&e);
        }
    }
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        let Some(token) = self.token.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return; // no runtime: the lease expires on its own
        };
        let cache = self.cache.clone();
        let key = std::mem::take(&mut self.key);
        runtime.spawn(async move {
            let _ = cache.inner.store.release(&key, &token, true).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_unique_and_fixed_length() {
        let a = Token::new();
        let b = Token::new();
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), TOKEN_LEN);
        assert!(a.as_str().bytes().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn records_round_trip() {
        let t = Token::new();
        let empty = Bytes::from(t.record(1234, b""));
        assert_eq!(
            classify(empty),
            Content::Leased {
                token: Bytes::from(t.as_str().to_owned()),
                deadline_ms: 1234,
                value: None
            }
        );
        let with = Bytes::from(t.record(9, br#"{"a":1}"#));
        match classify(with) {
            Content::Leased { value, .. } => assert_eq!(value.as_deref(), Some(&br#"{"a":1}"#[..])),
            other => panic!("{other:?}"),
        }
        assert!(t.record(1, b"x").starts_with(&t.record_prefix()));
    }

    #[test]
    fn values_are_not_leases() {
        for v in [
            &br#"{"lease":1}"#[..],
            b"\xC1lease",
            b"\xC1lease:zz",
            b"null",
            b"",
        ] {
            assert_eq!(
                classify(Bytes::copy_from_slice(v)),
                Content::Value(Bytes::copy_from_slice(v))
            );
        }
        // A record must not parse as JSON.
        assert!(
            serde_json::from_slice::<serde_json::Value>(&Token::new().record(1, b"1")).is_err()
        );
    }
}
