//! The content graph: which blobs an index or manifest refers to, and walks over it.
//!
//! Indexes (OCI image index, Docker manifest list) point to manifests; manifests (OCI image
//! manifest, Docker schema 2, OCI artifact manifest) point to a config and layers. A manifest's
//! config and layers are *required*: an image lacking one is incomplete. An index's children are
//! *optional*: a store usually holds only the platform it pulled. So are non-distributable
//! ("foreign") layers and `subject` links.

use std::collections::{HashSet, VecDeque};

use oci_spec::image::{
    ArtifactManifest, Descriptor, Digest, ImageConfiguration, ImageIndex, ImageManifest,
};

use crate::content::ContentStore;
use crate::digests;
use crate::error::{Result, StoreError};

/// Largest manifest, index or config read into memory (registries cap manifests at 4 MiB).
pub(crate) const MAX_DOCUMENT_SIZE: u64 = 16 << 20;

/// What a descriptor's media type says about the blob.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Points to manifests.
    Index,
    /// An image manifest: config + layers.
    Manifest,
    /// An OCI artifact manifest: blobs.
    Artifact,
    /// An image config.
    Config,
    /// Anything else: a leaf.
    Other,
}

pub(crate) fn kind_of(descriptor: &Descriptor) -> Kind {
    match descriptor.media_type().to_string().as_str() {
        "application/vnd.oci.image.index.v1+json"
        | "application/vnd.docker.distribution.manifest.list.v2+json" => Kind::Index,
        "application/vnd.oci.image.manifest.v1+json"
        | "application/vnd.docker.distribution.manifest.v2+json" => Kind::Manifest,
        "application/vnd.oci.artifact.manifest.v1+json" => Kind::Artifact,
        "application/vnd.oci.image.config.v1+json"
        | "application/vnd.docker.container.image.v1+json" => Kind::Config,
        _ => Kind::Other,
    }
}

/// Whether a layer may legitimately be absent (non-distributable / foreign, or fetched from URLs).
fn optional_layer(layer: &Descriptor) -> bool {
    let mt = layer.media_type().to_string();
    mt.contains("nondistributable")
        || mt.contains(".foreign.")
        || layer.urls().as_ref().is_some_and(|u| !u.is_empty())
}

/// The outgoing edges of one blob.
#[derive(Clone, Debug, Default)]
pub(crate) struct Edges {
    /// Children that must be present.
    pub(crate) required: Vec<Descriptor>,
    /// Children that may be absent.
    pub(crate) optional: Vec<Descriptor>,
    /// The config, for image manifests.
    pub(crate) config: Option<Descriptor>,
}

fn malformed(what: &'static str, digest: &Digest, e: impl ToString) -> StoreError {
    StoreError::Malformed {
        what,
        location: digest.to_string(),
        reason: e.to_string(),
    }
}

/// Reads and parses a present index or manifest; leaves have no edges.
pub(crate) fn edges(content: &ContentStore, descriptor: &Descriptor) -> Result<Edges> {
    let kind = kind_of(descriptor);
    if !matches!(kind, Kind::Index | Kind::Manifest | Kind::Artifact) {
        return Ok(Edges::default());
    }
    let digest = descriptor.digest();
    let bytes = content.read_verified(digest, MAX_DOCUMENT_SIZE)?;
    let mut e = Edges::default();
    match kind {
        Kind::Index => {
            let index = ImageIndex::from_reader(bytes.as_slice())
                .map_err(|err| malformed("image index", digest, err))?;
            e.optional.extend(index.manifests().iter().cloned());
            e.optional.extend(index.subject().clone());
        }
        Kind::Manifest => {
            let m = ImageManifest::from_reader(bytes.as_slice())
                .map_err(|err| malformed("image manifest", digest, err))?;
            e.required.push(m.config().clone());
            e.config = Some(m.config().clone());
            for layer in m.layers() {
                if optional_layer(layer) {
                    e.optional.push(layer.clone());
                } else {
                    e.required.push(layer.clone());
                }
            }
            e.optional.extend(m.subject().clone());
        }
        Kind::Artifact => {
            let m = ArtifactManifest::from_reader(bytes.as_slice())
                .map_err(|err| malformed("artifact manifest", digest, err))?;
            e.required.extend(m.blobs().iter().cloned());
            e.optional.extend(m.subject().clone());
        }
        Kind::Config | Kind::Other => {}
    }
    Ok(e)
}

/// The DiffIDs listed by an image config.
pub(crate) fn config_diff_ids(content: &ContentStore, config: &Digest) -> Result<Vec<Digest>> {
    let bytes = content.read_verified(config, MAX_DOCUMENT_SIZE)?;
    let cfg = ImageConfiguration::from_reader(bytes.as_slice())
        .map_err(|e| malformed("image config", config, e))?;
    cfg.rootfs()
        .diff_ids()
        .iter()
        .map(|s| digests::parse_digest(s))
        .collect()
}

/// A required blob that is not in the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Missing {
    /// The manifest that needs it (`None` for a root).
    pub(crate) parent: Option<Digest>,
    /// The missing blob.
    pub(crate) descriptor: Descriptor,
}

/// Everything reachable from some roots.
#[derive(Clone, Debug, Default)]
pub(crate) struct Reach {
    /// Present blobs reached.
    pub(crate) blobs: HashSet<Digest>,
    /// Required blobs that are absent.
    pub(crate) missing: Vec<Missing>,
    /// Indexes or manifests that could not be read or parsed, with the reason.
    pub(crate) unreadable: Vec<(Digest, String)>,
    /// Configs of the image manifests reached.
    pub(crate) configs: Vec<Digest>,
}

/// Walks the graph from `roots` (which are required).
pub(crate) fn reach(
    content: &ContentStore,
    roots: impl IntoIterator<Item = Descriptor>,
) -> Result<Reach> {
    let mut out = Reach::default();
    let mut queue: VecDeque<(Option<Digest>, Descriptor, bool)> =
        roots.into_iter().map(|d| (None, d, true)).collect();
    let mut seen: HashSet<Digest> = HashSet::new();
    while let Some((parent, desc, required)) = queue.pop_front() {
        let digest = desc.digest().clone();
        if digests::check_algorithm(&digest).is_err() {
            out.unreadable
                .push((digest, "unsupported digest algorithm".to_owned()));
            continue;
        }
        if !content.contains(&digest)? {
            if required {
                out.missing.push(Missing {
                    parent,
                    descriptor: desc,
                });
            }
            continue;
        }
        if !seen.insert(digest.clone()) {
            continue;
        }
        out.blobs.insert(digest.clone());
        match edges(content, &desc) {
            Ok(e) => {
                if let Some(c) = &e.config {
                    out.configs.push(c.digest().clone());
                }
                for child in e.required {
                    queue.push_back((Some(digest.clone()), child, true));
                }
                for child in e.optional {
                    queue.push_back((Some(digest.clone()), child, false));
                }
            }
            Err(e @ (StoreError::Malformed { .. } | StoreError::DigestMismatch { .. }))
            | Err(e @ StoreError::TooLarge { .. })
            | Err(e @ StoreError::UnsupportedAlgorithm { .. })
            | Err(e @ StoreError::InvalidDigest { .. }) => {
                out.unreadable.push((digest, e.to_string()));
            }
            Err(StoreError::BlobNotFound { .. }) => {
                // Removed while walking: treat as missing.
                out.blobs.remove(&digest);
                if required {
                    out.missing.push(Missing {
                        parent,
                        descriptor: desc,
                    });
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::content::tests::temp_content;
    use oci_spec::image::MediaType;

    /// Stores a small image (config + `layers` layer blobs + manifest) and returns the manifest
    /// descriptor, the config digest and the layer digests.
    pub(crate) fn store_image(
        cs: &ContentStore,
        seed: &str,
        layers: usize,
    ) -> (Descriptor, Digest, Vec<Digest>) {
        let mut layer_descs = Vec::new();
        let mut diff_ids = Vec::new();
        let mut layer_digests = Vec::new();
        for i in 0..layers {
            let body = format!("layer {seed} {i}");
            let info = cs.put_bytes(body.as_bytes(), None).unwrap();
            diff_ids.push(info.digest.to_string());
            layer_digests.push(info.digest.clone());
            layer_descs.push(serde_json::json!({
                "mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": info.digest.to_string(),
                "size": info.size,
            }));
        }
        let config = serde_json::json!({
            "architecture": "amd64", "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "config": {}, "created": "2024-01-01T00:00:00Z", "comment": seed,
        });
        let config_bytes = serde_json::to_vec(&config).unwrap();
        let config_info = cs.put_bytes(&config_bytes, None).unwrap();
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_info.digest.to_string(),
                "size": config_info.size,
            },
            "layers": layer_descs,
        });
        let bytes = serde_json::to_vec(&manifest).unwrap();
        let info = cs.put_bytes(&bytes, None).unwrap();
        (
            Descriptor::new(MediaType::ImageManifest, info.size, info.digest),
            config_info.digest,
            layer_digests,
        )
    }

    #[test]
    fn reach_finds_manifest_config_and_layers() {
        let (_d, cs) = temp_content();
        let (m, config, layers) = store_image(&cs, "a", 2);
        let r = reach(&cs, [m.clone()]).unwrap();
        assert!(r.missing.is_empty() && r.unreadable.is_empty());
        assert_eq!(r.blobs.len(), 4);
        assert!(r.blobs.contains(&config) && layers.iter().all(|l| r.blobs.contains(l)));
        assert_eq!(r.configs, vec![config.clone()]);
        assert_eq!(
            config_diff_ids(&cs, &config).unwrap(),
            layers,
            "uncompressed layers: DiffID = digest"
        );
    }

    #[test]
    fn missing_layer_is_reported_with_its_manifest() {
        let (_d, cs) = temp_content();
        let (m, _config, layers) = store_image(&cs, "b", 2);
        cs.delete(&layers[1]).unwrap();
        let r = reach(&cs, [m.clone()]).unwrap();
        assert_eq!(r.missing.len(), 1);
        assert_eq!(r.missing[0].parent.as_ref(), Some(m.digest()));
        assert_eq!(r.missing[0].descriptor.digest(), &layers[1]);
    }

    #[test]
    fn index_children_are_optional() {
        let (_d, cs) = temp_content();
        let (m, ..) = store_image(&cs, "c", 1);
        let absent = crate::digests::sha256_of(b"other platform");
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [
                {"mediaType": "application/vnd.oci.image.manifest.v1+json",
                 "digest": m.digest().to_string(), "size": m.size(),
                 "platform": {"architecture": "amd64", "os": "linux"}},
                {"mediaType": "application/vnd.oci.image.manifest.v1+json",
                 "digest": absent.to_string(), "size": 10,
                 "platform": {"architecture": "arm64", "os": "linux"}},
            ],
        });
        let info = cs
            .put_bytes(&serde_json::to_vec(&index).unwrap(), None)
            .unwrap();
        let root = Descriptor::new(MediaType::ImageIndex, info.size, info.digest);
        let r = reach(&cs, [root]).unwrap();
        assert!(r.missing.is_empty());
        assert_eq!(r.blobs.len(), 4, "index + manifest + config + layer");
    }

    #[test]
    fn unparsable_manifest_is_reported_not_fatal() {
        let (_d, cs) = temp_content();
        let info = cs.put_bytes(b"{\"not\": \"a manifest\"}", None).unwrap();
        let root = Descriptor::new(MediaType::ImageManifest, info.size, info.digest.clone());
        let r = reach(&cs, [root]).unwrap();
        assert_eq!(r.unreadable.len(), 1);
        assert_eq!(r.unreadable[0].0, info.digest);
        assert!(r.blobs.contains(&info.digest));
    }

    #[test]
    fn docker_schema2_manifests_are_walked() {
        let (_d, cs) = temp_content();
        let layer = cs.put_bytes(b"layer", None).unwrap();
        let config = cs
            .put_bytes(br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#, None)
            .unwrap();
        let m = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                       "digest": config.digest.to_string(), "size": config.size},
            "layers": [
                {"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                 "digest": layer.digest.to_string(), "size": layer.size},
                {"mediaType": "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
                 "digest": crate::digests::sha256_of(b"foreign").to_string(), "size": 5,
                 "urls": ["https://example.invalid/layer"]},
            ],
        });
        let info = cs
            .put_bytes(&serde_json::to_vec(&m).unwrap(), None)
            .unwrap();
        let root = Descriptor::new(
            MediaType::Other("application/vnd.docker.distribution.manifest.v2+json".into()),
            info.size,
            info.digest,
        );
        let r = reach(&cs, [root]).unwrap();
        assert!(r.missing.is_empty(), "foreign layer is optional");
        assert_eq!(r.blobs.len(), 3);
    }
}
