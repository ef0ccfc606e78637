//! Manifests that lie: the pull fails with a clear error and nothing unverified is kept.

use hoist_distribution::{ErrorKind, pull};
use hoist_registry::manifest::OCI_MANIFEST;
use serde_json::json;

use crate::*;

/// Pushes an image whose manifest gives layer 0 the size `declared` instead of its real size.
async fn push_lying_size(repo: &Repository, tag: &str, layer: &Layer, declared: u64) {
    let config = config_json("linux/amd64", &[layer.diff_id()]);
    let config_d = push_blob(repo, &config).await;
    let layer_d = push_blob(repo, &layer.blob).await;
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_d.to_string(), "size": config.len()},
        "layers": [{"mediaType": layer.media_type, "digest": layer_d.to_string(), "size": declared}],
    }))
    .unwrap();
    repo.put_manifest(tag, OCI_MANIFEST, manifest.into())
        .await
        .unwrap();
}

#[tokio::test]
async fn a_layer_larger_or_smaller_than_its_manifest_says_fails_and_nothing_is_kept() {
    let registry = start_registry().await;
    let host = registry.host();
    let r = repo(&host, "hostile/size");
    let layer = Layer::oci_gzip(&[("etc/data", &noise(200_000, 7))]);
    let real = layer.blob.len() as u64;
    push_lying_size(&r, "short", &layer, real - 1000).await;
    push_lying_size(&r, "long", &layer, real + 1000).await;

    for tag in ["short", "long"] {
        let local = local_store();
        let (cfg, _) = pull_config(&local.store);
        let cfg = cfg.with_platform(platform("linux/amd64"));
        let err = pull(&cfg, &image_ref(&host, &format!("hostile/size:{tag}")))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corrupt, "{tag}: {err}");
        assert!(
            err.to_string().contains(&layer.digest().to_string()),
            "{tag}: {err}"
        );
        assert!(local.store.references().unwrap().is_empty(), "{tag}");
        assert!(
            !local.store.content().contains(&layer.digest()).unwrap(),
            "{tag}: a blob of the wrong size became visible"
        );
        assert!(
            local.store.layers().unwrap().list().unwrap().is_empty(),
            "{tag}"
        );
    }
}
