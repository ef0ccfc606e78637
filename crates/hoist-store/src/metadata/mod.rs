//! The metadata database: one SQLite file (`metadata.db`) shared by every process using the store.
//!
//! It holds what the blobs themselves do not say: references (`registry/repo:tag` and
//! `registry/repo@digest` -> manifest), image records, the digest <-> DiffID relation, the blob
//! info cache (compression and known registry locations of blobs, which double as the source
//! repositories used for cross-repository mounts), labels, and leases.
//!
//! Every query of the crate lives in this module; the rest of the crate calls the typed functions
//! below.
//!
//! # Concurrency and durability
//! The database runs in WAL mode, so readers never block writers. Every commit survives a
//! process crash (`kill -9`). Against power loss, commits run with `synchronous=NORMAL` (the WAL
//! is not fsynced per transaction: leases, the blob info cache and image records are cheap to
//! lose) except the ones that change references, which run with `synchronous=FULL`: their fsync
//! of the append-only WAL also makes every earlier commit durable, so when a pull reports success
//! its reference and everything it recorded before survive a power loss. (A pull made about 30
//! small transactions; fsyncing each cost 40–50 ms of a one-second pull.) Several processes may open it at once: writers queue on
//! SQLite's lock with a busy timeout (default 30 s) rather than failing. Within a process, one
//! connection is shared behind a mutex; every function is a short transaction.
//!
//! # Schema
//! The schema version is SQLite's `user_version`. Opening a database applies the migrations it
//! lacks, from version 1 on, in one `IMMEDIATE` transaction so that two processes opening a new
//! store at once do not both migrate. A database from a newer hoist is refused
//! ([`crate::StoreError::SchemaTooNew`]).
//!
//! # Permissions
//! The file is created with mode 0600: it names the registries and repositories the user works
//! with, which other local users have no need to see. (SQLite gives its `-wal` and `-shm` files
//! the same mode.)

mod absent;
mod blobinfo;
mod files;
mod images;
mod labels;
mod leases;
mod references;
mod schema;

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use oci_spec::image::Digest;
use rusqlite::{Connection, OpenFlags, Transaction, TransactionBehavior};

pub use absent::AbsentBlob;
pub use blobinfo::{BlobLocation, Compression, LocationCandidate, MAX_LOCATIONS_PER_BLOB};
pub use files::FileContent;
pub use images::{ImagePlatform, ImageRecord};
pub use labels::{LabelSubject, Labels};
pub use leases::{LeaseOptions, LeaseRecord, LeaseResource};
pub use references::{ReferenceKind, ReferenceRecord};

use crate::error::{IoContext, Result, StoreError};

/// Default time a writer waits for another process's transaction before giving up.
pub const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// A handle on the metadata database. Cheap to share behind an `Arc`; every method is
/// synchronous and may block on the database lock for up to the busy timeout.
#[derive(Debug)]
pub struct Metadata {
    path: PathBuf,
    conn: Mutex<Connection>,
}

impl Metadata {
    /// Opens (creating and migrating as needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Metadata> {
        Self::open_with_timeout(path, DEFAULT_BUSY_TIMEOUT)
    }

    /// Like [`Metadata::open`] with a chosen busy timeout.
    pub fn open_with_timeout(path: &Path, busy_timeout: Duration) -> Result<Metadata> {
        // Create the file ourselves so that it gets mode 0600 whatever SQLite would pick.
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .ctx("create database", path)?;
        let db = |source| StoreError::Database {
            path: path.to_owned(),
            source,
        };
        let mut conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(db)?;
        conn.busy_timeout(busy_timeout).map_err(db)?;
        // Switching a new database to WAL, and the first migration, need locks that SQLite may
        // refuse at once (without its busy handler) while another process does the same: retry
        // those until the busy timeout. The journal mode is persistent, so it is set only when
        // not already WAL.
        let deadline = std::time::Instant::now() + busy_timeout;
        let mode: String = retry_busy(deadline, || {
            let current: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0))?;
            if current.eq_ignore_ascii_case("wal") {
                return Ok(current);
            }
            conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
        })
        .map_err(db)?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(path = %path.display(), %mode, "metadata database is not in WAL mode");
        }
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(db)?;
        conn.pragma_update(None, "foreign_keys", true).map_err(db)?;
        loop {
            match schema::migrate(&mut conn, path) {
                Err(StoreError::Database { source, .. })
                    if is_busy(&source) && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(10));
                }
                other => break other?,
            }
        }
        Ok(Metadata {
            path: path.to_owned(),
            conn: Mutex::new(conn),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The schema version of the open database.
    pub fn schema_version(&self) -> Result<i64> {
        self.read(|c| c.query_row("PRAGMA user_version", [], |r| r.get(0)))
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the guard cannot leave the connection half-used: every use is a
        // complete statement or transaction that SQLite rolls back on drop.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn db_err(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Database {
            path: self.path.clone(),
            source,
        }
    }

    /// Runs read-only statements.
    fn read<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T> {
        let conn = self.lock();
        f(&conn).map_err(|e| self.db_err(e))
    }

    /// Runs statements in one `IMMEDIATE` transaction (taking the write lock up front, so that the
    /// busy timeout applies instead of a mid-transaction upgrade failure).
    fn write<T>(&self, f: impl FnOnce(&Transaction<'_>) -> rusqlite::Result<T>) -> Result<T> {
        let mut conn = self.lock();
        let run = || {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let out = f(&tx)?;
            tx.commit()?;
            Ok(out)
        };
        run().map_err(|e| self.db_err(e))
    }

    /// [`Metadata::write`] made durable against power loss before it returns: the commit fsyncs
    /// the WAL (`synchronous=FULL` for this transaction), which covers every earlier commit too.
    fn write_durable<T>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> rusqlite::Result<T>,
    ) -> Result<T> {
        let mut conn = self.lock();
        let run = || {
            conn.pragma_update(None, "synchronous", "FULL")?;
            let result: rusqlite::Result<T> = (|| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let out = f(&tx)?;
                tx.commit()?;
                Ok(out)
            })();
            let restored = conn.pragma_update(None, "synchronous", "NORMAL");
            let out = result?;
            restored?;
            Ok(out)
        };
        run().map_err(|e| self.db_err(e))
    }

    /// The `synchronous` setting ordinary transactions run with (1 = NORMAL, 2 = FULL).
    #[cfg(test)]
    fn synchronous(&self) -> Result<i64> {
        self.read(|c| c.query_row("PRAGMA synchronous", [], |r| r.get(0)))
    }
}

/// Parses a digest stored by this module; a malformed one is reported as a conversion failure.
fn column_digest(row: &rusqlite::Row<'_>, idx: usize) -> rusqlite::Result<Digest> {
    let text: String = row.get(idx)?;
    Digest::try_from(text.as_str()).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(idx, rusqlite::types::Type::Text, Box::new(e))
    })
}

/// Converts a `u64` to SQLite's signed integer, saturating.
fn to_sql_u64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Converts SQLite's signed integer back to `u64` (negatives become 0).
fn from_sql_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// Whether SQLite refused for a lock another connection holds.
fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

/// Runs `f` again while it fails for a lock, until `deadline`.
fn retry_busy<T>(
    deadline: std::time::Instant,
    mut f: impl FnMut() -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    loop {
        match f() {
            Err(e) if is_busy(&e) && std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            other => return other,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    pub(crate) fn open_temp() -> (tempfile::TempDir, Metadata) {
        let dir = tempfile::tempdir().unwrap();
        let md = Metadata::open(&dir.path().join("metadata.db")).unwrap();
        (dir, md)
    }

    #[test]
    fn many_connections_opening_a_new_database_at_once_all_succeed() {
        for round in 0..5 {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join(format!("metadata-{round}.db"));
            let barrier = std::sync::Arc::new(std::sync::Barrier::new(8));
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    let path = path.clone();
                    let barrier = barrier.clone();
                    std::thread::spawn(move || {
                        barrier.wait();
                        Metadata::open(&path).map(|m| m.schema_version().unwrap())
                    })
                })
                .collect();
            for h in handles {
                let version = h.join().unwrap().expect("open must wait, not fail");
                assert_eq!(version, schema::LATEST);
            }
        }
    }

    #[test]
    fn new_database_is_migrated_to_the_latest_version_in_wal_mode_with_mode_0600() {
        let (dir, md) = open_temp();
        assert_eq!(md.schema_version().unwrap(), schema::LATEST);
        let mode: String = md
            .read(|c| c.query_row("PRAGMA journal_mode", [], |r| r.get(0)))
            .unwrap();
        assert_eq!(mode, "wal");
        let perm = std::fs::metadata(dir.path().join("metadata.db"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(perm & 0o777, 0o600);
    }

    #[test]
    fn ordinary_commits_run_normal_and_durable_ones_full_then_normal_again() {
        let (dir, md) = open_temp();
        assert_eq!(md.synchronous().unwrap(), 1, "NORMAL after open");
        // Inside a durable transaction the commit runs FULL (it fsyncs the WAL).
        let inside = md
            .write_durable(|tx| tx.query_row("PRAGMA synchronous", [], |r| r.get::<_, i64>(0)))
            .unwrap();
        assert_eq!(inside, 2, "FULL for the durable commit");
        let target = crate::digests::sha256_of(b"manifest");
        md.put_reference("r.example/a:1", &target, "application/json", 8)
            .unwrap();
        assert_eq!(
            md.synchronous().unwrap(),
            1,
            "NORMAL again after a durable commit"
        );
        // A failing durable transaction restores the setting too.
        let failed = md.write_durable(|tx| tx.execute("INSERT INTO no_such_table VALUES (1)", []));
        assert!(failed.is_err());
        assert_eq!(md.synchronous().unwrap(), 1);
        // Another connection sees the reference.
        let other = Metadata::open(&dir.path().join("metadata.db")).unwrap();
        assert_eq!(
            *other
                .reference("r.example/a:1")
                .unwrap()
                .unwrap()
                .target
                .digest(),
            target
        );
        assert!(md.remove_reference("r.example/a:1").unwrap());
        assert!(other.reference("r.example/a:1").unwrap().is_none());
    }

    #[test]
    fn reopening_keeps_data_and_version() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("metadata.db");
        let d = crate::digests::sha256_of(b"m");
        {
            let md = Metadata::open(&p).unwrap();
            md.put_reference("r/x:1", &d, "application/vnd.oci.image.manifest.v1+json", 3)
                .unwrap();
        }
        let md = Metadata::open(&p).unwrap();
        assert_eq!(md.schema_version().unwrap(), schema::LATEST);
        assert_eq!(md.reference("r/x:1").unwrap().unwrap().target.digest(), &d);
    }

    #[test]
    fn database_from_a_newer_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("metadata.db");
        {
            let c = Connection::open(&p).unwrap();
            c.pragma_update(None, "user_version", schema::LATEST + 1)
                .unwrap();
        }
        let err = Metadata::open(&p).unwrap_err();
        assert!(
            matches!(err, StoreError::SchemaTooNew { found, .. } if found == schema::LATEST + 1)
        );
    }

    #[test]
    fn two_handles_on_one_file_see_each_others_writes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("metadata.db");
        let a = Metadata::open(&p).unwrap();
        let b = Metadata::open(&p).unwrap();
        let d = crate::digests::sha256_of(b"x");
        a.record_diff_id(&d, &d).unwrap();
        assert_eq!(b.diff_id(&d).unwrap(), Some(d));
    }
}
