//! Pushes: to an empty registry and back, re-pushes, cross-repository mounts, resumed uploads.

use hoist_distribution::{ErrorKind, PushOutcome, pull, push};
use hoist_registry::manifest::{DOCKER_LIST, DOCKER_MANIFEST, OCI_MANIFEST};
use hoist_test_support::{Action, FaultProxy, Matcher, Rule};
use http::Method;

use crate::*;

/// Pulls `name` from `host` into `store`.
async fn pull_into(store: &Store, host: &str, name: &str) -> hoist_distribution::PullResult {
    let (cfg, _) = pull_config(store);
    pull(&cfg, &image_ref(host, name)).await.unwrap()
}

/// Re-tags a pulled image in the local store under another name.
fn tag(store: &Store, from: &str, to: &str) {
    let target = store.resolve(from).unwrap().unwrap();
    store.add_reference(to, &target).unwrap();
}

#[tokio::test]
async fn an_image_pushed_to_an_empty_registry_pulls_back_with_the_same_digests() {
    let source = start_registry().await;
    let image = push_image(
        &repo(&source.host(), "src/app"),
        "1",
        OCI_MANIFEST,
        "linux/amd64",
        &[
            Layer::oci_gzip(&[("a", &noise(300_000, 11)[..])]),
            Layer::zstd(&[("b", b"bee")]),
        ],
    )
    .await;
    let local = local_store();
    pull_into(&local.store, &source.host(), "src/app:1").await;

    let target = start_registry().await;
    let dst = format!("{}/dst/app:2", target.host());
    tag(&local.store, &format!("{}/src/app:1", source.host()), &dst);
    let (cfg, rec) = push_config(&local.store);
    let result = push(&cfg, &hoist_distribution::parse_reference(&dst).unwrap())
        .await
        .unwrap();
    assert_eq!(result.digest, image.digest);
    assert!(
        result
            .layers
            .iter()
            .all(|l| l.outcome == PushOutcome::Uploaded),
        "{result:?}"
    );
    for l in &image.layers {
        let actions = rec.actions(&short(&l.digest()));
        assert!(actions.iter().any(|a| a == "Pushing"), "{actions:?}");
        assert_eq!(
            actions.last().map(String::as_str),
            Some("Pushed"),
            "{actions:?}"
        );
    }

    // The registry serves the same manifest; a fresh store pulls the same image back.
    let head = repo(&target.host(), "dst/app")
        .head_manifest("2")
        .await
        .unwrap();
    assert_eq!(head.digest, Some(image.digest.clone()));
    let other = local_store();
    let back = pull_into(&other.store, &target.host(), "dst/app:2").await;
    assert_eq!(back.digest, image.digest);
    assert_eq!(back.config, image.config);
    let out = other.dir.path().join("rootfs");
    unpack(&other.store, &image.top_chain(), &out);
    assert_eq!(std::fs::read(out.join("b")).unwrap(), b"bee");
}

#[tokio::test]
async fn pushing_the_same_image_again_sends_only_head_requests() {
    let source = start_registry().await;
    push_image(
        &repo(&source.host(), "src/app"),
        "1",
        DOCKER_MANIFEST,
        "linux/amd64",
        &[Layer::gzip(&[("x", b"x")]), Layer::gzip(&[("y", b"y")])],
    )
    .await;
    let local = local_store();
    pull_into(&local.store, &source.host(), "src/app:1").await;
    let target = start_registry().await;
    let proxy = FaultProxy::start(&target.url()).await.unwrap();
    let dst = format!("{}/dst/app:1", proxy.host());
    tag(&local.store, &format!("{}/src/app:1", source.host()), &dst);
    let reference = hoist_distribution::parse_reference(&dst).unwrap();
    let (cfg, _) = push_config(&local.store);
    push(&cfg, &reference).await.unwrap();
    assert!(proxy.count(&Matcher::new(Method::PUT, "/manifests/")) == 1);

    proxy.clear_log();
    let (cfg, rec) = push_config(&local.store);
    let again = push(&cfg, &reference).await.unwrap();
    let not_head: Vec<_> = proxy
        .log()
        .into_iter()
        .filter(|e| e.method != Method::HEAD && e.path != "/v2/")
        .collect();
    assert!(not_head.is_empty(), "{not_head:#?}");
    assert!(proxy.count(&Matcher::head("/")) >= 4);
    assert!(
        again
            .layers
            .iter()
            .all(|l| l.outcome == PushOutcome::Exists)
    );
    for l in &again.layers {
        let actions = rec.actions(&short(&l.digest));
        assert_eq!(
            actions.last().map(String::as_str),
            Some("Layer already exists"),
            "{actions:?}"
        );
    }
}

#[tokio::test]
async fn a_layer_known_in_another_repository_of_the_registry_is_mounted() {
    let registry = start_registry().await;
    let host = registry.host();
    let image = push_image(
        &repo(&host, "team/base"),
        "1",
        DOCKER_MANIFEST,
        "linux/amd64",
        &[Layer::gzip(&[("base", &noise(100_000, 12)[..])])],
    )
    .await;
    let local = local_store();
    pull_into(&local.store, &host, "team/base:1").await;
    let proxy = FaultProxy::start(&registry.url()).await.unwrap();
    // Through the proxy the registry has another name: tell the store it saw the blob there.
    let now = std::time::SystemTime::now();
    local
        .store
        .metadata()
        .record_location(&image.layers[0].digest(), &proxy.host(), "team/base", now)
        .unwrap();
    let dst = format!("{}/team/derived:1", proxy.host());
    tag(&local.store, &format!("{host}/team/base:1"), &dst);
    let (cfg, rec) = push_config(&local.store);
    let result = push(&cfg, &hoist_distribution::parse_reference(&dst).unwrap())
        .await
        .unwrap();
    assert_eq!(
        result.layers[0].outcome,
        PushOutcome::Mounted {
            from: "team/base".into()
        }
    );
    let id = short(&image.layers[0].digest());
    assert_eq!(
        rec.actions(&id).last().map(String::as_str),
        Some("Mounted from team/base")
    );
    // No layer bytes were uploaded: no PATCH, and the only blob PUT is the config's.
    assert_eq!(
        proxy.count(&Matcher::new(Method::PATCH, "/blobs/uploads/")),
        0
    );
    let mounts: Vec<_> = proxy
        .log()
        .into_iter()
        .filter(|e| {
            e.method == Method::POST && e.query.as_deref().is_some_and(|q| q.contains("mount="))
        })
        .collect();
    assert_eq!(mounts.len(), 1, "{mounts:#?}");
    assert_eq!(
        repo(&host, "team/derived")
            .head_manifest("1")
            .await
            .unwrap()
            .digest,
        Some(image.digest.clone())
    );
    // The new repository is now recorded as a source too.
    let sources = local
        .store
        .metadata()
        .locations(&image.layers[0].digest(), Some(&proxy.host()))
        .unwrap();
    assert!(sources.iter().any(|l| l.repository == "team/derived"));
}

#[tokio::test]
async fn an_interrupted_chunked_upload_resumes_from_the_registry_offset() {
    let source = start_registry().await;
    let size = 2 << 20;
    let image = push_image(
        &repo(&source.host(), "src/big"),
        "1",
        DOCKER_MANIFEST,
        "linux/amd64",
        &[Layer::gzip(&[("big", &noise(size, 13)[..])])],
    )
    .await;
    let local = local_store();
    pull_into(&local.store, &source.host(), "src/big:1").await;
    let target = start_registry().await;
    let proxy = FaultProxy::start(&target.url()).await.unwrap();
    // The third chunk's answer never arrives.
    proxy.add_rule(
        Rule::new(
            Matcher::new(Method::PATCH, "/blobs/uploads/"),
            Action::ResetBeforeResponse,
        )
        .nth(3),
    );
    let dst = format!("{}/dst/big:1", proxy.host());
    tag(&local.store, &format!("{}/src/big:1", source.host()), &dst);
    let (cfg, _) = push_config(&local.store);
    let cfg = cfg.with_chunk_size(512 << 10);
    let result = push(&cfg, &hoist_distribution::parse_reference(&dst).unwrap())
        .await
        .unwrap();
    assert_eq!(result.digest, image.digest);
    // One upload session: the retry asked where it stood and went on.
    assert_eq!(
        proxy.count(&Matcher::new(Method::POST, "/blobs/uploads/")),
        2,
        "{:#?}",
        proxy.log()
    );
    let patches = proxy.count(&Matcher::new(Method::PATCH, "/blobs/uploads/"));
    let chunks = image.layers[0].blob.len().div_ceil(512 << 10);
    assert!(
        patches <= chunks + 1,
        "{patches} PATCHes for {chunks} chunks"
    );
    let other = local_store();
    let back = pull_into(&other.store, &target.host(), "dst/big:1").await;
    assert_eq!(back.manifest, image.digest);
}

#[tokio::test]
async fn pushing_an_image_not_in_the_store_is_invalid_input() {
    let registry = start_registry().await;
    let local = local_store();
    let (cfg, _) = push_config(&local.store);
    let reference = image_ref(&registry.host(), "not/here:1");
    let err = push(&cfg, &reference).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    assert!(err.to_string().contains("no such image"), "{err}");
}

#[tokio::test]
async fn an_index_pulled_for_one_platform_pushes_that_platform() {
    let source = start_registry().await;
    let r = repo(&source.host(), "multi/src");
    let amd = push_image(
        &r,
        "amd",
        DOCKER_MANIFEST,
        "linux/amd64",
        &[Layer::gzip(&[("p", b"amd")])],
    )
    .await;
    let arm = push_image(
        &r,
        "arm",
        DOCKER_MANIFEST,
        "linux/arm64",
        &[Layer::gzip(&[("p", b"arm")])],
    )
    .await;
    push_index(
        &r,
        "1",
        DOCKER_LIST,
        &[
            (
                DOCKER_MANIFEST,
                &amd.digest,
                amd.manifest.len(),
                Some("linux/amd64"),
            ),
            (
                DOCKER_MANIFEST,
                &arm.digest,
                arm.manifest.len(),
                Some("linux/arm64"),
            ),
        ],
    )
    .await;
    let local = local_store();
    let (cfg, _) = pull_config(&local.store);
    pull(
        &cfg.with_platform(platform("linux/arm64")),
        &image_ref(&source.host(), "multi/src:1"),
    )
    .await
    .unwrap();
    let target = start_registry().await;
    let dst = format!("{}/multi/dst:1", target.host());
    tag(
        &local.store,
        &format!("{}/multi/src:1", source.host()),
        &dst,
    );
    let (cfg, _) = push_config(&local.store);
    let result = push(
        &cfg.with_platform(platform("linux/arm64")),
        &hoist_distribution::parse_reference(&dst).unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(result.digest, arm.digest);
    let head = repo(&target.host(), "multi/dst")
        .head_manifest("1")
        .await
        .unwrap();
    assert_eq!(head.digest, Some(arm.digest.clone()));
}

#[tokio::test]
async fn an_index_whose_images_are_all_stored_is_pushed_whole() {
    let source = start_registry().await;
    let r = repo(&source.host(), "multi/all");
    let amd = push_image(
        &r,
        "amd",
        OCI_MANIFEST,
        "linux/amd64",
        &[Layer::gzip(&[("p", b"amd")])],
    )
    .await;
    let arm = push_image(
        &r,
        "arm",
        OCI_MANIFEST,
        "linux/arm64",
        &[Layer::gzip(&[("p", b"arm")])],
    )
    .await;
    let (index, _) = push_index(
        &r,
        "1",
        hoist_registry::manifest::OCI_INDEX,
        &[
            (
                OCI_MANIFEST,
                &amd.digest,
                amd.manifest.len(),
                Some("linux/amd64"),
            ),
            (
                OCI_MANIFEST,
                &arm.digest,
                arm.manifest.len(),
                Some("linux/arm64"),
            ),
        ],
    )
    .await;
    let local = local_store();
    let (cfg, _) = pull_config(&local.store);
    for p in ["linux/amd64", "linux/arm64"] {
        pull(
            &cfg.clone().with_platform(platform(p)),
            &image_ref(&source.host(), "multi/all:1"),
        )
        .await
        .unwrap();
    }
    let target = start_registry().await;
    let dst = format!("{}/multi/copy:1", target.host());
    tag(
        &local.store,
        &format!("{}/multi/all:1", source.host()),
        &dst,
    );
    let (cfg, _) = push_config(&local.store);
    let result = push(&cfg, &hoist_distribution::parse_reference(&dst).unwrap())
        .await
        .unwrap();
    assert_eq!(result.digest, index);
    assert_eq!(result.layers.len(), 2);
    let t = repo(&target.host(), "multi/copy");
    assert_eq!(
        t.head_manifest("1").await.unwrap().digest,
        Some(index.clone())
    );
    for d in [&amd.digest, &arm.digest] {
        assert!(t.manifest_exists(d.as_ref()).await.unwrap());
    }
}
