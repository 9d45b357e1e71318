//! Test harness: real `redis-server` processes on free loopback ports, and a
//! TCP proxy that can black-hole traffic. Shared by the integration tests and
//! the benchmarks (`#[path = "../tests/common/mod.rs"] mod common;`).
//!
//! Never touches a Redis on 6379: every server here is started by the harness
//! on a port the OS just handed out, with no persistence, and killed on drop.

#![allow(dead_code)]

use std::future::Future;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port")
}

/// Why a `redis-server` did not come up on its port.
enum SpawnError {
    /// The port is taken (by another test process, or a server we do not own).
    PortTaken,
}

/// A `redis-server` child process on a free port.
pub struct RedisServer {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
    /// `requirepass` of the server, if it has one (used by `cli`).
    password: Option<String>,
    /// Extra `redis-server` arguments, kept for `restart`.
    extra_args: Vec<String>,
}

impl RedisServer {
    /// Starts a server on a free port and waits until it answers PING.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts a server with extra `redis-server` arguments (e.g.
    /// `["--requirepass", "pw"]`) on a free port.
    pub fn start_with(args: &[&str]) -> Self {
        // A free port can be taken between `free_port` and the server's bind
        // (tests run in parallel, and other test processes may too): retry.
        for _ in 0..10 {
            let mut server = Self::new(free_port(), args);
            if server.try_spawn().is_ok() {
                return server;
            }
        }
        panic!("could not start redis-server on a free port after 10 attempts");
    }

    /// Starts a server on `port` (e.g. one a cache was built against before
    /// any server listened there).
    pub fn start_on(port: u16) -> Self {
        let mut server = Self::new(port, &[]);
        server.spawn();
        server
    }

    fn new(port: u16, args: &[&str]) -> Self {
        let dir =
            std::env::temp_dir().join(format!("cache-test-redis-{port}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create the server's directory");
        let password = args
            .iter()
            .position(|a| *a == "--requirepass")
            .and_then(|i| args.get(i + 1))
            .map(|p| (*p).to_owned());
        RedisServer {
            port,
            dir,
            child: None,
            password,
            extra_args: args.iter().map(|a| (*a).to_owned()).collect(),
        }
    }

    fn spawn(&mut self) {
        if self.try_spawn().is_err() {
            panic!(
                "port {} is taken: redis-server could not bind it",
                self.port
            );
        }
    }

    fn try_spawn(&mut self) -> Result<(), SpawnError> {
        // The server logs to stdout; keep it to explain a failed start.
        let log_path = self.dir.join("redis.log");
        let log = std::fs::File::create(&log_path).expect("create the server's log");
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .args(&self.extra_args)
            .stdout(log)
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is not installed: run scripts/test.sh, which installs it");
        let pid = child.id();
        // Owned from here on, so that a panic below still kills it (Drop).
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let exited = self.child.as_mut().map(|c| c.try_wait());
            if let Some(Ok(Some(status))) = exited {
                self.child = None;
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                if log.contains("Address already in use") {
                    return Err(SpawnError::PortTaken);
                }
                panic!(
                    "redis-server {:?} exited at start ({status}):\n{log}",
                    self.extra_args
                );
            }
            if ping(self.port) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "redis-server on port {} did not start",
                self.port
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        // Something answers; make sure it is our child and not a server
        // another test started on the same port a moment ago.
        let info = self.cli(&["INFO", "server"]);
        let ours = info
            .lines()
            .any(|l| l.trim() == format!("process_id:{pid}"));
        if !ours {
            self.kill();
            return Err(SpawnError::PortTaken);
        }
        Ok(())
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>`, with the password if the server has one.
    pub fn url(&self) -> String {
        match &self.password {
            Some(pw) => format!("redis://:{pw}@127.0.0.1:{}", self.port),
            None => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    /// Kills the server (SIGKILL: no goodbye to clients) and waits for it to go.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port. It starts empty, unless
    /// [`save`](Self::save) was called before it went down: then it loads
    /// what was saved (a server with persistence that crashed).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Writes a snapshot (`SAVE`) that the next [`restart`](Self::restart) loads.
    pub fn save(&self) {
        assert_eq!(self.cli(&["SAVE"]), "OK", "SAVE on port {}", self.port);
    }

    /// Runs `redis-cli` against this server and returns its trimmed output.
    pub fn cli(&self, args: &[&str]) -> String {
        let mut cmd = Command::new("redis-cli");
        cmd.args(["-p", &self.port.to_string()]);
        if let Some(pw) = &self.password {
            cmd.args(["--no-auth-warning", "-a", pw]);
        }
        let out = cmd.args(args).output().expect("run redis-cli");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Every key on the server, sorted.
    pub fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self
            .cli(&["--scan"])
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect();
        keys.sort();
        keys
    }

    /// Whether `key` exists.
    pub fn exists(&self, key: &str) -> bool {
        match self.cli(&["EXISTS", key]).as_str() {
            "1" => true,
            "0" => false,
            other => panic!("EXISTS {key}: unexpected reply {other:?}"),
        }
    }

    /// The raw value under `key` (`None` if there is no key).
    pub fn get(&self, key: &str) -> Option<String> {
        self.exists(key).then(|| self.cli(&["GET", key]))
    }

    /// `PTTL key`: milliseconds left, -1 without expiry, -2 without the key.
    pub fn pttl(&self, key: &str) -> i64 {
        let out = self.cli(&["PTTL", key]);
        out.parse()
            .unwrap_or_else(|_| panic!("PTTL {key}: unexpected reply {out:?}"))
    }

    /// How many times the server has run `command` (from `INFO commandstats`).
    pub fn command_calls(&self, command: &str) -> u64 {
        let prefix = format!("cmdstat_{}:calls=", command.to_ascii_lowercase());
        self.cli(&["INFO", "commandstats"])
            .lines()
            .find_map(|l| l.trim().strip_prefix(&prefix))
            .and_then(|rest| rest.split(',').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Whether a Redis server answers on `port` (`+PONG`, or `-NOAUTH` from a
/// server with a password: it is up either way).
fn ping(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
    let mut buf = [0u8; 7];
    s.write_all(b"PING\r\n").is_ok()
        && s.read_exact(&mut buf).is_ok()
        && (&buf == b"+PONG\r\n" || &buf == b"-NOAUTH")
}

/// Polls `condition` every 10 ms until it holds or `timeout` passes; returns
/// whether it held. For conditions that need `await` (a cached call).
pub async fn eventually<F, Fut>(timeout: Duration, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if condition().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A TCP proxy in front of a server. `blackhole()` stops forwarding in both
/// directions while keeping every connection open, like a network partition:
/// bytes already sent are held (TCP would retransmit them) and delivered,
/// in order, after `restore()`.
pub struct TcpProxy {
    port: u16,
    blackholed: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    /// Upper bound of a random delay before each forwarded chunk, in µs.
    jitter_us: Arc<AtomicU64>,
}

impl TcpProxy {
    /// Proxies a new loopback port to `127.0.0.1:upstream_port`.
    pub fn start(upstream_port: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let port = listener.local_addr().expect("proxy address").port();
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let blackholed = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let jitter_us = Arc::new(AtomicU64::new(0));
        let (bh, st, jt) = (blackholed.clone(), stop.clone(), jitter_us.clone());
        std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let _ = client.set_nonblocking(false);
                        let Ok(server) = TcpStream::connect(("127.0.0.1", upstream_port)) else {
                            continue;
                        };
                        for (from, to) in [
                            (client.try_clone(), server.try_clone()),
                            (server.try_clone(), client.try_clone()),
                        ] {
                            if let (Ok(from), Ok(to)) = (from, to) {
                                let (bh, st, jt) = (bh.clone(), st.clone(), jt.clone());
                                std::thread::spawn(move || pump(from, to, &bh, &st, &jt));
                            }
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        TcpProxy {
            port,
            blackholed,
            stop,
            jitter_us,
        }
    }

    /// Delays every forwarded chunk, in each direction, by a random time in
    /// `0..=max` (order is kept): commands and replies of every client arrive
    /// late by different amounts, which widens every race window between
    /// the steps of a cache call.
    pub fn jitter(&self, max: Duration) {
        self.jitter_us
            .store(max.as_micros() as u64, Ordering::SeqCst);
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn blackhole(&self) {
        self.blackholed.store(true, Ordering::SeqCst);
    }

    pub fn restore(&self) {
        self.blackholed.store(false, Ordering::SeqCst);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.blackholed.store(false, Ordering::SeqCst);
    }
}

/// A small xorshift generator: the harness needs no statistical quality, only
/// different delays per chunk.
pub fn random_below(max: u64) -> u64 {
    use std::cell::Cell;
    thread_local! {
        static STATE: Cell<u64> = Cell::new({
            use std::hash::{BuildHasher, RandomState};
            RandomState::new().hash_one(std::thread::current().id()) | 1
        });
    }
    if max == 0 {
        return 0;
    }
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.set(x);
        x % (max + 1)
    })
}

fn pump(
    mut from: TcpStream,
    mut to: TcpStream,
    blackholed: &AtomicBool,
    stop: &AtomicBool,
    jitter_us: &AtomicU64,
) {
    let _ = from.set_read_timeout(Some(Duration::from_millis(50)));
    let mut buf = vec![0u8; 64 * 1024];
    // Bytes read but not yet forwarded: a read can return just after
    // `blackhole()`, and those bytes must be held too.
    let mut held = 0;
    while !stop.load(Ordering::Relaxed) {
        // While black-holed, forward nothing: data waits here and in the
        // socket buffers.
        if blackholed.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(5));
            continue;
        }
        if held > 0 {
            let jitter = jitter_us.load(Ordering::Relaxed);
            if jitter > 0 {
                std::thread::sleep(Duration::from_micros(random_below(jitter)));
            }
            if to.write_all(&buf[..held]).is_err() {
                break;
            }
            held = 0;
            continue;
        }
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => held = n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Both);
}
