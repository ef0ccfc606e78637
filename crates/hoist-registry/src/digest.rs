//! Content digests: computing and checking them, incrementally for streams.

use oci_spec::image::{Digest, DigestAlgorithm};
use sha2::Digest as _;

/// An incremental hasher for one of the digest algorithms registries use.
#[derive(Debug, Clone)]
pub enum Hasher {
    /// SHA-256.
    Sha256(sha2::Sha256),
    /// SHA-384.
    Sha384(sha2::Sha384),
    /// SHA-512.
    Sha512(sha2::Sha512),
}

impl Hasher {
    /// A hasher for `algorithm`, or `None` for algorithms hoist cannot verify.
    pub fn new(algorithm: &DigestAlgorithm) -> Option<Hasher> {
        match algorithm {
            DigestAlgorithm::Sha256 => Some(Hasher::Sha256(sha2::Sha256::new())),
            DigestAlgorithm::Sha384 => Some(Hasher::Sha384(sha2::Sha384::new())),
            DigestAlgorithm::Sha512 => Some(Hasher::Sha512(sha2::Sha512::new())),
            _ => None,
        }
    }

    /// A SHA-256 hasher.
    pub fn sha256() -> Hasher {
        Hasher::Sha256(sha2::Sha256::new())
    }

    /// Feeds bytes.
    pub fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(data),
            Hasher::Sha384(h) => h.update(data),
            Hasher::Sha512(h) => h.update(data),
        }
    }

    /// The digest of everything fed, as `algorithm:hex`.
    pub fn finish(self) -> String {
        match self {
            Hasher::Sha256(h) => format!("sha256:{}", hex::encode(h.finalize())),
            Hasher::Sha384(h) => format!("sha384:{}", hex::encode(h.finalize())),
            Hasher::Sha512(h) => format!("sha512:{}", hex::encode(h.finalize())),
        }
    }
}

/// The SHA-256 digest of `data`.
pub fn sha256_of(data: &[u8]) -> Digest {
    let mut h = Hasher::sha256();
    h.update(data);
    parse_known(&h.finish())
}

/// Hashes `data` with `expected`'s algorithm; returns the actual digest string when it differs.
/// Unknown algorithms are reported as a mismatch naming the algorithm.
pub fn check(expected: &Digest, data: &[u8]) -> Result<(), String> {
    let Some(mut h) = Hasher::new(expected.algorithm()) else {
        return Err(format!(
            "unsupported digest algorithm {}",
            expected.algorithm()
        ));
    };
    h.update(data);
    let actual = h.finish();
    if actual == expected.to_string() {
        Ok(())
    } else {
        Err(actual)
    }
}

/// Parses a digest this module produced: lowercase hex of the right length always parses.
pub(crate) fn parse_known(s: &str) -> Digest {
    s.parse().expect("a hasher's output is a valid digest")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_of_empty_is_the_well_known_value() {
        assert_eq!(
            sha256_of(b"").to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn check_accepts_matching_and_reports_mismatching_content() {
        let d = sha256_of(b"hello");
        assert!(check(&d, b"hello").is_ok());
        let err = check(&d, b"hellO").unwrap_err();
        assert!(err.starts_with("sha256:"));
        let d512: Digest = format!("sha512:{}", "a".repeat(128)).parse().unwrap();
        assert!(check(&d512, b"x").is_err());
    }
}
