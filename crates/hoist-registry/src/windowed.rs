//! Windowed blob downloads: a large blob streamed in order as consecutive closed `Range`
//! requests, the next one sent shortly before the current one ends.
//!
//! [`Repository::get_blob_windowed`] bounds what a registry can have sent that the process has
//! not consumed yet to `window + lead` bytes ([`crate::window`]), where one plain `GET` lets the
//! registry fill the socket buffers (tens of MiB on Linux) ahead of the reader; a process killed
//! mid-download wastes no more than that. The prefetched window's response is opened (its
//! headers read) but its body is read only once it is the current window: its bytes wait in the
//! kernel, not in memory.
//!
//! Every window must be answered `206` with exactly the asked `Content-Range`. A registry that
//! ignores the first window's range (`200`) is read whole, and remembered as such
//! ([`RangeMode::FullBody`]) so that later downloads from it do not try again. A wrong answer for
//! a later window ends the stream with a retryable error ([`Error::InvalidResponse`]): the caller
//! resumes from what it consumed; no byte at a wrong offset is ever yielded.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::Stream;
use http::{Method, StatusCode, header};
use oci_spec::image::Digest;

use crate::blob::{content_length, exact_range};
use crate::body::BodyStream;
use crate::chunk_strategy::RangeMode;
use crate::client::Resp;
use crate::error::{Error, Result};
use crate::range::{self, ByteRange};
use crate::repository::{Access, Repository};
use crate::window::{WindowConfig, WindowPlan};

/// A windowed blob download in progress (see [`Repository::get_blob_windowed`]).
#[derive(Debug)]
pub struct WindowedBlob {
    /// The offset of the first byte of [`WindowedBlob::body`] in the blob: the offset asked for,
    /// or 0 when the registry ignored the range (the caller then skips what it holds).
    pub start: u64,
    /// The blob's total size, when the registry said.
    pub total: Option<u64>,
    /// The bytes, from `start` on.
    pub body: WindowedBody,
}

impl From<crate::blob::BlobResponse> for WindowedBlob {
    /// One response carrying the bytes (from another source than windows, e.g. a layer's URL).
    fn from(resp: crate::blob::BlobResponse) -> WindowedBlob {
        WindowedBlob {
            start: resp.start,
            total: resp.total,
            body: WindowedBody {
                inner: Inner::Single(resp.body),
            },
        }
    }
}

/// The bytes of a [`WindowedBlob`], in order.
#[derive(Debug)]
pub struct WindowedBody {
    inner: Inner,
}

#[derive(Debug)]
enum Inner {
    /// One response carries everything.
    Single(BodyStream),
    /// Consecutive windows.
    Windows(Box<Windows>),
}

type Pending = Pin<Box<dyn Future<Output = Result<Resp>> + Send>>;

/// One window's request and, once answered, its body.
enum Slot {
    /// Sent, not answered yet.
    Asked(ByteRange, Pending),
    /// Answered and checked: the body and the bytes read from it so far.
    Open(ByteRange, BodyStream, u64),
    /// Answered wrongly: the error to report when this window's turn comes.
    Failed(Option<Error>),
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Slot::Asked(r, _) => write!(f, "Asked({r})"),
            Slot::Open(r, _, got) => write!(f, "Open({r}, {got})"),
            Slot::Failed(e) => write!(f, "Failed({e:?})"),
        }
    }
}

/// The windows of one download: the current one first, then at most one prefetched.
#[derive(Debug)]
struct Windows {
    repo: Repository,
    url: url::Url,
    size: u64,
    plan: WindowPlan,
    slots: VecDeque<Slot>,
    done: bool,
}

impl Repository {
    /// Streams bytes `offset..size` of a blob of `size` bytes in ranged windows of
    /// `config.window` bytes, in order, the next window requested when the current one has at
    /// most `config.lead` bytes left ([`crate::window`]).
    ///
    /// Fewer than two windows' worth of bytes, windows disabled (`window` 0), or a host known
    /// to ignore ranges: one request, as [`Repository::get_blob_from`]. The first window is
    /// requested by this call (its errors are this call's); if the registry ignores its range
    /// (`200`), the whole blob follows with [`WindowedBlob::start`] 0, and the host is remembered
    /// as one that ignores ranges. A later window answered with anything but its exact range
    /// ends the stream with a retryable error.
    pub async fn get_blob_windowed(
        &self,
        digest: &Digest,
        offset: u64,
        size: u64,
        config: WindowConfig,
    ) -> Result<WindowedBlob> {
        let ranges_ignored = self.client.range_mode(&self.endpoint.host) == RangeMode::FullBody;
        let windows = WindowPlan::new(offset, size, config)
            .filter(|_| !ranges_ignored)
            .and_then(|mut plan| plan.next_request().map(|first| (plan, first)));
        let Some((plan, first)) = windows else {
            return Ok(self.get_blob_from(digest, offset, size).await?.into());
        };
        let url = self.url(&format!("blobs/{digest}"))?;
        let resp = send_window(self.clone(), url.clone(), first).await?;
        if resp.status != StatusCode::PARTIAL_CONTENT {
            tracing::debug!(url = %resp.body.url(), status = %resp.status, "range ignored; reading the whole blob");
            self.client
                .learn_range_mode(&self.endpoint.host, RangeMode::FullBody);
            return Ok(WindowedBlob {
                start: 0,
                total: content_length(&resp),
                body: WindowedBody {
                    inner: Inner::Single(resp.body),
                },
            });
        }
        let body = match check_window(resp, first, size) {
            Ok(body) => body,
            Err(e) => {
                tracing::warn!(error = %e, "registry answered the first window with the wrong range; reading the whole blob");
                let resp = self.get_blob(digest).await?;
                return Ok(resp.into());
            }
        };
        let mut windows = Windows {
            repo: self.clone(),
            url,
            size,
            plan,
            slots: VecDeque::from([Slot::Open(first, body, 0)]),
            done: false,
        };
        windows.ask_due();
        Ok(WindowedBlob {
            start: offset,
            total: Some(size),
            body: WindowedBody {
                inner: Inner::Windows(Box::new(windows)),
            },
        })
    }
}

/// Sends the request for one window.
async fn send_window(repo: Repository, url: url::Url, range: ByteRange) -> Result<Resp> {
    let redacted = crate::client::redact_url(&url);
    let header = range::range_header(&[range]).map_err(|source| Error::Range {
        url: redacted,
        source,
    })?;
    let mut req = repo.req(Method::GET, url, Access::Pull);
    req.headers
        .insert(header::RANGE, crate::client::header_value(&header));
    repo.send(req).await
}

/// The body of `resp` if it is a `206` for exactly `asked` of a blob of `size` bytes; otherwise
/// a retryable error saying what came instead.
fn check_window(resp: Resp, asked: ByteRange, size: u64) -> Result<BodyStream> {
    match exact_range(&resp, asked, size) {
        Ok(()) => Ok(resp.body),
        Err(what) => Err(Error::InvalidResponse {
            url: resp.body.url().to_owned(),
            reason: format!(
                "asked for bytes {asked}, the registry answered {what}; a retry resumes from \
                 the bytes already received"
            ),
        }),
    }
}

impl Windows {
    /// Sends the requests the plan says are due.
    fn ask_due(&mut self) {
        while let Some(range) = self.plan.next_request() {
            let fut = send_window(self.repo.clone(), self.url.clone(), range);
            self.slots.push_back(Slot::Asked(range, Box::pin(fut)));
        }
    }

    /// Moves the requests after the current window along (sending, reading headers).
    fn drive_prefetch(&mut self, cx: &mut Context<'_>) {
        let size = self.size;
        for slot in self.slots.iter_mut().skip(1) {
            let _ = poll_asked(slot, size, cx);
        }
    }

    fn fail(&mut self, e: Error) -> Poll<Option<Result<Bytes>>> {
        self.done = true;
        self.slots.clear();
        Poll::Ready(Some(Err(e)))
    }

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes>>> {
        if self.done {
            return Poll::Ready(None);
        }
        self.drive_prefetch(cx);
        loop {
            let size = self.size;
            let Some(front) = self.slots.front_mut() else {
                self.done = true;
                return Poll::Ready(None);
            };
            if poll_asked(front, size, cx).is_pending() {
                return Poll::Pending;
            }
            let (range, body, got) = match front {
                Slot::Open(range, body, got) => (*range, body, got),
                Slot::Failed(e) => {
                    let e = e.take().unwrap_or_else(|| Error::InvalidResponse {
                        url: crate::client::redact_url(&self.url),
                        reason: "a window's answer was unusable".into(),
                    });
                    return self.fail(e);
                }
                Slot::Asked(..) => return Poll::Pending,
            };
            match Pin::new(body).poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => return self.fail(e),
                Poll::Ready(Some(Ok(chunk))) => {
                    let n = chunk.len() as u64;
                    if *got + n > range.len() {
                        let e = Error::InvalidResponse {
                            url: crate::client::redact_url(&self.url),
                            reason: format!(
                                "the answer for bytes {range} carried more bytes than that; a \
                                 retry resumes from the bytes already received"
                            ),
                        };
                        return self.fail(e);
                    }
                    // A complete window stays until its body says it ended, so that the HTTP
                    // stack can put its connection back in the pool for a later window.
                    *got += n;
                    self.plan.consumed(n);
                    self.ask_due();
                    self.drive_prefetch(cx);
                    return Poll::Ready(Some(Ok(chunk)));
                }
                Poll::Ready(None) if *got == range.len() => {
                    self.slots.pop_front();
                    if let Some(Slot::Open(_, next, _)) = self.slots.front_mut() {
                        // Its bytes waited in the kernel: the stall clock starts now.
                        next.restart_stall_timer();
                    }
                }
                Poll::Ready(None) => {
                    let e = Error::InvalidResponse {
                        url: crate::client::redact_url(&self.url),
                        reason: format!(
                            "the answer for bytes {range} ended after {got} bytes; a retry \
                             resumes from the bytes already received"
                        ),
                    };
                    return self.fail(e);
                }
            }
        }
    }
}

/// Polls a sent request; once answered, checks it and opens its body (or records the error).
fn poll_asked(slot: &mut Slot, size: u64, cx: &mut Context<'_>) -> Poll<()> {
    let Slot::Asked(range, fut) = slot else {
        return Poll::Ready(());
    };
    let range = *range;
    match fut.as_mut().poll(cx) {
        Poll::Pending => Poll::Pending,
        Poll::Ready(answer) => {
            *slot = match answer.and_then(|resp| check_window(resp, range, size)) {
                Ok(body) => Slot::Open(range, body, 0),
                Err(e) => Slot::Failed(Some(e)),
            };
            Poll::Ready(())
        }
    }
}

impl Stream for WindowedBody {
    type Item = Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match &mut self.inner {
            Inner::Single(body) => Pin::new(body).poll_next(cx),
            Inner::Windows(w) => w.poll_next(cx),
        }
    }
}

impl WindowedBody {
    /// Whether the bytes come in ranged windows (`false`: one response carries them).
    pub fn is_windowed(&self) -> bool {
        matches!(self.inner, Inner::Windows(_))
    }
}
