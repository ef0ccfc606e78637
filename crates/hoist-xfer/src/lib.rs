//! Transfer engine: deduplicated, watched, retried transfers with concurrency limits.
//!
//! `hoist-xfer` schedules the work of moving layers without knowing how they move: there is no
//! HTTP and no filesystem here. Callers describe each layer with a descriptor
//! ([`DownloadDescriptor`], [`UploadDescriptor`]) or hand a closure to the generic
//! [`TransferManager`]; the engine decides what runs when, shares work between callers, retries
//! failures and reports progress. Everything runs on tokio; tests drive it with a paused clock.
//!
//! # Layers of the engine
//! - [`TransferManager`] (module [`transfer`]): transfers keyed by a string. A second request
//!   for a running key attaches a new [`Watcher`] instead of starting again. At most N
//!   transfers hold a slot (N changeable at runtime; raising it starts queued transfers at
//!   once), waiting transfers queue first in, first out, and a transfer that only waits can
//!   give its slot back ([`TransferContext::inactive`]). Progress is broadcast through a
//!   latest-value channel: a late watcher first gets the latest state and a slow watcher skips
//!   states rather than holding the transfer back. When the last watcher goes away the
//!   transfer is cancelled ([`tokio_util::sync::CancellationToken`]); while anyone watches it
//!   runs on, whatever other callers do.
//! - [`RetryPolicy`] (module [`retry`]): bounded attempts, exponential backoff with jitter, a
//!   countdown in progress naming the cause (`"Retrying in 4s: connection reset"`),
//!   [`RetryAfter`] delays honoured, [`DoNotRetry`] recognised anywhere in an error's source
//!   chain, and a caller-supplied classifier for other crates' typed errors.
//! - [`LayerDownloadManager`] (module [`download`]): every missing layer of an image downloads
//!   (fetch, decompress, extract into staging) concurrently; only registration into the
//!   [`LayerStore`] is ordered, parent first. Downloads are shared per blob, registrations per
//!   ChainID, and layers the store has are reported as "Already exists" and skipped.
//! - [`LayerUploadManager`] (module [`upload`]): uploads shared per key, under the limit, with
//!   the same retries; every descriptor receives the result.
//! - [`RootFs`] and [`chain_id`] (module [`rootfs`]): DiffIDs and ChainIDs as the OCI image
//!   specification defines them.
//! - [`Progress`] and [`ProgressOutput`] (module [`progress`]): what watchers receive.
//!
//! # Design decisions
//! - Transfer functions are called synchronously when a transfer is created, and the future
//!   they return runs once it holds a slot. The synchronous part lets a transfer start the
//!   transfers it depends on in a deterministic order (a layer registration starts its
//!   download there, so downloads queue bottom layer first).
//! - Cancellation is cooperative. The engine never drops a running transfer future; futures
//!   watch their token. Descriptor attempts are dropped at their next await point when the
//!   token fires, but a layer registration that has begun always completes, so cancelling a
//!   pull never leaves a half-registered layer (the completed layer's reference is released).
//! - Results are shared, so they are cloned: `T: Clone` and `E: Clone` for transfers, and a
//!   descriptor's staged layer is typically an `Arc`.
//! - Store references are held by values whose drop releases them, so every exit path (error,
//!   cancellation, panic) gives back what it took.

pub mod download;
pub mod error;
pub mod progress;
pub mod retry;
pub mod rootfs;
mod slots;
mod sync;
pub mod transfer;
pub mod upload;

pub use download::{
    DownloadDescriptor, DownloadError, LayerDownloadManager, LayerInfo, LayerStore, ReleaseGuard,
};
pub use error::{BoxError, SharedError, describe};
pub use progress::{ChannelProgress, DiscardProgress, Progress, ProgressOutput, SharedProgress};
pub use retry::{
    AttemptContext, DoNotRetry, DownloadContext, RetryAfter, RetryClassifier, RetryDecision,
    RetryPolicy, UploadContext, is_do_not_retry, retry_after,
};
pub use rootfs::{RootFs, chain_id};
pub use transfer::{Transfer, TransferContext, TransferError, TransferManager, Watcher};
pub use upload::{LayerUploadManager, UploadDescriptor, UploadError};
