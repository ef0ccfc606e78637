//! Who may do what: users, passwords and the actions granted per resource.

use serde::{Deserialize, Serialize};

/// One entry of a token's `access` claim: actions on one resource.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Access {
    /// The resource type, `repository` for images.
    #[serde(rename = "type")]
    pub resource_type: String,
    /// The resource name, for example `library/alpine`.
    pub name: String,
    /// The granted actions, for example `["pull"]`.
    pub actions: Vec<String>,
}

/// A requested scope: `type[(class)]:name:action,action`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Scope {
    pub(crate) resource_type: String,
    pub(crate) name: String,
    pub(crate) actions: Vec<String>,
}

impl Scope {
    /// Parses one scope; the name may itself hold colons (`host:port/repo`).
    pub(crate) fn parse(s: &str) -> Option<Scope> {
        let (ty, rest) = s.split_once(':')?;
        let (name, actions) = rest.rsplit_once(':')?;
        // `repository(plugin)` is a repository of class plugin.
        let ty = ty.split_once('(').map_or(ty, |(t, _)| t);
        if ty.is_empty() || name.is_empty() {
            return None;
        }
        Some(Scope {
            resource_type: ty.to_owned(),
            name: name.to_owned(),
            actions: actions
                .split(',')
                .filter(|a| !a.is_empty())
                .map(str::to_owned)
                .collect(),
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Subject {
    Anonymous,
    User(String),
}

#[derive(Clone, Debug)]
struct Rule {
    subject: Subject,
    resource_type: String,
    pattern: String,
    actions: Vec<String>,
}

/// The token server's access policy: users with passwords, and the actions each user
/// (or anyone, anonymous included) is granted on repositories.
///
/// Name patterns: `*` matches every name, `prefix/*` every name under `prefix/`,
/// anything else one exact name. The action `*` grants every requested action.
/// A token never holds more than was asked for: the granted actions are the requested
/// ones that the policy allows.
///
/// ```
/// use hoist_test_support::TokenPolicy;
/// let policy = TokenPolicy::new()
///     .user("reader", "reader-pw")
///     .grant("reader", "*", &["pull"])
///     .user("writer", "writer-pw")
///     .grant("writer", "*", &["pull", "push", "delete"])
///     .grant_anonymous("public/*", &["pull"]);
/// # let _ = policy;
/// ```
#[derive(Clone, Debug, Default)]
pub struct TokenPolicy {
    users: Vec<(String, String)>,
    rules: Vec<Rule>,
}

impl TokenPolicy {
    /// An empty policy: no users, nothing granted.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a user with a password (replacing an earlier password of that user).
    pub fn user(mut self, name: &str, password: &str) -> Self {
        self.users.retain(|(n, _)| n != name);
        self.users.push((name.to_owned(), password.to_owned()));
        self
    }

    /// Grants `actions` on the repositories matching `pattern` to `user`.
    pub fn grant(self, user: &str, pattern: &str, actions: &[&str]) -> Self {
        self.grant_resource(Some(user), "repository", pattern, actions)
    }

    /// Grants `actions` on the repositories matching `pattern` to everyone, anonymous
    /// requests included.
    pub fn grant_anonymous(self, pattern: &str, actions: &[&str]) -> Self {
        self.grant_resource(None, "repository", pattern, actions)
    }

    /// Grants `actions` on resources of any type (`registry:catalog:*`, say) to `user`,
    /// or to everyone when `user` is `None`.
    pub fn grant_resource(
        mut self,
        user: Option<&str>,
        resource_type: &str,
        pattern: &str,
        actions: &[&str],
    ) -> Self {
        self.rules.push(Rule {
            subject: user.map_or(Subject::Anonymous, |u| Subject::User(u.to_owned())),
            resource_type: resource_type.to_owned(),
            pattern: pattern.to_owned(),
            actions: actions.iter().map(|a| (*a).to_owned()).collect(),
        });
        self
    }

    /// Whether `user` exists and `password` is theirs.
    pub(crate) fn check_password(&self, user: &str, password: &str) -> bool {
        self.users.iter().any(|(u, p)| u == user && p == password)
    }

    /// Whether `user` exists.
    pub(crate) fn has_user(&self, user: &str) -> bool {
        self.users.iter().any(|(u, _)| u == user)
    }

    /// What `user` (`None`: anonymous) gets for the requested scopes: each scope's
    /// requested actions that some rule allows; scopes left with no action are dropped.
    pub(crate) fn authorize(&self, user: Option<&str>, scopes: &[Scope]) -> Vec<Access> {
        let mut out: Vec<Access> = Vec::new();
        for scope in scopes {
            let allowed: Vec<&str> = self
                .rules
                .iter()
                .filter(|r| match &r.subject {
                    Subject::Anonymous => true,
                    Subject::User(u) => Some(u.as_str()) == user,
                })
                .filter(|r| {
                    r.resource_type == scope.resource_type && name_matches(&r.pattern, &scope.name)
                })
                .flat_map(|r| r.actions.iter().map(String::as_str))
                .collect();
            let mut actions: Vec<String> = Vec::new();
            for action in &scope.actions {
                let ok = allowed.iter().any(|a| *a == "*" || a == action);
                if ok && !actions.contains(action) {
                    actions.push(action.clone());
                }
            }
            if actions.is_empty() {
                continue;
            }
            match out
                .iter_mut()
                .find(|a| a.resource_type == scope.resource_type && a.name == scope.name)
            {
                Some(existing) => {
                    for action in actions {
                        if !existing.actions.contains(&action) {
                            existing.actions.push(action);
                        }
                    }
                }
                None => out.push(Access {
                    resource_type: scope.resource_type.clone(),
                    name: scope.name.clone(),
                    actions,
                }),
            }
        }
        out
    }
}

fn name_matches(pattern: &str, name: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scopes(list: &[&str]) -> Vec<Scope> {
        list.iter().map(|s| Scope::parse(s).unwrap()).collect()
    }

    #[test]
    fn scope_parse_keeps_colons_in_the_name_and_drops_the_class() {
        let s = Scope::parse("repository(plugin):localhost:5000/a/b:pull,push").unwrap();
        assert_eq!(s.resource_type, "repository");
        assert_eq!(s.name, "localhost:5000/a/b");
        assert_eq!(s.actions, vec!["pull", "push"]);
        assert!(Scope::parse("repository:pull").is_none());
        assert!(Scope::parse("nonsense").is_none());
    }

    #[test]
    fn grants_never_exceed_the_request_or_the_policy() {
        let policy = TokenPolicy::new()
            .user("reader", "r")
            .grant("reader", "*", &["pull"])
            .user("writer", "w")
            .grant("writer", "team/*", &["*"])
            .grant_anonymous("public/app", &["pull"]);
        let asked = scopes(&[
            "repository:team/app:pull,push",
            "repository:public/app:pull,push",
        ]);
        let reader = policy.authorize(Some("reader"), &asked);
        assert_eq!(reader.len(), 2);
        assert!(reader.iter().all(|a| a.actions == vec!["pull"]));
        let writer = policy.authorize(Some("writer"), &asked);
        assert_eq!(writer[0].actions, vec!["pull", "push"]);
        assert_eq!(writer[1].actions, vec!["pull"]);
        let anonymous = policy.authorize(None, &asked);
        assert_eq!(anonymous.len(), 1);
        assert_eq!(anonymous[0].name, "public/app");
        assert!(
            policy
                .authorize(Some("writer"), &scopes(&["repository:other:pull"]))
                .is_empty()
        );
    }

    #[test]
    fn passwords_are_checked_per_user() {
        let policy = TokenPolicy::new().user("a", "1").user("a", "2");
        assert!(policy.check_password("a", "2"));
        assert!(!policy.check_password("a", "1"));
        assert!(!policy.check_password("b", "2"));
    }
}
