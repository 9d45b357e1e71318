//! Tags: invalidating every entry labelled `user:42` at once, at a cost that
//! does not depend on how many entries carry the label.
//!
//! Each tag has a *version*: a random 64-bit number under the tag's own key
//! (`<namespace>[@<tenant>]#tag:<tag>`, decimal text). An entry records the
//! versions of its tags when it is stored (in the value's envelope, see
//! [`crate::codec`]); a lookup reads the entry and the current versions in
//! one round trip and treats the entry as a miss when any differs.
//!
//! - Invalidating a tag deletes its version key: one `UNLINK`, whether the
//!   tag covers ten entries or ten million. No key is enumerated; the stale
//!   entries stay until their TTL and are never served.
//! - A tag without a version matches no entry. The next store gives it a
//!   fresh random version (the `ENSURE` script), so a version can not come back and
//!   revive old entries (2^-64 odds per re-creation).
//! - Versions are read *before* the body runs and recorded with its result:
//!   a tag invalidated while the body ran leaves the stored entry already
//!   stale, so it is recomputed rather than served (the stale-set race, for
//!   tags).
//! - A version key lives at least as long as the entries stored against it
//!   (each store extends it). If it expires or is evicted anyway, its entries
//!   become misses: eviction costs hits, never correctness.
//!
//! With [`CacheBuilder::tag_version_reuse`](crate::CacheBuilder::tag_version_reuse)
//! a process reuses versions it read within that window instead of reading
//! them again on each hit. An invalidation made by this process is seen at
//! once; one made by another process is seen after at most the window.

use std::time::Duration;

/// Returns the tag's version, creating a random one (`ARGV[1]`) if it has
/// none, and keeps the key for at least `ARGV[2]` ms. KEYS[1] = tag key.
/// One key per script: runs unchanged on Redis Cluster.
pub(crate) const ENSURE: &str = r"
local v = redis.call('GET', KEYS[1])
if not v or not tonumber(v) then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return ARGV[1]
end
local t = redis.call('PTTL', KEYS[1])
if t >= 0 and t < tonumber(ARGV[2]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return v
";

/// A fresh tag version: random, never zero. Formatted as decimal digits
/// only, so Lua's `tonumber` check in [`ENSURE`] accepts every one (it
/// compares text, not the number, so precision above 2^53 does not matter).
pub(crate) fn new_tag_version() -> u64 {
    fastrand::u64(1..)
}

/// Versions this process read recently, reused for a short window so a hit
/// does not read them again.
pub(crate) struct ReusedVersions {
    versions: moka::sync::Cache<String, u64>,
}

impl std::fmt::Debug for ReusedVersions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReusedVersions").finish_non_exhaustive()
    }
}

impl ReusedVersions {
    /// `None` when `window` is zero (versions are read on every lookup).
    pub fn new(window: Duration) -> Option<Self> {
        (!window.is_zero()).then(|| ReusedVersions {
            versions: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(window)
                .build(),
        })
    }

    /// Every version of `tags`, if all are known here.
    pub fn get_all(&self, tags: &[String]) -> Option<Vec<u64>> {
        tags.iter().map(|t| self.versions.get(t)).collect()
    }

    pub fn remember(&self, tags: &[String], versions: &[Option<u64>]) {
        for (tag, version) in tags.iter().zip(versions) {
            match version {
                Some(v) => self.versions.insert(tag.clone(), *v),
                None => self.versions.invalidate(tag),
            }
        }
    }

    /// Forgets every version (the namespace was cleared).
    pub fn forget_all(&self) {
        self.versions.invalidate_all();
    }

    /// Forgets `keys` (this process invalidated them).
    pub fn forget(&self, keys: &[String]) {
        for key in keys {
            self.versions.invalidate(key);
        }
    }
}

/// Whether a stored entry's recorded versions are all current.
pub(crate) fn current(recorded: impl ExactSizeIterator<Item = u64>, now: &[Option<u64>]) -> bool {
    recorded.len() == now.len() && recorded.zip(now).all(|(r, n)| Some(r) == *n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_nonzero_decimal() {
        for _ in 0..1000 {
            let v = new_tag_version();
            assert_ne!(v, 0);
            assert!(v.to_string().bytes().all(|b| b.is_ascii_digit()));
        }
    }

    #[test]
    fn an_entry_is_current_only_if_every_version_matches() {
        assert!(current([1u64, 2].into_iter(), &[Some(1), Some(2)]));
        assert!(!current([1u64, 2].into_iter(), &[Some(1), Some(3)]));
        assert!(!current([1u64, 2].into_iter(), &[Some(1), None]));
        assert!(!current([1u64].into_iter(), &[Some(1), Some(2)]));
        assert!(current([0u64; 0].into_iter(), &[]));
    }
}
