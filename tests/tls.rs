//! TLS (`rediss://`, feature `tls`) against a real `redis-server` started
//! with a throwaway CA and certificates made here (rcgen): a trusted CA,
//! an untrusted server (a miss, never a failed call), mutual TLS, an ACL
//! user over TLS, and the start-up errors of a TLS configuration.
#![cfg(feature = "tls")]

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use cache_runtime::{Cache, ConfigError, cached};
use common::{RedisServer, free_port};
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};

/// A CA, a server certificate for 127.0.0.1 and a client certificate, as
/// PEM files in a directory of their own.
struct Certs {
    dir: PathBuf,
}

impl Certs {
    fn new(name: &str) -> Certs {
        let dir = std::env::temp_dir().join(format!("cache-tls-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "cache-runtime test CA");
        let ca = ca.self_signed(&ca_key).unwrap();
        let leaf = |names: Vec<String>, usages: Vec<ExtendedKeyUsagePurpose>| {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(names).unwrap();
            params.extended_key_usages = usages;
            let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
            (cert.pem(), key.serialize_pem())
        };
        let (server, server_key) = leaf(
            vec!["127.0.0.1".to_owned(), "localhost".to_owned()],
            // Client use too: cluster nodes present it to each other on
            // the TLS bus.
            vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        );
        let (client, client_key) = leaf(
            vec!["cache-client".to_owned()],
            vec![ExtendedKeyUsagePurpose::ClientAuth],
        );
        for (file, pem) in [
            ("ca.pem", ca.pem()),
            ("server.pem", server),
            ("server.key", server_key),
            ("client.pem", client),
            ("client.key", client_key),
        ] {
            std::fs::write(dir.join(file), pem).unwrap();
        }
        Certs { dir }
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A server with a plain port (for the harness and `redis-cli`) and a TLS
/// port; `extra` are more `redis-server` arguments.
fn tls_server(certs: &Certs, require_client_cert: bool, extra: &[&str]) -> (RedisServer, u16) {
    let tls_port = free_port();
    let p = |f: &str| certs.path(f).display().to_string();
    let (port, cert, key, ca) = (
        tls_port.to_string(),
        p("server.pem"),
        p("server.key"),
        p("ca.pem"),
    );
    let mut args = vec![
        "--tls-port",
        &port,
        "--tls-cert-file",
        &cert,
        "--tls-key-file",
        &key,
        "--tls-ca-cert-file",
        &ca,
        "--tls-auth-clients",
        if require_client_cert { "yes" } else { "no" },
    ];
    args.extend_from_slice(extra);
    (RedisServer::start_with(&args), tls_port)
}

static RUNS: AtomicU32 = AtomicU32::new(0);

#[cached(prefix = "tls", id = "id", ttl = 60)]
async fn tls_item(id: u32) -> u32 {
    RUNS.fetch_add(1, Ordering::SeqCst);
    id * 10
}

async fn build(url: String, ca: Option<&Path>, client: Option<(&Path, &Path)>) -> Cache {
    let mut b = Cache::builder()
        .redis_url(url)
        .namespace("tls")
        .connect_timeout(Duration::from_millis(500));
    if let Some(ca) = ca {
        b = b.tls_ca_file(ca);
    }
    if let Some((cert, key)) = client {
        b = b.tls_client_cert(cert, key);
    }
    b.build().await.expect("a TLS configuration that parses")
}

#[tokio::test]
async fn rediss_with_a_trusted_ca_caches_and_an_untrusted_server_is_only_a_miss() {
    let certs = Certs::new("ca");
    let (server, tls_port) = tls_server(&certs, false, &[]);
    let url = format!("rediss://127.0.0.1:{tls_port}");

    let cache = build(url.clone(), Some(&certs.path("ca.pem")), None).await;
    let health = cache.health().await;
    assert!(health.healthy, "{health:?}");
    Cache::scope(cache.clone(), async {
        assert_eq!(tls_item(1).await, 10);
        assert_eq!(tls_item(1).await, 10);
    })
    .await;
    assert_eq!((cache.stats().hits, cache.stats().misses), (1, 1));
    assert_eq!(
        server.get("tls:tls:1").as_deref(),
        Some("10"),
        "stored over TLS"
    );

    // The system's roots do not know the throwaway CA: the handshake fails,
    // the cache is unhealthy, and calls run their bodies.
    let untrusting = build(url, None, None).await;
    let health = untrusting.health().await;
    assert!(!health.healthy);
    let error = health.error.unwrap_or_default();
    assert!(
        error.to_lowercase().contains("certificate"),
        "the error says why: {error}"
    );
    let before = RUNS.load(Ordering::SeqCst);
    Cache::scope(untrusting.clone(), async {
        assert_eq!(tls_item(2).await, 20);
    })
    .await;
    assert_eq!(RUNS.load(Ordering::SeqCst), before + 1);
    assert!(!server.exists("tls:tls:2"), "nothing stored without trust");
    assert_eq!(untrusting.stats().hits, 0);
}

#[tokio::test]
async fn mutual_tls_and_an_acl_user() {
    let certs = Certs::new("mtls");
    let (server, tls_port) = tls_server(
        &certs,
        true,
        &[
            "--user",
            "app",
            "on",
            ">tls-s3cret",
            "~tls:*",
            "&*",
            "+@all",
        ],
    );
    let ca = certs.path("ca.pem");
    let (cert, key) = (certs.path("client.pem"), certs.path("client.key"));
    let url = format!("rediss://app:tls-s3cret@127.0.0.1:{tls_port}");

    let cache = build(url.clone(), Some(&ca), Some((&cert, &key))).await;
    assert!(cache.health().await.healthy);
    assert!(
        !format!("{cache:?}").contains("tls-s3cret"),
        "the password never shows in Debug"
    );
    Cache::scope(cache.clone(), async {
        assert_eq!(tls_item(3).await, 30);
        assert_eq!(tls_item(3).await, 30);
    })
    .await;
    assert_eq!(cache.stats().hits, 1);
    assert_eq!(server.get("tls:tls:3").as_deref(), Some("30"));

    // Without a client certificate the server refuses the handshake.
    let anonymous = build(url, Some(&ca), None).await;
    assert!(!anonymous.health().await.healthy);
    // A wrong password is refused too, and is not in the error.
    let wrong = build(
        format!("rediss://app:nope@127.0.0.1:{tls_port}"),
        Some(&ca),
        Some((&cert, &key)),
    )
    .await;
    let health = wrong.health().await;
    assert!(!health.healthy);
    assert!(!health.error.unwrap_or_default().contains("nope"));
}

#[tokio::test]
async fn tls_configuration_errors_are_typed_at_start_up() {
    let certs = Certs::new("errors");
    let ca = certs.path("ca.pem");
    let plain = Cache::builder()
        .redis_url("redis://127.0.0.1:1")
        .tls_ca_file(&ca)
        .build()
        .await;
    assert!(
        matches!(&plain, Err(ConfigError::InvalidSetting { reason, .. }) if reason.contains("rediss://")),
        "{plain:?}"
    );
    let missing = Cache::builder()
        .redis_url("rediss://127.0.0.1:1")
        .tls_ca_file(certs.path("nowhere.pem"))
        .build()
        .await;
    assert!(
        matches!(&missing, Err(ConfigError::InvalidSetting { setting: "tls_ca_file", reason }) if reason.contains("nowhere.pem")),
        "{missing:?}"
    );
    let half = cache_runtime::CacheBuilder::from_lookup(|var| match var {
        "REDIS_URL" => Some("rediss://127.0.0.1:1".to_owned()),
        "CACHE_TLS_CERT_FILE" => Some(certs.path("client.pem").display().to_string()),
        _ => None,
    });
    assert!(
        matches!(
            &half,
            Err(ConfigError::InvalidEnv {
                var: "CACHE_TLS_CERT_FILE",
                ..
            })
        ),
        "{half:?}"
    );
    let from_env = cache_runtime::CacheBuilder::from_lookup(|var| match var {
        "REDIS_URL" => Some("rediss://127.0.0.1:1".to_owned()),
        "CACHE_TLS_CA_FILE" => Some(ca.display().to_string()),
        "CACHE_TLS_CERT_FILE" => Some(certs.path("client.pem").display().to_string()),
        "CACHE_TLS_KEY_FILE" => Some(certs.path("client.key").display().to_string()),
        _ => None,
    })
    .unwrap()
    .connect_timeout(Duration::from_millis(200))
    .build()
    .await;
    assert!(from_env.is_ok(), "{from_env:?}");
}

static CLUSTER_RUNS: AtomicU32 = AtomicU32::new(0);

#[cached(prefix = "cl", id = "id", ttl = 60)]
async fn cluster_item(id: u32) -> u32 {
    CLUSTER_RUNS.fetch_add(1, Ordering::SeqCst);
    id * 10
}

#[cached(prefix = "near", id = "id", ttl = 60, near = true)]
async fn near_item(id: u32) -> u32 {
    id * 100
}

/// A 3-master cluster whose nodes take TLS clients (`tls-cluster yes`:
/// the bus is TLS too, and TLS clients are sent to TLS ports) and the ACL
/// user `app`; created and watched over the plain ports by `redis-cli`.
fn tls_cluster(certs: &Certs) -> (Vec<RedisServer>, Vec<u16>) {
    let mut nodes = Vec::new();
    let mut tls_ports = Vec::new();
    for _ in 0..3 {
        let bus = free_port().to_string();
        let (node, tls_port) = tls_server(
            certs,
            false,
            &[
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-port",
                &bus,
                "--tls-cluster",
                "yes",
                "--user",
                "app",
                "on",
                ">cl-s3cret",
                "~*",
                "&*",
                "+@all",
            ],
        );
        nodes.push(node);
        tls_ports.push(tls_port);
    }
    // `redis-cli --cluster create` waits for the nodes to meet without a
    // deadline of its own (a bus that can not connect hangs it): give it one.
    let mut create = std::process::Command::new("timeout");
    create.args(["30", "redis-cli", "--cluster", "create"]);
    for node in &nodes {
        create.arg(format!("127.0.0.1:{}", node.port()));
    }
    let out = create
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !nodes.iter().all(|n| {
        let info = n.cli(&["CLUSTER", "INFO"]);
        info.contains("cluster_state:ok") && info.contains("cluster_known_nodes:3")
    }) {
        assert!(
            std::time::Instant::now() < deadline,
            "the TLS cluster never became ok"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (nodes, tls_ports)
}

#[tokio::test]
async fn a_cluster_over_tls_with_an_acl_user() {
    let certs = Certs::new("cluster");
    let (nodes, tls_ports) = tls_cluster(&certs);
    let seeds = |password: &str| -> Vec<String> {
        tls_ports
            .iter()
            .take(2)
            .map(|p| format!("rediss://app:{password}@127.0.0.1:{p}"))
            .collect()
    };
    let build = |password: &str| {
        Cache::builder()
            .redis_cluster(seeds(password))
            .tls_ca_file(certs.path("ca.pem"))
            .namespace("tlsc")
            .connect_timeout(Duration::from_millis(500))
            .build()
    };
    let cache = build("cl-s3cret").await.unwrap();
    let health = cache.health().await;
    assert!(health.healthy, "{health:?}");
    assert_eq!(health.store, cache_runtime::StoreKind::Cluster);
    assert!(!format!("{cache:?}").contains("cl-s3cret"));

    Cache::scope(cache.clone(), async {
        for round in 0..2 {
            for id in 0..30 {
                assert_eq!(cluster_item(id).await, id * 10, "round {round}");
            }
        }
    })
    .await;
    assert_eq!(CLUSTER_RUNS.load(Ordering::SeqCst), 30);
    assert_eq!(cache.stats().hits, 30);
    for (i, node) in nodes.iter().enumerate() {
        let keys = node.keys();
        assert!(
            keys.iter().any(|k| k.starts_with("tlsc:cl:")),
            "master {i} holds some entries, stored over TLS: {keys:?}"
        );
    }

    // The near tier's tracking connections go to every master with the
    // same TLS settings and user.
    let near = common::eventually(Duration::from_secs(5), || {
        let cache = cache.clone();
        async move {
            Cache::scope(cache.clone(), near_item(7)).await;
            cache.stats().near_hits > 0
        }
    })
    .await;
    assert!(near, "no near hit over a TLS cluster");

    // A wrong password: unhealthy, calls run their bodies, nothing leaks.
    let wrong = build("nope").await.unwrap();
    let health = wrong.health().await;
    assert!(!health.healthy);
    assert!(!health.error.unwrap_or_default().contains("nope"));
    Cache::scope(wrong.clone(), async {
        assert_eq!(cluster_item(99).await, 990);
    })
    .await;
    assert_eq!(wrong.stats().hits, 0);
}
