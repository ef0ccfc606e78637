//! Which `urls` of a layer descriptor a pull may follow: the policy ([`ForeignUrls`]) and its
//! I/O-free decision ([`ForeignUrls::check`]).
//!
//! Non-distributable layers (OCI `application/vnd.oci.image.layer.nondistributable.*`, Docker
//! `application/vnd.docker.image.rootfs.foreign.diff.tar.gzip`, such as Windows base layers)
//! name URLs where their blob may be downloaded instead of from the registry. By default hoist
//! follows none of them ([`ForeignUrls::Never`]): a manifest must not make a pull contact
//! arbitrary hosts. When allowed, a URL must be `http` or `https`, and `http` only to a loopback
//! host (as for registries without configuration); requests to it carry no credentials, and
//! its bytes are verified against the descriptor like a registry's.

use url::Url;

/// Which descriptor `urls` a pull may fetch layers from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ForeignUrls {
    /// None: layers come from the registry only (the default).
    #[default]
    Never,
    /// URLs whose host (`host`, or `host:port` when a port is given) is one of these,
    /// compared case-insensitively. A bare `host` matches the host on any port.
    Hosts(Vec<String>),
    /// Any host.
    Any,
}

/// Why a URL is not followed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ForeignUrlRefusal {
    /// Following descriptor URLs is not allowed at all.
    #[error("following layer URLs is not allowed (see --allow-foreign-urls)")]
    NotAllowed,
    /// The URL does not parse.
    #[error("{url:?} is not a valid URL: {reason}")]
    Unparsable {
        /// The URL as the descriptor gives it.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The scheme is not `http` or `https`.
    #[error("scheme {scheme:?} is not http or https")]
    Scheme {
        /// The scheme.
        scheme: String,
    },
    /// The host is not among the allowed ones.
    #[error("host {host} is not among the hosts allowed for layer URLs")]
    HostNotAllowed {
        /// The URL's `host[:port]`.
        host: String,
    },
    /// Plain `http` to a host that is not loopback.
    #[error("plain http to {host} is refused: layer URLs need https unless the host is loopback")]
    InsecureScheme {
        /// The URL's `host[:port]`.
        host: String,
    },
}

impl ForeignUrls {
    /// A policy from host names as a user gives them: none is [`ForeignUrls::Never`], any `*`
    /// is [`ForeignUrls::Any`], else [`ForeignUrls::Hosts`] (empty entries ignored).
    pub fn from_hosts<I, S>(hosts: I) -> ForeignUrls
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut list = Vec::new();
        for h in hosts {
            let h = h.as_ref().trim();
            if h == "*" {
                return ForeignUrls::Any;
            }
            if !h.is_empty() {
                list.push(h.to_ascii_lowercase());
            }
        }
        if list.is_empty() {
            ForeignUrls::Never
        } else {
            ForeignUrls::Hosts(list)
        }
    }

    /// Whether any URL may be followed.
    pub fn allows_any(&self) -> bool {
        match self {
            ForeignUrls::Never => false,
            ForeignUrls::Hosts(h) => !h.is_empty(),
            ForeignUrls::Any => true,
        }
    }

    /// Whether `url` may be fetched: the parsed URL, or why not.
    pub fn check(&self, url: &str) -> Result<Url, ForeignUrlRefusal> {
        if !self.allows_any() {
            return Err(ForeignUrlRefusal::NotAllowed);
        }
        let parsed = Url::parse(url).map_err(|e| ForeignUrlRefusal::Unparsable {
            url: url.to_owned(),
            reason: e.to_string(),
        })?;
        let scheme = parsed.scheme();
        if scheme != "http" && scheme != "https" {
            return Err(ForeignUrlRefusal::Scheme {
                scheme: scheme.to_owned(),
            });
        }
        let Some(host) = parsed.host_str() else {
            return Err(ForeignUrlRefusal::Unparsable {
                url: url.to_owned(),
                reason: "it names no host".into(),
            });
        };
        let host = host.to_ascii_lowercase();
        let port = parsed.port_or_known_default();
        let host_port = match parsed.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.clone(),
        };
        if let ForeignUrls::Hosts(allowed) = self {
            let matches = |a: &String| {
                let a = a.to_ascii_lowercase();
                a == host || port.is_some_and(|p| a == format!("{host}:{p}")) || a == host_port
            };
            if !allowed.iter().any(matches) {
                return Err(ForeignUrlRefusal::HostNotAllowed { host: host_port });
            }
        }
        if scheme == "http" && !hoist_registry::config::is_loopback_host(&host) {
            return Err(ForeignUrlRefusal::InsecureScheme { host: host_port });
        }
        Ok(parsed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(h: &[&str]) -> ForeignUrls {
        ForeignUrls::from_hosts(h)
    }

    #[test]
    fn urls_are_allowed_or_refused_with_a_typed_reason() {
        use ForeignUrlRefusal as R;
        let refused_host = |h: &str| Err(R::HostNotAllowed { host: h.into() });
        let cases: Vec<(ForeignUrls, &str, Result<(), ForeignUrlRefusal>)> = vec![
            (
                ForeignUrls::Never,
                "https://a.example/l",
                Err(R::NotAllowed),
            ),
            (hosts(&[]), "https://a.example/l", Err(R::NotAllowed)),
            (hosts(&["a.example"]), "https://a.example/l", Ok(())),
            (hosts(&["A.Example"]), "https://a.EXAMPLE/l", Ok(())),
            (hosts(&["a.example"]), "https://a.example:8443/l", Ok(())),
            (
                hosts(&["a.example:8443"]),
                "https://a.example:8443/l",
                Ok(()),
            ),
            (hosts(&["a.example:443"]), "https://a.example/l", Ok(())),
            (
                hosts(&["a.example:8443"]),
                "https://a.example/l",
                refused_host("a.example"),
            ),
            (
                hosts(&["a.example"]),
                "https://b.example/l",
                refused_host("b.example"),
            ),
            (
                hosts(&["example"]),
                "https://a.example/l",
                refused_host("a.example"),
            ),
            (ForeignUrls::Any, "https://anything.example/x", Ok(())),
            (
                ForeignUrls::Any,
                "http://a.example/l",
                Err(R::InsecureScheme {
                    host: "a.example".into(),
                }),
            ),
            (
                hosts(&["a.example:80"]),
                "http://a.example/l",
                Err(R::InsecureScheme {
                    host: "a.example".into(),
                }),
            ),
            (
                hosts(&["127.0.0.1:5000"]),
                "http://127.0.0.1:5000/l",
                Ok(()),
            ),
            (hosts(&["localhost"]), "http://LOCALHOST:1/l", Ok(())),
            (ForeignUrls::Any, "http://[::1]:8080/l", Ok(())),
            (
                ForeignUrls::Any,
                "ftp://a.example/l",
                Err(R::Scheme {
                    scheme: "ftp".into(),
                }),
            ),
            (
                ForeignUrls::Any,
                "file:///etc/passwd",
                Err(R::Scheme {
                    scheme: "file".into(),
                }),
            ),
        ];
        for (policy, url, expected) in cases {
            let got = policy.check(url).map(|_| ());
            assert_eq!(got, expected, "{policy:?} {url}");
        }
    }

    #[test]
    fn unparsable_urls_are_refused() {
        for url in ["not a url", "https://", "/relative/path", ""] {
            let got = ForeignUrls::Any.check(url);
            assert!(
                matches!(got, Err(ForeignUrlRefusal::Unparsable { .. })),
                "{url}: {got:?}"
            );
        }
    }

    #[test]
    fn a_star_allows_any_host_and_empty_lists_allow_none() {
        assert_eq!(hosts(&["a", "*"]), ForeignUrls::Any);
        assert_eq!(hosts(&["", " "]), ForeignUrls::Never);
        assert_eq!(
            hosts(&["A.example"]),
            ForeignUrls::Hosts(vec!["a.example".into()])
        );
        assert!(!ForeignUrls::default().allows_any());
    }
}
