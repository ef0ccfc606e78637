//! zstd:chunked and eStargz metadata on arbitrary bytes: footers, TOC JSON, tar-split lines and
//! the blob they describe. Never panics; a layout that parses plans and rebuilds without
//! panicking, and a rebuild that succeeds returns the digest of what it wrote.
//!
//! Input layout: byte 0 picks the format (bit 0), whether a tar-split is given (bit 1) and
//! whether some content counts as local (bit 2); the rest is split at the first blank line
//! into the TOC JSON and the tar-split lines, and also serves, whole, as the blob's data.
#![no_main]

use std::collections::BTreeMap;
use std::io::{self, Read, Write};

use bytes::Bytes;
use hoist_distribution::chunked::{
    ChunkedFormat, ESTARGZ_TOC_DIGEST, LocalContent, MetadataRanges,
    ZSTD_CHUNKED_MANIFEST_CHECKSUM, ZSTD_CHUNKED_TARSPLIT_CHECKSUM, parse_footer, parse_metadata,
    plan_rebuild, rebuild,
};
use hoist_registry::Chunk;
use hoist_store::Digest;
use hoist_store::digests::sha256_of;
use libfuzzer_sys::fuzz_target;

/// Local content that is always the wrong bytes.
struct Wrong;

impl LocalContent for Wrong {
    fn open(&self, _: &Digest, size: u64) -> io::Result<Option<Box<dyn Read + Send>>> {
        Ok(Some(Box::new(io::repeat(0x5a).take(size.min(1 << 16)))))
    }
}

/// A ustar header block for the eStargz TOC entry.
fn toc_header(size: usize) -> Vec<u8> {
    let mut block = vec![0u8; 512];
    block[..17].copy_from_slice(b"stargz.index.json");
    block[100..107].copy_from_slice(b"0000644");
    block[124..135].copy_from_slice(format!("{size:011o}").as_bytes());
    block[156] = b'0';
    block[257..263].copy_from_slice(b"ustar\0");
    block[263..265].copy_from_slice(b"00");
    block[148..156].fill(b' ');
    let sum: u32 = block.iter().map(|&b| u32::from(b)).sum();
    block[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    block
}

fuzz_target!(|data: &[u8]| {
    let [selector, rest @ ..] = data else {
        return;
    };
    for format in [ChunkedFormat::ZstdChunked, ChunkedFormat::Estargz] {
        if let Ok(ranges) = parse_footer(format, rest, rest.len() as u64) {
            assert!(ranges.chunks().iter().all(|c| c.offset + c.length <= rest.len() as u64));
        }
    }
    let (toc, split) = match rest.windows(2).position(|w| w == b"\n\n") {
        Some(at) => (&rest[..at], &rest[at + 2..]),
        None => (rest, &[][..]),
    };
    let mut blob = rest.to_vec();
    let data_end = blob.len() as u64;
    let mut annotations = BTreeMap::new();
    let ranges = if selector & 1 == 0 {
        let Ok(toc_c) = zstd::bulk::compress(toc, 1) else {
            return;
        };
        let toc_chunk = Chunk::new(data_end + 8, toc_c.len() as u64);
        blob.extend_from_slice(&[0; 8]);
        blob.extend_from_slice(&toc_c);
        annotations.insert(
            ZSTD_CHUNKED_MANIFEST_CHECKSUM.to_owned(),
            sha256_of(&toc_c).to_string(),
        );
        let mut tar_split = None;
        if selector & 2 != 0 {
            let Ok(split_c) = zstd::bulk::compress(split, 1) else {
                return;
            };
            tar_split = Some(Chunk::new(blob.len() as u64 + 8, split_c.len() as u64));
            blob.extend_from_slice(&[0; 8]);
            blob.extend_from_slice(&split_c);
            annotations.insert(
                ZSTD_CHUNKED_TARSPLIT_CHECKSUM.to_owned(),
                sha256_of(&split_c).to_string(),
            );
        }
        MetadataRanges {
            format: ChunkedFormat::ZstdChunked,
            toc: toc_chunk,
            toc_uncompressed: None,
            tar_split,
            tar_split_uncompressed: None,
            data_end,
            blob_size: blob.len() as u64,
        }
    } else {
        let mut member = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let mut tail = toc_header(toc.len());
        tail.extend_from_slice(toc);
        tail.resize(tail.len().div_ceil(512) * 512 + 1024, 0);
        let Ok(()) = member.write_all(&tail) else {
            return;
        };
        let Ok(member) = member.finish() else {
            return;
        };
        blob.extend_from_slice(&member);
        annotations.insert(ESTARGZ_TOC_DIGEST.to_owned(), sha256_of(toc).to_string());
        MetadataRanges {
            format: ChunkedFormat::Estargz,
            toc: Chunk::new(data_end, member.len() as u64),
            toc_uncompressed: None,
            tar_split: None,
            tar_split_uncompressed: None,
            data_end,
            blob_size: blob.len() as u64,
        }
    };
    let slice = |c: &Chunk| Bytes::copy_from_slice(&blob[c.offset as usize..(c.offset + c.length) as usize]);
    let parts: Vec<Bytes> = ranges.chunks().iter().map(slice).collect();
    let Ok(meta) = parse_metadata(&ranges, &parts, &annotations) else {
        return;
    };
    let local = selector & 4 != 0;
    let plan = plan_rebuild(&meta, &|digest, _| local && digest.digest().as_bytes()[0] % 2 == 0);
    assert!(plan.fetch.windows(2).all(|w| w[0].offset + w[0].length < w[1].offset));
    assert!(plan.fetch.iter().all(|c| c.offset + c.length <= data_end));
    let fetched: Vec<io::Result<(usize, Bytes)>> =
        plan.fetch.iter().enumerate().map(|(i, c)| Ok((i, slice(c)))).collect();
    let mut out = Vec::new();
    if let Ok(diff_id) = rebuild(&meta, &plan, fetched.into_iter(), &Wrong, &mut out) {
        assert_eq!(diff_id, sha256_of(&out));
    }
});
