//! Tar headers: read verbatim from a stream (with their meaning), and written canonically from
//! TOC fields.

use std::collections::BTreeMap;
use std::io::{self, Read};

use super::error::{ChunkedError, Result};
use super::toc::{EntryKind, TocEntry};

/// The tar block size.
pub(crate) const BLOCK: usize = 512;
/// The most bytes of extension data (PAX records, GNU long names) hoist accepts per entry.
const MAX_EXTENSION: u64 = 1 << 20;
/// The most bytes after the end-of-archive marker hoist keeps (record padding).
const MAX_TRAILER: u64 = 1 << 20;

/// One entry's header as read: its raw bytes and what they say.
#[derive(Debug)]
pub(crate) struct Header {
    /// Every byte of the header: extension entries (PAX, GNU long names) and the header block.
    pub raw: Vec<u8>,
    /// The name as raw bytes.
    pub raw_name: Vec<u8>,
    /// The entry's metadata (no digest or chunks yet).
    pub entry: TocEntry,
    /// How many content bytes follow (then padding to a block).
    pub data_size: u64,
}

/// What comes next in a tar stream.
#[derive(Debug)]
pub(crate) enum Next {
    /// An entry.
    Header(Box<Header>),
    /// The end: the end-of-archive blocks and whatever follows them, verbatim.
    End(Vec<u8>),
}

/// Bytes of padding after `size` bytes of content.
pub(crate) fn padding(size: u64) -> usize {
    ((BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64) as usize
}

/// Reads until `buf` is full or the stream ends; returns how many bytes were read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

fn bad(reason: impl Into<String>) -> ChunkedError {
    ChunkedError::BadTar {
        reason: reason.into(),
    }
}

/// Parses a numeric header field: octal (NUL/space terminated) or base-256.
fn parse_number(field: &[u8]) -> Result<u64> {
    if let Some(&first) = field.first()
        && first & 0x80 != 0
    {
        if first & 0x40 != 0 {
            return Err(bad("negative base-256 number in a tar header"));
        }
        let mut value: u64 = u64::from(first & 0x3f);
        for &b in &field[1..] {
            value = value
                .checked_mul(256)
                .and_then(|v| v.checked_add(u64::from(b)))
                .ok_or_else(|| bad("base-256 number overflows"))?;
        }
        return Ok(value);
    }
    let text: Vec<u8> = field
        .iter()
        .copied()
        .skip_while(|&b| b == b' ' || b == 0)
        .take_while(|&b| b != b' ' && b != 0)
        .collect();
    if text.is_empty() {
        return Ok(0);
    }
    let text = std::str::from_utf8(&text).map_err(|_| bad("non-ASCII number in a tar header"))?;
    u64::from_str_radix(text, 8).map_err(|_| bad(format!("{text:?} is not an octal number")))
}

fn cstr(field: &[u8]) -> &[u8] {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    &field[..end]
}

/// Reads extension data (`size` bytes plus padding), appending them to `raw`.
fn read_extension(r: &mut impl Read, size: u64, raw: &mut Vec<u8>) -> Result<Vec<u8>> {
    if size > MAX_EXTENSION {
        return Err(bad(format!(
            "tar extension header of {size} bytes (at most {MAX_EXTENSION})"
        )));
    }
    let total = size as usize + padding(size);
    let start = raw.len();
    raw.resize(start + total, 0);
    if read_full(r, &mut raw[start..])? != total {
        return Err(bad("the tar stream ends inside an extension header"));
    }
    Ok(raw[start..start + size as usize].to_vec())
}

/// Parses PAX records (`LEN key=value\n`).
fn parse_pax(data: &[u8]) -> Result<Vec<(String, Vec<u8>)>> {
    let mut records = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        if rest.iter().all(|&b| b == 0) {
            break;
        }
        let space = rest
            .iter()
            .position(|&b| b == b' ')
            .ok_or_else(|| bad("malformed PAX record"))?;
        let len: usize = std::str::from_utf8(&rest[..space])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("malformed PAX record length"))?;
        if len <= space + 1 || len > rest.len() || rest[len - 1] != b'\n' {
            return Err(bad("malformed PAX record"));
        }
        let record = &rest[space + 1..len - 1];
        let eq = record
            .iter()
            .position(|&b| b == b'=')
            .ok_or_else(|| bad("PAX record without '='"))?;
        let key = String::from_utf8_lossy(&record[..eq]).into_owned();
        records.push((key, record[eq + 1..].to_vec()));
        rest = &rest[len..];
    }
    Ok(records)
}

/// Reads the next header (with its extension entries) from a tar stream positioned at a
/// header; the caller then reads `data_size` bytes of content and their padding.
pub(crate) fn read_header(r: &mut impl Read) -> Result<Next> {
    let mut raw: Vec<u8> = Vec::new();
    let mut long_name: Option<Vec<u8>> = None;
    let mut long_link: Option<Vec<u8>> = None;
    let mut pax: Vec<(String, Vec<u8>)> = Vec::new();
    loop {
        let mut block = [0u8; BLOCK];
        let n = read_full(r, &mut block)?;
        if n == 0 && raw.is_empty() {
            return Ok(Next::End(Vec::new()));
        }
        if n != BLOCK {
            return Err(bad("the tar stream ends inside a header"));
        }
        if block.iter().all(|&b| b == 0) {
            if !raw.is_empty() {
                return Err(bad("end of archive right after an extension header"));
            }
            let mut rest = block.to_vec();
            r.take(MAX_TRAILER + 1).read_to_end(&mut rest)?;
            if rest.len() as u64 > MAX_TRAILER {
                return Err(bad("more than 1 MiB of data after the end of the archive"));
            }
            return Ok(Next::End(rest));
        }
        let stored: u64 = parse_number(&block[148..156])?;
        let sum: u64 = block
            .iter()
            .enumerate()
            .map(|(i, &b)| {
                if (148..156).contains(&i) {
                    32
                } else {
                    u64::from(b)
                }
            })
            .sum();
        if stored != sum {
            return Err(bad("tar header checksum mismatch"));
        }
        raw.extend_from_slice(&block);
        let flag = block[156];
        let size = parse_number(&block[124..136])?;
        match flag {
            b'x' => {
                let data = read_extension(r, size, &mut raw)?;
                pax.extend(parse_pax(&data)?);
                continue;
            }
            b'g' => {
                read_extension(r, size, &mut raw)?;
                continue;
            }
            b'L' => {
                let data = read_extension(r, size, &mut raw)?;
                long_name = Some(cstr(&data).to_vec());
                continue;
            }
            b'K' => {
                let data = read_extension(r, size, &mut raw)?;
                long_link = Some(cstr(&data).to_vec());
                continue;
            }
            _ => {}
        }
        let ustar = &block[257..263] == b"ustar\0";
        let mut name = cstr(&block[0..100]).to_vec();
        if ustar {
            let prefix = cstr(&block[345..500]);
            if !prefix.is_empty() {
                let mut full = prefix.to_vec();
                full.push(b'/');
                full.extend_from_slice(&name);
                name = full;
            }
        }
        if let Some(long) = long_name {
            name = long;
        }
        let mut link = cstr(&block[157..257]).to_vec();
        if let Some(long) = long_link {
            link = long;
        }
        let kind = match flag {
            b'0' | 0 | b'7' => EntryKind::Regular,
            b'1' => EntryKind::Hardlink,
            b'2' => EntryKind::Symlink,
            b'3' => EntryKind::CharDevice,
            b'4' => EntryKind::BlockDevice,
            b'5' => EntryKind::Directory,
            b'6' => EntryKind::Fifo,
            other => {
                return Err(ChunkedError::UnsupportedEntry {
                    name: String::from_utf8_lossy(&name).into_owned(),
                    kind: char::from(other),
                });
            }
        };
        let mut entry = TocEntry {
            name: String::new(),
            kind,
            size,
            mode: u32::try_from(parse_number(&block[100..108])?)
                .map_err(|_| bad("tar mode out of range"))?,
            uid: parse_number(&block[108..116])?,
            gid: parse_number(&block[116..124])?,
            user_name: String::from_utf8_lossy(cstr(&block[265..297])).into_owned(),
            group_name: String::from_utf8_lossy(cstr(&block[297..329])).into_owned(),
            mtime: i64::try_from(parse_number(&block[136..148])?).unwrap_or(i64::MAX),
            link_name: String::new(),
            dev_major: parse_number(&block[329..337])?,
            dev_minor: parse_number(&block[337..345])?,
            xattrs: BTreeMap::new(),
            digest: None,
            offset: 0,
            end_offset: 0,
            chunks: Vec::new(),
        };
        for (key, value) in pax {
            let text = || String::from_utf8_lossy(&value).into_owned();
            let number = || -> Result<u64> {
                text()
                    .parse()
                    .map_err(|_| bad(format!("PAX record {key} is not a number")))
            };
            match key.as_str() {
                "path" => name = value.clone(),
                "linkpath" => link = value.clone(),
                "size" => entry.size = number()?,
                "uid" => entry.uid = number()?,
                "gid" => entry.gid = number()?,
                "uname" => entry.user_name = text(),
                "gname" => entry.group_name = text(),
                "mtime" => {
                    let t = text();
                    let whole = t.split('.').next().unwrap_or("");
                    entry.mtime = whole
                        .parse()
                        .map_err(|_| bad("PAX mtime is not a number"))?;
                }
                _ => {
                    if let Some(attr) = key.strip_prefix("SCHILY.xattr.") {
                        entry.xattrs.insert(attr.to_owned(), value.clone());
                    }
                }
            }
        }
        let data_size = if kind == EntryKind::Regular {
            entry.size
        } else {
            entry.size = 0;
            0
        };
        entry.name = String::from_utf8_lossy(&name).into_owned();
        entry.link_name = String::from_utf8_lossy(&link).into_owned();
        return Ok(Next::Header(Box::new(Header {
            raw,
            raw_name: name,
            entry,
            data_size,
        })));
    }
}

fn put_str(block: &mut [u8], at: usize, len: usize, value: &[u8]) {
    let n = value.len().min(len);
    block[at..at + n].copy_from_slice(&value[..n]);
}

fn put_octal(block: &mut [u8], at: usize, len: usize, value: u64) {
    let text = format!("{value:0width$o}", width = len - 1);
    put_str(block, at, len - 1, text.as_bytes());
}

fn fits_octal(value: u64, len: usize) -> bool {
    value < 1u64 << (3 * (len as u32 - 1))
}

/// Splits a name into ustar prefix and name, if it fits.
fn split_ustar(name: &[u8]) -> Option<(&[u8], &[u8])> {
    if name.len() <= 100 {
        return Some((&[], name));
    }
    if name.len() > 256 {
        return None;
    }
    (0..name.len()).rev().find_map(|i| {
        (name[i] == b'/' && i <= 155 && name.len() - i - 1 <= 100 && i > 0)
            .then(|| (&name[..i], &name[i + 1..]))
    })
}

fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    // The length counts itself: find the fixed point.
    let body = key.len() + value.len() + 3;
    let mut len = body + body.to_string().len();
    if len.to_string().len() + body != len {
        len = body + len.to_string().len();
    }
    let mut out = format!("{len} {key}=").into_bytes();
    out.extend_from_slice(value);
    out.push(b'\n');
    out
}

fn header_block(entry: &TocEntry, name: &[u8], prefix: &[u8], link: &[u8], flag: u8) -> Vec<u8> {
    let mut block = vec![0u8; BLOCK];
    put_str(&mut block, 0, 100, name);
    put_octal(&mut block, 100, 8, u64::from(entry.mode) & 0o7777777);
    let clamp = |v: u64, len: usize| if fits_octal(v, len) { v } else { 0 };
    put_octal(&mut block, 108, 8, clamp(entry.uid, 8));
    put_octal(&mut block, 116, 8, clamp(entry.gid, 8));
    put_octal(&mut block, 124, 12, clamp(entry.size, 12));
    put_octal(
        &mut block,
        136,
        12,
        clamp(u64::try_from(entry.mtime).unwrap_or(0), 12),
    );
    block[156] = flag;
    put_str(&mut block, 157, 100, link);
    block[257..263].copy_from_slice(b"ustar\0");
    block[263..265].copy_from_slice(b"00");
    if entry.user_name.len() <= 32 {
        put_str(&mut block, 265, 32, entry.user_name.as_bytes());
    }
    if entry.group_name.len() <= 32 {
        put_str(&mut block, 297, 32, entry.group_name.as_bytes());
    }
    put_octal(&mut block, 329, 8, clamp(entry.dev_major, 8));
    put_octal(&mut block, 337, 8, clamp(entry.dev_minor, 8));
    put_str(&mut block, 345, 155, prefix);
    block[148..156].fill(b' ');
    let sum: u64 = block.iter().map(|&b| u64::from(b)).sum();
    let text = format!("{sum:06o}\0 ");
    block[148..156].copy_from_slice(text.as_bytes());
    block
}

/// The canonical header hoist writes for an entry (and regenerates when rebuilding eStargz):
/// a ustar header, preceded by a PAX header when a field does not fit ustar (long or non-ASCII
/// names, large numbers, long user names, extended attributes). Times are whole seconds.
pub(crate) fn canonical_header(entry: &TocEntry) -> Vec<u8> {
    let name = entry.name.as_bytes();
    let link = entry.link_name.as_bytes();
    let mut records: Vec<u8> = Vec::new();
    let ascii = |b: &[u8]| b.iter().all(|&c| c.is_ascii() && c != 0);
    let split = if ascii(name) { split_ustar(name) } else { None };
    if split.is_none() {
        records.extend(pax_record("path", name));
    }
    if link.len() > 100 || !ascii(link) {
        records.extend(pax_record("linkpath", link));
    }
    let numbers = [
        ("size", entry.size, 12),
        ("uid", entry.uid, 8),
        ("gid", entry.gid, 8),
    ];
    for (key, value, len) in numbers {
        if !fits_octal(value, len) {
            records.extend(pax_record(key, value.to_string().as_bytes()));
        }
    }
    if entry.mtime < 0 || !fits_octal(entry.mtime as u64, 12) {
        records.extend(pax_record("mtime", entry.mtime.to_string().as_bytes()));
    }
    if entry.user_name.len() > 32 || !ascii(entry.user_name.as_bytes()) {
        records.extend(pax_record("uname", entry.user_name.as_bytes()));
    }
    if entry.group_name.len() > 32 || !ascii(entry.group_name.as_bytes()) {
        records.extend(pax_record("gname", entry.group_name.as_bytes()));
    }
    for (key, value) in &entry.xattrs {
        records.extend(pax_record(&format!("SCHILY.xattr.{key}"), value));
    }
    let (prefix, short) = split.unwrap_or((&[], &name[..name.len().min(100)]));
    let short_link = &link[..link.len().min(100)];
    let mut out = Vec::new();
    if !records.is_empty() {
        let pax_entry = TocEntry {
            name: String::new(),
            size: records.len() as u64,
            mode: 0o644,
            uid: 0,
            gid: 0,
            user_name: String::new(),
            group_name: String::new(),
            mtime: 0,
            link_name: String::new(),
            dev_major: 0,
            dev_minor: 0,
            xattrs: BTreeMap::new(),
            ..entry.clone()
        };
        out.extend(header_block(&pax_entry, b"././@PaxHeader", &[], &[], b'x'));
        let pad = padding(records.len() as u64);
        out.extend_from_slice(&records);
        out.resize(out.len() + pad, 0);
    }
    out.extend(header_block(
        entry,
        short,
        prefix,
        short_link,
        entry.kind.tar_flag(),
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, kind: EntryKind, size: u64) -> TocEntry {
        TocEntry {
            name: name.to_owned(),
            kind,
            size,
            mode: 0o755,
            uid: 1000,
            gid: 1000,
            user_name: "user".to_owned(),
            group_name: "group".to_owned(),
            mtime: 1_700_000_000,
            link_name: String::new(),
            dev_major: 0,
            dev_minor: 0,
            xattrs: BTreeMap::new(),
            digest: None,
            offset: 0,
            end_offset: 0,
            chunks: Vec::new(),
        }
    }

    #[test]
    fn canonical_headers_read_back_as_the_same_entry() {
        let mut long = entry(&"x/".repeat(150), EntryKind::Directory, 0);
        long.xattrs
            .insert("user.k".to_owned(), b"v\0binary\n".to_vec());
        long.link_name = "l".repeat(120);
        long.uid = 1 << 40;
        let cases = [
            entry("a/b.txt", EntryKind::Regular, 5),
            entry(
                &format!("{}/{}", "p".repeat(150), "n".repeat(99)),
                EntryKind::Regular,
                0,
            ),
            entry("ünïcode", EntryKind::Symlink, 0),
            long,
        ];
        for case in cases {
            let bytes = canonical_header(&case);
            assert_eq!(bytes.len() % BLOCK, 0);
            let Next::Header(h) = read_header(&mut bytes.as_slice()).unwrap() else {
                panic!("no header")
            };
            assert_eq!(h.entry, case);
            assert_eq!(h.raw, bytes);
        }
    }

    #[test]
    fn a_corrupt_header_checksum_is_refused() {
        let mut bytes = canonical_header(&entry("a", EntryKind::Regular, 0));
        bytes[0] = b'b';
        assert!(matches!(
            read_header(&mut bytes.as_slice()),
            Err(ChunkedError::BadTar { .. })
        ));
    }
}
