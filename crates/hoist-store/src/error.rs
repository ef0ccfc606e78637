//! The one error type of the store, with predicates callers branch on.

use std::io;
use std::path::PathBuf;

use oci_spec::image::Digest;

/// Everything that can go wrong in the store.
///
/// Messages name the file, blob or reference involved and, where there is one, what to do about it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The layer store failed (extraction, a refused tar entry, a DiffID mismatch…).
    #[error(transparent)]
    Layer(#[from] crate::layer::LayerError),

    /// A filesystem operation failed.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What the store was doing, as a verb phrase ("open", "rename into place", ...).
        action: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// The digest names an algorithm the store does not handle.
    #[error(
        "unsupported digest algorithm `{algorithm}` in `{digest}`: the store keeps sha256 content (sha512 is also accepted)"
    )]
    UnsupportedAlgorithm {
        /// The full digest string.
        digest: String,
        /// The algorithm part.
        algorithm: String,
    },

    /// A string that should be a digest is not one.
    #[error("invalid digest `{value}`: {reason}")]
    InvalidDigest {
        /// The offending text.
        value: String,
        /// Why it was rejected.
        reason: String,
    },

    /// Content did not hash to the digest it was expected to have.
    #[error("digest mismatch: expected {expected}, but the content hashes to {actual}")]
    DigestMismatch {
        /// The digest the content was supposed to have.
        expected: Digest,
        /// The digest it actually has.
        actual: Digest,
    },

    /// Content did not have the size it was expected to have.
    #[error("size mismatch for {what}: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        /// The blob or ingest concerned.
        what: String,
        /// The announced size.
        expected: u64,
        /// The size seen.
        actual: u64,
    },

    /// The blob is not in the store.
    #[error("blob {digest} is not in the store")]
    BlobNotFound {
        /// The missing blob.
        digest: Digest,
    },

    /// The blob is already committed: there is nothing to write.
    #[error("blob {digest} already exists in the store")]
    AlreadyExists {
        /// The blob that exists.
        digest: Digest,
    },

    /// No ingest is in progress under this name.
    #[error("no ingest named `{reference}`")]
    IngestNotFound {
        /// The ingest name.
        reference: String,
    },

    /// Another writer (in this or another process) holds the ingest.
    #[error(
        "ingest `{reference}` is being written by another writer; wait for it (use the blocking writer) or retry later"
    )]
    Locked {
        /// The ingest name.
        reference: String,
    },

    /// The writer cannot continue after an earlier failure.
    #[error(
        "the writer for ingest `{reference}` failed earlier and cannot continue; drop it and open a new writer to resume from the bytes on disk"
    )]
    WriterFailed {
        /// The ingest name.
        reference: String,
    },

    /// No lease with this identifier exists (it was released, or expired and was collected).
    #[error("lease `{id}` does not exist (released, or expired and collected)")]
    LeaseNotFound {
        /// The lease identifier.
        id: String,
    },

    /// A reference name is not in the store.
    #[error("reference `{name}` is not in the store")]
    ReferenceNotFound {
        /// The name looked up.
        name: String,
    },

    /// A name (reference or ingest) the store refuses.
    #[error("invalid name `{name}`: {reason}")]
    InvalidName {
        /// The name.
        name: String,
        /// Why it was refused.
        reason: &'static str,
    },

    /// An image cannot be referenced because some of its blobs are missing.
    #[error("image {root} is incomplete: blob {missing} is not in the store; pull it again")]
    IncompleteImage {
        /// The manifest or index being referenced.
        root: Digest,
        /// The first missing blob.
        missing: Digest,
    },

    /// A reference was asked to point at something that is not a manifest or an index.
    #[error(
        "blob {digest} has media type `{media_type}`: a reference must point to an image manifest or an image index"
    )]
    NotAManifest {
        /// The blob.
        digest: Digest,
        /// Its media type.
        media_type: String,
    },

    /// A document (index.json, a manifest, a config, an ingest record) could not be parsed.
    #[error("cannot parse {what} at {location}: {reason}")]
    Malformed {
        /// What kind of document it is.
        what: &'static str,
        /// Where it is (a path or a digest).
        location: String,
        /// The parser's complaint.
        reason: String,
    },

    /// A blob is larger than the caller allowed for an in-memory read.
    #[error("blob {digest} is {size} bytes, more than the {limit} bytes allowed for this read")]
    TooLarge {
        /// The blob.
        digest: Digest,
        /// Its size.
        size: u64,
        /// The limit that was asked for.
        limit: u64,
    },

    /// The metadata database failed.
    #[error("metadata database {}: {source}", path.display())]
    Database {
        /// The database file.
        path: PathBuf,
        /// The SQLite error.
        #[source]
        source: rusqlite::Error,
    },

    /// The metadata database was written by a newer hoist.
    #[error(
        "metadata database {} has schema version {found}, newer than version {supported} this hoist understands; upgrade hoist",
        path.display()
    )]
    SchemaTooNew {
        /// The database file.
        path: PathBuf,
        /// Its schema version.
        found: i64,
        /// The newest version this build knows.
        supported: i64,
    },

    /// The directory holds an OCI layout of a version the store does not read.
    #[error(
        "{} declares OCI image layout version `{found}`; hoist reads version 1.0.0",
        path.display()
    )]
    UnsupportedLayout {
        /// The `oci-layout` file.
        path: PathBuf,
        /// The version it declares.
        found: String,
    },
}

impl StoreError {
    /// Builds an [`StoreError::Io`] from its parts.
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        StoreError::Io {
            action,
            path: path.into(),
            source,
        }
    }

    /// True when trying the same operation again later may succeed: the ingest is locked by another
    /// writer, the database is busy, or the filesystem reported a transient condition.
    pub fn is_retryable(&self) -> bool {
        match self {
            StoreError::Locked { .. } => true,
            StoreError::Layer(e) => e.is_retryable(),
            StoreError::Io { source, .. } => matches!(
                source.kind(),
                io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ),
            StoreError::Database { source, .. } => matches!(
                source.sqlite_error_code(),
                Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
            ),
            _ => false,
        }
    }

    /// True when the error says that something looked up (blob, ingest, reference) is absent.
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            StoreError::BlobNotFound { .. }
                | StoreError::IngestNotFound { .. }
                | StoreError::ReferenceNotFound { .. }
                | StoreError::LeaseNotFound { .. }
        )
    }

    /// True when a writer was asked for a blob that is already committed.
    pub fn is_already_exists(&self) -> bool {
        matches!(self, StoreError::AlreadyExists { .. })
    }

    /// True when content failed verification (wrong digest or size): the bytes must be fetched again.
    pub fn is_content_mismatch(&self) -> bool {
        matches!(
            self,
            StoreError::DigestMismatch { .. } | StoreError::SizeMismatch { .. }
        )
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Attaches an action and a path to an [`io::Result`].
pub(crate) trait IoContext<T> {
    /// Converts the error into [`StoreError::Io`].
    fn ctx(self, action: &'static str, path: &std::path::Path) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx(self, action: &'static str, path: &std::path::Path) -> Result<T> {
        self.map_err(|source| StoreError::io(action, path, source))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locked_and_busy_errors_are_retryable_but_mismatches_are_not() {
        let locked = StoreError::Locked {
            reference: "r".into(),
        };
        assert!(locked.is_retryable());
        let busy = StoreError::Database {
            path: "db".into(),
            source: rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
                None,
            ),
        };
        assert!(busy.is_retryable());
        let mismatch = StoreError::SizeMismatch {
            what: "x".into(),
            expected: 1,
            actual: 2,
        };
        assert!(!mismatch.is_retryable());
        assert!(mismatch.is_content_mismatch());
    }

    #[test]
    fn io_error_message_names_the_path_and_action() {
        let e = StoreError::io(
            "open",
            "/some/where",
            io::Error::new(io::ErrorKind::PermissionDenied, "denied"),
        );
        let msg = e.to_string();
        assert!(msg.contains("cannot open /some/where"), "{msg}");
        assert!(!e.is_retryable());
    }
}
