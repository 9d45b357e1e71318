//! The cached functions of the read-after-invalidate checkers
//! (`tests/consistency.rs`, `tests/simulation.rs` and
//! `src/bin/consistency_worker.rs`), one reader and one writer per kind of
//! invalidation, over the includer's `Db` (which provides `read(id)` and
//! `write(id)`, each returning a row's version).

use cache_runtime::cached;

use super::Db;

/// How a write invalidates what the readers read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `invalidate = [typed_row(id)]`.
    Typed,
    /// `invalidate = ["pattern:{id}:*"]`.
    Pattern,
    /// `invalidate = [tag("row:{id}")]`.
    Tag,
    /// A write-through storing under the readers' key.
    WriteThrough,
}

impl Kind {
    pub const ALL: [Kind; 4] = [Kind::Typed, Kind::Pattern, Kind::Tag, Kind::WriteThrough];

    /// `typed`, `pattern`, `tag` or `write-through`.
    #[allow(dead_code)]
    pub fn name(self) -> &'static str {
        match self {
            Kind::Typed => "typed",
            Kind::Pattern => "pattern",
            Kind::Tag => "tag",
            Kind::WriteThrough => "write-through",
        }
    }

    #[allow(dead_code)]
    pub fn parse(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }
}

#[cached(prefix = "typed", id = "id", ttl = 60, skip = [db])]
async fn typed_row(db: &Db, id: u64) -> u64 {
    db.read(id).await
}

#[cached(invalidate = [typed_row(id)])]
async fn typed_write(db: &Db, id: u64) -> u64 {
    db.write(id).await
}

#[cached(prefix = "pattern:{id}:row", ttl = 60, skip = [db])]
async fn pattern_row(db: &Db, id: u64) -> u64 {
    db.read(id).await
}

#[cached(invalidate = ["pattern:{id}:*"])]
async fn pattern_write(db: &Db, id: u64) -> u64 {
    db.write(id).await
}

#[cached(prefix = "tagged", id = "id", ttl = 60, tags = ["row:{id}"], skip = [db])]
async fn tagged_row(db: &Db, id: u64) -> u64 {
    db.read(id).await
}

#[cached(invalidate = [tag("row:{id}")])]
async fn tag_write(db: &Db, id: u64) -> u64 {
    db.write(id).await
}

#[cached(prefix = "through", id = "id", ttl = 60, skip = [db])]
async fn through_row(db: &Db, id: u64) -> u64 {
    db.read(id).await
}

/// Write-through: stores the version it wrote under `through_row`'s key.
#[cached(prefix = "through", id = "id", ttl = 60, invalidate = [tag("unused:{id}")], skip = [db])]
async fn through_write(db: &Db, id: u64) -> u64 {
    db.write(id).await
}

/// A cached read of row `id`.
pub async fn read(kind: Kind, db: &Db, id: u64) -> u64 {
    match kind {
        Kind::Typed => typed_row(db, id).await,
        Kind::Pattern => pattern_row(db, id).await,
        Kind::Tag => tagged_row(db, id).await,
        Kind::WriteThrough => through_row(db, id).await,
    }
}

/// A write of row `id` and its invalidation; the version written.
pub async fn write(kind: Kind, db: &Db, id: u64) -> u64 {
    match kind {
        Kind::Typed => typed_write(db, id).await,
        Kind::Pattern => pattern_write(db, id).await,
        Kind::Tag => tag_write(db, id).await,
        Kind::WriteThrough => through_write(db, id).await,
    }
}
