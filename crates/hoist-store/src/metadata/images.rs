//! Image records: one per image manifest in the store, with its config and platform.

use std::time::SystemTime;

use oci_spec::image::Digest;
use rusqlite::{OptionalExtension, params};

use super::{Metadata, column_digest, from_sql_u64, to_sql_u64};
use crate::durable::unix_millis;
use crate::error::Result;

/// The platform an image runs on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImagePlatform {
    /// Operating system (`linux`).
    pub os: String,
    /// CPU architecture (`amd64`, `arm64`).
    pub architecture: String,
    /// CPU variant (`v8`), when there is one.
    pub variant: Option<String>,
}

/// What the store knows about one image manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageRecord {
    /// The image manifest's digest.
    pub manifest: Digest,
    /// Its config blob's digest (the image ID).
    pub config: Digest,
    /// Its platform.
    pub platform: ImagePlatform,
    /// The config's `created` timestamp, as the image wrote it (RFC 3339), when present.
    pub created: Option<String>,
    /// Total size in bytes: manifest, config and (compressed) layers.
    pub size: u64,
}

fn row_to_record(row: &rusqlite::Row<'_>) -> rusqlite::Result<ImageRecord> {
    Ok(ImageRecord {
        manifest: column_digest(row, 0)?,
        config: column_digest(row, 1)?,
        platform: ImagePlatform {
            os: row.get(2)?,
            architecture: row.get(3)?,
            variant: row.get(4)?,
        },
        created: row.get(5)?,
        size: from_sql_u64(row.get(6)?),
    })
}

const SELECT: &str =
    "SELECT manifest, config, os, architecture, variant, created, size FROM images";

impl Metadata {
    /// Records (or replaces) an image.
    pub fn put_image(&self, image: &ImageRecord) -> Result<()> {
        let now = unix_millis(SystemTime::now());
        self.write(|tx| {
            tx.execute(
                "INSERT OR REPLACE INTO images
                   (manifest, config, os, architecture, variant, created, size, recorded_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    image.manifest.to_string(),
                    image.config.to_string(),
                    image.platform.os,
                    image.platform.architecture,
                    image.platform.variant,
                    image.created,
                    to_sql_u64(image.size),
                    now
                ],
            )
            .map(|_| ())
        })
    }

    /// The record of one image manifest.
    pub fn image(&self, manifest: &Digest) -> Result<Option<ImageRecord>> {
        self.read(|c| {
            c.query_row(
                &format!("{SELECT} WHERE manifest = ?1"),
                [manifest.to_string()],
                row_to_record,
            )
            .optional()
        })
    }

    /// Every image record, ordered by manifest digest.
    pub fn images(&self) -> Result<Vec<ImageRecord>> {
        self.read(|c| {
            let mut st = c.prepare(&format!("{SELECT} ORDER BY manifest"))?;
            st.query_map([], row_to_record)?.collect()
        })
    }

    /// The images whose config is `config` (one config may serve several manifests).
    pub fn images_with_config(&self, config: &Digest) -> Result<Vec<ImageRecord>> {
        self.read(|c| {
            let mut st = c.prepare(&format!("{SELECT} WHERE config = ?1 ORDER BY manifest"))?;
            st.query_map([config.to_string()], row_to_record)?.collect()
        })
    }

    /// Removes an image record (and its labels); returns whether it existed.
    pub fn remove_image(&self, manifest: &Digest) -> Result<bool> {
        let key = manifest.to_string();
        self.write(|tx| {
            tx.execute(
                "DELETE FROM labels WHERE kind = 'image' AND subject = ?1",
                [&key],
            )?;
            Ok(tx.execute("DELETE FROM images WHERE manifest = ?1", [&key])? > 0)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::open_temp;
    use super::*;
    use crate::digests::sha256_of;

    fn record(m: &[u8], c: &[u8]) -> ImageRecord {
        ImageRecord {
            manifest: sha256_of(m),
            config: sha256_of(c),
            platform: ImagePlatform {
                os: "linux".into(),
                architecture: "arm64".into(),
                variant: Some("v8".into()),
            },
            created: Some("2024-05-01T00:00:00Z".into()),
            size: 1234,
        }
    }

    #[test]
    fn image_record_round_trips_with_platform_and_size() {
        let (_d, md) = open_temp();
        let r = record(b"m1", b"c1");
        md.put_image(&r).unwrap();
        assert_eq!(md.image(&r.manifest).unwrap(), Some(r.clone()));
        assert_eq!(md.images().unwrap(), vec![r.clone()]);
    }

    #[test]
    fn images_sharing_a_config_are_all_found_and_removed_one_by_one() {
        let (_d, md) = open_temp();
        let a = record(b"m1", b"c");
        let b = record(b"m2", b"c");
        md.put_image(&a).unwrap();
        md.put_image(&b).unwrap();
        assert_eq!(md.images_with_config(&a.config).unwrap().len(), 2);
        assert!(md.remove_image(&a.manifest).unwrap());
        assert_eq!(md.images_with_config(&a.config).unwrap(), vec![b]);
        assert!(!md.remove_image(&a.manifest).unwrap());
    }
}
