//! Layer downloads: fetch every missing layer of an image at once, register them in parent
//! order, share work between images.
//!
//! # Model
//! Pulling a layer has two steps with different constraints:
//! - **download**: fetch, decompress, verify and extract the blob into a per-layer staging area
//!   ([`DownloadDescriptor::download`] returning a [`DownloadDescriptor::Staged`] value). This
//!   does not depend on any other layer, so every layer of the image downloads concurrently,
//!   bounded by the manager's concurrency limit. Downloads are de-duplicated per blob
//!   ([`DownloadDescriptor::key`]): the same blob in two images, or twice in one image, moves
//!   once and its staged output is shared (hence `Staged: Clone`, typically an `Arc`).
//! - **registration**: commit a staged layer into the [`LayerStore`] on top of its parent
//!   ([`LayerStore::register`]). This must happen strictly in parent order, and is
//!   de-duplicated per ChainID: two pulls sharing a base register it once.
//!
//! Each missing layer position gets a registration transfer (unlimited concurrency, keyed by
//! its ChainID when the DiffIDs are known up front) that starts the layer's download, waits
//! for both its parent's registration and its own download, and registers. A parent failure
//! fails its children at once, without waiting for their downloads.
//!
//! Layers whose ChainID the store already has are reported as `"Already exists"` and not
//! fetched; that check needs the DiffIDs up front ([`DownloadDescriptor::diff_id`]).
//!
//! # References and release
//! [`LayerStore::get`] and [`LayerStore::register`] each take a reference on the layer they
//! return; the engine hands every such reference back with [`LayerStore::release`] once nothing
//! needs it. A successful [`LayerDownloadManager::download`] returns a [`ReleaseGuard`] that
//! keeps the image's top layer referenced until it is released or dropped.
//!
//! # Cancellation
//! Dropping the future returned by [`LayerDownloadManager::download`], or cancelling the token
//! given to [`LayerDownloadManager::download_until_cancelled`] (which then returns
//! [`DownloadError::Cancelled`] at once), releases this pull's interest in every transfer.
//! Transfers nobody else watches are cancelled: downloads stop at their next await point and a
//! registration that has not started never starts. A registration already running completes
//! (the store's `register` is atomic) and its reference is released immediately, so nothing is
//! left half-registered.

use std::any::Any;
use std::error::Error;
use std::fmt;
use std::future::Future;
use std::ops::Deref;
use std::sync::Arc;

use futures_util::future::{try_join, try_join_all};
use oci_spec::image::Digest;
use sha2::{Digest as _, Sha256};
use tokio_util::sync::CancellationToken;

use crate::error::{BoxError, SharedError, share};
use crate::progress::{Progress, SharedProgress};
use crate::retry::{AttemptsError, DownloadContext, RetryPolicy, run_attempts};
use crate::rootfs::{RootFs, chain_id};
use crate::transfer::{Transfer, TransferContext, TransferError, TransferManager, Watcher};

/// A layer that may need downloading.
pub trait DownloadDescriptor: Send + Sync + 'static {
    /// The staged (downloaded and extracted, not yet registered) layer; the value the layer
    /// store's [`LayerStore::register`] takes. Shared between every position and image that
    /// needs the same blob, so it is cloned: make it cheap (an `Arc`).
    type Staged: Clone + Send + Sync + 'static;

    /// The key downloads are de-duplicated by: the same key means the same blob (its digest,
    /// usually qualified by the repository or registry it comes from).
    fn key(&self) -> String;

    /// The id progress is reported under (a shortened digest, say).
    fn id(&self) -> String;

    /// The layer's DiffID when known before downloading (from the image config). Needed to
    /// recognise layers the store already has and to de-duplicate registrations across pulls.
    fn diff_id(&self) -> Option<Digest>;

    /// Downloads and stages the layer. Called once per attempt; `ctx` carries the attempt
    /// number, the offset a previous attempt left ([`DownloadContext::resume_offset`]), the
    /// progress output and the cancellation token. Errors are retried per the manager's
    /// [`RetryPolicy`]; wrap permanent ones in [`DoNotRetry`](crate::DoNotRetry).
    fn download(
        &self,
        ctx: DownloadContext,
    ) -> impl Future<Output = Result<Self::Staged, BoxError>> + Send;

    /// Called once, when the manager is finished with this descriptor and will not call
    /// [`download`](Self::download) again.
    fn close(&self) {}

    /// Called after the layer at this descriptor's position is in the layer store (already
    /// present or just registered), with its DiffID.
    fn registered(&self, _diff_id: &Digest) {}
}

/// A layer in the layer store.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct LayerInfo {
    /// The layer's ChainID (itself and everything below it).
    pub chain_id: Digest,
    /// The layer's DiffID (digest of its uncompressed content).
    pub diff_id: Digest,
}

impl LayerInfo {
    /// Describes a layer.
    pub fn new(chain_id: Digest, diff_id: Digest) -> Self {
        Self { chain_id, diff_id }
    }
}

/// The store that unpacked layers are registered into, as the download manager needs it.
///
/// References: every `Some` from [`get`](Self::get) and every `Ok` from
/// [`register`](Self::register) carries one reference on the layer, which the manager gives back
/// with [`release`](Self::release). A layer referenced by anyone, or by a layer above it, must
/// stay in the store.
pub trait LayerStore: Send + Sync + 'static {
    /// A staged layer, as produced by [`DownloadDescriptor::download`].
    type Staged: Clone + Send + Sync + 'static;

    /// The layer with this ChainID, taking a reference on it, or `None` if absent.
    fn get(
        &self,
        chain_id: &Digest,
    ) -> impl Future<Output = Result<Option<LayerInfo>, BoxError>> + Send;

    /// Registers a staged layer on top of `parent` (ChainID; `None` for a bottom layer) and
    /// takes a reference on it. Called only once `parent` is registered. Must be atomic (all or
    /// nothing) and idempotent (a layer that already exists is returned, referenced again):
    /// one manager registers a ChainID once at a time when DiffIDs are declared, but different
    /// blobs with the same content, other managers or other processes may register the same
    /// ChainID concurrently. Must not consume `staged`, which may be registered again under
    /// another parent.
    fn register(
        &self,
        parent: Option<&Digest>,
        staged: Self::Staged,
    ) -> impl Future<Output = Result<LayerInfo, BoxError>> + Send;

    /// Gives back one reference taken by [`get`](Self::get) or [`register`](Self::register).
    /// Must not block for long: it may run when the last user of a layer goes away.
    fn release(&self, chain_id: &Digest);
}

/// One reference on a store layer, given back on drop.
struct LayerLease<S: LayerStore> {
    store: Arc<S>,
    info: LayerInfo,
}

impl<S: LayerStore> Drop for LayerLease<S> {
    fn drop(&mut self) {
        self.store.release(&self.info.chain_id);
    }
}

type LayerHandle<S> = Arc<LayerLease<S>>;

fn lease<S: LayerStore>(store: &Arc<S>, info: LayerInfo) -> LayerHandle<S> {
    Arc::new(LayerLease {
        store: Arc::clone(store),
        info,
    })
}

/// Keeps the top layer of a downloaded image referenced in the layer store until released
/// or dropped.
pub struct ReleaseGuard {
    top: Option<LayerInfo>,
    lease: Option<Box<dyn Any + Send + Sync>>,
}

impl ReleaseGuard {
    fn new<S: LayerStore>(top: Option<LayerHandle<S>>) -> Self {
        Self {
            top: top.as_ref().map(|l| l.info.clone()),
            lease: top.map(|l| Box::new(l) as Box<dyn Any + Send + Sync>),
        }
    }

    /// The image's top layer, if it has layers.
    pub fn top_layer(&self) -> Option<&LayerInfo> {
        self.top.as_ref()
    }

    /// Gives the reference back (the same as dropping the guard).
    pub fn release(self) {}
}

impl fmt::Debug for ReleaseGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReleaseGuard")
            .field("top", &self.top)
            .field("held", &self.lease.is_some())
            .finish()
    }
}

/// Why a download failed.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum DownloadError {
    /// The caller cancelled the download.
    Cancelled,
    /// A layer could not be downloaded; `source` is the last attempt's error.
    Failed {
        /// The layer's display id.
        id: String,
        /// Attempts made.
        attempts: u32,
        /// Whether the last error was transient (retries ran out) rather than permanent.
        retryable: bool,
        /// The last attempt's error.
        source: SharedError,
    },
    /// The layer store could not be queried.
    Lookup {
        /// The ChainID looked up.
        chain_id: Digest,
        /// The store's error.
        source: SharedError,
    },
    /// The initial root filesystem's top layer is not in the store.
    MissingInitialLayer {
        /// Its ChainID.
        chain_id: Digest,
    },
    /// The layer store failed to register a layer.
    Register {
        /// The layer's display id.
        id: String,
        /// The store's error.
        source: SharedError,
    },
    /// A layer's content does not match the DiffID the image declares.
    DiffIdMismatch {
        /// The layer's display id.
        id: String,
        /// The DiffID the descriptor declared.
        expected: Digest,
        /// The DiffID of the registered content.
        actual: Digest,
    },
    /// The layer store returned a layer whose ChainID does not follow from its parent and
    /// DiffID.
    InconsistentStore {
        /// The layer's display id.
        id: String,
        /// The ChainID that parent and DiffID give.
        expected: Digest,
        /// The ChainID the store returned.
        actual: Digest,
    },
    /// A transfer task panicked (a bug in a descriptor or store).
    Panicked {
        /// The panic message.
        message: String,
    },
}

impl DownloadError {
    /// Whether the caller cancelled.
    pub fn is_cancelled(&self) -> bool {
        matches!(self, Self::Cancelled)
    }

    /// Whether trying again later (or from another endpoint) may succeed: true when a layer's
    /// retries ran out on transient errors, false for permanent ones and for store problems.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::Failed {
                retryable: true,
                ..
            }
        )
    }
}

pub(crate) fn attempts_text(attempts: u32) -> String {
    if attempts == 1 {
        "1 attempt".to_string()
    } else {
        format!("{attempts} attempts")
    }
}

impl fmt::Display for DownloadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cancelled => f.write_str("layer download cancelled"),
            Self::Failed { id, attempts, .. } => write!(
                f,
                "downloading layer {id} failed after {}",
                attempts_text(*attempts)
            ),
            Self::Lookup { chain_id, .. } => {
                write!(f, "looking up layer {chain_id} in the layer store failed")
            }
            Self::MissingInitialLayer { chain_id } => write!(
                f,
                "the image's base layers (ChainID {chain_id}) are not in the layer store"
            ),
            Self::Register { id, .. } => {
                write!(f, "registering layer {id} in the layer store failed")
            }
            Self::DiffIdMismatch {
                id,
                expected,
                actual,
            } => write!(
                f,
                "layer {id} has DiffID {actual}, but the image declares {expected}"
            ),
            Self::InconsistentStore {
                id,
                expected,
                actual,
            } => write!(
                f,
                "the layer store registered layer {id} as {actual}, \
                 but its parent and DiffID give ChainID {expected}"
            ),
            Self::Panicked { message } => write!(f, "layer transfer task panicked: {message}"),
        }
    }
}

// Written out rather than derived: `source` must return the shared error itself (not the `Arc`
// around it), so that downcasts and chain walks, such as a retry classifier's, see the
// original error types.
impl Error for DownloadError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            Self::Failed { source, .. }
            | Self::Lookup { source, .. }
            | Self::Register { source, .. } => Some(&**source),
            _ => None,
        }
    }
}

impl From<TransferError<DownloadError>> for DownloadError {
    fn from(err: TransferError<DownloadError>) -> Self {
        match err {
            TransferError::Cancelled => Self::Cancelled,
            TransferError::Panicked { message } => Self::Panicked { message },
            TransferError::Failed(err) => err,
        }
    }
}

/// A descriptor handed to the manager; [`DownloadDescriptor::close`] runs when the last user
/// lets go of it.
struct Described<D: DownloadDescriptor>(D);

impl<D: DownloadDescriptor> Deref for Described<D> {
    type Target = D;

    fn deref(&self) -> &D {
        &self.0
    }
}

impl<D: DownloadDescriptor> Drop for Described<D> {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// Ensures the layers of images are in a [`LayerStore`], downloading what is missing.
pub struct LayerDownloadManager<S: LayerStore> {
    store: Arc<S>,
    downloads: TransferManager<S::Staged, DownloadError>,
    registrations: TransferManager<LayerHandle<S>, DownloadError>,
    policy: RetryPolicy,
}

impl<S: LayerStore> fmt::Debug for LayerDownloadManager<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LayerDownloadManager")
            .field("downloads", &self.downloads)
            .field("registrations", &self.registrations)
            .field("policy", &self.policy)
            .finish()
    }
}

impl<S: LayerStore> LayerDownloadManager<S> {
    /// A manager registering into `store`, running at most `concurrency` downloads at once
    /// (0 = unlimited), with the default [`RetryPolicy`].
    pub fn new(store: Arc<S>, concurrency: usize) -> Self {
        Self {
            store,
            downloads: TransferManager::new(concurrency),
            registrations: TransferManager::new(0),
            policy: RetryPolicy::default(),
        }
    }

    /// Sets the number of download attempts per layer (first one included, at least 1).
    pub fn with_max_download_attempts(mut self, max_attempts: u32) -> Self {
        self.policy = self.policy.with_max_attempts(max_attempts);
        self
    }

    /// Replaces the retry policy.
    pub fn with_retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// The retry policy.
    pub fn retry_policy(&self) -> &RetryPolicy {
        &self.policy
    }

    /// Changes the download concurrency limit (0 = unlimited); raising it starts queued
    /// downloads at once.
    pub fn set_concurrency(&self, concurrency: usize) {
        self.downloads.set_concurrency(concurrency);
    }

    /// The download concurrency limit.
    pub fn concurrency(&self) -> usize {
        self.downloads.concurrency()
    }

    /// The layer store.
    pub fn store(&self) -> &Arc<S> {
        &self.store
    }

    /// Number of downloads and registrations tracked (running, queued, or finished but still
    /// watched); 0 when the manager is idle.
    pub fn tracked(&self) -> usize {
        self.downloads.len() + self.registrations.len()
    }

    /// Makes sure the layers `descriptors` describe (bottom first) are in the store on top of
    /// `initial` (usually empty), and returns the resulting root filesystem with a guard
    /// keeping its top layer referenced.
    ///
    /// Progress for every layer goes to `progress`. Dropping the returned future cancels this
    /// pull's part of the work (see the module documentation).
    pub async fn download<D>(
        &self,
        initial: RootFs,
        descriptors: Vec<D>,
        progress: SharedProgress,
    ) -> Result<(RootFs, ReleaseGuard), DownloadError>
    where
        D: DownloadDescriptor<Staged = S::Staged>,
    {
        self.run(initial, descriptors, progress).await
    }

    /// Like [`download`](Self::download), returning [`DownloadError::Cancelled`] as soon as
    /// `cancel` fires.
    pub async fn download_until_cancelled<D>(
        &self,
        initial: RootFs,
        descriptors: Vec<D>,
        progress: SharedProgress,
        cancel: &CancellationToken,
    ) -> Result<(RootFs, ReleaseGuard), DownloadError>
    where
        D: DownloadDescriptor<Staged = S::Staged>,
    {
        tokio::select! {
            biased;
            () = cancel.cancelled() => Err(DownloadError::Cancelled),
            result = self.run(initial, descriptors, progress) => result,
        }
    }

    async fn run<D>(
        &self,
        initial: RootFs,
        descriptors: Vec<D>,
        progress: SharedProgress,
    ) -> Result<(RootFs, ReleaseGuard), DownloadError>
    where
        D: DownloadDescriptor<Staged = S::Staged>,
    {
        let descriptors: Vec<Arc<Described<D>>> = descriptors
            .into_iter()
            .map(|d| Arc::new(Described(d)))
            .collect();
        let mut rootfs = initial;
        let mut top: Option<LayerHandle<S>> = None;

        if let Some(chain) = rootfs.chain_id() {
            match self.lookup(&chain).await? {
                Some(info) => top = Some(lease(&self.store, info)),
                None => return Err(DownloadError::MissingInitialLayer { chain_id: chain }),
            }
        }

        // The bottom layers the store already has.
        let mut present = 0;
        for desc in &descriptors {
            let Some(diff_id) = desc.diff_id() else {
                break;
            };
            let chain = chain_id(top.as_ref().map(|l| &l.info.chain_id), &diff_id);
            let Some(info) = self.lookup(&chain).await? else {
                break;
            };
            let layer = lease(&self.store, info);
            check_consistent(&desc.id(), &chain, &layer.info)?;
            progress.update(Progress::new(desc.id(), "Already exists"));
            desc.registered(&layer.info.diff_id);
            rootfs.append(layer.info.diff_id.clone());
            top = Some(layer);
            present += 1;
        }

        // Every other position: a registration transfer, each on top of the previous one.
        let mut parent = ParentLayer::Present(top.clone());
        let mut parent_key = top
            .as_ref()
            .map(|l| l.info.chain_id.to_string())
            .unwrap_or_default();
        let mut parent_chain = top.as_ref().map(|l| l.info.chain_id.clone());
        let mut chain_known = true;
        let mut pending = Vec::with_capacity(descriptors.len() - present);
        for desc in &descriptors[present..] {
            let expected_chain = match desc.diff_id() {
                Some(diff_id) if chain_known => Some(chain_id(parent_chain.as_ref(), &diff_id)),
                _ => None,
            };
            let key = match &expected_chain {
                Some(chain) => chain.to_string(),
                None => pending_key(&parent_key, &desc.key()),
            };
            let job = RegisterJob {
                store: Arc::clone(&self.store),
                downloads: self.downloads.clone(),
                policy: self.policy.clone(),
                desc: Arc::clone(desc),
                parent,
                expected_chain: expected_chain.clone(),
            };
            let (transfer, watcher) = self.registrations.transfer(
                key.clone(),
                move |ctx| job.start(ctx),
                Some(Arc::clone(&progress)),
            );
            pending.push((Arc::clone(desc), watcher));
            parent = ParentLayer::Pending(transfer);
            parent_key = key;
            chain_known = expected_chain.is_some();
            parent_chain = expected_chain;
        }

        let layers = try_join_all(pending.iter().map(|(_, watcher)| watcher.wait())).await?;
        for ((desc, _), layer) in pending.iter().zip(&layers) {
            desc.registered(&layer.info.diff_id);
            rootfs.append(layer.info.diff_id.clone());
        }
        let top = layers.last().cloned().or(top);
        Ok((rootfs, ReleaseGuard::new(top)))
    }

    async fn lookup(&self, chain: &Digest) -> Result<Option<LayerInfo>, DownloadError> {
        self.store
            .get(chain)
            .await
            .map_err(|source| DownloadError::Lookup {
                chain_id: chain.clone(),
                source: share(source),
            })
    }
}

fn check_consistent(id: &str, expected: &Digest, info: &LayerInfo) -> Result<(), DownloadError> {
    if &info.chain_id == expected {
        Ok(())
    } else {
        Err(DownloadError::InconsistentStore {
            id: id.to_string(),
            expected: expected.clone(),
            actual: info.chain_id.clone(),
        })
    }
}

/// The registration key of a layer whose ChainID is not known up front: its parent's key and
/// its blob determine its content.
fn pending_key(parent_key: &str, blob_key: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(parent_key.as_bytes());
    hasher.update(b" ");
    hasher.update(blob_key.as_bytes());
    format!("pending:{:x}", hasher.finalize())
}

/// The layer a registration goes on top of.
enum ParentLayer<S: LayerStore> {
    /// Already in the store (or no parent at all).
    Present(Option<LayerHandle<S>>),
    /// Registered by an earlier registration transfer.
    Pending(Transfer<LayerHandle<S>, DownloadError>),
}

enum ParentWait<S: LayerStore> {
    Present(Option<LayerHandle<S>>),
    Pending(Watcher<LayerHandle<S>, DownloadError>),
}

struct RegisterJob<S: LayerStore, D: DownloadDescriptor> {
    store: Arc<S>,
    downloads: TransferManager<S::Staged, DownloadError>,
    policy: RetryPolicy,
    desc: Arc<Described<D>>,
    parent: ParentLayer<S>,
    expected_chain: Option<Digest>,
}

impl<S, D> RegisterJob<S, D>
where
    S: LayerStore,
    D: DownloadDescriptor<Staged = S::Staged>,
{
    /// Synchronous set-up, in layer order: start (or join) the download and watch the parent.
    fn start(
        self,
        ctx: TransferContext,
    ) -> impl Future<Output = Result<LayerHandle<S>, TransferError<DownloadError>>> + Send + 'static
    {
        let id = self.desc.id();
        ctx.progress(Progress::new(id.clone(), "Pulling fs layer"));
        let desc = Arc::clone(&self.desc);
        let policy = self.policy;
        let (_, download) = self.downloads.transfer(
            self.desc.key(),
            move |dctx| start_download(desc, policy, dctx),
            Some(ctx.progress_output()),
        );
        let parent = match self.parent {
            ParentLayer::Present(layer) => ParentWait::Present(layer),
            ParentLayer::Pending(transfer) => ParentWait::Pending(transfer.watch(None)),
        };
        register(
            self.store,
            self.desc,
            id,
            parent,
            download,
            self.expected_chain,
            ctx,
        )
    }
}

async fn register<S, D>(
    store: Arc<S>,
    desc: Arc<Described<D>>,
    id: String,
    parent: ParentWait<S>,
    download: Watcher<S::Staged, DownloadError>,
    expected_chain: Option<Digest>,
    ctx: TransferContext,
) -> Result<LayerHandle<S>, TransferError<DownloadError>>
where
    S: LayerStore,
    D: DownloadDescriptor<Staged = S::Staged>,
{
    // Another pull may have registered this layer since the caller looked.
    if let Some(chain) = &expected_chain {
        let found = tokio::select! {
            biased;
            () = ctx.cancelled() => return Err(TransferError::Cancelled),
            found = store.get(chain) => found,
        };
        match found {
            Ok(Some(info)) => {
                let layer = lease(&store, info);
                check_consistent(&id, chain, &layer.info).map_err(TransferError::Failed)?;
                ctx.progress(Progress::new(id, "Already exists"));
                return Ok(layer);
            }
            Ok(None) => {}
            Err(source) => {
                return Err(TransferError::Failed(DownloadError::Lookup {
                    chain_id: chain.clone(),
                    source: share(source),
                }));
            }
        }
    }

    // Wait for the parent's registration and this layer's download; either failing ends this
    // registration at once.
    let parent_layer = async {
        match &parent {
            ParentWait::Present(layer) => Ok(layer.clone()),
            ParentWait::Pending(watcher) => watcher.wait().await.map(Some),
        }
    };
    let (parent_layer, staged) = tokio::select! {
        biased;
        () = ctx.cancelled() => return Err(TransferError::Cancelled),
        joined = try_join(parent_layer, download.wait()) => joined?,
    };
    drop(download);
    drop(parent);
    if ctx.is_cancelled() {
        return Err(TransferError::Cancelled);
    }

    // Not interrupted once started: the store's registration is atomic, and if this transfer
    // was cancelled meanwhile, the reference is released as soon as the transfer is.
    let parent_chain = parent_layer.as_ref().map(|l| l.info.chain_id.clone());
    let info = store
        .register(parent_chain.as_ref(), staged)
        .await
        .map_err(|source| {
            TransferError::Failed(DownloadError::Register {
                id: id.clone(),
                source: share(source),
            })
        })?;
    let layer = lease(&store, info);
    let expected = chain_id(parent_chain.as_ref(), &layer.info.diff_id);
    check_consistent(&id, &expected, &layer.info).map_err(TransferError::Failed)?;
    if let Some(declared) = desc.diff_id()
        && declared != layer.info.diff_id
    {
        return Err(TransferError::Failed(DownloadError::DiffIdMismatch {
            id,
            expected: declared,
            actual: layer.info.diff_id.clone(),
        }));
    }
    drop(parent_layer);
    ctx.progress(Progress::new(id, "Pull complete"));
    Ok(layer)
}

fn start_download<D: DownloadDescriptor>(
    desc: Arc<Described<D>>,
    policy: RetryPolicy,
    ctx: TransferContext,
) -> impl Future<Output = Result<D::Staged, TransferError<DownloadError>>> + Send + 'static {
    let id = desc.id();
    ctx.set_waiting_progress(Progress::new(id.clone(), "Waiting"));
    async move {
        let result = run_attempts(&policy, &ctx, &id, |attempt| desc.download(attempt)).await;
        match result {
            Ok(staged) => {
                ctx.progress(Progress::new(id, "Download complete"));
                Ok(staged)
            }
            Err(AttemptsError::Cancelled) => Err(TransferError::Cancelled),
            Err(AttemptsError::Failed {
                attempts,
                retryable,
                source,
            }) => Err(TransferError::Failed(DownloadError::Failed {
                id,
                attempts,
                retryable,
                source: share(source),
            })),
        }
    }
}
