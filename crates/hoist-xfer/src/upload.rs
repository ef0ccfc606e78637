//! Layer uploads: push every layer of an image concurrently, once per key, with retries.
//!
//! [`LayerUploadManager::upload`] starts one upload transfer per distinct
//! [`UploadDescriptor::key`] (a second push of the same key, in the same call or a concurrent
//! one, attaches to the running upload), bounded by the concurrency limit, retried per the
//! manager's [`RetryPolicy`]. When all have succeeded, every descriptor (duplicates included)
//! gets the result through [`UploadDescriptor::set_remote_descriptor`]. The first failure ends
//! the call at once.

use std::error::Error;
use std::fmt;
use std::future::Future;
use std::sync::Arc;

use futures_util::future::try_join_all;
use tokio_util::sync::CancellationToken;

use crate::download::attempts_text;
use crate::error::{BoxError, SharedError, share};
use crate::progress::{Progress, SharedProgress};
use crate::retry::{AttemptsError, RetryPolicy, UploadContext, run_attempts};
use crate::transfer::{TransferContext, TransferError, TransferManager};

/// A layer that may need uploading.
pub trait UploadDescriptor: Send + Sync + 'static {
    /// What a finished upload yields (the blob's descriptor in the target repository, say).
    type Remote: Clone + Send + Sync + 'static;

    /// The key uploads are de-duplicated by (the target repository and the layer, say).
    fn key(&self) -> String;

    /// The id progress is reported under.
    fn id(&self) -> String;

    /// Uploads the layer (or finds it already there). Called once per attempt; `ctx` carries
    /// the attempt number, the offset a previous attempt left, the progress output and the
    /// cancellation token. Wrap permanent errors in [`DoNotRetry`](crate::DoNotRetry).
    fn upload(
        &self,
        ctx: UploadContext,
    ) -> impl Future<Output = Result<Self::Remote, BoxError>> + Send;

    /// Receives the result of the upload for this descriptor's key.
    fn set_remote_descriptor(&self, remote: Self::Remote);
}

/// Why an upload failed.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum UploadError {
    /// The caller cancelled the upload.
    Cancelled,
    /// A layer could not be uploaded; `source` is the last attempt's error.
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
    /// An upload task panicked (a bug in a descriptor).
    Panicked {
        /// The panic message.
        message: String,
    },
}

impl UploadError {
    /// Whether the caller cancelled.
    pub fn is_cancelled(&self) -> bool {
        matches!(self, Self::Cancelled)
    }

    /// Whether trying again later may succeed (retries ran out on transient errors).
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

impl fmt::Display for UploadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cancelled => f.write_str("layer upload cancelled"),
            Self::Failed { id, attempts, .. } => write!(
                f,
                "uploading layer {id} failed after {}",
                attempts_text(*attempts)
            ),
            Self::Panicked { message } => write!(f, "layer upload task panicked: {message}"),
        }
    }
}

// Written out rather than derived, for the same reason as `DownloadError`'s: the source is the
// shared error itself, so downcasts see the original error types.
impl Error for UploadError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            Self::Failed { source, .. } => Some(&**source),
            _ => None,
        }
    }
}

impl From<TransferError<UploadError>> for UploadError {
    fn from(err: TransferError<UploadError>) -> Self {
        match err {
            TransferError::Cancelled => Self::Cancelled,
            TransferError::Panicked { message } => Self::Panicked { message },
            TransferError::Failed(err) => err,
        }
    }
}

/// Uploads layers, de-duplicated by key, under a concurrency limit.
pub struct LayerUploadManager<R> {
    uploads: TransferManager<R, UploadError>,
    policy: RetryPolicy,
}

impl<R> fmt::Debug for LayerUploadManager<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LayerUploadManager")
            .field("uploads", &self.uploads)
            .field("policy", &self.policy)
            .finish()
    }
}

impl<R: Clone + Send + Sync + 'static> LayerUploadManager<R> {
    /// A manager running at most `concurrency` uploads at once (0 = unlimited), with the
    /// default [`RetryPolicy`].
    pub fn new(concurrency: usize) -> Self {
        Self {
            uploads: TransferManager::new(concurrency),
            policy: RetryPolicy::default(),
        }
    }

    /// Sets the number of upload attempts per layer (first one included, at least 1).
    pub fn with_max_upload_attempts(mut self, max_attempts: u32) -> Self {
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

    /// Changes the concurrency limit (0 = unlimited); raising it starts queued uploads at once.
    pub fn set_concurrency(&self, concurrency: usize) {
        self.uploads.set_concurrency(concurrency);
    }

    /// The concurrency limit.
    pub fn concurrency(&self) -> usize {
        self.uploads.concurrency()
    }

    /// Number of uploads tracked (running, queued, or finished but still watched).
    pub fn tracked(&self) -> usize {
        self.uploads.len()
    }

    /// Uploads every layer, then hands each descriptor its result. Progress goes to
    /// `progress`; dropping the future releases this call's interest in every upload.
    pub async fn upload<D>(
        &self,
        descriptors: Vec<D>,
        progress: SharedProgress,
    ) -> Result<(), UploadError>
    where
        D: UploadDescriptor<Remote = R>,
    {
        self.run(descriptors, progress).await
    }

    /// Like [`upload`](Self::upload), returning [`UploadError::Cancelled`] as soon as `cancel`
    /// fires.
    pub async fn upload_until_cancelled<D>(
        &self,
        descriptors: Vec<D>,
        progress: SharedProgress,
        cancel: &CancellationToken,
    ) -> Result<(), UploadError>
    where
        D: UploadDescriptor<Remote = R>,
    {
        tokio::select! {
            biased;
            () = cancel.cancelled() => Err(UploadError::Cancelled),
            result = self.run(descriptors, progress) => result,
        }
    }

    async fn run<D>(&self, descriptors: Vec<D>, progress: SharedProgress) -> Result<(), UploadError>
    where
        D: UploadDescriptor<Remote = R>,
    {
        let descriptors: Vec<Arc<D>> = descriptors.into_iter().map(Arc::new).collect();
        let watchers: Vec<_> = descriptors
            .iter()
            .map(|desc| {
                let job = Arc::clone(desc);
                let policy = self.policy.clone();
                let (_, watcher) = self.uploads.transfer(
                    desc.key(),
                    move |ctx| start_upload(job, policy, ctx),
                    Some(Arc::clone(&progress)),
                );
                watcher
            })
            .collect();
        let remotes = try_join_all(watchers.iter().map(|w| w.wait())).await?;
        for (desc, remote) in descriptors.iter().zip(remotes) {
            desc.set_remote_descriptor(remote);
        }
        Ok(())
    }
}

fn start_upload<D: UploadDescriptor>(
    desc: Arc<D>,
    policy: RetryPolicy,
    ctx: TransferContext,
) -> impl Future<Output = Result<D::Remote, TransferError<UploadError>>> + Send + 'static {
    let id = desc.id();
    ctx.progress(Progress::new(id.clone(), "Preparing"));
    ctx.set_waiting_progress(Progress::new(id.clone(), "Waiting"));
    async move {
        match run_attempts(&policy, &ctx, &id, |attempt| desc.upload(attempt)).await {
            Ok(remote) => {
                ctx.progress(Progress::new(id, "Pushed"));
                Ok(remote)
            }
            Err(AttemptsError::Cancelled) => Err(TransferError::Cancelled),
            Err(AttemptsError::Failed {
                attempts,
                retryable,
                source,
            }) => Err(TransferError::Failed(UploadError::Failed {
                id,
                attempts,
                retryable,
                source: share(source),
            })),
        }
    }
}
