//! Extraction of one layer's tar stream into a private directory, hashing the stream (the
//! DiffID) as it goes.
//!
//! Every entry is placed relative to descriptors of its parent directories, opened one component
//! at a time without following symlinks ([`super::tree`]); names are sanitised first
//! ([`super::path`]). So no entry can write outside the layer directory: an escaping `..`, a
//! write through any symlink of the layer (whatever it points to), a hard link to anything but an
//! earlier non-directory entry of the same layer, all stop extraction with a typed error naming
//! the entry. An entry over an existing path replaces it (a directory over a directory merges),
//! as tar does; nothing is ever written beneath a non-directory.
//!
//! Speed: no per-file fsync (the store syncs the filesystem once, before the layer is renamed
//! into place), 1 MiB reads and writes, and a descriptor cache so that most entries cost one
//! create, the writes, and two or three metadata calls. Directory modes and times are applied
//! once at the end, deepest first, so that restrictive modes and child creation do not interfere.
//!
//! Privileges: when extraction is privileged (root, unless the options say rootless), owners,
//! setuid/setgid bits, device nodes and all xattrs are applied. Rootless extraction skips device
//! nodes (with a warning), applies only `user.*` xattrs, drops setuid/setgid and keeps owner
//! read/write (and search for directories) on everything so the store can read and remove what
//! it wrote; the declared modes are kept in the manifest, which is what unpack applies.

use std::collections::BTreeSet;
use std::ffi::CStr;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};
use tracing::warn;

use super::StageOptions;
use super::error::{LayerError, Result};
use super::manifest::{self, Kind, Manifest, Node};
use super::path::{PathError, display_name, sanitize};
use super::sys::{self, Timestamp};
use super::tarstream::{EntryKind, TarEntry, TarReader};
use super::tree::{self, Tree, WalkError};
use super::whiteout::{self, Whiteout};

const COPY_BUFFER: usize = 1 << 20;

/// What extracting one tar stream produced.
#[derive(Debug)]
pub(crate) struct Extracted {
    /// sha256 of every byte of the stream.
    pub diff_id: [u8; 32],
    /// Bytes in the stream.
    pub size: u64,
    pub manifest: Manifest,
    pub whiteouts: Vec<PathBuf>,
    pub opaques: Vec<PathBuf>,
    pub privileged: bool,
}

/// The permission bits to put on disk for a declared mode.
pub(crate) fn disk_mode(kind: Kind, mode: u32, privileged: bool) -> u32 {
    if privileged {
        return mode & 0o7777;
    }
    let base = mode & 0o1777;
    match kind {
        Kind::Dir => base | 0o700,
        Kind::File => base | 0o600,
        _ => base,
    }
}

/// Whether an xattr may be applied: everything when privileged, `user.*` otherwise.
pub(crate) fn xattr_allowed(name: &[u8], privileged: bool) -> bool {
    privileged || name.starts_with(b"user.")
}

/// Extracts the tar stream `reader` into the existing, empty directory `root`.
pub(crate) fn extract<R: Read>(
    reader: R,
    root: &Path,
    options: &StageOptions,
) -> Result<Extracted> {
    let tree =
        Tree::open(root).map_err(|e| LayerError::io(format!("opening {}", root.display()), e))?;
    let mut x = Extractor {
        tree,
        manifest: Manifest::new(),
        whiteouts: BTreeSet::new(),
        opaques: BTreeSet::new(),
        privileged: !options.rootless,
        next_inode: 1,
        file_bytes: 0,
        max_bytes: options.max_bytes,
        entries: 0,
        max_entries: options.max_entries,
        buf: vec![0; COPY_BUFFER],
        created: Vec::new(),
        skipped: BTreeSet::new(),
        default_owner: None,
    };
    let root_stat = sys::fstat(x.tree.root())
        .map_err(|e| LayerError::io(format!("inspecting {}", root.display()), e))?;
    if root_stat.perm & 0o2000 == 0 {
        x.default_owner = Some(sys::effective_ids());
    }
    let mut tar = TarReader::new(reader, options.max_bytes);
    while let Some(entry) = tar.next_entry()? {
        x.entry(&mut tar, entry)?;
    }
    let (diff_id, size) = tar.finish()?;
    x.apply_directory_metadata()?;
    Ok(Extracted {
        diff_id,
        size,
        manifest: x.manifest,
        whiteouts: x.whiteouts.into_iter().collect(),
        opaques: x.opaques.into_iter().collect(),
        privileged: x.privileged,
    })
}

struct Extractor {
    tree: Tree,
    manifest: Manifest,
    whiteouts: BTreeSet<PathBuf>,
    opaques: BTreeSet<PathBuf>,
    privileged: bool,
    next_inode: u64,
    file_bytes: u64,
    max_bytes: u64,
    entries: u64,
    max_entries: u64,
    buf: Vec<u8>,
    created: Vec<PathBuf>,
    /// Paths skipped for lack of privileges (hard links to them are skipped too).
    skipped: BTreeSet<PathBuf>,
    /// Who owns what this process creates in the tree (`None` if a setgid root makes the group
    /// unpredictable): chown is skipped for entries owned that way.
    default_owner: Option<(u32, u32)>,
}

/// Maps a walk failure for entry `entry` to the error a user sees.
fn walk_error(entry: &str, err: WalkError) -> LayerError {
    let shown = |p: &Path| display_name(p.as_os_str().as_bytes());
    match err {
        WalkError::Symlink(c) => LayerError::ThroughSymlink {
            entry: entry.to_owned(),
            component: shown(&c),
        },
        WalkError::NotDir(c) => LayerError::ThroughNonDirectory {
            entry: entry.to_owned(),
            component: shown(&c),
        },
        WalkError::Missing(c) => LayerError::InvalidEntry {
            entry: entry.to_owned(),
            reason: format!("parent `{}` vanished during extraction", shown(&c)),
        },
        WalkError::Io(c, e) => {
            LayerError::io(format!("extracting `{entry}` (at `{}`)", shown(&c)), e)
        }
    }
}

fn hard_link_reason(err: &PathError) -> &'static str {
    match err {
        PathError::Escapes => "leaves the layer root",
        PathError::TooLong { .. } | PathError::ComponentTooLong { .. } | PathError::TooDeep => {
            "is too long"
        }
        _ => "is not a valid name",
    }
}

/// Creates something at `name` in `dir` with `create`; if something is already there, removes
/// it (recursively) and tries once more. Returns whether a directory was removed.
fn create_replacing(
    dir: BorrowedFd<'_>,
    name: &CStr,
    mut create: impl FnMut() -> std::io::Result<()>,
) -> std::io::Result<bool> {
    match create() {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let removed_dir = tree::remove_all_at(dir, name)?;
            create()?;
            Ok(removed_dir)
        }
        other => other.map(|()| false),
    }
}

impl Extractor {
    fn entry<R: Read>(&mut self, tar: &mut TarReader<R>, entry: TarEntry) -> Result<()> {
        self.entries += 1;
        if self.entries > self.max_entries {
            return Err(LayerError::LimitExceeded {
                limit: self.max_entries,
                what: "entries",
            });
        }
        let shown = display_name(&entry.name);
        let path = sanitize(&entry.name).map_err(|reason| LayerError::BadName {
            entry: shown.clone(),
            reason,
        })?;

        match whiteout::classify(&path) {
            Ok(None) => {}
            Ok(Some(Whiteout::Remove(hidden))) => {
                // The whiteout's directory exists in this layer (as it would in an overlay upper dir).
                let parent = hidden.parent().unwrap_or(Path::new("")).to_path_buf();
                self.ensure_dir(&parent, &shown)?;
                self.whiteouts.insert(hidden);
                return Ok(());
            }
            Ok(Some(Whiteout::Opaque(dir))) => {
                self.ensure_dir(&dir, &shown)?;
                self.opaques.insert(dir);
                return Ok(());
            }
            Ok(Some(Whiteout::Ignored)) => return Ok(()),
            Err(reason) => {
                return Err(LayerError::InvalidEntry {
                    entry: shown,
                    reason: reason.into(),
                });
            }
        }

        let Some((parent, name)) = tree::split(&path) else {
            return self.root_entry(&entry, &shown);
        };
        let c_name =
            tree::c_name(name).map_err(|e| LayerError::io(format!("extracting `{shown}`"), e))?;
        let parent = parent.to_path_buf();
        match entry.kind {
            EntryKind::Dir => self.directory(&entry, &path, &parent, &c_name, &shown),
            EntryKind::File => self.file(tar, &entry, &path, &parent, &c_name, &shown),
            EntryKind::Symlink => self.symlink(&entry, &path, &parent, &c_name, &shown),
            EntryKind::HardLink => self.hard_link(&entry, &path, &parent, &c_name, &shown),
            EntryKind::CharDevice | EntryKind::BlockDevice | EntryKind::Fifo => {
                self.special(&entry, &path, &parent, &c_name, &shown)
            }
        }
    }

    /// Opens (creating when missing) the directory `dir`, recording created directories.
    fn parent_fd(&mut self, dir: &Path, shown: &str) -> Result<BorrowedFd<'_>> {
        self.created.clear();
        let fd = self
            .tree
            .dir(dir, true, &mut self.created)
            .map_err(|e| walk_error(shown, e))?;
        for p in self.created.drain(..) {
            self.manifest.insert(p, Node::implicit_dir());
        }
        Ok(fd)
    }

    fn ensure_dir(&mut self, dir: &Path, shown: &str) -> Result<()> {
        self.parent_fd(dir, shown).map(|_| ())
    }

    /// Bookkeeping after `path` was (re)created: a removed directory takes its subtree along.
    fn replaced(&mut self, path: &Path, removed_dir: bool) {
        if removed_dir {
            self.tree.forget(path);
            manifest::remove_subtree(&mut self.manifest, path);
        }
    }

    fn times(entry: &TarEntry) -> (Timestamp, Timestamp) {
        (entry.atime.unwrap_or(entry.mtime), entry.mtime)
    }

    fn node(&self, entry: &TarEntry, kind: Kind) -> Node {
        Node {
            kind,
            mode: entry.mode & 0o7777,
            uid: entry.uid,
            gid: entry.gid,
            mtime: Some(entry.mtime),
            size: 0,
            sha256: None,
            inode: 0,
            target: Vec::new(),
            rdev: (entry.dev_major, entry.dev_minor),
            xattrs: Vec::new(),
        }
    }

    /// The owner to apply to a new object, `None` when nothing needs doing (rootless, or the
    /// object is already owned that way as a new object of this process).
    fn owner_to_set(&self, entry: &TarEntry, shown: &str) -> Result<Option<(u32, u32)>> {
        if !self.privileged {
            return Ok(None);
        }
        let owner = Self::owner(entry, shown)?;
        Ok((Some(owner) != self.default_owner).then_some(owner))
    }

    fn owner(entry: &TarEntry, shown: &str) -> Result<(u32, u32)> {
        let uid = u32::try_from(entry.uid).map_err(|_| LayerError::InvalidEntry {
            entry: shown.to_owned(),
            reason: format!("uid {} is out of range", entry.uid),
        })?;
        let gid = u32::try_from(entry.gid).map_err(|_| LayerError::InvalidEntry {
            entry: shown.to_owned(),
            reason: format!("gid {} is out of range", entry.gid),
        })?;
        Ok((uid, gid))
    }

    /// Applies the allowed xattrs through `apply`, returning those that took.
    fn xattrs(
        entry: &TarEntry,
        privileged: bool,
        shown: &str,
        mut apply: impl FnMut(&CStr, &[u8]) -> std::io::Result<()>,
    ) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut applied = Vec::new();
        for (name, value) in &entry.xattrs {
            if !xattr_allowed(name, privileged) {
                warn!(entry = shown, xattr = %String::from_utf8_lossy(name), "skipping xattr that needs privileges");
                continue;
            }
            let Ok(c) = sys::cstring(name) else {
                warn!(entry = shown, "skipping xattr with a NUL in its name");
                continue;
            };
            match apply(&c, value) {
                Ok(()) => applied.push((name.clone(), value.clone())),
                Err(e) => {
                    warn!(entry = shown, xattr = %String::from_utf8_lossy(name), error = %e, "could not set xattr")
                }
            }
        }
        applied
    }

    fn root_entry(&mut self, entry: &TarEntry, shown: &str) -> Result<()> {
        if entry.kind != EntryKind::Dir {
            return Err(LayerError::InvalidEntry {
                entry: shown.to_owned(),
                reason: "only a directory can stand for the layer root".into(),
            });
        }
        let mut node = self.node(entry, Kind::Dir);
        let privileged = self.privileged;
        let root = self.tree.root();
        if privileged {
            let (uid, gid) = Self::owner(entry, shown)?;
            if let Err(e) = sys::chown_fd(root, uid, gid) {
                warn!(entry = shown, error = %e, "could not set owner");
            }
        }
        node.xattrs = Self::xattrs(entry, privileged, shown, |n, v| {
            sys::set_xattr_fd(root, n, v)
        });
        self.manifest.insert(PathBuf::new(), node);
        Ok(())
    }

    fn directory(
        &mut self,
        entry: &TarEntry,
        path: &Path,
        parent: &Path,
        name: &CStr,
        shown: &str,
    ) -> Result<()> {
        let privileged = self.privileged;
        let mut owner = self.owner_to_set(entry, shown)?;
        let full_owner = if privileged {
            Some(Self::owner(entry, shown)?)
        } else {
            None
        };
        let mut node = self.node(entry, Kind::Dir);
        let io_err = |e| LayerError::io(format!("creating directory `{shown}`"), e);
        let dir = self.parent_fd(parent, shown)?;
        let removed = match sys::mkdir_at(dir, name, 0o700) {
            Ok(()) => false,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                match sys::stat_at(dir, name).map_err(io_err)? {
                    // A directory over a directory merges: only its metadata changes (its
                    // owner may be another entry's, so it is always set).
                    Some(st) if st.kind == sys::FileKind::Dir => {
                        owner = full_owner;
                        false
                    }
                    _ => {
                        let removed = tree::remove_all_at(dir, name).map_err(io_err)?;
                        sys::mkdir_at(dir, name, 0o700).map_err(io_err)?;
                        removed
                    }
                }
            }
            Err(e) => return Err(io_err(e)),
        };
        if owner.is_some() || !entry.xattrs.is_empty() {
            let fd = sys::open_dir_at(dir, name).map_err(io_err)?;
            if let Some((uid, gid)) = owner
                && let Err(e) = sys::chown_fd(fd.as_fd(), uid, gid)
            {
                warn!(entry = shown, error = %e, "could not set owner");
            }
            node.xattrs = Self::xattrs(entry, privileged, shown, |n, v| {
                sys::set_xattr_fd(fd.as_fd(), n, v)
            });
        }
        self.replaced(path, removed);
        // Mode and times are applied at the end (see `apply_directory_metadata`).
        self.manifest.insert(path.to_path_buf(), node);
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn file<R: Read>(
        &mut self,
        tar: &mut TarReader<R>,
        entry: &TarEntry,
        path: &Path,
        parent: &Path,
        name: &CStr,
        shown: &str,
    ) -> Result<()> {
        self.file_bytes = self.file_bytes.saturating_add(entry.size);
        if self.file_bytes > self.max_bytes {
            return Err(LayerError::LimitExceeded {
                limit: self.max_bytes,
                what: "bytes",
            });
        }
        let privileged = self.privileged;
        let owner = self.owner_to_set(entry, shown)?;
        let mut node = self.node(entry, Kind::File);
        node.size = entry.size;
        node.inode = self.next_inode;
        self.next_inode += 1;
        let io_err = |e| LayerError::io(format!("writing file `{shown}`"), e);

        let mut buf = std::mem::take(&mut self.buf);
        let dir = self.parent_fd(parent, shown)?;
        let mut file: Option<File> = None;
        let removed = create_replacing(dir, name, || {
            file = Some(sys::create_file_at(dir, name, 0o600)?);
            Ok(())
        })
        .map_err(io_err)?;
        let Some(mut file) = file else {
            return Err(io_err(std::io::Error::other("file was not created")));
        };
        let written = write_contents(tar, entry, &mut file, &mut buf).map_err(|e| match e {
            CopyError::Tar(e) => e,
            CopyError::Io(e) => io_err(e),
        });
        self.buf = buf;
        node.sha256 = Some(written?);

        let fd = file.as_fd();
        if let Some((uid, gid)) = owner
            && let Err(e) = sys::chown_fd(fd, uid, gid)
        {
            warn!(entry = shown, error = %e, "could not set owner");
        }
        sys::chmod_fd(fd, disk_mode(Kind::File, entry.mode, privileged)).map_err(io_err)?;
        node.xattrs = Self::xattrs(entry, privileged, shown, |n, v| sys::set_xattr_fd(fd, n, v));
        let (atime, mtime) = Self::times(entry);
        sys::set_times_fd(fd, atime, mtime).map_err(io_err)?;
        drop(file);
        self.replaced(path, removed);
        self.manifest.insert(path.to_path_buf(), node);
        Ok(())
    }

    fn symlink(
        &mut self,
        entry: &TarEntry,
        path: &Path,
        parent: &Path,
        name: &CStr,
        shown: &str,
    ) -> Result<()> {
        if entry.link.is_empty() {
            return Err(LayerError::InvalidEntry {
                entry: shown.to_owned(),
                reason: "symlink has an empty target".into(),
            });
        }
        if entry.link.len() > super::path::MAX_NAME_LEN {
            return Err(LayerError::BadName {
                entry: shown.to_owned(),
                reason: PathError::TooLong {
                    len: entry.link.len(),
                },
            });
        }
        let target = sys::cstring(&entry.link).map_err(|_| LayerError::InvalidEntry {
            entry: shown.to_owned(),
            reason: "symlink target contains a NUL byte".into(),
        })?;
        let privileged = self.privileged;
        let owner = self.owner_to_set(entry, shown)?;
        let mut node = self.node(entry, Kind::Symlink);
        node.mode = 0o777;
        node.target = entry.link.clone();
        let io_err = |e| LayerError::io(format!("creating symlink `{shown}`"), e);
        let dir = self.parent_fd(parent, shown)?;
        let removed =
            create_replacing(dir, name, || sys::symlink_at(&target, dir, name)).map_err(io_err)?;
        if let Some((uid, gid)) = owner
            && let Err(e) = sys::chown_at(dir, name, uid, gid)
        {
            warn!(entry = shown, error = %e, "could not set owner");
        }
        if privileged {
            node.xattrs = Self::xattrs(entry, privileged, shown, |n, v| {
                sys::set_xattr_symlink_at(dir, name, n, v)
            });
        } else if !entry.xattrs.is_empty() {
            warn!(
                entry = shown,
                "skipping xattrs on a symlink: they need privileges"
            );
        }
        let (atime, mtime) = Self::times(entry);
        sys::set_times_at(dir, name, atime, mtime).map_err(io_err)?;
        self.replaced(path, removed);
        self.manifest.insert(path.to_path_buf(), node);
        Ok(())
    }

    fn hard_link(
        &mut self,
        entry: &TarEntry,
        path: &Path,
        parent: &Path,
        name: &CStr,
        shown: &str,
    ) -> Result<()> {
        let target_shown = display_name(&entry.link);
        let bad = |reason: &'static str| LayerError::BadHardLink {
            entry: shown.to_owned(),
            target: target_shown.clone(),
            reason,
        };
        if entry.link.is_empty() {
            return Err(bad("is empty"));
        }
        let target = sanitize(&entry.link).map_err(|e| bad(hard_link_reason(&e)))?;
        let node = match self.manifest.get(&target) {
            Some(n) if n.kind == Kind::Dir => return Err(bad("is a directory")),
            Some(n) => n.clone(),
            None if self.skipped.contains(&target) => {
                warn!(entry = shown, target = %target_shown, "skipping hard link to a skipped device node");
                self.skipped.insert(path.to_path_buf());
                return Ok(());
            }
            None => return Err(bad("is not an earlier entry of this layer")),
        };
        if target == path {
            // A link to itself leaves the file as it is.
            return Ok(());
        }
        if target.starts_with(path) {
            return Err(bad("lies inside the entry it would replace"));
        }
        let Some((target_parent, target_name)) = tree::split(&target) else {
            return Err(bad("is the layer root"));
        };
        let target_name = tree::c_name(target_name)
            .map_err(|e| LayerError::io(format!("linking `{shown}`"), e))?;
        let target_dir = self
            .tree
            .dir_owned(target_parent)
            .map_err(|_| bad("cannot be reached without following a symlink"))?;
        let io_err = |e| {
            LayerError::io(
                format!("creating hard link `{shown}` to `{target_shown}`"),
                e,
            )
        };
        let dir = self.parent_fd(parent, shown)?;
        let removed = create_replacing(dir, name, || {
            sys::link_at(target_dir.as_fd(), &target_name, dir, name)
        })
        .map_err(io_err)?;
        self.replaced(path, removed);
        // Hard links share the target's inode, hence its metadata: the link header's mode and
        // times are not applied (they would change the target too).
        self.manifest.insert(path.to_path_buf(), node);
        Ok(())
    }

    fn special(
        &mut self,
        entry: &TarEntry,
        path: &Path,
        parent: &Path,
        name: &CStr,
        shown: &str,
    ) -> Result<()> {
        let (kind, type_bits) = match entry.kind {
            EntryKind::CharDevice => (Kind::CharDevice, libc::S_IFCHR),
            EntryKind::BlockDevice => (Kind::BlockDevice, libc::S_IFBLK),
            _ => (Kind::Fifo, libc::S_IFIFO),
        };
        let privileged = self.privileged;
        if kind != Kind::Fifo && !privileged {
            warn!(
                entry = shown,
                "skipping device node: creating it needs privileges"
            );
            self.skipped.insert(path.to_path_buf());
            return Ok(());
        }
        let owner = self.owner_to_set(entry, shown)?;
        let node = self.node(entry, kind);
        let io_err = |e| LayerError::io(format!("creating `{shown}`"), e);
        let dir = self.parent_fd(parent, shown)?;
        let created = create_replacing(dir, name, || {
            sys::mknod_at(
                dir,
                name,
                type_bits | 0o600,
                entry.dev_major,
                entry.dev_minor,
            )
        });
        let removed = match created {
            Ok(removed) => removed,
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied && kind != Kind::Fifo => {
                warn!(entry = shown, error = %e, "skipping device node: not permitted here");
                // Whatever was at this path is gone (the failed create came after its removal).
                self.tree.forget(path);
                manifest::remove_subtree(&mut self.manifest, path);
                self.skipped.insert(path.to_path_buf());
                return Ok(());
            }
            Err(e) => return Err(io_err(e)),
        };
        if let Some((uid, gid)) = owner
            && let Err(e) = sys::chown_at(dir, name, uid, gid)
        {
            warn!(entry = shown, error = %e, "could not set owner");
        }
        // Opening a device to fchmod it could have side effects: use the name, in our own
        // private directory where nothing can swap it for a symlink.
        sys::chmod_at(dir, name, disk_mode(kind, entry.mode, privileged)).map_err(io_err)?;
        let (atime, mtime) = Self::times(entry);
        sys::set_times_at(dir, name, atime, mtime).map_err(io_err)?;
        self.replaced(path, removed);
        self.manifest.insert(path.to_path_buf(), node);
        Ok(())
    }

    /// Applies every directory's mode and times, deepest first (children change a directory's
    /// mtime, and a restrictive mode would block creating them).
    fn apply_directory_metadata(&mut self) -> Result<()> {
        let privileged = self.privileged;
        let dirs: Vec<(PathBuf, u32, Option<Timestamp>)> = self
            .manifest
            .iter()
            .rev()
            .filter(|(_, n)| n.kind == Kind::Dir)
            .map(|(p, n)| (p.clone(), n.mode, n.mtime))
            .collect();
        let mut has_root = false;
        for (path, mode, mtime) in dirs {
            has_root |= path.as_os_str().is_empty();
            let shown = display_name(path.as_os_str().as_bytes());
            let fd = self
                .tree
                .dir(&path, false, &mut Vec::new())
                .map_err(|e| walk_error(&shown, e))?;
            let io_err = |e| LayerError::io(format!("setting metadata of directory `{shown}`"), e);
            sys::chmod_fd(fd, disk_mode(Kind::Dir, mode, privileged)).map_err(io_err)?;
            if let Some(t) = mtime {
                sys::set_times_fd(fd, t, t).map_err(io_err)?;
            }
        }
        if !has_root {
            sys::chmod_fd(self.tree.root(), 0o755)
                .map_err(|e| LayerError::io("setting the layer root's mode", e))?;
        }
        Ok(())
    }
}

enum CopyError {
    Tar(LayerError),
    Io(std::io::Error),
}

/// Writes the entry's data into `file` and returns the sha256 of its logical contents (holes of
/// sparse files read as zeros and are hashed as such, but stay holes on disk).
fn write_contents<R: Read>(
    tar: &mut TarReader<R>,
    entry: &TarEntry,
    file: &mut File,
    buf: &mut [u8],
) -> std::result::Result<[u8; 32], CopyError> {
    let mut hasher = Sha256::new();
    match &entry.sparse {
        None => {
            let mut total = 0u64;
            loop {
                let n = tar.read_data(buf).map_err(CopyError::Tar)?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                file.write_all(&buf[..n]).map_err(CopyError::Io)?;
                total += n as u64;
            }
            debug_assert_eq!(total, entry.size);
        }
        Some(map) => {
            let mut pos = 0u64;
            for &(offset, length) in map {
                hash_zeros(&mut hasher, offset - pos, buf);
                file.seek(SeekFrom::Start(offset)).map_err(CopyError::Io)?;
                let mut left = length;
                while left > 0 {
                    let want = usize::try_from(left.min(buf.len() as u64)).unwrap_or(buf.len());
                    let n = tar.read_data(&mut buf[..want]).map_err(CopyError::Tar)?;
                    if n == 0 {
                        return Err(CopyError::Tar(LayerError::MalformedArchive {
                            entry: Some(display_name(&entry.name)),
                            reason: "sparse data ends early".into(),
                        }));
                    }
                    hasher.update(&buf[..n]);
                    file.write_all(&buf[..n]).map_err(CopyError::Io)?;
                    left -= n as u64;
                }
                pos = offset + length;
            }
            hash_zeros(&mut hasher, entry.size - pos, buf);
            file.set_len(entry.size).map_err(CopyError::Io)?;
        }
    }
    Ok(hasher.finalize().into())
}

fn hash_zeros(hasher: &mut Sha256, mut count: u64, buf: &mut [u8]) {
    if count == 0 {
        return;
    }
    buf.fill(0);
    while count > 0 {
        let n = usize::try_from(count.min(buf.len() as u64)).unwrap_or(buf.len());
        hasher.update(&buf[..n]);
        count -= n as u64;
    }
}
