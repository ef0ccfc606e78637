//! The index of file contents in unpacked layers: `(ChainID, path) -> (size, sha256)`.
//!
//! A partial pull looks up the files it needs by content digest and size. Rows come from two
//! places: the table of contents of a chunked layer when it is pulled (no hashing needed), and
//! lazy scans that hash only the files whose size a pull asks for. Rows are hints: whoever reads a
//! file through them re-verifies its digest while reading (see [`crate::files`]).

use oci_spec::image::Digest;
use rusqlite::params;

use super::{Metadata, column_digest, from_sql_u64, to_sql_u64};
use crate::error::Result;

/// One regular file of an unpacked layer whose content digest is known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileContent {
    /// The layer (by ChainID) holding the file.
    pub chain_id: Digest,
    /// The file's path inside the layer, relative, `/`-separated, without a leading `/`.
    pub path: String,
    /// Its size in bytes.
    pub size: u64,
    /// The sha256 digest of its content.
    pub digest: Digest,
    /// Its modification time (nanoseconds since the epoch) when it was hashed; `None` when the
    /// row came from a table of contents.
    pub mtime_ns: Option<i64>,
}

impl Metadata {
    /// Records file contents (replacing earlier rows for the same layer and path).
    pub fn record_file_contents(&self, files: &[FileContent]) -> Result<()> {
        self.write(|tx| {
            let mut st = tx.prepare(
                "INSERT OR REPLACE INTO file_contents (chain_id, path, size, digest, mtime_ns)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            for f in files {
                st.execute(params![
                    f.chain_id.to_string(),
                    f.path,
                    to_sql_u64(f.size),
                    f.digest.to_string(),
                    f.mtime_ns
                ])?;
            }
            Ok(())
        })
    }

    /// Files recorded with content `digest` and size `size`.
    pub fn files_with_content(&self, digest: &Digest, size: u64) -> Result<Vec<FileContent>> {
        self.read(|c| {
            let mut st = c.prepare(
                "SELECT chain_id, path, size, digest, mtime_ns FROM file_contents
                 WHERE digest = ?1 AND size = ?2 ORDER BY chain_id, path",
            )?;
            st.query_map(params![digest.to_string(), to_sql_u64(size)], |r| {
                Ok(FileContent {
                    chain_id: column_digest(r, 0)?,
                    path: r.get(1)?,
                    size: from_sql_u64(r.get(2)?),
                    digest: column_digest(r, 3)?,
                    mtime_ns: r.get(4)?,
                })
            })?
            .collect()
        })
    }

    /// The recorded modification time of one file, when it was hashed (`Some(None)`: recorded
    /// from a table of contents; `None`: not recorded).
    pub fn file_content_mtime(&self, chain_id: &Digest, path: &str) -> Result<Option<Option<i64>>> {
        use rusqlite::OptionalExtension;
        self.read(|c| {
            c.query_row(
                "SELECT mtime_ns FROM file_contents WHERE chain_id = ?1 AND path = ?2",
                params![chain_id.to_string(), path],
                |r| r.get(0),
            )
            .optional()
        })
    }

    /// Forgets one file (it changed on disk or is gone).
    pub fn remove_file_content(&self, chain_id: &Digest, path: &str) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "DELETE FROM file_contents WHERE chain_id = ?1 AND path = ?2",
                params![chain_id.to_string(), path],
            )
            .map(|_| ())
        })
    }

    /// Forgets every file of layer `chain_id` (it was removed).
    pub fn remove_layer_file_contents(&self, chain_id: &Digest) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "DELETE FROM file_contents WHERE chain_id = ?1",
                [chain_id.to_string()],
            )
            .map(|_| ())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::tests::open_temp;

    #[test]
    fn file_contents_are_found_by_digest_and_size_only() {
        let (_dir, md) = open_temp();
        let chain = crate::digests::sha256_of(b"layer");
        let d = crate::digests::sha256_of(b"hello");
        md.record_file_contents(&[
            FileContent {
                chain_id: chain.clone(),
                path: "etc/a".into(),
                size: 5,
                digest: d.clone(),
                mtime_ns: Some(7),
            },
            FileContent {
                chain_id: chain.clone(),
                path: "etc/b".into(),
                size: 6,
                digest: d.clone(),
                mtime_ns: None,
            },
        ])
        .unwrap();
        let found = md.files_with_content(&d, 5).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].path, "etc/a");
        assert_eq!(md.file_content_mtime(&chain, "etc/b").unwrap(), Some(None));
        md.remove_file_content(&chain, "etc/a").unwrap();
        assert!(md.files_with_content(&d, 5).unwrap().is_empty());
        md.remove_layer_file_contents(&chain).unwrap();
        assert_eq!(md.file_content_mtime(&chain, "etc/b").unwrap(), None);
    }
}
