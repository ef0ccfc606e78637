//! Planning a rebuild: which compressed ranges to fetch, given what content is local.

use hoist_registry::Chunk;
use hoist_store::Digest;

use super::metadata::{LayerMetadata, Piece};

/// What a rebuild fetches and what it takes from local content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RebuildPlan {
    /// The compressed ranges to fetch, sorted, adjacent ones merged. [`rebuild`](super::rebuild)
    /// takes their bytes by index into this list, in this order.
    pub fetch: Vec<Chunk>,
    /// The sum of their lengths.
    pub fetch_bytes: u64,
    /// How many files come from local content.
    pub local_files: usize,
    /// How many uncompressed bytes of file content come from local content.
    pub local_bytes: u64,
    /// How many files are fetched.
    pub fetched_files: usize,
    /// How many uncompressed bytes of file content are fetched.
    pub fetched_file_bytes: u64,
    /// For each entry of [`LayerMetadata::entries`]: whether its content is taken locally.
    pub(crate) local: Vec<bool>,
}

/// Plans a rebuild: a file is taken locally when `have(digest, size)` says its whole content is
/// available; everything else the tar stream needs is fetched.
pub fn plan_rebuild(meta: &LayerMetadata, have: &dyn Fn(&Digest, u64) -> bool) -> RebuildPlan {
    let mut local = vec![false; meta.entries.len()];
    let mut ranges: Vec<Chunk> = Vec::new();
    let (mut local_files, mut local_bytes, mut fetched_files, mut fetched_file_bytes) =
        (0usize, 0u64, 0usize, 0u64);
    for piece in &meta.pieces {
        match piece {
            Piece::Inline(_) => {}
            Piece::Raw(chunk) => ranges.push(*chunk),
            Piece::File(i) => {
                let Some(entry) = meta.entries.get(*i) else {
                    continue;
                };
                let is_local = entry.digest.as_ref().is_some_and(|d| have(d, entry.size));
                if is_local {
                    local[*i] = true;
                    local_files += 1;
                    local_bytes += entry.size;
                } else {
                    fetched_files += 1;
                    fetched_file_bytes += entry.size;
                    ranges.extend(
                        entry
                            .chunks
                            .iter()
                            .map(|c| Chunk::new(c.offset, c.end_offset - c.offset)),
                    );
                }
            }
        }
    }
    ranges.sort_by_key(|c| c.offset);
    let mut fetch: Vec<Chunk> = Vec::with_capacity(ranges.len());
    for range in ranges {
        match fetch.last_mut() {
            Some(last) if last.offset + last.length == range.offset => {
                last.length += range.length;
            }
            _ => fetch.push(range),
        }
    }
    RebuildPlan {
        fetch_bytes: fetch.iter().map(|c| c.length).sum(),
        fetch,
        local_files,
        local_bytes,
        fetched_files,
        fetched_file_bytes,
        local,
    }
}
