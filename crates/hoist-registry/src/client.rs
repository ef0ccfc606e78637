//! The registry client: one pooled HTTP stack for every registry, with per-registry TLS, endpoint
//! resolution, authentication and the request loop every operation goes through.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use url::Url;

use crate::auth::credentials::{CredentialSource, Credentials};
use crate::auth::{self, HostAuth, Plan};
use crate::body::BodyStream;
use crate::chunk_strategy::RangeMode;
use crate::config::{HostConfig, Scheme, schemes_for};
use crate::error::{Error, Result};
use crate::error_body;
use crate::repository::Repository;
use crate::watchdog::{ByteStream, Watchdog};

/// Limits on what the client reads into memory.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct Limits {
    /// Largest manifest accepted (default 4 MiB).
    pub manifest: u64,
    /// Largest token answer accepted (default 1 MiB).
    pub token: u64,
    /// Largest error body read (default 64 KiB; the rest is ignored).
    pub error_body: u64,
    /// Largest small blob (an image config) read into memory (default 16 MiB).
    pub small_blob: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            manifest: 4 << 20,
            token: 1 << 20,
            error_body: 64 << 10,
            small_blob: 16 << 20,
        }
    }
}

/// Builds a [`RegistryClient`].
#[derive(Debug)]
pub struct ClientBuilder {
    user_agent: String,
    connect_timeout: Duration,
    stall_timeout: Duration,
    hosts: HashMap<String, HostConfig>,
    credentials: Option<CredentialSource>,
    static_credentials: HashMap<String, Credentials>,
    limits: Limits,
    max_redirects: usize,
}

impl Default for ClientBuilder {
    fn default() -> Self {
        ClientBuilder {
            user_agent: format!("hoist/{}", env!("CARGO_PKG_VERSION")),
            connect_timeout: Duration::from_secs(10),
            stall_timeout: Duration::from_secs(30),
            hosts: HashMap::new(),
            credentials: None,
            static_credentials: HashMap::new(),
            limits: Limits::default(),
            max_redirects: 10,
        }
    }
}

impl ClientBuilder {
    /// Sets the `User-Agent` header.
    pub fn user_agent(mut self, ua: impl Into<String>) -> Self {
        self.user_agent = ua.into();
        self
    }

    /// How long establishing a connection (TCP and TLS) may take.
    pub fn connect_timeout(mut self, t: Duration) -> Self {
        self.connect_timeout = t;
        self
    }

    /// How long a request may go without any progress (no request-body bytes taken, no response
    /// headers, no response-body bytes) before it fails with [`Error::Stalled`].
    pub fn stall_timeout(mut self, t: Duration) -> Self {
        self.stall_timeout = t;
        self
    }

    /// Transport settings for one registry host (`host[:port]`).
    pub fn host(mut self, host: impl Into<String>, config: HostConfig) -> Self {
        self.hosts.insert(host.into(), config);
        self
    }

    /// Where to look credentials up (Docker's `config.json`, podman's `auth.json`, helpers).
    pub fn credential_source(mut self, source: CredentialSource) -> Self {
        self.credentials = Some(source);
        self
    }

    /// Explicit credentials for one registry host; they take precedence over the credential source.
    pub fn credentials(mut self, host: impl Into<String>, credentials: Credentials) -> Self {
        self.static_credentials.insert(host.into(), credentials);
        self
    }

    /// Size limits for what is read into memory.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Builds the client. Fails when a configured CA or client certificate cannot be read.
    pub fn build(self) -> Result<RegistryClient> {
        let default = self.http_client(None, "")?;
        let mut per_host = HashMap::new();
        for (host, cfg) in &self.hosts {
            if cfg.has_custom_tls() {
                per_host.insert(host.clone(), self.http_client(Some(cfg), host)?);
            }
        }
        Ok(RegistryClient {
            inner: Arc::new(Inner {
                default,
                per_host,
                hosts: self.hosts,
                credentials: self.credentials,
                static_credentials: self.static_credentials,
                auth: Mutex::new(HashMap::new()),
                endpoints: Mutex::new(HashMap::new()),
                range_modes: Mutex::new(HashMap::new()),
                stall: self.stall_timeout,
                limits: self.limits,
                max_redirects: self.max_redirects,
            }),
        })
    }

    fn http_client(&self, cfg: Option<&HostConfig>, host: &str) -> Result<reqwest::Client> {
        let mut b = reqwest::Client::builder()
            .user_agent(self.user_agent.clone())
            .connect_timeout(self.connect_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(32)
            .tcp_nodelay(true)
            .http2_adaptive_window(true);
        if cfg.is_none() {
            // The system roots are read when a certificate is first verified, not now.
            let tls = crate::tls::system_roots_config().map_err(|e| Error::Config {
                host: host.to_owned(),
                reason: format!("cannot set up TLS: {e}"),
            })?;
            b = b.use_preconfigured_tls(tls);
        }
        if let Some(cfg) = cfg {
            let config_err = |reason: String| Error::Config {
                host: host.to_owned(),
                reason,
            };
            if cfg.insecure {
                b = b.danger_accept_invalid_certs(true);
            }
            if let Some(ca) = &cfg.ca_file {
                let pem = std::fs::read(ca).map_err(|e| {
                    config_err(format!("cannot read CA file {}: {e}", ca.display()))
                })?;
                let certs = reqwest::Certificate::from_pem_bundle(&pem)
                    .map_err(|e| config_err(format!("invalid CA file {}: {e}", ca.display())))?;
                for c in certs {
                    b = b.add_root_certificate(c);
                }
            }
            if let Some(cert) = &cfg.client_cert {
                let key = cfg.client_key.as_ref().ok_or_else(|| {
                    config_err("a client certificate needs its key (client_key)".into())
                })?;
                let mut pem = std::fs::read(cert).map_err(|e| {
                    config_err(format!(
                        "cannot read client certificate {}: {e}",
                        cert.display()
                    ))
                })?;
                pem.push(b'\n');
                pem.extend(std::fs::read(key).map_err(|e| {
                    config_err(format!("cannot read client key {}: {e}", key.display()))
                })?);
                let id = reqwest::Identity::from_pem(&pem)
                    .map_err(|e| config_err(format!("invalid client certificate or key: {e}")))?;
                b = b.identity(id);
            }
        }
        b.build().map_err(|e| Error::Config {
            host: host.to_owned(),
            reason: format!("cannot build HTTP client: {e}"),
        })
    }
}

/// A resolved way to reach a registry: scheme plus `host[:port]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// The registry host as in references (`host[:port]`): the key for credentials and config.
    pub host: String,
    /// The scheme that answered.
    pub scheme: Scheme,
}

impl Endpoint {
    /// An endpoint with an explicit scheme.
    pub fn new(host: impl Into<String>, scheme: Scheme) -> Endpoint {
        Endpoint {
            host: host.into(),
            scheme,
        }
    }

    /// The base URL, `scheme://host`.
    pub fn base_url(&self) -> String {
        format!("{}://{}", self.scheme.as_str(), self.host)
    }

    pub(crate) fn url(&self, path: &str) -> Result<Url> {
        let s = format!("{}{}", self.base_url(), path);
        Url::parse(&s).map_err(|e| Error::Config {
            host: self.host.clone(),
            reason: format!("cannot form URL {s}: {e}"),
        })
    }
}

/// A client for container registries. Cheap to clone; clones share connections, tokens and
/// resolved endpoints.
#[derive(Debug, Clone)]
pub struct RegistryClient {
    pub(crate) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    default: reqwest::Client,
    per_host: HashMap<String, reqwest::Client>,
    hosts: HashMap<String, HostConfig>,
    credentials: Option<CredentialSource>,
    static_credentials: HashMap<String, Credentials>,
    auth: Mutex<HashMap<String, HostAuth>>,
    endpoints: Mutex<HashMap<String, Endpoint>>,
    /// How each host is sent chunk reads, as learnt from its answers.
    range_modes: Mutex<HashMap<String, RangeMode>>,
    pub(crate) stall: Duration,
    pub(crate) limits: Limits,
    max_redirects: usize,
}

/// A request the client sends: everything needed to (re)build it for retries after a `401` and
/// for redirects.
pub(crate) struct Req {
    pub method: Method,
    pub url: Url,
    pub headers: HeaderMap,
    pub body: ReqBody,
    /// The scopes this request needs (`repository:NAME:pull`…).
    pub scopes: BTreeSet<String>,
    /// The registry host the request belongs to (credentials and tokens are looked up by it).
    pub host: String,
}

/// A request body.
pub(crate) enum ReqBody {
    /// No body.
    Empty,
    /// A small body that can be sent again.
    Bytes(Bytes),
    /// A streamed body, sent at most once, with its length if known. (The mutex only makes the
    /// request `Sync`; it is never contended.)
    Stream(Mutex<ByteStream>, Option<u64>),
}

impl ReqBody {
    fn replayable(&self) -> bool {
        !matches!(self, ReqBody::Stream(..))
    }
}

/// A successful (non-error) response, with its body as a stall-guarded stream.
#[derive(Debug)]
pub(crate) struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub url: Url,
    pub body: BodyStream,
}

impl RegistryClient {
    /// A builder with defaults: system roots, 10 s connect timeout, 30 s stall timeout.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// A client with default settings and Docker's/podman's credential files.
    pub fn new() -> Result<RegistryClient> {
        ClientBuilder::default()
            .credential_source(CredentialSource::from_env())
            .build()
    }

    /// How chunk reads ([`Repository::get_blob_at`]) are sent to `host` (`host[:port]`): what
    /// its earlier answers taught, [`RangeMode::MultiRange`] for a host not asked yet.
    pub fn range_mode(&self, host: &str) -> RangeMode {
        self.inner
            .range_modes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(host)
            .copied()
            .unwrap_or_default()
    }

    /// Remembers that `host` needs `mode` for chunk reads. Modes only move down (towards
    /// [`RangeMode::FullBody`]): a host is never asked again in a way it failed.
    pub(crate) fn learn_range_mode(&self, host: &str, mode: RangeMode) {
        let mut modes = self
            .inner
            .range_modes
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let known = modes.entry(host.to_owned()).or_default();
        if mode > *known {
            tracing::debug!(host, ?mode, "chunk reads for this host change mode");
            *known = mode;
        }
    }

    /// A handle for repository `name` on the registry reached through `endpoint`.
    pub fn repository(&self, endpoint: Endpoint, name: impl Into<String>) -> Repository {
        Repository::new(self.clone(), endpoint, name.into())
    }

    /// The endpoint to use for `host`: pings `https://host/v2/` and, where plain HTTP is allowed
    /// (insecure or loopback hosts), `http://host/v2/`, and remembers the first that answers.
    pub async fn resolve(&self, host: &str) -> Result<Endpoint> {
        if let Some(e) = lock(&self.inner.endpoints).get(host) {
            return Ok(e.clone());
        }
        let mut last = None;
        // A refused certificate on https is what a user can act on, whatever plain http (tried
        // next where allowed) then answers: a TLS-only port answers it with a 400.
        let mut certificate = None;
        for scheme in schemes_for(host, self.inner.hosts.get(host)) {
            let ep = Endpoint::new(host, scheme);
            match self.ping(&ep).await {
                Ok(()) => {
                    lock(&self.inner.endpoints).insert(host.to_owned(), ep.clone());
                    return Ok(ep);
                }
                Err(
                    e @ Error::Transport {
                        kind: crate::error::TransportKind::Certificate,
                        ..
                    },
                ) => {
                    tracing::debug!(host, scheme = scheme.as_str(), error = %e, "certificate refused");
                    certificate = Some(e);
                }
                Err(e) if certificate.is_some() => {
                    tracing::debug!(host, scheme = scheme.as_str(), error = %e, "endpoint did not answer");
                }
                Err(e) if e.is_retryable() || matches!(e, Error::Transport { .. }) => {
                    tracing::debug!(host, scheme = scheme.as_str(), error = %e, "endpoint did not answer");
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(certificate.or(last).unwrap_or_else(|| Error::Config {
            host: host.to_owned(),
            reason: "no scheme is allowed for this host".into(),
        }))
    }

    /// `GET /v2/` on `endpoint`: succeeds when the registry answers as a v2 registry (200, or 401
    /// with a challenge, which is recorded for later requests).
    pub async fn ping(&self, endpoint: &Endpoint) -> Result<()> {
        let url = endpoint.url("/v2/")?;
        let http = self.http_for(&endpoint.host);
        let watchdog = Watchdog::new(self.inner.stall);
        let sent = watchdog
            .guard(&url, http.get(url.clone()).send())
            .await?
            .map_err(|e| Error::transport(&Method::GET, url.as_str(), e))?;
        let status = sent.status();
        let headers = sent.headers().clone();
        let body = BodyStream::new(sent, redact_url(&url), self.inner.stall);
        if status == StatusCode::UNAUTHORIZED {
            body.drain(self.inner.limits.error_body).await;
            self.record_challenge(&endpoint.host, &url, &headers)?;
            return Ok(());
        }
        if status.is_success() {
            body.drain(self.inner.limits.error_body).await;
            return Ok(());
        }
        Err(self
            .status_error(&Method::GET, &url, status, &headers, body)
            .await)
    }

    /// Whether a registry answered our ping with an authentication challenge.
    pub fn requires_auth(&self, host: &str) -> bool {
        lock(&self.inner.auth)
            .get(host)
            .is_some_and(|a| a.scheme != auth::Scheme::Anonymous)
    }

    /// Checks that the credentials known for `host` are accepted, as `docker login` does: pings
    /// the registry and, for token registries, asks the token service for a token with no scope.
    /// Returns the refresh (identity) token the service handed out, if any.
    pub async fn login(&self, host: &str) -> Result<Option<String>> {
        let ep = self.resolve(host).await?;
        // A fresh ping: the challenge may have changed.
        self.ping(&ep).await?;
        let scheme = lock(&self.inner.auth)
            .get(host)
            .map(|a| a.scheme.clone())
            .unwrap_or(auth::Scheme::Anonymous);
        let creds = self.credentials_for(host)?;
        match scheme {
            auth::Scheme::Anonymous => Ok(None),
            auth::Scheme::Basic => {
                let Some(creds) = creds else {
                    return Err(Error::Unauthorized {
                        registry: host.into(),
                        scope: "login".into(),
                        reason: "no credentials given".into(),
                    });
                };
                let url = ep.url("/v2/")?;
                let mut req = self.http_for(host).get(url.clone());
                if let Some(h) = auth::basic_header(&creds) {
                    req = req.header(header::AUTHORIZATION, h);
                }
                let resp = req
                    .send()
                    .await
                    .map_err(|e| Error::transport(&Method::GET, url.as_str(), e))?;
                if resp.status().is_success() {
                    Ok(None)
                } else {
                    Err(Error::Unauthorized {
                        registry: host.into(),
                        scope: "login".into(),
                        reason: format!("registry answered {}", resp.status()),
                    })
                }
            }
            auth::Scheme::Bearer { realm, service } => {
                let (_, refresh) = self
                    .fetch_token(host, &realm, service.as_deref(), &BTreeSet::new(), true)
                    .await?;
                Ok(refresh)
            }
        }
    }

    /// The shared client: system roots, no client certificate.
    pub(crate) fn shared_http(&self) -> &reqwest::Client {
        &self.inner.default
    }

    pub(crate) fn http_for(&self, host: &str) -> &reqwest::Client {
        self.inner.per_host.get(host).unwrap_or(&self.inner.default)
    }

    pub(crate) fn credentials_for(&self, host: &str) -> Result<Option<Credentials>> {
        if let Some(c) = self.inner.static_credentials.get(host) {
            return Ok(Some(c.clone()));
        }
        match &self.inner.credentials {
            Some(src) => Ok(src.get(host)?),
            None => Ok(None),
        }
    }

    fn record_challenge(
        &self,
        host: &str,
        url: &Url,
        headers: &HeaderMap,
    ) -> Result<Option<String>> {
        let mut challenges = Vec::new();
        for v in headers.get_all(header::WWW_AUTHENTICATE) {
            let s = v.to_str().map_err(|_| Error::UnusableChallenge {
                url: crate::client::redact_url(url),
                reason: "WWW-Authenticate is not valid text".into(),
            })?;
            let parsed =
                crate::auth::challenge::parse_challenges(s).map_err(|source| Error::Challenge {
                    url: crate::client::redact_url(url),
                    source,
                })?;
            challenges.extend(parsed);
        }
        let (scheme, scope) =
            auth::scheme_from_challenges(&challenges).ok_or_else(|| Error::UnusableChallenge {
                url: crate::client::redact_url(url),
                reason: "a 401 without a Basic or Bearer challenge".into(),
            })?;
        let mut all = lock(&self.inner.auth);
        let entry = all.entry(host.to_owned()).or_default();
        if entry.scheme != scheme {
            entry.scheme = scheme;
            entry.tokens = Default::default();
        }
        Ok(scope)
    }

    /// Sends `req`, authorising it for its scopes, following redirects (without credentials when
    /// they leave the registry's host) and retrying once after a `401` with fresh authorisation.
    /// Error statuses become [`Error::Status`] (or [`Error::Unauthorized`]).
    pub(crate) async fn send(&self, mut req: Req) -> Result<Resp> {
        let mut retried_auth = false;
        loop {
            let authz = self.authorization(&req).await?;
            let http = self.http_for(&req.host);
            let resp = self.send_following(http, &req, authz.as_deref()).await?;
            if resp.status == StatusCode::UNAUTHORIZED && !retried_auth && req.body.replayable() {
                retried_auth = true;
                resp.body.drain(self.inner.limits.error_body).await;
                if let Some(t) = authz.as_deref().and_then(|h| h.strip_prefix("Bearer "))
                    && let Some(a) = lock(&self.inner.auth).get_mut(&req.host)
                {
                    a.tokens.invalidate(t);
                }
                if let Some(scope) = self.record_challenge(&req.host, &resp.url, &resp.headers)? {
                    for s in scope.split(' ').filter(|s| !s.is_empty()) {
                        req.scopes.insert(s.to_owned());
                    }
                }
                continue;
            }
            if resp.status == StatusCode::UNAUTHORIZED {
                let has_creds = self.credentials_for(&req.host)?.is_some();
                resp.body.drain(self.inner.limits.error_body).await;
                return Err(Error::Unauthorized {
                    registry: req.host.clone(),
                    scope: req.scopes.iter().cloned().collect::<Vec<_>>().join(" "),
                    reason: if has_creds {
                        "the registry refused the credentials or they do not grant this access"
                            .into()
                    } else {
                        format!(
                            "no credentials for {}: run `hoist login {}`",
                            req.host, req.host
                        )
                    },
                });
            }
            if resp.status.is_client_error() || resp.status.is_server_error() {
                let Resp {
                    status,
                    headers,
                    url,
                    body,
                } = resp;
                return Err(self
                    .status_error(&req.method, &url, status, &headers, body)
                    .await);
            }
            return Ok(resp);
        }
    }

    async fn authorization(&self, req: &Req) -> Result<Option<String>> {
        let creds = self.credentials_for(&req.host)?;
        let plan = {
            let all = lock(&self.inner.auth);
            match all.get(&req.host) {
                Some(a) => auth::plan(a, creds.as_ref(), &req.scopes, Instant::now()),
                None => Plan::Anonymous,
            }
        };
        match plan {
            Plan::Anonymous => Ok(None),
            Plan::Header(h) => Ok(Some(h)),
            Plan::FetchToken {
                realm,
                service,
                scopes,
            } => {
                let (token, _) = self
                    .fetch_token(&req.host, &realm, service.as_deref(), &scopes, false)
                    .await?;
                Ok(Some(format!("Bearer {token}")))
            }
        }
    }

    /// Asks the token service for a token. With `offline`, asks for a refresh token too (login).
    async fn fetch_token(
        &self,
        host: &str,
        realm: &str,
        service: Option<&str>,
        scopes: &BTreeSet<String>,
        offline: bool,
    ) -> Result<(String, Option<String>)> {
        let token_err = |reason: String, retryable: bool| Error::Token {
            realm: realm.to_owned(),
            reason,
            retryable,
        };
        let realm_url =
            Url::parse(realm).map_err(|e| token_err(format!("invalid realm URL: {e}"), false))?;
        if !matches!(realm_url.scheme(), "http" | "https") {
            return Err(token_err(
                format!(
                    "the realm uses {}://; a token service must be reached over http(s)",
                    realm_url.scheme()
                ),
                false,
            ));
        }
        let creds = self.credentials_for(host)?;
        let creds = creds.filter(|_| auth::realm_may_receive_credentials(&realm_url));
        let http = self.http_for(host);
        let scope_list: Vec<&str> = scopes.iter().map(String::as_str).collect();
        let request = match creds.as_ref().and_then(|c| c.identity_token_secret()) {
            Some(refresh) => {
                let mut form = vec![
                    ("grant_type", "refresh_token".to_owned()),
                    ("refresh_token", refresh.to_owned()),
                    ("client_id", "hoist".to_owned()),
                ];
                if let Some(s) = service {
                    form.push(("service", s.to_owned()));
                }
                if !scope_list.is_empty() {
                    form.push(("scope", scope_list.join(" ")));
                }
                if offline {
                    form.push(("access_type", "offline".to_owned()));
                }
                let body = form
                    .iter()
                    .map(|(k, v)| format!("{k}={}", urlencode(v)))
                    .collect::<Vec<_>>()
                    .join("&");
                http.post(realm_url.clone())
                    .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                    .body(body)
            }
            None => {
                let mut url = realm_url.clone();
                {
                    let mut q = url.query_pairs_mut();
                    if let Some(s) = service {
                        q.append_pair("service", s);
                    }
                    for s in &scope_list {
                        q.append_pair("scope", s);
                    }
                    if let Some(user) = creds
                        .as_ref()
                        .filter(|c| c.identity_token_secret().is_none())
                        .and_then(|c| c.username())
                    {
                        q.append_pair("account", user);
                        if offline {
                            q.append_pair("offline_token", "true");
                        }
                    }
                }
                let mut r = http.get(url);
                if let Some(h) = creds.as_ref().and_then(auth::basic_header) {
                    r = r.header(header::AUTHORIZATION, h);
                }
                r
            }
        };
        let watchdog = Watchdog::new(self.inner.stall);
        let resp = watchdog
            .guard(&realm_url, request.send())
            .await?
            .map_err(|e| token_err(format!("cannot reach the token service: {e}"), true))?;
        let status = resp.status();
        let body = BodyStream::new(resp, realm.to_owned(), self.inner.stall)
            .read_capped("token response", self.inner.limits.token)
            .await?;
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(Error::Unauthorized {
                registry: host.to_owned(),
                scope: scope_list.join(" "),
                reason: if creds.is_some() {
                    "the token service rejected the credentials".into()
                } else {
                    format!("the token service requires credentials: run `hoist login {host}`")
                },
            });
        }
        if !status.is_success() {
            return Err(token_err(
                format!("answered {status}"),
                status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS,
            ));
        }
        let parsed: auth::token::TokenResponse = serde_json::from_slice(&body)
            .map_err(|e| token_err(format!("invalid token response: {e}"), false))?;
        let token = parsed
            .bearer()
            .ok_or_else(|| token_err("token response has no token".into(), false))?
            .to_owned();
        if !scopes.is_empty() {
            let mut all = lock(&self.inner.auth);
            all.entry(host.to_owned()).or_default().tokens.insert(
                scopes.clone(),
                token.clone(),
                parsed.lifetime(),
                Instant::now(),
            );
        }
        Ok((token, parsed.refresh_token.clone()))
    }

    /// Sends one request with `http`, following redirects by hand so that credentials never
    /// leave the host.
    pub(crate) async fn send_following(
        &self,
        http: &reqwest::Client,
        req: &Req,
        authz: Option<&str>,
    ) -> Result<Resp> {
        let origin = origin_of(&req.url);
        let mut url = req.url.clone();
        let mut method = req.method.clone();
        for _ in 0..=self.inner.max_redirects {
            let same_origin = origin_of(&url) == origin;
            let mut rb = http.request(method.clone(), url.clone());
            for (k, v) in &req.headers {
                rb = rb.header(k, v);
            }
            if same_origin && let Some(a) = authz {
                rb = rb.header(header::AUTHORIZATION, a);
            }
            let watchdog = Watchdog::new(self.inner.stall);
            let body_for_this = match &req.body {
                ReqBody::Empty => None,
                ReqBody::Bytes(b) => Some((reqwest::Body::from(b.clone()), Some(b.len() as u64))),
                // A streamed body can be sent only once; callers never stream to redirecting URLs.
                ReqBody::Stream(..) => None,
            };
            if let Some((b, len)) = body_for_this {
                rb = rb.body(b);
                if let Some(len) = len {
                    rb = rb.header(header::CONTENT_LENGTH, len);
                }
            }
            let sent = watchdog
                .guard(&url, rb.send())
                .await?
                .map_err(|e| Error::transport(&method, url.as_str(), e))?;
            let status = sent.status();
            if status.is_redirection() && status != StatusCode::NOT_MODIFIED {
                let loc = sent
                    .headers()
                    .get(header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .ok_or_else(|| Error::InvalidResponse {
                        url: crate::client::redact_url(&url),
                        reason: format!("{status} without a Location header"),
                    })?;
                let next = url.join(loc).map_err(|e| Error::InvalidResponse {
                    url: crate::client::redact_url(&url),
                    reason: format!("invalid redirect Location {loc:?}: {e}"),
                })?;
                tracing::debug!(from = %redact_url(&url), to = %redact_url(&next), %status, "following redirect");
                if status == StatusCode::SEE_OTHER {
                    method = Method::GET;
                }
                url = next;
                continue;
            }
            let headers = sent.headers().clone();
            return Ok(Resp {
                status,
                headers,
                url: url.clone(),
                body: BodyStream::new(sent, redact_url(&url), self.inner.stall),
            });
        }
        Err(Error::InvalidResponse {
            url: crate::client::redact_url(&req.url),
            reason: format!("more than {} redirects", self.inner.max_redirects),
        })
    }

    /// Sends a request with a streamed body: authorises it first (fetching a token if needed, so
    /// the body is not wasted on a `401`), never follows redirects.
    pub(crate) async fn send_stream(&self, req: Req) -> Result<Resp> {
        let ReqBody::Stream(body, len) = req.body else {
            return self.send(req).await;
        };
        let authz = self
            .authorization(&Req {
                body: ReqBody::Empty,
                method: req.method.clone(),
                url: req.url.clone(),
                headers: HeaderMap::new(),
                scopes: req.scopes.clone(),
                host: req.host.clone(),
            })
            .await?;
        let http = self.http_for(&req.host);
        let watchdog = Watchdog::new(self.inner.stall);
        let body = body.into_inner().unwrap_or_else(|p| p.into_inner());
        let body = reqwest::Body::wrap_stream(watchdog.feed(body));
        let mut rb = http.request(req.method.clone(), req.url.clone()).body(body);
        for (k, v) in &req.headers {
            rb = rb.header(k, v);
        }
        if let Some(len) = len {
            rb = rb.header(header::CONTENT_LENGTH, len);
        }
        if let Some(a) = &authz {
            rb = rb.header(header::AUTHORIZATION, a);
        }
        // The watchdog is fed by the body: it fires only when the connection stops taking bytes
        // (or, once the body is sent, when the answer does not come).
        let sent = watchdog
            .guard(&req.url, rb.send())
            .await?
            .map_err(|e| Error::transport(&req.method, req.url.as_str(), e))?;
        let status = sent.status();
        let headers = sent.headers().clone();
        let body = BodyStream::new(sent, redact_url(&req.url), self.inner.stall);
        if status.is_client_error() || status.is_server_error() {
            if status == StatusCode::UNAUTHORIZED {
                body.drain(self.inner.limits.error_body).await;
                return Err(Error::Unauthorized {
                    registry: req.host.clone(),
                    scope: req.scopes.iter().cloned().collect::<Vec<_>>().join(" "),
                    reason: "the registry refused the upload's authorisation".into(),
                });
            }
            return Err(self
                .status_error(&req.method, &req.url, status, &headers, body)
                .await);
        }
        Ok(Resp {
            status,
            headers,
            url: req.url,
            body,
        })
    }

    pub(crate) async fn status_error(
        &self,
        method: &Method,
        url: &Url,
        status: StatusCode,
        headers: &HeaderMap,
        body: BodyStream,
    ) -> Error {
        let retry_after = headers
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let details = match body
            .read_capped("error body", self.inner.limits.error_body)
            .await
        {
            Ok(b) => error_body::parse_error_body(&b).unwrap_or_default(),
            Err(_) => Vec::new(),
        };
        Error::Status {
            method: method.to_string(),
            url: redact_url(url),
            status,
            details,
            retry_after,
        }
    }
}

/// Parses `Retry-After` (seconds or an HTTP date), capped at one hour.
pub(crate) fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    let d = if let Ok(secs) = v.parse::<u64>() {
        Duration::from_secs(secs)
    } else {
        let when = httpdate::parse_http_date(v).ok()?;
        when.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO)
    };
    Some(d.min(Duration::from_secs(3600)))
}

fn origin_of(url: &Url) -> (String, Option<String>, Option<u16>) {
    (
        url.scheme().to_owned(),
        url.host_str().map(str::to_owned),
        url.port_or_known_default(),
    )
}

/// A URL for logs and errors: no user info, no query (which may hold signed tokens).
pub(crate) fn redact_url(url: &Url) -> String {
    let mut u = url.clone();
    let _ = u.set_username("");
    let _ = u.set_password(None);
    if u.query().is_some() {
        u.set_query(Some("…"));
    }
    u.to_string()
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub(crate) fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

pub(crate) fn header_value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_accepts_seconds_and_dates_and_is_capped() {
        assert_eq!(parse_retry_after("5"), Some(Duration::from_secs(5)));
        assert_eq!(parse_retry_after(" 0 "), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("999999"), Some(Duration::from_secs(3600)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn redacted_urls_hide_user_info_and_query() {
        let u = Url::parse("https://user:pw@host/v2/x?sig=secret&_state=abc").unwrap();
        let r = redact_url(&u);
        assert!(
            !r.contains("pw") && !r.contains("secret") && !r.contains("user"),
            "{r}"
        );
        assert!(r.starts_with("https://host/v2/x"), "{r}");
    }

    #[test]
    fn origins_differ_by_scheme_host_or_port() {
        let a = Url::parse("http://127.0.0.1:5000/v2/").unwrap();
        let b = Url::parse("http://127.0.0.1:5000/other").unwrap();
        let c = Url::parse("http://127.0.0.2:5000/v2/").unwrap();
        let d = Url::parse("http://127.0.0.1:5001/v2/").unwrap();
        let e = Url::parse("https://127.0.0.1:5000/v2/").unwrap();
        assert_eq!(origin_of(&a), origin_of(&b));
        assert_ne!(origin_of(&a), origin_of(&c));
        assert_ne!(origin_of(&a), origin_of(&d));
        assert_ne!(origin_of(&a), origin_of(&e));
    }
}
