//! An HTTP load generator for the example service (`examples/service`).
//!
//! ```text
//! cargo run --release --example load -- --url http://127.0.0.1:3000 --concurrency 32 --duration 15
//! ```
//!
//! `--concurrency` workers (closed loop: each sends its next request when
//! the previous one is answered) run for `--duration` seconds over a mix
//! shaped like a read-heavy API:
//!
//! | share | request |
//! |---:|---|
//! | 80% | `GET /users/{id}`, `id` uniform in the hot set `1..=--hot` |
//! | 15% | `GET /users/{id}/posts?page={1,2}`, hot set |
//! | 4% | `GET /dashboard` |
//! | 1% | `PUT /users/{id}` with a new bio, hot set (invalidates that user's entry) |
//!
//! It prints requests/s, latency percentiles (HdrHistogram, microsecond
//! resolution) overall and per kind, and the error count (transport errors
//! and non-2xx answers). With `--row LABEL` the last line of stdout is a
//! markdown table row `| LABEL | req/s | p50 ms | p99 ms | max ms | errors |`
//! (what `scripts/load.sh` collects); the report goes to stderr then.
//!
//! Options, each also read from the environment: `--url` (`LOAD_URL`,
//! default `http://127.0.0.1:3000`), `--concurrency` (`LOAD_CONCURRENCY`,
//! 32), `--duration` seconds (`LOAD_DURATION`, 10), `--hot` (`LOAD_HOT`,
//! 100), `--seed` (`LOAD_SEED`, 1).
//!
//! A closed loop under-reports latency when the server stalls (a stalled
//! worker sends nothing: coordinated omission); read the p99 as a
//! comparison between runs, not as what an open-loop client would see.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

#[derive(Debug, Clone)]
struct Options {
    url: String,
    concurrency: usize,
    duration: Duration,
    hot: u64,
    seed: u64,
    row: Option<String>,
}

const USAGE: &str = "usage: load [--url URL] [--concurrency N] [--duration SECS] [--hot N] [--seed N] [--row LABEL]";

fn parse_options() -> Result<Options, String> {
    fn env(name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }
    let mut url = env("LOAD_URL").unwrap_or_else(|| "http://127.0.0.1:3000".to_owned());
    let mut concurrency = env("LOAD_CONCURRENCY").unwrap_or_else(|| "32".to_owned());
    let mut duration = env("LOAD_DURATION").unwrap_or_else(|| "10".to_owned());
    let mut hot = env("LOAD_HOT").unwrap_or_else(|| "100".to_owned());
    let mut seed = env("LOAD_SEED").unwrap_or_else(|| "1".to_owned());
    let mut row = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) => (f.to_owned(), Some(v.to_owned())),
            None => (arg.clone(), None),
        };
        if flag == "--help" || flag == "-h" {
            return Err(USAGE.to_owned());
        }
        let mut value = || {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))
        };
        match flag.as_str() {
            "--url" => url = value()?,
            "--concurrency" | "-c" => concurrency = value()?,
            "--duration" | "-d" => duration = value()?,
            "--hot" => hot = value()?,
            "--seed" => seed = value()?,
            "--row" => row = Some(value()?),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    let concurrency: usize = concurrency
        .parse()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("concurrency {concurrency:?}: want a positive integer"))?;
    let secs: f64 = duration
        .trim_end_matches('s')
        .parse()
        .ok()
        .filter(|s: &f64| *s > 0.0 && s.is_finite())
        .ok_or_else(|| format!("duration {duration:?}: want seconds, e.g. 15 or 15s"))?;
    let hot: u64 = hot
        .parse()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("hot {hot:?}: want a positive integer"))?;
    let seed: u64 = seed
        .parse()
        .map_err(|_| format!("seed {seed:?}: want an integer"))?;
    Ok(Options {
        url: url.trim_end_matches('/').to_owned(),
        concurrency,
        duration: Duration::from_secs_f64(secs),
        hot,
        seed,
        row,
    })
}

/// The kinds of request in the mix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    User,
    Posts,
    Dashboard,
    Update,
}

const KINDS: [Kind; 4] = [Kind::User, Kind::Posts, Kind::Dashboard, Kind::Update];

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::User => "GET /users/{id}",
            Kind::Posts => "GET /users/{id}/posts",
            Kind::Dashboard => "GET /dashboard",
            Kind::Update => "PUT /users/{id}",
        }
    }

    /// 80 / 15 / 4 / 1 out of 100.
    fn pick(roll: u64) -> Kind {
        match roll % 100 {
            0..80 => Kind::User,
            80..95 => Kind::Posts,
            95..99 => Kind::Dashboard,
            _ => Kind::Update,
        }
    }
}

/// xorshift64*: plenty for picking requests, and no dependency.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn histogram() -> Histogram<u64> {
    // 1 µs to 60 s, 3 significant digits.
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds")
}

/// What one worker saw.
struct Tally {
    all: Histogram<u64>,
    by_kind: Vec<Histogram<u64>>,
    errors: u64,
    first_error: Option<String>,
}

impl Tally {
    fn new() -> Self {
        Tally {
            all: histogram(),
            by_kind: KINDS.iter().map(|_| histogram()).collect(),
            errors: 0,
            first_error: None,
        }
    }

    fn merge(&mut self, other: Tally) {
        self.all.add(&other.all).expect("same bounds");
        for (mine, theirs) in self.by_kind.iter_mut().zip(&other.by_kind) {
            mine.add(theirs).expect("same bounds");
        }
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }
}

async fn worker(client: reqwest::Client, options: Options, id: u64, deadline: Instant) -> Tally {
    let mut rng = Rng::new(options.seed.wrapping_add(id.wrapping_mul(7919)));
    let mut tally = Tally::new();
    let mut n: u64 = 0;
    while Instant::now() < deadline {
        let kind = Kind::pick(rng.next());
        let user = 1 + rng.below(options.hot);
        let request = match kind {
            Kind::User => client.get(format!("{}/users/{user}", options.url)),
            Kind::Posts => client.get(format!(
                "{}/users/{user}/posts?page={}",
                options.url,
                1 + rng.below(2)
            )),
            Kind::Dashboard => client.get(format!("{}/dashboard", options.url)),
            Kind::Update => {
                n += 1;
                client
                    .put(format!("{}/users/{user}", options.url))
                    .json(&serde_json::json!({
                        "bio": format!("Load worker {id} was here ({n}).")
                    }))
            }
        };
        let started = Instant::now();
        let outcome = match request.send().await {
            Ok(response) if response.status().is_success() => {
                // Read the whole body: its transfer is part of the latency.
                response
                    .bytes()
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
            Ok(response) => Err(format!("{} answered {}", kind.name(), response.status())),
            Err(e) => Err(format!("{}: {e}", kind.name())),
        };
        let micros = (started.elapsed().as_micros() as u64).clamp(1, 60_000_000);
        match outcome {
            Ok(()) => {
                tally.all.record(micros).expect("in bounds");
                let index = KINDS.iter().position(|k| *k == kind).unwrap_or(0);
                tally.by_kind[index].record(micros).expect("in bounds");
            }
            Err(e) => {
                tally.errors += 1;
                tally.first_error.get_or_insert(e);
                // Do not spin on a server that refuses connections.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    tally
}

fn ms(micros: u64) -> f64 {
    micros as f64 / 1e3
}

#[tokio::main]
async fn main() {
    let options = match parse_options() {
        Ok(options) => options,
        Err(message) => {
            eprintln!("{message}");
            std::process::exit(2);
        }
    };
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(options.concurrency)
        .timeout(Duration::from_secs(10))
        .build()
        .expect("build the HTTP client");

    let started = Instant::now();
    let deadline = started + options.duration;
    let workers: Vec<_> = (0..options.concurrency as u64)
        .map(|id| tokio::spawn(worker(client.clone(), options.clone(), id, deadline)))
        .collect();
    let mut tally = Tally::new();
    for w in workers {
        tally.merge(w.await.expect("a worker panicked"));
    }
    let elapsed = started.elapsed().as_secs_f64();

    let ok = tally.all.len();
    let rps = ok as f64 / elapsed;
    let mut report = format!(
        "target {}  concurrency {}  duration {:.1}s  hot set {} users\n\
         requests {} ok ({rps:.0} req/s), {} errors\n\
         latency  p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms  max {:.2} ms\n",
        options.url,
        options.concurrency,
        elapsed,
        options.hot,
        ok,
        tally.errors,
        ms(tally.all.value_at_quantile(0.50)),
        ms(tally.all.value_at_quantile(0.90)),
        ms(tally.all.value_at_quantile(0.99)),
        ms(tally.all.value_at_quantile(0.999)),
        ms(tally.all.max()),
    );
    for (kind, h) in KINDS.iter().zip(&tally.by_kind) {
        if h.is_empty() {
            continue;
        }
        report.push_str(&format!(
            "  {:<22} {:>5.1}%  p50 {:>7.2} ms  p99 {:>7.2} ms  max {:>8.2} ms\n",
            kind.name(),
            100.0 * h.len() as f64 / ok.max(1) as f64,
            ms(h.value_at_quantile(0.50)),
            ms(h.value_at_quantile(0.99)),
            ms(h.max()),
        ));
    }
    if let Some(e) = &tally.first_error {
        report.push_str(&format!("first error: {e}\n"));
    }
    match &options.row {
        Some(label) => {
            eprint!("{report}");
            println!(
                "| {label} | {rps:.0} | {:.2} | {:.2} | {:.2} | {} |",
                ms(tally.all.value_at_quantile(0.50)),
                ms(tally.all.value_at_quantile(0.99)),
                ms(tally.all.max()),
                tally.errors
            );
        }
        None => print!("{report}"),
    }
}
