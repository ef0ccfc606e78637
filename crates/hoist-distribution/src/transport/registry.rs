//! `docker://REF`: an image in a registry, over `hoist-registry`.
//!
//! The source fetches manifests (verified against the digest asked for, or the registry's
//! `Docker-Content-Digest`) and streams blobs; chunked reads use the client's multi-range
//! support. The destination skips blobs the repository has (`HEAD`), mounts them from another
//! repository of the same registry when the source is there (or the blob info cache knows such
//! a place), and otherwise uploads them streamed, verifying the digest and size on the way: a
//! stream that fails or carries the wrong bytes aborts the upload and cancels its session, so
//! the registry keeps nothing. Manifests go by digest (children of an index) or by the tag.

use std::io;
use std::time::SystemTime;

use bytes::Bytes;
use futures_util::StreamExt;
use hoist_registry::{ImageRef, MountResult, RegistryClient, Repository};
use oci_spec::image::Digest;

use super::error::{Error, Result};
use super::manifest::{DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST};
use super::stream::{Verifier, blocking};
use super::{
    BlobChunk, BlobInfo, BoxFuture, ByteStream, ChunkStream, ImageDestination, ImageSource,
    PutOptions, RegistryLocation, ReuseOptions, Transport,
};

/// How many cached locations are tried for a cross-repository mount.
const MOUNT_CANDIDATES: usize = 3;

async fn repository(client: &RegistryClient, reference: &ImageRef) -> Result<Repository> {
    let endpoint = client
        .resolve(reference.api_host())
        .await
        .map_err(|e| Error::registry(format!("reach registry {}", reference.registry()), e))?;
    Ok(client.repository(endpoint, reference.repository()))
}

fn location_of(reference: &ImageRef) -> RegistryLocation {
    RegistryLocation {
        registry: reference.registry().to_owned(),
        repository: reference.repository().to_owned(),
    }
}

/// Reads an image from a registry.
#[derive(Debug, Clone)]
pub struct RegistrySource {
    reference: ImageRef,
    repo: Repository,
}

impl RegistrySource {
    /// Opens `reference` with `client` (the registry is pinged and its endpoint resolved).
    pub async fn open(client: &RegistryClient, reference: ImageRef) -> Result<RegistrySource> {
        let repo = repository(client, &reference).await?;
        Ok(RegistrySource { reference, repo })
    }
}

impl ImageSource for RegistrySource {
    fn name(&self) -> String {
        format!("docker://{}", self.reference)
    }

    fn transport(&self) -> Transport {
        Transport::Docker
    }

    fn registry_location(&self) -> Option<RegistryLocation> {
        Some(location_of(&self.reference))
    }

    fn get_manifest<'a>(
        &'a self,
        instance: Option<&'a Digest>,
    ) -> BoxFuture<'a, Result<(Bytes, String)>> {
        Box::pin(async move {
            let wanted = match instance {
                Some(d) => d.to_string(),
                None => self.reference.manifest_reference().to_owned(),
            };
            let m = self.repo.get_manifest(&wanted).await.map_err(|e| {
                Error::registry(
                    format!("fetch manifest {wanted} of {}", self.reference.name()),
                    e,
                )
            })?;
            Ok((m.bytes, m.media_type))
        })
    }

    fn get_blob<'a>(&'a self, info: &'a BlobInfo) -> BoxFuture<'a, Result<(ByteStream, u64)>> {
        Box::pin(async move {
            let resp = self.repo.get_blob(&info.digest).await.map_err(|e| {
                Error::registry(
                    format!("fetch blob {} of {}", info.digest, self.reference.name()),
                    e,
                )
            })?;
            let size = resp.total.unwrap_or(info.size);
            let stream: ByteStream = Box::pin(resp.body.map(|r| r.map_err(io::Error::other)));
            Ok((stream, size))
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
            let operation = format!(
                "fetch chunks of blob {} of {}",
                info.digest,
                self.reference.name()
            );
            let stream = self
                .repo
                .get_blob_at(&info.digest, chunks)
                .await
                .map_err(|e| Error::registry(operation.clone(), e))?;
            let stream: ChunkStream =
                Box::pin(stream.map(move |r| r.map_err(|e| Error::registry(operation.clone(), e))));
            Ok(stream)
        })
    }
}

/// Writes an image to a registry.
#[derive(Debug, Clone)]
pub struct RegistryDestination {
    reference: ImageRef,
    repo: Repository,
}

const REGISTRY_MANIFEST_TYPES: &[&str] = &[OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST];

impl RegistryDestination {
    /// Opens `reference` for writing with `client` (the registry is pinged and its endpoint
    /// resolved).
    pub async fn open(client: &RegistryClient, reference: ImageRef) -> Result<RegistryDestination> {
        let repo = repository(client, &reference).await?;
        Ok(RegistryDestination { reference, repo })
    }

    fn what(&self, verb: &str, digest: &Digest) -> String {
        format!("{verb} blob {digest} in {}", self.reference.name())
    }

    /// `HEAD` in this repository: the blob when present with the expected size.
    async fn present(&self, info: &BlobInfo) -> Result<Option<BlobInfo>> {
        let size = self
            .repo
            .head_blob(&info.digest)
            .await
            .map_err(|e| Error::registry(self.what("check", &info.digest), e))?;
        Ok(match size {
            Some(s) if s == info.size || s == 0 => Some(info.clone()),
            _ => None,
        })
    }

    /// Asks the registry to mount `digest` from repository `from`. A refusal (or a registry that
    /// does not mount) is `false`, with the session it opened cancelled.
    async fn mount(&self, digest: &Digest, from: &str) -> bool {
        match self.repo.mount_blob(digest, from).await {
            Ok(MountResult::Mounted) => true,
            Ok(MountResult::NotMounted(session)) => {
                if let Err(e) = session.cancel().await {
                    tracing::debug!(%digest, from, error = %e, "cancelling an unused upload session failed");
                }
                false
            }
            Ok(_) => false,
            Err(e) => {
                tracing::debug!(%digest, from, error = %e, "cross-repository mount failed");
                false
            }
        }
    }

    /// Records in the blob info cache, when there is one, that this repository holds `digest`.
    async fn learnt(&self, cache: Option<&hoist_store::Store>, digest: &Digest) {
        if let Some(cache) = cache {
            record_location(cache, digest, &location_of(&self.reference)).await;
        }
    }

    /// Repositories of this registry the blob info cache saw the blob in.
    async fn cached_locations(
        &self,
        info: &BlobInfo,
        options: &ReuseOptions,
    ) -> Vec<(Digest, String, Option<hoist_store::Compression>)> {
        let Some(cache) = options.cache.clone() else {
            return Vec::new();
        };
        let digest = info.digest.clone();
        let registry = self.reference.registry().to_owned();
        let can_substitute = options.can_substitute;
        let found = blocking("read the blob info cache", move || {
            cache
                .metadata()
                .candidate_locations(&digest, &registry, can_substitute, MOUNT_CANDIDATES)
                .map_err(|e| Error::store("read the blob info cache", e))
        })
        .await;
        match found {
            Ok(candidates) => candidates
                .into_iter()
                .map(|c| (c.digest, c.location.repository, c.compression))
                .collect(),
            Err(e) => {
                tracing::debug!(error = %e, "blob info cache unavailable; not using it");
                Vec::new()
            }
        }
    }
}

impl ImageDestination for RegistryDestination {
    fn name(&self) -> String {
        format!("docker://{}", self.reference)
    }

    fn transport(&self) -> Transport {
        Transport::Docker
    }

    fn registry_location(&self) -> Option<RegistryLocation> {
        Some(location_of(&self.reference))
    }

    fn supported_manifest_types(&self) -> &'static [&'static str] {
        REGISTRY_MANIFEST_TYPES
    }

    fn try_reusing_blob<'a>(
        &'a self,
        info: &'a BlobInfo,
        options: &'a ReuseOptions,
    ) -> BoxFuture<'a, Result<Option<BlobInfo>>> {
        Box::pin(async move {
            if let Some(found) = self.present(info).await? {
                self.learnt(options.cache.as_ref(), &info.digest).await;
                return Ok(Some(found));
            }
            let own = self.reference.repository();
            if let Some(source) = &options.source
                && source.registry == self.reference.registry()
                && source.repository != own
                && self.mount(&info.digest, &source.repository).await
            {
                self.learnt(options.cache.as_ref(), &info.digest).await;
                return Ok(Some(info.clone()));
            }
            let mut headed = std::collections::HashSet::new();
            for (digest, repository, compression) in self.cached_locations(info, options).await {
                let substitute = digest != info.digest;
                // A substitute is described by its own compression; one the manifest cannot
                // name is no use.
                let media_type = if substitute {
                    match compression
                        .as_ref()
                        .and_then(|c| super::manifest::layer_media_type_for(&info.media_type, c))
                    {
                        Some(m) => m.to_owned(),
                        None => continue,
                    }
                } else {
                    info.media_type.clone()
                };
                if repository == own {
                    // The cache says this repository has the substitute: check it still does.
                    if substitute && headed.insert(digest.clone()) {
                        let size = self
                            .repo
                            .head_blob(&digest)
                            .await
                            .map_err(|e| Error::registry(self.what("check", &digest), e))?;
                        if let Some(size) = size {
                            self.learnt(options.cache.as_ref(), &digest).await;
                            return Ok(Some(BlobInfo::new(digest, size, media_type)));
                        }
                    }
                    continue;
                }
                if self.mount(&digest, &repository).await {
                    self.learnt(options.cache.as_ref(), &digest).await;
                    if !substitute {
                        return Ok(Some(info.clone()));
                    }
                    let size = self
                        .repo
                        .head_blob(&digest)
                        .await
                        .map_err(|e| Error::registry(self.what("check", &digest), e))?;
                    if let Some(size) = size {
                        return Ok(Some(BlobInfo::new(digest, size, media_type)));
                    }
                }
            }
            Ok(None)
        })
    }

    fn put_blob<'a>(
        &'a self,
        stream: ByteStream,
        info: &'a BlobInfo,
        options: &'a PutOptions,
    ) -> BoxFuture<'a, Result<BlobInfo>> {
        Box::pin(async move {
            let verifier =
                Verifier::new(self.what("upload", &info.digest), &info.digest, info.size)?;
            let (checked, verdict) = verifying_stream(stream, verifier);
            let session = self
                .repo
                .start_upload()
                .await
                .map_err(|e| Error::registry(self.what("start upload of", &info.digest), e))?;
            let sent = session
                .finish(&info.digest, Some((checked, info.size)))
                .await;
            // The stream's own verdict comes first: it says why the upload broke off.
            let verdict = verdict.await.unwrap_or(Ok(()));
            let outcome = match (verdict, sent) {
                (Err(e), _) => Err(e),
                (Ok(()), Err(e)) => Err(Error::registry(self.what("upload", &info.digest), e)),
                (Ok(()), Ok(())) => Ok(()),
            };
            if let Err(e) = outcome {
                if let Err(cancel) = session.cancel().await {
                    tracing::debug!(digest = %info.digest, error = %cancel, "cancelling the failed upload session failed");
                }
                return Err(e);
            }
            self.learnt(options.cache.as_ref(), &info.digest).await;
            Ok(info.clone())
        })
    }

    fn put_manifest<'a>(
        &'a self,
        manifest: Bytes,
        media_type: &'a str,
        instance: Option<&'a Digest>,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let target = match instance {
                Some(d) => d.to_string(),
                None => match self.reference.tag() {
                    Some(tag) => tag.to_owned(),
                    None => self.reference.manifest_reference().to_owned(),
                },
            };
            let stored = self
                .repo
                .put_manifest(&target, media_type, manifest)
                .await
                .map_err(|e| {
                    Error::registry(
                        format!("store manifest {target} in {}", self.reference.name()),
                        e,
                    )
                })?;
            let expected = instance.or(self.reference.digest());
            if let Some(expected) = expected
                && expected != &stored
            {
                return Err(Error::DigestMismatch {
                    what: format!("manifest written to {}", self.name()),
                    expected: expected.to_string(),
                    actual: stored.to_string(),
                });
            }
            Ok(())
        })
    }

    fn commit(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async { Ok(()) })
    }
}

/// Wraps `stream` so that it verifies the bytes as they pass. It holds one chunk back until it
/// has seen what follows, so that the last byte leaves only once the whole blob has been checked:
/// past the expected size, with the wrong digest at the end, or when the source fails, it yields
/// an error instead, and the upload breaks off before the registry has the complete blob. The
/// receiver gets the verdict (nothing if the stream was not read to the end).
fn verifying_stream(
    stream: ByteStream,
    verifier: Verifier,
) -> (ByteStream, tokio::sync::oneshot::Receiver<Result<()>>) {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let state = Lookahead {
        stream,
        verifier: Some(verifier),
        held: None,
        tx: Some(tx),
    };
    let checked = futures_util::stream::unfold(state, |mut s| async move {
        let verifier = s.verifier.as_mut()?;
        loop {
            match s.stream.next().await {
                Some(Ok(chunk)) if chunk.is_empty() => {}
                Some(Ok(chunk)) => {
                    if let Err(e) = verifier.update(&chunk) {
                        return Some((Err(s.fail(e)), s));
                    }
                    if let Some(previous) = s.held.replace(chunk) {
                        return Some((Ok(previous), s));
                    }
                }
                Some(Err(e)) => {
                    let digest = verifier.expected().to_string();
                    return Some((Err(s.fail(Error::Stream { digest, source: e })), s));
                }
                None => {
                    let verifier = s.verifier.take()?;
                    if let Err(e) = verifier.finish() {
                        return Some((Err(s.fail(e)), s));
                    }
                    if let Some(tx) = s.tx.take() {
                        let _ = tx.send(Ok(()));
                    }
                    // The last chunk goes out now; the next poll ends the stream.
                    return s.held.take().map(|last| (Ok(last), s));
                }
            }
        }
    });
    (Box::pin(checked), rx)
}

struct Lookahead {
    stream: ByteStream,
    verifier: Option<Verifier>,
    held: Option<Bytes>,
    tx: Option<tokio::sync::oneshot::Sender<Result<()>>>,
}

impl Lookahead {
    /// Records the verdict and gives the HTTP body an error to break off with.
    fn fail(&mut self, err: Error) -> io::Error {
        let yielded = io::Error::new(io::ErrorKind::InvalidData, err.to_string());
        self.verifier = None;
        self.held = None;
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(Err(err));
        }
        yielded
    }
}

/// Records in the blob info cache that `digest` is at `location`.
pub(crate) async fn record_location(
    cache: &hoist_store::Store,
    digest: &Digest,
    location: &RegistryLocation,
) {
    let cache = cache.clone();
    let digest = digest.clone();
    let location = location.clone();
    let result = blocking("record a blob location", move || {
        cache
            .metadata()
            .record_location(
                &digest,
                &location.registry,
                &location.repository,
                SystemTime::now(),
            )
            .map_err(|e| Error::store("record a blob location", e))
    })
    .await;
    if let Err(e) = result {
        tracing::debug!(error = %e, "could not record a blob location in the cache");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(parts: &[&'static [u8]]) -> ByteStream {
        Box::pin(futures_util::stream::iter(
            parts
                .iter()
                .map(|p| Ok(Bytes::from_static(p)))
                .collect::<Vec<_>>(),
        ))
    }

    async fn run(parts: &[&'static [u8]], expected: &[u8]) -> (Vec<io::Result<Bytes>>, Result<()>) {
        let digest = hoist_registry::digest::sha256_of(expected);
        let verifier = Verifier::new("blob", &digest, expected.len() as u64).unwrap();
        let (stream, verdict) = verifying_stream(chunks(parts), verifier);
        let items: Vec<_> = stream.collect().await;
        (items, verdict.await.unwrap())
    }

    #[tokio::test]
    async fn the_right_bytes_pass_through_whole() {
        let (items, verdict) = run(&[b"ab", b"", b"cd", b"e"], b"abcde").await;
        verdict.unwrap();
        let got: Vec<u8> = items
            .into_iter()
            .flat_map(|i| i.unwrap().to_vec())
            .collect();
        assert_eq!(got, b"abcde");
    }

    #[tokio::test]
    async fn the_last_chunk_of_wrong_bytes_never_leaves() {
        let (items, verdict) = run(&[b"ab", b"cd", b"eX"], b"abcdef").await;
        assert!(matches!(verdict, Err(Error::DigestMismatch { .. })));
        let delivered: Vec<u8> = items
            .iter()
            .filter_map(|i| i.as_ref().ok())
            .flat_map(|b| b.to_vec())
            .collect();
        assert_eq!(delivered, b"abcd", "the final chunk was held back");
        assert!(
            items.last().unwrap().is_err(),
            "the stream ends in an error"
        );
    }

    #[tokio::test]
    async fn too_many_bytes_fail_before_the_excess_leaves() {
        let (items, verdict) = run(&[b"abc", b"def"], b"abcd").await;
        assert!(matches!(verdict, Err(Error::SizeMismatch { .. })));
        assert!(items.iter().all(|i| i.is_err()), "nothing was delivered");
    }
}
