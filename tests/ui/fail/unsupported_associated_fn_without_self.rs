// LIMITATION (documented): see the README section "Limitations".
// receiver (`User::load(id)`, a common constructor/finder pattern) is treated
// like a free function, so the macro emits its companion `mod load` inside the
// `impl` block: "module is not supported in `trait`s or `impl`s", pointing at
// the attribute. Expected: `Self::load_key` / `Self::load_invalidate`
// companions as for `&self` methods. Move to `tests/ui/pass/` once fixed.
use cache_runtime::cached;

struct User;

impl User {
    #[cached(prefix = "user", id = "id")]
    async fn load(id: u64) -> u64 {
        id
    }
}

fn main() {}
