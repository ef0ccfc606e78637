//! zstd:chunked and eStargz: layers whose blobs can be fetched file by file.
//!
//! Both formats are ordinary compressed tar layers (any client pulls them as plain `tar+zstd` or
//! `tar+gzip`), laid out so that each file's content starts a new compression frame and carrying
//! a table of contents (TOC) that says where every file is in the compressed blob and what its
//! digest is. A client that already has some of the files (from other layers) fetches only the
//! ranges of the rest and rebuilds the layer. This module is the I/O-free core: it reads and
//! writes the formats and plans and performs rebuilds; the store and the pull supply the bytes.
//!
//! # Formats
//!
//! **zstd:chunked** ([`ChunkedFormat::ZstdChunked`], media type `…tar+zstd`): a zstd stream in
//! which every regular file's content starts a new frame (big files are split into chunks of
//! [`WriteOptions::chunk_size`], each its own frame), the tar headers and padding in frames of
//! their own between them; then, in zstd *skippable* frames (magic `0x184D2A50`, which every zstd
//! decoder skips): the TOC (JSON, zstd-compressed), the tar-split (JSON lines, zstd-compressed:
//! the tar headers verbatim and each file's size and CRC-64) and a footer. The footer is a
//! skippable frame of 64 little-endian bytes: TOC offset, compressed length, uncompressed length,
//! type (1), tar-split offset, compressed length, uncompressed length, magic `GNUlInUx`. The
//! descriptor carries `io.github.containers.zstd-chunked.manifest-checksum` (digest of the
//! compressed TOC), `…manifest-position` (`offset:length:uncompressedLength:1`) and
//! `…tarsplit-position` (`offset:length:uncompressedLength`); the TOC's `tarSplitDigest` is the
//! digest of the compressed tar-split.
//!
//! The older layout, which skopeo 1.9 writes, has a 40-byte footer (TOC offset, lengths, type,
//! magic `GnUlInUx`), no tar-split, and the annotations `io.containers.zstd-chunked.manifest-checksum`
//! and `io.containers.zstd-chunked.manifest-position`. hoist reads both. Without a tar-split the
//! tar headers are taken from the blob itself: the compressed ranges between files' contents
//! are fetched and decompressed verbatim, so the rebuilt tar is exactly what `zstd -d` yields.
//!
//! **eStargz** ([`ChunkedFormat::Estargz`], media type `…tar+gzip`): a concatenation of gzip
//! members; every file's content (every chunk of it) starts a new member; the last members hold
//! the TOC as a tar entry named `stargz.index.json` (followed by the end-of-archive blocks) and a
//! 51-byte footer member whose extra field is the subfield `SG` (22 bytes): the TOC member's
//! offset as 16 hex digits, then `STARGZ`. Its descriptor carries
//! `containerd.io/snapshot/stargz/toc.digest` (digest of the
//! TOC JSON) and `io.containers.estargz.uncompressed-size`. The uncompressed layer (its DiffID) is
//! the tar *including* the `stargz.index.json` entry. eStargz has no tar-split: a rebuild
//! regenerates each tar header from the TOC fields, in the canonical form hoist's writer uses, so
//! a layer hoist wrote rebuilds byte for byte; one written by another tool may not (its headers
//! may differ in encoding), which the caller detects by comparing the rebuilt DiffID with the
//! image config's, falling back to a full pull.
//!
//! # Flow of a partial pull
//!
//! 1. [`detect`] the format from the layer descriptor.
//! 2. [`metadata_ranges`]: either exact ranges from the annotations, or a tail to fetch first
//!    and pass to [`parse_footer`].
//! 3. Fetch [`MetadataRanges::chunks`], then [`parse_metadata`]: verified against the digest
//!    annotation, size-capped ([`MAX_METADATA_SIZE`]).
//! 4. [`plan_rebuild`] with a lookup of what content is local: the compressed ranges to fetch.
//! 5. Fetch [`RebuildPlan::fetch`] (in order) and [`rebuild`] the tar, reading local files through
//!    [`LocalContent`]. Every file's content is verified against its digest while it streams; the
//!    returned DiffID must equal the image config's before the layer is used. On any error the
//!    output must be discarded.
//!
//! [`write_chunked`] produces either format from a tar stream.

mod error;
mod footer;
mod metadata;
mod plan;
mod rebuild;
mod tar;
mod tarsplit;
mod toc;
mod write;

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

pub use error::{ChunkedError, Result};
pub use footer::{MetadataLocator, MetadataRanges, metadata_ranges, parse_footer};
pub use metadata::{LayerMetadata, MAX_METADATA_SIZE, parse_metadata};
pub use plan::{RebuildPlan, plan_rebuild};
pub use rebuild::{LocalContent, rebuild};
pub use toc::{EntryKind, TocChunk, TocEntry};
pub use write::{ChunkedLayer, WriteOptions, write_chunked};

/// Annotation: digest of the compressed zstd:chunked TOC.
pub const ZSTD_CHUNKED_MANIFEST_CHECKSUM: &str =
    "io.github.containers.zstd-chunked.manifest-checksum";
/// Annotation: `offset:length:uncompressedLength:type` of the compressed zstd:chunked TOC.
pub const ZSTD_CHUNKED_MANIFEST_POSITION: &str =
    "io.github.containers.zstd-chunked.manifest-position";
/// Annotation: `offset:length:uncompressedLength` of the compressed zstd:chunked tar-split.
pub const ZSTD_CHUNKED_TARSPLIT_POSITION: &str =
    "io.github.containers.zstd-chunked.tarsplit-position";
/// Annotation (older layers): digest of the compressed tar-split, before the TOC carried it.
pub const ZSTD_CHUNKED_TARSPLIT_CHECKSUM: &str =
    "io.github.containers.zstd-chunked.tarsplit-checksum";
/// Annotation of the older layout (skopeo 1.9): digest of the compressed TOC.
pub const LEGACY_ZSTD_CHUNKED_MANIFEST_CHECKSUM: &str =
    "io.containers.zstd-chunked.manifest-checksum";
/// Annotation of the older layout (skopeo 1.9): position of the compressed TOC.
pub const LEGACY_ZSTD_CHUNKED_MANIFEST_POSITION: &str =
    "io.containers.zstd-chunked.manifest-position";
/// Annotation: digest of the eStargz TOC JSON (`stargz.index.json`).
pub const ESTARGZ_TOC_DIGEST: &str = "containerd.io/snapshot/stargz/toc.digest";
/// Annotation: size of the uncompressed eStargz layer (the tar, TOC entry included).
pub const ESTARGZ_UNCOMPRESSED_SIZE: &str = "io.containers.estargz.uncompressed-size";

/// OCI media type of zstd-compressed layers.
pub const MEDIA_TYPE_TAR_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
/// OCI media type of gzip-compressed layers.
pub const MEDIA_TYPE_TAR_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// Docker media type of gzip-compressed layers.
pub const MEDIA_TYPE_DOCKER_TAR_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// A chunked layer format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChunkedFormat {
    /// zstd:chunked (containers/storage): zstd frames per file, TOC and tar-split in skippable
    /// frames.
    ZstdChunked,
    /// eStargz: gzip members per file, TOC as the last tar entry.
    Estargz,
}

impl ChunkedFormat {
    /// The name users give it: `zstd:chunked` or `estargz`.
    pub fn name(self) -> &'static str {
        match self {
            ChunkedFormat::ZstdChunked => "zstd:chunked",
            ChunkedFormat::Estargz => "estargz",
        }
    }

    /// The OCI media type of layers of this format.
    pub fn media_type(self) -> &'static str {
        match self {
            ChunkedFormat::ZstdChunked => MEDIA_TYPE_TAR_ZSTD,
            ChunkedFormat::Estargz => MEDIA_TYPE_TAR_GZIP,
        }
    }
}

impl fmt::Display for ChunkedFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ChunkedFormat {
    type Err = ChunkedError;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "zstd:chunked" => Ok(ChunkedFormat::ZstdChunked),
            "estargz" => Ok(ChunkedFormat::Estargz),
            other => Err(ChunkedError::unsupported(format!(
                "unknown chunked format {other:?}: expected zstd:chunked or estargz"
            ))),
        }
    }
}

/// Which chunked format a layer descriptor describes, from its media type and annotations.
///
/// `None` when the layer is not chunked (or not in a way hoist reads): pull it whole. A
/// zstd:chunked layer needs a manifest checksum annotation (either name), an eStargz layer the
/// TOC digest annotation: without them the TOC cannot be verified.
pub fn detect(media_type: &str, annotations: &BTreeMap<String, String>) -> Option<ChunkedFormat> {
    let base = media_type.split(';').next().unwrap_or(media_type).trim();
    match base {
        MEDIA_TYPE_TAR_ZSTD
            if annotations.contains_key(ZSTD_CHUNKED_MANIFEST_CHECKSUM)
                || annotations.contains_key(LEGACY_ZSTD_CHUNKED_MANIFEST_CHECKSUM) =>
        {
            Some(ChunkedFormat::ZstdChunked)
        }
        MEDIA_TYPE_TAR_GZIP | MEDIA_TYPE_DOCKER_TAR_GZIP
            if annotations.contains_key(ESTARGZ_TOC_DIGEST) =>
        {
            Some(ChunkedFormat::Estargz)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests;
