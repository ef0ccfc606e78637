//! The `hoist` binary end to end, against real registries started for each test.
#![allow(clippy::unwrap_used, missing_docs)]

use std::path::Path;
use std::process::{Command, Output, Stdio};

use hoist_test_support::Registry;

mod concurrency;
mod copy_compress;
mod crash;
mod crash_push;
mod partial;
mod pull;
mod security;

/// Runs `hoist ARGS` with Docker's config directory set to `docker_config`.
fn hoist(docker_config: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    use std::io::Write;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hoist"));
    cmd.args(args)
        .env("DOCKER_CONFIG", docker_config)
        .env_remove("REGISTRY_AUTH_FILE")
        .env("XDG_RUNTIME_DIR", docker_config.join("run"))
        .env("HOME", docker_config)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    drop(child.stdin.take());
    child.wait_with_output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Pushes a one-layer OCI image as `repo:tag` with plain HTTP requests through the library.
async fn seed(registry: &Registry, repo: &str, tag: &str) -> String {
    use hoist_registry::{Endpoint, RegistryClient, Scheme};
    let client = match registry.basic_credentials() {
        Some((u, p)) => RegistryClient::builder()
            .credentials(
                registry.host(),
                hoist_registry::auth::credentials::Credentials::basic(u, p),
            )
            .build()
            .unwrap(),
        None => RegistryClient::builder().build().unwrap(),
    };
    let r = client.repository(Endpoint::new(registry.host(), Scheme::Http), repo);
    let layer = bytes::Bytes::from_static(b"not really a tar, but a blob");
    let layer_d = hoist_registry::digest::sha256_of(&layer);
    r.push_blob_bytes(&layer_d, layer.clone()).await.unwrap();
    let config = bytes::Bytes::from(format!(
        r#"{{"architecture":"arm64","variant":"v8","os":"linux","created":"2024-01-02T03:04:05Z","rootfs":{{"type":"layers","diff_ids":["{layer_d}"]}}}}"#
    ));
    let config_d = hoist_registry::digest::sha256_of(&config);
    r.push_blob_bytes(&config_d, config.clone()).await.unwrap();
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config_d}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{layer_d}","size":{}}}]}}"#,
        config.len(),
        layer.len()
    );
    r.put_manifest(
        tag,
        hoist_registry::manifest::OCI_MANIFEST,
        manifest.clone().into(),
    )
    .await
    .unwrap()
    .to_string()
}

#[tokio::test]
async fn tags_and_inspect_show_what_the_registry_holds() {
    let registry = Registry::start().await.unwrap();
    let digest = seed(&registry, "cli/app", "v1").await;
    seed(&registry, "cli/app", "v2").await;
    let home = tempfile::tempdir().unwrap();
    let repo = format!("{}/cli/app", registry.host());

    let out = hoist(home.path(), &["tags", &repo], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "v1\nv2\n");

    let out = hoist(home.path(), &["inspect", &format!("{repo}:v1")], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains(&format!("Digest:    {digest}")), "{stdout}");
    assert!(stdout.contains("Platform:  linux/arm64/v8"), "{stdout}");
    assert!(
        stdout.contains("Created:   2024-01-02T03:04:05Z"),
        "{stdout}"
    );

    let out = hoist(
        home.path(),
        &["--json", "inspect", &format!("{repo}@{digest}")],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["digest"], digest);
    assert_eq!(v["layers"].as_array().unwrap().len(), 1);

    let out = hoist(
        home.path(),
        &["inspect", "--raw", &format!("{repo}:v1")],
        None,
    );
    let raw = out.stdout;
    assert_eq!(hoist_registry::digest::sha256_of(&raw).to_string(), digest);
}

#[tokio::test]
async fn exit_codes_tell_usage_not_found_and_network_failures_apart() {
    let registry = Registry::start().await.unwrap();
    seed(&registry, "cli/codes", "v1").await;
    let home = tempfile::tempdir().unwrap();
    let host = registry.host();
    for (args, code) in [
        (
            vec!["inspect".to_owned(), format!("{host}/cli/codes:nope")],
            3,
        ),
        (vec!["inspect".to_owned(), format!("{host}/CLI/codes")], 2),
        (vec!["tags".to_owned(), "127.0.0.1:1/x".to_owned()], 4),
        (vec!["frobnicate".to_owned()], 2),
    ] {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = hoist(home.path(), &args, None);
        assert_eq!(
            out.status.code(),
            Some(code),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
}

#[tokio::test]
async fn login_verifies_and_stores_credentials_and_logout_removes_them() {
    let registry = Registry::start_with_basic_auth("tester", "pa55-word")
        .await
        .unwrap();
    seed(&registry, "cli/private", "v1").await;
    let home = tempfile::tempdir().unwrap();
    let host = registry.host();
    let repo = format!("{host}/cli/private");

    // Anonymous: denied, with the hint.
    let out = hoist(home.path(), &["tags", &repo], None);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("hoist login"),
        "{}",
        text(&out.stderr)
    );

    // A wrong password is refused and nothing is stored.
    let out = hoist(
        home.path(),
        &["login", &host, "-u", "tester", "--password-stdin"],
        Some("wrong\n"),
    );
    assert!(!out.status.success());
    assert!(!home.path().join("config.json").exists());

    let out = hoist(
        home.path(),
        &["-vv", "login", &host, "-u", "tester", "--password-stdin"],
        Some("pa55-word\n"),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        !text(&out.stderr).contains("pa55-word"),
        "the password was logged"
    );
    assert!(
        !text(&out.stderr).contains("cGE1NS13b3Jk"),
        "the encoded password was logged"
    );
    let config = std::fs::read_to_string(home.path().join("config.json")).unwrap();
    assert!(config.contains(&host), "{config}");

    let out = hoist(home.path(), &["-vv", "tags", &repo], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "v1\n");
    assert!(
        !text(&out.stderr).contains("dGVzdGVyOnBhNTUtd29yZA"),
        "credentials in the log"
    );

    let out = hoist(home.path(), &["logout", &host], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let config = std::fs::read_to_string(home.path().join("config.json")).unwrap();
    assert!(!config.contains(&host), "{config}");
    let out = hoist(home.path(), &["tags", &repo], None);
    assert_eq!(out.status.code(), Some(3));
}
