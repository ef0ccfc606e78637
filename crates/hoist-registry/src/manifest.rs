//! Manifests: media types, and HEAD / GET / PUT / DELETE by tag or digest.
//!
//! Every manifest fetched is checked against a digest before it is returned: the digest it was
//! asked for when fetched by digest, else the registry's `Docker-Content-Digest` when sent.

use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode, header};
use oci_spec::image::Digest;

use crate::client::{ReqBody, header_str};
use crate::digest;
use crate::error::{Error, Result};
use crate::repository::{Access, Repository};

/// Media type of an OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// Media type of an OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Media type of a Docker schema 2 manifest.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Media type of a Docker manifest list.
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Media type of a signed Docker schema 1 manifest.
pub const DOCKER_SCHEMA1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";
/// Media type of an unsigned Docker schema 1 manifest.
pub const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";

/// Every manifest type hoist asks for, most preferred first.
pub const ACCEPTED: &[&str] = &[
    OCI_INDEX,
    DOCKER_LIST,
    OCI_MANIFEST,
    DOCKER_MANIFEST,
    DOCKER_SCHEMA1_SIGNED,
    DOCKER_SCHEMA1,
];

/// What kind of manifest a media type names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ManifestKind {
    /// An OCI image manifest.
    OciManifest,
    /// An OCI image index.
    OciIndex,
    /// A Docker schema 2 manifest.
    DockerManifest,
    /// A Docker manifest list.
    DockerList,
    /// A Docker schema 1 manifest (deprecated; recognised to report it).
    Schema1,
}

impl ManifestKind {
    /// The kind for a media type (parameters such as `; charset=utf-8` ignored).
    pub fn from_media_type(media_type: &str) -> Option<ManifestKind> {
        let base = media_type.split(';').next().unwrap_or("").trim();
        Some(match base {
            OCI_MANIFEST => ManifestKind::OciManifest,
            OCI_INDEX => ManifestKind::OciIndex,
            DOCKER_MANIFEST => ManifestKind::DockerManifest,
            DOCKER_LIST => ManifestKind::DockerList,
            DOCKER_SCHEMA1_SIGNED | DOCKER_SCHEMA1 => ManifestKind::Schema1,
            _ => return None,
        })
    }

    /// Whether this is an index / manifest list (it points at other manifests).
    pub fn is_index(self) -> bool {
        matches!(self, ManifestKind::OciIndex | ManifestKind::DockerList)
    }
}

/// A manifest as the registry sent it: exact bytes, media type, and verified digest.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// The media type from the `Content-Type` header (or the body's `mediaType` if the header was generic).
    pub media_type: String,
    /// The digest of [`Manifest::bytes`], verified.
    pub digest: Digest,
    /// The manifest's bytes, unchanged.
    pub bytes: Bytes,
}

impl Manifest {
    /// The kind of manifest, if hoist knows its media type.
    pub fn kind(&self) -> Option<ManifestKind> {
        ManifestKind::from_media_type(&self.media_type)
    }
}

/// What a `HEAD` on a manifest says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestHead {
    /// The manifest's digest, if the registry sent `Docker-Content-Digest`.
    pub digest: Option<Digest>,
    /// Its media type.
    pub media_type: Option<String>,
    /// Its size in bytes, if sent.
    pub size: Option<u64>,
}

fn accept_header() -> HeaderValue {
    HeaderValue::from_static(
        "application/vnd.oci.image.index.v1+json, \
         application/vnd.docker.distribution.manifest.list.v2+json, \
         application/vnd.oci.image.manifest.v1+json, \
         application/vnd.docker.distribution.manifest.v2+json, \
         application/vnd.docker.distribution.manifest.v1+prettyjws, \
         application/vnd.docker.distribution.manifest.v1+json",
    )
}

/// The media type of a manifest body, from its `mediaType` field (schema 1 has `schemaVersion: 1`).
fn media_type_from_body(bytes: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Probe {
        #[serde(rename = "mediaType")]
        media_type: Option<String>,
        #[serde(rename = "schemaVersion")]
        schema_version: Option<u32>,
        manifests: Option<serde::de::IgnoredAny>,
    }
    let p: Probe = serde_json::from_slice(bytes).ok()?;
    match (p.media_type, p.schema_version) {
        (Some(m), _) => Some(m),
        (None, Some(1)) => Some(DOCKER_SCHEMA1_SIGNED.to_owned()),
        // OCI allows mediaType to be absent; tell an index from a manifest by its shape.
        (None, Some(2)) if p.manifests.is_some() => Some(OCI_INDEX.to_owned()),
        (None, Some(2)) => Some(OCI_MANIFEST.to_owned()),
        _ => None,
    }
}

fn parse_digest_header(headers: &http::HeaderMap) -> Option<Digest> {
    header_str(headers, "docker-content-digest").and_then(|s| s.trim().parse().ok())
}

impl Repository {
    /// `HEAD` the manifest for a tag or digest.
    pub async fn head_manifest(&self, reference: &str) -> Result<ManifestHead> {
        let url = self.url(&format!("manifests/{reference}"))?;
        let mut req = self.req(Method::HEAD, url, Access::Pull);
        req.headers.insert(header::ACCEPT, accept_header());
        let resp = self.send(req).await?;
        let size = header_str(&resp.headers, "content-length").and_then(|s| s.parse().ok());
        Ok(ManifestHead {
            digest: parse_digest_header(&resp.headers),
            media_type: header_str(&resp.headers, "content-type").map(str::to_owned),
            size,
        })
    }

    /// Whether a manifest exists (a `HEAD` that answers 404 is `false`).
    pub async fn manifest_exists(&self, reference: &str) -> Result<bool> {
        match self.head_manifest(reference).await {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// `GET` the manifest for a tag or digest (`reference`), verified.
    ///
    /// By digest, the bytes must hash to it. By tag, they must hash to the registry's
    /// `Docker-Content-Digest` when it sends one. Manifests over the size limit (4 MiB by default)
    /// are refused.
    pub async fn get_manifest(&self, reference: &str) -> Result<Manifest> {
        let url = self.url(&format!("manifests/{reference}"))?;
        let mut req = self.req(Method::GET, url.clone(), Access::Pull);
        req.headers.insert(header::ACCEPT, accept_header());
        let resp = self.send(req).await?;
        let header_digest = parse_digest_header(&resp.headers);
        let content_type = header_str(&resp.headers, "content-type").map(str::to_owned);
        let limit = self.client.inner.limits.manifest;
        let bytes = resp.body.read_capped("manifest", limit).await?;
        let by_digest: Option<Digest> = reference
            .contains(':')
            .then(|| reference.parse().ok())
            .flatten();
        let expected = by_digest.or(header_digest);
        let digest = match expected {
            Some(expected) => {
                digest::check(&expected, &bytes).map_err(|actual| Error::DigestMismatch {
                    url: crate::client::redact_url(&url),
                    expected: expected.to_string(),
                    actual,
                })?;
                expected
            }
            None => digest::sha256_of(&bytes),
        };
        let media_type = match content_type {
            Some(ct) if ManifestKind::from_media_type(&ct).is_some() => ct,
            other => media_type_from_body(&bytes)
                .or(other)
                .unwrap_or_else(|| "application/octet-stream".into()),
        };
        Ok(Manifest {
            media_type,
            digest,
            bytes,
        })
    }

    /// `PUT` a manifest under a tag or its digest. Returns the digest the registry stored it as,
    /// checked against the digest of `bytes`.
    pub async fn put_manifest(
        &self,
        reference: &str,
        media_type: &str,
        bytes: Bytes,
    ) -> Result<Digest> {
        let url = self.url(&format!("manifests/{reference}"))?;
        let mut req = self.req(Method::PUT, url.clone(), Access::Push);
        req.headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_str(media_type).map_err(|_| Error::UnsupportedMediaType {
                url: crate::client::redact_url(&url),
                media_type: media_type.to_owned(),
            })?,
        );
        let ours = digest::sha256_of(&bytes);
        req.body = ReqBody::Bytes(bytes);
        let resp = self.send(req).await?;
        if resp.status != StatusCode::CREATED && !resp.status.is_success() {
            return Err(Error::InvalidResponse {
                url: crate::client::redact_url(&url),
                reason: format!("manifest PUT answered {}", resp.status),
            });
        }
        if let Some(theirs) = parse_digest_header(&resp.headers)
            && theirs.algorithm() == ours.algorithm()
            && theirs != ours
        {
            return Err(Error::DigestMismatch {
                url: crate::client::redact_url(&url),
                expected: ours.to_string(),
                actual: theirs.to_string(),
            });
        }
        resp.body.drain(1 << 16).await;
        Ok(ours)
    }

    /// Deletes the manifest with `digest` (registries refuse deletion by tag).
    pub async fn delete_manifest(&self, digest: &Digest) -> Result<()> {
        let url = self.url(&format!("manifests/{digest}"))?;
        let req = self.req(Method::DELETE, url, Access::Delete);
        let resp = self.send(req).await?;
        resp.body.drain(1 << 16).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types_map_to_kinds_ignoring_parameters() {
        assert_eq!(
            ManifestKind::from_media_type(OCI_MANIFEST),
            Some(ManifestKind::OciManifest)
        );
        assert_eq!(
            ManifestKind::from_media_type(&format!("{DOCKER_LIST}; charset=utf-8")),
            Some(ManifestKind::DockerList)
        );
        assert_eq!(
            ManifestKind::from_media_type(DOCKER_SCHEMA1_SIGNED),
            Some(ManifestKind::Schema1)
        );
        assert_eq!(ManifestKind::from_media_type("application/json"), None);
        assert!(ManifestKind::OciIndex.is_index());
        assert!(!ManifestKind::DockerManifest.is_index());
    }

    #[test]
    fn body_media_type_is_used_when_present_or_inferred_from_shape() {
        assert_eq!(
            media_type_from_body(br#"{"schemaVersion":2,"mediaType":"x/y"}"#).as_deref(),
            Some("x/y")
        );
        assert_eq!(
            media_type_from_body(br#"{"schemaVersion":1,"name":"a"}"#).as_deref(),
            Some(DOCKER_SCHEMA1_SIGNED)
        );
        assert_eq!(
            media_type_from_body(br#"{"schemaVersion":2,"manifests":[]}"#).as_deref(),
            Some(OCI_INDEX)
        );
        assert_eq!(
            media_type_from_body(br#"{"schemaVersion":2,"layers":[]}"#).as_deref(),
            Some(OCI_MANIFEST)
        );
        assert_eq!(media_type_from_body(b"not json"), None);
    }

    #[test]
    fn accept_header_lists_every_accepted_type() {
        let h = accept_header();
        let s = h.to_str().unwrap();
        for t in ACCEPTED {
            assert!(s.contains(t), "{t}");
        }
    }
}
