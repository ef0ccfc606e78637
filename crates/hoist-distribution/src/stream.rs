//! The blocking side of the pull pipeline: a `Read` over the chunks a download hands through a
//! bounded channel, decompression by media type, and extraction of a layer from a stored blob.

use std::io::{self, Read};

use bytes::{Buf, Bytes};
use hoist_store::layer::{LayerError, LayerStore, StageOptions, StagedLayer};
use hoist_store::{Digest, Store};
use tokio::sync::mpsc;

use crate::error::{Error, Result};
use crate::manifest::Compression;

/// Chunks in flight between the download and each consumer (ingest, extraction): with network
/// chunks of at most about 400 KiB (the HTTP client's largest read), this bounds the memory a
/// layer download holds to about 3 MiB. The extraction is the slower consumer of an unpacking
/// pull, so its channel is always full: a deeper queue buys no speed, only memory (16 chunks
/// per channel held about 30 MiB with three layers in flight).
pub(crate) const CHANNEL_CHUNKS: usize = 4;

/// What a download hands a consumer.
#[derive(Debug)]
pub(crate) enum Feed {
    /// The next bytes of the blob.
    Data(Bytes),
    /// The blob is complete.
    End,
}

/// The error a [`ChannelReader`] returns when the download went away without finishing the blob
/// (it was cancelled, or it is being restarted).
#[derive(Debug, thiserror::Error)]
#[error("the layer stream was cut off before its end")]
pub(crate) struct StreamAborted;

/// Whether an I/O error is (or wraps) a [`StreamAborted`].
pub(crate) fn is_aborted(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<StreamAborted>())
}

/// A blocking reader over the chunks of a channel. Ends at [`Feed::End`]; a channel closed
/// without it is an error ([`StreamAborted`]), never a silent end of file.
pub(crate) struct ChannelReader {
    rx: mpsc::Receiver<Feed>,
    current: Bytes,
    done: bool,
}

impl ChannelReader {
    pub(crate) fn new(rx: mpsc::Receiver<Feed>) -> ChannelReader {
        ChannelReader {
            rx,
            current: Bytes::new(),
            done: false,
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if !self.current.is_empty() {
                let n = buf.len().min(self.current.len());
                buf[..n].copy_from_slice(&self.current[..n]);
                self.current.advance(n);
                return Ok(n);
            }
            if self.done {
                return Ok(0);
            }
            match self.rx.blocking_recv() {
                Some(Feed::Data(b)) => self.current = b,
                Some(Feed::End) => self.done = true,
                None => return Err(io::Error::other(StreamAborted)),
            }
        }
    }
}

/// `reader` decompressed according to `compression`.
pub(crate) fn decompress<'a>(
    reader: impl Read + Send + 'a,
    compression: Compression,
) -> io::Result<Box<dyn Read + Send + 'a>> {
    Ok(match compression {
        Compression::None => Box::new(reader),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(reader)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(reader)?),
    })
}

/// Stage options for a layer that may unpack to at most `max_bytes` (see
/// [`crate::PullConfig::max_layer_bytes`]).
pub(crate) fn stage_options(expected: Option<&Digest>, max_bytes: u64) -> StageOptions {
    let options = StageOptions::default().max_bytes(max_bytes);
    match expected {
        Some(d) => options.expect_diff_id(d.clone()),
        None => options,
    }
}

/// Extracts the stored blob `blob` into the layer store's staging area (blocking). The blob is
/// re-verified against its digest as it is read.
pub(crate) fn stage_from_blob(
    store: &Store,
    layers: &LayerStore,
    blob: &Digest,
    compression: Compression,
    expected_diff_id: Option<&Digest>,
    max_bytes: u64,
) -> Result<StagedLayer> {
    let reader = store
        .content()
        .reader(blob)
        .map_err(|e| Error::store(format!("opening blob {blob}"), e))?;
    let layer_err = |source| Error::Layer {
        blob: blob.clone(),
        source,
    };
    let decoded =
        decompress(reader, compression).map_err(|e| layer_err(LayerError::Source { source: e }))?;
    layers
        .stage(decoded, &stage_options(expected_diff_id, max_bytes))
        .map_err(layer_err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn feed(chunks: Vec<Feed>) -> mpsc::Receiver<Feed> {
        let (tx, rx) = mpsc::channel(chunks.len() + 1);
        for c in chunks {
            tx.try_send(c).unwrap();
        }
        rx
    }

    #[test]
    fn channel_reader_concatenates_chunks_until_the_end_marker() {
        let rx = feed(vec![
            Feed::Data(Bytes::from_static(b"hel")),
            Feed::Data(Bytes::new()),
            Feed::Data(Bytes::from_static(b"lo")),
            Feed::End,
        ]);
        let mut out = String::new();
        ChannelReader::new(rx).read_to_string(&mut out).unwrap();
        assert_eq!(out, "hello");
    }

    #[test]
    fn a_channel_closed_without_end_is_an_error_not_eof() {
        let rx = feed(vec![Feed::Data(Bytes::from_static(b"partial"))]);
        let mut out = Vec::new();
        let err = ChannelReader::new(rx).read_to_end(&mut out).unwrap_err();
        assert!(is_aborted(&err), "{err}");
        assert_eq!(out, b"partial");
    }

    #[test]
    fn decompression_follows_the_compression() {
        let data = b"layer bytes".repeat(100);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&data).unwrap();
        let gz = gz.finish().unwrap();
        let zst = zstd::encode_all(&data[..], 3).unwrap();
        for (bytes, c) in [
            (gz, Compression::Gzip),
            (zst, Compression::Zstd),
            (data.clone(), Compression::None),
        ] {
            let mut out = Vec::new();
            decompress(&bytes[..], c)
                .unwrap()
                .read_to_end(&mut out)
                .unwrap();
            assert_eq!(out, data, "{c:?}");
        }
    }

    #[test]
    fn corrupt_gzip_fails_to_decompress() {
        let mut out = Vec::new();
        let err = decompress(&b"definitely not gzip"[..], Compression::Gzip)
            .unwrap()
            .read_to_end(&mut out)
            .unwrap_err();
        assert!(!is_aborted(&err));
    }
}
