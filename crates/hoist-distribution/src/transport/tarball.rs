//! Tar files holding images: unpacking an OCI layout archive safely, packing a directory into an
//! archive atomically, and indexing an archive's members for random access without unpacking.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Write};
use std::path::{Component, Path, PathBuf};

use super::error::{Error, Result};
use super::layout::fsync_dir;

/// Prefix of hoist's temporary files, which are never packed.
const TEMP_PREFIX: &str = ".hoist-";

/// A member's path as a relative path of normal components, or `None` when it would leave the
/// archive's root (absolute, `..` above the root).
fn safe_relative(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

/// Unpacks the regular files and directories of `archive` under `dest`. Members that would land
/// outside `dest` are refused; links and special files are skipped (image layouts have none).
pub(crate) fn unpack(archive: &Path, dest: &Path, location: &str) -> Result<()> {
    let file = File::open(archive).map_err(|e| Error::io("open", archive, e))?;
    let mut tar = tar::Archive::new(BufReader::new(file));
    let entries = tar
        .entries()
        .map_err(|e| Error::malformed("archive", location, e))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| Error::malformed("archive", location, e))?;
        let raw = entry
            .path()
            .map_err(|e| Error::malformed("archive", location, e))?
            .into_owned();
        let Some(relative) = safe_relative(&raw) else {
            return Err(Error::malformed(
                "archive",
                location,
                format!("member {} points outside the archive", raw.display()),
            ));
        };
        if relative.as_os_str().is_empty() {
            continue;
        }
        let target = dest.join(&relative);
        match entry.header().entry_type() {
            tar::EntryType::Directory => {
                fs::create_dir_all(&target)
                    .map_err(|e| Error::io("create directory", &target, e))?;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                if let Some(parent) = target.parent() {
                    fs::create_dir_all(parent)
                        .map_err(|e| Error::io("create directory", parent, e))?;
                }
                let mut out = BufWriter::new(
                    File::create(&target).map_err(|e| Error::io("create", &target, e))?,
                );
                io::copy(&mut entry, &mut out)
                    .and_then(|_| out.flush())
                    .map_err(|e| Error::io("unpack", &target, e))?;
            }
            other => {
                tracing::warn!(member = %raw.display(), kind = ?other, %location, "skipping archive member that is not a file or directory");
            }
        }
    }
    Ok(())
}

/// Packs the files under `src` into a tar at `target`, atomically: the archive is written to a
/// temporary file beside `target`, fsynced and renamed over it. Members are sorted, owned by
/// root, dated 1970, mode 0644 (directories 0755), so equal trees give equal archives.
pub(crate) fn pack(src: &Path, target: &Path) -> Result<()> {
    let dir = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let tmp = tempfile::Builder::new()
        .prefix(TEMP_PREFIX)
        .tempfile_in(dir)
        .map_err(|e| Error::io("create a temporary file in", dir, e))?;
    let mut builder = tar::Builder::new(BufWriter::new(tmp));
    builder.mode(tar::HeaderMode::Deterministic);
    let mut files = Vec::new();
    walk(src, Path::new(""), &mut files)?;
    for (relative, is_dir) in &files {
        let full = src.join(relative);
        let mut header = tar::Header::new_gnu();
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        if *is_dir {
            header.set_entry_type(tar::EntryType::Directory);
            header.set_mode(0o755);
            header.set_size(0);
            builder
                .append_data(&mut header, relative, io::empty())
                .map_err(|e| Error::io("write archive", target, e))?;
        } else {
            let file = File::open(&full).map_err(|e| Error::io("open", &full, e))?;
            let len = file
                .metadata()
                .map_err(|e| Error::io("stat", &full, e))?
                .len();
            header.set_entry_type(tar::EntryType::Regular);
            header.set_mode(0o644);
            header.set_size(len);
            builder
                .append_data(&mut header, relative, BufReader::new(file))
                .map_err(|e| Error::io("write archive", target, e))?;
        }
    }
    let writer = builder
        .into_inner()
        .map_err(|e| Error::io("write archive", target, e))?;
    let tmp = writer
        .into_inner()
        .map_err(|e| Error::io("write archive", target, e.into_error()))?;
    tmp.as_file()
        .sync_all()
        .map_err(|e| Error::io("fsync", tmp.path().to_owned(), e))?;
    tmp.persist(target)
        .map_err(|e| Error::io("rename into place", target, e.error))?;
    fsync_dir(dir)
}

/// Lists `root/prefix` recursively, sorted, directories before their contents.
fn walk(root: &Path, prefix: &Path, out: &mut Vec<(PathBuf, bool)>) -> Result<()> {
    let dir = root.join(prefix);
    let mut names: Vec<_> = fs::read_dir(&dir)
        .map_err(|e| Error::io("list", &dir, e))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<io::Result<_>>()
        .map_err(|e| Error::io("list", &dir, e))?;
    names.sort();
    for name in names {
        if name.to_string_lossy().starts_with(TEMP_PREFIX) {
            continue;
        }
        let relative = prefix.join(&name);
        let meta = fs::symlink_metadata(root.join(&relative))
            .map_err(|e| Error::io("stat", root.join(&relative), e))?;
        if meta.is_dir() {
            out.push((relative.clone(), true));
            walk(root, &relative, out)?;
        } else if meta.is_file() {
            out.push((relative, false));
        }
    }
    Ok(())
}

/// Where a member's bytes are in an (uncompressed) tar file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TarMember {
    /// Offset of the first data byte.
    pub offset: u64,
    /// Number of data bytes.
    pub size: u64,
}

#[derive(Debug, Clone)]
enum Indexed {
    File(TarMember),
    Symlink(String),
    Hardlink(String),
}

/// The members of a tar file by normalised path, for reading them in place.
#[derive(Debug, Clone, Default)]
pub(crate) struct TarIndex {
    members: HashMap<String, Indexed>,
}

/// A member path in the form the index uses: relative, without `.` or `..`.
fn normalise(path: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            p => parts.push(p),
        }
    }
    Some(parts.join("/"))
}

impl TarIndex {
    /// Reads the headers of the tar at `path` (skipping the data).
    pub fn build(path: &Path, location: &str) -> Result<TarIndex> {
        let file = File::open(path).map_err(|e| Error::io("open", path, e))?;
        let mut tar = tar::Archive::new(BufReader::new(file));
        let mut members = HashMap::new();
        let entries = tar
            .entries()
            .map_err(|e| Error::malformed("archive", location, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::malformed("archive", location, e))?;
            let raw = entry
                .path()
                .map_err(|e| Error::malformed("archive", location, e))?
                .to_string_lossy()
                .into_owned();
            let Some(name) = normalise(&raw) else {
                continue;
            };
            let link = || {
                entry
                    .link_name()
                    .ok()
                    .flatten()
                    .map(|l| l.to_string_lossy().into_owned())
            };
            let indexed = match entry.header().entry_type() {
                tar::EntryType::Regular | tar::EntryType::Continuous => Indexed::File(TarMember {
                    offset: entry.raw_file_position(),
                    size: entry.size(),
                }),
                tar::EntryType::Symlink => match link() {
                    Some(l) => Indexed::Symlink(l),
                    None => continue,
                },
                tar::EntryType::Link => match link() {
                    Some(l) => Indexed::Hardlink(l),
                    None => continue,
                },
                _ => continue,
            };
            members.insert(name, indexed);
        }
        Ok(TarIndex { members })
    }

    /// The regular file a member path names, following symbolic and hard links inside the
    /// archive.
    pub fn resolve(&self, path: &str) -> Option<TarMember> {
        let mut name = normalise(path)?;
        for _ in 0..16 {
            match self.members.get(&name)? {
                Indexed::File(m) => return Some(m.clone()),
                Indexed::Hardlink(target) => name = normalise(target)?,
                Indexed::Symlink(target) => {
                    name = if target.starts_with('/') {
                        normalise(target)?
                    } else {
                        let dir = name.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
                        normalise(&format!("{dir}/{target}"))?
                    };
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn build_tar(path: &Path, members: &[(&str, tar::EntryType, &[u8], Option<&str>)]) {
        let mut b = tar::Builder::new(File::create(path).unwrap());
        for (name, kind, data, link) in members {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            if let Some(l) = link {
                h.set_link_name(l).unwrap();
            }
            h.set_path(name).unwrap();
            h.set_cksum();
            b.append(&h, *data).unwrap();
        }
        b.finish().unwrap();
    }

    #[test]
    fn members_are_found_in_place_through_links() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.tar");
        build_tar(
            &path,
            &[
                ("./abc.tar", tar::EntryType::Regular, b"layer bytes", None),
                (
                    "legacy/layer.tar",
                    tar::EntryType::Symlink,
                    b"",
                    Some("../abc.tar"),
                ),
                ("hard.tar", tar::EntryType::Link, b"", Some("abc.tar")),
            ],
        );
        let index = TarIndex::build(&path, "test").unwrap();
        let direct = index.resolve("abc.tar").unwrap();
        assert_eq!(direct.size, 11);
        assert_eq!(index.resolve("legacy/layer.tar"), Some(direct.clone()));
        assert_eq!(index.resolve("./hard.tar"), Some(direct.clone()));
        assert_eq!(index.resolve("missing"), None);
        let mut f = File::open(&path).unwrap();
        let mut data = vec![0; 11];
        std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(direct.offset)).unwrap();
        f.read_exact(&mut data).unwrap();
        assert_eq!(data, b"layer bytes");
    }

    #[test]
    fn unpacking_refuses_members_outside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("evil.tar");
        // tar::Header::set_path refuses "..", so write the name bytes directly.
        let mut b = tar::Builder::new(File::create(&path).unwrap());
        let mut h = tar::Header::new_gnu();
        h.as_gnu_mut().unwrap().name[..9].copy_from_slice(b"../escape");
        h.set_size(1);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_cksum();
        b.append(&h, &b"x"[..]).unwrap();
        b.finish().unwrap();
        let out = dir.path().join("out");
        fs::create_dir(&out).unwrap();
        assert!(matches!(
            unpack(&path, &out, "test"),
            Err(Error::Malformed { .. })
        ));
        assert!(!dir.path().join("escape").exists());
    }

    #[test]
    fn pack_then_unpack_gives_the_same_tree_and_equal_archives() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        fs::create_dir_all(src.join("blobs/sha256")).unwrap();
        fs::write(src.join("index.json"), b"{}").unwrap();
        fs::write(src.join("blobs/sha256/aa"), b"blob").unwrap();
        fs::write(src.join(".hoist-tmp-x"), b"temporary").unwrap();
        let first = dir.path().join("one.tar");
        let second = dir.path().join("two.tar");
        pack(&src, &first).unwrap();
        pack(&src, &second).unwrap();
        assert_eq!(fs::read(&first).unwrap(), fs::read(&second).unwrap());
        let out = dir.path().join("out");
        fs::create_dir(&out).unwrap();
        unpack(&first, &out, "test").unwrap();
        assert_eq!(fs::read(out.join("blobs/sha256/aa")).unwrap(), b"blob");
        assert_eq!(fs::read(out.join("index.json")).unwrap(), b"{}");
        assert!(!out.join(".hoist-tmp-x").exists());
    }
}
