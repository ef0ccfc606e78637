//! Transports: where images are read from and written to.
//!
//! An [`ImageSource`] gives an image's manifests and blobs; an [`ImageDestination`] takes them.
//! [`crate::copy::copy`] moves an image from any source to any destination. The transports:
//!
//! | name | source | destination |
//! |------|--------|-------------|
//! | `docker://REF` | [`RegistrySource`] | [`RegistryDestination`] (HEAD to skip, cross-repository mount, streamed upload) |
//! | `oci:DIR[:NAME]` | [`OciDirSource`] | [`OciDirDestination`] |
//! | `oci-archive:FILE[:NAME]` | [`OciArchiveSource`] | [`OciArchiveDestination`] |
//! | `docker-archive:FILE[:REF]` | [`DockerArchiveSource`] | [`DockerArchiveDestination`] |
//! | `store:REF`, or a bare reference | [`StoreSource`] | [`StoreDestination`] |
//!
//! [`ImageName::parse`] reads those names; [`open_source`] and [`open_destination`] open them
//! with what the transports need ([`TransportContext`]: a registry client, the local store).
//!
//! # The contract
//! * Manifests travel as bytes with their media type and are never re-serialised, so digests
//!   are preserved. [`ImageSource::get_manifest`] with `None` gives the image's top manifest
//!   (an index, possibly); with a digest, that manifest of the image.
//! * [`ImageDestination::put_blob`] verifies the digest and size of the stream as it arrives.
//!   Until the stream has ended and both matched, nothing of the blob is visible to readers; on
//!   any error (the stream failing midway, wrong bytes, a full disk) it fails and removes
//!   whatever it stored.
//! * [`ImageDestination::try_reusing_blob`] is asked before any byte moves: a destination that
//!   has the blob (or can get it cheaply, by a cross-repository mount) says so and the copy
//!   skips it.
//! * Manifests are written bottom-up: blobs, then child manifests
//!   ([`ImageDestination::put_manifest`] with their digest), then the top manifest (`None`),
//!   then [`ImageDestination::commit`], which makes the image visible under its name.
//!
//! The traits are object-safe (`Arc<dyn ImageSource>`): their methods return boxed futures.

mod docker_archive;
pub mod error;
mod layout;
pub mod manifest;
pub mod name;
mod oci;
mod oci_archive;
mod registry;
mod store;
pub(crate) mod stream;
mod tarball;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::Stream;
use hoist_registry::RegistryClient;
use hoist_store::Store;
use oci_spec::image::Digest;

pub use crate::platform::Platform;
pub use docker_archive::{DockerArchiveDestination, DockerArchiveSource};
pub use error::{Error, NameError, Result};
pub use hoist_registry::ByteStream;
pub use hoist_registry::Chunk as BlobChunk;
pub use layout::REF_NAME_ANNOTATION;
pub use name::{ArchiveImage, ImageName, Transport};
pub use oci::{OciDirDestination, OciDirSource};
pub use oci_archive::{OciArchiveDestination, OciArchiveSource};
pub use registry::{RegistryDestination, RegistrySource};
pub use store::{StoreDestination, StoreSource};

pub(crate) use registry::record_location;

/// A boxed future, as the transport traits return them.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The pieces of a [`ImageSource::get_blob_at`] read: `(chunk index, bytes)`, every chunk's
/// bytes complete and in order.
pub type ChunkStream = Pin<Box<dyn Stream<Item = Result<(usize, Bytes)>> + Send>>;

/// What is known about a blob: its digest, size and media type.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BlobInfo {
    /// The blob's digest.
    pub digest: Digest,
    /// Its size in bytes.
    pub size: u64,
    /// Its media type (empty when unknown).
    pub media_type: String,
}

impl BlobInfo {
    /// A blob described by its parts.
    pub fn new(digest: Digest, size: u64, media_type: impl Into<String>) -> BlobInfo {
        BlobInfo {
            digest,
            size,
            media_type: media_type.into(),
        }
    }

    /// A short form for progress lines: the first 12 hex characters of the digest.
    pub fn short_id(&self) -> String {
        self.digest.digest().chars().take(12).collect()
    }
}

/// A repository on a registry, where a blob was seen or is going: what cross-repository mounts
/// and the blob info cache work with.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RegistryLocation {
    /// The registry as references write it (`docker.io`, `127.0.0.1:5000`).
    pub registry: String,
    /// The repository (`library/alpine`).
    pub repository: String,
}

/// Options for [`ImageDestination::try_reusing_blob`].
#[derive(Debug, Clone, Default)]
pub struct ReuseOptions {
    /// Whether a blob with the same content under another compression may stand in (the
    /// returned info then differs from the one asked for, and the manifest would have to
    /// change; copies that preserve digests leave this off).
    pub can_substitute: bool,
    /// Where the source holds the blob, when it is a registry: a destination on the same
    /// registry mounts from there.
    pub source: Option<RegistryLocation>,
    /// The blob info cache (the local store's metadata): more places to mount from.
    pub cache: Option<Store>,
    /// Whether the blob is an image config.
    pub is_config: bool,
    /// Whether the blob is an empty layer.
    pub empty_layer: bool,
    /// The layer's position in its image, for layers.
    pub layer_index: Option<usize>,
}

/// Options for [`ImageDestination::put_blob`].
#[derive(Debug, Clone, Default)]
pub struct PutOptions {
    /// The blob info cache to record what the write learnt.
    pub cache: Option<Store>,
    /// Whether the blob is an image config.
    pub is_config: bool,
    /// Whether the blob is an empty layer.
    pub empty_layer: bool,
    /// The layer's position in its image, for layers.
    pub layer_index: Option<usize>,
}

/// Where an image is read from.
pub trait ImageSource: Send + Sync {
    /// The image's name with its transport, for messages (`oci:/tmp/l:v1`).
    fn name(&self) -> String;

    /// The transport.
    fn transport(&self) -> Transport;

    /// The registry repository the blobs come from, when the source is a registry.
    fn registry_location(&self) -> Option<RegistryLocation> {
        None
    }

    /// The manifest: the image's top manifest for `None` (an index, possibly), or the manifest
    /// with digest `instance`, verified. Returns its bytes, unchanged, and its media type.
    fn get_manifest<'a>(
        &'a self,
        instance: Option<&'a Digest>,
    ) -> BoxFuture<'a, Result<(Bytes, String)>>;

    /// A blob's bytes as a stream, and its size. The stream is not verified here: destinations
    /// verify as they write.
    fn get_blob<'a>(&'a self, info: &'a BlobInfo) -> BoxFuture<'a, Result<(ByteStream, u64)>>;

    /// Whether [`ImageSource::get_blob_at`] is available.
    fn supports_get_blob_at(&self) -> bool {
        false
    }

    /// Discontiguous chunks of a blob (sorted, not overlapping, not empty).
    fn get_blob_at<'a>(
        &'a self,
        info: &'a BlobInfo,
        chunks: &'a [BlobChunk],
    ) -> BoxFuture<'a, Result<ChunkStream>> {
        let _ = (info, chunks);
        let transport = self.transport().name();
        Box::pin(async move {
            Err(Error::Unsupported {
                transport,
                operation: "reading blob chunks",
            })
        })
    }
}

/// Where an image is written.
pub trait ImageDestination: Send + Sync {
    /// The image's name with its transport, for messages.
    fn name(&self) -> String;

    /// The transport.
    fn transport(&self) -> Transport;

    /// The registry repository blobs go to, when the destination is a registry.
    fn registry_location(&self) -> Option<RegistryLocation> {
        None
    }

    /// The manifest media types this destination stores.
    fn supported_manifest_types(&self) -> &'static [&'static str];

    /// Whether the destination stores manifests of `media_type`.
    fn supports_manifest_type(&self, media_type: &str) -> bool {
        let base = manifest::base_media_type(media_type);
        self.supported_manifest_types().contains(&base)
    }

    /// Whether the destination already has the blob, or can get it without a transfer (a
    /// cross-repository mount, say). `Some(info)` means the blob is in place: skip it.
    fn try_reusing_blob<'a>(
        &'a self,
        info: &'a BlobInfo,
        options: &'a ReuseOptions,
    ) -> BoxFuture<'a, Result<Option<BlobInfo>>>;

    /// Writes a blob from `stream`, verifying its digest and size on the way. Nothing is visible
    /// until both matched; on any error it fails and leaves nothing behind. Returns the blob as
    /// stored (a destination that stores layers uncompressed returns the uncompressed blob).
    fn put_blob<'a>(
        &'a self,
        stream: ByteStream,
        info: &'a BlobInfo,
        options: &'a PutOptions,
    ) -> BoxFuture<'a, Result<BlobInfo>>;

    /// Whether [`ImageDestination::put_blob_partial`] is available.
    fn supports_put_blob_partial(&self) -> bool {
        false
    }

    /// Builds a blob from what the destination already holds plus the chunks it lacks, read
    /// from `source` with [`ImageSource::get_blob_at`]. May fail where a full
    /// [`ImageDestination::put_blob`] would work; callers fall back to it.
    fn put_blob_partial<'a>(
        &'a self,
        source: &'a dyn ImageSource,
        info: &'a BlobInfo,
        options: &'a PutOptions,
    ) -> BoxFuture<'a, Result<BlobInfo>> {
        let _ = (source, info, options);
        let transport = self.transport().name();
        Box::pin(async move {
            Err(Error::Unsupported {
                transport,
                operation: "partial blob writes",
            })
        })
    }

    /// Writes a manifest, byte for byte: the manifest with digest `instance` of a multi-image
    /// index, or the image's top manifest (`None`), which [`ImageDestination::commit`] then
    /// names.
    fn put_manifest<'a>(
        &'a self,
        manifest: Bytes,
        media_type: &'a str,
        instance: Option<&'a Digest>,
    ) -> BoxFuture<'a, Result<()>>;

    /// Makes the image visible under its name (tags it, writes the index or the archive).
    fn commit(&self) -> BoxFuture<'_, Result<()>>;
}

/// What the transports need to open images.
#[derive(Debug, Clone, Default)]
pub struct TransportContext {
    /// The registry client, for `docker://`.
    pub registry: Option<RegistryClient>,
    /// The local store, for `store:` and bare references.
    pub store: Option<Store>,
}

impl TransportContext {
    /// A context with a registry client.
    pub fn with_registry(mut self, client: RegistryClient) -> TransportContext {
        self.registry = Some(client);
        self
    }

    /// A context with the local store.
    pub fn with_store(mut self, store: Store) -> TransportContext {
        self.store = Some(store);
        self
    }

    fn registry(&self) -> Result<&RegistryClient> {
        self.registry.as_ref().ok_or(Error::NotConfigured {
            transport: "docker://",
            what: "a registry client",
        })
    }

    fn store(&self) -> Result<&Store> {
        self.store.as_ref().ok_or(Error::NotConfigured {
            transport: "store:",
            what: "the local store",
        })
    }
}

/// Opens `name` for reading.
pub async fn open_source(
    name: &ImageName,
    context: &TransportContext,
) -> Result<Arc<dyn ImageSource>> {
    Ok(match name {
        ImageName::Docker(reference) => {
            Arc::new(RegistrySource::open(context.registry()?, reference.clone()).await?)
        }
        ImageName::Oci { path, name } => Arc::new(OciDirSource::open(path, name.as_deref())?),
        ImageName::OciArchive { path, name } => {
            Arc::new(OciArchiveSource::open(path, name.as_deref()).await?)
        }
        ImageName::DockerArchive { path, image } => {
            Arc::new(DockerArchiveSource::open(path, image.clone()).await?)
        }
        ImageName::Store(reference) => Arc::new(
            StoreSource::open(context.store()?.clone(), reference.clone())
                .await?
                .with_registry(context.registry.clone()),
        ),
    })
}

/// Opens `name` for writing.
pub async fn open_destination(
    name: &ImageName,
    context: &TransportContext,
) -> Result<Arc<dyn ImageDestination>> {
    Ok(match name {
        ImageName::Docker(reference) => {
            Arc::new(RegistryDestination::open(context.registry()?, reference.clone()).await?)
        }
        ImageName::Oci { path, name } => {
            Arc::new(OciDirDestination::create(path, name.as_deref())?)
        }
        ImageName::OciArchive { path, name } => {
            Arc::new(OciArchiveDestination::create(path, name.as_deref())?)
        }
        ImageName::DockerArchive { path, image } => {
            let reference = match image {
                None => None,
                Some(ArchiveImage::Named(r)) => Some(r.clone()),
                Some(ArchiveImage::Index(_)) => {
                    return Err(Error::Unsupported {
                        transport: "docker-archive",
                        operation: "writing an image by index (@N); name it NAME:TAG",
                    });
                }
            };
            Arc::new(DockerArchiveDestination::create(path, reference)?)
        }
        ImageName::Store(reference) => Arc::new(StoreDestination::create(
            context.store()?.clone(),
            reference.clone(),
        )?),
    })
}
