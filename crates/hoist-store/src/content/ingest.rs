//! Resumable ingests: the only way bytes enter the content store.
//!
//! # On disk
//! Each ingest has a directory `ingest/<sanitised ref>-<hash of ref>/` holding
//! * `lock`: the cross-process lock; whoever holds it is the ingest's only writer;
//! * `meta.json`: the ingest's reference, expected digest and size, start time, and the identity
//!   of the boot during which its bytes were last written;
//! * `data`: the bytes received so far;
//! * `checkpoint.json`: the last durable point: an offset whose prefix was fsynced, and the digest
//!   of that prefix.
//!
//! # Resuming
//! A writer that opens an existing ingest continues where the bytes on disk end:
//! * If the machine has not rebooted since those bytes were written (same boot identity), every
//!   byte the dead writer handed to the kernel is in the file, even after `kill -9`: the whole file
//!   is kept.
//! * After a reboot (or where no boot identity is available) the tail past the last checkpoint
//!   may be torn (unsynced blocks read back as zeroes or garbage), so the file is cut back to the
//!   checkpoint.
//!
//! The kept prefix is then re-hashed to rebuild the running hash (sha2 runs at about 1.1 GB/s, so
//! a resumed 1 GB blob costs under a second) and, on the way, checked against the checkpoint's
//! digest; a prefix that does not match (the disk altered it) is discarded and the ingest starts
//! over. Nothing unverified can reach `blobs/`: the commit compares the full digest anyway.
//!
//! Checkpoints are written every [`DEFAULT_CHECKPOINT_INTERVAL`] bytes by default (change it with
//! [`Writer::set_checkpoint_interval`], or call [`Writer::checkpoint`]); they only matter for
//! power loss, since a killed process loses nothing that reached the kernel.
//!
//! An automatic checkpoint runs on a thread of its own (fdatasync of the data, then the
//! checkpoint record written atomically) while the writer goes on taking bytes: an fsync of tens
//! of megabytes would otherwise stall the download feeding the writer. It records the offset and
//! digest of the moment it began, which the fdatasync covers. Anything that changes the data file
//! other than appending (reset, discard, commit, abort) and the writer's drop first wait for it.

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use oci_spec::image::{Digest, DigestAlgorithm};
use serde::{Deserialize, Serialize};

use super::{BlobInfo, ContentStore};
use crate::digests::{self, DigestHasher};
use crate::durable::{self, from_unix_millis, unix_millis};
use crate::error::{IoContext, Result, StoreError};
use crate::lock::{FileLock, Wait};
use crate::metadata::LabelSubject;

/// Bytes between automatic checkpoints (fsync + recorded durable offset).
pub const DEFAULT_CHECKPOINT_INTERVAL: u64 = 64 << 20;

/// Size of the writer's internal buffer; larger writes bypass it.
const BUFFER: usize = 256 << 10;

const LOCK: &str = "lock";
const META: &str = "meta.json";
const DATA: &str = "data";
const CHECKPOINT: &str = "checkpoint.json";

/// Longest ingest reference accepted.
const MAX_REFERENCE_LEN: usize = 1024;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
struct IngestMeta {
    reference: String,
    expected: Option<String>,
    expected_size: Option<u64>,
    started_ms: i64,
    boot_id: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Checkpoint {
    offset: u64,
    digest: String,
}

/// The state of an ingest, as seen from outside its writer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IngestInfo {
    /// The ingest's reference.
    pub reference: String,
    /// Bytes in its data file (a running writer may hold a few more in its buffer).
    pub offset: u64,
    /// Bytes known to be on stable storage (the last checkpoint).
    pub durable_offset: u64,
    /// The digest the content must have, when announced.
    pub expected: Option<Digest>,
    /// The size the content must have, when announced.
    pub expected_size: Option<u64>,
    /// When the ingest began.
    pub started_at: SystemTime,
    /// When its data last changed.
    pub updated_at: SystemTime,
}

/// Writes one blob into the store, resumably.
///
/// Obtained from [`ContentStore::writer`] (blocking) or [`ContentStore::try_writer`]. The writer
/// holds the ingest's cross-process lock until it is committed, aborted or dropped. Write the
/// bytes from [`Writer::offset`] on (a resumed ingest starts past zero), then [`Writer::commit`].
/// Dropping a writer without committing keeps the ingest for the next writer to resume.
///
/// Bytes are hashed as they are written. `write` refuses bytes beyond the expected size. Any I/O
/// failure leaves the writer unusable ([`StoreError::WriterFailed`]); open a new writer to resume
/// from what reached the disk.
#[derive(Debug)]
pub struct Writer {
    content: ContentStore,
    reference: String,
    dir: PathBuf,
    lock: FileLock,
    file: File,
    buf: Vec<u8>,
    hasher: DigestHasher,
    offset: u64,
    durable: Mutex<Durable>,
    expected: Option<Digest>,
    expected_size: Option<u64>,
    checkpoint_interval: u64,
    next_checkpoint: u64,
    failed: bool,
    done: bool,
}

/// What is known to be on stable storage, and the automatic checkpoint that may be extending it.
#[derive(Debug)]
struct Durable {
    /// The offset of the last completed checkpoint.
    offset: u64,
    /// An automatic checkpoint running in the background: it yields the offset it made durable.
    running: Option<JoinHandle<Result<u64>>>,
    /// How the last background checkpoint failed, until the writer reports it.
    failed: Option<StoreError>,
}

impl Durable {
    fn new(offset: u64) -> Durable {
        Durable {
            offset,
            running: None,
            failed: None,
        }
    }

    /// Waits for the running checkpoint, if any, and records its outcome.
    fn settle(&mut self, reference: &str) {
        if let Some(handle) = self.running.take() {
            match handle.join() {
                Ok(Ok(offset)) => self.offset = self.offset.max(offset),
                Ok(Err(e)) => self.failed = Some(e),
                Err(_) => {
                    tracing::warn!(reference, "an ingest checkpoint thread panicked");
                    self.failed = Some(StoreError::WriterFailed {
                        reference: reference.to_owned(),
                    });
                }
            }
        }
    }
}

/// Makes the first `offset` bytes of `file` durable and records them, with their digest, as the
/// ingest's checkpoint in `dir`.
fn record_checkpoint(file: &File, dir: &Path, offset: u64, digest: String) -> Result<u64> {
    file.sync_data().ctx("fsync ingest data", &dir.join(DATA))?;
    let cp = Checkpoint { offset, digest };
    let bytes = serde_json::to_vec(&cp).map_err(|e| StoreError::Malformed {
        what: "ingest checkpoint",
        location: dir.display().to_string(),
        reason: e.to_string(),
    })?;
    durable::write_atomic(&dir.join(CHECKPOINT), &bytes)?;
    Ok(offset)
}

/// Refuses references that cannot name an ingest.
fn check_reference(reference: &str) -> Result<()> {
    let reason = if reference.is_empty() {
        "ingest references must not be empty"
    } else if reference.len() > MAX_REFERENCE_LEN {
        "ingest references are limited to 1024 bytes"
    } else if reference.chars().any(char::is_control) {
        "ingest references must not contain control characters"
    } else {
        return Ok(());
    };
    Err(StoreError::InvalidName {
        name: reference.chars().take(80).collect(),
        reason,
    })
}

/// The directory name of an ingest: a readable prefix of the reference plus a hash of all of it,
/// so that distinct references never share a directory and any reference fits a file name.
pub(crate) fn dir_name(reference: &str) -> String {
    let mut name: String = reference
        .chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if name.starts_with('.') {
        name.replace_range(..1, "_");
    }
    let hash = digests::sha256_of(reference.as_bytes());
    name.push('-');
    name.push_str(&hash.digest()[..32]);
    name
}

fn read_meta(dir: &Path) -> Option<IngestMeta> {
    let bytes = fs::read(dir.join(META)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn write_meta(dir: &Path, meta: &IngestMeta) -> Result<()> {
    let bytes = serde_json::to_vec(meta).map_err(|e| StoreError::Malformed {
        what: "ingest record",
        location: dir.display().to_string(),
        reason: e.to_string(),
    })?;
    durable::write_atomic(&dir.join(META), &bytes)
}

fn read_checkpoint(dir: &Path, algorithm: &DigestAlgorithm) -> Option<(u64, Digest)> {
    let bytes = fs::read(dir.join(CHECKPOINT)).ok()?;
    let cp: Checkpoint = serde_json::from_slice(&bytes).ok()?;
    let digest = Digest::try_from(cp.digest).ok()?;
    (digest.algorithm() == algorithm).then_some((cp.offset, digest))
}

/// Removes everything of an ingest whose lock `lock` is held, then the lock file and directory.
fn remove_ingest(dir: &Path, lock: &FileLock) -> Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).ctx("list ingest", dir),
    };
    for entry in entries {
        let entry = entry.ctx("list ingest", dir)?;
        if entry.file_name() != LOCK {
            durable::remove_file_if_exists(&entry.path())?;
        }
    }
    lock.unlink()?;
    match fs::remove_dir(dir) {
        Ok(()) => Ok(()),
        // Gone already, or a new writer has just created its lock file there: leave it to them.
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::DirectoryNotEmpty
            ) =>
        {
            Ok(())
        }
        Err(e) => Err(e).ctx("remove ingest directory", dir),
    }
}

/// Both known and different.
fn conflicts<T: PartialEq>(a: Option<T>, b: Option<T>) -> bool {
    matches!((a, b), (Some(a), Some(b)) if a != b)
}

/// Where a writer starts.
struct Resumed {
    file: File,
    hasher: DigestHasher,
    offset: u64,
    durable: u64,
    expected: Option<Digest>,
    expected_size: Option<u64>,
}

impl Writer {
    pub(crate) fn open(
        content: ContentStore,
        reference: &str,
        expected: Option<&Digest>,
        expected_size: Option<u64>,
        wait: Wait,
    ) -> Result<Writer> {
        check_reference(reference)?;
        let already = |d: &Digest| StoreError::AlreadyExists { digest: d.clone() };
        let dir = content.ingest_dir().join(dir_name(reference));
        if let Some(d) = expected {
            digests::check_algorithm(d)?;
            if content.contains(d)? {
                // A writer killed between its rename and its cleanup leaves the ingest behind;
                // remove it when nobody holds it.
                if dir.is_dir()
                    && let Ok(Some(lock)) = lock_existing(&dir, reference)
                {
                    remove_ingest(&dir, &lock)?;
                }
                return Err(already(d));
            }
        }
        let lock =
            FileLock::acquire_unlinkable(&dir.join(LOCK), wait, || durable::create_dir_all(&dir))?
                .ok_or_else(|| StoreError::Locked {
                    reference: reference.to_owned(),
                })?;
        if let Some(d) = expected
            && content.contains(d)?
        {
            // Another writer committed it while this one waited.
            remove_ingest(&dir, &lock)?;
            return Err(already(d));
        }
        let resumed = resume(&dir, reference, expected, expected_size)?;
        tracing::debug!(reference, offset = resumed.offset, "ingest opened");
        Ok(Writer {
            content,
            reference: reference.to_owned(),
            dir,
            lock,
            file: resumed.file,
            buf: Vec::with_capacity(BUFFER),
            hasher: resumed.hasher,
            offset: resumed.offset,
            durable: Mutex::new(Durable::new(resumed.durable)),
            expected: resumed.expected,
            expected_size: resumed.expected_size,
            checkpoint_interval: DEFAULT_CHECKPOINT_INTERVAL,
            next_checkpoint: resumed.offset.saturating_add(DEFAULT_CHECKPOINT_INTERVAL),
            failed: false,
            done: false,
        })
    }

    /// The ingest's reference.
    pub fn reference(&self) -> &str {
        &self.reference
    }

    /// Bytes accepted so far: where the caller continues writing.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Bytes known to be on stable storage (after waiting for a checkpoint in progress).
    pub fn durable_offset(&self) -> u64 {
        let mut d = self.durable.lock().unwrap_or_else(|p| p.into_inner());
        d.settle(&self.reference);
        d.offset
    }

    /// Waits for a background checkpoint and reports its failure, if it failed.
    fn settle_checkpoint(&mut self) -> Result<()> {
        let reference = self.reference.clone();
        let d = self.durable.get_mut().unwrap_or_else(|p| p.into_inner());
        d.settle(&reference);
        match d.failed.take() {
            Some(e) => {
                self.failed = true;
                Err(e)
            }
            None => Ok(()),
        }
    }

    /// Starts an automatic checkpoint on its own thread (after the previous one has finished).
    fn checkpoint_in_background(&mut self) -> Result<()> {
        self.settle_checkpoint()?;
        self.flush_buf()?;
        let path = self.data_path();
        let r = self.file.try_clone().ctx("open ingest data", &path);
        let file = self.guard(r)?;
        let dir = self.dir.clone();
        let offset = self.offset;
        let digest = self.hasher.current().to_string();
        let spawned = std::thread::Builder::new()
            .name("hoist-checkpoint".into())
            .spawn(move || record_checkpoint(&file, &dir, offset, digest));
        match spawned {
            Ok(handle) => {
                self.durable
                    .get_mut()
                    .unwrap_or_else(|p| p.into_inner())
                    .running = Some(handle);
                self.next_checkpoint = offset.saturating_add(self.checkpoint_interval);
                Ok(())
            }
            // No thread to spare: checkpoint here instead.
            Err(_) => self.checkpoint(),
        }
    }

    /// The digest the content must have, when known (given now or when the ingest began).
    pub fn expected(&self) -> Option<&Digest> {
        self.expected.as_ref()
    }

    /// The size the content must have, when known.
    pub fn expected_size(&self) -> Option<u64> {
        self.expected_size
    }

    /// Sets the number of bytes between automatic checkpoints (at least one byte).
    pub fn set_checkpoint_interval(&mut self, bytes: u64) {
        self.checkpoint_interval = bytes.max(1);
        self.next_checkpoint = self.offset.saturating_add(self.checkpoint_interval);
    }

    fn data_path(&self) -> PathBuf {
        self.dir.join(DATA)
    }

    fn usable(&self) -> Result<()> {
        if self.failed || self.done {
            Err(StoreError::WriterFailed {
                reference: self.reference.clone(),
            })
        } else {
            Ok(())
        }
    }

    /// Marks the writer failed when `r` is an error.
    fn guard<T>(&mut self, r: Result<T>) -> Result<T> {
        if r.is_err() {
            self.failed = true;
        }
        r
    }

    fn flush_buf(&mut self) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let path = self.data_path();
        let r = self
            .file
            .write_all(&self.buf)
            .ctx("write ingest data", &path);
        self.buf.clear();
        self.guard(r)
    }

    /// Makes every accepted byte durable and records the point, so that even a power loss resumes
    /// from here.
    pub fn checkpoint(&mut self) -> Result<()> {
        self.usable()?;
        self.settle_checkpoint()?;
        self.flush_buf()?;
        let digest = self.hasher.current().to_string();
        let r = record_checkpoint(&self.file, &self.dir, self.offset, digest);
        let offset = self.guard(r)?;
        self.durable
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .offset = offset;
        self.next_checkpoint = self.offset.saturating_add(self.checkpoint_interval);
        Ok(())
    }

    /// Throws the received bytes away and starts again from offset zero (for a source that
    /// cannot resume, say).
    pub fn reset(&mut self) -> Result<()> {
        self.usable()?;
        self.settle_checkpoint()?;
        self.buf.clear();
        let r = truncate_to(&mut self.file, &self.dir, 0);
        self.guard(r)?;
        self.hasher = DigestHasher::for_algorithm(&self.hasher.algorithm());
        self.offset = 0;
        self.durable
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .offset = 0;
        self.next_checkpoint = self.checkpoint_interval;
        Ok(())
    }

    /// Converts an [`io::Error`] returned by this writer's [`Write`] methods back into the
    /// [`StoreError`] it carries (or an I/O error on the ingest's data file).
    pub fn error_from_io(&self, err: io::Error) -> StoreError {
        let kind = err.kind();
        match err.into_inner() {
            Some(inner) => match inner.downcast::<StoreError>() {
                Ok(store) => *store,
                Err(other) => StoreError::io(
                    "write ingest data",
                    self.data_path(),
                    io::Error::new(kind, other),
                ),
            },
            None => StoreError::io("write ingest data", self.data_path(), io::Error::from(kind)),
        }
    }

    /// Digest of the data file computed with another algorithm (for a commit naming one).
    fn rehash_with(&mut self, algorithm: &DigestAlgorithm) -> Result<Digest> {
        let path = self.data_path();
        let mut hasher = DigestHasher::for_algorithm(algorithm);
        let mut f = File::open(&path).ctx("open ingest data", &path)?;
        io::copy(&mut f, &mut hasher).ctx("read ingest data", &path)?;
        Ok(hasher.finish())
    }

    /// Verifies and publishes the blob.
    ///
    /// `size` and `digest`, when given, must match the bytes written, as must the expected digest
    /// and size given when the ingest began. On success the data is fsynced, renamed to
    /// `blobs/<algorithm>/<hex>` and the directory fsynced; only then is the blob visible, and
    /// the ingest is gone. If the blob is already present (another writer committed the same
    /// content) this is a successful no-op that removes the ingest.
    ///
    /// A digest mismatch discards the received bytes (they can never become the expected blob);
    /// a size mismatch from a short write keeps them so that the writer can be reopened and the
    /// rest appended.
    pub fn commit(mut self, size: Option<u64>, digest: Option<&Digest>) -> Result<BlobInfo> {
        self.usable()?;
        if let Some(d) = digest {
            digests::check_algorithm(d)?;
        }
        self.settle_checkpoint()?;
        self.flush_buf()?;
        for want in [size, self.expected_size].into_iter().flatten() {
            if want != self.offset {
                if self.offset > want {
                    self.discard()?;
                }
                return Err(StoreError::SizeMismatch {
                    what: format!("ingest `{}`", self.reference),
                    expected: want,
                    actual: self.offset,
                });
            }
        }
        let computed = self.hasher.current();
        let mut wanted: Vec<Digest> = Vec::new();
        wanted.extend(digest.cloned());
        wanted.extend(self.expected.clone());
        for want in &wanted {
            let actual = if want.algorithm() == computed.algorithm() {
                computed.clone()
            } else {
                let r = self.rehash_with(want.algorithm());
                self.guard(r)?
            };
            if &actual != want {
                self.discard()?;
                return Err(StoreError::DigestMismatch {
                    expected: want.clone(),
                    actual,
                });
            }
        }
        let final_digest = wanted.into_iter().next().unwrap_or(computed);
        let data = self.data_path();
        let r = self.file.sync_all().ctx("fsync ingest data", &data);
        self.guard(r)?;
        let target = self.content.blob_path(&final_digest)?;
        if !self.content.contains(&final_digest)? {
            let r = fs::rename(&data, &target).ctx("rename into place", &target);
            self.guard(r)?;
            if let Some(parent) = target.parent() {
                durable::fsync_dir(parent)?;
            }
            tracing::debug!(reference = %self.reference, digest = %final_digest, size = self.offset, "blob committed");
        }
        self.done = true;
        if let Err(e) = remove_ingest(&self.dir, &self.lock) {
            tracing::warn!(reference = %self.reference, error = %e, "committed, but the ingest directory could not be removed; gc will remove it");
        }
        let (size, committed_at) = self.content.stat(&final_digest)?;
        let labels = self
            .content
            .metadata()
            .labels(&LabelSubject::Blob(final_digest.clone()))?;
        Ok(BlobInfo {
            digest: final_digest,
            size,
            committed_at,
            labels,
        })
    }

    /// Throws away bytes that cannot be right, keeping the ingest (at offset zero).
    fn discard(&mut self) -> Result<()> {
        self.failed = true;
        self.durable
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .settle(&self.reference);
        truncate_to(&mut self.file, &self.dir, 0)
    }

    /// Removes the ingest and its data.
    pub fn abort(mut self) -> Result<()> {
        self.done = true;
        self.durable
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .settle(&self.reference);
        remove_ingest(&self.dir, &self.lock)
    }
}

impl Write for Writer {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.usable().map_err(io::Error::other)?;
        if data.is_empty() {
            return Ok(0);
        }
        let len = data.len() as u64;
        if let Some(limit) = self.expected_size
            && self.offset + len > limit
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                StoreError::SizeMismatch {
                    what: format!("ingest `{}`", self.reference),
                    expected: limit,
                    actual: self.offset + len,
                },
            ));
        }
        self.hasher.update(data);
        if self.buf.len() + data.len() > BUFFER {
            self.flush_buf().map_err(io::Error::other)?;
        }
        if data.len() >= BUFFER {
            let path = self.data_path();
            let r = self.file.write_all(data).ctx("write ingest data", &path);
            self.guard(r).map_err(io::Error::other)?;
        } else {
            self.buf.extend_from_slice(data);
        }
        self.offset += len;
        if self.offset >= self.next_checkpoint {
            self.checkpoint_in_background().map_err(io::Error::other)?;
        }
        Ok(data.len())
    }

    /// Hands buffered bytes to the kernel (no fsync; see [`Writer::checkpoint`]).
    fn flush(&mut self) -> io::Result<()> {
        self.usable().map_err(io::Error::other)?;
        self.flush_buf().map_err(io::Error::other)
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // The lock goes with the writer: no checkpoint may outlive it.
        self.durable
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .settle(&self.reference);
        if !self.done && !self.failed {
            // Keep what was received for the next writer; durability is not promised here.
            if let Err(e) = self.flush_buf() {
                tracing::warn!(reference = %self.reference, error = %e, "could not save buffered ingest bytes");
            }
        }
    }
}

/// Cuts the data file to `len`, fsyncs it, and drops a checkpoint that lies beyond.
fn truncate_to(file: &mut File, dir: &Path, len: u64) -> Result<()> {
    let data = dir.join(DATA);
    file.set_len(len).ctx("truncate ingest data", &data)?;
    file.seek(SeekFrom::Start(len))
        .ctx("seek ingest data", &data)?;
    file.sync_all().ctx("fsync ingest data", &data)?;
    let cp_beyond = fs::read(dir.join(CHECKPOINT))
        .ok()
        .and_then(|b| serde_json::from_slice::<Checkpoint>(&b).ok())
        .is_none_or(|cp| cp.offset > len);
    if cp_beyond {
        durable::remove_file_if_exists(&dir.join(CHECKPOINT))?;
    }
    Ok(())
}

/// Opens the ingest's data and decides where writing continues (see the module documentation).
fn resume(
    dir: &Path,
    reference: &str,
    expected: Option<&Digest>,
    expected_size: Option<u64>,
) -> Result<Resumed> {
    let data_path = dir.join(DATA);
    let mut file = durable::open_rw_create(&data_path).ctx("open ingest data", &data_path)?;
    let boot = durable::boot_id();
    let meta = read_meta(dir);
    let compatible = meta.as_ref().filter(|m| {
        m.reference == reference
            && !conflicts(m.expected.as_deref(), expected.map(|d| d.as_ref()))
            && !conflicts(m.expected_size, expected_size)
    });
    let Some(old) = compatible.cloned() else {
        return start_fresh(dir, file, reference, expected, expected_size, boot);
    };
    let expected = match expected {
        Some(d) => Some(d.clone()),
        None => old
            .expected
            .as_deref()
            .and_then(|s| digests::parse_digest(s).ok()),
    };
    let expected_size = expected_size.or(old.expected_size);
    let algorithm = expected
        .as_ref()
        .map(|d| d.algorithm().clone())
        .unwrap_or(DigestAlgorithm::Sha256);
    let len = file.metadata().ctx("stat ingest data", &data_path)?.len();
    let checkpoint = read_checkpoint(dir, &algorithm);
    let same_boot = boot.is_some() && old.boot_id == boot;
    let keep = if same_boot {
        len
    } else {
        checkpoint.as_ref().map_or(0, |c| c.0)
    };
    let inconsistent = checkpoint.as_ref().is_some_and(|c| c.0 > len);
    if inconsistent || expected_size.is_some_and(|s| keep > s) {
        tracing::warn!(
            reference,
            "ingest data is inconsistent with its record; starting over"
        );
        return start_fresh(dir, file, reference, expected.as_ref(), expected_size, boot);
    }
    if keep < len {
        tracing::info!(
            reference,
            from = len,
            to = keep,
            "cutting unsynced ingest tail after a restart"
        );
        truncate_to(&mut file, dir, keep)?;
    }
    // Rebuild the running hash, checking the durable prefix on the way.
    let mut hasher = DigestHasher::for_algorithm(&algorithm);
    file.seek(SeekFrom::Start(0))
        .ctx("seek ingest data", &data_path)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut pos = 0u64;
    let mut prefix_ok = true;
    let check_at = checkpoint.as_ref().map(|c| c.0);
    while pos < keep {
        let mut want = (keep - pos).min(buf.len() as u64);
        if let Some(at) = check_at
            && pos < at
        {
            want = want.min(at - pos);
        }
        let want = usize::try_from(want).unwrap_or(buf.len()).min(buf.len());
        let n = file
            .read(&mut buf[..want])
            .ctx("read ingest data", &data_path)?;
        if n == 0 {
            break; // shorter than measured: someone truncated it; keep what is there
        }
        hasher.update(&buf[..n]);
        pos += n as u64;
        if let (Some(at), Some((_, digest))) = (check_at, checkpoint.as_ref())
            && pos == at
            && &hasher.current() != digest
        {
            prefix_ok = false;
            break;
        }
    }
    if !prefix_ok {
        tracing::warn!(
            reference,
            "ingest data does not match its checkpoint; starting over"
        );
        return start_fresh(dir, file, reference, expected.as_ref(), expected_size, boot);
    }
    if pos != len {
        truncate_to(&mut file, dir, pos)?;
    }
    file.seek(SeekFrom::Start(pos))
        .ctx("seek ingest data", &data_path)?;
    let updated = IngestMeta {
        reference: reference.to_owned(),
        expected: expected.as_ref().map(|d| d.to_string()),
        expected_size,
        started_ms: old.started_ms,
        boot_id: boot,
    };
    // Recorded only after any cut above is durable, so a crash in between cannot make a torn tail
    // look like this boot's bytes.
    if updated != old {
        write_meta(dir, &updated)?;
    }
    let durable = checkpoint.map_or(0, |c| c.0).min(pos);
    Ok(Resumed {
        file,
        hasher,
        offset: pos,
        durable,
        expected,
        expected_size,
    })
}

fn start_fresh(
    dir: &Path,
    mut file: File,
    reference: &str,
    expected: Option<&Digest>,
    expected_size: Option<u64>,
    boot: Option<String>,
) -> Result<Resumed> {
    durable::remove_file_if_exists(&dir.join(CHECKPOINT))?;
    truncate_to(&mut file, dir, 0)?;
    write_meta(
        dir,
        &IngestMeta {
            reference: reference.to_owned(),
            expected: expected.map(|d| d.to_string()),
            expected_size,
            started_ms: unix_millis(SystemTime::now()),
            boot_id: boot,
        },
    )?;
    let algorithm = expected
        .map(|d| d.algorithm().clone())
        .unwrap_or(DigestAlgorithm::Sha256);
    Ok(Resumed {
        file,
        hasher: DigestHasher::for_algorithm(&algorithm),
        offset: 0,
        durable: 0,
        expected: expected.cloned(),
        expected_size,
    })
}

fn info_of(dir: &Path) -> Option<IngestInfo> {
    let meta = read_meta(dir)?;
    let expected = meta
        .expected
        .as_deref()
        .and_then(|s| Digest::try_from(s).ok());
    let algorithm = expected
        .as_ref()
        .map(|d| d.algorithm().clone())
        .unwrap_or(DigestAlgorithm::Sha256);
    let data = fs::metadata(dir.join(DATA)).ok();
    let offset = data.as_ref().map_or(0, |m| m.len());
    let updated_at = data
        .and_then(|m| m.modified().ok())
        .unwrap_or_else(|| from_unix_millis(meta.started_ms));
    let durable_offset = read_checkpoint(dir, &algorithm).map_or(0, |c| c.0.min(offset));
    Some(IngestInfo {
        reference: meta.reference,
        offset,
        durable_offset,
        expected,
        expected_size: meta.expected_size,
        started_at: from_unix_millis(meta.started_ms),
        updated_at,
    })
}

pub(super) fn info(content: &ContentStore, reference: &str) -> Result<IngestInfo> {
    check_reference(reference)?;
    let dir = content.ingest_dir().join(dir_name(reference));
    info_of(&dir)
        .filter(|i| i.reference == reference)
        .ok_or_else(|| StoreError::IngestNotFound {
            reference: reference.to_owned(),
        })
}

pub(super) fn list(content: &ContentStore) -> Result<Vec<IngestInfo>> {
    let root = content.ingest_dir();
    let mut out = Vec::new();
    for entry in fs::read_dir(root).ctx("list", root)? {
        let entry = entry.ctx("list", root)?;
        if let Some(info) = info_of(&entry.path()) {
            out.push(info);
        }
    }
    out.sort_by(|a, b| a.reference.cmp(&b.reference));
    Ok(out)
}

/// Locks an existing ingest directory without creating it; `None` when another writer holds it.
fn lock_existing(dir: &Path, reference: &str) -> Result<Option<FileLock>> {
    FileLock::acquire_unlinkable(&dir.join(LOCK), Wait::Try, || {
        if dir.is_dir() {
            Ok(())
        } else {
            Err(StoreError::IngestNotFound {
                reference: reference.to_owned(),
            })
        }
    })
}

pub(super) fn abort(content: &ContentStore, reference: &str) -> Result<()> {
    check_reference(reference)?;
    let dir = content.ingest_dir().join(dir_name(reference));
    let lock = lock_existing(&dir, reference)?.ok_or_else(|| StoreError::Locked {
        reference: reference.to_owned(),
    })?;
    remove_ingest(&dir, &lock)
}

/// An ingest removed by [`sweep_ingests`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct IngestSweep {
    /// Its reference, when its record was readable.
    pub(crate) reference: Option<String>,
    /// Bytes of data it held.
    pub(crate) bytes: u64,
}

/// Removes ingests untouched for `max_age` that no writer holds and no lease names.
pub(crate) fn sweep_ingests(
    content: &ContentStore,
    max_age: Duration,
    leased: &std::collections::HashSet<String>,
    now: SystemTime,
    dry_run: bool,
) -> Result<Vec<IngestSweep>> {
    let root = content.ingest_dir();
    let mut removed = Vec::new();
    for entry in fs::read_dir(root).ctx("list", root)? {
        let entry = entry.ctx("list", root)?;
        let dir = entry.path();
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            // A small blob's temporary file, left by a crash before its rename.
            let stale = entry
                .file_name()
                .to_str()
                .is_some_and(|n| n.starts_with(super::PUT_TEMP_PREFIX))
                && entry.metadata().is_ok_and(|m| {
                    m.modified()
                        .is_ok_and(|t| now.duration_since(t).unwrap_or(Duration::ZERO) >= max_age)
                });
            if stale && !dry_run {
                durable::remove_file_if_exists(&dir)?;
            }
            continue;
        }
        let meta = read_meta(&dir);
        let reference = meta.as_ref().map(|m| m.reference.clone());
        if reference.as_ref().is_some_and(|r| leased.contains(r)) {
            continue;
        }
        let newest = newest_mtime(&dir);
        if now.duration_since(newest).unwrap_or(Duration::ZERO) < max_age {
            continue;
        }
        let label = reference
            .clone()
            .unwrap_or_else(|| dir.display().to_string());
        let Some(lock) = (match lock_existing(&dir, &label) {
            Ok(l) => l,
            Err(StoreError::IngestNotFound { .. }) => continue,
            Err(e) => return Err(e),
        }) else {
            continue; // a writer holds it
        };
        let bytes = fs::metadata(dir.join(DATA)).map_or(0, |m| m.len());
        if !dry_run {
            remove_ingest(&dir, &lock)?;
        }
        removed.push(IngestSweep { reference, bytes });
    }
    Ok(removed)
}

/// The latest modification time of a directory and its entries.
fn newest_mtime(dir: &Path) -> SystemTime {
    let mut newest = fs::metadata(dir)
        .and_then(|m| m.modified())
        .unwrap_or(SystemTime::UNIX_EPOCH);
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_name() == LOCK {
                continue; // touched by every lock attempt, including gc's own
            }
            if let Ok(t) = e.metadata().and_then(|m| m.modified()) {
                newest = newest.max(t);
            }
        }
    }
    newest
}

#[cfg(test)]
mod tests {
    use super::super::tests::temp_content;
    use super::*;
    use crate::digests::sha256_of;

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    fn ingest_dir(cs: &ContentStore, r: &str) -> PathBuf {
        cs.ingest_dir().join(dir_name(r))
    }

    #[test]
    fn commit_publishes_the_blob_and_removes_the_ingest() {
        let (_d, cs) = temp_content();
        let data = pattern(700_000, 1);
        let digest = sha256_of(&data);
        let mut w = cs
            .writer("pull-layer", Some(&digest), Some(data.len() as u64))
            .unwrap();
        w.write_all(&data).unwrap();
        let info = w.commit(Some(data.len() as u64), Some(&digest)).unwrap();
        assert_eq!(info.digest, digest);
        assert_eq!(info.size, data.len() as u64);
        assert!(cs.contains(&digest).unwrap());
        assert!(!ingest_dir(&cs, "pull-layer").exists());
        assert!(cs.ingests().unwrap().is_empty());
    }

    #[test]
    fn blob_is_invisible_until_commit() {
        let (_d, cs) = temp_content();
        let data = pattern(10_000, 2);
        let digest = sha256_of(&data);
        let mut w = cs.writer("r", Some(&digest), None).unwrap();
        w.write_all(&data).unwrap();
        w.checkpoint().unwrap();
        assert!(!cs.contains(&digest).unwrap());
        w.commit(None, None).unwrap();
        assert!(cs.contains(&digest).unwrap());
    }

    #[test]
    fn dropped_writer_is_resumed_at_its_offset() {
        let (_d, cs) = temp_content();
        let data = pattern(300_000, 3);
        let digest = sha256_of(&data);
        {
            let mut w = cs.writer("r", Some(&digest), None).unwrap();
            w.write_all(&data[..123_456]).unwrap();
        }
        let info = cs.ingest_info("r").unwrap();
        assert_eq!(info.offset, 123_456);
        assert_eq!(info.expected, Some(digest.clone()));
        let mut w = cs.writer("r", None, None).unwrap();
        assert_eq!(w.offset(), 123_456);
        assert_eq!(w.expected(), Some(&digest), "expected digest remembered");
        w.write_all(&data[123_456..]).unwrap();
        assert_eq!(w.commit(None, None).unwrap().digest, digest);
    }

    #[test]
    fn torn_tail_after_a_reboot_is_cut_back_to_the_checkpoint() {
        let (_d, cs) = temp_content();
        let data = pattern(200_000, 4);
        let digest = sha256_of(&data);
        {
            let mut w = cs.writer("r", Some(&digest), None).unwrap();
            w.write_all(&data[..50_000]).unwrap();
            w.checkpoint().unwrap();
            w.write_all(&data[50_000..80_000]).unwrap();
        }
        let dir = ingest_dir(&cs, "r");
        // Simulate power loss: unsynced blocks came back as garbage, and the boot changed.
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(dir.join(DATA))
            .unwrap();
        f.write_all(&[0u8; 4096]).unwrap();
        let mut meta = read_meta(&dir).unwrap();
        meta.boot_id = Some("a-previous-boot".into());
        write_meta(&dir, &meta).unwrap();

        let mut w = cs.writer("r", Some(&digest), None).unwrap();
        assert_eq!(w.offset(), 50_000);
        assert_eq!(w.durable_offset(), 50_000);
        w.write_all(&data[50_000..]).unwrap();
        assert_eq!(w.commit(None, Some(&digest)).unwrap().digest, digest);
    }

    #[test]
    fn durable_prefix_altered_on_disk_makes_the_ingest_start_over() {
        let (_d, cs) = temp_content();
        let data = pattern(100_000, 5);
        let digest = sha256_of(&data);
        {
            let mut w = cs.writer("r", Some(&digest), None).unwrap();
            w.write_all(&data[..60_000]).unwrap();
            w.checkpoint().unwrap();
        }
        let path = ingest_dir(&cs, "r").join(DATA);
        let f = fs::OpenOptions::new().write(true).open(&path).unwrap();
        std::os::unix::fs::FileExt::write_at(&f, b"\xff\xfe", 1000).unwrap();
        let mut w = cs.writer("r", Some(&digest), None).unwrap();
        assert_eq!(w.offset(), 0);
        w.write_all(&data).unwrap();
        w.commit(None, None).unwrap();
    }

    #[test]
    fn second_writer_is_refused_with_locked_while_the_first_holds_the_ingest() {
        let (_d, cs) = temp_content();
        let first = cs.writer("r", None, None).unwrap();
        let err = cs.try_writer("r", None, None).unwrap_err();
        assert!(matches!(err, StoreError::Locked { .. }));
        assert!(err.is_retryable());
        assert!(matches!(cs.abort("r"), Err(StoreError::Locked { .. })));
        drop(first);
        assert!(cs.try_writer("r", None, None).is_ok());
    }

    #[test]
    fn blocked_writer_sees_the_blob_committed_by_the_holder() {
        let (_d, cs) = temp_content();
        let data = pattern(50_000, 6);
        let digest = sha256_of(&data);
        let mut first = cs.writer("r", Some(&digest), None).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let cs2 = cs.clone();
        let d2 = digest.clone();
        let waiter = std::thread::spawn(move || {
            tx.send(()).unwrap();
            cs2.writer("r", Some(&d2), None).map(|_| ())
        });
        rx.recv().unwrap();
        first.write_all(&data).unwrap();
        first.commit(None, None).unwrap();
        let err = waiter.join().unwrap().unwrap_err();
        assert!(err.is_already_exists(), "{err}");
        assert!(!ingest_dir(&cs, "r").exists());
    }

    #[test]
    fn writer_for_a_present_blob_fails_with_already_exists() {
        let (_d, cs) = temp_content();
        let info = cs.put_bytes(b"present", None).unwrap();
        let err = cs.writer("other", Some(&info.digest), None).unwrap_err();
        assert!(err.is_already_exists());
    }

    #[test]
    fn committing_content_that_another_ingest_already_committed_succeeds() {
        let (_d, cs) = temp_content();
        let data = pattern(5_000, 7);
        let mut a = cs.writer("a", None, None).unwrap();
        let mut b = cs.writer("b", None, None).unwrap();
        a.write_all(&data).unwrap();
        b.write_all(&data).unwrap();
        let da = a.commit(None, None).unwrap().digest;
        let db = b.commit(None, None).unwrap().digest;
        assert_eq!(da, db);
        assert!(cs.ingests().unwrap().is_empty());
    }

    #[test]
    fn digest_mismatch_at_commit_discards_the_bytes() {
        let (_d, cs) = temp_content();
        let data = pattern(5_000, 8);
        let wrong = sha256_of(b"something else");
        let mut w = cs.writer("r", None, None).unwrap();
        w.write_all(&data).unwrap();
        let err = w.commit(None, Some(&wrong)).unwrap_err();
        assert!(matches!(err, StoreError::DigestMismatch { .. }));
        assert!(!cs.contains(&wrong).unwrap());
        assert_eq!(cs.ingest_info("r").unwrap().offset, 0);
    }

    #[test]
    fn short_commit_keeps_the_bytes_for_resuming() {
        let (_d, cs) = temp_content();
        let data = pattern(5_000, 9);
        let mut w = cs.writer("r", None, Some(5_000)).unwrap();
        w.write_all(&data[..4_000]).unwrap();
        let err = w.commit(None, None).unwrap_err();
        assert!(matches!(
            err,
            StoreError::SizeMismatch {
                expected: 5000,
                actual: 4000,
                ..
            }
        ));
        let mut w = cs.writer("r", None, None).unwrap();
        assert_eq!(w.offset(), 4_000);
        w.write_all(&data[4_000..]).unwrap();
        assert_eq!(w.commit(None, None).unwrap().digest, sha256_of(&data));
    }

    #[test]
    fn writes_beyond_the_expected_size_are_refused() {
        let (_d, cs) = temp_content();
        let mut w = cs.writer("r", None, Some(10)).unwrap();
        w.write_all(b"0123456789").unwrap();
        let err = w.write(b"x").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(matches!(
            w.error_from_io(err),
            StoreError::SizeMismatch { expected: 10, .. }
        ));
        assert_eq!(w.offset(), 10);
    }

    #[test]
    fn reopening_with_a_different_expected_digest_starts_over() {
        let (_d, cs) = temp_content();
        {
            let mut w = cs.writer("r", Some(&sha256_of(b"one")), None).unwrap();
            w.write_all(b"on").unwrap();
        }
        let w = cs.writer("r", Some(&sha256_of(b"two")), None).unwrap();
        assert_eq!(w.offset(), 0);
    }

    #[test]
    fn abort_removes_the_ingest_and_info_then_reports_not_found() {
        let (_d, cs) = temp_content();
        {
            let mut w = cs.writer("r", None, None).unwrap();
            w.write_all(b"abc").unwrap();
        }
        assert_eq!(cs.ingests().unwrap().len(), 1);
        cs.abort("r").unwrap();
        assert!(cs.ingest_info("r").unwrap_err().is_not_found());
        assert!(cs.abort("r").unwrap_err().is_not_found());
        let w = cs.writer("r2", None, None).unwrap();
        w.abort().unwrap();
        assert!(cs.ingests().unwrap().is_empty());
    }

    #[test]
    fn automatic_checkpoints_record_the_durable_offset() {
        let (_d, cs) = temp_content();
        let mut w = cs.writer("r", None, None).unwrap();
        w.set_checkpoint_interval(1000);
        w.write_all(&pattern(2_500, 1)).unwrap();
        assert_eq!(w.durable_offset(), 2_500);
        w.write_all(&pattern(500, 1)).unwrap();
        assert_eq!(w.durable_offset(), 2_500);
        drop(w);
        assert_eq!(cs.ingest_info("r").unwrap().durable_offset, 2_500);
    }

    #[test]
    fn reset_starts_the_ingest_over() {
        let (_d, cs) = temp_content();
        let mut w = cs.writer("r", None, None).unwrap();
        w.write_all(b"garbage").unwrap();
        w.checkpoint().unwrap();
        w.reset().unwrap();
        assert_eq!(w.offset(), 0);
        w.write_all(b"good").unwrap();
        assert_eq!(w.commit(None, None).unwrap().digest, sha256_of(b"good"));
    }

    #[test]
    fn sha512_content_is_verified_and_stored_under_its_algorithm() {
        let (_d, cs) = temp_content();
        let mut h = DigestHasher::for_algorithm(&DigestAlgorithm::Sha512);
        h.update(b"five twelve");
        let d = h.finish();
        let mut w = cs.writer("r", Some(&d), None).unwrap();
        w.write_all(b"five twelve").unwrap();
        let info = w.commit(None, None).unwrap();
        assert_eq!(info.digest, d);
        assert!(cs.blobs_dir().join("sha512").join(d.digest()).is_file());
    }

    #[test]
    fn references_that_cannot_name_an_ingest_are_refused() {
        let (_d, cs) = temp_content();
        for bad in ["", "a\nb", &"x".repeat(2000)] {
            assert!(matches!(
                cs.writer(bad, None, None),
                Err(StoreError::InvalidName { .. })
            ));
        }
        assert_ne!(dir_name("a/b"), dir_name("a_b"));
        assert!(!dir_name("../../etc").contains('/'));
        assert!(!dir_name(".hidden").starts_with('.'));
    }

    #[test]
    fn sweep_removes_only_old_unlocked_unleased_ingests() {
        let (_d, cs) = temp_content();
        for r in ["old", "leased", "held"] {
            let mut w = cs.writer(r, None, None).unwrap();
            w.write_all(r.as_bytes()).unwrap();
        }
        let _held = cs.writer("held", None, None).unwrap();
        let leased: std::collections::HashSet<String> = ["leased".to_owned()].into();
        let later = SystemTime::now() + Duration::from_secs(7200);
        let none = sweep_ingests(
            &cs,
            Duration::from_secs(3600),
            &leased,
            SystemTime::now(),
            false,
        )
        .unwrap();
        assert!(none.is_empty(), "nothing is old yet");
        let gone = sweep_ingests(&cs, Duration::from_secs(3600), &leased, later, false).unwrap();
        assert_eq!(
            gone,
            vec![IngestSweep {
                reference: Some("old".into()),
                bytes: 3
            }]
        );
        let left: Vec<_> = cs
            .ingests()
            .unwrap()
            .into_iter()
            .map(|i| i.reference)
            .collect();
        assert_eq!(left, vec!["held", "leased"]);
    }
}
