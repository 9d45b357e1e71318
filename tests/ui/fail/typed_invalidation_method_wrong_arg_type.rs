use cache_runtime::cached;

struct Repo;

#[cached]
impl Repo {
    #[cached(prefix = "user", id = "user_id")]
    async fn get_user(&self, user_id: u64) -> u64 {
        user_id
    }

    #[cached(invalidate = [Self::get_user(name)])]
    async fn rename_user(&self, name: String) -> Result<(), String> {
        let _ = name;
        Ok(())
    }
}

fn main() {}
