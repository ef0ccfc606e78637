//! Discontiguous chunks of blobs, from every source that offers them.

use futures_util::StreamExt;
use hoist_distribution::copy::PlatformSelection;
use hoist_distribution::transport::{
    BlobChunk, BlobInfo, ImageName, ImageSource, TransportContext, open_source,
};
use hoist_test_support::Registry;

use crate::support::*;

async fn read_chunks(
    source: &dyn ImageSource,
    info: &BlobInfo,
    chunks: &[BlobChunk],
) -> Vec<Vec<u8>> {
    assert!(source.supports_get_blob_at(), "{}", source.name());
    let mut out = vec![Vec::new(); chunks.len()];
    let mut s = source.get_blob_at(info, chunks).await.unwrap();
    while let Some(piece) = s.next().await {
        let (i, bytes) = piece.unwrap();
        out[i].extend_from_slice(&bytes);
    }
    out
}

#[tokio::test]
async fn chunks_come_from_layouts_archives_registries_and_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let (layout, image) = simple_layout(&dir.path().join("src"));
    let layer = std::fs::read(layout.blob_path(&image.layers[1])).unwrap();
    let info = BlobInfo::new(
        image.layers[1].parse().unwrap(),
        layer.len() as u64,
        OCI_LAYER_GZIP,
    );
    let chunks = [
        BlobChunk::new(0, 10),
        BlobChunk::new(100, 50),
        BlobChunk::new(layer.len() as u64 - 7, 7),
    ];
    let expected: Vec<Vec<u8>> = chunks
        .iter()
        .map(|c| layer[c.offset as usize..(c.offset + c.length) as usize].to_vec())
        .collect();

    let registry = Registry::start().await.unwrap();
    let store = hoist_store::Store::open(dir.path().join("store")).unwrap();
    let ctx = registry_context().with_store(store);
    let src = format!("oci:{}:v1", layout.root.display());
    let remote = format!("docker://{}/hoist/chunks:1", registry.host());
    let archive = format!("oci-archive:{}", dir.path().join("a.tar").display());
    let stored = "store:example.com/hoist/chunks:1".to_owned();
    let opts = options(PlatformSelection::Current);
    copy_names(&src, &remote, &ctx, &opts).await.unwrap();
    copy_names(&src, &archive, &ctx, &opts).await.unwrap();
    copy_names(&src, &stored, &ctx, &opts).await.unwrap();

    for name in [src, remote, archive, stored] {
        let source = open_source(&ImageName::parse(&name).unwrap(), &ctx)
            .await
            .unwrap();
        assert_eq!(
            read_chunks(&*source, &info, &chunks).await,
            expected,
            "{name}"
        );
    }

    // A docker archive serves its (uncompressed) layers the same way.
    let docker = format!("docker-archive:{}", dir.path().join("d.tar").display());
    copy_names(
        &format!("oci:{}:v1", layout.root.display()),
        &docker,
        &ctx,
        &opts,
    )
    .await
    .unwrap();
    let source = open_source(
        &ImageName::parse(&docker).unwrap(),
        &TransportContext::default(),
    )
    .await
    .unwrap();
    let tar = layer_tar(&[
        ("hello.txt", b"hello from hoist\n"),
        ("data.bin", &[7u8; 70_000]),
    ]);
    let info = BlobInfo::new(image.diff_ids[1].parse().unwrap(), tar.len() as u64, "");
    let got = read_chunks(&*source, &info, &[BlobChunk::new(512, 17)]).await;
    assert_eq!(got, [tar[512..529].to_vec()]);
}
