//! LayerDownloadManager: "Already exists", ordering, de-duplication, failure and cancellation.

use std::sync::Arc;
use std::time::Duration;

use hoist_xfer::{DoNotRetry, DownloadError, LayerDownloadManager, RootFs, chain_id};
use oci_spec::image::Digest;
use tokio_util::sync::CancellationToken;

use crate::support::{
    Captured, FakeLayer, Log, MemoryStore, TestError, connection_reset, digest_of, settle,
};

fn manager(store: &Arc<MemoryStore>, limit: usize) -> LayerDownloadManager<MemoryStore> {
    LayerDownloadManager::new(Arc::clone(store), limit)
}

fn diff_ids(layers: &[&FakeLayer]) -> Vec<Digest> {
    layers.iter().map(|l| l.content.clone()).collect()
}

fn top_chain(layers: &[&FakeLayer]) -> Digest {
    RootFs::from(diff_ids(layers)).chain_id().unwrap()
}

#[tokio::test(start_paused = true)]
async fn present_base_duplicates_and_a_retried_layer_give_the_right_diff_ids() {
    let store = MemoryStore::new();
    let log = Log::default();
    let base = FakeLayer::new("base", &log);
    store.preload(std::slice::from_ref(&base.content));
    let a = FakeLayer::new("a", &log);
    let flaky = FakeLayer::new("flaky", &log).failing(1, connection_reset);
    let a_again = a.clone();
    let b = FakeLayer::new("b", &log);
    let layers = vec![base.clone(), a.clone(), flaky.clone(), a_again, b.clone()];
    let expected = diff_ids(&[&base, &a, &flaky, &a, &b]);

    let (progress, mut capture) = Captured::new();
    let (rootfs, guard) = manager(&store, 3)
        .download(RootFs::new(), layers, progress)
        .await
        .unwrap();

    assert_eq!(rootfs.diff_ids, expected);
    assert_eq!(
        guard.top_layer().unwrap().chain_id,
        rootfs.chain_id().unwrap()
    );
    assert!(capture.saw("base", "Already exists"));
    assert!(capture.saw("flaky", "Pull complete"));
    assert!(capture.saw("b", "Pull complete"));
    assert_eq!(
        log.attempts("blob-base"),
        0,
        "present layers are not fetched"
    );
    assert_eq!(log.attempts("blob-a"), 1, "a duplicated blob moves once");
    assert_eq!(log.attempts("blob-flaky"), 2);
    let events = log.get();
    let registered: Vec<_> = events.registered.iter().map(|(_, d)| d.clone()).collect();
    assert_eq!(
        registered, expected,
        "each position reports its DiffID, in order"
    );
    let mut closed = events.closed.clone();
    closed.sort();
    assert_eq!(closed, vec!["a", "a", "b", "base", "flaky"]);
    drop(events);

    // One reference, on the top layer, held by the guard.
    let chains: Vec<_> = rootfs.chain_ids().collect();
    assert_eq!(store.registered(), chains[1..].to_vec());
    assert_eq!(store.total_refs(), 1);
    assert_eq!(store.refs(chains.last().unwrap()), 1);
    guard.release();
    assert_eq!(store.total_refs(), 0);
}

#[tokio::test(start_paused = true)]
async fn layers_download_concurrently_but_register_in_parent_order() {
    let store = MemoryStore::new();
    let log = Log::default();
    // The top layer is the quickest, the bottom one the slowest.
    let layers: Vec<_> = (0..4)
        .map(|i| FakeLayer::new(&format!("l{i}"), &log).taking(Duration::from_secs(4 - i as u64)))
        .collect();
    let refs: Vec<_> = layers.iter().collect();
    let expected_chains: Vec<_> = RootFs::from(diff_ids(&refs)).chain_ids().collect();
    let started = tokio::time::Instant::now();
    let (rootfs, _guard) = manager(&store, 0)
        .download(
            RootFs::new(),
            layers.clone(),
            hoist_xfer::DiscardProgress::shared(),
        )
        .await
        .unwrap();
    assert_eq!(
        started.elapsed(),
        Duration::from_secs(4),
        "downloads overlapped"
    );
    assert_eq!(log.get().max_running, 4);
    assert_eq!(
        log.get().completed,
        vec!["blob-l3", "blob-l2", "blob-l1", "blob-l0"],
        "downloads finished top first"
    );
    assert_eq!(
        store.registered(),
        expected_chains,
        "registered bottom first"
    );
    assert_eq!(rootfs.chain_ids().collect::<Vec<_>>(), expected_chains);
}

#[tokio::test(start_paused = true)]
async fn the_download_limit_bounds_layers_in_flight_and_queues_bottom_first() {
    let store = MemoryStore::new();
    let log = Log::default();
    let layers: Vec<_> = (0..6)
        .map(|i| FakeLayer::new(&format!("l{i}"), &log).taking(Duration::from_secs(1)))
        .collect();
    let (progress, mut capture) = Captured::new();
    let (rootfs, _guard) = manager(&store, 2)
        .download(RootFs::new(), layers, progress)
        .await
        .unwrap();
    assert_eq!(rootfs.len(), 6);
    let events = log.get();
    assert_eq!(events.max_running, 2);
    assert_eq!(
        events.completed,
        vec![
            "blob-l0", "blob-l1", "blob-l2", "blob-l3", "blob-l4", "blob-l5"
        ]
    );
    drop(events);
    assert!(capture.saw("l5", "Waiting"));
}

#[tokio::test(start_paused = true)]
async fn a_failed_parent_fails_its_children_without_waiting_for_their_downloads() {
    let store = MemoryStore::new();
    let log = Log::default();
    let parent = FakeLayer::new("parent", &log).failing(u32::MAX, || {
        Box::new(DoNotRetry::new(TestError::msg("manifest unknown")))
    });
    let child = FakeLayer::new("child", &log).hanging();
    let result = tokio::time::timeout(
        Duration::from_secs(1),
        manager(&store, 0).download(
            RootFs::new(),
            vec![parent, child],
            hoist_xfer::DiscardProgress::shared(),
        ),
    )
    .await
    .expect("the pull ends without the child's download");
    let err = result.unwrap_err();
    assert!(
        matches!(&err, DownloadError::Failed { id, attempts: 1, retryable: false, .. } if id == "parent"),
        "{err:?}"
    );
    settle().await;
    assert_eq!(
        log.get().dropped,
        vec!["blob-child"],
        "the child's download was cancelled"
    );
    assert!(store.registered().is_empty());
    assert_eq!(store.total_refs(), 0);
}

#[tokio::test(start_paused = true)]
async fn two_pulls_sharing_a_base_fetch_it_once_concurrently() {
    let store = MemoryStore::new();
    let log = Log::default();
    let base = FakeLayer::new("base", &log).taking(Duration::from_secs(2));
    let one = FakeLayer::new("one", &log);
    let two = FakeLayer::new("two", &log);
    let manager = manager(&store, 3);
    let (first, second) = tokio::join!(
        manager.download(
            RootFs::new(),
            vec![base.clone(), one.clone()],
            hoist_xfer::DiscardProgress::shared()
        ),
        manager.download(
            RootFs::new(),
            vec![base.clone(), two.clone()],
            hoist_xfer::DiscardProgress::shared()
        ),
    );
    let (first, _g1) = first.unwrap();
    let (second, _g2) = second.unwrap();
    assert_eq!(first.diff_ids, diff_ids(&[&base, &one]));
    assert_eq!(second.diff_ids, diff_ids(&[&base, &two]));
    assert_eq!(log.attempts("blob-base"), 1);
    let base_chain = top_chain(&[&base]);
    assert_eq!(
        store
            .registered()
            .iter()
            .filter(|c| **c == base_chain)
            .count(),
        1,
        "the shared base is registered once"
    );
    // Each pull's top layer holds a reference; the base is only referenced through them.
    assert_eq!(store.total_refs(), 2);
}

#[tokio::test(start_paused = true)]
async fn two_pulls_sharing_a_base_fetch_it_once_one_after_the_other() {
    let store = MemoryStore::new();
    let log = Log::default();
    let base = FakeLayer::new("base", &log);
    let one = FakeLayer::new("one", &log);
    let two = FakeLayer::new("two", &log);
    let manager = manager(&store, 3);
    let (_, first_guard) = manager
        .download(
            RootFs::new(),
            vec![base.clone(), one],
            hoist_xfer::DiscardProgress::shared(),
        )
        .await
        .unwrap();
    drop(first_guard);
    let (progress, mut capture) = Captured::new();
    let (rootfs, _guard) = manager
        .download(RootFs::new(), vec![base.clone(), two.clone()], progress)
        .await
        .unwrap();
    assert_eq!(rootfs.diff_ids, diff_ids(&[&base, &two]));
    assert_eq!(log.attempts("blob-base"), 1);
    assert!(capture.saw("base", "Already exists"));
    assert_eq!(manager.tracked(), 0);
}

#[tokio::test(start_paused = true)]
async fn the_same_blob_under_different_parents_moves_once_and_registers_twice() {
    let store = MemoryStore::new();
    let log = Log::default();
    let a = FakeLayer::new("a", &log);
    let b = FakeLayer::new("b", &log);
    let shared = FakeLayer::new("shared", &log).taking(Duration::from_secs(1));
    let manager = manager(&store, 0);
    let (left, right) = tokio::join!(
        manager.download(
            RootFs::new(),
            vec![a.clone(), shared.clone()],
            hoist_xfer::DiscardProgress::shared()
        ),
        manager.download(
            RootFs::new(),
            vec![b.clone(), shared.clone()],
            hoist_xfer::DiscardProgress::shared()
        ),
    );
    let (left, _g1) = left.unwrap();
    let (right, _g2) = right.unwrap();
    assert_eq!(log.attempts("blob-shared"), 1);
    assert_ne!(left.chain_id(), right.chain_id());
    assert!(store.contains(&left.chain_id().unwrap()));
    assert!(store.contains(&right.chain_id().unwrap()));
}

#[tokio::test(start_paused = true)]
async fn layers_without_known_diff_ids_still_download_and_register_in_order() {
    let store = MemoryStore::new();
    let log = Log::default();
    let layers: Vec<_> = (0..3)
        .map(|i| {
            FakeLayer::new(&format!("u{i}"), &log)
                .undeclared()
                .taking(Duration::from_secs(3 - i as u64))
        })
        .collect();
    let refs: Vec<_> = layers.iter().collect();
    let (rootfs, _guard) = manager(&store, 0)
        .download(
            RootFs::new(),
            layers.clone(),
            hoist_xfer::DiscardProgress::shared(),
        )
        .await
        .unwrap();
    assert_eq!(rootfs.diff_ids, diff_ids(&refs));
    assert_eq!(store.registered(), rootfs.chain_ids().collect::<Vec<_>>());
    let registered: Vec<_> = log
        .get()
        .registered
        .iter()
        .map(|(_, d)| d.clone())
        .collect();
    assert_eq!(registered, diff_ids(&refs));
}

#[tokio::test(start_paused = true)]
async fn a_layer_whose_content_differs_from_its_declared_diff_id_fails() {
    let store = MemoryStore::new();
    let log = Log::default();
    let liar = FakeLayer::new("liar", &log).declaring(digest_of("something else"));
    let err = manager(&store, 0)
        .download(
            RootFs::new(),
            vec![liar.clone()],
            hoist_xfer::DiscardProgress::shared(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, DownloadError::DiffIdMismatch { actual, .. } if *actual == liar.content),
        "{err:?}"
    );
    settle().await;
    assert_eq!(
        store.total_refs(),
        0,
        "the mismatching layer is not kept referenced"
    );
}

#[tokio::test(start_paused = true)]
async fn an_initial_rootfs_must_be_in_the_store() {
    let store = MemoryStore::new();
    let log = Log::default();
    let base = FakeLayer::new("base", &log);
    let top = FakeLayer::new("top", &log);
    let initial = RootFs::from(vec![base.content.clone()]);
    let err = manager(&store, 0)
        .download(
            initial.clone(),
            vec![top.clone()],
            hoist_xfer::DiscardProgress::shared(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, DownloadError::MissingInitialLayer { .. }),
        "{err:?}"
    );

    store.preload(std::slice::from_ref(&base.content));
    let (rootfs, guard) = manager(&store, 0)
        .download(
            initial,
            vec![top.clone()],
            hoist_xfer::DiscardProgress::shared(),
        )
        .await
        .unwrap();
    assert_eq!(rootfs.diff_ids, diff_ids(&[&base, &top]));
    assert_eq!(
        store.registered(),
        vec![chain_id(Some(&base.content), &top.content)]
    );
    drop(guard);
    assert_eq!(store.total_refs(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_download_returns_cancellation_and_registers_nothing() {
    let store = MemoryStore::new();
    let log = Log::default();
    let layers = vec![
        FakeLayer::new("done", &log),
        FakeLayer::new("slow", &log).hanging(),
        FakeLayer::new("slower", &log).hanging(),
    ];
    let manager = manager(&store, 0);
    let cancel = CancellationToken::new();
    let canceller = {
        let cancel = cancel.clone();
        async move {
            settle().await;
            cancel.cancel();
        }
    };
    let (result, ()) = tokio::join!(
        manager.download_until_cancelled(
            RootFs::new(),
            layers,
            hoist_xfer::DiscardProgress::shared(),
            &cancel
        ),
        canceller,
    );
    assert!(result.unwrap_err().is_cancelled());
    settle().await;
    let mut dropped = log.get().dropped.clone();
    dropped.sort();
    assert_eq!(dropped, vec!["blob-slow", "blob-slower"]);
    // The bottom layer was registered before the cancellation; its reference is given back.
    assert_eq!(store.total_refs(), 0);
    assert_eq!(manager.tracked(), 0);
    assert_eq!(log.get().closed.len(), 3);
}

#[tokio::test(start_paused = true)]
async fn dropping_a_pull_during_registration_completes_it_and_keeps_no_reference() {
    let store = MemoryStore::slow(Duration::from_secs(10));
    let log = Log::default();
    let layer = FakeLayer::new("only", &log);
    let manager = manager(&store, 0);
    let pull = manager.download(
        RootFs::new(),
        vec![layer.clone()],
        hoist_xfer::DiscardProgress::shared(),
    );
    let outcome = tokio::time::timeout(Duration::from_secs(5), pull).await;
    assert!(outcome.is_err(), "still registering when dropped");
    assert_eq!(store.registering(), 1);
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(store.registering(), 0);
    assert!(store.contains(&layer.content), "registered whole");
    assert_eq!(store.total_refs(), 0, "and released");
    assert_eq!(manager.tracked(), 0);
}

#[tokio::test(start_paused = true)]
async fn raising_the_download_limit_starts_queued_layers_at_once() {
    let store = MemoryStore::new();
    let log = Log::default();
    let layers: Vec<_> = (0..4)
        .map(|i| FakeLayer::new(&format!("l{i}"), &log).taking(Duration::from_secs(10)))
        .collect();
    let manager = manager(&store, 1);
    let pull = manager.download(RootFs::new(), layers, hoist_xfer::DiscardProgress::shared());
    let raise = async {
        settle().await;
        assert_eq!(log.get().running, 1);
        manager.set_concurrency(4);
        settle().await;
        assert_eq!(log.get().running, 4);
    };
    let started = tokio::time::Instant::now();
    let (result, ()) = tokio::join!(pull, raise);
    assert_eq!(result.unwrap().0.len(), 4);
    assert_eq!(started.elapsed(), Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_concurrent_pulls_on_worker_threads_register_each_layer_once_and_release_all() {
    let store = MemoryStore::new();
    let log = Log::default();
    let base = FakeLayer::new("base", &log);
    let middle = FakeLayer::new("middle", &log);
    let images: Vec<Vec<FakeLayer>> = (0..4)
        .map(|i| {
            vec![
                base.clone(),
                middle.clone(),
                FakeLayer::new(&format!("top{i}"), &log),
            ]
        })
        .collect();
    let manager = Arc::new(manager(&store, 2));
    let pulls: Vec<_> = (0..16)
        .map(|n| {
            let manager = Arc::clone(&manager);
            let layers = images[n % 4].clone();
            tokio::spawn(async move {
                manager
                    .download(RootFs::new(), layers, hoist_xfer::DiscardProgress::shared())
                    .await
                    .map(|(rootfs, _guard)| rootfs)
            })
        })
        .collect();
    for (n, pull) in pulls.into_iter().enumerate() {
        let rootfs = pull.await.unwrap().unwrap();
        let image: Vec<_> = images[n % 4].iter().collect();
        assert_eq!(rootfs.diff_ids, diff_ids(&image));
    }
    let mut registered = store.registered();
    let total = registered.len();
    registered.sort_by(|a, b| a.as_ref().cmp(b.as_ref()));
    registered.dedup();
    assert_eq!(total, registered.len(), "a ChainID was registered twice");
    assert_eq!(total, 6);
    assert_eq!(store.total_refs(), 0);
    // A download started just before its layer turned up in the store may still be winding
    // down on another worker; wait for it, boundedly.
    for _ in 0..5000 {
        if manager.tracked() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(manager.tracked(), 0);
}
