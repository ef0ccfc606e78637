//! Labels: free-form `key = value` pairs on blobs, images, layers and references.

use std::collections::{BTreeMap, HashMap};

use oci_spec::image::Digest;
use rusqlite::params;

use super::Metadata;
use crate::error::{Result, StoreError};

/// A set of labels, ordered by key.
pub type Labels = BTreeMap<String, String>;

/// What a label is attached to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum LabelSubject {
    /// A blob of the content store.
    Blob(Digest),
    /// An image, by manifest digest.
    Image(Digest),
    /// An unpacked layer, by ChainID.
    Layer(Digest),
    /// A reference, by full name.
    Reference(String),
}

impl LabelSubject {
    fn kind(&self) -> &'static str {
        match self {
            LabelSubject::Blob(_) => "blob",
            LabelSubject::Image(_) => "image",
            LabelSubject::Layer(_) => "layer",
            LabelSubject::Reference(_) => "reference",
        }
    }

    fn key(&self) -> String {
        match self {
            LabelSubject::Blob(d) | LabelSubject::Image(d) | LabelSubject::Layer(d) => {
                d.to_string()
            }
            LabelSubject::Reference(n) => n.clone(),
        }
    }
}

fn check_key(key: &str) -> Result<()> {
    if key.is_empty() {
        return Err(StoreError::InvalidName {
            name: key.to_owned(),
            reason: "label keys must not be empty",
        });
    }
    if key.chars().any(char::is_control) {
        return Err(StoreError::InvalidName {
            name: key.to_owned(),
            reason: "label keys must not contain control characters",
        });
    }
    Ok(())
}

impl Metadata {
    /// The labels of a subject (empty when it has none).
    pub fn labels(&self, subject: &LabelSubject) -> Result<Labels> {
        self.read(|c| {
            let mut st = c.prepare(
                "SELECT key, value FROM labels WHERE kind = ?1 AND subject = ?2 ORDER BY key",
            )?;
            st.query_map(params![subject.kind(), subject.key()], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?
            .collect()
        })
    }

    /// Replaces all labels of a subject with `labels`.
    pub fn set_labels(&self, subject: &LabelSubject, labels: &Labels) -> Result<()> {
        for key in labels.keys() {
            check_key(key)?;
        }
        let (kind, key) = (subject.kind(), subject.key());
        self.write(|tx| {
            tx.execute(
                "DELETE FROM labels WHERE kind = ?1 AND subject = ?2",
                params![kind, key],
            )?;
            let mut st = tx.prepare(
                "INSERT INTO labels (kind, subject, key, value) VALUES (?1, ?2, ?3, ?4)",
            )?;
            for (k, v) in labels {
                st.execute(params![kind, key, k, v])?;
            }
            Ok(())
        })
    }

    /// Sets one label, or removes it when `value` is `None`.
    pub fn set_label(&self, subject: &LabelSubject, key: &str, value: Option<&str>) -> Result<()> {
        check_key(key)?;
        let (kind, subj) = (subject.kind(), subject.key());
        self.write(|tx| {
            match value {
                Some(v) => tx.execute(
                    "INSERT OR REPLACE INTO labels (kind, subject, key, value)
                     VALUES (?1, ?2, ?3, ?4)",
                    params![kind, subj, key, v],
                )?,
                None => tx.execute(
                    "DELETE FROM labels WHERE kind = ?1 AND subject = ?2 AND key = ?3",
                    params![kind, subj, key],
                )?,
            };
            Ok(())
        })
    }

    /// Removes every label of a subject.
    pub fn remove_labels(&self, subject: &LabelSubject) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "DELETE FROM labels WHERE kind = ?1 AND subject = ?2",
                params![subject.kind(), subject.key()],
            )
            .map(|_| ())
        })
    }

    /// Every blob's labels at once, keyed by digest string (for listings).
    pub(crate) fn all_blob_labels(&self) -> Result<HashMap<String, Labels>> {
        self.read(|c| {
            let mut st = c.prepare("SELECT subject, key, value FROM labels WHERE kind = 'blob'")?;
            let mut out: HashMap<String, Labels> = HashMap::new();
            let rows = st.query_map([], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get(2)?))
            })?;
            for row in rows {
                let (subject, k, v) = row?;
                out.entry(subject).or_default().insert(k, v);
            }
            Ok(out)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::open_temp;
    use super::*;
    use crate::digests::sha256_of;

    #[test]
    fn set_labels_replaces_and_set_label_edits_one_key() {
        let (_d, md) = open_temp();
        let s = LabelSubject::Blob(sha256_of(b"x"));
        let mut l = Labels::new();
        l.insert("a".into(), "1".into());
        l.insert("b".into(), "2".into());
        md.set_labels(&s, &l).unwrap();
        let mut only_c = Labels::new();
        only_c.insert("c".into(), "3".into());
        md.set_labels(&s, &only_c).unwrap();
        assert_eq!(md.labels(&s).unwrap(), only_c);
        md.set_label(&s, "d", Some("4")).unwrap();
        md.set_label(&s, "c", None).unwrap();
        let got = md.labels(&s).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got["d"], "4");
        assert_eq!(
            md.all_blob_labels().unwrap()[&sha256_of(b"x").to_string()],
            got
        );
    }

    #[test]
    fn labels_of_different_kinds_with_the_same_key_do_not_mix() {
        let (_d, md) = open_temp();
        let d = sha256_of(b"x");
        md.set_label(&LabelSubject::Blob(d.clone()), "k", Some("blob"))
            .unwrap();
        md.set_label(&LabelSubject::Image(d.clone()), "k", Some("image"))
            .unwrap();
        md.remove_labels(&LabelSubject::Blob(d.clone())).unwrap();
        assert!(
            md.labels(&LabelSubject::Blob(d.clone()))
                .unwrap()
                .is_empty()
        );
        assert_eq!(md.labels(&LabelSubject::Image(d)).unwrap()["k"], "image");
    }

    #[test]
    fn empty_label_keys_are_refused() {
        let (_d, md) = open_temp();
        let s = LabelSubject::Reference("r:1".into());
        assert!(matches!(
            md.set_label(&s, "", Some("v")),
            Err(StoreError::InvalidName { .. })
        ));
    }
}
