//! Platforms (`os/architecture[/variant]`) as image indexes describe them, normalised the way
//! container runtimes do (`x86_64` = `amd64`, `aarch64` = `arm64`, `arm64/v8` = `arm64`,
//! `arm` = `arm/v7`), and matching a wanted platform against an index entry.

use std::fmt;
use std::str::FromStr;

/// An operating system, CPU architecture and optional variant. Values are normalised on
/// construction, so equal platforms compare equal however they were written.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Platform {
    os: String,
    architecture: String,
    variant: Option<String>,
}

/// Why a string is not a platform.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PlatformError {
    /// Not `os/architecture[/variant]`.
    #[error(
        "invalid platform {input:?}: expected OS/ARCHITECTURE[/VARIANT], for example linux/arm64 or linux/arm/v7"
    )]
    Invalid {
        /// The input.
        input: String,
    },
}

impl Platform {
    /// A platform from its parts, normalised.
    pub fn new(os: &str, architecture: &str, variant: Option<&str>) -> Platform {
        let os = normalize_os(os);
        let (architecture, variant) = normalize_arch(architecture, variant.unwrap_or(""));
        Platform {
            os,
            architecture,
            variant: Some(variant).filter(|v| !v.is_empty()),
        }
    }

    /// The platform this program runs on.
    pub fn current() -> Platform {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "x86" => "386",
            "aarch64" => "arm64",
            "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
            "loongarch64" => "loong64",
            other => other,
        };
        Platform::new(std::env::consts::OS, arch, None)
    }

    /// Parses `os/architecture[/variant]`.
    pub fn parse(input: &str) -> Result<Platform, PlatformError> {
        let invalid = || PlatformError::Invalid {
            input: input.to_owned(),
        };
        let parts: Vec<&str> = input.split('/').collect();
        let ok = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        };
        match parts.as_slice() {
            [os, arch] if ok(os) && ok(arch) => Ok(Platform::new(os, arch, None)),
            [os, arch, variant] if ok(os) && ok(arch) && ok(variant) => {
                Ok(Platform::new(os, arch, Some(variant)))
            }
            _ => Err(invalid()),
        }
    }

    /// The operating system (`linux`).
    pub fn os(&self) -> &str {
        &self.os
    }

    /// The CPU architecture (`amd64`, `arm64`).
    pub fn architecture(&self) -> &str {
        &self.architecture
    }

    /// The variant, if any (`v7`).
    pub fn variant(&self) -> Option<&str> {
        self.variant.as_deref()
    }

    /// Whether an image for `candidate` runs exactly on this platform. A platform without a
    /// variant accepts every variant of its architecture.
    pub fn matches_exactly(&self, candidate: &Platform) -> bool {
        self.os == candidate.os
            && self.architecture == candidate.architecture
            && (self.variant.is_none() || self.variant == candidate.variant)
    }

    /// Whether an image for `candidate` runs on this platform, older ARM variants included
    /// (`arm/v7` runs `arm/v6` and `arm/v5` images).
    pub fn is_compatible(&self, candidate: &Platform) -> bool {
        if self.matches_exactly(candidate) {
            return true;
        }
        if self.os != candidate.os || self.architecture != "arm" || candidate.architecture != "arm"
        {
            return false;
        }
        match (arm_level(self.variant()), arm_level(candidate.variant())) {
            (Some(mine), Some(theirs)) => theirs <= mine,
            _ => false,
        }
    }
}

fn arm_level(variant: Option<&str>) -> Option<u32> {
    variant?.strip_prefix('v')?.parse().ok()
}

fn normalize_os(os: &str) -> String {
    let os = os.to_ascii_lowercase();
    match os.as_str() {
        "macos" => "darwin".to_owned(),
        _ => os,
    }
}

fn normalize_arch(arch: &str, variant: &str) -> (String, String) {
    let arch = arch.to_ascii_lowercase();
    let variant = variant.to_ascii_lowercase();
    match arch.as_str() {
        "i386" => ("386".into(), String::new()),
        "x86_64" | "x86-64" | "amd64" => {
            let v = if variant == "v1" {
                String::new()
            } else {
                variant
            };
            ("amd64".into(), v)
        }
        "aarch64" | "arm64" => {
            let v = if variant == "8" || variant == "v8" {
                String::new()
            } else {
                variant
            };
            ("arm64".into(), v)
        }
        "armhf" => ("arm".into(), "v7".into()),
        "armel" => ("arm".into(), "v6".into()),
        "arm" => {
            let v = match variant.as_str() {
                "" | "7" => "v7".to_owned(),
                "5" | "6" | "8" => format!("v{variant}"),
                _ => variant,
            };
            ("arm".into(), v)
        }
        _ => (arch, variant),
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        match &self.variant {
            Some(v) => write!(f, "/{v}"),
            None => Ok(()),
        }
    }
}

impl FromStr for Platform {
    type Err = PlatformError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Platform::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_normalise_to_the_same_platform() {
        assert_eq!(
            Platform::parse("linux/x86_64").unwrap(),
            Platform::parse("linux/amd64").unwrap()
        );
        assert_eq!(
            Platform::parse("linux/aarch64").unwrap(),
            Platform::parse("linux/arm64/v8").unwrap()
        );
        assert_eq!(
            Platform::parse("linux/arm").unwrap().to_string(),
            "linux/arm/v7"
        );
        assert_eq!(
            Platform::new("Linux", "armhf", None).to_string(),
            "linux/arm/v7"
        );
    }

    #[test]
    fn a_platform_without_variant_accepts_any_variant() {
        let wanted = Platform::parse("linux/riscv64").unwrap();
        assert!(wanted.matches_exactly(&Platform::new("linux", "riscv64", Some("rva23"))));
        assert!(!wanted.matches_exactly(&Platform::parse("linux/amd64").unwrap()));
        assert!(!wanted.matches_exactly(&Platform::parse("windows/riscv64").unwrap()));
    }

    #[test]
    fn newer_arm_runs_older_arm_variants_only() {
        let v7 = Platform::parse("linux/arm/v7").unwrap();
        let v6 = Platform::parse("linux/arm/v6").unwrap();
        assert!(!v7.matches_exactly(&v6));
        assert!(v7.is_compatible(&v6));
        assert!(!v6.is_compatible(&v7));
        assert!(!v7.is_compatible(&Platform::parse("linux/arm64").unwrap()));
    }

    #[test]
    fn malformed_platforms_are_rejected() {
        for bad in ["linux", "linux/", "/amd64", "a/b/c/d", "linux/am d64"] {
            assert!(Platform::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_current_platform_uses_registry_names() {
        let p = Platform::current();
        assert!(!p.architecture().contains('_'), "{p}");
        if cfg!(target_os = "linux") {
            assert_eq!(p.os(), "linux");
        }
        if cfg!(target_arch = "x86_64") {
            assert_eq!(p.architecture(), "amd64");
        }
    }
}
