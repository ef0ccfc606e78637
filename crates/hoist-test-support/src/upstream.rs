//! One-shot HTTP/1.1 requests to a loopback server, each on a fresh connection.
//!
//! Used by the fault proxy to reach its upstream and by the registry harness to probe
//! `/v2/`. A fresh connection per request keeps faults on one request from leaking into
//! the next.

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::combinators::BoxBody;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// The body type the crate's servers send and forward.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A boxed, streaming body.
pub(crate) type Body = BoxBody<Bytes, BoxError>;

/// Why a request to the upstream failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SendError {
    #[error("connecting to {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("HTTP exchange with {addr}: {source}")]
    Http { addr: String, source: hyper::Error },
}

/// Sends `req` (whose URI is in origin form) to `addr` ("host:port") on a new connection.
pub(crate) async fn send<B>(addr: &str, req: Request<B>) -> Result<Response<Incoming>, SendError>
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|source| SendError::Connect {
            addr: addr.to_owned(),
            source,
        })?;
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|source| SendError::Http {
            addr: addr.to_owned(),
            source,
        })?;
    // The connection task ends when the response body is read to its end or dropped.
    tokio::spawn(async move {
        let _ = conn.await;
    });
    sender
        .send_request(req)
        .await
        .map_err(|source| SendError::Http {
            addr: addr.to_owned(),
            source,
        })
}

/// Splits `http://host:port[/...]` into `host:port`, refusing anything but plain HTTP.
pub(crate) fn authority_of(url: &str) -> crate::Result<String> {
    let invalid = |reason: &str| crate::Error::InvalidUrl {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    let uri: http::Uri = url.parse().map_err(|_| invalid("not a URL"))?;
    if uri.scheme_str() != Some("http") {
        return Err(invalid("only http:// is supported"));
    }
    let authority = uri.authority().ok_or_else(|| invalid("no host"))?;
    if authority.port_u16().is_none() {
        return Err(invalid("no port"));
    }
    Ok(authority.as_str().to_owned())
}
