//! Integration tests of the registry client against the real CNCF distribution registry, started
//! on a free loopback port for each test by the test-support crate.
#![allow(clippy::unwrap_used, missing_docs)]

mod auth;
mod blobs;
mod faults;
mod foreign;
mod hostile;
mod manifests;
mod range_modes;
mod ranges;
mod tags;
mod tls;
mod uploads;
mod windows;

use bytes::Bytes;
use hoist_registry::{Endpoint, RegistryClient, Repository, Scheme};
use hoist_test_support::Registry;
use oci_spec::image::Digest;

/// Starts a plain registry and returns it with a client handle on repository `name`.
pub async fn plain(name: &str) -> (Registry, Repository) {
    let registry = Registry::start().await.expect("start registry");
    let client = RegistryClient::builder().build().unwrap();
    let repo = client.repository(Endpoint::new(registry.host(), Scheme::Http), name);
    (registry, repo)
}

/// Deterministic pseudo-random bytes (xorshift), `len` long, different per `seed`.
pub fn blob(len: usize, seed: u64) -> Bytes {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    Bytes::from(out)
}

pub fn digest_of(data: &[u8]) -> Digest {
    hoist_registry::digest::sha256_of(data)
}

/// A body stream of `data` in pieces of `piece` bytes.
pub fn stream_of(data: Bytes, piece: usize) -> hoist_registry::ByteStream {
    let pieces: Vec<std::io::Result<Bytes>> = (0..data.len())
        .step_by(piece.max(1))
        .map(|i| Ok(data.slice(i..(i + piece).min(data.len()))))
        .collect();
    Box::pin(futures_util::stream::iter(pieces))
}

/// Reads a blob response to the end.
pub async fn read_all(mut body: hoist_registry::BodyStream) -> Vec<u8> {
    use futures_util::StreamExt;
    let mut out = Vec::new();
    while let Some(chunk) = body.next().await {
        out.extend_from_slice(&chunk.unwrap());
    }
    out
}

/// Pushes `data` as a blob (monolithic) and returns its digest.
pub async fn push(repo: &Repository, data: &Bytes) -> Digest {
    let d = digest_of(data);
    repo.push_blob(&d, data.len() as u64, stream_of(data.clone(), 64 * 1024))
        .await
        .unwrap();
    d
}

/// A minimal valid image: config + one layer, pushed; returns the manifest bytes (OCI).
pub async fn push_image(repo: &Repository, tag: &str, seed: u64) -> (Bytes, Digest) {
    let layer = blob(4096, seed);
    let layer_d = push(repo, &layer).await;
    let config = Bytes::from(format!(
        r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":["{layer_d}"]}}}}"#
    ));
    let config_d = push(repo, &config).await;
    let manifest = Bytes::from(format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config_d}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{layer_d}","size":{}}}]}}"#,
        config.len(),
        layer.len()
    ));
    let d = repo
        .put_manifest(
            tag,
            hoist_registry::manifest::OCI_MANIFEST,
            manifest.clone(),
        )
        .await
        .unwrap();
    (manifest, d)
}

/// A blob in a plain registry, read through a fault proxy.
pub struct Proxied {
    pub _registry: Registry,
    pub proxy: hoist_test_support::FaultProxy,
    /// The repository, reached through the proxy.
    pub repo: Repository,
    pub data: Bytes,
    pub digest: Digest,
}

/// Pushes `len` bytes of [`blob`]`(len, seed)` to a new plain registry and returns them with a
/// repository handle that goes through a fresh fault proxy (its log cleared).
pub async fn proxied(name: &str, len: usize, seed: u64) -> Proxied {
    let (registry, direct) = plain(name).await;
    let data = blob(len, seed);
    let digest = push(&direct, &data).await;
    let proxy = hoist_test_support::FaultProxy::start(&registry.url())
        .await
        .unwrap();
    let client = RegistryClient::builder()
        .stall_timeout(std::time::Duration::from_secs(5))
        .build()
        .unwrap();
    let repo = client.repository(Endpoint::new(proxy.host(), Scheme::Http), name);
    proxy.clear_log();
    Proxied {
        _registry: registry,
        proxy,
        repo,
        data,
        digest,
    }
}
