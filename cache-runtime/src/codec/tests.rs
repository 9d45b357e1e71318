use std::collections::BTreeMap;

use proptest::prelude::*;
use serde::{Deserialize, Serialize};

use super::*;

/// The default format: plain JSON.
fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    Format::default().encode(value, &[])
}

/// What the cache does with a stored value.
fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    split(bytes)?.decode()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct User {
    id: u64,
    name: String,
    roles: Vec<String>,
    settings: BTreeMap<String, String>,
    nickname: Option<String>,
    active: bool,
    score: f64,
}

fn user(id: u64) -> User {
    User {
        id,
        name: format!("Jane Q. Example {id}"),
        roles: vec!["reader".into(), "editor".into()],
        settings: [("theme", "dark"), ("lang", "de")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        nickname: None,
        active: true,
        score: 0.75,
    }
}

/// Large and repetitive: every compression shrinks it.
fn users() -> Vec<User> {
    (0..200).map(user).collect()
}

/// Every codec this build has, found through `FromStr` so the list follows
/// the features.
fn codecs() -> Vec<Codec> {
    ["json", "msgpack", "postcard"]
        .into_iter()
        .filter_map(|name| name.parse().ok())
        .collect()
}

fn compressions() -> Vec<Compression> {
    ["none", "lz4", "zstd", "zstd:1", "zstd:19"]
        .into_iter()
        .filter_map(|name| name.parse().ok())
        .collect()
}

/// Every codec x compression, compressing whatever shrinks.
fn formats() -> Vec<Format> {
    let mut formats = Vec::new();
    for codec in codecs() {
        for compression in compressions() {
            formats.push(Format {
                codec,
                compression,
                compress_above: 0,
            });
        }
    }
    formats
}

/// `encode` then `split`, checking what every stored value must satisfy.
fn encode_split<T: Serialize + ?Sized>(format: &Format, value: &T, tags: &[u64]) -> Vec<u8> {
    let bytes = format.encode(value, tags).expect("encode");
    assert_ne!(
        bytes.first(),
        Some(&0xC1),
        "{format:?}: looks like a lease record"
    );
    let stored = split(&bytes).expect("split");
    assert_eq!(stored.codec(), format.codec);
    assert_eq!(stored.tag_count(), tags.len());
    assert_eq!(stored.tag_versions().collect::<Vec<_>>(), tags);
    for (i, &tag) in tags.iter().enumerate() {
        assert_eq!(stored.tag_version(i), tag);
    }
    bytes
}

#[test]
fn default_json_is_plain_serde_json() {
    let map: BTreeMap<&str, i32> = [("a", 1), ("b", 2)].into_iter().collect();
    let cases: Vec<(Vec<u8>, Vec<u8>)> = vec![
        (
            Format::default().encode(&user(1), &[]).unwrap(),
            serde_json::to_vec(&user(1)).unwrap(),
        ),
        // Above the threshold: still plain, nothing to compress with.
        (
            Format::default().encode(&users(), &[]).unwrap(),
            serde_json::to_vec(&users()).unwrap(),
        ),
        (
            encode("héllo").unwrap(),
            serde_json::to_vec("héllo").unwrap(),
        ),
        (encode(&42).unwrap(), b"42".to_vec()),
        (encode(&map).unwrap(), br#"{"a":1,"b":2}"#.to_vec()),
        (encode(&None::<u8>).unwrap(), b"null".to_vec()),
    ];
    for (ours, serde) in cases {
        assert_eq!(ours, serde);
        assert!(ours[0].is_ascii(), "no header: {:?}", ours[0]);
    }
    let plain = encode(&user(7)).unwrap();
    let stored = split(&plain).unwrap();
    assert_eq!((stored.codec(), stored.tag_count()), (Codec::Json, 0));
    assert!(!stored.is_compressed());
    assert_eq!(decode::<User>(&plain).unwrap(), user(7));
}

#[test]
fn round_trips_every_codec_and_compression() {
    let tag_lists: [&[u64]; 3] = [&[], &[7], &[0, u64::MAX, 42]];
    for format in formats() {
        for threshold in [0, 1024, usize::MAX] {
            let format = Format {
                compress_above: threshold,
                ..format
            };
            for tags in tag_lists {
                let small = encode_split(&format, &user(3), tags);
                assert_eq!(split(&small).unwrap().decode::<User>().unwrap(), user(3));
                let large = encode_split(&format, &users(), tags);
                let stored = split(&large).unwrap();
                assert_eq!(stored.decode::<Vec<User>>().unwrap(), users(), "{format:?}");
                // `users()` is over 1 KiB in every codec.
                let compressed = format.compression != Compression::None && threshold != usize::MAX;
                assert_eq!(stored.is_compressed(), compressed, "{format:?}");
                // Plain JSON exactly when nothing needs a header.
                let plain = format.codec == Codec::Json && tags.is_empty() && !compressed;
                assert_eq!(large[0] != ENVELOPE, plain, "{format:?} {tags:?}");
            }
        }
    }
}

#[test]
fn compresses_only_above_the_threshold_and_when_smaller() {
    for compression in compressions() {
        if compression == Compression::None {
            continue;
        }
        let format = |compress_above| Format {
            codec: Codec::Json,
            compression,
            compress_above,
        };
        let json = serde_json::to_vec(&users()).unwrap();
        // At the threshold: compressed, and smaller.
        let at = format(json.len()).encode(&users(), &[]).unwrap();
        assert!(split(&at).unwrap().is_compressed(), "{compression}");
        assert!(at.len() < json.len() / 4, "{compression}: {}", at.len());
        // One byte below it: left alone, so plain JSON.
        assert_eq!(format(json.len() + 1).encode(&users(), &[]).unwrap(), json);
        // Compressing `1` makes it larger: stored as is, without a header.
        assert_eq!(format(0).encode(&1, &[]).unwrap(), b"1");
        let tagged = format(0).encode(&1, &[5]).unwrap();
        assert_eq!(tagged.len(), HEADER_LEN + 8 + 1);
        assert!(!split(&tagged).unwrap().is_compressed());
    }
}

#[test]
fn the_header_names_the_codec_used_to_decode() {
    let mut decoded = 0;
    for format in formats() {
        for value in [user(1), user(2)] {
            let bytes = format.encode(&value, &[]).unwrap();
            // Decoded with the header's codec, whatever the cache is configured with.
            assert_eq!(decode::<User>(&bytes).unwrap(), value);
            assert_eq!(split(&bytes).unwrap().codec(), format.codec);
            decoded += 1;
        }
    }
    assert_eq!(decoded, 2 * codecs().len() * compressions().len());
    // JSON written by anything else is read as JSON.
    let foreign = br#"{"score":1.5,"id":9,"name":"x","roles":[],"settings":{},"nickname":"n","active":false}"#;
    assert_eq!(
        decode::<User>(foreign).unwrap().nickname.as_deref(),
        Some("n")
    );
}

#[cfg(feature = "msgpack")]
#[test]
fn messagepack_is_named_and_raw_messagepack_is_not_json() {
    let format = Format {
        codec: Codec::MessagePack,
        ..Format::default()
    };
    let bytes = format.encode(&user(5), &[]).unwrap();
    assert_eq!(&bytes[..3], &[ENVELOPE, 0x10, 0]);
    assert_eq!(split(&bytes).unwrap().codec(), Codec::MessagePack);
    assert_eq!(decode::<User>(&bytes).unwrap(), user(5));
    // Structs are maps: readable after the fields are reordered.
    #[derive(Debug, Deserialize)]
    struct Reordered {
        score: f64,
        id: u64,
    }
    let reordered: Reordered = decode(&bytes).unwrap();
    assert_eq!((reordered.id, reordered.score), (5, 0.75));
    // Without the header, MessagePack is (invalid) JSON: an error, never a misread.
    let raw = rmp_serde::to_vec_named(&user(5)).unwrap();
    match decode::<User>(&raw) {
        Err(e @ CodecError::Decode { codec: "json", .. }) => {
            assert!(
                e.to_string()
                    .starts_with("the stored json value does not decode"),
                "{e}"
            );
        }
        other => panic!("raw MessagePack read as JSON: {other:?}"),
    }
}

#[cfg(feature = "postcard")]
#[test]
fn postcard_rejects_trailing_bytes() {
    let format = Format {
        codec: Codec::Postcard,
        ..Format::default()
    };
    let mut bytes = format.encode(&(1u8, "x"), &[]).unwrap();
    assert_eq!(decode::<(u8, String)>(&bytes).unwrap(), (1, "x".to_owned()));
    bytes.push(0);
    let e = decode::<(u8, String)>(&bytes).unwrap_err();
    assert_eq!(
        e.to_string(),
        "the stored postcard value does not decode into the requested type: 1 trailing bytes \
         after the value"
    );
}

#[test]
fn tag_versions_are_limited_to_255() {
    let tags: Vec<u64> = (0..256).collect();
    let format = Format::default();
    let e = format.encode(&1, &tags).unwrap_err();
    assert!(matches!(e, CodecError::TooManyTags(256)), "{e}");
    assert_eq!(
        e.to_string(),
        "256 tag versions for one value; an envelope holds at most 255"
    );
    let bytes = encode_split(&format, &1, &tags[..255]);
    assert_eq!(bytes.len(), HEADER_LEN + 8 * 255 + 1);
    assert_eq!(split(&bytes).unwrap().tag_version(254), 254);
}

#[test]
fn corrupt_headers_are_errors() {
    let bad_header = |bytes: &[u8]| match split(bytes) {
        Err(CodecError::BadHeader(reason)) => reason,
        other => panic!("{bytes:?}: {other:?}"),
    };
    assert_eq!(
        bad_header(&[ENVELOPE, 0x00]),
        "2 bytes, shorter than the 3-byte header"
    );
    assert_eq!(
        bad_header(&[ENVELOPE, 0x00, 2, 1, 2, 3, 4, 5, 6, 7, 8, 9]),
        "the header announces 2 tag versions (16 bytes) but only 9 bytes follow it"
    );
    assert!(bad_header(&[ENVELOPE, 0x70, 0, b'1']).starts_with("unknown codec 7"));
    assert!(bad_header(&[ENVELOPE, 0x0F, 0, b'1']).starts_with("unknown compression 15"));
    let e = split(&[ENVELOPE, 0x70, 0]).unwrap_err().to_string();
    assert!(
        e.starts_with("corrupt value envelope: unknown codec 7"),
        "{e}"
    );
    // A header alone is an empty (undecodable) payload, not a panic.
    let stored = split(&[ENVELOPE, 0x00, 0]).unwrap();
    assert!(matches!(
        stored.decode::<u8>(),
        Err(CodecError::Decode { .. })
    ));
}

#[test]
fn absent_features_are_named() {
    let not_compiled = |byte: u8| match split(&[ENVELOPE, byte, 0, 0]) {
        Err(CodecError::NotCompiled(name)) => Some(name),
        Ok(_) => None,
        Err(e) => panic!("{byte:#x}: {e}"),
    };
    let expect = |feature: bool, name| if feature { None } else { Some(name) };
    assert_eq!(
        not_compiled(0x10),
        expect(cfg!(feature = "msgpack"), "msgpack")
    );
    assert_eq!(
        not_compiled(0x20),
        expect(cfg!(feature = "postcard"), "postcard")
    );
    assert_eq!(not_compiled(0x01), expect(cfg!(feature = "lz4"), "lz4"));
    assert_eq!(not_compiled(0x02), expect(cfg!(feature = "zstd"), "zstd"));
    assert_eq!(
        CodecError::NotCompiled("msgpack").to_string(),
        "the value was written with msgpack, which this build lacks (cargo feature `msgpack` of \
         cache-runtime)"
    );
}

#[cfg(feature = "lz4")]
#[test]
fn lz4_size_prefix_is_bounded() {
    let decompress_error = |bytes: &[u8]| match split(bytes).unwrap().decode::<u8>() {
        Err(CodecError::Decompress {
            algorithm: "lz4",
            reason,
        }) => reason,
        other => panic!("{bytes:?}: {other:?}"),
    };
    // 4 GiB announced by a 3-byte block: refused before allocating.
    let bomb = [ENVELOPE, 0x01, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0x10, b'1', 0];
    assert!(
        decompress_error(&bomb).starts_with("the size prefix announces 4294967295 bytes"),
        "{}",
        decompress_error(&bomb)
    );
    // Plausible for the block but over the limit.
    let mut big = vec![ENVELOPE, 0x01, 0];
    big.extend_from_slice(&(600u32 << 20).to_le_bytes());
    big.resize(big.len() + (600 << 20) / 255 + 1, 0);
    assert!(decompress_error(&big).contains("536870912 allowed"));
    assert!(decompress_error(&[ENVELOPE, 0x01, 0, 1, 0]).contains("shorter than the 4-byte"));
    // A size prefix smaller than the data: an error, not a panic.
    let format = Format {
        compression: Compression::Lz4,
        compress_above: 0,
        ..Format::default()
    };
    let mut bytes = format.encode(&users(), &[]).unwrap();
    bytes[3..7].copy_from_slice(&100u32.to_le_bytes());
    decompress_error(&bytes);
}

#[cfg(feature = "zstd")]
#[test]
fn zstd_corruption_is_an_error() {
    let format = Format {
        compression: Compression::Zstd { level: 3 },
        compress_above: 0,
        ..Format::default()
    };
    let bytes = format.encode(&users(), &[]).unwrap();
    for cut in [4, 10, bytes.len() / 2, bytes.len() - 1] {
        let result = split(&bytes[..cut]).unwrap().decode::<Vec<User>>();
        assert!(
            matches!(
                result,
                Err(CodecError::Decompress {
                    algorithm: "zstd",
                    ..
                })
            ),
            "{cut}"
        );
    }
    let mut flipped = bytes.clone();
    let last = flipped.len() - 20;
    flipped[last] ^= 0xFF;
    assert!(split(&flipped).unwrap().decode::<Vec<User>>().is_err());
    // A frame announcing more than the limit is refused without allocating.
    let mut payload = vec![ENVELOPE, 0x02, 0];
    payload.extend(zstd::bulk::compress(&vec![0u8; 1 << 20], 1).unwrap());
    // Frame header descriptor at [4]; with FCS flag 2 (4-byte size) the size
    // follows the window descriptor. Patch it to 1 GiB.
    let descriptor = payload[3 + 4];
    assert_eq!(descriptor >> 6, 2, "expected a 4-byte content size");
    let at = 3 + 4 + 1 + usize::from(descriptor & 0x20 == 0);
    payload[at..at + 4].copy_from_slice(&(1u32 << 30).to_le_bytes());
    let e = split(&payload).unwrap().decode::<Vec<u8>>().unwrap_err();
    assert!(e.to_string().contains("announces 1073741824 bytes"), "{e}");
}

#[test]
fn names_parse_and_display() {
    for (input, name) in [("json", "json"), ("JSON", "json"), (" Json ", "json")] {
        assert_eq!(input.parse::<Codec>().unwrap().name(), name);
    }
    for codec in codecs() {
        assert_eq!(codec.to_string().parse::<Codec>(), Ok(codec));
        assert_eq!(codec.to_string(), codec.name());
    }
    for compression in compressions() {
        assert_eq!(
            compression.to_string().parse::<Compression>(),
            Ok(compression)
        );
    }
    assert_eq!("Off".parse::<Compression>(), Ok(Compression::None));
    assert_eq!("NONE".parse::<Compression>(), Ok(Compression::None));

    let e = "xml".parse::<Codec>().unwrap_err();
    assert!(
        e.to_string().starts_with(
            "unknown codec `xml`: expected `json`, `msgpack` (or `messagepack`) or `postcard`, \
             in any case; this build has json"
        ),
        "{e}"
    );
    let e = "gzip".parse::<Compression>().unwrap_err();
    assert!(
        e.to_string().starts_with(
            "unknown compression `gzip`: expected `none` (or `off`), `lz4`, `zstd` (level 3) or \
             `zstd:<level>`, in any case; this build has none"
        ),
        "{e}"
    );
    assert!(matches!(
        "lz4:3".parse::<Compression>(),
        Err(ParseFormatError::Unknown { .. })
    ));

    let check =
        |result: Result<String, ParseFormatError>, feature: &str, compiled: bool| match result {
            Ok(_) => assert!(compiled),
            Err(e) => {
                assert!(!compiled, "{e}");
                assert!(
                    e.to_string().contains(&format!(
                        "needs the cargo feature `{feature}` of cache-runtime"
                    )),
                    "{e}"
                );
            }
        };
    let codec = |s: &str| s.parse::<Codec>().map(|c| c.to_string());
    let compression = |s: &str| s.parse::<Compression>().map(|c| c.to_string());
    check(codec("MessagePack"), "msgpack", cfg!(feature = "msgpack"));
    check(codec("msgpack"), "msgpack", cfg!(feature = "msgpack"));
    check(codec("postcard"), "postcard", cfg!(feature = "postcard"));
    check(compression("LZ4"), "lz4", cfg!(feature = "lz4"));
    check(compression("zstd:7"), "zstd", cfg!(feature = "zstd"));
    #[cfg(not(feature = "msgpack"))]
    assert!(
        "msgpack"
            .parse::<Codec>()
            .unwrap_err()
            .to_string()
            .starts_with("`msgpack` needs the cargo feature `msgpack` of cache-runtime")
    );
}

#[cfg(feature = "zstd")]
#[test]
fn zstd_levels() {
    assert_eq!(
        "zstd".parse::<Compression>(),
        Ok(Compression::Zstd { level: 3 })
    );
    assert_eq!(
        "ZSTD: 19".parse::<Compression>(),
        Ok(Compression::Zstd { level: 19 })
    );
    assert_eq!(
        "zstd:-5".parse::<Compression>(),
        Ok(Compression::Zstd { level: -5 })
    );
    for bad in ["zstd:99", "zstd:", "zstd:fast"] {
        let e = bad.parse::<Compression>().unwrap_err();
        assert!(
            matches!(e, ParseFormatError::ZstdLevel { max: 22, .. }),
            "{bad}: {e}"
        );
        assert!(e.to_string().contains("to 22"), "{e}");
    }
    assert_eq!(Compression::Zstd { level: 9 }.to_string(), "zstd:9");
    assert_eq!(Compression::Zstd { level: 9 }.name(), "zstd");
}

#[test]
fn encode_errors_name_the_codec() {
    // JSON maps need string keys.
    let map: BTreeMap<(u8, u8), u8> = [((1, 2), 3)].into_iter().collect();
    let e = encode(&map).unwrap_err();
    assert!(matches!(e, CodecError::Encode { codec: "json", .. }));
    assert!(
        e.to_string()
            .starts_with("could not encode the value as json: "),
        "{e}"
    );
}

/// Whatever the stored bytes: no panic, from `split` or from `decode`.
fn never_panics(bytes: &[u8]) {
    if let Ok(stored) = split(bytes) {
        let _ = stored.tag_versions().fold(0u64, u64::wrapping_add);
        let _ = stored.decode::<(String, Vec<u64>, Option<i32>)>();
        let _ = stored.decode::<serde_json::Value>();
    }
}

proptest! {
    #[test]
    fn split_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        never_panics(&bytes);
    }

    /// Arbitrary bytes rarely start with the marker: a valid-looking header
    /// in front of them reaches the tag, decompression and codec paths.
    #[test]
    fn split_never_panics_on_envelopes(
        codec in 0u8..4,
        packing in 0u8..4,
        tags in 0u8..3,
        rest in proptest::collection::vec(any::<u8>(), 0..96),
    ) {
        let mut bytes = vec![ENVELOPE, codec << 4 | packing, tags];
        bytes.extend(rest);
        never_panics(&bytes);
    }

    #[test]
    fn round_trips_arbitrary_values(
        value in any::<(String, Vec<u64>, Option<i32>)>(),
        tags in proptest::collection::vec(any::<u64>(), 0..20),
        compress_above in prop_oneof![Just(0usize), Just(64), Just(1024)],
    ) {
        for format in formats() {
            let format = Format { compress_above, ..format };
            let bytes = encode_split(&format, &value, &tags);
            let back: (String, Vec<u64>, Option<i32>) = split(&bytes).unwrap().decode().unwrap();
            prop_assert_eq!(&back, &value);
            never_panics(&bytes[..bytes.len() / 2]);
        }
    }
}
