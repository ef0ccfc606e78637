//! `copy` with recompression: layers rewritten as another compression, the config and DiffIDs
//! unchanged, the result readable by skopeo and umoci; and the blob info cache letting a later
//! recompressing copy mount what an earlier one wrote.

use std::path::Path;
use std::process::Command;

use hoist_distribution::copy::{CopyOptions, PlatformSelection};
use hoist_distribution::recompress::{LayerCompression, Recompression};
use hoist_store::Store;
use hoist_test_support::{FaultProxy, Matcher, Registry};
use serde_json::Value;

use crate::support::*;

fn recompressing(format: LayerCompression) -> CopyOptions {
    CopyOptions {
        recompress: Some(Recompression::new(format)),
        ..options(PlatformSelection::Current)
    }
}

/// Every file under `root` with its contents (directories as empty entries), sorted.
fn tree(root: &Path) -> Vec<(String, Vec<u8>)> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<(String, Vec<u8>)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.strip_prefix(base).unwrap().display().to_string();
            if path.is_dir() {
                out.push((format!("{name}/"), Vec::new()));
                walk(base, &path, out);
            } else {
                out.push((name, std::fs::read(&path).unwrap()));
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

fn umoci_unpack(image: &str, bundle: &Path) -> Vec<(String, Vec<u8>)> {
    let out = Command::new("umoci")
        .args(["unpack", "--rootless", "--image", image])
        .arg(bundle)
        .output()
        .expect("umoci is installed");
    assert!(
        out.status.success(),
        "umoci unpack {image}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    tree(&bundle.join("rootfs"))
}

fn manifest_of(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap()
}

#[tokio::test]
async fn a_copy_recompressed_as_zstd_is_read_by_skopeo_and_unpacks_to_the_same_tree() {
    let dir = tempfile::tempdir().unwrap();
    let (layout, image) = simple_layout(&dir.path().join("src"));
    let registry = Registry::start().await.unwrap();
    let src = format!("oci:{}:v1", layout.root.display());
    let dst = format!("docker://{}/hoist/zstd:1", registry.host());
    let report = copy_names(
        &src,
        &dst,
        &registry_context(),
        &recompressing(LayerCompression::Zstd),
    )
    .await
    .unwrap();
    assert_eq!(report.layers_recompressed, 2);
    assert_eq!(report.source_manifest_digest.to_string(), image.digest);
    assert_ne!(report.manifest_digest.to_string(), image.digest);

    let raw = skopeo_raw(&dst);
    assert_eq!(sha256(&raw), report.manifest_digest.to_string());
    let m = manifest_of(&raw);
    assert_eq!(
        m["config"]["digest"],
        image.config.as_str(),
        "config unchanged"
    );
    for (layer, old) in m["layers"].as_array().unwrap().iter().zip(&image.layers) {
        assert_eq!(
            layer["mediaType"],
            "application/vnd.oci.image.layer.v1.tar+zstd"
        );
        assert_ne!(layer["digest"], old.as_str());
    }

    // skopeo reads it back as an ordinary zstd image: it decompresses every layer (verifying
    // the DiffIDs) to write them as gzip, which umoci 0.4 unpacks (it has no zstd); both trees
    // are the same files.
    let out = dir.path().join("skopeo-out");
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        "--dest-compress",
        "--dest-compress-format=gzip",
        &dst,
        &format!("oci:{}:back", out.display()),
    ]);
    let original = umoci_unpack(&src.replace("oci:", ""), &dir.path().join("b1"));
    let round_trip = umoci_unpack(&format!("{}:back", out.display()), &dir.path().join("b2"));
    assert!(original.iter().any(|(n, _)| n == "hello.txt"));
    assert_eq!(original, round_trip);
}

#[tokio::test]
async fn a_copy_recompressed_as_gzip_keeps_the_config_and_diff_ids() {
    let dir = tempfile::tempdir().unwrap();
    let (layout, image) = simple_layout(&dir.path().join("src"));
    let registry = Registry::start().await.unwrap();
    let src = format!("oci:{}:v1", layout.root.display());
    let zstd = format!("docker://{}/hoist/z:1", registry.host());
    copy_names(
        &src,
        &zstd,
        &registry_context(),
        &recompressing(LayerCompression::Zstd),
    )
    .await
    .unwrap();
    // Back to gzip, into a layout: config and DiffIDs are the source's.
    let back = dir.path().join("back");
    let report = copy_names(
        &zstd,
        &format!("oci:{}:g", back.display()),
        &registry_context(),
        &recompressing(LayerCompression::Gzip),
    )
    .await
    .unwrap();
    assert_eq!(report.layers_recompressed, 2);
    let raw = skopeo_raw(&format!("oci:{}:g", back.display()));
    let m = manifest_of(&raw);
    assert_eq!(m["config"]["digest"], image.config.as_str());
    for layer in m["layers"].as_array().unwrap() {
        assert_eq!(
            layer["mediaType"],
            "application/vnd.oci.image.layer.v1.tar+gzip"
        );
    }
    let inspect = skopeo_inspect(&format!("oci:{}:g", back.display()));
    let diff_ids: Vec<String> = serde_json::from_slice::<Value>(&skopeo(&[
        "inspect",
        "--config",
        &format!("oci:{}:g", back.display()),
    ]))
    .unwrap()["rootfs"]["diff_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(diff_ids, image.diff_ids);
    assert_eq!(inspect["Layers"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn zstd_chunked_output_carries_its_toc_and_skopeo_pulls_it_as_plain_zstd() {
    let dir = tempfile::tempdir().unwrap();
    let (layout, image) = simple_layout(&dir.path().join("src"));
    let registry = Registry::start().await.unwrap();
    let src = format!("oci:{}:v1", layout.root.display());
    let dst = format!("docker://{}/hoist/chunked:1", registry.host());
    let report = copy_names(
        &src,
        &dst,
        &registry_context(),
        &recompressing(LayerCompression::ZstdChunked),
    )
    .await
    .unwrap();
    assert_eq!(report.layers_recompressed, 2);
    let m = manifest_of(&skopeo_raw(&dst));
    assert_eq!(m["config"]["digest"], image.config.as_str());
    for layer in m["layers"].as_array().unwrap() {
        assert_eq!(
            layer["mediaType"],
            "application/vnd.oci.image.layer.v1.tar+zstd"
        );
        let annotations = layer["annotations"].as_object().unwrap();
        assert!(
            annotations
                .keys()
                .any(|k| k.contains("zstd-chunked.manifest-position")),
            "{annotations:?}"
        );
    }
    // skopeo decompresses it as any zstd layer (checking the DiffIDs): the same files.
    let out = dir.path().join("skopeo-out");
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        "--dest-compress",
        "--dest-compress-format=gzip",
        &dst,
        &format!("oci:{}:back", out.display()),
    ]);
    let original = umoci_unpack(&src.replace("oci:", ""), &dir.path().join("b1"));
    let round_trip = umoci_unpack(&format!("{}:back", out.display()), &dir.path().join("b2"));
    assert_eq!(original, round_trip);
}

#[tokio::test]
async fn estargz_output_gets_a_config_naming_its_diff_ids_and_unpacks_to_the_same_tree() {
    let dir = tempfile::tempdir().unwrap();
    let (layout, image) = simple_layout(&dir.path().join("src"));
    let registry = Registry::start().await.unwrap();
    let src = format!("oci:{}:v1", layout.root.display());
    let dst = format!("docker://{}/hoist/estargz:1", registry.host());
    let report = copy_names(
        &src,
        &dst,
        &registry_context(),
        &recompressing(LayerCompression::Estargz),
    )
    .await
    .unwrap();
    assert_eq!(report.layers_recompressed, 2);
    let m = manifest_of(&skopeo_raw(&dst));
    assert_ne!(
        m["config"]["digest"],
        image.config.as_str(),
        "eStargz rewrites the tars, so the config names new DiffIDs"
    );
    for layer in m["layers"].as_array().unwrap() {
        assert_eq!(
            layer["mediaType"],
            "application/vnd.oci.image.layer.v1.tar+gzip"
        );
        let annotations = layer["annotations"].as_object().unwrap();
        assert!(
            annotations.contains_key("containerd.io/snapshot/stargz/toc.digest"),
            "{annotations:?}"
        );
    }
    // The config's DiffIDs are the written layers' (skopeo decompresses every layer and checks
    // them against the config), and the files are the same, plus eStargz's own TOC entry.
    let out = dir.path().join("skopeo-out");
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &dst,
        &format!("oci:{}:back", out.display()),
    ]);
    let config: Value = {
        let raw = skopeo_raw(&dst);
        let m = manifest_of(&raw);
        let digest = m["config"]["digest"]
            .as_str()
            .unwrap()
            .replace("sha256:", "");
        serde_json::from_slice(&std::fs::read(out.join("blobs/sha256").join(digest)).unwrap())
            .unwrap()
    };
    let diff_ids: Vec<String> = config["rootfs"]["diff_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(diff_ids.len(), image.diff_ids.len());
    let m = manifest_of(&skopeo_raw(&dst));
    let layers = m["layers"].as_array().unwrap();
    for ((new, old), layer) in diff_ids.iter().zip(&image.diff_ids).zip(layers) {
        assert_ne!(new, old);
        // The config names exactly what the written layer decompresses to.
        let hex = layer["digest"].as_str().unwrap().replace("sha256:", "");
        let blob = std::fs::read(out.join("blobs/sha256").join(hex)).unwrap();
        let mut tar = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::MultiGzDecoder::new(&blob[..]), &mut tar)
            .unwrap();
        assert_eq!(&sha256(&tar), new);
    }
    let original = umoci_unpack(&src.replace("oci:", ""), &dir.path().join("b1"));
    let round_trip: Vec<_> =
        umoci_unpack(&format!("{}:back", out.display()), &dir.path().join("b2"))
            .into_iter()
            .filter(|(name, _)| name != "stargz.index.json")
            .collect();
    assert_eq!(original, round_trip);
}

#[tokio::test]
async fn formats_that_cannot_be_written_are_refused_before_any_blob_moves() {
    let dir = tempfile::tempdir().unwrap();
    let (layout, _) = simple_layout(&dir.path().join("src"));
    let src = format!("oci:{}:v1", layout.root.display());
    let mut without_writer = recompressing(LayerCompression::ZstdChunked);
    if let Some(r) = &mut without_writer.recompress {
        r.chunked = None;
    }
    let mut level_out_of_range = recompressing(LayerCompression::Gzip);
    if let Some(r) = &mut level_out_of_range.recompress {
        r.level = Some(42);
    }
    let cases = [
        (without_writer, "zstd:chunked"),
        (level_out_of_range, "out of range"),
    ];
    for (i, (opts, says)) in cases.into_iter().enumerate() {
        let out = dir.path().join(format!("out{i}"));
        let err = copy_names(
            &src,
            &format!("oci:{}:c", out.display()),
            &registry_context(),
            &opts,
        )
        .await
        .unwrap_err();
        assert!(err.to_string().contains(says), "{err}");
        assert!(
            !out.join("blobs").exists() || layout_blobs(&out).is_empty(),
            "nothing was written"
        );
    }
}

/// A registry behind a counting proxy, and a blob info cache.
async fn counted() -> (Registry, FaultProxy, Store, tempfile::TempDir) {
    let registry = Registry::start().await.unwrap();
    let proxy = FaultProxy::start(&registry.url()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cache = Store::open(dir.path().join("cache")).unwrap();
    (registry, proxy, cache, dir)
}

fn uploads(proxy: &FaultProxy) -> (usize, usize) {
    let posts = proxy.requests(&Matcher::new(http::Method::POST, "/blobs/uploads/"));
    let mounts = posts
        .iter()
        .filter(|e| e.query.as_deref().is_some_and(|q| q.contains("mount=")))
        .count();
    let patches = proxy.count(&Matcher::new(http::Method::PATCH, "/blobs/uploads/"))
        + proxy.count(&Matcher::new(http::Method::PUT, "/blobs/uploads/"));
    (mounts, patches)
}

#[tokio::test]
async fn a_warm_cache_mounts_the_recompressed_layers_a_cold_one_uploads_them() {
    let (_registry, proxy, cache, dir) = counted().await;
    let (layout, _) = simple_layout(&dir.path().join("src"));
    let src = format!("oci:{}:v1", layout.root.display());
    let warm = CopyOptions {
        cache: Some(cache.clone()),
        ..recompressing(LayerCompression::Zstd)
    };
    let first = copy_names(
        &src,
        &format!("docker://{}/team-a/app:1", proxy.host()),
        &registry_context(),
        &warm,
    )
    .await
    .unwrap();
    assert_eq!(first.layers_recompressed, 2);

    // Warm: the cache knows the zstd blobs (DiffID, compressor, team-a): mounted, not uploaded.
    proxy.clear_log();
    let second = copy_names(
        &src,
        &format!("docker://{}/team-b/app:1", proxy.host()),
        &registry_context(),
        &warm,
    )
    .await
    .unwrap();
    assert_eq!(second.manifest_digest, first.manifest_digest);
    let (mounts, writes) = uploads(&proxy);
    assert!(mounts >= 2, "layers mounted: {:?}", proxy.log());
    // Only the config is uploaded (it was mounted too if the cache knew it).
    assert!(writes <= 1, "no layer uploaded: {writes}");

    // Cold: a new cache knows nothing; every recompressed layer is uploaded.
    proxy.clear_log();
    let cold = CopyOptions {
        cache: Some(Store::open(dir.path().join("cold")).unwrap()),
        ..recompressing(LayerCompression::Zstd)
    };
    let third = copy_names(
        &src,
        &format!("docker://{}/team-c/app:1", proxy.host()),
        &registry_context(),
        &cold,
    )
    .await
    .unwrap();
    assert_eq!(third.manifest_digest, first.manifest_digest);
    let (mounts, writes) = uploads(&proxy);
    assert_eq!(mounts, 0);
    assert!(writes >= 3, "config and both layers uploaded: {writes}");
}

#[tokio::test]
async fn a_copy_records_diff_ids_and_compressors_in_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let (layout, image) = simple_layout(&dir.path().join("src"));
    let cache = Store::open(dir.path().join("cache")).unwrap();
    let opts = CopyOptions {
        cache: Some(cache.clone()),
        ..options(PlatformSelection::Current)
    };
    copy_names(
        &format!("oci:{}:v1", layout.root.display()),
        &format!("oci:{}:x", dir.path().join("out").display()),
        &registry_context(),
        &opts,
    )
    .await
    .unwrap();
    for (layer, diff_id) in image.layers.iter().zip(&image.diff_ids) {
        let d = layer.parse().unwrap();
        assert_eq!(
            cache.metadata().diff_id(&d).unwrap().map(|d| d.to_string()),
            Some(diff_id.clone())
        );
        assert_eq!(
            cache.metadata().compression(&d).unwrap(),
            Some(hoist_store::Compression::Gzip)
        );
    }
}

#[tokio::test]
async fn a_registry_repository_holding_the_other_compression_substitutes_it_after_a_head() {
    use hoist_distribution::transport::{BlobInfo, ImageName, ReuseOptions, open_destination};
    let (_registry, proxy, cache, dir) = counted().await;
    let (layout, image) = simple_layout(&dir.path().join("src"));
    let opts = CopyOptions {
        cache: Some(cache.clone()),
        ..recompressing(LayerCompression::Zstd)
    };
    copy_names(
        &format!("oci:{}:v1", layout.root.display()),
        &format!("docker://{}/team-a/app:1", proxy.host()),
        &registry_context(),
        &opts,
    )
    .await
    .unwrap();
    let destination = open_destination(
        &ImageName::parse(&format!("docker://{}/team-a/app:2", proxy.host())).unwrap(),
        &registry_context(),
    )
    .await
    .unwrap();
    let gzip_layer = BlobInfo::new(
        image.layers[0].parse().unwrap(),
        std::fs::metadata(layout.blob_path(&image.layers[0]))
            .unwrap()
            .len(),
        "application/vnd.oci.image.layer.v1.tar+gzip",
    );
    proxy.clear_log();
    let exact = ReuseOptions {
        cache: Some(cache.clone()),
        ..ReuseOptions::default()
    };
    assert_eq!(
        destination
            .try_reusing_blob(&gzip_layer, &exact)
            .await
            .unwrap(),
        None
    );
    let found = destination
        .try_reusing_blob(
            &gzip_layer,
            &ReuseOptions {
                can_substitute: true,
                ..exact
            },
        )
        .await
        .unwrap()
        .expect("the zstd blob in the repository stands in");
    assert_eq!(
        found.media_type,
        "application/vnd.oci.image.layer.v1.tar+zstd"
    );
    assert_ne!(found.digest, gzip_layer.digest);
    let (mounts, writes) = uploads(&proxy);
    assert_eq!((mounts, writes), (0, 0), "found by HEAD alone");
}
