//! Manifest and index documents as far as the transports and the copy read them: media types,
//! descriptors, the blobs an image manifest names, the children an index lists, and layer
//! compression by magic number.
//!
//! Parsing is lenient about fields hoist does not use, so that manifests written by any tool are
//! read; the bytes themselves are never re-serialised (digests must be preserved).

use std::collections::BTreeMap;

use oci_spec::image::Digest;
use serde::{Deserialize, Serialize};

pub use hoist_registry::manifest::{
    DOCKER_LIST, DOCKER_MANIFEST, DOCKER_SCHEMA1, DOCKER_SCHEMA1_SIGNED, OCI_INDEX, OCI_MANIFEST,
};

use crate::platform::Platform;

/// The most bytes of a manifest or index read into memory.
pub const MANIFEST_LIMIT: u64 = 4 << 20;
/// The most bytes of an image config read into memory.
pub const CONFIG_LIMIT: u64 = 32 << 20;

/// Media type of a Docker image config.
pub const DOCKER_CONFIG: &str = crate::manifest::DOCKER_CONFIG;
/// Media type of an OCI image config.
pub const OCI_CONFIG: &str = crate::manifest::OCI_CONFIG;
/// Media type of an uncompressed Docker layer.
pub const DOCKER_LAYER: &str = crate::manifest::DOCKER_LAYER_TAR;
/// Media type of a gzip-compressed Docker layer.
pub const DOCKER_LAYER_GZIP: &str = crate::manifest::DOCKER_LAYER_GZIP;
/// Media type of a Docker foreign (non-distributable) layer.
pub const DOCKER_LAYER_FOREIGN: &str = crate::manifest::DOCKER_FOREIGN_LAYER_GZIP;
/// Media type of an uncompressed OCI layer.
pub const OCI_LAYER: &str = crate::manifest::OCI_LAYER_TAR;
/// Media type of a gzip-compressed OCI layer.
pub const OCI_LAYER_GZIP: &str = crate::manifest::OCI_LAYER_GZIP;
/// Media type of a zstd-compressed OCI layer.
pub const OCI_LAYER_ZSTD: &str = crate::manifest::OCI_LAYER_ZSTD;

/// A content descriptor, as manifests and indexes write them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<PlatformDoc>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl Descriptor {
    /// Whether the blob is not distributable: registries may not hold it and copies skip it.
    pub fn is_foreign(&self) -> bool {
        crate::manifest::is_foreign(&self.media_type, &self.urls)
    }
}

/// A platform as an index entry writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PlatformDoc {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl PlatformDoc {
    pub fn platform(&self) -> Platform {
        Platform::new(&self.os, &self.architecture, self.variant.as_deref())
    }
}

/// An image manifest (OCI or Docker schema 2): the config and layers it names.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ImageManifest {
    pub config: Descriptor,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
}

/// An index or manifest list: the manifests it lists.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct IndexManifest {
    pub manifests: Vec<Descriptor>,
}

impl ImageManifest {
    pub fn parse(bytes: &[u8]) -> Result<ImageManifest, String> {
        serde_json::from_slice(bytes).map_err(|e| format!("not an image manifest: {e}"))
    }
}

impl IndexManifest {
    pub fn parse(bytes: &[u8]) -> Result<IndexManifest, String> {
        serde_json::from_slice(bytes).map_err(|e| format!("not an image index: {e}"))
    }
}

/// The media type a manifest declares in its body, or that its shape implies (OCI allows
/// `mediaType` to be absent); schema 1 is recognised by `schemaVersion: 1`.
pub(crate) fn media_type_of(bytes: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Probe {
        #[serde(rename = "mediaType")]
        media_type: Option<String>,
        #[serde(rename = "schemaVersion")]
        schema_version: Option<u32>,
        manifests: Option<serde::de::IgnoredAny>,
        config: Option<serde::de::IgnoredAny>,
    }
    let probe: Probe = serde_json::from_slice(bytes).ok()?;
    match (probe.media_type, probe.schema_version) {
        (Some(m), _) if !m.is_empty() => Some(m),
        (_, Some(1)) => Some(DOCKER_SCHEMA1_SIGNED.to_owned()),
        (_, Some(2)) if probe.manifests.is_some() => Some(OCI_INDEX.to_owned()),
        (_, Some(2)) if probe.config.is_some() => Some(OCI_MANIFEST.to_owned()),
        _ => None,
    }
}

/// The media type a layer of `original`'s family (Docker or OCI) has when compressed as
/// `compression`: what a substitute blob is described as. `None` when that family has no such
/// type (zstd in a Docker manifest) or the compression is not one hoist knows.
pub(crate) fn layer_media_type_for(
    original: &str,
    compression: &hoist_store::Compression,
) -> Option<&'static str> {
    let docker = base_media_type(original).starts_with("application/vnd.docker.");
    match (compression, docker) {
        (hoist_store::Compression::Gzip, true) => Some(DOCKER_LAYER_GZIP),
        (hoist_store::Compression::Gzip, false) => Some(OCI_LAYER_GZIP),
        (hoist_store::Compression::Zstd, false) => Some(OCI_LAYER_ZSTD),
        (hoist_store::Compression::Uncompressed, true) => Some(DOCKER_LAYER),
        (hoist_store::Compression::Uncompressed, false) => Some(OCI_LAYER),
        _ => None,
    }
}

/// The OCI layer media type for a Docker one (same compression); other types unchanged.
pub(crate) fn oci_layer_type_for_docker(media_type: &str) -> String {
    match base_media_type(media_type) {
        DOCKER_LAYER_GZIP => OCI_LAYER_GZIP.to_owned(),
        DOCKER_LAYER => OCI_LAYER.to_owned(),
        "application/vnd.docker.image.rootfs.diff.tar.zstd" => OCI_LAYER_ZSTD.to_owned(),
        DOCKER_LAYER_FOREIGN => {
            "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip".to_owned()
        }
        other => other.to_owned(),
    }
}

/// The media type without parameters (`; charset=utf-8`).
pub(crate) fn base_media_type(media_type: &str) -> &str {
    media_type.split(';').next().unwrap_or("").trim()
}

/// How a layer is compressed, by its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// Detects the compression from a blob's first bytes (at least 4 unless the blob is shorter).
    pub fn detect(head: &[u8]) -> Compression {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }
}

/// Whether a media type names an image layer (a tar, compressed or not) rather than an
/// artifact's blob.
pub(crate) fn is_layer_media_type(media_type: &str) -> bool {
    let m = base_media_type(media_type);
    m.starts_with("application/vnd.docker.image.rootfs.")
        || m.starts_with("application/vnd.oci.image.layer.")
}

/// Whether a media type names an image config hoist understands.
pub(crate) fn is_image_config(media_type: &str) -> bool {
    matches!(base_media_type(media_type), DOCKER_CONFIG | OCI_CONFIG)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_type_comes_from_the_body_or_its_shape() {
        assert_eq!(
            media_type_of(br#"{"schemaVersion":2,"mediaType":"x/y"}"#).as_deref(),
            Some("x/y")
        );
        assert_eq!(
            media_type_of(br#"{"schemaVersion":2,"manifests":[]}"#).as_deref(),
            Some(OCI_INDEX)
        );
        assert_eq!(
            media_type_of(br#"{"schemaVersion":2,"config":{},"layers":[]}"#).as_deref(),
            Some(OCI_MANIFEST)
        );
        assert_eq!(
            media_type_of(br#"{"schemaVersion":1,"fsLayers":[]}"#).as_deref(),
            Some(DOCKER_SCHEMA1_SIGNED)
        );
        assert_eq!(media_type_of(b"[]"), None);
    }

    #[test]
    fn descriptors_keep_platform_and_ignore_unknown_fields() {
        let digest = format!("sha256:{}", "a".repeat(64));
        let json = format!(
            r#"{{"manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{digest}","size":7,
            "platform":{{"architecture":"arm","os":"linux","variant":"v6","os.features":["x"]}},
            "data":"e30="}}]}}"#
        );
        let index = IndexManifest::parse(json.as_bytes()).unwrap();
        let entry = &index.manifests[0];
        assert_eq!(entry.size, 7);
        assert_eq!(
            entry.platform.as_ref().unwrap().platform().to_string(),
            "linux/arm/v6"
        );
    }

    #[test]
    fn compression_is_detected_by_magic_number() {
        assert_eq!(Compression::detect(&[0x1f, 0x8b, 8, 0]), Compression::Gzip);
        assert_eq!(
            Compression::detect(&[0x28, 0xb5, 0x2f, 0xfd, 0]),
            Compression::Zstd
        );
        assert_eq!(Compression::detect(b"usta"), Compression::None);
        assert_eq!(Compression::detect(b""), Compression::None);
    }

    #[test]
    fn foreign_layers_need_urls_and_a_foreign_type() {
        let digest: Digest = format!("sha256:{}", "b".repeat(64)).parse().unwrap();
        let mut d = Descriptor {
            media_type: DOCKER_LAYER_FOREIGN.into(),
            digest,
            size: 1,
            urls: vec!["https://example.invalid/l".into()],
            platform: None,
            annotations: BTreeMap::new(),
        };
        assert!(d.is_foreign());
        d.urls.clear();
        assert!(!d.is_foreign());
    }
}
