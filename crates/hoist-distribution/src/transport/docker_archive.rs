//! `docker-archive:FILE[:REF]`: the format of `docker save` and `docker load`.
//!
//! The archive holds `manifest.json` (a list of images, each with `Config`, `RepoTags` and
//! `Layers`, paths of members), the image configs, and the layers as tar files, uncompressed in
//! the format Docker writes.
//!
//! Reading indexes the archive's members once and serves each blob straight from the file (a
//! compressed archive, `docker save | gzip`, is first decompressed to a temporary file). The image
//! is presented as a Docker schema 2 manifest: config and layers with their digests, layers with
//! the uncompressed-tar media type (their digests are the config's DiffIDs; a layer stored
//! compressed is hashed and typed as such). The manifest is serialised with the fields in the
//! order other tools use, so it is stable for a given archive. (skopeo 1.9 labels uncompressed
//! archive layers `tar.gzip`, so its manifest for the same archive differs in that type only.)
//!
//! Writing stages files in a temporary directory: configs as `<hex>.json`, layers decompressed
//! (gzip or zstd, detected by magic number) as `<diffid hex>.tar` while the compressed stream is
//! verified against its digest. The manifest given must be a single image whose config's DiffIDs
//! match the layers written; commit writes `manifest.json` and tars everything into a temporary
//! file that replaces `FILE` atomically. Indexes cannot be stored: the format has no place for
//! them.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use bytes::Bytes;
use hoist_registry::ImageRef;
use hoist_registry::digest::Hasher;
use oci_spec::image::Digest;
use serde::{Deserialize, Serialize};
use tempfile::{NamedTempFile, TempDir};

use super::error::{Error, Result};
use super::layout::{FileBlobSink, fsync_dir};
use super::manifest::{
    CONFIG_LIMIT, Compression, DOCKER_CONFIG, DOCKER_LAYER, DOCKER_LAYER_GZIP, DOCKER_MANIFEST,
    ImageManifest, MANIFEST_LIMIT, OCI_LAYER_ZSTD, OCI_MANIFEST, is_image_config,
    is_layer_media_type,
};
use super::name::ArchiveImage;
use super::stream::{
    BlobSink, Verifier, blocking, check_chunks, file_chunk_stream, file_section_stream, pump,
};
use super::tarball::{self, TarIndex, TarMember};
use super::{
    BlobChunk, BlobInfo, BoxFuture, ByteStream, ChunkStream, ImageDestination, ImageSource,
    PutOptions, ReuseOptions, Transport,
};

const MANIFEST_JSON: &str = "manifest.json";

/// One image of `manifest.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ArchiveItem {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers", default)]
    layers: Vec<String>,
}

/// A schema 2 manifest in the field order other tools serialise it in.
#[derive(Serialize)]
struct Schema2<'a> {
    #[serde(rename = "schemaVersion")]
    schema_version: u32,
    #[serde(rename = "mediaType")]
    media_type: &'a str,
    config: Schema2Descriptor<'a>,
    layers: Vec<Schema2Descriptor<'a>>,
}

#[derive(Serialize)]
struct Schema2Descriptor<'a> {
    #[serde(rename = "mediaType")]
    media_type: &'a str,
    size: u64,
    digest: &'a Digest,
}

#[derive(Deserialize)]
struct ConfigRootFs {
    #[serde(default)]
    rootfs: Option<RootFs>,
}

#[derive(Deserialize)]
struct RootFs {
    #[serde(default)]
    diff_ids: Vec<Digest>,
}

/// The DiffIDs an image config lists.
fn diff_ids(config: &[u8], location: &str) -> Result<Vec<Digest>> {
    let parsed: ConfigRootFs = serde_json::from_slice(config)
        .map_err(|e| Error::malformed("image config", location, e))?;
    Ok(parsed.rootfs.map(|r| r.diff_ids).unwrap_or_default())
}

fn read_member(file: &File, path: &Path, member: &TarMember, limit: u64) -> Result<Vec<u8>> {
    if member.size > limit {
        return Err(Error::TooLarge {
            what: "archive member",
            digest: String::new(),
            location: path.display().to_string(),
            limit,
        });
    }
    let mut buf = vec![0; usize::try_from(member.size).unwrap_or(0)];
    file.read_exact_at(&mut buf, member.offset)
        .map_err(|e| Error::io("read", path, e))?;
    Ok(buf)
}

/// Reads an image from a docker archive.
#[derive(Debug)]
pub struct DockerArchiveSource {
    name: String,
    file: PathBuf,
    manifest: Bytes,
    manifest_digest: Digest,
    blobs: HashMap<Digest, TarMember>,
    // Kept for its drop, which removes the decompressed copy of a compressed archive.
    _decompressed: Option<NamedTempFile>,
}

impl DockerArchiveSource {
    /// Opens the archive at `path` and the image `image` in it (or its only image).
    pub async fn open(path: &Path, image: Option<ArchiveImage>) -> Result<DockerArchiveSource> {
        let path = path.to_owned();
        blocking("read archive", move || Self::open_blocking(&path, image)).await
    }

    fn open_blocking(path: &Path, image: Option<ArchiveImage>) -> Result<DockerArchiveSource> {
        let name = match &image {
            Some(i) => format!("docker-archive:{}:{i}", path.display()),
            None => format!("docker-archive:{}", path.display()),
        };
        let location = format!("docker-archive:{}", path.display());
        let (file_path, decompressed) = decompressed_archive(path, &location)?;
        let index = TarIndex::build(&file_path, &location)?;
        let file = File::open(&file_path).map_err(|e| Error::io("open", &file_path, e))?;
        let member = |member_path: &str| {
            index.resolve(member_path).ok_or_else(|| {
                Error::malformed(
                    "archive",
                    &location,
                    format!("manifest.json names {member_path:?}, which the archive does not hold"),
                )
            })
        };
        let Some(manifest_member) = index.resolve(MANIFEST_JSON) else {
            return Err(Error::malformed(
                "archive",
                &location,
                "no manifest.json: not a docker-archive (for an OCI layout archive use oci-archive:)",
            ));
        };
        let items: Vec<ArchiveItem> = serde_json::from_slice(&read_member(
            &file,
            &file_path,
            &manifest_member,
            MANIFEST_LIMIT,
        )?)
        .map_err(|e| Error::malformed("manifest.json", &location, e))?;
        let item = select(&items, image.as_ref(), &location)?;

        let config_member = member(&item.config)?;
        let config = read_member(&file, &file_path, &config_member, CONFIG_LIMIT)?;
        let config_digest = hoist_registry::digest::sha256_of(&config);
        let diff_ids = diff_ids(&config, &location)?;

        let mut blobs = HashMap::new();
        blobs.insert(config_digest.clone(), config_member);
        let mut layers = Vec::new();
        for (i, layer_path) in item.layers.iter().enumerate() {
            let m = member(layer_path)?;
            let mut head = [0u8; 4];
            let n = usize::try_from(m.size.min(4)).unwrap_or(0);
            file.read_exact_at(&mut head[..n], m.offset)
                .map_err(|e| Error::io("read", &file_path, e))?;
            let (digest, media_type) = match Compression::detect(&head[..n]) {
                Compression::None => {
                    let digest = diff_ids.get(i).cloned().ok_or_else(|| {
                        Error::malformed(
                            "image config",
                            &location,
                            format!(
                                "the config lists {} DiffIDs for {} layers",
                                diff_ids.len(),
                                item.layers.len()
                            ),
                        )
                    })?;
                    (digest, DOCKER_LAYER)
                }
                Compression::Gzip => (hash_member(&file, &file_path, &m)?, DOCKER_LAYER_GZIP),
                Compression::Zstd => (hash_member(&file, &file_path, &m)?, OCI_LAYER_ZSTD),
            };
            layers.push((digest.clone(), media_type, m.size));
            blobs.insert(digest, m);
        }
        let manifest = Schema2 {
            schema_version: 2,
            media_type: DOCKER_MANIFEST,
            config: Schema2Descriptor {
                media_type: DOCKER_CONFIG,
                size: config.len() as u64,
                digest: &config_digest,
            },
            layers: layers
                .iter()
                .map(|(digest, media_type, size)| Schema2Descriptor {
                    media_type,
                    size: *size,
                    digest,
                })
                .collect(),
        };
        let manifest = serde_json::to_vec(&manifest)
            .map_err(|e| Error::malformed("manifest", &location, e))?;
        Ok(DockerArchiveSource {
            name,
            file: file_path,
            manifest_digest: hoist_registry::digest::sha256_of(&manifest),
            manifest: Bytes::from(manifest),
            blobs,
            _decompressed: decompressed,
        })
    }

    fn member(&self, info: &BlobInfo) -> Result<&TarMember> {
        self.blobs
            .get(&info.digest)
            .ok_or_else(|| Error::BlobNotFound {
                location: self.name.clone(),
                digest: info.digest.to_string(),
            })
    }
}

/// The item `image` designates, or the only one.
fn select<'a>(
    items: &'a [ArchiveItem],
    image: Option<&ArchiveImage>,
    location: &str,
) -> Result<&'a ArchiveItem> {
    let names = || -> Vec<String> {
        items
            .iter()
            .enumerate()
            .flat_map(|(i, item)| match &item.repo_tags {
                Some(tags) if !tags.is_empty() => tags.clone(),
                _ => vec![format!("@{i}")],
            })
            .collect()
    };
    match image {
        None => match items {
            [only] => Ok(only),
            [] => Err(Error::ImageNotFound {
                location: location.to_owned(),
                names: Vec::new(),
            }),
            _ => Err(Error::AmbiguousImage {
                location: location.to_owned(),
                count: items.len(),
                names: names(),
            }),
        },
        Some(ArchiveImage::Index(i)) => items.get(*i).ok_or_else(|| Error::ImageNotFound {
            location: format!("{location}:@{i}"),
            names: names(),
        }),
        Some(ArchiveImage::Named(wanted)) => items
            .iter()
            .find(|item| {
                item.repo_tags
                    .iter()
                    .flatten()
                    .any(|tag| ImageRef::parse(tag).is_ok_and(|parsed| &parsed == wanted))
            })
            .ok_or_else(|| Error::ImageNotFound {
                location: format!("{location}:{wanted}"),
                names: names(),
            }),
    }
}

/// The archive itself, or a decompressed copy when it is gzip or zstd compressed.
fn decompressed_archive(path: &Path, location: &str) -> Result<(PathBuf, Option<NamedTempFile>)> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(Error::ImageNotFound {
                location: location.to_owned(),
                names: Vec::new(),
            });
        }
        Err(e) => return Err(Error::io("open", path, e)),
    };
    let mut head = [0u8; 4];
    let n = file
        .read_at(&mut head, 0)
        .map_err(|e| Error::io("read", path, e))?;
    let compression = Compression::detect(&head[..n]);
    if compression == Compression::None {
        return Ok((path.to_owned(), None));
    }
    let mut tmp = tempfile::Builder::new()
        .prefix("hoist-docker-archive-")
        .tempfile()
        .map_err(|e| Error::io("create a temporary file in", std::env::temp_dir(), e))?;
    let reader = io::BufReader::new(file);
    let copied = match compression {
        Compression::Gzip => io::copy(&mut flate2::read::MultiGzDecoder::new(reader), &mut tmp),
        _ => zstd::stream::read::Decoder::with_buffer(reader)
            .and_then(|mut d| io::copy(&mut d, &mut tmp)),
    };
    copied.map_err(|e| Error::io("decompress", path, e))?;
    Ok((tmp.path().to_owned(), Some(tmp)))
}

fn hash_member(file: &File, path: &Path, member: &TarMember) -> Result<Digest> {
    let mut hasher = Hasher::sha256();
    let mut buf = vec![0u8; 256 << 10];
    let mut done = 0u64;
    while done < member.size {
        let want = usize::try_from((member.size - done).min(buf.len() as u64)).unwrap_or(0);
        let n = file
            .read_at(&mut buf[..want], member.offset + done)
            .map_err(|e| Error::io("read", path, e))?;
        if n == 0 {
            return Err(Error::io(
                "read",
                path,
                io::Error::new(io::ErrorKind::UnexpectedEof, "archive member is truncated"),
            ));
        }
        hasher.update(&buf[..n]);
        done += n as u64;
    }
    hasher
        .finish()
        .parse()
        .map_err(|_| Error::UnsupportedDigest {
            digest: "sha256".into(),
        })
}

impl ImageSource for DockerArchiveSource {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn transport(&self) -> Transport {
        Transport::DockerArchive
    }

    fn get_manifest<'a>(
        &'a self,
        instance: Option<&'a Digest>,
    ) -> BoxFuture<'a, Result<(Bytes, String)>> {
        Box::pin(async move {
            match instance {
                Some(d) if d != &self.manifest_digest => Err(Error::ManifestNotFound {
                    location: self.name.clone(),
                    digest: d.to_string(),
                }),
                _ => Ok((self.manifest.clone(), DOCKER_MANIFEST.to_owned())),
            }
        })
    }

    fn get_blob<'a>(&'a self, info: &'a BlobInfo) -> BoxFuture<'a, Result<(ByteStream, u64)>> {
        Box::pin(async move {
            let m = self.member(info)?;
            Ok((
                file_section_stream(&self.file, m.offset, m.size).await?,
                m.size,
            ))
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
            let m = self.member(info)?;
            check_chunks(chunks, Some(m.size))
                .map_err(|reason| Error::malformed("chunk list", &self.name, reason))?;
            let shifted = chunks
                .iter()
                .map(|c| BlobChunk::new(c.offset + m.offset, c.length))
                .collect();
            let file = File::open(&self.file).map_err(|e| Error::io("open", &self.file, e))?;
            Ok(file_chunk_stream(file, self.file.clone(), shifted))
        })
    }
}

/// A blob staged for the archive.
#[derive(Debug, Clone)]
struct Staged {
    /// Its member name.
    file: String,
    /// The blob as stored (layers: uncompressed).
    stored: BlobInfo,
}

#[derive(Debug, Default)]
struct DestinationState {
    staged: HashMap<Digest, Staged>,
    image: Option<ArchiveItem>,
}

/// Writes an image into a docker archive.
#[derive(Debug)]
pub struct DockerArchiveDestination {
    path: PathBuf,
    reference: Option<ImageRef>,
    name: String,
    staging: TempDir,
    state: Mutex<DestinationState>,
}

const ARCHIVE_MANIFEST_TYPES: &[&str] = &[DOCKER_MANIFEST, OCI_MANIFEST];

impl DockerArchiveDestination {
    /// Prepares to write an image tagged `reference` (or untagged) into a new archive at `path`
    /// (replaced at commit).
    pub fn create(path: &Path, reference: Option<ImageRef>) -> Result<DockerArchiveDestination> {
        if reference.as_ref().is_some_and(|r| r.digest().is_some()) {
            return Err(Error::Name(super::NameError::DigestInArchiveReference {
                reference: reference.map(|r| r.to_string()).unwrap_or_default(),
            }));
        }
        let staging = tempfile::Builder::new()
            .prefix("hoist-docker-archive-")
            .tempdir()
            .map_err(|e| Error::io("create a temporary directory in", std::env::temp_dir(), e))?;
        let name = match &reference {
            Some(r) => format!("docker-archive:{}:{r}", path.display()),
            None => format!("docker-archive:{}", path.display()),
        };
        Ok(DockerArchiveDestination {
            path: path.to_owned(),
            reference,
            name,
            staging,
            state: Mutex::new(DestinationState::default()),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, DestinationState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn unsupported_manifest(&self, media_type: &str) -> Error {
        Error::UnsupportedManifest {
            destination: self.name.clone(),
            media_type: media_type.to_owned(),
            hint: Some("a docker archive holds single-platform images: copy one platform"),
        }
    }

    /// Checks the manifest against what was staged and returns the archive's entry for it.
    fn archive_item(&self, manifest: &ImageManifest) -> Result<ArchiveItem> {
        let state = self.state();
        let staged = |d: &Digest, what: &str| {
            state
                .staged
                .get(d)
                .cloned()
                .ok_or_else(|| Error::Incomplete {
                    location: self.name.clone(),
                    reason: format!("the manifest names {what} {d}, which was not written"),
                })
        };
        let config = staged(&manifest.config.digest, "config")?;
        let mut layers = Vec::new();
        for layer in &manifest.layers {
            layers.push(staged(&layer.digest, "layer")?);
        }
        drop(state);
        let config_path = self.staging.path().join(&config.file);
        let config_bytes = super::layout::read_file_capped(&config_path, CONFIG_LIMIT)?;
        let expected = diff_ids(&config_bytes, &self.name)?;
        let actual: Vec<&Digest> = layers.iter().map(|l| &l.stored.digest).collect();
        if expected.iter().collect::<Vec<_>>() != actual {
            return Err(Error::DigestMismatch {
                what: format!("the layers of the image written to {}", self.name),
                expected: format!("DiffIDs {expected:?} from the config"),
                actual: format!("{actual:?}"),
            });
        }
        Ok(ArchiveItem {
            config: config.file,
            repo_tags: Some(self.reference.iter().map(ImageRef::familiar).collect()),
            layers: layers.into_iter().map(|l| l.file).collect(),
        })
    }
}

impl ImageDestination for DockerArchiveDestination {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn transport(&self) -> Transport {
        Transport::DockerArchive
    }

    fn supported_manifest_types(&self) -> &'static [&'static str] {
        ARCHIVE_MANIFEST_TYPES
    }

    fn try_reusing_blob<'a>(
        &'a self,
        info: &'a BlobInfo,
        _options: &'a ReuseOptions,
    ) -> BoxFuture<'a, Result<Option<BlobInfo>>> {
        Box::pin(async move {
            Ok(self
                .state()
                .staged
                .get(&info.digest)
                .map(|s| s.stored.clone()))
        })
    }

    fn put_blob<'a>(
        &'a self,
        stream: ByteStream,
        info: &'a BlobInfo,
        options: &'a PutOptions,
    ) -> BoxFuture<'a, Result<BlobInfo>> {
        Box::pin(async move {
            let verifier = Verifier::new(
                format!("blob {} written to {}", info.digest, self.name),
                &info.digest,
                info.size,
            )?;
            let staged = if options.is_config || is_image_config(&info.media_type) {
                let file = format!("{}.json", info.digest.digest());
                let sink = FileBlobSink::new(
                    self.staging.path(),
                    self.staging.path().join(&file),
                    verifier,
                )?;
                pump(stream, sink, &info.digest).await?;
                Staged {
                    file,
                    stored: info.clone(),
                }
            } else if info.media_type.is_empty() || is_layer_media_type(&info.media_type) {
                let sink = LayerSink::new(self.staging.path(), verifier)?;
                pump(stream, sink, &info.digest).await?
            } else {
                return Err(Error::UnsupportedBlob {
                    destination: self.name.clone(),
                    digest: info.digest.to_string(),
                    media_type: info.media_type.clone(),
                    reason: "a docker archive holds image configs and layers only".into(),
                });
            };
            let stored = staged.stored.clone();
            self.state().staged.insert(info.digest.clone(), staged);
            Ok(stored)
        })
    }

    fn put_manifest<'a>(
        &'a self,
        manifest: Bytes,
        media_type: &'a str,
        instance: Option<&'a Digest>,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            if instance.is_some() || !self.supports_manifest_type(media_type) {
                return Err(self.unsupported_manifest(media_type));
            }
            let parsed = ImageManifest::parse(&manifest)
                .map_err(|reason| Error::malformed("manifest", &self.name, reason))?;
            if !is_image_config(&parsed.config.media_type) {
                return Err(Error::UnsupportedBlob {
                    destination: self.name.clone(),
                    digest: parsed.config.digest.to_string(),
                    media_type: parsed.config.media_type.clone(),
                    reason: "a docker archive holds container images, not other artifacts".into(),
                });
            }
            let item = self.archive_item(&parsed)?;
            self.state().image = Some(item);
            Ok(())
        })
    }

    fn commit(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            let item = self
                .state()
                .image
                .clone()
                .ok_or_else(|| Error::Incomplete {
                    location: self.name.clone(),
                    reason: "commit without a manifest".into(),
                })?;
            let root = self.staging.path().to_owned();
            let target = self.path.clone();
            let location = self.name.clone();
            blocking("write archive", move || {
                let bytes = serde_json::to_vec(&[item])
                    .map_err(|e| Error::malformed("manifest.json", &location, e))?;
                super::layout::write_atomic(&root.join(MANIFEST_JSON), &bytes)?;
                tarball::pack(&root, &target)
            })
            .await
        })
    }
}

/// Writes the uncompressed bytes it is given into a file, hashing them.
struct HashingFile {
    out: BufWriter<NamedTempFile>,
    hasher: Hasher,
    size: u64,
}

impl Write for HashingFile {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = self.out.write(data)?;
        self.hasher.update(&data[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

enum Decode {
    /// The compression is not known yet: the first bytes wait here.
    Pending(Vec<u8>, HashingFile),
    Plain(HashingFile),
    Gzip(Box<flate2::write::MultiGzDecoder<HashingFile>>),
    Zstd(zstd::stream::write::Decoder<'static, HashingFile>),
}

/// Stages a layer: verifies the (possibly compressed) stream, writes it decompressed, and names
/// the file after the uncompressed digest.
struct LayerSink {
    verifier: Verifier,
    decode: Option<Decode>,
    dir: PathBuf,
}

impl LayerSink {
    fn new(dir: &Path, verifier: Verifier) -> Result<LayerSink> {
        let tmp = tempfile::Builder::new()
            .prefix(".hoist-layer-")
            .tempfile_in(dir)
            .map_err(|e| Error::io("create a temporary file in", dir, e))?;
        let out = HashingFile {
            out: BufWriter::with_capacity(256 << 10, tmp),
            hasher: Hasher::sha256(),
            size: 0,
        };
        Ok(LayerSink {
            verifier,
            decode: Some(Decode::Pending(Vec::new(), out)),
            dir: dir.to_owned(),
        })
    }

    fn decode_error(&self, e: io::Error) -> Error {
        Error::io("decompress layer into", self.dir.clone(), e)
    }

    /// Leaves the pending state once the compression is known (or the stream ended).
    fn start(head: Vec<u8>, out: HashingFile) -> io::Result<Decode> {
        let mut decode = match Compression::detect(&head) {
            Compression::None => Decode::Plain(out),
            Compression::Gzip => Decode::Gzip(Box::new(flate2::write::MultiGzDecoder::new(out))),
            Compression::Zstd => Decode::Zstd(zstd::stream::write::Decoder::new(out)?),
        };
        decode.feed(&head)?;
        Ok(decode)
    }
}

impl Decode {
    fn feed(&mut self, data: &[u8]) -> io::Result<()> {
        match self {
            Decode::Pending(..) => Ok(()),
            Decode::Plain(w) => w.write_all(data),
            Decode::Gzip(w) => w.write_all(data),
            Decode::Zstd(w) => w.write_all(data),
        }
    }

    fn into_file(self) -> io::Result<HashingFile> {
        match self {
            Decode::Pending(_, w) | Decode::Plain(w) => Ok(w),
            Decode::Gzip(w) => (*w).finish(),
            Decode::Zstd(mut w) => {
                w.flush()?;
                Ok(w.into_inner())
            }
        }
    }
}

impl BlobSink for LayerSink {
    type Output = Staged;

    fn write(&mut self, data: &[u8]) -> Result<()> {
        self.verifier.update(data)?;
        let decode = match self.decode.take() {
            Some(Decode::Pending(mut head, out)) => {
                head.extend_from_slice(data);
                if head.len() < 4 {
                    Ok(Decode::Pending(head, out))
                } else {
                    Self::start(head, out)
                }
            }
            Some(mut d) => d.feed(data).map(|()| d),
            None => return Err(self.decode_error(io::Error::other("layer writer already failed"))),
        };
        match decode {
            Ok(d) => {
                self.decode = Some(d);
                Ok(())
            }
            Err(e) => Err(self.decode_error(e)),
        }
    }

    fn finish(mut self) -> Result<Staged> {
        let decode = match self.decode.take() {
            Some(Decode::Pending(head, out)) => Self::start(head, out),
            Some(d) => Ok(d),
            None => Err(io::Error::other("layer writer already failed")),
        };
        let file = decode
            .and_then(Decode::into_file)
            .map_err(|e| self.decode_error(e))?;
        self.verifier.finish()?;
        let HashingFile { out, hasher, size } = file;
        let tmp = out
            .into_inner()
            .map_err(|e| Error::io("write", self.dir.clone(), e.into_error()))?;
        tmp.as_file()
            .sync_all()
            .map_err(|e| Error::io("fsync", tmp.path().to_owned(), e))?;
        let digest: Digest = hasher
            .finish()
            .parse()
            .map_err(|_| Error::UnsupportedDigest {
                digest: "sha256".into(),
            })?;
        let file = format!("{}.tar", digest.digest());
        let target = self.dir.join(&file);
        tmp.persist(&target)
            .map_err(|e| Error::io("rename into place", &target, e.error))?;
        fsync_dir(&self.dir)?;
        Ok(Staged {
            file,
            stored: BlobInfo::new(digest, size, DOCKER_LAYER),
        })
    }

    fn abort(self) {
        // Dropping the decoder drops the temporary file, which removes it.
        drop(self.decode);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sink_output(data: &[u8], compressed: &[u8]) -> (Staged, Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        let digest = hoist_registry::digest::sha256_of(compressed);
        let verifier = Verifier::new("layer", &digest, compressed.len() as u64).unwrap();
        let mut sink = LayerSink::new(dir.path(), verifier).unwrap();
        for piece in compressed.chunks(3) {
            sink.write(piece).unwrap();
        }
        let staged = sink.finish().unwrap();
        let bytes = std::fs::read(dir.path().join(&staged.file)).unwrap();
        assert_eq!(bytes, data);
        (staged, bytes)
    }

    #[test]
    fn layers_are_stored_uncompressed_under_their_diff_id() {
        let data = b"pretend this is a tar stream of a layer".repeat(50);
        let diff_id = hoist_registry::digest::sha256_of(&data);

        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&data).unwrap();
        let gz = gz.finish().unwrap();
        let (staged, _) = sink_output(&data, &gz);
        assert_eq!(staged.stored.digest, diff_id);
        assert_eq!(staged.stored.size, data.len() as u64);
        assert_eq!(staged.file, format!("{}.tar", diff_id.digest()));

        let zst = zstd::stream::encode_all(&data[..], 3).unwrap();
        assert_eq!(sink_output(&data, &zst).0.stored.digest, diff_id);
        assert_eq!(sink_output(&data, &data).0.stored.digest, diff_id);
        assert_eq!(
            sink_output(b"ab", b"ab").0.stored.size,
            2,
            "shorter than a magic number"
        );
    }

    #[test]
    fn a_layer_whose_compressed_digest_is_wrong_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let digest = hoist_registry::digest::sha256_of(b"other");
        let verifier = Verifier::new("layer", &digest, 5).unwrap();
        let mut sink = LayerSink::new(dir.path(), verifier).unwrap();
        sink.write(b"bytes").unwrap();
        assert!(matches!(sink.finish(), Err(Error::DigestMismatch { .. })));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn images_are_selected_by_tag_index_or_uniqueness() {
        let items = vec![
            ArchiveItem {
                config: "a.json".into(),
                repo_tags: Some(vec!["foo:1".into()]),
                layers: vec![],
            },
            ArchiveItem {
                config: "b.json".into(),
                repo_tags: None,
                layers: vec![],
            },
        ];
        let foo = ImageRef::parse("docker.io/library/foo:1").unwrap();
        assert_eq!(
            select(&items, Some(&ArchiveImage::Named(foo)), "x")
                .unwrap()
                .config,
            "a.json"
        );
        assert_eq!(
            select(&items, Some(&ArchiveImage::Index(1)), "x")
                .unwrap()
                .config,
            "b.json"
        );
        match select(&items, None, "x") {
            Err(Error::AmbiguousImage { names, .. }) => assert_eq!(names, ["foo:1", "@1"]),
            other => panic!("{other:?}"),
        }
        assert!(select(&items, Some(&ArchiveImage::Index(2)), "x").is_err());
    }
}
