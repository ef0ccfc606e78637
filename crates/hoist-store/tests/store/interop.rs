//! Interoperability with skopeo and umoci: they read the layout hoist writes, and hoist reads the
//! layouts they write.

use std::io::Read;
use std::path::Path;
use std::process::Command;

use hoist_store::{FsckOptions, Store};

use crate::support::write_image;

const NAME: &str = "127.0.0.1:5000/library/hello:3.20";

/// Path of a required interop tool; fails the test with installation advice when it is missing.
fn tool(name: &str) -> String {
    for dir in ["/usr/bin", "/usr/local/bin", "/bin"] {
        let p = Path::new(dir).join(name);
        if p.is_file() {
            return p.display().to_string();
        }
    }
    if let Ok(out) = Command::new("which").arg(name).output()
        && out.status.success()
    {
        return String::from_utf8_lossy(&out.stdout).trim().to_owned();
    }
    panic!(
        "{name} is not installed: the interop tests need it. Install it (Debian/Ubuntu: \
         `apt-get install {name}`, or run scripts/install-deps.sh, which CI runs)"
    );
}

fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn files() -> Vec<(&'static str, &'static [u8])> {
    vec![
        ("etc/", b""),
        ("etc/os-release", b"NAME=hoist-test\n"),
        ("hello.txt", b"hello from hoist\n"),
    ]
}

#[test]
fn skopeo_inspects_an_image_hoist_stored_under_its_full_reference() {
    let skopeo = tool("skopeo");
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let image = write_image(&store, &files());
    store.add_reference(NAME, &image.manifest).unwrap();
    let target = format!("oci:{}:{NAME}", dir.path().display());

    let raw = run(Command::new(&skopeo).args(["inspect", "--raw", &target]));
    assert_eq!(
        raw, image.manifest_bytes,
        "skopeo returns the stored manifest"
    );

    let out = run(Command::new(&skopeo).args(["inspect", &target]));
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["Digest"], image.manifest.digest().to_string());
    assert_eq!(v["Layers"][0], image.layer.to_string());
    assert_eq!(v["Architecture"], "amd64");

    let cfg = run(Command::new(&skopeo).args(["inspect", "--config", "--raw", &target]));
    let cfg: serde_json::Value = serde_json::from_slice(&cfg).unwrap();
    assert_eq!(cfg["rootfs"]["diff_ids"][0], image.diff_id.to_string());
}

#[test]
fn umoci_unpacks_an_image_hoist_stored() {
    let umoci = tool("umoci");
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("store")).unwrap();
    let image = write_image(&store, &files());
    store.add_reference(NAME, &image.manifest).unwrap();
    let bundle = dir.path().join("bundle");
    run(Command::new(&umoci).args([
        "unpack",
        "--rootless",
        "--image",
        &format!("{}:{NAME}", store.root().display()),
        &bundle.display().to_string(),
    ]));
    let rootfs = bundle.join("rootfs");
    assert_eq!(
        std::fs::read(rootfs.join("hello.txt")).unwrap(),
        b"hello from hoist\n"
    );
    assert_eq!(
        std::fs::read(rootfs.join("etc/os-release")).unwrap(),
        b"NAME=hoist-test\n"
    );
    // umoci only read the layout: the store is still sound.
    assert!(store.fsck(&FsckOptions::default()).unwrap().is_clean());
}

#[test]
fn hoist_reads_a_layout_skopeo_wrote_and_one_skopeo_added_to_the_store() {
    let skopeo = tool("skopeo");
    let dir = tempfile::tempdir().unwrap();
    let src_root = dir.path().join("src");
    let src = Store::open(&src_root).unwrap();
    let image = write_image(&src, &files());
    src.add_reference(NAME, &image.manifest).unwrap();
    let from = format!("oci:{}:{NAME}", src_root.display());

    // A fresh layout written entirely by skopeo.
    let dst_root = dir.path().join("dst");
    run(Command::new(&skopeo).args([
        "--insecure-policy",
        "copy",
        "--quiet",
        &from,
        &format!("oci:{}:copied", dst_root.display()),
    ]));
    let layout = hoist_store::Layout::open_existing(&dst_root).unwrap();
    let named = layout.resolve("copied").unwrap().unwrap();
    assert_eq!(named.digest(), image.manifest.digest());
    let dst = Store::open(&dst_root).unwrap();
    assert_eq!(
        dst.resolve("copied").unwrap().unwrap().digest(),
        image.manifest.digest()
    );
    let report = dst.fsck(&FsckOptions::default()).unwrap();
    assert!(report.is_clean(), "{:?}", report.findings);
    assert_eq!(report.blobs_checked, 3);
    let mut layer = Vec::new();
    dst.content()
        .reader(&image.layer)
        .unwrap()
        .read_to_end(&mut layer)
        .unwrap();
    assert_eq!(hoist_store::digests::sha256_of(&layer), image.layer);

    // skopeo writing into a store hoist uses: hoist sees the new name, nothing breaks.
    let other = dir.path().join("other");
    let other_store = Store::open(&other).unwrap();
    let second = write_image(&other_store, &[("other.txt", b"another image\n")]);
    other_store
        .add_reference("second", &second.manifest)
        .unwrap();
    run(Command::new(&skopeo).args([
        "--insecure-policy",
        "copy",
        "--quiet",
        &format!("oci:{}:second", other.display()),
        &format!("oci:{}:127.0.0.1:5000/library/second:1", src_root.display()),
    ]));
    let src = Store::open(&src_root).unwrap();
    assert_eq!(
        src.resolve("127.0.0.1:5000/library/second:1")
            .unwrap()
            .unwrap()
            .digest(),
        second.manifest.digest()
    );
    assert_eq!(
        src.resolve(NAME).unwrap().unwrap().digest(),
        image.manifest.digest(),
        "hoist's own name survived skopeo's rewrite of index.json"
    );
    let report = src.fsck(&FsckOptions::default()).unwrap();
    assert!(report.is_clean(), "{:?}", report.findings);
    // gc keeps what skopeo named.
    let gc = src.gc(&Default::default()).unwrap();
    assert!(gc.removed_blobs.is_empty(), "{:?}", gc.removed_blobs);
}
