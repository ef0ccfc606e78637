//! Round trips of both formats over generated tar trees, rebuilds with and without local
//! content, and corruption of every kind.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read};

use bytes::Bytes;
use hoist_store::Digest;
use hoist_store::digests::sha256_of;
use proptest::prelude::*;

use super::*;

/// One generated tar entry.
#[derive(Debug, Clone)]
enum Spec {
    Dir(String),
    File(String, Vec<u8>, Vec<(String, Vec<u8>)>),
    Symlink(String, String),
    Hardlink(String),
}

fn header(name: &str, kind: ::tar::EntryType, size: u64) -> ::tar::Header {
    let mut h = ::tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(if kind == ::tar::EntryType::Directory {
        0o755
    } else {
        0o644
    });
    h.set_uid(1000);
    h.set_gid(100);
    h.set_mtime(1_700_000_000);
    let _ = h.set_username("user");
    let _ = h.set_groupname("group");
    let _ = name;
    h
}

/// Builds a tar stream from specs (hard links point at the first regular file).
fn build_tar(specs: &[Spec]) -> Vec<u8> {
    let mut b = ::tar::Builder::new(Vec::new());
    let mut first_file: Option<String> = None;
    for spec in specs {
        match spec {
            Spec::Dir(name) => {
                let mut h = header(name, ::tar::EntryType::Directory, 0);
                b.append_data(&mut h, name, io::empty()).unwrap();
            }
            Spec::File(name, data, xattrs) => {
                if !xattrs.is_empty() {
                    let records: Vec<(String, &[u8])> = xattrs
                        .iter()
                        .map(|(k, v)| (format!("SCHILY.xattr.{k}"), v.as_slice()))
                        .collect();
                    b.append_pax_extensions(records.iter().map(|(k, v)| (k.as_str(), *v)))
                        .unwrap();
                }
                let mut h = header(name, ::tar::EntryType::Regular, data.len() as u64);
                b.append_data(&mut h, name, data.as_slice()).unwrap();
                first_file.get_or_insert_with(|| name.clone());
            }
            Spec::Symlink(name, target) => {
                let mut h = header(name, ::tar::EntryType::Symlink, 0);
                b.append_link(&mut h, name, target).unwrap();
            }
            Spec::Hardlink(name) => {
                if let Some(target) = &first_file {
                    let mut h = header(name, ::tar::EntryType::Link, 0);
                    b.append_link(&mut h, name, target).unwrap();
                }
            }
        }
    }
    b.into_inner().unwrap()
}

fn sample_specs() -> Vec<Spec> {
    let big: Vec<u8> = (0..20_000u32).map(|i| (i * 7 % 251) as u8).collect();
    vec![
        Spec::Dir("etc/".into()),
        Spec::File(
            "etc/hosts".into(),
            b"127.0.0.1 localhost\n".to_vec(),
            vec![],
        ),
        Spec::File("etc/empty".into(), Vec::new(), vec![]),
        Spec::File("usr/big.bin".into(), big.clone(), vec![]),
        Spec::File(
            "usr/xattr".into(),
            b"x".to_vec(),
            vec![("user.note".into(), b"v\x00\xff".to_vec())],
        ),
        Spec::Symlink("etc/link".into(), "hosts".into()),
        Spec::Hardlink("etc/hard".into()),
        Spec::File(
            format!("{}/long-name-file", "d".repeat(120)),
            b"long".to_vec(),
            vec![],
        ),
        Spec::File("etc/.wh.removed".into(), Vec::new(), vec![]),
        Spec::File("usr/big-copy.bin".into(), big, vec![]),
    ]
}

fn options(format: ChunkedFormat) -> WriteOptions {
    WriteOptions {
        chunk_size: 4096,
        ..WriteOptions::new(format)
    }
}

struct Written {
    blob: Vec<u8>,
    layer: ChunkedLayer,
}

fn write(tar: &[u8], format: ChunkedFormat) -> Written {
    let mut blob = Vec::new();
    let layer = write_chunked(tar, &mut blob, &options(format)).unwrap();
    Written { blob, layer }
}

fn decode(format: ChunkedFormat, blob: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match format {
        ChunkedFormat::ZstdChunked => {
            zstd::stream::read::Decoder::new(blob)
                .unwrap()
                .read_to_end(&mut out)
                .unwrap();
        }
        ChunkedFormat::Estargz => {
            flate2::read::MultiGzDecoder::new(blob)
                .read_to_end(&mut out)
                .unwrap();
        }
    }
    out
}

fn slice(blob: &[u8], c: &hoist_registry::Chunk) -> Bytes {
    Bytes::copy_from_slice(&blob[c.offset as usize..(c.offset + c.length) as usize])
}

/// Reads the metadata the way a pull does: from the annotations.
fn read_metadata(w: &Written) -> Result<LayerMetadata> {
    let format = detect(&w.layer.media_type, &w.layer.annotations).unwrap();
    let ranges = match metadata_ranges(format, &w.layer.annotations, w.blob.len() as u64)? {
        MetadataLocator::Ranges(r) => r,
        MetadataLocator::Footer { format, tail } => {
            parse_footer(format, &slice(&w.blob, &tail), w.blob.len() as u64)?
        }
    };
    let parts: Vec<Bytes> = ranges.chunks().iter().map(|c| slice(&w.blob, c)).collect();
    parse_metadata(&ranges, &parts, &w.layer.annotations)
}

/// Local content: a map from digest to bytes, optionally lying.
struct Local(HashMap<Digest, Vec<u8>>);

impl LocalContent for Local {
    fn open(&self, digest: &Digest, _size: u64) -> io::Result<Option<Box<dyn Read + Send>>> {
        Ok(self
            .0
            .get(digest)
            .map(|v| Box::new(io::Cursor::new(v.clone())) as Box<dyn Read + Send>))
    }
}

fn contents(specs: &[Spec]) -> HashMap<Digest, Vec<u8>> {
    specs
        .iter()
        .filter_map(|s| match s {
            Spec::File(_, data, _) if !data.is_empty() => Some((sha256_of(data), data.clone())),
            _ => None,
        })
        .collect()
}

/// Fetches the plan's chunks from the blob, each cut in pieces of `piece` bytes.
fn fetch_all(blob: &[u8], plan: &RebuildPlan, piece: usize) -> Vec<io::Result<(usize, Bytes)>> {
    let mut out = Vec::new();
    for (i, c) in plan.fetch.iter().enumerate() {
        let bytes = slice(blob, c);
        let mut at = 0;
        while at < bytes.len() {
            let end = (at + piece).min(bytes.len());
            out.push(Ok((i, bytes.slice(at..end))));
            at = end;
        }
    }
    out
}

fn rebuild_with(
    w: &Written,
    meta: &LayerMetadata,
    local: &Local,
    piece: usize,
) -> (Result<Digest>, Vec<u8>, RebuildPlan) {
    let plan = plan_rebuild(meta, &|d, _| local.0.contains_key(d));
    let mut out = Vec::new();
    let result = rebuild(
        meta,
        &plan,
        fetch_all(&w.blob, &plan, piece).into_iter(),
        local,
        &mut out,
    );
    (result, out, plan)
}

const FORMATS: [ChunkedFormat; 2] = [ChunkedFormat::ZstdChunked, ChunkedFormat::Estargz];

#[test]
fn zstd_chunked_decodes_as_plain_zstd_to_the_original_tar() {
    let tar = build_tar(&sample_specs());
    let w = write(&tar, ChunkedFormat::ZstdChunked);
    assert_eq!(decode(ChunkedFormat::ZstdChunked, &w.blob), tar);
    assert_eq!(w.layer.diff_id, sha256_of(&tar));
    assert_eq!(w.layer.digest, sha256_of(&w.blob));
    assert_eq!(w.layer.size, w.blob.len() as u64);
}

#[test]
fn estargz_decodes_as_plain_gzip_to_the_same_entries_plus_the_toc() {
    let specs = sample_specs();
    let tar = build_tar(&specs);
    let w = write(&tar, ChunkedFormat::Estargz);
    let decoded = decode(ChunkedFormat::Estargz, &w.blob);
    assert_eq!(w.layer.diff_id, sha256_of(&decoded));
    assert_eq!(
        w.layer.annotations[ESTARGZ_UNCOMPRESSED_SIZE],
        decoded.len().to_string()
    );
    let listing = |bytes: &[u8]| -> Vec<(String, Vec<u8>, Option<String>)> {
        let mut a = ::tar::Archive::new(bytes);
        a.entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let name = e.path().unwrap().to_string_lossy().into_owned();
                let link = e
                    .link_name()
                    .unwrap()
                    .map(|l| l.to_string_lossy().into_owned());
                let mut data = Vec::new();
                e.read_to_end(&mut data).unwrap();
                (name, data, link)
            })
            .collect()
    };
    let mut expected = listing(&tar);
    let got = listing(&decoded);
    assert_eq!(got.last().unwrap().0, "stargz.index.json");
    expected.push(got.last().unwrap().clone());
    assert_eq!(got, expected);
}

#[test]
fn metadata_lists_every_entry_with_its_content_digest() {
    let specs = sample_specs();
    let tar = build_tar(&specs);
    for format in FORMATS {
        let w = write(&tar, format);
        let meta = read_metadata(&w).unwrap();
        let names: Vec<&str> = meta.entries.iter().map(|e| e.name.as_str()).collect();
        assert!(names.contains(&"etc/hosts"), "{format}: {names:?}");
        assert!(names.iter().any(|n| n.ends_with("/long-name-file")));
        let big = meta
            .entries
            .iter()
            .find(|e| e.name == "usr/big.bin")
            .unwrap();
        assert_eq!(big.size, 20_000);
        assert_eq!(big.chunks.len(), 5, "{format}: split in 4 KiB chunks");
        let xattr = meta.entries.iter().find(|e| e.name == "usr/xattr").unwrap();
        assert_eq!(xattr.xattrs["user.note"], b"v\x00\xff");
        let hard = meta.entries.iter().find(|e| e.name == "etc/hard").unwrap();
        assert_eq!(
            (hard.kind, hard.link_name.as_str()),
            (EntryKind::Hardlink, "etc/hosts")
        );
        let link = meta.entries.iter().find(|e| e.name == "etc/link").unwrap();
        assert_eq!(
            (link.kind, link.link_name.as_str()),
            (EntryKind::Symlink, "hosts")
        );
        assert_eq!(meta.has_tar_split, format == ChunkedFormat::ZstdChunked);
    }
}

#[test]
fn the_footer_finds_the_same_metadata_as_the_annotations() {
    let tar = build_tar(&sample_specs());
    for format in FORMATS {
        let w = write(&tar, format);
        let size = w.blob.len() as u64;
        let MetadataLocator::Footer { tail, .. } =
            metadata_ranges(format, &BTreeMap::new(), size).unwrap()
        else {
            panic!("no annotations must mean the footer")
        };
        let from_footer = parse_footer(format, &slice(&w.blob, &tail), size).unwrap();
        if let MetadataLocator::Ranges(from_annotations) =
            metadata_ranges(format, &w.layer.annotations, size).unwrap()
        {
            assert_eq!(from_footer, from_annotations);
        }
        let parts: Vec<Bytes> = from_footer
            .chunks()
            .iter()
            .map(|c| slice(&w.blob, c))
            .collect();
        parse_metadata(&from_footer, &parts, &w.layer.annotations).unwrap();
    }
}

#[test]
fn rebuild_with_nothing_local_fetches_everything_and_matches_the_diff_id() {
    let tar = build_tar(&sample_specs());
    for format in FORMATS {
        let w = write(&tar, format);
        let meta = read_metadata(&w).unwrap();
        let (result, out, plan) = rebuild_with(&w, &meta, &Local(HashMap::new()), 1000);
        assert_eq!(result.unwrap(), w.layer.diff_id, "{format}");
        assert_eq!(out, decode(format, &w.blob), "{format}");
        assert_eq!(plan.local_files, 0);
        assert_eq!(out.len() as u64, meta.uncompressed_size());
    }
}

#[test]
fn rebuild_with_everything_local_fetches_nothing_with_a_tar_split_or_estargz() {
    let specs = sample_specs();
    let tar = build_tar(&specs);
    for format in FORMATS {
        let w = write(&tar, format);
        let meta = read_metadata(&w).unwrap();
        let (result, out, plan) = rebuild_with(&w, &meta, &Local(contents(&specs)), 7);
        assert_eq!(result.unwrap(), w.layer.diff_id);
        assert_eq!(out, decode(format, &w.blob));
        assert_eq!(plan.fetch_bytes, 0, "{format}: {:?}", plan.fetch);
        assert_eq!(plan.fetched_files, 0);
    }
}

#[test]
fn wrong_local_content_is_an_error_naming_the_file() {
    let specs = sample_specs();
    let tar = build_tar(&specs);
    for format in FORMATS {
        let w = write(&tar, format);
        let meta = read_metadata(&w).unwrap();
        let mut lying = contents(&specs);
        let hosts = sha256_of(b"127.0.0.1 localhost\n");
        lying.insert(hosts, b"127.0.0.1 evil.host\n".to_vec());
        let (result, _, _) = rebuild_with(&w, &meta, &Local(lying), 4096);
        let err = result.unwrap_err();
        assert!(err.is_corrupt(), "{err}");
        assert!(err.to_string().contains("etc/hosts"), "{err}");
    }
}

#[test]
fn a_missing_local_file_is_an_error() {
    let specs = sample_specs();
    let tar = build_tar(&specs);
    let w = write(&tar, ChunkedFormat::ZstdChunked);
    let meta = read_metadata(&w).unwrap();
    let local = Local(contents(&specs));
    let plan = plan_rebuild(&meta, &|d, _| local.0.contains_key(d));
    let err = rebuild(
        &meta,
        &plan,
        fetch_all(&w.blob, &plan, 100).into_iter(),
        &Local(HashMap::new()),
        Vec::new(),
    )
    .unwrap_err();
    assert!(matches!(err, ChunkedError::Local { .. }), "{err}");
}

#[test]
fn fetched_chunks_out_of_order_or_short_are_errors() {
    let tar = build_tar(&sample_specs());
    let w = write(&tar, ChunkedFormat::ZstdChunked);
    let meta = read_metadata(&w).unwrap();
    let plan = plan_rebuild(&meta, &|_, _| false);
    assert!(plan.fetch.len() >= 2, "{:?}", plan.fetch);
    let mut items = fetch_all(&w.blob, &plan, usize::MAX);
    items.swap(0, 1);
    let err = rebuild(
        &meta,
        &plan,
        items.into_iter(),
        &Local(HashMap::new()),
        Vec::new(),
    )
    .unwrap_err();
    assert!(matches!(err, ChunkedError::FetchMismatch { .. }), "{err}");
    let mut items = fetch_all(&w.blob, &plan, usize::MAX);
    items.pop();
    let err = rebuild(
        &meta,
        &plan,
        items.into_iter(),
        &Local(HashMap::new()),
        Vec::new(),
    )
    .unwrap_err();
    assert!(err.is_corrupt(), "{err}");
    let items = vec![Err(io::Error::other("connection reset"))];
    let err = rebuild(
        &meta,
        &plan,
        items.into_iter(),
        &Local(HashMap::new()),
        Vec::new(),
    )
    .unwrap_err();
    assert!(matches!(err, ChunkedError::Fetch(_)), "{err}");
}

#[test]
fn metadata_corruption_is_a_clean_error() {
    let tar = build_tar(&sample_specs());
    for format in FORMATS {
        let w = write(&tar, format);
        let size = w.blob.len() as u64;
        let MetadataLocator::Ranges(ranges) = metadata_ranges(format, &w.layer.annotations, size)
            .unwrap_or_else(|_| panic!("{format}"))
        else {
            // eStargz: through the footer.
            let MetadataLocator::Footer { tail, .. } =
                metadata_ranges(format, &w.layer.annotations, size).unwrap()
            else {
                unreachable!()
            };
            let ranges = parse_footer(format, &slice(&w.blob, &tail), size).unwrap();
            check_corrupt_parts(&w, &ranges);
            continue;
        };
        check_corrupt_parts(&w, &ranges);
    }
}

fn check_corrupt_parts(w: &Written, ranges: &MetadataRanges) {
    let good: Vec<Bytes> = ranges.chunks().iter().map(|c| slice(&w.blob, c)).collect();
    for part in 0..good.len() {
        let len = good[part].len();
        let cases: Vec<(&str, Bytes)> = vec![
            ("truncated", good[part].slice(..len / 2)),
            ("empty", Bytes::new()),
            ("flipped", {
                let mut v = good[part].to_vec();
                v[len / 2] ^= 0x40;
                Bytes::from(v)
            }),
            ("garbage", Bytes::from(vec![0x5a; len])),
        ];
        for (what, bad) in cases {
            let mut parts = good.clone();
            parts[part] = bad;
            let err = parse_metadata(ranges, &parts, &w.layer.annotations).unwrap_err();
            assert!(err.is_corrupt(), "part {part} {what}: {err}");
        }
    }
    // Without the digest annotation the TOC cannot be trusted.
    let err = parse_metadata(ranges, &good, &BTreeMap::new()).unwrap_err();
    assert!(err.is_unsupported(), "{err}");
}

#[test]
fn bad_footers_are_clean_errors() {
    let tar = build_tar(&sample_specs());
    for format in FORMATS {
        let w = write(&tar, format);
        let size = w.blob.len() as u64;
        let tail = &w.blob[w.blob.len() - 72..];
        let mut cases: Vec<(String, Vec<u8>)> = vec![
            ("empty".into(), Vec::new()),
            ("short".into(), tail[60..].to_vec()),
            ("zeros".into(), vec![0; 72]),
        ];
        for at in [0usize, 10, 20, 30, 40, 50, 60, 64, 71] {
            let mut v = tail.to_vec();
            v[at] ^= 0xff;
            cases.push((format!("byte {at} flipped"), v));
        }
        for (what, bytes) in cases {
            match parse_footer(format, &bytes, size) {
                Err(e) => assert!(e.is_corrupt() || e.is_unsupported(), "{what}: {e}"),
                // A flip in a byte the footer does not use, or in an offset that still fits,
                // must not get past the TOC digest.
                Ok(ranges) => {
                    let parts: Vec<Bytes> =
                        ranges.chunks().iter().map(|c| slice(&w.blob, c)).collect();
                    if let Ok(meta) = parse_metadata(&ranges, &parts, &w.layer.annotations) {
                        let (result, out, _) = rebuild_with(&w, &meta, &Local(HashMap::new()), 512);
                        if let Ok(diff_id) = result {
                            assert_eq!(diff_id, w.layer.diff_id, "{format} {what}");
                            assert_eq!(out, decode(format, &w.blob));
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn bad_annotations_are_clean_errors() {
    let size = 1000;
    for value in [
        "1",
        "a:b:c:1",
        "10:5000:10:1",
        "0:10:10:1",
        "10:0:0:1",
        "18446744073709551615:10:1:1",
    ] {
        let mut a = BTreeMap::new();
        a.insert(ZSTD_CHUNKED_MANIFEST_POSITION.to_owned(), value.to_owned());
        let err = metadata_ranges(ChunkedFormat::ZstdChunked, &a, size).unwrap_err();
        assert!(err.is_corrupt(), "{value}: {err}");
    }
    let mut a = BTreeMap::new();
    a.insert(
        ZSTD_CHUNKED_MANIFEST_POSITION.to_owned(),
        "10:10:10:2".to_owned(),
    );
    let err = metadata_ranges(ChunkedFormat::ZstdChunked, &a, size).unwrap_err();
    assert!(err.is_unsupported(), "{err}");
}

#[test]
fn a_toc_bomb_is_refused_by_its_size_cap() {
    // A small zstd frame that decompresses to far more than the cap.
    let json_bomb =
        zstd::bulk::compress(&vec![b' '; (MAX_METADATA_SIZE + 10) as usize], 19).unwrap();
    assert!(json_bomb.len() < 1 << 20);
    let blob_size = json_bomb.len() as u64 + 100;
    let ranges = MetadataRanges {
        format: ChunkedFormat::ZstdChunked,
        toc: hoist_registry::Chunk::new(8, json_bomb.len() as u64),
        toc_uncompressed: None,
        tar_split: None,
        tar_split_uncompressed: None,
        data_end: 0,
        blob_size,
    };
    let mut a = BTreeMap::new();
    a.insert(
        ZSTD_CHUNKED_MANIFEST_CHECKSUM.to_owned(),
        sha256_of(&json_bomb).to_string(),
    );
    let err = parse_metadata(&ranges, &[Bytes::from(json_bomb)], &a).unwrap_err();
    assert!(matches!(err, ChunkedError::TooLarge { .. }), "{err}");
    // An announced size over the cap is refused before decompressing.
    let ranges = MetadataRanges {
        toc_uncompressed: Some(MAX_METADATA_SIZE + 1),
        toc: hoist_registry::Chunk::new(8, 4),
        ..ranges
    };
    let tiny = Bytes::from_static(b"abcd");
    a.insert(
        ZSTD_CHUNKED_MANIFEST_CHECKSUM.to_owned(),
        sha256_of(&tiny).to_string(),
    );
    let err = parse_metadata(&ranges, &[tiny], &a).unwrap_err();
    assert!(matches!(err, ChunkedError::TooLarge { .. }), "{err}");
}

#[test]
fn detect_reads_media_type_and_annotations() {
    let mut a = BTreeMap::new();
    assert_eq!(detect(MEDIA_TYPE_TAR_ZSTD, &a), None);
    a.insert(
        LEGACY_ZSTD_CHUNKED_MANIFEST_CHECKSUM.to_owned(),
        "sha256:00".to_owned(),
    );
    assert_eq!(
        detect(MEDIA_TYPE_TAR_ZSTD, &a),
        Some(ChunkedFormat::ZstdChunked)
    );
    assert_eq!(detect(MEDIA_TYPE_TAR_GZIP, &a), None);
    a.insert(ESTARGZ_TOC_DIGEST.to_owned(), "sha256:00".to_owned());
    assert_eq!(
        detect(MEDIA_TYPE_DOCKER_TAR_GZIP, &a),
        Some(ChunkedFormat::Estargz)
    );
    assert_eq!(
        "zstd:chunked".parse::<ChunkedFormat>().unwrap(),
        ChunkedFormat::ZstdChunked
    );
    assert_eq!(
        "estargz".parse::<ChunkedFormat>().unwrap().name(),
        "estargz"
    );
    assert!(
        "gzip"
            .parse::<ChunkedFormat>()
            .unwrap_err()
            .is_unsupported()
    );
}

#[test]
fn zstd_chunked_without_tar_split_rebuilds_from_the_compressed_headers() {
    // The older layout: drop the tar-split from the ranges, as if the layer had none.
    let specs = sample_specs();
    let tar = build_tar(&specs);
    let w = write(&tar, ChunkedFormat::ZstdChunked);
    let MetadataLocator::Ranges(mut ranges) = metadata_ranges(
        ChunkedFormat::ZstdChunked,
        &w.layer.annotations,
        w.blob.len() as u64,
    )
    .unwrap() else {
        unreachable!()
    };
    ranges.tar_split = None;
    let parts = vec![slice(&w.blob, &ranges.toc)];
    let meta = parse_metadata(&ranges, &parts, &w.layer.annotations).unwrap();
    assert!(!meta.has_tar_split);
    let (result, out, plan) = rebuild_with(&w, &meta, &Local(contents(&specs)), 333);
    assert_eq!(result.unwrap(), w.layer.diff_id);
    assert_eq!(out, tar);
    assert!(plan.fetch_bytes > 0 && plan.fetched_files == 0);
}

fn arb_name() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z]{1,8}",
        "[a-z]{1,8}/[a-z][a-z.]{0,11}",
        "[a-z]{90,130}",
        "[a-z]{60}/[a-z]{60}/[a-z]{10}",
        Just(".wh..wh..opq".to_owned()),
    ]
}

fn arb_spec() -> impl Strategy<Value = Spec> {
    prop_oneof![
        arb_name().prop_map(|n| Spec::Dir(format!("{n}/"))),
        (
            arb_name(),
            prop_oneof![
                Just(Vec::new()),
                proptest::collection::vec(any::<u8>(), 1..600),
                (1usize..14_000, any::<u8>()).prop_map(|(n, b)| (0..n)
                    .map(|i| (i as u8).wrapping_mul(b) ^ (i >> 7) as u8)
                    .collect()),
            ],
            proptest::collection::vec(
                (
                    "user\\.[a-z]{1,5}",
                    proptest::collection::vec(any::<u8>(), 0..20)
                ),
                0..2
            ),
        )
            .prop_map(|(n, d, x)| Spec::File(n, d, x)),
        (arb_name(), arb_name()).prop_map(|(n, t)| Spec::Symlink(n, t)),
        arb_name().prop_map(Spec::Hardlink),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn random_trees_round_trip_in_both_formats(
        specs in proptest::collection::vec(arb_spec(), 0..14),
        local_mask in any::<u64>(),
        piece in 1usize..5000,
        flip in any::<prop::sample::Index>(),
    ) {
        let tar = build_tar(&specs);
        let all = contents(&specs);
        let keys: Vec<&Digest> = all.keys().collect();
        let subset: HashMap<Digest, Vec<u8>> = keys
            .iter()
            .enumerate()
            .filter(|(i, _)| local_mask >> (i % 64) & 1 == 1)
            .map(|(_, d)| ((*d).clone(), all[*d].clone()))
            .collect();
        for format in FORMATS {
            let w = write(&tar, format);
            let decoded = decode(format, &w.blob);
            if format == ChunkedFormat::ZstdChunked {
                prop_assert_eq!(&decoded, &tar);
            }
            prop_assert_eq!(sha256_of(&decoded), w.layer.diff_id.clone());
            let meta = read_metadata(&w).unwrap();
            let files = ::tar::Archive::new(&tar[..]).entries().unwrap().count();
            prop_assert_eq!(meta.entries.len(), files);

            let (result, out, none_plan) = rebuild_with(&w, &meta, &Local(HashMap::new()), piece);
            prop_assert_eq!(result.unwrap(), w.layer.diff_id.clone());
            prop_assert_eq!(&out, &decoded);

            let (result, out, some_plan) = rebuild_with(&w, &meta, &Local(subset.clone()), piece);
            prop_assert_eq!(result.unwrap(), w.layer.diff_id.clone());
            prop_assert_eq!(&out, &decoded);
            prop_assert!(some_plan.fetch_bytes <= none_plan.fetch_bytes);
            if some_plan.local_files > 0 {
                prop_assert!(some_plan.fetch_bytes < none_plan.fetch_bytes);
            }

            // A flipped byte anywhere in the fetched data: an error, or the exact output
            // (eStargz ignores the header bytes after a chunk's content).
            if none_plan.fetch_bytes > 0 {
                let at = flip.index(none_plan.fetch_bytes as usize) as u64;
                let mut items = Vec::new();
                let mut seen = 0u64;
                for (i, c) in none_plan.fetch.iter().enumerate() {
                    let mut bytes = slice(&w.blob, c).to_vec();
                    if at >= seen && at < seen + c.length {
                        bytes[(at - seen) as usize] ^= 0x01;
                    }
                    seen += c.length;
                    items.push(Ok((i, Bytes::from(bytes))));
                }
                let mut out = Vec::new();
                match rebuild(&meta, &none_plan, items.into_iter(), &Local(HashMap::new()), &mut out) {
                    Err(e) => prop_assert!(e.is_corrupt() || matches!(e, ChunkedError::Io(_)), "{}", e),
                    Ok(diff_id) => {
                        prop_assert_eq!(diff_id, w.layer.diff_id.clone());
                        prop_assert_eq!(&out, &decoded);
                    }
                }
            }
        }
    }
}

#[test]
fn a_one_file_change_fetches_little_more_than_that_file() {
    // 200 incompressible files of 2 KiB; v2 changes one of them.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut random = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect()
    };
    let v1: Vec<Spec> = (0..200)
        .map(|i| Spec::File(format!("lib/file-{i:03}"), random(2048), vec![]))
        .collect();
    let mut v2 = v1.clone();
    v2[100] = Spec::File("lib/file-100".into(), random(2048), vec![]);
    let tar = build_tar(&v2);
    let local = Local(contents(&v1));
    for format in FORMATS {
        let w = write(&tar, format);
        let meta = read_metadata(&w).unwrap();
        let (result, out, plan) = rebuild_with(&w, &meta, &local, 4096);
        assert_eq!(result.unwrap(), w.layer.diff_id);
        assert_eq!(out, decode(format, &w.blob));
        assert_eq!((plan.local_files, plan.fetched_files), (199, 1));
        let changed = meta
            .entries
            .iter()
            .find(|e| e.name == "lib/file-100")
            .unwrap();
        let changed_bytes = changed.end_offset - changed.offset;
        let metadata_bytes: u64 =
            match metadata_ranges(format, &w.layer.annotations, w.blob.len() as u64).unwrap() {
                MetadataLocator::Ranges(r) => r.chunks().iter().map(|c| c.length).sum(),
                MetadataLocator::Footer { tail, .. } => {
                    let r =
                        parse_footer(format, &slice(&w.blob, &tail), w.blob.len() as u64).unwrap();
                    tail.length + r.chunks().iter().map(|c| c.length).sum::<u64>()
                }
            };
        eprintln!(
            "{format}: blob {} bytes, metadata {metadata_bytes} bytes, fetched {} bytes, changed file {changed_bytes} bytes compressed",
            w.blob.len(),
            plan.fetch_bytes
        );
        assert!(plan.fetch_bytes * 10 <= changed_bytes * 12, "{format}");
    }
}
