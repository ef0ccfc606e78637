//! Byte ranges: `Range` headers, `Content-Range` parsing and planning of multi-range reads.
//!
//! - [`ByteRange`] is a closed range (`first..=last`); [`range_header`] renders one or many as
//!   `bytes=0-99,200-299`.
//! - [`ContentRange`] parses `bytes 0-99/1234`, `bytes 0-99/*` and `bytes */1234`, and
//!   [`ContentRange::check`] validates a single-range answer against what was asked.
//! - [`plan_ranges`] turns sorted, non-overlapping, non-empty [`Chunk`]s into requests: chunks
//!   whose gap is at most [`PlanOptions::max_gap`] share one range, and a request carries at
//!   most [`PlanOptions::max_ranges_per_request`] ranges.
//! - [`ChunkDemux`] maps the bytes of a response's parts back to the chunks, whatever parts the
//!   server chose to send (coalesced, reordered, one single part, or the whole blob), and says
//!   when a chunk is incomplete or served twice.

use std::fmt;
use std::ops::Range;

/// Why ranges could not be built, parsed, planned or mapped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RangeError {
    /// A range's first byte is after its last, or its last is `u64::MAX`.
    #[error("invalid byte range {first}-{last}")]
    InvalidRange {
        /// The first byte.
        first: u64,
        /// The last byte.
        last: u64,
    },
    /// A `Range` header needs at least one range; a plan at least one chunk.
    #[error("no byte ranges given")]
    NoRanges,
    /// A chunk has length zero.
    #[error("chunk {index} is empty")]
    EmptyChunk {
        /// Its index.
        index: usize,
    },
    /// A chunk's end does not fit in a `u64`.
    #[error("chunk {index} (offset {offset}, length {length}) ends past the largest offset")]
    ChunkOverflow {
        /// Its index.
        index: usize,
        /// Its offset.
        offset: u64,
        /// Its length.
        length: u64,
    },
    /// A chunk starts before the end of the previous one.
    #[error(
        "chunk {index} (offset {offset}) starts before the previous chunk ends (at {previous_end}); chunks must be sorted and must not overlap"
    )]
    UnsortedChunks {
        /// Its index.
        index: usize,
        /// Its offset.
        offset: u64,
        /// Where the previous chunk ends (exclusive).
        previous_end: u64,
    },
    /// `max_ranges_per_request` is zero.
    #[error("a request must be allowed at least one range")]
    ZeroRangesPerRequest,
    /// A `Content-Range` value breaks the grammar.
    #[error("malformed Content-Range {value:?}")]
    MalformedContentRange {
        /// The value.
        value: String,
    },
    /// The server says the range cannot be satisfied (`bytes */length`).
    #[error("the server cannot satisfy the range (the blob is {complete_length} bytes)")]
    Unsatisfiable {
        /// The blob's length according to the server.
        complete_length: u64,
    },
    /// The server sent other bytes than the ones asked for.
    #[error("asked for bytes {asked}, the server sent {got}")]
    Mismatch {
        /// What was asked.
        asked: ByteRange,
        /// What the server sent.
        got: ByteRange,
    },
    /// The server's complete length differs from the known one.
    #[error("the blob is {expected} bytes, the server says {got}")]
    LengthMismatch {
        /// The known length.
        expected: u64,
        /// The server's.
        got: u64,
    },
    /// A response part runs past the end of the blob.
    #[error("the server sent bytes {range} of a blob of {blob_length} bytes")]
    PartBeyondBlob {
        /// The part's range.
        range: ByteRange,
        /// The blob's known length.
        blob_length: u64,
    },
    /// A response part covers none of the requested chunks.
    #[error("the server sent bytes {range}, which hold none of the requested chunks")]
    UnexpectedPart {
        /// The part's range.
        range: ByteRange,
    },
    /// Data arrived outside a part, or past the end of the current part.
    #[error("the server sent more bytes than the part's Content-Range {range} says")]
    PartOverflow {
        /// The part's range.
        range: ByteRange,
    },
    /// A part ended before all its bytes arrived.
    #[error("part {range} ended after {received} of its {expected} bytes")]
    PartTruncated {
        /// The part's range.
        range: ByteRange,
        /// Bytes received.
        received: u64,
        /// Bytes expected.
        expected: u64,
    },
    /// A new part started before the previous one ended, or data came with no part open.
    #[error("response parts are not properly delimited")]
    PartSequence,
    /// Bytes of a chunk arrived twice or out of order.
    #[error(
        "the server sent bytes of chunk {chunk} twice or out of order (at offset {offset} of the chunk, {received} bytes already received)"
    )]
    ChunkOutOfOrder {
        /// The chunk's index.
        chunk: usize,
        /// Where the new bytes start in the chunk.
        offset: u64,
        /// Bytes of the chunk received before.
        received: u64,
    },
    /// The response ended without all bytes of a chunk.
    #[error("the response ended with {received} of the {length} bytes of chunk {chunk}")]
    MissingChunk {
        /// The chunk's index.
        chunk: usize,
        /// Bytes received.
        received: u64,
        /// Its length.
        length: u64,
    },
}

/// A closed byte range, `first..=last`, with `last < u64::MAX`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ByteRange {
    first: u64,
    last: u64,
}

impl ByteRange {
    /// The range `first..=last`.
    pub fn new(first: u64, last: u64) -> Result<Self, RangeError> {
        if first > last || last == u64::MAX {
            return Err(RangeError::InvalidRange { first, last });
        }
        Ok(Self { first, last })
    }

    /// The `length` bytes from `offset`; `length` must not be zero.
    pub fn from_offset_len(offset: u64, length: u64) -> Result<Self, RangeError> {
        let last = length
            .checked_sub(1)
            .and_then(|l| offset.checked_add(l))
            .ok_or(RangeError::InvalidRange {
                first: offset,
                last: offset.wrapping_add(length).wrapping_sub(1),
            })?;
        Self::new(offset, last)
    }

    /// The first byte.
    pub fn first(&self) -> u64 {
        self.first
    }

    /// The last byte (inclusive).
    pub fn last(&self) -> u64 {
        self.last
    }

    /// The byte after the last.
    pub fn end(&self) -> u64 {
        self.last + 1
    }

    /// The number of bytes.
    pub fn len(&self) -> u64 {
        self.last - self.first + 1
    }

    /// Always false: a range holds at least one byte.
    pub fn is_empty(&self) -> bool {
        false
    }
}

impl fmt::Display for ByteRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

/// The `Range` header value asking for `ranges`, in the order given: `bytes=0-99,200-299`.
pub fn range_header(ranges: &[ByteRange]) -> Result<String, RangeError> {
    if ranges.is_empty() {
        return Err(RangeError::NoRanges);
    }
    let specs: Vec<String> = ranges.iter().map(ByteRange::to_string).collect();
    Ok(format!("bytes={}", specs.join(",")))
}

/// A parsed `Content-Range` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentRange {
    /// `bytes first-last/length` or `bytes first-last/*`.
    Bytes {
        /// The bytes sent.
        range: ByteRange,
        /// The blob's length, when the server gave it.
        complete_length: Option<u64>,
    },
    /// `bytes */length`: the range asked for cannot be satisfied.
    Unsatisfied {
        /// The blob's length.
        complete_length: u64,
    },
}

impl ContentRange {
    /// Parses a `Content-Range` value (the unit is case-insensitive; numbers are plain digits).
    pub fn parse(value: &str) -> Result<Self, RangeError> {
        let malformed = || RangeError::MalformedContentRange {
            value: value.to_owned(),
        };
        let v = value.trim_matches([' ', '\t']);
        let (unit, rest) = v.split_once(' ').ok_or_else(malformed)?;
        if !unit.eq_ignore_ascii_case("bytes") {
            return Err(malformed());
        }
        let rest = rest.trim_start_matches(' ');
        let (spec, length) = rest.split_once('/').ok_or_else(malformed)?;
        let number = |s: &str| -> Result<u64, RangeError> {
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                return Err(malformed());
            }
            s.parse().map_err(|_| malformed())
        };
        let complete_length = match length {
            "*" => None,
            n => Some(number(n)?),
        };
        if spec == "*" {
            return complete_length
                .map(|complete_length| Self::Unsatisfied { complete_length })
                .ok_or_else(malformed);
        }
        let (first, last) = spec.split_once('-').ok_or_else(malformed)?;
        let range = ByteRange::new(number(first)?, number(last)?).map_err(|_| malformed())?;
        if complete_length.is_some_and(|len| range.last >= len) {
            return Err(malformed());
        }
        Ok(Self::Bytes {
            range,
            complete_length,
        })
    }

    /// The bytes sent, unless unsatisfied.
    pub fn range(&self) -> Option<ByteRange> {
        match self {
            Self::Bytes { range, .. } => Some(*range),
            Self::Unsatisfied { .. } => None,
        }
    }

    /// The blob's length, when the server gave it.
    pub fn complete_length(&self) -> Option<u64> {
        match self {
            Self::Bytes {
                complete_length, ..
            } => *complete_length,
            Self::Unsatisfied { complete_length } => Some(*complete_length),
        }
    }

    /// Checks a single-range answer to a request for `asked`, for a blob of `known_length`
    /// bytes if known: the server must start at `asked.first()` and end at `asked.last()`, or
    /// at the blob's last byte when `asked` runs past it. Returns the bytes sent.
    pub fn check(
        &self,
        asked: ByteRange,
        known_length: Option<u64>,
    ) -> Result<ByteRange, RangeError> {
        let (range, complete_length) = match *self {
            Self::Unsatisfied { complete_length } => {
                return Err(RangeError::Unsatisfiable { complete_length });
            }
            Self::Bytes {
                range,
                complete_length,
            } => (range, complete_length),
        };
        if let (Some(expected), Some(got)) = (known_length, complete_length)
            && expected != got
        {
            return Err(RangeError::LengthMismatch { expected, got });
        }
        let total = complete_length.or(known_length);
        let expected_last = match total {
            Some(total) if total > 0 && asked.last >= total => total - 1,
            _ => asked.last,
        };
        if range.first != asked.first || range.last != expected_last {
            return Err(RangeError::Mismatch { asked, got: range });
        }
        Ok(range)
    }
}

impl fmt::Display for ContentRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Bytes {
                range,
                complete_length: Some(len),
            } => write!(f, "bytes {range}/{len}"),
            Self::Bytes {
                range,
                complete_length: None,
            } => write!(f, "bytes {range}/*"),
            Self::Unsatisfied { complete_length } => write!(f, "bytes */{complete_length}"),
        }
    }
}

/// A piece of a blob the caller wants: `length` bytes from `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Chunk {
    /// Where it starts.
    pub offset: u64,
    /// How many bytes; not zero.
    pub length: u64,
}

impl Chunk {
    /// The chunk at `offset` of `length` bytes.
    pub fn new(offset: u64, length: u64) -> Self {
        Self { offset, length }
    }

    /// The byte after its last; callers of the planner know it does not overflow.
    fn end(&self) -> u64 {
        self.offset.saturating_add(self.length)
    }
}

/// How [`plan_ranges`] groups chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanOptions {
    /// Chunks separated by at most this many bytes are fetched as one range (the gap's bytes
    /// are downloaded and dropped). Zero merges only adjacent chunks.
    pub max_gap: u64,
    /// The most ranges in one request; more become further requests. At least one.
    pub max_ranges_per_request: usize,
}

impl Default for PlanOptions {
    /// Gaps up to 4 KiB are merged (about the cost of a part's headers and a round trip's
    /// worth of slack); 32 ranges per request keep the `Range` header well under common
    /// header limits.
    fn default() -> Self {
        Self {
            max_gap: 4096,
            max_ranges_per_request: 32,
        }
    }
}

/// One range of a request and the chunks it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedRange {
    /// The bytes to ask for.
    pub range: ByteRange,
    /// Indices of the chunks it covers, into the slice given to [`plan_ranges`].
    pub chunks: Range<usize>,
}

/// One HTTP request of a plan: up to `max_ranges_per_request` ranges, in ascending order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeRequest {
    ranges: Vec<PlannedRange>,
}

impl RangeRequest {
    /// Its ranges, ascending.
    pub fn ranges(&self) -> &[PlannedRange] {
        &self.ranges
    }

    /// The `Range` header value.
    pub fn header(&self) -> String {
        let specs: Vec<String> = self.ranges.iter().map(|r| r.range.to_string()).collect();
        format!("bytes={}", specs.join(","))
    }

    /// Indices of all chunks the request covers (contiguous, as chunks are sorted).
    pub fn chunks(&self) -> Range<usize> {
        let start = self.ranges.first().map_or(0, |r| r.chunks.start);
        let end = self.ranges.last().map_or(0, |r| r.chunks.end);
        start..end
    }

    /// Bytes the request downloads, gaps inside ranges included.
    pub fn bytes(&self) -> u64 {
        self.ranges.iter().map(|r| r.range.len()).sum()
    }
}

/// Validates `chunks` (non-empty list; each non-empty; sorted; not overlapping; ends fit in a
/// `u64`) and groups them into requests as `options` say.
pub fn plan_ranges(
    chunks: &[Chunk],
    options: PlanOptions,
) -> Result<Vec<RangeRequest>, RangeError> {
    if options.max_ranges_per_request == 0 {
        return Err(RangeError::ZeroRangesPerRequest);
    }
    if chunks.is_empty() {
        return Err(RangeError::NoRanges);
    }
    let mut previous_end: Option<u64> = None;
    for (index, chunk) in chunks.iter().enumerate() {
        if chunk.length == 0 {
            return Err(RangeError::EmptyChunk { index });
        }
        if chunk.offset.checked_add(chunk.length).is_none() {
            return Err(RangeError::ChunkOverflow {
                index,
                offset: chunk.offset,
                length: chunk.length,
            });
        }
        if let Some(previous_end) = previous_end
            && chunk.offset < previous_end
        {
            return Err(RangeError::UnsortedChunks {
                index,
                offset: chunk.offset,
                previous_end,
            });
        }
        previous_end = Some(chunk.end());
    }

    let mut merged: Vec<PlannedRange> = Vec::new();
    let mut start = 0;
    while start < chunks.len() {
        let mut end = start + 1;
        while end < chunks.len() && chunks[end].offset - chunks[end - 1].end() <= options.max_gap {
            end += 1;
        }
        let range = ByteRange::new(chunks[start].offset, chunks[end - 1].end() - 1)?;
        merged.push(PlannedRange {
            range,
            chunks: start..end,
        });
        start = end;
    }
    Ok(merged
        .chunks(options.max_ranges_per_request)
        .map(|ranges| RangeRequest {
            ranges: ranges.to_vec(),
        })
        .collect())
}

/// Bytes of one chunk from a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkData<'a> {
    /// The chunk's index, into the slice given to [`ChunkDemux::new`].
    pub chunk: usize,
    /// Where `data` starts within the chunk.
    pub offset: u64,
    /// The bytes.
    pub data: &'a [u8],
}

/// Maps the parts of one response back to the chunks of its request.
///
/// Call [`begin_part`](Self::begin_part) with each part's range (from a multipart part's
/// `Content-Range`, a single-part 206's `Content-Range`, or `0..=len-1` for a whole blob),
/// [`data`](Self::data) with its bytes, [`end_part`](Self::end_part), and
/// [`finish`](Self::finish) at the end of the response. Bytes outside the chunks (gaps) are
/// dropped. Each chunk's bytes must arrive exactly once and in order.
#[derive(Debug, Clone)]
pub struct ChunkDemux {
    chunks: Vec<Chunk>,
    base: usize,
    received: Vec<u64>,
    part: Option<(ByteRange, u64)>,
    blob_length: Option<u64>,
}

impl ChunkDemux {
    /// A demultiplexer for `request`, planned from `chunks`.
    pub fn new(chunks: &[Chunk], request: &RangeRequest) -> Self {
        Self::for_chunks(chunks, request.chunks())
    }

    /// A demultiplexer for `chunks[indices]` (sorted, validated by the planner).
    pub fn for_chunks(chunks: &[Chunk], indices: Range<usize>) -> Self {
        let selected = chunks.get(indices.clone()).unwrap_or_default().to_vec();
        Self {
            received: vec![0; selected.len()],
            chunks: selected,
            base: indices.start,
            part: None,
            blob_length: None,
        }
    }

    /// Refuses parts that run past a blob of `length` bytes (from the descriptor), so a server
    /// cannot make the caller read more than the blob per part.
    pub fn with_blob_length(mut self, length: u64) -> Self {
        self.blob_length = Some(length);
        self
    }

    /// Starts a part holding the bytes `range`.
    pub fn begin_part(&mut self, range: ByteRange) -> Result<(), RangeError> {
        if self.part.is_some() {
            return Err(RangeError::PartSequence);
        }
        if let Some(blob_length) = self.blob_length
            && range.last >= blob_length
        {
            return Err(RangeError::PartBeyondBlob { range, blob_length });
        }
        let first = self.chunks.partition_point(|c| c.end() <= range.first);
        if self.chunks.get(first).is_none_or(|c| c.offset > range.last) {
            return Err(RangeError::UnexpectedPart { range });
        }
        self.part = Some((range, range.first));
        Ok(())
    }

    /// Maps `data`, the next bytes of the current part, to the chunks it holds.
    pub fn data<'a>(&mut self, data: &'a [u8]) -> Result<Vec<ChunkData<'a>>, RangeError> {
        let Some((range, pos)) = self.part else {
            return Err(RangeError::PartSequence);
        };
        if data.is_empty() {
            return Ok(Vec::new());
        }
        let remaining = range.end() - pos;
        if data.len() as u64 > remaining {
            return Err(RangeError::PartOverflow { range });
        }
        let end = pos + data.len() as u64;
        let mut out = Vec::new();
        let mut i = self.chunks.partition_point(|c| c.end() <= pos);
        while let Some(chunk) = self.chunks.get(i) {
            if chunk.offset >= end {
                break;
            }
            let from = chunk.offset.max(pos);
            let to = chunk.end().min(end);
            let offset = from - chunk.offset;
            if self.received[i] != offset {
                return Err(RangeError::ChunkOutOfOrder {
                    chunk: self.base + i,
                    offset,
                    received: self.received[i],
                });
            }
            self.received[i] = to - chunk.offset;
            // Both bounds lie within `data`, whose length fits in usize.
            let slice = &data[(from - pos) as usize..(to - pos) as usize];
            out.push(ChunkData {
                chunk: self.base + i,
                offset,
                data: slice,
            });
            i += 1;
        }
        self.part = Some((range, end));
        Ok(out)
    }

    /// Ends the current part; all its bytes must have arrived.
    pub fn end_part(&mut self) -> Result<(), RangeError> {
        let Some((range, pos)) = self.part.take() else {
            return Err(RangeError::PartSequence);
        };
        if pos != range.end() {
            return Err(RangeError::PartTruncated {
                range,
                received: pos - range.first,
                expected: range.len(),
            });
        }
        Ok(())
    }

    /// Whether every chunk is complete.
    pub fn is_complete(&self) -> bool {
        self.chunks
            .iter()
            .zip(&self.received)
            .all(|(c, r)| *r == c.length)
    }

    /// Ends the response: no part may be open and every chunk must be complete.
    pub fn finish(&self) -> Result<(), RangeError> {
        if self.part.is_some() {
            return Err(RangeError::PartSequence);
        }
        match self
            .chunks
            .iter()
            .zip(&self.received)
            .position(|(c, r)| *r != c.length)
        {
            Some(i) => Err(RangeError::MissingChunk {
                chunk: self.base + i,
                received: self.received[i],
                length: self.chunks[i].length,
            }),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn r(first: u64, last: u64) -> ByteRange {
        ByteRange::new(first, last).unwrap()
    }

    fn c(offset: u64, length: u64) -> Chunk {
        Chunk::new(offset, length)
    }

    #[test]
    fn byte_ranges_reject_reversed_and_unrepresentable_bounds() {
        assert_eq!(r(5, 5).len(), 1);
        assert_eq!(
            ByteRange::new(6, 5),
            Err(RangeError::InvalidRange { first: 6, last: 5 })
        );
        assert!(ByteRange::new(0, u64::MAX).is_err());
        assert_eq!(ByteRange::from_offset_len(10, 5), Ok(r(10, 14)));
        assert!(ByteRange::from_offset_len(10, 0).is_err());
        assert!(ByteRange::from_offset_len(u64::MAX - 1, 2).is_err());
        assert_eq!(
            ByteRange::from_offset_len(u64::MAX - 2, 2),
            Ok(r(u64::MAX - 2, u64::MAX - 1))
        );
    }

    #[test]
    fn range_header_lists_closed_ranges() {
        assert_eq!(range_header(&[r(0, 99)]).unwrap(), "bytes=0-99");
        assert_eq!(
            range_header(&[r(0, 99), r(200, 299)]).unwrap(),
            "bytes=0-99,200-299"
        );
        assert_eq!(range_header(&[]), Err(RangeError::NoRanges));
    }

    #[test]
    fn content_range_table() {
        let bytes = |first, last, len| {
            Ok(ContentRange::Bytes {
                range: r(first, last),
                complete_length: len,
            })
        };
        let cases: Vec<(&str, Result<ContentRange, ()>)> = vec![
            ("bytes 0-99/1234", bytes(0, 99, Some(1234))),
            ("bytes 0-99/*", bytes(0, 99, None)),
            (
                "bytes */1234",
                Ok(ContentRange::Unsatisfied {
                    complete_length: 1234,
                }),
            ),
            ("BYTES 5-5/6", bytes(5, 5, Some(6))),
            ("  bytes  1-2/3 ", bytes(1, 2, Some(3))),
            (
                "bytes 0-18446744073709551614/*",
                bytes(0, u64::MAX - 1, None),
            ),
            ("", Err(())),
            ("bytes", Err(())),
            ("bytes ", Err(())),
            ("bytes 0-99", Err(())),
            ("bytes=0-99/100", Err(())),
            ("items 0-99/100", Err(())),
            ("bytes 0-99/100/", Err(())),
            ("bytes 99-0/100", Err(())),
            ("bytes 0-100/100", Err(())),
            ("bytes 0-99/0", Err(())),
            ("bytes -5/100", Err(())),
            ("bytes 5-/100", Err(())),
            ("bytes +1-2/3", Err(())),
            ("bytes 1-+2/3", Err(())),
            ("bytes 1-2/+3", Err(())),
            ("bytes 0x1-2/3", Err(())),
            ("bytes 1 - 2/3", Err(())),
            ("bytes */*", Err(())),
            ("bytes 0-18446744073709551615/*", Err(())),
            ("bytes 0-99999999999999999999/*", Err(())),
            ("bytes ١-٢/٣", Err(())),
        ];
        for (value, expected) in cases {
            let got = ContentRange::parse(value);
            match expected {
                Ok(expected) => assert_eq!(got, Ok(expected), "{value:?}"),
                Err(()) => assert_eq!(
                    got,
                    Err(RangeError::MalformedContentRange {
                        value: value.to_owned()
                    }),
                    "{value:?}"
                ),
            }
        }
    }

    #[test]
    fn content_range_displays_as_parsed() {
        for value in ["bytes 0-99/1234", "bytes 0-99/*", "bytes */1234"] {
            assert_eq!(ContentRange::parse(value).unwrap().to_string(), value);
        }
    }

    #[test]
    fn check_accepts_exactly_the_asked_range_or_its_truncation_at_the_end() {
        let cr = |s: &str| ContentRange::parse(s).unwrap();
        assert_eq!(
            cr("bytes 100-199/1000").check(r(100, 199), Some(1000)),
            Ok(r(100, 199))
        );
        assert_eq!(
            cr("bytes 100-199/*").check(r(100, 199), None),
            Ok(r(100, 199))
        );
        // Asked past the end: the server stops at the last byte.
        assert_eq!(
            cr("bytes 900-999/1000").check(r(900, 1999), None),
            Ok(r(900, 999))
        );
        assert_eq!(
            cr("bytes 900-999/*").check(r(900, 1999), Some(1000)),
            Ok(r(900, 999))
        );
        assert_eq!(
            cr("bytes 0-199/1000").check(r(100, 199), Some(1000)),
            Err(RangeError::Mismatch {
                asked: r(100, 199),
                got: r(0, 199)
            })
        );
        assert_eq!(
            cr("bytes 100-149/1000").check(r(100, 199), Some(1000)),
            Err(RangeError::Mismatch {
                asked: r(100, 199),
                got: r(100, 149)
            })
        );
        assert_eq!(
            cr("bytes 100-299/1000").check(r(100, 199), None),
            Err(RangeError::Mismatch {
                asked: r(100, 199),
                got: r(100, 299)
            })
        );
        assert_eq!(
            cr("bytes 100-199/2000").check(r(100, 199), Some(1000)),
            Err(RangeError::LengthMismatch {
                expected: 1000,
                got: 2000
            })
        );
        assert_eq!(
            cr("bytes */1000").check(r(2000, 2999), None),
            Err(RangeError::Unsatisfiable {
                complete_length: 1000
            })
        );
    }

    #[test]
    fn planner_merges_small_gaps_and_splits_by_range_count() {
        let chunks = [
            c(0, 10),
            c(10, 10),
            c(25, 5),
            c(100, 10),
            c(200, 1),
            c(202, 1),
            c(1000, 50),
        ];
        let plan = plan_ranges(
            &chunks,
            PlanOptions {
                max_gap: 5,
                max_ranges_per_request: 2,
            },
        )
        .unwrap();
        let headers: Vec<String> = plan.iter().map(RangeRequest::header).collect();
        assert_eq!(headers, ["bytes=0-29,100-109", "bytes=200-202,1000-1049"]);
        assert_eq!(plan[0].ranges()[0].chunks, 0..3);
        assert_eq!(plan[0].ranges()[1].chunks, 3..4);
        assert_eq!(plan[1].chunks(), 4..7);
        assert_eq!(plan[1].bytes(), 3 + 50);

        let adjacent_only = plan_ranges(
            &chunks,
            PlanOptions {
                max_gap: 0,
                max_ranges_per_request: 10,
            },
        )
        .unwrap();
        assert_eq!(adjacent_only.len(), 1);
        assert_eq!(
            adjacent_only[0].header(),
            "bytes=0-19,25-29,100-109,200-200,202-202,1000-1049"
        );

        let everything = plan_ranges(
            &chunks,
            PlanOptions {
                max_gap: u64::MAX,
                max_ranges_per_request: 1,
            },
        )
        .unwrap();
        assert_eq!(everything.len(), 1);
        assert_eq!(everything[0].header(), "bytes=0-1049");
    }

    #[test]
    fn planner_rejects_invalid_chunk_lists() {
        let o = PlanOptions::default();
        assert_eq!(plan_ranges(&[], o), Err(RangeError::NoRanges));
        assert_eq!(
            plan_ranges(&[c(0, 1), c(5, 0)], o),
            Err(RangeError::EmptyChunk { index: 1 })
        );
        assert_eq!(
            plan_ranges(&[c(0, 10), c(5, 10)], o),
            Err(RangeError::UnsortedChunks {
                index: 1,
                offset: 5,
                previous_end: 10
            })
        );
        assert_eq!(
            plan_ranges(&[c(50, 10), c(0, 10)], o),
            Err(RangeError::UnsortedChunks {
                index: 1,
                offset: 0,
                previous_end: 60
            })
        );
        assert!(plan_ranges(&[c(u64::MAX - 5, 5)], o).is_ok());
        assert_eq!(
            plan_ranges(&[c(u64::MAX - 5, 10)], o),
            Err(RangeError::ChunkOverflow {
                index: 0,
                offset: u64::MAX - 5,
                length: 10
            })
        );
        assert_eq!(
            plan_ranges(
                &[c(0, 1)],
                PlanOptions {
                    max_gap: 0,
                    max_ranges_per_request: 0
                }
            ),
            Err(RangeError::ZeroRangesPerRequest)
        );
    }

    /// The blob used by demux tests: byte i is i mod 251.
    fn blob(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    fn collect(
        demux: &mut ChunkDemux,
        parts: &[(ByteRange, &[u8])],
        out: &mut [Vec<u8>],
    ) -> Result<(), RangeError> {
        for (range, bytes) in parts {
            demux.begin_part(*range)?;
            for piece in bytes.chunks(7) {
                for d in demux.data(piece)? {
                    assert_eq!(out[d.chunk].len() as u64, d.offset);
                    out[d.chunk].extend_from_slice(d.data);
                }
            }
            demux.end_part()?;
        }
        demux.finish()
    }

    fn slice(blob: &[u8], range: ByteRange) -> &[u8] {
        &blob[range.first() as usize..range.end() as usize]
    }

    #[test]
    fn demux_maps_parts_back_to_chunks_however_the_server_groups_them() {
        let b = blob(2000);
        let chunks = [c(10, 5), c(20, 5), c(100, 50), c(1000, 1)];
        let plan = plan_ranges(
            &chunks,
            PlanOptions {
                max_gap: 10,
                max_ranges_per_request: 8,
            },
        )
        .unwrap();
        assert_eq!(plan[0].header(), "bytes=10-24,100-149,1000-1000");
        let expected: Vec<Vec<u8>> = chunks
            .iter()
            .map(|ch| {
                slice(
                    &b,
                    ByteRange::from_offset_len(ch.offset, ch.length).unwrap(),
                )
                .to_vec()
            })
            .collect();
        let groupings: Vec<Vec<ByteRange>> = vec![
            vec![r(10, 24), r(100, 149), r(1000, 1000)], // as asked
            vec![r(1000, 1000), r(100, 149), r(10, 24)], // reordered
            vec![r(10, 149), r(1000, 1000)],             // coalesced
            vec![r(0, 1999)],                            // the whole blob (a 200)
            vec![r(10, 1000)],                           // one single part
        ];
        for parts in groupings {
            let mut demux = ChunkDemux::new(&chunks, &plan[0]);
            let mut out = vec![Vec::new(); chunks.len()];
            let parts: Vec<(ByteRange, &[u8])> =
                parts.iter().map(|p| (*p, slice(&b, *p))).collect();
            collect(&mut demux, &parts, &mut out).unwrap();
            assert_eq!(out, expected, "{parts:?}");
        }
    }

    #[test]
    fn demux_reports_missing_duplicate_and_overlong_data() {
        let b = blob(300);
        let chunks = [c(10, 5), c(100, 50)];
        let plan = plan_ranges(
            &chunks,
            PlanOptions {
                max_gap: 0,
                max_ranges_per_request: 8,
            },
        )
        .unwrap();
        let run = |parts: &[ByteRange]| {
            let mut demux = ChunkDemux::new(&chunks, &plan[0]);
            let mut out = vec![Vec::new(); chunks.len()];
            let parts: Vec<(ByteRange, &[u8])> =
                parts.iter().map(|p| (*p, slice(&b, *p))).collect();
            collect(&mut demux, &parts, &mut out)
        };
        assert_eq!(
            run(&[r(10, 14)]),
            Err(RangeError::MissingChunk {
                chunk: 1,
                received: 0,
                length: 50
            })
        );
        assert_eq!(
            run(&[r(10, 14), r(100, 120)]),
            Err(RangeError::MissingChunk {
                chunk: 1,
                received: 21,
                length: 50
            })
        );
        assert_eq!(
            run(&[r(10, 14), r(10, 14), r(100, 149)]),
            Err(RangeError::ChunkOutOfOrder {
                chunk: 0,
                offset: 0,
                received: 5
            })
        );
        assert_eq!(
            run(&[r(10, 14), r(120, 149), r(100, 119)]),
            Err(RangeError::ChunkOutOfOrder {
                chunk: 1,
                offset: 20,
                received: 0
            })
        );
        assert_eq!(
            run(&[r(200, 299)]),
            Err(RangeError::UnexpectedPart { range: r(200, 299) })
        );

        let mut demux = ChunkDemux::new(&chunks, &plan[0]).with_blob_length(300);
        assert_eq!(
            demux.begin_part(r(0, 300)),
            Err(RangeError::PartBeyondBlob {
                range: r(0, 300),
                blob_length: 300
            })
        );
        assert_eq!(demux.begin_part(r(0, 299)), Ok(()));

        let mut demux = ChunkDemux::new(&chunks, &plan[0]);
        demux.begin_part(r(10, 14)).unwrap();
        assert_eq!(
            demux.data(&[0; 6]),
            Err(RangeError::PartOverflow { range: r(10, 14) })
        );
        let mut demux = ChunkDemux::new(&chunks, &plan[0]);
        demux.begin_part(r(10, 14)).unwrap();
        demux.data(&[0; 3]).unwrap();
        assert_eq!(
            demux.end_part(),
            Err(RangeError::PartTruncated {
                range: r(10, 14),
                received: 3,
                expected: 5
            })
        );
        let mut demux = ChunkDemux::new(&chunks, &plan[0]);
        assert_eq!(demux.data(&[0]), Err(RangeError::PartSequence));
        demux.begin_part(r(10, 14)).unwrap();
        assert_eq!(demux.begin_part(r(100, 149)), Err(RangeError::PartSequence));
        assert_eq!(demux.finish(), Err(RangeError::PartSequence));
    }

    fn chunk_list() -> impl Strategy<Value = Vec<Chunk>> {
        proptest::collection::vec((0u64..200, 1u64..50), 1..30).prop_map(|pairs| {
            let mut offset = 0;
            pairs
                .into_iter()
                .map(|(gap, length)| {
                    offset += gap;
                    let chunk = c(offset, length);
                    offset += length;
                    chunk
                })
                .collect()
        })
    }

    proptest! {
        #[test]
        fn plans_cover_every_chunk_once_within_the_limits(
            chunks in chunk_list(),
            max_gap in 0u64..300,
            max_ranges in 1usize..6,
        ) {
            let plan = plan_ranges(&chunks, PlanOptions { max_gap, max_ranges_per_request: max_ranges }).unwrap();
            let mut next_chunk = 0;
            let mut previous_end = None;
            for request in &plan {
                prop_assert!(!request.ranges().is_empty() && request.ranges().len() <= max_ranges);
                for planned in request.ranges() {
                    prop_assert_eq!(planned.chunks.start, next_chunk);
                    next_chunk = planned.chunks.end;
                    let first = &chunks[planned.chunks.start];
                    let last = &chunks[planned.chunks.end - 1];
                    prop_assert_eq!(planned.range.first(), first.offset);
                    prop_assert_eq!(planned.range.end(), last.offset + last.length);
                    for pair in chunks[planned.chunks.clone()].windows(2) {
                        prop_assert!(pair[1].offset - (pair[0].offset + pair[0].length) <= max_gap);
                    }
                    if let Some(end) = previous_end {
                        // Ranges that were not merged are separated by more than max_gap.
                        prop_assert!(planned.range.first() - end > max_gap);
                    }
                    previous_end = Some(planned.range.end());
                }
            }
            prop_assert_eq!(next_chunk, chunks.len());
        }

        #[test]
        fn demux_delivers_exactly_the_chunk_bytes(chunks in chunk_list(), max_gap in 0u64..300, split in 1usize..40) {
            let len = chunks.last().map_or(0, |c| c.offset + c.length) as usize + 10;
            let b = blob(len);
            for request in plan_ranges(&chunks, PlanOptions { max_gap, max_ranges_per_request: 4 }).unwrap() {
                let mut demux = ChunkDemux::new(&chunks, &request);
                let mut out: Vec<Vec<u8>> = vec![Vec::new(); chunks.len()];
                for planned in request.ranges() {
                    demux.begin_part(planned.range).unwrap();
                    for piece in slice(&b, planned.range).chunks(split) {
                        for d in demux.data(piece).unwrap() {
                            out[d.chunk].extend_from_slice(d.data);
                        }
                    }
                    demux.end_part().unwrap();
                }
                demux.finish().unwrap();
                for i in request.chunks() {
                    let ch = chunks[i];
                    prop_assert_eq!(&out[i][..], slice(&b, ByteRange::from_offset_len(ch.offset, ch.length).unwrap()));
                }
            }
        }

        #[test]
        fn content_range_parse_never_panics(value in "\\PC{0,40}") {
            if let Ok(parsed) = ContentRange::parse(&value) {
                prop_assert_eq!(ContentRange::parse(&parsed.to_string()), Ok(parsed));
            }
        }

        #[test]
        fn content_range_like_noise_never_panics(value in "(bytes|BYTES)? ?[0-9*/ -]{0,30}") {
            let _ = ContentRange::parse(&value);
        }
    }
}
