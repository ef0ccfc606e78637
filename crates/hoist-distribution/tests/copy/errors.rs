//! What cannot be copied fails with a typed error, and leaves the destination untouched.

use hoist_distribution::copy::{CopyError, PlatformSelection};
use hoist_distribution::transport::{Error, ImageName, TransportContext, open_source};

use crate::support::*;

#[tokio::test]
async fn schema1_and_unknown_manifest_types_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut layout = Layout::new(&dir.path().join("src"));
    let schema1 = br#"{"schemaVersion":1,"name":"old/image","tag":"1","fsLayers":[],"history":[]}"#;
    let d = layout.blob(schema1);
    layout.name(
        "old",
        "application/vnd.docker.distribution.manifest.v1+prettyjws",
        &d,
        schema1.len(),
    );
    let odd = br#"{"schemaVersion":2,"mediaType":"application/vnd.example.thing+json"}"#;
    let d = layout.blob(odd);
    layout.name("odd", "application/vnd.example.thing+json", &d, odd.len());
    let ctx = TransportContext::default();
    let opts = options(PlatformSelection::All);
    let dst = dir.path().join("dst");

    let err = copy_names(
        &format!("oci:{}:old", layout.root.display()),
        &format!("oci:{}", dst.display()),
        &ctx,
        &opts,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, CopyError::DeprecatedSchema1 { .. }), "{err}");
    assert!(err.to_string().contains("schema 1"), "{err}");

    let err = copy_names(
        &format!("oci:{}:odd", layout.root.display()),
        &format!("oci:{}", dst.display()),
        &ctx,
        &opts,
    )
    .await
    .unwrap_err();
    match err {
        CopyError::UnsupportedMediaType { media_type, .. } => {
            assert_eq!(media_type, "application/vnd.example.thing+json")
        }
        other => panic!("expected UnsupportedMediaType, got {other}"),
    }
    assert!(index_entries(&dst).is_empty(), "nothing was named");
    assert!(layout_blobs(&dst).is_empty(), "nothing was written");
}

#[tokio::test]
async fn a_corrupt_source_blob_fails_the_copy_after_retries_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (layout, image) = simple_layout(&dir.path().join("src"));
    let victim = layout.blob_path(&image.layers[1]);
    let mut bytes = std::fs::read(&victim).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x55;
    std::fs::write(&victim, &bytes).unwrap();
    let dst = dir.path().join("dst");

    let err = copy_names(
        &format!("oci:{}:v1", layout.root.display()),
        &format!("oci:{}:v1", dst.display()),
        &TransportContext::default(),
        &options(PlatformSelection::Current),
    )
    .await
    .unwrap_err();
    match &err {
        CopyError::Blob {
            digest, attempts, ..
        } => {
            assert_eq!(digest, &image.layers[1]);
            assert_eq!(*attempts, 2, "corrupt data is read again before giving up");
        }
        other => panic!("expected a blob failure, got {other}"),
    }
    assert!(
        matches!(err.transport_error(), Some(Error::DigestMismatch { .. })),
        "{err}"
    );
    assert!(err.to_string().contains("digest mismatch"), "{err}");
    assert!(!layout_blobs(&dst).contains(&image.layers[1]));
    assert!(index_entries(&dst).is_empty(), "the image was not named");
    assert!(temp_files(&dst).is_empty());
}

#[tokio::test]
async fn images_that_are_not_there_or_not_named_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (mut layout, image) = simple_layout(&dir.path().join("src"));
    let ctx = TransportContext::default();
    let open = |name: String| {
        let ctx = ctx.clone();
        async move { open_source(&ImageName::parse(&name).unwrap(), &ctx).await }
    };

    match open(format!("oci:{}:v2", layout.root.display())).await {
        Err(Error::ImageNotFound { names, .. }) => assert_eq!(names, ["v1"]),
        other => panic!("expected ImageNotFound, got {:?}", other.map(|s| s.name())),
    }
    layout.name("latest", OCI_MANIFEST, &image.digest, image.manifest.len());
    match open(format!("oci:{}", layout.root.display())).await {
        Err(Error::AmbiguousImage { count, names, .. }) => {
            assert_eq!(count, 2);
            assert_eq!(names, ["v1", "latest"]);
        }
        other => panic!("expected AmbiguousImage, got {:?}", other.map(|s| s.name())),
    }
    let missing = dir.path().join("missing");
    for name in [
        format!("oci:{}", missing.display()),
        format!("oci-archive:{}", missing.display()),
        format!("docker-archive:{}", missing.display()),
    ] {
        let err = open(name.clone()).await.err().unwrap();
        assert!(err.is_not_found(), "{name}: {err}");
    }
    let err = open("store:example.com/a:1".into()).await.err().unwrap();
    assert!(matches!(err, Error::NotConfigured { .. }), "{err}");

    // An OCI layout archive is not a docker archive, and the error says so.
    let archive = dir.path().join("oci.tar");
    copy_names(
        &format!("oci:{}:v1", layout.root.display()),
        &format!("oci-archive:{}", archive.display()),
        &ctx,
        &options(PlatformSelection::Current),
    )
    .await
    .unwrap();
    let err = open(format!("docker-archive:{}", archive.display()))
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("oci-archive:"), "{err}");
}
