//! Re-checking an extracted layer against what was recorded when it was extracted.
//!
//! An extracted tree cannot be turned back into the exact tar it came from, so the DiffID cannot
//! be recomputed from it. Instead, extraction records a manifest of every path, and
//! [`LayerStore::verify`](super::LayerStore::verify) checks:
//!
//! - the metadata is readable and the ChainID recomputed from the parent and DiffID is the one
//!   the layer is stored under, and the parent layer is present;
//! - every recorded path exists, with the recorded type, permission bits (as extraction applied
//!   them), mtime, and owner (when extraction was privileged);
//! - every file has the recorded size and sha256 of its contents;
//! - hard links: paths of one link group share one inode, and no other path shares it;
//! - symlink targets, device numbers, and the xattrs that were applied;
//! - no path exists that the manifest does not record.

use std::collections::HashMap;
use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use oci_spec::image::Digest;
use sha2::{Digest as _, Sha256};

use super::chain_id;
use super::error::{LayerError, Result};
use super::extract::disk_mode;
use super::manifest::{Kind, Node};
use super::path::MAX_DEPTH;
use super::store::LayerStore;
use super::sys::{self, FileKind, Stat};
use super::tree::{self, Tree};

/// What [`LayerStore::verify`](super::LayerStore::verify) found.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct VerifyReport {
    /// The layer checked.
    pub chain_id: Digest,
    /// Every discrepancy found; empty when the layer is intact.
    pub problems: Vec<VerifyProblem>,
}

impl VerifyReport {
    /// Whether no problem was found.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// One discrepancy between a layer on disk and its records.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyProblem {
    /// The layer's metadata or manifest is missing or unreadable.
    #[error("layer metadata unusable: {reason}")]
    Metadata {
        /// What is wrong.
        reason: String,
    },
    /// The ChainID recomputed from parent and DiffID differs from the one the layer is stored as.
    #[error("ChainID recomputed from parent and DiffID is {computed}")]
    ChainId {
        /// The recomputed ChainID.
        computed: Digest,
    },
    /// The parent layer is not in the store.
    #[error("parent layer {parent} is missing")]
    ParentMissing {
        /// The parent's ChainID.
        parent: Digest,
    },
    /// A recorded path is missing.
    #[error("`{}` is missing", .path.display())]
    Missing {
        /// The path, relative to the layer root.
        path: PathBuf,
    },
    /// A path exists that was not extracted.
    #[error("`{}` was not extracted from the layer", .path.display())]
    Unexpected {
        /// The path, relative to the layer root.
        path: PathBuf,
    },
    /// A path differs from its record.
    #[error("`{}`: {what}", .path.display())]
    Differs {
        /// The path, relative to the layer root.
        path: PathBuf,
        /// What differs.
        what: String,
    },
}

fn differs(path: &Path, what: impl Into<String>) -> VerifyProblem {
    VerifyProblem::Differs {
        path: path.to_path_buf(),
        what: what.into(),
    }
}

pub(crate) fn verify(store: &LayerStore, chain: &Digest, diff: &Path) -> Result<VerifyReport> {
    let mut report = VerifyReport {
        chain_id: chain.clone(),
        problems: Vec::new(),
    };
    let unusable = |report: &mut VerifyReport, reason: String| {
        report.problems.push(VerifyProblem::Metadata { reason });
    };
    let meta = match store.meta(chain) {
        Ok(Some(meta)) => meta,
        Ok(None) => {
            unusable(&mut report, "the metadata file is missing".into());
            return Ok(report);
        }
        Err(e @ LayerError::Corrupt { .. }) => {
            unusable(&mut report, e.to_string());
            return Ok(report);
        }
        Err(e) => return Err(e),
    };
    let computed = chain_id(meta.parent.as_ref(), &meta.diff_id);
    if computed != *chain {
        report.problems.push(VerifyProblem::ChainId { computed });
    }
    if let Some(parent) = &meta.parent
        && !matches!(store.get(parent), Ok(Some(_)))
    {
        report.problems.push(VerifyProblem::ParentMissing {
            parent: parent.clone(),
        });
    }
    let manifest = match store.manifest(chain) {
        Ok(m) => m,
        Err(e @ LayerError::Corrupt { .. }) => {
            unusable(&mut report, e.to_string());
            return Ok(report);
        }
        Err(LayerError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            unusable(&mut report, "the manifest file is missing".into());
            return Ok(report);
        }
        Err(e) => return Err(e),
    };
    let mut tree = match Tree::open(diff) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            report.problems.push(VerifyProblem::Missing {
                path: PathBuf::new(),
            });
            return Ok(report);
        }
        Err(e) => return Err(LayerError::io(format!("opening {}", diff.display()), e)),
    };

    let mut group_sizes: HashMap<u64, u64> = HashMap::new();
    for node in manifest.values().filter(|n| n.kind == Kind::File) {
        *group_sizes.entry(node.inode).or_default() += 1;
    }
    // Link group -> (dev, ino) seen first, and (dev, ino) -> link group.
    let mut group_inodes: HashMap<u64, (u64, u64)> = HashMap::new();
    let mut inode_groups: HashMap<(u64, u64), u64> = HashMap::new();
    let mut buf = vec![0u8; 1 << 20];
    for (path, node) in &manifest {
        let io_err = |e| LayerError::io(format!("verifying `{}`", path.display()), e);
        let (dir, name, st) = match tree::split(path) {
            None => {
                let root = tree.root();
                (root, None, sys::fstat(root).map_err(io_err)?)
            }
            Some((parent, name)) => {
                let Ok(dir) = tree.dir(parent, false, &mut Vec::new()) else {
                    report
                        .problems
                        .push(VerifyProblem::Missing { path: path.clone() });
                    continue;
                };
                let name = tree::c_name(name).map_err(io_err)?;
                match sys::stat_at(dir, &name).map_err(io_err)? {
                    None => {
                        report
                            .problems
                            .push(VerifyProblem::Missing { path: path.clone() });
                        continue;
                    }
                    Some(st) => (dir, Some(name), st),
                }
            }
        };
        let problems = check_node(
            path,
            node,
            &st,
            dir,
            name.as_deref(),
            meta.privileged,
            &mut buf,
        )
        .map_err(io_err)?;
        report.problems.extend(problems);
        if node.kind == Kind::File && st.kind == FileKind::File {
            let key = (st.dev, st.ino);
            let first = *group_inodes.entry(node.inode).or_insert(key);
            let owner = *inode_groups.entry(key).or_insert(node.inode);
            if first != key || owner != node.inode {
                report.problems.push(differs(
                    path,
                    "hard links differ from the recorded link groups",
                ));
            } else if st.nlink != group_sizes.get(&node.inode).copied().unwrap_or(1) {
                report.problems.push(differs(
                    path,
                    format!(
                        "has {} hard links, {} recorded",
                        st.nlink,
                        group_sizes.get(&node.inode).copied().unwrap_or(1)
                    ),
                ));
            }
        }
    }
    find_unexpected(
        tree.root(),
        PathBuf::new(),
        &manifest,
        &mut report.problems,
        0,
    )
    .map_err(|e| LayerError::io(format!("listing {}", diff.display()), e))?;
    Ok(report)
}

fn kind_matches(kind: Kind, st: FileKind) -> bool {
    matches!(
        (kind, st),
        (Kind::Dir, FileKind::Dir)
            | (Kind::File, FileKind::File)
            | (Kind::Symlink, FileKind::Symlink)
            | (Kind::CharDevice, FileKind::CharDevice)
            | (Kind::BlockDevice, FileKind::BlockDevice)
            | (Kind::Fifo, FileKind::Fifo)
    )
}

/// Compares one path with its record. `name` is `None` for the layer root (`dir` itself).
fn check_node(
    path: &Path,
    node: &Node,
    st: &Stat,
    dir: BorrowedFd<'_>,
    name: Option<&std::ffi::CStr>,
    privileged: bool,
    buf: &mut [u8],
) -> std::io::Result<Vec<VerifyProblem>> {
    let mut problems = Vec::new();
    if !kind_matches(node.kind, st.kind) {
        problems.push(differs(
            path,
            format!("is a {:?}, a {:?} was extracted", st.kind, node.kind),
        ));
        return Ok(problems);
    }
    if node.kind != Kind::Symlink {
        let want = disk_mode(node.kind, node.mode, privileged);
        if st.perm != want {
            problems.push(differs(
                path,
                format!("mode is {:o}, {want:o} was extracted", st.perm),
            ));
        }
    }
    if privileged && (u64::from(st.uid) != node.uid || u64::from(st.gid) != node.gid) {
        problems.push(differs(
            path,
            format!(
                "owner is {}:{}, {}:{} was extracted",
                st.uid, st.gid, node.uid, node.gid
            ),
        ));
    }
    if let Some(t) = node.mtime
        && (st.mtime_sec != t.sec || st.mtime_nsec != t.nsec)
    {
        problems.push(differs(path, "mtime differs from the extracted one"));
    }
    match node.kind {
        Kind::File => {
            if st.size != node.size {
                problems.push(differs(
                    path,
                    format!("size is {}, {} was extracted", st.size, node.size),
                ));
            } else if let Some(name) = name {
                let mut file = sys::open_file_at(dir, name)?;
                let mut hasher = Sha256::new();
                loop {
                    let n = file.read(buf)?;
                    if n == 0 {
                        break;
                    }
                    hasher.update(&buf[..n]);
                }
                let hash: [u8; 32] = hasher.finalize().into();
                if Some(hash) != node.sha256 {
                    problems.push(differs(path, "contents differ from the extracted ones"));
                }
                check_xattrs(path, node, file.as_fd(), &mut problems)?;
            }
        }
        Kind::Dir => match name {
            Some(name) => {
                let fd = sys::open_dir_at(dir, name)?;
                check_xattrs(path, node, fd.as_fd(), &mut problems)?;
            }
            None => check_xattrs(path, node, dir, &mut problems)?,
        },
        Kind::Symlink => {
            if let Some(name) = name
                && sys::read_link_at(dir, name)? != node.target
            {
                problems.push(differs(
                    path,
                    "symlink target differs from the extracted one",
                ));
            }
        }
        Kind::CharDevice | Kind::BlockDevice => {
            if st.rdev != libc::makedev(node.rdev.0, node.rdev.1) {
                problems.push(differs(
                    path,
                    "device numbers differ from the extracted ones",
                ));
            }
        }
        Kind::Fifo => {}
    }
    Ok(problems)
}

fn check_xattrs(
    path: &Path,
    node: &Node,
    fd: BorrowedFd<'_>,
    problems: &mut Vec<VerifyProblem>,
) -> std::io::Result<()> {
    for (name, value) in &node.xattrs {
        let c = sys::cstring(name)?;
        if sys::get_xattr_fd(fd, &c)?.as_deref() != Some(value.as_slice()) {
            problems.push(differs(
                path,
                format!("xattr {} differs", String::from_utf8_lossy(name)),
            ));
        }
    }
    Ok(())
}

/// Reports every path beneath `dir` that the manifest does not record (without descending into
/// unrecorded directories).
fn find_unexpected(
    dir: BorrowedFd<'_>,
    at: PathBuf,
    manifest: &super::manifest::Manifest,
    problems: &mut Vec<VerifyProblem>,
    depth: usize,
) -> std::io::Result<()> {
    let mut names = sys::read_dir_names(dir)?;
    names.sort();
    for name in names {
        let path = at.join(std::ffi::OsStr::from_bytes(name.to_bytes()));
        match manifest.get(&path) {
            None => problems.push(VerifyProblem::Unexpected { path }),
            Some(node) if node.kind == Kind::Dir && depth < MAX_DEPTH => {
                if let Ok(fd) = sys::open_dir_at(dir, &name) {
                    find_unexpected(fd.as_fd(), path, manifest, problems, depth + 1)?;
                }
            }
            Some(_) => {}
        }
    }
    Ok(())
}
