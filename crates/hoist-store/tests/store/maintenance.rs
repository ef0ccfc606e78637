//! fsck and gc on a store on disk.

use std::io::Write;
use std::os::unix::fs::FileExt;
use std::time::Duration;

use hoist_store::{FsckOptions, FsckProblem, GcOptions, LeaseOptions, LeaseResource, Store};

use crate::support::{age_dir, blob_path, write_image};

const NAME: &str = "127.0.0.1:5000/library/hello:1.0";

#[test]
fn fsck_finds_a_blob_corrupted_on_disk_and_repair_removes_it_so_it_can_be_fetched_again() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let files: &[(&str, &[u8])] = &[("etc/", b""), ("etc/motd", b"welcome\n")];
    let image = write_image(&store, files);
    store.add_reference(NAME, &image.manifest).unwrap();
    assert!(store.fsck(&FsckOptions::default()).unwrap().is_clean());

    // Flip one byte in the middle of the layer, keeping its size.
    let path = blob_path(dir.path(), &image.layer);
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let mut b = [0u8; 1];
    let mid = f.metadata().unwrap().len() / 2;
    f.read_exact_at(&mut b, mid).unwrap();
    f.write_at(&[b[0] ^ 0x40], mid).unwrap();

    let report = store.fsck(&FsckOptions::default()).unwrap();
    let corrupt: Vec<_> = report
        .findings
        .iter()
        .filter_map(|f| match &f.problem {
            FsckProblem::CorruptBlob { digest, .. } => Some(digest.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(corrupt, vec![image.layer.clone()]);
    assert!(path.exists(), "a check alone removes nothing");

    let report = store.fsck(&FsckOptions { repair: true }).unwrap();
    assert!(
        report.unrepaired().next().is_none(),
        "{:?}",
        report.findings
    );
    assert!(!path.exists(), "repair removed the corrupt blob");
    assert!(store.layout().resolve(NAME).unwrap().is_none());

    // The next pull writes the layer again and re-tags: the store is whole.
    let again = write_image(&store, files);
    assert_eq!(again.layer, image.layer);
    store.add_reference(NAME, &again.manifest).unwrap();
    assert!(store.fsck(&FsckOptions::default()).unwrap().is_clean());
}

#[test]
fn gc_removes_unreferenced_blobs_and_stale_ingests_but_keeps_held_leased_and_fresh_ones() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let image = write_image(&store, &[("a", b"kept")]);
    store.add_reference(NAME, &image.manifest).unwrap();
    let gone = write_image(&store, &[("b", b"dropped")]);
    store
        .add_reference("127.0.0.1:5000/library/gone:1", &gone.manifest)
        .unwrap();
    assert!(
        store
            .remove_reference("127.0.0.1:5000/library/gone:1")
            .unwrap()
    );

    for r in ["stale", "stale-but-held", "stale-but-leased", "fresh"] {
        let mut w = store.content().writer(r, None, None).unwrap();
        w.write_all(r.as_bytes()).unwrap();
    }
    let ingest_root = dir.path().join("ingest");
    for e in std::fs::read_dir(&ingest_root).unwrap() {
        let d = e.unwrap().path();
        let meta = std::fs::read_to_string(d.join("meta.json")).unwrap();
        if !meta.contains("\"fresh\"") {
            age_dir(&d, 3 * 24 * 3600);
        }
    }
    let _held = store
        .content()
        .writer("stale-but-held", None, None)
        .unwrap();
    let lease = store.lease(&LeaseOptions::default()).unwrap();
    lease
        .add(&LeaseResource::Ingest("stale-but-leased".into()))
        .unwrap();

    let report = store.gc(&GcOptions::default()).unwrap();
    let mut removed = report.removed_blobs.clone();
    removed.sort_by(|a, b| a.as_ref().cmp(b.as_ref()));
    let mut want = vec![
        gone.manifest.digest().clone(),
        gone.config.clone(),
        gone.layer.clone(),
    ];
    want.sort_by(|a, b| a.as_ref().cmp(b.as_ref()));
    assert_eq!(removed, want);
    assert_eq!(report.removed_ingests, vec!["stale".to_owned()]);
    let left: Vec<_> = store
        .content()
        .ingests()
        .unwrap()
        .into_iter()
        .map(|i| i.reference)
        .collect();
    assert_eq!(left, vec!["fresh", "stale-but-held", "stale-but-leased"]);
    for d in [image.manifest.digest(), &image.config, &image.layer] {
        assert!(store.content().contains(d).unwrap());
    }
    assert!(store.fsck(&FsckOptions::default()).unwrap().is_clean());

    // With a threshold of zero, only what is held or leased survives.
    let report = store
        .gc(&GcOptions {
            ingest_max_age: Duration::ZERO,
            ..GcOptions::default()
        })
        .unwrap();
    assert_eq!(report.removed_ingests, vec!["fresh".to_owned()]);
}
