//! The error type of the chunked layer formats.

use std::io;

/// A specialised `Result` for the chunked layer formats.
pub type Result<T, E = ChunkedError> = std::result::Result<T, E>;

/// Why reading, writing or rebuilding a zstd:chunked or eStargz layer failed.
///
/// [`is_corrupt`](Self::is_corrupt) errors mean the layer (or its metadata, or a fetched or
/// local piece of it) is not what it claims to be: a caller doing a partial pull falls back to a
/// full pull of the blob, whose digest it verifies. [`is_unsupported`](Self::is_unsupported)
/// errors mean hoist cannot use the metadata of this layer for a partial pull (unknown version,
/// missing annotation): the caller pulls the blob whole.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChunkedError {
    /// Reading the input or writing the output failed.
    #[error("chunked layer I/O failed: {0}")]
    Io(#[from] io::Error),
    /// The tar stream given to [`write_chunked`](super::write_chunked) is malformed.
    #[error("the layer's tar stream is malformed: {reason}")]
    BadTar {
        /// What is wrong with it.
        reason: String,
    },
    /// The tar stream holds an entry the chunked formats cannot describe (GNU sparse files,
    /// multi-volume archives).
    #[error("tar entry {name:?} is of type {kind:?}, which chunked layers cannot describe")]
    UnsupportedEntry {
        /// The entry's name.
        name: String,
        /// Its tar type flag, as a character.
        kind: char,
    },
    /// The layer's metadata is of a kind or version hoist does not read; pull it whole.
    #[error("unsupported chunked layer: {reason}")]
    Unsupported {
        /// What hoist does not support.
        reason: String,
    },
    /// An annotation of the layer's descriptor does not parse or contradicts the blob.
    #[error("chunked layer annotation {key:?} is invalid: {reason}")]
    BadAnnotation {
        /// The annotation.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The footer at the end of the blob is not a valid footer of the format.
    #[error("chunked layer footer is invalid: {reason}")]
    BadFooter {
        /// What is wrong with it.
        reason: String,
    },
    /// The table of contents (or tar-split) does not decode, or describes an impossible layout.
    #[error("chunked layer {what} is invalid: {reason}")]
    BadMetadata {
        /// `table of contents` or `tar-split`.
        what: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A piece of metadata is larger than hoist accepts (a decompression bomb, or a layer far
    /// beyond any real one).
    #[error("chunked layer {what} is {size} bytes, more than the {limit} bytes hoist accepts")]
    TooLarge {
        /// What is too large.
        what: &'static str,
        /// Its size (or the size reached when hoist stopped reading).
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// The metadata's digest is not the one the annotations announce.
    #[error("chunked layer {what} has digest {actual}, its descriptor announces {expected}")]
    MetadataDigestMismatch {
        /// What was verified.
        what: &'static str,
        /// The announced digest.
        expected: String,
        /// The digest of the bytes received.
        actual: String,
    },
    /// A file's content (fetched or local) is not what the table of contents says.
    #[error("content of {name:?} ({source_kind}) is corrupt: {reason}")]
    ContentMismatch {
        /// The file's name in the layer.
        name: String,
        /// `fetched` or `local`.
        source_kind: &'static str,
        /// What did not match.
        reason: String,
    },
    /// The fetched chunks did not arrive as the plan asked (wrong index, order or length).
    #[error("fetched chunk data does not match the plan: {reason}")]
    FetchMismatch {
        /// What was wrong.
        reason: String,
    },
    /// Fetching a chunk failed (the error the caller's iterator yielded).
    #[error("fetching a chunk of the layer failed: {0}")]
    Fetch(#[source] io::Error),
    /// Opening or reading locally available content failed.
    #[error("reading local content for {name:?} failed: {source}")]
    Local {
        /// The file's name in the layer.
        name: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

impl ChunkedError {
    /// The layer, its metadata, or a piece of content is corrupt or inconsistent: never use
    /// what was produced; fall back to a full, verified pull.
    pub fn is_corrupt(&self) -> bool {
        matches!(
            self,
            ChunkedError::BadAnnotation { .. }
                | ChunkedError::BadFooter { .. }
                | ChunkedError::BadMetadata { .. }
                | ChunkedError::TooLarge { .. }
                | ChunkedError::MetadataDigestMismatch { .. }
                | ChunkedError::ContentMismatch { .. }
                | ChunkedError::FetchMismatch { .. }
        )
    }

    /// hoist cannot do a partial pull of this layer (format or version it does not read, an
    /// entry it cannot describe): pull the blob whole.
    pub fn is_unsupported(&self) -> bool {
        matches!(
            self,
            ChunkedError::Unsupported { .. } | ChunkedError::UnsupportedEntry { .. }
        )
    }

    pub(crate) fn bad_toc(reason: impl Into<String>) -> Self {
        ChunkedError::BadMetadata {
            what: "table of contents",
            reason: reason.into(),
        }
    }

    pub(crate) fn bad_tar_split(reason: impl Into<String>) -> Self {
        ChunkedError::BadMetadata {
            what: "tar-split",
            reason: reason.into(),
        }
    }

    pub(crate) fn bad_footer(reason: impl Into<String>) -> Self {
        ChunkedError::BadFooter {
            reason: reason.into(),
        }
    }

    pub(crate) fn unsupported(reason: impl Into<String>) -> Self {
        ChunkedError::Unsupported {
            reason: reason.into(),
        }
    }
}
