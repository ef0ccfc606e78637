//! Pulls of every manifest kind, platform selection, verification and what is recorded.

use std::sync::{Arc, Mutex};

use hoist_distribution::{Error, ErrorKind, ImageEvent, pull, pull_all_tags};
use hoist_registry::manifest::{DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST};
use hoist_test_support::{FaultProxy, Matcher};

use crate::*;

#[tokio::test]
async fn a_docker_schema2_image_is_pulled_verified_unpacked_and_recorded() {
    let registry = start_registry().await;
    let host = registry.host();
    let r = repo(&host, "team/app");
    let base = Layer::gzip(&[("etc/os-release", b"ID=hoist\n"), ("bin/sh", b"#!sh")]);
    let top = Layer::plain(&[("app/main", b"print('hi')")], DOCKER_LAYER_TAR);
    let image = push_image(&r, "1.0", DOCKER_MANIFEST, "linux/amd64", &[base, top]).await;

    let local = local_store();
    let (mut cfg, rec) = pull_config(&local.store);
    let events = Arc::new(Mutex::new(Vec::<ImageEvent>::new()));
    let sink = Arc::clone(&events);
    cfg = cfg.with_event_logger(Arc::new(move |e: &ImageEvent| {
        sink.lock().unwrap().push(e.clone())
    }));
    let reference = image_ref(&host, "team/app:1.0");
    let result = pull(&cfg, &reference).await.unwrap();

    assert_eq!(result.digest, image.digest);
    assert_eq!(result.manifest, image.digest);
    assert_eq!(result.config, image.config);
    assert_eq!(result.reference, format!("{host}/team/app:1.0"));
    let layer_digests: Vec<Digest> = result.layers.iter().map(|l| l.digest.clone()).collect();
    assert_eq!(
        layer_digests,
        image.layers.iter().map(Layer::digest).collect::<Vec<_>>()
    );
    let diff_ids: Vec<Digest> = result.layers.iter().map(|l| l.diff_id.clone()).collect();
    assert_eq!(diff_ids, image.diff_ids());
    assert!(!result.mirror);
    let blob_bytes: u64 = image.layers.iter().map(|l| l.blob.len() as u64).sum();
    assert!(
        result.bytes_fetched >= blob_bytes,
        "{}",
        result.bytes_fetched
    );

    // Recorded: reference, blobs, image record, DiffIDs, source repository.
    let target = local.store.resolve(&result.reference).unwrap().unwrap();
    assert_eq!(target.digest(), &image.digest);
    for l in &image.layers {
        assert!(local.store.content().contains(&l.digest()).unwrap());
        assert_eq!(
            local.store.metadata().diff_id(&l.digest()).unwrap(),
            Some(l.diff_id())
        );
        let locs = local
            .store
            .metadata()
            .locations(&l.digest(), Some(&host))
            .unwrap();
        assert_eq!(locs[0].repository, "team/app");
    }
    let record = local
        .store
        .metadata()
        .image(&image.digest)
        .unwrap()
        .unwrap();
    assert_eq!(record.config, image.config);
    assert_eq!(record.platform.architecture, "amd64");
    assert_eq!(record.created.as_deref(), Some("2024-05-01T12:00:00Z"));

    // The layers are in the layer store with the right content.
    let out = local.dir.path().join("rootfs");
    unpack(&local.store, &image.top_chain(), &out);
    assert_eq!(
        std::fs::read(out.join("etc/os-release")).unwrap(),
        b"ID=hoist\n"
    );
    assert_eq!(std::fs::read(out.join("app/main")).unwrap(), b"print('hi')");

    // Progress as Docker shows it (watchers may skip intermediate states, never the last one),
    // and one event.
    for layer in &image.layers {
        let id = short(&layer.digest());
        let actions = rec.actions(&id);
        let known = [
            "Pulling fs layer",
            "Waiting",
            "Downloading",
            "Verifying Checksum",
            "Extracting",
            "Download complete",
            "Pull complete",
        ];
        assert!(
            actions.iter().all(|a| known.contains(&a.as_str())),
            "{actions:?}"
        );
        assert_eq!(actions.last().map(String::as_str), Some("Pull complete"));
        for p in rec
            .all()
            .iter()
            .filter(|p| p.id == id && p.action == "Downloading")
        {
            assert_eq!(p.total, Some(layer.blob.len() as u64));
            assert!(p.current <= layer.blob.len() as u64);
        }
    }
    let events = events.lock().unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].digest, image.digest);
    assert_eq!(events[0].action.as_str(), "pull");
    // The engine gave back every layer reference it took.
    assert_eq!(cfg.download_manager.store().held_leases(), 0);
}

#[tokio::test]
async fn an_oci_image_with_zstd_gzip_and_plain_layers_unpacks_in_order() {
    let registry = start_registry().await;
    let host = registry.host();
    let r = repo(&host, "oci/img");
    let layers = [
        Layer::zstd(&[("a.txt", b"from zstd"), ("shared", b"one")]),
        Layer::oci_gzip(&[("b.txt", b"from gzip"), ("shared", b"two")]),
        Layer::plain(&[("c.txt", b"from tar")], OCI_LAYER_TAR),
    ];
    let image = push_image(&r, "v1", OCI_MANIFEST, "linux/amd64", &layers).await;
    let local = local_store();
    let (cfg, _) = pull_config(&local.store);
    let result = pull(&cfg, &image_ref(&host, "oci/img:v1")).await.unwrap();
    assert_eq!(result.manifest, image.digest);
    let out = local.dir.path().join("rootfs");
    unpack(&local.store, &image.top_chain(), &out);
    assert_eq!(std::fs::read(out.join("a.txt")).unwrap(), b"from zstd");
    assert_eq!(std::fs::read(out.join("b.txt")).unwrap(), b"from gzip");
    assert_eq!(std::fs::read(out.join("c.txt")).unwrap(), b"from tar");
    // Upper layers win.
    assert_eq!(std::fs::read(out.join("shared")).unwrap(), b"two");
}

/// Pushes one image per platform and returns them.
async fn per_platform(r: &Repository, platforms: &[&str]) -> Vec<Pushed> {
    let mut out = Vec::new();
    for (i, p) in platforms.iter().enumerate() {
        let layer = Layer::gzip(&[("platform", p.as_bytes()), ("n", &[i as u8])]);
        out.push(push_image(r, &format!("p{i}"), DOCKER_MANIFEST, p, &[layer]).await);
    }
    out
}

#[tokio::test]
async fn a_docker_list_gives_the_image_of_the_requested_platform() {
    let registry = start_registry().await;
    let host = registry.host();
    let r = repo(&host, "multi/list");
    let images = per_platform(&r, &["linux/amd64", "linux/arm64/v8", "linux/arm/v7"]).await;
    let entries: Vec<_> = images
        .iter()
        .zip(["linux/amd64", "linux/arm64/v8", "linux/arm/v7"])
        .map(|(i, p)| (DOCKER_MANIFEST, &i.digest, i.manifest.len(), Some(p)))
        .collect();
    let (list_digest, _) = push_index(&r, "latest", DOCKER_LIST, &entries).await;

    for (wanted, expected) in [("linux/aarch64", 1), ("linux/arm", 2), ("linux/x86_64", 0)] {
        let local = local_store();
        let (cfg, _) = pull_config(&local.store);
        let cfg = cfg.with_platform(platform(wanted));
        let result = pull(&cfg, &image_ref(&host, "multi/list")).await.unwrap();
        assert_eq!(result.digest, list_digest, "{wanted}");
        assert_eq!(result.manifest, images[expected].digest, "{wanted}");
        assert_eq!(result.config, images[expected].config, "{wanted}");
        // The reference names the list; the image record names the platform's manifest.
        let name = format!("{host}/multi/list:latest");
        assert_eq!(
            local.store.resolve(&name).unwrap().unwrap().digest(),
            &list_digest
        );
        assert!(
            local
                .store
                .metadata()
                .image(&images[expected].digest)
                .unwrap()
                .is_some(),
            "{wanted}"
        );
    }

    let local = local_store();
    let (cfg, _) = pull_config(&local.store);
    let err = pull(
        &cfg.with_platform(platform("linux/s390x")),
        &image_ref(&host, "multi/list"),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::NoMatchingPlatform { .. }), "{err}");
    assert_eq!(err.kind(), ErrorKind::Unsupported);
    assert!(err.to_string().contains("linux/arm64/v8"), "{err}");
}

#[tokio::test]
async fn a_nested_oci_index_is_followed_and_the_host_platform_is_the_default() {
    let registry = start_registry().await;
    let host = registry.host();
    let r = repo(&host, "multi/nested");
    let here = Platform::host().to_string();
    let other = if Platform::host().architecture == "s390x" {
        "linux/ppc64le"
    } else {
        "linux/s390x"
    };
    let images = per_platform(&r, &[other, &here]).await;
    // Inner index: the host image; outer index: the other image first, then the inner index
    // (without a platform, so it ranks last), then an attestation-like entry.
    let (inner, inner_bytes) = push_index(
        &r,
        "inner",
        OCI_INDEX,
        &[(
            DOCKER_MANIFEST,
            &images[1].digest,
            images[1].manifest.len(),
            Some(here.as_str()),
        )],
    )
    .await;
    let (outer, _) = push_index(
        &r,
        "outer",
        OCI_INDEX,
        &[
            (
                DOCKER_MANIFEST,
                &images[0].digest,
                images[0].manifest.len(),
                Some(other),
            ),
            (OCI_INDEX, &inner, inner_bytes.len(), None),
            (
                DOCKER_MANIFEST,
                &images[0].digest,
                images[0].manifest.len(),
                Some("unknown/unknown"),
            ),
        ],
    )
    .await;
    let local = local_store();
    let (cfg, _) = pull_config(&local.store);
    let result = pull(&cfg, &image_ref(&host, "multi/nested:outer"))
        .await
        .unwrap();
    assert_eq!(result.digest, outer);
    assert_eq!(result.manifest, images[1].digest);
    // Every manifest on the way is stored.
    for d in [&outer, &inner, &images[1].digest] {
        assert!(local.store.content().contains(d).unwrap());
    }
    let out = local.dir.path().join("rootfs");
    unpack(&local.store, &images[1].top_chain(), &out);
    assert_eq!(
        std::fs::read(out.join("platform")).unwrap(),
        here.as_bytes()
    );
}

#[tokio::test]
async fn a_pull_by_digest_is_recorded_by_digest_and_checked() {
    let registry = start_registry().await;
    let host = registry.host();
    let r = repo(&host, "by/digest");
    let image = push_image(
        &r,
        "t",
        OCI_MANIFEST,
        "linux/amd64",
        &[Layer::gzip(&[("f", b"x")])],
    )
    .await;
    let local = local_store();
    let (cfg, _) = pull_config(&local.store);
    let reference = image_ref(&host, &format!("by/digest@{}", image.digest));
    let result = pull(&cfg, &reference).await.unwrap();
    assert_eq!(
        result.reference,
        format!("{host}/by/digest@{}", image.digest)
    );
    assert!(local.store.resolve(&result.reference).unwrap().is_some());

    // A digest the registry does not have.
    let missing = sha(b"no such manifest");
    let reference = image_ref(&host, &format!("by/digest@{missing}"));
    let err = pull(&cfg, &reference).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFoundOrDenied, "{err}");

    // A manifest corrupted on the way is refused (not stored, not referenced).
    let proxy = FaultProxy::start(&registry.url()).await.unwrap();
    proxy.add_rule(hoist_test_support::Rule::get(
        "/manifests/",
        hoist_test_support::Action::FlipByte { offset: 20 },
    ));
    let local = local_store();
    let (cfg, _) = pull_config(&local.store);
    let reference = image_ref(&proxy.host(), &format!("by/digest@{}", image.digest));
    let err = pull(&cfg, &reference).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
    assert!(
        err.to_string().contains("digest mismatch")
            || hoist_xfer::describe(&err).contains("digest mismatch"),
        "{err}"
    );
    assert!(local.store.references().unwrap().is_empty());
    assert!(!local.store.content().contains(&image.digest).unwrap());
}

#[tokio::test]
async fn two_pulls_sharing_layers_fetch_the_shared_blob_once() {
    let registry = start_registry().await;
    let proxy = FaultProxy::start(&registry.url()).await.unwrap();
    let host = registry.host();
    let base = Layer::gzip(&[("base", &noise(200_000, 1)[..])]);
    let a = push_image(
        &repo(&host, "share/a"),
        "1",
        DOCKER_MANIFEST,
        "linux/amd64",
        &[base.clone(), Layer::gzip(&[("a", b"a")])],
    )
    .await;
    let b = push_image(
        &repo(&host, "share/b"),
        "1",
        DOCKER_MANIFEST,
        "linux/amd64",
        &[base.clone(), Layer::gzip(&[("b", b"b")])],
    )
    .await;
    let local = local_store();
    let (cfg, rec) = pull_config(&local.store);
    pull(&cfg, &image_ref(&proxy.host(), "share/a:1"))
        .await
        .unwrap();
    let second = pull(&cfg, &image_ref(&proxy.host(), "share/b:1"))
        .await
        .unwrap();
    assert_eq!(second.manifest, b.digest);
    let base_gets = proxy.count(&Matcher::get(&format!("/blobs/{}", base.digest())));
    assert_eq!(base_gets, 1, "{:#?}", proxy.log());
    assert!(
        rec.actions(&short(&base.digest()))
            .iter()
            .any(|a| a == "Already exists")
    );
    // Both images unpack fully.
    for (img, file) in [(&a, "a"), (&b, "b")] {
        let out = local.dir.path().join(format!("root-{file}"));
        unpack(&local.store, &img.top_chain(), &out);
        assert_eq!(std::fs::read(out.join(file)).unwrap(), file.as_bytes());
        assert_eq!(std::fs::read(out.join("base")).unwrap().len(), 200_000);
    }
}

#[tokio::test]
async fn concurrent_pulls_of_images_sharing_a_base_move_it_once() {
    let registry = start_registry().await;
    let proxy = FaultProxy::start(&registry.url()).await.unwrap();
    let host = registry.host();
    let base = Layer::gzip(&[("base", &noise(500_000, 2)[..])]);
    for name in ["c/one", "c/two"] {
        push_image(
            &repo(&host, name),
            "1",
            DOCKER_MANIFEST,
            "linux/amd64",
            &[base.clone(), Layer::gzip(&[(name, name.as_bytes())])],
        )
        .await;
    }
    let local = local_store();
    let (cfg, _) = pull_config(&local.store);
    let (r1, r2) = (
        image_ref(&proxy.host(), "c/one:1"),
        image_ref(&proxy.host(), "c/two:1"),
    );
    let (one, two) = tokio::join!(pull(&cfg, &r1), pull(&cfg, &r2));
    one.unwrap();
    two.unwrap();
    assert_eq!(
        proxy.count(&Matcher::get(&format!("/blobs/{}", base.digest()))),
        1
    );
}

#[tokio::test]
async fn a_layer_whose_content_differs_from_the_config_diff_id_fails_the_pull() {
    let registry = start_registry().await;
    let host = registry.host();
    let r = repo(&host, "bad/diffid");
    let layer = Layer::gzip(&[("f", b"real content")]);
    let lie = sha(b"some other tar");
    let config = config_json("linux/amd64", std::slice::from_ref(&lie));
    push_raw(&r, "1", DOCKER_MANIFEST, DOCKER_CONFIG, &config, &[layer]).await;
    let local = local_store();
    let (cfg, _) = pull_config(&local.store);
    let err = pull(&cfg, &image_ref(&host, "bad/diffid:1"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
    assert!(
        hoist_xfer::describe(&err).contains("DiffID mismatch"),
        "{err}"
    );
    assert!(local.store.references().unwrap().is_empty());
    assert!(local.store.layers().unwrap().list().unwrap().is_empty());
}

#[tokio::test]
async fn no_unpack_fetches_and_verifies_blobs_only() {
    let registry = start_registry().await;
    let host = registry.host();
    let r = repo(&host, "blobs/only");
    let image = push_image(
        &r,
        "1",
        OCI_MANIFEST,
        "linux/amd64",
        &[Layer::zstd(&[("z", b"z")]), Layer::gzip(&[("g", b"g")])],
    )
    .await;
    let local = local_store();
    let (cfg, rec) = pull_config(&local.store);
    let result = pull(
        &cfg.clone().with_unpack(false),
        &image_ref(&host, "blobs/only:1"),
    )
    .await
    .unwrap();
    assert_eq!(result.manifest, image.digest);
    for l in &image.layers {
        assert!(local.store.content().contains(&l.digest()).unwrap());
    }
    assert!(local.store.layers().unwrap().list().unwrap().is_empty());
    assert!(local.store.resolve(&result.reference).unwrap().is_some());
    assert!(
        rec.actions(&short(&image.layers[0].digest()))
            .iter()
            .any(|a| a == "Pull complete")
    );

    // Pulling again without unpacking: everything exists.
    let rec2 = Recorder::default();
    let cfg2 = cfg
        .clone()
        .with_unpack(false)
        .with_progress(Arc::new(rec2.clone()));
    pull(&cfg2, &image_ref(&host, "blobs/only:1"))
        .await
        .unwrap();
    for l in &image.layers {
        assert!(
            rec2.actions(&short(&l.digest()))
                .iter()
                .any(|a| a == "Already exists")
        );
    }

    // A later pull with unpacking extracts from the stored blobs, fetching no layer again.
    let proxy = FaultProxy::start(&registry.url()).await.unwrap();
    pull(&cfg, &image_ref(&proxy.host(), "blobs/only:1"))
        .await
        .unwrap();
    for l in &image.layers {
        assert_eq!(
            proxy.count(&Matcher::get(&format!("/blobs/{}", l.digest()))),
            0
        );
    }
    let out = local.dir.path().join("rootfs");
    unpack(&local.store, &image.top_chain(), &out);
    assert_eq!(std::fs::read(out.join("z")).unwrap(), b"z");
}

#[tokio::test]
async fn all_tags_pulls_every_tag() {
    let registry = start_registry().await;
    let host = registry.host();
    let r = repo(&host, "tags/many");
    let mut digests = Vec::new();
    for t in ["a", "b", "c", "d"] {
        let img = push_image(
            &r,
            t,
            OCI_MANIFEST,
            "linux/amd64",
            &[Layer::gzip(&[(t, t.as_bytes())])],
        )
        .await;
        digests.push(img.digest);
    }
    let local = local_store();
    let (cfg, _) = pull_config(&local.store);
    let results = pull_all_tags(&cfg, &image_ref(&host, "tags/many"))
        .await
        .unwrap();
    let got: Vec<Digest> = results.iter().map(|r| r.digest.clone()).collect();
    assert_eq!(got, digests);
    for t in ["a", "b", "c", "d"] {
        assert!(
            local
                .store
                .resolve(&format!("{host}/tags/many:{t}"))
                .unwrap()
                .is_some()
        );
    }
}

#[tokio::test]
async fn a_missing_image_is_not_found_or_denied_with_a_login_hint() {
    let registry = start_registry().await;
    let host = registry.host();
    push_image(&repo(&host, "there"), "1", OCI_MANIFEST, "linux/amd64", &[]).await;
    let local = local_store();
    let (cfg, _) = pull_config(&local.store);
    for missing in ["there:2", "nowhere:1"] {
        let err = pull(&cfg, &image_ref(&host, missing)).await.unwrap_err();
        assert!(matches!(err, Error::NotFoundOrDenied { .. }), "{err}");
        assert!(
            err.to_string().contains(&format!("hoist login {host}")),
            "{err}"
        );
    }
}

#[tokio::test]
async fn a_large_layer_is_fetched_in_ranged_windows_and_unpacks_right() {
    const WINDOW: u64 = 4 << 20;
    let registry = start_registry().await;
    let proxy = FaultProxy::start(&registry.url()).await.unwrap();
    let big = Layer::gzip(&[("big", &noise(20 << 20, 7)[..])]);
    let small = Layer::gzip(&[("small", b"small")]);
    let img = push_image(
        &repo(&registry.host(), "win/big"),
        "1",
        DOCKER_MANIFEST,
        "linux/amd64",
        &[big.clone(), small],
    )
    .await;
    let local = local_store();
    let (cfg, _rec) = pull_config(&local.store);
    let cfg = cfg.with_fetch_window(WINDOW);
    pull(&cfg, &image_ref(&proxy.host(), "win/big:1"))
        .await
        .unwrap();
    let gets = proxy.requests(&Matcher::get(&format!("/blobs/{}", big.digest())));
    let size = big.blob.len() as u64;
    assert_eq!(gets.len() as u64, size.div_ceil(WINDOW), "{gets:#?}");
    for (i, g) in gets.iter().enumerate() {
        let first = i as u64 * WINDOW;
        let last = (first + WINDOW).min(size) - 1;
        assert_eq!(g.range.as_deref(), Some(&*format!("bytes={first}-{last}")));
        assert_eq!(g.status, Some(206));
    }
    let out = local.dir.path().join("root");
    unpack(&local.store, &img.top_chain(), &out);
    assert!(std::fs::read(out.join("big")).unwrap() == noise(20 << 20, 7));
}

#[tokio::test]
async fn a_fetch_window_of_zero_fetches_each_layer_with_one_request() {
    let registry = start_registry().await;
    let proxy = FaultProxy::start(&registry.url()).await.unwrap();
    let big = Layer::gzip(&[("big", &noise(9 << 20, 8)[..])]);
    push_image(
        &repo(&registry.host(), "win/off"),
        "1",
        DOCKER_MANIFEST,
        "linux/amd64",
        std::slice::from_ref(&big),
    )
    .await;
    let local = local_store();
    let (cfg, _rec) = pull_config(&local.store);
    pull(
        &cfg.with_fetch_window(0),
        &image_ref(&proxy.host(), "win/off:1"),
    )
    .await
    .unwrap();
    let gets = proxy.requests(&Matcher::get(&format!("/blobs/{}", big.digest())));
    assert_eq!(gets.len(), 1);
    assert_eq!(gets[0].range, None);
}
