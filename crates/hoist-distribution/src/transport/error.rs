//! Errors of the transports: bad image names ([`NameError`]) and failures while reading or
//! writing images ([`Error`]).

use std::io;
use std::path::PathBuf;

use hoist_registry::reference::ReferenceError;
use hoist_store::StoreError;

/// A specialised `Result` for transport operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a string is not a valid image name (`docker://REF`, `oci:DIR[:TAG]`, ...).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NameError {
    /// The input is empty.
    #[error("empty image name")]
    Empty,

    /// The prefix before `:` names no transport hoist knows.
    #[error(
        "unknown transport {transport:?} in {input:?}: hoist knows docker://, oci:, oci-archive:, docker-archive: and store: (or a bare reference for the local store)"
    )]
    UnknownTransport {
        /// The transport as written.
        transport: String,
        /// The whole input.
        input: String,
    },

    /// The transport exists in other tools but hoist does not implement it.
    #[error(
        "transport {transport:?} is not supported by hoist: use docker://, oci:, oci-archive:, docker-archive: or store:"
    )]
    UnsupportedTransport {
        /// The transport as written.
        transport: String,
    },

    /// `docker:` must be followed by `//`.
    #[error("invalid image name {input:?}: docker references are written docker://REFERENCE")]
    DockerWithoutSlashes {
        /// The whole input.
        input: String,
    },

    /// A file or directory transport without a path.
    #[error(
        "invalid image name {input:?}: {transport}: needs a path ({transport}:PATH[:REFERENCE])"
    )]
    MissingPath {
        /// The transport.
        transport: &'static str,
        /// The whole input.
        input: String,
    },

    /// The image reference part does not parse.
    #[error("invalid image name {input:?}: {source}")]
    InvalidReference {
        /// The whole input.
        input: String,
        /// Why the reference is invalid.
        #[source]
        source: ReferenceError,
    },

    /// The name inside an OCI layout (`oci:DIR:NAME`) breaks the annotation grammar.
    #[error(
        "invalid image name {name:?} in an OCI layout: names are letters, digits, '.', '_' and '-', in components separated by ':', '/', '@' or '+'"
    )]
    InvalidLayoutName {
        /// The name as written.
        name: String,
    },

    /// A docker-archive reference names a digest (the format records tags only).
    #[error(
        "invalid docker-archive reference {reference:?}: an archive records tags, not digests; write NAME:TAG"
    )]
    DigestInArchiveReference {
        /// The reference as written.
        reference: String,
    },

    /// `docker-archive:FILE:@N` with something other than a number after `@`.
    #[error("invalid docker-archive image index {index:?}: expected @N with N a number from 0")]
    InvalidArchiveIndex {
        /// The index as written.
        index: String,
    },
}

/// A failure while reading or writing an image through a transport.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The image name is invalid.
    #[error(transparent)]
    Name(#[from] NameError),

    /// The transport needs something the caller did not configure (a registry client, a store).
    #[error("{transport} needs {what}, which was not configured")]
    NotConfigured {
        /// The transport.
        transport: &'static str,
        /// What is missing.
        what: &'static str,
    },

    /// A registry operation failed.
    #[error("{operation}: {source}")]
    Registry {
        /// What hoist was doing ("fetch manifest of 127.0.0.1:5000/foo:1").
        operation: String,
        /// The registry error.
        #[source]
        source: Box<hoist_registry::Error>,
    },

    /// A local store operation failed.
    #[error("{operation}: {source}")]
    Store {
        /// What hoist was doing.
        operation: String,
        /// The store error.
        #[source]
        source: Box<StoreError>,
    },

    /// A filesystem operation failed.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What hoist was doing, as a verb phrase.
        action: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// Reading the blob stream handed to a destination failed; nothing was kept.
    #[error("reading blob {digest} from the source failed: {source}")]
    Stream {
        /// The blob being written.
        digest: String,
        /// The stream's error.
        #[source]
        source: io::Error,
    },

    /// Content did not hash to the digest it was announced with; nothing was kept.
    #[error(
        "digest mismatch for {what}: expected {expected}, got {actual} (the source is corrupt or changed)"
    )]
    DigestMismatch {
        /// What was being read or written.
        what: String,
        /// The announced digest.
        expected: String,
        /// The digest of the bytes.
        actual: String,
    },

    /// Content did not have the size it was announced with; nothing was kept.
    #[error("size mismatch for {what}: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        /// What was being read or written.
        what: String,
        /// The announced size.
        expected: u64,
        /// The size seen (at least).
        actual: u64,
    },

    /// The named image is not there.
    #[error("image not found: {location}{}", match names.is_empty() {
        true => String::new(),
        false => format!(" (images present: {})", names.join(", ")),
    })]
    ImageNotFound {
        /// The image name as the user wrote it.
        location: String,
        /// The names the location does hold, to help pick one.
        names: Vec<String>,
    },

    /// A location holds several images and the name does not say which one.
    #[error("{location} holds {count} images; name one of them: {}", names.join(", "))]
    AmbiguousImage {
        /// The location.
        location: String,
        /// How many images it holds.
        count: usize,
        /// Their names (or indexes, `@N`).
        names: Vec<String>,
    },

    /// A manifest asked for by digest is not in the source.
    #[error("manifest {digest} not found in {location}")]
    ManifestNotFound {
        /// The location.
        location: String,
        /// The digest asked for.
        digest: String,
    },

    /// A blob is not in the source.
    #[error("blob {digest} not found in {location}")]
    BlobNotFound {
        /// The location.
        location: String,
        /// The digest.
        digest: String,
    },

    /// A file that must follow a format does not (`index.json`, `manifest.json`, a manifest).
    #[error("malformed {what} in {location}: {reason}")]
    Malformed {
        /// What was being read.
        what: &'static str,
        /// Where.
        location: String,
        /// What is wrong.
        reason: String,
    },

    /// A manifest or config is larger than hoist reads into memory.
    #[error("{what} {digest} in {location} is larger than the {limit}-byte limit")]
    TooLarge {
        /// What was being read.
        what: &'static str,
        /// Its digest.
        digest: String,
        /// Where.
        location: String,
        /// The limit.
        limit: u64,
    },

    /// A digest uses an algorithm hoist cannot verify.
    #[error("unsupported digest {digest}: hoist verifies sha256, sha384 and sha512 content")]
    UnsupportedDigest {
        /// The digest.
        digest: String,
    },

    /// The destination cannot store a manifest of this media type.
    #[error(
        "{destination} cannot store a manifest of type {media_type}{}",
        hint_text(hint)
    )]
    UnsupportedManifest {
        /// The destination.
        destination: String,
        /// The manifest's media type.
        media_type: String,
        /// What to do instead, if anything.
        hint: Option<&'static str>,
    },

    /// The destination cannot store a blob of this kind.
    #[error("{destination} cannot store blob {digest} of type {media_type}: {reason}")]
    UnsupportedBlob {
        /// The destination.
        destination: String,
        /// The blob.
        digest: String,
        /// Its media type.
        media_type: String,
        /// Why not.
        reason: String,
    },

    /// The transport does not offer this operation.
    #[error("{transport} does not support {operation}")]
    Unsupported {
        /// The transport.
        transport: &'static str,
        /// The operation.
        operation: &'static str,
    },

    /// An operation was called out of order (a manifest naming blobs that were not written, a
    /// commit without a manifest).
    #[error("{location}: {reason}")]
    Incomplete {
        /// The destination.
        location: String,
        /// What is missing.
        reason: String,
    },
}

fn hint_text(hint: &Option<&'static str>) -> String {
    hint.map(|h| format!("; {h}")).unwrap_or_default()
}

impl Error {
    /// Whether trying the same operation again may succeed: transient registry, store and stream
    /// failures, and content that arrived corrupt (a new read may bring the right bytes).
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Registry { source, .. } => source.is_retryable(),
            Error::Store { source, .. } => source.is_retryable(),
            Error::Stream { source, .. } => stream_error_is_retryable(source),
            Error::Io { source, .. } => matches!(
                source.kind(),
                io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ),
            Error::DigestMismatch { .. } | Error::SizeMismatch { .. } => true,
            Error::Name(_)
            | Error::NotConfigured { .. }
            | Error::ImageNotFound { .. }
            | Error::AmbiguousImage { .. }
            | Error::ManifestNotFound { .. }
            | Error::BlobNotFound { .. }
            | Error::Malformed { .. }
            | Error::TooLarge { .. }
            | Error::UnsupportedDigest { .. }
            | Error::UnsupportedManifest { .. }
            | Error::UnsupportedBlob { .. }
            | Error::Unsupported { .. }
            | Error::Incomplete { .. } => false,
        }
    }

    /// The delay a registry asked for (`Retry-After` on `429` or `503`), if any.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            Error::Registry { source, .. } => source.retry_after(),
            Error::Stream { source, .. } => source
                .get_ref()
                .and_then(|e| e.downcast_ref::<hoist_registry::Error>())
                .and_then(hoist_registry::Error::retry_after),
            _ => None,
        }
    }

    /// Whether this says the image, manifest or blob asked for does not exist.
    pub fn is_not_found(&self) -> bool {
        match self {
            Error::ImageNotFound { .. }
            | Error::ManifestNotFound { .. }
            | Error::BlobNotFound { .. } => true,
            Error::Registry { source, .. } => source.is_not_found(),
            Error::Store { source, .. } => source.is_not_found(),
            _ => false,
        }
    }

    /// Whether content failed verification (wrong digest or size).
    pub fn is_content_mismatch(&self) -> bool {
        match self {
            Error::DigestMismatch { .. } | Error::SizeMismatch { .. } => true,
            Error::Registry { source, .. } => {
                matches!(
                    **source,
                    hoist_registry::Error::DigestMismatch { .. }
                        | hoist_registry::Error::SizeMismatch { .. }
                ) || source.error_codes().any(|c| {
                    matches!(
                        c,
                        hoist_registry::error_body::ErrorCode::DigestInvalid
                            | hoist_registry::error_body::ErrorCode::SizeInvalid
                    )
                })
            }
            Error::Store { source, .. } => source.is_content_mismatch(),
            _ => false,
        }
    }

    pub(crate) fn registry(operation: impl Into<String>, source: hoist_registry::Error) -> Error {
        Error::Registry {
            operation: operation.into(),
            source: Box::new(source),
        }
    }

    pub(crate) fn store(operation: impl Into<String>, source: StoreError) -> Error {
        Error::Store {
            operation: operation.into(),
            source: Box::new(source),
        }
    }

    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Error {
        Error::Io {
            action,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn malformed(
        what: &'static str,
        location: impl Into<String>,
        reason: impl ToString,
    ) -> Error {
        Error::Malformed {
            what,
            location: location.into(),
            reason: reason.to_string(),
        }
    }
}

/// Whether a source stream's error is transient: the registry's and store's errors carried
/// inside decide for themselves; broken connections and timeouts are transient.
fn stream_error_is_retryable(err: &io::Error) -> bool {
    if let Some(inner) = err.get_ref() {
        if let Some(e) = inner.downcast_ref::<hoist_registry::Error>() {
            return e.is_retryable();
        }
        if let Some(e) = inner.downcast_ref::<StoreError>() {
            return e.is_retryable() || e.is_content_mismatch();
        }
    }
    !matches!(
        err.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::PermissionDenied | io::ErrorKind::InvalidInput
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_errors_from_the_registry_follow_its_retry_rule() {
        let transient = io::Error::other(hoist_registry::Error::Stalled {
            url: "http://x/v2/a/blobs/b".into(),
            after: std::time::Duration::from_secs(1),
        });
        assert!(
            Error::Stream {
                digest: "d".into(),
                source: transient
            }
            .is_retryable()
        );
        let permanent = io::Error::other(hoist_registry::Error::Cancelled);
        assert!(
            !Error::Stream {
                digest: "d".into(),
                source: permanent
            }
            .is_retryable()
        );
    }

    #[test]
    fn missing_things_are_not_found_and_not_retryable() {
        let e = Error::BlobNotFound {
            location: "oci:/x".into(),
            digest: "sha256:00".into(),
        };
        assert!(e.is_not_found());
        assert!(!e.is_retryable());
    }

    #[test]
    fn unsupported_manifest_message_carries_the_hint() {
        let e = Error::UnsupportedManifest {
            destination: "docker-archive:/a.tar".into(),
            media_type: "application/vnd.oci.image.index.v1+json".into(),
            hint: Some("copy one platform instead"),
        };
        let text = e.to_string();
        assert!(text.contains("docker-archive:/a.tar"), "{text}");
        assert!(text.ends_with("; copy one platform instead"), "{text}");
    }
}
