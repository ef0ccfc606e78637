//! Partial pulls of zstd:chunked and eStargz layers.
//!
//! A layer whose descriptor [`chunked::detect`] recognises, and that the store does not hold,
//! may be rebuilt from the files the store already has (in any unpacked layer) plus the chunks
//! of the blob it lacks:
//!
//! 1. the layer's metadata (TOC, tar-split) is fetched with one range request; a registry that
//!    ignores the range ends the attempt at once (the body is dropped unread);
//! 2. the store's file-content index ([`hoist_store::files::LocalFiles`]) is brought up to date
//!    for the sizes the TOC lists (stat everything, hash only files of those sizes), and the
//!    rebuild is planned against it; a plan that takes nothing locally ends the attempt (a full
//!    pull then also keeps the blob);
//! 3. the missing chunks are fetched with [`hoist_registry::Repository::get_blob_at`] and the tar
//!    stream is rebuilt on a blocking thread, piped into the layer store's staging, which hashes
//!    the DiffID and refuses anything but the image config's. Every file, fetched or local, is
//!    verified against its TOC digest while it streams; a failed rebuild cuts the pipe, so the
//!    staging fails too and nothing is kept.
//!
//! Any failure is a [`Fallback`]: the caller pulls the whole blob instead. The layer that
//! results is present and verified but the compressed blob is not: the pull records it as an
//! absent blob ([`hoist_store::AbsentBlob`]) with where it came from.

use std::collections::BTreeSet;
use std::io::{self, BufWriter, Write};
use std::sync::atomic::Ordering;

use bytes::Bytes;
use futures_util::StreamExt;
use hoist_registry::Chunk;
use hoist_store::Digest;
use hoist_store::files::LocalFiles;
use hoist_store::layer::{LayerError, StagedLayer};
use tokio::sync::mpsc;

use crate::chunked::{
    self, ChunkedError, ChunkedFormat, LayerMetadata, LocalContent, MAX_METADATA_SIZE,
    MetadataLocator, RebuildPlan,
};
use crate::fetch::PullContext;
use crate::manifest::LayerRef;
use crate::stream::{CHANNEL_CHUNKS, ChannelReader, Feed, stage_options};

/// Why a layer was not pulled partially (the caller pulls it whole).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Fallback {
    /// The registry ignored a range request.
    #[error("the registry does not serve byte ranges")]
    NoRanges,
    /// The layer's metadata is missing, malformed, or does not verify, or the rebuild failed.
    #[error("{0}")]
    Chunked(#[from] ChunkedError),
    /// A request failed.
    #[error("fetching chunks: {0}")]
    Registry(#[from] hoist_registry::Error),
    /// None of the layer's files are in the store: a full pull moves as much and keeps the blob.
    #[error("none of the layer's files are in the store")]
    NothingLocal,
    /// The metadata is larger than hoist reads.
    #[error("the layer's metadata spans {0} bytes, more than hoist reads")]
    MetadataTooLarge(u64),
    /// The rebuilt layer does not have the image config's DiffID.
    #[error("the rebuilt layer is {actual}, the image config says {expected}")]
    DiffIdMismatch {
        /// The config's DiffID.
        expected: Digest,
        /// The rebuilt layer's.
        actual: Digest,
    },
    /// Staging the rebuilt layer failed.
    #[error("staging the rebuilt layer: {0}")]
    Layer(#[from] LayerError),
    /// The store failed.
    #[error("the store: {0}")]
    Store(#[from] hoist_store::StoreError),
    /// A blocking task failed.
    #[error("{0}")]
    Task(String),
}

/// What a partial pull learnt, for the pull to record once the layer is registered.
#[derive(Debug, Clone)]
pub(crate) struct PartialRecord {
    /// Position of the layer in the image.
    pub index: usize,
    /// The compressed blob (not stored).
    pub blob: Digest,
    /// Its size.
    pub size: u64,
    /// Its media type.
    pub media_type: String,
    /// The layer's DiffID (verified).
    pub diff_id: Digest,
    /// The layer's regular files from its TOC: `(path, size, sha256)`.
    pub files: Vec<(String, u64, Digest)>,
}

/// A rebuilt, staged and verified layer.
pub(crate) struct PartialLayer {
    pub staged: StagedLayer,
    pub record: PartialRecord,
    pub plan: PlanSummary,
}

/// The numbers of a rebuild plan, for progress and logs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PlanSummary {
    pub local_files: usize,
    pub fetched_files: usize,
    pub fetch_bytes: u64,
}

/// The store's files as content a rebuild reads (each verified as it is read).
struct StoreContent(LocalFiles);

impl LocalContent for StoreContent {
    fn open(&self, digest: &Digest, size: u64) -> io::Result<Option<Box<dyn io::Read + Send>>> {
        match self.0.open(digest, size) {
            Ok(Some(f)) => Ok(Some(Box::new(f))),
            Ok(None) => Ok(None),
            Err(e) => Err(io::Error::other(e)),
        }
    }
}

/// Fetches `start..size` of the blob into memory (metadata only, capped). A registry that
/// ignores the range gives [`Fallback::NoRanges`] before any body byte is read.
async fn fetch_tail(
    cx: &PullContext,
    layer: &LayerRef,
    start: u64,
    counted: &mut u64,
) -> Result<Bytes, Fallback> {
    let size = layer.blob.size;
    let span = size.saturating_sub(start);
    let limit = 2 * MAX_METADATA_SIZE;
    if span > limit {
        return Err(Fallback::MetadataTooLarge(span));
    }
    let resp = cx
        .repo
        .get_blob_from(&layer.blob.digest, start, size)
        .await?;
    if resp.start != start {
        return Err(Fallback::NoRanges);
    }
    let bytes = resp.body.read_capped("layer metadata", span.max(1)).await?;
    cx.moved.store(true, Ordering::Release);
    cx.fetched.fetch_add(bytes.len() as u64, Ordering::Relaxed);
    *counted += bytes.len() as u64;
    if bytes.len() as u64 != span {
        return Err(Fallback::Chunked(ChunkedError::unsupported(format!(
            "the registry sent {} metadata bytes instead of {span}",
            bytes.len()
        ))));
    }
    Ok(bytes)
}

/// Slices `chunks` out of `tail`, which holds the blob from `start` on.
fn slice_parts(tail: &Bytes, start: u64, chunks: &[Chunk]) -> Result<Vec<Bytes>, Fallback> {
    chunks
        .iter()
        .map(|c| {
            let from = usize::try_from(c.offset - start).ok();
            let to = from.and_then(|f| usize::try_from(c.length).ok().map(|l| f + l));
            match (from, to) {
                (Some(f), Some(t)) if t <= tail.len() => Ok(tail.slice(f..t)),
                _ => Err(Fallback::Chunked(ChunkedError::unsupported(
                    "the layer's metadata lies outside the blob",
                ))),
            }
        })
        .collect()
}

/// Fetches and verifies the layer's metadata.
async fn fetch_metadata(
    cx: &PullContext,
    layer: &LayerRef,
    format: ChunkedFormat,
    counted: &mut u64,
) -> Result<LayerMetadata, Fallback> {
    let size = layer.blob.size;
    let ranges = match chunked::metadata_ranges(format, &layer.annotations, size)? {
        MetadataLocator::Ranges(r) => r,
        MetadataLocator::Footer { format, tail } => {
            let bytes = fetch_tail(cx, layer, tail.offset, counted).await?;
            chunked::parse_footer(format, &bytes, size)?
        }
    };
    let chunks = ranges.chunks();
    let start = chunks
        .iter()
        .map(|c| c.offset)
        .min()
        .ok_or_else(|| ChunkedError::unsupported("the layer has no metadata ranges"))?;
    let tail = fetch_tail(cx, layer, start, counted).await?;
    let parts = slice_parts(&tail, start, &chunks)?;
    Ok(chunked::parse_metadata(
        &ranges,
        &parts,
        &layer.annotations,
    )?)
}

/// A `Write` that hands what it is given to a staging task through a bounded channel.
struct FeedWriter {
    tx: mpsc::Sender<Feed>,
}

impl Write for FeedWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.tx
            .blocking_send(Feed::Data(Bytes::copy_from_slice(buf)))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the layer staging stopped"))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Pulls one layer partially: metadata, plan, missing chunks, rebuild, staging with the expected
/// DiffID. `counted` receives the blob bytes fetched, whatever the outcome.
pub(crate) async fn pull_partial(
    cx: &PullContext,
    index: usize,
    layer: &LayerRef,
    format: ChunkedFormat,
    expected: &Digest,
    counted: &mut u64,
) -> Result<PartialLayer, Fallback> {
    let Some(layers) = cx.layers.clone() else {
        return Err(Fallback::Task("layers are not unpacked".into()));
    };
    let meta = fetch_metadata(cx, layer, format, counted).await?;

    // Index local files of the sizes the layer needs, then plan.
    let store = cx.store.clone();
    let meta2 = meta.clone();
    let (local, plan) = tokio::task::spawn_blocking(move || -> Result<_, Fallback> {
        let files = LocalFiles::new(&store)?;
        let sizes: BTreeSet<u64> = meta2
            .entries
            .iter()
            .filter(|e| e.has_content() && e.digest.is_some())
            .map(|e| e.size)
            .collect();
        files.index_sizes(&sizes)?;
        let md = store.metadata();
        let plan = chunked::plan_rebuild(&meta2, &|d, s| {
            md.files_with_content(d, s).is_ok_and(|v| !v.is_empty())
        });
        Ok((files, plan))
    })
    .await
    .map_err(|e| Fallback::Task(e.to_string()))??;
    tracing::debug!(
        blob = %layer.blob.digest,
        local_files = plan.local_files,
        fetched_files = plan.fetched_files,
        fetch_bytes = plan.fetch_bytes,
        "partial pull planned"
    );
    if plan.local_files == 0 {
        return Err(Fallback::NothingLocal);
    }
    let summary = PlanSummary {
        local_files: plan.local_files,
        fetched_files: plan.fetched_files,
        fetch_bytes: plan.fetch_bytes,
    };

    // The missing chunks, forwarded to the rebuild thread.
    let (chunk_tx, chunk_rx) = mpsc::channel::<io::Result<(usize, Bytes)>>(CHANNEL_CHUNKS);
    let mut stream = if plan.fetch.is_empty() {
        None
    } else {
        Some(cx.repo.get_blob_at(&layer.blob.digest, &plan.fetch).await?)
    };
    // Staging reads what the rebuild writes.
    let (feed_tx, feed_rx) = mpsc::channel::<Feed>(CHANNEL_CHUNKS);
    let options = stage_options(Some(expected), cx.max_layer_bytes);
    let stage =
        tokio::task::spawn_blocking(move || layers.stage(ChannelReader::new(feed_rx), &options));
    let rebuild = {
        let meta = meta.clone();
        let plan: RebuildPlan = plan.clone();
        tokio::task::spawn_blocking(move || -> Result<Digest, ChunkedError> {
            let mut rx = chunk_rx;
            let fetched = std::iter::from_fn(move || rx.blocking_recv());
            let mut out = BufWriter::with_capacity(256 << 10, FeedWriter { tx: feed_tx });
            let local = StoreContent(local);
            let diff_id = chunked::rebuild(&meta, &plan, fetched, &local, &mut out)?;
            out.flush()
                .map_err(|e| ChunkedError::unsupported(format!("handing the layer over: {e}")))?;
            let w = out
                .into_inner()
                .map_err(|e| ChunkedError::unsupported(format!("handing the layer over: {e}")))?;
            // Only a complete, verified rebuild ends the stream; otherwise staging fails.
            w.tx.blocking_send(Feed::End)
                .map_err(|_| ChunkedError::unsupported("the layer staging stopped"))?;
            Ok(diff_id)
        })
    };
    if let Some(s) = stream.as_mut() {
        while let Some(item) = s.next().await {
            let item = match item {
                Ok((i, b)) => {
                    cx.fetched.fetch_add(b.len() as u64, Ordering::Relaxed);
                    *counted += b.len() as u64;
                    Ok((i, b))
                }
                Err(e) => Err(io::Error::other(e)),
            };
            let failed = item.is_err();
            if chunk_tx.send(item).await.is_err() || failed {
                break;
            }
        }
    }
    drop(chunk_tx);
    let rebuilt = rebuild.await.map_err(|e| Fallback::Task(e.to_string()))?;
    let staged = stage.await.map_err(|e| Fallback::Task(e.to_string()))?;
    let diff_id = rebuilt?;
    let staged = staged?;
    if &diff_id != expected || staged.diff_id() != expected {
        return Err(Fallback::DiffIdMismatch {
            expected: expected.clone(),
            actual: diff_id,
        });
    }
    let files = meta
        .entries
        .iter()
        .filter(|e| e.has_content())
        .filter_map(|e| e.digest.clone().map(|d| (e.name.clone(), e.size, d)))
        .collect();
    Ok(PartialLayer {
        staged,
        record: PartialRecord {
            index,
            blob: layer.blob.digest.clone(),
            size: layer.blob.size,
            media_type: layer.blob.media_type.clone(),
            diff_id,
            files,
        },
        plan: summary,
    })
}

/// Records what the partial pulls of one image learnt, once its layers are registered: each
/// blob as absent (present layer, missing blob, fetchable from `registry`/`repository`) unless
/// the blob has arrived meanwhile, and each layer's files in the file-content index. `chain`
/// holds the image's ChainIDs, base first. Blocking.
pub(crate) fn record(
    store: &hoist_store::Store,
    partials: &[PartialRecord],
    chain: &[Digest],
    registry: &str,
    repository: &str,
) -> Result<(), hoist_store::StoreError> {
    if partials.is_empty() {
        return Ok(());
    }
    let files = LocalFiles::new(store)?;
    for p in partials {
        if !store.content().contains(&p.blob)? {
            store
                .metadata()
                .record_absent_blob(&hoist_store::AbsentBlob {
                    digest: p.blob.clone(),
                    diff_id: p.diff_id.clone(),
                    size: p.size,
                    media_type: p.media_type.clone(),
                    registry: registry.to_owned(),
                    repository: repository.to_owned(),
                })?;
        }
        if let Some(c) = chain.get(p.index) {
            files.record_layer_files(c, p.files.iter().cloned())?;
        }
    }
    Ok(())
}
