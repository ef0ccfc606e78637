//! Fetching the compressed blobs a partial pull left out, when they are needed.
//!
//! After a partial pull the store holds the layer but not its compressed blob (see
//! [`hoist_store::AbsentBlob`]). A push, a copy or an export of the image needs the blob:
//! [`fetch_absent_blob`] fetches it from the registry and repository it was pulled from into the
//! content store (verified at commit like any pulled blob), forgets the absent record, and lets
//! the store add images that are now complete to `index.json`. (A push to the registry the blob
//! came from mounts it instead, from the location the pull recorded, before this is needed.)

use std::io::Write;

use futures_util::StreamExt;
use hoist_registry::{ImageRef, RegistryClient};
use hoist_store::{Digest, Store};
use tokio::sync::mpsc;

use crate::blocking::blocking;
use crate::error::{Error, Result};
use crate::fetch::ingest_reference;
use crate::stream::CHANNEL_CHUNKS;

/// Whether `digest` is recorded as absent (its layer present, its blob not).
pub async fn is_absent(store: &Store, digest: &Digest) -> Result<bool> {
    let store = store.clone();
    let d = digest.clone();
    blocking(
        move || -> std::result::Result<bool, hoist_store::StoreError> {
            Ok(!store.content().contains(&d)? && store.metadata().absent_blob(&d)?.is_some())
        },
    )
    .await?
    .map_err(|e| Error::store("looking up an absent blob", e))
}

/// Fetches blob `digest`, recorded as absent, from where it was pulled into the store. Returns
/// `false` when it is not recorded as absent (nothing to do, or nowhere to fetch it from).
pub async fn fetch_absent_blob(
    client: &RegistryClient,
    store: &Store,
    digest: &Digest,
) -> Result<bool> {
    let s = store.clone();
    let d = digest.clone();
    let record = blocking(move || s.metadata().absent_blob(&d))
        .await?
        .map_err(|e| Error::store("looking up an absent blob", e))?;
    let Some(record) = record else {
        return Ok(false);
    };
    let source = ImageRef::parse(&format!("{}/{}", record.registry, record.repository))?;
    let endpoint = client
        .resolve(source.api_host())
        .await
        .map_err(|e| Error::registry(format!("reaching {}", record.registry), e))?;
    let repo = client.repository(endpoint, source.repository());
    tracing::debug!(blob = %digest, from = %source, "fetching a blob a partial pull left out");
    let reg = |e| Error::registry(format!("fetching blob {digest} from {source}"), e);
    let resp = repo.get_blob(digest).await.map_err(reg)?;
    let (tx, mut rx) = mpsc::channel::<bytes::Bytes>(CHANNEL_CHUNKS);
    let s = store.clone();
    let d = digest.clone();
    let size = record.size;
    let writer = tokio::task::spawn_blocking(
        move || -> std::result::Result<(), hoist_store::StoreError> {
            let mut w = s
                .content()
                .writer(&ingest_reference(&d), Some(&d), Some(size))?;
            if w.offset() > 0 {
                w.reset()?;
            }
            while let Some(b) = rx.blocking_recv() {
                if let Err(e) = w.write_all(&b) {
                    return Err(w.error_from_io(e));
                }
            }
            w.commit(Some(size), Some(&d)).map(|_| ())
        },
    );
    let mut body = resp.body;
    let mut failed = None;
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(b) => {
                if tx.send(b).await.is_err() {
                    break;
                }
            }
            Err(e) => {
                failed = Some(reg(e));
                break;
            }
        }
    }
    drop(tx);
    if let Some(e) = failed {
        // The writer sees a short blob and its commit fails: nothing unverified is kept.
        let _ = writer.await;
        return Err(e);
    }
    match writer.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) if e.is_already_exists() => {}
        Ok(Err(e)) => return Err(Error::store(format!("storing blob {digest}"), e)),
        Err(e) => return Err(Error::Internal(format!("storing blob {digest}: {e}"))),
    }
    let s = store.clone();
    blocking(move || s.publish_completed())
        .await?
        .map_err(|e| Error::store("updating index.json", e))?;
    Ok(true)
}
