//! Tenant isolation against a real Redis: every tenant has its own keyspace
//! (`<namespace>@<tenant>:...`), adversarial tenant names can not reach
//! another tenant's entries, invalidations stay inside the tenant, and with
//! `enforce_tenants` a call without a tenant touches no key at all.

mod common;

use cache_runtime::{Cache, cached};
use common::RedisServer;

/// What the "database" returns depends on the tenant asking, as a real
/// per-tenant query would.
#[cached(prefix = "invoice", id = "id", ttl = 60)]
async fn invoice(id: String) -> String {
    let tenant = Cache::tenant().map(|t| t.to_string()).unwrap_or_default();
    format!("invoice {id} of {tenant:?}")
}

#[cached(invalidate = ["invoice:*"])]
async fn purge_invoices() -> bool {
    true
}

async fn cache(server: &RedisServer, namespace: &str, enforce: bool) -> Cache {
    server
        .builder()
        .namespace(namespace)
        .enforce_tenants(enforce)
        .build()
        .await
        .unwrap()
}

/// Tenant names chosen to collide: separators, escapes, wildcards, the
/// tenant marker, a name that spells another tenant's key, and the empty
/// name (no tenant).
const TENANTS: &[&str] = &[
    "org-1",
    "org-1:invoice",
    "org-1%3Ainvoice",
    "org-1@x",
    "org-1#tag",
    "*",
    "org-?",
    "[o]rg-1",
    "org-1 ",
    "ORG-1",
];

#[tokio::test]
async fn no_tenant_reads_another_tenants_entry() {
    let server = RedisServer::start();
    let cache = cache(&server, "iso", false).await;
    Cache::scope(cache.clone(), async {
        // Each tenant, and the shared keyspace, stores the same invoice ids.
        for tenant in TENANTS.iter().chain(&[""]) {
            for id in ["1", "1:x", "*"] {
                let got = Cache::with_tenant(tenant, invoice(id.to_owned())).await;
                let who = if tenant.is_empty() {
                    String::new()
                } else {
                    tenant.to_string()
                };
                assert_eq!(got, format!("invoice {id} of {who:?}"));
            }
        }
        // Every one of them was a miss: nobody read anybody else's entry.
        assert_eq!(cache.stats().misses, 3 * (TENANTS.len() as u64 + 1));
        assert_eq!(cache.stats().hits, 0);
        // And now each is a hit on its own value.
        for tenant in TENANTS {
            let got = Cache::with_tenant(tenant, invoice("1".to_owned())).await;
            assert_eq!(got, format!("invoice 1 of {tenant:?}"));
        }
        assert_eq!(cache.stats().hits, TENANTS.len() as u64);
    })
    .await;
    let keys = server.keys();
    assert_eq!(keys.len(), 3 * (TENANTS.len() + 1), "{keys:?}");
    assert!(keys.contains(&"iso@org-1:invoice:1".to_owned()));
    assert!(keys.contains(&"iso@org-1%3Ainvoice:invoice:1".to_owned()));
    assert!(keys.contains(&"iso:invoice:1".to_owned()));
}

#[tokio::test]
async fn invalidation_stays_inside_the_tenant() {
    let server = RedisServer::start();
    let cache = cache(&server, "inv", false).await;
    Cache::scope(cache.clone(), async {
        for tenant in TENANTS {
            Cache::with_tenant(tenant, invoice("1".to_owned())).await;
        }
        invoice("1".to_owned()).await;
        // The tenant named "*" purges its own invoices with a pattern...
        Cache::with_tenant("*", purge_invoices()).await;
        // ...and a typed invalidation by org-1 removes org-1's key only.
        Cache::with_tenant("org-1", invoice_invalidate("1")).await;
    })
    .await;
    let keys = server.keys();
    assert!(!keys.contains(&"inv@%2A:invoice:1".to_owned()), "{keys:?}");
    assert!(
        !keys.contains(&"inv@org-1:invoice:1".to_owned()),
        "{keys:?}"
    );
    // Everyone else's entries are intact.
    assert_eq!(keys.len(), TENANTS.len() + 1 - 2, "{keys:?}");
    assert!(keys.contains(&"inv:invoice:1".to_owned()));
    assert!(keys.contains(&"inv@org-%3F:invoice:1".to_owned()));
}

#[tokio::test]
async fn enforced_tenants_bypass_calls_without_one() {
    let server = RedisServer::start();
    let cache = cache(&server, "enf", true).await;
    Cache::scope(cache.clone(), async {
        // No tenant: the body runs every time and nothing is stored.
        invoice("1".to_owned()).await;
        invoice("1".to_owned()).await;
        // An empty tenant is no tenant.
        Cache::with_tenant("", invoice("1".to_owned())).await;
        assert!(server.keys().is_empty());
        // A shared key someone planted is never read either.
        server.cli(&["SET", "enf:invoice:2", "\"planted\""]);
        assert_ne!(invoice("2".to_owned()).await, "planted");
        // Nor invalidated.
        purge_invoices().await;
        assert!(server.exists("enf:invoice:2"));
        // With a tenant, the cache works.
        Cache::with_tenant("org-1", invoice("1".to_owned())).await;
        Cache::with_tenant("org-1", invoice("1".to_owned())).await;
    })
    .await;
    let stats = cache.stats();
    assert_eq!(stats.tenant_bypasses, 5);
    assert_eq!((stats.hits, stats.misses), (1, 1));
    assert_eq!(server.keys().len(), 2);
}

#[tokio::test]
async fn tenants_nest_and_reach_key_companions() {
    let server = RedisServer::start();
    let cache = cache(&server, "nest", false).await;
    Cache::scope(cache, async {
        assert_eq!(invoice_key("1"), "nest:invoice:1");
        Cache::with_tenant("a", async {
            assert_eq!(invoice_key("1"), "nest@a:invoice:1");
            assert_eq!(Cache::tenant().as_deref(), Some("a"));
            Cache::with_tenant("b:c", async {
                assert_eq!(invoice_key("1"), "nest@b%3Ac:invoice:1");
            })
            .await;
            assert_eq!(invoice_key("1"), "nest@a:invoice:1");
        })
        .await;
    })
    .await;
}
