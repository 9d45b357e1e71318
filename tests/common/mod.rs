//! Test harness: real `redis-server` processes on free loopback ports (one
//! server, or a 3-master Redis Cluster), and a TCP proxy that can black-hole
//! traffic. Shared by the integration tests and the benchmarks
//! (`#[path = "../tests/common/mod.rs"] mod common;`).
//!
//! Never touches a Redis on 6379: every server here is started by the harness
//! on a port the OS just handed out, with no persistence, and killed on drop.
//!
//! [`RedisServer::start`] is what the suites use: one server, or a cluster
//! when `CACHE_TEST_TOPOLOGY=cluster` (`scripts/test.sh` runs the shared
//! suites both ways). Its helpers (`builder`, `cli`, `keys`, `get`, `kill`,
//! `restart`, ...) work on either, so one test body covers both topologies.

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

/// Masters of a test cluster: enough that a key pattern spans several
/// nodes and one can go down while the others serve.
pub const CLUSTER_MASTERS: usize = 3;

/// Whether `RedisServer::start` gives a cluster (`CACHE_TEST_TOPOLOGY=cluster`)
/// rather than one server (unset, or `single`).
pub fn cluster_topology() -> bool {
    match std::env::var("CACHE_TEST_TOPOLOGY").as_deref() {
        Err(_) | Ok("" | "single") => false,
        Ok("cluster") => true,
        Ok(other) => panic!("CACHE_TEST_TOPOLOGY={other:?}: expected `single` or `cluster`"),
    }
}

/// A Redis the tests run against: one `redis-server`, or a Redis Cluster of
/// [`CLUSTER_MASTERS`] masters (no replicas), each on free ports.
pub struct RedisServer {
    /// The one server, or the cluster's masters in the order they were
    /// created (node `i` of the per-node helpers).
    nodes: Vec<RedisNode>,
    cluster: bool,
}

impl RedisServer {
    /// Starts what `CACHE_TEST_TOPOLOGY` asks for (`single`, the default, or
    /// `cluster`) and waits until it serves.
    pub fn start() -> Self {
        if cluster_topology() {
            Self::start_cluster()
        } else {
            Self::start_single()
        }
    }

    /// Starts one server, whatever `CACHE_TEST_TOPOLOGY` says.
    pub fn start_single() -> Self {
        Self::start_with(&[])
    }

    /// Starts one server with extra `redis-server` arguments (e.g.
    /// `["--requirepass", "pw"]`) on a free port.
    pub fn start_with(args: &[&str]) -> Self {
        RedisServer {
            nodes: vec![RedisNode::start(args, false)],
            cluster: false,
        }
    }

    /// Starts one server from the `redis-server` binary at `binary` (e.g.
    /// an older Redis) on a free port.
    pub fn start_binary(binary: &str) -> Self {
        for _ in 0..10 {
            let mut node = RedisNode::new(free_port(), None, &[]);
            node.binary = binary.to_owned();
            if node.try_spawn().is_ok() {
                return RedisServer {
                    nodes: vec![node],
                    cluster: false,
                };
            }
        }
        panic!("could not start {binary} on a free port after 10 attempts");
    }

    /// Starts one server on `port` (e.g. one a cache was built against
    /// before any server listened there).
    pub fn start_on(port: u16) -> Self {
        let mut node = RedisNode::new(port, None, &[]);
        node.spawn();
        RedisServer {
            nodes: vec![node],
            cluster: false,
        }
    }

    /// Starts a cluster of [`CLUSTER_MASTERS`] masters, whatever
    /// `CACHE_TEST_TOPOLOGY` says, and waits until every node reports it ok.
    pub fn start_cluster() -> Self {
        Self::start_cluster_with(&[])
    }

    /// Starts a cluster whose nodes all get extra `redis-server` arguments
    /// (e.g. `["--requirepass", "pw"]`).
    pub fn start_cluster_with(args: &[&str]) -> Self {
        // Owned from the first node on, so that a panic below kills them all.
        let mut server = RedisServer {
            nodes: Vec::with_capacity(CLUSTER_MASTERS),
            cluster: true,
        };
        for _ in 0..CLUSTER_MASTERS {
            server.nodes.push(RedisNode::start(args, true));
        }
        let mut create = Command::new("redis-cli");
        create.args(["--cluster", "create"]);
        for node in &server.nodes {
            create.arg(format!("127.0.0.1:{}", node.port));
        }
        create.args(["--cluster-replicas", "0", "--cluster-yes"]);
        if let Some(pw) = &server.nodes[0].password {
            create.args(["--no-auth-warning", "-a", pw]);
        }
        let out = create.output().expect("run redis-cli --cluster create");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        server.wait_until_cluster_ok();
        server
    }

    /// Whether this is a cluster (else one server).
    pub fn is_cluster(&self) -> bool {
        self.cluster
    }

    /// A cache builder for this Redis: `redis_url` of the server, or
    /// `redis_cluster` with every node as a seed.
    pub fn builder(&self) -> cache_runtime::CacheBuilder {
        let builder = cache_runtime::Cache::builder();
        if self.cluster {
            builder.redis_cluster(self.urls())
        } else {
            builder.redis_url(self.url())
        }
    }

    /// The variable and value that configure this Redis from the
    /// environment: `REDIS_URL`, or `REDIS_CLUSTER_URLS` (comma-separated).
    pub fn env_var(&self) -> (&'static str, String) {
        if self.cluster {
            ("REDIS_CLUSTER_URLS", self.urls().join(","))
        } else {
            ("REDIS_URL", self.url())
        }
    }

    /// The one server; panics on a cluster, for the helpers that name a
    /// single port.
    fn single(&self) -> &RedisNode {
        assert!(
            !self.cluster,
            "port()/url() name one server, and this is a {CLUSTER_MASTERS}-master cluster \
             (CACHE_TEST_TOPOLOGY=cluster): use builder()/urls()/node_port(i), or give the \
             test a single server with RedisServer::start_single()"
        );
        &self.nodes[0]
    }

    /// The server's port (single server only).
    pub fn port(&self) -> u16 {
        self.single().port
    }

    /// `redis://127.0.0.1:<port>`, with the password if the server has one
    /// (single server only).
    pub fn url(&self) -> String {
        self.single().url()
    }

    /// Every node's URL: the one server's, or each master's.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisNode::url).collect()
    }

    /// Kills every node (SIGKILL: no goodbye to clients) and waits for them
    /// to go.
    pub fn kill(&mut self) {
        for node in &mut self.nodes {
            node.kill();
        }
    }

    /// Starts every node again on the same ports. A server starts empty,
    /// unless [`save`](Self::save) was called before it went down: then it
    /// loads what was saved (a server with persistence that crashed). A
    /// cluster's nodes find each other again through their `nodes.conf`;
    /// this waits until the cluster is ok.
    pub fn restart(&mut self) {
        self.kill();
        for node in &mut self.nodes {
            node.spawn();
        }
        if self.cluster {
            self.wait_until_cluster_ok();
        }
    }

    /// Writes a snapshot (`SAVE`) on every node, which the next
    /// [`restart`](Self::restart) loads.
    pub fn save(&self) {
        for node in &self.nodes {
            assert_eq!(node.cli(&["SAVE"]), "OK", "SAVE on port {}", node.port);
        }
    }

    /// Runs `redis-cli` and returns its trimmed output. On a cluster it
    /// starts at a running node and follows `MOVED` (`-c`): meant for
    /// commands on a key; a server command (`INFO`, `DBSIZE`) reaches one
    /// node only (see [`node_cli`](Self::node_cli)).
    pub fn cli(&self, args: &[&str]) -> String {
        if !self.cluster {
            return self.nodes[0].cli(args);
        }
        let node = self
            .nodes
            .iter()
            .find(|n| n.child.is_some())
            .unwrap_or(&self.nodes[0]);
        let mut with_redirects = vec!["-c"];
        with_redirects.extend_from_slice(args);
        node.cli(&with_redirects)
    }

    /// Every key on every running node, sorted.
    pub fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.running().flat_map(|i| self.node_keys(i)).collect();
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

    /// How many times the running nodes have run `command` (from `INFO
    /// commandstats`, summed).
    pub fn command_calls(&self, command: &str) -> u64 {
        self.running()
            .map(|i| self.node_command_calls(i, command))
            .sum()
    }

    /// How many keys the running nodes hold (`DBSIZE`, summed).
    pub fn dbsize(&self) -> u64 {
        self.running()
            .map(|i| {
                let out = self.node_cli(i, &["DBSIZE"]);
                out.parse::<u64>()
                    .unwrap_or_else(|_| panic!("DBSIZE on node {i}: unexpected reply {out:?}"))
            })
            .sum()
    }

    /// A connection to the node that serves `key` (the one server, or the
    /// master of the key's slot), for commands `redis-cli` can not express,
    /// like binary values.
    pub async fn connection_for(&self, key: &str) -> redis::aio::MultiplexedConnection {
        let node = if self.cluster {
            let slot: u16 = redis::cmd("CLUSTER")
                .arg("KEYSLOT")
                .arg(key)
                .query_async(&mut self.any_connection().await)
                .await
                .expect("CLUSTER KEYSLOT");
            self.node_of_slot(slot)
        } else {
            0
        };
        self.node_connection(node).await
    }

    /// Writes `entries` (pipelined, one pipeline per node in a cluster).
    pub async fn set_many<K, V>(&self, entries: impl IntoIterator<Item = (K, V)>)
    where
        K: AsRef<str>,
        V: AsRef<[u8]>,
    {
        let entries: Vec<(K, V)> = entries.into_iter().collect();
        let mut nodes = vec![0; entries.len()];
        if self.cluster {
            // One round trip asks for every key's slot.
            let mut slots = redis::pipe();
            for (key, _) in &entries {
                slots.cmd("CLUSTER").arg("KEYSLOT").arg(key.as_ref());
            }
            let slots: Vec<u16> = slots
                .query_async(&mut self.any_connection().await)
                .await
                .expect("CLUSTER KEYSLOT");
            let owners = self.slot_owners();
            nodes = slots.iter().map(|&s| owners[usize::from(s)]).collect();
        }
        for node in 0..self.nodes.len() {
            let mut pipe = redis::pipe();
            for ((key, value), _) in entries.iter().zip(&nodes).filter(|(_, n)| **n == node) {
                pipe.set(key.as_ref(), value.as_ref()).ignore();
            }
            if pipe.is_empty() {
                continue;
            }
            let () = pipe
                .query_async(&mut self.node_connection(node).await)
                .await
                .expect("write the entries");
        }
    }

    // ---------------------------------------------------------- per node

    /// How many nodes: 1, or [`CLUSTER_MASTERS`].
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// Node `node`'s port.
    pub fn node_port(&self, node: usize) -> u16 {
        self.nodes[node].port
    }

    /// Which node serves `key` (always 0 on a single server).
    pub fn node_of(&self, key: &str) -> usize {
        if !self.cluster {
            return 0;
        }
        let out = self.cli(&["CLUSTER", "KEYSLOT", key]);
        let slot = out
            .parse()
            .unwrap_or_else(|_| panic!("CLUSTER KEYSLOT {key}: unexpected reply {out:?}"));
        self.node_of_slot(slot)
    }

    /// Runs `redis-cli` against node `node` only (no redirects).
    pub fn node_cli(&self, node: usize, args: &[&str]) -> String {
        self.nodes[node].cli(args)
    }

    /// The keys node `node` holds itself (its own `SCAN`), sorted.
    pub fn node_keys(&self, node: usize) -> Vec<String> {
        let mut keys: Vec<String> = self.nodes[node]
            .cli(&["--scan"])
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect();
        keys.sort();
        keys
    }

    /// How many times node `node` has run `command`.
    pub fn node_command_calls(&self, node: usize, command: &str) -> u64 {
        let prefix = format!("cmdstat_{}:calls=", command.to_ascii_lowercase());
        self.nodes[node]
            .cli(&["INFO", "commandstats"])
            .lines()
            .find_map(|l| l.trim().strip_prefix(&prefix))
            .and_then(|rest| rest.split(',').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }

    /// Kills node `node` (SIGKILL); the others keep running. Its slots have
    /// no replica: once the others mark it failed (after the 2 s node
    /// timeout) they answer `CLUSTERDOWN` until it is back.
    pub fn kill_node(&mut self, node: usize) {
        self.nodes[node].kill();
    }

    /// Starts node `node` again on the same ports, empty (unless
    /// [`save`](Self::save)d). A cluster node rejoins from its `nodes.conf`
    /// with the same slots; when no other node is down, this waits until the
    /// cluster is ok again (2 s or more: Redis's rejoin delay).
    pub fn restart_node(&mut self, node: usize) {
        self.nodes[node].kill();
        self.nodes[node].spawn();
        if self.cluster && self.nodes.iter().all(|n| n.child.is_some()) {
            self.wait_until_cluster_ok();
        }
    }

    /// The indexes of the running nodes.
    fn running(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.nodes.len()).filter(|&i| self.nodes[i].child.is_some())
    }

    async fn node_connection(&self, node: usize) -> redis::aio::MultiplexedConnection {
        let url = self.nodes[node].url();
        redis::Client::open(url.as_str())
            .expect("a valid URL")
            .get_multiplexed_async_connection()
            .await
            .unwrap_or_else(|e| panic!("connect to {url}: {e}"))
    }

    /// A connection to some running node (for questions any node answers).
    async fn any_connection(&self) -> redis::aio::MultiplexedConnection {
        let node = self.running().next().expect("a running node");
        self.node_connection(node).await
    }

    /// The node serving each of the 16384 slots, from `CLUSTER NODES` of a
    /// running node. Slots never move in these tests (no resharding, no
    /// failover: there are no replicas), and a restarted node takes its
    /// slots back from its `nodes.conf`.
    fn slot_owners(&self) -> Vec<usize> {
        let node = self.running().next().expect("a running node");
        let table = self.nodes[node].cli(&["CLUSTER", "NODES"]);
        let mut owners = vec![usize::MAX; 16384];
        // `<id> <ip:port@bus> <flags> <master> <ping> <pong> <epoch> <link> <slot>...`
        for line in table.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let port = fields
                .get(1)
                .and_then(|addr| addr.split('@').next())
                .and_then(|addr| addr.rsplit(':').next())
                .and_then(|port| port.parse::<u16>().ok());
            let Some(owner) = port.and_then(|p| self.nodes.iter().position(|n| n.port == p)) else {
                panic!("CLUSTER NODES: a node that is not ours: {line:?}");
            };
            // A slot being migrated shows as `[slot->-id]`: there are none.
            for range in fields.iter().skip(8).filter(|r| !r.starts_with('[')) {
                let (first, last) = range.split_once('-').unwrap_or((range, range));
                let (first, last): (usize, usize) = (first.parse().unwrap(), last.parse().unwrap());
                owners[first..=last].fill(owner);
            }
        }
        assert!(
            owners.iter().all(|&o| o != usize::MAX),
            "CLUSTER NODES leaves slots unassigned:\n{table}"
        );
        owners
    }

    fn node_of_slot(&self, slot: u16) -> usize {
        self.slot_owners()[usize::from(slot)]
    }

    /// Polls `CLUSTER INFO` of every node until each reports the cluster ok,
    /// knows all the masters and sees every slot served.
    fn wait_until_cluster_ok(&self) {
        let expected = [
            "cluster_state:ok".to_owned(),
            "cluster_slots_ok:16384".to_owned(),
            format!("cluster_known_nodes:{}", self.nodes.len()),
        ];
        // A restarted master waits 2 s before it calls the cluster ok again
        // (Redis's rejoin delay); one marked failed, up to twice the node
        // timeout more.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let infos: Vec<String> = self
                .nodes
                .iter()
                .map(|n| n.cli(&["CLUSTER", "INFO"]))
                .collect();
            let ok = infos
                .iter()
                .all(|info| expected.iter().all(|e| info.lines().any(|l| l.trim() == e)));
            if ok {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the cluster on ports {:?} is not ok after 20 s:\n{}",
                self.nodes.iter().map(|n| n.port).collect::<Vec<_>>(),
                infos.join("\n--\n")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Why a `redis-server` did not come up on its port.
enum SpawnError {
    /// The port (or the cluster bus port) is taken (by another test process,
    /// or a server we do not own).
    PortTaken,
}

/// One `redis-server` child process: a single server, or a cluster node.
struct RedisNode {
    port: u16,
    /// The cluster bus port of a cluster node. Given explicitly: the
    /// default, port + 10000, overflows for high ephemeral ports.
    bus_port: Option<u16>,
    dir: PathBuf,
    child: Option<Child>,
    /// `requirepass` of the server, if it has one (used by `cli`).
    password: Option<String>,
    /// Extra `redis-server` arguments, kept for `restart`.
    extra_args: Vec<String>,
    /// The server binary: `redis-server` on `PATH` unless a test names one.
    binary: String,
}

impl RedisNode {
    /// Starts a server (a cluster node if `cluster`) on free ports and waits
    /// until it answers PING.
    fn start(args: &[&str], cluster: bool) -> Self {
        // A free port can be taken between `free_port` and the server's bind
        // (tests run in parallel, and other test processes may too): retry.
        for _ in 0..10 {
            let port = free_port();
            let bus_port = cluster.then(|| {
                std::iter::repeat_with(free_port)
                    .find(|&p| p != port)
                    .expect("a second free port")
            });
            let mut node = Self::new(port, bus_port, args);
            if node.try_spawn().is_ok() {
                return node;
            }
        }
        panic!("could not start redis-server on a free port after 10 attempts");
    }

    fn new(port: u16, bus_port: Option<u16>, args: &[&str]) -> Self {
        let dir =
            std::env::temp_dir().join(format!("cache-test-redis-{port}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create the server's directory");
        let password = args
            .iter()
            .position(|a| *a == "--requirepass")
            .and_then(|i| args.get(i + 1))
            .map(|p| (*p).to_owned());
        RedisNode {
            port,
            bus_port,
            dir,
            child: None,
            password,
            extra_args: args.iter().map(|a| (*a).to_owned()).collect(),
            binary: "redis-server".to_owned(),
        }
    }

    fn spawn(&mut self) {
        if self.try_spawn().is_err() {
            panic!(
                "port {} (or bus port {:?}) is taken: redis-server could not bind it",
                self.port, self.bus_port
            );
        }
    }

    fn try_spawn(&mut self) -> Result<(), SpawnError> {
        // The server logs to stdout; keep it to explain a failed start.
        let log_path = self.dir.join("redis.log");
        let log = std::fs::File::create(&log_path).expect("create the server's log");
        let mut command = Command::new(&self.binary);
        command
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir);
        if let Some(bus_port) = self.bus_port {
            // nodes.conf is the node's identity and view of the cluster: a
            // restart on the same directory rejoins with the same slots.
            command
                .args(["--cluster-enabled", "yes", "--cluster-config-file"])
                .arg(self.dir.join("nodes.conf"))
                .args(["--cluster-node-timeout", "2000"])
                .args(["--cluster-port", &bus_port.to_string()]);
        }
        let child = command
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

    fn url(&self) -> String {
        match &self.password {
            Some(pw) => format!("redis://:{pw}@127.0.0.1:{}", self.port),
            None => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Runs `redis-cli` against this node and returns its trimmed output.
    fn cli(&self, args: &[&str]) -> String {
        let mut cmd = Command::new("redis-cli");
        cmd.args(["-p", &self.port.to_string()]);
        if let Some(pw) = &self.password {
            cmd.args(["--no-auth-warning", "-a", pw]);
        }
        let out = cmd.args(args).output().expect("run redis-cli");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

impl Drop for RedisNode {
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
                        // Forward each chunk at once, as loopback would
                        // (Nagle would hold small pushes for a delayed ACK).
                        let _ = client.set_nodelay(true);
                        let _ = server.set_nodelay(true);
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
