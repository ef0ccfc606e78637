//! Stall detection for whole requests: a request fails when it makes no progress (no request-body
//! bytes taken by the connection, no response headers) for longer than the stall timeout.
//!
//! Response bodies have their own per-chunk guard in [`crate::body`]; the watchdog covers the part
//! before the answer starts, including the upload of a streamed request body.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use tokio::time::Instant;
use url::Url;

use crate::error::{Error, Result};

/// A stream of bytes to upload.
pub type ByteStream = Pin<Box<dyn Stream<Item = std::io::Result<Bytes>> + Send>>;

/// Tracks the last moment a request made progress.
#[derive(Debug, Clone)]
pub(crate) struct Watchdog {
    start: Instant,
    last_ms: Arc<AtomicU64>,
    stall: Duration,
}

impl Watchdog {
    pub fn new(stall: Duration) -> Watchdog {
        Watchdog {
            start: Instant::now(),
            last_ms: Arc::new(AtomicU64::new(0)),
            stall,
        }
    }

    fn touch(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.last_ms.fetch_max(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }

    /// Resolves once the request has made no progress for the stall timeout.
    async fn expired(&self) {
        loop {
            let deadline = self.last() + self.stall;
            tokio::time::sleep_until(deadline).await;
            if self.last() + self.stall <= Instant::now() {
                return;
            }
        }
    }

    /// Runs `fut`, failing with [`Error::Stalled`] if no progress is made for the stall timeout.
    pub async fn guard<T>(&self, url: &Url, fut: impl Future<Output = T>) -> Result<T> {
        tokio::select! {
            out = fut => Ok(out),
            () = self.expired() => Err(Error::Stalled {
                url: crate::client::redact_url(url),
                after: self.stall,
            }),
        }
    }

    /// Wraps a request body so that every chunk the connection takes counts as progress.
    pub fn feed(&self, body: ByteStream) -> ByteStream {
        Box::pin(Fed {
            inner: body,
            dog: self.clone(),
        })
    }
}

struct Fed {
    inner: ByteStream,
    dog: Watchdog,
}

impl Stream for Fed {
    type Item = std::io::Result<Bytes>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let r = self.inner.as_mut().poll_next(cx);
        if let Poll::Ready(Some(Ok(_))) = &r {
            self.dog.touch();
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_request_without_progress_fails_after_the_stall_timeout() {
        let dog = Watchdog::new(Duration::from_secs(5));
        let url = Url::parse("http://h/v2/").unwrap();
        let r = dog.guard(&url, std::future::pending::<()>()).await;
        assert!(matches!(r, Err(Error::Stalled { .. })));
    }

    #[tokio::test(start_paused = true)]
    async fn progress_on_the_body_keeps_the_request_alive() {
        let dog = Watchdog::new(Duration::from_secs(5));
        let url = Url::parse("http://h/v2/").unwrap();
        let body: ByteStream = Box::pin(futures_util::stream::unfold(0u32, |n| async move {
            if n == 5 {
                return None;
            }
            tokio::time::sleep(Duration::from_secs(3)).await;
            Some((Ok(Bytes::from_static(b"x")), n + 1))
        }));
        let mut fed = dog.feed(body);
        let work = async {
            use futures_util::StreamExt;
            let mut n = 0;
            while let Some(Ok(_)) = fed.next().await {
                n += 1;
            }
            n
        };
        // 5 chunks, 3 s apart: 15 s in all, never 5 s without progress.
        assert_eq!(dog.guard(&url, work).await.unwrap(), 5);
    }
}
