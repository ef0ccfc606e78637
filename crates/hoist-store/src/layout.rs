//! The OCI image layout files: `oci-layout` and `index.json`.
//!
//! `index.json` lists the images the layout names: one manifest (or index) descriptor per name,
//! the name in the `org.opencontainers.image.ref.name` annotation. hoist writes the full reference
//! there (`127.0.0.1:5000/library/alpine:3.20`), which is what `skopeo … oci:ROOT:REF` and
//! `umoci … --image ROOT:REF` look up. Descriptors without a name (other tools write those) are
//! kept untouched.
//!
//! Changes are read-modify-write under a cross-process lock (`locks/index.lock`) and replace the
//! file atomically, so readers (which take no lock) always see a complete document. Documents are
//! parsed with `oci-spec`'s types, so layouts written by skopeo and umoci read the same way.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use oci_spec::image::{
    Descriptor, ImageIndex, ImageIndexBuilder, MediaType, OciLayout, SCHEMA_VERSION,
};

use crate::durable;
use crate::error::{IoContext, Result, StoreError};
use crate::lock::{FileLock, Mode, Wait};

/// The annotation holding an image's name in `index.json`.
pub const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";

/// The image layout version hoist writes and reads.
pub const LAYOUT_VERSION: &str = "1.0.0";

/// The `oci-layout` and `index.json` of a store (or of any OCI layout directory).
#[derive(Clone, Debug)]
pub struct Layout {
    root: PathBuf,
    lock: PathBuf,
}

/// A named entry of `index.json`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamedDescriptor {
    /// The value of its `org.opencontainers.image.ref.name` annotation.
    pub name: String,
    /// The descriptor (with its annotations).
    pub descriptor: Descriptor,
}

fn malformed(what: &'static str, path: &Path, reason: impl ToString) -> StoreError {
    StoreError::Malformed {
        what,
        location: path.display().to_string(),
        reason: reason.to_string(),
    }
}

fn empty_index() -> Result<ImageIndex> {
    ImageIndexBuilder::default()
        .schema_version(SCHEMA_VERSION)
        .media_type(MediaType::ImageIndex)
        .manifests(Vec::<Descriptor>::new())
        .build()
        .map_err(|e| malformed("index.json", Path::new("index.json"), e))
}

/// The name an `index.json` entry carries, if any.
pub fn ref_name(descriptor: &Descriptor) -> Option<&str> {
    descriptor
        .annotations()
        .as_ref()
        .and_then(|a| a.get(REF_NAME_ANNOTATION))
        .map(String::as_str)
}

/// Refuses names that cannot be an `index.json` reference name.
pub(crate) fn check_name(name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        "reference names must not be empty"
    } else if name.len() > 4096 {
        "reference names are limited to 4096 bytes"
    } else if name.chars().any(|c| c.is_control() || c.is_whitespace()) {
        "reference names must not contain whitespace or control characters"
    } else {
        return Ok(());
    };
    Err(StoreError::InvalidName {
        name: name.chars().take(80).collect(),
        reason,
    })
}

impl Layout {
    /// Opens the layout at `root`, writing `oci-layout` and an empty `index.json` if missing.
    /// Refuses a layout of another version.
    pub(crate) fn init(root: &Path) -> Result<Layout> {
        let locks = root.join("locks");
        durable::create_dir_all(&locks)?;
        let layout = Layout {
            root: root.to_owned(),
            lock: locks.join("index.lock"),
        };
        let marker = root.join("oci-layout");
        match fs::read(&marker) {
            Ok(bytes) => check_marker(&marker, &bytes)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let body = format!("{{\"imageLayoutVersion\":\"{LAYOUT_VERSION}\"}}");
                durable::write_atomic(&marker, body.as_bytes())?;
            }
            Err(e) => return Err(e).ctx("read", &marker),
        }
        if !layout.index_path().exists() {
            let _guard = layout.lock()?;
            if !layout.index_path().exists() {
                layout.write(&empty_index()?)?;
            }
        }
        Ok(layout)
    }

    /// Opens an existing layout written by any tool, read-only: nothing is created.
    pub fn open_existing(root: &Path) -> Result<Layout> {
        let marker = root.join("oci-layout");
        let bytes = fs::read(&marker).ctx("read", &marker)?;
        check_marker(&marker, &bytes)?;
        Ok(Layout {
            root: root.to_owned(),
            lock: root.join("locks").join("index.lock"),
        })
    }

    /// The layout's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn index_path(&self) -> PathBuf {
        self.root.join("index.json")
    }

    fn lock(&self) -> Result<FileLock> {
        FileLock::acquire(&self.lock, Mode::Exclusive, Wait::Block)?.ok_or_else(|| {
            StoreError::io(
                "lock",
                &self.lock,
                io::Error::new(io::ErrorKind::WouldBlock, "lock not granted"),
            )
        })
    }

    /// The current `index.json`.
    pub fn index(&self) -> Result<ImageIndex> {
        let path = self.index_path();
        let bytes = fs::read(&path).ctx("read", &path)?;
        ImageIndex::from_reader(bytes.as_slice()).map_err(|e| malformed("index.json", &path, e))
    }

    fn write(&self, index: &ImageIndex) -> Result<()> {
        let path = self.index_path();
        let bytes = index
            .to_string()
            .map_err(|e| malformed("index.json", &path, e))?;
        durable::write_atomic(&path, bytes.as_bytes())
    }

    /// Applies `change` to `index.json` under the lock and writes the result atomically (only
    /// when `change` reports a modification).
    pub(crate) fn update<T>(&self, change: impl FnOnce(&mut ImageIndex) -> (bool, T)) -> Result<T> {
        let _guard = self.lock()?;
        let mut index = self.index()?;
        let (changed, out) = change(&mut index);
        if changed {
            self.write(&index)?;
        }
        Ok(out)
    }

    /// Names `descriptor` as `name`, replacing any entry already carrying the name.
    pub fn add(&self, name: &str, descriptor: &Descriptor) -> Result<()> {
        check_name(name)?;
        let mut entry = descriptor.clone();
        let mut annotations = entry.annotations().clone().unwrap_or_default();
        annotations.insert(REF_NAME_ANNOTATION.to_owned(), name.to_owned());
        entry.set_annotations(Some(annotations));
        self.update(|index| {
            let mut manifests = index.manifests().clone();
            let named: Vec<&Descriptor> = manifests
                .iter()
                .filter(|d| ref_name(d) == Some(name))
                .collect();
            if named.len() == 1 && named[0] == &entry {
                return (false, ());
            }
            manifests.retain(|d| ref_name(d) != Some(name));
            manifests.push(entry);
            index.set_manifests(manifests);
            (true, ())
        })
    }

    /// Removes the entry named `name`; returns whether there was one.
    pub fn remove(&self, name: &str) -> Result<bool> {
        self.update(|index| {
            let mut manifests = index.manifests().clone();
            let before = manifests.len();
            manifests.retain(|d| ref_name(d) != Some(name));
            let changed = manifests.len() != before;
            index.set_manifests(manifests);
            (changed, changed)
        })
    }

    /// The descriptor named `name`, if any.
    pub fn resolve(&self, name: &str) -> Result<Option<Descriptor>> {
        Ok(self
            .index()?
            .manifests()
            .iter()
            .find(|d| ref_name(d) == Some(name))
            .cloned())
    }

    /// Every named entry, in file order.
    pub fn names(&self) -> Result<Vec<NamedDescriptor>> {
        Ok(self
            .index()?
            .manifests()
            .iter()
            .filter_map(|d| {
                ref_name(d).map(|n| NamedDescriptor {
                    name: n.to_owned(),
                    descriptor: d.clone(),
                })
            })
            .collect())
    }
}

fn check_marker(path: &Path, bytes: &[u8]) -> Result<()> {
    let marker = OciLayout::from_reader(bytes).map_err(|e| malformed("oci-layout", path, e))?;
    if marker.image_layout_version() != LAYOUT_VERSION {
        return Err(StoreError::UnsupportedLayout {
            path: path.to_owned(),
            found: marker.image_layout_version().clone(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digests::sha256_of;

    fn desc(content: &[u8]) -> Descriptor {
        Descriptor::new(MediaType::ImageManifest, 42, sha256_of(content))
    }

    #[test]
    fn init_writes_the_marker_and_an_empty_index() {
        let dir = tempfile::tempdir().unwrap();
        let l = Layout::init(dir.path()).unwrap();
        let marker: serde_json::Value =
            serde_json::from_slice(&fs::read(dir.path().join("oci-layout")).unwrap()).unwrap();
        assert_eq!(marker["imageLayoutVersion"], "1.0.0");
        assert!(l.index().unwrap().manifests().is_empty());
        let raw: serde_json::Value =
            serde_json::from_slice(&fs::read(dir.path().join("index.json")).unwrap()).unwrap();
        assert_eq!(raw["schemaVersion"], 2);
        assert_eq!(raw["mediaType"], "application/vnd.oci.image.index.v1+json");
    }

    #[test]
    fn adding_a_name_twice_moves_it_and_unnamed_entries_survive() {
        let dir = tempfile::tempdir().unwrap();
        let l = Layout::init(dir.path()).unwrap();
        l.update(|i| {
            i.set_manifests(vec![desc(b"unnamed")]);
            (true, ())
        })
        .unwrap();
        let name = "127.0.0.1:5000/library/alpine:3.20";
        l.add(name, &desc(b"one")).unwrap();
        l.add(name, &desc(b"two")).unwrap();
        l.add("example.com/other:1", &desc(b"one")).unwrap();
        let idx = l.index().unwrap();
        assert_eq!(idx.manifests().len(), 3);
        let got = l.resolve(name).unwrap().unwrap();
        assert_eq!(got.digest(), &sha256_of(b"two"));
        assert_eq!(ref_name(&got), Some(name));
        let names: Vec<_> = l.names().unwrap().into_iter().map(|n| n.name).collect();
        assert_eq!(names, vec![name, "example.com/other:1"]);
        assert!(l.remove(name).unwrap());
        assert!(!l.remove(name).unwrap());
        assert_eq!(l.index().unwrap().manifests().len(), 2);
    }

    #[test]
    fn a_layout_of_another_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join("oci-layout"),
            br#"{"imageLayoutVersion":"2.0.0"}"#,
        )
        .unwrap();
        assert!(matches!(
            Layout::init(dir.path()),
            Err(StoreError::UnsupportedLayout { .. })
        ));
    }

    #[test]
    fn a_corrupt_index_is_reported_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let l = Layout::init(dir.path()).unwrap();
        fs::write(dir.path().join("index.json"), b"{not json").unwrap();
        let err = l.index().unwrap_err();
        assert!(matches!(
            err,
            StoreError::Malformed {
                what: "index.json",
                ..
            }
        ));
        assert!(err.to_string().contains("index.json"));
    }

    #[test]
    fn names_with_whitespace_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let l = Layout::init(dir.path()).unwrap();
        assert!(matches!(
            l.add("a b", &desc(b"x")),
            Err(StoreError::InvalidName { .. })
        ));
    }

    #[test]
    fn concurrent_adds_from_many_threads_all_land() {
        let dir = tempfile::tempdir().unwrap();
        let l = Layout::init(dir.path()).unwrap();
        std::thread::scope(|s| {
            for t in 0..8 {
                let l = l.clone();
                s.spawn(move || {
                    for i in 0..5 {
                        l.add(&format!("r/x:{t}-{i}"), &desc(format!("{t}{i}").as_bytes()))
                            .unwrap();
                    }
                });
            }
        });
        assert_eq!(l.names().unwrap().len(), 40);
    }
}
