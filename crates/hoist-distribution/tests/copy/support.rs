//! Test images built from scratch (tar layers, gzip, config and manifest JSON) in OCI layouts,
//! and helpers to run skopeo and copies.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use hoist_distribution::copy::{CopyOptions, CopyReport, PlatformSelection, copy};
use hoist_distribution::transport::{ImageName, TransportContext, open_destination, open_source};
use hoist_registry::RegistryClient;
use hoist_xfer::RetryPolicy;
use serde_json::{Value, json};
use sha2::Digest as _;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

pub fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex(&sha2::Sha256::digest(data)))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An uncompressed tar holding `files` (names ending in `/` are directories).
pub fn layer_tar(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in files {
        let mut h = tar::Header::new_ustar();
        if name.ends_with('/') {
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(0o755);
            h.set_size(0);
        } else {
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mode(0o644);
            h.set_size(data.len() as u64);
        }
        h.set_mtime(1_700_000_000);
        b.append_data(&mut h, name, *data).unwrap();
    }
    b.into_inner().unwrap()
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// `(os, architecture, variant)`.
pub type PlatformSpec<'a> = (&'a str, &'a str, Option<&'a str>);

/// One image written into a layout.
#[derive(Debug, Clone)]
pub struct BuiltImage {
    pub manifest: Vec<u8>,
    pub digest: String,
    pub config: String,
    /// Compressed layer digests.
    pub layers: Vec<String>,
    pub diff_ids: Vec<String>,
}

impl BuiltImage {
    /// Every blob the image names (config first).
    pub fn blobs(&self) -> Vec<String> {
        std::iter::once(self.config.clone())
            .chain(self.layers.iter().cloned())
            .collect()
    }
}

/// Writes blobs, images and names into an OCI layout directory.
pub struct Layout {
    pub root: PathBuf,
    entries: Vec<Value>,
}

impl Layout {
    pub fn new(root: &Path) -> Layout {
        std::fs::create_dir_all(root.join("blobs/sha256")).unwrap();
        std::fs::write(root.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        let l = Layout {
            root: root.to_owned(),
            entries: Vec::new(),
        };
        l.write_index();
        l
    }

    pub fn blob(&self, data: &[u8]) -> String {
        let digest = sha256(data);
        let path = self.blob_path(&digest);
        std::fs::write(path, data).unwrap();
        digest
    }

    pub fn blob_path(&self, digest: &str) -> PathBuf {
        self.root
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:"))
    }

    /// An image for `os/arch[/variant]` whose layers hold `layers` (each a list of files),
    /// gzip-compressed.
    pub fn image(&self, platform: PlatformSpec<'_>, layers: &[Vec<(&str, &[u8])>]) -> BuiltImage {
        let mut diff_ids = Vec::new();
        let mut descriptors = Vec::new();
        let mut digests = Vec::new();
        for files in layers {
            let tar = layer_tar(files);
            diff_ids.push(sha256(&tar));
            let gz = gzip(&tar);
            let d = self.blob(&gz);
            descriptors.push(json!({"mediaType": OCI_LAYER_GZIP, "digest": d, "size": gz.len()}));
            digests.push(d);
        }
        let mut config = json!({
            "architecture": platform.1,
            "os": platform.0,
            "config": {"Env": ["PATH=/usr/bin"], "Cmd": ["/bin/sh"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": [{"created_by": "hoist test"}],
        });
        if let Some(v) = platform.2 {
            config["variant"] = json!(v);
        }
        let config = serde_json::to_vec(&config).unwrap();
        let config_digest = self.blob(&config);
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": config.len()},
            "layers": descriptors,
        }))
        .unwrap();
        let digest = self.blob(&manifest);
        BuiltImage {
            manifest,
            digest,
            config: config_digest,
            layers: digests,
            diff_ids,
        }
    }

    /// An index listing `images` with their platforms (`None`: an entry without platform).
    pub fn index(&self, images: &[(&BuiltImage, Option<PlatformSpec<'_>>)]) -> (Vec<u8>, String) {
        let manifests: Vec<Value> = images
            .iter()
            .map(|(img, platform)| {
                let mut d = json!({"mediaType": OCI_MANIFEST, "digest": img.digest, "size": img.manifest.len()});
                if let Some((os, arch, variant)) = platform {
                    d["platform"] = json!({"os": os, "architecture": arch});
                    if let Some(v) = variant {
                        d["platform"]["variant"] = json!(v);
                    }
                }
                d
            })
            .collect();
        let bytes = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": manifests,
        }))
        .unwrap();
        let digest = self.blob(&bytes);
        (bytes, digest)
    }

    /// Names `digest` (`size` bytes of `media_type`) `name` in `index.json`.
    pub fn name(&mut self, name: &str, media_type: &str, digest: &str, size: usize) {
        self.entries.push(json!({
            "mediaType": media_type,
            "digest": digest,
            "size": size,
            "annotations": {REF_NAME: name},
        }));
        self.write_index();
    }

    fn write_index(&self) {
        std::fs::write(
            self.root.join("index.json"),
            serde_json::to_vec(&json!({"schemaVersion": 2, "manifests": self.entries})).unwrap(),
        )
        .unwrap();
    }
}

/// A two-layer single-platform image named `v1` in a new layout at `root`.
pub fn simple_layout(root: &Path) -> (Layout, BuiltImage) {
    let mut layout = Layout::new(root);
    let image = layout.image(
        ("linux", "amd64", None),
        &[
            vec![("etc/", b""), ("etc/os-release", b"NAME=hoist-test\n")],
            vec![
                ("hello.txt", b"hello from hoist\n"),
                ("data.bin", &[7u8; 70_000]),
            ],
        ],
    );
    layout.name("v1", OCI_MANIFEST, &image.digest, image.manifest.len());
    (layout, image)
}

/// Three platforms sharing a base layer, under an index named `multi`.
pub struct MultiPlatform {
    pub layout: Layout,
    pub amd64: BuiltImage,
    pub arm64: BuiltImage,
    pub armv7: BuiltImage,
    pub index: Vec<u8>,
    pub index_digest: String,
}

pub fn multi_platform_layout(root: &Path) -> MultiPlatform {
    let mut layout = Layout::new(root);
    let base: Vec<(&str, &[u8])> = vec![("etc/", b""), ("etc/motd", b"shared base\n")];
    let amd64 = layout.image(
        ("linux", "amd64", None),
        &[base.clone(), vec![("bin", b"x86-64 code")]],
    );
    let arm64 = layout.image(
        ("linux", "arm64", Some("v8")),
        &[base.clone(), vec![("bin", b"aarch64 code")]],
    );
    let armv7 = layout.image(
        ("linux", "arm", Some("v7")),
        &[base, vec![("bin", b"armv7 code")]],
    );
    let (index, index_digest) = layout.index(&[
        (&amd64, Some(("linux", "amd64", None))),
        (&arm64, Some(("linux", "arm64", Some("v8")))),
        (&armv7, Some(("linux", "arm", Some("v7")))),
    ]);
    layout.name("multi", OCI_INDEX, &index_digest, index.len());
    MultiPlatform {
        layout,
        amd64,
        arm64,
        armv7,
        index,
        index_digest,
    }
}

/// Retries that do not make tests wait.
pub fn quick_retries() -> RetryPolicy {
    RetryPolicy::new()
        .with_max_attempts(2)
        .with_base_delay(Duration::from_millis(5))
        .with_jitter(false)
}

pub fn options(platforms: PlatformSelection) -> CopyOptions {
    CopyOptions {
        platforms,
        retry: quick_retries(),
        ..CopyOptions::default()
    }
}

pub fn registry_context() -> TransportContext {
    TransportContext::default().with_registry(RegistryClient::builder().build().unwrap())
}

/// Opens `src` and `dst` by name and copies.
pub async fn copy_names(
    src: &str,
    dst: &str,
    context: &TransportContext,
    options: &CopyOptions,
) -> Result<CopyReport, hoist_distribution::copy::CopyError> {
    let source = open_source(&ImageName::parse(src).unwrap(), context).await?;
    let destination = open_destination(&ImageName::parse(dst).unwrap(), context).await?;
    copy(Arc::clone(&source), destination, options).await
}

/// Runs skopeo and returns its standard output; fails the test if skopeo fails.
pub fn skopeo(args: &[&str]) -> Vec<u8> {
    let out = Command::new("skopeo")
        .args(args)
        .output()
        .expect("skopeo is installed (Debian package skopeo)");
    assert!(
        out.status.success(),
        "skopeo {args:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// `skopeo inspect` as JSON.
pub fn skopeo_inspect(name: &str) -> Value {
    let mut args = vec!["inspect"];
    if name.starts_with("docker://") {
        args.push("--tls-verify=false");
    }
    args.push(name);
    serde_json::from_slice(&skopeo(&args)).unwrap()
}

/// The raw manifest skopeo reads for `name`.
pub fn skopeo_raw(name: &str) -> Vec<u8> {
    let mut args = vec!["inspect", "--raw"];
    if name.starts_with("docker://") {
        args.push("--tls-verify=false");
    }
    args.push(name);
    skopeo(&args)
}

/// Blob digests present in a layout.
pub fn layout_blobs(root: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(root.join("blobs/sha256"))
        .unwrap()
        .map(|e| format!("sha256:{}", e.unwrap().file_name().to_string_lossy()))
        .collect();
    out.sort();
    out
}

/// The entries of a layout's `index.json`.
pub fn index_entries(root: &Path) -> Vec<Value> {
    let v: Value =
        serde_json::from_slice(&std::fs::read(root.join("index.json")).unwrap()).unwrap();
    v["manifests"].as_array().unwrap().clone()
}

/// Names of files in `dir` that are hoist's temporary files.
pub fn temp_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".hoist-"))
        .collect()
}
