//! Copying an image from any [`ImageSource`] to any [`ImageDestination`].
//!
//! [`copy`] reads the top manifest and decides what to write:
//! * an image manifest: its config and layers, then the manifest;
//! * an index (or Docker manifest list) with [`PlatformSelection::All`]: every image it lists
//!   (nested indexes too), then the index itself, unchanged;
//! * an index with one platform: only the matching image (exact matches first, then compatible
//!   ARM variants, then entries without a platform), written as the image's top manifest.
//!
//! Manifests are copied byte for byte, so every digest is preserved. Docker schema 1 and unknown
//! media types are refused, and so is a manifest the destination cannot store (an index into a
//! docker archive), before any blob moves.
//!
//! Blobs (each distinct one once) are copied concurrently as transfers of `hoist-xfer`'s
//! [`TransferManager`]: at most [`CopyOptions::concurrency`] at a time, retried per
//! [`CopyOptions::retry`] when the failure is transient (corrupt data included: it is read again
//! from the start; a registry's `Retry-After` is honoured), with progress per blob (`Waiting`,
//! `Copying n/N`, `Retrying in Ns` with the cause, then `Copied` or `Already exists`).
//! Before a blob moves, the destination is asked whether it can reuse it (present, or mounted
//! from the source repository on the same registry). Manifests are then written bottom-up and the
//! destination committed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::future::{join_all, try_join_all};
use hoist_registry::ManifestKind;
use hoist_store::Store;
use hoist_xfer::{
    DiscardProgress, Progress, RetryDecision, RetryPolicy, SharedError, SharedProgress,
    TransferContext, TransferError, TransferManager,
};
use oci_spec::image::Digest;
use tokio_util::sync::CancellationToken;

use crate::manifest::Compression;
use crate::recompress::{self, LayerCompression, Recompression};
use crate::transport::manifest::{self, Descriptor, ImageManifest, IndexManifest};
use crate::transport::stream::digest_like;
use crate::transport::{
    self, BlobInfo, BoxFuture, ByteStream, ImageDestination, ImageSource, Platform, PutOptions,
    RegistryLocation, ReuseOptions,
};

/// How deep indexes may nest.
const MAX_INDEX_DEPTH: usize = 8;

/// Which images of an index to copy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum PlatformSelection {
    /// The image for the platform this program runs on.
    #[default]
    Current,
    /// The image for this platform.
    One(Platform),
    /// Every image, and the index itself.
    All,
}

/// How to copy.
#[derive(Clone)]
pub struct CopyOptions {
    /// Which images of an index to copy (single images are copied whatever this says).
    pub platforms: PlatformSelection,
    /// Blobs copied at once (0 = no limit).
    pub concurrency: usize,
    /// How failed blob copies and manifest transfers are retried.
    pub retry: RetryPolicy,
    /// Where per-blob progress goes.
    pub progress: SharedProgress,
    /// The blob info cache (the local store): where blobs were seen, to mount from; the copy
    /// records there the registry repositories it read blobs from and wrote them to, and each
    /// layer's DiffID and compressor.
    pub cache: Option<Store>,
    /// Recompress layers on the way ([`crate::recompress`]): the manifest is rewritten, so its
    /// digest differs from the source's. `None` copies blobs and manifests unchanged.
    pub recompress: Option<Recompression>,
}

impl Default for CopyOptions {
    fn default() -> Self {
        CopyOptions {
            platforms: PlatformSelection::Current,
            concurrency: 4,
            retry: RetryPolicy::default(),
            progress: DiscardProgress::shared(),
            cache: None,
            recompress: None,
        }
    }
}

impl fmt::Debug for CopyOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CopyOptions")
            .field("platforms", &self.platforms)
            .field("concurrency", &self.concurrency)
            .field("retry", &self.retry)
            .field("cache", &self.cache.as_ref().map(|s| s.root().to_owned()))
            .field("recompress", &self.recompress)
            .finish_non_exhaustive()
    }
}

/// What a copy did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyReport {
    /// The digest of the top manifest written (the index, or the one image copied).
    pub manifest_digest: Digest,
    /// Its media type.
    pub media_type: String,
    /// The image manifests copied (one per platform).
    pub images: Vec<Digest>,
    /// Manifests written, indexes included.
    pub manifests_written: usize,
    /// Blobs whose bytes were transferred.
    pub blobs_copied: usize,
    /// Blobs the destination already had (or mounted).
    pub blobs_reused: usize,
    /// Non-distributable blobs left out (foreign layers).
    pub blobs_skipped: usize,
    /// Bytes of the blobs transferred.
    pub bytes_copied: u64,
    /// Layers recompressed ([`CopyOptions::recompress`]).
    pub layers_recompressed: usize,
    /// The digest of the source's manifest: the same as `manifest_digest` unless layers were
    /// recompressed, which rewrites the manifest.
    pub source_manifest_digest: Digest,
}

/// Why a copy failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CopyError {
    /// A source or destination operation failed.
    #[error(transparent)]
    Transport(#[from] transport::Error),

    /// The image is Docker schema 1, which hoist does not copy.
    #[error(
        "{image} is a Docker schema 1 image: this format is deprecated and not supported; push it again with a current client to convert it"
    )]
    DeprecatedSchema1 {
        /// The image.
        image: String,
    },

    /// A manifest's media type is not one hoist knows.
    #[error("{image}: unsupported manifest media type {media_type:?}")]
    UnsupportedMediaType {
        /// The image (and the manifest's digest, for children).
        image: String,
        /// The media type.
        media_type: String,
    },

    /// A manifest cannot be used (not valid JSON of its type, or not what its index says).
    #[error("invalid manifest {digest} of {image}: {reason}")]
    InvalidManifest {
        /// The image.
        image: String,
        /// The manifest's digest.
        digest: String,
        /// What is wrong.
        reason: String,
    },

    /// An index has no image for the platform asked for.
    #[error("{image} has no image for platform {wanted}; it has: {}", available.join(", "))]
    NoMatchingPlatform {
        /// The image.
        image: String,
        /// The platform asked for.
        wanted: Platform,
        /// The platforms the index lists.
        available: Vec<String>,
    },

    /// A blob could not be copied; `source` is the last attempt's error.
    #[error("copying blob {digest} failed after {attempts} attempt(s): {}", hoist_xfer::describe(&**source))]
    Blob {
        /// The blob.
        digest: String,
        /// Attempts made.
        attempts: u32,
        /// Whether the last error was transient (retries ran out).
        retryable: bool,
        /// The last error.
        #[source]
        source: SharedError,
    },

    /// The copy was cancelled.
    #[error("copy cancelled")]
    Cancelled,

    /// Layers cannot be recompressed as asked.
    #[error("cannot recompress the layers of {image}: {reason}")]
    Recompress {
        /// The image.
        image: String,
        /// Why.
        reason: String,
    },

    /// The transfer engine failed (a panicking task).
    #[error("copy failed: {message}")]
    Internal {
        /// What happened.
        message: String,
    },
}

impl CopyError {
    /// Whether trying the copy again later may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            CopyError::Transport(e) => e.is_retryable(),
            CopyError::Blob { retryable, .. } => *retryable,
            _ => false,
        }
    }

    /// The transport error behind this one, if any (for a failed blob, the last attempt's).
    pub fn transport_error(&self) -> Option<&transport::Error> {
        match self {
            CopyError::Transport(e) => Some(e),
            CopyError::Blob { source, .. } => {
                let err: &(dyn std::error::Error + 'static) = &**source;
                err.downcast_ref::<transport::Error>()
            }
            _ => None,
        }
    }
}

/// A manifest read from the source.
#[derive(Debug, Clone)]
struct ManifestBlob {
    bytes: Bytes,
    media_type: String,
    digest: Digest,
}

/// One blob to copy.
#[derive(Debug, Clone)]
struct BlobJob {
    info: BlobInfo,
    is_config: bool,
    layer_index: Option<usize>,
    /// Recompress this layer on the way.
    recompress: bool,
}

/// Everything a copy writes, in order.
#[derive(Debug, Default)]
struct Plan {
    blobs: Vec<BlobJob>,
    seen: HashSet<Digest>,
    skipped: usize,
    /// Manifests under the top one, bottom-up.
    children: Vec<ManifestBlob>,
    images: Vec<Digest>,
    /// Per image: its config and its layers (foreign ones included).
    layer_sets: Vec<(BlobInfo, Vec<BlobInfo>)>,
}

/// Copies the image `source` names to `destination`. See the module documentation.
pub async fn copy(
    source: Arc<dyn ImageSource>,
    destination: Arc<dyn ImageDestination>,
    options: &CopyOptions,
) -> Result<CopyReport, CopyError> {
    let mut plan = Plan::default();
    let (bytes, media_type) = with_retries(&options.retry, || source.get_manifest(None)).await?;
    let top = ManifestBlob {
        digest: hoist_registry::digest::sha256_of(&bytes),
        bytes,
        media_type,
    };
    let image = source.name();
    let top = if classify(&top.media_type, &image)?.is_index() {
        match &options.platforms {
            PlatformSelection::All => {
                add_index(&*source, &options.retry, &top, &mut plan, 0).await?;
                top
            }
            PlatformSelection::One(p) => choose(&*source, &options.retry, top, p, 0).await?,
            PlatformSelection::Current => {
                choose(&*source, &options.retry, top, &Platform::host(), 0).await?
            }
        }
    } else {
        top
    };
    if !classify(&top.media_type, &image)?.is_index() {
        add_image(&image, &top, &mut plan)?;
    }
    for m in plan.children.iter().chain(std::iter::once(&top)) {
        if !destination.supports_manifest_type(&m.media_type) {
            let index = ManifestKind::from_media_type(&m.media_type).is_some_and(|k| k.is_index());
            return Err(transport::Error::UnsupportedManifest {
                destination: destination.name(),
                media_type: m.media_type.clone(),
                hint: index.then_some("copy a single platform instead of all of them"),
            }
            .into());
        }
    }

    let source_manifest_digest = top.digest.clone();
    let diff_ids = if options.cache.is_some() || options.recompress.is_some() {
        layer_diff_ids(&*source, &options.retry, &plan).await
    } else {
        HashMap::new()
    };
    if let Some(target) = &options.recompress {
        prepare_recompression(&image, target, &top, &*destination, &mut plan)?;
    }

    let tally = Arc::new(Tally::default());
    let rewrites = copy_blobs(&source, &destination, &plan, options, &tally, &diff_ids).await?;
    if let Some(cache) = &options.cache {
        record_layers(cache, &plan, &diff_ids, &rewrites).await;
    }
    let config = match &options.recompress {
        Some(target) if target.format.changes_diff_ids() => {
            let config = plan.layer_sets.first().map(|(config, _)| config.clone());
            match config {
                Some(config) => Some(
                    rewrite_config(&*source, &*destination, options, &config, &rewrites).await?,
                ),
                None => None,
            }
        }
        _ => None,
    };
    let top = if rewrites.is_empty() && config.is_none() {
        top
    } else {
        let target = options.recompress.as_ref().map(|r| r.format);
        rewrite_manifest(&image, &top, &rewrites, target, config.as_ref())?
    };

    for child in &plan.children {
        options
            .progress
            .update(Progress::new(short(&child.digest), "Writing manifest"));
        with_retries(&options.retry, || {
            destination.put_manifest(child.bytes.clone(), &child.media_type, Some(&child.digest))
        })
        .await?;
    }
    options
        .progress
        .update(Progress::new(short(&top.digest), "Writing manifest"));
    with_retries(&options.retry, || {
        destination.put_manifest(top.bytes.clone(), &top.media_type, None)
    })
    .await?;
    destination.commit().await?;

    Ok(CopyReport {
        manifest_digest: top.digest,
        media_type: top.media_type,
        images: plan.images,
        manifests_written: plan.children.len() + 1,
        blobs_copied: tally.copied.load(Ordering::Relaxed),
        blobs_reused: tally.reused.load(Ordering::Relaxed),
        blobs_skipped: plan.skipped,
        bytes_copied: tally.bytes.load(Ordering::Relaxed),
        layers_recompressed: rewrites.len(),
        source_manifest_digest,
    })
}

fn short(digest: &Digest) -> String {
    digest.digest().chars().take(12).collect()
}

/// The manifest kind of `media_type`, refusing schema 1 and unknown types.
fn classify(media_type: &str, image: &str) -> Result<ManifestKind, CopyError> {
    match ManifestKind::from_media_type(media_type) {
        None => Err(CopyError::UnsupportedMediaType {
            image: image.to_owned(),
            media_type: media_type.to_owned(),
        }),
        Some(ManifestKind::Schema1) => Err(CopyError::DeprecatedSchema1 {
            image: image.to_owned(),
        }),
        Some(kind) => Ok(kind),
    }
}

/// Fetches the manifest an index entry names and checks it is what the entry says.
async fn fetch_child(
    source: &dyn ImageSource,
    retry: &RetryPolicy,
    entry: &Descriptor,
) -> Result<ManifestBlob, CopyError> {
    let image = source.name();
    let (bytes, returned_type) =
        with_retries(retry, || source.get_manifest(Some(&entry.digest))).await?;
    let invalid = |reason: String| CopyError::InvalidManifest {
        image: image.clone(),
        digest: entry.digest.to_string(),
        reason,
    };
    let actual = digest_like(&entry.digest, &bytes)?;
    if actual != entry.digest.as_ref() {
        return Err(invalid(format!("its bytes hash to {actual}")));
    }
    if bytes.len() as u64 != entry.size {
        return Err(invalid(format!(
            "it has {} bytes, the index says {}",
            bytes.len(),
            entry.size
        )));
    }
    let media_type = if entry.media_type.is_empty() {
        returned_type
    } else {
        entry.media_type.clone()
    };
    Ok(ManifestBlob {
        bytes,
        media_type,
        digest: entry.digest.clone(),
    })
}

/// Adds every image of index `index` (recursively), children before their index.
fn add_index<'a>(
    source: &'a dyn ImageSource,
    retry: &'a RetryPolicy,
    index: &'a ManifestBlob,
    plan: &'a mut Plan,
    depth: usize,
) -> BoxFuture<'a, Result<(), CopyError>> {
    Box::pin(async move {
        let image = source.name();
        let parsed = parse_index(&image, index, depth)?;
        for entry in &parsed.manifests {
            let child = fetch_child(source, retry, entry).await?;
            let what = format!("{image}@{}", child.digest);
            if classify(&child.media_type, &what)?.is_index() {
                add_index(source, retry, &child, plan, depth + 1).await?;
            } else {
                add_image(&what, &child, plan)?;
            }
            plan.children.push(child);
        }
        Ok(())
    })
}

fn parse_index(
    image: &str,
    index: &ManifestBlob,
    depth: usize,
) -> Result<IndexManifest, CopyError> {
    let invalid = |reason: String| CopyError::InvalidManifest {
        image: image.to_owned(),
        digest: index.digest.to_string(),
        reason,
    };
    if depth >= MAX_INDEX_DEPTH {
        return Err(invalid(format!(
            "indexes nest more than {MAX_INDEX_DEPTH} deep"
        )));
    }
    IndexManifest::parse(&index.bytes).map_err(invalid)
}

/// The image of `index` for `wanted`, descending into nested indexes.
fn choose<'a>(
    source: &'a dyn ImageSource,
    retry: &'a RetryPolicy,
    index: ManifestBlob,
    wanted: &'a Platform,
    depth: usize,
) -> BoxFuture<'a, Result<ManifestBlob, CopyError>> {
    Box::pin(async move {
        let image = source.name();
        let parsed = parse_index(&image, &index, depth)?;
        let platform_of = |d: &Descriptor| d.platform.as_ref().map(|p| p.platform());
        // Exact matches, then older variants this platform runs, then entries without a
        // platform: the same choice a pull makes.
        let platforms: Vec<Option<Platform>> = parsed.manifests.iter().map(platform_of).collect();
        let entry = crate::platform::rank(&platforms, wanted)
            .first()
            .map(|&i| &parsed.manifests[i]);
        let Some(entry) = entry else {
            return Err(CopyError::NoMatchingPlatform {
                image,
                wanted: wanted.clone(),
                available: parsed
                    .manifests
                    .iter()
                    .filter_map(|d| platform_of(d).map(|p| p.short_name()))
                    .collect(),
            });
        };
        let child = fetch_child(source, retry, entry).await?;
        let what = format!("{image}@{}", child.digest);
        if classify(&child.media_type, &what)?.is_index() {
            choose(source, retry, child, wanted, depth + 1).await
        } else {
            Ok(child)
        }
    })
}

/// Adds the config and layers of image manifest `manifest`.
fn add_image(image: &str, manifest: &ManifestBlob, plan: &mut Plan) -> Result<(), CopyError> {
    let parsed =
        ImageManifest::parse(&manifest.bytes).map_err(|reason| CopyError::InvalidManifest {
            image: image.to_owned(),
            digest: manifest.digest.to_string(),
            reason,
        })?;
    plan.images.push(manifest.digest.clone());
    let info_of = |d: &Descriptor| BlobInfo::new(d.digest.clone(), d.size, d.media_type.clone());
    plan.layer_sets.push((
        info_of(&parsed.config),
        parsed.layers.iter().map(info_of).collect(),
    ));
    let config = std::iter::once((&parsed.config, true, None));
    let layers = parsed
        .layers
        .iter()
        .enumerate()
        .map(|(i, l)| (l, false, Some(i)));
    for (descriptor, is_config, layer_index) in config.chain(layers) {
        if descriptor.is_foreign() {
            plan.skipped += 1;
            continue;
        }
        if plan.seen.insert(descriptor.digest.clone()) {
            plan.blobs.push(BlobJob {
                info: BlobInfo::new(
                    descriptor.digest.clone(),
                    descriptor.size,
                    descriptor.media_type.clone(),
                ),
                is_config,
                layer_index,
                recompress: false,
            });
        }
    }
    Ok(())
}

/// A layer written under another digest (recompressed).
#[derive(Debug, Clone)]
struct Rewrite {
    /// The blob written.
    info: BlobInfo,
    /// Its descriptor's annotations (chunked formats).
    annotations: BTreeMap<String, String>,
    /// The source layer's uncompressed digest.
    diff_id: Digest,
    /// The written layer's uncompressed digest (differs for eStargz, which rewrites the tar).
    written_diff_id: Digest,
}

/// An image config's bytes, verified against its digest and bounded in size.
async fn read_config(
    source: &dyn ImageSource,
    retry: &RetryPolicy,
    config: &BlobInfo,
) -> transport::Result<Vec<u8>> {
    with_retries(retry, || {
        Box::pin(async move {
            let (mut stream, _) = source.get_blob(config).await?;
            let mut bytes = Vec::new();
            while let Some(piece) = stream.next().await {
                let piece = piece.map_err(|e| transport::Error::Stream {
                    digest: config.digest.to_string(),
                    source: e,
                })?;
                bytes.extend_from_slice(&piece);
                if bytes.len() as u64 > manifest::CONFIG_LIMIT {
                    return Err(transport::Error::TooLarge {
                        what: "config",
                        digest: config.digest.to_string(),
                        location: source.name(),
                        limit: manifest::CONFIG_LIMIT,
                    });
                }
            }
            transport::stream::verify_bytes("config", &config.digest, &bytes)?;
            Ok(bytes)
        })
    })
    .await
}

/// Writes the image config with the DiffIDs of the layers written (eStargz rewrites the tars):
/// every `rootfs.diff_ids` entry a rewritten layer had is replaced by the written layer's. Other
/// fields are kept (re-serialised, so the config gets a new digest). Returns the config written.
async fn rewrite_config(
    source: &dyn ImageSource,
    destination: &dyn ImageDestination,
    options: &CopyOptions,
    config: &BlobInfo,
    rewrites: &HashMap<Digest, Rewrite>,
) -> Result<BlobInfo, CopyError> {
    let image = source.name();
    let bytes = read_config(source, &options.retry, config).await?;
    let invalid = |reason: String| CopyError::InvalidManifest {
        image: image.clone(),
        digest: config.digest.to_string(),
        reason,
    };
    let mut doc: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| invalid(format!("config: {e}")))?;
    let renamed: HashMap<String, String> = rewrites
        .values()
        .filter(|r| r.written_diff_id != r.diff_id)
        .map(|r| (r.diff_id.to_string(), r.written_diff_id.to_string()))
        .collect();
    let diff_ids = doc
        .get_mut("rootfs")
        .and_then(|r| r.get_mut("diff_ids"))
        .and_then(|d| d.as_array_mut())
        .ok_or_else(|| invalid("the config has no rootfs.diff_ids".into()))?;
    let mut changed = 0usize;
    for entry in diff_ids.iter_mut() {
        if let Some(new) = entry.as_str().and_then(|old| renamed.get(old)) {
            *entry = new.clone().into();
            changed += 1;
        }
    }
    if changed < renamed.len() {
        return Err(invalid(
            "a rewritten layer's DiffID is not in the config's rootfs.diff_ids".into(),
        ));
    }
    let new_bytes = if changed == 0 {
        bytes
    } else {
        serde_json::to_vec(&doc).map_err(|e| invalid(format!("config: {e}")))?
    };
    let info = BlobInfo::new(
        hoist_registry::digest::sha256_of(&new_bytes),
        new_bytes.len() as u64,
        config.media_type.clone(),
    );
    let reuse = ReuseOptions {
        is_config: true,
        cache: options.cache.clone(),
        ..ReuseOptions::default()
    };
    if destination.try_reusing_blob(&info, &reuse).await?.is_some() {
        return Ok(info);
    }
    let put = PutOptions {
        cache: options.cache.clone(),
        is_config: true,
        empty_layer: false,
        layer_index: None,
    };
    let data = Bytes::from(new_bytes);
    with_retries(&options.retry, || {
        let stream: ByteStream = Box::pin(futures_util::stream::once(std::future::ready(Ok(
            data.clone()
        ))));
        let info = &info;
        let put = &put;
        Box::pin(async move { destination.put_blob(stream, info, put).await })
    })
    .await?;
    Ok(info)
}

/// Layer digest -> DiffID, from the configs of the images planned (what cannot be read is left
/// out: the DiffIDs only add checks and cache entries).
async fn layer_diff_ids(
    source: &dyn ImageSource,
    retry: &RetryPolicy,
    plan: &Plan,
) -> HashMap<Digest, Digest> {
    let mut out = HashMap::new();
    for (config, layers) in &plan.layer_sets {
        let read = read_config(source, retry, config).await;
        let bytes = match read {
            Ok(b) => b,
            Err(e) => {
                tracing::debug!(config = %config.digest, error = %e, "config unreadable; DiffIDs unknown");
                continue;
            }
        };
        #[derive(serde::Deserialize)]
        struct RootFs {
            #[serde(default)]
            diff_ids: Vec<Digest>,
        }
        #[derive(serde::Deserialize)]
        struct Config {
            rootfs: Option<RootFs>,
        }
        let diff_ids = serde_json::from_slice::<Config>(&bytes)
            .ok()
            .and_then(|c| c.rootfs)
            .map(|r| r.diff_ids)
            .unwrap_or_default();
        // Foreign layers count in the DiffIDs too; only a full list lines up.
        if diff_ids.len() == layers.len() {
            for (layer, diff_id) in layers.iter().zip(diff_ids) {
                out.insert(layer.digest.clone(), diff_id);
            }
        }
    }
    out
}

/// Checks that `target` can be done for the image and marks the layers to recompress.
fn prepare_recompression(
    image: &str,
    target: &Recompression,
    top: &ManifestBlob,
    destination: &dyn ImageDestination,
    plan: &mut Plan,
) -> Result<(), CopyError> {
    let refuse = |reason: String| CopyError::Recompress {
        image: image.to_owned(),
        reason,
    };
    target.check().map_err(refuse)?;
    if !plan.children.is_empty() {
        return Err(refuse(
            "recompressing every image of an index is not supported; copy one platform".into(),
        ));
    }
    let docker = manifest::base_media_type(&top.media_type) == manifest::DOCKER_MANIFEST;
    if docker
        && target.format.layer_media_type(true).is_none()
        && !destination.supports_manifest_type(manifest::OCI_MANIFEST)
    {
        return Err(refuse(format!(
            "{} layers need an OCI manifest, which {} does not store",
            target.format,
            destination.name()
        )));
    }
    for job in &mut plan.blobs {
        if job.is_config {
            continue;
        }
        if let Some(current) = Compression::from_media_type(&job.info.media_type) {
            job.recompress = target.format.is_chunked() || current != target.format.stream();
        }
    }
    if target.format.changes_diff_ids() {
        // The config names the layers' DiffIDs: it is written after them (`rewrite_config`).
        plan.blobs.retain(|job| !job.is_config);
    }
    Ok(())
}

/// Records in the blob info cache each layer's DiffID and compressor, for the layers copied and
/// the ones written recompressed.
async fn record_layers(
    cache: &Store,
    plan: &Plan,
    diff_ids: &HashMap<Digest, Digest>,
    rewrites: &HashMap<Digest, Rewrite>,
) {
    let mut entries: Vec<(Digest, Option<Digest>, Option<hoist_store::Compression>)> = Vec::new();
    for (_, layers) in &plan.layer_sets {
        for layer in layers {
            let compression =
                Compression::from_media_type(&layer.media_type).map(Compression::store_name);
            entries.push((
                layer.digest.clone(),
                diff_ids.get(&layer.digest).cloned(),
                compression,
            ));
        }
    }
    for rewrite in rewrites.values() {
        let compression =
            Compression::from_media_type(&rewrite.info.media_type).map(Compression::store_name);
        entries.push((
            rewrite.info.digest.clone(),
            Some(rewrite.written_diff_id.clone()),
            compression,
        ));
    }
    let cache = cache.clone();
    let result = transport::stream::blocking("record layers in the blob info cache", move || {
        let md = cache.metadata();
        let err = |e| transport::Error::store("record layers in the blob info cache", e);
        for (digest, diff_id, compression) in entries {
            if let Some(diff_id) = diff_id {
                md.record_diff_id(&digest, &diff_id).map_err(err)?;
            }
            if let Some(c) = compression {
                md.record_compression(&digest, &c).map_err(err)?;
            }
        }
        Ok(())
    })
    .await;
    if let Err(e) = result {
        tracing::debug!(error = %e, "could not record layers in the blob info cache");
    }
}

/// Annotations that describe one encoding of a layer (tables of contents of chunked formats),
/// dropped when the layer is written another way.
const ENCODING_ANNOTATIONS: &[&str] = &[
    "io.github.containers.zstd-chunked.",
    "io.containers.zstd-chunked.",
    "containerd.io/snapshot/stargz/",
    "io.containers.estargz.",
];

/// The image manifest `top` with its recompressed layers' descriptors replaced. A Docker
/// manifest whose layers become zstd becomes an OCI manifest (Docker's has no zstd type).
fn rewrite_manifest(
    image: &str,
    top: &ManifestBlob,
    rewrites: &HashMap<Digest, Rewrite>,
    target: Option<LayerCompression>,
    config: Option<&BlobInfo>,
) -> Result<ManifestBlob, CopyError> {
    let invalid = |reason: String| CopyError::InvalidManifest {
        image: image.to_owned(),
        digest: top.digest.to_string(),
        reason,
    };
    let mut doc: serde_json::Value =
        serde_json::from_slice(&top.bytes).map_err(|e| invalid(e.to_string()))?;
    let docker = manifest::base_media_type(&top.media_type) == manifest::DOCKER_MANIFEST;
    let to_oci = docker && target.is_some_and(|t| t.layer_media_type(true).is_none());
    let layers = doc
        .get_mut("layers")
        .and_then(|l| l.as_array_mut())
        .ok_or_else(|| invalid("no layers".into()))?;
    for layer in layers.iter_mut() {
        let Some(obj) = layer.as_object_mut() else {
            continue;
        };
        let digest = obj
            .get("digest")
            .and_then(|d| d.as_str())
            .and_then(|d| Digest::try_from(d).ok());
        if let Some(rewrite) = digest.and_then(|d| rewrites.get(&d)) {
            obj.insert("digest".into(), rewrite.info.digest.to_string().into());
            obj.insert("size".into(), rewrite.info.size.into());
            obj.insert("mediaType".into(), rewrite.info.media_type.clone().into());
            let mut annotations: serde_json::Map<String, serde_json::Value> = obj
                .get("annotations")
                .and_then(|a| a.as_object())
                .cloned()
                .unwrap_or_default();
            annotations.retain(|k, _| !ENCODING_ANNOTATIONS.iter().any(|p| k.starts_with(p)));
            for (k, v) in &rewrite.annotations {
                annotations.insert(k.clone(), v.clone().into());
            }
            if annotations.is_empty() {
                obj.remove("annotations");
            } else {
                obj.insert("annotations".into(), annotations.into());
            }
        } else if to_oci && let Some(m) = obj.get("mediaType").and_then(|m| m.as_str()) {
            let oci = manifest::oci_layer_type_for_docker(m);
            obj.insert("mediaType".into(), oci.into());
        }
    }
    if let Some(config) = config
        && let Some(obj) = doc.get_mut("config").and_then(|c| c.as_object_mut())
    {
        obj.insert("digest".into(), config.digest.to_string().into());
        obj.insert("size".into(), config.size.into());
    }
    let media_type = if to_oci {
        doc["mediaType"] = manifest::OCI_MANIFEST.into();
        if let Some(config) = doc.get_mut("config").and_then(|c| c.as_object_mut()) {
            config.insert("mediaType".into(), manifest::OCI_CONFIG.into());
        }
        manifest::OCI_MANIFEST.to_owned()
    } else {
        top.media_type.clone()
    };
    let bytes = serde_json::to_vec_pretty(&doc).map_err(|e| invalid(e.to_string()))?;
    Ok(ManifestBlob {
        digest: hoist_registry::digest::sha256_of(&bytes),
        bytes: Bytes::from(bytes),
        media_type,
    })
}

/// Counts what the blob copies did.
#[derive(Debug, Default)]
struct Tally {
    copied: AtomicUsize,
    reused: AtomicUsize,
    bytes: AtomicU64,
}

/// One blob copy, as a transfer of the engine runs it.
struct BlobCopy {
    source: Arc<dyn ImageSource>,
    destination: Arc<dyn ImageDestination>,
    job: BlobJob,
    source_location: Option<RegistryLocation>,
    cache: Option<Store>,
    tally: Arc<Tally>,
    /// How to recompress this layer, when it is to be.
    recompress: Option<Recompression>,
    /// The layer's DiffID, when the config says.
    diff_id: Option<Digest>,
    /// Layers written under another digest, by source digest.
    rewrites: Arc<std::sync::Mutex<HashMap<Digest, Rewrite>>>,
}

/// Why a blob copy failed, shared by every watcher of its transfer.
#[derive(Debug, Clone)]
struct BlobFailure {
    attempts: u32,
    retryable: bool,
    source: SharedError,
}

impl BlobCopy {
    fn id(&self) -> String {
        self.job.info.short_id()
    }

    /// One attempt: reuse when the destination can, else stream the blob across.
    async fn attempt(&self, ctx: &TransferContext) -> transport::Result<BlobInfo> {
        if let Some(target) = &self.recompress {
            return self.attempt_recompressed(ctx, target).await;
        }
        let info = &self.job.info;
        let reuse = ReuseOptions {
            can_substitute: false,
            source: self.source_location.clone(),
            cache: self.cache.clone(),
            is_config: self.job.is_config,
            empty_layer: false,
            layer_index: self.job.layer_index,
        };
        if let Some(found) = self.destination.try_reusing_blob(info, &reuse).await? {
            self.tally.reused.fetch_add(1, Ordering::Relaxed);
            self.record(&found.digest).await;
            ctx.progress(Progress::new(self.id(), "Already exists"));
            return Ok(found);
        }
        if ctx.is_cancelled() {
            return Err(transport::Error::Stream {
                digest: info.digest.to_string(),
                source: std::io::Error::other("copy cancelled"),
            });
        }
        ctx.progress(Progress::new(self.id(), "Copying").with_bytes(0, Some(info.size)));
        let (stream, _) = self.source.get_blob(info).await?;
        let put = PutOptions {
            cache: self.cache.clone(),
            is_config: self.job.is_config,
            empty_layer: false,
            layer_index: self.job.layer_index,
        };
        let stream = cancellable(
            reporting(stream, ctx.clone(), self.id(), info.size),
            ctx.cancellation_token().clone(),
        );
        let stored = self.destination.put_blob(stream, info, &put).await?;
        self.tally.copied.fetch_add(1, Ordering::Relaxed);
        self.tally.bytes.fetch_add(info.size, Ordering::Relaxed);
        self.record(&info.digest).await;
        ctx.progress(Progress::new(self.id(), "Copied").with_bytes(info.size, Some(info.size)));
        Ok(stored)
    }

    /// One attempt at a layer recompressed on the way: read, verify, decompress, compress again
    /// into a temporary file, then write that (or find the destination has it already).
    async fn attempt_recompressed(
        &self,
        ctx: &TransferContext,
        target: &Recompression,
    ) -> transport::Result<BlobInfo> {
        let info = &self.job.info;
        if let Some(found) = self.substitute(target).await? {
            self.tally.reused.fetch_add(1, Ordering::Relaxed);
            ctx.progress(Progress::new(self.id(), "Already exists"));
            return Ok(found);
        }
        ctx.progress(Progress::new(self.id(), "Recompressing").with_bytes(0, Some(info.size)));
        let (stream, _) = self.source.get_blob(info).await?;
        let stream = cancellable(
            reporting(stream, ctx.clone(), self.id(), info.size),
            ctx.cancellation_token().clone(),
        );
        let done = recompress::recompress(stream, info, self.diff_id.as_ref(), target).await?;
        self.record(&info.digest).await;
        let reuse = ReuseOptions {
            can_substitute: false,
            source: None,
            cache: self.cache.clone(),
            is_config: false,
            empty_layer: false,
            layer_index: self.job.layer_index,
        };
        let stored = match self
            .destination
            .try_reusing_blob(&done.info, &reuse)
            .await?
        {
            Some(found) => {
                self.tally.reused.fetch_add(1, Ordering::Relaxed);
                ctx.progress(Progress::new(self.id(), "Already exists"));
                found
            }
            None => {
                let put = PutOptions {
                    cache: self.cache.clone(),
                    is_config: false,
                    empty_layer: false,
                    layer_index: self.job.layer_index,
                };
                let stream = cancellable(done.stream()?, ctx.cancellation_token().clone());
                let stored = self.destination.put_blob(stream, &done.info, &put).await?;
                self.tally.copied.fetch_add(1, Ordering::Relaxed);
                self.tally
                    .bytes
                    .fetch_add(done.info.size, Ordering::Relaxed);
                ctx.progress(
                    Progress::new(self.id(), format!("Recompressed ({})", target.format))
                        .with_bytes(info.size, Some(info.size)),
                );
                stored
            }
        };
        self.rewrites
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                info.digest.clone(),
                Rewrite {
                    info: done.info.clone(),
                    annotations: done.annotations.clone(),
                    diff_id: done.diff_id.clone(),
                    written_diff_id: done.written_diff_id.clone(),
                },
            );
        Ok(stored)
    }

    /// The layer as `target` would write it, when the blob info cache knows such a blob (the
    /// same DiffID, compressed that way) and the destination has it or can mount it. Chunked
    /// formats are always written (their annotations are not in the cache).
    async fn substitute(&self, target: &Recompression) -> transport::Result<Option<BlobInfo>> {
        let (Some(_), Some(diff_id)) = (&self.cache, &self.diff_id) else {
            return Ok(None);
        };
        if target.format.is_chunked() {
            return Ok(None);
        }
        let info = &self.job.info;
        let reuse = ReuseOptions {
            can_substitute: true,
            source: None,
            cache: self.cache.clone(),
            is_config: false,
            empty_layer: false,
            layer_index: self.job.layer_index,
        };
        let Some(found) = self.destination.try_reusing_blob(info, &reuse).await? else {
            return Ok(None);
        };
        let wanted = Some(target.format.stream());
        if found.digest == info.digest || Compression::from_media_type(&found.media_type) != wanted
        {
            return Ok(None);
        }
        self.rewrites
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                info.digest.clone(),
                Rewrite {
                    info: found.clone(),
                    annotations: BTreeMap::new(),
                    diff_id: diff_id.clone(),
                    written_diff_id: diff_id.clone(),
                },
            );
        Ok(Some(found))
    }

    /// Records in the blob info cache that the source repository holds the blob (destinations
    /// record where they put it themselves).
    async fn record(&self, digest: &Digest) {
        if let (Some(cache), Some(location)) = (&self.cache, &self.source_location) {
            transport::record_location(cache, digest, location).await;
        }
    }
}

/// The longest `Retry-After` a registry may ask for before the copy gives up instead.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(120);

/// Runs attempts until one succeeds, the error is permanent, the policy's attempts run out, or
/// the transfer is cancelled. Between attempts it counts down in progress (`Retrying in 3s`,
/// with the cause), without holding a concurrency slot.
async fn run_blob(
    job: Arc<BlobCopy>,
    policy: RetryPolicy,
    ctx: TransferContext,
) -> Result<BlobInfo, TransferError<BlobFailure>> {
    let id = job.id();
    let max_attempts = policy.max_attempts().max(1);
    let mut attempt = 1;
    loop {
        // The attempt is not dropped on cancellation: its stream fails instead (see
        // `cancellable`), so that the destination removes what it wrote before this returns.
        let err = match job.attempt(&ctx).await {
            Ok(stored) => return Ok(stored),
            Err(_) if ctx.is_cancelled() => return Err(TransferError::Cancelled),
            Err(e) => e,
        };
        let delay = if err.is_retryable() && attempt < max_attempts {
            match policy.classify(&err) {
                RetryDecision::DoNotRetry => None,
                RetryDecision::RetryAfter(d) => Some(d),
                _ => Some(err.retry_after().map_or_else(
                    || policy.backoff(attempt),
                    |d| d.max(policy.backoff(attempt)),
                )),
            }
            .filter(|d| *d <= MAX_RETRY_AFTER)
        } else {
            None
        };
        let Some(delay) = delay else {
            tracing::debug!(blob = %job.job.info.digest, attempt, error = %err, "giving up");
            return Err(TransferError::Failed(BlobFailure {
                attempts: attempt,
                retryable: err.is_retryable(),
                source: Arc::new(err),
            }));
        };
        let cause = hoist_xfer::describe(&err);
        tracing::debug!(blob = %job.job.info.digest, attempt, ?delay, error = %cause, "retrying");
        if !ctx.inactive(count_down(&ctx, &id, delay, &cause)).await || ctx.is_cancelled() {
            return Err(TransferError::Cancelled);
        }
        attempt += 1;
    }
}

/// Waits `delay`, publishing the whole seconds left once a second. `false` if cancelled.
async fn count_down(ctx: &TransferContext, id: &str, delay: Duration, cause: &str) -> bool {
    let deadline = tokio::time::Instant::now() + delay;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            return true;
        }
        let seconds = left.as_secs() + u64::from(left.subsec_nanos() > 0);
        ctx.progress(Progress::new(id, format!("Retrying in {seconds}s")).with_message(cause));
        let next = deadline - Duration::from_secs(seconds - 1);
        tokio::select! {
            biased;
            () = ctx.cancelled() => return false,
            () = tokio::time::sleep_until(next) => {}
        }
    }
}

/// Ends `stream` with an error as soon as `token` fires, so that a destination writing it fails
/// and cleans up (rather than being dropped mid-write).
fn cancellable(stream: ByteStream, token: CancellationToken) -> ByteStream {
    Box::pin(futures_util::stream::unfold(
        (stream, token, false),
        |(mut stream, token, ended)| async move {
            if ended {
                return None;
            }
            tokio::select! {
                biased;
                () = token.cancelled() => Some((
                    Err(std::io::Error::other("copy cancelled")),
                    (stream, token, true),
                )),
                item = stream.next() => item.map(|i| (i, (stream, token, false))),
            }
        },
    ))
}

/// Reports bytes as they pass, every 256 KiB.
fn reporting(stream: ByteStream, ctx: TransferContext, id: String, total: u64) -> ByteStream {
    const STEP: u64 = 256 << 10;
    let mut done = 0u64;
    let mut reported = 0u64;
    Box::pin(stream.map(move |item| {
        if let Ok(chunk) = &item {
            done += chunk.len() as u64;
            if done - reported >= STEP {
                reported = done;
                ctx.progress(Progress::new(id.clone(), "Copying").with_bytes(done, Some(total)));
            }
        }
        item
    }))
}

/// Copies every planned blob, each once, at most `options.concurrency` at a time. The first
/// failure cancels the other copies; the call returns once they have stopped.
async fn copy_blobs(
    source: &Arc<dyn ImageSource>,
    destination: &Arc<dyn ImageDestination>,
    plan: &Plan,
    options: &CopyOptions,
    tally: &Arc<Tally>,
    diff_ids: &HashMap<Digest, Digest>,
) -> Result<HashMap<Digest, Rewrite>, CopyError> {
    let rewrites = Arc::new(std::sync::Mutex::new(HashMap::new()));
    let manager: TransferManager<BlobInfo, BlobFailure> = TransferManager::new(options.concurrency);
    let source_location = source.registry_location();
    let destination_name = destination.name();
    let entries: Vec<_> = plan
        .blobs
        .iter()
        .map(|job| {
            let copy = Arc::new(BlobCopy {
                source: source.clone(),
                destination: destination.clone(),
                job: job.clone(),
                source_location: source_location.clone(),
                cache: options.cache.clone(),
                tally: tally.clone(),
                recompress: options.recompress.clone().filter(|_| job.recompress),
                diff_id: diff_ids.get(&job.info.digest).cloned(),
                rewrites: rewrites.clone(),
            });
            let policy = options.retry.clone();
            let key = format!("{destination_name}|{}", job.info.digest);
            let (transfer, watcher) = manager.transfer(
                key,
                move |ctx| {
                    ctx.set_waiting_progress(Progress::new(copy.id(), "Waiting"));
                    run_blob(copy, policy, ctx)
                },
                Some(options.progress.clone()),
            );
            (job.info.digest.to_string(), transfer, watcher)
        })
        .collect();
    let outcome = try_join_all(entries.iter().map(|(digest, _, watcher)| async move {
        watcher.wait().await.map_err(|e| match e {
            TransferError::Cancelled => CopyError::Cancelled,
            TransferError::Failed(f) => CopyError::Blob {
                digest: digest.clone(),
                attempts: f.attempts,
                retryable: f.retryable,
                source: f.source,
            },
            TransferError::Panicked { message } => CopyError::Internal { message },
            other => CopyError::Internal {
                message: format!("{other:?}"),
            },
        })
    }))
    .await;
    if let Err(e) = outcome {
        // Cancel the other copies and wait until they have cleaned up after themselves.
        let transfers: Vec<_> = entries
            .into_iter()
            .map(|(_, transfer, watcher)| {
                drop(watcher);
                transfer
            })
            .collect();
        join_all(transfers.iter().map(|t| t.done())).await;
        return Err(e);
    }
    let rewrites = std::mem::take(&mut *rewrites.lock().unwrap_or_else(|p| p.into_inner()));
    Ok(rewrites)
}

/// Runs a manifest transfer, retrying transient failures per `policy`.
async fn with_retries<'a, T, F>(policy: &RetryPolicy, op: F) -> Result<T, transport::Error>
where
    F: FnMut() -> BoxFuture<'a, transport::Result<T>>,
{
    crate::retrying::retrying(policy, "copy request", op).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema1_and_unknown_types_are_typed_errors() {
        assert!(matches!(
            classify(hoist_registry::manifest::DOCKER_SCHEMA1_SIGNED, "x"),
            Err(CopyError::DeprecatedSchema1 { .. })
        ));
        assert!(matches!(
            classify("application/json", "x"),
            Err(CopyError::UnsupportedMediaType { .. })
        ));
        assert!(
            classify(transport::manifest::OCI_INDEX, "x")
                .unwrap()
                .is_index()
        );
    }

    #[test]
    fn blobs_shared_by_images_are_planned_once_and_foreign_layers_skipped() {
        let d = |c: char| format!("sha256:{}", c.to_string().repeat(64));
        let manifest = |config: char, layers: &[char]| {
            let layers: Vec<_> = layers
                .iter()
                .map(|l| serde_json::json!({"mediaType": transport::manifest::OCI_LAYER_GZIP, "digest": d(*l), "size": 3}))
                .collect();
            let bytes = serde_json::to_vec(&serde_json::json!({
                "schemaVersion": 2,
                "config": {"mediaType": transport::manifest::OCI_CONFIG, "digest": d(config), "size": 2},
                "layers": layers,
            }))
            .unwrap();
            ManifestBlob {
                digest: hoist_registry::digest::sha256_of(&bytes),
                bytes: Bytes::from(bytes),
                media_type: transport::manifest::OCI_MANIFEST.into(),
            }
        };
        let mut plan = Plan::default();
        add_image("x", &manifest('a', &['b', 'c']), &mut plan).unwrap();
        add_image("x", &manifest('d', &['b', 'e']), &mut plan).unwrap();
        let digests: Vec<String> = plan
            .blobs
            .iter()
            .map(|j| j.info.digest.to_string())
            .collect();
        assert_eq!(digests, vec![d('a'), d('b'), d('c'), d('d'), d('e')]);
        assert!(plan.blobs[0].is_config && !plan.blobs[1].is_config);
        assert_eq!(plan.blobs[2].layer_index, Some(1));

        let foreign = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "config": {"mediaType": transport::manifest::DOCKER_CONFIG, "digest": d('f'), "size": 2},
            "layers": [{"mediaType": transport::manifest::DOCKER_LAYER_FOREIGN, "digest": d('0'), "size": 9,
                        "urls": ["https://example.invalid/layer"]}],
        }))
        .unwrap();
        let m = ManifestBlob {
            digest: hoist_registry::digest::sha256_of(&foreign),
            bytes: Bytes::from(foreign),
            media_type: transport::manifest::DOCKER_MANIFEST.into(),
        };
        let mut plan = Plan::default();
        add_image("x", &m, &mut plan).unwrap();
        assert_eq!(plan.blobs.len(), 1);
        assert_eq!(plan.skipped, 1);
    }

    #[test]
    fn copy_error_exposes_the_transport_error_behind_a_blob_failure() {
        let inner = transport::Error::BlobNotFound {
            location: "oci:/x".into(),
            digest: "sha256:00".into(),
        };
        let shared: SharedError = Arc::new(inner);
        let err = CopyError::Blob {
            digest: "sha256:00".into(),
            attempts: 1,
            retryable: false,
            source: shared,
        };
        assert!(matches!(
            err.transport_error(),
            Some(transport::Error::BlobNotFound { .. })
        ));
        assert!(err.to_string().contains("not found"), "{err}");
    }
}
