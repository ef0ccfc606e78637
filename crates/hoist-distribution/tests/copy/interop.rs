//! skopeo reads what hoist writes, and hoist reads what skopeo writes, with equal digests.

use hoist_distribution::copy::PlatformSelection;
use hoist_distribution::transport::{ImageName, TransportContext, open_source};

use crate::support::*;

#[tokio::test]
async fn skopeo_reads_the_layouts_and_archives_hoist_writes() {
    let dir = tempfile::tempdir().unwrap();
    let (layout, image) = simple_layout(&dir.path().join("src"));
    let ctx = TransportContext::default();
    let opts = options(PlatformSelection::Current);
    let src = format!("oci:{}:v1", layout.root.display());

    let oci = format!("oci:{}:hoisted", dir.path().join("dir").display());
    copy_names(&src, &oci, &ctx, &opts).await.unwrap();
    let inspected = skopeo_inspect(&oci);
    assert_eq!(inspected["Digest"].as_str(), Some(image.digest.as_str()));
    assert_eq!(inspected["Architecture"].as_str(), Some("amd64"));

    let oci_archive = format!(
        "oci-archive:{}:hoisted",
        dir.path().join("oci.tar").display()
    );
    copy_names(&src, &oci_archive, &ctx, &opts).await.unwrap();
    assert_eq!(
        skopeo_inspect(&oci_archive)["Digest"].as_str(),
        Some(image.digest.as_str())
    );

    let docker_archive = format!(
        "docker-archive:{}:example.com/hoist/interop:2",
        dir.path().join("docker.tar").display()
    );
    copy_names(&src, &docker_archive, &ctx, &opts)
        .await
        .unwrap();
    let inspected = skopeo_inspect(&format!(
        "docker-archive:{}",
        dir.path().join("docker.tar").display()
    ));
    let layers: Vec<&str> = inspected["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    assert_eq!(
        layers, image.diff_ids,
        "skopeo sees the uncompressed layers"
    );
    // skopeo selects the image by the tag hoist recorded.
    skopeo_inspect(&docker_archive);
    let config = skopeo(&[
        "inspect",
        "--config",
        "--raw",
        &format!("docker-archive:{}", dir.path().join("docker.tar").display()),
    ]);
    assert_eq!(
        sha256(&config),
        image.config,
        "the config is stored unchanged"
    );

    // skopeo copies the archive on, verifying every blob against the manifest it builds.
    let unpacked = format!(
        "oci:{}:from-docker-archive",
        dir.path().join("skopeo").display()
    );
    skopeo(&["copy", "--insecure-policy", &docker_archive, &unpacked]);
    let raw = skopeo_raw(&unpacked);
    let manifest: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(manifest["layers"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn hoist_reads_the_archives_skopeo_writes() {
    let dir = tempfile::tempdir().unwrap();
    let (layout, image) = simple_layout(&dir.path().join("src"));
    let ctx = TransportContext::default();
    let opts = options(PlatformSelection::Current);
    let src = format!("oci:{}:v1", layout.root.display());

    // docker-archive written by skopeo: layers decompressed, a schema 2 manifest derived.
    let docker_tar = dir.path().join("skopeo-docker.tar");
    let docker_archive = format!(
        "docker-archive:{}:example.com/hoist/from-skopeo:3",
        docker_tar.display()
    );
    skopeo(&["copy", "--insecure-policy", &src, &docker_archive]);
    let source = open_source(
        &ImageName::parse(&format!("docker-archive:{}", docker_tar.display())).unwrap(),
        &ctx,
    )
    .await
    .unwrap();
    let (ours, _) = source.get_manifest(None).await.unwrap();
    let theirs = skopeo_raw(&format!("docker-archive:{}", docker_tar.display()));
    // The same manifest skopeo derives, but for the layer media type: skopeo 1.9 labels the
    // uncompressed layers of an archive "tar.gzip"; hoist says what they are.
    let ours_json: serde_json::Value = serde_json::from_slice(&ours).unwrap();
    let mut theirs_json: serde_json::Value = serde_json::from_slice(&theirs).unwrap();
    for layer in theirs_json["layers"].as_array_mut().unwrap() {
        assert_eq!(
            layer["mediaType"].as_str(),
            Some("application/vnd.docker.image.rootfs.diff.tar.gzip")
        );
        layer["mediaType"] = "application/vnd.docker.image.rootfs.diff.tar".into();
    }
    assert_eq!(ours_json, theirs_json);
    let relabelled = String::from_utf8(theirs.clone())
        .unwrap()
        .replace("diff.tar.gzip\"", "diff.tar\"");
    assert_eq!(
        String::from_utf8(ours.to_vec()).unwrap(),
        relabelled,
        "serialised the same way, field for field"
    );
    let back = dir.path().join("from-docker-archive");
    let report = copy_names(
        &docker_archive,
        &format!("oci:{}:x", back.display()),
        &ctx,
        &opts,
    )
    .await
    .unwrap();
    assert_eq!(report.manifest_digest.to_string(), sha256(&ours));
    assert_eq!(report.blobs_copied, 3);
    let manifest: serde_json::Value = serde_json::from_slice(&ours).unwrap();
    let layer_digests: Vec<&str> = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap())
        .collect();
    assert_eq!(layer_digests, image.diff_ids);
    assert_eq!(
        manifest["config"]["digest"].as_str(),
        Some(image.config.as_str())
    );

    // oci-archive written by skopeo keeps the manifest as it was.
    let oci_tar = dir.path().join("skopeo-oci.tar");
    skopeo(&[
        "copy",
        "--insecure-policy",
        &src,
        &format!("oci-archive:{}:skopeo", oci_tar.display()),
    ]);
    let report = copy_names(
        &format!("oci-archive:{}:skopeo", oci_tar.display()),
        &format!("oci:{}:y", dir.path().join("from-oci-archive").display()),
        &ctx,
        &opts,
    )
    .await
    .unwrap();
    assert_eq!(report.manifest_digest.to_string(), image.digest);

    // A layout written by skopeo, read without naming the image (it holds one).
    let skopeo_dir = dir.path().join("skopeo-dir");
    skopeo(&[
        "copy",
        "--insecure-policy",
        &src,
        &format!("oci:{}", skopeo_dir.display()),
    ]);
    let report = copy_names(
        &format!("oci:{}", skopeo_dir.display()),
        &format!("oci:{}:z", dir.path().join("from-oci-dir").display()),
        &ctx,
        &opts,
    )
    .await
    .unwrap();
    assert_eq!(report.manifest_digest.to_string(), image.digest);
}
