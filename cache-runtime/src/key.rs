//! Key formatting.
//!
//! | what | key |
//! |---|---|
//! | an entry | `<namespace>:<expanded template>[:<id>][:v<version>]` |
//! | an entry of a tenant | `<namespace>@<tenant>:<expanded template>[:<id>][:v<version>]` |
//! | a tag's version | `<namespace>[@<tenant>]#tag:<expanded tag>` |
//!
//! The namespace may contain neither `@` nor `#`, and a tenant is escaped
//! like any value (so it contains neither `:` nor `#`): a tenant's keys can
//! never equal another tenant's, or a shared key, whatever the templates say,
//! and a tag's version key can never equal an entry's key.
//!
//! Literal template text is written as the user wrote it. Every interpolated
//! value is *escaped*: the bytes that carry meaning in a key or in a Redis
//! glob pattern are percent-encoded, so
//!
//! - keys are injective: `("a:b", "c")` and `("a", "b:c")` can never produce
//!   the same key, because a value can not contain a raw `:`;
//! - a value can never widen a pattern invalidation: `*`, `?`, `[`, `]` and
//!   `\` inside a value are encoded, so only the template's own wildcards match;
//! - a value can never pick a Redis Cluster slot: `{` and `}` are encoded.
//!
//! Percent-encoding keeps common values readable (`user:42`,
//! `user:ann@example.com`) and is the same transformation another service can
//! do with its standard library (`urllib.parse.quote(v, safe=...)`,
//! `url.PathEscape` plus the listed bytes). Values whose escaped form is longer
//! than [`CacheBuilder::max_key_part_len`](crate::CacheBuilder::max_key_part_len)
//! are replaced by `#` and a SHA-256 prefix; `#` itself is escaped in values, so
//! a hashed segment can not collide with a literal one, and the same value
//! always hashes the same way in keys and in patterns.

use std::fmt::{self, Display, Write as _};

use sha2::{Digest, Sha256};

/// Bytes that are percent-encoded inside interpolated values.
///
/// `%` (the escape itself), `:` (the segment separator), `*?[]\` (Redis glob
/// syntax), `{}` (cluster hash tags), `#` (the hashed-segment marker), and
/// ASCII control characters and space (they make keys unreadable in
/// `redis-cli`).
#[inline]
fn needs_escape(b: u8) -> bool {
    matches!(
        b,
        b'%' | b':' | b'*' | b'?' | b'[' | b']' | b'\\' | b'{' | b'}' | b'#' | 0..=b' ' | 0x7f
    )
}

/// Appends `value` to `out`, percent-encoding `%`, `:`, `*`, `?`, `[`, `]`, `\`,
/// `{`, `}`, `#`, space and ASCII control characters.
pub fn escape_into(out: &mut String, value: &str) {
    let bytes = value.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if needs_escape(b) {
            out.push_str(&value[start..i]);
            push_percent(out, b);
            start = i + 1;
        }
    }
    out.push_str(&value[start..]);
}

fn push_percent(out: &mut String, b: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.push('%');
    out.push(HEX[(b >> 4) as usize] as char);
    out.push(HEX[(b & 0xf) as usize] as char);
}

/// Escapes one value, as it appears inside a key.
///
/// ```
/// assert_eq!(cache_runtime::key::escape("a:b*"), "a%3Ab%2A");
/// assert_eq!(cache_runtime::key::escape("ann@example.com"), "ann@example.com");
/// ```
pub fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    escape_into(&mut out, value);
    out
}

/// A `fmt::Write` adapter that escapes whatever `Display` writes into it, so a
/// value is formatted straight into the key buffer with no temporary `String`.
struct Escaper<'a>(&'a mut String);

impl fmt::Write for Escaper<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        escape_into(self.0, s);
        Ok(())
    }
}

/// Builds one key. The generated code calls [`lit`](KeyBuilder::lit) for
/// template text and [`arg`](KeyBuilder::arg) for each interpolated value.
#[derive(Debug)]
pub struct KeyBuilder {
    buf: String,
    max_part_len: usize,
}

/// What a [`KeyBuilder`] builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyKind {
    /// An entry's key.
    Entry,
    /// The key of a tag's version.
    Tag,
}

impl KeyBuilder {
    /// A key in `namespace`, in `tenant`'s keyspace when there is one.
    pub(crate) fn new(
        namespace: &str,
        tenant: Option<&str>,
        kind: KeyKind,
        max_part_len: usize,
    ) -> Self {
        let mut buf = String::with_capacity(namespace.len() + 48);
        buf.push_str(namespace);
        let mut k = KeyBuilder { buf, max_part_len };
        if let Some(tenant) = tenant {
            k.buf.push('@');
            k.arg(tenant);
        }
        match kind {
            KeyKind::Tag => k.buf.push_str("#tag:"),
            // An empty namespace without a tenant adds nothing.
            KeyKind::Entry if !k.buf.is_empty() => k.buf.push(':'),
            KeyKind::Entry => {}
        }
        k
    }

    /// Appends literal template text, unescaped.
    #[inline]
    pub fn lit(&mut self, text: &str) {
        self.buf.push_str(text);
    }

    /// Appends one interpolated value, escaped (and hashed when too long):
    /// its `Display` text.
    #[inline]
    pub fn arg<T: Display + ?Sized>(&mut self, value: &T) {
        let start = self.buf.len();
        // Writing into a String can not fail; a Display impl that reports an
        // error leaves what it wrote so far, which is still deterministic.
        let _ = write!(Escaper(&mut self.buf), "{value}");
        self.hash_long(start);
    }

    /// Appends one interpolated value that has no `Display`, escaped (and
    /// hashed when too long): its compact JSON (`serde_json`), so `None` is
    /// `null`, `Some("")` is `""`, `[1,2]` is `[1,2]` and `["1,2"]` is
    /// `["1,2"]`. A value that does not serialize (a map whose keys are
    /// not strings) gets a part of its own that no other call shares
    /// (`%!` and a unique number): never a hit, never another value's entry.
    pub fn arg_json<T: serde::Serialize + ?Sized>(&mut self, value: &T) {
        static UNIQUE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let start = self.buf.len();
        let mut json = Vec::with_capacity(32);
        match serde_json::to_writer(&mut json, value) {
            Ok(()) => escape_into(&mut self.buf, &String::from_utf8_lossy(&json)),
            Err(_) => {
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos());
                let n = UNIQUE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let _ = write!(self.buf, "%!{}-{nanos}-{n}", std::process::id());
            }
        }
        self.hash_long(start);
    }

    /// Replaces the part written since `start` by its hash when too long.
    #[inline]
    fn hash_long(&mut self, start: usize) {
        if self.buf.len() - start > self.max_part_len {
            let digest = Sha256::digest(&self.buf.as_bytes()[start..]);
            self.buf.truncate(start);
            self.buf.push('#');
            for b in &digest[..16] {
                let _ = write!(self.buf, "{b:02x}");
            }
        }
    }

    /// The finished key.
    #[inline]
    pub fn finish(self) -> String {
        self.buf
    }
}

/// Redis `stringmatchlen` semantics (`*`, `?`, `[...]`, `[^...]`, ranges and
/// `\` escapes), used by the in-memory store so that pattern invalidation
/// matches exactly the keys Redis' `SCAN MATCH` would.
///
/// ```
/// use cache_runtime::key::glob_match;
/// assert!(glob_match(b"app:user:42:posts:*", b"app:user:42:posts:page:1"));
/// assert!(!glob_match(b"app:user:4:posts:*", b"app:user:42:posts:page:1"));
/// ```
pub fn glob_match(pattern: &[u8], s: &[u8]) -> bool {
    let (mut p, mut i) = (0usize, 0usize);
    // Position to resume from after the last `*`: (pattern index, string index).
    let mut backtrack: Option<(usize, usize)> = None;
    loop {
        if p < pattern.len() {
            match pattern[p] {
                b'*' => {
                    while p < pattern.len() && pattern[p] == b'*' {
                        p += 1;
                    }
                    if p == pattern.len() {
                        return true;
                    }
                    backtrack = Some((p, i));
                    continue;
                }
                b'?' if i < s.len() => {
                    p += 1;
                    i += 1;
                    continue;
                }
                b'[' if i < s.len() => {
                    let (matched, next_p) = match_class(pattern, p, s[i]);
                    if matched {
                        p = next_p;
                        i += 1;
                        continue;
                    }
                }
                b'\\' if p + 1 < pattern.len() && i < s.len() && pattern[p + 1] == s[i] => {
                    p += 2;
                    i += 1;
                    continue;
                }
                c if i < s.len() && c == s[i] && c != b'?' && c != b'[' && c != b'\\' => {
                    p += 1;
                    i += 1;
                    continue;
                }
                // A trailing lone `\` matches itself, as in Redis.
                b'\\' if p + 1 == pattern.len() && i < s.len() && s[i] == b'\\' => {
                    p += 1;
                    i += 1;
                    continue;
                }
                _ => {}
            }
        } else if i == s.len() {
            return true;
        }
        // Mismatch: let the last `*` swallow one more byte, if there was one.
        match backtrack {
            Some((bp, bi)) if bi < s.len() => {
                backtrack = Some((bp, bi + 1));
                p = bp;
                i = bi + 1;
            }
            _ => return false,
        }
    }
}

/// Matches `c` against the class starting at `pattern[p] == b'['`. Returns
/// whether it matched and the index just past the class.
fn match_class(pattern: &[u8], mut p: usize, c: u8) -> (bool, usize) {
    p += 1;
    let negate = pattern.get(p) == Some(&b'^');
    if negate {
        p += 1;
    }
    let mut matched = false;
    loop {
        match pattern.get(p) {
            // Redis treats an unterminated class as ending at the pattern's end.
            None => break,
            Some(b']') => {
                p += 1;
                break;
            }
            Some(b'\\') if p + 1 < pattern.len() => {
                if pattern[p + 1] == c {
                    matched = true;
                }
                p += 2;
            }
            Some(&lo) if pattern.get(p + 1) == Some(&b'-') && p + 2 < pattern.len() => {
                let hi = pattern[p + 2];
                let (lo, hi) = if lo <= hi { (lo, hi) } else { (hi, lo) };
                if (lo..=hi).contains(&c) {
                    matched = true;
                }
                p += 3;
            }
            Some(&x) => {
                if x == c {
                    matched = true;
                }
                p += 1;
            }
        }
    }
    (matched != negate, p)
}

/// Whether literal template text contains Redis glob syntax, i.e. whether an
/// invalidation template is a pattern rather than one exact key.
pub fn is_pattern(template_text: &str) -> bool {
    template_text
        .bytes()
        .any(|b| matches!(b, b'*' | b'?' | b'['))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(ns: &str, parts: &[&str]) -> String {
        let mut k = KeyBuilder::new(ns, None, KeyKind::Entry, 128);
        k.lit("t");
        for p in parts {
            k.lit(":");
            k.arg(p);
        }
        k.finish()
    }

    #[test]
    fn escapes_meaningful_bytes_only() {
        assert_eq!(escape("42"), "42");
        assert_eq!(escape("a:b"), "a%3Ab");
        assert_eq!(escape("*?[]\\{}#% "), "%2A%3F%5B%5D%5C%7B%7D%23%25%20");
        assert_eq!(escape("é"), "é");
    }

    #[test]
    fn long_values_are_hashed_stably() {
        let long = "x".repeat(500);
        let a = key("ns", &[&long]);
        assert_eq!(a, key("ns", &[&long]));
        assert!(a.starts_with("ns:t:#"));
        assert_eq!(a.len(), "ns:t:#".len() + 32);
        assert_ne!(a, key("ns", &[&"y".repeat(500)]));
    }

    #[test]
    fn glob_matches_like_redis() {
        assert!(glob_match(b"*", b""));
        assert!(glob_match(b"a*c", b"abbbc"));
        assert!(!glob_match(b"a*c", b"abbbd"));
        assert!(glob_match(b"a?c", b"abc"));
        assert!(glob_match(b"a[bc]d", b"acd"));
        assert!(!glob_match(b"a[^bc]d", b"acd"));
        assert!(glob_match(b"a[a-c]d", b"abd"));
        assert!(glob_match(b"a\\*b", b"a*b"));
        assert!(!glob_match(b"a\\*b", b"axb"));
        assert!(glob_match(b"ns:user:*:posts:*", b"ns:user:1:posts:page:2"));
        assert!(!glob_match(
            b"ns:user:1:posts:*",
            b"ns:user:10:posts:page:2"
        ));
    }

    fn tenant_key(ns: &str, tenant: Option<&str>, kind: KeyKind, part: &str) -> String {
        let mut k = KeyBuilder::new(ns, tenant, kind, 128);
        k.lit("t:");
        k.arg(part);
        k.finish()
    }

    #[test]
    fn tenants_and_tags_have_their_own_keyspace() {
        assert_eq!(tenant_key("ns", None, KeyKind::Entry, "1"), "ns:t:1");
        assert_eq!(
            tenant_key("ns", Some("org-7"), KeyKind::Entry, "1"),
            "ns@org-7:t:1"
        );
        assert_eq!(
            tenant_key("ns", Some("a:b"), KeyKind::Entry, "1"),
            "ns@a%3Ab:t:1"
        );
        assert_eq!(tenant_key("ns", None, KeyKind::Tag, "1"), "ns#tag:t:1");
        assert_eq!(
            tenant_key("ns", Some("o"), KeyKind::Tag, "1"),
            "ns@o#tag:t:1"
        );
        assert_eq!(tenant_key("", None, KeyKind::Entry, "1"), "t:1");
        assert_eq!(tenant_key("", Some("o"), KeyKind::Entry, "1"), "@o:t:1");
    }

    proptest::proptest! {
        /// Two different tenants (or a tenant and no tenant) never share a
        /// key, whatever the tenant names and key values are.
        #[test]
        fn tenants_never_share_keys(
            t1 in proptest::option::of(".{0,10}"),
            t2 in proptest::option::of(".{0,10}"),
            a in ".{0,10}",
            b in ".{0,10}",
        ) {
            for kind in [KeyKind::Entry, KeyKind::Tag] {
                let same = tenant_key("ns", t1.as_deref(), kind, &a)
                    == tenant_key("ns", t2.as_deref(), kind, &b);
                proptest::prop_assert_eq!(same, t1 == t2 && a == b);
            }
            proptest::prop_assert_ne!(
                tenant_key("ns", t1.as_deref(), KeyKind::Entry, &a),
                tenant_key("ns", t2.as_deref(), KeyKind::Tag, &b)
            );
        }

        #[test]
        fn keys_are_injective(a in ".{0,12}", b in ".{0,12}", c in ".{0,12}", d in ".{0,12}") {
            let same = key("ns", &[&a, &b]) == key("ns", &[&c, &d]);
            proptest::prop_assert_eq!(same, a == c && b == d);
        }

        #[test]
        fn values_never_widen_patterns(
            a in "[a-z:*?\\[\\]\\\\{}%#]{0,8}",
            b in "[a-z:*?\\[\\]\\\\{}%#]{0,8}",
        ) {
            // The pattern "ns:t:<a>:*" must match the key of (b, anything)
            // exactly when a == b.
            let mut p = KeyBuilder::new("ns", None, KeyKind::Entry, 128);
            p.lit("t:");
            p.arg(&a);
            p.lit(":*");
            let pattern = p.finish();
            let target = key("ns", &[&b, "tail"]);
            proptest::prop_assert_eq!(glob_match(pattern.as_bytes(), target.as_bytes()), a == b);
        }
    }
}
