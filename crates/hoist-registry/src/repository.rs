//! A handle on one repository of one registry, and the request plumbing its operations share.

use std::collections::BTreeSet;

use http::{HeaderMap, Method};
use url::Url;

use crate::RegistryClient;
use crate::client::{Endpoint, Req, ReqBody, Resp};
use crate::error::Result;

/// What an operation needs to be allowed to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// Read.
    Pull,
    /// Read and write.
    Push,
    /// Delete (manifests, blobs).
    Delete,
}

/// One repository (`library/alpine`) on one registry endpoint. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Repository {
    pub(crate) client: RegistryClient,
    pub(crate) endpoint: Endpoint,
    pub(crate) name: String,
}

impl Repository {
    pub(crate) fn new(client: RegistryClient, endpoint: Endpoint, name: String) -> Repository {
        Repository {
            client,
            endpoint,
            name,
        }
    }

    /// The repository name (`library/alpine`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The endpoint this handle talks to.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// The client behind this handle.
    pub fn client(&self) -> &RegistryClient {
        &self.client
    }

    /// A handle for another repository on the same registry.
    pub fn sibling(&self, name: impl Into<String>) -> Repository {
        Repository::new(self.client.clone(), self.endpoint.clone(), name.into())
    }

    pub(crate) fn scope(&self, access: Access) -> BTreeSet<String> {
        scope_for(&self.name, access)
    }

    /// `/v2/<name>/<rest>` on this endpoint.
    pub(crate) fn url(&self, rest: &str) -> Result<Url> {
        self.endpoint.url(&format!("/v2/{}/{}", self.name, rest))
    }

    pub(crate) fn req(&self, method: Method, url: Url, access: Access) -> Req {
        Req {
            method,
            url,
            headers: HeaderMap::new(),
            body: ReqBody::Empty,
            scopes: self.scope(access),
            host: self.endpoint.host.clone(),
        }
    }

    pub(crate) async fn send(&self, req: Req) -> Result<Resp> {
        self.client.send(req).await
    }
}

pub(crate) fn scope_for(name: &str, access: Access) -> BTreeSet<String> {
    let actions = match access {
        Access::Pull => "pull",
        Access::Push => "pull,push",
        Access::Delete => "delete",
    };
    BTreeSet::from([format!("repository:{name}:{actions}")])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_name_the_repository_and_minimal_actions() {
        assert_eq!(
            scope_for("library/alpine", Access::Pull),
            BTreeSet::from(["repository:library/alpine:pull".to_string()])
        );
        assert_eq!(
            scope_for("a/b", Access::Push),
            BTreeSet::from(["repository:a/b:pull,push".to_string()])
        );
        assert_eq!(
            scope_for("a", Access::Delete),
            BTreeSet::from(["repository:a:delete".to_string()])
        );
    }
}
