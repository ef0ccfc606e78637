//! A reader and a writer that hash and count the bytes passing through them, for code that must
//! know a stream's digest and size once it has been read or written (recompression, the chunked
//! layer writer).

use std::io::{self, Read, Write};

use hoist_store::digests::DigestHasher;

/// Hashes and counts what is read through it.
pub(crate) struct HashingReader<R> {
    /// The reader.
    pub inner: R,
    /// The hash of the bytes read so far.
    pub hasher: DigestHasher,
    /// How many bytes were read.
    pub count: u64,
}

impl<R> HashingReader<R> {
    /// Reads `inner`, hashing with `hasher`.
    pub fn new(inner: R, hasher: DigestHasher) -> Self {
        HashingReader {
            inner,
            hasher,
            count: 0,
        }
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

/// Hashes and counts what is written through it.
pub(crate) struct HashingWriter<W> {
    /// The writer.
    pub inner: W,
    /// The hash of the bytes written so far.
    pub hasher: DigestHasher,
    /// How many bytes were written.
    pub count: u64,
}

impl<W> HashingWriter<W> {
    /// Writes to `inner`, hashing with sha256.
    pub fn sha256(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: DigestHasher::sha256(),
            count: 0,
        }
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
