//! Images travel through every transport and come back with the same digests.

use hoist_distribution::copy::PlatformSelection;
use hoist_distribution::transport::{ImageName, TransportContext, open_source};
use hoist_registry::ImageRef;
use hoist_store::Store;
use hoist_test_support::Registry;

use crate::support::*;

#[tokio::test]
async fn oci_to_registry_to_oci_archive_to_oci_preserves_every_digest() {
    let dir = tempfile::tempdir().unwrap();
    let (_layout, image) = simple_layout(&dir.path().join("src"));
    let registry = Registry::start().await.unwrap();
    let ctx = registry_context();
    let opts = options(PlatformSelection::Current);
    let src = format!("oci:{}:v1", dir.path().join("src").display());
    let remote = format!("docker://{}/hoist/round-trip:v1", registry.host());
    let archive = dir.path().join("image.tar");
    let archived = format!("oci-archive:{}:v1", archive.display());
    let back = format!("oci:{}:copied", dir.path().join("back").display());

    let to_registry = copy_names(&src, &remote, &ctx, &opts).await.unwrap();
    assert_eq!(to_registry.manifest_digest.to_string(), image.digest);
    assert_eq!(to_registry.blobs_copied, 3, "config and two layers");
    assert_eq!(to_registry.bytes_copied, {
        image
            .blobs()
            .iter()
            .map(|d| std::fs::metadata(_layout.blob_path(d)).unwrap().len())
            .sum::<u64>()
    });
    assert_eq!(
        skopeo_inspect(&remote)["Digest"].as_str(),
        Some(image.digest.as_str()),
        "skopeo sees the same manifest in the registry"
    );

    let to_archive = copy_names(&remote, &archived, &ctx, &opts).await.unwrap();
    assert_eq!(to_archive.manifest_digest.to_string(), image.digest);
    assert!(archive.is_file());

    let to_dir = copy_names(&archived, &back, &ctx, &opts).await.unwrap();
    assert_eq!(to_dir.manifest_digest.to_string(), image.digest);
    for blob in image.blobs() {
        let original = std::fs::read(_layout.blob_path(&blob)).unwrap();
        let copied = std::fs::read(
            dir.path()
                .join("back/blobs/sha256")
                .join(blob.trim_start_matches("sha256:")),
        )
        .unwrap();
        assert_eq!(original, copied, "blob {blob} is byte-identical");
    }
    let entries = index_entries(&dir.path().join("back"));
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["digest"].as_str(), Some(image.digest.as_str()));
    assert_eq!(entries[0]["annotations"][REF_NAME].as_str(), Some("copied"));
    assert_eq!(
        skopeo_inspect(&back)["Digest"].as_str(),
        Some(image.digest.as_str())
    );
    assert!(temp_files(&dir.path().join("back")).is_empty());
    assert!(
        temp_files(dir.path()).is_empty(),
        "no temporary archive left beside it"
    );
}

#[tokio::test]
async fn docker_archive_round_trip_stores_layers_uncompressed_under_their_diff_ids() {
    let dir = tempfile::tempdir().unwrap();
    let (layout, image) = simple_layout(&dir.path().join("src"));
    let ctx = TransportContext::default();
    let opts = options(PlatformSelection::Current);
    let archive = dir.path().join("saved.tar");
    copy_names(
        &format!("oci:{}:v1", layout.root.display()),
        &format!(
            "docker-archive:{}:example.com/hoist/saved:1",
            archive.display()
        ),
        &ctx,
        &opts,
    )
    .await
    .unwrap();

    let name = ImageName::parse(&format!("docker-archive:{}", archive.display())).unwrap();
    let source = open_source(&name, &ctx).await.unwrap();
    let (bytes, media_type) = source.get_manifest(None).await.unwrap();
    assert_eq!(
        media_type,
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    let manifest: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(
        manifest["config"]["digest"].as_str(),
        Some(image.config.as_str())
    );
    let layers: Vec<&str> = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            assert_eq!(
                l["mediaType"].as_str(),
                Some("application/vnd.docker.image.rootfs.diff.tar")
            );
            l["digest"].as_str().unwrap()
        })
        .collect();
    assert_eq!(layers, image.diff_ids);

    // The tag is recorded the way docker writes it, and selects the image.
    let tagged = ImageName::parse(&format!(
        "docker-archive:{}:example.com/hoist/saved:1",
        archive.display()
    ))
    .unwrap();
    let again = open_source(&tagged, &ctx).await.unwrap();
    assert_eq!(
        again.get_manifest(None).await.unwrap().0,
        bytes,
        "stable manifest"
    );

    let back = dir.path().join("back");
    let report = copy_names(
        &format!("docker-archive:{}", archive.display()),
        &format!("oci:{}:from-archive", back.display()),
        &ctx,
        &opts,
    )
    .await
    .unwrap();
    assert_eq!(report.manifest_digest.to_string(), sha256(&bytes));
    for diff_id in &image.diff_ids {
        let tar = std::fs::read(
            back.join("blobs/sha256")
                .join(diff_id.trim_start_matches("sha256:")),
        )
        .unwrap();
        assert_eq!(&sha256(&tar), diff_id);
    }
}

#[tokio::test]
async fn store_round_trip_names_the_image_in_the_store_layout() {
    let dir = tempfile::tempdir().unwrap();
    let (layout, image) = simple_layout(&dir.path().join("src"));
    let store = Store::open(dir.path().join("store")).unwrap();
    let ctx = TransportContext::default().with_store(store.clone());
    let opts = options(PlatformSelection::Current);
    let reference = "127.0.0.1:5000/hoist/stored:1";

    let report = copy_names(
        &format!("oci:{}:v1", layout.root.display()),
        reference,
        &ctx,
        &opts,
    )
    .await
    .unwrap();
    assert_eq!(report.manifest_digest.to_string(), image.digest);
    let full = ImageRef::parse(reference).unwrap().to_string();
    let resolved = store.resolve(&full).unwrap().unwrap();
    assert_eq!(resolved.digest().to_string(), image.digest);
    for blob in image.blobs() {
        assert!(store.content().contains(&blob.parse().unwrap()).unwrap());
    }
    assert!(
        store.content().ingests().unwrap().is_empty(),
        "no ingest left"
    );
    assert_eq!(
        skopeo_inspect(&format!("oci:{}:{full}", store.root().display()))["Digest"].as_str(),
        Some(image.digest.as_str()),
        "skopeo reads the image from the store's layout"
    );

    // By digest, without a name for it in the store.
    let pinned = format!("store:127.0.0.1:5000/hoist/other@{}", image.digest);
    let report = copy_names(
        &pinned,
        &format!("oci:{}", dir.path().join("pinned").display()),
        &ctx,
        &opts,
    )
    .await
    .unwrap();
    assert_eq!(report.manifest_digest.to_string(), image.digest);

    let back = dir.path().join("back");
    let report = copy_names(
        &format!("store:{reference}"),
        &format!("oci:{}", back.display()),
        &ctx,
        &opts,
    )
    .await
    .unwrap();
    assert_eq!(report.manifest_digest.to_string(), image.digest);
    assert_eq!(report.blobs_copied, 3);
    let entries = index_entries(&back);
    assert_eq!(entries.len(), 1);
    assert!(
        entries[0].get("annotations").is_none(),
        "no name was asked for"
    );
}
