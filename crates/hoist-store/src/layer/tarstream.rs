//! A streaming tar reader that hashes every byte it consumes (the DiffID) and bounds everything
//! a hostile archive could make it buffer.
//!
//! It reads the formats container layers use, with the semantics of Go's `archive/tar` (what
//! Docker, containerd and umoci read layers with): ustar, GNU (long names `L`, long links `K`, old
//! sparse files `S`), and PAX (`x` records overriding path, linkpath, size, uid, gid, mtime, atime,
//! `SCHILY.xattr.*`, and the GNU sparse formats 0.0, 0.1 and 1.0). PAX global headers (`g`) are
//! read and ignored. For header-only entry types (links, devices, directories, fifos) the size
//! field does not frame any data, as in Go.
//!
//! Bounds: extension headers (`x`, `g`, `L`, `K`) are at most [`MAX_SPECIAL_SIZE`] bytes, a sparse
//! map has at most [`MAX_SPARSE_ENTRIES`] fragments, and the whole stream, including whatever
//! follows the end-of-archive marker, is limited to the caller's byte limit.

use std::io::{BufReader, Read};

use sha2::{Digest as _, Sha256};
use tar::{GnuExtSparseHeader, Header};

use super::error::{LayerError, Result};
use super::path::display_name;
use super::sys::Timestamp;

/// Largest PAX header or GNU long name/link accepted (as Go's `archive/tar`).
pub(crate) const MAX_SPECIAL_SIZE: u64 = 1 << 20;
/// Most fragments accepted in one sparse file's map.
pub(crate) const MAX_SPARSE_ENTRIES: usize = 1 << 20;
const BLOCK: u64 = 512;
const READ_BUFFER: usize = 1 << 20;

/// `(offset, length)` fragments of a sparse file, in file order.
pub(crate) type SparseMap = Vec<(u64, u64)>;
/// PAX `key=value` records, in archive order.
type PaxRecords = Vec<(Vec<u8>, Vec<u8>)>;

/// The type of a tar entry, as far as extraction cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EntryKind {
    File,
    Dir,
    Symlink,
    HardLink,
    CharDevice,
    BlockDevice,
    Fifo,
}

/// One entry's header, with every extension applied.
#[derive(Debug, Clone)]
pub(crate) struct TarEntry {
    /// The raw entry name (GNU long name > PAX path > header).
    pub name: Vec<u8>,
    pub kind: EntryKind,
    /// Raw link target for symlinks and hard links.
    pub link: Vec<u8>,
    /// Permission bits (`& 0o7777`).
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: Timestamp,
    pub atime: Option<Timestamp>,
    /// Logical file size (the real size for sparse files); 0 for non-files.
    pub size: u64,
    pub dev_major: u32,
    pub dev_minor: u32,
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// For sparse files: the `(offset, length)` fragments, whose bytes follow in order as data.
    pub sparse: Option<SparseMap>,
}

/// A tar stream being read: entries, their data, and the running DiffID.
pub(crate) struct TarReader<R: Read> {
    inner: BufReader<R>,
    hasher: Sha256,
    consumed: u64,
    limit: u64,
    /// Stored bytes of the current entry's data not read yet.
    remaining: u64,
    /// Padding after the current entry's data.
    padding: u64,
    /// Display name of the current entry, for errors.
    current: Option<String>,
    ended: bool,
    scratch: Vec<u8>,
}

fn malformed(entry: Option<&str>, reason: impl Into<String>) -> LayerError {
    LayerError::MalformedArchive {
        entry: entry.map(str::to_owned),
        reason: reason.into(),
    }
}

impl<R: Read> TarReader<R> {
    /// Reads `reader` as a tar stream; at most `limit` bytes will be consumed from it.
    pub(crate) fn new(reader: R, limit: u64) -> Self {
        Self {
            inner: BufReader::with_capacity(READ_BUFFER, reader),
            hasher: Sha256::new(),
            consumed: 0,
            limit,
            remaining: 0,
            padding: 0,
            current: None,
            ended: false,
            scratch: vec![0; 64 * 1024],
        }
    }

    /// Reads from the underlying stream, hashing and counting; 0 means EOF.
    fn read_some(&mut self, buf: &mut [u8]) -> Result<usize> {
        let n = loop {
            match self.inner.read(buf) {
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(source) => return Err(LayerError::Source { source }),
            }
        };
        self.hasher.update(&buf[..n]);
        self.consumed += n as u64;
        if self.consumed > self.limit {
            return Err(LayerError::LimitExceeded {
                limit: self.limit,
                what: "bytes",
            });
        }
        Ok(n)
    }

    /// Fills `buf` completely; `Ok(false)` on a clean EOF before the first byte.
    fn read_block(&mut self, buf: &mut [u8]) -> Result<bool> {
        let mut filled = 0;
        while filled < buf.len() {
            let n = self.read_some(&mut buf[filled..])?;
            if n == 0 {
                if filled == 0 {
                    return Ok(false);
                }
                return Err(malformed(
                    self.current.as_deref(),
                    "archive ends inside a header block",
                ));
            }
            filled += n;
        }
        Ok(true)
    }

    /// Reads and discards `n` bytes (still hashed).
    fn skip(&mut self, mut n: u64) -> Result<()> {
        let mut scratch = std::mem::take(&mut self.scratch);
        let result = (|| {
            while n > 0 {
                let want = usize::try_from(n.min(scratch.len() as u64)).unwrap_or(scratch.len());
                let got = self.read_some(&mut scratch[..want])?;
                if got == 0 {
                    return Err(malformed(
                        self.current.as_deref(),
                        "archive ends inside an entry",
                    ));
                }
                n -= got as u64;
            }
            Ok(())
        })();
        self.scratch = scratch;
        result
    }

    /// Reads the whole data of an extension entry of `size` bytes (bounded) plus its padding.
    fn read_special(&mut self, size: u64, what: &str) -> Result<Vec<u8>> {
        if size > MAX_SPECIAL_SIZE {
            return Err(malformed(
                self.current.as_deref(),
                format!("{what} of {size} bytes is over the {MAX_SPECIAL_SIZE}-byte limit"),
            ));
        }
        let len = usize::try_from(size).unwrap_or(0);
        let mut data = vec![0u8; len];
        let mut filled = 0;
        while filled < len {
            let n = self.read_some(&mut data[filled..])?;
            if n == 0 {
                return Err(malformed(
                    self.current.as_deref(),
                    format!("archive ends inside a {what}"),
                ));
            }
            filled += n;
        }
        self.skip(padding(size))?;
        Ok(data)
    }

    /// Reads the next entry's header (with its extensions); `None` at the end of the archive.
    ///
    /// Unread data of the previous entry is skipped first.
    pub(crate) fn next_entry(&mut self) -> Result<Option<TarEntry>> {
        if self.ended {
            return Ok(None);
        }
        self.skip(self.remaining + self.padding)?;
        self.remaining = 0;
        self.padding = 0;
        self.current = None;

        let mut pax: Option<PaxRecords> = None;
        let mut long_name: Option<Vec<u8>> = None;
        let mut long_link: Option<Vec<u8>> = None;
        let mut header = Header::new_old();
        loop {
            let pending = pax.is_some() || long_name.is_some() || long_link.is_some();
            if !self.read_block(header.as_mut_bytes())? {
                if pending {
                    return Err(malformed(None, "archive ends after an extension header"));
                }
                self.ended = true;
                return Ok(None);
            }
            if header.as_bytes().iter().all(|b| *b == 0) {
                // End of archive: a second zero block (or EOF) must follow.
                let mut second = [0u8; BLOCK as usize];
                if self.read_block(&mut second)? && second.iter().any(|b| *b != 0) {
                    return Err(malformed(
                        None,
                        "a single zero block is followed by more entries",
                    ));
                }
                if pending {
                    return Err(malformed(None, "archive ends after an extension header"));
                }
                self.ended = true;
                return Ok(None);
            }
            self.current = Some(match &long_name {
                Some(name) => display_name(name),
                None => display_name(&header.path_bytes()),
            });
            check_checksum(&header).map_err(|reason| malformed(self.current.as_deref(), reason))?;
            let size = numeric(&header.as_old().size, header.entry_size())
                .ok_or_else(|| malformed(self.current.as_deref(), "unreadable size field"))?;
            let type_flag = header.as_bytes()[156];
            match type_flag {
                b'x' => {
                    if pax.is_some() {
                        return Err(malformed(
                            self.current.as_deref(),
                            "two PAX headers describe one entry",
                        ));
                    }
                    let data = self.read_special(size, "PAX header")?;
                    pax =
                        Some(parse_pax(&data).map_err(|r| malformed(self.current.as_deref(), r))?);
                }
                b'g' => {
                    // Global PAX headers are ignored (as Docker does), but still bounded.
                    let data = self.read_special(size, "PAX global header")?;
                    parse_pax(&data).map_err(|r| malformed(self.current.as_deref(), r))?;
                }
                b'L' | b'K' => {
                    let slot = if type_flag == b'L' {
                        &mut long_name
                    } else {
                        &mut long_link
                    };
                    if slot.is_some() {
                        return Err(malformed(
                            self.current.as_deref(),
                            "two GNU long names describe one entry",
                        ));
                    }
                    let mut data = self.read_special(size, "GNU long name")?;
                    if let Some(nul) = data.iter().position(|b| *b == 0) {
                        data.truncate(nul);
                    }
                    if type_flag == b'L' {
                        long_name = Some(data);
                    } else {
                        long_link = Some(data);
                    }
                }
                _ => {
                    return self
                        .finish_header(&header, size, pax, long_name, long_link)
                        .map(Some);
                }
            }
        }
    }

    fn finish_header(
        &mut self,
        header: &Header,
        header_size: u64,
        pax: Option<PaxRecords>,
        long_name: Option<Vec<u8>>,
        long_link: Option<Vec<u8>>,
    ) -> Result<TarEntry> {
        let pax = Pax(pax.unwrap_or_default());
        let mut name = long_name
            .or_else(|| pax.get(b"path").map(<[u8]>::to_vec))
            .unwrap_or_else(|| header.path_bytes().into_owned());
        let link = long_link
            .or_else(|| pax.get(b"linkpath").map(<[u8]>::to_vec))
            .or_else(|| header.link_name_bytes().map(|l| l.into_owned()))
            .unwrap_or_default();
        if let Some(sparse_name) = pax.get(b"GNU.sparse.name") {
            name = sparse_name.to_vec();
        }
        let shown = display_name(&name);
        self.current = Some(shown.clone());
        let bad = |reason: &str| malformed(Some(&shown), reason);

        let type_flag = header.as_bytes()[156];
        let kind = match type_flag {
            b'0' | b'7' | b'S' => EntryKind::File,
            // Old tars mark directories with a trailing slash on a regular-file entry.
            0 if name.ends_with(b"/") => EntryKind::Dir,
            0 => EntryKind::File,
            b'1' => EntryKind::HardLink,
            b'2' => EntryKind::Symlink,
            b'3' => EntryKind::CharDevice,
            b'4' => EntryKind::BlockDevice,
            b'5' => EntryKind::Dir,
            b'6' => EntryKind::Fifo,
            other => {
                return Err(LayerError::UnsupportedEntryType {
                    entry: shown,
                    type_flag: char::from(other),
                });
            }
        };
        let stored_size = match pax.get(b"size") {
            Some(v) => parse_decimal(v).ok_or_else(|| bad("PAX size is not a number"))?,
            None => header_size,
        };
        let old = header.as_old();
        let mode = numeric(&old.mode, header.mode().map(u64::from))
            .ok_or_else(|| bad("unreadable mode field"))?;
        let mode = u32::try_from(mode & 0o7777).unwrap_or(0);
        let uid = match pax.get(b"uid") {
            Some(v) => parse_decimal(v).ok_or_else(|| bad("PAX uid is not a number"))?,
            None => numeric(&old.uid, header.uid()).ok_or_else(|| bad("unreadable uid field"))?,
        };
        let gid = match pax.get(b"gid") {
            Some(v) => parse_decimal(v).ok_or_else(|| bad("PAX gid is not a number"))?,
            None => numeric(&old.gid, header.gid()).ok_or_else(|| bad("unreadable gid field"))?,
        };
        let mtime = match pax.get(b"mtime") {
            Some(v) => parse_pax_time(v).ok_or_else(|| bad("PAX mtime is not a time"))?,
            None => Timestamp {
                sec: i64::try_from(
                    numeric(&old.mtime, header.mtime())
                        .ok_or_else(|| bad("unreadable mtime field"))?,
                )
                .unwrap_or(i64::MAX),
                nsec: 0,
            },
        };
        let atime = match pax.get(b"atime") {
            Some(v) => Some(parse_pax_time(v).ok_or_else(|| bad("PAX atime is not a time"))?),
            None => None,
        };
        let (dev_major, dev_minor) =
            if matches!(kind, EntryKind::CharDevice | EntryKind::BlockDevice) {
                (
                    header
                        .device_major()
                        .map_err(|_| bad("unreadable device major"))?
                        .unwrap_or(0),
                    header
                        .device_minor()
                        .map_err(|_| bad("unreadable device minor"))?
                        .unwrap_or(0),
                )
            } else {
                (0, 0)
            };
        let xattrs = pax
            .0
            .iter()
            .filter_map(|(k, v)| {
                k.strip_prefix(b"SCHILY.xattr.")
                    .map(|n| (n.to_vec(), v.clone()))
            })
            .filter(|(n, _)| !n.is_empty())
            .collect();

        let data_size = match kind {
            EntryKind::File => stored_size,
            _ => 0,
        };
        self.remaining = data_size;
        self.padding = padding(data_size);

        let mut size = data_size;
        let mut sparse = None;
        if type_flag == b'S' {
            let (map, real_size) = self.read_old_gnu_sparse(header)?;
            sparse = Some(map);
            size = real_size;
        } else if kind == EntryKind::File
            && let Some((map, real_size)) = self.read_pax_sparse(&pax)?
        {
            sparse = Some(map);
            size = real_size;
        }
        if let Some(map) = &sparse {
            validate_sparse(map, size, self.remaining).map_err(|r| malformed(Some(&shown), r))?;
        }
        Ok(TarEntry {
            name,
            kind,
            link,
            mode,
            uid,
            gid,
            mtime,
            atime,
            size,
            dev_major,
            dev_minor,
            xattrs,
            sparse,
        })
    }

    /// The map of an old GNU sparse entry (`S`): four slots in the header, then extension blocks.
    fn read_old_gnu_sparse(&mut self, header: &Header) -> Result<(SparseMap, u64)> {
        let shown = self.current.clone();
        let bad = |reason: &str| malformed(shown.as_deref(), reason);
        let gnu = header
            .as_gnu()
            .ok_or_else(|| bad("sparse entry without a GNU header"))?;
        let real_size = gnu
            .real_size()
            .map_err(|_| bad("unreadable sparse real size"))?;
        let mut map = Vec::new();
        let push = |map: &mut Vec<(u64, u64)>, slot: &tar::GnuSparseHeader| -> Result<bool> {
            if slot.is_empty() {
                return Ok(false);
            }
            let offset = slot.offset().map_err(|_| bad("unreadable sparse offset"))?;
            let length = slot.length().map_err(|_| bad("unreadable sparse length"))?;
            if map.len() >= MAX_SPARSE_ENTRIES {
                return Err(bad("sparse map has too many fragments"));
            }
            map.push((offset, length));
            Ok(true)
        };
        for slot in &gnu.sparse {
            if !push(&mut map, slot)? {
                break;
            }
        }
        let mut extended = gnu.is_extended();
        while extended {
            let mut ext = GnuExtSparseHeader::new();
            if !self.read_block(ext.as_mut_bytes())? {
                return Err(bad("archive ends inside a sparse map"));
            }
            for slot in ext.sparse() {
                if !push(&mut map, slot)? {
                    break;
                }
            }
            extended = ext.is_extended();
        }
        Ok((map, real_size))
    }

    /// The map of a PAX sparse entry (GNU formats 0.0, 0.1 and 1.0), if the entry is one.
    fn read_pax_sparse(&mut self, pax: &Pax) -> Result<Option<(SparseMap, u64)>> {
        let shown = self.current.clone();
        let bad = |reason: &str| malformed(shown.as_deref(), reason);
        let major = pax.get(b"GNU.sparse.major");
        let minor = pax.get(b"GNU.sparse.minor");
        let number =
            |v: &[u8]| parse_decimal(v).ok_or_else(|| bad("PAX sparse value is not a number"));
        let has_map =
            pax.get(b"GNU.sparse.map").is_some() || pax.get(b"GNU.sparse.offset").is_some();
        match (major, minor) {
            (Some(b"1"), Some(b"0")) => {
                let real_size = number(
                    pax.get(b"GNU.sparse.realsize")
                        .ok_or_else(|| bad("PAX sparse 1.0 entry without a real size"))?,
                )?;
                let map = self.read_sparse_map_1_0()?;
                return Ok(Some((map, real_size)));
            }
            (Some(b"0"), Some(b"0" | b"1")) => {}
            (None, None) if has_map => {}
            (None, None) => return Ok(None),
            _ => return Err(bad("unsupported PAX sparse format version")),
        }
        let real_size = pax
            .get(b"GNU.sparse.size")
            .or_else(|| pax.get(b"GNU.sparse.realsize"))
            .ok_or_else(|| bad("PAX sparse entry without a real size"))?;
        let real_size = number(real_size)?;
        let mut numbers = Vec::new();
        if let Some(map) = pax.get(b"GNU.sparse.map") {
            // Format 0.1: "offset,length,offset,length,...".
            if !map.is_empty() {
                for part in map.split(|b| *b == b',') {
                    numbers.push(number(part)?);
                }
            }
        } else {
            // Format 0.0: repeated offset / numbytes records, in order.
            for (k, v) in &pax.0 {
                if k == b"GNU.sparse.offset" || k == b"GNU.sparse.numbytes" {
                    numbers.push(number(v)?);
                }
            }
        }
        if numbers.len() % 2 != 0 || numbers.len() / 2 > MAX_SPARSE_ENTRIES {
            return Err(bad("PAX sparse map is malformed"));
        }
        let map = numbers.chunks_exact(2).map(|c| (c[0], c[1])).collect();
        Ok(Some((map, real_size)))
    }

    /// Format 1.0 keeps the map at the start of the data: newline-terminated decimal numbers
    /// (count, then offset/length pairs), padded to a whole block.
    fn read_sparse_map_1_0(&mut self) -> Result<SparseMap> {
        let shown = self.current.clone();
        let bad = |reason: &str| malformed(shown.as_deref(), reason);
        let mut text: Vec<u8> = Vec::new();
        let mut pos = 0usize;
        let mut block = [0u8; BLOCK as usize];
        let mut next_number =
            |this: &mut Self, text: &mut Vec<u8>, pos: &mut usize| -> Result<u64> {
                loop {
                    if let Some(nl) = text[*pos..].iter().position(|b| *b == b'\n') {
                        let value = parse_decimal(&text[*pos..*pos + nl])
                            .ok_or_else(|| bad("PAX sparse map holds a non-number"))?;
                        *pos += nl + 1;
                        return Ok(value);
                    }
                    if this.remaining < BLOCK || text.len() as u64 >= MAX_SPECIAL_SIZE {
                        return Err(bad("PAX sparse map is truncated or too large"));
                    }
                    let mut filled = 0;
                    while filled < block.len() {
                        let n = this.read_some(&mut block[filled..])?;
                        if n == 0 {
                            return Err(bad("archive ends inside a sparse map"));
                        }
                        filled += n;
                    }
                    this.remaining -= BLOCK;
                    text.extend_from_slice(&block);
                }
            };
        let count = next_number(self, &mut text, &mut pos)?;
        let count = usize::try_from(count)
            .ok()
            .filter(|c| *c <= MAX_SPARSE_ENTRIES)
            .ok_or_else(|| bad("PAX sparse map has too many fragments"))?;
        let mut map = Vec::with_capacity(count.min(1024));
        for _ in 0..count {
            let offset = next_number(self, &mut text, &mut pos)?;
            let length = next_number(self, &mut text, &mut pos)?;
            map.push((offset, length));
        }
        Ok(map)
    }

    /// Reads stored data of the current entry (for sparse files, the fragments back to back).
    /// Returns 0 once the entry's data is exhausted.
    pub(crate) fn read_data(&mut self, buf: &mut [u8]) -> Result<usize> {
        if self.remaining == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = usize::try_from(self.remaining.min(buf.len() as u64)).unwrap_or(buf.len());
        let n = self.read_some(&mut buf[..want])?;
        if n == 0 {
            return Err(malformed(
                self.current.as_deref(),
                "archive ends inside an entry's data",
            ));
        }
        self.remaining -= n as u64;
        Ok(n)
    }

    /// Reads the rest of the stream to EOF (the DiffID covers every byte, including the trailing
    /// zero blocks and any padding after them) and returns the sha256 and the byte count.
    pub(crate) fn finish(mut self) -> Result<([u8; 32], u64)> {
        if !self.ended {
            return Err(malformed(None, "archive was not read to its end"));
        }
        let mut scratch = std::mem::take(&mut self.scratch);
        while self.read_some(&mut scratch)? > 0 {}
        Ok((self.hasher.finalize().into(), self.consumed))
    }
}

fn padding(size: u64) -> u64 {
    (BLOCK - size % BLOCK) % BLOCK
}

/// A numeric header field, read as Go's `archive/tar` does: a blank field (only NULs and
/// spaces) is zero.
fn numeric(field: &[u8], parsed: std::io::Result<u64>) -> Option<u64> {
    match parsed {
        Ok(v) => Some(v),
        Err(_) if field.iter().all(|b| *b == 0 || *b == b' ') => Some(0),
        Err(_) => None,
    }
}

/// Accepts the unsigned or the (historical) signed header checksum.
fn check_checksum(header: &Header) -> std::result::Result<(), &'static str> {
    let stored = header.cksum().map_err(|_| "unreadable header checksum")?;
    let bytes = header.as_bytes();
    let mut unsigned: u32 = 0;
    let mut signed: i64 = 0;
    for (i, b) in bytes.iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { *b };
        unsigned += u32::from(b);
        signed += i64::from(b as i8);
    }
    if stored == unsigned || i64::from(stored) == signed {
        Ok(())
    } else {
        Err("header checksum mismatch")
    }
}

/// PAX records in archive order (later records win for single-valued keys).
struct Pax(PaxRecords);

impl Pax {
    fn get(&self, key: &[u8]) -> Option<&[u8]> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_slice())
    }
}

/// Parses PAX records: `"%d %s=%s\n"`, the length counting the whole record.
fn parse_pax(mut data: &[u8]) -> std::result::Result<PaxRecords, &'static str> {
    let mut records = Vec::new();
    while !data.is_empty() {
        // Some writers pad the header data with NULs.
        if data.iter().all(|b| *b == 0) {
            break;
        }
        let space = data
            .iter()
            .take(20)
            .position(|b| *b == b' ')
            .ok_or("PAX record without a length")?;
        let len = parse_decimal(&data[..space]).ok_or("PAX record length is not a number")?;
        let len = usize::try_from(len).map_err(|_| "PAX record length out of range")?;
        if len <= space + 1 || len > data.len() {
            return Err("PAX record length out of range");
        }
        let record = &data[space + 1..len];
        let Some((b'\n', kv)) = record.split_last() else {
            return Err("PAX record does not end with a newline");
        };
        let eq = kv
            .iter()
            .position(|b| *b == b'=')
            .ok_or("PAX record without `=`")?;
        let (key, value) = (&kv[..eq], &kv[eq + 1..]);
        if key.is_empty() || key.contains(&0) {
            return Err("PAX record with an invalid key");
        }
        let no_nul = matches!(key, b"path" | b"linkpath" | b"uname" | b"gname");
        if no_nul && value.contains(&0) {
            return Err("PAX path contains a NUL byte");
        }
        records.push((key.to_vec(), value.to_vec()));
        data = &data[len..];
    }
    Ok(records)
}

/// A non-negative decimal without sign or spaces.
fn parse_decimal(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 20 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// A PAX time: `[-]seconds[.fraction]`.
fn parse_pax_time(v: &[u8]) -> Option<Timestamp> {
    let (negative, v) = match v.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, v),
    };
    let (secs, frac) = match v.iter().position(|b| *b == b'.') {
        Some(dot) => (&v[..dot], &v[dot + 1..]),
        None => (v, &b""[..]),
    };
    let secs = i64::try_from(parse_decimal(secs)?).ok()?;
    if !frac.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut nsec: u32 = 0;
    for i in 0..9 {
        nsec = nsec * 10 + frac.get(i).map_or(0, |d| u32::from(d - b'0'));
    }
    if !negative {
        return Some(Timestamp { sec: secs, nsec });
    }
    if nsec == 0 {
        Some(Timestamp {
            sec: -secs,
            nsec: 0,
        })
    } else {
        Some(Timestamp {
            sec: -secs - 1,
            nsec: 1_000_000_000 - nsec,
        })
    }
}

/// Fragments must be ordered, not overlap, stay within the real size, and account for exactly
/// the stored data.
fn validate_sparse(
    map: &[(u64, u64)],
    real_size: u64,
    stored: u64,
) -> std::result::Result<(), &'static str> {
    let mut end = 0u64;
    let mut total = 0u64;
    for &(offset, length) in map {
        if offset < end {
            return Err("sparse fragments overlap or are out of order");
        }
        end = offset
            .checked_add(length)
            .ok_or("sparse fragment overflows")?;
        if end > real_size {
            return Err("sparse fragment lies beyond the file's size");
        }
        total += length;
    }
    if total != stored {
        return Err("sparse map does not account for the entry's data");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_records_parse_with_binary_values() {
        let value = b"a\nb=c\0d";
        let mut rec = Vec::new();
        let body = [b"SCHILY.xattr.user.x=".as_slice(), value, b"\n"].concat();
        let len = body.len() + 3; // "NN " prefix
        rec.extend_from_slice(format!("{len} ").as_bytes());
        rec.extend_from_slice(&body);
        assert_eq!(rec.len(), len);
        rec.extend_from_slice(b"12 path=abc\n");
        let parsed = parse_pax(&rec).unwrap();
        assert_eq!(parsed[0], (b"SCHILY.xattr.user.x".to_vec(), value.to_vec()));
        assert_eq!(parsed[1], (b"path".to_vec(), b"abc".to_vec()));
    }

    #[test]
    fn pax_records_with_bad_lengths_are_refused() {
        for bad in [
            &b"99 path=abc\n"[..],
            b"3 path=abc\n",
            b"x path=abc\n",
            b"11 path=abc ",
            b"8 =abc\n",
            b"11 pathabc\n",
        ] {
            assert!(
                parse_pax(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(parse_pax(b"13 path=a\0c\n").is_err());
    }

    #[test]
    fn pax_times_parse() {
        assert_eq!(parse_pax_time(b"12"), Some(Timestamp { sec: 12, nsec: 0 }));
        assert_eq!(
            parse_pax_time(b"12.5"),
            Some(Timestamp {
                sec: 12,
                nsec: 500_000_000
            })
        );
        assert_eq!(
            parse_pax_time(b"1.0000000019"),
            Some(Timestamp { sec: 1, nsec: 1 })
        );
        assert_eq!(
            parse_pax_time(b"-1.25"),
            Some(Timestamp {
                sec: -2,
                nsec: 750_000_000
            })
        );
        assert_eq!(parse_pax_time(b"1.x"), None);
        assert_eq!(parse_pax_time(b""), None);
    }

    #[test]
    fn sparse_maps_are_validated() {
        assert!(validate_sparse(&[(0, 10), (20, 5)], 30, 15).is_ok());
        assert!(validate_sparse(&[(0, 10), (5, 5)], 30, 15).is_err());
        assert!(validate_sparse(&[(0, 10), (25, 10)], 30, 20).is_err());
        assert!(validate_sparse(&[(0, 10)], 30, 11).is_err());
        assert!(validate_sparse(&[(u64::MAX, 10)], u64::MAX, 10).is_err());
    }
}
