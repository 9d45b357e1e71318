use cache_runtime::cached;

struct Repo {
    tenant: u32,
}

impl Repo {
    #[cached(prefix = "tenant", id = "self.tenant")]
    async fn tenant_name(&self) -> String {
        self.tenant.to_string()
    }
}

fn main() {}
