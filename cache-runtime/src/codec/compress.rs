//! Compression of encoded payloads (lz4, zstd), and decompression guarded
//! against sizes no real value has.

use std::borrow::Cow;

use super::{CodecError, Compression};

/// The most a payload may decompress to: Redis's own limit on a string. A
/// size prefix or frame header announcing more is corruption, and believing
/// it would let one bad value allocate gigabytes.
#[cfg(any(feature = "lz4", feature = "zstd"))]
const MAX_DECOMPRESSED: usize = 512 << 20;

/// How a stored payload is compressed: the low nibble of the envelope's
/// second byte. Unlike [`Compression`], it carries no level (a zstd frame
/// decodes without it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Packing {
    None,
    #[cfg(feature = "lz4")]
    Lz4,
    #[cfg(feature = "zstd")]
    Zstd,
}

impl Packing {
    pub(super) const fn id(self) -> u8 {
        match self {
            Self::None => 0,
            #[cfg(feature = "lz4")]
            Self::Lz4 => 1,
            #[cfg(feature = "zstd")]
            Self::Zstd => 2,
        }
    }

    pub(super) fn from_id(id: u8) -> Result<Self, CodecError> {
        match id {
            0 => Ok(Self::None),
            #[cfg(feature = "lz4")]
            1 => Ok(Self::Lz4),
            #[cfg(not(feature = "lz4"))]
            1 => Err(CodecError::NotCompiled("lz4")),
            #[cfg(feature = "zstd")]
            2 => Ok(Self::Zstd),
            #[cfg(not(feature = "zstd"))]
            2 => Err(CodecError::NotCompiled("zstd")),
            id => Err(CodecError::BadHeader(format!(
                "unknown compression {id} (known: 0 none, 1 lz4, 2 zstd); \
                 written by a newer cache-runtime?"
            ))),
        }
    }
}

/// Compresses `payload` into a new buffer that starts with `head` zero
/// bytes (room for the envelope header). `None` for [`Compression::None`].
#[cfg_attr(
    not(any(feature = "lz4", feature = "zstd")),
    allow(unused_variables, clippy::unnecessary_wraps)
)]
pub(super) fn compress(
    compression: Compression,
    payload: &[u8],
    head: usize,
) -> Result<Option<(Packing, Vec<u8>)>, CodecError> {
    match compression {
        Compression::None => Ok(None),
        #[cfg(feature = "lz4")]
        Compression::Lz4 => {
            // The `compress_prepend_size` layout (u32 LE size, then the
            // block), written after the header without a second copy.
            let size = u32::try_from(payload.len()).map_err(|_| CodecError::Compress {
                algorithm: "lz4",
                reason: format!("{} bytes is more than lz4's 4 GiB", payload.len()),
            })?;
            let mut out =
                vec![0; head + 4 + lz4_flex::block::get_maximum_output_size(payload.len())];
            out[head..head + 4].copy_from_slice(&size.to_le_bytes());
            let n = lz4_flex::block::compress_into(payload, &mut out[head + 4..]).map_err(|e| {
                CodecError::Compress {
                    algorithm: "lz4",
                    reason: e.to_string(),
                }
            })?;
            out.truncate(head + 4 + n);
            Ok(Some((Packing::Lz4, out)))
        }
        #[cfg(feature = "zstd")]
        Compression::Zstd { level } => {
            let mut out = vec![0; head + zstd::zstd_safe::compress_bound(payload.len())];
            let n = zstd_contexts::compress(level, payload, &mut out[head..]).map_err(|e| {
                CodecError::Compress {
                    algorithm: "zstd",
                    reason: e.to_string(),
                }
            })?;
            out.truncate(head + n);
            Ok(Some((Packing::Zstd, out)))
        }
    }
}

/// The uncompressed payload: borrowed when it was not compressed.
#[inline]
pub(super) fn decompress(packing: Packing, payload: &[u8]) -> Result<Cow<'_, [u8]>, CodecError> {
    match packing {
        Packing::None => Ok(Cow::Borrowed(payload)),
        #[cfg(feature = "lz4")]
        Packing::Lz4 => lz4_decompress(payload).map(Cow::Owned),
        #[cfg(feature = "zstd")]
        Packing::Zstd => zstd_decompress(payload).map(Cow::Owned),
    }
}

#[cfg(feature = "lz4")]
fn lz4_decompress(payload: &[u8]) -> Result<Vec<u8>, CodecError> {
    let corrupt = |reason: String| CodecError::Decompress {
        algorithm: "lz4",
        reason,
    };
    let Some((size, block)) = payload.split_first_chunk::<4>() else {
        return Err(corrupt(format!(
            "{} bytes, shorter than the 4-byte size prefix",
            payload.len()
        )));
    };
    let size = u32::from_le_bytes(*size) as usize;
    // An lz4 block expands at most 255-fold (one length byte adds at most
    // 255 bytes of match): a larger announced size is corrupt.
    let plausible = block.len().saturating_mul(255).saturating_add(16);
    if size > MAX_DECOMPRESSED || size > plausible {
        return Err(corrupt(format!(
            "the size prefix announces {size} bytes from a {}-byte block \
             (at most {} are possible, {MAX_DECOMPRESSED} allowed)",
            block.len(),
            plausible.min(MAX_DECOMPRESSED)
        )));
    }
    let out = lz4_flex::block::decompress(block, size).map_err(|e| corrupt(e.to_string()))?;
    if out.len() != size {
        return Err(corrupt(format!(
            "{} bytes decompressed, the size prefix announces {size}",
            out.len()
        )));
    }
    Ok(out)
}

#[cfg(feature = "zstd")]
fn zstd_decompress(payload: &[u8]) -> Result<Vec<u8>, CodecError> {
    let corrupt = |reason: String| CodecError::Decompress {
        algorithm: "zstd",
        reason,
    };
    let size = match zstd::zstd_safe::get_frame_content_size(payload) {
        Ok(Some(size)) => usize::try_from(size).unwrap_or(usize::MAX),
        // We always write the content size; a frame without one (another
        // writer) is streamed, up to the limit.
        Ok(None) => {
            use std::io::Read;
            let mut out = Vec::new();
            zstd::stream::read::Decoder::with_buffer(payload)
                .and_then(|d| d.take(MAX_DECOMPRESSED as u64 + 1).read_to_end(&mut out))
                .map_err(|e| corrupt(e.to_string()))?;
            if out.len() > MAX_DECOMPRESSED {
                return Err(corrupt(format!(
                    "the frame decompresses to more than {MAX_DECOMPRESSED} bytes"
                )));
            }
            return Ok(out);
        }
        Err(_) => return Err(corrupt("not a zstd frame".to_owned())),
    };
    if size > MAX_DECOMPRESSED {
        return Err(corrupt(format!(
            "the frame announces {size} bytes ({MAX_DECOMPRESSED} allowed)"
        )));
    }
    zstd_contexts::decompress(payload, size).map_err(|e| corrupt(e.to_string()))
}

/// One zstd compression and one decompression context per thread: creating
/// them costs more than compressing a small value.
#[cfg(feature = "zstd")]
mod zstd_contexts {
    use std::cell::RefCell;
    use std::io;

    use zstd::bulk::{Compressor, Decompressor};

    thread_local! {
        static COMPRESSOR: RefCell<Option<(i32, Compressor<'static>)>> = const { RefCell::new(None) };
        static DECOMPRESSOR: RefCell<Option<Decompressor<'static>>> = const { RefCell::new(None) };
    }

    /// Compresses `src` at `level` into `dst` (at least `compress_bound`
    /// long); the compressed length.
    pub(super) fn compress(level: i32, src: &[u8], dst: &mut [u8]) -> io::Result<usize> {
        COMPRESSOR.with_borrow_mut(|slot| {
            let compressor = match slot {
                Some((current, compressor)) => {
                    if *current != level {
                        compressor.set_compression_level(level)?;
                        *current = level;
                    }
                    compressor
                }
                None => &mut slot.insert((level, Compressor::new(level)?)).1,
            };
            compressor.compress_to_buffer(src, dst)
        })
    }

    /// Decompresses `src`, which must decompress to at most `capacity` bytes.
    pub(super) fn decompress(src: &[u8], capacity: usize) -> io::Result<Vec<u8>> {
        DECOMPRESSOR.with_borrow_mut(|slot| {
            let decompressor = match slot {
                Some(decompressor) => decompressor,
                None => slot.insert(Decompressor::new()?),
            };
            decompressor.decompress(src, capacity)
        })
    }
}
