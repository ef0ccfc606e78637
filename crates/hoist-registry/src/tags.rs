//! Tags and catalog listings, following `Link` pagination.

use std::collections::BTreeSet;

use bytes::Bytes;
use http::Method;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use url::Url;

use crate::RegistryClient;
use crate::client::{Endpoint, Req, ReqBody};
use crate::error::{Error, Result};
use crate::link;
use crate::repository::{Access, Repository};

/// Upper bound on pages followed, so a registry whose `Link` loops cannot keep us forever.
const MAX_PAGES: usize = 10_000;
/// Largest tags/catalog page read into memory.
const PAGE_LIMIT: u64 = 8 << 20;

#[derive(Deserialize)]
struct TagList {
    #[serde(default)]
    tags: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct Catalog {
    #[serde(default)]
    repositories: Option<Vec<String>>,
}

impl Repository {
    /// Every tag of the repository, following `Link` pagination; `page_size` sets `n=`.
    pub async fn tags(&self, page_size: Option<u32>) -> Result<Vec<String>> {
        let url = with_page_size(self.url("tags/list")?, page_size);
        let pages: Vec<TagList> = fetch_all(
            &self.client,
            &self.endpoint.host,
            url,
            self.scope(Access::Pull),
        )
        .await?;
        Ok(pages
            .into_iter()
            .flat_map(|p| p.tags.unwrap_or_default())
            .collect())
    }
}

impl RegistryClient {
    /// Every repository the registry lists in its catalog, following `Link` pagination.
    pub async fn catalog(
        &self,
        endpoint: &Endpoint,
        page_size: Option<u32>,
    ) -> Result<Vec<String>> {
        let url = with_page_size(endpoint.url("/v2/_catalog")?, page_size);
        let scopes = BTreeSet::from(["registry:catalog:*".to_owned()]);
        let pages: Vec<Catalog> = fetch_all(self, &endpoint.host, url, scopes).await?;
        Ok(pages
            .into_iter()
            .flat_map(|p| p.repositories.unwrap_or_default())
            .collect())
    }
}

fn with_page_size(mut url: Url, n: Option<u32>) -> Url {
    if let Some(n) = n {
        url.query_pairs_mut().append_pair("n", &n.to_string());
    }
    url
}

async fn fetch_all<T: DeserializeOwned>(
    client: &RegistryClient,
    host: &str,
    first: Url,
    scopes: BTreeSet<String>,
) -> Result<Vec<T>> {
    let mut out = Vec::new();
    let mut next = Some(first);
    while let Some(url) = next.take() {
        if out.len() >= MAX_PAGES {
            return Err(Error::InvalidResponse {
                url: crate::client::redact_url(&url),
                reason: format!("more than {MAX_PAGES} pages"),
            });
        }
        let (body, following) = fetch_page(client, host, &url, &scopes).await?;
        out.push(
            serde_json::from_slice(&body).map_err(|e| Error::InvalidResponse {
                url: crate::client::redact_url(&url),
                reason: format!("invalid listing: {e}"),
            })?,
        );
        next = following;
    }
    Ok(out)
}

async fn fetch_page(
    client: &RegistryClient,
    host: &str,
    url: &Url,
    scopes: &BTreeSet<String>,
) -> Result<(Bytes, Option<Url>)> {
    let req = Req {
        method: Method::GET,
        url: url.clone(),
        headers: Default::default(),
        body: ReqBody::Empty,
        scopes: scopes.clone(),
        host: host.to_owned(),
    };
    let resp = client.send(req).await?;
    let links = resp
        .headers
        .get_all("link")
        .iter()
        .filter_map(|v| v.to_str().ok());
    let next = link::next_link(links).map_err(|e| Error::InvalidResponse {
        url: crate::client::redact_url(url),
        reason: format!("invalid Link header: {e}"),
    })?;
    let next = match next {
        Some(target) => Some(resp.url.join(&target).map_err(|e| Error::InvalidResponse {
            url: crate::client::redact_url(url),
            reason: format!("invalid Link target {target:?}: {e}"),
        })?),
        None => None,
    };
    let body = resp.body.read_capped("listing page", PAGE_LIMIT).await?;
    Ok((body, next))
}
