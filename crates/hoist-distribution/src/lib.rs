//! Pull, push, tags and copy of container images.
//!
//! `hoist-distribution` wires the registry client ([`hoist_registry`]), the transfer engine
//! ([`hoist_xfer`]) and the local store ([`hoist_store`]) into the operations users run:
//!
//! - [`pull()`] (and [`pull_all_tags`], [`tags`]): registry -> local store, configured by
//!   [`PullConfig`]. Mirrors first ([`endpoint`]), manifests and indexes resolved to the wanted
//!   [`Platform`] ([`manifest`], [`platform`]), the config fetched beside the layers, every layer
//!   streamed into the content store while it is decompressed and extracted, verified
//!   before anything becomes visible, then recorded under its reference.
//! - [`push()`]: local store -> registry, configured by [`PushConfig`]: layers skipped when present,
//!   mounted from another repository when hoist knows one, else uploaded in resumable chunks;
//!   then config and manifest, digests preserved.
//! - [`copy`]: images between registries, OCI layouts and archives, Docker archives and the local
//!   store, through the [`transport`]s.
//!
//! Progress goes to a [`hoist_xfer::ProgressOutput`] with Docker's per-layer actions: "Waiting",
//! "Downloading", "Retrying in Ns: cause", "Verifying Checksum", "Extracting", "Download
//! complete", "Pull complete", "Already exists", "Retrying" (a corrupt blob fetched again),
//! "Preparing", "Pushing", "Mounted from REPO", "Layer already exists", "Pushed". Errors of pulls
//! and pushes are [`Error`], each with a stable [`ErrorKind`] and [`Error::is_retryable`].
//!
//! Everything is async (tokio); the store's blocking work runs on blocking threads.

// `Error` carries digests and the registry's or store's typed error inline, so it is larger than
// clippy's default threshold. It is returned once per pull, push or network operation, never in
// a hot loop; boxing every variant would make matching on it clumsier for no measurable gain.
#![allow(clippy::result_large_err)]

pub mod absent;
mod blocking;
pub mod chunked;
pub mod config;
pub mod copy;
pub mod endpoint;
pub mod error;
mod fetch;
pub mod foreign;
mod foreign_source;
mod hashing;
pub mod layers;
pub mod manifest;
pub mod partial;
pub mod platform;
pub mod pull;
pub mod push;
pub mod recompress;
mod retrying;
mod stream;
pub mod transport;
pub mod unpack;

pub use config::{
    DEFAULT_FETCH_WINDOW, DEFAULT_MAX_LAYER_BYTES, EventAction, EventLogger, ImageEvent,
    PullConfig, PushConfig, classify, retry_policy,
};
pub use endpoint::{Registries, translate_pull_error};
pub use error::{Error, ErrorKind, Result};
pub use fetch::ingest_reference;
pub use foreign::{ForeignUrlRefusal, ForeignUrls};
pub use layers::{LocalLayers, StagedBlob};
pub use platform::Platform;
pub use pull::{PullResult, PulledLayer, pull, pull_all_tags, tags};
pub use push::{PushOutcome, PushResult, PushedBlob, push};

/// Parses an image reference for a pull or push: [`hoist_registry::ImageRef::parse`], with the
/// reserved name `scratch` reported as [`Error::ReservedName`].
pub fn parse_reference(input: &str) -> Result<hoist_registry::ImageRef> {
    Ok(hoist_registry::ImageRef::parse(input)?)
}
