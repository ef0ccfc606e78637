//! Several processes on one store.

use std::io::Read;

use hoist_store::digests::sha256_of;
use hoist_store::{GcOptions, Store};

use crate::support::{ChildProc, data, write_image};

fn env(root: &std::path::Path, r: &str, seed: u64, size: usize) -> Vec<(&'static str, String)> {
    vec![
        ("CHILD_ROOT", root.display().to_string()),
        ("CHILD_REF", r.to_owned()),
        ("CHILD_SEED", seed.to_string()),
        ("CHILD_SIZE", size.to_string()),
    ]
}

fn assert_blob(store: &Store, content: &[u8]) {
    let mut back = Vec::new();
    store
        .content()
        .reader(&sha256_of(content))
        .unwrap()
        .read_to_end(&mut back)
        .unwrap();
    assert!(back == content, "stored blob differs from the content");
}

#[test]
fn second_process_waits_for_the_first_and_then_sees_the_blob_committed() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let store = Store::open(root).unwrap();
    let (seed, size) = (7, 2 * 1024 * 1024);

    let mut holder = ChildProc::spawn("hold-then-commit", &env(root, "shared-ref", seed, size));
    assert_eq!(holder.expect_msg(), "half");
    let mut waiter = ChildProc::spawn("try-then-wait", &env(root, "shared-ref", seed, size));
    assert_eq!(
        waiter.expect_msg(),
        "locked",
        "the ingest lock must hold across processes"
    );
    // The waiter is now blocked in the blocking writer; let the holder finish.
    holder.send("go");
    assert_eq!(holder.expect_msg(), "committed");
    assert_eq!(waiter.expect_msg(), "exists");
    holder.wait_success();
    waiter.wait_success();

    assert_blob(&store, &data(seed, size));
    assert!(store.content().ingests().unwrap().is_empty());
}

#[test]
fn two_processes_racing_on_one_blob_write_it_once() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let store = Store::open(root).unwrap();
    let (seed, size) = (11, 8 * 1024 * 1024);
    let mut a = ChildProc::spawn("race", &env(root, "race-ref", seed, size));
    let mut b = ChildProc::spawn("race", &env(root, "race-ref", seed, size));
    assert_eq!(a.expect_msg(), "ready");
    assert_eq!(b.expect_msg(), "ready");
    a.send("go");
    b.send("go");
    let mut outcomes = vec![a.expect_msg(), b.expect_msg()];
    outcomes.sort();
    assert_eq!(outcomes, vec!["committed", "exists"]);
    a.wait_success();
    b.wait_success();
    assert_blob(&store, &data(seed, size));
}

#[test]
fn two_processes_ingesting_the_same_content_under_different_refs_both_succeed() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let store = Store::open(root).unwrap();
    let (seed, size) = (13, 4 * 1024 * 1024);
    let mut a = ChildProc::spawn("race", &env(root, "ref-a", seed, size));
    let mut b = ChildProc::spawn("race", &env(root, "ref-b", seed, size));
    assert_eq!(a.expect_msg(), "ready");
    assert_eq!(b.expect_msg(), "ready");
    a.send("go");
    b.send("go");
    for m in [a.expect_msg(), b.expect_msg()] {
        assert!(m == "committed" || m == "exists", "{m}");
    }
    a.wait_success();
    b.wait_success();
    assert_blob(&store, &data(seed, size));
    assert!(store.content().ingests().unwrap().is_empty());
}

#[test]
fn references_added_by_several_processes_at_once_all_land_in_the_database_and_index() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let store = Store::open(root).unwrap();
    let image = write_image(&store, &[("a.txt", b"a")]);
    let per_child = 15;
    let children: Vec<_> = (0..3)
        .map(|i| {
            ChildProc::spawn(
                "tagger",
                &[
                    ("CHILD_ROOT", root.display().to_string()),
                    ("CHILD_DIGEST", image.manifest.digest().to_string()),
                    ("CHILD_MANIFEST_SIZE", image.manifest.size().to_string()),
                    ("CHILD_PREFIX", format!("p{i}")),
                    ("CHILD_COUNT", per_child.to_string()),
                ],
            )
        })
        .collect();
    for mut c in children {
        assert_eq!(c.expect_msg(), "done");
        c.wait_success();
    }
    assert_eq!(store.metadata().references().unwrap().len(), 3 * per_child);
    assert_eq!(store.layout().names().unwrap().len(), 3 * per_child);
}

#[test]
fn lease_of_a_process_that_died_does_not_protect_its_blob() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let store = Store::open(root).unwrap();
    let blob = store
        .content()
        .put_bytes(b"pulled by a dead process", None)
        .unwrap();
    let mut child = ChildProc::spawn(
        "lease-and-exit",
        &[
            ("CHILD_ROOT", root.display().to_string()),
            ("CHILD_DIGEST", blob.digest.to_string()),
        ],
    );
    let lease_id = child.expect_msg();
    child.wait_success();
    let leases = store.metadata().leases().unwrap();
    assert_eq!(leases.len(), 1);
    assert_eq!(leases[0].id, lease_id);
    assert!(!leases[0].alive, "the holder exited");

    let report = store.gc(&GcOptions::default()).unwrap();
    assert_eq!(report.expired_leases, vec![lease_id]);
    assert_eq!(report.removed_blobs, vec![blob.digest.clone()]);
    assert!(store.metadata().leases().unwrap().is_empty());
}
