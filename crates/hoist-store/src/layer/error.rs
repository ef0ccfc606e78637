//! The error type of the layer store.

use std::io;
use std::path::PathBuf;

use oci_spec::image::Digest;

use super::path::PathError;

/// Everything that can go wrong registering, reading, verifying or unpacking layers.
///
/// Errors about one tar entry name the entry (lossily, bounded in length) so that a user can find
/// it in the archive. [`LayerError::is_invalid_layer`] tells apart a layer that can never be
/// extracted (a hostile or corrupt archive) from a local problem, and
/// [`LayerError::is_retryable`] tells whether trying the same operation again may succeed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LayerError {
    /// Reading the tar stream failed (for example the network or decompressor below it).
    #[error("reading the layer stream failed: {source}")]
    Source {
        /// The reader's error.
        #[source]
        source: io::Error,
    },
    /// A local filesystem operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, naming the path or entry.
        context: String,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// An entry name (or hard link target) was refused by the sanitiser.
    #[error("tar entry `{entry}` refused: {reason}")]
    BadName {
        /// The entry, as named in the archive.
        entry: String,
        /// Why its name was refused.
        #[source]
        reason: PathError,
    },
    /// An entry would be written through a symlink present in the layer.
    #[error(
        "tar entry `{entry}` refused: its parent `{component}` is a symlink, and writing through it could leave the layer"
    )]
    ThroughSymlink {
        /// The entry, as named in the archive.
        entry: String,
        /// The symlink component of its path.
        component: String,
    },
    /// An entry would be written beneath something that is not a directory.
    #[error("tar entry `{entry}` refused: its parent `{component}` is not a directory")]
    ThroughNonDirectory {
        /// The entry, as named in the archive.
        entry: String,
        /// The non-directory component of its path.
        component: String,
    },
    /// A hard link whose target is not a file extracted earlier in the same layer.
    #[error("tar entry `{entry}` refused: hard link target `{target}` {reason}")]
    BadHardLink {
        /// The entry, as named in the archive.
        entry: String,
        /// The link target, as named in the archive.
        target: String,
        /// What is wrong with the target.
        reason: &'static str,
    },
    /// An entry that is malformed or cannot be represented.
    #[error("tar entry `{entry}` refused: {reason}")]
    InvalidEntry {
        /// The entry, as named in the archive.
        entry: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An entry type hoist does not extract (GNU volume headers, multi-volume parts, ...).
    #[error("tar entry `{entry}` has unsupported type {type_flag:?}")]
    UnsupportedEntryType {
        /// The entry, as named in the archive.
        entry: String,
        /// The raw type flag.
        type_flag: char,
    },
    /// The archive is not a well-formed tar stream.
    #[error("malformed tar archive{}: {reason}", .entry.as_deref().map(|e| format!(" at entry `{e}`")).unwrap_or_default())]
    MalformedArchive {
        /// The entry being read, when known.
        entry: Option<String>,
        /// What is wrong.
        reason: String,
    },
    /// The extraction limit was reached (a decompression bomb or an unexpectedly large layer).
    #[error(
        "layer exceeds the extraction limit of {limit} {what}; raise the limit in the stage options if this layer is legitimate"
    )]
    LimitExceeded {
        /// The configured limit.
        limit: u64,
        /// What was counted: "bytes" or "entries".
        what: &'static str,
    },
    /// The computed DiffID differs from the expected one.
    #[error("layer DiffID mismatch: expected {expected}, computed {actual}")]
    DiffIdMismatch {
        /// The DiffID the caller expected.
        expected: Digest,
        /// The DiffID of the bytes actually read.
        actual: Digest,
    },
    /// A digest that cannot name a layer (the store keys layers by sha256 ChainIDs).
    #[error("`{digest}` cannot name a layer: {reason}")]
    InvalidDigest {
        /// The digest given.
        digest: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// No layer with this ChainID is in the store.
    #[error("layer {chain_id} is not in the store")]
    NotFound {
        /// The ChainID looked up.
        chain_id: Digest,
    },
    /// The parent layer of a commit is not in the store.
    #[error("parent layer {parent} is not in the store; register the layers of an image bottom-up")]
    ParentNotFound {
        /// The parent ChainID given.
        parent: Digest,
    },
    /// The layer is leased (by a pull or an image being recorded) and cannot be removed now.
    #[error("layer {chain_id} is in use; try again once the operation using it has finished")]
    InUse {
        /// The layer asked to be removed.
        chain_id: Digest,
    },
    /// The layer is the parent of another layer and cannot be removed.
    #[error("layer {chain_id} is the parent of layer {child}; remove the child first")]
    HasChildren {
        /// The layer asked to be removed.
        chain_id: Digest,
        /// One of its children.
        child: Digest,
    },
    /// A layer's metadata on disk is unreadable or inconsistent.
    #[error(
        "layer store entry {path} is corrupt: {reason}; `fsck` can remove it so that it is fetched again"
    )]
    Corrupt {
        /// The file or directory at fault.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The layers given to unpack do not form a parent chain.
    #[error("layer {index} ({chain_id}) is not a child of the layer before it")]
    BrokenChain {
        /// Position of the offending layer in the list.
        index: usize,
        /// Its ChainID.
        chain_id: Digest,
    },
    /// The unpack destination exists and is not an empty directory.
    #[error("unpack destination {path} must be an empty directory or not exist")]
    DestinationNotEmpty {
        /// The destination given.
        path: PathBuf,
    },
}

impl LayerError {
    /// Whether the archive itself is at fault (hostile, corrupt, or not matching its DiffID):
    /// extracting the same bytes again would fail the same way.
    pub fn is_invalid_layer(&self) -> bool {
        matches!(
            self,
            Self::BadName { .. }
                | Self::ThroughSymlink { .. }
                | Self::ThroughNonDirectory { .. }
                | Self::BadHardLink { .. }
                | Self::InvalidEntry { .. }
                | Self::UnsupportedEntryType { .. }
                | Self::MalformedArchive { .. }
                | Self::LimitExceeded { .. }
                | Self::DiffIdMismatch { .. }
        )
    }

    /// Whether the same operation may succeed if tried again: the stream failed (a network or
    /// decompression error below us), or a transient local condition (interrupted call, out of
    /// space or descriptors that may be freed).
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Source { .. } | Self::InUse { .. } => true,
            Self::Io { source, .. } => {
                matches!(
                    source.kind(),
                    io::ErrorKind::Interrupted
                        | io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::StorageFull
                        | io::ErrorKind::QuotaExceeded
                ) || source.raw_os_error() == Some(libc::EMFILE)
            }
            _ => false,
        }
    }

    /// An [`LayerError::Io`] with context.
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}

/// Result alias of the layer store.
pub type Result<T, E = LayerError> = std::result::Result<T, E>;
