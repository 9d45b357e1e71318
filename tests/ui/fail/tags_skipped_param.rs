use cache_runtime::cached;

struct Db;

#[cached(prefix = "user", id = "user_id", skip = [db, region], tags = ["region:{region}"])]
async fn get_user(db: &Db, user_id: u64, region: &str) -> u64 {
    let _ = (db, region);
    user_id
}

fn main() {}
