//! The content store: verified blobs under `blobs/<algorithm>/<hex>`, written through resumable
//! ingests under `ingest/`.
//!
//! A blob becomes visible only once its size and digest have been checked, its bytes fsynced, and
//! it has been renamed into place (with the directory fsynced): a reader never sees a partial or
//! wrong blob. See [`Writer`] for the ingest protocol and its crash behaviour, and [`BlobReader`] and
//! [`ReaderAt`] for reads.

mod ingest;
mod read;

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use oci_spec::image::{Digest, DigestAlgorithm};

pub use ingest::{DEFAULT_CHECKPOINT_INTERVAL, IngestInfo, Writer};
pub use read::{BlobReader, ReaderAt, SectionReader};

pub(crate) use ingest::sweep_ingests;

use crate::digests::{self, DigestHasher};
use crate::durable;
use crate::error::{IoContext, Result, StoreError};
use crate::lock::Wait;
use crate::metadata::{LabelSubject, Labels, Metadata};

/// What the store knows about a committed blob.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlobInfo {
    /// Its digest.
    pub digest: Digest,
    /// Its size in bytes.
    pub size: u64,
    /// When it was committed (the file's modification time).
    pub committed_at: SystemTime,
    /// Its labels.
    pub labels: Labels,
}

/// What is under `blobs/`.
#[derive(Debug, Default)]
pub(crate) struct Scan {
    /// Blob files as (digest, path), ordered by digest.
    pub(crate) blobs: Vec<(Digest, PathBuf)>,
    /// Entries that are not blobs.
    pub(crate) stray: Vec<PathBuf>,
}

/// The algorithms whose blobs the store holds, with their directory names.
pub(crate) const ALGORITHMS: [DigestAlgorithm; 2] =
    [DigestAlgorithm::Sha256, DigestAlgorithm::Sha512];

/// The blobs and ingests of a store. Cheap to clone; all clones share state.
#[derive(Clone, Debug)]
pub struct ContentStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    blobs: PathBuf,
    ingest: PathBuf,
    metadata: Arc<Metadata>,
}

impl ContentStore {
    /// The content store rooted at `root` (which holds `blobs/` and `ingest/`), creating the
    /// directories it needs.
    pub(crate) fn open(root: &Path, metadata: Arc<Metadata>) -> Result<ContentStore> {
        let blobs = root.join("blobs");
        for alg in &ALGORITHMS {
            durable::create_dir_all(&blobs.join(alg.as_ref()))?;
        }
        let ingest = root.join("ingest");
        durable::create_dir_all(&ingest)?;
        Ok(ContentStore {
            inner: Arc::new(Inner {
                blobs,
                ingest,
                metadata,
            }),
        })
    }

    pub(crate) fn blobs_dir(&self) -> &Path {
        &self.inner.blobs
    }

    pub(crate) fn ingest_dir(&self) -> &Path {
        &self.inner.ingest
    }

    pub(crate) fn metadata(&self) -> &Metadata {
        &self.inner.metadata
    }

    /// Where a blob lives (whether or not it exists). Refuses unsupported algorithms.
    pub(crate) fn blob_path(&self, digest: &Digest) -> Result<PathBuf> {
        digests::check_algorithm(digest)?;
        Ok(self
            .inner
            .blobs
            .join(digest.algorithm().as_ref())
            .join(digest.digest()))
    }

    /// Whether a blob is committed.
    pub fn contains(&self, digest: &Digest) -> Result<bool> {
        let path = self.blob_path(digest)?;
        match fs::symlink_metadata(&path) {
            Ok(m) => Ok(m.is_file()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e).ctx("stat blob", &path),
        }
    }

    /// Size and commit time of a blob, without labels.
    pub(crate) fn stat(&self, digest: &Digest) -> Result<(u64, SystemTime)> {
        let path = self.blob_path(digest)?;
        match fs::metadata(&path) {
            Ok(m) if m.is_file() => Ok((m.len(), m.modified().unwrap_or(SystemTime::UNIX_EPOCH))),
            Ok(_) => Err(StoreError::BlobNotFound {
                digest: digest.clone(),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(StoreError::BlobNotFound {
                digest: digest.clone(),
            }),
            Err(e) => Err(e).ctx("stat blob", &path),
        }
    }

    /// Information on a committed blob.
    pub fn info(&self, digest: &Digest) -> Result<BlobInfo> {
        let (size, committed_at) = self.stat(digest)?;
        let labels = self
            .metadata()
            .labels(&LabelSubject::Blob(digest.clone()))?;
        Ok(BlobInfo {
            digest: digest.clone(),
            size,
            committed_at,
            labels,
        })
    }

    /// Replaces a blob's labels; returns its updated information.
    pub fn update(&self, digest: &Digest, labels: &Labels) -> Result<BlobInfo> {
        // Fail on a missing blob before touching the database.
        self.stat(digest)?;
        self.metadata()
            .set_labels(&LabelSubject::Blob(digest.clone()), labels)?;
        self.info(digest)
    }

    /// Every committed blob with its labels, ordered by digest. Files under `blobs/` whose names
    /// are not digests are skipped here (fsck reports them).
    pub fn list(&self) -> Result<Vec<BlobInfo>> {
        let mut labels = self.metadata().all_blob_labels()?;
        let mut out = Vec::new();
        for (digest, path) in self.blob_files()? {
            let Ok(meta) = fs::metadata(&path) else {
                continue; // removed meanwhile
            };
            let key = digest.to_string();
            out.push(BlobInfo {
                size: meta.len(),
                committed_at: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                labels: labels.remove(&key).unwrap_or_default(),
                digest,
            });
        }
        Ok(out)
    }

    /// Every blob file as (digest, path), ordered by digest; stray names are skipped.
    pub(crate) fn blob_files(&self) -> Result<Vec<(Digest, PathBuf)>> {
        Ok(self.scan()?.blobs)
    }

    /// Blob files and stray entries (paths under `blobs/` that are not blobs).
    pub(crate) fn scan(&self) -> Result<Scan> {
        let mut good = Vec::new();
        let mut stray = Vec::new();
        let top = &self.inner.blobs;
        for entry in fs::read_dir(top).ctx("list", top)? {
            let entry = entry.ctx("list", top)?;
            let alg_name = entry.file_name().to_string_lossy().into_owned();
            let alg = DigestAlgorithm::from(alg_name.as_str());
            let path = entry.path();
            if !ALGORITHMS.contains(&alg) || !entry.file_type().ctx("stat", &path)?.is_dir() {
                stray.push(path);
                continue;
            }
            for blob in fs::read_dir(&path).ctx("list", &path)? {
                let blob = blob.ctx("list", &path)?;
                let name = blob.file_name().to_string_lossy().into_owned();
                let bpath = blob.path();
                let is_file = blob.file_type().map(|t| t.is_file()).unwrap_or(false);
                match digests::from_hex(&alg, &name) {
                    Ok(d) if is_file => good.push((d, bpath)),
                    _ => stray.push(bpath),
                }
            }
        }
        good.sort_by(|a, b| a.0.as_ref().cmp(b.0.as_ref()));
        stray.sort();
        Ok(Scan { blobs: good, stray })
    }

    /// Deletes a committed blob and its labels. Prefer [`crate::Store::gc`], which knows what is
    /// still referenced.
    pub fn delete(&self, digest: &Digest) -> Result<()> {
        let path = self.blob_path(digest)?;
        if !durable::remove_file_if_exists(&path)? {
            return Err(StoreError::BlobNotFound {
                digest: digest.clone(),
            });
        }
        if let Some(dir) = path.parent() {
            durable::fsync_dir(dir)?;
        }
        self.metadata()
            .remove_labels(&LabelSubject::Blob(digest.clone()))
    }

    /// A streaming reader that checks the blob's digest as it reaches the end.
    pub fn reader(&self, digest: &Digest) -> Result<BlobReader> {
        BlobReader::open(&self.blob_path(digest)?, digest)
    }

    /// A random-access reader (`read_at`) over a blob.
    pub fn reader_at(&self, digest: &Digest) -> Result<ReaderAt> {
        ReaderAt::open(&self.blob_path(digest)?, digest)
    }

    /// Reads a small blob (a manifest or config) whole, verified, refusing blobs above `limit`
    /// bytes so that nothing large is ever held in memory.
    pub fn read_verified(&self, digest: &Digest, limit: u64) -> Result<Vec<u8>> {
        let (size, _) = self.stat(digest)?;
        if size > limit {
            return Err(StoreError::TooLarge {
                digest: digest.clone(),
                size,
                limit,
            });
        }
        let path = self.blob_path(digest)?;
        let mut buf = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        let mut file = fs::File::open(&path).map_err(|e| not_found_or(e, digest, &path))?;
        file.by_ref()
            .take(limit + 1)
            .read_to_end(&mut buf)
            .ctx("read blob", &path)?;
        let mut hasher = DigestHasher::for_digest(digest)?;
        hasher.update(&buf);
        let actual = hasher.finish();
        if &actual != digest {
            return Err(StoreError::DigestMismatch {
                expected: digest.clone(),
                actual,
            });
        }
        Ok(buf)
    }

    /// Opens a writer for ingest `reference`, waiting while another writer (in any process) holds
    /// it. Fails with [`StoreError::AlreadyExists`] when `expected` is already committed, before or
    /// after the wait. See [`Writer`].
    pub fn writer(
        &self,
        reference: &str,
        expected: Option<&Digest>,
        expected_size: Option<u64>,
    ) -> Result<Writer> {
        Writer::open(
            self.clone(),
            reference,
            expected,
            expected_size,
            Wait::Block,
        )
    }

    /// Like [`ContentStore::writer`], but fails at once with [`StoreError::Locked`] when another
    /// writer holds the ingest.
    pub fn try_writer(
        &self,
        reference: &str,
        expected: Option<&Digest>,
        expected_size: Option<u64>,
    ) -> Result<Writer> {
        Writer::open(self.clone(), reference, expected, expected_size, Wait::Try)
    }

    /// Writes a small in-memory blob (a manifest or config) and commits it; a no-op when present.
    pub fn put_bytes(&self, bytes: &[u8], expected: Option<&Digest>) -> Result<BlobInfo> {
        let digest = match expected {
            Some(d) => d.clone(),
            None => digests::sha256_of(bytes),
        };
        let target = self.blob_path(&digest)?;
        if self.contains(&digest)? {
            return self.info(&digest);
        }
        // The bytes are all here: verify them first, then write them once (no resumable ingest,
        // no lock, no checkpoint: there is nothing to resume).
        let mut hasher = DigestHasher::for_algorithm(digest.algorithm());
        hasher.update(bytes);
        let actual = hasher.finish();
        if actual != digest {
            return Err(StoreError::DigestMismatch {
                expected: digest,
                actual,
            });
        }
        let tmp = self.inner.ingest.join(put_temp_name());
        let written = (|| {
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(durable::FILE_MODE)
                .open(&tmp)
                .ctx("create", &tmp)?;
            io::Write::write_all(&mut f, bytes).ctx("write", &tmp)?;
            f.sync_all().ctx("fsync", &tmp)?;
            fs::rename(&tmp, &target).ctx("rename into place", &target)
        })();
        if written.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        written?;
        if let Some(parent) = target.parent() {
            durable::fsync_dir(parent)?;
        }
        self.info(&digest)
    }

    /// The state of an ingest.
    pub fn ingest_info(&self, reference: &str) -> Result<IngestInfo> {
        ingest::info(self, reference)
    }

    /// Every ingest present, ordered by reference.
    pub fn ingests(&self) -> Result<Vec<IngestInfo>> {
        ingest::list(self)
    }

    /// Removes an ingest and its partial data. Fails with [`StoreError::Locked`] while a writer
    /// holds it, and [`StoreError::IngestNotFound`] when there is none.
    pub fn abort(&self, reference: &str) -> Result<()> {
        ingest::abort(self, reference)
    }
}

/// Prefix of the temporary files [`ContentStore::put_bytes`] writes in `ingest/` (left behind
/// only by a crash between creation and rename; the ingest sweep removes old ones).
pub(crate) const PUT_TEMP_PREFIX: &str = ".put-";

/// A temporary file name no other writer (thread or process) will pick.
fn put_temp_name() -> String {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{PUT_TEMP_PREFIX}{}-{n}", std::process::id())
}

fn not_found_or(e: io::Error, digest: &Digest, path: &Path) -> StoreError {
    if e.kind() == io::ErrorKind::NotFound {
        StoreError::BlobNotFound {
            digest: digest.clone(),
        }
    } else {
        StoreError::io("open blob", path, e)
    }
}

/// Builds a label set from `(key, value)` pairs.
pub fn labels<I, K, V>(pairs: I) -> Labels
where
    I: IntoIterator<Item = (K, V)>,
    K: Into<String>,
    V: Into<String>,
{
    pairs
        .into_iter()
        .map(|(k, v)| (k.into(), v.into()))
        .collect::<BTreeMap<_, _>>()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Write;

    pub(crate) fn temp_content() -> (tempfile::TempDir, ContentStore) {
        let dir = tempfile::tempdir().unwrap();
        let md = Arc::new(Metadata::open(&dir.path().join("metadata.db")).unwrap());
        let cs = ContentStore::open(dir.path(), md).unwrap();
        (dir, cs)
    }

    #[test]
    fn committed_blob_is_listed_read_back_and_deleted() {
        let (_d, cs) = temp_content();
        let info = cs.put_bytes(b"hello", None).unwrap();
        assert_eq!(info.size, 5);
        assert!(cs.contains(&info.digest).unwrap());
        assert_eq!(cs.read_verified(&info.digest, 100).unwrap(), b"hello");
        let listed: Vec<_> = cs.list().unwrap().into_iter().map(|b| b.digest).collect();
        assert_eq!(listed, vec![info.digest.clone()]);
        cs.delete(&info.digest).unwrap();
        assert!(!cs.contains(&info.digest).unwrap());
        assert!(cs.delete(&info.digest).unwrap_err().is_not_found());
    }

    #[test]
    fn put_bytes_with_a_wrong_expected_digest_fails_and_stores_nothing() {
        let (_d, cs) = temp_content();
        let wrong = digests::sha256_of(b"other");
        let err = cs.put_bytes(b"hello", Some(&wrong)).unwrap_err();
        assert!(matches!(err, StoreError::DigestMismatch { .. }), "{err}");
        assert!(!cs.contains(&wrong).unwrap());
        assert!(cs.list().unwrap().is_empty());
    }

    #[test]
    fn update_replaces_labels_and_info_reports_them() {
        let (_d, cs) = temp_content();
        let info = cs.put_bytes(b"x", None).unwrap();
        let l = labels([("org.example/source", "test")]);
        assert_eq!(cs.update(&info.digest, &l).unwrap().labels, l);
        assert_eq!(cs.info(&info.digest).unwrap().labels, l);
        assert_eq!(cs.list().unwrap()[0].labels, l);
        let missing = digests::sha256_of(b"missing");
        assert!(cs.update(&missing, &l).unwrap_err().is_not_found());
    }

    #[test]
    fn read_verified_refuses_blobs_over_the_limit() {
        let (_d, cs) = temp_content();
        let info = cs.put_bytes(&[7u8; 100], None).unwrap();
        assert!(matches!(
            cs.read_verified(&info.digest, 99),
            Err(StoreError::TooLarge { size: 100, .. })
        ));
    }

    #[test]
    fn read_verified_detects_a_blob_altered_on_disk() {
        let (_d, cs) = temp_content();
        let info = cs.put_bytes(b"original", None).unwrap();
        let path = cs.blob_path(&info.digest).unwrap();
        fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .write_all(b"X")
            .unwrap();
        assert!(matches!(
            cs.read_verified(&info.digest, 100),
            Err(StoreError::DigestMismatch { .. })
        ));
    }

    #[test]
    fn stray_files_under_blobs_are_not_listed_as_blobs() {
        let (_d, cs) = temp_content();
        fs::write(cs.blobs_dir().join("sha256").join("not-a-digest"), b"x").unwrap();
        fs::create_dir_all(cs.blobs_dir().join("md5")).unwrap();
        let scan = cs.scan().unwrap();
        assert!(scan.blobs.is_empty());
        assert_eq!(scan.stray.len(), 2);
        assert!(cs.list().unwrap().is_empty());
    }

    #[test]
    fn unsupported_algorithm_is_refused_everywhere() {
        let (_d, cs) = temp_content();
        let d = Digest::try_from(format!("sha384:{}", "0".repeat(96))).unwrap();
        assert!(matches!(
            cs.contains(&d),
            Err(StoreError::UnsupportedAlgorithm { .. })
        ));
        assert!(matches!(
            cs.writer("x", Some(&d), None),
            Err(StoreError::UnsupportedAlgorithm { .. })
        ));
    }
}
