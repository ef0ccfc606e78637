//! `kill -9` during a pull, then the pull again: it completes, the store is sound, and what was
//! fetched before the kill is not fetched again (resume, not restart).
//!
//! CI runs a few seeds; `scripts/crash.sh` runs many (`HOIST_CRASH_RUNS`).

use std::io::Write;
use std::time::Duration;

use crate::pull::run;
use crate::*;
use hoist_registry::{Endpoint, RegistryClient, Scheme};
use hoist_test_support::{FaultProxy, Matcher};

/// Layers of the synthetic test image.
const LAYERS: usize = 4;
/// Default size of each synthetic layer, in MiB (`HOIST_CRASH_LAYER_MB` changes it).
const LAYER_MB: usize = 16;

/// Incompressible pseudo-random bytes (xorshift), so the gzip blob is as large as the tar.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// The image the crash tests move.
pub struct BigImage {
    /// Its manifest digest.
    pub digest: String,
    /// Total size of its layer blobs.
    pub layer_bytes: u64,
    /// Its layer blobs: digest and size.
    pub layers: Vec<(String, u64)>,
}

/// A number from the environment, or `default`.
pub fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Pushes the crash tests' image to `registry` as `repo:v1`: the OCI layout named by
/// `HOIST_CRASH_OCI` (say the benchmark corpus's `big`, copied with skopeo, digests preserved),
/// else a synthetic image of 4 incompressible layers of `HOIST_CRASH_LAYER_MB` MiB (default 16).
pub async fn seed_big(registry: &Registry, repo: &str) -> BigImage {
    match std::env::var("HOIST_CRASH_OCI") {
        Ok(layout) if !layout.is_empty() => seed_layout(registry, repo, Path::new(&layout)),
        _ => seed_synthetic(registry, repo).await,
    }
}

/// Copies the single image of an OCI layout to `registry` with skopeo.
fn seed_layout(registry: &Registry, repo: &str, layout: &Path) -> BigImage {
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let digest = index["manifests"][0]["digest"].as_str().unwrap().to_owned();
    let tag = index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"]
        .as_str()
        .unwrap_or("latest")
        .to_owned();
    let hex = digest.strip_prefix("sha256:").unwrap();
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("blobs/sha256").join(hex)).unwrap())
            .unwrap();
    let layers: Vec<(String, u64)> = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["digest"].as_str().unwrap().to_owned(),
                l["size"].as_u64().unwrap(),
            )
        })
        .collect();
    let status = Command::new("skopeo")
        .args([
            "copy",
            "-q",
            "--preserve-digests",
            "--dest-tls-verify=false",
            &format!("oci:{}:{tag}", layout.display()),
            &format!("docker://{}/{repo}:v1", registry.host()),
        ])
        .status()
        .unwrap();
    assert!(
        status.success(),
        "skopeo could not seed {}",
        layout.display()
    );
    BigImage {
        digest,
        layer_bytes: layers.iter().map(|l| l.1).sum(),
        layers,
    }
}

/// Pushes a 4-layer image of incompressible layers.
async fn seed_synthetic(registry: &Registry, repo: &str) -> BigImage {
    let layer_len =
        usize::try_from(env_number("HOIST_CRASH_LAYER_MB", LAYER_MB as u64)).unwrap() << 20;
    let client = RegistryClient::builder().build().unwrap();
    let r = client.repository(Endpoint::new(registry.host(), Scheme::Http), repo);
    let mut descs = Vec::new();
    let mut diff_ids = Vec::new();
    let mut layers = Vec::new();
    for i in 0..LAYERS {
        let mut tar = tar::Builder::new(Vec::new());
        let data = noise(layer_len, i as u64 + 1);
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_cksum();
        tar.append_data(&mut h, format!("data/layer-{i}.bin"), data.as_slice())
            .unwrap();
        let tar = tar.into_inner().unwrap();
        diff_ids.push(format!("\"{}\"", hoist_registry::digest::sha256_of(&tar)));
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).unwrap();
        let blob = bytes::Bytes::from(gz.finish().unwrap());
        let d = hoist_registry::digest::sha256_of(&blob);
        layers.push((d.to_string(), blob.len() as u64));
        r.push_blob_bytes(&d, blob.clone()).await.unwrap();
        descs.push(format!(
            r#"{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{d}","size":{}}}"#,
            blob.len()
        ));
    }
    let arch = hoist_distribution::Platform::host();
    let config = bytes::Bytes::from(format!(
        r#"{{"architecture":"{}","os":"linux","rootfs":{{"type":"layers","diff_ids":[{}]}}}}"#,
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
    let digest = r
        .put_manifest(
            "v1",
            hoist_registry::manifest::OCI_MANIFEST,
            manifest.into(),
        )
        .await
        .unwrap()
        .to_string();
    BigImage {
        digest,
        layer_bytes: layers.iter().map(|l| l.1).sum(),
        layers,
    }
}

/// The seed the crash tests derive their kill moments from: `HOIST_CRASH_SEED`, else the clock.
/// Printed, so that a failing run can be replayed.
pub fn base_seed(test: &str) -> u64 {
    let seed = std::env::var("HOIST_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                % 1_000_000
        });
    eprintln!("{test}: seed {seed} (replay with HOIST_CRASH_SEED={seed})");
    seed
}

/// Bytes of layer blobs a store holds, committed or in partial ingests (the config is small and
/// not counted).
fn held_bytes(root: &Path) -> u64 {
    let size_of_dir_files = |dir: &Path, name: Option<&str>| -> u64 {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return 0;
        };
        entries
            .filter_map(|e| e.ok())
            .map(|e| match name {
                Some(n) => e.path().join(n),
                None => e.path(),
            })
            .filter_map(|p| std::fs::metadata(p).ok())
            .filter(|m| m.len() > 1 << 20)
            .map(|m| m.len())
            .sum()
    };
    size_of_dir_files(&root.join("blobs/sha256"), None)
        + size_of_dir_files(&root.join("ingest"), Some("data"))
}

/// A deterministic delay in `0..max_ms` for `seed`.
pub fn delay(seed: u64, max_ms: u64) -> Duration {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    x ^= x >> 33;
    Duration::from_millis(x % max_ms)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_killed_at_random_moments_resumes_and_ends_sound() {
    let runs = env_number("HOIST_CRASH_RUNS", 4);
    let base = base_seed("pull crash test");
    let registry = Registry::start().await.unwrap();
    let big = seed_big(&registry, "crash/big").await;
    let image_bytes = big.layer_bytes;
    let layers = big.layers.len() as u64;
    let proxy = FaultProxy::start(&registry.url()).await.unwrap();
    let image = format!("{}/crash/big:v1", proxy.host());
    let home = tempfile::tempdir().unwrap();
    // The pulls fetch in windows of this size (the default is tuned for loopback speed; this one
    // keeps the bound below tight enough to mean something).
    let window_mib = 2;
    let config = home.path().join("hoist.toml");
    std::fs::write(
        &config,
        format!("[transfers]\nfetch_window_mib = {window_mib}\n"),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let blobs = Matcher::get("/blobs/");
    // How long a whole pull takes here: kills land at random moments within it.
    let started = std::time::Instant::now();
    let out = run(
        home.path(),
        &home.path().join("warm-up"),
        &["-q", "--config", config, "pull", &image],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let full_ms = (started.elapsed().as_millis() as u64).max(50);
    // Over both pulls, the bytes sent beyond the image are those the killed pull received but
    // never wrote down, plus the rerun's excess (bounded above). The pull fetches a layer in
    // windows ([`hoist_registry::window`]): the next window is requested once the current one
    // has at most `lead` bytes unconsumed, so a layer never has more than `window + lead` bytes
    // requested and not yet consumed, and the registry can send no byte it was not asked for.
    // Those bytes may all sit in the socket buffers at the kill (they hold tens of MiB), the
    // prefetched window's included: so `window + lead` per layer, not `lead`. Beyond them,
    // bytes consumed but not yet in the ingest file (the ingest channel's few chunks, the
    // writer's buffer) are the same 256 KiB per layer the rerun's bound allows; the config and
    // manifests are a few KiB over both pulls.
    let window = hoist_registry::WindowConfig::with_window(window_mib << 20);
    let total_bound =
        image_bytes / 100 + layers * (window.max_outstanding() + (256 << 10)) + (64 << 10);
    let mut worst_extra = 0u64;
    let mut worst_total = 0u64;
    for run_no in 0..runs {
        let seed = base.wrapping_add(run_no);
        let root = home.path().join(format!("store-{seed}"));
        proxy.clear_log();
        // Kill the pull after a random moment (maybe before it starts, maybe after it ends).
        let mut child = Command::new(env!("CARGO_BIN_EXE_hoist"))
            .args(["-q", "--config", config, "--root", root.to_str().unwrap()])
            .args(["pull", &image])
            .env("DOCKER_CONFIG", home.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        tokio::time::sleep(delay(seed, full_ms)).await;
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        // What survived the kill on disk: committed blobs and partial ingests.
        let held = held_bytes(&root);
        let first = proxy.bytes_sent(&blobs);
        proxy.clear_log();
        let out = run(
            home.path(),
            &root,
            &["-q", "--config", config, "pull", &image],
        );
        assert!(out.status.success(), "seed {seed}: {}", text(&out.stderr));
        let out = run(home.path(), &root, &["fsck"]);
        assert!(out.status.success(), "seed {seed}: {}", text(&out.stdout));
        // Resumed, not restarted: the second pull fetches only what the first had not kept
        // (plus the small config and a little slack for a writer's unflushed buffer).
        let refetched = proxy.bytes_sent(&blobs);
        let missing = image_bytes.saturating_sub(held);
        let slack = image_bytes / 100 + layers * (256 << 10);
        worst_extra = worst_extra.max(refetched.saturating_sub(missing));
        // Over both pulls; what the proxy sent but the killed pull never wrote down (socket
        // buffers, channels) counts here.
        worst_total = worst_total.max((first + refetched).saturating_sub(image_bytes));
        assert!(
            refetched <= missing + slack,
            "seed {seed}: the second pull fetched {refetched} bytes, {held} of the \
             {image_bytes}-byte image were already held"
        );
        assert!(
            first + refetched <= image_bytes + total_bound,
            "seed {seed}: both pulls together fetched {} bytes more than the {image_bytes}-byte \
             image; at most {total_bound} (1% + {layers} x (window {} + lead {} + 256 KiB))",
            (first + refetched).saturating_sub(image_bytes),
            window.window,
            window.lead
        );
    }
    eprintln!(
        "pull crash test: {runs} runs; a rerun fetched at most {worst_extra} bytes beyond what \
         the killed pull had not kept (bound: 1% of the {image_bytes}-byte image + 256 KiB per \
         layer); both pulls together fetched at most {worst_total} bytes more than the image \
         (bound: {total_bound})"
    );
}
