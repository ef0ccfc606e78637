//! Byte streams between sources and destinations: verification on the fly, streams over files
//! and blocking readers, and the bridge that feeds an async stream into a blocking writer.
//!
//! Writes go through [`pump`]: the stream is read on the async side and each chunk handed to a
//! [`BlobSink`] running on a blocking thread (file and store I/O block). The sink commits only
//! when the stream ended cleanly and its own verification passed; on any error, or if the
//! caller stops polling, it is aborted and removes everything it wrote.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use hoist_registry::ByteStream;
use hoist_registry::digest::Hasher;
use oci_spec::image::Digest;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::{mpsc, oneshot};
use tokio_util::io::ReaderStream;

use super::error::{Error, Result};
use super::{BlobChunk, ChunkStream};

/// Size of the pieces streams read from files.
const READ_CHUNK: usize = 64 << 10;

/// Runs blocking work (file or store I/O) on a blocking thread.
pub(crate) async fn blocking<T, F>(what: &'static str, work: F) -> Result<T>
where
    F: FnOnce() -> Result<T> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(work).await.unwrap_or_else(|e| {
        Err(Error::Io {
            action: what,
            path: PathBuf::new(),
            source: io::Error::other(format!("worker thread failed: {e}")),
        })
    })
}

/// A hasher for `digest`'s algorithm.
pub(crate) fn hasher_for(digest: &Digest) -> Result<Hasher> {
    Hasher::new(digest.algorithm()).ok_or_else(|| Error::UnsupportedDigest {
        digest: digest.to_string(),
    })
}

/// The digest of `data` with `like`'s algorithm.
pub(crate) fn digest_like(like: &Digest, data: &[u8]) -> Result<String> {
    let mut h = hasher_for(like)?;
    h.update(data);
    Ok(h.finish())
}

/// Checks that `data` has digest `expected`.
pub(crate) fn verify_bytes(what: &str, expected: &Digest, data: &[u8]) -> Result<()> {
    let actual = digest_like(expected, data)?;
    if actual != expected.as_ref() {
        return Err(Error::DigestMismatch {
            what: what.to_owned(),
            expected: expected.to_string(),
            actual,
        });
    }
    Ok(())
}

/// Checks content against an expected digest and size as it passes.
pub(crate) struct Verifier {
    what: String,
    expected: Digest,
    size: u64,
    seen: u64,
    hasher: Hasher,
}

impl Verifier {
    /// A verifier for blob `digest` of `size` bytes; `what` names it in errors.
    pub fn new(what: impl Into<String>, digest: &Digest, size: u64) -> Result<Verifier> {
        Ok(Verifier {
            what: what.into(),
            expected: digest.clone(),
            size,
            seen: 0,
            hasher: hasher_for(digest)?,
        })
    }

    /// Feeds bytes; fails as soon as they exceed the expected size.
    pub fn update(&mut self, data: &[u8]) -> Result<()> {
        self.seen += data.len() as u64;
        if self.seen > self.size {
            return Err(self.size_error());
        }
        self.hasher.update(data);
        Ok(())
    }

    /// The size the content must have.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The digest the content must have.
    pub fn expected(&self) -> &Digest {
        &self.expected
    }

    fn size_error(&self) -> Error {
        Error::SizeMismatch {
            what: self.what.clone(),
            expected: self.size,
            actual: self.seen,
        }
    }

    /// Checks the size and digest of everything fed.
    pub fn finish(self) -> Result<()> {
        if self.seen != self.size {
            return Err(self.size_error());
        }
        let actual = self.hasher.finish();
        if actual != self.expected.as_ref() {
            return Err(Error::DigestMismatch {
                what: self.what,
                expected: self.expected.to_string(),
                actual,
            });
        }
        Ok(())
    }
}

/// Blobs from this size on are verified by a [`ParallelVerifier`].
pub(crate) const PARALLEL_FROM: u64 = 4 << 20;

/// Chunks queued for a [`ParallelVerifier`]'s thread.
const VERIFY_QUEUE: usize = 4;

/// A [`Verifier`] running on a thread of its own, so that hashing a blob overlaps writing it: on
/// a large blob the hash (about 1 GB/s) and the copy into the page cache each cost about as much
/// as the other, and one thread doing both takes their sum.
pub(crate) struct ParallelVerifier {
    tx: Option<std::sync::mpsc::SyncSender<Bytes>>,
    handle: Option<std::thread::JoinHandle<Result<Verifier>>>,
}

impl ParallelVerifier {
    /// Starts the thread; without one, the caller should verify inline.
    pub fn spawn(verifier: Verifier) -> io::Result<ParallelVerifier> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Bytes>(VERIFY_QUEUE);
        let handle = std::thread::Builder::new()
            .name("hoist-verify".into())
            .spawn(move || {
                let mut verifier = verifier;
                for chunk in rx {
                    // The first error ends the thread; the sender then sees it at once.
                    verifier.update(&chunk)?;
                }
                Ok(verifier)
            })?;
        Ok(ParallelVerifier {
            tx: Some(tx),
            handle: Some(handle),
        })
    }

    fn join(&mut self) -> Result<Verifier> {
        self.tx = None;
        match self.handle.take().map(std::thread::JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) | None => Err(Error::Stream {
                digest: String::new(),
                source: io::Error::other("the blob verification thread failed"),
            }),
        }
    }

    /// Feeds bytes; fails once the verifier has failed (too many bytes).
    pub fn update(&mut self, data: Bytes) -> Result<()> {
        let sent = match &self.tx {
            Some(tx) => tx.send(data).is_ok(),
            None => false,
        };
        if sent {
            return Ok(());
        }
        // The thread has stopped: it says why.
        match self.join() {
            Err(e) => Err(e),
            Ok(v) => Err(v.size_error()),
        }
    }

    /// Waits for every byte fed to be hashed, then checks size and digest.
    pub fn finish(mut self) -> Result<()> {
        self.join()?.finish()
    }
}

impl Drop for ParallelVerifier {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// A writer fed from a blocking thread by [`pump`].
pub(crate) trait BlobSink: Send + 'static {
    /// What a successful write yields.
    type Output: Send + 'static;

    /// Takes the next bytes.
    fn write(&mut self, data: &[u8]) -> Result<()>;

    /// Takes the next bytes as a shared buffer ([`pump`] calls this): a sink that hands them to
    /// another thread keeps them without a copy.
    fn write_bytes(&mut self, data: Bytes) -> Result<()> {
        self.write(&data)
    }

    /// The stream ended cleanly: verify and publish. On failure it must remove what it wrote.
    fn finish(self) -> Result<Self::Output>;

    /// Something failed: remove everything written.
    fn abort(self);
}

/// Feeds `stream` into `sink` (on a blocking thread) and finishes it when the stream ends
/// cleanly. A stream error, a sink error, or this future being dropped aborts the sink.
/// `digest` names the blob in errors.
pub(crate) async fn pump<S: BlobSink>(
    mut stream: ByteStream,
    sink: S,
    digest: &Digest,
) -> Result<S::Output> {
    let (tx, mut rx) = mpsc::channel::<Bytes>(16);
    let (end_tx, end_rx) = oneshot::channel::<()>();
    let abandoned = digest.to_string();
    let worker = tokio::task::spawn_blocking(move || {
        let mut sink = sink;
        while let Some(chunk) = rx.blocking_recv() {
            if let Err(e) = sink.write_bytes(chunk) {
                sink.abort();
                return Err(e);
            }
        }
        match end_rx.blocking_recv() {
            Ok(()) => sink.finish(),
            Err(_) => {
                sink.abort();
                Err(Error::Stream {
                    digest: abandoned,
                    source: io::Error::new(io::ErrorKind::UnexpectedEof, "blob write abandoned"),
                })
            }
        }
    });
    let mut stream_error = None;
    let mut sink_gone = false;
    while let Some(item) = stream.next().await {
        match item {
            Ok(chunk) if chunk.is_empty() => {}
            Ok(chunk) => {
                if tx.send(chunk).await.is_err() {
                    sink_gone = true;
                    break;
                }
            }
            Err(e) => {
                stream_error = Some(e);
                break;
            }
        }
    }
    drop(stream);
    if stream_error.is_none() && !sink_gone {
        let _ = end_tx.send(());
    } else {
        drop(end_tx);
    }
    drop(tx);
    let outcome = worker.await.unwrap_or_else(|join| {
        Err(Error::Stream {
            digest: digest.to_string(),
            source: io::Error::other(format!("blob writer failed: {join}")),
        })
    });
    match stream_error {
        Some(source) => Err(Error::Stream {
            digest: digest.to_string(),
            source,
        }),
        None => outcome,
    }
}

/// Streams `len` bytes of the file at `path` from `offset`.
pub(crate) async fn file_section_stream(path: &Path, offset: u64, len: u64) -> Result<ByteStream> {
    let mut file = tokio::fs::File::open(path)
        .await
        .map_err(|e| Error::io("open", path, e))?;
    if offset > 0 {
        file.seek(io::SeekFrom::Start(offset))
            .await
            .map_err(|e| Error::io("seek in", path, e))?;
    }
    Ok(Box::pin(ReaderStream::with_capacity(
        file.take(len),
        READ_CHUNK,
    )))
}

/// Streams a blocking reader, read on a blocking thread.
pub(crate) fn blocking_reader_stream<R: Read + Send + 'static>(mut reader: R) -> ByteStream {
    let (tx, mut rx) = mpsc::channel::<io::Result<Bytes>>(8);
    tokio::task::spawn_blocking(move || {
        loop {
            let mut buf = BytesMut::zeroed(READ_CHUNK);
            match reader.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    buf.truncate(n);
                    if tx.blocking_send(Ok(buf.freeze())).is_err() {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            }
        }
    });
    Box::pin(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)))
}

/// Positional reads, from a file or a store blob.
pub(crate) trait ReadAt: Send + 'static {
    /// Reads up to `buf.len()` bytes at `offset`; 0 at or past the end.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
}

impl ReadAt for File {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        FileExt::read_at(self, buf, offset)
    }
}

impl ReadAt for hoist_store::ReaderAt {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        hoist_store::ReaderAt::read_at(self, buf, offset)
    }
}

/// Serves `chunks` of a blob (sorted, not overlapping) from `file`, read on a blocking thread;
/// `path` names it in errors. Chunks past the end are an error, never short data.
pub(crate) fn file_chunk_stream<R: ReadAt>(
    file: R,
    path: PathBuf,
    chunks: Vec<BlobChunk>,
) -> ChunkStream {
    let (tx, mut rx) = mpsc::channel::<Result<(usize, Bytes)>>(8);
    tokio::task::spawn_blocking(move || {
        for (index, chunk) in chunks.iter().enumerate() {
            let mut done = 0u64;
            while done < chunk.length {
                let want = usize::try_from((chunk.length - done).min(READ_CHUNK as u64))
                    .unwrap_or(READ_CHUNK);
                let mut buf = BytesMut::zeroed(want);
                let read = match file.read_at(&mut buf, chunk.offset + done) {
                    Ok(0) => Err(Error::io(
                        "read chunk from",
                        &path,
                        io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            format!(
                                "chunk {}+{} is past the end of the blob",
                                chunk.offset, chunk.length
                            ),
                        ),
                    )),
                    Ok(n) => Ok(n),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => Err(Error::io("read chunk from", &path, e)),
                };
                match read {
                    Ok(n) => {
                        buf.truncate(n);
                        done += n as u64;
                        if tx.blocking_send(Ok((index, buf.freeze()))).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = tx.blocking_send(Err(e));
                        return;
                    }
                }
            }
        }
    });
    Box::pin(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)))
}

/// Checks that chunks are sorted, do not overlap and are not empty.
pub(crate) fn check_chunks(chunks: &[BlobChunk], size: Option<u64>) -> Result<(), String> {
    let mut end = 0u64;
    for (i, c) in chunks.iter().enumerate() {
        if c.length == 0 {
            return Err(format!("chunk {i} is empty"));
        }
        if i > 0 && c.offset < end {
            return Err(format!("chunk {i} overlaps or precedes the previous one"));
        }
        end = c
            .offset
            .checked_add(c.length)
            .ok_or_else(|| format!("chunk {i} overflows"))?;
        if let Some(size) = size
            && end > size
        {
            return Err(format!(
                "chunk {i} ends at {end}, past the blob's {size} bytes"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    fn digest_of(data: &[u8]) -> Digest {
        let mut h = Hasher::sha256();
        h.update(data);
        h.finish().parse().unwrap()
    }

    #[test]
    fn parallel_verifier_accepts_the_right_bytes_only() {
        let data = Bytes::from(vec![7u8; 3 << 20]);
        let d = digest_of(&data);
        let size = data.len() as u64;
        let check = |parts: Vec<Bytes>, size: u64| -> Result<()> {
            let mut v = ParallelVerifier::spawn(Verifier::new("blob", &d, size).unwrap()).unwrap();
            for p in parts {
                v.update(p)?;
            }
            v.finish()
        };
        check(vec![data.slice(..1000), data.slice(1000..)], size).unwrap();
        let mut wrong = data.to_vec();
        wrong[5] ^= 1;
        assert!(matches!(
            check(vec![Bytes::from(wrong)], size),
            Err(Error::DigestMismatch { .. })
        ));
        assert!(matches!(
            check(vec![data.slice(..10)], size),
            Err(Error::SizeMismatch { .. })
        ));
        let too_many: Vec<Bytes> = (0..64).map(|_| data.clone()).collect();
        assert!(matches!(
            check(too_many, size),
            Err(Error::SizeMismatch { .. })
        ));
    }

    #[test]
    fn verifier_accepts_the_right_bytes_only() {
        let d = digest_of(b"hello");
        let mut v = Verifier::new("blob", &d, 5).unwrap();
        v.update(b"hel").unwrap();
        v.update(b"lo").unwrap();
        v.finish().unwrap();

        let mut v = Verifier::new("blob", &d, 5).unwrap();
        v.update(b"hellx").unwrap();
        assert!(matches!(v.finish(), Err(Error::DigestMismatch { .. })));

        let mut v = Verifier::new("blob", &d, 5).unwrap();
        assert!(matches!(
            v.update(b"hello!"),
            Err(Error::SizeMismatch { .. })
        ));

        let mut v = Verifier::new("blob", &d, 5).unwrap();
        v.update(b"hell").unwrap();
        assert!(matches!(v.finish(), Err(Error::SizeMismatch { .. })));
    }

    #[derive(Default)]
    struct Log {
        written: Vec<u8>,
        finished: bool,
        aborted: bool,
    }

    struct RecordingSink(Arc<Mutex<Log>>);

    impl BlobSink for RecordingSink {
        type Output = usize;
        fn write(&mut self, data: &[u8]) -> Result<()> {
            self.0.lock().unwrap().written.extend_from_slice(data);
            Ok(())
        }
        fn finish(self) -> Result<usize> {
            let mut log = self.0.lock().unwrap();
            log.finished = true;
            Ok(log.written.len())
        }
        fn abort(self) {
            self.0.lock().unwrap().aborted = true;
        }
    }

    fn stream_of(items: Vec<io::Result<&'static [u8]>>) -> ByteStream {
        Box::pin(futures_util::stream::iter(
            items
                .into_iter()
                .map(|i| i.map(Bytes::from_static))
                .collect::<Vec<_>>(),
        ))
    }

    #[tokio::test]
    async fn pump_finishes_a_sink_only_after_a_clean_end() {
        let log = Arc::new(Mutex::new(Log::default()));
        let d = digest_of(b"abcdef");
        let n = pump(
            stream_of(vec![Ok(b"abc"), Ok(b""), Ok(b"def")]),
            RecordingSink(log.clone()),
            &d,
        )
        .await
        .unwrap();
        assert_eq!(n, 6);
        let log = log.lock().unwrap();
        assert!(log.finished && !log.aborted);
        assert_eq!(log.written, b"abcdef");
    }

    #[tokio::test]
    async fn pump_aborts_the_sink_when_the_stream_fails() {
        let log = Arc::new(Mutex::new(Log::default()));
        let d = digest_of(b"abcdef");
        let err = pump(
            stream_of(vec![
                Ok(b"abc"),
                Err(io::Error::new(io::ErrorKind::ConnectionReset, "reset")),
                Ok(b"def"),
            ]),
            RecordingSink(log.clone()),
            &d,
        )
        .await
        .unwrap_err();
        assert!(matches!(err, Error::Stream { .. }), "{err}");
        let log = log.lock().unwrap();
        assert!(log.aborted && !log.finished);
        assert_eq!(log.written, b"abc", "nothing after the error was written");
    }

    #[tokio::test]
    async fn chunks_are_served_from_a_file_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blob");
        std::fs::write(&path, b"0123456789").unwrap();
        let chunks = vec![BlobChunk::new(1, 2), BlobChunk::new(5, 4)];
        check_chunks(&chunks, Some(10)).unwrap();
        let mut s = file_chunk_stream(File::open(&path).unwrap(), path.clone(), chunks);
        let mut got = Vec::new();
        while let Some(piece) = s.next().await {
            got.push(piece.unwrap());
        }
        assert_eq!(
            got,
            vec![
                (0, Bytes::from_static(b"12")),
                (1, Bytes::from_static(b"5678"))
            ]
        );

        let mut s = file_chunk_stream(File::open(&path).unwrap(), path, vec![BlobChunk::new(8, 5)]);
        let mut saw_error = false;
        while let Some(piece) = s.next().await {
            saw_error |= piece.is_err();
        }
        assert!(saw_error, "a chunk past the end is an error");
    }

    #[test]
    fn chunk_lists_must_be_sorted_and_inside_the_blob() {
        assert!(check_chunks(&[BlobChunk::new(0, 0)], None).is_err());
        assert!(check_chunks(&[BlobChunk::new(4, 2), BlobChunk::new(5, 1)], None).is_err());
        assert!(check_chunks(&[BlobChunk::new(8, 4)], Some(10)).is_err());
        assert!(check_chunks(&[BlobChunk::new(0, 4), BlobChunk::new(4, 1)], Some(5)).is_ok());
    }
}
