//! Blobs: existence checks, streamed downloads, resumed downloads with closed ranges, and
//! discontiguous chunk reads (`get_blob_at`) over `multipart/byteranges`, parallel single ranges,
//! or a full body sliced locally, as each host's answers teach ([`crate::chunk_strategy`]).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use http::{HeaderValue, Method, StatusCode, header};
use oci_spec::image::Digest;
use tokio::sync::{mpsc, oneshot};

use crate::body::BodyStream;
use crate::chunk_strategy::{self, Answer, ChunkReadOptions, RangeMode, Reaction};
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
        let asked = resume_range(&url, offset, size)?;
        let mut req = self.req(Method::GET, url.clone(), Access::Pull);
        req.headers
            .insert(header::RANGE, range_header_value(&url, asked)?);
        match resumed(self.send(req).await?, asked, size, "registry") {
            Some(resp) => Ok(resp),
            None => self.get_blob(digest).await,
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

    /// Reads discontiguous `chunks` of a blob (sorted, not overlapping, non-empty), adapting to
    /// how the registry serves ranges; see [`Repository::get_blob_at_adaptive`].
    pub async fn get_blob_at(&self, digest: &Digest, chunks: &[Chunk]) -> Result<ChunkStream> {
        self.get_blob_at_adaptive(digest, chunks, ChunkReadOptions::default())
            .await
    }

    /// Reads discontiguous `chunks` of a blob (sorted, not overlapping, non-empty).
    ///
    /// The stream yields `(chunk index, bytes)` pieces: every chunk's bytes, complete and in
    /// order within each chunk, chunks in ascending order. How the ranges are asked for depends
    /// on what this host's earlier answers taught the client ([`RegistryClient::range_mode`]):
    /// * one multi-range request per [`ChunkReadOptions::max_ranges_per_request`] ranges
    ///   (chunks closer than [`ChunkReadOptions::max_gap`] share a range), whose
    ///   `multipart/byteranges` answer is parsed as it streams;
    /// * if a multi-range request is answered with one range that does not cover it, or refused
    ///   (`400`, `416`, `501`), several single-range requests, at most
    ///   [`ChunkReadOptions::parallel_requests`] in flight, consumed in order;
    /// * if a single range is refused, fewer and larger ranges (half as many each time), and in
    ///   the end one full `GET` sliced locally;
    /// * an answer that ignores the ranges (`200`) is the whole blob: it is sliced locally, and
    ///   a host that ignores single ranges too gets full `GET`s from then on.
    ///
    /// What the host needed is remembered for its next reads. Data at the wrong offset is an
    /// error, never a chunk. An error before any chunk is read (a missing blob, say) is this
    /// call's; later ones end the stream.
    ///
    /// [`RegistryClient::range_mode`]: crate::RegistryClient::range_mode
    pub async fn get_blob_at_adaptive(
        &self,
        digest: &Digest,
        chunks: &[Chunk],
        options: ChunkReadOptions,
    ) -> Result<ChunkStream> {
        let url = self.url(&format!("blobs/{digest}"))?;
        let plan = PlanOptions {
            max_gap: options.max_gap,
            max_ranges_per_request: options.max_ranges_per_request.max(1),
        };
        // Validates the chunks before any request.
        range::plan_ranges(chunks, plan).map_err(|source| Error::Range {
            url: crate::client::redact_url(&url),
            source,
        })?;
        let (tx, rx) = mpsc::channel(4);
        let (ready, started) = oneshot::channel();
        let read = AdaptiveRead {
            repo: self.clone(),
            url,
            chunks: chunks.to_vec(),
            options: ChunkReadOptions {
                max_ranges_per_request: plan.max_ranges_per_request,
                parallel_requests: options.parallel_requests.max(1),
                ..options
            },
            tx,
            ready: Some(ready),
        };
        tokio::spawn(read.run());
        match started.await {
            Ok(Err(e)) => Err(e),
            _ => Ok(ChunkStream { rx }),
        }
    }

    /// Reads `chunks` with multi-range requests planned by `options` only, sent one after the
    /// other, without adapting: a registry that ignores ranges (`200`) or coalesces them is
    /// sliced locally, one that refuses them gives [`Error::BadPartialRequest`].
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
                let redacted = crate::client::redact_url(&url);
                let answer = match classify(&resp, &redacted) {
                    Ok(a) => a,
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                };
                let demux = ChunkDemux::new(&chunks, request);
                if !drive(resp, answer, demux, redacted, &tx).await {
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

/// One adaptive chunk read, run as a task feeding a [`ChunkStream`].
struct AdaptiveRead {
    repo: Repository,
    url: url::Url,
    chunks: Vec<Chunk>,
    options: ChunkReadOptions,
    tx: mpsc::Sender<Result<(usize, Bytes)>>,
    /// Told once the first chunk bytes are about to flow (or the read failed before).
    ready: Option<oneshot::Sender<Result<()>>>,
}

/// How a round of requests ended.
enum Round {
    /// Every chunk was delivered, or the read failed (the error has been reported).
    Over,
    /// Chunks from `from` on are still to be read, in `mode` with merge threshold `gap`.
    Again {
        from: usize,
        mode: RangeMode,
        gap: u64,
    },
}

impl AdaptiveRead {
    fn redacted(&self) -> String {
        crate::client::redact_url(&self.url)
    }

    async fn fail(&mut self, e: Error) {
        match self.ready.take() {
            Some(ready) => {
                let _ = ready.send(Err(e));
            }
            None => {
                let _ = self.tx.send(Err(e)).await;
            }
        }
    }

    fn started(&mut self) {
        if let Some(ready) = self.ready.take() {
            let _ = ready.send(Ok(()));
        }
    }

    fn learn(&self, mode: Option<RangeMode>) {
        if let Some(mode) = mode {
            self.repo
                .client
                .learn_range_mode(&self.repo.endpoint.host, mode);
        }
    }

    async fn run(mut self) {
        let mut mode = self.repo.client.range_mode(&self.repo.endpoint.host);
        let mut from = 0;
        let mut gap = self.options.max_gap;
        loop {
            let round = match mode {
                RangeMode::FullBody => self.full_body(from).await,
                RangeMode::MultiRange => {
                    let per_request = self.options.max_ranges_per_request;
                    self.ranges(from, gap, per_request, 1).await
                }
                RangeMode::SingleRanges => {
                    let parallel = self.options.parallel_requests;
                    self.ranges(from, gap, 1, parallel).await
                }
            };
            match round {
                Round::Over => return,
                Round::Again {
                    from: f,
                    mode: m,
                    gap: g,
                } => {
                    tracing::debug!(url = %self.redacted(), mode = ?m, gap = g, "chunk read continues another way");
                    (from, mode, gap) = (f, m, g);
                }
            }
        }
    }

    /// One full `GET`, sliced into the chunks from `from` on.
    async fn full_body(&mut self, from: usize) -> Round {
        let req = self.repo.req(Method::GET, self.url.clone(), Access::Pull);
        let resp = match self.repo.send(req).await {
            Ok(r) => r,
            Err(e) => {
                self.fail(e).await;
                return Round::Over;
            }
        };
        self.started();
        let demux = ChunkDemux::for_chunks(&self.chunks, from..self.chunks.len());
        drive(resp, Classified::whole(), demux, self.redacted(), &self.tx).await;
        Round::Over
    }

    /// Range requests for the chunks from `from` on: `per_request` ranges each (chunks `gap`
    /// apart merged), `parallel` in flight, answers consumed in order.
    async fn ranges(
        &mut self,
        from: usize,
        gap: u64,
        per_request: usize,
        parallel: usize,
    ) -> Round {
        let rest = &self.chunks[from..];
        let plan = PlanOptions {
            max_gap: gap,
            max_ranges_per_request: per_request,
        };
        let requests = match range::plan_ranges(rest, plan) {
            Ok(r) => r,
            Err(source) => {
                let e = Error::Range {
                    url: self.redacted(),
                    source,
                };
                self.fail(e).await;
                return Round::Over;
            }
        };
        let mut ranges_left: usize = requests.iter().map(|r| r.ranges().len()).sum();
        let repo = self.repo.clone();
        let url = self.url.clone();
        let mut answers = futures_util::stream::iter(requests.into_iter().map(|request| {
            let (repo, url) = (repo.clone(), url.clone());
            async move {
                let resp = repo.send_ranges(&url, &request).await;
                (request, resp)
            }
        }))
        .buffered(parallel);
        while let Some((request, resp)) = answers.next().await {
            let chunks = (from + request.chunks().start)..(from + request.chunks().end);
            let answer = match resp {
                Ok(resp) => match classify(&resp, &self.redacted()) {
                    Ok(a) => Ok((a, resp)),
                    Err(e) => {
                        self.fail(e).await;
                        return Round::Over;
                    }
                },
                Err(Error::BadPartialRequest { status, .. }) => Err(status),
                Err(e) => {
                    self.fail(e).await;
                    return Round::Over;
                }
            };
            let asked = request.ranges().len();
            let span = match (request.ranges().first(), request.ranges().last()) {
                (Some(a), Some(b)) => ByteRange::new(a.range.first(), b.range.last()),
                _ => Err(range::RangeError::NoRanges),
            };
            let Ok(span) = span else {
                continue;
            };
            let kind = match &answer {
                Ok((c, _)) => c.answer,
                Err(_) => Answer::Refused,
            };
            let (reaction, learnt) = chunk_strategy::react(asked, span, ranges_left, kind);
            self.learn(learnt);
            if let Err(status) = &answer {
                tracing::debug!(url = %self.redacted(), %status, ranges = asked, "registry refused the ranges");
            }
            match (reaction, answer) {
                (Reaction::Read, Ok((classified, resp))) => {
                    self.started();
                    let demux = ChunkDemux::for_chunks(&self.chunks, chunks);
                    if !drive(resp, classified, demux, self.redacted(), &self.tx).await {
                        return Round::Over;
                    }
                }
                (Reaction::SliceWhole, Ok((classified, resp))) => {
                    self.started();
                    let demux =
                        ChunkDemux::for_chunks(&self.chunks, chunks.start..self.chunks.len());
                    drive(resp, classified, demux, self.redacted(), &self.tx).await;
                    return Round::Over;
                }
                (Reaction::RetrySingleRanges, _) => {
                    return Round::Again {
                        from: chunks.start,
                        mode: RangeMode::SingleRanges,
                        gap,
                    };
                }
                (Reaction::RetryFewerLargerRanges, _) => {
                    let rest = &self.chunks[chunks.start..];
                    return Round::Again {
                        from: chunks.start,
                        mode: RangeMode::SingleRanges,
                        gap: chunk_strategy::coarser_gap(rest, gap, ranges_left / 2),
                    };
                }
                (Reaction::RetryFullBody, _) => {
                    return Round::Again {
                        from: chunks.start,
                        mode: RangeMode::FullBody,
                        gap,
                    };
                }
                // A refusal is never read or sliced (the strategy retries refusals).
                (Reaction::Read | Reaction::SliceWhole, Err(status)) => {
                    let e = Error::BadPartialRequest {
                        url: self.redacted(),
                        status,
                    };
                    self.fail(e).await;
                    return Round::Over;
                }
            }
            ranges_left -= asked;
        }
        self.started();
        Round::Over
    }
}

/// A range answer's shape, with the parser its body needs.
struct Classified {
    answer: Answer,
    parser: Option<MultipartParser>,
    /// The part a non-multipart body holds (the whole blob for a `200`).
    part: Option<ByteRange>,
}

impl Classified {
    /// A whole blob of unknown length (the demultiplexer stops once the chunks are complete).
    fn whole() -> Classified {
        Classified {
            answer: Answer::Whole,
            parser: None,
            part: ByteRange::new(0, u64::MAX - 1).ok(),
        }
    }
}

/// What kind of answer `resp` is to a range request.
fn classify(resp: &Resp, url: &str) -> Result<Classified> {
    if resp.status != StatusCode::PARTIAL_CONTENT {
        let len = content_length(resp).unwrap_or(u64::MAX);
        return Ok(Classified {
            answer: Answer::Whole,
            parser: None,
            part: Some(ByteRange::new(0, len.saturating_sub(1)).map_err(|source| {
                Error::Range {
                    url: url.to_owned(),
                    source,
                }
            })?),
        });
    }
    let ct = header_str(&resp.headers, "content-type").unwrap_or("");
    if ct
        .trim_start()
        .to_ascii_lowercase()
        .starts_with("multipart/byteranges")
    {
        let parser = MultipartParser::from_content_type(ct).map_err(|source| Error::Multipart {
            url: url.to_owned(),
            source,
        })?;
        return Ok(Classified {
            answer: Answer::Multipart,
            parser: Some(parser),
            part: None,
        });
    }
    let range = header_str(&resp.headers, "content-range")
        .ok_or(range::RangeError::NoRanges)
        .and_then(ContentRange::parse)
        .and_then(|cr| cr.range().ok_or(range::RangeError::NoRanges))
        .map_err(|source| Error::Range {
            url: url.to_owned(),
            source,
        })?;
    Ok(Classified {
        answer: Answer::SinglePart(range),
        parser: None,
        part: Some(range),
    })
}

/// Reads one range response into `tx` through the demultiplexer. Returns whether all went well.
async fn drive(
    resp: Resp,
    classified: Classified,
    mut demux: ChunkDemux,
    url: String,
    tx: &mpsc::Sender<Result<(usize, Bytes)>>,
) -> bool {
    let range_err = |source| Error::Range {
        url: url.clone(),
        source,
    };
    let Classified {
        mut parser, part, ..
    } = classified;
    if let Some(part) = part
        && let Err(e) = demux.begin_part(part).map_err(range_err)
    {
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

/// The closed range that resumes a blob of `size` bytes at `offset` (`offset < size`).
pub(crate) fn resume_range(url: &url::Url, offset: u64, size: u64) -> Result<ByteRange> {
    let range_err = |source| Error::Range {
        url: crate::client::redact_url(url),
        source,
    };
    if offset >= size {
        return Err(range_err(range::RangeError::InvalidRange {
            first: offset,
            last: size.saturating_sub(1),
        }));
    }
    ByteRange::new(offset, size - 1).map_err(range_err)
}

/// The `Range` header value asking for `asked`.
pub(crate) fn range_header_value(url: &url::Url, asked: ByteRange) -> Result<HeaderValue> {
    let value = range::range_header(&[asked]).map_err(|source| Error::Range {
        url: crate::client::redact_url(url),
        source,
    })?;
    Ok(crate::client::header_value(&value))
}

/// Whether a `206` carries exactly `asked` of a blob of `size` bytes; if not, what it carries.
pub(crate) fn exact_range(
    resp: &Resp,
    asked: ByteRange,
    size: u64,
) -> std::result::Result<(), String> {
    if resp.status != StatusCode::PARTIAL_CONTENT {
        return Err(format!("status {} instead of 206", resp.status));
    }
    let got = header_str(&resp.headers, "content-range")
        .ok_or(range::RangeError::NoRanges)
        .and_then(ContentRange::parse)
        .and_then(|cr| cr.check(asked, Some(size)))
        .map_err(|e| e.to_string())?;
    if got == asked {
        Ok(())
    } else {
        Err(format!("bytes {got}"))
    }
}

/// The answer to a resume asking for `asked` of a blob of `size` bytes from `source` (named in
/// the log): a `206` with exactly that range resumes; anything but a `206` (range ignored)
/// restarts from byte 0 ([`BlobResponse::start`] 0). A `206` for another range is dropped and
/// `None` returned: the caller asks for the whole blob again, never using bytes at the wrong
/// offset.
pub(crate) fn resumed(
    resp: Resp,
    asked: ByteRange,
    size: u64,
    source: &str,
) -> Option<BlobResponse> {
    if resp.status != StatusCode::PARTIAL_CONTENT {
        tracing::debug!(url = %resp.body.url(), status = %resp.status, "range ignored; restarting from byte 0");
        return Some(BlobResponse {
            start: 0,
            total: content_length(&resp),
            body: resp.body,
        });
    }
    match exact_range(&resp, asked, size) {
        Ok(()) => Some(BlobResponse {
            start: asked.first(),
            total: Some(size),
            body: resp.body,
        }),
        Err(answer) => {
            tracing::warn!(
                url = %resp.body.url(),
                %answer,
                "{source} answered a resume with the wrong range; restarting from byte 0"
            );
            None
        }
    }
}

pub(crate) fn content_length(resp: &Resp) -> Option<u64> {
    header_str(&resp.headers, "content-length").and_then(|s| s.parse().ok())
}

fn header_value(s: &str) -> HeaderValue {
    crate::client::header_value(s)
}
