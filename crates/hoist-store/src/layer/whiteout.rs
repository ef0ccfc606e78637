//! OCI whiteouts: recognising `.wh.NAME` and `.wh..wh..opq` entries.
//!
//! A whiteout entry is never materialised in the layer's tree. Extraction records it in the
//! layer's metadata and a flattened view ([`unpack`](super::LayerStore::unpack)) applies it to the
//! layers *below*: per the OCI image spec, a whiteout hides the named path in lower layers only,
//! and an opaque marker hides every lower-layer child of its directory; entries of the same
//! layer are never hidden by its own whiteouts.
//!
//! Other names starting with `.wh..wh.` are AUFS metadata (hard link bookkeeping and the like)
//! and are ignored, as Docker does.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Prefix of a whiteout file name: `.wh.NAME` hides `NAME`.
pub const WHITEOUT_PREFIX: &[u8] = b".wh.";
/// Prefix of AUFS metadata names, ignored.
pub const WHITEOUT_META_PREFIX: &[u8] = b".wh..wh.";
/// Name of the opaque marker: hides every lower-layer child of its directory.
pub const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";

/// What a whiteout entry means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Whiteout {
    /// Hide this path (and everything beneath it) from lower layers.
    Remove(PathBuf),
    /// Hide every lower-layer child of this directory, keeping the directory itself.
    Opaque(PathBuf),
    /// AUFS bookkeeping (`.wh..wh.plnk` and friends): ignored.
    Ignored,
}

/// Classifies a sanitised entry path: `Ok(None)` for an ordinary entry.
///
/// A whiteout naming nothing (`.wh.`) or naming `.` or `..` is refused with the reason as `Err`.
pub fn classify(path: &Path) -> Result<Option<Whiteout>, &'static str> {
    let Some(name) = path.file_name() else {
        return Ok(None);
    };
    let name = name.as_bytes();
    if !name.starts_with(WHITEOUT_PREFIX) {
        return Ok(None);
    }
    let parent = path.parent().unwrap_or(Path::new("")).to_path_buf();
    if name == OPAQUE_MARKER {
        return Ok(Some(Whiteout::Opaque(parent)));
    }
    if name.starts_with(WHITEOUT_META_PREFIX) {
        return Ok(Some(Whiteout::Ignored));
    }
    let hidden = &name[WHITEOUT_PREFIX.len()..];
    match hidden {
        b"" => Err("a whiteout must name the entry it hides"),
        b"." | b".." => Err("a whiteout cannot hide `.` or `..`"),
        _ => Ok(Some(Whiteout::Remove(
            parent.join(OsStr::from_bytes(hidden)),
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_table() {
        let cases: &[(&str, Result<Option<Whiteout>, ()>)] = &[
            ("a/b", Ok(None)),
            ("", Ok(None)),
            (".whiteout", Ok(None)),
            ("a/.wh", Ok(None)),
            ("a/.wh.b", Ok(Some(Whiteout::Remove("a/b".into())))),
            (".wh.top", Ok(Some(Whiteout::Remove("top".into())))),
            (
                "a/b/.wh..hidden",
                Ok(Some(Whiteout::Remove("a/b/.hidden".into()))),
            ),
            ("a/.wh..wh..opq", Ok(Some(Whiteout::Opaque("a".into())))),
            (".wh..wh..opq", Ok(Some(Whiteout::Opaque("".into())))),
            ("a/.wh..wh.plnk", Ok(Some(Whiteout::Ignored))),
            ("a/.wh..wh.aufs", Ok(Some(Whiteout::Ignored))),
            ("a/.wh.", Err(())),
            ("a/.wh..", Err(())),
        ];
        for (path, want) in cases {
            let got = classify(Path::new(path)).map_err(|_| ());
            assert_eq!(&got, want, "classify({path:?})");
        }
    }
}
