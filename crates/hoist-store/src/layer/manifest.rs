//! The per-layer files beside the extracted tree: `meta` (identity and whiteouts) and
//! `manifest` (one line per extracted path, used by unpack and verify).
//!
//! Both are line-oriented text, versioned by their first line. Byte strings (paths, link
//! targets, xattr names) are written with `%XX` escapes for every byte outside `!`..`~` and for
//! `%`, `,`, `:` and `=`, so any name a tar can hold round-trips exactly.
//!
//! `manifest` line fields, separated by one space:
//! `PATH KIND MODE UID GID MTIME SIZE SHA256 INODE TARGET RDEV XATTRS`, where PATH is `/`-prefixed
//! (`/` alone is the layer root), KIND one of `d f l c b p`, MODE octal permission bits as
//! declared by the archive, MTIME `sec.nsec` or `-` for a directory the archive did not declare,
//! SHA256 the hex content hash of a file or `-`, INODE the hard link group of a file (paths
//! sharing it are hard links of one another), TARGET `=escaped` for a symlink or `-`, RDEV
//! `major,minor`, XATTRS `-` or `name:hexvalue` pairs separated by commas.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use oci_spec::image::Digest;

use super::error::{LayerError, Result};
use super::sys::Timestamp;

const MANIFEST_HEADER: &str = "hoist-layer-manifest 1";
const META_HEADER: &str = "hoist-layer 1";

/// The kind of an extracted path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Dir,
    File,
    Symlink,
    CharDevice,
    BlockDevice,
    Fifo,
}

impl Kind {
    fn letter(self) -> char {
        match self {
            Kind::Dir => 'd',
            Kind::File => 'f',
            Kind::Symlink => 'l',
            Kind::CharDevice => 'c',
            Kind::BlockDevice => 'b',
            Kind::Fifo => 'p',
        }
    }

    fn from_letter(s: &str) -> Option<Self> {
        Some(match s {
            "d" => Kind::Dir,
            "f" => Kind::File,
            "l" => Kind::Symlink,
            "c" => Kind::CharDevice,
            "b" => Kind::BlockDevice,
            "p" => Kind::Fifo,
            _ => return None,
        })
    }
}

/// What the layer holds at one path, as the archive declared it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Node {
    pub kind: Kind,
    /// Declared permission bits (`& 0o7777`), before any rootless adjustment.
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    /// `None` for a directory created only because an entry lives beneath it.
    pub mtime: Option<Timestamp>,
    pub size: u64,
    pub sha256: Option<[u8; 32]>,
    /// Hard link group of a file: paths with the same value share one inode.
    pub inode: u64,
    pub target: Vec<u8>,
    pub rdev: (u32, u32),
    /// Extended attributes applied on disk.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Node {
    /// A directory that the archive did not declare.
    pub(crate) fn implicit_dir() -> Self {
        Self {
            kind: Kind::Dir,
            mode: 0o755,
            uid: 0,
            gid: 0,
            mtime: None,
            size: 0,
            sha256: None,
            inode: 0,
            target: Vec::new(),
            rdev: (0, 0),
            xattrs: Vec::new(),
        }
    }
}

/// Every path of a layer, parents before children (paths compare component-wise).
pub(crate) type Manifest = BTreeMap<PathBuf, Node>;

/// Removes `path` and everything beneath it from a map keyed by path.
pub(crate) fn remove_subtree<V>(map: &mut BTreeMap<PathBuf, V>, path: &Path) {
    let doomed: Vec<PathBuf> = map
        .range(path.to_path_buf()..)
        .take_while(|(k, _)| k.starts_with(path))
        .map(|(k, _)| k.clone())
        .collect();
    for k in doomed {
        map.remove(&k);
    }
}

/// Removes everything strictly beneath `path` from a map keyed by path.
pub(crate) fn remove_children<V>(map: &mut BTreeMap<PathBuf, V>, path: &Path) {
    let doomed: Vec<PathBuf> = map
        .range(path.to_path_buf()..)
        .take_while(|(k, _)| k.starts_with(path))
        .filter(|(k, _)| k.as_path() != path)
        .map(|(k, _)| k.clone())
        .collect();
    for k in doomed {
        map.remove(&k);
    }
}

fn escape_into(out: &mut String, bytes: &[u8]) {
    for &b in bytes {
        if (0x21..=0x7e).contains(&b) && !matches!(b, b'%' | b',' | b':' | b'=') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

fn unescape(s: &str) -> Option<Vec<u8>> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(out)
}

fn encode_path(out: &mut String, path: &Path) {
    out.push('/');
    escape_into(out, path.as_os_str().as_bytes());
}

fn decode_path(s: &str) -> Option<PathBuf> {
    let rest = s.strip_prefix('/')?;
    let bytes = unescape(rest)?;
    let path = PathBuf::from(OsStr::from_bytes(&bytes));
    super::path::is_sanitized(&path).then_some(path)
}

fn encode_line(path: &Path, node: &Node) -> String {
    let mut line = String::with_capacity(160);
    encode_path(&mut line, path);
    line.push(' ');
    line.push(node.kind.letter());
    line.push_str(&format!(" {:o} {} {} ", node.mode, node.uid, node.gid));
    match node.mtime {
        Some(t) => line.push_str(&format!("{}.{:09}", t.sec, t.nsec)),
        None => line.push('-'),
    }
    line.push_str(&format!(" {} ", node.size));
    match &node.sha256 {
        Some(h) => line.push_str(&hex::encode(h)),
        None => line.push('-'),
    }
    line.push_str(&format!(" {} ", node.inode));
    if node.kind == Kind::Symlink {
        line.push('=');
        escape_into(&mut line, &node.target);
    } else {
        line.push('-');
    }
    line.push_str(&format!(" {},{} ", node.rdev.0, node.rdev.1));
    if node.xattrs.is_empty() {
        line.push('-');
    } else {
        for (i, (name, value)) in node.xattrs.iter().enumerate() {
            if i > 0 {
                line.push(',');
            }
            escape_into(&mut line, name);
            line.push(':');
            line.push_str(&hex::encode(value));
        }
    }
    line
}

fn decode_line(line: &str) -> Option<(PathBuf, Node)> {
    let f: Vec<&str> = line.split(' ').collect();
    if f.len() != 12 {
        return None;
    }
    let path = decode_path(f[0])?;
    let kind = Kind::from_letter(f[1])?;
    let mode = u32::from_str_radix(f[2], 8).ok().filter(|m| *m <= 0o7777)?;
    let uid = f[3].parse().ok()?;
    let gid = f[4].parse().ok()?;
    let mtime = match f[5] {
        "-" => None,
        t => {
            let (sec, nsec) = t.split_once('.')?;
            Some(Timestamp {
                sec: sec.parse().ok()?,
                nsec: nsec.parse().ok().filter(|n| *n < 1_000_000_000)?,
            })
        }
    };
    let size = f[6].parse().ok()?;
    let sha256 = match f[7] {
        "-" => None,
        h => Some(<[u8; 32]>::try_from(hex::decode(h).ok()?).ok()?),
    };
    let inode = f[8].parse().ok()?;
    let target = match f[9] {
        "-" => Vec::new(),
        t => unescape(t.strip_prefix('=')?)?,
    };
    let (major, minor) = f[10].split_once(',')?;
    let rdev = (major.parse().ok()?, minor.parse().ok()?);
    let mut xattrs = Vec::new();
    if f[11] != "-" {
        for pair in f[11].split(',') {
            let (name, value) = pair.split_once(':')?;
            xattrs.push((unescape(name)?, hex::decode(value).ok()?));
        }
    }
    Some((
        path,
        Node {
            kind,
            mode,
            uid,
            gid,
            mtime,
            size,
            sha256,
            inode,
            target,
            rdev,
            xattrs,
        },
    ))
}

/// Writes `manifest` to `path` (not synced: the caller syncs the whole layer once).
pub(crate) fn write_manifest(path: &Path, manifest: &Manifest) -> Result<()> {
    let io_err = |e| LayerError::io(format!("writing {}", path.display()), e);
    let mut out = BufWriter::with_capacity(1 << 20, create_file(path).map_err(io_err)?);
    writeln!(out, "{MANIFEST_HEADER}").map_err(io_err)?;
    for (p, node) in manifest {
        writeln!(out, "{}", encode_line(p, node)).map_err(io_err)?;
    }
    out.flush().map_err(io_err)
}

/// Reads a manifest written by [`write_manifest`].
pub(crate) fn read_manifest(path: &Path) -> Result<Manifest> {
    let file =
        File::open(path).map_err(|e| LayerError::io(format!("reading {}", path.display()), e))?;
    let corrupt = |reason: String| LayerError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    let mut lines = BufReader::with_capacity(1 << 20, file).lines();
    match lines.next() {
        Some(Ok(first)) if first == MANIFEST_HEADER => {}
        Some(Err(e)) => return Err(LayerError::io(format!("reading {}", path.display()), e)),
        _ => return Err(corrupt("unknown manifest format".into())),
    }
    let mut manifest = Manifest::new();
    for (n, line) in lines.enumerate() {
        let line = line.map_err(|e| LayerError::io(format!("reading {}", path.display()), e))?;
        let (p, node) =
            decode_line(&line).ok_or_else(|| corrupt(format!("line {} is malformed", n + 2)))?;
        manifest.insert(p, node);
    }
    Ok(manifest)
}

/// The identity of a layer and the whiteouts it applies to the layers below.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Meta {
    pub diff_id: Digest,
    pub chain_id: Digest,
    pub parent: Option<Digest>,
    /// Bytes in the uncompressed tar stream.
    pub size: u64,
    /// Whether extraction ran privileged (exact modes, owners, all xattrs, devices).
    pub privileged: bool,
    /// Paths hidden in lower layers.
    pub whiteouts: Vec<PathBuf>,
    /// Directories whose lower-layer children are hidden.
    pub opaques: Vec<PathBuf>,
}

/// Writes `meta` to `path` (not synced: the caller syncs the whole layer once).
pub(crate) fn write_meta(path: &Path, meta: &Meta) -> Result<()> {
    let mut text = String::new();
    text.push_str(META_HEADER);
    text.push('\n');
    text.push_str(&format!(
        "diff_id {}\nchain_id {}\n",
        meta.diff_id, meta.chain_id
    ));
    match &meta.parent {
        Some(p) => text.push_str(&format!("parent {p}\n")),
        None => text.push_str("parent -\n"),
    }
    text.push_str(&format!(
        "size {}\nprivileged {}\n",
        meta.size, meta.privileged
    ));
    for (key, paths) in [("whiteout", &meta.whiteouts), ("opaque", &meta.opaques)] {
        for p in paths {
            text.push_str(key);
            text.push(' ');
            encode_path(&mut text, p);
            text.push('\n');
        }
    }
    create_file(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(|e| LayerError::io(format!("writing {}", path.display()), e))
}

/// Creates (or truncates) a bookkeeping file with mode 0644, whatever the umask allows beyond it.
fn create_file(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .open(path)
}

/// Reads a `meta` file; `Ok(None)` when it does not exist.
pub(crate) fn read_meta(path: &Path) -> Result<Option<Meta>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.kind() == io::ErrorKind::InvalidData => {
            return Err(LayerError::Corrupt {
                path: path.to_path_buf(),
                reason: "not UTF-8".into(),
            });
        }
        Err(e) => return Err(LayerError::io(format!("reading {}", path.display()), e)),
    };
    parse_meta(&text)
        .map(Some)
        .map_err(|reason| LayerError::Corrupt {
            path: path.to_path_buf(),
            reason,
        })
}

fn parse_meta(text: &str) -> std::result::Result<Meta, String> {
    let mut lines = text.lines();
    if lines.next() != Some(META_HEADER) {
        return Err("unknown metadata format".into());
    }
    let digest = |v: &str| Digest::try_from(v).map_err(|e| format!("bad digest `{v}`: {e}"));
    let (mut diff_id, mut chain_id, mut parent, mut size, mut privileged) =
        (None, None, None, None, None);
    let (mut whiteouts, mut opaques) = (Vec::new(), Vec::new());
    for line in lines {
        let (key, value) = line
            .split_once(' ')
            .ok_or_else(|| format!("malformed line `{line}`"))?;
        match key {
            "diff_id" => diff_id = Some(digest(value)?),
            "chain_id" => chain_id = Some(digest(value)?),
            "parent" => {
                parent = Some(if value == "-" {
                    None
                } else {
                    Some(digest(value)?)
                })
            }
            "size" => {
                size = Some(
                    value
                        .parse::<u64>()
                        .map_err(|_| format!("bad size `{value}`"))?,
                )
            }
            "privileged" => privileged = Some(value == "true"),
            "whiteout" => {
                whiteouts.push(decode_path(value).ok_or_else(|| format!("bad whiteout `{value}`"))?)
            }
            "opaque" => {
                opaques.push(decode_path(value).ok_or_else(|| format!("bad opaque `{value}`"))?)
            }
            // Unknown keys come from a newer writer of the same format version: ignored.
            _ => {}
        }
    }
    Ok(Meta {
        diff_id: diff_id.ok_or("missing diff_id")?,
        chain_id: chain_id.ok_or("missing chain_id")?,
        parent: parent.ok_or("missing parent")?,
        size: size.ok_or("missing size")?,
        privileged: privileged.ok_or("missing privileged")?,
        whiteouts,
        opaques,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn node_strategy() -> impl Strategy<Value = Node> {
        (
            prop_oneof![
                Just(Kind::Dir),
                Just(Kind::File),
                Just(Kind::Symlink),
                Just(Kind::CharDevice),
                Just(Kind::Fifo)
            ],
            0u32..=0o7777,
            any::<u32>(),
            proptest::option::of((any::<i64>(), 0u32..1_000_000_000)),
            any::<u64>(),
            proptest::option::of(any::<[u8; 32]>()),
            proptest::collection::vec(1u8..=255, 1..40),
            proptest::collection::vec(
                (
                    proptest::collection::vec(1u8..=255, 1..10),
                    proptest::collection::vec(any::<u8>(), 0..10),
                ),
                0..3,
            ),
        )
            .prop_map(
                |(kind, mode, uid, mtime, size, sha256, target, xattrs)| Node {
                    kind,
                    mode,
                    uid: u64::from(uid),
                    gid: u64::from(uid) / 2,
                    mtime: mtime.map(|(sec, nsec)| Timestamp { sec, nsec }),
                    size,
                    sha256,
                    inode: size / 3,
                    target: if kind == Kind::Symlink {
                        target
                    } else {
                        Vec::new()
                    },
                    rdev: (uid % 300, uid % 7),
                    xattrs,
                },
            )
    }

    fn path_strategy() -> impl Strategy<Value = PathBuf> {
        proptest::collection::vec(proptest::collection::vec(1u8..=255, 1..12), 0..4)
            .prop_filter_map("sanitised", |parts| {
                let joined = parts.join(&b'/');
                let p = PathBuf::from(OsStr::from_bytes(&joined));
                (super::super::path::sanitize(&joined).ok() == Some(p.clone())).then_some(p)
            })
    }

    proptest! {
        #[test]
        fn manifest_lines_round_trip(path in path_strategy(), node in node_strategy()) {
            let line = encode_line(&path, &node);
            prop_assert!(!line.contains('\n'));
            prop_assert_eq!(decode_line(&line), Some((path, node)));
        }
    }

    #[test]
    fn meta_round_trips() {
        let meta = Meta {
            diff_id: Digest::try_from(format!("sha256:{}", "a".repeat(64))).unwrap(),
            chain_id: Digest::try_from(format!("sha256:{}", "b".repeat(64))).unwrap(),
            parent: Some(Digest::try_from(format!("sha256:{}", "c".repeat(64))).unwrap()),
            size: 1234,
            privileged: true,
            whiteouts: vec![PathBuf::from("a b/c"), PathBuf::from("x%y")],
            opaques: vec![PathBuf::from("")],
        };
        let tmp = tempfile::tempdir().unwrap();
        write_meta(&tmp.path().join("meta"), &meta).unwrap();
        assert_eq!(read_meta(&tmp.path().join("meta")).unwrap(), Some(meta));
        assert_eq!(read_meta(&tmp.path().join("missing")).unwrap(), None);
        std::fs::write(tmp.path().join("bad"), "hoist-layer 1\ndiff_id nope\n").unwrap();
        assert!(matches!(
            read_meta(&tmp.path().join("bad")),
            Err(LayerError::Corrupt { .. })
        ));
    }

    #[test]
    fn subtree_removal_keeps_siblings() {
        let mut map: BTreeMap<PathBuf, ()> = ["a", "a/b", "a/b/c", "a.c", "a-b", "ab", "b"]
            .iter()
            .map(|p| (PathBuf::from(p), ()))
            .collect();
        remove_children(&mut map, Path::new("a"));
        assert_eq!(
            map.keys().map(|k| k.to_str().unwrap()).collect::<Vec<_>>(),
            ["a", "a-b", "a.c", "ab", "b"]
        );
        remove_subtree(&mut map, Path::new("a"));
        assert_eq!(
            map.keys().map(|k| k.to_str().unwrap()).collect::<Vec<_>>(),
            ["a-b", "a.c", "ab", "b"]
        );
    }
}
