//! Tar entry name sanitising, free of any I/O.
//!
//! A tar entry name is a byte string chosen by whoever built the archive. [`sanitize`] turns it
//! into a relative path made only of normal components, or refuses it:
//!
//! - a leading `/` is dropped: absolute names are taken relative to the layer root, as Docker and
//!   umoci do;
//! - empty components and `.` are dropped (`a//./b` is `a/b`);
//! - `..` removes the previous component, lexically; a `..` with nothing left to remove would
//!   leave the layer root and is refused with [`PathError::Escapes`] (so `/../x` is refused too);
//! - names longer than [`MAX_NAME_LEN`] bytes, components longer than [`MAX_COMPONENT_LEN`] bytes,
//!   more than [`MAX_DEPTH`] components, and NUL bytes are refused.
//!
//! Lexical `..` handling is safe because the result is never resolved through symlinks: the
//! extraction code opens each component itself without following any symlink, so a sanitised
//! path can only name something beneath the layer root.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// Longest accepted entry name or hard link target, in bytes (Linux's `PATH_MAX`).
pub const MAX_NAME_LEN: usize = 4096;
/// Longest accepted single path component, in bytes (Linux's `NAME_MAX`).
pub const MAX_COMPONENT_LEN: usize = 255;
/// Most components accepted in one name; bounds the directory descriptors held while walking.
pub const MAX_DEPTH: usize = 512;

/// Why a tar entry name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PathError {
    /// A `..` component would leave the layer root.
    #[error("a `..` component leaves the layer root")]
    Escapes,
    /// The whole name is longer than [`MAX_NAME_LEN`].
    #[error("name is {len} bytes long, over the {MAX_NAME_LEN}-byte limit")]
    TooLong {
        /// Length of the name in bytes.
        len: usize,
    },
    /// One component is longer than [`MAX_COMPONENT_LEN`].
    #[error("a path component is {len} bytes long, over the {MAX_COMPONENT_LEN}-byte limit")]
    ComponentTooLong {
        /// Length of the offending component in bytes.
        len: usize,
    },
    /// More than [`MAX_DEPTH`] components.
    #[error("name has more than {MAX_DEPTH} components")]
    TooDeep,
    /// The name contains a NUL byte.
    #[error("name contains a NUL byte")]
    Nul,
}

/// Sanitises a raw tar entry name into a relative path of normal components.
///
/// The empty path (`""`) means the layer root itself (names such as `/`, `.` or `a/..`).
///
/// ```text
/// "/etc/./passwd"  -> Ok("etc/passwd")
/// "a/../b"         -> Ok("b")
/// "../etc/passwd"  -> Err(PathError::Escapes)
/// ```
pub fn sanitize(raw: &[u8]) -> Result<PathBuf, PathError> {
    if raw.len() > MAX_NAME_LEN {
        return Err(PathError::TooLong { len: raw.len() });
    }
    if raw.contains(&0) {
        return Err(PathError::Nul);
    }
    let mut parts: Vec<&[u8]> = Vec::new();
    for part in raw.split(|b| *b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                if parts.pop().is_none() {
                    return Err(PathError::Escapes);
                }
            }
            _ => {
                if part.len() > MAX_COMPONENT_LEN {
                    return Err(PathError::ComponentTooLong { len: part.len() });
                }
                parts.push(part);
                if parts.len() > MAX_DEPTH {
                    return Err(PathError::TooDeep);
                }
            }
        }
    }
    let mut out = Vec::with_capacity(raw.len());
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            out.push(b'/');
        }
        out.extend_from_slice(part);
    }
    Ok(PathBuf::from(OsStr::from_bytes(&out)))
}

/// Whether `path` is made only of normal components (what [`sanitize`] produces).
pub fn is_sanitized(path: &Path) -> bool {
    path.components().all(|c| matches!(c, Component::Normal(_)))
}

/// A lossy, length-bounded rendering of a raw entry name for error messages and logs.
pub(crate) fn display_name(raw: &[u8]) -> String {
    const SHOWN: usize = 200;
    if raw.len() <= SHOWN {
        String::from_utf8_lossy(raw).into_owned()
    } else {
        format!(
            "{}... ({} bytes)",
            String::from_utf8_lossy(&raw[..SHOWN]),
            raw.len()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn sanitize_table() {
        let ok: &[(&[u8], &str)] = &[
            (b"a", "a"),
            (b"a/b/c", "a/b/c"),
            (b"./a/b", "a/b"),
            (b"/etc/passwd", "etc/passwd"),
            (b"///etc//passwd", "etc/passwd"),
            (b"a/./b/.", "a/b"),
            (b"a/b/", "a/b"),
            (b"a/../b", "b"),
            (b"a/b/../../c", "c"),
            (b"a/..", ""),
            (b"/", ""),
            (b".", ""),
            (b"./", ""),
            (b"", ""),
            (b"..a/b..", "..a/b.."),
            (b"...", "..."),
            (b"a\\..\\b", "a\\..\\b"),
            (b".wh..wh..opq", ".wh..wh..opq"),
        ];
        for (raw, want) in ok {
            assert_eq!(
                sanitize(raw).as_deref(),
                Ok(Path::new(want)),
                "sanitize({:?})",
                String::from_utf8_lossy(raw)
            );
        }
        let bad: &[(&[u8], PathError)] = &[
            (b"..", PathError::Escapes),
            (b"../x", PathError::Escapes),
            (b"/../x", PathError::Escapes),
            (b"a/../../x", PathError::Escapes),
            (b"./../x", PathError::Escapes),
            (b"a/b/../../..", PathError::Escapes),
            (b"a\0b", PathError::Nul),
        ];
        for (raw, want) in bad {
            assert_eq!(
                sanitize(raw).as_ref(),
                Err(want),
                "sanitize({:?})",
                String::from_utf8_lossy(raw)
            );
        }
    }

    #[test]
    fn names_over_the_limits_are_refused() {
        let long = vec![b'a'; MAX_NAME_LEN + 1];
        assert_eq!(
            sanitize(&long),
            Err(PathError::TooLong {
                len: MAX_NAME_LEN + 1
            })
        );
        let mut at_limit = Vec::new();
        while at_limit.len() + 2 <= MAX_NAME_LEN {
            at_limit.extend_from_slice(b"a/");
        }
        at_limit.truncate(MAX_NAME_LEN);
        assert_eq!(sanitize(&at_limit), Err(PathError::TooDeep));
        let component = vec![b'c'; MAX_COMPONENT_LEN + 1];
        assert_eq!(
            sanitize(&component),
            Err(PathError::ComponentTooLong {
                len: MAX_COMPONENT_LEN + 1
            })
        );
        let component = vec![b'c'; MAX_COMPONENT_LEN];
        assert!(sanitize(&component).is_ok());
        let deep = b"d/".repeat(MAX_DEPTH);
        assert!(sanitize(&deep).is_ok());
    }

    #[test]
    fn display_name_is_bounded() {
        let shown = display_name(&[b'x'; 10_000]);
        assert!(shown.len() < 300, "{shown}");
        assert!(shown.ends_with("(10000 bytes)"));
    }

    fn component() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            Just(b"..".to_vec()),
            Just(b".".to_vec()),
            Just(Vec::new()),
            Just(b"a".to_vec()),
            Just(b"..a".to_vec()),
            Just(b".wh.b".to_vec()),
            proptest::collection::vec(1u8..=255, 1..8)
                .prop_filter("no slash", |v| !v.contains(&b'/')),
        ]
    }

    fn raw_name() -> impl Strategy<Value = Vec<u8>> {
        (any::<bool>(), proptest::collection::vec(component(), 0..12)).prop_map(
            |(absolute, parts)| {
                let mut out = if absolute { b"/".to_vec() } else { Vec::new() };
                out.extend_from_slice(&parts.join(&b'/'));
                out
            },
        )
    }

    /// Resolves `root/path` lexically, the way a kernel would without symlinks.
    fn lexical_join(root: &[&[u8]], path: &Path) -> Vec<Vec<u8>> {
        let mut stack: Vec<Vec<u8>> = root.iter().map(|c| c.to_vec()).collect();
        for c in path.components() {
            match c {
                Component::ParentDir => {
                    stack.pop();
                }
                Component::Normal(n) => stack.push(n.as_bytes().to_vec()),
                _ => {}
            }
        }
        stack
    }

    proptest! {
        #[test]
        fn sanitized_paths_never_escape(raw in raw_name()) {
            if let Ok(clean) = sanitize(&raw) {
                prop_assert!(is_sanitized(&clean));
                prop_assert!(clean.as_os_str().len() <= raw.len());
                let root: [&[u8]; 3] = [b"store", b"layers", b"x"];
                let joined = lexical_join(&root, &clean);
                prop_assert!(joined.len() >= root.len());
                prop_assert_eq!(&joined[..root.len()], &root.map(<[u8]>::to_vec)[..]);
                // Sanitising is idempotent.
                prop_assert_eq!(sanitize(clean.as_os_str().as_bytes()), Ok(clean.clone()));
            } else {
                // Refusals happen only for a reason the name really has.
                let err = sanitize(&raw).unwrap_err();
                match err {
                    PathError::Escapes => prop_assert!(raw.windows(2).any(|w| w == b"..")),
                    PathError::Nul => prop_assert!(raw.contains(&0)),
                    PathError::ComponentTooLong { .. } | PathError::TooLong { .. } | PathError::TooDeep => {}
                }
            }
        }

        #[test]
        fn sanitize_never_panics(raw in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = sanitize(&raw);
        }
    }
}
