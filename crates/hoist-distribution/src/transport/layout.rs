//! OCI image layouts on disk: reading one written by any tool (`oci-layout`, `index.json`,
//! `blobs/<algorithm>/<hex>`), and writing one safely.
//!
//! Writes are crash-safe: a blob goes to a temporary file in the layout root, is verified
//! against its digest and size while it streams, fsynced, and only then renamed into `blobs/`,
//! so `blobs/` never holds a partial or wrong blob. The directories those renames changed are
//! fsynced once, just before `index.json` is replaced (atomically the same way; unknown fields
//! and other tools' entries are kept): a power loss before that may lose a renamed blob, never
//! corrupt one, and no index names a blob whose rename is not durable.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use oci_spec::image::Digest;
use serde_json::{Map, Value};
use tempfile::NamedTempFile;

use super::BlobInfo;
use super::error::{Error, Result};
use super::manifest::{Descriptor, OCI_INDEX};
use super::stream::{
    BlobSink, PARALLEL_FROM, ParallelVerifier, Verifier, hasher_for, verify_bytes,
};

/// The annotation naming an image in `index.json`.
pub const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";

const LAYOUT_FILE: &str = "oci-layout";
const INDEX_FILE: &str = "index.json";
const LAYOUT_VERSION: &str = "1.0.0";

/// Where blob `digest` lives under `root`. Only algorithms hoist verifies are accepted, which
/// also guarantees the path stays inside `blobs/` (their hex is checked by the digest parser).
pub(crate) fn blob_path(root: &Path, digest: &Digest) -> Result<PathBuf> {
    hasher_for(digest)?;
    Ok(root
        .join("blobs")
        .join(digest.algorithm().as_ref())
        .join(digest.digest()))
}

/// fsyncs a directory, so that a rename into it survives a crash.
pub(crate) fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("fsync directory", dir, e))
}

/// Replaces `path` with `bytes` atomically (temporary file, fsync, rename, fsync directory).
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let pending = PendingDirs::default();
    write_atomic_deferred(path, bytes, &pending)?;
    pending.sync()
}

/// Replaces `path` with `bytes` atomically, leaving the fsync of its directory to `pending`.
fn write_atomic_deferred(path: &Path, bytes: &[u8], pending: &PendingDirs) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".hoist-tmp-")
        .tempfile_in(dir)
        .map_err(|e| Error::io("create a temporary file in", dir, e))?;
    tmp.write_all(bytes)
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(|e| Error::io("write", tmp.path().to_owned(), e))?;
    tmp.persist(path)
        .map_err(|e| Error::io("rename into place", path, e.error))?;
    pending.add(dir);
    Ok(())
}

/// Directories holding renames that are not yet durable: fsynced together, once, by
/// [`PendingDirs::sync`] before anything that names the renamed files is written.
#[derive(Debug, Clone, Default)]
pub(crate) struct PendingDirs(Arc<Mutex<BTreeSet<PathBuf>>>);

impl PendingDirs {
    fn add(&self, dir: &Path) {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(dir.to_owned());
    }

    /// fsyncs every pending directory. One that fails stays pending (and the error is
    /// returned), so nothing is ever named before its rename is durable.
    pub fn sync(&self) -> Result<()> {
        let dirs: Vec<PathBuf> = std::mem::take(
            &mut *self
                .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
        .into_iter()
        .collect();
        for (i, dir) in dirs.iter().enumerate() {
            if let Err(e) = fsync_dir(dir) {
                for d in &dirs[i..] {
                    self.add(d);
                }
                return Err(e);
            }
        }
        Ok(())
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }
}

/// When a [`FileBlobSink`] makes its rename durable.
#[derive(Debug, Clone)]
pub(crate) enum DirSync {
    /// At once: the directories are fsynced before `finish` returns.
    Now,
    /// Later, together with every other rename: the directories are added to the set.
    Deferred(PendingDirs),
}

/// An OCI layout being read.
#[derive(Debug, Clone)]
pub(crate) struct LayoutReader {
    root: PathBuf,
    location: String,
}

impl LayoutReader {
    /// Opens the layout at `root`; `location` names it in errors (`oci:/path`).
    pub fn open(root: &Path, location: &str) -> Result<LayoutReader> {
        let marker = root.join(LAYOUT_FILE);
        let bytes = match fs::read(&marker) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(Error::ImageNotFound {
                    location: location.to_owned(),
                    names: Vec::new(),
                });
            }
            Err(e) => return Err(Error::io("read", marker, e)),
        };
        let value: Value = serde_json::from_slice(&bytes)
            .map_err(|e| Error::malformed("oci-layout", location, e))?;
        match value.get("imageLayoutVersion").and_then(Value::as_str) {
            Some(v) if v.starts_with("1.") => {}
            other => {
                return Err(Error::malformed(
                    "oci-layout",
                    location,
                    format!("unsupported imageLayoutVersion {other:?} (hoist reads 1.x)"),
                ));
            }
        }
        Ok(LayoutReader {
            root: root.to_owned(),
            location: location.to_owned(),
        })
    }

    /// The entries of `index.json`.
    pub fn entries(&self) -> Result<Vec<Descriptor>> {
        #[derive(serde::Deserialize)]
        struct Index {
            #[serde(default)]
            manifests: Vec<Descriptor>,
        }
        let path = self.root.join(INDEX_FILE);
        let bytes = fs::read(&path).map_err(|e| Error::io("read", &path, e))?;
        let index: Index = serde_json::from_slice(&bytes)
            .map_err(|e| Error::malformed("index.json", &self.location, e))?;
        Ok(index.manifests)
    }

    /// The entry for image `name`, or the only entry when no name is given.
    pub fn select(&self, name: Option<&str>) -> Result<Descriptor> {
        let entries = self.entries()?;
        let names: Vec<String> = entries
            .iter()
            .filter_map(|d| d.annotations.get(REF_NAME_ANNOTATION).cloned())
            .collect();
        match name {
            Some(name) => {
                let mut found = entries.into_iter().filter(|d| {
                    d.annotations.get(REF_NAME_ANNOTATION).map(String::as_str) == Some(name)
                });
                match (found.next(), found.next()) {
                    (Some(d), None) => Ok(d),
                    (Some(a), Some(b)) if a.digest == b.digest => Ok(a),
                    (Some(_), Some(_)) => Err(Error::malformed(
                        "index.json",
                        &self.location,
                        format!("several different images are named {name:?}"),
                    )),
                    (None, _) => Err(Error::ImageNotFound {
                        location: format!("{}:{name}", self.location),
                        names,
                    }),
                }
            }
            None => match entries.len() {
                1 => Ok(entries
                    .into_iter()
                    .next()
                    .ok_or_else(|| Error::malformed("index.json", &self.location, "no entries"))?),
                0 => Err(Error::ImageNotFound {
                    location: self.location.clone(),
                    names,
                }),
                count => Err(Error::AmbiguousImage {
                    location: self.location.clone(),
                    count,
                    names: if names.is_empty() {
                        entries.iter().map(|d| d.digest.to_string()).collect()
                    } else {
                        names
                    },
                }),
            },
        }
    }

    /// The path of a blob.
    pub fn blob_path(&self, digest: &Digest) -> Result<PathBuf> {
        blob_path(&self.root, digest)
    }

    /// Reads a small blob (a manifest) whole, refusing more than `limit` bytes, verified.
    /// A missing blob is `None`.
    pub async fn read_small(
        &self,
        what: &'static str,
        digest: &Digest,
        limit: u64,
    ) -> Result<Option<Bytes>> {
        let path = self.blob_path(digest)?;
        let file = match tokio::fs::File::open(&path).await {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("open", path, e)),
        };
        let mut buf = Vec::new();
        use tokio::io::AsyncReadExt;
        file.take(limit + 1)
            .read_to_end(&mut buf)
            .await
            .map_err(|e| Error::io("read", &path, e))?;
        if buf.len() as u64 > limit {
            return Err(Error::TooLarge {
                what,
                digest: digest.to_string(),
                location: self.location.clone(),
                limit,
            });
        }
        verify_bytes(
            &format!("{what} {digest} in {}", self.location),
            digest,
            &buf,
        )?;
        Ok(Some(Bytes::from(buf)))
    }
}

/// An OCI layout being written.
#[derive(Debug, Clone)]
pub(crate) struct LayoutWriter {
    root: PathBuf,
    location: String,
    /// Directories changed by blob renames since `index.json` was last written.
    pending: PendingDirs,
}

impl LayoutWriter {
    /// Opens the layout at `root` for writing, creating it (and the directory) if needed. An
    /// existing layout keeps its images.
    pub fn create(root: &Path, location: &str) -> Result<LayoutWriter> {
        fs::create_dir_all(root.join("blobs").join("sha256"))
            .map_err(|e| Error::io("create directory", root.join("blobs"), e))?;
        // A new layout's files are made durable with the first blobs, before index.json names
        // an image; until then a power loss can only lose the new (empty) layout.
        let pending = PendingDirs::default();
        let marker = root.join(LAYOUT_FILE);
        if marker.exists() {
            LayoutReader::open(root, location)?;
        } else {
            write_atomic_deferred(
                &marker,
                format!("{{\"imageLayoutVersion\":\"{LAYOUT_VERSION}\"}}").as_bytes(),
                &pending,
            )?;
        }
        let index = root.join(INDEX_FILE);
        if !index.exists() {
            let empty = serde_json::json!({
                "schemaVersion": 2,
                "mediaType": OCI_INDEX,
                "manifests": [],
            });
            write_atomic_deferred(&index, empty.to_string().as_bytes(), &pending)?;
        }
        Ok(LayoutWriter {
            root: root.to_owned(),
            location: location.to_owned(),
            pending,
        })
    }

    /// Whether the layout holds blob `digest` with `size` bytes.
    pub fn has_blob(&self, digest: &Digest, size: u64) -> Result<bool> {
        let path = blob_path(&self.root, digest)?;
        match fs::metadata(&path) {
            Ok(m) => Ok(m.is_file() && m.len() == size),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::io("stat", path, e)),
        }
    }

    /// A sink writing blob `info` into the layout.
    pub fn blob_sink(&self, info: &BlobInfo) -> Result<FileBlobSink> {
        let target = blob_path(&self.root, &info.digest)?;
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).map_err(|e| Error::io("create directory", parent, e))?;
        }
        FileBlobSink::new(
            &self.root,
            target,
            Verifier::new(
                format!("blob {} written to {}", info.digest, self.location),
                &info.digest,
                info.size,
            )?,
        )
        .map(|sink| sink.dir_sync(DirSync::Deferred(self.pending.clone())))
    }

    /// Writes a small blob held in memory (a manifest), verified against `digest`.
    pub fn put_small(&self, digest: &Digest, bytes: &[u8]) -> Result<()> {
        verify_bytes(&format!("manifest {digest}"), digest, bytes)?;
        if self.has_blob(digest, bytes.len() as u64)? {
            return Ok(());
        }
        let mut sink = self.blob_sink(&BlobInfo::new(
            digest.clone(),
            bytes.len() as u64,
            String::new(),
        ))?;
        sink.write(bytes)?;
        sink.finish()
    }

    /// Adds `descriptor` to `index.json` under `name`, replacing any entry of that name (or,
    /// without a name, any unnamed entry of the same digest). Other entries and fields are kept.
    ///
    /// Every blob renamed into the layout so far is made durable first; so is `blobs/` itself
    /// even when this writer renamed nothing, since the blobs it reused may have been renamed
    /// by a process that died before making them durable.
    pub fn add_to_index(&self, descriptor: &Descriptor, name: Option<&str>) -> Result<()> {
        if let Some(dir) = blob_path(&self.root, &descriptor.digest)?.parent() {
            self.pending.add(dir);
        }
        self.pending.sync()?;
        let path = self.root.join(INDEX_FILE);
        let bytes = fs::read(&path).map_err(|e| Error::io("read", &path, e))?;
        let mut index: Map<String, Value> = serde_json::from_slice(&bytes)
            .map_err(|e| Error::malformed("index.json", &self.location, e))?;
        let mut entry = descriptor.clone();
        entry.platform = None;
        if let Some(name) = name {
            entry
                .annotations
                .insert(REF_NAME_ANNOTATION.to_owned(), name.to_owned());
        }
        let entry = serde_json::to_value(&entry)
            .map_err(|e| Error::malformed("index.json", &self.location, e))?;
        let digest = descriptor.digest.to_string();
        let manifests = index
            .entry("manifests")
            .or_insert_with(|| Value::Array(Vec::new()));
        let Value::Array(list) = manifests else {
            return Err(Error::malformed(
                "index.json",
                &self.location,
                "\"manifests\" is not an array",
            ));
        };
        list.retain(|existing| {
            let existing_name = existing
                .get("annotations")
                .and_then(|a| a.get(REF_NAME_ANNOTATION))
                .and_then(Value::as_str);
            match name {
                Some(name) => existing_name != Some(name),
                None => {
                    existing_name.is_some()
                        || existing.get("digest").and_then(Value::as_str) != Some(&digest)
                }
            }
        });
        list.push(entry);
        index
            .entry("schemaVersion")
            .or_insert_with(|| Value::from(2));
        let bytes = serde_json::to_vec(&Value::Object(index))
            .map_err(|e| Error::malformed("index.json", &self.location, e))?;
        write_atomic(&path, &bytes)
    }
}

/// Bytes written between two background `fdatasync`s of a blob being written.
const WRITEBACK_EVERY: u64 = 32 << 20;

/// How a [`FileBlobSink`] verifies.
enum Check {
    /// On the writing thread.
    Inline(Box<Verifier>),
    /// On a thread of its own, overlapping the writes.
    Parallel(ParallelVerifier),
}

/// Writes one blob into a temporary file next to its target, verifying it on the way, and
/// renames it into place only once it is complete and correct.
///
/// The hashing runs on its own thread beside the writes, and every [`WRITEBACK_EVERY`] bytes a
/// background `fdatasync` starts the disk writing early, so that the fsync before the rename
/// finds little left to do instead of the whole blob.
pub(crate) struct FileBlobSink {
    tmp: NamedTempFile,
    target: PathBuf,
    check: Check,
    unsynced: u64,
    writeback: Option<std::thread::JoinHandle<io::Result<()>>>,
    dir_sync: DirSync,
}

impl FileBlobSink {
    /// A sink for `target`, with its temporary file in `tmp_dir` (same filesystem).
    pub fn new(tmp_dir: &Path, target: PathBuf, verifier: Verifier) -> Result<FileBlobSink> {
        let tmp = tempfile::Builder::new()
            .prefix(".hoist-blob-")
            .tempfile_in(tmp_dir)
            .map_err(|e| Error::io("create a temporary file in", tmp_dir, e))?;
        let check = if verifier.size() >= PARALLEL_FROM {
            Check::Parallel(
                ParallelVerifier::spawn(verifier)
                    .map_err(|e| Error::io("start a thread to verify", &target, e))?,
            )
        } else {
            Check::Inline(Box::new(verifier))
        };
        Ok(FileBlobSink {
            tmp,
            target,
            check,
            unsynced: 0,
            writeback: None,
            dir_sync: DirSync::Now,
        })
    }

    /// Sets when the rename into place is made durable (default [`DirSync::Now`]).
    pub fn dir_sync(mut self, dir_sync: DirSync) -> FileBlobSink {
        self.dir_sync = dir_sync;
        self
    }

    fn write_file(&mut self, data: &[u8]) -> Result<()> {
        let path = self.tmp.path().to_owned();
        self.tmp
            .as_file_mut()
            .write_all(data)
            .map_err(|e| Error::io("write", path, e))?;
        self.unsynced += data.len() as u64;
        if self.unsynced >= WRITEBACK_EVERY {
            self.start_writeback()?;
        }
        Ok(())
    }

    /// Starts an `fdatasync` in the background, unless the previous one is still running.
    fn start_writeback(&mut self) -> Result<()> {
        if self.writeback.as_ref().is_some_and(|h| !h.is_finished()) {
            return Ok(());
        }
        self.wait_writeback()?;
        let Ok(file) = self.tmp.as_file().try_clone() else {
            return Ok(()); // only an optimisation: the final fsync covers everything
        };
        self.writeback = std::thread::Builder::new()
            .name("hoist-writeback".into())
            .spawn(move || file.sync_data())
            .ok();
        self.unsynced = 0;
        Ok(())
    }

    /// Waits for a background `fdatasync`; its failure is the blob's (the error is reported to
    /// one fsync only, so it must not be lost).
    fn wait_writeback(&mut self) -> Result<()> {
        let path = self.tmp.path().to_owned();
        match self.writeback.take().map(std::thread::JoinHandle::join) {
            None | Some(Ok(Ok(()))) => Ok(()),
            Some(Ok(Err(e))) => Err(Error::io("fsync", path, e)),
            Some(Err(_)) => Err(Error::io(
                "fsync",
                path,
                io::Error::other("the writeback thread failed"),
            )),
        }
    }
}

impl BlobSink for FileBlobSink {
    type Output = ();

    fn write(&mut self, data: &[u8]) -> Result<()> {
        match &mut self.check {
            Check::Inline(v) => v.update(data)?,
            Check::Parallel(v) => v.update(Bytes::copy_from_slice(data))?,
        }
        self.write_file(data)
    }

    fn write_bytes(&mut self, data: Bytes) -> Result<()> {
        match &mut self.check {
            Check::Inline(v) => v.update(&data)?,
            Check::Parallel(v) => v.update(data.clone())?,
        }
        self.write_file(&data)
    }

    fn finish(mut self) -> Result<()> {
        let path = self.tmp.path().to_owned();
        let synced = self.wait_writeback().and_then(|()| {
            self.tmp
                .as_file()
                .sync_all()
                .map_err(|e| Error::io("fsync", path, e))
        });
        let FileBlobSink {
            tmp,
            target,
            check,
            dir_sync,
            ..
        } = self;
        match check {
            Check::Inline(v) => v.finish()?,
            Check::Parallel(v) => v.finish()?,
        }
        synced?;
        // The rename changes two directories: the temporary file's and the target's.
        let from = tmp.path().parent().map(Path::to_owned);
        tmp.persist(&target)
            .map_err(|e| Error::io("rename into place", &target, e.error))?;
        let mut dirs: Vec<PathBuf> = target.parent().map(Path::to_owned).into_iter().collect();
        if let Some(from) = from.filter(|f| !dirs.contains(f)) {
            dirs.push(from);
        }
        match dir_sync {
            DirSync::Now => dirs.iter().try_for_each(|d| fsync_dir(d)),
            DirSync::Deferred(pending) => {
                dirs.iter().for_each(|d| pending.add(d));
                Ok(())
            }
        }
    }

    fn abort(mut self) {
        let _ = self.wait_writeback();
        // Dropping the temporary file removes it.
    }
}

/// Reads up to `limit` bytes of a file (a small file in an archive).
pub(crate) fn read_file_capped(path: &Path, limit: u64) -> Result<Vec<u8>> {
    let file = File::open(path).map_err(|e| Error::io("open", path, e))?;
    let mut buf = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut buf)
        .map_err(|e| Error::io("read", path, e))?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::manifest::OCI_MANIFEST;
    use crate::transport::stream::digest_like;

    fn sha256(data: &[u8]) -> Digest {
        let probe: Digest = format!("sha256:{}", "0".repeat(64)).parse().unwrap();
        digest_like(&probe, data).unwrap().parse().unwrap()
    }

    fn descriptor(data: &[u8]) -> Descriptor {
        Descriptor {
            media_type: OCI_MANIFEST.into(),
            digest: sha256(data),
            size: data.len() as u64,
            urls: Vec::new(),
            platform: None,
            annotations: Default::default(),
        }
    }

    #[test]
    fn a_new_layout_reads_back_what_was_written() {
        let dir = tempfile::tempdir().unwrap();
        let w = LayoutWriter::create(dir.path(), "oci:test").unwrap();
        let m = br#"{"schemaVersion":2}"#;
        let d = descriptor(m);
        w.put_small(&d.digest, m).unwrap();
        w.add_to_index(&d, Some("v1")).unwrap();

        let r = LayoutReader::open(dir.path(), "oci:test").unwrap();
        assert_eq!(r.select(Some("v1")).unwrap().digest, d.digest);
        assert_eq!(r.select(None).unwrap().digest, d.digest);
        let err = r.select(Some("v2")).unwrap_err();
        assert!(matches!(err, Error::ImageNotFound { ref names, .. } if names == &["v1"]));
        let leftovers: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with(".hoist"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn blob_renames_are_made_durable_once_before_the_index_names_them() {
        let dir = tempfile::tempdir().unwrap();
        let w = LayoutWriter::create(dir.path(), "oci:test").unwrap();
        for i in 0..3 {
            let m = format!(r#"{{"schemaVersion":2,"n":{i}}}"#);
            w.put_small(&descriptor(m.as_bytes()).digest, m.as_bytes())
                .unwrap();
        }
        // Three renames from the root into blobs/sha256: two directories to fsync, not six.
        assert_eq!(w.pending.len(), 2);
        let m = br#"{"schemaVersion":2,"n":0}"#;
        w.add_to_index(&descriptor(m), Some("v1")).unwrap();
        assert_eq!(w.pending.len(), 0);
    }

    #[test]
    fn naming_an_image_again_replaces_only_that_entry_and_keeps_unknown_fields() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join("oci-layout"),
            r#"{"imageLayoutVersion":"1.0.0"}"#,
        )
        .unwrap();
        let other = descriptor(b"other");
        fs::write(
            dir.path().join("index.json"),
            serde_json::json!({"schemaVersion":2,"x-extra":true,"manifests":[
                {"mediaType": OCI_MANIFEST, "digest": other.digest.to_string(), "size": 5,
                 "annotations": {REF_NAME_ANNOTATION: "keep"}}]})
            .to_string(),
        )
        .unwrap();
        let w = LayoutWriter::create(dir.path(), "oci:test").unwrap();
        w.add_to_index(&descriptor(b"one"), Some("v1")).unwrap();
        w.add_to_index(&descriptor(b"two"), Some("v1")).unwrap();
        let r = LayoutReader::open(dir.path(), "oci:test").unwrap();
        let entries = r.entries().unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(r.select(Some("v1")).unwrap().digest, sha256(b"two"));
        assert_eq!(r.select(Some("keep")).unwrap().digest, other.digest);
        let raw: Value =
            serde_json::from_slice(&fs::read(dir.path().join("index.json")).unwrap()).unwrap();
        assert_eq!(raw["x-extra"], Value::Bool(true));
        assert!(matches!(
            r.select(None),
            Err(Error::AmbiguousImage { count: 2, .. })
        ));
    }

    #[test]
    fn a_blob_with_the_wrong_content_never_reaches_blobs() {
        let dir = tempfile::tempdir().unwrap();
        let w = LayoutWriter::create(dir.path(), "oci:test").unwrap();
        let info = BlobInfo::new(sha256(b"right"), 5, String::new());
        let mut sink = w.blob_sink(&info).unwrap();
        sink.write(b"wrong").unwrap();
        assert!(matches!(sink.finish(), Err(Error::DigestMismatch { .. })));
        assert!(!w.has_blob(&info.digest, 5).unwrap());
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            names.len(),
            3,
            "only oci-layout, index.json, blobs: {names:?}"
        );
    }

    #[test]
    fn a_large_blob_is_verified_beside_the_writes_and_lands_only_when_right() {
        let dir = tempfile::tempdir().unwrap();
        let w = LayoutWriter::create(dir.path(), "oci:test").unwrap();
        let data: Vec<u8> = (0..(6u32 << 20)).map(|i| (i % 251) as u8).collect();
        let info = BlobInfo::new(sha256(&data), data.len() as u64, String::new());
        let mut wrong = data.clone();
        wrong[4 << 20] ^= 1;
        let mut sink = w.blob_sink(&info).unwrap();
        for part in wrong.chunks(300_000) {
            sink.write_bytes(Bytes::copy_from_slice(part)).unwrap();
        }
        assert!(matches!(sink.finish(), Err(Error::DigestMismatch { .. })));
        assert!(!w.has_blob(&info.digest, info.size).unwrap());
        let mut sink = w.blob_sink(&info).unwrap();
        for part in data.chunks(300_000) {
            sink.write_bytes(Bytes::copy_from_slice(part)).unwrap();
        }
        sink.finish().unwrap();
        assert!(w.has_blob(&info.digest, info.size).unwrap());
        assert_eq!(
            fs::read(blob_path(dir.path(), &info.digest).unwrap()).unwrap(),
            data
        );
    }

    #[test]
    fn another_layout_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join("oci-layout"),
            r#"{"imageLayoutVersion":"2.0.0"}"#,
        )
        .unwrap();
        assert!(matches!(
            LayoutReader::open(dir.path(), "oci:x"),
            Err(Error::Malformed { .. })
        ));
    }
}
