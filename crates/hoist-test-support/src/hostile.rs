//! A hostile registry: a loopback HTTP/1.1 server whose answers are written byte for byte by
//! the test, for what no well-behaved server (nor the fault proxy, which forwards a real
//! registry's answers) sends: megabyte-long headers, bodies that never end, malformed
//! `WWW-Authenticate` challenges, broken `multipart/byteranges`.
//!
//! Each connection carries one request: the server reads the request head, asks the route for
//! an [`Answer`], writes it and closes the connection. Request bodies are not read. It speaks
//! plain HTTP only: a TLS handshake is closed at once.
//!
//! ```no_run
//! # async fn demo() -> hoist_test_support::Result<()> {
//! use hoist_test_support::{Answer, HostileServer};
//! let server = HostileServer::start(|_method, path| match path {
//!     "/v2/" => Answer::new("200 OK").header("Content-Length", "0"),
//!     _ => Answer::new("200 OK")
//!         .header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
//!         .endless_body(),
//! })
//! .await?;
//! // A client pointed at server.host() gets a manifest that never ends.
//! # let _ = server.bytes_sent(); Ok(()) }
//! ```

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::error::{Error, Result};
use crate::serve::Server;

/// Longest request head read; a longer one closes the connection.
const MAX_REQUEST_HEAD: usize = 64 * 1024;

/// Bytes written per write of an endless body.
const ENDLESS_CHUNK: usize = 64 * 1024;

/// What follows an answer's head.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AnswerBody {
    /// These bytes, then the connection closes.
    Bytes(Vec<u8>),
    /// `x` bytes for as long as the client reads them (no `Content-Length`: the body is
    /// delimited by the close that never comes).
    Endless,
}

/// One answer: a status line, headers written as given, and a body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    head: String,
    body: AnswerBody,
}

impl Answer {
    /// An answer with `status` (`"200 OK"`), no headers yet and an empty body.
    pub fn new(status: &str) -> Self {
        Answer {
            head: format!("HTTP/1.1 {status}\r\n"),
            body: AnswerBody::Bytes(Vec::new()),
        }
    }

    /// Adds a header line `name: value`, written as is (no validation: hostile on purpose).
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.head.push_str(name);
        self.head.push_str(": ");
        self.head.push_str(value);
        self.head.push_str("\r\n");
        self
    }

    /// Sets the body and a matching `Content-Length`.
    pub fn body(self, body: impl Into<Vec<u8>>) -> Self {
        let body = body.into();
        let mut a = self.header("Content-Length", &body.len().to_string());
        a.body = AnswerBody::Bytes(body);
        a
    }

    /// Sets the body without adding a `Content-Length` (add one, or not, with [`Answer::header`]).
    pub fn raw_body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = AnswerBody::Bytes(body.into());
        self
    }

    /// Makes the body endless.
    pub fn endless_body(mut self) -> Self {
        self.body = AnswerBody::Endless;
        self
    }
}

type Route = dyn Fn(&str, &str) -> Answer + Send + Sync;

/// A running hostile server on `127.0.0.1`; stops when dropped.
pub struct HostileServer {
    server: Server,
    sent: Arc<AtomicU64>,
    requests: Arc<AtomicU64>,
    authorized: Arc<AtomicU64>,
}

impl std::fmt::Debug for HostileServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostileServer")
            .field("addr", &self.server.addr())
            .finish_non_exhaustive()
    }
}

impl HostileServer {
    /// Starts a server at a free port that answers each request with `route(method, path)`
    /// (the path with its query).
    pub async fn start<F>(route: F) -> Result<HostileServer>
    where
        F: Fn(&str, &str) -> Answer + Send + Sync + 'static,
    {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .map_err(|e| Error::io("binding the hostile server on 127.0.0.1", e))?;
        let sent = Arc::new(AtomicU64::new(0));
        let requests = Arc::new(AtomicU64::new(0));
        let authorized = Arc::new(AtomicU64::new(0));
        let route: Arc<Route> = Arc::new(route);
        let (s, r, a) = (
            Arc::clone(&sent),
            Arc::clone(&requests),
            Arc::clone(&authorized),
        );
        let server = Server::serve(listener, move |stream, peer| {
            let route = Arc::clone(&route);
            let (sent, requests) = (Arc::clone(&s), Arc::clone(&r));
            let counts = Counts {
                sent,
                requests,
                authorized: Arc::clone(&a),
            };
            Box::pin(serve(stream, peer, route, counts))
                as std::pin::Pin<Box<dyn Future<Output = ()> + Send>>
        })?;
        Ok(HostileServer {
            server,
            sent,
            requests,
            authorized,
        })
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        self.server.addr().to_string()
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.server.addr())
    }

    /// Body bytes handed to the kernel so far, over every answer.
    pub fn bytes_sent(&self) -> u64 {
        self.sent.load(Ordering::SeqCst)
    }

    /// Requests received so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }

    /// Requests received so far that carried an `Authorization` header.
    pub fn requests_with_authorization(&self) -> u64 {
        self.authorized.load(Ordering::SeqCst)
    }
}

/// What the server counts, shared by its connections.
struct Counts {
    sent: Arc<AtomicU64>,
    requests: Arc<AtomicU64>,
    authorized: Arc<AtomicU64>,
}

async fn serve(mut stream: TcpStream, _peer: SocketAddr, route: Arc<Route>, counts: Counts) {
    let Counts {
        sent,
        requests,
        authorized,
    } = counts;
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
        if !head[0].is_ascii_uppercase() {
            // A TLS handshake: this server speaks plain HTTP only; closing at once makes the
            // client fall back to it.
            return;
        }
        if head.len() > MAX_REQUEST_HEAD {
            return;
        }
    }
    requests.fetch_add(1, Ordering::SeqCst);
    let text = String::from_utf8_lossy(&head);
    if text.lines().skip(1).any(|l| {
        l.split_once(':')
            .is_some_and(|(name, _)| name.trim().eq_ignore_ascii_case("authorization"))
    }) {
        authorized.fetch_add(1, Ordering::SeqCst);
    }
    let line = text.lines().next().unwrap_or("").to_owned();
    let mut parts = line.split(' ');
    let method = parts.next().unwrap_or("").to_owned();
    let path = parts.next().unwrap_or("").to_owned();
    let answer = route(&method, &path);
    let mut out = answer.head.into_bytes();
    out.extend_from_slice(b"Connection: close\r\n\r\n");
    if stream.write_all(&out).await.is_err() {
        return;
    }
    match answer.body {
        AnswerBody::Bytes(body) => {
            if method != "HEAD" && stream.write_all(&body).await.is_ok() {
                sent.fetch_add(body.len() as u64, Ordering::SeqCst);
            }
        }
        AnswerBody::Endless => {
            let chunk = vec![b'x'; ENDLESS_CHUNK];
            while stream.write_all(&chunk).await.is_ok() {
                sent.fetch_add(chunk.len() as u64, Ordering::SeqCst);
            }
        }
    }
    let _ = stream.shutdown().await;
}
