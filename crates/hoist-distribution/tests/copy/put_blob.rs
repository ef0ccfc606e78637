//! `put_blob` verifies while it streams, and on any failure leaves nothing behind, in every
//! destination.

use std::io;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use hoist_distribution::transport::{
    BlobInfo, ByteStream, Error, ImageDestination, ImageName, PutOptions, ReuseOptions,
    TransportContext, open_destination,
};
use hoist_registry::RegistryClient;
use hoist_store::Store;
use hoist_test_support::Registry;

use crate::support::*;

const LAYER: &str = "application/vnd.oci.image.layer.v1.tar";

fn payload() -> Vec<u8> {
    // Not compressible into a magic number by accident, and several chunks long.
    (0..300_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

fn chunks(data: &[u8]) -> Vec<io::Result<Bytes>> {
    data.chunks(64 << 10)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect()
}

fn stream(items: Vec<io::Result<Bytes>>) -> ByteStream {
    Box::pin(futures_util::stream::iter(items))
}

/// A stream that delivers two chunks and then breaks.
fn breaking(data: &[u8]) -> ByteStream {
    let mut items: Vec<_> = chunks(data).into_iter().take(2).collect();
    items.push(Err(io::Error::new(
        io::ErrorKind::ConnectionReset,
        "connection reset by peer",
    )));
    stream(items)
}

/// Runs the failure cases against `destination`, checking after each that `present` says the
/// blob is absent; then writes the blob correctly and checks `present` notices it (so that the
/// check can fail).
async fn failures_leave_nothing(
    destination: Arc<dyn ImageDestination>,
    present: impl AsyncFn(&BlobInfo) -> bool,
) {
    let data = payload();
    let info = BlobInfo::new(sha256(&data).parse().unwrap(), data.len() as u64, LAYER);
    let opts = PutOptions::default();
    let name = destination.name();

    let err = destination
        .put_blob(breaking(&data), &info, &opts)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Stream { .. }), "{name}: {err}");
    assert!(err.is_retryable(), "{name}: a broken stream can be retried");
    assert!(
        !present(&info).await,
        "{name}: nothing after a broken stream"
    );

    let mut wrong = data.clone();
    wrong[150_000] ^= 0xff;
    let err = destination
        .put_blob(stream(chunks(&wrong)), &info, &opts)
        .await
        .unwrap_err();
    assert!(err.is_content_mismatch(), "{name}: {err}");
    assert!(!present(&info).await, "{name}: nothing after wrong bytes");

    let mut longer = data.clone();
    longer.extend_from_slice(b"extra");
    let err = destination
        .put_blob(stream(chunks(&longer)), &info, &opts)
        .await
        .unwrap_err();
    assert!(err.is_content_mismatch(), "{name}: {err}");
    assert!(
        !present(&info).await,
        "{name}: nothing after too many bytes"
    );

    let stored = destination
        .put_blob(stream(chunks(&data)), &info, &opts)
        .await
        .unwrap();
    assert_eq!(stored.size, data.len() as u64);
    assert!(present(&info).await, "{name}: the right bytes are kept");
}

#[tokio::test]
async fn a_layout_keeps_nothing_from_a_failed_blob_write() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("layout");
    let dest = open_destination(
        &ImageName::parse(&format!("oci:{}:x", root.display())).unwrap(),
        &TransportContext::default(),
    )
    .await
    .unwrap();
    let check_root = root.clone();
    failures_leave_nothing(dest, async move |info: &BlobInfo| {
        assert!(temp_files(&check_root).is_empty(), "no temporary file left");
        check_root
            .join("blobs/sha256")
            .join(info.digest.digest())
            .exists()
    })
    .await;
}

#[tokio::test]
async fn archives_keep_nothing_from_a_failed_blob_write() {
    let dir = tempfile::tempdir().unwrap();
    for name in [
        format!("oci-archive:{}", dir.path().join("oci.tar").display()),
        format!(
            "docker-archive:{}:a/b:1",
            dir.path().join("docker.tar").display()
        ),
    ] {
        let dest = open_destination(
            &ImageName::parse(&name).unwrap(),
            &TransportContext::default(),
        )
        .await
        .unwrap();
        let probe = dest.clone();
        failures_leave_nothing(dest, async move |info: &BlobInfo| {
            probe
                .try_reusing_blob(info, &ReuseOptions::default())
                .await
                .unwrap()
                .is_some()
        })
        .await;
    }
}

#[tokio::test]
async fn the_store_keeps_nothing_from_a_failed_blob_write() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("store")).unwrap();
    let dest = open_destination(
        &ImageName::parse("store:example.com/a/b:1").unwrap(),
        &TransportContext::default().with_store(store.clone()),
    )
    .await
    .unwrap();
    failures_leave_nothing(dest, async move |info: &BlobInfo| {
        assert!(
            store.content().ingests().unwrap().is_empty(),
            "no ingest left"
        );
        store.content().contains(&info.digest).unwrap()
    })
    .await;
}

/// Bytes of unfinished uploads the registry still holds, under its storage directory. (An
/// upload whose request broke off may leave an empty scratch directory until the registry's
/// purge; what matters is that no uploaded data remains.)
fn upload_data(storage: &Path) -> Vec<std::path::PathBuf> {
    fn walk(p: &Path, in_uploads: bool, out: &mut Vec<std::path::PathBuf>) {
        let Ok(entries) = std::fs::read_dir(p) else {
            return;
        };
        for e in entries.flatten() {
            let path = e.path();
            let uploads = in_uploads || path.file_name().is_some_and(|f| f == "_uploads");
            if path.is_dir() {
                walk(&path, uploads, out);
            } else if uploads && path.file_name().is_some_and(|f| f == "data") {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(storage, false, &mut out);
    out
}

#[tokio::test]
async fn the_registry_keeps_nothing_from_a_failed_blob_upload() {
    let registry = Registry::start().await.unwrap();
    let client = RegistryClient::builder().build().unwrap();
    let dest = open_destination(
        &ImageName::parse(&format!("docker://{}/hoist/put:1", registry.host())).unwrap(),
        &TransportContext::default().with_registry(client.clone()),
    )
    .await
    .unwrap();
    let endpoint = client.resolve(&registry.host()).await.unwrap();
    let repo = client.repository(endpoint, "hoist/put");
    let storage = registry.storage_dir().to_owned();
    failures_leave_nothing(dest, async move |info: &BlobInfo| {
        let left = upload_data(&storage);
        assert!(left.is_empty(), "failed uploads were cancelled: {left:?}");
        repo.head_blob(&info.digest).await.unwrap().is_some()
    })
    .await;
}
