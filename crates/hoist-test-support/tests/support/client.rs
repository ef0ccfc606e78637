//! A plain HTTP/1.1 client over hyper, one connection per request, for poking the
//! services directly.

use std::time::Duration;

use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// A request being built.
pub struct Req {
    method: Method,
    url: String,
    headers: HeaderMap,
    body: Bytes,
}

/// A fully read answer.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
}

pub fn req(method: Method, url: &str) -> Req {
    Req {
        method,
        url: url.to_owned(),
        headers: HeaderMap::new(),
        body: Bytes::new(),
    }
}

pub fn get(url: &str) -> Req {
    req(Method::GET, url)
}

impl Req {
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.insert(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
        self
    }

    pub fn basic(self, user: &str, password: &str) -> Self {
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        self.header("authorization", &format!("Basic {encoded}"))
    }

    pub fn bearer(self, token: &str) -> Self {
        self.header("authorization", &format!("Bearer {token}"))
    }

    /// Sets `Authorization` to `value` when given.
    pub fn auth(self, value: Option<&str>) -> Self {
        match value {
            Some(v) => self.header("authorization", v),
            None => self,
        }
    }

    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }

    /// Sends and returns the head, with the body still streaming.
    pub async fn send_streaming(self) -> Result<Response<Incoming>, Error> {
        let uri: http::Uri = self.url.parse()?;
        let authority = uri.authority().ok_or("no authority")?.as_str().to_owned();
        let target = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
        let stream = TcpStream::connect(&authority).await?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut request = Request::builder()
            .method(self.method)
            .uri(target)
            .header(header::HOST, &authority)
            .body(Full::new(self.body))?;
        request.headers_mut().extend(self.headers);
        Ok(sender.send_request(request).await?)
    }

    /// Sends and reads the whole answer.
    pub async fn try_send(self) -> Result<Reply, Error> {
        let resp = tokio::time::timeout(Duration::from_secs(30), self.send_streaming()).await??;
        let (parts, body) = resp.into_parts();
        let body = tokio::time::timeout(Duration::from_secs(30), body.collect())
            .await??
            .to_bytes();
        Ok(Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }

    /// Sends and reads the whole answer, panicking on transport errors.
    pub async fn send(self) -> Reply {
        let what = format!("{} {}", self.method, self.url);
        self.try_send()
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"))
    }
}

/// Reads a body to its end or its first error: the bytes received, and the error.
pub async fn read_partial(mut body: Incoming) -> (Bytes, Option<hyper::Error>) {
    let mut got = BytesMut::new();
    loop {
        match body.frame().await {
            None => return (got.freeze(), None),
            Some(Err(e)) => return (got.freeze(), Some(e)),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    got.extend_from_slice(&data);
                }
            }
        }
    }
}

/// The `std::io::ErrorKind` at the bottom of an error's source chain, if any.
pub fn io_kind(err: &(dyn std::error::Error + 'static)) -> Option<std::io::ErrorKind> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return Some(io.kind());
        }
        cur = e.source();
    }
    None
}
