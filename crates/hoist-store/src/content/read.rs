//! Reading committed blobs: a verifying streaming reader and a random-access reader.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use oci_spec::image::Digest;

use crate::digests::DigestHasher;
use crate::error::{Result, StoreError};

fn open_blob(path: &Path, digest: &Digest) -> Result<(File, u64)> {
    let file = File::open(path).map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            StoreError::BlobNotFound {
                digest: digest.clone(),
            }
        } else {
            StoreError::io("open blob", path, e)
        }
    })?;
    let size = file
        .metadata()
        .map_err(|e| StoreError::io("stat blob", path, e))?
        .len();
    Ok((file, size))
}

/// Streams a blob from start to end, hashing as it goes. At the end of the stream it checks the
/// size and digest; on a mismatch (the file was altered on disk after commit) the final `read`
/// fails with [`io::ErrorKind::InvalidData`] wrapping [`StoreError::DigestMismatch`] instead of
/// reporting a clean end, so a consumer never mistakes damaged content for the real thing.
#[derive(Debug)]
pub struct BlobReader {
    file: File,
    digest: Digest,
    size: u64,
    read: u64,
    hasher: Option<DigestHasher>,
}

impl BlobReader {
    pub(crate) fn open(path: &Path, digest: &Digest) -> Result<BlobReader> {
        let hasher = DigestHasher::for_digest(digest)?;
        let (file, size) = open_blob(path, digest)?;
        Ok(BlobReader {
            file,
            digest: digest.clone(),
            size,
            read: 0,
            hasher: Some(hasher),
        })
    }

    /// The blob's size in bytes (as committed).
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The blob's digest.
    pub fn digest(&self) -> &Digest {
        &self.digest
    }

    fn finish(&mut self) -> io::Result<()> {
        let Some(hasher) = self.hasher.take() else {
            return Ok(()); // already verified
        };
        let actual = hasher.finish();
        if actual != self.digest || self.read != self.size {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                StoreError::DigestMismatch {
                    expected: self.digest.clone(),
                    actual,
                },
            ));
        }
        Ok(())
    }
}

impl Read for BlobReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let n = self.file.read(buf)?;
        if n == 0 {
            self.finish()?;
            return Ok(0);
        }
        self.read += n as u64;
        if let Some(h) = self.hasher.as_mut() {
            h.update(&buf[..n]);
        }
        Ok(n)
    }
}

/// Random access to a blob: `read_at` at any offset, from any number of threads at once (clones
/// share the open file). Chunks are returned as stored; the blob was verified at commit, and
/// [`crate::Store::fsck`] re-verifies stored blobs. Use [`BlobReader`] for a verified stream.
#[derive(Clone, Debug)]
pub struct ReaderAt {
    file: Arc<File>,
    digest: Digest,
    size: u64,
}

impl ReaderAt {
    pub(crate) fn open(path: &Path, digest: &Digest) -> Result<ReaderAt> {
        let (file, size) = open_blob(path, digest)?;
        Ok(ReaderAt {
            file: Arc::new(file),
            digest: digest.clone(),
            size,
        })
    }

    /// The blob's size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The blob's digest.
    pub fn digest(&self) -> &Digest {
        &self.digest
    }

    /// Reads up to `buf.len()` bytes at `offset`; returns 0 at or past the end.
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        if offset >= self.size {
            return Ok(0);
        }
        let room = usize::try_from(self.size - offset).unwrap_or(usize::MAX);
        let want = buf.len().min(room);
        self.file.read_at(&mut buf[..want], offset)
    }

    /// Fills `buf` from `offset`, failing with [`io::ErrorKind::UnexpectedEof`] past the end.
    pub fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let end = offset.checked_add(buf.len() as u64);
        if end.is_none_or(|e| e > self.size) {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "range {offset}+{} is past the end of blob {} ({} bytes)",
                    buf.len(),
                    self.digest,
                    self.size
                ),
            ));
        }
        self.file.read_exact_at(buf, offset)
    }

    /// A streaming reader over `len` bytes from `offset` (clamped to the blob's end): one chunk of
    /// a chunked or partial read.
    pub fn section(&self, offset: u64, len: u64) -> SectionReader {
        let start = offset.min(self.size);
        let end = start.saturating_add(len).min(self.size);
        SectionReader {
            inner: self.clone(),
            pos: start,
            end,
        }
    }
}

/// A [`Read`] over one byte range of a blob (see [`ReaderAt::section`]).
#[derive(Clone, Debug)]
pub struct SectionReader {
    inner: ReaderAt,
    pos: u64,
    end: u64,
}

impl SectionReader {
    /// Bytes not yet read.
    pub fn remaining(&self) -> u64 {
        self.end - self.pos
    }
}

impl Read for SectionReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let room = usize::try_from(self.remaining()).unwrap_or(usize::MAX);
        let want = buf.len().min(room);
        if want == 0 {
            return Ok(0);
        }
        let n = self.inner.file.read_at(&mut buf[..want], self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::temp_content;
    use std::io::{Read, Write};

    #[test]
    fn streaming_reader_returns_the_blob_and_ends_cleanly() {
        let (_d, cs) = temp_content();
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let info = cs.put_bytes(&data, None).unwrap();
        let mut r = cs.reader(&info.digest).unwrap();
        assert_eq!(r.size(), data.len() as u64);
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        assert_eq!(out, data);
    }

    #[test]
    fn streaming_reader_fails_at_the_end_when_the_file_was_altered() {
        let (_d, cs) = temp_content();
        let info = cs.put_bytes(b"abcdefgh", None).unwrap();
        let path = cs.blob_path(&info.digest).unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .write_all(b"Z")
            .unwrap();
        let mut out = Vec::new();
        let err = cs
            .reader(&info.digest)
            .unwrap()
            .read_to_end(&mut out)
            .unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("digest mismatch"), "{err}");
    }

    #[test]
    fn read_at_and_sections_return_the_requested_ranges() {
        let (_d, cs) = temp_content();
        let data: Vec<u8> = (0..=255u8).collect();
        let info = cs.put_bytes(&data, None).unwrap();
        let r = cs.reader_at(&info.digest).unwrap();
        let mut buf = [0u8; 10];
        assert_eq!(r.read_at(&mut buf, 250).unwrap(), 6);
        assert_eq!(&buf[..6], &data[250..]);
        assert_eq!(r.read_at(&mut buf, 256).unwrap(), 0);
        r.read_exact_at(&mut buf, 100).unwrap();
        assert_eq!(&buf, &data[100..110]);
        assert!(r.read_exact_at(&mut buf, 250).is_err());
        let mut chunk = Vec::new();
        r.section(10, 20).read_to_end(&mut chunk).unwrap();
        assert_eq!(chunk, &data[10..30]);
        let mut tail = Vec::new();
        r.section(240, 1000).read_to_end(&mut tail).unwrap();
        assert_eq!(tail, &data[240..]);
    }

    #[test]
    fn reading_a_missing_blob_is_not_found() {
        let (_d, cs) = temp_content();
        let d = crate::digests::sha256_of(b"nothing");
        assert!(cs.reader(&d).unwrap_err().is_not_found());
        assert!(cs.reader_at(&d).unwrap_err().is_not_found());
    }
}
