//! Codecs and compression against a real Redis: what each writes, that a
//! value written by one codec is read back by another cache configured
//! with a different one (the envelope names its codec), and that foreign or
//! corrupt bytes are misses, counted and overwritten, never mis-decoded.
//!
//! Run with `--all-features` (what `scripts/test.sh` does) for MessagePack,
//! postcard, lz4 and zstd; without them only the JSON cases run.

mod common;

use cache_runtime::{Cache, Codec, Compression, cached};
use common::RedisServer;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Post {
    id: u64,
    title: String,
    tags: Vec<String>,
    likes: u32,
}

#[cached(prefix = "posts", id = "n", ttl = 60)]
async fn posts(n: u64) -> Vec<Post> {
    (0..n)
        .map(|id| Post {
            id,
            title: format!("post number {id} about caching"),
            tags: vec!["rust".into(), "redis".into()],
            likes: (id * 7 % 100) as u32,
        })
        .collect()
}

async fn cache(server: &RedisServer, codec: Codec, compression: Compression) -> Cache {
    server
        .builder()
        .namespace("c")
        .codec(codec)
        .compression(compression, 1024)
        .build()
        .await
        .unwrap()
}

/// The raw bytes under `key`.
async fn raw(server: &RedisServer, key: &str) -> Vec<u8> {
    redis::cmd("GET")
        .arg(key)
        .query_async(&mut server.connection_for(key).await)
        .await
        .unwrap()
}

async fn set_raw(server: &RedisServer, key: &str, value: &[u8]) {
    let () = redis::cmd("SET")
        .arg(key)
        .arg(value)
        .query_async(&mut server.connection_for(key).await)
        .await
        .unwrap();
}

/// Every codec and compression compiled into this build.
fn formats() -> Vec<(Codec, Compression)> {
    let codecs = [
        Some(Codec::Json),
        #[cfg(feature = "msgpack")]
        Some(Codec::MessagePack),
        #[cfg(feature = "postcard")]
        Some(Codec::Postcard),
        None,
    ];
    let compressions = [
        Some(Compression::None),
        #[cfg(feature = "lz4")]
        Some(Compression::Lz4),
        #[cfg(feature = "zstd")]
        Some(Compression::Zstd { level: 3 }),
        None,
    ];
    let mut all = Vec::new();
    for codec in codecs.into_iter().flatten() {
        for compression in compressions.iter().flatten() {
            all.push((codec, *compression));
        }
    }
    all
}

#[tokio::test]
async fn json_is_the_default_and_stays_plain() {
    let server = RedisServer::start();
    let cache = server.builder().namespace("c").build().await.unwrap();
    let value = Cache::scope(cache, posts(2)).await;
    let stored = raw(&server, "c:posts:2").await;
    assert_eq!(stored, serde_json::to_vec(&value).unwrap());
}

/// Each format writes something, and every other format's cache reads it
/// back as the same value (a hit, not a miss): the envelope names the codec.
#[tokio::test]
async fn every_format_reads_every_other() {
    let server = RedisServer::start();
    let formats = formats();
    for (i, &(codec, compression)) in formats.iter().enumerate() {
        let n = 50 + i as u64; // its own key: big enough to compress
        let writer = cache(&server, codec, compression).await;
        let expected = Cache::scope(writer, posts(n)).await;
        let stored = raw(&server, &format!("c:posts:{n}")).await;
        let plain = codec == Codec::Json && compression == Compression::None;
        assert_eq!(
            stored.first() == Some(&0xC2),
            !plain,
            "{codec:?} {compression:?}"
        );
        if compression != Compression::None {
            let json = serde_json::to_vec(&expected).unwrap();
            assert!(
                stored.len() < json.len() / 2,
                "{codec:?} {compression:?}: {} bytes",
                stored.len()
            );
        }
        for &(codec2, compression2) in &formats {
            let reader = cache(&server, codec2, compression2).await;
            let got = Cache::scope(reader.clone(), posts(n)).await;
            assert_eq!(got, expected, "written by {codec:?}, read by {codec2:?}");
            assert_eq!(
                reader.stats().hits,
                1,
                "written by {codec:?}/{compression:?}, read by {codec2:?}/{compression2:?}"
            );
        }
    }
}

/// Bytes no codec of ours wrote under a key: a miss, counted as a decode
/// error, overwritten with a good value.
#[tokio::test]
async fn foreign_bytes_are_misses_not_mis_decodes() {
    let server = RedisServer::start();
    let mut foreign: Vec<(&str, Vec<u8>)> = vec![
        // JSON of another shape.
        ("json of another shape", br#"{"id":1}"#.to_vec()),
        // An envelope naming a codec that does not exist.
        ("unknown codec", vec![0xC2, 0xF0, 0x00, b'[', b']']),
        // An envelope whose tag list is cut short.
        ("truncated envelope", vec![0xC2, 0x00, 0x03, 1, 2, 3]),
        // A compressed payload that is not.
        (
            "bad compression",
            vec![0xC2, 0x01, 0x00, 0xFF, 0xFF, 0xFF, 0xFF, 0x00],
        ),
    ];
    // MessagePack written by another service, with no envelope: JSON can't
    // read it, and nothing guesses.
    foreign.push((
        "headerless msgpack",
        vec![0x91, 0x84, 0xA2, b'i', b'd', 0x01],
    ));
    for (i, (what, bytes)) in foreign.iter().enumerate() {
        for &(codec, compression) in &formats() {
            let cache = cache(&server, codec, compression).await;
            let key = format!("c:posts:{i}");
            set_raw(&server, &key, bytes).await;
            let got = Cache::scope(cache.clone(), posts(i as u64)).await;
            assert_eq!(got.len(), i, "{what}");
            let stats = cache.stats();
            assert_eq!(
                (stats.decode_errors, stats.misses),
                (1, 1),
                "{what} read by {codec:?}/{compression:?}"
            );
            assert_ne!(raw(&server, &key).await, *bytes, "{what}: not overwritten");
        }
    }
}
