//! Image names with their transport: `docker://REF`, `oci:DIR[:NAME]`, `oci-archive:FILE[:NAME]`,
//! `docker-archive:FILE[:REF|:@N]`, `store:REF`, or a bare reference (the local store).
//!
//! The syntax is the one skopeo users know: after the transport prefix, file transports split
//! the rest at its first `:` into the path and the image's name inside the file (so paths cannot
//! contain `:`, and names can: `oci:/tmp/l:127.0.0.1:5000/foo:1`).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use hoist_registry::ImageRef;

use super::error::NameError;

/// The ways hoist reaches images.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Transport {
    /// A registry (`docker://`).
    Docker,
    /// An OCI image layout directory (`oci:`).
    Oci,
    /// A tar archive of an OCI image layout (`oci-archive:`).
    OciArchive,
    /// The `docker save` / `docker load` archive format (`docker-archive:`).
    DockerArchive,
    /// hoist's local store (`store:`).
    Store,
}

impl Transport {
    /// The transport's name as written before the `:`.
    pub fn name(self) -> &'static str {
        match self {
            Transport::Docker => "docker",
            Transport::Oci => "oci",
            Transport::OciArchive => "oci-archive",
            Transport::DockerArchive => "docker-archive",
            Transport::Store => "store",
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which image of a docker archive (`docker-archive:FILE:REF` or `docker-archive:FILE:@N`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArchiveImage {
    /// The image tagged with this reference (always `name:tag`).
    Named(ImageRef),
    /// The image at this position of the archive's `manifest.json` (reading only).
    Index(usize),
}

impl fmt::Display for ArchiveImage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ArchiveImage::Named(r) => write!(f, "{r}"),
            ArchiveImage::Index(i) => write!(f, "@{i}"),
        }
    }
}

/// A parsed image name: a transport and where the image is within it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ImageName {
    /// `docker://REF`: an image in a registry.
    Docker(ImageRef),
    /// `oci:DIR[:NAME]`: an image in an OCI layout directory, named by the
    /// `org.opencontainers.image.ref.name` annotation in its `index.json`.
    Oci {
        /// The layout directory.
        path: PathBuf,
        /// The image's name in `index.json`; without one, the layout must hold one image.
        name: Option<String>,
    },
    /// `oci-archive:FILE[:NAME]`: like `oci:`, in a tar file.
    OciArchive {
        /// The archive file.
        path: PathBuf,
        /// The image's name in the archive's `index.json`.
        name: Option<String>,
    },
    /// `docker-archive:FILE[:REF]`: the `docker save` format.
    DockerArchive {
        /// The archive file.
        path: PathBuf,
        /// Which image; without one, the archive must hold one image (reading), or the image
        /// is written without a tag.
        image: Option<ArchiveImage>,
    },
    /// `store:REF`, or a bare reference: an image in hoist's local store.
    Store(ImageRef),
}

/// Transports other tools have that hoist does not.
const FOREIGN_TRANSPORTS: &[&str] = &[
    "dir",
    "containers-storage",
    "docker-daemon",
    "ostree",
    "sif",
    "tarball",
    "atomic",
];

impl ImageName {
    /// Parses `input`. See the module documentation for the syntax.
    pub fn parse(input: &str) -> Result<ImageName, NameError> {
        if input.is_empty() {
            return Err(NameError::Empty);
        }
        if let Some(rest) = input.strip_prefix("docker://") {
            return ImageRef::parse(rest)
                .map(ImageName::Docker)
                .map_err(|source| NameError::InvalidReference {
                    input: input.to_owned(),
                    source,
                });
        }
        let Some((prefix, rest)) = input.split_once(':') else {
            return parse_store(input, input);
        };
        match prefix {
            "docker" => Err(NameError::DockerWithoutSlashes {
                input: input.to_owned(),
            }),
            "oci" => {
                let (path, name) = split_path(Transport::Oci, rest, input)?;
                Ok(ImageName::Oci {
                    path,
                    name: name.map(check_layout_name).transpose()?,
                })
            }
            "oci-archive" => {
                let (path, name) = split_path(Transport::OciArchive, rest, input)?;
                Ok(ImageName::OciArchive {
                    path,
                    name: name.map(check_layout_name).transpose()?,
                })
            }
            "docker-archive" => {
                let (path, image) = split_path(Transport::DockerArchive, rest, input)?;
                Ok(ImageName::DockerArchive {
                    path,
                    image: image.map(|r| parse_archive_image(r, input)).transpose()?,
                })
            }
            "store" => parse_store(rest, input),
            p if FOREIGN_TRANSPORTS.contains(&p) => Err(NameError::UnsupportedTransport {
                transport: p.to_owned(),
            }),
            _ => match ImageRef::parse(input) {
                Ok(r) => Ok(ImageName::Store(r)),
                Err(source) => {
                    let looks_like_transport = !prefix.is_empty()
                        && prefix
                            .chars()
                            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                        && (rest.starts_with('/') || rest.starts_with('.'));
                    if looks_like_transport {
                        Err(NameError::UnknownTransport {
                            transport: prefix.to_owned(),
                            input: input.to_owned(),
                        })
                    } else {
                        Err(NameError::InvalidReference {
                            input: input.to_owned(),
                            source,
                        })
                    }
                }
            },
        }
    }

    /// The transport.
    pub fn transport(&self) -> Transport {
        match self {
            ImageName::Docker(_) => Transport::Docker,
            ImageName::Oci { .. } => Transport::Oci,
            ImageName::OciArchive { .. } => Transport::OciArchive,
            ImageName::DockerArchive { .. } => Transport::DockerArchive,
            ImageName::Store(_) => Transport::Store,
        }
    }
}

fn parse_store(reference: &str, input: &str) -> Result<ImageName, NameError> {
    ImageRef::parse(reference)
        .map(ImageName::Store)
        .map_err(|source| NameError::InvalidReference {
            input: input.to_owned(),
            source,
        })
}

/// Splits `PATH[:REST]` at the first `:`; an empty rest is no rest.
fn split_path<'a>(
    transport: Transport,
    rest: &'a str,
    input: &str,
) -> Result<(PathBuf, Option<&'a str>), NameError> {
    let (path, name) = match rest.split_once(':') {
        Some((p, n)) => (p, Some(n).filter(|n| !n.is_empty())),
        None => (rest, None),
    };
    if path.is_empty() {
        return Err(NameError::MissingPath {
            transport: transport.name(),
            input: input.to_owned(),
        });
    }
    Ok((PathBuf::from(path), name))
}

/// Checks a name for `index.json` against the OCI annotation grammar:
/// `component ([:/@+] component)*`, components of `[A-Za-z0-9._-]`.
fn check_layout_name(name: &str) -> Result<String, NameError> {
    let component = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    let separator = |c: char| matches!(c, ':' | '/' | '@' | '+');
    let mut previous_was_separator = true;
    for c in name.chars() {
        if separator(c) {
            if previous_was_separator {
                return Err(NameError::InvalidLayoutName {
                    name: name.to_owned(),
                });
            }
            previous_was_separator = true;
        } else if component(c) {
            previous_was_separator = false;
        } else {
            return Err(NameError::InvalidLayoutName {
                name: name.to_owned(),
            });
        }
    }
    if previous_was_separator {
        return Err(NameError::InvalidLayoutName {
            name: name.to_owned(),
        });
    }
    Ok(name.to_owned())
}

fn parse_archive_image(reference: &str, input: &str) -> Result<ArchiveImage, NameError> {
    if let Some(index) = reference.strip_prefix('@') {
        return index
            .parse::<usize>()
            .map(ArchiveImage::Index)
            .map_err(|_| NameError::InvalidArchiveIndex {
                index: reference.to_owned(),
            });
    }
    let parsed = ImageRef::parse(reference).map_err(|source| NameError::InvalidReference {
        input: input.to_owned(),
        source,
    })?;
    if parsed.digest().is_some() {
        return Err(NameError::DigestInArchiveReference {
            reference: reference.to_owned(),
        });
    }
    Ok(ArchiveImage::Named(parsed))
}

impl FromStr for ImageName {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ImageName::parse(s)
    }
}

impl fmt::Display for ImageName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageName::Docker(r) => write!(f, "docker://{r}"),
            ImageName::Oci { path, name } | ImageName::OciArchive { path, name } => {
                write!(f, "{}:{}", self.transport(), path.display())?;
                match name {
                    Some(n) => write!(f, ":{n}"),
                    None => Ok(()),
                }
            }
            ImageName::DockerArchive { path, image } => {
                write!(f, "docker-archive:{}", path.display())?;
                match image {
                    Some(i) => write!(f, ":{i}"),
                    None => Ok(()),
                }
            }
            ImageName::Store(r) => write!(f, "store:{r}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> ImageName {
        ImageName::parse(s).unwrap()
    }

    #[test]
    fn docker_names_are_normalised_references() {
        let n = parse("docker://alpine");
        assert_eq!(n.transport(), Transport::Docker);
        assert_eq!(n.to_string(), "docker://docker.io/library/alpine:latest");
        assert_eq!(
            parse("docker://127.0.0.1:5000/a/b:1").to_string(),
            "docker://127.0.0.1:5000/a/b:1"
        );
    }

    #[test]
    fn docker_without_slashes_is_a_typed_error() {
        assert!(matches!(
            ImageName::parse("docker:alpine"),
            Err(NameError::DockerWithoutSlashes { .. })
        ));
        assert!(matches!(
            ImageName::parse("docker://Alpine"),
            Err(NameError::InvalidReference { .. })
        ));
    }

    #[test]
    fn oci_names_split_at_the_first_colon() {
        assert_eq!(
            parse("oci:/tmp/layout"),
            ImageName::Oci {
                path: "/tmp/layout".into(),
                name: None
            }
        );
        assert_eq!(
            parse("oci:/tmp/layout:127.0.0.1:5000/foo:1"),
            ImageName::Oci {
                path: "/tmp/layout".into(),
                name: Some("127.0.0.1:5000/foo:1".into())
            }
        );
        assert_eq!(
            parse("oci-archive:img.tar:v1"),
            ImageName::OciArchive {
                path: "img.tar".into(),
                name: Some("v1".into())
            }
        );
        assert_eq!(
            parse("oci:/tmp/layout:").to_string(),
            "oci:/tmp/layout",
            "an empty name is no name"
        );
    }

    #[test]
    fn file_transports_need_a_path() {
        for input in ["oci:", "oci::tag", "oci-archive:", "docker-archive::a:1"] {
            assert!(
                matches!(ImageName::parse(input), Err(NameError::MissingPath { .. })),
                "{input}"
            );
        }
    }

    #[test]
    fn layout_names_follow_the_annotation_grammar() {
        for bad in [
            "oci:/x:a b",
            "oci:/x:a::b",
            "oci:/x:a/",
            "oci:/x:/a",
            "oci:/x:ä",
        ] {
            assert!(
                matches!(
                    ImageName::parse(bad),
                    Err(NameError::InvalidLayoutName { .. })
                ),
                "{bad}"
            );
        }
        for good in ["oci:/x:v1.0", "oci:/x:a/b:c@d+e", "oci:/x:_x-y"] {
            assert!(ImageName::parse(good).is_ok(), "{good}");
        }
    }

    #[test]
    fn docker_archive_takes_a_tagged_reference_or_an_index() {
        assert_eq!(
            parse("docker-archive:/a.tar:foo"),
            ImageName::DockerArchive {
                path: "/a.tar".into(),
                image: Some(ArchiveImage::Named(
                    ImageRef::parse("docker.io/library/foo:latest").unwrap()
                ))
            }
        );
        assert_eq!(
            parse("docker-archive:/a.tar:@2"),
            ImageName::DockerArchive {
                path: "/a.tar".into(),
                image: Some(ArchiveImage::Index(2))
            }
        );
        assert!(matches!(
            ImageName::parse("docker-archive:/a.tar:@x"),
            Err(NameError::InvalidArchiveIndex { .. })
        ));
        let digest = format!("docker-archive:/a.tar:foo@sha256:{}", "a".repeat(64));
        assert!(matches!(
            ImageName::parse(&digest),
            Err(NameError::DigestInArchiveReference { .. })
        ));
    }

    #[test]
    fn bare_references_and_store_prefix_name_the_local_store() {
        assert_eq!(parse("alpine:3"), parse("store:docker.io/library/alpine:3"));
        assert_eq!(
            parse("localhost:5000/foo").to_string(),
            "store:localhost:5000/foo:latest"
        );
        assert_eq!(parse("store:foo").transport(), Transport::Store);
    }

    #[test]
    fn unknown_and_foreign_transports_are_typed_errors() {
        assert!(matches!(
            ImageName::parse("dir:/tmp/x"),
            Err(NameError::UnsupportedTransport { .. })
        ));
        assert!(matches!(
            ImageName::parse("containers-storage:foo"),
            Err(NameError::UnsupportedTransport { .. })
        ));
        assert!(matches!(
            ImageName::parse("ftp:/tmp/x"),
            Err(NameError::UnknownTransport { .. })
        ));
        assert!(matches!(
            ImageName::parse("Foo:Bar"),
            Err(NameError::InvalidReference { .. })
        ));
        assert_eq!(ImageName::parse(""), Err(NameError::Empty));
    }

    #[test]
    fn display_parses_back_to_the_same_name() {
        for input in [
            "docker://127.0.0.1:5000/a:1",
            "oci:/x:v1",
            "oci-archive:/x.tar",
            "docker-archive:/x.tar:docker.io/library/foo:2",
            "docker-archive:/x.tar:@1",
            "store:docker.io/library/alpine:latest",
        ] {
            let n = parse(input);
            assert_eq!(parse(&n.to_string()), n, "{input}");
        }
    }
}
