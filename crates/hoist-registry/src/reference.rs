//! Image references: parsing, Docker's normalisation and the familiar form.
//!
//! [`ImageRef`] is hoist's one reference type. It follows the grammar of the CNCF distribution
//! `reference` package and Docker's normalisation:
//!
//! - `alpine` is `docker.io/library/alpine:latest`; `index.docker.io` is `docker.io`;
//! - the first path component is a registry host when it contains `.` or `:`, is `localhost`, or
//!   is a bracketed IPv6 address (`[::1]:5000/foo`);
//! - a reference with neither tag nor digest gets the tag `latest`; one with a digest only keeps
//!   no tag; `name:tag@digest` keeps both (the digest is what identifies the content);
//! - digests are `sha256`, `sha384` or `sha512` in lowercase hex of the exact length.
//!
//! It adds what `oci_spec::distribution::Reference` lacks: IPv6 hosts, the familiar form, the
//! reserved name `scratch`, a 64-hex image ID rejected as a name, length limits (the full name
//! `registry/repository` at most 255 characters, a tag at most 128), ports in 1..=65535,
//! ASCII-only tags, lowercase-hex digests and an error that says which part is wrong.
//! Registry hosts are case-insensitive and normalised to lowercase.
//! Conversions to and from `oci_spec::distribution::Reference` are provided.

use std::fmt;
use std::net::Ipv6Addr;
use std::str::FromStr;

use oci_spec::image::{Digest, DigestAlgorithm};

/// The registry Docker Hub references normalise to.
pub const DOCKER_HUB: &str = "docker.io";
/// The legacy name of Docker Hub, normalised to [`DOCKER_HUB`].
pub const DOCKER_HUB_LEGACY: &str = "index.docker.io";
/// The host that serves Docker Hub's registry API.
pub const DOCKER_HUB_API_HOST: &str = "registry-1.docker.io";
/// The tag a reference without tag and digest gets.
pub const DEFAULT_TAG: &str = "latest";
/// The longest full name (`registry/repository`) accepted.
pub const NAME_MAX_LEN: usize = 255;
/// The longest tag accepted.
pub const TAG_MAX_LEN: usize = 128;
/// No valid reference is longer than this; longer input is refused before it is looked at.
pub const REFERENCE_MAX_LEN: usize = 1024;
/// The name Docker reserves for "no base image"; it cannot be pulled or pushed.
pub const RESERVED_NAME: &str = "scratch";

const OFFICIAL_PREFIX: &str = "library/";

/// Why a string is not a valid image reference.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReferenceError {
    /// The input is empty.
    #[error("empty image reference")]
    Empty,
    /// The input is longer than any valid reference can be.
    #[error(
        "image reference is {len} bytes long; no valid reference is longer than {REFERENCE_MAX_LEN}"
    )]
    TooLong {
        /// The length of the input in bytes.
        len: usize,
    },
    /// The input is a 64-character hex string, which is an image ID, not a name.
    #[error(
        "invalid image reference {input:?}: a 64-character hexadecimal string is an image ID, not a repository name"
    )]
    ImageIdAsName {
        /// The input.
        input: String,
    },
    /// There is no repository name (`:tag`, `@sha256:…`, `example.com/`).
    #[error("invalid image reference {input:?}: the repository name is missing")]
    MissingRepository {
        /// The input.
        input: String,
    },
    /// The registry host is not a valid domain name or bracketed IPv6 address.
    #[error(
        "invalid registry host {host:?} in image reference {input:?}: expected a domain name, an IPv4 address or an IPv6 address in brackets"
    )]
    InvalidHost {
        /// The host as written.
        host: String,
        /// The input.
        input: String,
    },
    /// The registry port is not a number in 1..=65535.
    #[error(
        "invalid registry port {port:?} in image reference {input:?}: expected a number from 1 to 65535"
    )]
    InvalidPort {
        /// The port as written.
        port: String,
        /// The input.
        input: String,
    },
    /// The repository name contains uppercase letters.
    #[error("invalid repository name {repository:?}: repository names must be lowercase")]
    UppercaseRepository {
        /// The repository as written.
        repository: String,
    },
    /// A path component of the repository breaks the grammar.
    #[error(
        "invalid path component {component:?} in repository name {repository:?}: components are lowercase letters and digits, separated by '.', '_', '__' or dashes, and cannot be empty"
    )]
    InvalidPathComponent {
        /// The offending component.
        component: String,
        /// The repository as written.
        repository: String,
    },
    /// The full name `registry/repository` is too long.
    #[error("image name {name:?} is {len} characters long; the limit is {NAME_MAX_LEN}")]
    NameTooLong {
        /// The normalised full name.
        name: String,
        /// Its length.
        len: usize,
    },
    /// The tag breaks the grammar.
    #[error(
        "invalid tag {tag:?}: a tag starts with an ASCII letter, digit or '_' and contains only those, '.' and '-'"
    )]
    InvalidTag {
        /// The tag as written.
        tag: String,
    },
    /// The tag is too long.
    #[error("tag {tag:?} is {len} characters long; the limit is {TAG_MAX_LEN}")]
    TagTooLong {
        /// The tag.
        tag: String,
        /// Its length.
        len: usize,
    },
    /// The digest is not `algorithm:hex`.
    #[error("invalid digest {digest:?}: {reason}")]
    InvalidDigest {
        /// The digest as written.
        digest: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The digest's hex part has the wrong length for its algorithm.
    #[error(
        "invalid digest {digest:?}: a {algorithm} digest has {expected} hex characters, this one has {found}"
    )]
    DigestLength {
        /// The digest as written.
        digest: String,
        /// The algorithm.
        algorithm: &'static str,
        /// The length the algorithm requires.
        expected: usize,
        /// The length found.
        found: usize,
    },
    /// The digest algorithm is not sha256, sha384 or sha512.
    #[error(
        "unsupported digest algorithm {algorithm:?} in {digest:?}: hoist supports sha256, sha384 and sha512"
    )]
    UnsupportedDigestAlgorithm {
        /// The algorithm.
        algorithm: String,
        /// The digest as written.
        digest: String,
    },
    /// The name is reserved (`scratch`).
    #[error(
        "{name:?} is a reserved name: it means \"no base image\" and cannot be pulled or pushed"
    )]
    ReservedName {
        /// The name as written.
        name: String,
    },
}

/// A parsed, normalised image reference: registry, repository, and a tag and/or a digest.
///
/// `Display` gives the full normalised form (`docker.io/library/alpine:latest`),
/// [`familiar`](ImageRef::familiar) the short one Docker shows (`alpine:latest`).
/// Serialises as its `Display` string.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageRef {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

impl ImageRef {
    /// Parses and normalises `input`.
    ///
    /// Checks run in a fixed order, so an input with several faults reports the first of:
    /// empty or over-long input, image ID, digest, tag, host and port, repository
    /// (missing, uppercase, components), full-name length, reserved name.
    pub fn parse(input: &str) -> Result<Self, ReferenceError> {
        if input.is_empty() {
            return Err(ReferenceError::Empty);
        }
        if input.len() > REFERENCE_MAX_LEN {
            return Err(ReferenceError::TooLong { len: input.len() });
        }
        if input.len() == 64 && input.bytes().all(is_lower_hex) {
            return Err(ReferenceError::ImageIdAsName {
                input: input.to_owned(),
            });
        }

        let (rest, digest) = match input.split_once('@') {
            Some((rest, digest)) => (rest, Some(parse_digest(digest)?)),
            None => (input, None),
        };
        // The tag is after the first ':' of the last path segment: hosts are the only other
        // place a ':' may appear, and a host is always followed by a '/'.
        let last_segment_start = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_segment_start..].find(':') {
            Some(i) => {
                let colon = last_segment_start + i;
                (&rest[..colon], Some(&rest[colon + 1..]))
            }
            None => (rest, None),
        };
        if let Some(tag) = tag {
            validate_tag(tag)?;
        }
        if name.is_empty() {
            return Err(ReferenceError::MissingRepository {
                input: input.to_owned(),
            });
        }

        let (registry, remote) = match name.split_once('/') {
            Some((first, remote)) if looks_like_host(first) => {
                (normalise_host(first, input)?, remote)
            }
            _ => (DOCKER_HUB.to_owned(), name),
        };
        if remote.is_empty() {
            return Err(ReferenceError::MissingRepository {
                input: input.to_owned(),
            });
        }
        validate_repository(remote)?;
        let repository = if registry == DOCKER_HUB && !remote.contains('/') {
            format!("{OFFICIAL_PREFIX}{remote}")
        } else {
            remote.to_owned()
        };
        let full_len = registry.len() + 1 + repository.len();
        if full_len > NAME_MAX_LEN {
            return Err(ReferenceError::NameTooLong {
                name: format!("{registry}/{repository}"),
                len: full_len,
            });
        }
        if registry == DOCKER_HUB && repository == format!("{OFFICIAL_PREFIX}{RESERVED_NAME}") {
            return Err(ReferenceError::ReservedName {
                name: name.to_owned(),
            });
        }

        let tag = match (tag, &digest) {
            (Some(tag), _) => Some(tag.to_owned()),
            (None, None) => Some(DEFAULT_TAG.to_owned()),
            (None, Some(_)) => None,
        };
        Ok(Self {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// The registry host, with its port if any: `docker.io`, `localhost:5000`, `[::1]:5000`.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The repository path: `library/alpine`, `foo/bar`.
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The tag, if any (`latest` when the input had neither tag nor digest).
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest, if any.
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// What goes in `/v2/<name>/manifests/<reference>`: the digest when there is one, else the tag.
    pub fn manifest_reference(&self) -> &str {
        match (&self.digest, &self.tag) {
            (Some(digest), _) => digest.as_ref(),
            (None, Some(tag)) => tag,
            // parse() and the constructors always set a tag or a digest.
            (None, None) => DEFAULT_TAG,
        }
    }

    /// The full normalised name without tag and digest: `docker.io/library/alpine`.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The same image name with `tag` and no digest (a tag names mutable content, so an old
    /// digest would pin something else).
    pub fn with_tag(&self, tag: &str) -> Result<Self, ReferenceError> {
        validate_tag(tag)?;
        Ok(Self {
            registry: self.registry.clone(),
            repository: self.repository.clone(),
            tag: Some(tag.to_owned()),
            digest: None,
        })
    }

    /// The same image name and tag, pinned to `digest` (`name:tag@digest`).
    pub fn with_digest(&self, digest: &Digest) -> Result<Self, ReferenceError> {
        let digest = parse_digest(digest.as_ref())?;
        Ok(Self {
            registry: self.registry.clone(),
            repository: self.repository.clone(),
            tag: self.tag.clone(),
            digest: Some(digest),
        })
    }

    /// Whether the registry is Docker Hub.
    pub fn is_docker_hub(&self) -> bool {
        self.registry == DOCKER_HUB
    }

    /// The host (and port) that serves the registry API: `registry-1.docker.io` for Docker Hub,
    /// the registry itself otherwise.
    pub fn api_host(&self) -> &str {
        if self.is_docker_hub() {
            DOCKER_HUB_API_HOST
        } else {
            &self.registry
        }
    }

    /// The name as Docker shows it: `alpine` for `docker.io/library/alpine`, `foo/bar` for
    /// `docker.io/foo/bar`, the full name for other registries. Docker Hub names whose first
    /// component would read as a host (`docker.io/a.b/c`) keep their `docker.io/` so the
    /// familiar form always parses back to the same reference.
    pub fn familiar_name(&self) -> String {
        if !self.is_docker_hub() {
            return self.name();
        }
        match self.repository.strip_prefix(OFFICIAL_PREFIX) {
            Some(rest) if !rest.contains('/') => rest.to_owned(),
            _ => match self.repository.split_once('/') {
                Some((first, _)) if looks_like_host(first) => self.name(),
                _ => self.repository.clone(),
            },
        }
    }

    /// The reference as Docker shows it, with tag and digest: `alpine:latest`, `foo/bar:1@sha256:…`.
    pub fn familiar(&self) -> String {
        let mut out = self.familiar_name();
        push_tag_digest(&mut out, self.tag.as_deref(), self.digest.as_ref());
        out
    }
}

fn push_tag_digest(out: &mut String, tag: Option<&str>, digest: Option<&Digest>) {
    if let Some(tag) = tag {
        out.push(':');
        out.push_str(tag);
    }
    if let Some(digest) = digest {
        out.push('@');
        out.push_str(digest.as_ref());
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = self.name();
        push_tag_digest(&mut out, self.tag.as_deref(), self.digest.as_ref());
        f.write_str(&out)
    }
}

impl FromStr for ImageRef {
    type Err = ReferenceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<&str> for ImageRef {
    type Error = ReferenceError;

    fn try_from(s: &str) -> Result<Self, Self::Error> {
        Self::parse(s)
    }
}

impl serde::Serialize for ImageRef {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for ImageRef {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl From<&ImageRef> for oci_spec::distribution::Reference {
    fn from(r: &ImageRef) -> Self {
        use oci_spec::distribution::Reference;
        let (registry, repository) = (r.registry.clone(), r.repository.clone());
        match (&r.tag, &r.digest) {
            (Some(tag), Some(digest)) => Reference::with_tag_and_digest(
                registry,
                repository,
                tag.clone(),
                digest.to_string(),
            ),
            (None, Some(digest)) => {
                Reference::with_digest(registry, repository, digest.to_string())
            }
            (Some(tag), None) => Reference::with_tag(registry, repository, tag.clone()),
            (None, None) => Reference::with_tag(registry, repository, DEFAULT_TAG.to_owned()),
        }
    }
}

impl TryFrom<&oci_spec::distribution::Reference> for ImageRef {
    type Error = ReferenceError;

    fn try_from(r: &oci_spec::distribution::Reference) -> Result<Self, Self::Error> {
        Self::parse(&r.whole())
    }
}

fn is_lower_hex(b: u8) -> bool {
    b.is_ascii_digit() || (b'a'..=b'f').contains(&b)
}

fn is_lower_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// Docker's rule for "the first component is a registry host". Docker also treats a component
/// with uppercase letters as a host; hoist does not, so `MyUser/app` reports an uppercase
/// repository instead of trying to reach a host called `MyUser`.
fn looks_like_host(first: &str) -> bool {
    first.contains('.') || first.contains(':') || first == "localhost" || first.starts_with('[')
}

/// Validates `host[:port]` and returns it normalised (lowercase, `index.docker.io` -> `docker.io`).
fn normalise_host(domain: &str, input: &str) -> Result<String, ReferenceError> {
    let invalid_host = |host: &str| ReferenceError::InvalidHost {
        host: host.to_owned(),
        input: input.to_owned(),
    };
    let port = if let Some(bracketed) = domain.strip_prefix('[') {
        let Some((addr, after)) = bracketed.split_once(']') else {
            return Err(invalid_host(domain));
        };
        if addr.parse::<Ipv6Addr>().is_err() {
            return Err(invalid_host(&domain[..addr.len() + 2]));
        }
        match after {
            "" => None,
            _ => match after.strip_prefix(':') {
                Some(port) => Some(port),
                None => return Err(invalid_host(domain)),
            },
        }
    } else {
        let (host, port) = match domain.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (domain, None),
        };
        if host.is_empty() || !host.split('.').all(valid_domain_component) {
            return Err(invalid_host(host));
        }
        port
    };
    if let Some(port) = port {
        let valid = !port.is_empty()
            && port.bytes().all(|b| b.is_ascii_digit())
            && port.parse::<u16>().is_ok_and(|p| p != 0);
        if !valid {
            return Err(ReferenceError::InvalidPort {
                port: port.to_owned(),
                input: input.to_owned(),
            });
        }
    }
    let normalised = domain.to_ascii_lowercase();
    if normalised == DOCKER_HUB_LEGACY {
        return Ok(DOCKER_HUB.to_owned());
    }
    Ok(normalised)
}

/// `[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?`
fn valid_domain_component(c: &str) -> bool {
    let b = c.as_bytes();
    match (b.first(), b.last()) {
        (Some(first), Some(last)) => {
            first.is_ascii_alphanumeric()
                && last.is_ascii_alphanumeric()
                && b.iter().all(|&x| x.is_ascii_alphanumeric() || x == b'-')
        }
        _ => false,
    }
}

fn validate_repository(remote: &str) -> Result<(), ReferenceError> {
    if remote.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(ReferenceError::UppercaseRepository {
            repository: remote.to_owned(),
        });
    }
    match remote.split('/').find(|c| !valid_path_component(c)) {
        Some(component) => Err(ReferenceError::InvalidPathComponent {
            component: component.to_owned(),
            repository: remote.to_owned(),
        }),
        None => Ok(()),
    }
}

/// `[a-z0-9]+(sep[a-z0-9]+)*` where `sep` is `.`, `_`, `__` or one or more `-`.
fn valid_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    let mut i = 0;
    loop {
        let start = i;
        while i < b.len() && is_lower_alnum(b[i]) {
            i += 1;
        }
        if i == start {
            return false;
        }
        if i == b.len() {
            return true;
        }
        match b[i] {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if b.get(i) == Some(&b'_') {
                    i += 1;
                }
            }
            b'-' => {
                while b.get(i) == Some(&b'-') {
                    i += 1;
                }
            }
            _ => return false,
        }
    }
}

fn validate_tag(tag: &str) -> Result<(), ReferenceError> {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let b = tag.as_bytes();
    let valid = match b.first() {
        Some(&first) => word(first) && b.iter().all(|&x| word(x) || x == b'.' || x == b'-'),
        None => false,
    };
    if !valid {
        return Err(ReferenceError::InvalidTag {
            tag: tag.to_owned(),
        });
    }
    if tag.len() > TAG_MAX_LEN {
        return Err(ReferenceError::TagTooLong {
            tag: tag.to_owned(),
            len: tag.len(),
        });
    }
    Ok(())
}

fn parse_digest(digest: &str) -> Result<Digest, ReferenceError> {
    let invalid = |reason| ReferenceError::InvalidDigest {
        digest: digest.to_owned(),
        reason,
    };
    let Some((algorithm, hex)) = digest.split_once(':') else {
        return Err(invalid(
            "expected algorithm:hex, like sha256:<64 hex characters>",
        ));
    };
    // algorithm := component ([+._-] component)*, component := [a-z0-9]+ (OCI image spec).
    let algorithm_ok = !algorithm.is_empty()
        && algorithm
            .split(['+', '.', '_', '-'])
            .all(|c| !c.is_empty() && c.bytes().all(is_lower_alnum));
    if !algorithm_ok {
        return Err(invalid("the algorithm is not a lowercase name like sha256"));
    }
    let (name, expected) = match DigestAlgorithm::from(algorithm) {
        DigestAlgorithm::Sha256 => ("sha256", 64),
        DigestAlgorithm::Sha384 => ("sha384", 96),
        DigestAlgorithm::Sha512 => ("sha512", 128),
        _ => {
            return Err(ReferenceError::UnsupportedDigestAlgorithm {
                algorithm: algorithm.to_owned(),
                digest: digest.to_owned(),
            });
        }
    };
    if !hex.bytes().all(is_lower_hex) {
        return Err(invalid(
            "the hex part must be lowercase hexadecimal (0-9, a-f)",
        ));
    }
    if hex.len() != expected {
        return Err(ReferenceError::DigestLength {
            digest: digest.to_owned(),
            algorithm: name,
            expected,
            found: hex.len(),
        });
    }
    Digest::from_str(digest).map_err(|_| invalid("not a valid OCI digest"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const H256: &str = "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff";
    const H384: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn h512() -> String {
        "0123456789abcdef".repeat(8)
    }

    struct Good {
        input: String,
        registry: &'static str,
        repository: String,
        tag: Option<String>,
        digest: Option<String>,
        familiar: String,
    }

    fn good(
        input: impl Into<String>,
        registry: &'static str,
        repository: impl Into<String>,
        tag: Option<&str>,
        digest: Option<String>,
        familiar: impl Into<String>,
    ) -> Good {
        Good {
            input: input.into(),
            registry,
            repository: repository.into(),
            tag: tag.map(str::to_owned),
            digest,
            familiar: familiar.into(),
        }
    }

    fn s(x: &str) -> String {
        x.to_owned()
    }

    fn good_table() -> Vec<Good> {
        let d256 = format!("sha256:{H256}");
        let d384 = format!("sha384:{H384}");
        let d512 = format!("sha512:{}", h512());
        let long_repo = "a".repeat(NAME_MAX_LEN - "docker.io/library/".len());
        let long_tag = "t".repeat(TAG_MAX_LEN);
        vec![
            // Docker Hub normalisation and the familiar form.
            good(
                "alpine",
                "docker.io",
                "library/alpine",
                Some("latest"),
                None,
                "alpine:latest",
            ),
            good(
                "alpine:3.19",
                "docker.io",
                "library/alpine",
                Some("3.19"),
                None,
                "alpine:3.19",
            ),
            good(
                "library/alpine",
                "docker.io",
                "library/alpine",
                Some("latest"),
                None,
                "alpine:latest",
            ),
            good(
                "docker.io/library/alpine:latest",
                "docker.io",
                "library/alpine",
                Some("latest"),
                None,
                "alpine:latest",
            ),
            good(
                "docker.io/alpine",
                "docker.io",
                "library/alpine",
                Some("latest"),
                None,
                "alpine:latest",
            ),
            good(
                "index.docker.io/alpine",
                "docker.io",
                "library/alpine",
                Some("latest"),
                None,
                "alpine:latest",
            ),
            good(
                "index.docker.io/foo/bar:1",
                "docker.io",
                "foo/bar",
                Some("1"),
                None,
                "foo/bar:1",
            ),
            good(
                "INDEX.DOCKER.IO/foo/bar",
                "docker.io",
                "foo/bar",
                Some("latest"),
                None,
                "foo/bar:latest",
            ),
            good(
                "docker.io/foo/bar",
                "docker.io",
                "foo/bar",
                Some("latest"),
                None,
                "foo/bar:latest",
            ),
            good(
                "foo/bar",
                "docker.io",
                "foo/bar",
                Some("latest"),
                None,
                "foo/bar:latest",
            ),
            good(
                "foo/bar/baz",
                "docker.io",
                "foo/bar/baz",
                Some("latest"),
                None,
                "foo/bar/baz:latest",
            ),
            good(
                "library/foo/bar",
                "docker.io",
                "library/foo/bar",
                Some("latest"),
                None,
                "library/foo/bar:latest",
            ),
            good(
                "docker.io/a.b/c",
                "docker.io",
                "a.b/c",
                Some("latest"),
                None,
                "docker.io/a.b/c:latest",
            ),
            good(
                "docker.io/localhost/c",
                "docker.io",
                "localhost/c",
                Some("latest"),
                None,
                "docker.io/localhost/c:latest",
            ),
            good(
                "registry-1.docker.io/foo/bar",
                "registry-1.docker.io",
                "foo/bar",
                Some("latest"),
                None,
                "registry-1.docker.io/foo/bar:latest",
            ),
            // Names that look like hosts but have no '/'.
            good(
                "example.com",
                "docker.io",
                "library/example.com",
                Some("latest"),
                None,
                "example.com:latest",
            ),
            good(
                "localhost",
                "docker.io",
                "library/localhost",
                Some("latest"),
                None,
                "localhost:latest",
            ),
            good(
                "localhost:5000",
                "docker.io",
                "library/localhost",
                Some("5000"),
                None,
                "localhost:5000",
            ),
            good(
                "test.com:5000",
                "docker.io",
                "library/test.com",
                Some("5000"),
                None,
                "test.com:5000",
            ),
            // Hosts, ports, localhost, IPv4, IPv6.
            good(
                "localhost/foo",
                "localhost",
                "foo",
                Some("latest"),
                None,
                "localhost/foo:latest",
            ),
            good(
                "localhost:5000/foo/bar:tag",
                "localhost:5000",
                "foo/bar",
                Some("tag"),
                None,
                "localhost:5000/foo/bar:tag",
            ),
            good(
                "127.0.0.1:5000/foo",
                "127.0.0.1:5000",
                "foo",
                Some("latest"),
                None,
                "127.0.0.1:5000/foo:latest",
            ),
            good(
                "192.168.1.1/foo:1.0",
                "192.168.1.1",
                "foo",
                Some("1.0"),
                None,
                "192.168.1.1/foo:1.0",
            ),
            good(
                "[::1]:5000/foo",
                "[::1]:5000",
                "foo",
                Some("latest"),
                None,
                "[::1]:5000/foo:latest",
            ),
            good(
                "[::1]/foo:tag",
                "[::1]",
                "foo",
                Some("tag"),
                None,
                "[::1]/foo:tag",
            ),
            good(
                "[2001:db8::1]:443/a/b",
                "[2001:db8::1]:443",
                "a/b",
                Some("latest"),
                None,
                "[2001:db8::1]:443/a/b:latest",
            ),
            good(
                "[2001:DB8::1]/a",
                "[2001:db8::1]",
                "a",
                Some("latest"),
                None,
                "[2001:db8::1]/a:latest",
            ),
            good(
                format!("[::1]:5000/foo:v1@{d256}"),
                "[::1]:5000",
                "foo",
                Some("v1"),
                Some(d256.clone()),
                format!("[::1]:5000/foo:v1@{d256}"),
            ),
            good(
                "example.com:65535/foo",
                "example.com:65535",
                "foo",
                Some("latest"),
                None,
                "example.com:65535/foo:latest",
            ),
            good(
                "Example.COM/foo",
                "example.com",
                "foo",
                Some("latest"),
                None,
                "example.com/foo:latest",
            ),
            good(
                "sub-dom1.foo.com/bar/baz/quux:some-long-tag",
                "sub-dom1.foo.com",
                "bar/baz/quux",
                Some("some-long-tag"),
                None,
                "sub-dom1.foo.com/bar/baz/quux:some-long-tag",
            ),
            good(
                "xn--n3h.com/myimage:xn--n3h.com",
                "xn--n3h.com",
                "myimage",
                Some("xn--n3h.com"),
                None,
                "xn--n3h.com/myimage:xn--n3h.com",
            ),
            good(
                "b.gcr.io/test.example.com/my-app:test.example.com",
                "b.gcr.io",
                "test.example.com/my-app",
                Some("test.example.com"),
                None,
                "b.gcr.io/test.example.com/my-app:test.example.com",
            ),
            good(
                "ghcr.io/o/r",
                "ghcr.io",
                "o/r",
                Some("latest"),
                None,
                "ghcr.io/o/r:latest",
            ),
            // Path component separators.
            good(
                "a-b_c__d---e/f.g-h",
                "docker.io",
                "a-b_c__d---e/f.g-h",
                Some("latest"),
                None,
                "a-b_c__d---e/f.g-h:latest",
            ),
            good(
                "foo_bar.com:8080",
                "docker.io",
                "library/foo_bar.com",
                Some("8080"),
                None,
                "foo_bar.com:8080",
            ),
            good(
                "0/1/2",
                "docker.io",
                "0/1/2",
                Some("latest"),
                None,
                "0/1/2:latest",
            ),
            // Tags.
            good(
                "foo:Uppercase_Tag",
                "docker.io",
                "library/foo",
                Some("Uppercase_Tag"),
                None,
                "foo:Uppercase_Tag",
            ),
            good(
                "foo:_under",
                "docker.io",
                "library/foo",
                Some("_under"),
                None,
                "foo:_under",
            ),
            good(
                "foo:1.2.3-rc.1",
                "docker.io",
                "library/foo",
                Some("1.2.3-rc.1"),
                None,
                "foo:1.2.3-rc.1",
            ),
            good(
                format!("foo:{long_tag}"),
                "docker.io",
                "library/foo",
                Some(long_tag.as_str()),
                None,
                format!("foo:{long_tag}"),
            ),
            // Digests, with and without tag.
            good(
                format!("foo@{d256}"),
                "docker.io",
                "library/foo",
                None,
                Some(d256.clone()),
                format!("foo@{d256}"),
            ),
            good(
                format!("foo:v1@{d256}"),
                "docker.io",
                "library/foo",
                Some("v1"),
                Some(d256.clone()),
                format!("foo:v1@{d256}"),
            ),
            good(
                format!("quay.io/a/b@{d384}"),
                "quay.io",
                "a/b",
                None,
                Some(d384.clone()),
                format!("quay.io/a/b@{d384}"),
            ),
            good(
                format!("quay.io/a/b:t@{d512}"),
                "quay.io",
                "a/b",
                Some("t"),
                Some(d512.clone()),
                format!("quay.io/a/b:t@{d512}"),
            ),
            good(
                format!("localhost:5000/x@{d512}"),
                "localhost:5000",
                "x",
                None,
                Some(d512.clone()),
                format!("localhost:5000/x@{d512}"),
            ),
            // Length limits, at the limit.
            good(
                long_repo.clone(),
                "docker.io",
                format!("library/{long_repo}"),
                Some("latest"),
                None,
                format!("{long_repo}:latest"),
            ),
            // An image ID with a tag is a name, not an ID.
            good(
                format!("{H256}:tag"),
                "docker.io",
                format!("library/{H256}"),
                Some("tag"),
                None,
                format!("{H256}:tag"),
            ),
            // scratch is only reserved on Docker Hub.
            good(
                "example.com/scratch",
                "example.com",
                "scratch",
                Some("latest"),
                None,
                "example.com/scratch:latest",
            ),
            good(
                "foo/scratch",
                "docker.io",
                "foo/scratch",
                Some("latest"),
                None,
                "foo/scratch:latest",
            ),
        ]
    }

    fn bad_table() -> Vec<(String, ReferenceError)> {
        use ReferenceError as E;
        let d256 = format!("sha256:{H256}");
        let input = |x: &str| x.to_owned();
        let over_repo = "a".repeat(NAME_MAX_LEN - "docker.io/library/".len() + 1);
        let over_tag = "t".repeat(TAG_MAX_LEN + 1);
        let host_name_over = format!(
            "example.com/{}",
            "b".repeat(NAME_MAX_LEN - "example.com/".len() + 1)
        );
        vec![
            (s(""), E::Empty),
            (
                "a".repeat(REFERENCE_MAX_LEN + 1),
                E::TooLong {
                    len: REFERENCE_MAX_LEN + 1,
                },
            ),
            (s(H256), E::ImageIdAsName { input: s(H256) }),
            (s(":tag"), E::MissingRepository { input: s(":tag") }),
            (
                format!("@{d256}"),
                E::MissingRepository {
                    input: format!("@{d256}"),
                },
            ),
            (
                s("example.com/"),
                E::MissingRepository {
                    input: s("example.com/"),
                },
            ),
            (
                s("localhost:5000/"),
                E::MissingRepository {
                    input: s("localhost:5000/"),
                },
            ),
            // Uppercase in the repository, wherever it is.
            (
                s("Uppercase:tag"),
                E::UppercaseRepository {
                    repository: s("Uppercase"),
                },
            ),
            (
                s("Foo/bar"),
                E::UppercaseRepository {
                    repository: s("Foo/bar"),
                },
            ),
            (
                s("test:5000/Uppercase/lowercase:tag"),
                E::UppercaseRepository {
                    repository: s("Uppercase/lowercase"),
                },
            ),
            (
                s("docker.io/library/Alpine"),
                E::UppercaseRepository {
                    repository: s("library/Alpine"),
                },
            ),
            // Path components.
            (
                s("foo//bar"),
                E::InvalidPathComponent {
                    component: s(""),
                    repository: s("foo//bar"),
                },
            ),
            (
                s("/foo"),
                E::InvalidPathComponent {
                    component: s(""),
                    repository: s("/foo"),
                },
            ),
            (
                s("foo/"),
                E::InvalidPathComponent {
                    component: s(""),
                    repository: s("foo/"),
                },
            ),
            (
                s("-foo"),
                E::InvalidPathComponent {
                    component: s("-foo"),
                    repository: s("-foo"),
                },
            ),
            (
                s("foo-/bar"),
                E::InvalidPathComponent {
                    component: s("foo-"),
                    repository: s("foo-/bar"),
                },
            ),
            (
                s("foo..bar"),
                E::InvalidPathComponent {
                    component: s("foo..bar"),
                    repository: s("foo..bar"),
                },
            ),
            (
                s("foo___bar"),
                E::InvalidPathComponent {
                    component: s("foo___bar"),
                    repository: s("foo___bar"),
                },
            ),
            (
                s("foo._bar"),
                E::InvalidPathComponent {
                    component: s("foo._bar"),
                    repository: s("foo._bar"),
                },
            ),
            (
                s("aa/asdf$$^/aa"),
                E::InvalidPathComponent {
                    component: s("asdf$$^"),
                    repository: s("aa/asdf$$^/aa"),
                },
            ),
            (
                s("fóo"),
                E::InvalidPathComponent {
                    component: s("fóo"),
                    repository: s("fóo"),
                },
            ),
            (
                s("foo bar"),
                E::InvalidPathComponent {
                    component: s("foo bar"),
                    repository: s("foo bar"),
                },
            ),
            // Hosts and ports.
            (
                s("-example.com/foo"),
                E::InvalidHost {
                    host: s("-example.com"),
                    input: input("-example.com/foo"),
                },
            ),
            (
                s("example-.com/foo"),
                E::InvalidHost {
                    host: s("example-.com"),
                    input: input("example-.com/foo"),
                },
            ),
            (
                s("exa_mple.com/foo"),
                E::InvalidHost {
                    host: s("exa_mple.com"),
                    input: input("exa_mple.com/foo"),
                },
            ),
            (
                s("example..com/foo"),
                E::InvalidHost {
                    host: s("example..com"),
                    input: input("example..com/foo"),
                },
            ),
            (
                s(":5000/foo"),
                E::InvalidHost {
                    host: s(""),
                    input: input(":5000/foo"),
                },
            ),
            (
                s("[::1/foo"),
                E::InvalidHost {
                    host: s("[::1"),
                    input: input("[::1/foo"),
                },
            ),
            (
                s("[::g]/foo"),
                E::InvalidHost {
                    host: s("[::g]"),
                    input: input("[::g]/foo"),
                },
            ),
            (
                s("[fe80::1%eth0]/foo"),
                E::InvalidHost {
                    host: s("[fe80::1%eth0]"),
                    input: input("[fe80::1%eth0]/foo"),
                },
            ),
            (
                s("[127.0.0.1]/foo"),
                E::InvalidHost {
                    host: s("[127.0.0.1]"),
                    input: input("[127.0.0.1]/foo"),
                },
            ),
            (
                s("[::1]x/foo"),
                E::InvalidHost {
                    host: s("[::1]x"),
                    input: input("[::1]x/foo"),
                },
            ),
            (
                s("localhost:/foo"),
                E::InvalidPort {
                    port: s(""),
                    input: input("localhost:/foo"),
                },
            ),
            (
                s("localhost:http/foo"),
                E::InvalidPort {
                    port: s("http"),
                    input: input("localhost:http/foo"),
                },
            ),
            (
                s("localhost:+80/foo"),
                E::InvalidPort {
                    port: s("+80"),
                    input: input("localhost:+80/foo"),
                },
            ),
            (
                s("localhost:65536/foo"),
                E::InvalidPort {
                    port: s("65536"),
                    input: input("localhost:65536/foo"),
                },
            ),
            (
                s("localhost:0/foo"),
                E::InvalidPort {
                    port: s("0"),
                    input: input("localhost:0/foo"),
                },
            ),
            (
                s("[::1]:99999/foo"),
                E::InvalidPort {
                    port: s("99999"),
                    input: input("[::1]:99999/foo"),
                },
            ),
            (
                s("a:b:c/foo"),
                E::InvalidPort {
                    port: s("b:c"),
                    input: input("a:b:c/foo"),
                },
            ),
            // Tags.
            (s("foo:"), E::InvalidTag { tag: s("") }),
            (s("foo:.tag"), E::InvalidTag { tag: s(".tag") }),
            (s("foo:-tag"), E::InvalidTag { tag: s("-tag") }),
            (s("foo:tägé"), E::InvalidTag { tag: s("tägé") }),
            (s("foo:a:b"), E::InvalidTag { tag: s("a:b") }),
            (s("foo:a+b"), E::InvalidTag { tag: s("a+b") }),
            (s("[::1]:5000"), E::InvalidTag { tag: s(":1]:5000") }),
            (
                format!("foo:{over_tag}"),
                E::TagTooLong {
                    tag: over_tag.clone(),
                    len: TAG_MAX_LEN + 1,
                },
            ),
            // Digests.
            (
                s("foo@"),
                E::InvalidDigest {
                    digest: s(""),
                    reason: "expected algorithm:hex, like sha256:<64 hex characters>",
                },
            ),
            (
                s("foo@sha256"),
                E::InvalidDigest {
                    digest: s("sha256"),
                    reason: "expected algorithm:hex, like sha256:<64 hex characters>",
                },
            ),
            (
                format!("foo@SHA256:{H256}"),
                E::InvalidDigest {
                    digest: format!("SHA256:{H256}"),
                    reason: "the algorithm is not a lowercase name like sha256",
                },
            ),
            (
                format!("foo@sha256:{}", H256.to_uppercase()),
                E::InvalidDigest {
                    digest: format!("sha256:{}", H256.to_uppercase()),
                    reason: "the hex part must be lowercase hexadecimal (0-9, a-f)",
                },
            ),
            (
                s("foo@sha256:xyz"),
                E::InvalidDigest {
                    digest: s("sha256:xyz"),
                    reason: "the hex part must be lowercase hexadecimal (0-9, a-f)",
                },
            ),
            (
                format!("foo@{d256}@{d256}"),
                E::InvalidDigest {
                    digest: format!("{d256}@{d256}"),
                    reason: "the hex part must be lowercase hexadecimal (0-9, a-f)",
                },
            ),
            (
                s("foo@sha256:ffff"),
                E::DigestLength {
                    digest: s("sha256:ffff"),
                    algorithm: "sha256",
                    expected: 64,
                    found: 4,
                },
            ),
            (
                format!("foo@sha384:{H256}"),
                E::DigestLength {
                    digest: format!("sha384:{H256}"),
                    algorithm: "sha384",
                    expected: 96,
                    found: 64,
                },
            ),
            (
                format!("foo@sha512:{H384}"),
                E::DigestLength {
                    digest: format!("sha512:{H384}"),
                    algorithm: "sha512",
                    expected: 128,
                    found: 96,
                },
            ),
            (
                format!("foo@sha256:{H256}0"),
                E::DigestLength {
                    digest: format!("sha256:{H256}0"),
                    algorithm: "sha256",
                    expected: 64,
                    found: 65,
                },
            ),
            (
                format!("foo@md5:{}", &H256[..32]),
                E::UnsupportedDigestAlgorithm {
                    algorithm: s("md5"),
                    digest: format!("md5:{}", &H256[..32]),
                },
            ),
            (
                format!("foo@sha256+b64:{H256}"),
                E::UnsupportedDigestAlgorithm {
                    algorithm: s("sha256+b64"),
                    digest: format!("sha256+b64:{H256}"),
                },
            ),
            // Lengths.
            (
                over_repo.clone(),
                E::NameTooLong {
                    name: format!("docker.io/library/{over_repo}"),
                    len: NAME_MAX_LEN + 1,
                },
            ),
            (
                host_name_over.clone(),
                E::NameTooLong {
                    name: host_name_over.clone(),
                    len: NAME_MAX_LEN + 1,
                },
            ),
            // The reserved name.
            (s("scratch"), E::ReservedName { name: s("scratch") }),
            (s("scratch:latest"), E::ReservedName { name: s("scratch") }),
            (
                s("library/scratch"),
                E::ReservedName {
                    name: s("library/scratch"),
                },
            ),
            (
                s("docker.io/library/scratch:1"),
                E::ReservedName {
                    name: s("docker.io/library/scratch"),
                },
            ),
        ]
    }

    #[test]
    fn table_has_at_least_sixty_cases_covering_every_error_variant() {
        assert!(good_table().len() + bad_table().len() >= 60);
        let names: std::collections::BTreeSet<String> = bad_table()
            .iter()
            .map(|(_, e)| {
                format!("{e:?}")
                    .split([' ', '{'])
                    .next()
                    .unwrap_or("")
                    .to_owned()
            })
            .collect();
        for variant in [
            "Empty",
            "TooLong",
            "ImageIdAsName",
            "MissingRepository",
            "InvalidHost",
            "InvalidPort",
            "UppercaseRepository",
            "InvalidPathComponent",
            "NameTooLong",
            "InvalidTag",
            "TagTooLong",
            "InvalidDigest",
            "DigestLength",
            "UnsupportedDigestAlgorithm",
            "ReservedName",
        ] {
            assert!(names.contains(variant), "no table case for {variant}");
        }
    }

    #[test]
    fn valid_references_parse_to_the_pinned_parts() {
        for case in good_table() {
            let r = ImageRef::parse(&case.input)
                .unwrap_or_else(|e| panic!("{:?} should parse: {e}", case.input));
            assert_eq!(r.registry(), case.registry, "registry of {:?}", case.input);
            assert_eq!(
                r.repository(),
                case.repository,
                "repository of {:?}",
                case.input
            );
            assert_eq!(r.tag(), case.tag.as_deref(), "tag of {:?}", case.input);
            assert_eq!(
                r.digest().map(|d| d.to_string()),
                case.digest,
                "digest of {:?}",
                case.input
            );
            assert_eq!(
                r.familiar(),
                case.familiar,
                "familiar form of {:?}",
                case.input
            );
            // Display is the full normalised form and parses back to the same reference.
            let display = r.to_string();
            assert!(display.starts_with(&format!("{}/{}", case.registry, case.repository)));
            assert_eq!(ImageRef::parse(&display), Ok(r.clone()), "{display:?}");
            // The familiar form names the same image.
            assert_eq!(ImageRef::parse(&r.familiar()), Ok(r), "{:?}", case.input);
        }
    }

    #[test]
    fn invalid_references_fail_with_the_pinned_error() {
        for (input, expected) in bad_table() {
            assert_eq!(ImageRef::parse(&input), Err(expected), "input {input:?}");
        }
    }

    #[test]
    fn error_messages_name_the_offending_part() {
        let e = ImageRef::parse("test:5000/Uppercase/x").unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid repository name \"Uppercase/x\": repository names must be lowercase"
        );
        let e = ImageRef::parse("foo@md5:0123456789abcdef0123456789abcdef").unwrap_err();
        assert!(e.to_string().contains("\"md5\""), "{e}");
        // Control characters in hostile input are escaped, not printed raw.
        let e = ImageRef::parse("foo:\u{1b}[31m").unwrap_err();
        assert!(!e.to_string().contains('\u{1b}'), "{e}");
    }

    #[test]
    fn familiar_name_strips_docker_hub_and_library_only() {
        let name = |s: &str| ImageRef::parse(s).unwrap().familiar_name();
        assert_eq!(name("docker.io/library/alpine:latest"), "alpine");
        assert_eq!(name("docker.io/foo/bar"), "foo/bar");
        assert_eq!(name("docker.io/library/foo/bar"), "library/foo/bar");
        assert_eq!(
            name("localhost:5000/library/alpine"),
            "localhost:5000/library/alpine"
        );
    }

    #[test]
    fn api_host_maps_docker_hub_to_its_registry_host() {
        let r = ImageRef::parse("alpine").unwrap();
        assert!(r.is_docker_hub());
        assert_eq!(r.api_host(), "registry-1.docker.io");
        let r = ImageRef::parse("[::1]:5000/foo").unwrap();
        assert!(!r.is_docker_hub());
        assert_eq!(r.api_host(), "[::1]:5000");
    }

    #[test]
    fn manifest_reference_prefers_the_digest() {
        let d = format!("sha256:{H256}");
        assert_eq!(
            ImageRef::parse("foo:v1").unwrap().manifest_reference(),
            "v1"
        );
        assert_eq!(
            ImageRef::parse(&format!("foo:v1@{d}"))
                .unwrap()
                .manifest_reference(),
            d
        );
        assert_eq!(
            ImageRef::parse(&format!("foo@{d}"))
                .unwrap()
                .manifest_reference(),
            d
        );
    }

    #[test]
    fn with_tag_replaces_tag_and_drops_digest() {
        let r = ImageRef::parse(&format!("foo:v1@sha256:{H256}")).unwrap();
        let t = r.with_tag("v2").unwrap();
        assert_eq!(t.to_string(), "docker.io/library/foo:v2");
        assert_eq!(
            r.with_tag("bad tag"),
            Err(ReferenceError::InvalidTag { tag: s("bad tag") })
        );
    }

    #[test]
    fn with_digest_pins_and_keeps_the_tag() {
        let r = ImageRef::parse("localhost:5000/foo:v1").unwrap();
        let d: Digest = format!("sha512:{}", h512()).parse().unwrap();
        let p = r.with_digest(&d).unwrap();
        assert_eq!(p.to_string(), format!("localhost:5000/foo:v1@{d}"));
        let other: Digest = "blake3:abcd".parse().unwrap();
        assert!(matches!(
            r.with_digest(&other),
            Err(ReferenceError::UnsupportedDigestAlgorithm { .. })
        ));
    }

    #[test]
    fn serde_uses_the_normalised_string() {
        let r = ImageRef::parse("alpine").unwrap();
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(json, "\"docker.io/library/alpine:latest\"");
        let back: ImageRef = serde_json::from_str("\"alpine\"").unwrap();
        assert_eq!(back, r);
        assert!(serde_json::from_str::<ImageRef>("\"scratch\"").is_err());
    }

    #[test]
    fn converts_to_and_from_oci_spec_reference() {
        let r = ImageRef::parse(&format!("quay.io/a/b:t@sha256:{H256}")).unwrap();
        let o = oci_spec::distribution::Reference::from(&r);
        assert_eq!(o.registry(), "quay.io");
        assert_eq!(o.repository(), "a/b");
        assert_eq!(o.tag(), Some("t"));
        assert_eq!(o.digest(), Some(format!("sha256:{H256}").as_str()));
        assert_eq!(ImageRef::try_from(&o), Ok(r));
    }

    /// Inputs where oci-spec's parser is not enough on its own; each must stay handled here.
    #[test]
    fn fixes_what_oci_spec_reference_gets_wrong() {
        use oci_spec::distribution::Reference;
        let upper_hex = format!("foo@sha256:{}", H256.to_uppercase());
        for input in [
            "Foo/bar",
            "foo:tägé",
            upper_hex.as_str(),
            "localhost:99999/foo",
            "scratch",
            H256,
        ] {
            assert!(
                Reference::try_from(input).is_ok(),
                "oci-spec accepts {input:?}"
            );
            assert!(ImageRef::parse(input).is_err(), "hoist refuses {input:?}");
        }
        assert!(Reference::try_from("[::1]:5000/foo").is_err());
        assert!(ImageRef::parse("[::1]:5000/foo").is_ok());
    }

    fn component() -> impl Strategy<Value = String> {
        "[a-z0-9]{1,5}((\\.|_|__|-{1,3})[a-z0-9]{1,5}){0,2}"
    }

    fn host() -> impl Strategy<Value = Option<String>> {
        prop_oneof![
            Just(None),
            Just(Some(s("docker.io"))),
            Just(Some(s("index.docker.io"))),
            Just(Some(s("localhost"))),
            "[a-z0-9]{1,8}(\\.[a-z0-9]{1,8}){1,3}(:[1-9][0-9]{0,3})?".prop_map(Some),
            "localhost:[1-9][0-9]{0,3}".prop_map(Some),
            "[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}(:[1-9][0-9]{0,3})?".prop_map(Some),
        ]
    }

    fn ipv6_host() -> impl Strategy<Value = String> {
        (any::<[u16; 8]>(), proptest::option::of(1u16..)).prop_map(|(seg, port)| {
            let addr = Ipv6Addr::from(seg);
            match port {
                Some(p) => format!("[{addr}]:{p}"),
                None => format!("[{addr}]"),
            }
        })
    }

    fn digest() -> impl Strategy<Value = String> {
        prop_oneof![
            "[0-9a-f]{64}".prop_map(|h| format!("sha256:{h}")),
            "[0-9a-f]{96}".prop_map(|h| format!("sha384:{h}")),
            "[0-9a-f]{128}".prop_map(|h| format!("sha512:{h}")),
        ]
    }

    fn reference_string(
        host: impl Strategy<Value = Option<String>>,
    ) -> impl Strategy<Value = String> {
        (
            host,
            proptest::collection::vec(component(), 1..4),
            proptest::option::of("[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}"),
            proptest::option::of(digest()),
        )
            // Without a host, a first component with a '.' would be taken for one.
            .prop_filter("first component is not a host", |(host, path, _, _)| {
                host.is_some() || path.len() == 1 || !path[0].contains('.')
            })
            .prop_map(|(host, path, tag, digest)| {
                let mut out = host.map(|h| format!("{h}/")).unwrap_or_default();
                out.push_str(&path.join("/"));
                if let Some(tag) = tag {
                    out.push(':');
                    out.push_str(&tag);
                }
                if let Some(digest) = digest {
                    out.push('@');
                    out.push_str(&digest);
                }
                out
            })
    }

    proptest! {
        #[test]
        fn display_round_trips_through_parse(input in reference_string(host())) {
            let r = ImageRef::parse(&input).unwrap();
            prop_assert_eq!(ImageRef::parse(&r.to_string()), Ok(r.clone()));
            prop_assert_eq!(ImageRef::parse(&r.familiar()), Ok(r));
        }

        #[test]
        fn ipv6_references_round_trip(
            host in ipv6_host(),
            path in proptest::collection::vec(component(), 1..3),
            tag in proptest::option::of("[a-z0-9]{1,8}"),
        ) {
            let input = format!("{host}/{}{}", path.join("/"), tag.map(|t| format!(":{t}")).unwrap_or_default());
            let r = ImageRef::parse(&input).unwrap();
            prop_assert_eq!(r.registry(), host.as_str());
            prop_assert_eq!(ImageRef::parse(&r.to_string()), Ok(r));
        }

        /// oci-spec's parser agrees with ours on everything it can parse correctly.
        #[test]
        fn agrees_with_oci_spec_on_ordinary_references(input in reference_string(host())) {
            let ours = ImageRef::parse(&input).unwrap();
            let theirs = oci_spec::distribution::Reference::try_from(input.as_str()).unwrap();
            prop_assert_eq!(ours.registry(), theirs.registry());
            prop_assert_eq!(ours.repository(), theirs.repository());
            prop_assert_eq!(ours.tag(), theirs.tag());
            prop_assert_eq!(ours.digest().map(|d| d.to_string()), theirs.digest().map(str::to_owned));
        }

        #[test]
        fn arbitrary_input_never_panics_and_valid_results_round_trip(input in "\\PC{0,300}") {
            if let Ok(r) = ImageRef::parse(&input) {
                prop_assert_eq!(ImageRef::parse(&r.to_string()), Ok(r));
            }
        }

        #[test]
        fn reference_like_noise_never_panics(input in "[a-zA-Z0-9:/@\\[\\]._-]{0,80}") {
            if let Ok(r) = ImageRef::parse(&input) {
                prop_assert_eq!(ImageRef::parse(&r.to_string()), Ok(r));
            }
        }
    }
}
