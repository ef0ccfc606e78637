//! A fault-injecting HTTP/1.1 reverse proxy for putting in front of a registry.
//!
//! Requests pass to the upstream on fresh connections and responses stream back
//! (bodies are never buffered whole); `Location` headers that point at the upstream are
//! rewritten to point at the proxy. [`Rule`]s, added and cleared at run time, pick
//! requests by method, path and occurrence and apply an [`Action`] to them. Every
//! request is logged ([`LogEntry`]) so tests can count requests and bytes per path.
//!
//! The proxy owns a second listener, the *foreign host*, on another loopback address
//! (`127.0.0.2`, or `127.0.0.1` at another port where that address is unavailable),
//! for redirect tests.

mod body;
mod hostile;
mod log;
mod ranges;
mod received;
mod rules;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

pub use log::{Listener, LogEntry};
pub use ranges::RangeFault;
pub use rules::{Action, Matcher, Occurrence, Rule};

use crate::error::{Error, Result};
use crate::serve::Server;
use crate::sys;
use crate::upstream::{self, Body};
use body::{BodyFault, ConnControl, ControlledIo, Ending, FaultBody};
use log::{RequestLog, lock};
use received::CountingBody;
use rules::RuleSet;

/// Path prefix of redirect targets on the foreign host: `/_redirect/<id>/v2/...`.
const REDIRECT_PREFIX: &str = "/_redirect/";

/// How long a reset waits for the client to take the bytes sent before it.
const RESET_DRAIN_LIMIT: Duration = Duration::from_secs(5);

/// A running fault proxy; stops (closing every connection) when dropped.
///
/// ```no_run
/// # async fn demo() -> hoist_test_support::Result<()> {
/// use hoist_test_support::{Action, FaultProxy, Matcher, Registry, Rule};
/// let registry = Registry::start().await?;
/// let proxy = FaultProxy::start(&registry.url()).await?;
/// proxy.add_rule(Rule::get("/blobs/", Action::Reset { after_bytes: 4096 }).once());
/// // ... point the client at proxy.url() ...
/// let blob_gets = proxy.count(&Matcher::get("/blobs/"));
/// # let _ = blob_gets; Ok(()) }
/// ```
pub struct FaultProxy {
    shared: Arc<Shared>,
    proxy: Server,
    foreign: Server,
}

impl std::fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultProxy")
            .field("url", &self.url())
            .field("upstream", &self.shared.upstream_base)
            .field("foreign", &self.foreign_url())
            .finish_non_exhaustive()
    }
}

struct Shared {
    upstream_addr: String,
    upstream_base: String,
    proxy_base: String,
    foreign_base: String,
    rules: Mutex<RuleSet>,
    log: RequestLog,
    /// redirect id -> the `Authorization` of the redirected request
    redirects: Mutex<HashMap<String, Option<HeaderValue>>>,
}

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl FaultProxy {
    /// Starts a proxy on `127.0.0.1` at a free port in front of `upstream_url`
    /// (`http://host:port`).
    pub async fn start(upstream_url: &str) -> Result<FaultProxy> {
        let upstream_addr = upstream::authority_of(upstream_url)?;
        let proxy_listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .map_err(|e| Error::io("binding the proxy on 127.0.0.1", e))?;
        let foreign_listener = match TcpListener::bind((Ipv4Addr::new(127, 0, 0, 2), 0)).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!("127.0.0.2 unavailable ({e}); the foreign host uses 127.0.0.1");
                TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
                    .await
                    .map_err(|e| Error::io("binding the foreign host", e))?
            }
        };
        let addr_of = |l: &TcpListener| {
            l.local_addr()
                .map_err(|e| Error::io("reading a listener's address", e))
        };
        let proxy_addr = addr_of(&proxy_listener)?;
        let foreign_addr = addr_of(&foreign_listener)?;
        let shared = Arc::new(Shared {
            upstream_base: format!("http://{upstream_addr}"),
            upstream_addr,
            proxy_base: format!("http://{proxy_addr}"),
            foreign_base: format!("http://{foreign_addr}"),
            rules: Mutex::new(RuleSet::default()),
            log: RequestLog::default(),
            redirects: Mutex::new(HashMap::new()),
        });
        let proxy = Server::serve(proxy_listener, connection_handler(&shared, Listener::Proxy))?;
        let foreign = Server::serve(
            foreign_listener,
            connection_handler(&shared, Listener::Foreign),
        )?;
        Ok(FaultProxy {
            shared,
            proxy,
            foreign,
        })
    }

    /// `http://127.0.0.1:PORT`: where clients go instead of the upstream.
    pub fn url(&self) -> String {
        self.shared.proxy_base.clone()
    }

    /// `127.0.0.1:PORT`, the registry part of an image reference.
    pub fn host(&self) -> String {
        self.proxy.addr().to_string()
    }

    /// The proxy's port.
    pub fn port(&self) -> u16 {
        self.proxy.addr().port()
    }

    /// The upstream's URL.
    pub fn upstream_url(&self) -> &str {
        &self.shared.upstream_base
    }

    /// `http://127.0.0.2:PORT`: the foreign host's URL.
    pub fn foreign_url(&self) -> String {
        self.shared.foreign_base.clone()
    }

    /// The foreign host's IP address.
    pub fn foreign_ip(&self) -> IpAddr {
        self.foreign.addr().ip()
    }

    /// Adds a rule after the existing ones. For each request, every rule whose matcher
    /// selects it counts it, and the oldest rule whose occurrence selects it acts.
    pub fn add_rule(&self, rule: Rule) {
        locked(&self.shared.rules).push(rule);
    }

    /// Removes every rule: requests pass unchanged from then on.
    pub fn clear_rules(&self) {
        locked(&self.shared.rules).clear();
    }

    /// Every request received so far by both listeners, oldest first.
    pub fn log(&self) -> Vec<LogEntry> {
        self.shared.log.snapshot()
    }

    /// Forgets the logged requests.
    pub fn clear_log(&self) {
        self.shared.log.clear();
    }

    /// The proxy listener's requests that `matcher` selects.
    pub fn requests(&self, matcher: &Matcher) -> Vec<LogEntry> {
        self.shared.log.matching(matcher)
    }

    /// How many requests to the proxy listener `matcher` selects.
    pub fn count(&self, matcher: &Matcher) -> usize {
        self.requests(matcher).len()
    }

    /// Response body bytes the proxy listener sent for the requests `matcher` selects.
    pub fn bytes_sent(&self, matcher: &Matcher) -> u64 {
        self.requests(matcher).iter().map(|e| e.bytes_sent).sum()
    }

    /// Request body bytes the proxy listener received (and passed on) for the requests
    /// `matcher` selects: what a client uploaded.
    pub fn bytes_received(&self, matcher: &Matcher) -> u64 {
        self.requests(matcher)
            .iter()
            .map(|e| e.bytes_received)
            .sum()
    }

    /// The requests the foreign host received.
    pub fn foreign_requests(&self) -> Vec<LogEntry> {
        self.log()
            .into_iter()
            .filter(|e| e.listener == Listener::Foreign)
            .collect()
    }

    /// Whether any request reached the foreign host with an `Authorization` header.
    pub fn foreign_saw_authorization(&self) -> bool {
        self.foreign_requests().iter().any(|e| e.authorization)
    }

    /// Closes the proxy's port and every open connection to it: connecting is refused
    /// until [`FaultProxy::accept_connections`] (a mirror that is down).
    pub async fn refuse_connections(&self) {
        self.proxy.refuse().await;
    }

    /// Listens again on the same port after [`FaultProxy::refuse_connections`].
    pub async fn accept_connections(&self) -> Result<()> {
        self.proxy.accept().await
    }
}

fn connection_handler(
    shared: &Arc<Shared>,
    listener: Listener,
) -> impl Fn(TcpStream, SocketAddr) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>>
+ Send
+ Sync
+ 'static {
    let shared = Arc::clone(shared);
    move |stream, _peer| Box::pin(serve_connection(Arc::clone(&shared), listener, stream))
}

/// Serves one client connection; resets it (RST) when a fault asks for it.
async fn serve_connection(shared: Arc<Shared>, listener: Listener, stream: TcpStream) {
    let fd = stream.as_raw_fd();
    let control = Arc::new(ConnControl::default());
    let io = ControlledIo {
        inner: stream,
        control: Arc::clone(&control),
    };
    let for_service = Arc::clone(&control);
    let service = service_fn(move |req| {
        let shared = Arc::clone(&shared);
        let control = Arc::clone(&for_service);
        async move { Ok::<_, std::convert::Infallible>(handle(&shared, listener, &control, req).await) }
    });
    let conn =
        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(io), service);
    let mut conn = std::pin::pin!(conn);
    let ending = tokio::select! {
        _ = conn.as_mut() => return,
        ending = control.ending_due() => ending,
    };
    if ending == Ending::Close {
        // Dropping the connection closes the socket: the kernel sends what hyper wrote,
        // then a FIN.
        return;
    }
    // Everything hyper wrote is in the kernel: wait (bounded) until the client has it,
    // still driving the connection, then close with SO_LINGER 0, which sends a RST.
    // `conn` owns the socket, so `fd` stays valid while `conn` is alive.
    let deadline = Instant::now() + RESET_DRAIN_LIMIT;
    while sys::unsent_bytes(fd).is_ok_and(|n| n > 0) && Instant::now() < deadline {
        tokio::select! {
            _ = conn.as_mut() => return,
            () = tokio::time::sleep(Duration::from_millis(1)) => {}
        }
    }
    if let Err(e) = sys::set_zero_linger(fd) {
        tracing::warn!("fault proxy: SO_LINGER for a reset failed: {e}");
    }
}

async fn handle(
    shared: &Shared,
    listener: Listener,
    control: &Arc<ConnControl>,
    mut req: Request<Incoming>,
) -> Response<FaultBody> {
    let method = req.method().clone();
    let mut path = req.uri().path().to_owned();
    let query = req.uri().query().map(str::to_owned);
    let mut stored_auth = None;
    if listener == Listener::Foreign
        && let Some(rest) = path.strip_prefix(REDIRECT_PREFIX)
    {
        let (id, original) = rest.split_once('/').unwrap_or((rest, ""));
        stored_auth = locked(&shared.redirects).get(id).cloned().flatten();
        path = format!("/{original}");
    }
    let entry = shared.log.push(LogEntry {
        listener,
        method: method.clone(),
        path: path.clone(),
        query: query.clone(),
        range: req
            .headers()
            .get(header::RANGE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        authorization: req.headers().contains_key(header::AUTHORIZATION),
        fault: None,
        status: None,
        bytes_sent: 0,
        bytes_received: 0,
        completed: false,
    });
    let action = match listener {
        Listener::Proxy => locked(&shared.rules).decide(&method, &path),
        Listener::Foreign => None,
    };
    lock(&entry).fault = action.clone();
    let range_status = match &action {
        Some(Action::Ranges(fault)) => ranges::apply(fault, req.headers_mut()),
        _ => None,
    };

    let response = match &action {
        Some(Action::StallBeforeResponse) => return hostile::never_answer(req).await,
        _ if range_status.is_some() => local_status(range_status.unwrap_or(500), None),
        Some(Action::ResetBeforeResponse) => {
            control.reset_now();
            return std::future::pending().await;
        }
        Some(Action::Status {
            status,
            retry_after,
        }) => local_status(*status, retry_after.as_deref()),
        Some(Action::RedirectToForeignHost) => {
            let id = format!("{:016x}", rand::random::<u64>());
            let auth = req.headers().get(header::AUTHORIZATION).cloned();
            locked(&shared.redirects).insert(id.clone(), auth);
            let mut location = format!("{}{REDIRECT_PREFIX}{id}{path}", shared.foreign_base);
            if let Some(q) = &query {
                location.push('?');
                location.push_str(q);
            }
            let mut resp = plain_response(StatusCode::TEMPORARY_REDIRECT, Bytes::new());
            if let Ok(v) = HeaderValue::from_str(&location) {
                resp.headers_mut().insert(header::LOCATION, v);
            }
            resp
        }
        _ => {
            let req = req.map(|body| CountingBody::new(body, Arc::clone(&entry)));
            forward(
                shared,
                listener,
                req,
                &path,
                query.as_deref(),
                stored_auth,
                action.as_ref(),
            )
            .await
        }
    };
    let (parts, body) = response.into_parts();
    lock(&entry).status = Some(parts.status.as_u16());
    let expected = if method == http::Method::HEAD {
        Some(0)
    } else {
        parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
    };
    let fault = match action {
        Some(Action::Reset { after_bytes }) => BodyFault::Reset(after_bytes),
        Some(Action::Stall {
            after_bytes,
            duration,
        }) => BodyFault::Stall(after_bytes, duration),
        Some(Action::Truncate { after_bytes }) => BodyFault::Truncate(after_bytes),
        Some(Action::FlipByte { offset }) => BodyFault::Flip(offset),
        _ => BodyFault::None,
    };
    Response::from_parts(
        parts,
        FaultBody::new(body, fault, expected, entry, Arc::clone(control)),
    )
}

fn plain_response(status: StatusCode, body: Bytes) -> Response<Body> {
    let len = body.len();
    let mut resp = Response::new(Full::new(body).map_err(|never| match never {}).boxed());
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    resp
}

/// A registry-style error answered by the proxy itself.
fn local_status(status: u16, retry_after: Option<&str>) -> Response<Body> {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let code = match status.as_u16() {
        401 => "UNAUTHORIZED",
        403 => "DENIED",
        404 => "NAME_UNKNOWN",
        429 => "TOOMANYREQUESTS",
        503 => "UNAVAILABLE",
        _ => "UNKNOWN",
    };
    let body = serde_json::json!({"errors": [{
        "code": code,
        "message": format!("fault injected by the test proxy: {status}"),
    }]});
    let mut resp = plain_response(status, Bytes::from(body.to_string()));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(value) = retry_after.and_then(|v| HeaderValue::from_str(v).ok()) {
        resp.headers_mut().insert(header::RETRY_AFTER, value);
    }
    resp
}

/// Headers that belong to one connection, not to the message.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
}

async fn forward(
    shared: &Shared,
    listener: Listener,
    req: Request<CountingBody>,
    path: &str,
    query: Option<&str>,
    stored_auth: Option<HeaderValue>,
    action: Option<&Action>,
) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let target = match query {
        Some(q) => format!("{path}?{q}"),
        None => path.to_owned(),
    };
    let mut upstream_req: Request<Body> = Request::new(body.boxed());
    *upstream_req.method_mut() = parts.method;
    match target.parse() {
        Ok(uri) => *upstream_req.uri_mut() = uri,
        Err(_) => return plain_response(StatusCode::BAD_REQUEST, Bytes::from_static(b"bad path")),
    }
    let mut headers = parts.headers;
    strip_hop_by_hop(&mut headers);
    if let Ok(host) = HeaderValue::from_str(&shared.upstream_addr) {
        headers.insert(header::HOST, host);
    }
    if action == Some(&Action::IgnoreRange) {
        headers.remove(header::RANGE);
        headers.remove(header::IF_RANGE);
    }
    if listener == Listener::Foreign {
        // The foreign host stands for storage behind a pre-signed URL: it reaches the
        // registry with the redirected request's credentials, never with the client's.
        headers.remove(header::AUTHORIZATION);
        if let Some(auth) = stored_auth {
            headers.insert(header::AUTHORIZATION, auth);
        }
    }
    *upstream_req.headers_mut() = headers;

    let resp = match upstream::send(&shared.upstream_addr, upstream_req).await {
        Ok(resp) => resp,
        Err(e) => {
            return plain_response(
                StatusCode::BAD_GATEWAY,
                Bytes::from(format!("fault proxy: upstream unreachable: {e}")),
            );
        }
    };
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    if let Some(location) = parts
        .headers
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        && let Some(rest) = location.strip_prefix(&shared.upstream_base)
        && let Ok(v) = HeaderValue::from_str(&format!("{}{rest}", shared.proxy_base))
    {
        parts.headers.insert(header::LOCATION, v);
    }
    if action == Some(&Action::WrongContentRange)
        && parts.status == StatusCode::PARTIAL_CONTENT
        && let Some(wrong) = parts
            .headers
            .get(header::CONTENT_RANGE)
            .and_then(|v| v.to_str().ok())
            .and_then(shift_content_range)
        && let Ok(v) = HeaderValue::from_str(&wrong)
    {
        parts.headers.insert(header::CONTENT_RANGE, v);
    }
    Response::from_parts(
        parts,
        body.map_err(|e| -> upstream::BoxError { e.into() }).boxed(),
    )
}

/// `bytes a-b/t` -> `bytes a+1-b+1/t`.
fn shift_content_range(value: &str) -> Option<String> {
    let rest = value.strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (start, end) = range.split_once('-')?;
    let start: u64 = start.trim().parse().ok()?;
    let end: u64 = end.trim().parse().ok()?;
    Some(format!("bytes {}-{}/{total}", start + 1, end + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_moves_one_byte_forward() {
        assert_eq!(
            shift_content_range("bytes 0-99/1000").as_deref(),
            Some("bytes 1-100/1000")
        );
        assert_eq!(
            shift_content_range("bytes 10-19/*").as_deref(),
            Some("bytes 11-20/*")
        );
        assert_eq!(shift_content_range("items 0-1/2"), None);
    }
}
