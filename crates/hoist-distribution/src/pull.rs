//! Pulling images from a registry into the local store.
//!
//! [`pull`] resolves the endpoints (mirrors first), fetches the manifest (following indexes to
//! the platform wanted), then fetches the image config *beside* the layers: the layers start at
//! once through the [`hoist_xfer::LayerDownloadManager`] (each layer pipelined: streamed into
//! the content store while it is decompressed and extracted), and each layer's DiffID is checked
//! against the config once both are there.
//! When every layer is registered, the root filesystem is checked against the config, and the
//! manifests, config, image record, source repositories and the reference are recorded, in that
//! order; the event logger hears of it last.
//!
//! Failures before any layer data moved fall back to the next endpoint (see
//! [`crate::endpoint::should_fall_back`]); the last error is translated
//! ([`crate::endpoint::translate_pull_error`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::SystemTime;

use futures_util::future::BoxFuture;
use futures_util::{FutureExt, StreamExt, TryStreamExt};
use hoist_registry::{ImageRef, Manifest, Repository};
use hoist_store::{
    Descriptor, Digest, ImagePlatform, ImageRecord, LeaseOptions, LeaseResource, MediaType, Store,
};
use hoist_xfer::{LayerDownloadManager, RetryPolicy, RootFs};
use tokio::sync::watch;

use crate::blocking::blocking;
use crate::config::{EventAction, ImageEvent, PullConfig};
use crate::endpoint::{
    RepositoryEndpoint, get_repositories, should_fall_back, translate_pull_error,
};
use crate::error::{Error, Result};
use crate::fetch::{LayerDescriptor, PullContext};
use crate::layers::BlobLayers;
use crate::manifest::{self, ImageConfig, ImageManifest, Parsed};
use crate::platform::Platform;
use crate::retrying::retrying;

/// Indexes nested deeper than this are refused.
const MAX_INDEX_DEPTH: usize = 4;
/// Largest image config read (it is held in memory).
pub(crate) const MAX_CONFIG_SIZE: u64 = 16 << 20;

/// A layer of a pulled image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PulledLayer {
    /// The blob's digest.
    pub digest: Digest,
    /// The blob's size in bytes.
    pub size: u64,
    /// The layer's DiffID (from the config; verified unless layers were not unpacked).
    pub diff_id: Digest,
}

/// What a pull did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PullResult {
    /// The reference recorded in the store (`registry/repository:tag`, or `@digest`).
    pub reference: String,
    /// The digest the reference names: the index or manifest list when the registry served one,
    /// else the image manifest.
    pub digest: Digest,
    /// The image manifest's digest.
    pub manifest: Digest,
    /// The image config's digest (the image ID).
    pub config: Digest,
    /// The image's platform, as its config declares it.
    pub platform: Option<Platform>,
    /// The layers, base first.
    pub layers: Vec<PulledLayer>,
    /// Bytes received from the registry (manifests, config, layer data).
    pub bytes_fetched: u64,
    /// The host the image came from (a mirror or the registry).
    pub endpoint: String,
    /// Whether that host is a mirror.
    pub mirror: bool,
    /// Layers pulled partially (their compressed blobs are not stored; see
    /// [`hoist_store::AbsentBlob`]).
    pub partial_layers: Vec<Digest>,
    /// Partial pulls that fell back to a full pull.
    pub partial_fallbacks: u64,
}

/// Pulls `reference` into the local store.
pub async fn pull(config: &PullConfig, reference: &ImageRef) -> Result<PullResult> {
    check_name(reference)?;
    let endpoints = get_repositories(&config.client, &config.registries, reference)
        .await
        .map_err(|e| translate_pull_error(e, reference))?;
    let last = endpoints.len().saturating_sub(1);
    let mut outcome = None;
    for (i, endpoint) in endpoints.iter().enumerate() {
        let moved = AtomicBool::new(false);
        match pull_from(config, endpoint, reference, &moved).await {
            Ok(result) => return Ok(result),
            Err(e)
                if i < last
                    && should_fall_back(&e, moved.load(Ordering::Acquire), endpoint.mirror) =>
            {
                tracing::warn!(endpoint = endpoint.host(), mirror = endpoint.mirror, error = %hoist_xfer::describe(&e), "pull failed; trying the next endpoint");
            }
            Err(e) => {
                outcome = Some(e);
                break;
            }
        }
    }
    Err(translate_pull_error(
        outcome.unwrap_or_else(|| Error::Internal("no endpoint to pull from".into())),
        reference,
    ))
}

/// Pulls every tag of `reference`'s repository, [`PullConfig::tag_concurrency`] at once.
/// Results come in tag order; the first failure ends the pull (tags already pulled stay).
pub async fn pull_all_tags(config: &PullConfig, reference: &ImageRef) -> Result<Vec<PullResult>> {
    let mut tags = tags(config, reference).await?;
    tags.sort();
    tags.dedup();
    let refs = tags
        .iter()
        .map(|t| reference.with_tag(t).map_err(Error::from))
        .collect::<Result<Vec<_>>>()?;
    futures_util::stream::iter(refs.iter().map(|r| pull(config, r)))
        .buffered(config.tag_concurrency.max(1))
        .try_collect()
        .await
}

/// The tags of `reference`'s repository, from the first endpoint that lists them.
pub async fn tags(config: &PullConfig, reference: &ImageRef) -> Result<Vec<String>> {
    check_name(reference)?;
    let endpoints = get_repositories(&config.client, &config.registries, reference)
        .await
        .map_err(|e| translate_pull_error(e, reference))?;
    let mut last = None;
    for endpoint in &endpoints {
        match endpoint.repository.tags(None).await {
            Ok(t) => return Ok(t),
            Err(e) => {
                let err = Error::registry(format!("listing the tags of {}", reference.name()), e);
                if endpoint.mirror && should_fall_back(&err, false, true) {
                    last = Some(err);
                    continue;
                }
                return Err(translate_pull_error(err, reference));
            }
        }
    }
    Err(translate_pull_error(
        last.unwrap_or_else(|| Error::Internal("no endpoint to list tags from".into())),
        reference,
    ))
}

/// Refuses the reserved name (references from [`ImageRef::parse`] never carry it; this guards
/// references built otherwise).
fn check_name(reference: &ImageRef) -> Result<()> {
    if reference.is_docker_hub()
        && reference.repository() == format!("library/{}", hoist_registry::reference::RESERVED_NAME)
    {
        return Err(Error::ReservedName {
            name: reference.familiar_name(),
        });
    }
    Ok(())
}

/// The reference name recorded in the store: `name:tag` when tagged, else `name@digest`.
fn store_name(reference: &ImageRef, top: &Digest) -> String {
    match reference.tag() {
        Some(tag) => format!("{}:{tag}", reference.name()),
        None => format!("{}@{}", reference.name(), reference.digest().unwrap_or(top)),
    }
}

/// The manifests a pull went through, top first, and the image manifest at the end.
struct Resolved {
    manifests: Vec<Manifest>,
    image: ImageManifest,
}

fn select_image<'a>(
    repo: &'a Repository,
    policy: &'a RetryPolicy,
    manifest: Manifest,
    wanted: &'a Platform,
    reference: &'a str,
    config_types: &'a [String],
    depth: usize,
) -> BoxFuture<'a, Result<Resolved>> {
    async move {
        let parsed = manifest::parse(
            &manifest.media_type,
            &manifest.digest,
            &manifest.bytes,
            reference,
            config_types,
        )?;
        let index = match parsed {
            Parsed::Image(image) => {
                return Ok(Resolved {
                    manifests: vec![manifest],
                    image,
                });
            }
            Parsed::Index(index) => index,
        };
        if depth >= MAX_INDEX_DEPTH {
            return Err(Error::InvalidManifest {
                digest: manifest.digest.clone(),
                reason: format!("indexes are nested more than {MAX_INDEX_DEPTH} deep"),
            });
        }
        let no_match = || Error::NoMatchingPlatform {
            reference: reference.to_owned(),
            platform: wanted.to_string(),
            available: index.platforms(),
        };
        let candidates = index.candidates(wanted);
        let mut last = None;
        for entry in candidates {
            let digest = &entry.descriptor.digest;
            let what = format!("fetching manifest {digest}");
            let child = retrying(policy, &what, || async {
                repo.get_manifest(digest.as_ref())
                    .await
                    .map_err(|e| Error::registry(what.clone(), e))
            })
            .await?;
            manifest::verify_digest(digest, &child.bytes)?;
            if child.bytes.len() as u64 != entry.descriptor.size {
                return Err(Error::InvalidManifest {
                    digest: manifest.digest.clone(),
                    reason: format!(
                        "entry {digest} declares {} bytes but has {}",
                        entry.descriptor.size,
                        child.bytes.len()
                    ),
                });
            }
            match select_image(
                repo,
                policy,
                child,
                wanted,
                reference,
                config_types,
                depth + 1,
            )
            .await
            {
                Ok(mut resolved) => {
                    resolved.manifests.insert(0, manifest);
                    return Ok(resolved);
                }
                // A nested index without a match: try the next candidate.
                Err(e @ Error::NoMatchingPlatform { .. }) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(no_match))
    }
    .boxed()
}

/// The DiffIDs the store already knows for these blobs, up to the first unknown one.
fn known_diff_ids(store: &Store, blobs: &[Digest]) -> Vec<Option<Digest>> {
    blobs
        .iter()
        .map(|b| store.metadata().diff_id(b).ok().flatten())
        .collect()
}

/// Fetches, stores and parses the image config; publishes it (or the failure) on `tx`.
async fn fetch_config(
    repo: &Repository,
    policy: &RetryPolicy,
    store: &Store,
    image: &ImageManifest,
    fetched: &AtomicU64,
    tx: &watch::Sender<Option<std::result::Result<Arc<ImageConfig>, String>>>,
) -> Result<Arc<ImageConfig>> {
    let result = async {
        let digest = &image.config.digest;
        if image.config.size > MAX_CONFIG_SIZE {
            return Err(Error::InvalidConfig {
                digest: digest.clone(),
                reason: format!(
                    "it is {} bytes; hoist reads configs of at most {MAX_CONFIG_SIZE} bytes",
                    image.config.size
                ),
            });
        }
        let limit = image.config.size.max(1);
        let what = format!("fetching blob {digest}");
        let bytes = retrying(policy, &what, || async {
            repo.get_blob_bytes(digest, limit)
                .await
                .map_err(|e| Error::registry(what.clone(), e))
        })
        .await?;
        fetched.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        let config = manifest::parse_config(digest, &bytes)?;
        if config.diff_ids.len() != image.layers.len() {
            return Err(Error::InvalidConfig {
                digest: digest.clone(),
                reason: format!(
                    "it lists {} DiffIDs for the manifest's {} layers",
                    config.diff_ids.len(),
                    image.layers.len()
                ),
            });
        }
        let store = store.clone();
        let d = digest.clone();
        blocking(move || store.content().put_bytes(&bytes, Some(&d)))
            .await?
            .map_err(|e| Error::store("storing the image config", e))?;
        Ok(Arc::new(config))
    }
    .await
    .map_err(|e| Error::ImageConfigPull {
        digest: image.config.digest.clone(),
        source: Box::new(e),
    });
    let _ = tx.send(Some(match &result {
        Ok(c) => Ok(Arc::clone(c)),
        Err(e) => Err(e.to_string()),
    }));
    result
}

async fn pull_from(
    config: &PullConfig,
    endpoint: &RepositoryEndpoint,
    reference: &ImageRef,
    moved: &AtomicBool,
) -> Result<PullResult> {
    let repo = &endpoint.repository;
    let familiar = reference.familiar();
    let policy = config.download_manager.retry_policy();
    let what = format!("fetching the manifest of {familiar}");
    let top = retrying(policy, &what, || async {
        repo.get_manifest(reference.manifest_reference())
            .await
            .map_err(|e| Error::registry(what.clone(), e))
    })
    .await?;
    if let Some(d) = reference.digest() {
        manifest::verify_digest(d, &top.bytes)?;
    }
    let wanted = config.wanted_platform();
    let resolved = select_image(
        repo,
        policy,
        top,
        &wanted,
        &familiar,
        &config.config_types,
        0,
    )
    .await?;
    let manifest_bytes: u64 = resolved
        .manifests
        .iter()
        .map(|m| m.bytes.len() as u64)
        .sum();
    let image = resolved.image.clone();
    let image_manifest = resolved
        .manifests
        .last()
        .cloned()
        .ok_or_else(|| Error::Internal("no manifest resolved".into()))?;
    let top = resolved.manifests[0].clone();

    // Lease everything before writing it, then store the manifests.
    let store = config.store.clone();
    let lease = {
        let store = store.clone();
        let mut blobs: Vec<Digest> = resolved
            .manifests
            .iter()
            .map(|m| m.digest.clone())
            .collect();
        blobs.push(image.config.digest.clone());
        // The layer blobs too: one the store already holds (another image's) is not downloaded,
        // so nothing else would protect it from a gc racing this pull before the reference is
        // written.
        blobs.extend(image.layers.iter().map(|l| l.blob.digest.clone()));
        let manifests: Vec<(Vec<u8>, Digest)> = resolved
            .manifests
            .iter()
            .map(|m| (m.bytes.to_vec(), m.digest.clone()))
            .collect();
        blocking(move || -> std::result::Result<_, hoist_store::StoreError> {
            let lease = store.lease(&LeaseOptions::default())?;
            for b in &blobs {
                lease.add(&LeaseResource::Blob(b.clone()))?;
            }
            for (bytes, digest) in &manifests {
                store.content().put_bytes(bytes, Some(digest))?;
            }
            Ok(lease)
        })
        .await?
        .map_err(|e| Error::store("storing manifests", e))?
    };
    let lease = Arc::new(lease);

    let blobs: Vec<Digest> = image.layers.iter().map(|l| l.blob.digest.clone()).collect();
    let known = {
        let store = store.clone();
        let blobs = blobs.clone();
        blocking(move || known_diff_ids(&store, &blobs)).await?
    };
    let (config_tx, config_rx) = watch::channel(None);
    let cx = Arc::new(PullContext {
        repo: repo.clone(),
        registry: reference.registry().to_owned(),
        store: store.clone(),
        layers: if config.unpack {
            Some(config.download_manager.store().layer_store().clone())
        } else {
            None
        },
        config: config_rx,
        lease: Arc::clone(&lease),
        fetched: AtomicU64::new(manifest_bytes),
        moved: AtomicBool::new(false),
        max_layer_bytes: config.max_layer_bytes,
        partial: config.partial && config.unpack,
        window: hoist_registry::WindowConfig::with_window(config.fetch_window),
        partials: std::sync::Mutex::new(Vec::new()),
        partial_fallbacks: AtomicU64::new(0),
        foreign_urls: config.foreign_urls.clone(),
    });
    let fetch_cfg = fetch_config(repo, policy, &store, &image, &cx.fetched, &config_tx);

    let (image_config, rootfs) = if config.unpack {
        let descriptors: Vec<LayerDescriptor> = image
            .layers
            .iter()
            .zip(known)
            .enumerate()
            .map(|(i, (layer, known))| {
                LayerDescriptor::new(Arc::clone(&cx), i, layer.clone(), known)
            })
            .collect();
        let layers = async {
            config
                .download_manager
                .download(RootFs::new(), descriptors, Arc::clone(&config.progress))
                .await
                .map_err(|source| Error::Download { source })
        };
        let (image_config, (rootfs, guard)) = watch_moved(
            futures_util::future::try_join(fetch_cfg, layers),
            &cx,
            moved,
        )
        .await?;
        // Lease the layers for the pull's lifetime before the engine's guard goes.
        let chain: Vec<Digest> = rootfs.chain_ids().collect();
        {
            let lease = Arc::clone(&lease);
            blocking(move || {
                for c in &chain {
                    lease.add(&LeaseResource::Layer(c.clone()))?;
                }
                Ok::<_, hoist_store::StoreError>(())
            })
            .await?
            .map_err(|e| Error::store("leasing layers", e))?;
        }
        drop(guard);
        (image_config, rootfs)
    } else {
        // Only blobs: the config comes first, so that present blobs count as existing layers.
        let image_config = fetch_cfg.await?;
        let pairs: Vec<(Digest, Digest)> = blobs
            .iter()
            .cloned()
            .zip(image_config.diff_ids.iter().cloned())
            .collect();
        let manager = LayerDownloadManager::new(
            Arc::new(BlobLayers::new(store.clone(), &pairs)),
            config.download_manager.concurrency(),
        )
        .with_retry_policy(config.download_manager.retry_policy().clone());
        let descriptors: Vec<LayerDescriptor> = image
            .layers
            .iter()
            .zip(&image_config.diff_ids)
            .enumerate()
            .map(|(i, (layer, d))| {
                LayerDescriptor::new(Arc::clone(&cx), i, layer.clone(), Some(d.clone()))
            })
            .collect();
        let (rootfs, guard) = watch_moved(
            async {
                manager
                    .download(RootFs::new(), descriptors, Arc::clone(&config.progress))
                    .await
                    .map_err(|source| Error::Download { source })
            },
            &cx,
            moved,
        )
        .await?;
        drop(guard);
        (image_config, rootfs)
    };

    if rootfs.diff_ids != image_config.diff_ids {
        return Err(Error::RootfsMismatch {
            reference: familiar,
            reason: format!(
                "the layers are {:?}, the config lists {:?}",
                rootfs
                    .diff_ids
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>(),
                image_config
                    .diff_ids
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
            ),
        });
    }

    let partials: Vec<crate::partial::PartialRecord> = crate::layers::lock(&cx.partials).clone();
    let partial_layers: Vec<Digest> = partials.iter().map(|p| p.blob.clone()).collect();

    // Record: absent blobs of partial pulls, blob info, image, reference.
    let name = store_name(reference, &top.digest);
    let layers: Vec<PulledLayer> = image
        .layers
        .iter()
        .zip(&image_config.diff_ids)
        .map(|(l, d)| PulledLayer {
            digest: l.blob.digest.clone(),
            size: l.blob.size,
            diff_id: d.clone(),
        })
        .collect();
    let platform = image_config.platform.clone();
    {
        let store = store.clone();
        let name = name.clone();
        let image = image.clone();
        let image_manifest = image_manifest.clone();
        let top = top.clone();
        let image_config = Arc::clone(&image_config);
        let registry = reference.registry().to_owned();
        let repository = reference.repository().to_owned();
        let unpacked = config.unpack;
        let wanted = wanted.clone();
        let partials = partials.clone();
        let chain: Vec<Digest> = rootfs.chain_ids().collect();
        blocking(move || -> Result<()> {
            let md = store.metadata();
            let now = SystemTime::now();
            let rec = |e| Error::store("recording blob information", e);
            crate::partial::record(&store, &partials, &chain, &registry, &repository)
                .map_err(rec)?;
            for (layer, diff_id) in image.layers.iter().zip(&image_config.diff_ids) {
                let d = &layer.blob.digest;
                if unpacked {
                    md.record_diff_id(d, diff_id).map_err(rec)?;
                }
                md.record_compression(d, &layer.compression.store_name())
                    .map_err(rec)?;
                md.record_location(d, &registry, &repository, now)
                    .map_err(rec)?;
            }
            md.record_location(&image.config.digest, &registry, &repository, now)
                .map_err(rec)?;
            let platform = image_config.platform.clone().unwrap_or(wanted);
            let size = image_manifest.bytes.len() as u64
                + image.config.size
                + image.layers.iter().map(|l| l.blob.size).sum::<u64>();
            md.put_image(&ImageRecord {
                manifest: image_manifest.digest.clone(),
                config: image.config.digest.clone(),
                platform: ImagePlatform {
                    os: platform.os,
                    architecture: platform.architecture,
                    variant: platform.variant,
                },
                created: image_config.created.clone(),
                size,
            })
            .map_err(|e| Error::store("recording the image", e))?;
            let target = Descriptor::new(
                MediaType::from(top.media_type.as_str()),
                top.bytes.len() as u64,
                top.digest.clone(),
            );
            store
                .add_reference(&name, &target)
                .map_err(|e| Error::store(format!("recording {name}"), e))
        })
        .await??;
    }
    drop(lease);
    if let Some(logger) = &config.event_logger {
        logger(&ImageEvent {
            action: EventAction::Pull,
            reference: name.clone(),
            digest: top.digest.clone(),
        });
    }
    Ok(PullResult {
        reference: name,
        digest: top.digest.clone(),
        manifest: image_manifest.digest.clone(),
        config: image.config.digest.clone(),
        platform,
        layers,
        bytes_fetched: cx.fetched.load(Ordering::Relaxed),
        endpoint: endpoint.host().to_owned(),
        mirror: endpoint.mirror,
        partial_layers,
        partial_fallbacks: cx.partial_fallbacks.load(Ordering::Relaxed),
    })
}

/// Runs `fut`, then copies whether layer data moved into `moved` (whatever the outcome).
async fn watch_moved<T>(
    fut: impl std::future::Future<Output = Result<T>>,
    cx: &PullContext,
    moved: &AtomicBool,
) -> Result<T> {
    let out = fut.await;
    if cx.moved.load(Ordering::Acquire) {
        moved.store(true, Ordering::Release);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use hoist_xfer::chain_id;

    #[test]
    fn store_names_keep_the_tag_or_use_the_digest() {
        let d = hoist_registry::digest::sha256_of(b"m");
        let r = ImageRef::parse("127.0.0.1:5000/a/b:1").unwrap();
        assert_eq!(store_name(&r, &d), "127.0.0.1:5000/a/b:1");
        let r = ImageRef::parse(&format!("127.0.0.1:5000/a/b@{d}")).unwrap();
        assert_eq!(store_name(&r, &d), format!("127.0.0.1:5000/a/b@{d}"));
        let r = ImageRef::parse("alpine").unwrap();
        assert_eq!(store_name(&r, &d), "docker.io/library/alpine:latest");
    }

    #[test]
    fn chain_ids_follow_the_diff_ids() {
        let a = hoist_registry::digest::sha256_of(b"a");
        let b = hoist_registry::digest::sha256_of(b"b");
        let rootfs = RootFs::from(vec![a.clone(), b.clone()]);
        let chain: Vec<Digest> = rootfs.chain_ids().collect();
        assert_eq!(chain[0], a);
        assert_eq!(chain[1], chain_id(Some(&a), &b));
    }
}
