//! Retries for the single requests of a pull or push that no transfer manager runs: manifests,
//! the image config, the config upload and the manifest `PUT`.
//!
//! They follow the same [`RetryPolicy`] as the layer transfers (attempts, backoff,
//! `Retry-After`, and the classifier that reads hoist's typed errors), so a `503` or `429` on a
//! manifest is retried like one on a layer instead of failing the whole pull.

use std::future::Future;

use hoist_xfer::RetryPolicy;

/// An error that says whether another attempt can help. The policy's classifier only refines
/// the wait (backoff, `Retry-After`, `DoNotRetry`) of errors that say yes.
pub(crate) trait Retryable: std::error::Error + 'static {
    /// Whether another attempt can help.
    fn is_retryable(&self) -> bool;
}

impl Retryable for crate::error::Error {
    fn is_retryable(&self) -> bool {
        crate::error::Error::is_retryable(self)
    }
}

impl Retryable for crate::transport::Error {
    fn is_retryable(&self) -> bool {
        crate::transport::Error::is_retryable(self)
    }
}

/// Runs `op` until it succeeds, its error is not retryable, or `policy`'s attempts are used up;
/// returns the last error then. `what` names the request in the log.
pub(crate) async fn retrying<T, E, F, Fut>(
    policy: &RetryPolicy,
    what: &str,
    mut op: F,
) -> Result<T, E>
where
    E: Retryable,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut attempt = 1;
    loop {
        let e = match op().await {
            Ok(v) => return Ok(v),
            Err(e) if !e.is_retryable() => return Err(e),
            Err(e) => e,
        };
        let Some(delay) = policy.delay_after(&e, attempt) else {
            return Err(e);
        };
        tracing::warn!(
            attempt,
            delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            error = %hoist_xfer::describe(&e),
            "{what} failed; retrying"
        );
        tokio::time::sleep(delay).await;
        attempt += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    fn quick() -> RetryPolicy {
        crate::config::retry_policy()
            .with_base_delay(Duration::from_millis(1))
            .with_jitter(false)
            .with_max_attempts(3)
    }

    fn status(code: u16) -> Error {
        Error::registry(
            "fetching manifest",
            hoist_registry::Error::Status {
                method: "GET".into(),
                url: "http://r/v2/a/manifests/t".into(),
                status: http::StatusCode::from_u16(code).unwrap(),
                details: vec![],
                retry_after: None,
            },
        )
    }

    #[tokio::test]
    async fn transient_errors_are_retried_until_success() {
        let calls = AtomicU32::new(0);
        let got = retrying(&quick(), "test", || async {
            if calls.fetch_add(1, Ordering::SeqCst) < 2 {
                Err(status(503))
            } else {
                Ok(7)
            }
        })
        .await
        .unwrap();
        assert_eq!(got, 7);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn permanent_errors_and_used_up_attempts_end_with_the_last_error() {
        let calls = AtomicU32::new(0);
        let err = retrying(&quick(), "test", || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>(status(404))
        })
        .await
        .unwrap_err();
        assert!(!err.is_retryable());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        calls.store(0, Ordering::SeqCst);
        let err = retrying(&quick(), "test", || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>(status(502))
        })
        .await
        .unwrap_err();
        assert!(err.is_retryable());
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }
}
