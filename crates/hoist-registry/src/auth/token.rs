//! Bearer tokens: the token-service answer, and the cache of tokens per registry and scope set.
//!
//! The cache is I/O-free: it stores what the token service answered and says whether a cached
//! token covers the scopes a request needs. Tokens are kept until shortly before they expire.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::challenge::Scope;

/// A token endpoint's JSON answer (Docker token spec and its OAuth2 variant).
#[derive(Deserialize)]
pub(crate) struct TokenResponse {
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub access_token: Option<String>,
    #[serde(default)]
    pub expires_in: Option<u64>,
    #[serde(default)]
    pub refresh_token: Option<String>,
}

impl std::fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenResponse")
            .field("expires_in", &self.expires_in)
            .finish_non_exhaustive()
    }
}

/// The default lifetime of a token whose answer gives none (Docker's token spec: 60 s).
pub(crate) const DEFAULT_EXPIRY: Duration = Duration::from_secs(60);
/// Tokens are dropped this long before they expire, so a request never carries a stale one.
const EXPIRY_MARGIN: Duration = Duration::from_secs(10);

impl TokenResponse {
    /// The bearer token, whichever field carried it.
    pub fn bearer(&self) -> Option<&str> {
        self.token
            .as_deref()
            .filter(|t| !t.is_empty())
            .or(self.access_token.as_deref().filter(|t| !t.is_empty()))
    }

    /// The lifetime to cache the token for.
    pub fn lifetime(&self) -> Duration {
        match self.expires_in {
            Some(s) if s > 0 => Duration::from_secs(s),
            _ => DEFAULT_EXPIRY,
        }
    }
}

/// A bearer token with the scopes it was granted for and its expiry. Its `Debug` hides the token.
#[derive(Clone)]
pub(crate) struct CachedToken {
    pub scopes: BTreeSet<String>,
    pub token: String,
    pub expires_at: Instant,
}

impl std::fmt::Debug for CachedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedToken")
            .field("scopes", &self.scopes)
            .field("token", &"<redacted>")
            .finish()
    }
}

/// Whether one of `granted` covers `needed`; scopes that do not parse must match exactly.
fn covered(granted: &BTreeSet<String>, needed: &str) -> bool {
    if granted.contains(needed) {
        return true;
    }
    let Ok(needed) = needed.parse::<Scope>() else {
        return false;
    };
    granted
        .iter()
        .filter_map(|g| g.parse::<Scope>().ok())
        .any(|g| g.covers(&needed))
}

/// Tokens for one registry, by scope set.
#[derive(Debug, Default)]
pub(crate) struct TokenCache {
    tokens: Vec<CachedToken>,
}

impl TokenCache {
    /// A live token whose scopes cover every one of `needed` (a `pull,push` token covers a
    /// `pull` request on the same repository).
    pub fn find(&self, needed: &BTreeSet<String>, now: Instant) -> Option<&CachedToken> {
        self.tokens
            .iter()
            .filter(|t| t.expires_at > now)
            .find(|t| needed.iter().all(|n| covered(&t.scopes, n)))
    }

    /// Stores a token granted for `scopes`, living `lifetime` from `now`.
    pub fn insert(
        &mut self,
        scopes: BTreeSet<String>,
        token: String,
        lifetime: Duration,
        now: Instant,
    ) {
        let keep = lifetime.saturating_sub(EXPIRY_MARGIN).max(lifetime / 2);
        self.tokens
            .retain(|t| t.expires_at > now && t.scopes != scopes);
        self.tokens.push(CachedToken {
            scopes,
            token,
            expires_at: now + keep,
        });
    }

    /// Forgets a token (after a registry refused it).
    pub fn invalidate(&mut self, token: &str) {
        self.tokens.retain(|t| t.token != token);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_token_covers_any_subset_of_its_scopes() {
        let now = Instant::now();
        let mut cache = TokenCache::default();
        cache.insert(
            set(&["repository:a:pull", "repository:a:push"]),
            "t1".into(),
            Duration::from_secs(300),
            now,
        );
        assert!(cache.find(&set(&["repository:a:pull"]), now).is_some());
        assert!(
            cache
                .find(&set(&["repository:a:pull", "repository:a:push"]), now)
                .is_some()
        );
        assert!(cache.find(&set(&["repository:b:pull"]), now).is_none());
    }

    #[test]
    fn a_push_token_covers_pull_requests_on_the_same_repository_only() {
        let now = Instant::now();
        let mut cache = TokenCache::default();
        cache.insert(
            set(&["repository:a:pull,push"]),
            "t".into(),
            Duration::from_secs(300),
            now,
        );
        assert!(cache.find(&set(&["repository:a:pull"]), now).is_some());
        assert!(cache.find(&set(&["repository:a:push"]), now).is_some());
        assert!(cache.find(&set(&["repository:a:delete"]), now).is_none());
        assert!(cache.find(&set(&["repository:ab:pull"]), now).is_none());
    }

    #[test]
    fn tokens_expire_before_their_lifetime_ends() {
        let now = Instant::now();
        let mut cache = TokenCache::default();
        cache.insert(set(&["s"]), "t".into(), Duration::from_secs(60), now);
        assert!(
            cache
                .find(&set(&["s"]), now + Duration::from_secs(49))
                .is_some()
        );
        assert!(
            cache
                .find(&set(&["s"]), now + Duration::from_secs(51))
                .is_none()
        );
    }

    #[test]
    fn invalidated_tokens_are_not_found() {
        let now = Instant::now();
        let mut cache = TokenCache::default();
        cache.insert(set(&["s"]), "t".into(), Duration::from_secs(60), now);
        cache.invalidate("t");
        assert!(cache.find(&set(&["s"]), now).is_none());
    }

    #[test]
    fn token_response_accepts_either_field_and_defaults_expiry() {
        let r: TokenResponse = serde_json::from_str(r#"{"access_token":"abc"}"#).unwrap();
        assert_eq!(r.bearer(), Some("abc"));
        assert_eq!(r.lifetime(), DEFAULT_EXPIRY);
        let r: TokenResponse =
            serde_json::from_str(r#"{"token":"x","access_token":"y","expires_in":300}"#).unwrap();
        assert_eq!(r.bearer(), Some("x"));
        assert_eq!(r.lifetime(), Duration::from_secs(300));
        let r: TokenResponse = serde_json::from_str(r#"{"token":""}"#).unwrap();
        assert_eq!(r.bearer(), None);
    }

    #[test]
    fn debug_output_never_shows_tokens() {
        let t = CachedToken {
            scopes: set(&["s"]),
            token: "supersecret".into(),
            expires_at: Instant::now(),
        };
        assert!(!format!("{t:?}").contains("supersecret"));
        let r: TokenResponse =
            serde_json::from_str(r#"{"token":"supersecret","refresh_token":"alsosecret"}"#)
                .unwrap();
        let dbg = format!("{r:?}");
        assert!(!dbg.contains("supersecret") && !dbg.contains("alsosecret"));
    }
}
