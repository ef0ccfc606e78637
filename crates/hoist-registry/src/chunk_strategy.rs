//! How discontiguous chunk reads adapt to what a registry does with ranges (no I/O).
//!
//! A registry may serve several ranges in one `multipart/byteranges` answer, serve only one range
//! per request, ignore ranges altogether (`200` with the whole blob), or refuse them (`400`,
//! `416`, `501`). [`RangeMode`] says which way of reading a host gets, from the most economical
//! down: one request carrying many ranges, several single-range requests in parallel, or one full
//! `GET` sliced locally. [`react`] decides, from one answer, whether to read it, slice it as the
//! whole blob, or drop it and ask again differently, and what to remember about the host: modes
//! only ever move down, so a host that failed one way is not asked that way again.
//! [`coarser_gap`] gives the merge threshold for fewer, larger ranges after a refused range.

use crate::range::{ByteRange, Chunk};

/// How chunk reads are sent to a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum RangeMode {
    /// One request carries many ranges (`bytes=0-9,100-199`); the answer is
    /// `multipart/byteranges`.
    #[default]
    MultiRange,
    /// One range per request, several requests in parallel.
    SingleRanges,
    /// One full `GET` of the blob, sliced locally.
    FullBody,
}

/// Tuning of an adaptive chunk read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkReadOptions {
    /// Chunks at most this many bytes apart share a range (the gap is downloaded and dropped).
    pub max_gap: u64,
    /// The most ranges in one multi-range request.
    pub max_ranges_per_request: usize,
    /// Single-range requests in flight at once (answers are still consumed in order).
    pub parallel_requests: usize,
}

impl Default for ChunkReadOptions {
    fn default() -> Self {
        let plan = crate::range::PlanOptions::default();
        ChunkReadOptions {
            max_gap: plan.max_gap,
            max_ranges_per_request: plan.max_ranges_per_request,
            parallel_requests: 4,
        }
    }
}

/// What a registry answered to a range request, as far as the strategy cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// `206` with `multipart/byteranges`.
    Multipart,
    /// `206` with one `Content-Range`.
    SinglePart(ByteRange),
    /// `200`: the whole blob.
    Whole,
    /// `400`, `416` or `501`: the ranges were refused.
    Refused,
}

/// What to do with an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reaction {
    /// Read the answer's parts into the request's chunks (they are checked as they come).
    Read,
    /// The answer is the whole blob: slice every chunk not yet read from it, and stop.
    SliceWhole,
    /// Drop the answer and read the chunks not yet read with single-range requests.
    RetrySingleRanges,
    /// Drop the answer and read the chunks not yet read with fewer, larger ranges.
    RetryFewerLargerRanges,
    /// Drop the answer and read the blob whole.
    RetryFullBody,
}

/// The reaction to `answer`, to a request of `ranges_asked` ranges spanning `span` (first byte of
/// the first range to last byte of the last), sent while reading `ranges_left` ranges in all
/// (this request's included); and the mode to remember for the host, if it changes.
pub fn react(
    ranges_asked: usize,
    span: ByteRange,
    ranges_left: usize,
    answer: Answer,
) -> (Reaction, Option<RangeMode>) {
    let many = ranges_asked > 1;
    match answer {
        Answer::Multipart => (Reaction::Read, None),
        // One range asked: the demultiplexer checks it is the one.
        Answer::SinglePart(_) if !many => (Reaction::Read, None),
        // Several ranges coalesced into one covering them all is a valid answer.
        Answer::SinglePart(r) if r.first() <= span.first() && r.last() >= span.last() => {
            (Reaction::Read, None)
        }
        // Only part of what was asked: this host serves one range per request.
        Answer::SinglePart(_) => (Reaction::RetrySingleRanges, Some(RangeMode::SingleRanges)),
        // Several ranges ignored: single ones may still work. The body is the blob: use it.
        Answer::Whole if many => (Reaction::SliceWhole, Some(RangeMode::SingleRanges)),
        // A single range ignored: this host does not do ranges.
        Answer::Whole => (Reaction::SliceWhole, Some(RangeMode::FullBody)),
        Answer::Refused if many => (Reaction::RetrySingleRanges, Some(RangeMode::SingleRanges)),
        Answer::Refused if ranges_left > 1 => (Reaction::RetryFewerLargerRanges, None),
        Answer::Refused => (Reaction::RetryFullBody, Some(RangeMode::FullBody)),
    }
}

/// The merge threshold that turns `chunks` into at most `target` ranges (at least one): the
/// smallest gap such that merging every gap up to it leaves no more than `target` ranges, and
/// never less than `max_gap`.
pub fn coarser_gap(chunks: &[Chunk], max_gap: u64, target: usize) -> u64 {
    let mut gaps: Vec<u64> = chunks
        .windows(2)
        .map(|w| w[1].offset.saturating_sub(w[0].offset + w[0].length))
        .filter(|g| *g > max_gap)
        .collect();
    let target = target.max(1);
    // Ranges = 1 + gaps kept open; keep at most target - 1 open (the largest ones).
    if gaps.len() < target {
        return max_gap;
    }
    gaps.sort_unstable();
    let merged = gaps.len() + 1 - target;
    gaps[merged - 1].max(max_gap)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::range::{PlanOptions, plan_ranges};

    fn r(first: u64, last: u64) -> ByteRange {
        ByteRange::new(first, last).unwrap()
    }

    #[test]
    fn multipart_answers_and_exact_single_answers_are_read_without_learning() {
        assert_eq!(
            react(3, r(0, 99), 3, Answer::Multipart),
            (Reaction::Read, None)
        );
        assert_eq!(
            react(1, r(10, 19), 5, Answer::SinglePart(r(10, 19))),
            (Reaction::Read, None)
        );
        // Coalesced: one range covering all that was asked.
        assert_eq!(
            react(2, r(10, 99), 2, Answer::SinglePart(r(0, 120))),
            (Reaction::Read, None)
        );
    }

    #[test]
    fn a_partial_single_answer_to_many_ranges_downgrades_to_single_ranges() {
        assert_eq!(
            react(2, r(10, 99), 2, Answer::SinglePart(r(10, 19))),
            (Reaction::RetrySingleRanges, Some(RangeMode::SingleRanges))
        );
    }

    #[test]
    fn ignored_ranges_slice_the_whole_body_and_remember_how_far_down_to_go() {
        assert_eq!(
            react(4, r(0, 99), 4, Answer::Whole),
            (Reaction::SliceWhole, Some(RangeMode::SingleRanges))
        );
        assert_eq!(
            react(1, r(0, 99), 4, Answer::Whole),
            (Reaction::SliceWhole, Some(RangeMode::FullBody))
        );
    }

    #[test]
    fn refusals_go_to_single_ranges_then_fewer_larger_ranges_then_the_full_body() {
        assert_eq!(
            react(4, r(0, 99), 4, Answer::Refused),
            (Reaction::RetrySingleRanges, Some(RangeMode::SingleRanges))
        );
        assert_eq!(
            react(1, r(0, 9), 4, Answer::Refused),
            (Reaction::RetryFewerLargerRanges, None)
        );
        assert_eq!(
            react(1, r(0, 99), 1, Answer::Refused),
            (Reaction::RetryFullBody, Some(RangeMode::FullBody))
        );
    }

    #[test]
    fn modes_are_ordered_from_most_to_least_economical() {
        assert!(RangeMode::MultiRange < RangeMode::SingleRanges);
        assert!(RangeMode::SingleRanges < RangeMode::FullBody);
        assert_eq!(RangeMode::default(), RangeMode::MultiRange);
    }

    #[test]
    fn a_coarser_gap_halves_the_ranges_by_merging_the_smallest_gaps() {
        // Gaps: 100, 5000, 300, 20000 (chunks of 10 bytes).
        let chunks = [
            Chunk::new(0, 10),
            Chunk::new(110, 10),
            Chunk::new(5120, 10),
            Chunk::new(5430, 10),
            Chunk::new(25440, 10),
        ];
        let count = |gap| {
            plan_ranges(
                &chunks,
                PlanOptions {
                    max_gap: gap,
                    max_ranges_per_request: 1,
                },
            )
            .unwrap()
            .len()
        };
        assert_eq!(count(0), 5);
        let gap = coarser_gap(&chunks, 0, 2);
        assert_eq!(count(gap), 2, "gap {gap}");
        assert_eq!(count(coarser_gap(&chunks, 0, 1)), 1);
        assert_eq!(count(coarser_gap(&chunks, 0, 4)), 4);
        // Already few enough: the threshold stays.
        assert_eq!(coarser_gap(&chunks, 0, 9), 0);
        assert_eq!(coarser_gap(&chunks, 200_000, 1), 200_000);
    }
}
