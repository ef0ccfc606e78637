//! Response bodies with faults, and the per-connection switch that resets a connection.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Notify;

use super::log::{EntryHandle, lock};
use crate::upstream::{Body, BoxError};

const KEEP: u8 = 0;
const RESET_AFTER_FLUSH: u8 = 1;
const CLOSE_AFTER_FLUSH: u8 = 2;
const RESET_NOW: u8 = 3;

/// How a connection is to end early.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ending {
    /// TCP RST.
    Reset,
    /// An orderly close (FIN).
    Close,
}

/// Shared between a connection's task, its I/O and its response bodies: lets a body
/// end the connection once the server has written everything before that point.
#[derive(Default)]
pub(crate) struct ConnControl {
    ending: AtomicU8,
    flushed: AtomicBool,
    notify: Notify,
}

impl ConnControl {
    fn ask(&self, ending: u8) {
        self.ending.store(ending, Ordering::SeqCst);
        self.notify.notify_one();
    }

    /// Asks for a reset once everything written so far is flushed.
    pub(crate) fn reset_after_flush(&self) {
        self.ask(RESET_AFTER_FLUSH);
    }

    /// Asks for a close once everything written so far is flushed.
    pub(crate) fn close_after_flush(&self) {
        self.ask(CLOSE_AFTER_FLUSH);
    }

    /// Asks for a reset now.
    pub(crate) fn reset_now(&self) {
        self.ask(RESET_NOW);
    }

    /// Waits until the connection is to end, and says how.
    pub(crate) async fn ending_due(&self) -> Ending {
        loop {
            let flushed = self.flushed.load(Ordering::SeqCst);
            match self.ending.load(Ordering::SeqCst) {
                RESET_NOW => return Ending::Reset,
                RESET_AFTER_FLUSH if flushed => return Ending::Reset,
                CLOSE_AFTER_FLUSH if flushed => return Ending::Close,
                _ => {}
            }
            self.notify.notified().await;
        }
    }
}

/// The connection's socket, telling [`ConnControl`] when the server flushed after a
/// reset was asked for (then every byte the server wrote is in the kernel).
pub(crate) struct ControlledIo {
    pub(crate) inner: TcpStream,
    pub(crate) control: Arc<ConnControl>,
}

impl AsyncRead for ControlledIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for ControlledIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let result = ready!(Pin::new(&mut self.inner).poll_flush(cx));
        if self.control.ending.load(Ordering::SeqCst) != KEEP {
            self.control.flushed.store(true, Ordering::SeqCst);
            self.control.notify.notify_one();
        }
        Poll::Ready(result)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// What happens to the body bytes.
#[derive(Clone, Copy, Debug)]
pub(crate) enum BodyFault {
    None,
    Reset(u64),
    Stall(u64, Option<Duration>),
    Truncate(u64),
    Flip(u64),
}

impl BodyFault {
    fn limit(self) -> Option<u64> {
        match self {
            BodyFault::Reset(n) | BodyFault::Stall(n, _) | BodyFault::Truncate(n) => Some(n),
            BodyFault::None | BodyFault::Flip(_) => None,
        }
    }
}

enum State {
    Streaming,
    /// Sends nothing more, ever.
    Halted,
    Sleeping(Pin<Box<tokio::time::Sleep>>),
    Done,
}

/// A response body that streams `inner` through a [`BodyFault`], counting bytes into
/// the request log.
pub(crate) struct FaultBody {
    inner: Body,
    fault: BodyFault,
    /// The limit's fault has happened (a stall that ended lets the rest through).
    applied: bool,
    sent: u64,
    held: Option<Bytes>,
    /// The response's Content-Length: reaching it completes the body.
    expected: Option<u64>,
    state: State,
    entry: EntryHandle,
    control: Arc<ConnControl>,
}

impl FaultBody {
    pub(crate) fn new(
        inner: Body,
        fault: BodyFault,
        expected: Option<u64>,
        entry: EntryHandle,
        control: Arc<ConnControl>,
    ) -> Self {
        if expected == Some(0) {
            lock(&entry).completed = true;
        }
        FaultBody {
            inner,
            fault,
            applied: false,
            sent: 0,
            held: None,
            expected,
            state: State::Streaming,
            entry,
            control,
        }
    }
}

impl HttpBody for FaultBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            match &mut this.state {
                State::Done => return Poll::Ready(None),
                State::Halted => return Poll::Pending,
                State::Sleeping(sleep) => {
                    ready!(sleep.as_mut().poll(cx));
                    this.state = State::Streaming;
                }
                State::Streaming => {}
            }
            let limit = this.fault.limit().filter(|_| !this.applied);
            if let Some(limit) = limit
                && this.sent >= limit
            {
                this.applied = true;
                match this.fault {
                    BodyFault::Reset(_) => {
                        this.control.reset_after_flush();
                        this.state = State::Halted;
                        return Poll::Pending;
                    }
                    BodyFault::Truncate(_) => {
                        // Ending the body here would make hyper drop the connection
                        // with bytes still in its buffer: close after they are out.
                        this.control.close_after_flush();
                        this.state = State::Halted;
                        return Poll::Pending;
                    }
                    BodyFault::Stall(_, None) => {
                        this.state = State::Halted;
                        return Poll::Pending;
                    }
                    BodyFault::Stall(_, Some(d)) => {
                        this.state = State::Sleeping(Box::pin(tokio::time::sleep(d)));
                        continue;
                    }
                    BodyFault::None | BodyFault::Flip(_) => {}
                }
            }
            let mut data = match this.held.take() {
                Some(data) => data,
                None => match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                    None => {
                        this.state = State::Done;
                        lock(&this.entry).completed = true;
                        return Poll::Ready(None);
                    }
                    Some(Err(e)) => {
                        this.state = State::Done;
                        return Poll::Ready(Some(Err(e)));
                    }
                    Some(Ok(frame)) => match frame.into_data() {
                        Ok(data) => data,
                        Err(other) => return Poll::Ready(Some(Ok(other))),
                    },
                },
            };
            if let Some(limit) = limit {
                let room = usize::try_from(limit - this.sent).unwrap_or(usize::MAX);
                if data.len() > room {
                    this.held = Some(data.split_off(room));
                }
            }
            let len = data.len() as u64;
            if let BodyFault::Flip(offset) = this.fault
                && (this.sent..this.sent + len).contains(&offset)
            {
                let mut copy = BytesMut::from(&data[..]);
                let at = usize::try_from(offset - this.sent).unwrap_or(0);
                copy[at] ^= 0xff;
                data = copy.freeze();
            }
            this.sent += len;
            {
                let mut entry = lock(&this.entry);
                entry.bytes_sent = this.sent;
                if this.expected == Some(this.sent) {
                    entry.completed = true;
                }
            }
            if data.is_empty() {
                continue;
            }
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, State::Done)
    }

    fn size_hint(&self) -> SizeHint {
        // Unknown on purpose: the response's own Content-Length header stays in charge,
        // so a truncated body still promises the original length.
        SizeHint::default()
    }
}
