use crate::*;
use hoist_registry::ManifestKind;
use hoist_registry::manifest::{DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST};

#[tokio::test]
async fn an_oci_manifest_round_trips_by_tag_and_by_digest() {
    let (_r, repo) = plain("t/oci").await;
    let (bytes, d) = push_image(&repo, "v1", 10).await;
    let by_tag = repo.get_manifest("v1").await.unwrap();
    assert_eq!(by_tag.bytes, bytes);
    assert_eq!(by_tag.digest, d);
    assert_eq!(by_tag.kind(), Some(ManifestKind::OciManifest));
    let by_digest = repo.get_manifest(d.as_ref()).await.unwrap();
    assert_eq!(by_digest.bytes, bytes);
    let head = repo.head_manifest("v1").await.unwrap();
    assert_eq!(head.digest, Some(d));
    assert_eq!(head.size, Some(bytes.len() as u64));
}

#[tokio::test]
async fn docker_manifests_and_indexes_of_both_formats_keep_their_media_types() {
    let (_r, repo) = plain("t/kinds").await;
    // A Docker schema 2 manifest over the same blobs as an OCI one.
    let (oci, oci_d) = push_image(&repo, "oci", 11).await;
    let docker = String::from_utf8(oci.to_vec())
        .unwrap()
        .replace(OCI_MANIFEST, DOCKER_MANIFEST)
        .replace(
            "application/vnd.oci.image.config.v1+json",
            "application/vnd.docker.container.image.v1+json",
        )
        .replace(
            "application/vnd.oci.image.layer.v1.tar",
            "application/vnd.docker.image.rootfs.diff.tar",
        );
    let docker_d = repo
        .put_manifest("docker", DOCKER_MANIFEST, docker.clone().into())
        .await
        .unwrap();
    let m = repo.get_manifest("docker").await.unwrap();
    assert_eq!(m.kind(), Some(ManifestKind::DockerManifest));
    assert_eq!(m.digest, docker_d);

    for (tag, media_type, child_type, child, child_size) in [
        ("oci-index", OCI_INDEX, OCI_MANIFEST, &oci_d, oci.len()),
        (
            "docker-list",
            DOCKER_LIST,
            DOCKER_MANIFEST,
            &docker_d,
            docker.len(),
        ),
    ] {
        let index = format!(
            r#"{{"schemaVersion":2,"mediaType":"{media_type}","manifests":[{{"mediaType":"{child_type}","digest":"{child}","size":{child_size},"platform":{{"architecture":"amd64","os":"linux"}}}}]}}"#
        );
        repo.put_manifest(tag, media_type, index.clone().into())
            .await
            .unwrap();
        let got = repo.get_manifest(tag).await.unwrap();
        assert_eq!(got.media_type, media_type);
        assert!(got.kind().unwrap().is_index());
        assert_eq!(got.bytes, index.as_bytes());
    }
}

#[tokio::test]
async fn a_manifest_of_a_missing_tag_is_not_found() {
    let (_r, repo) = plain("t/nothing").await;
    push_image(&repo, "exists", 12).await;
    let err = repo.get_manifest("nope").await.unwrap_err();
    assert!(err.is_not_found(), "{err}");
    assert!(err.to_string().contains("MANIFEST_UNKNOWN"), "{err}");
    assert!(!repo.manifest_exists("nope").await.unwrap());
    assert!(repo.manifest_exists("exists").await.unwrap());
}

#[tokio::test]
async fn a_manifest_naming_missing_blobs_is_refused_with_the_registry_code() {
    let (_r, repo) = plain("t/invalid").await;
    let missing = digest_of(b"missing config");
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{missing}","size":14}},"layers":[]}}"#
    );
    let err = repo
        .put_manifest("bad", OCI_MANIFEST, manifest.into())
        .await
        .unwrap_err();
    assert!(
        err.error_codes()
            .any(|c| *c == hoist_registry::error_body::ErrorCode::ManifestBlobUnknown),
        "{err}"
    );
}

#[tokio::test]
async fn a_deleted_manifest_is_gone() {
    let (_r, repo) = plain("t/delete").await;
    let (_, d) = push_image(&repo, "v1", 13).await;
    repo.delete_manifest(&d).await.unwrap();
    assert!(
        repo.get_manifest(d.as_ref())
            .await
            .unwrap_err()
            .is_not_found()
    );
}
