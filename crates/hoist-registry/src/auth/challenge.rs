//! `WWW-Authenticate` challenges (RFC 7235) and token scopes.
//!
//! [`parse_challenges`] turns one header value into the [`Challenge`]s it carries: several
//! challenges per header, auth-params with tokens or quoted-strings (escapes, commas inside
//! quotes), token68 credentials, case-insensitive schemes and parameter names. Malformed input
//! is a [`ChallengeError`], never a panic, and input is bounded by [`MAX_HEADER_LEN`].
//! [`Challenge::bearer`] and [`Challenge::basic`] read the parameters the registry token flow
//! uses. [`Scope`] is a token scope (`repository:foo/bar:pull,push`) with parsing, display and
//! merging of actions.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

/// The longest `WWW-Authenticate` value parsed; longer ones are refused.
pub const MAX_HEADER_LEN: usize = 16 * 1024;

/// Why a `WWW-Authenticate` value or a challenge could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChallengeError {
    /// The header holds no challenge at all.
    #[error("WWW-Authenticate header holds no challenge")]
    Empty,
    /// The header is longer than [`MAX_HEADER_LEN`].
    #[error("WWW-Authenticate header is {len} bytes long; the limit is {MAX_HEADER_LEN}")]
    TooLong {
        /// The length of the header value.
        len: usize,
    },
    /// The header bytes are not UTF-8.
    #[error("WWW-Authenticate header is not valid UTF-8")]
    NotUtf8,
    /// The header breaks the RFC 7235 grammar.
    #[error("malformed WWW-Authenticate header {header:?}: expected {expected} at byte {offset}")]
    Syntax {
        /// The header value.
        header: String,
        /// Where parsing stopped.
        offset: usize,
        /// What was expected there.
        expected: &'static str,
    },
    /// A parameter appears twice in one challenge.
    #[error("parameter {name:?} appears twice in a {scheme} challenge")]
    DuplicateParam {
        /// The challenge's scheme.
        scheme: String,
        /// The repeated parameter name (lowercase).
        name: String,
    },
    /// A challenge lacks a parameter its scheme requires.
    #[error("{scheme} challenge has no {param:?} parameter")]
    MissingParam {
        /// The challenge's scheme.
        scheme: String,
        /// The missing parameter.
        param: &'static str,
    },
    /// The challenge is not of the scheme asked for.
    #[error("expected a {expected} challenge, got {scheme:?}")]
    WrongScheme {
        /// The scheme asked for.
        expected: &'static str,
        /// The challenge's scheme.
        scheme: String,
    },
}

/// One authentication challenge: a scheme and its parameters or token68.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    scheme: String,
    params: Vec<(String, String)>,
    token68: Option<String>,
}

impl Challenge {
    /// The auth scheme as the server wrote it (`Bearer`, `basic`, …).
    pub fn scheme(&self) -> &str {
        &self.scheme
    }

    /// Whether the scheme is `scheme`, compared case-insensitively.
    pub fn is_scheme(&self, scheme: &str) -> bool {
        self.scheme.eq_ignore_ascii_case(scheme)
    }

    /// Whether this is a `Bearer` challenge.
    pub fn is_bearer(&self) -> bool {
        self.is_scheme("bearer")
    }

    /// Whether this is a `Basic` challenge.
    pub fn is_basic(&self) -> bool {
        self.is_scheme("basic")
    }

    /// The value of parameter `name` (case-insensitive), unescaped.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// All parameters in order, names in lowercase.
    pub fn params(&self) -> impl Iterator<Item = (&str, &str)> {
        self.params.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// The token68 the challenge carries instead of parameters, if any.
    pub fn token68(&self) -> Option<&str> {
        self.token68.as_deref()
    }

    /// The `Bearer` parameters: `realm` (required), `service`, `scope`, `error`.
    pub fn bearer(&self) -> Result<BearerChallenge, ChallengeError> {
        if !self.is_bearer() {
            return Err(ChallengeError::WrongScheme {
                expected: "Bearer",
                scheme: self.scheme.clone(),
            });
        }
        let realm = self
            .param("realm")
            .ok_or_else(|| ChallengeError::MissingParam {
                scheme: self.scheme.clone(),
                param: "realm",
            })?;
        Ok(BearerChallenge {
            realm: realm.to_owned(),
            service: self.param("service").map(str::to_owned),
            scope: self.param("scope").map(str::to_owned),
            error: self.param("error").map(BearerError::from_code),
            error_description: self.param("error_description").map(str::to_owned),
        })
    }

    /// The `Basic` parameters: `realm`, if given.
    pub fn basic(&self) -> Result<BasicChallenge, ChallengeError> {
        if !self.is_basic() {
            return Err(ChallengeError::WrongScheme {
                expected: "Basic",
                scheme: self.scheme.clone(),
            });
        }
        Ok(BasicChallenge {
            realm: self.param("realm").map(str::to_owned),
        })
    }
}

impl fmt::Display for Challenge {
    /// Renders the challenge as a header value, every parameter as a quoted-string.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.scheme)?;
        if let Some(token) = &self.token68 {
            return write!(f, " {token}");
        }
        for (i, (name, value)) in self.params.iter().enumerate() {
            f.write_str(if i == 0 { " " } else { ", " })?;
            write!(f, "{name}=\"")?;
            for c in value.chars() {
                if c == '"' || c == '\\' {
                    f.write_str("\\")?;
                }
                write!(f, "{c}")?;
            }
            f.write_str("\"")?;
        }
        Ok(())
    }
}

/// The parameters of a `Bearer` challenge (the registry token flow).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BearerChallenge {
    /// The token endpoint URL, as given (possibly relative or of another host).
    pub realm: String,
    /// The `service` to name in the token request.
    pub service: Option<String>,
    /// The space-separated scopes the server asks for; see [`BearerChallenge::scopes`].
    pub scope: Option<String>,
    /// Why the presented token was refused, if one was.
    pub error: Option<BearerError>,
    /// The server's explanation of `error`.
    pub error_description: Option<String>,
}

impl BearerChallenge {
    /// The scopes of the `scope` parameter, parsed (none when it is absent).
    pub fn scopes(&self) -> Result<Vec<Scope>, ScopeError> {
        self.scope.as_deref().map_or(Ok(Vec::new()), parse_scopes)
    }
}

/// The `error` of a `Bearer` challenge (RFC 6750 section 3.1).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BearerError {
    /// `invalid_request`.
    InvalidRequest,
    /// `invalid_token`: expired, revoked or malformed; a new token may help.
    InvalidToken,
    /// `insufficient_scope`: a token with more scope is needed.
    InsufficientScope,
    /// Any other code.
    Other(String),
}

impl BearerError {
    /// Maps an error code to its variant.
    pub fn from_code(code: &str) -> Self {
        match code {
            "invalid_request" => Self::InvalidRequest,
            "invalid_token" => Self::InvalidToken,
            "insufficient_scope" => Self::InsufficientScope,
            other => Self::Other(other.to_owned()),
        }
    }

    /// The error code.
    pub fn as_str(&self) -> &str {
        match self {
            Self::InvalidRequest => "invalid_request",
            Self::InvalidToken => "invalid_token",
            Self::InsufficientScope => "insufficient_scope",
            Self::Other(other) => other,
        }
    }
}

/// The parameters of a `Basic` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BasicChallenge {
    /// The protection space, if given.
    pub realm: Option<String>,
}

/// Parses a `WWW-Authenticate` value into its challenges, in order.
pub fn parse_challenges(header: &str) -> Result<Vec<Challenge>, ChallengeError> {
    if header.len() > MAX_HEADER_LEN {
        return Err(ChallengeError::TooLong { len: header.len() });
    }
    let mut c = Cursor::new(header);
    let mut out = Vec::new();
    loop {
        c.skip_ows_and_commas();
        if c.at_end() {
            break;
        }
        let scheme = c.token().ok_or_else(|| c.error("an auth scheme"))?;
        let mut challenge = Challenge {
            scheme: scheme.to_owned(),
            params: Vec::new(),
            token68: None,
        };
        let spaces = c.skip_ows();
        if c.at_end() || c.peek() == Some(b',') {
            out.push(challenge);
            continue;
        }
        if spaces == 0 {
            return Err(c.error("a space after the auth scheme"));
        }
        let start = c.pos;
        if let Some(token68) = c.token68() {
            c.skip_ows();
            if c.at_end() || c.peek() == Some(b',') {
                challenge.token68 = Some(token68.to_owned());
                out.push(challenge);
                continue;
            }
            c.pos = start;
        }
        loop {
            let name = c.token().ok_or_else(|| c.error("a parameter name"))?;
            c.skip_ows();
            c.expect(b'=', "'=' after the parameter name")?;
            c.skip_ows();
            let value = if c.peek() == Some(b'"') {
                c.quoted_string()?
            } else {
                c.token()
                    .ok_or_else(|| c.error("a token or quoted-string value"))?
                    .to_owned()
            };
            let name = name.to_ascii_lowercase();
            if challenge.params.iter().any(|(n, _)| *n == name) {
                return Err(ChallengeError::DuplicateParam {
                    scheme: challenge.scheme,
                    name,
                });
            }
            challenge.params.push((name, value));
            c.skip_ows();
            if c.at_end() {
                break;
            }
            c.expect(b',', "',' between parameters or challenges")?;
            c.skip_ows_and_commas();
            if c.at_end() || !c.param_follows() {
                break;
            }
        }
        out.push(challenge);
    }
    if out.is_empty() {
        return Err(ChallengeError::Empty);
    }
    Ok(out)
}

/// Parses a `WWW-Authenticate` value given as bytes (as HTTP libraries hold it).
pub fn parse_challenges_bytes(header: &[u8]) -> Result<Vec<Challenge>, ChallengeError> {
    if header.len() > MAX_HEADER_LEN {
        return Err(ChallengeError::TooLong { len: header.len() });
    }
    parse_challenges(std::str::from_utf8(header).map_err(|_| ChallengeError::NotUtf8)?)
}

type Cursor<'a> = crate::http_syntax::Cursor<'a, ChallengeError>;

impl crate::http_syntax::FromSyntax for ChallengeError {
    fn from_syntax(header: &str, offset: usize, expected: &'static str) -> Self {
        ChallengeError::Syntax {
            header: header.to_owned(),
            offset,
            expected,
        }
    }
}

fn is_token68_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~+/".contains(&b)
}

impl<'a> crate::http_syntax::Cursor<'a, ChallengeError> {
    fn skip_ows_and_commas(&mut self) {
        self.skip_while(|b| matches!(b, b' ' | b'\t' | b','));
    }

    fn token68(&mut self) -> Option<&'a str> {
        let start = self.pos;
        if self.take_while(is_token68_char).is_empty() {
            return None;
        }
        self.take_while(|b| b == b'=');
        Some(&self.s[start..self.pos])
    }

    /// Whether an auth-param (`token BWS "="`) starts here, without moving.
    fn param_follows(&mut self) -> bool {
        let start = self.pos;
        let follows = self.token().is_some() && {
            self.skip_ows();
            self.peek() == Some(b'=')
        };
        self.pos = start;
        follows
    }
}

/// Why a token scope could not be parsed or built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ScopeError {
    /// The scope is not `type:name:actions`.
    #[error("invalid scope {scope:?}: expected type:name:actions, like repository:foo/bar:pull")]
    Format {
        /// The scope as given.
        scope: String,
    },
    /// The resource type (or its class) breaks the grammar.
    #[error(
        "invalid resource type {resource_type:?} in scope {scope:?}: expected lowercase letters and digits separated by '.', '_' or '-', with an optional (class)"
    )]
    ResourceType {
        /// The resource type as given.
        resource_type: String,
        /// The scope as given.
        scope: String,
    },
    /// The resource name is empty or holds spaces, quotes, commas or control characters.
    #[error("invalid resource name {name:?} in scope {scope:?}")]
    ResourceName {
        /// The resource name as given.
        name: String,
        /// The scope as given.
        scope: String,
    },
    /// An action is empty or holds characters other than letters, digits, '_', '-' and '*'.
    #[error("invalid action {action:?} in scope {scope:?}")]
    Action {
        /// The action as given.
        action: String,
        /// The scope as given.
        scope: String,
    },
}

/// A token scope: resource type (with optional class), resource name and a set of actions.
///
/// Actions are kept as a sorted set, so `repository:a:push,pull` displays as
/// `repository:a:pull,push`; equal scopes have equal text (useful as a cache key).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Scope {
    resource_type: String,
    class: Option<String>,
    name: String,
    actions: BTreeSet<String>,
}

impl Scope {
    /// A scope on `resource_type` `name` with `actions`; fails on any invalid part or no action.
    pub fn new<I, A>(resource_type: &str, name: &str, actions: I) -> Result<Self, ScopeError>
    where
        I: IntoIterator<Item = A>,
        A: AsRef<str>,
    {
        let actions: Vec<String> = actions.into_iter().map(|a| a.as_ref().to_owned()).collect();
        let scope = || format!("{resource_type}:{name}:{}", actions.join(","));
        if !valid_resource_type(resource_type) {
            return Err(ScopeError::ResourceType {
                resource_type: resource_type.to_owned(),
                scope: scope(),
            });
        }
        build(resource_type, None, name, &actions, scope)
    }

    /// A `repository` scope.
    pub fn repository<I, A>(name: &str, actions: I) -> Result<Self, ScopeError>
    where
        I: IntoIterator<Item = A>,
        A: AsRef<str>,
    {
        Self::new("repository", name, actions)
    }

    /// `repository:<name>:pull`.
    pub fn pull(name: &str) -> Result<Self, ScopeError> {
        Self::repository(name, ["pull"])
    }

    /// `repository:<name>:pull,push`.
    pub fn push(name: &str) -> Result<Self, ScopeError> {
        Self::repository(name, ["pull", "push"])
    }

    /// `registry:catalog:*`.
    pub fn catalog() -> Self {
        Self {
            resource_type: "registry".to_owned(),
            class: None,
            name: "catalog".to_owned(),
            actions: BTreeSet::from(["*".to_owned()]),
        }
    }

    /// The resource type: `repository`, `registry`, ….
    pub fn resource_type(&self) -> &str {
        &self.resource_type
    }

    /// The resource class, as in `repository(plugin)`.
    pub fn class(&self) -> Option<&str> {
        self.class.as_deref()
    }

    /// The resource name: a repository path, `catalog`, ….
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The actions, sorted.
    pub fn actions(&self) -> impl Iterator<Item = &str> {
        self.actions.iter().map(String::as_str)
    }

    /// Whether `other` names the same resource (type, class and name).
    pub fn same_resource(&self, other: &Scope) -> bool {
        self.resource_type == other.resource_type
            && self.class == other.class
            && self.name == other.name
    }

    /// Adds `other`'s actions when it names the same resource; returns whether it did.
    pub fn merge(&mut self, other: &Scope) -> bool {
        if !self.same_resource(other) {
            return false;
        }
        self.actions.extend(other.actions.iter().cloned());
        true
    }

    /// Whether a token granted this scope also grants `other` (`*` grants every action).
    pub fn covers(&self, other: &Scope) -> bool {
        self.same_resource(other)
            && (self.actions.contains("*") || other.actions.is_subset(&self.actions))
    }
}

fn build(
    resource_type: &str,
    class: Option<&str>,
    name: &str,
    actions: &[impl AsRef<str>],
    scope: impl Fn() -> String,
) -> Result<Scope, ScopeError> {
    let name_ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'"' | b'\\' | b','));
    if !name_ok {
        return Err(ScopeError::ResourceName {
            name: name.to_owned(),
            scope: scope(),
        });
    }
    if actions.is_empty() {
        return Err(ScopeError::Action {
            action: String::new(),
            scope: scope(),
        });
    }
    let mut set = BTreeSet::new();
    for action in actions {
        let action = action.as_ref();
        let ok = !action.is_empty()
            && action
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'*'));
        if !ok {
            return Err(ScopeError::Action {
                action: action.to_owned(),
                scope: scope(),
            });
        }
        set.insert(action.to_owned());
    }
    Ok(Scope {
        resource_type: resource_type.to_owned(),
        class: class.map(str::to_owned),
        name: name.to_owned(),
        actions: set,
    })
}

/// `[a-z0-9]+([._-][a-z0-9]+)*`
fn valid_resource_type(s: &str) -> bool {
    !s.is_empty()
        && s.split(['.', '_', '-']).all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
}

impl FromStr for Scope {
    type Err = ScopeError;

    /// Parses `type[(class)]:name:action[,action…]`; the name may itself contain ':'
    /// (a host with a port).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let format = || ScopeError::Format {
            scope: s.to_owned(),
        };
        let (kind, rest) = s.split_once(':').ok_or_else(format)?;
        let (name, actions) = rest.rsplit_once(':').ok_or_else(format)?;
        let (resource_type, class) = match kind.split_once('(') {
            Some((t, class)) => match class.strip_suffix(')') {
                Some(class) => (t, Some(class)),
                None => (kind, Some("")),
            },
            None => (kind, None),
        };
        let type_ok = valid_resource_type(resource_type) && class.is_none_or(valid_resource_type);
        if !type_ok {
            return Err(ScopeError::ResourceType {
                resource_type: kind.to_owned(),
                scope: s.to_owned(),
            });
        }
        let actions: Vec<&str> = actions.split(',').collect();
        build(resource_type, class, name, &actions, || s.to_owned())
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.resource_type)?;
        if let Some(class) = &self.class {
            write!(f, "({class})")?;
        }
        write!(f, ":{}:", self.name)?;
        for (i, action) in self.actions.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(action)?;
        }
        Ok(())
    }
}

/// Parses a space-separated list of scopes (the `scope` parameter of a challenge).
pub fn parse_scopes(s: &str) -> Result<Vec<Scope>, ScopeError> {
    s.split_ascii_whitespace().map(Scope::from_str).collect()
}

/// Merges scopes on the same resource into one with the union of their actions, keeping the
/// order in which resources first appear.
pub fn merge_scopes(scopes: impl IntoIterator<Item = Scope>) -> Vec<Scope> {
    let mut out: Vec<Scope> = Vec::new();
    for scope in scopes {
        if !out.iter_mut().any(|existing| existing.merge(&scope)) {
            out.push(scope);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ch(scheme: &str, params: &[(&str, &str)]) -> Challenge {
        Challenge {
            scheme: scheme.to_owned(),
            params: params
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect(),
            token68: None,
        }
    }

    fn t68(scheme: &str, token: &str) -> Challenge {
        Challenge {
            scheme: scheme.to_owned(),
            params: Vec::new(),
            token68: Some(token.to_owned()),
        }
    }

    #[test]
    fn well_formed_headers_parse_to_the_pinned_challenges() {
        let cases: Vec<(&str, Vec<Challenge>)> = vec![
            (
                r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull""#,
                vec![ch(
                    "Bearer",
                    &[
                        ("realm", "https://auth.docker.io/token"),
                        ("service", "registry.docker.io"),
                        ("scope", "repository:library/alpine:pull"),
                    ],
                )],
            ),
            (
                r#"Basic realm="Registry Realm""#,
                vec![ch("Basic", &[("realm", "Registry Realm")])],
            ),
            (
                r#"basic REALM=registry"#,
                vec![ch("basic", &[("realm", "registry")])],
            ),
            (
                r#"BEARER Realm = "r" , Service= s"#,
                vec![ch("BEARER", &[("realm", "r"), ("service", "s")])],
            ),
            (
                r#"Basic realm="a", Bearer realm="b", service="c""#,
                vec![
                    ch("Basic", &[("realm", "a")]),
                    ch("Bearer", &[("realm", "b"), ("service", "c")]),
                ],
            ),
            (
                r#"Bearer realm="x",scope="repository:a:pull,push repository:b:pull""#,
                vec![ch(
                    "Bearer",
                    &[
                        ("realm", "x"),
                        ("scope", "repository:a:pull,push repository:b:pull"),
                    ],
                )],
            ),
            (
                r#"Basic realm="a \"quoted\" \\ realm""#,
                vec![ch("Basic", &[("realm", r#"a "quoted" \ realm"#)])],
            ),
            (
                r#"Basic realm="\a\b""#,
                vec![ch("Basic", &[("realm", "ab")])],
            ),
            (r#"Basic realm="""#, vec![ch("Basic", &[("realm", "")])]),
            (
                r#"Basic realm="uni ✓ code""#,
                vec![ch("Basic", &[("realm", "uni ✓ code")])],
            ),
            ("Negotiate", vec![ch("Negotiate", &[])]),
            ("Negotiate abc+/=", vec![t68("Negotiate", "abc+/=")]),
            // The grammar makes a lone `name=` a token68, not a parameter without value.
            ("Bearer realm=", vec![t68("Bearer", "realm=")]),
            ("Bearer realm", vec![t68("Bearer", "realm")]),
            (
                "Bearer realm=a, service",
                vec![ch("Bearer", &[("realm", "a")]), ch("service", &[])],
            ),
            (
                "Negotiate abc==, Basic",
                vec![t68("Negotiate", "abc=="), ch("Basic", &[])],
            ),
            (
                "NTLM, Negotiate",
                vec![ch("NTLM", &[]), ch("Negotiate", &[])],
            ),
            (
                " , Basic realm=a ,, , Bearer realm=b ,",
                vec![
                    ch("Basic", &[("realm", "a")]),
                    ch("Bearer", &[("realm", "b")]),
                ],
            ),
            (
                "Newauth realm=x, type=1, Basic",
                vec![
                    ch("Newauth", &[("realm", "x"), ("type", "1")]),
                    ch("Basic", &[]),
                ],
            ),
            (
                r#"Bearer realm="x",error="insufficient_scope",error_description="need push""#,
                vec![ch(
                    "Bearer",
                    &[
                        ("realm", "x"),
                        ("error", "insufficient_scope"),
                        ("error_description", "need push"),
                    ],
                )],
            ),
            ("Bearer\trealm=x", vec![ch("Bearer", &[("realm", "x")])]),
        ];
        for (header, expected) in cases {
            assert_eq!(parse_challenges(header), Ok(expected), "{header:?}");
        }
    }

    #[test]
    fn malformed_headers_fail_with_the_pinned_error() {
        let syntax = |header: &str, offset, expected| ChallengeError::Syntax {
            header: header.to_owned(),
            offset,
            expected,
        };
        let cases: Vec<(&str, ChallengeError)> = vec![
            ("", ChallengeError::Empty),
            (" , ,", ChallengeError::Empty),
            ("=realm", syntax("=realm", 0, "an auth scheme")),
            ("\"Bearer\"", syntax("\"Bearer\"", 0, "an auth scheme")),
            (
                "Bearer=x",
                syntax("Bearer=x", 6, "a space after the auth scheme"),
            ),
            (
                r#"Bearer realm="x"#,
                syntax(
                    r#"Bearer realm="x"#,
                    15,
                    "the closing '\"' of a quoted-string",
                ),
            ),
            (
                r#"Bearer realm="x\"#,
                syntax(r#"Bearer realm="x\"#, 16, "an escaped character after '\\'"),
            ),
            (
                r#"Bearer realm="a", service="#,
                syntax(
                    r#"Bearer realm="a", service="#,
                    26,
                    "a token or quoted-string value",
                ),
            ),
            (
                "Bearer realm x",
                syntax("Bearer realm x", 13, "'=' after the parameter name"),
            ),
            (
                r#"Bearer realm="a" service="b""#,
                syntax(
                    r#"Bearer realm="a" service="b""#,
                    17,
                    "',' between parameters or challenges",
                ),
            ),
            (
                "Bearer realm=a=b",
                syntax(
                    "Bearer realm=a=b",
                    14,
                    "',' between parameters or challenges",
                ),
            ),
            (
                "Bearer realm=\"a\u{1}b\"",
                syntax(
                    "Bearer realm=\"a\u{1}b\"",
                    15,
                    "a printable character in a quoted-string",
                ),
            ),
            (
                "Bearer realm=\"a\u{7f}\"",
                syntax(
                    "Bearer realm=\"a\u{7f}\"",
                    15,
                    "a printable character in a quoted-string",
                ),
            ),
            (
                "Bearer realm=a\r\n",
                syntax(
                    "Bearer realm=a\r\n",
                    14,
                    "',' between parameters or challenges",
                ),
            ),
            ("Bearer ✓", syntax("Bearer ✓", 7, "a parameter name")),
            (
                "Bearer a=1, ;",
                syntax("Bearer a=1, ;", 12, "an auth scheme"),
            ),
            (
                "Bearer realm=a, REALM=b",
                ChallengeError::DuplicateParam {
                    scheme: "Bearer".to_owned(),
                    name: "realm".to_owned(),
                },
            ),
        ];
        for (header, expected) in cases {
            assert_eq!(parse_challenges(header), Err(expected), "{header:?}");
        }
        let long = format!("Basic realm=\"{}\"", "a".repeat(MAX_HEADER_LEN));
        assert_eq!(
            parse_challenges(&long),
            Err(ChallengeError::TooLong { len: long.len() })
        );
        assert_eq!(
            parse_challenges_bytes(b"Basic realm=\"\xff\""),
            Err(ChallengeError::NotUtf8)
        );
    }

    #[test]
    fn bearer_helper_reads_realm_service_scope_and_error() {
        let c = parse_challenges(
            r#"Bearer realm="https://auth.example/token",service="reg",scope="repository:a/b:pull,push registry:catalog:*",error="insufficient_scope""#,
        )
        .unwrap();
        let b = c[0].bearer().unwrap();
        assert_eq!(b.realm, "https://auth.example/token");
        assert_eq!(b.service.as_deref(), Some("reg"));
        assert_eq!(b.error, Some(BearerError::InsufficientScope));
        let scopes = b.scopes().unwrap();
        assert_eq!(scopes, vec![Scope::push("a/b").unwrap(), Scope::catalog()]);
    }

    #[test]
    fn bearer_helper_requires_a_realm_and_the_right_scheme() {
        let c = parse_challenges("Bearer service=x, Basic realm=y").unwrap();
        assert_eq!(
            c[0].bearer(),
            Err(ChallengeError::MissingParam {
                scheme: "Bearer".to_owned(),
                param: "realm"
            })
        );
        assert_eq!(
            c[1].bearer(),
            Err(ChallengeError::WrongScheme {
                expected: "Bearer",
                scheme: "Basic".to_owned()
            })
        );
        assert_eq!(c[1].basic().unwrap().realm.as_deref(), Some("y"));
        assert_eq!(
            parse_challenges("BASIC").unwrap()[0].basic().unwrap().realm,
            None
        );
        let b = parse_challenges("Bearer realm=r").unwrap()[0]
            .bearer()
            .unwrap();
        assert_eq!((b.service, b.scope, b.error), (None, None, None));
    }

    #[test]
    fn bearer_error_codes_map_to_variants() {
        for (code, err) in [
            ("invalid_request", BearerError::InvalidRequest),
            ("invalid_token", BearerError::InvalidToken),
            ("insufficient_scope", BearerError::InsufficientScope),
            (
                "something_else",
                BearerError::Other("something_else".to_owned()),
            ),
        ] {
            assert_eq!(BearerError::from_code(code), err);
            assert_eq!(err.as_str(), code);
        }
    }

    #[test]
    fn scopes_parse_and_display() {
        let cases = [
            (
                "repository:foo/bar:pull,push",
                "repository",
                None,
                "foo/bar",
                vec!["pull", "push"],
                "repository:foo/bar:pull,push",
            ),
            (
                "repository:foo/bar:push,pull,push",
                "repository",
                None,
                "foo/bar",
                vec!["pull", "push"],
                "repository:foo/bar:pull,push",
            ),
            (
                "repository(plugin):x:pull",
                "repository",
                Some("plugin"),
                "x",
                vec!["pull"],
                "repository(plugin):x:pull",
            ),
            (
                "registry:catalog:*",
                "registry",
                None,
                "catalog",
                vec!["*"],
                "registry:catalog:*",
            ),
            (
                "repository:localhost:5000/foo:pull",
                "repository",
                None,
                "localhost:5000/foo",
                vec!["pull"],
                "repository:localhost:5000/foo:pull",
            ),
            (
                "a.b-c_d:n:x-y_z",
                "a.b-c_d",
                None,
                "n",
                vec!["x-y_z"],
                "a.b-c_d:n:x-y_z",
            ),
        ];
        for (input, ty, class, name, actions, display) in cases {
            let s: Scope = input.parse().unwrap();
            assert_eq!(s.resource_type(), ty, "{input}");
            assert_eq!(s.class(), class, "{input}");
            assert_eq!(s.name(), name, "{input}");
            assert_eq!(s.actions().collect::<Vec<_>>(), actions, "{input}");
            assert_eq!(s.to_string(), display, "{input}");
            assert_eq!(display.parse::<Scope>(), Ok(s), "{input}");
        }
    }

    #[test]
    fn malformed_scopes_fail_with_the_pinned_error() {
        let format = |s: &str| ScopeError::Format {
            scope: s.to_owned(),
        };
        let ty = |t: &str, s: &str| ScopeError::ResourceType {
            resource_type: t.to_owned(),
            scope: s.to_owned(),
        };
        let name = |n: &str, s: &str| ScopeError::ResourceName {
            name: n.to_owned(),
            scope: s.to_owned(),
        };
        let action = |a: &str, s: &str| ScopeError::Action {
            action: a.to_owned(),
            scope: s.to_owned(),
        };
        let cases = [
            ("", format("")),
            ("repository", format("repository")),
            ("repository:foo", format("repository:foo")),
            (":foo:pull", ty("", ":foo:pull")),
            (
                "Repository:foo:pull",
                ty("Repository", "Repository:foo:pull"),
            ),
            (
                "repository(:foo:pull",
                ty("repository(", "repository(:foo:pull"),
            ),
            (
                "repository(plugin:foo:pull",
                ty("repository(plugin", "repository(plugin:foo:pull"),
            ),
            (
                "repository():foo:pull",
                ty("repository()", "repository():foo:pull"),
            ),
            ("repo..x:foo:pull", ty("repo..x", "repo..x:foo:pull")),
            ("repository::pull", name("", "repository::pull")),
            ("repository:a\"b:pull", name("a\"b", "repository:a\"b:pull")),
            ("repository:a b:pull", name("a b", "repository:a b:pull")),
            ("repository:foo:", action("", "repository:foo:")),
            ("repository:foo:pull,", action("", "repository:foo:pull,")),
            (
                "repository:foo:pu ll",
                action("pu ll", "repository:foo:pu ll"),
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(input.parse::<Scope>(), Err(expected), "{input:?}");
        }
        assert!(matches!(
            Scope::new("repository", "a", Vec::<&str>::new()),
            Err(ScopeError::Action { .. })
        ));
        assert!(matches!(
            Scope::new("Repo", "a", ["pull"]),
            Err(ScopeError::ResourceType { .. })
        ));
        assert!(matches!(
            parse_scopes("repository:a:pull bogus"),
            Err(ScopeError::Format { .. })
        ));
    }

    #[test]
    fn merging_unions_actions_per_resource() {
        let merged = merge_scopes([
            Scope::pull("a").unwrap(),
            Scope::pull("b").unwrap(),
            Scope::repository("a", ["push"]).unwrap(),
            "repository(plugin):a:delete".parse().unwrap(),
            Scope::catalog(),
            Scope::repository("a", ["pull", "delete"]).unwrap(),
        ]);
        let text: Vec<String> = merged.iter().map(Scope::to_string).collect();
        assert_eq!(
            text,
            [
                "repository:a:delete,pull,push",
                "repository:b:pull",
                "repository(plugin):a:delete",
                "registry:catalog:*"
            ]
        );
        let mut a = Scope::pull("a").unwrap();
        assert!(!a.merge(&Scope::push("b").unwrap()));
        assert_eq!(a.to_string(), "repository:a:pull");
    }

    #[test]
    fn covers_checks_resource_and_actions() {
        let push = Scope::push("a").unwrap();
        let pull = Scope::pull("a").unwrap();
        assert!(push.covers(&pull));
        assert!(!pull.covers(&push));
        assert!(!push.covers(&Scope::pull("b").unwrap()));
        let star = Scope::repository("a", ["*"]).unwrap();
        assert!(star.covers(&push));
    }

    fn param_value() -> impl Strategy<Value = String> {
        "[ -~\t✓é]{0,20}"
    }

    fn challenge() -> impl Strategy<Value = Challenge> {
        let params = proptest::collection::btree_map("[a-z][a-z0-9_-]{0,8}", param_value(), 0..5);
        prop_oneof![
            ("[A-Za-z][A-Za-z0-9-]{0,10}", params).prop_map(|(scheme, params)| Challenge {
                scheme,
                params: params.into_iter().collect(),
                token68: None,
            }),
            (
                "[A-Za-z][A-Za-z0-9-]{0,10}",
                "[A-Za-z0-9._~+/-]{1,20}={0,2}"
            )
                .prop_map(|(scheme, t)| Challenge {
                    scheme,
                    params: Vec::new(),
                    token68: Some(t),
                }),
        ]
    }

    proptest! {
        #[test]
        fn displayed_challenges_parse_back(challenges in proptest::collection::vec(challenge(), 1..4)) {
            let header = challenges.iter().map(Challenge::to_string).collect::<Vec<_>>().join(", ");
            prop_assert_eq!(parse_challenges(&header), Ok(challenges));
        }

        #[test]
        fn arbitrary_headers_never_panic(header in "\\PC{0,200}") {
            let _ = parse_challenges(&header);
        }

        #[test]
        fn header_like_noise_never_panics(header in "[A-Za-z=\", \\\\\t/:;]{0,60}") {
            if let Ok(challenges) = parse_challenges(&header) {
                for c in &challenges {
                    let _ = c.bearer().map(|b| b.scopes());
                }
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse_challenges_bytes(&bytes);
        }

        #[test]
        fn arbitrary_scopes_never_panic_and_valid_ones_round_trip(s in "[a-z(),:*/ .-]{0,40}") {
            if let Ok(scope) = s.parse::<Scope>() {
                prop_assert_eq!(scope.to_string().parse::<Scope>(), Ok(scope));
            }
        }
    }
}
