//! [`Store`]: one handle on everything under a store root, and [`Lease`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use oci_spec::image::{Descriptor, Digest};

use crate::content::ContentStore;
use crate::digests;
use crate::durable;
use crate::error::{Result, StoreError};
use crate::graph::{self, Kind};
use crate::layer::LayerStore;
use crate::layout::{self, Layout, NamedDescriptor};
use crate::lock::{FileLock, Mode, Wait};
use crate::maintenance::{self, FsckOptions, FsckReport, GcOptions, GcReport, LayerMaintenance};
use crate::metadata::{AbsentBlob, LeaseOptions, LeaseResource, Metadata};

/// The local store: an OCI image layout plus ingests, unpacked layers and a metadata database.
///
/// Cheap to clone (clones share one database connection and state). Every method blocks; see the
/// crate documentation for threading.
#[derive(Clone, Debug)]
pub struct Store {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    root: PathBuf,
    content: ContentStore,
    layout: Layout,
    metadata: Arc<Metadata>,
    layers: Option<Arc<dyn LayerMaintenance>>,
    gc_lock: PathBuf,
}

impl Store {
    /// Opens the store at `root`, creating what is missing: `oci-layout`, `index.json`,
    /// `blobs/sha256/`, `ingest/`, `layers/`, `locks/` and `metadata.db`. An existing OCI layout
    /// written by another tool is adopted as it is.
    pub fn open(root: impl AsRef<Path>) -> Result<Store> {
        let root = root.as_ref();
        // The root first, with the store's directory mode: the layer store would create it
        // with its private one.
        durable::create_dir_all(root)?;
        let layers = LayerStore::open(root)?;
        Self::open_with_layers(root, Some(Arc::new(layers)))
    }

    /// Opens the store with the layer store `layers` taking part in fsck and gc.
    pub(crate) fn open_with_layers(
        root: &Path,
        layers: Option<Arc<dyn LayerMaintenance>>,
    ) -> Result<Store> {
        durable::create_dir_all(root)?;
        durable::create_dir_all(&root.join("layers"))?;
        let layout = Layout::init(root)?;
        let metadata = Arc::new(Metadata::open(&root.join("metadata.db"))?);
        let content = ContentStore::open(root, metadata.clone())?;
        Ok(Store {
            inner: Arc::new(Inner {
                root: root.to_owned(),
                content,
                layout,
                metadata,
                layers,
                gc_lock: root.join("locks").join("gc.lock"),
            }),
        })
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// The directory holding unpacked layers (`layers/<chain-id>/`).
    pub fn layers_dir(&self) -> PathBuf {
        self.inner.root.join("layers")
    }

    /// The content store: blobs and ingests.
    pub fn content(&self) -> &ContentStore {
        &self.inner.content
    }

    /// The OCI layout files (`index.json`).
    pub fn layout(&self) -> &Layout {
        &self.inner.layout
    }

    /// The metadata database.
    pub fn metadata(&self) -> &Metadata {
        &self.inner.metadata
    }

    /// The layer store: unpacked layers under `layers/`, keyed by ChainID.
    pub fn layers(&self) -> Result<LayerStore> {
        Ok(LayerStore::open(&self.inner.root)?)
    }

    pub(crate) fn layer_maintenance(&self) -> Option<&dyn LayerMaintenance> {
        self.inner.layers.as_deref()
    }

    pub(crate) fn gc_lock(&self, mode: Mode, wait: Wait) -> Result<FileLock> {
        FileLock::acquire(&self.inner.gc_lock, mode, wait)?.ok_or_else(|| {
            StoreError::io(
                "lock",
                &self.inner.gc_lock,
                std::io::Error::new(std::io::ErrorKind::WouldBlock, "lock not granted"),
            )
        })
    }

    /// Points reference `name` (a full reference, `registry/repo:tag` or `registry/repo@digest`)
    /// at `target`, a manifest or index, in the database and in `index.json`.
    ///
    /// The target must be present and complete (an image manifest with its config and layers; an
    /// index needs only itself), otherwise [`StoreError::IncompleteImage`]. This waits while gc
    /// runs, so a reference never points at content gc is removing.
    pub fn add_reference(&self, name: &str, target: &Descriptor) -> Result<()> {
        layout::check_name(name)?;
        digests::check_algorithm(target.digest())?;
        if !matches!(
            graph::kind_of(target),
            Kind::Index | Kind::Manifest | Kind::Artifact
        ) {
            return Err(StoreError::NotAManifest {
                digest: target.digest().clone(),
                media_type: target.media_type().to_string(),
            });
        }
        let _guard = self.gc_lock(Mode::Shared, Wait::Block)?;
        let reach = graph::reach(self.content(), [target.clone()])?;
        let mut absent = 0usize;
        for m in &reach.missing {
            // A layer whose blob a partial pull never fetched is legitimate when recorded.
            if m.parent.is_some()
                && self
                    .metadata()
                    .absent_blob(m.descriptor.digest())?
                    .is_some()
            {
                absent += 1;
                continue;
            }
            return Err(StoreError::IncompleteImage {
                root: target.digest().clone(),
                missing: m.descriptor.digest().clone(),
            });
        }
        if let Some((digest, reason)) = reach.unreadable.into_iter().next() {
            return Err(StoreError::Malformed {
                what: "manifest",
                location: digest.to_string(),
                reason,
            });
        }
        let (size, _) = self.content().stat(target.digest())?;
        if size != target.size() {
            return Err(StoreError::SizeMismatch {
                what: format!("descriptor of {}", target.digest()),
                expected: target.size(),
                actual: size,
            });
        }
        // Database first: after a crash between the two, fsck restores index.json from it.
        self.metadata().put_reference(
            name,
            target.digest(),
            target.media_type().as_ref(),
            target.size(),
        )?;
        if absent > 0 {
            // index.json names complete images only: other tools must never meet a dangling
            // descriptor. hoist still resolves the name from the database.
            tracing::debug!(
                name,
                absent,
                "image lacks compressed blobs; kept out of index.json until they arrive"
            );
            self.layout().remove(name)?;
            return Ok(());
        }
        self.layout().add(name, target)?;
        drop(_guard);
        self.publish_completed()?;
        Ok(())
    }

    /// Whether reference `name` is in `index.json` (hoist references to images that lack a
    /// compressed blob are not, until it arrives).
    pub fn is_published(&self, name: &str) -> Result<bool> {
        Ok(self.layout().resolve(name)?.is_some())
    }

    /// The blobs that `target`'s images lack but whose layers are present (recorded by a partial
    /// pull), with where to fetch them from.
    pub fn absent_blobs_of(&self, target: &Descriptor) -> Result<Vec<AbsentBlob>> {
        let reach = graph::reach(self.content(), [target.clone()])?;
        let mut out = Vec::new();
        for m in reach.missing {
            if let Some(a) = self.metadata().absent_blob(m.descriptor.digest())? {
                out.push(a);
            }
        }
        Ok(out)
    }

    /// Brings the store's bookkeeping up to date after blobs arrived: absent-blob records of
    /// blobs now present are dropped, and every database reference whose image is now complete
    /// but is missing from `index.json` is added there. Returns the names added.
    pub fn publish_completed(&self) -> Result<Vec<String>> {
        for a in self.metadata().absent_blobs()? {
            if self.content().contains(&a.digest)? {
                self.metadata().remove_absent_blob(&a.digest)?;
            }
        }
        let _guard = self.gc_lock(Mode::Shared, Wait::Block)?;
        let listed: BTreeMap<String, Digest> = self
            .layout()
            .names()?
            .into_iter()
            .map(|n| (n.name, n.descriptor.digest().clone()))
            .collect();
        let mut added = Vec::new();
        for r in self.metadata().references()? {
            if listed.get(&r.name) == Some(r.target.digest()) {
                continue;
            }
            let reach = graph::reach(self.content(), [r.target.clone()])?;
            if reach.missing.is_empty() && reach.unreadable.is_empty() {
                self.layout().add(&r.name, &r.target)?;
                tracing::debug!(name = %r.name, "image complete; added to index.json");
                added.push(r.name);
            }
        }
        Ok(added)
    }

    /// The manifest or index that `name` points to: from the database, or else from
    /// `index.json` (names written there by other tools).
    pub fn resolve(&self, name: &str) -> Result<Option<Descriptor>> {
        if let Some(r) = self.metadata().reference(name)? {
            return Ok(Some(r.target));
        }
        self.layout().resolve(name)
    }

    /// Removes reference `name` from the database and `index.json`; returns whether it existed.
    /// The content stays until gc finds it unreferenced.
    pub fn remove_reference(&self, name: &str) -> Result<bool> {
        let in_db = self.metadata().remove_reference(name)?;
        let in_index = self.layout().remove(name)?;
        Ok(in_db || in_index)
    }

    /// Every reference, ordered by name: the database's, plus names only `index.json` has.
    pub fn references(&self) -> Result<Vec<NamedDescriptor>> {
        let mut all: BTreeMap<String, Descriptor> = BTreeMap::new();
        for n in self.layout().names()? {
            all.insert(n.name, n.descriptor);
        }
        for r in self.metadata().references()? {
            all.insert(r.name, r.target);
        }
        Ok(all
            .into_iter()
            .map(|(name, descriptor)| NamedDescriptor { name, descriptor })
            .collect())
    }

    /// Takes a lease: what it holds survives gc until it is released, expires, or (by default)
    /// this process exits. Lease a blob *before* writing it.
    pub fn lease(&self, options: &LeaseOptions) -> Result<Lease> {
        let id = self.metadata().create_lease(options)?;
        Ok(Lease {
            store: self.clone(),
            id,
            released: false,
        })
    }

    /// Checks the whole store; with `repair`, removes what is corrupt or dangling.
    pub fn fsck(&self, options: &FsckOptions) -> Result<FsckReport> {
        maintenance::run_fsck(self, options)
    }

    /// Removes what no reference or lease reaches.
    pub fn gc(&self, options: &GcOptions) -> Result<GcReport> {
        maintenance::run_gc(self, options)
    }
}

/// A lease on store resources (see [`Store::lease`]). Released on drop.
#[derive(Debug)]
pub struct Lease {
    store: Store,
    id: String,
    released: bool,
}

impl Lease {
    /// The lease's identifier.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Protects `resource` from gc for the lease's lifetime. Waits while gc runs.
    pub fn add(&self, resource: &LeaseResource) -> Result<()> {
        let _guard = self.store.gc_lock(Mode::Shared, Wait::Block)?;
        self.store.metadata().add_lease_resource(&self.id, resource)
    }

    /// Stops protecting `resource`.
    pub fn remove(&self, resource: &LeaseResource) -> Result<()> {
        self.store
            .metadata()
            .remove_lease_resource(&self.id, resource)
    }

    /// Ends the lease.
    pub fn release(mut self) -> Result<()> {
        self.released = true;
        self.store.metadata().delete_lease(&self.id).map(|_| ())
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if !self.released
            && let Err(e) = self.store.metadata().delete_lease(&self.id)
        {
            tracing::warn!(lease = %self.id, error = %e, "could not release lease; it ends when this process exits");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FsckOptions;
    use crate::graph::tests::store_image;
    use oci_spec::image::MediaType;

    #[test]
    fn open_creates_the_layout_directories_and_database() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("store");
        Store::open(&root).unwrap();
        for p in [
            "oci-layout",
            "index.json",
            "blobs/sha256",
            "ingest",
            "layers",
            "metadata.db",
        ] {
            assert!(root.join(p).exists(), "{p} missing");
        }
        // Opening again is harmless.
        Store::open(&root).unwrap();
    }

    #[test]
    fn add_reference_writes_both_places_and_resolve_finds_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (m, ..) = store_image(store.content(), "a", 1);
        let name = "127.0.0.1:5000/library/alpine:3.20";
        store.add_reference(name, &m).unwrap();
        assert_eq!(store.resolve(name).unwrap().unwrap().digest(), m.digest());
        assert_eq!(
            store.layout().resolve(name).unwrap().unwrap().digest(),
            m.digest()
        );
        let refs = store.references().unwrap();
        assert_eq!(refs.len(), 1);
        assert!(store.remove_reference(name).unwrap());
        assert!(store.resolve(name).unwrap().is_none());
        assert!(store.layout().names().unwrap().is_empty());
    }

    #[test]
    fn add_reference_refuses_incomplete_images_and_non_manifests() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (m, config, layers) = store_image(store.content(), "a", 1);
        store.content().delete(&layers[0]).unwrap();
        let err = store.add_reference("r/a:1", &m).unwrap_err();
        assert!(
            matches!(&err, StoreError::IncompleteImage { missing, .. } if missing == &layers[0]),
            "{err}"
        );
        let cfg = Descriptor::new(MediaType::ImageConfig, 1, config);
        assert!(matches!(
            store.add_reference("r/a:1", &cfg),
            Err(StoreError::NotAManifest { .. })
        ));
        assert!(store.references().unwrap().is_empty());
    }

    #[test]
    fn add_reference_refuses_a_descriptor_with_the_wrong_size() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (m, ..) = store_image(store.content(), "a", 1);
        let wrong = Descriptor::new(MediaType::ImageManifest, m.size() + 1, m.digest().clone());
        assert!(matches!(
            store.add_reference("r/a:1", &wrong),
            Err(StoreError::SizeMismatch { .. })
        ));
    }

    #[test]
    fn names_only_in_index_json_resolve_too() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (m, ..) = store_image(store.content(), "a", 1);
        store.layout().add("written-by-skopeo", &m).unwrap();
        assert_eq!(
            store
                .resolve("written-by-skopeo")
                .unwrap()
                .unwrap()
                .digest(),
            m.digest()
        );
        assert_eq!(store.references().unwrap().len(), 1);
    }

    fn absent(store: &Store, digest: &oci_spec::image::Digest) -> AbsentBlob {
        let a = AbsentBlob {
            digest: digest.clone(),
            diff_id: digest.clone(),
            size: store.content().stat(digest).unwrap().0,
            media_type: "application/vnd.oci.image.layer.v1.tar".into(),
            registry: "127.0.0.1:5000".into(),
            repository: "a/b".into(),
        };
        store.metadata().record_absent_blob(&a).unwrap();
        a
    }

    #[test]
    fn an_image_lacking_a_recorded_absent_blob_stays_out_of_index_json_until_it_arrives() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (m, _config, layers) = store_image(store.content(), "a", 2);
        let record = absent(&store, &layers[1]);
        let body = b"layer a 1".to_vec();
        store.content().delete(&layers[1]).unwrap();
        let name = "127.0.0.1:5000/a/b:1";
        store.add_reference(name, &m).unwrap();
        assert_eq!(store.resolve(name).unwrap().unwrap().digest(), m.digest());
        assert!(!store.is_published(name).unwrap());
        assert!(store.layout().names().unwrap().is_empty());
        assert_eq!(store.absent_blobs_of(&m).unwrap(), vec![record]);
        // fsck finds nothing wrong with it.
        let report = store.fsck(&FsckOptions::default()).unwrap();
        assert!(
            !report
                .findings
                .iter()
                .any(|f| matches!(f.problem, crate::FsckProblem::MissingBlob { .. })),
            "{report:?}"
        );
        // The blob arrives: the image enters index.json and the record goes.
        store.content().put_bytes(&body, Some(&layers[1])).unwrap();
        assert_eq!(store.publish_completed().unwrap(), vec![name.to_owned()]);
        assert!(store.is_published(name).unwrap());
        assert!(store.metadata().absent_blobs().unwrap().is_empty());
        assert!(store.absent_blobs_of(&m).unwrap().is_empty());
    }

    #[test]
    fn a_missing_blob_without_a_record_still_refuses_the_reference() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (m, _config, layers) = store_image(store.content(), "a", 2);
        absent(&store, &layers[0]);
        store.content().delete(&layers[0]).unwrap();
        store.content().delete(&layers[1]).unwrap();
        assert!(matches!(
            store.add_reference("r/a:1", &m),
            Err(StoreError::IncompleteImage { missing, .. }) if missing == layers[1]
        ));
    }

    #[test]
    fn dropping_a_lease_releases_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let id = {
            let lease = store.lease(&LeaseOptions::default()).unwrap();
            lease.add(&LeaseResource::Ingest("x".into())).unwrap();
            lease.id().to_owned()
        };
        assert!(!store.metadata().lease_exists(&id).unwrap());
    }
}
