// BUG (or missing diagnostic): #[cached] on a method of a *trait impl* emits
// the `get_user_key` / `get_user_invalidate` companions into the trait impl,
// where rustc rejects them with three errors about items the user never
// wrote. Expected: either it works (companions elsewhere) or one error from
// the macro saying trait-impl methods are not supported and what to do.
use cache_runtime::cached;

trait Users {
    async fn get_user(&self, user_id: u64) -> u64;
}

struct Repo;

impl Users for Repo {
    #[cached(prefix = "user", id = "user_id")]
    async fn get_user(&self, user_id: u64) -> u64 {
        user_id
    }
}

fn main() {}
