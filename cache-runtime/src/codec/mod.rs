//! Value encoding: the codec (JSON, MessagePack, postcard), optional
//! compression (lz4, zstd) and the envelope header that names both.
//!
//! By default a stored value is plain JSON, byte for byte what
//! `serde_json::to_vec` writes: what `redis-cli GET` shows is what a Python
//! or Go service can read. Any other choice (another codec, compression that
//! paid off, tag versions) wraps the payload in an envelope:
//!
//! ```text
//! byte 0     0xC2                      envelope marker
//! byte 1     codec << 4 | compression  codec: 0 JSON, 1 MessagePack, 2 postcard
//!                                      compression: 0 none, 1 lz4, 2 zstd
//! byte 2     n                         number of tag versions (0..=255)
//! 3 .. 3+8n  the tag versions          u64 little-endian each
//! rest       the payload               the codec's bytes, compressed if byte 1 says so
//! ```
//!
//! The first byte tells the three kinds of stored bytes apart: 0xC1 is a
//! lease record (see [`policy`](crate::policy)), 0xC2 an envelope, anything
//! else plain JSON (which starts with an ASCII byte). A value is always
//! decoded with the codec its header names, so a cache reconfigured from
//! JSON to MessagePack still reads the JSON values already stored, and a
//! value is never decoded by a codec it was not written with.
//!
//! Codecs and compressions other than JSON are behind cargo features of
//! `cache-runtime`: `msgpack`, `postcard`, `lz4`, `zstd`. A value written
//! with one the reading build lacks fails with [`CodecError::NotCompiled`].

mod compress;
#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use serde::{Serialize, de::DeserializeOwned};

use compress::Packing;

/// A value the cache can store: `Serialize + DeserializeOwned + Send`.
///
/// Implemented for every such type; the macro checks it on the function's
/// return type so a missing derive is reported there.
///
/// ```
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct User { id: u64, name: String }
///
/// fn assert_cacheable<T: cache_runtime::Cacheable>() {}
/// assert_cacheable::<User>();
/// assert_cacheable::<Vec<String>>();
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` can not be stored in the cache",
    label = "the cached value must implement `Serialize` and `DeserializeOwned`",
    note = "add `#[derive(serde::Serialize, serde::Deserialize)]` to the type, or cache a type that has it"
)]
pub trait Cacheable: Serialize + DeserializeOwned + Send {}

impl<T: Serialize + DeserializeOwned + Send> Cacheable for T {}

/// The first byte of an envelope (0xC1 is a lease record).
const ENVELOPE: u8 = 0xC2;
/// Marker, codec/compression byte, tag count.
const HEADER_LEN: usize = 3;

/// How values are serialized.
///
/// Parsed case-insensitively from `json`, `msgpack` (or `messagepack`) and
/// `postcard`; `Display` and [`name`](Self::name) give the canonical name.
///
/// - `Json` (the default): readable by `redis-cli` and any language.
/// - `MessagePack` (cargo feature `msgpack`): smaller and faster; structs
///   are written as maps with field names, so reordering fields is harmless
///   and other languages' MessagePack libraries read the values.
/// - `Postcard` (cargo feature `postcard`): the smallest and fastest, but
///   not self-describing: a value is read back by position, so changing a
///   struct's fields can decode old values wrongly instead of failing (bump
///   the namespace when the type changes), and types that need
///   `deserialize_any` (`#[serde(untagged)]`, `#[serde(flatten)]`,
///   `serde_json::Value`) can not be stored.
///
/// ```
/// use cache_runtime::Codec;
///
/// assert_eq!("JSON".parse::<Codec>(), Ok(Codec::Json));
/// assert_eq!(Codec::default().to_string(), "json");
///
/// // A codec whose cargo feature is not enabled is named in the error.
/// match "msgpack".parse::<Codec>() {
///     Ok(codec) => assert_eq!(codec.name(), "msgpack"),
///     Err(e) => assert!(e.to_string().contains("cargo feature `msgpack`")),
/// }
/// assert!("xml".parse::<Codec>().unwrap_err().to_string().contains("`postcard`"));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Codec {
    /// Plain JSON (`serde_json`).
    #[default]
    Json,
    /// MessagePack (`rmp-serde`), structs as maps.
    #[cfg(feature = "msgpack")]
    MessagePack,
    /// postcard: compact, positional, not self-describing.
    #[cfg(feature = "postcard")]
    Postcard,
}

impl Codec {
    /// The canonical name: `json`, `msgpack` or `postcard`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Json => "json",
            #[cfg(feature = "msgpack")]
            Self::MessagePack => "msgpack",
            #[cfg(feature = "postcard")]
            Self::Postcard => "postcard",
        }
    }

    /// The high nibble of the envelope's second byte.
    const fn id(self) -> u8 {
        match self {
            Self::Json => 0,
            #[cfg(feature = "msgpack")]
            Self::MessagePack => 1,
            #[cfg(feature = "postcard")]
            Self::Postcard => 2,
        }
    }

    fn from_id(id: u8) -> Result<Self, CodecError> {
        match id {
            0 => Ok(Self::Json),
            #[cfg(feature = "msgpack")]
            1 => Ok(Self::MessagePack),
            #[cfg(not(feature = "msgpack"))]
            1 => Err(CodecError::NotCompiled("msgpack")),
            #[cfg(feature = "postcard")]
            2 => Ok(Self::Postcard),
            #[cfg(not(feature = "postcard"))]
            2 => Err(CodecError::NotCompiled("postcard")),
            id => Err(CodecError::BadHeader(format!(
                "unknown codec {id} (known: 0 json, 1 msgpack, 2 postcard); \
                 written by a newer cache-runtime?"
            ))),
        }
    }
}

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Codec {
    type Err = ParseFormatError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let name = s.trim();
        let is = |canonical: &str| name.eq_ignore_ascii_case(canonical);
        if is("json") {
            Ok(Self::Json)
        } else if is("msgpack") || is("messagepack") {
            #[cfg(feature = "msgpack")]
            return Ok(Self::MessagePack);
            #[cfg(not(feature = "msgpack"))]
            return Err(ParseFormatError::not_compiled(s, "msgpack"));
        } else if is("postcard") {
            #[cfg(feature = "postcard")]
            return Ok(Self::Postcard);
            #[cfg(not(feature = "postcard"))]
            return Err(ParseFormatError::not_compiled(s, "postcard"));
        } else {
            Err(ParseFormatError::Unknown {
                kind: "codec",
                value: s.to_owned(),
            })
        }
    }
}

/// Whether and how the encoded payload is compressed.
///
/// Parsed case-insensitively from `none` (or `off`), `lz4`, `zstd` (level 3)
/// and `zstd:<level>`; `Display` gives the canonical form (`zstd:3`),
/// [`name`](Self::name) the algorithm alone.
///
/// A value is compressed only when its encoded form is at least the cache's
/// threshold (1 KiB by default) and compression actually makes it smaller;
/// otherwise it is stored uncompressed, so small values pay nothing.
///
/// - `Lz4` (cargo feature `lz4`): very fast, moderate ratio.
/// - `Zstd { level }` (cargo feature `zstd`): better ratio, slower; levels
///   from 1 (fastest) to 22 (smallest), negative levels faster still, 0 is
///   zstd's default (3).
///
/// ```
/// use cache_runtime::Compression;
///
/// assert_eq!("off".parse::<Compression>(), Ok(Compression::None));
/// assert_eq!(Compression::None.to_string(), "none");
///
/// match "zstd:9".parse::<Compression>() {
///     Ok(compression) => assert_eq!(compression.to_string(), "zstd:9"),
///     Err(e) => assert!(e.to_string().contains("cargo feature `zstd`")),
/// }
/// assert!("gzip".parse::<Compression>().unwrap_err().to_string().contains("`lz4`"));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Compression {
    /// Values are stored as encoded.
    #[default]
    None,
    /// lz4 block format (`lz4_flex`), with the uncompressed size prepended.
    #[cfg(feature = "lz4")]
    Lz4,
    /// A zstd frame at the given level.
    #[cfg(feature = "zstd")]
    Zstd {
        /// 1 (fastest) to 22 (smallest); 0 is zstd's default, 3.
        level: i32,
    },
}

impl Compression {
    /// zstd's default level, used by a bare `zstd`.
    #[cfg(feature = "zstd")]
    pub const ZSTD_DEFAULT_LEVEL: i32 = 3;

    /// The algorithm's name: `none`, `lz4` or `zstd`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            #[cfg(feature = "lz4")]
            Self::Lz4 => "lz4",
            #[cfg(feature = "zstd")]
            Self::Zstd { .. } => "zstd",
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            #[cfg(feature = "zstd")]
            Self::Zstd { level } => write!(f, "zstd:{level}"),
            other => f.write_str(other.name()),
        }
    }
}

impl FromStr for Compression {
    type Err = ParseFormatError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let trimmed = s.trim();
        let (name, level) = match trimmed.split_once(':') {
            Some((name, level)) => (name.trim(), Some(level.trim())),
            None => (trimmed, None),
        };
        let is = |canonical: &str| name.eq_ignore_ascii_case(canonical);
        let unknown = || ParseFormatError::Unknown {
            kind: "compression",
            value: s.to_owned(),
        };
        if is("zstd") {
            #[cfg(feature = "zstd")]
            return match level {
                None => Ok(Self::Zstd {
                    level: Self::ZSTD_DEFAULT_LEVEL,
                }),
                Some(level) => {
                    let range = zstd::compression_level_range();
                    match level.parse::<i32>() {
                        Ok(level) if range.contains(&level) => Ok(Self::Zstd { level }),
                        _ => Err(ParseFormatError::ZstdLevel {
                            value: s.to_owned(),
                            min: *range.start(),
                            max: *range.end(),
                        }),
                    }
                }
            };
            #[cfg(not(feature = "zstd"))]
            return Err(ParseFormatError::not_compiled(s, "zstd"));
        }
        if level.is_some() {
            return Err(unknown());
        }
        if is("none") || is("off") {
            Ok(Self::None)
        } else if is("lz4") {
            #[cfg(feature = "lz4")]
            return Ok(Self::Lz4);
            #[cfg(not(feature = "lz4"))]
            return Err(ParseFormatError::not_compiled(s, "lz4"));
        } else {
            Err(unknown())
        }
    }
}

/// A [`Codec`] or [`Compression`] name that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseFormatError {
    /// Not a name this crate knows.
    #[error("unknown {kind} `{value}`: expected {}", accepted(kind))]
    Unknown {
        /// `codec` or `compression`.
        kind: &'static str,
        /// The value as given.
        value: String,
    },
    /// A known name whose cargo feature this build does not enable.
    #[error(
        "`{value}` needs the cargo feature `{feature}` of cache-runtime, which this build does \
         not enable"
    )]
    NotCompiled {
        /// The value as given.
        value: String,
        /// The cargo feature of `cache-runtime` that provides it.
        feature: &'static str,
    },
    /// `zstd:<level>` with a level that is not an integer in zstd's range.
    #[error(
        "bad zstd level in `{value}`: expected `zstd` (level 3) or `zstd:<level>` with an integer \
         level from {min} to {max}"
    )]
    ZstdLevel {
        /// The value as given.
        value: String,
        /// The lowest level zstd accepts.
        min: i32,
        /// The highest level zstd accepts.
        max: i32,
    },
}

impl ParseFormatError {
    #[cfg(not(all(
        feature = "msgpack",
        feature = "postcard",
        feature = "lz4",
        feature = "zstd"
    )))]
    fn not_compiled(value: &str, feature: &'static str) -> Self {
        Self::NotCompiled {
            value: value.to_owned(),
            feature,
        }
    }
}

/// The accepted values of a `kind` of [`ParseFormatError::Unknown`], with
/// the ones this build has.
fn accepted(kind: &str) -> String {
    if kind == "codec" {
        let mut built = vec!["json"];
        if cfg!(feature = "msgpack") {
            built.push("msgpack");
        }
        if cfg!(feature = "postcard") {
            built.push("postcard");
        }
        format!(
            "`json`, `msgpack` (or `messagepack`) or `postcard`, in any case; this build has {}",
            built.join(", ")
        )
    } else {
        let mut built = vec!["none"];
        if cfg!(feature = "lz4") {
            built.push("lz4");
        }
        if cfg!(feature = "zstd") {
            built.push("zstd");
        }
        format!(
            "`none` (or `off`), `lz4`, `zstd` (level 3) or `zstd:<level>`, in any case; \
             this build has {}",
            built.join(", ")
        )
    }
}

/// Why a value could not be encoded or a stored value not decoded. The
/// messages name the codec or algorithm and are meant for logs.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// `Serialize` failed (a map with non-string keys in JSON, a custom
    /// impl that errors, a sequence of unknown length in postcard).
    #[error("could not encode the value as {codec}: {error}")]
    Encode {
        /// The codec's name.
        codec: &'static str,
        /// The codec's error.
        error: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The stored bytes are not a value of the requested type in the codec
    /// the header names: garbage, a foreign value, or a value written by
    /// another version of the type.
    #[error("the stored {codec} value does not decode into the requested type: {error}")]
    Decode {
        /// The codec's name.
        codec: &'static str,
        /// The codec's error.
        error: Box<dyn std::error::Error + Send + Sync>,
    },
    /// An envelope whose header is malformed (truncated, unknown codec or
    /// compression number).
    #[error("corrupt value envelope: {0}")]
    BadHeader(String),
    /// The value was written with a codec or compression whose cargo
    /// feature (of the same name) this build does not enable.
    #[error(
        "the value was written with {0}, which this build lacks (cargo feature `{0}` of \
         cache-runtime)"
    )]
    NotCompiled(&'static str),
    /// More tag versions than the header's one-byte count can hold.
    #[error("{0} tag versions for one value; an envelope holds at most 255")]
    TooManyTags(usize),
    /// The compressor failed.
    #[error("could not compress the value with {algorithm}: {reason}")]
    Compress {
        /// `lz4` or `zstd`.
        algorithm: &'static str,
        /// What went wrong.
        reason: String,
    },
    /// A compressed payload is corrupt or announces an absurd size.
    #[error("could not decompress the stored {algorithm} value: {reason}")]
    Decompress {
        /// `lz4` or `zstd`.
        algorithm: &'static str,
        /// What went wrong.
        reason: String,
    },
}

impl CodecError {
    #[cold]
    fn encode(codec: Codec, error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::Encode {
            codec: codec.name(),
            error: error.into(),
        }
    }

    #[cold]
    fn decode(codec: Codec, error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::Decode {
            codec: codec.name(),
            error: error.into(),
        }
    }
}

/// How a cache encodes the values it stores: codec, compression, and the
/// encoded size from which compression is tried.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Format {
    /// The codec new values are written with (any compiled-in codec is read).
    pub codec: Codec,
    /// The compression tried on large values.
    pub compression: Compression,
    /// Payloads shorter than this many bytes are never compressed.
    pub compress_above: usize,
}

impl Default for Format {
    /// Plain JSON, no compression, threshold 1 KiB.
    fn default() -> Self {
        Self {
            codec: Codec::Json,
            compression: Compression::None,
            compress_above: 1024,
        }
    }
}

impl Format {
    /// Encodes `value` with `tag_versions` (at most 255) in the header.
    ///
    /// JSON with no tag versions and no compression applied is plain JSON,
    /// byte-identical to `serde_json::to_vec`; anything else is an envelope.
    /// The result never starts with 0xC1 (a lease record).
    pub fn encode<T: Serialize + ?Sized>(
        &self,
        value: &T,
        tag_versions: &[u64],
    ) -> Result<Vec<u8>, CodecError> {
        let count = u8::try_from(tag_versions.len())
            .map_err(|_| CodecError::TooManyTags(tag_versions.len()))?;
        let plain = self.codec == Codec::Json && count == 0;
        let header_len = if plain {
            0
        } else {
            HEADER_LEN + 8 * tag_versions.len()
        };
        // 128: what serde_json::to_vec starts with.
        let mut out = Vec::with_capacity(header_len + 128);
        if !plain {
            out.extend_from_slice(&[ENVELOPE, self.codec.id() << 4, count]);
            for version in tag_versions {
                out.extend_from_slice(&version.to_le_bytes());
            }
        }
        write_payload(self.codec, &mut out, value)?;
        if out.len() - header_len < self.compress_above {
            return Ok(out);
        }
        // Plain JSON gains a header if compressed; an envelope keeps its own.
        let packed_header_len = header_len.max(HEADER_LEN);
        let Some((packing, mut packed)) =
            compress::compress(self.compression, &out[header_len..], packed_header_len)?
        else {
            return Ok(out);
        };
        if packed.len() >= out.len() {
            return Ok(out);
        }
        if plain {
            packed[..HEADER_LEN].copy_from_slice(&[ENVELOPE, Codec::Json.id() << 4, 0]);
        } else {
            packed[..header_len].copy_from_slice(&out[..header_len]);
        }
        packed[1] |= packing.id();
        Ok(packed)
    }
}

/// Serializes `value` after what `out` already holds.
fn write_payload<T: Serialize + ?Sized>(
    codec: Codec,
    out: &mut Vec<u8>,
    value: &T,
) -> Result<(), CodecError> {
    match codec {
        Codec::Json => serde_json::to_writer(out, value).map_err(|e| CodecError::encode(codec, e)),
        #[cfg(feature = "msgpack")]
        Codec::MessagePack => {
            rmp_serde::encode::write_named(out, value).map_err(|e| CodecError::encode(codec, e))
        }
        #[cfg(feature = "postcard")]
        Codec::Postcard => {
            *out = postcard::to_extend(value, std::mem::take(out))
                .map_err(|e| CodecError::encode(codec, e))?;
            Ok(())
        }
    }
}

/// Deserializes an uncompressed payload; trailing bytes are an error (but
/// for MessagePack).
fn read_payload<T: DeserializeOwned>(codec: Codec, payload: &[u8]) -> Result<T, CodecError> {
    match codec {
        Codec::Json => serde_json::from_slice(payload).map_err(|e| CodecError::decode(codec, e)),
        #[cfg(feature = "msgpack")]
        // `from_slice` (borrowing) decodes strings ~20% faster than a
        // reader that would tell where the value ends, so trailing bytes
        // are not checked: only a corrupt write leaves any.
        Codec::MessagePack => {
            rmp_serde::from_slice(payload).map_err(|e| CodecError::decode(codec, e))
        }
        #[cfg(feature = "postcard")]
        Codec::Postcard => match postcard::take_from_bytes(payload) {
            Ok((value, [])) => Ok(value),
            Ok((_, rest)) => Err(CodecError::decode(
                codec,
                format!("{} trailing bytes after the value", rest.len()),
            )),
            Err(e) => Err(CodecError::decode(codec, e)),
        },
    }
}

/// Parses a stored value (never a lease record: callers classify those
/// first). Anything not starting with the envelope marker is plain JSON.
/// Borrows `bytes`; allocates nothing unless the header is corrupt.
#[doc(hidden)]
#[inline]
pub fn split(bytes: &[u8]) -> Result<Stored<'_>, CodecError> {
    if bytes.first() != Some(&ENVELOPE) {
        return Ok(Stored {
            codec: Codec::Json,
            packing: Packing::None,
            tags: &[],
            payload: bytes,
        });
    }
    split_envelope(bytes)
}

fn split_envelope(bytes: &[u8]) -> Result<Stored<'_>, CodecError> {
    let [_, kinds, count, rest @ ..] = bytes else {
        return Err(CodecError::BadHeader(format!(
            "{} bytes, shorter than the {HEADER_LEN}-byte header",
            bytes.len()
        )));
    };
    let codec = Codec::from_id(kinds >> 4)?;
    let packing = Packing::from_id(kinds & 0x0F)?;
    let Some((tags, payload)) = rest.split_at_checked(8 * usize::from(*count)) else {
        return Err(CodecError::BadHeader(format!(
            "the header announces {count} tag versions ({} bytes) but only {} bytes follow it",
            8 * usize::from(*count),
            rest.len()
        )));
    };
    Ok(Stored {
        codec,
        packing,
        tags,
        payload,
    })
}

/// A stored value, parsed by [`split`]: its header, and its payload still
/// encoded (and compressed).
#[doc(hidden)]
#[derive(Debug, Clone, Copy)]
pub struct Stored<'a> {
    codec: Codec,
    packing: Packing,
    /// `8 * tag_count` bytes.
    tags: &'a [u8],
    payload: &'a [u8],
}

impl<'a> Stored<'a> {
    /// The codec the value was written with (and is decoded with).
    pub fn codec(&self) -> Codec {
        self.codec
    }

    /// Whether the payload is compressed.
    pub fn is_compressed(&self) -> bool {
        self.packing != Packing::None
    }

    /// How many tag versions the header carries (0 for plain JSON).
    pub fn tag_count(&self) -> usize {
        self.tags.len() / 8
    }

    /// The `i`-th tag version, in the order given to [`Format::encode`].
    ///
    /// # Panics
    ///
    /// If `i >= self.tag_count()`.
    pub fn tag_version(&self, i: usize) -> u64 {
        let mut le = [0; 8];
        le.copy_from_slice(&self.tags[8 * i..8 * i + 8]);
        u64::from_le_bytes(le)
    }

    /// The tag versions, in the order given to [`Format::encode`].
    pub fn tag_versions(&self) -> impl ExactSizeIterator<Item = u64> + use<'a> {
        self.tags
            .chunks_exact(8)
            .map(|le| u64::from_le_bytes(le.try_into().expect("chunks_exact yields 8 bytes")))
    }

    /// Decompresses the payload if needed and decodes it with the codec the
    /// header names.
    #[inline]
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, CodecError> {
        let payload: Cow<'_, [u8]> = compress::decompress(self.packing, self.payload)?;
        read_payload(self.codec, &payload)
    }
}
