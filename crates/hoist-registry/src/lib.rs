//! A client for the registry HTTP API v2 / OCI distribution spec.
//!
//! [`RegistryClient`] holds one pooled HTTP stack (rustls, HTTP/1.1 and HTTP/2) shared by every
//! registry, with per-registry TLS ([`HostConfig`]), connect and stall timeouts, and
//! authentication (anonymous and credentialled bearer tokens with per-repository scopes, cached
//! until expiry and refreshed on `401`; basic auth; credentials from Docker's `config.json` and
//! podman's `auth.json`). A [`Repository`] handle offers the API's operations: manifests (HEAD,
//! GET verified against their digest, PUT, DELETE), blobs (HEAD, streamed GET, resume with a closed
//! range, large ones in bounded ranged windows ([`windowed`]), discontiguous chunk reads that
//! adapt per host to how it serves ranges), uploads (sessions, chunked PATCH, resume, mount,
//! cancel), and tag and catalog listings with pagination.
//!
//! Protocol details that need no I/O live in their own modules with unit tests: references
//! ([`reference`]), `WWW-Authenticate` challenges and scopes ([`auth::challenge`]), ranges
//! ([`range`]), download windows ([`window`]), `multipart/byteranges` ([`multipart`]), `Link`
//! headers ([`link`]), registry error bodies ([`error_body`]). The I/O layers only drive them.
//!
//! Errors are [`Error`]: each says whether a retry can help ([`Error::is_retryable`]) and carries
//! the registry's `Retry-After` ([`Error::retry_after`]). Credentials never appear in errors, logs
//! or `Debug` output, and are sent only to the registry they belong to.

pub mod auth;
pub mod blob;
mod body;
pub mod chunk_strategy;
pub mod client;
pub mod config;
pub mod digest;
pub mod error;
pub mod error_body;
pub mod foreign;
mod http_syntax;
pub mod link;
pub mod manifest;
pub mod multipart;
pub mod range;
pub mod reference;
pub mod repository;
pub mod tags;
mod tls;
pub mod upload;
mod upload_state;
mod watchdog;
pub mod window;
pub mod windowed;

pub use blob::{BlobResponse, ChunkStream};
pub use body::BodyStream;
pub use chunk_strategy::{ChunkReadOptions, RangeMode};
pub use client::{ClientBuilder, Endpoint, Limits, RegistryClient};
pub use config::{HostConfig, Scheme};
pub use error::{Error, Result, TransportKind};
pub use manifest::{Manifest, ManifestHead, ManifestKind};
pub use range::Chunk;
pub use reference::ImageRef;
pub use repository::Repository;
pub use upload::{MountResult, UploadSession};
pub use watchdog::ByteStream;
pub use window::WindowConfig;
pub use windowed::{WindowedBlob, WindowedBody};
