//! The configuration file (`--config FILE`, TOML): mirrors and transport security per registry,
//! transfer settings.
//!
//! ```toml
//! [transfers]
//! concurrent_downloads = 3
//! concurrent_uploads = 5
//! max_attempts = 5
//! max_layer_bytes = 68719476736   # most bytes one layer may unpack to (decompression bombs)
//! fetch_window_mib = 4             # ranged requests of this many MiB per blob (default 0: one)
//! allow_foreign_urls = ["go.microsoft.com"]   # layer `urls` hosts a pull may fetch from ("*": any)
//!
//! [registries."docker.io"]
//! mirrors = ["127.0.0.1:5001"]
//!
//! [registries."registry.internal:5000"]
//! insecure = true
//! ca_file = "/etc/hoist/internal-ca.pem"
//! client_cert = "/etc/hoist/client.pem"
//! client_key = "/etc/hoist/client.key"
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;

/// The whole configuration file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Transfer settings.
    #[serde(default)]
    pub transfers: Transfers,
    /// Settings per registry host (`host[:port]`, `docker.io` for Docker Hub).
    #[serde(default)]
    pub registries: BTreeMap<String, Registry>,
}

/// Transfer settings.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Transfers {
    /// Layers downloaded at once.
    #[serde(default = "default_downloads")]
    pub concurrent_downloads: usize,
    /// Layers uploaded at once.
    #[serde(default = "default_uploads")]
    pub concurrent_uploads: usize,
    /// Attempts per layer before giving up.
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// Most bytes one layer may unpack to; a layer over it fails the pull (a decompression
    /// bomb guard).
    #[serde(default = "default_max_layer_bytes")]
    pub max_layer_bytes: u64,
    /// Pull zstd:chunked and eStargz layers partially (only the chunks whose files the store
    /// lacks); `false` always fetches whole blobs.
    #[serde(default = "default_partial")]
    pub partial_pulls: bool,
    /// MiB per ranged request when fetching a blob (bounds what a killed pull wasted); 0, the
    /// default, fetches each blob with one request.
    #[serde(default = "default_fetch_window_mib")]
    pub fetch_window_mib: u64,
    /// Hosts (`host` or `host:port`; `*` for any) whose URLs in non-distributable layer
    /// descriptors a pull may fetch the layer from; none by default.
    #[serde(default)]
    pub allow_foreign_urls: Vec<String>,
}

impl Default for Transfers {
    fn default() -> Self {
        Transfers {
            concurrent_downloads: default_downloads(),
            concurrent_uploads: default_uploads(),
            max_attempts: default_attempts(),
            max_layer_bytes: default_max_layer_bytes(),
            partial_pulls: default_partial(),
            fetch_window_mib: default_fetch_window_mib(),
            allow_foreign_urls: Vec::new(),
        }
    }
}

fn default_max_layer_bytes() -> u64 {
    hoist_distribution::DEFAULT_MAX_LAYER_BYTES
}

fn default_fetch_window_mib() -> u64 {
    hoist_distribution::DEFAULT_FETCH_WINDOW >> 20
}

fn default_downloads() -> usize {
    3
}
fn default_uploads() -> usize {
    5
}
fn default_attempts() -> u32 {
    5
}
fn default_partial() -> bool {
    true
}

/// Settings for one registry.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Registry {
    /// Mirrors tried before the registry itself when pulling, in order (`host[:port]`).
    #[serde(default)]
    pub mirrors: Vec<String>,
    /// Allow plain HTTP and unverified TLS.
    #[serde(default)]
    pub insecure: bool,
    /// Extra CA certificate (PEM).
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS.
    pub client_cert: Option<PathBuf>,
    /// Client key (PEM).
    pub client_key: Option<PathBuf>,
}

impl Config {
    /// Reads `path`; a missing file is an error (the user named it).
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        Config::parse(&text).with_context(|| format!("invalid config file {}", path.display()))
    }

    /// Parses TOML text.
    pub fn parse(text: &str) -> anyhow::Result<Config> {
        let cfg: Config = toml::from_str(text)?;
        Ok(cfg)
    }

    /// The mirrors of every registry.
    pub fn mirrors(&self) -> hoist_distribution::Registries {
        let mut r = hoist_distribution::Registries::new();
        for (host, reg) in &self.registries {
            for m in &reg.mirrors {
                r.add_mirror(host, m);
            }
        }
        r
    }

    /// Transport settings for the registry client, per host.
    pub fn host_configs(&self) -> Vec<(String, hoist_registry::HostConfig)> {
        self.registries
            .iter()
            .map(|(host, r)| {
                let mut c = if r.insecure {
                    hoist_registry::HostConfig::insecure()
                } else {
                    hoist_registry::HostConfig::default()
                };
                if let Some(ca) = &r.ca_file {
                    c = c.with_ca_file(ca);
                }
                if let (Some(cert), Some(key)) = (&r.client_cert, &r.client_key) {
                    c = c.with_client_cert(cert, key);
                }
                (host.clone(), c)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_config_parses() {
        let c = Config::parse(
            r#"
            [transfers]
            concurrent_downloads = 6
            [registries."docker.io"]
            mirrors = ["127.0.0.1:5001"]
            [registries."r:5000"]
            insecure = true
            ca_file = "/ca.pem"
            client_cert = "/c.pem"
            client_key = "/k.pem"
            "#,
        )
        .unwrap();
        assert!(c.registries["r:5000"].insecure);
        assert_eq!(c.transfers.concurrent_downloads, 6);
        assert_eq!(c.transfers.max_attempts, 5);
        assert_eq!(
            c.transfers.max_layer_bytes,
            hoist_distribution::DEFAULT_MAX_LAYER_BYTES
        );
        assert_eq!(
            c.transfers.fetch_window_mib, 0,
            "one request per blob by default"
        );
        assert_eq!(c.registries["docker.io"].mirrors, vec!["127.0.0.1:5001"]);
        let hosts = c.host_configs();
        assert_eq!(hosts.len(), 2);
        let (_, r) = hosts.iter().find(|(h, _)| h == "r:5000").unwrap();
        assert!(r.insecure && r.ca_file.is_some() && r.client_cert.is_some());
    }

    #[test]
    fn the_fetch_window_can_be_set_or_turned_off() {
        let c = Config::parse("[transfers]\nfetch_window_mib = 4\n").unwrap();
        assert_eq!(c.transfers.fetch_window_mib, 4);
        let c = Config::parse("[transfers]\nfetch_window_mib = 0\n").unwrap();
        assert_eq!(c.transfers.fetch_window_mib, 0);
    }

    #[test]
    fn allowed_foreign_url_hosts_parse_and_default_to_none() {
        let c = Config::parse(
            "[transfers]\nallow_foreign_urls = [\"mcr.example\", \"127.0.0.1:8080\"]\n",
        )
        .unwrap();
        assert_eq!(
            c.transfers.allow_foreign_urls,
            vec!["mcr.example", "127.0.0.1:8080"]
        );
        assert!(
            Config::parse("")
                .unwrap()
                .transfers
                .allow_foreign_urls
                .is_empty()
        );
    }

    #[test]
    fn unknown_keys_are_rejected() {
        assert!(Config::parse("[transfer]\nx = 3\n").is_err());
        assert!(Config::parse("[registries.x]\ninsecur = true\n").is_err());
    }

    #[test]
    fn empty_config_gives_defaults() {
        let c = Config::parse("").unwrap();
        assert!(c.registries.is_empty());
    }
}
