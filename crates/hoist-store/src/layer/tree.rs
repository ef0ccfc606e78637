//! Directory trees addressed by descriptor and walked one component at a time, never following
//! a symlink.
//!
//! Every path handled here is a sanitised relative path (see [`super::path`]). Each component is
//! opened with `O_DIRECTORY | O_NOFOLLOW` relative to its parent's descriptor, so a symlink (or a
//! file) anywhere in the path stops the walk with a typed error instead of being followed, and
//! nothing outside the tree's root can ever be reached.

use std::ffi::{CStr, CString, OsStr};
use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::sys::{self, FileKind};

/// Why a directory in a tree could not be reached.
#[derive(Debug)]
pub(crate) enum WalkError {
    /// This component is a symlink (never followed).
    Symlink(PathBuf),
    /// This component exists and is not a directory.
    NotDir(PathBuf),
    /// This component does not exist (and creation was not asked for).
    Missing(PathBuf),
    /// The system refused.
    Io(PathBuf, io::Error),
}

/// A directory tree rooted at one descriptor, with the most recently used directory cached
/// (tar entries come grouped by directory, so most lookups are a cache hit).
pub(crate) struct Tree {
    root: OwnedFd,
    cache: Option<(PathBuf, OwnedFd)>,
}

/// Splits a sanitised path into its parent and its final name (`None` for the root).
pub(crate) fn split(path: &Path) -> Option<(&Path, &OsStr)> {
    let name = path.file_name()?;
    Some((path.parent().unwrap_or(Path::new("")), name))
}

/// The C string of one path component.
pub(crate) fn c_name(name: &OsStr) -> io::Result<CString> {
    sys::cstring(name.as_bytes())
}

/// Opens a directory by a trusted path (the store's own directories, or a caller's destination).
pub(crate) fn open_dir_path(path: &Path) -> io::Result<OwnedFd> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(path)?;
    Ok(OwnedFd::from(file))
}

impl Tree {
    /// Opens the tree rooted at the directory `path` (a trusted path).
    pub(crate) fn open(path: &Path) -> io::Result<Self> {
        Ok(Self {
            root: open_dir_path(path)?,
            cache: None,
        })
    }

    /// The root directory's descriptor.
    pub(crate) fn root(&self) -> BorrowedFd<'_> {
        self.root.as_fd()
    }

    /// The directory at `dir` (relative, sanitised). With `create`, missing components are
    /// created (mode 0700, final modes are applied later by the caller) and their paths pushed
    /// onto `created`, parents first.
    pub(crate) fn dir(
        &mut self,
        dir: &Path,
        create: bool,
        created: &mut Vec<PathBuf>,
    ) -> Result<BorrowedFd<'_>, WalkError> {
        if dir.as_os_str().is_empty() {
            return Ok(self.root.as_fd());
        }
        let hit = matches!(&self.cache, Some((cached, _)) if cached == dir);
        if !hit {
            let fd = self.walk(dir, create, created)?;
            self.cache = Some((dir.to_path_buf(), fd));
        }
        match &self.cache {
            Some((_, fd)) => Ok(fd.as_fd()),
            None => Ok(self.root.as_fd()),
        }
    }

    /// Like [`Tree::dir`] without creating anything and without touching the cache, returning an
    /// owned descriptor (for when two directories are needed at once).
    pub(crate) fn dir_owned(&self, dir: &Path) -> Result<OwnedFd, WalkError> {
        if dir.as_os_str().is_empty() {
            return self
                .root
                .try_clone()
                .map_err(|e| WalkError::Io(PathBuf::new(), e));
        }
        self.walk(dir, false, &mut Vec::new())
    }

    /// Drops cached descriptors for `removed` or anything beneath it; call after removing a
    /// directory from the tree.
    pub(crate) fn forget(&mut self, removed: &Path) {
        if matches!(&self.cache, Some((cached, _)) if cached.starts_with(removed)) {
            self.cache = None;
        }
    }

    fn walk(
        &self,
        dir: &Path,
        create: bool,
        created: &mut Vec<PathBuf>,
    ) -> Result<OwnedFd, WalkError> {
        let (start, rest, mut walked) = match &self.cache {
            Some((cached, fd)) if dir.starts_with(cached) => (
                fd.as_fd(),
                dir.strip_prefix(cached).unwrap_or(dir),
                cached.clone(),
            ),
            _ => (self.root.as_fd(), dir, PathBuf::new()),
        };
        let mut current: Option<OwnedFd> = None;
        for component in rest.iter() {
            walked.push(component);
            let parent = current.as_ref().map_or(start, AsFd::as_fd);
            let name = c_name(component).map_err(|e| WalkError::Io(walked.clone(), e))?;
            let next = match sys::open_dir_at(parent, &name) {
                Ok(fd) => fd,
                Err(e) => match e.raw_os_error() {
                    Some(libc::ENOENT) if create => {
                        match sys::mkdir_at(parent, &name, 0o700) {
                            Ok(()) => created.push(walked.clone()),
                            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                            Err(e) => return Err(WalkError::Io(walked, e)),
                        }
                        sys::open_dir_at(parent, &name)
                            .map_err(|e| classify(parent, &name, walked.clone(), e))?
                    }
                    _ => return Err(classify(parent, &name, walked, e)),
                },
            };
            current = Some(next);
        }
        match current {
            Some(fd) => Ok(fd),
            None => start
                .try_clone_to_owned()
                .map_err(|e| WalkError::Io(walked, e)),
        }
    }
}

/// Turns a failed `open_dir_at` into the reason a walk stopped.
fn classify(parent: BorrowedFd<'_>, name: &CStr, at: PathBuf, err: io::Error) -> WalkError {
    match err.raw_os_error() {
        Some(libc::ENOENT) => WalkError::Missing(at),
        Some(libc::ELOOP) | Some(libc::ENOTDIR) => match sys::stat_at(parent, name) {
            Ok(Some(st)) if st.kind == FileKind::Symlink => WalkError::Symlink(at),
            Ok(Some(_)) => WalkError::NotDir(at),
            Ok(None) => WalkError::Missing(at),
            Err(e) => WalkError::Io(at, e),
        },
        _ => WalkError::Io(at, err),
    }
}

/// Removes whatever is at `name` inside `dir` (recursively for a directory), never following a
/// symlink. Nothing there is not an error. Returns whether a directory was removed.
pub(crate) fn remove_all_at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<bool> {
    match sys::stat_at(dir, name)? {
        None => Ok(false),
        Some(st) if st.kind == FileKind::Dir => {
            let fd = sys::open_dir_at(dir, name)?;
            if st.perm & 0o700 != 0o700 {
                // Our own trees only; a directory without owner write/search permission could
                // not be emptied otherwise.
                let _ = sys::chmod_fd(fd.as_fd(), st.perm | 0o700);
            }
            clear_dir(fd.as_fd())?;
            drop(fd);
            sys::unlink_at(dir, name, true)?;
            Ok(true)
        }
        Some(_) => match sys::unlink_at(dir, name, false) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            other => other.map(|()| false),
        },
    }
}

/// Removes every child of the directory open at `dir`, keeping the directory.
pub(crate) fn clear_dir(dir: BorrowedFd<'_>) -> io::Result<()> {
    for name in sys::read_dir_names(dir)? {
        remove_all_at(dir, &name)?;
    }
    Ok(())
}

/// Removes the tree at a trusted `path` (nothing there is not an error).
pub(crate) fn remove_tree(path: &Path) -> io::Result<()> {
    let Some(name) = path.file_name() else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "cannot remove a root directory",
        ));
    };
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let parent = open_dir_path(parent)?;
    remove_all_at(parent.as_fd(), &c_name(name)?).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walks_refuse_symlinks_and_files() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::write(root.join("a/file"), b"x").unwrap();
        std::os::unix::fs::symlink("b", root.join("a/link")).unwrap();
        std::os::unix::fs::symlink("/", root.join("abs")).unwrap();
        let mut tree = Tree::open(root).unwrap();
        let mut created = Vec::new();
        assert!(tree.dir(Path::new("a/b"), false, &mut created).is_ok());
        assert!(
            matches!(tree.dir(Path::new("a/link/x"), true, &mut created), Err(WalkError::Symlink(p)) if p == Path::new("a/link"))
        );
        assert!(
            matches!(tree.dir(Path::new("abs/etc"), true, &mut created), Err(WalkError::Symlink(p)) if p == Path::new("abs"))
        );
        assert!(
            matches!(tree.dir(Path::new("a/file/x"), true, &mut created), Err(WalkError::NotDir(p)) if p == Path::new("a/file"))
        );
        assert!(matches!(
            tree.dir(Path::new("a/missing"), false, &mut created),
            Err(WalkError::Missing(_))
        ));
        assert!(created.is_empty());
        tree.dir(Path::new("a/b/c/d"), true, &mut created).unwrap();
        assert_eq!(
            created,
            vec![PathBuf::from("a/b/c"), PathBuf::from("a/b/c/d")]
        );
        assert!(root.join("a/b/c/d").is_dir());
        assert!(!Path::new("/etc/x").exists());
    }

    #[test]
    fn cached_directory_is_forgotten_after_removal() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        let mut tree = Tree::open(root).unwrap();
        tree.dir(Path::new("a/b"), false, &mut Vec::new()).unwrap();
        remove_all_at(tree.root(), &c_name(OsStr::new("a")).unwrap()).unwrap();
        tree.forget(Path::new("a"));
        std::fs::write(root.join("a"), b"now a file").unwrap();
        assert!(matches!(
            tree.dir(Path::new("a/b"), false, &mut Vec::new()),
            Err(WalkError::NotDir(_))
        ));
    }

    #[test]
    fn remove_all_does_not_follow_symlinks() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("keep"), b"keep").unwrap();
        let root = tmp.path().join("root");
        std::fs::create_dir_all(root.join("d/e")).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("d/link")).unwrap();
        std::fs::set_permissions(
            root.join("d/e"),
            std::os::unix::fs::PermissionsExt::from_mode(0o500),
        )
        .unwrap();
        remove_tree(&root.join("d")).unwrap();
        assert!(!root.join("d").exists());
        assert!(outside.join("keep").exists());
    }
}
