//! Puts content into a registry over the plain client: blobs, manifests, whole images.

use http::{Method, StatusCode};
use sha2::{Digest as _, Sha256};

use crate::client::{self, Reply};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

pub fn digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// Random bytes, so no two tests share content by accident.
pub fn random_bytes(len: usize) -> Vec<u8> {
    (0..len).map(|_| rand::random::<u8>()).collect()
}

fn absolute(base: &str, location: &str) -> String {
    if location.starts_with("http://") || location.starts_with("https://") {
        location.to_owned()
    } else {
        format!("{base}{location}")
    }
}

/// Uploads `data` monolithically (POST, then PUT `?digest=`) and returns its digest.
pub async fn push_blob(base: &str, repo: &str, data: &[u8], auth: Option<&str>) -> String {
    let start = client::req(Method::POST, &format!("{base}/v2/{repo}/blobs/uploads/"))
        .auth(auth)
        .send()
        .await;
    assert_eq!(
        start.status,
        StatusCode::ACCEPTED,
        "upload start: {start:?}"
    );
    let location = absolute(base, start.header("location").unwrap());
    let digest = digest(data);
    let sep = if location.contains('?') { '&' } else { '?' };
    let done = client::req(Method::PUT, &format!("{location}{sep}digest={digest}"))
        .auth(auth)
        .header("content-type", "application/octet-stream")
        .body(data.to_vec())
        .send()
        .await;
    assert_eq!(done.status, StatusCode::CREATED, "upload end: {done:?}");
    digest
}

pub async fn put_manifest(
    base: &str,
    repo: &str,
    reference: &str,
    media_type: &str,
    bytes: &[u8],
    auth: Option<&str>,
) -> Reply {
    client::req(
        Method::PUT,
        &format!("{base}/v2/{repo}/manifests/{reference}"),
    )
    .auth(auth)
    .header("content-type", media_type)
    .body(bytes.to_vec())
    .send()
    .await
}

/// A one-layer OCI image and an index pointing at it, as pushed.
pub struct Image {
    pub layer: Vec<u8>,
    pub layer_digest: String,
    pub manifest: Vec<u8>,
    pub manifest_digest: String,
    pub index: Vec<u8>,
    pub index_digest: String,
}

/// Pushes a one-layer image tagged `tag` and an index of it tagged `{tag}-index`.
pub async fn push_image(
    base: &str,
    repo: &str,
    tag: &str,
    layer_len: usize,
    auth: Option<&str>,
) -> Image {
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [digest(b"unused")]},
    })
    .to_string()
    .into_bytes();
    let layer = random_bytes(layer_len);
    let config_digest = push_blob(base, repo, &config, auth).await;
    let layer_digest = push_blob(base, repo, &layer, auth).await;
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": layer_digest, "size": layer.len()}],
    })
    .to_string()
    .into_bytes();
    let put = put_manifest(base, repo, tag, OCI_MANIFEST, &manifest, auth).await;
    assert_eq!(put.status, StatusCode::CREATED, "manifest put: {put:?}");
    let manifest_digest = digest(&manifest);
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": manifest_digest,
                       "size": manifest.len(),
                       "platform": {"architecture": "amd64", "os": "linux"}}],
    })
    .to_string()
    .into_bytes();
    let put = put_manifest(base, repo, &format!("{tag}-index"), OCI_INDEX, &index, auth).await;
    assert_eq!(put.status, StatusCode::CREATED, "index put: {put:?}");
    Image {
        layer,
        layer_digest,
        index_digest: digest(&index),
        manifest,
        manifest_digest,
        index,
    }
}
