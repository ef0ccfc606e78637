//! Flattening an image of the local store into a plain directory tree (`hoist unpack`).
//!
//! The image's layers are taken from the layer store; a layer that is not unpacked yet (the image
//! was pulled with `--no-unpack`, or copied into the store) is first extracted from its stored,
//! re-verified blob and registered in parent order, its DiffID checked against the config. Then
//! the chain is flattened with whiteouts applied, as `umoci unpack` does for its `rootfs/`.
//!
//! Blocking: run it on a blocking thread.

use std::path::Path;

use hoist_store::Store;
use hoist_store::layer::{Layer, UnpackOptions, chain_id};
use oci_spec::image::Digest;

use crate::error::{Error, Result};
use crate::manifest::{self, Parsed};
use crate::platform::Platform;
use crate::stream::stage_from_blob;

/// Largest manifest or config read from the store.
const DOCUMENT_LIMIT: u64 = 16 << 20;

/// Makes sure every layer of the image named `reference` (a full reference in the store) is
/// unpacked, and returns the chain, base first. For an index, the image for `platform` is used.
pub fn ensure_layers(store: &Store, reference: &str, platform: &Platform) -> Result<Vec<Layer>> {
    let not_found = || Error::LocalImageNotFound {
        reference: reference.to_owned(),
    };
    let mut desc = store
        .resolve(reference)
        .map_err(|e| Error::store(format!("resolving {reference}"), e))?
        .ok_or_else(not_found)?;
    let config_types = manifest::default_config_types();
    let image = loop {
        let digest = desc.digest().clone();
        let bytes = read(store, reference, &digest)?;
        let media_type = desc.media_type().to_string();
        match manifest::parse(&media_type, &digest, &bytes, reference, &config_types)? {
            Parsed::Image(m) => break m,
            Parsed::Index(index) => {
                let entry = index
                    .candidates(platform)
                    .into_iter()
                    .find(|e| {
                        store
                            .content()
                            .contains(&e.descriptor.digest)
                            .unwrap_or(false)
                    })
                    .ok_or_else(|| Error::NoMatchingPlatform {
                        reference: reference.to_owned(),
                        platform: platform.to_string(),
                        available: index.platforms(),
                    })?;
                let d = &entry.descriptor;
                desc = oci_spec::image::DescriptorBuilder::default()
                    .media_type(d.media_type.as_str())
                    .digest(d.digest.clone())
                    .size(d.size)
                    .build()
                    .map_err(|e| Error::InvalidManifest {
                        digest: d.digest.clone(),
                        reason: e.to_string(),
                    })?;
            }
        }
    };
    let config_bytes = read(store, reference, &image.config.digest)?;
    let config = manifest::parse_config(&image.config.digest, &config_bytes)?;
    if config.diff_ids.len() != image.layers.len() {
        return Err(Error::InvalidConfig {
            digest: image.config.digest.clone(),
            reason: format!(
                "{} DiffIDs for {} layers",
                config.diff_ids.len(),
                image.layers.len()
            ),
        });
    }
    let layers = store
        .layers()
        .map_err(|e| Error::store("opening the layer store", e))?;
    let mut chain = Vec::with_capacity(image.layers.len());
    let mut parent: Option<Digest> = None;
    for (layer, diff_id) in image.layers.iter().zip(&config.diff_ids) {
        let id = chain_id(parent.as_ref(), diff_id);
        let present = layers.get(&id).map_err(|source| Error::Layer {
            blob: layer.blob.digest.clone(),
            source,
        })?;
        let registered = match present {
            Some(l) => l,
            None => {
                if !store
                    .content()
                    .contains(&layer.blob.digest)
                    .map_err(|e| Error::store("looking up a layer blob", e))?
                {
                    return Err(Error::MissingBlob {
                        reference: reference.to_owned(),
                        digest: layer.blob.digest.clone(),
                    });
                }
                let staged = stage_from_blob(
                    store,
                    &layers,
                    &layer.blob.digest,
                    layer.compression,
                    Some(diff_id),
                    hoist_store::layer::DEFAULT_MAX_BYTES,
                )?;
                layers
                    .commit(parent.as_ref(), staged)
                    .map_err(|source| Error::Layer {
                        blob: layer.blob.digest.clone(),
                        source,
                    })?
            }
        };
        parent = Some(registered.chain_id.clone());
        chain.push(registered);
    }
    Ok(chain)
}

/// Flattens the image named `reference` into `dir` (created, or empty), unpacking layers first
/// where needed.
pub fn unpack(store: &Store, reference: &str, platform: &Platform, dir: &Path) -> Result<()> {
    let chain = ensure_layers(store, reference, platform)?;
    let Some(top) = chain.last() else {
        // No layers: an empty tree.
        return std::fs::create_dir_all(dir).map_err(|e| {
            Error::store(
                format!("creating {}", dir.display()),
                hoist_store::StoreError::from(hoist_store::layer::LayerError::Source { source: e }),
            )
        });
    };
    let layers = store
        .layers()
        .map_err(|e| Error::store("opening the layer store", e))?;
    layers
        .unpack(&chain, dir, &UnpackOptions::default())
        .map_err(|source| Error::Layer {
            blob: top.chain_id.clone(),
            source,
        })
}

fn read(store: &Store, reference: &str, digest: &Digest) -> Result<Vec<u8>> {
    let present = store
        .content()
        .contains(digest)
        .map_err(|e| Error::store("looking up a blob", e))?;
    if !present {
        return Err(Error::MissingBlob {
            reference: reference.to_owned(),
            digest: digest.clone(),
        });
    }
    store
        .content()
        .read_verified(digest, DOCUMENT_LIMIT)
        .map(|b| b.to_vec())
        .map_err(|e| Error::store(format!("reading {digest}"), e))
}
