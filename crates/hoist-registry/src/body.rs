//! Response bodies: streamed with a stall timeout, or read whole under a size cap.
//!
//! A body that stops moving for longer than the stall timeout ends with [`Error::Stalled`]; it never
//! hangs. Small objects (manifests, tokens, error bodies) are read with [`BodyStream::read_capped`],
//! which refuses to buffer more than the limit set for their kind.

use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use tokio::time::{Instant, Sleep};

use crate::error::{Error, Result, TransportKind};

type Inner = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

/// A response body as a stream of byte chunks, with stall detection.
pub struct BodyStream {
    inner: Inner,
    url: String,
    stall: Duration,
    deadline: Pin<Box<Sleep>>,
    received: u64,
    done: bool,
}

impl std::fmt::Debug for BodyStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BodyStream")
            .field("url", &self.url)
            .field("received", &self.received)
            .finish_non_exhaustive()
    }
}

impl BodyStream {
    pub(crate) fn new(response: reqwest::Response, url: String, stall: Duration) -> BodyStream {
        BodyStream {
            inner: Box::pin(response.bytes_stream()),
            url,
            stall,
            deadline: Box::pin(tokio::time::sleep(stall)),
            received: 0,
            done: false,
        }
    }

    /// Starts the stall clock afresh: for a body opened ahead of time and read only now.
    pub(crate) fn restart_stall_timer(&mut self) {
        let next = Instant::now() + self.stall;
        self.deadline.as_mut().reset(next);
    }

    /// Bytes received so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// The URL this body comes from (for error messages).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Reads the whole body into memory, failing with [`Error::TooLarge`] past `limit` bytes.
    /// `what` names the object in the error ("manifest", "token response").
    pub async fn read_capped(mut self, what: &'static str, limit: u64) -> Result<Bytes> {
        use futures_util::StreamExt;
        let mut buf = BytesMut::new();
        while let Some(chunk) = self.next().await {
            let chunk = chunk?;
            if buf.len() as u64 + chunk.len() as u64 > limit {
                return Err(Error::TooLarge {
                    what,
                    url: self.url.clone(),
                    limit,
                });
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(buf.freeze())
    }

    /// Reads and discards the rest of the body (so the connection can be reused), up to `limit`
    /// bytes; a longer body is dropped instead.
    pub async fn drain(mut self, limit: u64) {
        use futures_util::StreamExt;
        while let Some(Ok(_)) = self.next().await {
            if self.received > limit {
                return;
            }
        }
    }
}

impl Stream for BodyStream {
    type Item = Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        match self.inner.as_mut().poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                self.received += chunk.len() as u64;
                let next = Instant::now() + self.stall;
                self.deadline.as_mut().reset(next);
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(e))) => {
                self.done = true;
                let url = self.url.clone();
                Poll::Ready(Some(Err(Error::Transport {
                    method: "GET".into(),
                    url,
                    kind: TransportKind::Body,
                    source: Box::new(e.without_url()),
                })))
            }
            Poll::Ready(None) => {
                self.done = true;
                Poll::Ready(None)
            }
            Poll::Pending => {
                ready!(self.deadline.as_mut().poll(cx));
                self.done = true;
                Poll::Ready(Some(Err(Error::Stalled {
                    url: self.url.clone(),
                    after: self.stall,
                })))
            }
        }
    }
}
