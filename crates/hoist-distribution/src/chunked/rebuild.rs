//! Rebuilding a layer's exact tar stream from fetched chunks and local content.

use std::io::{self, Read, Write};

use bytes::Bytes;
use hoist_registry::Chunk;
use hoist_store::Digest;
use hoist_store::digests::DigestHasher;

use super::ChunkedFormat;
use super::error::{ChunkedError, Result};
use super::metadata::{LayerMetadata, Piece};
use super::plan::RebuildPlan;
use super::toc::TocEntry;

/// Content available locally (in other layers), by digest and size.
pub trait LocalContent {
    /// A reader of the content whose digest is `digest` and size `size`, or `None` when it is
    /// not (or no longer) available. What it yields is verified by [`rebuild`].
    fn open(&self, digest: &Digest, size: u64) -> io::Result<Option<Box<dyn Read + Send>>>;
}

/// The fetched bytes, as a forward-only view of the blob.
struct Fetched<'a, I> {
    items: I,
    chunks: &'a [Chunk],
    /// The chunk being received and how many of its bytes have arrived.
    current: Option<(usize, u64)>,
    /// Bytes received and not consumed; `pos` is the blob offset of the first.
    buf: Bytes,
    pos: u64,
    /// The error behind an `io::Error` handed to a decompressor.
    error: Option<ChunkedError>,
}

impl<I: Iterator<Item = io::Result<(usize, Bytes)>>> Fetched<'_, I> {
    fn mismatch(reason: String) -> ChunkedError {
        ChunkedError::FetchMismatch { reason }
    }

    /// Receives the next non-empty piece of bytes; false when there are no more.
    fn fill(&mut self) -> Result<bool> {
        while self.buf.is_empty() {
            let Some(item) = self.items.next() else {
                return Ok(false);
            };
            let (index, bytes) = item.map_err(ChunkedError::Fetch)?;
            let Some(chunk) = self.chunks.get(index) else {
                return Err(Self::mismatch(format!(
                    "chunk index {index} is not in the plan"
                )));
            };
            let received = match self.current {
                Some((cur, got)) if cur == index => got,
                Some((cur, got)) if index == cur + 1 && got == self.chunks[cur].length => 0,
                None if index == 0 => 0,
                _ => {
                    return Err(Self::mismatch(format!(
                        "chunk {index} arrived out of order (after {:?})",
                        self.current
                    )));
                }
            };
            let got = received + bytes.len() as u64;
            if got > chunk.length {
                return Err(Self::mismatch(format!(
                    "chunk {index} has more than its {} bytes",
                    chunk.length
                )));
            }
            self.current = Some((index, got));
            self.pos = chunk.offset + received;
            self.buf = bytes;
        }
        Ok(true)
    }

    /// Discards fetched bytes up to blob offset `offset`.
    fn seek_to(&mut self, offset: u64) -> Result<()> {
        loop {
            if self.buf.is_empty() && !self.fill()? {
                break;
            }
            if self.pos > offset {
                break;
            }
            let end = self.pos + self.buf.len() as u64;
            if offset < end {
                let _ = self.buf.split_to((offset - self.pos) as usize);
                self.pos = offset;
                return Ok(());
            }
            self.pos = end;
            self.buf = Bytes::new();
        }
        Err(Self::mismatch(format!(
            "the bytes at {offset} were not fetched (fetched data is at {})",
            self.pos
        )))
    }
}

/// Reads `remaining` bytes of the blob from the fetched data, from the current position.
struct RangeReader<'f, 'a, I> {
    fetched: &'f mut Fetched<'a, I>,
    remaining: u64,
}

impl<I: Iterator<Item = io::Result<(usize, Bytes)>>> Read for RangeReader<'_, '_, I> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 || out.is_empty() {
            return Ok(0);
        }
        if self.fetched.buf.is_empty() {
            let before = self.fetched.pos;
            match self.fetched.fill() {
                Ok(true) if self.fetched.pos == before => {}
                Ok(_) => {
                    self.fetched.error = Some(Fetched::<I>::mismatch(format!(
                        "the fetched data ends inside the range at {before}"
                    )));
                    return Err(io::Error::other("fetched data does not cover the range"));
                }
                Err(e) => {
                    self.fetched.error = Some(e);
                    return Err(io::Error::other("fetching failed"));
                }
            }
        }
        let n = (self.fetched.buf.len() as u64)
            .min(self.remaining)
            .min(out.len() as u64) as usize;
        out[..n].copy_from_slice(&self.fetched.buf[..n]);
        let _ = self.fetched.buf.split_to(n);
        self.fetched.pos += n as u64;
        self.remaining -= n as u64;
        Ok(n)
    }
}

/// Writes to `out` while hashing.
struct HashingWriter<W> {
    out: W,
    hasher: DigestHasher,
}

impl<W: Write> HashingWriter<W> {
    fn write_all(&mut self, bytes: &[u8]) -> Result<()> {
        self.out.write_all(bytes)?;
        self.hasher.update(bytes);
        Ok(())
    }
}

const BUF: usize = 64 * 1024;

fn content_error(entry: &TocEntry, source_kind: &'static str, reason: String) -> ChunkedError {
    ChunkedError::ContentMismatch {
        name: entry.name.clone(),
        source_kind,
        reason,
    }
}

/// Maps an error from reading through a decompressor over fetched data.
fn fetched_read_error<I>(
    fetched: &mut Fetched<'_, I>,
    entry: Option<&TocEntry>,
    e: io::Error,
) -> ChunkedError {
    if let Some(inner) = fetched.error.take() {
        return inner;
    }
    match entry {
        Some(entry) => content_error(entry, "fetched", format!("does not decompress: {e}")),
        None => ChunkedError::FetchMismatch {
            reason: format!("fetched tar headers do not decompress: {e}"),
        },
    }
}

/// Rebuilds the layer's uncompressed tar stream into `out` and returns its DiffID.
///
/// `fetched` yields the bytes of [`RebuildPlan::fetch`] as `(index into plan.fetch, bytes)`, in
/// plan order; a chunk may arrive in several pieces. Files the plan takes locally are read from
/// `local`. Every file's content, fetched or local, is verified against its TOC digest (and each
/// fetched chunk against its chunk digest) as it streams: wrong bytes are an error naming the
/// file. On any error, discard what was written. The caller must compare the returned DiffID
/// with the image config's before using the layer.
pub fn rebuild(
    meta: &LayerMetadata,
    plan: &RebuildPlan,
    fetched: impl Iterator<Item = io::Result<(usize, Bytes)>>,
    local: &dyn LocalContent,
    out: impl Write,
) -> Result<Digest> {
    if plan.local.len() != meta.entries.len() {
        return Err(ChunkedError::FetchMismatch {
            reason: "the plan was made for other metadata".to_owned(),
        });
    }
    let mut fetched = Fetched {
        items: fetched,
        chunks: &plan.fetch,
        current: None,
        buf: Bytes::new(),
        pos: 0,
        error: None,
    };
    let mut out = HashingWriter {
        out,
        hasher: DigestHasher::sha256(),
    };
    let mut buf = vec![0u8; BUF];
    for piece in &meta.pieces {
        match piece {
            Piece::Inline(bytes) => out.write_all(bytes)?,
            Piece::Raw(range) => {
                fetched.seek_to(range.offset)?;
                let reader = RangeReader {
                    fetched: &mut fetched,
                    remaining: range.length,
                };
                let mut decoder = zstd::stream::read::Decoder::new(reader)?;
                loop {
                    let n = match decoder.read(&mut buf) {
                        Ok(n) => n,
                        Err(e) => {
                            drop(decoder);
                            return Err(fetched_read_error(&mut fetched, None, e));
                        }
                    };
                    if n == 0 {
                        break;
                    }
                    out.write_all(&buf[..n])?;
                }
            }
            Piece::File(i) => {
                let entry = meta
                    .entries
                    .get(*i)
                    .ok_or_else(|| ChunkedError::FetchMismatch {
                        reason: format!("entry {i} is not in the metadata"),
                    })?;
                if plan.local[*i] {
                    copy_local(entry, local, &mut out, &mut buf)?;
                } else {
                    copy_fetched(meta.format, entry, &mut fetched, &mut out, &mut buf)?;
                }
            }
        }
    }
    out.out.flush()?;
    Ok(out.hasher.finish())
}

fn expected_digest(entry: &TocEntry) -> Result<&Digest> {
    entry
        .digest
        .as_ref()
        .ok_or_else(|| ChunkedError::bad_toc(format!("{:?} has no digest", entry.name)))
}

fn copy_local<W: Write>(
    entry: &TocEntry,
    local: &dyn LocalContent,
    out: &mut HashingWriter<W>,
    buf: &mut [u8],
) -> Result<()> {
    let digest = expected_digest(entry)?;
    let local_error = |source: io::Error| ChunkedError::Local {
        name: entry.name.clone(),
        source,
    };
    let Some(mut reader) = local.open(digest, entry.size).map_err(local_error)? else {
        return Err(local_error(io::Error::new(
            io::ErrorKind::NotFound,
            format!("content {digest} is no longer available"),
        )));
    };
    let mut hasher = DigestHasher::for_digest(digest)
        .map_err(|e| ChunkedError::bad_toc(format!("{:?}: {e}", entry.name)))?;
    let mut left = entry.size;
    while left > 0 {
        let want = left.min(buf.len() as u64) as usize;
        let n = reader.read(&mut buf[..want]).map_err(local_error)?;
        if n == 0 {
            return Err(content_error(
                entry,
                "local",
                format!("ends {left} bytes short of {}", entry.size),
            ));
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n])?;
        left -= n as u64;
    }
    let mut extra = [0u8; 1];
    if reader.read(&mut extra).map_err(local_error)? != 0 {
        return Err(content_error(
            entry,
            "local",
            format!("is longer than {} bytes", entry.size),
        ));
    }
    let actual = hasher.finish();
    if &actual != digest {
        return Err(content_error(
            entry,
            "local",
            format!("has digest {actual}, expected {digest}"),
        ));
    }
    Ok(())
}

fn copy_fetched<I: Iterator<Item = io::Result<(usize, Bytes)>>, W: Write>(
    format: ChunkedFormat,
    entry: &TocEntry,
    fetched: &mut Fetched<'_, I>,
    out: &mut HashingWriter<W>,
    buf: &mut [u8],
) -> Result<()> {
    let digest = expected_digest(entry)?;
    let mut file_hasher = DigestHasher::for_digest(digest)
        .map_err(|e| ChunkedError::bad_toc(format!("{:?}: {e}", entry.name)))?;
    for chunk in &entry.chunks {
        fetched.seek_to(chunk.offset)?;
        let reader = RangeReader {
            fetched: &mut *fetched,
            remaining: chunk.end_offset - chunk.offset,
        };
        let mut decoder: Box<dyn Read + '_> = match format {
            ChunkedFormat::ZstdChunked => Box::new(zstd::stream::read::Decoder::new(reader)?),
            ChunkedFormat::Estargz => Box::new(flate2::read::GzDecoder::new(reader)),
        };
        let mut chunk_hasher = match &chunk.chunk_digest {
            Some(d) => Some(
                DigestHasher::for_digest(d)
                    .map_err(|e| ChunkedError::bad_toc(format!("{:?}: {e}", entry.name)))?,
            ),
            None => None,
        };
        let mut left = chunk.chunk_size;
        let mut failure = None;
        while left > 0 {
            let want = left.min(buf.len() as u64) as usize;
            match decoder.read(&mut buf[..want]) {
                Ok(0) => {
                    failure = Some(content_error(
                        entry,
                        "fetched",
                        format!(
                            "chunk at {} decompresses to {} bytes, expected {}",
                            chunk.chunk_offset,
                            chunk.chunk_size - left,
                            chunk.chunk_size
                        ),
                    ));
                    break;
                }
                Ok(n) => {
                    file_hasher.update(&buf[..n]);
                    if let Some(h) = chunk_hasher.as_mut() {
                        h.update(&buf[..n]);
                    }
                    out.write_all(&buf[..n])?;
                    left -= n as u64;
                }
                Err(e) => {
                    failure = Some(ChunkedError::Io(e));
                    break;
                }
            }
        }
        // zstd:chunked frames hold the content alone: nothing may follow it.
        if failure.is_none() && format == ChunkedFormat::ZstdChunked {
            let mut extra = [0u8; 1];
            match decoder.read(&mut extra) {
                Ok(0) => {}
                Ok(_) => {
                    failure = Some(content_error(
                        entry,
                        "fetched",
                        format!("chunk at {} is longer than expected", chunk.chunk_offset),
                    ));
                }
                Err(e) => failure = Some(ChunkedError::Io(e)),
            }
        }
        drop(decoder);
        if let Some(failure) = failure {
            return Err(match failure {
                ChunkedError::Io(e) => fetched_read_error(fetched, Some(entry), e),
                other => other,
            });
        }
        if let (Some(h), Some(expected)) = (chunk_hasher, &chunk.chunk_digest) {
            let actual = h.finish();
            if &actual != expected {
                return Err(content_error(
                    entry,
                    "fetched",
                    format!(
                        "chunk at {} has digest {actual}, expected {expected}",
                        chunk.chunk_offset
                    ),
                ));
            }
        }
    }
    let actual = file_hasher.finish();
    if &actual != digest {
        return Err(content_error(
            entry,
            "fetched",
            format!("has digest {actual}, expected {digest}"),
        ));
    }
    Ok(())
}
