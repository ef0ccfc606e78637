//! `oci:DIR[:NAME]`: an OCI image layout directory.
//!
//! Reads any layout (hoist's store, skopeo's, umoci's): the image is the `index.json` entry
//! named `NAME`, or the only entry. Writes a valid layout (creating the directory if needed,
//! keeping the images already there): blobs are verified while they stream and renamed into
//! `blobs/` only when right; the top manifest is named in `index.json`, replaced atomically at
//! commit. Manifests of any of the four media types are stored as they are (a Docker schema 2
//! manifest keeps its type and digest).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use bytes::Bytes;
use oci_spec::image::Digest;

use super::error::{Error, Result};
use super::layout::{LayoutReader, LayoutWriter};
use super::manifest::{
    DOCKER_LIST, DOCKER_MANIFEST, Descriptor, MANIFEST_LIMIT, OCI_INDEX, OCI_MANIFEST,
    media_type_of,
};
use super::stream::{blocking, check_chunks, file_chunk_stream, file_section_stream, pump};
use super::{
    BlobChunk, BlobInfo, BoxFuture, ByteStream, ChunkStream, ImageDestination, ImageSource,
    PutOptions, ReuseOptions, Transport,
};

/// Every manifest type: layouts store whatever they are given.
pub(crate) const ALL_MANIFEST_TYPES: &[&str] =
    &[OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST];

fn display_name(transport: Transport, path: &Path, name: Option<&str>) -> String {
    match name {
        Some(n) => format!("{transport}:{}:{n}", path.display()),
        None => format!("{transport}:{}", path.display()),
    }
}

/// Reads an image from an OCI layout directory.
#[derive(Debug)]
pub struct OciDirSource {
    layout: LayoutReader,
    top: Descriptor,
    name: String,
    transport: Transport,
}

impl OciDirSource {
    /// Opens image `name` (the `org.opencontainers.image.ref.name` annotation) of the layout at
    /// `path`, or its only image when `name` is `None`.
    pub fn open(path: &Path, name: Option<&str>) -> Result<OciDirSource> {
        Self::open_as(Transport::Oci, path, path, name)
    }

    /// Opens the layout at `root`, reporting it as `transport:shown_path` in messages.
    pub(crate) fn open_as(
        transport: Transport,
        root: &Path,
        shown_path: &Path,
        name: Option<&str>,
    ) -> Result<OciDirSource> {
        let location = display_name(transport, shown_path, None);
        let layout = LayoutReader::open(root, &location)?;
        let top = layout.select(name)?;
        Ok(OciDirSource {
            layout,
            top,
            name: display_name(transport, shown_path, name),
            transport,
        })
    }

    async fn manifest(&self, digest: &Digest) -> Result<Bytes> {
        self.layout
            .read_small("manifest", digest, MANIFEST_LIMIT)
            .await?
            .ok_or_else(|| Error::ManifestNotFound {
                location: self.name.clone(),
                digest: digest.to_string(),
            })
    }

    fn existing_blob(&self, info: &BlobInfo) -> Result<(PathBuf, u64)> {
        let path = self.layout.blob_path(&info.digest)?;
        match std::fs::metadata(&path) {
            Ok(m) if m.is_file() => Ok((path, m.len())),
            Ok(_) => Err(self.blob_not_found(info)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(self.blob_not_found(info)),
            Err(e) => Err(Error::io("stat", path, e)),
        }
    }

    fn blob_not_found(&self, info: &BlobInfo) -> Error {
        Error::BlobNotFound {
            location: self.name.clone(),
            digest: info.digest.to_string(),
        }
    }
}

impl ImageSource for OciDirSource {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn transport(&self) -> Transport {
        self.transport
    }

    fn get_manifest<'a>(
        &'a self,
        instance: Option<&'a Digest>,
    ) -> BoxFuture<'a, Result<(Bytes, String)>> {
        Box::pin(async move {
            match instance {
                None => {
                    let bytes = self.manifest(&self.top.digest).await?;
                    let media_type = if self.top.media_type.is_empty() {
                        media_type_of(&bytes).unwrap_or_default()
                    } else {
                        self.top.media_type.clone()
                    };
                    Ok((bytes, media_type))
                }
                Some(digest) => {
                    let bytes = self.manifest(digest).await?;
                    let media_type = media_type_of(&bytes).ok_or_else(|| {
                        Error::malformed(
                            "manifest",
                            &self.name,
                            format!("{digest} declares no media type and has no known shape"),
                        )
                    })?;
                    Ok((bytes, media_type))
                }
            }
        })
    }

    fn get_blob<'a>(&'a self, info: &'a BlobInfo) -> BoxFuture<'a, Result<(ByteStream, u64)>> {
        Box::pin(async move {
            let (path, size) = self.existing_blob(info)?;
            Ok((file_section_stream(&path, 0, size).await?, size))
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
            let (path, size) = self.existing_blob(info)?;
            check_chunks(chunks, Some(size))
                .map_err(|reason| Error::malformed("chunk list", &self.name, reason))?;
            let file = File::open(&path).map_err(|e| Error::io("open", &path, e))?;
            Ok(file_chunk_stream(file, path, chunks.to_vec()))
        })
    }
}

/// Writes an image into an OCI layout directory.
#[derive(Debug)]
pub struct OciDirDestination {
    layout: LayoutWriter,
    image_name: Option<String>,
    name: String,
    transport: Transport,
    top: Mutex<Option<Descriptor>>,
}

impl OciDirDestination {
    /// Opens (creating if needed) the layout at `path`; the image will be named `name` in its
    /// `index.json` (an existing image of that name is replaced at commit).
    pub fn create(path: &Path, name: Option<&str>) -> Result<OciDirDestination> {
        Self::create_as(Transport::Oci, path, path, name)
    }

    pub(crate) fn create_as(
        transport: Transport,
        root: &Path,
        shown_path: &Path,
        name: Option<&str>,
    ) -> Result<OciDirDestination> {
        let location = display_name(transport, shown_path, name);
        Ok(OciDirDestination {
            layout: LayoutWriter::create(root, &location)?,
            image_name: name.map(str::to_owned),
            name: location,
            transport,
            top: Mutex::new(None),
        })
    }

    fn top(&self) -> std::sync::MutexGuard<'_, Option<Descriptor>> {
        self.top.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl ImageDestination for OciDirDestination {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn transport(&self) -> Transport {
        self.transport
    }

    fn supported_manifest_types(&self) -> &'static [&'static str] {
        ALL_MANIFEST_TYPES
    }

    fn try_reusing_blob<'a>(
        &'a self,
        info: &'a BlobInfo,
        _options: &'a ReuseOptions,
    ) -> BoxFuture<'a, Result<Option<BlobInfo>>> {
        Box::pin(async move {
            Ok(self
                .layout
                .has_blob(&info.digest, info.size)?
                .then(|| info.clone()))
        })
    }

    fn put_blob<'a>(
        &'a self,
        stream: ByteStream,
        info: &'a BlobInfo,
        _options: &'a PutOptions,
    ) -> BoxFuture<'a, Result<BlobInfo>> {
        Box::pin(async move {
            let sink = self.layout.blob_sink(info)?;
            pump(stream, sink, &info.digest).await?;
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
            let digest: Digest = match instance {
                Some(d) => d.clone(),
                None => hoist_registry::digest::sha256_of(&manifest),
            };
            let layout = self.layout.clone();
            let bytes = manifest.clone();
            let d = digest.clone();
            blocking("write manifest", move || layout.put_small(&d, &bytes)).await?;
            if instance.is_none() {
                *self.top() = Some(Descriptor {
                    media_type: media_type.to_owned(),
                    digest,
                    size: manifest.len() as u64,
                    urls: Vec::new(),
                    platform: None,
                    annotations: Default::default(),
                });
            }
            Ok(())
        })
    }

    fn commit(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            let top = self.top().clone().ok_or_else(|| Error::Incomplete {
                location: self.name.clone(),
                reason: "commit without a top manifest".into(),
            })?;
            let layout = self.layout.clone();
            let name = self.image_name.clone();
            blocking("update index.json", move || {
                layout.add_to_index(&top, name.as_deref())
            })
            .await
        })
    }
}
