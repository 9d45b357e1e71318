//! The compile-cost workload of `scripts/compile_cost.sh`: 50 typical
//! service functions (get by id, paged list, lookup by `&str`, count, write
//! with a typed and a pattern invalidation), each called from `main`.
//! With `--features cached` they carry `#[cached]`; with `--features
//! runtime` the runtime is linked and installed but the functions are bare
//! (the fixed cost of the dependency); with neither, nothing is cached. Generated once; edit by hand if the shapes change.
#![allow(clippy::unused_async)]

#[cfg(feature = "cached")]
use cache_runtime::cached;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Row {
    pub id: u64,
    pub name: String,
    pub tags: Vec<String>,
}

#[derive(Debug)]
pub struct DbError;

pub struct Db;

impl Db {
    async fn row(&self, id: u64) -> Result<Row, DbError> {
        Ok(Row { id, name: format!("row {id}"), tags: vec![] })
    }
}

#[cfg_attr(feature = "cached", cached(prefix = "item0", id = "id", ttl = "10m", skip = [db]))]
pub async fn get_item0(db: &Db, id: u64) -> Result<Row, DbError> {
    db.row(id + 0).await
}

#[cfg_attr(feature = "cached", cached(prefix = "item0:list:{owner}:{page}", ttl = "5m", skip = [db]))]
pub async fn list_items0(db: &Db, owner: u64, page: u32) -> Result<Vec<Row>, DbError> {
    let first = db.row(owner * 100 + u64::from(page)).await?;
    Ok(vec![first])
}

#[cfg_attr(feature = "cached", cached(prefix = "item0:by_name", id = "name", ttl = "10m", skip = [db]))]
pub async fn find_item0(db: &Db, name: &str) -> Result<Option<Row>, DbError> {
    let row = db.row(name.len() as u64 + 0).await?;
    Ok((!name.is_empty()).then_some(row))
}

#[cfg_attr(feature = "cached", cached(prefix = "item0:count:{owner}", ttl = 60, skip = [db]))]
pub async fn count_items0(db: &Db, owner: u64) -> Result<u64, DbError> {
    Ok(db.row(owner).await?.id + 0)
}

#[cfg_attr(feature = "cached", cached(invalidate = [get_item0(id), "item0:list:{owner}:*"]))]
pub async fn update_item0(db: &Db, id: u64, owner: u64, name: String) -> Result<(), DbError> {
    let _ = (db.row(id).await?, owner, name);
    Ok(())
}

#[cfg_attr(feature = "cached", cached(prefix = "item1", id = "id", ttl = "10m", skip = [db]))]
pub async fn get_item1(db: &Db, id: u64) -> Result<Row, DbError> {
    db.row(id + 1).await
}

#[cfg_attr(feature = "cached", cached(prefix = "item1:list:{owner}:{page}", ttl = "5m", skip = [db]))]
pub async fn list_items1(db: &Db, owner: u64, page: u32) -> Result<Vec<Row>, DbError> {
    let first = db.row(owner * 100 + u64::from(page)).await?;
    Ok(vec![first])
}

#[cfg_attr(feature = "cached", cached(prefix = "item1:by_name", id = "name", ttl = "10m", skip = [db]))]
pub async fn find_item1(db: &Db, name: &str) -> Result<Option<Row>, DbError> {
    let row = db.row(name.len() as u64 + 1).await?;
    Ok((!name.is_empty()).then_some(row))
}

#[cfg_attr(feature = "cached", cached(prefix = "item1:count:{owner}", ttl = 60, skip = [db]))]
pub async fn count_items1(db: &Db, owner: u64) -> Result<u64, DbError> {
    Ok(db.row(owner).await?.id + 1)
}

#[cfg_attr(feature = "cached", cached(invalidate = [get_item1(id), "item1:list:{owner}:*"]))]
pub async fn update_item1(db: &Db, id: u64, owner: u64, name: String) -> Result<(), DbError> {
    let _ = (db.row(id).await?, owner, name);
    Ok(())
}

#[cfg_attr(feature = "cached", cached(prefix = "item2", id = "id", ttl = "10m", skip = [db]))]
pub async fn get_item2(db: &Db, id: u64) -> Result<Row, DbError> {
    db.row(id + 2).await
}

#[cfg_attr(feature = "cached", cached(prefix = "item2:list:{owner}:{page}", ttl = "5m", skip = [db]))]
pub async fn list_items2(db: &Db, owner: u64, page: u32) -> Result<Vec<Row>, DbError> {
    let first = db.row(owner * 100 + u64::from(page)).await?;
    Ok(vec![first])
}

#[cfg_attr(feature = "cached", cached(prefix = "item2:by_name", id = "name", ttl = "10m", skip = [db]))]
pub async fn find_item2(db: &Db, name: &str) -> Result<Option<Row>, DbError> {
    let row = db.row(name.len() as u64 + 2).await?;
    Ok((!name.is_empty()).then_some(row))
}

#[cfg_attr(feature = "cached", cached(prefix = "item2:count:{owner}", ttl = 60, skip = [db]))]
pub async fn count_items2(db: &Db, owner: u64) -> Result<u64, DbError> {
    Ok(db.row(owner).await?.id + 2)
}

#[cfg_attr(feature = "cached", cached(invalidate = [get_item2(id), "item2:list:{owner}:*"]))]
pub async fn update_item2(db: &Db, id: u64, owner: u64, name: String) -> Result<(), DbError> {
    let _ = (db.row(id).await?, owner, name);
    Ok(())
}

#[cfg_attr(feature = "cached", cached(prefix = "item3", id = "id", ttl = "10m", skip = [db]))]
pub async fn get_item3(db: &Db, id: u64) -> Result<Row, DbError> {
    db.row(id + 3).await
}

#[cfg_attr(feature = "cached", cached(prefix = "item3:list:{owner}:{page}", ttl = "5m", skip = [db]))]
pub async fn list_items3(db: &Db, owner: u64, page: u32) -> Result<Vec<Row>, DbError> {
    let first = db.row(owner * 100 + u64::from(page)).await?;
    Ok(vec![first])
}

#[cfg_attr(feature = "cached", cached(prefix = "item3:by_name", id = "name", ttl = "10m", skip = [db]))]
pub async fn find_item3(db: &Db, name: &str) -> Result<Option<Row>, DbError> {
    let row = db.row(name.len() as u64 + 3).await?;
    Ok((!name.is_empty()).then_some(row))
}

#[cfg_attr(feature = "cached", cached(prefix = "item3:count:{owner}", ttl = 60, skip = [db]))]
pub async fn count_items3(db: &Db, owner: u64) -> Result<u64, DbError> {
    Ok(db.row(owner).await?.id + 3)
}

#[cfg_attr(feature = "cached", cached(invalidate = [get_item3(id), "item3:list:{owner}:*"]))]
pub async fn update_item3(db: &Db, id: u64, owner: u64, name: String) -> Result<(), DbError> {
    let _ = (db.row(id).await?, owner, name);
    Ok(())
}

#[cfg_attr(feature = "cached", cached(prefix = "item4", id = "id", ttl = "10m", skip = [db]))]
pub async fn get_item4(db: &Db, id: u64) -> Result<Row, DbError> {
    db.row(id + 4).await
}

#[cfg_attr(feature = "cached", cached(prefix = "item4:list:{owner}:{page}", ttl = "5m", skip = [db]))]
pub async fn list_items4(db: &Db, owner: u64, page: u32) -> Result<Vec<Row>, DbError> {
    let first = db.row(owner * 100 + u64::from(page)).await?;
    Ok(vec![first])
}

#[cfg_attr(feature = "cached", cached(prefix = "item4:by_name", id = "name", ttl = "10m", skip = [db]))]
pub async fn find_item4(db: &Db, name: &str) -> Result<Option<Row>, DbError> {
    let row = db.row(name.len() as u64 + 4).await?;
    Ok((!name.is_empty()).then_some(row))
}

#[cfg_attr(feature = "cached", cached(prefix = "item4:count:{owner}", ttl = 60, skip = [db]))]
pub async fn count_items4(db: &Db, owner: u64) -> Result<u64, DbError> {
    Ok(db.row(owner).await?.id + 4)
}

#[cfg_attr(feature = "cached", cached(invalidate = [get_item4(id), "item4:list:{owner}:*"]))]
pub async fn update_item4(db: &Db, id: u64, owner: u64, name: String) -> Result<(), DbError> {
    let _ = (db.row(id).await?, owner, name);
    Ok(())
}

#[cfg_attr(feature = "cached", cached(prefix = "item5", id = "id", ttl = "10m", skip = [db]))]
pub async fn get_item5(db: &Db, id: u64) -> Result<Row, DbError> {
    db.row(id + 5).await
}

#[cfg_attr(feature = "cached", cached(prefix = "item5:list:{owner}:{page}", ttl = "5m", skip = [db]))]
pub async fn list_items5(db: &Db, owner: u64, page: u32) -> Result<Vec<Row>, DbError> {
    let first = db.row(owner * 100 + u64::from(page)).await?;
    Ok(vec![first])
}

#[cfg_attr(feature = "cached", cached(prefix = "item5:by_name", id = "name", ttl = "10m", skip = [db]))]
pub async fn find_item5(db: &Db, name: &str) -> Result<Option<Row>, DbError> {
    let row = db.row(name.len() as u64 + 5).await?;
    Ok((!name.is_empty()).then_some(row))
}

#[cfg_attr(feature = "cached", cached(prefix = "item5:count:{owner}", ttl = 60, skip = [db]))]
pub async fn count_items5(db: &Db, owner: u64) -> Result<u64, DbError> {
    Ok(db.row(owner).await?.id + 5)
}

#[cfg_attr(feature = "cached", cached(invalidate = [get_item5(id), "item5:list:{owner}:*"]))]
pub async fn update_item5(db: &Db, id: u64, owner: u64, name: String) -> Result<(), DbError> {
    let _ = (db.row(id).await?, owner, name);
    Ok(())
}

#[cfg_attr(feature = "cached", cached(prefix = "item6", id = "id", ttl = "10m", skip = [db]))]
pub async fn get_item6(db: &Db, id: u64) -> Result<Row, DbError> {
    db.row(id + 6).await
}

#[cfg_attr(feature = "cached", cached(prefix = "item6:list:{owner}:{page}", ttl = "5m", skip = [db]))]
pub async fn list_items6(db: &Db, owner: u64, page: u32) -> Result<Vec<Row>, DbError> {
    let first = db.row(owner * 100 + u64::from(page)).await?;
    Ok(vec![first])
}

#[cfg_attr(feature = "cached", cached(prefix = "item6:by_name", id = "name", ttl = "10m", skip = [db]))]
pub async fn find_item6(db: &Db, name: &str) -> Result<Option<Row>, DbError> {
    let row = db.row(name.len() as u64 + 6).await?;
    Ok((!name.is_empty()).then_some(row))
}

#[cfg_attr(feature = "cached", cached(prefix = "item6:count:{owner}", ttl = 60, skip = [db]))]
pub async fn count_items6(db: &Db, owner: u64) -> Result<u64, DbError> {
    Ok(db.row(owner).await?.id + 6)
}

#[cfg_attr(feature = "cached", cached(invalidate = [get_item6(id), "item6:list:{owner}:*"]))]
pub async fn update_item6(db: &Db, id: u64, owner: u64, name: String) -> Result<(), DbError> {
    let _ = (db.row(id).await?, owner, name);
    Ok(())
}

#[cfg_attr(feature = "cached", cached(prefix = "item7", id = "id", ttl = "10m", skip = [db]))]
pub async fn get_item7(db: &Db, id: u64) -> Result<Row, DbError> {
    db.row(id + 7).await
}

#[cfg_attr(feature = "cached", cached(prefix = "item7:list:{owner}:{page}", ttl = "5m", skip = [db]))]
pub async fn list_items7(db: &Db, owner: u64, page: u32) -> Result<Vec<Row>, DbError> {
    let first = db.row(owner * 100 + u64::from(page)).await?;
    Ok(vec![first])
}

#[cfg_attr(feature = "cached", cached(prefix = "item7:by_name", id = "name", ttl = "10m", skip = [db]))]
pub async fn find_item7(db: &Db, name: &str) -> Result<Option<Row>, DbError> {
    let row = db.row(name.len() as u64 + 7).await?;
    Ok((!name.is_empty()).then_some(row))
}

#[cfg_attr(feature = "cached", cached(prefix = "item7:count:{owner}", ttl = 60, skip = [db]))]
pub async fn count_items7(db: &Db, owner: u64) -> Result<u64, DbError> {
    Ok(db.row(owner).await?.id + 7)
}

#[cfg_attr(feature = "cached", cached(invalidate = [get_item7(id), "item7:list:{owner}:*"]))]
pub async fn update_item7(db: &Db, id: u64, owner: u64, name: String) -> Result<(), DbError> {
    let _ = (db.row(id).await?, owner, name);
    Ok(())
}

#[cfg_attr(feature = "cached", cached(prefix = "item8", id = "id", ttl = "10m", skip = [db]))]
pub async fn get_item8(db: &Db, id: u64) -> Result<Row, DbError> {
    db.row(id + 8).await
}

#[cfg_attr(feature = "cached", cached(prefix = "item8:list:{owner}:{page}", ttl = "5m", skip = [db]))]
pub async fn list_items8(db: &Db, owner: u64, page: u32) -> Result<Vec<Row>, DbError> {
    let first = db.row(owner * 100 + u64::from(page)).await?;
    Ok(vec![first])
}

#[cfg_attr(feature = "cached", cached(prefix = "item8:by_name", id = "name", ttl = "10m", skip = [db]))]
pub async fn find_item8(db: &Db, name: &str) -> Result<Option<Row>, DbError> {
    let row = db.row(name.len() as u64 + 8).await?;
    Ok((!name.is_empty()).then_some(row))
}

#[cfg_attr(feature = "cached", cached(prefix = "item8:count:{owner}", ttl = 60, skip = [db]))]
pub async fn count_items8(db: &Db, owner: u64) -> Result<u64, DbError> {
    Ok(db.row(owner).await?.id + 8)
}

#[cfg_attr(feature = "cached", cached(invalidate = [get_item8(id), "item8:list:{owner}:*"]))]
pub async fn update_item8(db: &Db, id: u64, owner: u64, name: String) -> Result<(), DbError> {
    let _ = (db.row(id).await?, owner, name);
    Ok(())
}

#[cfg_attr(feature = "cached", cached(prefix = "item9", id = "id", ttl = "10m", skip = [db]))]
pub async fn get_item9(db: &Db, id: u64) -> Result<Row, DbError> {
    db.row(id + 9).await
}

#[cfg_attr(feature = "cached", cached(prefix = "item9:list:{owner}:{page}", ttl = "5m", skip = [db]))]
pub async fn list_items9(db: &Db, owner: u64, page: u32) -> Result<Vec<Row>, DbError> {
    let first = db.row(owner * 100 + u64::from(page)).await?;
    Ok(vec![first])
}

#[cfg_attr(feature = "cached", cached(prefix = "item9:by_name", id = "name", ttl = "10m", skip = [db]))]
pub async fn find_item9(db: &Db, name: &str) -> Result<Option<Row>, DbError> {
    let row = db.row(name.len() as u64 + 9).await?;
    Ok((!name.is_empty()).then_some(row))
}

#[cfg_attr(feature = "cached", cached(prefix = "item9:count:{owner}", ttl = 60, skip = [db]))]
pub async fn count_items9(db: &Db, owner: u64) -> Result<u64, DbError> {
    Ok(db.row(owner).await?.id + 9)
}

#[cfg_attr(feature = "cached", cached(invalidate = [get_item9(id), "item9:list:{owner}:*"]))]
pub async fn update_item9(db: &Db, id: u64, owner: u64, name: String) -> Result<(), DbError> {
    let _ = (db.row(id).await?, owner, name);
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    #[cfg(feature = "runtime")]
    cache_runtime::install(cache_runtime::Cache::builder().build().await.expect("a memory cache"));
    let db = Db;
    let mut total = 0u64;
    total += get_item0(&db, 1).await.map_or(0, |r| r.id);
    total += list_items0(&db, 2, 1).await.map_or(0, |r| r.len() as u64);
    total += find_item0(&db, "ann").await.ok().flatten().map_or(0, |r| r.id);
    total += count_items0(&db, 3).await.unwrap_or(0);
    total += u64::from(update_item0(&db, 1, 2, "bob".into()).await.is_ok());
    total += get_item1(&db, 1).await.map_or(0, |r| r.id);
    total += list_items1(&db, 2, 1).await.map_or(0, |r| r.len() as u64);
    total += find_item1(&db, "ann").await.ok().flatten().map_or(0, |r| r.id);
    total += count_items1(&db, 3).await.unwrap_or(0);
    total += u64::from(update_item1(&db, 1, 2, "bob".into()).await.is_ok());
    total += get_item2(&db, 1).await.map_or(0, |r| r.id);
    total += list_items2(&db, 2, 1).await.map_or(0, |r| r.len() as u64);
    total += find_item2(&db, "ann").await.ok().flatten().map_or(0, |r| r.id);
    total += count_items2(&db, 3).await.unwrap_or(0);
    total += u64::from(update_item2(&db, 1, 2, "bob".into()).await.is_ok());
    total += get_item3(&db, 1).await.map_or(0, |r| r.id);
    total += list_items3(&db, 2, 1).await.map_or(0, |r| r.len() as u64);
    total += find_item3(&db, "ann").await.ok().flatten().map_or(0, |r| r.id);
    total += count_items3(&db, 3).await.unwrap_or(0);
    total += u64::from(update_item3(&db, 1, 2, "bob".into()).await.is_ok());
    total += get_item4(&db, 1).await.map_or(0, |r| r.id);
    total += list_items4(&db, 2, 1).await.map_or(0, |r| r.len() as u64);
    total += find_item4(&db, "ann").await.ok().flatten().map_or(0, |r| r.id);
    total += count_items4(&db, 3).await.unwrap_or(0);
    total += u64::from(update_item4(&db, 1, 2, "bob".into()).await.is_ok());
    total += get_item5(&db, 1).await.map_or(0, |r| r.id);
    total += list_items5(&db, 2, 1).await.map_or(0, |r| r.len() as u64);
    total += find_item5(&db, "ann").await.ok().flatten().map_or(0, |r| r.id);
    total += count_items5(&db, 3).await.unwrap_or(0);
    total += u64::from(update_item5(&db, 1, 2, "bob".into()).await.is_ok());
    total += get_item6(&db, 1).await.map_or(0, |r| r.id);
    total += list_items6(&db, 2, 1).await.map_or(0, |r| r.len() as u64);
    total += find_item6(&db, "ann").await.ok().flatten().map_or(0, |r| r.id);
    total += count_items6(&db, 3).await.unwrap_or(0);
    total += u64::from(update_item6(&db, 1, 2, "bob".into()).await.is_ok());
    total += get_item7(&db, 1).await.map_or(0, |r| r.id);
    total += list_items7(&db, 2, 1).await.map_or(0, |r| r.len() as u64);
    total += find_item7(&db, "ann").await.ok().flatten().map_or(0, |r| r.id);
    total += count_items7(&db, 3).await.unwrap_or(0);
    total += u64::from(update_item7(&db, 1, 2, "bob".into()).await.is_ok());
    total += get_item8(&db, 1).await.map_or(0, |r| r.id);
    total += list_items8(&db, 2, 1).await.map_or(0, |r| r.len() as u64);
    total += find_item8(&db, "ann").await.ok().flatten().map_or(0, |r| r.id);
    total += count_items8(&db, 3).await.unwrap_or(0);
    total += u64::from(update_item8(&db, 1, 2, "bob".into()).await.is_ok());
    total += get_item9(&db, 1).await.map_or(0, |r| r.id);
    total += list_items9(&db, 2, 1).await.map_or(0, |r| r.len() as u64);
    total += find_item9(&db, "ann").await.ok().flatten().map_or(0, |r| r.id);
    total += count_items9(&db, 3).await.unwrap_or(0);
    total += u64::from(update_item9(&db, 1, 2, "bob".into()).await.is_ok());
    println!("{total}");
}
