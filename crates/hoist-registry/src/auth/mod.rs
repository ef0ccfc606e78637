//! Registry authentication: challenges, credentials, bearer tokens.
//!
//! The decisions are I/O-free ([`plan`]): given what a registry's last challenge said, the
//! credentials known for that registry and the scopes a request needs, they say which
//! `Authorization` header to send, or that a token must first be fetched. The client performs the
//! fetch and stores the answer in the registry's [`token::TokenCache`].
//!
//! Credentials are only ever attached to requests for the registry they belong to (and to the token
//! service that registry names, over HTTPS or on loopback); redirects to another host carry none.

pub mod challenge;
pub mod credentials;
pub(crate) mod token;

use std::collections::BTreeSet;
use std::time::Instant;

use challenge::Challenge;
use credentials::Credentials;
use token::TokenCache;

/// What a registry asked for on its last `401`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Scheme {
    /// No challenge seen: the registry allows anonymous access.
    Anonymous,
    /// `Basic realm=…`.
    Basic,
    /// `Bearer realm=… service=…`.
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

/// Authentication state for one registry host.
#[derive(Debug)]
pub(crate) struct HostAuth {
    pub scheme: Scheme,
    pub tokens: TokenCache,
}

impl Default for HostAuth {
    fn default() -> Self {
        HostAuth {
            scheme: Scheme::Anonymous,
            tokens: TokenCache::default(),
        }
    }
}

/// What to do before sending a request.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Plan {
    /// Send it without `Authorization`.
    Anonymous,
    /// Send it with this header value.
    Header(String),
    /// First fetch a token for these scopes from the realm.
    FetchToken {
        realm: String,
        service: Option<String>,
        scopes: BTreeSet<String>,
    },
}

/// Decides how to authorise a request that needs `scopes`.
pub(crate) fn plan(
    auth: &HostAuth,
    credentials: Option<&Credentials>,
    scopes: &BTreeSet<String>,
    now: Instant,
) -> Plan {
    match &auth.scheme {
        Scheme::Anonymous => Plan::Anonymous,
        Scheme::Basic => match credentials.and_then(basic_header) {
            Some(h) => Plan::Header(h),
            None => Plan::Anonymous,
        },
        Scheme::Bearer { realm, service } => {
            if let Some(t) = auth.tokens.find(scopes, now) {
                return Plan::Header(format!("Bearer {}", t.token));
            }
            Plan::FetchToken {
                realm: realm.clone(),
                service: service.clone(),
                scopes: scopes.clone(),
            }
        }
    }
}

/// Reads the scheme from a `401`'s challenges, preferring Bearer, and any scope it names.
pub(crate) fn scheme_from_challenges(challenges: &[Challenge]) -> Option<(Scheme, Option<String>)> {
    if let Some(c) = challenges.iter().find(|c| c.is_bearer()) {
        let realm = c.param("realm")?.to_owned();
        return Some((
            Scheme::Bearer {
                realm,
                service: c.param("service").map(str::to_owned),
            },
            c.param("scope").map(str::to_owned),
        ));
    }
    if challenges.iter().any(|c| c.is_basic()) {
        return Some((Scheme::Basic, None));
    }
    None
}

/// `Basic base64(user:password)` for username/password credentials.
pub(crate) fn basic_header(credentials: &Credentials) -> Option<String> {
    credentials.basic_authorization()
}

/// Whether credentials may be sent to a token realm: only over HTTPS or to a loopback host.
pub(crate) fn realm_may_receive_credentials(realm: &url::Url) -> bool {
    realm.scheme() == "https"
        || realm
            .host_str()
            .is_some_and(crate::config::is_loopback_host)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn scopes(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn anonymous_registries_get_no_header_even_with_credentials() {
        let auth = HostAuth::default();
        let creds = Credentials::basic("u", "p");
        assert_eq!(
            plan(&auth, Some(&creds), &scopes(&["x"]), Instant::now()),
            Plan::Anonymous
        );
    }

    #[test]
    fn basic_registries_get_basic_header_only_with_credentials() {
        let auth = HostAuth {
            scheme: Scheme::Basic,
            ..HostAuth::default()
        };
        let creds = Credentials::basic("tester", "secret");
        assert_eq!(
            plan(&auth, Some(&creds), &scopes(&[]), Instant::now()),
            Plan::Header("Basic dGVzdGVyOnNlY3JldA==".into())
        );
        assert_eq!(
            plan(&auth, None, &scopes(&[]), Instant::now()),
            Plan::Anonymous
        );
    }

    #[test]
    fn bearer_registries_fetch_a_token_then_reuse_it() {
        let now = Instant::now();
        let mut auth = HostAuth {
            scheme: Scheme::Bearer {
                realm: "https://auth/token".into(),
                service: Some("reg".into()),
            },
            ..HostAuth::default()
        };
        let need = scopes(&["repository:a:pull"]);
        assert!(matches!(
            plan(&auth, None, &need, now),
            Plan::FetchToken { .. }
        ));
        auth.tokens
            .insert(need.clone(), "tok".into(), Duration::from_secs(300), now);
        assert_eq!(
            plan(&auth, None, &need, now),
            Plan::Header("Bearer tok".into())
        );
        // A push needs a token with more scopes: fetch again.
        assert!(matches!(
            plan(
                &auth,
                None,
                &scopes(&["repository:a:pull", "repository:a:push"]),
                now
            ),
            Plan::FetchToken { .. }
        ));
    }

    #[test]
    fn bearer_is_preferred_over_basic_and_scope_hint_is_kept() {
        let challenges = challenge::parse_challenges(
            r#"Basic realm="x", Bearer realm="https://auth.example/token",service="reg",scope="repository:a:pull""#,
        )
        .unwrap();
        let (scheme, scope) = scheme_from_challenges(&challenges).unwrap();
        assert_eq!(
            scheme,
            Scheme::Bearer {
                realm: "https://auth.example/token".into(),
                service: Some("reg".into())
            }
        );
        assert_eq!(scope.as_deref(), Some("repository:a:pull"));
    }

    #[test]
    fn credentials_go_to_https_or_loopback_realms_only() {
        for (realm, ok) in [
            ("https://auth.example.com/token", true),
            ("http://127.0.0.1:5001/token", true),
            ("http://localhost/token", true),
            ("http://[::1]:80/token", true),
            ("http://auth.example.com/token", false),
            ("http://10.1.1.1/token", false),
        ] {
            let url = url::Url::parse(realm).unwrap();
            assert_eq!(realm_may_receive_credentials(&url), ok, "{realm}");
        }
    }
}
