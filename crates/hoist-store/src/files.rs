//! Finding file contents already in the layer store, by digest and size.
//!
//! A partial pull needs the bytes of some files whose sha256 and size the layer's table of
//! contents gives. [`LocalFiles`] answers from the `file_contents` index of the metadata database
//! ([`crate::metadata::FileContent`]), which is filled two ways:
//! * for free, from the table of contents of a chunked layer when it is pulled
//!   ([`LocalFiles::record_layer_files`]);
//! * lazily, by [`LocalFiles::index_sizes`]: the regular files of every unpacked layer are
//!   `stat`ed, and only those whose size some wanted file has (and that are not already indexed
//!   with the same modification time) are hashed.
//!
//! Index rows are hints. [`LocalFiles::open`] opens a candidate without following symbolic links
//! (in the path or at its end), checks its size, and hands out a [`VerifiedFile`] that hashes
//! what it reads and fails at the end unless the content has the expected digest. A file changed
//! on disk since it was indexed is therefore never passed off as the wanted content: its row is
//! dropped and the next candidate tried, and a reader that had started fails with
//! [`io::ErrorKind::InvalidData`].

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

use oci_spec::image::Digest;

use crate::digests::DigestHasher;
use crate::error::Result;
use crate::layer::LayerStore;
use crate::metadata::FileContent;
use crate::store::Store;

/// What [`LocalFiles::index_sizes`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IndexReport {
    /// Layers walked.
    pub layers: usize,
    /// Regular files seen (stat only).
    pub files_seen: u64,
    /// Files hashed (their size was wanted and they were not indexed yet, or had changed).
    pub files_hashed: u64,
    /// Bytes hashed.
    pub bytes_hashed: u64,
}

/// The file-content lookup over a store's unpacked layers. Blocking, like the rest of the store.
#[derive(Clone, Debug)]
pub struct LocalFiles {
    store: Store,
    layers: LayerStore,
}

/// Nanoseconds since the epoch of a file's modification time.
fn mtime_ns(meta: &fs::Metadata) -> i64 {
    meta.mtime()
        .saturating_mul(1_000_000_000)
        .saturating_add(meta.mtime_nsec())
}

/// Is `rel` a plain relative path (no `..`, no root, not empty)?
fn plain_relative(rel: &str) -> bool {
    !rel.is_empty()
        && Path::new(rel)
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
}

/// Opens `root/rel` for reading without following a symbolic link anywhere below `root`.
fn open_beneath(root: &Path, rel: &str) -> io::Result<File> {
    if !plain_relative(rel) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{rel:?} is not a relative path inside a layer"),
        ));
    }
    let mut path = root.to_path_buf();
    let parts: Vec<_> = Path::new(rel).components().collect();
    for (i, c) in parts.iter().enumerate() {
        path.push(c.as_os_str());
        if i + 1 < parts.len() {
            let meta = fs::symlink_metadata(&path)?;
            if !meta.file_type().is_dir() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{} is not a directory", path.display()),
                ));
            }
        }
    }
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)?;
    if !file.metadata()?.file_type().is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a regular file", path.display()),
        ));
    }
    Ok(file)
}

impl LocalFiles {
    /// The lookup over `store`'s layer store.
    pub fn new(store: &Store) -> Result<LocalFiles> {
        Ok(LocalFiles {
            store: store.clone(),
            layers: store.layers()?,
        })
    }

    /// Records the regular files of layer `chain_id` as a table of contents lists them:
    /// `(path, size, sha256)`. Paths may carry a leading `/` or `./`; other paths that are not
    /// plain relative paths are skipped.
    pub fn record_layer_files(
        &self,
        chain_id: &Digest,
        files: impl IntoIterator<Item = (String, u64, Digest)>,
    ) -> Result<usize> {
        let rows: Vec<FileContent> = files
            .into_iter()
            .filter_map(|(path, size, digest)| {
                let p = path.trim_start_matches("./").trim_start_matches('/');
                plain_relative(p).then(|| FileContent {
                    chain_id: chain_id.clone(),
                    path: p.to_owned(),
                    size,
                    digest,
                    mtime_ns: None,
                })
            })
            .collect();
        self.store.metadata().record_file_contents(&rows)?;
        Ok(rows.len())
    }

    /// Indexes the regular files of every unpacked layer whose size is in `sizes` (stat for all,
    /// hash only those not indexed yet or modified since).
    pub fn index_sizes(&self, sizes: &BTreeSet<u64>) -> Result<IndexReport> {
        let mut report = IndexReport::default();
        if sizes.is_empty() {
            return Ok(report);
        }
        for chain_id in self.layers.chain_ids()? {
            let root = self.layers.diff_dir(&chain_id)?;
            if !root.is_dir() {
                continue;
            }
            report.layers += 1;
            let mut rows = Vec::new();
            self.walk(&chain_id, &root, &root, sizes, &mut rows, &mut report)?;
            if !rows.is_empty() {
                self.store.metadata().record_file_contents(&rows)?;
            }
        }
        tracing::debug!(?report, "indexed layer files by size");
        Ok(report)
    }

    fn walk(
        &self,
        chain_id: &Digest,
        root: &Path,
        dir: &Path,
        sizes: &BTreeSet<u64>,
        rows: &mut Vec<FileContent>,
        report: &mut IndexReport,
    ) -> Result<()> {
        let entries = match fs::read_dir(dir) {
            Ok(e) => e,
            // A layer removed while walking, or an unreadable directory: nothing to index there.
            Err(e) => {
                tracing::debug!(dir = %dir.display(), error = %e, "skipping a layer directory");
                return Ok(());
            }
        };
        for entry in entries {
            let Ok(entry) = entry else { continue };
            let Ok(ft) = entry.file_type() else { continue };
            let path = entry.path();
            if ft.is_dir() {
                self.walk(chain_id, root, &path, sizes, rows, report)?;
                continue;
            }
            if !ft.is_file() {
                continue;
            }
            report.files_seen += 1;
            let Ok(meta) = entry.metadata() else { continue };
            if !sizes.contains(&meta.len()) {
                continue;
            }
            let Some(rel) = path
                .strip_prefix(root)
                .ok()
                .and_then(|p| p.to_str())
                .map(str::to_owned)
            else {
                continue;
            };
            let mtime = mtime_ns(&meta);
            if let Some(recorded) = self.store.metadata().file_content_mtime(chain_id, &rel)?
                && recorded.is_none_or(|m| m == mtime)
            {
                continue;
            }
            let Ok(file) = open_beneath(root, &rel) else {
                continue;
            };
            match hash_file(file) {
                Ok((digest, size)) => {
                    report.files_hashed += 1;
                    report.bytes_hashed += size;
                    rows.push(FileContent {
                        chain_id: chain_id.clone(),
                        path: rel,
                        size,
                        digest,
                        mtime_ns: Some(mtime),
                    });
                }
                Err(e) => {
                    tracing::debug!(path = %path.display(), error = %e, "could not hash a layer file");
                }
            }
        }
        Ok(())
    }

    /// Opens a local file whose content should be `digest` (sha256) of `size` bytes: the first
    /// indexed candidate that still exists with that size. The reader verifies the content as it
    /// is read. `None` when no candidate is left.
    pub fn open(&self, digest: &Digest, size: u64) -> Result<Option<VerifiedFile>> {
        for c in self.store.metadata().files_with_content(digest, size)? {
            let root = self.layers.diff_dir(&c.chain_id)?;
            let opened = open_beneath(&root, &c.path).and_then(|f| {
                let meta = f.metadata()?;
                Ok((f, meta))
            });
            match opened {
                Ok((file, meta)) if meta.len() == size => {
                    return Ok(Some(VerifiedFile {
                        path: root.join(&c.path),
                        file,
                        chain_id: c.chain_id,
                        rel: c.path,
                        hasher: DigestHasher::for_digest(digest)?,
                        expected: digest.clone(),
                        size,
                        read: 0,
                        verified: false,
                    }));
                }
                _ => {
                    // Gone or changed: forget it.
                    self.store
                        .metadata()
                        .remove_file_content(&c.chain_id, &c.path)?;
                }
            }
        }
        Ok(None)
    }

    /// Forgets the index row a [`VerifiedFile`] came from (a read found other bytes).
    pub fn forget(&self, file: &VerifiedFile) -> Result<()> {
        self.store
            .metadata()
            .remove_file_content(&file.chain_id, &file.rel)
    }
}

fn hash_file(mut file: File) -> io::Result<(Digest, u64)> {
    let mut hasher = DigestHasher::sha256();
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    Ok((hasher.finish(), total))
}

/// A local file read as the content it is expected to hold: it hashes what it yields, and its
/// last read fails with [`io::ErrorKind::InvalidData`] instead of reporting the end when the size
/// or digest differ.
#[derive(Debug)]
pub struct VerifiedFile {
    file: File,
    path: PathBuf,
    chain_id: Digest,
    rel: String,
    hasher: DigestHasher,
    expected: Digest,
    size: u64,
    read: u64,
    verified: bool,
}

impl VerifiedFile {
    /// The file on disk.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The content digest it must have.
    pub fn expected(&self) -> &Digest {
        &self.expected
    }

    /// Its expected size.
    pub fn size(&self) -> u64 {
        self.size
    }
}

impl Read for VerifiedFile {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.verified {
            return Ok(0);
        }
        // Never hand out more than the expected size.
        let left = self.size - self.read;
        let want = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
        let n = if want == 0 {
            // Probe for bytes beyond the expected size.
            let mut probe = [0u8; 1];
            self.file.read(&mut probe)?
        } else {
            self.file.read(&mut buf[..want])?
        };
        if want == 0 || n == 0 {
            let mismatch = |what: String| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{} changed on disk: {what}", self.path.display()),
                )
            };
            if n > 0 || self.read != self.size {
                return Err(mismatch(format!(
                    "it no longer holds the {} bytes indexed",
                    self.size
                )));
            }
            let actual = self.hasher.current();
            if actual != self.expected {
                return Err(mismatch(format!(
                    "its content is {actual}, not {}",
                    self.expected
                )));
            }
            self.verified = true;
            return Ok(0);
        }
        self.hasher.update(&buf[..n]);
        self.read += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::StageOptions;

    fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_entry_type(tar::EntryType::Regular);
            h.set_cksum();
            b.append_data(&mut h, name, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn store_with_layer(files: &[(&str, &[u8])]) -> (tempfile::TempDir, Store, Digest) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let layers = store.layers().unwrap();
        let staged = layers
            .stage(&tar_of(files)[..], &StageOptions::default())
            .unwrap();
        let layer = layers.commit(None, staged).unwrap();
        (dir, store, layer.chain_id)
    }

    fn read_all(mut r: impl Read) -> io::Result<Vec<u8>> {
        let mut v = Vec::new();
        r.read_to_end(&mut v)?;
        Ok(v)
    }

    #[test]
    fn files_of_wanted_sizes_are_hashed_and_found_by_digest() {
        let (_d, store, _chain) =
            store_with_layer(&[("etc/a", b"hello"), ("etc/b", b"other content")]);
        let files = LocalFiles::new(&store).unwrap();
        let want = crate::digests::sha256_of(b"hello");
        assert!(files.open(&want, 5).unwrap().is_none());
        let report = files.index_sizes(&BTreeSet::from([5])).unwrap();
        assert_eq!(report.files_hashed, 1, "{report:?}");
        assert_eq!(report.files_seen, 2);
        let f = files.open(&want, 5).unwrap().expect("indexed");
        assert_eq!(read_all(f).unwrap(), b"hello");
        // A second scan hashes nothing new.
        assert_eq!(
            files
                .index_sizes(&BTreeSet::from([5]))
                .unwrap()
                .files_hashed,
            0
        );
    }

    #[test]
    fn a_file_changed_on_disk_is_never_read_as_the_indexed_content() {
        let (_d, store, chain) = store_with_layer(&[("a", b"hello")]);
        let files = LocalFiles::new(&store).unwrap();
        files.index_sizes(&BTreeSet::from([5])).unwrap();
        let want = crate::digests::sha256_of(b"hello");
        let path = store.layers().unwrap().diff_dir(&chain).unwrap().join("a");
        let reader = files.open(&want, 5).unwrap().unwrap();
        // Same size, other bytes.
        fs::write(&path, b"jello").unwrap();
        let err = read_all(reader).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        // A different size is caught at open and the row dropped.
        fs::write(&path, b"hello!").unwrap();
        assert!(files.open(&want, 5).unwrap().is_none());
    }

    #[test]
    fn toc_rows_are_recorded_without_hashing_and_verified_on_read() {
        let (_d, store, chain) = store_with_layer(&[("usr/bin/x", b"abc")]);
        let files = LocalFiles::new(&store).unwrap();
        let wrong = crate::digests::sha256_of(b"xyz");
        let n = files
            .record_layer_files(
                &chain,
                [
                    ("./usr/bin/x".to_owned(), 3, wrong.clone()),
                    ("../escape".to_owned(), 3, wrong.clone()),
                ],
            )
            .unwrap();
        assert_eq!(n, 1);
        let reader = files.open(&wrong, 3).unwrap().unwrap();
        assert!(read_all(reader).is_err(), "a wrong TOC row must not pass");
    }

    #[test]
    fn symlinks_are_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("target"), b"x").unwrap();
        std::os::unix::fs::symlink(dir.path().join("target"), dir.path().join("link")).unwrap();
        assert!(open_beneath(dir.path(), "link").is_err());
        assert!(open_beneath(dir.path(), "target").is_ok());
        assert!(open_beneath(dir.path(), "../x").is_err());
    }
}
