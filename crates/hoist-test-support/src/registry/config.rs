//! The registry's `config.yml`, written from the harness's settings.

use std::fmt::Write as _;
use std::path::Path;

/// How verbose the registry's log is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum LogLevel {
    /// Errors only.
    Error,
    /// Warnings and errors (the default).
    #[default]
    Warn,
    /// Informational messages too.
    Info,
    /// Everything.
    Debug,
}

impl LogLevel {
    fn as_str(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
        }
    }
}

/// The `auth:` section.
pub(crate) enum AuthSection<'a> {
    None,
    Htpasswd {
        path: &'a Path,
    },
    Token {
        realm: &'a str,
        service: &'a str,
        issuer: &'a str,
        root_cert: &'a Path,
    },
}

/// The `proxy:` section.
pub(crate) struct ProxySection<'a> {
    pub(crate) remote_url: &'a str,
    pub(crate) credentials: Option<(&'a str, &'a str)>,
}

/// The `http.tls` section.
pub(crate) struct TlsSection<'a> {
    pub(crate) certificate: &'a Path,
    pub(crate) key: &'a Path,
    /// CAs whose client certificates are required (none: no client authentication).
    pub(crate) client_ca: Option<&'a Path>,
}

/// Everything the config depends on.
pub(crate) struct ConfigInput<'a> {
    pub(crate) tls: Option<TlsSection<'a>>,
    pub(crate) port: u16,
    pub(crate) storage: &'a Path,
    pub(crate) log_level: LogLevel,
    pub(crate) access_log: bool,
    pub(crate) auth: AuthSection<'a>,
    pub(crate) proxy: Option<ProxySection<'a>>,
    pub(crate) secret: &'a str,
    /// `validation.manifests.urls.allow`, when manifests may carry layer `urls`.
    pub(crate) manifest_urls: Option<&'a str>,
}

/// A YAML double-quoted scalar: JSON string syntax is valid YAML.
fn quote(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

fn quote_path(p: &Path) -> String {
    quote(&p.to_string_lossy())
}

/// Renders `config.yml`.
pub(crate) fn render(input: &ConfigInput<'_>) -> String {
    let mut y = String::new();
    // Writing to a String cannot fail.
    let _ = write!(
        y,
        "version: 0.1
log:
  level: {level}
  accesslog:
    disabled: {no_access_log}
  fields:
    service: registry
storage:
  filesystem:
    rootdirectory: {storage}
  cache:
    blobdescriptor: inmemory
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:{port}
  secret: {secret}
  headers:
    X-Content-Type-Options: [nosniff]
",
        level = input.log_level.as_str(),
        no_access_log = !input.access_log,
        storage = quote_path(input.storage),
        port = input.port,
        secret = quote(input.secret),
    );
    if let Some(tls) = &input.tls {
        let _ = write!(
            y,
            "  tls:\n    certificate: {}\n    key: {}\n",
            quote_path(tls.certificate),
            quote_path(tls.key)
        );
        if let Some(ca) = tls.client_ca {
            let _ = write!(y, "    clientcas:\n      - {}\n", quote_path(ca));
        }
    }
    match &input.auth {
        AuthSection::None => {}
        AuthSection::Htpasswd { path } => {
            let _ = write!(
                y,
                "auth:\n  htpasswd:\n    realm: hoist-test-registry\n    path: {}\n",
                quote_path(path)
            );
        }
        AuthSection::Token {
            realm,
            service,
            issuer,
            root_cert,
        } => {
            let _ = write!(
                y,
                "auth:\n  token:\n    realm: {}\n    service: {}\n    issuer: {}\n    rootcertbundle: {}\n",
                quote(realm),
                quote(service),
                quote(issuer),
                quote_path(root_cert)
            );
        }
    }
    if let Some(allow) = input.manifest_urls {
        let _ = write!(
            y,
            "validation:\n  manifests:\n    urls:\n      allow:\n        - {}\n",
            quote(allow)
        );
    }
    if let Some(proxy) = &input.proxy {
        let _ = write!(y, "proxy:\n  remoteurl: {}\n", quote(proxy.remote_url));
        if let Some((user, password)) = proxy.credentials {
            let _ = write!(
                y,
                "  username: {}\n  password: {}\n",
                quote(user),
                quote(password)
            );
        }
    }
    y
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_quotes_paths_and_names_it_cannot_trust() {
        let yaml = render(&ConfigInput {
            tls: None,
            port: 5000,
            storage: Path::new("/tmp/a \"b\"/storage"),
            log_level: LogLevel::Warn,
            access_log: false,
            auth: AuthSection::Token {
                realm: "http://127.0.0.1:1/token",
                service: "svc",
                issuer: "iss: x",
                root_cert: Path::new("/tmp/root.pem"),
            },
            proxy: Some(ProxySection {
                remote_url: "http://127.0.0.1:2",
                credentials: Some(("u", "p#w")),
            }),
            secret: "s",
            manifest_urls: Some("^https?://"),
        });
        assert!(yaml.contains("      allow:\n        - \"^https?://\"\n"));
        assert!(yaml.contains(r#"rootdirectory: "/tmp/a \"b\"/storage""#));
        assert!(yaml.contains("addr: 127.0.0.1:5000\n"));
        assert!(yaml.contains("  level: warn\n"));
        assert!(yaml.contains(r#"issuer: "iss: x""#));
        assert!(yaml.contains(r#"remoteurl: "http://127.0.0.1:2""#));
        assert!(yaml.contains(r#"password: "p#w""#));
        assert!(yaml.contains("disabled: true"));
    }
}
