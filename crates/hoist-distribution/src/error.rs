//! The error type of pulls and pushes, with a stable [`ErrorKind`] for exit codes and
//! [`Error::is_retryable`] for retry decisions.
//!
//! Every failure of [`crate::pull()`] and [`crate::push()`] is an [`Error`]. Errors wrapped by the
//! transfer engine ([`hoist_xfer::DownloadError`], [`hoist_xfer::UploadError`]) keep their whole
//! cause chain; [`Error::kind`] looks through it so that a digest mismatch deep inside a layer
//! download is still reported as [`ErrorKind::Corrupt`].

use std::error::Error as StdError;

use hoist_registry::reference::ReferenceError;
use hoist_store::{Digest, StoreError};
use hoist_xfer::{DoNotRetry, DownloadError, RetryAfter, UploadError, describe};

/// A specialised `Result` for pulls and pushes.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The class of an error, stable across releases: what a command-line tool maps to exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The request itself is wrong: an invalid or reserved reference, a platform that does not
    /// parse, an image that is not in the local store.
    InvalidInput,
    /// The registry says the image does not exist or that access is denied.
    NotFoundOrDenied,
    /// The registry could not be reached or failed (connection, timeout, 5xx, throttling).
    Network,
    /// Content failed verification: a digest or DiffID mismatch, a corrupt layer.
    Corrupt,
    /// The image is of a kind hoist does not handle (schema 1, AI models, plugins, unknown media
    /// types, no matching platform).
    Unsupported,
    /// The local store failed (disk, database, extraction).
    Store,
    /// The operation was cancelled.
    Cancelled,
}

impl ErrorKind {
    /// A short lowercase name (`not-found-or-denied`), for machine-readable output.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidInput => "invalid-input",
            ErrorKind::NotFoundOrDenied => "not-found-or-denied",
            ErrorKind::Network => "network",
            ErrorKind::Corrupt => "corrupt",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::Store => "store",
            ErrorKind::Cancelled => "cancelled",
        }
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error from a pull or a push.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The reference does not parse.
    #[error(transparent)]
    InvalidReference(ReferenceError),

    /// The reference names the reserved `scratch` image.
    #[error(
        "{name:?} is a reserved name: it means \"no base image\" and cannot be pulled or pushed"
    )]
    ReservedName {
        /// The name as given.
        name: String,
    },

    /// A platform string (`linux/arm64/v8`) does not parse.
    #[error("invalid platform {input:?}: {reason}")]
    InvalidPlatform {
        /// The platform as given.
        input: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// The registry answered "not found" or "denied" for the image.
    #[error(
        "{reference}: not found or access denied: maybe `hoist login {registry}` (the repository may not exist, or may require authorisation)"
    )]
    NotFoundOrDenied {
        /// The image, as the user named it.
        reference: String,
        /// The registry host to log in to.
        registry: String,
        /// The registry's answer.
        #[source]
        source: hoist_registry::Error,
    },

    /// No endpoint of the registry (nor any mirror) answered.
    #[error("cannot reach registry {registry} (nor any mirror configured for it)")]
    Unreachable {
        /// The registry host.
        registry: String,
        /// The last endpoint's error.
        #[source]
        source: hoist_registry::Error,
    },

    /// A registry request failed.
    #[error("{context}")]
    Registry {
        /// What was being done (`fetching manifest sha256:…`).
        context: String,
        /// The registry client's error.
        #[source]
        source: hoist_registry::Error,
    },

    /// The image uses the Docker schema 1 manifest format, which is no longer supported.
    #[error(
        "{reference}: Docker Image Format v1 and Docker Image manifest version 2, schema 1 support has been removed; push the image again with a current tool (schema 2 or OCI)"
    )]
    DeprecatedSchema1Image {
        /// The image.
        reference: String,
    },

    /// The reference is an AI model, not a container image.
    #[error(
        "{reference} is an AI model ({media_type}), not a container image; use a model runner to pull it"
    )]
    AiModelNotSupported {
        /// The image.
        reference: String,
        /// The media type that identified it.
        media_type: String,
    },

    /// The manifest is of another class of artifact (a Docker plugin, say).
    #[error("encountered remote {media_type:?} ({class}) when fetching an image")]
    InvalidManifestClass {
        /// The config media type.
        media_type: String,
        /// The class it belongs to (`plugin`).
        class: &'static str,
    },

    /// A manifest, config or layer has a media type hoist does not handle.
    #[error("unsupported {what} media type {media_type:?}")]
    UnsupportedMediaType {
        /// What carried it: `manifest`, `config`, `layer`.
        what: &'static str,
        /// The media type.
        media_type: String,
    },

    /// A manifest or index is malformed.
    #[error("invalid manifest {digest}: {reason}")]
    InvalidManifest {
        /// The manifest's digest.
        digest: Digest,
        /// What is wrong.
        reason: String,
    },

    /// No entry of an index or manifest list matches the wanted platform.
    #[error(
        "no matching manifest for {platform} in the manifest list entries of {reference} (available: {available})"
    )]
    NoMatchingPlatform {
        /// The image.
        reference: String,
        /// The platform wanted.
        platform: String,
        /// The platforms the index offers, comma-separated.
        available: String,
    },

    /// A manifest's bytes do not hash to the digest it was asked for.
    #[error("manifest digest mismatch: expected {expected}, got {actual}")]
    ManifestDigestMismatch {
        /// The digest asked for.
        expected: Digest,
        /// The digest of the bytes received.
        actual: String,
    },

    /// The image config could not be fetched or read.
    #[error("fetching image config {digest}: {}", describe(source.as_ref()))]
    ImageConfigPull {
        /// The config's digest.
        digest: Digest,
        /// Why.
        #[source]
        source: Box<Error>,
    },

    /// The image config is malformed.
    #[error("invalid image config {digest}: {reason}")]
    InvalidConfig {
        /// The config's digest.
        digest: Digest,
        /// What is wrong.
        reason: String,
    },

    /// A layer's content does not match the DiffID the image config declares.
    #[error(
        "layer {blob}: DiffID mismatch: the config declares {expected}, the content is {actual}"
    )]
    DiffIdMismatch {
        /// The layer blob.
        blob: Digest,
        /// The config's DiffID.
        expected: Digest,
        /// The DiffID of the content.
        actual: Digest,
    },

    /// The image's layers do not add up to the config's root filesystem.
    #[error("the layers of {reference} do not match its config's rootfs: {reason}")]
    RootfsMismatch {
        /// The image.
        reference: String,
        /// What differs.
        reason: String,
    },

    /// A blob arrived corrupt twice in a row (a digest mismatch, or data that does not
    /// decompress).
    #[error("blob {blob} is corrupt: {reason}")]
    Corrupt {
        /// The blob.
        blob: Digest,
        /// What was wrong (`digest mismatch: expected …, got …`, `gzip: invalid header`).
        reason: String,
    },

    /// The registry sent fewer bytes than the blob has.
    #[error("blob {blob}: the registry sent {received} of {size} bytes")]
    ShortBlob {
        /// The blob.
        blob: Digest,
        /// Bytes held.
        received: u64,
        /// The blob's size.
        size: u64,
    },

    /// A layer could not be extracted into the layer store.
    #[error("layer {blob}: {source}")]
    Layer {
        /// The layer blob.
        blob: Digest,
        /// The layer store's error.
        #[source]
        source: hoist_store::layer::LayerError,
    },

    /// A layer unpacks to more than the pull allows: a decompression bomb, or a layer larger
    /// than [`crate::PullConfig::max_layer_bytes`].
    #[error(
        "layer {blob} unpacks to more than {limit} {what}, the limit for one layer; if the image is trusted, raise max_layer_bytes"
    )]
    LayerTooLarge {
        /// The layer blob.
        blob: Digest,
        /// The limit in force.
        limit: u64,
        /// What was counted ("bytes" or "entries").
        what: &'static str,
    },

    /// The local store failed.
    #[error("{context}: {source}")]
    Store {
        /// What was being done.
        context: String,
        /// The store's error.
        #[source]
        source: StoreError,
    },

    /// A layer download failed (after the retries the policy allows).
    #[error("{}", describe(source))]
    Download {
        /// The transfer engine's error, with the last attempt's cause.
        #[source]
        source: DownloadError,
    },

    /// A layer upload failed (after the retries the policy allows).
    #[error("{}", describe(source))]
    Upload {
        /// The transfer engine's error, with the last attempt's cause.
        #[source]
        source: UploadError,
    },

    /// The image to push is not in the local store.
    #[error("{reference}: no such image in the local store; pull or tag it first")]
    LocalImageNotFound {
        /// The image.
        reference: String,
    },

    /// A blob the image needs is not in the local store.
    #[error("blob {digest} of {reference} is missing from the local store; pull the image again")]
    MissingBlob {
        /// The image.
        reference: String,
        /// The missing blob.
        digest: Digest,
    },

    /// A blocking task of the pull or push panicked.
    #[error("internal error: {0}")]
    Internal(String),

    /// The operation was cancelled.
    #[error("cancelled")]
    Cancelled,
}

impl From<ReferenceError> for Error {
    fn from(e: ReferenceError) -> Self {
        match e {
            ReferenceError::ReservedName { name } => Error::ReservedName { name },
            other => Error::InvalidReference(other),
        }
    }
}

impl Error {
    /// A [`Error::Registry`] with context.
    pub(crate) fn registry(context: impl Into<String>, source: hoist_registry::Error) -> Error {
        Error::Registry {
            context: context.into(),
            source,
        }
    }

    /// A [`Error::Store`] with context.
    pub(crate) fn store(context: impl Into<String>, source: StoreError) -> Error {
        Error::Store {
            context: context.into(),
            source,
        }
    }

    /// The class of this error (looking through wrapped causes), for exit codes.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidReference(_)
            | Error::ReservedName { .. }
            | Error::InvalidPlatform { .. }
            | Error::LocalImageNotFound { .. }
            | Error::MissingBlob { .. } => ErrorKind::InvalidInput,
            Error::NotFoundOrDenied { .. } => ErrorKind::NotFoundOrDenied,
            Error::Unreachable { .. } => ErrorKind::Network,
            Error::Registry { source, .. } => registry_kind(source),
            Error::DeprecatedSchema1Image { .. }
            | Error::AiModelNotSupported { .. }
            | Error::InvalidManifestClass { .. }
            | Error::UnsupportedMediaType { .. }
            | Error::NoMatchingPlatform { .. } => ErrorKind::Unsupported,
            Error::InvalidManifest { .. }
            | Error::ManifestDigestMismatch { .. }
            | Error::InvalidConfig { .. }
            | Error::DiffIdMismatch { .. }
            | Error::RootfsMismatch { .. }
            | Error::Corrupt { .. }
            | Error::LayerTooLarge { .. } => ErrorKind::Corrupt,
            Error::ShortBlob { .. } => ErrorKind::Network,
            Error::ImageConfigPull { source, .. } => source.kind(),
            Error::Layer { source, .. } => {
                if source.is_invalid_layer() {
                    ErrorKind::Corrupt
                } else {
                    ErrorKind::Store
                }
            }
            Error::Store { source, .. } => {
                if source.is_content_mismatch() {
                    ErrorKind::Corrupt
                } else {
                    ErrorKind::Store
                }
            }
            Error::Download { source } => match source {
                DownloadError::Cancelled => ErrorKind::Cancelled,
                DownloadError::DiffIdMismatch { .. } => ErrorKind::Corrupt,
                other => kind_in_chain(other).unwrap_or(ErrorKind::Store),
            },
            Error::Upload { source } => match source {
                UploadError::Cancelled => ErrorKind::Cancelled,
                other => kind_in_chain(other).unwrap_or(ErrorKind::Network),
            },
            Error::Internal(_) => ErrorKind::Store,
            Error::Cancelled => ErrorKind::Cancelled,
        }
    }

    /// Whether trying the whole operation again may succeed (the network or the registry failed
    /// transiently, or the store was busy).
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Unreachable { .. } | Error::ShortBlob { .. } => true,
            Error::Registry { source, .. } => source.is_retryable(),
            Error::ImageConfigPull { source, .. } => source.is_retryable(),
            Error::Layer { source, .. } => source.is_retryable(),
            Error::Store { source, .. } => source.is_retryable(),
            Error::Download {
                source: DownloadError::Failed { retryable, .. },
            } => *retryable,
            Error::Upload { source } => source.is_retryable(),
            _ => false,
        }
    }

    /// The registry error behind this one, if a registry request failed.
    pub fn registry_error(&self) -> Option<&hoist_registry::Error> {
        let mut level: Option<&(dyn StdError + 'static)> = Some(self);
        while let Some(err) = level {
            if let Some(r) = err.downcast_ref::<hoist_registry::Error>() {
                return Some(r);
            }
            level = next_level(err);
        }
        None
    }
}

/// The class of a registry client error.
fn registry_kind(e: &hoist_registry::Error) -> ErrorKind {
    use hoist_registry::Error as R;
    if e.is_not_found() || e.is_denied() {
        return ErrorKind::NotFoundOrDenied;
    }
    match e {
        R::DigestMismatch { .. } | R::SizeMismatch { .. } => ErrorKind::Corrupt,
        R::UnsupportedMediaType { .. } => ErrorKind::Unsupported,
        R::Reference(_) | R::Config { .. } | R::Credentials(_) => ErrorKind::InvalidInput,
        R::Cancelled => ErrorKind::Cancelled,
        _ => ErrorKind::Network,
    }
}

/// The next level of an error chain, looking through the transfer engine's retry markers (whose
/// `source` skips the error they wrap).
fn next_level<'a>(err: &'a (dyn StdError + 'static)) -> Option<&'a (dyn StdError + 'static)> {
    if let Some(m) = err.downcast_ref::<DoNotRetry>() {
        Some(m.inner())
    } else if let Some(m) = err.downcast_ref::<RetryAfter>() {
        Some(m.inner())
    } else {
        err.source()
    }
}

/// The kind of the first error in `err`'s source chain that hoist knows how to classify.
fn kind_in_chain(err: &(dyn StdError + 'static)) -> Option<ErrorKind> {
    let mut level = next_level(err);
    while let Some(e) = level {
        if let Some(ours) = e.downcast_ref::<Error>() {
            return Some(ours.kind());
        }
        if let Some(r) = e.downcast_ref::<hoist_registry::Error>() {
            return Some(registry_kind(r));
        }
        if let Some(s) = e.downcast_ref::<StoreError>() {
            return Some(if s.is_content_mismatch() {
                ErrorKind::Corrupt
            } else {
                ErrorKind::Store
            });
        }
        level = next_level(e);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn digest() -> Digest {
        format!("sha256:{}", "a".repeat(64)).parse().unwrap()
    }

    #[test]
    fn reserved_name_reference_errors_become_reserved_name() {
        let e: Error = hoist_registry::ImageRef::parse("scratch")
            .unwrap_err()
            .into();
        assert!(matches!(e, Error::ReservedName { .. }), "{e}");
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        let e: Error = hoist_registry::ImageRef::parse("UPPER").unwrap_err().into();
        assert!(matches!(e, Error::InvalidReference(_)), "{e}");
    }

    #[test]
    fn corruption_is_classified_through_the_engine_chain() {
        let inner = Error::Corrupt {
            blob: digest(),
            reason: "digest mismatch".into(),
        };
        let e = Error::Download {
            source: DownloadError::Failed {
                id: "aaaa".into(),
                attempts: 2,
                retryable: false,
                source: Arc::new(DoNotRetry::new(inner)),
            },
        };
        assert_eq!(e.kind(), ErrorKind::Corrupt);
        assert!(!e.is_retryable());
        assert!(e.to_string().contains("digest mismatch"), "{e}");
    }

    #[test]
    fn kinds_have_stable_names() {
        assert_eq!(ErrorKind::NotFoundOrDenied.as_str(), "not-found-or-denied");
        assert_eq!(ErrorKind::Corrupt.to_string(), "corrupt");
    }
}
