//! Maintenance: `fsck` (verify everything, optionally repair) and `gc` (remove what nothing
//! reaches).
//!
//! Both serialise against each other and against lease changes and new references through the
//! store's gc lock (`locks/gc.lock`): gc holds it exclusively for its whole mark-and-sweep, so a
//! resource leased or a reference added while gc runs waits for gc to finish, and what gc saw as
//! unreachable is truly unreachable. Writers of blobs do not take it; a blob that must survive a
//! concurrent gc is leased *before* it is written (see [`crate::Lease`]).
//!
//! Unpacked layers are reached through [`LayerMaintenance`], the small interface the layer store
//! (`layers/<chain-id>/`) offers to maintenance: list, verify, remove. Which layers are in use is
//! computed here from the images' configs (DiffIDs -> ChainIDs) and from leases.

mod fsck;
mod gc;

use oci_spec::image::Digest;

pub use fsck::{FsckFinding, FsckOptions, FsckProblem, FsckReport};
pub use gc::{GcOptions, GcReport};

pub(crate) use fsck::run as run_fsck;
pub(crate) use gc::run as run_gc;

use crate::error::Result;

/// What `fsck` and `gc` need from the layer store.
pub(crate) trait LayerMaintenance: Send + Sync + std::fmt::Debug {
    /// ChainIDs of every layer present (complete ones; staging areas are the layer store's own
    /// business).
    fn layer_ids(&self) -> Result<Vec<Digest>>;

    /// Re-checks one layer (its DiffID, its place in the chain, its files). `Ok(None)` when
    /// sound, `Ok(Some(reason))` when broken.
    fn verify_layer(&self, chain_id: &Digest) -> Result<Option<String>>;

    /// Removes one layer.
    fn remove_layer(&self, chain_id: &Digest) -> Result<()>;
}

impl LayerMaintenance for crate::layer::LayerStore {
    fn layer_ids(&self) -> Result<Vec<Digest>> {
        Ok(self.chain_ids()?)
    }

    fn verify_layer(&self, chain_id: &Digest) -> Result<Option<String>> {
        let report = self.verify(chain_id)?;
        if report.is_ok() {
            return Ok(None);
        }
        let problems: Vec<String> = report.problems.iter().map(ToString::to_string).collect();
        Ok(Some(problems.join("; ")))
    }

    fn remove_layer(&self, chain_id: &Digest) -> Result<()> {
        Ok(self.remove(chain_id)?)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    /// An in-memory layer set standing in for the layer store in maintenance tests.
    #[derive(Debug, Default)]
    pub(crate) struct FakeLayers {
        /// ChainID -> problem (None when sound).
        pub(crate) layers: Mutex<BTreeMap<String, Option<String>>>,
    }

    impl FakeLayers {
        pub(crate) fn with(ids: &[(Digest, Option<&str>)]) -> Self {
            let map = ids
                .iter()
                .map(|(d, p)| (d.to_string(), p.map(str::to_owned)))
                .collect();
            FakeLayers {
                layers: Mutex::new(map),
            }
        }

        pub(crate) fn ids(&self) -> Vec<String> {
            self.layers.lock().unwrap().keys().cloned().collect()
        }
    }

    impl LayerMaintenance for FakeLayers {
        fn layer_ids(&self) -> Result<Vec<Digest>> {
            Ok(self
                .layers
                .lock()
                .unwrap()
                .keys()
                .map(|k| Digest::try_from(k.as_str()).unwrap())
                .collect())
        }

        fn verify_layer(&self, chain_id: &Digest) -> Result<Option<String>> {
            Ok(self
                .layers
                .lock()
                .unwrap()
                .get(&chain_id.to_string())
                .cloned()
                .flatten())
        }

        fn remove_layer(&self, chain_id: &Digest) -> Result<()> {
            self.layers.lock().unwrap().remove(&chain_id.to_string());
            Ok(())
        }
    }
}
