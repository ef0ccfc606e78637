//! Schema migrations, numbered from 1; `PRAGMA user_version` records the applied number.
//!
//! A migration is appended, never edited: a store created by any earlier hoist is brought forward
//! by applying the ones it lacks, in order, in one transaction.

use std::path::Path;

use rusqlite::{Connection, TransactionBehavior};

use crate::error::{Result, StoreError};

/// Migration `i` (0-based) brings the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    // Version 1.
    r#"
    -- Names (registry/repo:tag or registry/repo@digest) -> the manifest or index they designate.
    CREATE TABLE refs (
        name        TEXT PRIMARY KEY,
        kind        TEXT NOT NULL CHECK (kind IN ('tag', 'digest')),
        target      TEXT NOT NULL,
        media_type  TEXT NOT NULL,
        size        INTEGER NOT NULL,
        updated_ms  INTEGER NOT NULL
    );
    CREATE INDEX refs_by_target ON refs(target);

    -- One row per image manifest pulled or built.
    CREATE TABLE images (
        manifest      TEXT PRIMARY KEY,
        config        TEXT NOT NULL,
        os            TEXT NOT NULL,
        architecture  TEXT NOT NULL,
        variant       TEXT,
        created       TEXT,
        size          INTEGER NOT NULL,
        recorded_ms   INTEGER NOT NULL
    );
    CREATE INDEX images_by_config ON images(config);

    -- Blob digest (compressed or not) -> DiffID (digest of the uncompressed content).
    CREATE TABLE diff_ids (
        digest   TEXT PRIMARY KEY,
        diff_id  TEXT NOT NULL
    );
    CREATE INDEX diff_ids_by_diff_id ON diff_ids(diff_id);

    -- Blob info cache: how a blob is compressed.
    CREATE TABLE blob_compression (
        digest       TEXT PRIMARY KEY,
        compression  TEXT NOT NULL,
        recorded_ms  INTEGER NOT NULL
    );

    -- Where a blob was seen: registry + repository, newest kept, bounded per blob.
    CREATE TABLE blob_locations (
        digest      TEXT NOT NULL,
        registry    TEXT NOT NULL,
        repository  TEXT NOT NULL,
        seen_ms     INTEGER NOT NULL,
        PRIMARY KEY (digest, registry, repository)
    );
    CREATE INDEX blob_locations_newest ON blob_locations(digest, seen_ms DESC);

    -- Labels on blobs, images, layers and references.
    CREATE TABLE labels (
        kind     TEXT NOT NULL,
        subject  TEXT NOT NULL,
        key      TEXT NOT NULL,
        value    TEXT NOT NULL,
        PRIMARY KEY (kind, subject, key)
    );

    -- Leases protect what a running operation uses from garbage collection.
    CREATE TABLE leases (
        id          TEXT PRIMARY KEY,
        pid         INTEGER,
        pid_start   INTEGER,
        boot_id     TEXT,
        created_ms  INTEGER NOT NULL,
        expires_ms  INTEGER
    );
    CREATE TABLE lease_resources (
        lease  TEXT NOT NULL REFERENCES leases(id) ON DELETE CASCADE,
        kind   TEXT NOT NULL,
        id     TEXT NOT NULL,
        PRIMARY KEY (lease, kind, id)
    );
    CREATE INDEX lease_resources_by_resource ON lease_resources(kind, id);
    "#,
    // Version 2.
    r#"
    -- Layers that are present and verified while their compressed blob is not (a partial pull
    -- rebuilt them from chunks): where the blob can be fetched or mounted from.
    CREATE TABLE absent_blobs (
        digest      TEXT PRIMARY KEY,
        diff_id     TEXT NOT NULL,
        size        INTEGER NOT NULL,
        media_type  TEXT NOT NULL,
        registry    TEXT NOT NULL,
        repository  TEXT NOT NULL,
        recorded_ms INTEGER NOT NULL
    );

    -- Contents of regular files in unpacked layers, for partial pulls to find local copies.
    CREATE TABLE file_contents (
        chain_id  TEXT NOT NULL,
        path      TEXT NOT NULL,
        size      INTEGER NOT NULL,
        digest    TEXT NOT NULL,
        mtime_ns  INTEGER,
        PRIMARY KEY (chain_id, path)
    );
    CREATE INDEX file_contents_by_digest ON file_contents(digest, size);
    "#,
];

/// The schema version this build creates and understands.
pub(crate) const LATEST: i64 = MIGRATIONS.len() as i64;

/// Applies missing migrations; refuses databases from a newer hoist.
pub(crate) fn migrate(conn: &mut Connection, path: &Path) -> Result<()> {
    let db = |source| StoreError::Database {
        path: path.to_owned(),
        source,
    };
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db)?;
    let current: i64 = tx
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(db)?;
    if current > LATEST {
        return Err(StoreError::SchemaTooNew {
            path: path.to_owned(),
            found: current,
            supported: LATEST,
        });
    }
    let start = usize::try_from(current).unwrap_or(0);
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(start) {
        tracing::debug!(path = %path.display(), to = i + 1, "migrating metadata schema");
        tx.execute_batch(sql).map_err(db)?;
    }
    if current != LATEST {
        tx.pragma_update(None, "user_version", LATEST).map_err(db)?;
    }
    tx.commit().map_err(db)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrating_twice_is_a_no_op() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("db");
        let mut c = Connection::open(&p).unwrap();
        migrate(&mut c, &p).unwrap();
        migrate(&mut c, &p).unwrap();
        let v: i64 = c
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, LATEST);
        let tables: i64 = c
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(tables, 10);
    }
}
