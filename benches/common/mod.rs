//! Helpers shared by the timing benchmarks (`mod common;` in `benches/*.rs`):
//! quantiles, environment overrides, the CPU time of a process, the order of
//! the sides in alternating rounds, a description of the machine, and the
//! `User` value the benchmarks cache.
//!
//! The `redis-server` harness is `tests/common/mod.rs`, included by each
//! benchmark with `#[path = "../tests/common/mod.rs"] mod harness;`.

#![allow(dead_code)]

use std::time::Duration;

/// The `q`-quantile (0..=1) of `v`, by linear interpolation.
pub fn quantile(mut v: Vec<f64>, q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    let pos = q * (v.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
}

/// `var` parsed as a `T`, or `default` if it is unset or does not parse.
pub fn env_or<T: std::str::FromStr>(var: &str, default: T) -> T {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// CPU time used so far by the live threads of process `pid` (`self` for
/// this one; Linux: the first field of `/proc/<pid>/task/*/schedstat`, in
/// ns). Unlike wall time, it is not inflated by other processes competing
/// for the machine.
pub fn process_cpu(pid: &str) -> Option<Duration> {
    let mut ns = 0u64;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let stat = std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok()?;
        ns += stat.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(Duration::from_nanos(ns))
}

/// The value of `field` (e.g. `process_id`) in the output of `INFO`.
pub fn info_field(info: &str, field: &str) -> Option<String> {
    info.lines()
        .find_map(|l| l.trim().strip_prefix(field)?.strip_prefix(':'))
        .map(str::to_owned)
}

/// The order in which round `round` runs `sides` sides: forward in even
/// rounds, backward in odd ones (ABBA for two sides), so that a linear drift
/// of the machine during a pair of rounds weighs on every side alike.
pub fn abba_order(round: usize, sides: usize) -> Vec<usize> {
    if round.is_multiple_of(2) {
        (0..sides).collect()
    } else {
        (0..sides).rev().collect()
    }
}

/// Whether a scenario should run round `round`: always before `min_rounds`,
/// then only at the start of a pair of rounds (an even round) while the time
/// spent so far is within `budget`.
pub fn next_round(
    round: usize,
    rounds: usize,
    min_rounds: usize,
    spent: Duration,
    budget: Duration,
) -> bool {
    round < rounds && (round < min_rounds || round % 2 == 1 || spent <= budget)
}

/// The CPU model (`model name` in `/proc/cpuinfo`), or `unknown`.
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines().find_map(|l| {
                Some(
                    l.strip_prefix("model name")?
                        .split_once(':')?
                        .1
                        .trim()
                        .to_owned(),
                )
            })
        })
        .unwrap_or_else(|| "unknown".to_owned())
}

/// The number of CPUs this process may run on (what `nproc` prints).
pub fn nproc() -> usize {
    std::thread::available_parallelism().map_or(0, |n| n.get())
}

/// The first line of `<program> --version`, or why there is none.
pub fn version_of(program: &str) -> String {
    match std::process::Command::new(program)
        .arg("--version")
        .output()
    {
        Ok(out) => String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or("")
            .trim()
            .to_owned(),
        Err(e) => format!("{program}: {e}"),
    }
}

/// The three load averages of `/proc/loadavg` (1, 5 and 15 minutes).
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown".to_owned())
}

/// The version of crate `name` in the workspace's `Cargo.lock` (the first
/// one, if several are locked), or `?`.
pub fn locked_version(name: &str) -> String {
    let lock = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.lock"))
        .unwrap_or_default();
    let entry = format!("name = \"{name}\"");
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line.trim() == entry
            && let Some(version) = lines
                .next()
                .and_then(|l| l.trim().strip_prefix("version = "))
        {
            return version.trim_matches('"').to_owned();
        }
    }
    "?".to_owned()
}

/// `n` with thousands separators (`12,345`), rounded to an integer.
pub fn thousands(n: f64) -> String {
    let digits = format!("{:.0}", n.abs());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if n < -0.5 { format!("-{out}") } else { out }
}

/// The value every benchmark caches: about 200 bytes of JSON, the shape of
/// a typical user record.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct User {
    pub id: u64,
    pub name: String,
    pub email: String,
    pub created_at: String,
    pub roles: Vec<String>,
    pub active: bool,
    pub login_count: u32,
    pub country: String,
    pub plan: String,
}

/// The `User` with `id`.
pub fn user(id: u64) -> User {
    User {
        id,
        name: format!("Jane Q. Example {id}"),
        email: format!("jane.example.{id}@example.com"),
        created_at: "2024-03-15T10:30:00Z".to_owned(),
        roles: vec!["reader".to_owned(), "editor".to_owned()],
        active: true,
        login_count: 1_234,
        country: "DE".to_owned(),
        plan: "professional".to_owned(),
    }
}
