//! Partial pulls of zstd:chunked and eStargz layers, against the real registry (through the
//! fault proxy, which counts the bytes it sends): the layer is rebuilt from the files of a layer
//! already in the store plus the chunks that changed, verified, and identical to a full pull.

use std::collections::BTreeMap;
use std::path::Path;

use bytes::Bytes;
use hoist_distribution::chunked::{ChunkedFormat, WriteOptions, write_chunked};
use hoist_distribution::{PullResult, pull};
use hoist_registry::Repository;
use hoist_registry::manifest::OCI_MANIFEST;
use hoist_store::Store;
use hoist_test_support::{Action, FaultProxy, Matcher, Rule};
use hoist_xfer::RootFs;
use serde_json::json;

use super::*;

/// A chunked layer built with hoist's writer.
struct Chunked {
    tar: Vec<u8>,
    blob: Vec<u8>,
    media_type: String,
    annotations: BTreeMap<String, String>,
    diff_id: Digest,
}

fn chunked(format: ChunkedFormat, files: &[(&str, &[u8])]) -> Chunked {
    let tar = tar_of(files);
    let mut blob = Vec::new();
    let layer = write_chunked(&tar[..], &mut blob, &WriteOptions::new(format)).unwrap();
    assert_eq!(layer.digest, sha(&blob));
    Chunked {
        tar,
        blob,
        media_type: layer.media_type,
        annotations: layer.annotations,
        diff_id: layer.diff_id,
    }
}

/// Pushes a one-layer OCI image whose layer descriptor carries the chunked annotations.
async fn push_chunked(repo: &Repository, tag: &str, layer: &Chunked) -> Digest {
    let config = config_json("linux/amd64", std::slice::from_ref(&layer.diff_id));
    let config_d = push_blob(repo, &config).await;
    let layer_d = push_blob(repo, &layer.blob).await;
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config_d.to_string(), "size": config.len()},
        "layers": [{
            "mediaType": layer.media_type,
            "digest": layer_d.to_string(),
            "size": layer.blob.len(),
            "annotations": layer.annotations,
        }],
    }))
    .unwrap();
    repo.put_manifest(tag, OCI_MANIFEST, Bytes::from(manifest))
        .await
        .unwrap()
}

/// v1: three files; v2: the same tree with one file changed and one added.
struct Corpus {
    v1: Vec<(String, Vec<u8>)>,
    v2: Vec<(String, Vec<u8>)>,
    /// Bytes of file content in v2 that v1 lacks.
    changed: u64,
}

fn corpus() -> Corpus {
    let a = noise(300_000, 1);
    let b = noise(250_000, 2);
    let c1 = noise(120_000, 3);
    let c2 = noise(120_000, 4);
    let d = noise(40_000, 5);
    Corpus {
        v1: vec![
            ("app/a.bin".into(), a.clone()),
            ("app/b.bin".into(), b.clone()),
            ("app/c.bin".into(), c1),
        ],
        changed: (c2.len() + d.len()) as u64,
        v2: vec![
            ("app/a.bin".into(), a),
            ("app/b.bin".into(), b),
            ("app/c.bin".into(), c2),
            ("app/d.bin".into(), d),
        ],
    }
}

fn files(v: &[(String, Vec<u8>)]) -> Vec<(&str, &[u8])> {
    v.iter().map(|(p, d)| (p.as_str(), d.as_slice())).collect()
}

/// The unpacked tree of `result` in `store`, as (path, content) pairs.
fn tree(store: &Store, result: &PullResult, dir: &Path) -> Vec<(String, Vec<u8>)> {
    let diff_ids: Vec<Digest> = result.layers.iter().map(|l| l.diff_id.clone()).collect();
    let top = RootFs::from(diff_ids).chain_ids().last().unwrap();
    unpack(store, &top, dir);
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
                out.push((rel, std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

struct Setup {
    _registry: hoist_test_support::Registry,
    proxy: FaultProxy,
    v2_layer: Chunked,
    corpus: Corpus,
}

async fn setup(format: ChunkedFormat) -> Setup {
    let registry = start_registry().await;
    let proxy = FaultProxy::start(&registry.url()).await.unwrap();
    let repo = repo(&registry.host(), "app");
    let corpus = corpus();
    let v1 = chunked(format, &files(&corpus.v1));
    let v2 = chunked(format, &files(&corpus.v2));
    push_chunked(&repo, "v1", &v1).await;
    push_chunked(&repo, "v2", &v2).await;
    Setup {
        _registry: registry,
        proxy,
        v2_layer: v2,
        corpus,
    }
}

fn layer_path(layer: &Chunked) -> String {
    format!("/blobs/{}", sha(&layer.blob))
}

async fn round_trip(format: ChunkedFormat) {
    let s = setup(format).await;
    let host = s.proxy.host();
    let local = local_store();
    let (cfg, _rec) = pull_config(&local.store);
    let v1 = pull(&cfg, &image_ref(&host, "app:v1")).await.unwrap();
    assert!(v1.partial_layers.is_empty(), "nothing local: a full pull");
    s.proxy.clear_log();
    let v2 = pull(&cfg, &image_ref(&host, "app:v2")).await.unwrap();
    let blob = sha(&s.v2_layer.blob);
    assert_eq!(v2.partial_layers, vec![blob.clone()], "{v2:?}");
    assert_eq!(v2.layers[0].diff_id, s.v2_layer.diff_id);
    if format == ChunkedFormat::ZstdChunked {
        // zstd:chunked keeps the tar stream; eStargz adds its TOC entry to it.
        assert_eq!(v2.layers[0].diff_id, sha(&s.v2_layer.tar));
    }

    // Bytes: the changed files and the metadata, not the unchanged ones.
    let sent = s.proxy.bytes_sent(&Matcher::get(&layer_path(&s.v2_layer)));
    let size = s.v2_layer.blob.len() as u64;
    let metadata =
        match hoist_distribution::chunked::metadata_ranges(format, &s.v2_layer.annotations, size)
            .unwrap()
        {
            hoist_distribution::chunked::MetadataLocator::Ranges(r) => size - r.data_end,
            hoist_distribution::chunked::MetadataLocator::Footer { .. } => {
                // eStargz: the TOC member and footer; bounded by what the TOC describes.
                size / 10
            }
        };
    assert!(
        sent as f64 <= 1.2 * s.corpus.changed as f64 + metadata as f64,
        "sent {sent} bytes for {} changed bytes and {metadata} of metadata (blob {size})",
        s.corpus.changed
    );
    assert!(sent < size / 2, "sent {sent} of {size}");

    // Identical to a full pull.
    let full = local_store();
    let (mut fcfg, _) = pull_config(&full.store);
    fcfg.partial = false;
    let f2 = pull(&fcfg, &image_ref(&host, "app:v2")).await.unwrap();
    assert!(f2.partial_layers.is_empty());
    assert_eq!(f2.layers, v2.layers);
    let t_partial = tree(&local.store, &v2, &local.dir.path().join("p"));
    let t_full = tree(&full.store, &f2, &full.dir.path().join("f"));
    assert_eq!(t_partial, t_full);
    let mut expected: Vec<(String, Vec<u8>)> = s.corpus.v2.clone();
    expected.sort();
    let files_only: Vec<_> = t_partial
        .into_iter()
        .filter(|(p, _)| p != "stargz.index.json")
        .collect();
    assert_eq!(files_only, expected);

    // The blob is absent: the image is hoist's but not in index.json.
    let name = v2.reference.clone();
    assert!(local.store.resolve(&name).unwrap().is_some());
    assert!(!local.store.is_published(&name).unwrap());
    assert!(local.store.is_published(&v1.reference).unwrap());
    assert!(!local.store.content().contains(&blob).unwrap());
    let fsck = local.store.fsck(&Default::default()).unwrap();
    assert!(fsck.is_clean(), "{fsck:?}");
    // Fetching the blob brings the image into index.json.
    let fetched = hoist_distribution::absent::fetch_absent_blob(&client(), &local.store, &blob)
        .await
        .unwrap();
    assert!(fetched);
    assert!(local.store.content().contains(&blob).unwrap());
    assert!(local.store.is_published(&name).unwrap());
    assert!(local.store.metadata().absent_blobs().unwrap().is_empty());
}

#[tokio::test]
async fn a_zstd_chunked_layer_is_rebuilt_from_local_files_and_changed_chunks() {
    round_trip(ChunkedFormat::ZstdChunked).await;
}

#[tokio::test]
async fn an_estargz_layer_is_rebuilt_from_local_files_and_changed_chunks() {
    round_trip(ChunkedFormat::Estargz).await;
}

#[tokio::test]
async fn a_registry_ignoring_ranges_gets_a_full_pull_with_the_right_layer() {
    let s = setup(ChunkedFormat::ZstdChunked).await;
    let host = s.proxy.host();
    let local = local_store();
    let (cfg, _rec) = pull_config(&local.store);
    pull(&cfg, &image_ref(&host, "app:v1")).await.unwrap();
    s.proxy
        .add_rule(Rule::get(&layer_path(&s.v2_layer), Action::IgnoreRange));
    let v2 = pull(&cfg, &image_ref(&host, "app:v2")).await.unwrap();
    assert!(v2.partial_layers.is_empty());
    assert_eq!(v2.partial_fallbacks, 1);
    assert_eq!(v2.layers[0].diff_id, s.v2_layer.diff_id);
    let blob = sha(&s.v2_layer.blob);
    assert!(local.store.content().contains(&blob).unwrap());
    assert!(local.store.is_published(&v2.reference).unwrap());
    // The range request was answered with the whole blob once, and dropped unread; the full
    // pull fetched it again: never much more than twice the blob.
    let sent = s.proxy.bytes_sent(&Matcher::get(&layer_path(&s.v2_layer)));
    assert!(
        sent <= 2 * s.v2_layer.blob.len() as u64 + (1 << 20),
        "{sent}"
    );
}

#[tokio::test]
async fn a_corrupted_chunk_never_yields_a_wrong_layer() {
    let s = setup(ChunkedFormat::ZstdChunked).await;
    let host = s.proxy.host();
    let local = local_store();
    let (cfg, _rec) = pull_config(&local.store);
    pull(&cfg, &image_ref(&host, "app:v1")).await.unwrap();
    // The first GET of the layer fetches the metadata, the second the changed chunks.
    s.proxy
        .add_rule(Rule::get(&layer_path(&s.v2_layer), Action::FlipByte { offset: 5000 }).nth(2));
    let v2 = pull(&cfg, &image_ref(&host, "app:v2")).await.unwrap();
    assert!(v2.partial_layers.is_empty(), "the rebuild must fail");
    assert_eq!(v2.partial_fallbacks, 1);
    assert_eq!(v2.layers[0].diff_id, s.v2_layer.diff_id);
    let t = tree(&local.store, &v2, &local.dir.path().join("t"));
    let mut expected = s.corpus.v2.clone();
    expected.sort();
    assert_eq!(t, expected);
}

#[tokio::test]
async fn partial_pulls_can_be_turned_off() {
    let s = setup(ChunkedFormat::ZstdChunked).await;
    let host = s.proxy.host();
    let local = local_store();
    let (mut cfg, _rec) = pull_config(&local.store);
    cfg.partial = false;
    pull(&cfg, &image_ref(&host, "app:v1")).await.unwrap();
    let v2 = pull(&cfg, &image_ref(&host, "app:v2")).await.unwrap();
    assert!(v2.partial_layers.is_empty());
    assert_eq!(v2.partial_fallbacks, 0);
    assert!(
        local
            .store
            .content()
            .contains(&sha(&s.v2_layer.blob))
            .unwrap()
    );
}

#[tokio::test]
async fn pushing_an_image_with_an_absent_blob_fetches_it_and_others_can_pull_it() {
    let s = setup(ChunkedFormat::ZstdChunked).await;
    let host = s.proxy.host();
    let local = local_store();
    let (cfg, _rec) = pull_config(&local.store);
    pull(&cfg, &image_ref(&host, "app:v1")).await.unwrap();
    let v2 = pull(&cfg, &image_ref(&host, "app:v2")).await.unwrap();
    assert_eq!(v2.partial_layers.len(), 1);
    let blob = sha(&s.v2_layer.blob);

    // Another registry: the blob cannot be mounted; it is fetched from where it came from.
    let other = start_registry().await;
    let target = image_ref(&other.host(), "copy:v2");
    local
        .store
        .add_reference(
            &target.to_string(),
            &local.store.resolve(&v2.reference).unwrap().unwrap(),
        )
        .unwrap();
    let (pcfg, _) = push_config(&local.store);
    hoist_distribution::push(&pcfg, &target).await.unwrap();
    let remote = repo(&other.host(), "copy");
    assert_eq!(
        remote.head_blob(&blob).await.unwrap(),
        Some(s.v2_layer.blob.len() as u64)
    );
    assert!(local.store.content().contains(&blob).unwrap());
    assert!(local.store.is_published(&v2.reference).unwrap());

    // skopeo pulls what was pushed.
    let out = local.dir.path().join("skopeo-oci");
    let status = std::process::Command::new("skopeo")
        .args([
            "copy",
            "--src-tls-verify=false",
            &format!("docker://{}/copy:v2", other.host()),
            &format!("oci:{}:v2", out.display()),
        ])
        .status()
        .unwrap();
    assert!(status.success());
}

/// The measurement behind `scripts/bench/partial.sh` (ignored in normal runs): a tree of 300
/// files (~24 MB), v2 with 10 files changed and 5 added, both pushed as zstd:chunked; v1 is
/// pulled, then v2 partially, and v2 again whole into a store that also holds v1. Prints one
/// `PARTIAL_BENCH {json}` line with the bytes the proxy sent for v2's layer in each case.
#[tokio::test]
#[ignore = "measurement, run by scripts/bench/partial.sh"]
async fn bench_partial_pull_bytes() {
    let mut v1: Vec<(String, Vec<u8>)> = (0..300u64)
        .map(|i| {
            let len = 4_000 + (i as usize * 7919) % 160_000;
            (
                format!("usr/lib/pkg{}/file{i}.bin", i % 17),
                noise(len, i + 100),
            )
        })
        .collect();
    v1.sort();
    let mut v2 = v1.clone();
    let mut changed = 0u64;
    for i in 0..10usize {
        let idx = i * 29;
        let len = v2[idx].1.len();
        v2[idx].1 = noise(len, 10_000 + i as u64);
        changed += len as u64;
    }
    for i in 0..5u64 {
        let data = noise(50_000, 20_000 + i);
        changed += data.len() as u64;
        v2.push((format!("usr/lib/new/added{i}.bin"), data));
    }
    v2.sort();
    let registry = start_registry().await;
    let proxy = FaultProxy::start(&registry.url()).await.unwrap();
    let r = repo(&registry.host(), "bench");
    let l1 = chunked(ChunkedFormat::ZstdChunked, &files(&v1));
    let l2 = chunked(ChunkedFormat::ZstdChunked, &files(&v2));
    push_chunked(&r, "v1", &l1).await;
    push_chunked(&r, "v2", &l2).await;
    let host = proxy.host();
    let path = layer_path(&l2);

    let partial_store = local_store();
    let (cfg, _) = pull_config(&partial_store.store);
    pull(&cfg, &image_ref(&host, "bench:v1")).await.unwrap();
    let start = std::time::Instant::now();
    let res = pull(&cfg, &image_ref(&host, "bench:v2")).await.unwrap();
    let partial_secs = start.elapsed().as_secs_f64();
    assert_eq!(res.partial_layers.len(), 1);
    let partial_bytes = proxy.bytes_sent(&Matcher::get(&path));

    proxy.clear_log();
    let plain_store = local_store();
    let (mut pcfg, _) = pull_config(&plain_store.store);
    pcfg.partial = false;
    pull(&pcfg, &image_ref(&host, "bench:v1")).await.unwrap();
    let start = std::time::Instant::now();
    let plain = pull(&pcfg, &image_ref(&host, "bench:v2")).await.unwrap();
    let plain_secs = start.elapsed().as_secs_f64();
    assert_eq!(plain.layers, res.layers);
    let plain_bytes = proxy.bytes_sent(&Matcher::get(&path));
    let size = l2.blob.len() as u64;
    let metadata = match hoist_distribution::chunked::metadata_ranges(
        ChunkedFormat::ZstdChunked,
        &l2.annotations,
        size,
    )
    .unwrap()
    {
        hoist_distribution::chunked::MetadataLocator::Ranges(r) => size - r.data_end,
        hoist_distribution::chunked::MetadataLocator::Footer { .. } => 0,
    };
    println!(
        "PARTIAL_BENCH {}",
        json!({
            "files_v1": v1.len(), "files_v2": v2.len(), "layer_bytes": size,
            "changed_bytes": changed, "metadata_bytes": metadata,
            "partial_bytes": partial_bytes, "plain_bytes": plain_bytes,
            "partial_secs": partial_secs, "plain_secs": plain_secs,
        })
    );
    assert!(partial_bytes as f64 <= 1.2 * (changed + metadata) as f64);
}

#[tokio::test]
async fn exporting_an_image_with_an_absent_blob_fetches_it_from_its_source() {
    use hoist_distribution::copy::{CopyOptions, copy};
    use hoist_distribution::transport::{
        ImageName, TransportContext, open_destination, open_source,
    };

    let s = setup(ChunkedFormat::ZstdChunked).await;
    let host = s.proxy.host();
    let local = local_store();
    let (cfg, _rec) = pull_config(&local.store);
    pull(&cfg, &image_ref(&host, "app:v1")).await.unwrap();
    let v2 = pull(&cfg, &image_ref(&host, "app:v2")).await.unwrap();
    assert_eq!(v2.partial_layers.len(), 1);
    let blob = sha(&s.v2_layer.blob);
    let out = local.dir.path().join("export");
    let context = TransportContext::default()
        .with_store(local.store.clone())
        .with_registry(client());
    let source = open_source(
        &ImageName::parse(&format!("store:{}", v2.reference)).unwrap(),
        &context,
    )
    .await
    .unwrap();
    let destination = open_destination(
        &ImageName::parse(&format!("oci:{}:v2", out.display())).unwrap(),
        &context,
    )
    .await
    .unwrap();
    copy(source, destination, &CopyOptions::default())
        .await
        .unwrap();
    let exported = out.join("blobs/sha256").join(blob.digest());
    assert_eq!(std::fs::read(exported).unwrap(), s.v2_layer.blob);
    // The store now holds the blob too, and the image is in its index.json.
    assert!(local.store.content().contains(&blob).unwrap());
    assert!(local.store.is_published(&v2.reference).unwrap());
    // Without a registry client the blob cannot be fetched: the export fails, nothing dangles.
    let local2 = local_store();
    let (cfg2, _) = pull_config(&local2.store);
    pull(&cfg2, &image_ref(&host, "app:v1")).await.unwrap();
    let v2b = pull(&cfg2, &image_ref(&host, "app:v2")).await.unwrap();
    let offline = TransportContext::default().with_store(local2.store.clone());
    let source = open_source(
        &ImageName::parse(&format!("store:{}", v2b.reference)).unwrap(),
        &offline,
    )
    .await
    .unwrap();
    let out2 = local2.dir.path().join("export");
    let destination = open_destination(
        &ImageName::parse(&format!("oci:{}:v2", out2.display())).unwrap(),
        &offline,
    )
    .await
    .unwrap();
    assert!(
        copy(source, destination, &CopyOptions::default())
            .await
            .is_err()
    );
}

/// Pushes a one-layer image to `registry` with skopeo, from a gzip layout of `tar`,
/// recompressed as `compress` (skopeo's `--dest-compress-format`) when given.
fn skopeo_push(registry: &str, image: &str, tar: &[u8], compress: Option<&str>) {
    use std::io::Write as _;
    let dir = tempfile::tempdir().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(tar).unwrap();
    crate::chunked::write_layout(
        dir.path(),
        &gz.finish().unwrap(),
        "application/vnd.oci.image.layer.v1.tar+gzip",
        &BTreeMap::new(),
        &sha(tar),
    );
    let mut cmd = std::process::Command::new("skopeo");
    cmd.args(["--insecure-policy", "copy", "-q", "--dest-tls-verify=false"]);
    if let Some(format) = compress {
        cmd.args(["--dest-compress", "--dest-compress-format", format]);
    }
    let status = cmd
        .arg(format!("oci:{}:t", dir.path().display()))
        .arg(format!("docker://{registry}/{image}"))
        .status()
        .unwrap();
    assert!(status.success(), "skopeo copy to {image} failed");
}

#[tokio::test]
async fn a_zstd_chunked_image_pushed_by_skopeo_is_pulled_partially() {
    let registry = start_registry().await;
    let proxy = FaultProxy::start(&registry.url()).await.unwrap();
    let corpus = corpus();
    let (tar1, tar2) = (tar_of(&files(&corpus.v1)), tar_of(&files(&corpus.v2)));
    skopeo_push(&registry.host(), "sk:v1", &tar1, None);
    skopeo_push(&registry.host(), "sk:v2", &tar2, Some("zstd:chunked"));

    let local = local_store();
    let (cfg, _rec) = pull_config(&local.store);
    let host = proxy.host();
    pull(&cfg, &image_ref(&host, "sk:v1")).await.unwrap();
    proxy.clear_log();
    let v2 = pull(&cfg, &image_ref(&host, "sk:v2")).await.unwrap();
    assert_eq!(v2.partial_layers.len(), 1, "{v2:?}");
    assert_eq!(v2.layers[0].diff_id, sha(&tar2));
    let layer = &v2.partial_layers[0];
    let sent = proxy.bytes_sent(&Matcher::get(&format!("/blobs/{layer}")));
    let size = v2.layers[0].size;
    eprintln!(
        "skopeo-written zstd:chunked: {sent} of {size} bytes fetched ({} changed)",
        corpus.changed
    );
    // skopeo's layer: the changed files' chunks and its metadata (TOC, footer), not the rest.
    assert!(
        sent < size / 2 && sent > corpus.changed && sent <= corpus.changed * 12 / 10 + (64 << 10),
        "sent {sent} bytes of a {size}-byte layer with {} changed bytes",
        corpus.changed
    );

    let mut expected = corpus.v2.clone();
    expected.sort();
    assert_eq!(
        tree(&local.store, &v2, &local.dir.path().join("t")),
        expected
    );
    let fsck = local.store.fsck(&Default::default()).unwrap();
    assert!(fsck.is_clean(), "{fsck:?}");
}
