//! Per-registry transport settings and endpoint rules.
//!
//! Which scheme a registry may be reached with is decided here, I/O-free: `https` always; plain `http`
//! only for registries configured insecure, and, as Docker does, for registries on loopback
//! (`localhost`, `127.0.0.0/8`, `[::1]`) with no configuration at all.

use std::net::IpAddr;
use std::path::PathBuf;

/// How one registry host is reached.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct HostConfig {
    /// Allow plain HTTP (after HTTPS fails) and accept invalid TLS certificates, as Docker's
    /// `insecure-registries` does.
    pub insecure: bool,
    /// An extra CA certificate file (PEM) trusted for this host, beside the system roots.
    pub ca_file: Option<PathBuf>,
    /// A client certificate (PEM) for mutual TLS, with [`HostConfig::client_key`].
    pub client_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    pub client_key: Option<PathBuf>,
}

impl HostConfig {
    /// A configuration that marks the host insecure.
    pub fn insecure() -> HostConfig {
        HostConfig {
            insecure: true,
            ..HostConfig::default()
        }
    }

    /// Sets an extra CA file.
    pub fn with_ca_file(mut self, path: impl Into<PathBuf>) -> HostConfig {
        self.ca_file = Some(path.into());
        self
    }

    /// Sets a client certificate and key for mutual TLS.
    pub fn with_client_cert(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.client_cert = Some(cert.into());
        self.client_key = Some(key.into());
        self
    }

    /// Whether this host needs its own TLS setup (anything but system roots).
    pub(crate) fn has_custom_tls(&self) -> bool {
        self.insecure || self.ca_file.is_some() || self.client_cert.is_some()
    }
}

/// The URL scheme of an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// TLS.
    Https,
    /// Plain HTTP.
    Http,
}

impl Scheme {
    /// The scheme as it appears in a URL.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Https => "https",
            Scheme::Http => "http",
        }
    }
}

/// Whether `host` (with an optional `:port`, IPv6 in brackets) names the local machine.
pub fn is_loopback_host(host: &str) -> bool {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return ip.is_loopback(); // a bare IPv6 address has colons but no port
    }
    let name = strip_port(host);
    if name.eq_ignore_ascii_case("localhost") {
        return true;
    }
    let bare = name.trim_start_matches('[').trim_end_matches(']');
    bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        // [v6]:port or [v6]
        return match rest.find(']') {
            Some(end) => &host[..end + 2],
            None => host,
        };
    }
    match host.rsplit_once(':') {
        Some((name, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

/// The schemes to try for `host`, in order: HTTPS first, then HTTP where it is allowed.
pub fn schemes_for(host: &str, config: Option<&HostConfig>) -> Vec<Scheme> {
    let insecure = config.is_some_and(|c| c.insecure) || is_loopback_host(host);
    if insecure {
        vec![Scheme::Https, Scheme::Http]
    } else {
        vec![Scheme::Https]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_are_recognised_with_and_without_ports() {
        for (host, expected) in [
            ("localhost", true),
            ("localhost:5000", true),
            ("LOCALHOST:5000", true),
            ("127.0.0.1", true),
            ("127.0.0.1:5000", true),
            ("127.1.2.3:80", true),
            ("[::1]", true),
            ("[::1]:5000", true),
            ("::1", true),
            ("10.0.0.1:5000", false),
            ("registry.example.com", false),
            ("localhost.example.com", false),
            ("[2001:db8::1]:5000", false),
            ("128.0.0.1", false),
        ] {
            assert_eq!(is_loopback_host(host), expected, "{host}");
        }
    }

    #[test]
    fn plain_http_is_allowed_only_for_insecure_or_loopback_hosts() {
        assert_eq!(schemes_for("example.com", None), vec![Scheme::Https]);
        assert_eq!(
            schemes_for("example.com", Some(&HostConfig::default())),
            vec![Scheme::Https]
        );
        assert_eq!(
            schemes_for("example.com", Some(&HostConfig::insecure())),
            vec![Scheme::Https, Scheme::Http]
        );
        assert_eq!(
            schemes_for("127.0.0.1:5000", None),
            vec![Scheme::Https, Scheme::Http]
        );
    }
}
