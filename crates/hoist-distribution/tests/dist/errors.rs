//! Images hoist refuses, crafted and `PUT` to a real registry, each with its typed error.

use hoist_distribution::manifest::PLUGIN_CONFIG;
use hoist_distribution::{Error, ErrorKind, parse_reference, pull};
use hoist_registry::manifest::{DOCKER_MANIFEST, DOCKER_SCHEMA1_SIGNED, OCI_MANIFEST};
use serde_json::json;

use crate::*;

/// Pulls `name` from `host` into a fresh store and returns the error; the store must hold no
/// reference afterwards.
async fn pull_err(host: &str, name: &str) -> Error {
    let local = local_store();
    let (cfg, _) = pull_config(&local.store);
    let err = pull(&cfg, &image_ref(host, name)).await.unwrap_err();
    assert!(local.store.references().unwrap().is_empty(), "{err}");
    err
}

/// Serves one schema 1 manifest the way registries that still hold them do (the CNCF registry
/// refuses schema 1 uploads, so one cannot be `PUT` there): `GET /v2/` answers 200, the
/// manifest answers with the signed schema 1 media type, everything else 404.
async fn schema1_registry(manifest: Vec<u8>) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let host = listener.local_addr().unwrap().to_string();
    let digest = sha(&manifest).to_string();
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                return;
            };
            let manifest = manifest.clone();
            let digest = digest.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if conn.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    if head.is_empty() && !byte[0].is_ascii_uppercase() {
                        return; // a TLS handshake: this registry speaks plain HTTP only
                    }
                    head.push(byte[0]);
                }
                let line = String::from_utf8_lossy(&head)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_owned();
                let mut parts = line.split(' ');
                let method = parts.next().unwrap_or("");
                let path = parts.next().unwrap_or("");
                let (status, ctype, body): (&str, &str, &[u8]) = match path {
                    "/v2/" => ("200 OK", "application/json", b"{}"),
                    "/v2/old/schema1/manifests/1" => ("200 OK", DOCKER_SCHEMA1_SIGNED, &manifest),
                    _ => (
                        "404 Not Found",
                        "application/json",
                        br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#,
                    ),
                };
                let mut resp = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nDocker-Content-Digest: {digest}\r\nDocker-Distribution-API-Version: registry/2.0\r\nConnection: close\r\n\r\n",
                    body.len()
                )
                .into_bytes();
                if method != "HEAD" {
                    resp.extend_from_slice(body);
                }
                let _ = conn.write_all(&resp).await;
                let _ = conn.shutdown().await;
            });
        }
    });
    host
}

#[tokio::test]
async fn a_schema1_manifest_is_a_deprecated_schema1_image() {
    let schema1 = serde_json::to_vec_pretty(&json!({
        "schemaVersion": 1,
        "name": "old/schema1",
        "tag": "1",
        "architecture": "amd64",
        "fsLayers": [{"blobSum": sha(b"layer").to_string()}],
        "history": [{"v1Compatibility": "{}"}],
        "signatures": [{"header": {"alg": "ES256"}, "signature": "c2ln", "protected": "e30"}],
    }))
    .unwrap();
    let host = schema1_registry(schema1).await;
    let err = pull_err(&host, "old/schema1:1").await;
    assert!(matches!(err, Error::DeprecatedSchema1Image { .. }), "{err}");
    assert_eq!(err.kind(), ErrorKind::Unsupported);
    assert!(err.to_string().contains("schema 1"), "{err}");
    // The stub answers the rest like a registry: a missing tag is "not found".
    let err = pull_err(&host, "old/schema1:2").await;
    assert_eq!(err.kind(), ErrorKind::NotFoundOrDenied, "{err}");
}

#[tokio::test]
async fn ai_models_are_not_supported_whether_config_or_layer_says_so() {
    let registry = start_registry().await;
    let host = registry.host();
    let r = repo(&host, "ai/model");
    let weights = Layer {
        media_type: "application/vnd.docker.ai.gguf.v3",
        ..Layer::plain(&[("model.gguf", b"GGUF")], OCI_LAYER_TAR)
    };
    push_raw(
        &r,
        "by-config",
        OCI_MANIFEST,
        "application/vnd.docker.ai.model.config.v0.1+json",
        b"{}",
        &[Layer::plain(&[("m", b"m")], OCI_LAYER_TAR)],
    )
    .await;
    push_raw(
        &r,
        "by-layer",
        OCI_MANIFEST,
        OCI_CONFIG,
        &config_json("linux/amd64", &[weights.diff_id()]),
        &[weights],
    )
    .await;
    for tag in ["by-config", "by-layer"] {
        let err = pull_err(&host, &format!("ai/model:{tag}")).await;
        assert!(
            matches!(err, Error::AiModelNotSupported { .. }),
            "{tag}: {err}"
        );
        assert_eq!(err.kind(), ErrorKind::Unsupported);
        assert!(err.to_string().contains("AI model"), "{err}");
    }
}

#[tokio::test]
async fn a_plugin_is_an_invalid_manifest_class() {
    let registry = start_registry().await;
    let host = registry.host();
    let r = repo(&host, "plugins/thing");
    push_raw(
        &r,
        "1",
        DOCKER_MANIFEST,
        PLUGIN_CONFIG,
        br#"{"description":"a plugin"}"#,
        &[Layer::gzip(&[("rootfs/x", b"x")])],
    )
    .await;
    let err = pull_err(&host, "plugins/thing:1").await;
    assert!(
        matches!(
            err,
            Error::InvalidManifestClass {
                class: "plugin",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("plugin"), "{err}");
}

#[tokio::test]
async fn unknown_config_and_layer_media_types_are_unsupported() {
    let registry = start_registry().await;
    let host = registry.host();
    let r = repo(&host, "odd/types");
    let layer = Layer::plain(&[("x", b"x")], OCI_LAYER_TAR);
    push_raw(
        &r,
        "config",
        OCI_MANIFEST,
        "application/vnd.cncf.helm.config.v1+json",
        b"{}",
        std::slice::from_ref(&layer),
    )
    .await;
    let squash = Layer {
        media_type: "application/vnd.example.squashfs",
        ..layer.clone()
    };
    push_raw(
        &r,
        "layer",
        OCI_MANIFEST,
        OCI_CONFIG,
        &config_json("linux/amd64", &[layer.diff_id()]),
        &[squash],
    )
    .await;
    let err = pull_err(&host, "odd/types:config").await;
    assert!(
        matches!(err, Error::UnsupportedMediaType { what: "config", .. }),
        "{err}"
    );
    assert!(err.to_string().contains("helm"), "{err}");
    let err = pull_err(&host, "odd/types:layer").await;
    assert!(
        matches!(err, Error::UnsupportedMediaType { what: "layer", .. }),
        "{err}"
    );
    assert_eq!(err.kind(), ErrorKind::Unsupported);
}

#[test]
fn scratch_is_a_reserved_name() {
    for input in ["scratch", "docker.io/library/scratch:latest"] {
        let err = parse_reference(input).unwrap_err();
        assert!(matches!(err, Error::ReservedName { .. }), "{input}: {err}");
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        assert!(err.to_string().contains("reserved"), "{err}");
    }
    assert!(parse_reference("127.0.0.1:5000/scratch").is_ok());
}
