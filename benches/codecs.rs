//! Codecs and compression: encoded size and encode/decode time of every
//! codec x compression compiled in, against plain JSON.
//!
//! Two values: a user profile (~500 bytes of JSON, a typical cached row) and
//! a list of 1,000 posts (~100 KB of JSON, a typical cached page). Each
//! format encodes through the cache's own `Format::encode` and decodes
//! through `split(..).decode()`, allocation included, as on the cache's hit
//! and fill paths. The profile uses the default compression threshold (1 KiB:
//! it stays below it, so compression never applies and the rows show what
//! the setting costs a small value); the list compresses whenever that makes
//! it smaller. `serde_json (direct)` is `serde_json::to_vec`/`from_slice`
//! by hand: the default format must cost the same.
//!
//! `cargo bench --bench codecs --all-features` runs it (about 10 s; without
//! `--all-features` only the formats compiled in are measured). Without
//! `--bench` (as under `cargo test --benches`) it runs each format a few
//! times as a smoke test. Every round measures every format in turn, so
//! drift of the machine spreads over all of them; the table reports medians
//! over the rounds. Environment overrides: `CODECS_ROUNDS` (21) and
//! `CODECS_BATCH_MS` (10), the target duration of one timed batch.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use cache_runtime::codec::{Codec, Compression, Format, split};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Profile {
    id: u64,
    name: String,
    email: String,
    bio: String,
    created_at: String,
    roles: Vec<String>,
    settings: BTreeMap<String, String>,
    nickname: Option<String>,
    verified: bool,
    score: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Post {
    id: u64,
    title: String,
    tags: Vec<String>,
    likes: u32,
}

fn profile() -> Profile {
    Profile {
        id: 4_217_733,
        name: "Jane Q. Example".to_owned(),
        email: "jane.example@example.com".to_owned(),
        bio: "Backend engineer working on storage and caching. Previously built payment \
              systems; enjoys distributed systems papers, long bike rides and sourdough. \
              Speaker at RustConf, maintainer of two crates, mentor."
            .to_owned(),
        created_at: "2024-03-15T10:30:00Z".to_owned(),
        roles: vec!["reader".to_owned(), "editor".to_owned(), "admin".to_owned()],
        settings: [
            ("theme", "dark"),
            ("language", "en-GB"),
            ("timezone", "Europe/Berlin"),
            ("digest", "weekly"),
            ("two_factor", "totp"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect(),
        nickname: Some("jqe".to_owned()),
        verified: true,
        score: 4.73,
    }
}

/// 1,000 posts with varied titles and tags (a fixed pseudo-random sequence,
/// so every run measures the same bytes): about 100 KB of JSON.
fn posts() -> Vec<Post> {
    const WORDS: &[&str] = &[
        "cache",
        "latency",
        "review",
        "quarterly",
        "roadmap",
        "storage",
        "incident",
        "notes",
        "design",
        "proposal",
        "migration",
        "release",
        "benchmark",
        "team",
        "weekly",
        "update",
        "redis",
        "cluster",
        "failover",
        "postmortem",
        "hiring",
        "onboarding",
        "budget",
        "api",
        "schema",
        "index",
        "query",
        "planner",
        "rollout",
        "feature",
        "flag",
        "metrics",
    ];
    const TAGS: &[&str] = &[
        "rust", "ops", "infra", "db", "perf", "security", "frontend", "mobile", "ml", "docs",
    ];
    let mut state = 0x2545_F491_4F6C_DD1D_u64;
    let mut next = move |n: usize| {
        // xorshift64: deterministic, no dependency.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % n as u64) as usize
    };
    (0..1_000)
        .map(|i| {
            let words = 4 + next(5);
            let title = (0..words)
                .map(|_| WORDS[next(WORDS.len())])
                .collect::<Vec<_>>()
                .join(" ");
            Post {
                id: 1_000_000 + i * 7 + next(7) as u64,
                title,
                tags: (0..1 + next(3))
                    .map(|_| TAGS[next(TAGS.len())].to_owned())
                    .collect(),
                likes: next(5_000) as u32,
            }
        })
        .collect()
}

/// One row of the table: a format, or serde_json by hand.
#[derive(Clone, Copy)]
enum Variant {
    Direct,
    Format(Format),
}

struct Row {
    label: String,
    variant: Variant,
    bytes: Vec<u8>,
    compressed: bool,
    iterations: u32,
    encode_ns: Vec<f64>,
    decode_ns: Vec<f64>,
}

impl Variant {
    fn encode<T: Serialize>(self, value: &T) -> Vec<u8> {
        match self {
            Self::Direct => serde_json::to_vec(value).expect("encode"),
            Self::Format(format) => format.encode(value, &[]).expect("encode"),
        }
    }

    fn decode<T: DeserializeOwned>(self, bytes: &[u8]) -> T {
        match self {
            Self::Direct => serde_json::from_slice(bytes).expect("decode"),
            Self::Format(_) => split(bytes).expect("split").decode().expect("decode"),
        }
    }
}

/// Mean ns per call of `iterations` calls of `f`.
fn time_batch(iterations: u32, mut f: impl FnMut()) -> f64 {
    let start = Instant::now();
    for _ in 0..iterations {
        f();
    }
    start.elapsed().as_nanos() as f64 / f64::from(iterations)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

fn env_or<T: std::str::FromStr>(var: &str, default: T) -> T {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The formats compiled in, by name; a name whose feature is off is skipped.
fn formats(compress_above: usize) -> (Vec<(String, Variant)>, Vec<&'static str>) {
    let mut rows = vec![("serde_json (direct)".to_owned(), Variant::Direct)];
    let mut skipped = Vec::new();
    for (codec, compression) in [
        ("json", "none"),
        ("msgpack", "none"),
        ("postcard", "none"),
        ("json", "lz4"),
        ("json", "zstd"),
        ("msgpack", "lz4"),
        ("msgpack", "zstd"),
    ] {
        match (codec.parse::<Codec>(), compression.parse::<Compression>()) {
            (Ok(codec), Ok(compression)) => {
                let label = match compression {
                    Compression::None => codec.to_string(),
                    compression => format!("{codec}+{compression}"),
                };
                let format = Format {
                    codec,
                    compression,
                    compress_above,
                };
                rows.push((label, Variant::Format(format)));
            }
            (Err(_), _) => skipped.push(codec),
            (_, Err(_)) => skipped.push(compression),
        }
    }
    skipped.sort_unstable();
    skipped.dedup();
    (rows, skipped)
}

fn bench<T>(
    title: &str,
    value: &T,
    compress_above: usize,
    full: bool,
    rounds: usize,
    batch: Duration,
) where
    T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let (formats, skipped) = formats(compress_above);
    let mut rows: Vec<Row> = formats
        .into_iter()
        .map(|(label, variant)| {
            let bytes = variant.encode(value);
            assert_eq!(&variant.decode::<T>(&bytes), value, "{label}: round trip");
            let compressed = matches!(variant, Variant::Format(_))
                && split(&bytes).expect("split").is_compressed();
            // Size the batch so that encode + decode take about `batch`.
            let iterations = if full {
                let once = time_batch(8, || {
                    black_box(variant.decode::<T>(black_box(&variant.encode(black_box(value)))));
                });
                ((batch.as_nanos() as f64 / once) as u32).max(8)
            } else {
                3
            };
            Row {
                label,
                variant,
                bytes,
                compressed,
                iterations,
                encode_ns: Vec::new(),
                decode_ns: Vec::new(),
            }
        })
        .collect();
    for _ in 0..rounds {
        for row in &mut rows {
            let variant = row.variant;
            row.encode_ns.push(time_batch(row.iterations, || {
                black_box(variant.encode(black_box(value)));
            }));
            let bytes = &row.bytes;
            row.decode_ns.push(time_batch(row.iterations, || {
                black_box(variant.decode::<T>(black_box(bytes)));
            }));
        }
    }

    let json = &rows[1];
    let (json_len, json_ns) = (
        json.bytes.len() as f64,
        median(json.encode_ns.clone()) + median(json.decode_ns.clone()),
    );
    println!("\n### {title}\n");
    println!(
        "| format              | bytes   | size vs json | compressed | encode ns | decode ns | enc+dec ns | time vs json |"
    );
    println!(
        "|---------------------|---------|--------------|------------|-----------|-----------|------------|--------------|"
    );
    for row in &rows {
        let (encode, decode) = (median(row.encode_ns.clone()), median(row.decode_ns.clone()));
        println!(
            "| {:<19} | {:>7} | {:>12.3} | {:>10} | {:>9.0} | {:>9.0} | {:>10.0} | {:>12.3} |",
            row.label,
            row.bytes.len(),
            row.bytes.len() as f64 / json_len,
            if row.compressed { "yes" } else { "no" },
            encode,
            decode,
            encode + decode,
            (encode + decode) / json_ns,
        );
    }
    if !skipped.is_empty() {
        println!(
            "\nnot compiled in (skipped): {}; run with --all-features",
            skipped.join(", ")
        );
    }
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` does not.
    let full = std::env::args().any(|a| a == "--bench");
    let rounds = if full { env_or("CODECS_ROUNDS", 21) } else { 1 };
    let batch = Duration::from_secs_f64(env_or("CODECS_BATCH_MS", 10.0) / 1e3);

    let profile = profile();
    let posts = posts();
    let profile_json = serde_json::to_vec(&profile).expect("json").len();
    let posts_json = serde_json::to_vec(&posts).expect("json").len();
    println!(
        "{rounds} round(s); medians of the per-round mean time per call (batches of ~{batch:?}); \
         ratios against the `json` row (the cache's default format)"
    );
    bench(
        &format!(
            "user profile ({profile_json} bytes of JSON; compression threshold 1024, the default)"
        ),
        &profile,
        1024,
        full,
        rounds,
        batch,
    );
    bench(
        &format!("1,000 posts ({posts_json} bytes of JSON; compression threshold 0)"),
        &posts,
        0,
        full,
        rounds,
        batch,
    );
    if !full {
        println!("\n(smoke run: pass --bench, as `cargo bench` does, for real numbers)");
    }
}
