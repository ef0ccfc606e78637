//! Pulls through a fault-injecting proxy: corrupt data, resets mid-layer.

use hoist_distribution::{ErrorKind, pull};
use hoist_registry::manifest::DOCKER_MANIFEST;
use hoist_test_support::{Action, FaultProxy, Matcher, Rule};

use crate::*;

/// A registry behind a proxy, with one image whose single layer is `layer`.
async fn setup(layer: Layer) -> (hoist_test_support::Registry, FaultProxy, Pushed) {
    let registry = start_registry().await;
    let proxy = FaultProxy::start(&registry.url()).await.unwrap();
    let image = push_image(
        &repo(&registry.host(), "faulty/img"),
        "1",
        DOCKER_MANIFEST,
        "linux/amd64",
        &[layer],
    )
    .await;
    (registry, proxy, image)
}

fn blob_path(image: &Pushed) -> String {
    format!("/blobs/{}", image.layers[0].digest())
}

#[tokio::test]
async fn a_blob_corrupted_once_is_fetched_again_and_the_pull_succeeds() {
    for layer in [
        Layer::gzip(&[("data", &noise(100_000, 3)[..])]),
        Layer::plain(&[("data", &noise(100_000, 4)[..])], DOCKER_LAYER_TAR),
    ] {
        let (_registry, proxy, image) = setup(layer).await;
        proxy.add_rule(Rule::get(&blob_path(&image), Action::FlipByte { offset: 50_000 }).once());
        let local = local_store();
        let (cfg, rec) = pull_config(&local.store);
        let result = pull(&cfg, &image_ref(&proxy.host(), "faulty/img:1"))
            .await
            .unwrap();
        assert_eq!(result.manifest, image.digest);
        assert_eq!(proxy.count(&Matcher::get(&blob_path(&image))), 2);
        // The refetch starts from byte 0, and the layer is right.
        let gets = proxy.requests(&Matcher::get(&blob_path(&image)));
        assert_eq!(gets[1].range, None, "{gets:#?}");
        let out = local.dir.path().join("rootfs");
        unpack(&local.store, &image.top_chain(), &out);
        assert_eq!(std::fs::read(out.join("data")).unwrap().len(), 100_000);
        let id = short(&image.layers[0].digest());
        assert!(
            rec.actions(&id).iter().any(|a| a == "Retrying"),
            "{:?}",
            rec.actions(&id)
        );
    }
}

#[tokio::test]
async fn a_blob_corrupt_every_time_fails_naming_it_and_leaves_nothing_visible() {
    // An uncompressed layer still parses as a tar: the digest check catches the corruption.
    let (_registry, proxy, image) = setup(Layer::plain(
        &[("data", &noise(50_000, 5)[..])],
        DOCKER_LAYER_TAR,
    ))
    .await;
    proxy.add_rule(Rule::get(&blob_path(&image), Action::FlipByte { offset: 30_000 }).every());
    let local = local_store();
    let (cfg, _) = pull_config(&local.store);
    let err = pull(&cfg, &image_ref(&proxy.host(), "faulty/img:1"))
        .await
        .unwrap_err();
    let text = hoist_xfer::describe(&err);
    assert!(text.contains("digest mismatch"), "{text}");
    assert!(
        text.contains(&image.layers[0].digest().to_string()),
        "{text}"
    );
    assert_eq!(err.kind(), ErrorKind::Corrupt);
    assert!(!err.is_retryable());
    // Fetched twice (once more after the first mismatch), not retried further.
    assert_eq!(proxy.count(&Matcher::get(&blob_path(&image))), 2);
    assert!(
        !local
            .store
            .content()
            .contains(&image.layers[0].digest())
            .unwrap()
    );
    assert!(local.store.layers().unwrap().list().unwrap().is_empty());
    assert!(local.store.references().unwrap().is_empty());

    // A gzip layer corrupted every time fails as corrupt too.
    let (_registry, proxy, image) = setup(Layer::gzip(&[("d", &noise(50_000, 6)[..])])).await;
    proxy.add_rule(Rule::get(&blob_path(&image), Action::FlipByte { offset: 1_000 }).every());
    let local = local_store();
    let (cfg, _) = pull_config(&local.store);
    let err = pull(&cfg, &image_ref(&proxy.host(), "faulty/img:1"))
        .await
        .unwrap_err();
    let text = hoist_xfer::describe(&err);
    assert!(text.contains("corrupt"), "{text}");
    assert_eq!(err.kind(), ErrorKind::Corrupt);
    assert!(local.store.references().unwrap().is_empty());
}

#[tokio::test]
async fn a_reset_mid_layer_resumes_from_the_bytes_already_held() {
    let size = 3 << 20;
    let (_registry, proxy, image) = setup(Layer::gzip(&[("big", &noise(size, 7)[..])])).await;
    let blob_len = image.layers[0].blob.len() as u64;
    let cut = 1 << 20;
    proxy.add_rule(Rule::get(&blob_path(&image), Action::Reset { after_bytes: cut }).once());
    let local = local_store();
    let (cfg, rec) = pull_config(&local.store);
    let result = pull(&cfg, &image_ref(&proxy.host(), "faulty/img:1"))
        .await
        .unwrap();
    assert_eq!(result.manifest, image.digest);
    let gets = proxy.requests(&Matcher::get(&blob_path(&image)));
    assert_eq!(gets.len(), 2, "{gets:#?}");
    let range = gets[1]
        .range
        .clone()
        .expect("the second request resumes with a range");
    let start: u64 = range
        .trim_start_matches("bytes=")
        .split('-')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(start > 0 && start <= cut, "{range}");
    // Bytes re-fetched are bounded by what was lost in flight.
    let sent = proxy.bytes_sent(&Matcher::get(&blob_path(&image)));
    assert!(
        sent <= blob_len + cut,
        "sent {sent} for a {blob_len}-byte blob"
    );
    let id = short(&image.layers[0].digest());
    assert!(
        rec.actions(&id)
            .iter()
            .any(|a| a.starts_with("Retrying in")),
        "{:?}",
        rec.actions(&id)
    );
    let out = local.dir.path().join("rootfs");
    unpack(&local.store, &image.top_chain(), &out);
    assert_eq!(std::fs::read(out.join("big")).unwrap(), noise(size, 7));
}

#[tokio::test]
async fn a_registry_that_ignores_ranges_still_yields_the_right_layer() {
    let size = 1 << 20;
    let (_registry, proxy, image) = setup(Layer::gzip(&[("big", &noise(size, 8)[..])])).await;
    proxy.add_rule(
        Rule::get(
            &blob_path(&image),
            Action::Reset {
                after_bytes: 300_000,
            },
        )
        .once(),
    );
    proxy.add_rule(Rule::get(&blob_path(&image), Action::IgnoreRange).nth(2));
    let local = local_store();
    let (cfg, _) = pull_config(&local.store);
    pull(&cfg, &image_ref(&proxy.host(), "faulty/img:1"))
        .await
        .unwrap();
    let out = local.dir.path().join("rootfs");
    unpack(&local.store, &image.top_chain(), &out);
    assert_eq!(std::fs::read(out.join("big")).unwrap(), noise(size, 8));
}

#[tokio::test]
async fn an_ingest_left_by_an_earlier_process_is_resumed_and_then_extracted() {
    use std::io::Write;
    let size = 1 << 20;
    let (_registry, proxy, image) = setup(Layer::gzip(&[("big", &noise(size, 9)[..])])).await;
    let blob = &image.layers[0].blob;
    let digest = image.layers[0].digest();
    let local = local_store();
    let held = 300_000;
    {
        // What a killed pull leaves: the first bytes of the blob in its ingest.
        let mut w = local
            .store
            .content()
            .writer(
                &hoist_distribution::ingest_reference(&digest),
                Some(&digest),
                Some(blob.len() as u64),
            )
            .unwrap();
        w.write_all(&blob[..held]).unwrap();
    }
    let (cfg, _) = pull_config(&local.store);
    pull(&cfg, &image_ref(&proxy.host(), "faulty/img:1"))
        .await
        .unwrap();
    let gets = proxy.requests(&Matcher::get(&blob_path(&image)));
    assert_eq!(gets.len(), 1, "{gets:#?}");
    assert_eq!(
        gets[0].range.as_deref(),
        Some(format!("bytes={held}-{}", blob.len() - 1).as_str())
    );
    assert_eq!(gets[0].bytes_sent, (blob.len() - held) as u64);
    let out = local.dir.path().join("rootfs");
    unpack(&local.store, &image.top_chain(), &out);
    assert_eq!(std::fs::read(out.join("big")).unwrap(), noise(size, 9));
    assert!(local.store.content().ingests().unwrap().is_empty());
}
