//! Content-addressed local store: OCI layout, resumable ingests, unpacked layers, SQLite metadata.
//!
//! `hoist-store` keeps everything hoist holds on one machine under one root directory
//! (`--root`, by default `$XDG_DATA_HOME/hoist`):
//!
//! ```text
//! ROOT/
//!   oci-layout            {"imageLayoutVersion":"1.0.0"}
//!   index.json            named images (org.opencontainers.image.ref.name = full reference)
//!   blobs/sha256/<hex>    verified content (blobs/sha512/ too, for sha512 content)
//!   ingest/<name>/        partial blobs being written, resumable after any crash
//!   layers/<chain-id>/    unpacked layers (the layer store)
//!   locks/                cross-process lock files (index.json, gc)
//!   metadata.db           SQLite: references, images, DiffIDs, blob info cache, labels, leases
//! ```
//!
//! The root is a valid OCI image layout: `skopeo inspect oci:ROOT:REF` and
//! `umoci unpack --image ROOT:REF` work on it, and a layout written by those tools opens as a store.
//!
//! # Guarantees
//! * **No wrong byte.** A blob becomes visible in `blobs/` only after its size and digest were
//!   checked, its bytes fsynced and it was renamed into place (directory fsynced too). The streaming
//!   [`BlobReader`] re-verifies the digest as it reaches the end; [`Store::fsck`] re-hashes all.
//! * **No lost byte.** Ingests survive `kill -9` at any point and resume where the bytes on disk
//!   end; after a power loss they resume from the last checkpoint (see [`Writer`]). Metadata
//!   changes are SQLite transactions (WAL; reference changes fsynced, see `metadata`); `index.json` is replaced atomically.
//! * **Several processes.** Any number of processes may use one store at once: one writer per
//!   ingest (others wait, or get [`StoreError::Locked`] from the non-blocking variant, and then see
//!   the blob committed), `index.json` edits are serialised by a lock file, the database by
//!   SQLite's locking (WAL mode, busy timeout), and gc against lease and reference changes by the gc
//!   lock.
//!
//! # Blocking API
//! Every function is synchronous and uses `std::fs`: it blocks the calling thread on disk I/O,
//! file locks, and the database. Async callers run it on blocking threads (for example
//! `tokio::task::spawn_blocking`); the pull pipeline feeds a [`Writer`] from its own threads. The
//! library needs no async runtime. [`Store`], [`ContentStore`] and [`ReaderAt`] are `Send + Sync`
//! and cheap to clone; a [`Writer`] is `Send`.
//!
//! # Permissions
//! Files are created with mode 0644 and directories with 0755 (the umask can only narrow these),
//! so other tools and users may read the layout. The metadata database is 0600: it records which
//! registries and repositories the user works with.
//!
//! # Protecting work in progress from gc
//! A pull takes a [`Lease`] ([`Store::lease`]), adds each blob, ingest and layer it will use
//! *before* writing it, and drops the lease once the image is referenced ([`Store::add_reference`]).
//! gc never removes what a live lease holds; a lease whose process died (recorded by pid, process
//! start time and boot identity) or whose expiry passed stops protecting anything.
//!
//! # Layers
//! Unpacked layers live under [`Store::layers_dir`], managed by the [`layer`] store
//! ([`Store::layers`]): extracted safely from their uncompressed tar streams while the DiffID is
//! hashed, made visible by one atomic rename under their ChainID. Maintenance reaches them through a
//! small internal interface (list, verify, remove) so that fsck checks them and gc removes those
//! that no referenced image (by ChainID, see [`digests::chain_ids`]) and no lease uses.

mod content;
pub mod digests;
mod durable;
mod error;
pub mod files;
mod graph;
pub mod layer;
pub mod layout;
mod lock;
mod maintenance;
pub mod metadata;
mod store;

pub use content::{
    BlobInfo, BlobReader, ContentStore, DEFAULT_CHECKPOINT_INTERVAL, IngestInfo, ReaderAt,
    SectionReader, Writer, labels,
};
pub use error::{Result, StoreError};
pub use layout::{Layout, NamedDescriptor, REF_NAME_ANNOTATION};
pub use maintenance::{FsckFinding, FsckOptions, FsckProblem, FsckReport, GcOptions, GcReport};
pub use metadata::{
    AbsentBlob, BlobLocation, Compression, FileContent, ImagePlatform, ImageRecord, LabelSubject,
    Labels, LeaseOptions, LeaseRecord, LeaseResource, LocationCandidate, Metadata, ReferenceKind,
    ReferenceRecord,
};
pub use store::{Lease, Store};

/// Re-export of the `oci-spec` digest and descriptor types the API uses.
pub use oci_spec::image::{Descriptor, Digest, DigestAlgorithm, MediaType};
