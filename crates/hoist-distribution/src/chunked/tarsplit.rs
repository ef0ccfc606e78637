//! The tar-split format: a tar stream's headers and padding verbatim, with each entry's name,
//! size and CRC-64 (ISO polynomial), as JSON lines.
//!
//! Each line is `{"type":1,"name":…,"size":…,"payload":base64(crc64 big-endian),"position":n}`
//! for an entry (size 0 and a null payload for entries without content) or
//! `{"type":2,"payload":base64(raw bytes),"position":n}` for the raw bytes before it (padding
//! of the previous file, extension headers, the header) and, last, for the end of the archive.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};

use super::error::{ChunkedError, Result};

/// tar-split's entry type of a file.
const FILE_TYPE: i64 = 1;
/// tar-split's entry type of raw bytes.
const SEGMENT_TYPE: i64 = 2;

/// One line of a tar-split.
#[derive(Debug, Serialize, Deserialize)]
struct Line {
    #[serde(rename = "type")]
    kind: i64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name_raw: Option<String>,
    #[serde(default, skip_serializing_if = "is_zero")]
    size: i64,
    payload: Option<String>,
    position: i64,
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

/// A decoded tar-split item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Item {
    /// Raw bytes of the tar stream.
    Segment(Vec<u8>),
    /// An entry's content: its name and size.
    File { name: Vec<u8>, size: u64 },
}

/// Writes tar-split lines.
pub(crate) struct Writer {
    out: Vec<u8>,
    position: i64,
}

impl Writer {
    pub(crate) fn new() -> Self {
        Writer {
            out: Vec::new(),
            position: 0,
        }
    }

    fn push(&mut self, line: &Line) {
        // Serializing a struct of strings and integers cannot fail.
        if let Ok(text) = serde_json::to_vec(line) {
            self.out.extend_from_slice(&text);
            self.out.push(b'\n');
        }
        self.position += 1;
    }

    /// Raw bytes of the stream (skipped when empty).
    pub(crate) fn segment(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let line = Line {
            kind: SEGMENT_TYPE,
            name: String::new(),
            name_raw: None,
            size: 0,
            payload: Some(BASE64.encode(bytes)),
            position: self.position,
        };
        self.push(&line);
    }

    /// An entry, with the CRC-64 of its content when it has some.
    pub(crate) fn file(&mut self, name: &[u8], size: u64, crc: Option<u64>) {
        let (name, name_raw) = match std::str::from_utf8(name) {
            Ok(text) => (text.to_owned(), None),
            Err(_) => (String::new(), Some(BASE64.encode(name))),
        };
        let line = Line {
            kind: FILE_TYPE,
            name,
            name_raw,
            size: i64::try_from(size).unwrap_or(i64::MAX),
            payload: crc.map(|c| BASE64.encode(c.to_be_bytes())),
            position: self.position,
        };
        self.push(&line);
    }

    /// The JSON lines written.
    pub(crate) fn finish(self) -> Vec<u8> {
        self.out
    }
}

/// Decodes a tar-split's JSON lines.
pub(crate) fn parse(text: &[u8]) -> Result<Vec<Item>> {
    let mut items = Vec::new();
    for (n, line) in text.split(|&b| b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let line: Line = serde_json::from_slice(line)
            .map_err(|e| ChunkedError::bad_tar_split(format!("line {}: {e}", n + 1)))?;
        match line.kind {
            SEGMENT_TYPE => {
                let payload = line.payload.unwrap_or_default();
                let bytes = BASE64.decode(payload.as_bytes()).map_err(|e| {
                    ChunkedError::bad_tar_split(format!("line {}: payload: {e}", n + 1))
                })?;
                items.push(Item::Segment(bytes));
            }
            FILE_TYPE => {
                let name = match line.name_raw {
                    Some(raw) => BASE64.decode(raw.as_bytes()).map_err(|e| {
                        ChunkedError::bad_tar_split(format!("line {}: name_raw: {e}", n + 1))
                    })?,
                    None => line.name.into_bytes(),
                };
                let size = u64::try_from(line.size).map_err(|_| {
                    ChunkedError::bad_tar_split(format!("line {}: negative size", n + 1))
                })?;
                items.push(Item::File { name, size });
            }
            other => {
                return Err(ChunkedError::bad_tar_split(format!(
                    "line {}: unknown entry type {other}",
                    n + 1
                )));
            }
        }
    }
    Ok(items)
}

/// CRC-64 with the ISO polynomial, as tar-split records it.
#[derive(Clone)]
pub(crate) struct Crc64 {
    state: u64,
}

const fn crc64_table() -> [u64; 256] {
    const POLY: u64 = 0xD800_0000_0000_0000;
    let mut table = [0u64; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u64;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ POLY
            } else {
                crc >> 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
}

static CRC64_TABLE: [u64; 256] = crc64_table();

impl Crc64 {
    pub(crate) fn new() -> Self {
        Crc64 { state: 0 }
    }

    pub(crate) fn update(&mut self, bytes: &[u8]) {
        let mut crc = !self.state;
        for &b in bytes {
            crc = CRC64_TABLE[usize::from((crc as u8) ^ b)] ^ (crc >> 8);
        }
        self.state = !crc;
    }

    pub(crate) fn value(&self) -> u64 {
        self.state
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc64_iso_matches_the_reference_check_value() {
        // The CRC-64/GO-ISO check value of "123456789".
        let mut crc = Crc64::new();
        crc.update(b"1234");
        crc.update(b"56789");
        assert_eq!(crc.value(), 0xb909_56c7_75a4_1001);
    }

    #[test]
    fn lines_round_trip_with_raw_names() {
        let mut w = Writer::new();
        w.segment(b"header");
        w.file(b"a", 3, Some(7));
        w.file(&[0xff, 0x00], 0, None);
        w.segment(b"");
        w.segment(&[0u8; 1024]);
        let items = parse(&w.finish()).unwrap();
        assert_eq!(
            items,
            vec![
                Item::Segment(b"header".to_vec()),
                Item::File {
                    name: b"a".to_vec(),
                    size: 3
                },
                Item::File {
                    name: vec![0xff, 0],
                    size: 0
                },
                Item::Segment(vec![0u8; 1024]),
            ]
        );
    }
}
