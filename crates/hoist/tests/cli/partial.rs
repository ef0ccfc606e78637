//! Partial pulls through the binary: `hoist pull` of a zstd:chunked image whose files are mostly
//! in the store already, `--no-partial`, and the commands that use the result.

use crate::pull::run;
use crate::*;
use hoist_distribution::chunked::{ChunkedFormat, WriteOptions, write_chunked};
use hoist_registry::{Endpoint, RegistryClient, Scheme};

fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Pushes a one-layer zstd:chunked image of `files` as `repo:tag`.
async fn push_chunked(registry: &Registry, repo: &str, tag: &str, files: &[(&str, Vec<u8>)]) {
    let mut tar = tar::Builder::new(Vec::new());
    for (path, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_cksum();
        tar.append_data(&mut h, path, &data[..]).unwrap();
    }
    let tar = tar.into_inner().unwrap();
    let mut blob = Vec::new();
    let layer = write_chunked(
        &tar[..],
        &mut blob,
        &WriteOptions::new(ChunkedFormat::ZstdChunked),
    )
    .unwrap();
    let client = RegistryClient::builder().build().unwrap();
    let r = client.repository(Endpoint::new(registry.host(), Scheme::Http), repo);
    r.push_blob_bytes(&layer.digest, bytes::Bytes::from(blob.clone()))
        .await
        .unwrap();
    let arch = hoist_distribution::Platform::host();
    let config = bytes::Bytes::from(format!(
        r#"{{"architecture":"{}","os":"linux","rootfs":{{"type":"layers","diff_ids":["{}"]}}}}"#,
        arch.architecture, layer.diff_id
    ));
    let config_d = hoist_registry::digest::sha256_of(&config);
    r.push_blob_bytes(&config_d, config.clone()).await.unwrap();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_d.to_string(), "size": config.len()},
        "layers": [{"mediaType": layer.media_type, "digest": layer.digest.to_string(),
                    "size": blob.len(), "annotations": layer.annotations}],
    });
    r.put_manifest(
        tag,
        hoist_registry::manifest::OCI_MANIFEST,
        serde_json::to_vec(&manifest).unwrap().into(),
    )
    .await
    .unwrap();
}

fn result_line(stdout: &str) -> serde_json::Value {
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["event"] == "result")
        .unwrap_or_else(|| panic!("no result line in {stdout}"))
}

#[tokio::test]
async fn pull_fetches_only_the_changed_files_of_a_zstd_chunked_image() {
    let registry = Registry::start().await.unwrap();
    let a = noise(200_000, 1);
    let b = noise(200_000, 2);
    push_chunked(
        &registry,
        "cli/chunked",
        "v1",
        &[("app/a", a.clone()), ("app/b", b.clone())],
    )
    .await;
    push_chunked(
        &registry,
        "cli/chunked",
        "v2",
        &[("app/a", a.clone()), ("app/b", noise(20_000, 3))],
    )
    .await;
    let home = tempfile::tempdir().unwrap();
    let root = home.path().join("store");
    let v1 = format!("{}/cli/chunked:v1", registry.host());
    let v2 = format!("{}/cli/chunked:v2", registry.host());

    let out = run(home.path(), &root, &["--json", "pull", &v1]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = run(home.path(), &root, &["--json", "pull", &v2]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let r = result_line(&text(&out.stdout));
    assert_eq!(r["partialLayers"], 1, "{r}");
    assert!(r["bytesFetched"].as_u64().unwrap() < 100_000, "{r}");

    // The image is hoist's: it unpacks, fsck is clean; index.json leaves it out for now.
    let dir = home.path().join("rootfs");
    let out = run(home.path(), &root, &["unpack", &v2, dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(std::fs::read(dir.join("app/a")).unwrap(), a);
    assert_eq!(std::fs::read(dir.join("app/b")).unwrap(), noise(20_000, 3));
    let out = run(home.path(), &root, &["fsck"]);
    assert!(out.status.success(), "{}", text(&out.stdout));
    let index = std::fs::read_to_string(root.join("index.json")).unwrap();
    assert!(index.contains("cli/chunked:v1"), "{index}");
    assert!(!index.contains("cli/chunked:v2"), "{index}");

    // --no-partial fetches whole blobs.
    let other = home.path().join("store2");
    let out = run(home.path(), &other, &["--json", "pull", &v1]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = run(
        home.path(),
        &other,
        &["--json", "pull", "--no-partial", &v2],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let r = result_line(&text(&out.stdout));
    assert_eq!(r["partialLayers"], 0, "{r}");
    let index = std::fs::read_to_string(other.join("index.json")).unwrap();
    assert!(index.contains("cli/chunked:v2"), "{index}");
}
