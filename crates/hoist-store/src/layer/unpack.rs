//! Flattening a chain of layers into one plain directory tree.
//!
//! Layers are applied base first. For each layer, its opaque directories are emptied of what
//! the layers below put there and its whiteouts remove the paths they name, then its own paths
//! are copied on top, as overlay filesystems present them:
//!
//! - a directory over a directory merges (the upper layer's declared mode, owner and mtime win;
//!   a directory the upper layer only implies keeps the lower one's metadata);
//! - anything else replaces what was there (a directory below is removed with its contents);
//! - hard links within a layer are hard links in the result; files are independent copies
//!   (`copy_file_range` where the filesystem allows), so the result can be modified freely.
//!
//! Nothing is ever written through a symlink: the destination is walked with the same
//! no-follow descriptor logic as extraction, so a symlink left by a lower layer is replaced,
//! never followed. Directory modes and mtimes are applied last, deepest first.

use std::collections::{BTreeMap, HashMap};
use std::ffi::CStr;
use std::fs::{self, File};
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use tracing::warn;

use super::error::{LayerError, Result};
use super::manifest::{self, Kind, Node};
use super::path::display_name;
use super::store::LayerStore;
use super::sys;
use super::tree::{self, Tree, WalkError};
use super::{Layer, UnpackOptions};

pub(crate) fn unpack(
    store: &LayerStore,
    layers: &[Layer],
    dest: &Path,
    options: &UnpackOptions,
) -> Result<()> {
    for (index, layer) in layers.iter().enumerate() {
        let expected = index.checked_sub(1).map(|i| &layers[i].chain_id);
        if layer.parent.as_ref() != expected {
            return Err(LayerError::BrokenChain {
                index,
                chain_id: layer.chain_id.clone(),
            });
        }
    }
    let created = prepare_destination(dest)?;
    let result = Tree::open(dest)
        .map_err(|e| LayerError::io(format!("opening {}", dest.display()), e))
        .and_then(|tree| {
            let root = sys::fstat(tree.root())
                .map_err(|e| LayerError::io(format!("inspecting {}", dest.display()), e))?;
            let mut unpacker = Unpacker {
                dest: tree,
                privileged: !options.rootless,
                dirs: BTreeMap::new(),
                groups: HashMap::new(),
                default_owner: (root.perm & 0o2000 == 0).then(sys::effective_ids),
            };
            for layer in layers {
                unpacker.layer(store, layer)?;
            }
            unpacker.apply_directory_metadata()
        });
    if result.is_err() {
        let cleanup = if created {
            tree::remove_tree(dest)
        } else {
            tree::open_dir_path(dest).and_then(|fd| tree::clear_dir(fd.as_fd()))
        };
        if let Err(e) = cleanup {
            warn!(dir = %dest.display(), error = %e, "could not clean up after a failed unpack");
        }
    }
    result
}

/// Creates `dest`, or checks it is an empty directory. Returns whether it was created.
fn prepare_destination(dest: &Path) -> Result<bool> {
    match fs::symlink_metadata(dest) {
        Ok(m) if m.is_dir() => {
            let mut entries = fs::read_dir(dest)
                .map_err(|e| LayerError::io(format!("listing {}", dest.display()), e))?;
            if entries.next().is_some() {
                return Err(LayerError::DestinationNotEmpty {
                    path: dest.to_path_buf(),
                });
            }
            Ok(false)
        }
        Ok(_) => Err(LayerError::DestinationNotEmpty {
            path: dest.to_path_buf(),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::create_dir(dest)
                .map_err(|e| LayerError::io(format!("creating {}", dest.display()), e))?;
            Ok(true)
        }
        Err(e) => Err(LayerError::io(format!("inspecting {}", dest.display()), e)),
    }
}

struct Unpacker {
    dest: Tree,
    privileged: bool,
    /// Directories of the result whose mode and mtime are applied at the end.
    dirs: BTreeMap<PathBuf, Node>,
    /// Within the current layer: hard link group -> first path written for it.
    groups: HashMap<u64, PathBuf>,
    /// Who owns what this process creates in the destination (`None` under a setgid root).
    default_owner: Option<(u32, u32)>,
}

/// Permission bits to apply for a declared mode.
fn unpack_mode(mode: u32, privileged: bool) -> u32 {
    if privileged {
        mode & 0o7777
    } else {
        mode & 0o1777
    }
}

fn corrupt_walk(layer: &Layer, path: &Path, err: WalkError) -> LayerError {
    let what = match err {
        WalkError::Io(at, e) => {
            return LayerError::io(
                format!("unpacking `{}` (at `{}`)", path.display(), at.display()),
                e,
            );
        }
        WalkError::Symlink(at) | WalkError::NotDir(at) | WalkError::Missing(at) => at,
    };
    LayerError::Corrupt {
        path: path.to_path_buf(),
        reason: format!(
            "layer {} records `{}` but `{}` is not a directory where it should be",
            layer.chain_id,
            path.display(),
            what.display()
        ),
    }
}

/// Creates with `create`; if something is in the way, removes it and tries once more.
fn create_replacing(
    dir: BorrowedFd<'_>,
    name: &CStr,
    mut create: impl FnMut() -> io::Result<()>,
) -> io::Result<bool> {
    match create() {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let removed = tree::remove_all_at(dir, name)?;
            create()?;
            Ok(removed)
        }
        other => other.map(|()| false),
    }
}

impl Unpacker {
    fn layer(&mut self, store: &LayerStore, layer: &Layer) -> Result<()> {
        let meta = store
            .meta(&layer.chain_id)?
            .ok_or_else(|| LayerError::NotFound {
                chain_id: layer.chain_id.clone(),
            })?;
        let manifest = store.manifest(&layer.chain_id)?;
        let diff = store.diff_dir(&layer.chain_id)?;
        let mut src = Tree::open(&diff)
            .map_err(|e| LayerError::io(format!("opening {}", diff.display()), e))?;

        for dir in &meta.opaques {
            if let Ok(fd) = self.dest.dir(dir, false, &mut Vec::new()) {
                tree::clear_dir(fd).map_err(|e| {
                    LayerError::io(format!("applying opaque directory `{}`", dir.display()), e)
                })?;
            }
            self.dest.forget(dir);
            manifest::remove_children(&mut self.dirs, dir);
        }
        for hidden in &meta.whiteouts {
            let Some((parent, name)) = tree::split(hidden) else {
                continue;
            };
            if let Ok(fd) = self.dest.dir(parent, false, &mut Vec::new()) {
                let name =
                    tree::c_name(name).map_err(|e| LayerError::io("applying a whiteout", e))?;
                tree::remove_all_at(fd, &name).map_err(|e| {
                    LayerError::io(format!("applying whiteout of `{}`", hidden.display()), e)
                })?;
            }
            self.dest.forget(hidden);
            manifest::remove_subtree(&mut self.dirs, hidden);
        }

        self.groups.clear();
        for (path, node) in &manifest {
            self.entry(layer, &mut src, path, node)?;
        }
        Ok(())
    }

    fn entry(&mut self, layer: &Layer, src: &mut Tree, path: &Path, node: &Node) -> Result<()> {
        let shown = display_name(path.as_os_str().as_bytes());
        let io_err = |e| {
            LayerError::io(
                format!("unpacking `{shown}` of layer {}", layer.chain_id),
                e,
            )
        };
        let Some((parent, name)) = tree::split(path) else {
            // The layer root: its metadata applies to the destination itself.
            if node.mtime.is_some() {
                self.owner_and_xattrs(self.dest.root(), node, &shown, false);
                self.dirs.insert(PathBuf::new(), node.clone());
            }
            return Ok(());
        };
        let name = tree::c_name(name).map_err(io_err)?;
        let privileged = self.privileged;
        let removed_dir;
        match node.kind {
            Kind::Dir => {
                let candidate_owner = self.owner_for(node, false, &shown);
                let dir = self
                    .dest
                    .dir(parent, false, &mut Vec::new())
                    .map_err(|e| corrupt_walk(layer, path, e))?;
                let (fresh, removed) = match sys::mkdir_at(dir, &name, 0o700) {
                    Ok(()) => (true, false),
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                        match sys::stat_at(dir, &name).map_err(io_err)? {
                            Some(st) if st.kind == sys::FileKind::Dir => (false, false),
                            _ => {
                                let removed = tree::remove_all_at(dir, &name).map_err(io_err)?;
                                sys::mkdir_at(dir, &name, 0o700).map_err(io_err)?;
                                (true, removed)
                            }
                        }
                    }
                    Err(e) => return Err(io_err(e)),
                };
                let explicit = node.mtime.is_some();
                let owner = candidate_owner.filter(|o| !fresh || self.default_owner != Some(*o));
                if explicit && (owner.is_some() || !node.xattrs.is_empty()) {
                    let fd = sys::open_dir_at(dir, &name).map_err(io_err)?;
                    self.owner_and_xattrs(fd.as_fd(), node, &shown, fresh);
                }
                removed_dir = removed;
                if removed_dir {
                    self.dest.forget(path);
                    manifest::remove_subtree(&mut self.dirs, path);
                }
                if fresh || explicit {
                    self.dirs.insert(path.to_path_buf(), node.clone());
                }
                return Ok(());
            }
            Kind::File => {
                if let Some(first) = self.groups.get(&node.inode) {
                    let (first_parent, first_name) =
                        tree::split(first).unwrap_or((Path::new(""), path.as_os_str()));
                    let first_dir = self
                        .dest
                        .dir_owned(first_parent)
                        .map_err(|e| corrupt_walk(layer, path, e))?;
                    let first_name = tree::c_name(first_name).map_err(io_err)?;
                    let dir = self
                        .dest
                        .dir(parent, false, &mut Vec::new())
                        .map_err(|e| corrupt_walk(layer, path, e))?;
                    removed_dir = create_replacing(dir, &name, || {
                        sys::link_at(first_dir.as_fd(), &first_name, dir, &name)
                    })
                    .map_err(io_err)?;
                } else {
                    let src_dir = src
                        .dir(parent, false, &mut Vec::new())
                        .map_err(|e| corrupt_walk(layer, path, e))?;
                    let mut source = sys::open_file_at(src_dir, &name).map_err(io_err)?;
                    let dir = self
                        .dest
                        .dir(parent, false, &mut Vec::new())
                        .map_err(|e| corrupt_walk(layer, path, e))?;
                    let mut created: Option<File> = None;
                    removed_dir = create_replacing(dir, &name, || {
                        created = Some(sys::create_file_at(dir, &name, 0o600)?);
                        Ok(())
                    })
                    .map_err(io_err)?;
                    let Some(mut file) = created else {
                        return Err(io_err(io::Error::other("file was not created")));
                    };
                    let copied = io::copy(&mut source, &mut file).map_err(io_err)?;
                    if copied != node.size {
                        return Err(LayerError::Corrupt {
                            path: path.to_path_buf(),
                            reason: format!(
                                "layer {} holds {copied} bytes, {} recorded",
                                layer.chain_id, node.size
                            ),
                        });
                    }
                    let fd = file.as_fd();
                    self.owner_and_xattrs(fd, node, &shown, true);
                    sys::chmod_fd(fd, unpack_mode(node.mode, privileged)).map_err(io_err)?;
                    if let Some(t) = node.mtime {
                        sys::set_times_fd(fd, t, t).map_err(io_err)?;
                    }
                    self.groups.insert(node.inode, path.to_path_buf());
                }
            }
            Kind::Symlink => {
                let owner = self.owner_for(node, true, &shown);
                let target = sys::cstring(&node.target).map_err(io_err)?;
                let dir = self
                    .dest
                    .dir(parent, false, &mut Vec::new())
                    .map_err(|e| corrupt_walk(layer, path, e))?;
                removed_dir = create_replacing(dir, &name, || sys::symlink_at(&target, dir, &name))
                    .map_err(io_err)?;
                if let Some((uid, gid)) = owner
                    && let Err(e) = sys::chown_at(dir, &name, uid, gid)
                {
                    warn!(entry = %shown, error = %e, "could not set owner");
                }
                if privileged {
                    for (xname, value) in &node.xattrs {
                        if let Err(e) = sys::cstring(xname)
                            .and_then(|x| sys::set_xattr_symlink_at(dir, &name, &x, value))
                        {
                            warn!(entry = %shown, error = %e, "could not set xattr");
                        }
                    }
                }
                if let Some(t) = node.mtime {
                    sys::set_times_at(dir, &name, t, t).map_err(io_err)?;
                }
            }
            Kind::CharDevice | Kind::BlockDevice | Kind::Fifo => {
                let owner = self.owner_for(node, true, &shown);
                let type_bits = match node.kind {
                    Kind::CharDevice => libc::S_IFCHR,
                    Kind::BlockDevice => libc::S_IFBLK,
                    _ => libc::S_IFIFO,
                };
                if node.kind != Kind::Fifo && !privileged {
                    warn!(entry = %shown, "skipping device node: creating it needs privileges");
                    return Ok(());
                }
                let dir = self
                    .dest
                    .dir(parent, false, &mut Vec::new())
                    .map_err(|e| corrupt_walk(layer, path, e))?;
                let made = create_replacing(dir, &name, || {
                    sys::mknod_at(dir, &name, type_bits | 0o600, node.rdev.0, node.rdev.1)
                });
                removed_dir = match made {
                    Ok(removed) => removed,
                    Err(e)
                        if e.kind() == io::ErrorKind::PermissionDenied
                            && node.kind != Kind::Fifo =>
                    {
                        warn!(entry = %shown, error = %e, "skipping device node: not permitted here");
                        self.dest.forget(path);
                        manifest::remove_subtree(&mut self.dirs, path);
                        return Ok(());
                    }
                    Err(e) => return Err(io_err(e)),
                };
                if let Some((uid, gid)) = owner
                    && let Err(e) = sys::chown_at(dir, &name, uid, gid)
                {
                    warn!(entry = %shown, error = %e, "could not set owner");
                }
                sys::chmod_at(dir, &name, unpack_mode(node.mode, privileged)).map_err(io_err)?;
                if let Some(t) = node.mtime {
                    sys::set_times_at(dir, &name, t, t).map_err(io_err)?;
                }
            }
        }
        if removed_dir {
            self.dest.forget(path);
        }
        // A non-directory now stands at `path`: no directory metadata applies there any more.
        manifest::remove_subtree(&mut self.dirs, path);
        Ok(())
    }

    /// The owner to set on an object (`fresh`: just created by this process), when privileged
    /// and not already owned that way.
    fn owner_for(&self, node: &Node, fresh: bool, shown: &str) -> Option<(u32, u32)> {
        if !self.privileged {
            return None;
        }
        let (Ok(uid), Ok(gid)) = (u32::try_from(node.uid), u32::try_from(node.gid)) else {
            warn!(
                entry = shown,
                uid = node.uid,
                gid = node.gid,
                "owner out of range, not set"
            );
            return None;
        };
        (!fresh || self.default_owner != Some((uid, gid))).then_some((uid, gid))
    }

    /// Applies owner (when privileged) and xattrs to an open object; failures are warnings.
    fn owner_and_xattrs(&self, fd: BorrowedFd<'_>, node: &Node, shown: &str, fresh: bool) {
        if let Some((uid, gid)) = self.owner_for(node, fresh, shown)
            && let Err(e) = sys::chown_fd(fd, uid, gid)
        {
            warn!(entry = shown, error = %e, "could not set owner");
        }
        for (name, value) in &node.xattrs {
            if !super::extract::xattr_allowed(name, self.privileged) {
                continue;
            }
            if let Err(e) = sys::cstring(name).and_then(|n| sys::set_xattr_fd(fd, &n, value)) {
                warn!(entry = shown, xattr = %String::from_utf8_lossy(name), error = %e, "could not set xattr");
            }
        }
    }

    fn apply_directory_metadata(&mut self) -> Result<()> {
        let dirs = std::mem::take(&mut self.dirs);
        for (path, node) in dirs.iter().rev() {
            let shown = display_name(path.as_os_str().as_bytes());
            let io_err = |e| LayerError::io(format!("setting metadata of directory `{shown}`"), e);
            let fd = match self.dest.dir(path, false, &mut Vec::new()) {
                Ok(fd) => fd,
                Err(WalkError::Io(_, e)) => return Err(io_err(e)),
                Err(_) => continue,
            };
            sys::chmod_fd(fd, unpack_mode(node.mode, self.privileged)).map_err(io_err)?;
            if let Some(t) = node.mtime {
                sys::set_times_fd(fd, t, t).map_err(io_err)?;
            }
        }
        Ok(())
    }
}
