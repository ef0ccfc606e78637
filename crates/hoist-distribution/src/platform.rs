//! Platforms (`linux/arm64/v8`): parsing, normalisation, and choosing an index entry.
//!
//! I/O-free. Names are normalised the way container tools agree on: `x86_64` and `x86-64` are
//! `amd64`, `aarch64` is `arm64` (whose default variant is `v8`), `armhf` is `arm/v7`, `armel`
//! is `arm/v6`, plain `arm` means `arm/v7`, `i386` is `386`, and variants are written `vN`.
//!
//! [`rank`] orders the entries of an index for a wanted platform: exact matches first, then
//! entries an older variant of the same architecture (an `arm/v6` image runs on `arm/v7`), then
//! entries that declare no platform at all; entries for other platforms (including the
//! `unknown/unknown` of attestation manifests) are left out.

use std::fmt;

use crate::error::{Error, Result};

/// An operating system, CPU architecture and optional CPU variant, normalised.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Platform {
    /// Operating system (`linux`, `windows`).
    pub os: String,
    /// CPU architecture (`amd64`, `arm64`, `arm`, `386`, `ppc64le`, …).
    pub architecture: String,
    /// CPU variant (`v7`, `v8`), when the architecture has one.
    pub variant: Option<String>,
}

/// Operating systems recognised when a platform string has a single component.
const KNOWN_OS: &[&str] = &[
    "aix",
    "android",
    "darwin",
    "dragonfly",
    "freebsd",
    "illumos",
    "ios",
    "js",
    "linux",
    "netbsd",
    "openbsd",
    "plan9",
    "solaris",
    "wasip1",
    "windows",
];

impl Platform {
    /// A platform from its parts, normalised.
    pub fn new(os: &str, architecture: &str, variant: Option<&str>) -> Platform {
        let os = normalize_os(os);
        let (architecture, variant) = normalize_arch(architecture, variant.unwrap_or(""));
        Platform {
            os,
            architecture,
            variant,
        }
    }

    /// The platform of this machine.
    pub fn host() -> Platform {
        Platform::new(std::env::consts::OS, std::env::consts::ARCH, None)
    }

    /// Parses `os[/arch[/variant]]`, or a lone architecture (`arm64`, taken with this machine's
    /// OS) or a lone OS (`linux`, taken with this machine's architecture).
    pub fn parse(input: &str) -> Result<Platform> {
        let invalid = |reason| Error::InvalidPlatform {
            input: input.to_owned(),
            reason,
        };
        let parts: Vec<&str> = input.trim().split('/').collect();
        if parts.iter().any(|p| p.is_empty()) {
            return Err(invalid(
                "expected os/arch or os/arch/variant, with no empty part",
            ));
        }
        if parts.iter().any(|p| {
            !p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        }) {
            return Err(invalid(
                "platform parts are letters, digits, '_' and '-' (like linux/arm64/v8)",
            ));
        }
        match parts.as_slice() {
            [one] => {
                let lower = one.to_ascii_lowercase();
                if KNOWN_OS.contains(&normalize_os(&lower).as_str()) {
                    let host = Platform::host();
                    Ok(Platform {
                        os: normalize_os(&lower),
                        ..host
                    })
                } else {
                    Ok(Platform::new(std::env::consts::OS, &lower, None))
                }
            }
            [os, arch] => Ok(Platform::new(os, arch, None)),
            [os, arch, variant] => Ok(Platform::new(os, arch, Some(variant))),
            _ => Err(invalid("expected at most three parts: os/arch/variant")),
        }
    }

    /// Whether an entry for `candidate` can run where `self` is wanted.
    pub fn matches(&self, candidate: &Platform) -> bool {
        variant_distance(self, candidate).is_some()
    }

    /// The platform as users usually write it: like [`Display`](fmt::Display), but without
    /// arm64's default variant (`linux/arm64`, not `linux/arm64/v8`). It parses back the same.
    pub fn short_name(&self) -> String {
        if self.architecture == "arm64" && self.variant.as_deref() == Some("v8") {
            format!("{}/{}", self.os, self.architecture)
        } else {
            self.to_string()
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Platform {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Platform::parse(s)
    }
}

fn normalize_os(os: &str) -> String {
    let os = os.trim().to_ascii_lowercase();
    match os.as_str() {
        "macos" => "darwin".to_owned(),
        _ => os,
    }
}

/// `vN` for a variant written `N` or `vN` (case-insensitive); other variants lowercased.
fn normalize_variant(variant: &str) -> String {
    let v = variant.trim().to_ascii_lowercase();
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        format!("v{v}")
    } else {
        v
    }
}

fn normalize_arch(arch: &str, variant: &str) -> (String, Option<String>) {
    let arch = arch.trim().to_ascii_lowercase();
    let variant = normalize_variant(variant);
    let (arch, variant) = match arch.as_str() {
        "i386" | "i486" | "i586" | "i686" | "x86" => ("386".to_owned(), variant),
        "x86_64" | "x86-64" | "amd64" => {
            let v = if variant == "v1" {
                String::new()
            } else {
                variant
            };
            ("amd64".to_owned(), v)
        }
        "aarch64" | "arm64" => {
            let v = if variant.is_empty() {
                "v8".to_owned()
            } else {
                variant
            };
            ("arm64".to_owned(), v)
        }
        "armhf" => ("arm".to_owned(), "v7".to_owned()),
        "armel" => ("arm".to_owned(), "v6".to_owned()),
        "arm" => {
            let v = if variant.is_empty() {
                "v7".to_owned()
            } else {
                variant
            };
            ("arm".to_owned(), v)
        }
        _ => (arch, variant),
    };
    (arch, (!variant.is_empty()).then_some(variant))
}

/// The number in a `vN` variant.
fn variant_number(v: Option<&str>) -> Option<u32> {
    v?.strip_prefix('v')?.parse().ok()
}

/// How far `candidate` is from `wanted`: `Some(0)` for an exact match, `Some(n)` for an older
/// variant `n` steps below the wanted one that still runs there, `None` when it cannot run.
fn variant_distance(wanted: &Platform, candidate: &Platform) -> Option<u32> {
    if wanted.os != candidate.os || wanted.architecture != candidate.architecture {
        return None;
    }
    if wanted.variant == candidate.variant {
        return Some(0);
    }
    match wanted.architecture.as_str() {
        // Older arm and amd64 variants run on newer CPUs; amd64 without a variant is v1.
        "arm" | "amd64" => {
            let base = u32::from(wanted.architecture == "amd64");
            let want = variant_number(wanted.variant.as_deref()).unwrap_or(base);
            let have = variant_number(candidate.variant.as_deref()).unwrap_or(base);
            (have <= want).then(|| want - have)
        }
        // No variant on the wanted side: any variant of the architecture will do, after exact.
        _ if wanted.variant.is_none() => Some(1),
        _ => None,
    }
}

/// The indices of `entries` usable for `wanted`, best first: matching platforms by closeness
/// (ties keep index order), then entries without a platform.
pub fn rank(entries: &[Option<Platform>], wanted: &Platform) -> Vec<usize> {
    let mut matched: Vec<(u32, usize)> = Vec::new();
    let mut unplatformed = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        match entry {
            Some(p) => {
                if let Some(d) = variant_distance(wanted, p) {
                    matched.push((d, i));
                }
            }
            None => unplatformed.push(i),
        }
    }
    matched.sort();
    matched
        .into_iter()
        .map(|(_, i)| i)
        .chain(unplatformed)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Platform {
        Platform::parse(s).unwrap()
    }

    #[test]
    fn short_names_leave_out_arm64s_default_variant_and_parse_back() {
        for (input, short) in [
            ("linux/arm64/v8", "linux/arm64"),
            ("linux/aarch64", "linux/arm64"),
            ("linux/arm64/v9", "linux/arm64/v9"),
            ("linux/arm/v7", "linux/arm/v7"),
            ("linux/amd64", "linux/amd64"),
        ] {
            let p = p(input);
            assert_eq!(p.short_name(), short, "{input}");
            assert_eq!(Platform::parse(short).unwrap(), p, "{input}");
        }
    }

    #[test]
    fn architecture_aliases_normalise() {
        assert_eq!(p("linux/x86_64"), p("linux/amd64"));
        assert_eq!(p("linux/x86-64"), p("linux/amd64"));
        assert_eq!(p("linux/amd64/v1"), p("linux/amd64"));
        assert_eq!(p("linux/aarch64"), p("linux/arm64/v8"));
        assert_eq!(p("linux/arm64").to_string(), "linux/arm64/v8");
        assert_eq!(p("linux/arm64/8"), p("linux/arm64/v8"));
        assert_eq!(p("linux/arm").to_string(), "linux/arm/v7");
        assert_eq!(p("linux/armhf"), p("linux/arm/v7"));
        assert_eq!(p("linux/armel"), p("linux/arm/v6"));
        assert_eq!(p("linux/arm/7"), p("linux/arm/v7"));
        assert_eq!(p("linux/i386"), p("linux/386"));
        assert_eq!(p("Linux/AMD64"), p("linux/amd64"));
        assert_eq!(p("linux/ppc64le").to_string(), "linux/ppc64le");
    }

    #[test]
    fn a_lone_component_is_an_os_or_an_architecture() {
        let host = Platform::host();
        assert_eq!(p("linux").architecture, host.architecture);
        assert_eq!(p("linux").os, "linux");
        let a = p("arm64");
        assert_eq!(a.architecture, "arm64");
        assert_eq!(a.os, host.os);
    }

    #[test]
    fn malformed_platforms_are_refused() {
        for bad in [
            "",
            "linux/",
            "/amd64",
            "linux/amd64/v8/x",
            "linux/am d64",
            "linux//v7",
        ] {
            let err = Platform::parse(bad).unwrap_err();
            assert!(matches!(err, Error::InvalidPlatform { .. }), "{bad}: {err}");
        }
    }

    #[test]
    fn host_platform_is_normalised() {
        let host = Platform::host();
        assert_ne!(host.architecture, "x86_64");
        assert_ne!(host.architecture, "aarch64");
        assert_eq!(host.os, std::env::consts::OS);
    }

    #[test]
    fn ranking_prefers_exact_then_older_variants_then_unplatformed() {
        let entries = vec![
            None,
            Some(p("linux/arm/v5")),
            Some(p("linux/amd64")),
            Some(p("linux/arm/v7")),
            Some(p("linux/arm/v6")),
            Some(p("linux/arm/v8")),
            Some(Platform::new("unknown", "unknown", None)),
        ];
        assert_eq!(rank(&entries, &p("linux/arm/v7")), vec![3, 4, 1, 0]);
        assert_eq!(rank(&entries, &p("linux/amd64")), vec![2, 0]);
        assert_eq!(rank(&entries, &p("linux/s390x")), vec![0]);
        assert_eq!(rank(&entries, &p("windows/amd64")), vec![0]);
    }

    #[test]
    fn arm64_entries_without_variant_match_v8() {
        let entries = vec![Some(Platform::new("linux", "arm64", None))];
        assert_eq!(rank(&entries, &p("linux/aarch64")), vec![0]);
        assert!(p("linux/arm64").matches(&Platform::new("linux", "aarch64", Some("8"))));
        assert!(!p("linux/arm64").matches(&p("linux/arm/v7")));
    }

    #[test]
    fn amd64_micro_architecture_levels_run_older_levels() {
        assert!(p("linux/amd64/v3").matches(&p("linux/amd64")));
        assert!(p("linux/amd64/v3").matches(&p("linux/amd64/v2")));
        assert!(!p("linux/amd64").matches(&p("linux/amd64/v3")));
        let entries = vec![Some(p("linux/amd64")), Some(p("linux/amd64/v2"))];
        assert_eq!(rank(&entries, &p("linux/amd64/v3")), vec![1, 0]);
    }

    #[test]
    fn attestation_entries_never_match() {
        let unknown = Platform::new("unknown", "unknown", None);
        assert!(!Platform::host().matches(&unknown));
    }
}
