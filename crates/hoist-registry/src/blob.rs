//! Blobs: existence checks, streamed downloads, resumed downloads with closed ranges, and
//! discontiguous chunk reads (`get_blob_at`) over single ranges, `multipart/byteranges`, or a
//! full body sliced locally.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use http::{HeaderValue, Method, StatusCode, header};
use oci_spec::image::Digest;
use tokio::sync::mpsc;

use crate::body::BodyStream;
use crate::client::{Resp, header_str};
use crate::digest;
use crate::error::{Error, Result};
use crate::multipart::{Event as MultipartEvent, MultipartParser};
use crate::range::{self, ByteRange, Chunk, ChunkDemux, ContentRange, PlanOptions, RangeRequest};
use crate::repository::{Access, Repository};

/// A blob download in progress.
#[derive(Debug)]
pub struct BlobResponse {
    /// The offset of the first byte of [`BlobResponse::body`] in the blob: the offset asked for,
    /// or 0 when the registry ignored the range (the caller must then restart from the beginning).
    pub start: u64,
    /// The blob's total size, when the registry said.
    pub total: Option<u64>,
    /// The bytes, from `start` on.
    pub body: BodyStream,
}

impl Repository {
    /// `HEAD` a blob: its size if it exists, `None` if the registry says it does not.
    pub async fn head_blob(&self, digest: &Digest) -> Result<Option<u64>> {
        let url = self.url(&format!("blobs/{digest}"))?;
        let req = self.req(Method::HEAD, url, Access::Pull);
        match self.send(req).await {
            Ok(resp) => Ok(Some(
                header_str(&resp.headers, "content-length")
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0),
            )),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Streams a whole blob.
    pub async fn get_blob(&self, digest: &Digest) -> Result<BlobResponse> {
        let url = self.url(&format!("blobs/{digest}"))?;
        let resp = self.send(self.req(Method::GET, url, Access::Pull)).await?;
        let total = content_length(&resp);
        Ok(BlobResponse {
            start: 0,
            total,
            body: resp.body,
        })
    }

    /// Streams a blob of `size` bytes from `offset` on, to resume an interrupted download.
    ///
    /// Sends a closed `Range` and requires a `206` whose `Content-Range` matches exactly. A `200`
    /// (range ignored) or a `206` for another range restarts cleanly from byte 0: check
    /// [`BlobResponse::start`]. Never returns bytes at the wrong offset.
    pub async fn get_blob_from(
        &self,
        digest: &Digest,
        offset: u64,
        size: u64,
    ) -> Result<BlobResponse> {
        if offset == 0 {
            return self.get_blob(digest).await;
        }
        let url = self.url(&format!("blobs/{digest}"))?;
        let range_err = |source| Error::Range {
            url: crate::client::redact_url(&url),
            source,
        };
        let asked = if offset < size {
            ByteRange::new(offset, size - 1).map_err(range_err)?
        } else {
            return Err(range_err(range::RangeError::InvalidRange {
                first: offset,
                last: size.saturating_sub(1),
            }));
        };
        let mut req = self.req(Method::GET, url.clone(), Access::Pull);
        req.headers.insert(
            header::RANGE,
            header_value(&range::range_header(&[asked]).map_err(range_err)?),
        );
        let resp = self.send(req).await?;
        if resp.status != StatusCode::PARTIAL_CONTENT {
            tracing::debug!(url = %resp.body.url(), status = %resp.status, "range ignored; restarting from byte 0");
            return Ok(BlobResponse {
                start: 0,
                total: content_length(&resp),
                body: resp.body,
            });
        }
        let checked = header_str(&resp.headers, "content-range")
            .ok_or(range::RangeError::NoRanges)
            .and_then(ContentRange::parse)
            .and_then(|cr| cr.check(asked, Some(size)));
        match checked {
            Ok(got) if got == asked => Ok(BlobResponse {
                start: offset,
                total: Some(size),
                body: resp.body,
            }),
            other => {
                tracing::warn!(
                    url = %resp.body.url(),
                    answer = ?other,
                    "registry answered a resume with the wrong range; restarting from byte 0"
                );
                drop(resp);
                self.get_blob(digest).await
            }
        }
    }

    /// Fetches a small blob (an image config) into memory, verified against `digest`, refusing
    /// more than `limit` bytes.
    pub async fn get_blob_bytes(&self, digest: &Digest, limit: u64) -> Result<Bytes> {
        let resp = self.get_blob(digest).await?;
        let url = resp.body.url().to_owned();
        let bytes = resp.body.read_capped("blob", limit).await?;
        digest::check(digest, &bytes).map_err(|actual| Error::DigestMismatch {
            url,
            expected: digest.to_string(),
            actual,
        })?;
        Ok(bytes)
    }

    /// Reads discontiguous `chunks` of a blob (sorted, not overlapping, non-empty) in one request.
    ///
    /// The stream yields `(chunk index, bytes)` pieces: every chunk's bytes, complete and in order
    /// within each chunk. Chunks closer than the planner's gap are merged into one range; several
    /// ranges go in one multi-range request, whose `multipart/byteranges` answer is parsed as it
    /// streams. A registry that ignores ranges (`200`) is handled by slicing the full body
    /// locally; one that answers a single range covering the request is sliced the same way. A
    /// registry that refuses them (`400`, `416`, `501`) gives [`Error::BadPartialRequest`], for
    /// the caller to fall back to fewer ranges or a full read. Data at the wrong offset is an
    /// error, never a chunk.
    pub async fn get_blob_at(&self, digest: &Digest, chunks: &[Chunk]) -> Result<ChunkStream> {
        self.get_blob_at_with(digest, chunks, PlanOptions::default())
            .await
    }

    /// [`Repository::get_blob_at`] with explicit planning options (gap to merge, ranges per
    /// request). When the plan needs more than one request, they are sent one after the other.
    pub async fn get_blob_at_with(
        &self,
        digest: &Digest,
        chunks: &[Chunk],
        options: PlanOptions,
    ) -> Result<ChunkStream> {
        let url = self.url(&format!("blobs/{digest}"))?;
        let requests = range::plan_ranges(chunks, options).map_err(|source| Error::Range {
            url: crate::client::redact_url(&url),
            source,
        })?;
        let (tx, rx) = mpsc::channel(4);
        // The first request is sent now, so that a refusal is reported by this call.
        let mut first = Some(self.send_ranges(&url, &requests[0]).await?);
        let repo = self.clone();
        let chunks = chunks.to_vec();
        tokio::spawn(async move {
            for request in &requests {
                let resp = match first.take() {
                    Some(r) => r,
                    None => match repo.send_ranges(&url, request).await {
                        Ok(r) => r,
                        Err(e) => {
                            let _ = tx.send(Err(e)).await;
                            return;
                        }
                    },
                };
                let demux = ChunkDemux::new(&chunks, request);
                if !drive(resp, demux, crate::client::redact_url(&url), &tx).await {
                    return;
                }
            }
        });
        Ok(ChunkStream { rx })
    }

    async fn send_ranges(&self, url: &url::Url, request: &RangeRequest) -> Result<Resp> {
        let mut req = self.req(Method::GET, url.clone(), Access::Pull);
        req.headers
            .insert(header::RANGE, header_value(&request.header()));
        self.send(req).await.map_err(|e| match e.status() {
            Some(
                s @ (StatusCode::BAD_REQUEST
                | StatusCode::RANGE_NOT_SATISFIABLE
                | StatusCode::NOT_IMPLEMENTED),
            ) => Error::BadPartialRequest {
                url: crate::client::redact_url(url),
                status: s,
            },
            _ => e,
        })
    }
}

/// The pieces of a [`Repository::get_blob_at`] read: `(chunk index, bytes)`.
#[derive(Debug)]
pub struct ChunkStream {
    rx: mpsc::Receiver<Result<(usize, Bytes)>>,
}

impl Stream for ChunkStream {
    type Item = Result<(usize, Bytes)>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

/// Reads one range response into `tx` through the demultiplexer. Returns whether all went well.
async fn drive(
    resp: Resp,
    mut demux: ChunkDemux,
    url: String,
    tx: &mpsc::Sender<Result<(usize, Bytes)>>,
) -> bool {
    let range_err = |source| Error::Range {
        url: url.clone(),
        source,
    };
    let mut parser = None;
    let begin = if resp.status == StatusCode::PARTIAL_CONTENT {
        let ct = header_str(&resp.headers, "content-type").unwrap_or("");
        if ct
            .trim_start()
            .to_ascii_lowercase()
            .starts_with("multipart/byteranges")
        {
            match MultipartParser::from_content_type(ct) {
                Ok(p) => {
                    parser = Some(p);
                    Ok(())
                }
                Err(source) => Err(Error::Multipart {
                    url: url.clone(),
                    source,
                }),
            }
        } else {
            header_str(&resp.headers, "content-range")
                .ok_or(range::RangeError::NoRanges)
                .and_then(ContentRange::parse)
                .and_then(|cr| cr.range().ok_or(range::RangeError::NoRanges))
                .and_then(|r| demux.begin_part(r))
                .map_err(range_err)
        }
    } else {
        // 200: the whole blob, sliced locally.
        let len = content_length(&resp).unwrap_or(u64::MAX);
        ByteRange::new(0, len.saturating_sub(1))
            .and_then(|r| demux.begin_part(r))
            .map_err(range_err)
    };
    if let Err(e) = begin {
        let _ = tx.send(Err(e)).await;
        return false;
    }
    let mut body = resp.body;
    while !demux.is_complete() {
        let Some(next) = body.next().await else { break };
        let data = match next {
            Ok(d) => d,
            Err(e) => {
                let _ = tx.send(Err(e)).await;
                return false;
            }
        };
        let mut out: Vec<(usize, Bytes)> = Vec::new();
        let step: Result<(), Error> = (|| {
            match &mut parser {
                None => {
                    for piece in demux.data(&data).map_err(range_err)? {
                        out.push((piece.chunk, data.slice_ref(piece.data)));
                    }
                }
                Some(p) => {
                    for ev in p.feed(&data).map_err(|source| Error::Multipart {
                        url: url.clone(),
                        source,
                    })? {
                        match ev {
                            MultipartEvent::PartStart(part) => {
                                demux.begin_part(part.range).map_err(range_err)?
                            }
                            MultipartEvent::Data(d) => {
                                for piece in demux.data(d).map_err(range_err)? {
                                    out.push((piece.chunk, data.slice_ref(piece.data)));
                                }
                            }
                            MultipartEvent::PartEnd => demux.end_part().map_err(range_err)?,
                            MultipartEvent::Done => {}
                        }
                    }
                }
            }
            Ok(())
        })();
        if let Err(e) = step {
            let _ = tx.send(Err(e)).await;
            return false;
        }
        for item in out {
            if tx.send(Ok(item)).await.is_err() {
                return false;
            }
        }
    }
    if !demux.is_complete() {
        let _ = tx
            .send(Err(Error::InvalidResponse {
                url,
                reason: "the body ended before every requested range arrived".into(),
            }))
            .await;
        return false;
    }
    true
}

fn content_length(resp: &Resp) -> Option<u64> {
    header_str(&resp.headers, "content-length").and_then(|s| s.parse().ok())
}

fn header_value(s: &str) -> HeaderValue {
    crate::client::header_value(s)
}
