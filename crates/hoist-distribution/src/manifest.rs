//! Manifests, indexes and image configs as a pull reads them: parsing and validation.
//!
//! I/O-free. [`parse`] reads Docker schema 2 manifests, OCI image manifests, Docker manifest lists
//! and OCI indexes (an index may point at further indexes) and refuses what hoist cannot pull,
//! each with its own [`Error`]:
//! - schema 1 manifests: [`Error::DeprecatedSchema1Image`];
//! - a config or layer media type starting `application/vnd.docker.ai.`:
//!   [`Error::AiModelNotSupported`];
//! - a plugin config ([`PLUGIN_CONFIG_TYPES`]): [`Error::InvalidManifestClass`];
//! - any other config type not accepted ([`IMAGE_CONFIG_TYPES`] by default), any layer type that
//!   is not a tar (plain, gzip or zstd), or an unknown manifest type:
//!   [`Error::UnsupportedMediaType`];
//! - documents that are not what their media type says (an index with layers, a manifest whose
//!   `mediaType` field disagrees with the registry's `Content-Type`): [`Error::InvalidManifest`].
//!
//! [`parse_config`] reads the parts of an image config a pull needs: `rootfs.diff_ids`, the
//! platform and the creation time.

use hoist_registry::ManifestKind;
use hoist_registry::manifest::{
    DOCKER_LIST, DOCKER_MANIFEST, DOCKER_SCHEMA1, DOCKER_SCHEMA1_SIGNED, OCI_INDEX, OCI_MANIFEST,
};
use hoist_store::Digest;
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::platform::Platform;

/// Media type of a Docker image config.
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// Media type of an OCI image config.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Media type of a Docker plugin config.
pub const PLUGIN_CONFIG: &str = "application/vnd.docker.plugin.v1+json";
/// Prefix of the media types of AI models packaged as OCI artifacts.
pub const AI_MODEL_PREFIX: &str = "application/vnd.docker.ai.";

/// Docker gzip layer.
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
/// Docker foreign (non-distributable) gzip layer.
pub const DOCKER_FOREIGN_LAYER_GZIP: &str =
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
/// Docker uncompressed layer.
pub const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";
/// Docker zstd layer (written by some tools).
pub const DOCKER_LAYER_ZSTD: &str = "application/vnd.docker.image.rootfs.diff.tar.zstd";
/// OCI uncompressed layer.
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
/// OCI gzip layer.
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// OCI zstd layer.
pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
/// OCI non-distributable uncompressed layer.
pub const OCI_NONDIST_TAR: &str = "application/vnd.oci.image.layer.nondistributable.v1.tar";
/// OCI non-distributable gzip layer.
pub const OCI_NONDIST_GZIP: &str = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip";
/// OCI non-distributable zstd layer.
pub const OCI_NONDIST_ZSTD: &str = "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd";

/// The config media types of images, as registries and tools have written them. The empty
/// string stands for a config descriptor without a media type; `application/octet-stream`,
/// `application/json` and `text/html` were written by old registries and clients.
pub const IMAGE_CONFIG_TYPES: &[&str] = &[
    DOCKER_CONFIG,
    OCI_CONFIG,
    "application/octet-stream",
    "application/json",
    "text/html",
    "",
];

/// Most layers an image manifest may list. Real images stay far below (overlay filesystems
/// stack at most a few hundred); a manifest with more is refused before anything is fetched.
pub const MAX_LAYERS: usize = 1000;

/// The config media types of Docker plugins.
pub const PLUGIN_CONFIG_TYPES: &[&str] = &[PLUGIN_CONFIG];

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    /// A plain tar.
    None,
    /// gzip.
    Gzip,
    /// zstd.
    Zstd,
}

impl Compression {
    /// The compression of a layer media type, or `None` if it is not a layer type hoist knows.
    pub fn from_media_type(media_type: &str) -> Option<Compression> {
        let base = media_type.split(';').next().unwrap_or("").trim();
        Some(match base {
            DOCKER_LAYER_GZIP | DOCKER_FOREIGN_LAYER_GZIP | OCI_LAYER_GZIP | OCI_NONDIST_GZIP => {
                Compression::Gzip
            }
            DOCKER_LAYER_ZSTD | OCI_LAYER_ZSTD | OCI_NONDIST_ZSTD => Compression::Zstd,
            DOCKER_LAYER_TAR | OCI_LAYER_TAR | OCI_NONDIST_TAR => Compression::None,
            _ => return None,
        })
    }

    /// The name the store's blob info cache uses.
    pub fn store_name(self) -> hoist_store::Compression {
        match self {
            Compression::None => hoist_store::Compression::Uncompressed,
            Compression::Gzip => hoist_store::Compression::Gzip,
            Compression::Zstd => hoist_store::Compression::Zstd,
        }
    }
}

/// A descriptor of a blob: media type, digest, size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobRef {
    /// The media type.
    pub media_type: String,
    /// The digest.
    pub digest: Digest,
    /// The size in bytes.
    pub size: u64,
}

/// A layer of an image manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerRef {
    /// The blob.
    pub blob: BlobRef,
    /// How it is compressed.
    pub compression: Compression,
    /// The descriptor's annotations (zstd:chunked and eStargz layers locate their table of
    /// contents with them).
    pub annotations: std::collections::BTreeMap<String, String>,
    /// The descriptor's `urls`: where a non-distributable layer may be fetched besides the
    /// registry (followed only as [`crate::PullConfig::foreign_urls`] allows).
    pub urls: Vec<String>,
}

/// Whether a descriptor of `media_type` with `urls` names a non-distributable ("foreign")
/// blob: a registry need not hold it, copies and pushes leave it out.
pub fn is_foreign(media_type: &str, urls: &[String]) -> bool {
    !urls.is_empty()
        && (media_type == DOCKER_FOREIGN_LAYER_GZIP || media_type.contains(".nondistributable."))
}

impl LayerRef {
    /// Whether the layer is non-distributable ([`is_foreign`]).
    pub fn is_foreign(&self) -> bool {
        is_foreign(&self.blob.media_type, &self.urls)
    }
}

/// An image manifest (Docker schema 2 or OCI).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageManifest {
    /// The manifest's media type.
    pub media_type: String,
    /// The image config.
    pub config: BlobRef,
    /// The layers, base first.
    pub layers: Vec<LayerRef>,
}

/// One entry of an index or manifest list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexEntry {
    /// The entry's descriptor.
    pub descriptor: BlobRef,
    /// The platform it declares, if any.
    pub platform: Option<Platform>,
}

impl IndexEntry {
    /// What the entry points at: an image manifest, an index, or something else (`None`).
    pub fn kind(&self) -> Option<ManifestKind> {
        ManifestKind::from_media_type(&self.descriptor.media_type)
    }
}

/// An index (OCI) or manifest list (Docker).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageIndex {
    /// The index's media type.
    pub media_type: String,
    /// Its entries.
    pub manifests: Vec<IndexEntry>,
}

impl ImageIndex {
    /// The entries that point at manifests or indexes, best first for `wanted` (see
    /// [`crate::platform::rank`]).
    pub fn candidates(&self, wanted: &Platform) -> Vec<&IndexEntry> {
        let usable: Vec<&IndexEntry> = self
            .manifests
            .iter()
            .filter(|e| matches!(e.kind(), Some(k) if k != ManifestKind::Schema1))
            .collect();
        let platforms: Vec<Option<Platform>> = usable.iter().map(|e| e.platform.clone()).collect();
        crate::platform::rank(&platforms, wanted)
            .into_iter()
            .map(|i| usable[i])
            .collect()
    }

    /// The platforms the index offers, for messages.
    pub fn platforms(&self) -> String {
        let list: Vec<String> = self
            .manifests
            .iter()
            .filter_map(|e| e.platform.as_ref().map(ToString::to_string))
            .collect();
        if list.is_empty() {
            "none declared".to_owned()
        } else {
            list.join(", ")
        }
    }
}

/// A parsed manifest document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// An image manifest.
    Image(ImageManifest),
    /// An index or manifest list.
    Index(ImageIndex),
}

#[derive(Deserialize)]
struct RawDescriptor {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: String,
    size: i64,
    platform: Option<RawPlatform>,
    #[serde(default)]
    annotations: Option<std::collections::BTreeMap<String, String>>,
    #[serde(default)]
    urls: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct RawPlatform {
    os: String,
    architecture: String,
    variant: Option<String>,
}

#[derive(Deserialize)]
struct RawManifest {
    #[serde(rename = "schemaVersion")]
    schema_version: Option<i64>,
    #[serde(rename = "mediaType")]
    media_type: Option<String>,
    config: Option<RawDescriptor>,
    layers: Option<Vec<RawDescriptor>>,
    manifests: Option<Vec<RawDescriptor>>,
}

/// Checks that `bytes` hash to `expected`.
pub fn verify_digest(expected: &Digest, bytes: &[u8]) -> Result<()> {
    hoist_registry::digest::check(expected, bytes).map_err(|actual| Error::ManifestDigestMismatch {
        expected: expected.clone(),
        actual,
    })
}

/// Whether `media_type` is one of `accepted` (parameters ignored).
fn accepted(media_type: &str, accepted: &[String]) -> bool {
    let base = media_type.split(';').next().unwrap_or("").trim();
    accepted.iter().any(|a| a == base)
}

/// The default list of accepted config media types, owned.
pub fn default_config_types() -> Vec<String> {
    IMAGE_CONFIG_TYPES.iter().map(|s| (*s).to_owned()).collect()
}

/// Parses the manifest `bytes` (digest `digest`) that the registry served as `media_type`, for
/// the image `reference` (named in errors). Image manifests must have a config type in
/// `config_types` (see [`IMAGE_CONFIG_TYPES`]).
pub fn parse(
    media_type: &str,
    digest: &Digest,
    bytes: &[u8],
    reference: &str,
    config_types: &[String],
) -> Result<Parsed> {
    let invalid = |reason: String| Error::InvalidManifest {
        digest: digest.clone(),
        reason,
    };
    let kind = match ManifestKind::from_media_type(media_type) {
        Some(k) => k,
        None => {
            return Err(Error::UnsupportedMediaType {
                what: "manifest",
                media_type: media_type.to_owned(),
            });
        }
    };
    if kind == ManifestKind::Schema1 {
        return Err(Error::DeprecatedSchema1Image {
            reference: reference.to_owned(),
        });
    }
    let raw: RawManifest =
        serde_json::from_slice(bytes).map_err(|e| invalid(format!("not valid JSON: {e}")))?;
    if raw.schema_version == Some(1) {
        return Err(Error::DeprecatedSchema1Image {
            reference: reference.to_owned(),
        });
    }
    if let Some(v) = raw.schema_version
        && v != 2
    {
        return Err(invalid(format!("unsupported schemaVersion {v}")));
    }
    if let Some(body_type) = &raw.media_type
        && ManifestKind::from_media_type(body_type) != Some(kind)
    {
        if matches!(body_type.as_str(), DOCKER_SCHEMA1 | DOCKER_SCHEMA1_SIGNED) {
            return Err(Error::DeprecatedSchema1Image {
                reference: reference.to_owned(),
            });
        }
        return Err(invalid(format!(
            "its mediaType {body_type:?} disagrees with the type it was served as, {media_type:?}"
        )));
    }
    if kind.is_index() {
        if raw.config.is_some() || raw.layers.is_some() {
            return Err(invalid("an index must not have a config or layers".into()));
        }
        let entries = raw
            .manifests
            .ok_or_else(|| invalid("an index needs a manifests array".into()))?;
        let manifests = entries
            .into_iter()
            .map(|d| {
                let platform = d
                    .platform
                    .as_ref()
                    .map(|p| Platform::new(&p.os, &p.architecture, p.variant.as_deref()));
                Ok(IndexEntry {
                    descriptor: blob_ref(d, digest)?,
                    platform,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        return Ok(Parsed::Index(ImageIndex {
            media_type: base_type(media_type),
            manifests,
        }));
    }
    if raw.manifests.is_some() {
        return Err(invalid(
            "an image manifest must not have a manifests array".into(),
        ));
    }
    let config = raw
        .config
        .ok_or_else(|| invalid("an image manifest needs a config".into()))?;
    let layers = raw.layers.unwrap_or_default();
    if layers.len() > MAX_LAYERS {
        return Err(invalid(format!(
            "it lists {} layers; hoist pulls images of at most {MAX_LAYERS} layers",
            layers.len()
        )));
    }
    // An AI model is recognised by its config or any layer, before anything else is judged.
    let ai = std::iter::once(&config.media_type)
        .chain(layers.iter().map(|l| &l.media_type))
        .find(|t| t.starts_with(AI_MODEL_PREFIX));
    if let Some(t) = ai {
        return Err(Error::AiModelNotSupported {
            reference: reference.to_owned(),
            media_type: t.clone(),
        });
    }
    if PLUGIN_CONFIG_TYPES.contains(&config.media_type.as_str()) {
        return Err(Error::InvalidManifestClass {
            media_type: config.media_type,
            class: "plugin",
        });
    }
    if !accepted(&config.media_type, config_types) {
        return Err(Error::UnsupportedMediaType {
            what: "config",
            media_type: config.media_type,
        });
    }
    let config = blob_ref(config, digest)?;
    let layers = layers
        .into_iter()
        .map(|l| {
            let compression = Compression::from_media_type(&l.media_type).ok_or_else(|| {
                Error::UnsupportedMediaType {
                    what: "layer",
                    media_type: l.media_type.clone(),
                }
            })?;
            let annotations = l.annotations.clone().unwrap_or_default();
            let urls = l.urls.clone().unwrap_or_default();
            Ok(LayerRef {
                blob: blob_ref(l, digest)?,
                compression,
                annotations,
                urls,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Parsed::Image(ImageManifest {
        media_type: base_type(media_type),
        config,
        layers,
    }))
}

fn base_type(media_type: &str) -> String {
    let base = media_type.split(';').next().unwrap_or("").trim();
    match ManifestKind::from_media_type(base) {
        Some(ManifestKind::OciManifest) => OCI_MANIFEST,
        Some(ManifestKind::OciIndex) => OCI_INDEX,
        Some(ManifestKind::DockerManifest) => DOCKER_MANIFEST,
        Some(ManifestKind::DockerList) => DOCKER_LIST,
        _ => base,
    }
    .to_owned()
}

fn blob_ref(d: RawDescriptor, manifest: &Digest) -> Result<BlobRef> {
    let invalid = |reason: String| Error::InvalidManifest {
        digest: manifest.clone(),
        reason,
    };
    let digest: Digest = d
        .digest
        .parse()
        .map_err(|e| invalid(format!("invalid digest {:?}: {e}", d.digest)))?;
    if hoist_registry::digest::Hasher::new(digest.algorithm()).is_none() {
        return Err(invalid(format!(
            "digest {digest} uses an algorithm hoist cannot verify"
        )));
    }
    let size = u64::try_from(d.size)
        .map_err(|_| invalid(format!("negative size {} for {digest}", d.size)))?;
    Ok(BlobRef {
        media_type: d.media_type,
        digest,
        size,
    })
}

/// What a pull needs from an image config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageConfig {
    /// `rootfs.diff_ids`: the DiffID of each layer, base first.
    pub diff_ids: Vec<Digest>,
    /// The platform the config declares, when it names an OS and an architecture.
    pub platform: Option<Platform>,
    /// The `created` timestamp, as written.
    pub created: Option<String>,
}

#[derive(Deserialize)]
struct RawConfig {
    os: Option<String>,
    architecture: Option<String>,
    variant: Option<String>,
    created: Option<String>,
    rootfs: Option<RawRootfs>,
}

#[derive(Deserialize)]
struct RawRootfs {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    diff_ids: Vec<String>,
}

/// Parses an image config (digest `digest`).
pub fn parse_config(digest: &Digest, bytes: &[u8]) -> Result<ImageConfig> {
    let invalid = |reason: String| Error::InvalidConfig {
        digest: digest.clone(),
        reason,
    };
    let raw: RawConfig =
        serde_json::from_slice(bytes).map_err(|e| invalid(format!("not valid JSON: {e}")))?;
    let rootfs = raw
        .rootfs
        .ok_or_else(|| invalid("it has no rootfs".into()))?;
    if rootfs.kind != "layers" {
        return Err(invalid(format!(
            "rootfs type {:?} is not \"layers\"",
            rootfs.kind
        )));
    }
    let diff_ids = rootfs
        .diff_ids
        .iter()
        .map(|d| {
            d.parse::<Digest>()
                .map_err(|e| invalid(format!("invalid DiffID {d:?}: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let platform = match (&raw.os, &raw.architecture) {
        (Some(os), Some(arch)) if !os.is_empty() && !arch.is_empty() => {
            Some(Platform::new(os, arch, raw.variant.as_deref()))
        }
        _ => None,
    };
    Ok(ImageConfig {
        diff_ids,
        platform,
        created: raw.created,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn d(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    fn dg(c: char) -> Digest {
        d(c).parse().unwrap()
    }

    fn image(media: &str, config_type: &str, layer_types: &[&str]) -> Vec<u8> {
        let layers: Vec<_> = layer_types
            .iter()
            .map(|t| json!({"mediaType": t, "digest": d('b'), "size": 10}))
            .collect();
        serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": media,
            "config": {"mediaType": config_type, "digest": d('c'), "size": 5},
            "layers": layers,
        }))
        .unwrap()
    }

    fn parse_default(media: &str, bytes: &[u8]) -> Result<Parsed> {
        parse(media, &dg('f'), bytes, "r/x:1", &default_config_types())
    }

    #[test]
    fn docker_schema2_manifest_parses_with_layer_compression() {
        let bytes = image(
            DOCKER_MANIFEST,
            DOCKER_CONFIG,
            &[DOCKER_LAYER_GZIP, DOCKER_LAYER_TAR],
        );
        let Parsed::Image(m) = parse_default(DOCKER_MANIFEST, &bytes).unwrap() else {
            panic!("not an image")
        };
        assert_eq!(m.config.digest, dg('c'));
        assert_eq!(m.config.size, 5);
        assert_eq!(m.layers.len(), 2);
        assert_eq!(m.layers[0].compression, Compression::Gzip);
        assert_eq!(m.layers[1].compression, Compression::None);
    }

    #[test]
    fn oci_manifest_parses_zstd_layers_and_media_type_parameters() {
        let bytes = image(OCI_MANIFEST, OCI_CONFIG, &[OCI_LAYER_ZSTD, OCI_LAYER_GZIP]);
        let ct = format!("{OCI_MANIFEST}; charset=utf-8");
        let Parsed::Image(m) = parse_default(&ct, &bytes).unwrap() else {
            panic!("not an image")
        };
        assert_eq!(m.media_type, OCI_MANIFEST);
        assert_eq!(m.layers[0].compression, Compression::Zstd);
    }

    #[test]
    fn indexes_parse_with_platforms_and_nested_entries() {
        let bytes = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                {"mediaType": OCI_MANIFEST, "digest": d('1'), "size": 1,
                 "platform": {"os": "linux", "architecture": "amd64"}},
                {"mediaType": OCI_MANIFEST, "digest": d('2'), "size": 2,
                 "platform": {"os": "linux", "architecture": "aarch64"}},
                {"mediaType": OCI_INDEX, "digest": d('3'), "size": 3},
                {"mediaType": "application/vnd.in-toto+json", "digest": d('4'), "size": 4,
                 "platform": {"os": "linux", "architecture": "arm64"}},
            ]
        }))
        .unwrap();
        let Parsed::Index(idx) = parse_default(OCI_INDEX, &bytes).unwrap() else {
            panic!("not an index")
        };
        assert_eq!(idx.manifests.len(), 4);
        let arm: Vec<_> = idx
            .candidates(&Platform::parse("linux/arm64").unwrap())
            .iter()
            .map(|e| e.descriptor.digest.clone())
            .collect();
        // The arm64 manifest, then the nested index (no platform); never the in-toto entry.
        assert_eq!(arm, vec![dg('2'), dg('3')]);
        let s390: Vec<_> = idx
            .candidates(&Platform::parse("linux/s390x").unwrap())
            .iter()
            .map(|e| e.descriptor.digest.clone())
            .collect();
        assert_eq!(s390, vec![dg('3')]);
        assert!(idx.platforms().contains("linux/arm64/v8"));
    }

    #[test]
    fn docker_list_parses() {
        let bytes = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": DOCKER_LIST,
            "manifests": [{"mediaType": DOCKER_MANIFEST, "digest": d('1'), "size": 1,
                           "platform": {"os": "linux", "architecture": "arm", "variant": "v6"}}]
        }))
        .unwrap();
        let Parsed::Index(idx) = parse_default(DOCKER_LIST, &bytes).unwrap() else {
            panic!("not an index")
        };
        assert_eq!(
            idx.manifests[0].platform,
            Some(Platform::new("linux", "arm", Some("v6")))
        );
    }

    #[test]
    fn schema1_is_refused_by_media_type_or_body() {
        let err = parse_default(DOCKER_SCHEMA1_SIGNED, b"{}").unwrap_err();
        assert!(matches!(err, Error::DeprecatedSchema1Image { .. }), "{err}");
        let err = parse_default(OCI_MANIFEST, br#"{"schemaVersion":1,"name":"x"}"#).unwrap_err();
        assert!(matches!(err, Error::DeprecatedSchema1Image { .. }), "{err}");
        assert!(err.to_string().contains("schema 1"), "{err}");
    }

    #[test]
    fn ai_models_are_recognised_by_config_or_layer() {
        let bytes = image(
            OCI_MANIFEST,
            "application/vnd.docker.ai.model.config.v0.1+json",
            &[OCI_LAYER_TAR],
        );
        let err = parse_default(OCI_MANIFEST, &bytes).unwrap_err();
        assert!(matches!(err, Error::AiModelNotSupported { .. }), "{err}");
        let bytes = image(
            OCI_MANIFEST,
            OCI_CONFIG,
            &["application/vnd.docker.ai.gguf.v3"],
        );
        let err = parse_default(OCI_MANIFEST, &bytes).unwrap_err();
        assert!(matches!(err, Error::AiModelNotSupported { .. }), "{err}");
        assert_eq!(err.kind(), crate::ErrorKind::Unsupported);
    }

    #[test]
    fn plugin_configs_are_another_manifest_class() {
        let bytes = image(DOCKER_MANIFEST, PLUGIN_CONFIG, &[DOCKER_LAYER_GZIP]);
        let err = parse_default(DOCKER_MANIFEST, &bytes).unwrap_err();
        assert!(
            matches!(
                err,
                Error::InvalidManifestClass {
                    class: "plugin",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn unknown_config_layer_and_manifest_types_are_unsupported() {
        let bytes = image(OCI_MANIFEST, "application/x-helm", &[OCI_LAYER_TAR]);
        let err = parse_default(OCI_MANIFEST, &bytes).unwrap_err();
        assert!(
            matches!(err, Error::UnsupportedMediaType { what: "config", .. }),
            "{err}"
        );
        let bytes = image(OCI_MANIFEST, OCI_CONFIG, &["application/x-squashfs"]);
        let err = parse_default(OCI_MANIFEST, &bytes).unwrap_err();
        assert!(
            matches!(err, Error::UnsupportedMediaType { what: "layer", .. }),
            "{err}"
        );
        let err = parse_default("application/x-whatever", b"{}").unwrap_err();
        assert!(
            matches!(
                err,
                Error::UnsupportedMediaType {
                    what: "manifest",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn legacy_config_types_are_accepted_by_default_but_configurable() {
        let bytes = image(DOCKER_MANIFEST, "application/octet-stream", &[]);
        assert!(parse_default(DOCKER_MANIFEST, &bytes).is_ok());
        let strict = vec![OCI_CONFIG.to_owned()];
        let err = parse(DOCKER_MANIFEST, &dg('f'), &bytes, "r", &strict).unwrap_err();
        assert!(matches!(err, Error::UnsupportedMediaType { .. }), "{err}");
    }

    #[test]
    fn ambiguous_documents_are_invalid() {
        let bytes = image(OCI_INDEX, OCI_CONFIG, &[]);
        let err = parse_default(OCI_MANIFEST, &bytes).unwrap_err();
        assert!(matches!(err, Error::InvalidManifest { .. }), "{err}");
        let bytes = serde_json::to_vec(&json!({
            "schemaVersion": 2, "config": {"mediaType": OCI_CONFIG, "digest": d('c'), "size": 1},
            "layers": [], "manifests": []
        }))
        .unwrap();
        let err = parse_default(OCI_INDEX, &bytes).unwrap_err();
        assert!(matches!(err, Error::InvalidManifest { .. }), "{err}");
        let err = parse_default(OCI_MANIFEST, &bytes).unwrap_err();
        assert!(matches!(err, Error::InvalidManifest { .. }), "{err}");
        let err = parse_default(OCI_MANIFEST, b"not json").unwrap_err();
        assert!(matches!(err, Error::InvalidManifest { .. }), "{err}");
    }

    #[test]
    fn bad_descriptors_are_invalid() {
        let bytes = serde_json::to_vec(&json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": "sha256:short", "size": 1},
            "layers": []
        }))
        .unwrap();
        assert!(matches!(
            parse_default(OCI_MANIFEST, &bytes),
            Err(Error::InvalidManifest { .. })
        ));
        let bytes = serde_json::to_vec(&json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": d('c'), "size": -1},
            "layers": []
        }))
        .unwrap();
        assert!(matches!(
            parse_default(OCI_MANIFEST, &bytes),
            Err(Error::InvalidManifest { .. })
        ));
    }

    #[test]
    fn digests_are_verified() {
        let d = hoist_registry::digest::sha256_of(b"abc");
        assert!(verify_digest(&d, b"abc").is_ok());
        let err = verify_digest(&d, b"abd").unwrap_err();
        assert!(matches!(err, Error::ManifestDigestMismatch { .. }), "{err}");
    }

    #[test]
    fn configs_give_diff_ids_platform_and_creation_time() {
        let bytes = serde_json::to_vec(&json!({
            "architecture": "arm64", "os": "linux", "created": "2024-01-01T00:00:00Z",
            "rootfs": {"type": "layers", "diff_ids": [d('1'), d('2')]}
        }))
        .unwrap();
        let c = parse_config(&dg('c'), &bytes).unwrap();
        assert_eq!(c.diff_ids, vec![dg('1'), dg('2')]);
        assert_eq!(
            c.platform,
            Some(Platform::new("linux", "arm64", Some("v8")))
        );
        assert_eq!(c.created.as_deref(), Some("2024-01-01T00:00:00Z"));
        for bad in [
            json!({"rootfs": {"type": "other", "diff_ids": []}}),
            json!({"os": "linux"}),
            json!({"rootfs": {"type": "layers", "diff_ids": ["nope"]}}),
        ] {
            let err = parse_config(&dg('c'), &serde_json::to_vec(&bad).unwrap()).unwrap_err();
            assert!(matches!(err, Error::InvalidConfig { .. }), "{err}");
        }
    }
}
