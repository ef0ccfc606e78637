//! What a pull or push is configured with: [`PullConfig`], [`PushConfig`], image events, and the
//! retry policy that understands hoist's typed errors.

use std::collections::HashMap;
use std::error::Error as StdError;
use std::fmt;
use std::sync::{Arc, Mutex};

use hoist_registry::RegistryClient;
use hoist_store::Store;
use hoist_store::layer::LayerError;
use hoist_store::{Digest, StoreError};
use hoist_xfer::{
    DiscardProgress, LayerDownloadManager, LayerUploadManager, RetryDecision, RetryPolicy,
    SharedProgress,
};

use crate::endpoint::Registries;
use crate::error::{Error, Result};
use crate::foreign::ForeignUrls;
use crate::layers::LocalLayers;
use crate::manifest::default_config_types;
use crate::platform::Platform;
use crate::push::PushedBlob;

/// Layer downloads running at once by default (per manager).
pub const DEFAULT_DOWNLOAD_CONCURRENCY: usize = 3;
/// Layer uploads running at once by default (per manager).
pub const DEFAULT_UPLOAD_CONCURRENCY: usize = 5;
/// Tags pulled at once by [`crate::pull_all_tags`] by default.
pub const DEFAULT_TAG_CONCURRENCY: usize = 3;
/// Bytes sent per `PATCH` of a chunked upload by default.
pub const DEFAULT_CHUNK_SIZE: u64 = 32 << 20;

/// What happened to an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EventAction {
    /// The image was pulled into the local store.
    Pull,
    /// The image was pushed to a registry.
    Push,
}

impl EventAction {
    /// `pull` or `push`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventAction::Pull => "pull",
            EventAction::Push => "push",
        }
    }
}

/// An event about an image, for the event logger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageEvent {
    /// What happened.
    pub action: EventAction,
    /// The image, as a full reference (`registry/repository:tag`).
    pub reference: String,
    /// The digest the reference now names (the manifest or index).
    pub digest: Digest,
}

/// Receives [`ImageEvent`]s. Called once per image, after it is recorded; must not block long.
pub type EventLogger = Arc<dyn Fn(&ImageEvent) + Send + Sync>;

/// The retry policy hoist uses for layer transfers: the engine's defaults (5 attempts, backoff
/// with jitter) with a classifier for hoist's typed errors: registry errors retry when
/// [`hoist_registry::Error::is_retryable`] says so, after their `Retry-After` if they carry one;
/// store, layer and pull errors retry when they are transient; everything else stops at once.
pub fn retry_policy() -> RetryPolicy {
    RetryPolicy::default().with_classifier(classify)
}

/// The retry decision for one level of an error chain (see [`retry_policy`]).
pub fn classify(err: &(dyn StdError + 'static)) -> RetryDecision {
    if let Some(e) = err.downcast_ref::<hoist_registry::Error>() {
        return classify_registry(e);
    }
    if let Some(e) = err.downcast_ref::<Error>() {
        if let Some(r) = e.registry_error() {
            return classify_registry(r);
        }
        return retry_if(e.is_retryable());
    }
    if let Some(e) = err.downcast_ref::<StoreError>() {
        return retry_if(e.is_retryable());
    }
    if let Some(e) = err.downcast_ref::<LayerError>() {
        return retry_if(e.is_retryable());
    }
    RetryDecision::Undecided
}

fn classify_registry(e: &hoist_registry::Error) -> RetryDecision {
    match (e.retry_after(), e.is_retryable()) {
        (Some(delay), true) => RetryDecision::RetryAfter(delay),
        (None, true) => RetryDecision::Retry,
        (_, false) => RetryDecision::DoNotRetry,
    }
}

fn retry_if(retryable: bool) -> RetryDecision {
    if retryable {
        RetryDecision::Retry
    } else {
        RetryDecision::DoNotRetry
    }
}

/// How to pull images.
#[derive(Clone)]
#[non_exhaustive]
pub struct PullConfig {
    /// The registry client (credentials, TLS, timeouts).
    pub client: RegistryClient,
    /// The local store images are pulled into.
    pub store: Store,
    /// Mirrors per registry.
    pub registries: Registries,
    /// Runs layer downloads; share one between pulls so that common layers move once.
    pub download_manager: Arc<LayerDownloadManager<LocalLayers>>,
    /// Where per-layer progress goes.
    pub progress: SharedProgress,
    /// Told about every image pulled.
    pub event_logger: Option<EventLogger>,
    /// The platform to pick from indexes; `None` for this machine's.
    pub platform: Option<Platform>,
    /// The config media types accepted (default [`crate::manifest::IMAGE_CONFIG_TYPES`]).
    pub config_types: Vec<String>,
    /// Whether layers are extracted into the layer store (the default). Without, blobs are only
    /// fetched and verified.
    pub unpack: bool,
    /// How many tags [`crate::pull_all_tags`] pulls at once.
    pub tag_concurrency: usize,
    /// Most bytes one layer may unpack to (its tar stream and the file contents in it): the
    /// guard against decompression bombs. Over it, the pull fails with
    /// [`Error::LayerTooLarge`] and keeps nothing of the layer. Default
    /// [`DEFAULT_MAX_LAYER_BYTES`].
    pub max_layer_bytes: u64,
    /// Whether zstd:chunked and eStargz layers may be pulled partially: only the chunks whose
    /// files the store lacks are fetched and the layer is rebuilt and verified (the default).
    /// The compressed blob is then not stored; see [`crate::pull`].
    pub partial: bool,
    /// Bytes per ranged request when fetching a blob; 0 (the default, [`DEFAULT_FETCH_WINDOW`])
    /// fetches each blob with one request. With a window, a blob of two windows or more is
    /// fetched as consecutive `Range` requests, the next sent shortly before the current one
    /// ends, so that a killed pull can have made the registry send at most a window and a half
    /// more per layer than it wrote (see [`hoist_registry::window`]). Off by default: each
    /// request costs the registry a few ms, which on a fast link is time the pull waits
    /// (`hoist pull --no-unpack` of a 202 MB image on loopback: 0.31 s in one request per blob,
    /// 0.33 s in 16 MiB windows, 0.42 s in 4 MiB windows).
    pub fetch_window: u64,
    /// Which `urls` of non-distributable layer descriptors may be fetched: none by default.
    /// Allowed URLs are tried in order before the registry, without credentials; their bytes
    /// are verified like the registry's, and a URL that fails falls to the next, then to the
    /// registry.
    pub foreign_urls: ForeignUrls,
}

/// The default [`PullConfig::fetch_window`]: 0, one request per blob.
pub const DEFAULT_FETCH_WINDOW: u64 = 0;

/// The default [`PullConfig::max_layer_bytes`]: 64 GiB.
pub const DEFAULT_MAX_LAYER_BYTES: u64 = hoist_store::layer::DEFAULT_MAX_BYTES;

impl fmt::Debug for PullConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PullConfig")
            .field("store", &self.store.root())
            .field("registries", &self.registries)
            .field("platform", &self.platform)
            .field("unpack", &self.unpack)
            .field("tag_concurrency", &self.tag_concurrency)
            .field("max_layer_bytes", &self.max_layer_bytes)
            .field("partial", &self.partial)
            .field("fetch_window", &self.fetch_window)
            .field("foreign_urls", &self.foreign_urls)
            .finish_non_exhaustive()
    }
}

impl PullConfig {
    /// A configuration pulling with `client` into `store`: no mirrors, this machine's platform,
    /// layers unpacked, progress discarded, a download manager with
    /// [`DEFAULT_DOWNLOAD_CONCURRENCY`] and [`retry_policy`].
    pub fn new(client: RegistryClient, store: Store) -> Result<PullConfig> {
        let layers = LocalLayers::new(store.clone())?;
        let manager = LayerDownloadManager::new(Arc::new(layers), DEFAULT_DOWNLOAD_CONCURRENCY)
            .with_retry_policy(retry_policy());
        Ok(PullConfig {
            client,
            store,
            registries: Registries::new(),
            download_manager: Arc::new(manager),
            progress: DiscardProgress::shared(),
            event_logger: None,
            platform: None,
            config_types: default_config_types(),
            unpack: true,
            tag_concurrency: DEFAULT_TAG_CONCURRENCY,
            max_layer_bytes: DEFAULT_MAX_LAYER_BYTES,
            partial: true,
            fetch_window: DEFAULT_FETCH_WINDOW,
            foreign_urls: ForeignUrls::Never,
        })
    }

    /// Sets [`PullConfig::max_layer_bytes`] (at least 1).
    pub fn with_max_layer_bytes(mut self, max_layer_bytes: u64) -> Self {
        self.max_layer_bytes = max_layer_bytes.max(1);
        self
    }

    /// Sets [`PullConfig::fetch_window`] (0: one request per blob).
    pub fn with_fetch_window(mut self, bytes: u64) -> Self {
        self.fetch_window = bytes;
        self
    }

    /// Sets [`PullConfig::foreign_urls`].
    pub fn with_foreign_urls(mut self, foreign_urls: ForeignUrls) -> Self {
        self.foreign_urls = foreign_urls;
        self
    }

    /// Sets the mirrors.
    pub fn with_registries(mut self, registries: Registries) -> Self {
        self.registries = registries;
        self
    }

    /// Sets the progress output.
    pub fn with_progress(mut self, progress: SharedProgress) -> Self {
        self.progress = progress;
        self
    }

    /// Sets the event logger.
    pub fn with_event_logger(mut self, logger: EventLogger) -> Self {
        self.event_logger = Some(logger);
        self
    }

    /// Sets the platform to pick from indexes.
    pub fn with_platform(mut self, platform: Platform) -> Self {
        self.platform = Some(platform);
        self
    }

    /// Whether to extract layers (`false` is `--no-unpack`).
    pub fn with_unpack(mut self, unpack: bool) -> Self {
        self.unpack = unpack;
        self
    }

    /// Replaces the download manager (to share one, or to set its concurrency and retries).
    pub fn with_download_manager(
        mut self,
        manager: Arc<LayerDownloadManager<LocalLayers>>,
    ) -> Self {
        self.download_manager = manager;
        self
    }

    /// Replaces the download manager by one with `concurrency` and `policy`, over the same
    /// layer store.
    pub fn with_retry_policy(mut self, policy: RetryPolicy) -> Self {
        let store = Arc::clone(self.download_manager.store());
        let concurrency = self.download_manager.concurrency();
        self.download_manager =
            Arc::new(LayerDownloadManager::new(store, concurrency).with_retry_policy(policy));
        self
    }

    /// The platform indexes are matched against.
    pub fn wanted_platform(&self) -> Platform {
        self.platform.clone().unwrap_or_else(Platform::host)
    }
}

/// How to push images.
#[derive(Clone)]
#[non_exhaustive]
pub struct PushConfig {
    /// The registry client.
    pub client: RegistryClient,
    /// The local store images are pushed from.
    pub store: Store,
    /// Runs layer uploads; share one between pushes so that common layers move once.
    pub upload_manager: Arc<LayerUploadManager<PushedBlob>>,
    /// Where per-layer progress goes.
    pub progress: SharedProgress,
    /// Told about every image pushed.
    pub event_logger: Option<EventLogger>,
    /// The platform to push when the reference names an index whose images are not all in the
    /// store; `None` for this machine's.
    pub platform: Option<Platform>,
    /// Bytes per `PATCH` of a chunked upload.
    pub chunk_size: u64,
    /// Whether non-distributable ("foreign") layers, which their manifest points to by `urls`,
    /// are uploaded too. By default they are not (as Docker does): their licence may forbid it,
    /// and the manifest, pushed unchanged, still names where they are.
    pub push_foreign_layers: bool,
    /// The final progress action of layers that were not uploaded, by progress id.
    pub(crate) finals: Arc<Mutex<HashMap<String, String>>>,
}

impl fmt::Debug for PushConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PushConfig")
            .field("store", &self.store.root())
            .field("platform", &self.platform)
            .field("chunk_size", &self.chunk_size)
            .field("push_foreign_layers", &self.push_foreign_layers)
            .finish_non_exhaustive()
    }
}

impl PushConfig {
    /// A configuration pushing with `client` from `store`: progress discarded, an upload manager
    /// with [`DEFAULT_UPLOAD_CONCURRENCY`] and [`retry_policy`], [`DEFAULT_CHUNK_SIZE`].
    pub fn new(client: RegistryClient, store: Store) -> PushConfig {
        PushConfig {
            client,
            store,
            upload_manager: Arc::new(
                LayerUploadManager::new(DEFAULT_UPLOAD_CONCURRENCY)
                    .with_retry_policy(retry_policy()),
            ),
            progress: DiscardProgress::shared(),
            event_logger: None,
            platform: None,
            chunk_size: DEFAULT_CHUNK_SIZE,
            push_foreign_layers: false,
            finals: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Sets [`PushConfig::push_foreign_layers`].
    pub fn with_push_foreign_layers(mut self, push: bool) -> Self {
        self.push_foreign_layers = push;
        self
    }

    /// Sets the progress output.
    pub fn with_progress(mut self, progress: SharedProgress) -> Self {
        self.progress = progress;
        self
    }

    /// Sets the event logger.
    pub fn with_event_logger(mut self, logger: EventLogger) -> Self {
        self.event_logger = Some(logger);
        self
    }

    /// Sets the platform pushed from partially present indexes.
    pub fn with_platform(mut self, platform: Platform) -> Self {
        self.platform = Some(platform);
        self
    }

    /// Sets the bytes per `PATCH` (at least 1).
    pub fn with_chunk_size(mut self, chunk_size: u64) -> Self {
        self.chunk_size = chunk_size.max(1);
        self
    }

    /// Replaces the upload manager by one with `policy`.
    pub fn with_retry_policy(mut self, policy: RetryPolicy) -> Self {
        let concurrency = self.upload_manager.concurrency();
        self.upload_manager =
            Arc::new(LayerUploadManager::new(concurrency).with_retry_policy(policy));
        self
    }

    /// The platform used for partially present indexes.
    pub fn wanted_platform(&self) -> Platform {
        self.platform.clone().unwrap_or_else(Platform::host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn status(code: u16, retry_after: Option<Duration>) -> hoist_registry::Error {
        hoist_registry::Error::Status {
            method: "GET".into(),
            url: "http://r/v2/a/blobs/b".into(),
            status: http::StatusCode::from_u16(code).unwrap(),
            details: vec![],
            retry_after,
        }
    }

    #[test]
    fn registry_errors_retry_as_the_client_says_and_honour_retry_after() {
        assert_eq!(classify(&status(503, None)), RetryDecision::Retry);
        assert_eq!(
            classify(&status(429, Some(Duration::from_secs(7)))),
            RetryDecision::RetryAfter(Duration::from_secs(7))
        );
        assert_eq!(classify(&status(404, None)), RetryDecision::DoNotRetry);
        assert_eq!(classify(&status(401, None)), RetryDecision::DoNotRetry);
    }

    #[test]
    fn wrapped_registry_errors_are_classified_by_the_registry_error() {
        let policy = retry_policy();
        let e = Error::registry("fetching blob", status(404, None));
        assert_eq!(policy.classify(&e), RetryDecision::DoNotRetry);
        let e = Error::registry("fetching blob", status(502, None));
        assert_eq!(policy.classify(&e), RetryDecision::Retry);
    }

    #[test]
    fn permanent_pull_errors_stop_and_transient_ones_retry() {
        let blob = hoist_registry::digest::sha256_of(b"x");
        let policy = retry_policy();
        let corrupt = Error::Corrupt {
            blob: blob.clone(),
            reason: "digest mismatch".into(),
        };
        assert_eq!(policy.classify(&corrupt), RetryDecision::DoNotRetry);
        let short = Error::ShortBlob {
            blob,
            received: 1,
            size: 2,
        };
        assert_eq!(policy.classify(&short), RetryDecision::Retry);
        let io = std::io::Error::other("reset");
        assert_eq!(policy.classify(&io), RetryDecision::Retry);
    }
}
