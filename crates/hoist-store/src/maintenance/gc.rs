//! `gc`: mark everything reachable from references and leases, sweep the rest.
//!
//! Roots are every descriptor of `index.json` (named or not), every reference in the metadata
//! database, and every leased blob. From them gc walks indexes, manifests, configs and layers.
//! Unreached blobs are removed, as are image records whose manifest is gone, unpacked layers no
//! reached image uses (by ChainID) and no lease holds, and ingests untouched for
//! [`GcOptions::ingest_max_age`] that no writer holds and no lease names. Leases whose holder has
//! died or whose expiry has passed are ended first.
//!
//! gc errs on the side of keeping: if a reached manifest cannot be read, no blob is removed; if a
//! reached config cannot be read, no layer is removed. The report says why.

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use oci_spec::image::Digest;

use crate::content::sweep_ingests;
use crate::digests;
use crate::durable;
use crate::error::{Result, StoreError};
use crate::graph;
use crate::lock::{Mode, Wait};
use crate::metadata::{LabelSubject, LeaseResource};
use crate::store::Store;

/// What `gc` removes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GcOptions {
    /// Ingests whose data has not changed for this long (and that no writer holds) are removed.
    pub ingest_max_age: Duration,
    /// Unreached blobs younger than this are kept (a safety margin for writers that do not take
    /// leases; zero by default: leases are the protection).
    pub blob_min_age: Duration,
    /// Report what would be removed without removing anything.
    pub dry_run: bool,
}

impl Default for GcOptions {
    fn default() -> Self {
        GcOptions {
            ingest_max_age: Duration::from_secs(24 * 3600),
            blob_min_age: Duration::ZERO,
            dry_run: false,
        }
    }
}

/// What `gc` removed (or, in a dry run, would remove).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Blobs removed.
    pub removed_blobs: Vec<Digest>,
    /// Bytes of blobs and ingests removed.
    pub bytes_freed: u64,
    /// Blobs kept.
    pub kept_blobs: u64,
    /// Ingests removed, by reference (or directory, when unreadable).
    pub removed_ingests: Vec<String>,
    /// Layers removed, by ChainID.
    pub removed_layers: Vec<Digest>,
    /// Image records removed.
    pub removed_image_records: Vec<Digest>,
    /// Leases ended because their holder died or they expired.
    pub expired_leases: Vec<String>,
    /// Why some things were kept that might have been removed.
    pub warnings: Vec<String>,
}

pub(crate) fn run(store: &Store, options: &GcOptions) -> Result<GcReport> {
    let _guard = store.gc_lock(Mode::Exclusive, Wait::Block)?;
    let content = store.content();
    let metadata = store.metadata();
    let now = SystemTime::now();
    let mut report = GcReport::default();

    // Leases.
    let leases = metadata.leases()?;
    report.expired_leases = leases
        .iter()
        .filter(|l| !l.alive)
        .map(|l| l.id.clone())
        .collect();
    if !options.dry_run {
        for id in &report.expired_leases {
            metadata.delete_lease(id)?;
        }
    }
    let mut leased_blobs = HashSet::new();
    let mut leased_layers = HashSet::new();
    let mut leased_ingests = HashSet::new();
    for r in leases
        .into_iter()
        .filter(|l| l.alive)
        .flat_map(|l| l.resources)
    {
        match r {
            LeaseResource::Blob(d) => {
                leased_blobs.insert(d);
            }
            LeaseResource::Layer(d) => {
                leased_layers.insert(d);
            }
            LeaseResource::Ingest(i) => {
                leased_ingests.insert(i);
            }
        }
    }

    // Mark.
    let mut roots = store.layout().index()?.manifests().clone();
    roots.extend(metadata.references()?.into_iter().map(|r| r.target));
    let reach = graph::reach(content, roots)?;
    let blobs_safe = reach.unreadable.is_empty();
    for (digest, reason) in &reach.unreadable {
        report.warnings.push(format!(
            "no blob removed: manifest {digest} is referenced but cannot be read ({reason}); run fsck or remove the reference"
        ));
    }

    // Sweep blobs.
    let mut removed_any = false;
    for (digest, path) in content.blob_files()? {
        if reach.blobs.contains(&digest) || leased_blobs.contains(&digest) || !blobs_safe {
            report.kept_blobs += 1;
            continue;
        }
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        let age = meta
            .modified()
            .ok()
            .and_then(|m| now.duration_since(m).ok())
            .unwrap_or(Duration::ZERO);
        if age < options.blob_min_age {
            report.kept_blobs += 1;
            continue;
        }
        if !options.dry_run {
            durable::remove_file_if_exists(&path)?;
            metadata.remove_labels(&LabelSubject::Blob(digest.clone()))?;
            removed_any = true;
        }
        report.bytes_freed += meta.len();
        report.removed_blobs.push(digest);
    }
    if removed_any {
        for alg in &crate::content::ALGORITHMS {
            durable::fsync_dir(&content.blobs_dir().join(alg.as_ref()))?;
        }
    }

    // Absent-blob records (layers a partial pull rebuilt) that no reached image needs any more.
    if blobs_safe {
        let needed: HashSet<&Digest> = reach
            .missing
            .iter()
            .map(|m| m.descriptor.digest())
            .collect();
        for a in metadata.absent_blobs()? {
            if !needed.contains(&a.digest) && !leased_blobs.contains(&a.digest) && !options.dry_run
            {
                metadata.remove_absent_blob(&a.digest)?;
            }
        }
    }

    // Image records whose manifest is gone.
    let removed: HashSet<&Digest> = report.removed_blobs.iter().collect();
    for image in metadata.images()? {
        let gone = removed.contains(&image.manifest) || !content.contains(&image.manifest)?;
        if gone {
            if !options.dry_run {
                metadata.remove_image(&image.manifest)?;
            }
            report.removed_image_records.push(image.manifest);
        }
    }

    // Ingests.
    for swept in sweep_ingests(
        content,
        options.ingest_max_age,
        &leased_ingests,
        now,
        options.dry_run,
    )? {
        report.bytes_freed += swept.bytes;
        report.removed_ingests.push(
            swept
                .reference
                .unwrap_or_else(|| "(unnamed ingest)".to_owned()),
        );
    }

    // Layers.
    if let Some(layers) = store.layer_maintenance() {
        let mut keep: HashSet<Digest> = leased_layers;
        let mut layers_safe = blobs_safe;
        for config in &reach.configs {
            match graph::config_diff_ids(content, config) {
                Ok(diff_ids) => keep.extend(digests::chain_ids(&diff_ids)),
                Err(e) => {
                    layers_safe = false;
                    report.warnings.push(format!(
                        "no layer removed: image config {config} cannot be read ({e})"
                    ));
                }
            }
        }
        if layers_safe {
            // Everything not kept goes; a kept layer keeps its parents (ChainIDs of every prefix
            // are kept), so the set to remove holds the children of all its members. Children
            // must go before their parents: remove in passes, deferring a layer that still has
            // a child, until a pass removes nothing.
            let mut pending: Vec<Digest> = layers
                .layer_ids()?
                .into_iter()
                .filter(|c| !keep.contains(c))
                .collect();
            if options.dry_run {
                report.removed_layers.append(&mut pending);
            }
            let mut in_use = 0;
            while !pending.is_empty() {
                let mut deferred = Vec::new();
                let mut last_error = None;
                let mut removed = 0;
                for chain_id in pending {
                    match layers.remove_layer(&chain_id) {
                        Ok(()) => {
                            removed += 1;
                            metadata.remove_labels(&LabelSubject::Layer(chain_id.clone()))?;
                            report.removed_layers.push(chain_id);
                        }
                        Err(StoreError::Layer(
                            e @ crate::layer::LayerError::HasChildren { .. },
                        )) => {
                            last_error = Some(e);
                            deferred.push(chain_id);
                        }
                        // A pull in another process holds it (the layer store's own lease,
                        // taken before the pull records it): kept, like a leased layer.
                        Err(StoreError::Layer(crate::layer::LayerError::InUse { .. })) => {
                            in_use += 1;
                        }
                        Err(StoreError::Layer(crate::layer::LayerError::NotFound { .. })) => {}
                        Err(e) => return Err(e),
                    }
                }
                if removed == 0 {
                    // No progress: a child that is kept (leased) holds them.
                    if let Some(e) = last_error {
                        report
                            .warnings
                            .push(format!("{} layer(s) kept: {e}", deferred.len()));
                    }
                    break;
                }
                pending = deferred;
            }
            if in_use > 0 {
                report.warnings.push(format!(
                    "{in_use} layer(s) kept: in use by a running operation"
                ));
            }
        }
    }
    tracing::info!(
        blobs = report.removed_blobs.len(),
        ingests = report.removed_ingests.len(),
        layers = report.removed_layers.len(),
        bytes = report.bytes_freed,
        dry_run = options.dry_run,
        "gc finished"
    );
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::tests::store_image;
    use crate::maintenance::tests::FakeLayers;
    use crate::metadata::LeaseOptions;
    use std::sync::Arc;

    #[test]
    fn absent_blob_records_stay_while_a_referenced_image_needs_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (m, _config, layers) = store_image(store.content(), "a", 1);
        let (_m2, _c2, other) = store_image(store.content(), "b", 1);
        for d in [&layers[0], &other[0]] {
            store
                .metadata()
                .record_absent_blob(&crate::metadata::AbsentBlob {
                    digest: d.clone(),
                    diff_id: d.clone(),
                    size: 1,
                    media_type: "application/vnd.oci.image.layer.v1.tar".into(),
                    registry: "r".into(),
                    repository: "a".into(),
                })
                .unwrap();
            store.content().delete(d).unwrap();
        }
        store.add_reference("r/a:1", &m).unwrap();
        store.gc(&GcOptions::default()).unwrap();
        let left: Vec<Digest> = store
            .metadata()
            .absent_blobs()
            .unwrap()
            .into_iter()
            .map(|a| a.digest)
            .collect();
        assert_eq!(left, vec![layers[0].clone()]);
    }

    #[test]
    fn unreferenced_blobs_go_and_referenced_and_leased_ones_stay() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (m, config, layers) = store_image(store.content(), "kept", 2);
        store.add_reference("r.example/kept:1", &m).unwrap();
        let (orphan, orphan_config, orphan_layers) = store_image(store.content(), "orphan", 1);
        let loose = store.content().put_bytes(b"loose", None).unwrap().digest;
        let lease = store.lease(&LeaseOptions::default()).unwrap();
        let leased = store.content().put_bytes(b"leased", None).unwrap().digest;
        lease.add(&LeaseResource::Blob(leased.clone())).unwrap();

        let dry = store
            .gc(&GcOptions {
                dry_run: true,
                ..GcOptions::default()
            })
            .unwrap();
        assert_eq!(dry.removed_blobs.len(), 4);
        assert!(
            store.content().contains(&loose).unwrap(),
            "dry run removes nothing"
        );

        let report = store.gc(&GcOptions::default()).unwrap();
        let mut removed = report.removed_blobs.clone();
        removed.sort_by(|a, b| a.as_ref().cmp(b.as_ref()));
        let mut want = vec![
            orphan.digest().clone(),
            orphan_config,
            orphan_layers[0].clone(),
            loose,
        ];
        want.sort_by(|a, b| a.as_ref().cmp(b.as_ref()));
        assert_eq!(removed, want);
        assert_eq!(report.kept_blobs, 5);
        for d in [m.digest(), &config, &layers[0], &layers[1], &leased] {
            assert!(store.content().contains(d).unwrap(), "{d} kept");
        }
        lease.release().unwrap();
        let report = store.gc(&GcOptions::default()).unwrap();
        assert_eq!(report.removed_blobs, vec![leased]);
    }

    #[test]
    fn expired_lease_no_longer_protects() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let lease = store
            .lease(&LeaseOptions {
                expires_in: Some(Duration::ZERO),
                bind_to_process: false,
            })
            .unwrap();
        let d = store.content().put_bytes(b"x", None).unwrap().digest;
        lease.add(&LeaseResource::Blob(d.clone())).unwrap();
        let report = store.gc(&GcOptions::default()).unwrap();
        assert_eq!(report.expired_leases, vec![lease.id().to_owned()]);
        assert_eq!(report.removed_blobs, vec![d]);
    }

    #[test]
    fn young_blobs_survive_a_minimum_age() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let d = store.content().put_bytes(b"young", None).unwrap().digest;
        let report = store
            .gc(&GcOptions {
                blob_min_age: Duration::from_secs(3600),
                ..GcOptions::default()
            })
            .unwrap();
        assert!(report.removed_blobs.is_empty());
        assert!(store.content().contains(&d).unwrap());
    }

    #[test]
    fn unreadable_referenced_manifest_stops_the_blob_sweep() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let bad = store.content().put_bytes(b"{}", None).unwrap();
        let desc = oci_spec::image::Descriptor::new(
            oci_spec::image::MediaType::ImageManifest,
            bad.size,
            bad.digest.clone(),
        );
        // Bypass add_reference's check, as another tool writing index.json might.
        store.layout().add("r.example/bad:1", &desc).unwrap();
        let loose = store.content().put_bytes(b"loose", None).unwrap().digest;
        let report = store.gc(&GcOptions::default()).unwrap();
        assert!(report.removed_blobs.is_empty());
        assert_eq!(report.warnings.len(), 1, "{:?}", report.warnings);
        assert!(store.content().contains(&loose).unwrap());
    }

    #[test]
    fn layers_of_referenced_images_and_leased_layers_stay() {
        let dir = tempfile::tempdir().unwrap();
        let layers = Arc::new(FakeLayers::default());
        let store = Store::open_with_layers(dir.path(), Some(layers.clone())).unwrap();
        let (m, config, _) = store_image(store.content(), "img", 2);
        store.add_reference("r.example/img:1", &m).unwrap();
        let diff_ids = graph::config_diff_ids(store.content(), &config).unwrap();
        let chain = digests::chain_ids(&diff_ids);
        let leased = digests::sha256_of(b"being pulled");
        let orphan = digests::sha256_of(b"orphan");
        *layers.layers.lock().unwrap() = [&chain[0], &chain[1], &leased, &orphan]
            .iter()
            .map(|d| (d.to_string(), None))
            .collect();
        let lease = store.lease(&LeaseOptions::default()).unwrap();
        lease.add(&LeaseResource::Layer(leased.clone())).unwrap();
        let report = store.gc(&GcOptions::default()).unwrap();
        assert_eq!(report.removed_layers, vec![orphan]);
        let mut left = layers.ids();
        left.sort();
        let mut want: Vec<String> = [&chain[0], &chain[1], &leased]
            .iter()
            .map(|d| d.to_string())
            .collect();
        want.sort();
        assert_eq!(left, want);
    }

    #[test]
    fn image_records_of_removed_manifests_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (m, config, _) = store_image(store.content(), "img", 1);
        store
            .metadata()
            .put_image(&crate::metadata::ImageRecord {
                manifest: m.digest().clone(),
                config,
                platform: Default::default(),
                created: None,
                size: 0,
            })
            .unwrap();
        let report = store.gc(&GcOptions::default()).unwrap();
        assert_eq!(report.removed_image_records, vec![m.digest().clone()]);
        assert!(store.metadata().images().unwrap().is_empty());
    }
}
