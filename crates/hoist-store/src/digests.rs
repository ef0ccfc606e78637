//! Digests: which algorithms the store accepts, incremental hashing, and layer ChainIDs.
//!
//! The store addresses content by [`Digest`] (from `oci-spec`). It writes and verifies `sha256`
//! content, and also verifies `sha512` content (OCI allows it); any other algorithm is refused with
//! [`StoreError::UnsupportedAlgorithm`].

use std::io;

use oci_spec::image::{Digest, DigestAlgorithm};
use sha2::{Digest as _, Sha256, Sha512};

use crate::error::{Result, StoreError};

/// Parses a digest string, refusing malformed text and unsupported algorithms.
pub fn parse_digest(value: &str) -> Result<Digest> {
    let digest = Digest::try_from(value).map_err(|e| StoreError::InvalidDigest {
        value: value.to_owned(),
        reason: e.to_string(),
    })?;
    check_algorithm(&digest)?;
    Ok(digest)
}

/// Succeeds when the store can hash content with the digest's algorithm (sha256 or sha512).
pub fn check_algorithm(digest: &Digest) -> Result<()> {
    match digest.algorithm() {
        DigestAlgorithm::Sha256 | DigestAlgorithm::Sha512 => Ok(()),
        other => Err(StoreError::UnsupportedAlgorithm {
            digest: digest.to_string(),
            algorithm: other.to_string(),
        }),
    }
}

/// Builds a digest from an algorithm and a lowercase hex value.
pub(crate) fn from_hex(algorithm: &DigestAlgorithm, hex: &str) -> Result<Digest> {
    let text = format!("{algorithm}:{hex}");
    Digest::try_from(text.as_str()).map_err(|e| StoreError::InvalidDigest {
        value: text.clone(),
        reason: e.to_string(),
    })
}

/// The sha256 digest of a byte slice.
pub fn sha256_of(bytes: &[u8]) -> Digest {
    let mut hasher = DigestHasher::sha256();
    hasher.update(bytes);
    hasher.finish()
}

/// The ChainID of a layer whose DiffID is `diff_id`, stacked on the layer whose ChainID is `parent`.
///
/// As the OCI image specification defines it: the bottom layer's ChainID is its DiffID, and each
/// layer above has `sha256(parent_chain_id + " " + diff_id)`.
pub fn chain_id(parent: Option<&Digest>, diff_id: &Digest) -> Digest {
    match parent {
        None => diff_id.clone(),
        Some(parent) => sha256_of(format!("{parent} {diff_id}").as_bytes()),
    }
}

/// The ChainIDs of every layer of an image, bottom first, from its DiffIDs.
pub fn chain_ids(diff_ids: &[Digest]) -> Vec<Digest> {
    let mut out: Vec<Digest> = Vec::with_capacity(diff_ids.len());
    for diff_id in diff_ids {
        let next = chain_id(out.last(), diff_id);
        out.push(next);
    }
    out
}

/// An incremental hasher for one of the supported algorithms.
///
/// It implements [`io::Write`] so it can sit at the end of an [`io::copy`].
#[derive(Clone)]
pub struct DigestHasher {
    state: State,
}

#[derive(Clone)]
enum State {
    Sha256(Sha256),
    Sha512(Sha512),
}

impl DigestHasher {
    /// A sha256 hasher.
    pub fn sha256() -> Self {
        DigestHasher {
            state: State::Sha256(Sha256::new()),
        }
    }

    /// A hasher for the algorithm of `digest` (refusing unsupported ones).
    pub fn for_digest(digest: &Digest) -> Result<Self> {
        check_algorithm(digest)?;
        Ok(Self::for_algorithm(digest.algorithm()))
    }

    /// A hasher for `algorithm`; anything but sha512 hashes with sha256.
    pub(crate) fn for_algorithm(algorithm: &DigestAlgorithm) -> Self {
        match algorithm {
            DigestAlgorithm::Sha512 => DigestHasher {
                state: State::Sha512(Sha512::new()),
            },
            _ => Self::sha256(),
        }
    }

    /// The algorithm this hasher computes.
    pub fn algorithm(&self) -> DigestAlgorithm {
        match self.state {
            State::Sha256(_) => DigestAlgorithm::Sha256,
            State::Sha512(_) => DigestAlgorithm::Sha512,
        }
    }

    /// Feeds bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        match &mut self.state {
            State::Sha256(h) => h.update(bytes),
            State::Sha512(h) => h.update(bytes),
        }
    }

    /// The digest of everything fed so far, leaving the hasher usable.
    pub fn current(&self) -> Digest {
        self.clone().finish()
    }

    /// The digest of everything fed.
    pub fn finish(self) -> Digest {
        let (algorithm, hex) = match self.state {
            State::Sha256(h) => (DigestAlgorithm::Sha256, hex::encode(h.finalize())),
            State::Sha512(h) => (DigestAlgorithm::Sha512, hex::encode(h.finalize())),
        };
        // The hex of a fresh hash always forms a valid digest; fall back to the raw text otherwise.
        match from_hex(&algorithm, &hex) {
            Ok(d) => d,
            Err(_) => unreachable_digest(&algorithm, &hex),
        }
    }
}

#[cold]
fn unreachable_digest(algorithm: &DigestAlgorithm, hex: &str) -> Digest {
    // `from_hex` only fails on malformed input, and a hash's hex is well formed by construction.
    // Returning an all-zero sha256 would be wrong, so this path panics loudly instead of lying.
    panic!("hash output {algorithm}:{hex} did not form a digest")
}

impl io::Write for DigestHasher {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl std::fmt::Debug for DigestHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DigestHasher")
            .field("algorithm", &self.algorithm())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_of_empty_input_is_the_well_known_value() {
        assert_eq!(
            sha256_of(b"").to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn sha512_hasher_produces_sha512_digests() {
        let d = parse_digest(&format!("sha512:{}", "a".repeat(128))).unwrap();
        let mut h = DigestHasher::for_digest(&d).unwrap();
        h.update(b"abc");
        let out = h.finish();
        assert_eq!(out.algorithm(), &DigestAlgorithm::Sha512);
        assert!(out.digest().starts_with("ddaf35a193617aba"));
    }

    #[test]
    fn unknown_algorithms_are_refused_with_a_typed_error() {
        let err = parse_digest("md5:d41d8cd98f00b204e9800998ecf8427e").unwrap_err();
        assert!(
            matches!(err, StoreError::UnsupportedAlgorithm { ref algorithm, .. } if algorithm == "md5")
        );
        let err = parse_digest(&format!("sha384:{}", "0".repeat(96))).unwrap_err();
        assert!(matches!(err, StoreError::UnsupportedAlgorithm { .. }));
        assert!(matches!(
            parse_digest("sha256:nothex").unwrap_err(),
            StoreError::InvalidDigest { .. }
        ));
    }

    #[test]
    fn chain_ids_follow_the_oci_definition() {
        let a = sha256_of(b"a");
        let b = sha256_of(b"b");
        let ids = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(ids[0], a);
        assert_eq!(ids[1], sha256_of(format!("{a} {b}").as_bytes()));
        assert_eq!(chain_id(Some(&ids[0]), &b), ids[1]);
    }

    #[test]
    fn current_does_not_consume_the_running_state() {
        let mut h = DigestHasher::sha256();
        h.update(b"ab");
        assert_eq!(h.current(), sha256_of(b"ab"));
        h.update(b"c");
        assert_eq!(h.finish(), sha256_of(b"abc"));
    }
}
