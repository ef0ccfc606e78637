//! Interoperability: our `unpack` produces the same tree as `umoci unpack --rootless`.
//!
//! The test writes a small OCI image layout by hand (three gzip layers with whiteouts, an opaque
//! directory, symlinks, hard links and assorted modes), unpacks it with umoci and with the store,
//! and compares the trees: paths, types, permission bits, symlink targets, file contents, hard
//! link structure and mtimes. Without umoci on the machine it is skipped with a message.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use flate2::Compression;
use flate2::write::GzEncoder;
use sha2::{Digest as _, Sha256};
use tar::EntryType;

use super::{Fixture, MTIME, TarBuilder, options};
use crate::layer::{Layer, UnpackOptions};

const UMOCI: &str = "umoci";

fn layers() -> Vec<Vec<u8>> {
    let mut l1 = TarBuilder::new();
    l1.dir("./", 0o755)
        .dir("bin", 0o755)
        .file_mode("bin/tool", b"#!/bin/sh\necho tool\n", 0o755)
        .hardlink("bin/tool-hard", "bin/tool")
        .file_mode("bin/private", b"private", 0o700)
        .dir("etc", 0o755)
        .file_mode("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n", 0o644)
        .file_mode("etc/shadow", b"root:*::0:::::\n", 0o640)
        .file_mode("etc/readonly", b"ro", 0o444)
        .symlink("etc/localtime", "/usr/share/zoneinfo/UTC")
        .dir("usr", 0o755)
        .dir("usr/lib", 0o755)
        .file("usr/lib/libx.so.1", b"\x7fELF library")
        .symlink("usr/lib/libx.so", "libx.so.1")
        .symlink("lib", "usr/lib")
        .dir("data", 0o750)
        .file("data/a", b"data a")
        .file("data/b", b"data b")
        .dir("data/sub", 0o700)
        .file("data/sub/c", b"data c")
        .dir("opaque", 0o755)
        .file("opaque/old1", b"old 1")
        .dir("opaque/olddir", 0o755)
        .file("opaque/olddir/old2", b"old 2")
        .dir("to-file", 0o755)
        .file("to-file/child", b"child")
        .file("to-dir", b"was a file")
        .dir("tmp", 0o1777)
        .file("secret", b"secret");
    let mut h = TarBuilder::header(EntryType::Directory, b"dated", 0, 0o755);
    h.set_mtime(1_111_111_111);
    l1.raw(h, b"");
    let mut h = TarBuilder::header(EntryType::Regular, b"dated/file", 4, 0o644);
    h.set_mtime(1_222_222_222);
    l1.raw(h, b"file");

    let mut l2 = TarBuilder::with_mtime(MTIME + 1000);
    l2.dir("data", 0o750)
        .file("data/.wh.a", b"")
        .dir("opaque", 0o755)
        .file("opaque/.wh..wh..opq", b"")
        .file("opaque/new", b"new after opaque")
        .file("etc/passwd", b"root:x:0:0:root:/root:/bin/bash\n")
        .file("to-file", b"now a file")
        .dir("to-dir", 0o711)
        .file("to-dir/inside", b"inside")
        .symlink("etc/alternative", "/bin/tool")
        .file(".wh.secret", b"");

    let mut l3 = TarBuilder::with_mtime(MTIME + 2000);
    l3.dir("data", 0o755)
        .file("data/.wh.sub", b"")
        .file_mode("data/a", b"data a again", 0o600)
        .file("bin/tool", b"#!/bin/sh\necho tool v2\n")
        .file("bin/pair-1", b"pair")
        .hardlink("bin/pair-2", "bin/pair-1")
        .dir("etc", 0o750)
        .symlink("dangling", "does/not/exist");
    vec![l1.finish(), l2.finish(), l3.finish()]
}

fn hex_sha(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Writes `data` as a blob of the layout and returns its digest hex.
fn blob(layout: &Path, data: &[u8]) -> String {
    let hex = hex_sha(data);
    std::fs::write(layout.join("blobs/sha256").join(&hex), data).unwrap();
    hex
}

/// Writes an OCI image layout holding `layers` (gzip-compressed) under the tag `test`.
fn write_layout(layout: &Path, layers: &[Vec<u8>]) {
    std::fs::create_dir_all(layout.join("blobs/sha256")).unwrap();
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    let mut descriptors = Vec::new();
    let mut diff_ids = Vec::new();
    for tar in layers {
        let mut gz = GzEncoder::new(Vec::new(), Compression::default());
        gz.write_all(tar).unwrap();
        let gz = gz.finish().unwrap();
        let hex = blob(layout, &gz);
        descriptors.push(format!(
            r#"{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:{hex}","size":{}}}"#,
            gz.len()
        ));
        diff_ids.push(format!(r#""sha256:{}""#, hex_sha(tar)));
    }
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","config":{{}},"rootfs":{{"type":"layers","diff_ids":[{}]}},"history":[]}}"#,
        diff_ids.join(",")
    );
    let config_hex = blob(layout, config.as_bytes());
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:{config_hex}","size":{}}},"layers":[{}]}}"#,
        config.len(),
        descriptors.join(",")
    );
    let manifest_hex = blob(layout, manifest.as_bytes());
    let index = format!(
        r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:{manifest_hex}","size":{},"annotations":{{"org.opencontainers.image.ref.name":"test"}}}}]}}"#,
        manifest.len()
    );
    std::fs::write(layout.join("index.json"), index).unwrap();
}

/// What we compare of each path.
#[derive(Debug, PartialEq, Eq)]
struct Entry {
    kind: &'static str,
    mode: u32,
    content: String,
    mtime: (i64, i64),
    /// Index of the first path sharing this inode (hard link structure), for files.
    link_group: Option<PathBuf>,
}

fn describe(root: &Path) -> BTreeMap<PathBuf, Entry> {
    let mut out = BTreeMap::new();
    let mut inodes: BTreeMap<u64, PathBuf> = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let path = e.unwrap().path();
            let m = std::fs::symlink_metadata(&path).unwrap();
            let rel = path.strip_prefix(root).unwrap().to_path_buf();
            let ft = m.file_type();
            let (kind, content) = if ft.is_dir() {
                stack.push(path.clone());
                ("dir", String::new())
            } else if ft.is_symlink() {
                (
                    "symlink",
                    std::fs::read_link(&path).unwrap().display().to_string(),
                )
            } else if ft.is_file() {
                ("file", hex_sha(&std::fs::read(&path).unwrap()))
            } else if ft.is_fifo() {
                ("fifo", String::new())
            } else {
                ("other", String::new())
            };
            let link_group = ft
                .is_file()
                .then(|| inodes.entry(m.ino()).or_insert_with(|| rel.clone()).clone());
            out.insert(
                rel,
                Entry {
                    kind,
                    mode: m.mode() & 0o7777,
                    content,
                    mtime: (m.mtime(), m.mtime_nsec()),
                    link_group,
                },
            );
        }
    }
    // Link groups named by their smallest path, independent of traversal order.
    let mut smallest: BTreeMap<PathBuf, PathBuf> = BTreeMap::new();
    for (p, e) in &out {
        if let Some(g) = &e.link_group {
            smallest.entry(g.clone()).or_insert_with(|| p.clone());
        }
    }
    for e in out.values_mut() {
        if let Some(g) = &e.link_group {
            e.link_group = smallest.get(g).cloned();
        }
    }
    out
}

fn umoci_available() -> bool {
    Command::new(UMOCI)
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

#[test]
fn unpack_matches_umoci_rootless() {
    if !umoci_available() {
        eprintln!(
            "SKIPPED unpack_matches_umoci_rootless: `umoci` is not installed (apt-get install umoci)"
        );
        return;
    }
    let fx = Fixture::new();
    let tars = layers();
    let layout = fx.tmp.path().join("layout");
    write_layout(&layout, &tars);
    let bundle = fx.tmp.path().join("bundle");
    let out = Command::new(UMOCI)
        .args(["unpack", "--rootless", "--image"])
        .arg(format!("{}:test", layout.display()))
        .arg(&bundle)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "umoci failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let theirs = describe(&bundle.join("rootfs"));
    let paths = |t: &BTreeMap<PathBuf, Entry>| t.keys().cloned().collect::<Vec<_>>();
    let root_mode = |p: &Path| std::fs::metadata(p).unwrap().mode() & 0o7777;
    // Once as the current user, once forced rootless (as umoci was), each in its own store.
    let mut results = Vec::new();
    for rootless in [options().rootless, true] {
        let fx = Fixture::new();
        let mut chain: Vec<Layer> = Vec::new();
        for tar in &tars {
            let parent = chain.last().map(|l| l.chain_id.clone());
            let staged = options().rootless(rootless);
            chain.push(
                fx.store
                    .register(parent.as_ref(), &tar[..], &staged)
                    .unwrap(),
            );
        }
        let dest = fx.tmp.path().join("rootfs");
        fx.store
            .unpack(&chain, &dest, &UnpackOptions::default().rootless(rootless))
            .unwrap();
        let ours = describe(&dest);
        assert_eq!(
            paths(&ours),
            paths(&theirs),
            "the same paths (rootless: {rootless})"
        );
        let mut differences = Vec::new();
        for (path, mine) in &ours {
            let other = &theirs[path];
            if mine != other {
                differences.push(format!(
                    "{}:\n  ours   {mine:?}\n  umoci  {other:?}",
                    path.display()
                ));
            }
        }
        assert!(
            differences.is_empty(),
            "trees differ (rootless: {rootless}):\n{}",
            differences.join("\n")
        );
        assert_eq!(root_mode(&dest), root_mode(&bundle.join("rootfs")));
        results.push(ours);
    }
    let ours = &results[0];
    // Sanity: the comparison saw what the layers hold.
    assert!(ours.contains_key(Path::new("opaque/new")));
    assert!(!ours.contains_key(Path::new("opaque/old1")));
    assert!(!ours.contains_key(Path::new("secret")));
    assert_eq!(
        ours[Path::new("bin/pair-2")].link_group.as_deref(),
        Some(Path::new("bin/pair-1"))
    );
    assert_eq!(ours[Path::new("data")].mtime.0, (MTIME + 2000) as i64);
    assert_eq!(
        ours[Path::new("bin")].mtime.0,
        MTIME as i64,
        "an implied directory keeps its metadata"
    );
}
