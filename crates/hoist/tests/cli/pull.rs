//! `pull`, `push`, `unpack`, `images`, `tag`, `rm`, `fsck`, `gc` through the binary.

use std::io::Write;

use crate::*;
use hoist_registry::{Endpoint, RegistryClient, Scheme};

/// A gzip layer holding `files` (path, content), deterministic.
fn layer(files: &[(&str, &str)]) -> (bytes::Bytes, String) {
    let mut tar = tar::Builder::new(Vec::new());
    for (path, content) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(content.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_cksum();
        tar.append_data(&mut h, path, content.as_bytes()).unwrap();
    }
    let tar = tar.into_inner().unwrap();
    let diff_id = hoist_registry::digest::sha256_of(&tar).to_string();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
    gz.write_all(&tar).unwrap();
    (bytes::Bytes::from(gz.finish().unwrap()), diff_id)
}

/// Pushes a two-layer image with real file content as `repo:tag`.
pub async fn seed_image(registry: &Registry, repo: &str, tag: &str) -> String {
    let (client, scheme) = match registry.tls_files() {
        Some(files) => (
            RegistryClient::builder()
                .host(
                    registry.host(),
                    hoist_registry::HostConfig::insecure()
                        .with_client_cert(&files.client_cert, &files.client_key),
                )
                .build()
                .unwrap(),
            Scheme::Https,
        ),
        None => (RegistryClient::builder().build().unwrap(), Scheme::Http),
    };
    let r = client.repository(Endpoint::new(registry.host(), scheme), repo);
    let layers = [
        layer(&[
            ("etc/greeting", "hello\n"),
            ("usr/share/doc/readme", "base layer\n"),
        ]),
        layer(&[
            ("etc/greeting", "hello, world\n"),
            ("app/run.sh", "#!/bin/sh\necho run\n"),
        ]),
    ];
    let mut descs = Vec::new();
    let mut diff_ids = Vec::new();
    for (blob, diff_id) in &layers {
        let d = hoist_registry::digest::sha256_of(blob);
        r.push_blob_bytes(&d, blob.clone()).await.unwrap();
        descs.push(format!(
            r#"{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{d}","size":{}}}"#,
            blob.len()
        ));
        diff_ids.push(format!("\"{diff_id}\""));
    }
    let arch = hoist_distribution::Platform::host();
    let config = bytes::Bytes::from(format!(
        r#"{{"architecture":"{}","os":"linux","created":"2024-05-06T07:08:09Z","rootfs":{{"type":"layers","diff_ids":[{}]}}}}"#,
        arch.architecture,
        diff_ids.join(",")
    ));
    let config_d = hoist_registry::digest::sha256_of(&config);
    r.push_blob_bytes(&config_d, config.clone()).await.unwrap();
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config_d}","size":{}}},"layers":[{}]}}"#,
        config.len(),
        descs.join(",")
    );
    r.put_manifest(tag, hoist_registry::manifest::OCI_MANIFEST, manifest.into())
        .await
        .unwrap()
        .to_string()
}

pub fn run(home: &Path, root: &Path, args: &[&str]) -> Output {
    let mut all = vec!["--root", root.to_str().unwrap()];
    all.extend_from_slice(args);
    hoist(home, &all, None)
}

#[tokio::test]
async fn pull_unpack_tag_push_and_clean_up_work_from_the_command_line() {
    let registry = Registry::start().await.unwrap();
    let digest = seed_image(&registry, "cli/pull", "v1").await;
    let home = tempfile::tempdir().unwrap();
    let root = home.path().join("store");
    let image = format!("{}/cli/pull:v1", registry.host());

    let out = run(home.path(), &root, &["pull", &image]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert_eq!(stdout.matches(": Pull complete").count(), 2, "{stdout}");
    assert!(stdout.contains(&format!("Digest: {digest}")), "{stdout}");

    // Plain progress: one line per change of state. Intermediate states may be coalesced (a
    // watcher sees the latest state), so the snapshot pins the first and last state of each layer.
    let mut first_last: std::collections::BTreeMap<&str, (&str, &str)> = Default::default();
    for line in stdout.lines() {
        if line.starts_with("Digest") || line.starts_with("Status") {
            continue;
        }
        let (id, state) = line.split_once(": ").unwrap();
        first_last.entry(id).or_insert((state, state)).1 = state;
    }
    let progress: Vec<String> = first_last
        .values()
        .map(|(first, last)| format!("{first} .. {last}"))
        .collect();
    insta::assert_snapshot!("pull_progress_states", progress.join("\n"));

    let out = run(home.path(), &root, &["pull", &image]);
    assert!(
        text(&out.stdout).contains("Image is up to date"),
        "{}",
        text(&out.stdout)
    );

    let out = run(home.path(), &root, &["images"]);
    assert!(
        text(&out.stdout).contains("cli/pull"),
        "{}",
        text(&out.stdout)
    );

    let rootfs = home.path().join("rootfs");
    let out = run(
        home.path(),
        &root,
        &["unpack", &image, rootfs.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        std::fs::read_to_string(rootfs.join("etc/greeting")).unwrap(),
        "hello, world\n"
    );
    assert_eq!(
        std::fs::read_to_string(rootfs.join("usr/share/doc/readme")).unwrap(),
        "base layer\n"
    );
    assert!(rootfs.join("app/run.sh").exists());

    let out = run(home.path(), &root, &["fsck"]);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );

    // Tag under another repository and push: the layers are mounted, then a re-push finds them.
    let other = format!("{}/cli/other:v9", registry.host());
    assert!(
        run(home.path(), &root, &["tag", &image, &other])
            .status
            .success()
    );
    let out = run(home.path(), &root, &["push", &other]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains(&digest), "{}", text(&out.stdout));
    let out = run(home.path(), &root, &["push", &other]);
    assert_eq!(
        text(&out.stdout).matches("Layer already exists").count(),
        2,
        "{}",
        text(&out.stdout)
    );

    let out = run(home.path(), &root, &["rm", "--gc", &image, &other]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = run(home.path(), &root, &["--json", "images"]);
    assert_eq!(text(&out.stdout), "");
    let out = run(home.path(), &root, &["rm", &image]);
    assert_eq!(out.status.code(), Some(3));
}

#[tokio::test]
async fn a_no_unpack_pull_is_unpacked_on_first_use_and_json_mode_streams_events() {
    let registry = Registry::start().await.unwrap();
    let digest = seed_image(&registry, "cli/lazy", "v1").await;
    let home = tempfile::tempdir().unwrap();
    let root = home.path().join("store");
    let image = format!("{}/cli/lazy:v1", registry.host());

    let out = run(
        home.path(),
        &root,
        &["--json", "pull", "--no-unpack", &image],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let events: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let last = events.last().unwrap();
    assert_eq!(last["event"], "result");
    assert_eq!(last["digest"], digest);
    let mut last_action: std::collections::BTreeMap<String, String> = Default::default();
    for e in events.iter().filter(|e| e["event"] == "progress") {
        last_action.insert(
            e["id"].as_str().unwrap().to_owned(),
            e["action"].as_str().unwrap().to_owned(),
        );
    }
    let actions: Vec<String> = last_action.into_values().collect();
    insta::assert_snapshot!("pull_no_unpack_json_actions", actions.join("\n"));
    for e in events.iter().filter(|e| e["event"] == "progress") {
        assert_eq!(e["id"].as_str().unwrap().len(), 12, "{e}");
    }
    assert!(
        std::fs::read_dir(root.join("layers"))
            .unwrap()
            .next()
            .is_none(),
        "nothing unpacked"
    );

    let rootfs = home.path().join("rootfs");
    let out = run(
        home.path(),
        &root,
        &["unpack", &image, rootfs.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        std::fs::read_to_string(rootfs.join("etc/greeting")).unwrap(),
        "hello, world\n"
    );
    let out = run(home.path(), &root, &["fsck"]);
    assert!(out.status.success(), "{}", text(&out.stdout));
}

#[tokio::test]
async fn pull_errors_map_to_exit_codes() {
    let registry = Registry::start().await.unwrap();
    let home = tempfile::tempdir().unwrap();
    let root = home.path().join("store");
    let out = run(
        home.path(),
        &root,
        &["pull", &format!("{}/cli/none:v1", registry.host())],
    );
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("hoist login"),
        "{}",
        text(&out.stderr)
    );
    let out = run(home.path(), &root, &["pull", "scratch"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
}

#[test]
fn processes_opening_one_new_store_at_once_all_succeed() {
    // Creating the metadata database (WAL switch, first migration) raced: before the fix about
    // 1 open in 180 failed with "database is locked". 60 rounds of 6 processes.
    let home = tempfile::tempdir().unwrap();
    for round in 0..60 {
        let root = home.path().join(format!("store-{round}"));
        let children: Vec<_> = (0..6)
            .map(|_| {
                Command::new(env!("CARGO_BIN_EXE_hoist"))
                    .args(["--root", root.to_str().unwrap(), "images"])
                    .env("DOCKER_CONFIG", home.path())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for child in children {
            let out = child.wait_with_output().unwrap();
            assert!(out.status.success(), "round {round}: {}", text(&out.stderr));
        }
    }
}

#[tokio::test]
async fn processes_pulling_into_one_new_store_at_once_all_succeed() {
    let registry = Registry::start().await.unwrap();
    seed_image(&registry, "cli/race", "v1").await;
    let image = format!("{}/cli/race:v1", registry.host());
    let home = tempfile::tempdir().unwrap();
    for round in 0..8 {
        let root = home.path().join(format!("store-{round}"));
        let children: Vec<_> = (0..4)
            .map(|_| {
                Command::new(env!("CARGO_BIN_EXE_hoist"))
                    .args(["-q", "--root", root.to_str().unwrap(), "pull", &image])
                    .env("DOCKER_CONFIG", home.path())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for child in children {
            let out = child.wait_with_output().unwrap();
            assert!(out.status.success(), "round {round}: {}", text(&out.stderr));
        }
        let out = run(home.path(), &root, &["fsck"]);
        assert!(out.status.success(), "{}", text(&out.stdout));
    }
}

/// A registry holding an image whose one layer is non-distributable and only at a URL on a
/// loopback server; returns the registry, the server, and the image reference.
async fn foreign_layer_image() -> (Registry, hoist_test_support::HostileServer, String) {
    use hoist_test_support::{Answer, HostileServer};
    let registry = Registry::builder()
        .allow_manifest_urls("^http://127\\.0\\.0\\.1:")
        .start()
        .await
        .unwrap();
    let (blob, diff_id) = layer(&[("etc/foreign", "from the url\n")]);
    let served = blob.clone();
    let foreign = HostileServer::start(move |_, path| {
        if path == "/layer" {
            Answer::new("200 OK").body(served.to_vec())
        } else {
            Answer::new("404 Not Found").body("")
        }
    })
    .await
    .unwrap();
    let client = RegistryClient::builder().build().unwrap();
    let r = client.repository(Endpoint::new(registry.host(), Scheme::Http), "cli/foreign");
    let arch = hoist_distribution::Platform::host();
    let config = bytes::Bytes::from(format!(
        r#"{{"architecture":"{}","os":"linux","rootfs":{{"type":"layers","diff_ids":["{diff_id}"]}}}}"#,
        arch.architecture
    ));
    let config_d = hoist_registry::digest::sha256_of(&config);
    r.push_blob_bytes(&config_d, config.clone()).await.unwrap();
    let layer_d = hoist_registry::digest::sha256_of(&blob);
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config_d}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.nondistributable.v1.tar+gzip","digest":"{layer_d}","size":{},"urls":["{}/layer"]}}]}}"#,
        config.len(),
        blob.len(),
        foreign.url()
    );
    r.put_manifest("1", hoist_registry::manifest::OCI_MANIFEST, manifest.into())
        .await
        .unwrap();
    let image = format!("{}/cli/foreign:1", registry.host());
    (registry, foreign, image)
}

// Multi-threaded: the layer URL's server runs in this process while the binary runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_foreign_urls_from_the_flag_or_the_config_file_reaches_the_pull() {
    let (_registry, foreign, image) = foreign_layer_image().await;
    let home = tempfile::tempdir().unwrap();

    // Not allowed: the URL is left alone and the registry lacks the blob.
    let root = home.path().join("none");
    let out = run(home.path(), &root, &["pull", &image]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert_eq!(foreign.requests(), 0);

    // Another host on the command line: still not contacted.
    let out = run(
        home.path(),
        &root,
        &["pull", "--allow-foreign-urls", "other.example", &image],
    );
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert_eq!(foreign.requests(), 0);

    // The flag names the host.
    let root = home.path().join("flag");
    let out = run(
        home.path(),
        &root,
        &["pull", "--allow-foreign-urls", &foreign.host(), &image],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let after_flag = foreign.requests();
    assert!(after_flag >= 1);

    // The config file's `transfers.allow_foreign_urls` does the same.
    let config = home.path().join("hoist.toml");
    std::fs::write(&config, "[transfers]\nallow_foreign_urls = [\"*\"]\n").unwrap();
    let root = home.path().join("config");
    let out = run(
        home.path(),
        &root,
        &["--config", config.to_str().unwrap(), "pull", &image],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(foreign.requests() > after_flag);
    assert_eq!(foreign.requests_with_authorization(), 0);
}
