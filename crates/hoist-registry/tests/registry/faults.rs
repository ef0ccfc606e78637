//! The client's behaviour under each fault the proxy injects: the right typed error (retryable or
//! not, with `Retry-After`), a clean restart, or correct data; never wrong bytes, never a hang.

use std::time::Duration;

use crate::*;
use hoist_registry::auth::credentials::Credentials;
use hoist_registry::{Chunk, Error};
use hoist_test_support::{Action, FaultProxy, Matcher, Rule};

struct Setup {
    _registry: Registry,
    proxy: FaultProxy,
    repo: Repository,
    data: Bytes,
    digest: Digest,
}

/// A registry with one 256 KiB blob, behind a proxy; the client talks to the proxy with a 1 s
/// stall timeout.
async fn setup(name: &str) -> Setup {
    let (registry, direct) = plain(name).await;
    let data = blob(256 * 1024, 60);
    let digest = push(&direct, &data).await;
    let proxy = FaultProxy::start(&registry.url()).await.unwrap();
    let client = RegistryClient::builder()
        .stall_timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let repo = client.repository(Endpoint::new(proxy.host(), Scheme::Http), name);
    Setup {
        _registry: registry,
        proxy,
        repo,
        data,
        digest,
    }
}

async fn read_result(resp: hoist_registry::BlobResponse) -> Result<Vec<u8>, Error> {
    use futures_util::StreamExt;
    let mut body = resp.body;
    let mut out = Vec::new();
    while let Some(c) = body.next().await {
        out.extend_from_slice(&c?);
    }
    Ok(out)
}

#[tokio::test]
async fn a_connection_reset_mid_body_is_a_retryable_transport_error() {
    let s = setup("f/reset").await;
    s.proxy.add_rule(
        Rule::get(
            "/blobs/",
            Action::Reset {
                after_bytes: 10_000,
            },
        )
        .once(),
    );
    let resp = s.repo.get_blob(&s.digest).await.unwrap();
    let err = read_result(resp).await.unwrap_err();
    assert!(matches!(err, Error::Transport { .. }), "{err}");
    assert!(err.is_retryable());
    // The next request is not faulted and gets everything.
    let resp = s.repo.get_blob(&s.digest).await.unwrap();
    assert_eq!(read_result(resp).await.unwrap(), s.data.to_vec());
}

#[tokio::test]
async fn server_errors_are_retryable_and_carry_retry_after() {
    let s = setup("f/status").await;
    for (status, retry_after, want) in [
        (500, None, None),
        (502, None, None),
        (503, None, None),
        (503, Some("3"), Some(Duration::from_secs(3))),
        (429, Some("7"), Some(Duration::from_secs(7))),
    ] {
        let action = match retry_after {
            Some(v) => Action::status_with_retry_after(status, v),
            None => Action::status(status),
        };
        s.proxy.add_rule(Rule::get("/manifests/", action).once());
        let err = s.repo.get_manifest("latest").await.unwrap_err();
        assert_eq!(err.status().map(|s| s.as_u16()), Some(status), "{err}");
        assert!(err.is_retryable(), "{status}: {err}");
        assert_eq!(err.retry_after(), want, "{status}");
        s.proxy.clear_rules();
    }
}

#[tokio::test]
async fn a_stalled_body_fails_after_the_stall_timeout_instead_of_hanging() {
    let s = setup("f/stall").await;
    s.proxy.add_rule(
        Rule::get(
            "/blobs/",
            Action::Stall {
                after_bytes: 1000,
                duration: None,
            },
        )
        .once(),
    );
    let started = std::time::Instant::now();
    let resp = s.repo.get_blob(&s.digest).await.unwrap();
    let err = read_result(resp).await.unwrap_err();
    assert!(matches!(err, Error::Stalled { .. }), "{err}");
    assert!(err.is_retryable());
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_manifest_whose_body_never_starts_times_out() {
    let s = setup("f/stall-headers").await;
    push_image(&s.repo, "latest", 63).await;
    s.proxy.add_rule(
        Rule::get(
            "/manifests/",
            Action::Stall {
                after_bytes: 0,
                duration: None,
            },
        )
        .once(),
    );
    let err = s.repo.get_manifest("latest").await.unwrap_err();
    assert!(matches!(err, Error::Stalled { .. }), "{err}");
}

#[tokio::test]
async fn a_body_truncated_under_its_content_length_is_an_error_not_a_short_blob() {
    let s = setup("f/truncate").await;
    s.proxy
        .add_rule(Rule::get("/blobs/", Action::Truncate { after_bytes: 5000 }).once());
    let resp = s.repo.get_blob(&s.digest).await.unwrap();
    let err = read_result(resp).await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
}

#[tokio::test]
async fn a_flipped_byte_is_caught_by_digest_verification() {
    let s = setup("f/flip").await;
    s.proxy
        .add_rule(Rule::get("/blobs/", Action::FlipByte { offset: 100 }).once());
    let err = s.repo.get_blob_bytes(&s.digest, 1 << 20).await.unwrap_err();
    assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
    assert!(err.to_string().contains(&s.digest.to_string()), "{err}");
    assert!(err.is_retryable());
    push_image(&s.repo, "img", 61).await;
    s.proxy
        .add_rule(Rule::get("/manifests/", Action::FlipByte { offset: 20 }).once());
    let err = s.repo.get_manifest("img").await.unwrap_err();
    assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
}

#[tokio::test]
async fn an_ignored_range_on_resume_restarts_cleanly_from_byte_zero() {
    let s = setup("f/ignore-range").await;
    s.proxy
        .add_rule(Rule::get("/blobs/", Action::IgnoreRange).once());
    let size = s.data.len() as u64;
    let resp = s.repo.get_blob_from(&s.digest, 1000, size).await.unwrap();
    assert_eq!(resp.start, 0, "a 200 answer must be reported as a restart");
    assert_eq!(read_result(resp).await.unwrap(), s.data.to_vec());
}

#[tokio::test]
async fn a_wrong_content_range_on_resume_restarts_cleanly_from_byte_zero() {
    let s = setup("f/wrong-cr").await;
    s.proxy
        .add_rule(Rule::get("/blobs/", Action::WrongContentRange).once());
    let size = s.data.len() as u64;
    let resp = s.repo.get_blob_from(&s.digest, 1000, size).await.unwrap();
    assert_eq!(resp.start, 0);
    assert_eq!(read_result(resp).await.unwrap(), s.data.to_vec());
}

#[tokio::test]
async fn chunk_reads_survive_ranges_being_ignored_and_refuse_wrong_ranges() {
    use futures_util::StreamExt;
    let s = setup("f/chunks").await;
    let chunks = [Chunk::new(10, 100), Chunk::new(200_000, 50)];
    s.proxy
        .add_rule(Rule::get("/blobs/", Action::IgnoreRange).once());
    let mut stream = s.repo.get_blob_at(&s.digest, &chunks).await.unwrap();
    let mut got = vec![Vec::new(); 2];
    while let Some(p) = stream.next().await {
        let (i, b) = p.unwrap();
        got[i].extend_from_slice(&b);
    }
    assert_eq!(got[0], s.data[10..110].to_vec());
    assert_eq!(got[1], s.data[200_000..200_050].to_vec());

    s.proxy
        .add_rule(Rule::get("/blobs/", Action::WrongContentRange).once());
    let mut stream = s
        .repo
        .get_blob_at(&s.digest, &[Chunk::new(10, 100)])
        .await
        .unwrap();
    let mut saw_error = false;
    while let Some(p) = stream.next().await {
        if p.is_err() {
            saw_error = true;
        }
    }
    assert!(
        saw_error,
        "data at the wrong offset must not pass as the chunk"
    );
}

#[tokio::test]
async fn a_refused_range_is_a_bad_partial_request() {
    let s = setup("f/bad-range").await;
    for status in [400u16, 416, 501] {
        s.proxy
            .add_rule(Rule::get("/blobs/", Action::status(status)).once());
        let err = s
            .repo
            .get_blob_at_with(
                &s.digest,
                &[Chunk::new(0, 10), Chunk::new(20, 10)],
                hoist_registry::range::PlanOptions::default(),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::BadPartialRequest { .. }),
            "{status}: {err}"
        );
    }
}

#[tokio::test]
async fn a_redirect_to_another_host_carries_no_credentials() {
    let registry = Registry::start_with_basic_auth("tester", "pw")
        .await
        .unwrap();
    let proxy = FaultProxy::start(&registry.url()).await.unwrap();
    let client = RegistryClient::builder()
        .credentials(proxy.host(), Credentials::basic("tester", "pw"))
        .build()
        .unwrap();
    let ep = client.resolve(&proxy.host()).await.unwrap();
    let repo = client.repository(ep, "f/redirect");
    let data = blob(10_000, 62);
    let d = push(&repo, &data).await;
    proxy.add_rule(Rule::get("/blobs/", Action::RedirectToForeignHost).once());
    // The foreign host serves the blob anonymously only because the registry behind it needs
    // credentials it will not get: the request fails there, and the secret never arrives.
    let _ = repo.get_blob_bytes(&d, 1 << 20).await;
    assert!(
        !proxy.foreign_requests().is_empty(),
        "the redirect was followed"
    );
    assert!(
        !proxy.foreign_saw_authorization(),
        "credentials leaked to another host"
    );
    // Requests to the registry itself did carry them.
    assert!(
        proxy
            .requests(&Matcher::any_method("/blobs/"))
            .iter()
            .any(|e| e.authorization)
    );
}

#[tokio::test]
async fn an_unreachable_registry_is_a_connect_error() {
    let s = setup("f/refused").await;
    s.proxy.refuse_connections().await;
    let client = RegistryClient::builder().build().unwrap();
    let err = client.resolve(&s.proxy.host()).await.unwrap_err();
    assert!(err.is_connect(), "{err}");
    assert!(err.is_retryable());
}
