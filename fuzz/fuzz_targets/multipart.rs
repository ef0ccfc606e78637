//! `MultipartParser` on arbitrary bodies split at fuzzer-chosen points: never panics, and gives
//! the same parts, the same data bytes, the same error and the same end state as when the body
//! is fed whole.
//!
//! Input layout: byte 0 picks the boundary and the header limit, byte 1 the number of split
//! points (up to 15), then two bytes per split point, then the body.
#![no_main]

use hoist_registry::multipart::{Event, MultipartError, MultipartParser, Part};
use libfuzzer_sys::fuzz_target;

const BOUNDARIES: [&str; 4] = ["b", "3d6b6a416f9b5", "--", "a b=c?"];

/// What one run of the parser produced, with data slices merged so that runs over different
/// splits compare equal.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Start(Part),
    Data(Vec<u8>),
    End,
    Done,
}

fn run(parser: &mut MultipartParser, pieces: &[&[u8]]) -> (Vec<Seen>, Result<(), MultipartError>) {
    let mut seen = Vec::new();
    for piece in pieces {
        let mut input: &[u8] = piece;
        loop {
            match parser.next_event(&mut input) {
                Ok(None) => break,
                Ok(Some(Event::Data(data))) => match seen.last_mut() {
                    Some(Seen::Data(all)) => all.extend_from_slice(data),
                    _ => seen.push(Seen::Data(data.to_vec())),
                },
                Ok(Some(Event::PartStart(part))) => seen.push(Seen::Start(part)),
                Ok(Some(Event::PartEnd)) => seen.push(Seen::End),
                Ok(Some(Event::Done)) => seen.push(Seen::Done),
                Err(e) => return (seen, Err(e)),
            }
        }
        assert!(input.is_empty(), "next_event returned None with input left");
    }
    let end = parser.finish();
    (seen, end)
}

fuzz_target!(|data: &[u8]| {
    let [selector, count, rest @ ..] = data else {
        return;
    };
    let splits_len = usize::from(count % 16) * 2;
    if rest.len() < splits_len {
        return;
    }
    let (splits, body) = rest.split_at(splits_len);
    let new_parser = || {
        let parser = MultipartParser::new(BOUNDARIES[usize::from(selector % 4)])
            .expect("the boundaries are valid");
        if selector & 0x80 != 0 {
            parser.with_max_header_bytes(64)
        } else {
            parser
        }
    };

    let mut points: Vec<usize> = splits
        .chunks_exact(2)
        .map(|p| usize::from(u16::from_le_bytes([p[0], p[1]])) % (body.len() + 1))
        .collect();
    points.sort_unstable();
    let mut pieces = Vec::new();
    let mut from = 0;
    for point in points {
        pieces.push(&body[from..point]);
        from = point;
    }
    pieces.push(&body[from..]);

    let whole = run(&mut new_parser(), &[body]);
    let split = run(&mut new_parser(), &pieces);
    assert_eq!(whole, split, "split at {pieces:?}");
});
