//! Recompressing layers on the way (`hoist copy --compress`).
//!
//! A layer is read from the source, verified against its digest as it passes, decompressed
//! (its DiffID checked against the config's), and compressed again as [`LayerCompression`]
//! says, on a blocking thread, into a temporary file: the new blob's digest
//! and size are only known at the end, and a destination needs both before it takes the blob.
//! The file is then written to the destination like any blob and removed. The manifest changes
//! (new layer digests, sizes and media types), so its digest differs from the source's; for
//! gzip, zstd and zstd:chunked the config and the DiffIDs do not.
//!
//! `zstd:chunked` and `estargz` go through [`crate::chunked::write_chunked`] (any
//! [`ChunkedWriter`] can stand in); their descriptors get the annotations that locate the table
//! of contents. zstd:chunked keeps the tar byte for byte, so its DiffID is unchanged. eStargz
//! rewrites the tar (canonical headers, its table of contents as a last entry), so its layers
//! get new DiffIDs: the copy then writes a new config naming them, and the image gets a new
//! config digest too.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, Read, Write};
use std::sync::Arc;

use futures_util::StreamExt;
use hoist_store::digests::DigestHasher;
use oci_spec::image::Digest;
use tokio::sync::mpsc;

use crate::chunked::{ChunkedFormat, WriteOptions, write_chunked};
use crate::hashing::{HashingReader, HashingWriter};
use crate::manifest::{Compression, OCI_LAYER_GZIP, OCI_LAYER_ZSTD};
use crate::stream::{CHANNEL_CHUNKS, ChannelReader, Feed, decompress};
use crate::transport::error::{Error, Result};
use crate::transport::stream::{blocking, blocking_reader_stream};
use crate::transport::{BlobInfo, ByteStream};

/// Docker's media type for a gzip layer.
const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// The compression `hoist copy --compress` gives layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LayerCompression {
    /// gzip.
    Gzip,
    /// zstd.
    Zstd,
    /// zstd:chunked: a zstd stream of independently compressed chunks, with a table of contents
    /// that partial pulls read; any zstd reader reads it as plain zstd.
    ZstdChunked,
    /// eStargz: a gzip stream of independently compressed entries with a table of contents;
    /// any gzip reader reads it as plain gzip.
    Estargz,
}

impl LayerCompression {
    /// Whether layers written this way get new DiffIDs (eStargz rewrites the tar), so that the
    /// image config must be rewritten too.
    pub fn changes_diff_ids(self) -> bool {
        self == LayerCompression::Estargz
    }

    /// Parses `gzip`, `zstd`, `zstd:chunked` or `estargz`.
    pub fn parse(s: &str) -> std::result::Result<LayerCompression, String> {
        Ok(match s.trim().to_ascii_lowercase().as_str() {
            "gzip" => LayerCompression::Gzip,
            "zstd" => LayerCompression::Zstd,
            "zstd:chunked" => LayerCompression::ZstdChunked,
            "estargz" => LayerCompression::Estargz,
            other => {
                return Err(format!(
                    "unknown compression {other:?}: use gzip, zstd, zstd:chunked or estargz"
                ));
            }
        })
    }

    /// The name `parse` reads.
    pub fn name(self) -> &'static str {
        match self {
            LayerCompression::Gzip => "gzip",
            LayerCompression::Zstd => "zstd",
            LayerCompression::ZstdChunked => "zstd:chunked",
            LayerCompression::Estargz => "estargz",
        }
    }

    /// The stream format the blob is, for readers that do not know the chunked variants.
    pub fn stream(self) -> Compression {
        match self {
            LayerCompression::Gzip | LayerCompression::Estargz => Compression::Gzip,
            LayerCompression::Zstd | LayerCompression::ZstdChunked => Compression::Zstd,
        }
    }

    /// Whether the format needs a [`ChunkedWriter`].
    pub fn is_chunked(self) -> bool {
        matches!(
            self,
            LayerCompression::ZstdChunked | LayerCompression::Estargz
        )
    }

    /// The layer media type in a manifest of `manifest_media_type`; `None` when that manifest
    /// type has none (zstd in a Docker schema 2 manifest: the manifest becomes OCI).
    pub fn layer_media_type(self, docker: bool) -> Option<&'static str> {
        match (self.stream(), docker) {
            (Compression::Gzip, true) => Some(DOCKER_LAYER_GZIP),
            (Compression::Gzip, false) => Some(OCI_LAYER_GZIP),
            (_, true) => None,
            (_, false) => Some(OCI_LAYER_ZSTD),
        }
    }

    /// The compressor name the blob info cache records.
    pub fn store_name(self) -> hoist_store::Compression {
        match self {
            LayerCompression::Gzip => hoist_store::Compression::Gzip,
            LayerCompression::Zstd => hoist_store::Compression::Zstd,
            other => hoist_store::Compression::Other(other.name().to_owned()),
        }
    }
}

impl fmt::Display for LayerCompression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Writes a chunked layer (`zstd:chunked`, `estargz`) from an uncompressed tar stream: returns
/// what the layer's descriptor and the image config must say about it.
pub type ChunkedWriter = Arc<
    dyn Fn(
            LayerCompression,
            Option<i32>,
            &mut dyn Read,
            &mut dyn Write,
        ) -> io::Result<ChunkedOutput>
        + Send
        + Sync,
>;

/// What a [`ChunkedWriter`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkedOutput {
    /// The annotations the layer's descriptor must carry (where its table of contents is).
    pub annotations: BTreeMap<String, String>,
    /// The DiffID of the layer written: the input's for zstd:chunked (the tar is kept byte for
    /// byte), a new one for eStargz (which rewrites the tar and appends its table of contents).
    pub diff_id: Digest,
}

/// What to recompress layers as.
#[derive(Clone)]
pub struct Recompression {
    /// The target format.
    pub format: LayerCompression,
    /// The compression level (the format's default when `None`).
    pub level: Option<i32>,
    /// The writer for chunked formats.
    pub chunked: Option<ChunkedWriter>,
}

impl fmt::Debug for Recompression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Recompression")
            .field("format", &self.format)
            .field("level", &self.level)
            .field("chunked", &self.chunked.is_some())
            .finish()
    }
}

impl Recompression {
    /// Recompression as `format` at the default level, with the chunked writer hoist has.
    pub fn new(format: LayerCompression) -> Recompression {
        Recompression {
            format,
            level: None,
            chunked: default_chunked_writer(),
        }
    }

    /// Whether this recompression can be done.
    pub fn check(&self) -> std::result::Result<(), String> {
        if self.format.is_chunked() && self.chunked.is_none() {
            return Err(format!(
                "{} output is not available in this build of hoist; use gzip or zstd",
                self.format
            ));
        }
        if let Some(level) = self.level {
            let range = match self.format {
                LayerCompression::Gzip => 0..=9,
                LayerCompression::ZstdChunked => 1..=19,
                _ => 1..=22,
            };
            if !range.contains(&level) {
                return Err(format!(
                    "compression level {level} is out of range for {} ({}..={})",
                    self.format,
                    range.start(),
                    range.end()
                ));
            }
        }
        Ok(())
    }
}

/// The chunked writer this build has: [`crate::chunked::write_chunked`].
fn default_chunked_writer() -> Option<ChunkedWriter> {
    Some(Arc::new(|format, level, input, out| {
        let format = match format {
            LayerCompression::Estargz => ChunkedFormat::Estargz,
            _ => ChunkedFormat::ZstdChunked,
        };
        let mut options = WriteOptions::new(format);
        if let Some(level) = level {
            options.level = level;
        }
        let layer = write_chunked(input, out, &options).map_err(io::Error::other)?;
        Ok(ChunkedOutput {
            annotations: layer.annotations,
            diff_id: layer.diff_id,
        })
    }))
}

/// A recompressed layer, held in a temporary file until it is written.
#[derive(Debug)]
pub(crate) struct Recompressed {
    /// The new blob.
    pub info: BlobInfo,
    /// The source layer's uncompressed digest (verified).
    pub diff_id: Digest,
    /// The written layer's uncompressed digest: `diff_id`, except for eStargz, which rewrites
    /// the tar (the image config must then name this one).
    pub written_diff_id: Digest,
    /// Annotations the new descriptor carries (chunked formats).
    pub annotations: BTreeMap<String, String>,
    file: tempfile::NamedTempFile,
}

impl Recompressed {
    /// The new blob as a stream (read on a blocking thread).
    pub fn stream(&self) -> Result<ByteStream> {
        let file = self.file.reopen().map_err(|e| Error::Io {
            action: "reopen a recompressed layer",
            path: self.file.path().to_owned(),
            source: e,
        })?;
        Ok(blocking_reader_stream(file))
    }
}

/// Recompresses `stream`, the bytes of layer `source` (compressed as its media type says), as
/// `target` says. The source bytes are checked against `source`'s digest and size, and the
/// uncompressed content against `diff_id` when given; nothing is returned unless both matched.
pub(crate) async fn recompress(
    mut stream: ByteStream,
    source: &BlobInfo,
    diff_id: Option<&Digest>,
    target: &Recompression,
) -> Result<Recompressed> {
    target.check().map_err(|reason| Error::Incomplete {
        location: format!("layer {}", source.digest),
        reason,
    })?;
    let (tx, rx) = mpsc::channel(CHANNEL_CHUNKS);
    let work = {
        let source = source.clone();
        let diff_id = diff_id.cloned();
        let target = target.clone();
        blocking("recompress a layer", move || {
            run(ChannelReader::new(rx), &source, diff_id.as_ref(), &target)
        })
    };
    let feed = async move {
        while let Some(item) = stream.next().await {
            match item {
                Ok(b) => {
                    if tx.send(Feed::Data(b)).await.is_err() {
                        return Ok(());
                    }
                }
                Err(e) => return Err(e),
            }
        }
        let _ = tx.send(Feed::End).await;
        Ok(())
    };
    let (fed, done) = tokio::join!(feed, work);
    if let Err(e) = fed {
        return Err(Error::Stream {
            digest: source.digest.to_string(),
            source: e,
        });
    }
    done
}

/// The blocking part of [`recompress`].
fn run(
    input: ChannelReader,
    source: &BlobInfo,
    diff_id: Option<&Digest>,
    target: &Recompression,
) -> Result<Recompressed> {
    let stream_err = |e: io::Error| Error::Stream {
        digest: source.digest.to_string(),
        source: e,
    };
    let source_hasher =
        DigestHasher::for_digest(&source.digest).map_err(|_| Error::UnsupportedDigest {
            digest: source.digest.to_string(),
        })?;
    let mut compressed_in = HashingReader::new(input, source_hasher);
    let compression = Compression::from_media_type(&source.media_type).unwrap_or(Compression::None);
    let file = tempfile::NamedTempFile::new().map_err(|e| Error::Io {
        action: "create a temporary file for a recompressed layer",
        path: std::env::temp_dir(),
        source: e,
    })?;
    let out_file = file.reopen().map_err(|e| Error::Io {
        action: "open a temporary file for a recompressed layer",
        path: file.path().to_owned(),
        source: e,
    })?;
    let mut out = HashingWriter::sha256(io::BufWriter::new(out_file));
    let (computed_diff_id, annotations, written) = {
        let decoded = decompress(&mut compressed_in, compression).map_err(stream_err)?;
        let mut plain = HashingReader::new(decoded, DigestHasher::sha256());
        let (annotations, written) = encode(&mut plain, &mut out, target).map_err(stream_err)?;
        // The encoder may stop at the end of the tar: the rest of the content still counts.
        io::copy(&mut plain, &mut io::sink()).map_err(stream_err)?;
        (plain.hasher.finish(), annotations, written)
    };
    let written_diff_id = written.unwrap_or_else(|| computed_diff_id.clone());
    // Whatever follows the compressed stream still belongs to the blob.
    io::copy(&mut compressed_in, &mut io::sink()).map_err(stream_err)?;
    out.flush().map_err(stream_err)?;
    // Check the source before anything is used.
    let actual = compressed_in.hasher.finish();
    if compressed_in.count != source.size {
        return Err(Error::SizeMismatch {
            what: format!("layer {}", source.digest),
            expected: source.size,
            actual: compressed_in.count,
        });
    }
    if actual != source.digest {
        return Err(Error::DigestMismatch {
            what: format!("layer {}", source.digest),
            expected: source.digest.to_string(),
            actual: actual.to_string(),
        });
    }
    if let Some(expected) = diff_id
        && expected != &computed_diff_id
    {
        return Err(Error::DigestMismatch {
            what: format!("uncompressed content (DiffID) of layer {}", source.digest),
            expected: expected.to_string(),
            actual: computed_diff_id.to_string(),
        });
    }
    let HashingWriter {
        hasher,
        count: written,
        ..
    } = out;
    let digest = hasher.finish();
    let media_type = target
        .format
        .layer_media_type(is_docker_layer(&source.media_type))
        .unwrap_or(OCI_LAYER_ZSTD);
    Ok(Recompressed {
        info: BlobInfo::new(digest, written, media_type),
        diff_id: computed_diff_id,
        written_diff_id,
        annotations,
        file,
    })
}

/// Whether a layer media type is Docker's.
pub(crate) fn is_docker_layer(media_type: &str) -> bool {
    media_type.starts_with("application/vnd.docker.")
}

/// Compresses `input` into `out` as `target` says; the annotations of chunked formats and the
/// DiffID of what they wrote.
fn encode(
    input: &mut dyn Read,
    out: &mut dyn Write,
    target: &Recompression,
) -> io::Result<(BTreeMap<String, String>, Option<Digest>)> {
    if target.format.is_chunked() {
        let writer = target
            .chunked
            .as_ref()
            .ok_or_else(|| io::Error::other(format!("no {} writer", target.format)))?;
        let written = writer(target.format, target.level, input, out)?;
        return Ok((written.annotations, Some(written.diff_id)));
    }
    match target.format.stream() {
        Compression::Gzip => {
            let level = target.level.map_or(flate2::Compression::default(), |l| {
                flate2::Compression::new(l.clamp(0, 9) as u32)
            });
            let mut enc = flate2::write::GzEncoder::new(out, level);
            io::copy(input, &mut enc)?;
            enc.finish()?;
        }
        _ => {
            let level = target.level.unwrap_or(zstd::DEFAULT_COMPRESSION_LEVEL);
            let mut enc = zstd::stream::write::Encoder::new(out, level)?;
            io::copy(input, &mut enc)?;
            enc.finish()?;
        }
    }
    Ok((BTreeMap::new(), None))
}
