//! Downloading one layer: the pipelined fetch behind [`LayerDescriptor`].
//!
//! # The pipeline
//! The blob streams from the registry in chunks. Each chunk goes, through bounded channels, to
//! two blocking tasks at once:
//! - the **ingest** task writes it into the content store's resumable ingest, which hashes it;
//! - the **extraction** task decompresses the stream (gzip, zstd or none, by media type) and
//!   extracts it into the layer store's staging area, hashing the DiffID.
//!
//! When the last byte has arrived, the ingest is committed: the content store checks size and
//! digest before the blob becomes visible. Only then is the extraction's result looked at, its
//! DiffID compared with the image config's, and the staged layer handed to the engine, which
//! makes it visible by registering it in parent order. Nothing unverified becomes visible, and no
//! blob is ever held in memory: at most [`CHANNEL_CHUNKS`] chunks are in flight per consumer.
//!
//! # Retries and resume
//! A transfer failure (reset, stall, 5xx) ends the attempt but keeps the pipeline: the ingest and
//! the extraction wait, and the next attempt asks the registry for the rest of the blob
//! (`Range`) and continues feeding both. A registry that ignores the range sends the whole blob
//! again; the bytes already held are skipped. An ingest left by an earlier process (not this
//! pipeline) is resumed too; its layer is then extracted from the stored blob once complete.
//!
//! Corrupt data (a digest mismatch at commit, or a stream that does not decompress or is not a
//! valid tar) throws everything away and fetches the blob again from byte 0, once per layer; a
//! second time ends the download with [`Error::Corrupt`], which is not retried.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Buf;
use futures_util::StreamExt;
use hoist_registry::Repository;
use hoist_store::layer::{LayerError, LayerStore, StagedLayer};
use hoist_store::{Digest, Lease, LeaseResource, Store, StoreError, Writer};
use hoist_xfer::{BoxError, DoNotRetry, DownloadContext, DownloadDescriptor, Progress};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::blocking::blocking;
use crate::error::Error;
use crate::foreign::ForeignUrls;
use crate::foreign_source::ForeignSources;
use crate::layers::{StagedBlob, lock};
use crate::manifest::{Compression, ImageConfig, LayerRef};
use crate::stream::{
    CHANNEL_CHUNKS, ChannelReader, Feed, decompress, is_aborted, stage_from_blob, stage_options,
};

/// The image config as it becomes known: `None` until fetched, then the config or why it failed.
pub(crate) type ConfigWatch = watch::Receiver<Option<Result<Arc<ImageConfig>, String>>>;

/// What the layer downloads of one image pull share.
pub(crate) struct PullContext {
    /// Where the blobs come from.
    pub repo: Repository,
    /// Registry name used in download keys (`docker.io`, `host:port`).
    pub registry: String,
    /// The local store.
    pub store: Store,
    /// The layer store, when layers are extracted.
    pub layers: Option<LayerStore>,
    /// The image config, fetched beside the layers.
    pub config: ConfigWatch,
    /// Protects what the pull writes from gc.
    pub lease: Arc<Lease>,
    /// Blob bytes received.
    pub fetched: AtomicU64,
    /// Whether any layer data has moved (after which the pull no longer falls back).
    pub moved: AtomicBool,
    /// Most bytes a layer may unpack to (see [`crate::PullConfig::max_layer_bytes`]).
    pub max_layer_bytes: u64,
    /// Whether chunked layers may be pulled partially.
    pub partial: bool,
    /// How blobs are split into ranged requests (see [`crate::PullConfig::fetch_window`]).
    pub window: hoist_registry::WindowConfig,
    /// Layers pulled partially, for the pull to record.
    pub partials: Mutex<Vec<crate::partial::PartialRecord>>,
    /// Partial pulls that fell back to a full pull.
    pub partial_fallbacks: AtomicU64,
    /// Which descriptor `urls` layers may be fetched from.
    pub foreign_urls: ForeignUrls,
}

/// The display id of a blob: the first 12 hex digits of its digest, as Docker shows layers.
pub(crate) fn short_id(digest: &Digest) -> String {
    digest.digest().chars().take(12).collect()
}

/// The ingest reference a pull writes blob `digest` under: the same in every process, so that
/// any of them resumes what another left (see [`hoist_store::ContentStore::ingests`]).
pub fn ingest_reference(digest: &Digest) -> String {
    format!("blob-{digest}")
}

/// How an attempt failed.
enum Failure {
    /// A transient failure; the pipeline is kept and the next attempt resumes it.
    Resumable(Error),
    /// The data is corrupt: start over from byte 0 (once).
    Corrupt(String),
    /// Anything else: the attempt fails with this error and the pipeline is dropped.
    Fatal(BoxError),
}

fn fatal(e: Error) -> Failure {
    Failure::Fatal(Box::new(e))
}

fn permanent(e: Error) -> Failure {
    Failure::Fatal(Box::new(DoNotRetry::new(e)))
}

type Staged = Result<StagedLayer, LayerError>;

/// The extraction side of a pipeline.
enum Extraction {
    /// Extracting as the bytes arrive.
    Streaming {
        /// `None` once the extraction stopped reading.
        tx: Option<mpsc::Sender<Feed>>,
        handle: JoinHandle<Staged>,
        /// The result, when the extraction ended before the end of the blob.
        early: Option<Staged>,
    },
    /// The ingest resumed bytes this pipeline did not see: extract from the stored blob.
    AfterCommit,
    /// Layers are not extracted.
    Skip,
}

/// A download in progress: the ingest and extraction tasks and how many bytes they have.
struct Pipeline {
    offset: u64,
    ingest_tx: mpsc::Sender<Feed>,
    ingest: JoinHandle<Result<Writer, Option<StoreError>>>,
    extraction: Extraction,
}

/// Where an attempt starts.
enum Start {
    /// A new pipeline.
    Pipeline(Box<Pipeline>),
    /// The blob is already in the content store.
    Present,
}

/// The error of a layer that unpacks to more than the limit: permanent (fetching it again cannot
/// help), and not a corruption to fetch again for.
fn too_large(e: &LayerError, digest: &Digest) -> Option<Failure> {
    match e {
        LayerError::LimitExceeded { limit, what } => Some(permanent(Error::LayerTooLarge {
            blob: digest.clone(),
            limit: *limit,
            what,
        })),
        _ => None,
    }
}

/// Is a failed extraction the data's fault (fetch again) rather than the machine's?
fn data_fault(e: &LayerError) -> bool {
    match e {
        LayerError::Source { source } => !is_aborted(source),
        other => other.is_invalid_layer(),
    }
}

/// One layer of an image being pulled.
pub(crate) struct LayerDescriptor {
    cx: Arc<PullContext>,
    index: usize,
    layer: LayerRef,
    known_diff_id: Option<Digest>,
    state: Mutex<Option<Pipeline>>,
    corrupt_seen: AtomicBool,
    leased: AtomicBool,
    /// The allowed descriptor URLs still to try before the registry.
    foreign: ForeignSources,
}

impl LayerDescriptor {
    /// The layer at `index` of the image; `known_diff_id` is its DiffID when the store already
    /// knows it from an earlier pull (for "Already exists" before the config arrives).
    pub(crate) fn new(
        cx: Arc<PullContext>,
        index: usize,
        layer: LayerRef,
        known_diff_id: Option<Digest>,
    ) -> LayerDescriptor {
        let foreign = ForeignSources::new(&cx.foreign_urls, &layer);
        LayerDescriptor {
            foreign,
            cx,
            index,
            layer,
            known_diff_id,
            state: Mutex::new(None),
            corrupt_seen: AtomicBool::new(false),
            leased: AtomicBool::new(false),
        }
    }

    fn digest(&self) -> &Digest {
        &self.layer.blob.digest
    }

    fn size(&self) -> u64 {
        self.layer.blob.size
    }

    /// Leases the blob and its ingest before anything is written.
    async fn lease(&self) -> Result<(), Failure> {
        if self.leased.load(Ordering::Acquire) {
            return Ok(());
        }
        let lease = Arc::clone(&self.cx.lease);
        let digest = self.digest().clone();
        blocking(move || {
            lease.add(&LeaseResource::Blob(digest.clone()))?;
            lease.add(&LeaseResource::Ingest(ingest_reference(&digest)))
        })
        .await
        .map_err(fatal)?
        .map_err(|e| fatal(Error::store("leasing a layer blob", e)))?;
        self.leased.store(true, Ordering::Release);
        Ok(())
    }

    /// Removes the blob's ingest after a permanent failure: its bytes can never become the
    /// blob, so nothing is kept for a resume. Waits (briefly) for the ingest task to let go of
    /// the writer; an ingest still held after that (another process) is left alone.
    async fn discard_ingest(&self) {
        lock(&self.state).take();
        let store = self.cx.store.clone();
        let reference = ingest_reference(self.digest());
        let _ = blocking(move || {
            for _ in 0..200 {
                match store.content().abort(&reference) {
                    Err(StoreError::Locked { .. }) => {
                        std::thread::sleep(std::time::Duration::from_millis(10));
                    }
                    Err(e) if e.is_not_found() => return,
                    Err(e) => {
                        tracing::warn!(%reference, error = %e, "could not remove a failed ingest");
                        return;
                    }
                    Ok(()) => return,
                }
            }
        })
        .await;
    }

    /// Opens the ingest (from byte 0 when `restart`) and starts the tasks.
    ///
    /// When another process is ingesting the same blob (a concurrent pull into the same store),
    /// this waits for it, showing "Waiting for another hoist", and then uses the blob it
    /// committed; if that process dies instead, its lock is released and this one resumes its
    /// bytes. Either way the blob is fetched once.
    async fn start(&self, restart: bool, ctx: &DownloadContext) -> Result<Start, Failure> {
        self.lease().await?;
        let store = self.cx.store.clone();
        let digest = self.digest().clone();
        let size = self.size();
        let open = move |wait: bool| -> Result<Option<Writer>, StoreError> {
            let content = store.content();
            let reference = ingest_reference(&digest);
            let opened = if wait {
                content.writer(&reference, Some(&digest), Some(size))
            } else {
                content.try_writer(&reference, Some(&digest), Some(size))
            };
            let mut w = match opened {
                Ok(w) => w,
                Err(e) if e.is_already_exists() => return Ok(None),
                Err(e) => return Err(e),
            };
            if restart && w.offset() > 0 {
                w.reset()?;
            }
            Ok(Some(w))
        };
        let again = open.clone();
        let opened = match blocking(move || open(false)).await.map_err(fatal)? {
            Err(StoreError::Locked { .. }) => {
                ctx.progress()
                    .update(Progress::new(ctx.id(), "Waiting for another hoist"));
                tracing::debug!(blob = %self.digest(), "another process is fetching this blob; waiting");
                blocking(move || again(true)).await.map_err(fatal)?
            }
            other => other,
        };
        let writer = match opened {
            Ok(Some(w)) => w,
            Ok(None) => return Ok(Start::Present),
            Err(e) => {
                return Err(fatal(Error::store(
                    format!("opening the ingest of {}", self.digest()),
                    e,
                )));
            }
        };
        let offset = writer.offset();
        let (ingest_tx, ingest) = spawn_ingest(writer);
        let extraction = match &self.cx.layers {
            None => Extraction::Skip,
            Some(_) if offset > 0 => Extraction::AfterCommit,
            Some(layers) => {
                let (tx, handle) = spawn_extraction(
                    layers.clone(),
                    self.layer.compression,
                    self.cx.max_layer_bytes,
                );
                Extraction::Streaming {
                    tx: Some(tx),
                    handle,
                    early: None,
                }
            }
        };
        Ok(Start::Pipeline(Box::new(Pipeline {
            offset,
            ingest_tx,
            ingest,
            extraction,
        })))
    }

    /// Fetches the rest of the blob into the pipeline.
    async fn fetch(&self, p: &mut Pipeline, ctx: &DownloadContext) -> Result<(), Failure> {
        let size = self.size();
        let digest = self.digest();
        if p.offset >= size {
            return Ok(());
        }
        let foreign = self
            .foreign
            .open(&self.cx.repo, digest, p.offset, size)
            .await;
        let what = self.foreign.describe_fetch(digest);
        let network = |e| Failure::Resumable(Error::registry(what.clone(), e));
        let resp = match foreign {
            Some(resp) => resp.into(),
            None => self
                .cx
                .repo
                .get_blob_windowed(digest, p.offset, size, self.cx.window)
                .await
                .map_err(network)?,
        };
        // The registry says how large the blob is: a manifest that gives another size lies, and
        // no retry can help.
        if let Some(total) = resp.total.filter(|t| *t != size) {
            return Err(Failure::Corrupt(format!(
                "the registry holds {total} bytes but the manifest gives {size}"
            )));
        }
        // A registry that ignored the range starts at 0: skip what is already held.
        let mut skip = p.offset.saturating_sub(resp.start);
        let mut body = resp.body;
        ctx.report("Downloading", p.offset, Some(size));
        while let Some(chunk) = body.next().await {
            let mut chunk = chunk.map_err(network)?;
            self.cx.moved.store(true, Ordering::Release);
            self.cx
                .fetched
                .fetch_add(chunk.len() as u64, Ordering::Relaxed);
            if skip > 0 {
                let n = usize::try_from(skip).unwrap_or(usize::MAX).min(chunk.len());
                chunk.advance(n);
                skip -= n as u64;
            }
            if chunk.is_empty() {
                continue;
            }
            let len = chunk.len() as u64;
            if p.offset + len > size {
                return Err(Failure::Corrupt(format!(
                    "the registry sent more than the {size} bytes the manifest gives"
                )));
            }
            if p.ingest_tx.send(Feed::Data(chunk.clone())).await.is_err() {
                return Err(ingest_failure(&mut p.ingest, digest).await);
            }
            feed_extraction(&mut p.extraction, chunk, digest).await?;
            p.offset += len;
            ctx.report("Downloading", p.offset, Some(size));
        }
        if p.offset < size {
            return Err(Failure::Resumable(Error::ShortBlob {
                blob: digest.clone(),
                received: p.offset,
                size,
            }));
        }
        Ok(())
    }

    /// Commits the ingest (verifying the digest), then collects the extraction.
    async fn finish(&self, p: Pipeline, ctx: &DownloadContext) -> Result<Arc<StagedBlob>, Failure> {
        let digest = self.digest().clone();
        let size = self.size();
        ctx.progress()
            .update(Progress::new(ctx.id(), "Verifying Checksum"));
        let Pipeline {
            ingest_tx,
            mut ingest,
            extraction,
            ..
        } = p;
        if ingest_tx.send(Feed::End).await.is_err() {
            return Err(ingest_failure(&mut ingest, &digest).await);
        }
        let writer = match (&mut ingest).await {
            Ok(Ok(w)) => w,
            Ok(Err(Some(e))) => return Err(store_failure(e, &digest)),
            Ok(Err(None)) | Err(_) => {
                return Err(fatal(Error::Internal(format!(
                    "the ingest of {digest} stopped unexpectedly"
                ))));
            }
        };
        let d = digest.clone();
        let committed = blocking(move || writer.commit(Some(size), Some(&d)))
            .await
            .map_err(fatal)?;
        if let Err(e) = committed {
            return Err(store_failure(e, &digest));
        }
        let staged = match extraction {
            Extraction::Skip => None,
            Extraction::Streaming { tx, handle, early } => {
                ctx.progress().update(Progress::new(ctx.id(), "Extracting"));
                let result = match early {
                    Some(r) => r,
                    None => {
                        if let Some(tx) = tx {
                            // A closed channel means the extraction already ended: its result says why.
                            let _ = tx.send(Feed::End).await;
                        }
                        handle.await.map_err(|e| {
                            fatal(Error::Internal(format!("layer extraction failed: {e}")))
                        })?
                    }
                };
                match result {
                    Ok(s) => Some(s),
                    Err(e) if let Some(f) = too_large(&e, &digest) => return Err(f),
                    // The bytes are the registry's verified blob: the layer itself is broken.
                    Err(e) if data_fault(&e) => {
                        return Err(permanent(Error::Corrupt {
                            blob: digest.clone(),
                            reason: format!("the layer does not unpack: {e}"),
                        }));
                    }
                    Err(e) => {
                        return Err(fatal(Error::Layer {
                            blob: digest.clone(),
                            source: e,
                        }));
                    }
                }
            }
            Extraction::AfterCommit => {
                ctx.progress().update(Progress::new(ctx.id(), "Extracting"));
                Some(self.stage_stored().await?)
            }
        };
        self.staged(staged).await
    }

    /// Extracts the stored blob.
    async fn stage_stored(&self) -> Result<StagedLayer, Failure> {
        let Some(layers) = self.cx.layers.clone() else {
            return Err(fatal(Error::Internal(
                "no layer store to extract into".into(),
            )));
        };
        let store = self.cx.store.clone();
        let digest = self.digest().clone();
        let compression = self.layer.compression;
        let max_bytes = self.cx.max_layer_bytes;
        blocking(move || stage_from_blob(&store, &layers, &digest, compression, None, max_bytes))
            .await
            .map_err(fatal)?
            .map_err(|e| match e {
                Error::Layer { ref source, .. }
                    if let Some(f) = too_large(source, self.digest()) =>
                {
                    f
                }
                Error::Layer { ref source, .. } if data_fault(source) => {
                    permanent(Error::Corrupt {
                        blob: self.digest().clone(),
                        reason: format!("the layer does not unpack: {source}"),
                    })
                }
                other => fatal(other),
            })
    }

    /// Checks the DiffID against the config's and wraps the result.
    async fn staged(&self, layer: Option<StagedLayer>) -> Result<Arc<StagedBlob>, Failure> {
        let config = self.config().await?;
        let expected = config.diff_ids.get(self.index).cloned().ok_or_else(|| {
            permanent(Error::InvalidConfig {
                digest: self.digest().clone(),
                reason: format!("it has no DiffID for layer {}", self.index + 1),
            })
        })?;
        if let Some(l) = &layer
            && *l.diff_id() != expected
        {
            return Err(permanent(Error::DiffIdMismatch {
                blob: self.digest().clone(),
                expected,
                actual: l.diff_id().clone(),
            }));
        }
        Ok(Arc::new(StagedBlob::new(
            self.digest().clone(),
            self.layer.compression,
            expected,
            layer,
        )))
    }

    async fn config(&self) -> Result<Arc<ImageConfig>, Failure> {
        let mut rx = self.cx.config.clone();
        let value = rx
            .wait_for(Option::is_some)
            .await
            .map_err(|_| permanent(Error::Internal("the image config was never fetched".into())))?
            .clone();
        match value {
            Some(Ok(c)) => Ok(c),
            Some(Err(reason)) => Err(permanent(Error::Internal(format!(
                "the image config could not be fetched: {reason}"
            )))),
            None => Err(permanent(Error::Internal("no image config".into()))),
        }
    }

    /// One attempt: resume or start the pipeline, fetch, finish.
    async fn attempt(
        &self,
        ctx: &DownloadContext,
        restart: bool,
    ) -> Result<Arc<StagedBlob>, Failure> {
        let kept = if restart {
            None
        } else {
            lock(&self.state).take()
        };
        let mut pipeline = match kept {
            Some(p) => p,
            None => match self.start(restart, ctx).await? {
                Start::Pipeline(p) => *p,
                Start::Present => {
                    let staged = match self.cx.layers {
                        Some(_) => {
                            ctx.progress().update(Progress::new(ctx.id(), "Extracting"));
                            Some(self.stage_stored().await?)
                        }
                        None => None,
                    };
                    return self.staged(staged).await;
                }
            },
        };
        ctx.set_resume_offset(pipeline.offset);
        match self.fetch(&mut pipeline, ctx).await {
            Ok(()) => {}
            Err(Failure::Resumable(e)) => {
                // A URL that fails mid-stream is not asked again: the rest comes from the next.
                self.foreign.current_failed(&e);
                ctx.set_resume_offset(pipeline.offset);
                *lock(&self.state) = Some(pipeline);
                return Err(Failure::Resumable(e));
            }
            Err(other) => return Err(other),
        }
        self.finish(pipeline, ctx).await
    }
}

impl LayerDescriptor {
    /// Pulls the layer partially when it is chunked, the store lacks its blob and partial pulls
    /// are on; `None` means pull it whole (the reason is logged at debug level and shown in
    /// progress).
    async fn try_partial(&self, ctx: &DownloadContext) -> Option<Arc<StagedBlob>> {
        if !self.cx.partial || self.cx.layers.is_none() {
            return None;
        }
        let format = crate::chunked::detect(&self.layer.blob.media_type, &self.layer.annotations)?;
        let store = self.cx.store.clone();
        let digest = self.digest().clone();
        let present = blocking(move || store.content().contains(&digest))
            .await
            .ok()?
            .ok()?;
        if present {
            return None;
        }
        // Leased like a fetched blob: its absent record must survive a gc until the image is
        // referenced.
        self.lease().await.ok()?;
        let expected = self
            .config()
            .await
            .ok()?
            .diff_ids
            .get(self.index)
            .cloned()?;
        ctx.progress()
            .update(Progress::new(ctx.id(), "Partial pull").with_message(format!("{format}")));
        let mut fetched = 0u64;
        let result = crate::partial::pull_partial(
            &self.cx,
            self.index,
            &self.layer,
            format,
            &expected,
            &mut fetched,
        )
        .await;
        let mb = |b: u64| b as f64 / 1e6;
        match result {
            Ok(p) => {
                let note = format!(
                    "partial: fetched {:.1} of {:.1} MB ({} files local, {} fetched)",
                    mb(fetched),
                    mb(self.size()),
                    p.plan.local_files,
                    p.plan.fetched_files
                );
                tracing::debug!(blob = %self.digest(), fetch_bytes = p.plan.fetch_bytes, "{note}");
                ctx.progress()
                    .update(Progress::new(ctx.id(), "Download complete").with_message(note));
                lock(&self.cx.partials).push(p.record);
                Some(Arc::new(StagedBlob::new(
                    self.digest().clone(),
                    self.layer.compression,
                    expected,
                    Some(p.staged),
                )))
            }
            Err(e) => {
                tracing::debug!(blob = %self.digest(), reason = %e, fetched, "partial pull fell back to a full pull");
                self.cx.partial_fallbacks.fetch_add(1, Ordering::Relaxed);
                ctx.progress().update(
                    Progress::new(ctx.id(), "Downloading").with_message(format!(
                        "partial pull not possible ({e}); fetched {:.1} MB for nothing, pulling the whole layer",
                        mb(fetched)
                    )),
                );
                None
            }
        }
    }
}

/// Starts the ingest task: it writes what it is fed and hands the writer back at [`Feed::End`].
/// If its feeder goes away first, it drops the writer, which keeps the bytes for a resume.
fn spawn_ingest(
    mut writer: Writer,
) -> (
    mpsc::Sender<Feed>,
    JoinHandle<Result<Writer, Option<StoreError>>>,
) {
    let (tx, mut rx) = mpsc::channel::<Feed>(CHANNEL_CHUNKS);
    let handle = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        while let Some(msg) = rx.blocking_recv() {
            match msg {
                Feed::Data(b) => {
                    if let Err(e) = writer.write_all(&b) {
                        return Err(Some(writer.error_from_io(e)));
                    }
                }
                Feed::End => return Ok(writer),
            }
        }
        Err(None)
    });
    (tx, handle)
}

/// Starts the extraction task.
fn spawn_extraction(
    layers: LayerStore,
    compression: Compression,
    max_bytes: u64,
) -> (mpsc::Sender<Feed>, JoinHandle<Staged>) {
    let (tx, rx) = mpsc::channel::<Feed>(CHANNEL_CHUNKS);
    let handle = tokio::task::spawn_blocking(move || {
        let decoded = decompress(ChannelReader::new(rx), compression)
            .map_err(|source| LayerError::Source { source })?;
        layers.stage(decoded, &stage_options(None, max_bytes))
    });
    (tx, handle)
}

/// Hands a chunk to the extraction. An extraction that stopped reading before the end is
/// collected: a failure due to the data ends the attempt as corrupt.
async fn feed_extraction(
    extraction: &mut Extraction,
    chunk: bytes::Bytes,
    digest: &Digest,
) -> Result<(), Failure> {
    let Extraction::Streaming { tx, handle, early } = extraction else {
        return Ok(());
    };
    let Some(sender) = tx else {
        return Ok(());
    };
    if sender.send(Feed::Data(chunk)).await.is_ok() {
        return Ok(());
    }
    *tx = None;
    let result = handle
        .await
        .map_err(|e| fatal(Error::Internal(format!("layer extraction failed: {e}"))))?;
    match result {
        Ok(staged) => {
            // It read all it needed (trailing bytes after the archive); the rest only goes to
            // the ingest.
            *early = Some(Ok(staged));
            Ok(())
        }
        Err(e) if let Some(f) = too_large(&e, digest) => Err(f),
        Err(e) if data_fault(&e) => Err(Failure::Corrupt(format!("{e}"))),
        Err(e) => Err(fatal(Error::Layer {
            blob: digest.clone(),
            source: e,
        })),
    }
}

/// The error of an ingest task that stopped taking data.
async fn ingest_failure(
    ingest: &mut JoinHandle<Result<Writer, Option<StoreError>>>,
    digest: &Digest,
) -> Failure {
    match ingest.await {
        Ok(Err(Some(e))) => store_failure(e, digest),
        Ok(_) => fatal(Error::Internal(format!(
            "the ingest of {digest} stopped unexpectedly"
        ))),
        Err(e) => fatal(Error::Internal(format!(
            "the ingest of {digest} failed: {e}"
        ))),
    }
}

/// Content mismatches are corruption; anything else is a store error.
fn store_failure(e: StoreError, digest: &Digest) -> Failure {
    if e.is_content_mismatch() {
        Failure::Corrupt(e.to_string())
    } else {
        fatal(Error::store(format!("writing blob {digest}"), e))
    }
}

impl DownloadDescriptor for LayerDescriptor {
    type Staged = Arc<StagedBlob>;

    fn key(&self) -> String {
        format!("{}/{}", self.cx.registry, self.digest())
    }

    fn id(&self) -> String {
        short_id(self.digest())
    }

    fn diff_id(&self) -> Option<Digest> {
        self.known_diff_id.clone()
    }

    async fn download(&self, ctx: DownloadContext) -> Result<Arc<StagedBlob>, BoxError> {
        if let Some(staged) = self.try_partial(&ctx).await {
            return Ok(staged);
        }
        let mut restart = false;
        loop {
            match self.attempt(&ctx, restart).await {
                Ok(staged) => return Ok(staged),
                Err(Failure::Resumable(e)) => return Err(Box::new(e)),
                Err(Failure::Fatal(e)) => {
                    if hoist_xfer::is_do_not_retry(&*e) {
                        self.discard_ingest().await;
                    }
                    return Err(e);
                }
                Err(Failure::Corrupt(reason)) => {
                    lock(&self.state).take();
                    // Bad bytes from a URL: drop it and start over from the next source; the
                    // registry's one second chance is kept.
                    if self.foreign.pipeline_corrupt(&reason) {
                        restart = true;
                        continue;
                    }
                    if self.corrupt_seen.swap(true, Ordering::AcqRel) {
                        self.discard_ingest().await;
                        return Err(Box::new(DoNotRetry::new(Error::Corrupt {
                            blob: self.digest().clone(),
                            reason,
                        })));
                    }
                    let note = format!(
                        "blob {} arrived corrupt ({reason}); fetching it again from the start",
                        self.digest()
                    );
                    tracing::warn!("{note}");
                    ctx.progress()
                        .update(Progress::new(ctx.id(), "Retrying").with_message(note));
                    restart = true;
                }
            }
        }
    }

    fn close(&self) {
        lock(&self.state).take();
    }
}
