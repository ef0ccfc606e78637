//! Registration, DiffIDs, ChainIDs, listing, removal, verification and crash leftovers.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;

use oci_spec::image::Digest;
use sha2::{Digest as _, Sha256};

use super::{Fixture, TarBuilder, options, sha256};
use crate::layer::{LayerError, LayerStore, StageOptions, VerifyProblem, chain_id};

/// Yields its data a few bytes at a time, to cross every buffer boundary.
struct Trickle<'a>(&'a [u8], usize);

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.1 = self.1 % 7 + 1;
        let n = self.1.min(buf.len()).min(self.0.len());
        buf[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        Ok(n)
    }
}

#[test]
fn diff_id_is_the_sha256_of_every_byte_of_the_stream() {
    let fx = Fixture::new();
    let mut tar = TarBuilder::new()
        .dir("d", 0o755)
        .file("d/f", &[42u8; 3000])
        .finish();
    // Writers pad archives to a record size: those zeros are part of the DiffID.
    tar.resize(10240, 0);
    let layer = fx
        .store
        .register(None, Trickle(&tar, 0), &options())
        .unwrap();
    assert_eq!(layer.diff_id, sha256(&tar));
    assert_eq!(layer.size, tar.len() as u64);
    assert_eq!(
        layer.chain_id, layer.diff_id,
        "a base layer's ChainID is its DiffID"
    );
    assert_eq!(layer.parent, None);

    // Same entries, different padding: a different layer.
    let mut other = tar.clone();
    other.resize(20480, 0);
    let staged = fx.store.stage(&other[..], &options()).unwrap();
    assert_eq!(*staged.diff_id(), sha256(&other));
    assert_eq!(staged.size(), 20480);
}

#[test]
fn an_expected_diff_id_must_match() {
    let fx = Fixture::new();
    let tar = TarBuilder::new().file("f", b"content").finish();
    let wrong = sha256(b"something else");
    let err = fx.expect_refused(&tar, &StageOptions::default().expect_diff_id(wrong.clone()));
    match err {
        LayerError::DiffIdMismatch { expected, actual } => {
            assert_eq!(expected, wrong);
            assert_eq!(actual, sha256(&tar));
        }
        other => panic!("unexpected {other:?}"),
    }
    let layer = fx
        .store
        .register(
            None,
            &tar[..],
            &StageOptions::default().expect_diff_id(sha256(&tar)),
        )
        .unwrap();
    assert_eq!(layer.diff_id, sha256(&tar));
}

#[test]
fn chain_ids_follow_the_oci_definition() {
    let fx = Fixture::new();
    let base_tar = TarBuilder::new().file("base", b"1").finish();
    let top_tar = TarBuilder::new().file("top", b"2").finish();
    let base = fx.store.register(None, &base_tar[..], &options()).unwrap();
    let top = fx
        .store
        .register(Some(&base.chain_id), &top_tar[..], &options())
        .unwrap();
    let manual = format!(
        "sha256:{}",
        hex::encode(Sha256::digest(format!(
            "{} {}",
            base.chain_id,
            sha256(&top_tar)
        )))
    );
    assert_eq!(top.chain_id.to_string(), manual);
    assert_eq!(top.chain_id, chain_id(Some(&base.chain_id), &top.diff_id));
    assert_eq!(top.parent.as_ref(), Some(&base.chain_id));
    assert_eq!(
        fx.store.chain(&top.chain_id).unwrap(),
        vec![base.clone(), top.clone()]
    );
    assert_eq!(fx.store.get(&top.chain_id).unwrap(), Some(top.clone()));
    let mut listed = fx.store.list().unwrap();
    listed.sort_by(|a, b| {
        a.size
            .cmp(&b.size)
            .then(a.chain_id.as_ref().cmp(b.chain_id.as_ref()))
    });
    assert_eq!(listed.len(), 2);
    assert!(listed.contains(&base) && listed.contains(&top));

    // The same DiffID on another parent is another layer.
    let other = fx.store.register(None, &top_tar[..], &options()).unwrap();
    assert_ne!(other.chain_id, top.chain_id);
    assert_eq!(other.diff_id, top.diff_id);
}

#[test]
fn registering_an_existing_layer_returns_it() {
    let fx = Fixture::new();
    let tar = TarBuilder::new().file("f", b"same").finish();
    let first = fx.store.register(None, &tar[..], &options()).unwrap();
    let second = fx.store.register(None, &tar[..], &options()).unwrap();
    assert_eq!(first, second);
    assert_eq!(fx.store.chain_ids().unwrap(), vec![first.chain_id.clone()]);
    fx.assert_store_empty_tmp();

    // Two threads committing the same layer at once: both succeed with the same layer.
    let fx = Fixture::new();
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| s.spawn(|| fx.store.register(None, &tar[..], &options())))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap().unwrap())
            .collect()
    });
    assert!(results.iter().all(|l| *l == results[0]));
    assert_eq!(fx.store.chain_ids().unwrap().len(), 1);
    fx.assert_store_empty_tmp();
}

impl Fixture {
    fn assert_store_empty_tmp(&self) {
        let tmp: Vec<_> = std::fs::read_dir(self.tmp.path().join("store/tmp"))
            .unwrap()
            .collect();
        assert!(tmp.is_empty(), "temporary files left behind: {tmp:?}");
    }
}

#[test]
fn commit_needs_the_parent_in_the_store() {
    let fx = Fixture::new();
    let tar = TarBuilder::new().file("f", b"x").finish();
    let staged = fx.store.stage(&tar[..], &options()).unwrap();
    let missing = sha256(b"no such layer");
    match fx.store.commit(Some(&missing), staged) {
        Err(LayerError::ParentNotFound { parent }) => assert_eq!(parent, missing),
        other => panic!("unexpected {other:?}"),
    }
    fx.assert_store_empty();
}

#[test]
fn a_dropped_stage_leaves_nothing() {
    let fx = Fixture::new();
    let tar = TarBuilder::new().file("f", b"x").finish();
    let staged = fx.store.stage(&tar[..], &options()).unwrap();
    assert_eq!(
        std::fs::read_dir(fx.tmp.path().join("store/tmp"))
            .unwrap()
            .count(),
        2,
        "directory and lock"
    );
    drop(staged);
    fx.assert_store_empty();
}

#[test]
fn removal_refuses_parents_and_is_complete() {
    let fx = Fixture::new();
    let base = fx
        .store
        .register(
            None,
            &TarBuilder::new()
                .dir("ro", 0o555)
                .file("ro/f", b"1")
                .finish()[..],
            &options(),
        )
        .unwrap();
    let top = fx
        .store
        .register(
            Some(&base.chain_id),
            &TarBuilder::new().file("g", b"2").finish()[..],
            &options(),
        )
        .unwrap();
    match fx.store.remove(&base.chain_id) {
        Err(LayerError::HasChildren { chain_id, child }) => {
            assert_eq!(chain_id, base.chain_id);
            assert_eq!(child, top.chain_id);
        }
        other => panic!("unexpected {other:?}"),
    }
    fx.store.remove(&top.chain_id).unwrap();
    fx.store.remove(&base.chain_id).unwrap();
    assert!(matches!(
        fx.store.remove(&base.chain_id),
        Err(LayerError::NotFound { .. })
    ));
    assert_eq!(fx.store.get(&base.chain_id).unwrap(), None);
    assert!(fx.store.chain_ids().unwrap().is_empty());
    fx.assert_store_empty();
}

#[test]
fn digests_that_cannot_name_layers_are_refused() {
    let fx = Fixture::new();
    let sha512 = Digest::try_from(format!("sha512:{}", "a".repeat(128))).unwrap();
    assert!(matches!(
        fx.store.get(&sha512),
        Err(LayerError::InvalidDigest { .. })
    ));
    assert!(matches!(
        fx.store.remove(&sha512),
        Err(LayerError::InvalidDigest { .. })
    ));
}

#[test]
fn open_removes_leftovers_of_dead_processes_but_not_live_stages() {
    let fx = Fixture::new();
    let tmp = fx.tmp.path().join("store/tmp");
    // A leftover: a directory whose lock nobody holds.
    std::fs::create_dir_all(tmp.join("stage-1-2-3/diff/sub")).unwrap();
    std::fs::write(tmp.join("stage-1-2-3/diff/sub/f"), b"x").unwrap();
    std::fs::set_permissions(
        tmp.join("stage-1-2-3/diff/sub"),
        std::fs::Permissions::from_mode(0o500),
    )
    .unwrap();
    std::fs::write(tmp.join("stage-1-2-3.lock"), b"").unwrap();
    // A stage in progress in this process holds its lock.
    let tar = TarBuilder::new().file("f", b"x").finish();
    let live = fx.store.stage(&tar[..], &options()).unwrap();
    let reopened = LayerStore::open(&fx.tmp.path().join("store")).unwrap();
    assert!(!tmp.join("stage-1-2-3").exists());
    assert!(!tmp.join("stage-1-2-3.lock").exists());
    assert_eq!(
        std::fs::read_dir(&tmp).unwrap().count(),
        2,
        "the live stage is kept"
    );
    let layer = reopened.commit(None, live).unwrap();
    assert_eq!(layer.diff_id, sha256(&tar));
    fx.assert_store_empty_tmp();
}

#[test]
fn verify_finds_every_kind_of_tampering() {
    let fx = Fixture::new();
    let tar = TarBuilder::new()
        .dir("d", 0o755)
        .file("d/a", b"aaaa")
        .file("d/b", b"bbbb")
        .file("d/c", b"cccc")
        .hardlink("d/a-link", "d/a")
        .symlink("d/s", "a")
        .file("gone", b"g")
        .finish();
    let layer = fx.store.register(None, &tar[..], &options()).unwrap();
    let report = fx.store.verify(&layer.chain_id).unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    let diff = fx.store.diff_dir(&layer.chain_id).unwrap();

    std::fs::write(diff.join("d/b"), b"BBBB").unwrap();
    std::fs::set_permissions(diff.join("d/c"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::remove_file(diff.join("gone")).unwrap();
    std::fs::write(diff.join("d/extra"), b"e").unwrap();
    std::fs::remove_file(diff.join("d/s")).unwrap();
    std::os::unix::fs::symlink("elsewhere", diff.join("d/s")).unwrap();
    std::fs::remove_file(diff.join("d/a-link")).unwrap();
    std::fs::copy(diff.join("d/a"), diff.join("d/a-link")).unwrap();

    let report = fx.store.verify(&layer.chain_id).unwrap();
    let shown: Vec<String> = report.problems.iter().map(ToString::to_string).collect();
    let has = |needle: &str| shown.iter().any(|p| p.contains(needle));
    assert!(has("`d/b`: contents differ"), "{shown:#?}");
    assert!(has("`d/c`: mode is 600"), "{shown:#?}");
    assert!(
        report.problems.contains(&VerifyProblem::Missing {
            path: "gone".into()
        }),
        "{shown:#?}"
    );
    assert!(
        report.problems.contains(&VerifyProblem::Unexpected {
            path: "d/extra".into()
        }),
        "{shown:#?}"
    );
    assert!(has("`d/s`: symlink target differs"), "{shown:#?}");
    assert!(has("hard link"), "{shown:#?}");

    // Metadata that does not describe the layer.
    let meta = diff.parent().unwrap().join("meta");
    std::fs::write(&meta, "garbage").unwrap();
    let report = fx.store.verify(&layer.chain_id).unwrap();
    assert!(
        matches!(report.problems.as_slice(), [VerifyProblem::Metadata { .. }]),
        "{:?}",
        report.problems
    );
    assert!(matches!(
        fx.store.get(&layer.chain_id),
        Err(LayerError::Corrupt { .. })
    ));
    assert!(
        fx.store.list().unwrap().is_empty(),
        "corrupt layers are skipped by list"
    );
    assert_eq!(
        fx.store.chain_ids().unwrap(),
        vec![layer.chain_id.clone()],
        "but still found for fsck"
    );
}

#[test]
fn leased_layers_cannot_be_removed() {
    let fx = Fixture::new();
    let tar = TarBuilder::new().file("f", b"leased").finish();
    let (layer, lease) = fx
        .store
        .register_leased(None, &tar[..], &options())
        .unwrap();
    assert_eq!(lease.chain_id(), &layer.chain_id);
    let second = fx.store.lease(&layer.chain_id).unwrap();
    // Another handle on the store (as another process would have) sees the leases too.
    let other = LayerStore::open(&fx.tmp.path().join("store")).unwrap();
    match other.remove(&layer.chain_id) {
        Err(err @ LayerError::InUse { .. }) => assert!(err.is_retryable()),
        other => panic!("unexpected {other:?}"),
    }
    drop(lease);
    assert!(matches!(
        other.remove(&layer.chain_id),
        Err(LayerError::InUse { .. })
    ));
    drop(second);
    other.remove(&layer.chain_id).unwrap();
    assert!(matches!(
        fx.store.lease(&layer.chain_id),
        Err(LayerError::NotFound { .. })
    ));

    // Committing a layer that exists leases the existing one.
    let first = fx.store.register(None, &tar[..], &options()).unwrap();
    let (again, lease) = fx
        .store
        .register_leased(None, &tar[..], &options())
        .unwrap();
    assert_eq!(first, again);
    assert!(matches!(
        fx.store.remove(&first.chain_id),
        Err(LayerError::InUse { .. })
    ));
    drop(lease);
    fx.store.remove(&first.chain_id).unwrap();
    fx.assert_store_empty();
}

#[test]
fn a_lease_taken_during_removal_finds_the_layer_gone() {
    let fx = Fixture::new();
    let tar = TarBuilder::new().file("f", b"x").finish();
    let layer = fx.store.register(None, &tar[..], &options()).unwrap();
    std::thread::scope(|s| {
        let remover = s.spawn(|| fx.store.remove(&layer.chain_id));
        let leaser = s.spawn(|| fx.store.lease(&layer.chain_id));
        let removed = remover.join().unwrap();
        let leased = leaser.join().unwrap();
        // Exactly one wins: either the removal, or the lease (and the removal is refused).
        match (removed, leased) {
            (Ok(()), Err(LayerError::NotFound { .. })) => {}
            (Err(LayerError::InUse { .. }), Ok(_)) => {}
            (r, l) => panic!("removal {r:?}, lease {l:?}"),
        }
    });
}
