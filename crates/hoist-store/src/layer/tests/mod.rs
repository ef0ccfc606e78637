//! Integration-style tests of the layer store: archives are built byte by byte with the `tar`
//! crate's raw header API, so that they can be as hostile as needed.

mod extraction;
mod hostile;
mod store;
mod umoci;
mod whiteouts;

use std::collections::BTreeMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};
use tar::{EntryType, Header};

use super::{LayerStore, StageOptions};

/// Default mtime of test entries.
pub(super) const MTIME: u64 = 1_600_000_000;

/// Builds a tar archive entry by entry, writing names and fields raw.
pub(super) struct TarBuilder {
    out: Vec<u8>,
    mtime: u64,
}

impl TarBuilder {
    pub(super) fn new() -> Self {
        Self::with_mtime(MTIME)
    }

    /// A builder whose entries (made by the helpers below) have this mtime.
    pub(super) fn with_mtime(mtime: u64) -> Self {
        Self {
            out: Vec::new(),
            mtime,
        }
    }

    /// A GNU header with `name` written raw (at most 100 bytes) and common defaults.
    pub(super) fn header(kind: EntryType, name: &[u8], size: u64, mode: u32) -> Header {
        let mut h = Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(MTIME);
        set_raw_name(&mut h, name);
        h
    }

    fn entry(&mut self, kind: EntryType, name: &[u8], size: u64, mode: u32) -> Header {
        let mut h = Self::header(kind, name, size, mode);
        h.set_mtime(self.mtime);
        h
    }

    /// Appends `header` (checksummed here) and `data` padded to a block.
    pub(super) fn raw(&mut self, mut header: Header, data: &[u8]) -> &mut Self {
        header.set_cksum();
        self.out.extend_from_slice(header.as_bytes());
        self.out.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.out.extend(std::iter::repeat_n(0u8, pad));
        self
    }

    pub(super) fn file(&mut self, name: &str, data: &[u8]) -> &mut Self {
        self.file_mode(name, data, 0o644)
    }

    pub(super) fn file_mode(&mut self, name: &str, data: &[u8], mode: u32) -> &mut Self {
        let h = self.entry(EntryType::Regular, name.as_bytes(), data.len() as u64, mode);
        self.raw(h, data)
    }

    pub(super) fn dir(&mut self, name: &str, mode: u32) -> &mut Self {
        let h = self.entry(EntryType::Directory, name.as_bytes(), 0, mode);
        self.raw(h, b"")
    }

    pub(super) fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        let mut h = self.entry(EntryType::Symlink, name.as_bytes(), 0, 0o777);
        h.set_link_name_literal(target.as_bytes()).unwrap();
        self.raw(h, b"")
    }

    pub(super) fn hardlink(&mut self, name: &str, target: &str) -> &mut Self {
        let mut h = self.entry(EntryType::Link, name.as_bytes(), 0, 0o644);
        h.set_link_name_literal(target.as_bytes()).unwrap();
        self.raw(h, b"")
    }

    /// A PAX extended header applying `records` to the next entry.
    pub(super) fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut Self {
        let data = pax_records(records);
        let h = Self::header(
            EntryType::XHeader,
            b"././@PaxHeader",
            data.len() as u64,
            0o644,
        );
        self.raw(h, &data)
    }

    /// A GNU long name entry naming the next entry.
    pub(super) fn gnu_long_name(&mut self, name: &[u8]) -> &mut Self {
        let mut data = name.to_vec();
        data.push(0);
        let h = Self::header(
            EntryType::GNULongName,
            b"././@LongLink",
            data.len() as u64,
            0o644,
        );
        self.raw(h, &data)
    }

    /// Appends raw bytes (for corrupt archives).
    pub(super) fn bytes(&mut self, bytes: &[u8]) -> &mut Self {
        self.out.extend_from_slice(bytes);
        self
    }

    /// The archive with its two end-of-archive blocks.
    pub(super) fn finish(&mut self) -> Vec<u8> {
        let mut out = std::mem::take(&mut self.out);
        out.extend(std::iter::repeat_n(0u8, 1024));
        out
    }
}

pub(super) fn set_raw_name(h: &mut Header, name: &[u8]) {
    let slot = &mut h.as_old_mut().name;
    assert!(
        name.len() <= slot.len(),
        "use a long name entry for {} bytes",
        name.len()
    );
    slot.fill(0);
    slot[..name.len()].copy_from_slice(name);
}

/// Encodes PAX records (`"%d %s=%s\n"`, the length counting itself).
pub(super) fn pax_records(records: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (key, value) in records {
        let body_len = key.len() + value.len() + 3; // ' ', '=', '\n'
        let mut len = body_len + 1;
        while len != body_len + len.to_string().len() {
            len = body_len + len.to_string().len();
        }
        out.extend_from_slice(format!("{len} {key}=").as_bytes());
        out.extend_from_slice(value);
        out.push(b'\n');
    }
    out
}

/// A scratch area: `root/store` is the store, `root/outside` holds a sentinel that no layer may
/// touch.
pub(super) struct Fixture {
    pub tmp: tempfile::TempDir,
    pub store: LayerStore,
}

impl Fixture {
    pub(super) fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("outside")).unwrap();
        std::fs::write(tmp.path().join("outside/secret"), b"do not touch").unwrap();
        let store = LayerStore::open(&tmp.path().join("store")).unwrap();
        Self { tmp, store }
    }

    pub(super) fn outside(&self) -> PathBuf {
        self.tmp.path().join("outside")
    }

    /// Everything in the scratch area except the store itself.
    pub(super) fn snapshot_outside(&self) -> BTreeMap<PathBuf, String> {
        let mut snap = snapshot(self.tmp.path());
        snap.retain(|p, _| !p.starts_with("store"));
        snap
    }

    /// Asserts no layer is registered and no temporary directory is left.
    pub(super) fn assert_store_empty(&self) {
        assert!(
            self.store.list().unwrap().is_empty(),
            "a layer was registered"
        );
        let tmp: Vec<_> = std::fs::read_dir(self.tmp.path().join("store/tmp"))
            .unwrap()
            .collect();
        assert!(tmp.is_empty(), "temporary files left behind: {tmp:?}");
    }

    /// Stages `tar` expecting an error, and checks nothing leaked anywhere.
    pub(super) fn expect_refused(&self, tar: &[u8], options: &StageOptions) -> super::LayerError {
        let before = self.snapshot_outside();
        let err = self
            .store
            .register(None, tar, options)
            .expect_err("the archive must be refused");
        assert_eq!(
            self.snapshot_outside(),
            before,
            "something outside the store changed"
        );
        self.assert_store_empty();
        err
    }
}

/// A description of every path under `root`: type, mode, and contents or target.
pub(super) fn snapshot(root: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, String>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        let meta = std::fs::symlink_metadata(&path).unwrap();
        let rel = path.strip_prefix(root).unwrap().to_path_buf();
        let mode = meta.mode() & 0o7777;
        let ft = meta.file_type();
        let desc = if ft.is_dir() {
            walk(root, &path, out);
            format!("dir {mode:o}")
        } else if ft.is_symlink() {
            format!(
                "symlink -> {}",
                std::fs::read_link(&path).unwrap().display()
            )
        } else if ft.is_file() {
            let data = std::fs::read(&path).unwrap();
            format!("file {mode:o} {}", hex::encode(Sha256::digest(&data)))
        } else if ft.is_char_device() {
            format!("char {mode:o} {}", meta.rdev())
        } else if ft.is_fifo() {
            format!("fifo {mode:o}")
        } else {
            format!("other {mode:o}")
        };
        out.insert(rel, desc);
    }
}

/// sha256 of `data` as a digest.
pub(super) fn sha256(data: &[u8]) -> oci_spec::image::Digest {
    super::sha256_digest(Sha256::digest(data).into())
}

/// Stage options for tests: privileged only when actually root.
pub(super) fn options() -> StageOptions {
    StageOptions::default()
}
