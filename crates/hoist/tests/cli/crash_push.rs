//! `kill -9` during a push, then the push again: it completes, the registry serves the exact
//! image, and the second push uploads only what the registry did not already hold.
//!
//! Upload sessions live in the killed process only, so a layer whose upload was cut restarts from
//! byte 0 in a new session (its orphaned session is left to the registry's upload purging); a
//! layer the registry completed before the kill is not sent again. Hence the bound, per run: the
//! second push uploads at most the layers the registry lacks after the kill, plus the config.
//!
//! CI runs a few runs; `scripts/crash.sh` runs many (`HOIST_CRASH_PUSH_RUNS`).

use crate::crash::{base_seed, delay, env_number, seed_big};
use crate::pull::run;
use crate::*;
use hoist_registry::{Endpoint, RegistryClient, Scheme};
use hoist_test_support::{FaultProxy, Matcher};

/// The manifest digest `hoist pull` printed.
fn printed_digest(out: &Output) -> String {
    let stdout = text(&out.stdout);
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("Digest: "))
        .unwrap_or_else(|| panic!("no digest in {stdout}"))
        .trim()
        .to_owned()
}

/// The digest of the manifest `registry` serves for `reference`, as skopeo sees it.
fn skopeo_manifest_digest(reference: &str) -> String {
    let out = Command::new("skopeo")
        .args([
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{reference}"),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "skopeo: {}", text(&out.stderr));
    hoist_registry::digest::sha256_of(&out.stdout).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_killed_at_random_moments_completes_on_rerun_and_the_registry_serves_the_exact_image()
 {
    let runs = env_number("HOIST_CRASH_PUSH_RUNS", 3);
    let base = base_seed("push crash test");
    let source = Registry::start().await.unwrap();
    let big = seed_big(&source, "crash/big").await;
    let home = tempfile::tempdir().unwrap();
    let store = home.path().join("store");
    let src = format!("{}/crash/big:v1", source.host());
    let out = run(home.path(), &store, &["pull", "--no-unpack", &src]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(printed_digest(&out), big.digest);

    // How long a whole push takes here: kills land at random moments within it.
    let warm = Registry::start().await.unwrap();
    let warm_ref = format!("{}/crash/warm:v1", warm.host());
    assert!(
        run(home.path(), &store, &["tag", &src, &warm_ref])
            .status
            .success()
    );
    let started = std::time::Instant::now();
    let out = run(home.path(), &store, &["-q", "push", &warm_ref]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let full_ms = (started.elapsed().as_millis() as u64).max(50);

    let uploads = Matcher::any_method("/blobs/uploads/");
    let mut worst_ratio = 0f64;
    let mut reuploaded = 0;
    for run_no in 0..runs {
        let seed = base.wrapping_add(run_no);
        // A registry of its own: hoist records the repositories it pushed to and would mount
        // from them instead of uploading.
        let target = Registry::start().await.unwrap();
        let proxy = FaultProxy::start(&target.url()).await.unwrap();
        let dest = format!("{}/crash/pushed:v1", proxy.host());
        assert!(
            run(home.path(), &store, &["tag", &src, &dest])
                .status
                .success()
        );

        let mut child = Command::new(env!("CARGO_BIN_EXE_hoist"))
            .args(["-q", "--root", store.to_str().unwrap(), "push", &dest])
            .env("DOCKER_CONFIG", home.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        tokio::time::sleep(delay(seed, full_ms)).await;
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        let first = proxy.bytes_received(&uploads);

        // What the registry holds after the kill, asked directly (not through the proxy).
        let client = RegistryClient::builder().build().unwrap();
        let repo = client.repository(Endpoint::new(target.host(), Scheme::Http), "crash/pushed");
        let manifest = repo.get_manifest(&big.digest).await;
        let mut missing = 0;
        if manifest.is_err() {
            for (digest, size) in &big.layers {
                let d = oci_spec::image::Digest::try_from(digest.as_str()).unwrap();
                // A registry still finishing the killed push's last upload may answer an error:
                // counted as missing (this only loosens the upper bound below).
                if !matches!(repo.head_blob(&d).await, Ok(Some(_))) {
                    missing += size;
                }
            }
        }

        proxy.clear_log();
        let out = run(home.path(), &store, &["push", &dest]);
        assert!(out.status.success(), "seed {seed}: {}", text(&out.stderr));
        let second = proxy.bytes_received(&uploads);
        // Each layer the rerun reports "Pushed" went up whole, in a new session from byte 0.
        let stdout = text(&out.stdout);
        let pushed: u64 = big
            .layers
            .iter()
            .filter(|(digest, _)| {
                let short = format!("{}: ", &digest["sha256:".len()..][..12]);
                stdout
                    .lines()
                    .rfind(|l| l.starts_with(&short))
                    .is_some_and(|l| l.ends_with(": Pushed"))
            })
            .map(|(_, size)| size)
            .sum();
        assert!(
            second >= pushed,
            "seed {seed}: the second push uploaded {second} bytes for {pushed} bytes of layers:\n{stdout}"
        );
        reuploaded += pushed;
        // The config is small; a kilobyte of slack covers it.
        assert!(
            second <= missing + 1024,
            "seed {seed}: the second push uploaded {second} bytes, the registry lacked {missing}"
        );
        worst_ratio = worst_ratio.max((first + second) as f64 / big.layer_bytes as f64);

        // The registry serves the exact image: same manifest digest for skopeo, and a pull into
        // a fresh store (which verifies every blob) gives the same digest and a sound store.
        let direct = format!("{}/crash/pushed:v1", target.host());
        assert_eq!(skopeo_manifest_digest(&direct), big.digest, "seed {seed}");
        let back = home.path().join(format!("back-{seed}"));
        let out = run(home.path(), &back, &["pull", "--no-unpack", &direct]);
        assert!(out.status.success(), "seed {seed}: {}", text(&out.stderr));
        assert_eq!(printed_digest(&out), big.digest, "seed {seed}");
        let out = run(home.path(), &back, &["fsck"]);
        assert!(out.status.success(), "seed {seed}: {}", text(&out.stdout));
        std::fs::remove_dir_all(&back).unwrap();
    }
    eprintln!(
        "push crash test: {runs} runs, at most {worst_ratio:.2}x the image's {} layer bytes \
         uploaded over a killed push and its rerun; the reruns uploaded {reuploaded} bytes of \
         layers again",
        big.layer_bytes
    );
    let out = run(home.path(), &store, &["fsck"]);
    assert!(out.status.success(), "{}", text(&out.stdout));
}
