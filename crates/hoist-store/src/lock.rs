//! Cross-process advisory locks on files (`flock(2)` through [`File::lock`]).
//!
//! A lock belongs to an open file description, so two handles in one process exclude each other
//! exactly as two processes do. Locks are released when the [`FileLock`] is dropped or when the
//! holding process dies, which is what lets a killed writer's ingest be picked up by the next one.
//!
//! Ingest lock files are unlinked by the holder when the ingest ends; a waiter that then obtains
//! the lock on the unlinked file notices that the path no longer names the file it locked and tries
//! again on the new one ([`FileLock::acquire_unlinkable`]).

use std::fs::{self, File, TryLockError};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::durable;
use crate::error::{IoContext, Result};

/// Whether to wait for a contended lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Wait {
    /// Block until the lock is free.
    Block,
    /// Return at once when another holder has it.
    Try,
}

/// Exclusive or shared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// One holder at a time.
    Exclusive,
    /// Any number of shared holders, excluding exclusive ones.
    Shared,
}

/// A held lock; dropping it releases the lock.
#[derive(Debug)]
pub(crate) struct FileLock {
    file: File,
    path: PathBuf,
}

impl FileLock {
    /// Locks `path` (created if missing), a file that is never removed while in use.
    /// Returns `Ok(None)` when `wait` is [`Wait::Try`] and the lock is held elsewhere.
    pub(crate) fn acquire(path: &Path, mode: Mode, wait: Wait) -> Result<Option<FileLock>> {
        let file = durable::open_rw_create(path).ctx("open lock file", path)?;
        if lock_file(&file, mode, wait).ctx("lock", path)? {
            Ok(Some(FileLock {
                file,
                path: path.to_owned(),
            }))
        } else {
            Ok(None)
        }
    }

    /// Locks `path`, a file that a holder may unlink once done. `prepare` runs before each attempt
    /// (to recreate the parent directory, say). After locking, the path must still name the locked
    /// file; if it does not, the attempt is repeated.
    pub(crate) fn acquire_unlinkable(
        path: &Path,
        wait: Wait,
        mut prepare: impl FnMut() -> Result<()>,
    ) -> Result<Option<FileLock>> {
        loop {
            prepare()?;
            let file = match durable::open_rw_create(path) {
                Ok(f) => f,
                // The directory vanished between `prepare` and the open: start over.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e).ctx("open lock file", path),
            };
            if !lock_file(&file, Mode::Exclusive, wait).ctx("lock", path)? {
                return Ok(None);
            }
            let held = file.metadata().ctx("stat lock file", path)?;
            match fs::metadata(path) {
                Ok(now) if now.dev() == held.dev() && now.ino() == held.ino() => {
                    return Ok(Some(FileLock {
                        file,
                        path: path.to_owned(),
                    }));
                }
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e).ctx("stat lock file", path),
            }
        }
    }

    /// Unlinks the lock file while still holding the lock (see the module documentation).
    pub(crate) fn unlink(&self) -> Result<()> {
        durable::remove_file_if_exists(&self.path).map(|_| ())
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        // Closing the descriptor releases the lock too; unlocking first makes it explicit.
        let _ = self.file.unlock();
    }
}

/// Takes the lock; `Ok(false)` means "held elsewhere" under [`Wait::Try`].
fn lock_file(file: &File, mode: Mode, wait: Wait) -> io::Result<bool> {
    let attempt = match (mode, wait) {
        (Mode::Exclusive, Wait::Block) => return file.lock().map(|()| true),
        (Mode::Shared, Wait::Block) => return file.lock_shared().map(|()| true),
        (Mode::Exclusive, Wait::Try) => file.try_lock(),
        (Mode::Shared, Wait::Try) => file.try_lock_shared(),
    };
    match attempt {
        Ok(()) => Ok(true),
        Err(TryLockError::WouldBlock) => Ok(false),
        Err(TryLockError::Error(e)) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_exclusive_handle_in_the_same_process_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("l");
        let first = FileLock::acquire(&p, Mode::Exclusive, Wait::Try).unwrap();
        assert!(first.is_some());
        assert!(
            FileLock::acquire(&p, Mode::Exclusive, Wait::Try)
                .unwrap()
                .is_none()
        );
        assert!(
            FileLock::acquire(&p, Mode::Shared, Wait::Try)
                .unwrap()
                .is_none()
        );
        drop(first);
        assert!(
            FileLock::acquire(&p, Mode::Exclusive, Wait::Try)
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn shared_holders_coexist_and_exclude_exclusive() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("l");
        let a = FileLock::acquire(&p, Mode::Shared, Wait::Try).unwrap();
        let b = FileLock::acquire(&p, Mode::Shared, Wait::Try).unwrap();
        assert!(a.is_some() && b.is_some());
        assert!(
            FileLock::acquire(&p, Mode::Exclusive, Wait::Try)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn waiter_on_an_unlinked_lock_file_retries_on_the_new_file() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("ingest");
        let p = sub.join("lock");
        let prep = || durable::create_dir_all(&sub);
        let holder = FileLock::acquire_unlinkable(&p, Wait::Block, prep)
            .unwrap()
            .unwrap();
        // Simulate a waiter that opened the old file before it was unlinked.
        let stale = File::open(&p).unwrap();
        holder.unlink().unwrap();
        drop(holder);
        // The stale handle can lock, but the path check must reject it.
        stale.lock().unwrap();
        let held = stale.metadata().unwrap();
        assert!(fs::metadata(&p).is_err() || fs::metadata(&p).unwrap().ino() != held.ino());
        // A fresh acquire succeeds on a new file even though the stale handle holds the old one.
        let fresh =
            FileLock::acquire_unlinkable(&p, Wait::Try, || durable::create_dir_all(&sub)).unwrap();
        assert!(fresh.is_some());
    }
}
