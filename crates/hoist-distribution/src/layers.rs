//! The transfer engine's view of the local store: [`LocalLayers`] registers staged layers into
//! hoist's layer store, and a stand-in for it when layers are only fetched
//! (`--no-unpack`).
//!
//! A download produces a [`StagedBlob`]: the verified blob's digest and DiffID and, when it was
//! extracted, the staged (not yet visible) layer. Registration commits the staged layer on top of
//! its parent; the layer store's own lease on the layer is held until the engine releases it.
//! A staged layer can be committed once: the rare second registration of the same download under
//! another parent (the same blob at different positions in two images) extracts the stored blob
//! again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use hoist_store::layer::{Layer, LayerError, LayerLease, LayerStore, StagedLayer};
use hoist_store::{Digest, Store};
use hoist_xfer::{BoxError, LayerInfo, chain_id};

use crate::blocking::blocking;
use crate::error::{Error, Result};
use crate::manifest::Compression;
use crate::stream::stage_from_blob;

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A downloaded and verified layer blob, possibly extracted into the layer store's staging area.
#[derive(Debug)]
pub struct StagedBlob {
    blob: Digest,
    compression: Compression,
    diff_id: Digest,
    layer: Mutex<Option<StagedLayer>>,
}

impl StagedBlob {
    pub(crate) fn new(
        blob: Digest,
        compression: Compression,
        diff_id: Digest,
        layer: Option<StagedLayer>,
    ) -> StagedBlob {
        StagedBlob {
            blob,
            compression,
            diff_id,
            layer: Mutex::new(layer),
        }
    }

    /// The blob's digest.
    pub fn blob(&self) -> &Digest {
        &self.blob
    }

    /// The layer's DiffID.
    pub fn diff_id(&self) -> &Digest {
        &self.diff_id
    }
}

/// hoist's layer store as the download manager sees it.
#[derive(Debug)]
pub struct LocalLayers {
    store: Store,
    layers: LayerStore,
    leases: Mutex<HashMap<Digest, Vec<LayerLease>>>,
}

impl LocalLayers {
    /// The layer store of `store`.
    pub fn new(store: Store) -> Result<LocalLayers> {
        let layers = store
            .layers()
            .map_err(|e| Error::store("opening the layer store", e))?;
        Ok(LocalLayers {
            store,
            layers,
            leases: Mutex::new(HashMap::new()),
        })
    }

    /// The layer store.
    pub fn layer_store(&self) -> &LayerStore {
        &self.layers
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Layer leases currently held for the engine (for tests and diagnostics).
    pub fn held_leases(&self) -> usize {
        lock(&self.leases).values().map(Vec::len).sum()
    }

    fn keep(&self, lease: LayerLease) {
        lock(&self.leases)
            .entry(lease.chain_id().clone())
            .or_default()
            .push(lease);
    }
}

fn info(layer: &Layer) -> LayerInfo {
    LayerInfo::new(layer.chain_id.clone(), layer.diff_id.clone())
}

impl hoist_xfer::LayerStore for LocalLayers {
    type Staged = Arc<StagedBlob>;

    async fn get(&self, chain: &Digest) -> std::result::Result<Option<LayerInfo>, BoxError> {
        let layers = self.layers.clone();
        let chain = chain.clone();
        let found = blocking(move || -> std::result::Result<_, LayerError> {
            let lease = match layers.lease(&chain) {
                Ok(lease) => lease,
                Err(LayerError::NotFound { .. }) => return Ok(None),
                Err(e) => return Err(e),
            };
            Ok(layers.get(&chain)?.map(|layer| (layer, lease)))
        })
        .await??;
        Ok(found.map(|(layer, lease)| {
            self.keep(lease);
            info(&layer)
        }))
    }

    async fn register(
        &self,
        parent: Option<&Digest>,
        staged: Arc<StagedBlob>,
    ) -> std::result::Result<LayerInfo, BoxError> {
        let store = self.store.clone();
        let layers = self.layers.clone();
        let parent = parent.cloned();
        let (layer, lease) = blocking(move || -> Result<(Layer, LayerLease)> {
            let taken = lock(&staged.layer).take();
            let staged_layer = match taken {
                Some(l) => l,
                None => stage_from_blob(
                    &store,
                    &layers,
                    &staged.blob,
                    staged.compression,
                    Some(&staged.diff_id),
                    hoist_store::layer::DEFAULT_MAX_BYTES,
                )?,
            };
            let (layer, lease) = layers
                .commit_leased(parent.as_ref(), staged_layer)
                .map_err(|source| Error::Layer {
                    blob: staged.blob.clone(),
                    source,
                })?;
            store
                .metadata()
                .record_diff_id(&staged.blob, &layer.diff_id)
                .map_err(|e| Error::store("recording a DiffID", e))?;
            Ok((layer, lease))
        })
        .await??;
        self.keep(lease);
        Ok(info(&layer))
    }

    fn release(&self, chain: &Digest) {
        let mut leases = lock(&self.leases);
        if let Some(list) = leases.get_mut(chain) {
            list.pop();
            if list.is_empty() {
                leases.remove(chain);
            }
        }
    }
}

/// Stands in for the layer store when layers are only fetched (`--no-unpack`): a layer "exists"
/// when its blob is in the content store, and registering records nothing. Built per image, from
/// the ChainIDs its config gives.
#[derive(Debug)]
pub(crate) struct BlobLayers {
    store: Store,
    /// ChainID -> (blob, DiffID) for the image being pulled.
    chains: HashMap<Digest, (Digest, Digest)>,
}

impl BlobLayers {
    pub(crate) fn new(store: Store, blobs_and_diff_ids: &[(Digest, Digest)]) -> BlobLayers {
        let mut chains = HashMap::new();
        let mut parent: Option<Digest> = None;
        for (blob, diff_id) in blobs_and_diff_ids {
            let chain = chain_id(parent.as_ref(), diff_id);
            chains.insert(chain.clone(), (blob.clone(), diff_id.clone()));
            parent = Some(chain);
        }
        BlobLayers { store, chains }
    }
}

impl hoist_xfer::LayerStore for BlobLayers {
    type Staged = Arc<StagedBlob>;

    async fn get(&self, chain: &Digest) -> std::result::Result<Option<LayerInfo>, BoxError> {
        let Some((blob, diff_id)) = self.chains.get(chain).cloned() else {
            return Ok(None);
        };
        let store = self.store.clone();
        let present = blocking(move || store.content().contains(&blob)).await??;
        Ok(present.then(|| LayerInfo::new(chain.clone(), diff_id)))
    }

    async fn register(
        &self,
        parent: Option<&Digest>,
        staged: Arc<StagedBlob>,
    ) -> std::result::Result<LayerInfo, BoxError> {
        Ok(LayerInfo::new(
            chain_id(parent, &staged.diff_id),
            staged.diff_id.clone(),
        ))
    }

    fn release(&self, _chain: &Digest) {}
}
