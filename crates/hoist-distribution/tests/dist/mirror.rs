//! Pulls through a mirror (a second registry in pull-through mode), and falling back from it.

use hoist_distribution::{Registries, pull};
use hoist_registry::manifest::OCI_MANIFEST;
use hoist_test_support::{Action, FaultProxy, Matcher, Registry, Rule};

use crate::*;

/// An upstream registry with one image, and a pull-through cache of it behind a proxy.
async fn setup() -> (Registry, Registry, FaultProxy, Pushed) {
    let upstream = start_registry().await;
    let image = push_image(
        &repo(&upstream.host(), "library/app"),
        "1",
        OCI_MANIFEST,
        "linux/amd64",
        &[Layer::gzip(&[("hello", b"from upstream")])],
    )
    .await;
    let cache = Registry::builder()
        .pull_through(&upstream.url())
        .start()
        .await
        .unwrap();
    let proxy = FaultProxy::start(&cache.url()).await.unwrap();
    (upstream, cache, proxy, image)
}

#[tokio::test]
async fn a_configured_mirror_serves_the_pull() {
    let (upstream, _cache, proxy, image) = setup().await;
    let local = local_store();
    let (cfg, _) = pull_config(&local.store);
    let cfg = cfg.with_registries(Registries::new().with_mirror(&upstream.host(), &proxy.url()));
    let result = pull(&cfg, &image_ref(&upstream.host(), "library/app:1"))
        .await
        .unwrap();
    assert!(result.mirror);
    assert_eq!(result.endpoint, proxy.host());
    assert_eq!(result.manifest, image.digest);
    assert_eq!(
        proxy.count(&Matcher::get(&format!(
            "/blobs/{}",
            image.layers[0].digest()
        ))),
        1
    );
    // Recorded under the registry's own name.
    assert!(
        local
            .store
            .resolve(&format!("{}/library/app:1", upstream.host()))
            .unwrap()
            .is_some()
    );
    let out = local.dir.path().join("rootfs");
    unpack(&local.store, &image.top_chain(), &out);
    assert_eq!(std::fs::read(out.join("hello")).unwrap(), b"from upstream");
}

#[tokio::test]
async fn an_unreachable_mirror_is_skipped_for_the_registry() {
    let (upstream, _cache, proxy, image) = setup().await;
    proxy.refuse_connections().await;
    let local = local_store();
    let (cfg, _) = pull_config(&local.store);
    let cfg = cfg.with_registries(Registries::new().with_mirror(&upstream.host(), &proxy.host()));
    let result = pull(&cfg, &image_ref(&upstream.host(), "library/app:1"))
        .await
        .unwrap();
    assert!(!result.mirror);
    assert_eq!(result.endpoint, upstream.host());
    assert_eq!(result.manifest, image.digest);
}

#[tokio::test]
async fn a_mirror_failing_before_any_layer_data_falls_back_to_the_registry() {
    let (upstream, _cache, proxy, image) = setup().await;
    proxy.add_rule(Rule::get("/manifests/", Action::status(500)).every());
    let local = local_store();
    let (cfg, _) = pull_config(&local.store);
    let cfg = cfg.with_registries(Registries::new().with_mirror(&upstream.host(), &proxy.host()));
    let result = pull(&cfg, &image_ref(&upstream.host(), "library/app:1"))
        .await
        .unwrap();
    assert!(!result.mirror);
    assert_eq!(result.manifest, image.digest);
    assert!(proxy.count(&Matcher::get("/manifests/")) >= 1);
}

#[tokio::test]
async fn a_mirror_failing_after_layer_data_moved_is_final() {
    let (upstream, _cache, proxy, image) = setup().await;
    // Every GET of the layer is cut after some bytes: data moves, then retries run out.
    let layer = format!("/blobs/{}", image.layers[0].digest());
    proxy.add_rule(Rule::get(&layer, Action::Reset { after_bytes: 10 }).every());
    let local = local_store();
    let (cfg, _) = pull_config(&local.store);
    let cfg = cfg
        .with_registries(Registries::new().with_mirror(&upstream.host(), &proxy.host()))
        .with_retry_policy(quick_retries().with_max_attempts(2));
    let err = pull(&cfg, &image_ref(&upstream.host(), "library/app:1"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), hoist_distribution::ErrorKind::Network, "{err}");
    assert!(local.store.references().unwrap().is_empty());
    // No fallback to the registry happened: every layer GET went to the mirror.
    assert_eq!(proxy.count(&Matcher::get(&layer)), 2);
}
