//! Request bodies passed to the upstream, counted into the request log as they stream.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};

use super::log::{EntryHandle, lock};
use crate::upstream::BoxError;

/// A client's request body on its way to the upstream; every data frame taken adds its length
/// to the entry's [`LogEntry::bytes_received`](super::LogEntry::bytes_received).
pub(crate) struct CountingBody {
    inner: Incoming,
    entry: EntryHandle,
}

impl CountingBody {
    pub(crate) fn new(inner: Incoming, entry: EntryHandle) -> Self {
        CountingBody { inner, entry }
    }
}

impl HttpBody for CountingBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        if let Some(Ok(frame)) = &frame
            && let Some(data) = frame.data_ref()
        {
            lock(&self.entry).bytes_received += data.len() as u64;
        }
        Poll::Ready(frame.map(|r| r.map_err(BoxError::from)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
