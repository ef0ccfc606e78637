//! Several `hoist` processes on one store at once: pulls of images sharing layers, a pull
//! waiting for (or taking over) another process's ingest, and `rm`/`gc` racing a pull.

use std::io::{BufRead, BufReader, Write};
use std::process::Child;

use crate::crash::{env_number, noise};
use crate::pull::run;
use crate::*;
use hoist_registry::{Endpoint, RegistryClient, Scheme};
use hoist_test_support::{FaultProxy, Matcher};

/// A gzip layer of one file of incompressible bytes.
struct Layer {
    blob: bytes::Bytes,
    digest: String,
    diff_id: String,
}

fn noise_layer(name: &str, len: usize, seed: u64) -> Layer {
    let data = noise(len, seed);
    let mut tar = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_cksum();
    tar.append_data(&mut h, name, data.as_slice()).unwrap();
    let tar = tar.into_inner().unwrap();
    let diff_id = hoist_registry::digest::sha256_of(&tar).to_string();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    let blob = bytes::Bytes::from(gz.finish().unwrap());
    let digest = hoist_registry::digest::sha256_of(&blob).to_string();
    Layer {
        blob,
        digest,
        diff_id,
    }
}

/// Pushes an image made of `layers` (base first) as `repo:v1`.
async fn push_image(registry: &Registry, repo: &str, layers: &[&Layer]) {
    let client = RegistryClient::builder().build().unwrap();
    let r = client.repository(Endpoint::new(registry.host(), Scheme::Http), repo);
    let mut descs = Vec::new();
    let mut diff_ids = Vec::new();
    for l in layers {
        let d = oci_spec::image::Digest::try_from(l.digest.as_str()).unwrap();
        r.push_blob_bytes(&d, l.blob.clone()).await.unwrap();
        descs.push(format!(
            r#"{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{}","size":{}}}"#,
            l.digest,
            l.blob.len()
        ));
        diff_ids.push(format!("\"{}\"", l.diff_id));
    }
    let arch = hoist_distribution::Platform::host();
    let config = bytes::Bytes::from(format!(
        r#"{{"architecture":"{}","os":"linux","config":{{"Labels":{{"repo":"{repo}"}}}},"rootfs":{{"type":"layers","diff_ids":[{}]}}}}"#,
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
    r.put_manifest(
        "v1",
        hoist_registry::manifest::OCI_MANIFEST,
        manifest.into(),
    )
    .await
    .unwrap();
}

/// Four images: all share two base layers, the first two also share a middle layer, and each
/// has a top layer of its own. Returns every layer.
async fn overlapping_images(registry: &Registry) -> Vec<Layer> {
    let mb = 1 << 20;
    let layers = vec![
        noise_layer("base/one", 6 * mb, 101),
        noise_layer("base/two", 4 * mb, 102),
        noise_layer("mid/shared", 3 * mb, 103),
        noise_layer("top/a", mb, 201),
        noise_layer("top/b", mb, 202),
        noise_layer("top/c", mb, 203),
        noise_layer("top/d", mb, 204),
    ];
    let [b1, b2, mid, ta, tb, tc, td] = [0, 1, 2, 3, 4, 5, 6].map(|i| &layers[i]);
    push_image(registry, "conc/a", &[b1, b2, mid, ta]).await;
    push_image(registry, "conc/b", &[b1, b2, mid, tb]).await;
    push_image(registry, "conc/c", &[b1, b2, tc]).await;
    push_image(registry, "conc/d", &[b1, b2, td]).await;
    layers
}

fn spawn_hoist(home: &Path, root: &Path, args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_hoist"))
        .arg("--root")
        .arg(root)
        .args(args)
        .env("DOCKER_CONFIG", home)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_processes_pulling_images_that_share_layers_fetch_each_blob_once() {
    let rounds = env_number("HOIST_CONCURRENCY_ROUNDS", 5);
    let registry = Registry::start().await.unwrap();
    let layers = overlapping_images(&registry).await;
    let proxy = FaultProxy::start(&registry.url()).await.unwrap();
    let home = tempfile::tempdir().unwrap();
    let mut waited = 0;
    for round in 0..rounds {
        let root = home.path().join(format!("store-{round}"));
        proxy.clear_log();
        let children: Vec<Child> = ["a", "b", "c", "d"]
            .iter()
            .map(|name| {
                let image = format!("{}/conc/{name}:v1", proxy.host());
                spawn_hoist(home.path(), &root, &["pull", &image])
            })
            .collect();
        for child in children {
            let out = child.wait_with_output().unwrap();
            assert!(out.status.success(), "round {round}: {}", text(&out.stderr));
            if text(&out.stdout).contains("Waiting for another hoist") {
                waited += 1;
            }
        }
        let out = run(home.path(), &root, &["fsck"]);
        assert!(out.status.success(), "round {round}: {}", text(&out.stdout));
        for layer in &layers {
            let gets = proxy.requests(&Matcher::get(&format!("/blobs/{}", layer.digest)));
            assert_eq!(
                gets.len(),
                1,
                "round {round}: blob {} fetched {} times: {gets:?}",
                layer.digest,
                gets.len()
            );
        }
        // Every blob GET (layers and the four configs) went to a different blob.
        let mut paths: Vec<String> = proxy
            .requests(&Matcher::get("/blobs/"))
            .into_iter()
            .map(|e| e.path)
            .collect();
        let all = paths.len();
        paths.sort();
        paths.dedup();
        assert_eq!(all, paths.len(), "round {round}: a blob was fetched twice");
        let out = run(home.path(), &root, &["--json", "images"]);
        assert_eq!(text(&out.stdout).lines().count(), 4, "round {round}");
    }
    eprintln!("concurrent pulls: {rounds} rounds of 4, {waited} pulls waited for another");
}

/// Reads a child's stdout in a thread, line by line, until `want` appears; returns the lines.
fn read_until(
    child: &mut Child,
    want: &str,
) -> (Vec<String>, std::thread::JoinHandle<Vec<String>>) {
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let want = want.to_owned();
    let reader = std::thread::spawn(move || {
        let mut rest = Vec::new();
        let mut seen = false;
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            if !seen && line.contains(&want) {
                seen = true;
                let _ = tx.send(line.clone());
            }
            rest.push(line);
        }
        rest
    });
    let first = rx
        .recv_timeout(std::time::Duration::from_secs(60))
        .map(|l| vec![l])
        .unwrap_or_default();
    (first, reader)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_waits_for_another_process_ingesting_a_blob_then_uses_it_or_takes_over() {
    let registry = Registry::start().await.unwrap();
    let layers = overlapping_images(&registry).await;
    let proxy = FaultProxy::start(&registry.url()).await.unwrap();
    let home = tempfile::tempdir().unwrap();
    let base = &layers[0];
    let base_d = oci_spec::image::Digest::try_from(base.digest.as_str()).unwrap();
    let reference = hoist_distribution::ingest_reference(&base_d);
    let half = base.blob.len() / 2;

    for take_over in [false, true] {
        let root = home.path().join(format!("store-{take_over}"));
        let store = hoist_store::Store::open(&root).unwrap();
        // This test process plays the other hoist: it holds the base layer's ingest.
        let mut writer = store
            .content()
            .writer(&reference, Some(&base_d), Some(base.blob.len() as u64))
            .unwrap();
        writer.write_all(&base.blob[..half]).unwrap();
        writer.checkpoint().unwrap();
        proxy.clear_log();
        let image = format!("{}/conc/c:v1", proxy.host());
        let mut child = spawn_hoist(home.path(), &root, &["pull", &image]);
        let (seen, reader) = read_until(&mut child, "Waiting for another hoist");
        assert_eq!(seen.len(), 1, "the pull never said it was waiting");
        assert!(seen[0].starts_with(&base_d.digest()[..12]), "{seen:?}");
        if take_over {
            // The other process dies: its lock goes with it, and the pull resumes its bytes.
            drop(writer);
        } else {
            writer.write_all(&base.blob[half..]).unwrap();
            writer.commit(None, None).unwrap();
        }
        let status = child.wait().unwrap();
        let lines = reader.join().unwrap();
        assert!(status.success(), "{lines:?}");
        let fetched = proxy.bytes_sent(&Matcher::get(&format!("/blobs/{}", base.digest)));
        if take_over {
            assert_eq!(
                fetched,
                (base.blob.len() - half) as u64,
                "only the missing half is fetched"
            );
        } else {
            assert_eq!(fetched, 0, "the committed blob is used, not fetched");
        }
        let out = run(home.path(), &root, &["fsck"]);
        assert!(out.status.success(), "{}", text(&out.stdout));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rm_and_gc_racing_pulls_leave_the_pulled_images_whole() {
    let rounds = env_number("HOIST_CONCURRENCY_ROUNDS", 5);
    let registry = Registry::start().await.unwrap();
    overlapping_images(&registry).await;
    let home = tempfile::tempdir().unwrap();
    let host = registry.host();
    let [a, b, c, d] = ["a", "b", "c", "d"].map(|n| format!("{host}/conc/{n}:v1"));
    let mut gcs = 0;
    for round in 0..rounds {
        let root = home.path().join(format!("store-{round}"));
        // The store holds a and c; b and d share their base layers (and b a's middle layer).
        for image in [&a, &c] {
            let out = run(home.path(), &root, &["-q", "pull", image]);
            assert!(out.status.success(), "{}", text(&out.stderr));
        }
        let pulls: Vec<Child> = [&b, &d]
            .iter()
            .map(|image| spawn_hoist(home.path(), &root, &["-q", "pull", image]))
            .collect();
        // Remove the images whose layers the pulls reuse, and collect, until both pulls end.
        let out = run(home.path(), &root, &["rm", &a, &c]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let mut pulls: Vec<Option<Child>> = pulls.into_iter().map(Some).collect();
        let mut outputs = Vec::new();
        while pulls.iter().any(Option::is_some) {
            let out = run(home.path(), &root, &["gc"]);
            assert!(out.status.success(), "{}", text(&out.stderr));
            gcs += 1;
            for slot in pulls.iter_mut() {
                if let Some(child) = slot
                    && child.try_wait().unwrap().is_some()
                {
                    outputs.push(slot.take().unwrap().wait_with_output().unwrap());
                }
            }
        }
        for out in outputs {
            assert!(out.status.success(), "round {round}: {}", text(&out.stderr));
        }
        let out = run(home.path(), &root, &["gc"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let out = run(home.path(), &root, &["fsck"]);
        assert!(out.status.success(), "round {round}: {}", text(&out.stdout));
        for image in [&b, &d] {
            let dir = home.path().join(format!("rootfs-{round}"));
            let out = run(
                home.path(),
                &root,
                &["unpack", image, dir.to_str().unwrap()],
            );
            assert!(out.status.success(), "round {round}: {}", text(&out.stderr));
            assert!(dir.join("base/one").is_file() && dir.join("base/two").is_file());
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }
    eprintln!("rm/gc racing pulls: {rounds} rounds, {gcs} gc runs during pulls");
}
