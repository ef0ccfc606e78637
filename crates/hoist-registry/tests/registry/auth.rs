use crate::*;
use hoist_registry::Error;
use hoist_registry::auth::credentials::Credentials;
use hoist_test_support::{TokenGrant, TokenPolicy};

fn client_with(host: &str, creds: Option<Credentials>) -> RegistryClient {
    let mut b = RegistryClient::builder();
    if let Some(c) = creds {
        b = b.credentials(host, c);
    }
    b.build().unwrap()
}

async fn repo_on(registry: &Registry, name: &str, creds: Option<Credentials>) -> Repository {
    let client = client_with(&registry.host(), creds);
    let ep = client.resolve(&registry.host()).await.unwrap();
    assert_eq!(
        ep.scheme,
        Scheme::Http,
        "a loopback registry falls back to plain HTTP"
    );
    client.repository(ep, name)
}

#[tokio::test]
async fn basic_auth_registry_refuses_anonymous_and_accepts_credentials() {
    let registry = Registry::start_with_basic_auth("tester", "s3cret")
        .await
        .unwrap();
    let anon = repo_on(&registry, "t/basic", None).await;
    let err = anon.start_upload().await.unwrap_err();
    assert!(err.is_denied(), "{err}");
    assert!(err.to_string().contains("hoist login"), "{err}");

    let wrong = repo_on(
        &registry,
        "t/basic",
        Some(Credentials::basic("tester", "nope")),
    )
    .await;
    assert!(wrong.tags(None).await.unwrap_err().is_denied());

    let repo = repo_on(
        &registry,
        "t/basic",
        Some(Credentials::basic("tester", "s3cret")),
    )
    .await;
    let (_, d) = push_image(&repo, "v1", 50).await;
    assert_eq!(repo.get_manifest("v1").await.unwrap().digest, d);
}

fn policy() -> TokenPolicy {
    TokenPolicy::new()
        .user("reader", "reader-pw")
        .grant("reader", "*", &["pull"])
        .user("writer", "writer-pw")
        .grant("writer", "*", &["pull", "push", "delete"])
        .grant_anonymous("public/*", &["pull"])
}

#[tokio::test]
async fn token_auth_grants_pull_to_readers_and_push_to_writers_only() {
    let registry = Registry::start_with_token_auth(policy()).await.unwrap();
    let writer = repo_on(
        &registry,
        "team/app",
        Some(Credentials::basic("writer", "writer-pw")),
    )
    .await;
    let (_, d) = push_image(&writer, "v1", 51).await;

    let reader = repo_on(
        &registry,
        "team/app",
        Some(Credentials::basic("reader", "reader-pw")),
    )
    .await;
    assert_eq!(reader.get_manifest("v1").await.unwrap().digest, d);
    let err = reader.start_upload().await.unwrap_err();
    assert!(err.is_denied(), "a pull token cannot push: {err}");
    let server = registry.token_server().unwrap();
    let last = server.last_request().unwrap();
    assert!(
        last.scopes
            .iter()
            .any(|s| s == "repository:team/app:pull,push"),
        "{:?}",
        last.scopes
    );

    let anonymous = repo_on(&registry, "team/app", None).await;
    assert!(anonymous.get_manifest("v1").await.unwrap_err().is_denied());
}

#[tokio::test]
async fn tokens_are_cached_per_scope_and_not_fetched_per_request() {
    let registry = Registry::start_with_token_auth(policy()).await.unwrap();
    let writer = repo_on(
        &registry,
        "team/cache",
        Some(Credentials::basic("writer", "writer-pw")),
    )
    .await;
    push_image(&writer, "v1", 52).await;
    let server = registry.token_server().unwrap();
    server.clear_requests();
    for _ in 0..5 {
        writer.get_manifest("v1").await.unwrap();
        writer.tags(None).await.unwrap();
    }
    // The push,pull token obtained for the push covers every pull.
    assert_eq!(server.request_count(), 0, "{:?}", server.requests());
    // A new repository needs a new scope: exactly one more token.
    let other = writer.sibling("team/other");
    push_image(&other, "v1", 53).await;
    other.get_manifest("v1").await.unwrap();
    assert_eq!(server.request_count(), 1, "{:?}", server.requests());
}

#[tokio::test]
async fn a_token_the_registry_rejects_is_replaced_once_and_the_request_succeeds() {
    let registry = Registry::start_with_token_auth(policy()).await.unwrap();
    let server = registry.token_server().unwrap();
    let writer = repo_on(
        &registry,
        "team/refresh",
        Some(Credentials::basic("writer", "writer-pw")),
    )
    .await;
    push_image(&writer, "v1", 54).await;
    // A fresh client: its first token is signed by an untrusted key, so the registry answers 401.
    let reader = repo_on(
        &registry,
        "team/refresh",
        Some(Credentials::basic("reader", "reader-pw")),
    )
    .await;
    server.clear_requests();
    server.sign_untrusted_next(1);
    reader.get_manifest("v1").await.unwrap();
    assert_eq!(
        server.request_count(),
        2,
        "one rejected token, one good one"
    );
}

#[tokio::test]
async fn a_failing_token_service_is_a_retryable_error() {
    let registry = Registry::start_with_token_auth(policy()).await.unwrap();
    let server = registry.token_server().unwrap();
    let reader = repo_on(&registry, "public/x", None).await;
    server.fail_next(1);
    let err = reader.tags(None).await.unwrap_err();
    assert!(matches!(err, Error::Token { .. }), "{err}");
    assert!(err.is_retryable(), "{err}");
    // The next attempt goes through (to a 404: the repository is empty).
    let err = reader.tags(None).await.unwrap_err();
    assert!(err.is_not_found(), "{err}");
}

#[tokio::test]
async fn login_obtains_a_refresh_token_that_later_authenticates_with_oauth() {
    let registry = Registry::start_with_token_auth(policy()).await.unwrap();
    let server = registry.token_server().unwrap();
    let host = registry.host();
    let client = client_with(&host, Some(Credentials::basic("writer", "writer-pw")));
    let refresh = client.login(&host).await.unwrap().expect("a refresh token");

    let client = client_with(
        &host,
        Some(Credentials::identity_token(
            Some("writer".into()),
            refresh.clone(),
        )),
    );
    let ep = client.resolve(&host).await.unwrap();
    let repo = client.repository(ep, "team/oauth");
    server.clear_requests();
    push_image(&repo, "v1", 55).await;
    let reqs = server.requests();
    assert!(!reqs.is_empty());
    assert!(
        reqs.iter().all(|r| r.grant == TokenGrant::RefreshToken),
        "{reqs:?}"
    );
}

#[tokio::test]
async fn login_with_wrong_credentials_fails_as_denied() {
    let registry = Registry::start_with_token_auth(policy()).await.unwrap();
    let host = registry.host();
    let client = client_with(&host, Some(Credentials::basic("writer", "wrong")));
    let err = client.login(&host).await.unwrap_err();
    assert!(err.is_denied(), "{err}");
    let registry = Registry::start_with_basic_auth("u", "p").await.unwrap();
    let host = registry.host();
    let client = client_with(&host, Some(Credentials::basic("u", "bad")));
    assert!(client.login(&host).await.unwrap_err().is_denied());
    let client = client_with(&host, Some(Credentials::basic("u", "p")));
    assert_eq!(client.login(&host).await.unwrap(), None);
}
