//! Reading and verifying a layer's metadata: the TOC, and the tar-split of zstd:chunked.

use std::collections::{BTreeMap, VecDeque};
use std::io::Read;

use bytes::Bytes;
use hoist_registry::Chunk;
use hoist_store::digests::DigestHasher;

use super::error::{ChunkedError, Result};
use super::footer::MetadataRanges;
use super::tar::{Next, canonical_header, padding, read_header};
use super::tarsplit;
use super::toc::{EntryKind, RawToc, TocEntry, entries_from_raw};
use super::{
    ChunkedFormat, ESTARGZ_TOC_DIGEST, LEGACY_ZSTD_CHUNKED_MANIFEST_CHECKSUM,
    ZSTD_CHUNKED_MANIFEST_CHECKSUM, ZSTD_CHUNKED_TARSPLIT_CHECKSUM,
};

/// The name of the eStargz TOC's tar entry.
pub(crate) const ESTARGZ_TOC_NAME: &str = "stargz.index.json";

/// The most uncompressed bytes hoist accepts for a TOC, a tar-split, or an eStargz TOC member
/// (64 MiB): far above real layers (about 200 bytes per file), low enough that a compressed
/// bomb cannot exhaust memory.
pub const MAX_METADATA_SIZE: u64 = 64 << 20;

/// One piece of the uncompressed tar stream, in order: what [`rebuild`](super::rebuild) writes.
#[derive(Debug, Clone)]
pub(crate) enum Piece {
    /// Bytes known from the metadata: tar headers and padding (from the tar-split, or
    /// regenerated from the TOC for eStargz), the eStargz TOC entry.
    Inline(Bytes),
    /// Compressed bytes of the blob that decompress to headers and padding, used verbatim
    /// (zstd:chunked without a tar-split).
    Raw(Chunk),
    /// The content of entry `.0` of [`LayerMetadata::entries`].
    File(usize),
}

/// A layer's verified metadata: its entries and how to rebuild its tar stream.
#[derive(Debug, Clone)]
pub struct LayerMetadata {
    /// The layer's format.
    pub format: ChunkedFormat,
    /// The TOC's entries, chunk entries folded into their files, in TOC order.
    pub entries: Vec<TocEntry>,
    /// Whether the tar headers come from a tar-split (zstd:chunked, current layout). Without
    /// one, a zstd:chunked rebuild fetches the compressed headers between the files.
    pub has_tar_split: bool,
    /// The blob's size.
    pub blob_size: u64,
    /// The uncompressed tar stream, piece by piece.
    pub(crate) pieces: Vec<Piece>,
}

impl LayerMetadata {
    /// The size of the uncompressed tar stream a rebuild writes.
    pub fn uncompressed_size(&self) -> u64 {
        self.pieces
            .iter()
            .map(|p| match p {
                Piece::Inline(b) => b.len() as u64,
                Piece::Raw(_) => 0,
                Piece::File(i) => self.entries.get(*i).map_or(0, |e| e.size),
            })
            .sum()
    }
}

/// Parses and verifies a layer's metadata.
///
/// `parts` are the bytes of [`MetadataRanges::chunks`], in that order. The TOC is verified
/// against the descriptor's digest annotation (zstd:chunked: digest of the compressed TOC;
/// eStargz: digest of the TOC JSON) before it is parsed; the tar-split against the TOC's
/// `tarSplitDigest` (or the older tar-split checksum annotation). Every decompression is capped
/// at [`MAX_METADATA_SIZE`].
pub fn parse_metadata(
    ranges: &MetadataRanges,
    parts: &[Bytes],
    annotations: &BTreeMap<String, String>,
) -> Result<LayerMetadata> {
    let expected = ranges.chunks();
    if parts.len() != expected.len() {
        return Err(ChunkedError::FetchMismatch {
            reason: format!(
                "{} metadata parts given, {} ranges asked",
                parts.len(),
                expected.len()
            ),
        });
    }
    for (part, chunk) in parts.iter().zip(&expected) {
        if part.len() as u64 != chunk.length {
            return Err(ChunkedError::FetchMismatch {
                reason: format!(
                    "metadata range {}+{} came with {} bytes",
                    chunk.offset,
                    chunk.length,
                    part.len()
                ),
            });
        }
    }
    match ranges.format {
        ChunkedFormat::ZstdChunked => parse_zstd_chunked(ranges, parts, annotations),
        ChunkedFormat::Estargz => parse_estargz(ranges, parts, annotations),
    }
}

/// Verifies `bytes` against the digest text `expected`.
fn verify_digest(what: &'static str, expected: &str, bytes: &[u8]) -> Result<()> {
    let digest =
        hoist_store::digests::parse_digest(expected).map_err(|e| ChunkedError::BadAnnotation {
            key: what.to_owned(),
            reason: e.to_string(),
        })?;
    let mut hasher =
        DigestHasher::for_digest(&digest).map_err(|e| ChunkedError::BadAnnotation {
            key: what.to_owned(),
            reason: e.to_string(),
        })?;
    hasher.update(bytes);
    let actual = hasher.finish();
    if actual != digest {
        return Err(ChunkedError::MetadataDigestMismatch {
            what,
            expected: digest.to_string(),
            actual: actual.to_string(),
        });
    }
    Ok(())
}

/// Decompresses a capped amount of `reader` (at most [`MAX_METADATA_SIZE`], and `expected`
/// exactly when given).
fn read_capped(what: &'static str, reader: impl Read, expected: Option<u64>) -> Result<Vec<u8>> {
    if let Some(size) = expected
        && size > MAX_METADATA_SIZE
    {
        return Err(ChunkedError::TooLarge {
            what,
            size,
            limit: MAX_METADATA_SIZE,
        });
    }
    let mut out = Vec::new();
    reader
        .take(MAX_METADATA_SIZE + 1)
        .read_to_end(&mut out)
        .map_err(|e| ChunkedError::BadMetadata {
            what,
            reason: format!("does not decompress: {e}"),
        })?;
    if out.len() as u64 > MAX_METADATA_SIZE {
        return Err(ChunkedError::TooLarge {
            what,
            size: out.len() as u64,
            limit: MAX_METADATA_SIZE,
        });
    }
    if let Some(size) = expected
        && size != out.len() as u64
    {
        return Err(ChunkedError::BadMetadata {
            what,
            reason: format!("decompresses to {} bytes, {size} announced", out.len()),
        });
    }
    Ok(out)
}

fn zstd_decompress(what: &'static str, data: &[u8], expected: Option<u64>) -> Result<Vec<u8>> {
    let decoder =
        zstd::stream::read::Decoder::new(data).map_err(|e| ChunkedError::BadMetadata {
            what,
            reason: e.to_string(),
        })?;
    read_capped(what, decoder, expected)
}

fn parse_toc_json(json: &[u8]) -> Result<RawToc> {
    let toc: RawToc = serde_json::from_slice(json)
        .map_err(|e| ChunkedError::bad_toc(format!("not a TOC document: {e}")))?;
    if toc.version != 1 {
        return Err(ChunkedError::unsupported(format!(
            "TOC version {} (hoist reads version 1)",
            toc.version
        )));
    }
    Ok(toc)
}

fn parse_zstd_chunked(
    ranges: &MetadataRanges,
    parts: &[Bytes],
    annotations: &BTreeMap<String, String>,
) -> Result<LayerMetadata> {
    let checksum = [
        ZSTD_CHUNKED_MANIFEST_CHECKSUM,
        LEGACY_ZSTD_CHUNKED_MANIFEST_CHECKSUM,
    ]
    .into_iter()
    .find_map(|key| annotations.get(key));
    let Some(checksum) = checksum else {
        return Err(ChunkedError::unsupported(
            "the layer has no zstd:chunked manifest checksum annotation",
        ));
    };
    let toc_bytes = &parts[0];
    verify_digest("table of contents", checksum, toc_bytes)?;
    let json = zstd_decompress("table of contents", toc_bytes, ranges.toc_uncompressed)?;
    let toc = parse_toc_json(&json)?;
    let entries = entries_from_raw(&toc.entries, ranges.data_end)?;

    let tar_split = match (ranges.tar_split, parts.get(1)) {
        (Some(_), Some(bytes)) => {
            let expected = if toc.tar_split_digest.is_empty() {
                annotations.get(ZSTD_CHUNKED_TARSPLIT_CHECKSUM).cloned()
            } else {
                Some(toc.tar_split_digest.clone())
            };
            let Some(expected) = expected else {
                return Err(ChunkedError::unsupported(
                    "the tar-split has no digest to verify it against",
                ));
            };
            verify_digest("tar-split", &expected, bytes)?;
            let text = zstd_decompress("tar-split", bytes, ranges.tar_split_uncompressed)?;
            Some(tarsplit::parse(&text)?)
        }
        _ => None,
    };
    let pieces = match &tar_split {
        Some(items) => pieces_from_tar_split(&entries, items)?,
        None => pieces_from_gaps(&entries, ranges.data_end),
    };
    Ok(LayerMetadata {
        format: ChunkedFormat::ZstdChunked,
        entries,
        has_tar_split: tar_split.is_some(),
        blob_size: ranges.blob_size,
        pieces,
    })
}

/// The pieces of a zstd:chunked layer without tar-split: file contents in blob order, the
/// compressed bytes between them (headers, padding) taken verbatim.
fn pieces_from_gaps(entries: &[TocEntry], data_end: u64) -> Vec<Piece> {
    let mut files: Vec<usize> = (0..entries.len())
        .filter(|&i| entries[i].has_content())
        .collect();
    files.sort_by_key(|&i| entries[i].offset);
    let mut pieces = Vec::new();
    let mut at = 0u64;
    for i in files {
        let entry = &entries[i];
        if entry.offset > at {
            pieces.push(Piece::Raw(Chunk::new(at, entry.offset - at)));
        }
        pieces.push(Piece::File(i));
        at = entry.end_offset;
    }
    if data_end > at {
        pieces.push(Piece::Raw(Chunk::new(at, data_end - at)));
    }
    pieces
}

/// The pieces of a zstd:chunked layer from its tar-split: raw segments inline, each file's
/// content from the TOC entry of the same name (in order, for names that repeat).
fn pieces_from_tar_split(entries: &[TocEntry], items: &[tarsplit::Item]) -> Result<Vec<Piece>> {
    let mut by_name: BTreeMap<&str, VecDeque<usize>> = BTreeMap::new();
    for (i, entry) in entries.iter().enumerate() {
        if entry.has_content() {
            by_name.entry(entry.name.as_str()).or_default().push_back(i);
        }
    }
    let mut pieces = Vec::new();
    let mut used = 0usize;
    for item in items {
        match item {
            tarsplit::Item::Segment(bytes) => {
                if let Some(Piece::Inline(last)) = pieces.last_mut() {
                    let mut joined = Vec::with_capacity(last.len() + bytes.len());
                    joined.extend_from_slice(last);
                    joined.extend_from_slice(bytes);
                    *last = Bytes::from(joined);
                } else {
                    pieces.push(Piece::Inline(Bytes::from(bytes.clone())));
                }
            }
            tarsplit::Item::File { size: 0, .. } => {}
            tarsplit::Item::File { name, size } => {
                let name = String::from_utf8_lossy(name);
                let Some(i) = by_name.get_mut(name.as_ref()).and_then(VecDeque::pop_front) else {
                    return Err(ChunkedError::bad_tar_split(format!(
                        "file {name:?} has content but no TOC entry"
                    )));
                };
                if entries[i].size != *size {
                    return Err(ChunkedError::bad_tar_split(format!(
                        "file {name:?} is {size} bytes, the TOC says {}",
                        entries[i].size
                    )));
                }
                pieces.push(Piece::File(i));
                used += 1;
            }
        }
    }
    let with_content = entries.iter().filter(|e| e.has_content()).count();
    if used != with_content {
        return Err(ChunkedError::bad_tar_split(format!(
            "it names {used} files with content, the TOC {with_content}"
        )));
    }
    Ok(pieces)
}

fn parse_estargz(
    ranges: &MetadataRanges,
    parts: &[Bytes],
    annotations: &BTreeMap<String, String>,
) -> Result<LayerMetadata> {
    let Some(toc_digest) = annotations.get(ESTARGZ_TOC_DIGEST) else {
        return Err(ChunkedError::unsupported(
            "the layer has no eStargz TOC digest annotation",
        ));
    };
    // The TOC member: a tar entry `stargz.index.json`, then the end of the archive.
    let tail = read_capped(
        "table of contents",
        flate2::read::MultiGzDecoder::new(&parts[0][..]),
        None,
    )?;
    let Next::Header(header) = read_header(&mut &tail[..])
        .map_err(|e| ChunkedError::bad_toc(format!("the TOC member is not a tar entry: {e}")))?
    else {
        return Err(ChunkedError::bad_toc("the TOC member holds no tar entry"));
    };
    if header.entry.name != ESTARGZ_TOC_NAME || header.entry.kind != EntryKind::Regular {
        return Err(ChunkedError::bad_toc(format!(
            "the TOC member holds {:?}, not {ESTARGZ_TOC_NAME}",
            header.entry.name
        )));
    }
    let start = header.raw.len();
    let json = usize::try_from(header.data_size)
        .ok()
        .and_then(|len| tail.get(start..start.checked_add(len)?))
        .ok_or_else(|| ChunkedError::bad_toc("the TOC entry is truncated"))?;
    verify_digest("table of contents", toc_digest, json)?;
    let toc = parse_toc_json(json)?;
    let entries = entries_from_raw(&toc.entries, ranges.data_end)?;
    let mut pieces = Vec::new();
    let mut last_offset = 0u64;
    let mut pending = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        pending.extend(canonical_header(entry));
        if entry.has_content() {
            if entry.offset < last_offset {
                return Err(ChunkedError::bad_toc(format!(
                    "entry {:?} is before the previous one in the blob",
                    entry.name
                )));
            }
            last_offset = entry.end_offset;
            pieces.push(Piece::Inline(Bytes::from(std::mem::take(&mut pending))));
            pieces.push(Piece::File(i));
            pending.resize(padding(entry.size), 0);
        }
    }
    pending.extend_from_slice(&tail);
    pieces.push(Piece::Inline(Bytes::from(pending)));
    Ok(LayerMetadata {
        format: ChunkedFormat::Estargz,
        entries,
        has_tar_split: false,
        blob_size: ranges.blob_size,
        pieces,
    })
}
