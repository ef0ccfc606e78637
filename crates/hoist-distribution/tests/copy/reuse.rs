//! Blobs the destination has, or can mount, are not transferred again.

use hoist_distribution::copy::{CopyOptions, PlatformSelection};
use hoist_distribution::transport::TransportContext;
use hoist_store::Store;
use hoist_test_support::Registry;

use crate::support::*;

#[tokio::test]
async fn a_second_copy_reuses_every_blob_in_every_destination() {
    let dir = tempfile::tempdir().unwrap();
    let (layout, image) = simple_layout(&dir.path().join("src"));
    let registry = Registry::start().await.unwrap();
    let store = Store::open(dir.path().join("store")).unwrap();
    let ctx = registry_context().with_store(store);
    let opts = options(PlatformSelection::Current);
    let src = format!("oci:{}:v1", layout.root.display());
    for dst in [
        format!("docker://{}/hoist/again:1", registry.host()),
        format!("oci:{}:again", dir.path().join("dir").display()),
        "store:example.com/hoist/again:1".to_owned(),
    ] {
        let first = copy_names(&src, &dst, &ctx, &opts).await.unwrap();
        assert_eq!((first.blobs_copied, first.blobs_reused), (3, 0), "{dst}");
        let second = copy_names(&src, &dst, &ctx, &opts).await.unwrap();
        assert_eq!(second.manifest_digest.to_string(), image.digest, "{dst}");
        assert_eq!(
            (
                second.blobs_copied,
                second.blobs_reused,
                second.bytes_copied
            ),
            (0, 3, 0),
            "{dst}: the second copy moves no blob"
        );
    }
}

#[tokio::test]
async fn copies_within_a_registry_mount_blobs_instead_of_uploading_them() {
    let dir = tempfile::tempdir().unwrap();
    let (layout, image) = simple_layout(&dir.path().join("src"));
    let registry = Registry::start().await.unwrap();
    let cache = Store::open(dir.path().join("cache")).unwrap();
    let ctx = registry_context();
    let opts = CopyOptions {
        cache: Some(cache.clone()),
        ..options(PlatformSelection::Current)
    };
    let src = format!("oci:{}:v1", layout.root.display());
    let first = format!("docker://{}/team-a/app:1", registry.host());
    copy_names(&src, &first, &ctx, &opts).await.unwrap();

    // Registry to registry: the source repository is on the same registry.
    let second = format!("docker://{}/team-b/app:1", registry.host());
    let report = copy_names(&first, &second, &ctx, &opts).await.unwrap();
    assert_eq!(report.manifest_digest.to_string(), image.digest);
    assert_eq!(
        (report.blobs_copied, report.blobs_reused),
        (0, 3),
        "every blob was mounted"
    );
    assert_eq!(skopeo_raw(&second), image.manifest);

    // The cache recorded both repositories for every blob.
    for blob in image.blobs() {
        let mut repos: Vec<String> = cache
            .metadata()
            .locations(&blob.parse().unwrap(), Some(&registry.host()))
            .unwrap()
            .into_iter()
            .map(|l| l.repository)
            .collect();
        repos.sort();
        assert_eq!(repos, ["team-a/app", "team-b/app"], "{blob}");
    }

    // From a layout, the cache alone says where to mount from.
    let third = format!("docker://{}/team-c/app:1", registry.host());
    let report = copy_names(&src, &third, &ctx, &opts).await.unwrap();
    assert_eq!((report.blobs_copied, report.blobs_reused), (0, 3));

    // Without the cache there is nothing to mount from: the bytes are uploaded.
    let plain = options(PlatformSelection::Current);
    let fourth = format!("docker://{}/team-d/app:1", registry.host());
    let report = copy_names(
        &src,
        &fourth,
        &TransportContext::default()
            .with_registry(hoist_registry::RegistryClient::builder().build().unwrap()),
        &plain,
    )
    .await
    .unwrap();
    assert_eq!((report.blobs_copied, report.blobs_reused), (3, 0));
}

#[tokio::test]
async fn the_store_offers_a_layer_under_another_compression_only_when_substitution_is_allowed() {
    use hoist_distribution::recompress::{LayerCompression, Recompression};
    use hoist_distribution::transport::{BlobInfo, ImageName, ReuseOptions, open_destination};
    let dir = tempfile::tempdir().unwrap();
    let (layout, image) = simple_layout(&dir.path().join("src"));
    let store = Store::open(dir.path().join("store")).unwrap();
    let ctx = registry_context().with_store(store.clone());
    // The store gets the zstd form of the layers; the cache learns both forms' DiffIDs.
    let opts = CopyOptions {
        cache: Some(store.clone()),
        recompress: Some(Recompression::new(LayerCompression::Zstd)),
        ..options(PlatformSelection::Current)
    };
    copy_names(
        &format!("oci:{}:v1", layout.root.display()),
        "store:example.com/hoist/zstd:1",
        &ctx,
        &opts,
    )
    .await
    .unwrap();

    let destination = open_destination(
        &ImageName::parse("store:example.com/hoist/other:1").unwrap(),
        &ctx,
    )
    .await
    .unwrap();
    let gzip_layer = BlobInfo::new(
        image.layers[1].parse().unwrap(),
        std::fs::metadata(layout.blob_path(&image.layers[1]))
            .unwrap()
            .len(),
        "application/vnd.oci.image.layer.v1.tar+gzip",
    );
    let exact = ReuseOptions {
        cache: Some(store.clone()),
        ..ReuseOptions::default()
    };
    assert_eq!(
        destination
            .try_reusing_blob(&gzip_layer, &exact)
            .await
            .unwrap(),
        None,
        "the gzip blob itself is not in the store"
    );
    let substitute = ReuseOptions {
        can_substitute: true,
        ..exact
    };
    let found = destination
        .try_reusing_blob(&gzip_layer, &substitute)
        .await
        .unwrap()
        .expect("the zstd form stands in");
    assert_ne!(found.digest, gzip_layer.digest);
    assert_eq!(
        found.media_type,
        "application/vnd.oci.image.layer.v1.tar+zstd"
    );
    assert_eq!(
        store
            .metadata()
            .diff_id(&found.digest)
            .unwrap()
            .map(|d| d.to_string()),
        Some(image.diff_ids[1].clone())
    );
    assert_eq!(
        store.content().info(&found.digest).unwrap().size,
        found.size
    );
}
