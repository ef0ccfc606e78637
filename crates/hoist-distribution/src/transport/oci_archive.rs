//! `oci-archive:FILE[:NAME]`: a tar of an OCI image layout.
//!
//! Reading unpacks the archive into a temporary directory (blobs are read in any order and
//! concurrently, which a tar stream cannot serve) and reads the layout there; members that would
//! escape it are refused. Writing builds the layout in a temporary directory and, at commit,
//! tars it into a temporary file beside `FILE` that is fsynced and renamed over it: the archive
//! appears whole or not at all. Temporary directories live under `$TMPDIR` and are removed when
//! the source or destination is dropped.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use oci_spec::image::Digest;
use tempfile::TempDir;

use super::error::{Error, Result};
use super::oci::{OciDirDestination, OciDirSource};
use super::stream::blocking;
use super::tarball;
use super::{
    BlobChunk, BlobInfo, BoxFuture, ByteStream, ChunkStream, ImageDestination, ImageSource,
    PutOptions, ReuseOptions, Transport,
};

fn staging_dir() -> Result<TempDir> {
    tempfile::Builder::new()
        .prefix("hoist-oci-archive-")
        .tempdir()
        .map_err(|e| Error::io("create a temporary directory in", std::env::temp_dir(), e))
}

/// Reads an image from an OCI layout archive.
#[derive(Debug)]
pub struct OciArchiveSource {
    layout: OciDirSource,
    // Kept for its drop, which removes the unpacked layout.
    _staging: TempDir,
}

impl OciArchiveSource {
    /// Unpacks the archive at `path` and opens image `name` in it (or its only image).
    pub async fn open(path: &Path, name: Option<&str>) -> Result<OciArchiveSource> {
        let staging = staging_dir()?;
        let root = staging.path().to_owned();
        let archive = path.to_owned();
        let name = name.map(str::to_owned);
        let layout = blocking("unpack archive", move || {
            if !archive.is_file() {
                return Err(Error::ImageNotFound {
                    location: format!("oci-archive:{}", archive.display()),
                    names: Vec::new(),
                });
            }
            let location = format!("oci-archive:{}", archive.display());
            tarball::unpack(&archive, &root, &location)?;
            OciDirSource::open_as(Transport::OciArchive, &root, &archive, name.as_deref())
        })
        .await?;
        Ok(OciArchiveSource {
            layout,
            _staging: staging,
        })
    }
}

impl ImageSource for OciArchiveSource {
    fn name(&self) -> String {
        self.layout.name()
    }

    fn transport(&self) -> Transport {
        Transport::OciArchive
    }

    fn get_manifest<'a>(
        &'a self,
        instance: Option<&'a Digest>,
    ) -> BoxFuture<'a, Result<(Bytes, String)>> {
        self.layout.get_manifest(instance)
    }

    fn get_blob<'a>(&'a self, info: &'a BlobInfo) -> BoxFuture<'a, Result<(ByteStream, u64)>> {
        self.layout.get_blob(info)
    }

    fn supports_get_blob_at(&self) -> bool {
        true
    }

    fn get_blob_at<'a>(
        &'a self,
        info: &'a BlobInfo,
        chunks: &'a [BlobChunk],
    ) -> BoxFuture<'a, Result<ChunkStream>> {
        self.layout.get_blob_at(info, chunks)
    }
}

/// Writes an image into an OCI layout archive.
#[derive(Debug)]
pub struct OciArchiveDestination {
    layout: OciDirDestination,
    path: PathBuf,
    staging: TempDir,
}

impl OciArchiveDestination {
    /// Prepares to write image `name` into a new archive at `path` (replaced at commit).
    pub fn create(path: &Path, name: Option<&str>) -> Result<OciArchiveDestination> {
        let staging = staging_dir()?;
        let layout =
            OciDirDestination::create_as(Transport::OciArchive, staging.path(), path, name)?;
        Ok(OciArchiveDestination {
            layout,
            path: path.to_owned(),
            staging,
        })
    }
}

impl ImageDestination for OciArchiveDestination {
    fn name(&self) -> String {
        self.layout.name()
    }

    fn transport(&self) -> Transport {
        Transport::OciArchive
    }

    fn supported_manifest_types(&self) -> &'static [&'static str] {
        self.layout.supported_manifest_types()
    }

    fn try_reusing_blob<'a>(
        &'a self,
        info: &'a BlobInfo,
        options: &'a ReuseOptions,
    ) -> BoxFuture<'a, Result<Option<BlobInfo>>> {
        self.layout.try_reusing_blob(info, options)
    }

    fn put_blob<'a>(
        &'a self,
        stream: ByteStream,
        info: &'a BlobInfo,
        options: &'a PutOptions,
    ) -> BoxFuture<'a, Result<BlobInfo>> {
        self.layout.put_blob(stream, info, options)
    }

    fn put_manifest<'a>(
        &'a self,
        manifest: Bytes,
        media_type: &'a str,
        instance: Option<&'a Digest>,
    ) -> BoxFuture<'a, Result<()>> {
        self.layout.put_manifest(manifest, media_type, instance)
    }

    fn commit(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            self.layout.commit().await?;
            let root = self.staging.path().to_owned();
            let target = self.path.clone();
            blocking("write archive", move || tarball::pack(&root, &target)).await
        })
    }
}
