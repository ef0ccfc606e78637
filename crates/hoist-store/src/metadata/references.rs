//! References: full names (`registry/repo:tag`, `registry/repo@sha256:…`) -> manifest or index.
//!
//! Names arrive normalised by the caller (hoist's reference parser); the store treats them as
//! opaque strings and only tells tag references from digest references (an `@` marks the latter).

use std::time::SystemTime;

use oci_spec::image::{Descriptor, Digest, MediaType};
use rusqlite::{OptionalExtension, params};

use super::{Metadata, column_digest, from_sql_u64, to_sql_u64};
use crate::durable::{from_unix_millis, unix_millis};
use crate::error::Result;

/// Whether a reference names a tag or pins a digest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReferenceKind {
    /// `registry/repo:tag`.
    Tag,
    /// `registry/repo@digest`.
    Digest,
}

impl ReferenceKind {
    /// The kind of a reference name.
    pub fn of(name: &str) -> ReferenceKind {
        if name.contains('@') {
            ReferenceKind::Digest
        } else {
            ReferenceKind::Tag
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            ReferenceKind::Tag => "tag",
            ReferenceKind::Digest => "digest",
        }
    }
}

/// One stored reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReferenceRecord {
    /// The full reference name.
    pub name: String,
    /// Tag or digest reference.
    pub kind: ReferenceKind,
    /// What it points to: a manifest or an index.
    pub target: Descriptor,
    /// When it was last set.
    pub updated_at: SystemTime,
}

fn row_to_record(row: &rusqlite::Row<'_>) -> rusqlite::Result<ReferenceRecord> {
    let name: String = row.get(0)?;
    let kind: String = row.get(1)?;
    let digest = column_digest(row, 2)?;
    let media_type: String = row.get(3)?;
    let size: i64 = row.get(4)?;
    let updated: i64 = row.get(5)?;
    Ok(ReferenceRecord {
        name,
        kind: if kind == "digest" {
            ReferenceKind::Digest
        } else {
            ReferenceKind::Tag
        },
        target: Descriptor::new(
            MediaType::from(media_type.as_str()),
            from_sql_u64(size),
            digest,
        ),
        updated_at: from_unix_millis(updated),
    })
}

const SELECT: &str = "SELECT name, kind, target, media_type, size, updated_ms FROM refs";

impl Metadata {
    /// Sets (or moves) a reference.
    pub fn put_reference(
        &self,
        name: &str,
        target: &Digest,
        media_type: &str,
        size: u64,
    ) -> Result<()> {
        let now = unix_millis(SystemTime::now());
        self.write_durable(|tx| {
            tx.execute(
                "INSERT INTO refs (name, kind, target, media_type, size, updated_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT(name) DO UPDATE SET kind = excluded.kind, target = excluded.target,
                   media_type = excluded.media_type, size = excluded.size,
                   updated_ms = excluded.updated_ms",
                params![
                    name,
                    ReferenceKind::of(name).as_str(),
                    target.to_string(),
                    media_type,
                    to_sql_u64(size),
                    now
                ],
            )
            .map(|_| ())
        })
    }

    /// Looks a reference up.
    pub fn reference(&self, name: &str) -> Result<Option<ReferenceRecord>> {
        self.read(|c| {
            c.query_row(&format!("{SELECT} WHERE name = ?1"), [name], row_to_record)
                .optional()
        })
    }

    /// Every reference, ordered by name.
    pub fn references(&self) -> Result<Vec<ReferenceRecord>> {
        self.read(|c| {
            let mut st = c.prepare(&format!("{SELECT} ORDER BY name"))?;
            st.query_map([], row_to_record)?.collect()
        })
    }

    /// The references pointing at `target`, ordered by name.
    pub fn references_to(&self, target: &Digest) -> Result<Vec<ReferenceRecord>> {
        self.read(|c| {
            let mut st = c.prepare(&format!("{SELECT} WHERE target = ?1 ORDER BY name"))?;
            st.query_map([target.to_string()], row_to_record)?.collect()
        })
    }

    /// Removes a reference (and its labels); returns whether it existed.
    pub fn remove_reference(&self, name: &str) -> Result<bool> {
        self.write_durable(|tx| {
            tx.execute(
                "DELETE FROM labels WHERE kind = 'reference' AND subject = ?1",
                [name],
            )?;
            Ok(tx.execute("DELETE FROM refs WHERE name = ?1", [name])? > 0)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::open_temp;
    use super::*;
    use crate::digests::sha256_of;

    const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

    #[test]
    fn put_then_move_a_tag_keeps_one_record_pointing_at_the_latest_target() {
        let (_d, md) = open_temp();
        let a = sha256_of(b"a");
        let b = sha256_of(b"b");
        md.put_reference("docker.io/library/alpine:3.20", &a, OCI_MANIFEST, 10)
            .unwrap();
        md.put_reference("docker.io/library/alpine:3.20", &b, OCI_MANIFEST, 11)
            .unwrap();
        let all = md.references().unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].target.digest(), &b);
        assert_eq!(all[0].target.size(), 11);
        assert_eq!(all[0].kind, ReferenceKind::Tag);
        assert_eq!(
            all[0].target.media_type(),
            &MediaType::ImageManifest,
            "OCI media type parsed back into its enum"
        );
    }

    #[test]
    fn digest_references_are_classified_and_found_by_target() {
        let (_d, md) = open_temp();
        let a = sha256_of(b"a");
        let name = format!("example.com/x@{a}");
        md.put_reference(&name, &a, OCI_MANIFEST, 1).unwrap();
        md.put_reference("example.com/x:v1", &a, OCI_MANIFEST, 1)
            .unwrap();
        let to = md.references_to(&a).unwrap();
        assert_eq!(to.len(), 2);
        assert_eq!(
            md.reference(&name).unwrap().unwrap().kind,
            ReferenceKind::Digest
        );
        assert!(md.remove_reference(&name).unwrap());
        assert!(!md.remove_reference(&name).unwrap());
        assert!(md.reference(&name).unwrap().is_none());
    }
}
