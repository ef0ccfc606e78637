//! Where a chunked layer's metadata is: from the descriptor's annotations, or from the footer at
//! the end of the blob.

use std::collections::BTreeMap;

use hoist_registry::Chunk;

use super::error::{ChunkedError, Result};
use super::{
    ChunkedFormat, LEGACY_ZSTD_CHUNKED_MANIFEST_POSITION, ZSTD_CHUNKED_MANIFEST_POSITION,
    ZSTD_CHUNKED_TARSPLIT_POSITION,
};

/// The magic of zstd skippable frames hoist reads and writes (`0x184D2A50`, little-endian).
pub(crate) const SKIPPABLE_MAGIC: [u8; 4] = [0x50, 0x2a, 0x4d, 0x18];
/// The footer magic of current zstd:chunked layers.
pub(crate) const ZSTD_CHUNKED_MAGIC: &[u8; 8] = b"GNUlInUx";
/// The footer magic of the older zstd:chunked layout (skopeo 1.9).
pub(crate) const LEGACY_ZSTD_CHUNKED_MAGIC: &[u8; 8] = b"GnUlInUx";
/// Size of the current zstd:chunked footer frame (8-byte frame header, 64 bytes of data).
pub(crate) const ZSTD_CHUNKED_FOOTER_LEN: u64 = 72;
/// Size of the older zstd:chunked footer frame (8-byte frame header, 40 bytes of data).
pub(crate) const LEGACY_ZSTD_CHUNKED_FOOTER_LEN: u64 = 48;
/// Size of the eStargz footer gzip member.
pub(crate) const ESTARGZ_FOOTER_LEN: u64 = 51;
/// Size of the footer of the original stargz layout (no `SG` subfield header).
pub(crate) const LEGACY_STARGZ_FOOTER_LEN: u64 = 47;
/// The zstd:chunked manifest type hoist reads (the CRFS TOC).
pub(crate) const MANIFEST_TYPE_CRFS: u64 = 1;

/// The byte ranges of a layer's metadata in its blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataRanges {
    /// The layer's format.
    pub format: ChunkedFormat,
    /// The TOC: the compressed TOC bytes (zstd:chunked, inside their skippable frame) or the
    /// gzip member holding the `stargz.index.json` tar entry (eStargz).
    pub toc: Chunk,
    /// The TOC's uncompressed size when the layer says it.
    pub toc_uncompressed: Option<u64>,
    /// The compressed tar-split (zstd:chunked, current layout only).
    pub tar_split: Option<Chunk>,
    /// The tar-split's uncompressed size when the layer says it.
    pub tar_split_uncompressed: Option<u64>,
    /// Where the compressed tar stream ends (the file data before the metadata).
    pub data_end: u64,
    /// The blob's size.
    pub blob_size: u64,
}

impl MetadataRanges {
    /// The ranges to fetch, in this order, for [`parse_metadata`](super::parse_metadata): the
    /// TOC, then the tar-split if there is one.
    pub fn chunks(&self) -> Vec<Chunk> {
        let mut out = vec![self.toc];
        out.extend(self.tar_split);
        out
    }
}

/// How to find a layer's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetadataLocator {
    /// The annotations give the ranges: fetch [`MetadataRanges::chunks`].
    Ranges(MetadataRanges),
    /// Fetch the blob's last bytes (`tail`) and pass them to [`parse_footer`].
    Footer {
        /// The layer's format.
        format: ChunkedFormat,
        /// The range to fetch: the end of the blob.
        tail: Chunk,
    },
}

fn parse_position(key: &str, value: &str, fields: usize) -> Result<Vec<u64>> {
    let parts: Vec<&str> = value.split(':').collect();
    if parts.len() != fields {
        return Err(ChunkedError::BadAnnotation {
            key: key.to_owned(),
            reason: format!("{value:?} does not have {fields} colon-separated numbers"),
        });
    }
    parts
        .iter()
        .map(|p| {
            p.parse::<u64>().map_err(|_| ChunkedError::BadAnnotation {
                key: key.to_owned(),
                reason: format!("{p:?} in {value:?} is not a number"),
            })
        })
        .collect()
}

/// Checks that `offset..offset+length` lies inside a skippable frame within the blob.
fn frame_range(what: &str, offset: u64, length: u64, blob_size: u64) -> Result<Chunk> {
    let end = offset.checked_add(length);
    if offset < 8 || length == 0 || end.is_none_or(|e| e > blob_size) {
        return Err(ChunkedError::bad_footer(format!(
            "{what} at {offset} of {length} bytes does not fit in a blob of {blob_size} bytes"
        )));
    }
    Ok(Chunk::new(offset, length))
}

/// Where a layer's metadata is, from its annotations; or, when they do not say, which tail of
/// the blob to fetch to read the footer.
///
/// `blob_size` is the descriptor's size. Errors when an annotation is malformed or points
/// outside the blob.
pub fn metadata_ranges(
    format: ChunkedFormat,
    annotations: &BTreeMap<String, String>,
    blob_size: u64,
) -> Result<MetadataLocator> {
    if format == ChunkedFormat::ZstdChunked {
        let position = [
            ZSTD_CHUNKED_MANIFEST_POSITION,
            LEGACY_ZSTD_CHUNKED_MANIFEST_POSITION,
        ]
        .into_iter()
        .find_map(|key| annotations.get(key).map(|v| (key, v)));
        if let Some((key, value)) = position {
            let p = parse_position(key, value, 4)?;
            if p[3] != MANIFEST_TYPE_CRFS {
                return Err(ChunkedError::unsupported(format!(
                    "zstd:chunked manifest type {} (hoist reads type 1)",
                    p[3]
                )));
            }
            let toc = frame_range("the TOC", p[0], p[1], blob_size).map_err(|e| {
                ChunkedError::BadAnnotation {
                    key: key.to_owned(),
                    reason: e.to_string(),
                }
            })?;
            let mut ranges = MetadataRanges {
                format,
                toc,
                toc_uncompressed: Some(p[2]),
                tar_split: None,
                tar_split_uncompressed: None,
                data_end: p[0] - 8,
                blob_size,
            };
            if key == ZSTD_CHUNKED_MANIFEST_POSITION
                && let Some(value) = annotations.get(ZSTD_CHUNKED_TARSPLIT_POSITION)
            {
                let t = parse_position(ZSTD_CHUNKED_TARSPLIT_POSITION, value, 3)?;
                let chunk = frame_range("the tar-split", t[0], t[1], blob_size).map_err(|e| {
                    ChunkedError::BadAnnotation {
                        key: ZSTD_CHUNKED_TARSPLIT_POSITION.to_owned(),
                        reason: e.to_string(),
                    }
                })?;
                ranges.tar_split = Some(chunk);
                ranges.tar_split_uncompressed = Some(t[2]);
            }
            return Ok(MetadataLocator::Ranges(ranges));
        }
    }
    let want = match format {
        ChunkedFormat::ZstdChunked => ZSTD_CHUNKED_FOOTER_LEN,
        ChunkedFormat::Estargz => ESTARGZ_FOOTER_LEN,
    };
    let length = want.min(blob_size);
    if length == 0 {
        return Err(ChunkedError::bad_footer("the blob is empty"));
    }
    Ok(MetadataLocator::Footer {
        format,
        tail: Chunk::new(blob_size - length, length),
    })
}

fn le_u64(bytes: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    if let Some(src) = bytes.get(at..at + 8) {
        b.copy_from_slice(src);
    }
    u64::from_le_bytes(b)
}

/// Reads the footer from the last bytes of the blob (`tail`, as located by
/// [`metadata_ranges`]; any longer tail works too) and returns where the metadata is.
pub fn parse_footer(format: ChunkedFormat, tail: &[u8], blob_size: u64) -> Result<MetadataRanges> {
    if tail.len() as u64 > blob_size {
        return Err(ChunkedError::bad_footer(format!(
            "{} tail bytes for a blob of {blob_size} bytes",
            tail.len()
        )));
    }
    match format {
        ChunkedFormat::ZstdChunked => parse_zstd_footer(tail, blob_size),
        ChunkedFormat::Estargz => parse_estargz_footer(tail, blob_size),
    }
}

fn parse_zstd_footer(tail: &[u8], blob_size: u64) -> Result<MetadataRanges> {
    let magic = tail.len().checked_sub(8).map(|at| &tail[at..]);
    let (footer_len, legacy) = match magic {
        Some(m) if m == ZSTD_CHUNKED_MAGIC => (ZSTD_CHUNKED_FOOTER_LEN, false),
        Some(m) if m == LEGACY_ZSTD_CHUNKED_MAGIC => (LEGACY_ZSTD_CHUNKED_FOOTER_LEN, true),
        _ => {
            return Err(ChunkedError::bad_footer(
                "the blob does not end with a zstd:chunked footer magic",
            ));
        }
    };
    let footer_len = usize::try_from(footer_len).unwrap_or(usize::MAX);
    let Some(footer) = tail.len().checked_sub(footer_len).map(|at| &tail[at..]) else {
        return Err(ChunkedError::bad_footer(format!(
            "the zstd:chunked footer needs {footer_len} bytes, only {} were given",
            tail.len()
        )));
    };
    let data_len = (footer_len - 8) as u32;
    if footer[..4] != SKIPPABLE_MAGIC || footer[4..8] != data_len.to_le_bytes() {
        return Err(ChunkedError::bad_footer(
            "the zstd:chunked footer is not a skippable frame of the expected size",
        ));
    }
    let data = &footer[8..];
    let (offset, length, uncompressed, kind) = (
        le_u64(data, 0),
        le_u64(data, 8),
        le_u64(data, 16),
        le_u64(data, 24),
    );
    if kind != MANIFEST_TYPE_CRFS {
        return Err(ChunkedError::unsupported(format!(
            "zstd:chunked manifest type {kind} (hoist reads type 1)"
        )));
    }
    let footer_start = blob_size - footer_len as u64;
    let toc = frame_range("the TOC", offset, length, footer_start)?;
    let mut ranges = MetadataRanges {
        format: ChunkedFormat::ZstdChunked,
        toc,
        toc_uncompressed: Some(uncompressed),
        tar_split: None,
        tar_split_uncompressed: None,
        data_end: offset - 8,
        blob_size,
    };
    if !legacy {
        let (ts_offset, ts_length, ts_uncompressed) =
            (le_u64(data, 32), le_u64(data, 40), le_u64(data, 48));
        if ts_length > 0 {
            ranges.tar_split = Some(frame_range(
                "the tar-split",
                ts_offset,
                ts_length,
                footer_start,
            )?);
            ranges.tar_split_uncompressed = Some(ts_uncompressed);
        }
    }
    Ok(ranges)
}

fn parse_estargz_footer(tail: &[u8], blob_size: u64) -> Result<MetadataRanges> {
    let parse = |footer: &[u8], subfield: bool| -> Option<u64> {
        if footer.len() < 12 || footer[0] != 0x1f || footer[1] != 0x8b || footer[2] != 8 {
            return None;
        }
        if footer[3] & 0x04 == 0 {
            return None;
        }
        let xlen = usize::from(u16::from_le_bytes([footer[10], footer[11]]));
        let extra = footer.get(12..12 + xlen)?;
        let body = if subfield {
            if xlen != 26 || extra[..4] != [b'S', b'G', 22, 0] {
                return None;
            }
            &extra[4..]
        } else {
            if xlen != 22 {
                return None;
            }
            extra
        };
        if &body[16..] != b"STARGZ" {
            return None;
        }
        let hex = std::str::from_utf8(&body[..16]).ok()?;
        u64::from_str_radix(hex, 16).ok()
    };
    let mut found = None;
    for (len, subfield) in [
        (ESTARGZ_FOOTER_LEN, true),
        (LEGACY_STARGZ_FOOTER_LEN, false),
    ] {
        let len = len as usize;
        if let Some(footer) = tail.len().checked_sub(len).map(|at| &tail[at..])
            && let Some(offset) = parse(footer, subfield)
        {
            found = Some((offset, len as u64));
            break;
        }
    }
    let Some((toc_offset, footer_len)) = found else {
        return Err(ChunkedError::bad_footer(
            "the blob does not end with an eStargz footer",
        ));
    };
    let footer_start = blob_size - footer_len;
    if toc_offset >= footer_start {
        return Err(ChunkedError::bad_footer(format!(
            "the TOC offset {toc_offset} is not before the footer at {footer_start}"
        )));
    }
    Ok(MetadataRanges {
        format: ChunkedFormat::Estargz,
        toc: Chunk::new(toc_offset, footer_start - toc_offset),
        toc_uncompressed: None,
        tar_split: None,
        tar_split_uncompressed: None,
        data_end: toc_offset,
        blob_size,
    })
}
