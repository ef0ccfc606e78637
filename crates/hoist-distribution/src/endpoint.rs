//! Where a pull or push goes: the endpoints of a registry, mirrors first, and the rules for
//! falling back from one to the next.
//!
//! A pull tries, in order, the mirrors configured for the image's registry ([`Registries`]) and
//! then the registry itself. [`get_repositories`] pings each (`GET /v2/`, through
//! [`RegistryClient::resolve`], which also picks HTTPS or, where allowed, HTTP) and keeps those
//! that answer; it fails only when none does. A push uses the registry alone
//! ([`push_repository`]): mirrors are read-only caches.
//!
//! [`should_fall_back`] decides whether a failed pull moves on to the next endpoint: never once
//! layer data has moved; from a mirror, on any failure the registry itself might not have; from
//! the registry, only when it could not be talked to at all. [`translate_pull_error`] turns the
//! registry's "not found" and "denied" answers into one error that says what to do.

use std::collections::HashMap;

use hoist_registry::error_body::ErrorCode;
use hoist_registry::{ImageRef, RegistryClient, Repository};
use http::StatusCode;

use crate::error::{Error, ErrorKind, Result};

/// Registry settings a pull needs beyond the client's: the mirrors of each registry.
#[derive(Debug, Clone, Default)]
pub struct Registries {
    mirrors: HashMap<String, Vec<String>>,
}

impl Registries {
    /// No mirrors.
    pub fn new() -> Registries {
        Registries::default()
    }

    /// Adds `mirror` (`host[:port]`, or a URL whose scheme and path are ignored: the scheme is
    /// chosen like any registry's, see [`RegistryClient::resolve`]) for `registry` (as written in
    /// references: `docker.io`, `registry.example.com:5000`). Mirrors are tried in the order added.
    pub fn with_mirror(mut self, registry: &str, mirror: &str) -> Registries {
        self.add_mirror(registry, mirror);
        self
    }

    /// Adds a mirror (see [`Registries::with_mirror`]).
    pub fn add_mirror(&mut self, registry: &str, mirror: &str) {
        let host = mirror_host(mirror);
        if host.is_empty() {
            return;
        }
        let list = self
            .mirrors
            .entry(registry.to_ascii_lowercase())
            .or_default();
        if !list.contains(&host) {
            list.push(host);
        }
    }

    /// The mirrors of `registry`, in order.
    pub fn mirrors(&self, registry: &str) -> &[String] {
        self.mirrors
            .get(&registry.to_ascii_lowercase())
            .map_or(&[], Vec::as_slice)
    }
}

/// `host[:port]` of a mirror given as a host or a URL.
fn mirror_host(mirror: &str) -> String {
    let s = mirror.trim();
    let s = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
        .unwrap_or(s);
    s.split('/').next().unwrap_or("").to_ascii_lowercase()
}

/// One place to pull an image from.
#[derive(Debug, Clone)]
pub struct RepositoryEndpoint {
    /// The repository on this endpoint.
    pub repository: Repository,
    /// Whether the endpoint is a mirror rather than the registry itself.
    pub mirror: bool,
}

impl RepositoryEndpoint {
    /// The endpoint's host (`host[:port]`).
    pub fn host(&self) -> &str {
        &self.repository.endpoint().host
    }
}

/// The hosts a pull of `reference` tries, in order: mirrors, then the registry's API host.
pub fn pull_hosts(registries: &Registries, reference: &ImageRef) -> Vec<(String, bool)> {
    let mut hosts: Vec<(String, bool)> = registries
        .mirrors(reference.registry())
        .iter()
        .map(|m| (m.clone(), true))
        .collect();
    let own = reference.api_host().to_owned();
    hosts.retain(|(h, _)| *h != own);
    hosts.push((own, false));
    hosts
}

/// The repositories to pull `reference` from, mirrors first, leaving out endpoints that do not
/// answer a ping. Fails with [`Error::Unreachable`] only when none answers.
pub async fn get_repositories(
    client: &RegistryClient,
    registries: &Registries,
    reference: &ImageRef,
) -> Result<Vec<RepositoryEndpoint>> {
    let mut found = Vec::new();
    let mut last = None;
    for (host, mirror) in pull_hosts(registries, reference) {
        match client.resolve(&host).await {
            Ok(endpoint) => found.push(RepositoryEndpoint {
                repository: client.repository(endpoint, reference.repository()),
                mirror,
            }),
            Err(e) => {
                tracing::warn!(host, mirror, error = %e, "endpoint unreachable; skipping it");
                last = Some(e);
            }
        }
    }
    match (found.is_empty(), last) {
        (true, Some(source)) => Err(Error::Unreachable {
            registry: reference.registry().to_owned(),
            source,
        }),
        _ => Ok(found),
    }
}

/// The repository to push `reference` to: the registry itself, never a mirror.
pub async fn push_repository(client: &RegistryClient, reference: &ImageRef) -> Result<Repository> {
    let endpoint = client
        .resolve(reference.api_host())
        .await
        .map_err(|source| Error::Unreachable {
            registry: reference.registry().to_owned(),
            source,
        })?;
    Ok(client.repository(endpoint, reference.repository()))
}

/// Whether the registry answered (as opposed to not being reachable or not completing an
/// answer): such errors are the registry's word on the request.
fn registry_answered(e: &hoist_registry::Error) -> bool {
    use hoist_registry::Error as R;
    !matches!(e, R::Transport { .. } | R::Stalled { .. })
}

/// Whether a pull that failed with `err` on an endpoint moves on to the next one.
///
/// Never once layer data has moved (`data_moved`): the pull has committed to this endpoint.
/// From a mirror: on any failure except a cancellation or a fault in the request itself (a
/// mirror may lack the image, refuse us, or serve something broken; the registry may not).
/// From the registry: only when it could not be talked to (connection, timeout).
pub fn should_fall_back(err: &Error, data_moved: bool, from_mirror: bool) -> bool {
    if data_moved {
        return false;
    }
    if from_mirror {
        return !matches!(err.kind(), ErrorKind::Cancelled | ErrorKind::InvalidInput);
    }
    match err {
        Error::Unreachable { .. } => true,
        _ => err.registry_error().is_some_and(|r| !registry_answered(r)),
    }
}

/// Whether a registry error means "no such image, or you may not see it".
fn not_found_or_denied(e: &hoist_registry::Error) -> bool {
    matches!(
        e.status(),
        Some(StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN | StatusCode::NOT_FOUND)
    ) || matches!(e, hoist_registry::Error::Unauthorized { .. })
        || e.error_codes().any(|c| {
            matches!(
                c,
                ErrorCode::Denied
                    | ErrorCode::Unauthorized
                    | ErrorCode::ManifestUnknown
                    | ErrorCode::NameUnknown
            )
        })
}

/// Converts the error of a whole pull into what the user should see: a registry's "not found"
/// or "denied" (`DENIED`, `MANIFEST_UNKNOWN`, `NAME_UNKNOWN`, 401, 403, 404) becomes
/// [`Error::NotFoundOrDenied`], naming the image and suggesting `hoist login`. Other errors are
/// returned unchanged.
pub fn translate_pull_error(err: Error, reference: &ImageRef) -> Error {
    match err {
        Error::Registry { source, .. } if not_found_or_denied(&source) => Error::NotFoundOrDenied {
            reference: reference.familiar(),
            registry: reference.registry().to_owned(),
            source,
        },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hoist_registry::error_body::RegistryError;

    fn status(code: u16, codes: &[ErrorCode]) -> hoist_registry::Error {
        hoist_registry::Error::Status {
            method: "GET".into(),
            url: "http://r/v2/a/manifests/b".into(),
            status: StatusCode::from_u16(code).unwrap(),
            details: codes
                .iter()
                .map(|c| RegistryError {
                    code: c.clone(),
                    message: "m".into(),
                    detail: None,
                })
                .collect(),
            retry_after: None,
        }
    }

    fn transport() -> hoist_registry::Error {
        hoist_registry::Error::Stalled {
            url: "http://r/v2/".into(),
            after: std::time::Duration::from_secs(1),
        }
    }

    fn reg(e: hoist_registry::Error) -> Error {
        Error::registry("fetching manifest", e)
    }

    #[test]
    fn mirrors_come_first_then_the_registry_api_host() {
        let r = Registries::new()
            .with_mirror("docker.io", "https://mirror.example.com/")
            .with_mirror("DOCKER.IO", "mirror2:5000")
            .with_mirror("docker.io", "mirror.example.com");
        let alpine = ImageRef::parse("alpine").unwrap();
        assert_eq!(
            pull_hosts(&r, &alpine),
            vec![
                ("mirror.example.com".to_owned(), true),
                ("mirror2:5000".to_owned(), true),
                ("registry-1.docker.io".to_owned(), false),
            ]
        );
        let other = ImageRef::parse("127.0.0.1:5000/a").unwrap();
        assert_eq!(
            pull_hosts(&r, &other),
            vec![("127.0.0.1:5000".to_owned(), false)]
        );
    }

    #[test]
    fn nothing_falls_back_once_data_moved() {
        assert!(!should_fall_back(&reg(transport()), true, true));
        assert!(!should_fall_back(&reg(transport()), true, false));
    }

    #[test]
    fn registry_answers_fall_back_only_from_mirrors() {
        let e = reg(status(404, &[ErrorCode::ManifestUnknown]));
        assert!(should_fall_back(&e, false, true));
        assert!(!should_fall_back(&e, false, false));
        let e = reg(status(503, &[]));
        assert!(should_fall_back(&e, false, true));
        assert!(!should_fall_back(&e, false, false));
    }

    #[test]
    fn unreachable_endpoints_fall_back_from_anywhere() {
        assert!(should_fall_back(&reg(transport()), false, false));
        assert!(should_fall_back(&reg(transport()), false, true));
    }

    #[test]
    fn broken_content_falls_back_from_mirrors_only_and_bad_input_never() {
        let digest = hoist_registry::digest::sha256_of(b"x");
        let e = Error::InvalidManifest {
            digest,
            reason: "bad".into(),
        };
        assert!(should_fall_back(&e, false, true));
        assert!(!should_fall_back(&e, false, false));
        let e = Error::ReservedName { name: "x".into() };
        assert!(!should_fall_back(&e, false, true));
        assert!(!should_fall_back(&Error::Cancelled, false, true));
    }

    #[test]
    fn not_found_and_denied_answers_suggest_login() {
        let r = ImageRef::parse("127.0.0.1:5000/team/app:1").unwrap();
        for e in [
            status(404, &[ErrorCode::ManifestUnknown]),
            status(404, &[ErrorCode::NameUnknown]),
            status(403, &[ErrorCode::Denied]),
            status(401, &[]),
            status(404, &[]),
            status(400, &[ErrorCode::Denied]),
        ] {
            let t = translate_pull_error(reg(e), &r);
            assert!(matches!(t, Error::NotFoundOrDenied { .. }), "{t}");
            assert_eq!(t.kind(), ErrorKind::NotFoundOrDenied);
            let msg = t.to_string();
            assert!(msg.contains("not found or access denied"), "{msg}");
            assert!(msg.contains("hoist login 127.0.0.1:5000"), "{msg}");
            assert!(msg.contains("127.0.0.1:5000/team/app:1"), "{msg}");
        }
    }

    #[test]
    fn other_errors_are_not_translated() {
        let r = ImageRef::parse("a").unwrap();
        let t = translate_pull_error(reg(status(500, &[])), &r);
        assert!(matches!(t, Error::Registry { .. }), "{t}");
        assert_eq!(t.kind(), ErrorKind::Network);
        let t = translate_pull_error(Error::Cancelled, &r);
        assert!(matches!(t, Error::Cancelled));
    }
}
