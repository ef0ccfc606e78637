//! Test support for hoist: the real registry, a token server and a fault proxy.
//!
//! Dev-only. Three pieces, each started with an `async fn`, each stopped (process
//! killed, sockets closed, files removed) when dropped:
//!
//! - [`Registry`]: the CNCF distribution registry (`/usr/bin/docker-registry`, Debian
//!   package `docker-registry`) on `127.0.0.1` at a free port, plain, with htpasswd
//!   Basic auth, with token auth, or as a pull-through cache.
//! - [`TokenServer`]: a Docker token service issuing ES256 JWTs the registry trusts,
//!   with a per-user [`TokenPolicy`], request counters and failure knobs.
//! - [`FaultProxy`]: a reverse proxy that resets, stalls, truncates, corrupts,
//!   redirects or refuses requests picked by [`Rule`]s, and logs every request.
//! - [`HostileServer`]: a server whose answers tests write byte for byte (huge headers,
//!   endless bodies, malformed challenges), for what no real registry sends.
//!
//! The token server and the proxy run as tasks on the Tokio runtime that started them
//! (each `#[tokio::test]` has its own), so start them in the test that uses them. A
//! registry process needs no runtime once started; it is killed when its [`Registry`]
//! drops, or by the kernel (`PR_SET_PDEATHSIG`) if the test process dies first.
//!
//! ```no_run
//! # async fn demo() -> hoist_test_support::Result<()> {
//! use hoist_test_support::{Action, FaultProxy, Registry, Rule, TokenPolicy};
//!
//! let policy = TokenPolicy::new()
//!     .user("writer", "pw")
//!     .grant("writer", "*", &["pull", "push"]);
//! let registry = Registry::start_with_token_auth(policy).await?;
//! let proxy = FaultProxy::start(&registry.url()).await?;
//! proxy.add_rule(Rule::get("/blobs/", Action::status_with_retry_after(503, "1")).once());
//! // A client pointed at proxy.url() now gets one 503 on its first blob GET.
//! # Ok(()) }
//! ```

mod error;
mod hostile;
mod proxy;
mod registry;
mod serve;
mod sys;
mod token;
mod upstream;

pub use error::{Error, Result};
pub use hostile::{Answer, AnswerBody, HostileServer};
pub use proxy::{Action, FaultProxy, Listener, LogEntry, Matcher, Occurrence, RangeFault, Rule};
pub use registry::{ClientAuth, DEFAULT_BINARY, LogLevel, Registry, RegistryBuilder, TlsFiles};
pub use token::{
    Access, DEFAULT_ISSUER, DEFAULT_SERVICE, TokenGrant, TokenPolicy, TokenRequest, TokenServer,
    TokenServerBuilder,
};
