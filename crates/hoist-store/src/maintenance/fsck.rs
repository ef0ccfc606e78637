//! `fsck`: re-hash every blob, resolve every reference, check every image is complete, check
//! every layer; report, and with `repair` remove what is corrupt or dangling so that the next
//! pull fetches it again.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io;
use std::path::PathBuf;

use oci_spec::image::{Descriptor, Digest};

use crate::digests::DigestHasher;
use crate::durable;
use crate::error::Result;
use crate::graph;
use crate::lock::{Mode, Wait};
use crate::metadata::LabelSubject;
use crate::store::Store;

/// What `fsck` may do.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FsckOptions {
    /// Remove corrupt blobs and layers, dangling references and stale records, and make
    /// `index.json` agree with the metadata database.
    pub repair: bool,
}

/// One problem `fsck` found.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FsckProblem {
    /// A blob's content does not hash to its name.
    CorruptBlob {
        /// The blob's name.
        digest: Digest,
        /// What its content hashes to.
        actual: Digest,
    },
    /// A blob could not be read.
    UnreadableBlob {
        /// The blob.
        digest: Digest,
        /// The read error.
        error: String,
    },
    /// Something under `blobs/` that is not a blob (never removed by repair).
    StrayEntry {
        /// Its path.
        path: PathBuf,
    },
    /// A reference points at a manifest or index that is not in the store.
    DanglingReference {
        /// The reference.
        name: String,
        /// The missing target.
        target: Digest,
    },
    /// An image a reference names lacks a blob.
    MissingBlob {
        /// The reference.
        name: String,
        /// The manifest needing the blob.
        parent: Digest,
        /// The missing blob.
        digest: Digest,
    },
    /// A manifest or index could not be parsed (or failed verification while reading).
    UnreadableManifest {
        /// The blob.
        digest: Digest,
        /// Why.
        reason: String,
    },
    /// `index.json` and the metadata database disagree on a reference.
    ReferenceMismatch {
        /// The reference.
        name: String,
        /// Its target in `index.json` (`None` when absent there).
        index: Option<Digest>,
        /// Its target in the database.
        metadata: Digest,
    },
    /// An image record whose manifest is gone.
    StaleImageRecord {
        /// The manifest digest.
        manifest: Digest,
    },
    /// A layer failed its check.
    BrokenLayer {
        /// Its ChainID.
        chain_id: Digest,
        /// Why.
        reason: String,
    },
}

impl fmt::Display for FsckProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FsckProblem::CorruptBlob { digest, actual } => {
                write!(
                    f,
                    "blob {digest} is corrupt: its content hashes to {actual}"
                )
            }
            FsckProblem::UnreadableBlob { digest, error } => {
                write!(f, "blob {digest} cannot be read: {error}")
            }
            FsckProblem::StrayEntry { path } => {
                write!(f, "{} is not a blob", path.display())
            }
            FsckProblem::DanglingReference { name, target } => {
                write!(
                    f,
                    "reference {name} points to {target}, which is not in the store"
                )
            }
            FsckProblem::MissingBlob {
                name,
                parent,
                digest,
            } => write!(
                f,
                "image {name} is incomplete: {parent} needs {digest}, which is not in the store"
            ),
            FsckProblem::UnreadableManifest { digest, reason } => {
                write!(f, "manifest {digest} cannot be used: {reason}")
            }
            FsckProblem::ReferenceMismatch {
                name,
                index,
                metadata,
            } => match index {
                Some(i) => write!(
                    f,
                    "reference {name} is {i} in index.json but {metadata} in the database"
                ),
                None => write!(
                    f,
                    "reference {name} ({metadata}) is complete but missing from index.json"
                ),
            },
            FsckProblem::StaleImageRecord { manifest } => {
                write!(f, "image record {manifest} has no manifest in the store")
            }
            FsckProblem::BrokenLayer { chain_id, reason } => {
                write!(f, "layer {chain_id} is broken: {reason}")
            }
        }
    }
}

/// A problem and whether repair fixed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FsckFinding {
    /// What is wrong.
    pub problem: FsckProblem,
    /// Whether `repair` dealt with it.
    pub repaired: bool,
}

/// What `fsck` checked and found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FsckReport {
    /// Blobs re-hashed.
    pub blobs_checked: u64,
    /// Bytes re-hashed.
    pub bytes_checked: u64,
    /// References resolved.
    pub references_checked: u64,
    /// Layers checked.
    pub layers_checked: u64,
    /// Problems, in the order found.
    pub findings: Vec<FsckFinding>,
}

impl FsckReport {
    /// True when nothing was found.
    pub fn is_clean(&self) -> bool {
        self.findings.is_empty()
    }

    /// Problems left unrepaired.
    pub fn unrepaired(&self) -> impl Iterator<Item = &FsckProblem> {
        self.findings
            .iter()
            .filter(|f| !f.repaired)
            .map(|f| &f.problem)
    }

    fn push(&mut self, problem: FsckProblem, repaired: bool) {
        tracing::warn!(repaired, "fsck: {problem}");
        self.findings.push(FsckFinding { problem, repaired });
    }
}

/// Rehashes one blob file: `Ok(actual digest)` or the read error.
fn rehash(path: &std::path::Path, digest: &Digest) -> Result<io::Result<(Digest, u64)>> {
    let mut hasher = DigestHasher::for_digest(digest)?;
    Ok(File::open(path)
        .and_then(|mut f| io::copy(&mut f, &mut hasher))
        .map(|n| (hasher.finish(), n)))
}

pub(crate) fn run(store: &Store, options: &FsckOptions) -> Result<FsckReport> {
    // Repairs remove things: exclude gc and reference changes. A check only needs gc to hold off.
    let mode = if options.repair {
        Mode::Exclusive
    } else {
        Mode::Shared
    };
    let _guard = store.gc_lock(mode, Wait::Block)?;
    let content = store.content();
    let metadata = store.metadata();
    let layout = store.layout();
    let mut report = FsckReport::default();

    // 1. Every blob.
    let crate::content::Scan { blobs, stray } = content.scan()?;
    for path in stray {
        report.push(FsckProblem::StrayEntry { path }, false);
    }
    for (digest, path) in blobs {
        match rehash(&path, &digest)? {
            Ok((actual, n)) => {
                report.blobs_checked += 1;
                report.bytes_checked += n;
                if actual != digest {
                    let repaired = options.repair && {
                        durable::remove_file_if_exists(&path)?;
                        metadata.remove_labels(&LabelSubject::Blob(digest.clone()))?;
                        true
                    };
                    report.push(FsckProblem::CorruptBlob { digest, actual }, repaired);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {} // removed meanwhile
            Err(e) => report.push(
                FsckProblem::UnreadableBlob {
                    digest,
                    error: e.to_string(),
                },
                false,
            ),
        }
    }
    if options.repair {
        for alg in &crate::content::ALGORITHMS {
            durable::fsync_dir(&content.blobs_dir().join(alg.as_ref()))?;
        }
    }

    // 2. Every reference, from the database and from index.json.
    let mut names: BTreeMap<String, (Option<Descriptor>, Option<Descriptor>)> = BTreeMap::new();
    for r in metadata.references()? {
        names.entry(r.name).or_default().1 = Some(r.target);
    }
    for n in layout.names()? {
        names.entry(n.name).or_default().0 = Some(n.descriptor);
    }
    let mut reported_unreadable = std::collections::HashSet::new();
    for (name, (in_index, in_db)) in names {
        report.references_checked += 1;
        let Some(root) = in_db.clone().or_else(|| in_index.clone()) else {
            continue;
        };
        let reach = graph::reach(content, [root.clone()])?;
        for (digest, reason) in reach.unreadable {
            if reported_unreadable.insert(digest.clone()) {
                report.push(FsckProblem::UnreadableManifest { digest, reason }, false);
            }
        }
        let root_missing = reach.missing.iter().any(|m| m.parent.is_none());
        if root_missing {
            let repaired = options.repair && {
                metadata.remove_reference(&name)?;
                layout.remove(&name)?;
                true
            };
            report.push(
                FsckProblem::DanglingReference {
                    name,
                    target: root.digest().clone(),
                },
                repaired,
            );
            continue;
        }
        let complete = reach.missing.is_empty();
        for m in reach.missing {
            // A layer blob a partial pull did not fetch, its layer verified: legitimate (the
            // image stays out of index.json until the blob arrives).
            if m.parent.is_some() && metadata.absent_blob(m.descriptor.digest())?.is_some() {
                if in_index.is_some() {
                    let repaired = options.repair && {
                        layout.remove(&name)?;
                        true
                    };
                    report.push(
                        FsckProblem::MissingBlob {
                            name: name.clone(),
                            parent: m.parent.unwrap_or_else(|| root.digest().clone()),
                            digest: m.descriptor.digest().clone(),
                        },
                        repaired,
                    );
                }
                continue;
            }
            // The database keeps the reference (so hoist knows what to fetch again); index.json
            // only names complete images.
            let repaired = options.repair && {
                layout.remove(&name)?;
                true
            };
            report.push(
                FsckProblem::MissingBlob {
                    name: name.clone(),
                    parent: m.parent.unwrap_or_else(|| root.digest().clone()),
                    digest: m.descriptor.digest().clone(),
                },
                repaired,
            );
        }
        if let Some(db) = in_db
            && complete
        {
            let index_digest = in_index.as_ref().map(|d| d.digest().clone());
            if index_digest.as_ref() != Some(db.digest()) {
                let repaired = options.repair && {
                    layout.add(&name, &db)?;
                    true
                };
                report.push(
                    FsckProblem::ReferenceMismatch {
                        name,
                        index: index_digest,
                        metadata: db.digest().clone(),
                    },
                    repaired,
                );
            }
        }
    }

    // 3. Image records.
    for image in metadata.images()? {
        if !content.contains(&image.manifest)? {
            let repaired = options.repair && metadata.remove_image(&image.manifest)?;
            report.push(
                FsckProblem::StaleImageRecord {
                    manifest: image.manifest,
                },
                repaired,
            );
        }
    }

    // 4. Layers.
    if let Some(layers) = store.layer_maintenance() {
        for chain_id in layers.layer_ids()? {
            report.layers_checked += 1;
            if let Some(reason) = layers.verify_layer(&chain_id)? {
                let repaired = options.repair && {
                    layers.remove_layer(&chain_id)?;
                    metadata.remove_labels(&LabelSubject::Layer(chain_id.clone()))?;
                    true
                };
                report.push(FsckProblem::BrokenLayer { chain_id, reason }, repaired);
            }
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::tests::store_image;
    use crate::maintenance::tests::FakeLayers;
    use crate::metadata::{ImagePlatform, ImageRecord};
    use std::io::Write;
    use std::sync::Arc;

    fn corrupt(store: &Store, digest: &Digest) {
        let path = store.content().blob_path(digest).unwrap();
        let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
        f.write_all(b"!").unwrap();
    }

    #[test]
    fn clean_store_reports_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (m, ..) = store_image(store.content(), "a", 2);
        store.add_reference("r.example/a:1", &m).unwrap();
        let report = store.fsck(&FsckOptions::default()).unwrap();
        assert!(report.is_clean(), "{:?}", report.findings);
        assert_eq!(report.blobs_checked, 4);
        assert_eq!(report.references_checked, 1);
    }

    #[test]
    fn corrupt_layer_is_found_and_repair_removes_it_and_unindexes_the_image() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (m, _c, layers) = store_image(store.content(), "a", 2);
        let name = "r.example/a:1";
        store.add_reference(name, &m).unwrap();
        corrupt(&store, &layers[0]);

        let report = store.fsck(&FsckOptions::default()).unwrap();
        assert!(
            matches!(
                &report.findings[..],
                [FsckFinding { problem: FsckProblem::CorruptBlob { digest, .. }, repaired: false }]
                    if digest == &layers[0]
            ),
            "{:?}",
            report.findings
        );
        assert!(store.content().contains(&layers[0]).unwrap(), "check only");

        let report = store.fsck(&FsckOptions { repair: true }).unwrap();
        assert!(
            report.unrepaired().next().is_none(),
            "{:?}",
            report.findings
        );
        assert!(!store.content().contains(&layers[0]).unwrap());
        assert!(report.findings.iter().any(|f| matches!(
            &f.problem, FsckProblem::MissingBlob { digest, .. } if digest == &layers[0])));
        assert!(
            store.layout().resolve(name).unwrap().is_none(),
            "index.json names complete images only"
        );
        assert!(
            store.metadata().reference(name).unwrap().is_some(),
            "kept for re-pull"
        );
    }

    #[test]
    fn dangling_reference_and_stale_image_record_are_repaired() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (m, config, _) = store_image(store.content(), "a", 1);
        store.add_reference("r.example/a:1", &m).unwrap();
        store
            .metadata()
            .put_image(&ImageRecord {
                manifest: m.digest().clone(),
                config,
                platform: ImagePlatform::default(),
                created: None,
                size: 1,
            })
            .unwrap();
        store.content().delete(m.digest()).unwrap();
        let report = store.fsck(&FsckOptions { repair: true }).unwrap();
        let kinds: Vec<_> = report
            .findings
            .iter()
            .map(|f| (std::mem::discriminant(&f.problem), f.repaired))
            .collect();
        assert_eq!(kinds.len(), 2, "{:?}", report.findings);
        assert!(kinds.iter().all(|(_, r)| *r));
        assert!(store.resolve("r.example/a:1").unwrap().is_none());
        assert!(store.metadata().images().unwrap().is_empty());
        assert!(store.fsck(&FsckOptions::default()).unwrap().is_clean());
    }

    #[test]
    fn index_entry_lost_after_a_crash_is_restored_from_the_database() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (m, ..) = store_image(store.content(), "a", 1);
        store.add_reference("r.example/a:1", &m).unwrap();
        store.layout().remove("r.example/a:1").unwrap();
        let report = store.fsck(&FsckOptions { repair: true }).unwrap();
        assert!(matches!(
            &report.findings[..],
            [FsckFinding {
                problem: FsckProblem::ReferenceMismatch { index: None, .. },
                repaired: true
            }]
        ));
        assert_eq!(
            store
                .layout()
                .resolve("r.example/a:1")
                .unwrap()
                .unwrap()
                .digest(),
            m.digest()
        );
    }

    #[test]
    fn broken_layers_are_reported_through_the_layer_seam_and_removed_on_repair() {
        let dir = tempfile::tempdir().unwrap();
        let layers = Arc::new(FakeLayers::with(&[
            (crate::digests::sha256_of(b"good"), None),
            (crate::digests::sha256_of(b"bad"), Some("diff id mismatch")),
        ]));
        let store = Store::open_with_layers(dir.path(), Some(layers.clone())).unwrap();
        let report = store.fsck(&FsckOptions { repair: true }).unwrap();
        assert_eq!(report.layers_checked, 2);
        assert!(matches!(
            &report.findings[..],
            [FsckFinding { problem: FsckProblem::BrokenLayer { reason, .. }, repaired: true }]
                if reason == "diff id mismatch"
        ));
        assert_eq!(
            layers.ids(),
            vec![crate::digests::sha256_of(b"good").to_string()]
        );
    }

    #[test]
    fn stray_files_are_reported_but_never_removed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let stray = dir.path().join("blobs/sha256/oci-put-blob-123");
        std::fs::write(&stray, b"tmp").unwrap();
        let report = store.fsck(&FsckOptions { repair: true }).unwrap();
        assert!(matches!(
            &report.findings[..],
            [FsckFinding {
                problem: FsckProblem::StrayEntry { .. },
                repaired: false
            }]
        ));
        assert!(stray.exists());
    }
}
