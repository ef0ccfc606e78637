//! Shared helpers: deterministic data, child processes running this test binary, and images.

use std::io::{BufRead, BufReader, Lines, Write};
use std::path::Path;
use std::process::{ChildStdin, ChildStdout, Command, Stdio};

use flate2::Compression as GzLevel;
use flate2::write::GzEncoder;
use hoist_store::digests::sha256_of;
use hoist_store::{Descriptor, Digest, MediaType, Store};
use rand::{RngCore, SeedableRng, rngs::StdRng};

/// Environment variable selecting the child role (see `child.rs`).
pub const ROLE: &str = "HOIST_STORE_TEST_CHILD";

/// `size` pseudo-random bytes determined by `seed`.
pub fn data(seed: u64, size: usize) -> Vec<u8> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = vec![0u8; size];
    rng.fill_bytes(&mut out);
    out
}

/// A child process running `child::child_process_entry` in a given role, speaking a line protocol
/// on stdout (lines starting with `@@ `) and reading commands on stdin.
pub struct ChildProc {
    pub child: std::process::Child,
    lines: Lines<BufReader<ChildStdout>>,
    stdin: Option<ChildStdin>,
}

impl ChildProc {
    pub fn spawn(role: &str, env: &[(&str, String)]) -> ChildProc {
        let exe = std::env::current_exe().unwrap();
        let mut cmd = Command::new(exe);
        cmd.args([
            "child::child_process_entry",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
            "-q",
        ])
        .env(ROLE, role)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let stdin = child.stdin.take();
        ChildProc {
            child,
            lines: BufReader::new(stdout).lines(),
            stdin,
        }
    }

    /// The next protocol message, or `None` when the child closed its output.
    pub fn next_msg(&mut self) -> Option<String> {
        for line in self.lines.by_ref() {
            let line = line.ok()?;
            if let Some(msg) = line.strip_prefix("@@ ") {
                return Some(msg.to_owned());
            }
        }
        None
    }

    /// The next message, which must exist.
    pub fn expect_msg(&mut self) -> String {
        self.next_msg()
            .expect("child ended without the expected message (see its stderr above)")
    }

    /// Sends one line to the child.
    pub fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    /// Kills the child with SIGKILL and reaps it.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Waits for the child and checks it succeeded.
    pub fn wait_success(mut self) {
        drop(self.stdin.take());
        let status = self.child.wait().unwrap();
        assert!(status.success(), "child failed: {status}");
    }
}

/// A small image written into `store`: one gzip layer holding `files`, a config, a manifest.
pub struct TestImage {
    pub manifest: Descriptor,
    pub manifest_bytes: Vec<u8>,
    pub config: Digest,
    pub layer: Digest,
    pub diff_id: Digest,
}

/// Builds an uncompressed tar of regular files and directories (paths ending in `/`).
pub fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, body) in files {
        let mut h = tar::Header::new_gnu();
        h.set_mtime(1_700_000_000);
        h.set_uid(0);
        h.set_gid(0);
        if path.ends_with('/') {
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(0o755);
            h.set_size(0);
            b.append_data(&mut h, path, std::io::empty()).unwrap();
        } else {
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mode(0o644);
            h.set_size(body.len() as u64);
            b.append_data(&mut h, path, *body).unwrap();
        }
    }
    b.into_inner().unwrap()
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), GzLevel::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

pub fn write_image(store: &Store, files: &[(&str, &[u8])]) -> TestImage {
    let tar = tar_of(files);
    let diff_id = sha256_of(&tar);
    let gz = gzip(&tar);
    let layer = sha256_of(&gz);
    // The layer goes through a streaming writer, as a pull would feed it.
    let mut w = store
        .content()
        .writer(
            &format!("layer-{layer}"),
            Some(&layer),
            Some(gz.len() as u64),
        )
        .unwrap();
    for chunk in gz.chunks(1000) {
        w.write_all(chunk).unwrap();
    }
    w.commit(Some(gz.len() as u64), Some(&layer)).unwrap();
    let config = serde_json::json!({
        "created": "2024-01-01T00:00:00Z",
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": ["PATH=/usr/bin:/bin"], "Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id.to_string()]},
        "history": [{"created": "2024-01-01T00:00:00Z", "created_by": "hoist test"}],
    });
    let config_bytes = serde_json::to_vec(&config).unwrap();
    let config_info = store.content().put_bytes(&config_bytes, None).unwrap();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_info.digest.to_string(),
            "size": config_info.size,
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": layer.to_string(),
            "size": gz.len(),
        }],
    });
    let manifest_bytes = serde_json::to_vec(&manifest).unwrap();
    let info = store.content().put_bytes(&manifest_bytes, None).unwrap();
    TestImage {
        manifest: Descriptor::new(MediaType::ImageManifest, info.size, info.digest),
        manifest_bytes,
        config: config_info.digest,
        layer,
        diff_id,
    }
}

/// Sets the modification time of every entry of `dir` (and `dir`) to `secs_ago` seconds ago.
pub fn age_dir(dir: &Path, secs_ago: u64) {
    let t = std::time::SystemTime::now() - std::time::Duration::from_secs(secs_ago);
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        std::fs::File::options()
            .write(true)
            .open(&p)
            .unwrap()
            .set_modified(t)
            .unwrap();
    }
    std::fs::File::open(dir).unwrap().set_modified(t).unwrap();
}

/// Path of the blob file of `digest` under `root`.
pub fn blob_path(root: &Path, digest: &Digest) -> std::path::PathBuf {
    root.join("blobs")
        .join(digest.algorithm().as_ref())
        .join(digest.digest())
}
