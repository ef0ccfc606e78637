//! zstd:chunked and eStargz against other tools: hoist reads the zstd:chunked layers skopeo 1.9
//! writes (`--dest-compress-format zstd:chunked`: the older annotations and footer, no
//! tar-split) and rebuilds their exact tar; the Debian `zstd` and `gzip` binaries, and skopeo,
//! read the layers hoist writes as plain zstd and gzip.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use bytes::Bytes;
use hoist_distribution::chunked::{
    ChunkedFormat, LEGACY_ZSTD_CHUNKED_MANIFEST_CHECKSUM, LEGACY_ZSTD_CHUNKED_MANIFEST_POSITION,
    LayerMetadata, LocalContent, MetadataLocator, WriteOptions, detect, metadata_ranges,
    parse_footer, parse_metadata, plan_rebuild, rebuild, write_chunked,
};
use hoist_registry::Chunk;
use hoist_store::Digest;
use hoist_store::digests::sha256_of;
use serde_json::{Value, json};

/// A layer tar with the kinds of entries layers have; file contents returned by digest.
fn layer_tar() -> (Vec<u8>, HashMap<Digest, Vec<u8>>) {
    let mut b = tar::Builder::new(Vec::new());
    let mut files = HashMap::new();
    let mut add = |b: &mut tar::Builder<Vec<u8>>, name: &str, data: Vec<u8>| {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(1_700_000_000);
        b.append_data(&mut h, name, data.as_slice()).unwrap();
        if !data.is_empty() {
            files.insert(sha256_of(&data), data);
        }
    };
    let mut dir = tar::Header::new_ustar();
    dir.set_entry_type(tar::EntryType::Directory);
    dir.set_mode(0o755);
    dir.set_size(0);
    b.append_data(&mut dir, "usr/", io::empty()).unwrap();
    add(&mut b, "usr/hello", b"hello\n".to_vec());
    add(&mut b, "usr/empty", Vec::new());
    // Incompressible content: an xorshift sequence.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let big: Vec<u8> = (0..300_000)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    add(&mut b, "usr/big", big);
    add(
        &mut b,
        &format!("{}/deep", "long".repeat(30)),
        b"deep\n".to_vec(),
    );
    let mut link = tar::Header::new_ustar();
    link.set_entry_type(tar::EntryType::Symlink);
    link.set_size(0);
    b.append_link(&mut link, "usr/link", "hello").unwrap();
    let mut hard = tar::Header::new_ustar();
    hard.set_entry_type(tar::EntryType::Link);
    hard.set_size(0);
    b.append_link(&mut hard, "usr/hard", "usr/hello").unwrap();
    add(&mut b, "usr/.wh.gone", Vec::new());
    (b.into_inner().unwrap(), files)
}

fn put_blob(layout: &Path, bytes: &[u8]) -> Digest {
    let digest = sha256_of(bytes);
    let dir = layout.join("blobs/sha256");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(digest.digest()), bytes).unwrap();
    digest
}

/// Writes a one-layer OCI layout tagged `t`.
pub(crate) fn write_layout(
    layout: &Path,
    layer: &[u8],
    media_type: &str,
    annotations: &BTreeMap<String, String>,
    diff_id: &Digest,
) {
    std::fs::create_dir_all(layout).unwrap();
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64", "os": "linux", "config": {},
        "rootfs": {"type": "layers", "diff_ids": [diff_id.to_string()]},
    }))
    .unwrap();
    let config_digest = put_blob(layout, &config);
    let layer_digest = put_blob(layout, layer);
    let mut descriptor =
        json!({"mediaType": media_type, "digest": layer_digest.to_string(), "size": layer.len()});
    if !annotations.is_empty() {
        descriptor["annotations"] = json!(annotations);
    }
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest.to_string(), "size": config.len()},
        "layers": [descriptor],
    }))
    .unwrap();
    let manifest_digest = put_blob(layout, &manifest);
    let index = json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": manifest_digest.to_string(), "size": manifest.len(),
        "annotations": {"org.opencontainers.image.ref.name": "t"},
    }]});
    std::fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&index).unwrap(),
    )
    .unwrap();
}

/// The layer descriptor and blob of a one-layer OCI layout.
fn read_layer(layout: &Path) -> (Value, Vec<u8>) {
    let blob = |d: &str| {
        std::fs::read(
            layout
                .join("blobs/sha256")
                .join(d.trim_start_matches("sha256:")),
        )
        .unwrap()
    };
    let index: Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let manifest: Value =
        serde_json::from_slice(&blob(index["manifests"][0]["digest"].as_str().unwrap())).unwrap();
    let layer = manifest["layers"][0].clone();
    let bytes = blob(layer["digest"].as_str().unwrap());
    (layer, bytes)
}

fn skopeo_copy(args: &[&str], from: &Path, to: &Path) {
    let status = Command::new("skopeo")
        .args(["--insecure-policy", "copy", "-q"])
        .args(args)
        .arg(format!("oci:{}:t", from.display()))
        .arg(format!("oci:{}:t", to.display()))
        .status()
        .unwrap();
    assert!(status.success(), "skopeo copy failed");
}

/// Pipes `input` through a command (`zstd -dc`, `gzip -dc`).
fn pipe(program: &str, args: &[&str], input: &[u8]) -> Vec<u8> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let mut out = Vec::new();
    child.stdout.take().unwrap().read_to_end(&mut out).unwrap();
    writer.join().unwrap().unwrap();
    assert!(child.wait().unwrap().success(), "{program} failed");
    out
}

struct Local(HashMap<Digest, Vec<u8>>);

impl LocalContent for Local {
    fn open(&self, digest: &Digest, _size: u64) -> io::Result<Option<Box<dyn Read + Send>>> {
        Ok(self
            .0
            .get(digest)
            .map(|v| Box::new(io::Cursor::new(v.clone())) as Box<dyn Read + Send>))
    }
}

fn slice(blob: &[u8], c: &Chunk) -> Bytes {
    Bytes::copy_from_slice(&blob[c.offset as usize..(c.offset + c.length) as usize])
}

fn metadata(
    blob: &[u8],
    media_type: &str,
    annotations: &BTreeMap<String, String>,
    use_footer: bool,
) -> LayerMetadata {
    let format = detect(media_type, annotations).expect("a chunked layer");
    let size = blob.len() as u64;
    let locator = if use_footer {
        metadata_ranges(format, &BTreeMap::new(), size).unwrap()
    } else {
        metadata_ranges(format, annotations, size).unwrap()
    };
    let ranges = match locator {
        MetadataLocator::Ranges(r) => r,
        MetadataLocator::Footer { format, tail } => {
            parse_footer(format, &slice(blob, &tail), size).unwrap()
        }
    };
    let parts: Vec<Bytes> = ranges.chunks().iter().map(|c| slice(blob, c)).collect();
    parse_metadata(&ranges, &parts, annotations).unwrap()
}

fn rebuild_from(blob: &[u8], meta: &LayerMetadata, local: &Local) -> (Digest, Vec<u8>, u64) {
    let plan = plan_rebuild(meta, &|d, _| local.0.contains_key(d));
    let fetched: Vec<io::Result<(usize, Bytes)>> = plan
        .fetch
        .iter()
        .enumerate()
        .map(|(i, c)| Ok((i, slice(blob, c))))
        .collect();
    let mut out = Vec::new();
    let diff_id = rebuild(meta, &plan, fetched.into_iter(), local, &mut out).unwrap();
    (diff_id, out, plan.fetch_bytes)
}

#[test]
fn hoist_rebuilds_the_exact_tar_of_a_skopeo_zstd_chunked_layer() {
    let (tar, files) = layer_tar();
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let gz = {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(&tar).unwrap();
        e.finish().unwrap()
    };
    write_layout(
        &a,
        &gz,
        "application/vnd.oci.image.layer.v1.tar+gzip",
        &BTreeMap::new(),
        &sha256_of(&tar),
    );
    skopeo_copy(&["--dest-compress-format", "zstd:chunked"], &a, &b);
    let (descriptor, blob) = read_layer(&b);
    let annotations: BTreeMap<String, String> =
        serde_json::from_value(descriptor["annotations"].clone()).unwrap();
    // What skopeo 1.9 writes: the older annotation names, no tar-split.
    assert!(
        annotations.contains_key(LEGACY_ZSTD_CHUNKED_MANIFEST_CHECKSUM),
        "{annotations:?}"
    );
    assert!(
        annotations.contains_key(LEGACY_ZSTD_CHUNKED_MANIFEST_POSITION),
        "{annotations:?}"
    );
    assert!(
        !annotations.keys().any(|k| k.contains("tarsplit")),
        "{annotations:?}"
    );
    assert_eq!(pipe("zstd", &["-dc"], &blob), tar);

    let media_type = descriptor["mediaType"].as_str().unwrap();
    for use_footer in [false, true] {
        let meta = metadata(&blob, media_type, &annotations, use_footer);
        assert!(!meta.has_tar_split);
        assert_eq!(meta.entries.len(), 8);
        let (diff_id, out, all_bytes) = rebuild_from(&blob, &meta, &Local(HashMap::new()));
        assert_eq!(out, tar);
        assert_eq!(diff_id, sha256_of(&tar));
        let (diff_id, out, local_bytes) = rebuild_from(&blob, &meta, &Local(files.clone()));
        assert_eq!(out, tar);
        assert_eq!(diff_id, sha256_of(&tar));
        // With every file local, only the compressed headers are fetched.
        assert!(local_bytes * 20 < all_bytes, "{local_bytes} of {all_bytes}");
    }
}

#[test]
fn zstd_and_gzip_and_skopeo_read_hoist_layers_as_plain_compressed_tars() {
    let (tar, _) = layer_tar();
    let dir = tempfile::tempdir().unwrap();
    for format in [ChunkedFormat::ZstdChunked, ChunkedFormat::Estargz] {
        let mut blob = Vec::new();
        let layer = write_chunked(&tar[..], &mut blob, &WriteOptions::new(format)).unwrap();
        let decoded = match format {
            ChunkedFormat::ZstdChunked => pipe("zstd", &["-dc"], &blob),
            ChunkedFormat::Estargz => pipe("gzip", &["-dc"], &blob),
        };
        if format == ChunkedFormat::ZstdChunked {
            assert_eq!(decoded, tar);
        }
        assert_eq!(sha256_of(&decoded), layer.diff_id);
        // skopeo recompresses it to gzip: it reads the whole stream as an ordinary layer.
        let (c, d) = (
            dir.path().join(format!("c-{}", layer.size)),
            dir.path().join(format!("d-{}", layer.size)),
        );
        write_layout(
            &c,
            &blob,
            &layer.media_type,
            &layer.annotations,
            &layer.diff_id,
        );
        skopeo_copy(&["--dest-compress-format", "gzip"], &c, &d);
        let (_, gz) = read_layer(&d);
        assert_eq!(pipe("gzip", &["-dc"], &gz), decoded);
        // And hoist rebuilds it from its own metadata.
        let meta = metadata(&blob, &layer.media_type, &layer.annotations, false);
        let (diff_id, out, _) = rebuild_from(&blob, &meta, &Local(HashMap::new()));
        assert_eq!((diff_id, out), (layer.diff_id.clone(), decoded));
    }
}
