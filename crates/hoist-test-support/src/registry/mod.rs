//! The real CNCF distribution registry (Debian's `docker-registry`), started per test.
//!
//! Each [`Registry`] runs its own process on `127.0.0.1` at a free port, with its own
//! temporary directory (config, storage, log, htpasswd or token certificate), so any
//! number can run at once. Dropping the value kills the process and removes the
//! directory; should the test process die first, the registry dies with it.

mod config;
mod process;
mod tls;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::Empty;

pub use config::LogLevel;
pub use tls::{ClientAuth, TlsFiles};

use crate::error::{Error, Result};
use crate::token::{TokenPolicy, TokenServer};
use config::{AuthSection, ConfigInput, ProxySection, TlsSection};
use process::RegistryProcess;

/// Where Debian's `docker-registry` package installs the registry.
pub const DEFAULT_BINARY: &str = "/usr/bin/docker-registry";

/// How many times a start is retried when the chosen port was taken meanwhile.
const PORT_ATTEMPTS: usize = 5;

enum AuthSetup {
    None,
    Basic { user: String, password: String },
    Token(TokenServer),
}

/// Builds and starts a [`Registry`].
///
/// ```no_run
/// # async fn demo() -> hoist_test_support::Result<()> {
/// use hoist_test_support::Registry;
/// let upstream = Registry::start().await?;
/// let cache = Registry::builder()
///     .pull_through(&upstream.url())
///     .start()
///     .await?;
/// # let _ = cache; Ok(()) }
/// ```
pub struct RegistryBuilder {
    binary: PathBuf,
    auth: AuthSetup,
    proxy_remote: Option<(String, Option<(String, String)>)>,
    log_level: LogLevel,
    access_log: bool,
    start_timeout: Duration,
    tls: Option<ClientAuth>,
    manifest_urls: Option<String>,
}

impl std::fmt::Debug for RegistryBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryBuilder")
            .field("binary", &self.binary)
            .field("log_level", &self.log_level)
            .finish_non_exhaustive()
    }
}

impl Default for RegistryBuilder {
    fn default() -> Self {
        RegistryBuilder {
            binary: PathBuf::from(DEFAULT_BINARY),
            auth: AuthSetup::None,
            proxy_remote: None,
            log_level: LogLevel::Warn,
            access_log: false,
            start_timeout: Duration::from_secs(30),
            tls: None,
            manifest_urls: None,
        }
    }
}

impl RegistryBuilder {
    /// Runs another registry binary instead of [`DEFAULT_BINARY`].
    pub fn binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.binary = path.into();
        self
    }

    /// Requires HTTP Basic credentials (htpasswd mode) for every request.
    pub fn basic_auth(mut self, user: &str, password: &str) -> Self {
        self.auth = AuthSetup::Basic {
            user: user.to_owned(),
            password: password.to_owned(),
        };
        self
    }

    /// Requires bearer tokens issued by `server`; the registry trusts its certificate.
    /// The registry owns the server from then on: see [`Registry::token_server`].
    pub fn token_auth(mut self, server: TokenServer) -> Self {
        self.auth = AuthSetup::Token(server);
        self
    }

    /// Makes the registry a pull-through cache of `remote_url` (`proxy.remoteurl`).
    /// Such a registry refuses pushes.
    pub fn pull_through(mut self, remote_url: &str) -> Self {
        self.proxy_remote = Some((remote_url.to_owned(), None));
        self
    }

    /// Like [`RegistryBuilder::pull_through`], logging in to the remote.
    pub fn pull_through_with_credentials(
        mut self,
        remote_url: &str,
        user: &str,
        password: &str,
    ) -> Self {
        self.proxy_remote = Some((
            remote_url.to_owned(),
            Some((user.to_owned(), password.to_owned())),
        ));
        self
    }

    /// The registry's log level (default [`LogLevel::Warn`]).
    pub fn log_level(mut self, level: LogLevel) -> Self {
        self.log_level = level;
        self
    }

    /// Whether the registry logs every request (default off).
    pub fn access_log(mut self, enabled: bool) -> Self {
        self.access_log = enabled;
        self
    }

    /// Accepts manifests whose layer descriptors have `urls` matching the regular expression
    /// `allow` (`validation.manifests.urls.allow`); by default the registry refuses them.
    pub fn allow_manifest_urls(mut self, allow: &str) -> Self {
        self.manifest_urls = Some(allow.to_owned());
        self
    }

    /// How long to wait for `GET /v2/` to answer (default 30 s).
    pub fn start_timeout(mut self, timeout: Duration) -> Self {
        self.start_timeout = timeout;
        self
    }

    /// Writes the configuration, starts the process and waits until `GET /v2/` answers.
    /// Serves HTTPS only, with a server certificate for `127.0.0.1` signed by a CA made for
    /// this registry (see [`Registry::tls_files`]); with [`ClientAuth::Required`] clients must
    /// also present a certificate signed by that CA.
    pub fn tls(mut self, client_auth: ClientAuth) -> Self {
        self.tls = Some(client_auth);
        self
    }

    /// Starts the registry and waits until it answers.
    pub async fn start(self) -> Result<Registry> {
        if !self.binary.is_file() {
            return Err(Error::RegistryBinaryMissing { path: self.binary });
        }
        let dir = tempfile::Builder::new()
            .prefix("hoist-registry-")
            .tempdir()
            .map_err(|e| Error::io("creating the registry's temporary directory", e))?;
        let storage = dir.path().join("storage");
        std::fs::create_dir(&storage)
            .map_err(|e| Error::io(format!("creating {}", storage.display()), e))?;
        let htpasswd = dir.path().join("htpasswd");
        let root_cert = dir.path().join("token-root.pem");
        match &self.auth {
            AuthSetup::None => {}
            AuthSetup::Basic { user, password } => {
                // Cost 4 (the minimum): the registry checks the hash on every request.
                let hash = bcrypt::hash(password, 4).map_err(|e| Error::Htpasswd(e.to_string()))?;
                write(&htpasswd, &format!("{user}:{hash}\n"))?;
            }
            AuthSetup::Token(server) => write(&root_cert, server.certificate_pem())?,
        }
        let token_realm = match &self.auth {
            AuthSetup::Token(server) => server.realm(),
            _ => String::new(),
        };
        let tls_files = match self.tls {
            Some(_) => Some(tls::generate(dir.path())?),
            None => None,
        };
        let config_path = dir.path().join("config.yml");
        let log = dir.path().join("registry.log");
        let secret = format!("hoist-test-{}", rand::random::<u64>());

        let mut last_err = None;
        for _ in 0..PORT_ATTEMPTS {
            let port = process::free_port().map_err(|e| Error::io("finding a free port", e))?;
            let auth = match &self.auth {
                AuthSetup::None => AuthSection::None,
                AuthSetup::Basic { .. } => AuthSection::Htpasswd { path: &htpasswd },
                AuthSetup::Token(server) => AuthSection::Token {
                    realm: &token_realm,
                    service: server.service(),
                    issuer: server.issuer(),
                    root_cert: &root_cert,
                },
            };
            let yaml = config::render(&ConfigInput {
                tls: tls_files.as_ref().map(|f| TlsSection {
                    certificate: &f.server_cert,
                    key: &f.server_key,
                    client_ca: (self.tls == Some(ClientAuth::Required)).then_some(f.ca.as_path()),
                }),
                port,
                storage: &storage,
                log_level: self.log_level,
                access_log: self.access_log,
                auth,
                proxy: self.proxy_remote.as_ref().map(|(url, creds)| ProxySection {
                    remote_url: url,
                    credentials: creds.as_ref().map(|(u, p)| (u.as_str(), p.as_str())),
                }),
                secret: &secret,
                manifest_urls: self.manifest_urls.as_deref(),
            });
            write(&config_path, &yaml)?;
            write(&log, "")?;
            let mut process = RegistryProcess::spawn(&self.binary, &config_path, &log)
                .await
                .map_err(|e| Error::io(format!("starting {}", self.binary.display()), e))?;
            match wait_ready(
                &mut process,
                port,
                tls_files.is_some(),
                &log,
                self.start_timeout,
            )
            .await
            {
                Ok(()) => {
                    let (basic, token_server) = match self.auth {
                        AuthSetup::None => (None, None),
                        AuthSetup::Basic { user, password } => (Some((user, password)), None),
                        AuthSetup::Token(server) => (None, Some(server)),
                    };
                    return Ok(Registry {
                        process,
                        port,
                        tls: tls_files,
                        basic,
                        token_server,
                        storage,
                        log,
                        dir,
                    });
                }
                Err(Error::RegistryExited { tail, status, log })
                    if tail.contains("address already in use") =>
                {
                    last_err = Some(Error::RegistryExited { status, log, tail });
                }
                Err(e) => return Err(e),
            }
        }
        Err(last_err.unwrap_or_else(|| {
            Error::io(
                "starting the registry",
                std::io::Error::other("no attempt made"),
            )
        }))
    }
}

fn write(path: &Path, contents: &str) -> Result<()> {
    std::fs::write(path, contents).map_err(|e| Error::io(format!("writing {}", path.display()), e))
}

/// Polls `GET /v2/` until the registry answers (any status: 401 counts in auth modes),
/// failing early if the process exits. A TLS registry is probed in plain HTTP too: its answer
/// (`400`, "Client sent an HTTP request to an HTTPS server") shows it listens.
async fn wait_ready(
    process: &mut RegistryProcess,
    port: u16,
    tls: bool,
    log: &Path,
    timeout: Duration,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let addr = format!("127.0.0.1:{port}");
    loop {
        if let Some(status) = process.exited() {
            return Err(Error::RegistryExited {
                status,
                log: log.to_owned(),
                tail: tail_of(log, 20),
            });
        }
        let probe = Request::get("/v2/")
            .header(http::header::HOST, &addr)
            .body(Empty::<Bytes>::new());
        if let Ok(req) = probe {
            let answer =
                tokio::time::timeout(Duration::from_secs(2), crate::upstream::send(&addr, req))
                    .await;
            if let Ok(Ok(resp)) = answer
                && (if tls {
                    resp.status() == http::StatusCode::BAD_REQUEST
                } else {
                    resp.headers()
                        .contains_key("docker-distribution-api-version")
                })
                && process.exited().is_none()
            {
                return Ok(());
            }
        }
        if Instant::now() >= deadline {
            return Err(Error::RegistryTimeout {
                url: format!("http://{addr}/v2/"),
                timeout,
                log: log.to_owned(),
                tail: tail_of(log, 20),
            });
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The last `lines` lines of the file at `path`.
fn tail_of(path: &Path, lines: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            if all.is_empty() {
                return "(the log is empty)".to_owned();
            }
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(could not read the log: {e})"),
    }
}

/// A running registry on `127.0.0.1`. Dropping it kills the process and deletes its
/// directory.
///
/// ```no_run
/// # async fn demo() -> hoist_test_support::Result<()> {
/// use hoist_test_support::Registry;
/// let registry = Registry::start_with_basic_auth("tester", "secret").await?;
/// assert!(registry.url().starts_with("http://127.0.0.1:"));
/// # Ok(()) }
/// ```
pub struct Registry {
    // Fields drop in order: the process dies before its directory goes.
    process: RegistryProcess,
    port: u16,
    tls: Option<TlsFiles>,
    basic: Option<(String, String)>,
    token_server: Option<TokenServer>,
    storage: PathBuf,
    log: PathBuf,
    dir: tempfile::TempDir,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("url", &self.url())
            .field("pid", &self.pid())
            .field("dir", &self.dir.path())
            .finish_non_exhaustive()
    }
}

impl Registry {
    /// A builder for any mode.
    pub fn builder() -> RegistryBuilder {
        RegistryBuilder::default()
    }

    /// Starts a registry without authentication.
    pub async fn start() -> Result<Registry> {
        Self::builder().start().await
    }

    /// Starts a registry that requires Basic credentials `user`/`password`.
    pub async fn start_with_basic_auth(user: &str, password: &str) -> Result<Registry> {
        Self::builder().basic_auth(user, password).start().await
    }

    /// Starts a [`TokenServer`] with `policy` and a registry that requires its tokens.
    /// The server is reachable through [`Registry::token_server`].
    pub async fn start_with_token_auth(policy: TokenPolicy) -> Result<Registry> {
        let server = TokenServer::start(policy).await?;
        Self::builder().token_auth(server).start().await
    }

    /// `http://127.0.0.1:PORT` (`https://` for a TLS registry).
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.host())
    }

    /// The certificates of a TLS registry ([`RegistryBuilder::tls`]).
    pub fn tls_files(&self) -> Option<&TlsFiles> {
        self.tls.as_ref()
    }

    /// `127.0.0.1:PORT`, the registry part of an image reference.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The registry's process id.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// The temporary directory holding config, storage and log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The filesystem storage root (`storage.filesystem.rootdirectory`).
    pub fn storage_dir(&self) -> &Path {
        &self.storage
    }

    /// The registry's log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The last `lines` lines of the registry's log, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        tail_of(&self.log, lines)
    }

    /// The Basic credentials in htpasswd mode.
    pub fn basic_credentials(&self) -> Option<(&str, &str)> {
        self.basic.as_ref().map(|(u, p)| (u.as_str(), p.as_str()))
    }

    /// The token server in token mode.
    pub fn token_server(&self) -> Option<&TokenServer> {
        self.token_server.as_ref()
    }
}
