//! An incremental parser for `multipart/byteranges` bodies (RFC 7233 appendix A, RFC 2046).
//!
//! [`MultipartParser`] is fed the body in slices split anywhere (inside the boundary, the
//! headers or the data) and yields [`Event`]s: a part's start with its parsed `Content-Range`,
//! slices of its data (borrowed from the input, never copied), its end, and the end of the
//! body. The preamble and the epilogue are ignored.
//!
//! Each part's data is exactly the number of bytes its `Content-Range` names, followed by
//! `CRLF--boundary`; anything else is an error, so a part cannot be silently shortened or
//! lengthened, and data that happens to contain the boundary is still read correctly.
//! Memory is bounded: only a part's header section is buffered, up to a limit
//! ([`DEFAULT_MAX_HEADER_BYTES`]), and the preamble is limited to [`MAX_PREAMBLE_BYTES`].
//! Malformed input is an error, never a panic; after an error the parser keeps returning it.

use crate::range::{ByteRange, ContentRange};

/// The default limit on one part's header section.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 8 * 1024;
/// The longest preamble skipped before the first boundary.
pub const MAX_PREAMBLE_BYTES: usize = 16 * 1024;
/// The most transport padding (spaces, tabs) accepted after a boundary.
const MAX_PADDING: usize = 1024;
/// The longest boundary RFC 2046 allows.
pub const MAX_BOUNDARY_LEN: usize = 70;

/// Why a `multipart/byteranges` body or its `Content-Type` is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MultipartError {
    /// The `Content-Type` is not `multipart/byteranges`.
    #[error("expected Content-Type multipart/byteranges, got {content_type:?}")]
    NotByteranges {
        /// The Content-Type.
        content_type: String,
    },
    /// The `Content-Type` parameters do not parse.
    #[error("malformed Content-Type {content_type:?}")]
    MalformedContentType {
        /// The Content-Type.
        content_type: String,
    },
    /// The `Content-Type` has no `boundary` parameter.
    #[error("Content-Type {content_type:?} has no boundary parameter")]
    MissingBoundary {
        /// The Content-Type.
        content_type: String,
    },
    /// The boundary is empty, too long, or holds characters RFC 2046 does not allow.
    #[error(
        "invalid multipart boundary {boundary:?}: 1 to 70 characters of letters, digits and '()+_,-./:=? (space allowed, not last)"
    )]
    InvalidBoundary {
        /// The boundary.
        boundary: String,
    },
    /// No boundary within the first [`MAX_PREAMBLE_BYTES`] bytes.
    #[error("no multipart boundary in the first {MAX_PREAMBLE_BYTES} bytes of the body")]
    PreambleTooLong,
    /// A boundary line continues with something other than padding and CRLF, or `--`.
    #[error("malformed boundary line at byte {offset} of the body")]
    MalformedBoundaryLine {
        /// Where, in the body.
        offset: u64,
    },
    /// A part's header section exceeds the limit.
    #[error("a part's header section at byte {offset} is over the {limit}-byte limit")]
    HeadersTooLarge {
        /// Where the section started, in the body.
        offset: u64,
        /// The limit.
        limit: usize,
    },
    /// A header line is not `name: value`, is folded, or holds control characters.
    #[error("malformed part header {line:?} at byte {offset} of the body")]
    MalformedHeader {
        /// The line (lossy UTF-8, shortened).
        line: String,
        /// Where the section started, in the body.
        offset: u64,
    },
    /// A part has no `Content-Range`.
    #[error("part at byte {offset} of the body has no Content-Range")]
    MissingContentRange {
        /// Where the section started, in the body.
        offset: u64,
    },
    /// A part has two `Content-Range` headers.
    #[error("part at byte {offset} of the body has more than one Content-Range")]
    DuplicateContentRange {
        /// Where the section started, in the body.
        offset: u64,
    },
    /// A part's `Content-Range` does not parse or is unsatisfied (`bytes */n`).
    #[error("part at byte {offset} of the body has an invalid Content-Range {value:?}")]
    InvalidContentRange {
        /// The value.
        value: String,
        /// Where the section started, in the body.
        offset: u64,
    },
    /// Parts disagree on the blob's complete length.
    #[error("parts disagree on the blob's length: {first} and {other}")]
    InconsistentLength {
        /// The length the first part gave.
        first: u64,
        /// A different one.
        other: u64,
    },
    /// After a part's data, the bytes are not `CRLF--boundary`: the part holds more data than
    /// its `Content-Range` says, or the boundary is wrong.
    #[error(
        "expected a boundary after the part's data at byte {offset} of the body (the part is longer than its Content-Range, or the body is corrupt)"
    )]
    ExpectedBoundary {
        /// Where, in the body.
        offset: u64,
    },
    /// The body closes without any part.
    #[error("multipart body has no parts")]
    NoParts,
    /// The body ended before its closing boundary.
    #[error("multipart body ended at byte {offset} before its closing boundary")]
    Truncated {
        /// How many bytes arrived.
        offset: u64,
    },
}

/// One part's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// The bytes of the blob the part holds.
    pub range: ByteRange,
    /// The blob's complete length, if the part gave it.
    pub complete_length: Option<u64>,
    /// The part's `Content-Type`, if any.
    pub content_type: Option<String>,
}

/// What the parser found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event<'a> {
    /// A part starts.
    PartStart(Part),
    /// The next bytes of the current part's data, borrowed from the input.
    Data(&'a [u8]),
    /// The current part's data is complete.
    PartEnd,
    /// The closing boundary: the body is complete (any epilogue is ignored).
    Done,
}

#[derive(Debug, Clone)]
enum State {
    /// Looking for the first boundary; `matched` bytes of `\r\n--boundary` seen.
    Preamble {
        matched: usize,
        skipped: usize,
    },
    /// A boundary was just read.
    AfterBoundary,
    /// `--boundary-` was read.
    CloseDash,
    /// Transport padding after a boundary.
    Padding {
        count: usize,
    },
    /// The CR of the CRLF that ends a boundary line.
    BoundaryLf,
    /// Reading a part's header section into the buffer.
    Headers {
        start: u64,
    },
    /// Reading a part's data.
    Body {
        remaining: u64,
    },
    /// Expecting `\r\n--boundary` after a part's data; `matched` bytes seen.
    Delimiter {
        matched: usize,
    },
    Done,
    Failed(MultipartError),
}

/// The incremental `multipart/byteranges` parser; see the module docs.
#[derive(Debug, Clone)]
pub struct MultipartParser {
    /// `\r\n--boundary`.
    delimiter: Vec<u8>,
    /// KMP failure function of `delimiter`, for the preamble scan.
    failure: Vec<usize>,
    state: State,
    header: Vec<u8>,
    max_header_bytes: usize,
    offset: u64,
    parts: u64,
    complete_length: Option<u64>,
}

impl MultipartParser {
    /// A parser for parts separated by `boundary` (validated per RFC 2046).
    pub fn new(boundary: &str) -> Result<Self, MultipartError> {
        validate_boundary(boundary)?;
        let mut delimiter = b"\r\n--".to_vec();
        delimiter.extend_from_slice(boundary.as_bytes());
        let failure = failure_function(&delimiter);
        Ok(Self {
            delimiter,
            failure,
            // The body's start counts as a line start: the first boundary needs no CRLF.
            state: State::Preamble {
                matched: 2,
                skipped: 0,
            },
            header: Vec::new(),
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            offset: 0,
            parts: 0,
            complete_length: None,
        })
    }

    /// A parser for a response with this `Content-Type` (must be `multipart/byteranges`).
    pub fn from_content_type(content_type: &str) -> Result<Self, MultipartError> {
        Self::new(&boundary_from_content_type(content_type)?)
    }

    /// Sets the limit on one part's header section.
    pub fn with_max_header_bytes(mut self, limit: usize) -> Self {
        self.max_header_bytes = limit;
        self
    }

    /// Bytes held inside the parser (a header section being read); never above the limit.
    pub fn buffered_len(&self) -> usize {
        self.header.len()
    }

    /// Whether the closing boundary has been read.
    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// Parses from `input`, advancing it past what was consumed, and returns the next event,
    /// or `None` when `input` is used up (feed more) or the body is done.
    pub fn next_event<'a>(
        &mut self,
        input: &mut &'a [u8],
    ) -> Result<Option<Event<'a>>, MultipartError> {
        match self.step(input) {
            Ok(event) => Ok(event),
            Err(e) => {
                self.state = State::Failed(e.clone());
                self.header = Vec::new();
                Err(e)
            }
        }
    }

    /// Parses all of `input` and returns the events it completes.
    pub fn feed<'a>(&mut self, mut input: &'a [u8]) -> Result<Vec<Event<'a>>, MultipartError> {
        let mut events = Vec::new();
        while let Some(event) = self.next_event(&mut input)? {
            events.push(event);
        }
        Ok(events)
    }

    /// Call at the end of the body: fails unless the closing boundary was read.
    pub fn finish(&self) -> Result<(), MultipartError> {
        match &self.state {
            State::Done => Ok(()),
            State::Failed(e) => Err(e.clone()),
            _ => Err(MultipartError::Truncated {
                offset: self.offset,
            }),
        }
    }

    fn step<'a>(&mut self, input: &mut &'a [u8]) -> Result<Option<Event<'a>>, MultipartError> {
        loop {
            match &self.state {
                State::Failed(e) => return Err(e.clone()),
                State::Done => {
                    // The epilogue: ignored.
                    self.offset += input.len() as u64;
                    *input = &[];
                    return Ok(None);
                }
                State::Body { remaining: 0 } => {
                    self.state = State::Delimiter { matched: 0 };
                    return Ok(Some(Event::PartEnd));
                }
                _ => {}
            }
            let Some((&byte, rest)) = input.split_first() else {
                return Ok(None);
            };
            match self.state.clone() {
                State::Body { remaining } => {
                    let n = usize::try_from(remaining).map_or(input.len(), |r| r.min(input.len()));
                    let (data, rest) = input.split_at(n);
                    *input = rest;
                    self.offset += n as u64;
                    self.state = State::Body {
                        remaining: remaining - n as u64,
                    };
                    return Ok(Some(Event::Data(data)));
                }
                State::Preamble {
                    mut matched,
                    mut skipped,
                } => {
                    let mut consumed = 0;
                    let mut found = false;
                    for &b in input.iter() {
                        consumed += 1;
                        skipped += 1;
                        while matched > 0 && self.delimiter[matched] != b {
                            matched = self.failure[matched - 1];
                        }
                        if self.delimiter[matched] == b {
                            matched += 1;
                        }
                        if matched == self.delimiter.len() {
                            found = true;
                            break;
                        }
                        if skipped > MAX_PREAMBLE_BYTES + self.delimiter.len() {
                            return Err(MultipartError::PreambleTooLong);
                        }
                    }
                    *input = &input[consumed..];
                    self.offset += consumed as u64;
                    self.state = if found {
                        State::AfterBoundary
                    } else {
                        State::Preamble { matched, skipped }
                    };
                }
                State::Headers { start } => {
                    let mut consumed = 0;
                    let mut complete = false;
                    for &b in input.iter() {
                        consumed += 1;
                        self.header.push(b);
                        if self.header == b"\r\n" || self.header.ends_with(b"\r\n\r\n") {
                            complete = true;
                            break;
                        }
                        if self.header.len() >= self.max_header_bytes {
                            return Err(MultipartError::HeadersTooLarge {
                                offset: start,
                                limit: self.max_header_bytes,
                            });
                        }
                    }
                    *input = &input[consumed..];
                    self.offset += consumed as u64;
                    if complete {
                        let part = self.parse_headers(start)?;
                        self.header.clear();
                        self.parts += 1;
                        self.state = State::Body {
                            remaining: part.range.len(),
                        };
                        return Ok(Some(Event::PartStart(part)));
                    }
                }
                State::Delimiter { matched } => {
                    if self.delimiter[matched] != byte {
                        return Err(MultipartError::ExpectedBoundary {
                            offset: self.offset,
                        });
                    }
                    self.consume_one(input, rest);
                    self.state = if matched + 1 == self.delimiter.len() {
                        State::AfterBoundary
                    } else {
                        State::Delimiter {
                            matched: matched + 1,
                        }
                    };
                }
                State::AfterBoundary
                | State::CloseDash
                | State::Padding { .. }
                | State::BoundaryLf => {
                    let next = match (&self.state, byte) {
                        (State::AfterBoundary, b'-') => State::CloseDash,
                        (State::CloseDash, b'-') => {
                            if self.parts == 0 {
                                return Err(MultipartError::NoParts);
                            }
                            State::Done
                        }
                        (State::AfterBoundary, b' ' | b'\t') => State::Padding { count: 1 },
                        (State::Padding { count }, b' ' | b'\t') if *count < MAX_PADDING => {
                            State::Padding { count: count + 1 }
                        }
                        (State::AfterBoundary | State::Padding { .. }, b'\r') => State::BoundaryLf,
                        (State::BoundaryLf, b'\n') => State::Headers {
                            start: self.offset + 1,
                        },
                        _ => {
                            return Err(MultipartError::MalformedBoundaryLine {
                                offset: self.offset,
                            });
                        }
                    };
                    self.consume_one(input, rest);
                    let done = matches!(next, State::Done);
                    self.state = next;
                    if done {
                        return Ok(Some(Event::Done));
                    }
                }
                State::Done | State::Failed(_) => {}
            }
        }
    }

    fn consume_one<'a>(&mut self, input: &mut &'a [u8], rest: &'a [u8]) {
        *input = rest;
        self.offset += 1;
    }

    fn parse_headers(&mut self, start: u64) -> Result<Part, MultipartError> {
        let section = self.header.strip_suffix(b"\r\n\r\n").unwrap_or_default();
        let mut range = None;
        let mut content_type = None;
        if !section.is_empty() {
            for line in CrlfLines(Some(section)) {
                let malformed = || MultipartError::MalformedHeader {
                    line: shorten(line),
                    offset: start,
                };
                let colon = line.iter().position(|&b| b == b':').ok_or_else(malformed)?;
                let (name, value) = (&line[..colon], &line[colon + 1..]);
                let name_ok = !name.is_empty()
                    && name
                        .iter()
                        .all(|&b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
                let value_ok = value
                    .iter()
                    .all(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f));
                if !name_ok || !value_ok {
                    return Err(malformed());
                }
                let value = String::from_utf8_lossy(value)
                    .trim_matches([' ', '\t'])
                    .to_owned();
                if name.eq_ignore_ascii_case(b"content-range") {
                    if range.is_some() {
                        return Err(MultipartError::DuplicateContentRange { offset: start });
                    }
                    let invalid = || MultipartError::InvalidContentRange {
                        value: value.clone(),
                        offset: start,
                    };
                    match ContentRange::parse(&value).map_err(|_| invalid())? {
                        ContentRange::Bytes {
                            range: r,
                            complete_length,
                        } => range = Some((r, complete_length)),
                        ContentRange::Unsatisfied { .. } => return Err(invalid()),
                    }
                } else if name.eq_ignore_ascii_case(b"content-type") {
                    content_type = Some(value);
                }
            }
        }
        let (range, complete_length) =
            range.ok_or(MultipartError::MissingContentRange { offset: start })?;
        if let Some(length) = complete_length {
            match self.complete_length {
                Some(first) if first != length => {
                    return Err(MultipartError::InconsistentLength {
                        first,
                        other: length,
                    });
                }
                _ => self.complete_length = Some(length),
            }
        }
        Ok(Part {
            range,
            complete_length,
            content_type,
        })
    }
}

/// The lines of a header section, split on CRLF only (a bare CR or LF stays in its line and
/// is refused as a control character).
struct CrlfLines<'a>(Option<&'a [u8]>);

impl<'a> Iterator for CrlfLines<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let rest = self.0?;
        match rest.windows(2).position(|w| w == b"\r\n") {
            Some(i) => {
                self.0 = Some(&rest[i + 2..]);
                Some(&rest[..i])
            }
            None => {
                self.0 = None;
                Some(rest)
            }
        }
    }
}

fn shorten(line: &[u8]) -> String {
    String::from_utf8_lossy(&line[..line.len().min(200)]).into_owned()
}

fn failure_function(pattern: &[u8]) -> Vec<usize> {
    let mut failure = vec![0; pattern.len()];
    let mut k = 0;
    for i in 1..pattern.len() {
        while k > 0 && pattern[i] != pattern[k] {
            k = failure[k - 1];
        }
        if pattern[i] == pattern[k] {
            k += 1;
        }
        failure[i] = k;
    }
    failure
}

fn validate_boundary(boundary: &str) -> Result<(), MultipartError> {
    let bchar = |b: u8| b.is_ascii_alphanumeric() || b"'()+_,-./:=? ".contains(&b);
    let ok = !boundary.is_empty()
        && boundary.len() <= MAX_BOUNDARY_LEN
        && boundary.bytes().all(bchar)
        && !boundary.ends_with(' ');
    if ok {
        Ok(())
    } else {
        Err(MultipartError::InvalidBoundary {
            boundary: boundary.to_owned(),
        })
    }
}

/// The boundary of a `multipart/byteranges` `Content-Type` (quoted or not), validated.
pub fn boundary_from_content_type(content_type: &str) -> Result<String, MultipartError> {
    let malformed = || MultipartError::MalformedContentType {
        content_type: content_type.to_owned(),
    };
    let (mime, mut rest) = content_type.split_once(';').unwrap_or((content_type, ""));
    if !mime
        .trim_matches([' ', '\t'])
        .eq_ignore_ascii_case("multipart/byteranges")
    {
        return Err(MultipartError::NotByteranges {
            content_type: content_type.to_owned(),
        });
    }
    let mut boundary = None;
    loop {
        rest = rest.trim_start_matches([' ', '\t', ';']);
        if rest.is_empty() {
            break;
        }
        let (name, after) = rest.split_once('=').ok_or_else(malformed)?;
        let name = name.trim_matches([' ', '\t']);
        let after = after.trim_start_matches([' ', '\t']);
        let value = if let Some(quoted) = after.strip_prefix('"') {
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '"' => {
                        end = Some(i + 1);
                        break;
                    }
                    '\\' => value.push(chars.next().ok_or_else(malformed)?.1),
                    c => value.push(c),
                }
            }
            let end = end.ok_or_else(malformed)?;
            rest = &quoted[end..];
            if !rest.trim_start_matches([' ', '\t']).is_empty()
                && !rest.trim_start_matches([' ', '\t']).starts_with(';')
            {
                return Err(malformed());
            }
            value
        } else {
            let (value, after) = after.split_once(';').unwrap_or((after, ""));
            rest = after;
            value.trim_matches([' ', '\t']).to_owned()
        };
        if name.eq_ignore_ascii_case("boundary") {
            if boundary.is_some() {
                return Err(malformed());
            }
            boundary = Some(value);
        }
    }
    let boundary = boundary.ok_or_else(|| MultipartError::MissingBoundary {
        content_type: content_type.to_owned(),
    })?;
    validate_boundary(&boundary)?;
    Ok(boundary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const B: &str = "3d6b6a416f9b5";

    /// Events with owned data, adjacent data merged, for comparing across splits.
    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Owned {
        Start(Part),
        Data(Vec<u8>),
        End,
        Done,
    }

    fn parse_split(
        parser: &mut MultipartParser,
        body: &[u8],
        cuts: &[usize],
    ) -> Result<Vec<Owned>, MultipartError> {
        let mut out: Vec<Owned> = Vec::new();
        let mut start = 0;
        let mut points: Vec<usize> = cuts.iter().map(|c| c % (body.len() + 1)).collect();
        points.sort_unstable();
        points.push(body.len());
        for end in points {
            let end = end.max(start);
            for event in parser.feed(&body[start..end])? {
                match event {
                    Event::PartStart(p) => out.push(Owned::Start(p)),
                    Event::Data(d) => match out.last_mut() {
                        Some(Owned::Data(acc)) => acc.extend_from_slice(d),
                        _ => out.push(Owned::Data(d.to_vec())),
                    },
                    Event::PartEnd => out.push(Owned::End),
                    Event::Done => out.push(Owned::Done),
                }
                assert!(parser.buffered_len() <= DEFAULT_MAX_HEADER_BYTES);
            }
            start = end;
        }
        parser.finish()?;
        Ok(out)
    }

    fn parse(body: &[u8]) -> Result<Vec<Owned>, MultipartError> {
        parse_split(&mut MultipartParser::new(B).unwrap(), body, &[])
    }

    fn start(first: u64, last: u64, len: Option<u64>, ct: Option<&str>) -> Owned {
        Owned::Start(Part {
            range: ByteRange::new(first, last).unwrap(),
            complete_length: len,
            content_type: ct.map(str::to_owned),
        })
    }

    fn data(d: &[u8]) -> Owned {
        Owned::Data(d.to_vec())
    }

    /// A body as Go's net/http writes it.
    fn go_style(parts: &[(u64, &[u8])], total: u64) -> Vec<u8> {
        let mut body = Vec::new();
        for (offset, bytes) in parts {
            body.extend_from_slice(format!("\r\n--{B}\r\n").as_bytes());
            body.extend_from_slice(b"Content-Type: application/octet-stream\r\n");
            body.extend_from_slice(
                format!(
                    "Content-Range: bytes {}-{}/{total}\r\n\r\n",
                    offset,
                    offset + bytes.len() as u64 - 1
                )
                .as_bytes(),
            );
            body.extend_from_slice(bytes);
        }
        body.extend_from_slice(format!("\r\n--{B}--\r\n").as_bytes());
        body
    }

    #[test]
    fn well_formed_bodies_yield_the_pinned_events() {
        let oct = Some("application/octet-stream");
        let cases: Vec<(String, Vec<u8>, Vec<Owned>)> = vec![
            (
                "go style, two parts".into(),
                go_style(&[(0, b"hello"), (100, b"world!")], 1000),
                vec![start(0, 4, Some(1000), oct), data(b"hello"), Owned::End, start(100, 105, Some(1000), oct), data(b"world!"), Owned::End, Owned::Done],
            ),
            (
                "no leading CRLF, no content type, unknown length".into(),
                format!("--{B}\r\nContent-Range: bytes 5-7/*\r\n\r\nabc\r\n--{B}--").into_bytes(),
                vec![start(5, 7, None, None), data(b"abc"), Owned::End, Owned::Done],
            ),
            (
                "preamble and epilogue are ignored".into(),
                format!("This is a preamble --{B} not a boundary\r\n--{B}\r\ncontent-range: bytes 0-0/1\r\n\r\nX\r\n--{B}--\r\nepilogue --{B}\r\njunk").into_bytes(),
                vec![start(0, 0, Some(1), None), data(b"X"), Owned::End, Owned::Done],
            ),
            (
                "data holding the boundary is read by length".into(),
                format!("--{B}\r\nContent-Range: bytes 0-37/38\r\n\r\n\r\n--{B}--\r\n--{B}xx\r\n--{B}--").into_bytes(),
                vec![start(0, 37, Some(38), None), data(format!("\r\n--{B}--\r\n--{B}xx").as_bytes()), Owned::End, Owned::Done],
            ),
            (
                "transport padding after boundaries, header case and spacing".into(),
                format!("--{B} \t\r\nCONTENT-RANGE:bytes 1-2/10  \r\nX-Extra: y\r\nContent-Type:  text/plain \r\n\r\nab\r\n--{B}\t\r\nContent-Range: bytes 8-9/10\r\n\r\nyz\r\n--{B}--  \r\n").into_bytes(),
                vec![start(1, 2, Some(10), Some("text/plain")), data(b"ab"), Owned::End, start(8, 9, Some(10), None), data(b"yz"), Owned::End, Owned::Done],
            ),
            (
                "binary data with CR and LF".into(),
                format!("--{B}\r\nContent-Range: bytes 0-3/4\r\n\r\n\r\n\r\n\r\n--{B}--").into_bytes(),
                vec![start(0, 3, Some(4), None), data(b"\r\n\r\n"), Owned::End, Owned::Done],
            ),
        ];
        for (name, body, expected) in cases {
            assert_eq!(parse(&body), Ok(expected.clone()), "{name}");
            // Byte by byte gives the same events.
            let cuts: Vec<usize> = (0..body.len()).collect();
            assert_eq!(
                parse_split(&mut MultipartParser::new(B).unwrap(), &body, &cuts),
                Ok(expected),
                "{name} bytewise"
            );
        }
    }

    #[test]
    fn malformed_bodies_fail_with_the_pinned_error() {
        use MultipartError as E;
        let cr = "Content-Range: bytes 0-2/3";
        let cases: Vec<(&str, String, MultipartError)> = vec![
            ("empty body", String::new(), E::Truncated { offset: 0 }),
            (
                "no boundary at all",
                "just some bytes".into(),
                E::Truncated { offset: 15 },
            ),
            (
                "ends inside a part",
                format!("--{B}\r\n{cr}\r\n\r\nab"),
                E::Truncated { offset: 49 },
            ),
            (
                "ends without the closing boundary",
                format!("--{B}\r\n{cr}\r\n\r\nabc\r\n--{B}\r\n"),
                E::Truncated { offset: 69 },
            ),
            (
                "part without Content-Range",
                format!("--{B}\r\nContent-Type: x\r\n\r\nabc\r\n--{B}--"),
                E::MissingContentRange { offset: 17 },
            ),
            (
                "part without headers",
                format!("--{B}\r\n\r\nabc\r\n--{B}--"),
                E::MissingContentRange { offset: 17 },
            ),
            (
                "two Content-Ranges",
                format!("--{B}\r\n{cr}\r\n{cr}\r\n\r\nabc\r\n--{B}--"),
                E::DuplicateContentRange { offset: 17 },
            ),
            (
                "bad Content-Range",
                format!("--{B}\r\nContent-Range: bytes 2-0/3\r\n\r\nabc\r\n--{B}--"),
                E::InvalidContentRange {
                    value: "bytes 2-0/3".into(),
                    offset: 17,
                },
            ),
            (
                "unsatisfied part",
                format!("--{B}\r\nContent-Range: bytes */3\r\n\r\n\r\n--{B}--"),
                E::InvalidContentRange {
                    value: "bytes */3".into(),
                    offset: 17,
                },
            ),
            (
                "header without colon",
                format!("--{B}\r\n{cr}\r\nbogus\r\n\r\nabc\r\n--{B}--"),
                E::MalformedHeader {
                    line: "bogus".into(),
                    offset: 17,
                },
            ),
            (
                "folded header",
                format!("--{B}\r\n{cr}\r\n continued\r\n\r\nabc\r\n--{B}--"),
                E::MalformedHeader {
                    line: " continued".into(),
                    offset: 17,
                },
            ),
            (
                "space before colon",
                format!("--{B}\r\nContent-Range : bytes 0-2/3\r\n\r\nabc\r\n--{B}--"),
                E::MalformedHeader {
                    line: "Content-Range : bytes 0-2/3".into(),
                    offset: 17,
                },
            ),
            (
                "bare LF in headers",
                format!("--{B}\r\nX: y\n{cr}\r\n\r\nabc\r\n--{B}--"),
                E::MalformedHeader {
                    line: "X: y\nContent-Range: bytes 0-2/3".into(),
                    offset: 17,
                },
            ),
            (
                "control character in a value",
                format!("--{B}\r\nX: a\u{1}b\r\n{cr}\r\n\r\nabc\r\n--{B}--"),
                E::MalformedHeader {
                    line: "X: a\u{1}b".into(),
                    offset: 17,
                },
            ),
            (
                "data longer than its Content-Range",
                format!("--{B}\r\n{cr}\r\n\r\nabcd\r\n--{B}--"),
                E::ExpectedBoundary { offset: 50 },
            ),
            (
                "data shorter than its Content-Range",
                format!("--{B}\r\n{cr}\r\n\r\nab\r\n--{B}--"),
                E::ExpectedBoundary { offset: 50 },
            ),
            (
                "wrong boundary after data",
                format!("--{B}\r\n{cr}\r\n\r\nabc\r\n--other--"),
                E::ExpectedBoundary { offset: 54 },
            ),
            (
                "boundary followed by junk",
                format!("--{B}\r\n{cr}\r\n\r\nabc\r\n--{B}x\r\n"),
                E::MalformedBoundaryLine { offset: 67 },
            ),
            (
                "first boundary followed by junk",
                format!("--{B}xyz\r\n"),
                E::MalformedBoundaryLine { offset: 15 },
            ),
            (
                "single dash close",
                format!("--{B}\r\n{cr}\r\n\r\nabc\r\n--{B}-x"),
                E::MalformedBoundaryLine { offset: 68 },
            ),
            (
                "boundary line ending in bare LF",
                format!("--{B}\n{cr}\r\n\r\nabc\r\n--{B}--"),
                E::MalformedBoundaryLine { offset: 15 },
            ),
            (
                "boundary line CR without LF",
                format!("--{B}\r{cr}"),
                E::MalformedBoundaryLine { offset: 16 },
            ),
            ("no parts", format!("--{B}--\r\n"), E::NoParts),
            (
                "parts disagree on the length",
                format!(
                    "--{B}\r\nContent-Range: bytes 0-0/3\r\n\r\na\r\n--{B}\r\nContent-Range: bytes 1-1/4\r\n\r\nb\r\n--{B}--"
                ),
                E::InconsistentLength { first: 3, other: 4 },
            ),
            (
                "preamble over the limit",
                "x".repeat(MAX_PREAMBLE_BYTES + 100),
                E::PreambleTooLong,
            ),
            (
                "padding over the limit",
                format!("--{B}{}\r\n", " ".repeat(MAX_PADDING + 1)),
                E::MalformedBoundaryLine {
                    offset: 15 + MAX_PADDING as u64,
                },
            ),
        ];
        for (name, body, expected) in cases {
            assert_eq!(parse(body.as_bytes()), Err(expected.clone()), "{name}");
            let cuts: Vec<usize> = (0..body.len()).collect();
            assert_eq!(
                parse_split(
                    &mut MultipartParser::new(B).unwrap(),
                    body.as_bytes(),
                    &cuts
                ),
                Err(expected),
                "{name} bytewise"
            );
        }
    }

    #[test]
    fn header_sections_over_the_limit_are_refused_without_buffering_more() {
        let body = format!("--{B}\r\nX-Big: {}\r\n\r\n", "a".repeat(10_000));
        let mut parser = MultipartParser::new(B).unwrap().with_max_header_bytes(512);
        let err = parser.feed(body.as_bytes()).unwrap_err();
        assert_eq!(
            err,
            MultipartError::HeadersTooLarge {
                offset: 17,
                limit: 512
            }
        );
        assert_eq!(parser.buffered_len(), 0);
        // The parser stays failed.
        assert_eq!(parser.feed(b"more"), Err(err.clone()));
        assert_eq!(parser.finish(), Err(err));
    }

    #[test]
    fn next_event_consumes_input_incrementally() {
        let body = go_style(&[(0, b"abc")], 3);
        let mut parser = MultipartParser::new(B).unwrap();
        let mut input = &body[..];
        let mut events = Vec::new();
        while let Some(event) = parser.next_event(&mut input).unwrap() {
            events.push(event);
        }
        assert!(input.is_empty());
        assert!(parser.is_done());
        assert_eq!(events.len(), 4);
        assert_eq!(events[1], Event::Data(b"abc"));
        // Data is borrowed from the input, not copied.
        match events[1] {
            Event::Data(d) => assert!(std::ptr::eq(
                d.as_ptr(),
                body[body.len() - 3 - 2 - B.len() - 6..].as_ptr()
            )),
            _ => unreachable!(),
        }
    }

    #[test]
    fn boundary_from_content_type_table() {
        let ok = |ct: &str, b: &str| {
            assert_eq!(boundary_from_content_type(ct), Ok(b.to_owned()), "{ct}")
        };
        ok(
            "multipart/byteranges; boundary=3d6b6a416f9b5",
            "3d6b6a416f9b5",
        );
        ok("Multipart/ByteRanges;BOUNDARY=abc", "abc");
        ok(
            "multipart/byteranges; boundary=\"gc0p4Jq0M2Yt08jU534c0p\"",
            "gc0p4Jq0M2Yt08jU534c0p",
        );
        ok("multipart/byteranges; boundary=\"a b:c\"", "a b:c");
        ok("multipart/byteranges; boundary=\"a\\:b\"", "a:b");
        assert_eq!(
            boundary_from_content_type("multipart/byteranges; boundary=\"a\\\"b\""),
            Err(MultipartError::InvalidBoundary {
                boundary: "a\"b".into()
            })
        );
        ok(
            "multipart/byteranges; charset=utf-8; boundary=xyz; other=\"q;r\"",
            "xyz",
        );
        ok("multipart/byteranges ;boundary = abc ", "abc");
        ok(
            &format!("multipart/byteranges; boundary={}", "b".repeat(70)),
            &"b".repeat(70),
        );
        let err = |ct: &str| boundary_from_content_type(ct).unwrap_err();
        assert_eq!(
            err("multipart/mixed; boundary=x"),
            MultipartError::NotByteranges {
                content_type: "multipart/mixed; boundary=x".into()
            }
        );
        assert_eq!(
            err("application/octet-stream"),
            MultipartError::NotByteranges {
                content_type: "application/octet-stream".into()
            }
        );
        assert_eq!(
            err("multipart/byteranges"),
            MultipartError::MissingBoundary {
                content_type: "multipart/byteranges".into()
            }
        );
        assert_eq!(
            err("multipart/byteranges; charset=x"),
            MultipartError::MissingBoundary {
                content_type: "multipart/byteranges; charset=x".into()
            }
        );
        assert_eq!(
            err("multipart/byteranges; boundary="),
            MultipartError::InvalidBoundary {
                boundary: String::new()
            }
        );
        assert_eq!(
            err("multipart/byteranges; boundary=\"abc \""),
            MultipartError::InvalidBoundary {
                boundary: "abc ".into()
            }
        );
        assert_eq!(
            err("multipart/byteranges; boundary=a@b"),
            MultipartError::InvalidBoundary {
                boundary: "a@b".into()
            }
        );
        assert_eq!(
            err(&format!(
                "multipart/byteranges; boundary={}",
                "b".repeat(71)
            )),
            MultipartError::InvalidBoundary {
                boundary: "b".repeat(71)
            }
        );
        for ct in [
            "multipart/byteranges; boundary=\"abc",
            "multipart/byteranges; boundary=\"abc\\",
            "multipart/byteranges; boundary",
            "multipart/byteranges; boundary=a; boundary=b",
            "multipart/byteranges; boundary=\"a\"junk",
        ] {
            assert_eq!(
                err(ct),
                MultipartError::MalformedContentType {
                    content_type: ct.into()
                },
                "{ct}"
            );
        }
        assert!(MultipartParser::from_content_type("multipart/byteranges; boundary=abc").is_ok());
    }

    fn body_strategy() -> impl Strategy<Value = Vec<u8>> {
        let part = (
            0u64..1000,
            proptest::collection::vec(any::<u8>(), 1..60),
            any::<bool>(),
        );
        (
            proptest::collection::vec(part, 1..5),
            proptest::collection::vec(any::<u8>(), 0..30),
            proptest::collection::vec(any::<u8>(), 0..30),
        )
            .prop_map(|(parts, preamble, epilogue)| {
                // Keep the preamble free of line starts so it cannot hold a boundary.
                let mut body: Vec<u8> = preamble
                    .into_iter()
                    .map(|b| if b == b'\n' || b == b'-' { b'.' } else { b })
                    .collect();
                for (offset, data, with_type) in parts {
                    body.extend_from_slice(format!("\r\n--{B}\r\n").as_bytes());
                    if with_type {
                        body.extend_from_slice(b"Content-Type: application/octet-stream\r\n");
                    }
                    body.extend_from_slice(
                        format!(
                            "Content-Range: bytes {offset}-{}/5000\r\n\r\n",
                            offset + data.len() as u64 - 1
                        )
                        .as_bytes(),
                    );
                    body.extend_from_slice(&data);
                }
                body.extend_from_slice(format!("\r\n--{B}--\r\n").as_bytes());
                body.extend_from_slice(&epilogue);
                body
            })
    }

    proptest! {
        #[test]
        fn splitting_the_body_anywhere_yields_identical_events(
            body in body_strategy(),
            cuts in proptest::collection::vec(any::<usize>(), 0..20),
        ) {
            let whole = parse(&body);
            prop_assert!(whole.is_ok(), "{:?}", whole);
            let split = parse_split(&mut MultipartParser::new(B).unwrap(), &body, &cuts);
            prop_assert_eq!(split, whole);
        }

        #[test]
        fn corrupting_a_body_gives_the_same_result_however_it_is_split(
            body in body_strategy(),
            at in any::<usize>(),
            byte in any::<u8>(),
            cuts in proptest::collection::vec(any::<usize>(), 0..20),
        ) {
            let mut body = body;
            let i = at % body.len();
            body[i] = byte;
            let whole = parse(&body);
            let split = parse_split(&mut MultipartParser::new(B).unwrap(), &body, &cuts);
            prop_assert_eq!(split, whole);
        }

        #[test]
        fn arbitrary_bytes_never_panic_nor_buffer_past_the_limit(
            body in proptest::collection::vec(any::<u8>(), 0..400),
            cuts in proptest::collection::vec(any::<usize>(), 0..10),
        ) {
            let mut parser = MultipartParser::new("b").unwrap().with_max_header_bytes(64);
            let mut prefixed = b"--b\r\n".to_vec();
            prefixed.extend_from_slice(&body);
            let _ = parse_split(&mut parser, &prefixed, &cuts);
            prop_assert!(parser.buffered_len() <= 64);
        }

        #[test]
        fn arbitrary_content_types_never_panic(ct in "\\PC{0,80}") {
            let _ = boundary_from_content_type(&ct);
        }
    }
}
