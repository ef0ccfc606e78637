//! Whiteouts across layers, and flattening with `unpack`.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use super::{Fixture, MTIME, TarBuilder, options, snapshot};
use crate::layer::{Layer, LayerError, UnpackOptions};

fn register_chain(fx: &Fixture, tars: &[Vec<u8>]) -> Vec<Layer> {
    let mut layers: Vec<Layer> = Vec::new();
    for tar in tars {
        let parent = layers.last().map(|l| l.chain_id.clone());
        layers.push(
            fx.store
                .register(parent.as_ref(), &tar[..], &options())
                .unwrap(),
        );
    }
    layers
}

fn kinds(tree: &BTreeMap<PathBuf, String>) -> Vec<(String, String)> {
    tree.iter()
        .map(|(p, d)| {
            (
                p.display().to_string(),
                d.split(' ').next().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

fn three_layers() -> Vec<Vec<u8>> {
    let l1 = TarBuilder::new()
        .dir("a", 0o755)
        .file("a/1", b"a1")
        .file("a/2", b"a2")
        .dir("b", 0o755)
        .file("b/x", b"bx")
        .file("c", b"c-file")
        .dir("d", 0o755)
        .dir("d/e", 0o755)
        .file("d/e/f", b"def")
        .file("d/keep-not", b"hidden by opaque")
        .file("keep", b"kept")
        .symlink("link-dir", "a")
        .finish();
    let l2 = TarBuilder::new()
        .file("a/.wh.1", b"")
        .file(".wh.b", b"")
        .file(".wh.c", b"")
        // Same layer as the whiteout: the new `c` is not hidden by it.
        .dir("c", 0o700)
        .file("c/inner", b"new c")
        .dir("d", 0o755)
        .file("d/.wh..wh..opq", b"")
        .file("d/new", b"after opaque")
        .file("c2", b"c2")
        // A whiteout naming a path under a lower-layer symlink must not follow it.
        .file("link-dir/.wh.2", b"")
        .finish();
    let l3 = TarBuilder::new()
        .dir("b", 0o750)
        .file("b/y", b"by")
        .file("a/.wh.2", b"")
        .file(".wh.ghost", b"")
        .file(".wh..wh.plnk", b"")
        .finish();
    vec![l1, l2, l3]
}

#[test]
fn whiteouts_hide_lower_layers_only() {
    let fx = Fixture::new();
    let layers = register_chain(&fx, &three_layers());
    // Whiteouts are recorded, never materialised.
    for layer in &layers {
        let diff = fx.store.diff_dir(&layer.chain_id).unwrap();
        assert!(
            snapshot(&diff)
                .keys()
                .all(|p| !p.to_string_lossy().contains(".wh.")),
            "{}",
            diff.display()
        );
    }
    let dest = fx.tmp.path().join("rootfs");
    fx.store
        .unpack(&layers, &dest, &UnpackOptions::default())
        .unwrap();
    let tree = snapshot(&dest);
    let got = kinds(&tree);
    let want: Vec<(String, String)> = [
        ("a", "dir"),
        ("b", "dir"),
        ("b/y", "file"),
        ("c", "dir"),
        ("c/inner", "file"),
        ("c2", "file"),
        ("d", "dir"),
        ("d/new", "file"),
        ("keep", "file"),
        // The lower-layer symlink was replaced by the directory the whiteout implies (overlay
        // semantics); `a/2` was not reached through it.
        ("link-dir", "dir"),
    ]
    .iter()
    .map(|(p, k)| (p.to_string(), k.to_string()))
    .collect();
    assert_eq!(got, want, "{tree:#?}");
    assert_eq!(std::fs::read(dest.join("c/inner")).unwrap(), b"new c");
    assert_eq!(std::fs::read(dest.join("b/y")).unwrap(), b"by");
    assert_eq!(
        std::fs::metadata(dest.join("b")).unwrap().mode() & 0o7777,
        0o750
    );
    assert_eq!(
        std::fs::metadata(dest.join("c")).unwrap().mode() & 0o7777,
        0o700
    );
    assert_eq!(
        std::fs::metadata(dest.join("d")).unwrap().mtime(),
        MTIME as i64
    );

    // Unpacking only the first two layers shows `a/2` and `b` gone.
    let dest2 = fx.tmp.path().join("rootfs2");
    fx.store
        .unpack(&layers[..2], &dest2, &UnpackOptions::default())
        .unwrap();
    assert!(dest2.join("a/2").exists());
    assert!(!dest2.join("a/1").exists());
    assert!(!dest2.join("b").exists());
}

#[test]
fn unpacked_files_are_independent_copies() {
    let fx = Fixture::new();
    let layers = register_chain(
        &fx,
        &[TarBuilder::new()
            .file("f", b"original")
            .hardlink("g", "f")
            .finish()],
    );
    let dest = fx.tmp.path().join("rootfs");
    fx.store
        .unpack(&layers, &dest, &UnpackOptions::default())
        .unwrap();
    let diff = fx.store.diff_dir(&layers[0].chain_id).unwrap();
    assert_ne!(
        std::fs::metadata(dest.join("f")).unwrap().ino(),
        std::fs::metadata(diff.join("f")).unwrap().ino()
    );
    assert_eq!(
        std::fs::metadata(dest.join("f")).unwrap().ino(),
        std::fs::metadata(dest.join("g")).unwrap().ino()
    );
    std::fs::write(dest.join("f"), b"changed").unwrap();
    assert_eq!(std::fs::read(diff.join("f")).unwrap(), b"original");
    assert!(fx.store.verify(&layers[0].chain_id).unwrap().is_ok());
}

#[test]
fn a_lower_symlink_is_replaced_not_followed() {
    let fx = Fixture::new();
    let outside = fx.outside();
    let layers = register_chain(
        &fx,
        &[
            TarBuilder::new()
                .symlink("etc", outside.to_str().unwrap())
                .symlink("file", &outside.join("secret").display().to_string())
                .finish(),
            TarBuilder::new()
                .dir("etc", 0o755)
                .file("etc/passwd", b"inside")
                .file("file", b"replaced")
                .finish(),
        ],
    );
    let before = fx.snapshot_outside();
    let dest = fx.tmp.path().join("rootfs");
    fx.store
        .unpack(&layers, &dest, &UnpackOptions::default())
        .unwrap();
    let mut after = fx.snapshot_outside();
    after.retain(|p, _| !p.starts_with("rootfs"));
    assert_eq!(after, before);
    assert_eq!(std::fs::read(dest.join("etc/passwd")).unwrap(), b"inside");
    assert_eq!(std::fs::read(dest.join("file")).unwrap(), b"replaced");
    assert!(
        std::fs::symlink_metadata(dest.join("etc"))
            .unwrap()
            .is_dir()
    );
}

#[test]
fn unpack_checks_the_chain_and_the_destination() {
    let fx = Fixture::new();
    let layers = register_chain(&fx, &three_layers());
    let dest = fx.tmp.path().join("rootfs");
    let skipping = vec![layers[0].clone(), layers[2].clone()];
    assert!(matches!(
        fx.store.unpack(&skipping, &dest, &UnpackOptions::default()),
        Err(LayerError::BrokenChain { index: 1, .. })
    ));
    assert!(matches!(
        fx.store
            .unpack(&layers[1..], &dest, &UnpackOptions::default()),
        Err(LayerError::BrokenChain { index: 0, .. })
    ));
    std::fs::create_dir(&dest).unwrap();
    std::fs::write(dest.join("existing"), b"x").unwrap();
    assert!(matches!(
        fx.store.unpack(&layers, &dest, &UnpackOptions::default()),
        Err(LayerError::DestinationNotEmpty { .. })
    ));
    assert_eq!(std::fs::read(dest.join("existing")).unwrap(), b"x");
    std::fs::remove_file(dest.join("existing")).unwrap();
    // An empty existing directory is fine.
    fx.store
        .unpack(&layers, &dest, &UnpackOptions::default())
        .unwrap();
    assert!(dest.join("c2").exists());
}

#[test]
fn a_failed_unpack_removes_what_it_wrote() {
    let fx = Fixture::new();
    let layers = register_chain(&fx, &three_layers());
    // Corrupt the middle layer: its manifest names a file its tree lacks.
    let diff = fx.store.diff_dir(&layers[1].chain_id).unwrap();
    std::fs::remove_file(diff.join("c2")).unwrap();
    let dest = fx.tmp.path().join("rootfs");
    let err = fx
        .store
        .unpack(&layers, &dest, &UnpackOptions::default())
        .unwrap_err();
    assert!(matches!(err, LayerError::Io { .. }), "{err:?}");
    assert!(!dest.exists());
    let report = fx.store.verify(&layers[1].chain_id).unwrap();
    assert!(!report.is_ok());
}
