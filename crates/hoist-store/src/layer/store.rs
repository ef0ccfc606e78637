//! [`LayerStore`]: staging, committing, listing and removing layers on disk.

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::fd::AsFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use oci_spec::image::{Digest, DigestAlgorithm};
use tracing::{debug, warn};

use super::error::{LayerError, Result};
use super::extract::extract;
use super::manifest::{self, Meta};
use super::sys;
use super::tree::{self, open_dir_path};
use super::verify::{self, VerifyReport};
use super::{Layer, StageOptions, UnpackOptions, chain_id, sha256_digest};

const LAYERS_DIR: &str = "layers";
const TMP_DIR: &str = "tmp";
const DIFF_DIR: &str = "diff";
const META_FILE: &str = "meta";
const MANIFEST_FILE: &str = "manifest";
const LOCK_SUFFIX: &str = ".lock";

/// The layer store rooted at one directory. Cheap to clone; safe to use from several threads
/// and processes at once (commits and removals are atomic renames).
#[derive(Debug, Clone)]
pub struct LayerStore {
    layers: PathBuf,
    tmp: PathBuf,
}

/// A layer extracted into the store's temporary area but not yet visible.
///
/// [`LayerStore::commit`] makes it visible; dropping it discards it.
#[derive(Debug)]
pub struct StagedLayer {
    staging: Staging,
    diff_id: Digest,
    size: u64,
    privileged: bool,
    whiteouts: Vec<PathBuf>,
    opaques: Vec<PathBuf>,
}

impl StagedLayer {
    /// The DiffID computed from the stream.
    pub fn diff_id(&self) -> &Digest {
        &self.diff_id
    }

    /// Bytes in the uncompressed tar stream.
    pub fn size(&self) -> u64 {
        self.size
    }
}

/// A lease on a layer: while it lives, the layer cannot be removed (see
/// [`LayerStore::lease`]). It is a shared lock on the layer's metadata file, so it is released
/// when dropped or when the process dies.
#[derive(Debug)]
pub struct LayerLease {
    chain_id: Digest,
    _file: File,
}

impl LayerLease {
    fn lock(meta: &Path, chain_id: Digest) -> Result<Self> {
        let file = File::open(meta)
            .map_err(|e| LayerError::io(format!("opening {}", meta.display()), e))?;
        file.lock_shared()
            .map_err(|e| LayerError::io(format!("locking {}", meta.display()), e))?;
        Ok(Self {
            chain_id,
            _file: file,
        })
    }

    /// The layer leased.
    pub fn chain_id(&self) -> &Digest {
        &self.chain_id
    }
}

/// A directory under `tmp/` guarded by an exclusively locked `NAME.lock` file: while the lock is
/// held the directory is in use; a lock nobody holds marks a leftover of a dead process.
#[derive(Debug)]
struct Staging {
    dir: PathBuf,
    lock_path: PathBuf,
    _lock: File,
    /// Whether dropping this removes `dir`.
    armed: bool,
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

impl Staging {
    /// Reserves a fresh name under `tmp` (the directory itself is not created).
    fn reserve(tmp: &Path, purpose: &str) -> Result<Self> {
        let mut attempt = 0;
        loop {
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            let name = format!(
                "{purpose}-{}-{nanos}-{}",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::Relaxed)
            );
            let lock_path = tmp.join(format!("{name}{LOCK_SUFFIX}"));
            let lock = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o644)
                .open(&lock_path)
                .map_err(|e| LayerError::io(format!("creating {}", lock_path.display()), e))?;
            match lock.try_lock() {
                Ok(()) => {
                    return Ok(Self {
                        dir: tmp.join(name),
                        lock_path,
                        _lock: lock,
                        armed: true,
                    });
                }
                // A concurrent `open` took the fresh lock for a leftover's: pick another name.
                Err(_) if attempt < 3 => attempt += 1,
                Err(e) => {
                    return Err(LayerError::io(
                        format!("locking {}", lock_path.display()),
                        io::Error::other(e.to_string()),
                    ));
                }
            }
        }
    }

    /// After the directory was moved away (committed): only the lock file remains to remove.
    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if self.armed
            && let Err(e) = tree::remove_tree(&self.dir)
        {
            // Keep the lock file: the next `open` sees an unheld lock and retries the removal.
            warn!(dir = %self.dir.display(), error = %e, "could not remove temporary layer directory");
            return;
        }
        if let Err(e) = fs::remove_file(&self.lock_path) {
            debug!(lock = %self.lock_path.display(), error = %e, "could not remove lock file");
        }
    }
}

/// The hex of a sha256 digest, the name of its layer directory.
fn layer_hex(chain_id: &Digest) -> Result<&str> {
    if *chain_id.algorithm() != DigestAlgorithm::Sha256 {
        return Err(LayerError::InvalidDigest {
            digest: chain_id.to_string(),
            reason: "layers are keyed by sha256 ChainIDs",
        });
    }
    Ok(chain_id.digest())
}

fn sync_dir(path: &Path) -> Result<()> {
    File::open(path)
        .and_then(|d| d.sync_all())
        .map_err(|e| LayerError::io(format!("syncing {}", path.display()), e))
}

/// Mode of `layers/` and `tmp/`: layer contents keep the modes their tars give them, world-writable
/// directories (`/tmp`) included, so only the store's owner may reach them.
const PRIVATE_DIR_MODE: u32 = 0o700;

/// Creates `dir` (and missing parents) with [`PRIVATE_DIR_MODE`], or narrows an existing one to
/// it, whatever the umask.
fn private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let err = |e| LayerError::io(format!("creating {}", dir.display()), e);
    fs::DirBuilder::new()
        .recursive(true)
        .mode(PRIVATE_DIR_MODE)
        .create(dir)
        .map_err(err)?;
    let mode = fs::metadata(dir).map_err(err)?.mode();
    if mode & 0o7777 != PRIVATE_DIR_MODE {
        fs::set_permissions(dir, fs::Permissions::from_mode(PRIVATE_DIR_MODE)).map_err(err)?;
    }
    Ok(())
}

impl LayerStore {
    /// Opens (creating if needed) the layer store in `dir`, and removes staging directories left
    /// by processes that died.
    pub fn open(dir: &Path) -> Result<Self> {
        let store = Self {
            layers: dir.join(LAYERS_DIR),
            tmp: dir.join(TMP_DIR),
        };
        for d in [&store.layers, &store.tmp] {
            private_dir(d)?;
        }
        store.clean_tmp()?;
        Ok(store)
    }

    /// Removes every `tmp/` entry whose lock is not held by a live process.
    fn clean_tmp(&self) -> Result<()> {
        let entries = fs::read_dir(&self.tmp)
            .map_err(|e| LayerError::io(format!("listing {}", self.tmp.display()), e))?;
        for entry in entries {
            let entry =
                entry.map_err(|e| LayerError::io(format!("listing {}", self.tmp.display()), e))?;
            let name = entry.file_name();
            let Some(base) = name.to_str().and_then(|n| n.strip_suffix(LOCK_SUFFIX)) else {
                continue;
            };
            let Ok(lock) = File::open(entry.path()) else {
                continue;
            };
            if lock.try_lock().is_err() {
                continue; // Held: a live process is using it.
            }
            let dir = self.tmp.join(base);
            match tree::remove_tree(&dir) {
                Ok(()) => {
                    debug!(dir = %dir.display(), "removed a leftover temporary layer directory");
                    let _ = fs::remove_file(entry.path());
                }
                Err(e) => {
                    warn!(dir = %dir.display(), error = %e, "could not remove leftover temporary layer directory")
                }
            }
        }
        Ok(())
    }

    fn layer_dir(&self, chain_id: &Digest) -> Result<PathBuf> {
        Ok(self.layers.join(layer_hex(chain_id)?))
    }

    /// The directory holding the extracted tree of layer `chain_id` (it exists only if the layer
    /// does). Whiteouts are not materialised in it: they are in the layer's metadata.
    pub fn diff_dir(&self, chain_id: &Digest) -> Result<PathBuf> {
        Ok(self.layer_dir(chain_id)?.join(DIFF_DIR))
    }

    /// Extracts the uncompressed tar stream `tar` into a temporary directory of the store,
    /// computing its DiffID over every byte `tar` yields (the stream is read to EOF, past the
    /// end-of-archive blocks). Nothing is visible until [`LayerStore::commit`].
    ///
    /// On any error nothing is kept. Blocking: run it on a blocking thread.
    pub fn stage(&self, tar: impl Read, options: &StageOptions) -> Result<StagedLayer> {
        let staging = Staging::reserve(&self.tmp, "stage")?;
        fs::create_dir(&staging.dir)
            .map_err(|e| LayerError::io(format!("creating {}", staging.dir.display()), e))?;
        let diff = staging.dir.join(DIFF_DIR);
        fs::create_dir(&diff)
            .map_err(|e| LayerError::io(format!("creating {}", diff.display()), e))?;
        let extracted = extract(tar, &diff, options)?;
        let diff_id = sha256_digest(extracted.diff_id);
        if let Some(expected) = &options.expected_diff_id
            && *expected != diff_id
        {
            return Err(LayerError::DiffIdMismatch {
                expected: expected.clone(),
                actual: diff_id,
            });
        }
        manifest::write_manifest(&staging.dir.join(MANIFEST_FILE), &extracted.manifest)?;
        Ok(StagedLayer {
            staging,
            diff_id,
            size: extracted.size,
            privileged: extracted.privileged,
            whiteouts: extracted.whiteouts,
            opaques: extracted.opaques,
        })
    }

    /// Makes a staged layer visible as the child of `parent` (a ChainID already in the store, or
    /// `None` for a base layer), under its ChainID. If that ChainID is already in the store
    /// (registered earlier, or by another process meanwhile) the staged copy is discarded and the
    /// existing layer returned.
    ///
    /// Use [`LayerStore::commit_leased`] when the layer must not be removed before the caller has
    /// recorded a reference to it.
    pub fn commit(&self, parent: Option<&Digest>, staged: StagedLayer) -> Result<Layer> {
        self.commit_leased(parent, staged)
            .map(|(layer, _lease)| layer)
    }

    /// [`LayerStore::commit`], also returning a [`LayerLease`] taken before the layer became
    /// visible: no process can remove the layer while the lease is held.
    pub fn commit_leased(
        &self,
        parent: Option<&Digest>,
        staged: StagedLayer,
    ) -> Result<(Layer, LayerLease)> {
        if let Some(parent) = parent
            && self.get(parent)?.is_none()
        {
            return Err(LayerError::ParentNotFound {
                parent: parent.clone(),
            });
        }
        let chain_id = chain_id(parent, &staged.diff_id);
        let target = self.layer_dir(&chain_id)?;
        if let Some(existing) = self.lease_existing(&chain_id)? {
            return Ok(existing);
        }
        let meta = Meta {
            diff_id: staged.diff_id.clone(),
            chain_id: chain_id.clone(),
            parent: parent.cloned(),
            size: staged.size,
            privileged: staged.privileged,
            whiteouts: staged.whiteouts,
            opaques: staged.opaques,
        };
        let staging = staged.staging;
        let meta_path = staging.dir.join(META_FILE);
        manifest::write_meta(&meta_path, &meta)?;
        // The lease's lock stays with the metadata file through the rename.
        let lease = LayerLease::lock(&meta_path, chain_id.clone())?;
        // One sync of the filesystem instead of one fsync per file.
        let dir_fd = open_dir_path(&staging.dir)
            .map_err(|e| LayerError::io(format!("opening {}", staging.dir.display()), e))?;
        sys::sync_filesystem(dir_fd.as_fd())
            .map_err(|e| LayerError::io(format!("syncing {}", staging.dir.display()), e))?;
        drop(dir_fd);
        match sys::rename_noreplace(&staging.dir, &target) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                // Another process committed the same layer first.
                drop(lease);
                drop(staging);
                return self
                    .lease_existing(&chain_id)?
                    .ok_or(LayerError::NotFound { chain_id });
            }
            Err(e) => {
                return Err(LayerError::io(
                    format!("renaming into {}", target.display()),
                    e,
                ));
            }
        }
        staging.disarm();
        sync_dir(&self.layers)?;
        Ok((layer_from(meta), lease))
    }

    /// The layer `chain_id` with a lease on it, if the store has it.
    fn lease_existing(&self, chain_id: &Digest) -> Result<Option<(Layer, LayerLease)>> {
        match self.lease(chain_id) {
            Ok(lease) => Ok(self.get(chain_id)?.map(|layer| (layer, lease))),
            Err(LayerError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Takes a lease on layer `chain_id`: until it is dropped (or the process dies),
    /// [`LayerStore::remove`] refuses the layer with [`LayerError::InUse`], in any process. A pull
    /// holds leases on the layers it registered until the image referencing them is recorded.
    pub fn lease(&self, chain_id: &Digest) -> Result<LayerLease> {
        let path = self.layer_dir(chain_id)?.join(META_FILE);
        let lease = match LayerLease::lock(&path, chain_id.clone()) {
            Err(LayerError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                return Err(LayerError::NotFound {
                    chain_id: chain_id.clone(),
                });
            }
            other => other?,
        };
        // A removal may have moved the layer away while we waited for the lock.
        let same = fs::metadata(&path).ok().is_some_and(|now| {
            lease
                ._file
                .metadata()
                .is_ok_and(|locked| locked.ino() == now.ino() && locked.dev() == now.dev())
        });
        if !same {
            return Err(LayerError::NotFound {
                chain_id: chain_id.clone(),
            });
        }
        Ok(lease)
    }

    /// [`LayerStore::stage`] then [`LayerStore::commit_leased`].
    pub fn register_leased(
        &self,
        parent: Option<&Digest>,
        tar: impl Read,
        options: &StageOptions,
    ) -> Result<(Layer, LayerLease)> {
        let staged = self.stage(tar, options)?;
        self.commit_leased(parent, staged)
    }

    /// [`LayerStore::stage`] then [`LayerStore::commit`].
    pub fn register(
        &self,
        parent: Option<&Digest>,
        tar: impl Read,
        options: &StageOptions,
    ) -> Result<Layer> {
        let staged = self.stage(tar, options)?;
        self.commit(parent, staged)
    }

    /// The layer with this ChainID, if the store has it.
    pub fn get(&self, chain_id: &Digest) -> Result<Option<Layer>> {
        Ok(self.meta(chain_id)?.map(layer_from))
    }

    /// Reads a layer's metadata, checking it names the layer it is stored as.
    pub(crate) fn meta(&self, chain_id: &Digest) -> Result<Option<Meta>> {
        let path = self.layer_dir(chain_id)?.join(META_FILE);
        let Some(meta) = manifest::read_meta(&path)? else {
            return Ok(None);
        };
        if meta.chain_id != *chain_id {
            return Err(LayerError::Corrupt {
                path,
                reason: format!("it describes layer {} instead", meta.chain_id),
            });
        }
        Ok(Some(meta))
    }

    /// The manifest of layer `chain_id`.
    pub(crate) fn manifest(&self, chain_id: &Digest) -> Result<manifest::Manifest> {
        manifest::read_manifest(&self.layer_dir(chain_id)?.join(MANIFEST_FILE))
    }

    /// The ChainIDs of every layer directory in the store, including corrupt ones (for `fsck`).
    pub fn chain_ids(&self) -> Result<Vec<Digest>> {
        let entries = fs::read_dir(&self.layers)
            .map_err(|e| LayerError::io(format!("listing {}", self.layers.display()), e))?;
        let mut ids = Vec::new();
        for entry in entries {
            let entry = entry
                .map_err(|e| LayerError::io(format!("listing {}", self.layers.display()), e))?;
            match entry
                .file_name()
                .to_str()
                .map(|hex| Digest::try_from(format!("sha256:{hex}")))
            {
                Some(Ok(id)) => ids.push(id),
                _ => {
                    warn!(path = %entry.path().display(), "ignoring a foreign entry in the layer store")
                }
            }
        }
        ids.sort_by(|a, b| a.as_ref().cmp(b.as_ref()));
        Ok(ids)
    }

    /// Every readable layer in the store. Layers whose metadata is corrupt are skipped with a
    /// warning (see [`LayerStore::chain_ids`] and [`LayerStore::verify`] to find them).
    pub fn list(&self) -> Result<Vec<Layer>> {
        let mut layers = Vec::new();
        for id in self.chain_ids()? {
            match self.get(&id) {
                Ok(Some(layer)) => layers.push(layer),
                Ok(None) => {} // Removed meanwhile.
                Err(e) => warn!(chain_id = %id, error = %e, "skipping unreadable layer"),
            }
        }
        Ok(layers)
    }

    /// The chain ending at `top`, base layer first (what [`LayerStore::unpack`] takes).
    pub fn chain(&self, top: &Digest) -> Result<Vec<Layer>> {
        let mut chain = Vec::new();
        let mut next = Some(top.clone());
        while let Some(id) = next {
            let layer = self
                .get(&id)?
                .ok_or(LayerError::NotFound { chain_id: id })?;
            next = layer.parent.clone();
            chain.push(layer);
            if chain.len() > 100_000 {
                return Err(LayerError::Corrupt {
                    path: self.layers.clone(),
                    reason: "parent chain loops".into(),
                });
            }
        }
        chain.reverse();
        Ok(chain)
    }

    /// Removes layer `chain_id`. Refused while another layer has it as parent
    /// ([`LayerError::HasChildren`]) or while a [`LayerLease`] on it is held, by any process
    /// ([`LayerError::InUse`]). The layer disappears atomically (renamed away, then deleted).
    ///
    /// Whether an image or a running pull still needs the layer is the caller's to know (the
    /// store's metadata keeps those references).
    pub fn remove(&self, chain_id: &Digest) -> Result<()> {
        let dir = self.layer_dir(chain_id)?;
        if self.get(chain_id)?.is_none() {
            return Err(LayerError::NotFound {
                chain_id: chain_id.clone(),
            });
        }
        if let Some(child) = self
            .list()?
            .into_iter()
            .find(|l| l.parent.as_ref() == Some(chain_id))
        {
            return Err(LayerError::HasChildren {
                chain_id: chain_id.clone(),
                child: child.chain_id,
            });
        }
        // Leases hold a shared lock on the metadata file: take it exclusively for the removal.
        let meta_path = dir.join(META_FILE);
        let lock = File::open(&meta_path)
            .map_err(|e| LayerError::io(format!("opening {}", meta_path.display()), e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(LayerError::InUse {
                    chain_id: chain_id.clone(),
                });
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(LayerError::io(
                    format!("locking {}", meta_path.display()),
                    e,
                ));
            }
        }
        let staging = Staging::reserve(&self.tmp, "remove")?;
        match fs::rename(&dir, &staging.dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(LayerError::NotFound {
                    chain_id: chain_id.clone(),
                });
            }
            Err(e) => return Err(LayerError::io(format!("moving {} away", dir.display()), e)),
        }
        sync_dir(&self.layers)?;
        drop(lock);
        drop(staging); // Removes the tree.
        Ok(())
    }

    /// Re-checks layer `chain_id` against what was recorded when it was extracted; see
    /// [`VerifyReport`] for what is checked. Reads every file: as slow as reading the layer.
    pub fn verify(&self, chain_id: &Digest) -> Result<VerifyReport> {
        let dir = self.layer_dir(chain_id)?;
        if !dir.exists() {
            return Err(LayerError::NotFound {
                chain_id: chain_id.clone(),
            });
        }
        verify::verify(self, chain_id, &dir.join(DIFF_DIR))
    }

    /// Flattens `layers` (a chain, base first, as [`LayerStore::chain`] returns) into `dir`,
    /// which is created, or must be an empty directory. Whiteouts and opaque directories of each
    /// layer hide what the layers below put there; modes, owners (when privileged), symlinks,
    /// hard links, mtimes and xattrs are reproduced. Files are independent copies. On error, what
    /// was written to `dir` is removed again.
    pub fn unpack(&self, layers: &[Layer], dir: &Path, options: &UnpackOptions) -> Result<()> {
        super::unpack::unpack(self, layers, dir, options)
    }
}

fn layer_from(meta: Meta) -> Layer {
    Layer {
        diff_id: meta.diff_id,
        chain_id: meta.chain_id,
        parent: meta.parent,
        size: meta.size,
    }
}
