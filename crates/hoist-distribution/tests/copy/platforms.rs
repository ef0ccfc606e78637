//! Multi-platform images: all platforms with the index unchanged, or one platform alone.

use hoist_distribution::copy::{CopyError, PlatformSelection};
use hoist_distribution::transport::{Error, Platform, TransportContext};
use hoist_test_support::Registry;

use crate::support::*;

#[tokio::test]
async fn all_platforms_keep_the_index_and_every_image_through_a_registry() {
    let dir = tempfile::tempdir().unwrap();
    let multi = multi_platform_layout(&dir.path().join("src"));
    let registry = Registry::start().await.unwrap();
    let ctx = registry_context();
    let opts = options(PlatformSelection::All);
    let remote = format!("docker://{}/hoist/multi:1", registry.host());

    let report = copy_names(
        &format!("oci:{}:multi", multi.layout.root.display()),
        &remote,
        &ctx,
        &opts,
    )
    .await
    .unwrap();
    assert_eq!(report.manifest_digest.to_string(), multi.index_digest);
    assert_eq!(report.manifests_written, 4, "three images and the index");
    let images: Vec<String> = report.images.iter().map(|d| d.to_string()).collect();
    assert_eq!(
        images,
        [
            multi.amd64.digest.clone(),
            multi.arm64.digest.clone(),
            multi.armv7.digest.clone()
        ]
    );
    // The base layer is shared: 3 configs + 1 base + 3 top layers.
    assert_eq!(report.blobs_copied, 7);
    assert_eq!(
        skopeo_raw(&remote),
        multi.index,
        "the index is stored byte for byte"
    );
    for child in [&multi.amd64, &multi.arm64, &multi.armv7] {
        let by_digest = format!("docker://{}/hoist/multi@{}", registry.host(), child.digest);
        assert_eq!(skopeo_raw(&by_digest), child.manifest);
    }

    let back = dir.path().join("back");
    let report = copy_names(&remote, &format!("oci:{}:all", back.display()), &ctx, &opts)
        .await
        .unwrap();
    assert_eq!(report.manifest_digest.to_string(), multi.index_digest);
    let mut expected: Vec<String> = [&multi.amd64, &multi.arm64, &multi.armv7]
        .iter()
        .flat_map(|i| {
            let mut b = i.blobs();
            b.push(i.digest.clone());
            b
        })
        .chain([multi.index_digest.clone()])
        .collect();
    expected.sort();
    expected.dedup();
    assert_eq!(layout_blobs(&back), expected);
}

#[tokio::test]
async fn one_platform_writes_only_the_matching_image() {
    let dir = tempfile::tempdir().unwrap();
    let multi = multi_platform_layout(&dir.path().join("src"));
    let ctx = TransportContext::default();
    let src = format!("oci:{}:multi", multi.layout.root.display());
    let dst = dir.path().join("arm64");

    let opts = options(PlatformSelection::One(
        Platform::parse("linux/aarch64").unwrap(),
    ));
    let report = copy_names(&src, &format!("oci:{}:arm", dst.display()), &ctx, &opts)
        .await
        .unwrap();
    assert_eq!(report.manifest_digest.to_string(), multi.arm64.digest);
    assert_eq!(report.manifests_written, 1);
    let entries = index_entries(&dst);
    assert_eq!(entries.len(), 1);
    assert_eq!(
        entries[0]["digest"].as_str(),
        Some(multi.arm64.digest.as_str())
    );
    assert_eq!(entries[0]["mediaType"].as_str(), Some(OCI_MANIFEST));
    let mut expected = multi.arm64.blobs();
    expected.push(multi.arm64.digest.clone());
    expected.sort();
    assert_eq!(
        layout_blobs(&dst),
        expected,
        "nothing of the other platforms"
    );

    // No arm/v8 entry: a 32-bit ARM v8 machine gets the compatible arm/v7 image.
    let opts = options(PlatformSelection::One(
        Platform::parse("linux/arm/v8").unwrap(),
    ));
    let report = copy_names(
        &src,
        &format!("oci:{}:arm32", dir.path().join("arm32").display()),
        &ctx,
        &opts,
    )
    .await
    .unwrap();
    assert_eq!(report.manifest_digest.to_string(), multi.armv7.digest);

    let opts = options(PlatformSelection::One(
        Platform::parse("linux/s390x").unwrap(),
    ));
    let err = copy_names(
        &src,
        &format!("oci:{}:none", dir.path().join("none").display()),
        &ctx,
        &opts,
    )
    .await
    .unwrap_err();
    match err {
        CopyError::NoMatchingPlatform { available, .. } => {
            assert_eq!(available, ["linux/amd64", "linux/arm64", "linux/arm/v7"]);
        }
        other => panic!("expected NoMatchingPlatform, got {other}"),
    }
}

#[tokio::test]
async fn an_entry_without_platform_is_the_last_resort() {
    let dir = tempfile::tempdir().unwrap();
    let mut layout = Layout::new(&dir.path().join("src"));
    let generic = layout.image(("linux", "amd64", None), &[vec![("a", b"generic")]]);
    let arm = layout.image(("linux", "arm64", None), &[vec![("a", b"arm")]]);
    let (index, digest) = layout.index(&[(&generic, None), (&arm, Some(("linux", "arm64", None)))]);
    layout.name("mixed", OCI_INDEX, &digest, index.len());
    let ctx = TransportContext::default();
    let src = format!("oci:{}:mixed", layout.root.display());

    let arm64 = options(PlatformSelection::One(
        Platform::parse("linux/arm64").unwrap(),
    ));
    let report = copy_names(
        &src,
        &format!("oci:{}", dir.path().join("a").display()),
        &ctx,
        &arm64,
    )
    .await
    .unwrap();
    assert_eq!(
        report.manifest_digest.to_string(),
        arm.digest,
        "a matching platform wins over an earlier entry without one"
    );
    let other = options(PlatformSelection::One(
        Platform::parse("linux/riscv64").unwrap(),
    ));
    let report = copy_names(
        &src,
        &format!("oci:{}", dir.path().join("b").display()),
        &ctx,
        &other,
    )
    .await
    .unwrap();
    assert_eq!(report.manifest_digest.to_string(), generic.digest);
}

#[tokio::test]
async fn an_index_cannot_go_into_a_docker_archive_but_one_platform_can() {
    let dir = tempfile::tempdir().unwrap();
    let multi = multi_platform_layout(&dir.path().join("src"));
    let ctx = TransportContext::default();
    let src = format!("oci:{}:multi", multi.layout.root.display());
    let archive = dir.path().join("docker.tar");
    let dst = format!("docker-archive:{}:example.com/multi:1", archive.display());

    let err = copy_names(&src, &dst, &ctx, &options(PlatformSelection::All))
        .await
        .unwrap_err();
    match &err {
        CopyError::Transport(Error::UnsupportedManifest {
            media_type, hint, ..
        }) => {
            assert_eq!(media_type, OCI_INDEX);
            assert!(hint.is_some(), "the error says what to do");
        }
        other => panic!("expected UnsupportedManifest, got {other}"),
    }
    assert!(err.to_string().contains("single platform"), "{err}");
    assert!(!archive.exists(), "nothing was written");

    let amd64 = options(PlatformSelection::One(
        Platform::parse("linux/amd64").unwrap(),
    ));
    copy_names(&src, &dst, &ctx, &amd64).await.unwrap();
    let inspected = skopeo_inspect(&dst);
    assert_eq!(inspected["Architecture"].as_str(), Some("amd64"));
}
