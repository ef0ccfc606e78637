//! The layer store: image layers extracted into per-layer directories, keyed by ChainID.
//!
//! A layer is registered from its *uncompressed* tar stream, so that a pull can feed it straight
//! from the decompressor: [`LayerStore::stage`] extracts the stream into a private temporary
//! directory while hashing every byte of it (the DiffID), and [`LayerStore::commit`] makes the
//! layer visible under its ChainID with one atomic rename. [`LayerStore::register`] does both.
//!
//! On disk, under the store directory:
//!
//! ```text
//! layers/<chain-id-hex>/diff/      the extracted tree (whiteouts are not materialised)
//! layers/<chain-id-hex>/meta       DiffID, ChainID, parent, tar size, whiteouts, opaque dirs
//! layers/<chain-id-hex>/manifest   every path with its type, declared mode, owner, mtime,
//!                                  size, sha256, hard link group, symlink target, xattrs
//! tmp/                             layers being staged or removed (each guarded by a lock file)
//! ```
//!
//! A layer directory appears only complete: it is built in `tmp/`, the filesystem is synced once,
//! and it is renamed into `layers/`. A staging directory left by a killed process is removed by
//! the next [`LayerStore::open`] (its lock is no longer held).
//!
//! Removal is refused while another layer has the layer as parent, or while a [`LayerLease`] on
//! it is held (a shared lock on its metadata file, so it works across processes and dies with
//! its holder): a pull leases the layers it registers until the image that references them is
//! recorded.
//!
//! Extraction refuses any entry that would write outside the layer directory; see
//! [`path`] for name sanitising and the `extract` module docs for the rules. [`LayerStore::unpack`]
//! flattens a chain of layers into a plain directory, applying whiteouts, as
//! `umoci unpack`'s `rootfs/`.
//!
//! Everything here is blocking file I/O: async callers run it on a blocking thread.

mod error;
mod extract;
mod manifest;
pub mod path;
mod store;
mod sys;
mod tarstream;
mod tree;
mod unpack;
mod verify;
pub mod whiteout;

#[cfg(test)]
mod tests;

use oci_spec::image::Digest;
use sha2::{Digest as _, Sha256};

pub use error::{LayerError, Result};
pub use store::{LayerLease, LayerStore, StagedLayer};
pub use verify::{VerifyProblem, VerifyReport};

/// Default limit on the bytes of one layer's tar stream and of the files it extracts: 64 GiB.
pub const DEFAULT_MAX_BYTES: u64 = 64 << 30;
/// Default limit on the entries of one layer: 4 million.
pub const DEFAULT_MAX_ENTRIES: u64 = 4_000_000;

/// A layer in the store.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Layer {
    /// sha256 of the layer's uncompressed tar stream.
    pub diff_id: Digest,
    /// Identity of the layer together with all layers below it (see [`chain_id`]).
    pub chain_id: Digest,
    /// ChainID of the layer below, `None` for a base layer.
    pub parent: Option<Digest>,
    /// Size in bytes of the uncompressed tar stream.
    pub size: u64,
}

/// Options for [`LayerStore::stage`] and [`LayerStore::register`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct StageOptions {
    /// DiffID the stream must hash to (for example from the image config); a mismatch fails the
    /// stage with [`LayerError::DiffIdMismatch`] and nothing is kept.
    pub expected_diff_id: Option<Digest>,
    /// Most bytes read from the tar stream, and most bytes of file contents extracted (sparse
    /// files count with their full size): the decompression bomb guard.
    pub max_bytes: u64,
    /// Most entries in the archive.
    pub max_entries: u64,
    /// Extract without privileges: no owners, no setuid/setgid, no device nodes, only `user.*`
    /// xattrs. Defaults to `true` unless running as root.
    pub rootless: bool,
}

impl Default for StageOptions {
    fn default() -> Self {
        Self {
            expected_diff_id: None,
            max_bytes: DEFAULT_MAX_BYTES,
            max_entries: DEFAULT_MAX_ENTRIES,
            rootless: !sys::is_root(),
        }
    }
}

impl StageOptions {
    /// Requires the stream to hash to `diff_id`.
    pub fn expect_diff_id(mut self, diff_id: Digest) -> Self {
        self.expected_diff_id = Some(diff_id);
        self
    }

    /// Sets [`StageOptions::max_bytes`].
    pub fn max_bytes(mut self, max_bytes: u64) -> Self {
        self.max_bytes = max_bytes;
        self
    }

    /// Sets [`StageOptions::max_entries`].
    pub fn max_entries(mut self, max_entries: u64) -> Self {
        self.max_entries = max_entries;
        self
    }

    /// Sets [`StageOptions::rootless`].
    pub fn rootless(mut self, rootless: bool) -> Self {
        self.rootless = rootless;
        self
    }
}

/// Options for [`LayerStore::unpack`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct UnpackOptions {
    /// Unpack without privileges: no owners, no setuid/setgid bits, no device nodes, only
    /// `user.*` xattrs. Defaults to `true` unless running as root.
    pub rootless: bool,
}

impl Default for UnpackOptions {
    fn default() -> Self {
        Self {
            rootless: !sys::is_root(),
        }
    }
}

impl UnpackOptions {
    /// Sets [`UnpackOptions::rootless`].
    pub fn rootless(mut self, rootless: bool) -> Self {
        self.rootless = rootless;
        self
    }
}

/// The sha256 digest of 32 hash bytes.
pub(crate) fn sha256_digest(hash: [u8; 32]) -> Digest {
    Digest::try_from(format!("sha256:{}", hex::encode(hash)))
        .expect("a sha256 hex digest is always valid")
}

/// The ChainID of a layer with DiffID `diff_id` on top of the chain `parent`: the DiffID itself
/// for a base layer, else `sha256(parent + " " + diff_id)`, as the OCI image spec defines it.
pub fn chain_id(parent: Option<&Digest>, diff_id: &Digest) -> Digest {
    match parent {
        None => diff_id.clone(),
        Some(parent) => sha256_digest(Sha256::digest(format!("{parent} {diff_id}")).into()),
    }
}
