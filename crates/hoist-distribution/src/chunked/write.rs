//! Writing a tar stream as a zstd:chunked or eStargz layer.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};

use flate2::Compression;
use flate2::write::GzEncoder;
use hoist_store::Digest;
use hoist_store::digests::{DigestHasher, sha256_of};

use crate::hashing::{HashingReader, HashingWriter};

use super::error::{ChunkedError, Result};
use super::footer::{MANIFEST_TYPE_CRFS, SKIPPABLE_MAGIC, ZSTD_CHUNKED_MAGIC};
use super::metadata::ESTARGZ_TOC_NAME;
use super::tar::{BLOCK, Next, canonical_header, padding, read_header};
use super::tarsplit::{self, Crc64};
use super::toc::{EntryKind, RawToc, TocChunk, TocEntry, raw_entries};
use super::{
    ChunkedFormat, ESTARGZ_TOC_DIGEST, ESTARGZ_UNCOMPRESSED_SIZE, ZSTD_CHUNKED_MANIFEST_CHECKSUM,
    ZSTD_CHUNKED_MANIFEST_POSITION, ZSTD_CHUNKED_TARSPLIT_POSITION,
};

/// How [`write_chunked`] writes a layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteOptions {
    /// The format.
    pub format: ChunkedFormat,
    /// Compression level (zstd: 1..=19, default 3; gzip: 0..=9, default 6).
    pub level: i32,
    /// Files larger than this are split into chunks of this size, each its own frame, so that
    /// a partial pull can reuse or fetch pieces of them. At least 4 KiB.
    pub chunk_size: u64,
}

impl WriteOptions {
    /// The defaults for `format`: its default level, 4 MiB chunks.
    pub fn new(format: ChunkedFormat) -> Self {
        WriteOptions {
            format,
            level: match format {
                ChunkedFormat::ZstdChunked => 3,
                ChunkedFormat::Estargz => 6,
            },
            chunk_size: 4 << 20,
        }
    }
}

/// A layer [`write_chunked`] wrote: what its descriptor and the image config need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkedLayer {
    /// Digest of the blob written.
    pub digest: Digest,
    /// Its size.
    pub size: u64,
    /// Digest of its uncompressed tar stream (the config's DiffID). For zstd:chunked it is the
    /// input tar's digest; for eStargz that of the canonical tar with the TOC entry.
    pub diff_id: Digest,
    /// The descriptor's media type.
    pub media_type: String,
    /// The descriptor's annotations (TOC position and digest).
    pub annotations: BTreeMap<String, String>,
}

/// Converts the tar stream `tar` into a chunked layer written to `out`.
///
/// zstd:chunked keeps the tar stream byte for byte (its DiffID is the input's digest) and adds a
/// tar-split. eStargz rewrites every header canonically (see the module docs) and appends the
/// `stargz.index.json` entry, so its DiffID differs from the input's. Streams with bounded
/// memory (one chunk of content at a time for eStargz), except for the TOC and tar-split,
/// which are kept until the end.
pub fn write_chunked(
    tar: impl Read,
    out: impl Write,
    options: &WriteOptions,
) -> Result<ChunkedLayer> {
    if options.chunk_size < MIN_CHUNK_SIZE {
        return Err(ChunkedError::unsupported(format!(
            "chunk size {} is below the minimum of {MIN_CHUNK_SIZE} bytes",
            options.chunk_size
        )));
    }
    let mut input = HashingReader::new(tar, DigestHasher::sha256());
    let out = HashingWriter::sha256(out);
    match options.format {
        ChunkedFormat::ZstdChunked => write_zstd_chunked(&mut input, out, options),
        ChunkedFormat::Estargz => write_estargz(&mut input, out, options),
    }
}

/// The smallest chunk size accepted.
const MIN_CHUNK_SIZE: u64 = 4096;
const BUF: usize = 64 * 1024;
/// Chunks up to this size are compressed from memory with a reused context.
const SMALL_CHUNK: u64 = 1 << 20;

/// Reads exactly `buf.len()` bytes of content, or fails naming the entry.
fn read_content(input: &mut impl Read, buf: &mut [u8], name: &str) -> Result<()> {
    input.read_exact(buf).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            ChunkedError::BadTar {
                reason: format!("the tar stream ends inside the content of {name:?}"),
            }
        } else {
            ChunkedError::Io(e)
        }
    })
}

/// Hashers for a file's content.
struct ContentHash {
    file: DigestHasher,
    crc: Crc64,
}

/// Streams one chunk of `len` bytes from `input` into `sink`, returning its digest.
fn copy_chunk(
    input: &mut impl Read,
    sink: &mut impl Write,
    len: u64,
    hash: &mut ContentHash,
    name: &str,
    buf: &mut [u8],
) -> Result<Digest> {
    let mut chunk = DigestHasher::sha256();
    let mut left = len;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        read_content(input, &mut buf[..n], name)?;
        chunk.update(&buf[..n]);
        hash.file.update(&buf[..n]);
        hash.crc.update(&buf[..n]);
        sink.write_all(&buf[..n])?;
        left -= n as u64;
    }
    Ok(chunk.finish())
}

fn skippable_frame(out: &mut impl Write, data: &[u8]) -> Result<()> {
    let len = u32::try_from(data.len()).map_err(|_| ChunkedError::TooLarge {
        what: "metadata frame",
        size: data.len() as u64,
        limit: u64::from(u32::MAX),
    })?;
    out.write_all(&SKIPPABLE_MAGIC)?;
    out.write_all(&len.to_le_bytes())?;
    out.write_all(data)?;
    Ok(())
}

fn write_zstd_chunked<R: Read, W: Write>(
    input: &mut HashingReader<R>,
    mut out: HashingWriter<W>,
    options: &WriteOptions,
) -> Result<ChunkedLayer> {
    let level = options.level;
    let mut frames = zstd::bulk::Compressor::new(level)?;
    frames.include_checksum(true)?;
    let mut entries: Vec<TocEntry> = Vec::new();
    let mut split = tarsplit::Writer::new();
    // Headers and padding not yet compressed; `segment` the same for the tar-split.
    let mut pending: Vec<u8> = Vec::new();
    let mut segment: Vec<u8> = Vec::new();
    let mut small: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; BUF];
    loop {
        match read_header(input)? {
            Next::End(rest) => {
                pending.extend_from_slice(&rest);
                segment.extend_from_slice(&rest);
                split.segment(&segment);
                break;
            }
            Next::Header(header) => {
                pending.extend_from_slice(&header.raw);
                segment.extend_from_slice(&header.raw);
                split.segment(&segment);
                segment.clear();
                let mut entry = header.entry;
                if header.data_size == 0 {
                    split.file(&header.raw_name, 0, None);
                    entries.push(entry);
                    continue;
                }
                out.write_all(&frames.compress(&pending)?)?;
                pending.clear();
                let mut hash = ContentHash {
                    file: DigestHasher::sha256(),
                    crc: Crc64::new(),
                };
                let mut done = 0u64;
                while done < header.data_size {
                    let len = options.chunk_size.min(header.data_size - done);
                    let start = out.count;
                    let digest = if len <= SMALL_CHUNK {
                        // Small chunks: one reused compression context.
                        small.clear();
                        copy_chunk(input, &mut small, len, &mut hash, &entry.name, &mut buf)?;
                        out.write_all(&frames.compress(&small)?)?;
                        sha256_of(&small)
                    } else {
                        let mut encoder = zstd::stream::write::Encoder::new(&mut out, level)?;
                        encoder.include_checksum(true)?;
                        encoder.set_pledged_src_size(Some(len))?;
                        let digest =
                            copy_chunk(input, &mut encoder, len, &mut hash, &entry.name, &mut buf)?;
                        encoder.finish()?;
                        digest
                    };
                    entry.chunks.push(TocChunk {
                        offset: start,
                        end_offset: out.count,
                        chunk_offset: done,
                        chunk_size: len,
                        chunk_digest: Some(digest),
                    });
                    done += len;
                }
                entry.digest = Some(hash.file.finish());
                entry.offset = entry.chunks.first().map_or(0, |c| c.offset);
                entry.end_offset = out.count;
                split.file(&header.raw_name, header.data_size, Some(hash.crc.value()));
                let pad = padding(header.data_size);
                pending.resize(pad, 0);
                read_content(input, &mut pending, &entry.name)?;
                segment.extend_from_slice(&pending);
                entries.push(entry);
            }
        }
    }
    if !pending.is_empty() {
        out.write_all(&frames.compress(&pending)?)?;
    }
    let tar_split = split.finish();
    let tar_split_compressed = zstd::bulk::compress(&tar_split, level)?;
    let toc = RawToc {
        version: 1,
        entries: entries.iter().flat_map(|e| raw_entries(e, true)).collect(),
        tar_split_digest: sha256_of(&tar_split_compressed).to_string(),
    };
    let toc_json = serde_json::to_vec(&toc)
        .map_err(|e| ChunkedError::bad_toc(format!("cannot encode: {e}")))?;
    let toc_compressed = zstd::bulk::compress(&toc_json, level)?;

    let toc_offset = out.count + 8;
    skippable_frame(&mut out, &toc_compressed)?;
    let tar_split_offset = out.count + 8;
    skippable_frame(&mut out, &tar_split_compressed)?;
    let mut footer = Vec::with_capacity(64);
    for value in [
        toc_offset,
        toc_compressed.len() as u64,
        toc_json.len() as u64,
        MANIFEST_TYPE_CRFS,
        tar_split_offset,
        tar_split_compressed.len() as u64,
        tar_split.len() as u64,
    ] {
        footer.extend_from_slice(&value.to_le_bytes());
    }
    footer.extend_from_slice(ZSTD_CHUNKED_MAGIC);
    skippable_frame(&mut out, &footer)?;
    out.flush()?;

    let mut annotations = BTreeMap::new();
    annotations.insert(
        ZSTD_CHUNKED_MANIFEST_CHECKSUM.to_owned(),
        sha256_of(&toc_compressed).to_string(),
    );
    annotations.insert(
        ZSTD_CHUNKED_MANIFEST_POSITION.to_owned(),
        format!(
            "{toc_offset}:{}:{}:{MANIFEST_TYPE_CRFS}",
            toc_compressed.len(),
            toc_json.len()
        ),
    );
    annotations.insert(
        ZSTD_CHUNKED_TARSPLIT_POSITION.to_owned(),
        format!(
            "{tar_split_offset}:{}:{}",
            tar_split_compressed.len(),
            tar_split.len()
        ),
    );
    let input_hash = std::mem::replace(&mut input.hasher, DigestHasher::sha256());
    Ok(ChunkedLayer {
        digest: out.hasher.finish(),
        size: out.count,
        diff_id: input_hash.finish(),
        media_type: ChunkedFormat::ZstdChunked.media_type().to_owned(),
        annotations,
    })
}

/// The gzip members of an eStargz blob: one open at a time.
struct Members<W: Write> {
    closed: Option<HashingWriter<W>>,
    open: Option<GzEncoder<HashingWriter<W>>>,
    level: Compression,
    /// Hash and size of everything written uncompressed.
    uncompressed: DigestHasher,
    uncompressed_size: u64,
}

impl<W: Write> Members<W> {
    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        if self.open.is_none() {
            let Some(counter) = self.closed.take() else {
                return Err(ChunkedError::Io(io::Error::other("gzip member state lost")));
            };
            self.open = Some(GzEncoder::new(counter, self.level));
        }
        if let Some(open) = self.open.as_mut() {
            open.write_all(bytes)?;
        }
        self.uncompressed.update(bytes);
        self.uncompressed_size += bytes.len() as u64;
        Ok(())
    }

    /// Ends the open member; returns the offset where the next one starts.
    fn close(&mut self) -> Result<u64> {
        if let Some(open) = self.open.take() {
            self.closed = Some(open.finish()?);
        }
        self.closed
            .as_ref()
            .map(|c| c.count)
            .ok_or_else(|| ChunkedError::Io(io::Error::other("gzip member state lost")))
    }
}

impl<W: Write> Write for Members<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Members::write(self, buf).map_err(io::Error::other)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn write_estargz<R: Read, W: Write>(
    input: &mut HashingReader<R>,
    out: HashingWriter<W>,
    options: &WriteOptions,
) -> Result<ChunkedLayer> {
    let level = Compression::new(u32::try_from(options.level.clamp(0, 9)).unwrap_or(6));
    let mut members = Members {
        closed: Some(out),
        open: None,
        level,
        uncompressed: DigestHasher::sha256(),
        uncompressed_size: 0,
    };
    let mut entries: Vec<TocEntry> = Vec::new();
    let mut buf = vec![0u8; BUF];
    let mut skip = Vec::new();
    while let Next::Header(header) = read_header(input)? {
        let mut entry = header.entry;
        members.write(&canonical_header(&entry))?;
        if header.data_size > 0 {
            let mut hash = ContentHash {
                file: DigestHasher::sha256(),
                crc: Crc64::new(),
            };
            let mut done = 0u64;
            while done < header.data_size {
                let len = options.chunk_size.min(header.data_size - done);
                let start = members.close()?;
                let digest =
                    copy_chunk(input, &mut members, len, &mut hash, &entry.name, &mut buf)?;
                entry.chunks.push(TocChunk {
                    offset: start,
                    end_offset: 0,
                    chunk_offset: done,
                    chunk_size: len,
                    chunk_digest: Some(digest),
                });
                done += len;
            }
            entry.digest = Some(hash.file.finish());
            entry.offset = entry.chunks.first().map_or(0, |c| c.offset);
            let pad = padding(header.data_size);
            members.write(&vec![0u8; pad])?;
            skip.resize(pad, 0);
            read_content(input, &mut skip, &entry.name)?;
        }
        entries.push(entry);
    }
    let toc_offset = members.close()?;
    let toc = RawToc {
        version: 1,
        entries: entries.iter().flat_map(|e| raw_entries(e, false)).collect(),
        tar_split_digest: String::new(),
    };
    let toc_json = serde_json::to_vec(&toc)
        .map_err(|e| ChunkedError::bad_toc(format!("cannot encode: {e}")))?;
    let toc_entry = TocEntry {
        name: ESTARGZ_TOC_NAME.to_owned(),
        kind: EntryKind::Regular,
        size: toc_json.len() as u64,
        mode: 0o644,
        uid: 0,
        gid: 0,
        user_name: String::new(),
        group_name: String::new(),
        mtime: 0,
        link_name: String::new(),
        dev_major: 0,
        dev_minor: 0,
        xattrs: BTreeMap::new(),
        digest: None,
        offset: 0,
        end_offset: 0,
        chunks: Vec::new(),
    };
    members.write(&canonical_header(&toc_entry))?;
    members.write(&toc_json)?;
    members.write(&vec![0u8; padding(toc_json.len() as u64) + 2 * BLOCK])?;
    members.close()?;
    let Members {
        closed,
        uncompressed,
        uncompressed_size,
        ..
    } = members;
    let Some(mut out) = closed else {
        return Err(ChunkedError::Io(io::Error::other("gzip member state lost")));
    };
    out.write_all(&estargz_footer(toc_offset))?;
    out.flush()?;
    let mut annotations = BTreeMap::new();
    annotations.insert(
        ESTARGZ_TOC_DIGEST.to_owned(),
        sha256_of(&toc_json).to_string(),
    );
    annotations.insert(
        ESTARGZ_UNCOMPRESSED_SIZE.to_owned(),
        uncompressed_size.to_string(),
    );
    Ok(ChunkedLayer {
        digest: out.hasher.finish(),
        size: out.count,
        diff_id: uncompressed.finish(),
        media_type: ChunkedFormat::Estargz.media_type().to_owned(),
        annotations,
    })
}

/// The 51-byte eStargz footer: an empty gzip member whose extra field points at the TOC.
pub(crate) fn estargz_footer(toc_offset: u64) -> Vec<u8> {
    let mut footer = vec![
        0x1f, 0x8b, 8, 0x04, 0, 0, 0, 0, 0, 0xff, 26, 0, b'S', b'G', 22, 0,
    ];
    footer.extend_from_slice(format!("{toc_offset:016x}STARGZ").as_bytes());
    // An empty final stored block, then CRC-32 and size of nothing.
    footer.extend_from_slice(&[0x01, 0x00, 0x00, 0xff, 0xff]);
    footer.extend_from_slice(&[0; 8]);
    footer
}
