//! Blobs at URLs outside any registry: the `urls` of non-distributable ("foreign") layer
//! descriptors, which name where a blob may be downloaded when a registry does not hold it.
//!
//! Whether a URL may be fetched at all is the caller's decision (hoist-distribution's
//! `ForeignUrls` policy). What happens here is the request: a plain `GET` that never carries
//! registry credentials, tokens or a client certificate (it goes through the shared HTTP stack,
//! which trusts the system roots only), with the same stall watchdog and redirect loop as
//! registry requests. Redirects from the URL are followed wherever they go: nothing secret is
//! sent, and the bytes are verified against the descriptor's digest by the caller either way.
//! Resumes use a closed `Range` like [`crate::Repository::get_blob_from`]: a `200` or a `206`
//! for another range restarts from byte 0 (see [`BlobResponse::start`]).

use std::collections::BTreeSet;

use http::{HeaderMap, Method, header};
use url::Url;

use crate::blob::{BlobResponse, content_length, range_header_value, resume_range, resumed};
use crate::client::{RegistryClient, Req, ReqBody, Resp, redact_url};
use crate::error::{Error, Result};

impl RegistryClient {
    /// Streams the blob of `size` bytes at `url` from `offset` on, without any credentials.
    ///
    /// The URL's scheme must be `http` or `https`. Error statuses become
    /// [`Error::Status`], as for registries; a body longer than `size` is the caller's to
    /// refuse (it counts the bytes against the descriptor).
    pub async fn get_foreign(&self, url: &Url, offset: u64, size: u64) -> Result<BlobResponse> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Error::InvalidResponse {
                url: redact_url(url),
                reason: format!("scheme {:?} is not http or https", url.scheme()),
            });
        }
        if offset == 0 {
            return self.get_foreign_whole(url).await;
        }
        let asked = resume_range(url, offset, size)?;
        let mut headers = HeaderMap::new();
        headers.insert(header::RANGE, range_header_value(url, asked)?);
        match resumed(
            self.send_anonymous(url, headers).await?,
            asked,
            size,
            "a layer URL",
        ) {
            Some(resp) => Ok(resp),
            None => self.get_foreign_whole(url).await,
        }
    }

    async fn get_foreign_whole(&self, url: &Url) -> Result<BlobResponse> {
        let resp = self.send_anonymous(url, HeaderMap::new()).await?;
        Ok(BlobResponse {
            start: 0,
            total: content_length(&resp),
            body: resp.body,
        })
    }

    /// A `GET` with no `Authorization` (on the first request or any redirect), through the
    /// shared HTTP stack.
    async fn send_anonymous(&self, url: &Url, headers: HeaderMap) -> Result<Resp> {
        let req = Req {
            method: Method::GET,
            url: url.clone(),
            headers,
            body: ReqBody::Empty,
            scopes: BTreeSet::new(),
            host: url.host_str().unwrap_or_default().to_owned(),
        };
        let resp = self.send_following(self.shared_http(), &req, None).await?;
        if resp.status.is_client_error() || resp.status.is_server_error() {
            let Resp {
                status,
                headers,
                url,
                body,
            } = resp;
            return Err(self
                .status_error(&req.method, &url, status, &headers, body)
                .await);
        }
        Ok(resp)
    }
}
