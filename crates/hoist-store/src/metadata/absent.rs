//! Blobs whose layer is present and verified while the compressed blob itself is not.
//!
//! A partial pull rebuilds a layer from the chunks it lacked and the file contents the store
//! already had: the layer (checked against the image config's DiffID) is in the layer store, but
//! the registry's compressed blob never was. Such a blob is recorded here with where it came from,
//! so that a push, copy or export can mount or fetch it when it is needed, fsck knows the gap is
//! legitimate, and `index.json` leaves out the images that lack it until it arrives.

use std::time::SystemTime;

use oci_spec::image::Digest;
use rusqlite::{OptionalExtension, params};

use super::{Metadata, column_digest, from_sql_u64, to_sql_u64};
use crate::durable::unix_millis;
use crate::error::Result;

/// A blob whose layer is present but whose compressed bytes are not, and where to get them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AbsentBlob {
    /// The compressed blob's digest.
    pub digest: Digest,
    /// The layer's DiffID (verified when the layer was built).
    pub diff_id: Digest,
    /// The blob's size in bytes.
    pub size: u64,
    /// The blob's media type, as the manifest gives it.
    pub media_type: String,
    /// The registry the blob can be fetched from (`host[:port]`, or `docker.io`).
    pub registry: String,
    /// The repository within that registry.
    pub repository: String,
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AbsentBlob> {
    Ok(AbsentBlob {
        digest: column_digest(r, 0)?,
        diff_id: column_digest(r, 1)?,
        size: from_sql_u64(r.get(2)?),
        media_type: r.get(3)?,
        registry: r.get(4)?,
        repository: r.get(5)?,
    })
}

const COLUMNS: &str = "digest, diff_id, size, media_type, registry, repository";

impl Metadata {
    /// Records (or updates) an absent blob.
    pub fn record_absent_blob(&self, blob: &AbsentBlob) -> Result<()> {
        let now = unix_millis(SystemTime::now());
        self.write(|tx| {
            tx.execute(
                "INSERT OR REPLACE INTO absent_blobs
                 (digest, diff_id, size, media_type, registry, repository, recorded_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    blob.digest.to_string(),
                    blob.diff_id.to_string(),
                    to_sql_u64(blob.size),
                    blob.media_type,
                    blob.registry,
                    blob.repository,
                    now
                ],
            )
            .map(|_| ())
        })
    }

    /// The absent-blob record of `digest`, if any.
    pub fn absent_blob(&self, digest: &Digest) -> Result<Option<AbsentBlob>> {
        self.read(|c| {
            c.query_row(
                &format!("SELECT {COLUMNS} FROM absent_blobs WHERE digest = ?1"),
                [digest.to_string()],
                row,
            )
            .optional()
        })
    }

    /// Every absent-blob record, by digest.
    pub fn absent_blobs(&self) -> Result<Vec<AbsentBlob>> {
        self.read(|c| {
            let mut st = c.prepare(&format!(
                "SELECT {COLUMNS} FROM absent_blobs ORDER BY digest"
            ))?;
            st.query_map([], row)?.collect()
        })
    }

    /// Forgets the absent-blob record of `digest` (the blob arrived, or its layer is gone);
    /// returns whether there was one.
    pub fn remove_absent_blob(&self, digest: &Digest) -> Result<bool> {
        self.write(|tx| {
            tx.execute(
                "DELETE FROM absent_blobs WHERE digest = ?1",
                [digest.to_string()],
            )
            .map(|n| n > 0)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::tests::open_temp;

    fn sample(n: &str) -> AbsentBlob {
        AbsentBlob {
            digest: crate::digests::sha256_of(n.as_bytes()),
            diff_id: crate::digests::sha256_of(format!("{n}-diff").as_bytes()),
            size: 42,
            media_type: "application/vnd.oci.image.layer.v1.tar+zstd".into(),
            registry: "127.0.0.1:5000".into(),
            repository: "a/b".into(),
        }
    }

    #[test]
    fn absent_blobs_are_recorded_listed_and_removed() {
        let (_dir, md) = open_temp();
        let a = sample("a");
        md.record_absent_blob(&a).unwrap();
        md.record_absent_blob(&sample("b")).unwrap();
        assert_eq!(md.absent_blob(&a.digest).unwrap(), Some(a.clone()));
        assert_eq!(md.absent_blobs().unwrap().len(), 2);
        assert!(md.remove_absent_blob(&a.digest).unwrap());
        assert!(!md.remove_absent_blob(&a.digest).unwrap());
        assert_eq!(md.absent_blob(&a.digest).unwrap(), None);
    }
}
