//! LayerUploadManager: de-duplication, results to every descriptor, limits, retries and
//! cancellation.

use std::time::Duration;

use hoist_xfer::{LayerUploadManager, UploadError};
use tokio_util::sync::CancellationToken;

use crate::support::{Captured, FakeUpload, Log, connection_reset, settle};

#[tokio::test(start_paused = true)]
async fn uploads_are_deduplicated_and_every_descriptor_gets_the_result() {
    let log = Log::default();
    let a = FakeUpload::new("a", &log).taking(Duration::from_secs(1));
    let b = FakeUpload::new("b", &log).taking(Duration::from_secs(2));
    let flaky = FakeUpload::new("flaky", &log).failing(1, connection_reset);
    let manager = LayerUploadManager::new(2);
    let (progress, mut capture) = Captured::new();
    manager
        .upload(vec![a.clone(), b, a.clone(), flaky], progress)
        .await
        .unwrap();
    assert_eq!(log.attempts("blob-a"), 1);
    assert_eq!(log.attempts("blob-flaky"), 2);
    let events = log.get();
    assert_eq!(events.max_running, 2);
    assert_eq!(
        events.remotes,
        vec![
            ("a".to_string(), "remote-blob-a".to_string()),
            ("b".to_string(), "remote-blob-b".to_string()),
            ("a".to_string(), "remote-blob-a".to_string()),
            ("flaky".to_string(), "remote-blob-flaky".to_string()),
        ]
    );
    drop(events);
    assert!(capture.saw("b", "Pushed"));
    assert_eq!(manager.tracked(), 0);
}

#[tokio::test(start_paused = true)]
async fn concurrent_pushes_of_one_layer_upload_it_once() {
    let log = Log::default();
    let layer = FakeUpload::new("shared", &log).taking(Duration::from_secs(3));
    let manager = LayerUploadManager::new(0);
    let (one, two) = tokio::join!(
        manager.upload(vec![layer.clone()], hoist_xfer::DiscardProgress::shared()),
        manager.upload(vec![layer.clone()], hoist_xfer::DiscardProgress::shared()),
    );
    one.unwrap();
    two.unwrap();
    assert_eq!(log.attempts("blob-shared"), 1);
    assert_eq!(log.get().remotes.len(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_upload_returns_cancellation() {
    let log = Log::default();
    let layers = vec![
        FakeUpload::new("a", &log).hanging(),
        FakeUpload::new("b", &log).hanging(),
    ];
    let manager = LayerUploadManager::new(0);
    let cancel = CancellationToken::new();
    let canceller = {
        let cancel = cancel.clone();
        async move {
            settle().await;
            cancel.cancel();
        }
    };
    let (result, ()) = tokio::join!(
        manager.upload_until_cancelled(layers, hoist_xfer::DiscardProgress::shared(), &cancel),
        canceller
    );
    assert!(matches!(result, Err(UploadError::Cancelled)));
    settle().await;
    let mut dropped = log.get().dropped.clone();
    dropped.sort();
    assert_eq!(dropped, vec!["blob-a", "blob-b"]);
    assert!(log.get().remotes.is_empty());
    assert_eq!(manager.tracked(), 0);
}

#[tokio::test(start_paused = true)]
async fn an_upload_failing_every_attempt_fails_with_the_attempt_count() {
    let log = Log::default();
    let layer = FakeUpload::new("l", &log).failing(u32::MAX, connection_reset);
    let manager = LayerUploadManager::new(1).with_max_upload_attempts(3);
    let err = manager
        .upload(vec![layer], hoist_xfer::DiscardProgress::shared())
        .await
        .unwrap_err();
    assert_eq!(log.attempts("blob-l"), 3);
    assert_eq!(err.to_string(), "uploading layer l failed after 3 attempts");
    assert!(err.is_retryable());
    assert!(log.get().remotes.is_empty());
}
