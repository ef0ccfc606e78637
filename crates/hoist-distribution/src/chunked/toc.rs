//! The table of contents: its JSON form (shared by zstd:chunked and eStargz) and the entries
//! hoist works with.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hoist_store::Digest;
use serde::{Deserialize, Serialize};

use super::error::{ChunkedError, Result};

/// What kind of file a TOC entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// A regular file (`reg`).
    Regular,
    /// A directory (`dir`).
    Directory,
    /// A symbolic link (`symlink`); its target is [`TocEntry::link_name`].
    Symlink,
    /// A hard link (`hardlink`) to the earlier entry [`TocEntry::link_name`].
    Hardlink,
    /// A character device (`char`).
    CharDevice,
    /// A block device (`block`).
    BlockDevice,
    /// A named pipe (`fifo`).
    Fifo,
}

impl EntryKind {
    /// The TOC's name for it (`reg`, `dir`, `symlink`, `hardlink`, `char`, `block`, `fifo`).
    pub fn toc_name(self) -> &'static str {
        match self {
            EntryKind::Regular => "reg",
            EntryKind::Directory => "dir",
            EntryKind::Symlink => "symlink",
            EntryKind::Hardlink => "hardlink",
            EntryKind::CharDevice => "char",
            EntryKind::BlockDevice => "block",
            EntryKind::Fifo => "fifo",
        }
    }

    fn from_toc_name(name: &str) -> Option<Self> {
        Some(match name {
            "reg" => EntryKind::Regular,
            "dir" => EntryKind::Directory,
            "symlink" => EntryKind::Symlink,
            "hardlink" => EntryKind::Hardlink,
            "char" => EntryKind::CharDevice,
            "block" => EntryKind::BlockDevice,
            "fifo" => EntryKind::Fifo,
            _ => return None,
        })
    }

    /// The tar type flag hoist writes for it.
    pub(crate) fn tar_flag(self) -> u8 {
        match self {
            EntryKind::Regular => b'0',
            EntryKind::Hardlink => b'1',
            EntryKind::Symlink => b'2',
            EntryKind::CharDevice => b'3',
            EntryKind::BlockDevice => b'4',
            EntryKind::Directory => b'5',
            EntryKind::Fifo => b'6',
        }
    }
}

/// One piece of a regular file's content: its own compression frame (zstd:chunked) or gzip
/// member (eStargz) in the blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TocChunk {
    /// Where its compressed bytes start in the blob.
    pub offset: u64,
    /// Where they end (exclusive). For eStargz the range may hold, after the chunk's content,
    /// the tar padding and headers that follow it.
    pub end_offset: u64,
    /// Where the chunk starts within the file's content.
    pub chunk_offset: u64,
    /// How many bytes of the file's content it holds.
    pub chunk_size: u64,
    /// The digest of those bytes, when the TOC gives it.
    pub chunk_digest: Option<Digest>,
}

/// One entry of a layer's table of contents: a file with its metadata and, for a non-empty
/// regular file, where its content is in the compressed blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TocEntry {
    /// The name as in the tar stream (e.g. `./usr/bin/` or `usr/bin/ls`).
    pub name: String,
    /// What kind of file.
    pub kind: EntryKind,
    /// Content size (regular files; zero otherwise).
    pub size: u64,
    /// Permission bits (and setuid/setgid/sticky) as in the tar header.
    pub mode: u32,
    /// Owner.
    pub uid: u64,
    /// Group.
    pub gid: u64,
    /// Owner's name, if any.
    pub user_name: String,
    /// Group's name, if any.
    pub group_name: String,
    /// Modification time, seconds since the epoch.
    pub mtime: i64,
    /// Symlink target or hard link target.
    pub link_name: String,
    /// Device major number (devices).
    pub dev_major: u64,
    /// Device minor number (devices).
    pub dev_minor: u64,
    /// Extended attributes (`SCHILY.xattr.*` PAX records), by name.
    pub xattrs: BTreeMap<String, Vec<u8>>,
    /// Digest of the whole content (non-empty regular files).
    pub digest: Option<Digest>,
    /// Where the content's compressed bytes start (first chunk), 0 when there are none.
    pub offset: u64,
    /// Where they end (last chunk), 0 when there are none.
    pub end_offset: u64,
    /// The content's chunks, in order, covering `0..size` (empty when `size` is 0).
    pub chunks: Vec<TocChunk>,
}

impl TocEntry {
    /// Whether this entry has content in the blob (a non-empty regular file).
    pub fn has_content(&self) -> bool {
        self.kind == EntryKind::Regular && self.size > 0
    }
}

/// The TOC document, as JSON.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct RawToc {
    pub version: i64,
    #[serde(default)]
    pub entries: Vec<RawEntry>,
    #[serde(
        rename = "tarSplitDigest",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub tar_split_digest: String,
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

/// One TOC entry, as JSON (both formats use the CRFS field names).
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub(crate) struct RawEntry {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    #[serde(rename = "linkName", default, skip_serializing_if = "String::is_empty")]
    pub link_name: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub mode: i64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub size: i64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub uid: i64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub gid: i64,
    #[serde(rename = "userName", default, skip_serializing_if = "String::is_empty")]
    pub user_name: String,
    #[serde(
        rename = "groupName",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub group_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modtime: Option<String>,
    #[serde(rename = "devMajor", default, skip_serializing_if = "is_zero")]
    pub dev_major: i64,
    #[serde(rename = "devMinor", default, skip_serializing_if = "is_zero")]
    pub dev_minor: i64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub xattrs: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub digest: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub offset: i64,
    #[serde(rename = "endOffset", default, skip_serializing_if = "is_zero")]
    pub end_offset: i64,
    #[serde(rename = "chunkSize", default, skip_serializing_if = "is_zero")]
    pub chunk_size: i64,
    #[serde(rename = "chunkOffset", default, skip_serializing_if = "is_zero")]
    pub chunk_offset: i64,
    #[serde(
        rename = "chunkDigest",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub chunk_digest: String,
}

fn non_negative(value: i64, field: &str, name: &str) -> Result<u64> {
    u64::try_from(value)
        .map_err(|_| ChunkedError::bad_toc(format!("entry {name:?} has a negative {field}")))
}

fn parse_digest(value: &str, name: &str) -> Result<Option<Digest>> {
    if value.is_empty() {
        return Ok(None);
    }
    let digest = hoist_store::digests::parse_digest(value)
        .map_err(|e| ChunkedError::bad_toc(format!("entry {name:?}: {e}")))?;
    Ok(Some(digest))
}

/// Converts the JSON entries into [`TocEntry`]s: `chunk` entries are folded into the regular
/// file before them. `data_end` is where the compressed file data ends (the TOC's start): the
/// end of a chunk without an explicit end is the start of the next content, or `data_end`.
pub(crate) fn entries_from_raw(raw: &[RawEntry], data_end: u64) -> Result<Vec<TocEntry>> {
    let mut entries: Vec<TocEntry> = Vec::with_capacity(raw.len());
    for item in raw {
        let name = item.name.as_str();
        if item.kind == "chunk" {
            let Some(file) = entries.last_mut().filter(|f| f.kind == EntryKind::Regular) else {
                return Err(ChunkedError::bad_toc(format!(
                    "chunk entry {name:?} does not follow a regular file"
                )));
            };
            if file.name != item.name || file.chunks.is_empty() {
                return Err(ChunkedError::bad_toc(format!(
                    "chunk entry {name:?} does not belong to {:?}",
                    file.name
                )));
            }
            file.chunks.push(TocChunk {
                offset: non_negative(item.offset, "offset", name)?,
                end_offset: non_negative(item.end_offset, "endOffset", name)?,
                chunk_offset: non_negative(item.chunk_offset, "chunkOffset", name)?,
                chunk_size: non_negative(item.chunk_size, "chunkSize", name)?,
                chunk_digest: parse_digest(&item.chunk_digest, name)?,
            });
            continue;
        }
        let Some(kind) = EntryKind::from_toc_name(&item.kind) else {
            return Err(ChunkedError::bad_toc(format!(
                "entry {name:?} has unknown type {:?}",
                item.kind
            )));
        };
        let mut xattrs = BTreeMap::new();
        for (key, value) in &item.xattrs {
            let bytes = BASE64.decode(value).map_err(|e| {
                ChunkedError::bad_toc(format!("entry {name:?}: xattr {key:?} is not base64: {e}"))
            })?;
            xattrs.insert(key.clone(), bytes);
        }
        let mtime = match &item.modtime {
            Some(text) => parse_rfc3339(text).ok_or_else(|| {
                ChunkedError::bad_toc(format!("entry {name:?}: modtime {text:?} is not RFC 3339"))
            })?,
            None => 0,
        };
        let size = non_negative(item.size, "size", name)?;
        let mode = u32::try_from(item.mode)
            .map_err(|_| ChunkedError::bad_toc(format!("entry {name:?}: mode out of range")))?;
        let mut entry = TocEntry {
            name: item.name.clone(),
            kind,
            size: if kind == EntryKind::Regular { size } else { 0 },
            mode,
            uid: non_negative(item.uid, "uid", name)?,
            gid: non_negative(item.gid, "gid", name)?,
            user_name: item.user_name.clone(),
            group_name: item.group_name.clone(),
            mtime,
            link_name: item.link_name.clone(),
            dev_major: non_negative(item.dev_major, "devMajor", name)?,
            dev_minor: non_negative(item.dev_minor, "devMinor", name)?,
            xattrs,
            digest: parse_digest(&item.digest, name)?,
            offset: non_negative(item.offset, "offset", name)?,
            end_offset: non_negative(item.end_offset, "endOffset", name)?,
            chunks: Vec::new(),
        };
        if entry.has_content() {
            entry.chunks.push(TocChunk {
                offset: entry.offset,
                end_offset: 0,
                chunk_offset: 0,
                chunk_size: non_negative(item.chunk_size, "chunkSize", name)?,
                chunk_digest: parse_digest(&item.chunk_digest, name)?,
            });
        }
        entries.push(entry);
    }
    fill_chunk_bounds(&mut entries, data_end)?;
    Ok(entries)
}

/// Completes every chunk's size and compressed end, and checks the layout: chunks contiguous
/// over each file, compressed ranges increasing, non-overlapping and before `data_end`.
fn fill_chunk_bounds(entries: &mut [TocEntry], data_end: u64) -> Result<()> {
    // Every chunk start, in blob order, to find where a chunk without an end stops.
    let mut starts: Vec<u64> = entries
        .iter()
        .flat_map(|e| e.chunks.iter().map(|c| c.offset))
        .collect();
    starts.sort_unstable();
    starts.dedup();
    for entry in entries.iter_mut() {
        if !entry.has_content() {
            continue;
        }
        let name = entry.name.clone();
        if entry.digest.is_none() {
            return Err(ChunkedError::bad_toc(format!(
                "regular file {name:?} has content but no digest"
            )));
        }
        let count = entry.chunks.len();
        for i in 0..count {
            let next_offset = entry.chunks.get(i + 1).map(|c| c.chunk_offset);
            let size = entry.size;
            let explicit_end = entry.end_offset;
            let chunk = &mut entry.chunks[i];
            let size_to = next_offset.unwrap_or(size);
            if size_to <= chunk.chunk_offset || size_to > size {
                return Err(ChunkedError::bad_toc(format!(
                    "chunks of {name:?} do not cover its {size} bytes in order"
                )));
            }
            let expected = size_to - chunk.chunk_offset;
            if chunk.chunk_size == 0 {
                chunk.chunk_size = expected;
            } else if chunk.chunk_size != expected {
                return Err(ChunkedError::bad_toc(format!(
                    "chunk at {} of {name:?} says {} bytes, the layout gives {expected}",
                    chunk.chunk_offset, chunk.chunk_size
                )));
            }
            if chunk.end_offset == 0 {
                chunk.end_offset = if i + 1 == count && explicit_end != 0 {
                    explicit_end
                } else {
                    let at = starts.partition_point(|&s| s <= chunk.offset);
                    starts.get(at).copied().unwrap_or(data_end)
                };
            }
            if chunk.end_offset <= chunk.offset || chunk.end_offset > data_end {
                return Err(ChunkedError::bad_toc(format!(
                    "chunk at {} of {name:?} has an impossible compressed range {}..{}",
                    chunk.chunk_offset, chunk.offset, chunk.end_offset
                )));
            }
        }
        if entry.chunks.first().map(|c| c.chunk_offset) != Some(0) {
            return Err(ChunkedError::bad_toc(format!(
                "chunks of {name:?} do not start at 0"
            )));
        }
        entry.offset = entry.chunks.first().map_or(0, |c| c.offset);
        entry.end_offset = entry.chunks.last().map_or(0, |c| c.end_offset);
    }
    // Compressed ranges must not overlap.
    let mut ranges: Vec<(u64, u64)> = entries
        .iter()
        .flat_map(|e| e.chunks.iter().map(|c| (c.offset, c.end_offset)))
        .collect();
    ranges.sort_unstable();
    for pair in ranges.windows(2) {
        if pair[1].0 < pair[0].1 {
            return Err(ChunkedError::bad_toc(format!(
                "compressed ranges {}..{} and {}..{} overlap",
                pair[0].0, pair[0].1, pair[1].0, pair[1].1
            )));
        }
    }
    Ok(())
}

/// The JSON entries hoist writes for one tar entry (a regular file is followed by one `chunk`
/// entry per further chunk).
pub(crate) fn raw_entries(entry: &TocEntry, with_end_offsets: bool) -> Vec<RawEntry> {
    let mut first = RawEntry {
        kind: entry.kind.toc_name().to_owned(),
        name: entry.name.clone(),
        link_name: entry.link_name.clone(),
        mode: i64::from(entry.mode),
        size: to_i64(entry.size),
        uid: to_i64(entry.uid),
        gid: to_i64(entry.gid),
        user_name: entry.user_name.clone(),
        group_name: entry.group_name.clone(),
        modtime: Some(format_rfc3339(entry.mtime)),
        dev_major: to_i64(entry.dev_major),
        dev_minor: to_i64(entry.dev_minor),
        xattrs: entry
            .xattrs
            .iter()
            .map(|(k, v)| (k.clone(), BASE64.encode(v)))
            .collect(),
        digest: entry
            .digest
            .as_ref()
            .map(|d| d.to_string())
            .unwrap_or_default(),
        ..RawEntry::default()
    };
    let mut out = Vec::with_capacity(entry.chunks.len().max(1));
    for (i, chunk) in entry.chunks.iter().enumerate() {
        let multi = entry.chunks.len() > 1;
        if i == 0 {
            first.offset = to_i64(chunk.offset);
            if with_end_offsets {
                first.end_offset = to_i64(entry.end_offset);
            }
            if multi {
                first.chunk_size = to_i64(chunk.chunk_size);
                first.chunk_digest = digest_text(&chunk.chunk_digest);
            }
            continue;
        }
        out.push(RawEntry {
            kind: "chunk".to_owned(),
            name: entry.name.clone(),
            offset: to_i64(chunk.offset),
            end_offset: if with_end_offsets {
                to_i64(chunk.end_offset)
            } else {
                0
            },
            chunk_offset: to_i64(chunk.chunk_offset),
            chunk_size: to_i64(chunk.chunk_size),
            chunk_digest: digest_text(&chunk.chunk_digest),
            ..RawEntry::default()
        });
    }
    out.insert(0, first);
    out
}

fn digest_text(digest: &Option<Digest>) -> String {
    digest.as_ref().map(|d| d.to_string()).unwrap_or_default()
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = month;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day count since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Formats seconds since the epoch as `YYYY-MM-DDTHH:MM:SSZ`.
pub(crate) fn format_rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Parses an RFC 3339 timestamp into whole seconds since the epoch (fractions dropped).
pub(crate) fn parse_rfc3339(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        let s = text.get(range)?;
        if !s.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (hour, min, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || min > 59 || sec > 60 {
        return None;
    }
    let mut rest = &text[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        rest = &frac[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ => {
            let rb = rest.as_bytes();
            if rb.len() != 6 || !matches!(rb[0], b'+' | b'-') || rb[3] != b':' {
                return None;
            }
            let h: i64 = rest.get(1..3)?.parse().ok()?;
            let m: i64 = rest.get(4..6)?.parse().ok()?;
            let v = h * 3600 + m * 60;
            if rb[0] == b'+' { v } else { -v }
        }
    };
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3600 + min * 60 + sec - offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trips_and_accepts_fractions_and_offsets() {
        for secs in [0, 1, 86_399, 951_782_400, 1_795_000_000, -86_401] {
            assert_eq!(parse_rfc3339(&format_rfc3339(secs)), Some(secs));
        }
        assert_eq!(parse_rfc3339("1970-01-01T00:00:01.5Z"), Some(1));
        assert_eq!(parse_rfc3339("1970-01-01T01:00:00+01:00"), Some(0));
        assert_eq!(parse_rfc3339("0001-01-01T00:00:00Z"), Some(-62_135_596_800));
        assert_eq!(parse_rfc3339("1970-13-01T00:00:00Z"), None);
        assert_eq!(parse_rfc3339("garbage"), None);
    }
}
