//! The fault plan: which requests a fault hits, and what the fault is.

use std::time::Duration;

use http::Method;

/// Selects requests by method and path.
///
/// The path pattern is a substring of the request path (`"/blobs/"`), unless it holds
/// `*` or `?`: then it is a glob over the whole path, where `*` matches any run of
/// characters (slashes included) and `?` one character
/// (`"/v2/*/blobs/sha256:*"`). The query string is never part of the path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Matcher {
    method: Option<Method>,
    path: String,
}

impl Matcher {
    /// Requests with `method` whose path matches `path`.
    pub fn new(method: Method, path: &str) -> Self {
        Matcher {
            method: Some(method),
            path: path.to_owned(),
        }
    }

    /// Requests of any method whose path matches `path`.
    pub fn any_method(path: &str) -> Self {
        Matcher {
            method: None,
            path: path.to_owned(),
        }
    }

    /// `GET` requests whose path matches `path`.
    pub fn get(path: &str) -> Self {
        Self::new(Method::GET, path)
    }

    /// `HEAD` requests whose path matches `path`.
    pub fn head(path: &str) -> Self {
        Self::new(Method::HEAD, path)
    }

    /// Whether a request with `method` and `path` is selected.
    pub fn matches(&self, method: &Method, path: &str) -> bool {
        if self.method.as_ref().is_some_and(|m| m != method) {
            return false;
        }
        if self.path.contains(['*', '?']) {
            glob(self.path.as_bytes(), path.as_bytes())
        } else {
            path.contains(&self.path)
        }
    }
}

/// Matches `text` against `pattern` (`*`, `?`), anchored at both ends.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == b'?' || pattern[p] == text[t]) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// Which of the requests a rule's matcher selects the rule acts on (counted from 1,
/// per rule, from when the rule was added).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Occurrence {
    /// Every matching request.
    Every,
    /// Only the n-th matching request.
    Nth(u64),
    /// The first n matching requests.
    First(u64),
}

impl Occurrence {
    fn selects(self, seen: u64) -> bool {
        match self {
            Occurrence::Every => true,
            Occurrence::Nth(n) => seen == n,
            Occurrence::First(n) => seen <= n,
        }
    }
}

/// What the proxy does to a selected request.
///
/// Byte counts and offsets are over the response *body*, after the headers. A body
/// fault whose byte count or offset lies past the end of the body changes nothing, and
/// body faults have no effect on `HEAD` requests. The request log records the action
/// as applied either way.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Action {
    /// Sends the headers and `after_bytes` body bytes, waits until the client has
    /// received them, then resets the TCP connection (RST).
    Reset {
        /// Body bytes delivered before the reset.
        after_bytes: u64,
    },
    /// Resets the TCP connection before any response.
    ResetBeforeResponse,
    /// Answers `status` itself, with a registry-style JSON error body and, if given, a
    /// `Retry-After` header (seconds or an HTTP date, sent as is).
    Status {
        /// The status code, for example 503.
        status: u16,
        /// The `Retry-After` value.
        retry_after: Option<String>,
    },
    /// Sends `after_bytes` body bytes, then sends nothing more: forever (until the
    /// client gives up or the proxy stops) or for `duration`, after which the rest
    /// follows.
    Stall {
        /// Body bytes delivered before the stall.
        after_bytes: u64,
        /// How long the stall lasts; `None` for ever.
        duration: Option<Duration>,
    },
    /// Sends `after_bytes` body bytes, then closes the connection although the
    /// `Content-Length` promised more.
    Truncate {
        /// Body bytes delivered before the close.
        after_bytes: u64,
    },
    /// Inverts every bit of the body byte at `offset` (if the body reaches it).
    FlipByte {
        /// Offset of the corrupted byte in the body.
        offset: u64,
    },
    /// Removes `Range` (and `If-Range`) from the request: the upstream answers 200 with
    /// the whole body.
    IgnoreRange,
    /// Forwards the range request, then moves the `Content-Range` of a 206 answer one
    /// byte forward (same length, wrong position); other answers pass unchanged.
    WrongContentRange,
    /// Answers `307 Temporary Redirect` to the same path on the proxy's foreign host,
    /// another loopback address that serves the same content (it forwards with the
    /// credentials of the redirected request, like a pre-signed storage URL) and
    /// records whether an `Authorization` header reached it.
    RedirectToForeignHost,
    /// Reads the request, then never answers (see `hostile.rs`): a registry that hangs.
    StallBeforeResponse,
    /// A fault on range requests that depends on how many ranges they ask for
    /// ([`super::RangeFault`]).
    Ranges(super::RangeFault),
}

impl Action {
    /// [`Action::Status`] without `Retry-After`.
    pub fn status(status: u16) -> Self {
        Action::Status {
            status,
            retry_after: None,
        }
    }

    /// [`Action::Status`] with `Retry-After: retry_after`.
    pub fn status_with_retry_after(status: u16, retry_after: &str) -> Self {
        Action::Status {
            status,
            retry_after: Some(retry_after.to_owned()),
        }
    }
}

/// A fault: an [`Action`] on the requests a [`Matcher`] and an [`Occurrence`] select.
///
/// ```
/// use hoist_test_support::{Action, Rule};
/// // The second GET of any blob is reset after 1000 body bytes.
/// let rule = Rule::get("/blobs/", Action::Reset { after_bytes: 1000 }).nth(2);
/// // Every manifest GET gets a 503 with Retry-After, the first three times.
/// let busy = Rule::get("/manifests/", Action::status_with_retry_after(503, "1")).first(3);
/// # let _ = (rule, busy);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    matcher: Matcher,
    occurrence: Occurrence,
    action: Action,
}

impl Rule {
    /// `action` on every request `matcher` selects.
    pub fn new(matcher: Matcher, action: Action) -> Self {
        Rule {
            matcher,
            occurrence: Occurrence::Every,
            action,
        }
    }

    /// `action` on every `GET` whose path matches `path`.
    pub fn get(path: &str, action: Action) -> Self {
        Self::new(Matcher::get(path), action)
    }

    /// `action` on every `HEAD` whose path matches `path`.
    pub fn head(path: &str, action: Action) -> Self {
        Self::new(Matcher::head(path), action)
    }

    /// `action` on every request of any method whose path matches `path`.
    pub fn any_method(path: &str, action: Action) -> Self {
        Self::new(Matcher::any_method(path), action)
    }

    /// Acts only on the n-th matching request (from 1).
    pub fn nth(self, n: u64) -> Self {
        self.occurrence(Occurrence::Nth(n))
    }

    /// Acts on the first `n` matching requests.
    pub fn first(self, n: u64) -> Self {
        self.occurrence(Occurrence::First(n))
    }

    /// Acts on the first matching request only.
    pub fn once(self) -> Self {
        self.first(1)
    }

    /// Acts on every matching request (the default).
    pub fn every(self) -> Self {
        self.occurrence(Occurrence::Every)
    }

    /// Sets which matching requests the rule acts on.
    pub fn occurrence(mut self, occurrence: Occurrence) -> Self {
        self.occurrence = occurrence;
        self
    }
}

/// The rules in force, with how many requests each has matched.
#[derive(Default)]
pub(crate) struct RuleSet {
    rules: Vec<(Rule, u64)>,
}

impl RuleSet {
    pub(crate) fn push(&mut self, rule: Rule) {
        self.rules.push((rule, 0));
    }

    pub(crate) fn clear(&mut self) {
        self.rules.clear();
    }

    /// Counts the request against every rule that matches it and returns the action of
    /// the first (oldest) rule whose occurrence selects it.
    pub(crate) fn decide(&mut self, method: &Method, path: &str) -> Option<Action> {
        let mut chosen = None;
        for (rule, seen) in &mut self.rules {
            if !rule.matcher.matches(method, path) {
                continue;
            }
            *seen += 1;
            if chosen.is_none() && rule.occurrence.selects(*seen) {
                chosen = Some(rule.action.clone());
            }
        }
        chosen
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn substring_and_glob_patterns() {
        let blobs = Matcher::get("/blobs/");
        assert!(blobs.matches(&Method::GET, "/v2/a/b/blobs/sha256:00"));
        assert!(!blobs.matches(&Method::HEAD, "/v2/a/b/blobs/sha256:00"));
        assert!(!blobs.matches(&Method::GET, "/v2/a/b/manifests/latest"));
        let glob = Matcher::any_method("/v2/*/blobs/sha256:??");
        assert!(glob.matches(&Method::PUT, "/v2/a/b/blobs/sha256:00"));
        assert!(!glob.matches(&Method::PUT, "/v2/a/b/blobs/sha256:000"));
        assert!(!glob.matches(&Method::PUT, "/x/v2/a/blobs/sha256:00"));
        assert!(Matcher::any_method("*").matches(&Method::GET, "/"));
        assert!(Matcher::any_method("/v2/*").matches(&Method::GET, "/v2/"));
    }

    #[test]
    fn occurrences_count_per_rule_and_the_oldest_selected_rule_wins() {
        let mut set = RuleSet::default();
        set.push(Rule::get("/blobs/", Action::IgnoreRange).nth(2));
        set.push(Rule::get("/blobs/", Action::status(500)).first(3));
        let got: Vec<Option<Action>> = (0..5)
            .map(|_| set.decide(&Method::GET, "/v2/x/blobs/d"))
            .collect();
        assert_eq!(
            got,
            vec![
                Some(Action::status(500)),
                Some(Action::IgnoreRange),
                Some(Action::status(500)),
                None,
                None,
            ]
        );
        assert_eq!(set.decide(&Method::GET, "/v2/x/manifests/t"), None);
        set.clear();
        assert_eq!(set.decide(&Method::GET, "/v2/x/blobs/d"), None);
    }
}
