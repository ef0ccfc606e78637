//! Non-distributable layers fetched from their descriptor `urls`, as the pull's
//! [`ForeignUrls`] policy allows: verified like registry bytes, sent no credentials, and
//! falling back to the registry when a URL fails.

use hoist_distribution::manifest::OCI_NONDIST_GZIP;
use hoist_distribution::{ErrorKind, ForeignUrls, pull};
use hoist_registry::auth::credentials::Credentials;
use hoist_store::FsckOptions;
use hoist_test_support::{Answer, HostileServer};

use crate::*;

const USER: &str = "foreign-user";
const PASSWORD: &str = "foreign-pw";

/// A registry that accepts manifests whose layers name loopback URLs; with basic auth when
/// `auth`.
async fn registry(auth: bool) -> Registry {
    let b = Registry::builder().allow_manifest_urls("^http://127\\.0\\.0\\.1:");
    let b = if auth {
        b.basic_auth(USER, PASSWORD)
    } else {
        b
    };
    b.start().await.expect("start the registry")
}

/// A client with credentials for every host given (the foreign ones included: none of them
/// may ever be sent to a layer URL).
fn client_for(hosts: &[String]) -> RegistryClient {
    hosts
        .iter()
        .fold(RegistryClient::builder(), |b, h| {
            b.credentials(h, Credentials::basic(USER, PASSWORD))
        })
        .build()
        .unwrap()
}

/// A server answering `/layer` with `bytes`, everything else 404.
async fn serving_layer(bytes: Vec<u8>) -> HostileServer {
    HostileServer::start(move |_, path| {
        if path == "/layer" {
            Answer::new("200 OK")
                .header("Content-Type", "application/octet-stream")
                .body(bytes.clone())
        } else {
            Answer::new("404 Not Found").body("")
        }
    })
    .await
    .unwrap()
}

fn the_layer() -> Layer {
    Layer {
        media_type: OCI_NONDIST_GZIP,
        ..Layer::oci_gzip(&[("Files/os-release", b"ID=foreign\n")])
    }
}

/// Pushes an OCI image whose one layer is `layer`, non-distributable with `urls`; its blob is
/// pushed to the registry only when `blob_in_registry`.
async fn push_foreign_image(
    repo: &Repository,
    layer: &Layer,
    urls: &[String],
    blob_in_registry: bool,
) -> Digest {
    let config = config_json("windows/amd64", &[layer.diff_id()]);
    let config_d = push_blob(repo, &config).await;
    if blob_in_registry {
        push_blob(repo, &layer.blob).await;
    }
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config_d.to_string(), "size": config.len()},
        "layers": [{"mediaType": OCI_NONDIST_GZIP, "digest": layer.digest().to_string(),
                    "size": layer.blob.len(), "urls": urls}],
    }))
    .unwrap();
    repo.put_manifest("1", OCI_MANIFEST, Bytes::from(manifest))
        .await
        .unwrap()
}

fn foreign_config(store: &Store, client: RegistryClient, policy: ForeignUrls) -> PullConfig {
    PullConfig::new(client, store.clone())
        .unwrap()
        .with_retry_policy(quick_retries())
        .with_platform(platform("windows/amd64"))
        .with_foreign_urls(policy)
}

/// fsck clean, no ingest left.
fn assert_clean(store: &Store) {
    let report = store.fsck(&FsckOptions::default()).unwrap();
    assert!(report.is_clean(), "{:?}", report.findings);
    assert!(store.content().ingests().unwrap().is_empty());
}

/// After a failed pull: fsck clean, and no ingest holds any byte (a layer the registry lacks
/// leaves an empty ingest for a later resume, as without URLs; the URLs' bad bytes are gone).
fn assert_nothing_kept(store: &Store) {
    let report = store.fsck(&FsckOptions::default()).unwrap();
    assert!(report.is_clean(), "{:?}", report.findings);
    for i in store.content().ingests().unwrap() {
        assert_eq!(i.offset, 0, "{} kept {} bytes", i.reference, i.offset);
    }
}

fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[tokio::test]
async fn an_allowed_url_serves_a_layer_the_registry_lacks_without_credentials() {
    let registry = registry(true).await;
    let foreign = serving_layer(the_layer().blob).await;
    let layer = the_layer();
    let client = client_for(&[registry.host(), foreign.host()]);
    let r = client.repository(Endpoint::new(registry.host(), Scheme::Http), "win/base");
    push_foreign_image(&r, &layer, &[format!("{}/layer", foreign.url())], false).await;

    let local = local_store();
    let cfg = foreign_config(
        &local.store,
        client,
        ForeignUrls::Hosts(vec![foreign.host()]),
    );
    let result = pull(&cfg, &image_ref(&registry.host(), "win/base:1"))
        .await
        .unwrap();
    assert_eq!(result.layers[0].digest, layer.digest());
    assert!(local.store.content().contains(&layer.digest()).unwrap());
    assert!(foreign.requests() >= 1);
    assert_eq!(
        foreign.requests_with_authorization(),
        0,
        "credentials went to a layer URL"
    );
    let dir = tempfile::tempdir().unwrap();
    unpack(&local.store, &result.layers[0].diff_id, dir.path());
    assert_eq!(
        std::fs::read(dir.path().join("Files/os-release")).unwrap(),
        b"ID=foreign\n"
    );
    assert_clean(&local.store);
}

#[tokio::test]
async fn urls_on_hosts_not_in_the_list_are_never_contacted() {
    let registry = registry(false).await;
    let foreign = serving_layer(the_layer().blob).await;
    let layer = the_layer();
    let r = repo(&registry.host(), "win/base");
    push_foreign_image(&r, &layer, &[format!("{}/layer", foreign.url())], false).await;

    let local = local_store();
    let other_port = format!("127.0.0.1:{}", registry.port());
    let cfg = foreign_config(
        &local.store,
        client(),
        ForeignUrls::Hosts(vec![other_port, "foreign.example".into()]),
    );
    let err = pull(&cfg, &image_ref(&registry.host(), "win/base:1"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFoundOrDenied, "{err}");
    assert_eq!(foreign.requests(), 0, "a URL on another host was followed");
    assert!(local.store.references().unwrap().is_empty());
    assert_nothing_kept(&local.store);
}

#[tokio::test]
async fn urls_serving_wrong_bytes_or_nothing_fall_back_to_the_registry() {
    let registry = registry(false).await;
    let layer = the_layer();
    let mut flipped = layer.blob.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0xff;
    let corrupt = serving_layer(flipped).await;
    let missing = serving_layer(Vec::new()).await;
    let r = repo(&registry.host(), "win/base");
    let urls = [
        format!("{}/layer", corrupt.url()),
        format!("{}/absent", missing.url()),
    ];
    push_foreign_image(&r, &layer, &urls, true).await;

    let local = local_store();
    let cfg = foreign_config(&local.store, client(), ForeignUrls::Any);
    let result = pull(&cfg, &image_ref(&registry.host(), "win/base:1"))
        .await
        .unwrap();
    assert_eq!(result.layers[0].digest, layer.digest());
    assert_eq!(corrupt.requests(), 1, "the corrupt URL was asked again");
    assert_eq!(missing.requests(), 1);
    let dir = tempfile::tempdir().unwrap();
    unpack(&local.store, &result.layers[0].diff_id, dir.path());
    assert_eq!(
        std::fs::read(dir.path().join("Files/os-release")).unwrap(),
        b"ID=foreign\n"
    );
    assert_clean(&local.store);
}

#[tokio::test]
async fn failing_urls_and_a_registry_without_the_blob_fail_naming_what_was_tried() {
    let registry = registry(false).await;
    let layer = the_layer();
    let mut flipped = layer.blob.clone();
    flipped[0] ^= 0xff;
    let corrupt = serving_layer(flipped).await;
    let missing = serving_layer(Vec::new()).await;
    let r = repo(&registry.host(), "win/base");
    let urls = [
        format!("{}/layer", corrupt.url()),
        format!("{}/absent", missing.url()),
    ];
    push_foreign_image(&r, &layer, &urls, false).await;

    let local = local_store();
    let cfg = foreign_config(&local.store, client(), ForeignUrls::Any);
    let err = pull(&cfg, &image_ref(&registry.host(), "win/base:1"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFoundOrDenied, "{err}");
    assert!(!err.is_retryable(), "{err}");
    let text = chain(&err);
    for u in &urls {
        assert!(text.contains(u.as_str()), "{u} not named in: {text}");
    }
    assert!(text.contains("corrupt"), "{text}");
    assert!(local.store.references().unwrap().is_empty());
    assert!(!local.store.content().contains(&layer.digest()).unwrap());
    assert_nothing_kept(&local.store);
}

#[tokio::test]
async fn a_url_that_breaks_off_mid_blob_is_resumed_from_the_registry() {
    let registry = registry(false).await;
    let big = noise(256 * 1024, 7);
    let layer = Layer {
        media_type: OCI_NONDIST_GZIP,
        ..Layer::oci_gzip(&[("Files/big", &big)])
    };
    let half = layer.blob[..layer.blob.len() / 2].to_vec();
    let full_len = layer.blob.len().to_string();
    // Announces the whole blob, sends half, closes.
    let breaking = HostileServer::start(move |_, _| {
        Answer::new("200 OK")
            .header("Content-Length", &full_len)
            .raw_body(half.clone())
    })
    .await
    .unwrap();
    let r = repo(&registry.host(), "win/base");
    push_foreign_image(&r, &layer, &[format!("{}/layer", breaking.url())], true).await;

    let local = local_store();
    let cfg = foreign_config(&local.store, client(), ForeignUrls::Any);
    let result = pull(&cfg, &image_ref(&registry.host(), "win/base:1"))
        .await
        .unwrap();
    assert_eq!(result.layers[0].digest, layer.digest());
    assert_eq!(breaking.requests(), 1, "the broken URL was asked again");
    // The registry sent the rest, not the whole blob again.
    assert!(
        result.bytes_fetched < layer.blob.len() as u64 + 4096,
        "{} bytes fetched for a {}-byte layer",
        result.bytes_fetched,
        layer.blob.len()
    );
    let dir = tempfile::tempdir().unwrap();
    unpack(&local.store, &result.layers[0].diff_id, dir.path());
    assert_eq!(std::fs::read(dir.path().join("Files/big")).unwrap(), big);
    assert_clean(&local.store);
}

#[tokio::test]
async fn a_push_leaves_foreign_layers_out_unless_asked_to_upload_them() {
    let registry = registry(false).await;
    let foreign = serving_layer(the_layer().blob).await;
    let layer = the_layer();
    let r = repo(&registry.host(), "win/base");
    push_foreign_image(&r, &layer, &[format!("{}/layer", foreign.url())], false).await;
    let local = local_store();
    let cfg = foreign_config(&local.store, client(), ForeignUrls::Any);
    let pulled = pull(&cfg, &image_ref(&registry.host(), "win/base:1"))
        .await
        .unwrap();
    let stored = local.store.resolve(&pulled.reference).unwrap().unwrap();

    for (repository, upload) in [("win/skip", false), ("win/all", true)] {
        let target = format!("{}/{repository}:1", registry.host());
        local.store.add_reference(&target, &stored).unwrap();
        let (cfg, progress) = push_config(&local.store);
        let cfg = cfg.with_push_foreign_layers(upload);
        let result = hoist_distribution::push(
            &cfg,
            &image_ref(&registry.host(), &format!("{repository}:1")),
        )
        .await
        .unwrap();
        assert_eq!(
            result.digest, pulled.digest,
            "the manifest is pushed unchanged"
        );
        let outcome = &result.layers[0].outcome;
        let in_registry = repo(&registry.host(), repository)
            .head_blob(&layer.digest())
            .await
            .unwrap()
            .is_some();
        if upload {
            assert_eq!(*outcome, hoist_distribution::PushOutcome::Uploaded);
            assert!(
                in_registry,
                "the foreign layer was asked for and not uploaded"
            );
        } else {
            assert_eq!(*outcome, hoist_distribution::PushOutcome::Foreign);
            assert!(!in_registry, "a foreign layer was uploaded by default");
            let id = short(&layer.digest());
            assert!(
                progress
                    .actions(&id)
                    .iter()
                    .any(|a| a == "Foreign layer, not pushed"),
                "{:?}",
                progress.actions(&id)
            );
        }
        // Either way the registry serves the image: its manifest names the layer's URLs.
        let manifest = repo(&registry.host(), repository)
            .get_manifest("1")
            .await
            .unwrap();
        assert_eq!(manifest.digest, pulled.digest);
        assert!(String::from_utf8_lossy(&manifest.bytes).contains("/layer"));
    }
}
