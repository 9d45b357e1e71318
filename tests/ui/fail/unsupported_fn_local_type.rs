// BUG (limitation): a cached function declared inside a function body can
// not use types declared in that body: the `key` companion is a module
// (`mod get_user { use super::*; .. }`), and `super` is the enclosing
// module, not the function's scope. The error points at the user's own
// parameter type, which is plainly in scope where they wrote it.
use cache_runtime::cached;

fn main() {
    struct UserId(u64);
    impl std::fmt::Display for UserId {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "{}", self.0)
        }
    }

    #[cached(prefix = "user", id = "user_id")]
    async fn get_user(user_id: UserId) -> u64 {
        user_id.0
    }
    let _ = get_user;
}
