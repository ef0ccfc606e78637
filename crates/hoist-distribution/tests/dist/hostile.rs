//! Hostile images: manifests that lie or are malformed, descriptors pointing elsewhere, and a
//! decompression bomb. Each pull fails with a clear, typed error before fetching what it need
//! not, and nothing unverified is kept.

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

/// A registry that serves `objects` (path under `/v2/h/img/`, content type, bytes), each with
/// its digest in `Docker-Content-Digest`; `/v2/` answers 200 and everything else 404.
async fn serving(objects: Vec<(String, String, Vec<u8>)>) -> hoist_test_support::HostileServer {
    use hoist_test_support::{Answer, HostileServer};
    HostileServer::start(move |_, path| {
        if path == "/v2/" {
            return Answer::new("200 OK").body("{}");
        }
        for (p, media_type, bytes) in &objects {
            if path == format!("/v2/h/img/{p}") {
                return Answer::new("200 OK")
                    .header("Content-Type", media_type)
                    .header("Docker-Content-Digest", sha(bytes).as_ref())
                    .body(bytes.clone());
            }
        }
        Answer::new("404 Not Found")
            .header("Content-Type", "application/json")
            .body(r#"{"errors":[{"code":"BLOB_UNKNOWN","message":"unknown"}]}"#)
    })
    .await
    .unwrap()
}

/// A registry that serves one manifest, `bytes` as `media_type`, under `h/img:1`.
async fn serving_manifest(media_type: &str, bytes: Vec<u8>) -> hoist_test_support::HostileServer {
    serving(vec![("manifests/1".into(), media_type.into(), bytes)]).await
}

/// Pulls `h/img:1` from `server` and returns the error; the store keeps nothing.
async fn pull_hostile(server: &hoist_test_support::HostileServer) -> hoist_distribution::Error {
    let local = local_store();
    let (cfg, _) = pull_config(&local.store);
    let cfg = cfg.with_platform(platform("linux/amd64"));
    let err = pull(&cfg, &image_ref(&server.host(), "h/img:1"))
        .await
        .unwrap_err();
    assert!(local.store.references().unwrap().is_empty(), "{err}");
    assert!(local.store.content().ingests().unwrap().is_empty(), "{err}");
    assert!(local.store.layers().unwrap().list().unwrap().is_empty());
    err
}

fn descriptor(media_type: &str, digest: &str, size: u64) -> serde_json::Value {
    json!({"mediaType": media_type, "digest": digest, "size": size})
}

fn oci_manifest(config: serde_json::Value, layers: Vec<serde_json::Value>) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config,
        "layers": layers,
    }))
    .unwrap()
}

fn a_digest(seed: &[u8]) -> String {
    sha(seed).to_string()
}

#[tokio::test]
async fn a_manifest_that_is_not_json_is_an_invalid_manifest() {
    for body in [
        &b"{\"schemaVersion\": 2, \"layers\": ["[..],
        b"",
        b"null",
        b"\xff\xfe not utf-8",
        b"[1, 2, 3]",
    ] {
        let server = serving_manifest(OCI_MANIFEST, body.to_vec()).await;
        let err = pull_hostile(&server).await;
        assert!(
            matches!(err, hoist_distribution::Error::InvalidManifest { .. }),
            "{body:?}: {err}"
        );
        assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
        assert!(!err.is_retryable());
        assert!(err.to_string().contains("not valid JSON"), "{err}");
        assert_eq!(server.requests(), 2, "{body:?}: only /v2/ and the manifest");
    }
}

#[tokio::test]
async fn media_types_that_disagree_are_refused_before_any_blob() {
    use hoist_registry::manifest::OCI_INDEX;
    let config = descriptor(OCI_CONFIG, &a_digest(b"c"), 10);
    let layer = descriptor(OCI_LAYER_GZIP, &a_digest(b"l"), 10);
    let image = oci_manifest(config.clone(), vec![layer.clone()]);
    // Served as an index, but it is an image manifest.
    let server = serving_manifest(OCI_INDEX, image).await;
    let err = pull_hostile(&server).await;
    assert!(err.to_string().contains("disagrees"), "{err}");
    assert_eq!(err.kind(), ErrorKind::Corrupt);
    // An index body with layers.
    let hybrid = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [], "layers": [layer],
    }))
    .unwrap();
    let server = serving_manifest(OCI_INDEX, hybrid).await;
    let err = pull_hostile(&server).await;
    assert!(err.to_string().contains("must not have"), "{err}");
    // A config whose media type is a layer's.
    let wrong_config = oci_manifest(
        descriptor(OCI_LAYER_GZIP, &a_digest(b"c"), 10),
        vec![descriptor(OCI_LAYER_GZIP, &a_digest(b"l"), 10)],
    );
    let server = serving_manifest(OCI_MANIFEST, wrong_config).await;
    let err = pull_hostile(&server).await;
    assert!(
        matches!(
            err,
            hoist_distribution::Error::UnsupportedMediaType { what: "config", .. }
        ),
        "{err}"
    );
    assert_eq!(server.requests(), 2);
}

#[tokio::test]
async fn ten_thousand_layers_are_refused_with_the_limit_named() {
    let layers: Vec<serde_json::Value> = (0..10_000u32)
        .map(|i| descriptor(OCI_LAYER_GZIP, &a_digest(&i.to_le_bytes()), 100))
        .collect();
    let manifest = oci_manifest(descriptor(OCI_CONFIG, &a_digest(b"c"), 10), layers);
    assert!(manifest.len() < 4 << 20, "{} bytes", manifest.len());
    let server = serving_manifest(OCI_MANIFEST, manifest).await;
    let err = pull_hostile(&server).await;
    let text = err.to_string();
    assert!(text.contains("10000 layers"), "{text}");
    assert!(
        text.contains(&hoist_distribution::manifest::MAX_LAYERS.to_string()),
        "{text}"
    );
    assert_eq!(err.kind(), ErrorKind::Corrupt);
    // Nothing was fetched for it.
    assert_eq!(server.requests(), 2);
}

#[tokio::test]
async fn digests_of_unknown_algorithms_are_refused_cleanly() {
    for digest in [
        "sha1:da39a3ee5e6b4b0d3255bfef95601890afd80709",
        "foo:0123456789abcdef0123456789abcdef",
        "sha256:short",
        "sha256:../../../../etc/passwd",
        "nocolon",
        "",
    ] {
        let manifest = oci_manifest(
            descriptor(OCI_CONFIG, &a_digest(b"c"), 10),
            vec![descriptor(OCI_LAYER_GZIP, digest, 10)],
        );
        let server = serving_manifest(OCI_MANIFEST, manifest).await;
        let err = pull_hostile(&server).await;
        assert!(
            matches!(err, hoist_distribution::Error::InvalidManifest { .. }),
            "{digest:?}: {err}"
        );
        assert!(!err.is_retryable());
        assert_eq!(server.requests(), 2, "{digest:?}: no blob was requested");
    }
}

/// A server that counts every request it gets (the "foreign host" of `urls`).
async fn counting_server() -> hoist_test_support::HostileServer {
    use hoist_test_support::{Answer, HostileServer};
    HostileServer::start(|_, _| Answer::new("404 Not Found").body(""))
        .await
        .unwrap()
}

#[tokio::test]
async fn descriptor_urls_to_foreign_hosts_are_never_followed() {
    use hoist_distribution::manifest::OCI_NONDIST_GZIP;
    let foreign = counting_server().await;
    let url = format!("{}/layer.tar.gz", foreign.url());
    let layer = Layer {
        media_type: OCI_NONDIST_GZIP,
        ..Layer::oci_gzip(&[("etc/os-release", b"ID=hoist\n")])
    };
    let elsewhere = Layer::oci_gzip(&[("x", b"only at the url")]);
    let config = config_json("linux/amd64", &[layer.diff_id()]);
    let with_urls = |l: &Layer| json!({"mediaType": OCI_NONDIST_GZIP, "digest": l.digest().to_string(), "size": l.blob.len(), "urls": [url]});
    let manifest_of = |l: &Layer| {
        oci_manifest(
            descriptor(OCI_CONFIG, sha(&config).as_ref(), config.len() as u64),
            vec![with_urls(l)],
        )
    };
    // (The CNCF registry refuses manifests with URLs by default: this one serves them.)
    let blob = |d: &Digest| format!("blobs/{d}");
    let server = serving(vec![
        (
            "manifests/held".into(),
            OCI_MANIFEST.into(),
            manifest_of(&layer),
        ),
        (
            "manifests/missing".into(),
            OCI_MANIFEST.into(),
            manifest_of(&elsewhere),
        ),
        (
            blob(&sha(&config)),
            "application/octet-stream".into(),
            config.clone(),
        ),
        (
            blob(&layer.digest()),
            "application/octet-stream".into(),
            layer.blob.clone(),
        ),
    ])
    .await;
    // The registry holds the blob: pulled from the registry, the URL untouched.
    let local = local_store();
    let (cfg, _) = pull_config(&local.store);
    let cfg = cfg.with_platform(platform("linux/amd64"));
    let result = pull(&cfg, &image_ref(&server.host(), "h/img:held"))
        .await
        .unwrap();
    assert_eq!(result.layers[0].digest, layer.digest());
    // Only the URL has it: the pull fails as not found, still without following the URL.
    let local = local_store();
    let (cfg, _) = pull_config(&local.store);
    let cfg = cfg.with_platform(platform("linux/amd64"));
    let err = pull(&cfg, &image_ref(&server.host(), "h/img:missing"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFoundOrDenied, "{err}");
    assert!(!err.is_retryable(), "{err}");
    assert!(local.store.references().unwrap().is_empty());
    assert_eq!(foreign.requests(), 0, "a descriptor URL was followed");
}

#[tokio::test]
async fn non_distributable_layers_held_by_the_registry_are_pulled_like_any_layer() {
    use hoist_distribution::manifest::{OCI_NONDIST_GZIP, OCI_NONDIST_TAR};
    let registry = start_registry().await;
    let host = registry.host();
    let r = repo(&host, "hostile/nondist");
    let layers = [
        Layer {
            media_type: OCI_NONDIST_GZIP,
            ..Layer::oci_gzip(&[("a", b"first")])
        },
        Layer::plain(&[("b", b"second")], OCI_NONDIST_TAR),
    ];
    let image = push_image(&r, "1", OCI_MANIFEST, "linux/amd64", &layers).await;
    let local = local_store();
    let (cfg, _) = pull_config(&local.store);
    let result = pull(
        &cfg.with_platform(platform("linux/amd64")),
        &image_ref(&host, "hostile/nondist:1"),
    )
    .await
    .unwrap();
    assert_eq!(result.manifest, image.digest);
    let out = local.dir.path().join("rootfs");
    unpack(&local.store, &image.top_chain(), &out);
    assert_eq!(std::fs::read(out.join("b")).unwrap(), b"second");
}

/// gzip members (concatenated, as `MultiGzDecoder` reads them): a tar stream of `files`
/// entries of `file_size` zero bytes each, repeated by repeating one member `repeat` times,
/// without ever holding the uncompressed stream. With `one_entry`, a single entry declares the
/// whole size and the members carry only its zeros.
fn zero_bomb(one_entry: bool, files: u64, file_size: u64, repeat: usize) -> Vec<u8> {
    use std::io::Write;
    let zeros = vec![0u8; 1 << 20];
    let write_zeros = |e: &mut flate2::write::GzEncoder<Vec<u8>>, mut n: u64| {
        while n > 0 {
            let k = n.min(zeros.len() as u64) as usize;
            e.write_all(&zeros[..k]).unwrap();
            n -= k as u64;
        }
    };
    let header = |name: &str, size: u64| {
        let mut h = tar::Header::new_gnu();
        h.set_path(name).unwrap();
        h.set_size(size);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        h.as_bytes().to_vec()
    };
    let mut out = Vec::new();
    let member = if one_entry {
        let mut first = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        first
            .write_all(&header("zeros", files * file_size * repeat as u64))
            .unwrap();
        out.extend(first.finish().unwrap());
        let mut m = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        write_zeros(&mut m, files * file_size);
        m.finish().unwrap()
    } else {
        let mut m = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        for i in 0..files {
            m.write_all(&header(&format!("f{i}"), file_size)).unwrap();
            write_zeros(&mut m, file_size);
        }
        m.finish().unwrap()
    };
    for _ in 0..repeat {
        out.extend_from_slice(&member);
    }
    out
}

#[tokio::test]
async fn a_decompression_bomb_stops_at_the_layer_limit_and_leaves_nothing() {
    let registry = start_registry().await;
    let host = registry.host();
    let r = repo(&host, "hostile/bomb");
    // 10 GiB of zeros each way: one file that size, or 10 240 files of 1 MiB.
    for (tag, one_entry, files, size, repeat) in [
        ("one-file", true, 64u64, 1u64 << 20, 160usize),
        ("many-files", false, 64, 1 << 20, 160),
    ] {
        let blob = zero_bomb(one_entry, files, size, repeat);
        assert!(blob.len() < 16 << 20, "{tag}: {} bytes", blob.len());
        let bomb = Layer {
            tar: Vec::new(),
            blob,
            media_type: OCI_LAYER_GZIP,
        };
        let config = config_json("linux/amd64", &[sha(b"never reached")]);
        push_raw(
            &r,
            tag,
            OCI_MANIFEST,
            OCI_CONFIG,
            &config,
            std::slice::from_ref(&bomb),
        )
        .await;
        let local = local_store();
        let (cfg, _) = pull_config(&local.store);
        let limit = 32 << 20;
        let cfg = cfg
            .with_platform(platform("linux/amd64"))
            .with_max_layer_bytes(limit);
        let started = std::time::Instant::now();
        let err = pull(&cfg, &image_ref(&host, &format!("hostile/bomb:{tag}")))
            .await
            .unwrap_err();
        let text = hoist_xfer::describe(&err);
        assert!(
            matches!(
                err,
                hoist_distribution::Error::Download { .. }
                    | hoist_distribution::Error::LayerTooLarge { .. }
            ),
            "{tag}: {text}"
        );
        assert!(text.contains("max_layer_bytes"), "{tag}: {text}");
        assert!(text.contains(&limit.to_string()), "{tag}: {text}");
        assert_eq!(err.kind(), ErrorKind::Corrupt, "{tag}: {text}");
        assert!(!err.is_retryable(), "{tag}: {text}");
        eprintln!("{tag}: refused after {:?}", started.elapsed());
        assert!(local.store.references().unwrap().is_empty(), "{tag}");
        assert!(local.store.content().ingests().unwrap().is_empty(), "{tag}");
        assert!(
            !local.store.content().contains(&bomb.digest()).unwrap(),
            "{tag}"
        );
        assert!(
            local.store.layers().unwrap().list().unwrap().is_empty(),
            "{tag}"
        );
        let tmp = local.store.root().join("layers").join("tmp");
        assert!(
            std::fs::read_dir(&tmp).map_or(true, |mut d| d.next().is_none()),
            "{tag}: {} is not empty",
            tmp.display()
        );
    }
}
