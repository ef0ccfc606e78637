//! The digest <-> DiffID relation and the blob info cache.
//!
//! * A blob digest (compressed or not) maps to one DiffID, the digest of its uncompressed
//!   content; a DiffID maps back to every blob known to carry it. The same relation answers the
//!   blob info cache's "compressed digest -> uncompressed digest" question.
//! * A blob's compression (`gzip`, `zstd`, `uncompressed`, ...).
//! * Where a blob was seen: `(registry, repository)` with the time it was last seen. These are the
//!   source repositories a push mounts from, and the known locations a pull may reuse. At most
//!   [`MAX_LOCATIONS_PER_BLOB`] are kept per blob, newest first.

use std::fmt;
use std::time::SystemTime;

use oci_spec::image::Digest;
use rusqlite::{OptionalExtension, params};

use super::{Metadata, column_digest};
use crate::durable::{from_unix_millis, unix_millis};
use crate::error::Result;

/// Most locations kept per blob; recording one more forgets the oldest.
pub const MAX_LOCATIONS_PER_BLOB: usize = 50;

/// How a blob's content is compressed.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Compression {
    /// Not compressed: the blob is its own uncompressed content.
    Uncompressed,
    /// gzip.
    Gzip,
    /// zstd (including zstd:chunked, which is a zstd stream).
    Zstd,
    /// Any other name.
    Other(String),
}

impl Compression {
    /// The stored name.
    pub fn as_str(&self) -> &str {
        match self {
            Compression::Uncompressed => "uncompressed",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
            Compression::Other(s) => s,
        }
    }
}

impl From<&str> for Compression {
    fn from(s: &str) -> Self {
        match s {
            "uncompressed" | "none" => Compression::Uncompressed,
            "gzip" => Compression::Gzip,
            "zstd" => Compression::Zstd,
            other => Compression::Other(other.to_owned()),
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A place a blob was seen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlobLocation {
    /// Registry host (`registry-1.docker.io`, `127.0.0.1:5000`).
    pub registry: String,
    /// Repository within it (`library/alpine`).
    pub repository: String,
    /// When it was last seen there.
    pub seen_at: SystemTime,
}

/// A blob that may stand in for a wanted one, and where it was seen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocationCandidate {
    /// The candidate blob (the wanted one, or one with the same uncompressed content).
    pub digest: Digest,
    /// Its compression, when known.
    pub compression: Option<Compression>,
    /// Its uncompressed digest, when known.
    pub uncompressed: Option<Digest>,
    /// Where it was seen.
    pub location: BlobLocation,
}

impl Metadata {
    /// Records that blob `digest` uncompresses to content with digest `diff_id`.
    pub fn record_diff_id(&self, digest: &Digest, diff_id: &Digest) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "INSERT OR REPLACE INTO diff_ids (digest, diff_id) VALUES (?1, ?2)",
                params![digest.to_string(), diff_id.to_string()],
            )
            .map(|_| ())
        })
    }

    /// The DiffID of a blob, when known.
    pub fn diff_id(&self, digest: &Digest) -> Result<Option<Digest>> {
        self.read(|c| {
            c.query_row(
                "SELECT diff_id FROM diff_ids WHERE digest = ?1",
                [digest.to_string()],
                |r| column_digest(r, 0),
            )
            .optional()
        })
    }

    /// Every blob known to uncompress to `diff_id`, ordered by digest.
    pub fn digests_for_diff_id(&self, diff_id: &Digest) -> Result<Vec<Digest>> {
        self.read(|c| {
            let mut st =
                c.prepare("SELECT digest FROM diff_ids WHERE diff_id = ?1 ORDER BY digest")?;
            st.query_map([diff_id.to_string()], |r| column_digest(r, 0))?
                .collect()
        })
    }

    /// The uncompressed digest of any blob: its DiffID when recorded, the blob itself when it is
    /// known to be uncompressed (recorded so, or known as somebody's DiffID), otherwise `None`.
    pub fn uncompressed_digest(&self, digest: &Digest) -> Result<Option<Digest>> {
        let key = digest.to_string();
        self.read(|c| {
            if let Some(d) = c
                .query_row(
                    "SELECT diff_id FROM diff_ids WHERE digest = ?1",
                    [&key],
                    |r| column_digest(r, 0),
                )
                .optional()?
            {
                return Ok(Some(d));
            }
            let known_plain: bool = c.query_row(
                "SELECT EXISTS(SELECT 1 FROM diff_ids WHERE diff_id = ?1)
                     OR EXISTS(SELECT 1 FROM blob_compression
                               WHERE digest = ?1 AND compression = 'uncompressed')",
                [&key],
                |r| r.get(0),
            )?;
            Ok(known_plain.then(|| digest.clone()))
        })
    }

    /// Records how a blob is compressed.
    pub fn record_compression(&self, digest: &Digest, compression: &Compression) -> Result<()> {
        let now = unix_millis(SystemTime::now());
        self.write(|tx| {
            tx.execute(
                "INSERT OR REPLACE INTO blob_compression (digest, compression, recorded_ms)
                 VALUES (?1, ?2, ?3)",
                params![digest.to_string(), compression.as_str(), now],
            )
            .map(|_| ())
        })
    }

    /// How a blob is compressed, when known.
    pub fn compression(&self, digest: &Digest) -> Result<Option<Compression>> {
        self.read(|c| {
            c.query_row(
                "SELECT compression FROM blob_compression WHERE digest = ?1",
                [digest.to_string()],
                |r| r.get::<_, String>(0),
            )
            .optional()
        })
        .map(|o| o.map(|s| Compression::from(s.as_str())))
    }

    /// Records that blob `digest` was seen in `registry`/`repository` at `seen_at`, keeping at most
    /// [`MAX_LOCATIONS_PER_BLOB`] locations for the blob (the newest).
    pub fn record_location(
        &self,
        digest: &Digest,
        registry: &str,
        repository: &str,
        seen_at: SystemTime,
    ) -> Result<()> {
        let key = digest.to_string();
        let seen = unix_millis(seen_at);
        self.write(|tx| {
            // REPLACE gives the row a fresh rowid, which orders equal timestamps by recency.
            tx.execute(
                "INSERT OR REPLACE INTO blob_locations (digest, registry, repository, seen_ms)
                 VALUES (?1, ?2, ?3, ?4)",
                params![key, registry, repository, seen],
            )?;
            tx.execute(
                "DELETE FROM blob_locations WHERE digest = ?1 AND rowid NOT IN (
                   SELECT rowid FROM blob_locations WHERE digest = ?1
                   ORDER BY seen_ms DESC, rowid DESC LIMIT ?2)",
                params![key, MAX_LOCATIONS_PER_BLOB as i64],
            )?;
            Ok(())
        })
    }

    /// Forgets one location of a blob (a mount from there failed, say).
    pub fn remove_location(&self, digest: &Digest, registry: &str, repository: &str) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "DELETE FROM blob_locations WHERE digest = ?1 AND registry = ?2 AND repository = ?3",
                params![digest.to_string(), registry, repository],
            )
            .map(|_| ())
        })
    }

    /// Where a blob was seen, newest first; only in `registry` when given. These are the blob's
    /// source repositories.
    pub fn locations(&self, digest: &Digest, registry: Option<&str>) -> Result<Vec<BlobLocation>> {
        self.read(|c| {
            let mut st = c.prepare(
                "SELECT registry, repository, seen_ms FROM blob_locations
                 WHERE digest = ?1 AND (?2 IS NULL OR registry = ?2)
                 ORDER BY seen_ms DESC, rowid DESC",
            )?;
            st.query_map(params![digest.to_string(), registry], |r| {
                Ok(BlobLocation {
                    registry: r.get(0)?,
                    repository: r.get(1)?,
                    seen_at: from_unix_millis(r.get(2)?),
                })
            })?
            .collect()
        })
    }

    /// Blobs that can serve for `digest` in `registry`, with where they were seen: the blob itself
    /// and, when `can_substitute`, every blob with the same uncompressed content (including the
    /// uncompressed blob). Exact matches come first, then the newest; at most `limit` results.
    pub fn candidate_locations(
        &self,
        digest: &Digest,
        registry: &str,
        can_substitute: bool,
        limit: usize,
    ) -> Result<Vec<LocationCandidate>> {
        let key = digest.to_string();
        let uncompressed = if can_substitute {
            self.uncompressed_digest(digest)?.map(|d| d.to_string())
        } else {
            None
        };
        self.read(|c| {
            let mut st = c.prepare(
                "WITH wanted(d) AS (
                   SELECT ?1
                   UNION SELECT ?2 WHERE ?2 IS NOT NULL
                   UNION SELECT digest FROM diff_ids WHERE ?2 IS NOT NULL AND diff_id = ?2
                 )
                 SELECT l.digest, bc.compression, di.diff_id, l.registry, l.repository, l.seen_ms
                 FROM blob_locations l
                 JOIN wanted w ON w.d = l.digest
                 LEFT JOIN blob_compression bc ON bc.digest = l.digest
                 LEFT JOIN diff_ids di ON di.digest = l.digest
                 WHERE l.registry = ?3
                 ORDER BY (l.digest = ?1) DESC, l.seen_ms DESC, l.rowid DESC
                 LIMIT ?4",
            )?;
            st.query_map(
                params![
                    key,
                    uncompressed,
                    registry,
                    i64::try_from(limit).unwrap_or(i64::MAX)
                ],
                |r| {
                    let compression: Option<String> = r.get(1)?;
                    let diff: Option<String> = r.get(2)?;
                    Ok(LocationCandidate {
                        digest: column_digest(r, 0)?,
                        compression: compression.map(|s| Compression::from(s.as_str())),
                        uncompressed: diff.and_then(|s| Digest::try_from(s.as_str()).ok()),
                        location: BlobLocation {
                            registry: r.get(3)?,
                            repository: r.get(4)?,
                            seen_at: from_unix_millis(r.get(5)?),
                        },
                    })
                },
            )?
            .collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::open_temp;
    use super::*;
    use crate::digests::sha256_of;
    use crate::durable::from_unix_secs;

    #[test]
    fn diff_ids_are_found_both_ways() {
        let (_d, md) = open_temp();
        let gz = sha256_of(b"gz");
        let zst = sha256_of(b"zst");
        let plain = sha256_of(b"plain");
        md.record_diff_id(&gz, &plain).unwrap();
        md.record_diff_id(&zst, &plain).unwrap();
        assert_eq!(md.diff_id(&gz).unwrap(), Some(plain.clone()));
        let mut both = vec![gz.clone(), zst.clone()];
        both.sort_by_key(|d| d.to_string());
        assert_eq!(md.digests_for_diff_id(&plain).unwrap(), both);
        assert_eq!(md.diff_id(&plain).unwrap(), None);
    }

    #[test]
    fn uncompressed_digest_of_a_diff_id_is_itself_and_of_an_unknown_blob_is_none() {
        let (_d, md) = open_temp();
        let gz = sha256_of(b"gz");
        let plain = sha256_of(b"plain");
        let other = sha256_of(b"other");
        md.record_diff_id(&gz, &plain).unwrap();
        assert_eq!(md.uncompressed_digest(&gz).unwrap(), Some(plain.clone()));
        assert_eq!(md.uncompressed_digest(&plain).unwrap(), Some(plain));
        assert_eq!(md.uncompressed_digest(&other).unwrap(), None);
        md.record_compression(&other, &Compression::Uncompressed)
            .unwrap();
        assert_eq!(md.uncompressed_digest(&other).unwrap(), Some(other.clone()));
        assert_eq!(
            md.compression(&other).unwrap(),
            Some(Compression::Uncompressed)
        );
    }

    #[test]
    fn locations_are_bounded_per_blob_and_the_newest_are_kept() {
        let (_d, md) = open_temp();
        let d = sha256_of(b"blob");
        let extra = 7;
        for i in 0..(MAX_LOCATIONS_PER_BLOB + extra) {
            md.record_location(
                &d,
                "r.example",
                &format!("repo{i}"),
                from_unix_secs(1000 + i as i64),
            )
            .unwrap();
        }
        let locs = md.locations(&d, None).unwrap();
        assert_eq!(locs.len(), MAX_LOCATIONS_PER_BLOB);
        let newest = MAX_LOCATIONS_PER_BLOB + extra - 1;
        assert_eq!(locs[0].repository, format!("repo{newest}"));
        assert_eq!(
            locs.last().unwrap().repository,
            format!("repo{extra}"),
            "the {extra} oldest were dropped"
        );
    }

    #[test]
    fn seeing_a_location_again_makes_it_newest() {
        let (_d, md) = open_temp();
        let d = sha256_of(b"blob");
        let t = from_unix_secs(5000);
        md.record_location(&d, "r", "a", t).unwrap();
        md.record_location(&d, "r", "b", t).unwrap();
        md.record_location(&d, "r", "a", t).unwrap();
        let repos: Vec<_> = md
            .locations(&d, Some("r"))
            .unwrap()
            .into_iter()
            .map(|l| l.repository)
            .collect();
        assert_eq!(repos, vec!["a", "b"]);
        assert!(md.locations(&d, Some("elsewhere")).unwrap().is_empty());
        md.remove_location(&d, "r", "a").unwrap();
        assert_eq!(md.locations(&d, None).unwrap().len(), 1);
    }

    #[test]
    fn candidates_put_exact_matches_first_and_substitutes_only_when_allowed() {
        let (_d, md) = open_temp();
        let gz = sha256_of(b"gz");
        let zst = sha256_of(b"zst");
        let plain = sha256_of(b"plain");
        md.record_diff_id(&gz, &plain).unwrap();
        md.record_diff_id(&zst, &plain).unwrap();
        md.record_compression(&zst, &Compression::Zstd).unwrap();
        md.record_location(&gz, "reg", "old", from_unix_secs(10))
            .unwrap();
        md.record_location(&zst, "reg", "new", from_unix_secs(20))
            .unwrap();
        md.record_location(&zst, "other-reg", "x", from_unix_secs(30))
            .unwrap();

        let exact = md.candidate_locations(&gz, "reg", false, 10).unwrap();
        assert_eq!(exact.len(), 1);
        assert_eq!(exact[0].digest, gz);
        assert_eq!(exact[0].uncompressed, Some(plain.clone()));

        let subst = md.candidate_locations(&gz, "reg", true, 10).unwrap();
        let got: Vec<_> = subst.iter().map(|c| c.digest.clone()).collect();
        assert_eq!(got, vec![gz.clone(), zst.clone()]);
        assert_eq!(subst[1].compression, Some(Compression::Zstd));
        assert_eq!(
            md.candidate_locations(&gz, "reg", true, 1).unwrap().len(),
            1
        );
    }
}
