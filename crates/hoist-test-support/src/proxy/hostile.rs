//! Proxy actions that stand for a hostile or hung registry rather than a faulty network.

use http::Request;
use http_body_util::BodyExt;
use hyper::body::Incoming;

/// [`super::Action::StallBeforeResponse`]: takes the whole request body (so the client has
/// nothing left to send and waits for the answer), then never answers. The connection stays
/// open until the client gives up or the proxy stops.
pub(super) async fn never_answer<T>(req: Request<Incoming>) -> T {
    let _ = req.into_body().collect().await;
    std::future::pending().await
}
