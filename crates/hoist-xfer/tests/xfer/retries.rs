//! Retries of layer downloads: attempt limits, backoff, causes in progress, DoNotRetry,
//! Retry-After, classifiers and resumption.

use std::error::Error;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use hoist_xfer::{
    BoxError, DoNotRetry, DownloadError, LayerDownloadManager, RetryAfter, RetryDecision,
    RetryPolicy, RootFs, describe,
};

use crate::support::{Captured, FakeLayer, Log, MemoryStore, TestError, connection_reset};

/// Pulls one layer with `policy`, returning the result and the progress seen.
async fn pull(layer: FakeLayer, policy: RetryPolicy) -> (Result<RootFs, DownloadError>, Captured) {
    let store = MemoryStore::new();
    let manager = LayerDownloadManager::new(Arc::clone(&store), 3).with_retry_policy(policy);
    let (progress, capture) = Captured::new();
    let result = manager
        .download(RootFs::new(), vec![layer], progress)
        .await
        .map(|(rootfs, _guard)| rootfs);
    (result, capture)
}

async fn pull_with_max_attempts(layer: FakeLayer, max: u32) -> Result<RootFs, DownloadError> {
    let store = MemoryStore::new();
    let manager = LayerDownloadManager::new(store, 3).with_max_download_attempts(max);
    manager
        .download(
            RootFs::new(),
            vec![layer],
            hoist_xfer::DiscardProgress::shared(),
        )
        .await
        .map(|(rootfs, _guard)| rootfs)
}

fn gaps(log: &Log, key: &str) -> Vec<Duration> {
    let events = log.get();
    let times = &events.attempt_times[key];
    times.windows(2).map(|w| w[1] - w[0]).collect()
}

#[tokio::test(start_paused = true)]
async fn five_attempts_succeed_when_the_second_works() {
    let log = Log::default();
    let layer = FakeLayer::new("l", &log).failing(1, connection_reset);
    let rootfs = pull_with_max_attempts(layer.clone(), 5).await.unwrap();
    assert_eq!(rootfs.diff_ids, vec![layer.content]);
    assert_eq!(log.attempts("blob-l"), 2);
}

#[tokio::test(start_paused = true)]
async fn five_attempts_succeed_when_the_fifth_works() {
    let log = Log::default();
    let layer = FakeLayer::new("l", &log).failing(4, connection_reset);
    pull_with_max_attempts(layer, 5).await.unwrap();
    assert_eq!(log.attempts("blob-l"), 5);
}

#[tokio::test(start_paused = true)]
async fn five_failed_attempts_fail_with_the_attempt_count_in_the_message() {
    let log = Log::default();
    let layer = FakeLayer::new("l", &log).failing(5, connection_reset);
    let err = pull_with_max_attempts(layer, 5).await.unwrap_err();
    assert_eq!(log.attempts("blob-l"), 5);
    assert!(
        matches!(
            err,
            DownloadError::Failed {
                attempts: 5,
                retryable: true,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.is_retryable());
    assert_eq!(
        err.to_string(),
        "downloading layer l failed after 5 attempts"
    );
    assert_eq!(
        describe(&err),
        "downloading layer l failed after 5 attempts: connection reset"
    );
    // The original error stays reachable by type, for callers deciding what to do next.
    let cause = err.source().unwrap().downcast_ref::<std::io::Error>();
    assert_eq!(
        cause.map(std::io::Error::kind),
        Some(std::io::ErrorKind::ConnectionReset)
    );
}

#[tokio::test(start_paused = true)]
async fn a_single_allowed_attempt_fails_after_one() {
    let log = Log::default();
    let layer = FakeLayer::new("l", &log).failing(1, connection_reset);
    let err = pull_with_max_attempts(layer, 1).await.unwrap_err();
    assert_eq!(log.attempts("blob-l"), 1);
    assert_eq!(
        err.to_string(),
        "downloading layer l failed after 1 attempt"
    );
}

#[tokio::test(start_paused = true)]
async fn the_retry_cause_is_shown_in_progress_with_a_countdown() {
    let log = Log::default();
    let layer = FakeLayer::new("l", &log).failing(1, connection_reset);
    let policy = RetryPolicy::new()
        .with_base_delay(Duration::from_secs(4))
        .with_jitter(false);
    let (result, mut capture) = pull(layer, policy).await;
    result.unwrap();
    let retrying: Vec<_> = capture
        .statuses("l")
        .into_iter()
        .filter(|s| s.starts_with("Retrying"))
        .collect();
    assert_eq!(
        retrying,
        vec![
            "Retrying in 4s: connection reset",
            "Retrying in 3s: connection reset",
            "Retrying in 2s: connection reset",
            "Retrying in 1s: connection reset",
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn backoff_doubles_between_attempts() {
    let log = Log::default();
    let layer = FakeLayer::new("l", &log).failing(3, connection_reset);
    let policy = RetryPolicy::new()
        .with_base_delay(Duration::from_secs(2))
        .with_jitter(false);
    pull(layer, policy).await.0.unwrap();
    assert_eq!(
        gaps(&log, "blob-l"),
        vec![
            Duration::from_secs(2),
            Duration::from_secs(4),
            Duration::from_secs(8)
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn jittered_backoff_stays_between_half_and_all_of_the_delay() {
    let log = Log::default();
    let layer = FakeLayer::new("l", &log).failing(4, connection_reset);
    let policy = RetryPolicy::new().with_base_delay(Duration::from_secs(2));
    pull(layer, policy).await.0.unwrap();
    for (gap, full) in gaps(&log, "blob-l").into_iter().zip([2, 4, 8, 16]) {
        let full = Duration::from_secs(full);
        assert!(
            gap >= full / 2 && gap <= full,
            "{gap:?} not within {full:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn do_not_retry_wrapped_twice_stops_retries() {
    fn denied() -> BoxError {
        TestError::wrapping(
            "pulling layer",
            TestError::wrapping(
                "fetching blob",
                DoNotRetry::new(TestError::msg("unauthorized")),
            ),
        )
    }
    let log = Log::default();
    let layer = FakeLayer::new("l", &log).failing(u32::MAX, denied);
    let err = pull_with_max_attempts(layer, 5).await.unwrap_err();
    assert_eq!(log.attempts("blob-l"), 1);
    assert!(!err.is_retryable());
    assert_eq!(
        describe(&err),
        "downloading layer l failed after 1 attempt: pulling layer: fetching blob: unauthorized"
    );
}

#[tokio::test(start_paused = true)]
async fn retry_after_delays_are_honoured_exactly() {
    fn throttled() -> BoxError {
        TestError::wrapping(
            "fetching blob",
            RetryAfter::new(Duration::from_secs(7), TestError::msg("too many requests")),
        )
    }
    let log = Log::default();
    let layer = FakeLayer::new("l", &log).failing(2, throttled);
    let (result, mut capture) = pull(layer, RetryPolicy::new()).await;
    result.unwrap();
    assert_eq!(
        gaps(&log, "blob-l"),
        vec![Duration::from_secs(7), Duration::from_secs(7)]
    );
    assert!(
        capture
            .statuses("l")
            .contains(&"Retrying in 7s: fetching blob: too many requests".to_string())
    );
}

#[tokio::test(start_paused = true)]
async fn a_retry_after_longer_than_the_policy_allows_ends_the_retries() {
    fn throttled() -> BoxError {
        Box::new(RetryAfter::new(
            Duration::from_secs(3600),
            TestError::msg("come back in an hour"),
        ))
    }
    let log = Log::default();
    let layer = FakeLayer::new("l", &log).failing(1, throttled);
    let (result, _) = pull(layer, RetryPolicy::new()).await;
    let err = result.unwrap_err();
    assert_eq!(log.attempts("blob-l"), 1);
    assert!(err.is_retryable(), "a later pull may succeed");
}

/// A typed error from another crate, unknown to the engine.
#[derive(Debug)]
enum RegistryError {
    Throttled { retry_after: Duration },
    Denied,
}

impl fmt::Display for RegistryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Throttled { .. } => f.write_str("429 too many requests"),
            Self::Denied => f.write_str("401 unauthorized"),
        }
    }
}

impl Error for RegistryError {}

fn registry_policy() -> RetryPolicy {
    RetryPolicy::new().with_classifier(|err| match err.downcast_ref::<RegistryError>() {
        Some(RegistryError::Throttled { retry_after }) => RetryDecision::RetryAfter(*retry_after),
        Some(RegistryError::Denied) => RetryDecision::DoNotRetry,
        None => RetryDecision::Undecided,
    })
}

#[tokio::test(start_paused = true)]
async fn a_classifier_maps_other_crates_typed_errors_to_retry_decisions() {
    fn throttled() -> BoxError {
        TestError::wrapping(
            "fetching blob",
            RegistryError::Throttled {
                retry_after: Duration::from_secs(11),
            },
        )
    }
    fn denied() -> BoxError {
        TestError::wrapping("fetching blob", RegistryError::Denied)
    }

    let log = Log::default();
    let layer = FakeLayer::new("t", &log).failing(1, throttled);
    pull(layer, registry_policy()).await.0.unwrap();
    assert_eq!(gaps(&log, "blob-t"), vec![Duration::from_secs(11)]);

    let layer = FakeLayer::new("d", &log).failing(u32::MAX, denied);
    let err = pull(layer, registry_policy()).await.0.unwrap_err();
    assert_eq!(log.attempts("blob-d"), 1);
    assert!(!err.is_retryable());
}

#[tokio::test(start_paused = true)]
async fn a_retried_attempt_resumes_from_the_offset_already_held() {
    let log = Log::default();
    let layer = FakeLayer::new("l", &log)
        .failing(2, connection_reset)
        .holding_per_attempt(100);
    pull(layer, RetryPolicy::new()).await.0.unwrap();
    let offsets: Vec<_> = log
        .get()
        .resume_offsets
        .iter()
        .map(|(_, attempt, offset)| (*attempt, *offset))
        .collect();
    assert_eq!(offsets, vec![(1, 0), (2, 100), (3, 200)]);
}
