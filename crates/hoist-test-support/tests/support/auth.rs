//! Basic and token authentication against the real registry.

use std::time::Duration;

use base64::Engine as _;
use hoist_test_support::{Registry, TokenGrant, TokenPolicy, TokenServer};
use http::{Method, StatusCode};

use crate::client;
use crate::content;
use crate::registry::basic_header;

fn policy() -> TokenPolicy {
    TokenPolicy::new()
        .user("reader", "reader-pw")
        .grant("reader", "*", &["pull"])
        .user("writer", "writer-pw")
        .grant("writer", "*", &["pull", "push"])
        .grant_anonymous("public/*", &["pull"])
}

/// Fetches a token with `GET /token`, as a Docker client does.
async fn token(server: &TokenServer, scopes: &[&str], creds: Option<(&str, &str)>) -> String {
    let mut url = format!("{}?service={}", server.realm(), server.service());
    for scope in scopes {
        url.push_str(&format!("&scope={scope}"));
    }
    let mut req = client::get(&url);
    if let Some((user, password)) = creds {
        req = req.basic(user, password);
    }
    let reply = req.send().await;
    assert_eq!(reply.status, StatusCode::OK, "token: {reply:?}");
    let json = reply.json();
    assert_eq!(json["token"], json["access_token"]);
    json["token"].as_str().unwrap().to_owned()
}

/// The `access` claim of a JWT, read without verifying it.
fn access_of(jwt: &str) -> serde_json::Value {
    let payload = jwt.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    let claims: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    claims["access"].clone()
}

fn bearer(t: &str) -> String {
    format!("Bearer {t}")
}

#[tokio::test]
async fn basic_auth_demands_credentials() {
    let registry = Registry::start_with_basic_auth("tester", "s3cret")
        .await
        .unwrap();
    assert_eq!(registry.basic_credentials(), Some(("tester", "s3cret")));
    let v2 = format!("{}/v2/", registry.url());
    let anonymous = client::get(&v2).send().await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    assert!(
        anonymous
            .header("www-authenticate")
            .unwrap()
            .starts_with("Basic realm="),
        "{anonymous:?}"
    );
    let wrong = client::get(&v2).basic("tester", "wrong").send().await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    let right = client::get(&v2).basic("tester", "s3cret").send().await;
    assert_eq!(right.status, StatusCode::OK);
}

#[tokio::test]
async fn token_auth_challenges_with_the_token_servers_realm() {
    let registry = Registry::start_with_token_auth(policy()).await.unwrap();
    let server = registry.token_server().unwrap();
    let reply = client::get(&format!("{}/v2/", registry.url())).send().await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    let challenge = reply.header("www-authenticate").unwrap();
    assert!(challenge.starts_with("Bearer "), "{challenge}");
    assert!(
        challenge.contains(&format!("realm=\"{}\"", server.realm())),
        "{challenge}"
    );
    assert!(
        challenge.contains(&format!("service=\"{}\"", server.service())),
        "{challenge}"
    );
}

#[tokio::test]
async fn a_pull_token_reads_manifests_but_cannot_push() {
    let registry = Registry::start_with_token_auth(policy()).await.unwrap();
    let server = registry.token_server().unwrap();
    let base = registry.url();
    let scope = "repository:team/app:pull,push";

    let writer = token(server, &[scope], Some(("writer", "writer-pw"))).await;
    let image = content::push_image(&base, "team/app", "v1", 2048, Some(&bearer(&writer))).await;

    // The reader asked for pull and push, and got pull only.
    let reader = token(server, &[scope], Some(("reader", "reader-pw"))).await;
    let access = access_of(&reader);
    assert_eq!(access[0]["name"], "team/app");
    assert_eq!(access[0]["actions"], serde_json::json!(["pull"]));
    let last = server.last_request().unwrap();
    assert_eq!(last.grant, TokenGrant::Basic);
    assert_eq!(last.username.as_deref(), Some("reader"));

    let index = client::get(&format!("{base}/v2/team/app/manifests/v1-index"))
        .header("accept", content::OCI_INDEX)
        .bearer(&reader)
        .send()
        .await;
    assert_eq!(index.status, StatusCode::OK);
    assert_eq!(index.body, image.index);
    assert_eq!(
        index.header("docker-content-digest"),
        Some(image.index_digest.as_str())
    );
    let by_digest = client::get(&format!(
        "{base}/v2/team/app/manifests/{}",
        image.manifest_digest
    ))
    .header("accept", content::OCI_MANIFEST)
    .bearer(&reader)
    .send()
    .await;
    assert_eq!(by_digest.status, StatusCode::OK);
    assert_eq!(by_digest.body, image.manifest);
    let missing = client::get(&format!("{base}/v2/team/app/manifests/nope"))
        .bearer(&reader)
        .send()
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.json()["errors"][0]["code"], "MANIFEST_UNKNOWN");

    let without = client::get(&format!("{base}/v2/team/app/manifests/v1"))
        .send()
        .await;
    assert_eq!(without.status, StatusCode::UNAUTHORIZED);

    let push = client::req(Method::POST, &format!("{base}/v2/team/app/blobs/uploads/"))
        .bearer(&reader)
        .send()
        .await;
    assert!(
        push.status == StatusCode::UNAUTHORIZED || push.status == StatusCode::FORBIDDEN,
        "a pull token pushed: {push:?}"
    );
    let push = client::req(Method::POST, &format!("{base}/v2/team/app/blobs/uploads/"))
        .bearer(&writer)
        .send()
        .await;
    assert_eq!(push.status, StatusCode::ACCEPTED);
}

#[tokio::test]
async fn anonymous_pulls_only_where_the_policy_allows() {
    let registry = Registry::start_with_token_auth(policy()).await.unwrap();
    let server = registry.token_server().unwrap();
    let base = registry.url();

    let public = token(server, &["repository:public/app:pull"], None).await;
    assert_eq!(
        access_of(&public)[0]["actions"],
        serde_json::json!(["pull"])
    );
    assert_eq!(server.last_request().unwrap().grant, TokenGrant::Anonymous);
    assert!(!server.last_request().unwrap().had_credentials);
    let reply = client::get(&format!("{base}/v2/public/app/manifests/v1"))
        .bearer(&public)
        .send()
        .await;
    assert_eq!(
        reply.status,
        StatusCode::NOT_FOUND,
        "authorized, but absent"
    );

    let private = token(server, &["repository:team/app:pull"], None).await;
    assert!(access_of(&private).as_array().unwrap().is_empty());
    let reply = client::get(&format!("{base}/v2/team/app/manifests/v1"))
        .bearer(&private)
        .send()
        .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn the_token_server_counts_requests_and_fails_on_demand() {
    let server = TokenServer::start(policy()).await.unwrap();
    let url = format!(
        "{}?service={}&scope=repository:a:pull",
        server.realm(),
        server.service()
    );
    server.fail_next(2);
    for _ in 0..2 {
        let failed = client::get(&url).basic("reader", "reader-pw").send().await;
        assert_eq!(failed.status, StatusCode::INTERNAL_SERVER_ERROR);
    }
    let ok = client::get(&url).basic("reader", "reader-pw").send().await;
    assert_eq!(ok.status, StatusCode::OK);
    let bad = client::get(&url).basic("reader", "nope").send().await;
    assert_eq!(bad.status, StatusCode::UNAUTHORIZED);
    assert_eq!(server.request_count(), 4);
    let statuses: Vec<u16> = server.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![500, 500, 200, 401]);
    assert!(server.requests().iter().all(|r| r.had_credentials));
    assert_eq!(server.requests()[2].scopes, vec!["repository:a:pull"]);
    server.clear_requests();
    assert_eq!(server.request_count(), 0);
}

#[tokio::test]
async fn oauth_password_grant_hands_out_refresh_tokens_that_work() {
    let registry = Registry::start_with_token_auth(policy()).await.unwrap();
    let server = registry.token_server().unwrap();
    let service = server.service().to_owned();
    let form = |body: String| {
        client::req(Method::POST, &server.realm())
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
    };
    let first = form(format!(
        "grant_type=password&username=writer&password=writer-pw&service={service}\
         &scope=repository%3Ateam%2Fapp%3Apull&client_id=hoist&access_type=offline"
    ))
    .send()
    .await;
    assert_eq!(first.status, StatusCode::OK, "{first:?}");
    let json = first.json();
    let refresh = json["refresh_token"].as_str().unwrap().to_owned();
    assert_eq!(json["scope"], "repository:team/app:pull");
    assert!(server.last_request().unwrap().refresh_token_issued);

    let second = form(format!(
        "grant_type=refresh_token&refresh_token={refresh}&service={service}\
         &scope=repository%3Ateam%2Fapp%3Apull+repository%3Ateam%2Fapp%3Apush&client_id=hoist"
    ))
    .send()
    .await;
    assert_eq!(second.status, StatusCode::OK, "{second:?}");
    let json = second.json();
    assert!(json.get("refresh_token").is_none());
    let access = json["access_token"].as_str().unwrap();
    assert_eq!(
        access_of(access)[0]["actions"],
        serde_json::json!(["pull", "push"])
    );
    let record = server.last_request().unwrap();
    assert_eq!(record.grant, TokenGrant::RefreshToken);
    assert_eq!(record.username.as_deref(), Some("writer"));
    let push = client::req(
        Method::POST,
        &format!("{}/v2/team/app/blobs/uploads/", registry.url()),
    )
    .bearer(access)
    .send()
    .await;
    assert_eq!(push.status, StatusCode::ACCEPTED);

    let bad_password = form("grant_type=password&username=writer&password=x".into())
        .send()
        .await;
    assert_eq!(bad_password.status, StatusCode::UNAUTHORIZED);
    let bad_refresh = form("grant_type=refresh_token&refresh_token=forged".into())
        .send()
        .await;
    assert_eq!(bad_refresh.status, StatusCode::UNAUTHORIZED);
    let unsupported = form("grant_type=client_credentials".into()).send().await;
    assert_eq!(unsupported.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn tokens_carry_the_configured_lifetime() {
    let server = TokenServer::builder(policy())
        .expires_in(Duration::from_secs(7))
        .start()
        .await
        .unwrap();
    let url = format!(
        "{}?service={}&scope=repository:a:pull",
        server.realm(),
        server.service()
    );
    let json = client::get(&url).send().await.json();
    assert_eq!(json["expires_in"], 7);
    let issued_at = json["issued_at"].as_str().unwrap();
    assert!(
        issued_at.ends_with('Z') && issued_at.len() == 20,
        "{issued_at}"
    );
    let payload = json["token"].as_str().unwrap().split('.').nth(1).unwrap();
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        7
    );
    assert_eq!(claims["aud"], server.service());
    assert_eq!(claims["iss"], server.issuer());

    server.set_expires_in(Duration::from_secs(60));
    assert_eq!(client::get(&url).send().await.json()["expires_in"], 60);
}

#[tokio::test]
async fn tokens_signed_by_an_untrusted_key_are_rejected() {
    let registry = Registry::start_with_token_auth(policy()).await.unwrap();
    let server = registry.token_server().unwrap();
    let tags = format!("{}/v2/public/app/tags/list", registry.url());
    server.sign_untrusted_next(1);
    let bad = token(server, &["repository:public/app:pull"], None).await;
    let good = token(server, &["repository:public/app:pull"], None).await;
    let rejected = client::get(&tags).bearer(&bad).send().await;
    assert_eq!(rejected.status, StatusCode::UNAUTHORIZED);
    let accepted = client::get(&tags).bearer(&good).send().await;
    assert_eq!(
        accepted.status,
        StatusCode::NOT_FOUND,
        "authorized, no such repository"
    );
    assert_eq!(accepted.json()["errors"][0]["code"], "NAME_UNKNOWN");
}

#[tokio::test]
async fn a_basic_header_for_another_registry_is_not_a_token() {
    // Basic credentials sent to a token-auth registry are refused.
    let registry = Registry::start_with_token_auth(policy()).await.unwrap();
    let reply = client::get(&format!("{}/v2/", registry.url()))
        .auth(Some(&basic_header("writer", "writer-pw")))
        .send()
        .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
}
