//! `RegistryClient::get_foreign`: blobs at layer URLs outside any registry, fetched without
//! credentials, resumed with closed ranges.

use hoist_registry::auth::credentials::Credentials;
use hoist_test_support::{Answer, HostileServer};
use url::Url;

use crate::*;

#[tokio::test]
async fn foreign_blobs_resume_with_a_range_and_restart_when_it_is_ignored() {
    let (registry, repo) = plain("foreign/src").await;
    let data = blob(100_000, 3);
    let d = push(&repo, &data).await;
    // A real server that honours ranges: the registry's blob URL, fetched as a plain URL.
    let url = Url::parse(&format!("{}/v2/foreign/src/blobs/{d}", registry.url())).unwrap();
    let client = RegistryClient::builder().build().unwrap();
    let size = data.len() as u64;
    let whole = client.get_foreign(&url, 0, size).await.unwrap();
    assert_eq!(whole.start, 0);
    assert_eq!(read_all(whole.body).await, data.to_vec());
    let rest = client.get_foreign(&url, 60_000, size).await.unwrap();
    assert_eq!(rest.start, 60_000);
    assert_eq!(rest.total, Some(size));
    assert_eq!(read_all(rest.body).await, data[60_000..].to_vec());

    // A server that ignores ranges: the answer starts at byte 0, and says so.
    let served = data.clone();
    let ignoring = HostileServer::start(move |_, _| Answer::new("200 OK").body(served.to_vec()))
        .await
        .unwrap();
    let url = Url::parse(&format!("{}/layer", ignoring.url())).unwrap();
    let resp = client.get_foreign(&url, 60_000, size).await.unwrap();
    assert_eq!(resp.start, 0);
    assert_eq!(read_all(resp.body).await, data.to_vec());
}

#[tokio::test]
async fn foreign_requests_carry_no_credentials_even_for_a_host_that_has_some() {
    let server = HostileServer::start(|_, path| {
        if path == "/layer" {
            Answer::new("200 OK").body("bytes")
        } else {
            Answer::new("404 Not Found").body("")
        }
    })
    .await
    .unwrap();
    let client = RegistryClient::builder()
        .credentials(server.host(), Credentials::basic("u", "secret"))
        .build()
        .unwrap();
    let url = Url::parse(&format!("{}/layer", server.url())).unwrap();
    let resp = client.get_foreign(&url, 0, 5).await.unwrap();
    assert_eq!(read_all(resp.body).await, b"bytes");
    let missing = Url::parse(&format!("{}/absent", server.url())).unwrap();
    let err = client.get_foreign(&missing, 0, 5).await.unwrap_err();
    assert!(err.is_not_found(), "{err}");
    assert_eq!(server.requests(), 2);
    assert_eq!(server.requests_with_authorization(), 0);

    let ftp = Url::parse("ftp://127.0.0.1/layer").unwrap();
    assert!(client.get_foreign(&ftp, 0, 5).await.is_err());
}
