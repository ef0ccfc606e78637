//! The proxy's request log.

use std::sync::{Arc, Mutex, MutexGuard};

use http::Method;

use super::rules::{Action, Matcher};

/// Which listener of the proxy received a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Listener {
    /// The proxy itself.
    Proxy,
    /// The foreign host that [`Action::RedirectToForeignHost`] sends clients to.
    Foreign,
}

/// One request the proxy received, and what became of it.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct LogEntry {
    /// The listener that received it.
    pub listener: Listener,
    /// The method.
    pub method: Method,
    /// The path, without the query (on the foreign host: as the redirect named it).
    pub path: String,
    /// The query string, if any.
    pub query: Option<String>,
    /// The `Range` header the client sent.
    pub range: Option<String>,
    /// Whether the client sent an `Authorization` header.
    pub authorization: bool,
    /// The fault applied, if any.
    pub fault: Option<Action>,
    /// The status answered; `None` if the connection was reset before any answer.
    pub status: Option<u16>,
    /// Response body bytes handed to the connection.
    pub bytes_sent: u64,
    /// Request body bytes received from the client and passed on to the upstream.
    pub bytes_received: u64,
    /// Whether the response body was sent to its end.
    pub completed: bool,
}

/// A shared, growing log.
#[derive(Default)]
pub(crate) struct RequestLog {
    entries: Mutex<Vec<Arc<Mutex<LogEntry>>>>,
}

/// One entry, updated while its response streams.
pub(crate) type EntryHandle = Arc<Mutex<LogEntry>>;

pub(crate) fn lock(entry: &EntryHandle) -> MutexGuard<'_, LogEntry> {
    entry.lock().unwrap_or_else(|e| e.into_inner())
}

impl RequestLog {
    fn entries(&self) -> MutexGuard<'_, Vec<EntryHandle>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn push(&self, entry: LogEntry) -> EntryHandle {
        let handle = Arc::new(Mutex::new(entry));
        self.entries().push(Arc::clone(&handle));
        handle
    }

    pub(crate) fn snapshot(&self) -> Vec<LogEntry> {
        self.entries().iter().map(|e| lock(e).clone()).collect()
    }

    pub(crate) fn clear(&self) {
        self.entries().clear();
    }

    /// Entries of the proxy listener that `matcher` selects.
    pub(crate) fn matching(&self, matcher: &Matcher) -> Vec<LogEntry> {
        self.snapshot()
            .into_iter()
            .filter(|e| e.listener == Listener::Proxy && matcher.matches(&e.method, &e.path))
            .collect()
    }
}
