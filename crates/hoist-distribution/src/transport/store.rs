//! `store:REF` (or a bare reference): hoist's local store, over `hoist-store`.
//!
//! The source resolves the full reference (`docker.io/library/alpine:latest`) to its manifest
//! and reads verified blobs. The destination writes blobs through the content store's ingests
//! (verified at commit, aborted on any error so nothing stays behind), protects them from gc with
//! a lease while the copy runs, and at commit points the reference at the top manifest, which
//! also names it in the store's `index.json`.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use hoist_registry::ImageRef;
use hoist_store::{
    ContentStore, Descriptor, Lease, LeaseOptions, LeaseResource, MediaType, Store, StoreError,
    Writer,
};
use oci_spec::image::{DescriptorBuilder, Digest};

use super::error::{Error, Result};
use super::manifest::{MANIFEST_LIMIT, media_type_of};
use super::oci::ALL_MANIFEST_TYPES;
use super::stream::{
    BlobSink, blocking, blocking_reader_stream, check_chunks, file_chunk_stream, pump,
};
use super::{
    BlobChunk, BlobInfo, BoxFuture, ByteStream, ChunkStream, ImageDestination, ImageSource,
    PutOptions, ReuseOptions, Transport,
};

/// Reads an image from the local store.
#[derive(Debug, Clone)]
pub struct StoreSource {
    store: Store,
    reference: ImageRef,
    top: Descriptor,
    registry: Option<hoist_registry::RegistryClient>,
}

impl StoreSource {
    /// Opens `reference` in `store`.
    pub async fn open(store: Store, reference: ImageRef) -> Result<StoreSource> {
        let name = reference.to_string();
        let lookup = store.clone();
        let found = blocking("resolve a reference", move || {
            lookup
                .resolve(&name)
                .map_err(|e| Error::store(format!("resolve {name}"), e))
        })
        .await?;
        let top = match (found, reference.digest()) {
            (Some(top), _) => top,
            // A reference by digest needs no name in the store, only the manifest.
            (None, Some(digest)) => by_digest(&store, digest, &reference).await?,
            (None, None) => {
                return Err(Error::ImageNotFound {
                    location: format!("store:{reference}"),
                    names: Vec::new(),
                });
            }
        };
        Ok(StoreSource {
            store,
            reference,
            top,
            registry: None,
        })
    }

    /// Lets the source fetch, with `client`, the blobs a partial pull left out (the layer is in
    /// the store, the compressed blob is not) from the registry they were pulled from, when a
    /// copy or export needs them. Without a client such blobs are not found.
    pub fn with_registry(mut self, client: Option<hoist_registry::RegistryClient>) -> StoreSource {
        self.registry = client;
        self
    }

    /// Fetches `digest` into the store when a partial pull left it out; whether it did.
    async fn fetch_absent(&self, digest: &Digest) -> Result<bool> {
        let Some(client) = &self.registry else {
            return Ok(false);
        };
        crate::absent::fetch_absent_blob(client, &self.store, digest)
            .await
            .map_err(|e| Error::Incomplete {
                location: self.name(),
                reason: format!(
                    "blob {digest} was left out by a partial pull and could not be fetched: {}",
                    hoist_xfer::describe(&e)
                ),
            })
    }

    fn not_found(&self, what: &str, digest: &Digest) -> Error {
        match what {
            "manifest" => Error::ManifestNotFound {
                location: self.name(),
                digest: digest.to_string(),
            },
            _ => Error::BlobNotFound {
                location: self.name(),
                digest: digest.to_string(),
            },
        }
    }

    async fn read_manifest(&self, digest: &Digest) -> Result<Bytes> {
        let content = self.store.content().clone();
        let d = digest.clone();
        match blocking("read a manifest", move || {
            content
                .read_verified(&d, MANIFEST_LIMIT)
                .map_err(|e| Error::store(format!("read manifest {d}"), e))
        })
        .await
        {
            Ok(bytes) => Ok(Bytes::from(bytes)),
            Err(e) if e.is_not_found() => Err(self.not_found("manifest", digest)),
            Err(e) => Err(e),
        }
    }
}

/// The descriptor of manifest `digest` when the store holds it.
async fn by_digest(store: &Store, digest: &Digest, reference: &ImageRef) -> Result<Descriptor> {
    let content = store.content().clone();
    let d = digest.clone();
    let bytes = blocking("read a manifest", move || {
        match content.read_verified(&d, MANIFEST_LIMIT) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(Error::store(format!("read manifest {d}"), e)),
        }
    })
    .await?;
    let location = format!("store:{reference}");
    let bytes = bytes.ok_or_else(|| Error::ImageNotFound {
        location: location.clone(),
        names: Vec::new(),
    })?;
    let media_type = media_type_of(&bytes).ok_or_else(|| {
        Error::malformed(
            "manifest",
            &location,
            format!("{digest} declares no media type and has no known shape"),
        )
    })?;
    DescriptorBuilder::default()
        .media_type(MediaType::from(media_type.as_str()))
        .digest(digest.clone())
        .size(bytes.len() as u64)
        .build()
        .map_err(|e| Error::malformed("manifest descriptor", location, e))
}

impl ImageSource for StoreSource {
    fn name(&self) -> String {
        format!("store:{}", self.reference)
    }

    fn transport(&self) -> Transport {
        Transport::Store
    }

    fn get_manifest<'a>(
        &'a self,
        instance: Option<&'a Digest>,
    ) -> BoxFuture<'a, Result<(Bytes, String)>> {
        Box::pin(async move {
            match instance {
                None => {
                    let bytes = self.read_manifest(self.top.digest()).await?;
                    Ok((bytes, self.top.media_type().to_string()))
                }
                Some(d) => {
                    let bytes = self.read_manifest(d).await?;
                    let media_type = media_type_of(&bytes).ok_or_else(|| {
                        Error::malformed(
                            "manifest",
                            self.name(),
                            format!("{d} declares no media type and has no known shape"),
                        )
                    })?;
                    Ok((bytes, media_type))
                }
            }
        })
    }

    fn get_blob<'a>(&'a self, info: &'a BlobInfo) -> BoxFuture<'a, Result<(ByteStream, u64)>> {
        Box::pin(async move {
            let open = || {
                let content = self.store.content().clone();
                let d = info.digest.clone();
                blocking("open a blob", move || {
                    content
                        .reader(&d)
                        .map_err(|e| Error::store(format!("open blob {d}"), e))
                })
            };
            let reader = match open().await {
                Err(e) if e.is_not_found() && self.fetch_absent(&info.digest).await? => {
                    open().await
                }
                other => other,
            };
            let reader = match reader {
                Ok(r) => r,
                Err(e) if e.is_not_found() => return Err(self.not_found("blob", &info.digest)),
                Err(e) => return Err(e),
            };
            let size = reader.size();
            // The reader re-verifies the digest at the end and fails the stream on a mismatch.
            Ok((blocking_reader_stream(reader), size))
        })
    }

    fn supports_get_blob_at(&self) -> bool {
        true
    }

    fn get_blob_at<'a>(
        &'a self,
        info: &'a BlobInfo,
        chunks: &'a [BlobChunk],
    ) -> BoxFuture<'a, Result<ChunkStream>> {
        Box::pin(async move {
            let content = self.store.content().clone();
            let d = info.digest.clone();
            let reader = blocking("open a blob", move || {
                content
                    .reader_at(&d)
                    .map_err(|e| Error::store(format!("open blob {d}"), e))
            })
            .await;
            let reader = match reader {
                Ok(r) => r,
                Err(e) if e.is_not_found() => return Err(self.not_found("blob", &info.digest)),
                Err(e) => return Err(e),
            };
            check_chunks(chunks, Some(reader.size()))
                .map_err(|reason| Error::malformed("chunk list", self.name(), reason))?;
            let label = std::path::PathBuf::from(format!("{} in {}", info.digest, self.name()));
            Ok(file_chunk_stream(reader, label, chunks.to_vec()))
        })
    }
}

/// Writes an image into the local store.
#[derive(Debug)]
pub struct StoreDestination {
    store: Store,
    reference: ImageRef,
    lease: Mutex<Option<Arc<Lease>>>,
    top: Mutex<Option<Descriptor>>,
}

impl StoreDestination {
    /// Prepares to write `reference` into `store`. A lease protects what is written from gc
    /// until the reference points at it.
    pub fn create(store: Store, reference: ImageRef) -> Result<StoreDestination> {
        let lease = store
            .lease(&LeaseOptions::default())
            .map_err(|e| Error::store("take a lease on the store", e))?;
        Ok(StoreDestination {
            store,
            reference,
            lease: Mutex::new(Some(Arc::new(lease))),
            top: Mutex::new(None),
        })
    }

    async fn protect(&self, digest: &Digest) -> Result<()> {
        let lease = self.lease.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let Some(lease) = lease else {
            return Ok(());
        };
        let d = digest.clone();
        blocking("lease a blob", move || {
            lease
                .add(&LeaseResource::Blob(d.clone()))
                .map_err(|e| Error::store(format!("lease blob {d}"), e))
        })
        .await
    }

    fn stored(
        &self,
        info: &BlobInfo,
    ) -> impl FnOnce() -> Result<Option<BlobInfo>> + Send + 'static {
        let content = self.store.content().clone();
        let info = info.clone();
        move || match content.info(&info.digest) {
            Ok(i) if i.size == info.size => Ok(Some(info)),
            Ok(_) => Ok(None),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(Error::store(format!("stat blob {}", info.digest), e)),
        }
    }
}

impl ImageDestination for StoreDestination {
    fn name(&self) -> String {
        format!("store:{}", self.reference)
    }

    fn transport(&self) -> Transport {
        Transport::Store
    }

    fn supported_manifest_types(&self) -> &'static [&'static str] {
        ALL_MANIFEST_TYPES
    }

    fn try_reusing_blob<'a>(
        &'a self,
        info: &'a BlobInfo,
        options: &'a ReuseOptions,
    ) -> BoxFuture<'a, Result<Option<BlobInfo>>> {
        Box::pin(async move {
            self.protect(&info.digest).await?;
            if let Some(found) = blocking("stat a blob", self.stored(info)).await? {
                return Ok(Some(found));
            }
            if !options.can_substitute {
                return Ok(None);
            }
            // The same content under another compression: any blob with the same DiffID.
            let store = self.store.clone();
            let digest = info.digest.clone();
            let media_type = info.media_type.clone();
            blocking("read the blob info cache", move || {
                let metadata = store.metadata();
                let cache_err = |e| Error::store("read the blob info cache", e);
                let Some(diff_id) = metadata.uncompressed_digest(&digest).map_err(cache_err)?
                else {
                    return Ok(None);
                };
                for candidate in metadata.digests_for_diff_id(&diff_id).map_err(cache_err)? {
                    if candidate == digest {
                        continue;
                    }
                    // Described by its own compression; one the manifest cannot name is no use.
                    let Some(media_type) = metadata
                        .compression(&candidate)
                        .map_err(cache_err)?
                        .and_then(|c| super::manifest::layer_media_type_for(&media_type, &c))
                    else {
                        continue;
                    };
                    match store.content().info(&candidate) {
                        Ok(i) => return Ok(Some(BlobInfo::new(candidate, i.size, media_type))),
                        Err(e) if e.is_not_found() => {}
                        Err(e) => return Err(cache_err(e)),
                    }
                }
                Ok(None)
            })
            .await
        })
    }

    fn put_blob<'a>(
        &'a self,
        stream: ByteStream,
        info: &'a BlobInfo,
        _options: &'a PutOptions,
    ) -> BoxFuture<'a, Result<BlobInfo>> {
        Box::pin(async move {
            self.protect(&info.digest).await?;
            let content = self.store.content().clone();
            let i = info.clone();
            let writer = blocking("open an ingest", move || open_writer(&content, &i)).await?;
            match writer {
                None => Ok(info.clone()),
                Some(writer) => {
                    pump(
                        stream,
                        StoreSink {
                            writer,
                            info: info.clone(),
                            content: self.store.content().clone(),
                        },
                        &info.digest,
                    )
                    .await
                }
            }
        })
    }

    fn put_manifest<'a>(
        &'a self,
        manifest: Bytes,
        media_type: &'a str,
        instance: Option<&'a Digest>,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let digest = match instance {
                Some(d) => d.clone(),
                None => hoist_registry::digest::sha256_of(&manifest),
            };
            self.protect(&digest).await?;
            let content = self.store.content().clone();
            let (bytes, d) = (manifest.clone(), digest.clone());
            blocking("write a manifest", move || {
                content
                    .put_bytes(&bytes, Some(&d))
                    .map(|_| ())
                    .map_err(|e| Error::store(format!("write manifest {d}"), e))
            })
            .await?;
            if instance.is_none() {
                let descriptor = DescriptorBuilder::default()
                    .media_type(MediaType::from(media_type))
                    .digest(digest)
                    .size(manifest.len() as u64)
                    .build()
                    .map_err(|e| Error::malformed("manifest descriptor", self.name(), e))?;
                *self.top.lock().unwrap_or_else(|p| p.into_inner()) = Some(descriptor);
            }
            Ok(())
        })
    }

    fn commit(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            let top = self
                .top
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
                .ok_or_else(|| Error::Incomplete {
                    location: self.name(),
                    reason: "commit without a top manifest".into(),
                })?;
            if let Some(pinned) = self.reference.digest()
                && pinned != top.digest()
            {
                return Err(Error::DigestMismatch {
                    what: format!("image written to {}", self.name()),
                    expected: pinned.to_string(),
                    actual: top.digest().to_string(),
                });
            }
            let store = self.store.clone();
            let name = self.reference.to_string();
            blocking("name the image", move || {
                store
                    .add_reference(&name, &top)
                    .map_err(|e| Error::store(format!("point {name} at the image"), e))
            })
            .await?;
            let lease = self.lease.lock().unwrap_or_else(|p| p.into_inner()).take();
            // Released now, or by the last blob write still holding it.
            if let Some(Ok(lease)) = lease.map(Arc::try_unwrap)
                && let Err(e) = lease.release()
            {
                tracing::debug!(error = %e, "releasing the copy's lease failed; it ends with the process");
            }
            Ok(())
        })
    }
}

/// A writer for blob `info`, or `None` when the store already has it.
fn open_writer(content: &ContentStore, info: &BlobInfo) -> Result<Option<Writer>> {
    let reference = format!("copy-{}", info.digest);
    match content.writer(&reference, Some(&info.digest), Some(info.size)) {
        Ok(mut w) => {
            if w.offset() != 0 {
                // A stream always starts at byte 0: drop what an earlier attempt left.
                w.reset()
                    .map_err(|e| Error::store(format!("reset ingest {reference}"), e))?;
            }
            Ok(Some(w))
        }
        Err(StoreError::AlreadyExists { .. }) => Ok(None),
        Err(e) => Err(Error::store(format!("open ingest {reference}"), e)),
    }
}

/// Writes a blob through a content store ingest; the commit verifies it.
struct StoreSink {
    writer: Writer,
    info: BlobInfo,
    content: ContentStore,
}

impl BlobSink for StoreSink {
    type Output = BlobInfo;

    fn write(&mut self, data: &[u8]) -> Result<()> {
        std::io::Write::write_all(&mut self.writer, data).map_err(|e| {
            let e = self.writer.error_from_io(e);
            match e {
                StoreError::SizeMismatch {
                    expected, actual, ..
                } => Error::SizeMismatch {
                    what: format!("blob {}", self.info.digest),
                    expected,
                    actual,
                },
                other => Error::store(format!("write blob {}", self.info.digest), other),
            }
        })
    }

    fn finish(self) -> Result<BlobInfo> {
        let StoreSink {
            writer,
            info,
            content,
        } = self;
        let reference = writer.reference().to_owned();
        let content_err = |e: StoreError| match e {
            StoreError::DigestMismatch { expected, actual } => Error::DigestMismatch {
                what: format!("blob {}", info.digest),
                expected: expected.to_string(),
                actual: actual.to_string(),
            },
            StoreError::SizeMismatch {
                expected, actual, ..
            } => Error::SizeMismatch {
                what: format!("blob {}", info.digest),
                expected,
                actual,
            },
            other => Error::store(format!("commit blob {}", info.digest), other),
        };
        match writer.commit(Some(info.size), Some(&info.digest)) {
            Ok(_) => Ok(info),
            Err(e) => {
                // A failed commit keeps the ingest (to resume); a copy never resumes from it.
                if let Err(abort) = content.abort(&reference) {
                    tracing::debug!(%reference, error = %abort, "could not remove a failed ingest");
                }
                Err(content_err(e))
            }
        }
    }

    fn abort(self) {
        let reference = self.writer.reference().to_owned();
        if let Err(e) = self.writer.abort() {
            tracing::debug!(%reference, error = %e, "could not remove an aborted ingest");
        }
    }
}
