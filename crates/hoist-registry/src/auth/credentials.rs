//! Registry credentials and where they come from.
//!
//! [`Credentials`] hold a username and password or an identity (refresh) token; their `Debug`
//! and `Display` never show a secret. [`CredentialSource`] finds the credentials for a registry
//! the way Docker and podman users expect:
//!
//! - Docker's `config.json` (`$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`):
//!   `credHelpers` for the host, else `credsStore`, else `auths` (base64 `auth`,
//!   `username`/`password`, `identitytoken`);
//! - podman's `auth.json` (`$REGISTRY_AUTH_FILE`, `$XDG_RUNTIME_DIR/containers/auth.json`,
//!   `~/.config/containers/auth.json`), same format, where keys may also name a namespace
//!   (`quay.io/org` is used for `quay.io/org/repo` before `quay.io`).
//!
//! Files are consulted in order (`$REGISTRY_AUTH_FILE`, Docker's file, then podman's); the first
//! that yields credentials wins. A credential helper is run as `docker-credential-<name> get`
//! with the server URL on stdin and JSON on stdout; "credentials not found" means none.
//! Keys are matched on the host alone: `https://127.0.0.1:5000/v2/` is `127.0.0.1:5000`, and
//! `https://index.docker.io/v1/`, `index.docker.io` and `registry-1.docker.io` are `docker.io`.
//!
//! [`CredentialSource::store`] and [`CredentialSource::erase`] implement `login`/`logout`: they
//! use the configured helper or rewrite `config.json` atomically (write, fsync, rename, mode
//! 0600), keeping every other field. Nothing else ever writes these files.
//!
//! Everything here blocks (file reads, helper processes); async callers run it on a blocking
//! thread.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Map, Value};

/// Docker Hub's canonical registry name.
const DOCKER_HUB: &str = "docker.io";
/// The key Docker uses for Docker Hub in `config.json` and with credential helpers.
pub const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";
/// Auth files larger than this are refused.
pub const MAX_AUTH_FILE_LEN: u64 = 4 * 1024 * 1024;
/// Output of a credential helper beyond this is not read.
const MAX_HELPER_OUTPUT: u64 = 1024 * 1024;
/// How long a credential helper may run by default.
pub const DEFAULT_HELPER_TIMEOUT: Duration = Duration::from_secs(30);
/// The username credential helpers use to mark the secret as an identity token.
const TOKEN_USERNAME: &str = "<token>";

/// A registry login: username and password, or an identity (refresh) token.
///
/// `Debug` and `Display` show the username and the kind of secret, never the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    kind: Kind,
}

#[derive(Clone, PartialEq, Eq)]
enum Kind {
    Basic {
        username: String,
        password: String,
    },
    IdentityToken {
        username: Option<String>,
        token: String,
    },
}

impl Credentials {
    /// Username and password (or a personal access token used as a password).
    pub fn basic(username: impl Into<String>, password: impl Into<String>) -> Self {
        Self {
            kind: Kind::Basic {
                username: username.into(),
                password: password.into(),
            },
        }
    }

    /// An identity token, exchanged for access tokens with `grant_type=refresh_token`.
    pub fn identity_token(username: Option<String>, token: impl Into<String>) -> Self {
        Self {
            kind: Kind::IdentityToken {
                username,
                token: token.into(),
            },
        }
    }

    /// The username, if any.
    pub fn username(&self) -> Option<&str> {
        match &self.kind {
            Kind::Basic { username, .. } => Some(username),
            Kind::IdentityToken { username, .. } => username.as_deref(),
        }
    }

    /// The password of basic credentials.
    pub fn password(&self) -> Option<&str> {
        match &self.kind {
            Kind::Basic { password, .. } => Some(password),
            Kind::IdentityToken { .. } => None,
        }
    }

    /// The identity token, if these are token credentials.
    pub fn identity_token_secret(&self) -> Option<&str> {
        match &self.kind {
            Kind::IdentityToken { token, .. } => Some(token),
            Kind::Basic { .. } => None,
        }
    }

    /// The `Authorization` value for basic credentials (`Basic <base64>`). It holds the
    /// secret: mark the header sensitive and send it only to the registry it belongs to.
    pub fn basic_authorization(&self) -> Option<String> {
        match &self.kind {
            Kind::Basic { username, password } => Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"))
            )),
            Kind::IdentityToken { .. } => None,
        }
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Basic { username, .. } => f
                .debug_struct("Credentials::Basic")
                .field("username", username)
                .field("password", &"<redacted>")
                .finish(),
            Kind::IdentityToken { username, .. } => f
                .debug_struct("Credentials::IdentityToken")
                .field("username", username)
                .field("token", &"<redacted>")
                .finish(),
        }
    }
}

impl fmt::Display for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Basic { username, .. } => write!(f, "user {username:?} with a password"),
            Kind::IdentityToken {
                username: Some(username),
                ..
            } => write!(f, "user {username:?} with an identity token"),
            Kind::IdentityToken { username: None, .. } => f.write_str("an identity token"),
        }
    }
}

/// Why credentials could not be read, stored or erased.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialError {
    /// An auth file could not be read or written.
    #[error("cannot access credentials file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// An auth file is larger than [`MAX_AUTH_FILE_LEN`].
    #[error("credentials file {path} is {len} bytes; the limit is {MAX_AUTH_FILE_LEN}")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        len: u64,
    },
    /// An auth file is not the JSON object expected.
    #[error("credentials file {path} is malformed: {reason}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong (never the content).
        reason: String,
    },
    /// An `auth` value is not base64 of `username:password`.
    #[error("credentials file {path}: the \"auth\" of {key:?} is not base64 of username:password")]
    InvalidAuth {
        /// The file.
        path: PathBuf,
        /// The registry key of the entry.
        key: String,
    },
    /// A configured helper name could name a path outside `docker-credential-*`.
    #[error("invalid credential helper name {name:?}: expected letters, digits, '.', '_' or '-'")]
    InvalidHelperName {
        /// The name as configured.
        name: String,
    },
    /// The helper program does not exist.
    #[error(
        "credential helper {program} is configured but not installed (or not in PATH); install it or remove it from the config file"
    )]
    HelperNotFound {
        /// The program, `docker-credential-<name>`.
        program: String,
    },
    /// The helper could not be started or talked to.
    #[error("cannot run credential helper {program}: {source}")]
    HelperIo {
        /// The program.
        program: String,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The helper exited with an error.
    #[error("credential helper {program} failed ({status}): {message}")]
    HelperFailed {
        /// The program.
        program: String,
        /// Its exit status.
        status: String,
        /// What it printed, shortened.
        message: String,
    },
    /// The helper ran longer than allowed and was killed.
    #[error("credential helper {program} did not finish within {timeout:?} and was stopped")]
    HelperTimeout {
        /// The program.
        program: String,
        /// The limit.
        timeout: Duration,
    },
    /// The helper's output is not the JSON expected.
    #[error("credential helper {program} printed something other than credentials JSON")]
    HelperOutput {
        /// The program.
        program: String,
    },
    /// `store`/`erase` need a Docker config path and none is known (no `$HOME`).
    #[error("no Docker config file to store credentials in (set DOCKER_CONFIG or HOME)")]
    NoConfigPath,
}

/// Where [`CredentialSource::store`] put the credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoredIn {
    /// In a credential helper, by name.
    Helper(String),
    /// In plain text (base64) in this `config.json`.
    File(PathBuf),
}

/// Finds, stores and erases registry credentials; see the module docs for the lookup order.
#[derive(Debug, Clone)]
pub struct CredentialSource {
    files: Vec<PathBuf>,
    docker_config: Option<PathBuf>,
    helper_dir: Option<PathBuf>,
    helper_timeout: Duration,
}

impl Default for CredentialSource {
    fn default() -> Self {
        Self::empty()
    }
}

impl CredentialSource {
    /// A source with no files (anonymous everywhere); add files with the builder methods.
    pub fn empty() -> Self {
        Self {
            files: Vec::new(),
            docker_config: None,
            helper_dir: None,
            helper_timeout: DEFAULT_HELPER_TIMEOUT,
        }
    }

    /// The standard locations, from this process's environment.
    pub fn from_env() -> Self {
        Self::from_env_with(|name| std::env::var_os(name))
    }

    /// The standard locations, from the environment `var` returns (`REGISTRY_AUTH_FILE`,
    /// `DOCKER_CONFIG`, `HOME`, `XDG_RUNTIME_DIR`), in lookup order.
    pub fn from_env_with(var: impl Fn(&str) -> Option<OsString>) -> Self {
        let var = |name: &str| var(name).filter(|v| !v.is_empty()).map(PathBuf::from);
        let home = var("HOME");
        let mut source = Self::empty();
        if let Some(file) = var("REGISTRY_AUTH_FILE") {
            source = source.auth_file(file);
        }
        let docker_dir = var("DOCKER_CONFIG").or_else(|| home.as_ref().map(|h| h.join(".docker")));
        if let Some(dir) = docker_dir {
            source = source.docker_config(dir.join("config.json"));
        }
        if let Some(dir) = var("XDG_RUNTIME_DIR") {
            source = source.auth_file(dir.join("containers").join("auth.json"));
        }
        if let Some(home) = home {
            source = source.auth_file(home.join(".config").join("containers").join("auth.json"));
        }
        source
    }

    /// Adds Docker's `config.json` to the lookup order and makes it the file `store`/`erase` use.
    pub fn docker_config(mut self, path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        self.files.push(path.clone());
        self.docker_config = Some(path);
        self
    }

    /// Adds an auth file (podman `auth.json` or any file in the same format) to the lookup order.
    pub fn auth_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.files.push(path.into());
        self
    }

    /// Runs credential helpers from `dir` instead of looking them up in `PATH`.
    pub fn helper_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.helper_dir = Some(dir.into());
        self
    }

    /// How long a credential helper may run before it is killed.
    pub fn helper_timeout(mut self, timeout: Duration) -> Self {
        self.helper_timeout = timeout;
        self
    }

    /// The files consulted, in order.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// The Docker config file `store`/`erase` use, if any.
    pub fn docker_config_path(&self) -> Option<&Path> {
        self.docker_config.as_deref()
    }

    /// The credentials for `registry` (a host, `host:port`, or a URL), if any.
    pub fn get(&self, registry: &str) -> Result<Option<Credentials>, CredentialError> {
        self.get_for_repository(registry, None)
    }

    /// The credentials for `repository` on `registry`: auth-file entries for a namespace of the
    /// repository (`quay.io/org` for `quay.io/org/repo`) win over the registry-wide one.
    pub fn get_for_repository(
        &self,
        registry: &str,
        repository: Option<&str>,
    ) -> Result<Option<Credentials>, CredentialError> {
        let (host, _) = normalise_key(registry);
        for path in &self.files {
            let Some(file) = read_auth_file(path)? else {
                continue;
            };
            if let Some(helper) = file.helper_for(&host) {
                let found = self.helper_get(helper, &host)?;
                if found.is_some() {
                    tracing::debug!(registry = %host, helper, "credentials from credential helper");
                    return Ok(found);
                }
                continue;
            }
            if let Some((key, entry)) = file.best_entry(&host, repository)
                && let Some(credentials) = entry_credentials(path, key, entry)?
            {
                tracing::debug!(registry = %host, file = %path.display(), "credentials from file");
                return Ok(Some(credentials));
            }
        }
        tracing::debug!(registry = %host, "no credentials");
        Ok(None)
    }

    /// Stores `credentials` for `registry` (`login`): in the credential helper the Docker config
    /// names for it, else in the config file itself, replacing any entry for the same host.
    pub fn store(
        &self,
        registry: &str,
        credentials: &Credentials,
    ) -> Result<StoredIn, CredentialError> {
        let path = self
            .docker_config
            .as_deref()
            .ok_or(CredentialError::NoConfigPath)?;
        let (host, _) = normalise_key(registry);
        let file = read_auth_file(path)?.unwrap_or_default();
        if let Some(helper) = file.helper_for(&host) {
            let (username, secret) = match &credentials.kind {
                Kind::Basic { username, password } => (username.as_str(), password.as_str()),
                Kind::IdentityToken { token, .. } => (TOKEN_USERNAME, token.as_str()),
            };
            let input = serde_json::json!({
                "ServerURL": server_url(&host),
                "Username": username,
                "Secret": secret,
            });
            self.run_helper(helper, "store", input.to_string().as_bytes())?;
            return Ok(StoredIn::Helper(helper.to_owned()));
        }
        rewrite_json(path, |root| {
            let auths = auths_object(root, path)?;
            let existing: Vec<String> = auths
                .keys()
                .filter(|k| normalise_key(k) == (host.clone(), None))
                .cloned()
                .collect();
            let key = if host == DOCKER_HUB {
                DOCKER_HUB_KEY.to_owned()
            } else {
                existing.first().cloned().unwrap_or_else(|| host.clone())
            };
            // Keep fields such as "email" from the entry being replaced.
            let mut entry = existing
                .iter()
                .find_map(|k| auths.get(k).and_then(Value::as_object).cloned())
                .unwrap_or_default();
            for k in &existing {
                auths.remove(k);
            }
            for field in [
                "auth",
                "username",
                "password",
                "identitytoken",
                "registrytoken",
            ] {
                entry.remove(field);
            }
            let encode = |s: String| base64::engine::general_purpose::STANDARD.encode(s);
            match &credentials.kind {
                Kind::Basic { username, password } => {
                    entry.insert(
                        "auth".into(),
                        encode(format!("{username}:{password}")).into(),
                    );
                }
                Kind::IdentityToken { username, token } => {
                    if let Some(username) = username {
                        entry.insert("auth".into(), encode(format!("{username}:")).into());
                    }
                    entry.insert("identitytoken".into(), token.clone().into());
                }
            }
            auths.insert(key, Value::Object(entry));
            Ok(true)
        })?;
        Ok(StoredIn::File(path.to_owned()))
    }

    /// Erases the credentials for `registry` (`logout`) from its credential helper, if one is
    /// configured, and from the Docker config file. Returns whether anything was erased; the
    /// file is left untouched when it holds no entry for the registry.
    pub fn erase(&self, registry: &str) -> Result<bool, CredentialError> {
        let path = self
            .docker_config
            .as_deref()
            .ok_or(CredentialError::NoConfigPath)?;
        let (host, _) = normalise_key(registry);
        let Some(file) = read_auth_file(path)? else {
            return Ok(false);
        };
        let mut erased = false;
        if let Some(helper) = file.helper_for(&host) {
            erased = self
                .run_helper(helper, "erase", server_url(&host).as_bytes())?
                .is_some();
        }
        let in_file = file
            .auths
            .keys()
            .any(|k| normalise_key(k) == (host.clone(), None));
        if in_file {
            erased |= rewrite_json(path, |root| {
                let auths = auths_object(root, path)?;
                let before = auths.len();
                auths.retain(|k, _| normalise_key(k) != (host.clone(), None));
                Ok(auths.len() != before)
            })?;
        }
        Ok(erased)
    }

    fn helper_get(&self, helper: &str, host: &str) -> Result<Option<Credentials>, CredentialError> {
        let program = program_name(helper)?;
        let Some(out) = self.run_helper(helper, "get", server_url(host).as_bytes())? else {
            return Ok(None);
        };
        #[derive(serde::Deserialize)]
        struct HelperCredentials {
            #[serde(rename = "Username", default)]
            username: String,
            #[serde(rename = "Secret", default)]
            secret: String,
        }
        let creds: HelperCredentials =
            serde_json::from_slice(&out).map_err(|_| CredentialError::HelperOutput { program })?;
        Ok(match (creds.username.as_str(), creds.secret) {
            (_, secret) if secret.is_empty() => None,
            (TOKEN_USERNAME, secret) => Some(Credentials::identity_token(None, secret)),
            (username, secret) => Some(Credentials::basic(username, secret)),
        })
    }

    /// Runs `docker-credential-<helper> <action>` with `input` on stdin. Returns its stdout,
    /// or `None` when it reports "credentials not found".
    fn run_helper(
        &self,
        helper: &str,
        action: &str,
        input: &[u8],
    ) -> Result<Option<Vec<u8>>, CredentialError> {
        let program = program_name(helper)?;
        let path = match &self.helper_dir {
            Some(dir) => dir.join(&program),
            None => PathBuf::from(&program),
        };
        let io_error = |source| CredentialError::HelperIo {
            program: program.clone(),
            source,
        };
        let mut child = Command::new(&path)
            .arg(action)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => CredentialError::HelperNotFound {
                    program: program.clone(),
                },
                _ => io_error(e),
            })?;
        let stdout = spawn_reader(child.stdout.take());
        let stderr = spawn_reader(child.stderr.take());
        if let Some(mut stdin) = child.stdin.take() {
            // A helper may exit without reading its input; its exit status tells what happened.
            match stdin.write_all(input) {
                Err(e) if e.kind() != io::ErrorKind::BrokenPipe => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(io_error(e));
                }
                _ => {}
            }
        }
        let deadline = Instant::now() + self.helper_timeout;
        let timeout = || CredentialError::HelperTimeout {
            program: program.clone(),
            timeout: self.helper_timeout,
        };
        let mut pause = Duration::from_millis(1);
        let status = loop {
            match child.try_wait().map_err(io_error)? {
                Some(status) => break status,
                None if Instant::now() >= deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(timeout());
                }
                None => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(20));
                }
            }
        };
        let remaining = || deadline.saturating_duration_since(Instant::now());
        let stdout = stdout.recv_timeout(remaining()).map_err(|_| timeout())?;
        let stderr = stderr.recv_timeout(remaining()).map_err(|_| timeout())?;
        if status.success() {
            return Ok(Some(stdout));
        }
        let message = String::from_utf8_lossy(if stdout.is_empty() { &stderr } else { &stdout })
            .trim()
            .to_owned();
        if message
            .to_ascii_lowercase()
            .contains("credentials not found")
        {
            return Ok(None);
        }
        Err(CredentialError::HelperFailed {
            program,
            status: status.to_string(),
            message: shorten(&message),
        })
    }
}

fn spawn_reader<R: Read + Send + 'static>(pipe: Option<R>) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(pipe) = pipe {
            let _ = pipe.take(MAX_HELPER_OUTPUT).read_to_end(&mut buf);
        }
        let _ = tx.send(buf);
    });
    rx
}

fn shorten(message: &str) -> String {
    let clean: String = message
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(200)
        .collect();
    if clean.is_empty() {
        "no message".to_owned()
    } else {
        clean
    }
}

fn program_name(helper: &str) -> Result<String, CredentialError> {
    let ok = !helper.is_empty()
        && helper
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && !helper.starts_with('.');
    if ok {
        Ok(format!("docker-credential-{helper}"))
    } else {
        Err(CredentialError::InvalidHelperName {
            name: helper.to_owned(),
        })
    }
}

/// What credential helpers and Docker call the registry: its URL for Docker Hub, else the host.
fn server_url(host: &str) -> String {
    if host == DOCKER_HUB {
        DOCKER_HUB_KEY.to_owned()
    } else {
        host.to_owned()
    }
}

/// Normalises an auth-file key or registry name to `(host, namespace)`.
///
/// A scheme (`https://`) marks a Docker-style URL key whose path is dropped; without one, a
/// path is a podman namespace. Hosts are lowercased and Docker Hub's names become `docker.io`.
fn normalise_key(key: &str) -> (String, Option<String>) {
    let key = key.trim();
    let lower = key.to_ascii_lowercase();
    let (rest, had_scheme) = match ["https://", "http://"]
        .iter()
        .find(|scheme| lower.starts_with(*scheme))
    {
        Some(scheme) => (&key[scheme.len()..], true),
        None => (key, false),
    };
    let (host, path) = match rest.split_once('/') {
        Some((host, path)) => (host, path.trim_matches('/')),
        None => (rest, ""),
    };
    let mut host = host.to_ascii_lowercase();
    if matches!(host.as_str(), "index.docker.io" | "registry-1.docker.io") {
        host = DOCKER_HUB.to_owned();
    }
    let namespace = (!had_scheme && !path.is_empty()).then(|| path.to_owned());
    (host, namespace)
}

#[derive(Default)]
struct AuthFile {
    auths: BTreeMap<String, Map<String, Value>>,
    creds_store: Option<String>,
    cred_helpers: BTreeMap<String, String>,
}

impl AuthFile {
    fn helper_for(&self, host: &str) -> Option<&str> {
        self.cred_helpers
            .iter()
            .find(|(k, _)| normalise_key(k).0 == host)
            .map(|(_, v)| v.as_str())
            .or(self.creds_store.as_deref())
            .filter(|h| !h.is_empty())
    }

    /// The entry for the most specific namespace of `repository` on `host`, else for `host`.
    fn best_entry(
        &self,
        host: &str,
        repository: Option<&str>,
    ) -> Option<(&str, &Map<String, Value>)> {
        let mut best: Option<(usize, &str, &Map<String, Value>)> = None;
        for (key, entry) in &self.auths {
            let (h, namespace) = normalise_key(key);
            if h != host {
                continue;
            }
            let specificity = match (&namespace, repository) {
                (None, _) => 0,
                (Some(ns), Some(repo))
                    if repo == ns
                        || repo
                            .strip_prefix(ns.as_str())
                            .is_some_and(|rest| rest.starts_with('/')) =>
                {
                    ns.len()
                }
                _ => continue,
            };
            let better = match best {
                Some((s, _, _)) => specificity > s,
                None => true,
            };
            if better {
                best = Some((specificity, key.as_str(), entry));
            }
        }
        best.map(|(_, key, entry)| (key, entry))
    }
}

fn read_auth_file(path: &Path) -> Result<Option<AuthFile>, CredentialError> {
    let io_error = |source| CredentialError::Io {
        path: path.to_owned(),
        source,
    };
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error(e)),
    };
    let mut bytes = Vec::new();
    file.take(MAX_AUTH_FILE_LEN + 1)
        .read_to_end(&mut bytes)
        .map_err(io_error)?;
    if bytes.len() as u64 > MAX_AUTH_FILE_LEN {
        return Err(CredentialError::TooLarge {
            path: path.to_owned(),
            len: bytes.len() as u64,
        });
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Some(AuthFile::default()));
    }
    let root = parse_root(&bytes, path)?;
    let string_map = |v: Option<&Value>| -> BTreeMap<String, String> {
        v.and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                    .collect()
            })
            .unwrap_or_default()
    };
    Ok(Some(AuthFile {
        auths: root
            .get("auths")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_object()?.clone())))
                    .collect()
            })
            .unwrap_or_default(),
        creds_store: root
            .get("credsStore")
            .and_then(Value::as_str)
            .map(str::to_owned),
        cred_helpers: string_map(root.get("credHelpers")),
    }))
}

fn parse_root(bytes: &[u8], path: &Path) -> Result<Map<String, Value>, CredentialError> {
    // serde_json's syntax errors give a position, never the text around it.
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(root)) => Ok(root),
        Ok(_) => Err(CredentialError::Malformed {
            path: path.to_owned(),
            reason: "the top level is not a JSON object".to_owned(),
        }),
        Err(e) => Err(CredentialError::Malformed {
            path: path.to_owned(),
            reason: e.to_string(),
        }),
    }
}

fn entry_credentials(
    path: &Path,
    key: &str,
    entry: &Map<String, Value>,
) -> Result<Option<Credentials>, CredentialError> {
    let field = |name: &str| {
        entry
            .get(name)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    let from_auth = match field("auth") {
        Some(auth) => {
            let invalid = || CredentialError::InvalidAuth {
                path: path.to_owned(),
                key: key.to_owned(),
            };
            let engine = base64::engine::GeneralPurpose::new(
                &base64::alphabet::STANDARD,
                base64::engine::GeneralPurposeConfig::new()
                    .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
            );
            let decoded = engine.decode(auth.trim()).map_err(|_| invalid())?;
            let text = String::from_utf8(decoded).map_err(|_| invalid())?;
            let (username, password) = text.split_once(':').ok_or_else(invalid)?;
            Some((username.to_owned(), password.to_owned()))
        }
        None => None,
    };
    if let Some(token) = field("identitytoken") {
        let username = from_auth
            .map(|(u, _)| u)
            .or_else(|| field("username").map(str::to_owned))
            .filter(|u| !u.is_empty() && u != TOKEN_USERNAME);
        return Ok(Some(Credentials::identity_token(username, token)));
    }
    if let Some((username, password)) = from_auth {
        return Ok((!username.is_empty() || !password.is_empty())
            .then(|| Credentials::basic(username, password)));
    }
    Ok(match (field("username"), field("password")) {
        (Some(username), Some(password)) => Some(Credentials::basic(username, password)),
        _ => None,
    })
}

fn auths_object<'a>(
    root: &'a mut Map<String, Value>,
    path: &Path,
) -> Result<&'a mut Map<String, Value>, CredentialError> {
    let auths = root
        .entry("auths")
        .or_insert_with(|| Value::Object(Map::new()));
    if auths.is_null() {
        *auths = Value::Object(Map::new());
    }
    auths
        .as_object_mut()
        .ok_or_else(|| CredentialError::Malformed {
            path: path.to_owned(),
            reason: "\"auths\" is not a JSON object".to_owned(),
        })
}

/// Reads the JSON object at `path` (empty if absent), lets `edit` change it, and when `edit`
/// returns true writes it back atomically: a temporary file in the same directory (mode 0600),
/// fsync, rename over the target (the target of a symlink, so the link survives), fsync the
/// directory. Returns what `edit` returned.
fn rewrite_json(
    path: &Path,
    edit: impl FnOnce(&mut Map<String, Value>) -> Result<bool, CredentialError>,
) -> Result<bool, CredentialError> {
    let io_error = |p: &Path, source| CredentialError::Io {
        path: p.to_owned(),
        source,
    };
    let target = match std::fs::canonicalize(path) {
        Ok(real) => real,
        Err(e) if e.kind() == io::ErrorKind::NotFound => path.to_owned(),
        Err(e) => return Err(io_error(path, e)),
    };
    let mut root = match std::fs::read(&target) {
        Ok(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => Map::new(),
        Ok(bytes) => parse_root(&bytes, path)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Map::new(),
        Err(e) => return Err(io_error(path, e)),
    };
    if !edit(&mut root)? {
        return Ok(false);
    }
    let dir = match target.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    };
    create_private_dir(&dir).map_err(|e| io_error(&dir, e))?;
    let mut text = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"\t");
    let mut serializer = serde_json::Serializer::with_formatter(&mut text, formatter);
    serde::Serialize::serialize(&root, &mut serializer)
        .map_err(|e| io_error(path, io::Error::other(e)))?;
    text.push(b'\n');

    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "config.json".to_owned());
    let (tmp, mut file) = create_temp(&dir, &name).map_err(|e| io_error(&dir, e))?;
    let written = file
        .write_all(&text)
        .and_then(|()| file.sync_all())
        .and_then(|()| std::fs::rename(&tmp, &target));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(io_error(&target, e));
    }
    // Make the rename durable; not every platform can open a directory, so this is best effort.
    if let Ok(d) = std::fs::File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(true)
}

fn create_private_dir(dir: &Path) -> io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

fn create_temp(dir: &Path, name: &str) -> io::Result<(PathBuf, std::fs::File)> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let mut attempt = 0u32;
    loop {
        let tmp = dir.join(format!(
            ".{name}.{}.{nanos}.{attempt}.tmp",
            std::process::id()
        ));
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        match options.open(&tmp) {
            Ok(file) => return Ok((tmp, file)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempt < 100 => attempt += 1,
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    fn write(path: &Path, json: &serde_json::Value) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, serde_json::to_vec_pretty(json).unwrap()).unwrap();
    }

    fn read_json(path: &Path) -> serde_json::Value {
        serde_json::from_slice(&fs::read(path).unwrap()).unwrap()
    }

    #[test]
    fn debug_and_display_never_show_secrets() {
        let basic = Credentials::basic("alice", "hunter2-secret");
        let token = Credentials::identity_token(Some("bob".into()), "refresh-token-secret");
        let anon_token = Credentials::identity_token(None, "other-token-secret");
        for c in [&basic, &token, &anon_token] {
            for text in [format!("{c:?}"), format!("{c:#?}"), format!("{c}")] {
                assert!(!text.contains("secret"), "{text}");
            }
        }
        assert!(format!("{basic:?}").contains("alice"));
        assert!(format!("{token}").contains("bob"));
        // Nor inside a larger Debug structure.
        assert!(!format!("{:?}", Some(vec![basic.clone()])).contains("hunter2"));
    }

    #[test]
    fn basic_authorization_is_base64_of_user_and_password() {
        let c = Credentials::basic("aladdin", "open sesame");
        assert_eq!(
            c.basic_authorization().as_deref(),
            Some("Basic YWxhZGRpbjpvcGVuIHNlc2FtZQ==")
        );
        assert_eq!(
            Credentials::identity_token(None, "t").basic_authorization(),
            None
        );
    }

    #[test]
    fn keys_normalise_scheme_path_case_and_docker_hub() {
        let cases = [
            ("https://127.0.0.1:5000/v2/", ("127.0.0.1:5000", None)),
            ("http://127.0.0.1:5000", ("127.0.0.1:5000", None)),
            ("127.0.0.1:5000", ("127.0.0.1:5000", None)),
            (
                "HTTPS://Registry.Example.COM/v1/",
                ("registry.example.com", None),
            ),
            (DOCKER_HUB_KEY, ("docker.io", None)),
            ("index.docker.io", ("docker.io", None)),
            ("registry-1.docker.io", ("docker.io", None)),
            ("docker.io", ("docker.io", None)),
            ("quay.io/org/", ("quay.io", Some("org"))),
            ("quay.io/org/repo", ("quay.io", Some("org/repo"))),
            ("[::1]:5000", ("[::1]:5000", None)),
        ];
        for (key, (host, ns)) in cases {
            assert_eq!(
                normalise_key(key),
                (host.to_owned(), ns.map(str::to_owned)),
                "{key}"
            );
        }
    }

    #[test]
    fn reads_every_docker_auths_form() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.json");
        write(
            &config,
            &serde_json::json!({
                "auths": {
                    DOCKER_HUB_KEY: {"auth": b64("hubuser:hubpass")},
                    "https://127.0.0.1:5000/v2/": {"auth": b64("local:pw:with:colons")},
                    "plain.example": {"username": "u", "password": "p"},
                    "token.example": {"auth": b64("<token>:"), "identitytoken": "idtok"},
                    "token2.example": {"username": "carol", "identitytoken": "idtok2"},
                    "nopad.example": {"auth": b64("np:x").trim_end_matches('=')},
                    "empty.example": {},
                    "emptyauth.example": {"auth": ""},
                },
                "proxies": {"default": {"httpProxy": "http://proxy"}},
            }),
        );
        let source = CredentialSource::empty().docker_config(&config);
        let get = |r: &str| source.get(r).unwrap();
        assert_eq!(
            get("docker.io"),
            Some(Credentials::basic("hubuser", "hubpass"))
        );
        assert_eq!(
            get("index.docker.io"),
            Some(Credentials::basic("hubuser", "hubpass"))
        );
        assert_eq!(
            get("127.0.0.1:5000"),
            Some(Credentials::basic("local", "pw:with:colons"))
        );
        assert_eq!(
            get("https://127.0.0.1:5000/v2/"),
            Some(Credentials::basic("local", "pw:with:colons"))
        );
        assert_eq!(get("PLAIN.example"), Some(Credentials::basic("u", "p")));
        assert_eq!(
            get("token.example"),
            Some(Credentials::identity_token(None, "idtok"))
        );
        assert_eq!(
            get("token2.example"),
            Some(Credentials::identity_token(Some("carol".into()), "idtok2"))
        );
        assert_eq!(get("nopad.example"), Some(Credentials::basic("np", "x")));
        assert_eq!(get("empty.example"), None);
        assert_eq!(get("emptyauth.example"), None);
        assert_eq!(get("127.0.0.1:5001"), None);
        assert_eq!(get("other.example"), None);
    }

    #[test]
    fn missing_files_mean_no_credentials_and_broken_ones_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let missing = CredentialSource::empty().docker_config(dir.path().join("nope/config.json"));
        assert_eq!(missing.get("docker.io").unwrap(), None);

        let bad = dir.path().join("bad.json");
        fs::write(&bad, "{\"auths\": {\"x\": {\"auth\": \"c2VjcmV0\"").unwrap();
        let err = CredentialSource::empty()
            .auth_file(&bad)
            .get("x")
            .unwrap_err();
        assert!(matches!(err, CredentialError::Malformed { .. }), "{err}");
        assert!(!err.to_string().contains("c2VjcmV0"), "{err}");

        let array = dir.path().join("array.json");
        fs::write(&array, "[]").unwrap();
        assert!(matches!(
            CredentialSource::empty().auth_file(&array).get("x"),
            Err(CredentialError::Malformed { .. })
        ));

        let bad_auth = dir.path().join("badauth.json");
        write(
            &bad_auth,
            &serde_json::json!({"auths": {"x": {"auth": "!!notbase64"}}}),
        );
        assert!(matches!(
            CredentialSource::empty().auth_file(&bad_auth).get("x"),
            Err(CredentialError::InvalidAuth { key, .. }) if key == "x"
        ));
        let no_colon = dir.path().join("nocolon.json");
        write(
            &no_colon,
            &serde_json::json!({"auths": {"x": {"auth": b64("nocolon")}}}),
        );
        assert!(matches!(
            CredentialSource::empty().auth_file(&no_colon).get("x"),
            Err(CredentialError::InvalidAuth { .. })
        ));

        let empty = dir.path().join("empty.json");
        fs::write(&empty, "  \n").unwrap();
        assert_eq!(
            CredentialSource::empty()
                .auth_file(&empty)
                .get("x")
                .unwrap(),
            None
        );

        let wrong_types = dir.path().join("types.json");
        write(
            &wrong_types,
            &serde_json::json!({"auths": {"x": "str", "y": {"auth": 5}}, "credHelpers": []}),
        );
        assert_eq!(
            CredentialSource::empty()
                .auth_file(&wrong_types)
                .get("x")
                .unwrap(),
            None
        );
        assert_eq!(
            CredentialSource::empty()
                .auth_file(&wrong_types)
                .get("y")
                .unwrap(),
            None
        );
    }

    #[test]
    fn podman_namespaced_entries_win_for_their_repositories() {
        let dir = tempfile::tempdir().unwrap();
        let auth = dir.path().join("auth.json");
        write(
            &auth,
            &serde_json::json!({"auths": {
                "quay.io": {"auth": b64("host:1")},
                "quay.io/org": {"auth": b64("org:2")},
                "quay.io/org/team": {"auth": b64("team:3")},
            }}),
        );
        let source = CredentialSource::empty().auth_file(&auth);
        let get = |repo| source.get_for_repository("quay.io", repo).unwrap();
        assert_eq!(
            get(Some("org/team/app")),
            Some(Credentials::basic("team", "3"))
        );
        assert_eq!(get(Some("org/team")), Some(Credentials::basic("team", "3")));
        assert_eq!(get(Some("org/other")), Some(Credentials::basic("org", "2")));
        assert_eq!(
            get(Some("organisation/x")),
            Some(Credentials::basic("host", "1"))
        );
        assert_eq!(get(None), Some(Credentials::basic("host", "1")));
    }

    #[test]
    fn from_env_builds_the_lookup_order_without_reading_the_real_home() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                vars.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| OsString::from(v))
            }
        };
        let source = CredentialSource::from_env_with(env(&[
            ("HOME", "/h"),
            ("REGISTRY_AUTH_FILE", "/explicit.json"),
            ("XDG_RUNTIME_DIR", "/run/user/1"),
        ]));
        assert_eq!(
            source.files(),
            [
                PathBuf::from("/explicit.json"),
                PathBuf::from("/h/.docker/config.json"),
                PathBuf::from("/run/user/1/containers/auth.json"),
                PathBuf::from("/h/.config/containers/auth.json"),
            ]
        );
        assert_eq!(
            source.docker_config_path(),
            Some(Path::new("/h/.docker/config.json"))
        );
        let source =
            CredentialSource::from_env_with(env(&[("HOME", "/h"), ("DOCKER_CONFIG", "/d")]));
        assert_eq!(
            source.docker_config_path(),
            Some(Path::new("/d/config.json"))
        );
        let source = CredentialSource::from_env_with(env(&[("HOME", "")]));
        assert!(source.files().is_empty());
        assert!(matches!(
            source.store("x", &Credentials::basic("a", "b")),
            Err(CredentialError::NoConfigPath)
        ));
    }

    #[test]
    fn earlier_files_win_and_empty_entries_fall_through() {
        let dir = tempfile::tempdir().unwrap();
        let first = dir.path().join("first.json");
        let second = dir.path().join("second.json");
        write(
            &first,
            &serde_json::json!({"auths": {"a.example": {"auth": b64("first:1")}, "b.example": {}}}),
        );
        write(
            &second,
            &serde_json::json!({"auths": {"a.example": {"auth": b64("second:2")}, "b.example": {"auth": b64("second:3")}}}),
        );
        let source = CredentialSource::empty()
            .auth_file(&first)
            .docker_config(&second);
        assert_eq!(
            source.get("a.example").unwrap(),
            Some(Credentials::basic("first", "1"))
        );
        assert_eq!(
            source.get("b.example").unwrap(),
            Some(Credentials::basic("second", "3"))
        );
    }

    #[test]
    fn store_rewrites_config_preserving_other_fields() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.json");
        write(
            &config,
            &serde_json::json!({
                "auths": {
                    "other.example": {"auth": b64("o:p")},
                    "https://reg.example:5000/v2/": {"auth": b64("old:old"), "email": "me@example.com"},
                    "reg.example:5000": {"auth": b64("dup:dup")},
                },
                "currentContext": "ctx",
                "plugins": {"x": {"y": [1, 2, {"z": null}]}},
            }),
        );
        let source = CredentialSource::empty().docker_config(&config);
        let stored = source
            .store("reg.example:5000", &Credentials::basic("new", "pw"))
            .unwrap();
        assert_eq!(stored, StoredIn::File(config.clone()));
        let json = read_json(&config);
        assert_eq!(json["currentContext"], "ctx");
        assert_eq!(
            json["plugins"],
            serde_json::json!({"x": {"y": [1, 2, {"z": null}]}})
        );
        assert_eq!(json["auths"]["other.example"]["auth"], b64("o:p"));
        let auths = json["auths"].as_object().unwrap();
        assert_eq!(auths.len(), 2, "one entry per host: {auths:?}");
        let entry = &json["auths"]["https://reg.example:5000/v2/"];
        assert_eq!(entry["auth"], b64("new:pw"));
        assert_eq!(entry["email"], "me@example.com");
        assert_eq!(
            source.get("reg.example:5000").unwrap(),
            Some(Credentials::basic("new", "pw"))
        );
        // Only the config file is left in the directory: no temporary files.
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["config.json"]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                fs::metadata(&config).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
    }

    #[test]
    fn store_creates_the_file_and_uses_dockers_hub_key() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("new/.docker/config.json");
        let source = CredentialSource::empty().docker_config(&config);
        source
            .store("index.docker.io", &Credentials::basic("hub", "pw"))
            .unwrap();
        source
            .store(
                "tok.example",
                &Credentials::identity_token(Some("ann".into()), "idt"),
            )
            .unwrap();
        let json = read_json(&config);
        assert_eq!(json["auths"][DOCKER_HUB_KEY]["auth"], b64("hub:pw"));
        assert_eq!(json["auths"]["tok.example"]["identitytoken"], "idt");
        assert_eq!(
            source.get("docker.io").unwrap(),
            Some(Credentials::basic("hub", "pw"))
        );
        assert_eq!(
            source.get("tok.example").unwrap(),
            Some(Credentials::identity_token(Some("ann".into()), "idt"))
        );
        let text = fs::read_to_string(&config).unwrap();
        assert!(
            text.contains("\n\t\"auths\""),
            "tab-indented like Docker: {text}"
        );
    }

    #[cfg(unix)]
    #[test]
    fn store_through_a_symlinked_config_keeps_the_link() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("dotfiles/docker.json");
        write(&real, &serde_json::json!({"auths": {}, "keep": true}));
        let link_dir = dir.path().join(".docker");
        fs::create_dir_all(&link_dir).unwrap();
        let link = link_dir.join("config.json");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let source = CredentialSource::empty().docker_config(&link);
        source
            .store("r.example", &Credentials::basic("u", "p"))
            .unwrap();
        assert!(
            fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        let json = read_json(&real);
        assert_eq!(json["keep"], true);
        assert_eq!(json["auths"]["r.example"]["auth"], b64("u:p"));
    }

    #[test]
    fn store_refuses_to_clobber_a_malformed_config() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.json");
        fs::write(&config, "{not json").unwrap();
        let source = CredentialSource::empty().docker_config(&config);
        assert!(matches!(
            source.store("r.example", &Credentials::basic("u", "p")),
            Err(CredentialError::Malformed { .. })
        ));
        assert_eq!(fs::read_to_string(&config).unwrap(), "{not json");
        fs::write(&config, "{\"auths\": 7}").unwrap();
        assert!(matches!(
            source.store("r.example", &Credentials::basic("u", "p")),
            Err(CredentialError::Malformed { .. })
        ));
    }

    #[test]
    fn erase_removes_every_entry_for_the_host_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.json");
        write(
            &config,
            &serde_json::json!({"auths": {
                "https://r.example/v2/": {"auth": b64("a:b")},
                "r.example": {"auth": b64("c:d")},
                "s.example": {"auth": b64("e:f")},
            }, "x": 1}),
        );
        let source = CredentialSource::empty().docker_config(&config);
        assert!(source.erase("https://r.example").unwrap());
        let json = read_json(&config);
        assert_eq!(
            json["auths"],
            serde_json::json!({"s.example": {"auth": b64("e:f")}})
        );
        assert_eq!(json["x"], 1);
        let before = fs::read(&config).unwrap();
        assert!(!source.erase("r.example").unwrap());
        assert_eq!(
            fs::read(&config).unwrap(),
            before,
            "nothing to erase leaves the file as it was"
        );
        let missing = CredentialSource::empty().docker_config(dir.path().join("none.json"));
        assert!(!missing.erase("r.example").unwrap());
        assert!(!dir.path().join("none.json").exists());
    }

    #[cfg(unix)]
    mod helpers {
        use super::*;
        use std::os::unix::fs::PermissionsExt;

        /// A credential helper that keeps credentials as files in `<dir>/store` and logs each
        /// call (action and stdin) to `<dir>/log`.
        const FAKE_HELPER: &str = r#"#!/bin/sh
dir=$(dirname "$0")
input=$(cat)
printf '%s %s\n' "$1" "$input" >> "$dir/log"
mkdir -p "$dir/store"
case "$1" in
  get|erase) url=$input ;;
  store) url=$(printf '%s' "$input" | sed -n 's/.*"ServerURL":"\([^"]*\)".*/\1/p') ;;
  *) echo "unknown action" >&2; exit 2 ;;
esac
key=$(printf '%s' "$url" | tr '/:' '__')
case "$1" in
  get)
    if [ -f "$dir/store/$key" ]; then cat "$dir/store/$key"
    else echo "credentials not found in native keychain"; exit 1; fi ;;
  store) printf '%s' "$input" > "$dir/store/$key" ;;
  erase)
    if [ -f "$dir/store/$key" ]; then rm "$dir/store/$key"
    else echo "credentials not found in native keychain"; exit 1; fi ;;
esac
"#;

        fn install(dir: &Path, name: &str, script: &str) {
            let path = dir.join(format!("docker-credential-{name}"));
            fs::write(&path, script).unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        }

        fn log(dir: &Path) -> String {
            fs::read_to_string(dir.join("log")).unwrap_or_default()
        }

        fn seed(dir: &Path, url: &str, json: &str) {
            fs::create_dir_all(dir.join("store")).unwrap();
            fs::write(dir.join("store").join(url.replace(['/', ':'], "_")), json).unwrap();
        }

        #[test]
        fn cred_helpers_get_the_server_url_on_stdin_and_return_json() {
            let dir = tempfile::tempdir().unwrap();
            let helpers = dir.path().join("bin");
            fs::create_dir_all(&helpers).unwrap();
            install(&helpers, "fake", FAKE_HELPER);
            seed(
                &helpers,
                "localhost:5000",
                r#"{"ServerURL":"localhost:5000","Username":"alice","Secret":"s3cret"}"#,
            );
            seed(
                &helpers,
                DOCKER_HUB_KEY,
                r#"{"ServerURL":"x","Username":"<token>","Secret":"refresh"}"#,
            );
            let config = dir.path().join("config.json");
            write(
                &config,
                &serde_json::json!({
                    "auths": {"localhost:5000": {"auth": b64("file:ignored")}, "nohelper.example": {"auth": b64("f:g")}},
                    "credHelpers": {"localhost:5000": "fake", "https://index.docker.io/v1/": "fake", "absent.example": "fake"},
                }),
            );
            let source = CredentialSource::empty()
                .docker_config(&config)
                .helper_dir(&helpers);
            assert_eq!(
                source.get("localhost:5000").unwrap(),
                Some(Credentials::basic("alice", "s3cret"))
            );
            assert_eq!(
                source.get("docker.io").unwrap(),
                Some(Credentials::identity_token(None, "refresh"))
            );
            assert_eq!(source.get("absent.example").unwrap(), None);
            assert_eq!(
                source.get("nohelper.example").unwrap(),
                Some(Credentials::basic("f", "g"))
            );
            assert_eq!(
                log(&helpers),
                "get localhost:5000\nget https://index.docker.io/v1/\nget absent.example\n"
            );
        }

        #[test]
        fn creds_store_applies_to_every_host_and_not_found_falls_through() {
            let dir = tempfile::tempdir().unwrap();
            install(dir.path(), "fake", FAKE_HELPER);
            seed(dir.path(), "r.example", r#"{"Username":"u","Secret":"p"}"#);
            let config = dir.path().join("config.json");
            write(
                &config,
                &serde_json::json!({"credsStore": "fake", "auths": {"q.example": {}}}),
            );
            let podman = dir.path().join("auth.json");
            write(
                &podman,
                &serde_json::json!({"auths": {"q.example": {"auth": b64("pod:man")}}}),
            );
            let source = CredentialSource::empty()
                .docker_config(&config)
                .auth_file(&podman)
                .helper_dir(dir.path());
            assert_eq!(
                source.get("r.example").unwrap(),
                Some(Credentials::basic("u", "p"))
            );
            assert_eq!(
                source.get("q.example").unwrap(),
                Some(Credentials::basic("pod", "man"))
            );
        }

        #[test]
        fn login_and_logout_go_through_the_configured_helper() {
            let dir = tempfile::tempdir().unwrap();
            install(dir.path(), "fake", FAKE_HELPER);
            let config = dir.path().join("config.json");
            write(
                &config,
                &serde_json::json!({"credsStore": "fake", "auths": {"r.example": {"auth": b64("old:plain")}}}),
            );
            let source = CredentialSource::empty()
                .docker_config(&config)
                .helper_dir(dir.path());
            let stored = source
                .store("r.example", &Credentials::basic("u", "p\"w"))
                .unwrap();
            assert_eq!(stored, StoredIn::Helper("fake".into()));
            let store_call = log(dir.path());
            for field in [
                r#""ServerURL":"r.example""#,
                r#""Username":"u""#,
                r#""Secret":"p\"w""#,
            ] {
                assert!(
                    store_call.starts_with("store {") && store_call.contains(field),
                    "{store_call}"
                );
            }
            assert_eq!(
                source.get("r.example").unwrap(),
                Some(Credentials::basic("u", "p\"w"))
            );
            source
                .store("docker.io", &Credentials::identity_token(None, "tok"))
                .unwrap();
            assert_eq!(
                source.get("docker.io").unwrap(),
                Some(Credentials::identity_token(None, "tok"))
            );
            // logout erases from the helper and the stale plain-text entry.
            assert!(source.erase("r.example").unwrap());
            assert_eq!(read_json(&config)["auths"], serde_json::json!({}));
            assert_eq!(source.get("r.example").unwrap(), None);
            assert!(!source.erase("r.example").unwrap());
        }

        #[test]
        fn failing_missing_and_misnamed_helpers_are_errors() {
            let dir = tempfile::tempdir().unwrap();
            install(
                dir.path(),
                "broken",
                "#!/bin/sh\ncat >/dev/null\necho 'keychain locked' >&2\nexit 3\n",
            );
            install(
                dir.path(),
                "garbage",
                "#!/bin/sh\ncat >/dev/null\necho 'not json'\n",
            );
            let config = dir.path().join("config.json");
            write(
                &config,
                &serde_json::json!({"credHelpers": {
                    "broken.example": "broken", "garbage.example": "garbage",
                    "missing.example": "missing", "evil.example": "../../bin/sh",
                }}),
            );
            let source = CredentialSource::empty()
                .docker_config(&config)
                .helper_dir(dir.path());
            match source.get("broken.example") {
                Err(CredentialError::HelperFailed {
                    program, message, ..
                }) => {
                    assert_eq!(program, "docker-credential-broken");
                    assert_eq!(message, "keychain locked");
                }
                other => panic!("{other:?}"),
            }
            assert!(matches!(
                source.get("garbage.example"),
                Err(CredentialError::HelperOutput { .. })
            ));
            assert!(matches!(
                source.get("missing.example"),
                Err(CredentialError::HelperNotFound { program }) if program == "docker-credential-missing"
            ));
            assert!(matches!(
                source.get("evil.example"),
                Err(CredentialError::InvalidHelperName { name }) if name == "../../bin/sh"
            ));
        }

        #[test]
        fn a_hanging_helper_is_killed_at_the_timeout() {
            let dir = tempfile::tempdir().unwrap();
            let fifo = dir.path().join("never-written");
            let status = Command::new("mkfifo").arg(&fifo).status().unwrap();
            assert!(status.success());
            // Opening a FIFO for reading blocks until a writer appears, which never happens.
            install(
                dir.path(),
                "hang",
                &format!("#!/bin/sh\nread x < '{}'\n", fifo.display()),
            );
            let config = dir.path().join("config.json");
            write(&config, &serde_json::json!({"credsStore": "hang"}));
            let source = CredentialSource::empty()
                .docker_config(&config)
                .helper_dir(dir.path())
                .helper_timeout(Duration::from_millis(200));
            assert!(matches!(
                source.get("r.example"),
                Err(CredentialError::HelperTimeout { .. })
            ));
        }
    }
}
