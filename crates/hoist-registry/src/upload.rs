//! Blob uploads: sessions (POST), monolithic and chunked PATCH uploads, resume from the offset the
//! registry reports, the final PUT with the digest, cross-repository mounts and cancellation.

use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode, header};
use oci_spec::image::Digest;
use url::Url;

use crate::client::{Req, ReqBody, Resp, header_str};
use crate::error::{Error, Result};
use crate::repository::{Access, Repository, scope_for};
use crate::upload_state::{parse_upload_range, with_query};
use crate::watchdog::ByteStream;

/// An upload session on the registry. Its `Debug` hides the location's query (a signed state).
#[derive(Clone)]
pub struct UploadSession {
    repo: Repository,
    location: Url,
    offset: u64,
}

impl std::fmt::Debug for UploadSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UploadSession")
            .field("repository", &self.repo.name)
            .field("location", &crate::client::redact_url(&self.location))
            .field("offset", &self.offset)
            .finish()
    }
}

/// The result of a cross-repository mount request.
#[derive(Debug)]
#[non_exhaustive]
pub enum MountResult {
    /// The registry linked the blob into the repository (`201`).
    Mounted,
    /// The registry did not mount it and opened an upload session instead (`202`).
    NotMounted(UploadSession),
}

impl Repository {
    /// Opens an upload session (`POST /v2/<name>/blobs/uploads/`).
    pub async fn start_upload(&self) -> Result<UploadSession> {
        let url = self.url("blobs/uploads/")?;
        let resp = self
            .send(self.req(Method::POST, url.clone(), Access::Push))
            .await?;
        self.session_from(&url, resp).await
    }

    /// Asks the registry to mount blob `digest` from repository `from` on the same registry.
    /// The token asked for covers both repositories (push here, pull there).
    pub async fn mount_blob(&self, digest: &Digest, from: &str) -> Result<MountResult> {
        let mut url = self.url("blobs/uploads/")?;
        url.query_pairs_mut()
            .append_pair("mount", digest.as_ref())
            .append_pair("from", from);
        let mut req = self.req(Method::POST, url.clone(), Access::Push);
        req.scopes.extend(scope_for(from, Access::Pull));
        let resp = self.send(req).await?;
        if resp.status == StatusCode::CREATED {
            resp.body.drain(1 << 16).await;
            return Ok(MountResult::Mounted);
        }
        Ok(MountResult::NotMounted(
            self.session_from(&url, resp).await?,
        ))
    }

    /// Uploads a whole blob in one `PUT` (after a `POST`), streaming `body` of `size` bytes.
    pub async fn push_blob(&self, digest: &Digest, size: u64, body: ByteStream) -> Result<()> {
        let session = self.start_upload().await?;
        session.finish(digest, Some((body, size))).await
    }

    /// Uploads a small blob held in memory.
    pub async fn push_blob_bytes(&self, digest: &Digest, bytes: Bytes) -> Result<()> {
        let session = self.start_upload().await?;
        let mut url = session.location.clone();
        with_query(&mut url, "digest", digest.as_ref());
        let mut req = self.req(Method::PUT, url, Access::Push);
        req.headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        req.body = ReqBody::Bytes(bytes);
        let resp = self.send(req).await?;
        expect_status(&resp, &[StatusCode::CREATED, StatusCode::NO_CONTENT])?;
        resp.body.drain(1 << 16).await;
        Ok(())
    }

    /// Re-opens an existing session by its location (to resume an upload after a failure or in
    /// another process): asks the registry how much it holds.
    pub async fn resume_upload(&self, location: &str) -> Result<UploadSession> {
        let base = self.endpoint.url("/")?;
        let location = base.join(location).map_err(|e| Error::InvalidResponse {
            url: "(upload location)".to_owned(),
            reason: format!("invalid upload location: {e}"),
        })?;
        let mut s = UploadSession {
            repo: self.clone(),
            location,
            offset: 0,
        };
        s.refresh().await?;
        Ok(s)
    }

    async fn session_from(&self, url: &Url, resp: Resp) -> Result<UploadSession> {
        expect_status(&resp, &[StatusCode::ACCEPTED])?;
        let loc = header_str(&resp.headers, "location").ok_or_else(|| Error::InvalidResponse {
            url: crate::client::redact_url(url),
            reason: "upload session without a Location header".into(),
        })?;
        let location = resp.url.join(loc).map_err(|e| Error::InvalidResponse {
            url: crate::client::redact_url(url),
            reason: format!("invalid upload Location: {e}"),
        })?;
        let offset = header_str(&resp.headers, "range")
            .map(parse_upload_range)
            .transpose()
            .map_err(|reason| Error::InvalidResponse {
                url: crate::client::redact_url(url),
                reason,
            })?
            .unwrap_or(0);
        resp.body.drain(1 << 16).await;
        Ok(UploadSession {
            repo: self.clone(),
            location,
            offset,
        })
    }
}

impl UploadSession {
    /// How many bytes the registry holds for this session.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The session's location (an opaque URL to resume it later; it may hold signed state).
    pub fn location(&self) -> &str {
        self.location.as_str()
    }

    /// Asks the registry how many bytes it holds (`GET` on the location; `204` with `Range`).
    pub async fn refresh(&mut self) -> Result<u64> {
        let req = self
            .repo
            .req(Method::GET, self.location.clone(), Access::Push);
        let resp = self.repo.send(req).await?;
        let url = crate::client::redact_url(&self.location);
        self.offset = header_str(&resp.headers, "range")
            .map(parse_upload_range)
            .transpose()
            .map_err(|reason| Error::InvalidResponse { url, reason })?
            .unwrap_or(0);
        self.update_location(&resp)?;
        resp.body.drain(1 << 16).await;
        Ok(self.offset)
    }

    /// Sends the next `len` bytes of the blob as one chunk (`PATCH` with `Content-Range`),
    /// starting at [`UploadSession::offset`]. Returns the new offset the registry reports.
    pub async fn patch(&mut self, body: ByteStream, len: u64) -> Result<u64> {
        if len == 0 {
            return Ok(self.offset);
        }
        let start = self.offset;
        let end = start + len - 1;
        let mut req = self
            .repo
            .req(Method::PATCH, self.location.clone(), Access::Push);
        req.headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        req.headers.insert(
            header::CONTENT_RANGE,
            crate::client::header_value(&format!("{start}-{end}")),
        );
        req.body = ReqBody::Stream(std::sync::Mutex::new(body), Some(len));
        let resp = self.repo.client.send_stream(req).await?;
        expect_status(&resp, &[StatusCode::ACCEPTED, StatusCode::NO_CONTENT])?;
        let url = crate::client::redact_url(&self.location);
        let reported = header_str(&resp.headers, "range")
            .map(parse_upload_range)
            .transpose()
            .map_err(|reason| Error::InvalidResponse {
                url: url.clone(),
                reason,
            })?;
        self.update_location(&resp)?;
        resp.body.drain(1 << 16).await;
        // `0-0` is how the registry reports both an empty session and one holding one byte.
        self.offset = match reported {
            Some(0) if end == 0 => 1,
            Some(n) => n,
            None => end + 1,
        };
        if self.offset != end + 1 {
            return Err(Error::InvalidResponse {
                url,
                reason: format!(
                    "registry holds {} bytes after a chunk ending at {}",
                    self.offset,
                    end + 1
                ),
            });
        }
        Ok(self.offset)
    }

    /// Completes the upload (`PUT ?digest=`), optionally sending the last `(body, len)` bytes
    /// with it; the registry verifies the digest.
    pub async fn finish(&self, digest: &Digest, last: Option<(ByteStream, u64)>) -> Result<()> {
        let mut url = self.location.clone();
        with_query(&mut url, "digest", digest.as_ref());
        let mut req: Req = self.repo.req(Method::PUT, url, Access::Push);
        req.headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        let resp = match last {
            Some((body, len)) => {
                req.body = ReqBody::Stream(std::sync::Mutex::new(body), Some(len));
                self.repo.client.send_stream(req).await?
            }
            None => {
                req.body = ReqBody::Bytes(Bytes::new());
                self.repo.send(req).await?
            }
        };
        expect_status(&resp, &[StatusCode::CREATED, StatusCode::NO_CONTENT])?;
        resp.body.drain(1 << 16).await;
        Ok(())
    }

    /// Cancels the session (`DELETE` on the location); the registry discards what it holds.
    pub async fn cancel(self) -> Result<()> {
        let req = self
            .repo
            .req(Method::DELETE, self.location.clone(), Access::Push);
        match self.repo.send(req).await {
            Ok(resp) => {
                resp.body.drain(1 << 16).await;
                Ok(())
            }
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn update_location(&mut self, resp: &Resp) -> Result<()> {
        if let Some(loc) = header_str(&resp.headers, "location") {
            self.location = resp.url.join(loc).map_err(|e| Error::InvalidResponse {
                url: crate::client::redact_url(&resp.url),
                reason: format!("invalid upload Location: {e}"),
            })?;
        }
        Ok(())
    }
}

fn expect_status(resp: &Resp, ok: &[StatusCode]) -> Result<()> {
    if ok.contains(&resp.status) {
        Ok(())
    } else {
        Err(Error::InvalidResponse {
            url: crate::client::redact_url(&resp.url),
            reason: format!("unexpected status {} (expected {:?})", resp.status, ok),
        })
    }
}
