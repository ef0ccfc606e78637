//! A Docker token service for registries in token-auth mode.
//!
//! Implements `GET /token?service=..&scope=..` (anonymous or with Basic credentials,
//! `offline_token=true` for a refresh token) and the OAuth2 form `POST /token`
//! (`grant_type=password` or `refresh_token`, `access_type=offline` for a refresh token).
//! Tokens are JWTs signed with ES256 by a key generated per server; its self-signed
//! certificate rides in the `x5c` header and is what the registry is told to trust.

mod jwt;
mod policy;

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::json;

pub use policy::{Access, TokenPolicy};

use crate::error::Result;
use crate::serve::Server;
use jwt::{Claims, SigningKey};
use policy::Scope;

/// The default `service` name: the audience of every token.
pub const DEFAULT_SERVICE: &str = "hoist-test-registry";
/// The default `issuer` name.
pub const DEFAULT_ISSUER: &str = "hoist-test-token-server";

/// How a token request authenticated.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenGrant {
    /// `GET` without credentials.
    Anonymous,
    /// `GET` with a Basic `Authorization` header.
    Basic,
    /// `POST` with `grant_type=password`.
    Password,
    /// `POST` with `grant_type=refresh_token`.
    RefreshToken,
    /// `POST` with another or no `grant_type` (answered 400), or another method or path.
    Other(String),
}

/// One request the token server answered.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct TokenRequest {
    /// The HTTP method.
    pub method: Method,
    /// How it authenticated.
    pub grant: TokenGrant,
    /// Whether it carried credentials (Basic header, password or refresh token).
    pub had_credentials: bool,
    /// The user it authenticated as, if any.
    pub username: Option<String>,
    /// The `service` parameter.
    pub service: Option<String>,
    /// The requested scopes, as sent.
    pub scopes: Vec<String>,
    /// What the issued token grants (empty when no token was issued).
    pub granted: Vec<Access>,
    /// The status code answered.
    pub status: u16,
    /// Whether a refresh token was handed out.
    pub refresh_token_issued: bool,
}

/// Builds a [`TokenServer`].
#[derive(Debug)]
pub struct TokenServerBuilder {
    policy: TokenPolicy,
    service: String,
    issuer: String,
    expires_in: Duration,
}

impl TokenServerBuilder {
    /// The `service` name (the tokens' audience); the registry must be configured with
    /// the same. Defaults to [`DEFAULT_SERVICE`].
    pub fn service(mut self, service: &str) -> Self {
        self.service = service.to_owned();
        self
    }

    /// The `issuer` name. Defaults to [`DEFAULT_ISSUER`].
    pub fn issuer(mut self, issuer: &str) -> Self {
        self.issuer = issuer.to_owned();
        self
    }

    /// Token lifetime, reported as `expires_in` and put in the `exp` claim
    /// (default 300 s). Note that distribution accepts tokens up to 60 s past `exp`.
    pub fn expires_in(mut self, lifetime: Duration) -> Self {
        self.expires_in = lifetime;
        self
    }

    /// Starts the server on `127.0.0.1` at a free port.
    pub async fn start(self) -> Result<TokenServer> {
        let key = SigningKey::generate(&self.issuer)?;
        let untrusted = SigningKey::generate(&self.issuer)?;
        let shared = Arc::new(Shared {
            service: self.service,
            issuer: self.issuer,
            key,
            untrusted,
            state: Mutex::new(State {
                policy: self.policy,
                expires_in: self.expires_in,
                fail_next: 0,
                untrusted_next: 0,
                requests: Vec::new(),
                refresh_tokens: HashMap::new(),
            }),
        });
        let for_conns = Arc::clone(&shared);
        let server = Server::bind(
            SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            move |stream, _peer| {
                let shared = Arc::clone(&for_conns);
                async move {
                    let service = service_fn(move |req| {
                        let shared = Arc::clone(&shared);
                        async move { Ok::<_, std::convert::Infallible>(handle(&shared, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                }
            },
        )
        .await?;
        Ok(TokenServer { shared, server })
    }
}

/// A running token service on `127.0.0.1`; stops when dropped.
///
/// ```no_run
/// # async fn demo() -> hoist_test_support::Result<()> {
/// use hoist_test_support::{TokenPolicy, TokenServer};
/// let tokens = TokenServer::start(TokenPolicy::new().grant_anonymous("*", &["pull"])).await?;
/// println!("realm {}", tokens.realm());
/// tokens.fail_next(1); // the next request gets a 500
/// # Ok(()) }
/// ```
pub struct TokenServer {
    shared: Arc<Shared>,
    server: Server,
}

impl std::fmt::Debug for TokenServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenServer")
            .field("url", &self.url())
            .field("service", &self.shared.service)
            .finish_non_exhaustive()
    }
}

impl TokenServer {
    /// A builder with `policy` and default names and lifetime.
    pub fn builder(policy: TokenPolicy) -> TokenServerBuilder {
        TokenServerBuilder {
            policy,
            service: DEFAULT_SERVICE.to_owned(),
            issuer: DEFAULT_ISSUER.to_owned(),
            expires_in: Duration::from_secs(300),
        }
    }

    /// Starts a server with `policy` and the defaults.
    pub async fn start(policy: TokenPolicy) -> Result<TokenServer> {
        Self::builder(policy).start().await
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.server.addr())
    }

    /// The token endpoint, `http://127.0.0.1:PORT/token`: the registry's `realm`.
    pub fn realm(&self) -> String {
        format!("{}/token", self.url())
    }

    /// The `service` name (the tokens' audience).
    pub fn service(&self) -> &str {
        &self.shared.service
    }

    /// The `issuer` name.
    pub fn issuer(&self) -> &str {
        &self.shared.issuer
    }

    /// The PEM certificate of the signing key: the registry's `rootcertbundle`.
    pub fn certificate_pem(&self) -> &str {
        self.shared.key.certificate_pem()
    }

    /// How many requests the server answered (failed ones included).
    pub fn request_count(&self) -> usize {
        self.shared.state().requests.len()
    }

    /// Every request answered so far, oldest first.
    pub fn requests(&self) -> Vec<TokenRequest> {
        self.shared.state().requests.clone()
    }

    /// The most recent request.
    pub fn last_request(&self) -> Option<TokenRequest> {
        self.shared.state().requests.last().cloned()
    }

    /// Forgets the recorded requests.
    pub fn clear_requests(&self) {
        self.shared.state().requests.clear();
    }

    /// Answers the next `n` requests with `500 Internal Server Error`.
    pub fn fail_next(&self, n: u32) {
        self.shared.state().fail_next = n;
    }

    /// Signs the next `n` issued tokens with a key the registry does not trust, so the
    /// registry rejects them with 401 (a token that went bad while cached).
    pub fn sign_untrusted_next(&self, n: u32) {
        self.shared.state().untrusted_next = n;
    }

    /// Changes the lifetime of tokens issued from now on.
    pub fn set_expires_in(&self, lifetime: Duration) {
        self.shared.state().expires_in = lifetime;
    }

    /// Replaces the access policy for requests from now on.
    pub fn set_policy(&self, policy: TokenPolicy) {
        self.shared.state().policy = policy;
    }
}

struct Shared {
    service: String,
    issuer: String,
    key: SigningKey,
    untrusted: SigningKey,
    state: Mutex<State>,
}

struct State {
    policy: TokenPolicy,
    expires_in: Duration,
    fail_next: u32,
    untrusted_next: u32,
    requests: Vec<TokenRequest>,
    /// refresh token -> user
    refresh_tokens: HashMap<String, String>,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What a request asks for, once parsed.
struct Ask {
    grant: TokenGrant,
    had_credentials: bool,
    /// `Some(Ok(user))` authenticated, `Some(Err(user))` bad credentials, `None` anonymous.
    user: Option<Result<String, Option<String>>>,
    service: Option<String>,
    scopes: Vec<String>,
    offline: bool,
    /// The refresh token a `refresh_token` grant presented.
    presented_refresh: Option<String>,
}

async fn handle(shared: &Shared, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let method = req.method().clone();
    let ask = parse(shared, req).await;
    let mut record = TokenRequest {
        method,
        grant: ask.grant.clone(),
        had_credentials: ask.had_credentials,
        username: match &ask.user {
            Some(Ok(u)) => Some(u.clone()),
            Some(Err(u)) => u.clone(),
            None => None,
        },
        service: ask.service.clone(),
        scopes: ask.scopes.clone(),
        granted: Vec::new(),
        status: 200,
        refresh_token_issued: false,
    };
    let response = answer(shared, &ask, &mut record);
    record.status = response.status().as_u16();
    shared.state().requests.push(record);
    response
}

fn answer(shared: &Shared, ask: &Ask, record: &mut TokenRequest) -> Response<Full<Bytes>> {
    let mut state = shared.state();
    if state.fail_next > 0 {
        state.fail_next -= 1;
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "UNKNOWN",
            "injected token server failure",
        );
    }
    if let TokenGrant::Other(what) = &ask.grant {
        return error(StatusCode::BAD_REQUEST, "UNSUPPORTED", what);
    }
    let user = match &ask.user {
        None => None,
        Some(Ok(u)) => Some(u.clone()),
        Some(Err(_)) => {
            let mut resp = error(
                StatusCode::UNAUTHORIZED,
                "UNAUTHORIZED",
                "invalid username, password or refresh token",
            );
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Basic realm=\"hoist-token-server\""),
            );
            return resp;
        }
    };
    let scopes: Vec<Scope> = ask.scopes.iter().filter_map(|s| Scope::parse(s)).collect();
    let granted = state.policy.authorize(user.as_deref(), &scopes);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    let lifetime = i64::try_from(state.expires_in.as_secs()).unwrap_or(i64::MAX / 2);
    let audience = ask.service.as_deref().unwrap_or(&shared.service);
    let claims = Claims {
        iss: &shared.issuer,
        sub: user.as_deref().unwrap_or(""),
        aud: audience,
        exp: now.saturating_add(lifetime),
        nbf: now,
        iat: now,
        jti: random_hex(16),
        access: &granted,
    };
    let key = if state.untrusted_next > 0 {
        state.untrusted_next -= 1;
        &shared.untrusted
    } else {
        &shared.key
    };
    let token = match key.sign(&claims) {
        Ok(t) => t,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, "UNKNOWN", &e.to_string()),
    };
    let mut body = json!({
        "token": token,
        "access_token": token,
        "expires_in": lifetime,
        "issued_at": jwt::rfc3339(now),
    });
    if ask.method_is_post() {
        let scope: Vec<String> = granted
            .iter()
            .map(|a| format!("{}:{}:{}", a.resource_type, a.name, a.actions.join(",")))
            .collect();
        body["scope"] = json!(scope.join(" "));
    }
    if ask.offline
        && let Some(user) = &user
    {
        let refresh = match &ask.presented_refresh {
            Some(existing) => existing.clone(),
            _ => {
                let fresh = random_hex(24);
                state.refresh_tokens.insert(fresh.clone(), user.clone());
                fresh
            }
        };
        body["refresh_token"] = json!(refresh);
        record.refresh_token_issued = true;
    }
    record.granted = granted;
    json_response(StatusCode::OK, &body)
}

impl Ask {
    fn method_is_post(&self) -> bool {
        matches!(
            self.grant,
            TokenGrant::Password | TokenGrant::RefreshToken | TokenGrant::Other(_)
        )
    }
}

async fn parse(shared: &Shared, req: Request<Incoming>) -> Ask {
    let mut ask = Ask {
        grant: TokenGrant::Anonymous,
        had_credentials: false,
        user: None,
        service: None,
        scopes: Vec::new(),
        offline: false,
        presented_refresh: None,
    };
    if req.uri().path() != "/token" {
        ask.grant = TokenGrant::Other(format!("no such endpoint: {}", req.uri().path()));
        return ask;
    }
    match *req.method() {
        Method::GET => {
            let query = req.uri().query().unwrap_or("").to_owned();
            for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
                match &*k {
                    "service" => ask.service = Some(v.into_owned()),
                    "scope" => ask.scopes.push(v.into_owned()),
                    "offline_token" => ask.offline = v == "true",
                    _ => {}
                }
            }
            if let Some((user, password)) = basic_credentials(&req) {
                ask.grant = TokenGrant::Basic;
                ask.had_credentials = true;
                let ok = shared.state().policy.check_password(&user, &password);
                ask.user = Some(if ok { Ok(user) } else { Err(Some(user)) });
            }
        }
        Method::POST => {
            let form = match Limited::new(req.into_body(), 64 * 1024).collect().await {
                Ok(b) => b.to_bytes(),
                Err(_) => {
                    ask.grant = TokenGrant::Other("unreadable form body".into());
                    return ask;
                }
            };
            let mut fields: HashMap<String, String> = HashMap::new();
            for (k, v) in url::form_urlencoded::parse(&form) {
                match &*k {
                    "scope" => ask
                        .scopes
                        .extend(v.split(' ').filter(|s| !s.is_empty()).map(str::to_owned)),
                    _ => {
                        fields.insert(k.into_owned(), v.into_owned());
                    }
                }
            }
            ask.service = fields.get("service").cloned();
            ask.offline = fields.get("access_type").is_some_and(|v| v == "offline");
            match fields.get("grant_type").map(String::as_str) {
                Some("password") => {
                    ask.grant = TokenGrant::Password;
                    let user = fields.get("username").cloned().unwrap_or_default();
                    let password = fields.get("password").cloned().unwrap_or_default();
                    ask.had_credentials = true;
                    let ok = shared.state().policy.check_password(&user, &password);
                    ask.user = Some(if ok { Ok(user) } else { Err(Some(user)) });
                }
                Some("refresh_token") => {
                    ask.grant = TokenGrant::RefreshToken;
                    ask.had_credentials = true;
                    let token = fields.get("refresh_token").cloned().unwrap_or_default();
                    let state = shared.state();
                    let user = state
                        .refresh_tokens
                        .get(&token)
                        .filter(|u| state.policy.has_user(u))
                        .cloned();
                    ask.user = Some(user.ok_or(None));
                    ask.presented_refresh = Some(token);
                }
                other => {
                    ask.grant = TokenGrant::Other(format!(
                        "unsupported grant_type {:?}",
                        other.unwrap_or("")
                    ));
                }
            }
        }
        ref m => ask.grant = TokenGrant::Other(format!("method {m} not allowed")),
    }
    ask
}

fn basic_credentials<B>(req: &Request<B>) -> Option<(String, String)> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

fn random_hex(bytes: usize) -> String {
    let buf: Vec<u8> = (0..bytes).map(|_| rand::random::<u8>()).collect();
    hex::encode(buf)
}

fn error(status: StatusCode, code: &str, message: &str) -> Response<Full<Bytes>> {
    json_response(
        status,
        &json!({"errors": [{"code": code, "message": message}]}),
    )
}

fn json_response(status: StatusCode, body: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    resp
}
