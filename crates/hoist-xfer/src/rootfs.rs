//! Layer identities: DiffIDs, ChainIDs and the ordered [`RootFs`] of an image.
//!
//! A layer's *DiffID* is the digest of its uncompressed tar stream. Its *ChainID* identifies the
//! layer together with every layer below it, as the OCI image specification defines it:
//! the ChainID of the first layer is its DiffID, and the ChainID of each following layer is
//! `sha256(parent_chain_id + " " + diff_id)`. The layer store keys unpacked layers by ChainID.

use oci_spec::image::{Digest, Sha256Digest};
use sha2::{Digest as _, Sha256};

/// The ChainID of a layer with DiffID `diff_id` stacked on the layer whose ChainID is `parent`.
///
/// `parent` is `None` for the bottom layer, whose ChainID is its own DiffID.
pub fn chain_id(parent: Option<&Digest>, diff_id: &Digest) -> Digest {
    match parent {
        None => diff_id.clone(),
        Some(parent) => {
            let mut hasher = Sha256::new();
            hasher.update(parent.as_ref().as_bytes());
            hasher.update(b" ");
            hasher.update(diff_id.as_ref().as_bytes());
            sha256_digest(&format!("{:x}", hasher.finalize()))
        }
    }
}

/// Wraps a lowercase hex SHA-256 value as a [`Digest`].
fn sha256_digest(hex: &str) -> Digest {
    match hex.parse::<Sha256Digest>() {
        Ok(digest) => digest.into(),
        // A SHA-256 output formatted with `{:x}` is always 64 lowercase hex characters.
        Err(err) => unreachable!("sha256 output {hex} is not a valid digest: {err}"),
    }
}

/// The ordered DiffIDs of an image's layers, bottom first (an image config's `rootfs`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct RootFs {
    /// The DiffIDs of the layers, bottom layer first.
    pub diff_ids: Vec<Digest>,
}

impl RootFs {
    /// An empty root filesystem (no layers).
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a layer on top.
    pub fn append(&mut self, diff_id: Digest) {
        self.diff_ids.push(diff_id);
    }

    /// The ChainID of the top layer, or `None` when there are no layers.
    pub fn chain_id(&self) -> Option<Digest> {
        self.chain_ids().last()
    }

    /// The ChainID of every layer, bottom first.
    pub fn chain_ids(&self) -> impl Iterator<Item = Digest> + '_ {
        self.diff_ids
            .iter()
            .scan(None::<Digest>, |parent, diff_id| {
                let next = chain_id(parent.as_ref(), diff_id);
                *parent = Some(next.clone());
                Some(next)
            })
    }

    /// Number of layers.
    pub fn len(&self) -> usize {
        self.diff_ids.len()
    }

    /// Whether there are no layers.
    pub fn is_empty(&self) -> bool {
        self.diff_ids.is_empty()
    }
}

impl From<Vec<Digest>> for RootFs {
    fn from(diff_ids: Vec<Digest>) -> Self {
        Self { diff_ids }
    }
}

impl TryFrom<&oci_spec::image::RootFs> for RootFs {
    type Error = oci_spec::OciSpecError;

    /// Parses the DiffIDs of an image config's `rootfs`; fails on the first malformed digest.
    fn try_from(rootfs: &oci_spec::image::RootFs) -> Result<Self, Self::Error> {
        let diff_ids = rootfs
            .diff_ids()
            .iter()
            .map(|d| d.parse::<Digest>())
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { diff_ids })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(hex_digit: char) -> Digest {
        format!("sha256:{}", hex_digit.to_string().repeat(64))
            .parse()
            .unwrap()
    }

    #[test]
    fn bottom_layer_chain_id_is_its_diff_id() {
        assert_eq!(chain_id(None, &d('1')), d('1'));
    }

    // Expected values computed independently with coreutils:
    // printf 'sha256:11…1 sha256:22…2' | sha256sum
    #[test]
    fn chain_id_hashes_parent_space_diff_id() {
        let two = chain_id(Some(&d('1')), &d('2'));
        assert_eq!(
            two.to_string(),
            "sha256:9932074217c35353d2e03a3f5a86549f7c67bfeb0ba53e23d69f4d4c8f7958f5"
        );
        let three = chain_id(Some(&two), &d('3'));
        assert_eq!(
            three.to_string(),
            "sha256:50127c0d6b338be78246434b4bce23ecf75e505158ea0bbd15effeb162fbf3ec"
        );
    }

    #[test]
    fn rootfs_chain_ids_stack_in_order() {
        let rootfs = RootFs::from(vec![d('1'), d('2'), d('3')]);
        let chains: Vec<_> = rootfs.chain_ids().collect();
        assert_eq!(chains[0], d('1'));
        assert_eq!(chains[1], chain_id(Some(&d('1')), &d('2')));
        assert_eq!(chains[2], chain_id(Some(&chains[1]), &d('3')));
        assert_eq!(rootfs.chain_id(), Some(chains[2].clone()));
        assert_eq!(RootFs::new().chain_id(), None);
    }

    #[test]
    fn rootfs_from_image_config_rejects_malformed_diff_ids() {
        let mut config = oci_spec::image::RootFs::default();
        config.set_diff_ids(vec![d('1').to_string(), "sha256:nothex".to_string()]);
        assert!(RootFs::try_from(&config).is_err());
        config.set_diff_ids(vec![d('1').to_string(), d('2').to_string()]);
        assert_eq!(
            RootFs::try_from(&config).unwrap(),
            RootFs::from(vec![d('1'), d('2')])
        );
    }
}
