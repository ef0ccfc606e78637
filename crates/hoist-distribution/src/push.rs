//! Pushing images from the local store to a registry.
//!
//! [`push`] sends an image the way it is stored, so that its digest is preserved: every layer
//! through the [`hoist_xfer::LayerUploadManager`], then the config, then the manifest (bytes as
//! stored) under the tag. Mirrors are never used. Each layer is, in order of preference:
//! - skipped when the registry already has the blob (`HEAD`): "Layer already exists";
//! - mounted from another repository of the same registry where hoist saw the blob before
//!   (pulled from or pushed to it): "Mounted from REPO";
//! - uploaded from the content store, streamed in chunked `PATCH`es; a failed attempt resumes
//!   from the offset the registry reports.
//!
//! The config and manifest are sent only when the registry lacks them, so pushing an image a
//! second time sends nothing but `HEAD` requests. After a successful push the target repository
//! is recorded as a source of every blob, for later mounts.
//!
//! A reference naming an index is pushed whole when every image it lists is in the store;
//! otherwise only the image for [`crate::PushConfig::platform`] is pushed, under the tag.

use std::collections::HashMap;
use std::io::{self, Read};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use bytes::Bytes;
use hoist_registry::{ByteStream, ImageRef, ManifestKind, MountResult, Repository, UploadSession};
use hoist_store::{Digest, Store};
use hoist_xfer::{
    BoxError, Progress, ProgressOutput, RetryPolicy, SharedProgress, UploadContext,
    UploadDescriptor,
};
use tokio::sync::mpsc;

use crate::blocking::blocking;
use crate::config::{EventAction, ImageEvent, PushConfig};
use crate::endpoint::push_repository;
use crate::error::{Error, Result};
use crate::fetch::short_id;
use crate::layers::lock;
use crate::manifest::{self, BlobRef, ImageManifest, Parsed};
use crate::pull::MAX_CONFIG_SIZE;
use crate::retrying::retrying;

/// Largest manifest read from the store.
const MAX_MANIFEST_SIZE: u64 = 4 << 20;
/// Mount sources tried per blob.
const MAX_MOUNT_ATTEMPTS: usize = 3;
/// Bytes read from the store per chunk of an upload body.
const READ_CHUNK: usize = 256 << 10;

/// How a blob came to be in the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PushOutcome {
    /// The registry already had it.
    Exists,
    /// It was mounted from another repository of the registry.
    Mounted {
        /// The repository it was mounted from.
        from: String,
    },
    /// It was uploaded.
    Uploaded,
    /// It was not uploaded: a non-distributable layer, which the manifest points to by its
    /// `urls` ([`crate::PushConfig::push_foreign_layers`] is off).
    Foreign,
}

/// A blob in the registry after a push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushedBlob {
    /// Its digest.
    pub digest: Digest,
    /// Its size.
    pub size: u64,
    /// How it got there.
    pub outcome: PushOutcome,
}

/// What a push did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PushResult {
    /// The reference pushed (`registry/repository:tag`).
    pub reference: String,
    /// The digest of the manifest (or index) the tag now names.
    pub digest: Digest,
    /// The layers pushed, base first (of every image, for an index).
    pub layers: Vec<PushedBlob>,
}

/// Rewrites the engine's final "Pushed" for layers that were not uploaded into what happened
/// ("Layer already exists", "Mounted from X").
pub(crate) struct PushProgress {
    inner: SharedProgress,
    finals: Arc<Mutex<HashMap<String, String>>>,
}

impl ProgressOutput for PushProgress {
    fn update(&self, mut progress: Progress) {
        if progress.action == "Pushed"
            && let Some(action) = lock(&self.finals).get(&progress.id)
        {
            progress.action = action.clone();
        }
        self.inner.update(progress);
    }
}

/// What the layer uploads of one push share.
struct PushContext {
    repo: Repository,
    /// For blobs a partial pull left out: fetched from where they came from before uploading.
    client: hoist_registry::RegistryClient,
    store: Store,
    registry: String,
    chunk_size: u64,
    finals: Arc<Mutex<HashMap<String, String>>>,
}

/// One layer to push.
struct LayerUpload {
    cx: Arc<PushContext>,
    blob: BlobRef,
    diff_id: Digest,
    session: Mutex<Option<UploadSession>>,
    remote: Mutex<Option<PushedBlob>>,
}

impl LayerUpload {
    fn finish_as(&self, action: String) {
        lock(&self.cx.finals).insert(short_id(&self.blob.digest), action);
    }

    async fn try_mount(&self) -> Option<String> {
        let store = self.cx.store.clone();
        let digest = self.blob.digest.clone();
        let registry = self.cx.registry.clone();
        let locations = blocking(move || store.metadata().locations(&digest, Some(&registry)))
            .await
            .ok()?
            .ok()?;
        let own = self.cx.repo.name().to_owned();
        let sources = locations
            .into_iter()
            .filter(|l| l.repository != own)
            .take(MAX_MOUNT_ATTEMPTS);
        for source in sources {
            match self
                .cx
                .repo
                .mount_blob(&self.blob.digest, &source.repository)
                .await
            {
                Ok(MountResult::Mounted) => return Some(source.repository),
                Ok(MountResult::NotMounted(session)) => {
                    let _ = session.cancel().await;
                    self.forget_location(&source.repository).await;
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(from = %source.repository, error = %e, "mount refused");
                    if e.is_not_found() {
                        self.forget_location(&source.repository).await;
                    }
                }
            }
        }
        None
    }

    async fn forget_location(&self, repository: &str) {
        let store = self.cx.store.clone();
        let digest = self.blob.digest.clone();
        let registry = self.cx.registry.clone();
        let repository = repository.to_owned();
        let _ = blocking(move || {
            store
                .metadata()
                .remove_location(&digest, &registry, &repository)
        })
        .await;
    }

    /// Uploads the blob in chunks, resuming a session kept from the previous attempt.
    async fn upload_blob(&self, ctx: &UploadContext) -> Result<()> {
        let digest = &self.blob.digest;
        let size = self.blob.size;
        let reg = |e| Error::registry(format!("uploading blob {digest}"), e);
        if crate::absent::is_absent(&self.cx.store, digest).await? {
            ctx.progress().update(
                Progress::new(ctx.id(), "Preparing")
                    .with_message("fetching the blob a partial pull left out".to_owned()),
            );
            crate::absent::fetch_absent_blob(&self.cx.client, &self.cx.store, digest).await?;
        }
        let kept = lock(&self.session).take();
        let mut session = match kept {
            Some(mut s) => match s.refresh().await {
                Ok(offset) if offset <= size => s,
                Ok(_) | Err(_) => {
                    let _ = s.cancel().await;
                    self.cx.repo.start_upload().await.map_err(reg)?
                }
            },
            None => self.cx.repo.start_upload().await.map_err(reg)?,
        };
        ctx.report("Pushing", session.offset(), Some(size));
        while session.offset() < size {
            let offset = session.offset();
            let len = self.cx.chunk_size.min(size - offset);
            let body = section_stream(self.cx.store.clone(), digest.clone(), offset, len);
            if let Err(e) = session.patch(body, len).await {
                *lock(&self.session) = Some(session);
                return Err(reg(e));
            }
            ctx.report("Pushing", session.offset(), Some(size));
        }
        session.finish(digest, None).await.map_err(reg)
    }
}

/// Streams `len` bytes of stored blob `digest` from `offset`, read on a blocking thread.
fn section_stream(store: Store, digest: Digest, offset: u64, len: u64) -> ByteStream {
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(4);
    tokio::task::spawn_blocking(move || {
        let reader = match store.content().reader_at(&digest) {
            Ok(r) => r,
            Err(e) => {
                let _ = tx.blocking_send(Err(io::Error::other(e)));
                return;
            }
        };
        let mut section = reader.section(offset, len);
        loop {
            let mut buf = vec![0u8; READ_CHUNK];
            match section.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    buf.truncate(n);
                    if tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            }
        }
    });
    Box::pin(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }))
}

impl UploadDescriptor for LayerUpload {
    type Remote = PushedBlob;

    fn key(&self) -> String {
        // Repository + DiffID, as layers are identified; with the blob, since hoist pushes the
        // stored blob itself and the same content may be stored compressed in two ways.
        format!(
            "{}/{}@{}/{}",
            self.cx.registry,
            self.cx.repo.name(),
            self.diff_id,
            self.blob.digest
        )
    }

    fn id(&self) -> String {
        short_id(&self.blob.digest)
    }

    async fn upload(&self, ctx: UploadContext) -> std::result::Result<PushedBlob, BoxError> {
        let digest = self.blob.digest.clone();
        let pushed = |outcome| PushedBlob {
            digest: digest.clone(),
            size: self.blob.size,
            outcome,
        };
        let exists = self
            .cx
            .repo
            .head_blob(&digest)
            .await
            .map_err(|e| Error::registry(format!("checking blob {digest}"), e))?;
        if exists.is_some() {
            self.finish_as("Layer already exists".into());
            return Ok(pushed(PushOutcome::Exists));
        }
        if let Some(from) = self.try_mount().await {
            self.finish_as(format!("Mounted from {from}"));
            return Ok(pushed(PushOutcome::Mounted { from }));
        }
        self.upload_blob(&ctx).await?;
        Ok(pushed(PushOutcome::Uploaded))
    }

    fn set_remote_descriptor(&self, remote: PushedBlob) {
        *lock(&self.remote) = Some(remote);
    }
}

/// Reads a small stored blob.
async fn read_blob(store: &Store, digest: &Digest, limit: u64, reference: &str) -> Result<Vec<u8>> {
    let store = store.clone();
    let d = digest.clone();
    blocking(move || store.content().read_verified(&d, limit))
        .await?
        .map_err(|e| {
            if e.is_not_found() {
                Error::MissingBlob {
                    reference: reference.to_owned(),
                    digest: digest.clone(),
                }
            } else {
                Error::store(format!("reading blob {digest}"), e)
            }
        })
}

/// Whether an image manifest, its config and all its distributable layers are in the store.
async fn image_complete(store: &Store, digest: &Digest, media_type: &str) -> bool {
    let Ok(bytes) = read_blob(store, digest, MAX_MANIFEST_SIZE, "").await else {
        return false;
    };
    let Ok(Parsed::Image(image)) = manifest::parse(
        media_type,
        digest,
        &bytes,
        "",
        &manifest::default_config_types(),
    ) else {
        return false;
    };
    let store = store.clone();
    blocking(move || {
        std::iter::once(&image.config)
            .chain(image.layers.iter().map(|l| &l.blob))
            .all(|b| store.content().contains(&b.digest).unwrap_or(false))
    })
    .await
    .unwrap_or(false)
}

/// Pushes the image stored under `reference` to its registry.
pub async fn push(config: &PushConfig, reference: &ImageRef) -> Result<PushResult> {
    let name = match reference.tag() {
        Some(tag) => format!("{}:{tag}", reference.name()),
        None => reference.to_string(),
    };
    let familiar = reference.familiar();
    let target = {
        let store = config.store.clone();
        let n = name.clone();
        blocking(move || store.resolve(&n))
            .await?
            .map_err(|e| Error::store(format!("looking up {name}"), e))?
            .ok_or_else(|| Error::LocalImageNotFound {
                reference: familiar.clone(),
            })?
    };
    let repo = push_repository(&config.client, reference).await?;
    let put_as = reference
        .tag()
        .map(str::to_owned)
        .unwrap_or_else(|| target.digest().to_string());
    let media_type = target.media_type().to_string();
    let digest = target.digest().clone();
    let bytes = read_blob(&config.store, &digest, MAX_MANIFEST_SIZE, &familiar).await?;
    let progress: SharedProgress = Arc::new(PushProgress {
        inner: Arc::clone(&config.progress),
        finals: Arc::clone(&config.finals),
    });
    let cx = Arc::new(PushContext {
        repo: repo.clone(),
        client: config.client.clone(),
        store: config.store.clone(),
        registry: reference.registry().to_owned(),
        chunk_size: config.chunk_size.max(1),
        finals: Arc::clone(&config.finals),
    });
    let kind = ManifestKind::from_media_type(&media_type);
    let mut layers = Vec::new();
    let pushed_digest = if kind.is_some_and(ManifestKind::is_index) {
        let Parsed::Index(index) = manifest::parse(
            &media_type,
            &digest,
            &bytes,
            &familiar,
            &manifest::default_config_types(),
        )?
        else {
            return Err(Error::InvalidManifest {
                digest,
                reason: "stored as an index but is not one".into(),
            });
        };
        let images: Vec<_> = index
            .manifests
            .iter()
            .filter(|e| e.kind().is_some_and(|k| !k.is_index()))
            .collect();
        let mut all = !images.is_empty() && images.len() == index.manifests.len();
        for e in &images {
            if all {
                all = image_complete(
                    &config.store,
                    &e.descriptor.digest,
                    &e.descriptor.media_type,
                )
                .await;
            }
        }
        if all {
            for e in &images {
                let child = read_blob(
                    &config.store,
                    &e.descriptor.digest,
                    MAX_MANIFEST_SIZE,
                    &familiar,
                )
                .await?;
                layers.extend(
                    push_image(
                        config,
                        &cx,
                        &progress,
                        &familiar,
                        &e.descriptor.digest,
                        &e.descriptor.media_type,
                        child,
                        e.descriptor.digest.as_ref(),
                    )
                    .await?,
                );
            }
            put_manifest(
                config.upload_manager.retry_policy(),
                &repo,
                &put_as,
                &media_type,
                &digest,
                bytes,
            )
            .await?;
            digest
        } else {
            let wanted = config.wanted_platform();
            let mut chosen = None;
            for e in index.candidates(&wanted) {
                if e.kind().is_some_and(|k| !k.is_index())
                    && image_complete(
                        &config.store,
                        &e.descriptor.digest,
                        &e.descriptor.media_type,
                    )
                    .await
                {
                    chosen = Some(e.descriptor.clone());
                    break;
                }
            }
            let Some(child) = chosen else {
                return Err(Error::NoMatchingPlatform {
                    reference: familiar,
                    platform: wanted.to_string(),
                    available: format!("{} (none complete in the local store)", index.platforms()),
                });
            };
            let child_bytes =
                read_blob(&config.store, &child.digest, MAX_MANIFEST_SIZE, &familiar).await?;
            // Without a tag, the image goes under its own digest.
            let child_put = match reference.tag() {
                Some(_) => put_as.clone(),
                None => child.digest.to_string(),
            };
            layers.extend(
                push_image(
                    config,
                    &cx,
                    &progress,
                    &familiar,
                    &child.digest,
                    &child.media_type,
                    child_bytes,
                    &child_put,
                )
                .await?,
            );
            child.digest
        }
    } else {
        layers.extend(
            push_image(
                config,
                &cx,
                &progress,
                &familiar,
                &digest,
                &media_type,
                bytes,
                &put_as,
            )
            .await?,
        );
        digest
    };
    let pushed_name = match reference.tag() {
        Some(tag) => format!("{}:{tag}", reference.name()),
        None => format!("{}@{pushed_digest}", reference.name()),
    };
    if let Some(logger) = &config.event_logger {
        logger(&ImageEvent {
            action: EventAction::Push,
            reference: pushed_name.clone(),
            digest: pushed_digest.clone(),
        });
    }
    Ok(PushResult {
        reference: pushed_name,
        digest: pushed_digest,
        layers,
    })
}

/// `PUT`s a manifest unless the registry already has it under `put_as`.
/// Retried by `policy` (a `PUT` of the same bytes is idempotent).
async fn put_manifest(
    policy: &RetryPolicy,
    repo: &Repository,
    put_as: &str,
    media_type: &str,
    digest: &Digest,
    bytes: Vec<u8>,
) -> Result<()> {
    let bytes = Bytes::from(bytes);
    let what = format!("pushing manifest {digest} as {put_as}");
    retrying(policy, &what, || {
        put_manifest_once(repo, put_as, media_type, digest, bytes.clone())
    })
    .await
}

async fn put_manifest_once(
    repo: &Repository,
    put_as: &str,
    media_type: &str,
    digest: &Digest,
    bytes: Bytes,
) -> Result<()> {
    match repo.head_manifest(put_as).await {
        Ok(head) if head.digest.as_ref() == Some(digest) => return Ok(()),
        Ok(_) => {}
        Err(e) if e.is_not_found() => {}
        Err(e) => return Err(Error::registry(format!("checking manifest {put_as}"), e)),
    }
    repo.put_manifest(put_as, media_type, bytes)
        .await
        .map_err(|e| Error::registry(format!("pushing manifest {digest} as {put_as}"), e))?;
    Ok(())
}

/// Pushes one image manifest: layers, config, then the manifest under `put_as`.
#[allow(clippy::too_many_arguments)]
async fn push_image(
    config: &PushConfig,
    cx: &Arc<PushContext>,
    progress: &SharedProgress,
    familiar: &str,
    digest: &Digest,
    media_type: &str,
    bytes: Vec<u8>,
    put_as: &str,
) -> Result<Vec<PushedBlob>> {
    let Parsed::Image(image) = manifest::parse(
        media_type,
        digest,
        &bytes,
        familiar,
        &manifest::default_config_types(),
    )?
    else {
        return Err(Error::InvalidManifest {
            digest: digest.clone(),
            reason: "an index where an image manifest was expected".into(),
        });
    };
    let ImageManifest {
        config: config_ref,
        layers,
        ..
    } = image;
    let config_bytes =
        read_blob(&config.store, &config_ref.digest, MAX_CONFIG_SIZE, familiar).await?;
    let image_config = manifest::parse_config(&config_ref.digest, &config_bytes)?;
    if image_config.diff_ids.len() != layers.len() {
        return Err(Error::InvalidConfig {
            digest: config_ref.digest.clone(),
            reason: "its DiffIDs do not match the manifest's layers".into(),
        });
    }
    let mut uploads = Vec::new();
    // Per layer, base first: the index of its upload, or `None` for a foreign layer left out.
    let mut slots = Vec::with_capacity(layers.len());
    for (layer, diff_id) in layers.iter().zip(&image_config.diff_ids) {
        if layer.is_foreign() && !config.push_foreign_layers {
            progress.update(Progress::new(
                crate::fetch::short_id(&layer.blob.digest),
                "Foreign layer, not pushed",
            ));
            slots.push(None);
            continue;
        }
        slots.push(Some(uploads.len()));
        let store = config.store.clone();
        let d = layer.blob.digest.clone();
        let present = blocking(move || store.content().contains(&d))
            .await?
            .map_err(|e| Error::store("checking a layer blob", e))?;
        if !present && !crate::absent::is_absent(&config.store, &layer.blob.digest).await? {
            return Err(Error::MissingBlob {
                reference: familiar.to_owned(),
                digest: layer.blob.digest.clone(),
            });
        }
        uploads.push(LayerUpload {
            cx: Arc::clone(cx),
            blob: layer.blob.clone(),
            diff_id: diff_id.clone(),
            session: Mutex::new(None),
            remote: Mutex::new(None),
        });
    }
    let uploads: Vec<Arc<LayerUpload>> = uploads.into_iter().map(Arc::new).collect();
    config
        .upload_manager
        .upload(
            uploads
                .iter()
                .map(|u| SharedUpload(Arc::clone(u)))
                .collect(),
            Arc::clone(progress),
        )
        .await
        .map_err(|source| Error::Upload { source })?;
    let pushed: Vec<PushedBlob> = layers
        .iter()
        .zip(&slots)
        .map(|(layer, slot)| match slot {
            Some(i) => {
                let u = &uploads[*i];
                lock(&u.remote).clone().unwrap_or(PushedBlob {
                    digest: u.blob.digest.clone(),
                    size: u.blob.size,
                    outcome: PushOutcome::Uploaded,
                })
            }
            None => PushedBlob {
                digest: layer.blob.digest.clone(),
                size: layer.blob.size,
                outcome: PushOutcome::Foreign,
            },
        })
        .collect();

    // The config, then the manifest.
    let cfg_digest = config_ref.digest.clone();
    let policy = config.upload_manager.retry_policy();
    let config_bytes = Bytes::from(config_bytes);
    let what = format!("pushing config {cfg_digest}");
    retrying(policy, &what, || async {
        let has_config = cx
            .repo
            .head_blob(&cfg_digest)
            .await
            .map_err(|e| Error::registry(format!("checking blob {cfg_digest}"), e))?;
        if has_config.is_none() {
            cx.repo
                .push_blob_bytes(&cfg_digest, config_bytes.clone())
                .await
                .map_err(|e| Error::registry(what.clone(), e))?;
        }
        Ok::<_, Error>(())
    })
    .await?;
    put_manifest(policy, &cx.repo, put_as, media_type, digest, bytes).await?;

    // Remember the repository as a source of every blob, for later mounts.
    let store = config.store.clone();
    let registry = cx.registry.clone();
    let repository = cx.repo.name().to_owned();
    let blobs: Vec<Digest> = std::iter::once(cfg_digest)
        .chain(
            pushed
                .iter()
                .filter(|p| p.outcome != PushOutcome::Foreign)
                .map(|p| p.digest.clone()),
        )
        .collect();
    blocking(move || {
        let now = SystemTime::now();
        for b in &blobs {
            store
                .metadata()
                .record_location(b, &registry, &repository, now)?;
        }
        Ok::<_, hoist_store::StoreError>(())
    })
    .await?
    .map_err(|e| Error::store("recording source repositories", e))?;
    Ok(pushed)
}

/// An [`Arc`]ed upload, so that the caller keeps a handle on what the engine reports.
struct SharedUpload(Arc<LayerUpload>);

impl UploadDescriptor for SharedUpload {
    type Remote = PushedBlob;

    fn key(&self) -> String {
        self.0.key()
    }

    fn id(&self) -> String {
        self.0.id()
    }

    fn upload(
        &self,
        ctx: UploadContext,
    ) -> impl std::future::Future<Output = std::result::Result<PushedBlob, BoxError>> + Send {
        self.0.upload(ctx)
    }

    fn set_remote_descriptor(&self, remote: PushedBlob) {
        self.0.set_remote_descriptor(remote);
    }
}
