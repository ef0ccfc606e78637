//! Running the store's blocking work off the async runtime.

use crate::error::{Error, Result};

/// Runs `f` on tokio's blocking pool and waits for it. A panic in `f` becomes
/// [`Error::Internal`].
pub(crate) async fn blocking<T, F>(f: F) -> Result<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        if e.is_cancelled() {
            Error::Cancelled
        } else {
            Error::Internal(format!("a blocking task failed: {e}"))
        }
    })
}
