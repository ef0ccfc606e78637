//! End-to-end tests of pull and push against the real CNCF distribution registry (started on a
//! free loopback port per test), with images built here: tar layers (the `tar` crate),
//! compressed with gzip (flate2) or zstd, configs and manifests crafted and `PUT`.
#![allow(clippy::unwrap_used, missing_docs)]

mod chunked;
mod errors;
mod faults;
mod foreign_urls;
mod hostile;
mod matrix;
mod mirror;
mod partial;
mod pull;
mod push;

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use hoist_distribution::{Platform, PullConfig, PushConfig, retry_policy};
use hoist_registry::manifest::OCI_MANIFEST;
use hoist_registry::{Endpoint, ImageRef, RegistryClient, Repository, Scheme};
use hoist_store::layer::UnpackOptions;
use hoist_store::{Digest, Store};
use hoist_test_support::Registry;
use hoist_xfer::{Progress, ProgressOutput, RetryPolicy, RootFs};
use serde_json::json;

pub use hoist_distribution::manifest::{
    DOCKER_CONFIG, DOCKER_LAYER_GZIP, DOCKER_LAYER_TAR, OCI_CONFIG, OCI_LAYER_GZIP, OCI_LAYER_TAR,
    OCI_LAYER_ZSTD,
};

pub fn sha(data: &[u8]) -> Digest {
    hoist_registry::digest::sha256_of(data)
}

/// Deterministic pseudo-random bytes (xorshift), different per `seed`: incompressible.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
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

/// A tar archive of regular files.
pub fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(1_700_000_000);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, path, *data).unwrap();
    }
    b.into_inner().unwrap()
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

pub fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::encode_all(data, 3).unwrap()
}

/// A layer: its tar, the blob as pushed, and the blob's media type.
#[derive(Clone, Debug)]
pub struct Layer {
    pub tar: Vec<u8>,
    pub blob: Vec<u8>,
    pub media_type: &'static str,
}

impl Layer {
    pub fn gzip(files: &[(&str, &[u8])]) -> Layer {
        let tar = tar_of(files);
        Layer {
            blob: gzip(&tar),
            tar,
            media_type: DOCKER_LAYER_GZIP,
        }
    }

    pub fn oci_gzip(files: &[(&str, &[u8])]) -> Layer {
        Layer {
            media_type: OCI_LAYER_GZIP,
            ..Layer::gzip(files)
        }
    }

    pub fn zstd(files: &[(&str, &[u8])]) -> Layer {
        let tar = tar_of(files);
        Layer {
            blob: zstd(&tar),
            tar,
            media_type: OCI_LAYER_ZSTD,
        }
    }

    pub fn plain(files: &[(&str, &[u8])], media_type: &'static str) -> Layer {
        let tar = tar_of(files);
        Layer {
            blob: tar.clone(),
            tar,
            media_type,
        }
    }

    pub fn digest(&self) -> Digest {
        sha(&self.blob)
    }

    pub fn diff_id(&self) -> Digest {
        sha(&self.tar)
    }
}

/// An image pushed to a registry.
#[derive(Clone, Debug)]
pub struct Pushed {
    pub manifest: Bytes,
    pub digest: Digest,
    pub media_type: String,
    pub config: Digest,
    pub layers: Vec<Layer>,
}

impl Pushed {
    pub fn diff_ids(&self) -> Vec<Digest> {
        self.layers.iter().map(Layer::diff_id).collect()
    }

    /// The ChainID of the image's top layer.
    pub fn top_chain(&self) -> Digest {
        RootFs::from(self.diff_ids()).chain_id().unwrap()
    }
}

/// A handle on repository `name` of the registry at `host`.
pub fn repo(host: &str, name: &str) -> Repository {
    let client = RegistryClient::builder().build().unwrap();
    client.repository(Endpoint::new(host, Scheme::Http), name)
}

pub async fn push_blob(repo: &Repository, data: &[u8]) -> Digest {
    let d = sha(data);
    if repo.head_blob(&d).await.unwrap().is_none() {
        repo.push_blob_bytes(&d, Bytes::copy_from_slice(data))
            .await
            .unwrap();
    }
    d
}

/// The config of an image with `layers` for `platform`, with the DiffIDs given.
pub fn config_json(platform: &str, diff_ids: &[Digest]) -> Vec<u8> {
    let parts: Vec<&str> = platform.split('/').collect();
    let mut cfg = json!({
        "created": "2024-05-01T12:00:00Z",
        "os": parts[0],
        "architecture": parts[1],
        "rootfs": {"type": "layers", "diff_ids": diff_ids.iter().map(ToString::to_string).collect::<Vec<_>>()},
        "config": {"Env": ["PATH=/bin"]},
    });
    if let Some(v) = parts.get(2) {
        cfg["variant"] = json!(v);
    }
    serde_json::to_vec(&cfg).unwrap()
}

/// Pushes blobs and a manifest built from them, with explicit config bytes and media types.
pub async fn push_raw(
    repo: &Repository,
    tag: &str,
    manifest_type: &str,
    config_type: &str,
    config: &[u8],
    layers: &[Layer],
) -> Pushed {
    let config_d = push_blob(repo, config).await;
    let mut descs = Vec::new();
    for l in layers {
        let d = push_blob(repo, &l.blob).await;
        descs.push(
            json!({"mediaType": l.media_type, "digest": d.to_string(), "size": l.blob.len()}),
        );
    }
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": manifest_type,
        "config": {"mediaType": config_type, "digest": config_d.to_string(), "size": config.len()},
        "layers": descs,
    }))
    .unwrap();
    let manifest = Bytes::from(manifest);
    let digest = repo
        .put_manifest(tag, manifest_type, manifest.clone())
        .await
        .unwrap();
    Pushed {
        manifest,
        digest,
        media_type: manifest_type.to_owned(),
        config: config_d,
        layers: layers.to_vec(),
    }
}

/// Pushes an image (Docker schema 2 or OCI by `manifest_type`) for `platform`.
pub async fn push_image(
    repo: &Repository,
    tag: &str,
    manifest_type: &str,
    platform: &str,
    layers: &[Layer],
) -> Pushed {
    let config_type = if manifest_type == OCI_MANIFEST {
        OCI_CONFIG
    } else {
        DOCKER_CONFIG
    };
    let diff_ids: Vec<Digest> = layers.iter().map(Layer::diff_id).collect();
    let config = config_json(platform, &diff_ids);
    push_raw(repo, tag, manifest_type, config_type, &config, layers).await
}

/// Pushes an index (OCI or Docker list) of `entries` (descriptor media type, digest, size,
/// platform) under `tag`; returns its digest.
pub async fn push_index(
    repo: &Repository,
    tag: &str,
    index_type: &str,
    entries: &[(&str, &Digest, usize, Option<&str>)],
) -> (Digest, Bytes) {
    let manifests: Vec<_> = entries
        .iter()
        .map(|(mt, d, size, platform)| {
            let mut e = json!({"mediaType": mt, "digest": d.to_string(), "size": size});
            if let Some(p) = platform {
                let parts: Vec<&str> = p.split('/').collect();
                let mut pj = json!({"os": parts[0], "architecture": parts[1]});
                if let Some(v) = parts.get(2) {
                    pj["variant"] = json!(v);
                }
                e["platform"] = pj;
            }
            e
        })
        .collect();
    let body = Bytes::from(
        serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": index_type,
            "manifests": manifests,
        }))
        .unwrap(),
    );
    let d = repo
        .put_manifest(tag, index_type, body.clone())
        .await
        .unwrap();
    (d, body)
}

/// Collects progress reports.
#[derive(Default, Clone)]
pub struct Recorder(Arc<Mutex<Vec<Progress>>>);

impl ProgressOutput for Recorder {
    fn update(&self, progress: Progress) {
        self.0.lock().unwrap().push(progress);
    }
}

impl Recorder {
    pub fn actions(&self, id: &str) -> Vec<String> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|p| p.id == id)
            .map(|p| p.action.clone())
            .collect()
    }

    pub fn all(&self) -> Vec<Progress> {
        self.0.lock().unwrap().clone()
    }
}

/// The progress id of a blob.
pub fn short(d: &Digest) -> String {
    d.digest()[..12].to_owned()
}

/// A retry policy with short delays, for tests.
pub fn quick_retries() -> RetryPolicy {
    retry_policy()
        .with_base_delay(Duration::from_millis(20))
        .with_max_delay(Duration::from_millis(100))
        .with_jitter(false)
}

pub struct Local {
    pub dir: tempfile::TempDir,
    pub store: Store,
}

pub fn local_store() -> Local {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("store")).unwrap();
    Local { dir, store }
}

pub fn client() -> RegistryClient {
    RegistryClient::builder().build().unwrap()
}

/// A pull configuration into `store` with a fresh client, quick retries and a progress recorder.
pub fn pull_config(store: &Store) -> (PullConfig, Recorder) {
    let rec = Recorder::default();
    let cfg = PullConfig::new(client(), store.clone())
        .unwrap()
        .with_retry_policy(quick_retries())
        .with_progress(Arc::new(rec.clone()));
    (cfg, rec)
}

pub fn push_config(store: &Store) -> (PushConfig, Recorder) {
    let rec = Recorder::default();
    let cfg = PushConfig::new(client(), store.clone())
        .with_retry_policy(quick_retries())
        .with_progress(Arc::new(rec.clone()));
    (cfg, rec)
}

pub fn image_ref(host: &str, rest: &str) -> ImageRef {
    ImageRef::parse(&format!("{host}/{rest}")).unwrap()
}

/// Unpacks the image whose top layer has ChainID `top` into `dir`.
pub fn unpack(store: &Store, top: &Digest, dir: &Path) {
    let layers = store.layers().unwrap();
    let chain = layers.chain(top).unwrap();
    layers
        .unpack(&chain, dir, &UnpackOptions::default())
        .unwrap();
}

pub async fn start_registry() -> Registry {
    Registry::start().await.expect("start the registry")
}

pub fn platform(s: &str) -> Platform {
    Platform::parse(s).unwrap()
}
