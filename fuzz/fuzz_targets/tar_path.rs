//! Tar entry name sanitising on arbitrary bytes: never panics; an accepted name becomes a relative
//! path of normal components only (no `/` root, no `.`, no `..`, no NUL), within the length and
//! depth limits, that sanitises to itself; and a name is refused as escaping exactly when a `..`
//! would climb above the layer root.
#![no_main]

use std::os::unix::ffi::OsStrExt;
use std::path::Component;

use hoist_store::layer::path::{
    MAX_COMPONENT_LEN, MAX_DEPTH, MAX_NAME_LEN, PathError, is_sanitized, sanitize,
};
use libfuzzer_sys::fuzz_target;

/// Whether a lexical walk of `raw` ever climbs above its root.
fn climbs_above_root(raw: &[u8]) -> bool {
    let mut depth = 0usize;
    for part in raw.split(|b| *b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => match depth.checked_sub(1) {
                Some(d) => depth = d,
                None => return true,
            },
            _ => depth += 1,
        }
    }
    false
}

fuzz_target!(|raw: &[u8]| {
    match sanitize(raw) {
        Ok(path) => {
            assert!(is_sanitized(&path), "{path:?}");
            assert!(!path.is_absolute(), "{path:?}");
            let bytes = path.as_os_str().as_bytes();
            assert!(bytes.len() <= raw.len().min(MAX_NAME_LEN), "{path:?}");
            assert!(!bytes.contains(&0), "{path:?}");
            let mut depth = 0;
            for component in path.components() {
                let Component::Normal(name) = component else {
                    panic!("{path:?} has a {component:?} component");
                };
                assert!(name.as_bytes() != b".." && name.as_bytes() != b".");
                assert!(name.len() <= MAX_COMPONENT_LEN, "{path:?}");
                depth += 1;
            }
            assert!(depth <= MAX_DEPTH, "{path:?}");
            assert!(
                !climbs_above_root(raw),
                "{raw:?} climbs above the root yet became {path:?}"
            );
            assert_eq!(
                sanitize(bytes).as_ref(),
                Ok(&path),
                "sanitising {path:?} again"
            );
        }
        Err(PathError::Escapes) => {
            assert!(climbs_above_root(raw), "{raw:?} refused as escaping");
        }
        Err(_) => {}
    }
});
