//! The sources of one layer's bytes when its descriptor has `urls` the pull may follow: the
//! allowed URLs in the descriptor's order, then the registry.
//!
//! A URL is dropped for good as soon as it fails in any way (no connection, an error status,
//! a stream that breaks, bytes that do not verify); the next source then serves the rest, or
//! everything again after corrupt bytes. What failed is kept for the error of the registry, the
//! last source, so that a pull that fails names everything it tried.

use std::collections::VecDeque;
use std::sync::Mutex;

use hoist_registry::{BlobResponse, Repository};
use hoist_store::Digest;
use url::Url;

use crate::error::Error;
use crate::foreign::ForeignUrls;
use crate::layers::lock;
use crate::manifest::LayerRef;

/// The allowed URLs of one layer still to try, and what was tried.
pub(crate) struct ForeignSources {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Allowed URLs not yet failed; the front one is tried first.
    pending: VecDeque<Url>,
    /// Whether the front URL serves the current request.
    serving: bool,
    /// Whether the pipeline holds bytes a URL sent (since the last restart).
    fed: bool,
    /// `url: reason` of each URL that failed.
    tried: Vec<String>,
}

/// A URL as shown in messages: without user info or query (pre-signed URLs carry secrets there).
fn shown(url: &Url) -> String {
    let mut u = url.clone();
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u.set_query(None);
    u.set_fragment(None);
    u.to_string()
}

impl ForeignSources {
    /// The URLs of `layer` that `policy` allows, in order.
    pub(crate) fn new(policy: &ForeignUrls, layer: &LayerRef) -> ForeignSources {
        let mut state = State::default();
        for u in &layer.urls {
            match policy.check(u) {
                Ok(url) => state.pending.push_back(url),
                Err(reason) => {
                    tracing::debug!(blob = %layer.blob.digest, %reason, "layer URL not followed");
                }
            }
        }
        ForeignSources {
            state: Mutex::new(state),
        }
    }

    /// Opens the blob from `offset` at the first allowed URL that answers, or `None` when no
    /// URL is left (the registry is next). URLs that fail to answer are dropped.
    pub(crate) async fn open(
        &self,
        repo: &Repository,
        digest: &Digest,
        offset: u64,
        size: u64,
    ) -> Option<BlobResponse> {
        loop {
            let url = {
                let mut s = lock(&self.state);
                s.serving = false;
                s.pending.front().cloned()
            }?;
            match repo.client().get_foreign(&url, offset, size).await {
                Ok(resp) => {
                    tracing::debug!(blob = %digest, url = %shown(&url), offset, "fetching a layer from its URL");
                    let mut s = lock(&self.state);
                    s.serving = true;
                    s.fed = true;
                    return Some(resp);
                }
                Err(e) => {
                    tracing::warn!(blob = %digest, url = %shown(&url), error = %e, "a layer URL failed; trying the next source");
                    self.drop_front(&e.to_string());
                }
            }
        }
    }

    fn drop_front(&self, reason: &str) {
        let mut s = lock(&self.state);
        s.serving = false;
        if let Some(url) = s.pending.pop_front() {
            let entry = format!("{}: {reason}", shown(&url));
            s.tried.push(entry);
        }
    }

    /// After a transient failure of the current request: a URL serving it is dropped.
    pub(crate) fn current_failed(&self, e: &Error) {
        if lock(&self.state).serving {
            tracing::warn!(error = %e, "a layer URL broke off; the rest comes from the next source");
            self.drop_front(&e.to_string());
        }
    }

    /// After corrupt data: whether a URL fed the pipeline (then the serving URL is dropped and
    /// the layer starts over from the next source without counting against the registry's
    /// second chance; each URL can cause this once).
    pub(crate) fn pipeline_corrupt(&self, reason: &str) -> bool {
        let (fed, serving) = {
            let mut s = lock(&self.state);
            (std::mem::take(&mut s.fed), s.serving)
        };
        if serving {
            self.drop_front(&format!("corrupt data: {reason}"));
        }
        fed
    }

    /// What a registry request for the blob is doing, naming the URLs that failed before it.
    pub(crate) fn describe_fetch(&self, digest: &Digest) -> String {
        let s = lock(&self.state);
        if s.tried.is_empty() {
            format!("fetching blob {digest}")
        } else {
            format!(
                "fetching blob {digest} from the registry after its URLs failed ({})",
                s.tried.join("; ")
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shown_urls_hide_user_info_and_query() {
        let u = Url::parse("https://user:pw@h.example/a/b?X-Sig=secret#f").unwrap();
        assert_eq!(shown(&u), "https://h.example/a/b");
    }
}
